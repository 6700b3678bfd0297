//! Start-time prediction from an exponentially weighted mean of task service times.

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServiceTimeEstimator {
    mean_ms: f64,
    samples: u64,
}

impl Default for ServiceTimeEstimator {
    fn default() -> Self {
        ServiceTimeEstimator {
            // Prior for a pool that has served nothing yet.
            mean_ms: 1000.0,
            samples: 0,
        }
    }
}

impl ServiceTimeEstimator {
    const ALPHA: f64 = 0.2;

    pub fn observe(&mut self, service_ms: u64) {
        let x = service_ms as f64;
        self.mean_ms = if self.samples == 0 {
            x
        } else {
            Self::ALPHA * x + (1.0 - Self::ALPHA) * self.mean_ms
        };
        self.samples += 1;
    }

    pub fn mean_ms(&self) -> f64 {
        self.mean_ms
    }

    /// Predicted wait of a task with `position` tasks ahead of it, given `free_slots` idle
    /// slots now and `total_slots` in the pool.
    pub fn predicted_start_ms(&self, position: u32, free_slots: u32, total_slots: u32) -> u64 {
        if position < free_slots {
            return 0;
        }
        if total_slots == 0 {
            return u64::MAX;
        }
        let waves = (position - free_slots) / total_slots + 1;
        (f64::from(waves) * self.mean_ms).round() as u64
    }
}

/// Measured speed of one replica: time to first token and time per generated token, as
/// exponentially weighted means. Deadline feasibility uses it only once it has samples: an
/// unmeasured replica is not assumed slow or fast.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DecodeRate {
    ttft_ms: f64,
    ms_per_token: f64,
    samples: u64,
}

impl DecodeRate {
    const ALPHA: f64 = 0.2;

    /// A finished task: `first_token_ms` from dispatch to its first token, then `tokens` more
    /// in `decode_ms`.
    pub fn observe(&mut self, first_token_ms: u64, tokens: u32, decode_ms: u64) {
        let ttft = first_token_ms as f64;
        let per = if tokens > 1 {
            decode_ms as f64 / f64::from(tokens - 1)
        } else {
            self.ms_per_token
        };
        if self.samples == 0 {
            self.ttft_ms = ttft;
            self.ms_per_token = per;
        } else {
            self.ttft_ms = Self::ALPHA * ttft + (1.0 - Self::ALPHA) * self.ttft_ms;
            self.ms_per_token = Self::ALPHA * per + (1.0 - Self::ALPHA) * self.ms_per_token;
        }
        self.samples += 1;
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Time from dispatch to the first token (weighted mean), when measured.
    pub fn first_token_ms(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.ttft_ms)
    }

    /// Tokens per second, when measured.
    pub fn tokens_per_second(&self) -> Option<f64> {
        (self.samples > 0 && self.ms_per_token > 0.0).then(|| 1000.0 / self.ms_per_token)
    }

    /// Expected time from dispatch to the end of a task of `tokens` tokens.
    pub fn expected_service_ms(&self, tokens: u32) -> Option<f64> {
        (self.samples > 0).then(|| self.ttft_ms + self.ms_per_token * f64::from(tokens))
    }
}

/// Expected service time of a task on a pool: the mean over the measured replicas' rates.
pub fn pool_service_ms<'a>(
    rates: impl IntoIterator<Item = &'a DecodeRate>,
    tokens: u32,
) -> Option<f64> {
    let v: Vec<f64> = rates
        .into_iter()
        .filter_map(|r| r.expected_service_ms(tokens))
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Probability that a task finishes by its deadline, given the time it already waited and the
/// expected remaining service time. A logistic curve around the expected finish, with a spread
/// of a quarter of the service time: a crude but monotone estimate until EDF (issue 4) brings
/// per-task decode-time models. No deadline means certainty.
pub fn on_time_probability(elapsed_ms: u64, deadline_ms: Option<u64>, expected_ms: f64) -> f64 {
    let Some(deadline) = deadline_ms else {
        return 1.0;
    };
    let margin = deadline as f64 - (elapsed_ms as f64 + expected_ms);
    let spread = (expected_ms * 0.25).max(1.0);
    let p = 1.0 / (1.0 + (-margin / spread).exp());
    // Two decimals: enough for clients, and stable in tests.
    (p * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_time_probability_is_monotone_in_slack() {
        assert_eq!(on_time_probability(0, None, 100.0), 1.0);
        let tight = on_time_probability(0, Some(100), 100.0);
        let loose = on_time_probability(0, Some(1000), 100.0);
        let late = on_time_probability(500, Some(100), 100.0);
        assert_eq!(tight, 0.5);
        assert!(loose > 0.99 && late < 0.01);
    }

    #[test]
    fn prediction_scales_with_waves() {
        let mut e = ServiceTimeEstimator::default();
        e.observe(100);
        assert_eq!(e.predicted_start_ms(0, 1, 2), 0);
        assert_eq!(e.predicted_start_ms(1, 1, 2), 100);
        assert_eq!(e.predicted_start_ms(3, 1, 2), 200);
        assert_eq!(e.predicted_start_ms(0, 0, 0), u64::MAX);
    }

    #[test]
    fn decode_rate_is_unknown_until_measured() {
        let mut r = DecodeRate::default();
        assert_eq!(r.expected_service_ms(10), None);
        r.observe(50, 11, 100);
        assert_eq!(r.expected_service_ms(10), Some(150.0));
        assert_eq!(r.tokens_per_second(), Some(100.0));
        let other = DecodeRate::default();
        assert_eq!(pool_service_ms([&r, &other], 10), Some(150.0));
    }
}
