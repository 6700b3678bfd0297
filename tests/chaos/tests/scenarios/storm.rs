//! A storm of 10,000 concurrent idle SSE streams against the mock engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use llorch_chaos::client::{Outcome, Tally};
use llorch_chaos::procs::{fd_count, raise_nofile, rss_kb};
use llorch_chaos::raw::{RawStream, addr, event_names, last_error_code};
use llorch_chaos::report::{Row, record_and_check};

use super::{DATA, Orch, keys, mock_task};

const N: usize = 10_000;
fn n() -> usize {
    std::env::var("LLORCH_CHAOS_STORM_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(N)
}
/// The whole storm (submit, open, hold, cancel, close) must finish within this.
const BUDGET: Duration = Duration::from_secs(150);

/// 10,000 tasks queued behind one stalled slot, each with its SSE stream open and idle; then
/// every task canceled. Measures orchestratord's RSS per open stream. Requirements: ORCH-3004
/// (bounded queue holds them all), ORCH-2002 (every stream gets `started` and, after the
/// cancel, a terminal event, then closes), ORCH-3017/3026 (cancel frees the slot).
pub fn run() {
    llorch_chaos::runtime().block_on(scenario());
}

async fn scenario() {
    let nofile = raise_nofile();
    assert!(
        nofile as usize > N + 1000,
        "RLIMIT_NOFILE hard limit {nofile} is too low for {N} client sockets"
    );
    let n = n();
    let start = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    // Slots are capped at 1024 per replica: 1000-slot mock replicas, enough for n tasks.
    let replicas: String = (0..n.div_ceil(1000))
        .map(|i| {
            format!(
                "\n[[pools.replicas]]\nid = \"r{i}\"\nslots = 1000\nmock = {{ stall_after_tokens = 0 }}\n"
            )
        })
        .collect();
    let orch = Orch::start(
        dir.path(),
        &format!(
            r#"{keys}
[queue]
capacity = {cap}
full_policy = "reject"

[timeouts]
queue_ms = 600000
first_token_ms = 600000
idle_ms = 600000
wall_ms = 600000

[[pools]]
id = "p"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = 1024
allow_cpu_inference = true
{replicas}"#,
            keys = keys(),
            cap = n + 100,
        ),
    );
    // Its own client, dropped (with its pooled connections) before the fds are counted.
    let mut api = orch.api.clone();
    api.http = reqwest::Client::new();
    let pid = orch.daemon.pid();
    let at = addr(&api.base);
    let rss_before = rss_kb(pid).expect("rss");
    let fds_before = fd_count(pid);

    // Submit N tasks (the first takes the one slot and stalls; the rest queue).
    let submitted = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let r = api.submit(&mock_task(&format!("s{i}"), 4)).await;
                matches!(r, Ok(r) if r.status() == 202)
            }
        })
        .buffer_unordered(32)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    assert_eq!(submitted, n, "accepted submissions");
    let submit_took = start.elapsed();
    let rss_queued = rss_kb(pid).expect("rss");

    // Open N idle streams; each reads until `started`, then waits for its end.
    let opened = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(100));
    let streams: Vec<_> = (0..n)
        .map(|i| {
            let (opened, gate) = (opened.clone(), gate.clone());
            tokio::spawn(async move {
                let id = format!("s{i}");
                let permit = gate.acquire_owned().await.expect("gate");
                let mut s = match RawStream::open(at, &id, DATA, None).await {
                    Ok(s) => s,
                    Err(e) => {
                        return (
                            id,
                            Outcome::Lost {
                                why: format!("connect: {e}"),
                            },
                        );
                    }
                };
                match s.read_until("started", Duration::from_secs(60)).await {
                    Ok(true) => {}
                    other => {
                        return (
                            id,
                            Outcome::Lost {
                                why: format!("no started: {other:?}"),
                            },
                        );
                    }
                }
                drop(permit);
                opened.fetch_add(1, Ordering::Relaxed);
                let o = match s.read_to_eof(Duration::from_secs(120)).await {
                    Err(e) => Outcome::Lost {
                        why: format!("waiting for the end: {e}"),
                    },
                    Ok(()) => {
                        let body = s.body();
                        let names = event_names(&body);
                        let tokens = names.iter().filter(|n| **n == "token").count();
                        match names.last() {
                            Some(&"end") => Outcome::End { tokens },
                            Some(&"error") => Outcome::Error {
                                code: last_error_code(&body).unwrap_or_else(|| "<none>".into()),
                                tokens,
                            },
                            last => Outcome::Lost {
                                why: format!("closed after {last:?}"),
                            },
                        }
                    }
                };
                (id, o)
            })
        })
        .collect();
    while opened.load(Ordering::Relaxed) < n {
        assert!(
            start.elapsed() < BUDGET,
            "only {} of {n} streams open after {:?}",
            opened.load(Ordering::Relaxed),
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_took = start.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_open = rss_kb(pid).expect("rss");
    let fds_open = fd_count(pid);
    let busy_open = api.busy_slots("p").await;

    // Close: cancel every task; every stream ends with a terminal event and closes.
    let canceled = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                api.http
                    .post(api.url(&format!("/v1/tasks/s{i}/cancel")))
                    .bearer_auth(&api.data_key)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        })
        .buffer_unordered(32)
        .filter(|s| futures::future::ready(*s == 204))
        .count()
        .await;
    let mut tally = Tally::default();
    for s in streams {
        let (id, o) = s.await.expect("stream task");
        tally.add(&id, &o);
    }
    let closed_took = start.elapsed();
    let leaked = orch.api.settle_busy("p", Duration::from_secs(10)).await;
    let fresh_ok = orch.api.health("p").await.queue_depth == 0;
    drop(api);
    let fds_after = settle_fds(pid, fds_before).await;

    let per_stream_kb = (rss_open as f64 - rss_before as f64) / n as f64;
    let per_conn_kb = (rss_open as f64 - rss_queued as f64) / n as f64;
    println!(
        "  storm: RSS {rss_before} KiB before, {rss_queued} KiB with {n} stalled tasks, {rss_open} KiB with {n} open streams"
    );
    println!(
        "  storm: {per_stream_kb:.1} KiB per stream (task + runner + connection), {per_conn_kb:.1} KiB per SSE connection alone; fds {fds_before} → {fds_open} → {fds_after}"
    );
    record_and_check(Row {
        scenario: "storm_10k_idle_sse_streams".into(),
        injected: format!(
            "{n} tasks stalled in the mock engine ({} replicas x 1000 slots), {n} concurrent idle SSE streams, then {n} cancels",
            n.div_ceil(1000)
        ),
        observed: format!(
            "submitted in {submit_took:.1?}, all open at {open_took:.1?}, all closed at {closed_took:.1?}; {per_stream_kb:.1} KiB RSS per stream ({per_conn_kb:.1} KiB per connection); {canceled} cancels 204; streams: {}",
            tally.summary()
        ),
        lost: tally.lost.len(),
        leaked,
    });
    assert_eq!(busy_open as usize, n, "every stalled task holds a slot");
    assert_eq!(canceled, n, "every cancel answered 204");
    assert_eq!(tally.total(), n);
    assert!(fresh_ok, "queue empty after the storm");
    assert!(
        fds_after <= fds_before + 4,
        "orchestratord still holds {fds_after} fds after every stream closed (before: {fds_before})"
    );
    assert!(closed_took < BUDGET, "storm took {closed_took:?}");
    assert!(
        per_stream_kb > 0.0 && per_stream_kb < 1024.0,
        "per-stream RSS {per_stream_kb:.1} KiB out of sanity range"
    );
}

/// orchestratord's fd count once it is back near `baseline` (waits up to 5 s).
async fn settle_fds(pid: i32, baseline: usize) -> usize {
    let start = Instant::now();
    loop {
        let n = fd_count(pid);
        if n <= baseline + 4 || start.elapsed() > Duration::from_secs(5) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
