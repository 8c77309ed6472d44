//! Typed reads from JSON values whose errors carry the field's path.
//!
//! Both protocols treat an explicit `null` like an absent member, and SDKs
//! send nulls freely, so every read here does too.
use serde_json::{Map, Value};

use super::TranslateError;

pub(crate) type Object = Map<String, Value>;

pub(super) type Result<T> = std::result::Result<T, TranslateError>;

/// `path.key`, or `key` at the top level (`path` empty).
pub(crate) fn field(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> TranslateError {
    TranslateError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

pub(crate) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported {
        field: field.into(),
        reason: reason.into(),
    }
}

pub(crate) fn wrong_type(path: &str, expected: &str, got: &Value) -> TranslateError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    invalid(path, format!("expected {expected}, got {got}"))
}

/// Refuses the first member (in key order, so the error is stable) that is
/// not null and not in `known`.
pub(super) fn reject_unknown(o: &Object, known: &[&str], path: &str, target: &str) -> Result<()> {
    match o
        .iter()
        .find(|(k, v)| !v.is_null() && !known.contains(&k.as_str()))
    {
        Some((k, _)) => Err(unsupported(
            field(path, k),
            format!("has no {target} equivalent"),
        )),
        None => Ok(()),
    }
}

pub(crate) fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Object> {
    v.as_object()
        .ok_or_else(|| wrong_type(path, "an object", v))
}

pub(super) fn as_str<'a>(v: &'a Value, path: &str) -> Result<&'a str> {
    v.as_str().ok_or_else(|| wrong_type(path, "a string", v))
}

pub(super) fn as_array<'a>(v: &'a Value, path: &str) -> Result<&'a [Value]> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| wrong_type(path, "an array", v))
}

/// A member, or `None` when absent or null.
pub(crate) fn get<'a>(o: &'a Object, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

pub(crate) fn require<'a>(o: &'a Object, key: &str, path: &str) -> Result<&'a Value> {
    get(o, key).ok_or_else(|| TranslateError::Missing {
        field: field(path, key),
    })
}

pub(crate) fn require_str<'a>(o: &'a Object, key: &str, path: &str) -> Result<&'a str> {
    as_str(require(o, key, path)?, &field(path, key))
}

pub(super) fn require_array<'a>(o: &'a Object, key: &str, path: &str) -> Result<&'a [Value]> {
    as_array(require(o, key, path)?, &field(path, key))
}

pub(crate) fn get_str<'a>(o: &'a Object, key: &str, path: &str) -> Result<Option<&'a str>> {
    get(o, key)
        .map(|v| as_str(v, &field(path, key)))
        .transpose()
}

pub(crate) fn get_array<'a>(o: &'a Object, key: &str, path: &str) -> Result<Option<&'a [Value]>> {
    get(o, key)
        .map(|v| as_array(v, &field(path, key)))
        .transpose()
}

pub(super) fn get_bool(o: &Object, key: &str, path: &str) -> Result<Option<bool>> {
    get(o, key)
        .map(|v| {
            v.as_bool()
                .ok_or_else(|| wrong_type(&field(path, key), "a boolean", v))
        })
        .transpose()
}

pub(crate) fn get_u64(o: &Object, key: &str, path: &str) -> Result<Option<u64>> {
    get(o, key)
        .map(|v| {
            v.as_u64()
                .ok_or_else(|| wrong_type(&field(path, key), "a non-negative integer", v))
        })
        .transpose()
}

/// A number, returned as the original value so `1` stays `1` and not `1.0`.
pub(super) fn get_number<'a>(o: &'a Object, key: &str, path: &str) -> Result<Option<&'a Value>> {
    match get(o, key) {
        Some(v) if !v.is_number() => Err(wrong_type(&field(path, key), "a number", v)),
        v => Ok(v),
    }
}

/// The parts of a JSON document a translation reads. Parsing with
/// [`parse_kept`] builds only those parts: members the reader never looks
/// at are skipped without being built (a provider's answer carries ids,
/// fingerprints, log-prob slots and token details no translation needs,
/// and building them was most of the cost of parsing it).
///
/// Where the document's shape differs from the expected one (an array
/// where an object was expected, say), that part is kept whole, so the
/// reader sees, and reports, exactly what a full parse would give it.
pub(crate) enum Keep {
    /// The whole value.
    All,
    /// An object's listed members, each kept as given; the rest skipped.
    Members(&'static [(&'static str, Keep)]),
    /// An array's elements, each kept as given.
    Elements(&'static Keep),
}

/// `bytes` parsed as JSON, keeping what `keep` names. Invalid JSON is an
/// error as from `serde_json::from_slice`, skipped parts included.
pub(crate) fn parse_kept(bytes: &[u8], keep: &Keep) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde::de::DeserializeSeed::deserialize(Kept(keep), &mut de)?;
    de.end()?;
    Ok(value)
}

struct Kept<'k>(&'k Keep);

impl<'de> serde::de::DeserializeSeed<'de> for Kept<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Value, D::Error> {
        match self.0 {
            Keep::All => serde::Deserialize::deserialize(d),
            keep => d.deserialize_any(Kept(keep)),
        }
    }
}

impl<'de> serde::de::Visitor<'de> for Kept<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> std::result::Result<Value, E> {
        Ok(n.into())
    }

    fn visit_u64<E>(self, n: u64) -> std::result::Result<Value, E> {
        Ok(n.into())
    }

    fn visit_f64<E>(self, n: f64) -> std::result::Result<Value, E> {
        // JSON has no NaN or infinity, so this is never Null.
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> std::result::Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Value, A::Error> {
        let each = match self.0 {
            Keep::Elements(each) => *each,
            _ => &Keep::All,
        };
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Kept(each))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Value, A::Error> {
        let mut out = Object::new();
        while let Some(key) = map.next_key::<Text<'de>>()? {
            let keep = match self.0 {
                Keep::Members(members) => members.iter().find(|(k, _)| *k == key.as_str()),
                _ => Some(&("", Keep::All)),
            };
            match keep {
                // A repeated member replaces the earlier one, as in a full parse.
                Some((_, keep)) => {
                    let v = map.next_value_seed(Kept(keep))?;
                    out.insert(key.into_string(), v);
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// A JSON string, borrowed from the input when it has no escapes: member
/// names (most are skipped and need no copy), and the texts
/// [`super::plain`] copies from one protocol into the other.
pub(super) enum Text<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Text<'_> {
    pub(super) fn as_str(&self) -> &str {
        match self {
            Text::Borrowed(s) => s,
            Text::Owned(s) => s,
        }
    }

    fn into_string(self) -> String {
        match self {
            Text::Borrowed(s) => s.to_owned(),
            Text::Owned(s) => s,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> std::result::Result<Text<'de>, E> {
                Ok(Text::Borrowed(s))
            }
            fn visit_str<E>(self, s: &str) -> std::result::Result<Text<'de>, E> {
                Ok(Text::Owned(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> std::result::Result<Text<'de>, E> {
                Ok(Text::Owned(s))
            }
        }
        d.deserialize_str(V)
    }
}
