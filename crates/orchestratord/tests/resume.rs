//! Resumable streams (SPEC §1): every SSE event carries its index in the task's log as `id:`;
//! a client that reconnects with `Last-Event-ID` gets exactly the events after it, with no
//! gap and no duplicate, while the log is retained. The connection is cut at seeded random
//! byte offsets of the body (between events and inside them, the first and last included) and
//! the reassembled stream must be byte-identical to the whole one. A stream nobody resumes
//! within `server.stream_resume_grace_ms` cancels its task; a bad `Last-Event-ID` is a typed
//! 400, an evicted task 410.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;

/// One complete SSE frame of the body: its raw bytes (through the blank line) and fields.
#[derive(Debug, Clone, PartialEq)]
struct Frame {
    raw: String,
    id: Option<usize>,
    event: String,
    data: String,
}

/// The complete frames at the start of `body` (a frame is complete at its blank line; an
/// incomplete tail is what a client drops when the connection breaks). Keep-alive comments
/// are skipped.
fn frames(body: &str) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(end) = rest.find("\n\n") {
        let raw = &rest[..end + 2];
        rest = &rest[end + 2..];
        let mut f = Frame {
            raw: raw.to_string(),
            id: None,
            event: String::new(),
            data: String::new(),
        };
        for line in raw.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                f.id = Some(v.trim().parse().expect("numeric id"));
            } else if let Some(v) = line.strip_prefix("event:") {
                f.event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                f.data = v.trim_start().to_string();
            }
        }
        if !f.event.is_empty() {
            out.push(f);
        }
    }
    out
}

/// Start offsets of each frame in `body`, plus its length.
fn boundaries(body: &str) -> Vec<usize> {
    let mut at = vec![0];
    let mut pos = 0;
    while let Some(end) = body[pos..].find("\n\n") {
        pos += end + 2;
        at.push(pos);
    }
    at
}

/// xorshift64*: seeded, reproducible cut points without another dependency.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}

/// `GET` the stream (resuming after `last` when given) and read at most `cut` body bytes
/// (all of it when `None`), then drop the connection. Returns the bytes read.
async fn read_cut(s: &Server, id: &str, last: Option<usize>, cut: Option<usize>) -> String {
    let mut rb = s
        .http
        .get(s.url(&format!("/v1/tasks/{id}/stream")))
        .bearer_auth(DATA_KEY);
    if let Some(l) = last {
        rb = rb.header("Last-Event-ID", l.to_string());
    }
    let r = rb.send().await.expect("GET stream");
    assert_eq!(r.status(), 200, "resume after {last:?}");
    let mut body = Vec::new();
    let mut bytes = r.bytes_stream();
    loop {
        if cut.is_some_and(|c| body.len() >= c) {
            break;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(20), bytes.next())
            .await
            .expect("stream stalled");
        match chunk {
            Some(c) => body.extend_from_slice(&c.expect("body chunk")),
            None => break,
        }
    }
    body.truncate(cut.unwrap_or(usize::MAX).min(body.len()));
    drop(bytes); // the cut: the connection closes here
    // A cut may split a multi-byte character; only complete frames are used.
    String::from_utf8_lossy(&body).into_owned()
}

/// Reads the stream of `id` to its terminal event, resuming after every cut. Returns the
/// frames received (complete ones only, as a client keeps them) and how many connections.
async fn read_with_cuts(
    s: &Server,
    id: &str,
    cuts: &mut dyn FnMut() -> usize,
) -> (Vec<Frame>, usize) {
    let mut got: Vec<Frame> = Vec::new();
    let mut connections = 0;
    loop {
        connections += 1;
        assert!(connections < 10_000, "no progress");
        let last = got.last().and_then(|f| f.id);
        let body = read_cut(s, id, last, Some(cuts())).await;
        got.extend(frames(&body));
        if got
            .last()
            .is_some_and(|f| f.event == "end" || f.event == "error")
        {
            return (got, connections);
        }
    }
}

/// Checks the reassembled frames against the whole stream: ids 0.. without gap or duplicate,
/// token indices gap-free, byte-identical frames, the same terminal event.
fn assert_same_stream(got: &[Frame], whole: &[Frame], what: &str) {
    let ids: Vec<Option<usize>> = got.iter().map(|f| f.id).collect();
    let want: Vec<Option<usize>> = (0..whole.len()).map(Some).collect();
    if let Some(k) = (0..ids.len().max(want.len())).find(|&k| ids.get(k) != want.get(k)) {
        panic!(
            "{what}: event #{k} has id {:?}, want {:?} (a gap or a duplicate; {} events, want {})",
            ids.get(k),
            want.get(k),
            ids.len(),
            want.len()
        );
    }
    let tokens: Vec<serde_json::Value> = got
        .iter()
        .filter(|f| f.event == "token")
        .map(|f| serde_json::from_str(&f.data).expect("token json"))
        .collect();
    for (k, t) in tokens.iter().enumerate() {
        assert_eq!(t["i"], k, "{what}: token indices");
    }
    let text = |fs: &[Frame]| -> String {
        fs.iter()
            .filter(|f| f.event == "token")
            .map(|f| {
                let v: serde_json::Value = serde_json::from_str(&f.data).expect("json");
                v["t"].as_str().unwrap_or_default().to_string()
            })
            .collect()
    };
    assert_eq!(text(got), text(whole), "{what}: token text");
    assert_eq!(got.last(), whole.last(), "{what}: terminal event");
    let raw = |fs: &[Frame]| fs.iter().map(|f| f.raw.as_str()).collect::<String>();
    assert_eq!(raw(got), raw(whole), "{what}: bytes");
}

fn resume_config(mock: &str, grace_ms: u64) -> String {
    mock_config(
        2,
        "",
        mock,
        &format!("[server]\nstream_resume_grace_ms = {grace_ms}"),
    )
}

/// Every event has an `id:` equal to its index in the log, and resuming after any prefix of
/// a finished task's stream — cut between events, inside the first and the last event, and
/// at 300 seeded random byte offsets — reassembles the stream byte for byte.
#[tokio::test]
async fn resume_after_any_cut_of_a_finished_stream_is_exact() {
    let s = Server::start(&resume_config("", 2_000));
    assert_eq!(s.submit(DATA_KEY, task("done", 40)).await.status(), 202);
    let whole_body = read_cut(&s, "done", None, None).await;
    let whole = frames(&whole_body);
    assert_eq!(whole.first().map(|f| f.event.as_str()), Some("started"));
    assert_eq!(whole.last().map(|f| f.event.as_str()), Some("end"));
    for (k, f) in whole.iter().enumerate() {
        assert_eq!(f.id, Some(k), "event {k} carries its index as id");
        // The first event tells EventSource clients to reconnect after 1 s (grace 2 s / 2).
        let retry = f
            .raw
            .lines()
            .any(|l| l == "retry: 1000" || l == "retry:1000");
        assert_eq!(retry, k == 0, "event {k}: {:?}", f.raw);
    }
    let b = boundaries(&whole_body);
    let (first, last) = ((b[0], b[1]), (b[b.len() - 2], b[b.len() - 1]));
    let mut cuts: Vec<usize> = b.clone(); // between events (and 0, and the whole body)
    for (start, end) in [first, last] {
        cuts.extend([start + 1, (start + end) / 2, end - 2, end - 1]); // inside it
    }
    let mut rng = Rng(0x5eed_0001);
    cuts.extend((0..300).map(|_| rng.below(whole_body.len() + 1)));
    eprintln!(
        "finished stream: {} events, {} bytes; {} cut points",
        whole.len(),
        whole_body.len(),
        cuts.len()
    );
    for cut in cuts {
        let head = frames(&read_cut(&s, "done", None, Some(cut)).await);
        let last = head.last().and_then(|f| f.id);
        let tail = frames(&read_cut(&s, "done", last, None).await);
        let got: Vec<Frame> = head.into_iter().chain(tail).collect();
        assert_same_stream(&got, &whole, &format!("cut at byte {cut}"));
    }
}

/// A live stream cut again and again at seeded random points (1–600 body bytes per
/// connection) while the task runs: the client resumes each time with `Last-Event-ID`, the
/// task is never canceled (every reader came back within the grace window), and the pieces
/// make up exactly the stream a reader who never disconnected would have seen.
#[tokio::test]
async fn a_running_stream_cut_at_random_points_reassembles_exactly() {
    let s = Server::start(&resume_config("tokens_per_second = 400", 2_000));
    for seed in 1..=4u64 {
        let id = format!("live{seed}");
        assert_eq!(s.submit(DATA_KEY, task(&id, 300)).await.status(), 202);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
        let (got, connections) = read_with_cuts(&s, &id, &mut || 1 + rng.below(600)).await;
        let whole = frames(&read_cut(&s, &id, None, None).await);
        assert_eq!(whole.last().map(|f| f.event.as_str()), Some("end"), "{id}");
        assert_same_stream(&got, &whole, &id);
        assert!(connections > 10, "{id}: only {connections} connections");
        eprintln!(
            "{id}: {} events over {connections} connections, reassembled exactly",
            got.len()
        );
        assert_eq!(whole.iter().filter(|f| f.event == "token").count(), 300);
    }
    assert_eq!(
        s.metric(
            "llorch_tasks_canceled_total",
            &["reason=\"client_disconnect\""]
        )
        .await,
        0.0,
        "a reader who comes back within the grace window keeps the task"
    );
}

/// A reader who leaves and does not come back: the task keeps its slot through the grace
/// window (a resume could still come), then is canceled with reason client_disconnect and
/// its slot freed. A reader who comes back in time keeps it.
#[tokio::test]
async fn an_abandoned_stream_is_canceled_after_the_grace_window_only() {
    let s = Server::start(&resume_config("tokens_per_second = 50", 800));
    assert_eq!(s.submit(DATA_KEY, task("gone", 400)).await.status(), 202);
    let (_, open) = read_n_events(s.stream(DATA_KEY, "gone").await, 3).await;
    drop(open);
    let left = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.pool_health().await["replicas"][0]["slots_busy"],
        1,
        "still running within the grace window"
    );
    eventually("abandoned task canceled", || async {
        s.metric(
            "llorch_tasks_canceled_total",
            &["reason=\"client_disconnect\""],
        )
        .await
            == 1.0
    })
    .await;
    assert!(
        left.elapsed() >= Duration::from_millis(800),
        "canceled after {:?}, before the 800 ms grace window ended",
        left.elapsed()
    );
    eventually("slot freed", || async {
        s.pool_health().await["replicas"][0]["slots_busy"] == 0
    })
    .await;
    let evs = read_events(s.stream(DATA_KEY, "gone").await).await;
    assert_eq!(evs.last().unwrap().1["code"], "CANCELED");

    // Back within the window (twice, each leave restarting it): the task runs to its end.
    assert_eq!(s.submit(DATA_KEY, task("back", 60)).await.status(), 202);
    let mut last = None;
    for _ in 0..2 {
        let body = read_cut(&s, "back", last, Some(300)).await;
        last = frames(&body).last().and_then(|f| f.id).or(last);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rest = frames(&read_cut(&s, "back", last, None).await);
    assert_eq!(rest.last().map(|f| f.event.as_str()), Some("end"));
    assert_eq!(
        s.metric(
            "llorch_tasks_canceled_total",
            &["reason=\"client_disconnect\""]
        )
        .await,
        1.0
    );
}

/// `Last-Event-ID` that is not an id this stream sent is a typed 400; a resume of an evicted
/// task is 410 TASK_EVICTED; the last id of a finished task resumes to an empty stream.
#[tokio::test]
async fn bad_last_event_ids_are_400_and_evicted_tasks_410() {
    let s = Server::start(&mock_config(
        1,
        "",
        "",
        "[server]\ntask_log_max_tasks = 1\ntask_log_max_tasks_per_tenant = 1",
    ));
    assert_eq!(s.submit(DATA_KEY, task("t1", 3)).await.status(), 202);
    let whole = frames(&read_cut(&s, "t1", None, None).await);
    let n = whole.len();
    for bad in [
        "abc",
        "-1",
        "+1",
        "1.0",
        "",
        &n.to_string(),
        "99999999999999999999999",
    ] {
        let r = s
            .http
            .get(s.url("/v1/tasks/t1/stream"))
            .bearer_auth(DATA_KEY)
            .header("Last-Event-ID", bad)
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 400, "Last-Event-ID {bad:?}");
        let env: serde_json::Value = r.json().await.expect("envelope");
        assert_eq!(env["code"], "INVALID_PARAMS", "{bad:?}: {env}");
        assert!(env["correlation_id"].is_string());
    }
    assert!(
        frames(&read_cut(&s, "t1", Some(n - 1), None).await).is_empty(),
        "nothing after the terminal event"
    );
    assert_eq!(
        frames(&read_cut(&s, "t1", Some(n - 2), None).await),
        whole[n - 1..]
    );
    // A second finished task evicts the first (count budget 1).
    assert_eq!(s.submit(DATA_KEY, task("t2", 3)).await.status(), 202);
    read_cut(&s, "t2", None, None).await;
    let r = s
        .http
        .get(s.url("/v1/tasks/t1/stream"))
        .bearer_auth(DATA_KEY)
        .header("Last-Event-ID", "1")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 410);
    let env: serde_json::Value = r.json().await.expect("envelope");
    assert_eq!(env["code"], "TASK_EVICTED");
}
