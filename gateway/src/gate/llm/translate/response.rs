//! Response bodies: Anthropic message ↔ OpenAI `chat.completion`.
use serde_json::{json, Map, Value};

use super::{
    content::{assistant_blocks, text, tool_call_to_tool_use},
    json::{
        as_object, field, get, get_array, get_str, get_u64, index, invalid, require, require_array,
        require_str, unsupported, Keep, Result,
    },
};

/// `created` is the caller's clock (unix seconds): Anthropic responses carry
/// no timestamp and these functions read no clock.
pub fn anthropic_response_to_openai(
    resp: &Value,
    requested_model: &str,
    created: u64,
) -> Result<Value> {
    let r = as_object(resp, "body")?;
    if let Some(kind) = get_str(r, "type", "")?.filter(|k| *k != "message") {
        return Err(invalid(
            "type",
            format!("expected \"message\", got {kind:?}"),
        ));
    }
    let (content, calls) = assistant_blocks(require_array(r, "content", "")?, "content", "")?;
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    message.insert(
        "content".into(),
        if content.is_empty() {
            Value::Null
        } else {
            content.into()
        },
    );
    if !calls.is_empty() {
        message.insert("tool_calls".into(), calls.into());
    }
    Ok(json!({
        "id": require_str(r, "id", "")?,
        "object": "chat.completion",
        "created": created,
        "model": requested_model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(require_str(r, "stop_reason", "")?)?,
        }],
        "usage": openai_usage(get(r, "usage"))?,
    }))
}

/// What [`openai_response_to_anthropic`] and the usage read on the way
/// ([`crate::gate::llm::usage::Usage::from_openai`]) look at in a
/// `chat.completion`: parse the answer with this and nothing else is built.
pub(crate) const OPENAI_ANSWER_READ: Keep = Keep::Members(&[
    ("id", Keep::All),
    ("choices", Keep::Elements(&CHOICE_READ)),
    ("usage", Keep::Members(USAGE_READ)),
]);

const CHOICE_READ: Keep = Keep::Members(&[
    (
        "message",
        Keep::Members(&[
            ("content", Keep::All),
            ("refusal", Keep::All),
            ("tool_calls", Keep::All),
        ]),
    ),
    ("finish_reason", Keep::All),
]);

/// Every name a usage reader looks for, the nested `usage` places
/// included (`usage_object` tries them first).
const USAGE_READ: &[(&str, Keep)] = &[
    ("prompt_tokens", Keep::All),
    ("completion_tokens", Keep::All),
    ("input_tokens", Keep::All),
    ("output_tokens", Keep::All),
    ("prompt_tokens_details", Keep::All),
    ("completion_tokens_details", Keep::All),
    ("input_tokens_details", Keep::All),
    ("output_tokens_details", Keep::All),
    ("usage", Keep::All),
    ("response", Keep::All),
    ("message", Keep::All),
];

pub fn openai_response_to_anthropic(resp: &Value, requested_model: &str) -> Result<Value> {
    let r = as_object(resp, "body")?;
    // Requests with n > 1 are refused on the way in, so one choice is all
    // there is.
    let choice = require_array(r, "choices", "")?
        .first()
        .ok_or_else(|| invalid("choices", "must hold at least one choice"))?;
    let choice = as_object(choice, "choices[0]")?;
    let path = "choices[0].message";
    let m = as_object(require(choice, "message", "choices[0]")?, path)?;

    let mut content = Vec::new();
    if let Some(s) = get_str(m, "content", path)?.filter(|s| !s.is_empty()) {
        content.push(text(s));
    }
    let refusal = get_str(m, "refusal", path)?;
    if let Some(s) = refusal {
        content.push(text(s));
    }
    let calls_path = field(path, "tool_calls");
    for (k, call) in get_array(m, "tool_calls", path)?
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        content.push(tool_call_to_tool_use(call, &index(&calls_path, k))?);
    }
    let finish = require_str(choice, "finish_reason", "choices[0]")?;
    // A refusal is reported in its own field whatever finish_reason says.
    let stop_reason = if refusal.is_some() {
        "refusal"
    } else {
        stop_reason(finish)?
    };
    Ok(json!({
        "id": require_str(r, "id", "")?,
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": content,
        "stop_reason": stop_reason,
        // OpenAI does not say which stop sequence matched.
        "stop_sequence": null,
        "usage": anthropic_usage(get(r, "usage"))?,
    }))
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub(crate) fn finish_reason(stop_reason: &str) -> Result<&'static str> {
    Ok(match stop_reason {
        "end_turn" | "stop_sequence" => "stop",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // Only server tools pause a turn, and requests with them are refused.
        "pause_turn" => return Err(unsupported(
            "stop_reason",
            "\"pause_turn\" (a paused server-tool loop) has no OpenAI Chat Completions equivalent",
        )),
        other => return Err(invalid("stop_reason", format!("unknown value {other:?}"))),
    })
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
pub(crate) fn stop_reason(finish_reason: &str) -> Result<&'static str> {
    Ok(match finish_reason {
        "stop" => "end_turn",
        "length" => "max_tokens",
        // function_call is the deprecated name of tool_calls.
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        other => {
            return Err(invalid(
                "choices[0].finish_reason",
                format!("unknown value {other:?}"),
            ))
        }
    })
}

/// Token counts from a `usage` object; a missing one counts as zero
/// (some OpenAI-compatible servers leave usage out).
fn counts<const N: usize>(usage: Option<&Value>, path: &str, keys: [&str; N]) -> Result<[u64; N]> {
    let mut out = [0; N];
    let Some(usage) = usage else { return Ok(out) };
    let usage = as_object(usage, path)?;
    for (slot, key) in out.iter_mut().zip(keys) {
        *slot = get_u64(usage, key, path)?.unwrap_or(0);
    }
    Ok(out)
}

/// Anthropic's `input_tokens` counts only the prompt tokens that were
/// neither read from nor written to the cache; OpenAI's `prompt_tokens`
/// counts the whole prompt and reports the cached part inside it. So
/// `prompt_tokens` is the sum of all three, and dashboards and budgets built
/// on it see every prompt token whichever provider served the request.
pub(crate) fn openai_usage(usage: Option<&Value>) -> Result<Value> {
    let [input, output, cache_read, cache_write] = counts(
        usage,
        "usage",
        [
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ],
    )?;
    let prompt = input.saturating_add(cache_read).saturating_add(cache_write);
    Ok(json!({
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt.saturating_add(output),
        "prompt_tokens_details": { "cached_tokens": cache_read },
    }))
}

/// The inverse of [`openai_usage`]. OpenAI does not report cache writes (its
/// caching is automatic), so every uncached prompt token is `input_tokens`.
pub(crate) fn anthropic_usage(usage: Option<&Value>) -> Result<Value> {
    let [prompt, completion] = counts(usage, "usage", ["prompt_tokens", "completion_tokens"])?;
    let details = usage
        .and_then(|u| u.get("prompt_tokens_details"))
        .filter(|d| !d.is_null());
    let [cached] = counts(details, "usage.prompt_tokens_details", ["cached_tokens"])?;
    Ok(json!({
        "input_tokens": prompt.saturating_sub(cached),
        "output_tokens": completion,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }))
}
