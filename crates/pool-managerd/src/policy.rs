//! Restart policy of a supervised engine (ORCH-3038, 3053): exponential backoff between
//! restarts, and a circuit breaker that stops restarting after too many crashes in a window,
//! so a broken engine or model cannot cause a restart storm. Pure: callers pass `now_ms`.

/// Tunables of [`RestartPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartConfig {
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Crashes within `window_ms` that open the breaker.
    pub max_crashes: u32,
    pub window_ms: u64,
    /// How long the breaker stays open before one trial restart (half-open).
    pub open_for_ms: u64,
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            max_crashes: 5,
            window_ms: 120_000,
            open_for_ms: 300_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    Closed,
    /// No restarts until `until_ms`.
    Open {
        until_ms: u64,
    },
}

/// What to do after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    RestartAfter {
        delay_ms: u64,
    },
    /// Breaker open: wait this long, then try once more.
    BreakerOpen {
        retry_after_ms: u64,
    },
}

#[derive(Debug, Clone)]
pub struct RestartPolicy {
    cfg: RestartConfig,
    crashes: Vec<u64>,
    consecutive: u32,
    breaker: Breaker,
}

impl RestartPolicy {
    pub fn new(cfg: RestartConfig) -> Self {
        RestartPolicy {
            cfg,
            crashes: Vec::new(),
            consecutive: 0,
            breaker: Breaker::Closed,
        }
    }

    pub fn breaker(&self) -> Breaker {
        self.breaker
    }

    /// Records a crash (or a failed start) and decides what happens next.
    pub fn on_crash(&mut self, now_ms: u64) -> RestartDecision {
        self.crashes
            .retain(|t| now_ms.saturating_sub(*t) < self.cfg.window_ms);
        self.crashes.push(now_ms);
        self.consecutive = self.consecutive.saturating_add(1);
        if self.crashes.len() as u32 >= self.cfg.max_crashes {
            let until_ms = now_ms + self.cfg.open_for_ms;
            self.breaker = Breaker::Open { until_ms };
            return RestartDecision::BreakerOpen {
                retry_after_ms: self.cfg.open_for_ms,
            };
        }
        let exp = self.consecutive.saturating_sub(1).min(20);
        let delay_ms = self
            .cfg
            .initial_backoff_ms
            .saturating_mul(1u64 << exp)
            .min(self.cfg.max_backoff_ms);
        RestartDecision::RestartAfter { delay_ms }
    }

    /// The engine became Ready: backoff resets; the breaker closes and forgets old crashes.
    pub fn on_ready(&mut self) {
        self.consecutive = 0;
        if matches!(self.breaker, Breaker::Open { .. }) {
            self.crashes.clear();
        }
        self.breaker = Breaker::Closed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> RestartConfig {
        RestartConfig {
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            max_crashes: 4,
            window_ms: 10_000,
            open_for_ms: 60_000,
        }
    }

    #[test]
    fn backoff_doubles_then_breaker_opens() {
        let mut p = RestartPolicy::new(cfg());
        assert_eq!(
            p.on_crash(0),
            RestartDecision::RestartAfter { delay_ms: 100 }
        );
        assert_eq!(
            p.on_crash(1),
            RestartDecision::RestartAfter { delay_ms: 200 }
        );
        assert_eq!(
            p.on_crash(2),
            RestartDecision::RestartAfter { delay_ms: 400 }
        );
        assert_eq!(
            p.on_crash(3),
            RestartDecision::BreakerOpen {
                retry_after_ms: 60_000
            }
        );
        assert_eq!(p.breaker(), Breaker::Open { until_ms: 60_003 });
        p.on_ready();
        assert_eq!(p.breaker(), Breaker::Closed);
        assert_eq!(
            p.on_crash(70_000),
            RestartDecision::RestartAfter { delay_ms: 100 }
        );
    }

    #[test]
    fn crashes_outside_the_window_do_not_count() {
        let mut p = RestartPolicy::new(cfg());
        for i in 0..10u64 {
            let d = p.on_crash(i * 20_000);
            assert!(
                matches!(d, RestartDecision::RestartAfter { .. }),
                "crash {i}: {d:?}"
            );
        }
    }

    proptest! {
        /// Delays stay within [initial, max]; never more than max_crashes restarts inside one
        /// window without the breaker opening.
        #[test]
        fn no_restart_storm(gaps in proptest::collection::vec(0u64..5_000, 1..100)) {
            let c = cfg();
            let mut p = RestartPolicy::new(c);
            let mut now = 0u64;
            let mut restarts_in_window: Vec<u64> = Vec::new();
            for g in gaps {
                now += g;
                match p.on_crash(now) {
                    RestartDecision::RestartAfter { delay_ms } => {
                        prop_assert!(delay_ms >= c.initial_backoff_ms && delay_ms <= c.max_backoff_ms);
                        restarts_in_window.retain(|t| now - t < c.window_ms);
                        restarts_in_window.push(now);
                        prop_assert!(restarts_in_window.len() < c.max_crashes as usize);
                    }
                    RestartDecision::BreakerOpen { .. } => {
                        let open = matches!(p.breaker(), Breaker::Open { .. });
                        prop_assert!(open);
                        p.on_ready();
                        restarts_in_window.clear();
                    }
                }
            }
        }
    }
}
