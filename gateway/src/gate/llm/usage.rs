//! Token use of an LLM call: read from a provider's answer, or estimated
//! from a request before it is sent.
//!
//! Limits are taken before a call on an estimate ([`estimate_prompt_tokens`]
//! plus the caller's guess of the output) and settled once the provider
//! reports what was used ([`Usage::from_openai`], [`Usage::from_anthropic`]).
//! Pure functions over JSON values: no I/O, no clock.
//!
//! Estimates use OpenAI's o200k_base tokenizer (GPT-4o, GPT-4.1, o-series).
//! Other providers' tokenizers differ (Claude's counts are typically 10–30%
//! higher for English), which is what the settling is for.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::LazyLock;

use std::fmt;

use serde::{
    de::{IgnoredAny, MapAccess, SeqAccess, Visitor},
    Deserialize, Deserializer,
};
use serde_json::Value;
use tiktoken_rs::CoreBPE;

use super::skim::{Cursor, Loose, Skim};

/// Tokens one call used, as the provider bills them.
///
/// `input` includes the cached part (`cached_input` ≤ `input`), and
/// `output` includes the reasoning part (`reasoning` ≤ `output`), as both
/// providers report them: the parts say how to price, not what to add.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, cached or not.
    pub input: u64,
    /// Completion tokens, reasoning included.
    pub output: u64,
    /// Of `input`, those read from the provider's prompt cache.
    pub cached_input: u64,
    /// Of `output`, those spent on hidden reasoning.
    pub reasoning: u64,
    /// Counted by the gateway, not reported by the provider.
    pub estimated: bool,
}

impl Usage {
    /// Input and output together.
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }

    /// From an OpenAI `usage` object, or a body that has one (a chat
    /// completion, the last chunk of a stream with `include_usage`, an
    /// embeddings answer, a Responses API answer or its `response.completed`
    /// event).
    ///
    /// Chat Completions and embeddings: `prompt_tokens`,
    /// `completion_tokens`, `prompt_tokens_details.cached_tokens`,
    /// `completion_tokens_details.reasoning_tokens`. Responses API:
    /// `input_tokens`, `output_tokens`, `input_tokens_details.cached_tokens`,
    /// `output_tokens_details.reasoning_tokens`. `None` when there is no
    /// usage (a stream chunk before the last has `"usage": null`) or it
    /// counts neither input nor output.
    pub fn from_openai(body: &Value) -> Option<Usage> {
        Counts::of(usage_object(body)?)?.openai()
    }

    /// OpenAI's four counts (`None` where the answer has none), or `None`
    /// when it counts neither input nor output. The parts are capped at
    /// their wholes.
    pub fn reported(
        input: Option<u64>,
        output: Option<u64>,
        cached: Option<u64>,
        reasoning: Option<u64>,
    ) -> Option<Usage> {
        if input.is_none() && output.is_none() {
            return None;
        }
        let input = input.unwrap_or(0);
        let output = output.unwrap_or(0);
        Some(Usage {
            input,
            output,
            cached_input: cached.unwrap_or(0).min(input),
            reasoning: reasoning.unwrap_or(0).min(output),
            estimated: false,
        })
    }

    /// From an Anthropic `usage` object, or a body that has one (a message,
    /// a `message_start` event's `message`, a `message_delta` event).
    ///
    /// Anthropic reports uncached input (`input_tokens`) apart from prompt
    /// cache reads (`cache_read_input_tokens`) and writes
    /// (`cache_creation_input_tokens`); all three are input here, and the
    /// reads are `cached_input`. Thinking is part of `output_tokens` and is
    /// not reported apart, so `reasoning` is 0. `None` when neither
    /// `input_tokens` nor `output_tokens` is there.
    ///
    /// In a stream, `message_start` has the input and a first output count,
    /// and each `message_delta` the cumulative output: the last one read
    /// is the call's output.
    pub fn from_anthropic(body: &Value) -> Option<Usage> {
        Counts::of(usage_object(body)?)?.anthropic()
    }
}

/// The counts of a `usage` object, read straight from the JSON text (an
/// answer passed on unchanged builds no tree) or from a value. Members
/// that are not counts are absent, as are unknown members.
#[derive(Debug, Default, PartialEq)]
pub struct Counts {
    prompt: Option<u64>,
    completion: Option<u64>,
    input: Option<u64>,
    output: Option<u64>,
    prompt_details: Details,
    completion_details: Details,
    input_details: Details,
    output_details: Details,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
}

/// `*_tokens_details`.
#[derive(Debug, Default, PartialEq)]
struct Details {
    cached: Option<u64>,
    reasoning: Option<u64>,
}

impl Counts {
    fn of(usage: &Value) -> Option<Counts> {
        Counts::deserialize(usage).ok()
    }

    /// OpenAI's names: Chat Completions' `prompt_tokens` and
    /// `completion_tokens`, or the Responses and embeddings APIs'
    /// `input_tokens` and `output_tokens`.
    pub fn openai(&self) -> Option<Usage> {
        let chat = self.prompt.is_some() || self.completion.is_some();
        let (input, output, cached, reasoning) = if chat {
            (
                self.prompt,
                self.completion,
                self.prompt_details.cached,
                self.completion_details.reasoning,
            )
        } else {
            (
                self.input,
                self.output,
                self.input_details.cached,
                self.output_details.reasoning,
            )
        };
        Usage::reported(input, output, cached, reasoning)
    }

    /// Anthropic's names; see [`Usage::from_anthropic`].
    pub fn anthropic(&self) -> Option<Usage> {
        if self.input.is_none() && self.output.is_none() {
            return None;
        }
        let read = self.cache_read.unwrap_or(0);
        let written = self.cache_creation.unwrap_or(0);
        Some(Usage {
            input: self
                .input
                .unwrap_or(0)
                .saturating_add(read)
                .saturating_add(written),
            output: self.output.unwrap_or(0),
            cached_input: read,
            reasoning: 0,
            estimated: false,
        })
    }
}

/// [`Counts`] and its parts read by the skim reader (`super::skim`),
/// member for member as their `Deserialize` reads them: the last of a
/// repeated member counts, what is not an object or a count reads as absent.
impl Counts {
    pub(crate) fn skim(c: &mut Cursor<'_>) -> Skim<Counts> {
        let mut out = Counts::default();
        if let Loose::Object = c.lenient()? {
            c.object(|c, name| {
                match name {
                    b"prompt_tokens" => out.prompt = skim_count(c)?,
                    b"completion_tokens" => out.completion = skim_count(c)?,
                    b"input_tokens" => out.input = skim_count(c)?,
                    b"output_tokens" => out.output = skim_count(c)?,
                    b"cache_read_input_tokens" => out.cache_read = skim_count(c)?,
                    b"cache_creation_input_tokens" => out.cache_creation = skim_count(c)?,
                    b"prompt_tokens_details" => out.prompt_details = Details::skim(c)?,
                    b"completion_tokens_details" => out.completion_details = Details::skim(c)?,
                    b"input_tokens_details" => out.input_details = Details::skim(c)?,
                    b"output_tokens_details" => out.output_details = Details::skim(c)?,
                    _ => c.skip()?,
                }
                Ok(())
            })?;
        }
        Ok(out)
    }
}

impl Details {
    fn skim(c: &mut Cursor<'_>) -> Skim<Details> {
        let mut out = Details::default();
        if let Loose::Object = c.lenient()? {
            c.object(|c, name| {
                match name {
                    b"cached_tokens" => out.cached = skim_count(c)?,
                    b"reasoning_tokens" => out.reasoning = skim_count(c)?,
                    _ => c.skip()?,
                }
                Ok(())
            })?;
        }
        Ok(out)
    }
}

/// A count: a plain integer; an object's members are skipped (serde reads
/// them by name and ignores them), anything else is absent.
fn skim_count(c: &mut Cursor<'_>) -> Skim<Option<u64>> {
    Ok(match c.lenient()? {
        Loose::Int(n) => Some(n),
        Loose::Object => {
            c.object(|c, _| c.skip())?;
            None
        }
        Loose::Other => None,
    })
}

/// The member names [`Counts`] reads.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum CountName {
    PromptTokens,
    CompletionTokens,
    InputTokens,
    OutputTokens,
    PromptTokensDetails,
    CompletionTokensDetails,
    InputTokensDetails,
    OutputTokensDetails,
    CacheReadInputTokens,
    CacheCreationInputTokens,
    CachedTokens,
    ReasoningTokens,
    #[serde(other)]
    Other,
}

/// How [`Counts`], its details and each count read themselves. Whatever
/// has another type than expected reads as the default (absent): a
/// malformed part is not an error, and the counts beside it still stand.
trait Lenient: Default {
    /// One member of an object; skipped unless the type reads it.
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        _name: CountName,
        map: &mut A,
    ) -> Result<(), A::Error> {
        map.next_value::<IgnoredAny>().map(drop)
    }

    /// A number; only a count reads one.
    fn number(_n: f64, _exact: Option<u64>) -> Self {
        Self::default()
    }
}

impl Lenient for Counts {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        name: CountName,
        map: &mut A,
    ) -> Result<(), A::Error> {
        let count = |map: &mut A| map.next_value::<Count>().map(|c| c.0);
        // A repeated member: the last one counts, as in a map.
        match name {
            CountName::PromptTokens => self.prompt = count(map)?,
            CountName::CompletionTokens => self.completion = count(map)?,
            CountName::InputTokens => self.input = count(map)?,
            CountName::OutputTokens => self.output = count(map)?,
            CountName::CacheReadInputTokens => self.cache_read = count(map)?,
            CountName::CacheCreationInputTokens => self.cache_creation = count(map)?,
            CountName::PromptTokensDetails => self.prompt_details = map.next_value()?,
            CountName::CompletionTokensDetails => self.completion_details = map.next_value()?,
            CountName::InputTokensDetails => self.input_details = map.next_value()?,
            CountName::OutputTokensDetails => self.output_details = map.next_value()?,
            _ => map.next_value::<IgnoredAny>().map(drop)?,
        }
        Ok(())
    }
}

impl Lenient for Details {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        name: CountName,
        map: &mut A,
    ) -> Result<(), A::Error> {
        match name {
            CountName::CachedTokens => self.cached = map.next_value::<Count>()?.0,
            CountName::ReasoningTokens => self.reasoning = map.next_value::<Count>()?.0,
            _ => map.next_value::<IgnoredAny>().map(drop)?,
        }
        Ok(())
    }
}

/// A non-negative integer count; a float with no fraction counts (some
/// proxies re-encode numbers), anything else is absent.
#[derive(Default)]
struct Count(Option<u64>);

impl Lenient for Count {
    fn number(f: f64, exact: Option<u64>) -> Count {
        Count(
            exact.or_else(|| {
                (f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64).then_some(f as u64)
            }),
        )
    }
}

/// The visitor behind every [`Lenient`] type.
struct Read<T>(std::marker::PhantomData<T>);

impl<'de, T: Lenient> Visitor<'de> for Read<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut out = T::default();
        while let Some(name) = map.next_key::<CountName>()? {
            out.member(name, &mut map)?;
        }
        Ok(out)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(T::default())
    }

    fn visit_u64<E>(self, n: u64) -> Result<T, E> {
        Ok(T::number(n as f64, Some(n)))
    }

    fn visit_i64<E>(self, n: i64) -> Result<T, E> {
        Ok(T::number(n as f64, u64::try_from(n).ok()))
    }

    fn visit_f64<E>(self, f: f64) -> Result<T, E> {
        Ok(T::number(f, None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_str<E>(self, _: &str) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::default())
    }
}

fn read<'de, T: Lenient, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(Read(std::marker::PhantomData))
}

impl<'de> Deserialize<'de> for Counts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Counts, D::Error> {
        read(d)
    }
}

impl<'de> Deserialize<'de> for Details {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Details, D::Error> {
        read(d)
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
        read(d)
    }
}

/// `body.usage`, `body.response.usage`, `body.message.usage`, or `body`
/// itself when it is an object without those.
fn usage_object(body: &Value) -> Option<&Value> {
    for path in [
        &["usage"][..],
        &["response", "usage"],
        &["message", "usage"],
    ] {
        match get(body, path) {
            Some(Value::Null) => return None,
            Some(u @ Value::Object(_)) => return Some(u),
            _ => {}
        }
    }
    body.is_object().then_some(body)
}

fn get<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// Tokens assumed per image: a fixed estimate, since the real count
/// depends on the image's size (and OpenAI's `detail`), which would mean
/// decoding it. 1 000 is between OpenAI's high-detail cost of a typical
/// picture (765 for 4 tiles, 1 105 for 6) and Anthropic's ~1 600 for a
/// full-size (1.15 megapixel) image; low-detail OpenAI images (85) are
/// overestimated. Settling with the provider's count corrects it.
pub const IMAGE_TOKENS: u64 = 1_000;

/// Tokens assumed per attached file that is not plain text (a PDF, audio):
/// a few pages' worth. The real count depends on the pages and is only
/// known to the provider.
pub const FILE_TOKENS: u64 = 3_000;

/// Tokens each message adds for its role and delimiters, and tokens the
/// reply's start adds once per request: OpenAI's published figures for its
/// chat format (3 and 3); Anthropic's framing is of the same size.
pub const MESSAGE_OVERHEAD: u64 = 3;
/// See [`MESSAGE_OVERHEAD`].
pub const REPLY_OVERHEAD: u64 = 3;

/// Tokenizer input is cut into pieces of at most this many bytes, at
/// whitespace where there is any. The tokenizer's pre-split regex
/// backtracks: a long run of whitespace costs ~0.7 µs a byte and at around
/// a megabyte makes tiktoken-rs panic (the regex engine's backtrack limit,
/// unwrapped inside the crate). A cut costs at most a token or two of
/// accuracy per piece.
const PIECE_BYTES: usize = 8 * 1024;

/// Bytes tokenized exactly per estimate (one [`estimate_tokens`] call, or
/// one whole request in [`estimate_prompt_tokens`]); text beyond this is
/// counted at the tokens-per-byte ratio seen so far. Bounds the CPU an
/// estimate costs (≈15 ms of prose in a release build, ≈100 ms for the
/// worst input seen) whatever a client sends; 256 KiB is ~60 000 tokens of
/// English, so most prompts are counted exactly.
const EXACT_BYTES: usize = 256 * 1024;

/// Tokens per byte assumed before any text was tokenized: the usual 4
/// bytes a token of English.
const DEFAULT_TOKENS_PER_BYTE: f64 = 0.25;

static O200K: LazyLock<CoreBPE> = LazyLock::new(|| {
    // The vocabulary is compiled into tiktoken-rs; building it cannot fail
    // short of a broken crate.
    tiktoken_rs::o200k_base().expect("tiktoken-rs's bundled o200k_base vocabulary parses")
});

/// Builds the tokenizer now rather than in the first request that needs
/// it: ~0.4 s of CPU in a release build (several seconds in a debug
/// build). Call it from a blocking thread at start-up.
pub fn warm_up() {
    LazyLock::force(&O200K);
}

/// Tokens in `text` by the o200k_base tokenizer (exactly up to 256 KiB,
/// extrapolated beyond; see the constants). CPU-bound: ~50 µs per KiB of
/// prose in a release build.
pub fn estimate_tokens(text: &str) -> u64 {
    let mut counter = Counter::new();
    counter.text(text);
    counter.total()
}

/// Tokens the prompt of an OpenAI Chat Completions request or an Anthropic
/// Messages request will take, estimated: system prompt, every message's
/// text parts, tool definitions (as their JSON, which somewhat
/// overestimates what providers render), tool calls' names and arguments,
/// tool results, a JSON `response_format` schema, plus
/// [`MESSAGE_OVERHEAD`] per message and [`REPLY_OVERHEAD`]. Images count
/// [`IMAGE_TOKENS`] each and other files [`FILE_TOKENS`]. Also takes the
/// `input` of an embeddings or Responses API request (a string, strings,
/// token arrays or message items). Parts it does not know count nothing.
pub fn estimate_prompt_tokens(body: &Value) -> u64 {
    let mut c = Counter::new();
    // Anthropic: a string or text blocks.
    if let Some(system) = body.get("system") {
        c.content(system);
    }
    // OpenAI Responses API.
    if let Some(Value::String(s)) = body.get("instructions") {
        c.text(s);
    }
    let mut messages = 0u64;
    if let Some(Value::Array(list)) = body.get("messages") {
        for m in list {
            messages += 1;
            c.message(m);
        }
    }
    match body.get("input") {
        Some(Value::String(s)) => c.text(s),
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(s) => c.text(s),
                    // A pre-tokenized embeddings input.
                    Value::Array(ids) if ids.iter().all(Value::is_number) => {
                        c.exact += ids.len() as u64;
                    }
                    Value::Array(ids) => {
                        for id in ids {
                            c.content(id);
                        }
                    }
                    Value::Object(_) => {
                        messages += 1;
                        c.message(item);
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    // Tools in either format (and OpenAI's older `functions`): the
    // definition as JSON.
    for key in ["tools", "functions"] {
        if let Some(Value::Array(tools)) = body.get(key) {
            for tool in tools {
                c.json(tool);
            }
        }
    }
    if let Some(schema) = get(body, &["response_format", "json_schema"]) {
        c.json(schema);
    }
    let overhead = if messages > 0 {
        messages
            .saturating_mul(MESSAGE_OVERHEAD)
            .saturating_add(REPLY_OVERHEAD)
    } else {
        0
    };
    c.total().saturating_add(overhead)
}

/// Adds up tokens: exactly while the byte budget lasts, then by ratio.
struct Counter {
    /// Tokens counted exactly (or fixed estimates).
    exact: u64,
    /// Bytes tokenized exactly, and the tokens they made.
    sampled_bytes: u64,
    sampled_tokens: u64,
    /// Bytes left to tokenize exactly.
    budget: usize,
    /// Bytes beyond the budget, counted by ratio at the end.
    over_budget: u64,
}

impl Counter {
    fn new() -> Counter {
        Counter {
            exact: 0,
            sampled_bytes: 0,
            sampled_tokens: 0,
            budget: EXACT_BYTES,
            over_budget: 0,
        }
    }

    fn total(&self) -> u64 {
        let ratio = if self.sampled_bytes == 0 {
            DEFAULT_TOKENS_PER_BYTE
        } else {
            self.sampled_tokens as f64 / self.sampled_bytes as f64
        };
        let extrapolated = (self.over_budget as f64 * ratio).ceil() as u64;
        self.exact
            .saturating_add(self.sampled_tokens)
            .saturating_add(extrapolated)
    }

    fn text(&mut self, text: &str) {
        let mut rest = text;
        while !rest.is_empty() && self.budget > 0 {
            let piece = split_point(rest, PIECE_BYTES.min(self.budget));
            let (now, later) = rest.split_at(piece);
            self.sampled_tokens += tokenize(now);
            self.sampled_bytes += now.len() as u64;
            // A piece may be one character over a nearly spent budget.
            self.budget = self.budget.saturating_sub(now.len());
            rest = later;
        }
        self.over_budget += rest.len() as u64;
    }

    fn json(&mut self, v: &Value) {
        // Serialising a Value cannot fail.
        self.text(&serde_json::to_string(v).unwrap_or_default());
    }

    /// One message or Responses input item, in either provider's format.
    fn message(&mut self, m: &Value) {
        // Responses API items that are not messages.
        match m.get("type").and_then(Value::as_str) {
            Some("function_call") => return self.function_call(m),
            Some("function_call_output") => {
                if let Some(out) = m.get("output") {
                    self.content(out);
                }
                return;
            }
            _ => {}
        }
        if let Some(Value::String(name)) = m.get("name") {
            self.text(name);
        }
        if let Some(content) = m.get("content") {
            self.content(content);
        }
        // OpenAI assistant tool calls, and the older single function call.
        if let Some(Value::Array(calls)) = m.get("tool_calls") {
            for call in calls {
                if let Some(f) = call.get("function") {
                    self.function_call(f);
                }
            }
        }
        if let Some(f) = m.get("function_call") {
            self.function_call(f);
        }
    }

    fn function_call(&mut self, f: &Value) {
        if let Some(Value::String(name)) = f.get("name") {
            self.text(name);
        }
        match f.get("arguments") {
            Some(Value::String(args)) => self.text(args),
            Some(other) => self.json(other),
            None => {}
        }
    }

    /// Message content: a string, or a list of parts/blocks.
    fn content(&mut self, content: &Value) {
        match content {
            Value::String(s) => self.text(s),
            Value::Array(parts) => {
                for part in parts {
                    self.part(part);
                }
            }
            _ => {}
        }
    }

    fn part(&mut self, part: &Value) {
        let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            // OpenAI `image_url`, Anthropic `image`, Responses `input_image`.
            "image_url" | "image" | "input_image" => self.exact += IMAGE_TOKENS,
            // Anthropic tool call: the name and the input as JSON.
            "tool_use" | "server_tool_use" => {
                if let Some(Value::String(name)) = part.get("name") {
                    self.text(name);
                }
                if let Some(input) = part.get("input") {
                    self.json(input);
                }
            }
            "tool_result" => {
                if let Some(c) = part.get("content") {
                    self.content(c);
                }
            }
            "thinking" => {
                if let Some(Value::String(t)) = part.get("thinking") {
                    self.text(t);
                }
            }
            // Anthropic documents with a text source are text; other
            // documents and files (PDF, audio) get the fixed estimate.
            "document" => match get(part, &["source", "type"]).and_then(Value::as_str) {
                Some("text") => {
                    if let Some(Value::String(t)) = get(part, &["source", "data"]) {
                        self.text(t);
                    }
                }
                Some("content") => {
                    if let Some(c) = get(part, &["source", "content"]) {
                        self.content(c);
                    }
                }
                _ => self.exact += FILE_TOKENS,
            },
            "file" | "input_file" | "input_audio" => self.exact += FILE_TOKENS,
            // `text`, `input_text`, `output_text` and anything else with
            // text in it.
            _ => {
                if let Some(Value::String(t)) = part.get("text") {
                    self.text(t);
                }
            }
        }
    }
}

/// How many bytes of `text` (at most `max`, at least one character) to
/// tokenize next: up to the last whitespace in the second half of the
/// window, so that words stay whole, else at a character boundary.
fn split_point(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if end == 0 {
        // `max` is shorter than the first character.
        return text.chars().next().map_or(text.len(), char::len_utf8);
    }
    let mut half = end / 2;
    while !text.is_char_boundary(half) {
        half += 1;
    }
    match text[half..end].rfind(char::is_whitespace) {
        // The whitespace starts the next piece: the tokenizer attaches a
        // leading space to the word after it.
        Some(i) if half + i > 0 => half + i,
        _ => end,
    }
}

fn tokenize(piece: &str) -> u64 {
    // Pieces are short enough that the tokenizer's regex does not give up
    // (see PIECE_BYTES); should it panic anyway, 4 bytes a token is the
    // answer rather than a failed request.
    catch_unwind(AssertUnwindSafe(|| {
        O200K.encode_ordinary(piece).len() as u64
    }))
    .unwrap_or_else(|_| (piece.len() as u64).div_ceil(4))
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
