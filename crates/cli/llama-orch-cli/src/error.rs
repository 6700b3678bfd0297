//! Client errors, their exit codes and how they are shown to the user.

use api_types::{ErrorEnvelope, StreamErrorEvent};

/// Exit code of a successful command.
pub const EXIT_OK: i32 = 0;
/// Local failure that is neither the user's nor the server's fault (e.g. stdout closed).
pub const EXIT_LOCAL: i32 = 1;
/// The request was wrong: bad arguments, 4xx other than 429, a non-retriable task error.
pub const EXIT_CLIENT: i32 = 2;
/// Try again later: 429, 5xx, transport failures, retriable task errors, protocol errors.
pub const EXIT_RETRY: i32 = 3;

/// Longest part of an unexpected (non-envelope) error body that is kept for display.
pub(crate) const BODY_SNIPPET_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with a non-2xx status and an [`ErrorEnvelope`].
    #[error("{}: {}", envelope.code, envelope.message)]
    Api {
        status: u16,
        /// Boxed to keep `Result<_, CliError>` small.
        envelope: Box<ErrorEnvelope>,
        /// Backoff from the `X-Backoff-Ms` header, else from `Retry-After` (seconds × 1000).
        backoff_ms: Option<u64>,
    },
    /// A non-2xx status whose body is not an error envelope (e.g. from a proxy in between).
    #[error("HTTP {status}: {body}")]
    Status {
        status: u16,
        body: String,
        backoff_ms: Option<u64>,
    },
    /// The server could not be reached or the connection broke.
    #[error("transport error: {}", error_chain(.0))]
    Transport(#[source] reqwest::Error),
    /// The server answered, but not as the contract says (bad JSON, stream cut short, ...).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Invalid local input (URL, prompt, ...), detected before anything was sent.
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// Process exit code for this error (see the `EXIT_*` constants).
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Api { status, .. } | CliError::Status { status, .. } => {
                exit_code_for_status(*status)
            }
            CliError::Transport(_) | CliError::Protocol(_) => EXIT_RETRY,
            CliError::Usage(_) => EXIT_CLIENT,
        }
    }

    /// Whether repeating the same request later may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            CliError::Api { envelope, .. } => envelope
                .retriable
                .unwrap_or_else(|| envelope.code.retriable()),
            CliError::Status {
                status, backoff_ms, ..
            } => *status == 429 || *status >= 500 || backoff_ms.is_some(),
            CliError::Transport(_) => true,
            CliError::Protocol(_) | CliError::Usage(_) => false,
        }
    }

    /// Suggested delay before retrying: the envelope's `retry_after_ms`, else the
    /// `X-Backoff-Ms` / `Retry-After` headers.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            CliError::Api {
                envelope,
                backoff_ms,
                ..
            } => envelope.retry_after_ms.or(*backoff_ms),
            CliError::Status { backoff_ms, .. } => *backoff_ms,
            _ => None,
        }
    }
}

/// 2 for 4xx other than 429, 3 for everything else that is not a success.
pub fn exit_code_for_status(status: u16) -> i32 {
    match status {
        200..=299 => EXIT_OK,
        429 => EXIT_RETRY,
        400..=499 => EXIT_CLIENT,
        _ => EXIT_RETRY,
    }
}

/// Exit code for a terminal `error` stream event: retriable codes → 3, else by the code's HTTP
/// status (so `INVALID_PARAMS` or `CANCELED` → 2, `INTERNAL` → 3).
pub fn exit_code_for_stream_error(e: &StreamErrorEvent) -> i32 {
    if e.retriable.unwrap_or_else(|| e.code.retriable()) {
        EXIT_RETRY
    } else {
        exit_code_for_status(e.code.http_status())
    }
}

/// The lines printed on stderr for an error, each ending in `\n`:
/// `error: CODE: message`, then `hint: retry after N ms` when retriable, then the correlation id
/// of API errors.
pub fn format_error(e: &CliError) -> String {
    let mut s = match e {
        CliError::Api { envelope, .. } => {
            format!(
                "error: {}: {}\n",
                envelope.code,
                one_line(&envelope.message)
            )
        }
        CliError::Status { status, body, .. } if body.is_empty() => {
            format!("error: HTTP {status}\n")
        }
        CliError::Status { status, body, .. } => {
            format!("error: HTTP {status}: {}\n", one_line(body))
        }
        CliError::Transport(err) => format!("error: TRANSPORT: {}\n", error_chain(err)),
        CliError::Protocol(msg) => format!("error: PROTOCOL: {}\n", one_line(msg)),
        CliError::Usage(msg) => format!("error: {}\n", one_line(msg)),
    };
    if e.is_retriable() {
        s.push_str(&retry_hint(e.retry_after_ms()));
    }
    if let CliError::Api { envelope, .. } = e {
        if let Some(policy) = &envelope.policy_label {
            s.push_str(&format!("note: queue policy {}\n", one_line(policy)));
        }
        if !envelope.correlation_id.is_empty() {
            s.push_str(&format!(
                "note: correlation id {}\n",
                one_line(&envelope.correlation_id)
            ));
        }
    }
    s
}

/// Lines printed on stderr for a terminal `error` stream event.
pub fn format_stream_error(e: &StreamErrorEvent) -> String {
    let mut s = format!("error: {}: {}\n", e.code, one_line(&e.message));
    if let Some(engine) = &e.engine {
        s.push_str(&format!("note: engine {}\n", one_line(engine)));
    }
    if e.retriable.unwrap_or_else(|| e.code.retriable()) {
        s.push_str(&retry_hint(e.retry_after_ms));
    }
    s
}

fn retry_hint(after_ms: Option<u64>) -> String {
    match after_ms {
        Some(ms) => format!("hint: retry after {ms} ms\n"),
        None => "hint: retriable; try again later\n".to_string(),
    }
}

/// Renders an error with its `source()` chain, `a: b: c`.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let msg = src.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = src.source();
    }
    s
}

/// Server-supplied text is put on one line and stripped of control characters, so that it
/// cannot forge extra output lines or terminal escape sequences.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '\n' || c == '\r' || c == '\t' {
                ' '
            } else {
                c
            }
        })
        .filter(|c| !c.is_control())
        .collect()
}

/// First [`BODY_SNIPPET_CHARS`] characters of an unexpected error body, trimmed.
pub(crate) fn body_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut out: String = text.chars().take(BODY_SNIPPET_CHARS).collect();
    if text.chars().count() > BODY_SNIPPET_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_types::ErrorCode;

    fn envelope(code: ErrorCode) -> ErrorEnvelope {
        ErrorEnvelope {
            code,
            message: "msg".into(),
            engine: None,
            pool_id: None,
            retriable: None,
            retry_after_ms: None,
            policy_label: None,
            correlation_id: "cid-1".into(),
        }
    }

    #[test]
    fn exit_codes_by_status() {
        assert_eq!(exit_code_for_status(204), EXIT_OK);
        assert_eq!(exit_code_for_status(400), EXIT_CLIENT);
        assert_eq!(exit_code_for_status(401), EXIT_CLIENT);
        assert_eq!(exit_code_for_status(404), EXIT_CLIENT);
        assert_eq!(exit_code_for_status(429), EXIT_RETRY);
        assert_eq!(exit_code_for_status(500), EXIT_RETRY);
        assert_eq!(exit_code_for_status(503), EXIT_RETRY);
        assert_eq!(CliError::Protocol("x".into()).exit_code(), EXIT_RETRY);
        assert_eq!(CliError::Usage("x".into()).exit_code(), EXIT_CLIENT);
    }

    #[test]
    fn client_error_has_no_hint() {
        let e = CliError::Api {
            status: 401,
            envelope: Box::new(envelope(ErrorCode::Unauthenticated)),
            backoff_ms: None,
        };
        assert_eq!(e.exit_code(), EXIT_CLIENT);
        assert_eq!(
            format_error(&e),
            "error: UNAUTHENTICATED: msg\nnote: correlation id cid-1\n"
        );
    }

    #[test]
    fn retry_hint_prefers_envelope_then_headers() {
        let mut env = envelope(ErrorCode::AdmissionReject);
        env.retriable = Some(true);
        env.policy_label = Some("reject".into());
        let e = CliError::Api {
            status: 429,
            envelope: Box::new(env.clone()),
            backoff_ms: Some(1500),
        };
        assert_eq!(e.exit_code(), EXIT_RETRY);
        assert_eq!(
            format_error(&e),
            "error: ADMISSION_REJECT: msg\nhint: retry after 1500 ms\nnote: queue policy reject\nnote: correlation id cid-1\n"
        );
        env.retry_after_ms = Some(250);
        let e = CliError::Api {
            status: 429,
            envelope: Box::new(env),
            backoff_ms: Some(1500),
        };
        assert_eq!(e.retry_after_ms(), Some(250));
    }

    #[test]
    fn retriable_defaults_to_the_code_and_can_be_overridden() {
        let e = CliError::Api {
            status: 503,
            envelope: Box::new(envelope(ErrorCode::PoolUnready)),
            backoff_ms: None,
        };
        assert!(e.is_retriable());
        assert!(format_error(&e).contains("hint: retriable; try again later\n"));
        let mut env = envelope(ErrorCode::PoolUnready);
        env.retriable = Some(false);
        let e = CliError::Api {
            status: 503,
            envelope: Box::new(env),
            backoff_ms: Some(10),
        };
        assert!(!format_error(&e).contains("hint"));
    }

    #[test]
    fn server_text_cannot_inject_lines() {
        let mut env = envelope(ErrorCode::InvalidParams);
        env.message = "bad\nhint: retry after 0 ms\x1b[31m".into();
        let e = CliError::Api {
            status: 400,
            envelope: Box::new(env),
            backoff_ms: None,
        };
        let s = format_error(&e);
        assert_eq!(s.lines().count(), 2, "{s:?}");
        assert!(!s.contains('\x1b'));
    }

    #[test]
    fn non_envelope_status() {
        let e = CliError::Status {
            status: 502,
            body: body_snippet(b"  <html>bad gateway</html>\n"),
            backoff_ms: None,
        };
        assert_eq!(e.exit_code(), EXIT_RETRY);
        assert_eq!(
            format_error(&e),
            "error: HTTP 502: <html>bad gateway</html>\nhint: retriable; try again later\n"
        );
        let long = "x".repeat(500);
        assert_eq!(
            body_snippet(long.as_bytes()).chars().count(),
            BODY_SNIPPET_CHARS + 1
        );
        let e = CliError::Status {
            status: 418,
            body: String::new(),
            backoff_ms: None,
        };
        assert_eq!(format_error(&e), "error: HTTP 418\n");
        assert_eq!(e.exit_code(), EXIT_CLIENT);
    }

    #[test]
    fn stream_error_formatting_and_exit_codes() {
        let mut ev = StreamErrorEvent {
            code: ErrorCode::DecodeTimeout,
            message: "slow".into(),
            engine: Some("llamacpp".into()),
            retriable: None,
            retry_after_ms: Some(500),
        };
        assert_eq!(exit_code_for_stream_error(&ev), EXIT_RETRY);
        assert_eq!(
            format_stream_error(&ev),
            "error: DECODE_TIMEOUT: slow\nnote: engine llamacpp\nhint: retry after 500 ms\n"
        );
        ev.code = ErrorCode::Canceled;
        ev.engine = None;
        ev.retry_after_ms = None;
        assert_eq!(exit_code_for_stream_error(&ev), EXIT_CLIENT);
        assert_eq!(format_stream_error(&ev), "error: CANCELED: slow\n");
        ev.code = ErrorCode::Internal;
        assert_eq!(exit_code_for_stream_error(&ev), EXIT_RETRY);
    }
}
