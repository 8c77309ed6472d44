//! Credentials with a recognisable shape: provider prefixes, JWTs, PEM
//! private keys.
//!
//! A prefix alone appears in prose ("keys start with sk-"), in placeholders
//! ("sk-xxxx…") and in words ("task-list"); the validators want the
//! randomness a generated token has, a JWT header that decodes, a PEM body.
//!
//! Patterns are ASCII (`(?-u)`), for the DFA's sake; see `pii`.
use std::ops::Range;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;

use super::finding::Kind;
use super::runs::Trigger;
use super::text::{char_after, char_classes, floor_boundary, looks_random, Hay, Spec, Verdict};

/// Longest PEM private key block looked for: an 8192-bit RSA key in PKCS#1
/// is about 6.5 KB. Bounds how far a validator searches for the END line
/// and how much a stream holds back while one is open.
pub(super) const PEM_MAX: usize = 12 << 10;

/// Longest JWT taken as one token; anything longer is cut there (and still
/// found).
const JWT_MAX: usize = 8 << 10;

pub(super) fn specs() -> Vec<Spec> {
    vec![
        Spec {
            near: None,
            kind: Kind::AwsAccessKey,
            rule: "aws_access_key",
            anchors: &[
                b"AKIA", b"ASIA", b"ABIA", b"ACCA", b"AGPA", b"AIDA", b"AIPA", b"ANPA", b"ANVA",
                b"APKA", b"AROA", b"ASCA",
            ],
            pattern: r"(?-u)\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}\b",
            flexible_spaces: false,
            check: check_aws,
            decode: None,
            trigger: Trigger::Anchors,
        },
        Spec {
            near: None,
            kind: Kind::OpenaiKey,
            rule: "openai_key",
            anchors: &[b"sk-"],
            pattern: r"(?-u)\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,250}",
            flexible_spaces: false,
            check: check_openai,
            decode: None,
            trigger: Trigger::Anchors,
        },
        Spec {
            near: None,
            kind: Kind::AnthropicKey,
            rule: "anthropic_key",
            anchors: &[b"sk-ant-"],
            pattern: r"(?-u)\bsk-ant-[A-Za-z0-9_\-]{20,250}",
            flexible_spaces: false,
            check: check_anthropic,
            decode: None,
            trigger: Trigger::Anchors,
        },
        Spec {
            near: None,
            kind: Kind::GithubToken,
            rule: "github_token",
            anchors: &[b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"],
            pattern: r"(?-u)\bgh[pousr]_[A-Za-z0-9]{36,251}\b",
            flexible_spaces: false,
            check: check_prefixed_token,
            decode: None,
            trigger: Trigger::Anchors,
        },
        Spec {
            near: None,
            kind: Kind::GithubToken,
            rule: "github_fine_grained_token",
            anchors: &[b"github_pat_"],
            pattern: r"(?-u)\bgithub_pat_[A-Za-z0-9_]{22,251}\b",
            flexible_spaces: false,
            check: check_prefixed_token,
            decode: None,
            trigger: Trigger::Anchors,
        },
        Spec {
            near: None,
            kind: Kind::GitlabToken,
            rule: "gitlab_token",
            anchors: &[b"glpat-"],
            pattern: r"(?-u)\bglpat-[A-Za-z0-9_\-]{20,250}",
            flexible_spaces: false,
            check: check_prefixed_token,
            decode: None,
            trigger: Trigger::Anchors,
        },
        Spec {
            near: None,
            kind: Kind::Jwt,
            rule: "jwt",
            // Every JWT header is a JSON object, so it begins `{"` → "eyJ".
            anchors: &[b"eyJ"],
            pattern: r"(?-u)\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]*)?",
            flexible_spaces: false,
            check: check_jwt,
            decode: None,
            // Unbounded, so without windows: searched from each hit.
            trigger: Trigger::LeadingAnchors,
        },
        Spec {
            near: None,
            kind: Kind::PrivateKey,
            rule: "private_key",
            anchors: &[b"-----BEGIN"],
            pattern: r"(?-u)-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----",
            flexible_spaces: false,
            check: check_private_key,
            decode: None,
            trigger: Trigger::Anchors,
        },
        Spec {
            near: None,
            kind: Kind::SlackToken,
            rule: "slack_token",
            anchors: &[b"xox"],
            pattern: r"(?-u)\bxox[baprse]-[A-Za-z0-9\-]{10,250}",
            flexible_spaces: false,
            check: check_slack,
            decode: None,
            trigger: Trigger::Anchors,
        },
        Spec {
            near: None,
            kind: Kind::GoogleApiKey,
            rule: "google_api_key",
            anchors: &[b"AIza"],
            pattern: r"(?-u)\bAIza[0-9A-Za-z_\-]{35}",
            flexible_spaces: false,
            check: check_google,
            decode: None,
            trigger: Trigger::Anchors,
        },
    ]
}

fn check_aws(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    // "AKIAXXXXXXXXXXXXXXXX" is a placeholder.
    if !looks_random(&h.text[m.start + 4..m.end], 6) {
        return Verdict::Reject;
    }
    Verdict::Accept(m)
}

/// The part after the last fixed prefix, and whether it reads like
/// generated characters: several distinct ones and at least two of lower
/// case, upper case and digits. Words joined by dashes fail
/// ("sk-this-is-not-a-key-but-a-slug").
fn random_body(body: &str) -> bool {
    let (lower, upper, digit) = char_classes(body);
    let classes = usize::from(lower) + usize::from(upper) + usize::from(digit);
    classes >= 2 && digit && looks_random(body, 10)
}

fn check_openai(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    let s = &h.text[m.clone()];
    if s.starts_with("sk-ant-") {
        return Verdict::Reject;
    }
    let (lower, upper, digit) = char_classes(s);
    if !(lower && upper && digit && looks_random(s, 12)) {
        return Verdict::Reject;
    }
    Verdict::Accept(m)
}

fn check_anthropic(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    if !random_body(&h.text[m.start + "sk-ant-".len()..m.end]) {
        return Verdict::Reject;
    }
    Verdict::Accept(m)
}

fn check_prefixed_token(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    let s = &h.text[m.clone()];
    let body = s.split_once(['_', '-']).map_or(s, |(_, b)| b);
    if !random_body(body) {
        return Verdict::Reject;
    }
    Verdict::Accept(m)
}

fn check_slack(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    let s = &h.text[m.clone()];
    // Slack tokens carry numeric team and user ids.
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    if digits < 10 || !s[5..].contains('-') {
        return Verdict::Reject;
    }
    Verdict::Accept(m)
}

fn check_google(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    let after = char_after(h.text, m.end);
    if after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Verdict::Reject;
    }
    if !looks_random(&h.text[m.start + 4..m.end], 10) {
        return Verdict::Reject;
    }
    Verdict::Accept(m)
}

fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .or_else(|_| STANDARD_NO_PAD.decode(s.trim_end_matches('=')))
        .ok()
}

fn check_jwt(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    let s = &h.text[m.clone()];
    let mut parts = s.splitn(3, '.');
    let (Some(header), Some(payload), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return Verdict::Reject;
    };
    if payload.is_empty() || s.len() > JWT_MAX {
        return Verdict::Reject;
    }
    let Some(json) = b64url_decode(header) else {
        return Verdict::Reject;
    };
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(&json) else {
        return Verdict::Reject;
    };
    let Some(alg) = fields.get("alg").and_then(|a| a.as_str()) else {
        return Verdict::Reject;
    };
    // Only an unsigned token ("alg":"none") may end with an empty part.
    if signature.is_empty() && !alg.eq_ignore_ascii_case("none") {
        return Verdict::Reject;
    }
    if b64url_decode(payload).is_none() {
        return Verdict::Reject;
    }
    Verdict::Accept(m)
}

fn check_private_key(h: &Hay<'_>, m: Range<usize>) -> Verdict {
    let t = h.text;
    let limit = floor_boundary(t, m.start + PEM_MAX);
    // The block runs to the next "-----": its END line, or the next BEGIN
    // when this one was cut off. Stopping there keeps a text of many
    // headers linear.
    let marker = t[m.end..limit].find("-----").map(|i| m.end + i);
    if let Some(at) = marker {
        let rest = &t[at..];
        if rest.starts_with("-----END ") {
            let label_from = at + "-----END ".len();
            let label_to = floor_boundary(t, label_from + 64);
            if let Some(close) = t[label_from..label_to].find("-----") {
                return Verdict::Accept(m.start..label_from + close + 5);
            }
            if h.more && label_to == t.len() {
                return Verdict::Pending;
            }
        } else if h.more && "-----END ".starts_with(rest) {
            return Verdict::Pending;
        }
    } else if h.more && t.len() < m.start + PEM_MAX {
        // No END line yet: while streaming, the rest of the block may still
        // come; hold it back until it does or the block would be too long.
        return Verdict::Pending;
    }
    let body_end = marker.unwrap_or(limit);
    // A truncated block: take the base64 lines (and the Proc-Type/DEK-Info
    // headers of an encrypted key) that follow, so the key material is
    // covered even without the END line.
    let mut end = m.end;
    let mut body_seen = false;
    let mut pos = m.end;
    for (i, line) in t[m.end..body_end].split_inclusive('\n').enumerate() {
        let line_start = pos;
        pos += line.len();
        if i == 0 {
            // The rest of the BEGIN line.
            continue;
        }
        let content = line.trim_end();
        let is_base64 = !content.is_empty()
            && content
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
        if is_base64 {
            body_seen = true;
            end = line_start + content.len();
        } else if body_seen || !(content.is_empty() || content.contains(": ")) {
            break;
        }
    }
    Verdict::Accept(m.start..end)
}

#[cfg(test)]
mod tests {
    use super::super::tests::hits;
    use super::*;

    /// Test tokens are built from parts so the source file itself does not
    /// trip secret scanners.
    fn key(prefix: &str, body: &str) -> String {
        format!("{prefix}{body}")
    }

    const RANDOM48: &str = "T3BlbkFJq8ZrWm2XvN4cYp7LdQe9HsKuJ1aBgF0tRiOwEz5M";

    #[test]
    fn aws_access_keys() {
        let k = key("AKIA", "IOSFODNN7EXAMPLE");
        assert_eq!(hits(Kind::AwsAccessKey, &format!("id={k}\n")), [k.as_str()]);
        let k = key("ASIA", "Q3EGWDAIZT6XJ7NE");
        assert_eq!(hits(Kind::AwsAccessKey, &format!("'{k}'")), [k.as_str()]);
        for text in [
            "the AKIA prefix marks long-term keys",
            "AKIAXXXXXXXXXXXXXXXX",
            "AKIAIOSFODNN7EXAMPLE1",
            "xAKIAIOSFODNN7EXAMPLE",
            "akiaiosfodnn7example",
        ] {
            assert!(hits(Kind::AwsAccessKey, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn openai_and_anthropic_keys() {
        let classic = key("sk-", RANDOM48);
        let project = key("sk-proj-", &RANDOM48.repeat(3));
        let anthropic = key(
            "sk-ant-api03-",
            &format!("{}-{}AA", RANDOM48, &RANDOM48[..30]),
        );
        assert_eq!(
            hits(Kind::OpenaiKey, &format!("key=\"{classic}\"")),
            [classic.as_str()]
        );
        assert_eq!(
            hits(Kind::OpenaiKey, &format!("{project}\n")),
            [project.as_str()]
        );
        assert_eq!(
            hits(Kind::AnthropicKey, &format!("x {anthropic} y")),
            [anthropic.as_str()]
        );
        // The OpenAI detector does not claim Anthropic keys.
        assert!(hits(Kind::OpenaiKey, &anthropic).is_empty());
        for text in [
            "we use a task-list and risk-based desk-booking",
            "pip install scikit-learn; the sk-learn alias",
            "Replace sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx with your key",
            "OpenAI keys start with sk- followed by a string",
            "sk-this-is-a-long-slug-made-of-words-only",
            "The package sk-image-tools is unrelated",
        ] {
            assert!(hits(Kind::OpenaiKey, text).is_empty(), "{text}");
            assert!(hits(Kind::AnthropicKey, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn github_gitlab_slack_google_tokens() {
        let ghp = key("ghp_", &RANDOM48[..36]);
        let ghs = key("ghs_", &RANDOM48[6..42]);
        let pat = key(
            "github_pat_",
            &format!("{}_{}", &RANDOM48[..22], &RANDOM48[..40]),
        );
        let glpat = key("glpat-", &RANDOM48[10..30]);
        let slack = key(
            "xoxb-",
            "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        );
        let google = key("AIza", &RANDOM48[..35]);
        assert_eq!(
            hits(Kind::GithubToken, &format!("https://{ghp}@github.com")),
            [ghp.as_str()]
        );
        assert_eq!(
            hits(Kind::GithubToken, &format!("token: {ghs}")),
            [ghs.as_str()]
        );
        assert_eq!(hits(Kind::GithubToken, &pat), [pat.as_str()]);
        assert_eq!(
            hits(Kind::GitlabToken, &format!("{glpat} has")),
            [glpat.as_str()]
        );
        assert_eq!(
            hits(Kind::SlackToken, &format!("T={slack}")),
            [slack.as_str()]
        );
        assert_eq!(
            hits(Kind::GoogleApiKey, &format!("\"{google}\"")),
            [google.as_str()]
        );
        for (kind, text) in [
            (Kind::GithubToken, "ghp_ is the prefix for personal tokens"),
            (
                Kind::GithubToken,
                "ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
            (Kind::GithubToken, "ghp_abc"),
            (Kind::GitlabToken, "glpat-xxxxxxxxxxxxxxxxxxxx"),
            (
                Kind::SlackToken,
                "use xoxb- tokens for bots; xoxb-not-a-real-token-at-all",
            ),
            (Kind::GoogleApiKey, "AIza followed by 35 characters"),
        ] {
            assert!(hits(kind, text).is_empty(), "{text}");
        }
        // One character more than a Google key is something else.
        assert!(hits(Kind::GoogleApiKey, &format!("{google}Z")).is_empty());
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn jwt_needs_a_header_with_alg() {
        let jwt = format!(
            "{}.{}.{}",
            b64(r#"{"alg":"HS256","typ":"JWT"}"#),
            b64(r#"{"sub":"1234567890","iat":1716239022}"#),
            b64("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(hits(Kind::Jwt, &format!("Bearer {jwt}'")), [jwt.as_str()]);
        let unsigned = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"a":1}"#));
        assert_eq!(hits(Kind::Jwt, &unsigned), [unsigned.as_str()]);
        for text in [
            "JWTs usually start with eyJ because of the header",
            &format!("{}.{}.sig", b64(r#"{"typ":"JWT"}"#), b64(r#"{"a":1}"#)),
            &format!("{}.{}.", b64(r#"{"alg":"HS256"}"#), b64(r#"{"a":1}"#)),
            &format!("{}.{}", b64(r#"{"alg":"HS256"}"#), b64(r#"{"a":1}"#)),
            "eyJhbGciOiJIUzI1NiJ9notjson.eyJ.abc",
        ] {
            assert!(hits(Kind::Jwt, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn private_key_covers_the_whole_block() {
        let body = "MIIEowIBAAKCAQEAuJ5Zq1Yp0t2n3D\nq8ZrWm2XvN4cYp7LdQe9HsKuJ1aBgF0t==";
        let block =
            format!("-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----");
        assert_eq!(
            hits(Kind::PrivateKey, &format!("key:\n{block}\nthanks")),
            [block.as_str()]
        );
        for label in ["", "EC ", "OPENSSH ", "ENCRYPTED ", "DSA "] {
            let b = format!(
                "-----BEGIN {label}PRIVATE KEY-----\n{body}\n-----END {label}PRIVATE KEY-----"
            );
            assert_eq!(hits(Kind::PrivateKey, &b), [b.as_str()], "{label}");
        }
        // Without an END line the base64 lines after the header are taken.
        let truncated = format!("-----BEGIN PRIVATE KEY-----\n{body}");
        assert_eq!(
            hits(Kind::PrivateKey, &format!("{truncated}\n\nand then prose")),
            [truncated.as_str()]
        );
        let encrypted = format!(
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,3F17F5316E2BAC89\n\n{body}"
        );
        assert_eq!(
            hits(Kind::PrivateKey, &format!("{encrypted}\n")),
            [encrypted.as_str()]
        );
        for text in [
            "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----\nMIIBIjANBgkq\n-----END CERTIFICATE-----",
            "a PRIVATE KEY block starts with -----BEGIN and a label",
        ] {
            assert!(hits(Kind::PrivateKey, text).is_empty(), "{text}");
        }
    }
}
