//! Guardrails on `api` destinations: the request and response rules of
//! the workload's policies applied to textual bodies. The transports
//! read a body whole, hand it to a [`BodyGuard`], and send what comes
//! back (or its refusal).
//!
//! What is read depends on the content type: JSON (the string values, so
//! escapes hide nothing; keys and the rest of the document are kept byte
//! for byte), URL-encoded forms (the decoded values), and text (the
//! whole body). Compressed bodies, multipart, binary types and event
//! streams are passed as they are: the guard cannot read them whole, and
//! guessing would corrupt them.
use std::borrow::Cow;

use bytes::Bytes;
use hyper::{
    header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE},
    Method, Response, StatusCode,
};

use super::{refusal, ApiBody};
use crate::policy::guardrail::{CheckError, Phase, Session};
use crate::telemetry::guard::Audit;

/// One request's guardrails on the api gate.
pub struct BodyGuard {
    session: Session,
    audit: Audit,
}

/// A body the guard refused: the status, the access log's outcome (also
/// the error type) and the message of the client's answer.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub outcome: &'static str,
    pub message: String,
}

impl Refused {
    /// The answer in the api gate's error shape.
    pub fn response(&self) -> Response<ApiBody> {
        refusal(self.status, self.outcome, &self.message)
    }
}

impl BodyGuard {
    pub fn new(session: Session, audit: Audit) -> BodyGuard {
        BodyGuard { session, audit }
    }

    /// How much of a body is read for scanning at most: what one scan
    /// takes (`guardrails.max_scan_bytes`).
    pub fn max_body(&self) -> usize {
        self.session.plan().scanner().max_scan_bytes()
    }

    /// How the request body is read, when it is to be checked at all.
    pub fn request_kind(&self, headers: &HeaderMap) -> Option<BodyKind> {
        self.session
            .plan()
            .checks(Phase::Request)
            .then(|| body_kind(headers))
            .flatten()
    }

    /// How the response body is read, when it is to be checked or have
    /// the request's placeholders put back.
    pub fn response_kind(
        &self,
        method: &Method,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Option<BodyKind> {
        let wanted = self.session.plan().checks(Phase::Response) || self.session.restores();
        // No body: HEAD, 1xx, 204, 304 (and 101's bytes are not HTTP).
        let bodyless = *method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        (wanted && !bodyless).then(|| body_kind(headers)).flatten()
    }

    /// The request body to send (`None`: as it came) or its refusal.
    pub fn request(&mut self, kind: BodyKind, body: &[u8]) -> Result<Option<Bytes>, Refused> {
        let checked = check_body(
            &mut self.session,
            Phase::Request,
            kind,
            body,
            "request body",
        );
        self.audit.record(self.session.take_hits());
        checked.map(|b| b.map(Bytes::from)).map_err(|e| {
            let (status, outcome) = match e {
                CheckError::TooLarge { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "guardrail_too_large")
                }
                _ => (StatusCode::BAD_REQUEST, "guardrail_blocked"),
            };
            tracing::info!(error = %e, "api request refused by guardrails");
            Refused {
                status,
                outcome,
                message: e.to_string(),
            }
        })
    }

    /// The response body to send (`None`: as it came) or the refusal that
    /// replaces it: the response rules, then the request's restorable
    /// placeholders put back.
    pub fn response(&mut self, kind: BodyKind, body: &[u8]) -> Result<Option<Bytes>, Refused> {
        let checked = check_body(
            &mut self.session,
            Phase::Response,
            kind,
            body,
            "response body",
        );
        self.audit.record(self.session.take_hits());
        let checked = checked.map_err(|e| {
            let outcome = match e {
                CheckError::TooLarge { .. } => "guardrail_too_large",
                _ => "guardrail_blocked",
            };
            tracing::info!(error = %e, "api response withheld by guardrails");
            Refused {
                status: StatusCode::BAD_GATEWAY,
                outcome,
                message: e.to_string(),
            }
        })?;
        let Some(restorer) = self.session.restorer() else {
            return Ok(checked.map(Bytes::from));
        };
        let current = checked.as_deref().unwrap_or(body);
        let restored = walk_body(kind, current, &mut |text, _| {
            Ok(Some(restorer.restore(text)))
        })
        .unwrap_or_default();
        Ok(restored.or(checked).map(Bytes::from))
    }

    /// A refusal for a response body larger than one scan takes: it is
    /// withheld, never passed unscanned.
    pub fn too_large(&self, what: &str) -> Refused {
        let limit = self.max_body();
        tracing::info!(limit, "api {what} over the guardrails' scan limit withheld");
        Refused {
            status: StatusCode::BAD_GATEWAY,
            outcome: "guardrail_too_large",
            message: format!(
                "the {what} is larger than the {limit} bytes guardrails scan \
                 (guardrails.max_scan_bytes); it was withheld"
            ),
        }
    }
}

/// Headers of a body the guard replaced: its new length, no transfer
/// coding.
pub fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(hyper::header::TRANSFER_ENCODING);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
}

/// How a body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
    Text,
}

/// How a body with these headers is read; `None` when it cannot be.
pub fn body_kind(headers: &HeaderMap) -> Option<BodyKind> {
    let encoded = headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return None;
    }
    // A body without a type is read as text: data must not leave
    // unscanned only because the client did not label it.
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Some(BodyKind::Text);
    };
    let mime = value
        .to_str()
        .ok()?
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let (kind, sub) = mime.split_once('/')?;
    match (kind, sub) {
        ("application", "json") => Some(BodyKind::Json),
        (_, s) if s.ends_with("+json") => Some(BodyKind::Json),
        ("application", "x-www-form-urlencoded") => Some(BodyKind::Form),
        // An event stream has no end to wait for: it is not buffered.
        ("text", "event-stream") => None,
        ("text", _) => Some(BodyKind::Text),
        ("application", "xml" | "x-ndjson" | "graphql" | "javascript" | "yaml") => {
            Some(BodyKind::Text)
        }
        (_, s) if s.ends_with("+xml") => Some(BodyKind::Text),
        _ => None,
    }
}

/// Applies `phase`'s rules to a body: `Ok(None)` to send it as it is,
/// `Ok(Some(body))` to send the redacted body instead, `Err` to refuse.
/// `what` names the body in refusals ("request body").
pub fn check_body(
    session: &mut Session,
    phase: Phase,
    kind: BodyKind,
    body: &[u8],
    what: &str,
) -> Result<Option<Vec<u8>>, CheckError> {
    if !session.plan().checks(phase) {
        return Ok(None);
    }
    walk_body(kind, body, &mut |text, place| {
        session.check(phase, text, || format!("{what}{}", place()))
    })
}

/// Changes one text: given the text and where it is in the body (built
/// only when needed), `Some(new)` replaces it, `Err` refuses.
type Edit<'a> = &'a mut dyn FnMut(&str, &dyn Fn() -> String) -> Result<Option<String>, CheckError>;

/// Calls `edit` on every text of a body and returns the body with the
/// replacements (`None`: nothing replaced).
fn walk_body(kind: BodyKind, body: &[u8], edit: Edit<'_>) -> Result<Option<Vec<u8>>, CheckError> {
    if body.is_empty() {
        return Ok(None);
    }
    match kind {
        BodyKind::Json if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => {
            walk_json(body, edit)
        }
        BodyKind::Form => walk_form(body, edit),
        // Text, and JSON that does not parse (sent on as it came, so it
        // is read as the text it is).
        _ => {
            let text = String::from_utf8_lossy(body);
            Ok(edit(&text, &String::new)?.map(String::into_bytes))
        }
    }
}

/// Each string value of a valid JSON document; a replaced one is written
/// back as a JSON string in place, everything else stays as it was.
fn walk_json(body: &[u8], edit: Edit<'_>) -> Result<Option<Vec<u8>>, CheckError> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    for span in string_values(body) {
        // Valid JSON (checked by the caller): every literal decodes.
        let Ok(value) = serde_json::from_slice::<Cow<'_, str>>(&body[span.clone()]) else {
            continue;
        };
        let at = span.start;
        let Some(new) = edit(&value, &|| format!(", JSON string at byte {at}"))? else {
            continue;
        };
        let out = out.get_or_insert_with(|| Vec::with_capacity(body.len()));
        out.extend_from_slice(&body[copied..span.start]);
        // Serialising a string cannot fail.
        out.extend_from_slice(serde_json::to_string(&new).unwrap_or_default().as_bytes());
        copied = span.end;
    }
    Ok(out.map(|mut out| {
        out.extend_from_slice(&body[copied..]);
        out
    }))
}

/// The byte ranges (quotes included) of the string literals of a JSON
/// document that are values, not object keys. The document is assumed
/// valid: this only follows quotes and escapes.
fn string_values(body: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < body.len() && body[i] != b'"' {
            i += if body[i] == b'\\' { 2 } else { 1 };
        }
        let end = (i + 1).min(body.len());
        i = end;
        // A key is followed by a colon.
        let next = body[end..].iter().find(|b| !b.is_ascii_whitespace());
        if next != Some(&b':') {
            spans.push(start..end);
        }
    }
    spans
}

/// Each decoded value of a URL-encoded form; with a replacement the form
/// is encoded again.
fn walk_form(body: &[u8], edit: Edit<'_>) -> Result<Option<Vec<u8>>, CheckError> {
    let mut pairs = Vec::new();
    let mut changed = false;
    for (key, value) in form_urlencoded::parse(body) {
        let new = edit(&value, &|| format!(", form field {key:?}"))?;
        changed |= new.is_some();
        pairs.push((key, new.map_or(value, Cow::Owned)));
    }
    if !changed {
        return Ok(None);
    }
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &pairs {
        out.append_pair(k, v);
    }
    Ok(Some(out.finish().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use hyper::header::HeaderValue;

    use crate::config::GuardrailsConfig;
    use crate::config::{GateKind, GuardAction, GuardPolicyConfig, GuardRuleConfig};
    use crate::policy::guardrail::Guardrails;

    fn session() -> Session {
        let rule = |detect: &[&str], action| GuardRuleConfig {
            detect: detect.iter().map(|s| s.to_string()).collect(),
            action,
            restore: false,
        };
        let cfg = GuardrailsConfig {
            policies: vec![GuardPolicyConfig {
                name: "data".into(),
                request: vec![
                    rule(&["email"], GuardAction::Redact),
                    rule(&["credit_card"], GuardAction::Block),
                ],
                ..GuardPolicyConfig::default()
            }],
            ..GuardrailsConfig::default()
        };
        let g = Guardrails::build(&cfg).unwrap();
        Session::new(
            g.plan(GateKind::Api, Some(("w", &BTreeMap::new())))
                .unwrap(),
        )
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn body_kinds_follow_the_content_type() {
        let kind = |pairs: &[(&'static str, &'static str)]| body_kind(&headers(pairs));
        assert_eq!(kind(&[]), Some(BodyKind::Text));
        for (ct, want) in [
            ("application/json", Some(BodyKind::Json)),
            ("Application/JSON; charset=utf-8", Some(BodyKind::Json)),
            ("application/vnd.api+json", Some(BodyKind::Json)),
            ("application/x-www-form-urlencoded", Some(BodyKind::Form)),
            ("text/plain", Some(BodyKind::Text)),
            ("text/csv", Some(BodyKind::Text)),
            ("application/xml", Some(BodyKind::Text)),
            ("application/soap+xml", Some(BodyKind::Text)),
            ("text/event-stream", None),
            ("application/octet-stream", None),
            ("multipart/form-data; boundary=x", None),
            ("image/png", None),
            ("nonsense", None),
        ] {
            assert_eq!(kind(&[("content-type", ct)]), want, "{ct}");
        }
        assert_eq!(
            kind(&[
                ("content-type", "application/json"),
                ("content-encoding", "gzip")
            ]),
            None
        );
        assert_eq!(
            kind(&[
                ("content-type", "application/json"),
                ("content-encoding", "identity")
            ]),
            Some(BodyKind::Json)
        );
    }

    #[test]
    fn json_string_values_are_redacted_in_place_and_keys_are_not_read() {
        let mut s = session();
        let body = br#"{ "to":"bob@example.com", "bob@example.com" : 1,
            "list": ["x", "amy\u0040example.org"], "n": 1.50 }"#;
        let out = check_body(&mut s, Phase::Request, BodyKind::Json, body, "request body")
            .unwrap()
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            r#"{ "to":"<EMAIL_1>", "bob@example.com" : 1,
            "list": ["x", "<EMAIL_2>"], "n": 1.50 }"#,
            "escaped values are read decoded; everything else is kept byte for byte"
        );
        let mut s = session();
        let clean = br#"{"a": "nothing here", "b": [1, 2, {"c": "\"quoted\""}]}"#;
        assert_eq!(
            check_body(
                &mut s,
                Phase::Request,
                BodyKind::Json,
                clean,
                "request body"
            ),
            Ok(None)
        );
    }

    #[test]
    fn blocks_name_the_place_never_the_value() {
        let mut s = session();
        let body = br#"{"note": "ok", "card": "4111 1111 1111 1111"}"#;
        let Err(CheckError::Blocked(b)) =
            check_body(&mut s, Phase::Request, BodyKind::Json, body, "request body")
        else {
            panic!("a card number is blocked");
        };
        let message = b.message();
        assert!(
            message.contains("request body, JSON string at byte 23"),
            "{message}"
        );
        assert!(!message.contains("4111"), "{message}");
    }

    #[test]
    fn invalid_json_is_read_as_text() {
        let mut s = session();
        let body = b"{\"to\": bob@example.com";
        let out = check_body(&mut s, Phase::Request, BodyKind::Json, body, "request body")
            .unwrap()
            .unwrap();
        assert_eq!(out, b"{\"to\": <EMAIL_1>");
    }

    #[test]
    fn forms_are_read_decoded_and_encoded_again_only_when_changed() {
        let mut s = session();
        let body = b"name=Bob+Smith&mail=bob%40example.com&x=%C3%A9";
        let out = check_body(&mut s, Phase::Request, BodyKind::Form, body, "request body")
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "name=Bob+Smith&mail=%3CEMAIL_1%3E&x=%C3%A9"
        );
        let mut s = session();
        assert_eq!(
            check_body(
                &mut s,
                Phase::Request,
                BodyKind::Form,
                b"a=1&b=two",
                "request body"
            ),
            Ok(None)
        );
    }

    #[test]
    fn text_and_invalid_utf8() {
        let mut s = session();
        let out = check_body(
            &mut s,
            Phase::Request,
            BodyKind::Text,
            b"write to bob@example.com \xff",
            "request body",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "write to <EMAIL_1> \u{FFFD}"
        );
        let mut s = session();
        assert_eq!(
            check_body(&mut s, Phase::Request, BodyKind::Text, b"", "request body"),
            Ok(None)
        );
        // Response rules: none configured, nothing read.
        assert_eq!(
            check_body(
                &mut s,
                Phase::Response,
                BodyKind::Text,
                b"bob@example.com",
                "response body"
            ),
            Ok(None)
        );
    }

    #[test]
    fn answers_get_the_requests_placeholders_back_and_their_own_rules() {
        let cfg = GuardrailsConfig {
            policies: vec![GuardPolicyConfig {
                name: "data".into(),
                request: vec![GuardRuleConfig {
                    detect: vec!["email".into()],
                    action: GuardAction::Redact,
                    restore: true,
                }],
                response: vec![GuardRuleConfig {
                    detect: vec!["secret".into()],
                    action: GuardAction::Redact,
                    restore: false,
                }],
                ..GuardPolicyConfig::default()
            }],
            ..GuardrailsConfig::default()
        };
        let g = Guardrails::build(&cfg).unwrap();
        let plan = g
            .plan(GateKind::Api, Some(("w", &BTreeMap::new())))
            .unwrap();
        let audit = Audit {
            findings: prometheus::IntCounterVec::new(
                prometheus::Opts::new("f", "test"),
                crate::telemetry::genai::GUARD_FINDING_LABELS,
            )
            .unwrap(),
            gate: "api",
            workload: "w".into(),
            destination: "d".into(),
        };
        let mut guard = BodyGuard::new(Session::new(plan), audit.clone());
        let json = headers(&[("content-type", "application/json")]);
        let kind = guard.request_kind(&json).unwrap();
        let up = guard
            .request(kind, br#"{"to": "bob@example.com"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(&up[..], br#"{"to": "<EMAIL_1>"}"#);
        let kind = guard
            .response_kind(&Method::POST, StatusCode::OK, &json)
            .unwrap();
        let key = "ghp_R4nd0mT0k3nV4lu3Xy9Qz8Wv7Ut6Sr5Pq4On";
        let answer = format!(r#"{{"sent_to": "<EMAIL_1>", "key": "{key}"}}"#);
        let back = guard.response(kind, answer.as_bytes()).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(back.to_vec()).unwrap(),
            r#"{"sent_to": "bob@example.com", "key": "<GITHUB_TOKEN_1>"}"#
        );
        assert_eq!(
            audit
                .findings
                .with_label_values(&[
                    "api",
                    "response",
                    "data",
                    "github_token",
                    "redact",
                    "w",
                    "d"
                ])
                .get(),
            1
        );
        // No body to read: HEAD, 204, 304.
        for (m, s) in [
            (Method::HEAD, StatusCode::OK),
            (Method::GET, StatusCode::NO_CONTENT),
            (Method::GET, StatusCode::NOT_MODIFIED),
        ] {
            assert_eq!(guard.response_kind(&m, s, &json), None);
        }
    }

    #[test]
    fn string_spans_skip_keys_and_follow_escapes() {
        let body = br#"{"k": "v\"w", "a" :["b", "c\\"], "d": {"e": "f"}}"#;
        let spans: Vec<&[u8]> = string_values(body).into_iter().map(|r| &body[r]).collect();
        assert_eq!(
            spans,
            vec![&br#""v\"w""#[..], br#""b""#, br#""c\\""#, br#""f""#]
        );
        assert_eq!(string_values(br#""top""#).len(), 1);
    }
}
