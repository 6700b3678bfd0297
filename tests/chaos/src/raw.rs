//! A bare-socket SSE client for what reqwest cannot do on purpose: stop reading (a stalled
//! client with a tiny receive buffer), read slowly, or hold ten thousand streams cheaply.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// `127.0.0.1:port` of a `http://127.0.0.1:port` base URL.
pub fn addr(base: &str) -> SocketAddr {
    base.trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|e| panic!("{base}: {e}"))
}

/// One `GET /v1/tasks/{id}/stream` on its own connection (`Connection: close`).
pub struct RawStream {
    sock: TcpStream,
    /// Everything read so far (headers and chunked body).
    pub raw: Vec<u8>,
}

impl RawStream {
    /// Connects (with `SO_RCVBUF = rcvbuf` when given, set before the handshake so the
    /// advertised window stays small) and sends the request.
    pub async fn open(
        at: SocketAddr,
        id: &str,
        key: &str,
        rcvbuf: Option<u32>,
    ) -> std::io::Result<RawStream> {
        let s = TcpSocket::new_v4()?;
        if let Some(n) = rcvbuf {
            s.set_recv_buffer_size(n)?;
        }
        let mut sock = s.connect(at).await?;
        let req = format!(
            "GET /v1/tasks/{id}/stream HTTP/1.1\r\nHost: {at}\r\nAuthorization: Bearer {key}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
        );
        sock.write_all(req.as_bytes()).await?;
        Ok(RawStream {
            sock,
            raw: Vec::new(),
        })
    }

    /// Reads at most `max` bytes once (waits up to `limit`); returns the count (0 = EOF).
    pub async fn read_some(&mut self, max: usize, limit: Duration) -> std::io::Result<usize> {
        let mut buf = vec![0u8; max];
        let n = tokio::time::timeout(limit, self.sock.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out"))??;
        self.raw.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    /// Reads until `needle` has been seen (true) or EOF (false), each read within `limit`.
    pub async fn read_until(&mut self, needle: &str, limit: Duration) -> std::io::Result<bool> {
        loop {
            if contains(&self.raw, needle.as_bytes()) {
                return Ok(true);
            }
            if self.read_some(4096, limit).await? == 0 {
                return Ok(false);
            }
        }
    }

    /// Reads to EOF, each read within `limit`.
    pub async fn read_to_eof(&mut self, limit: Duration) -> std::io::Result<()> {
        while self.read_some(64 * 1024, limit).await? > 0 {}
        Ok(())
    }

    /// The HTTP status code, once the status line was read.
    pub fn status(&self) -> Option<u16> {
        let text = std::str::from_utf8(self.raw.get(..12)?).ok()?;
        text.get(9..12)?.parse().ok()
    }

    /// The SSE body (de-chunked) read so far.
    pub fn body(&self) -> String {
        let Some(start) = find(&self.raw, b"\r\n\r\n") else {
            return String::new();
        };
        let mut rest = &self.raw[start + 4..];
        let mut out = Vec::new();
        // chunk: <hex size>\r\n<data>\r\n … 0\r\n\r\n
        while let Some(eol) = find(rest, b"\r\n") {
            let size = std::str::from_utf8(&rest[..eol])
                .ok()
                .and_then(|h| usize::from_str_radix(h.trim(), 16).ok());
            let Some(size) = size else { break };
            if size == 0 || rest.len() < eol + 2 + size {
                out.extend_from_slice(&rest[eol + 2..rest.len().min(eol + 2 + size)]);
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[(eol + 4 + size).min(rest.len())..];
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// SSE event names in order (`event: X` lines).
pub fn event_names(body: &str) -> Vec<&str> {
    body.lines()
        .filter_map(|l| l.strip_prefix("event:"))
        .map(str::trim)
        .collect()
}

/// The `code` of the last `error` event's data, if the body has one.
pub fn last_error_code(body: &str) -> Option<String> {
    let mut code = None;
    let mut in_error = false;
    for line in body.lines() {
        if let Some(name) = line.strip_prefix("event:") {
            in_error = name.trim() == "error";
        } else if let Some(data) = line.strip_prefix("data:")
            && in_error
        {
            let v: serde_json::Value = serde_json::from_str(data.trim()).unwrap_or_default();
            code = v["code"].as_str().map(String::from);
        }
    }
    code
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}
