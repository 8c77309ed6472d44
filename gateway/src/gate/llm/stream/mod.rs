//! Streamed answers, translated event by event.
//!
//! Nothing is buffered: each upstream server-sent event becomes the client
//! protocol's frames as soon as its bytes arrive, so the client sees tokens
//! as the upstream produces them and a long answer costs no more memory than
//! its largest event. The parser is bounded ([`MAX_EVENT_BYTES`]) for the
//! same reason: a broken upstream cannot grow memory by never ending a line.
//!
//! Stop reasons and usage go through the non-streaming mappings, so a client
//! sees the same values whether it streamed or not.
//!
//! The caller drives it: [`SseParser::push`] each body chunk, hand each
//! event to the translator's `event`, write the frames it returns, and call
//! `finish` when the upstream body ends. On an error it writes
//! [`StreamError::openai_frame`] or [`StreamError::anthropic_frame`] (the
//! client's protocol) and closes the stream: the response is already a 200,
//! so an error can only be said in the stream.
mod anthropic_to_openai;
#[cfg(test)]
mod bedrock_tests;
mod bedrock_to_openai;
mod chat_to_responses;
#[cfg(test)]
mod chat_to_responses_tests;
pub mod eventstream;
#[cfg(test)]
mod gemini_tests;
mod gemini_to_openai;
mod openai_to_anthropic;
mod sse;
#[cfg(test)]
mod tests;

use serde_json::{json, Value};

use super::translate::{
    json::{get, invalid, wrong_type, Object},
    TranslateError,
};
pub use anthropic_to_openai::AnthropicToOpenAi;
pub use bedrock_to_openai::BedrockToOpenAi;
pub use chat_to_responses::ChatToResponses;
pub use eventstream::{EventMessage, EventStreamDecoder, EventStreamError, HeaderValue};
pub use gemini_to_openai::GeminiToOpenAi;
pub use openai_to_anthropic::OpenAiToAnthropic;
pub use sse::{encode, SseError, SseEvent, SseParser, MAX_EVENT_BYTES};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The upstream's stream is not valid for its protocol, or says what the
    /// client's cannot; the field names the event (`stream event 3.delta`).
    #[error(transparent)]
    Translate(#[from] TranslateError),
    /// The upstream ended its stream with an error of its own (overloaded,
    /// server error) after the answer had started.
    #[error("upstream stream error {kind}: {message}")]
    Upstream { kind: String, message: String },
    /// A guardrail ended the answer (the message names the policy, never
    /// the text found).
    #[error("{0}")]
    Blocked(String),
}

impl StreamError {
    /// Read leniently: an error report is passed on even when malformed.
    fn upstream(error: Option<&Value>) -> Self {
        let member = |key| error.and_then(|e| e.get(key)).and_then(Value::as_str);
        Self::Upstream {
            kind: member("type").unwrap_or("error").to_owned(),
            message: member("message")
                .map(str::to_owned)
                .unwrap_or_else(|| error.map_or_else(String::new, Value::to_string)),
        }
    }

    /// The upstream's own type is passed on; a translation failure is the
    /// gateway's side of the exchange, so the protocol's server-error type.
    fn kind_and_message(&self, server_error: &'static str) -> (&str, String) {
        match self {
            Self::Upstream { kind, message } => (kind, message.clone()),
            Self::Blocked(message) => ("invalid_request_error", message.clone()),
            Self::Translate(e) => (
                server_error,
                format!("the upstream's stream could not be translated: {e}"),
            ),
        }
    }

    /// An OpenAI stream error: a chunk holding only `error`, which the
    /// OpenAI SDKs raise. No `[DONE]` follows.
    pub fn openai_frame(&self) -> String {
        let (kind, message) = self.kind_and_message("server_error");
        let error = json!({ "message": message, "type": kind, "param": null, "code": null });
        frame(None, &json!({ "error": error }))
    }

    /// An Anthropic `error` event, as the Messages API sends mid-stream.
    pub fn anthropic_frame(&self) -> String {
        let (kind, message) = self.kind_and_message("api_error");
        frame(
            Some("error"),
            &json!({ "type": "error", "error": { "type": kind, "message": message } }),
        )
    }
}

/// One chunk of an OpenAI chat stream as an object, `None` at `[DONE]`.
/// A chunk that is not a JSON object, or that reports an error after the
/// 200 (OpenAI sends a chunk holding `error`), ends the stream. `at` names
/// the chunk in messages.
fn chat_chunk(ev: &SseEvent, at: &str) -> Result<Option<Object>, StreamError> {
    if ev.data == "[DONE]" {
        return Ok(None);
    }
    let chunk: Value =
        serde_json::from_str(&ev.data).map_err(|e| invalid(at, format!("not valid JSON: {e}")))?;
    let chunk = match chunk {
        Value::Object(c) => c,
        other => return Err(wrong_type(at, "an object", &other).into()),
    };
    if let Some(error) = get(&chunk, "error") {
        return Err(StreamError::upstream(Some(error)));
    }
    Ok(Some(chunk))
}

fn frame(event: Option<&str>, data: &Value) -> String {
    encode(event, &data.to_string())
}

/// The shared mappings name fields from the body's root; in a stream they
/// sit inside an event, so its path goes in front.
fn within(at: &str, e: TranslateError) -> TranslateError {
    let prefix = |field: String| format!("{at}.{field}");
    match e {
        TranslateError::Missing { field } => TranslateError::Missing {
            field: prefix(field),
        },
        TranslateError::Invalid { field, reason } => TranslateError::Invalid {
            field: prefix(field),
            reason,
        },
        TranslateError::Unsupported { field, reason } => TranslateError::Unsupported {
            field: prefix(field),
            reason,
        },
    }
}
