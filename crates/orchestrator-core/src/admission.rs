//! Admission checks that run before a task touches a queue (ORCH-3014, 3015).

/// Limits of the model a pool serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelLimits {
    pub ctx_max: u32,
}

/// The parts of a task admission looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionInput<'a> {
    pub ctx: u32,
    pub prompt: &'a str,
    pub max_tokens: u32,
    /// Relative deadline from now, if the client gave one.
    pub deadline_ms: Option<u64>,
    /// Predicted wait before a slot frees up, from [`crate::ServiceTimeEstimator`].
    pub predicted_start_ms: u64,
    /// Predicted time from dispatch to the last token, from measured replica rates
    /// ([`crate::DecodeRate`]); `None` while nothing has been measured.
    pub predicted_service_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmissionError {
    CtxOverLimit {
        ctx: u32,
        limit: u32,
    },
    TokenBudgetExceeded {
        prompt_tokens: u32,
        max_tokens: u32,
        ctx: u32,
    },
    ZeroMaxTokens,
    ZeroCtx,
    /// The task cannot start before its deadline (DEADLINE_UNMET).
    DeadlineInfeasible {
        deadline_ms: u64,
        predicted_start_ms: u64,
        predicted_finish_ms: u64,
    },
}

impl std::fmt::Display for AdmissionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdmissionError::CtxOverLimit { ctx, limit } => {
                write!(f, "ctx {ctx} exceeds the model limit {limit}")
            }
            AdmissionError::TokenBudgetExceeded {
                prompt_tokens,
                max_tokens,
                ctx,
            } => write!(
                f,
                "prompt (~{prompt_tokens} tokens) + max_tokens {max_tokens} exceeds ctx {ctx}"
            ),
            AdmissionError::ZeroMaxTokens => write!(f, "max_tokens must be at least 1"),
            AdmissionError::ZeroCtx => write!(f, "ctx must be at least 1"),
            AdmissionError::DeadlineInfeasible {
                deadline_ms,
                predicted_start_ms,
                predicted_finish_ms,
            } => write!(
                f,
                "deadline {deadline_ms} ms cannot be met: predicted start in {predicted_start_ms} ms, finish in {predicted_finish_ms} ms"
            ),
        }
    }
}

/// Upper-bound estimate of a prompt's token count without a tokenizer: one token per 3 bytes,
/// rounded up. BPE vocabularies of current models average about 4 bytes per token on English
/// text, so this over-counts on purpose: an admitted task never overflows its context.
pub fn estimate_prompt_tokens(prompt: &str) -> u32 {
    let n = prompt.len().div_ceil(3);
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub fn check_admission(
    input: &AdmissionInput<'_>,
    limits: &ModelLimits,
) -> Result<u32, AdmissionError> {
    if input.ctx == 0 {
        return Err(AdmissionError::ZeroCtx);
    }
    if input.max_tokens == 0 {
        return Err(AdmissionError::ZeroMaxTokens);
    }
    if input.ctx > limits.ctx_max {
        return Err(AdmissionError::CtxOverLimit {
            ctx: input.ctx,
            limit: limits.ctx_max,
        });
    }
    let prompt_tokens = estimate_prompt_tokens(input.prompt);
    if u64::from(prompt_tokens) + u64::from(input.max_tokens) > u64::from(input.ctx) {
        return Err(AdmissionError::TokenBudgetExceeded {
            prompt_tokens,
            max_tokens: input.max_tokens,
            ctx: input.ctx,
        });
    }
    if let Some(deadline_ms) = input.deadline_ms {
        let finish = input
            .predicted_start_ms
            .saturating_add(input.predicted_service_ms.unwrap_or(0));
        if input.predicted_start_ms >= deadline_ms || finish > deadline_ms {
            return Err(AdmissionError::DeadlineInfeasible {
                deadline_ms,
                predicted_start_ms: input.predicted_start_ms,
                predicted_finish_ms: finish,
            });
        }
    }
    Ok(prompt_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(ctx: u32, prompt: &str, max_tokens: u32) -> AdmissionInput<'_> {
        AdmissionInput {
            ctx,
            prompt,
            max_tokens,
            deadline_ms: None,
            predicted_start_ms: 0,
            predicted_service_ms: None,
        }
    }

    #[test]
    fn ctx_over_model_limit_is_rejected() {
        let e = check_admission(&input(4096, "hi", 1), &ModelLimits { ctx_max: 2048 });
        assert_eq!(
            e,
            Err(AdmissionError::CtxOverLimit {
                ctx: 4096,
                limit: 2048
            })
        );
    }

    #[test]
    fn prompt_plus_max_tokens_must_fit_ctx() {
        let limits = ModelLimits { ctx_max: 2048 };
        assert!(check_admission(&input(100, &"x".repeat(150), 50), &limits).is_ok());
        assert!(matches!(
            check_admission(&input(100, &"x".repeat(150), 51), &limits),
            Err(AdmissionError::TokenBudgetExceeded {
                prompt_tokens: 50,
                ..
            })
        ));
    }

    #[test]
    fn infeasible_deadline_is_rejected() {
        let mut i = input(100, "hi", 1);
        i.deadline_ms = Some(10);
        i.predicted_start_ms = 10;
        assert!(matches!(
            check_admission(&i, &ModelLimits { ctx_max: 100 }),
            Err(AdmissionError::DeadlineInfeasible { .. })
        ));
        // Starting in time is not enough: the measured decode time must fit too.
        i.deadline_ms = Some(100);
        i.predicted_start_ms = 40;
        i.predicted_service_ms = Some(60);
        assert!(check_admission(&i, &ModelLimits { ctx_max: 100 }).is_ok());
        i.predicted_service_ms = Some(61);
        assert!(matches!(
            check_admission(&i, &ModelLimits { ctx_max: 100 }),
            Err(AdmissionError::DeadlineInfeasible {
                predicted_finish_ms: 101,
                ..
            })
        ));
    }
}
