//! OpenAI ↔ Gemini: the golden cases are run by `tests.rs` with the
//! others; these pin the error messages clients will read, the mappings
//! best read as tables, and what an Anthropic client's request becomes.
use std::{fs, path::Path};

use serde_json::{json, Value};

use super::{gemini::finish_reason, *};

const GOLDEN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/gate/llm/golden");

fn err(result: Result<Value, TranslateError>) -> String {
    match result {
        Ok(v) => panic!("expected an error, got {v:#}"),
        Err(e) => e.to_string(),
    }
}

fn user(content: Value) -> Value {
    json!({ "role": "user", "content": content })
}

fn with(key: &str, value: Value) -> String {
    let mut req = json!({ "model": "gemini-2.5-flash", "messages": [user(json!("hi"))] });
    req[key] = value;
    err(openai_request_to_gemini(&req))
}

fn to_openai(resp: &Value) -> Result<Value, TranslateError> {
    gemini_response_to_openai(resp, "client-model", "chatcmpl-1", 0)
}

#[test]
fn unsupported_fields_are_refused_by_name() {
    assert_eq!(
        with("logprobs", json!(true)),
        "logprobs: log-probabilities are not translated from Gemini's answer"
    );
    assert_eq!(
        with("logit_bias", json!({ "50256": -100 })),
        "logit_bias: has no Gemini generateContent equivalent"
    );
    assert_eq!(
        with("reasoning_effort", json!("high")),
        "reasoning_effort: has no Gemini generateContent equivalent"
    );
    assert_eq!(
        with("response_format", json!({ "type": "grammar" })),
        "response_format.type: \"grammar\" has no Gemini generateContent equivalent"
    );
    assert_eq!(
        with(
            "tools",
            json!([{ "type": "function", "function": { "name": "f", "strict": true } }])
        ),
        "tools[0].function.strict: strict function calling has no Gemini generateContent equivalent"
    );
    assert_eq!(
        with(
            "tools",
            json!([{ "type": "custom", "custom": { "name": "f" } }])
        ),
        "tools[0].type: tool type \"custom\" has no Gemini generateContent equivalent"
    );
    let req = json!({
        "messages": [user(json!("hi"))],
        "tools": [{ "type": "function", "function": { "name": "f" } }],
        "parallel_tool_calls": false,
    });
    assert_eq!(
        err(openai_request_to_gemini(&req)),
        "parallel_tool_calls: false has no Gemini generateContent equivalent (it cannot limit a turn to one tool call)"
    );
    assert_eq!(
        with(
            "tool_choice",
            json!({ "type": "allowed_tools", "allowed_tools": {} })
        ),
        "tool_choice.type: tool choice \"allowed_tools\" has no Gemini generateContent equivalent"
    );
    let file_id = json!({ "messages": [user(json!([
        { "type": "file", "file": { "file_id": "file-abc" } },
    ]))]});
    assert_eq!(
        err(openai_request_to_gemini(&file_id)),
        "messages[0].content[0].file: only inline file_data has a Gemini generateContent equivalent, not file_id"
    );
    let function_role =
        json!({ "messages": [{ "role": "function", "name": "f", "content": "1" }] });
    assert_eq!(
        err(openai_request_to_gemini(&function_role)),
        "messages[0].role: the deprecated \"function\" role is not translated; send \"tool\" messages"
    );
    let audio_message = json!({ "messages": [
        user(json!("hi")),
        { "role": "assistant", "content": "x", "audio": { "id": "a" } },
    ]});
    assert_eq!(
        err(openai_request_to_gemini(&audio_message)),
        "messages[1].audio: has no Gemini generateContent equivalent"
    );
}

#[test]
fn images_need_a_type_gemini_can_read() {
    let image = |url: &str| {
        json!({ "messages": [user(json!([
            { "type": "text", "text": "look" },
            { "type": "image_url", "image_url": { "url": url } },
        ]))]})
    };
    assert_eq!(
        err(openai_request_to_gemini(&image("https://example.com/cat"))),
        "messages[0].content[1].image_url.url: Gemini generateContent needs an image URL's type, and this one's extension does not tell it (.png, .jpg, .jpeg, .webp, .heic, .heif); send a base64 data: URL"
    );
    assert_eq!(
        err(openai_request_to_gemini(&image(
            "https://example.com/cat.png.exe?x=.png"
        ))),
        "messages[0].content[1].image_url.url: Gemini generateContent needs an image URL's type, and this one's extension does not tell it (.png, .jpg, .jpeg, .webp, .heic, .heif); send a base64 data: URL"
    );
    assert_eq!(
        err(openai_request_to_gemini(&image(
            "ftp://example.com/cat.png"
        ))),
        "messages[0].content[1].image_url.url: expected an http(s) URL or a base64 data: URL"
    );
    for bad in ["data:image/png,AAAA", "data:;base64,AAAA", "data:image/png"] {
        assert_eq!(
            err(openai_request_to_gemini(&image(bad))),
            "messages[0].content[1].image_url.url: expected a base64 data URL (data:<media type>;base64,<data>)",
            "{bad}"
        );
    }
    let got = openai_request_to_gemini(&image("DATA:image/jpeg;charset=x;BASE64,/9j/"))
        .expect("a data URL in any case");
    assert_eq!(
        got["contents"][0]["parts"][1],
        json!({ "inlineData": { "mimeType": "image/jpeg", "data": "/9j/" } })
    );
    let audio = json!({ "messages": [user(json!([
        { "type": "input_audio", "input_audio": { "data": "", "format": "flac" } },
    ]))]});
    assert_eq!(
        err(openai_request_to_gemini(&audio)),
        "messages[0].content[0].input_audio.format: unknown value \"flac\""
    );
}

#[test]
fn tool_results_need_the_call_they_answer() {
    let req = json!({ "messages": [
        user(json!("Weather?")),
        { "role": "assistant", "content": null, "tool_calls": [
            { "id": "call_0", "type": "function", "function": { "name": "weather", "arguments": "{}" } },
        ]},
        { "role": "tool", "tool_call_id": "call_9", "content": "18C" },
    ]});
    assert_eq!(
        err(openai_request_to_gemini(&req)),
        "messages[2].tool_call_id: no earlier assistant message has a tool call with id \"call_9\", and Gemini generateContent needs the called function's name"
    );
    // A result is matched to a call before it, never after.
    let req = json!({ "messages": [
        user(json!("Weather?")),
        { "role": "tool", "tool_call_id": "call_0", "content": "18C" },
        { "role": "assistant", "content": null, "tool_calls": [
            { "id": "call_0", "type": "function", "function": { "name": "weather", "arguments": "{}" } },
        ]},
    ]});
    assert!(err(openai_request_to_gemini(&req))
        .starts_with("messages[1].tool_call_id: no earlier assistant message"));
    let image_result = json!({ "messages": [
        user(json!("Weather?")),
        { "role": "assistant", "content": null, "tool_calls": [
            { "id": "c", "type": "function", "function": { "name": "weather", "arguments": "{}" } },
        ]},
        { "role": "tool", "tool_call_id": "c", "content": [
            { "type": "image_url", "image_url": { "url": "https://x/y.png" } },
        ]},
    ]});
    assert_eq!(
        err(openai_request_to_gemini(&image_result)),
        "messages[2].content[0]: tool messages hold only text parts, got \"image_url\""
    );
}

#[test]
fn malformed_requests_name_the_field() {
    assert_eq!(
        err(openai_request_to_gemini(&json!({ "model": "m" }))),
        "messages: required field is missing"
    );
    assert_eq!(
        err(openai_request_to_gemini(&json!("hi"))),
        "body: expected an object, got a string"
    );
    assert_eq!(
        err(openai_request_to_gemini(
            &json!({ "messages": [{ "role": "system", "content": "x" }] })
        )),
        "messages: must hold at least one user or assistant message"
    );
    assert_eq!(
        err(openai_request_to_gemini(
            &json!({ "messages": [{ "role": "critic", "content": "x" }] })
        )),
        "messages[0].role: unknown role \"critic\""
    );
    let call = |arguments: &str| {
        json!({ "messages": [
            user(json!("hi")),
            { "role": "assistant", "content": "", "tool_calls": [
                { "id": "c", "type": "function", "function": { "name": "f", "arguments": arguments } },
            ]},
        ]})
    };
    assert!(err(openai_request_to_gemini(&call("{oops")))
        .starts_with("messages[1].tool_calls[0].function.arguments: not valid JSON"));
    assert_eq!(
        err(openai_request_to_gemini(&call("[1]"))),
        "messages[1].tool_calls[0].function.arguments: expected a JSON object, got an array"
    );
    assert_eq!(
        err(openai_request_to_gemini(
            &json!({ "messages": [user(json!("hi")), { "role": "assistant", "content": "" }] })
        )),
        "messages[1]: assistant message needs content or tool_calls"
    );
    assert_eq!(
        with("stop", json!(["a", 1])),
        "stop[1]: expected a string, got a number"
    );
    assert_eq!(
        with("temperature", json!("hot")),
        "temperature: expected a number, got a string"
    );
    assert_eq!(
        with("n", json!(-2)),
        "n: expected a non-negative integer, got a number"
    );
    assert_eq!(
        with("tool_choice", json!("sometimes")),
        "tool_choice: unknown value \"sometimes\""
    );
    assert_eq!(
        with("tool_choice", json!("required")),
        "tool_choice: asks for a tool call, but no tools are declared"
    );
    assert_eq!(
        with(
            "response_format",
            json!({ "type": "json_schema", "json_schema": { "name": "x", "schema": [] } })
        ),
        "response_format.json_schema.schema: expected an object, got an array"
    );
    assert_eq!(
        with(
            "tools",
            json!([{ "type": "function", "function": { "name": "f", "parameters": "{}" } }])
        ),
        "tools[0].function.parameters: expected an object, got a string"
    );
}

/// Every tool_choice form, with and without tools declared.
#[test]
fn tool_choice_mapping() {
    let tools = json!([{ "type": "function", "function": { "name": "f" } }]);
    let cases = [
        (json!("auto"), Some(json!({ "mode": "AUTO" }))),
        (json!("none"), Some(json!({ "mode": "NONE" }))),
        (json!("required"), Some(json!({ "mode": "ANY" }))),
        (
            json!({ "type": "function", "function": { "name": "f" } }),
            Some(json!({ "mode": "ANY", "allowedFunctionNames": ["f"] })),
        ),
        (Value::Null, None),
    ];
    for (choice, config) in cases {
        let req = json!({ "messages": [user(json!("hi"))], "tools": tools, "tool_choice": choice });
        let got = openai_request_to_gemini(&req).expect("with tools");
        assert_eq!(
            got.get("toolConfig"),
            config
                .map(|c| json!({ "functionCallingConfig": c }))
                .as_ref(),
            "{choice}"
        );
    }
    // Without tools, choices that call none are what Gemini does anyway.
    for choice in ["auto", "none"] {
        let req = json!({ "messages": [user(json!("hi"))], "tool_choice": choice });
        let got = openai_request_to_gemini(&req).expect("without tools");
        assert_eq!(got.get("toolConfig"), None, "{choice}");
        assert_eq!(got.get("tools"), None, "{choice}");
    }
}

#[test]
fn malformed_responses_name_the_field() {
    let resp = |parts: Value| json!({ "candidates": [{ "content": { "role": "model", "parts": parts }, "finishReason": "STOP" }] });
    assert_eq!(
        err(to_openai(&resp(
            json!([{ "executableCode": { "code": "1" } }])
        ))),
        "candidates[0].content.parts[0]: unknown part \"executableCode\""
    );
    assert_eq!(
        err(to_openai(&resp(json!([{ "thoughtSignature": "x" }])))),
        "candidates[0].content.parts[0]: unknown part \"\""
    );
    assert_eq!(
        err(to_openai(&resp(
            json!([{ "functionCall": { "args": {} } }])
        ))),
        "candidates[0].content.parts[0].functionCall.name: required field is missing"
    );
    assert_eq!(
        err(to_openai(&resp(
            json!([{ "functionCall": { "name": "f", "args": [1] } }])
        ))),
        "candidates[0].content.parts[0].functionCall.args: expected an object, got an array"
    );
    assert_eq!(
        err(to_openai(&resp(json!([{ "text": 7 }])))),
        "candidates[0].content.parts[0].text: expected a string, got a number"
    );
    assert_eq!(
        err(to_openai(&json!({ "candidates": {} }))),
        "candidates: expected an array, got an object"
    );
    assert_eq!(
        err(to_openai(&json!({ "candidates": [] }))),
        "candidates: holds no candidate, and promptFeedback gives no blockReason"
    );
    let mut r = resp(json!([{ "text": "hi" }]));
    r["usageMetadata"] = json!({ "promptTokenCount": -1 });
    assert_eq!(
        err(to_openai(&r)),
        "usageMetadata.promptTokenCount: expected a non-negative integer, got a number"
    );
}

/// Every finish reason Gemini documents has a finish reason; a function
/// call turns a normal end into `tool_calls`, not a cut or filtered one.
#[test]
fn finish_reasons() {
    for (reason, plain, called) in [
        (Some("STOP"), "stop", "tool_calls"),
        (Some("MAX_TOKENS"), "length", "length"),
        (Some("SAFETY"), "content_filter", "content_filter"),
        (Some("RECITATION"), "content_filter", "content_filter"),
        (Some("BLOCKLIST"), "content_filter", "content_filter"),
        (
            Some("PROHIBITED_CONTENT"),
            "content_filter",
            "content_filter",
        ),
        (Some("SPII"), "content_filter", "content_filter"),
        (Some("IMAGE_SAFETY"), "content_filter", "content_filter"),
        (Some("LANGUAGE"), "stop", "tool_calls"),
        (Some("OTHER"), "stop", "tool_calls"),
        (Some("MALFORMED_FUNCTION_CALL"), "stop", "tool_calls"),
        (Some("FINISH_REASON_UNSPECIFIED"), "stop", "tool_calls"),
        (None, "stop", "tool_calls"),
    ] {
        assert_eq!(finish_reason(reason, false), plain, "{reason:?}");
        assert_eq!(
            finish_reason(reason, true),
            called,
            "{reason:?} with a call"
        );
    }
}

#[test]
fn usage_details_only_when_reported() {
    let usage = |metadata: Value| {
        let r = json!({ "candidates": [{ "content": { "parts": [{ "text": "x" }] } }], "usageMetadata": metadata });
        to_openai(&r).expect("usage")["usage"].clone()
    };
    assert_eq!(
        usage(json!({ "promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7 })),
        json!({ "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7 })
    );
    assert_eq!(
        usage(json!({ "promptTokenCount": 3, "candidatesTokenCount": 4, "thoughtsTokenCount": 0 })),
        json!({
            "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
            "completion_tokens_details": { "reasoning_tokens": 0 },
        })
    );
    assert_eq!(
        usage(
            json!({ "promptTokenCount": 30, "toolUsePromptTokenCount": 5, "cachedContentTokenCount": 20 })
        ),
        json!({
            "prompt_tokens": 35, "completion_tokens": 0, "total_tokens": 35,
            "prompt_tokens_details": { "cached_tokens": 20 },
        })
    );
    let r = json!({ "candidates": [{ "content": { "parts": [] }, "finishReason": "STOP" }] });
    assert_eq!(
        to_openai(&r).expect("no usage")["usage"],
        json!({ "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0 })
    );
}

/// The ids the response gives tool calls are what the next request's tool
/// results name, and they find their function again.
#[test]
fn tool_calls_come_back_as_function_responses() {
    let resp = json!({ "candidates": [{ "content": { "role": "model", "parts": [
        { "functionCall": { "name": "weather", "args": { "city": "Paris" } } },
        { "functionCall": { "name": "clock" } },
    ]}, "finishReason": "STOP" }] });
    let answer = to_openai(&resp).expect("to openai");
    let assistant = answer["choices"][0]["message"].clone();
    let calls = assistant["tool_calls"].as_array().expect("tool calls");
    let results: Vec<Value> = calls
        .iter()
        .rev()
        .map(|c| json!({ "role": "tool", "tool_call_id": c["id"], "content": "{\"ok\":true}" }))
        .collect();
    let mut messages = vec![user(json!("Weather and time?")), assistant];
    messages.extend(results);
    let req = json!({ "messages": messages });
    let gemini = openai_request_to_gemini(&req).expect("to gemini");
    assert_eq!(
        gemini["contents"],
        json!([
            { "role": "user", "parts": [{ "text": "Weather and time?" }] },
            { "role": "model", "parts": [
                { "functionCall": { "name": "weather", "args": { "city": "Paris" } } },
                { "functionCall": { "name": "clock", "args": {} } },
            ]},
            { "role": "user", "parts": [
                { "functionResponse": { "name": "clock", "response": { "ok": true } } },
                { "functionResponse": { "name": "weather", "response": { "ok": true } } },
            ]},
        ])
    );
}

/// An Anthropic client reaches Gemini through OpenAI's shape.
#[test]
fn anthropic_requests_compose() {
    let anthropic = json!({
        "model": "claude",
        "system": "Be brief.",
        "max_tokens": 100,
        "stop_sequences": ["END"],
        "messages": [
            user(json!("Weather?")),
            { "role": "assistant", "content": [
                { "type": "text", "text": "Checking." },
                { "type": "tool_use", "id": "toolu_1", "name": "weather", "input": { "city": "Paris" } },
            ]},
            user(json!([
                { "type": "tool_result", "tool_use_id": "toolu_1", "content": "18C" },
                { "type": "text", "text": "And?" },
            ])),
        ],
        "tools": [{ "name": "weather", "input_schema": { "type": "object", "properties": {} } }],
        "tool_choice": { "type": "tool", "name": "weather" },
    });
    let openai = anthropic_request_to_openai(&anthropic).expect("to openai");
    let gemini = openai_request_to_gemini(&openai).expect("to gemini");
    assert_eq!(
        gemini,
        json!({
            "systemInstruction": { "parts": [{ "text": "Be brief." }] },
            "contents": [
                { "role": "user", "parts": [{ "text": "Weather?" }] },
                { "role": "model", "parts": [
                    { "text": "Checking." },
                    { "functionCall": { "name": "weather", "args": { "city": "Paris" } } },
                ]},
                { "role": "user", "parts": [
                    { "functionResponse": { "name": "weather", "response": { "content": "18C" } } },
                    { "text": "And?" },
                ]},
            ],
            "generationConfig": { "maxOutputTokens": 100, "stopSequences": ["END"] },
            "tools": [{ "functionDeclarations": [
                { "name": "weather", "parameters": { "type": "object", "properties": {} } },
            ]}],
            "toolConfig": { "functionCallingConfig": { "mode": "ANY", "allowedFunctionNames": ["weather"] } },
        })
    );
}

/// Every Gemini golden input with each of its nodes replaced by each JSON
/// type: the translation may refuse, but must never panic, and what it
/// accepts is a body of the other protocol's shape.
#[test]
fn malformed_inputs_are_errors_or_well_formed() {
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
        json!(false),
        json!(-1),
        json!(0.5),
        json!(""),
        json!("data:"),
        json!("STOP"),
        json!([]),
        json!({}),
        json!([{}]),
    ];
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
        if !direction.contains("gemini") {
            continue;
        }
        let text = fs::read_to_string(Path::new(GOLDEN_DIR).join(&name)).expect("read");
        let input: Value = serde_json::from_str(&text).expect("JSON");
        let mut at = Vec::new();
        paths(&input, String::new(), &mut at);
        for pointer in at {
            for replacement in &replacements {
                let mut mutated = input.clone();
                match mutated.pointer_mut(&pointer) {
                    Some(slot) => *slot = replacement.clone(),
                    None => continue,
                }
                runs += 1;
                if direction == "openai_to_gemini_request" {
                    if let Ok(out) = openai_request_to_gemini(&mutated) {
                        assert!(out["contents"].is_array(), "{stem} {pointer}: {out}");
                    }
                } else if let Ok(out) = to_openai(&mutated) {
                    let choices = out["choices"].as_array().expect("choices");
                    assert!(!choices.is_empty(), "{stem} {pointer}: {out}");
                    assert!(
                        choices.iter().all(|c| c["finish_reason"].is_string()),
                        "{stem} {pointer}: {out}"
                    );
                    assert!(out["usage"]["total_tokens"].is_u64(), "{stem} {pointer}");
                }
            }
        }
    }
    assert!(runs > 1000, "only {runs} mutations ran");
}
