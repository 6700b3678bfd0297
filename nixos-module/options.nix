# The options of services.llama-orch (the implementation is ./default.nix). Kept apart so that
# tests/nix can evaluate the option tree with a stand-in `lib` on machines without nixpkgs and
# check it against the option reference in docs/nixos.md.
{
  lib,
  pkgs,
  config,
  ...
}:
let
  inherit (lib) mkOption mkEnableOption types literalExpression;
  cfg = config.services.llama-orch;
  settingsFormat = pkgs.formats.toml { };

  replicaModule =
    { name, ... }:
    {
      options = {
        devices = mkOption {
          type = types.listOf types.ints.unsigned;
          default = [ ];
          example = [ 0 ];
          description = ''
            GPU ordinals of this replica (its `CUDA_VISIBLE_DEVICES`). Empty: the replica runs
            on CPU, which the pool must allow with `allowCpuInference`. Only the devices named
            here are opened to the engines (`DeviceAllow=/dev/nvidia<N>`).
          '';
        };
        slots = mkOption {
          type = types.ints.positive;
          default = 1;
          description = "Concurrent decode slots of the replica.";
        };
        enginePort = mkOption {
          type = types.nullOr types.port;
          default = null;
          example = 8101;
          description = ''
            Loopback port of this replica's engine (llama.cpp or Triton pools). llama.cpp: the
            replica's `engine_port`, on which pool-managerd starts its llama-server and which
            its adapter daemon is pointed at. Triton: the module's tritonserver's HTTP port
            (gRPC and metrics take the next two). `null`: 8100 + 10·i, i counting the
            llama.cpp and module-run Triton replicas in the order of the pools and replicas.
            Ports must not collide (an assertion checks).
          '';
        };
        engineUrl = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "http://10.0.0.5:3000";
          description = ''
            Base URL of an engine the module does not run: the TGI router of a `tgi` pool, or a
            Triton server elsewhere for a `triton` pool.
          '';
        };
        adapterArgs = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [
            "--tokens-per-second"
            "50"
          ];
          description = ''
            Extra arguments of this replica's `llorch-adapterd` (for example the mock engine's
            behaviour). See `llorch-adapterd --help`.
          '';
        };
      };
    };

  poolModule =
    { name, config, ... }:
    {
      options = {
        engine = mkOption {
          type = types.enum [
            "llamacpp"
            "mock"
            "tgi"
            "triton"
          ];
          description = ''
            The engine. `llamacpp`: llama-server processes supervised by pool-managerd, one per
            replica, from `services.llama-orch.engines.llamacpp.package`. `mock`: the
            deterministic stand-in in the adapter daemon. `tgi`: an external TGI router
            (`engineUrl`). `triton`: Triton Inference Server, run by the module from
            `services.llama-orch.engines.triton.package` (or reached at `engineUrl`).
          '';
        };
        model = {
          path = mkOption {
            type = types.nullOr (types.either types.path types.str);
            default = null;
            example = literalExpression ''
              pkgs.fetchurl {
                url = "https://huggingface.co/…/model.Q4_K_M.gguf";
                hash = "sha256-…";
              }
            '';
            description = ''
              Local path of the model file (a GGUF for llama.cpp). A fixed-output derivation
              pins it by hash in the Nix store.
            '';
          };
          url = mkOption {
            type = types.nullOr types.str;
            default = null;
            description = ''
              `http(s)://` URL of the model, downloaded at runtime with resume into
              pool-managerd's cache (`/var/cache/llama-orch`); needs `model.sha256`.
            '';
          };
          sha256 = mkOption {
            type = types.nullOr (types.strMatching "[0-9a-f]{64}");
            default = null;
            description = ''
              Lower-case hex SHA-256 of the model file; the engine is not started on a
              mismatch (UNTRUSTED_ARTIFACT). Required with `model.url`.
            '';
          };
          ref = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "mock:tiny";
            description = ''
              The pool's `model_ref` as it is, when neither `path` nor `url` is set (mock
              models `mock:<name>`, catalog entries `sha256:<digest>`).
            '';
          };
        };
        ctxMax = mkOption {
          type = types.ints.positive;
          default = 4096;
          description = "Largest context a task may ask for (`ctx_max`).";
        };
        allowCpuInference = mkOption {
          type = types.bool;
          default = config.engine == "mock";
          defaultText = literalExpression ''engine == "mock"'';
          description = "Allow replicas without GPU devices (labelled `cpu=\"true\"` in metrics).";
        };
        llamacppArgs = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [
            "--flash-attn"
          ];
          description = ''
            Extra arguments of the pool's llama-server processes (`[pools.llamacpp]
            extra_args`), shared by its replicas; pool-managerd sets `--port` itself, from each
            replica's `enginePort`.
          '';
        };
        triton = {
          model = mkOption {
            type = types.nullOr types.str;
            default = null;
            description = "Triton: the model name in the model repository.";
          };
          inputs = mkOption {
            type = types.enum [
              "vllm"
              "tensorrt_llm"
            ];
            default = "vllm";
            description = "Triton: the model's input convention.";
          };
          modelRepository = mkOption {
            type = types.nullOr types.path;
            default = null;
            description = ''
              Triton: the model repository `tritonserver` serves. Set: the module runs one
              `llorch-triton-<replica>` service per replica. `null`: the replicas' `engineUrl`.
            '';
          };
        };
        replicas = mkOption {
          type = types.attrsOf (types.submodule replicaModule);
          default = { };
          description = ''
            The replicas, by id. Each gets its adapter daemon `llorch-adapterd@<id>` (socket
            `/run/llorch/adapter-<id>.sock`), except the replicas of Triton and TGI pools,
            which orchestratord reaches directly. Replica ids are unique across pools.
          '';
        };
        settings = mkOption {
          type = settingsFormat.type;
          default = { };
          example = {
            queue.full_policy = "drop-lru";
          };
          description = ''
            Further keys of this pool's `[[pools]]` table (docs/config.schema.json), merged over
            the ones the module writes.
          '';
        };
      };
    };
in
{
  options.services.llama-orch = {
    enable = mkEnableOption "llama-orch, the queue-centric LLM inference orchestrator";

    package = lib.mkPackageOption pkgs "llama-orch" { };

    listen = {
      address = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "127.0.0.1";
        description = ''
          Address of the API socket (`orchestratord.socket`). `null`: every address, IPv4 and
          IPv6.
        '';
      };
      port = mkOption {
        type = types.port;
        default = 8080;
        description = "TCP port of the API (OrchQueue v1, OpenAI dialect, `/metrics`).";
      };
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open `listen.port` in the firewall.";
    };

    poolManager.listen = mkOption {
      type = types.str;
      default = "127.0.0.1:8090";
      description = ''
        `ListenStream=` of `pool-managerd.socket` (replica registry, model catalog,
        `/metrics`). Loopback: it has no authentication.
      '';
    };

    engines = {
      llamacpp.package = mkOption {
        type = types.package;
        default =
          if cfg.cudaSupport then
            pkgs.llama-orch-llama-cpp.override {
              cudaSupport = true;
              inherit (cfg) cudaPackages;
            }
          else
            pkgs.llama-orch-llama-cpp;
        defaultText = literalExpression ''
          pkgs.llama-orch-llama-cpp, built with CUDA from `cudaPackages` when `cudaSupport`
        '';
        description = ''
          The llama.cpp build whose `llama-server` pool-managerd runs for `llamacpp` pools;
          by default the one pinned in nix/pins.json (the llama.cpp the test suite runs).
        '';
      };
      triton.package = mkOption {
        type = types.nullOr types.package;
        default = null;
        description = ''
          Triton Inference Server (`bin/tritonserver`). nixpkgs has no Triton server package,
          so there is no default: pools with `triton.modelRepository` need it (an assertion
          says so). Package NVIDIA's release yourself or reach an external server with the
          replicas' `engineUrl`.
        '';
      };
    };

    cudaSupport = mkOption {
      type = types.bool;
      default = lib.any (p: lib.any (r: r.devices != [ ]) (lib.attrValues p.replicas)) (
        lib.attrValues cfg.pools
      );
      defaultText = literalExpression "true when any replica names a GPU";
      description = "Build the default engines with CUDA.";
    };

    cudaPackages = mkOption {
      type = types.attrs;
      default = pkgs.cudaPackages;
      defaultText = literalExpression "pkgs.cudaPackages";
      description = "The CUDA package set the engines are built with (pin a release here).";
    };

    apiKeys = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            tenant = mkOption {
              type = types.strMatching "[A-Za-z0-9._-]{1,64}";
              description = "Tenant the key belongs to.";
            };
            role = mkOption {
              type = types.enum [
                "data"
                "control"
              ];
              description = "`data` submits and reads tasks; `control` manages pools.";
            };
            keyFile = mkOption {
              type = types.str;
              example = "/run/secrets/llama-orch/acme";
              description = ''
                File holding the key (one line), read by systemd when orchestratord starts
                (`LoadCredential=`), never copied into the Nix store. Only its SHA-256 reaches
                orchestratord's config, under `/run/llorch`.
              '';
            };
          };
        }
      );
      default = { };
      description = "API keys, by credential name.";
    };

    pools = mkOption {
      type = types.attrsOf (types.submodule poolModule);
      default = { };
      description = "The pools, by id.";
    };

    settings = mkOption {
      type = types.submodule { freeformType = settingsFormat.type; };
      default = { };
      example = {
        queue = {
          capacity = 512;
          full_policy = "reject";
        };
        timeouts.first_token_ms = 60000;
      };
      description = ''
        orchestratord's and pool-managerd's config (docs/config.schema.json), rendered as
        TOML. The module writes `server.listen`, `pool_manager.registry_url` and the `pools`
        of `services.llama-orch.pools`; pools given here directly are appended.
      '';
    };

    prometheus.scrape = mkEnableOption "Prometheus scraping of orchestratord and pool-managerd (jobs `llama-orch-orchestratord`, `llama-orch-pool-managerd`) with llama-orch's alert rules";
  };
}
