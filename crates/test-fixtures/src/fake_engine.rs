//! Helpers for tests against a misbehaving engine (a tiny in-test axum server, as in the TGI
//! and vLLM adapters' `bad_engine` tests): serve a router, answer with a chunked SSE body,
//! and drive an adapter's stream to its end with a stall timeout.

use std::time::Duration;

use adapter_api::{GenerateRequest, WorkerAdapter, WorkerError, WorkerEvent};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::response::Response;
use futures::StreamExt;

/// A `text/event-stream` answer (with `content_type`) that sends `parts` as separate chunks.
pub fn sse(content_type: &str, parts: Vec<Vec<u8>>) -> Response {
    let s = futures::stream::iter(
        parts
            .into_iter()
            .map(|p| Ok::<_, std::io::Error>(Bytes::from(p))),
    );
    Response::builder()
        .header("content-type", content_type)
        .body(Body::from_stream(s))
        .unwrap()
}

/// Serves `app` on an ephemeral loopback port; returns its base URL.
pub async fn serve(app: Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

/// A request whose job id and prompt are both `prompt` (the fake server's scenario name).
pub fn req(prompt: &str) -> GenerateRequest {
    GenerateRequest {
        job_id: prompt.into(),
        prompt: prompt.into(),
        messages: None,
        sampling: None,
        max_tokens: 8,
        seed: 1,
        sampler_profile_version: None,
        strict_determinism: false,
    }
}

/// How a generation went: refused before a stream, or streamed text with its end or error.
pub enum Outcome {
    Refused(WorkerError),
    Streamed {
        text: String,
        end: Option<api_types::EndEvent>,
        err: Option<WorkerError>,
    },
}

/// Runs [`req`]`(prompt)` to the end of its stream; panics if the stream stalls for 10 s.
pub async fn run(a: &dyn WorkerAdapter, prompt: &str) -> Outcome {
    let mut s = match a.generate(req(prompt)).await {
        Ok(s) => s,
        Err(e) => return Outcome::Refused(e),
    };
    let (mut text, mut end, mut err) = (String::new(), None, None);
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("stream stalled")
    {
        match ev {
            Ok(WorkerEvent::Token(t)) => text.push_str(&t.t),
            Ok(WorkerEvent::End(e)) => end = Some(e),
            Err(e) => err = Some(e),
        }
    }
    Outcome::Streamed { text, end, err }
}

/// Asserts that an error message stays bounded (`max_engine_message` plus our own words).
pub fn bounded(e: &WorkerError, max_engine_message: usize) {
    assert!(
        e.message.len() <= 100 + max_engine_message,
        "unbounded message: {} bytes",
        e.message.len()
    );
}

/// The request the adapters' wire unit tests map (job `j`, prompt `p`, seed 7).
pub fn wire_req(sampling: Option<api_types::Sampling>) -> GenerateRequest {
    GenerateRequest {
        job_id: "j".into(),
        prompt: "p".into(),
        messages: None,
        sampling,
        max_tokens: 8,
        seed: 7,
        sampler_profile_version: None,
        strict_determinism: false,
    }
}

/// A full sampler profile with `temperature` and the stop sequence `"\n\n"`.
pub fn sampling(temperature: f32) -> api_types::Sampling {
    api_types::Sampling {
        profile: "v1".into(),
        temperature,
        top_p: 0.9,
        top_k: 40,
        min_p: 0.05,
        repeat_penalty: 1.1,
        stop: vec!["\n\n".into()],
        grammar: None,
        json_schema: None,
    }
}

/// Each `(scenario, code)` is refused before a stream with `code` and a bounded message.
pub async fn assert_refused(
    a: &dyn WorkerAdapter,
    cases: &[(&str, api_types::ErrorCode)],
    max_engine_message: usize,
) {
    for &(scenario, code) in cases {
        match run(a, scenario).await {
            Outcome::Refused(e) => {
                assert_eq!(e.code, code, "{scenario}: {e:?}");
                bounded(&e, max_engine_message);
            }
            Outcome::Streamed { .. } => panic!("{scenario}: streamed"),
        }
    }
}

/// Each `(scenario, text)` streams `text`, then ends in a bounded WORKER_RESET and no end.
pub async fn assert_reset_after(
    a: &dyn WorkerAdapter,
    cases: &[(&str, &str)],
    max_engine_message: usize,
) {
    for &(scenario, want) in cases {
        match run(a, scenario).await {
            Outcome::Streamed { text, end, err } => {
                assert_eq!(text, want, "{scenario}");
                assert!(end.is_none(), "{scenario}");
                let e = err.unwrap_or_else(|| panic!("{scenario}: no error"));
                assert_eq!(
                    e.code,
                    api_types::ErrorCode::WorkerReset,
                    "{scenario}: {e:?}"
                );
                bounded(&e, max_engine_message);
            }
            Outcome::Refused(e) => panic!("{scenario}: refused {e:?}"),
        }
    }
}
