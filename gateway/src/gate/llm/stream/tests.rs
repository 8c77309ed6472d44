//! Golden streams pin each mapping, byte splits show the output does not
//! depend on how the network cut the input, the unit tests pin the error
//! messages, and the mutation test shows no upstream bytes can panic.
use std::{fs, path::Path};

use serde_json::{json, Value};

use super::*;

/// Beside the code, not in `llm/golden/`: that directory's harness takes
/// every entry there for a non-streaming case.
const GOLDEN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/gate/llm/stream/golden");
const REQUESTED_MODEL: &str = "client-requested-model";
const CREATED: u64 = 1_700_000_000;
/// The id the caller passes for upstreams whose streams carry none.
const ID: &str = "chatcmpl-gateway-1";
/// The id the caller makes up for a Responses API answer.
const RESPONSE_ID: &str = "resp_gateway-1";
const DIRECTIONS: [&str; 4] = [
    "anthropic_to_openai",
    "openai_to_anthropic",
    "gemini_to_openai",
    "chat_to_responses",
];

/// The two directions behind one face, so the harness drives either.
trait Translator {
    fn event(&mut self, ev: &SseEvent) -> Result<Vec<String>, StreamError>;
    fn finish(&mut self) -> Vec<String>;
    fn error_frame(&self, e: &StreamError) -> String;
}

impl Translator for AnthropicToOpenAi {
    fn event(&mut self, ev: &SseEvent) -> Result<Vec<String>, StreamError> {
        AnthropicToOpenAi::event(self, ev)
    }
    fn finish(&mut self) -> Vec<String> {
        AnthropicToOpenAi::finish(self)
    }
    fn error_frame(&self, e: &StreamError) -> String {
        e.openai_frame()
    }
}

impl Translator for OpenAiToAnthropic {
    fn event(&mut self, ev: &SseEvent) -> Result<Vec<String>, StreamError> {
        OpenAiToAnthropic::event(self, ev)
    }
    fn finish(&mut self) -> Vec<String> {
        OpenAiToAnthropic::finish(self)
    }
    fn error_frame(&self, e: &StreamError) -> String {
        e.anthropic_frame()
    }
}

impl Translator for GeminiToOpenAi {
    fn event(&mut self, ev: &SseEvent) -> Result<Vec<String>, StreamError> {
        GeminiToOpenAi::event(self, ev)
    }
    fn finish(&mut self) -> Vec<String> {
        GeminiToOpenAi::finish(self)
    }
    fn error_frame(&self, e: &StreamError) -> String {
        e.openai_frame()
    }
}

impl Translator for ChatToResponses {
    fn event(&mut self, ev: &SseEvent) -> Result<Vec<String>, StreamError> {
        ChatToResponses::event(self, ev)
    }
    fn finish(&mut self) -> Vec<String> {
        ChatToResponses::finish(self)
    }
    fn error_frame(&self, e: &StreamError) -> String {
        self.error_frames(e)
    }
}

/// `<direction>.<case>.in.sse`; a case named `*include_usage*` is a client
/// that set `stream_options.include_usage`.
fn translator(direction: &str, case: &str) -> Box<dyn Translator> {
    match direction {
        "anthropic_to_openai" => Box::new(AnthropicToOpenAi::new(
            REQUESTED_MODEL,
            CREATED,
            case.contains("include_usage"),
        )),
        "openai_to_anthropic" => Box::new(OpenAiToAnthropic::new(REQUESTED_MODEL)),
        "gemini_to_openai" => Box::new(GeminiToOpenAi::new(
            REQUESTED_MODEL,
            ID.into(),
            CREATED,
            case.contains("include_usage"),
        )),
        "chat_to_responses" => Box::new(ChatToResponses::new(
            REQUESTED_MODEL,
            RESPONSE_ID.into(),
            CREATED,
        )),
        other => panic!("golden stream for unknown direction {other:?}"),
    }
}

/// What the client receives, as the gateway would send it: frames as
/// events complete, the error frame and the end on an error, else the
/// trailer when the upstream body ends.
fn run(t: &mut dyn Translator, events: impl IntoIterator<Item = SseEvent>) -> String {
    let mut out = String::new();
    for ev in events {
        match t.event(&ev) {
            Ok(frames) => out.extend(frames),
            Err(e) => return out + &t.error_frame(&e),
        }
    }
    out.extend(t.finish());
    out
}

fn run_bytes(direction: &str, case: &str, input: &[u8], split: usize) -> String {
    let mut parser = SseParser::default();
    let events = input
        .chunks(split)
        .flat_map(|piece| {
            parser
                .push(piece)
                .expect("golden input is a valid event stream")
        })
        .collect::<Vec<_>>();
    run(&mut *translator(direction, case), events)
}

/// Events as the client's SDK reads them: the name and the data, parsed as
/// JSON where it is JSON, so key order and spacing do not matter.
fn client_view(stream: &str) -> Vec<(Option<String>, Value)> {
    let events = SseParser::default()
        .push(stream.as_bytes())
        .expect("an event stream");
    events
        .into_iter()
        .map(|e| {
            let data = serde_json::from_str(&e.data).unwrap_or(Value::String(e.data));
            (e.event, data)
        })
        .collect()
}

/// One line per event, as on the wire.
fn show(event: Option<&(Option<String>, Value)>) -> String {
    match event {
        Some((Some(name), data)) => format!("event: {name} data: {data}"),
        Some((None, data)) => format!("data: {data}"),
        None => "nothing".into(),
    }
}

fn golden_cases() -> Vec<(String, String)> {
    let mut names: Vec<String> = fs::read_dir(GOLDEN_DIR)
        .expect("golden directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut cases = Vec::new();
    for name in &names {
        let Some(stem) = name.strip_suffix(".in.sse") else {
            let input = name.replace(".out.sse", ".in.sse");
            assert!(
                name.ends_with(".out.sse") && names.contains(&input),
                "stray file in stream/golden/: {name}"
            );
            continue;
        };
        let (direction, case) = stem.split_once('.').expect("<direction>.<case>.in.sse");
        cases.push((direction.to_owned(), case.to_owned()));
    }
    cases
}

fn read(direction: &str, case: &str, kind: &str) -> Vec<u8> {
    let path = Path::new(GOLDEN_DIR).join(format!("{direction}.{case}.{kind}.sse"));
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every golden `*.in.sse`, fed in pieces of 1 byte, 7 bytes and whole,
/// against its `.out.sse`. With `TRIGATE_UPDATE_GOLDEN=1` the outputs are
/// rewritten instead: review the diff by hand, the files are the
/// specification.
#[test]
fn golden() {
    let update = std::env::var("TRIGATE_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let cases = golden_cases();
    let mut failures = Vec::new();
    for (direction, case) in &cases {
        let input = read(direction, case, "in");
        let got = run_bytes(direction, case, &input, input.len());
        for split in [1, 7] {
            assert_eq!(
                run_bytes(direction, case, &input, split),
                got,
                "{direction}.{case}: pieces of {split} bytes"
            );
        }
        if update {
            let out = Path::new(GOLDEN_DIR).join(format!("{direction}.{case}.out.sse"));
            fs::write(out, &got).expect("write golden");
            continue;
        }
        let want = String::from_utf8(read(direction, case, "out")).expect("UTF-8");
        let (want, got) = (client_view(&want), client_view(&got));
        let mut lines = Vec::new();
        for i in 0..want.len().max(got.len()) {
            match (want.get(i), got.get(i)) {
                (Some(w), Some(g)) if w == g => {}
                (w, g) => lines.push(format!(
                    "event {i}:\n    want {}\n    got  {}",
                    show(w),
                    show(g)
                )),
            }
        }
        if !lines.is_empty() {
            failures.push(format!("{direction}.{case}:\n  {}", lines.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
    for direction in DIRECTIONS {
        let n = cases.iter().filter(|(d, _)| d == direction).count();
        assert!(n >= 5, "{direction}: only {n} golden cases");
    }
}

fn sse(data: Value) -> SseEvent {
    SseEvent {
        data: data.to_string(),
        ..SseEvent::default()
    }
}

/// The events' errors, or the frames if none failed.
fn first_error(t: &mut dyn Translator, events: &[Value]) -> String {
    for ev in events {
        if let Err(e) = t.event(&sse(ev.clone())) {
            return e.to_string();
        }
    }
    panic!("expected an error from {events:?}")
}

fn anthropic_start() -> Value {
    json!({ "type": "message_start", "message": { "id": "msg_1", "usage": { "input_tokens": 3 } } })
}

#[test]
fn anthropic_errors_name_the_event() {
    let a2o = || AnthropicToOpenAi::new(REQUESTED_MODEL, CREATED, false);
    let text_delta = json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "hi" } });
    assert_eq!(
        first_error(&mut a2o(), &[text_delta]),
        "stream event 1: content_block_delta before message_start"
    );
    let stop =
        |reason: &str| json!({ "type": "message_delta", "delta": { "stop_reason": reason } });
    assert_eq!(
        first_error(&mut a2o(), &[anthropic_start(), stop("sleepy")]),
        "stream event 2.delta.stop_reason: unknown value \"sleepy\""
    );
    assert!(
        first_error(&mut a2o(), &[anthropic_start(), stop("pause_turn")])
            .starts_with("stream event 2.delta.stop_reason: \"pause_turn\""),
    );
    let text_start = json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } });
    let json_delta = json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "input_json_delta", "partial_json": "{" } });
    assert_eq!(
        first_error(&mut a2o(), &[anthropic_start(), text_start, json_delta]),
        "stream event 3.index: block 0 is not an open tool_use block"
    );
    let bad_usage = json!({ "type": "message_start", "message": { "id": "m", "usage": { "input_tokens": "3" } } });
    assert_eq!(
        first_error(&mut a2o(), &[bad_usage]),
        "stream event 1.message.usage.input_tokens: expected a non-negative integer, got a string"
    );
    let server_tool = json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "server_tool_use" } });
    assert_eq!(
        first_error(&mut a2o(), &[anthropic_start(), server_tool]),
        "stream event 2.content_block: unknown content block type \"server_tool_use\""
    );
    let mut t = a2o();
    let e = t.event(&SseEvent {
        data: "{oops".into(),
        ..SseEvent::default()
    });
    assert!(e
        .expect_err("bad JSON")
        .to_string()
        .starts_with("stream event 1: not valid JSON"),);
}

#[test]
fn openai_errors_name_the_chunk() {
    let o2a = || OpenAiToAnthropic::new(REQUESTED_MODEL);
    let chunk = |delta: Value, finish: Value| json!({ "id": "c", "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] });
    let text = chunk(json!({ "content": "hi" }), Value::Null);
    let mut t = o2a();
    t.event(&sse(text.clone())).expect("chunk 1");
    t.event(&sse(text.clone())).expect("chunk 2");
    let e = t.event(&SseEvent {
        data: "{\"id\":".into(),
        ..SseEvent::default()
    });
    assert!(e
        .expect_err("bad JSON")
        .to_string()
        .starts_with("stream chunk 3: not valid JSON"),);
    assert_eq!(
        first_error(
            &mut o2a(),
            &[text.clone(), chunk(json!({}), json!("sleepy"))]
        ),
        "stream chunk 2.choices[0].finish_reason: unknown value \"sleepy\""
    );
    let call = |k: u64, id: Option<&str>| {
        let mut c = json!({ "index": k, "function": { "arguments": "{}" } });
        if let Some(id) = id {
            c["id"] = json!(id);
            c["function"]["name"] = json!("f");
        }
        chunk(json!({ "tool_calls": [c] }), Value::Null)
    };
    assert_eq!(
        first_error(&mut o2a(), &[call(0, None)]),
        "stream chunk 1.choices[0].delta.tool_calls[0].id: required field is missing"
    );
    assert_eq!(
        first_error(
            &mut o2a(),
            &[call(0, Some("a")), call(1, Some("b")), call(0, None)]
        ),
        "stream chunk 3.choices[0].delta.tool_calls[0].index: tool call 0 resumes after another block started; Anthropic content blocks cannot interleave"
    );
    assert_eq!(
        first_error(
            &mut o2a(),
            &[json!({ "id": "c", "usage": { "prompt_tokens": -1 } })]
        ),
        "stream chunk 1.usage.prompt_tokens: expected a non-negative integer, got a number"
    );
}

#[test]
fn error_frames_speak_the_clients_protocol() {
    let upstream = StreamError::upstream(Some(
        &json!({ "type": "overloaded_error", "message": "Overloaded" }),
    ));
    assert_eq!(
        upstream.anthropic_frame(),
        "event: error\ndata: {\"error\":{\"message\":\"Overloaded\",\"type\":\"overloaded_error\"},\"type\":\"error\"}\n\n"
    );
    let translate = StreamError::from(TranslateError::Missing {
        field: "stream event 2.delta".into(),
    });
    assert_eq!(
        client_view(&translate.openai_frame()),
        [(
            None,
            json!({ "error": {
                "message": "the upstream's stream could not be translated: stream event 2.delta: required field is missing",
                "type": "server_error", "param": null, "code": null,
            }})
        )]
    );
    assert_eq!(
        client_view(&translate.anthropic_frame())[0].1["error"]["type"],
        "api_error"
    );
    // A malformed report is still an error, with what there was of it.
    assert_eq!(
        StreamError::upstream(Some(&json!({ "code": 500 }))).to_string(),
        "upstream stream error error: {\"code\":500}"
    );
}

#[test]
fn usage_is_reported_for_accounting() {
    let mut t = AnthropicToOpenAi::new(REQUESTED_MODEL, CREATED, false);
    assert_eq!(t.usage(), None);
    t.event(&sse(anthropic_start())).expect("start");
    let delta = json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn" }, "usage": { "output_tokens": 9 } });
    t.event(&sse(delta)).expect("delta");
    assert_eq!(
        t.usage(),
        Some(json!({
            "prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12,
            "prompt_tokens_details": { "cached_tokens": 0 },
        }))
    );

    let mut t = OpenAiToAnthropic::new(REQUESTED_MODEL);
    assert_eq!(t.usage(), None);
    let usage = json!({ "id": "c", "choices": [], "usage": { "prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": { "cached_tokens": 4 } } });
    t.event(&sse(usage)).expect("usage");
    assert_eq!(
        t.usage(),
        Some(json!({
            "input_tokens": 6, "output_tokens": 2,
            "cache_read_input_tokens": 4, "cache_creation_input_tokens": 0,
        }))
    );
}

#[test]
fn the_end_is_sent_once() {
    let done = SseEvent {
        data: "[DONE]".into(),
        ..SseEvent::default()
    };
    let mut t = OpenAiToAnthropic::new(REQUESTED_MODEL);
    // An empty upstream stream still gives the client a whole message.
    let names: Vec<_> = client_view(&t.event(&done).expect("done").concat())
        .into_iter()
        .map(|(name, _)| name.unwrap_or_default())
        .collect();
    assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
    assert!(t
        .event(&sse(json!({ "id": "late" })))
        .expect("ignored")
        .is_empty());
    assert!(t.finish().is_empty());

    let mut t = AnthropicToOpenAi::new(REQUESTED_MODEL, CREATED, true);
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

/// Feeds bytes through the parser and both translators; any result is fine
/// but a panic.
fn survive(input: &[u8], split: usize) {
    for direction in DIRECTIONS {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for piece in input.chunks(split.max(1)) {
            match parser.push(piece) {
                Ok(evs) => events.extend(evs),
                Err(_) => break,
            }
        }
        run(&mut *translator(direction, "include_usage"), events);
    }
}

/// Random bytes, byte-level mutations of the golden inputs, and every JSON
/// node of every golden event replaced by each JSON type: the translation
/// may refuse, but must never panic.
#[test]
fn garbage_and_mutated_streams_are_errors_not_panics() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    const ALPHABET: &[u8] = b"data: event:{}[]\":,\n\r\n\r0a\xEF\xBB\xBF\xFF";
    for _ in 0..300 {
        let len = rng.below(600);
        let bytes: Vec<u8> = (0..len)
            .map(|_| match rng.below(3) {
                0 => rng.next() as u8,
                _ => ALPHABET[rng.below(ALPHABET.len())],
            })
            .collect();
        survive(&bytes, 1 + rng.below(16));
    }

    let mut runs = 0;
    for (direction, case) in golden_cases() {
        let input = read(&direction, &case, "in");
        for _ in 0..40 {
            let mut bytes = input.clone();
            let at = rng.below(bytes.len());
            let end = (at + rng.below(64)).min(bytes.len());
            match rng.below(4) {
                0 => bytes[at] = rng.next() as u8,
                1 => drop(bytes.drain(at..end)),
                2 => {
                    let copy = bytes[at..end].to_vec();
                    bytes.splice(at..at, copy);
                }
                _ => bytes.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
            }
            survive(&bytes, 1 + rng.below(16));
        }

        let events = SseParser::default().push(&input).expect("valid");
        let replacements = [
            json!(null),
            json!(true),
            json!(-1),
            json!("x"),
            json!([]),
            json!({}),
        ];
        for (i, ev) in events.iter().enumerate() {
            let Ok(data) = serde_json::from_str::<Value>(&ev.data) else {
                continue;
            };
            let mut pointers = Vec::new();
            pointers_of(&data, String::new(), &mut pointers);
            for pointer in &pointers {
                for replacement in &replacements {
                    let mut mutated = data.clone();
                    let Some(slot) = mutated.pointer_mut(pointer) else {
                        continue;
                    };
                    *slot = replacement.clone();
                    let mut stream = events.clone();
                    stream[i].data = mutated.to_string();
                    run(&mut *translator(&direction, &case), stream);
                    runs += 1;
                }
            }
        }
    }
    assert!(runs > 1000, "only {runs} mutations ran");
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
