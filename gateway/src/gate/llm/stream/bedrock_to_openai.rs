//! Bedrock `ConverseStream` messages → OpenAI `chat.completion.chunk`
//! stream, framed as [`super::AnthropicToOpenAi`] frames them: the role
//! chunk first, one chunk per piece of text or tool arguments, the finish
//! chunk, then from [`BedrockToOpenAi::finish`] the usage chunk (when the
//! client asked for it) and `[DONE]`.
//!
//! Bedrock's order: `messageStart`, then per content block an optional
//! `contentBlockStart` (tool calls only), `contentBlockDelta`s and
//! `contentBlockStop`, then `messageStop` (the stop reason) and `metadata`
//! (usage). An error after the answer started is a message of type
//! `exception` (`:exception-type` names it, the payload holds `message`).
use serde_json::{json, Value};

use super::{eventstream::EventMessage, frame, within, StreamError};
use crate::gate::llm::translate::{
    bedrock::{finish_reason, openai_usage},
    json::{as_object, field, get, get_str, get_u64, invalid, require, require_str, Object},
    TranslateError,
};

type Result<T> = std::result::Result<T, StreamError>;

pub struct BedrockToOpenAi {
    model: String,
    /// Bedrock streams carry no id; the caller's is on every chunk.
    id: String,
    created: u64,
    include_usage: bool,
    started: bool,
    usage: Option<Value>,
    /// OpenAI numbers tool calls 0, 1, 2… whatever their block index.
    tool_calls: usize,
    /// Tool blocks started and not yet stopped.
    open_tools: Vec<OpenTool>,
    messages: usize,
    finished: bool,
}

struct OpenTool {
    block: u64,
    call: usize,
    sent_arguments: bool,
}

impl BedrockToOpenAi {
    /// `id` and `created` (unix seconds) are the caller's, as for the
    /// non-streaming translation; `include_usage` is the client's
    /// `stream_options.include_usage`.
    pub fn new(requested_model: &str, id: String, created: u64, include_usage: bool) -> Self {
        Self {
            model: requested_model.to_owned(),
            id,
            created,
            include_usage,
            started: false,
            usage: None,
            tool_calls: 0,
            open_tools: Vec::new(),
            messages: 0,
            finished: false,
        }
    }

    /// The OpenAI-shaped usage reported so far, for accounting.
    pub fn usage(&self) -> Option<Value> {
        self.usage.clone()
    }

    /// The chunks one event-stream message becomes. Messages are counted
    /// from 1 in errors (`stream message 3.delta: ...`).
    pub fn message(&mut self, m: &EventMessage) -> Result<Vec<String>> {
        self.messages += 1;
        let at = format!("stream message {}", self.messages);
        // AWS always sets it; a message without one is read as an event.
        match m.header_str(":message-type").unwrap_or("event") {
            "event" => {}
            "exception" => return Err(exception(m)),
            // Errors of the framing service itself, in headers only.
            "error" => {
                return Err(StreamError::Upstream {
                    kind: m.header_str(":error-code").unwrap_or("error").to_owned(),
                    message: m.header_str(":error-message").unwrap_or("").to_owned(),
                })
            }
            other => {
                return Err(invalid(
                    field(&at, ":message-type"),
                    format!("unknown value {other:?}"),
                )
                .into())
            }
        }
        let kind = m
            .header_str(":event-type")
            .ok_or_else(|| TranslateError::Missing {
                field: field(&at, ":event-type"),
            })?;
        let data: Value = serde_json::from_slice(&m.payload)
            .map_err(|e| invalid(&at, format!("payload is not valid JSON: {e}")))?;
        let e = as_object(&data, &at)?;
        match kind {
            "messageStart" => {
                if std::mem::replace(&mut self.started, true) {
                    return Err(invalid(at, "messageStart repeated").into());
                }
                Ok(vec![self.chunk(
                    json!({ "role": "assistant", "content": "" }),
                    None,
                )])
            }
            "contentBlockStart" | "contentBlockDelta" | "contentBlockStop" | "messageStop"
                if !self.started =>
            {
                Err(invalid(at, format!("{kind} before messageStart")).into())
            }
            "contentBlockStart" => self.block_start(e, &at),
            "contentBlockDelta" => self.block_delta(e, &at),
            "contentBlockStop" => Ok(self.block_stop(e, &at)?.into_iter().collect()),
            "messageStop" => {
                let stop = require_str(e, "stopReason", &at)?;
                let finish = finish_reason(stop).map_err(|e| within(&at, e))?;
                Ok(vec![self.chunk(json!({}), Some(finish))])
            }
            "metadata" => {
                if let Some(usage) = get(e, "usage") {
                    self.usage = Some(openai_usage(Some(usage), &field(&at, "usage"))?);
                }
                Ok(Vec::new())
            }
            // Event types added later; clients of a stream ignore what they
            // do not know.
            _ => Ok(Vec::new()),
        }
    }

    /// The trailing frames: the usage chunk if the client asked for it and
    /// Bedrock sent usage, then `[DONE]`. Later calls return nothing.
    pub fn finish(&mut self) -> Vec<String> {
        if std::mem::replace(&mut self.finished, true) {
            return Vec::new();
        }
        let mut frames = Vec::new();
        if let (true, Some(usage)) = (self.include_usage, &self.usage) {
            frames.push(self.frame(json!([]), usage.clone()));
        }
        frames.push(super::encode(None, "[DONE]"));
        frames
    }

    fn block_start(&mut self, e: &Object, at: &str) -> Result<Vec<String>> {
        let path = field(at, "start");
        let start = as_object(require(e, "start", at)?, &path)?;
        let Some(tool) = get(start, "toolUse") else {
            let kind = start.keys().next().map_or("", String::as_str);
            return Err(invalid(path, format!("unknown content block start {kind:?}")).into());
        };
        let tool_path = field(&path, "toolUse");
        let t = as_object(tool, &tool_path)?;
        let call = self.tool_calls;
        let delta = json!({ "tool_calls": [{
            "index": call,
            "id": require_str(t, "toolUseId", &tool_path)?,
            "type": "function",
            "function": { "name": require_str(t, "name", &tool_path)?, "arguments": "" },
        }]});
        let block = block_index(e, at)?;
        if self.open_tools.iter().any(|t| t.block == block) {
            return Err(invalid(
                field(at, "contentBlockIndex"),
                format!("block {block} started twice"),
            )
            .into());
        }
        self.open_tools.push(OpenTool {
            block,
            call,
            sent_arguments: false,
        });
        self.tool_calls += 1;
        Ok(vec![self.chunk(delta, None)])
    }

    fn block_delta(&mut self, e: &Object, at: &str) -> Result<Vec<String>> {
        let path = field(at, "delta");
        let d = as_object(require(e, "delta", at)?, &path)?;
        if let Some(text) = get_str(d, "text", &path)? {
            return Ok(nonempty(text)
                .map(|t| self.content(t))
                .into_iter()
                .collect());
        }
        let Some(tool) = get(d, "toolUse") else {
            // Reasoning has no place in OpenAI's answer (as in the
            // non-streaming translation); citations annotate text the
            // client already has.
            if get(d, "reasoningContent").is_some() || get(d, "citation").is_some() {
                return Ok(Vec::new());
            }
            let kind = d.keys().next().map_or("", String::as_str);
            return Err(invalid(path, format!("unknown delta {kind:?}")).into());
        };
        let tool_path = field(&path, "toolUse");
        let piece = require_str(as_object(tool, &tool_path)?, "input", &tool_path)?;
        let block = block_index(e, at)?;
        let open = self
            .open_tools
            .iter_mut()
            .find(|t| t.block == block)
            .ok_or_else(|| {
                invalid(
                    field(at, "contentBlockIndex"),
                    format!("block {block} is not an open toolUse block"),
                )
            })?;
        let Some(piece) = nonempty(piece) else {
            return Ok(Vec::new());
        };
        open.sent_arguments = true;
        let call = open.call;
        Ok(vec![self.arguments(call, piece)])
    }

    /// A tool without parameters streams no argument pieces, but OpenAI
    /// clients parse `arguments` as JSON; `{}` as in the non-streaming
    /// translation.
    fn block_stop(&mut self, e: &Object, at: &str) -> Result<Option<String>> {
        let block = block_index(e, at)?;
        let Some(i) = self.open_tools.iter().position(|t| t.block == block) else {
            return Ok(None);
        };
        let tool = self.open_tools.swap_remove(i);
        Ok((!tool.sent_arguments).then(|| self.arguments(tool.call, "{}")))
    }

    fn content(&self, text: &str) -> String {
        self.chunk(json!({ "content": text }), None)
    }

    fn arguments(&self, call: usize, piece: &str) -> String {
        self.chunk(
            json!({ "tool_calls": [{ "index": call, "function": { "arguments": piece } }] }),
            None,
        )
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> String {
        let choice = json!({ "index": 0, "delta": delta, "finish_reason": finish_reason });
        self.frame(json!([choice]), Value::Null)
    }

    fn frame(&self, choices: Value, usage: Value) -> String {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        // With include_usage OpenAI puts `usage: null` on every chunk but
        // the last, and typed clients expect the member.
        if self.include_usage {
            chunk["usage"] = usage;
        }
        frame(None, &chunk)
    }
}

/// An `exception` message, read leniently: an error report is passed on
/// even when malformed.
fn exception(m: &EventMessage) -> StreamError {
    let payload: Option<Value> = serde_json::from_slice(&m.payload).ok();
    let message = payload
        .as_ref()
        .and_then(|p| p.get("message").or_else(|| p.get("Message")))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&m.payload).into_owned());
    StreamError::Upstream {
        kind: m
            .header_str(":exception-type")
            .unwrap_or("exception")
            .to_owned(),
        message,
    }
}

fn block_index(e: &Object, at: &str) -> std::result::Result<u64, TranslateError> {
    get_u64(e, "contentBlockIndex", at)?.ok_or_else(|| TranslateError::Missing {
        field: field(at, "contentBlockIndex"),
    })
}

/// Empty pieces carry nothing.
fn nonempty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}
