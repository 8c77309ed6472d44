//! Gemini stream → OpenAI chunks: the golden streams and the no-panic
//! mutation test run in `tests.rs` with the other directions; these pin the
//! error messages, the accounting, and several candidates at once.
use serde_json::{json, Value};

use super::*;

const REQUESTED_MODEL: &str = "client-requested-model";
const ID: &str = "chatcmpl-gateway-1";
const CREATED: u64 = 1_700_000_000;

fn translator(include_usage: bool) -> GeminiToOpenAi {
    GeminiToOpenAi::new(REQUESTED_MODEL, ID.into(), CREATED, include_usage)
}

fn sse(data: Value) -> SseEvent {
    SseEvent {
        data: data.to_string(),
        ..SseEvent::default()
    }
}

fn text(index: u64, text: &str, finish: Option<&str>) -> Value {
    let mut candidate =
        json!({ "index": index, "content": { "role": "model", "parts": [{ "text": text }] } });
    if let Some(finish) = finish {
        candidate["finishReason"] = json!(finish);
    }
    json!({ "candidates": [candidate] })
}

/// The first error the events give.
fn first_error(events: &[Value]) -> String {
    let mut t = translator(false);
    for ev in events {
        if let Err(e) = t.event(&sse(ev.clone())) {
            return e.to_string();
        }
    }
    panic!("expected an error from {events:?}")
}

/// The chunks' `choices`, as the client reads them.
fn choices(frames: &[String]) -> Vec<Value> {
    frames
        .iter()
        .map(|f| {
            let data = f
                .strip_prefix("data: ")
                .and_then(|f| f.strip_suffix("\n\n"))
                .expect("a data frame");
            let chunk: Value = serde_json::from_str(data).expect("JSON");
            chunk["choices"][0].clone()
        })
        .collect()
}

#[test]
fn errors_name_the_event() {
    let mut t = translator(false);
    t.event(&sse(text(0, "hi", None))).expect("event 1");
    let e = t.event(&SseEvent {
        data: "{\"candidates\":".into(),
        ..SseEvent::default()
    });
    assert!(e
        .expect_err("bad JSON")
        .to_string()
        .starts_with("stream event 2: not valid JSON"));
    assert_eq!(
        first_error(&[json!([1])]),
        "stream event 1: expected an object, got an array"
    );
    assert_eq!(
        first_error(&[json!({ "candidates": "many" })]),
        "stream event 1.candidates: expected an array, got a string"
    );
    let code = json!({ "candidates": [{ "content": { "parts": [{ "executableCode": {} }] } }] });
    assert_eq!(
        first_error(&[text(0, "a", None), code]),
        "stream event 2.candidates[0].content.parts[0]: unknown part \"executableCode\""
    );
    assert_eq!(
        first_error(&[text(0, "a", Some("STOP")), text(0, "b", None)]),
        "stream event 2.candidates[0]: candidate 0 continues after its finishReason"
    );
    assert_eq!(
        first_error(&[json!({ "usageMetadata": { "candidatesTokenCount": "9" } })]),
        "stream event 1.usageMetadata.candidatesTokenCount: expected a non-negative integer, got a string"
    );
    assert_eq!(
        first_error(&[json!({ "candidates": [{ "index": -1 }] })]),
        "stream event 1.candidates[0].index: expected a non-negative integer, got a number"
    );
}

#[test]
fn upstream_errors_are_passed_on() {
    assert_eq!(
        first_error(&[
            text(0, "a", None),
            json!({ "error": { "code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED" } }),
        ]),
        "upstream stream error RESOURCE_EXHAUSTED: Quota exceeded"
    );
    // A malformed report is still an error, with what there was of it.
    assert_eq!(
        first_error(&[json!({ "error": { "code": 500 } })]),
        "upstream stream error error: {\"code\":500}"
    );
}

#[test]
fn usage_is_reported_for_accounting() {
    let mut t = translator(false);
    assert_eq!(t.usage(), None);
    let mut first = text(0, "a", None);
    first["usageMetadata"] = json!({ "promptTokenCount": 10, "totalTokenCount": 10 });
    t.event(&sse(first)).expect("first");
    assert_eq!(
        t.usage(),
        Some(json!({ "prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 10 }))
    );
    let mut last = text(0, "b", Some("STOP"));
    last["usageMetadata"] = json!({
        "promptTokenCount": 10, "candidatesTokenCount": 2, "thoughtsTokenCount": 5,
        "cachedContentTokenCount": 4, "totalTokenCount": 17,
    });
    t.event(&sse(last)).expect("last");
    assert_eq!(
        t.usage(),
        Some(json!({
            "prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
            "prompt_tokens_details": { "cached_tokens": 4 },
            "completion_tokens_details": { "reasoning_tokens": 5 },
        }))
    );
    // Without include_usage the client gets no usage chunk, only the end.
    assert_eq!(t.finish(), ["data: [DONE]\n\n"]);
}

#[test]
fn the_end_is_sent_once() {
    let mut t = translator(true);
    // Nothing came: no usage to report, no answer made up.
    assert_eq!(t.finish(), ["data: [DONE]\n\n"]);
    assert!(t.finish().is_empty());
}

/// Each candidate is its own choice: its own role chunk, tool-call
/// numbering and finish; the ids stay unique across them.
#[test]
fn candidates_are_choices() {
    let mut t = translator(false);
    let call = |index: u64, name: &str| json!({ "index": index, "content": { "parts": [{ "functionCall": { "name": name } }] } });
    let mut frames = t.event(&sse(text(0, "Hi", None))).expect("event 1");
    let both = json!({ "candidates": [call(1, "f"), call(0, "g")] });
    frames.extend(t.event(&sse(both)).expect("event 2"));
    let ends = json!({ "candidates": [
        { "index": 0, "finishReason": "STOP" },
        { "index": 1, "content": { "parts": [{ "functionCall": { "name": "h", "args": { "x": 1 } } }] }, "finishReason": "STOP" },
    ]});
    frames.extend(t.event(&sse(ends)).expect("event 3"));
    let tool = |index: u64, k: u64, id: &str, name: &str, arguments: &str| {
        json!({ "index": index, "finish_reason": null, "delta": { "tool_calls": [{
            "index": k, "id": id, "type": "function",
            "function": { "name": name, "arguments": arguments },
        }]}})
    };
    let role = |index: u64| json!({ "index": index, "finish_reason": null, "delta": { "role": "assistant", "content": "" } });
    let finish =
        |index: u64, reason: &str| json!({ "index": index, "finish_reason": reason, "delta": {} });
    assert_eq!(
        choices(&frames),
        [
            role(0),
            json!({ "index": 0, "finish_reason": null, "delta": { "content": "Hi" } }),
            role(1),
            tool(1, 0, "call_0", "f", "{}"),
            tool(0, 0, "call_1", "g", "{}"),
            finish(0, "tool_calls"),
            tool(1, 1, "call_2", "h", "{\"x\":1}"),
            finish(1, "tool_calls"),
        ]
    );
}

/// The last event of a stream often repeats the candidate empty beside the
/// usage; that is not content after the end.
#[test]
fn empty_pieces_after_the_finish_are_ignored() {
    let mut t = translator(true);
    t.event(&sse(text(0, "Hi", Some("STOP")))).expect("finish");
    let mut tail = text(0, "", None);
    tail["usageMetadata"] = json!({ "promptTokenCount": 1, "candidatesTokenCount": 1 });
    assert!(t.event(&sse(tail)).expect("tail").is_empty());
    assert!(t.usage().is_some());
}
