//! OpenAI `chat.completion.chunk` stream → OpenAI Responses API stream,
//! for Responses clients served by providers that speak only chat (or that
//! the gate reaches through chat).
//!
//! The Responses stream is a sequence of typed events, each named in the
//! SSE `event:` and in `type`, numbered by `sequence_number`:
//! `response.created` and `response.in_progress` first; then per output
//! item `response.output_item.added`, its content (for a message:
//! `response.content_part.added`, `response.output_text.delta`…,
//! `response.output_text.done`, `response.content_part.done`; for a
//! function call: `response.function_call_arguments.delta`…, `.done`) and
//! `response.output_item.done`; last `response.completed` or
//! `response.incomplete` with the whole response and its usage. There is
//! no `[DONE]`.
//!
//! Unlike the other translations this one keeps the answer so far: the
//! `.done` events and the final response repeat the whole text and
//! arguments, so memory grows with the answer (what the client is sent
//! grows the same way).
//!
//! Output items go out one at a time, as OpenAI sends them: a new item
//! closes the open one.
use serde_json::{json, Value};

use super::{chat_chunk, frame, within, SseEvent, StreamError};
use crate::gate::llm::translate::{
    json::{as_object, field, get, get_array, get_str, get_u64, index, unsupported},
    responses::{
        item_id, output_text, refusal_part, request_echo, response_object, responses_usage, status,
    },
    TranslateError,
};

type Result<T> = std::result::Result<T, StreamError>;

pub struct ChatToResponses {
    model: String,
    id: String,
    created: u64,
    /// Request members the response objects repeat; see
    /// [`ChatToResponses::echo_request`].
    echo: serde_json::Map<String, Value>,
    /// The next event's `sequence_number`.
    sequence: u64,
    started: bool,
    /// The output items so far, each in its latest form.
    output: Vec<Value>,
    open: Option<Open>,
    /// Chat tool-call indexes seen, to tell a new call from one that
    /// resumes after another item started.
    calls: Vec<u64>,
    /// Validated when it arrived.
    finish_reason: Option<String>,
    /// Responses-shaped, from the last chunk that carried usage.
    usage: Option<Value>,
    chunks: usize,
    done: bool,
}

/// The output item being streamed.
#[derive(Clone, Copy)]
enum Open {
    /// A message, and its open content part: its index and kind.
    Message {
        item: usize,
        part: Option<(usize, Part)>,
    },
    /// A function call, by its chat tool-call index.
    Call { item: usize, tool: u64 },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Text,
    Refusal,
}

impl Part {
    /// The part's member holding its text, and its event-name stem.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Part::Text => ("text", "response.output_text"),
            Part::Refusal => ("refusal", "response.refusal"),
        }
    }
}

impl ChatToResponses {
    /// `model` is the name to report, `id` the response id (`resp_…`) the
    /// caller made up, from which the items' ids are derived, and `created`
    /// the caller's clock (unix seconds), as for
    /// `translate::chat_response_to_responses`.
    pub fn new(model: &str, id: String, created: u64) -> Self {
        Self {
            model: model.to_owned(),
            id,
            created,
            echo: serde_json::Map::new(),
            sequence: 0,
            started: false,
            output: Vec::new(),
            open: None,
            calls: Vec::new(),
            finish_reason: None,
            usage: None,
            chunks: 0,
            done: false,
        }
    }

    /// Makes every response object in the stream repeat the request's
    /// `instructions`, `tools`, `tool_choice`… as the Responses API does
    /// (`translate::echo_request` for the non-streaming answer).
    pub fn echo_request(&mut self, req: &Value) {
        self.echo = request_echo(req);
    }

    /// The Responses-shaped usage the upstream reported so far (the shape
    /// the client is sent), for accounting. Chat streams carry it only when
    /// asked: `translate::responses_request_to_chat` asks.
    pub fn usage(&self) -> Option<Value> {
        self.usage.clone()
    }

    /// The frames one upstream chunk becomes. Chunks are counted from 1 in
    /// errors (`stream chunk 3.choices[0].delta: ...`); `[DONE]` is the end
    /// ([`Self::finish`]) and anything after it is ignored.
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
        // Usually a last chunk with no choices; some servers put it on the
        // finishing chunk instead. Either way the last one counts.
        if let Some(usage) = get(c, "usage") {
            let usage = responses_usage(Some(usage), "usage").map_err(|e| within(&at, e))?;
            self.usage = Some(usage);
        }
        self.start(&mut frames);
        // Requests translated from Responses never ask for n > 1, so one
        // choice is all there is.
        if let Some(choice) = get_array(c, "choices", &at)?.and_then(<[Value]>::first) {
            self.choice(choice, &at, &mut frames)?;
        }
        Ok(frames)
    }

    /// The trailing frames: the open item's end, then `response.completed`
    /// (or `response.incomplete`) with the whole response. Called at
    /// `[DONE]`, or by the caller when the upstream body ended without one;
    /// later calls return nothing. A stream that ended without a
    /// `finish_reason` was cut short: it is incomplete, for no reason the
    /// upstream gave.
    pub fn finish(&mut self) -> Vec<String> {
        if std::mem::replace(&mut self.done, true) {
            return Vec::new();
        }
        let mut frames = Vec::new();
        // Nothing came before the end; the client still gets a whole
        // (empty) response.
        self.start(&mut frames);
        self.close(&mut frames);
        // Validated when the chunk carrying it arrived.
        let (status, incomplete) = status(self.finish_reason.as_deref(), "finish_reason")
            .unwrap_or(("incomplete", json!({ "reason": null })));
        let mut response = self.response(status);
        response["incomplete_details"] = incomplete;
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(kind, json!({ "response": response }), &mut frames);
        frames
    }

    /// What the client is sent when the stream fails: an `error` event
    /// (as [`StreamError::openai_responses_frame`]) and `response.failed`
    /// with the output so far. The stream ends after them.
    pub fn error_frames(&self, e: &StreamError) -> String {
        let (kind, message) = e.kind_and_message("server_error");
        // The response's error code is one of a fixed set the SDKs check.
        let code = if kind.contains("rate_limit") {
            "rate_limit_exceeded"
        } else {
            "server_error"
        };
        let mut response = self.response("failed");
        response["error"] = json!({ "code": code, "message": message });
        let failed = json!({
            "type": "response.failed",
            "sequence_number": self.sequence + 1,
            "response": response,
        });
        e.openai_responses_frame(self.sequence) + &frame(Some("response.failed"), &failed)
    }

    fn start(&mut self, frames: &mut Vec<String>) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let response = self.response("in_progress");
        self.emit("response.created", json!({ "response": response }), frames);
        self.emit(
            "response.in_progress",
            json!({ "response": response }),
            frames,
        );
    }

    fn choice(&mut self, choice: &Value, at: &str, frames: &mut Vec<String>) -> Result<()> {
        let path = index(&field(at, "choices"), 0);
        let ch = as_object(choice, &path)?;
        if let Some(delta) = get(ch, "delta") {
            let delta_path = field(&path, "delta");
            let d = as_object(delta, &delta_path)?;
            for (key, part) in [("content", Part::Text), ("refusal", Part::Refusal)] {
                if let Some(text) = get_str(d, key, &delta_path)?.filter(|t| !t.is_empty()) {
                    self.text(part, text, frames);
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
            status(Some(finish), &field(&path, "finish_reason"))?;
            self.finish_reason = Some(finish.to_owned());
            self.close(frames);
        }
        Ok(())
    }

    fn text(&mut self, part: Part, text: &str, frames: &mut Vec<String>) {
        let (item, open_part) = match self.open {
            Some(Open::Message { item, part }) => (item, part),
            _ => {
                self.close(frames);
                let item = self.output.len();
                self.output.push(json!({
                    "type": "message",
                    "id": item_id(&self.id, "msg", item),
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                }));
                let added = json!({ "output_index": item, "item": self.output[item] });
                self.emit("response.output_item.added", added, frames);
                (item, None)
            }
        };
        let content_index = match open_part {
            Some((k, open)) if open == part => k,
            _ => {
                self.close_part(item, open_part, frames);
                let content = &mut self.output[item]["content"];
                let k = content.as_array().map_or(0, Vec::len);
                let empty = match part {
                    Part::Text => output_text(""),
                    Part::Refusal => refusal_part(""),
                };
                if let Some(content) = content.as_array_mut() {
                    content.push(empty.clone());
                }
                let added = json!({
                    "item_id": self.output[item]["id"],
                    "output_index": item,
                    "content_index": k,
                    "part": empty,
                });
                self.emit("response.content_part.added", added, frames);
                k
            }
        };
        self.open = Some(Open::Message {
            item,
            part: Some((content_index, part)),
        });
        let (member, stem) = part.names();
        if let Some(Value::String(s)) = self.output[item]["content"]
            .get_mut(content_index)
            .and_then(|p| p.get_mut(member))
        {
            s.push_str(text);
        }
        let mut delta = json!({
            "item_id": self.output[item]["id"],
            "output_index": item,
            "content_index": content_index,
            "delta": text,
        });
        if part == Part::Text {
            // Log-probabilities are not asked for; the SDKs want the list.
            delta["logprobs"] = json!([]);
        }
        self.emit(&format!("{stem}.delta"), delta, frames);
    }

    /// The first delta of a call has its id and name; later ones only
    /// argument pieces.
    fn tool_call(&mut self, call: &Value, path: &str, frames: &mut Vec<String>) -> Result<()> {
        let c = as_object(call, path)?;
        let tool = get_u64(c, "index", path)?.ok_or_else(|| TranslateError::Missing {
            field: field(path, "index"),
        })?;
        let function_path = field(path, "function");
        let function = get(c, "function")
            .map(|f| as_object(f, &function_path))
            .transpose()?;
        let item = match self.open {
            Some(Open::Call { item, tool: open }) if open == tool => item,
            _ => {
                if self.calls.contains(&tool) {
                    return Err(unsupported(
                        field(path, "index"),
                        format!("tool call {tool} resumes after another output item started; Responses output items are sent one at a time"),
                    )
                    .into());
                }
                if let Some(t) = get_str(c, "type", path)?.filter(|t| *t != "function") {
                    return Err(unsupported(
                        field(path, "type"),
                        format!("tool call type {t:?} has no OpenAI Responses equivalent"),
                    )
                    .into());
                }
                let call_id = get_str(c, "id", path)?.ok_or_else(|| TranslateError::Missing {
                    field: field(path, "id"),
                })?;
                let name = function
                    .map(|f| get_str(f, "name", &function_path))
                    .transpose()?
                    .flatten()
                    .ok_or_else(|| TranslateError::Missing {
                        field: field(&function_path, "name"),
                    })?;
                self.close(frames);
                let item = self.output.len();
                self.output.push(json!({
                    "type": "function_call",
                    "id": item_id(&self.id, "fc", item),
                    "call_id": call_id,
                    "name": name,
                    "arguments": "",
                    "status": "in_progress",
                }));
                self.calls.push(tool);
                self.open = Some(Open::Call { item, tool });
                let added = json!({ "output_index": item, "item": self.output[item] });
                self.emit("response.output_item.added", added, frames);
                item
            }
        };
        let piece = function
            .map(|f| get_str(f, "arguments", &function_path))
            .transpose()?
            .flatten()
            .filter(|a| !a.is_empty());
        if let Some(piece) = piece {
            self.arguments(item, piece, frames);
        }
        Ok(())
    }

    fn arguments(&mut self, item: usize, piece: &str, frames: &mut Vec<String>) {
        if let Some(Value::String(s)) = self.output[item].get_mut("arguments") {
            s.push_str(piece);
        }
        let delta = json!({
            "item_id": self.output[item]["id"],
            "output_index": item,
            "delta": piece,
        });
        self.emit("response.function_call_arguments.delta", delta, frames);
    }

    /// Ends the open item, and the open part of a message.
    fn close(&mut self, frames: &mut Vec<String>) {
        let item = match self.open.take() {
            None => return,
            Some(Open::Message { item, part }) => {
                self.close_part(item, part, frames);
                item
            }
            Some(Open::Call { item, .. }) => {
                // A function without parameters streams no argument
                // pieces, but clients parse `arguments` as JSON, and the
                // non-streaming translation sends `{}`; so does this.
                if self.output[item]["arguments"] == "" {
                    self.arguments(item, "{}", frames);
                }
                let done = json!({
                    "item_id": self.output[item]["id"],
                    "output_index": item,
                    "arguments": self.output[item]["arguments"],
                });
                self.emit("response.function_call_arguments.done", done, frames);
                item
            }
        };
        self.output[item]["status"] = json!("completed");
        let done = json!({ "output_index": item, "item": self.output[item] });
        self.emit("response.output_item.done", done, frames);
    }

    fn close_part(&mut self, item: usize, part: Option<(usize, Part)>, frames: &mut Vec<String>) {
        let Some((k, part)) = part else { return };
        let whole = self.output[item]["content"][k].clone();
        let (member, stem) = part.names();
        let mut done = json!({
            "item_id": self.output[item]["id"],
            "output_index": item,
            "content_index": k,
        });
        done[member] = whole[member].clone();
        if part == Part::Text {
            done["logprobs"] = json!([]);
        }
        self.emit(&format!("{stem}.done"), done, frames);
        let done = json!({
            "item_id": self.output[item]["id"],
            "output_index": item,
            "content_index": k,
            "part": whole,
        });
        self.emit("response.content_part.done", done, frames);
    }

    /// The response as it stands, with `status`.
    fn response(&self, status: &str) -> Value {
        let output = if status == "in_progress" {
            json!([])
        } else {
            Value::Array(self.output.clone())
        };
        let mut response = response_object(&self.id, &self.model, self.created, status, output);
        if status != "in_progress" {
            response["usage"] = self
                .usage
                .clone()
                .unwrap_or_else(|| responses_usage(None, "usage").unwrap_or_default());
        }
        if let Some(r) = response.as_object_mut() {
            r.extend(self.echo.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        response
    }

    /// One event, named in `event:` and `type`, with the next sequence
    /// number.
    fn emit(&mut self, kind: &str, mut data: Value, frames: &mut Vec<String>) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        frames.push(frame(Some(kind), &data));
    }
}

impl StreamError {
    /// A Responses API `error` event, as the API sends when a stream
    /// fails. It needs the stream's next sequence number, so a Responses
    /// client is best sent [`ChatToResponses::error_frames`], which adds
    /// `response.failed` after it.
    pub fn openai_responses_frame(&self, sequence_number: u64) -> String {
        let (kind, message) = self.kind_and_message("server_error");
        frame(
            Some("error"),
            &json!({
                "type": "error",
                "code": kind,
                "message": message,
                "param": null,
                "sequence_number": sequence_number,
            }),
        )
    }
}
