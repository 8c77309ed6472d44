//! Guardrails on the LLM gate: where the texts are in each API's requests
//! and answers, and a filter over a streamed answer's events.
//!
//! The decisions are [`crate::policy::guardrail`]'s; this file only knows
//! the protocols. Every text a person or a model wrote is checked: message
//! contents and text parts, system prompts, tool results and tool-call
//! arguments, embeddings input. Images, audio and tool definitions are not
//! text a person typed and are left alone.
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::{
    front::{Api, Dialect},
    stream::{encode, SseParser, StreamError},
};
use crate::policy::guard::{RestoreStream, Restorer, StreamScanner};
use crate::policy::guardrail::{Blocked, CheckError, Phase, Session};
pub use crate::telemetry::guard::Audit;

/// Checks one text: given the text and where it is (built only when
/// needed), `Some(new)` replaces it, `Err` refuses.
pub type Check<'a> =
    &'a mut dyn FnMut(&str, &dyn Fn() -> String) -> Result<Option<String>, CheckError>;

/// Calls `check` on every text of a request of `api`, replacing the ones
/// it returns a new text for. `Err` stops at the first refusal.
pub fn request_texts(
    api: Api,
    body: &mut Map<String, Value>,
    check: Check<'_>,
) -> Result<(), CheckError> {
    let mut visit = Visit { check };
    match api {
        Api::ChatCompletions => {
            if let Some(Value::Array(messages)) = body.get_mut("messages") {
                for (i, m) in messages.iter_mut().enumerate() {
                    let at = format!("messages[{i}]");
                    visit.content(m.get_mut("content"), &format!("{at}.content"))?;
                    visit.tool_calls(m.get_mut("tool_calls"), &at)?;
                }
            }
        }
        Api::Messages | Api::CountTokens => {
            visit.content(body.get_mut("system"), "system")?;
            if let Some(Value::Array(messages)) = body.get_mut("messages") {
                for (i, m) in messages.iter_mut().enumerate() {
                    visit.content(m.get_mut("content"), &format!("messages[{i}].content"))?;
                }
            }
        }
        Api::Responses => {
            visit.content(body.get_mut("instructions"), "instructions")?;
            match body.get_mut("input") {
                Some(Value::Array(items)) => {
                    for (i, item) in items.iter_mut().enumerate() {
                        let at = format!("input[{i}]");
                        visit.content(item.get_mut("content"), &format!("{at}.content"))?;
                        visit.string(item.get_mut("output"), &format!("{at}.output"))?;
                        visit.string(item.get_mut("arguments"), &format!("{at}.arguments"))?;
                    }
                }
                input => visit.content(input, "input")?,
            }
        }
        Api::Embeddings => match body.get_mut("input") {
            Some(Value::Array(inputs)) => {
                for (i, input) in inputs.iter_mut().enumerate() {
                    visit.string(Some(input), &format!("input[{i}]"))?;
                }
            }
            input => visit.string(input, "input")?,
        },
        Api::Models(_) => {}
    }
    Ok(())
}

/// The same over a whole answer in the client's shape (chat completion,
/// Anthropic message, Responses object).
pub fn answer_texts(api: Api, body: &mut Value, check: Check<'_>) -> Result<(), CheckError> {
    let mut visit = Visit { check };
    match api {
        Api::ChatCompletions => {
            if let Some(Value::Array(choices)) = body.get_mut("choices") {
                for (i, c) in choices.iter_mut().enumerate() {
                    let at = format!("choices[{i}].message");
                    let Some(m) = c.get_mut("message") else {
                        continue;
                    };
                    visit.content(m.get_mut("content"), &format!("{at}.content"))?;
                    visit.tool_calls(m.get_mut("tool_calls"), &at)?;
                }
            }
        }
        Api::Messages => visit.content(body.get_mut("content"), "content")?,
        Api::Responses => {
            if let Some(Value::Array(items)) = body.get_mut("output") {
                for (i, item) in items.iter_mut().enumerate() {
                    let at = format!("output[{i}]");
                    visit.content(item.get_mut("content"), &format!("{at}.content"))?;
                    visit.string(item.get_mut("arguments"), &format!("{at}.arguments"))?;
                }
            }
            visit.string(body.get_mut("output_text"), "output_text")?;
        }
        Api::Embeddings | Api::CountTokens | Api::Models(_) => {}
    }
    Ok(())
}

struct Visit<'a> {
    check: Check<'a>,
}

impl Visit<'_> {
    fn string(&mut self, v: Option<&mut Value>, at: &str) -> Result<(), CheckError> {
        if let Some(Value::String(s)) = v {
            if let Some(new) = (self.check)(s, &|| at.to_owned())? {
                *s = new;
            }
        }
        Ok(())
    }

    /// A string, or content parts / blocks whose `text` (and, for tool
    /// results, nested `content`) is checked.
    fn content(&mut self, v: Option<&mut Value>, at: &str) -> Result<(), CheckError> {
        match v {
            Some(Value::String(_)) => self.string(v, at),
            Some(Value::Array(parts)) => {
                for (i, part) in parts.iter_mut().enumerate() {
                    let at = format!("{at}[{i}]");
                    self.string(part.get_mut("text"), &format!("{at}.text"))?;
                    if part.get("type").and_then(Value::as_str) == Some("tool_result") {
                        self.content(part.get_mut("content"), &format!("{at}.content"))?;
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn tool_calls(&mut self, v: Option<&mut Value>, at: &str) -> Result<(), CheckError> {
        if let Some(Value::Array(calls)) = v {
            for (j, call) in calls.iter_mut().enumerate() {
                let args = call
                    .get_mut("function")
                    .and_then(|f| f.get_mut("arguments"));
                self.string(args, &format!("{at}.tool_calls[{j}].function.arguments"))?;
            }
        }
        Ok(())
    }
}

/// Applies the answer rules and the prompt's restore to a streamed
/// answer, event by event: text deltas go through a [`StreamScanner`]
/// (which holds back a short tail so a secret split over events is still
/// seen whole) and a [`RestoreStream`]; a choice's or block's held tail is
/// sent before the event that ends it. Other events pass unchanged.
pub struct StreamGuard {
    session: Session,
    /// The prompt's restorable placeholders, made once for every channel.
    restorer: Option<Restorer>,
    audit: Audit,
    /// The shape of the events it sees: OpenAI chat chunks or Anthropic
    /// Messages events.
    dialect: Dialect,
    parser: SseParser,
    /// Per choice (OpenAI) or content block (Anthropic) index.
    channels: Vec<(u64, Channel)>,
    /// The last chat chunk's identity, for a chunk carrying a tail when
    /// the stream ends without a finish reason.
    last_chunk: Option<Map<String, Value>>,
}

struct Channel {
    scan: Option<StreamScanner>,
    restore: Option<RestoreStream>,
}

impl StreamGuard {
    /// `None` when the answer has nothing to check or restore.
    pub fn new(session: Session, audit: Audit, dialect: Dialect) -> Option<StreamGuard> {
        if !session.plan().checks(Phase::Response) && !session.restores() {
            return None;
        }
        Some(StreamGuard {
            restorer: session.restorer(),
            session,
            audit,
            dialect,
            parser: SseParser::default(),
            channels: Vec::new(),
            last_chunk: None,
        })
    }

    fn channel(&mut self, index: u64) -> &mut Channel {
        let at = match self.channels.iter().position(|(i, _)| *i == index) {
            Some(at) => at,
            None => {
                let scan = self.session.plan().checks(Phase::Response).then(|| {
                    StreamScanner::with_redactor(
                        Arc::clone(self.session.plan().scanner()),
                        self.session.answer_redactor(),
                    )
                });
                let restore = self.restorer.as_ref().map(Restorer::stream);
                self.channels.push((index, Channel { scan, restore }));
                self.channels.len() - 1
            }
        };
        &mut self.channels[at].1
    }

    /// Text of one delta as it may be sent now.
    fn text(&mut self, index: u64, delta: &str) -> Result<String, StreamError> {
        let channel = self.channel(index);
        let scanned = match channel.scan.as_mut() {
            Some(scan) => scan.push(delta).map_err(too_large)?,
            None => delta.to_owned(),
        };
        let findings = channel
            .scan
            .as_mut()
            .map(StreamScanner::take_findings)
            .unwrap_or_default();
        self.judge(index, &findings)?;
        let channel = self.channel(index);
        Ok(match channel.restore.as_mut() {
            Some(r) => r.push(&scanned),
            None => scanned,
        })
    }

    /// What a channel still holds, when its choice or block ends.
    fn tail(&mut self, index: u64) -> Result<String, StreamError> {
        let Some(at) = self.channels.iter().position(|(i, _)| *i == index) else {
            return Ok(String::new());
        };
        let channel = &mut self.channels[at].1;
        let (scanned, findings) = match channel.scan.as_mut() {
            Some(scan) => (scan.finish(), scan.take_findings()),
            None => (String::new(), Vec::new()),
        };
        self.judge(index, &findings)?;
        let channel = &mut self.channels[at].1;
        Ok(match channel.restore.as_mut() {
            Some(r) => {
                let mut out = r.push(&scanned);
                out.push_str(&r.finish());
                out
            }
            None => scanned,
        })
    }

    fn judge(
        &mut self,
        index: u64,
        findings: &[crate::policy::guard::Finding],
    ) -> Result<(), StreamError> {
        let mut blocked = None;
        for f in findings {
            if let Some(d) = self.session.note(Phase::Response, f) {
                if d.action == crate::config::GuardAction::Block && blocked.is_none() {
                    blocked = Some(Blocked {
                        policy: d.policy,
                        kind: f.kind,
                        rule: Arc::clone(&f.rule),
                        phase: Phase::Response,
                        place: match self.dialect {
                            Dialect::OpenAi => format!("choice {index}"),
                            Dialect::Anthropic => format!("content block {index}"),
                        },
                    });
                }
            }
        }
        self.audit.record(self.session.take_hits());
        match blocked {
            Some(b) => Err(StreamError::Blocked(b.message())),
            None => Ok(()),
        }
    }

    /// The events of `bytes`, filtered.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, StreamError> {
        let events = self.parser.push(bytes).map_err(|e| StreamError::Upstream {
            kind: "api_error".into(),
            message: e.to_string(),
        })?;
        let mut out = Vec::with_capacity(bytes.len());
        for ev in events {
            match self.dialect {
                Dialect::OpenAi => self.chat_event(&ev.data, &mut out)?,
                Dialect::Anthropic => {
                    self.anthropic_event(ev.event.as_deref(), &ev.data, &mut out)?
                }
            }
        }
        Ok(out)
    }

    fn chat_event(&mut self, data: &str, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let parsed = match serde_json::from_str::<Value>(data) {
            Ok(Value::Object(chunk)) if chunk.contains_key("choices") => Some(chunk),
            _ => None,
        };
        let Some(mut chunk) = parsed else {
            if data == "[DONE]" {
                self.flush_chat(out)?;
            }
            out.extend_from_slice(encode(None, data).as_bytes());
            return Ok(());
        };
        if let Some(Value::Array(choices)) = chunk.get_mut("choices") {
            for choice in choices.iter_mut() {
                let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
                let finished = !choice.get("finish_reason").is_none_or(Value::is_null);
                let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) else {
                    continue;
                };
                let mut text = match delta.get("content") {
                    Some(Value::String(s)) => {
                        let s = s.clone();
                        self.text(index, &s)?
                    }
                    _ => String::new(),
                };
                if finished {
                    text.push_str(&self.tail(index)?);
                    self.channels.retain(|(i, _)| *i != index);
                }
                if delta.contains_key("content") || !text.is_empty() {
                    delta.insert("content".into(), Value::String(text));
                }
            }
        }
        let mut identity = chunk.clone();
        identity.remove("choices");
        identity.remove("usage");
        self.last_chunk = Some(identity);
        out.extend_from_slice(encode(None, &Value::Object(chunk).to_string()).as_bytes());
        Ok(())
    }

    /// Tails of choices that never reported a finish reason, as one chunk.
    fn flush_chat(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let indexes: Vec<u64> = self.channels.iter().map(|(i, _)| *i).collect();
        let mut choices = Vec::new();
        for index in indexes {
            let text = self.tail(index)?;
            if !text.is_empty() {
                choices.push(json!({
                    "index": index, "delta": { "content": text }, "finish_reason": null
                }));
            }
        }
        self.channels.clear();
        if !choices.is_empty() {
            let mut chunk = self.last_chunk.clone().unwrap_or_default();
            chunk.insert("choices".into(), Value::Array(choices));
            out.extend_from_slice(encode(None, &Value::Object(chunk).to_string()).as_bytes());
        }
        Ok(())
    }

    fn anthropic_event(
        &mut self,
        event: Option<&str>,
        data: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), StreamError> {
        match event {
            Some("content_block_delta") => {
                if let Ok(Value::Object(mut ev)) = serde_json::from_str::<Value>(data) {
                    let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let text = match ev.get("delta").and_then(|d| d.get("text")) {
                        Some(Value::String(s)) => Some(s.clone()),
                        _ => None,
                    };
                    if let Some(text) = text {
                        let sent = self.text(index, &text)?;
                        if let Some(delta) = ev.get_mut("delta").and_then(Value::as_object_mut) {
                            delta.insert("text".into(), Value::String(sent));
                        }
                        out.extend_from_slice(
                            encode(event, &Value::Object(ev).to_string()).as_bytes(),
                        );
                        return Ok(());
                    }
                }
            }
            Some("content_block_stop") => {
                let index = serde_json::from_str::<Value>(data)
                    .ok()
                    .and_then(|v| v.get("index").and_then(Value::as_u64))
                    .unwrap_or(0);
                self.anthropic_tail(index, out)?;
            }
            Some("message_stop") => {
                let indexes: Vec<u64> = self.channels.iter().map(|(i, _)| *i).collect();
                for index in indexes {
                    self.anthropic_tail(index, out)?;
                }
            }
            _ => {}
        }
        out.extend_from_slice(encode(event, data).as_bytes());
        Ok(())
    }

    fn anthropic_tail(&mut self, index: u64, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let text = self.tail(index)?;
        self.channels.retain(|(i, _)| *i != index);
        if !text.is_empty() {
            let ev = json!({
                "type": "content_block_delta",
                "index": index,
                "delta": { "type": "text_delta", "text": text },
            });
            out.extend_from_slice(encode(Some("content_block_delta"), &ev.to_string()).as_bytes());
        }
        Ok(())
    }

    /// Whatever is still held when the upstream ended without closing its
    /// choices or blocks.
    pub fn finish(&mut self) -> Result<Vec<u8>, StreamError> {
        let mut out = Vec::new();
        match self.dialect {
            Dialect::OpenAi => self.flush_chat(&mut out)?,
            Dialect::Anthropic => {
                let indexes: Vec<u64> = self.channels.iter().map(|(i, _)| *i).collect();
                for index in indexes {
                    self.anthropic_tail(index, &mut out)?;
                }
            }
        }
        Ok(out)
    }
}

fn too_large(e: crate::policy::guard::ScanError) -> StreamError {
    StreamError::Blocked(format!(
        "the answer is longer than guardrails scan ({e}; guardrails.max_scan_bytes); it was cut"
    ))
}
