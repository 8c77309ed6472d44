//! `cargo xtask bench guard`: what the guardrail engine (`policy::guard`)
//! costs with its default detector set (`GuardConfig::default()`), on one
//! thread.
//!
//! 1. One-shot scan throughput over 1 MiB of generated mixed text — prose,
//!    code, JSON and log lines with personal data and credentials planted at
//!    a few per KiB, most blocks carrying some and the rest none — over
//!    1 MiB of the same kinds of blocks with nothing planted, and over the
//!    mixed text generated without its few non-ASCII words (accents, curly
//!    quotes, dashes), which shows what those cost.
//! 2. Added latency on a 2 KiB chat prompt holding one email address and
//!    one phone number: `Scanner::scan` alone, and `scan` followed by
//!    `Redactor::redact` with a fresh redactor (what a gate does per
//!    request); p50 and p99 over many iterations. Also for an ASCII-only
//!    prompt.
//! 3. A `StreamScanner` fed the 1 MiB mixed text as SSE-sized deltas (24 to
//!    56 bytes, about 40 on average), checked against the one-shot
//!    redaction of the same text.
//! 4. The peak RSS the scans and the stream add (VmHWM after resetting it
//!    through /proc/self/clear_refs), when the kernel allows the reset.
//!
//! The text is generated here from a fixed seed, so every run scans the
//! same bytes and no file is needed. Every planted value is recorded with
//! its kind, and the run prints planted against found per kind: a scanner
//! that finds nothing makes the run fail rather than report a speed.
//! Repetitions stop early when a part has used its time budget (after a
//! minimum count), so a slow engine does not make the run take forever.
//!
//! cargo runs a `harness = false` bench with `--bench`; without it (`cargo
//! test --benches`) this is a smoke run on less text that checks the
//! findings and reports no figures.
use std::collections::BTreeMap;
use std::hint::black_box;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use trigate::policy::guard::{Finding, GuardConfig, Kind, Redactor, Scanner, StreamScanner};

const MIB: usize = 1 << 20;
/// Throughput target for the one-shot scan, per core.
const TARGET_MIB_S: f64 = 200.0;
/// Target for the p50 of scan + redact on the 2 KiB prompt.
const TARGET_PROMPT_P50_US: f64 = 100.0;
const PROMPT_BYTES: usize = 2048;
const SEED: u64 = 0x7269_6761_7465_2167;

const USAGE: &str = "usage: cargo xtask bench guard [-- [--quick] [--per-detector] [--profile SECS]]\n  \
    --quick         fewer repetitions and iterations\n  \
    --per-detector  also time each built-in detector alone on the mixed text\n  \
    --profile SECS  only repeat the one-shot scan of the mixed text for SECS seconds\n                  \
    (a steady load to attach `perf record` to), then print its rate";

struct Opts {
    quick: bool,
    per_detector: bool,
    /// Seconds of one-shot scans only, for a profiler.
    profile: Option<u64>,
    /// Run by `cargo bench` (it passes `--bench`); otherwise a smoke run.
    bench: bool,
}

/// How often to repeat a measurement: at least `min` times, then until
/// `max` or until `budget` is used up.
#[derive(Clone, Copy)]
struct Reps {
    min: usize,
    max: usize,
    budget: Duration,
}

impl Reps {
    const fn new(min: usize, max: usize, budget_secs: u64) -> Reps {
        Reps {
            min,
            max,
            budget: Duration::from_secs(budget_secs),
        }
    }

    fn more(&self, done: usize, started: Instant) -> bool {
        done < self.min || (done < self.max && started.elapsed() < self.budget)
    }
}

/// How much work each part does.
struct Plan {
    corpus_bytes: usize,
    scan: Reps,
    stream: Reps,
    prompt: Reps,
    detector: Reps,
}

fn parse_args() -> Result<Opts> {
    let mut opts = Opts {
        quick: false,
        per_detector: false,
        profile: None,
        bench: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--profile" => {
                let secs = args.next().context("--profile needs a number of seconds")?;
                opts.profile = Some(
                    secs.parse()
                        .with_context(|| format!("--profile {secs:?}"))?,
                );
            }
            "--bench" => opts.bench = true,
            "--quick" => opts.quick = true,
            "--per-detector" => opts.per_detector = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(opts)
}

fn main() -> Result<()> {
    let opts = parse_args()?;
    let plan = match (opts.bench, opts.quick) {
        (false, _) => Plan {
            corpus_bytes: 64 << 10,
            scan: Reps::new(1, 1, 0),
            stream: Reps::new(1, 1, 0),
            prompt: Reps::new(20, 20, 0),
            detector: Reps::new(1, 1, 0),
        },
        (true, true) => Plan {
            corpus_bytes: MIB,
            scan: Reps::new(3, 5, 3),
            stream: Reps::new(2, 3, 3),
            prompt: Reps::new(300, 2_000, 2),
            detector: Reps::new(1, 1, 1),
        },
        (true, false) => Plan {
            corpus_bytes: MIB,
            scan: Reps::new(5, 15, 10),
            stream: Reps::new(3, 9, 10),
            prompt: Reps::new(1_000, 20_000, 8),
            detector: Reps::new(1, 3, 2),
        },
    };

    let config = GuardConfig::default();
    let scanner = Arc::new(Scanner::new(&config).context("building the default guard")?);
    let mixed = Corpus::generate(SEED, plan.corpus_bytes, 70, false);
    let clean = Corpus::generate(SEED ^ 1, plan.corpus_bytes, 0, false);
    let ascii = Corpus::generate(SEED, plan.corpus_bytes, 70, true);
    let prompt = Corpus::prompt(SEED ^ 2, false);
    let prompt_ascii = Corpus::prompt(SEED ^ 2, true);
    if let Some(secs) = opts.profile {
        let scanned = scan_throughput(&scanner, &mixed.text, Reps::new(1, 1_000_000, secs))?;
        println!(
            "one-shot scans of the mixed text for {secs} s: median {:.1} MiB/s, {} findings",
            scanned.rates.median(),
            scanned.findings.len()
        );
        return Ok(());
    }

    // 1. One-shot scans.
    let rss = PeakRss::start();
    let mixed_scan = scan_throughput(&scanner, &mixed.text, plan.scan)?;
    let scan_rss = rss.added_kib();
    let clean_scan = scan_throughput(&scanner, &clean.text, plan.scan)?;
    let ascii_scan = scan_throughput(&scanner, &ascii.text, plan.scan)?;
    let tally = Tally::of(&mixed, &mixed_scan.findings);
    if mixed_scan.findings.is_empty() || ascii_scan.findings.is_empty() {
        bail!(
            "the default guard found nothing in text with {} planted values: \
             the scanner is not scanning, so no speed is reported",
            mixed.planted.len()
        );
    }

    // 2. The 2 KiB prompts.
    let mut prompt_findings = Vec::new();
    for p in [&prompt, &prompt_ascii] {
        let findings = scanner.scan(&p.text)?;
        for kind in [Kind::Email, Kind::Phone] {
            if !findings.iter().any(|f| f.kind == kind) {
                bail!(
                    "the default guard missed the {} in the 2 KiB prompt (found: {findings:?})",
                    kind.as_str(),
                );
            }
        }
        prompt_findings.push(findings);
    }
    let latency = prompt_latency(&scanner, &prompt.text, plan.prompt)?;
    let latency_ascii = prompt_latency(&scanner, &prompt_ascii.text, plan.prompt)?;

    // 3. Streamed.
    let deltas = split_deltas(&mixed.text, SEED ^ 3);
    let one_shot = Redactor::new().redact(&mixed.text, &mixed_scan.findings);
    let rss = PeakRss::start();
    let stream = stream_throughput(&scanner, &deltas, plan.stream)?;
    let stream_rss = rss.added_kib();
    let stream_matches = stream.output == one_shot;

    if !opts.bench {
        println!(
            "guard bench smoke run ({} KiB, {} findings, stream output {} the one-shot redaction); \
             run `cargo xtask bench guard` for figures",
            plan.corpus_bytes >> 10,
            mixed_scan.findings.len(),
            if stream_matches { "equals" } else { "DIFFERS from" },
        );
        if !stream_matches {
            bail!("streamed redaction differs from the one-shot redaction");
        }
        return Ok(());
    }

    let per_detector = if opts.per_detector {
        Some(detector_costs(&mixed.text, plan.detector)?)
    } else {
        None
    };

    // Report.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let command = if args.is_empty() {
        "cargo xtask bench guard".to_owned()
    } else {
        format!("cargo xtask bench guard -- {}", args.join(" "))
    };
    let mib = |bytes: usize| bytes as f64 / MIB as f64;
    let non_ascii = |text: &str| text.chars().filter(|c| !c.is_ascii()).count();
    println!("\n$ {command}");
    println!(
        "cargo xtask bench guard — policy::guard with GuardConfig::default() ({} built-in detectors), \
         one thread, bench profile (release); text generated from seed {SEED:#x}; medians of the repetitions",
        config.detectors.len(),
    );
    println!("machine: {}", machine());
    println!(
        "mixed text: {:.2} MiB in {} blocks ({}), {} planted values ({:.1} per KiB; {} blocks with none), \
         {} non-ASCII characters; clean text: the same kinds of blocks, nothing planted; \
         ASCII-only: the mixed text's generator without its non-ASCII words",
        mib(mixed.text.len()),
        mixed.blocks.values().sum::<usize>(),
        mixed
            .blocks
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        mixed.planted.len(),
        mixed.planted.len() as f64 / (mixed.text.len() as f64 / 1024.0),
        mixed.clean_blocks,
        non_ascii(&mixed.text),
    );
    println!();
    println!("| measured | input | reps | MiB/s (median) | min–max MiB/s | findings |");
    println!("|---|---|---:|---:|---:|---:|");
    for (name, input, s) in [
        ("Scanner::scan", "mixed text, one call", &mixed_scan),
        ("Scanner::scan", "clean text, one call", &clean_scan),
        (
            "Scanner::scan",
            "ASCII-only mixed text, one call",
            &ascii_scan,
        ),
    ] {
        println!(
            "| {name} | {input} | {} | {:.1} | {:.1}–{:.1} | {} |",
            s.rates.len(),
            s.rates.median(),
            s.rates.min(),
            s.rates.max(),
            s.findings.len()
        );
    }
    println!(
        "| StreamScanner::push + finish | mixed text in {} deltas of 24–56 B | {} | {:.1} | {:.1}–{:.1} | {} |",
        deltas.len(),
        stream.rates.len(),
        stream.rates.median(),
        stream.rates.min(),
        stream.rates.max(),
        stream.findings
    );
    println!();
    println!(
        "| measured, {PROMPT_BYTES} B chat prompt (findings: {}) | iterations | p50 µs | p99 µs | mean µs |",
        prompt_findings[0]
            .iter()
            .map(|f| f.kind.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    );
    println!("|---|---:|---:|---:|---:|");
    let prompt_rows = [
        ("", non_ascii(&prompt.text), &latency),
        (", ASCII-only prompt", 0, &latency_ascii),
    ];
    for (variant, chars, l) in prompt_rows {
        let note = if chars > 0 {
            format!(" ({chars} non-ASCII characters)")
        } else {
            String::new()
        };
        for (name, samples) in [
            ("Scanner::scan", &l.scan),
            ("scan + Redactor::new + redact", &l.scan_redact),
        ] {
            println!(
                "| {name}{variant}{note} | {} | {:.1} | {:.1} | {:.1} |",
                samples.len(),
                percentile(samples, 50),
                percentile(samples, 99),
                samples.iter().sum::<f64>() / samples.len() as f64,
            );
        }
    }
    println!();
    println!("planted vs found in the mixed text (one-shot scan):");
    println!("| kind | planted | found (same kind, overlapping) | other findings of this kind |");
    println!("|---|---:|---:|---:|");
    for (kind, row) in &tally.rows {
        println!(
            "| {} | {} | {} | {} |",
            kind.as_str(),
            row.planted,
            row.found,
            row.other
        );
    }
    println!(
        "stream output equals the one-shot redaction of the same text: {}",
        if stream_matches { "yes" } else { "NO" }
    );
    let kib = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |k| format!("{k} KiB"));
    println!(
        "peak RSS added (VmHWM reset through /proc/self/clear_refs): one-shot scans of the mixed text {}, stream {}",
        kib(scan_rss),
        kib(stream_rss),
    );

    if let Some(costs) = per_detector {
        println!();
        println!(
            "each built-in detector alone on the mixed text (GuardConfig {{ detectors: [kind] }}), \
             slowest first; the prefilter pass is in every row:"
        );
        println!("| detector | ms per MiB | MiB/s | findings |");
        println!("|---|---:|---:|---:|");
        for c in costs {
            println!(
                "| {} | {:.2} | {:.0} | {} |",
                c.kind.as_str(),
                1000.0 / c.rate,
                c.rate,
                c.findings
            );
        }
    }

    println!();
    let rate = mixed_scan.rates.median();
    println!(
        "target one-shot scan ≥ {TARGET_MIB_S:.0} MiB/s per core on mixed text: median {rate:.1} MiB/s \
         ({} findings; ASCII-only {:.1} MiB/s) → {}",
        mixed_scan.findings.len(),
        ascii_scan.rates.median(),
        met(rate >= TARGET_MIB_S),
    );
    let p50 = percentile(&latency.scan_redact, 50);
    println!(
        "target scan + redact of a 2 KiB prompt p50 ≤ {TARGET_PROMPT_P50_US:.0} µs: p50 {p50:.1} µs \
         (p99 {:.1} µs; ASCII-only prompt p50 {:.1} µs) → {}",
        percentile(&latency.scan_redact, 99),
        percentile(&latency_ascii.scan_redact, 50),
        met(p50 <= TARGET_PROMPT_P50_US),
    );
    Ok(())
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// Per-repetition rates in MiB/s.
struct Rates(Vec<f64>);

impl Rates {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn median(&self) -> f64 {
        percentile(&self.0, 50)
    }
    fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.0.iter().copied().fold(0.0, f64::max)
    }
}

/// Nearest-rank percentile.
fn percentile(samples: &[f64], p: usize) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (p * v.len()).div_ceil(100).max(1);
    v[rank - 1]
}

fn mib_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / MIB as f64 / elapsed.as_secs_f64()
}

struct Scanned {
    rates: Rates,
    findings: Vec<Finding>,
}

/// One untimed warm-up scan, then the timed ones; every scan must find the
/// same.
fn scan_throughput(scanner: &Scanner, text: &str, reps: Reps) -> Result<Scanned> {
    let findings = scanner.scan(text)?;
    let mut rates = Vec::with_capacity(reps.max);
    let started = Instant::now();
    while reps.more(rates.len(), started) {
        let start = Instant::now();
        let found = scanner.scan(black_box(text))?;
        rates.push(mib_per_s(text.len(), start.elapsed()));
        if found.len() != findings.len() {
            bail!(
                "a repeated scan found {} values, the first {}",
                found.len(),
                findings.len()
            );
        }
    }
    Ok(Scanned {
        rates: Rates(rates),
        findings,
    })
}

struct Latency {
    scan: Vec<f64>,
    scan_redact: Vec<f64>,
}

/// Both measurements alternate within one loop so machine noise hits them
/// alike; samples in µs.
fn prompt_latency(scanner: &Scanner, prompt: &str, reps: Reps) -> Result<Latency> {
    for _ in 0..reps.min / 10 {
        black_box(scanner.scan(black_box(prompt))?);
    }
    let mut scan = Vec::with_capacity(reps.max);
    let mut scan_redact = Vec::with_capacity(reps.max);
    let started = Instant::now();
    while reps.more(scan.len(), started) {
        let start = Instant::now();
        black_box(scanner.scan(black_box(prompt))?);
        scan.push(start.elapsed().as_secs_f64() * 1e6);

        let start = Instant::now();
        let findings = scanner.scan(black_box(prompt))?;
        let mut redactor = Redactor::new();
        black_box(redactor.redact(prompt, &findings));
        scan_redact.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(Latency { scan, scan_redact })
}

/// `text` cut into 24 to 56 byte pieces (on character boundaries), the
/// size of SSE content deltas.
fn split_deltas(text: &str, seed: u64) -> Vec<&str> {
    let mut rng = Rng(seed);
    let mut deltas = Vec::with_capacity(text.len() / 40 + 1);
    let mut at = 0;
    while at < text.len() {
        let mut end = (at + rng.range(24, 56)).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        deltas.push(&text[at..end]);
        at = end;
    }
    deltas
}

struct Streamed {
    rates: Rates,
    findings: usize,
    /// What the first (untimed) stream sent, concatenated.
    output: String,
}

/// A gate's loop: push each delta, send what comes back, take the
/// findings as they come.
fn stream_throughput(scanner: &Arc<Scanner>, deltas: &[&str], reps: Reps) -> Result<Streamed> {
    let total: usize = deltas.iter().map(|d| d.len()).sum();
    let mut output = String::with_capacity(total + total / 8);
    let mut stream = StreamScanner::new(scanner.clone());
    for delta in deltas {
        output.push_str(&stream.push(delta)?);
    }
    output.push_str(&stream.finish());
    let findings = stream.take_findings().len();

    let mut rates = Vec::with_capacity(reps.max);
    let started = Instant::now();
    while reps.more(rates.len(), started) {
        let start = Instant::now();
        let mut stream = StreamScanner::new(scanner.clone());
        let mut found = 0;
        for delta in deltas {
            black_box(stream.push(black_box(delta))?);
            found += stream.take_findings().len();
        }
        black_box(stream.finish());
        found += stream.take_findings().len();
        rates.push(mib_per_s(total, start.elapsed()));
        if found != findings {
            bail!("a repeated stream found {found} values, the first {findings}");
        }
    }
    Ok(Streamed {
        rates: Rates(rates),
        findings,
        output,
    })
}

struct DetectorCost {
    kind: Kind,
    rate: f64,
    findings: usize,
}

/// Each built-in detector compiled alone, slowest first.
fn detector_costs(text: &str, reps: Reps) -> Result<Vec<DetectorCost>> {
    let mut costs = Vec::new();
    for kind in Kind::BUILTIN {
        let config = GuardConfig {
            detectors: vec![kind],
            ..GuardConfig::default()
        };
        let scanner = Scanner::new(&config).with_context(|| format!("building {kind:?} alone"))?;
        let scanned = scan_throughput(&scanner, text, reps)?;
        costs.push(DetectorCost {
            kind,
            rate: scanned.rates.median(),
            findings: scanned.findings.len(),
        });
    }
    costs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    Ok(costs)
}

/// Peak RSS from a starting point: resets the kernel's high-water mark.
struct PeakRss {
    base_kib: Option<u64>,
}

impl PeakRss {
    fn start() -> PeakRss {
        // "5" resets VmHWM to the current RSS (Linux ≥ 4.0).
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        PeakRss {
            base_kib: if reset { status_kib("VmRSS:") } else { None },
        }
    }

    fn added_kib(&self) -> Option<u64> {
        Some(status_kib("VmHWM:")?.saturating_sub(self.base_kib?))
    }
}

fn status_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Core count and model from /proc/cpuinfo, and the kernel release.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores (/proc/cpuinfo), {model}; Linux {}",
        kernel.trim()
    )
}

/// Planted values against findings, per kind.
struct Tally {
    rows: BTreeMap<Kind, TallyRow>,
}

#[derive(Default)]
struct TallyRow {
    planted: usize,
    /// Planted values a finding of the same kind overlaps.
    found: usize,
    /// Findings of this kind over no planted value of this kind.
    other: usize,
}

impl Tally {
    fn of(corpus: &Corpus, findings: &[Finding]) -> Tally {
        let mut rows: BTreeMap<Kind, TallyRow> = BTreeMap::new();
        let mut hit = vec![false; corpus.planted.len()];
        for (kind, _) in &corpus.planted {
            rows.entry(*kind).or_default().planted += 1;
        }
        for f in findings {
            // Planted ranges are in order and do not overlap.
            let first = corpus
                .planted
                .partition_point(|(_, r)| r.end <= f.range.start);
            let mut matched = false;
            for (i, (kind, r)) in corpus.planted.iter().enumerate().skip(first) {
                if r.start >= f.range.end {
                    break;
                }
                if *kind == f.kind {
                    hit[i] = true;
                    matched = true;
                }
            }
            if !matched {
                rows.entry(f.kind).or_default().other += 1;
            }
        }
        for (i, (kind, _)) in corpus.planted.iter().enumerate() {
            if hit[i] {
                rows.entry(*kind).or_default().found += 1;
            }
        }
        Tally { rows }
    }
}

/// SplitMix64: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// In `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn chars(&mut self, set: &[u8], n: usize) -> String {
        (0..n).map(|_| char::from(self.pick(set))).collect()
    }
}

const DIGIT: &[u8] = b"0123456789";
const HEX: &[u8] = b"0123456789abcdef";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_DIGIT: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Prose vocabulary: common English, the words of engineering and support
/// conversations (including ones the injection rules anchor on: rule,
/// prompt, policy, filter, set), a few numbers and non-ASCII words.
const WORDS: &str = "\
    the the the of of and and to to a a in in is that for it as was with be by on not this \
    are or from at which but have an they you we were there been one all their can has more \
    if will would about when what so up out into some than them only other new time could \
    these two may then do first any my now like our over such also most made after user \
    service request response model token data server client cache query update deploy \
    cluster config value error function system team customer order account report meeting \
    project release version policy rule prompt set filter limit review issue ticket please \
    thanks summary latency budget quarter revenue migration database schema index table \
    field payload endpoint header retry timeout should because before while again every \
    still without between under need want help explain write check fix test build run failed \
    works slow fast better worse large small last next week today yesterday morning invoice \
    shipment contract draft email document section paragraph translate rewrite %n %n %v café \
    naïve résumé façade über — “draft” déjà";

const IDENTS: &str = "\
    user_id total items retry_count buffer handler config request response timeout_ms \
    payload session cursor offset batch result records client pool queue tokens prompt usage \
    invoice orders events metrics span ctx state";
const CAMELS: &str = "\
    Config Request Response Handler Session OrderItem InvoiceLine RetryPolicy TokenBucket \
    UsageReport Timeout NotFound Client";
const UPPERS: &[&str] = &[
    "API_URL",
    "MAX_RETRIES",
    "DATABASE_URL",
    "LOG_LEVEL",
    "REGION",
    "BATCH_SIZE",
];
const DOMAINS: &[&str] = &[
    "acme-corp.com",
    "mail.example.org",
    "fastmail.fm",
    "gmail.com",
    "uni-heidelberg.de",
    "northwind-traders.co.uk",
    "contoso.io",
];
const FIRST_NAMES: &[&str] = &[
    "dana", "li", "omar", "sofia", "jan", "priya", "mateo", "amara", "kenji", "elena",
];
const LAST_NAMES: &[&str] = &[
    "whitfield",
    "nguyen",
    "haddad",
    "rossi",
    "kowalski",
    "sharma",
    "garcia",
    "okafor",
    "tanaka",
    "petrova",
];

/// Sentences carrying one planted value (`%E` and friends, see
/// [`Gen::fill`]).
const PROSE_PLANTS: &[&str] = &[
    "You can reach me at %E if anything is unclear.",
    "Please forward the invoice to %E before Friday.",
    "My number is %P, any time after five works.",
    "Ring me on %P when the build is green.",
    "The card on file is %C and it expires next year.",
    "Please wire the refund to %B by the end of the month.",
    "For the background check my SSN is %S.",
    "The server at %4 stopped answering around noon.",
    "I pasted the key we used in staging: %K.",
    "Here is the token from the failing request: %J",
];
const CODE_LINES: &[&str] = &[
    "    let %i = %i.iter().map(|x| x.%i * %n).sum::<u64>();",
    "    if %i.len() > %n { return Err(Error::%I); }",
    "def %i(%i, %i=%n):",
    "    return {\"%i\": %i, \"count\": %n}",
    "const %U = process.env.%U ?? \"%i\";",
    "for (let i = 0; i < %n; i++) { %i.push(i * %n); }",
    "    // TODO: handle the %i case before calling %i()",
    "curl -s \"https://api.example.com/v1/%i?limit=%n\" | jq '.items[].%i'",
    "    %i: Option<%I>,",
    "import { %I } from './%i';",
    "    assert_eq!(%i(%n), %n);",
    "SELECT %i, count(*) FROM %i WHERE created_at > now() - interval '%n days' GROUP BY 1;",
    "    match %i { Some(v) => v, None => return Ok(()) }",
    "      - name: %i\n        image: registry.example.com/%i:%v",
    "    self.%i = %I::new(%n, timeout=%f)",
];
const CODE_PLANTS: &[&str] = &[
    "    let api_key = \"%K\";",
    "export SERVICE_TOKEN=%K",
    "    client = Client(token=\"%K\", retries=%n)",
    "    contact_email = \"%E\"",
    "    \"Authorization\": \"Bearer %J\",",
    "# ping %4 before running the migration",
];
const JSON_FIELDS: &[&str] = &[
    "\"id\": %n",
    "\"request_id\": \"%u\"",
    "\"created_at\": \"%t\"",
    "\"model\": \"gpt-4o-mini\"",
    "\"usage\": {\"prompt_tokens\": %n, \"completion_tokens\": %n}",
    "\"status\": \"ok\"",
    "\"latency_ms\": %f",
    "\"version\": \"%v\"",
    "\"tags\": [\"%i\", \"%i\"]",
    "\"commit\": \"%h\"",
    "\"name\": \"%I\"",
    "\"retries\": %n",
    "\"enabled\": true",
    "\"path\": \"/v1/%i/%n\"",
];
const JSON_PLANTS: &[&str] = &[
    "\"email\": \"%E\"",
    "\"phone\": \"%P\"",
    "\"card_number\": \"%C\"",
    "\"iban\": \"%B\"",
    "\"client_ip\": \"%4\"",
    "\"api_key\": \"%K\"",
    "\"id_token\": \"%J\"",
];
const LOG_LINES: &[&str] = &[
    "%t INFO %i: handled %i in %n ms (status=200, bytes=%n)",
    "%t WARN %i: retrying %i after %n ms (attempt %n of 5)",
    "%t DEBUG cache %i hit ratio %f over %n keys",
    "%t ERROR %i: upstream returned 503 for request %u",
    "%t INFO deployed %i version %v (commit %h)",
];
const LOG_PLANTS: &[&str] = &[
    "%t INFO login ok for %E",
    "%t INFO session from %4 renewed",
    "%t WARN payment declined for card %C",
    "%t DEBUG outbound call signed with %K",
    "%t INFO sms sent to %P",
];

struct Corpus {
    text: String,
    /// Each planted value's kind and range, in order.
    planted: Vec<(Kind, Range<usize>)>,
    /// Blocks generated, by type.
    blocks: BTreeMap<&'static str, usize>,
    /// Blocks with nothing planted.
    clean_blocks: usize,
}

struct Gen {
    rng: Rng,
    out: Corpus,
    words: Vec<&'static str>,
    idents: Vec<&'static str>,
    camels: Vec<&'static str>,
}

impl Corpus {
    /// `len` bytes of blocks separated by blank lines; `dirty_percent` of
    /// them carry one or two planted values. `ascii`: prose without the
    /// vocabulary's non-ASCII words.
    fn generate(seed: u64, len: usize, dirty_percent: usize, ascii: bool) -> Corpus {
        let mut g = Gen::new(seed, ascii);
        while g.out.text.len() < len {
            let plants = if g.rng.percent(dirty_percent) {
                g.rng.range(1, 2)
            } else {
                0
            };
            if plants == 0 {
                g.out.clean_blocks += 1;
            }
            // About one private key per 150 KiB of mixed text.
            let kind = match g.rng.below(1000) {
                0..=2 if plants > 0 => g.pem_block(),
                0..=399 => g.prose(plants),
                400..=599 => g.code(plants),
                600..=799 => g.json(plants),
                _ => g.log(plants),
            };
            *g.out.blocks.entry(kind).or_default() += 1;
            g.out.text.push_str("\n\n");
        }
        let mut out = g.out;
        let mut cut = len;
        while !out.text.is_char_boundary(cut) {
            cut -= 1;
        }
        out.text.truncate(cut);
        out.planted.retain(|(_, r)| r.end <= cut);
        out
    }

    /// A 2 KiB chat prompt: a request with an email address in its first
    /// sentence and a phone number in its last, ordinary prose and a JSON
    /// snippet between.
    fn prompt(seed: u64, ascii: bool) -> Corpus {
        let mut g = Gen::new(seed, ascii);
        g.fill("Hi, I'm writing about the refund for order %n. You can reach me at %E. ");
        for _ in 0..6 {
            g.sentence();
        }
        g.out
            .text
            .push_str("\n\nHere is what the portal returned:\n\n");
        g.json(0);
        g.out.text.push_str("\n\n");
        let mut ending = Gen::new(seed ^ 0xff, ascii);
        ending.fill(" If it is easier, my number is %P. Thanks!");
        // Prose up to the ending, cut so the prompt is PROMPT_BYTES long.
        while g.out.text.len() + ending.out.text.len() < PROMPT_BYTES {
            g.sentence();
        }
        let mut cut = PROMPT_BYTES - ending.out.text.len();
        while !g.out.text.is_char_boundary(cut) {
            cut -= 1;
        }
        g.out.text.truncate(cut);
        while g.out.text.len() + ending.out.text.len() < PROMPT_BYTES {
            g.out.text.push(' ');
        }
        let base = g.out.text.len();
        g.out.text.push_str(&ending.out.text);
        g.out.planted.extend(
            ending
                .out
                .planted
                .into_iter()
                .map(|(k, r)| (k, r.start + base..r.end + base)),
        );
        g.out
    }
}

impl Gen {
    fn new(seed: u64, ascii: bool) -> Gen {
        Gen {
            rng: Rng(seed),
            words: WORDS
                .split_whitespace()
                .filter(|w| !ascii || w.is_ascii())
                .collect(),
            idents: IDENTS.split_whitespace().collect(),
            camels: CAMELS.split_whitespace().collect(),
            out: Corpus {
                text: String::new(),
                planted: Vec::new(),
                blocks: BTreeMap::new(),
                clean_blocks: 0,
            },
        }
    }

    /// Appends `template` with its markers filled: `%i` identifier, `%I`
    /// type name, `%U` constant name, `%n` number, `%f` decimal, `%u`
    /// UUID, `%h` commit hash, `%t` timestamp, `%v` version; planted:
    /// `%E` email, `%P` phone, `%C` card, `%B` IBAN, `%S` SSN, `%4` IPv4,
    /// `%K` an API key or token, `%J` JWT.
    fn fill(&mut self, template: &str) {
        let mut chars = template.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                self.out.text.push(c);
                continue;
            }
            let Some(marker) = chars.next() else {
                self.out.text.push('%');
                break;
            };
            let r = &mut self.rng;
            let filler = match marker {
                'i' => r.pick(&self.idents).to_owned(),
                'I' => r.pick(&self.camels).to_owned(),
                'U' => r.pick(UPPERS).to_owned(),
                'n' => match r.below(100) {
                    0..=49 => r.below(100).to_string(),
                    50..=84 => r.below(10_000).to_string(),
                    _ => r.below(10_000_000).to_string(),
                },
                'f' => format!("{}.{:03}", r.below(500), r.below(1000)),
                'u' => format!(
                    "{}-{}-4{}-a{}-{}",
                    r.chars(HEX, 8),
                    r.chars(HEX, 4),
                    r.chars(HEX, 3),
                    r.chars(HEX, 3),
                    r.chars(HEX, 12)
                ),
                'h' => r.chars(HEX, 40),
                't' => format!(
                    "2024-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                    r.range(1, 12),
                    r.range(1, 28),
                    r.below(24),
                    r.below(60),
                    r.below(60),
                    r.below(1000)
                ),
                'v' => format!("{}.{}.{}", r.below(4), r.below(20), r.below(30)),
                _ => {
                    self.plant(marker);
                    continue;
                }
            };
            self.out.text.push_str(&filler);
        }
    }

    fn plant(&mut self, marker: char) {
        let r = &mut self.rng;
        let (kind, value) = match marker {
            'E' => (
                Kind::Email,
                format!(
                    "{}.{}{}@{}",
                    r.pick(FIRST_NAMES),
                    r.pick(LAST_NAMES),
                    if r.percent(30) {
                        r.below(100).to_string()
                    } else {
                        String::new()
                    },
                    r.pick(DOMAINS)
                ),
            ),
            'P' => (
                Kind::Phone,
                match r.below(4) {
                    0 => format!(
                        "({}{}) {}{}-{}",
                        r.range(2, 9),
                        r.chars(DIGIT, 2),
                        r.range(2, 9),
                        r.chars(DIGIT, 2),
                        r.chars(DIGIT, 4)
                    ),
                    1 => format!(
                        "{}{}-{}{}-{}",
                        r.range(2, 9),
                        r.chars(DIGIT, 2),
                        r.range(2, 9),
                        r.chars(DIGIT, 2),
                        r.chars(DIGIT, 4)
                    ),
                    2 => format!("+44 20 {} {}", r.chars(DIGIT, 4), r.chars(DIGIT, 4)),
                    _ => format!("+49 30 {}", r.chars(DIGIT, 8)),
                },
            ),
            'C' => (Kind::CreditCard, card(r)),
            'B' => (Kind::Iban, iban(r)),
            'S' => (
                Kind::UsSsn,
                format!(
                    "{}-{:02}-{:04}",
                    r.range(100, 665),
                    r.range(1, 99),
                    r.range(1, 9999)
                ),
            ),
            '4' => (
                Kind::Ipv4,
                format!(
                    "{}.{}.{}.{}",
                    r.pick(&[10, 172, 192, 203, 52, 81]),
                    r.below(256),
                    r.below(256),
                    r.range(1, 254)
                ),
            ),
            'K' => match r.below(7) {
                0 => (
                    Kind::AwsAccessKey,
                    format!("AKIA{}", r.chars(UPPER_DIGIT, 16)),
                ),
                1 => (Kind::OpenaiKey, format!("sk-proj-{}", r.chars(ALNUM, 48))),
                2 => (
                    Kind::AnthropicKey,
                    format!("sk-ant-api03-{}", r.chars(B64URL, 80)),
                ),
                3 => (Kind::GithubToken, format!("ghp_{}", r.chars(ALNUM, 36))),
                4 => (Kind::GitlabToken, format!("glpat-{}", r.chars(ALNUM, 20))),
                5 => (
                    Kind::SlackToken,
                    format!(
                        "xoxb-{}-{}-{}",
                        r.chars(DIGIT, 12),
                        r.chars(DIGIT, 13),
                        r.chars(ALNUM, 24)
                    ),
                ),
                _ => (Kind::GoogleApiKey, format!("AIza{}", r.chars(B64URL, 35))),
            },
            'J' => {
                let claims = format!(
                    r#"{{"sub":"{}","name":"{} {}","iat":{},"scope":"read write"}}"#,
                    r.below(1_000_000),
                    r.pick(FIRST_NAMES),
                    r.pick(LAST_NAMES),
                    1_700_000_000 + r.below(50_000_000)
                );
                (
                    Kind::Jwt,
                    format!(
                        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{}.{}",
                        URL_SAFE_NO_PAD.encode(claims),
                        r.chars(B64URL, 43)
                    ),
                )
            }
            other => unreachable!("no planted value for %{other}"),
        };
        let start = self.out.text.len();
        self.out.text.push_str(&value);
        self.out.planted.push((kind, start..self.out.text.len()));
    }

    /// Whether unit `i` of `units` carries a value, `left` still to place:
    /// selection sampling, so exactly `left` of the remaining units do.
    fn take(&mut self, i: usize, units: usize, left: &mut usize) -> bool {
        if *left > 0 && self.rng.below(units - i) < *left {
            *left -= 1;
            true
        } else {
            false
        }
    }

    fn sentence(&mut self) {
        let words = self.rng.range(6, 18);
        for i in 0..words {
            let mut word = self.rng.pick(&self.words);
            if i == 0 {
                // A sentence starts with a word, not a number.
                while word.starts_with('%') {
                    word = self.rng.pick(&self.words);
                }
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    self.out.text.extend(first.to_uppercase());
                    self.out.text.push_str(chars.as_str());
                }
            } else {
                self.out.text.push(' ');
                self.fill(word);
            }
            if i + 1 < words && self.rng.percent(8) {
                self.out.text.push(',');
            }
        }
        let end = self.rng.pick(&[". ", ". ", ". ", "? ", "! "]);
        self.out.text.push_str(end);
    }

    fn prose(&mut self, plants: usize) -> &'static str {
        let units = self.rng.range(3, 8).max(plants);
        let mut left = plants;
        for i in 0..units {
            if self.take(i, units, &mut left) {
                let t = self.rng.pick(PROSE_PLANTS);
                self.fill(t);
                self.out.text.push(' ');
            } else {
                self.sentence();
            }
        }
        "prose"
    }

    fn code(&mut self, plants: usize) -> &'static str {
        let lang = self.rng.pick(&["rust", "python", "js", "sql", "yaml", ""]);
        self.out.text.push_str("```");
        self.out.text.push_str(lang);
        self.out.text.push('\n');
        let units = self.rng.range(5, 20);
        let mut left = plants;
        for i in 0..units {
            let t = if self.take(i, units, &mut left) {
                self.rng.pick(CODE_PLANTS)
            } else {
                self.rng.pick(CODE_LINES)
            };
            self.fill(t);
            self.out.text.push('\n');
        }
        self.out.text.push_str("```");
        "code"
    }

    fn json(&mut self, plants: usize) -> &'static str {
        let pretty = self.rng.percent(50);
        let units = self.rng.range(4, 10);
        let mut left = plants;
        self.out.text.push('{');
        for i in 0..units {
            let t = if self.take(i, units, &mut left) {
                self.rng.pick(JSON_PLANTS)
            } else {
                self.rng.pick(JSON_FIELDS)
            };
            if i > 0 {
                self.out.text.push(',');
            }
            self.out.text.push_str(if pretty { "\n  " } else { " " });
            self.fill(t);
        }
        self.out.text.push_str(if pretty { "\n}" } else { " }" });
        "json"
    }

    fn log(&mut self, plants: usize) -> &'static str {
        let units = self.rng.range(3, 10);
        let mut left = plants;
        for i in 0..units {
            let t = if self.take(i, units, &mut left) {
                self.rng.pick(LOG_PLANTS)
            } else {
                self.rng.pick(LOG_LINES)
            };
            self.fill(t);
            self.out.text.push('\n');
        }
        "log"
    }

    /// A PEM private key pasted into a message (the body is random, the
    /// detector looks at the shape).
    fn pem_block(&mut self) -> &'static str {
        self.out
            .text
            .push_str("The old deploy key, in case you need it:\n");
        let start = self.out.text.len();
        self.out.text.push_str("-----BEGIN RSA PRIVATE KEY-----\n");
        for _ in 0..12 {
            let line = self.rng.chars(B64, 64);
            self.out.text.push_str(&line);
            self.out.text.push('\n');
        }
        self.out.text.push_str("-----END RSA PRIVATE KEY-----");
        self.out
            .planted
            .push((Kind::PrivateKey, start..self.out.text.len()));
        "pem"
    }
}

/// A Luhn-valid Visa or Mastercard number, grouped by four with spaces or
/// dashes, or not grouped.
fn card(r: &mut Rng) -> String {
    let mut digits: Vec<u8> = if r.percent(50) {
        vec![4]
    } else {
        vec![5, r.range(1, 5) as u8]
    };
    while digits.len() < 15 {
        digits.push(r.below(10) as u8);
    }
    // Luhn: double every second digit from the right, check digit included.
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    digits.push(((10 - sum % 10) % 10) as u8);
    let sep = r.pick(&["", " ", "-"]);
    digits
        .chunks(4)
        .map(|g| g.iter().map(|d| char::from(b'0' + d)).collect::<String>())
        .collect::<Vec<_>>()
        .join(sep)
}

/// A German IBAN with correct mod-97 check digits, in print form (groups
/// of four) or compact.
fn iban(r: &mut Rng) -> String {
    let bban = r.chars(DIGIT, 18);
    // Check digits: BBAN, then the country (D=13, E=14) and "00", mod 97.
    let rem = format!("{bban}131400")
        .bytes()
        .fold(0u32, |acc, b| (acc * 10 + u32::from(b - b'0')) % 97);
    let compact = format!("DE{:02}{bban}", 98 - rem);
    if r.percent(50) {
        compact
    } else {
        compact
            .as_bytes()
            .chunks(4)
            .map(|g| String::from_utf8_lossy(g).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}
