# The systemd unit settings of llama-orch's daemons, as plain data: one attribute set per unit
# file, with one attribute set per section ([Unit], [Service], [Socket], [Install]); a value is
# a string, or a list of strings for a key that repeats (DeviceAllow=).
#
# This file is pure (no nixpkgs, no lib) on purpose. It is the one description of the units:
#   - the NixOS module (./default.nix) builds its units from it, overriding only what the
#     module configures (paths in the Nix store, listen addresses, per-replica arguments, the
#     GPUs a pool names: see `moduleDifferences` at the end);
#   - tests/nix (`cargo test -p nix-checks`) evaluates it with
#     `nix-instantiate --eval --strict --json` and checks every key against the shipped unit
#     files under systemd/, so the two cannot drift apart.
#
# Arguments: where the binaries and the configs are. The defaults are the layout of the shipped
# unit files (Debian-style /usr/bin; the test treats the binaries' directory as a documented
# difference).
{
  bindir ? "/usr/bin",
  configDir ? "/etc/llama-orch",
}:
let
  docs = "https://github.com/llama-orch/llama-orch/blob/main/docs/operations.md";

  # The sandbox every daemon shares. Units add to it or leave keys out (see each unit).
  hardening = {
    DynamicUser = "yes";
    ProtectSystem = "strict";
    ProtectHome = "yes";
    PrivateTmp = "yes";
    NoNewPrivileges = "yes";
    ProtectKernelTunables = "yes";
    ProtectKernelModules = "yes";
    ProtectControlGroups = "yes";
    ProtectClock = "yes";
    ProtectKernelLogs = "yes";
    ProtectHostname = "yes";
    PrivateMounts = "yes";
    RestrictRealtime = "yes";
    RestrictSUIDSGID = "yes";
    ProtectProc = "invisible";
    UMask = "0077";
    RestrictNamespaces = "yes";
    LockPersonality = "yes";
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
    ];
    CapabilityBoundingSet = "";
  };

  # sd_notify readiness and a watchdog for every daemon.
  notify = {
    Type = "notify";
    NotifyAccess = "main";
    WatchdogSec = "30s";
    Restart = "on-failure";
    RestartSec = "1s";
    Environment = "RUST_LOG=info";
  };
in
{
  "orchestratord.socket" = {
    Unit = {
      Description = "llama-orch orchestrator API socket";
      Documentation = docs;
    };
    Socket = {
      ListenStream = "8080";
      # Kept open across daemon restarts: clients wait in the backlog instead of being refused.
      Backlog = "4096";
      NoDelay = "true";
    };
    Install.WantedBy = "sockets.target";
  };

  "orchestratord.service" = {
    Unit = {
      Description = "llama-orch orchestrator (OrchQueue v1 API)";
      Documentation = docs;
      Requires = "orchestratord.socket";
      After = "network.target orchestratord.socket";
    };
    Service =
      notify
      // hardening
      // {
        ExecStartPre = "${bindir}/orchestratord --check-config ${configDir}/orchestratord.toml";
        ExecStart = "${bindir}/orchestratord --config ${configDir}/orchestratord.toml";
        # SIGTERM drains running streams for server.shutdown_grace_ms.
        TimeoutStopSec = "45s";
        # Connects to the adapter daemons' sockets (group llorch).
        SupplementaryGroups = "llorch";
        StateDirectory = "llama-orch";
        RuntimeDirectory = "llorch";
        RuntimeDirectoryPreserve = "yes";
        PrivateDevices = "yes";
        ProcSubset = "pid";
        RestrictAddressFamilies = "AF_UNIX AF_INET AF_INET6";
        # No MemoryDenyWriteExecute: policy plugins (wasmtime) need executable JIT memory.
      };
    Install.WantedBy = "multi-user.target";
  };

  "pool-managerd.socket" = {
    Unit = {
      Description = "llama-orch pool manager API socket (replica registry, model catalog, metrics)";
      Documentation = docs;
    };
    Socket = {
      # Loopback only: the registry and catalog are for orchestratord and operators on the host.
      ListenStream = "127.0.0.1:8090";
      Backlog = "1024";
      NoDelay = "true";
    };
    Install.WantedBy = "sockets.target";
  };

  "pool-managerd.service" = {
    Unit = {
      Description = "llama-orch pool manager (engine supervision, model catalog, NVML)";
      Documentation = docs;
      Requires = "pool-managerd.socket";
      After = "network.target pool-managerd.socket";
    };
    Service =
      notify
      // hardening
      // {
        # READY=1 comes after every engine preloaded (or failed); big models take a while.
        TimeoutStartSec = "15min";
        ExecStart = "${bindir}/pool-managerd serve --config ${configDir}/pool-managerd.toml";
        # Engines get SIGTERM, then SIGKILL after 5 s each.
        TimeoutStopSec = "60s";
        Environment = [
          "RUST_LOG=info"
          "XDG_CACHE_HOME=/var/cache"
        ];
        # The engines are children: stop them all with the daemon.
        KillMode = "mixed";
        StateDirectory = "llama-orch";
        CacheDirectory = "llama-orch";
        # Not PrivateDevices: the engines need /dev/nvidia*, and only those.
        DevicePolicy = "closed";
        DeviceAllow = [
          "/dev/nvidiactl rw"
          "/dev/nvidia-uvm rw"
          "/dev/nvidia-uvm-tools rw"
          "char-nvidia-frontend rw"
        ];
        RestrictAddressFamilies = "AF_UNIX AF_INET AF_INET6 AF_NETLINK";
        # No MemoryDenyWriteExecute: CUDA JIT-compiles kernels.
      };
    Install.WantedBy = "multi-user.target";
  };

  "llorch-adapterd@.socket" = {
    Unit = {
      Description = "llama-orch adapter daemon socket for replica %i";
      Documentation = docs;
    };
    Socket = {
      ListenStream = "/run/llorch/adapter-%i.sock";
      SocketMode = "0660";
      # orchestratord joins this group; see llorch.sysusers.conf.
      SocketGroup = "llorch";
      DirectoryMode = "0755";
      Backlog = "1024";
    };
    Install.WantedBy = "sockets.target";
  };

  "llorch-adapterd@.service" = {
    Unit = {
      Description = "llama-orch adapter daemon for replica %i";
      Documentation = docs;
      Requires = "llorch-adapterd@%i.socket";
      After = "llorch-adapterd@%i.socket pool-managerd.service";
      Wants = "pool-managerd.service";
    };
    Service =
      notify
      // hardening
      // {
        EnvironmentFile = "${configDir}/adapterd-%i.env";
        ExecStart = "${bindir}/llorch-adapterd $LLORCH_ADAPTERD_ARGS";
        TimeoutStopSec = "15s";
        PrivateDevices = "yes";
        ProcSubset = "pid";
        # Unix socket to orchestratord, TCP to the engine on loopback.
        RestrictAddressFamilies = "AF_UNIX AF_INET AF_INET6";
        IPAddressDeny = "any";
        IPAddressAllow = "localhost";
        MemoryDenyWriteExecute = "yes";
      };
    Install.WantedBy = "multi-user.target";
  };

  # systemd-sysusers(8) lines of llorch.sysusers.conf.
  sysusers = [ "g llorch -" ];

  # What the NixOS module sets differently from the settings above, and why; documented in
  # docs/nixos.md. tests/nix checks that every key the module overrides is named here.
  moduleDifferences = {
    "orchestratord.socket".Socket = [ "ListenStream" ];
    "orchestratord.service".Service = [
      "ExecStartPre"
      "ExecStart"
      "LoadCredential"
      "SupplementaryGroups"
    ];
    "pool-managerd.socket".Socket = [ "ListenStream" ];
    "pool-managerd.service".Service = [
      "ExecStart"
      "DeviceAllow"
    ];
    "llorch-adapterd@.service".Service = [
      "EnvironmentFile"
      "ExecStart"
    ];
  };
}
