# A configuration change the way `nixos-rebuild switch` applies it — a pool added — while a
# task streams: the running stream ends normally (orchestratord drains on SIGTERM), and the new
# pool serves afterwards. The changed configuration is a specialisation, activated with
# `switch-to-configuration test`.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "llama-orch-switch";

  nodes.machine =
    { lib, ... }:
    {
      imports = [ (import ./common.nix { inherit self; } { }) ];
      specialisation.pool-added.configuration = {
        services.llama-orch.pools.mock2 = {
          engine = "mock";
          model.ref = "mock:second";
          replicas.mock1.slots = 2;
        };
      };
    };

  testScript = ''
    machine.start()
    machine.wait_for_unit("sockets.target")
    machine.wait_for_open_port(8080)
    machine.wait_until_succeeds("curl -sf http://127.0.0.1:8080/readyz", timeout=120)

    auth = "-H 'Authorization: Bearer vm-test-data-key'"
    def submit(task, model, tokens):
        machine.succeed(
            f"curl -sf -X POST http://127.0.0.1:8080/v1/tasks {auth} -H 'content-type: application/json' "
            f"""-d '{{"task_id":"{task}","workload":"completion","model_ref":"{model}","ctx":512,"prompt":"hi","max_tokens":{tokens}}}'"""
        )

    # 200 tokens at 20 tokens/s: the stream runs ~10 s, across the switch.
    submit("in-flight", "mock:tiny", 200)
    machine.succeed(
        f"systemd-run --unit=inflight-reader ${pkgs.bash}/bin/sh -c "
        f"'${pkgs.curl}/bin/curl -sfN --max-time 120 http://127.0.0.1:8080/v1/tasks/in-flight/stream {auth} > /tmp/in-flight.sse'"
    )
    machine.sleep(2)

    with subtest("switch to the configuration with a pool added"):
        machine.succeed("/run/current-system/specialisation/pool-added/bin/switch-to-configuration test")

    with subtest("the in-flight stream ended normally"):
        machine.wait_until_succeeds("grep -q '^event: end' /tmp/in-flight.sse", timeout=120)
        machine.fail("grep -q '^event: error' /tmp/in-flight.sse")

    with subtest("the added pool serves"):
        machine.wait_for_unit("llorch-adapterd@mock1.socket")
        machine.wait_until_succeeds("curl -sf http://127.0.0.1:8080/readyz", timeout=120)
        submit("after-switch", "mock:second", 8)
        out = machine.succeed(f"curl -sfN --max-time 60 http://127.0.0.1:8080/v1/tasks/after-switch/stream {auth}")
        assert "event: end" in out, out
  '';
}
