//! [`super::plain`] gives what the tree translation gives, wherever it
//! answers, and answers for the plain calls it is there for.
use serde_json::{json, Value};

use super::{
    openai_response_to_anthropic, plain,
    tests::{answer_edge_cases, golden_inputs, mutated_texts, REQUESTED_MODEL},
};
use crate::gate::llm::{
    provider::anthropic_to_openai_tree, request::ClientRequest, routing::Members, usage::Usage,
};

/// What `cargo xtask bench llm` sends with Anthropic in.
const BENCH_REQUEST: &str = r#"{"model":"gpt-4o-mini","max_tokens":256,"system":"You are a helpful assistant.","messages":[{"role":"user","content":"What is the capital of France? Answer in two sentences."}]}"#;

/// An OpenAI answer as the bench's fake sends it.
const BENCH_ANSWER: &str = r#"{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"The capital of France is Paris.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":25,"completion_tokens":36,"total_tokens":61,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_06737a9306"}"#;

/// Plain requests, and near misses the plain reader must decline.
fn request_cases() -> Vec<String> {
    let mut cases = golden_inputs("anthropic_to_openai_request");
    cases.extend(
        [
            BENCH_REQUEST,
            r#"{"model":"m","max_tokens":5,"stream":true,"temperature":1,"top_p":0.50,
                "messages":[{"role":"user","content":"a \"q\" \u00e9\n"},{"role":"assistant","content":""},
                {"role":"user","content":"b"}]}"#,
            r#"{"model":"m","system":"","messages":[{"role":"user","content":"x"}],"stream":false}"#,
            r#"{"model":"m","messages":[]}"#,
            r#"{"model":"m"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"messages":[{"role":"user","content":"y"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x","content":"y"}]}"#,
            r#"{"model":"m","messages":[{"role":"system","content":"x"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x","name":"n"}]}"#,
            r#"{"model":"m","messages":[["user","x"]]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":5.0}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":null}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":1e400}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"\ud800"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_k":5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop_sequences":["\n"]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{"user_id":"u"}}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"thinking":{"type":"disabled"}}"#,
        ]
        .map(str::to_owned),
    );
    with_mutations(cases)
}

/// `cases`, then each of them with every node replaced by each JSON type.
fn with_mutations(mut cases: Vec<String>) -> Vec<String> {
    let mutated = mutated_texts(&cases);
    cases.extend(mutated);
    cases
}

fn plain_request(req: &ClientRequest<'_>) -> (Option<Vec<u8>>, bool) {
    let stream = req.get("stream").and_then(|s| s.as_bool()) == Some(true);
    (
        plain::anthropic_request_to_openai(req, REQUESTED_MODEL, stream),
        stream,
    )
}

/// Compares one request both ways; true when the plain reader answered.
fn same_request(text: &str, req: &ClientRequest<'_>) -> bool {
    let (plain, stream) = plain_request(req);
    let Some(plain) = plain else { return false };
    let (tree, _) = anthropic_to_openai_tree(req, REQUESTED_MODEL, stream)
        .unwrap_or_else(|e| panic!("plain answered where the tree refuses ({e}): {text}"));
    let plain: Value = serde_json::from_slice(&plain)
        .unwrap_or_else(|e| panic!("plain wrote invalid JSON ({e}): {text}"));
    let tree: Value = serde_json::from_slice(&tree).unwrap();
    assert_eq!(plain, tree, "{text}");
    true
}

#[test]
fn plain_requests_translate_as_the_tree_translation_does() {
    let mut answered = 0;
    let cases = request_cases();
    for text in &cases {
        let Ok(req) = ClientRequest::parse(text.as_bytes()) else {
            continue;
        };
        answered += usize::from(same_request(text, &req));
    }
    // The bench's request, the hand-made plain ones, the golden
    // text_system and the mutations that keep them plain (a turn's text
    // replaced by "data:", a number by another...).
    assert!(
        answered >= 30,
        "the plain reader answered only {answered} of {}",
        cases.len()
    );
    let req = ClientRequest::parse(BENCH_REQUEST.as_bytes()).unwrap();
    assert!(
        plain_request(&req).0.is_some(),
        "declined the bench's request"
    );
}

/// Members the gateway set (model defaults, overrides, caps) are read as
/// values; a string it set goes the tree way.
#[test]
fn members_set_by_the_gateway_are_read_too() {
    let mut req = ClientRequest::parse(BENCH_REQUEST.as_bytes()).unwrap();
    req.set("max_tokens", json!(100));
    req.set("temperature", json!(0.2));
    req.set("stream", json!(true));
    assert!(same_request("set members", &req));
    let out: Value = serde_json::from_slice(&plain_request(&req).0.unwrap()).unwrap();
    assert_eq!(out["max_completion_tokens"], 100);
    assert_eq!(out["stream_options"], json!({"include_usage": true}));

    req.set("top_p", json!("wide"));
    assert!(!same_request("a string top_p", &req));
    let mut req = ClientRequest::parse(BENCH_REQUEST.as_bytes()).unwrap();
    req.set("system", json!("set by the gateway"));
    assert!(!same_request("a set system", &req));
}

/// Answers for the plain answer readers: golden, edge cases, near misses,
/// and strings with escapes.
fn answer_cases() -> Vec<String> {
    let mut cases = golden_inputs("openai_to_anthropic_response");
    cases.extend(answer_edge_cases());
    cases.extend(
        [
            BENCH_ANSWER,
            r#"{"id":"x","choices":[{"message":{"content":""},"finish_reason":"length"}],"usage":{"prompt_tokens":3}}"#,
            r#"{"id":"x","choices":[{"message":{"content":"a","tool_calls":[]},"finish_reason":"stop"}],"usage":{"completion_tokens":3}}"#,
            r#"{"id":"x","choices":[{"message":{"content":"a"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":4}}}"#,
            r#"{"id":"x","choices":[{"message":{"content":"a"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"prompt_tokens_details":null}}"#,
            r#"{"id":"x","choices":[{"message":{"content":"a"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"message":{}}}"#,
            r#"{"id":"x","choices":[{"message":{"content":"a"},"finish_reason":"stop"}],"usage":null}"#,
            r#"{"id":"x","choices":[{"message":{"content":"a"},"finish_reason":"stop"}]}"#,
            r#"{"id":"x","id":"y","choices":[{"message":{"content":"a"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}"#,
            r#"{"id":"x","choices":[{"message":{"content":"a"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"prompt_tokens":2}}"#,
            r#"{"id":"x","choices":[{"message":{"content":"a","refusal":"no"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}"#,
            r#"{"id":"x","choices":[{"message":["a",null,null],"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}"#,
            r#"{"id":"a\"b","choices":[{"message":{"content":"line\none\t\"q\" \\ \/ é"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}"#,
            r#"{"id":"x","choices":[{"message":{"content":"\u00e9\ud83d\ude00"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}"#,
            r#"{"id":"x","choices":[{"message":{"content":"\ud800"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}"#,
            r#"{"id":"x","choices":[{"message":{"content":null},"finish_reason":"stop"},{"message":{"refusal":"no"}}],"usage":{"prompt_tokens":1,"completion_tokens_details":{"reasoning_tokens":5,"cached_tokens":1}}}"#,
            r#"{"id":"x","choices":[{"message":{"content":"a","tool_calls":[{}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":1}}"#,
            r#" {"usage":{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":null}},"choices":[{"finish_reason":"length","message":{"content":"a"}}],"id":"x"} "#,
        ]
        .map(str::to_owned),
    );
    with_mutations(cases)
}

#[test]
fn plain_answers_translate_as_the_tree_translation_does() {
    let cases = answer_cases();
    let mut answered = 0;
    for text in &cases {
        let Some(plain) = plain::openai_answer_to_anthropic(text.as_bytes(), REQUESTED_MODEL)
        else {
            continue;
        };
        answered += 1;
        let whole: Value = serde_json::from_str(text).unwrap();
        let tree = openai_response_to_anthropic(&whole, REQUESTED_MODEL)
            .unwrap_or_else(|e| panic!("plain answered where the tree refuses ({e}): {text}"));
        let body: Value = serde_json::from_slice(&plain.body)
            .unwrap_or_else(|e| panic!("plain wrote invalid JSON ({e}): {text}"));
        assert_eq!(body, tree, "{text}");
        assert_eq!(tree["stop_reason"], plain.stop_reason, "{text}");
        assert_eq!(
            whole.get("usage").and_then(Usage::from_openai),
            Some(plain.usage),
            "{text}"
        );
    }
    assert!(
        answered >= 40,
        "the plain reader answered only {answered} of {}",
        cases.len()
    );
    assert!(plain::openai_answer_to_anthropic(BENCH_ANSWER.as_bytes(), "m").is_some());
}

/// The one-pass reader answers only where serde_json's reads the same, and
/// reads most of the answers that are translated (the bench's included;
/// what it leaves are `\u` escapes, huge counts, and later choices it
/// does not need but checks more strictly than serde).
#[test]
fn answers_read_in_one_pass_read_as_serde_reads_them() {
    let (mut skimmed, mut read) = (0, 0);
    for text in answer_cases() {
        let by_serde = plain::serde_completion(text.as_bytes());
        let answers = plain::openai_answer_to_anthropic(text.as_bytes(), REQUESTED_MODEL).is_some();
        read += usize::from(answers);
        let Ok(by_skim) = plain::skim_completion(text.as_bytes()) else {
            continue;
        };
        skimmed += 1;
        let by_serde =
            by_serde.unwrap_or_else(|| panic!("read in one pass where serde does not: {text}"));
        let (a, b) = (
            by_skim.translate(REQUESTED_MODEL),
            by_serde.translate(REQUESTED_MODEL),
        );
        match (a, b) {
            (Some(a), Some(b)) => {
                let a_body: Value = serde_json::from_slice(&a.body).unwrap();
                let b_body: Value = serde_json::from_slice(&b.body).unwrap();
                assert_eq!(a_body, b_body, "{text}");
                assert_eq!((a.usage, a.stop_reason), (b.usage, b.stop_reason), "{text}");
            }
            (None, None) => {}
            (a, b) => panic!("one-pass {a:?}, serde {b:?}: {text}"),
        }
    }
    assert!(
        skimmed * 10 >= read * 8,
        "the one-pass reader read {skimmed} of the {read} answers serde reads"
    );
    assert!(plain::skim_completion(BENCH_ANSWER.as_bytes()).is_ok());
}
