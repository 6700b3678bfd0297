# Lists the option paths of nixos-module/options.nix without nixpkgs: the option declarations
# are evaluated against the stand-in `lib` of ./stub-lib.nix, whose types keep just enough
# structure (submodules, attrsOf, nullOr) to walk into. Defaults are not forced. Used by
# tests/nix/tests/nix.rs to compare the module's options with the reference in docs/nixos.md.
let
  lib = import ./stub-lib.nix;
  pkgs.formats.toml = _: { type.kind = "leaf"; };

  moduleOptions =
    m:
    let
      v =
        if builtins.isFunction m then
          m {
            name = "<name>";
            config = { };
            inherit lib;
          }
        else
          m;
    in
    v.options or { };

  typeOptions =
    prefix: t:
    if t.kind == "submodule" then
      collect prefix (moduleOptions t.module)
    else if t.kind == "attrsOf" then
      typeOptions "${prefix}.<name>" t.elem
    else if t.kind == "listOf" then
      typeOptions "${prefix}.*" t.elem
    else if t.kind == "nullOr" then
      typeOptions prefix t.elem
    else
      [ ];

  collect =
    prefix: attrs:
    builtins.concatMap (
      n:
      let
        v = attrs.${n};
        p = if prefix == "" then n else "${prefix}.${n}";
      in
      if (v._type or null) == "option" then [ p ] ++ typeOptions p v.type else collect p v
    ) (builtins.attrNames attrs);

  declared = import ../../nixos-module/options.nix {
    inherit lib pkgs;
    config.services.llama-orch = { };
  };
in
collect "" declared.options
