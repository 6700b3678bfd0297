//! Slow and stalled SSE clients next to normal ones.

use std::time::{Duration, Instant};

use llorch_chaos::client::{Api, Outcome, Tally};
use llorch_chaos::procs::rss_kb;
use llorch_chaos::raw::{RawStream, addr, event_names, last_error_code};
use llorch_chaos::report::{Row, record_and_check};

use super::engine_kill::describe;
use super::{DATA, Orch, keys};

const STALLED: usize = 4;
const STALLED_TOKENS: u32 = 20_000;
const NORMAL: usize = 4;
const NORMAL_TOKENS: u32 = 2_000;

fn task(id: &str, max_tokens: u32) -> serde_json::Value {
    serde_json::json!({
        "task_id": id, "workload": "completion", "model_ref": "mock:tiny",
        "ctx": 24000, "prompt": "write a long saga", "max_tokens": max_tokens
    })
}

/// `NORMAL` concurrent streams of `NORMAL_TOKENS`; returns the slowest one's duration.
async fn normal_round(api: &Api, tag: &str, tally: &mut Tally) -> Duration {
    let runs: Vec<_> = (0..NORMAL)
        .map(|i| {
            let api = api.clone();
            let id = format!("{tag}-{i}");
            tokio::spawn(async move {
                let t = Instant::now();
                let o = api
                    .run_task(&task(&id, NORMAL_TOKENS), Duration::from_secs(20))
                    .await;
                (id, o, t.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for r in runs {
        let (id, o, took) = r.await.expect("normal stream");
        assert!(
            matches!(o, Outcome::End { tokens } if tokens == NORMAL_TOKENS as usize),
            "{id}: {o:?}"
        );
        tally.add(&id, &o);
        slowest = slowest.max(took);
    }
    slowest
}

/// Stalled clients (a 4 KiB receive buffer, then no reading at all) on 20,000-token streams,
/// a slow reader (4 KiB every 5 ms), and normal streams measured before and during the stall.
/// Requirements: ORCH-2002 (every stream, even a stalled one, ends with its terminal event
/// once read), ORCH-3035/3036 (one client's behaviour does not take resources from others:
/// other streams' progress unaffected, server memory bounded), ORCH-3008 (slots are freed by
/// the engine finishing, not by the reader).
pub fn run() {
    llorch_chaos::runtime().block_on(scenario());
}

async fn scenario() {
    let dir = tempfile::tempdir().expect("tempdir");
    let orch = Orch::start(
        dir.path(),
        &format!(
            r#"{keys}
[[pools]]
id = "p"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = 32768
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 16
"#,
            keys = keys()
        ),
    );
    let api = orch.api.clone();
    let pid = orch.daemon.pid();
    let at = addr(&api.base);
    let mut tally = Tally::default();

    let baseline = normal_round(&api, "base", &mut tally).await;
    let rss0 = rss_kb(pid).expect("rss");

    // Stalled clients: submit, open the stream, read the status line, then stop reading.
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let id = format!("stalled-{i}");
        let r = api
            .submit(&task(&id, STALLED_TOKENS))
            .await
            .expect("submit");
        assert_eq!(r.status(), 202);
        let mut s = RawStream::open(at, &id, DATA, Some(4096))
            .await
            .expect("open stalled");
        s.read_some(256, Duration::from_secs(5))
            .await
            .expect("status line");
        assert_eq!(s.status(), Some(200), "stalled stream status");
        stalled.push((id, s));
    }
    // A slow reader alongside.
    let slow = {
        let id = "slow".to_string();
        let r = api
            .submit(&task(&id, NORMAL_TOKENS))
            .await
            .expect("submit slow");
        assert_eq!(r.status(), 202);
        tokio::spawn(async move {
            let mut s = RawStream::open(at, &id, DATA, Some(4096))
                .await
                .expect("open slow");
            let t = Instant::now();
            while s
                .read_some(4096, Duration::from_secs(10))
                .await
                .expect("slow read")
                > 0
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (s, t.elapsed())
        })
    };

    let during = normal_round(&api, "during", &mut tally).await;
    // The engine finishes the stalled tasks whether or not anyone reads them.
    let leaked_mid = api.settle_busy("p", Duration::from_secs(60)).await;
    let rss1 = rss_kb(pid).expect("rss");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss2 = rss_kb(pid).expect("rss");
    let (slow_stream, slow_took) = slow.await.expect("slow reader");
    let slow_outcome = outcome_of("slow", &slow_stream.body());
    tally.add("slow", &slow_outcome);

    // Resume the stalled readers: everything is still there, ending with `end`.
    for (id, s) in &mut stalled {
        let r = s.read_to_eof(Duration::from_secs(20)).await;
        let o = match r {
            Ok(()) => outcome_of(id, &s.body()),
            Err(e) => Outcome::Lost {
                why: format!("resuming: {e}"),
            },
        };
        tally.add(id, &o);
        assert!(
            matches!(o, Outcome::End { tokens } if tokens == STALLED_TOKENS as usize),
            "{id} after resuming: {o:?}"
        );
    }
    drop(stalled);
    let leaked = api.settle_busy("p", Duration::from_secs(5)).await;
    let fresh = api
        .run_task(&task("fresh", 5), Duration::from_secs(10))
        .await;
    tally.add("fresh", &fresh);

    let growth_mb = (rss1 as f64 - rss0 as f64) / 1024.0;
    let creep_kb = rss2 as i64 - rss1 as i64;
    record_and_check(Row {
        scenario: "slow_and_stalled_sse_clients".into(),
        injected: format!(
            "{STALLED} clients stop reading {STALLED_TOKENS}-token streams (4 KiB receive buffer); 1 reader at 4 KiB per 5 ms"
        ),
        observed: format!(
            "other streams ({NORMAL}x{NORMAL_TOKENS} tokens) slowest {baseline:.2?} before, {during:.2?} during; orchestratord RSS +{growth_mb:.1} MiB with the stalls ({rss0} → {rss1} KiB, then {creep_kb:+} KiB in 1 s); slow reader: {} in {slow_took:.2?}; stalled streams complete when resumed; fresh: {}",
            describe(&slow_outcome),
            describe(&fresh)
        ),
        lost: tally.lost.len(),
        leaked: leaked.max(leaked_mid),
    });
    assert!(
        during <= baseline * 3 + Duration::from_secs(2),
        "other streams slowed down by stalled clients: {baseline:?} → {during:?}"
    );
    assert!(
        growth_mb < 256.0,
        "orchestratord RSS grew {growth_mb:.1} MiB with {STALLED} stalled clients"
    );
    assert!(
        creep_kb < 4096,
        "RSS still growing while clients stay stalled: {creep_kb} KiB/s"
    );
    assert!(
        matches!(slow_outcome, Outcome::End { .. }),
        "slow reader: {slow_outcome:?}"
    );
    assert!(
        matches!(fresh, Outcome::End { tokens: 5 }),
        "fresh: {fresh:?}"
    );
}

/// The outcome of a raw stream from its SSE body.
fn outcome_of(id: &str, body: &str) -> Outcome {
    let names = event_names(body);
    let tokens = names.iter().filter(|n| **n == "token").count();
    match names.last().copied() {
        Some("end") => Outcome::End { tokens },
        Some("error") => Outcome::Error {
            code: last_error_code(body).unwrap_or_else(|| "<none>".into()),
            tokens,
        },
        last => Outcome::Lost {
            why: format!("{id}: last event {last:?} after {tokens} tokens"),
        },
    }
}
