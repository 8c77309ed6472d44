//! Pieces that requests and responses share: text, images, tool calls, and
//! the content-part lists that hold them.
use serde_json::{json, Value};

use super::json::{
    as_object, field, get, index, invalid, require, require_str, unsupported, wrong_type, Object,
    Result,
};

/// A text block; OpenAI's text content part has the same shape.
pub(super) fn text(s: &str) -> Value {
    json!({ "type": "text", "text": s })
}

/// OpenAI content parts (user, assistant or tool message) → Anthropic blocks.
/// `path` is the `content` field.
pub(super) fn openai_parts_to_blocks(parts: &[Value], path: &str) -> Result<Vec<Value>> {
    parts
        .iter()
        .enumerate()
        .map(|(j, p)| openai_part_to_block(p, &index(path, j)))
        .collect()
}

fn openai_part_to_block(part: &Value, path: &str) -> Result<Value> {
    let p = as_object(part, path)?;
    match require_str(p, "type", path)? {
        "text" => Ok(text(require_str(p, "text", path)?)),
        // Assistant history may hold a refusal; to Anthropic it is what the
        // model said.
        "refusal" => Ok(text(require_str(p, "refusal", path)?)),
        "image_url" => {
            let image_path = field(path, "image_url");
            let image = as_object(require(p, "image_url", path)?, &image_path)?;
            // `detail` is a resolution hint Anthropic has no knob for.
            let url = require_str(image, "url", &image_path)?;
            Ok(json!({ "type": "image", "source": image_source(url, &field(&image_path, "url"))? }))
        }
        t @ ("input_audio" | "file") => Err(unsupported(
            path,
            format!("content part type {t:?} has no Anthropic Messages equivalent"),
        )),
        other => Err(invalid(
            path,
            format!("unknown content part type {other:?}"),
        )),
    }
}

/// Text of a system message: a string or text parts. Each part is returned
/// separately; the caller joins them with the other system messages.
pub(super) fn openai_system_texts(content: &Value, path: &str) -> Result<Vec<String>> {
    match content {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| {
                let path = index(path, j);
                let p = as_object(part, &path)?;
                match require_str(p, "type", &path)? {
                    "text" => Ok(require_str(p, "text", &path)?.to_owned()),
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

/// OpenAI `image_url.url` → Anthropic image `source`. Anthropic takes either
/// inline base64 or a URL it fetches itself, which are exactly the two forms
/// OpenAI clients send.
fn image_source(url: &str, path: &str) -> Result<Value> {
    if let Some(rest) = strip_scheme(url, "data:") {
        let bad = || {
            invalid(
                path,
                "expected a base64 data URL (data:<media type>;base64,<data>)",
            )
        };
        let (meta, data) = rest.split_once(',').ok_or_else(bad)?;
        let (media_type, encoding) = meta.rsplit_once(';').ok_or_else(bad)?;
        if !encoding.eq_ignore_ascii_case("base64") || media_type.is_empty() {
            return Err(bad());
        }
        // Parameters such as `;charset=` are not part of a media type
        // Anthropic accepts.
        let media_type = media_type.split(';').next().unwrap_or(media_type);
        return Ok(json!({ "type": "base64", "media_type": media_type, "data": data }));
    }
    if strip_scheme(url, "https://").is_some() || strip_scheme(url, "http://").is_some() {
        return Ok(json!({ "type": "url", "url": url }));
    }
    Err(invalid(
        path,
        "expected an http(s) URL or a base64 data: URL",
    ))
}

fn strip_scheme<'a>(url: &'a str, scheme: &str) -> Option<&'a str> {
    let head = url.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &url[scheme.len()..])
}

/// Anthropic image `source` → OpenAI `image_url` part.
pub(super) fn image_part(source: &Value, path: &str) -> Result<Value> {
    let s = as_object(source, path)?;
    let url = match require_str(s, "type", path)? {
        "base64" => format!(
            "data:{};base64,{}",
            require_str(s, "media_type", path)?,
            require_str(s, "data", path)?
        ),
        "url" => require_str(s, "url", path)?.to_owned(),
        other => {
            return Err(unsupported(
                field(path, "type"),
                format!("image source type {other:?} has no OpenAI Chat Completions equivalent"),
            ))
        }
    };
    Ok(json!({ "type": "image_url", "image_url": { "url": url } }))
}

/// OpenAI `tool_calls[k]` → Anthropic `tool_use` block.
pub(super) fn tool_call_to_tool_use(call: &Value, path: &str) -> Result<Value> {
    let c = as_object(call, path)?;
    if let Some(t) = get(c, "type")
        .and_then(Value::as_str)
        .filter(|t| *t != "function")
    {
        return Err(unsupported(
            field(path, "type"),
            format!("tool call type {t:?} has no Anthropic Messages equivalent"),
        ));
    }
    let function_path = field(path, "function");
    let function = as_object(require(c, "function", path)?, &function_path)?;
    let arguments = require_str(function, "arguments", &function_path)?;
    Ok(json!({
        "type": "tool_use",
        "id": require_str(c, "id", path)?,
        "name": require_str(function, "name", &function_path)?,
        "input": parse_arguments(arguments, &field(&function_path, "arguments"))?,
    }))
}

/// OpenAI carries tool arguments as a JSON string, Anthropic as an object.
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

/// Anthropic `tool_use` block → OpenAI `tool_calls[k]`.
pub(super) fn tool_use_to_tool_call(block: &Object, path: &str) -> Result<Value> {
    Ok(json!({
        "id": require_str(block, "id", path)?,
        "type": "function",
        "function": {
            "name": require_str(block, "name", path)?,
            "arguments": require(block, "input", path)?.to_string(),
        },
    }))
}

/// Anthropic `tool_result.content` → OpenAI tool message content. OpenAI
/// tool messages hold only text.
pub(super) fn tool_result_content(content: Option<&Value>, path: &str) -> Result<Value> {
    match content {
        None => Ok(Value::String(String::new())),
        Some(Value::String(s)) => Ok(Value::String(s.clone())),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .enumerate()
            .map(|(j, b)| {
                let path = index(path, j);
                let b = as_object(b, &path)?;
                match require_str(b, "type", &path)? {
                    "text" => Ok(text(require_str(b, "text", &path)?)),
                    other => Err(unsupported(
                        path,
                        format!("{other:?} blocks in tool results have no OpenAI Chat Completions equivalent"),
                    )),
                }
            })
            .collect::<Result<Vec<_>>>()
            .map(Value::Array),
        Some(other) => Err(wrong_type(path, "a string or an array of blocks", other)),
    }
}

/// Strings of a `stop` / `stop_sequences` field.
pub(super) fn stop_sequences(stop: &Value, path: &str) -> Result<Value> {
    match stop {
        Value::String(s) => Ok(json!([s])),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if !item.is_string() {
                    return Err(wrong_type(&index(path, i), "a string", item));
                }
            }
            Ok(stop.clone())
        }
        other => Err(wrong_type(path, "a string or an array of strings", other)),
    }
}

/// An Anthropic assistant turn's blocks (a request's history or a
/// response) as OpenAI sees them: the text, joined, and the tool calls.
/// `context` ends the message for an unknown block type.
pub(crate) fn assistant_blocks(
    blocks: &[Value],
    path: &str,
    context: &str,
) -> Result<(String, Vec<Value>)> {
    let mut content = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let path = index(path, j);
        let b = as_object(block, &path)?;
        match require_str(b, "type", &path)? {
            // Several text blocks are one text split for citations; they
            // join without a separator.
            "text" => content.push_str(require_str(b, "text", &path)?),
            "tool_use" => calls.push(tool_use_to_tool_call(b, &path)?),
            // Reasoning signed for Anthropic only: an OpenAI model can
            // neither read nor verify it, and OpenAI's response has no
            // place for it.
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(invalid(
                    path,
                    format!("unknown content block type {other:?}{context}"),
                ))
            }
        }
    }
    Ok((content, calls))
}
