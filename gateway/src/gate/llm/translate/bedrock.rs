//! OpenAI Chat Completions ↔ AWS Bedrock Converse, non-streaming.
//!
//! Only this pair: an Anthropic client reaches Bedrock through OpenAI's
//! shape (the gate composes the two translations), so every mapping of an
//! Anthropic field to Bedrock is the composition of two tested ones.
//!
//! The model id is not in a Converse body: it is the path,
//! `/model/{modelId}/converse` (or `/converse-stream`), built by the caller,
//! and `stream`/`stream_options` only choose that path.
use serde_json::{json, Map, Value};

use super::json::{
    as_object, field, get, get_array, get_bool, get_number, get_str, get_u64, index, invalid,
    reject_unknown, require, require_array, require_str, unsupported, wrong_type, Object, Result,
};

const BEDROCK: &str = "Bedrock Converse";

/// Top-level OpenAI fields that have a mapping.
const OPENAI_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "stream_options",
    // Bedrock has no per-end-user field, and the id asks the model nothing;
    // dropped.
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
];

pub fn openai_request_to_bedrock(req: &Value) -> Result<Value> {
    let req = as_object(req, "body")?;
    check_openai_fields(req)?;
    let (system, messages) = openai_messages(require_array(req, "messages", "")?)?;

    let mut out = Map::new();
    out.insert("messages".into(), messages.into());
    if !system.is_empty() {
        out.insert("system".into(), system.into());
    }
    let config = inference_config(req)?;
    if !config.is_empty() {
        out.insert("inferenceConfig".into(), config.into());
    }
    if let Some(tool_config) = tool_config(req, &out)? {
        out.insert("toolConfig".into(), tool_config);
    }
    Ok(Value::Object(out))
}

/// `id` is the caller's (Bedrock answers carry none; the response's
/// `x-amzn-requestid` header is a good one) and `created` its clock.
pub fn bedrock_response_to_openai(
    resp: &Value,
    model: &str,
    id: &str,
    created: u64,
) -> Result<Value> {
    let r = as_object(resp, "body")?;
    let output = as_object(require(r, "output", "")?, "output")?;
    let m = as_object(require(output, "message", "output")?, "output.message")?;
    let blocks = require_array(m, "content", "output.message")?;
    let mut content = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let path = index("output.message.content", j);
        let (kind, value) = block_kind(block, &path)?;
        match kind {
            // Several text blocks are one answer; they join as Anthropic's
            // do.
            "text" => content.push_str(
                value
                    .as_str()
                    .ok_or_else(|| wrong_type(&field(&path, "text"), "a string", value))?,
            ),
            "toolUse" => calls.push(tool_use_to_tool_call(value, &field(&path, "toolUse"))?),
            // Reasoning (possibly signed or redacted) that OpenAI's answer
            // has no place for, as with Anthropic's thinking blocks.
            "reasoningContent" => {}
            other => {
                return Err(invalid(
                    path,
                    format!("unknown content block type {other:?}"),
                ))
            }
        }
    }
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
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(require_str(r, "stopReason", "")?)?,
        }],
        "usage": openai_usage(get(r, "usage"), "usage")?,
    }))
}

/// Bedrock `stopReason` → OpenAI `finish_reason`.
pub(crate) fn finish_reason(stop_reason: &str) -> Result<&'static str> {
    Ok(match stop_reason {
        "end_turn" | "stop_sequence" => "stop",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        other => return Err(invalid("stopReason", format!("unknown value {other:?}"))),
    })
}

/// Bedrock `usage` → OpenAI `usage`. As with Anthropic, Bedrock's
/// `inputTokens` leaves out the prompt tokens read from or written to the
/// cache, and OpenAI's `prompt_tokens` counts the whole prompt, so it is
/// the sum; `totalTokens` is recomputed to match. `cached_tokens` is
/// reported only when Bedrock reported cache reads. A missing `usage`
/// counts as zero.
pub(crate) fn openai_usage(usage: Option<&Value>, path: &str) -> Result<Value> {
    let Some(usage) = usage else {
        return Ok(json!({ "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0 }));
    };
    let u = as_object(usage, path)?;
    let count = |key| get_u64(u, key, path).map(Option::unwrap_or_default);
    let input = count("inputTokens")?;
    let output = count("outputTokens")?;
    let cache_read = get_u64(u, "cacheReadInputTokens", path)?;
    let cache_write = count("cacheWriteInputTokens")?;
    let prompt = input
        .saturating_add(cache_read.unwrap_or(0))
        .saturating_add(cache_write);
    let mut out = json!({
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt.saturating_add(output),
    });
    if let Some(cached) = cache_read {
        out["prompt_tokens_details"] = json!({ "cached_tokens": cached });
    }
    Ok(out)
}

/// A Bedrock content block is an object with one member naming its type:
/// `{"text": "..."}`, `{"toolUse": {...}}`.
fn block_kind<'a>(block: &'a Value, path: &str) -> Result<(&'a str, &'a Value)> {
    let b = as_object(block, path)?;
    let mut members = b.iter().filter(|(_, v)| !v.is_null());
    match (members.next(), members.next()) {
        (Some((kind, value)), None) => Ok((kind, value)),
        (None, _) => Err(invalid(path, "empty content block")),
        (Some(_), Some(_)) => Err(invalid(
            path,
            "a content block holds exactly one member, its type",
        )),
    }
}

/// Bedrock `toolUse` → OpenAI `tool_calls[k]`.
fn tool_use_to_tool_call(tool_use: &Value, path: &str) -> Result<Value> {
    let t = as_object(tool_use, path)?;
    Ok(json!({
        "id": require_str(t, "toolUseId", path)?,
        "type": "function",
        "function": {
            "name": require_str(t, "name", path)?,
            "arguments": require(t, "input", path)?.to_string(),
        },
    }))
}

fn check_openai_fields(req: &Object) -> Result<()> {
    for (key, value) in req.iter().filter(|(_, v)| !v.is_null()) {
        // SDKs may send a field at its default value, which asks for nothing
        // Bedrock would do differently.
        let reason = match key.as_str() {
            k if OPENAI_FIELDS.contains(&k) => continue,
            "n" if value.as_u64() == Some(1) => continue,
            "n" => format!("Bedrock returns a single choice, {value} were asked for"),
            "logprobs" if value.as_bool() == Some(false) => continue,
            "presence_penalty" | "frequency_penalty" if value.as_f64() == Some(0.0) => continue,
            "response_format" => match value.get("type").and_then(Value::as_str) {
                Some("text") => continue,
                Some(t) => format!("type {t:?} has no {BEDROCK} equivalent"),
                None => format!("has no {BEDROCK} equivalent"),
            },
            _ => format!("has no {BEDROCK} equivalent"),
        };
        return Err(unsupported(key.as_str(), reason));
    }
    Ok(())
}

/// `inferenceConfig`, empty when the client set none of its knobs (the
/// model's defaults then apply; unlike Anthropic, Bedrock does not require
/// a token limit).
fn inference_config(req: &Object) -> Result<Object> {
    let mut config = Map::new();
    // max_completion_tokens wins when both are sent: OpenAI deprecated
    // max_tokens in its favour.
    let newer = get_u64(req, "max_completion_tokens", "")?;
    let older = get_u64(req, "max_tokens", "")?;
    if let Some(max) = newer.or(older) {
        config.insert("maxTokens".into(), max.into());
    }
    // Passed unchanged so the provider reports an out-of-range value in its
    // own words.
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        if let Some(v) = get_number(req, from, "")? {
            config.insert(to.into(), v.clone());
        }
    }
    if let Some(stop) = get(req, "stop") {
        let stop = match stop {
            Value::String(s) => vec![Value::String(s.clone())],
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if !item.is_string() {
                        return Err(wrong_type(&index("stop", i), "a string", item));
                    }
                }
                items.clone()
            }
            other => return Err(wrong_type("stop", "a string or an array of strings", other)),
        };
        config.insert("stopSequences".into(), stop.into());
    }
    Ok(config)
}

/// `toolConfig` from `tools`, `tool_choice` and `parallel_tool_calls`.
///
/// Bedrock has no `"none"`. Without tools the model cannot call one, which
/// is what `"none"` asks, so the tools are left out; but Bedrock refuses
/// `toolUse`/`toolResult` blocks in the history unless `toolConfig` is set,
/// and with it set the model may call a tool, so that combination is
/// refused.
fn tool_config(req: &Object, body: &Object) -> Result<Option<Value>> {
    let tools = get_array(req, "tools", "")?.unwrap_or_default();
    let choice = get(req, "tool_choice");
    let choice = match choice {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({ "auto": {} })),
            "required" => Some(json!({ "any": {} })),
            "none" => {
                if history_uses_tools(body) {
                    return Err(unsupported(
                        "tool_choice",
                        "\"none\" has no Bedrock Converse equivalent when the conversation \
                         holds tool calls (Bedrock then needs the tools declared, and may call them)",
                    ));
                }
                return Ok(None);
            }
            other => return Err(invalid("tool_choice", format!("unknown value {other:?}"))),
        },
        Some(Value::Object(o)) => {
            let kind = require_str(o, "type", "tool_choice")?;
            if kind != "function" {
                return Err(unsupported(
                    "tool_choice.type",
                    format!("tool choice {kind:?} has no {BEDROCK} equivalent"),
                ));
            }
            let function = as_object(
                require(o, "function", "tool_choice")?,
                "tool_choice.function",
            )?;
            let name = require_str(function, "name", "tool_choice.function")?;
            Some(json!({ "tool": { "name": name } }))
        }
        Some(other) => return Err(wrong_type("tool_choice", "a string or an object", other)),
    };
    if tools.is_empty() {
        if history_uses_tools(body) {
            return Err(unsupported(
                "tools",
                "Bedrock Converse needs the tools declared when the conversation holds tool calls",
            ));
        }
        return Ok(None);
    }
    // A limit on what the model is asked, not a hint: a client that relies
    // on one call per turn must hear that it will not get it.
    if get_bool(req, "parallel_tool_calls", "")? == Some(false) {
        return Err(unsupported(
            "parallel_tool_calls",
            format!("false has no {BEDROCK} equivalent (it cannot limit a turn to one tool call)"),
        ));
    }
    let mut config = Map::new();
    config.insert("tools".into(), openai_tools(tools)?.into());
    if let Some(choice) = choice {
        config.insert("toolChoice".into(), choice);
    }
    Ok(Some(config.into()))
}

fn history_uses_tools(body: &Object) -> bool {
    body.get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .any(|b| b.get("toolUse").is_some() || b.get("toolResult").is_some())
}

fn openai_tools(tools: &[Value]) -> Result<Vec<Value>> {
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let path = index("tools", i);
            let t = as_object(tool, &path)?;
            let kind = require_str(t, "type", &path)?;
            if kind != "function" {
                return Err(unsupported(
                    field(&path, "type"),
                    format!("tool type {kind:?} has no {BEDROCK} equivalent"),
                ));
            }
            let function_path = field(&path, "function");
            let f = as_object(require(t, "function", &path)?, &function_path)?;
            if get_bool(f, "strict", &function_path)? == Some(true) {
                return Err(unsupported(
                    field(&function_path, "strict"),
                    format!("strict function calling has no {BEDROCK} equivalent"),
                ));
            }
            let mut spec = Map::new();
            spec.insert(
                "name".into(),
                require_str(f, "name", &function_path)?.into(),
            );
            if let Some(description) = get_str(f, "description", &function_path)? {
                spec.insert("description".into(), description.into());
            }
            // Bedrock requires a schema; a function without parameters
            // takes an empty object.
            let schema = get(f, "parameters")
                .cloned()
                .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
            spec.insert("inputSchema".into(), json!({ "json": schema }));
            Ok(json!({ "toolSpec": spec }))
        })
        .collect()
}

/// OpenAI messages → (Bedrock `system` blocks, Bedrock messages).
fn openai_messages(input: &[Value]) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::with_capacity(input.len());
    for (i, m) in input.iter().enumerate() {
        let path = index("messages", i);
        let m = as_object(m, &path)?;
        let content_path = field(&path, "content");
        // `name` labels a participant; Bedrock has no such field and the
        // model is asked the same thing without it.
        let (role, known, blocks) =
            match require_str(m, "role", &path)? {
                // Bedrock takes instructions only at the top level, so system
                // messages are hoisted wherever they stood.
                "system" | "developer" => {
                    reject_unknown(m, &["role", "content", "name"], &path, BEDROCK)?;
                    system.extend(system_blocks(require(m, "content", &path)?, &content_path)?);
                    continue;
                }
                "user" => {
                    let blocks = content_blocks(require(m, "content", &path)?, &content_path)?;
                    ("user", &["role", "content", "name"][..], blocks)
                }
                "assistant" => {
                    let known = &["role", "content", "name", "tool_calls"][..];
                    ("assistant", known, assistant_blocks(m, &path)?)
                }
                // Bedrock carries tool results in the user turn.
                "tool" => {
                    let result = json!({ "toolResult": {
                        "toolUseId": require_str(m, "tool_call_id", &path)?,
                        "content": content_blocks(require(m, "content", &path)?, &content_path)?,
                    }});
                    (
                        "user",
                        &["role", "content", "tool_call_id"][..],
                        vec![result],
                    )
                }
                "function" => return Err(unsupported(
                    field(&path, "role"),
                    "the deprecated \"function\" role is not translated; send \"tool\" messages",
                )),
                other => {
                    return Err(invalid(
                        field(&path, "role"),
                        format!("unknown role {other:?}"),
                    ))
                }
            };
        reject_unknown(m, known, &path, BEDROCK)?;
        // Bedrock wants roles to alternate, and OpenAI sends one message per
        // tool result: a turn of the same role joins the previous one.
        match turns.last_mut() {
            Some((last, previous)) if *last == role => previous.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    if turns.is_empty() {
        return Err(invalid(
            "messages",
            "must hold at least one user or assistant message",
        ));
    }
    let messages = turns
        .into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect();
    Ok((system, messages))
}

/// A system message's text: a string or text parts, one block each.
fn system_blocks(content: &Value, path: &str) -> Result<Vec<Value>> {
    match content {
        Value::String(s) => Ok(vec![json!({ "text": s })]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| {
                let path = index(path, j);
                let p = as_object(part, &path)?;
                match require_str(p, "type", &path)? {
                    "text" => Ok(json!({ "text": require_str(p, "text", &path)? })),
                    other => Err(invalid(
                        path,
                        format!("system messages hold only text parts, got {other:?}"),
                    )),
                }
            })
            .collect(),
        other => Err(wrong_type(
            path,
            "a string or an array of text parts",
            other,
        )),
    }
}

/// User or tool message content: a string or content parts.
fn content_blocks(content: &Value, path: &str) -> Result<Vec<Value>> {
    match content {
        Value::String(s) => Ok(vec![json!({ "text": s })]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| part_to_block(p, &index(path, j)))
            .collect(),
        other => Err(wrong_type(
            path,
            "a string or an array of content parts",
            other,
        )),
    }
}

fn part_to_block(part: &Value, path: &str) -> Result<Value> {
    let p = as_object(part, path)?;
    match require_str(p, "type", path)? {
        "text" => Ok(json!({ "text": require_str(p, "text", path)? })),
        // Assistant history may hold a refusal; to Bedrock it is what the
        // model said.
        "refusal" => Ok(json!({ "text": require_str(p, "refusal", path)? })),
        "image_url" => {
            let image_path = field(path, "image_url");
            let image = as_object(require(p, "image_url", path)?, &image_path)?;
            // `detail` is a resolution hint Bedrock has no knob for.
            let url = require_str(image, "url", &image_path)?;
            image_block(url, &field(&image_path, "url"))
        }
        t @ ("input_audio" | "file") => Err(unsupported(
            path,
            format!("content part type {t:?} has no {BEDROCK} equivalent"),
        )),
        other => Err(invalid(
            path,
            format!("unknown content part type {other:?}"),
        )),
    }
}

/// A base64 `data:` URL → Bedrock image block. Bedrock fetches no URLs
/// (only S3 locations of the caller's own account), so an http(s) image
/// cannot be passed on; fetching it here would make the gateway a
/// client-steered HTTP client.
fn image_block(url: &str, path: &str) -> Result<Value> {
    let Some(rest) = strip_prefix_ignore_case(url, "data:") else {
        if strip_prefix_ignore_case(url, "https://").is_some()
            || strip_prefix_ignore_case(url, "http://").is_some()
        {
            return Err(unsupported(
                path,
                format!("{BEDROCK} takes images inline only; send a base64 data: URL"),
            ));
        }
        return Err(invalid(
            path,
            "expected a base64 data: URL (data:<media type>;base64,<data>)",
        ));
    };
    let bad = || {
        invalid(
            path,
            "expected a base64 data URL (data:<media type>;base64,<data>)",
        )
    };
    let (meta, data) = rest.split_once(',').ok_or_else(bad)?;
    let (media_type, encoding) = meta.rsplit_once(';').ok_or_else(bad)?;
    if !encoding.eq_ignore_ascii_case("base64") {
        return Err(bad());
    }
    let media_type = media_type.split(';').next().unwrap_or(media_type);
    let format = match media_type.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "" => return Err(bad()),
        other => {
            return Err(unsupported(
                path,
                format!("image type {other:?} has no {BEDROCK} equivalent (png, jpeg, gif, webp)"),
            ))
        }
    };
    Ok(json!({ "image": { "format": format, "source": { "bytes": data } } }))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Assistant content: its text, then one `toolUse` block per tool call.
fn assistant_blocks(m: &Object, path: &str) -> Result<Vec<Value>> {
    let content_path = field(path, "content");
    let mut blocks = match get(m, "content") {
        // Bedrock refuses blank text blocks; an assistant turn that only
        // called tools often carries "".
        Some(Value::String(s)) if s.is_empty() => vec![],
        Some(c) => content_blocks(c, &content_path)?,
        None => vec![],
    };
    let calls_path = field(path, "tool_calls");
    for (k, call) in get_array(m, "tool_calls", path)?
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        blocks.push(tool_call_to_tool_use(call, &index(&calls_path, k))?);
    }
    if blocks.is_empty() {
        return Err(invalid(
            path,
            "assistant message needs content or tool_calls",
        ));
    }
    Ok(blocks)
}

/// OpenAI `tool_calls[k]` → Bedrock `toolUse` block.
fn tool_call_to_tool_use(call: &Value, path: &str) -> Result<Value> {
    let c = as_object(call, path)?;
    if let Some(t) = get(c, "type")
        .and_then(Value::as_str)
        .filter(|t| *t != "function")
    {
        return Err(unsupported(
            field(path, "type"),
            format!("tool call type {t:?} has no {BEDROCK} equivalent"),
        ));
    }
    let function_path = field(path, "function");
    let function = as_object(require(c, "function", path)?, &function_path)?;
    let arguments = require_str(function, "arguments", &function_path)?;
    Ok(json!({ "toolUse": {
        "toolUseId": require_str(c, "id", path)?,
        "name": require_str(function, "name", &function_path)?,
        "input": parse_arguments(arguments, &field(&function_path, "arguments"))?,
    }}))
}

/// OpenAI carries tool arguments as a JSON string, Bedrock as a document.
fn parse_arguments(arguments: &str, path: &str) -> Result<Value> {
    // Some clients send "" for a call without arguments; it means `{}`.
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    let input: Value = serde_json::from_str(arguments)
        .map_err(|e| invalid(path, format!("not valid JSON: {e}")))?;
    if !input.is_object() {
        return Err(wrong_type(path, "a JSON object", &input));
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn err(result: Result<Value>) -> String {
        match result {
            Ok(v) => panic!("expected an error, got {v:#}"),
            Err(e) => e.to_string(),
        }
    }

    fn user(content: Value) -> Value {
        json!({ "role": "user", "content": content })
    }

    fn with(key: &str, value: Value) -> String {
        let mut req = json!({ "messages": [user(json!("hi"))] });
        req[key] = value;
        err(openai_request_to_bedrock(&req))
    }

    #[test]
    fn unsupported_fields_are_refused_by_name() {
        assert_eq!(
            with("response_format", json!({ "type": "json_object" })),
            "response_format: type \"json_object\" has no Bedrock Converse equivalent"
        );
        assert_eq!(
            with(
                "response_format",
                json!({ "type": "json_schema", "json_schema": { "name": "x", "schema": {} } })
            ),
            "response_format: type \"json_schema\" has no Bedrock Converse equivalent"
        );
        assert_eq!(
            with("n", json!(2)),
            "n: Bedrock returns a single choice, 2 were asked for"
        );
        assert_eq!(
            with("seed", json!(1)),
            "seed: has no Bedrock Converse equivalent"
        );
        let tools = json!([{ "type": "function", "function": { "name": "f", "strict": true } }]);
        assert_eq!(
            with("tools", tools),
            "tools[0].function.strict: strict function calling has no Bedrock Converse equivalent"
        );
        let req = json!({
            "messages": [user(json!("hi"))],
            "tools": [{ "type": "function", "function": { "name": "f" } }],
            "parallel_tool_calls": false,
        });
        assert_eq!(
            err(openai_request_to_bedrock(&req)),
            "parallel_tool_calls: false has no Bedrock Converse equivalent (it cannot limit a turn to one tool call)"
        );
        assert_eq!(
            with(
                "tool_choice",
                json!({ "type": "allowed_tools", "allowed_tools": {} })
            ),
            "tool_choice.type: tool choice \"allowed_tools\" has no Bedrock Converse equivalent"
        );
    }

    #[test]
    fn images_must_be_inline_and_of_a_known_type() {
        let image = |url: &str| {
            json!({ "messages": [user(json!([
                { "type": "text", "text": "look" },
                { "type": "image_url", "image_url": { "url": url } },
            ]))]})
        };
        assert_eq!(
            err(openai_request_to_bedrock(&image("https://example.com/cat.png"))),
            "messages[0].content[1].image_url.url: Bedrock Converse takes images inline only; send a base64 data: URL"
        );
        assert_eq!(
            err(openai_request_to_bedrock(&image("data:image/tiff;base64,AAAA"))),
            "messages[0].content[1].image_url.url: image type \"image/tiff\" has no Bedrock Converse equivalent (png, jpeg, gif, webp)"
        );
        assert_eq!(
            err(openai_request_to_bedrock(&image("data:image/png,AAAA"))),
            "messages[0].content[1].image_url.url: expected a base64 data URL (data:<media type>;base64,<data>)"
        );
        assert_eq!(
            err(openai_request_to_bedrock(&image("ftp://x/y.png"))),
            "messages[0].content[1].image_url.url: expected a base64 data: URL (data:<media type>;base64,<data>)"
        );
        let audio = json!({ "messages": [user(json!([
            { "type": "input_audio", "input_audio": { "data": "", "format": "wav" } },
        ]))]});
        assert_eq!(
            err(openai_request_to_bedrock(&audio)),
            "messages[0].content[0]: content part type \"input_audio\" has no Bedrock Converse equivalent"
        );
    }

    /// Bedrock needs `toolConfig` whenever the history holds tool blocks,
    /// which decides what `"none"` and a missing `tools` can become.
    #[test]
    fn tool_history_needs_the_tools() {
        let history = json!([
            user(json!("Weather?")),
            { "role": "assistant", "content": null, "tool_calls": [
                { "id": "t1", "type": "function", "function": { "name": "weather", "arguments": "{}" } },
            ]},
            { "role": "tool", "tool_call_id": "t1", "content": "18C" },
        ]);
        let tools = json!([{ "type": "function", "function": { "name": "weather" } }]);
        let none = json!({ "messages": history, "tools": tools, "tool_choice": "none" });
        assert!(err(openai_request_to_bedrock(&none))
            .starts_with("tool_choice: \"none\" has no Bedrock Converse equivalent when"));
        let no_tools = json!({ "messages": history });
        assert_eq!(
            err(openai_request_to_bedrock(&no_tools)),
            "tools: Bedrock Converse needs the tools declared when the conversation holds tool calls"
        );
        let auto = json!({ "messages": history, "tools": tools, "tool_choice": "auto" });
        let got = openai_request_to_bedrock(&auto).expect("auto");
        assert_eq!(got["toolConfig"]["toolChoice"], json!({ "auto": {} }));
        assert_eq!(got["messages"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn malformed_requests_name_the_field() {
        assert_eq!(
            err(openai_request_to_bedrock(&json!({ "model": "m" }))),
            "messages: required field is missing"
        );
        assert_eq!(
            err(openai_request_to_bedrock(
                &json!({ "messages": [{ "role": "system", "content": "x" }] })
            )),
            "messages: must hold at least one user or assistant message"
        );
        let call = |arguments: &str| {
            json!({ "messages": [
                user(json!("hi")),
                { "role": "assistant", "content": "", "tool_calls": [
                    { "id": "c", "type": "function", "function": { "name": "f", "arguments": arguments } },
                ]},
            ], "tools": [{ "type": "function", "function": { "name": "f" } }] })
        };
        assert!(err(openai_request_to_bedrock(&call("{oops")))
            .starts_with("messages[1].tool_calls[0].function.arguments: not valid JSON"));
        assert_eq!(
            err(openai_request_to_bedrock(&call("[1]"))),
            "messages[1].tool_calls[0].function.arguments: expected a JSON object, got an array"
        );
        assert_eq!(
            err(openai_request_to_bedrock(
                &json!({ "messages": [{ "role": "assistant", "content": "" }] })
            )),
            "messages[0]: assistant message needs content or tool_calls"
        );
        assert_eq!(
            with("stop", json!(["a", 1])),
            "stop[1]: expected a string, got a number"
        );
    }

    #[test]
    fn malformed_responses_name_the_field() {
        let resp = |content: Value, stop: &str| json!({ "output": { "message": { "role": "assistant", "content": content } }, "stopReason": stop });
        let to_openai = |r: &Value| bedrock_response_to_openai(r, "m", "id", 0);
        assert_eq!(
            err(to_openai(&resp(json!([{ "text": "hi" }]), "sleepy"))),
            "stopReason: unknown value \"sleepy\""
        );
        assert_eq!(
            err(to_openai(&resp(json!([{ "video": {} }]), "end_turn"))),
            "output.message.content[0]: unknown content block type \"video\""
        );
        assert_eq!(
            err(to_openai(&resp(
                json!([{ "text": "a", "toolUse": {} }]),
                "end_turn"
            ))),
            "output.message.content[0]: a content block holds exactly one member, its type"
        );
        assert_eq!(
            err(to_openai(&resp(
                json!([{ "toolUse": { "name": "f", "input": {} } }]),
                "tool_use"
            ))),
            "output.message.content[0].toolUse.toolUseId: required field is missing"
        );
        assert_eq!(
            err(to_openai(&json!({ "stopReason": "end_turn" }))),
            "output: required field is missing"
        );
        let mut r = resp(json!([]), "end_turn");
        r["usage"] = json!({ "inputTokens": -1 });
        assert_eq!(
            err(to_openai(&r)),
            "usage.inputTokens: expected a non-negative integer, got a number"
        );
    }

    /// An Anthropic client reaches Bedrock through OpenAI's shape.
    #[test]
    fn anthropic_requests_compose() {
        let anthropic = json!({
            "model": "claude",
            "system": "Be brief.",
            "max_tokens": 100,
            "stop_sequences": ["END"],
            "messages": [
                user(json!("Weather?")),
                { "role": "assistant", "content": [
                    { "type": "text", "text": "Checking." },
                    { "type": "tool_use", "id": "t1", "name": "weather", "input": { "city": "Paris" } },
                ]},
                user(json!([
                    { "type": "tool_result", "tool_use_id": "t1", "content": "18C" },
                    { "type": "text", "text": "And?" },
                ])),
            ],
            "tools": [{ "name": "weather", "input_schema": { "type": "object", "properties": {} } }],
            "tool_choice": { "type": "any" },
        });
        let openai = crate::gate::llm::translate::anthropic_request_to_openai(&anthropic)
            .expect("to openai");
        let bedrock = openai_request_to_bedrock(&openai).expect("to bedrock");
        assert_eq!(
            bedrock,
            json!({
                "system": [{ "text": "Be brief." }],
                "messages": [
                    { "role": "user", "content": [{ "text": "Weather?" }] },
                    { "role": "assistant", "content": [
                        { "text": "Checking." },
                        { "toolUse": { "toolUseId": "t1", "name": "weather", "input": { "city": "Paris" } } },
                    ]},
                    { "role": "user", "content": [
                        { "toolResult": { "toolUseId": "t1", "content": [{ "text": "18C" }] } },
                        { "text": "And?" },
                    ]},
                ],
                "inferenceConfig": { "maxTokens": 100, "stopSequences": ["END"] },
                "toolConfig": {
                    "tools": [{ "toolSpec": { "name": "weather", "inputSchema": { "json": { "type": "object", "properties": {} } } } }],
                    "toolChoice": { "any": {} },
                },
            })
        );
    }

    /// Every stop reason Bedrock documents has a finish reason.
    #[test]
    fn stop_reasons() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("guardrail_intervened", "content_filter"),
            ("content_filtered", "content_filter"),
        ] {
            assert_eq!(finish_reason(stop), Ok(finish), "{stop}");
        }
    }
}
