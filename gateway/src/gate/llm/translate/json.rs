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
