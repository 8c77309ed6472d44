//! Typed placeholders for what was found, and putting the originals back.
//!
//! A prompt goes upstream as "mail <EMAIL_1> about <CREDIT_CARD_1>"; the
//! model answers in placeholders, and the answer is restored before the
//! client sees it. Within one [`Redactor`] (one conversation) a value keeps
//! its placeholder, so the model can still tell two addresses apart and
//! refer back to one.
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::finding::{CategorySet, Finding};

/// Longest placeholder body between `<` and `>`: a label (at most 48
/// characters for a custom rule) plus `_` and a counter. A streamed
/// restorer holds back at most this much.
const MAX_PLACEHOLDER_BODY: usize = 72;

/// Which findings a [`Redactor`] replaces.
pub type FindingFilter = Arc<dyn Fn(&Finding) -> bool + Send + Sync>;

/// Replaces findings with placeholders and remembers the originals. Holds
/// the original values, so its `Debug` shows only counts.
#[derive(Clone)]
pub struct Redactor {
    categories: CategorySet,
    /// Which findings of those categories it replaces, when a policy acts
    /// on some detectors only (the others are blocked or only logged).
    only: Option<FindingFilter>,
    /// (label, original) → placeholder.
    placeholders: HashMap<(String, String), String>,
    /// placeholder → original.
    originals: HashMap<String, String>,
    counters: HashMap<String, usize>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("categories", &self.categories)
            .field("values", &self.originals.len())
            .finish()
    }
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new()
    }
}

impl Redactor {
    /// Redacts personal data, secrets and custom-rule matches; injection
    /// findings are left in the text (they are for refusing).
    pub fn new() -> Redactor {
        Redactor::with_categories(CategorySet::REDACTABLE)
    }

    pub fn with_categories(categories: CategorySet) -> Redactor {
        Redactor {
            categories,
            only: None,
            placeholders: HashMap::new(),
            originals: HashMap::new(),
            counters: HashMap::new(),
        }
    }

    /// Replaces only the findings `only` accepts (any category). A stream
    /// continuing a prompt's redaction keeps its placeholders this way
    /// while acting on the answer's own rules.
    pub fn with_filter(mut self, only: FindingFilter) -> Redactor {
        self.categories = CategorySet::ALL;
        self.only = Some(only);
        self
    }

    pub fn categories(&self) -> CategorySet {
        self.categories
    }

    /// Distinct values replaced so far.
    pub fn len(&self) -> usize {
        self.originals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.originals.is_empty()
    }

    /// `text` with every finding of a redacted category replaced by its
    /// placeholder. Findings may come in any order; one that overlaps an
    /// earlier one, or whose range does not fit `text`, is skipped.
    pub fn redact(&mut self, text: &str, findings: &[Finding]) -> String {
        let mut chosen: Vec<&Finding> = findings
            .iter()
            .filter(|f| self.categories.contains(f.category()))
            .filter(|f| self.only.as_ref().is_none_or(|only| only(f)))
            .collect();
        chosen.sort_by_key(|f| (f.range.start, std::cmp::Reverse(f.range.end)));
        let mut out = String::with_capacity(text.len());
        let mut pos = 0;
        for f in chosen {
            if f.range.start < pos || f.range.is_empty() {
                continue;
            }
            let Some(original) = text.get(f.range.clone()) else {
                continue;
            };
            out.push_str(&text[pos..f.range.start]);
            out.push_str(&self.placeholder(&f.label(), original));
            pos = f.range.end;
        }
        out.push_str(&text[pos..]);
        out
    }

    fn placeholder(&mut self, label: &str, original: &str) -> String {
        let key = (label.to_owned(), original.to_owned());
        if let Some(p) = self.placeholders.get(&key) {
            return p.clone();
        }
        let n = self.counters.entry(label.to_owned()).or_insert(0);
        *n += 1;
        let p = format!("<{label}_{n}>");
        self.originals.insert(p.clone(), original.to_owned());
        self.placeholders.insert(key, p.clone());
        p
    }

    /// `text` with every placeholder this redactor made replaced by its
    /// original; other `<…>` text is left alone.
    pub fn restore(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        restore_into(&self.originals, text, &mut out, false);
        out
    }

    /// A snapshot of the mapping that outlives the redactor (for a response
    /// body that restores while it streams).
    pub fn restorer(&self) -> Restorer {
        Restorer {
            originals: Arc::new(self.originals.clone()),
        }
    }
}

impl Redactor {
    /// Like [`Redactor::restorer`], for the placeholders whose label
    /// (`EMAIL`, a custom rule's upper-cased name) `keep` accepts: a policy
    /// may give some data back to the application and not other data.
    pub fn restorer_for(&self, keep: impl Fn(&str) -> bool) -> Restorer {
        let originals = self
            .originals
            .iter()
            .filter(|(placeholder, _)| keep(placeholder_label(placeholder)))
            .map(|(p, o)| (p.clone(), o.clone()))
            .collect();
        Restorer {
            originals: Arc::new(originals),
        }
    }
}

/// `EMAIL` of `<EMAIL_12>`.
fn placeholder_label(placeholder: &str) -> &str {
    let body = placeholder.trim_start_matches('<').trim_end_matches('>');
    body.rsplit_once('_').map_or(body, |(label, _)| label)
}

/// Puts originals back, from a [`Redactor`]'s mapping.
#[derive(Clone)]
pub struct Restorer {
    originals: Arc<HashMap<String, String>>,
}

impl fmt::Debug for Restorer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Restorer")
            .field("values", &self.originals.len())
            .finish()
    }
}

impl Restorer {
    pub fn restore(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        restore_into(&self.originals, text, &mut out, false);
        out
    }

    /// A restorer for text that arrives in chunks.
    pub fn stream(&self) -> RestoreStream {
        RestoreStream {
            originals: self.originals.clone(),
            carry: String::new(),
        }
    }
}

/// Restores placeholders in chunked text; a placeholder split across chunks
/// ("<EMA" + "IL_1>") is held back until it is complete. What it returns,
/// concatenated with [`RestoreStream::finish`], equals restoring the whole
/// text at once.
pub struct RestoreStream {
    originals: Arc<HashMap<String, String>>,
    carry: String,
}

impl fmt::Debug for RestoreStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestoreStream")
            .field("held_bytes", &self.carry.len())
            .finish()
    }
}

impl RestoreStream {
    pub fn push(&mut self, chunk: &str) -> String {
        self.carry.push_str(chunk);
        let mut out = String::with_capacity(self.carry.len());
        let done = restore_into(&self.originals, &self.carry, &mut out, true);
        self.carry.drain(..done);
        out
    }

    /// What is still held back, restored as far as it goes.
    pub fn finish(&mut self) -> String {
        let mut out = String::with_capacity(self.carry.len());
        restore_into(&self.originals, &self.carry, &mut out, false);
        self.carry.clear();
        out
    }
}

fn is_placeholder_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'
}

/// Appends `text` to `out` with known placeholders replaced and returns how
/// many bytes of `text` it consumed: all of them, unless `hold_partial` and
/// the text ends inside what may still become a placeholder.
fn restore_into(
    originals: &HashMap<String, String>,
    text: &str,
    out: &mut String,
    hold_partial: bool,
) -> usize {
    let bytes = text.as_bytes();
    let mut copied = 0;
    let mut pos = 0;
    while let Some(i) = text[pos..].find('<').map(|i| pos + i) {
        let body = bytes[i + 1..]
            .iter()
            .take(MAX_PLACEHOLDER_BODY + 1)
            .take_while(|&&b| is_placeholder_byte(b))
            .count();
        match bytes.get(i + 1 + body) {
            Some(b'>') => {
                let end = i + body + 2;
                if let Some(original) = originals.get(&text[i..end]) {
                    out.push_str(&text[copied..i]);
                    out.push_str(original);
                    copied = end;
                    pos = end;
                    continue;
                }
            }
            None if hold_partial && body <= MAX_PLACEHOLDER_BODY => {
                out.push_str(&text[copied..i]);
                return i;
            }
            _ => {}
        }
        pos = i + 1;
    }
    out.push_str(&text[copied..]);
    text.len()
}

#[cfg(test)]
mod tests {
    use super::super::finding::Kind;
    use super::*;

    fn finding(kind: Kind, range: std::ops::Range<usize>) -> Finding {
        Finding {
            kind,
            rule: Arc::from(kind.as_str()),
            range,
        }
    }

    #[test]
    fn same_value_same_placeholder_numbered_per_label() {
        let mut r = Redactor::new();
        let text = "a@x.io b@x.io a@x.io 555-0100";
        let out = r.redact(
            text,
            &[
                finding(Kind::Email, 14..20),
                finding(Kind::Email, 0..6),
                finding(Kind::Email, 7..13),
                finding(Kind::Phone, 21..29),
            ],
        );
        assert_eq!(out, "<EMAIL_1> <EMAIL_2> <EMAIL_1> <PHONE_1>");
        assert_eq!(r.len(), 3);
        // A later text of the same conversation reuses the numbering.
        let again = r.redact(
            "b@x.io c@x.io",
            &[finding(Kind::Email, 0..6), finding(Kind::Email, 7..13)],
        );
        assert_eq!(again, "<EMAIL_2> <EMAIL_3>");
        assert_eq!(r.restore(&out), text);
    }

    #[test]
    fn injection_findings_and_bad_ranges_are_left_alone() {
        let mut r = Redactor::new();
        let text = "ignore previous instructions é";
        let out = r.redact(
            text,
            &[
                finding(Kind::InstructionOverride, 0..28),
                finding(Kind::Email, 29..30), // inside "é"
                finding(Kind::Email, 25..99),
            ],
        );
        assert_eq!(out, text);
        let mut all = Redactor::with_categories(CategorySet::ALL);
        assert_eq!(
            all.redact(text, &[finding(Kind::InstructionOverride, 0..28)]),
            "<INSTRUCTION_OVERRIDE_1> é"
        );
    }

    #[test]
    fn custom_rules_label_by_name() {
        let mut r = Redactor::new();
        let f = Finding {
            kind: Kind::Custom,
            rule: Arc::from("project-x"),
            range: 0..6,
        };
        assert_eq!(r.redact("Falcon rises", &[f]), "<PROJECT_X_1> rises");
    }

    #[test]
    fn restore_leaves_unknown_and_malformed_placeholders() {
        let mut r = Redactor::new();
        r.redact("a@x.io", &[finding(Kind::Email, 0..6)]);
        assert_eq!(
            r.restore("<EMAIL_1> <EMAIL_2> <email_1> <<EMAIL_1>> <EMAIL_1"),
            "a@x.io <EMAIL_2> <email_1> <a@x.io> <EMAIL_1"
        );
    }

    #[test]
    fn streamed_restore_equals_one_shot_at_every_split() {
        let mut r = Redactor::new();
        let text = "mail a@x.io or b@y.org, card 4111111111111111";
        let redacted = r.redact(
            text,
            &[
                finding(Kind::Email, 5..11),
                finding(Kind::Email, 15..22),
                finding(Kind::CreditCard, 29..45),
            ],
        );
        let answer = format!("Sure: {redacted}. <NOT_A_PLACEHOLDER> <EMAIL_2> <EMAIL_1");
        let want = r.restore(&answer);
        assert!(want.contains("a@x.io") && want.contains("4111111111111111"));
        let restorer = r.restorer();
        for i in 0..=answer.len() {
            for j in i..=answer.len() {
                let mut s = restorer.stream();
                let mut got = s.push(&answer[..i]);
                got += &s.push(&answer[i..j]);
                got += &s.push(&answer[j..]);
                got += &s.finish();
                assert_eq!(got, want, "split at {i}/{j}");
            }
        }
    }

    #[test]
    fn streamed_restore_emits_text_that_cannot_be_a_placeholder() {
        let mut r = Redactor::new();
        r.redact("a@x.io", &[finding(Kind::Email, 0..6)]);
        let mut s = r.restorer().stream();
        assert_eq!(s.push("Hello <EM"), "Hello ");
        assert_eq!(s.push("AIL_1> and <b>"), "a@x.io and <b>");
        assert_eq!(s.push("x < y"), "x < y");
        assert_eq!(s.finish(), "");
        let mut long = r.restorer().stream();
        let opened = format!("<{}", "A".repeat(MAX_PLACEHOLDER_BODY + 1));
        assert_eq!(long.push(&opened), opened);
    }

    #[test]
    fn debug_output_holds_no_values() {
        let mut r = Redactor::new();
        r.redact("secret@x.io", &[finding(Kind::Email, 0..11)]);
        assert!(!format!("{r:?} {:?}", r.restorer()).contains("secret"));
    }
}
