//! The detector contract and the small text helpers validators share.
use std::ops::Range;

use super::finding::Kind;
use super::runs::Trigger;

/// How far a validator may look before a match (context words such as
/// "SSN") or after it (a digit that would make the number longer). The
/// stream scanner keeps this much already-sent text as context and treats a
/// match this close to the end of what it has as not yet final.
pub(super) const LOOKAROUND: usize = 64;

/// The text a validator sees. `more` is true while streaming: text may
/// still follow `text`, so a validator that needs what comes next (a PEM
/// block's END line) answers [`Verdict::Pending`] instead of guessing.
pub(super) struct Hay<'a> {
    pub text: &'a str,
    pub more: bool,
}

pub(super) enum Verdict {
    /// A finding over this range (the match itself, or trimmed/extended).
    Accept(Range<usize>),
    Reject,
    /// Undecidable until more text arrives; only when `Hay::more`.
    Pending,
}

pub(super) type Check = fn(&Hay<'_>, Range<usize>) -> Verdict;

/// How a rule's matches that hide text (a base64 blob, Unicode tag
/// characters) are read: decoded once per match, for the rule's own
/// verdict on the text and for a second scan that finds data carried
/// inside.
#[derive(Clone, Copy)]
pub(super) struct Decoding {
    /// The hidden text, if the match carries any.
    pub decode: fn(&str) -> Option<String>,
    /// Whether the decoded text alone makes the match a finding of the
    /// rule (base64 that decodes to instructions), besides its `check`.
    pub finding: Option<fn(&str) -> bool>,
    /// The rule name for a finding of data inside.
    pub data_rule: &'static str,
}

/// A built-in rule: a regex, the literals that any match contains (the
/// prefilter runs the regex only when one occurs; case is ignored), and a
/// validator.
pub(super) struct Spec {
    pub kind: Kind,
    pub rule: &'static str,
    /// Empty: no literal is common to all matches; the regex always runs.
    pub anchors: &'static [&'static [u8]],
    pub pattern: &'static str,
    /// Each space in `pattern` stands for a run of whitespace (injection
    /// phrases: "ignore   all\nprevious instructions").
    pub flexible_spaces: bool,
    pub check: Check,
    /// For encodings: decode each match and scan the result for data; a
    /// finding inside makes the whole match a finding of that kind, under
    /// [`Decoding::data_rule`].
    pub decode: Option<Decoding>,
    /// What makes the scanner run the regex, and where.
    pub trigger: Trigger,
    /// A second word every match holds near an anchor; `None` for most.
    pub near: Option<Near>,
}

/// Words of which every match of a phrase rule holds one, whole, close to
/// one of its anchor hits: the scanner then opens a window only at anchor
/// hits with such a word near. Injection anchors ("rule", "limit", "what")
/// fill ordinary text; a phrase needs them next to a rarer word ("no
/// rules", "void"), and windows around every lone anchor covered most of
/// the text.
///
/// Distances are in bytes from the anchor hit's start to the near word's
/// start, over the longest text the pattern allows between them: every
/// `\s{1,8}` space counts 24 bytes (eight three-byte Unicode spaces) and
/// every word its longest spelling. The scanner's tests check on the corpora
/// that every match holds an anchor with a near word within these bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Near {
    /// Whole words, lowercase ASCII (matched ignoring ASCII case).
    pub words: &'static [&'static str],
    /// A near word may start this far before the anchor hit's start.
    pub before: usize,
    /// Or this far after it.
    pub after: usize,
    /// Where known, the farthest a match ends past the start of an anchor
    /// hit that has its near word (a rule whose last word is its anchor):
    /// the window ends there rather than a whole longest match later.
    pub tail: Option<usize>,
}

/// Accepts the regex match as it is.
pub(super) fn accept(_: &Hay<'_>, m: Range<usize>) -> Verdict {
    Verdict::Accept(m)
}

/// For a rule whose findings all come from its [`Decoding`].
pub(super) fn reject(_: &Hay<'_>, _: Range<usize>) -> Verdict {
    Verdict::Reject
}

pub(super) fn floor_boundary(text: &str, mut i: usize) -> usize {
    if i >= text.len() {
        return text.len();
    }
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The first character boundary at or after `i` (at most the length).
pub(super) fn ceil_boundary(text: &str, mut i: usize) -> usize {
    if i >= text.len() {
        return text.len();
    }
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

pub(super) fn char_before(text: &str, i: usize) -> Option<char> {
    text.get(..i)?.chars().next_back()
}

pub(super) fn char_after(text: &str, i: usize) -> Option<char> {
    text.get(i..)?.chars().next()
}

/// The two characters before `i`, nearest first.
pub(super) fn two_before(text: &str, i: usize) -> (Option<char>, Option<char>) {
    let mut it = text.get(..i).unwrap_or("").chars().rev();
    (it.next(), it.next())
}

/// The two characters from `i` on.
pub(super) fn two_after(text: &str, i: usize) -> (Option<char>, Option<char>) {
    let mut it = text.get(i..).unwrap_or("").chars();
    (it.next(), it.next())
}

pub(super) fn is_word(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

pub(super) fn is_digit(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_digit())
}

/// About `n` bytes of text before `i`: from the character boundary at or
/// before `i - n` (so up to three bytes more, never a split character).
pub(super) fn window_before(text: &str, i: usize, n: usize) -> &str {
    let start = floor_boundary(text, i.saturating_sub(n));
    text.get(start..i).unwrap_or("")
}

/// True if one of `words` (lower case) occurs in `context` starting at a
/// word boundary, so "tel" counts in "tel:" but not in "hotel".
pub(super) fn has_word(context: &str, words: &[&str]) -> bool {
    let lower = context.to_lowercase();
    let bytes = lower.as_bytes();
    words.iter().any(|w| {
        // The occurrences `match_indices` finds (leftmost, not
        // overlapping), compared in place: contexts are a few dozen bytes,
        // where building its two-way searcher for every word of every call
        // cost more than the search. A valid UTF-8 word only matches at a
        // character start.
        let w = w.as_bytes();
        // No list holds an empty word; `windows` needs a width.
        if w.is_empty() {
            return false;
        }
        let mut at = 0;
        while let Some(i) = bytes
            .get(at..)
            .and_then(|rest| {
                // The first byte alone rules out most places, without a
                // call to compare slices.
                rest.windows(w.len()).position(|x| x[0] == w[0] && x == w)
            })
            .map(|p| at + p)
        {
            let before = lower[..i].chars().next_back();
            let after = lower[i + w.len()..].chars().next();
            if !is_word(before) && !after.is_some_and(|c| c.is_alphabetic()) {
                return true;
            }
            at = i + w.len();
        }
        false
    })
}

/// A number is part of a longer one when a digit, or a separator followed
/// by a digit, touches it: "4111 1111" inside a card, "1.2.3" inside
/// "1.2.3.4". `seps` are the separators that continue a number.
pub(super) fn continues_number(text: &str, m: &Range<usize>, seps: &[char]) -> bool {
    let (b1, b2) = two_before(text, m.start);
    let (a1, a2) = two_after(text, m.end);
    let joins = |near: Option<char>, far: Option<char>| {
        is_digit(near) || (near.is_some_and(|c| seps.contains(&c)) && is_digit(far))
    };
    joins(b1, b2) || joins(a1, a2)
}

/// The ASCII digits of `s`, as values 0-9.
pub(super) fn digits_of(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

pub(super) fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// Placeholder and sample values ("sk-xxxxxxxx…", "AKIAXXXXXXXXXXXXXXXX")
/// have few distinct characters; generated secrets have many.
pub(super) fn looks_random(body: &str, min_distinct: usize) -> bool {
    let mut seen = [false; 128];
    let mut distinct = 0;
    for b in body.bytes() {
        if b < 128 && !seen[b as usize] {
            seen[b as usize] = true;
            distinct += 1;
        }
    }
    distinct >= min_distinct
}

/// Which of lower case, upper case and digits occur in `s`.
pub(super) fn char_classes(s: &str) -> (bool, bool, bool) {
    (
        s.bytes().any(|b| b.is_ascii_lowercase()),
        s.bytes().any(|b| b.is_ascii_uppercase()),
        s.bytes().any(|b| b.is_ascii_digit()),
    )
}

/// The longest match `pattern` can have, in bytes, for the subset of the
/// `regex` crate's syntax that the built-in rules use (literals, escapes,
/// classes, groups, flags, alternation, bounded repetition). `None` when a
/// match can be arbitrarily long (`+`, `*`, `{n,}`) or the pattern uses
/// syntax this does not know; the scanner then runs the rule over the
/// whole text instead of around its anchors. Overestimating is harmless
/// (larger windows); underestimating would lose matches, so every unknown
/// width is taken at its largest.
///
/// One assumption: under Unicode case folding an ASCII letter counts as
/// one byte, although `k` and `s` also match KELVIN SIGN (U+212A) and LONG
/// S (U+017F). The scanner runs such rules over the whole text when either
/// character occurs (see `FOLD_ANCHORS`).
pub(super) fn max_match_len(pattern: &str) -> Option<usize> {
    let mut p = PatternWidth {
        chars: pattern.chars().collect(),
        pos: 0,
    };
    let len = p.alternation(Flags {
        fold: false,
        unicode: true,
    })?;
    (p.pos == p.chars.len()).then_some(len)
}

#[derive(Clone, Copy)]
struct Flags {
    fold: bool,
    unicode: bool,
}

struct PatternWidth {
    chars: Vec<char>,
    pos: usize,
}

impl PatternWidth {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        let hit = self.peek() == Some(c);
        self.pos += usize::from(hit);
        hit
    }

    /// Up to the `)` closing the current group (not consumed) or the end.
    fn alternation(&mut self, mut flags: Flags) -> Option<usize> {
        let (mut best, mut branch) = (0, 0);
        loop {
            match self.peek() {
                None | Some(')') => return Some(best.max(branch)),
                Some('|') => {
                    self.pos += 1;
                    best = best.max(branch);
                    branch = 0;
                }
                Some(_) => {
                    // A bare flag group `(?i)` changes the rest of the group
                    // and takes no repetition.
                    if let Some(set) = self.flag_group(flags)? {
                        flags = set;
                        continue;
                    }
                    let atom = self.atom(flags)?;
                    branch += atom.checked_mul(self.repetition()?)?;
                }
            }
        }
    }

    /// `(?flags)`: the new flags; `Some(None)` when not at one.
    fn flag_group(&mut self, flags: Flags) -> Option<Option<Flags>> {
        let start = self.pos;
        if !(self.eat('(') && self.eat('?')) {
            self.pos = start;
            return Some(None);
        }
        let set = self.flags(flags)?;
        if self.eat(')') {
            return Some(Some(set));
        }
        self.pos = start;
        Some(None)
    }

    /// Flag letters up to `:` or `)` (not consumed).
    fn flags(&mut self, mut flags: Flags) -> Option<Flags> {
        let mut on = true;
        loop {
            match self.peek()? {
                ':' | ')' => return Some(flags),
                '-' => on = false,
                'i' => flags.fold = on,
                'u' => flags.unicode = on,
                // Multi-line, dot-all and lazy-by-default change no width.
                'm' | 's' | 'U' => {}
                _ => return None,
            }
            self.pos += 1;
        }
    }

    fn atom(&mut self, flags: Flags) -> Option<usize> {
        match self.next()? {
            '(' => {
                let inner = if self.eat('?') {
                    let local = self.flags(flags)?;
                    if !self.eat(':') {
                        return None;
                    }
                    local
                } else {
                    flags
                };
                let len = self.alternation(inner)?;
                self.eat(')').then_some(len)
            }
            '[' => self.class(flags),
            '\\' => self.escape(flags),
            '.' => Some(if flags.unicode { 4 } else { 1 }),
            '^' | '$' => Some(0),
            ')' | '|' | '*' | '+' | '?' | '{' => None,
            c => Some(char_width(c, flags)),
        }
    }

    /// The most times the preceding atom can repeat.
    fn repetition(&mut self) -> Option<usize> {
        let times = match self.peek() {
            Some('?') => {
                self.pos += 1;
                1
            }
            Some('*' | '+') => return None,
            Some('{') => {
                self.pos += 1;
                let low = self.number()?;
                let high = if self.eat(',') { self.number()? } else { low };
                if !self.eat('}') || high < low {
                    return None;
                }
                high
            }
            _ => return Some(1),
        };
        self.eat('?');
        Some(times)
    }

    fn number(&mut self) -> Option<usize> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        String::from_iter(&self.chars[start..self.pos]).parse().ok()
    }

    /// After a backslash, outside or inside a class.
    fn escape(&mut self, flags: Flags) -> Option<usize> {
        let wide = |unicode: usize| if flags.unicode { unicode } else { 1 };
        Some(match self.next()? {
            'b' | 'B' | 'A' | 'z' => 0,
            'd' | 'w' => wide(4),
            's' => wide(3),
            // Negated classes and properties can match any character.
            'D' | 'W' | 'S' => 4,
            'p' | 'P' => {
                if self.eat('{') {
                    while self.next()? != '}' {}
                } else {
                    self.next()?;
                }
                4
            }
            'x' => {
                let hex: String = if self.eat('{') {
                    let start = self.pos;
                    while self.next()? != '}' {}
                    self.chars[start..self.pos - 1].iter().collect()
                } else {
                    [self.next()?, self.next()?].iter().collect()
                };
                char_width(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?, flags)
            }
            'n' | 't' | 'r' | 'f' | 'v' => 1,
            c if c.is_ascii_punctuation() => 1,
            _ => return None,
        })
    }

    /// After `[`: the widest character the class matches.
    fn class(&mut self, flags: Flags) -> Option<usize> {
        let negated = self.eat('^');
        let mut widest = 0;
        let mut first = true;
        loop {
            let c = self.next()?;
            match c {
                ']' if !first => break,
                '[' if self.eat(':') => {
                    // An ASCII class such as `[:alpha:]`.
                    while self.next()? != ']' {}
                    widest = widest.max(1);
                }
                '[' => return None,
                '&' | '~' if self.peek() == Some(c) => return None,
                '-' if self.peek() == Some('-') => return None,
                '\\' => widest = widest.max(self.escape(flags)?),
                c => widest = widest.max(char_width(c, flags)),
            }
            first = false;
        }
        Some(if negated { 4 } else { widest })
    }
}

/// Bytes a pattern character matches: its own, or under Unicode case
/// folding of a non-ASCII letter, up to four (ASCII: see
/// [`max_match_len`]).
fn char_width(c: char, flags: Flags) -> usize {
    if c.is_ascii() {
        1
    } else if flags.fold {
        4
    } else {
        c.len_utf8()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_known_numbers_and_rejects_a_changed_digit() {
        assert!(luhn_valid(&digits_of("4111111111111111")));
        assert!(luhn_valid(&digits_of("378282246310005")));
        assert!(!luhn_valid(&digits_of("4111111111111112")));
        assert!(!luhn_valid(&[]));
    }

    #[test]
    fn context_words_need_a_word_start() {
        assert!(has_word("please call me on", &["call"]));
        // As `match_indices` finds words, on every suffix of a text with
        // non-ASCII letters, repeats and words inside words.
        let reference = |context: &str, words: &[&str]| {
            let lower = context.to_lowercase();
            words.iter().any(|w| {
                lower.match_indices(w).any(|(i, _)| {
                    let before = lower[..i].chars().next_back();
                    let after = lower[i + w.len()..].chars().next();
                    !is_word(before) && !after.is_some_and(|c| c.is_alphabetic())
                })
            })
        };
        let text = "Tél: hotel TEL telephone ss#ss# ÉTÉ smsms sms, Téléphone tel";
        let words = ["tel", "tél", "ss#", "sms", "téléphone", "été", "phone"];
        for (i, _) in text.char_indices() {
            for w in words {
                assert_eq!(
                    has_word(&text[i..], &[w]),
                    reference(&text[i..], &[w]),
                    "{w} in {:?}",
                    &text[i..]
                );
            }
        }
        assert!(has_word("Tel:", &["tel"]));
        assert!(!has_word("the hotel room", &["tel"]));
        assert!(!has_word("telephony stack", &["tel"]));
    }

    #[test]
    fn numbers_continue_through_separators() {
        let t = "x 4111 1111 y";
        assert!(continues_number(t, &(2..6), &[' ']));
        assert!(!continues_number(t, &(2..11), &[' ']));
        assert!(continues_number("1.2.3.4.5", &(0..7), &['.']));
    }

    #[test]
    fn boundaries_respect_multibyte_text() {
        let t = "é1";
        assert_eq!(floor_boundary(t, 1), 0);
        assert_eq!(char_before(t, 2), Some('é'));
        assert_eq!(window_before(t, 2, 1), "é");
        assert_eq!(window_before(t, 3, 1), "1");
    }

    #[test]
    fn max_match_len_counts_bytes_and_refuses_unbounded_patterns() {
        for (pattern, want) in [
            (r"(?-u)\b\d{3}-\d{2}-\d{4}\b", Some(11)),
            (r"\d{3}", Some(12)),
            (r"(?-u:\d)\s", Some(4)),
            (r"a|bcd|ef", Some(3)),
            (r"(?i)ab(?:c|de)?", Some(4)),
            (r"é", Some(2)),
            (r"(?i)é", Some(4)),
            (r"(?i:a)é", Some(3)),
            (r"[a-z0-9'’]{1,2}", Some(6)),
            (r"[^a]", Some(4)),
            (r"\x{200B}|\x41", Some(3)),
            (r"x{2,5}?y", Some(6)),
            (r"\(\d{1,4}\)", Some(18)),
            (r"[\x{E0000}-\x{E007F}]", Some(4)),
            (r"a+", None),
            (r"a*b", None),
            (r"a{2,}", None),
            (r"(?P<n>a)", None),
            (r"(?x)a b", None),
            (r"(a", None),
        ] {
            assert_eq!(max_match_len(pattern), want, "{pattern}");
        }
    }
}
