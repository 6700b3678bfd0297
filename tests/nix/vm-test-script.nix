# The testScript of a NixOS VM test file, evaluated with stand-ins for nixpkgs (runNixOSTest
# returns its argument; packages are fake store paths), so tests/nix can check that the
# Python parses. Usage: import ./tests/nix/vm-test-script.nix ./vm-tests/nixos/two-node.nix
file:
let
  pkgs = {
    testers.runNixOSTest = test: test;
    bash = "/nix/store/stand-in-bash";
    curl = "/nix/store/stand-in-curl";
  };
in
(import file {
  inherit pkgs;
  self = { };
}).testScript
