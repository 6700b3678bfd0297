//! A client that disconnects mid-stream, on the real engine under `llorch serve`.

use std::time::{Duration, Instant};

use llorch_chaos::client::{Outcome, Tally, metric_value, read_tokens};
use llorch_chaos::report::{Row, record_and_check};

use super::engine_kill::{Serve, describe};

/// The client drops its connection after two tokens of a 400-token stream on a one-slot
/// replica. Requirements: ORCH-3017/3026 (cancellation frees the engine slot: the next task
/// starts), ORCH-2002 (the abandoned task's stream still ends with a terminal event when read
/// again), ORCH-3008 (least-loaded placement sees the slot free again).
pub fn run() {
    llorch_chaos::runtime().block_on(scenario());
}

async fn scenario() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut serve = Serve::start(dir.path(), 1);
    let api = serve.api.clone();
    let mut tally = Tally::default();
    let per_event = Duration::from_secs(60);

    let accepted = api.submit(&serve.task("gone", 400)).await.expect("submit");
    assert_eq!(accepted.status(), 202);
    let stream = read_tokens(
        api.open_stream("gone").await.expect("open stream"),
        2,
        per_event,
    )
    .await;
    assert_eq!(
        api.busy_slots("llm").await,
        1,
        "the stream holds the one slot"
    );
    drop(stream); // the client goes away mid-stream
    let dropped = Instant::now();
    let leaked = api.settle_busy("llm", Duration::from_secs(5)).await;
    let freed_after = dropped.elapsed();

    // The next task starts on the freed slot and runs to the end.
    let fresh = api.run_task(&serve.task("next", 8), per_event).await;
    tally.add("next", &fresh);
    // The abandoned task is not lost: its (replayed) stream ends with a terminal event.
    let gone = api.follow("gone", Duration::from_secs(10)).await;
    tally.add("gone", &gone);
    let canceled = metric_value(
        &api.metrics().await,
        "llorch_tasks_canceled_total",
        &["reason=\"client_disconnect\""],
    );

    let row = Row {
        scenario: "client_disconnect_mid_stream".into(),
        injected: "client closed its connection after 2 tokens of a 400-token stream (real engine, 1 slot)".into(),
        observed: format!(
            "{} after {freed_after:.2?}; canceled{{client_disconnect}}={canceled}; abandoned task's stream: {}; next task: {}",
            if leaked == 0 { "slot free" } else { "slot STILL BUSY" },
            describe(&gone),
            describe(&fresh)
        ),
        lost: tally.lost.len(),
        leaked,
    };
    record_and_check(row);
    assert!(
        matches!(fresh, Outcome::End { tokens } if tokens >= 1),
        "next task after the disconnect: {fresh:?}"
    );
    assert_eq!(canceled, 1.0, "client_disconnect cancellations counted");
    let st = serve.daemon.terminate(Duration::from_secs(30));
    assert!(st.success(), "llorch serve exit after SIGTERM: {st}");
}
