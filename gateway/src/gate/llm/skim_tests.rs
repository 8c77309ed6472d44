//! The skim reader against serde's derived reader: wherever it answers, it
//! answers what serde does, and wherever serde refuses, it refuses.
use serde_json::Value;

use super::skim::{skim, AnswerHead};
use super::translate::tests::{answer_edge_cases, golden_inputs, mutated_texts};

fn serde_head(text: &[u8]) -> Option<AnswerHead> {
    serde_json::from_slice(text).ok()
}

/// Checks one text; true when the skim reader answered.
fn agrees(text: &[u8]) -> bool {
    let serde = serde_head(text);
    match skim(text) {
        Ok(head) => {
            assert_eq!(
                Some(&head),
                serde.as_ref(),
                "skim and serde differ on {:?}",
                String::from_utf8_lossy(text)
            );
            true
        }
        Err(_) => false,
    }
}

/// Answers as providers send them: OpenAI chat completions (the goldens of
/// two directions) and Anthropic messages.
fn answers() -> Vec<String> {
    let mut out = golden_inputs("openai_to_anthropic_response");
    out.extend(golden_inputs("chat_to_responses_response"));
    out.extend(golden_inputs("anthropic_to_openai_response"));
    out.push(
        r#"{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Paris \u00e9t\u00e9 \"quoted\"\nnext line, caf\u00e9 ☕ and a tab\t.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":25,"completion_tokens":36,"total_tokens":61,"prompt_tokens_details":{"cached_tokens":3,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":7,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_06737a9306"}"#
            .to_owned(),
    );
    out
}

#[test]
fn answers_as_providers_send_them_are_read_here_as_serde_reads_them() {
    let answers = answers();
    assert!(answers.len() >= 15, "only {} golden answers", answers.len());
    for text in &answers {
        assert!(
            agrees(text.as_bytes()),
            "the skim reader gave up on a golden answer: {text}"
        );
        // And pretty-printed.
        let pretty = serde_json::to_string_pretty(&serde_json::from_str::<Value>(text).unwrap())
            .expect("pretty");
        assert!(agrees(pretty.as_bytes()), "gave up on {pretty}");
    }
    let head = skim(answers.last().unwrap().as_bytes()).unwrap();
    assert_eq!(
        head.choices[0].finish_reason.as_deref(),
        Some("stop"),
        "{head:?}"
    );
    let usage = head.usage.unwrap().openai().unwrap();
    assert_eq!(
        (
            usage.input,
            usage.output,
            usage.cached_input,
            usage.reasoning
        ),
        (25, 36, 3, 7)
    );
}

#[test]
fn every_node_replaced_by_each_json_type_reads_as_serde_reads_it() {
    let mut cases = answers();
    cases.extend(answer_edge_cases());
    let mutated = mutated_texts(&cases);
    let answered = mutated.iter().filter(|t| agrees(t.as_bytes())).count();
    let serde_read = mutated
        .iter()
        .filter(|t| serde_head(t.as_bytes()).is_some())
        .count();
    // Most mutations keep a readable head; the skim reader must answer for
    // nearly all of those (it gives up only on escapes in what it reads and
    // on counts that are not plain integers), or the fast path is not taken.
    assert!(mutated.len() > 2000, "only {} mutations", mutated.len());
    assert!(
        answered * 100 >= serde_read * 90,
        "answered {answered} of the {serde_read} serde reads"
    );
    for text in answer_edge_cases() {
        agrees(text.as_bytes());
    }
}

/// Bytes that change JSON's structure or break its rules.
const BYTES: &[u8] = &[
    b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b' ', b'0', b'1', b'-', b'.', b'e', b'+',
    b'u', b'n', b't', b'x', 0x01, b'\n', 0x7f, 0x80, 0xc3, 0xff,
];

#[test]
fn every_byte_deleted_replaced_or_doubled_reads_as_serde_reads_it_or_is_left_to_it() {
    let all = answers();
    // One OpenAI and one Anthropic answer, compact: every byte of them.
    let texts = [
        all.last().unwrap().clone(),
        golden_inputs("anthropic_to_openai_response")[0].clone(),
    ];
    let (mut runs, mut answered) = (0usize, 0usize);
    for text in &texts {
        let bytes = text.as_bytes();
        for at in 0..bytes.len() {
            let mut variants = Vec::with_capacity(2 + 2 * BYTES.len());
            let mut deleted = bytes.to_vec();
            deleted.remove(at);
            variants.push(deleted);
            let mut doubled = bytes.to_vec();
            doubled.insert(at, bytes[at]);
            variants.push(doubled);
            for &b in BYTES {
                let mut replaced = bytes.to_vec();
                replaced[at] = b;
                variants.push(replaced);
                let mut inserted = bytes.to_vec();
                inserted.insert(at, b);
                variants.push(inserted);
            }
            for v in &variants {
                runs += 1;
                answered += usize::from(agrees(v));
            }
        }
        // Every truncation.
        for end in 0..bytes.len() {
            runs += 1;
            answered += usize::from(agrees(&bytes[..end]));
        }
    }
    assert!(runs > 40_000, "only {runs} variants");
    assert!(answered > runs / 4, "answered only {answered} of {runs}");
}

#[test]
fn what_serde_refuses_is_refused_and_what_needs_serde_is_left_to_it() {
    let refused_by_both = [
        // A repeated member of the head.
        r#"{"usage": null, "usage": null}"#,
        r#"{"choices": [{"finish_reason": "stop", "finish_reason": null}]}"#,
        // Types serde's reader refuses.
        r#"{"choices": null}"#,
        r#"{"choices": [7]}"#,
        r#"{"stop_reason": 1}"#,
        // A count beyond f64's range: serde converts it and fails.
        r#"{"usage": {"prompt_tokens": 1e400}}"#,
        // A raw control character in a skipped string.
        "{\"id\": \"a\u{1}b\", \"choices\": []}",
        // Bad escapes, numbers and literals in skipped members.
        r#"{"id": "\x", "choices": []}"#,
        r#"{"id": "\u12g4", "choices": []}"#,
        r#"{"n": 01, "choices": []}"#,
        r#"{"n": 1., "choices": []}"#,
        r#"{"n": -, "choices": []}"#,
        r#"{"n": 1e, "choices": []}"#,
        r#"{"n": tru, "choices": []}"#,
        // Trailing commas and text.
        r#"{"choices": [],}"#,
        r#"{"choices": [{},]}"#,
        r#"{"n": [1,], "choices": []}"#,
        r#"{"choices": []} x"#,
        "",
        "   ",
    ];
    for text in refused_by_both {
        assert!(serde_head(text.as_bytes()).is_none(), "serde read {text}");
        assert!(skim(text.as_bytes()).is_err(), "skim read {text}");
    }
    let left_to_serde = [
        // Escapes in a name or in a string serde decodes.
        r#"{"usag\u0065": {"prompt_tokens": 1}}"#,
        r#"{"stop_reason": "end\u005fturn"}"#,
        // Counts serde converts: a float with no fraction, an exponent.
        r#"{"usage": {"prompt_tokens": 1.0, "completion_tokens": 2}}"#,
        r#"{"usage": {"prompt_tokens": 1e2, "completion_tokens": 2}}"#,
        r#"{"usage": {"prompt_tokens": -0, "completion_tokens": 2}}"#,
        // A head by position.
        r#"[null, "end_turn", []]"#,
        r#"{"choices": [["stop"]]}"#,
    ];
    for text in left_to_serde {
        let bytes = text.as_bytes();
        assert!(skim(bytes).is_err(), "skim read {text}");
        assert!(AnswerHead::read(bytes).is_some(), "nobody read {text}");
        assert_eq!(AnswerHead::read(bytes), serde_head(bytes), "{text}");
    }
    // Invalid UTF-8 (a lone continuation byte): serde does not check a
    // string it skips, and does check names and the strings it reads.
    let mut skipped = br#"{"id": "ab", "choices": []}"#.to_vec();
    skipped[9] = 0x80;
    assert!(serde_head(&skipped).is_some());
    assert!(agrees(&skipped));
    for at in [2, 44] {
        let mut read = br#"{"id": "ab", "choices": [{"finish_reason": "stop"}]}"#.to_vec();
        read[at] = 0x80;
        assert!(serde_head(&read).is_none(), "{at}");
        assert!(skim(&read).is_err(), "{at}");
    }
    // Nesting beyond the bit stack, in a member serde ignores.
    let deep = format!(
        r#"{{"x": {}{}, "choices": []}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    assert!(serde_head(deep.as_bytes()).is_some());
    assert!(skim(deep.as_bytes()).is_err());
    let deep_ok = format!(
        r#"{{"x": {}0{}, "choices": []}}"#,
        "[{\"a\":".repeat(60),
        "}]".repeat(60)
    );
    assert!(serde_head(deep_ok.as_bytes()).is_some(), "{deep_ok}");
    assert!(
        agrees(deep_ok.as_bytes()),
        "gave up at depth 120: {:?}",
        skim(deep_ok.as_bytes())
    );
}

#[test]
fn counts_read_as_the_lenient_reader_reads_them() {
    for text in [
        r#"{"usage": {"prompt_tokens": 3, "prompt_tokens": 4}}"#,
        r#"{"usage": {"prompt_tokens": {"a": [1, {"b": 2}]}, "completion_tokens": 5}}"#,
        r#"{"usage": {"prompt_tokens": "9", "completion_tokens": true, "total_tokens": 1e400}}"#,
        r#"{"usage": {"prompt_tokens_details": [1, 2], "completion_tokens_details": 7}}"#,
        r#"{"usage": {"input_tokens": 9999999999999999999, "output_tokens": 0}}"#,
        r#"{"usage": {"input_tokens": 0, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 6}}"#,
        r#"{"usage": {"input_tokens_details": {"cached_tokens": 2, "reasoning_tokens": 3, "cached_tokens": 4}}}"#,
        r#"{"usage": [1, {"prompt_tokens": 3}]}"#,
        r#"{"usage": 12}"#,
        r#"{"usage": "many"}"#,
        r#"{"usage": {}}"#,
    ] {
        assert!(agrees(text.as_bytes()), "gave up on {text}");
    }
}
