//! Bounded per-pool queue with weighted fair queuing across (tenant, priority) flows and
//! earliest-deadline-first for work about to miss its deadline (ORCH-3004, 3005, 3075–3077).
//!
//! **Flows.** Every (tenant, priority) pair is a flow with its own FIFO: order within a flow is
//! never changed, so a tenant's interactive tasks start in the order they arrived.
//!
//! **Fair share: weighted fair queuing.** A flow's weight is `priority weight × tenant weight`
//! (defaults 8 : 1 and 1). Each flow carries a virtual start time `pass`; its head task's
//! virtual finish is `pass + STRIDE / weight`. The backlogged flow with the earliest virtual
//! finish is served next and its pass advances by `STRIDE / weight`. Over any stretch where flows stay
//! backlogged, each gets a share of dispatches proportional to its weight, within one dispatch
//! per flow — which also bounds how long batch work can wait under a continuous interactive
//! load (no starvation). A flow that was idle re-enters at the current virtual time, so it
//! cannot bank credit while idle. The unit of service is one dispatch (one task), not tokens:
//! that is what the admission share metric reports.
//!
//! **Deadlines: EDF among urgent heads.** A flow head whose absolute deadline falls within the
//! `edf_horizon_ms` of now is served before fair-share order, earliest deadline first, as long
//! as its flow is not already ahead of its fair share by more than one task. Its flow is
//! charged as usual, so deadlines move work earlier in time without buying a tenant a bigger
//! share (property-tested in `tests/scheduling.rs`).
//!
//! **Full pool.** Capacity is shared by all flows. reject | drop-lru (evict the oldest task of
//! the same or a lower priority, lowest priority first) | shed-low-priority (evict the newest
//! task of a strictly lower priority: soft preemption of waiting work).

use std::collections::{BTreeMap, HashMap, VecDeque};

use api_types::Priority;

/// What to do when a task arrives at a full pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    Reject,
    /// Evict the oldest task of the same or a lower priority (lowest priority first).
    DropLru,
    /// Evict the newest task of a strictly lower priority; reject if there is none.
    ShedLowPriority,
}

/// A fair-queuing flow: one tenant's tasks of one priority.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub priority: Priority,
    pub tenant: String,
}

impl FlowKey {
    pub fn new(tenant: impl Into<String>, priority: Priority) -> Self {
        FlowKey {
            priority,
            tenant: tenant.into(),
        }
    }
}

/// Weights of the fair scheduler. A flow's weight is the product of its priority's and its
/// tenant's weight; unknown tenants get `default_tenant`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weights {
    pub priority: [u32; 2],
    pub tenants: BTreeMap<String, u32>,
    pub default_tenant: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            priority: [8, 1],
            tenants: BTreeMap::new(),
            default_tenant: 1,
        }
    }
}

impl Weights {
    pub fn flow_weight(&self, key: &FlowKey) -> u64 {
        let p = u64::from(self.priority[key.priority.index()].max(1));
        let t = u64::from(
            self.tenants
                .get(&key.tenant)
                .copied()
                .unwrap_or(self.default_tenant)
                .max(1),
        );
        p * t
    }
}

/// Pass units per dispatch of a weight-1 flow. u128 passes cannot overflow in practice
/// (2^64 dispatches).
const STRIDE: u128 = 1 << 64;

#[derive(Debug, Clone)]
struct Entry<T> {
    id: String,
    /// Arrival order across the whole queue (drop-lru and shed pick by it).
    seq: u64,
    deadline_at_ms: Option<u64>,
    item: T,
}

#[derive(Debug, Clone)]
struct Flow<T> {
    key: FlowKey,
    stride: u128,
    pass: u128,
    /// Boxed: a deep queue grows this ring by doubling, and with the items inline (an
    /// orchestrator's queued request is ~400 bytes) half-empty capacity and the freed older
    /// rings cost more than the items themselves (issue 16: memory per queued task).
    entries: VecDeque<Box<Entry<T>>>,
}

/// Result of [`PoolQueue::enqueue`].
#[derive(Debug, PartialEq, Eq)]
pub enum EnqueueOutcome<T> {
    /// Queued. `position` counts the tasks that would start before it if nothing else
    /// arrived. `evicted` is a task the full policy removed to make room; the caller must
    /// fail it with a typed error.
    Admitted {
        position: u32,
        evicted: Option<(String, T)>,
    },
    /// Refused; the item is handed back untouched.
    Rejected(T),
}

/// A task taken out of the queue for dispatch, with what [`PoolQueue::requeue_front`] needs
/// to put it back exactly where it was.
#[derive(Debug, PartialEq, Eq)]
pub struct Dispatched<T> {
    pub id: String,
    pub flow: FlowKey,
    pub deadline_at_ms: Option<u64>,
    /// True when it was chosen by EDF ahead of fair-share order.
    pub by_deadline: bool,
    pub item: T,
    seq: u64,
}

impl<T> Dispatched<T> {
    /// Separates the queue position (kept by the caller for a possible requeue) from the item.
    pub fn split(self) -> (Dispatched<()>, T) {
        (
            Dispatched {
                id: self.id,
                flow: self.flow,
                deadline_at_ms: self.deadline_at_ms,
                by_deadline: self.by_deadline,
                item: (),
                seq: self.seq,
            },
            self.item,
        )
    }
}

impl Dispatched<()> {
    /// Re-attaches an item to a position taken by [`Dispatched::split`].
    pub fn with<T>(self, item: T) -> Dispatched<T> {
        Dispatched {
            id: self.id,
            flow: self.flow,
            deadline_at_ms: self.deadline_at_ms,
            by_deadline: self.by_deadline,
            item,
            seq: self.seq,
        }
    }
}

/// Lightweight view of a flow for choosing the next one (shared by the real pick and the
/// what-if simulation behind queue positions).
#[derive(Clone, Copy)]
struct Candidate {
    flow: usize,
    pass: u128,
    stride: u128,
    priority: usize,
    head_seq: u64,
    head_deadline: Option<u64>,
}

/// A task that is not queued (yet), for [`PoolQueue::position_if_enqueued`].
#[derive(Clone, Copy)]
struct Phantom {
    flow: usize,
    /// Its index in the flow: behind every queued entry.
    index: usize,
    pass: u128,
    stride: u128,
    priority: usize,
    deadline_at_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct PoolQueue<T> {
    flows: Vec<Flow<T>>,
    by_key: BTreeMap<FlowKey, usize>,
    /// Which flow a queued id is in.
    where_is: HashMap<String, usize>,
    weights: Weights,
    /// Lowest pass among backlogged flows at the last dispatch.
    vtime: u128,
    next_seq: u64,
    depth: [usize; 2],
    capacity: usize,
    policy: FullPolicy,
    edf_horizon_ms: u64,
}

impl<T> PoolQueue<T> {
    pub fn new(capacity: u32, policy: FullPolicy, weights: Weights) -> Self {
        PoolQueue {
            flows: Vec::new(),
            by_key: BTreeMap::new(),
            where_is: HashMap::new(),
            weights,
            vtime: 0,
            next_seq: 0,
            depth: [0; 2],
            capacity: capacity.max(1) as usize,
            policy,
            edf_horizon_ms: 0,
        }
    }

    pub fn policy(&self) -> FullPolicy {
        self.policy
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.where_is.len()
    }

    pub fn is_empty(&self) -> bool {
        self.where_is.is_empty()
    }

    pub fn depth(&self, p: Priority) -> usize {
        self.depth[p.index()]
    }

    /// Tasks queued by one tenant (all priorities).
    pub fn tenant_depth(&self, tenant: &str) -> usize {
        Priority::ALL
            .iter()
            .filter_map(|p| self.by_key.get(&FlowKey::new(tenant, *p)))
            .map(|&f| self.flows[f].entries.len())
            .sum()
    }

    /// Tasks queued per tenant (all priorities), for tenants with at least one.
    pub fn depth_by_tenant(&self) -> BTreeMap<&str, usize> {
        let mut m = BTreeMap::new();
        for f in self.flows.iter().filter(|f| !f.entries.is_empty()) {
            *m.entry(f.key.tenant.as_str()).or_insert(0) += f.entries.len();
        }
        m
    }

    /// Tasks queued in one flow.
    pub fn flow_depth(&self, key: &FlowKey) -> usize {
        self.by_key
            .get(key)
            .map_or(0, |&f| self.flows[f].entries.len())
    }

    /// A queued task's item, to update it in place.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        let f = *self.where_is.get(id)?;
        self.flows[f]
            .entries
            .iter_mut()
            .find(|e| e.id == id)
            .map(|e| &mut e.item)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.where_is.contains_key(id)
    }

    /// How far ahead of now a deadline must be for its task to jump fair-share order (the
    /// caller sets it from measured service times: a task that would otherwise wait about one
    /// service time more would miss).
    pub fn set_edf_horizon_ms(&mut self, ms: u64) {
        self.edf_horizon_ms = ms;
    }

    pub fn edf_horizon_ms(&self) -> u64 {
        self.edf_horizon_ms
    }

    fn flow_index(&mut self, key: &FlowKey) -> usize {
        if let Some(&i) = self.by_key.get(key) {
            return i;
        }
        let weight = self.weights.flow_weight(key);
        self.flows.push(Flow {
            key: key.clone(),
            stride: STRIDE / u128::from(weight),
            pass: 0,
            entries: VecDeque::new(),
        });
        let i = self.flows.len() - 1;
        self.by_key.insert(key.clone(), i);
        i
    }

    /// Queues a task at the tail of its flow. O(1) amortized plus O(flows) when the policy
    /// evicts, plus the position computation (O(queue length × flows)).
    pub fn enqueue(
        &mut self,
        id: String,
        flow: FlowKey,
        deadline_at_ms: Option<u64>,
        item: T,
        now_ms: u64,
    ) -> EnqueueOutcome<T> {
        let mut evicted = None;
        if self.len() >= self.capacity {
            let victim = match self.policy {
                FullPolicy::Reject => None,
                FullPolicy::DropLru => self.victim(|p| p >= flow.priority, false),
                FullPolicy::ShedLowPriority => self.victim(|p| p > flow.priority, true),
            };
            match victim {
                Some(f) => {
                    let e = if self.policy == FullPolicy::DropLru {
                        self.flows[f].entries.pop_front()
                    } else {
                        self.flows[f].entries.pop_back()
                    };
                    if let Some(e) = e {
                        self.forget(f, &e.id);
                        evicted = Some((e.id, e.item));
                    }
                }
                None => return EnqueueOutcome::Rejected(item),
            }
        }
        let f = self.flow_index(&flow);
        let fl = &mut self.flows[f];
        if fl.entries.is_empty() {
            // Re-entering flows start at the current virtual time: no credit for idling.
            fl.pass = fl.pass.max(self.vtime);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        fl.entries.push_back(Box::new(Entry {
            id: id.clone(),
            seq,
            deadline_at_ms,
            item,
        }));
        self.depth[flow.priority.index()] += 1;
        self.where_is.insert(id.clone(), f);
        let position = self.position_of(&id, now_ms).unwrap_or(0);
        EnqueueOutcome::Admitted { position, evicted }
    }

    /// The flow to evict from: among priorities allowed by `eligible`, the lowest priority
    /// first; within it the oldest head (drop-lru) or the newest tail (shed).
    fn victim(&self, eligible: impl Fn(Priority) -> bool, newest: bool) -> Option<usize> {
        for p in Priority::ALL.iter().rev().filter(|p| eligible(**p)) {
            let best = self
                .flows
                .iter()
                .enumerate()
                .filter(|(_, fl)| fl.key.priority == *p)
                .filter_map(|(i, fl)| {
                    let e = if newest {
                        fl.entries.back()
                    } else {
                        fl.entries.front()
                    };
                    e.map(|e| (i, e.seq))
                })
                .reduce(|a, b| if (b.1 > a.1) == newest { b } else { a });
            if let Some((i, _)) = best {
                return Some(i);
            }
        }
        None
    }

    fn forget(&mut self, flow: usize, id: &str) {
        self.where_is.remove(id);
        self.depth[self.flows[flow].key.priority.index()] -= 1;
    }

    /// The next flow to serve among `cands`: an urgent deadline first (EDF), else the lowest
    /// virtual finish time (pass + stride, as in WFQ: a heavy flow's next task finishes
    /// sooner, so interactive work goes ahead of batch work that has waited as long); ties go
    /// to the higher priority, then to the older head. Takes an iterator so the
    /// what-if simulation behind queue positions allocates nothing per step.
    fn choose<I: Iterator<Item = Candidate> + Clone>(
        &self,
        cands: I,
        now_ms: u64,
    ) -> Option<usize> {
        let horizon = now_ms.saturating_add(self.edf_horizon_ms);
        // A flow may jump the fair order for a deadline only while it is not ahead of its
        // share by more than one task (as in WF²Q's eligibility): deadlines reorder work, they
        // do not buy a tenant more than its weight under sustained overload.
        let min_pass = cands.clone().map(|c| c.pass).min()?;
        let urgent = cands
            .clone()
            .filter(|c| c.head_deadline.is_some_and(|d| d <= horizon))
            .filter(|c| c.pass <= min_pass + c.stride)
            .min_by_key(|c| (c.head_deadline, c.head_seq));
        if let Some(c) = urgent {
            return Some(c.flow);
        }
        cands
            .min_by_key(|c| (c.pass + c.stride, c.priority, c.head_seq))
            .map(|c| c.flow)
    }

    fn candidates(&self) -> impl Iterator<Item = Candidate> + Clone + '_ {
        self.flows.iter().enumerate().filter_map(|(i, fl)| {
            fl.entries.front().map(|e| Candidate {
                flow: i,
                pass: fl.pass,
                stride: fl.stride,
                priority: fl.key.priority.index(),
                head_seq: e.seq,
                head_deadline: e.deadline_at_ms,
            })
        })
    }

    fn is_urgent(&self, deadline: Option<u64>, now_ms: u64) -> bool {
        deadline.is_some_and(|d| d <= now_ms.saturating_add(self.edf_horizon_ms))
    }

    /// The task that `pop_next(now_ms)` would return, without removing it.
    pub fn peek_next(&self, now_ms: u64) -> Option<(&str, &T)> {
        self.peek_next_where(now_ms, |_| true)
    }

    /// [`Self::peek_next`] among the flows `allowed` accepts (a placement policy may defer a
    /// flow's head; the others must still be served).
    pub fn peek_next_where(
        &self,
        now_ms: u64,
        allowed: impl Fn(&FlowKey) -> bool,
    ) -> Option<(&str, &T)> {
        let cands = self
            .candidates()
            .filter(|c| allowed(&self.flows[c.flow].key));
        let f = self.choose(cands, now_ms)?;
        self.flows[f]
            .entries
            .front()
            .map(|e| (e.id.as_str(), &e.item))
    }

    /// Takes the next task in fair-share/EDF order and charges its flow.
    pub fn pop_next(&mut self, now_ms: u64) -> Option<Dispatched<T>> {
        self.pop_next_where(now_ms, |_| true)
    }

    /// [`Self::pop_next`] among the flows `allowed` accepts.
    pub fn pop_next_where(
        &mut self,
        now_ms: u64,
        allowed: impl Fn(&FlowKey) -> bool,
    ) -> Option<Dispatched<T>> {
        let cands = self
            .candidates()
            .filter(|c| allowed(&self.flows[c.flow].key));
        let f = self.choose(cands, now_ms)?;
        let min_pass = self.candidates().map(|c| c.pass).min().unwrap_or(0);
        self.vtime = self.vtime.max(min_pass);
        let fl = &mut self.flows[f];
        let e = fl.entries.pop_front()?;
        fl.pass += fl.stride;
        let key = fl.key.clone();
        self.forget(f, &e.id);
        Some(Dispatched {
            by_deadline: self.is_urgent(e.deadline_at_ms, now_ms),
            id: e.id,
            flow: key,
            deadline_at_ms: e.deadline_at_ms,
            item: e.item,
            seq: e.seq,
        })
    }

    /// Puts a dispatched task back at the head of its flow and refunds the charge (its replica
    /// failed before the task started). It was admitted once, so capacity is not checked
    /// again: a requeue may briefly hold the pool one over capacity rather than lose admitted
    /// work.
    pub fn requeue_front(&mut self, d: Dispatched<T>) {
        let f = self.flow_index(&d.flow);
        let fl = &mut self.flows[f];
        fl.pass = fl.pass.saturating_sub(fl.stride).max(self.vtime);
        fl.entries.push_front(Box::new(Entry {
            id: d.id.clone(),
            seq: d.seq,
            deadline_at_ms: d.deadline_at_ms,
            item: d.item,
        }));
        self.depth[d.flow.priority.index()] += 1;
        self.where_is.insert(d.id, f);
    }

    /// Removes a queued task (cancel). O(n) in its flow.
    pub fn remove(&mut self, id: &str) -> Option<T> {
        let f = *self.where_is.get(id)?;
        let i = self.flows[f].entries.iter().position(|e| e.id == id)?;
        let e = self.flows[f].entries.remove(i)?;
        self.forget(f, id);
        Some(e.item)
    }

    /// Tasks that would start before `id` if nothing else arrived: a what-if run of the
    /// scheduler over the real queue. O(position × flows).
    pub fn position_of(&self, id: &str, now_ms: u64) -> Option<u32> {
        let target = *self.where_is.get(id)?;
        let index = self.flows[target].entries.iter().position(|e| e.id == id)?;
        self.simulate(target, index, None, now_ms)
    }

    /// The position a task of `flow` with `deadline_at_ms` would get if it were enqueued now,
    /// without enqueueing it: what admission uses to predict its start (and check its
    /// deadline) before committing to anything.
    pub fn position_if_enqueued(
        &self,
        flow: &FlowKey,
        deadline_at_ms: Option<u64>,
        now_ms: u64,
    ) -> u32 {
        let (target, index, pass, stride) = match self.by_key.get(flow) {
            Some(&f) => {
                let fl = &self.flows[f];
                let pass = if fl.entries.is_empty() {
                    fl.pass.max(self.vtime)
                } else {
                    fl.pass
                };
                (f, fl.entries.len(), pass, fl.stride)
            }
            None => (
                self.flows.len(),
                0,
                self.vtime,
                STRIDE / u128::from(self.weights.flow_weight(flow)),
            ),
        };
        let phantom = Phantom {
            flow: target,
            index,
            pass,
            stride,
            priority: flow.priority.index(),
            deadline_at_ms,
        };
        self.simulate(target, index, Some(phantom), now_ms)
            .unwrap_or(self.len() as u32)
    }

    /// What-if run of the scheduler over the real queue (plus an optional phantom task at the
    /// tail of its flow): how many tasks start before entry `index` of flow `target`.
    /// O(position × flows), no allocation per step.
    fn simulate(
        &self,
        target: usize,
        index: usize,
        phantom: Option<Phantom>,
        now_ms: u64,
    ) -> Option<u32> {
        // One backlogged flow (a single tenant and priority; the deep-queue case): only its
        // head is ever a candidate, so it runs FIFO and `index` entries start first. The
        // step-by-step run below would cost O(queue depth) per admission under the lock.
        if self
            .flows
            .iter()
            .enumerate()
            .all(|(i, f)| i == target || f.entries.is_empty())
        {
            return Some(index as u32);
        }
        let n = self.flows.len() + usize::from(phantom.is_some_and(|p| p.flow == self.flows.len()));
        let mut cursor = vec![0usize; n];
        let mut pass: Vec<u128> = self.flows.iter().map(|f| f.pass).collect();
        pass.resize(n, 0);
        if let Some(p) = phantom {
            pass[p.flow] = p.pass;
        }
        let mut ahead = 0u32;
        loop {
            let real = self.flows.iter().enumerate().filter_map(|(i, fl)| {
                fl.entries.get(cursor[i]).map(|e| Candidate {
                    flow: i,
                    pass: pass[i],
                    stride: fl.stride,
                    priority: fl.key.priority.index(),
                    head_seq: e.seq,
                    head_deadline: e.deadline_at_ms,
                })
            });
            // The phantom is its flow's head once the real entries ahead of it have gone.
            let ghost = phantom
                .filter(|p| cursor[p.flow] == p.index)
                .map(|p| Candidate {
                    flow: p.flow,
                    pass: pass[p.flow],
                    stride: p.stride,
                    priority: p.priority,
                    head_seq: self.next_seq,
                    head_deadline: p.deadline_at_ms,
                });
            let f = self.choose(real.chain(ghost), now_ms)?;
            if f == target && cursor[f] == index {
                return Some(ahead);
            }
            let stride = self
                .flows
                .get(f)
                .map_or_else(|| phantom.map_or(0, |p| p.stride), |fl| fl.stride);
            cursor[f] += 1;
            pass[f] += stride;
            ahead += 1;
        }
    }

    /// Removes every queued task for which `expired` says so (e.g. waited too long, deadline
    /// passed), keeping the order of the rest. O(n); callers sweep periodically.
    pub fn remove_where(&mut self, mut expired: impl FnMut(&T) -> bool) -> Vec<(String, T)> {
        let mut out = Vec::new();
        for f in 0..self.flows.len() {
            let lane = std::mem::take(&mut self.flows[f].entries);
            let mut keep = VecDeque::with_capacity(lane.len());
            for e in lane {
                if expired(&e.item) {
                    out.push((e.id, e.item));
                } else {
                    keep.push_back(e);
                }
            }
            self.flows[f].entries = keep;
        }
        for (id, _) in &out {
            if let Some(f) = self.where_is.get(id).copied() {
                self.forget(f, id);
            }
        }
        out
    }

    /// Queued ids, flow by flow (not in dispatch order: see [`Self::dispatch_order`]).
    pub fn ids(&self) -> Vec<&str> {
        self.flows
            .iter()
            .flat_map(|f| f.entries.iter().map(|e| e.id.as_str()))
            .collect()
    }

    /// Queued ids in the order they would start if nothing else arrived.
    pub fn dispatch_order(&self, now_ms: u64) -> Vec<&str> {
        let mut sim: Vec<(u32, &str)> = self
            .ids()
            .into_iter()
            .filter_map(|id| self.position_of(id, now_ms).map(|p| (p, id)))
            .collect();
        sim.sort();
        sim.into_iter().map(|(_, id)| id).collect()
    }

    /// Items of queued tasks (for snapshots).
    pub fn items(&self) -> impl Iterator<Item = &T> {
        self.flows
            .iter()
            .flat_map(|f| f.entries.iter().map(|e| &e.item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::*;

    fn newq<T>(cap: u32, policy: FullPolicy) -> PoolQueue<T> {
        PoolQueue::new(cap, policy, Weights::default())
    }

    fn push<T>(q: &mut PoolQueue<T>, id: &str, tenant: &str, p: Priority, item: T) {
        let o = q.enqueue(id.into(), FlowKey::new(tenant, p), None, item, 0);
        assert!(matches!(o, EnqueueOutcome::Admitted { .. }));
    }

    fn drain<T>(q: &mut PoolQueue<T>) -> Vec<String> {
        std::iter::from_fn(|| q.pop_next(0).map(|d| d.id)).collect()
    }

    #[test]
    fn interactive_gets_eight_of_nine_dispatches_and_batch_is_not_starved() {
        let mut q = newq(100, FullPolicy::Reject);
        for i in 0..18 {
            push(&mut q, &format!("i{i}"), "a", Interactive, ());
        }
        for i in 0..2 {
            push(&mut q, &format!("b{i}"), "a", Batch, ());
        }
        let order = drain(&mut q);
        let first9 = &order[..9];
        assert_eq!(first9.iter().filter(|id| id.starts_with('b')).count(), 1);
        // Batch gets every ninth dispatch: after the 8th and the 16th interactive task.
        assert_eq!(order.iter().position(|id| id == "b0"), Some(8));
        assert_eq!(order.iter().position(|id| id == "b1"), Some(17));
    }

    #[test]
    fn depth_by_tenant_sums_priorities_and_drops_empty_flows() {
        let mut q = newq(100, FullPolicy::Reject);
        push(&mut q, "a1", "a", Interactive, ());
        push(&mut q, "a2", "a", Batch, ());
        push(&mut q, "b1", "b", Batch, ());
        let m = q.depth_by_tenant();
        assert_eq!(m.into_iter().collect::<Vec<_>>(), vec![("a", 2), ("b", 1)]);
        assert_eq!(q.tenant_depth("a"), 2);
        let _ = drain(&mut q);
        assert!(q.depth_by_tenant().is_empty());
    }

    #[test]
    fn tenants_share_equally_by_default_and_by_weight_when_configured() {
        let mut w = Weights::default();
        w.tenants.insert("big".into(), 3);
        let mut q = PoolQueue::new(100, FullPolicy::Reject, w);
        for i in 0..20 {
            push(&mut q, &format!("s{i}"), "small", Batch, ());
            push(&mut q, &format!("b{i}"), "big", Batch, ());
        }
        let first8 = drain(&mut q).into_iter().take(8).collect::<Vec<_>>();
        assert_eq!(first8.iter().filter(|id| id.starts_with('b')).count(), 6);
    }

    #[test]
    fn fifo_within_a_flow_and_positions_match_the_pop_order() {
        let mut q = newq(100, FullPolicy::Reject);
        for (id, t, p) in [
            ("a1", "a", Batch),
            ("b1", "b", Interactive),
            ("a2", "a", Batch),
            ("b2", "b", Interactive),
            ("a3", "a", Interactive),
        ] {
            push(&mut q, id, t, p, ());
        }
        let order: Vec<String> = q.dispatch_order(0).into_iter().map(String::from).collect();
        for (i, id) in order.iter().enumerate() {
            assert_eq!(q.position_of(id, 0), Some(i as u32));
        }
        let popped = drain(&mut q);
        assert_eq!(popped, order);
        let a_batch: Vec<_> = popped.iter().filter(|i| *i == "a1" || *i == "a2").collect();
        assert_eq!(a_batch, ["a1", "a2"]);
    }

    #[test]
    fn urgent_deadline_jumps_fair_order_but_its_flow_pays() {
        let mut q = newq(100, FullPolicy::Reject);
        q.set_edf_horizon_ms(100);
        for i in 0..4 {
            push(&mut q, &format!("i{i}"), "a", Interactive, ());
        }
        q.enqueue("late".into(), FlowKey::new("b", Batch), Some(10_000), (), 0);
        q.enqueue("soon".into(), FlowKey::new("c", Batch), Some(50), (), 0);
        assert_eq!(q.peek_next(0).unwrap().0, "soon");
        assert!(q.pop_next(0).unwrap().by_deadline);
        // `late` is not urgent yet: fair order resumes.
        assert_eq!(q.pop_next(0).unwrap().id, "i0");
        // Once inside the horizon it goes first.
        assert_eq!(q.pop_next(9_950).unwrap().id, "late");
    }

    #[test]
    fn a_deferred_flow_is_skipped_and_the_others_served() {
        let mut q = newq(10, FullPolicy::Reject);
        push(&mut q, "a1", "a", Interactive, ());
        push(&mut q, "b1", "b", Interactive, ());
        let a = FlowKey::new("a", Interactive);
        assert_eq!(q.peek_next(0).unwrap().0, "a1");
        assert_eq!(q.peek_next_where(0, |k| *k != a).unwrap().0, "b1");
        assert_eq!(q.pop_next_where(0, |k| *k != a).unwrap().id, "b1");
        assert!(q.pop_next_where(0, |k| *k != a).is_none());
        assert_eq!(q.pop_next(0).unwrap().id, "a1");
    }

    #[test]
    fn reject_policy_hands_item_back() {
        let mut q = newq(1, FullPolicy::Reject);
        push(&mut q, "a", "t", Batch, 1);
        assert_eq!(
            q.enqueue("b".into(), FlowKey::new("t", Interactive), None, 2, 0),
            EnqueueOutcome::Rejected(2)
        );
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn drop_lru_evicts_oldest_of_lowest_eligible_priority() {
        let mut q = newq(3, FullPolicy::DropLru);
        push(&mut q, "i1", "t", Interactive, ());
        push(&mut q, "b1", "u", Batch, ());
        push(&mut q, "b2", "t", Batch, ());
        match q.enqueue("i2".into(), FlowKey::new("t", Interactive), None, (), 0) {
            EnqueueOutcome::Admitted { evicted, .. } => assert_eq!(evicted.unwrap().0, "b1"),
            o => panic!("{o:?}"),
        }
        let mut q = newq(1, FullPolicy::DropLru);
        push(&mut q, "i1", "t", Interactive, ());
        assert!(matches!(
            q.enqueue("b".into(), FlowKey::new("t", Batch), None, (), 0),
            EnqueueOutcome::Rejected(())
        ));
    }

    #[test]
    fn shed_low_priority_drops_newest_batch_for_interactive_only() {
        let mut q = newq(2, FullPolicy::ShedLowPriority);
        push(&mut q, "b1", "t", Batch, ());
        push(&mut q, "b2", "u", Batch, ());
        assert!(matches!(
            q.enqueue("b3".into(), FlowKey::new("t", Batch), None, (), 0),
            EnqueueOutcome::Rejected(())
        ));
        match q.enqueue("i1".into(), FlowKey::new("t", Interactive), None, (), 0) {
            EnqueueOutcome::Admitted { evicted, position } => {
                assert_eq!(evicted.unwrap().0, "b2");
                assert_eq!(position, 0);
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(q.len(), 2);
        assert_eq!(q.depth(Batch), 1);
    }

    #[test]
    fn requeue_restores_head_and_refunds_the_charge() {
        let mut q = newq(10, FullPolicy::Reject);
        push(&mut q, "i1", "t", Interactive, ());
        push(&mut q, "b1", "t", Batch, ());
        let before = q.dispatch_order(0).join(",");
        let d = q.pop_next(0).unwrap();
        q.requeue_front(d);
        assert_eq!(q.dispatch_order(0).join(","), before);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn remove_and_remove_where_keep_counts_right() {
        let mut q = newq(10, FullPolicy::Reject);
        for (i, p) in [(1, Interactive), (2, Batch), (3, Interactive), (4, Batch)] {
            push(&mut q, &format!("t{i}"), "x", p, i);
        }
        assert_eq!(q.remove("t2"), Some(2));
        assert_eq!(q.remove("t2"), None);
        let gone = q.remove_where(|i| i % 2 == 1);
        assert_eq!(gone.len(), 2);
        assert_eq!(q.ids(), ["t4"]);
        assert_eq!((q.depth(Interactive), q.depth(Batch), q.len()), (0, 1, 1));
    }
}
