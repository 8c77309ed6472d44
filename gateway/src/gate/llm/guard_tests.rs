//! The LLM gate's guardrail plumbing: every text of every API is reached,
//! and a streamed answer is filtered without letting a split secret or a
//! split placeholder through.
use std::collections::BTreeMap;

use prometheus::{IntCounterVec, Opts};
use serde_json::{json, Value};

use super::front::{Api, Dialect};
use super::guard::{answer_texts, request_texts, Audit, StreamGuard};
use super::stream::{SseParser, StreamError};
use crate::config::{GuardAction, GuardPolicyConfig, GuardRuleConfig, GuardrailsConfig};
use crate::policy::guardrail::{CheckError, Guardrails, Phase, Session};

fn rule(detect: &[&str], action: GuardAction, restore: bool) -> GuardRuleConfig {
    GuardRuleConfig {
        detect: detect.iter().map(|s| s.to_string()).collect(),
        action,
        restore,
    }
}

fn session(request: Vec<GuardRuleConfig>, response: Vec<GuardRuleConfig>) -> Session {
    let cfg = GuardrailsConfig {
        policies: vec![GuardPolicyConfig {
            name: "p".into(),
            request,
            response,
            ..GuardPolicyConfig::default()
        }],
        ..GuardrailsConfig::default()
    };
    let plan = Guardrails::build(&cfg)
        .unwrap()
        .plan(crate::config::GateKind::Llm, Some(("w", &BTreeMap::new())))
        .unwrap();
    Session::new(plan)
}

fn audit() -> (Audit, IntCounterVec) {
    let c = IntCounterVec::new(
        Opts::new("findings", "test"),
        crate::telemetry::genai::GUARD_FINDING_LABELS,
    )
    .unwrap();
    (
        Audit {
            findings: c.clone(),
            gate: "llm",
            workload: "w".into(),
            destination: "d".into(),
        },
        c,
    )
}

/// Every text place of a request, with what was seen there.
fn places(api: Api, body: Value) -> Vec<(String, String)> {
    let Value::Object(mut body) = body else {
        panic!()
    };
    let mut seen = Vec::new();
    request_texts(api, &mut body, &mut |text, place| {
        seen.push((place(), text.to_owned()));
        Ok(None)
    })
    .unwrap();
    seen
}

#[test]
fn every_text_of_a_chat_request_is_visited() {
    let seen = places(
        Api::ChatCompletions,
        json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": [
                    {"type": "text", "text": "part"},
                    {"type": "image_url", "image_url": {"url": "data:..."}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}
                ]},
                {"role": "tool", "tool_call_id": "c", "content": "result"}
            ]
        }),
    );
    let want = [
        ("messages[0].content", "sys"),
        ("messages[1].content[0].text", "part"),
        ("messages[2].tool_calls[0].function.arguments", "{\"a\":1}"),
        ("messages[3].content", "result"),
    ];
    assert_eq!(
        seen,
        want.map(|(a, b)| (a.to_owned(), b.to_owned())).to_vec()
    );
}

#[test]
fn every_text_of_anthropic_responses_and_embeddings_requests_is_visited() {
    let seen = places(
        Api::Messages,
        json!({
            "system": [{"type": "text", "text": "sys"}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "out"}]},
                    {"type": "tool_result", "tool_use_id": "u", "content": "plain"}
                ]}
            ]
        }),
    );
    let names: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "system[0].text",
            "messages[0].content",
            "messages[1].content[0].content[0].text",
            "messages[1].content[1].content"
        ]
    );
    let seen = places(
        Api::Responses,
        json!({
            "instructions": "be brief",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "q"}]},
                {"type": "function_call_output", "call_id": "c", "output": "o"}
            ]
        }),
    );
    let names: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "instructions",
            "input[0].content[0].text",
            "input[1].output"
        ]
    );
    assert_eq!(
        places(Api::Responses, json!({"input": "just text"})).len(),
        1
    );
    let seen = places(Api::Embeddings, json!({"input": ["a", "b", [1, 2]]}));
    assert_eq!(seen.len(), 2);
}

#[test]
fn a_redacted_request_text_replaces_the_original() {
    let mut s = session(vec![rule(&["email"], GuardAction::Redact, true)], vec![]);
    let Value::Object(mut body) =
        json!({"messages": [{"role": "user", "content": "to bob@example.com"}]})
    else {
        panic!()
    };
    request_texts(Api::ChatCompletions, &mut body, &mut |t, p| {
        s.check(Phase::Request, t, p)
    })
    .unwrap();
    assert_eq!(body["messages"][0]["content"], "to <EMAIL_1>");
}

#[test]
fn answer_texts_of_each_shape() {
    let mut seen = Vec::new();
    let mut chat =
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "c"}}]});
    let mut anthropic =
        json!({"content": [{"type": "text", "text": "a"}, {"type": "tool_use", "input": {}}]});
    let mut responses =
        json!({"output": [{"type": "message", "content": [{"type": "output_text", "text": "r"}]}]});
    for (api, body) in [
        (Api::ChatCompletions, &mut chat),
        (Api::Messages, &mut anthropic),
        (Api::Responses, &mut responses),
    ] {
        answer_texts(api, body, &mut |t, p| {
            seen.push((p(), t.to_owned()));
            Ok(Some(t.to_uppercase()))
        })
        .unwrap();
    }
    assert_eq!(
        seen.iter()
            .map(|(p, t)| format!("{p}={t}"))
            .collect::<Vec<_>>(),
        [
            "choices[0].message.content=c",
            "content[0].text=a",
            "output[0].content[0].text=r"
        ]
    );
    assert_eq!(chat["choices"][0]["message"]["content"], "C");
    assert_eq!(responses["output"][0]["content"][0]["text"], "R");
}

/// An OpenAI chat stream carrying `pieces` as content deltas.
fn chat_stream(pieces: &[&str]) -> String {
    let mut s = String::new();
    s.push_str("data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n");
    for p in pieces {
        let chunk = json!({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]});
        s.push_str(&format!("data: {chunk}\n\n"));
    }
    s.push_str("data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
    s.push_str("data: [DONE]\n\n");
    s
}

/// The text an OpenAI client assembles from a chat stream, and whether it
/// ended with [DONE].
fn chat_text(bytes: &[u8]) -> (String, bool) {
    let mut parser = SseParser::default();
    let mut text = String::new();
    let mut done = false;
    for ev in parser.push(bytes).unwrap() {
        if ev.data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(&ev.data).unwrap();
        if let Some(t) = v
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            text.push_str(t);
        }
    }
    (text, done)
}

/// Feeds `input` to the guard `step` bytes at a time.
fn run(guard: &mut StreamGuard, input: &str, step: usize) -> Result<Vec<u8>, StreamError> {
    let mut out = Vec::new();
    for chunk in input.as_bytes().chunks(step) {
        out.extend(guard.push(chunk)?);
    }
    out.extend(guard.finish()?);
    Ok(out)
}

#[test]
fn a_secret_split_over_chat_chunks_is_redacted_in_the_stream() {
    let key = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fGh";
    let (a, b) = key.split_at(20);
    let input = chat_stream(&["Your key is ", a, b, " — keep it safe."]);
    for step in [1, 7, input.len()] {
        let s = session(vec![], vec![rule(&["secret"], GuardAction::Redact, false)]);
        let (audit, counter) = audit();
        let mut g = StreamGuard::new(s, audit, Dialect::OpenAi).unwrap();
        let out = run(&mut g, &input, step).unwrap();
        let (text, done) = chat_text(&out);
        assert_eq!(
            text, "Your key is <OPENAI_KEY_1> — keep it safe.",
            "step {step}"
        );
        assert!(done);
        assert!(!String::from_utf8_lossy(&out).contains(&key[..12]));
        assert_eq!(
            counter
                .with_label_values(&["llm", "response", "p", "openai_key", "redact", "w", "d"])
                .get(),
            1
        );
    }
}

#[test]
fn placeholders_split_over_chunks_are_restored() {
    let mut s = session(vec![rule(&["email"], GuardAction::Redact, true)], vec![]);
    s.check(Phase::Request, "write to ann@example.com", String::new)
        .unwrap();
    let input = chat_stream(&["Sent to <EMA", "IL_1", ">."]);
    let mut g = StreamGuard::new(s, audit().0, Dialect::OpenAi).unwrap();
    let (text, _) = chat_text(&run(&mut g, &input, 5).unwrap());
    assert_eq!(text, "Sent to ann@example.com.");
}

#[test]
fn a_blocked_answer_ends_with_an_error_and_never_shows_the_text() {
    let s = session(
        vec![],
        vec![rule(&["credit_card"], GuardAction::Block, false)],
    );
    let input = chat_stream(&["card: 4111 1111 ", "1111 1111 is yours"]);
    let mut g = StreamGuard::new(s, audit().0, Dialect::OpenAi).unwrap();
    let mut out = Vec::new();
    let mut err = None;
    for chunk in input.as_bytes().chunks(9) {
        match g.push(chunk) {
            Ok(o) => out.extend(o),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("blocked");
    assert!(
        matches!(&err, StreamError::Blocked(m) if m.contains("credit_card")),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out).contains("4111"));
}

#[test]
fn anthropic_block_tails_go_before_the_block_stop() {
    let s = session(vec![], vec![rule(&["email"], GuardAction::Redact, false)]);
    let mut g = StreamGuard::new(s, audit().0, Dialect::Anthropic).unwrap();
    let delta = |t: &str| {
        format!(
            "event: content_block_delta\ndata: {}\n\n",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}})
        )
    };
    let input = [
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n".to_owned(),
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_owned(),
        delta("mail jo"),
        delta("e@example.org now"),
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".to_owned(),
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_owned(),
    ]
    .concat();
    let out = run(&mut g, &input, 3).unwrap();
    let mut parser = SseParser::default();
    let events = parser.push(&out).unwrap();
    let mut text = String::new();
    let mut order = Vec::new();
    for ev in &events {
        order.push(ev.event.clone().unwrap_or_default());
        if ev.event.as_deref() == Some("content_block_delta") {
            let v: Value = serde_json::from_str(&ev.data).unwrap();
            text.push_str(v["delta"]["text"].as_str().unwrap());
        }
    }
    assert_eq!(text, "mail <EMAIL_1> now");
    assert_eq!(order.last().unwrap(), "message_stop");
    let stop = order
        .iter()
        .position(|e| e == "content_block_stop")
        .unwrap();
    assert!(
        order[..stop]
            .iter()
            .filter(|e| *e == "content_block_delta")
            .count()
            >= 2
    );
}

#[test]
fn nothing_to_check_or_restore_needs_no_stream_guard() {
    let s = session(vec![rule(&["email"], GuardAction::Redact, false)], vec![]);
    assert!(StreamGuard::new(s, audit().0, Dialect::OpenAi).is_none());
}

#[test]
fn a_request_block_names_the_place() {
    let mut s = session(
        vec![rule(&["credit_card"], GuardAction::Block, false)],
        vec![],
    );
    let Value::Object(mut body) = json!({"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "4111-1111-1111-1111"}]})
    else {
        panic!()
    };
    let err = request_texts(Api::ChatCompletions, &mut body, &mut |t, p| {
        s.check(Phase::Request, t, p)
    })
    .unwrap_err();
    assert!(matches!(&err, CheckError::Blocked(b) if b.place == "messages[1].content"));
}
