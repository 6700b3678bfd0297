# One node with a mock and a llama.cpp pool; runs the appliance scenarios that the image's
# QEMU tests run too (vm-tests/scenarios/appliance.py: socket activation, a task end to end,
# restart without refused connections, watchdog, engine crash, journald fields, Prometheus
# `up`, reboot), in their order, against the API forwarded to the host's port 18080.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "llama-orch-single-node";

  nodes.machine = import ./common.nix { inherit self; } { llamacpp = true; };

  testScript = ''
    import sys
    sys.path.insert(0, "${../scenarios}")
    from appliance import SCENARIOS, Env

    machine.start()
    machine.wait_for_unit("sockets.target")
    machine.wait_for_open_port(8080)
    machine.forward_port(18080, 8080)

    env = Env(
        base_url="http://127.0.0.1:18080",
        data_key="vm-test-data-key",
        control_key="vm-test-control-key",
    )
    for name, scenario in SCENARIOS:
        with subtest(name):
            scenario(machine, env)
  '';
}
