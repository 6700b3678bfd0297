# Evaluates nix/package.nix without nixpkgs (stand-in lib.fileset, rustPlatform) and returns
# what can be checked here: the source file set (as paths) and the postInstall script, which
# tests/nix runs with bash in the repository against a temporary $out.
#
# nix-instantiate --eval --strict --json tests/nix/package-eval.nix
let
  lib = import ./stub-lib.nix // {
    fileset = {
      unions = xs: xs;
      # Paths as strings: toString does not copy them into the store.
      toSource = { root, fileset }: map toString fileset;
    };
  };
  drv = import ../../nix/package.nix {
    inherit lib;
    rustPlatform.buildRustPackage = attrs: attrs;
    addDriverRunpath = "/nix/store/stand-in-add-driver-runpath";
  };
in
{
  inherit (drv) src postInstall;
  root = toString ../..;
}
