//! Guardrails: the scanning engine the LLM, MCP and API gates share to find
//! personal data, credentials and prompt-injection attempts in text, and to
//! redact and later restore what they found.
//!
//! Pure values and functions, no I/O: a [`Scanner`] is compiled once from a
//! [`GuardConfig`] and shared (it is `Send + Sync`); scanning a `&str`
//! returns [`Finding`]s — kind, rule name and byte range, never the matched
//! text, so a finding can go into logs and metric labels as it is.
//!
//! - One-shot: [`Scanner::scan`], then [`Redactor::redact`] replaces what
//!   was found with typed placeholders (`<EMAIL_1>`, `<CREDIT_CARD_2>`) and
//!   remembers the originals; [`Redactor::restore`] (or a [`RestoreStream`]
//!   for a streamed answer) puts them back.
//! - Streamed: a [`StreamScanner`] takes chunks (SSE deltas) and returns
//!   redacted text as soon as no match can still run into it, holding back
//!   a bounded tail.
//!
//! Input is `&str`: callers holding bytes convert them with
//! `String::from_utf8_lossy` first. Invalid sequences become U+FFFD, which
//! no detector matches, so lossy conversion can hide nothing that a byte
//! scanner would have found in valid text. Every scan is linear in its input
//! (the `regex` crate has no backtracking) and refused above
//! [`GuardConfig::max_scan_bytes`] with [`ScanError::TooLarge`].
//!
//! How a scan runs: Aho-Corasick passes over the text find the literal
//! anchors of detectors ("@", "sk-", "-----BEGIN", trigger words), one
//! pass for case-sensitive anchors and one ignoring ASCII case; byte loops
//! find the runs the number, IBAN, IPv6 and base64 rules need (digits with
//! their separators, long enough). A detector's regex runs only around its
//! anchors or inside its runs, and each regex match is checked by the
//! detector's validator (Luhn, mod-97, context words, parsing) before it
//! becomes a finding. Overlapping findings are resolved longest first,
//! then most specific.
mod classes;
mod config;
mod finding;
mod injection;
mod pii;
mod redact;
mod runs;
mod scanner;
mod secrets;
mod stream;
mod text;
mod topic;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod topic_tests;

pub use config::{BuildError, CustomRule, GuardConfig, DEFAULT_MAX_SCAN_BYTES};
pub use finding::{Category, CategorySet, Finding, Kind};
pub use redact::{FindingFilter, Redactor, RestoreStream, Restorer};
pub use scanner::{ScanError, Scanner};
pub use stream::{StreamScanner, DEFAULT_WINDOW};
pub use topic::{
    validate_topics, TopicConfig, TopicHit, TopicMatch, TopicMatcher, DEFAULT_TOPIC_THRESHOLD,
    MAX_TOPIC_EXAMPLES,
};
