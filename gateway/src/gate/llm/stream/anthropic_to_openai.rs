//! Anthropic Messages stream → OpenAI `chat.completion.chunk` stream.
use serde_json::{json, Value};

use super::{frame, within, SseEvent, StreamError};
use crate::gate::llm::translate::{
    json::{as_object, field, get, get_str, get_u64, invalid, require, require_str, Object},
    response::{finish_reason, openai_usage},
    TranslateError,
};

type Result<T> = std::result::Result<T, StreamError>;

pub struct AnthropicToOpenAi {
    model: String,
    created: u64,
    include_usage: bool,
    /// From `message_start`; every chunk carries it.
    id: Option<String>,
    /// Anthropic usage merged over `message_start` and `message_delta`,
    /// whose counts are cumulative.
    anthropic_usage: Object,
    /// Its OpenAI form; set from `message_start` on.
    usage: Option<Value>,
    /// OpenAI numbers tool calls 0, 1, 2… whatever their block index.
    tool_calls: usize,
    tool: Option<OpenTool>,
    events: usize,
    finished: bool,
}

/// The `tool_use` block being streamed: Anthropic closes each block before
/// starting the next, so there is at most one.
struct OpenTool {
    block: u64,
    call: usize,
    sent_arguments: bool,
}

impl AnthropicToOpenAi {
    /// `created` is the caller's clock (unix seconds), as for the
    /// non-streaming translation; `include_usage` is the client's
    /// `stream_options.include_usage`.
    pub fn new(requested_model: &str, created: u64, include_usage: bool) -> Self {
        Self {
            model: requested_model.to_owned(),
            created,
            include_usage,
            id: None,
            anthropic_usage: Object::new(),
            usage: None,
            tool_calls: 0,
            tool: None,
            events: 0,
            finished: false,
        }
    }

    /// The OpenAI-shaped usage reported so far, for accounting.
    pub fn usage(&self) -> Option<Value> {
        self.usage.clone()
    }

    /// The chunks one upstream event becomes. Events are counted from 1 in
    /// errors (`stream event 3.delta.type: ...`).
    pub fn event(&mut self, ev: &SseEvent) -> Result<Vec<String>> {
        self.events += 1;
        let at = format!("stream event {}", self.events);
        // The `type` member, not the SSE event name, says what it is: the
        // API sends both, and the data is what the SDKs read.
        let data: Value = serde_json::from_str(&ev.data)
            .map_err(|e| invalid(&at, format!("not valid JSON: {e}")))?;
        let e = as_object(&data, &at)?;
        let kind = require_str(e, "type", &at)?;
        match kind {
            "message_start" => self.message_start(e, &at),
            "error" => Err(StreamError::upstream(get(e, "error"))),
            "content_block_start"
            | "content_block_delta"
            | "content_block_stop"
            | "message_delta"
                if self.id.is_none() =>
            {
                Err(invalid(at, format!("{kind} before message_start")).into())
            }
            "content_block_start" => self.block_start(e, &at),
            "content_block_delta" => self.block_delta(e, &at),
            "content_block_stop" => Ok(self.block_stop(e, &at)?.into_iter().collect()),
            "message_delta" => self.message_delta(e, &at),
            // `ping`, `message_stop` (the end is `finish`, which sends the
            // usage chunk before `[DONE]`), and event types added later,
            // which Anthropic asks clients to ignore.
            _ => Ok(Vec::new()),
        }
    }

    /// The trailing frames: the usage chunk if the client asked for it,
    /// then `[DONE]`. Later calls return nothing.
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

    fn message_start(&mut self, e: &Object, at: &str) -> Result<Vec<String>> {
        if self.id.is_some() {
            return Err(invalid(at, "message_start repeated").into());
        }
        let path = field(at, "message");
        let m = as_object(require(e, "message", at)?, &path)?;
        let id = require_str(m, "id", &path)?;
        self.merge_usage(get(m, "usage"), &path)?;
        self.id = Some(id.to_owned());
        Ok(vec![self.chunk(
            json!({ "role": "assistant", "content": "" }),
            None,
        )])
    }

    fn block_start(&mut self, e: &Object, at: &str) -> Result<Vec<String>> {
        let path = field(at, "content_block");
        let b = as_object(require(e, "content_block", at)?, &path)?;
        match require_str(b, "type", &path)? {
            // Text arrives in deltas; a start holding some is unusual but
            // kept.
            "text" => Ok(get_str(b, "text", &path)?
                .and_then(nonempty)
                .map(|t| self.content(t))
                .into_iter()
                .collect()),
            "tool_use" => {
                let call = self.tool_calls;
                let delta = json!({ "tool_calls": [{
                    "index": call,
                    "id": require_str(b, "id", &path)?,
                    "type": "function",
                    "function": { "name": require_str(b, "name", &path)?, "arguments": "" },
                }]});
                self.tool = Some(OpenTool {
                    block: block_index(e, at)?,
                    call,
                    sent_arguments: false,
                });
                self.tool_calls += 1;
                Ok(vec![self.chunk(delta, None)])
            }
            // Dropped as in the non-streaming translation: OpenAI's answer
            // has no place for thinking.
            "thinking" | "redacted_thinking" => Ok(Vec::new()),
            other => Err(invalid(path, format!("unknown content block type {other:?}")).into()),
        }
    }

    fn block_delta(&mut self, e: &Object, at: &str) -> Result<Vec<String>> {
        let path = field(at, "delta");
        let d = as_object(require(e, "delta", at)?, &path)?;
        let piece = match require_str(d, "type", &path)? {
            "text_delta" => {
                let text = require_str(d, "text", &path)?;
                return Ok(nonempty(text)
                    .map(|t| self.content(t))
                    .into_iter()
                    .collect());
            }
            "input_json_delta" => require_str(d, "partial_json", &path)?,
            // Thinking is dropped as above; citations annotate text the
            // client already has, as the non-streaming translation ignores
            // them.
            "thinking_delta" | "signature_delta" | "citations_delta" => return Ok(Vec::new()),
            other => {
                return Err(
                    invalid(field(&path, "type"), format!("unknown value {other:?}")).into(),
                )
            }
        };
        let block = block_index(e, at)?;
        let tool = self
            .tool
            .as_mut()
            .filter(|t| t.block == block)
            .ok_or_else(|| {
                invalid(
                    field(at, "index"),
                    format!("block {block} is not an open tool_use block"),
                )
            })?;
        let Some(piece) = nonempty(piece) else {
            return Ok(Vec::new());
        };
        tool.sent_arguments = true;
        let call = tool.call;
        Ok(vec![self.arguments(call, piece)])
    }

    /// A tool without parameters streams no argument pieces, but OpenAI
    /// clients parse `arguments` as JSON, and the non-streaming translation
    /// sends `{}`; so does this.
    fn block_stop(&mut self, e: &Object, at: &str) -> Result<Option<String>> {
        let block = block_index(e, at)?;
        Ok(match self.tool.take_if(|t| t.block == block) {
            Some(tool) if !tool.sent_arguments => Some(self.arguments(tool.call, "{}")),
            _ => None,
        })
    }

    fn message_delta(&mut self, e: &Object, at: &str) -> Result<Vec<String>> {
        self.merge_usage(get(e, "usage"), at)?;
        let path = field(at, "delta");
        let d = as_object(require(e, "delta", at)?, &path)?;
        let Some(stop_reason) = get_str(d, "stop_reason", &path)? else {
            return Ok(Vec::new());
        };
        let finish = finish_reason(stop_reason).map_err(|e| within(&path, e))?;
        Ok(vec![self.chunk(json!({}), Some(finish))])
    }

    /// Validated by mapping it at once, so a bad count is reported with the
    /// event that sent it.
    fn merge_usage(&mut self, usage: Option<&Value>, at: &str) -> Result<()> {
        let mut merged = self.anthropic_usage.clone();
        if let Some(usage) = usage {
            let u = as_object(usage, &field(at, "usage"))?;
            merged.extend(
                u.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        let merged = Value::Object(merged);
        self.usage = Some(openai_usage(Some(&merged)).map_err(|e| within(at, e))?);
        if let Value::Object(merged) = merged {
            self.anthropic_usage = merged;
        }
        Ok(())
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
            "id": self.id.as_deref().unwrap_or_default(),
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

fn block_index(e: &Object, at: &str) -> std::result::Result<u64, TranslateError> {
    get_u64(e, "index", at)?.ok_or_else(|| TranslateError::Missing {
        field: field(at, "index"),
    })
}

/// Empty pieces carry nothing and upstreams send them (the first
/// `input_json_delta` of a call is usually `""`).
fn nonempty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}
