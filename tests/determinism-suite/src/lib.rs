//! The determinism suite's bookkeeping (SPEC §9, ORCH-3045, ORCH-3050): the committed seeds,
//! the comparison of token streams (text and index of every token, byte for byte), the first
//! diverging token, and the summary table. The processes are driven by
//! `tests/determinism.rs`; this library is pure so the comparison itself is unit-tested.
//!
//! It must not depend on any server crate: it sees only what the public API streamed
//! (api-types' `TokenEvent`).

use api_types::TokenEvent;

/// The committed seeds (`seeds.txt`): one per line, `#` comments.
pub const SEEDS_FILE: &str = include_str!("../seeds.txt");

/// Parses `seeds.txt`; Err names the first line that is not a seed.
pub fn seeds(text: &str) -> Result<Vec<u64>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.parse::<u64>()
                .map_err(|e| format!("bad seed line `{l}`: {e}"))
        })
        .collect()
}

/// One stream of one seed, and who served it.
#[derive(Debug, Clone)]
pub struct Observed {
    pub seed: u64,
    /// e.g. "run 1" / "run 2".
    pub run: String,
    pub replica_id: String,
    pub tokens: Vec<TokenEvent>,
}

/// Where two streams first differ.
#[derive(Debug, Clone, PartialEq)]
pub struct Divergence {
    pub seed: u64,
    /// Index of the first differing token (a missing token counts as differing).
    pub index: usize,
    pub left: String,
    pub right: Option<String>,
    pub left_from: String,
    pub right_from: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {}: first diverging token at index {}: {} gave {:?}, {} gave {}",
            self.seed,
            self.index,
            self.left_from,
            self.left,
            self.right_from,
            self.right
                .as_ref()
                .map_or_else(|| "<no token>".to_string(), |t| format!("{t:?}")),
        )
    }
}

fn label(o: &Observed) -> String {
    format!("{} on replica {}", o.run, o.replica_id)
}

/// None when `b` is byte-identical to `a` (same count, same index and text at each position).
pub fn first_divergence(a: &Observed, b: &Observed) -> Option<Divergence> {
    let n = a.tokens.len().max(b.tokens.len());
    (0..n).find_map(|i| {
        let (x, y) = (a.tokens.get(i), b.tokens.get(i));
        let same =
            matches!((x, y), (Some(x), Some(y)) if x.i == y.i && x.t.as_bytes() == y.t.as_bytes());
        if same {
            return None;
        }
        // Report from the side that has the token, so the left text always exists.
        let (l, r, lf, rf) = match x {
            Some(_) => (x, y, label(a), label(b)),
            None => (y, x, label(b), label(a)),
        };
        Some(Divergence {
            seed: a.seed,
            index: i,
            left: l.map(|t| t.t.clone()).unwrap_or_default(),
            right: r.map(|t| t.t.clone()),
            left_from: lf,
            right_from: rf,
        })
    })
}

/// Per seed: every stream compared with the seed's first one.
#[derive(Debug, Default)]
pub struct Verdict {
    pub seeds: usize,
    pub identical: usize,
    pub divergences: Vec<Divergence>,
    /// Distinct token streams across seeds: more than one shows the sampler depends on the
    /// seed, i.e. identity is not the trivial outcome of greedy decoding.
    pub distinct_streams: usize,
}

/// Compares the streams of each seed (grouped by seed, in order of appearance).
pub fn judge(observed: &[Observed]) -> Verdict {
    let mut seeds: Vec<u64> = vec![];
    for o in observed {
        if !seeds.contains(&o.seed) {
            seeds.push(o.seed);
        }
    }
    let mut v = Verdict {
        seeds: seeds.len(),
        ..Verdict::default()
    };
    let mut distinct: Vec<String> = vec![];
    for seed in seeds {
        let of_seed: Vec<&Observed> = observed.iter().filter(|o| o.seed == seed).collect();
        let first = of_seed[0];
        let text: String = first.tokens.iter().map(|t| t.t.as_str()).collect();
        if !distinct.contains(&text) {
            distinct.push(text);
        }
        let diffs: Vec<Divergence> = of_seed[1..]
            .iter()
            .filter_map(|o| first_divergence(first, o))
            .collect();
        if diffs.is_empty() {
            v.identical += 1;
        }
        v.divergences.extend(diffs);
    }
    v.distinct_streams = distinct.len();
    v
}

/// The summary table the suite prints.
pub fn table(engine: &str, engine_version: &str, model_digest: &str, v: &Verdict) -> String {
    let mismatched = v.seeds - v.identical;
    format!(
        "| engine | engine_version | model digest | seeds | identical | mismatches |\n\
         |---|---|---|---|---|---|\n\
         | {engine} | {engine_version} | {model_digest} | {} | {} | {mismatched} |",
        v.seeds, v.identical
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(seed: u64, run: &str, replica: &str, toks: &[&str]) -> Observed {
        Observed {
            seed,
            run: run.into(),
            replica_id: replica.into(),
            tokens: toks
                .iter()
                .enumerate()
                .map(|(i, t)| TokenEvent {
                    t: (*t).into(),
                    i: i as u32,
                })
                .collect(),
        }
    }

    #[test]
    fn the_committed_seeds_are_64_distinct_numbers() {
        let s = seeds(SEEDS_FILE).unwrap();
        assert_eq!(s.len(), 64);
        let mut d = s.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), 64);
        assert!(s.iter().all(|&x| x < 1 << 31));
    }

    #[test]
    fn identical_streams_pass_and_any_byte_difference_is_found() {
        let a = obs(7, "run 1", "r0", &[" The", " sea", "."]);
        assert_eq!(
            first_divergence(&a, &obs(7, "run 1", "r1", &[" The", " sea", "."])),
            None
        );
        let d = first_divergence(&a, &obs(7, "run 2", "r1", &[" The", " Sea", "."])).unwrap();
        assert_eq!(
            (d.index, d.left.as_str(), d.right.as_deref()),
            (1, " sea", Some(" Sea"))
        );
        assert!(d.to_string().contains("run 2 on replica r1"), "{d}");
        // A shorter stream diverges where it stops.
        let d = first_divergence(&a, &obs(7, "run 2", "r0", &[" The"])).unwrap();
        assert_eq!((d.index, d.right), (1, None));
        let d = first_divergence(&obs(7, "run 2", "r0", &[" The"]), &a).unwrap();
        assert_eq!((d.index, d.left.as_str(), d.right), (1, " sea", None));
        // Same text, different index: not identical.
        let mut b = a.clone();
        b.tokens[2].i = 5;
        assert_eq!(first_divergence(&a, &b).unwrap().index, 2);
    }

    #[test]
    fn judge_counts_seeds_identical_and_distinct() {
        let v = judge(&[
            obs(1, "run 1", "r0", &["a", "b"]),
            obs(1, "run 1", "r1", &["a", "b"]),
            obs(2, "run 1", "r0", &["c"]),
            obs(2, "run 1", "r1", &["d"]),
        ]);
        assert_eq!((v.seeds, v.identical, v.distinct_streams), (2, 1, 2));
        assert_eq!(v.divergences.len(), 1);
        assert_eq!(v.divergences[0].seed, 2);
        let t = table("llamacpp", "b1", "abc", &v);
        assert!(t.ends_with("| llamacpp | b1 | abc | 2 | 1 | 1 |"), "{t}");
    }
}
