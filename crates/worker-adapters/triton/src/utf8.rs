//! Text reassembly across stream events. Triton copies a BYTES output into the JSON string as
//! raw bytes, so one event may end in the middle of a multi-byte character and the next event
//! carries the rest. [`Utf8Assembler`] keeps an incomplete trailing sequence until the bytes
//! that complete it arrive; a byte that can never start or continue a character becomes U+FFFD
//! (the engine really sent something that is not UTF-8), never a panic and never a lost
//! neighbour.

#[derive(Debug, Default)]
pub struct Utf8Assembler {
    /// An incomplete trailing sequence (at most 3 bytes).
    pending: Vec<u8>,
}

impl Utf8Assembler {
    /// Appends `bytes` and returns all text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let buf = std::mem::take(&mut self.pending);
        let mut rest: &[u8] = &buf;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete sequence at the end: wait for its continuation.
                        None => {
                            rest = after;
                            break;
                        }
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }

    /// Whether bytes of an unfinished character are waiting.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The end of the stream: an unfinished character can no longer complete (U+FFFD).
    pub fn finish(&mut self) -> String {
        let p = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&p).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_captured_triton_split() {
        // What the engine sent in triton-here.md: "café 🦀" split inside both characters.
        let mut a = Utf8Assembler::default();
        assert_eq!(a.push(b"caf\xc3"), "caf");
        assert_eq!(a.push(b"\xa9 \xf0\x9f"), "\u{e9} ");
        assert_eq!(a.push(b"\xa6\x80"), "\u{1f980}");
        assert!(!a.has_pending());
    }

    #[test]
    fn invalid_bytes_become_replacement_chars_in_place() {
        let mut a = Utf8Assembler::default();
        assert_eq!(a.push(b"a\xffb\xc3"), "a\u{fffd}b");
        // A continuation that does not continue: the stale lead byte is replaced.
        assert_eq!(a.push(b"x"), "\u{fffd}x");
        assert_eq!(a.push(b"\xe6\x97"), "");
        assert_eq!(a.finish(), "\u{fffd}");
    }

    proptest! {
        /// Any text, cut into events at arbitrary byte boundaries, comes back exactly.
        #[test]
        fn arbitrary_byte_splits_reassemble_exactly(
            text in "(\\PC|[é日本語🦀ñ€𝄞])*",
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
        ) {
            let bytes = text.as_bytes();
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut a = Utf8Assembler::default();
            let mut out = String::new();
            let mut last = 0;
            for p in points.into_iter().chain([bytes.len()]) {
                out.push_str(&a.push(&bytes[last..p]));
                last = p;
            }
            prop_assert!(!a.has_pending());
            out.push_str(&a.finish());
            prop_assert_eq!(out, text);
        }

        /// Arbitrary bytes never panic, and valid text passes through unchanged when split.
        #[test]
        fn arbitrary_bytes_never_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 0..16)) {
            let mut a = Utf8Assembler::default();
            let mut out = String::new();
            for c in &chunks {
                out.push_str(&a.push(c));
            }
            out.push_str(&a.finish());
            let all: Vec<u8> = chunks.concat();
            prop_assert_eq!(out, String::from_utf8_lossy(&all).into_owned());
        }
    }
}
