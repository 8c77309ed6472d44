//! The Gemini API (`generativelanguage.googleapis.com`):
//! `POST /v1beta/models/{model}:generateContent` answers one
//! `GenerateContentResponse`; `…:streamGenerateContent?alt=sse` answers
//! `data: <GenerateContentResponse>` events, the text spread over them,
//! every chunk with the prompt's usage and the last one with
//! `finishReason` and the full `usageMetadata`. The key comes in
//! `x-goog-api-key` (or `?key=`); the body is checked as the API checks
//! it: unknown fields (an OpenAI `model`, say) are refused.

use super::{
    content, garbage, stream_pieces, wanted_tool, Answer, Behaviour, FakeKind, RecordedRequest,
    TOOL_ARGS,
};
use serde_json::{json, Value};
use std::time::Duration;

/// The fields of a `GenerateContentRequest` body.
const FIELDS: &[&str] = &[
    "contents",
    "tools",
    "toolConfig",
    "safetySettings",
    "systemInstruction",
    "generationConfig",
    "cachedContent",
    "labels",
];

pub(super) fn answer(req: &RecordedRequest, b: &Behaviour, id: u64) -> Answer {
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let rest = path.strip_prefix("/v1beta/models/").unwrap_or_default();
    let Some((model, method)) = rest.rsplit_once(':') else {
        return not_found(path);
    };
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return not_found(path),
    };
    let has_key = req.header("x-goog-api-key").is_some_and(|k| !k.is_empty())
        || query.split('&').any(|p| p.starts_with("key="));
    if !has_key {
        return Answer::Json(
            403,
            error_body(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). \
                 Please use API Key or other form of API consumer identity to call this API.",
            ),
        );
    }
    if stream && !query.split('&').any(|p| p == "alt=sse") {
        // Without alt=sse the API streams one JSON array; the gateway
        // must ask for server-sent events.
        return Answer::Json(400, error_body(400, "the fake streams only with ?alt=sse"));
    }
    if let Some(msg) = invalid(&req.body) {
        return Answer::Json(400, error_body(400, &msg));
    }
    let usage = |done: bool| {
        if done {
            json!({
                "promptTokenCount": b.input_tokens,
                "candidatesTokenCount": b.output_tokens,
                "totalTokenCount": b.input_tokens + b.output_tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": b.input_tokens}],
            })
        } else {
            json!({"promptTokenCount": b.input_tokens, "totalTokenCount": b.input_tokens})
        }
    };
    let response_id = format!("fakeResp{id}");
    let chunk = |parts: Value, finish: Option<&str>, done: bool| {
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if let Some(f) = finish {
            candidate["finishReason"] = json!(f);
        }
        json!({
            "candidates": [candidate],
            "usageMetadata": usage(done),
            "modelVersion": model,
            "responseId": response_id,
        })
    };
    let tool = wanted_tool(FakeKind::Gemini, &gemini_as_messages(&req.body));
    let call = |name: &str| {
        json!([{"functionCall": {"name": name,
            "args": serde_json::from_str::<Value>(TOOL_ARGS).unwrap_or_default()}}])
    };
    if !stream {
        let parts = match &tool {
            Some(name) => call(name),
            None => json!([{"text": b.reply}]),
        };
        return Answer::Json(200, chunk(parts, Some("STOP"), true));
    }
    let (n, delay) = b.slow.unwrap_or((3, Duration::ZERO));
    if let Some(name) = &tool {
        // Gemini streams a function call whole, in one chunk.
        let events = vec![content(super::sse_data(&chunk(
            call(name),
            Some("STOP"),
            true,
        )))];
        return Answer::Stream(events, delay, 1);
    }
    let parts = stream_pieces(b, n);
    let planned = parts.len();
    let last = planned - 1;
    let mut events: Vec<_> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let done = i == last;
            content(super::sse_data(&chunk(
                json!([{"text": p}]),
                done.then_some("STOP"),
                done,
            )))
        })
        .collect();
    if b.malformed_stream {
        events.truncate(1);
        events.push(garbage(FakeKind::Gemini));
    }
    Answer::Stream(events, delay, planned)
}

/// Why a `GenerateContentRequest` is invalid (close to the API's
/// wording), if it is.
fn invalid(body: &Value) -> Option<String> {
    let Some(o) = body.as_object() else {
        return Some("Invalid JSON payload received. Expected an object.".into());
    };
    if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Some(format!(
            "Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."
        ));
    }
    let Some(contents) = o.get("contents").and_then(Value::as_array) else {
        return Some("* GenerateContentRequest.contents: contents is not specified".into());
    };
    if contents.is_empty() {
        return Some("* GenerateContentRequest.contents: contents is not specified".into());
    }
    for (i, c) in contents.iter().enumerate() {
        if let Some(role) = c.get("role") {
            if role != "user" && role != "model" {
                return Some(format!(
                    "Please use a valid role: user, model. (contents[{i}].role = {role})"
                ));
            }
        }
        if c["parts"].as_array().is_none_or(|p| p.is_empty()) {
            return Some(format!(
                "* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
            ));
        }
    }
    None
}

/// The request as `{messages, tools}` of text blocks, so the tool rule
/// ([`wanted_tool`]) reads it like the others.
fn gemini_as_messages(body: &Value) -> Value {
    let messages: Vec<Value> = body["contents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let role = if c["role"] == "model" {
                "assistant"
            } else {
                "user"
            };
            json!({"role": role, "content": c["parts"]})
        })
        .collect();
    json!({"messages": messages, "tools": body["tools"]})
}

/// Google's error JSON (`google.rpc.Status`).
pub(super) fn error_body(status: u16, message: &str) -> Value {
    let code = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    };
    json!({"error": {"code": status, "message": message, "status": code}})
}

fn not_found(path: &str) -> Answer {
    Answer::Json(
        404,
        error_body(404, &format!("the fake does not serve POST {path}")),
    )
}
