//! Golden files pin each mapping; the unit tests pin the error messages
//! clients will read; the round trips show nothing in the supported subset
//! is lost.
use std::{collections::BTreeMap, fs, path::Path};

use serde_json::{json, Value};

use super::*;

const GOLDEN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/gate/llm/golden");
/// Distinct from every upstream `model` in the fixtures, so the goldens show
/// the reported model comes from the argument.
pub(super) const REQUESTED_MODEL: &str = "client-requested-model";
const CREATED: u64 = 1_700_000_000;
/// The id the caller passes for providers whose answers carry none.
const RESPONSE_ID: &str = "chatcmpl-gateway-1";
/// The id the caller makes up for a Responses API answer.
const RESPONSES_ID: &str = "resp_gateway-1";

/// The direction is the file-name prefix: `<direction>.<case>.in.json`.
fn translate(direction: &str, input: &Value) -> Result<Value, TranslateError> {
    match direction {
        "openai_to_anthropic_request" => openai_request_to_anthropic(input),
        "anthropic_to_openai_request" => anthropic_request_to_openai(input),
        "anthropic_to_openai_response" => {
            anthropic_response_to_openai(input, REQUESTED_MODEL, CREATED)
        }
        "openai_to_anthropic_response" => openai_response_to_anthropic(input, REQUESTED_MODEL),
        "openai_to_bedrock_request" => openai_request_to_bedrock(input),
        "bedrock_to_openai_response" => {
            bedrock_response_to_openai(input, REQUESTED_MODEL, RESPONSE_ID, CREATED)
        }
        "openai_to_gemini_request" => openai_request_to_gemini(input),
        "gemini_to_openai_response" => {
            gemini_response_to_openai(input, REQUESTED_MODEL, RESPONSE_ID, CREATED)
        }
        "responses_to_chat_request" => responses_request_to_chat(input),
        "chat_to_responses_response" => {
            chat_response_to_responses(input, REQUESTED_MODEL, RESPONSES_ID, CREATED)
        }
        other => panic!("golden file for unknown direction {other:?}"),
    }
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every golden `*.in.json` against its `.out.json`. With
/// `TRIGATE_UPDATE_GOLDEN=1` the outputs are rewritten instead: review the
/// diff by hand, the files are the specification.
#[test]
fn golden() {
    let update = std::env::var("TRIGATE_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut names: Vec<String> = fs::read_dir(GOLDEN_DIR)
        .expect("golden directory")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    let mut per_direction = BTreeMap::<&str, usize>::new();
    let mut failures = Vec::new();
    for name in &names {
        let Some(stem) = name.strip_suffix(".in.json") else {
            assert!(name.ends_with(".out.json"), "stray file in golden/: {name}");
            let input = name.replace(".out.json", ".in.json");
            assert!(names.contains(&input), "{name} has no {input}");
            continue;
        };
        let (direction, _case) = stem.split_once('.').expect("<direction>.<case>.in.json");
        let got = translate(direction, &read_json(&Path::new(GOLDEN_DIR).join(name)))
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        *per_direction.entry(direction).or_default() += 1;
        let out = Path::new(GOLDEN_DIR).join(format!("{stem}.out.json"));
        if update {
            let text = serde_json::to_string_pretty(&got).expect("serialize");
            fs::write(&out, text + "\n").expect("write golden");
            continue;
        }
        let want = read_json(&out);
        if got != want {
            let mut lines = Vec::new();
            diff("$", &want, &got, &mut lines);
            failures.push(format!("{stem}:\n  {}", lines.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (want vs got):\n{}",
        failures.join("\n")
    );
    for direction in [
        "openai_to_anthropic_request",
        "anthropic_to_openai_request",
        "anthropic_to_openai_response",
        "openai_to_anthropic_response",
        "openai_to_bedrock_request",
        "bedrock_to_openai_response",
        "openai_to_gemini_request",
        "gemini_to_openai_response",
        "responses_to_chat_request",
        "chat_to_responses_response",
    ] {
        let n = per_direction.get(direction).copied().unwrap_or(0);
        assert!(n >= 3, "{direction}: only {n} golden cases");
    }
}

/// One line per differing path, so a mismatch reads without a JSON diff tool.
fn diff(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            let keys: std::collections::BTreeSet<_> = w.keys().chain(g.keys()).collect();
            for key in keys {
                let path = format!("{path}.{key}");
                match (w.get(key), g.get(key)) {
                    (Some(w), Some(g)) => diff(&path, w, g, out),
                    (Some(w), None) => out.push(format!("{path}: missing, want {w}")),
                    (None, Some(g)) => out.push(format!("{path}: unexpected {g}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            for i in 0..w.len().max(g.len()) {
                let path = format!("{path}[{i}]");
                match (w.get(i), g.get(i)) {
                    (Some(w), Some(g)) => diff(&path, w, g, out),
                    (Some(w), None) => out.push(format!("{path}: missing, want {w}")),
                    (None, Some(g)) => out.push(format!("{path}: unexpected {g}")),
                    (None, None) => {}
                }
            }
        }
        _ if want != got => out.push(format!("{path}: want {want}, got {got}")),
        _ => {}
    }
}

fn err(result: Result<Value, TranslateError>) -> String {
    match result {
        Ok(v) => panic!("expected an error, got {v:#}"),
        Err(e) => e.to_string(),
    }
}

fn user(content: Value) -> Value {
    json!({ "role": "user", "content": content })
}

#[test]
fn invalid_tool_arguments_name_the_field() {
    let call = |arguments: &str| {
        json!({ "messages": [
            user(json!("hi")),
            { "role": "assistant", "content": null, "tool_calls": [
                { "id": "call_1", "type": "function", "function": { "name": "f", "arguments": "{}" } },
                { "id": "call_2", "type": "function", "function": { "name": "f", "arguments": arguments } },
            ]},
        ]})
    };
    let e = err(openai_request_to_anthropic(&call("{\"city\": ")));
    assert!(
        e.starts_with("messages[1].tool_calls[1].function.arguments: not valid JSON"),
        "{e}"
    );
    assert_eq!(
        err(openai_request_to_anthropic(&call("[1, 2]"))),
        "messages[1].tool_calls[1].function.arguments: expected a JSON object, got an array"
    );
    let resp = json!({
        "id": "chatcmpl-1",
        "choices": [{ "index": 0, "finish_reason": "tool_calls", "message": { "role": "assistant", "tool_calls": [
            { "id": "call_1", "type": "function", "function": { "name": "f", "arguments": "{oops" } },
        ]}}],
    });
    let e = err(openai_response_to_anthropic(&resp, REQUESTED_MODEL));
    assert!(
        e.starts_with("choices[0].message.tool_calls[0].function.arguments: not valid JSON"),
        "{e}"
    );
}

#[test]
fn unsupported_fields_are_refused_by_name() {
    let with = |key: &str, value: Value| {
        let mut req = json!({ "model": "gpt-4o", "messages": [user(json!("hi"))] });
        req[key] = value;
        err(openai_request_to_anthropic(&req))
    };
    assert_eq!(
        with("response_format", json!({ "type": "json_object" })),
        "response_format: type \"json_object\" has no Anthropic Messages equivalent"
    );
    assert_eq!(
        with(
            "response_format",
            json!({ "type": "json_schema", "json_schema": { "name": "x", "schema": {} } })
        ),
        "response_format: type \"json_schema\" has no Anthropic Messages equivalent"
    );
    assert_eq!(
        with("logprobs", json!(true)),
        "logprobs: has no Anthropic Messages equivalent"
    );
    assert_eq!(
        with("n", json!(3)),
        "n: Anthropic returns a single choice, 3 were asked for"
    );
    assert_eq!(
        with("seed", json!(7)),
        "seed: has no Anthropic Messages equivalent"
    );
    assert_eq!(
        with(
            "tools",
            json!([{ "type": "function", "function": { "name": "f", "strict": true } }])
        ),
        "tools[0].function.strict: strict function calling has no Anthropic Messages equivalent"
    );

    let anthropic = json!({
        "model": "claude", "max_tokens": 10, "messages": [user(json!("hi"))],
        "thinking": { "type": "enabled", "budget_tokens": 1024 },
    });
    assert_eq!(
        err(anthropic_request_to_openai(&anthropic)),
        "thinking: has no OpenAI Chat Completions equivalent"
    );
    let server_tool = json!({
        "max_tokens": 10, "messages": [user(json!("hi"))],
        "tools": [{ "type": "web_search_20250305", "name": "web_search" }],
    });
    assert_eq!(
        err(anthropic_request_to_openai(&server_tool)),
        "tools[0].type: server tool \"web_search_20250305\" has no OpenAI Chat Completions equivalent"
    );
}

#[test]
fn unknown_content_types_name_the_part() {
    let req = json!({ "messages": [
        { "role": "system", "content": "be brief" },
        user(json!("hi")),
        user(json!([{ "type": "audio", "data": "..." }])),
    ]});
    assert_eq!(
        err(openai_request_to_anthropic(&req)),
        "messages[2].content[0]: unknown content part type \"audio\""
    );
    let req = json!({ "messages": [user(json!([
        { "type": "text", "text": "listen" },
        { "type": "input_audio", "input_audio": { "data": "...", "format": "wav" } },
    ]))]});
    assert_eq!(
        err(openai_request_to_anthropic(&req)),
        "messages[0].content[1]: content part type \"input_audio\" has no Anthropic Messages equivalent"
    );
    let req = json!({ "messages": [user(json!([
        { "type": "image_url", "image_url": { "url": "ftp://example.com/cat.png" } },
    ]))]});
    assert_eq!(
        err(openai_request_to_anthropic(&req)),
        "messages[0].content[0].image_url.url: expected an http(s) URL or a base64 data: URL"
    );
    let req =
        json!({ "max_tokens": 5, "messages": [user(json!([{ "type": "video", "source": {} }]))] });
    assert_eq!(
        err(anthropic_request_to_openai(&req)),
        "messages[0].content[0]: unknown content block type \"video\" in a user message"
    );
    let resp = json!({ "id": "msg_1", "type": "message", "stop_reason": "end_turn", "content": [
        { "type": "text", "text": "hi" }, { "type": "hologram" },
    ]});
    assert_eq!(
        err(anthropic_response_to_openai(
            &resp,
            REQUESTED_MODEL,
            CREATED
        )),
        "content[1]: unknown content block type \"hologram\""
    );
}

#[test]
fn missing_and_malformed_fields_name_the_field() {
    assert_eq!(
        err(openai_request_to_anthropic(&json!({ "model": "gpt-4o" }))),
        "messages: required field is missing"
    );
    assert_eq!(
        err(anthropic_request_to_openai(&json!({ "max_tokens": 5 }))),
        "messages: required field is missing"
    );
    assert_eq!(
        err(openai_request_to_anthropic(&json!({ "messages": "hi" }))),
        "messages: expected an array, got a string"
    );
    assert_eq!(
        err(openai_request_to_anthropic(
            &json!({ "messages": [{ "role": "system", "content": "x" }] })
        )),
        "messages: must hold at least one user or assistant message"
    );
    assert_eq!(
        err(openai_request_to_anthropic(&json!([1]))),
        "body: expected an object, got an array"
    );
    assert_eq!(
        err(openai_request_to_anthropic(
            &json!({ "messages": [{ "content": "hi" }] })
        )),
        "messages[0].role: required field is missing"
    );
    assert_eq!(
        err(openai_request_to_anthropic(
            &json!({ "messages": [{ "role": "assistant", "content": null }] })
        )),
        "messages[0]: assistant message needs content or tool_calls"
    );
    assert_eq!(
        err(openai_request_to_anthropic(
            &json!({ "messages": [user(json!("hi"))], "max_tokens": -1 })
        )),
        "max_tokens: expected a non-negative integer, got a number"
    );
    assert_eq!(
        err(openai_request_to_anthropic(
            &json!({ "messages": [user(json!("hi"))], "tool_choice": "sometimes" })
        )),
        "tool_choice: unknown value \"sometimes\""
    );
    assert_eq!(
        err(openai_request_to_anthropic(
            &json!({ "messages": [{ "role": "tool", "content": "42" }] })
        )),
        "messages[0].tool_call_id: required field is missing"
    );
    let resp = json!({ "id": "msg_1", "content": [], "stop_reason": "sleepy" });
    assert_eq!(
        err(anthropic_response_to_openai(
            &resp,
            REQUESTED_MODEL,
            CREATED
        )),
        "stop_reason: unknown value \"sleepy\""
    );
    assert_eq!(
        err(openai_response_to_anthropic(
            &json!({ "id": "x", "choices": [] }),
            REQUESTED_MODEL
        )),
        "choices: must hold at least one choice"
    );
}

/// The supported subset survives OpenAI → Anthropic → OpenAI unchanged.
#[test]
fn openai_request_round_trip() {
    let req = json!({
        "model": "gpt-4o",
        "messages": [
            { "role": "system", "content": "You are terse." },
            user(json!("Weather in Paris and Rome?")),
            { "role": "assistant", "content": null, "tool_calls": [
                { "id": "call_1", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" } },
                { "id": "call_2", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Rome\"}" } },
            ]},
            { "role": "tool", "tool_call_id": "call_1", "content": "18C" },
            { "role": "tool", "tool_call_id": "call_2", "content": "24C" },
            user(json!([
                { "type": "text", "text": "And this one?" },
                { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0KGgo=" } },
                { "type": "image_url", "image_url": { "url": "https://example.com/map.jpg" } },
            ])),
            { "role": "assistant", "content": "A map of Lyon." },
            user(json!("Thanks.")),
        ],
        "tools": [{ "type": "function", "function": {
            "name": "weather",
            "description": "Current weather",
            "parameters": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] },
        }}],
        "tool_choice": { "type": "function", "function": { "name": "weather" } },
        "parallel_tool_calls": false,
        "max_completion_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END", "STOP"],
        "stream": false,
        "user": "user-42",
    });
    let anthropic = openai_request_to_anthropic(&req).expect("to anthropic");
    let back = anthropic_request_to_openai(&anthropic).expect("back to openai");
    let mut lines = Vec::new();
    diff("$", &req, &back, &mut lines);
    assert!(
        lines.is_empty(),
        "round trip changed:\n{}",
        lines.join("\n")
    );
}

/// And the Anthropic subset survives Anthropic → OpenAI → Anthropic.
#[test]
fn anthropic_request_round_trip() {
    let req = json!({
        "model": "claude-sonnet-4-5",
        "system": "You are terse.",
        "messages": [
            user(json!("Weather in Paris?")),
            { "role": "assistant", "content": [
                { "type": "text", "text": "Checking." },
                { "type": "tool_use", "id": "toolu_1", "name": "weather", "input": { "city": "Paris" } },
            ]},
            user(json!([
                { "type": "tool_result", "tool_use_id": "toolu_1", "content": "18C" },
                { "type": "text", "text": "And here?" },
                { "type": "image", "source": { "type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ" } },
            ])),
            { "role": "assistant", "content": "Lyon." },
        ],
        "tools": [{ "name": "weather", "input_schema": { "type": "object", "properties": {} } }],
        "tool_choice": { "type": "any", "disable_parallel_tool_use": true },
        "max_tokens": 512,
        "temperature": 1,
        "stop_sequences": ["END"],
        "stream": true,
        "metadata": { "user_id": "user-42" },
    });
    let openai = anthropic_request_to_openai(&req).expect("to openai");
    let back = openai_request_to_anthropic(&openai).expect("back to anthropic");
    let mut lines = Vec::new();
    diff("$", &req, &back, &mut lines);
    assert!(
        lines.is_empty(),
        "round trip changed:\n{}",
        lines.join("\n")
    );
}

/// `input` with each of its nodes (the whole included) replaced by each
/// JSON type, one at a time.
pub(in crate::gate::llm) fn mutations(input: &Value) -> Vec<Value> {
    fn paths(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => o
                .iter()
                .for_each(|(k, v)| paths(v, format!("{at}/{k}"), out)),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, v)| paths(v, format!("{at}/{i}"), out)),
            _ => {}
        }
        out.push(at);
    }
    let replacements = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1.5),
        json!("data:"),
        json!([]),
        json!({}),
        json!([{}]),
    ];
    let mut at = Vec::new();
    paths(input, String::new(), &mut at);
    let mut out = Vec::new();
    for pointer in at {
        for replacement in &replacements {
            let mut mutated = input.clone();
            if let Some(slot) = mutated.pointer_mut(&pointer) {
                *slot = replacement.clone();
                out.push(mutated);
            }
        }
    }
    out
}

/// Each text that is JSON with each of its nodes replaced by each JSON
/// type ([`mutations`]), as text.
pub(in crate::gate::llm) fn mutated_texts(texts: &[String]) -> Vec<String> {
    texts
        .iter()
        .filter_map(|t| serde_json::from_str::<Value>(t).ok())
        .flat_map(|v| mutations(&v))
        .map(|v| v.to_string())
        .collect()
}

/// The golden inputs of one direction, as text.
pub(in crate::gate::llm) fn golden_inputs(direction: &str) -> Vec<String> {
    let prefix = format!("{direction}.");
    let texts: Vec<String> = fs::read_dir(GOLDEN_DIR)
        .expect("golden directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".in.json"))
        })
        .map(|p| fs::read_to_string(p).expect("golden input"))
        .collect();
    assert!(
        texts.len() >= 4,
        "{direction}: golden inputs found: {}",
        texts.len()
    );
    texts
}

/// Every golden input with each of its nodes replaced by each JSON type:
/// the translation may refuse, but must never panic.
#[test]
fn malformed_inputs_are_errors_not_panics() {
    let mut runs = 0;
    for entry in fs::read_dir(GOLDEN_DIR).expect("golden directory") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let Some(stem) = name.strip_suffix(".in.json") else {
            continue;
        };
        let direction = stem.split('.').next().expect("direction");
        let input = read_json(&Path::new(GOLDEN_DIR).join(&name));
        for mutated in mutations(&input) {
            let _ = translate(direction, &mutated);
            runs += 1;
        }
    }
    assert!(runs > 1000, "only {runs} mutations ran");
}

/// Every tool_choice form, both ways, with and without parallel calls.
#[test]
fn tool_choice_mapping() {
    let tools = json!([{ "type": "function", "function": { "name": "f" } }]);
    let named = json!({ "type": "function", "function": { "name": "f" } });
    let cases = [
        (json!("auto"), None, json!({ "type": "auto" })),
        (json!("required"), None, json!({ "type": "any" })),
        (json!("none"), None, json!({ "type": "none" })),
        (named.clone(), None, json!({ "type": "tool", "name": "f" })),
        (
            json!("auto"),
            Some(false),
            json!({ "type": "auto", "disable_parallel_tool_use": true }),
        ),
        (
            json!("required"),
            Some(false),
            json!({ "type": "any", "disable_parallel_tool_use": true }),
        ),
        (
            named,
            Some(false),
            json!({ "type": "tool", "name": "f", "disable_parallel_tool_use": true }),
        ),
    ];
    for (openai, parallel, anthropic) in cases {
        let mut req =
            json!({ "messages": [user(json!("hi"))], "tools": tools, "tool_choice": openai });
        if let Some(parallel) = parallel {
            req["parallel_tool_calls"] = json!(parallel);
        }
        let got = openai_request_to_anthropic(&req).expect("to anthropic");
        assert_eq!(
            got["tool_choice"], anthropic,
            "from {openai}, parallel {parallel:?}"
        );
        let back = anthropic_request_to_openai(&got).expect("back to openai");
        assert_eq!(back["tool_choice"], openai, "back from {anthropic}");
        assert_eq!(
            back.get("parallel_tool_calls").and_then(Value::as_bool),
            parallel,
            "back from {anthropic}"
        );
    }
    // "none" calls no tool, so there is nothing to run in parallel.
    let req = json!({ "messages": [user(json!("hi"))], "tools": tools, "tool_choice": "none", "parallel_tool_calls": false });
    assert_eq!(
        openai_request_to_anthropic(&req).expect("to anthropic")["tool_choice"],
        json!({ "type": "none" })
    );
}

/// The answer parsed with only what the translation reads gives what the
/// whole answer gives: the same message, the same usage, the same error.
#[test]
fn an_answer_parsed_in_part_translates_as_the_whole_answer() {
    use super::json::parse_kept;
    use crate::gate::llm::usage::Usage;

    let mut texts = golden_inputs("openai_to_anthropic_response");
    texts.extend(answer_edge_cases());
    for text in &texts {
        let whole: Value = serde_json::from_str(text).unwrap();
        let part = parse_kept(text.as_bytes(), &OPENAI_ANSWER_READ).unwrap();
        assert_eq!(
            openai_response_to_anthropic(&part, REQUESTED_MODEL),
            openai_response_to_anthropic(&whole, REQUESTED_MODEL),
            "{text}"
        );
        assert_eq!(
            whole.get("usage").and_then(Usage::from_openai),
            part.get("usage").and_then(Usage::from_openai),
            "{text}"
        );
    }
    // Skipped parts are still checked: broken JSON anywhere is an error.
    // (A number too large for an f64 or a lone surrogate escape in a
    // skipped member is not: skipped members are checked for syntax, not
    // decoded.)
    for text in [r#"{"id": "x", "object": [1, }"#, r#"{"id": "x"} trailing"#] {
        assert_eq!(
            parse_kept(text.as_bytes(), &OPENAI_ANSWER_READ).is_err(),
            serde_json::from_str::<Value>(text).is_err(),
            "{text}"
        );
        assert!(
            parse_kept(text.as_bytes(), &OPENAI_ANSWER_READ).is_err(),
            "{text}"
        );
    }
}

/// Answers the translation refuses, and members it must not lose.
pub(in crate::gate::llm) fn answer_edge_cases() -> Vec<String> {
    [
        r#"{"id": "x", "choices": {"message": {}}}"#,
        r#"{"id": "x", "choices": [7, {"message": {"content": "b"}}]}"#,
        r#"{"id": "x", "choices": [{"message": [1, 2], "finish_reason": "stop"}]}"#,
        r#"{"id": "x", "choices": [{"message": {"content": 5}, "finish_reason": "stop"}]}"#,
        r#"{"id": 3, "choices": [{"message": {"content": "a"}, "finish_reason": "stop"}]}"#,
        r#"{"id": "x", "choices": [{"message": {"content": "a"}, "finish_reason": "nap"}]}"#,
        r#"{"id": "x", "choices": [{"message": {"content": "a"}, "finish_reason": "stop"}], "usage": "lots"}"#,
        r#"{"id": "x", "choices": [{"message": {"content": "a", "content": "b"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}}}"#,
        r#"{"i\u0064": "x", "choices": [{"message": {"cont\u0065nt": "a\u00e9\n"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1.0, "completion_tokens": 18446744073709551615}}"#,
        r#"{"id": "x", "choices": [{"message": {"content": null, "tool_calls": [{"id": "c", "type": "function",
            "function": {"name": "f", "arguments": "{\"a\": [1, {\"b\": null}]}"}}]}, "finish_reason": "tool_calls",
            "logprobs": {"content": [{"token": "x", "logprob": -0.1}]}}], "object": "chat.completion",
            "created": 1, "system_fingerprint": "fp", "usage": {"usage": {"prompt_tokens": 3}}}"#,
        r#"[1, 2]"#,
        r#""answer""#,
    ]
    .map(str::to_owned)
    .to_vec()
}
