//! Latency rounds and throughput blocks, the two paths interleaved.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Direct,
    Orch,
}

pub(super) struct Clients {
    pub(super) direct: reqwest::Client,
    pub(super) orch: reqwest::Client,
}

pub(super) async fn one(
    c: &Clients,
    base: &str,
    u: &Up,
    side: Side,
    job: &Job,
) -> anyhow::Result<Sample> {
    let f = async {
        match side {
            Side::Direct => direct(&c.direct, u, job).await,
            Side::Orch => orchestrated(&c.orch, base, u.eng, job).await,
        }
    };
    tokio::time::timeout(REQUEST_LIMIT, f)
        .await
        .map_err(|_| anyhow!("no complete answer within {REQUEST_LIMIT:?}"))?
}

pub(super) struct Block {
    pub(super) tokens: u64,
    pub(super) wall: Duration,
    pub(super) failures: usize,
    pub(super) first_error: Option<String>,
}

pub(super) struct Measured {
    pub(super) version: String,
    pub(super) direct: Vec<Sample>,
    pub(super) orch: Vec<Sample>,
    pub(super) text_equal: usize,
    /// Throughput blocks per side at CONCURRENCY streams.
    pub(super) direct_blocks: Vec<Block>,
    pub(super) orch_blocks: Vec<Block>,
}

impl Measured {
    pub(super) fn firsts(s: &[Sample]) -> Vec<Duration> {
        let mut v: Vec<Duration> = s.iter().map(|x| x.first).collect();
        v.sort_unstable();
        v
    }

    pub(super) fn block_failures(&self) -> usize {
        self.direct_blocks
            .iter()
            .chain(&self.orch_blocks)
            .map(|b| b.failures)
            .sum()
    }

    pub(super) fn rate(blocks: &[Block]) -> f64 {
        let tokens: u64 = blocks.iter().map(|b| b.tokens).sum();
        let wall: f64 = blocks.iter().map(|b| b.wall.as_secs_f64()).sum();
        if wall > 0.0 {
            tokens as f64 / wall
        } else {
            0.0
        }
    }
}

pub(super) async fn measure(
    pooled: &reqwest::Client,
    base: &str,
    u: &Up,
    version: &str,
    plan: &Plan,
) -> anyhow::Result<Measured> {
    // llama-server closes the connection after every stream (see real_engine.rs), and the
    // llama.cpp adapter therefore connects afresh per request: so does the direct side there.
    let direct_client = if u.eng == Eng::LlamaCpp {
        reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(0)
            .build()?
    } else {
        pooled.clone()
    };
    let c = Clients {
        direct: direct_client,
        orch: pooled.clone(),
    };
    eprintln!(
        "  {}: {} latency rounds + 1 warm-up",
        u.eng.id(),
        plan.rounds
    );
    let mut m = Measured {
        version: version.to_owned(),
        direct: Vec::new(),
        orch: Vec::new(),
        text_equal: 0,
        direct_blocks: Vec::new(),
        orch_blocks: Vec::new(),
    };
    for round in 0..=plan.rounds {
        let job = Job {
            prompt: PROMPTS[round % PROMPTS.len()],
            seed: SEED_BASE + round as u64,
            n: plan.tokens,
        };
        let order = if round % 2 == 0 {
            [Side::Direct, Side::Orch]
        } else {
            [Side::Orch, Side::Direct]
        };
        let mut got = Vec::new();
        for side in order {
            let s = one(&c, base, u, side, &job)
                .await
                .with_context(|| format!("round {round}, {}", side_name(side)))?;
            got.push((side, s));
        }
        if round == 0 {
            continue;
        }
        for (side, s) in got {
            match side {
                Side::Direct => m.direct.push(s),
                Side::Orch => m.orch.push(s),
            }
        }
    }
    m.text_equal = m
        .direct
        .iter()
        .zip(&m.orch)
        .filter(|(d, o)| d.text == o.text)
        .count();

    eprintln!(
        "  {}: throughput, {} x {} requests per path, {CONCURRENCY} at a time",
        u.eng.id(),
        plan.blocks,
        plan.block_requests
    );
    for b in 0..plan.blocks {
        let order = if b % 2 == 0 {
            [Side::Direct, Side::Orch]
        } else {
            [Side::Orch, Side::Direct]
        };
        for side in order {
            let blk = block(&c, base, u, side, plan, b).await;
            match side {
                Side::Direct => m.direct_blocks.push(blk),
                Side::Orch => m.orch_blocks.push(blk),
            }
        }
    }
    Ok(m)
}

pub(super) fn side_name(s: Side) -> &'static str {
    match s {
        Side::Direct => "direct",
        Side::Orch => "through llama-orch",
    }
}

/// `plan.block_requests` requests, CONCURRENCY at a time, on one side.
pub(super) async fn block(
    c: &Clients,
    base: &str,
    u: &Up,
    side: Side,
    plan: &Plan,
    b: usize,
) -> Block {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let workers = (0..CONCURRENCY).map(|_| {
        let next = next.clone();
        async move {
            let (mut tokens, mut failures, mut first_error) = (0u64, 0usize, None);
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= plan.block_requests {
                    break;
                }
                let job = Job {
                    prompt: PROMPTS[k % PROMPTS.len()],
                    seed: SEED_BASE + 10_000 + (b * plan.block_requests + k) as u64,
                    n: plan.tokens,
                };
                match one(c, base, u, side, &job).await {
                    Ok(s) => tokens += s.tokens,
                    Err(e) => {
                        failures += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (tokens, failures, first_error)
        }
    });
    let results = futures::future::join_all(workers).await;
    let mut blk = Block {
        tokens: 0,
        wall: t0.elapsed(),
        failures: 0,
        first_error: None,
    };
    for (t, f, e) in results {
        blk.tokens += t;
        blk.failures += f;
        if blk.first_error.is_none() {
            blk.first_error = e;
        }
    }
    blk
}
