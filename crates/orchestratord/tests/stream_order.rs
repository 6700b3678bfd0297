//! ORCH-2002 under contention: `started` is every stream's first event even when another
//! thread dispatches the task the instant it is queued (a CI run once saw `metrics` first,
//! pushed by the runner before admission had written `started`).

mod common;

use common::*;
use futures::future::join_all;

/// Many submitters at once against slots that free up constantly: each admission races the
/// dispatchers that completions on other threads run. Every stream must open with `started`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn started_is_first_even_when_dispatch_races_admission() {
    let s = &Server::start(&mock_config(8, "capacity = 4096", "", ""));
    const ROUNDS: usize = 24;
    const PER_ROUND: usize = 64;
    for round in 0..ROUNDS {
        let ids: Vec<String> = (0..PER_ROUND).map(|i| format!("o{round}-{i}")).collect();
        let submitted = join_all(ids.iter().map(|id| s.submit(DATA_KEY, task(id, 1)))).await;
        for (id, r) in ids.iter().zip(submitted) {
            assert_eq!(r.status(), 202, "{id}");
        }
        let streams = join_all(
            ids.iter()
                .map(|id| async move { (id, read_events(s.stream(DATA_KEY, id).await).await) }),
        )
        .await;
        for (id, events) in streams {
            let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
            assert_eq!(names.first(), Some(&"started"), "{id}: {names:?}");
            assert_eq!(names.last(), Some(&"end"), "{id}: {names:?}");
        }
    }
}
