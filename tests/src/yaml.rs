//! A tiny YAML writer for config values: block mappings and sequences,
//! strings as double-quoted JSON strings (valid YAML), so the file is
//! readable when a test dumps it.

use serde_json::Value;

pub(crate) fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(_) | Value::Array(_) => block(v, 0, &mut out),
        _ => {
            out.push_str(&scalar(v));
            out.push('\n');
        }
    }
    out
}

fn block(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push_str(&pad);
                out.push_str(&key(k));
                out.push(':');
                value_after_key(v, indent, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        // First key on the dash line, the rest aligned under it.
                        let mut inner = String::new();
                        block(item, indent + 2, &mut inner);
                        out.push(' ');
                        out.push_str(&inner[indent + 2..]);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push('\n');
                        block(item, indent + 2, out);
                    }
                    _ => {
                        out.push(' ');
                        out.push_str(&inline(item));
                        out.push('\n');
                    }
                }
            }
        }
        _ => unreachable!("block() takes containers"),
    }
}

fn value_after_key(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            block(v, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            block(v, indent + 2, out);
        }
        _ => {
            out.push(' ');
            out.push_str(&inline(v));
            out.push('\n');
        }
    }
}

/// Scalars and empty containers on one line.
fn inline(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        _ => scalar(v),
    }
}

fn scalar(v: &Value) -> String {
    // JSON strings are YAML double-quoted scalars; numbers, bools and null
    // are spelled the same in both.
    v.to_string()
}

fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !k.starts_with('-');
    if plain {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_block_yaml() {
        // Keys in sorted order: the map may or may not preserve insertion order.
        let v = json!({
            "destinations": [{"action": "redirect", "name": "up", "ports": [80, 81]}],
            "dns": {"hosts": {"api.e2e.test": ["10.0.0.1"]}},
            "instance": "e2e-1-2",
            "labels": {},
            "workloads": [],
        });
        assert_eq!(
            to_yaml(&v),
            "destinations:\n  - action: \"redirect\"\n    name: \"up\"\n    ports:\n      - 80\n      - 81\n\
             dns:\n  hosts:\n    api.e2e.test:\n      - \"10.0.0.1\"\n\
             instance: \"e2e-1-2\"\n\
             labels: {}\n\
             workloads: []\n"
        );
    }
}
