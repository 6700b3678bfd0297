# llama-orch: every daemon and the CLI (orchestratord, pool-managerd, llorch-adapterd, llorch),
# the systemd units and sysusers file of systemd/ (with ExecStart= pointing into this package),
# the docs, the example configs and monitoring/ (alert rules, Grafana dashboard) under
# share/llama-orch/monitoring, as the Debian package puts them under /usr/share/llama-orch. The test suite runs in the flake's `checks.cargo-tests`.
{
  lib,
  rustPlatform,
  addDriverRunpath,
}:
let
  root = ../.;
  workspace = builtins.fromTOML (builtins.readFile ../Cargo.toml);
in
rustPlatform.buildRustPackage {
  pname = "llama-orch";
  inherit (workspace.workspace.package) version;

  # Only what cargo needs for the workspace (every member's manifest) and what is installed.
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../.cargo
      ../crates
      ../examples
      ../tests
      ../tools
      ../docs
      ../systemd
      ../monitoring
      ../nix/pins.json
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = [
    "--package"
    "orchestratord"
    "--package"
    "pool-managerd"
    "--package"
    "llorch-adapterd"
    "--package"
    "llama-orch-cli"
  ];

  # The suite starts daemons and engines; it runs in checks.cargo-tests with the pinned engine.
  doCheck = false;

  nativeBuildInputs = [ addDriverRunpath ];

  postInstall = ''
    install -d $out/lib/systemd/system
    for unit in systemd/*.service systemd/*.socket; do
      # The shipped units name /usr/bin (or /usr/local/bin); here the binaries are in $out/bin.
      sed -E "s#^(Exec[A-Za-z]*=)/usr/(local/)?bin/#\1$out/bin/#" "$unit" \
        > "$out/lib/systemd/system/$(basename "$unit")"
    done
    install -Dm644 systemd/llorch.sysusers.conf $out/lib/sysusers.d/llorch.conf
    install -d $out/share/doc/llama-orch $out/share/llama-orch
    cp -r docs/. $out/share/doc/llama-orch/
    cp -r examples $out/share/llama-orch/examples
    # Prometheus alert rules and the Grafana dashboard (services.llama-orch.prometheus.scrape
    # loads the rules; docs/monitoring.md).
    cp -r monitoring $out/share/llama-orch/monitoring
  '';

  # NVML (libnvidia-ml.so) comes from the host's driver: /run/opengl-driver/lib on NixOS.
  postFixup = ''
    addDriverRunpath $out/bin/pool-managerd
  '';

  meta = {
    description = "Queue-centric LLM inference orchestrator (OrchQueue v1) with engine supervision";
    homepage = "https://github.com/llama-orch/llama-orch";
    license = lib.licenses.asl20;
    mainProgram = "llorch";
    platforms = lib.platforms.linux;
  };
}
