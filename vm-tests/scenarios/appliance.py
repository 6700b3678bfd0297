"""The appliance's VM scenarios, written once for two drivers.

Each scenario is `fn(machine, env)`. `machine` offers the NixOS test driver's machine API
(start, wait_for_unit, wait_for_open_port, succeed, fail, execute, wait_until_succeeds,
systemctl, get_unit_info, reboot, forward_port): vm-tests/driver/llorch_vm.py implements it
for the Debian image under QEMU, and NixOS's test driver provides it in vm-tests/nixos/. `env`
(an `Env`) says how the host reaches the guest's forwarded ports and carries the test keys.

The guest runs a mock pool (the mock engine in its replica's llorch-adapterd@) and a
llama.cpp pool (a real llama-server supervised by pool-managerd, reached by its replica's
llorch-adapterd@), and Prometheus on 9090. `Env`'s defaults are the names of the Debian
image's configuration (images/overlay/: pools `mock`/`smol`, replicas `mock0`/`smol0`); the
NixOS tests pass their module's names. Scenarios run in the order of SCENARIOS on one boot;
each leaves the stack serving.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

# `systemd-analyze security` exposure allowed for every llama-orch service: systemd's "OK"
# band (docs/operations.md, "systemd units", says what keeps each above 1).
EXPOSURE_LIMIT = 2.0


class ScenarioFailed(AssertionError):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise ScenarioFailed(msg)


@dataclass
class Env:
    base_url: str              # orchestratord through a forwarded port, e.g. http://127.0.0.1:18080
    prom_url: str              # the guest's Prometheus through a forwarded port
    data_key: str = "vm-data-key"
    control_key: str = "vm-control-key"
    tenant: str = "vm"                       # the data key's tenant
    mock_pool: str = "mock"
    mock_replica: str = "mock0"
    mock_model: str = "mock:tiny"
    llama_pool: str = "smol"
    llama_replica: str = "smol0"
    llama_model: str = "/usr/share/llama-orch/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    llama_model_sha256: str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    config_files: str = "/etc/llama-orch/*"   # what must survive a reboot unchanged
    upgrade_deb: str | None = None   # guest path of a rebuilt llama-orch package (upgrade)
    notes: dict = field(default_factory=dict)   # measurements for the summary

    # ---- host-side HTTP -----------------------------------------------------------------

    def _conn(self, url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
        u = urllib.parse.urlsplit(url)
        return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout), u.path

    def request(self, method: str, path: str, body=None, key: str | None = None,
                timeout: float = 60, base: str | None = None) -> tuple[int, bytes]:
        conn, prefix = self._conn(base or self.base_url, timeout)
        headers = {"Connection": "close"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body=None, key: str | None = None, **kw):
        status, data = self.request(method, path, body, key or self.data_key, **kw)
        try:
            return status, json.loads(data or b"null")
        except ValueError:
            return status, {"raw": data.decode(errors="replace")}

    def stream_task(self, task: dict, timeout: float = 600, on_token=None) -> dict:
        """POST /v1/tasks with Accept: text/event-stream; reads the SSE stream to its end.
        Returns {status, events: [(name, data)], text, error?}; raises ConnectionError kinds
        (refused, reset) to the caller, which counts them."""
        conn, prefix = self._conn(self.base_url, timeout)
        headers = {"Connection": "close", "Authorization": f"Bearer {self.data_key}",
                   "Content-Type": "application/json", "Accept": "text/event-stream"}
        try:
            conn.request("POST", prefix + "/v1/tasks", body=json.dumps(task).encode(),
                         headers=headers)
            resp = conn.getresponse()
            out = {"status": resp.status, "events": [], "text": ""}
            if resp.status != 200:
                out["error"] = resp.read().decode(errors="replace")
                return out
            name, data = None, []
            while True:
                line = resp.readline()
                if not line:
                    break
                line = line.rstrip(b"\r\n").decode(errors="replace")
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and name is not None:
                    payload = json.loads("\n".join(data)) if data else None
                    out["events"].append((name, payload))
                    if name == "token" and isinstance(payload, dict):
                        out["text"] += payload.get("t", "")
                        if on_token:
                            on_token(out)
                    if name in ("end", "error"):
                        break
                    name, data = None, []
            return out
        finally:
            conn.close()

    def adapters(self) -> list[str]:
        return [f"llorch-adapterd@{r}.service" for r in (self.mock_replica, self.llama_replica)]

    def daemons(self) -> list[str]:
        return ["orchestratord.service", "pool-managerd.service", *self.adapters()]

    def sockets(self) -> list[str]:
        return [d.replace(".service", ".socket") for d in self.daemons()]

    def prom_query(self, query: str) -> list:
        status, data = self.request(
            "GET", "/api/v1/query?" + urllib.parse.urlencode({"query": query}),
            base=self.prom_url, timeout=30)
        check(status == 200, f"Prometheus query {query!r}: HTTP {status} {data[:200]!r}")
        return json.loads(data)["data"]["result"]


def task(pool_model: str, task_id: str, max_tokens: int = 8, prompt: str = "Hello") -> dict:
    return {"task_id": task_id, "workload": "completion", "model_ref": pool_model,
            "ctx": 512, "prompt": prompt, "max_tokens": max_tokens, "seed": 7}


def names(result: dict) -> list[str]:
    return [n for n, _ in result.get("events", [])]


def last_event(result: dict) -> str:
    """The stream's last event name, or what came instead (a refusal's status and body)."""
    n = names(result)
    if n:
        return n[-1]
    return f"no events (HTTP {result.get('status')}: {str(result.get('error', result))[:200]})"


def unit_state(machine, unit: str) -> str:
    return machine.get_unit_info(unit).get("ActiveState", "?")


def pool_health(env: Env, pool: str) -> dict:
    status, body = env.json("GET", f"/v1/pools/{pool}/health", key=env.control_key)
    check(status == 200, f"pool {pool} health: HTTP {status} {body}")
    return body


def wait_pool_ready(env: Env, pool: str, timeout: float) -> float:
    started = time.monotonic()
    last = None
    while time.monotonic() - started < timeout:
        try:
            last = pool_health(env, pool)
            if last.get("ready"):
                return time.monotonic() - started
        except (OSError, ScenarioFailed, http.client.HTTPException) as e:
            last = repr(e)
        time.sleep(2)
    raise ScenarioFailed(f"pool {pool} not ready within {timeout:.0f} s: {last}")


# ---- scenarios ------------------------------------------------------------------------------

def socket_activation(machine, env: Env) -> None:
    """Services stopped, sockets listening; the first request starts orchestratord (Type=notify,
    answered), which starts pool-managerd (registry feed) and every adapter daemon (probes)
    through their sockets."""
    for s in env.sockets():
        machine.wait_for_unit(s, timeout=600)
    # Prometheus scrapes would activate the daemons on their own: keep it out of the way.
    machine.succeed("systemctl stop prometheus.service")
    machine.succeed("systemctl stop " + " ".join(env.daemons()))
    for d in env.daemons():
        check(unit_state(machine, d) == "inactive", f"{d} should be inactive before any connection")
    machine.wait_for_open_port(8080)
    machine.wait_for_open_port(8090)
    for r in (env.mock_replica, env.llama_replica):
        machine.succeed(f"test -S /run/llorch/adapter-{r}.sock")
    started = time.monotonic()
    status, body = env.request("GET", "/v1/capabilities", key=env.data_key, timeout=300)
    env.notes["first request after activation (s)"] = round(time.monotonic() - started, 1)
    check(status == 200, f"first request: HTTP {status} {body[:200]!r}")
    info = machine.get_unit_info("orchestratord.service")
    check(info.get("Type") == "notify", f"orchestratord Type={info.get('Type')}")
    check(info.get("ActiveState") == "active" and info.get("SubState") == "running",
          f"orchestratord not running after READY: {info.get('ActiveState')}/{info.get('SubState')}")
    check(info.get("TriggeredBy", "").find("orchestratord.socket") >= 0,
          f"orchestratord not triggered by its socket: {info.get('TriggeredBy')}")
    for d in env.adapters():
        machine.wait_for_unit(d, timeout=120)
    # pool-managerd's READY=1 comes after its engines preloaded (a real model under TCG).
    t0 = time.monotonic()
    machine.wait_for_unit("pool-managerd.service", timeout=1200)
    env.notes["pool-managerd READY after activation (s)"] = round(time.monotonic() - t0, 1)
    for d in env.daemons():
        info = machine.get_unit_info(d)
        check(info.get("Type") == "notify" and info.get("SubState") == "running",
              f"{d}: Type={info.get('Type')} SubState={info.get('SubState')}")
    machine.succeed("systemctl start prometheus.service")


def task_end_to_end(machine, env: Env) -> None:
    """A task streams tokens over the forwarded port from the mock engine, and from the real
    llama-server inside the guest."""
    r = env.stream_task(task(env.mock_model, "vm-e2e-mock", 16))
    check(r["status"] == 200, f"mock task: {r}")
    check(names(r)[:1] == ["started"] and last_event(r) == "end", f"mock events: {names(r)}")
    check(names(r).count("token") >= 1, f"mock task streamed no token: {names(r)}")
    env.notes["llama.cpp pool ready wait (s)"] = round(wait_pool_ready(env, env.llama_pool, 1200), 1)
    started = time.monotonic()
    r = env.stream_task(task(env.llama_model, "vm-e2e-llama", 8, "The capital of France is"),
                        timeout=900)
    took = time.monotonic() - started
    check(r["status"] == 200, f"smol task: {r}")
    check(last_event(r) == "end", f"smol task did not end cleanly: {r['events'][-3:]}")
    tokens = names(r).count("token")
    check(tokens >= 1, f"real engine streamed no token: {names(r)}")
    env.notes["real engine: tokens"] = tokens
    env.notes["real engine: task seconds"] = round(took, 1)
    env.notes["real engine: text"] = r["text"][:60]


def journald_fields(machine, env: Env) -> None:
    """The task's log lines are journal entries with SPEC §7's fields; no API key anywhere."""
    out = machine.succeed("journalctl -o json --no-pager -u orchestratord.service JOB_ID=vm-e2e-llama")
    entries = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
    finished = [e for e in entries if "task finished" in str(e.get("MESSAGE", ""))]
    check(finished, f"no 'task finished' journal entry for vm-e2e-llama ({len(entries)} entries)")
    e = finished[-1]
    want = {"JOB_ID": "vm-e2e-llama", "TENANT": env.tenant, "POOL_ID": env.llama_pool,
            "REPLICA_ID": env.llama_replica, "ENGINE": "llamacpp"}
    for k, v in want.items():
        check(e.get(k) == v, f"journal field {k}={e.get(k)!r}, want {v!r}")
    for k in ("QUEUE_TIME_MS", "DECODE_TIME_MS", "TOKENS_IN", "TOKENS_OUT", "MODEL"):
        check(k in e, f"journal entry lacks {k}: {sorted(e)}")
    check(int(e["TOKENS_OUT"]) >= 1, f"TOKENS_OUT={e['TOKENS_OUT']}")
    # Every key the scenarios sent, in any journal file, raw (compressed fields would hide it
    # from grep: journald compresses only fields over 512 bytes, and a key is shorter).
    for key in (env.data_key, env.control_key):
        rc, hits = machine.execute(f"journalctl --no-pager -o export | grep -c -- {key}")
        check(hits.strip() == "0", f"API key {key!r} appears {hits.strip()} times in the journal")


def prometheus_up(machine, env: Env) -> None:
    """The guest's Prometheus scrapes every llama-orch daemon (up == 1) and has the task
    series; the shipped alert rules are loaded."""
    deadline = time.monotonic() + 120
    while True:
        up = env.prom_query('up{job=~"llama-orch-.*"}')
        jobs = {s["metric"]["job"]: s["value"][1] for s in up}
        if jobs.get("llama-orch-orchestratord") == "1" and jobs.get("llama-orch-pool-managerd") == "1":
            break
        check(time.monotonic() < deadline, f"up == 1 not reached for every target: {jobs}")
        time.sleep(3)
    started = env.prom_query(f'llorch_tasks_started_total{{pool_id="{env.mock_pool}"}}')
    check(started and float(started[0]["value"][1]) >= 1, f"llorch_tasks_started_total: {started}")
    ready = env.prom_query(
        f'llorch_replica_ready{{job="llama-orch-pool-managerd",pool_id="{env.llama_pool}"}}')
    check(ready, f"pool-managerd's llorch_replica_ready{{pool_id={env.llama_pool}}} not scraped")
    status, data = env.request("GET", "/api/v1/rules", base=env.prom_url)
    groups = [g["name"] for g in json.loads(data)["data"]["groups"]]
    check("llama-orch" in groups, f"alert rules not loaded: groups {groups}")


def hardening(machine, env: Env) -> None:
    """`systemd-analyze security` for every llama-orch service, as a table."""
    table = {}
    for unit in ("orchestratord.service", "pool-managerd.service", env.adapters()[0]):
        out = machine.succeed(f"systemd-analyze security --no-pager {unit}")
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\S+)", out)
        check(m is not None, f"no exposure level for {unit}:\n{out[-400:]}")
        table[unit] = (float(m.group(1)), m.group(2))
    env.notes["security"] = table
    print("\n  unit                               exposure")
    for unit, (level, word) in table.items():
        print(f"  {unit:<34} {level:>4.1f} {word}")
    bad = {u: v for u, v in table.items() if v[0] > EXPOSURE_LIMIT}
    check(not bad, f"exposure above the limit: {bad}")


def engine_crash(machine, env: Env) -> None:
    """kill -9 of llama-server: the replica is Unready at once, the in-flight task ends with a
    typed error, pool-managerd restarts the engine and the replica is Ready again, no slot
    leaks."""
    wait_pool_ready(env, env.llama_pool, 1200)
    pid = machine.succeed("pgrep -x llama-server | head -1").strip()
    check(pid.isdigit(), f"no llama-server process: {pid!r}")
    result: dict = {}
    first_token = threading.Event()
    done = threading.Event()

    def run():
        try:
            # A prompt the model continues for long (counting), so the kill lands mid-stream.
            result.update(env.stream_task(
                task(env.llama_model, "vm-crash", 400, "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"),
                timeout=900, on_token=lambda _: first_token.set()))
        except Exception as e:  # counted below
            result["exception"] = repr(e)
        done.set()

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 600
    while not first_token.is_set() and not done.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    check(first_token.is_set() and not done.is_set(),
          f"the real engine's task did not stream (done early: {done.is_set()}): {result}")
    machine.succeed(f"kill -9 {pid}")
    killed = time.monotonic()
    t.join(120)
    check(not t.is_alive(), "the in-flight task hangs after the engine was killed")
    check("exception" not in result, f"stream broke instead of a typed error: {result}")
    check(last_event(result) == "error", f"in-flight task did not end with an error event: {names(result)[-3:]}")
    err = result["events"][-1][1] or {}
    check(isinstance(err, dict) and err.get("code"), f"error event without a code: {err}")
    env.notes["crash: error code"] = err.get("code")
    health = pool_health(env, env.llama_pool)
    check(not health.get("ready"), f"replica still Ready after the crash: {health}")
    env.notes["crash: unready seen after (s)"] = round(time.monotonic() - killed, 1)
    env.notes["crash: back to Ready (s)"] = round(wait_pool_ready(env, env.llama_pool, 1200), 1)
    health = pool_health(env, env.llama_pool)
    replicas = health.get("replicas", [])
    check(any(r.get("restarts", 0) >= 1 for r in replicas), f"no restart counted: {health}")
    new_pid = machine.succeed("pgrep -x llama-server | head -1").strip()
    check(new_pid and new_pid != pid, f"engine pid {new_pid} (was {pid})")
    status, metrics = env.request("GET", "/metrics")
    busy = [l for l in metrics.decode().splitlines()
            if l.startswith("llorch_replica_slots_busy") and f'replica_id="{env.llama_replica}"' in l]
    check(busy and all(float(l.rsplit(" ", 1)[1]) == 0 for l in busy), f"slots leaked: {busy}")
    # The engine works again.
    r = env.stream_task(task(env.llama_model, "vm-after-crash", 4), timeout=900)
    check(last_event(r) == "end", f"task after recovery: {r['events'][-2:]}")


def watchdog(machine, env: Env) -> None:
    """A daemon that stops answering (SIGSTOP) is killed and restarted by systemd's watchdog."""
    unit = "orchestratord.service"
    info = machine.get_unit_info(unit)
    pid, restarts = info["MainPID"], int(info.get("NRestarts", "0"))
    watchdog_s = int(info.get("WatchdogUSec", "0")) / 1e6 if info.get("WatchdogUSec", "").isdigit() else 30
    machine.succeed(f"kill -STOP {pid}")
    stopped = time.monotonic()
    deadline = stopped + watchdog_s + 60
    while True:
        info = machine.get_unit_info(unit)
        if int(info.get("NRestarts", "0")) > restarts and info.get("MainPID") not in ("0", pid) \
                and info.get("ActiveState") == "active":
            break
        check(time.monotonic() < deadline, f"not restarted within {watchdog_s + 60:.0f} s: {info.get('ActiveState')}")
        time.sleep(1)
    env.notes["watchdog: restarted after (s)"] = round(time.monotonic() - stopped, 1)
    journal = machine.succeed(f"journalctl -u {unit} --no-pager -n 200")
    check("Watchdog timeout" in journal, "the journal does not say the watchdog fired")
    status, _ = env.request("GET", "/v1/capabilities", key=env.data_key, timeout=120)
    check(status == 200, f"orchestratord after the watchdog restart: HTTP {status}")


class Load:
    """A steady, bounded client load on the mock pool: `workers` loops, one connection per
    task. Counts what a client would see."""

    def __init__(self, env: Env, workers: int = 4):
        self.env = env
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {"completed": 0, "typed_error": 0, "http_error": 0, "refused": 0,
                       "reset": 0, "hung": 0, "other": 0}
        self.examples: dict[str, str] = {}
        self.threads = [threading.Thread(target=self.loop, args=(i,)) for i in range(workers)]

    def count(self, what: str, example: str = "") -> None:
        with self.lock:
            self.counts[what] += 1
            if example and what not in self.examples:
                self.examples[what] = example[:300]

    def loop(self, worker: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                r = self.env.stream_task(task(self.env.mock_model, f"load-{worker}-{n}-{time.monotonic_ns()}", 24),
                                         timeout=90)
            except ConnectionRefusedError as e:
                self.count("refused", repr(e))
                continue
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected,
                    http.client.IncompleteRead) as e:
                self.count("reset", repr(e))
                continue
            except TimeoutError as e:
                self.count("hung", repr(e))
                continue
            except Exception as e:
                self.count("other", repr(e))
                continue
            if r["status"] != 200:
                body = r.get("error", "")
                self.count("typed_error" if '"code"' in body else "http_error", f"{r['status']} {body}")
            elif r["events"] and r["events"][-1][0] == "end":
                self.count("completed")
            elif r["events"] and r["events"][-1][0] == "error":
                self.count("typed_error", json.dumps(r["events"][-1][1]))
            else:
                self.count("reset", f"stream ended without end/error: {names(r)[-3:]}")

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(120)
        if any(t.is_alive() for t in self.threads):
            self.counts["hung"] += 1


def restart_without_refusing(machine, env: Env) -> None:
    """Under steady load: `systemctl restart orchestratord`, then a package upgrade. No
    connection is refused or reset; tasks in flight complete or end with a typed error."""
    results = {}
    steps = [("restart", "systemctl restart orchestratord.service")]
    if env.upgrade_deb:
        steps.append(("upgrade", f"DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold {env.upgrade_deb}"))
    for label, command in steps:
        with Load(env) as load:
            time.sleep(5)
            before = dict(load.counts)
            machine.succeed(command, timeout=600)
            machine.wait_for_unit("orchestratord.service", timeout=300)
            time.sleep(8)
        results[label] = dict(load.counts)
        env.notes[f"{label}: client outcomes"] = load.counts
        if load.examples:
            env.notes[f"{label}: examples"] = load.examples
        check(before["completed"] > 0, f"{label}: the load completed no task before the step: {before}")
        check(load.counts["completed"] > before["completed"], f"{label}: no task completed after the step")
        for bad in ("refused", "reset", "hung", "other", "http_error"):
            check(load.counts[bad] == 0, f"{label}: {load.counts[bad]} {bad}: {load.examples.get(bad)}")
    if env.upgrade_deb:
        version = machine.succeed("dpkg-query -W -f '${Version}' llama-orch")
        check("+" in version, f"upgrade did not install the rebuilt package (version {version})")


def reboot(machine, env: Env) -> None:
    """The model catalog and the configuration survive a reboot; the stack comes back by
    itself (sockets enabled, first request activates the services)."""
    digest = env.llama_model_sha256
    register = (f"curl -sf -X POST http://127.0.0.1:8090/v1/catalog/models "
                f"-H 'Authorization: Bearer {env.control_key}' -H 'content-type: application/json' "
                f"-d '{{\"model_ref\":\"{env.llama_model}\",\"sha256\":\"{digest}\"}}'")
    machine.succeed(register)
    get = (f"curl -sf http://127.0.0.1:8090/v1/catalog/models/sha256:{digest} "
           f"-H 'Authorization: Bearer {env.control_key}'")
    before = json.loads(machine.succeed(get))
    conf = machine.succeed(f"sha256sum {env.config_files}")
    machine.reboot()
    for s in env.sockets():
        machine.wait_for_unit(s, timeout=600)
    status, body = env.request("GET", "/v1/capabilities", key=env.data_key, timeout=300)
    check(status == 200, f"after reboot: HTTP {status} {body[:200]!r}")
    # The adapters start on orchestratord's first probes; the pool is Ready once they answer.
    env.notes["reboot: mock pool ready after (s)"] = round(wait_pool_ready(env, env.mock_pool, 300), 1)
    r = env.stream_task(task(env.mock_model, "vm-after-reboot", 8))
    check(last_event(r) == "end", f"task after reboot: {names(r)}")
    after = json.loads(machine.wait_until_succeeds(get, timeout=600))
    check(after.get("id") == before.get("id") and after.get("state") == before.get("state"),
          f"catalog entry changed across the reboot: {before} → {after}")
    check(machine.succeed(f"sha256sum {env.config_files}") == conf, "config changed across the reboot")
    machine.wait_for_unit("prometheus.service", timeout=300)


SCENARIOS = [
    ("socket activation", socket_activation),
    ("task end to end", task_end_to_end),
    ("journald", journald_fields),
    ("prometheus", prometheus_up),
    ("hardening", hardening),
    ("engine crash", engine_crash),
    ("watchdog", watchdog),
    ("restart without refusing", restart_without_refusing),
    ("reboot", reboot),
]
