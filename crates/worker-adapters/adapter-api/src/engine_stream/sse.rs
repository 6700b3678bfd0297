//! A bounded SSE reader for engines' token streams (TGI's `/generate_stream`, vLLM's OpenAI
//! streams): `data: {json}` and the older `data:{json}` framing, `:` keep-alive comments
//! skipped, LF or CRLF line ends. Unlike a general SSE client it refuses an event larger than
//! [`MAX_EVENT_BYTES`], so an engine that never ends a line cannot grow the adapter's memory
//! without bound.

use bytes::BytesMut;

/// The largest event an adapter accepts (a token event is well under 1 KiB; TGI's final event
/// carries the whole `generated_text` and vLLM's last chunk with a stop string the held-back
/// text, so allow long outputs).
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct SseParser {
    buf: BytesMut,
    data: Vec<u8>,
    has_data: bool,
    /// Bytes of `buf` already searched for a line end (no rescans of a long line).
    scanned: usize,
}

#[derive(Debug, PartialEq)]
pub enum SseError {
    TooLarge,
}

impl SseParser {
    /// Feeds bytes; returns the data of every event completed by them.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, SseError> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(nl) = self.buf[self.scanned..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|i| i + self.scanned)
        {
            self.scanned = 0;
            let mut line = self.buf.split_to(nl + 1);
            line.truncate(nl);
            if line.last() == Some(&b'\r') {
                line.truncate(nl - 1);
            }
            if line.is_empty() {
                if self.has_data {
                    out.push(String::from_utf8_lossy(&self.data).into_owned());
                }
                self.data.clear();
                self.has_data = false;
                continue;
            }
            if line[0] == b':' {
                continue; // comment (keep-alive)
            }
            let (field, value) = match line.iter().position(|b| *b == b':') {
                Some(i) => {
                    let mut v = &line[i + 1..];
                    if v.first() == Some(&b' ') {
                        v = &v[1..];
                    }
                    (&line[..i], v)
                }
                None => (&line[..], &[][..]),
            };
            if field == b"data" {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
                if self.data.len() > MAX_EVENT_BYTES {
                    return Err(SseError::TooLarge);
                }
            }
            // `event`, `id`, `retry`: TGI and vLLM send none; ignored.
        }
        self.scanned = self.buf.len();
        if self.buf.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(SseError::TooLarge);
        }
        Ok(out)
    }

    /// At the end of the body: an event without its blank line (a truncated stream) is not
    /// delivered.
    pub fn pending(&self) -> bool {
        self.has_data || !self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn both_framings_comments_and_split_chunks() {
        let mut p = SseParser::default();
        let mut got = Vec::new();
        let stream =
            b":\n\ndata: {\"a\":1}\n\ndata:{\"b\":2}\r\n\r\n: keep\n\ndata: x\ndata: y\n\n";
        for c in stream.chunks(3) {
            got.extend(p.push(c).unwrap());
        }
        assert_eq!(got, ["{\"a\":1}", "{\"b\":2}", "x\ny"]);
        assert!(!p.pending());
        p.push(b"data: {\"trunc").unwrap();
        assert!(p.pending());
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut p = SseParser::default();
        let chunk = vec![b'a'; 64 * 1024];
        let mut err = None;
        for _ in 0..(MAX_EVENT_BYTES / chunk.len() + 2) {
            if let Err(e) = p.push(&chunk) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(SseError::TooLarge));
    }

    #[test]
    fn a_long_line_in_tiny_chunks_is_linear() {
        let mut p = SseParser::default();
        let line = format!("data: {}\n\n", "x".repeat(1 << 20));
        let start = std::time::Instant::now();
        let mut got = Vec::new();
        for c in line.as_bytes().chunks(7) {
            got.extend(p.push(c).unwrap());
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), 1 << 20);
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20)) {
            let mut p = SseParser::default();
            for c in chunks {
                let _ = p.push(&c);
            }
        }
    }
}
