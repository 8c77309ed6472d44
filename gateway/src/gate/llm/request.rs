//! The client's request body as the gate reads it: the top-level members
//! parsed, their values kept as the client's JSON text until something
//! needs them as values.
//!
//! Why: most requests go to a provider that speaks the client's protocol,
//! and then only `model`, `stream` and a few parameters matter. Building
//! the whole tree (every message, every content part) and dropping it
//! again was the largest part of the gate's own CPU per request in
//! `cargo xtask bench llm` profiles. Translation, token estimates and the
//! Responses API still get the tree ([`ClientRequest::value`]), built once.
use std::{borrow::Cow, fmt, sync::OnceLock};

use serde::{
    de::{MapAccess, Visitor},
    Deserialize, Deserializer,
};
use serde_json::{value::RawValue, Map, Value};

use super::routing::Members;

/// A JSON object body, one level deep.
pub struct ClientRequest<'a> {
    /// In the client's order; duplicate names are kept (the last one is
    /// the one read, as when the body is parsed into a map).
    members: Vec<(Cow<'a, str>, Member<'a>)>,
    tree: OnceLock<Value>,
}

enum Member<'a> {
    /// As the client wrote it.
    Raw(&'a RawValue),
    /// Set by the gateway (defaults, overrides, caps).
    Set(Value),
}

/// A top-level member as [`ClientRequest::members`] shows it.
pub enum MemberText<'r> {
    /// The client's JSON text.
    Raw(&'r str),
    /// A value the gateway set.
    Set(&'r Value),
}

impl Member<'_> {
    fn value(&self) -> Option<Value> {
        match self {
            Member::Raw(raw) => serde_json::from_str(raw.get()).ok(),
            Member::Set(v) => Some(v.clone()),
        }
    }
}

impl<'a> ClientRequest<'a> {
    /// The body's top level; the error is the message the client gets.
    pub fn parse(body: &'a [u8]) -> Result<ClientRequest<'a>, String> {
        let text = std::str::from_utf8(body)
            .map_err(|e| format!("body: not valid JSON: not UTF-8: {e}"))?;
        // Anything but an object is told apart from broken JSON.
        let trimmed = text.trim_start();
        if !trimmed.is_empty() && !trimmed.starts_with('{') {
            return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => Err("body: must be a JSON object".into()),
                Err(e) => Err(format!("body: not valid JSON: {e}")),
            };
        }
        let Top(members) =
            serde_json::from_str(text).map_err(|e| format!("body: not valid JSON: {e}"))?;
        Ok(ClientRequest {
            members,
            tree: OnceLock::new(),
        })
    }

    /// A request made by the gateway itself (a translation's output).
    pub fn from_tree(tree: Map<String, Value>) -> ClientRequest<'static> {
        ClientRequest {
            members: tree
                .iter()
                .map(|(k, v)| (Cow::Owned(k.clone()), Member::Set(v.clone())))
                .collect(),
            tree: OnceLock::from(Value::Object(tree)),
        }
    }

    fn member(&self, key: &str) -> Option<&Member<'a>> {
        self.members
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Every top-level member in the client's order, duplicates included:
    /// for readers that take the text apart themselves
    /// ([`super::translate::plain`]).
    pub fn members(&self) -> impl Iterator<Item = (&str, MemberText<'_>)> {
        self.members.iter().map(|(k, v)| {
            let v = match v {
                Member::Raw(raw) => MemberText::Raw(raw.get()),
                Member::Set(value) => MemberText::Set(value),
            };
            (k.as_ref(), v)
        })
    }

    /// A top-level member as a value (parsed on each call: for small
    /// members such as `model` or `stream_options`).
    pub fn get(&self, key: &str) -> Option<Value> {
        self.member(key).and_then(Member::value)
    }

    /// The whole body as a tree (an object), built on first use.
    pub fn value(&self) -> &Value {
        self.tree.get_or_init(|| {
            Value::Object(
                self.members
                    .iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v.value()?)))
                    .collect(),
            )
        })
    }

    /// The body with every `model` member set to `model` (added when
    /// missing), and `stream_options.include_usage` set when `usage`,
    /// written from the client's own text: members the gateway did not
    /// change go out byte for byte. True when usage was added.
    pub fn write_with_model(&self, model: &str, usage: bool) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(self.members.len() * 32 + 256);
        let mut added = false;
        let mut first = true;
        let mut member = |out: &mut Vec<u8>, key: &str, value: &dyn Fn(&mut Vec<u8>)| {
            out.push(if first { b'{' } else { b',' });
            first = false;
            write_json(out, key);
            out.push(b':');
            value(out);
        };
        for (k, v) in &self.members {
            match (k.as_ref(), v) {
                ("model", _) => member(&mut out, k, &|o| write_json(o, model)),
                ("stream_options", v) if usage => {
                    let mut options = v.value().unwrap_or(Value::Null);
                    added = include_usage(&mut options);
                    member(&mut out, k, &|o| write_json(o, &options));
                }
                (_, Member::Raw(raw)) => {
                    member(&mut out, k, &|o| o.extend_from_slice(raw.get().as_bytes()))
                }
                (_, Member::Set(value)) => member(&mut out, k, &|o| write_json(o, value)),
            }
        }
        if self.member("model").is_none() {
            member(&mut out, "model", &|o| write_json(o, model));
        }
        if usage && self.member("stream_options").is_none() {
            member(&mut out, "stream_options", &|o| {
                o.extend_from_slice(br#"{"include_usage":true}"#)
            });
            added = true;
        }
        if first {
            out.push(b'{');
        }
        out.push(b'}');
        (out, added)
    }
}

/// Sets `include_usage` in a `stream_options` object; true when it was
/// not set already. Anything but an object is left as it is.
pub fn include_usage(options: &mut Value) -> bool {
    let Some(options) = options.as_object_mut() else {
        return false;
    };
    let asked = options.get("include_usage").and_then(Value::as_bool) == Some(true);
    options.insert("include_usage".into(), true.into());
    !asked
}

pub(crate) fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Strings and values into a Vec: this cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

impl Members for ClientRequest<'_> {
    fn has(&self, key: &str) -> bool {
        self.member(key).is_some()
    }

    fn u64_of(&self, key: &str) -> Option<Option<u64>> {
        self.member(key).map(|m| m.value().and_then(|v| v.as_u64()))
    }

    fn set(&mut self, key: &str, value: Value) {
        self.tree.take();
        match self.members.iter_mut().rev().find(|(k, _)| k == key) {
            Some((_, m)) => *m = Member::Set(value),
            None => self
                .members
                .push((Cow::Owned(key.to_owned()), Member::Set(value))),
        }
    }
}

/// The top level of an object, values borrowed from the body.
struct Top<'a>(Vec<(Cow<'a, str>, Member<'a>)>);

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Top<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key, Member::Raw(value)));
                }
                Ok(Top(members))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn members_are_read_and_the_tree_matches_a_full_parse() {
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi \"x\" \u00e9"}],"stream":true,"n":2}"#;
        let r = ClientRequest::parse(body).unwrap();
        assert_eq!(r.get("model"), Some(json!("gpt-4o")));
        assert_eq!(r.get("stream"), Some(json!(true)));
        assert_eq!(r.get("nope"), None);
        let full: Map<String, Value> = serde_json::from_slice(body).unwrap();
        assert_eq!(r.value(), &Value::Object(full));
    }

    #[test]
    fn bad_bodies_get_the_messages_clients_saw_before() {
        for (body, want) in [
            (&b"[1,2]"[..], "body: must be a JSON object"),
            (b"\"text\"", "body: must be a JSON object"),
            (b"{\"model\": [", "body: not valid JSON"),
            (b"{bad}", "body: not valid JSON"),
            (b"", "body: not valid JSON"),
            (b"\xff\xfe", "body: not valid JSON"),
            (b"{\"a\":1} trailing", "body: not valid JSON"),
        ] {
            let e = ClientRequest::parse(body).err().unwrap();
            assert!(e.starts_with(want), "{body:?}: {e}");
        }
    }

    #[test]
    fn written_bodies_keep_members_byte_for_byte_and_set_the_model() {
        let body =
            br#"{"model":"a","temperature":0.50,"messages":[{"role":"user","content":"x"}]}"#;
        let r = ClientRequest::parse(body).unwrap();
        let (out, added) = r.write_with_model("b", false);
        assert!(!added);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"model":"b","temperature":0.50,"messages":[{"role":"user","content":"x"}]}"#,
            "0.50 stays as the client wrote it"
        );
        // No model: added at the end; empty object.
        let r = ClientRequest::parse(br#"{"input":"x"}"#).unwrap();
        assert_eq!(
            r.write_with_model("e", false).0,
            br#"{"input":"x","model":"e"}"#
        );
        let r = ClientRequest::parse(b"{}").unwrap();
        assert_eq!(r.write_with_model("e", false).0, br#"{"model":"e"}"#);
    }

    #[test]
    fn usage_is_asked_for_once_and_reported_when_added() {
        let cases = [
            (json!({"model": "a", "stream": true}), true),
            (
                json!({"model": "a", "stream_options": {"include_usage": false}}),
                true,
            ),
            (
                json!({"model": "a", "stream_options": {"include_usage": true}}),
                false,
            ),
        ];
        for (body, want_added) in cases {
            let text = body.to_string();
            let r = ClientRequest::parse(text.as_bytes()).unwrap();
            let (out, added) = r.write_with_model("b", true);
            assert_eq!(added, want_added, "{body}");
            let out: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(out["stream_options"]["include_usage"], true, "{body}");
            assert_eq!(out["model"], "b");
        }
    }

    #[test]
    fn set_members_replace_the_clients_and_reset_the_tree() {
        let mut r = ClientRequest::parse(br#"{"model":"a","max_tokens":9000}"#).unwrap();
        assert_eq!(r.value()["max_tokens"], 9000);
        assert_eq!(r.u64_of("max_tokens"), Some(Some(9000)));
        r.set("max_tokens", json!(100));
        r.set("temperature", json!(0.1));
        assert_eq!(r.value()["max_tokens"], 100);
        let out: Value = serde_json::from_slice(&r.write_with_model("a", false).0).unwrap();
        assert_eq!(
            out,
            json!({"model": "a", "max_tokens": 100, "temperature": 0.1})
        );
    }

    #[test]
    fn duplicate_members_read_the_last_and_all_models_are_replaced() {
        let r = ClientRequest::parse(br#"{"model":"a","model":"b","n":1}"#).unwrap();
        assert_eq!(r.get("model"), Some(json!("b")));
        let out = String::from_utf8(r.write_with_model("c", false).0).unwrap();
        assert_eq!(out, r#"{"model":"c","model":"c","n":1}"#);
    }

    #[test]
    fn escaped_names_are_written_escaped() {
        let r = ClientRequest::parse(br#"{"a\"b":1,"model":"m"}"#).unwrap();
        let out: Value = serde_json::from_slice(&r.write_with_model("x", false).0).unwrap();
        assert_eq!(out, json!({"a\"b": 1, "model": "x"}));
    }

    #[test]
    fn a_tree_made_request_writes_like_a_parsed_one() {
        let tree = json!({"model": "a", "messages": [], "stream": true});
        let r = ClientRequest::from_tree(tree.as_object().unwrap().clone());
        let (out, added) = r.write_with_model("b", true);
        assert!(added);
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            out,
            json!({"model": "b", "messages": [], "stream": true, "stream_options": {"include_usage": true}})
        );
        assert_eq!(r.value(), &tree);
    }
}
