"""Drives llama-orch's OpenAI front door with the official `openai` package (run by
tests/openai_sdk.rs). Prints one JSON object with what it saw; raises on anything unexpected.

argv: BASE_URL DATA_KEY LIMITED_KEY MODEL
"""
import json
import sys

import openai

base, key, limited_key, model = sys.argv[1:5]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)
out = {"openai_version": openai.__version__}

# A streamed completion, greedy, with usage.
text, finish, usage, chunks = "", None, None, 0
for c in client.completions.create(
    model=model, prompt="Once upon a time,", max_tokens=12, seed=7, temperature=0,
    stream=True, stream_options={"include_usage": True},
):
    if c.choices:
        chunks += 1
        text += c.choices[0].text
        finish = c.choices[0].finish_reason or finish
    if c.usage:
        usage = c.usage.model_dump()
out["completion"] = {"text": text, "finish_reason": finish, "usage": usage, "chunks": chunks}

# A streamed chat completion: the model's chat template applied by the engine.
messages = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
text, finish, role = "", None, None
for c in client.chat.completions.create(
    model=model, messages=messages, max_tokens=24, seed=7, temperature=0, stream=True,
):
    d = c.choices[0].delta
    role = role or d.role
    text += d.content or ""
    finish = c.choices[0].finish_reason or finish
out["chat"] = {"text": text, "finish_reason": finish, "role": role}

# Non-stream chat with a stop sequence.
r = client.chat.completions.create(
    model=model, messages=messages, max_tokens=24, seed=7, temperature=0, stop=["."],
)
out["chat_stop"] = {
    "text": r.choices[0].message.content,
    "finish_reason": r.choices[0].finish_reason,
    "completion_tokens": r.usage.completion_tokens,
}

# Models.
out["models"] = [m.id for m in client.models.list().data]

# The limited tenant: its burst of one goes through, the next is a RateLimitError (429).
limited = openai.OpenAI(base_url=base + "/v1", api_key=limited_key, max_retries=0, timeout=120)
limited.chat.completions.create(model=model, messages=messages, max_tokens=2)
try:
    limited.chat.completions.create(model=model, messages=messages, max_tokens=2)
    out["limited"] = {"status": 200}
except openai.RateLimitError as e:
    out["limited"] = {
        "status": e.status_code,
        "code": e.code,
        "type": e.type,
        "retry_after": e.response.headers.get("retry-after"),
    }

# An unknown model is a NotFoundError with OpenAI's code.
try:
    client.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=2)
    out["unknown_model"] = {"status": 200}
except openai.NotFoundError as e:
    out["unknown_model"] = {"status": e.status_code, "code": e.code}

print(json.dumps(out))
