# One node with a mock and a llama.cpp pool; runs the appliance scenarios that the image's
# QEMU tests run too (vm-tests/scenarios/appliance.py: socket activation, a task end to end,
# restart without refused connections, watchdog, engine crash, journald fields, Prometheus
# `up`, reboot), in their order, against the API forwarded to the host's port 18080.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "llama-orch-single-node";

  nodes.machine = import ./common.nix { inherit self; } { llamacpp = true; };

  testScript =
    { nodes, ... }:
    let
      pool = nodes.machine.services.llama-orch.pools.smollm2;
    in
    ''
    import sys
    sys.path.insert(0, "${../scenarios}")
    from appliance import SCENARIOS, Env

    machine.start()
    machine.wait_for_unit("sockets.target")
    machine.wait_for_open_port(8080)
    machine.forward_port(18080, 8080)
    machine.forward_port(19090, 9090)

    # The module's names (common.nix); the defaults of Env are the Debian image's.
    env = Env(
        base_url="http://127.0.0.1:18080",
        prom_url="http://127.0.0.1:19090",
        data_key="vm-test-data-key",
        control_key="vm-test-control-key",
        tenant="vmtest",
        llama_pool="smollm2",
        llama_replica="cpu0",
        llama_model="${pool.model.path}",
        llama_model_sha256="${pool.model.sha256}",
        config_files="/etc/llama-orch-test/*",
    )
    for name, scenario in SCENARIOS:
        with subtest(name):
            scenario(machine, env)
  '';
}
