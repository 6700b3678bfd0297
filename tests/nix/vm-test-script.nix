# The testScript of a NixOS VM test file, evaluated with stand-ins for nixpkgs (runNixOSTest
# returns its argument; packages are fake store paths; a testScript that is a function of the
# nodes gets stand-in nodes), so tests/nix can check that the Python parses.
# Usage: import ./tests/nix/vm-test-script.nix ./vm-tests/nixos/two-node.nix
file:
let
  pkgs = {
    testers.runNixOSTest = test: test;
    bash = "/nix/store/stand-in-bash";
    curl = "/nix/store/stand-in-curl";
  };
  nodes.machine.services.llama-orch.pools.smollm2.model = {
    path = "/nix/store/stand-in-model.gguf";
    sha256 = "0000000000000000000000000000000000000000000000000000000000000000";
  };
  script =
    (import file {
      inherit pkgs;
      self = { };
    }).testScript;
in
if builtins.isFunction script then script { inherit nodes; } else script
