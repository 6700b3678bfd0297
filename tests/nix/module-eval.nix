# Evaluates nixos-module/ (options and implementation) for one configuration without nixpkgs:
# the stand-in lib of ./stub-lib.nix, stand-in packages (store paths that name what they
# stand for), option defaults filled in the way the module system would. Returns what the
# module generates: failed assertions, systemd sockets and services, firewall ports, scrape
# configs and rule files. `pkgs.formats.toml` renders as `@toml:<JSON>@` and `writeShellScript` as
# `@script:<JSON text>@`, so tests/nix can take the generated config and the key script out of
# the unit settings, validate the config with llama-orch's own loader and run the script.
#
# nix-instantiate --eval --strict --json tests/nix/module-eval.nix \
#   --arg configuration ./vm-tests/nixos/example-config.nix --argstr modelPath … --argstr llamaCpp …
{
  configuration,
  # A file standing for the pinned model (the loader checks that a local model exists).
  modelPath ? "/nix/store/stand-in-model.gguf",
  # A directory with bin/llama-server standing for the pinned llama.cpp.
  llamaCpp ? "/nix/store/stand-in-llama-orch-llama-cpp",
}:
let
  lib = import ./stub-lib.nix;
  pins = import ../../nix/pins.nix;
  store = "/nix/store/stand-in";

  pkgs = {
    llama-orch = "${store}-llama-orch";
    llama-orch-llama-cpp = {
      outPath = llamaCpp;
      override = args: {
        outPath = llamaCpp;
        cudaBuild = args.cudaSupport or false;
      };
    };
    llama-orch-model = {
      outPath = modelPath;
      inherit (pins.model.gguf) sha256;
    };
    cudaPackages = { };
    coreutils = "${store}-coreutils";
    bash = "${store}-bash";
    curl = "${store}-curl";
    formats.toml = _: {
      type.kind = "leaf";
      generate = _name: value: "@toml:${builtins.toJSON value}@";
    };
    writeShellScript = _name: text: "@script:${builtins.toJSON text}@";
  };

  # The user's configuration (a NixOS module); only services.llama-orch is used.
  user =
    (import configuration {
      inherit pkgs lib;
      config = { };
      modulesPath = "${store}-nixos-modules";
    }).services.llama-orch;

  # Fill an option tree with a value: given values win, defaults fill the rest, unknown keys
  # are errors (as in the module system), submodules see their own filled config.
  fillOpts =
    path: freeform: opts: value:
    let
      unknown = builtins.filter (n: !(opts ? ${n})) (builtins.attrNames value);
      filled = builtins.mapAttrs (
        n: o:
        if (o._type or null) == "option" then
          fillValue "${path}.${n}" o.type (
            if value ? ${n} then
              value.${n}
            else if o ? default then
              o.default
            else
              throw "${path}.${n} is used but has no value"
          )
        else
          fillOpts "${path}.${n}" false o (value.${n} or { })
      ) opts;
    in
    if freeform then
      value // filled
    else if unknown != [ ] then
      throw "${path}.${builtins.head unknown}: no such option"
    else
      filled;

  fillSub =
    path: m: name: value:
    let
      evaluated =
        if builtins.isFunction m then
          m {
            inherit name lib;
            config = self;
          }
        else
          m;
      self = fillOpts path (evaluated ? freeformType) (evaluated.options or { }) value;
    in
    self;

  fillValue =
    path: t: v:
    if t.kind == "submodule" then
      fillSub path t.module "<none>" v
    else if t.kind == "attrsOf" then
      builtins.mapAttrs (
        name: x:
        if t.elem.kind == "submodule" then
          fillSub "${path}.${name}" t.elem.module name x
        else
          fillValue "${path}.${name}" t.elem x
      ) v
    else if t.kind == "listOf" then
      map (fillValue "${path}.*" t.elem) v
    else if t.kind == "nullOr" then
      (if v == null then null else fillValue path t.elem v)
    else
      v;

  args = {
    inherit lib pkgs;
    config.services.llama-orch = cfg;
  };
  declared = (import ../../nixos-module/options.nix args).options.services.llama-orch;
  module = (import ../../nixos-module/default.nix args).config;
  # The module's own settings (mkDefault) under the user's.
  cfg = fillOpts "services.llama-orch" false declared (
    user
    // {
      settings = lib.recursiveUpdate module.services.llama-orch.settings (user.settings or { });
    }
  );
  failed = map (a: a.message) (builtins.filter (a: !a.assertion) module.assertions);
in
# As in NixOS, failed assertions stop evaluation before the units are looked at.
if failed != [ ] then
  { failedAssertions = failed; }
else
  {
    failedAssertions = [ ];
    inherit (module.systemd) sockets services;
    firewall = module.networking.firewall.allowedTCPPorts;
    inherit (module.services.prometheus) scrapeConfigs ruleFiles;
    groups = builtins.attrNames module.users.groups;
  }
