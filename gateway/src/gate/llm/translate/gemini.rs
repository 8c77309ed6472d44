//! OpenAI Chat Completions ↔ Google Gemini `generateContent` (v1beta REST),
//! non-streaming.
//!
//! Only this pair: an Anthropic client reaches Gemini through OpenAI's
//! shape (the gate composes the two translations), so every mapping of an
//! Anthropic field to Gemini is the composition of two tested ones.
//!
//! The model is not in a Gemini body: it is the path,
//! `/v1beta/models/{model}:generateContent` (or
//! `:streamGenerateContent?alt=sse`), built by the caller, and `stream` /
//! `stream_options` only choose that path.
//!
//! Gemini answers carry no tool-call ids and OpenAI clients need them to
//! send results back, so calls are numbered `call_0`, `call_1`… in the
//! order they appear; a tool result finds its function's name (which is
//! what Gemini matches results by) through the assistant message that made
//! the call.
use serde_json::{json, Map, Value};

use super::json::{
    as_object, field, get, get_array, get_bool, get_number, get_str, get_u64, index, invalid,
    reject_unknown, require, require_array, require_str, unsupported, wrong_type, Object, Result,
};

const GEMINI: &str = "Gemini generateContent";

/// Top-level OpenAI fields that have a mapping.
const OPENAI_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "n",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "stream",
    "stream_options",
    // Gemini has no per-end-user field, and the id asks the model nothing;
    // dropped.
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
];

/// Finish reasons Gemini gives when its filters stopped the answer.
const FILTERED: &[&str] = &[
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
];

pub fn openai_request_to_gemini(req: &Value) -> Result<Value> {
    let req = as_object(req, "body")?;
    check_openai_fields(req)?;
    let (system, contents) = openai_messages(require_array(req, "messages", "")?)?;

    let mut out = Map::new();
    out.insert("contents".into(), contents.into());
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let tools = get_array(req, "tools", "")?.unwrap_or_default();
    if !tools.is_empty() {
        out.insert(
            "tools".into(),
            json!([{ "functionDeclarations": function_declarations(tools)? }]),
        );
    }
    if let Some(config) = tool_config(req, !tools.is_empty())? {
        out.insert("toolConfig".into(), config);
    }
    let config = generation_config(req)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), config.into());
    }
    Ok(Value::Object(out))
}

/// `id` is the caller's (Gemini's `responseId` is not a chat completion
/// id) and `created` its clock.
pub fn gemini_response_to_openai(
    resp: &Value,
    model: &str,
    id: &str,
    created: u64,
) -> Result<Value> {
    let r = as_object(resp, "body")?;
    let candidates = get_array(r, "candidates", "")?.unwrap_or_default();
    let choices = if candidates.is_empty() {
        // A blocked prompt gets no candidate at all; to the client it is an
        // answer its filter stopped before it began.
        if prompt_block_reason(r, "")?.is_none() {
            return Err(invalid(
                "candidates",
                "holds no candidate, and promptFeedback gives no blockReason",
            ));
        }
        vec![json!({
            "index": 0,
            "message": { "role": "assistant", "content": "" },
            "finish_reason": "content_filter",
        })]
    } else {
        let mut calls = 0;
        candidates
            .iter()
            .enumerate()
            .map(|(i, c)| choice(c, i, &mut calls))
            .collect::<Result<Vec<_>>>()?
    };
    Ok(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": openai_usage(get(r, "usageMetadata"), "usageMetadata")?,
    }))
}

/// One candidate → one OpenAI choice. `calls` numbers tool calls across the
/// whole answer, so ids stay unique when there are several candidates.
fn choice(candidate: &Value, position: usize, calls: &mut usize) -> Result<Value> {
    let path = index("candidates", position);
    let c = as_object(candidate, &path)?;
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    for piece in candidate_pieces(c, &path)? {
        match piece {
            Piece::Text(t) => content.push_str(t),
            Piece::Call { name, args } => {
                tool_calls.push(tool_call(*calls, name, args));
                *calls += 1;
            }
        }
    }
    let reason = get_str(c, "finishReason", &path)?;
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    // OpenAI's own shape: no text beside tool calls is null, an answer with
    // neither (a filtered one) is "".
    message.insert(
        "content".into(),
        if content.is_empty() && !tool_calls.is_empty() {
            Value::Null
        } else {
            content.into()
        },
    );
    let called = !tool_calls.is_empty();
    if called {
        message.insert("tool_calls".into(), tool_calls.into());
    }
    Ok(json!({
        "index": candidate_index(c, position, &path)?,
        "message": message,
        "finish_reason": finish_reason(reason, called),
    }))
}

/// What a candidate's parts say to an OpenAI client.
pub(crate) enum Piece<'a> {
    Text(&'a str),
    /// `args` is absent for a function called without arguments.
    Call {
        name: &'a str,
        args: Option<&'a Value>,
    },
}

/// The text and function calls of `candidate.content.parts`, in order. A
/// candidate stopped by a filter may have no content.
pub(crate) fn candidate_pieces<'a>(candidate: &'a Object, path: &str) -> Result<Vec<Piece<'a>>> {
    let Some(content) = get(candidate, "content") else {
        return Ok(Vec::new());
    };
    let content_path = field(path, "content");
    let content = as_object(content, &content_path)?;
    let parts_path = field(&content_path, "parts");
    let mut pieces = Vec::new();
    for (j, part) in get_array(content, "parts", &content_path)?
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let path = index(&parts_path, j);
        let p = as_object(part, &path)?;
        // Thought summaries: reasoning OpenAI's answer has no place for, as
        // with Anthropic's thinking blocks.
        if get_bool(p, "thought", &path)? == Some(true) {
            continue;
        }
        if let Some(text) = get_str(p, "text", &path)? {
            pieces.push(Piece::Text(text));
        } else if let Some(call) = get(p, "functionCall") {
            let call_path = field(&path, "functionCall");
            let call = as_object(call, &call_path)?;
            let args = get(call, "args");
            if let Some(args) = args {
                as_object(args, &field(&call_path, "args"))?;
            }
            pieces.push(Piece::Call {
                name: require_str(call, "name", &call_path)?,
                args,
            });
        } else {
            return Err(invalid(path, format!("unknown part {:?}", part_kind(p))));
        }
    }
    Ok(pieces)
}

/// A part is a union: the member that is not metadata names its kind.
fn part_kind(p: &Object) -> &str {
    p.iter()
        .find(|(k, v)| {
            !v.is_null() && !matches!(k.as_str(), "thought" | "thoughtSignature" | "partMetadata")
        })
        .map_or("", |(k, _)| k.as_str())
}

/// OpenAI `tool_calls[k]` for the `n`th function call of an answer. OpenAI
/// clients parse `arguments` as JSON, so a call without arguments has `{}`.
pub(crate) fn tool_call(n: usize, name: &str, args: Option<&Value>) -> Value {
    let arguments = args.map_or_else(|| "{}".to_owned(), Value::to_string);
    json!({
        "id": format!("call_{n}"),
        "type": "function",
        "function": { "name": name, "arguments": arguments },
    })
}

/// Gemini numbers candidates itself; the position stands in when it does
/// not.
pub(crate) fn candidate_index(c: &Object, position: usize, path: &str) -> Result<u64> {
    Ok(get_u64(c, "index", path)?.unwrap_or(position as u64))
}

/// `promptFeedback.blockReason`, set when Gemini refused the prompt itself.
pub(crate) fn prompt_block_reason<'a>(r: &'a Object, path: &str) -> Result<Option<&'a str>> {
    let Some(feedback) = get(r, "promptFeedback") else {
        return Ok(None);
    };
    let feedback_path = field(path, "promptFeedback");
    get_str(
        as_object(feedback, &feedback_path)?,
        "blockReason",
        &feedback_path,
    )
}

/// Gemini `finishReason` → OpenAI `finish_reason`. `called` says whether
/// the candidate called a function: Gemini ends such a turn with `STOP`,
/// OpenAI with `tool_calls`. Google adds reasons (`LANGUAGE`, `OTHER`,
/// `MALFORMED_FUNCTION_CALL`…) that OpenAI has no name for; the answer
/// ended, which OpenAI calls `stop`.
pub(crate) fn finish_reason(reason: Option<&str>, called: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(r) if FILTERED.contains(&r) => "content_filter",
        _ if called => "tool_calls",
        _ => "stop",
    }
}

/// Gemini `usageMetadata` → OpenAI `usage`. Gemini counts the thinking
/// apart from the answer (`thoughtsTokenCount` is not in
/// `candidatesTokenCount`); OpenAI's `completion_tokens` includes the
/// reasoning and reports it inside, so it is the sum. The prompt count
/// already includes the cached part. `total_tokens` is the sum of the two,
/// which is Gemini's `totalTokenCount` when Gemini's counts add up. The
/// details are reported only when Gemini reported them; a missing
/// `usageMetadata` counts as zero.
pub(crate) fn openai_usage(usage: Option<&Value>, path: &str) -> Result<Value> {
    let Some(usage) = usage else {
        return Ok(json!({ "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0 }));
    };
    let u = as_object(usage, path)?;
    let count = |key| get_u64(u, key, path);
    // Tool-use prompt tokens are those of Gemini's own tools' results,
    // which Gemini also bills as prompt.
    let prompt = count("promptTokenCount")?
        .unwrap_or(0)
        .saturating_add(count("toolUsePromptTokenCount")?.unwrap_or(0));
    let thoughts = count("thoughtsTokenCount")?;
    let completion = count("candidatesTokenCount")?
        .unwrap_or(0)
        .saturating_add(thoughts.unwrap_or(0));
    let mut out = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt.saturating_add(completion),
    });
    if let Some(cached) = count("cachedContentTokenCount")? {
        out["prompt_tokens_details"] = json!({ "cached_tokens": cached });
    }
    if let Some(thoughts) = thoughts {
        out["completion_tokens_details"] = json!({ "reasoning_tokens": thoughts });
    }
    Ok(out)
}

fn check_openai_fields(req: &Object) -> Result<()> {
    for (key, value) in req.iter().filter(|(_, v)| !v.is_null()) {
        // SDKs may send a field at its default value, which asks for nothing
        // Gemini would do differently.
        let reason = match key.as_str() {
            k if OPENAI_FIELDS.contains(&k) => continue,
            "logprobs" if value.as_bool() == Some(false) => continue,
            // Gemini can return log-probabilities, but in a shape this
            // translation does not carry back; a client asking for them must
            // hear it will not get them.
            "logprobs" | "top_logprobs" => {
                "log-probabilities are not translated from Gemini's answer".to_owned()
            }
            _ => format!("has no {GEMINI} equivalent"),
        };
        return Err(unsupported(key.as_str(), reason));
    }
    Ok(())
}

/// `generationConfig`, empty when the client set none of its knobs.
fn generation_config(req: &Object) -> Result<Object> {
    let mut config = Map::new();
    // max_completion_tokens wins when both are sent: OpenAI deprecated
    // max_tokens in its favour.
    let newer = get_u64(req, "max_completion_tokens", "")?;
    let older = get_u64(req, "max_tokens", "")?;
    if let Some(max) = newer.or(older) {
        config.insert("maxOutputTokens".into(), max.into());
    }
    // Passed unchanged so Gemini reports an out-of-range value in its own
    // words.
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = get_number(req, from, "")? {
            config.insert(to.into(), v.clone());
        }
    }
    if let Some(n) = get_u64(req, "n", "")? {
        config.insert("candidateCount".into(), n.into());
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
    if let Some(format) = get(req, "response_format") {
        let f = as_object(format, "response_format")?;
        match require_str(f, "type", "response_format")? {
            "text" => {}
            "json_object" => {
                config.insert("responseMimeType".into(), "application/json".into());
            }
            "json_schema" => {
                let path = "response_format.json_schema";
                let schema = as_object(require(f, "json_schema", "response_format")?, path)?;
                config.insert("responseMimeType".into(), "application/json".into());
                // `name`, `description` and `strict` label or promise what
                // Gemini's schema-constrained decoding does anyway.
                if let Some(schema) = get(schema, "schema") {
                    as_object(schema, &field(path, "schema"))?;
                    config.insert("responseSchema".into(), schema.clone());
                }
            }
            other => {
                return Err(unsupported(
                    "response_format.type",
                    format!("{other:?} has no {GEMINI} equivalent"),
                ))
            }
        }
    }
    Ok(config)
}

/// `toolConfig` from `tool_choice` and `parallel_tool_calls`.
fn tool_config(req: &Object, has_tools: bool) -> Result<Option<Value>> {
    // A limit on what the model is asked, not a hint: a client that relies
    // on one call per turn must hear that it will not get it.
    if has_tools && get_bool(req, "parallel_tool_calls", "")? == Some(false) {
        return Err(unsupported(
            "parallel_tool_calls",
            format!("false has no {GEMINI} equivalent (it cannot limit a turn to one tool call)"),
        ));
    }
    let config = match get(req, "tool_choice") {
        None => return Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            // Without tools the model calls none, which is what these ask.
            "auto" | "none" if !has_tools => return Ok(None),
            "auto" => json!({ "mode": "AUTO" }),
            "none" => json!({ "mode": "NONE" }),
            "required" => json!({ "mode": "ANY" }),
            other => return Err(invalid("tool_choice", format!("unknown value {other:?}"))),
        },
        Some(Value::Object(o)) => {
            let kind = require_str(o, "type", "tool_choice")?;
            if kind != "function" {
                return Err(unsupported(
                    "tool_choice.type",
                    format!("tool choice {kind:?} has no {GEMINI} equivalent"),
                ));
            }
            let function = as_object(
                require(o, "function", "tool_choice")?,
                "tool_choice.function",
            )?;
            let name = require_str(function, "name", "tool_choice.function")?;
            json!({ "mode": "ANY", "allowedFunctionNames": [name] })
        }
        Some(other) => return Err(wrong_type("tool_choice", "a string or an object", other)),
    };
    if !has_tools {
        return Err(invalid(
            "tool_choice",
            "asks for a tool call, but no tools are declared",
        ));
    }
    Ok(Some(json!({ "functionCallingConfig": config })))
}

fn function_declarations(tools: &[Value]) -> Result<Vec<Value>> {
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
                    format!("tool type {kind:?} has no {GEMINI} equivalent"),
                ));
            }
            let function_path = field(&path, "function");
            let f = as_object(require(t, "function", &path)?, &function_path)?;
            // Strict mode promises schema-valid arguments; Gemini does not
            // make that promise for function calls.
            if get_bool(f, "strict", &function_path)? == Some(true) {
                return Err(unsupported(
                    field(&function_path, "strict"),
                    format!("strict function calling has no {GEMINI} equivalent"),
                ));
            }
            let mut declaration = Map::new();
            declaration.insert(
                "name".into(),
                require_str(f, "name", &function_path)?.into(),
            );
            if let Some(description) = get_str(f, "description", &function_path)? {
                declaration.insert("description".into(), description.into());
            }
            // A function without parameters has none in Gemini too.
            if let Some(parameters) = get(f, "parameters") {
                as_object(parameters, &field(&function_path, "parameters"))?;
                declaration.insert("parameters".into(), parameters.clone());
            }
            Ok(declaration.into())
        })
        .collect()
}

/// OpenAI messages → (Gemini `systemInstruction` parts, Gemini `contents`).
fn openai_messages(input: &[Value]) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::with_capacity(input.len());
    for (i, m) in input.iter().enumerate() {
        let path = index("messages", i);
        let m = as_object(m, &path)?;
        let content_path = field(&path, "content");
        // `name` labels a participant; Gemini has no such field and the
        // model is asked the same thing without it.
        let (role, known, parts) =
            match require_str(m, "role", &path)? {
                // Gemini takes instructions only at the top level, so system
                // messages are hoisted wherever they stood.
                "system" | "developer" => {
                    reject_unknown(m, &["role", "content", "name"], &path, GEMINI)?;
                    system.extend(system_parts(require(m, "content", &path)?, &content_path)?);
                    continue;
                }
                "user" => {
                    let parts = content_parts(require(m, "content", &path)?, &content_path)?;
                    ("user", &["role", "content", "name"][..], parts)
                }
                "assistant" => {
                    let known = &["role", "content", "name", "tool_calls"][..];
                    ("model", known, assistant_parts(m, &path)?)
                }
                // Gemini carries function results in the user turn.
                "tool" => (
                    "user",
                    &["role", "content", "tool_call_id"][..],
                    vec![function_response(m, &path, &input[..i])?],
                ),
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
        reject_unknown(m, known, &path, GEMINI)?;
        // OpenAI sends one message per tool result, and Gemini wants the
        // results of one turn's calls together, answering it: a turn of the
        // same role joins the previous one.
        match turns.last_mut() {
            Some((last, previous)) if *last == role => previous.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    if turns.is_empty() {
        return Err(invalid(
            "messages",
            "must hold at least one user or assistant message",
        ));
    }
    let contents = turns
        .into_iter()
        .map(|(role, parts)| json!({ "role": role, "parts": parts }))
        .collect();
    Ok((system, contents))
}

/// A system message's text: a string or text parts, one Gemini part each.
fn system_parts(content: &Value, path: &str) -> Result<Vec<Value>> {
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

/// User or assistant content: a string or content parts.
fn content_parts(content: &Value, path: &str) -> Result<Vec<Value>> {
    match content {
        Value::String(s) => Ok(vec![json!({ "text": s })]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| openai_part(p, &index(path, j)))
            .collect(),
        other => Err(wrong_type(
            path,
            "a string or an array of content parts",
            other,
        )),
    }
}

fn openai_part(part: &Value, path: &str) -> Result<Value> {
    let p = as_object(part, path)?;
    match require_str(p, "type", path)? {
        "text" => Ok(json!({ "text": require_str(p, "text", path)? })),
        // Assistant history may hold a refusal; to Gemini it is what the
        // model said.
        "refusal" => Ok(json!({ "text": require_str(p, "refusal", path)? })),
        "image_url" => {
            let image_path = field(path, "image_url");
            let image = as_object(require(p, "image_url", path)?, &image_path)?;
            // `detail` is a resolution hint; Gemini's knob for it is
            // request-wide (`mediaResolution`), not per image.
            let url = require_str(image, "url", &image_path)?;
            image_part(url, &field(&image_path, "url"))
        }
        "input_audio" => {
            let audio_path = field(path, "input_audio");
            let audio = as_object(require(p, "input_audio", path)?, &audio_path)?;
            let mime_type = match require_str(audio, "format", &audio_path)? {
                "wav" => "audio/wav",
                "mp3" => "audio/mp3",
                other => {
                    return Err(invalid(
                        field(&audio_path, "format"),
                        format!("unknown value {other:?}"),
                    ))
                }
            };
            let data = require_str(audio, "data", &audio_path)?;
            Ok(json!({ "inlineData": { "mimeType": mime_type, "data": data } }))
        }
        "file" => {
            let file_path = field(path, "file");
            let file = as_object(require(p, "file", path)?, &file_path)?;
            // A file id names a file stored at OpenAI, which Gemini cannot
            // read.
            let Some(url) = get_str(file, "file_data", &file_path)? else {
                return Err(unsupported(
                    file_path,
                    format!("only inline file_data has a {GEMINI} equivalent, not file_id"),
                ));
            };
            let (mime_type, data) = data_url(url, &field(&file_path, "file_data"))?;
            Ok(json!({ "inlineData": { "mimeType": mime_type, "data": data } }))
        }
        other => Err(invalid(
            path,
            format!("unknown content part type {other:?}"),
        )),
    }
}

/// OpenAI `image_url.url` → Gemini part: inline data for a `data:` URL, a
/// file reference for an http(s) URL, which Gemini fetches itself.
fn image_part(url: &str, path: &str) -> Result<Value> {
    if strip_prefix_ignore_case(url, "data:").is_some() {
        let (mime_type, data) = data_url(url, path)?;
        return Ok(json!({ "inlineData": { "mimeType": mime_type, "data": data } }));
    }
    if strip_prefix_ignore_case(url, "https://").is_none()
        && strip_prefix_ignore_case(url, "http://").is_none()
    {
        return Err(invalid(
            path,
            "expected an http(s) URL or a base64 data: URL",
        ));
    }
    // Gemini needs the type of a file it fetches, and an OpenAI client does
    // not say it; the URL's extension is all there is to go on.
    let Some(mime_type) = image_type_of(url) else {
        return Err(unsupported(
            path,
            format!(
                "{GEMINI} needs an image URL's type, and this one's extension does not tell it \
                 (.png, .jpg, .jpeg, .webp, .heic, .heif); send a base64 data: URL"
            ),
        ));
    };
    Ok(json!({ "fileData": { "mimeType": mime_type, "fileUri": url } }))
}

/// The image types Gemini takes, by the extension of the URL's path.
fn image_type_of(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let file = path.rsplit_once('/').map_or(path, |(_, file)| file);
    let (_, extension) = file.rsplit_once('.')?;
    Some(match extension.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        _ => return None,
    })
}

/// `data:<media type>;base64,<data>` → (media type, data).
fn data_url<'a>(url: &'a str, path: &str) -> Result<(&'a str, &'a str)> {
    let bad = || {
        invalid(
            path,
            "expected a base64 data URL (data:<media type>;base64,<data>)",
        )
    };
    let rest = strip_prefix_ignore_case(url, "data:").ok_or_else(bad)?;
    let (meta, data) = rest.split_once(',').ok_or_else(bad)?;
    let (media_type, encoding) = meta.rsplit_once(';').ok_or_else(bad)?;
    // Parameters such as `;charset=` are not part of a MIME type Gemini
    // accepts.
    let media_type = media_type.split(';').next().unwrap_or(media_type);
    if !encoding.eq_ignore_ascii_case("base64") || media_type.is_empty() {
        return Err(bad());
    }
    Ok((media_type, data))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Assistant content: its text, then one `functionCall` part per tool call.
fn assistant_parts(m: &Object, path: &str) -> Result<Vec<Value>> {
    let content_path = field(path, "content");
    let mut parts = match get(m, "content") {
        // An assistant turn that only called tools often carries "", which
        // would be an empty text part.
        Some(Value::String(s)) if s.is_empty() => vec![],
        Some(c) => content_parts(c, &content_path)?,
        None => vec![],
    };
    let calls_path = field(path, "tool_calls");
    for (k, call) in get_array(m, "tool_calls", path)?
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        parts.push(function_call(call, &index(&calls_path, k))?);
    }
    if parts.is_empty() {
        return Err(invalid(
            path,
            "assistant message needs content or tool_calls",
        ));
    }
    Ok(parts)
}

/// OpenAI `tool_calls[k]` → Gemini `functionCall` part. The id is not sent:
/// Gemini matches results to calls by name and order.
fn function_call(call: &Value, path: &str) -> Result<Value> {
    let c = as_object(call, path)?;
    if let Some(t) = get(c, "type")
        .and_then(Value::as_str)
        .filter(|t| *t != "function")
    {
        return Err(unsupported(
            field(path, "type"),
            format!("tool call type {t:?} has no {GEMINI} equivalent"),
        ));
    }
    require_str(c, "id", path)?;
    let function_path = field(path, "function");
    let function = as_object(require(c, "function", path)?, &function_path)?;
    let arguments = require_str(function, "arguments", &function_path)?;
    Ok(json!({ "functionCall": {
        "name": require_str(function, "name", &function_path)?,
        "args": parse_arguments(arguments, &field(&function_path, "arguments"))?,
    }}))
}

/// OpenAI carries tool arguments as a JSON string, Gemini as an object.
fn parse_arguments(arguments: &str, path: &str) -> Result<Value> {
    // Some clients send "" for a call without arguments; it means `{}`.
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    let args: Value = serde_json::from_str(arguments)
        .map_err(|e| invalid(path, format!("not valid JSON: {e}")))?;
    if !args.is_object() {
        return Err(wrong_type(path, "a JSON object", &args));
    }
    Ok(args)
}

/// An OpenAI `tool` message → Gemini `functionResponse` part. Gemini's
/// `response` is an object: a result that is a JSON object goes as it is,
/// anything else as `{"content": <text>}`.
fn function_response(m: &Object, path: &str, earlier: &[Value]) -> Result<Value> {
    let id = require_str(m, "tool_call_id", path)?;
    let name = called_function(earlier, id).ok_or_else(|| {
        invalid(
            field(path, "tool_call_id"),
            format!(
                "no earlier assistant message has a tool call with id {id:?}, and {GEMINI} \
                 needs the called function's name"
            ),
        )
    })?;
    let content_path = field(path, "content");
    let text = match require(m, "content", path)? {
        Value::String(s) => s.clone(),
        // Tool messages hold only text; separate parts stay apart.
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| {
                let path = index(&content_path, j);
                let p = as_object(part, &path)?;
                match require_str(p, "type", &path)? {
                    "text" => Ok(require_str(p, "text", &path)?),
                    other => Err(invalid(
                        path,
                        format!("tool messages hold only text parts, got {other:?}"),
                    )),
                }
            })
            .collect::<Result<Vec<_>>>()?
            .join("\n"),
        other => {
            return Err(wrong_type(
                &content_path,
                "a string or an array of text parts",
                other,
            ))
        }
    };
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(object @ Value::Object(_)) => object,
        _ => json!({ "content": text }),
    };
    Ok(json!({ "functionResponse": { "name": name, "response": response } }))
}

/// The function the latest assistant message before a tool result called
/// with that id. Those messages were read (and refused if malformed) before
/// this one, so the reads here are lenient.
fn called_function<'a>(earlier: &'a [Value], id: &str) -> Option<&'a str> {
    earlier
        .iter()
        .rev()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
        .filter_map(|m| m.get("tool_calls").and_then(Value::as_array))
        .flatten()
        .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
        .and_then(|c| c.get("function")?.get("name")?.as_str())
}
