//! Observed share of dispatches per (tenant, priority) flow, as an exponentially weighted
//! moving average: what `llorch_admission_share_ratio{tenant,priority}` exports, so an operator can
//! see that the configured weights hold.

use std::collections::BTreeMap;

use crate::queue::FlowKey;

#[derive(Debug, Clone)]
pub struct ShareTracker {
    alpha: f64,
    shares: BTreeMap<FlowKey, f64>,
}

impl Default for ShareTracker {
    /// A window of about 100 dispatches.
    fn default() -> Self {
        ShareTracker::new(0.01)
    }
}

impl ShareTracker {
    pub fn new(alpha: f64) -> Self {
        ShareTracker {
            alpha: alpha.clamp(1e-6, 1.0),
            shares: BTreeMap::new(),
        }
    }

    /// One dispatch went to `served`. O(flows seen).
    pub fn observe(&mut self, served: &FlowKey) {
        if !self.shares.contains_key(served) {
            self.shares.insert(served.clone(), 0.0);
        }
        for (k, v) in self.shares.iter_mut() {
            let hit = if k == served { 1.0 } else { 0.0 };
            *v = self.alpha * hit + (1.0 - self.alpha) * *v;
        }
    }

    pub fn shares(&self) -> impl Iterator<Item = (&FlowKey, f64)> {
        self.shares.iter().map(|(k, v)| (k, *v))
    }

    pub fn share(&self, key: &FlowKey) -> f64 {
        self.shares.get(key).copied().unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_types::Priority;

    #[test]
    fn share_converges_to_the_dispatch_mix() {
        let a = FlowKey::new("a", Priority::Interactive);
        let b = FlowKey::new("a", Priority::Batch);
        let mut t = ShareTracker::default();
        for i in 0..2000 {
            t.observe(if i % 9 == 0 { &b } else { &a });
        }
        assert!((t.share(&a) - 8.0 / 9.0).abs() < 0.05, "{}", t.share(&a));
        assert!((t.share(&a) + t.share(&b) - 1.0).abs() < 1e-6);
    }
}
