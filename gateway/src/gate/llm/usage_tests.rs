//! Reading providers' usage reports, and token estimates.
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

fn usage(input: u64, output: u64, cached_input: u64, reasoning: u64) -> Usage {
    Usage {
        input,
        output,
        cached_input,
        reasoning,
        estimated: false,
    }
}

#[test]
fn openai_chat_usage() {
    let body = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 256, "audio_tokens": 0}
        }
    });
    let want = usage(1200, 300, 1024, 256);
    assert_eq!(Usage::from_openai(&body), Some(want));
    // The usage object alone reads the same.
    assert_eq!(Usage::from_openai(&body["usage"]), Some(want));
    assert_eq!(want.total(), 1500);
}

#[test]
fn openai_chat_usage_without_details() {
    let u = json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});
    assert_eq!(Usage::from_openai(&u), Some(usage(10, 5, 0, 0)));
    let u = json!({"prompt_tokens": 10, "completion_tokens": 5,
        "prompt_tokens_details": null, "completion_tokens_details": {}});
    assert_eq!(Usage::from_openai(&u), Some(usage(10, 5, 0, 0)));
}

#[test]
fn openai_stream_chunks() {
    // Chunks before the last carry `usage: null` (with include_usage) or
    // nothing.
    let chunk = json!({"object": "chat.completion.chunk", "choices": [{"delta": {"content": "hi"}}], "usage": null});
    assert_eq!(Usage::from_openai(&chunk), None);
    let chunk =
        json!({"object": "chat.completion.chunk", "choices": [{"delta": {"content": "hi"}}]});
    assert_eq!(Usage::from_openai(&chunk), None);
    let last = json!({"object": "chat.completion.chunk", "choices": [],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}});
    assert_eq!(Usage::from_openai(&last), Some(usage(7, 2, 0, 0)));
}

#[test]
fn openai_responses_api_usage() {
    let u = json!({
        "input_tokens": 328,
        "input_tokens_details": {"cached_tokens": 128},
        "output_tokens": 52,
        "output_tokens_details": {"reasoning_tokens": 20},
        "total_tokens": 380
    });
    let want = usage(328, 52, 128, 20);
    assert_eq!(Usage::from_openai(&u), Some(want));
    assert_eq!(
        Usage::from_openai(&json!({"object": "response", "usage": u})),
        Some(want)
    );
    // The streaming `response.completed` event.
    assert_eq!(
        Usage::from_openai(&json!({"type": "response.completed", "response": {"usage": u}})),
        Some(want)
    );
}

#[test]
fn openai_embeddings_usage() {
    let body = json!({"object": "list", "data": [], "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8}});
    assert_eq!(Usage::from_openai(&body), Some(usage(8, 0, 0, 0)));
}

#[test]
fn openai_odd_usage() {
    // Nothing countable.
    for v in [
        json!({}),
        json!({"usage": {}}),
        json!({"usage": {"total_tokens": 5}}),
        json!({"usage": {"prompt_tokens": "10"}}),
        json!({"usage": {"prompt_tokens": -1}}),
        json!({"usage": {"prompt_tokens": 1.5}}),
        json!({"usage": 7}),
        json!(null),
        json!([1, 2]),
        json!("usage"),
    ] {
        assert_eq!(Usage::from_openai(&v), None, "{v}");
    }
    // Re-encoded integers still count; details beyond the total are capped.
    let u = json!({"prompt_tokens": 10.0, "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 99},
        "completion_tokens_details": {"reasoning_tokens": 99}});
    assert_eq!(Usage::from_openai(&u), Some(usage(10, 4, 10, 4)));
    // Only one side reported.
    assert_eq!(
        Usage::from_openai(&json!({"completion_tokens": 3})),
        Some(usage(0, 3, 0, 0))
    );
    // Huge counts do not wrap.
    let u = json!({"prompt_tokens": u64::MAX, "completion_tokens": u64::MAX});
    assert_eq!(Usage::from_openai(&u).unwrap().total(), u64::MAX);
}

#[test]
fn anthropic_message_usage() {
    let body = json!({
        "id": "msg_1",
        "type": "message",
        "content": [],
        "usage": {
            "input_tokens": 50,
            "cache_creation_input_tokens": 2000,
            "cache_read_input_tokens": 10000,
            "output_tokens": 400
        }
    });
    let want = usage(12_050, 400, 10_000, 0);
    assert_eq!(Usage::from_anthropic(&body), Some(want));
    assert_eq!(Usage::from_anthropic(&body["usage"]), Some(want));
    // Without caching, or with the cache fields null.
    let u = json!({"input_tokens": 12, "output_tokens": 6,
        "cache_creation_input_tokens": null, "cache_read_input_tokens": null});
    assert_eq!(Usage::from_anthropic(&u), Some(usage(12, 6, 0, 0)));
}

#[test]
fn anthropic_stream_events() {
    let start = json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
        "content": [], "usage": {"input_tokens": 25, "cache_read_input_tokens": 5, "output_tokens": 1}}});
    assert_eq!(Usage::from_anthropic(&start), Some(usage(30, 1, 5, 0)));
    let delta = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 15}});
    assert_eq!(Usage::from_anthropic(&delta), Some(usage(0, 15, 0, 0)));
    let ping = json!({"type": "ping"});
    assert_eq!(Usage::from_anthropic(&ping), None);
    let text = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}});
    assert_eq!(Usage::from_anthropic(&text), None);
}

#[test]
fn anthropic_odd_usage() {
    for v in [
        json!({}),
        json!({"usage": null}),
        json!({"usage": {"cache_read_input_tokens": 5}}),
        json!({"usage": {"input_tokens": "5"}}),
        json!(3),
    ] {
        assert_eq!(Usage::from_anthropic(&v), None, "{v}");
    }
    let u = json!({"input_tokens": u64::MAX, "cache_read_input_tokens": 5, "output_tokens": 0});
    assert_eq!(Usage::from_anthropic(&u).unwrap().input, u64::MAX);
}

#[test]
fn the_tokenizer_counts_like_o200k_base() {
    // Counts from OpenAI's tiktoken with o200k_base.
    assert_eq!(estimate_tokens(""), 0);
    assert_eq!(estimate_tokens("hello world"), 2);
    assert_eq!(estimate_tokens("Hello, world!"), 4);
    let sentence = "The quick brown fox jumps over the lazy dog.";
    assert_eq!(estimate_tokens(sentence), 10);
    // Many copies of the sentence: about ten tokens each, cut into pieces or
    // not.
    let long = format!("{sentence} ").repeat(2000);
    let n = estimate_tokens(&long);
    assert!((19_900..=20_100).contains(&n), "{n}");
}

#[test]
fn pieces_are_cut_at_whitespace_and_char_boundaries() {
    assert_eq!(split_point("abc", 10), 3);
    assert_eq!(split_point("abcd efgh", 8), 4);
    assert_eq!(split_point("abcdefgh", 4), 4);
    // A cut never splits a character.
    let s = "ééééé";
    let at = split_point(s, 3);
    assert!(s.is_char_boundary(at) && at > 0 && at <= 3, "{at}");
    assert_eq!(split_point("€", 1), 3);
    // Whitespace in the first half does not shorten the piece that much.
    assert_eq!(split_point("a bcdefghijk", 8), 8);
}

#[test]
fn hostile_text_neither_panics_nor_takes_long() {
    // A megabyte of one character: tiktoken-rs alone panics on the spaces
    // (its regex engine gives up) and needs most of a second for the rest.
    for text in [
        " ".repeat(1 << 20),
        "\n".repeat(1 << 20),
        "a".repeat(1 << 20),
        "!".repeat(1 << 20),
        "\u{3000}".repeat(1 << 18),
    ] {
        warm_up();
        let started = Instant::now();
        let n = estimate_tokens(&text);
        let took = started.elapsed();
        assert!(n > 0);
        // Generous: this is a debug build, often on a loaded machine.
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
}

#[test]
fn text_beyond_the_exact_budget_is_extrapolated() {
    let sentence = "The quick brown fox jumps over the lazy dog. ";
    // Four times the budget: 3/4 of it counted by ratio, close to exact.
    let long = sentence.repeat(4 * EXACT_BYTES / sentence.len());
    let n = estimate_tokens(&long);
    let want = (long.len() / sentence.len() * 10) as u64;
    assert!(n.abs_diff(want) * 100 < want, "{n} vs {want}");
}

#[test]
fn tokenizer_init_time() {
    // Not an assertion: how long the first use takes, for the record
    // (`cargo test … -- --nocapture tokenizer_init_time`). Another test may
    // have built it already.
    let started = Instant::now();
    warm_up();
    eprintln!("o200k_base ready after {:?}", started.elapsed());
}

#[test]
fn openai_chat_request_estimate() {
    let sentence = "The quick brown fox jumps over the lazy dog.";
    let text_only = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": sentence},
            {"role": "user", "content": sentence}
        ]
    });
    // 2 × 10 text, 2 × 3 per message, 3 for the reply.
    assert_eq!(estimate_prompt_tokens(&text_only), 29);

    let with_parts = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "name": "alice", "content": [
                {"type": "text", "text": sentence},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/x.png", "detail": "low"}}
            ]}
        ]
    });
    // alice (1) + 10 + 2 images + 3 + 3.
    assert_eq!(
        estimate_prompt_tokens(&with_parts),
        1 + 10 + 2 * IMAGE_TOKENS + 6
    );
}

#[test]
fn openai_tools_and_tool_calls_count() {
    let tool = json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
    }});
    let args = r#"{"city":"Paris"}"#;
    let body = json!({
        "model": "gpt-4o",
        "tools": [tool],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": args}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ]
    });
    let want = estimate_tokens(&tool.to_string())
        + estimate_tokens("Weather?")
        + estimate_tokens("get_weather")
        + estimate_tokens(args)
        + estimate_tokens("sunny")
        + 3 * MESSAGE_OVERHEAD
        + REPLY_OVERHEAD;
    assert_eq!(estimate_prompt_tokens(&body), want);
    // Without the tool definition, less.
    let mut no_tools = body.clone();
    no_tools.as_object_mut().unwrap().remove("tools");
    assert!(estimate_prompt_tokens(&no_tools) < want);
    // A JSON schema for the answer counts too.
    let mut with_schema = body.clone();
    with_schema["response_format"] =
        json!({"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}});
    assert!(estimate_prompt_tokens(&with_schema) > want);
}

#[test]
fn anthropic_messages_request_estimate() {
    let sentence = "The quick brown fox jumps over the lazy dog.";
    let tool = json!({"name": "get_weather", "description": "Weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}});
    let body = json!({
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": sentence, "cache_control": {"type": "ephemeral"}}],
        "tools": [tool],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": sentence},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": sentence}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": sentence, "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "rain"}
            ]}
        ]
    });
    let want = 10 // system
        + estimate_tokens(&tool.to_string())
        + 10 + IMAGE_TOKENS + FILE_TOKENS + 10 // first user turn
        + 10 + estimate_tokens("get_weather") + estimate_tokens(r#"{"city":"Paris"}"#)
        + estimate_tokens("sunny") + estimate_tokens("rain")
        + 3 * MESSAGE_OVERHEAD
        + REPLY_OVERHEAD;
    assert_eq!(estimate_prompt_tokens(&body), want);
    // A plain string system prompt counts the same.
    let mut plain = body.clone();
    plain["system"] = json!(sentence);
    assert_eq!(estimate_prompt_tokens(&plain), want);
}

#[test]
fn embeddings_and_responses_inputs() {
    assert_eq!(
        estimate_prompt_tokens(&json!({"model": "text-embedding-3-small", "input": "hello world"})),
        2
    );
    assert_eq!(
        estimate_prompt_tokens(&json!({"input": ["hello world", "hello world"]})),
        4
    );
    assert_eq!(
        estimate_prompt_tokens(&json!({"input": [[1, 2, 3], [4]]})),
        4
    );
    let responses = json!({
        "model": "gpt-4.1",
        "instructions": "hello world",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hello world"},
                {"type": "input_image", "image_url": "https://example.com/a.png"}]},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"}
        ]
    });
    let want = 2
        + 2
        + IMAGE_TOKENS
        + estimate_tokens("get_weather")
        + estimate_tokens("{}")
        + estimate_tokens("sunny")
        + 3 * MESSAGE_OVERHEAD
        + REPLY_OVERHEAD;
    assert_eq!(estimate_prompt_tokens(&responses), want);
}

#[test]
fn odd_requests_estimate_without_panicking() {
    for body in [
        json!(null),
        json!({}),
        json!({"messages": "hi"}),
        json!({"messages": [null, 1, "x", {"content": 5}, {"content": [null, 3, {"type": 7}]}]}),
        json!({"system": 5, "tools": {}, "input": 3}),
        json!({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": {"a": 1}}}]}]}),
    ] {
        let _ = estimate_prompt_tokens(&body);
    }
    // Empty conversation: no reply overhead either.
    assert_eq!(estimate_prompt_tokens(&json!({"messages": []})), 0);
}

#[test]
fn a_request_shares_one_exact_budget() {
    // Many messages that each fit the budget but together exceed it: the
    // total is still close to exact.
    let sentence = "The quick brown fox jumps over the lazy dog. ";
    let chunk = sentence.repeat(EXACT_BYTES / 2 / sentence.len());
    let messages: Vec<Value> = (0..8)
        .map(|_| json!({"role": "user", "content": chunk}))
        .collect();
    let n = estimate_prompt_tokens(&json!({ "messages": messages }));
    let want = 8 * (chunk.len() / sentence.len() * 10) as u64 + 8 * 3 + 3;
    assert!(n.abs_diff(want) * 100 < want, "{n} vs {want}");
}

#[test]
fn counts_read_from_text_equal_counts_read_from_a_value() {
    // The whole-answer path reads `usage` straight from the provider's
    // text; everything else reads it from a value. Both must agree.
    for text in [
        r#"{"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 2, "accepted_prediction_tokens": 0}}"#,
        r#"{"input_tokens": 7, "output_tokens": 3, "input_tokens_details": {"cached_tokens": 1},
            "output_tokens_details": {"reasoning_tokens": 1}}"#,
        r#"{"input_tokens": 12, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 2,
            "output_tokens": 6, "service_tier": "standard", "server_tool_use": {"web_search_requests": 1}}"#,
        r#"{"prompt_tokens": 10.0, "completion_tokens": "4", "prompt_tokens_details": 3,
            "completion_tokens_details": null, "input_tokens_details": [1, {"a": 2}]}"#,
        r#"{"prompt_tokens": -1, "completion_tokens": 1.5, "output_tokens": true, "input_tokens": {"n": 1}}"#,
        r#"{"prompt_tokens": 1, "prompt_tokens": 2, "prompt_tok\u0065ns_details": {"cached_tokens": 1}}"#,
        r#"{}"#,
    ] {
        let value: Value = serde_json::from_str(text).unwrap();
        let read: Counts = serde_json::from_str(text).unwrap();
        assert_eq!(Some(&read), Counts::of(&value).as_ref(), "{text}");
        assert_eq!(read.openai(), Usage::from_openai(&value), "{text}");
        assert_eq!(read.anthropic(), Usage::from_anthropic(&value), "{text}");
    }
    // An escaped member name is still the member; the last repeat counts.
    let read: Counts = serde_json::from_str(
        r#"{"prompt_tokens": 1, "prompt_tokens": 2, "completion_tokens": 3,
            "prompt_tok\u0065ns_details": {"cached_tokens": 1}}"#,
    )
    .unwrap();
    assert_eq!(read.openai(), Some(usage(2, 3, 1, 0)));
    // Not an object: no counts.
    for text in ["7", "null", "\"lots\"", "[1, 2]"] {
        let read: Counts = serde_json::from_str(text).unwrap();
        assert_eq!(read, Counts::default(), "{text}");
        assert_eq!(read.openai(), None, "{text}");
    }
}
