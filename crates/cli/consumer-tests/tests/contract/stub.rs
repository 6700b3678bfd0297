//! A stub server that answers only with recorded responses: a request that matches an allowed
//! interaction exactly (method, path, key role, JSON body) gets its recorded status and body;
//! anything else is logged as unmatched and answered 500.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use llorch_consumer_tests::{Interaction, Role};

#[derive(Default)]
struct State {
    allowed: Vec<Interaction>,
    served: Vec<String>,
    unmatched: Vec<String>,
}

#[derive(Clone)]
pub struct Stub {
    pub base: String,
    state: Arc<Mutex<State>>,
}

impl Stub {
    pub async fn start() -> Stub {
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let s = s.clone();
                async move { answer(&s, method, uri, headers, body) }
            },
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", l.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(l, app).await });
        Stub { base, state }
    }

    /// From now on, answer only these interactions; forgets what was served before.
    pub fn serve(&self, interactions: Vec<Interaction>) {
        let mut s = self.state.lock().expect("lock");
        *s = State {
            allowed: interactions,
            ..State::default()
        };
    }

    /// (names served, descriptions of unmatched requests) since the last `serve`.
    pub fn log(&self) -> (Vec<String>, Vec<String>) {
        let s = self.state.lock().expect("lock");
        (s.served.clone(), s.unmatched.clone())
    }
}

fn answer(
    state: &Mutex<State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = percent_decode(uri.path());
    let role = Role::from_authorization(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let json: Option<serde_json::Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(_) => Some(serde_json::Value::String(
                String::from_utf8_lossy(&body).into_owned(),
            )),
        }
    };
    let mut s = state.lock().expect("lock");
    let hit = s
        .allowed
        .iter()
        .find(|i| {
            i.request.method == method.as_str()
                && i.request.path == path
                && i.request.key == role
                && i.request.body == json
        })
        .cloned();
    let Some(i) = hit else {
        s.unmatched.push(format!(
            "{method} {path} key={role:?} body={}",
            json.map(|j| j.to_string()).unwrap_or_default()
        ));
        return (StatusCode::INTERNAL_SERVER_ERROR, "no recorded interaction").into_response();
    };
    s.served.push(i.name.clone());
    let status = StatusCode::from_u16(i.response.status).unwrap_or(StatusCode::IM_A_TEAPOT);
    match i.response.body {
        Some(b) => (status, axum::Json(b)).into_response(),
        None => status.into_response(),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
