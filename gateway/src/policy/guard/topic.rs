//! Topic restrictions: does a text touch a topic the operator named ("a
//! finance agent may not ask for legal advice")? A topic is given by
//! keywords (whole words or phrases, cheap and exact) and by example
//! sentences matched with embedding similarity (catches the paraphrases no
//! keyword list anticipates).
//!
//! Pure values and functions: a [`TopicMatcher`] is compiled once from a
//! list of [`TopicConfig`] (the examples are embedded then) and shared;
//! [`TopicMatcher::classify`] returns which topics a text touches and how
//! — never the text that matched, so a hit can go into logs and metric
//! labels as it is. What to do about a hit (refuse, log) is the caller's.
//!
//! How similarity is measured: the text is cut into chunks — sentences
//! (a fragment under four words joined to the next), long ones into
//! half-overlapping windows of 320 bytes — and each chunk, plus the whole
//! text when it is a few sentences, is embedded with the built-in local
//! embedding ([`Weights::TOPICAL`](crate::policy::embed::Weights::TOPICAL),
//! where a word's subject weighs most). A topic's score is the highest
//! cosine of any chunk with any example or with the examples' centroid
//! (their common direction, which is mostly the subject). So a long prompt
//! that asks a finance question and then a legal one still hits "legal":
//! the legal sentence alone is far closer to the legal examples than the
//! whole prompt is. Every chunk is looked at, so the cost is linear in the
//! text with no cap that a long preamble could hide a question behind
//! (about 0.4 ms of CPU for a 2 KiB prompt in a release build; callers
//! bound the text as they do for scans, with `max_scan_bytes`).
//!
//! What it misses: a question whose topic shows in no word the embedding
//! knows ("who pays if my dog bites the neighbour?" is a liability question
//! without a legal word), and rewording that avoids the subject's words.
//! On labelled questions it caught about nine legal questions in ten with
//! ten examples and two finance or other questions in a hundred (see
//! `topic_tests.rs`); more examples, and keywords for the terms that must
//! never pass, close the gap for a given workload.

use std::collections::HashMap;
use std::sync::Arc;

use regex::{RegexSet, RegexSetBuilder};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::config::{keyword_pattern, name_problem, BuildError, CUSTOM_REGEX_SIZE_LIMIT};
use crate::policy::embed::LocalEmbedder;

/// Cosine similarity at or above which a text is taken to be on a topic,
/// unless the topic sets its own. Calibrated with the built-in local
/// embedding ([`Weights::TOPICAL`](crate::policy::embed::Weights::TOPICAL))
/// on 270 labelled questions (`testdata/topics_tuning.jsonl`, a "legal
/// advice" topic of ten examples): on-topic questions that share a domain
/// with the examples score 0.4–0.9, off-topic ones mostly under 0.1, and
/// the last gap between them on that set ran from 0.35 to 0.39.
pub const DEFAULT_TOPIC_THRESHOLD: f32 = 0.37;

/// Examples per topic: each is compared with every chunk of every text.
pub const MAX_TOPIC_EXAMPLES: usize = 256;

/// A chunk with fewer words is joined to the next sentence: a two-word
/// fragment ("Thanks.", "e.g.") has too few features for its cosine to
/// mean anything.
const MIN_CHUNK_WORDS: usize = 4;

/// Longer sentences are cut into windows of this many bytes (half
/// overlapping), so one long run-on sentence cannot dilute a question
/// inside it.
const MAX_CHUNK_BYTES: usize = 320;

/// Up to this many chunks, the whole text is compared too.
const MAX_WHOLE_CHUNKS: usize = 8;

/// One restricted (or watched) topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    /// Names the topic in hits, logs and metrics. `[A-Za-z0-9_-]`, at most
    /// 48 characters.
    pub name: String,
    /// Words or phrases matched case-insensitively as whole words; spaces
    /// inside a phrase match any run of whitespace. A keyword match is a
    /// hit whatever the similarity.
    pub keywords: Vec<String>,
    /// Example sentences of the topic, as a user would write them. A text
    /// hits the topic when it, or one of its sentences, is at least
    /// `threshold` similar to one of them. Several short, varied examples
    /// work better than one long one.
    pub examples: Vec<String>,
    /// Cosine similarity (0 to 1] from which a text counts as on-topic.
    /// Lower catches more paraphrases and more false alarms.
    pub threshold: f32,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            name: String::new(),
            keywords: Vec::new(),
            examples: Vec::new(),
            threshold: DEFAULT_TOPIC_THRESHOLD,
        }
    }
}

impl TopicConfig {
    /// Problems with this topic, as messages naming the field (`field` is
    /// where it sits, e.g. `llm.guard.topics[0]`). Empty when it builds.
    pub fn validate(&self, field: &str) -> Vec<String> {
        let mut errors = Vec::new();
        errors.extend(name_problem(&self.name, field));
        if self.keywords.is_empty() && self.examples.is_empty() {
            errors.push(format!(
                "{field}: set keywords or examples (or both); a topic with neither never matches"
            ));
        }
        for (k, word) in self.keywords.iter().enumerate() {
            if word.trim().is_empty() {
                errors.push(format!("{field}.keywords[{k}] is blank"));
            }
        }
        if self.keywords.iter().any(|w| !w.trim().is_empty()) {
            if let Err(e) = compile_keywords(std::slice::from_ref(&self.keywords)) {
                errors.push(format!("{field}.keywords: {e}"));
            }
        }
        if self.examples.len() > MAX_TOPIC_EXAMPLES {
            errors.push(format!(
                "{field}.examples has {} sentences; at most {MAX_TOPIC_EXAMPLES} (each is compared with every sentence of every text)",
                self.examples.len()
            ));
        }
        let embedder = LocalEmbedder::topical();
        for (k, example) in self.examples.iter().enumerate() {
            if example.trim().is_empty() {
                errors.push(format!("{field}.examples[{k}] is blank"));
            } else if embedder.embed(example).iter().all(|x| *x == 0.0) {
                errors.push(format!(
                    "{field}.examples[{k}] {example:?} has no word the embedding uses (only common words or symbols); write a sentence of the topic"
                ));
            }
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            errors.push(format!(
                "{field}.threshold {} must be above 0 and at most 1 (a cosine similarity; the default is {DEFAULT_TOPIC_THRESHOLD})",
                self.threshold
            ));
        }
        errors
    }
}

/// [`TopicConfig::validate`] for a list, plus names used twice (compared
/// case-insensitively, as metric labels would collide).
pub fn validate_topics(topics: &[TopicConfig], field: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let mut seen = HashMap::new();
    for (i, topic) in topics.iter().enumerate() {
        let at = format!("{field}[{i}]");
        errors.extend(topic.validate(&at));
        if topic.name.is_empty() {
            continue;
        }
        if let Some(first) = seen.insert(topic.name.to_ascii_lowercase(), i) {
            errors.push(format!(
                "{at}.name {:?} is used twice, also in {field}[{first}]",
                topic.name
            ));
        }
    }
    errors
}

/// How a text touched a topic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TopicMatch {
    /// One of the topic's keywords occurs.
    Keyword,
    /// The closest chunk–example pair had this cosine similarity (at or
    /// above the topic's threshold).
    Similarity { score: f32 },
}

/// One topic a text touched. Carries no text from the input.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicHit {
    pub topic: Arc<str>,
    /// Position of the topic in the list the matcher was built from.
    pub index: usize,
    pub by: TopicMatch,
}

struct Topic {
    name: Arc<str>,
    threshold: f32,
    examples: Vec<Vec<f32>>,
}

/// Topics compiled from their configs; build once, share (`Send + Sync`),
/// classify many times.
pub struct TopicMatcher {
    topics: Vec<Topic>,
    /// One pass over the text for every topic's keywords; set pattern →
    /// topic index.
    keywords: Option<(RegexSet, Vec<usize>)>,
    embedder: &'static LocalEmbedder,
}

impl std::fmt::Debug for TopicMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicMatcher")
            .field(
                "topics",
                &self.topics.iter().map(|t| &*t.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl TopicMatcher {
    /// Validates the topics (errors name `topics[i]`) and embeds their
    /// examples with the built-in local embedding.
    pub fn new(configs: &[TopicConfig]) -> Result<TopicMatcher, BuildError> {
        let problems = validate_topics(configs, "topics");
        if !problems.is_empty() {
            return Err(BuildError { problems });
        }
        let embedder = LocalEmbedder::topical();
        let mut patterns = Vec::new();
        let mut owners = Vec::new();
        let mut topics = Vec::new();
        for (i, config) in configs.iter().enumerate() {
            if !config.keywords.is_empty() {
                patterns.push(config.keywords.clone());
                owners.push(i);
            }
            let mut examples: Vec<Vec<f32>> =
                config.examples.iter().map(|e| embedder.embed(e)).collect();
            if examples.len() > 1 {
                examples.push(centroid(&examples));
            }
            topics.push(Topic {
                name: Arc::from(config.name.as_str()),
                threshold: config.threshold,
                examples,
            });
        }
        let keywords = if patterns.is_empty() {
            None
        } else {
            let set = compile_keywords(&patterns).map_err(|e| BuildError {
                problems: vec![format!("topics keywords together: {e}")],
            })?;
            Some((set, owners))
        };
        Ok(TopicMatcher {
            topics,
            keywords,
            embedder,
        })
    }

    /// The topics `text` touches, in the order they were configured, each
    /// at most once. Keywords are checked first; a topic hit by a keyword
    /// is not embedded for.
    pub fn classify(&self, text: &str) -> Vec<TopicHit> {
        let mut by_keyword = vec![false; self.topics.len()];
        if let Some((set, owners)) = &self.keywords {
            for m in set.matches(text).iter() {
                by_keyword[owners[m]] = true;
            }
        }
        let wanted: Vec<bool> = self
            .topics
            .iter()
            .zip(&by_keyword)
            .map(|(t, k)| !k && !t.examples.is_empty())
            .collect();
        let scores = if wanted.contains(&true) {
            self.scores_for(text, &wanted)
        } else {
            vec![0.0; self.topics.len()]
        };
        let mut hits = Vec::new();
        for (i, topic) in self.topics.iter().enumerate() {
            let by = if by_keyword[i] {
                TopicMatch::Keyword
            } else if wanted[i] && scores[i] >= topic.threshold {
                TopicMatch::Similarity { score: scores[i] }
            } else {
                continue;
            };
            hits.push(TopicHit {
                topic: topic.name.clone(),
                index: i,
                by,
            });
        }
        hits
    }

    /// For each topic, the highest similarity of any chunk of `text` (or
    /// the whole) to any of its examples; 0 for a topic without examples.
    /// What [`classify`](Self::classify) compares with the thresholds, for
    /// calibrating them.
    pub fn similarity(&self, text: &str) -> Vec<f32> {
        self.scores_for(text, &vec![true; self.topics.len()])
    }

    fn scores_for(&self, text: &str, wanted: &[bool]) -> Vec<f32> {
        let mut best = vec![0.0f32; self.topics.len()];
        let pieces = chunks(text);
        // The whole text as well, when it is a few sentences: a question
        // spread over them ("I signed a lease. The landlord now wants
        // more. What can I do?"). A long text as a whole is about many
        // things and close to none; its sentences are what count.
        let whole = (2..=MAX_WHOLE_CHUNKS)
            .contains(&pieces.len())
            .then_some(text);
        for piece in pieces.iter().copied().chain(whole) {
            let v = self.embedder.embed(piece);
            if v.iter().all(|x| *x == 0.0) {
                continue;
            }
            for (i, topic) in self.topics.iter().enumerate() {
                if !wanted[i] {
                    continue;
                }
                for example in &topic.examples {
                    best[i] = best[i].max(unit_cosine(&v, example));
                }
            }
        }
        best
    }
}

/// Cosine of two vectors of length 1 (or 0, from a text without content
/// words): their dot product. What every embedding and the centroid are.
fn unit_cosine(a: &[f32], b: &[f32]) -> f32 {
    // Eight running sums, added in a fixed order: the compiler can keep
    // them in one vector register (one long chain of float additions
    // cannot be reordered), and the result stays the same everywhere.
    let mut lanes = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    let sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
        + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
        + tail;
    sum.clamp(-1.0, 1.0)
}

/// The normalised mean of the examples: what they have in common (the
/// topic's domain and synonym features) adds up, what each says alone
/// averages out.
fn centroid(examples: &[Vec<f32>]) -> Vec<f32> {
    let mut mean = vec![0.0f32; examples[0].len()];
    for e in examples {
        for (m, x) in mean.iter_mut().zip(e) {
            *m += x;
        }
    }
    let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for m in &mut mean {
            *m /= norm;
        }
    }
    mean
}

/// Compiles keyword lists into one set, one pattern per list.
fn compile_keywords(lists: &[Vec<String>]) -> Result<RegexSet, String> {
    RegexSetBuilder::new(lists.iter().map(|words| keyword_pattern(words)))
        .size_limit(CUSTOM_REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| e.to_string())
}

/// The spans of `text` that are compared with the examples: sentences
/// (ended by . ! ? ; a line break, or their CJK forms), a sentence of
/// fewer than [`MIN_CHUNK_WORDS`] words joined to the next, and a span
/// longer than [`MAX_CHUNK_BYTES`] cut into half-overlapping windows that
/// end at whitespace where there is some.
pub(super) fn chunks(text: &str) -> Vec<&str> {
    let mut sentences: Vec<&str> = Vec::new();
    let mut start = 0;
    // Words since `start`, counted as we go: recounting the span at every
    // terminator would be quadratic in a text of dots.
    let mut words = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            in_word = false;
        } else if !in_word {
            in_word = true;
            words += 1;
        }
        let terminator = matches!(c, '.' | '!' | '?' | ';' | '\n' | '。' | '！' | '？' | '；');
        if terminator && words >= MIN_CHUNK_WORDS {
            let end = i + c.len_utf8();
            sentences.push(&text[start..end]);
            start = end;
            words = 0;
            in_word = false;
        }
    }
    let tail = &text[start..];
    if words >= MIN_CHUNK_WORDS {
        sentences.push(tail);
    } else if let Some(last) = sentences.last_mut() {
        // A short tail ("Thanks!") joins the sentence before it, which
        // ends where the tail starts.
        let last_start = start - last.len();
        *last = &text[last_start..];
    } else if !tail.trim().is_empty() {
        sentences.push(tail);
    }
    let mut out = Vec::with_capacity(sentences.len());
    for s in sentences {
        let s = s.trim();
        if s.is_empty() {
            continue;
        }
        let mut from = 0;
        loop {
            let end = window_end(s, from);
            out.push(&s[from..end]);
            if end == s.len() {
                break;
            }
            // The next window starts halfway through this one, at a word
            // start if one is near.
            from = next_start(s, from + (end - from) / 2, end).max(ceil_char(s, from + 1));
        }
    }
    out
}

/// End of a window starting at `from` (a char boundary): the end of `s`
/// if it is within MAX_CHUNK_BYTES, else at most that far on, pulled back
/// to the last whitespace in the window's second half if there is one.
fn window_end(s: &str, from: usize) -> usize {
    let limit = from + MAX_CHUNK_BYTES;
    if limit >= s.len() {
        return s.len();
    }
    let end = floor_char(s, limit);
    let half = floor_char(s, from + MAX_CHUNK_BYTES / 2).max(from);
    match s[half..end].rfind(char::is_whitespace) {
        Some(ws) if half + ws > from => half + ws,
        _ => end,
    }
}

/// The first word start after the whitespace that follows `at`, looking
/// at most a quarter window ahead and not past `end` (the current
/// window's end, so no text falls between two windows); `at` itself,
/// rounded up to a char boundary, when there is none (text without
/// spaces).
fn next_start(s: &str, at: usize, end: usize) -> usize {
    let at = ceil_char(s, at);
    let horizon = ceil_char(s, at + MAX_CHUNK_BYTES / 4).min(end);
    if horizon <= at {
        return at;
    }
    let next = s[at..horizon].find(char::is_whitespace).and_then(|ws| {
        let after = at + ws;
        s[after..horizon]
            .find(|c: char| !c.is_whitespace())
            .map(|n| after + n)
    });
    next.unwrap_or(at)
}

fn floor_char(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}
