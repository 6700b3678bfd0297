# Lists the option paths of nixos-module/options.nix without nixpkgs: the option declarations
# are evaluated against a stand-in `lib` whose mkOption records the option and whose types
# keep just enough structure (submodules, attrsOf, nullOr) to walk into. Defaults and
# descriptions are not forced. Used by tests/nix/tests/nix.rs to compare the module's options
# with the reference in docs/nixos.md.
let
  option = type: {
    _type = "option";
    inherit type;
  };
  leaf = {
    kind = "leaf";
  };
  types = {
    str = leaf;
    bool = leaf;
    port = leaf;
    package = leaf;
    path = leaf;
    attrs = leaf;
    ints = {
      unsigned = leaf;
      positive = leaf;
    };
    strMatching = _: leaf;
    enum = _: leaf;
    either = _: _: leaf;
    listOf = t: {
      kind = "listOf";
      elem = t;
    };
    attrsOf = t: {
      kind = "attrsOf";
      elem = t;
    };
    nullOr = t: {
      kind = "nullOr";
      elem = t;
    };
    submodule = m: {
      kind = "submodule";
      module = m;
    };
  };
  lib = {
    inherit types;
    mkOption = args: option (args.type or leaf);
    mkEnableOption = _: option leaf;
    mkPackageOption = _: _: _: option leaf;
    literalExpression = x: x;
    any = builtins.any;
    attrValues = builtins.attrValues;
  };
  pkgs.formats.toml = _: { type = leaf; };

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
