//! Short-lived sessions (ORCH-3021, 3022, 3099): bounded lifetime, bounded turns, bounded
//! count (least recently used evicted), namespaced by tenant so one tenant can never see or
//! touch another's session even when ids collide.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    created_ms: u64,
    last_used_ms: u64,
    turns: u32,
    replica: Option<String>,
    kv_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub ttl_ms_remaining: u64,
    pub turns: u32,
    pub kv_bytes: u64,
    /// Whether the session's KV cache is believed resident on a replica.
    pub kv_warmth: bool,
}

/// What the next turn of a session may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTurn {
    /// Replica holding the session's KV cache, for affinity.
    pub affinity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    MaxTurns { max_turns: u32 },
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::MaxTurns { max_turns } => {
                write!(f, "session reached its limit of {max_turns} turns")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionStore {
    sessions: HashMap<(String, String), Session>,
    ttl_ms: u64,
    max_turns: u32,
    max_sessions: usize,
}

impl SessionStore {
    pub fn new(ttl_ms: u64, max_turns: u32, max_sessions: u32) -> Self {
        SessionStore {
            sessions: HashMap::new(),
            ttl_ms,
            max_turns,
            max_sessions: max_sessions.max(1) as usize,
        }
    }

    fn key(tenant: &str, id: &str) -> (String, String) {
        (tenant.to_string(), id.to_string())
    }

    fn live<'a>(&'a self, tenant: &str, id: &str, now_ms: u64) -> Option<&'a Session> {
        self.sessions
            .get(&Self::key(tenant, id))
            .filter(|s| now_ms < s.created_ms.saturating_add(self.ttl_ms))
    }

    /// Checks that a new turn may start; changes nothing.
    pub fn check_turn(
        &self,
        tenant: &str,
        id: &str,
        now_ms: u64,
    ) -> Result<SessionTurn, SessionError> {
        match self.live(tenant, id, now_ms) {
            Some(s) if s.turns >= self.max_turns => Err(SessionError::MaxTurns {
                max_turns: self.max_turns,
            }),
            Some(s) => Ok(SessionTurn {
                affinity: s.replica.clone(),
            }),
            None => Ok(SessionTurn { affinity: None }),
        }
    }

    /// Records an admitted turn (creating or renewing an expired session).
    pub fn commit_turn(&mut self, tenant: &str, id: &str, now_ms: u64) {
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
                },
            );
        }
        if let Some(s) = self.sessions.get_mut(&Self::key(tenant, id)) {
            s.turns += 1;
            s.last_used_ms = now_ms;
        }
    }

    /// Records where a session's turn ran, so the next turn can prefer that replica.
    pub fn record_placement(&mut self, tenant: &str, id: &str, replica: &str, kv_bytes: u64) {
        if let Some(s) = self.sessions.get_mut(&Self::key(tenant, id)) {
            s.replica = Some(replica.to_string());
            s.kv_bytes = kv_bytes;
        }
    }

    pub fn get(&self, tenant: &str, id: &str, now_ms: u64) -> Option<SessionView> {
        self.live(tenant, id, now_ms).map(|s| SessionView {
            ttl_ms_remaining: s.created_ms.saturating_add(self.ttl_ms) - now_ms,
            turns: s.turns,
            kv_bytes: s.kv_bytes,
            kv_warmth: s.replica.is_some(),
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
        s.commit_turn("t", "s", 0);
        s.commit_turn("t", "s", 10);
        assert_eq!(
            s.check_turn("t", "s", 20),
            Err(SessionError::MaxTurns { max_turns: 2 })
        );
        assert_eq!(s.get("t", "s", 20).unwrap().ttl_ms_remaining, 980);
        assert!(s.get("t", "s", 1000).is_none());
        assert!(s.check_turn("t", "s", 1000).is_ok());
    }

    #[test]
    fn tenants_are_isolated() {
        let mut s = SessionStore::new(1000, 8, 10);
        s.commit_turn("a", "s", 0);
        assert!(s.get("b", "s", 1).is_none());
        assert!(!s.delete("b", "s", 1));
        assert!(s.get("a", "s", 1).is_some());
    }

    #[test]
    fn lru_bound_holds() {
        let mut s = SessionStore::new(10_000, 8, 2);
        s.commit_turn("t", "a", 0);
        s.commit_turn("t", "b", 1);
        s.commit_turn("t", "a", 2);
        s.commit_turn("t", "c", 3);
        assert_eq!(s.len(), 2);
        assert!(s.get("t", "b", 4).is_none());
        assert!(s.get("t", "a", 4).is_some());
    }
}
