//! Responses API ↔ chat: the golden cases run in `tests.rs` with the
//! others; these pin the error messages clients will read, the request
//! echo, and that the chat requests made are ones the provider
//! translations take.
use serde_json::{json, Value};

use super::*;

fn err(result: Result<Value, TranslateError>) -> String {
    match result {
        Ok(v) => panic!("expected an error, got {v:#}"),
        Err(e) => e.to_string(),
    }
}

fn with(key: &str, value: Value) -> String {
    let mut req = json!({ "model": "gpt-4.1", "input": "hi" });
    req[key] = value;
    err(responses_request_to_chat(&req))
}

fn input(items: Value) -> String {
    err(responses_request_to_chat(
        &json!({ "model": "gpt-4.1", "input": items }),
    ))
}

#[test]
fn unsupported_fields_are_refused_by_name() {
    assert_eq!(
        with("previous_response_id", json!("resp_123")),
        "previous_response_id: the gateway keeps no stored responses or conversations to continue from; send the whole conversation in `input`"
    );
    assert_eq!(
        with("conversation", json!("conv_1")),
        "conversation: the gateway keeps no stored responses or conversations to continue from; send the whole conversation in `input`"
    );
    assert_eq!(
        with("reasoning", json!({ "effort": "high" })),
        "reasoning: reasoning settings are not translated to OpenAI Chat Completions (the providers behind it configure reasoning differently)"
    );
    assert_eq!(
        with("background", json!(true)),
        "background: the gateway does not run responses in the background"
    );
    assert_eq!(
        with("include", json!(["message.output_text.logprobs"])),
        "include: is not translated to OpenAI Chat Completions"
    );
    assert_eq!(
        with("truncation", json!("auto")),
        "truncation: is not translated to OpenAI Chat Completions"
    );
    assert_eq!(
        with("tools", json!([{ "type": "web_search" }])),
        "tools[0].type: tool type \"web_search\" has no OpenAI Chat Completions equivalent"
    );
    assert_eq!(
        with(
            "tools",
            json!([{ "type": "function", "name": "f", "defer_loading": true }])
        ),
        "tools[0].defer_loading: has no OpenAI Chat Completions equivalent"
    );
    assert_eq!(
        with("tool_choice", json!({ "type": "file_search" })),
        "tool_choice.type: tool choice \"file_search\" has no OpenAI Chat Completions equivalent"
    );
    assert_eq!(
        with("text", json!({ "format": { "type": "grammar" } })),
        "text.format.type: \"grammar\" has no OpenAI Chat Completions equivalent"
    );
    assert_eq!(
        input(json!([{ "role": "user", "content": [
            { "type": "input_image", "file_id": "file-abc", "detail": "auto" },
        ]}])),
        "input[0].content[0].file_id: the gateway cannot fetch uploaded files; send the image as image_url (an http(s) or base64 data: URL)"
    );
    assert_eq!(
        input(json!([{ "role": "user", "content": [
            { "type": "input_file", "file_url": "https://example.com/a.pdf" },
        ]}])),
        "input[0].content[0].file_url: the gateway cannot fetch files; send the file inline as file_data"
    );
    assert_eq!(
        input(json!([{ "type": "item_reference", "id": "msg_1" }])),
        "input[0].type: the gateway keeps no stored items to refer to; send the item itself"
    );
    assert_eq!(
        input(json!([
            { "role": "user", "content": "hi" },
            { "type": "reasoning", "id": "rs_1", "summary": [] },
        ])),
        "input[1].type: reasoning items have no OpenAI Chat Completions equivalent"
    );
    assert_eq!(
        input(json!([{ "type": "web_search_call", "id": "ws_1" }])),
        "input[0].type: input item type \"web_search_call\" has no OpenAI Chat Completions equivalent"
    );
}

/// Defaults ask for nothing and pass.
#[test]
fn defaults_are_accepted() {
    for (key, value) in [
        ("reasoning", json!({})),
        ("reasoning", json!({ "effort": null })),
        ("background", json!(false)),
        ("include", json!([])),
        ("truncation", json!("disabled")),
        ("store", json!(true)),
        ("metadata", json!({ "k": "v" })),
        ("text", json!({ "format": { "type": "text" } })),
    ] {
        let mut req = json!({ "input": "hi" });
        req[key] = value.clone();
        let got = responses_request_to_chat(&req).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(
            got,
            json!({ "messages": [{ "role": "user", "content": "hi" }] }),
            "{key}: {value}"
        );
    }
}

#[test]
fn missing_and_malformed_fields_name_the_field() {
    assert_eq!(
        err(responses_request_to_chat(&json!({ "model": "m" }))),
        "input: required field is missing"
    );
    assert_eq!(
        err(responses_request_to_chat(&json!([1]))),
        "body: expected an object, got an array"
    );
    assert_eq!(
        input(json!(7)),
        "input: expected a string or an array of input items, got a number"
    );
    assert_eq!(
        input(json!([])),
        "input: must hold at least one user, assistant or tool item"
    );
    assert_eq!(
        err(responses_request_to_chat(&json!({
            "instructions": "be brief",
            "input": [{ "role": "developer", "content": "x" }],
        }))),
        "input: must hold at least one user, assistant or tool item"
    );
    assert_eq!(
        input(json!([{ "role": "tool", "content": "x" }])),
        "input[0].role: unknown role \"tool\""
    );
    assert_eq!(
        input(json!([{ "role": "user", "content": [{ "type": "output_text", "text": "x" }] }])),
        "input[0].content[0]: \"output_text\" parts belong in assistant messages, not \"user\" ones"
    );
    assert_eq!(
        input(json!([{ "role": "user", "content": [{ "type": "audio" }] }])),
        "input[0].content[0]: unknown content part type \"audio\""
    );
    assert_eq!(
        input(json!([{ "type": "function_call", "name": "f", "arguments": "{}" }])),
        "input[0].call_id: required field is missing"
    );
    assert_eq!(
        input(json!([{ "type": "function_call_output", "call_id": "c", "output": 3 }])),
        "input[0].output: expected a string or an array of content parts, got a number"
    );
    assert_eq!(
        input(json!([{ "type": "function_call_output", "call_id": "c", "output": [
            { "type": "input_image", "image_url": "https://example.com/a.png" },
        ]}])),
        "input[0].output[0]: \"input_image\" in a function call's output has no OpenAI Chat Completions equivalent (tool messages hold text)"
    );
    assert_eq!(
        with("instructions", json!(["a"])),
        "instructions: expected a string, got an array"
    );
    assert_eq!(
        with("max_output_tokens", json!(-1)),
        "max_output_tokens: expected a non-negative integer, got a number"
    );
    assert_eq!(
        with("tool_choice", json!("sometimes")),
        "tool_choice: unknown value \"sometimes\""
    );
    assert_eq!(
        with(
            "text",
            json!({ "format": { "type": "json_schema", "name": "x" } })
        ),
        "text.format.schema: required field is missing"
    );

    let resp = |finish: &str| json!({ "id": "c", "choices": [{ "index": 0, "finish_reason": finish, "message": { "role": "assistant", "content": "x" } }] });
    let to_responses = |r: &Value| chat_response_to_responses(r, "m", "resp_1", 0);
    assert_eq!(
        err(to_responses(&resp("sleepy"))),
        "choices[0].finish_reason: unknown value \"sleepy\""
    );
    assert_eq!(
        err(to_responses(&json!({ "id": "c", "choices": [] }))),
        "choices: must hold at least one choice"
    );
    let call = json!({ "id": "c", "choices": [{ "index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "tool_calls": [{ "type": "function", "function": { "name": "f", "arguments": "{}" } }],
    }}]});
    assert_eq!(
        err(to_responses(&call)),
        "choices[0].message.tool_calls[0].id: required field is missing"
    );
}

/// A function call joins the assistant message before it; with none, it
/// is an assistant message of its own; several calls are one message.
#[test]
fn calls_join_the_assistant_turn() {
    let req = json!({ "input": [
        { "role": "user", "content": "hi" },
        { "role": "assistant", "content": "" },
        { "type": "function_call", "call_id": "a", "name": "f", "arguments": "{}" },
        { "type": "function_call_output", "call_id": "a", "output": "1" },
    ]});
    let got = responses_request_to_chat(&req).expect("translates");
    assert_eq!(got["messages"][1]["content"], Value::Null);
    assert_eq!(got["messages"][1]["tool_calls"][0]["id"], "a");
    assert_eq!(got["messages"].as_array().map(Vec::len), Some(3));
}

#[test]
fn the_request_is_echoed_on_demand() {
    let req = json!({
        "model": "gpt-4.1",
        "input": "hi",
        "instructions": "be brief",
        "tools": [{ "type": "function", "name": "f" }],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "temperature": 0.5,
        "max_output_tokens": 10,
        "metadata": { "k": "v" },
        "text": { "format": { "type": "json_object" } },
        // Malformed members keep the default.
        "top_p": "high",
    });
    let chat = json!({ "id": "c", "choices": [{ "index": 0, "finish_reason": "stop", "message": { "role": "assistant", "content": "ok" } }] });
    let mut got = chat_response_to_responses(&chat, "m", "resp_1", 0).expect("translates");
    assert_eq!(got["tools"], json!([]));
    echo_request(&mut got, &req);
    for key in [
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "temperature",
        "max_output_tokens",
        "metadata",
        "text",
    ] {
        assert_eq!(got[key], req[key], "{key}");
    }
    assert_eq!(got["top_p"], Value::Null);
    assert_eq!(got["store"], false);
}

/// The chat requests made are ones the provider translations accept, so
/// the gate can compose them.
#[test]
fn chat_requests_reach_the_providers() {
    let req = json!({
        "model": "gpt-4.1",
        "instructions": "be brief",
        "input": [
            { "role": "developer", "content": "in French" },
            { "role": "user", "content": [
                { "type": "input_text", "text": "what is this?" },
                { "type": "input_image", "image_url": "data:image/jpeg;base64,/9j/4AAQ", "detail": "auto" },
            ]},
            { "type": "function_call", "call_id": "a", "name": "f", "arguments": "{\"x\":1}" },
            { "type": "function_call_output", "call_id": "a", "output": "1" },
        ],
        "tools": [{ "type": "function", "name": "f", "parameters": { "type": "object", "properties": {} } }],
        "tool_choice": "auto",
        "max_output_tokens": 100,
        "stream": true,
    });
    let chat = responses_request_to_chat(&req).expect("to chat");
    openai_request_to_anthropic(&chat).expect("to anthropic");
    openai_request_to_gemini(&chat).expect("to gemini");
    openai_request_to_bedrock(&chat).expect("to bedrock");
}
