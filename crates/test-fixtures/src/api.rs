//! Driving a task through llama-orch's public API from a test: submit, then read the whole
//! SSE stream. Panics (the test fails) on anything but 202 and a stream that ends within 60 s.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;

/// `POST /v1/tasks` with `body` (whose `task_id` is `id`), then `GET /v1/tasks/{id}/stream`;
/// returns the stream's (event name, data) pairs.
pub async fn submit_and_read(
    base: &str,
    key: &str,
    id: &str,
    body: &serde_json::Value,
) -> Vec<(String, String)> {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/tasks"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("POST /v1/tasks");
    let status = r.status();
    assert_eq!(status, 202, "{}", r.text().await.unwrap_or_default());
    tokio::time::timeout(
        Duration::from_secs(60),
        http.get(format!("{base}/v1/tasks/{id}/stream"))
            .bearer_auth(key)
            .send()
            .await
            .expect("GET stream")
            .bytes_stream()
            .eventsource()
            .map(|e| {
                let e = e.expect("SSE event");
                (e.event, e.data)
            })
            .collect(),
    )
    .await
    .expect("the stream ended within 60 s")
}
