# services.llama-orch: orchestratord, pool-managerd and one adapter daemon per replica as
# socket-activated systemd services. Options: ./options.nix; option reference: docs/nixos.md.
#
# The unit settings come from ./units.nix, the description the shipped unit files under
# systemd/ are checked against (tests/nix); this module overrides only the keys listed in its
# `moduleDifferences`.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    mkIf
    mkDefault
    optional
    optionals
    optionalAttrs
    ;
  cfg = config.services.llama-orch;
  settingsFormat = pkgs.formats.toml { };
  bin = "${cfg.package}/bin";
  units = import ./units.nix { bindir = bin; };
  runtimeConfig = "/run/llorch/orchestratord.toml";

  # Pools and replicas as lists, ordered by id (attribute order), with their ids.
  pools = lib.mapAttrsToList (id: p: p // { inherit id; }) cfg.pools;
  replicasOf = p: lib.mapAttrsToList (id: r: r // { inherit id; }) p.replicas;
  allReplicas = lib.concatMap (p: map (r: { pool = p; replica = r; }) (replicasOf p)) pools;

  # Engines on loopback get a port: the replica's enginePort, or 8100 + 10·i in the order of
  # the pools and replicas (Triton takes three: HTTP, gRPC, metrics). A llama.cpp replica's port
  # goes into its `engine_port`, on which pool-managerd starts that replica's llama-server, and
  # into its adapter daemon's --engine-url; a Triton replica's is the module's tritonserver's.
  portedReplicas = lib.filter (
    x: x.pool.engine == "llamacpp" || (x.pool.engine == "triton" && x.pool.triton.modelRepository != null)
  ) allReplicas;
  enginePort =
    x:
    if x.replica.enginePort != null then
      x.replica.enginePort
    else
      8100 + 10 * lib.lists.findFirstIndex (y: y.replica.id == x.replica.id) 0 portedReplicas;

  # llama.cpp and mock replicas are served by an adapter daemon; TGI and Triton replicas are
  # reached by orchestratord's in-process adapters.
  hasAdapter = p: p.engine == "llamacpp" || p.engine == "mock";
  adapterReplicas = lib.filter (x: hasAdapter x.pool) allReplicas;
  tritonServed = lib.filter (
    x: x.pool.engine == "triton" && x.pool.triton.modelRepository != null
  ) allReplicas;

  modelRef =
    p:
    if p.model.path != null then
      toString p.model.path
    else if p.model.url != null then
      p.model.url
    else if p.model.ref != null then
      p.model.ref
    else
      "mock:${p.id}";

  # Every loopback port the engines take, for the assertion that they do not collide.
  enginePortsTaken = lib.concatMap (
    x:
    let
      port = enginePort x;
    in
    if x.pool.engine == "triton" then
      [
        port
        (port + 1)
        (port + 2)
      ]
    else
      [ port ]
  ) portedReplicas;

  engineUrlOf = x: "http://127.0.0.1:${toString (enginePort x)}";

  replicaToml =
    p: r:
    let
      x = {
        pool = p;
        replica = r;
      };
    in
    {
      inherit (r) id devices slots;
    }
    // optionalAttrs (hasAdapter p) { endpoint = "unix:/run/llorch/adapter-${r.id}.sock"; }
    // optionalAttrs (p.engine == "llamacpp") { engine_port = enginePort x; }
    // optionalAttrs (p.engine == "tgi") { engine_url = r.engineUrl; }
    // optionalAttrs (p.engine == "triton") {
      endpoint = if p.triton.modelRepository != null then engineUrlOf x else r.engineUrl;
    };

  poolToml =
    p:
    lib.recursiveUpdate (
      {
        inherit (p) id engine;
        model_ref = modelRef p;
        ctx_max = p.ctxMax;
        allow_cpu_inference = p.allowCpuInference;
        replicas = map (replicaToml p) (replicasOf p);
      }
      // optionalAttrs (p.model.sha256 != null) { model_sha256 = p.model.sha256; }
      // optionalAttrs (p.engine == "llamacpp") {
        llamacpp = {
          server_binary = "${cfg.engines.llamacpp.package}/bin/llama-server";
          # The ports are per replica (engine_port), not in the shared arguments.
          extra_args = p.llamacppArgs;
        };
      }
      // optionalAttrs (p.engine == "triton") {
        triton =
          {
            inherit (p.triton) model inputs;
          }
          # The module's tritonserver serves metrics two ports above HTTP (not on 8002).
          // optionalAttrs (p.triton.modelRepository != null && lib.length (replicasOf p) == 1) {
            metrics_url = "http://127.0.0.1:${
              toString (
                enginePort {
                  pool = p;
                  replica = lib.head (replicasOf p);
                }
                + 2
              )
            }/metrics";
          };
      }
    ) p.settings;

  finalSettings = cfg.settings // {
    pools = map poolToml pools ++ (cfg.settings.pools or [ ]);
  };
  configFile = settingsFormat.generate "llama-orch.toml" finalSettings;
  # pool-managerd validates the whole config, which needs a data key once there are pools, but
  # serves no data API: its copy carries a key nobody holds (digest 000…0) instead of the real
  # ones, which only orchestratord reads (LoadCredential).
  poolManagerConfig = settingsFormat.generate "llama-orch-pool-managerd.toml" (
    lib.recursiveUpdate finalSettings {
      auth.api_keys = (finalSettings.auth.api_keys or [ ]) ++ [
        {
          key_sha256 = lib.fixedWidthString 64 "0" "";
          tenant = "pool-managerd";
          role = "data";
        }
      ];
    }
  );

  # ExecStartPre of orchestratord: the config plus the API keys' digests, written to /run with
  # mode 0600. The keys come from systemd's credentials ($CREDENTIALS_DIRECTORY), so they are
  # never in the Nix store or in the unit.
  prepareConfig = pkgs.writeShellScript "llama-orch-prepare-config" (
    ''
      set -euo pipefail
      umask 077
      out=${runtimeConfig}
      cat ${configFile} > "$out.new"
    ''
    + lib.concatStrings (
      lib.mapAttrsToList (name: k: ''
        digest=$(${pkgs.coreutils}/bin/tr -d '\r\n' < "$CREDENTIALS_DIRECTORY/apikey-${name}" | ${pkgs.coreutils}/bin/sha256sum | ${pkgs.coreutils}/bin/cut -d' ' -f1)
        printf '\n[[auth.api_keys]]\nkey_sha256 = "%s"\ntenant = %s\nrole = "%s"\n' "$digest" ${lib.escapeShellArg (builtins.toJSON k.tenant)} ${k.role} >> "$out.new"
      '') cfg.apiKeys
    )
    + ''
      mv "$out.new" "$out"
    ''
  );

  gpus = lib.unique (lib.concatMap (x: x.replica.devices) allReplicas);
  nvidiaDevices =
    devices:
    optionals (devices != [ ]) (
      [
        "/dev/nvidiactl rw"
        "/dev/nvidia-uvm rw"
        "/dev/nvidia-uvm-tools rw"
      ]
      ++ map (n: "/dev/nvidia${toString n} rw") devices
    );

  # A units.nix entry as NixOS unit options.
  socketFrom = u: socket: {
    unitConfig = u.Unit;
    socketConfig = u.Socket // socket;
    wantedBy = [ u.Install.WantedBy ];
  };
  serviceFrom = u: service: {
    unitConfig = u.Unit;
    serviceConfig = u.Service // service;
    wantedBy = [ u.Install.WantedBy ];
  };

  adapterArgs =
    x:
    let
      p = x.pool;
      r = x.replica;
    in
    [
      "--engine"
      p.engine
      "--model-ref"
      (modelRef p)
      "--slots"
      (toString r.slots)
      "--ctx-max"
      (toString p.ctxMax)
    ]
    ++ optionals (p.engine == "llamacpp") [
      "--engine-url"
      (engineUrlOf x)
    ]
    ++ r.adapterArgs;

  listenStream =
    if cfg.listen.address == null then
      toString cfg.listen.port
    else if lib.hasInfix ":" cfg.listen.address then
      "[${cfg.listen.address}]:${toString cfg.listen.port}"
    else
      "${cfg.listen.address}:${toString cfg.listen.port}";
  scrapeHost =
    if cfg.listen.address == null || cfg.listen.address == "0.0.0.0" || cfg.listen.address == "::" then
      "127.0.0.1:${toString cfg.listen.port}"
    else
      listenStream;
in
{
  imports = [ ./options.nix ];

  config = mkIf cfg.enable {
    assertions =
      [
        {
          assertion = lib.allUnique (map (x: x.replica.id) allReplicas);
          message = "services.llama-orch.pools: replica ids must be unique across pools (they name the adapter units and sockets).";
        }
        {
          assertion = lib.allUnique enginePortsTaken;
          message = "services.llama-orch.pools: two engines would listen on the same loopback port (replicas' enginePort; a Triton replica also takes the next two).";
        }
      ]
      ++ map (x: {
        assertion = builtins.match "[A-Za-z0-9_.-]+" x.replica.id != null;
        message = "services.llama-orch.pools.${x.pool.id}.replicas.${x.replica.id}: a replica id may only hold letters, digits, `_`, `.` and `-` (it is a systemd instance name).";
      }) allReplicas
      ++ lib.mapAttrsToList (name: _: {
        assertion = builtins.match "[A-Za-z0-9_.-]+" name != null;
        message = "services.llama-orch.apiKeys.${name}: a key name may only hold letters, digits, `_`, `.` and `-` (it names a systemd credential).";
      }) cfg.apiKeys
      ++ map (x: {
        assertion = x.replica.devices != [ ] || x.pool.allowCpuInference;
        message = "services.llama-orch.pools.${x.pool.id}.replicas.${x.replica.id}: no GPU devices; set the pool's allowCpuInference to run it on CPU.";
      }) allReplicas
      ++ lib.concatMap (p: [
        {
          assertion = p.replicas != { };
          message = "services.llama-orch.pools.${p.id}: a pool needs at least one replica.";
        }
        {
          assertion = p.model.url == null || p.model.sha256 != null;
          message = "services.llama-orch.pools.${p.id}: model.url needs model.sha256.";
        }
        {
          assertion =
            p.engine == "mock" || p.model.path != null || p.model.url != null || p.model.ref != null;
          message = "services.llama-orch.pools.${p.id}: set model.path, model.url or model.ref.";
        }
        {
          assertion = p.engine != "tgi" || lib.all (r: r.engineUrl != null) (replicasOf p);
          message = "services.llama-orch.pools.${p.id}: every replica of a tgi pool needs engineUrl (the TGI router).";
        }
        {
          assertion = p.engine != "triton" || p.triton.model != null;
          message = "services.llama-orch.pools.${p.id}: a triton pool needs triton.model.";
        }
        {
          assertion =
            p.engine != "triton"
            || (
              if p.triton.modelRepository != null then
                cfg.engines.triton.package != null
              else
                lib.all (r: r.engineUrl != null) (replicasOf p)
            );
          message = "services.llama-orch.pools.${p.id}: nixpkgs has no Triton Inference Server; set services.llama-orch.engines.triton.package to run triton.modelRepository, or give each replica the engineUrl of a running server.";
        }
      ]) pools;

    users.groups.llorch = { };

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ cfg.listen.port ];

    services.llama-orch.settings = {
      server.listen = mkDefault (
        if cfg.listen.address == null then "0.0.0.0:${toString cfg.listen.port}" else listenStream
      );
      pool_manager.registry_url = mkDefault "http://${cfg.poolManager.listen}";
    };

    systemd.sockets =
      {
        orchestratord = socketFrom units."orchestratord.socket" { ListenStream = listenStream; };
        pool-managerd = socketFrom units."pool-managerd.socket" { ListenStream = cfg.poolManager.listen; };
      }
      // lib.listToAttrs (
        map (x: {
          name = "llorch-adapterd@${x.replica.id}";
          value = socketFrom units."llorch-adapterd@.socket" { };
        }) adapterReplicas
      );

    systemd.services =
      {
        orchestratord = serviceFrom units."orchestratord.service" {
          ExecStartPre = [
            "${prepareConfig}"
            "${bin}/orchestratord --check-config ${runtimeConfig}"
          ];
          ExecStart = "${bin}/orchestratord --config ${runtimeConfig}";
          LoadCredential = lib.mapAttrsToList (name: k: "apikey-${name}:${k.keyFile}") cfg.apiKeys;
          # Connects to the adapter daemons' sockets (group llorch).
          SupplementaryGroups = [ "llorch" ];
        };
        pool-managerd = serviceFrom units."pool-managerd.service" {
          ExecStart = "${bin}/pool-managerd serve --config ${poolManagerConfig}";
          # Only the GPUs the pools name, instead of every NVIDIA device.
          DeviceAllow = nvidiaDevices gpus;
        };
      }
      // lib.listToAttrs (
        map (x: {
          name = "llorch-adapterd@${x.replica.id}";
          value =
            let
              u = units."llorch-adapterd@.service";
            in
            serviceFrom (u // { Service = removeAttrs u.Service [ "EnvironmentFile" ]; }) {
              # The arguments are in the unit instead of /etc/llama-orch/adapterd-<id>.env.
              ExecStart = "${bin}/llorch-adapterd ${lib.escapeShellArgs (adapterArgs x)}";
            };
        }) adapterReplicas
      )
      // lib.listToAttrs (
        map (
          x:
          let
            port = enginePort x;
          in
          {
            name = "llorch-triton-${x.replica.id}";
            value = {
              description = "Triton Inference Server for llama-orch replica ${x.replica.id}";
              wantedBy = [ "multi-user.target" ];
              before = [ "orchestratord.service" ];
              environment.CUDA_VISIBLE_DEVICES = lib.concatMapStringsSep "," toString x.replica.devices;
              serviceConfig = units."pool-managerd.service".Service // {
                Type = "simple";
                NotifyAccess = "none";
                WatchdogSec = "0";
                ExecStart = lib.escapeShellArgs [
                  "${cfg.engines.triton.package}/bin/tritonserver"
                  "--model-repository=${x.pool.triton.modelRepository}"
                  "--http-address=127.0.0.1"
                  "--http-port=${toString port}"
                  "--grpc-address=127.0.0.1"
                  "--grpc-port=${toString (port + 1)}"
                  "--metrics-address=127.0.0.1"
                  "--metrics-port=${toString (port + 2)}"
                ];
                KillMode = "control-group";
                DeviceAllow = nvidiaDevices x.replica.devices;
              };
            };
          }
        ) tritonServed
      );

    # The job names are the ones the shipped alert rules (monitoring/llama-orch.rules.yml,
    # docs/monitoring.md) select on, so they are not configurable.
    services.prometheus.scrapeConfigs = mkIf cfg.prometheus.scrape [
      {
        job_name = "llama-orch-orchestratord";
        static_configs = [ { targets = [ scrapeHost ]; } ];
      }
      {
        job_name = "llama-orch-pool-managerd";
        static_configs = [ { targets = [ cfg.poolManager.listen ]; } ];
      }
    ];
    services.prometheus.ruleFiles = mkIf cfg.prometheus.scrape [
      "${cfg.package}/share/llama-orch/monitoring/llama-orch.rules.yml"
    ];
  };

  meta.maintainers = [ ];
}
