//! OpenAI `chat.completion.chunk` stream → Anthropic Messages stream.
use serde_json::{json, Value};

use super::{chat_chunk, frame, within, SseEvent, StreamError};
use crate::gate::llm::translate::{
    json::{
        as_object, field, get, get_array, get_str, get_u64, index, require_str, unsupported, Object,
    },
    response::{anthropic_usage, stop_reason},
    TranslateError,
};

type Result<T> = std::result::Result<T, StreamError>;

pub struct OpenAiToAnthropic {
    model: String,
    started: bool,
    /// The index the next content block gets.
    blocks: usize,
    /// The open content block: its index and what it holds.
    open: Option<(usize, Block)>,
    /// Tool-call indexes seen, in order, to tell a new call from one that
    /// resumes after another block started.
    calls: Vec<u64>,
    stop_reason: Option<&'static str>,
    refusal: bool,
    /// Anthropic-shaped, from the last chunk that carried usage.
    usage: Option<Value>,
    chunks: usize,
    done: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    /// The OpenAI tool-call index.
    Tool(u64),
}

impl OpenAiToAnthropic {
    pub fn new(requested_model: &str) -> Self {
        Self {
            model: requested_model.to_owned(),
            started: false,
            blocks: 0,
            open: None,
            calls: Vec::new(),
            stop_reason: None,
            refusal: false,
            usage: None,
            chunks: 0,
            done: false,
        }
    }

    /// The Anthropic-shaped usage the upstream reported so far (the shape
    /// the client is sent), for accounting. OpenAI sends usage only when
    /// the request set `stream_options.include_usage`.
    pub fn usage(&self) -> Option<Value> {
        self.usage.clone()
    }

    /// The frames one upstream chunk becomes. Chunks are counted from 1 in
    /// errors (`stream chunk 3.choices[0].delta: ...`); anything after
    /// `[DONE]` is ignored.
    pub fn event(&mut self, ev: &SseEvent) -> Result<Vec<String>> {
        if self.done {
            return Ok(Vec::new());
        }
        self.chunks += 1;
        let at = format!("stream chunk {}", self.chunks);
        let Some(chunk) = chat_chunk(ev, &at)? else {
            return Ok(self.finish());
        };
        let c = &chunk;
        let mut frames = Vec::new();
        if !self.started {
            frames.push(self.message_start(require_str(c, "id", &at)?));
        }
        // Usually a last chunk with no choices; some servers put it on the
        // finishing chunk instead. Either way the last one counts.
        if let Some(usage) = get(c, "usage") {
            self.usage = Some(anthropic_usage(Some(usage)).map_err(|e| within(&at, e))?);
        }
        // Requests with n > 1 are refused on the way in, so one choice is
        // all there is.
        if let Some(choice) = get_array(c, "choices", &at)?.and_then(<[Value]>::first) {
            self.choice(choice, &at, &mut frames)?;
        }
        Ok(frames)
    }

    /// The trailing frames: `message_delta` with the stop reason and usage,
    /// then `message_stop`. Called at `[DONE]`, or by the caller when the
    /// upstream body ended without one; later calls return nothing.
    pub fn finish(&mut self) -> Vec<String> {
        if std::mem::replace(&mut self.done, true) {
            return Vec::new();
        }
        let mut frames = Vec::new();
        if !self.started {
            // Nothing came before the end; the client still gets a whole
            // (empty) message.
            frames.push(self.message_start(""));
        }
        self.close(&mut frames);
        // As in the non-streaming translation, a refusal is the stop
        // reason whatever finish_reason said.
        let stop_reason = if self.refusal {
            Some("refusal")
        } else {
            self.stop_reason
        };
        // All four counts, not only `output_tokens`: the message_start went
        // out before OpenAI reports the prompt, and the Anthropic SDKs take
        // the counts a message_delta carries.
        let usage = self
            .usage
            .clone()
            .unwrap_or_else(|| anthropic_usage(None).unwrap_or_default());
        frames.push(event(json!({
            "type": "message_delta",
            "delta": { "stop_reason": stop_reason, "stop_sequence": null },
            "usage": usage,
        })));
        frames.push(event(json!({ "type": "message_stop" })));
        frames
    }

    fn message_start(&mut self, id: &str) -> String {
        self.started = true;
        // OpenAI reports usage only at the end; message_delta carries it.
        event(json!({ "type": "message_start", "message": {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": { "input_tokens": 0, "output_tokens": 0 },
        }}))
    }

    fn choice(&mut self, choice: &Value, at: &str, frames: &mut Vec<String>) -> Result<()> {
        let path = index(&field(at, "choices"), 0);
        let ch = as_object(choice, &path)?;
        if let Some(delta) = get(ch, "delta") {
            let delta_path = field(&path, "delta");
            let d = as_object(delta, &delta_path)?;
            // A refusal is text to Anthropic, as in the non-streaming
            // translation.
            for key in ["content", "refusal"] {
                if let Some(text) = get_str(d, key, &delta_path)?.filter(|t| !t.is_empty()) {
                    self.refusal |= key == "refusal";
                    self.text(text, frames);
                }
            }
            let calls_path = field(&delta_path, "tool_calls");
            for (k, call) in get_array(d, "tool_calls", &delta_path)?
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                self.tool_call(call, &index(&calls_path, k), frames)?;
            }
        }
        if let Some(finish) = get_str(ch, "finish_reason", &path)? {
            self.close(frames);
            self.stop_reason = Some(stop_reason(finish).map_err(|e| within(at, e))?);
        }
        Ok(())
    }

    fn text(&mut self, text: &str, frames: &mut Vec<String>) {
        if !matches!(self.open, Some((_, Block::Text))) {
            self.start(Block::Text, json!({ "type": "text", "text": "" }), frames);
        }
        self.delta(json!({ "type": "text_delta", "text": text }), frames);
    }

    /// The first delta of a call has its id and name; later ones only
    /// argument pieces.
    fn tool_call(&mut self, call: &Value, path: &str, frames: &mut Vec<String>) -> Result<()> {
        let c = as_object(call, path)?;
        let k = get_u64(c, "index", path)?.ok_or_else(|| TranslateError::Missing {
            field: field(path, "index"),
        })?;
        let function_path = field(path, "function");
        let function = get(c, "function")
            .map(|f| as_object(f, &function_path))
            .transpose()?;
        let empty = Object::new();
        let function = function.unwrap_or(&empty);
        if !matches!(self.open, Some((_, Block::Tool(open))) if open == k) {
            if self.calls.contains(&k) {
                return Err(unsupported(
                    field(path, "index"),
                    format!("tool call {k} resumes after another block started; Anthropic content blocks cannot interleave"),
                )
                .into());
            }
            if let Some(t) = get_str(c, "type", path)?.filter(|t| *t != "function") {
                return Err(unsupported(
                    field(path, "type"),
                    format!("tool call type {t:?} has no Anthropic Messages equivalent"),
                )
                .into());
            }
            let block = json!({
                "type": "tool_use",
                "id": require_str(c, "id", path)?,
                "name": require_str(function, "name", &function_path)?,
                "input": {},
            });
            self.calls.push(k);
            self.start(Block::Tool(k), block, frames);
        }
        if let Some(piece) =
            get_str(function, "arguments", &function_path)?.filter(|a| !a.is_empty())
        {
            self.delta(
                json!({ "type": "input_json_delta", "partial_json": piece }),
                frames,
            );
        }
        Ok(())
    }

    /// Closes the open block first: Anthropic streams one block at a time.
    fn start(&mut self, block: Block, content_block: Value, frames: &mut Vec<String>) {
        self.close(frames);
        let i = self.blocks;
        self.blocks += 1;
        self.open = Some((i, block));
        frames.push(event(json!({
            "type": "content_block_start",
            "index": i,
            "content_block": content_block,
        })));
    }

    fn delta(&self, delta: Value, frames: &mut Vec<String>) {
        if let Some((i, _)) = self.open {
            frames.push(event(
                json!({ "type": "content_block_delta", "index": i, "delta": delta }),
            ));
        }
    }

    fn close(&mut self, frames: &mut Vec<String>) {
        if let Some((i, _)) = self.open.take() {
            frames.push(event(json!({ "type": "content_block_stop", "index": i })));
        }
    }
}

/// Anthropic names each event twice, in the SSE `event:` and in `type`.
fn event(data: Value) -> String {
    let name = data["type"].as_str().map(str::to_owned);
    frame(name.as_deref(), &data)
}
