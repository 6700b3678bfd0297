//! The replay store's books: which finished tasks are kept for replay, how many bytes their
//! logs hold, and which were evicted (so a late reader gets 410 TASK_EVICTED, not a hang or
//! a 404). Pure bookkeeping: the caller drops evicted tasks from the task table.
//!
//! Limits: a byte budget and a count overall, a count per tenant, and `task_retention_ms`;
//! whichever binds first evicts the oldest finished task (of that tenant, for the per-tenant
//! count). Everything here is O(log n) per finished task.

use std::collections::{BTreeMap, HashMap, VecDeque};

use config_schema::ServerConfig;

/// Why a finished task left the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// Over the byte budget.
    Bytes,
    /// Over the overall count.
    Tasks,
    /// Over its tenant's count.
    TenantTasks,
    /// Older than `task_retention_ms` (not an eviction: the task is simply forgotten).
    Expired,
}

impl Gone {
    pub fn as_str(self) -> &'static str {
        match self {
            Gone::Bytes => "bytes",
            Gone::Tasks => "tasks",
            Gone::TenantTasks => "tenant_tasks",
            Gone::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub bytes: u64,
    pub tasks: u64,
    pub tasks_per_tenant: u64,
    pub retention_ms: u64,
}

impl Limits {
    /// From the config; an unset byte budget is derived from the cgroup memory limit.
    pub fn from_config(s: &ServerConfig) -> Self {
        Limits {
            bytes: s
                .task_log_budget_bytes
                .unwrap_or_else(|| derived_budget(cgroup_memory_limit())),
            tasks: s.task_log_max_tasks,
            tasks_per_tenant: s.task_log_max_tasks_per_tenant,
            retention_ms: s.task_retention_ms,
        }
    }
}

/// 1/8 of the memory limit, within [16 MiB, 1 GiB]; 256 MiB without a limit.
pub fn derived_budget(limit: Option<u64>) -> u64 {
    const MIB: u64 = 1 << 20;
    match limit {
        Some(l) => (l / 8).clamp(16 * MIB, 1024 * MIB),
        None => 256 * MIB,
    }
}

/// The memory limit of this process's cgroup, if any: the smallest of `memory.max` /
/// `memory.high` (cgroup v2, what systemd's `MemoryMax=`/`MemoryHigh=` set), else
/// `memory.limit_in_bytes` (v1; "unlimited" there is a huge number, ignored).
pub fn cgroup_memory_limit() -> Option<u64> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let root = std::path::Path::new("/sys/fs/cgroup");
    let read = |dir: &std::path::Path, files: &[&str]| {
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .filter(|v| *v < 1 << 60)
            .min()
    };
    let v2 = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .and_then(|rel| {
            read(
                &root.join(rel.trim_start_matches('/')),
                &["memory.max", "memory.high"],
            )
        });
    v2.or_else(|| {
        let rel = cg.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrl, path) = (parts.next()?, parts.next()?, parts.next()?);
            ctrl.split(',').any(|c| c == "memory").then_some(path)
        })?;
        read(
            &root.join("memory").join(rel.trim_start_matches('/')),
            &["memory.limit_in_bytes"],
        )
    })
}

#[derive(Debug)]
struct Kept {
    id: String,
    tenant: String,
    bytes: u64,
    at_ms: u64,
}

#[derive(Debug)]
pub struct RetentionBook {
    limits: Limits,
    /// By admission order into the store (oldest first).
    kept: BTreeMap<u64, Kept>,
    per_tenant: HashMap<String, VecDeque<u64>>,
    next_seq: u64,
    bytes: u64,
    /// Evicted ids → tenant, the oldest dropped first (at most `limits.tasks` of them).
    tombstones: HashMap<String, String>,
    tombstone_order: VecDeque<String>,
}

impl RetentionBook {
    pub fn new(limits: Limits) -> Self {
        RetentionBook {
            limits,
            kept: BTreeMap::new(),
            per_tenant: HashMap::new(),
            next_seq: 0,
            bytes: 0,
            tombstones: HashMap::new(),
            tombstone_order: VecDeque::new(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Bytes of all kept logs.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Keeps a finished task's log of `bytes`, then evicts until within the limits. Returns
    /// the ids that left (possibly including this one, if it alone is over the budget).
    pub fn keep(
        &mut self,
        id: String,
        tenant: String,
        bytes: u64,
        now_ms: u64,
    ) -> Vec<(String, Gone)> {
        let mut gone = self.expire(now_ms);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.per_tenant
            .entry(tenant.clone())
            .or_default()
            .push_back(seq);
        self.kept.insert(
            seq,
            Kept {
                id,
                tenant: tenant.clone(),
                bytes,
                at_ms: now_ms,
            },
        );
        self.bytes += bytes;
        while self
            .per_tenant
            .get(&tenant)
            .is_some_and(|q| q.len() as u64 > self.limits.tasks_per_tenant)
        {
            let Some(s) = self
                .per_tenant
                .get(&tenant)
                .and_then(|q| q.front().copied())
            else {
                break;
            };
            gone.extend(self.remove(s, Gone::TenantTasks));
        }
        while self.kept.len() as u64 > self.limits.tasks || self.bytes > self.limits.bytes {
            let why = if self.kept.len() as u64 > self.limits.tasks {
                Gone::Tasks
            } else {
                Gone::Bytes
            };
            let Some(s) = self.kept.keys().next().copied() else {
                break;
            };
            gone.extend(self.remove(s, why));
        }
        gone
    }

    /// When the oldest kept log's retention period ends (None: nothing kept).
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.kept
            .first_key_value()
            .map(|(_, k)| k.at_ms.saturating_add(self.limits.retention_ms))
    }

    /// Forgets tasks older than the retention period.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(String, Gone)> {
        let mut gone = Vec::new();
        while let Some((&s, k)) = self.kept.first_key_value() {
            if k.at_ms.saturating_add(self.limits.retention_ms) > now_ms {
                break;
            }
            gone.extend(self.remove(s, Gone::Expired));
        }
        gone
    }

    fn remove(&mut self, seq: u64, why: Gone) -> Option<(String, Gone)> {
        let k = self.kept.remove(&seq)?;
        self.bytes -= k.bytes;
        if let Some(q) = self.per_tenant.get_mut(&k.tenant) {
            if q.front() == Some(&seq) {
                q.pop_front();
            } else {
                q.retain(|s| *s != seq);
            }
            if q.is_empty() {
                self.per_tenant.remove(&k.tenant);
            }
        }
        if why != Gone::Expired {
            self.tombstone(k.id.clone(), k.tenant);
        }
        Some((k.id, why))
    }

    fn tombstone(&mut self, id: String, tenant: String) {
        if self.tombstones.insert(id.clone(), tenant).is_none() {
            self.tombstone_order.push_back(id);
        }
        while self.tombstone_order.len() as u64 > self.limits.tasks {
            if let Some(old) = self.tombstone_order.pop_front() {
                self.tombstones.remove(&old);
            }
        }
    }

    /// Whether `id` of `tenant` was evicted (another tenant's id reads as never seen).
    pub fn was_evicted(&self, id: &str, tenant: &str) -> bool {
        self.tombstones.get(id).is_some_and(|t| t == tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(bytes: u64, tasks: u64, per_tenant: u64) -> RetentionBook {
        RetentionBook::new(Limits {
            bytes,
            tasks,
            tasks_per_tenant: per_tenant,
            retention_ms: 1000,
        })
    }

    fn ids(v: &[(String, Gone)]) -> Vec<(&str, Gone)> {
        v.iter().map(|(i, g)| (i.as_str(), *g)).collect()
    }

    #[test]
    fn the_byte_budget_evicts_oldest_first() {
        let mut b = book(250, 100, 100);
        assert!(b.keep("a".into(), "x".into(), 100, 0).is_empty());
        assert!(b.keep("b".into(), "y".into(), 100, 1).is_empty());
        let gone = b.keep("c".into(), "x".into(), 100, 2);
        assert_eq!(ids(&gone), [("a", Gone::Bytes)]);
        assert_eq!(b.bytes(), 200);
        assert!(b.was_evicted("a", "x"));
        assert!(!b.was_evicted("a", "y"), "no oracle across tenants");
        assert!(!b.was_evicted("b", "y"));
    }

    #[test]
    fn counts_bind_overall_and_per_tenant() {
        let mut b = book(u64::MAX, 3, 2);
        b.keep("x1".into(), "x".into(), 1, 0);
        b.keep("y1".into(), "y".into(), 1, 0);
        b.keep("x2".into(), "x".into(), 1, 0);
        // x's third evicts x's oldest, not y's.
        assert_eq!(
            ids(&b.keep("x3".into(), "x".into(), 1, 0)),
            [("x1", Gone::TenantTasks)]
        );
        // Overall count 3: the next one evicts the oldest of all (y1).
        assert_eq!(
            ids(&b.keep("z1".into(), "z".into(), 1, 0)),
            [("y1", Gone::Tasks)]
        );
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn old_tasks_expire_without_a_tombstone() {
        let mut b = book(u64::MAX, 10, 10);
        b.keep("a".into(), "x".into(), 5, 0);
        b.keep("b".into(), "x".into(), 5, 500);
        assert_eq!(ids(&b.expire(1000)), [("a", Gone::Expired)]);
        assert!(!b.was_evicted("a", "x"));
        assert_eq!(b.bytes(), 5);
        assert_eq!(ids(&b.expire(1500)), [("b", Gone::Expired)]);
        assert!(b.is_empty());
    }

    #[test]
    fn a_log_over_the_whole_budget_is_evicted_at_once() {
        let mut b = book(10, 10, 10);
        assert_eq!(
            ids(&b.keep("big".into(), "x".into(), 11, 0)),
            [("big", Gone::Bytes)]
        );
        assert_eq!(b.bytes(), 0);
    }

    #[test]
    fn tombstones_are_bounded() {
        let mut b = book(u64::MAX, 2, 2);
        for i in 0..10 {
            b.keep(format!("t{i}"), "x".into(), 1, 0);
        }
        assert!(b.was_evicted("t7", "x"));
        assert!(!b.was_evicted("t0", "x"), "oldest tombstone dropped");
        assert!(b.tombstones.len() <= 2 && b.tombstone_order.len() <= 2);
    }

    #[test]
    fn budgets_derive_from_the_memory_limit() {
        assert_eq!(derived_budget(None), 256 << 20);
        assert_eq!(derived_budget(Some(1 << 30)), 128 << 20);
        assert_eq!(derived_budget(Some(1 << 20)), 16 << 20);
        assert_eq!(derived_budget(Some(1 << 40)), 1 << 30);
    }
}
