//! Bedrock ConverseStream → OpenAI chunks: golden streams whose inputs are
//! framed for real (event-stream binary with CRCs) and decoded in pieces of
//! every cut, the error messages, and a no-panic mutation test.
//!
//! A golden input is `golden_bedrock/bedrock_to_openai.<case>.in.json`, a
//! JSON array of messages, each `{"event": <:event-type>, "payload": {...}}`
//! or `{"exception": <:exception-type>, "payload": {...}}`; the output is
//! `.out.sse`. A case named `*include_usage*` is a client that set
//! `stream_options.include_usage`. Kept apart from `golden/`, whose harness
//! reads every entry there as a server-sent-event stream.
use std::{fs, path::Path};

use serde_json::{json, Value};

use super::{
    eventstream::{encode as encode_message, EventStreamDecoder, HeaderValue},
    *,
};

const GOLDEN_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/gate/llm/stream/golden_bedrock"
);
const REQUESTED_MODEL: &str = "client-requested-model";
const ID: &str = "chatcmpl-gateway-1";
const CREATED: u64 = 1_700_000_000;

/// One message on the wire, from its JSON description.
fn frame_of(m: &Value) -> Vec<u8> {
    let s = |v: &str| HeaderValue::String(v.to_owned());
    let payload = m["payload"].to_string();
    let headers = if let Some(kind) = m["event"].as_str() {
        vec![
            (":event-type", s(kind)),
            (":content-type", s("application/json")),
            (":message-type", s("event")),
        ]
    } else if let Some(kind) = m["exception"].as_str() {
        vec![
            (":exception-type", s(kind)),
            (":content-type", s("application/json")),
            (":message-type", s("exception")),
        ]
    } else {
        panic!("a golden message is an event or an exception: {m}")
    };
    encode_message(&headers, payload.as_bytes())
}

fn wire(messages: &[Value]) -> Vec<u8> {
    messages.iter().flat_map(frame_of).collect()
}

/// What the client receives: frames as messages complete, the error frame
/// on an error (no `[DONE]`), else the trailer when the body ends.
fn run(bytes: &[u8], split: usize, include_usage: bool) -> String {
    let mut decoder = EventStreamDecoder::default();
    let mut t = BedrockToOpenAi::new(REQUESTED_MODEL, ID.into(), CREATED, include_usage);
    let mut out = String::new();
    for piece in bytes.chunks(split.max(1)) {
        let messages = match decoder.push(piece) {
            Ok(m) => m,
            Err(e) => {
                let e = StreamError::Upstream {
                    kind: "api_error".into(),
                    message: e.to_string(),
                };
                return out + &e.openai_frame();
            }
        };
        for m in messages {
            match t.message(&m) {
                Ok(frames) => out.extend(frames),
                Err(e) => return out + &e.openai_frame(),
            }
        }
    }
    out.extend(t.finish());
    out
}

/// Events as an SDK reads them, data parsed as JSON where it is JSON.
fn client_view(stream: &str) -> Vec<Value> {
    SseParser::default()
        .push(stream.as_bytes())
        .expect("an event stream")
        .into_iter()
        .map(|e| serde_json::from_str(&e.data).unwrap_or(Value::String(e.data)))
        .collect()
}

fn cases() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(GOLDEN_DIR)
        .expect("golden directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut cases = Vec::new();
    for name in &names {
        if let Some(case) = name
            .strip_prefix("bedrock_to_openai.")
            .and_then(|n| n.strip_suffix(".in.json"))
        {
            cases.push(case.to_owned());
        } else {
            let input = name.replace(".out.sse", ".in.json");
            assert!(
                name.ends_with(".out.sse") && names.contains(&input),
                "stray file in golden_bedrock/: {name}"
            );
        }
    }
    cases
}

fn input(case: &str) -> Vec<Value> {
    let path = Path::new(GOLDEN_DIR).join(format!("bedrock_to_openai.{case}.in.json"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every golden input framed, fed whole, per byte and per 7 bytes, against
/// its `.out.sse`. With `TRIGATE_UPDATE_GOLDEN=1` the outputs are rewritten
/// instead: review the diff by hand, the files are the specification.
#[test]
fn golden() {
    let update = std::env::var("TRIGATE_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let bytes = wire(&input(case));
        let include_usage = case.contains("include_usage");
        let got = run(&bytes, bytes.len(), include_usage);
        for split in [1, 7] {
            assert_eq!(
                run(&bytes, split, include_usage),
                got,
                "{case}: pieces of {split} bytes"
            );
        }
        let out = Path::new(GOLDEN_DIR).join(format!("bedrock_to_openai.{case}.out.sse"));
        if update {
            fs::write(out, &got).expect("write golden");
            continue;
        }
        let want = fs::read_to_string(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        let (want, got) = (client_view(&want), client_view(&got));
        if want != got {
            failures.push(format!(
                "{case}:\n  want {}\n  got  {}",
                Value::from(want),
                Value::from(got)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
    assert!(cases.len() >= 5, "only {} golden cases", cases.len());
}

fn event(kind: &str, payload: Value) -> EventMessage {
    EventStreamDecoder::default()
        .push(&frame_of(&json!({ "event": kind, "payload": payload })))
        .expect("valid")
        .remove(0)
}

fn first_error(messages: &[EventMessage]) -> String {
    let mut t = BedrockToOpenAi::new(REQUESTED_MODEL, ID.into(), CREATED, false);
    for m in messages {
        if let Err(e) = t.message(m) {
            return e.to_string();
        }
    }
    panic!("expected an error from {messages:?}")
}

#[test]
fn errors_name_the_message() {
    let start = || event("messageStart", json!({ "role": "assistant" }));
    let text = event(
        "contentBlockDelta",
        json!({ "contentBlockIndex": 0, "delta": { "text": "hi" } }),
    );
    assert_eq!(
        first_error(&[text]),
        "stream message 1: contentBlockDelta before messageStart"
    );
    assert_eq!(
        first_error(&[start(), start()]),
        "stream message 2: messageStart repeated"
    );
    assert_eq!(
        first_error(&[
            start(),
            event("messageStop", json!({ "stopReason": "sleepy" }))
        ]),
        "stream message 2.stopReason: unknown value \"sleepy\""
    );
    let args = event(
        "contentBlockDelta",
        json!({ "contentBlockIndex": 1, "delta": { "toolUse": { "input": "{" } } }),
    );
    assert_eq!(
        first_error(&[start(), args]),
        "stream message 2.contentBlockIndex: block 1 is not an open toolUse block"
    );
    assert_eq!(
        first_error(&[
            start(),
            event(
                "contentBlockDelta",
                json!({ "contentBlockIndex": 0, "delta": { "image": {} } })
            )
        ]),
        "stream message 2.delta: unknown delta \"image\""
    );
    assert_eq!(
        first_error(&[
            start(),
            event("metadata", json!({ "usage": { "inputTokens": "3" } }))
        ]),
        "stream message 2.usage.inputTokens: expected a non-negative integer, got a string"
    );
    let no_type = EventMessage {
        headers: vec![],
        payload: b"{}".to_vec(),
    };
    assert_eq!(
        first_error(&[no_type]),
        "stream message 1.:event-type: required field is missing"
    );
    let not_json = EventMessage {
        headers: vec![(
            ":event-type".into(),
            HeaderValue::String("messageStart".into()),
        )],
        payload: b"{oops".to_vec(),
    };
    assert!(first_error(&[not_json]).starts_with("stream message 1: payload is not valid JSON"));
}

#[test]
fn upstream_errors_pass_through() {
    let exception = EventMessage {
        headers: vec![
            (
                ":message-type".into(),
                HeaderValue::String("exception".into()),
            ),
            (
                ":exception-type".into(),
                HeaderValue::String("throttlingException".into()),
            ),
        ],
        payload: br#"{"message":"Too many requests"}"#.to_vec(),
    };
    assert_eq!(
        first_error(&[exception]),
        "upstream stream error throttlingException: Too many requests"
    );
    // Not JSON: the payload is the message.
    let exception = EventMessage {
        headers: vec![(
            ":message-type".into(),
            HeaderValue::String("exception".into()),
        )],
        payload: b"boom".to_vec(),
    };
    assert_eq!(
        first_error(&[exception]),
        "upstream stream error exception: boom"
    );
    let error = EventMessage {
        headers: vec![
            (":message-type".into(), HeaderValue::String("error".into())),
            (
                ":error-code".into(),
                HeaderValue::String("InternalError".into()),
            ),
            (":error-message".into(), HeaderValue::String("oops".into())),
        ],
        payload: vec![],
    };
    assert_eq!(
        first_error(&[error]),
        "upstream stream error InternalError: oops"
    );
}

#[test]
fn usage_and_the_end() {
    let mut t = BedrockToOpenAi::new(REQUESTED_MODEL, ID.into(), CREATED, false);
    assert_eq!(t.usage(), None);
    t.message(&event("messageStart", json!({ "role": "assistant" })))
        .expect("start");
    t.message(&event(
        "metadata",
        json!({ "usage": { "inputTokens": 5, "outputTokens": 2, "totalTokens": 7 }, "metrics": { "latencyMs": 1 } }),
    ))
    .expect("metadata");
    assert_eq!(
        t.usage(),
        Some(json!({ "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7 }))
    );
    // Without include_usage the end is only [DONE], and it is sent once.
    assert_eq!(t.finish(), ["data: [DONE]\n\n"]);
    assert!(t.finish().is_empty());
}

/// A small deterministic generator: the test must fail the same way twice.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn pointers_of(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => o
            .iter()
            .for_each(|(k, v)| pointers_of(v, format!("{at}/{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| pointers_of(v, format!("{at}/{i}"), out)),
        _ => {}
    }
    out.push(at);
}

/// Byte-level mutations of the framed golden inputs, and every JSON node of
/// every golden message (headers and payloads) replaced by each JSON type:
/// the translation may refuse, but must never panic.
#[test]
fn mutated_streams_are_errors_not_panics() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let replacements = [
        json!(null),
        json!(true),
        json!(-1),
        json!("x"),
        json!([]),
        json!({}),
        json!({ "toolUse": {} }),
    ];
    let mut runs = 0;
    for case in cases() {
        let messages = input(&case);
        let bytes = wire(&messages);
        for _ in 0..100 {
            let mut b = bytes.clone();
            let at = rng.below(b.len());
            match rng.below(3) {
                0 => b[at] = rng.next() as u8,
                1 => drop(b.drain(at..(at + rng.below(32)).min(b.len()))),
                _ => b.insert(at, rng.next() as u8),
            }
            run(&b, 1 + rng.below(16), true);
        }
        let whole = json!(messages);
        let mut pointers = Vec::new();
        pointers_of(&whole, String::new(), &mut pointers);
        for pointer in &pointers {
            for replacement in &replacements {
                let mut mutated = whole.clone();
                let Some(slot) = mutated.pointer_mut(pointer) else {
                    continue;
                };
                *slot = replacement.clone();
                // Only mutations that still describe a frame: the event
                // name may become any string, the payload any JSON.
                let Some(list) = mutated.as_array() else {
                    continue;
                };
                let framable = list.iter().all(|m| {
                    m.get("payload").is_some()
                        && (m["event"].is_string() || m["exception"].is_string())
                });
                if !framable {
                    continue;
                }
                run(&wire(list), usize::MAX, true);
                runs += 1;
            }
        }
    }
    assert!(runs > 500, "only {runs} mutations ran");
}
