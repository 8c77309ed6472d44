//! Embedding a question with an OpenAI-compatible embeddings endpoint for
//! the semantic cache (`llm.cache.semantic.embeddings`): the request body
//! and reading the answer. The call itself goes through the provider's
//! pooled connections like any provider attempt (serve.rs).
use bytes::Bytes;
use serde_json::{json, Value};

use crate::config::SemanticEmbeddings;

/// Largest embeddings answer read: 3072 floats written out take ~70 KiB;
/// this leaves room for larger models without reading an unbounded body.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Largest vector accepted. The index keeps one byte per dimension per
/// question, so this bounds an entry's size whatever the server sends.
pub const MAX_DIMENSIONS: usize = 8192;

/// `POST …/embeddings` for one text, asking for floats (not base64).
pub fn request_body(cfg: &SemanticEmbeddings, text: &str) -> Bytes {
    let mut body = json!({
        "model": cfg.model,
        "input": text,
        "encoding_format": "float",
    });
    if let Some(d) = cfg.dimensions {
        body["dimensions"] = json!(d);
    }
    Bytes::from(body.to_string())
}

/// Why an embeddings answer was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    #[error("the answer is not JSON: {0}")]
    NotJson(String),
    #[error("the answer has no data[0].embedding array of numbers")]
    NoEmbedding,
    #[error("the embedding has {0} dimensions, more than the {MAX_DIMENSIONS} accepted")]
    TooLong(usize),
    #[error("the embedding is all zeros or not finite: it cannot be compared")]
    Degenerate,
}

/// The first embedding of an OpenAI embeddings answer, scaled to unit
/// length: the index quantises components of unit vectors to one byte
/// each, and not every server normalises.
pub fn read_answer(body: &[u8]) -> Result<Vec<f32>, EmbedError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| EmbedError::NotJson(e.to_string()))?;
    let items = value
        .pointer("/data/0/embedding")
        .and_then(Value::as_array)
        .ok_or(EmbedError::NoEmbedding)?;
    if items.is_empty() {
        return Err(EmbedError::NoEmbedding);
    }
    if items.len() > MAX_DIMENSIONS {
        return Err(EmbedError::TooLong(items.len()));
    }
    let mut v = Vec::with_capacity(items.len());
    for item in items {
        // f64 from JSON; the index keeps f32 precision at most.
        let x = item.as_f64().ok_or(EmbedError::NoEmbedding)? as f32;
        if !x.is_finite() {
            return Err(EmbedError::Degenerate);
        }
        v.push(x);
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return Err(EmbedError::Degenerate);
    }
    for x in &mut v {
        *x /= norm;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dimensions: Option<u32>) -> SemanticEmbeddings {
        SemanticEmbeddings {
            provider: "emb".into(),
            model: "text-embedding-3-small".into(),
            dimensions,
            timeout_ms: 1000,
        }
    }

    #[test]
    fn the_request_asks_for_floats_and_passes_dimensions_only_when_set() {
        let body: Value =
            serde_json::from_slice(&request_body(&cfg(None), "hi \"there\"")).unwrap();
        assert_eq!(
            body,
            json!({"model": "text-embedding-3-small", "input": "hi \"there\"", "encoding_format": "float"})
        );
        let body: Value = serde_json::from_slice(&request_body(&cfg(Some(256)), "x")).unwrap();
        assert_eq!(body["dimensions"], 256);
    }

    #[test]
    fn answers_are_read_and_scaled_to_unit_length() {
        let v = read_answer(
            br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[3,4]}],"model":"m","usage":{"prompt_tokens":1,"total_tokens":1}}"#,
        )
        .unwrap();
        assert_eq!(v, vec![0.6, 0.8]);
        // Already unit vectors stay as they are.
        let v = read_answer(br#"{"data":[{"embedding":[0.0,-1.0,0.0]}]}"#).unwrap();
        assert_eq!(v, vec![0.0, -1.0, 0.0]);
    }

    #[test]
    fn malformed_answers_are_errors_that_say_what_was_wrong() {
        assert!(matches!(
            read_answer(b"<html>"),
            Err(EmbedError::NotJson(_))
        ));
        for body in [
            &br#"{"data":[]}"#[..],
            br#"{"data":[{"embedding":[]}]}"#,
            br#"{"data":[{"embedding":"AAAA"}]}"#,
            br#"{"data":[{"embedding":[1,"x"]}]}"#,
            br#"{"error":{"message":"no"}}"#,
        ] {
            assert_eq!(
                read_answer(body),
                Err(EmbedError::NoEmbedding),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            read_answer(br#"{"data":[{"embedding":[0,0,0]}]}"#),
            Err(EmbedError::Degenerate)
        );
        // 1e39 overflows f32.
        assert_eq!(
            read_answer(br#"{"data":[{"embedding":[1e39,1]}]}"#),
            Err(EmbedError::Degenerate)
        );
        let long = format!(
            r#"{{"data":[{{"embedding":[{}]}}]}}"#,
            vec!["0.1"; MAX_DIMENSIONS + 1].join(",")
        );
        assert_eq!(
            read_answer(long.as_bytes()),
            Err(EmbedError::TooLong(MAX_DIMENSIONS + 1))
        );
    }
}
