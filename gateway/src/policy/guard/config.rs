//! What a [`super::Scanner`] is built from.
use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::finding::Kind;

/// Largest text one scan accepts unless configured otherwise: larger than
/// any LLM prompt or tool result the gates buffer, small enough that a scan
/// stays in the tens of milliseconds.
pub const DEFAULT_MAX_SCAN_BYTES: usize = 8 << 20;

/// Longest custom rule name: it becomes a placeholder label, and the
/// streamed restorer holds back at most one placeholder's length.
pub(super) const MAX_RULE_NAME: usize = 48;

/// Compiled size allowed for one custom regex. Keeps a careless pattern
/// (`\w{1,10000}`) from taking megabytes per gate.
pub(super) const CUSTOM_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Which detectors run and the operator's own rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GuardConfig {
    /// Built-in detectors to run (default: all of them). `custom` is not a
    /// detector here; custom rules go in `custom`.
    pub detectors: Vec<Kind>,
    /// Rules of the operator's own: a regex or a keyword list each.
    pub custom: Vec<CustomRule>,
    /// Largest text, in bytes, one scan (or one stream in total) accepts;
    /// larger input is an error, not a partial scan.
    pub max_scan_bytes: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            detectors: Kind::BUILTIN.to_vec(),
            custom: Vec::new(),
            max_scan_bytes: DEFAULT_MAX_SCAN_BYTES,
        }
    }
}

/// One custom rule: exactly one of `regex` or `keywords`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CustomRule {
    /// Names the rule in findings and metrics and, upper-cased, in
    /// placeholders (`project-x` → `<PROJECT_X_1>`). `[A-Za-z0-9_-]`, at
    /// most 48 characters.
    pub name: String,
    /// A pattern in the `regex` crate's syntax (no look-around, no
    /// backreferences: matching stays linear).
    pub regex: Option<String>,
    /// Words or phrases matched case-insensitively as whole words; spaces
    /// inside a phrase match any run of whitespace.
    pub keywords: Vec<String>,
}

impl GuardConfig {
    /// Contradictions and bad patterns, as messages naming the field
    /// (`field` is where this block sits, e.g. `llm.guard`). Empty when the
    /// config builds.
    pub fn validate(&self, field: &str) -> Vec<String> {
        let mut errors = Vec::new();
        let mut seen_kinds = HashMap::new();
        for (i, kind) in self.detectors.iter().enumerate() {
            if *kind == Kind::Custom {
                errors.push(format!(
                    "{field}.detectors[{i}] is \"custom\": custom rules are listed under {field}.custom"
                ));
            }
            if let Some(first) = seen_kinds.insert(*kind, i) {
                errors.push(format!(
                    "{field}.detectors[{i}] repeats \"{kind}\", already in {field}.detectors[{first}]"
                ));
            }
        }
        if self.max_scan_bytes == 0 {
            errors.push(format!(
                "{field}.max_scan_bytes is 0: every scan would fail; the default is {DEFAULT_MAX_SCAN_BYTES}"
            ));
        }
        let mut seen_names = HashMap::new();
        for (i, rule) in self.custom.iter().enumerate() {
            let at = format!("{field}.custom[{i}]");
            let name = rule.name.as_str();
            errors.extend(name_problem(name, &at));
            if let Some(first) = seen_names.insert(name.to_ascii_lowercase(), i) {
                errors.push(format!(
                    "{at}.name {name:?} is used twice, also in {field}.custom[{first}]"
                ));
            }
            match (&rule.regex, rule.keywords.is_empty()) {
                (Some(_), false) => errors.push(format!(
                    "{at}: set regex or keywords, not both (make two rules)"
                )),
                (None, true) => errors.push(format!("{at}: set regex or keywords")),
                (Some(pattern), true) => {
                    if let Err(e) = compile_custom_regex(pattern) {
                        errors.push(format!("{at}.regex: {e}"));
                    }
                }
                (None, false) => {
                    for (k, word) in rule.keywords.iter().enumerate() {
                        if word.trim().is_empty() {
                            errors.push(format!("{at}.keywords[{k}] is blank"));
                        }
                    }
                }
            }
        }
        errors
    }
}

/// A custom rule's or topic's name becomes a placeholder label and a
/// metric label: `[A-Za-z0-9_-]`, at most [`MAX_RULE_NAME`]. The problem,
/// for the entry at `at`, if it is not.
pub(super) fn name_problem(name: &str, at: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_RULE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (!valid).then(|| {
        format!("{at}.name {name:?}: use 1 to {MAX_RULE_NAME} characters of A-Z, a-z, 0-9, _ and -")
    })
}

/// Compiles a custom pattern with the size limit, refusing patterns that
/// match the empty string (they would "find" something at every position).
pub(super) fn compile_custom_regex(pattern: &str) -> Result<regex::Regex, String> {
    let re = regex::RegexBuilder::new(pattern)
        .size_limit(CUSTOM_REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| e.to_string())?;
    if re.is_match("") {
        return Err(format!(
            "{pattern:?} matches the empty string; require at least one character"
        ));
    }
    Ok(re)
}

/// The regex for a keyword list: case-insensitive alternation of the
/// escaped words, whitespace inside a phrase matching any whitespace run,
/// and `\b` only on an edge that is a word character (so "C++" still has a
/// boundary before it but none required after the `+`).
pub(super) fn keyword_pattern(words: &[String]) -> String {
    let alternatives: Vec<String> = words
        .iter()
        .map(|w| w.trim())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let body = w
                .split_whitespace()
                .map(regex::escape)
                .collect::<Vec<_>>()
                .join(r"\s{1,8}");
            let word_edge = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            let open = if word_edge(w.chars().next()) {
                r"\b"
            } else {
                ""
            };
            let close = if word_edge(w.chars().last()) {
                r"\b"
            } else {
                ""
            };
            format!("{open}{body}{close}")
        })
        .collect();
    format!("(?i)(?:{})", alternatives.join("|"))
}

/// Why a [`super::Scanner`] could not be built: the config's problems, in
/// [`GuardConfig::validate`]'s words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid guard config:\n{}",
    .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
)]
pub struct BuildError {
    pub problems: Vec<String>,
}
