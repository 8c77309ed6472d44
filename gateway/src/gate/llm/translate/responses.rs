//! OpenAI Responses API (`POST /v1/responses`) ↔ OpenAI Chat Completions,
//! non-streaming; the stream is `stream::ChatToResponses`.
//!
//! This is a front end, not a provider: a Responses request becomes a chat
//! request, which the gate then sends to an OpenAI-compatible upstream or
//! translates on to Anthropic, Gemini or Bedrock with the other functions
//! here. So a field chat can say is passed on even when the provider
//! behind it cannot (that provider's translation refuses it, naming it),
//! and only what chat itself has no words for is refused here.
//!
//! The gateway keeps no conversation state: a response cannot be stored,
//! fetched or continued from (`previous_response_id`, `conversation`), and
//! the client sends the whole conversation in `input` every time.
//!
//! Every id in the answer is derived from the `id` the caller passes, so
//! these functions read no clock and no random source.
use serde_json::{json, Map, Value};

use super::json::{
    as_object, field, get, get_array, get_bool, get_number, get_str, get_u64, index, invalid,
    reject_unknown, require, require_str, unsupported, wrong_type, Object, Result,
};

const CHAT: &str = "OpenAI Chat Completions";

/// Top-level Responses fields that have a mapping (or are dropped on
/// purpose, see [`responses_request_to_chat`]).
const RESPONSES_FIELDS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "text",
    "user",
    "store",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
];

pub fn responses_request_to_chat(req: &Value) -> Result<Value> {
    let req = as_object(req, "body")?;
    check_fields(req)?;
    let mut messages = Vec::new();
    if let Some(instructions) = get(req, "instructions") {
        // Instructions come first whatever `input` holds, as the Responses
        // API puts them before the conversation.
        let content = match instructions {
            Value::String(s) => s.clone(),
            other => return Err(wrong_type("instructions", "a string", other)),
        };
        messages.push(json!({ "role": "system", "content": content }));
    }
    match require(req, "input", "")? {
        Value::String(s) => messages.push(json!({ "role": "user", "content": s })),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, &index("input", i), &mut messages)?;
            }
        }
        other => {
            return Err(wrong_type(
                "input",
                "a string or an array of input items",
                other,
            ))
        }
    }
    if !messages
        .iter()
        .any(|m| m["role"] != "system" && m["role"] != "developer")
    {
        return Err(invalid(
            "input",
            "must hold at least one user, assistant or tool item",
        ));
    }

    let mut out = Map::new();
    if let Some(model) = get_str(req, "model", "")? {
        out.insert("model".into(), model.into());
    }
    out.insert("messages".into(), messages.into());
    // Not the deprecated max_tokens: OpenAI's reasoning models refuse it.
    if let Some(max) = get_u64(req, "max_output_tokens", "")? {
        out.insert("max_completion_tokens".into(), max.into());
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = get_number(req, key, "")? {
            out.insert(key.into(), v.clone());
        }
    }
    if get_bool(req, "stream", "")? == Some(true) {
        out.insert("stream".into(), true.into());
        // A Responses stream always ends with the usage; chat streams carry
        // it only when asked.
        out.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    // Chat names these alike and means the same by them.
    for key in [
        "user",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
    ] {
        if let Some(v) = get_str(req, key, "")? {
            out.insert(key.into(), v.into());
        }
    }
    if let Some(parallel) = get_bool(req, "parallel_tool_calls", "")? {
        out.insert("parallel_tool_calls".into(), parallel.into());
    }
    let tools = get_array(req, "tools", "")?.unwrap_or_default();
    if !tools.is_empty() {
        out.insert("tools".into(), chat_tools(tools)?.into());
    }
    if let Some(choice) = get(req, "tool_choice") {
        out.insert("tool_choice".into(), chat_tool_choice(choice)?);
    }
    if let Some(text) = get(req, "text") {
        text_config(as_object(text, "text")?, &mut out)?;
    }
    // `store` and `metadata` are dropped: they ask the API to keep the
    // response for later retrieval, and the gateway keeps none (the answer
    // says `store: false`). `metadata` only labels what would be stored.
    if let Some(metadata) = get(req, "metadata") {
        as_object(metadata, "metadata")?;
    }
    get_bool(req, "store", "")?;
    Ok(Value::Object(out))
}

fn check_fields(req: &Object) -> Result<()> {
    for (key, value) in req.iter().filter(|(_, v)| !v.is_null()) {
        // SDKs may send a field at its default value, which asks for
        // nothing a chat request would do differently.
        let reason = match key.as_str() {
            k if RESPONSES_FIELDS.contains(&k) => continue,
            "previous_response_id" | "conversation" => {
                "the gateway keeps no stored responses or conversations to continue from; \
                 send the whole conversation in `input`"
                    .to_owned()
            }
            "background" if value.as_bool() == Some(false) => continue,
            "background" => "the gateway does not run responses in the background".to_owned(),
            "truncation" if value.as_str() == Some("disabled") => continue,
            "include" if value.as_array().is_some_and(Vec::is_empty) => continue,
            "reasoning" if value.as_object().is_some_and(all_null) => continue,
            "reasoning" => format!(
                "reasoning settings are not translated to {CHAT} (the providers behind it \
                 configure reasoning differently)"
            ),
            _ => format!("is not translated to {CHAT}"),
        };
        return Err(unsupported(key.as_str(), reason));
    }
    Ok(())
}

/// `{}` or `{"effort": null, "summary": null}`: the defaults, asking for
/// nothing.
fn all_null(o: &Object) -> bool {
    o.values().all(Value::is_null)
}

/// One `input` item → chat messages appended to `out`.
fn input_item(item: &Value, path: &str, out: &mut Vec<Value>) -> Result<()> {
    let it = as_object(item, path)?;
    // A message may leave out `type` (the SDKs' "easy" input message).
    let kind = get_str(it, "type", path)?.unwrap_or("message");
    match kind {
        "message" => {
            // `id` and `status` come with output items the client replays;
            // `phase` labels an assistant message as commentary or final
            // answer, which asks the model nothing.
            reject_unknown(
                it,
                &["type", "role", "content", "id", "status", "phase"],
                path,
                CHAT,
            )?;
            out.push(message(it, path)?);
        }
        "function_call" => {
            reject_unknown(
                it,
                &["type", "call_id", "name", "arguments", "id", "status"],
                path,
                CHAT,
            )?;
            let call = json!({
                "id": require_str(it, "call_id", path)?,
                "type": "function",
                "function": {
                    "name": require_str(it, "name", path)?,
                    "arguments": require_str(it, "arguments", path)?,
                },
            });
            push_tool_call(out, call);
        }
        "function_call_output" => {
            reject_unknown(
                it,
                &["type", "call_id", "output", "id", "status"],
                path,
                CHAT,
            )?;
            let output_path = field(path, "output");
            let content = match require(it, "output", path)? {
                Value::String(s) => Value::String(s.clone()),
                Value::Array(parts) => tool_output_parts(parts, &output_path)?.into(),
                other => {
                    return Err(wrong_type(
                        &output_path,
                        "a string or an array of content parts",
                        other,
                    ))
                }
            };
            out.push(json!({
                "role": "tool",
                "tool_call_id": require_str(it, "call_id", path)?,
                "content": content,
            }));
        }
        "reasoning" => {
            return Err(unsupported(
                field(path, "type"),
                format!("reasoning items have no {CHAT} equivalent"),
            ))
        }
        "item_reference" => {
            return Err(unsupported(
                field(path, "type"),
                "the gateway keeps no stored items to refer to; send the item itself",
            ))
        }
        other => {
            return Err(unsupported(
                field(path, "type"),
                format!("input item type {other:?} has no {CHAT} equivalent"),
            ))
        }
    }
    Ok(())
}

/// A Responses message → a chat message of the same role.
fn message(m: &Object, path: &str) -> Result<Value> {
    let role = require_str(m, "role", path)?;
    if !matches!(role, "user" | "assistant" | "system" | "developer") {
        return Err(invalid(
            field(path, "role"),
            format!("unknown role {role:?}"),
        ));
    }
    let content_path = field(path, "content");
    let content = match require(m, "content", path)? {
        Value::String(s) => Value::String(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| content_part(p, role, &index(&content_path, j)))
            .collect::<Result<Vec<_>>>()?
            .into(),
        other => {
            return Err(wrong_type(
                &content_path,
                "a string or an array of content parts",
                other,
            ))
        }
    };
    Ok(json!({ "role": role, "content": content }))
}

fn content_part(part: &Value, role: &str, path: &str) -> Result<Value> {
    let p = as_object(part, path)?;
    let kind = require_str(p, "type", path)?;
    // Text is `input_text` in what the client wrote and `output_text` in
    // the assistant output it replays; chat has one text part for both.
    // Annotations and log-probabilities on replayed output are about the
    // text, not part of it.
    match (kind, role) {
        ("input_text", _) | ("output_text", "assistant") => {
            Ok(json!({ "type": "text", "text": require_str(p, "text", path)? }))
        }
        ("refusal", "assistant") => {
            Ok(json!({ "type": "refusal", "refusal": require_str(p, "refusal", path)? }))
        }
        ("input_image", "user") => image(p, path),
        ("input_file", "user") => file(p, path),
        ("output_text" | "refusal", _) => Err(invalid(
            path,
            format!("{kind:?} parts belong in assistant messages, not {role:?} ones"),
        )),
        ("input_image" | "input_file", _) => Err(unsupported(
            path,
            format!("{kind:?} parts in {role:?} messages have no {CHAT} equivalent"),
        )),
        (other, _) => Err(invalid(
            path,
            format!("unknown content part type {other:?}"),
        )),
    }
}

fn image(p: &Object, path: &str) -> Result<Value> {
    if get(p, "file_id").is_some() {
        return Err(unsupported(
            field(path, "file_id"),
            "the gateway cannot fetch uploaded files; send the image as image_url (an http(s) or base64 data: URL)",
        ));
    }
    let mut image = Map::new();
    image.insert("url".into(), require_str(p, "image_url", path)?.into());
    // `detail` means the same to chat; "original" is newer than chat and is
    // refused there by name.
    if let Some(detail) = get_str(p, "detail", path)? {
        image.insert("detail".into(), detail.into());
    }
    Ok(json!({ "type": "image_url", "image_url": image }))
}

/// Inline files are chat `file` parts; files by id or URL would need the
/// gateway to fetch them.
fn file(p: &Object, path: &str) -> Result<Value> {
    for key in ["file_id", "file_url"] {
        if get(p, key).is_some() {
            return Err(unsupported(
                field(path, key),
                "the gateway cannot fetch files; send the file inline as file_data",
            ));
        }
    }
    let mut file = Map::new();
    file.insert(
        "file_data".into(),
        require_str(p, "file_data", path)?.into(),
    );
    if let Some(name) = get_str(p, "filename", path)? {
        file.insert("filename".into(), name.into());
    }
    Ok(json!({ "type": "file", "file": file }))
}

/// A tool's output given as parts: chat tool messages hold text parts
/// only.
fn tool_output_parts(parts: &[Value], path: &str) -> Result<Vec<Value>> {
    parts
        .iter()
        .enumerate()
        .map(|(j, part)| {
            let path = index(path, j);
            let p = as_object(part, &path)?;
            match require_str(p, "type", &path)? {
                "input_text" => Ok(json!({ "type": "text", "text": require_str(p, "text", &path)? })),
                t @ ("input_image" | "input_file") => Err(unsupported(
                    path,
                    format!("{t:?} in a function call's output has no {CHAT} equivalent (tool messages hold text)"),
                )),
                other => Err(invalid(path, format!("unknown content part type {other:?}"))),
            }
        })
        .collect()
}

/// Responses lists an assistant turn's text and each of its calls as
/// separate items; chat holds them in one assistant message. So a call
/// joins the assistant message just before it, if there is one.
fn push_tool_call(out: &mut Vec<Value>, call: Value) {
    if let Some(last) = out.last_mut().filter(|m| m["role"] == "assistant") {
        if let Some(Value::Array(calls)) = last.get_mut("tool_calls") {
            calls.push(call);
        } else {
            last["tool_calls"] = json!([call]);
            // Chat's own shape for a message that only calls.
            if last["content"].as_str() == Some("") {
                last["content"] = Value::Null;
            }
        }
        return;
    }
    out.push(json!({ "role": "assistant", "content": null, "tool_calls": [call] }));
}

fn chat_tools(tools: &[Value]) -> Result<Vec<Value>> {
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let path = index("tools", i);
            let t = as_object(tool, &path)?;
            let kind = require_str(t, "type", &path)?;
            if kind != "function" {
                // Hosted tools (web_search, file_search, code_interpreter…)
                // run on OpenAI's side of the Responses API.
                return Err(unsupported(
                    field(&path, "type"),
                    format!("tool type {kind:?} has no {CHAT} equivalent"),
                ));
            }
            reject_unknown(
                t,
                &["type", "name", "description", "parameters", "strict"],
                &path,
                CHAT,
            )?;
            let mut function = Map::new();
            function.insert("name".into(), require_str(t, "name", &path)?.into());
            if let Some(description) = get_str(t, "description", &path)? {
                function.insert("description".into(), description.into());
            }
            if let Some(parameters) = get(t, "parameters") {
                as_object(parameters, &field(&path, "parameters"))?;
                function.insert("parameters".into(), parameters.clone());
            }
            // The Responses API defaults `strict` to true and chat to
            // false; only what the client said is passed on, so a tool
            // declared without it still reaches providers that cannot
            // promise schema-valid arguments, and one that asked for the
            // promise hears if the provider cannot keep it.
            if let Some(strict) = get_bool(t, "strict", &path)? {
                function.insert("strict".into(), strict.into());
            }
            Ok(json!({ "type": "function", "function": function }))
        })
        .collect()
}

fn chat_tool_choice(choice: &Value) -> Result<Value> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" | "none" | "required" => Ok(choice.clone()),
            other => Err(invalid("tool_choice", format!("unknown value {other:?}"))),
        },
        Value::Object(o) => match require_str(o, "type", "tool_choice")? {
            "function" => Ok(json!({
                "type": "function",
                "function": { "name": require_str(o, "name", "tool_choice")? },
            })),
            other => Err(unsupported(
                "tool_choice.type",
                format!("tool choice {other:?} has no {CHAT} equivalent"),
            )),
        },
        other => Err(wrong_type("tool_choice", "a string or an object", other)),
    }
}

/// `text.format` → `response_format`; `text.verbosity` is chat's
/// `verbosity`.
fn text_config(text: &Object, out: &mut Object) -> Result<()> {
    reject_unknown(text, &["format", "verbosity"], "text", CHAT)?;
    if let Some(verbosity) = get_str(text, "verbosity", "text")? {
        out.insert("verbosity".into(), verbosity.into());
    }
    let Some(format) = get(text, "format") else {
        return Ok(());
    };
    let path = "text.format";
    let f = as_object(format, path)?;
    match require_str(f, "type", path)? {
        // Plain text is what chat answers anyway.
        "text" => {}
        "json_object" => {
            out.insert("response_format".into(), json!({ "type": "json_object" }));
        }
        "json_schema" => {
            reject_unknown(
                f,
                &["type", "name", "schema", "strict", "description"],
                path,
                CHAT,
            )?;
            let mut schema = Map::new();
            schema.insert("name".into(), require_str(f, "name", path)?.into());
            if let Some(description) = get_str(f, "description", path)? {
                schema.insert("description".into(), description.into());
            }
            let body = require(f, "schema", path)?;
            as_object(body, &field(path, "schema"))?;
            schema.insert("schema".into(), body.clone());
            if let Some(strict) = get_bool(f, "strict", path)? {
                schema.insert("strict".into(), strict.into());
            }
            out.insert(
                "response_format".into(),
                json!({ "type": "json_schema", "json_schema": schema }),
            );
        }
        other => {
            return Err(unsupported(
                field(path, "type"),
                format!("{other:?} has no {CHAT} equivalent"),
            ))
        }
    }
    Ok(())
}

/// A `chat.completion` → a Responses `response`. `model` is the name to
/// report, `id` the response id (`resp_…`) the caller made up, which the
/// output items' ids are derived from, and `created` the caller's clock
/// (unix seconds).
///
/// The members that echo the request (`instructions`, `tools`…) are given
/// their defaults: this function does not see the request. Call
/// [`echo_request`] to fill them in.
pub fn chat_response_to_responses(
    resp: &Value,
    model: &str,
    id: &str,
    created: u64,
) -> Result<Value> {
    let r = as_object(resp, "body")?;
    // Requests translated from Responses never ask for n > 1, so one
    // choice is all there is.
    let choice = get_array(r, "choices", "")?
        .and_then(<[Value]>::first)
        .ok_or_else(|| invalid("choices", "must hold at least one choice"))?;
    let choice = as_object(choice, "choices[0]")?;
    let path = "choices[0].message";
    let m = as_object(require(choice, "message", "choices[0]")?, path)?;

    let mut output = Vec::new();
    let mut content = Vec::new();
    if let Some(text) = get_str(m, "content", path)?.filter(|s| !s.is_empty()) {
        content.push(output_text(text));
    }
    if let Some(refusal) = get_str(m, "refusal", path)? {
        content.push(refusal_part(refusal));
    }
    if !content.is_empty() {
        output.push(json!({
            "type": "message",
            "id": item_id(id, "msg", 0),
            "status": "completed",
            "role": "assistant",
            "content": content,
        }));
    }
    let calls_path = field(path, "tool_calls");
    for (k, call) in get_array(m, "tool_calls", path)?
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let call_path = index(&calls_path, k);
        let c = as_object(call, &call_path)?;
        if let Some(kind) = get_str(c, "type", &call_path)?.filter(|t| *t != "function") {
            return Err(unsupported(
                field(&call_path, "type"),
                format!("tool call type {kind:?} has no OpenAI Responses equivalent"),
            ));
        }
        let function_path = field(&call_path, "function");
        let f = as_object(require(c, "function", &call_path)?, &function_path)?;
        output.push(json!({
            "type": "function_call",
            "id": item_id(id, "fc", output.len()),
            "call_id": require_str(c, "id", &call_path)?,
            "name": require_str(f, "name", &function_path)?,
            "arguments": get_str(f, "arguments", &function_path)?.unwrap_or("{}"),
            "status": "completed",
        }));
    }
    let finish = require_str(choice, "finish_reason", "choices[0]")?;
    let (status, incomplete) = status(Some(finish), "choices[0].finish_reason")?;
    let mut out = response_object(id, model, created, status, output.into());
    out["incomplete_details"] = incomplete;
    out["usage"] = responses_usage(get(r, "usage"), "usage")?;
    Ok(out)
}

/// The Responses `status` and `incomplete_details` for a chat
/// `finish_reason`. An answer that ended without one was cut short, for a
/// reason the upstream did not say.
pub(crate) fn status(finish_reason: Option<&str>, path: &str) -> Result<(&'static str, Value)> {
    let reason = match finish_reason {
        // function_call is the deprecated name of tool_calls.
        Some("stop" | "tool_calls" | "function_call") => return Ok(("completed", Value::Null)),
        Some("length") => json!("max_output_tokens"),
        Some("content_filter") => json!("content_filter"),
        None => Value::Null,
        Some(other) => return Err(invalid(path, format!("unknown value {other:?}"))),
    };
    Ok(("incomplete", json!({ "reason": reason })))
}

/// A `response` object with every member the Responses API always sends,
/// the request-echoing ones at their defaults.
pub(crate) fn response_object(
    id: &str,
    model: &str,
    created: u64,
    status: &str,
    output: Value,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": null,
        // Honest: nothing is kept, whatever the request asked.
        "store": false,
        "temperature": null,
        "text": { "format": { "type": "text" } },
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": null,
        "user": null,
        "metadata": {},
    })
}

/// The id of the output item at `output_index`, derived from the
/// response's: `resp_abc` gives `msg_abc_0`, `fc_abc_1`….
pub(crate) fn item_id(response_id: &str, prefix: &str, output_index: usize) -> String {
    let base = response_id.strip_prefix("resp_").unwrap_or(response_id);
    format!("{prefix}_{base}_{output_index}")
}

pub(crate) fn output_text(text: &str) -> Value {
    json!({ "type": "output_text", "text": text, "annotations": [] })
}

pub(crate) fn refusal_part(refusal: &str) -> Value {
    json!({ "type": "refusal", "refusal": refusal })
}

/// Chat `usage` → Responses `usage`. Both count the whole prompt with the
/// cached part inside, and the whole completion with the reasoning inside,
/// so the numbers carry over. Chat does not report cache writes. A missing
/// usage counts as zero, as in the other translations.
pub(crate) fn responses_usage(usage: Option<&Value>, path: &str) -> Result<Value> {
    let empty = Object::new();
    let u = match usage {
        Some(u) => as_object(u, path)?,
        None => &empty,
    };
    let detail = |key: &str, inner: &str| -> Result<u64> {
        let Some(d) = get(u, key) else { return Ok(0) };
        let p = field(path, key);
        Ok(get_u64(as_object(d, &p)?, inner, &p)?.unwrap_or(0))
    };
    let input = get_u64(u, "prompt_tokens", path)?.unwrap_or(0);
    let output = get_u64(u, "completion_tokens", path)?.unwrap_or(0);
    let total = match get_u64(u, "total_tokens", path)? {
        Some(total) => total,
        None => input.saturating_add(output),
    };
    Ok(json!({
        "input_tokens": input,
        "input_tokens_details": {
            "cached_tokens": detail("prompt_tokens_details", "cached_tokens")?,
            "cache_write_tokens": 0,
        },
        "output_tokens": output,
        "output_tokens_details": {
            "reasoning_tokens": detail("completion_tokens_details", "reasoning_tokens")?,
        },
        "total_tokens": total,
    }))
}

/// Fills a `response` object's request-echoing members from the Responses
/// request it answers, as the Responses API does. Read leniently: the
/// request was validated by [`responses_request_to_chat`], and a member of
/// the wrong shape keeps its default rather than failing an answer that
/// already exists.
pub fn echo_request(response: &mut Value, req: &Value) {
    let Some(out) = response.as_object_mut() else {
        return;
    };
    for (key, value) in request_echo(req) {
        out.insert(key, value);
    }
}

/// The members [`echo_request`] sets.
pub(crate) fn request_echo(req: &Value) -> Object {
    let mut echo = Object::new();
    let Some(req) = req.as_object() else {
        return echo;
    };
    let mut copy = |key: &str, ok: fn(&Value) -> bool| {
        if let Some(v) = get(req, key).filter(|v| ok(v)) {
            echo.insert(key.to_owned(), v.clone());
        }
    };
    copy("instructions", Value::is_string);
    copy("max_output_tokens", Value::is_u64);
    copy("parallel_tool_calls", Value::is_boolean);
    copy("temperature", Value::is_number);
    copy("top_p", Value::is_number);
    copy("user", Value::is_string);
    copy("metadata", Value::is_object);
    copy("tool_choice", |v| v.is_string() || v.is_object());
    copy("tools", Value::is_array);
    copy("text", |v| v.get("format").is_some_and(Value::is_object));
    echo
}
