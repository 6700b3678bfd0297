//! The upkeep loop: health probes, queue deadlines, replay-store expiry, returning memory,
//! and another placement chance for work a plugin deferred.
//!
//! It keeps a busy pace (every [`BUSY_TICK`]) only while work exists — a task queued or
//! running, or a replica that is not Ready — and otherwise sleeps until the next thing that
//! is due: the oldest replay log's expiry, or a slow fallback health probe
//! (`server.idle_probe_interval_ms`). Readiness changes arrive from pool-managerd's registry
//! feed and from dispatch outcomes, so an idle host spends no CPU here; an admission wakes
//! the loop at once through [`AppState::upkeep_bell`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator_core::placement::ReplicaState;

use crate::state::AppState;

/// The pace while work exists: deadlines and queue timeouts are checked this often.
pub const BUSY_TICK: Duration = Duration::from_secs(1);

impl AppState {
    /// Whether something needs the busy pace: live tasks, or a replica not Ready.
    fn upkeep_busy(&self) -> bool {
        let all_ready = (0..self.pools.len()).all(|pi| {
            self.pool_sched(pi)
                .replicas
                .iter()
                .all(|r| r.view.state == ReplicaState::Ready)
        });
        !all_ready || self.live_tasks() > 0
    }

    /// How long the loop may sleep when nothing is busy: until the next fallback probe or
    /// the oldest replay log's expiry, whichever comes first.
    fn upkeep_idle_wait(&self, last_probe: Instant) -> Duration {
        let probe = Duration::from_millis(self.cfg.server.idle_probe_interval_ms)
            .saturating_sub(last_probe.elapsed());
        let expiry = self
            .retention()
            .next_expiry_ms()
            .map(|at| Duration::from_millis(at.saturating_sub(self.now_ms())));
        expiry.map_or(probe, |e| e.min(probe))
    }

    /// Runs until the task is aborted (at shutdown).
    pub async fn run_upkeep(self: Arc<Self>) {
        let mut last_probe = Instant::now();
        let idle_probe = Duration::from_millis(self.cfg.server.idle_probe_interval_ms);
        loop {
            let busy = self.upkeep_busy();
            let wait = if busy {
                BUSY_TICK
            } else {
                self.upkeep_idle_wait(last_probe)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.upkeep_bell.notified() => {}
            }
            if busy || last_probe.elapsed() >= idle_probe {
                self.probe_replicas().await;
                last_probe = Instant::now();
            }
            self.expire_queued();
            let forgot = self.expire_retained();
            self.return_memory_if_idle(forgot > 0);
            if busy {
                // A placement plugin may have deferred work while slots were free; give it
                // another chance even when no slot frees up meanwhile.
                for pool in 0..self.pools.len() {
                    self.dispatch(pool);
                }
            }
        }
    }
}
