//! The OpenAI front door's conversions: an OpenAI request → an OrchQueue v1 [`TaskRequest`]
//! (refusing what is not served, naming the field), and a task's events → OpenAI's response
//! and stream chunk shapes.

use api_types::openai::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
    ChatCompletionRequest, ChatDelta, Completion, CompletionChoice, CompletionRequest, OaiCommon,
    OaiMessage, Usage,
};
use api_types::{ChatMessage, ChatRole, FinishReason, StreamEvent, TaskRequest, Workload};

use super::openai::OaiError;
use crate::state::Pool;

/// `max_tokens` when a request gives none (OpenAI's "until the context ends" is not a budget
/// the scheduler can reserve).
pub const DEFAULT_MAX_TOKENS: u32 = 256;

/// Fields accepted and ignored: they do not change what is generated.
const IGNORED: &[&str] = &["user", "metadata", "store", "service_tier"];

fn common_task(
    pool: &Pool,
    common: &OaiCommon,
    workload: Workload,
) -> Result<TaskRequest, OaiError> {
    if let Some(n) = common.n
        && n != 1
    {
        return Err(OaiError::invalid(
            "n",
            format!("only n = 1 is served (got {n})"),
        ));
    }
    for (k, v) in &common.extra {
        let harmless = IGNORED.contains(&k.as_str())
            || (matches!(k.as_str(), "frequency_penalty" | "presence_penalty")
                && (v.is_null() || v.as_f64() == Some(0.0)))
            || (k == "logprobs" && (v.is_null() || v == &serde_json::json!(false)));
        if !harmless {
            return Err(OaiError::invalid(
                k,
                format!("`{k}` is not supported by llama-orch's OpenAI front door"),
            ));
        }
    }
    let max_tokens = match (common.max_tokens, common.max_completion_tokens) {
        (Some(_), Some(_)) => {
            return Err(OaiError::invalid(
                "max_completion_tokens",
                "give `max_tokens` or `max_completion_tokens`, not both",
            ));
        }
        (Some(n), None) | (None, Some(n)) => n,
        (None, None) => DEFAULT_MAX_TOKENS,
    };
    let seed = match common.seed {
        Some(s) if s < 0 => return Err(OaiError::invalid("seed", "must be ≥ 0")),
        s => s.map(|s| s as u64),
    };
    let stop = match &common.stop {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(vec![s.clone()]),
        Some(serde_json::Value::Array(a)) => Some(
            a.iter()
                .map(|v| v.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    OaiError::invalid("stop", "must be a string or an array of strings")
                })?,
        ),
        Some(_) => {
            return Err(OaiError::invalid(
                "stop",
                "must be a string or an array of strings",
            ));
        }
    };
    let json_schema = match &common.response_format {
        None | Some(serde_json::Value::Null) => None,
        Some(f) => match f.get("type").and_then(|t| t.as_str()) {
            Some("text") => None,
            Some("json_object") => Some(serde_json::json!({"type": "object"})),
            Some("json_schema") => {
                Some(f.pointer("/json_schema/schema").cloned().ok_or_else(|| {
                    OaiError::invalid("response_format", "json_schema needs `json_schema.schema`")
                })?)
            }
            _ => {
                return Err(OaiError::invalid(
                    "response_format",
                    "type must be `text`, `json_object` or `json_schema`",
                ));
            }
        },
    };
    Ok(TaskRequest {
        task_id: None,
        session_id: common.session_id.clone(),
        tenant: None,
        workload,
        model_ref: pool.model_ref(),
        engine: Some(pool.engine),
        // The window the task may use: the pool's whole context; admission checks prompt +
        // max_tokens against it.
        ctx: pool.ctx_max,
        priority: common.priority.unwrap_or(api_types::Priority::Interactive),
        seed,
        determinism: None,
        sampler_profile_version: None,
        prompt: None,
        messages: None,
        inputs: None,
        temperature: common.temperature,
        top_p: common.top_p,
        top_k: common.top_k,
        min_p: common.min_p,
        repeat_penalty: common.repeat_penalty,
        stop,
        grammar: common.grammar.clone(),
        json_schema,
        max_tokens,
        deadline_ms: common.deadline_ms,
        expected_tokens: None,
        kv_hint: None,
    })
}

fn message(m: &OaiMessage) -> Result<ChatMessage, OaiError> {
    let role = match m.role.as_str() {
        "system" | "developer" => ChatRole::System,
        "user" => ChatRole::User,
        "assistant" => ChatRole::Assistant,
        other => {
            return Err(OaiError::invalid(
                "messages",
                format!("role `{other}` is not supported (system, developer, user, assistant)"),
            ));
        }
    };
    let content = match &m.content {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(parts) => parts
            .iter()
            .map(
                |p| match (p.get("type").and_then(|t| t.as_str()), p.get("text")) {
                    (Some("text"), Some(serde_json::Value::String(t))) => Ok(t.as_str()),
                    _ => Err(OaiError::invalid(
                        "messages",
                        "only text content parts are supported",
                    )),
                },
            )
            .collect::<Result<String, _>>()?,
        _ => {
            return Err(OaiError::invalid(
                "messages",
                "content must be a string or parts",
            ));
        }
    };
    Ok(ChatMessage { role, content })
}

/// `/v1/chat/completions` → a `chat` task on `pool`.
pub fn chat_task(pool: &Pool, req: &ChatCompletionRequest) -> Result<TaskRequest, OaiError> {
    let mut t = common_task(pool, &req.common, Workload::Chat)?;
    t.messages = Some(req.messages.iter().map(message).collect::<Result<_, _>>()?);
    Ok(t)
}

/// `/v1/completions` → a `completion` task on `pool`.
pub fn completion_task(pool: &Pool, req: &CompletionRequest) -> Result<TaskRequest, OaiError> {
    let mut t = common_task(pool, &req.common, Workload::Completion)?;
    t.prompt = Some(match &req.prompt {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        _ => {
            return Err(OaiError::invalid(
                "prompt",
                "must be a string (or an array of one string)",
            ));
        }
    });
    Ok(t)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Chat,
    Completion,
}

/// Turns one task's events into OpenAI's shapes, streamed or accumulated.
pub struct Encoder {
    dialect: Dialect,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    text: String,
    finish: Option<FinishReason>,
    completion_tokens: u32,
    prompt_tokens: u32,
}

fn json<T: serde::Serialize>(v: &T) -> String {
    // Plain structs of strings and numbers: serializing cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "{}".to_string())
}

impl Encoder {
    /// `prompt_tokens` is admission's estimate, replaced by the engine's count at `end`.
    pub fn new(
        dialect: Dialect,
        task_id: &str,
        model: String,
        include_usage: bool,
        prompt_tokens: u32,
    ) -> Self {
        let prefix = match dialect {
            Dialect::Chat => "chatcmpl",
            Dialect::Completion => "cmpl",
        };
        Encoder {
            dialect,
            id: format!("{prefix}-{task_id}"),
            model,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            include_usage,
            text: String::new(),
            finish: None,
            completion_tokens: 0,
            prompt_tokens,
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.prompt_tokens + self.completion_tokens,
        }
    }

    fn usage_slot(&self) -> Option<Option<Usage>> {
        self.include_usage.then_some(None)
    }

    fn chat_chunk(&self, delta: ChatDelta, finish: Option<FinishReason>) -> String {
        json(&ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChatChunkChoice {
                index: 0,
                delta,
                finish_reason: finish.map(|f| f.as_str().to_string()),
            }],
            usage: self.usage_slot(),
        })
    }

    fn text_chunk(&self, text: String, finish: Option<FinishReason>) -> String {
        json(&Completion {
            id: self.id.clone(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![CompletionChoice {
                index: 0,
                text,
                logprobs: None,
                finish_reason: finish.map(|f| f.as_str().to_string()),
            }],
            usage: self.usage_slot(),
        })
    }

    /// Data events sent before the task's first event (a chat stream opens with the role).
    pub fn head(&self) -> Vec<String> {
        match self.dialect {
            Dialect::Chat => vec![self.chat_chunk(
                ChatDelta {
                    role: Some("assistant".into()),
                    content: Some(String::new()),
                },
                None,
            )],
            Dialect::Completion => Vec::new(),
        }
    }

    /// Records what a non-stream answer needs from an event.
    pub fn accumulate(&mut self, ev: &StreamEvent) {
        match ev {
            StreamEvent::Token(t) => self.text.push_str(&t.t),
            StreamEvent::End(e) => {
                self.finish = Some(e.finish_reason.unwrap_or(FinishReason::Stop));
                self.completion_tokens = e.tokens_out;
                if let Some(p) = e.prompt_tokens {
                    self.prompt_tokens = p;
                }
            }
            _ => {}
        }
    }

    /// The stream's data events for one task event (`[DONE]` after the terminal one).
    pub fn encode(&mut self, ev: &StreamEvent) -> Vec<String> {
        self.accumulate(ev);
        match ev {
            StreamEvent::Token(t) => vec![match self.dialect {
                Dialect::Chat => self.chat_chunk(
                    ChatDelta {
                        role: None,
                        content: Some(t.t.clone()),
                    },
                    None,
                ),
                Dialect::Completion => self.text_chunk(t.t.clone(), None),
            }],
            StreamEvent::End(_) => {
                let mut out = vec![match self.dialect {
                    Dialect::Chat => self.chat_chunk(
                        ChatDelta {
                            role: None,
                            content: None,
                        },
                        self.finish,
                    ),
                    Dialect::Completion => self.text_chunk(String::new(), self.finish),
                }];
                if self.include_usage {
                    out.push(self.usage_chunk());
                }
                out.push("[DONE]".into());
                out
            }
            StreamEvent::Error(e) => {
                // As llama-server and OpenAI do mid-stream: an `error` object as the data.
                vec![json(&OaiError::from(e).body), "[DONE]".into()]
            }
            StreamEvent::Started(_) | StreamEvent::Metrics(_) => Vec::new(),
        }
    }

    /// The last chunk with `stream_options.include_usage`: no choices, the usage.
    fn usage_chunk(&self) -> String {
        let usage = Some(Some(self.usage()));
        match self.dialect {
            Dialect::Chat => json(&ChatCompletionChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.model.clone(),
                choices: Vec::new(),
                usage,
            }),
            Dialect::Completion => json(&Completion {
                id: self.id.clone(),
                object: "text_completion".into(),
                created: self.created,
                model: self.model.clone(),
                choices: Vec::new(),
                usage,
            }),
        }
    }

    pub fn chat_completion(self) -> ChatCompletion {
        ChatCompletion {
            usage: self.usage(),
            id: self.id,
            object: "chat.completion".into(),
            created: self.created,
            model: self.model,
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant".into(),
                    content: self.text,
                },
                finish_reason: self.finish.unwrap_or(FinishReason::Stop).as_str().into(),
            }],
        }
    }

    pub fn completion(self) -> Completion {
        Completion {
            usage: Some(Some(self.usage())),
            id: self.id,
            object: "text_completion".into(),
            created: self.created,
            model: self.model,
            choices: vec![CompletionChoice {
                index: 0,
                text: self.text,
                logprobs: None,
                finish_reason: Some(self.finish.unwrap_or(FinishReason::Stop).as_str().into()),
            }],
        }
    }
}
