//! Sampling and workload validation (issue 14 item 0): checks a task's sampling fields against
//! their bounds and resolves them under the named sampler profile into the explicit
//! [`Sampling`] every adapter receives; checks that a workload has exactly the input it needs
//! (`completion` → `prompt`, `chat` → `messages`).
//!
//! Pure: touches no state. Every refusal is INVALID_PARAMS whose message starts with the
//! offending field in backquotes (the OpenAI front door reports it as `param`).

use api_types::{
    ChatMessage, SAMPLER_PROFILE_V1, Sampling, TaskRequest, Workload, bounds, defaults_v1,
};

use crate::error::ApiError;

/// What admission needs from a valid request's input.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The prompt (completion) or a plain rendering of the messages (chat), used for the
    /// prompt-size estimate and policy snapshots; the engine renders chats itself.
    pub estimate_text: String,
    /// The prompt sent to the engine (empty for chat).
    pub prompt: String,
    pub messages: Option<Vec<ChatMessage>>,
    pub sampling: Sampling,
}

fn bad(field: &str, what: impl std::fmt::Display) -> ApiError {
    ApiError::invalid(format!("`{field}` {what}"))
}

fn in_range(field: &str, v: Option<f32>, lo: f32, lo_open: bool, hi: f32) -> Result<(), ApiError> {
    let Some(v) = v else { return Ok(()) };
    let above_lo = if lo_open { v > lo } else { v >= lo };
    if v.is_finite() && above_lo && v <= hi {
        Ok(())
    } else {
        let open = if lo_open { "(" } else { "[" };
        Err(bad(
            field,
            format!("must be in {open}{lo}, {hi}] (got {v})"),
        ))
    }
}

/// Validates the workload's input and resolves sampling (profile `v1`).
pub fn validate(req: &TaskRequest) -> Result<Validated, ApiError> {
    if req.inputs.is_some() {
        return Err(bad(
            "inputs",
            "is for embedding/rerank; completion takes `prompt`, chat takes `messages`",
        ));
    }
    let (estimate_text, prompt, messages) = match req.workload {
        Workload::Completion => {
            if req.messages.is_some() {
                return Err(bad(
                    "messages",
                    "is for workload `chat`; completion takes `prompt`",
                ));
            }
            match &req.prompt {
                Some(p) if !p.is_empty() => (p.clone(), p.clone(), None),
                _ => return Err(bad("prompt", "must be non-empty for workload `completion`")),
            }
        }
        Workload::Chat => {
            if req.prompt.is_some() {
                return Err(bad(
                    "prompt",
                    "is for workload `completion`; chat takes `messages`",
                ));
            }
            let Some(msgs) = &req.messages else {
                return Err(bad("messages", "is required for workload `chat`"));
            };
            if msgs.is_empty() || msgs.len() > bounds::MAX_MESSAGES {
                return Err(bad(
                    "messages",
                    format!(
                        "must hold 1–{} messages (got {})",
                        bounds::MAX_MESSAGES,
                        msgs.len()
                    ),
                ));
            }
            if msgs.iter().all(|m| m.content.is_empty()) {
                return Err(bad("messages", "are all empty"));
            }
            let text: String = msgs
                .iter()
                .map(|m| format!("{}: {}\n", m.role.as_str(), m.content))
                .collect();
            (text, String::new(), Some(msgs.clone()))
        }
        other => {
            return Err(bad(
                "workload",
                format!("{other:?} is not served (completion and chat only)").to_lowercase(),
            ));
        }
    };
    Ok(Validated {
        estimate_text,
        prompt,
        messages,
        sampling: resolve(req)?,
    })
}

/// Checks the sampling fields' bounds and fills absent ones from the profile.
pub fn resolve(req: &TaskRequest) -> Result<Sampling, ApiError> {
    match req.sampler_profile_version.as_deref() {
        None | Some(SAMPLER_PROFILE_V1) => {}
        Some(other) => {
            return Err(bad(
                "sampler_profile_version",
                format!("`{other}` is unknown (served: `{SAMPLER_PROFILE_V1}`)"),
            ));
        }
    }
    in_range(
        "temperature",
        req.temperature,
        0.0,
        false,
        bounds::MAX_TEMPERATURE,
    )?;
    in_range("top_p", req.top_p, 0.0, true, 1.0)?;
    in_range("min_p", req.min_p, 0.0, false, 1.0)?;
    in_range(
        "repeat_penalty",
        req.repeat_penalty,
        0.0,
        true,
        bounds::MAX_REPEAT_PENALTY,
    )?;
    if let Some(k) = req.top_k
        && k > bounds::MAX_TOP_K
    {
        return Err(bad(
            "top_k",
            format!("must be in [0, {}] (got {k})", bounds::MAX_TOP_K),
        ));
    }
    let stop = req.stop.clone().unwrap_or_default();
    if stop.len() > bounds::MAX_STOPS {
        return Err(bad(
            "stop",
            format!(
                "holds at most {} sequences (got {})",
                bounds::MAX_STOPS,
                stop.len()
            ),
        ));
    }
    if let Some(s) = stop
        .iter()
        .find(|s| s.is_empty() || s.len() > bounds::MAX_STOP_BYTES)
    {
        return Err(bad(
            "stop",
            format!(
                "sequences must be 1–{} bytes (got {})",
                bounds::MAX_STOP_BYTES,
                s.len()
            ),
        ));
    }
    if req.grammar.is_some() && req.json_schema.is_some() {
        return Err(bad("json_schema", "cannot be combined with `grammar`"));
    }
    if let Some(g) = &req.grammar
        && (g.trim().is_empty() || g.len() > bounds::MAX_CONSTRAINT_BYTES)
    {
        return Err(bad(
            "grammar",
            format!("must be 1–{} bytes of GBNF", bounds::MAX_CONSTRAINT_BYTES),
        ));
    }
    if let Some(s) = &req.json_schema {
        if !s.is_object() {
            return Err(bad("json_schema", "must be a JSON object"));
        }
        if s.to_string().len() > bounds::MAX_CONSTRAINT_BYTES {
            return Err(bad(
                "json_schema",
                format!("is over {} bytes", bounds::MAX_CONSTRAINT_BYTES),
            ));
        }
    }
    let temperature = req.temperature.unwrap_or(defaults_v1::TEMPERATURE);
    Ok(Sampling {
        profile: SAMPLER_PROFILE_V1.to_string(),
        temperature,
        top_p: req.top_p.unwrap_or(defaults_v1::TOP_P),
        // Greedy means the top token: normalized so every engine agrees on it.
        top_k: if temperature == 0.0 {
            1
        } else {
            req.top_k.unwrap_or(defaults_v1::TOP_K)
        },
        min_p: req.min_p.unwrap_or(defaults_v1::MIN_P),
        repeat_penalty: req.repeat_penalty.unwrap_or(defaults_v1::REPEAT_PENALTY),
        stop,
        grammar: req.grammar.clone(),
        json_schema: req.json_schema.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> TaskRequest {
        serde_json::from_value(serde_json::json!({
            "workload": "completion", "model_ref": "m", "ctx": 64, "prompt": "hi", "max_tokens": 4
        }))
        .unwrap()
    }

    #[test]
    fn absent_fields_take_profile_v1_defaults() {
        let s = resolve(&req()).unwrap();
        assert_eq!(
            (s.temperature, s.top_p, s.top_k, s.min_p, s.repeat_penalty),
            (0.8, 0.95, 40, 0.05, 1.0)
        );
        assert_eq!(s.profile, "v1");
        let mut r = req();
        r.temperature = Some(0.0);
        r.top_k = Some(50);
        assert_eq!(resolve(&r).unwrap().top_k, 1, "greedy normalizes top_k");
    }

    #[test]
    fn out_of_bounds_values_name_their_field() {
        type Set = Box<dyn Fn(&mut TaskRequest)>;
        let cases: Vec<(&str, Set)> = vec![
            ("temperature", Box::new(|r| r.temperature = Some(2.5))),
            ("temperature", Box::new(|r| r.temperature = Some(-0.1))),
            ("temperature", Box::new(|r| r.temperature = Some(f32::NAN))),
            ("top_p", Box::new(|r| r.top_p = Some(0.0))),
            ("top_p", Box::new(|r| r.top_p = Some(1.01))),
            ("top_k", Box::new(|r| r.top_k = Some(1001))),
            ("min_p", Box::new(|r| r.min_p = Some(1.5))),
            ("repeat_penalty", Box::new(|r| r.repeat_penalty = Some(0.0))),
            ("stop", Box::new(|r| r.stop = Some(vec!["a".into(); 5]))),
            ("stop", Box::new(|r| r.stop = Some(vec![String::new()]))),
            ("grammar", Box::new(|r| r.grammar = Some(" ".into()))),
            (
                "json_schema",
                Box::new(|r| r.json_schema = Some(serde_json::json!([1]))),
            ),
            (
                "sampler_profile_version",
                Box::new(|r| r.sampler_profile_version = Some("v9".into())),
            ),
        ];
        for (field, set) in cases {
            let mut r = req();
            set(&mut r);
            let e = resolve(&r).unwrap_err();
            assert!(
                e.message.starts_with(&format!("`{field}`")),
                "{field}: {}",
                e.message
            );
        }
    }
}
