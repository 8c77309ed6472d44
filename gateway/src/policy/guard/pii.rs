//! Personal data: email, phone, payment card, IBAN, US SSN, IP addresses.
//!
//! The regexes find shapes; the validators decide. Checksums (Luhn,
//! mod-97), number plans (NANP, SSN ranges), parsing (`std::net`) and
//! context words cut what a shape alone would flag: dates, versions, order
//! ids, loopback addresses.
//!
//! Patterns are ASCII (`(?-u)`): `\d` and `\b` mean ASCII digits and an
//! ASCII word boundary. The validators read ASCII digits only, so a `\d`
//! that also took other scripts' digits only made matches they threw away,
//! and a Unicode `\b` keeps the regex off its DFA whenever the text holds a
//! non-ASCII byte (see `Scanner::new`). A number glued to a non-ASCII letter
//! ("Tel.:4155550132", "电话4155550132") therefore reaches the validator,
//! which judges the neighbour itself where it matters.
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use super::finding::Kind;
use super::runs::{NumberNeeds, Trigger};
use super::text::{
    char_after, char_before, continues_number, digits_of, has_word, is_digit, is_word, luhn_valid,
    two_after, window_before, Hay, Spec, Verdict,
};

pub(super) fn specs() -> Vec<Spec> {
    vec![
        Spec {
            near: None,
            kind: Kind::Email,
            rule: "email",
            anchors: &[b"@"],
            // RFC 5321 caps the local part at 64 and a label at 63; the
            // common local-part characters only (quoted forms are not
            // worth the false positives).
            pattern: r"(?-u)[A-Za-z0-9._%+\-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}\b",
            flexible_spaces: false,
            check: check_email,
            decode: None,
            trigger: Trigger::Anchors,
        },
        Spec {
            near: None,
            kind: Kind::Phone,
            rule: "phone_international",
            anchors: &[],
            pattern: r"(?-u)\+[1-9]\d{0,2}(?:[ .\-]?(?:\(\d{1,4}\)|\d{1,5})){1,7}",
            flexible_spaces: false,
            check: check_phone_international,
            decode: None,
            trigger: Trigger::Number(NumberNeeds {
                plus: true,
                ..NumberNeeds::digits(8)
            }),
        },
        Spec {
            near: None,
            kind: Kind::Phone,
            rule: "phone_nanp",
            anchors: &[],
            pattern: r"(?-u)(?:\b1[ .\-])?(?:\(\d{3}\) ?|\b\d{3}[ .\-])\d{3}[ .\-]\d{4}\b",
            flexible_spaces: false,
            check: check_phone_nanp,
            decode: None,
            trigger: Trigger::Number(NumberNeeds::digits(10)),
        },
        Spec {
            near: None,
            kind: Kind::Phone,
            rule: "phone_national",
            anchors: &[],
            // Trunk-prefix national numbers: UK "020 7946 0958",
            // "07700 900123", German "030 1234 5678", French
            // "06 12 34 56 78", Australian "(02) 9374 4000".
            pattern: r"(?-u)\b0\d{1,4}[ \-]\d{3,4}[ \-]?\d{3,4}\b|\b0[1-9](?:[ .\-]\d{2}){4}\b|\(0\d{1,4}\) ?\d{3,4}[ \-]?\d{3,4}\b",
            flexible_spaces: false,
            check: check_phone_national,
            decode: None,
            trigger: Trigger::Number(NumberNeeds::digits(9)),
        },
        Spec {
            near: None,
            kind: Kind::Phone,
            rule: "phone_context",
            anchors: &[],
            // Any other digit run counts only after a word that says it is
            // a phone number ("tel: 0301234567").
            pattern: r"(?-u)\b\d[\d .\-]{5,22}\d\b",
            flexible_spaces: false,
            check: check_phone_context,
            decode: None,
            trigger: Trigger::Number(NumberNeeds {
                context: Some((PHONE_WORD_PARTS, PHONE_CONTEXT)),
                ..NumberNeeds::digits(7)
            }),
        },
        Spec {
            near: None,
            kind: Kind::CreditCard,
            rule: "credit_card",
            anchors: &[],
            pattern: r"(?-u)\b\d(?:[ \-]?\d){12,18}\b",
            flexible_spaces: false,
            check: check_card,
            decode: None,
            trigger: Trigger::Number(NumberNeeds::digits(13)),
        },
        Spec {
            near: None,
            kind: Kind::Iban,
            rule: "iban",
            anchors: &[],
            pattern: r"(?-u)\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b",
            flexible_spaces: false,
            check: check_iban,
            decode: None,
            trigger: Trigger::CountryCode,
        },
        Spec {
            near: None,
            kind: Kind::UsSsn,
            rule: "us_ssn",
            anchors: &[],
            pattern: r"(?-u)\b\d{3}-\d{2}-\d{4}\b",
            flexible_spaces: false,
            check: check_ssn_dashed,
            decode: None,
            trigger: Trigger::Number(NumberNeeds {
                dashes: 2,
                ..NumberNeeds::digits(9)
            }),
        },
        Spec {
            near: None,
            kind: Kind::UsSsn,
            rule: "us_ssn_context",
            anchors: &[],
            pattern: r"(?-u)\b\d{3} ?\d{2} ?\d{4}\b",
            flexible_spaces: false,
            check: check_ssn_context,
            decode: None,
            trigger: Trigger::Number(NumberNeeds::digits(9)),
        },
        Spec {
            near: None,
            kind: Kind::Ipv4,
            rule: "ipv4",
            anchors: &[],
            pattern: r"(?-u)\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b",
            flexible_spaces: false,
            check: check_ipv4,
            decode: None,
            trigger: Trigger::Number(NumberNeeds {
                dots: 3,
                ..NumberNeeds::digits(4)
            }),
        },
        Spec {
            near: None,
            kind: Kind::Ipv6,
            rule: "ipv6",
            anchors: &[],
            pattern: r"(?-u)[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}",
            flexible_spaces: false,
            check: check_ipv6,
            decode: None,
            trigger: Trigger::Colons,
        },
    ]
}

fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._%+-".contains(c)
}

/// File extensions that look like TLDs after an "@": retina image names
/// (`logo@2x.png`). None of them is a real TLD.
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico"];

fn check_email(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    let t = h.text;
    let s = &t[m.clone()];
    let Some(at) = s.find('@') else {
        return Verdict::Reject;
    };
    let (local, domain) = (&s[..at], &s[at + 1..]);
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Verdict::Reject;
    }
    // The regex took the last 64 characters of a longer run: no mailbox has
    // a local part that long.
    if char_before(t, m.start).is_some_and(is_local_char) {
        return Verdict::Reject;
    }
    // `git@github.com:org/repo.git` is an SSH remote, not a mailbox.
    if char_after(t, m.end) == Some(':')
        && char_after(t, m.end + 1).is_some_and(|c| !c.is_whitespace())
    {
        return Verdict::Reject;
    }
    let tld = domain.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    if IMAGE_EXTENSIONS.contains(&tld.as_str()) {
        return Verdict::Reject;
    }
    Verdict::Accept(m)
}

/// Dates share the shape of short digit groups: 2024-03-15, 15.03.2024,
/// 03 04 24.
fn looks_like_date(s: &str) -> bool {
    let groups: Vec<usize> = s
        .split([' ', '.', '-', '/'])
        .filter(|g| !g.is_empty())
        .map(str::len)
        .collect();
    matches!(
        groups.as_slice(),
        [4, 2, 2] | [2, 2, 4] | [2, 2, 2] | [1 | 2, 1 | 2, 4] | [4, 1 | 2, 1 | 2]
    )
}

/// The separators that make two digit groups one number.
const NUMBER_SEPARATORS: &[char] = &[' ', '.', '-', '/'];

fn check_phone_international(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    let t = h.text;
    let s = &t[m.clone()];
    // "UTC+05:30", "C++11": a plus glued to a word is an operator.
    if is_word(char_before(t, m.start)) {
        return Verdict::Reject;
    }
    // A "(0)" trunk prefix is written but not dialled.
    let digits = digits_of(s).len() - if s.contains("(0)") { 1 } else { 0 };
    if !(8..=15).contains(&digits) || is_word(char_after(t, m.end)) {
        return Verdict::Reject;
    }
    let (a1, a2) = two_after(t, m.end);
    if a1.is_some_and(|c| ".-/".contains(c)) && is_digit(a2) {
        return Verdict::Reject;
    }
    Verdict::Accept(m)
}

fn check_phone_nanp(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    let t = h.text;
    let mut d = digits_of(&t[m.clone()]);
    if d.len() == 11 {
        d.remove(0);
    }
    // NANP: area code and exchange start with 2-9, so 123-456-7890 and
    // 012.345.6789 are not numbers anyone can dial.
    if d.len() != 10 || d[0] < 2 || d[3] < 2 {
        return Verdict::Reject;
    }
    if continues_number(t, &m, NUMBER_SEPARATORS) || is_word(char_before(t, m.start)) {
        return Verdict::Reject;
    }
    Verdict::Accept(m)
}

fn check_phone_national(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    let t = h.text;
    let s = &t[m.clone()];
    let digits = digits_of(s).len();
    if !(9..=12).contains(&digits) || looks_like_date(s) {
        return Verdict::Reject;
    }
    if continues_number(t, &m, NUMBER_SEPARATORS) || is_word(char_before(t, m.start)) {
        return Verdict::Reject;
    }
    Verdict::Accept(m)
}

const PHONE_WORDS: &[&str] = &[
    "phone",
    "tel",
    "telephone",
    "mobile",
    "cell",
    "call",
    "fax",
    "whatsapp",
    "sms",
    "text me",
    "landline",
    "dial",
    "reach me",
    // es, pt, fr, de, it: support tickets arrive in every language.
    "número",
    "numero",
    "teléfono",
    "telefono",
    "telefone",
    "móvil",
    "celular",
    "numéro",
    "portable",
    "téléphone",
    "nummer",
    "telefon",
    "handy",
    "cellulare",
];

/// How far before a bare number its phone word may be.
const PHONE_CONTEXT: usize = 32;

/// ASCII pieces, one in each of [`PHONE_WORDS`] (lower case): the number
/// trigger looks for these before running `phone_context` at all (see
/// `runs::ContextWords::before` for why neither `k` nor a final `i`).
const PHONE_WORD_PARTS: &[&str] = &[
    "phone", "tel", "mobile", "cel", "call", "fax", "whatsapp", "sms", "text", "landline", "dial",
    "reach", "mero", "num", "fono", "vil", "portable", "handy",
];

fn check_phone_context(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    let t = h.text;
    let s = &t[m.clone()];
    let digits = digits_of(s).len();
    if !(7..=15).contains(&digits) || looks_like_date(s) {
        return Verdict::Reject;
    }
    // Two separators in a row is prose, not a number ("12 - 14").
    let b = s.as_bytes();
    if b.windows(2)
        .any(|w| !w[0].is_ascii_digit() && !w[1].is_ascii_digit())
    {
        return Verdict::Reject;
    }
    // Dotted quads are addresses, dotted triples versions.
    if s.contains('.') && !s.contains(' ') && !s.contains('-') {
        return Verdict::Reject;
    }
    if continues_number(t, &m, NUMBER_SEPARATORS) {
        return Verdict::Reject;
    }
    if !has_word(window_before(t, m.start, PHONE_CONTEXT), PHONE_WORDS) {
        return Verdict::Reject;
    }
    Verdict::Accept(m)
}

/// Issuer prefixes (IIN ranges) and the lengths each network issues.
fn card_network_ok(d: &[u8]) -> bool {
    let n = d.len();
    let prefix = |k: usize| {
        d.iter()
            .take(k)
            .fold(0u32, |acc, &x| acc * 10 + u32::from(x))
    };
    match d.first() {
        // Visa
        Some(4) => matches!(n, 13 | 16 | 19),
        // Mastercard 51-55; Maestro 50, 56-58
        Some(5) => {
            let p = prefix(2);
            ((51..=55).contains(&p) && n == 16) || (matches!(p, 50 | 56..=58) && n >= 13)
        }
        // Mastercard 2-series 2221-2720; Mir 2200-2204
        Some(2) => {
            let p = prefix(4);
            ((2221..=2720).contains(&p) && n == 16) || ((2200..=2204).contains(&p) && n >= 16)
        }
        // Amex 34/37; JCB 3528-3589; Diners 300-305, 36, 38, 39
        Some(3) => {
            let (p2, p3, p4) = (prefix(2), prefix(3), prefix(4));
            (matches!(p2, 34 | 37) && n == 15)
                || ((3528..=3589).contains(&p4) && n >= 16)
                || (((300..=305).contains(&p3) || matches!(p2, 36 | 38 | 39)) && n >= 14)
        }
        // Discover 6011/644-649/65, UnionPay 62, Maestro 6xxx, RuPay 60
        Some(6) => n >= 16,
        _ => false,
    }
}

fn check_card(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    let t = h.text;
    let s = &t[m.clone()];
    // A decimal fraction ("3.14159265358979") or a dotted number.
    if continues_number(t, &m, &['.', ',']) {
        return Verdict::Reject;
    }
    let sep = s.bytes().find(|b| !b.is_ascii_digit());
    if let Some(sep) = sep {
        if s.bytes().any(|b| !b.is_ascii_digit() && b != sep) {
            return Verdict::Reject;
        }
    }
    // Group ends (byte offset within `s`, digits so far). The regex is
    // greedy and may have taken a following number ("… 1111 12/26"), so a
    // card may end at any group end; the longest valid one wins.
    let mut ends = Vec::new();
    let mut digits = 0;
    let mut group = 0;
    for (i, b) in s.bytes().enumerate() {
        if b.is_ascii_digit() {
            digits += 1;
            group += 1;
        } else {
            if !(3..=6).contains(&group) {
                break;
            }
            ends.push((i, digits));
            group = 0;
        }
    }
    if sep.is_none() || (3..=6).contains(&group) {
        ends.push((s.len(), digits));
    }
    let all = digits_of(s);
    for &(end, n) in ends.iter().rev() {
        if !(13..=19).contains(&n) {
            continue;
        }
        let d = &all[..n];
        if card_network_ok(d) && luhn_valid(d) {
            return Verdict::Accept(m.start..m.start + end);
        }
    }
    Verdict::Reject
}

/// IBAN lengths by country (ISO 13616 registry).
fn iban_length(country: &str) -> Option<usize> {
    Some(match country {
        "NO" => 15,
        "BE" => 16,
        "DK" | "FI" | "FO" | "GL" | "NL" | "SD" | "FK" => 18,
        "MK" | "SI" => 19,
        "AT" | "BA" | "EE" | "KZ" | "LT" | "LU" | "XK" | "MN" => 20,
        "CH" | "HR" | "LI" | "LV" => 21,
        "BG" | "BH" | "CR" | "DE" | "GB" | "GE" | "IE" | "ME" | "RS" | "VA" => 22,
        "AE" | "GI" | "IL" | "IQ" | "TL" | "OM" | "SO" => 23,
        "AD" | "CZ" | "ES" | "MD" | "PK" | "RO" | "SA" | "SE" | "SK" | "TN" | "VG" => 24,
        "PT" | "ST" | "LY" => 25,
        "IS" | "TR" => 26,
        "FR" | "GR" | "IT" | "MC" | "MR" | "SM" | "BI" | "DJ" => 27,
        "AL" | "AZ" | "BY" | "CY" | "DO" | "GT" | "HU" | "LB" | "PL" | "SV" | "NI" | "HN" => 28,
        "BR" | "EG" | "PS" | "QA" | "UA" => 29,
        "JO" | "KW" | "MU" | "YE" => 30,
        "MT" | "SC" => 31,
        "LC" => 32,
        "RU" => 33,
        _ => return None,
    })
}

fn iban_checksum_ok(chars: &[u8]) -> bool {
    let rotated = chars[4..].iter().chain(&chars[..4]);
    let mut rem = 0u32;
    for &c in rotated {
        rem = match c {
            b'0'..=b'9' => (rem * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(c - b'A') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

fn check_iban(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    let t = h.text;
    let s = &t[m.clone()];
    let Some(len) = iban_length(&s[..2]) else {
        return Verdict::Reject;
    };
    // Take the country's length in characters, single spaces allowed
    // between them (the print form groups by four); what the greedy regex
    // took beyond that is the next word.
    let mut chars = Vec::with_capacity(len);
    let mut end = m.start;
    for (i, b) in s.bytes().enumerate() {
        if chars.len() == len {
            break;
        }
        if b != b' ' {
            chars.push(b);
            end = m.start + i + 1;
        }
    }
    if chars.len() < len || is_word(char_after(t, end)) {
        return Verdict::Reject;
    }
    let check = u32::from(chars[2] - b'0') * 10 + u32::from(chars[3] - b'0');
    if !(2..=98).contains(&check) || !iban_checksum_ok(&chars) {
        return Verdict::Reject;
    }
    Verdict::Accept(m.start..end)
}

/// SSA rules: no area 000, 666 or 900-999, no group 00, no serial 0000.
fn ssn_parts_ok(d: &[u8]) -> bool {
    let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
    let group = u32::from(d[3]) * 10 + u32::from(d[4]);
    let serial = d[5..9].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

fn check_ssn_dashed(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    let t = h.text;
    let d = digits_of(&t[m.clone()]);
    if d.len() != 9 || !ssn_parts_ok(&d) || continues_number(t, &m, &['-', '.', '/']) {
        return Verdict::Reject;
    }
    Verdict::Accept(m)
}

const SSN_WORDS: &[&str] = &[
    "ssn",
    "social security",
    "soc sec",
    "ss#",
    "ss no",
    "ss number",
    "taxpayer id",
];

/// Nine digits without dashes are too common (order numbers, counts) to
/// count without a word naming them.
fn check_ssn_context(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    let t = h.text;
    let d = digits_of(&t[m.clone()]);
    if d.len() != 9 || !ssn_parts_ok(&d) || continues_number(t, &m, NUMBER_SEPARATORS) {
        return Verdict::Reject;
    }
    if !has_word(window_before(t, m.start, 48), SSN_WORDS) {
        return Verdict::Reject;
    }
    Verdict::Accept(m)
}

/// Words before a dotted quad that make it a version ("version 1.2.3.4").
const VERSION_WORDS: &[&str] = &["version", "ver", "release", "build", "firmware"];

fn check_ipv4(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    let t = h.text;
    // Part of a longer dotted number: an OID, a four-part-plus version.
    if continues_number(t, &m, &['.']) {
        return Verdict::Reject;
    }
    let Ok(ip) = t[m.clone()].parse::<Ipv4Addr>() else {
        return Verdict::Reject;
    };
    // Addresses that identify no one: any, loopback, broadcast, netmasks.
    let bits = u32::from(ip);
    let netmask = bits >= 0xFF00_0000 && bits.leading_ones() + bits.trailing_zeros() == 32;
    if ip.is_unspecified() || ip.is_loopback() || ip.is_broadcast() || netmask {
        return Verdict::Reject;
    }
    if has_word(window_before(t, m.start, 24), VERSION_WORDS) {
        return Verdict::Reject;
    }
    Verdict::Accept(m)
}

fn check_ipv6(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    let t = h.text;
    let mut r = m.clone();
    // A colon ending a sentence ("reach fe80::1: timeout") is punctuation.
    if t[r.clone()].ends_with(':') && !t[r.clone()].ends_with("::") {
        r.end -= 1;
    }
    let s = &t[r.clone()];
    // `std::vec::Vec`, `10:30:00`, `a::b`: glued to words, no digits or
    // too few groups.
    let before = char_before(t, r.start);
    let after = char_after(t, m.end);
    if is_word(before) || matches!(before, Some(':' | '.')) || is_word(after) || after == Some(':')
    {
        return Verdict::Reject;
    }
    if after == Some('.') && is_digit(char_after(t, m.end + 1)) {
        return Verdict::Reject;
    }
    let groups = s.split(':').filter(|g| !g.is_empty()).count();
    if groups < 2 || !s.bytes().any(|b| b.is_ascii_digit()) {
        return Verdict::Reject;
    }
    let Ok(ip) = s.parse::<Ipv6Addr>() else {
        return Verdict::Reject;
    };
    if ip.is_unspecified() || ip.is_loopback() {
        return Verdict::Reject;
    }
    Verdict::Accept(r)
}

#[cfg(test)]
mod tests {
    use super::super::tests::hits;
    use super::*;

    #[test]
    fn every_phone_word_holds_a_part_the_trigger_looks_for() {
        for word in PHONE_WORDS {
            let lower = word.to_lowercase();
            assert!(PHONE_WORD_PARTS.iter().any(|p| lower.contains(p)), "{word}");
        }
        for part in PHONE_WORD_PARTS {
            assert!(part.is_ascii() && !part.contains('k') && !part.ends_with('i'));
        }
    }

    #[test]
    fn email_finds_addresses_in_several_forms() {
        for (text, want) in [
            (
                "mail maria.gonzalez@outlook.com now",
                "maria.gonzalez@outlook.com",
            ),
            (
                "<first.last+tag@sub.example.co.uk>",
                "first.last+tag@sub.example.co.uk",
            ),
            ("TO: OPS-TEAM@ACME-CORP.IO.", "OPS-TEAM@ACME-CORP.IO"),
            ("a.kowalski@poczta.pl, said", "a.kowalski@poczta.pl"),
            (
                "noreply+ticket-88213@help.zendesk.com",
                "noreply+ticket-88213@help.zendesk.com",
            ),
            ("email me at bob@example.com:\nthanks", "bob@example.com"),
        ] {
            assert_eq!(hits(Kind::Email, text), [want], "{text}");
        }
    }

    #[test]
    fn email_skips_lookalikes() {
        for text in [
            "git clone git@github.com:acme/api.git",
            "Ping @maria.gonzalez in the thread",
            "use logo@2x.png on retina",
            "npm i lodash@4.17.21 react@18.2.0",
            "user@localhost",
            "docker pull app@sha256:6c3c624b58dbbcd3c0dd8",
            ".bad.@example.com",
            "two..dots@example.com",
            &format!("{}@example.com", "x".repeat(70)),
        ] {
            assert!(hits(Kind::Email, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn phone_finds_international_and_national_formats() {
        for (text, want) in [
            ("call (415) 555-0132 today", "(415) 555-0132"),
            (
                "Customer phone: +44 20 7946 0958, prefers",
                "+44 20 7946 0958",
            ),
            ("on +49 30 901820 or", "+49 30 901820"),
            ("Paris +33 1 42 68 53 00 (reception)", "+33 1 42 68 53 00"),
            ("driver: +91 98765 43210", "+91 98765 43210"),
            ("line (02) 9374 4000, open", "(02) 9374 4000"),
            ("Text me at 555.867.5309 when", "555.867.5309"),
            ("call 1-800-555-0199.", "1-800-555-0199"),
            ("changed to +1-202-555-0173.", "+1-202-555-0173"),
            ("E.164: +14155550123", "+14155550123"),
            ("Mobile: 07700 900123 (UK)", "07700 900123"),
            ("Appelez-moi au 06 12 34 56 78 demain", "06 12 34 56 78"),
            ("Fax: +1 (212) 555-0147", "+1 (212) 555-0147"),
            ("tel: 0301234567", "0301234567"),
            ("+44 (0)20 7946 0958", "+44 (0)20 7946 0958"),
            ("+31 6 12345678", "+31 6 12345678"),
            ("call me on 555 1234 please", "555 1234"),
        ] {
            assert_eq!(hits(Kind::Phone, text), [want], "{text}");
        }
    }

    #[test]
    fn phone_skips_dates_versions_ips_cards_and_ids() {
        for text in [
            "The meeting moved to 2024-03-15 at 10:30.",
            "Invoice dated 15/03/2024, due 14.04.2024",
            "Upgrade from 1.2.3 to 1.4.0, Chrome 120.0.6099.109",
            "Windows 10.0.19045.3803",
            "from 192.168.100.200 and 10.0.0.1",
            "card 4111 1111 1111 1111",
            "4111111111111111",
            "Order #112-2398471-5567812",
            "ISBN 978-3-16-148410-0",
            "timezone UTC+05:30, prices +5%",
            "C++11 and C+ 2",
            "The dataset has 1234567890 rows.",
            "timestamp 1700000000",
            "123-456-7890 is a made-up number",
            "call stack depth exceeded 10000 frames",
            "call on 2024-03-15 about it",
            "Serial SN-8842-1193-0075",
            "between 1,000,000 and 2,500,000",
            "Kubernetes NodePort range is 30000-32767.",
            "Throughput: 12 345 678 events",
            "Lot 2024-0815-A expires 2026-08-15.",
        ] {
            assert!(
                hits(Kind::Phone, text).is_empty(),
                "{text}: {:?}",
                hits(Kind::Phone, text)
            );
        }
    }

    #[test]
    fn credit_card_needs_luhn_and_a_network() {
        for (text, want) in [
            ("card 4111 1111 1111 1111 was", "4111 1111 1111 1111"),
            ("5555-5555-5555-4444 please", "5555-5555-5555-4444"),
            ("Amex 378282246310005 exp", "378282246310005"),
            ("Amex 3782 822463 10005", "3782 822463 10005"),
            ("JCB 3530111333300000", "3530111333300000"),
            ("Diners 30569309025904,", "30569309025904"),
            ("MC 2223003122003222", "2223003122003222"),
            ("Discover 6011 1111 1111 1117.", "6011 1111 1111 1117"),
            ("4111 1111 1111 1111 12/26", "4111 1111 1111 1111"),
            ("(4012888888881881)", "4012888888881881"),
        ] {
            assert_eq!(hits(Kind::CreditCard, text), [want], "{text}");
        }
        for text in [
            "4111 1111 1111 1112",
            "order id 4000123412341237",
            "1234567890123456",
            "pi 3.14159265358979",
            "4111-1111 1111-1111",
            "41111111111111111111111",
            "ms 1700000000000",
            "Card ending in 4242",
            "0000 0000 0000 0000",
        ] {
            assert!(hits(Kind::CreditCard, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn iban_needs_the_country_length_and_mod_97() {
        for (text, want) in [
            (
                "IBAN DE89 3704 0044 0532 0130 00, holder",
                "DE89 3704 0044 0532 0130 00",
            ),
            ("DE89370400440532013000", "DE89370400440532013000"),
            (
                "GB29 NWBK 6016 1331 9268 19.",
                "GB29 NWBK 6016 1331 9268 19",
            ),
            ("FR1420041010050500013M02606", "FR1420041010050500013M02606"),
            ("NL91ABNA0417164300 ok", "NL91ABNA0417164300"),
            ("NO93 8601 1117 947 is", "NO93 8601 1117 947"),
            (
                "DE89 3704 0044 0532 0130 00 AND MORE",
                "DE89 3704 0044 0532 0130 00",
            ),
        ] {
            assert_eq!(hits(Kind::Iban, text), [want], "{text}");
        }
        for text in [
            "DE89 3704 0044 0532 0130 01",
            "DE89370400440532013001",
            "XX89370400440532013000",
            "DE8937040044053201300",
            "DE89370400440532013000X",
            "GB29 NWBK 6016 1331 9268",
        ] {
            assert!(hits(Kind::Iban, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn ssn_excludes_invalid_ranges_and_needs_context_undashed() {
        for (text, want) in [
            ("My SSN is 536-22-8714, ok", "536-22-8714"),
            ("record: ssn: 536228714", "536228714"),
            ("Social Security No. 536 22 8714", "536 22 8714"),
            ("SSN# 371-44-9012 on", "371-44-9012"),
        ] {
            assert_eq!(hits(Kind::UsSsn, text), [want], "{text}");
        }
        for text in [
            "000-12-3456",
            "666-45-6789",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
            "ssn: 000123456",
            "order 536228714 shipped",
            "123-45-6789-01",
            "ISBN 978-3-16-148410-0",
        ] {
            assert!(hits(Kind::UsSsn, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn ipv4_parses_and_skips_versions_and_non_personal_addresses() {
        for (text, want) in [
            ("from 198.51.100.23 port 22", "198.51.100.23"),
            ("X-Forwarded-For: 81.2.69.160, 10.12.0.7", "81.2.69.160"),
            ("host 10.0.4.17:5432", "10.0.4.17"),
        ] {
            assert_eq!(
                hits(Kind::Ipv4, text).first().map(String::as_str),
                Some(want),
                "{text}"
            );
        }
        for text in [
            "listen 127.0.0.1:8080 and 0.0.0.0",
            "mask 255.255.255.0",
            "255.255.255.255",
            "Version 1.2.3.4 of the plugin",
            "OID 1.3.6.1.4.1.311.21.8",
            "Windows 10.0.19045.3803",
            "999.1.1.1",
            "01.02.03.04",
            "1.2.3",
        ] {
            assert!(hits(Kind::Ipv4, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn ipv6_parses_and_skips_paths_times_and_macs() {
        for (text, want) in [
            (
                "Client 2001:db8:85a3::8a2e:370:7334 hit",
                "2001:db8:85a3::8a2e:370:7334",
            ),
            ("fe80::1ff:fe23:4567:890a%eth0", "fe80::1ff:fe23:4567:890a"),
            ("[2001:db8::1]:8080", "2001:db8::1"),
            ("node: 2a00:1450:4001:82b::200e", "2a00:1450:4001:82b::200e"),
            ("mapped ::ffff:192.0.2.1 here", "::ffff:192.0.2.1"),
            ("reach fe80::1: timeout", "fe80::1"),
        ] {
            assert_eq!(hits(Kind::Ipv6, text), [want], "{text}");
        }
        for text in [
            "std::collections::HashMap",
            "at 14:30:00",
            "MAC 00:1A:2B:3C:4D:5E",
            "loopback ::1 and ::",
            "a::b and dead::beef",
            "ratio 3:2:1",
        ] {
            assert!(hits(Kind::Ipv6, text).is_empty(), "{text}");
        }
    }
}
