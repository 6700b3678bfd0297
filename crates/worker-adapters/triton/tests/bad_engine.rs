//! A misbehaving "Triton" (a raw TCP server writing exact bytes) never makes the adapter
//! panic: garbage events, truncated streams, oversized bodies and events, non-HTTP answers
//! and refused connections all become typed results.

use std::sync::Arc;
use std::time::Duration;

use adapter_api::{GenerateRequest, WorkerAdapter, WorkerEvent, WorkerState};
use api_types::ErrorCode;
use futures::StreamExt;
use llorch_triton_adapter::{InputConvention, TritonAdapter, TritonConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the fake writes for one request: the pieces are written one by one (flushed, with a
/// pause between), then the connection is closed.
type Handler = Arc<dyn Fn(&str) -> Vec<Vec<u8>> + Send + Sync>;

async fn fake(handler: Handler) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = l.accept().await else {
                return;
            };
            let h = handler.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                // Read the head and (Content-Length) body.
                loop {
                    let Ok(n) = sock.read(&mut tmp).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                for piece in h(&path) {
                    if sock.write_all(&piece).await.is_err() {
                        return;
                    }
                    let _ = sock.flush().await;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    port
}

fn adapter(port: u16) -> TritonAdapter {
    let mut c = TritonConfig::new(
        format!("http://127.0.0.1:{port}"),
        "m",
        InputConvention::Vllm,
    );
    c.slots = 4;
    TritonAdapter::new(c).unwrap()
}

fn req(job: &str) -> GenerateRequest {
    GenerateRequest {
        job_id: job.into(),
        prompt: "hi".into(),
        max_tokens: 8,
        seed: 1,
        ..Default::default()
    }
}

const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut v = format!("{:x}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

fn event(json: &[u8]) -> Vec<u8> {
    let mut d = b"data: ".to_vec();
    d.extend_from_slice(json);
    d.extend_from_slice(b"\n\n");
    chunk(&d)
}

fn fixed(status: &str, ctype: &str, body: &[u8]) -> Vec<Vec<u8>> {
    let mut v = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    vec![v]
}

/// Collects (tokens, end?, error?) of one stream.
async fn collect(
    a: &TritonAdapter,
    job: &str,
) -> (
    Vec<String>,
    Option<api_types::EndEvent>,
    Option<adapter_api::WorkerError>,
) {
    let mut s = match a.generate(req(job)).await {
        Ok(s) => s,
        Err(e) => return (vec![], None, Some(e)),
    };
    let mut toks = vec![];
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("stream stalled")
    {
        match ev {
            Ok(WorkerEvent::Token(t)) => toks.push(t.t),
            Ok(WorkerEvent::End(e)) => return (toks, Some(e), None),
            Err(e) => return (toks, None, Some(e)),
        }
    }
    (toks, None, None)
}

#[tokio::test]
async fn refused_connection_is_loading_not_error() {
    let port = test_fixtures::free_port();
    let a = adapter(port);
    let h = a.health().await.unwrap();
    assert_eq!(h.state, WorkerState::Loading, "{h:?}");
    let (_, _, e) = collect(&a, "j").await;
    assert_eq!(e.unwrap().code, ErrorCode::PoolUnready);
}

#[tokio::test]
async fn health_states_from_status_codes_and_config() {
    // Server not ready: Triton answers 400 (not 503).
    let a = adapter(fake(Arc::new(|_| fixed("400 Bad Request", "text/plain", b""))).await);
    assert_eq!(a.health().await.unwrap().state, WorkerState::Loading);
    // Server ready, model ready, but the model cannot stream.
    let a = adapter(
        fake(Arc::new(|p| match p {
            "/v2/models/m/config" => fixed(
                "200 OK",
                "application/json",
                br#"{"name":"m","backend":"python","input":[{"name":"text_input"},{"name":"sampling_parameters"}],"output":[{"name":"text_output"}],"model_transaction_policy":{"decoupled":false}}"#,
            ),
            _ => fixed("200 OK", "text/plain", b""),
        }))
        .await,
    );
    let h = a.health().await.unwrap();
    assert_eq!(h.state, WorkerState::Error);
    assert!(
        h.last_error
            .as_deref()
            .unwrap_or("")
            .contains("not decoupled"),
        "{h:?}"
    );
    // A server that closes every connection without saying `Connection: close`: the adapter's
    // pooled connection is stale on the next probe; still Ready, not an engine error.
    let a = adapter(
        fake(Arc::new(|p| {
            let body: &[u8] = match p {
                "/v2/models/m/config" => br#"{"name":"m","backend":"python","input":[{"name":"text_input"},{"name":"sampling_parameters"}],"output":[{"name":"text_output"}],"model_transaction_policy":{"decoupled":true}}"#,
                _ => b"",
            };
            let mut v = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            v.extend_from_slice(body);
            vec![v]
        }))
        .await,
    );
    for _ in 0..3 {
        let h = a.health().await.unwrap();
        assert_eq!(h.state, WorkerState::Ready, "{h:?}");
    }
    // Not HTTP at all.
    let a = adapter(fake(Arc::new(|_| vec![b"\x00\xffgarbage\r\n\r\n".to_vec()])).await);
    assert_eq!(a.health().await.unwrap().state, WorkerState::Error);
    // The vLLM backend forces decoupled mode without saying so in its config.
    let a = adapter(
        fake(Arc::new(|p| match p {
            "/v2/models/m/config" => fixed(
                "200 OK",
                "application/json",
                br#"{"name":"m","backend":"vllm","input":[{"name":"text_input"},{"name":"sampling_parameters"}],"output":[{"name":"text_output"}]}"#,
            ),
            _ => fixed("200 OK", "text/plain", b""),
        }))
        .await,
    );
    assert_eq!(a.health().await.unwrap().state, WorkerState::Ready);
}

#[tokio::test]
async fn garbage_events_are_worker_reset() {
    for bad in [
        &b"not json"[..],
        b"{\"text_output\":",
        b"{\"text_output\":\"x\"}}",
        b"\xff\xfe",
    ] {
        let bad = bad.to_vec();
        let a = adapter(
            fake(Arc::new(move |_| {
                vec![
                    SSE_HEAD.to_vec(),
                    event(br#"{"text_output":"ok"}"#),
                    event(&bad),
                    chunk(b""),
                ]
            }))
            .await,
        );
        let (toks, end, e) = collect(&a, "j").await;
        assert_eq!(toks, vec!["ok"]);
        assert!(end.is_none());
        assert_eq!(e.unwrap().code, ErrorCode::WorkerReset);
    }
}

#[tokio::test]
async fn truncated_streams_are_worker_reset() {
    // The connection drops before the terminating chunk.
    let a = adapter(
        fake(Arc::new(|_| {
            vec![
                SSE_HEAD.to_vec(),
                event(br#"{"text_output":"a"}"#),
                b"40\r\ndata: {\"te".to_vec(),
            ]
        }))
        .await,
    );
    let (toks, end, e) = collect(&a, "j").await;
    assert_eq!(toks, vec!["a"]);
    assert!(end.is_none());
    let e = e.expect("an error, not a clean end");
    assert_eq!(e.code, ErrorCode::WorkerReset, "{e:?}");
    // The body ends cleanly but inside an event.
    let a = adapter(
        fake(Arc::new(|_| {
            vec![
                SSE_HEAD.to_vec(),
                event(br#"{"text_output":"a"}"#),
                chunk(b"data: {\"text_output\":\"b\"}"),
                chunk(b""),
            ]
        }))
        .await,
    );
    let (toks, end, e) = collect(&a, "j").await;
    assert_eq!(toks, vec!["a"]);
    assert!(end.is_none());
    assert!(e.unwrap().message.contains("inside an event"));
}

#[tokio::test]
async fn error_event_on_a_200_stream_is_typed() {
    let a = adapter(
        fake(Arc::new(|_| {
            vec![
                SSE_HEAD.to_vec(),
                event(br#"{"id":"j","model_name":"m","model_version":"1","text_output":"tok0 "}"#),
                event(br#"{"error":"boom: model failed at token 1"}"#),
                chunk(b""),
            ]
        }))
        .await,
    );
    let (toks, end, e) = collect(&a, "j").await;
    assert_eq!(toks, vec!["tok0 "]);
    assert!(end.is_none());
    let e = e.unwrap();
    assert_eq!(e.code, ErrorCode::Internal);
    assert_eq!(e.message, "triton: boom: model failed at token 1");
}

#[tokio::test]
async fn oversized_error_bodies_and_events_are_bounded() {
    // A 10 MB error body: only the first 64 KiB are read; the message stays short.
    let a = adapter(
        fake(Arc::new(|_| {
            let mut body = b"{\"error\":\"".to_vec();
            body.extend(std::iter::repeat_n(b'x', 10 << 20));
            body.extend_from_slice(b"\"}");
            fixed("400 Bad Request", "application/json", &body)
        }))
        .await,
    );
    let (_, _, e) = collect(&a, "j").await;
    let e = e.unwrap();
    assert!(e.message.len() < 600, "{}", e.message.len());
    // A long but complete error message is clipped.
    let a = adapter(
        fake(Arc::new(|_| {
            let body = serde_json::json!({"error": "é".repeat(20_000)}).to_string();
            fixed("400 Bad Request", "application/json", body.as_bytes())
        }))
        .await,
    );
    let (_, _, e) = collect(&a, "j").await;
    let e = e.unwrap();
    assert_eq!(e.code, ErrorCode::InvalidParams);
    assert!(e.message.len() <= "triton: ".len() + 512);
    // An event that never ends (2 MiB without a blank line).
    let a = adapter(
        fake(Arc::new(|_| {
            let mut v = vec![SSE_HEAD.to_vec(), chunk(b"data: {\"text_output\":\"")];
            for _ in 0..32 {
                v.push(chunk(&vec![b'a'; 64 * 1024]));
            }
            v.push(chunk(b""));
            v
        }))
        .await,
    );
    let (_, _, e) = collect(&a, "j").await;
    let e = e.unwrap();
    assert_eq!(e.code, ErrorCode::WorkerReset);
    assert!(e.message.contains("larger than"), "{e:?}");
}

#[tokio::test]
async fn raw_bytes_split_across_events_and_writes_reassemble() {
    let text = "café 🦀 naïve 日本語 €𝄞";
    let a = adapter(
        fake(Arc::new(move |_| {
            let bytes = text.as_bytes();
            let mut v = vec![SSE_HEAD.to_vec()];
            // One event per 1..=3 raw bytes (inside characters), each event's chunk written
            // one byte at a time.
            let mut i = 0;
            let mut k = 0;
            while i < bytes.len() {
                let n = (1 + k % 3).min(bytes.len() - i);
                let mut json =
                    b"{\"model_name\":\"m\",\"model_version\":\"1\",\"text_output\":\"".to_vec();
                json.extend_from_slice(&bytes[i..i + n]);
                json.extend_from_slice(b"\"}");
                for b in event(&json) {
                    v.push(vec![b]);
                }
                i += n;
                k += 1;
            }
            v.push(chunk(b""));
            v
        }))
        .await,
    );
    let (toks, end, e) = collect(&a, "j").await;
    assert!(e.is_none(), "{e:?}");
    assert_eq!(toks.concat(), text);
    assert_eq!(end.unwrap().tokens_out as usize, toks.len());
    // A stream that ends inside a character: the dangling bytes become U+FFFD, then End.
    let a = adapter(
        fake(Arc::new(|_| {
            vec![
                SSE_HEAD.to_vec(),
                event(b"{\"text_output\":\"ok\xf0\x9f\"}"),
                chunk(b""),
            ]
        }))
        .await,
    );
    let (toks, end, e) = collect(&a, "j").await;
    assert!(e.is_none());
    assert_eq!(toks.concat(), "ok\u{fffd}");
    assert!(end.is_some());
}

#[tokio::test]
async fn slots_are_bounded_and_freed() {
    // A stream that stays open: the fake writes the head and one token, then waits.
    let a = Arc::new({
        let mut c = TritonConfig::new(
            format!(
                "http://127.0.0.1:{}",
                fake(Arc::new(|_| {
                    let mut v = vec![SSE_HEAD.to_vec(), event(br#"{"text_output":"a"}"#)];
                    // ~4 s of keep-open pieces (empty chunks are not sent: SSE comments).
                    for _ in 0..2000 {
                        v.push(chunk(b":\n"));
                    }
                    v
                }))
                .await
            ),
            "m",
            InputConvention::TensorrtLlm,
        );
        c.slots = 1;
        TritonAdapter::new(c).unwrap()
    });
    let mut s = a.generate(req("one")).await.unwrap();
    assert!(matches!(s.next().await, Some(Ok(WorkerEvent::Token(_)))));
    let e = match a.generate(req("two")).await {
        Err(e) => e,
        Ok(_) => panic!("second job admitted past slots"),
    };
    assert_eq!(e.code, ErrorCode::ReplicaExhausted);
    tokio::time::timeout(Duration::from_secs(5), a.cancel("one"))
        .await
        .expect("cancel returns")
        .unwrap();
    assert!(a.generate(req("two")).await.is_ok());
}
