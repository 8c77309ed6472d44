//! `cargo xtask bench guard` (second part): a semantic cache lookup with
//! 100k answered questions in one context — the worst case, since a
//! lookup only ever searches its own context (tenant, model, system
//! prompt, tools, earlier turns).
//!
//! The questions are generated from word lists with a fixed seed and
//! embedded with the built-in local embedding, as the gate does. Timed:
//! `SemanticIndex::find` alone (what the target is about) and embedding
//! plus find (what a request pays), over paraphrases of stored questions
//! and unrelated questions; p50 and p99. Every paraphrase must find its
//! own question, or the run fails rather than report a speed.
//!
//! Without `--bench` (`cargo test --benches`) this is a smoke run on 2k
//! entries.
use std::hint::black_box;
use std::time::Instant;

use trigate::gate::llm::semantic::{Question, SemanticIndex};
use trigate::policy::embed::LocalEmbedder;

const SUBJECTS: [&str; 24] = [
    "invoice",
    "payroll",
    "budget",
    "forecast",
    "pension",
    "mortgage",
    "dividend",
    "audit",
    "expense",
    "refund",
    "loan",
    "tariff",
    "shipment",
    "warranty",
    "contract",
    "password",
    "server",
    "database",
    "deployment",
    "vacation",
    "onboarding",
    "laptop",
    "printer",
    "badge",
];
const PLACES: [&str; 16] = [
    "France", "Germany", "Spain", "Italy", "Japan", "Brazil", "Canada", "Kenya", "Norway", "Chile",
    "India", "Mexico", "Poland", "Egypt", "Peru", "Vietnam",
];
const ASKS: [&str; 8] = [
    "What is the deadline for the {s} in {p} for team {n}?",
    "How do I approve the {s} for {p} office {n}?",
    "Who owns the {s} process in {p} region {n}?",
    "Where can I find the {s} report for {p} branch {n}?",
    "When is the next {s} review in {p} unit {n}?",
    "Why was the {s} rejected in {p} department {n}?",
    "Which form do I need for the {s} in {p} group {n}?",
    "How much was the {s} in {p} cost center {n}?",
];

/// Deterministic pseudo-random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

fn question(i: usize, rng: &mut Rng) -> String {
    let ask = ASKS[i % ASKS.len()];
    ask.replace("{s}", rng.pick(&SUBJECTS))
        .replace("{p}", rng.pick(&PLACES))
        .replace("{n}", &format!("{}", 1000 + i / ASKS.len()))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let quick = std::env::args().any(|a| a == "--quick");
    let entries = if full { 100_000 } else { 2_000 };
    let lookups = if !full {
        50
    } else if quick {
        300
    } else {
        2_000
    };
    let embedder = LocalEmbedder::shared();
    let context = [7u8; 32];
    let index = SemanticIndex::new(entries);
    let mut rng = Rng(0x5eed);
    let mut stored = Vec::with_capacity(entries);
    let started = Instant::now();
    for i in 0..entries {
        let text = question(i, &mut rng);
        let q = Question {
            context,
            embedding: embedder.embed(&text),
        };
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(i as u64).to_le_bytes());
        index.insert(&q, key);
        stored.push(text);
    }
    let build = started.elapsed();
    assert_eq!(index.len(), entries);

    // Paraphrases: the stored question reworded (lower case, no question
    // mark, "please" in front) — and unrelated questions.
    let mut find_us = Vec::new();
    let mut total_us = Vec::new();
    let mut found = 0;
    for n in 0..lookups {
        let (text, own) = if n % 2 == 0 {
            let i = (rng.next() % entries as u64) as usize;
            let t = format!("please {}", stored[i].to_lowercase().trim_end_matches('?'));
            (t, Some(i))
        } else {
            (
                format!(
                    "Tell me a story about a {} dragon number {n}",
                    rng.pick(&PLACES)
                ),
                None,
            )
        };
        let t0 = Instant::now();
        let q = Question {
            context,
            embedding: embedder.embed(&text),
        };
        let t1 = Instant::now();
        let hit = black_box(index.find(&q, 0.8));
        let t2 = Instant::now();
        find_us.push((t2 - t1).as_secs_f64() * 1e6);
        total_us.push((t2 - t0).as_secs_f64() * 1e6);
        match (own, hit) {
            (Some(i), Some((key, _))) => {
                let got = u64::from_le_bytes(key[..8].try_into().unwrap()) as usize;
                assert_eq!(
                    stored[got], stored[i],
                    "a paraphrase found another question"
                );
                found += 1;
            }
            (Some(i), None) => panic!("the paraphrase of {:?} was not found", stored[i]),
            (None, Some(_)) => panic!("an unrelated question {text:?} found an answer"),
            (None, None) => {}
        }
    }
    if !full {
        println!("semantic cache smoke run: {entries} entries, {found} paraphrases found");
        return;
    }
    find_us.sort_by(f64::total_cmp);
    total_us.sort_by(f64::total_cmp);
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.matches("processor\t:").count())
        .unwrap_or(0);
    println!();
    println!("semantic cache lookup — {entries} questions in one context (local embedding, 512 dims), {lookups} lookups (half paraphrases, all found; half unrelated, none found), one thread, {cores} cores; index built in {:.1} s", build.as_secs_f64());
    println!("| measured | p50 µs | p99 µs |");
    println!("|---|---:|---:|");
    println!(
        "| find | {:.0} | {:.0} |",
        percentile(&find_us, 0.5),
        percentile(&find_us, 0.99)
    );
    println!(
        "| embed + find | {:.0} | {:.0} |",
        percentile(&total_us, 0.5),
        percentile(&total_us, 0.99)
    );
    let p99 = percentile(&find_us, 0.99);
    println!(
        "target semantic lookup p99 ≤ 2 ms at 100k entries: {:.2} ms → {}",
        p99 / 1000.0,
        if p99 <= 2000.0 { "met" } else { "MISSED" }
    );
}
