{
  description = "llama-orch: queue-centric LLM inference orchestrator, its NixOS module and pinned engines";

  # A NixOS release branch; flake.lock pins the revision (docs/nixos.md says where its hash
  # comes from).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f system);

      pkgsFor =
        system:
        import nixpkgs {
          inherit system;
          overlays = [ self.overlays.default ];
        };
      # CUDA is unfree: only the CUDA variants are built from this instance.
      pkgsCudaFor =
        system:
        import nixpkgs {
          inherit system;
          overlays = [ self.overlays.default ];
          config = {
            allowUnfree = true;
            cudaSupport = true;
          };
        };

      # `nix run`: llorch serve on 127.0.0.1:8080 with the pinned llama.cpp and the pinned model.
      serveConfig =
        pkgs:
        (pkgs.formats.toml { }).generate "llama-orch-serve.toml" {
          server.listen = "127.0.0.1:8080";
          auth.api_keys = [
            {
              # Development keys, as in examples/dev-mock.toml: a one-off local server.
              key = "dev-data-key";
              tenant = "dev";
              role = "data";
            }
            {
              key = "dev-control-key";
              tenant = "ops";
              role = "control";
            }
          ];
          pools = [
            {
              id = "smollm2";
              engine = "llamacpp";
              model_ref = "${pkgs.llama-orch-model}";
              model_sha256 = pkgs.llama-orch-model.sha256;
              ctx_max = 2048;
              allow_cpu_inference = true;
              llamacpp.server_binary = lib.getExe pkgs.llama-orch-llama-cpp;
              replicas = [
                {
                  id = "cpu0";
                  slots = 2;
                }
              ];
            }
          ];
        };

      app = program: {
        type = "app";
        program = "${program}";
      };
    in
    {
      overlays.default = final: prev: {
        llama-orch = final.callPackage ./nix/package.nix { };
        llama-orch-llama-cpp = final.callPackage ./nix/llama-cpp.nix { };
        llama-orch-model = final.callPackage ./nix/model.nix { };
      };

      nixosModules.default = {
        imports = [ ./nixos-module ];
        nixpkgs.overlays = [ self.overlays.default ];
      };

      packages = forAllSystems (
        system:
        let
          pkgs = pkgsFor system;
          pkgsCuda = pkgsCudaFor system;
        in
        {
          default = pkgs.llama-orch;
          llama-orch = pkgs.llama-orch;
          llama-cpp = pkgs.llama-orch-llama-cpp;
          # The CUDA build with a pinned CUDA release (not whatever cudaPackages points at).
          llama-cpp-cuda = pkgsCuda.llama-orch-llama-cpp.override {
            cudaSupport = true;
            cudaPackages = pkgsCuda.cudaPackages_12_8;
          };
          model = pkgs.llama-orch-model;

          oci-image = pkgs.dockerTools.buildLayeredImage {
            name = "llama-orch";
            tag = pkgs.llama-orch.version;
            contents = [
              pkgs.llama-orch
              pkgs.cacert
            ];
            # The mock example, listening on every address of the container.
            extraCommands = ''
              mkdir -p etc/llama-orch
              sed 's/^listen = "127.0.0.1:8080"/listen = "0.0.0.0:8080"/' \
                ${pkgs.llama-orch}/share/llama-orch/examples/dev-mock.toml > etc/llama-orch/orchestratord.toml
            '';
            config = {
              Entrypoint = [ "${pkgs.llama-orch}/bin/orchestratord" ];
              Cmd = [
                "--config"
                "/etc/llama-orch/orchestratord.toml"
              ];
              ExposedPorts."8080/tcp" = { };
            };
          };

          # A bootable qcow2 of nixosConfigurations.appliance.
          appliance-image = import "${nixpkgs}/nixos/lib/make-disk-image.nix" {
            inherit pkgs lib;
            inherit (self.nixosConfigurations."appliance-${system}") config;
            format = "qcow2";
            partitionTableType = "hybrid";
            diskSize = "auto";
          };
        }
        # vLLM as nixpkgs packages it (x86_64 with CUDA only).
        // lib.optionalAttrs (system == "x86_64-linux") { vllm = pkgsCuda.python3Packages.vllm; }
      );

      nixosConfigurations = lib.listToAttrs (
        map (system: {
          name = "appliance-${system}";
          value = lib.nixosSystem {
            inherit system;
            modules = [
              self.nixosModules.default
              ./nix/appliance.nix
            ];
          };
        }) systems
      );

      apps = forAllSystems (
        system:
        let
          pkgs = pkgsFor system;
        in
        {
          default = app (
            pkgs.writeShellScript "llama-orch-serve" ''
              exec ${pkgs.llama-orch}/bin/llorch serve --config ${serveConfig pkgs} "$@"
            ''
          );
          mock = app (
            pkgs.writeShellScript "llama-orch-serve-mock" ''
              exec ${pkgs.llama-orch}/bin/llorch serve --config ${pkgs.llama-orch}/share/llama-orch/examples/dev-mock.toml "$@"
            ''
          );
        }
      );

      devShells = forAllSystems (
        system:
        let
          pkgs = pkgsFor system;
        in
        {
          default = pkgs.mkShell {
            inputsFrom = [ pkgs.llama-orch ];
            packages = with pkgs; [
              cargo
              rustc
              clippy
              rustfmt
              # cargo xtask fetch-engine: llama.cpp build and the PyPI downloads.
              cmake
              ninja
              python3
              unzip
              # tests/metrics-contract (promtool: nixpkgs moves it to prometheus' `cli` output)
              # and the systemd unit checks.
              prometheus.cli
              systemd
              nix
            ];
          };
        }
      );

      formatter = forAllSystems (system: (pkgsFor system).nixfmt-rfc-style);

      checks = forAllSystems (
        system:
        let
          pkgs = pkgsFor system;
          vmTest = file: import file { inherit pkgs self; };
          # Evaluates a configuration with two pools and writes out the generated units,
          # without building anything they reference.
          evalConfig = lib.nixosSystem {
            inherit system;
            modules = [
              self.nixosModules.default
              ./vm-tests/nixos/example-config.nix
              {
                boot.loader.grub.enable = false;
                fileSystems."/".device = "/dev/null";
                system.stateVersion = "25.11";
              }
            ];
          };
          units = evalConfig.config.systemd.units;
        in
        {
          # The workspace test suite, with the pinned engine and model in place of what
          # `cargo xtask fetch-engine` would download (there is no network in the sandbox).
          cargo-tests = pkgs.llama-orch.overrideAttrs (old: {
            pname = "llama-orch-tests";
            # The whole tree: tests/nix checks the .nix files, docs and units too.
            src = self;
            doCheck = true;
            cargoTestFlags = [ "--workspace" ];
            # Triton's own tests need a tritonserver, which nixpkgs cannot build; they run in
            # `cargo xtask ci` where `cargo xtask fetch-engine --engine triton` provides one.
            checkFlags = map (t: "--skip=${t}") [
              "orchestratord_to_triton_direct_and_through_adapterd"
              "real_tritonserver_streams_cancels_and_reports_errors"
              "triton_pending_requests_fold_into_engine_families"
              "llorch_serve_streams_from_triton"
            ];
            nativeCheckInputs = (old.nativeCheckInputs or [ ]) ++ [
              pkgs.systemd
              # promtool, for tests/metrics-contract's checks of monitoring/ (nixpkgs'
              # prometheus has it in its `cli` output, not in `out`).
              pkgs.prometheus.cli
              pkgs.nix
              pkgs.python3
            ];
            preCheck = ''
              export HOME=$TMPDIR
              # nix-instantiate (tests/nix) only evaluates; give it a state directory of its own.
              export NIX_STATE_DIR=$TMPDIR/nix-state
              cache=$HOME/.cache/llama-orch
              mkdir -p $cache/clients-venv/bin
              # The compatibility tests' `openai` client, from nixpkgs instead of PyPI.
              ln -s ${pkgs.python3.withPackages (ps: [ ps.openai ])}/bin/python $cache/clients-venv/bin/python
              cat > $cache/provisioned.json <<JSON
              {
                "llama_server": "${lib.getExe pkgs.llama-orch-llama-cpp}",
                "model": "${pkgs.llama-orch-model}",
                "model_sha256": "${pkgs.llama-orch-model.sha256}"
              }
              JSON
            '';
          });

          module-eval = pkgs.writeText "llama-orch-module-eval" (
            builtins.unsafeDiscardStringContext (
              lib.concatMapStrings (n: "# ${n}\n${units.${n}.text}\n") [
                "orchestratord.socket"
                "orchestratord.service"
                "pool-managerd.socket"
                "pool-managerd.service"
                "llorch-adapterd@gpu0.socket"
                "llorch-adapterd@gpu0.service"
                "llorch-adapterd@cpu0.service"
              ]
            )
          );

          vm-single-node = vmTest ./vm-tests/nixos/single-node.nix;
          vm-two-node = vmTest ./vm-tests/nixos/two-node.nix;
          vm-switch = vmTest ./vm-tests/nixos/switch.nix;
        }
      );
    };
}
