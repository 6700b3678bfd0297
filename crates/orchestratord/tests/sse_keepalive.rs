//! Keep-alive comments on an OrchQueue stream (`server.sse_keepalive_ms`): while a task waits
//! for its first token, the stream carries `:` comment frames at that interval so that proxies
//! and clients do not time the connection out; they are whole SSE frames of their own, never
//! inside an event, and the events around them are unchanged.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;

#[tokio::test]
async fn comments_flow_while_the_first_token_is_late() {
    let s = Server::start(&mock_config(
        1,
        "",
        "first_token_latency_ms = 1500",
        "[server]\nsse_keepalive_ms = 100",
    ));
    assert_eq!(s.submit(DATA_KEY, task("late", 3)).await.status(), 202);
    let resp = s.stream(DATA_KEY, "late").await;
    assert_eq!(resp.status(), 200);
    let started = Instant::now();
    let mut body = String::new();
    let mut first_token_at = None;
    let mut chunks = resp.bytes_stream();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), chunks.next())
        .await
        .expect("stream stalled")
    {
        body.push_str(std::str::from_utf8(&chunk.expect("chunk")).expect("utf-8"));
        if first_token_at.is_none() && body.contains("event: token") {
            first_token_at = Some(body.find("event: token").unwrap());
        }
    }
    let elapsed = started.elapsed();
    let before_token = &body[..first_token_at.expect("a token arrived")];
    let comments =
        before_token.matches("\n:\n\n").count() + usize::from(before_token.starts_with(":\n\n"));
    // 1.5 s of silence at a 100 ms interval: ~14 comments; a loaded machine may lose a few.
    assert!(
        comments >= 5,
        "{comments} keep-alive comments in {elapsed:?} before the first token:\n{body}"
    );
    // Every frame is a comment or a whole event; the events are the task's, in order.
    let mut names = Vec::new();
    for frame in body.split("\n\n").filter(|f| !f.is_empty()) {
        if frame == ":" {
            continue;
        }
        let name = frame
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap_or_else(|| panic!("a frame that is neither a comment nor an event: {frame:?}"));
        assert!(
            frame.contains("\ndata: ") && frame.contains("\nid: "),
            "{frame:?}"
        );
        names.push(name.to_string());
    }
    assert_eq!(
        names,
        ["started", "metrics", "token", "token", "token", "end"]
    );
}
