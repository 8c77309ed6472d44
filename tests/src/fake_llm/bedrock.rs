//! Bedrock Runtime Converse: `POST /model/{modelId}/converse` answers one
//! JSON object; `…/converse-stream` answers `application/vnd.amazon.eventstream`
//! frames (`messageStart`, `contentBlockDelta`s, `contentBlockStop`,
//! `messageStop`, `metadata`). The model id arrives percent-encoded (it
//! holds `:`). A request whose SigV4 signature was refused
//! ([`super::sigv4`]) gets AWS's 403.

use super::{
    content, stream_pieces, wanted_tool, Answer, Behaviour, Event, FakeKind, RecordedRequest,
    SigV4Check, TOOL_ARGS,
};
use serde_json::{json, Value};
use std::time::Duration;

/// The fields of a `Converse` request body.
const FIELDS: &[&str] = &[
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "additionalModelResponseFieldPaths",
    "promptVariables",
    "requestMetadata",
    "performanceConfig",
];

pub(super) fn answer(req: &RecordedRequest, b: &Behaviour, id: u64) -> Answer {
    let path = req.path.split('?').next().unwrap_or_default();
    let rest = path.strip_prefix("/model/").unwrap_or_default();
    let stream = match rest.rsplit_once('/') {
        Some((m, "converse")) if !m.is_empty() => false,
        Some((m, "converse-stream")) if !m.is_empty() => true,
        _ => {
            return Answer::Json(
                404,
                aws_error(
                    "UnknownOperationException",
                    &format!("the fake does not serve POST {path}"),
                ),
            )
        }
    };
    match &req.sigv4 {
        Some(SigV4Check::Rejected { error_type, reason }) => {
            return Answer::Json(403, aws_error(error_type, reason));
        }
        None => {
            return Answer::Json(
                403,
                aws_error(
                    "MissingAuthenticationTokenException",
                    "Missing Authentication Token",
                ),
            )
        }
        Some(_) => {}
    }
    if let Some(msg) = invalid(&req.body) {
        return Answer::Json(400, aws_error("ValidationException", &msg));
    }
    let usage = json!({
        "inputTokens": b.input_tokens,
        "outputTokens": b.output_tokens,
        "totalTokens": b.input_tokens + b.output_tokens,
    });
    let tool_id = format!("tooluse_fake{id}");
    let tool_body =
        json!({"messages": req.body["messages"], "tools": req.body["toolConfig"]["tools"]});
    let tool = wanted_tool(FakeKind::Bedrock, &tool_body);
    let stop = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    if !stream {
        let block = match &tool {
            Some(name) => json!({"toolUse": {"toolUseId": tool_id, "name": name,
                "input": serde_json::from_str::<Value>(TOOL_ARGS).unwrap_or_default()}}),
            None => json!({"text": b.reply}),
        };
        return Answer::Json(
            200,
            json!({
                "output": {"message": {"role": "assistant", "content": [block]}},
                "stopReason": stop,
                "usage": usage,
                "metrics": {"latencyMs": 1},
            }),
        );
    }
    let (n, delay) = b.slow.unwrap_or((3, Duration::ZERO));
    let mut events = vec![event("messageStart", &json!({"role": "assistant"}))];
    let planned;
    if let Some(name) = &tool {
        events.push(event(
            "contentBlockStart",
            &json!({"contentBlockIndex": 0,
                "start": {"toolUse": {"toolUseId": tool_id, "name": name}}}),
        ));
        for part in [&TOOL_ARGS[..8], &TOOL_ARGS[8..]] {
            events.push(content(event(
                "contentBlockDelta",
                &json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": part}}}),
            )));
        }
        planned = 2;
    } else {
        let parts = stream_pieces(b, n);
        planned = parts.len();
        for p in parts {
            events.push(content(event(
                "contentBlockDelta",
                &json!({"contentBlockIndex": 0, "delta": {"text": p}}),
            )));
        }
    }
    if b.malformed_stream {
        events.truncate(2);
        events.push(garbage());
        return Answer::Stream(events, delay, planned);
    }
    events.push(event("contentBlockStop", &json!({"contentBlockIndex": 0})));
    events.push(event("messageStop", &json!({"stopReason": stop})));
    events.push(event(
        "metadata",
        &json!({"usage": usage, "metrics": {"latencyMs": 1}}),
    ));
    Answer::Stream(events, delay, planned)
}

/// Why a `Converse` body is invalid (close to the API's wording), if it is.
fn invalid(body: &Value) -> Option<String> {
    let Some(o) = body.as_object() else {
        return Some("Malformed input request, please reformat your input and try again.".into());
    };
    if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Some(format!(
            "Malformed input request: extraneous key [{k}] is not permitted, please reformat your input and try again."
        ));
    }
    let Some(msgs) = o.get("messages").and_then(Value::as_array) else {
        return Some(
            "1 validation error detected: Value null at 'messages' failed to satisfy constraint: Member must not be null"
                .into(),
        );
    };
    if msgs.first().is_none_or(|m| m["role"] != "user") {
        return Some("A conversation must start with a user message. Try again with a conversation that starts with a user message.".into());
    }
    for (i, m) in msgs.iter().enumerate() {
        if m["role"] != "user" && m["role"] != "assistant" {
            return Some(format!(
                "1 validation error detected: Value at 'messages.{}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]",
                i + 1
            ));
        }
        if m["content"].as_array().is_none_or(|c| c.is_empty()) {
            return Some(format!(
                "The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."
            ));
        }
    }
    if let Some(n) = body["inferenceConfig"]["maxTokens"].as_i64() {
        if n < 1 {
            return Some("1 validation error detected: Value at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member must have value greater than or equal to 1".into());
        }
    }
    None
}

/// AWS's error: the message in the body, the type in `x-amzn-errortype`
/// (carried here as `__type`, which the server moves to the header).
fn aws_error(error_type: &str, message: &str) -> Value {
    json!({"message": message, "__type": error_type})
}

/// The error `fail_with(status)` answers.
pub(super) fn error_body(status: u16, message: &str) -> Value {
    let ty = match status {
        400 => "ValidationException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    };
    aws_error(ty, message)
}

/// One `:message-type event` frame.
fn event(event_type: &str, payload: &Value) -> Event {
    Event {
        data: frame(
            &[
                (":event-type", event_type),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.to_string().as_bytes(),
        ),
        content: false,
    }
}

/// A `contentBlockDelta` frame whose message checksum is wrong, as a
/// corrupted connection would leave it.
pub(super) fn garbage() -> Event {
    let mut e = event(
        "contentBlockDelta",
        &json!({"contentBlockIndex": 0, "delta": {"text": "broken"}}),
    );
    let n = e.data.len();
    e.data[n - 1] ^= 0xff;
    e.content = true;
    e
}

/// An AWS event-stream message: a prelude (total length, headers length,
/// both u32 big-endian, and their CRC32), headers (name length u8, name,
/// value type 7 = string, value length u16 big-endian, value), the
/// payload, and the CRC32 of everything before it.
pub(super) fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(u8::try_from(name.len()).expect("header name under 256 bytes"));
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(
            &u16::try_from(value.len())
                .expect("header value under 64 KiB")
                .to_be_bytes(),
        );
        h.extend_from_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(
        &u32::try_from(total)
            .expect("frame under 4 GiB")
            .to_be_bytes(),
    );
    out.extend_from_slice(
        &u32::try_from(h.len())
            .expect("headers under 4 GiB")
            .to_be_bytes(),
    );
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&out);
    out.extend_from_slice(&message_crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one frame back, checking both checksums: (headers, payload).
    fn parse(f: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
        let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let total = be32(&f[0..4]) as usize;
        let hlen = be32(&f[4..8]) as usize;
        assert_eq!(total, f.len());
        assert_eq!(be32(&f[8..12]), crc32fast::hash(&f[..8]), "prelude CRC");
        assert_eq!(
            be32(&f[total - 4..]),
            crc32fast::hash(&f[..total - 4]),
            "message CRC"
        );
        let mut headers = Vec::new();
        let mut h = &f[12..12 + hlen];
        while !h.is_empty() {
            let n = h[0] as usize;
            let name = String::from_utf8(h[1..1 + n].to_vec()).unwrap();
            assert_eq!(h[1 + n], 7, "string header");
            let vlen = u16::from_be_bytes([h[2 + n], h[3 + n]]) as usize;
            let value = String::from_utf8(h[4 + n..4 + n + vlen].to_vec()).unwrap();
            headers.push((name, value));
            h = &h[4 + n + vlen..];
        }
        (headers, f[12 + hlen..total - 4].to_vec())
    }

    #[test]
    fn frames_carry_type_and_json_with_valid_checksums() {
        let e = event("messageStop", &json!({"stopReason": "end_turn"}));
        let (headers, payload) = parse(&e.data);
        assert_eq!(
            headers,
            [
                (":event-type".to_string(), "messageStop".to_string()),
                (":content-type".to_string(), "application/json".to_string()),
                (":message-type".to_string(), "event".to_string()),
            ]
        );
        let v: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v, json!({"stopReason": "end_turn"}));
        // An empty message is the 16 bytes of prelude and checksum.
        assert_eq!(frame(&[], b"").len(), 16);
    }
}
