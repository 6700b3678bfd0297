//! Pure arithmetic over RSS samples: the least-squares slope, medians, and the verdict of the
//! soak (growth after warm-up, budget).

/// One RSS sample: seconds since the start and resident bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t: f64,
    pub rss: u64,
}

/// Least-squares slope of RSS over time, in bytes per second (0 for fewer than 2 samples).
pub fn slope(samples: &[Sample]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mt = samples.iter().map(|s| s.t).sum::<f64>() / n;
    let mr = samples.iter().map(|s| s.rss as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in samples {
        num += (s.t - mt) * (s.rss as f64 - mr);
        den += (s.t - mt) * (s.t - mt);
    }
    if den == 0.0 { 0.0 } else { num / den }
}

pub fn median(samples: &[Sample]) -> u64 {
    let mut v: Vec<u64> = samples.iter().map(|s| s.rss).collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

pub fn max(samples: &[Sample]) -> u64 {
    samples.iter().map(|s| s.rss).max().unwrap_or(0)
}

pub fn mib(b: f64) -> f64 {
    b / (1024.0 * 1024.0)
}

/// What the soak judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Slope after warm-up, bytes per minute.
    pub slope_per_min: f64,
    /// RSS growth the slope projects over the measured window, bytes.
    pub projected_growth: f64,
    pub peak: u64,
    pub failures: Vec<String>,
}

/// Growth allowed over the measured window: `frac` of the median plus `floor` bytes (noise of
/// a few allocator pages must not fail the run; a leak of a few MiB per minute must).
pub fn judge(after_warmup: &[Sample], budget: u64, frac: f64, floor: f64) -> Verdict {
    let s = slope(after_warmup);
    let span = match (after_warmup.first(), after_warmup.last()) {
        (Some(a), Some(b)) => b.t - a.t,
        _ => 0.0,
    };
    let projected = s * span;
    let allowed = median(after_warmup) as f64 * frac + floor;
    let peak = max(after_warmup);
    let mut failures = Vec::new();
    if after_warmup.len() < 10 {
        failures.push(format!(
            "only {} samples after warm-up: too few to judge",
            after_warmup.len()
        ));
    }
    if projected > allowed {
        failures.push(format!(
            "RSS keeps growing after warm-up: {:+.2} MiB/min, {:+.1} MiB over {:.0} s (allowed {:.1} MiB)",
            mib(s * 60.0),
            mib(projected),
            span,
            mib(allowed)
        ));
    }
    if peak > budget {
        failures.push(format!(
            "RSS peaked at {:.1} MiB, over the budget of {:.1} MiB",
            mib(peak as f64),
            mib(budget as f64)
        ));
    }
    Verdict {
        slope_per_min: s * 60.0,
        projected_growth: projected,
        peak,
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(f: impl Fn(f64) -> f64, n: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                t: i as f64,
                rss: f(i as f64) as u64,
            })
            .collect()
    }

    const MIB: f64 = 1024.0 * 1024.0;

    #[test]
    fn a_flat_noisy_curve_passes() {
        let s = series(|t| 100.0 * MIB + MIB * ((t as u64) % 2) as f64, 90);
        let v = judge(&s, (200.0 * MIB) as u64, 0.05, 4.0 * MIB);
        assert!(v.failures.is_empty(), "{v:?}");
        assert!(v.slope_per_min.abs() < MIB);
    }

    #[test]
    fn a_steady_leak_fails_the_slope_test() {
        // 10 MiB per minute on top of 100 MiB: well under the budget, but growing.
        let s = series(|t| 100.0 * MIB + t * 10.0 * MIB / 60.0, 90);
        let v = judge(&s, (1000.0 * MIB) as u64, 0.05, 4.0 * MIB);
        assert_eq!(v.failures.len(), 1, "{v:?}");
        assert!(v.failures[0].contains("keeps growing"));
        assert!((v.slope_per_min / MIB - 10.0).abs() < 0.01);
    }

    #[test]
    fn a_flat_curve_over_budget_fails() {
        let s = series(|_| 300.0 * MIB, 30);
        let v = judge(&s, (256.0 * MIB) as u64, 0.05, 4.0 * MIB);
        assert_eq!(v.failures.len(), 1, "{v:?}");
        assert!(v.failures[0].contains("over the budget"));
    }

    #[test]
    fn too_few_samples_cannot_pass() {
        let s = series(|_| MIB, 3);
        assert!(!judge(&s, u64::MAX, 0.05, MIB).failures.is_empty());
    }
}
