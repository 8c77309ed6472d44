//! Chat chunks → Responses events: the golden streams and the no-panic
//! mutation test run in `tests.rs` with the other directions; these pin
//! the error messages, the error events, the accounting and the echo.
use serde_json::{json, Value};

use super::*;

const MODEL: &str = "client-requested-model";
const ID: &str = "resp_gateway-1";

fn translator() -> ChatToResponses {
    ChatToResponses::new(MODEL, ID.into(), 1_700_000_000)
}

fn sse(data: Value) -> SseEvent {
    SseEvent {
        data: data.to_string(),
        ..SseEvent::default()
    }
}

fn delta(delta: Value, finish: Option<&str>) -> Value {
    json!({ "id": "c", "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
}

fn call(index: u64, id: Option<&str>, name: Option<&str>, arguments: &str) -> Value {
    let mut call = json!({ "index": index, "function": { "arguments": arguments } });
    if let Some(id) = id {
        call["id"] = json!(id);
        call["type"] = json!("function");
    }
    if let Some(name) = name {
        call["function"]["name"] = json!(name);
    }
    delta(json!({ "tool_calls": [call] }), None)
}

fn first_error(chunks: &[Value]) -> String {
    let mut t = translator();
    for chunk in chunks {
        if let Err(e) = t.event(&sse(chunk.clone())) {
            return e.to_string();
        }
    }
    panic!("expected an error from {chunks:?}")
}

/// The events as (name, data), checking each name is its data's `type`.
fn events(frames: &str) -> Vec<(String, Value)> {
    SseParser::default()
        .push(frames.as_bytes())
        .expect("an event stream")
        .into_iter()
        .map(|e| {
            let data: Value = serde_json::from_str(&e.data).expect("JSON");
            let name = e.event.expect("named");
            assert_eq!(data["type"], name.as_str());
            (name, data)
        })
        .collect()
}

#[test]
fn errors_name_the_chunk() {
    let mut t = translator();
    t.event(&sse(delta(json!({ "content": "hi" }), None)))
        .expect("chunk 1");
    let e = t.event(&SseEvent {
        data: "{\"choices\":".into(),
        ..SseEvent::default()
    });
    assert!(e
        .expect_err("bad JSON")
        .to_string()
        .starts_with("stream chunk 2: not valid JSON"));
    assert_eq!(
        first_error(&[json!([1])]),
        "stream chunk 1: expected an object, got an array"
    );
    assert_eq!(
        first_error(&[call(0, None, Some("f"), "")]),
        "stream chunk 1.choices[0].delta.tool_calls[0].id: required field is missing"
    );
    assert_eq!(
        first_error(&[call(0, Some("a"), None, "")]),
        "stream chunk 1.choices[0].delta.tool_calls[0].function.name: required field is missing"
    );
    assert_eq!(
        first_error(&[
            call(0, Some("a"), Some("f"), "{"),
            call(1, Some("b"), Some("g"), "{}"),
            call(0, None, None, "}"),
        ]),
        "stream chunk 3.choices[0].delta.tool_calls[0].index: tool call 0 resumes after another output item started; Responses output items are sent one at a time"
    );
    assert_eq!(
        first_error(&[delta(json!({}), Some("sleepy"))]),
        "stream chunk 1.choices[0].finish_reason: unknown value \"sleepy\""
    );
    assert_eq!(
        first_error(&[json!({ "id": "c", "choices": [], "usage": { "prompt_tokens": -1 } })]),
        "stream chunk 1.usage.prompt_tokens: expected a non-negative integer, got a number"
    );
}

#[test]
fn error_events_carry_the_next_sequence_numbers() {
    let mut t = translator();
    let sent = t
        .event(&sse(delta(json!({ "content": "Once" }), None)))
        .expect("chunk 1");
    let upstream =
        json!({ "error": { "message": "Rate limit reached", "type": "rate_limit_exceeded" } });
    let e = t.event(&sse(upstream)).expect_err("upstream error");
    let got = events(&t.error_frames(&e));
    let next = events(&sent.concat()).len();
    assert_eq!(
        got[0],
        (
            "error".to_owned(),
            json!({
                "type": "error", "code": "rate_limit_exceeded", "message": "Rate limit reached",
                "param": null, "sequence_number": next,
            })
        )
    );
    let (name, failed) = &got[1];
    assert_eq!(name, "response.failed");
    assert_eq!(failed["sequence_number"], next + 1);
    assert_eq!(failed["response"]["status"], "failed");
    assert_eq!(
        failed["response"]["error"],
        json!({ "code": "rate_limit_exceeded", "message": "Rate limit reached" })
    );
    assert_eq!(
        failed["response"]["output"][0]["content"][0]["text"],
        "Once"
    );

    // A translation failure is the gateway's: a server error.
    let translate = StreamError::from(TranslateError::Missing {
        field: "stream chunk 2.id".into(),
    });
    let got = events(&translator().error_frames(&translate));
    assert_eq!(got[0].1["code"], "server_error");
    assert_eq!(
        got[0].1["message"],
        "the upstream's stream could not be translated: stream chunk 2.id: required field is missing"
    );
    assert_eq!(got[1].1["response"]["error"]["code"], "server_error");
}

#[test]
fn usage_is_reported_for_accounting() {
    let mut t = translator();
    assert_eq!(t.usage(), None);
    let usage = json!({ "id": "c", "choices": [], "usage": {
        "prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
        "prompt_tokens_details": { "cached_tokens": 4 },
        "completion_tokens_details": { "reasoning_tokens": 5 },
    }});
    t.event(&sse(usage)).expect("usage");
    assert_eq!(
        t.usage(),
        Some(json!({
            "input_tokens": 10,
            "input_tokens_details": { "cached_tokens": 4, "cache_write_tokens": 0 },
            "output_tokens": 7,
            "output_tokens_details": { "reasoning_tokens": 5 },
            "total_tokens": 17,
        }))
    );
}

#[test]
fn the_end_is_sent_once() {
    let mut t = translator();
    // Nothing came: still a whole response, incomplete for no known reason.
    let got = events(&t.finish().concat());
    let names: Vec<_> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.incomplete"
        ]
    );
    assert_eq!(
        got[2].1["response"]["incomplete_details"],
        json!({ "reason": null })
    );
    assert!(t.finish().is_empty());
    let done = SseEvent {
        data: "[DONE]".into(),
        ..SseEvent::default()
    };
    assert!(t.event(&done).expect("ignored").is_empty());
}

/// A call without arguments gets `{}`, as in the non-streaming answer.
#[test]
fn calls_without_arguments_get_an_empty_object() {
    let mut t = translator();
    let mut frames = t
        .event(&sse(call(0, Some("a"), Some("now"), "")))
        .expect("call");
    frames.extend(
        t.event(&sse(delta(json!({}), Some("tool_calls"))))
            .expect("finish"),
    );
    let got = events(&frames.concat());
    let done = got
        .iter()
        .find(|(n, _)| n == "response.function_call_arguments.done")
        .expect("arguments done");
    assert_eq!(done.1["arguments"], "{}");
}

#[test]
fn the_request_is_echoed() {
    let mut t = translator();
    t.echo_request(&json!({ "input": "hi", "instructions": "be brief", "tool_choice": "none" }));
    let got = events(&t.finish().concat());
    for (_, data) in &got {
        assert_eq!(data["response"]["instructions"], "be brief");
        assert_eq!(data["response"]["tool_choice"], "none");
    }
}
