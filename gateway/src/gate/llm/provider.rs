//! Providers at run time: where they are, their credentials, and how a
//! request for them is written — the URL, the authentication, and the body
//! in their protocol — and how their answer is read back into the client's.
use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use hyper::{header::HeaderName, http::HeaderValue, HeaderMap, Uri};
use serde_json::{Map, Value};

use super::{
    front::{Api, Dialect, Refusal},
    request::ClientRequest,
    translate::{self, TranslateError},
    usage::Usage,
};
use crate::config::{Provider, ProviderKind, SecretSource};

/// The protocol a provider's endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
    Gemini,
    Bedrock,
}

impl Wire {
    pub fn of(kind: ProviderKind) -> Wire {
        match kind {
            ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::AzureOpenai => {
                Wire::OpenAi
            }
            ProviderKind::Anthropic => Wire::Anthropic,
            ProviderKind::Gemini => Wire::Gemini,
            ProviderKind::Bedrock => Wire::Bedrock,
        }
    }
}

/// A key or credential read from a file (re-read when the file changes,
/// checked at most once a second) or from the environment (read once).
pub struct Secret {
    source: SecretSource,
    cached: Mutex<Cached>,
}

struct Cached {
    value: Option<Arc<str>>,
    modified: Option<SystemTime>,
    checked: Option<Instant>,
}

const SECRET_RECHECK: Duration = Duration::from_secs(1);

impl Secret {
    pub fn new(source: &SecretSource) -> Secret {
        Secret {
            source: source.clone(),
            cached: Mutex::new(Cached {
                value: None,
                modified: None,
                checked: None,
            }),
        }
    }

    /// The current value; the error says what to check, never the value.
    /// Re-read at most once a [`SECRET_RECHECK`] (a file only when its
    /// modification time changed): this runs for every provider call.
    pub fn get(&self) -> Result<Arc<str>, String> {
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = c.checked.is_some_and(|t| t.elapsed() < SECRET_RECHECK);
        if let (true, Some(v)) = (fresh, &c.value) {
            return Ok(Arc::clone(v));
        }
        if let Some(var) = &self.source.env {
            let v = std::env::var(var)
                .map_err(|_| format!("the environment variable {var} is not set"))?;
            let v = v.trim();
            if c.value.as_deref() != Some(v) {
                c.value = Some(Arc::from(v));
            }
            c.checked = Some(Instant::now());
            return c.value.clone().ok_or_else(|| "no key".into());
        }
        let Some(path) = &self.source.file else {
            return Err("no key source configured".into());
        };
        c.checked = Some(Instant::now());
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if c.value.is_none() || modified != c.modified {
            match read_secret(path) {
                Ok(v) => {
                    c.value = Some(Arc::from(v));
                    c.modified = modified;
                }
                Err(e) if c.value.is_none() => return Err(e),
                // A Secret volume mid-swap: keep the last good value.
                Err(e) => {
                    tracing::warn!(error = %e, "re-reading a provider key failed; keeping the previous one")
                }
            }
        }
        c.value.clone().ok_or_else(|| "no key".into())
    }
}

fn read_secret(path: &PathBuf) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the key file {}: {e}", path.display()))?;
    let v = text.trim();
    if v.is_empty() {
        return Err(format!("the key file {} is empty", path.display()));
    }
    Ok(v.to_owned())
}

/// A configured provider, ready to be called.
pub struct ProviderRt {
    pub cfg: Provider,
    pub wire: Wire,
    pub https: bool,
    /// The URL's host: TLS name and `Host`.
    pub host: String,
    pub port: u16,
    /// The URL's path without a trailing `/`.
    base_path: String,
    /// [`ProviderRt::authority`] as the `Host` of every request.
    pub authority_value: HeaderValue,
    key: Option<Secret>,
    aws: Option<AwsSecrets>,
    /// Until when (ms on the policy's clock) the provider is cooling down.
    cooling_until: AtomicU64,
    /// The key headers made from the key last read: made again only when
    /// the key changes.
    auth_cache: Mutex<Option<(Arc<str>, AuthHeaders)>>,
}

type AuthHeaders = Vec<(HeaderName, HeaderValue)>;

struct AwsSecrets {
    region: String,
    access_key_id: Secret,
    secret_access_key: Secret,
    session_token: Option<Secret>,
}

impl ProviderRt {
    pub fn new(cfg: &Provider) -> Result<ProviderRt, String> {
        let url = cfg
            .url
            .as_deref()
            .or(cfg.kind.default_url())
            .ok_or_else(|| format!("llm.providers {:?}: no url", cfg.name))?;
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("llm.providers {:?}: url {url:?}: {e}", cfg.name))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .ok_or_else(|| format!("llm.providers {:?}: url {url:?} has no host", cfg.name))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let mut rt = ProviderRt {
            wire: Wire::of(cfg.kind),
            https,
            host,
            port,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            authority_value: HeaderValue::from_static(""),
            key: cfg.api_key.as_ref().map(Secret::new),
            aws: cfg.aws.as_ref().map(|a| AwsSecrets {
                region: a.region.clone(),
                access_key_id: Secret::new(&a.access_key_id),
                secret_access_key: Secret::new(&a.secret_access_key),
                session_token: a.session_token.as_ref().map(Secret::new),
            }),
            cooling_until: AtomicU64::new(0),
            auth_cache: Mutex::new(None),
            cfg: cfg.clone(),
        };
        rt.authority_value = HeaderValue::from_str(&rt.authority()).map_err(|_| {
            format!(
                "provider {:?}: the URL's host is not a valid Host header",
                cfg.name
            )
        })?;
        Ok(rt)
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn cooling(&self, now_ms: u64) -> bool {
        self.cooling_until.load(Ordering::Relaxed) > now_ms
    }

    pub fn cool_down(&self, now_ms: u64) {
        self.cooling_until
            .store(now_ms + self.cfg.cooldown_ms, Ordering::Relaxed);
    }

    /// `Host`, with the port when it is not the scheme's.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.https, self.port) {
            (true, 443) | (false, 80) => host,
            _ => format!("{host}:{}", self.port),
        }
    }

    /// The path (and query) of `api` for `model` on this provider.
    pub fn path(&self, api: Api, model: &str, stream: bool) -> Result<String, Refusal> {
        let base = &self.base_path;
        let unsupported = || {
            Refusal::InvalidRequest(format!(
                "the {} API cannot be served by provider {:?} (kind {}) that serves this model",
                api_name(api),
                self.cfg.name,
                self.cfg.kind.as_str()
            ))
        };
        let path = match (self.cfg.kind, api) {
            (
                ProviderKind::Openai | ProviderKind::OpenaiCompatible,
                Api::ChatCompletions | Api::Messages,
            ) => format!("{base}/chat/completions"),
            (ProviderKind::Openai | ProviderKind::OpenaiCompatible, Api::Responses) => {
                format!("{base}/responses")
            }
            (ProviderKind::Openai | ProviderKind::OpenaiCompatible, Api::Embeddings) => {
                format!("{base}/embeddings")
            }
            (ProviderKind::AzureOpenai, Api::ChatCompletions | Api::Messages | Api::Embeddings) => {
                let op = if api == Api::Embeddings {
                    "embeddings"
                } else {
                    "chat/completions"
                };
                format!(
                    "{base}/openai/deployments/{}/{op}?api-version={}",
                    segment(model),
                    self.cfg.api_version.as_deref().unwrap_or_default()
                )
            }
            (ProviderKind::Anthropic, Api::ChatCompletions | Api::Messages) => {
                format!("{base}/v1/messages")
            }
            (ProviderKind::Anthropic, Api::CountTokens) => {
                format!("{base}/v1/messages/count_tokens")
            }
            (ProviderKind::Gemini, Api::ChatCompletions | Api::Messages) if stream => format!(
                "{base}/v1beta/models/{}:streamGenerateContent?alt=sse",
                segment(model)
            ),
            (ProviderKind::Gemini, Api::ChatCompletions | Api::Messages) => {
                format!("{base}/v1beta/models/{}:generateContent", segment(model))
            }
            (ProviderKind::Bedrock, Api::ChatCompletions | Api::Messages) => {
                let op = if stream {
                    "converse-stream"
                } else {
                    "converse"
                };
                format!("{base}/model/{}/{op}", segment(model))
            }
            _ => return Err(unsupported()),
        };
        Ok(path)
    }

    /// The headers that authenticate a request: the configured key, or
    /// with `pass_client_key` the one the pod sent. `Err`: the key cannot
    /// be read (a gateway problem, not the client's).
    pub fn auth_headers(
        &self,
        client: &HeaderMap,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let mut out = Vec::new();
        if self.cfg.pass_client_key {
            for name in CLIENT_KEY_HEADERS {
                if let Some(v) = client.get(*name) {
                    out.push((HeaderName::from_static(name), v.clone()));
                }
            }
            return Ok(out);
        }
        let Some(key) = &self.key else {
            return Ok(out);
        };
        let key = key
            .get()
            .map_err(|e| format!("provider {:?}: {e}", self.cfg.name))?;
        let mut cache = self.auth_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, headers)) = &*cache {
            if Arc::ptr_eq(k, &key) {
                return Ok(headers.clone());
            }
        }
        let value = |v: String| {
            let mut v = HeaderValue::from_str(&v).map_err(|_| {
                format!(
                    "provider {:?}: the key is not a valid header value",
                    self.cfg.name
                )
            })?;
            v.set_sensitive(true);
            Ok::<_, String>(v)
        };
        match self.cfg.kind {
            ProviderKind::Openai | ProviderKind::OpenaiCompatible => {
                out.push((
                    hyper::header::AUTHORIZATION,
                    value(format!("Bearer {key}"))?,
                ));
            }
            ProviderKind::AzureOpenai => {
                out.push((HeaderName::from_static("api-key"), value(key.to_string())?))
            }
            ProviderKind::Anthropic => out.push((
                HeaderName::from_static("x-api-key"),
                value(key.to_string())?,
            )),
            ProviderKind::Gemini => {
                out.push((
                    HeaderName::from_static("x-goog-api-key"),
                    value(key.to_string())?,
                ));
            }
            // SigV4 signs the finished request: see `sign`.
            ProviderKind::Bedrock => {}
        }
        *cache = Some((key, out.clone()));
        Ok(out)
    }

    /// SigV4 headers for a Bedrock request (empty for other kinds).
    pub fn sign(
        &self,
        path_and_query: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, String> {
        let Some(aws) = &self.aws else {
            return Ok(Vec::new());
        };
        let creds = crate::upstream::sigv4::Credentials {
            access_key_id: aws.access_key_id.get()?.to_string(),
            secret_access_key: aws.secret_access_key.get()?.to_string(),
            session_token: aws
                .session_token
                .as_ref()
                .map(|t| t.get().map(|v| v.to_string()))
                .transpose()?,
        };
        let url = format!(
            "{}://{}{path_and_query}",
            if self.https { "https" } else { "http" },
            self.authority()
        );
        Ok(crate::upstream::sigv4::sign(
            "POST",
            &url,
            headers,
            body,
            &aws.region,
            "bedrock",
            &creds,
            SystemTime::now(),
        ))
    }
}

/// Where SDKs put their keys; all are removed before a request goes
/// upstream, so a pod's key never reaches a provider unless configured.
pub const CLIENT_KEY_HEADERS: &[&str] =
    &["authorization", "x-api-key", "api-key", "x-goog-api-key"];

fn api_name(api: Api) -> &'static str {
    match api {
        Api::ChatCompletions => "chat completions",
        Api::Responses => "responses",
        Api::Embeddings => "embeddings",
        Api::Models(_) => "models",
        Api::Messages => "messages",
        Api::CountTokens => "count_tokens",
    }
}

/// A model name as one URL path segment (Bedrock ids hold `:`).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The provider's request body (JSON) for a client's request, and
/// whether the gateway asked an OpenAI stream for usage the client did not
/// ask for (that chunk is then kept from the client). `model` is the
/// provider's model name.
pub fn request_body(
    api: Api,
    wire: Wire,
    client: &ClientRequest<'_>,
    model: &str,
    stream: bool,
) -> Result<(Vec<u8>, bool), TranslateError> {
    let set_model = |mut v: Value| {
        if let Some(o) = v.as_object_mut() {
            o.insert("model".into(), model.into());
        }
        v
    };
    let bytes = |v: Value| Ok((crate::gate::api::to_json(&v), false));
    let tree = || client.value().clone();
    match (api.dialect(), wire) {
        // The provider's own protocol: the client's text with the model
        // replaced, no tree built.
        (_, Wire::OpenAi) if api == Api::Embeddings || api == Api::Responses => {
            Ok(client.write_with_model(model, false))
        }
        (Dialect::OpenAi, Wire::OpenAi) => Ok(client.write_with_model(model, stream)),
        (Dialect::Anthropic, Wire::Anthropic) => Ok(client.write_with_model(model, false)),
        (Dialect::OpenAi, Wire::Anthropic) => bytes(set_model(
            translate::openai_request_to_anthropic(client.value())?,
        )),
        (Dialect::Anthropic, Wire::OpenAi) => {
            match translate::plain::anthropic_request_to_openai(client, model, stream) {
                Some(body) => Ok((body, false)),
                None => anthropic_to_openai_tree(client, model, stream),
            }
        }
        (dialect, Wire::Gemini) => {
            let openai = to_openai(dialect, tree())?;
            bytes(translate::openai_request_to_gemini(&openai)?)
        }
        (dialect, Wire::Bedrock) => {
            let openai = to_openai(dialect, tree())?;
            bytes(translate::openai_request_to_bedrock(&openai)?)
        }
    }
}

/// An Anthropic request for an OpenAI-compatible provider, through the
/// tree translation: what [`translate::plain`] declines.
pub(crate) fn anthropic_to_openai_tree(
    client: &ClientRequest<'_>,
    model: &str,
    stream: bool,
) -> Result<(Vec<u8>, bool), TranslateError> {
    let mut body = translate::anthropic_request_to_openai(client.value())?;
    if let Some(o) = body.as_object_mut() {
        o.insert("model".into(), model.into());
    }
    if stream {
        // The Anthropic stream reports usage at its end: ask for it.
        ask_usage(&mut body);
    }
    Ok((crate::gate::api::to_json(&body), false))
}

fn to_openai(dialect: Dialect, body: Value) -> Result<Value, TranslateError> {
    match dialect {
        Dialect::OpenAi => Ok(body),
        Dialect::Anthropic => translate::anthropic_request_to_openai(&body),
    }
}

/// Sets `stream_options.include_usage`; true when the client had not.
fn ask_usage(body: &mut Value) -> bool {
    match body.as_object_mut() {
        Some(o) => super::request::include_usage(
            o.entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new())),
        ),
        None => false,
    }
}

/// A provider's whole answer parsed for [`response_body`]: when it is
/// translated, only what the translation reads is built
/// ([`translate::OPENAI_ANSWER_READ`]). A token count is a count, not a
/// generation, and goes back whole.
pub fn parse_answer(api: Api, wire: Wire, bytes: &[u8]) -> serde_json::Result<Value> {
    match (api, api.dialect(), wire) {
        (Api::CountTokens, ..) => serde_json::from_slice(bytes),
        (_, Dialect::Anthropic, Wire::OpenAi) => {
            translate::json::parse_kept(bytes, &translate::OPENAI_ANSWER_READ)
        }
        _ => serde_json::from_slice(bytes),
    }
}

/// A provider's non-streaming answer in the client's protocol, with the
/// usage it reported. `model` is the name the client is shown.
pub fn response_body(
    api: Api,
    wire: Wire,
    upstream: &Value,
    model: &str,
    id: &str,
    created: u64,
) -> Result<(Value, Option<Usage>), TranslateError> {
    let set_model = |mut v: Value| {
        if let Some(o) = v.as_object_mut() {
            if o.contains_key("model") {
                o.insert("model".into(), model.into());
            }
        }
        v
    };
    let dialect = api.dialect();
    match wire {
        Wire::OpenAi => {
            let usage = upstream.get("usage").and_then(Usage::from_openai);
            let body = match dialect {
                Dialect::OpenAi => set_model(upstream.clone()),
                Dialect::Anthropic => translate::openai_response_to_anthropic(upstream, model)?,
            };
            Ok((body, usage))
        }
        Wire::Anthropic => {
            let usage = upstream.get("usage").and_then(Usage::from_anthropic);
            let body = match dialect {
                Dialect::Anthropic => set_model(upstream.clone()),
                Dialect::OpenAi => {
                    translate::anthropic_response_to_openai(upstream, model, created)?
                }
            };
            Ok((body, usage))
        }
        Wire::Gemini | Wire::Bedrock => {
            let openai = if wire == Wire::Gemini {
                translate::gemini_response_to_openai(upstream, model, id, created)?
            } else {
                translate::bedrock_response_to_openai(upstream, model, id, created)?
            };
            let usage = openai.get("usage").and_then(Usage::from_openai);
            let body = match dialect {
                Dialect::OpenAi => openai,
                Dialect::Anthropic => translate::openai_response_to_anthropic(&openai, model)?,
            };
            Ok((body, usage))
        }
    }
}

/// The message of a provider's error body, whatever its protocol
/// (`{"error": {"message"}}` for OpenAI and Anthropic, Gemini's
/// `{"error": {"message"}}`, Bedrock's `{"message"}`).
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/message")
        .or_else(|| v.get("message"))
        .or_else(|| v.get("Message"))
        .and_then(Value::as_str)
        .map(|s| s.chars().take(500).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A directory removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("trigate-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }

        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn provider(kind: ProviderKind, url: Option<&str>) -> ProviderRt {
        ProviderRt::new(&Provider {
            name: "p".into(),
            kind,
            url: url.map(str::to_owned),
            address: None,
            api_key: None,
            pass_client_key: false,
            api_version: Some("2024-10-21".into()),
            aws: None,
            headers: Default::default(),
            timeout_ms: 1000,
            cooldown_ms: 500,
        })
        .unwrap()
    }

    #[test]
    fn paths_per_kind_and_api() {
        let openai = provider(ProviderKind::Openai, None);
        assert_eq!(openai.host, "api.openai.com");
        assert_eq!(openai.authority(), "api.openai.com");
        assert_eq!(
            openai.path(Api::ChatCompletions, "m", false).unwrap(),
            "/v1/chat/completions"
        );
        assert_eq!(
            openai.path(Api::Messages, "m", true).unwrap(),
            "/v1/chat/completions"
        );
        assert_eq!(
            openai.path(Api::Embeddings, "m", false).unwrap(),
            "/v1/embeddings"
        );
        assert!(openai.path(Api::CountTokens, "m", false).is_err());

        let vllm = provider(
            ProviderKind::OpenaiCompatible,
            Some("http://10.0.0.1:8000/v1/"),
        );
        assert_eq!(vllm.authority(), "10.0.0.1:8000");
        assert_eq!(
            vllm.path(Api::ChatCompletions, "m", false).unwrap(),
            "/v1/chat/completions"
        );

        let anthropic = provider(ProviderKind::Anthropic, None);
        assert_eq!(
            anthropic.path(Api::ChatCompletions, "m", false).unwrap(),
            "/v1/messages"
        );
        assert_eq!(
            anthropic.path(Api::CountTokens, "m", false).unwrap(),
            "/v1/messages/count_tokens"
        );
        assert!(anthropic.path(Api::Embeddings, "m", false).is_err());
        assert!(anthropic.path(Api::Responses, "m", false).is_err());

        let azure = provider(
            ProviderKind::AzureOpenai,
            Some("https://r.openai.azure.com"),
        );
        assert_eq!(
            azure
                .path(Api::ChatCompletions, "my deploy", false)
                .unwrap(),
            "/openai/deployments/my%20deploy/chat/completions?api-version=2024-10-21"
        );

        let gemini = provider(ProviderKind::Gemini, None);
        assert_eq!(
            gemini
                .path(Api::Messages, "gemini-2.0-flash", true)
                .unwrap(),
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            gemini
                .path(Api::ChatCompletions, "gemini-2.0-flash", false)
                .unwrap(),
            "/v1beta/models/gemini-2.0-flash:generateContent"
        );

        let bedrock = provider(
            ProviderKind::Bedrock,
            Some("https://bedrock-runtime.us-east-1.amazonaws.com"),
        );
        assert_eq!(
            bedrock
                .path(
                    Api::ChatCompletions,
                    "anthropic.claude-3-haiku-20240307-v1:0",
                    false
                )
                .unwrap(),
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        );
    }

    #[test]
    fn authority_brackets_v6_and_keeps_odd_ports() {
        let p = provider(
            ProviderKind::OpenaiCompatible,
            Some("http://[fd00::1]:8080/v1"),
        );
        assert_eq!(p.host, "fd00::1");
        assert_eq!(p.authority(), "[fd00::1]:8080");
        let p = provider(ProviderKind::OpenaiCompatible, Some("https://h:443"));
        assert_eq!(p.authority(), "h");
    }

    #[test]
    fn keys_are_injected_per_kind_and_client_keys_only_when_asked() {
        let dir = Dir::new("provider-keys");
        let file = dir.path().join("key");
        std::fs::write(&file, "sk-gateway\n").unwrap();
        let mut cfg = provider(ProviderKind::Anthropic, None).cfg;
        cfg.api_key = Some(SecretSource {
            file: Some(file.clone()),
            env: None,
        });
        let mut client = HeaderMap::new();
        client.insert("x-api-key", HeaderValue::from_static("sk-pod"));
        let p = ProviderRt::new(&cfg).unwrap();
        let h = p.auth_headers(&client).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].0, "x-api-key");
        assert_eq!(h[0].1, "sk-gateway");
        assert!(h[0].1.is_sensitive());

        cfg.kind = ProviderKind::Openai;
        let p = ProviderRt::new(&cfg).unwrap();
        assert_eq!(p.auth_headers(&client).unwrap()[0].1, "Bearer sk-gateway");

        cfg.pass_client_key = true;
        let p = ProviderRt::new(&cfg).unwrap();
        let h = p.auth_headers(&client).unwrap();
        assert_eq!(
            h,
            vec![(
                HeaderName::from_static("x-api-key"),
                HeaderValue::from_static("sk-pod")
            )]
        );
    }

    #[test]
    fn key_files_are_reread_when_they_change() {
        let dir = Dir::new("provider-reread");
        let file = dir.path().join("key");
        std::fs::write(&file, "one").unwrap();
        let s = Secret::new(&SecretSource {
            file: Some(file.clone()),
            env: None,
        });
        assert_eq!(&*s.get().unwrap(), "one");
        std::fs::write(&file, "two").unwrap();
        // Force a different mtime even on coarse filesystems.
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        s.cached.lock().unwrap().checked = None;
        assert_eq!(&*s.get().unwrap(), "two");
        std::fs::remove_file(&file).unwrap();
        s.cached.lock().unwrap().checked = None;
        assert_eq!(
            &*s.get().unwrap(),
            "two",
            "a vanished file keeps the last good key"
        );
        let missing = Secret::new(&SecretSource {
            file: Some(dir.path().join("nope")),
            env: None,
        });
        let e = missing.get().unwrap_err();
        assert!(e.contains("nope"), "{e}");
        let env = Secret::new(&SecretSource {
            file: None,
            env: Some("TRIGATE_TEST_SURELY_UNSET_VAR".into()),
        });
        assert!(env
            .get()
            .unwrap_err()
            .contains("TRIGATE_TEST_SURELY_UNSET_VAR"));
    }

    fn request_json(
        api: Api,
        wire: Wire,
        client: &Map<String, Value>,
        model: &str,
        stream: bool,
    ) -> Result<(Value, bool), TranslateError> {
        let client = ClientRequest::from_tree(client.clone());
        let (bytes, added) = request_body(api, wire, &client, model, stream)?;
        Ok((serde_json::from_slice(&bytes).unwrap(), added))
    }

    #[test]
    fn same_protocol_requests_keep_every_member_but_the_model() {
        let client = json!({"model": "a", "messages": [{"role": "user", "content": "hi \"x\""}],
            "temperature": 0.5, "tools": [{"type": "function", "function": {"name": "f"}}],
            "metadata": {"k": "v"}});
        for (api, wire) in [
            (Api::ChatCompletions, Wire::OpenAi),
            (Api::Messages, Wire::Anthropic),
            (Api::Embeddings, Wire::OpenAi),
        ] {
            let (body, added) =
                request_json(api, wire, client.as_object().unwrap(), "b", false).unwrap();
            assert!(!added);
            let mut expected = client.clone();
            expected["model"] = "b".into();
            assert_eq!(body, expected, "{api:?} to {wire:?}");
        }
        // A request without a model gets the served one.
        let (body, _) = request_json(
            Api::Embeddings,
            Wire::OpenAi,
            json!({"input": "x"}).as_object().unwrap(),
            "e",
            false,
        )
        .unwrap();
        assert_eq!(body, json!({"input": "x", "model": "e"}));
    }

    #[test]
    fn openai_streams_ask_for_usage_and_say_whether_the_client_did() {
        let client =
            json!({"model": "a", "messages": [{"role": "user", "content": "hi"}], "stream": true});
        let (body, added) = request_json(
            Api::ChatCompletions,
            Wire::OpenAi,
            client.as_object().unwrap(),
            "b",
            true,
        )
        .unwrap();
        assert!(added);
        assert_eq!(body["model"], "b");
        assert_eq!(body["stream_options"]["include_usage"], true);

        let client = json!({"model": "a", "messages": [], "stream": true, "stream_options": {"include_usage": true}});
        let (_, added) = request_json(
            Api::ChatCompletions,
            Wire::OpenAi,
            client.as_object().unwrap(),
            "b",
            true,
        )
        .unwrap();
        assert!(!added);

        let (body, added) = request_json(
            Api::ChatCompletions,
            Wire::OpenAi,
            client.as_object().unwrap(),
            "b",
            false,
        )
        .unwrap();
        assert!(!added);
        assert_eq!(
            body["stream_options"]["include_usage"], true,
            "the client's own options stay"
        );
    }

    #[test]
    fn cross_protocol_requests_are_translated_with_the_served_model() {
        let client = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
        let (body, _) = request_json(
            Api::ChatCompletions,
            Wire::Anthropic,
            client.as_object().unwrap(),
            "claude-x",
            false,
        )
        .unwrap();
        assert_eq!(body["model"], "claude-x");
        assert_eq!(body["messages"][0]["content"], "hi");
        assert!(body["max_tokens"].is_u64());

        let client = json!({"model": "claude", "max_tokens": 10, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]});
        let (body, added) = request_json(
            Api::Messages,
            Wire::OpenAi,
            client.as_object().unwrap(),
            "gpt",
            true,
        )
        .unwrap();
        assert!(!added);
        assert_eq!(body["model"], "gpt");
        assert_eq!(body["stream_options"]["include_usage"], true);
    }

    #[test]
    fn responses_report_the_chosen_model_and_usage() {
        let anthropic = json!({"id": "msg_1", "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": "hello"}], "model": "claude-x",
            "stop_reason": "end_turn", "usage": {"input_tokens": 5, "output_tokens": 2}});
        let (body, usage) = response_body(
            Api::ChatCompletions,
            Wire::Anthropic,
            &anthropic,
            "gpt-4o",
            "id",
            7,
        )
        .unwrap();
        assert_eq!(body["model"], "gpt-4o");
        assert_eq!(body["choices"][0]["message"]["content"], "hello");
        let u = usage.unwrap();
        assert_eq!((u.input, u.output), (5, 2));

        let (body, _) =
            response_body(Api::Messages, Wire::Anthropic, &anthropic, "shown", "id", 7).unwrap();
        assert_eq!(body["model"], "shown");
        assert_eq!(body["content"][0]["text"], "hello");
    }

    #[test]
    fn error_messages_are_read_from_any_shape() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad","type":"x"}}"#).as_deref(),
            Some("bad")
        );
        assert_eq!(
            error_message(br#"{"message":"aws says"}"#).as_deref(),
            Some("aws says")
        );
        assert_eq!(error_message(b"<html>"), None);
    }
}
