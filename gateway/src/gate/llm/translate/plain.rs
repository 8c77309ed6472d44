//! Plain Anthropic Messages calls served by an OpenAI-compatible provider
//! — text turns in, text out, no tools — translated text to text, with no
//! JSON tree built on either side.
//!
//! Why: in `cargo xtask bench llm` profiles the tree translation (the
//! client's body as a tree, its translation, written out; the provider's
//! answer as a tree, its translation, written out) cost about 4.5 µs per
//! call, most of what Anthropic in spent above OpenAI in.
//!
//! The contract: where these functions answer, they give what the tree
//! translation ([`super::anthropic_request_to_openai`],
//! [`super::openai_response_to_anthropic`]) gives for the same input. A
//! body they do not fully read — tools, content blocks, images, metadata,
//! stop sequences, a refusal, a null, a member given twice, a wrong type —
//! is declined (`None`) and goes the tree way, which also names the field
//! of any error. The tests hold them to this on every golden input, and on
//! each with every node replaced by each JSON type.
use std::marker::PhantomData;

use serde::de::{
    Deserialize, DeserializeOwned, Deserializer, Error, IgnoredAny, MapAccess, Visitor,
};
use serde_json::Number;

use super::{json::Text, response::stop_reason};
use crate::gate::llm::{
    request::{write_json, ClientRequest, MemberText},
    skim::{self, Cursor, Skim, Unsure},
    usage::Usage,
};

/// An Anthropic request as the OpenAI Chat Completions body for `model`
/// (with `stream_options.include_usage` when `stream`), or `None` when it
/// is not plain.
pub fn anthropic_request_to_openai(
    req: &ClientRequest<'_>,
    model: &str,
    stream: bool,
) -> Option<Vec<u8>> {
    let mut named = None;
    let mut system = None;
    let mut messages: Option<Vec<Obj<Turn>>> = None;
    let mut max_tokens = None;
    let mut temperature = None;
    let mut top_p = None;
    let mut stream_member = None;
    for (name, value) in req.members() {
        match name {
            // The provider gets `model`; the client's only has to be a name.
            "model" => put(&mut named, parse::<Text>(&value)?)?,
            "system" => put(&mut system, parse::<Text>(&value)?)?,
            "messages" => put(&mut messages, parse(&value)?)?,
            "max_tokens" => put(&mut max_tokens, read::<u64>(&value)?)?,
            "temperature" => put(&mut temperature, read::<Number>(&value)?)?,
            "top_p" => put(&mut top_p, read::<Number>(&value)?)?,
            "stream" => put(&mut stream_member, read::<bool>(&value)?)?,
            _ => return None,
        }
    }
    let messages = messages.filter(|m| !m.is_empty())?;

    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(br#"{"model":"#);
    write_json(&mut out, model);
    out.extend_from_slice(br#","messages":["#);
    if let Some(system) = &system {
        out.extend_from_slice(br#"{"role":"system","content":"#);
        write_json(&mut out, system.as_str());
        out.push(b'}');
    }
    for (i, Obj(turn)) in messages.iter().enumerate() {
        let role = match turn.role.as_ref()?.as_str() {
            "user" => "user",
            "assistant" => "assistant",
            _ => return None,
        };
        if i > 0 || system.is_some() {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"role":"#);
        write_json(&mut out, role);
        out.extend_from_slice(br#","content":"#);
        write_json(&mut out, turn.content.as_ref()?.as_str());
        out.push(b'}');
    }
    out.push(b']');
    // Not the deprecated max_tokens, as in the tree translation.
    if let Some(n) = max_tokens {
        out.extend_from_slice(br#","max_completion_tokens":"#);
        write_json(&mut out, &n);
    }
    for (name, value) in [("temperature", &temperature), ("top_p", &top_p)] {
        if let Some(n) = value {
            out.push(b',');
            write_json(&mut out, name);
            out.push(b':');
            write_json(&mut out, n);
        }
    }
    if let Some(s) = stream_member {
        out.extend_from_slice(br#","stream":"#);
        write_json(&mut out, &s);
    }
    if stream {
        // The Anthropic stream reports usage at its end: ask for it.
        out.extend_from_slice(br#","stream_options":{"include_usage":true}"#);
    }
    out.push(b'}');
    Some(out)
}

/// A provider's answer in Anthropic's shape, with what accounting reads.
#[derive(Debug)]
pub struct Answer {
    pub body: Vec<u8>,
    pub usage: Usage,
    pub stop_reason: &'static str,
}

/// An OpenAI `chat.completion` as an Anthropic message reporting `model`,
/// or `None` when it is not plain or reports no usage (then the tree way
/// estimates it).
pub fn openai_answer_to_anthropic(answer: &[u8], model: &str) -> Option<Answer> {
    let read = match skim_completion(answer) {
        Ok(read) => read,
        // Not certain to read as serde_json would: serde_json reads it.
        Err(Unsure) => serde_completion(answer)?,
    };
    read.translate(model)
}

/// What the translation of an answer takes from it.
pub(super) struct Completion<'a> {
    id: Str<'a>,
    /// The first choice's message's content, when not null.
    content: Option<Str<'a>>,
    stop_reason: &'static str,
    /// A refusal that is not null, or tool calls.
    not_plain: bool,
    prompt: Option<u64>,
    completion: Option<u64>,
    cached: Option<u64>,
    reasoning: Option<u64>,
}

/// A string of the answer: decoded by serde_json, or as it stands in the
/// answer's text (see [`Cursor::json_string`]), which means the same
/// string written out again.
enum Str<'a> {
    Decoded(Text<'a>),
    Json(&'a [u8]),
}

impl Str<'_> {
    fn is_empty(&self) -> bool {
        match self {
            Str::Decoded(t) => t.as_str().is_empty(),
            // An escape is never empty.
            Str::Json(raw) => raw.is_empty(),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Str::Decoded(t) => write_json(out, t.as_str()),
            Str::Json(raw) => {
                out.push(b'"');
                out.extend_from_slice(raw);
                out.push(b'"');
            }
        }
    }
}

impl Completion<'_> {
    pub(super) fn translate(self, model: &str) -> Option<Answer> {
        if self.not_plain {
            return None;
        }
        // Accounting reads the Chat Completions names, as for an answer
        // passed on untranslated. Without them (`None`) it would read the
        // Responses API's names: the tree way.
        let usage = Usage::reported(self.prompt, self.completion, self.cached, self.reasoning)?;
        let (prompt, completion, cached) = (
            self.prompt.unwrap_or(0),
            self.completion.unwrap_or(0),
            self.cached.unwrap_or(0),
        );
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(br#"{"id":"#);
        self.id.write(&mut out);
        out.extend_from_slice(br#","type":"message","role":"assistant","model":"#);
        write_json(&mut out, model);
        out.extend_from_slice(br#","content":["#);
        if let Some(text) = self.content.filter(|t| !t.is_empty()) {
            out.extend_from_slice(br#"{"type":"text","text":"#);
            text.write(&mut out);
            out.push(b'}');
        }
        out.extend_from_slice(br#"],"stop_reason":"#);
        write_json(&mut out, self.stop_reason);
        // OpenAI does not say which stop sequence matched; Anthropic's
        // `input_tokens` leaves out the cached part (see `anthropic_usage`).
        out.extend_from_slice(br#","stop_sequence":null,"usage":{"input_tokens":"#);
        write_json(&mut out, &prompt.saturating_sub(cached));
        out.extend_from_slice(br#","output_tokens":"#);
        write_json(&mut out, &completion);
        out.extend_from_slice(br#","cache_read_input_tokens":"#);
        write_json(&mut out, &cached);
        out.extend_from_slice(br#","cache_creation_input_tokens":0}}"#);
        Some(Answer {
            body: out,
            usage,
            stop_reason: self.stop_reason,
        })
    }
}

/// The answer read by serde_json, visiting only what is kept.
pub(super) fn serde_completion(answer: &[u8]) -> Option<Completion<'_>> {
    let Obj(a) = serde_json::from_slice::<Obj<CompletionMembers>>(answer).ok()?;
    // Only the first choice is read: requests with n > 1 are refused.
    let Obj(choice) = a.choices?.into_iter().next()?;
    let Obj(message) = choice.message?;
    let stop_reason = stop_reason(choice.finish_reason?.as_str()).ok()?;
    let no_calls = message.tool_calls.flatten().is_none_or(|c| c.is_empty());
    let Obj(counts) = a.usage.flatten()?;
    let detail = |d: Option<Option<Obj<Details>>>, pick: fn(Details) -> Option<Option<u64>>| {
        d.flatten().and_then(|Obj(d)| pick(d).flatten())
    };
    Some(Completion {
        id: Str::Decoded(a.id?),
        content: message.content.flatten().map(Str::Decoded),
        stop_reason,
        not_plain: message.refusal.flatten().is_some() || !no_calls,
        prompt: counts.prompt_tokens.flatten(),
        completion: counts.completion_tokens.flatten(),
        cached: detail(counts.prompt_tokens_details, |d| d.cached_tokens),
        reasoning: detail(counts.completion_tokens_details, |d| d.reasoning_tokens),
    })
}

/// The answer read in one pass over its text ([`crate::gate::llm::skim`]),
/// where that is certain to read what [`serde_completion`] reads: each
/// member where serde reads it, at most once, of the type serde takes.
/// Anything else — a refusal, tool calls, a null where serde wants a
/// string, a count that is not a plain integer, a `\u` escape in a
/// string written out again — is left to serde (`Unsure`).
pub(super) fn skim_completion(answer: &[u8]) -> Skim<Completion<'_>> {
    let mut c = Cursor::new(answer);
    let (mut id, mut first, mut usage) = (None, None, None);
    let mut seen = [false; 3];
    c.object(|c, name| {
        match name {
            b"id" => {
                skim::once(&mut seen[0])?;
                id = Some(c.json_string()?);
            }
            b"choices" => {
                skim::once(&mut seen[1])?;
                c.array(|c| {
                    let choice = skim_choice(c)?;
                    first.get_or_insert(choice);
                    Ok(())
                })?;
            }
            b"usage" => {
                skim::once(&mut seen[2])?;
                usage = Some(skim_usage(c)?);
            }
            _ => c.skip()?,
        }
        Ok(())
    })?;
    c.end()?;
    let ((content, finish), counts) = (first.ok_or(Unsure)?, usage.ok_or(Unsure)?);
    let finish = std::str::from_utf8(finish).map_err(|_| Unsure)?;
    Ok(Completion {
        id: Str::Json(id.ok_or(Unsure)?),
        content: content.map(Str::Json),
        stop_reason: stop_reason(finish).map_err(|_| Unsure)?,
        not_plain: false,
        prompt: counts[0],
        completion: counts[1],
        cached: counts[2],
        reasoning: counts[3],
    })
}

/// One choice: its message's content (`None` for null) and its finish
/// reason.
type SkimmedChoice<'a> = (Option<&'a [u8]>, &'a [u8]);

fn skim_choice<'a>(c: &mut Cursor<'a>) -> Skim<SkimmedChoice<'a>> {
    let (mut content, mut finish) = (None, None);
    let mut seen = [false; 2];
    c.object(|c, name| {
        match name {
            b"message" => {
                skim::once(&mut seen[0])?;
                content = Some(skim_message(c)?);
            }
            b"finish_reason" => {
                skim::once(&mut seen[1])?;
                finish = Some(c.plain_string()?);
            }
            _ => c.skip()?,
        }
        Ok(())
    })?;
    Ok((content.ok_or(Unsure)?, finish.ok_or(Unsure)?))
}

/// A plain message's content: null, or a string; no refusal, no calls.
fn skim_message<'a>(c: &mut Cursor<'a>) -> Skim<Option<&'a [u8]>> {
    let mut content = None;
    let mut seen = [false; 3];
    c.object(|c, name| {
        match name {
            b"content" => {
                skim::once(&mut seen[0])?;
                if !c.null()? {
                    content = Some(c.json_string()?);
                }
            }
            b"refusal" => {
                skim::once(&mut seen[1])?;
                if !c.null()? {
                    return Err(Unsure);
                }
            }
            b"tool_calls" => {
                skim::once(&mut seen[2])?;
                if !c.null()? {
                    // An empty array only.
                    c.array(|_| Err(Unsure))?;
                }
            }
            _ => c.skip()?,
        }
        Ok(())
    })?;
    Ok(content)
}

/// `usage` (an object): prompt, completion, cached and reasoning tokens.
fn skim_usage(c: &mut Cursor<'_>) -> Skim<[Option<u64>; 4]> {
    let mut counts = [None; 4];
    let mut seen = [false; 4];
    c.object(|c, name| {
        match name {
            b"prompt_tokens" => {
                skim::once(&mut seen[0])?;
                counts[0] = skim_count(c)?;
            }
            b"completion_tokens" => {
                skim::once(&mut seen[1])?;
                counts[1] = skim_count(c)?;
            }
            b"prompt_tokens_details" => {
                skim::once(&mut seen[2])?;
                counts[2] = skim_detail(c, b"cached_tokens")?;
            }
            b"completion_tokens_details" => {
                skim::once(&mut seen[3])?;
                counts[3] = skim_detail(c, b"reasoning_tokens")?;
            }
            // Accounting looks for a usage nested in these first.
            b"usage" | b"response" | b"message" => return Err(Unsure),
            _ => c.skip()?,
        }
        Ok(())
    })?;
    Ok(counts)
}

/// A count: null, or an integer serde gives exactly.
fn skim_count(c: &mut Cursor<'_>) -> Skim<Option<u64>> {
    if c.null()? {
        return Ok(None);
    }
    c.plain_int().map(Some)
}

/// `*_tokens_details` (null or an object) and its count called `wanted`;
/// the other count serde reads there is checked as one.
fn skim_detail(c: &mut Cursor<'_>, wanted: &[u8]) -> Skim<Option<u64>> {
    if c.null()? {
        return Ok(None);
    }
    let mut out = None;
    let mut seen = [false; 2];
    c.object(|c, name| {
        let slot = match name {
            b"cached_tokens" => 0,
            b"reasoning_tokens" => 1,
            _ => return c.skip(),
        };
        skim::once(&mut seen[slot])?;
        let n = skim_count(c)?;
        if name == wanted {
            out = n;
        }
        Ok(())
    })?;
    Ok(out)
}

// ------------------------------------------------------------ reading

/// A member the client wrote, borrowing from its text (strings and
/// messages the gateway set go the tree way).
fn parse<'r, T: Deserialize<'r>>(value: &MemberText<'r>) -> Option<T> {
    match value {
        MemberText::Raw(text) => serde_json::from_str(text).ok(),
        MemberText::Set(_) => None,
    }
}

/// A scalar member, written by the client or set by the gateway.
fn read<T: DeserializeOwned>(value: &MemberText<'_>) -> Option<T> {
    match value {
        MemberText::Raw(text) => serde_json::from_str(text).ok(),
        MemberText::Set(v) => T::deserialize(*v).ok(),
    }
}

/// Fills `slot`; `None` for a member given twice (the tree keeps the
/// last, which this reader does not try to follow).
fn put<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.replace(value).is_none().then_some(())
}

/// [`put`] inside an object being read.
fn once<T, E: Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    put(slot, value).ok_or_else(|| E::custom("member given twice"))
}

/// An object read member by member through `T`. Anything but an object is
/// an error: a derived struct would also read an array, position by
/// position, where the tree translation refuses one.
struct Obj<T>(T);

trait Members<'de>: Default {
    fn member<A: MapAccess<'de>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error>;
}

impl<'de, T: Members<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Members<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Obj<T>, A::Error> {
                let mut out = T::default();
                while let Some(name) = map.next_key::<Text<'de>>()? {
                    out.member(name.as_str(), &mut map)?;
                }
                Ok(Obj(out))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(drop)
}

/// One message of the request: a role and a string, nothing else.
#[derive(Default)]
struct Turn<'de> {
    role: Option<Text<'de>>,
    content: Option<Text<'de>>,
}

impl<'de> Members<'de> for Turn<'de> {
    fn member<A: MapAccess<'de>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error> {
        match name {
            "role" => once(&mut self.role, map.next_value()?),
            "content" => once(&mut self.content, map.next_value()?),
            _ => Err(A::Error::custom("not a plain message")),
        }
    }
}

/// What the answer's translation reads; the rest is skipped unbuilt.
#[derive(Default)]
struct CompletionMembers<'de> {
    id: Option<Text<'de>>,
    choices: Option<Vec<Obj<Choice<'de>>>>,
    usage: Option<Option<Obj<UsageCounts>>>,
}

impl<'de> Members<'de> for CompletionMembers<'de> {
    fn member<A: MapAccess<'de>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error> {
        match name {
            "id" => once(&mut self.id, map.next_value()?),
            "choices" => once(&mut self.choices, map.next_value()?),
            "usage" => once(&mut self.usage, map.next_value()?),
            _ => skip(map),
        }
    }
}

#[derive(Default)]
struct Choice<'de> {
    message: Option<Obj<Message<'de>>>,
    finish_reason: Option<Text<'de>>,
}

impl<'de> Members<'de> for Choice<'de> {
    fn member<A: MapAccess<'de>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error> {
        match name {
            "message" => once(&mut self.message, map.next_value()?),
            "finish_reason" => once(&mut self.finish_reason, map.next_value()?),
            _ => skip(map),
        }
    }
}

/// Each member is an `Option` of what JSON allows there (null is `None`)
/// inside the `Option` that says whether it was seen.
#[derive(Default)]
struct Message<'de> {
    content: Option<Option<Text<'de>>>,
    refusal: Option<Option<Text<'de>>>,
    tool_calls: Option<Option<Vec<IgnoredAny>>>,
}

impl<'de> Members<'de> for Message<'de> {
    fn member<A: MapAccess<'de>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error> {
        match name {
            "content" => once(&mut self.content, map.next_value()?),
            "refusal" => once(&mut self.refusal, map.next_value()?),
            "tool_calls" => once(&mut self.tool_calls, map.next_value()?),
            _ => skip(map),
        }
    }
}

/// The counts of `usage`, strictly typed: where the tree translation or
/// accounting would refuse or skip a count, this reader fails and
/// declines.
#[derive(Default)]
struct UsageCounts {
    prompt_tokens: Option<Option<u64>>,
    completion_tokens: Option<Option<u64>>,
    prompt_tokens_details: Option<Option<Obj<Details>>>,
    completion_tokens_details: Option<Option<Obj<Details>>>,
}

impl<'de> Members<'de> for UsageCounts {
    fn member<A: MapAccess<'de>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error> {
        match name {
            "prompt_tokens" => once(&mut self.prompt_tokens, map.next_value()?),
            "completion_tokens" => once(&mut self.completion_tokens, map.next_value()?),
            "prompt_tokens_details" => once(&mut self.prompt_tokens_details, map.next_value()?),
            "completion_tokens_details" => {
                once(&mut self.completion_tokens_details, map.next_value()?)
            }
            // Accounting looks for a usage nested in these first.
            "usage" | "response" | "message" => Err(A::Error::custom("a nested usage")),
            _ => skip(map),
        }
    }
}

/// `*_tokens_details`.
#[derive(Default)]
struct Details {
    cached_tokens: Option<Option<u64>>,
    reasoning_tokens: Option<Option<u64>>,
}

impl<'de> Members<'de> for Details {
    fn member<A: MapAccess<'de>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error> {
        match name {
            "cached_tokens" => once(&mut self.cached_tokens, map.next_value()?),
            "reasoning_tokens" => once(&mut self.reasoning_tokens, map.next_value()?),
            _ => skip(map),
        }
    }
}
