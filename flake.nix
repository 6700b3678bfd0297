{
  description = "llama-orch: queue-centric LLM inference orchestrator";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: rec {
        llama-orch = pkgs.rustPlatform.buildRustPackage {
          pname = "llama-orch";
          version = "0.1.0";
          src = self;
          cargoLock.lockFile = ./Cargo.lock;
          cargoBuildFlags = [ "--workspace" ];
          # The test suite runs in `checks.tests` (it spawns the daemons on loopback).
          doCheck = false;
          postInstall = ''
            mkdir -p $out/share/llama-orch
            cp -r examples docs $out/share/llama-orch/
            mkdir -p $out/lib/systemd/system
            cp systemd/*.service systemd/*.socket $out/lib/systemd/system/
          '';
          meta.mainProgram = "orchestratord";
        };
        default = llama-orch;
      });

      # `nix run`: a one-off server on 127.0.0.1:8080 with the dev config (mock engine).
      apps = forAll (pkgs:
        let pkg = self.packages.${pkgs.system}.default; in {
          default = {
            type = "app";
            program = "${pkgs.writeShellScript "llama-orch-dev" ''
              exec ${pkg}/bin/orchestratord --config ${pkg}/share/llama-orch/examples/dev-mock.toml "$@"
            ''}";
          };
        });

      # `nix flake check`: the whole test suite, as `cargo test --workspace`.
      checks = forAll (pkgs: {
        tests = self.packages.${pkgs.system}.default.overrideAttrs (_: {
          doCheck = true;
          cargoTestFlags = [ "--workspace" ];
        });
      });
    };
}
