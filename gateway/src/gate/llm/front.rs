//! What a pod called: which API (from method and path) and so which
//! protocol every answer must be in, refusals included, since the SDK in
//! the pod only understands its own provider's error shape.
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    header::{self, HeaderValue},
    HeaderMap, Method, Response, StatusCode,
};
use serde_json::json;

use crate::gate::api::client::ApiBody;

/// The protocol a client speaks; errors and translated answers follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
        }
    }
}

/// The front-end APIs the gate serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// `GET /v1/models`, in the dialect the client's headers show.
    Models(Dialect),
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    CountTokens,
}

impl Api {
    /// Reads the API from the request line. The `/v1` prefix is optional
    /// (OpenAI-compatible clients configured with a bare base URL).
    /// `None`: not an API the gate serves.
    pub fn detect(method: &Method, path: &str, headers: &HeaderMap) -> Option<Api> {
        let path = path.strip_prefix("/v1").unwrap_or(path);
        let path = path.strip_suffix('/').unwrap_or(path);
        match (method, path) {
            (&Method::POST, "/chat/completions") => Some(Api::ChatCompletions),
            (&Method::POST, "/responses") => Some(Api::Responses),
            (&Method::POST, "/embeddings") => Some(Api::Embeddings),
            (&Method::POST, "/messages") => Some(Api::Messages),
            (&Method::POST, "/messages/count_tokens") => Some(Api::CountTokens),
            (&Method::GET, "/models") => Some(Api::Models(dialect_of(headers))),
            _ => None,
        }
    }

    pub fn dialect(self) -> Dialect {
        match self {
            Api::ChatCompletions | Api::Responses | Api::Embeddings => Dialect::OpenAi,
            Api::Messages | Api::CountTokens => Dialect::Anthropic,
            Api::Models(d) => d,
        }
    }

    /// The OpenTelemetry `gen_ai.operation.name`.
    pub fn operation(self) -> &'static str {
        match self {
            Api::ChatCompletions | Api::Messages => "chat",
            Api::Responses => "generate_content",
            Api::Embeddings => "embeddings",
            Api::Models(_) => "list_models",
            Api::CountTokens => "count_tokens",
        }
    }
}

/// The Anthropic SDKs always send `anthropic-version`; OpenAI's never do.
pub fn dialect_of(headers: &HeaderMap) -> Dialect {
    if headers.contains_key("anthropic-version") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    }
}

/// Why the gateway answers instead of a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The body is not what the API takes (bad JSON, missing or wrong
    /// field, something the serving provider cannot express).
    InvalidRequest(String),
    /// No configured model matches the requested name.
    UnknownModel(String),
    /// The workload may not use this model.
    ModelNotAllowed {
        model: String,
        workload: String,
    },
    /// Not an API of the LLM gate.
    NotServed(String),
    BodyTooLarge(u64),
    /// A request, token or spend limit; `tokens` tells OpenAI's `type`.
    Limited {
        message: String,
        retry_after_secs: u64,
        tokens: bool,
    },
    /// The limit backend is down and limits fail closed.
    LimitsUnavailable,
    /// Every provider failed; the last failure is named.
    Upstream(String),
    /// Every provider timed out.
    Timeout(String),
    /// A guardrail refused the prompt or withheld the answer; the message
    /// names the policy and detector, never the text found.
    Guardrail {
        message: String,
        outcome: &'static str,
    },
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::InvalidRequest(_) | Refusal::Guardrail { .. } => StatusCode::BAD_REQUEST,
            Refusal::UnknownModel(_) | Refusal::NotServed(_) => StatusCode::NOT_FOUND,
            Refusal::ModelNotAllowed { .. } => StatusCode::FORBIDDEN,
            Refusal::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::LimitsUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Upstream(_) => StatusCode::BAD_GATEWAY,
            Refusal::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The access log's outcome.
    pub fn outcome(&self) -> &'static str {
        match self {
            Refusal::InvalidRequest(_) => "invalid_request",
            Refusal::UnknownModel(_) => "unknown_model",
            Refusal::ModelNotAllowed { .. } => "model_not_allowed",
            Refusal::NotServed(_) => "not_served",
            Refusal::BodyTooLarge(_) => "body_too_large",
            Refusal::Limited { .. } => "rate_limited",
            Refusal::LimitsUnavailable => "rate_limit_unavailable",
            Refusal::Upstream(_) => "upstream_failed",
            Refusal::Timeout(_) => "upstream_timeout",
            Refusal::Guardrail { outcome, .. } => outcome,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::InvalidRequest(m) | Refusal::Upstream(m) | Refusal::Timeout(m) => m.clone(),
            Refusal::Limited { message, .. } | Refusal::Guardrail { message, .. } => {
                message.clone()
            }
            Refusal::UnknownModel(model) => format!(
                "the model {model:?} does not exist on this gateway; check llm.models in the trigate config"
            ),
            Refusal::ModelNotAllowed { model, workload } => format!(
                "workload {workload:?} may not use the model {model:?} (llm.access)"
            ),
            Refusal::NotServed(path) => {
                format!("trigate's LLM gate does not serve {path}")
            }
            Refusal::BodyTooLarge(max) => {
                format!("the request body is larger than {max} bytes (http.max_request_body_bytes)")
            }
            Refusal::LimitsUnavailable => {
                "the limit backend is unavailable and this gateway fails closed".into()
            }
        }
    }

    /// OpenAI's `error.type` and `error.code`.
    fn openai_kind(&self) -> (&'static str, Option<&'static str>) {
        match self {
            Refusal::InvalidRequest(_) | Refusal::BodyTooLarge(_) | Refusal::NotServed(_) => {
                ("invalid_request_error", None)
            }
            Refusal::UnknownModel(_) => ("invalid_request_error", Some("model_not_found")),
            Refusal::Guardrail { .. } => ("invalid_request_error", Some("guardrail_blocked")),
            Refusal::ModelNotAllowed { .. } => ("permission_error", Some("model_not_allowed")),
            Refusal::Limited { tokens: true, .. } => ("tokens", Some("rate_limit_exceeded")),
            Refusal::Limited { tokens: false, .. } => ("requests", Some("rate_limit_exceeded")),
            Refusal::LimitsUnavailable | Refusal::Upstream(_) | Refusal::Timeout(_) => {
                ("server_error", None)
            }
        }
    }

    /// Anthropic's `error.type`.
    fn anthropic_kind(&self) -> &'static str {
        match self {
            Refusal::InvalidRequest(_) | Refusal::Guardrail { .. } => "invalid_request_error",
            Refusal::UnknownModel(_) | Refusal::NotServed(_) => "not_found_error",
            Refusal::ModelNotAllowed { .. } => "permission_error",
            Refusal::BodyTooLarge(_) => "request_too_large",
            Refusal::Limited { .. } => "rate_limit_error",
            Refusal::LimitsUnavailable => "overloaded_error",
            Refusal::Upstream(_) | Refusal::Timeout(_) => "api_error",
        }
    }

    /// The body in the client's protocol. The message never holds request
    /// content, only names and numbers.
    pub fn body(&self, dialect: Dialect) -> serde_json::Value {
        let message = self.message();
        match dialect {
            Dialect::OpenAi => {
                let (kind, code) = self.openai_kind();
                json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
            }
            Dialect::Anthropic => json!({
                "type": "error",
                "error": { "type": self.anthropic_kind(), "message": message },
            }),
        }
    }

    pub fn response(&self, dialect: Dialect) -> Response<ApiBody> {
        let body = Bytes::from(self.body(dialect).to_string());
        let mut resp = Response::new(Full::new(body).map_err(|e| match e {}).boxed());
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert("x-trigate-refusal", HeaderValue::from_static("1"));
        if let Refusal::Limited {
            retry_after_secs, ..
        } = self
        {
            h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        resp
    }
}

/// A refusal of the routes' policy (authn, authz, route limits, body cap)
/// on an LLM destination, said the way the caller's SDK reads errors: the
/// same status and headers, the api gate's `{"error": {"type", "message"}}`
/// body in the OpenAI or Anthropic error shape. Other answers (a CORS
/// preflight, a cached response) pass unchanged.
pub async fn in_callers_shape(resp: Response<ApiBody>, request: &HeaderMap) -> Response<ApiBody> {
    if !resp.headers().contains_key("x-trigate-refusal") {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    // The gateway's own body, in memory.
    let api_body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = route_refusal_body(dialect_of(request), parts.status, &api_body);
    let body = Full::new(Bytes::from(body.to_string()))
        .map_err(|e| match e {})
        .boxed();
    let mut resp = Response::from_parts(parts, body);
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    resp
}

/// The body of [`in_callers_shape`]: the api gate's refusal `type` stays as
/// OpenAI's `code`; the error type follows the status.
pub fn route_refusal_body(
    dialect: Dialect,
    status: StatusCode,
    api_body: &[u8],
) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(api_body).unwrap_or_default();
    let text = |p: &str| v.pointer(p).and_then(serde_json::Value::as_str);
    let kind = text("/error/type").unwrap_or("refused");
    let message = text("/error/message").unwrap_or("refused by the gateway's route policy");
    match dialect {
        Dialect::OpenAi => {
            let openai_type = match status.as_u16() {
                403 => "permission_error",
                429 => "requests",
                500..=599 => "server_error",
                _ => "invalid_request_error",
            };
            json!({ "error": { "message": message, "type": openai_type, "param": null, "code": kind } })
        }
        Dialect::Anthropic => json!({
            "type": "error",
            "error": { "type": anthropic_error_type(status), "message": message },
        }),
    }
}

/// Anthropic's `error.type` for an HTTP status.
pub fn anthropic_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_refusals_are_said_in_the_callers_protocol() {
        let api = br#"{"error":{"type":"unauthenticated","message":"no API key"}}"#;
        let openai = route_refusal_body(Dialect::OpenAi, StatusCode::UNAUTHORIZED, api);
        assert_eq!(
            openai,
            json!({"error": {"message": "no API key", "type": "invalid_request_error", "param": null, "code": "unauthenticated"}})
        );
        let anthropic = route_refusal_body(Dialect::Anthropic, StatusCode::UNAUTHORIZED, api);
        assert_eq!(
            anthropic,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "no API key"}})
        );
        let limited = br#"{"error":{"type":"rate_limited","message":"slow down"}}"#;
        assert_eq!(
            route_refusal_body(Dialect::OpenAi, StatusCode::TOO_MANY_REQUESTS, limited)["error"]
                ["type"],
            "requests"
        );
        assert_eq!(
            route_refusal_body(Dialect::Anthropic, StatusCode::FORBIDDEN, limited)["error"]["type"],
            "permission_error"
        );
        // Not the api gate's shape: a generic message, never a panic.
        let odd = route_refusal_body(Dialect::Anthropic, StatusCode::BAD_REQUEST, b"<html>");
        assert_eq!(odd["error"]["type"], "invalid_request_error");
        assert!(odd["error"]["message"].is_string());
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn detects_every_api_with_and_without_v1() {
        let none = HeaderMap::new();
        let cases = [
            (
                Method::POST,
                "/v1/chat/completions",
                Some(Api::ChatCompletions),
            ),
            (
                Method::POST,
                "/chat/completions",
                Some(Api::ChatCompletions),
            ),
            (
                Method::POST,
                "/v1/chat/completions/",
                Some(Api::ChatCompletions),
            ),
            (Method::POST, "/v1/responses", Some(Api::Responses)),
            (Method::POST, "/v1/embeddings", Some(Api::Embeddings)),
            (Method::POST, "/v1/messages", Some(Api::Messages)),
            (
                Method::POST,
                "/v1/messages/count_tokens",
                Some(Api::CountTokens),
            ),
            (
                Method::GET,
                "/v1/models",
                Some(Api::Models(Dialect::OpenAi)),
            ),
            (Method::GET, "/v1/chat/completions", None),
            (Method::POST, "/v1/models", None),
            (Method::POST, "/v1/files", None),
            (Method::POST, "/v10/chat/completions", None),
            (Method::DELETE, "/v1/messages", None),
        ];
        for (method, path, want) in cases {
            assert_eq!(Api::detect(&method, path, &none), want, "{method} {path}");
        }
        let anthropic = h(&[("anthropic-version", "2023-06-01")]);
        assert_eq!(
            Api::detect(&Method::GET, "/v1/models", &anthropic),
            Some(Api::Models(Dialect::Anthropic))
        );
    }

    #[test]
    fn dialects_follow_the_api() {
        assert_eq!(Api::ChatCompletions.dialect(), Dialect::OpenAi);
        assert_eq!(Api::Responses.dialect(), Dialect::OpenAi);
        assert_eq!(Api::Embeddings.dialect(), Dialect::OpenAi);
        assert_eq!(Api::Messages.dialect(), Dialect::Anthropic);
        assert_eq!(Api::CountTokens.dialect(), Dialect::Anthropic);
        assert_eq!(
            Api::Models(Dialect::Anthropic).dialect(),
            Dialect::Anthropic
        );
    }

    fn all_refusals() -> Vec<Refusal> {
        vec![
            Refusal::InvalidRequest("messages: required field is missing".into()),
            Refusal::UnknownModel("gpt-9".into()),
            Refusal::ModelNotAllowed {
                model: "gpt-4o".into(),
                workload: "pod-a".into(),
            },
            Refusal::NotServed("/v1/files".into()),
            Refusal::BodyTooLarge(10),
            Refusal::Limited {
                message: "limit x".into(),
                retry_after_secs: 7,
                tokens: true,
            },
            Refusal::Limited {
                message: "limit y".into(),
                retry_after_secs: 1,
                tokens: false,
            },
            Refusal::LimitsUnavailable,
            Refusal::Upstream("provider a: 500".into()),
            Refusal::Timeout("provider a: timed out".into()),
        ]
    }

    #[test]
    fn every_refusal_has_both_shapes() {
        for r in all_refusals() {
            let o = r.body(Dialect::OpenAi);
            assert!(
                o["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{r:?}"
            );
            assert!(o["error"]["type"].is_string(), "{r:?}");
            assert!(o["error"].get("param").is_some(), "{r:?}");
            let a = r.body(Dialect::Anthropic);
            assert_eq!(a["type"], "error", "{r:?}");
            assert!(a["error"]["type"].is_string(), "{r:?}");
            assert_eq!(a["error"]["message"], o["error"]["message"], "{r:?}");
            assert!(r.status().is_client_error() || r.status().is_server_error());
        }
    }

    #[test]
    fn limits_are_429_with_retry_after_in_both_protocols() {
        let r = Refusal::Limited {
            message: "input tokens per minute of limit \"t\" exceeded".into(),
            retry_after_secs: 7,
            tokens: true,
        };
        let resp = r.response(Dialect::OpenAi);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "7");
        assert_eq!(
            r.body(Dialect::OpenAi)["error"]["code"],
            "rate_limit_exceeded"
        );
        assert_eq!(r.body(Dialect::OpenAi)["error"]["type"], "tokens");
        assert_eq!(
            r.body(Dialect::Anthropic)["error"]["type"],
            "rate_limit_error"
        );
    }

    #[test]
    fn unknown_models_are_404_model_not_found() {
        let r = Refusal::UnknownModel("gpt-9".into());
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.body(Dialect::OpenAi)["error"]["code"], "model_not_found");
        assert_eq!(
            r.body(Dialect::Anthropic)["error"]["type"],
            "not_found_error"
        );
    }
}
