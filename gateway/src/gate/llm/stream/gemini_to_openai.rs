//! Gemini `streamGenerateContent?alt=sse` → OpenAI `chat.completion.chunk`
//! stream, framed as [`super::AnthropicToOpenAi`] frames them: the role
//! chunk first, one chunk per piece of text or tool call, the finish chunk,
//! then from [`GeminiToOpenAi::finish`] the usage chunk (when the client
//! asked for it) and `[DONE]`.
//!
//! Each Gemini event is a whole `GenerateContentResponse` holding the next
//! piece of each candidate: text arrives in pieces, a function call whole,
//! and `finishReason` with the last piece. `usageMetadata` is cumulative,
//! so the latest one counts. An error after the answer started is an event
//! holding only `error` (`{code, message, status}`).
use serde_json::{json, Value};

use super::{frame, within, SseEvent, StreamError};
use crate::gate::llm::translate::{
    gemini::{
        candidate_index, candidate_pieces, finish_reason, openai_usage, prompt_block_reason,
        tool_call, Piece,
    },
    json::{as_object, field, get, get_array, get_str, index, invalid, Object},
};

type Result<T> = std::result::Result<T, StreamError>;

pub struct GeminiToOpenAi {
    model: String,
    /// Gemini's `responseId` is not a chat completion id; the caller's is
    /// on every chunk.
    id: String,
    created: u64,
    include_usage: bool,
    usage: Option<Value>,
    /// The candidates seen so far, in order of first appearance.
    choices: Vec<Choice>,
    /// Tool calls across the stream, for their ids (`call_<n>`, as in the
    /// non-streaming translation).
    calls: usize,
    events: usize,
    finished: bool,
}

/// One candidate's progress: it becomes OpenAI choice `index`.
struct Choice {
    index: u64,
    /// OpenAI numbers a choice's tool calls 0, 1, 2….
    tool_calls: usize,
    /// Its finish chunk went out; Gemini says nothing after it.
    done: bool,
}

impl GeminiToOpenAi {
    /// `id` and `created` (unix seconds) are the caller's, as for the
    /// non-streaming translation; `include_usage` is the client's
    /// `stream_options.include_usage`.
    pub fn new(requested_model: &str, id: String, created: u64, include_usage: bool) -> Self {
        Self {
            model: requested_model.to_owned(),
            id,
            created,
            include_usage,
            usage: None,
            choices: Vec::new(),
            calls: 0,
            events: 0,
            finished: false,
        }
    }

    /// The OpenAI-shaped usage reported so far, for accounting.
    pub fn usage(&self) -> Option<Value> {
        self.usage.clone()
    }

    /// The chunks one upstream event becomes. Events are counted from 1 in
    /// errors (`stream event 3.candidates[0].finishReason: ...`).
    pub fn event(&mut self, ev: &SseEvent) -> Result<Vec<String>> {
        self.events += 1;
        let at = format!("stream event {}", self.events);
        let data: Value = serde_json::from_str(&ev.data)
            .map_err(|e| invalid(&at, format!("not valid JSON: {e}")))?;
        let r = as_object(&data, &at)?;
        if let Some(error) = get(r, "error") {
            return Err(upstream_error(error));
        }
        // Validated by mapping it at once, so a bad count is reported with
        // the event that sent it.
        if let Some(usage) = get(r, "usageMetadata") {
            let usage = openai_usage(Some(usage), "usageMetadata").map_err(|e| within(&at, e))?;
            self.usage = Some(usage);
        }
        let candidates = get_array(r, "candidates", &at)?.unwrap_or_default();
        let mut frames = Vec::new();
        if candidates.is_empty() {
            // A blocked prompt is one event without candidates; as in the
            // non-streaming translation, the answer is an empty one its
            // filter stopped.
            if prompt_block_reason(r, &at)?.is_some() {
                let choice = self.choice(0, &mut frames);
                if !std::mem::replace(&mut self.choices[choice].done, true) {
                    frames.push(self.chunk(0, json!({}), Some("content_filter")));
                }
            }
            return Ok(frames);
        }
        let candidates_path = field(&at, "candidates");
        for (position, candidate) in candidates.iter().enumerate() {
            let path = index(&candidates_path, position);
            let c = as_object(candidate, &path)?;
            self.candidate(c, position, &path, &mut frames)?;
        }
        Ok(frames)
    }

    /// The trailing frames: the usage chunk if the client asked for it and
    /// Gemini sent usage, then `[DONE]`. Later calls return nothing. A
    /// stream that ended without a finish reason gets none made up, as with
    /// the other upstreams: the client sees the answer was cut.
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

    fn candidate(
        &mut self,
        c: &Object,
        position: usize,
        path: &str,
        frames: &mut Vec<String>,
    ) -> Result<()> {
        let index = candidate_index(c, position, path)?;
        let pieces = candidate_pieces(c, path)?;
        let reason = get_str(c, "finishReason", path)?;
        let choice = self.choice(index, frames);
        let has_content = pieces.iter().any(|p| match p {
            Piece::Text(t) => !t.is_empty(),
            Piece::Call { .. } => true,
        });
        if self.choices[choice].done {
            // Gemini may repeat an empty candidate beside the last usage.
            if has_content {
                return Err(invalid(
                    path,
                    format!("candidate {index} continues after its finishReason"),
                )
                .into());
            }
            return Ok(());
        }
        for piece in pieces {
            match piece {
                Piece::Text("") => {}
                Piece::Text(text) => {
                    frames.push(self.chunk(index, json!({ "content": text }), None))
                }
                Piece::Call { name, args } => {
                    let k = self.choices[choice].tool_calls;
                    self.choices[choice].tool_calls += 1;
                    let mut call = tool_call(self.calls, name, args);
                    self.calls += 1;
                    call["index"] = k.into();
                    frames.push(self.chunk(index, json!({ "tool_calls": [call] }), None));
                }
            }
        }
        if let Some(reason) = reason {
            let called = self.choices[choice].tool_calls > 0;
            self.choices[choice].done = true;
            let finish = finish_reason(Some(reason), called);
            frames.push(self.chunk(index, json!({}), Some(finish)));
        }
        Ok(())
    }

    /// The position of candidate `index` in `choices`; a candidate seen for
    /// the first time gets its role chunk.
    fn choice(&mut self, index: u64, frames: &mut Vec<String>) -> usize {
        if let Some(i) = self.choices.iter().position(|c| c.index == index) {
            return i;
        }
        frames.push(self.chunk(index, json!({ "role": "assistant", "content": "" }), None));
        self.choices.push(Choice {
            index,
            tool_calls: 0,
            done: false,
        });
        self.choices.len() - 1
    }

    fn chunk(&self, index: u64, delta: Value, finish_reason: Option<&str>) -> String {
        let choice = json!({ "index": index, "delta": delta, "finish_reason": finish_reason });
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

/// A Google error (`{code, message, status}`), read leniently: an error
/// report is passed on even when malformed. `status` (`UNAVAILABLE`,
/// `RESOURCE_EXHAUSTED`…) is what names its kind.
fn upstream_error(error: &Value) -> StreamError {
    let member = |key| error.get(key).and_then(Value::as_str);
    StreamError::Upstream {
        kind: member("status").unwrap_or("error").to_owned(),
        message: member("message")
            .map(str::to_owned)
            .unwrap_or_else(|| error.to_string()),
    }
}
