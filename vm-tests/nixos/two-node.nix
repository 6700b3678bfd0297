# A client machine reaches the orchestrator over the test network (the module's openFirewall):
# health, a task submitted and streamed to its end, and the metrics endpoint.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "llama-orch-two-node";

  nodes = {
    server = import ./common.nix { inherit self; } { };
    client =
      { pkgs, ... }:
      {
        environment.systemPackages = [ pkgs.curl ];
      };
  };

  testScript = ''
    start_all()
    server.wait_for_unit("orchestratord.socket")
    server.wait_for_open_port(8080)

    auth = "-H 'Authorization: Bearer vm-test-data-key'"
    client.wait_until_succeeds("curl -sf http://server:8080/readyz", timeout=120)
    client.succeed(
        f"curl -sf -X POST http://server:8080/v1/tasks {auth} -H 'content-type: application/json' "
        """-d '{"task_id":"two-node-1","workload":"completion","model_ref":"mock:tiny","ctx":512,"prompt":"hi","max_tokens":8}'"""
    )
    stream = client.succeed(f"curl -sfN --max-time 60 http://server:8080/v1/tasks/two-node-1/stream {auth}")
    assert "event: end" in stream, stream
    metrics = client.succeed("curl -sf http://server:8080/metrics")
    assert "llorch_" in metrics, metrics[:500]
    # The pool manager stays on loopback.
    client.fail("curl -sf --max-time 5 http://server:8090/v1/replicas")
  '';
}
