//! [`Engines::reload`]: a new model beside the old one on every supervised replica of a pool,
//! switched in one step when all are Ready, rolled back when any fails; and the retirement of
//! the engines it replaced.

use std::sync::Arc;
use std::time::Duration;

use adapter_api::WorkerAdapter;
use api_types::ErrorCode;

use super::spawn::{engine_spec, start_replica};
use super::{Engines, forward_changes, ring};
use crate::supervisor::Phase;

impl Engines {
    /// Starts the new model beside the old one on every supervised replica of the pool;
    /// returns the new Ready adapters, or rolls back (stops every new engine) on the first
    /// failure. The old engines keep running until [`Engines::retire_old`].
    pub async fn reload(
        &self,
        pool_id: &str,
        new_model_ref: &str,
        new_model_sha256: Option<&str>,
    ) -> Result<Vec<(String, Arc<dyn WorkerAdapter>)>, ErrorCode> {
        let Some(pool) = self.cfg.pool(pool_id) else {
            return Err(ErrorCode::NotFound);
        };
        let Some(proc_cfg) = pool.process() else {
            self.set_error(pool_id, "pool's engines are not supervised here".into());
            return Err(ErrorCode::PoolUnavailable);
        };
        let mut started = Vec::new();
        let mut adapters = Vec::new();
        let mut urls = Vec::new();
        for r in pool.replicas.iter().filter(|r| r.endpoint.is_none()) {
            let spec = engine_spec(
                pool,
                r,
                new_model_ref,
                new_model_sha256.map(String::from),
                true,
                &self.artifacts,
            )
            .map_err(|_| ErrorCode::Internal)?;
            let s = start_replica(spec, new_model_ref).map_err(|_| ErrorCode::Internal)?;
            forward_changes(s.sup.subscribe(), &self.bell);
            started.push(s.sup);
            urls.push(s.endpoint);
            adapters.push((r.id.clone(), s.gated));
        }
        // The first failure of any new engine rolls the whole reload back: never half.
        let limit = Duration::from_millis(proc_cfg.ready_timeout_ms);
        let mut failure = None;
        for s in &started {
            let st = s
                .wait_for(limit, |st| {
                    st.phase == Phase::Ready || st.last_error.is_some()
                })
                .await;
            match st {
                Some(st) if st.phase == Phase::Ready => {}
                Some(st) => {
                    let why = st.last_error.unwrap_or_default();
                    let code = if why.starts_with("UNTRUSTED_ARTIFACT") {
                        ErrorCode::UntrustedArtifact
                    } else if why.starts_with("MODEL_DEPRECATED") {
                        ErrorCode::ModelDeprecated
                    } else {
                        ErrorCode::PoolUnready
                    };
                    failure = Some((code, why));
                    break;
                }
                None => {
                    failure = Some((
                        ErrorCode::PoolUnready,
                        format!("not ready within {} ms", limit.as_millis()),
                    ));
                    break;
                }
            }
        }
        if let Some((code, why)) = failure {
            for s in started {
                s.shutdown().await;
            }
            self.set_error(pool_id, why);
            return Err(code);
        }
        let old = self.live.lock().await.insert(pool_id.to_string(), started);
        self.models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                pool_id.to_string(),
                (
                    new_model_ref.to_string(),
                    new_model_sha256.map(String::from),
                ),
            );
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pool_id.to_string(), urls);
        ring(&self.bell);
        if let Some(old) = old {
            self.retiring
                .lock()
                .await
                .entry(pool_id.to_string())
                .or_default()
                .extend(old);
        }
        Ok(adapters)
    }

    /// Stops the engines a reload replaced.
    pub async fn retire_old(&self, pool_id: &str) {
        let old = self
            .retiring
            .lock()
            .await
            .remove(pool_id)
            .unwrap_or_default();
        for s in old {
            s.shutdown().await;
        }
    }

    /// Why the pool's last reload failed.
    pub fn last_error(&self, pool_id: &str) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pool_id)
            .cloned()
    }
}
