//! Property tests of the scheduling policies under overload (ORCH-3075–3077, 3085): fair
//! shares track the weights, batch work is never starved by a continuous interactive load,
//! quotas are never exceeded, and slots are never leaked by cancel or eviction.

use std::collections::{BTreeMap, HashMap, VecDeque};

use api_types::Priority;
use orchestrator_core::{
    EnqueueOutcome, FlowKey, FullPolicy, PlacementRequest, PoolQueue, QuotaBook, QuotaViolation,
    ReplicaState, ReplicaView, TenantQuota, Weights, choose_replica,
};
use proptest::prelude::*;

fn weights(tenant_weights: &[u32], interactive: u32, batch: u32) -> Weights {
    Weights {
        priority: [interactive, batch],
        tenants: tenant_weights
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("t{i}"), *w))
            .collect(),
        default_tenant: 1,
    }
}

fn all_flows(n_tenants: usize) -> Vec<FlowKey> {
    (0..n_tenants)
        .flat_map(|t| Priority::ALL.map(|p| FlowKey::new(format!("t{t}"), p)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Over long runs where every flow stays backlogged, each (tenant, priority) flow gets a
    /// share of dispatches within ±10 % of its weight's share. Arrivals are random (bursty
    /// refills in random order), so the share does not depend on arrival pattern; and a flow
    /// whose every task carries an urgent deadline does not get more than its share either.
    #[test]
    fn shares_track_weights(
        tenant_w in proptest::collection::vec(1u32..5, 1..4),
        iw in 1u32..10, bw in 1u32..4,
        refill in proptest::collection::vec(0usize..8, 3000),
        urgent_flow in proptest::option::of(0usize..6),
    ) {
        let w = weights(&tenant_w, iw, bw);
        let flows = all_flows(tenant_w.len());
        let mut q: PoolQueue<()> = PoolQueue::new(100_000, FullPolicy::Reject, w.clone());
        q.set_edf_horizon_ms(1_000);
        let urgent = urgent_flow.map(|i| flows[i % flows.len()].clone());
        let deadline = |f: &FlowKey| (Some(f) == urgent.as_ref()).then_some(0);
        let mut n = 0u64;
        // Everyone starts backlogged.
        for f in &flows { for _ in 0..2 { n += 1; q.enqueue(format!("x{n}"), f.clone(), deadline(f), (), 0); } }
        let mut served: BTreeMap<FlowKey, u64> = BTreeMap::new();
        let total = 3000u64;
        for r in refill.iter().take(total as usize) {
            // Keep every flow backlogged: top up the ones that ran low, plus a random burst.
            for f in &flows {
                n += 1;
                if q.flow_depth(f) < 3 { q.enqueue(format!("x{n}"), f.clone(), deadline(f), (), 0); }
            }
            let f = &flows[*r % flows.len()];
            n += 1;
            if q.flow_depth(f) < 6 { q.enqueue(format!("x{n}"), f.clone(), deadline(f), (), 0); }
            let d = q.pop_next(0).unwrap();
            *served.entry(d.flow).or_default() += 1;
        }
        let wsum: u64 = flows.iter().map(|f| w.flow_weight(f)).sum();
        for f in &flows {
            let expected = w.flow_weight(f) as f64 / wsum as f64;
            let got = *served.get(f).unwrap_or(&0) as f64 / total as f64;
            prop_assert!((got - expected).abs() <= 0.10 * expected,
                "{:?}: share {:.4}, weight share {:.4}", f, got, expected);
        }
    }

    /// Under a continuous interactive load (interactive flows always backlogged), every batch
    /// task starts within a bound of dispatches that depends only on the weights and the work
    /// ahead of it in its own flow: (ahead + 1) × Σ_g (⌈w_g / w_batch⌉ + 1).
    #[test]
    fn batch_is_not_starved(
        tenant_w in proptest::collection::vec(1u32..4, 1..3),
        iw in 1u32..20,
        batch_arrivals in proptest::collection::vec(proptest::bool::weighted(0.2), 500..1500),
    ) {
        let w = weights(&tenant_w, iw, 1);
        let flows = all_flows(tenant_w.len());
        let mut q: PoolQueue<u64> = PoolQueue::new(1_000_000, FullPolicy::Reject, w.clone());
        let mut n = 0u64;
        let mut deadline_of: HashMap<String, u64> = HashMap::new();
        let mut dispatches = 0u64;
        for arrive in batch_arrivals {
            for f in flows.iter().filter(|f| f.priority == Priority::Interactive) {
                while q.depth(Priority::Interactive) < 8 * tenant_w.len() {
                    n += 1;
                    q.enqueue(format!("i{n}"), f.clone(), None, 0, 0);
                }
            }
            if arrive {
                let f = FlowKey::new(format!("t{}", n as usize % tenant_w.len()), Priority::Batch);
                let ahead = q.ids().iter().filter(|id| id.starts_with(&format!("b{}-", f.tenant))).count() as u64;
                let wf = w.flow_weight(&f);
                let per_round: u64 = flows.iter().map(|g| w.flow_weight(g).div_ceil(wf) + 1).sum();
                n += 1;
                let id = format!("b{}-{n}", f.tenant);
                deadline_of.insert(id.clone(), dispatches + (ahead + 1) * per_round);
                q.enqueue(id, f, None, dispatches, 0);
            }
            let d = q.pop_next(0).unwrap();
            dispatches += 1;
            if let Some(bound) = deadline_of.remove(&d.id) {
                prop_assert!(dispatches <= bound, "batch task {} started after {} dispatches, bound {}", d.id, dispatches - d.item, bound - d.item);
            }
        }
        // Tasks still waiting are not yet overdue either.
        for (id, bound) in deadline_of {
            prop_assert!(dispatches <= bound, "{id} still waiting past its bound");
        }
    }

    /// Quotas are never exceeded: at no time more concurrent tasks than max_concurrent, in no
    /// window of length L more admissions than burst + rps·L, and in no window more tokens
    /// (net of refunds) than one minute's budget plus the refill over L.
    #[test]
    fn quotas_are_never_exceeded(
        max_c in 1u32..6, rps in 1u32..20, burst in 1u32..10, tpm in 100u64..5000,
        ops in proptest::collection::vec((0u64..300, 1u64..400, proptest::bool::ANY, 0usize..10), 1..400),
    ) {
        let quota = TenantQuota { max_concurrent: Some(max_c), requests_per_second: Some(f64::from(rps)), burst, tokens_per_minute: Some(tpm) };
        let mut book = QuotaBook::new(quota, BTreeMap::new());
        let mut now = 0u64;
        let mut running: VecDeque<(u64, u64)> = VecDeque::new();
        let mut admitted: Vec<(u64, u64)> = Vec::new(); // (time, net tokens)
        for (dt, tokens, finish, used_frac) in ops {
            now += dt;
            if finish && let Some((reserved, _)) = running.pop_front() {
                let used = reserved * used_frac as u64 / 10;
                book.finish("a", reserved, used, now);
                // Account the refund against the admission it belonged to (conservative: at now).
                admitted.push((now, 0));
                if let Some(last) = admitted.iter_mut().rev().find(|(_, t)| *t >= reserved) { last.1 -= reserved - used; }
            }
            match book.check("a", tokens, now, 100) {
                Ok(()) => {
                    book.commit("a", tokens, now);
                    running.push_back((tokens, now));
                    admitted.push((now, tokens));
                }
                Err(QuotaViolation::Exceeded { retry_after_ms, .. }) => prop_assert!(retry_after_ms > 0),
                Err(QuotaViolation::NeverFits { tokens: t, .. }) => prop_assert!(t > tpm),
            }
            prop_assert!(book.concurrent("a") <= max_c);
            prop_assert_eq!(book.concurrent("a") as usize, running.len());
        }
        let reqs: Vec<u64> = admitted.iter().filter(|(_, t)| *t > 0).map(|(ts, _)| *ts).collect();
        for (i, start) in reqs.iter().enumerate() {
            for end in &reqs[i..] {
                let in_window = reqs.iter().filter(|t| *t >= start && *t <= end).count() as f64;
                let allowed = f64::from(burst) + f64::from(rps) * (end - start) as f64 / 1000.0;
                prop_assert!(in_window <= allowed + 1e-6, "{in_window} requests in [{start}, {end}] > {allowed}");
            }
        }
    }

    /// Random submit / dispatch / finish / cancel-queued / cancel-running / evict sequences:
    /// busy slots always equal running tasks, never exceed capacity, and everything is free
    /// once all work ends.
    #[test]
    fn cancel_and_evict_never_leak_a_slot(
        ops in proptest::collection::vec((0u8..6, 0usize..64, proptest::bool::ANY), 1..300),
        slots in proptest::collection::vec(1u32..4, 1..4),
    ) {
        let mut replicas: Vec<ReplicaView> = slots.iter().enumerate().map(|(i, s)| ReplicaView {
            id: format!("r{i}"), state: ReplicaState::Ready, slots_total: *s, slots_busy: 0, devices: vec![],
        }).collect();
        let mut q: PoolQueue<()> = PoolQueue::new(6, FullPolicy::ShedLowPriority, Weights::default());
        let mut running: Vec<(String, usize)> = Vec::new();
        let mut n = 0;
        for (kind, pick, interactive) in ops {
            let p = if interactive { Priority::Interactive } else { Priority::Batch };
            match kind {
                0 | 1 => { n += 1; let _ = q.enqueue(format!("t{n}"), FlowKey::new("a", p), None, (), 0); }
                2 => {
                    while q.peek_next(0).is_some() {
                        let Some(d) = choose_replica(&replicas, &PlacementRequest::default()) else { break };
                        let t = q.pop_next(0).unwrap();
                        replicas[d.replica].slots_busy += 1;
                        running.push((t.id, d.replica));
                    }
                }
                3 if !running.is_empty() => { let (_, r) = running.remove(pick % running.len()); replicas[r].slots_busy -= 1; }
                4 => { let ids: Vec<String> = q.ids().into_iter().map(String::from).collect(); if !ids.is_empty() { q.remove(&ids[pick % ids.len()]); } }
                5 if !running.is_empty() => {
                    // A replica failed before the task started: requeued, slot given back.
                    let (id, r) = running.remove(pick % running.len());
                    replicas[r].slots_busy -= 1;
                    n += 1;
                    let _ = q.enqueue(id, FlowKey::new("a", p), None, (), 0);
                }
                _ => {}
            }
            let busy: u32 = replicas.iter().map(|r| r.slots_busy).sum();
            prop_assert_eq!(busy as usize, running.len());
            for r in &replicas { prop_assert!(r.slots_busy <= r.slots_total); }
        }
        for (_, r) in running.drain(..) { replicas[r].slots_busy -= 1; }
        prop_assert!(replicas.iter().all(|r| r.slots_busy == 0));
    }

    /// FIFO within (tenant, priority) holds whatever the weights and deadlines.
    #[test]
    fn fifo_within_each_flow_with_deadlines(
        arrivals in proptest::collection::vec((0usize..2, proptest::bool::ANY, proptest::option::of(0u64..500)), 1..200),
        horizon in 0u64..200,
    ) {
        let mut q: PoolQueue<u64> = PoolQueue::new(10_000, FullPolicy::Reject, Weights::default());
        q.set_edf_horizon_ms(horizon);
        for (i, (t, inter, dl)) in arrivals.iter().enumerate() {
            let p = if *inter { Priority::Interactive } else { Priority::Batch };
            let r = q.enqueue(format!("x{i}"), FlowKey::new(format!("t{t}"), p), *dl, i as u64, 0);
            let admitted = matches!(r, EnqueueOutcome::Admitted { .. });
            prop_assert!(admitted);
        }
        let mut last: HashMap<FlowKey, u64> = HashMap::new();
        let mut now = 0;
        while let Some(d) = q.pop_next(now) {
            if let Some(prev) = last.insert(d.flow.clone(), d.item) { prop_assert!(prev < d.item); }
            now += 7;
        }
    }
}
