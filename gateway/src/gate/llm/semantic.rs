//! The semantic side of the answer cache: a question worded differently
//! from one already answered gets that answer when the two are close
//! enough (cosine of their embeddings at or above the threshold).
//!
//! Only the last user turn is compared. Everything else — tenant, API,
//! model, system prompt, tools, parameters, earlier turns — goes into a
//! context hash that must match exactly, so an answer never crosses
//! tenants, system prompts or conversations. Each context holds the
//! embeddings of its answered questions and the exact-cache key of each
//! answer; the answers themselves live in the exact cache (and go when it
//! evicts them).
//!
//! Search is exact over a context's entries, in two steps that keep it
//! fast and small at 100k entries: the sign bits of each vector (64 bytes)
//! pick the candidates nearest in Hamming distance, and their 8-bit
//! quantised vectors (one byte per dimension) give the cosine that is
//! compared with the threshold.
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::cache::{hash_members, Key};
use super::front::Api;

/// The context hash a question is compared within.
pub type Context = [u8; 32];

/// Candidates rescored after the sign-bit pass.
const CANDIDATES: usize = 32;

/// What a request brings to the semantic cache: where it is compared and
/// its question's embedding.
#[derive(Debug, Clone)]
pub struct Question {
    pub context: Context,
    pub embedding: Vec<f32>,
}

/// The last user turn's text and the request's context hash (the request
/// with that turn's text left out). `None` when the request has no user
/// turn with text (nothing to compare).
pub fn question(
    tenant: &str,
    api: Api,
    stream: bool,
    request: &Value,
) -> Option<(String, Context)> {
    let mut rest = request.clone();
    let text = take_last_user_text(api, &mut rest)?;
    if text.trim().is_empty() {
        return None;
    }
    let mut hash = Sha256::new();
    hash.update(b"trigate-llm-semantic-v1\0");
    hash.update(tenant.as_bytes());
    hash.update(format!("\0{api:?}\0{stream}\0").as_bytes());
    if let Value::Object(members) = &rest {
        hash_members(&mut hash, members);
    }
    Some((text, hash.finalize().into()))
}

/// The last user turn's text (text parts joined with newlines): the
/// question topic restrictions judge.
pub fn last_user_text(api: Api, request: &Value) -> Option<String> {
    take_last_user_text(api, &mut request.clone())
}

/// Replaces the last user turn's text with `text` (a judge redacted it):
/// a string stays a string; of text parts the first takes `text` and the
/// others are emptied. `false` when there is no such turn.
pub fn set_last_user_text(api: Api, request: &mut Value, text: String) -> bool {
    let Some(turn) = last_user_turn(api, request) else {
        return false;
    };
    match turn {
        Value::String(s) => *s = text,
        Value::Array(parts) => {
            let mut text = Some(text);
            for part in parts.iter_mut() {
                if let Some(Value::String(t)) = part.get_mut("text") {
                    *t = text.take().unwrap_or_default();
                }
            }
        }
        _ => return false,
    }
    true
}

/// Removes the last user turn's text from `request` and returns it. Text
/// parts are joined with newlines.
fn take_last_user_text(api: Api, request: &mut Value) -> Option<String> {
    let turn = last_user_turn(api, request)?;
    let text = match turn {
        Value::String(s) => std::mem::take(s),
        Value::Array(parts) => {
            let mut texts = Vec::new();
            for part in parts.iter_mut() {
                if let Some(Value::String(t)) = part.get_mut("text") {
                    texts.push(std::mem::take(t));
                }
            }
            if texts.is_empty() {
                return None;
            }
            texts.join("\n")
        }
        _ => return None,
    };
    Some(text)
}

/// The content of the last user turn.
fn last_user_turn(api: Api, request: &mut Value) -> Option<&mut Value> {
    let turn: &mut Value = match api {
        Api::ChatCompletions | Api::Messages => request
            .get_mut("messages")?
            .as_array_mut()?
            .iter_mut()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?
            .get_mut("content")?,
        Api::Responses => {
            let input = request.get_mut("input")?;
            if input.is_string() {
                input
            } else {
                input
                    .as_array_mut()?
                    .iter_mut()
                    .rev()
                    .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?
                    .get_mut("content")?
            }
        }
        _ => return None,
    };
    Some(turn)
}

/// One context's answered questions, stored column by column so the
/// sign-bit pass reads one contiguous array. Entries leave from the front
/// (oldest first) by moving `start`; the columns are compacted once half
/// of them is dead.
#[derive(Default)]
struct Bucket {
    start: usize,
    keys: Vec<Key>,
    norms: Vec<f32>,
    /// `words` u64 per entry.
    signs: Vec<u64>,
    /// `dim` bytes per entry.
    quantised: Vec<i8>,
    dim: usize,
}

impl Bucket {
    fn len(&self) -> usize {
        self.keys.len() - self.start
    }

    fn words(&self) -> usize {
        self.dim.div_ceil(64)
    }

    fn push(&mut self, key: Key, v: &[f32]) {
        if self.keys.len() == self.start {
            // Empty: it takes the dimension of what comes.
            *self = Bucket {
                dim: v.len(),
                ..Bucket::default()
            };
        }
        if v.len() != self.dim {
            return;
        }
        let (signs, quantised, norm) = quantise(v);
        self.keys.push(key);
        self.norms.push(norm);
        self.signs.extend_from_slice(&signs);
        self.quantised.extend_from_slice(&quantised);
    }

    fn pop_front(&mut self) {
        if self.start >= self.keys.len() {
            return;
        }
        self.start += 1;
        if self.start >= 64 && self.start * 2 >= self.keys.len() {
            let (n, w, d) = (self.start, self.words(), self.dim);
            self.keys.drain(..n);
            self.norms.drain(..n);
            self.signs.drain(..n * w);
            self.quantised.drain(..n * d);
            self.start = 0;
        }
    }

    /// The best entry at or above `threshold` among the [`CANDIDATES`]
    /// nearest by sign agreement.
    fn find(&self, v: &[f32], threshold: f32) -> Option<(Key, f32)> {
        if v.len() != self.dim || self.len() == 0 {
            return None;
        }
        let (signs, quantised, norm) = quantise(v);
        if norm == 0.0 {
            return None;
        }
        let w = self.words();
        // The nearest by Hamming distance: a bounded max-heap of
        // (distance, index), so 100k entries cost one pass and no sort.
        let mut near: std::collections::BinaryHeap<(u32, usize)> =
            std::collections::BinaryHeap::with_capacity(CANDIDATES + 1);
        let hamming = hamming_fn();
        for (i, entry) in self.signs[self.start * w..].chunks_exact(w).enumerate() {
            let d = hamming(entry, &signs);
            if near.len() < CANDIDATES {
                near.push((d, i));
            } else if near.peek().is_some_and(|&(worst, _)| d < worst) {
                near.pop();
                near.push((d, i));
            }
        }
        near.into_iter()
            .filter_map(|(_, i)| {
                let at = self.start + i;
                let n = self.norms[at];
                if n == 0.0 {
                    return None;
                }
                let row = &self.quantised[at * self.dim..(at + 1) * self.dim];
                let cos = dot(row, &quantised) as f32 / (n * norm);
                (cos >= threshold).then_some((self.keys[at], cos))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

fn quantise(v: &[f32]) -> (Vec<u64>, Vec<i8>, f32) {
    let mut signs = vec![0u64; v.len().div_ceil(64)];
    let mut q = Vec::with_capacity(v.len());
    let mut norm = 0f32;
    for (i, x) in v.iter().enumerate() {
        if *x > 0.0 {
            signs[i / 64] |= 1 << (i % 64);
        }
        // Unit vectors: every component is within [-1, 1].
        let b = (x * 127.0).round().clamp(-127.0, 127.0) as i8;
        norm += f32::from(b) * f32::from(b);
        q.push(b);
    }
    (signs, q, norm.sqrt())
}

/// Bits that differ between two sign vectors.
fn hamming(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// The same with the POPCNT instruction, which the baseline x86-64
/// target may not assume; without it `count_ones` is a dozen shifts and
/// masks per word, most of a 100k-entry search.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn hamming_popcnt(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// [`hamming`], with POPCNT when this CPU has it (checked once).
fn hamming_fn() -> fn(&[u64], &[u64]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS_POPCNT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if *HAS_POPCNT.get_or_init(|| std::arch::is_x86_feature_detected!("popcnt")) {
            // SAFETY: only reached when the CPU reports POPCNT.
            return |a, b| unsafe { hamming_popcnt(a, b) };
        }
    }
    hamming
}

fn dot(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum()
}

/// Questions answered, per context, bounded in total.
pub struct SemanticIndex {
    inner: Mutex<Inner>,
    max_entries: usize,
}

#[derive(Default)]
struct Inner {
    contexts: HashMap<Context, Bucket>,
    /// Contexts in the order their last entry was added, for eviction.
    order: VecDeque<Context>,
    len: usize,
}

impl SemanticIndex {
    pub fn new(max_entries: usize) -> SemanticIndex {
        SemanticIndex {
            inner: Mutex::new(Inner::default()),
            max_entries: max_entries.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The closest answered question of the context at or above
    /// `threshold`: its answer's key and the similarity.
    pub fn find(&self, q: &Question, threshold: f32) -> Option<(Key, f32)> {
        let inner = self.lock();
        inner
            .contexts
            .get(&q.context)?
            .find(&q.embedding, threshold)
    }

    /// Records that `q` was answered with the answer kept under `key`.
    /// Past the bound, the oldest entries of the least recently added-to
    /// context go first.
    pub fn insert(&self, q: &Question, key: Key) {
        let mut inner = self.lock();
        let bucket = inner.contexts.entry(q.context).or_default();
        let before = bucket.len();
        bucket.push(key, &q.embedding);
        if bucket.len() == before {
            return;
        }
        inner.len += 1;
        if inner.order.back() != Some(&q.context) {
            inner.order.retain(|c| *c != q.context);
            inner.order.push_back(q.context);
        }
        while inner.len > self.max_entries {
            let Some(oldest) = inner.order.front().copied() else {
                break;
            };
            let emptied = match inner.contexts.get_mut(&oldest) {
                Some(bucket) => {
                    bucket.pop_front();
                    bucket.len() == 0
                }
                None => true,
            };
            inner.len -= 1;
            if emptied {
                inner.contexts.remove(&oldest);
                inner.order.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::embed::LocalEmbedder;
    use serde_json::json;

    fn q(tenant: &str, text: &str) -> Question {
        let request = json!({"model": "m", "messages": [
            {"role": "system", "content": "You are a tax assistant."},
            {"role": "user", "content": text}]});
        let (text, context) = question(tenant, Api::ChatCompletions, false, &request).unwrap();
        Question {
            context,
            embedding: LocalEmbedder::shared().embed(&text),
        }
    }

    #[test]
    fn the_context_leaves_out_only_the_last_user_turn() {
        let a = json!({"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}, {"role": "user", "content": "What is VAT?"}]});
        let b = json!({"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}, {"role": "user", "content": "Explain VAT"}]});
        let c = json!({"model": "m", "messages": [{"role": "user", "content": "z"}, {"role": "assistant", "content": "y"}, {"role": "user", "content": "What is VAT?"}]});
        let (ta, ca) = question("t", Api::ChatCompletions, false, &a).unwrap();
        let (_, cb) = question("t", Api::ChatCompletions, false, &b).unwrap();
        let (_, cc) = question("t", Api::ChatCompletions, false, &c).unwrap();
        assert_eq!(ta, "What is VAT?");
        assert_eq!(ca, cb, "only the question differs");
        assert_ne!(ca, cc, "another conversation is another context");
        let (_, other_tenant) = question("u", Api::ChatCompletions, false, &a).unwrap();
        assert_ne!(ca, other_tenant);
        let parts = json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]}]});
        assert_eq!(
            question("t", Api::Responses, false, &parts).unwrap().0,
            "a\nb"
        );
        assert!(question("t", Api::ChatCompletions, false, &json!({"messages": []})).is_none());
    }

    #[test]
    fn a_paraphrase_finds_the_answer_and_another_question_does_not() {
        let index = SemanticIndex::new(100);
        index.insert(&q("t", "What is the VAT rate in France?"), [1; 32]);
        index.insert(&q("t", "How do I file a tax return late?"), [2; 32]);
        let (key, score) = index
            .find(&q("t", "what's the France VAT rate"), 0.8)
            .expect("paraphrase");
        assert_eq!(key, [1; 32], "score {score}");
        assert!(index
            .find(&q("t", "What is the capital of Peru?"), 0.8)
            .is_none());
        assert!(index
            .find(&q("u", "What is the VAT rate in France?"), 0.8)
            .is_none());
    }

    #[test]
    fn the_bound_evicts_the_oldest() {
        let index = SemanticIndex::new(2);
        index.insert(&q("t", "first question about VAT"), [1; 32]);
        index.insert(&q("t", "second question about payroll"), [2; 32]);
        index.insert(&q("t", "third question about invoices"), [3; 32]);
        assert_eq!(index.len(), 2);
        assert!(index
            .find(&q("t", "first question about VAT"), 0.95)
            .is_none());
        assert!(index
            .find(&q("t", "third question about invoices"), 0.95)
            .is_some());
    }

    #[test]
    fn the_popcnt_path_counts_like_the_portable_one() {
        let a = [0u64, u64::MAX, 0x0123_4567_89ab_cdef, 1 << 63];
        let b = [u64::MAX, u64::MAX, 0xfedc_ba98_7654_3210, 1];
        assert_eq!(hamming(&a, &b), 64 + 64 + 2);
        assert_eq!(hamming_fn()(&a, &b), hamming(&a, &b));
    }

    #[test]
    fn quantised_cosine_is_close_to_the_float_one() {
        let e = LocalEmbedder::shared();
        let a = e.embed("quarterly revenue forecast for the finance team");
        let b = e.embed("finance team revenue forecast, quarterly");
        let exact = crate::policy::embed::cosine(&a, &b);
        let (_, qa, na) = quantise(&a);
        let (_, qb, nb) = quantise(&b);
        let approx = dot(&qa, &qb) as f32 / (na * nb);
        assert!((exact - approx).abs() < 0.02, "{exact} vs {approx}");
    }
}
