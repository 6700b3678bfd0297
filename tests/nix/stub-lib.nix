# A stand-in for the parts of nixpkgs' `lib` that nixos-module/ uses, written here from their
# documented behaviour (no nixpkgs code), so that tests/nix can evaluate the module on machines
# without nixpkgs. Options keep their type and default; types keep just enough structure
# (submodule, attrsOf, listOf, nullOr) for ./module-eval.nix to fill in defaults and for
# ./options-list.nix to walk the option tree. Priorities (mkDefault) are not modelled: the
# caller merges the module's own defaults under the user's values.
let
  leaf = {
    kind = "leaf";
  };
  option = args: {
    _type = "option";
    type = args.type or leaf;
  } // (if args ? default then { inherit (args) default; } else { });
  mapAttrsToList = f: attrs: map (n: f n attrs.${n}) (builtins.attrNames attrs);
  findFirstIndex =
    pred: default: list:
    let
      go = i: if i >= builtins.length list then default else if pred (builtins.elemAt list i) then i else go (i + 1);
    in
    go 0;
  unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];
  recursiveUpdate =
    a: b:
    a
    // builtins.mapAttrs (
      n: v: if builtins.isAttrs v && builtins.isAttrs (a.${n} or null) then recursiveUpdate a.${n} v else v
    ) b;
  escapeShellArg =
    s:
    let
      str = toString s;
    in
    if builtins.match "[A-Za-z0-9,._+:@%/=-]+" str != null then
      str
    else
      "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] str}'";
in
rec {
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
  mkOption = option;
  mkEnableOption = _: option {
    type = leaf;
    default = false;
  };
  mkPackageOption =
    pkgs: name: _:
    option {
      type = leaf;
      default = pkgs.${name};
    };
  literalExpression = x: x;
  mkIf = cond: v: if cond then v else null;
  mkDefault = v: v;
  optional = c: x: if c then [ x ] else [ ];
  optionals = c: xs: if c then xs else [ ];
  optionalAttrs = c: a: if c then a else { };
  optionalString = c: s: if c then s else "";
  inherit
    mapAttrsToList
    unique
    recursiveUpdate
    escapeShellArg
    ;
  lists = {
    inherit findFirstIndex;
  };
  escapeShellArgs = xs: builtins.concatStringsSep " " (map escapeShellArg xs);
  concatMap = builtins.concatMap;
  concatStrings = builtins.concatStringsSep "";
  concatMapStrings = f: xs: builtins.concatStringsSep "" (map f xs);
  concatMapStringsSep = sep: f: xs: builtins.concatStringsSep sep (map f xs);
  filter = builtins.filter;
  head = builtins.head;
  length = builtins.length;
  all = builtins.all;
  any = builtins.any;
  attrValues = builtins.attrValues;
  listToAttrs = builtins.listToAttrs;
  allUnique = xs: builtins.length (unique xs) == builtins.length xs;
  hasInfix = infix: s: builtins.match ".*${infix}.*" s != null;
  fixedWidthString =
    width: filler: s:
    if builtins.stringLength s >= width then s else fixedWidthString width filler (filler + s);
}
