//! Topic restrictions: the labelled question sets (testdata/topics*.jsonl),
//! long and mixed prompts, keywords, config validation, chunking, odd input.
use std::sync::OnceLock;
use std::time::Instant;

use super::topic::chunks;
use super::*;

/// The restriction of the issue: a finance agent may not ask for legal
/// advice. Examples and keywords as an operator would write them, not
/// taken from the labelled sets.
fn legal_topic() -> TopicConfig {
    TopicConfig {
        name: "legal-advice".into(),
        keywords: vec![
            "legal advice".into(),
            "lawyer".into(),
            "attorney".into(),
            "lawsuit".into(),
            "litigation".into(),
        ],
        examples: vec![
            "Can I sue my landlord for keeping my deposit?".into(),
            "Do I need a lawyer for this dispute?".into(),
            "Is this clause in my employment contract enforceable?".into(),
            "Is it legal for my employer to do this?".into(),
            "Who is liable if someone gets hurt on my property?".into(),
            "How do I write a will and avoid probate?".into(),
            "Can I use a trademarked logo or copyrighted image without permission?".into(),
            "What should I expect at my court hearing for a criminal charge?".into(),
            "How does child custody work in a divorce?".into(),
            "What are my rights as a consumer when a product is defective?".into(),
        ],
        ..TopicConfig::default()
    }
}

fn legal_matcher() -> &'static TopicMatcher {
    static M: OnceLock<TopicMatcher> = OnceLock::new();
    M.get_or_init(|| TopicMatcher::new(&[legal_topic()]).unwrap())
}

#[derive(serde::Deserialize)]
struct Sample {
    text: String,
    label: String,
}

#[derive(Default)]
struct Figures {
    legal: usize,
    legal_caught: usize,
    by_keyword: usize,
    others: usize,
    others_caught: usize,
}

impl Figures {
    fn recall(&self) -> f64 {
        self.legal_caught as f64 / self.legal as f64
    }
    fn false_positive_rate(&self) -> f64 {
        self.others_caught as f64 / self.others as f64
    }
}

/// Classifies every sample and prints the misses (with their best
/// similarity) and the figures; `--nocapture` shows them.
fn evaluate(name: &str, set: &str, matcher: &TopicMatcher) -> Figures {
    let mut f = Figures::default();
    println!("{name}:");
    for line in set.lines().filter(|l| !l.trim().is_empty()) {
        let sample: Sample = serde_json::from_str(line).unwrap();
        let hits = matcher.classify(&sample.text);
        let caught = !hits.is_empty();
        let legal = match sample.label.as_str() {
            "legal" => true,
            "finance" | "other" => false,
            other => panic!("unknown label {other:?}"),
        };
        if legal {
            f.legal += 1;
            f.legal_caught += usize::from(caught);
            f.by_keyword += usize::from(hits.iter().any(|h| h.by == TopicMatch::Keyword));
        } else {
            f.others += 1;
            f.others_caught += usize::from(caught);
        }
        if caught != legal {
            let score = matcher.similarity(&sample.text)[0];
            println!("  miss {score:.3} {:7} {}", sample.label, sample.text);
        }
    }
    println!(
        "{name}: legal recall {:.3} ({}/{}, {} also by keyword), false positives {:.3} ({}/{})",
        f.recall(),
        f.legal_caught,
        f.legal,
        f.by_keyword,
        f.false_positive_rate(),
        f.others_caught,
        f.others
    );
    f
}

// ---------------------------------------------------------------- labelled sets

/// The held-out set (testdata/topics.jsonl): 90 questions written after
/// the lexicon, the examples and the default threshold were frozen, and
/// not used to change them. Measured once: recall 0.925 (37/40), false
/// positives 0.02 (1/50). The three it misses carry no legal word ("can I
/// use clips from a movie in my review video?").
#[test]
fn heldout_legal_recall_and_false_positives() {
    let f = evaluate(
        "held-out",
        include_str!("testdata/topics.jsonl"),
        legal_matcher(),
    );
    assert!(f.legal >= 40 && f.others >= 50, "the set shrank");
    assert!(f.recall() >= 0.9, "legal recall {:.3}", f.recall());
    assert!(
        f.false_positive_rate() <= 0.05,
        "false positives {:.3}",
        f.false_positive_rate()
    );
}

/// The development set (testdata/topics_tuning.jsonl): three earlier
/// held-out rounds, each merged here once measured (recall 0.85, 0.875
/// and 0.75 at the time, false positives 2–3%), and the lexicon and the
/// default threshold tuned on the lot. Asserted so they cannot regress.
#[test]
fn tuning_set_recall_and_false_positives() {
    let f = evaluate(
        "tuning",
        include_str!("testdata/topics_tuning.jsonl"),
        legal_matcher(),
    );
    assert!(f.legal >= 100 && f.others >= 150, "the set shrank");
    assert!(f.recall() >= 0.9, "legal recall {:.3}", f.recall());
    assert!(f.false_positive_rate() <= 0.05);
}

/// The embedding alone, without the keywords, does as well on both sets:
/// every question a keyword catches, similarity catches too.
#[test]
fn similarity_alone_carries_the_recall() {
    let matcher = TopicMatcher::new(&[TopicConfig {
        keywords: Vec::new(),
        ..legal_topic()
    }])
    .unwrap();
    for (name, set) in [
        ("held-out", include_str!("testdata/topics.jsonl")),
        ("tuning", include_str!("testdata/topics_tuning.jsonl")),
    ] {
        let f = evaluate(name, set, &matcher);
        assert_eq!(f.by_keyword, 0);
        assert!(f.recall() >= 0.9, "{name}: recall {:.3}", f.recall());
        assert!(f.false_positive_rate() <= 0.05);
    }
}

// ---------------------------------------------------------------- long and mixed prompts

const FINANCE_PARAGRAPH: &str = "We are closing the books for the third quarter. \
    Revenue came in at 4.2 million against a budget of 4.5 million, mostly because two \
    enterprise invoices slipped into October. Operating expenses were flat, payroll rose \
    three percent after the annual raises, and depreciation on the new servers started \
    this month. Cash on hand covers about seven months of burn. Please draft the variance \
    commentary for the board deck and suggest how to present the deferred revenue.";

#[test]
fn a_legal_question_inside_a_finance_prompt_is_found() {
    let m = legal_matcher();
    assert!(m.classify(FINANCE_PARAGRAPH).is_empty(), "finance alone");
    let question = "Separately, can our former supplier sue us for ending the contract early?";
    for text in [
        format!("{FINANCE_PARAGRAPH} {question}"),
        format!("{question}\n\n{FINANCE_PARAGRAPH}"),
        format!("{FINANCE_PARAGRAPH}\n{question}\n{FINANCE_PARAGRAPH}"),
    ] {
        let hits = m.classify(&text);
        assert_eq!(hits.len(), 1, "{text}");
        assert!(matches!(hits[0].by, TopicMatch::Similarity { score } if score >= 0.37));
        assert_eq!(&*hits[0].topic, "legal-advice");
    }
}

/// The whole text is chunked: a question after 60 KB of finance text is
/// still found, and the finance text alone is still clean.
#[test]
fn a_long_preamble_cannot_hide_a_question() {
    let m = legal_matcher();
    let preamble = format!("{FINANCE_PARAGRAPH}\n").repeat(150);
    assert!(preamble.len() > 60_000);
    assert!(m.classify(&preamble).is_empty());
    let text = format!("{preamble}Is the non-compete in my employment contract enforceable?");
    assert_eq!(m.classify(&text).len(), 1);
    // Inside one endless run-on sentence too (no sentence ends to split at).
    let run_on = format!(
        "{} and also is the non-compete in my employment contract enforceable or not",
        FINANCE_PARAGRAPH.replace('.', ",").repeat(40)
    );
    assert_eq!(m.classify(&run_on).len(), 1);
}

// ---------------------------------------------------------------- keywords and several topics

#[test]
fn keywords_match_whole_words_case_insensitively_and_win_over_similarity() {
    let m = TopicMatcher::new(&[TopicConfig {
        name: "legal".into(),
        keywords: vec!["attorney".into(), "legal advice".into()],
        ..TopicConfig::default()
    }])
    .unwrap();
    for text in [
        "my ATTORNEY looked at the spreadsheet",
        "I want some legal\n  advice on budgets",
    ] {
        let hits = m.classify(text);
        assert_eq!(hits.len(), 1, "{text}");
        assert_eq!(hits[0].by, TopicMatch::Keyword);
    }
    // Whole words: no hit inside another word, and no examples to fall
    // back on.
    assert!(m.classify("attorneyship paralegal advices").is_empty());
    assert_eq!(m.similarity("attorney"), vec![0.0]);
    // With examples too, a keyword hit is reported as such.
    let hits = legal_matcher().classify("Ask the lawyer whether we can sue.");
    assert_eq!(hits[0].by, TopicMatch::Keyword);
}

#[test]
fn several_topics_are_reported_in_config_order_without_text() {
    let cooking = TopicConfig {
        name: "cooking".into(),
        examples: vec![
            "How long do I bake a cake in the oven?".into(),
            "What is a good recipe for dinner?".into(),
        ],
        ..TopicConfig::default()
    };
    let crypto = TopicConfig {
        name: "crypto".into(),
        keywords: vec!["bitcoin".into()],
        ..TopicConfig::default()
    };
    let m = TopicMatcher::new(&[cooking, legal_topic(), crypto]).unwrap();
    let text = "Can I sue the bakery that sold me a cake recipe? I paid in Bitcoin.";
    let hits = m.classify(text);
    let names: Vec<(&str, usize)> = hits.iter().map(|h| (&*h.topic, h.index)).collect();
    assert_eq!(
        names,
        [("cooking", 0), ("legal-advice", 1), ("crypto", 2)],
        "{hits:?}"
    );
    assert_eq!(hits[2].by, TopicMatch::Keyword);
    // What is reported carries nothing of the text.
    let shown = format!("{hits:?}");
    for word in ["bakery", "Bitcoin", "paid", "sue"] {
        assert!(!shown.contains(word), "{shown}");
    }
    assert!(m.classify("How do I rebalance my index funds?").is_empty());
}

#[test]
fn a_topic_threshold_is_honoured() {
    let text = "Can my landlord keep my deposit?";
    let score = legal_matcher().similarity(text)[0];
    assert!(score > 0.5, "{score}");
    let strict = TopicMatcher::new(&[TopicConfig {
        keywords: Vec::new(),
        threshold: (score + 1.0) / 2.0,
        ..legal_topic()
    }])
    .unwrap();
    assert!(strict.classify(text).is_empty());
    assert_eq!(strict.similarity(text), vec![score]);
}

// ---------------------------------------------------------------- config

#[test]
fn config_defaults_and_unknown_fields() {
    let t: TopicConfig = serde_json::from_str(r#"{"name": "x", "examples": ["court"]}"#).unwrap();
    assert_eq!(t.threshold, DEFAULT_TOPIC_THRESHOLD);
    assert!(t.keywords.is_empty());
    assert!(t.validate("t").is_empty());
    let err = serde_json::from_str::<TopicConfig>(r#"{"name": "x", "treshold": 0.5}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("treshold"), "{err}");
    assert!(legal_topic().validate("topics[0]").is_empty());
}

#[test]
fn config_problems_name_the_field() {
    let bad = TopicConfig {
        name: "legal advice!".into(),
        keywords: vec!["  ".into()],
        examples: vec!["".into(), "what is it that you would".into()],
        threshold: 1.5,
    };
    let errors = bad.validate("llm.guard.topics[2]");
    let expected = [
        "llm.guard.topics[2].name \"legal advice!\"",
        "llm.guard.topics[2].keywords[0] is blank",
        "llm.guard.topics[2].examples[0] is blank",
        "llm.guard.topics[2].examples[1] \"what is it that you would\" has no word",
        "llm.guard.topics[2].threshold 1.5",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (e, want) in errors.iter().zip(expected) {
        assert!(e.starts_with(want), "{e:?} should start with {want:?}");
    }

    let empty = TopicConfig {
        name: "empty".into(),
        ..TopicConfig::default()
    };
    assert_eq!(
        empty.validate("t"),
        ["t: set keywords or examples (or both); a topic with neither never matches"]
    );
    for threshold in [0.0, -0.1, f32::NAN, f32::INFINITY] {
        let t = TopicConfig {
            threshold,
            ..legal_topic()
        };
        assert_eq!(t.validate("t").len(), 1, "{threshold}");
    }
    let many = TopicConfig {
        examples: vec!["court".into(); MAX_TOPIC_EXAMPLES + 1],
        ..legal_topic()
    };
    assert!(many.validate("t")[0].starts_with("t.examples has 257 sentences"));
}

#[test]
fn duplicate_names_and_build_errors() {
    let topics = [
        legal_topic(),
        TopicConfig {
            name: "Legal-Advice".into(),
            keywords: vec!["court".into()],
            ..TopicConfig::default()
        },
        TopicConfig::default(),
    ];
    let errors = validate_topics(&topics, "topics");
    assert_eq!(
        errors,
        [
            "topics[1].name \"Legal-Advice\" is used twice, also in topics[0]",
            "topics[2].name \"\": use 1 to 48 characters of A-Z, a-z, 0-9, _ and -",
            "topics[2]: set keywords or examples (or both); a topic with neither never matches",
        ]
    );
    let err = TopicMatcher::new(&topics).unwrap_err();
    assert_eq!(err.problems, errors);
    assert!(TopicMatcher::new(&[]).unwrap().classify("sue").is_empty());
}

// ---------------------------------------------------------------- chunks

#[test]
fn chunks_are_sentences_with_short_ones_joined() {
    assert_eq!(
        chunks("Hi. Thanks! Can I sue my landlord for this? The deposit was 900 dollars.\nOK"),
        [
            "Hi. Thanks! Can I sue my landlord for this?",
            "The deposit was 900 dollars.\nOK",
        ]
    );
    assert_eq!(chunks("一二三四。五六七八！"), ["一二三四。五六七八！"]);
    assert_eq!(
        chunks("one two three four。 five six seven eight"),
        ["one two three four。", "five six seven eight"]
    );
    assert!(chunks("").is_empty());
    assert!(chunks(" \n\n ").is_empty());
    assert_eq!(chunks("short"), ["short"]);
}

#[test]
fn long_sentences_become_overlapping_windows_covering_everything() {
    let words: Vec<String> = (0..400).map(|i| format!("w{i}")).collect();
    let text = words.join(" ");
    let pieces = chunks(&text);
    assert!(pieces.len() > 5, "{}", pieces.len());
    for p in &pieces {
        assert!(p.len() <= 320, "{}", p.len());
    }
    // Every word is inside some window, whole.
    for w in &words {
        assert!(
            pieces.iter().any(|p| p.split(' ').any(|x| x == w)),
            "{w} lost"
        );
    }
    // No whitespace: cut at character boundaries, still covering it all.
    let cjk = "法".repeat(1000);
    let pieces = chunks(&cjk);
    assert!(pieces.iter().all(|p| p.len() <= 320 && !p.is_empty()));
    assert_eq!(pieces.last().map(|p| cjk.ends_with(p)), Some(true));
    assert!(cjk.starts_with(pieces[0]));
}

// ---------------------------------------------------------------- odd input, cost

#[test]
fn odd_input_does_not_panic() {
    let m = legal_matcher();
    let inputs = [
        String::new(),
        "🙂".repeat(5000),
        "\u{202E}\u{202D}?!.;\n".repeat(2000),
        "محامي قضية محكمة. עורך דין? 律师。".into(),
        "x".repeat(1 << 20),
        ".".repeat(100_000),
        "a. ".repeat(50_000),
        "\u{0}\u{feff}\u{fffd}".repeat(100),
    ];
    for text in &inputs {
        let hits = m.classify(text);
        assert!(hits
            .iter()
            .all(|h| h.by == TopicMatch::Keyword || h.index == 0));
        let scores = m.similarity(text);
        assert!(scores.iter().all(|s| s.is_finite() && *s <= 1.0));
    }
    // A few random mixes of pieces that split sentences and words.
    const PIECES: &[&str] = &[
        "sue", " ", ".", "!", "\n", "lawyer", "é", "法", "。", "🙂", "court", "'s", "will", "ﬁ",
        "Ｌ", "\u{200b}", "my", "a",
    ];
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..200 {
        let mut text = String::new();
        for _ in 0..(seed % 300) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            text.push_str(PIECES[(seed % PIECES.len() as u64) as usize]);
        }
        let _ = m.classify(&text);
    }
}

/// Not a timed assertion (a debug build on a shared machine says little):
/// prints what classifying a 2 KiB prompt costs. `--nocapture` shows it.
#[test]
fn cost_of_a_2_kib_prompt() {
    let m = legal_matcher();
    let mut prompt = String::new();
    while prompt.len() < 2048 {
        prompt.push_str(FINANCE_PARAGRAPH);
        prompt.push(' ');
    }
    prompt.truncate(2048);
    let runs = 50;
    let start = Instant::now();
    for _ in 0..runs {
        assert!(m.classify(&prompt).is_empty());
    }
    let per = start.elapsed() / runs;
    println!(
        "classify of a 2 KiB prompt ({} chunks): {per:?} per call",
        chunks(&prompt).len()
    );
}

#[test]
fn matcher_is_shareable() {
    fn shareable<T: Send + Sync>() {}
    shareable::<TopicMatcher>();
    shareable::<crate::policy::embed::LocalEmbedder>();
}
