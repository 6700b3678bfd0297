//! Short-lived sessions (ORCH-3021, 3022, 3099): bounded lifetime, bounded turns, bounded
//! count (least recently used evicted), namespaced by tenant so one tenant can never see or
//! touch another's session even when ids collide.
//!
//! Budgets: a session may have a token budget (prompt + generated tokens over all turns) and
//! a decode-time budget. A turn reserves its worst case (prompt estimate + max_tokens) at
//! admission so that concurrent turns cannot overrun the budget together; when it ends, the
//! reservation is replaced by what it really used.
//!
//! KV residency: each replica keeps the KV cache of a bounded number of sessions (least
//! recently used evicted); an evicted session loses its affinity and its next turn is cold.

use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    created_ms: u64,
    last_used_ms: u64,
    turns: u32,
    replica: Option<String>,
    kv_bytes: u64,
    tokens_used: u64,
    tokens_reserved: u64,
    time_used_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub ttl_ms_remaining: u64,
    pub turns: u32,
    pub kv_bytes: u64,
    /// Whether the session's KV cache is believed resident on a replica.
    pub kv_warmth: bool,
    pub tokens_remaining: Option<u64>,
    pub time_remaining_ms: Option<u64>,
}

/// What the next turn of a session may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTurn {
    /// Replica holding the session's KV cache, for affinity.
    pub affinity: Option<String>,
    /// Budget left after this turn's reservation (None = no budget configured).
    pub tokens_remaining: Option<u64>,
    pub time_remaining_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    MaxTurns {
        max_turns: u32,
    },
    TokenBudget {
        budget: u64,
        committed: u64,
        requested: u64,
    },
    TimeBudget {
        budget_ms: u64,
        used_ms: u64,
    },
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::MaxTurns { max_turns } => {
                write!(f, "session reached its limit of {max_turns} turns")
            }
            SessionError::TokenBudget {
                budget,
                committed,
                requested,
            } => write!(
                f,
                "session token budget {budget} exhausted: {committed} used or reserved, this turn needs up to {requested}"
            ),
            SessionError::TimeBudget { budget_ms, used_ms } => write!(
                f,
                "session time budget {budget_ms} ms exhausted: {used_ms} ms of decode used"
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionStore {
    sessions: HashMap<(String, String), Session>,
    ttl_ms: u64,
    max_turns: u32,
    max_sessions: usize,
    token_budget: Option<u64>,
    time_budget_ms: Option<u64>,
    kv_per_replica: usize,
    /// Per replica, the sessions whose KV it holds, least recently used first.
    resident: HashMap<String, VecDeque<(String, String)>>,
}

impl SessionStore {
    pub fn new(ttl_ms: u64, max_turns: u32, max_sessions: u32) -> Self {
        SessionStore {
            sessions: HashMap::new(),
            ttl_ms,
            max_turns,
            max_sessions: max_sessions.max(1) as usize,
            token_budget: None,
            time_budget_ms: None,
            kv_per_replica: usize::MAX,
            resident: HashMap::new(),
        }
    }

    /// Per-session budgets (ORCH-3099); `None` = unlimited.
    pub fn with_budgets(mut self, tokens: Option<u64>, time_ms: Option<u64>) -> Self {
        self.token_budget = tokens;
        self.time_budget_ms = time_ms;
        self
    }

    /// Most sessions whose KV a replica is assumed to keep.
    pub fn with_kv_residency(mut self, per_replica: u32) -> Self {
        self.kv_per_replica = per_replica.max(1) as usize;
        self
    }

    fn key(tenant: &str, id: &str) -> (String, String) {
        (tenant.to_string(), id.to_string())
    }

    fn live<'a>(&'a self, tenant: &str, id: &str, now_ms: u64) -> Option<&'a Session> {
        self.sessions
            .get(&Self::key(tenant, id))
            .filter(|s| now_ms < s.created_ms.saturating_add(self.ttl_ms))
    }

    /// Checks that a new turn needing up to `tokens` may start; changes nothing.
    pub fn check_turn(
        &self,
        tenant: &str,
        id: &str,
        now_ms: u64,
        tokens: u64,
    ) -> Result<SessionTurn, SessionError> {
        let s = self.live(tenant, id, now_ms);
        if let Some(s) = s
            && s.turns >= self.max_turns
        {
            return Err(SessionError::MaxTurns {
                max_turns: self.max_turns,
            });
        }
        let committed = s.map_or(0, |s| s.tokens_used + s.tokens_reserved);
        let used_ms = s.map_or(0, |s| s.time_used_ms);
        if let Some(budget) = self.token_budget
            && committed.saturating_add(tokens) > budget
        {
            return Err(SessionError::TokenBudget {
                budget,
                committed,
                requested: tokens,
            });
        }
        if let Some(budget_ms) = self.time_budget_ms
            && used_ms >= budget_ms
        {
            return Err(SessionError::TimeBudget { budget_ms, used_ms });
        }
        Ok(SessionTurn {
            affinity: s.and_then(|s| s.replica.clone()),
            tokens_remaining: self
                .token_budget
                .map(|b| b.saturating_sub(committed.saturating_add(tokens))),
            time_remaining_ms: self.time_budget_ms.map(|b| b.saturating_sub(used_ms)),
        })
    }

    /// Records an admitted turn (creating or renewing an expired session) and reserves its
    /// worst-case `tokens`.
    pub fn commit_turn(&mut self, tenant: &str, id: &str, now_ms: u64, tokens: u64) {
        if self.live(tenant, id, now_ms).is_none() {
            self.sessions.remove(&Self::key(tenant, id));
            self.evict_to_fit(now_ms);
            self.sessions.insert(
                Self::key(tenant, id),
                Session {
                    created_ms: now_ms,
                    last_used_ms: now_ms,
                    turns: 0,
                    replica: None,
                    kv_bytes: 0,
                    tokens_used: 0,
                    tokens_reserved: 0,
                    time_used_ms: 0,
                },
            );
        }
        if let Some(s) = self.sessions.get_mut(&Self::key(tenant, id)) {
            s.turns += 1;
            s.last_used_ms = now_ms;
            s.tokens_reserved += tokens;
        }
    }

    /// A turn ended: its reservation becomes what it really used (`tokens` in + out, decode
    /// time). Returns the budgets left, for the client.
    pub fn settle_turn(
        &mut self,
        tenant: &str,
        id: &str,
        reserved: u64,
        tokens: u64,
        decode_ms: u64,
    ) -> (Option<u64>, Option<u64>) {
        let Some(s) = self.sessions.get_mut(&Self::key(tenant, id)) else {
            return (None, None);
        };
        s.tokens_reserved = s.tokens_reserved.saturating_sub(reserved);
        s.tokens_used += tokens;
        s.time_used_ms += decode_ms;
        (
            self.token_budget
                .map(|b| b.saturating_sub(s.tokens_used + s.tokens_reserved)),
            self.time_budget_ms
                .map(|b| b.saturating_sub(s.time_used_ms)),
        )
    }

    /// Records where a session's turn ran, so the next turn can prefer that replica, and
    /// keeps the replica's KV residency bounded (its least recently used session goes cold).
    pub fn record_placement(&mut self, tenant: &str, id: &str, replica: &str, kv_bytes: u64) {
        let key = Self::key(tenant, id);
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let previous = s.replica.replace(replica.to_string());
        s.kv_bytes = kv_bytes;
        if let Some(prev) = previous
            && let Some(list) = self.resident.get_mut(&prev)
        {
            list.retain(|k| *k != key);
        }
        let list = self.resident.entry(replica.to_string()).or_default();
        list.push_back(key);
        while list.len() > self.kv_per_replica {
            if let Some(cold) = list.pop_front()
                && let Some(c) = self.sessions.get_mut(&cold)
            {
                c.replica = None;
                c.kv_bytes = 0;
            }
        }
    }

    /// A replica restarted or failed: every session whose KV it held is cold now
    /// (kv_warmth=false on failover).
    pub fn forget_replica(&mut self, replica: &str) {
        for key in self.resident.remove(replica).unwrap_or_default() {
            if let Some(s) = self.sessions.get_mut(&key)
                && s.replica.as_deref() == Some(replica)
            {
                s.replica = None;
                s.kv_bytes = 0;
            }
        }
    }

    pub fn get(&self, tenant: &str, id: &str, now_ms: u64) -> Option<SessionView> {
        self.live(tenant, id, now_ms).map(|s| SessionView {
            ttl_ms_remaining: s.created_ms.saturating_add(self.ttl_ms) - now_ms,
            turns: s.turns,
            kv_bytes: s.kv_bytes,
            kv_warmth: s.replica.is_some(),
            tokens_remaining: self
                .token_budget
                .map(|b| b.saturating_sub(s.tokens_used + s.tokens_reserved)),
            time_remaining_ms: self
                .time_budget_ms
                .map(|b| b.saturating_sub(s.time_used_ms)),
        })
    }

    /// Evicts a session; true when a live one existed.
    pub fn delete(&mut self, tenant: &str, id: &str, now_ms: u64) -> bool {
        let was_live = self.live(tenant, id, now_ms).is_some();
        self.sessions.remove(&Self::key(tenant, id));
        was_live
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    fn evict_to_fit(&mut self, now_ms: u64) {
        let ttl = self.ttl_ms;
        self.sessions
            .retain(|_, s| now_ms < s.created_ms.saturating_add(ttl));
        while self.sessions.len() >= self.max_sessions {
            let Some(lru) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used_ms)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.sessions.remove(&lru);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_bounded_and_ttl_expires() {
        let mut s = SessionStore::new(1000, 2, 10);
        s.commit_turn("t", "s", 0, 0);
        s.commit_turn("t", "s", 10, 0);
        assert_eq!(
            s.check_turn("t", "s", 20, 0),
            Err(SessionError::MaxTurns { max_turns: 2 })
        );
        assert_eq!(s.get("t", "s", 20).unwrap().ttl_ms_remaining, 980);
        assert!(s.get("t", "s", 1000).is_none());
        assert!(s.check_turn("t", "s", 1000, 0).is_ok());
    }

    #[test]
    fn tenants_are_isolated() {
        let mut s = SessionStore::new(1000, 8, 10);
        s.commit_turn("a", "s", 0, 0);
        assert!(s.get("b", "s", 1).is_none());
        assert!(!s.delete("b", "s", 1));
        assert!(s.get("a", "s", 1).is_some());
    }

    #[test]
    fn lru_bound_holds() {
        let mut s = SessionStore::new(10_000, 8, 2);
        s.commit_turn("t", "a", 0, 0);
        s.commit_turn("t", "b", 1, 0);
        s.commit_turn("t", "a", 2, 0);
        s.commit_turn("t", "c", 3, 0);
        assert_eq!(s.len(), 2);
        assert!(s.get("t", "b", 4).is_none());
        assert!(s.get("t", "a", 4).is_some());
    }

    #[test]
    fn token_and_time_budgets_reserve_then_settle() {
        let mut s = SessionStore::new(10_000, 8, 10).with_budgets(Some(100), Some(50));
        let t = s.check_turn("t", "s", 0, 60).unwrap();
        assert_eq!(t.tokens_remaining, Some(40));
        s.commit_turn("t", "s", 0, 60);
        // A concurrent turn cannot overrun the budget with the first one's reservation.
        assert!(matches!(
            s.check_turn("t", "s", 1, 60),
            Err(SessionError::TokenBudget { committed: 60, .. })
        ));
        assert_eq!(s.settle_turn("t", "s", 60, 20, 50), (Some(80), Some(0)));
        assert!(matches!(
            s.check_turn("t", "s", 2, 10),
            Err(SessionError::TimeBudget { used_ms: 50, .. })
        ));
        assert_eq!(s.get("t", "s", 2).unwrap().tokens_remaining, Some(80));
    }

    #[test]
    fn kv_residency_is_bounded_and_failover_goes_cold() {
        let mut s = SessionStore::new(10_000, 8, 10).with_kv_residency(2);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            s.commit_turn("t", id, i as u64, 0);
            s.record_placement("t", id, "r1", 1);
        }
        assert!(!s.get("t", "a", 5).unwrap().kv_warmth, "LRU went cold");
        assert!(s.get("t", "c", 5).unwrap().kv_warmth);
        // Moving a session frees its old residency.
        s.record_placement("t", "b", "r2", 1);
        s.commit_turn("t", "d", 6, 0);
        s.record_placement("t", "d", "r1", 1);
        assert!(s.get("t", "c", 7).unwrap().kv_warmth);
        s.forget_replica("r1");
        assert!(!s.get("t", "c", 7).unwrap().kv_warmth);
        assert_eq!(s.check_turn("t", "c", 7, 0).unwrap().affinity, None);
        assert!(s.get("t", "b", 7).unwrap().kv_warmth);
    }
}
