//! OpenAI Chat Completions ↔ Anthropic Messages, non-streaming.
//!
//! Each function takes one parsed body and returns the other protocol's
//! body. What the other side cannot express is an error naming the field,
//! not a silent drop: a client that asked for JSON mode or log-probs must
//! learn it will not get them. The only things dropped are hints that do not
//! change what the model is asked (prompt-cache markers, image `detail`,
//! message `name`), each at the place it happens.
//!
//! `model` is copied as sent: choosing the served model is the gate's job,
//! and the response functions take the name to report as an argument.
pub(crate) mod bedrock;
mod content;
pub(crate) mod gemini;
#[cfg(test)]
mod gemini_tests;
pub(crate) mod json;
pub mod plain;
#[cfg(test)]
mod plain_tests;
mod request;
pub(crate) mod response;
pub(crate) mod responses;
#[cfg(test)]
mod responses_tests;
#[cfg(test)]
pub(super) mod tests;

pub use bedrock::{bedrock_response_to_openai, openai_request_to_bedrock};
pub use gemini::{gemini_response_to_openai, openai_request_to_gemini};
pub use request::{anthropic_request_to_openai, openai_request_to_anthropic};
pub(crate) use response::OPENAI_ANSWER_READ;
pub use response::{anthropic_response_to_openai, openai_response_to_anthropic};
pub use responses::{chat_response_to_responses, echo_request, responses_request_to_chat};

/// Anthropic requires `max_tokens`; OpenAI clients usually leave it out.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Why a body could not be translated. Every message starts with the path of
/// the offending field (`messages[2].content[0]: ...`) because it is sent
/// back to the client as a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("{field}: required field is missing")]
    Missing { field: String },
    /// Malformed for its own protocol: wrong type, unknown value, bad JSON.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Well-formed, but the other protocol has no way to say it.
    #[error("{field}: {reason}")]
    Unsupported { field: String, reason: String },
}

impl TranslateError {
    /// The path of the offending field, for logs and error bodies.
    pub fn field(&self) -> &str {
        match self {
            Self::Missing { field }
            | Self::Invalid { field, .. }
            | Self::Unsupported { field, .. } => field,
        }
    }
}
