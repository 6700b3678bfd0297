//! The per-engine tables and the summary.

use super::*;

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(super) fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

pub(super) fn snippet(s: &str) -> String {
    let s: String = s.chars().take(60).collect();
    format!("{s:?}")
}

pub(super) fn report(u: &Up, m: &Measured, plan: &Plan) {
    section(&format!(
        "engine: {} — {} ({}), direct = {}",
        u.eng.label(),
        m.version,
        u.url,
        u.eng.direct_api()
    ));
    let (d, o) = (Measured::firsts(&m.direct), Measured::firsts(&m.orch));
    let (d50, d95) = (ms(percentile(&d, 50.0)), ms(percentile(&d, 95.0)));
    println!(
        "| path | first token median / p95 | added median / p95 | tok/s 1 stream, send to end | decode tok/s | tok/s @{CONCURRENCY} | tokens/request | failed @{CONCURRENCY} |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, samples, sorted, blocks) in [
        ("direct", &m.direct, &d, &m.direct_blocks),
        ("llama-orch", &m.orch, &o, &m.orch_blocks),
    ] {
        let (p50, p95) = (ms(percentile(sorted, 50.0)), ms(percentile(sorted, 95.0)));
        let added = if name == "direct" {
            "—".to_owned()
        } else {
            format!("{:+.2} / {:+.2} ms", p50 - d50, p95 - d95)
        };
        let failed: usize = blocks.iter().map(|b| b.failures).sum();
        println!(
            "| {name} | {p50:.2} / {p95:.2} ms | {added} | {:.1} | {:.1} | {:.1} | {:.1} | {failed} |",
            mean(samples.iter().map(Sample::e2e_rate)),
            mean(samples.iter().map(Sample::decode_rate)),
            Measured::rate(blocks),
            mean(samples.iter().map(|s| s.tokens as f64)),
        );
    }
    let k = m.direct.len();
    println!(
        "  token text equal: {}/{k} rounds ({})",
        m.text_equal,
        u.eng.determinism_note()
    );
    for (i, (d, o)) in m.direct.iter().zip(&m.orch).enumerate() {
        if d.text != o.text {
            println!(
                "    round {}: direct {} vs llama-orch {}",
                i + 1,
                snippet(&d.text),
                snippet(&o.text)
            );
        }
    }
    for (name, blocks) in [("direct", &m.direct_blocks), ("llama-orch", &m.orch_blocks)] {
        if let Some(e) = blocks.iter().find_map(|b| b.first_error.as_ref()) {
            println!("    {name} @{CONCURRENCY}: first failure: {e}");
        }
    }
    println!(
        "  ({} rounds of {} tokens, prompt and seed the same on both paths, order alternating; \
         added = llama-orch's median (p95) minus direct's; tok/s @{CONCURRENCY} = tokens of {} \
         x {} requests / their wall time)",
        plan.rounds, plan.tokens, plan.blocks, plan.block_requests
    );
}

pub(super) fn summary(outcomes: &[(Eng, Outcome)], plan: &Plan) {
    section(&format!(
        "engines summary ({} latency rounds of {} tokens; tok/s as 1 stream / {CONCURRENCY} streams)",
        plan.rounds, plan.tokens
    ));
    println!(
        "| engine | direct first token median / p95 | added by llama-orch median / p95 | tok/s direct | tok/s via llama-orch | text equal |"
    );
    println!("|---|---|---|---|---|---|");
    for (eng, o) in outcomes {
        match o {
            Outcome::Measured(m) => {
                let (d, or) = (Measured::firsts(&m.direct), Measured::firsts(&m.orch));
                let (d50, d95) = (ms(percentile(&d, 50.0)), ms(percentile(&d, 95.0)));
                let (o50, o95) = (ms(percentile(&or, 50.0)), ms(percentile(&or, 95.0)));
                let k = m.direct.len();
                let verdict = if m.text_equal == k { "yes" } else { "NO" };
                println!(
                    "| {} | {d50:.1} / {d95:.1} ms | {:+.1} / {:+.1} ms | {:.1} / {:.1} | {:.1} / {:.1} | {verdict} ({}/{k}) |",
                    eng.label(),
                    o50 - d50,
                    o95 - d95,
                    mean(m.direct.iter().map(Sample::e2e_rate)),
                    Measured::rate(&m.direct_blocks),
                    mean(m.orch.iter().map(Sample::e2e_rate)),
                    Measured::rate(&m.orch_blocks),
                    m.text_equal,
                );
            }
            Outcome::Skipped(why) => {
                println!("| {} | SKIPPED: {} | | | | |", eng.label(), one_line(why))
            }
            Outcome::Failed(why) => {
                println!("| {} | FAILED: {} | | | | |", eng.label(), one_line(why))
            }
        }
    }
}

pub(super) fn one_line(s: &str) -> String {
    let s = s.lines().next().unwrap_or("").replace('|', "/");
    s.chars().take(200).collect()
}
