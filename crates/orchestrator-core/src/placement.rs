//! Replica placement (ORCH-3008–3011, 3019, 3091): only Ready replicas with a free slot,
//! least-loaded first, inside the requested device mask, with session affinity; and the
//! membership rule that keeps one replica set to one engine build and model (ORCH-3007).

use std::borrow::Borrow;

/// Readiness of a replica from the scheduler's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    Ready,
    Unready,
    /// Finishing in-flight work; takes no new tasks.
    Draining,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    pub id: String,
    pub state: ReplicaState,
    pub slots_total: u32,
    pub slots_busy: u32,
    pub devices: Vec<u32>,
}

impl ReplicaView {
    pub fn has_free_slot(&self) -> bool {
        self.slots_busy < self.slots_total
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementRequest<'a> {
    /// When set, only replicas whose devices all lie inside this mask qualify: work never
    /// spills over to GPUs outside it.
    pub device_mask: Option<&'a [u32]>,
    /// Replica that holds this session's KV cache, preferred when it can take the task.
    pub affinity: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacementDecision {
    /// Index into the replica slice given to [`choose_replica`].
    pub replica: usize,
    /// True when the session's previous replica was chosen (its KV cache may be reused).
    pub kv_warm: bool,
}

/// What makes replicas of a set interchangeable beyond their shared config (ORCH-3007, 3046):
/// the engine build and the model bytes they report. Two replicas with different identities
/// can give different tokens for the same seed, so a set never serves both at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaIdentity {
    pub engine_version: String,
    /// Absent where the replica's supervisor does not report it.
    pub model_digest: Option<String>,
}

impl std::fmt::Display for ReplicaIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.model_digest {
            Some(d) => write!(f, "{} with model {d}", self.engine_version),
            None => f.write_str(&self.engine_version),
        }
    }
}

/// Whether a replica that reports Ready may join the set (ORCH-3007): only when every replica
/// already serving reports its identity. Returns the identity the set serves when the
/// candidate must be held out. A rolling upgrade therefore switches a set over only once no
/// replica of the old build serves any more, and never mixes the two.
pub fn set_membership_conflict<'a>(
    serving: impl IntoIterator<Item = &'a ReplicaIdentity>,
    candidate: &ReplicaIdentity,
) -> Option<&'a ReplicaIdentity> {
    serving.into_iter().find(|s| *s != candidate)
}

fn eligible(r: &ReplicaView, req: &PlacementRequest<'_>) -> bool {
    r.state == ReplicaState::Ready
        && r.has_free_slot()
        && req
            .device_mask
            .is_none_or(|mask| r.devices.iter().all(|d| mask.contains(d)))
}

/// Picks a replica, or `None` when no eligible replica has a free slot.
///
/// `replicas` is anything that lends a [`ReplicaView`] (the views themselves, or the caller's
/// richer per-replica records), so callers need not copy their replicas into views.
pub fn choose_replica<R: Borrow<ReplicaView>>(
    replicas: &[R],
    req: &PlacementRequest<'_>,
) -> Option<PlacementDecision> {
    if let Some(aff) = req.affinity
        && let Some(i) = replicas
            .iter()
            .map(Borrow::borrow)
            .position(|r: &ReplicaView| r.id == aff && eligible(r, req))
    {
        return Some(PlacementDecision {
            replica: i,
            kv_warm: true,
        });
    }
    replicas
        .iter()
        .map(Borrow::borrow)
        .enumerate()
        .filter(|(_, r): &(usize, &ReplicaView)| eligible(r, req))
        // Least loaded by busy fraction (cross-multiplied to stay in integers), then most free
        // slots, then config order for determinism.
        .min_by(|(ia, a), (ib, b)| {
            let la = a.slots_busy as u64 * b.slots_total as u64;
            let lb = b.slots_busy as u64 * a.slots_total as u64;
            la.cmp(&lb)
                .then((b.slots_total - b.slots_busy).cmp(&(a.slots_total - a.slots_busy)))
                .then(ia.cmp(ib))
        })
        .map(|(i, _)| PlacementDecision {
            replica: i,
            kv_warm: false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str, state: ReplicaState, busy: u32, total: u32, devices: &[u32]) -> ReplicaView {
        ReplicaView {
            id: id.into(),
            state,
            slots_total: total,
            slots_busy: busy,
            devices: devices.to_vec(),
        }
    }

    #[test]
    fn picks_least_loaded_ready_replica() {
        let rs = [
            r("a", ReplicaState::Ready, 3, 4, &[0]),
            r("b", ReplicaState::Ready, 1, 4, &[1]),
            r("c", ReplicaState::Unready, 0, 4, &[2]),
        ];
        let d = choose_replica(&rs, &PlacementRequest::default()).unwrap();
        assert_eq!(rs[d.replica].id, "b");
    }

    #[test]
    fn respects_device_mask_without_spillover() {
        let rs = [
            r("a", ReplicaState::Ready, 4, 4, &[0]),
            r("b", ReplicaState::Ready, 0, 4, &[1]),
        ];
        let mask = [0u32];
        let req = PlacementRequest {
            device_mask: Some(&mask),
            affinity: None,
        };
        assert_eq!(choose_replica(&rs, &req), None);
    }

    #[test]
    fn affinity_wins_when_possible_else_cold() {
        let rs = [
            r("a", ReplicaState::Ready, 2, 4, &[0]),
            r("b", ReplicaState::Ready, 0, 4, &[1]),
        ];
        let req = PlacementRequest {
            device_mask: None,
            affinity: Some("a"),
        };
        let d = choose_replica(&rs, &req).unwrap();
        assert_eq!((rs[d.replica].id.as_str(), d.kv_warm), ("a", true));
        let rs2 = [r("a", ReplicaState::Draining, 0, 4, &[0]), rs[1].clone()];
        let d = choose_replica(&rs2, &req).unwrap();
        assert_eq!((rs2[d.replica].id.as_str(), d.kv_warm), ("b", false));
    }
}
