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
}
