//! Triggers found by walking bytes instead of matching literals: runs of
//! digits and separators for the number rules, runs of base64 characters,
//! hex-and-colon runs for IPv6, and IBAN country codes.
//!
//! A literal anchor does not suit these rules: every digit (or dot, dash,
//! colon) of a JSON document or a log line would open a window, and the
//! windows covered most of such text. A run is a maximal stretch of the
//! characters a rule's regex can match, so every match lies inside one run
//! and a search that starts at a run's start finds what a search of the
//! whole text finds there; runs too short (too few digits) to hold a match
//! the rule's validator accepts are skipped.
use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickKind};

use super::classes::{self, digit, RunWalk};
use super::config::BuildError;

/// Which trigger a built-in rule runs on (see [`super::text::Spec`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Trigger {
    /// The rule's literal anchors, through the Aho-Corasick prefilter.
    Anchors,
    /// The same, for a rule whose every match starts where one of its
    /// anchors does, at an ASCII word boundary (`\b(?:ignore|…) …`): its
    /// windows open at such hits and reach forward only.
    LeadingAnchors,
    /// The same, for a rule whose every match holds one of its anchors at
    /// an ASCII word start (`… no (?:rules|limits)`): hits inside a word
    /// ("rest" in "request", "now" in "know") open no window.
    WordAnchors,
    /// A number run (see [`numbers`]) with at least what it needs.
    Number(NumberNeeds),
    /// Two capital letters and two digits at a word start: where every
    /// IBAN match starts.
    CountryCode,
    /// A run of hex digits, colons and dots with `::` or six colons or
    /// more: what every IPv6 address the rule accepts lies in.
    Colons,
    /// A run of base64 characters at least `min` long that may decode to
    /// text ([`may_decode_to_text`]): the rule looks for text encoded in
    /// base64 and finds nothing, of its own or as data inside, in a match
    /// that cannot decode to text. Its pattern must be
    /// `[A-Za-z0-9+/_\-]{min,max}={0,2}`, which [`base64_match`] finds
    /// without a regex.
    Base64 { min: usize, max: usize },
}

/// What a number run must have for a rule to run in it: the least any
/// match its validator accepts has. Counts are over the whole run, so a
/// run that passes may still hold no match; one that fails holds none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct NumberNeeds {
    pub digits: u32,
    pub dots: u32,
    pub dashes: u32,
    pub plus: bool,
    /// A word that must occur within `reach` bytes before the match, as
    /// ASCII fragments that every such word contains (see
    /// [`ContextWords::before`]).
    pub context: Option<(&'static [&'static str], usize)>,
}

impl NumberNeeds {
    pub const fn digits(digits: u32) -> NumberNeeds {
        NumberNeeds {
            digits,
            dots: 0,
            dashes: 0,
            plus: false,
            context: None,
        }
    }

    /// Whether `run` has the counts; the context words are checked by the
    /// caller (with [`ContextWords`]), which is dearer and so comes last.
    pub(super) fn counted_in(&self, run: &NumberRun) -> bool {
        run.digits >= self.digits
            && run.dots >= self.dots
            && run.dashes >= self.dashes
            && (!self.plus || run.plus > 0)
    }
}

/// The context check of a [`NumberNeeds`], compiled: it runs for every
/// long number run (each date in a log), where comparing every fragment
/// at every position cost more than the rule's regex.
pub(super) struct ContextWords {
    fragments: AhoCorasick,
    reach: usize,
}

impl ContextWords {
    pub(super) fn new(fragments: &[&str], reach: usize) -> Result<ContextWords, BuildError> {
        let fragments = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .kind(Some(AhoCorasickKind::DFA))
            .build(fragments)
            .map_err(|e| BuildError {
                problems: vec![format!("guard context words: {e}")],
            })?;
        Ok(ContextWords { fragments, reach })
    }

    /// True if a fragment occurs, ignoring ASCII case, in the `reach`
    /// bytes (and up to three more, the rest of a split character) before
    /// `at`. A superset of `has_word` over `window_before(text, m, reach)`
    /// for any match `m` starting at `at` or later, when every word
    /// `has_word` looks for contains a fragment and no fragment holds `k`
    /// (KELVIN SIGN lower-cases to it) or ends in `i` (CAPITAL I WITH DOT
    /// lower-cases to `i` and a combining dot): those are the only
    /// non-ASCII characters whose lower case has ASCII letters.
    pub(super) fn before(&self, text: &str, at: usize) -> bool {
        let before = &text.as_bytes()[at.saturating_sub(self.reach + 3)..at];
        self.fragments.is_match(before)
    }
}

/// A maximal run of number characters (digits, space, `.`, `-`, `(`, `)`,
/// `+`: every character the number rules match) without its leading and
/// trailing spaces, which no match starts or ends with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct NumberRun {
    pub range: Range<usize>,
    pub digits: u32,
    pub dots: u32,
    pub dashes: u32,
    pub plus: u32,
}

/// The base64 alphabets' bytes (standard and URL-safe), as a table.
const BASE64_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/' | b'_' | b'-');
        b += 1;
    }
    table
};

/// The runs the run triggers need in `text[from..]`, in order, from one
/// pass over its 64-byte blocks ([`classes::RunWalk`]). A run that starts
/// before `from` is taken from `from`: a scan never reports a match that
/// starts there.
#[derive(Debug, Default)]
pub(super) struct Runs {
    /// Number runs with at least `min_digits` digits (and at least one).
    /// `min_digits` is the fewest any enabled number rule needs: in a
    /// stream, a run with fewer and every part of it run no rule, whole or
    /// cut, so it needs no protection from cuts either.
    pub numbers: Vec<NumberRun>,
    /// Maximal runs of base64 characters (both alphabets) at least
    /// `base64_min` long.
    pub base64: Vec<Range<usize>>,
}

/// [`Runs`] for the walks asked for (`None`: not needed). Only runs with
/// the digits, or the length, get a step of their own: hashes, UUIDs,
/// small numbers and indentation, most stretches of number bytes in
/// machine text, have too few digits, and words are too short for base64.
pub(super) fn runs(
    text: &str,
    from: usize,
    min_digits: Option<u32>,
    base64_min: Option<usize>,
) -> Runs {
    let bytes = text.as_bytes();
    let mut found = Runs::default();
    let min_digits = min_digits.map(|min| usize::try_from(min).unwrap_or(usize::MAX));
    let mut numbers = min_digits.map(RunWalk::new);
    let mut base64s = base64_min.map(RunWalk::new);
    let mut number = |range| found.numbers.push(number_run(bytes, range));
    let mut base64 = |range| found.base64.push(range);
    let mut base = from;
    while base < bytes.len() {
        let [numeric, digits, encoded] = classes::masks(bytes, base, |v| {
            [classes::number(v), digit(v), classes::base64(v)]
        });
        if let Some(walk) = &mut numbers {
            walk.block(base, numeric, digits, &mut number);
        }
        if let Some(walk) = &mut base64s {
            walk.block(base, encoded, encoded, &mut base64);
        }
        base += 64;
    }
    if let Some(walk) = numbers {
        walk.finish(bytes.len(), &mut number);
    }
    if let Some(walk) = base64s {
        walk.finish(bytes.len(), &mut base64);
    }
    found
}

/// The number run of number bytes `range`: its counts, and the range
/// without leading and trailing spaces.
fn number_run(bytes: &[u8], range: Range<usize>) -> NumberRun {
    let mut run = NumberRun {
        range: range.clone(),
        digits: 0,
        dots: 0,
        dashes: 0,
        plus: 0,
    };
    for &b in &bytes[range] {
        match b {
            b'0'..=b'9' => run.digits += 1,
            b'.' => run.dots += 1,
            b'-' => run.dashes += 1,
            b'+' => run.plus += 1,
            _ => {}
        }
    }
    // No match starts or ends with a space; a digit stops both loops.
    while bytes[run.range.start] == b' ' {
        run.range.start += 1;
    }
    while bytes[run.range.end - 1] == b' ' {
        run.range.end -= 1;
    }
    run
}

/// The starts of `[A-Z]{2}[0-9]{2}` at an ASCII word boundary in
/// `text[from..]`, in order: where an IBAN match (`\b[A-Z]{2}\d{2}…`) can
/// start. From masks of capitals and digits over 64-byte blocks that
/// overlap by three bytes, so every start's four bytes lie in one block.
pub(super) fn country_codes(text: &str, from: usize) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut codes = Vec::new();
    let mut base = from;
    while base < bytes.len() {
        let [upper, digit] =
            classes::masks(bytes, base, |v| [classes::upper(v), classes::digit(v)]);
        let mut starts = upper & upper >> 1 & digit >> 2 & digit >> 3 & classes::low_bits(61);
        while starts != 0 {
            let start = base + starts.trailing_zeros() as usize;
            starts &= starts - 1;
            if start == 0 || !is_word_byte(bytes[start - 1]) {
                codes.push(start);
            }
        }
        base += 61;
    }
    codes
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_hex_colon_byte(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':' || b == b'.'
}

/// Maximal runs of hex digits, `:` and `.` in `text[from..]` that hold a
/// `::` or six colons or more, in order. Every text `Ipv6Addr` parses does
/// (eight groups have seven colons, six groups and an IPv4 tail six, fewer
/// groups need `::`), and so does every part of a run that holds one:
/// runs without either (`14:30:00`, the most common in logs) hold no
/// address, whether a stream scans them whole or from a cut inside.
pub(super) fn colon_runs(text: &str, from: usize) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut runs = Vec::new();
    let mut at = from;
    // One SIMD pass over the colons: JSON and logs have one every few
    // bytes, and a `str::find` per colon (std's word-at-a-time memchr and
    // its set-up) was most of this function's time.
    for colon in memchr::memchr_iter(b':', &bytes[from..]).map(|i| from + i) {
        if colon < at {
            // Inside the run just read.
            continue;
        }
        // No colon lies between `at` and this one: the run's colons are
        // all from here on, so the bytes before are read only for a run
        // that counts.
        let mut end = colon;
        let mut colons = 0;
        let mut double = false;
        while end < bytes.len() && is_hex_colon_byte(bytes[end]) {
            if bytes[end] == b':' {
                colons += 1;
                double |= end > colon && bytes[end - 1] == b':';
            }
            end += 1;
        }
        let floor = at;
        at = end;
        if colons >= 6 || double {
            let mut start = colon;
            while start > floor && is_hex_colon_byte(bytes[start - 1]) {
                start -= 1;
            }
            runs.push(start..end);
        }
    }
    runs
}

fn is_base64_byte(b: u8) -> bool {
    BASE64_BYTES[usize::from(b)]
}

/// Share of decoded bytes that are printable ASCII or whitespace above
/// which a blob is text, not binary (images, keys, hashes).
pub(super) const PRINTABLE_SHARE: f64 = 0.9;

/// False when base64 characters `s` (no padding) cannot decode to the
/// printable share text needs, judged without decoding: a quantum whose
/// first character is not in A-Z or a-f (alphabet index 32 or more) starts
/// with a byte of 0x80 or more, which is not printable. Hashes, keys,
/// signatures and paths, most base64 runs in ordinary text, fail here.
pub(super) fn may_decode_to_text(s: &[u8]) -> bool {
    // Whole quanta only: a final lone character carries no byte.
    let s = &s[..s.len() - usize::from(s.len() % 4 == 1)];
    let high = s
        .iter()
        .step_by(4)
        .filter(|&&c| !(c.is_ascii_uppercase() || (b'a'..=b'f').contains(&c)))
        .count();
    // The decoded length of a run of n characters is 3n/4, rounded down;
    // the most printable bytes it can hold are compared as the decoded
    // bytes' count is.
    let len = s.len() * 3 / 4;
    len.saturating_sub(high) as f64 >= PRINTABLE_SHARE * len as f64
}

/// The leftmost match of `[A-Za-z0-9+/_\-]{min,max}={0,2}` (greedy, as
/// the regex crate finds it) in `text[..end]` starting at `at` or later.
/// That pattern as a regex counts to `max` and its lazy DFA thrashes; the
/// run is what it matches, so walking it is the same search.
pub(super) fn base64_match(
    text: &str,
    at: usize,
    end: usize,
    min: usize,
    max: usize,
) -> Option<Range<usize>> {
    let bytes = &text.as_bytes()[..end];
    let mut start = at;
    while start < bytes.len() {
        if !is_base64_byte(bytes[start]) {
            start += 1;
            continue;
        }
        let mut run_end = start;
        while run_end < bytes.len() && is_base64_byte(bytes[run_end]) {
            run_end += 1;
        }
        if run_end - start < min {
            start = run_end;
            continue;
        }
        let mut match_end = run_end.min(start + max);
        if match_end == run_end {
            for _ in 0..2 {
                if bytes.get(match_end) == Some(&b'=') {
                    match_end += 1;
                }
            }
        }
        return Some(start..match_end);
    }
    None
}

// Expected runs are lists of ranges that often hold just one.
#[allow(clippy::single_range_in_vec_init)]
#[cfg(test)]
mod tests {
    use super::*;

    /// The tests' `min_digits`: two, so short runs show in what they find.
    const MIN_RUN_DIGITS: u32 = 2;

    fn numbers(text: &str, from: usize) -> Vec<NumberRun> {
        number_runs(text, from, MIN_RUN_DIGITS)
    }

    /// Each walk is checked with the other on: they share the blocks.
    fn number_runs(text: &str, from: usize, min_digits: u32) -> Vec<NumberRun> {
        runs(text, from, Some(min_digits), Some(32)).numbers
    }

    fn base64_runs(text: &str, from: usize, min: usize) -> Vec<Range<usize>> {
        runs(text, from, Some(MIN_RUN_DIGITS), Some(min)).base64
    }

    fn is_number_byte(b: u8) -> bool {
        b.is_ascii_digit() || matches!(b, b' ' | b'.' | b'-' | b'(' | b')' | b'+')
    }

    /// `[A-Z]{2}[0-9]{2}` at `start`, at an ASCII word boundary.
    fn is_country_code(bytes: &[u8], start: usize) -> bool {
        let Some(&[first, second, tens, ones]) = bytes.get(start..start + 4) else {
            return false;
        };
        first.is_ascii_uppercase()
            && second.is_ascii_uppercase()
            && tens.is_ascii_digit()
            && ones.is_ascii_digit()
            && (start == 0 || !is_word_byte(bytes[start - 1]))
    }

    /// What `number_runs` and `country_codes` find, one byte at a time:
    /// the reference for the mask walks.
    fn byte_loop_runs(text: &str, from: usize, min: u32, codes: &mut Vec<usize>) -> Vec<NumberRun> {
        let bytes = text.as_bytes();
        let mut runs = Vec::new();
        let mut at = from;
        while let Some(digit) = (at..bytes.len()).find(|&i| bytes[i].is_ascii_digit()) {
            if digit >= from + 2 && is_country_code(bytes, digit - 2) {
                codes.push(digit - 2);
            }
            let mut start = digit;
            while start > at && is_number_byte(bytes[start - 1]) {
                start -= 1;
            }
            let mut end = start;
            while end < bytes.len() && is_number_byte(bytes[end]) {
                end += 1;
            }
            at = end;
            let run = &bytes[start..end];
            let count = |b: u8| run.iter().filter(|&&c| c == b).count() as u32;
            let digits = run.iter().filter(|b| b.is_ascii_digit()).count() as u32;
            if digits < min {
                continue;
            }
            let start = start + run.iter().take_while(|&&b| b == b' ').count();
            let end = end - run.iter().rev().take_while(|&&b| b == b' ').count();
            runs.push(NumberRun {
                range: start..end,
                digits,
                dots: count(b'.'),
                dashes: count(b'-'),
                plus: count(b'+'),
            });
        }
        runs
    }

    /// The mask walk finds what a byte loop finds, in texts of number
    /// bytes, letters and capitals (country codes) of every length around
    /// the 64-byte blocks, from every start, for every minimum.
    #[test]
    fn number_runs_equal_a_byte_loop() {
        let alphabet = b"0123456789 .-()+aXYZ/";
        let mut next = crate::policy::guard::tests::xorshift(0x2545_F491_4F6C_DD1Du64);
        for case in 0..400 {
            let len = next(200);
            // Runs of one byte class, so long runs cross blocks too.
            let mut text = String::new();
            while text.len() < len {
                let piece = match next(4) {
                    0 => "1".repeat(next(70)),
                    1 => " 2".repeat(next(40)),
                    _ => String::from(char::from(alphabet[next(alphabet.len())])),
                };
                text.push_str(&piece);
                if next(30) == 0 {
                    text.push('é');
                }
            }
            for from in (0..=text.len())
                .filter(|&f| text.is_char_boundary(f))
                .step_by(7)
            {
                for min in [1, 2, 4, 9] {
                    let mut want_codes = Vec::new();
                    assert_eq!(
                        number_runs(&text, from, min),
                        byte_loop_runs(&text, from, min, &mut want_codes),
                        "case {case} {text:?} from {from} min {min}"
                    );
                    assert_eq!(
                        country_codes(&text, from),
                        want_codes,
                        "{text:?} from {from}"
                    );
                }
            }
        }
    }

    fn number_texts(text: &str, from: usize) -> Vec<(&str, u32)> {
        numbers(text, from)
            .into_iter()
            .map(|r| (&text[r.range], r.digits))
            .collect()
    }

    #[test]
    fn number_runs_take_separators_and_trim_spaces() {
        assert_eq!(
            number_texts("call (415) 555-0132 today", 0),
            [("(415) 555-0132", 10)]
        );
        assert_eq!(
            number_texts("+44 20 7946 0958,", 0),
            [("+44 20 7946 0958", 12)]
        );
        // At the text's start and end, and glued to non-ASCII text.
        assert_eq!(number_texts("12", 0), [("12", 2)]);
        assert_eq!(number_texts("电话4155550132", 0), [("4155550132", 10)]);
        assert_eq!(number_texts("4155550132é", 0), [("4155550132", 10)]);
        // A slash, a letter or a comma ends a run.
        assert_eq!(
            number_texts("15/03/2024 1a2 3,4", 0),
            [("15", 2), ("03", 2), ("2024 1", 5), ("2 3", 2)]
        );
        // One digit is no run; separators alone are none.
        assert!(number_texts("a 1 b . - ( ) + c", 0).is_empty());
        assert!(number_texts("", 0).is_empty());
    }

    #[test]
    fn number_runs_count_what_rules_need() {
        let runs = numbers("ip 10.0.4.17 ssn 536-22-8714, tel +1 (212) 555-0147", 0);
        let counts: Vec<_> = runs
            .iter()
            .map(|r| (r.digits, r.dots, r.dashes, r.plus))
            .collect();
        assert_eq!(counts, [(6, 3, 0, 0), (9, 0, 2, 0), (11, 0, 1, 1)]);
    }

    #[test]
    fn number_runs_start_at_from() {
        let text = "4111 1111 1111 1111";
        assert_eq!(number_texts(text, 5), [("1111 1111 1111", 12)]);
        assert_eq!(number_texts(text, 17), [("11", 2)]);
        assert!(number_texts(text, 18).is_empty());
        assert!(number_texts(text, text.len()).is_empty());
    }

    #[test]
    fn number_needs_are_minimums() {
        let needs = NumberNeeds::digits(10);
        let text = "a 415 555 0132 b 415 555 013";
        let runs = numbers(text, 0);
        assert!(needs.counted_in(&runs[0]));
        assert!(!needs.counted_in(&runs[1]));
        let ip = NumberNeeds {
            dots: 3,
            ..NumberNeeds::digits(4)
        };
        for (text, want) in [
            ("1.2.3.4", true),
            ("1.2.3", false),
            ("1.2.3.", false),
            ("1.2.3.45", true),
        ] {
            assert_eq!(ip.counted_in(&numbers(text, 0)[0]), want, "{text}");
        }
        let plus = NumberNeeds {
            plus: true,
            ..NumberNeeds::digits(2)
        };
        assert!(plus.counted_in(&numbers("+12", 0)[0]));
        assert!(!plus.counted_in(&numbers("12", 0)[0]));
    }

    #[test]
    fn context_fragments_look_back_a_bounded_distance() {
        let words = ContextWords::new(&["tel", "mero"], 8).unwrap();
        for (text, want) in [
            ("TEL: 12", true),
            ("tel:     12", true),
            ("tel:          12", false),
            ("número 12", true),
            ("12", false),
            ("hotel 12", true),
        ] {
            let run = numbers(text, 0).pop().unwrap();
            assert_eq!(words.before(text, run.range.start), want, "{text}");
        }
    }

    #[test]
    fn country_codes_need_a_word_start_two_capitals_and_two_digits() {
        let text = "DE89 x GB29NWBK aDE89 D89 DEX9 éFR14 _NL91 NO9";
        let found: Vec<&str> = country_codes(text, 0)
            .into_iter()
            .map(|s| &text[s..s + 4])
            .collect();
        assert_eq!(found, ["DE89", "GB29", "FR14"]);
        assert_eq!(country_codes("GB29", 0), [0]);
        assert_eq!(country_codes("GB2", 0), Vec::<usize>::new());
        assert_eq!(country_codes("GB2 9", 0), Vec::<usize>::new());
        assert_eq!(country_codes("xx GB29", 3), [3]);
        assert_eq!(country_codes("xx GB29", 4), Vec::<usize>::new());
    }

    #[test]
    fn colon_runs_need_a_double_colon_or_six_colons() {
        let text = "\"a\": 1, at 14:30:00.5Z fe80::1%eth0 std::vec x:y \
                    1:2:3:4:5:6 1:2:3:4:5:6:1.2.3.4 a:b::";
        let found: Vec<&str> = colon_runs(text, 0).into_iter().map(|r| &text[r]).collect();
        assert_eq!(found, ["fe80::1", "d::", "1:2:3:4:5:6:1.2.3.4", "a:b::"]);
        assert_eq!(colon_runs("::", 0), [0..2]);
        assert_eq!(colon_runs("::", 1), Vec::<Range<usize>>::new());
    }

    #[test]
    fn base64_match_is_the_regex_match() {
        let regex = regex::Regex::new(r"[A-Za-z0-9+/_\-]{4,10}={0,2}").unwrap();
        for text in [
            "abc abcd",
            "abcd=== x",
            "abcdefghijklmno==",
            "abcdefghij==",
            "abcdefghijk=",
            "é+/_-é",
            "ab=cdef=",
            "",
            "abc",
            "a-b_c+d/e=f",
        ] {
            for at in 0..=text.len() {
                if !text.is_char_boundary(at) {
                    continue;
                }
                for end in at..=text.len() {
                    if !text.is_char_boundary(end) {
                        continue;
                    }
                    assert_eq!(
                        base64_match(text, at, end, 4, 10),
                        regex.find_at(&text[..end], at).map(|m| m.range()),
                        "{text:?} {at} {end}"
                    );
                }
            }
        }
    }

    #[test]
    fn base64_runs_at_and_below_the_minimum() {
        let long = "A".repeat(32);
        let short = "A".repeat(31);
        for (text, want) in [
            (long.clone(), vec![0..32]),
            (short.clone(), vec![]),
            (format!(" {short} {long}="), vec![33..65]),
            (format!("é{long}é"), vec![2..34]),
            (format!("{short}+/_-"), vec![0..35]),
            (format!("{long}.{long}"), vec![0..32, 33..65]),
        ] {
            assert_eq!(base64_runs(&text, 0, 32), want, "{text}");
        }
        assert_eq!(base64_runs(&long, 1, 32), Vec::<Range<usize>>::new());
        assert_eq!(base64_runs(&format!("x{long}"), 1, 32), [1..33]);
    }
}
