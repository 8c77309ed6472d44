//! Request bodies: OpenAI `POST /v1/chat/completions` ↔ Anthropic
//! `POST /v1/messages`.
use serde_json::{json, Map, Value};

use super::{
    content::{
        assistant_blocks, image_part, openai_parts_to_blocks, openai_system_texts, stop_sequences,
        text, tool_call_to_tool_use, tool_result_content,
    },
    json::{
        as_array, as_object, field, get, get_array, get_bool, get_number, get_str, get_u64, index,
        invalid, reject_unknown, require, require_array, require_str, unsupported, wrong_type,
        Object, Result,
    },
    DEFAULT_MAX_TOKENS,
};

const ANTHROPIC: &str = "Anthropic Messages";
const OPENAI: &str = "OpenAI Chat Completions";

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
    // Only says whether a stream ends with usage; Anthropic streams always
    // carry it, so the streaming translation reads it from the original.
    "stream_options",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
];

/// Top-level Anthropic fields that have a mapping.
const ANTHROPIC_FIELDS: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "stop_sequences",
    "stream",
    "metadata",
    "tools",
    "tool_choice",
];

/// The schema Anthropic needs for a function declared without parameters.
fn empty_schema() -> Value {
    json!({ "type": "object", "properties": {} })
}

pub fn openai_request_to_anthropic(req: &Value) -> Result<Value> {
    let req = as_object(req, "body")?;
    check_openai_fields(req)?;
    let (system, messages) = openai_messages(require_array(req, "messages", "")?)?;

    let mut out = Map::new();
    if let Some(model) = get_str(req, "model", "")? {
        out.insert("model".into(), model.into());
    }
    if !system.is_empty() {
        out.insert("system".into(), system.join("\n\n").into());
    }
    out.insert("messages".into(), messages.into());
    // max_completion_tokens wins when both are sent: OpenAI deprecated
    // max_tokens in its favour.
    let newer = get_u64(req, "max_completion_tokens", "")?;
    let older = get_u64(req, "max_tokens", "")?;
    out.insert(
        "max_tokens".into(),
        newer.or(older).unwrap_or(DEFAULT_MAX_TOKENS).into(),
    );
    copy_numbers(req, &mut out)?;
    if let Some(stop) = get(req, "stop") {
        out.insert("stop_sequences".into(), stop_sequences(stop, "stop")?);
    }
    if let Some(stream) = get_bool(req, "stream", "")? {
        out.insert("stream".into(), stream.into());
    }
    if let Some(user) = get_str(req, "user", "")? {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    let tools = get_array(req, "tools", "")?.unwrap_or_default();
    if !tools.is_empty() {
        out.insert("tools".into(), openai_tools(tools)?.into());
    }
    let parallel = get_bool(req, "parallel_tool_calls", "")?;
    if let Some(choice) = openai_tool_choice(get(req, "tool_choice"), parallel, !tools.is_empty())?
    {
        out.insert("tool_choice".into(), choice);
    }
    Ok(Value::Object(out))
}

pub fn anthropic_request_to_openai(req: &Value) -> Result<Value> {
    let req = as_object(req, "body")?;
    check_anthropic_fields(req)?;
    let input = require_array(req, "messages", "")?;
    if input.is_empty() {
        return Err(invalid("messages", "must hold at least one message"));
    }
    let mut messages = Vec::with_capacity(input.len() + 1);
    if let Some(system) = get(req, "system") {
        messages.push(json!({ "role": "system", "content": anthropic_system(system)? }));
    }
    for (i, m) in input.iter().enumerate() {
        anthropic_message(m, &index("messages", i), &mut messages)?;
    }

    let mut out = Map::new();
    if let Some(model) = get_str(req, "model", "")? {
        out.insert("model".into(), model.into());
    }
    out.insert("messages".into(), messages.into());
    // Not the deprecated max_tokens: OpenAI's reasoning models refuse it.
    if let Some(max) = get_u64(req, "max_tokens", "")? {
        out.insert("max_completion_tokens".into(), max.into());
    }
    copy_numbers(req, &mut out)?;
    if let Some(stop) = get(req, "stop_sequences") {
        as_array(stop, "stop_sequences")?;
        out.insert("stop".into(), stop_sequences(stop, "stop_sequences")?);
    }
    if let Some(stream) = get_bool(req, "stream", "")? {
        out.insert("stream".into(), stream.into());
    }
    if let Some(metadata) = get(req, "metadata") {
        let metadata = as_object(metadata, "metadata")?;
        reject_unknown(metadata, &["user_id"], "metadata", OPENAI)?;
        if let Some(user) = get_str(metadata, "user_id", "metadata")? {
            out.insert("user".into(), user.into());
        }
    }
    let tools = get_array(req, "tools", "")?.unwrap_or_default();
    if !tools.is_empty() {
        out.insert("tools".into(), anthropic_tools(tools)?.into());
    }
    if let Some(choice) = get(req, "tool_choice") {
        let (choice, parallel) = anthropic_tool_choice(choice)?;
        out.insert("tool_choice".into(), choice);
        if let Some(parallel) = parallel {
            out.insert("parallel_tool_calls".into(), parallel.into());
        }
    }
    Ok(Value::Object(out))
}

/// Sampling numbers both protocols name alike. OpenAI allows temperature up
/// to 2 and Anthropic up to 1; the value is passed unchanged so the provider
/// reports a bad one in its own words.
fn copy_numbers(req: &Object, out: &mut Object) -> Result<()> {
    for key in ["temperature", "top_p"] {
        if let Some(v) = get_number(req, key, "")? {
            out.insert(key.into(), v.clone());
        }
    }
    Ok(())
}

fn check_openai_fields(req: &Object) -> Result<()> {
    for (key, value) in req.iter().filter(|(_, v)| !v.is_null()) {
        // SDKs may send a field at its default value, which asks for nothing
        // Anthropic would do differently.
        let reason = match key.as_str() {
            k if OPENAI_FIELDS.contains(&k) => continue,
            "n" if value.as_u64() == Some(1) => continue,
            "n" => format!("Anthropic returns a single choice, {value} were asked for"),
            "logprobs" if value.as_bool() == Some(false) => continue,
            "presence_penalty" | "frequency_penalty" if value.as_f64() == Some(0.0) => continue,
            "response_format" => match value.get("type").and_then(Value::as_str) {
                Some("text") => continue,
                Some(t) => format!("type {t:?} has no {ANTHROPIC} equivalent"),
                None => format!("has no {ANTHROPIC} equivalent"),
            },
            _ => format!("has no {ANTHROPIC} equivalent"),
        };
        return Err(unsupported(key.as_str(), reason));
    }
    Ok(())
}

fn check_anthropic_fields(req: &Object) -> Result<()> {
    for (key, value) in req.iter().filter(|(_, v)| !v.is_null()) {
        match key.as_str() {
            k if ANTHROPIC_FIELDS.contains(&k) => {}
            "thinking" if value.get("type").and_then(Value::as_str) == Some("disabled") => {}
            _ => {
                return Err(unsupported(
                    key.as_str(),
                    format!("has no {OPENAI} equivalent"),
                ))
            }
        }
    }
    Ok(())
}

/// OpenAI messages → (Anthropic `system` texts, Anthropic messages).
fn openai_messages(input: &[Value]) -> Result<(Vec<String>, Vec<Value>)> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Value)> = Vec::with_capacity(input.len());
    for (i, m) in input.iter().enumerate() {
        let path = index("messages", i);
        let m = as_object(m, &path)?;
        let content_path = field(&path, "content");
        // `name` labels a participant; Anthropic has no such field and the
        // model is asked the same thing without it.
        let (role, known, content) =
            match require_str(m, "role", &path)? {
                // Anthropic takes instructions only at the top level, so system
                // messages are hoisted wherever they stood.
                "system" | "developer" => {
                    reject_unknown(m, &["role", "content", "name"], &path, ANTHROPIC)?;
                    let content = require(m, "content", &path)?;
                    system.extend(openai_system_texts(content, &content_path)?);
                    continue;
                }
                "user" => {
                    let content = openai_content(require(m, "content", &path)?, &content_path)?;
                    ("user", &["role", "content", "name"][..], content)
                }
                "assistant" => {
                    let known = &["role", "content", "name", "tool_calls"][..];
                    ("assistant", known, openai_assistant(m, &path)?)
                }
                // Anthropic carries tool results in the user turn.
                "tool" => {
                    let result = json!({
                        "type": "tool_result",
                        "tool_use_id": require_str(m, "tool_call_id", &path)?,
                        "content": openai_content(require(m, "content", &path)?, &content_path)?,
                    });
                    (
                        "user",
                        &["role", "content", "tool_call_id"][..],
                        json!([result]),
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
        reject_unknown(m, known, &path, ANTHROPIC)?;
        push_turn(&mut turns, role, content);
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

/// Appends a turn, merging it into the previous one of the same role:
/// Anthropic wants roles to alternate, and OpenAI sends one message per
/// tool result.
fn push_turn(turns: &mut Vec<(&'static str, Value)>, role: &'static str, content: Value) {
    fn blocks(content: Value) -> Vec<Value> {
        match content {
            Value::String(s) => vec![text(&s)],
            Value::Array(blocks) => blocks,
            other => vec![other],
        }
    }
    match turns.last_mut() {
        Some((last, previous)) if *last == role => {
            let mut merged = blocks(previous.take());
            merged.extend(blocks(content));
            *previous = Value::Array(merged);
        }
        _ => turns.push((role, content)),
    }
}

/// A string stays a string; content parts become blocks.
fn openai_content(content: &Value, path: &str) -> Result<Value> {
    match content {
        Value::String(_) => Ok(content.clone()),
        Value::Array(parts) => Ok(openai_parts_to_blocks(parts, path)?.into()),
        other => Err(wrong_type(
            path,
            "a string or an array of content parts",
            other,
        )),
    }
}

/// Assistant content: its text, then one `tool_use` block per tool call.
fn openai_assistant(m: &Object, path: &str) -> Result<Value> {
    let content_path = field(path, "content");
    let calls = get_array(m, "tool_calls", path)?.unwrap_or_default();
    let content = match get(m, "content") {
        Some(c) if calls.is_empty() => return openai_content(c, &content_path),
        Some(Value::String(s)) if s.is_empty() => vec![],
        Some(Value::String(s)) => vec![text(s)],
        Some(Value::Array(parts)) => openai_parts_to_blocks(parts, &content_path)?,
        Some(other) => {
            return Err(wrong_type(
                &content_path,
                "a string or an array of content parts",
                other,
            ))
        }
        None => vec![],
    };
    let calls_path = field(path, "tool_calls");
    let calls = calls
        .iter()
        .enumerate()
        .map(|(k, c)| tool_call_to_tool_use(c, &index(&calls_path, k)));
    let blocks = content
        .into_iter()
        .map(Ok)
        .chain(calls)
        .collect::<Result<Vec<_>>>()?;
    if blocks.is_empty() {
        return Err(invalid(
            path,
            "assistant message needs content or tool_calls",
        ));
    }
    Ok(blocks.into())
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
                    format!("tool type {kind:?} has no {ANTHROPIC} equivalent"),
                ));
            }
            let function_path = field(&path, "function");
            let f = as_object(require(t, "function", &path)?, &function_path)?;
            // Strict mode promises schema-valid arguments; Anthropic does not
            // make that promise, so a client relying on it must hear.
            if get_bool(f, "strict", &function_path)? == Some(true) {
                return Err(unsupported(
                    field(&function_path, "strict"),
                    format!("strict function calling has no {ANTHROPIC} equivalent"),
                ));
            }
            let mut out = Map::new();
            out.insert(
                "name".into(),
                require_str(f, "name", &function_path)?.into(),
            );
            if let Some(description) = get_str(f, "description", &function_path)? {
                out.insert("description".into(), description.into());
            }
            let schema = get(f, "parameters").cloned().unwrap_or_else(empty_schema);
            out.insert("input_schema".into(), schema);
            Ok(out.into())
        })
        .collect()
}

fn anthropic_tools(tools: &[Value]) -> Result<Vec<Value>> {
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let path = index("tools", i);
            let t = as_object(tool, &path)?;
            // Typed tools (web_search_…, bash_…) run on Anthropic's side.
            if let Some(kind) = get_str(t, "type", &path)?.filter(|k| *k != "custom") {
                return Err(unsupported(
                    field(&path, "type"),
                    format!("server tool {kind:?} has no {OPENAI} equivalent"),
                ));
            }
            let mut function = Map::new();
            function.insert("name".into(), require_str(t, "name", &path)?.into());
            if let Some(description) = get_str(t, "description", &path)? {
                function.insert("description".into(), description.into());
            }
            function.insert(
                "parameters".into(),
                require(t, "input_schema", &path)?.clone(),
            );
            // cache_control is dropped: OpenAI caches prompt prefixes itself.
            Ok(json!({ "type": "function", "function": function }))
        })
        .collect()
}

/// OpenAI `tool_choice` and `parallel_tool_calls` → Anthropic `tool_choice`,
/// which holds both.
fn openai_tool_choice(
    choice: Option<&Value>,
    parallel: Option<bool>,
    has_tools: bool,
) -> Result<Option<Value>> {
    let mut out = Map::new();
    match choice {
        None if parallel == Some(false) && has_tools => {
            out.insert("type".into(), "auto".into());
        }
        None => return Ok(None),
        Some(Value::String(s)) => {
            let kind = match s.as_str() {
                "auto" => "auto",
                "required" => "any",
                "none" => "none",
                other => return Err(invalid("tool_choice", format!("unknown value {other:?}"))),
            };
            out.insert("type".into(), kind.into());
        }
        Some(Value::Object(o)) => {
            let kind = require_str(o, "type", "tool_choice")?;
            if kind != "function" {
                return Err(unsupported(
                    "tool_choice.type",
                    format!("tool choice {kind:?} has no {ANTHROPIC} equivalent"),
                ));
            }
            let function = as_object(
                require(o, "function", "tool_choice")?,
                "tool_choice.function",
            )?;
            out.insert("type".into(), "tool".into());
            out.insert(
                "name".into(),
                require_str(function, "name", "tool_choice.function")?.into(),
            );
        }
        Some(other) => return Err(wrong_type("tool_choice", "a string or an object", other)),
    }
    // With "none" no tool is called, and Anthropic's none takes no options.
    if parallel == Some(false) && out.get("type").is_some_and(|t| t != "none") {
        out.insert("disable_parallel_tool_use".into(), true.into());
    }
    Ok(Some(out.into()))
}

/// Anthropic `tool_choice` → (OpenAI `tool_choice`, `parallel_tool_calls`).
fn anthropic_tool_choice(choice: &Value) -> Result<(Value, Option<bool>)> {
    let c = as_object(choice, "tool_choice")?;
    let openai = match require_str(c, "type", "tool_choice")? {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => json!({
            "type": "function",
            "function": { "name": require_str(c, "name", "tool_choice")? },
        }),
        other => {
            return Err(invalid(
                "tool_choice.type",
                format!("unknown value {other:?}"),
            ))
        }
    };
    let parallel = get_bool(c, "disable_parallel_tool_use", "tool_choice")?
        .filter(|disabled| *disabled)
        .map(|_| false);
    Ok((openai, parallel))
}

/// Anthropic `system` → OpenAI system message content, keeping its shape.
fn anthropic_system(system: &Value) -> Result<Value> {
    match system {
        Value::String(_) => Ok(system.clone()),
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let path = index("system", i);
                let b = as_object(b, &path)?;
                match require_str(b, "type", &path)? {
                    "text" => Ok(text(require_str(b, "text", &path)?)),
                    other => Err(invalid(
                        path,
                        format!("system blocks must be text, got {other:?}"),
                    )),
                }
            })
            .collect::<Result<Vec<_>>>()
            .map(Value::Array),
        other => Err(wrong_type(
            "system",
            "a string or an array of text blocks",
            other,
        )),
    }
}

/// One Anthropic message → one or more OpenAI messages, appended to `out`.
fn anthropic_message(m: &Value, path: &str, out: &mut Vec<Value>) -> Result<()> {
    let m = as_object(m, path)?;
    reject_unknown(m, &["role", "content"], path, OPENAI)?;
    let role = require_str(m, "role", path)?;
    let content = require(m, "content", path)?;
    let content_path = field(path, "content");
    match (role, content) {
        ("user" | "assistant", Value::String(_)) => {
            out.push(json!({ "role": role, "content": content }));
            Ok(())
        }
        ("user", Value::Array(blocks)) => anthropic_user(blocks, &content_path, out),
        ("assistant", Value::Array(blocks)) => {
            out.push(anthropic_assistant(blocks, &content_path)?);
            Ok(())
        }
        ("user" | "assistant", other) => Err(wrong_type(&content_path, "a string or an array of blocks", other)),
        (other, _) => Err(invalid(
            field(path, "role"),
            format!("unknown role {other:?} (Anthropic messages are \"user\" or \"assistant\"; instructions go in \"system\")"),
        )),
    }
}

/// A user turn's blocks → OpenAI tool messages, then one user message with
/// the rest. Tool results go first because OpenAI wants them straight after
/// the assistant message that made the calls (Anthropic puts them first too).
fn anthropic_user(blocks: &[Value], path: &str, out: &mut Vec<Value>) -> Result<()> {
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let path = index(path, j);
        let b = as_object(block, &path)?;
        // cache_control and citations are dropped throughout: OpenAI caches
        // by itself and has no citations on input.
        match require_str(b, "type", &path)? {
            "text" => parts.push(text(require_str(b, "text", &path)?)),
            "image" => parts.push(image_part(
                require(b, "source", &path)?,
                &field(&path, "source"),
            )?),
            // is_error has no OpenAI field; the model still reads the error
            // text in the content.
            "tool_result" => out.push(json!({
                "role": "tool",
                "tool_call_id": require_str(b, "tool_use_id", &path)?,
                "content": tool_result_content(get(b, "content"), &field(&path, "content"))?,
            })),
            t @ ("document" | "search_result" | "container_upload") => {
                return Err(unsupported(
                    path,
                    format!("{t:?} blocks have no {OPENAI} equivalent"),
                ))
            }
            other => {
                return Err(invalid(
                    path,
                    format!("unknown content block type {other:?} in a user message"),
                ))
            }
        }
    }
    if !parts.is_empty() {
        out.push(json!({ "role": "user", "content": parts }));
    }
    Ok(())
}

/// An assistant turn's blocks → one OpenAI assistant message.
fn anthropic_assistant(blocks: &[Value], path: &str) -> Result<Value> {
    let (content, calls) = assistant_blocks(blocks, path, " in an assistant message")?;
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    // OpenAI allows null content only beside tool calls.
    let content = if content.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        content.into()
    };
    message.insert("content".into(), content);
    if !calls.is_empty() {
        message.insert("tool_calls".into(), calls.into());
    }
    Ok(message.into())
}
