//! Per-tenant quotas checked at admission (ORCH-3077, 3036): concurrent tasks, requests per
//! second (token bucket with burst) and tokens per minute (token bucket refilled at
//! `tokens_per_minute / 60` per second, holding at most one minute's worth).
//!
//! Admission is two-phase so that a request refused for another reason (queue full, deadline)
//! consumes nothing: [`QuotaBook::check`] changes nothing, [`QuotaBook::commit`] charges.
//! A finished task gives back its concurrency slot and the reserved tokens it did not use.
//! Every refusal carries an honest retry-after: the time until the refused request would pass,
//! if nothing else changed (for concurrency: the caller's estimate of one service time).

use std::collections::BTreeMap;

/// Limits of one tenant; `None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TenantQuota {
    pub max_concurrent: Option<u32>,
    pub requests_per_second: Option<f64>,
    /// Bucket size of the request rate (at least 1).
    pub burst: u32,
    pub tokens_per_minute: Option<u64>,
}

/// Which quota refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaKind {
    Concurrency,
    RequestRate,
    TokenRate,
}

impl QuotaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaKind::Concurrency => "max_concurrent",
            QuotaKind::RequestRate => "requests_per_second",
            QuotaKind::TokenRate => "tokens_per_minute",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum QuotaViolation {
    /// Retry later (429).
    Exceeded {
        kind: QuotaKind,
        limit: f64,
        retry_after_ms: u64,
    },
    /// The request alone is larger than the tenant's whole per-minute token budget: no retry
    /// can pass (400).
    NeverFits { tokens: u64, tokens_per_minute: u64 },
}

impl std::fmt::Display for QuotaViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaViolation::Exceeded {
                kind,
                limit,
                retry_after_ms,
            } => write!(
                f,
                "tenant quota {} = {limit} exceeded; retry in {retry_after_ms} ms",
                kind.as_str()
            ),
            QuotaViolation::NeverFits {
                tokens,
                tokens_per_minute,
            } => write!(
                f,
                "request needs {tokens} tokens but the tenant's budget is {tokens_per_minute} tokens per minute"
            ),
        }
    }
}

/// A token bucket; refill is computed from elapsed time on every use, so no timer is needed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    level: f64,
    last_ms: u64,
}

impl Bucket {
    fn full(capacity: f64, now_ms: u64) -> Self {
        Bucket {
            level: capacity,
            last_ms: now_ms,
        }
    }

    fn level_at(&self, now_ms: u64, rate_per_ms: f64, capacity: f64) -> f64 {
        let dt = now_ms.saturating_sub(self.last_ms) as f64;
        (self.level + dt * rate_per_ms).min(capacity)
    }

    /// Milliseconds until `need` units are available (0 if they are).
    fn wait_ms(&self, now_ms: u64, need: f64, rate_per_ms: f64, capacity: f64) -> u64 {
        let have = self.level_at(now_ms, rate_per_ms, capacity);
        if have >= need {
            0
        } else {
            ((need - have) / rate_per_ms).ceil() as u64
        }
    }

    fn take(&mut self, now_ms: u64, n: f64, rate_per_ms: f64, capacity: f64) {
        self.level = self.level_at(now_ms, rate_per_ms, capacity) - n;
        self.last_ms = now_ms.max(self.last_ms);
    }

    fn give(&mut self, now_ms: u64, n: f64, rate_per_ms: f64, capacity: f64) {
        self.level = (self.level_at(now_ms, rate_per_ms, capacity) + n).min(capacity);
        self.last_ms = now_ms.max(self.last_ms);
    }
}

/// (refill per millisecond, capacity) of a token bucket.
type BucketRate = (f64, f64);

#[derive(Debug, Clone, Default)]
struct TenantUse {
    concurrent: u32,
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// Quota state of all tenants.
#[derive(Debug, Clone, Default)]
pub struct QuotaBook {
    quotas: BTreeMap<String, TenantQuota>,
    default_quota: TenantQuota,
    usage: BTreeMap<String, TenantUse>,
}

impl QuotaBook {
    pub fn new(default_quota: TenantQuota, quotas: BTreeMap<String, TenantQuota>) -> Self {
        QuotaBook {
            quotas,
            default_quota,
            usage: BTreeMap::new(),
        }
    }

    pub fn quota(&self, tenant: &str) -> TenantQuota {
        self.quotas
            .get(tenant)
            .copied()
            .unwrap_or(self.default_quota)
    }

    pub fn concurrent(&self, tenant: &str) -> u32 {
        self.usage.get(tenant).map_or(0, |u| u.concurrent)
    }

    /// (refill per ms, capacity) of the request bucket and of the token bucket.
    fn rates(q: &TenantQuota) -> (Option<BucketRate>, Option<BucketRate>) {
        let req = q
            .requests_per_second
            .filter(|r| *r > 0.0)
            .map(|r| (r / 1000.0, f64::from(q.burst.max(1))));
        let tok = q
            .tokens_per_minute
            .filter(|t| *t > 0)
            .map(|t| (t as f64 / 60_000.0, t as f64));
        (req, tok)
    }

    /// Would a request of `tokens` (prompt estimate + max_tokens) pass now? Changes nothing.
    /// `service_ms` is the caller's estimate of one task's service time, used as the
    /// retry-after of a concurrency refusal.
    pub fn check(
        &self,
        tenant: &str,
        tokens: u64,
        now_ms: u64,
        service_ms: u64,
    ) -> Result<(), QuotaViolation> {
        let q = self.quota(tenant);
        let u = self.usage.get(tenant);
        let (req, tok) = Self::rates(&q);
        if let Some((_, cap)) = tok
            && tokens as f64 > cap
        {
            return Err(QuotaViolation::NeverFits {
                tokens,
                tokens_per_minute: cap as u64,
            });
        }
        if let Some(max) = q.max_concurrent
            && u.map_or(0, |u| u.concurrent) >= max
        {
            return Err(QuotaViolation::Exceeded {
                kind: QuotaKind::Concurrency,
                limit: f64::from(max),
                retry_after_ms: service_ms.max(1),
            });
        }
        if let Some((rate, cap)) = req {
            let b = u
                .and_then(|u| u.requests)
                .unwrap_or(Bucket::full(cap, now_ms));
            let wait = b.wait_ms(now_ms, 1.0, rate, cap);
            if wait > 0 {
                return Err(QuotaViolation::Exceeded {
                    kind: QuotaKind::RequestRate,
                    limit: q.requests_per_second.unwrap_or(0.0),
                    retry_after_ms: wait,
                });
            }
        }
        if let Some((rate, cap)) = tok {
            let b = u
                .and_then(|u| u.tokens)
                .unwrap_or(Bucket::full(cap, now_ms));
            let wait = b.wait_ms(now_ms, tokens as f64, rate, cap);
            if wait > 0 {
                return Err(QuotaViolation::Exceeded {
                    kind: QuotaKind::TokenRate,
                    limit: cap,
                    retry_after_ms: wait,
                });
            }
        }
        Ok(())
    }

    /// Charges an admitted request (after a successful [`Self::check`] under the same lock).
    pub fn commit(&mut self, tenant: &str, tokens: u64, now_ms: u64) {
        let q = self.quota(tenant);
        let (req, tok) = Self::rates(&q);
        let u = self.usage.entry(tenant.to_string()).or_default();
        u.concurrent += 1;
        if let Some((rate, cap)) = req {
            u.requests
                .get_or_insert(Bucket::full(cap, now_ms))
                .take(now_ms, 1.0, rate, cap);
        }
        if let Some((rate, cap)) = tok {
            u.tokens.get_or_insert(Bucket::full(cap, now_ms)).take(
                now_ms,
                tokens as f64,
                rate,
                cap,
            );
        }
    }

    /// A task of `tenant` ended: frees its concurrency slot and refunds the reserved tokens it
    /// did not use.
    pub fn finish(&mut self, tenant: &str, reserved_tokens: u64, used_tokens: u64, now_ms: u64) {
        let q = self.quota(tenant);
        let (_, tok) = Self::rates(&q);
        if let Some(u) = self.usage.get_mut(tenant) {
            u.concurrent = u.concurrent.saturating_sub(1);
            if let (Some((rate, cap)), Some(b)) = (tok, u.tokens.as_mut()) {
                let refund = reserved_tokens.saturating_sub(used_tokens) as f64;
                b.give(now_ms, refund, rate, cap);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(q: TenantQuota) -> QuotaBook {
        QuotaBook::new(
            TenantQuota::default(),
            BTreeMap::from([("t".to_string(), q)]),
        )
    }

    #[test]
    fn concurrency_limit_refuses_then_frees() {
        let mut b = book(TenantQuota {
            max_concurrent: Some(1),
            ..Default::default()
        });
        assert!(b.check("t", 10, 0, 500).is_ok());
        b.commit("t", 10, 0);
        assert_eq!(
            b.check("t", 10, 0, 500),
            Err(QuotaViolation::Exceeded {
                kind: QuotaKind::Concurrency,
                limit: 1.0,
                retry_after_ms: 500
            })
        );
        assert!(b.check("other", 10, 0, 500).is_ok(), "tenants are separate");
        b.finish("t", 10, 10, 1);
        assert!(b.check("t", 10, 1, 500).is_ok());
    }

    #[test]
    fn request_rate_allows_burst_then_says_exactly_when() {
        let mut b = book(TenantQuota {
            requests_per_second: Some(2.0),
            burst: 3,
            ..Default::default()
        });
        for _ in 0..3 {
            assert!(b.check("t", 1, 0, 1).is_ok());
            b.commit("t", 1, 0);
        }
        match b.check("t", 1, 0, 1) {
            Err(QuotaViolation::Exceeded {
                kind: QuotaKind::RequestRate,
                retry_after_ms,
                ..
            }) => assert_eq!(retry_after_ms, 500),
            o => panic!("{o:?}"),
        }
        assert!(b.check("t", 1, 499, 1).is_err());
        assert!(b.check("t", 1, 500, 1).is_ok(), "the retry-after is honest");
    }

    #[test]
    fn token_budget_refunds_unused_and_refuses_oversized() {
        let mut b = book(TenantQuota {
            tokens_per_minute: Some(600),
            ..Default::default()
        });
        assert!(matches!(
            b.check("t", 601, 0, 1),
            Err(QuotaViolation::NeverFits { .. })
        ));
        b.commit("t", 600, 0);
        match b.check("t", 100, 0, 1) {
            Err(QuotaViolation::Exceeded {
                kind: QuotaKind::TokenRate,
                retry_after_ms,
                ..
            }) => assert_eq!(retry_after_ms, 10_000),
            o => panic!("{o:?}"),
        }
        b.finish("t", 600, 500, 0);
        assert!(
            b.check("t", 100, 0, 1).is_ok(),
            "100 unused tokens came back"
        );
    }
}
