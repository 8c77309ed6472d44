//! The LLM gate's exact answer cache: a request a tenant already sent is
//! answered with the bytes it was answered with then, without a provider.
//!
//! The key is a SHA-256 of the tenant, the API, whether it streams, and
//! the request as canonical JSON (object members sorted) without the
//! members that do not change the answer (`user`, `metadata`, …). A
//! streamed answer is kept as the SSE bytes the client was sent and
//! replayed as they were; a whole answer as its JSON. The key is taken
//! from the client's own request, before guardrails replace anything: two
//! prompts with different e-mail addresses redact to the same placeholder
//! and must not share an answer that was restored with one of them.
//!
//! Decisions ([`lookup`], [`tenant`]) are pure; the store is a bounded
//! TinyLFU cache (moka) weighed in bytes, with a TTL, and optionally Redis
//! (`llm.cache.shared`) so every node's gateway serves what one kept:
//! this node's memory first, then Redis, whose answers are kept here too.
//! Redis being slow or down only makes misses: the provider answers.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use bytes::Bytes;
use hyper::{header, HeaderMap};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    front::Api,
    semantic::{Question, SemanticIndex},
    usage::Usage,
};
use crate::config::{LlmCache, RateLimitBackend};

/// A cache key: SHA-256 of what identifies an answer.
pub type Key = [u8; 32];

/// What a request does with the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Caching is off.
    Off,
    /// Not looked up and not stored; the reason goes into logs.
    Bypass(&'static str),
    /// Looked up, and stored on a miss.
    Key(Key),
}

impl Lookup {
    /// The `x-trigate-cache` value of an answer that was not a hit.
    pub fn header(self) -> Option<&'static str> {
        match self {
            Lookup::Off => None,
            Lookup::Bypass(_) => Some("bypass"),
            Lookup::Key(_) => Some("miss"),
        }
    }

    pub fn key(self) -> Option<Key> {
        match self {
            Lookup::Key(k) => Some(k),
            _ => None,
        }
    }
}

/// Members that do not change what a model answers.
const IGNORED: [&str; 8] = [
    "stream",
    "user",
    "metadata",
    "store",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
    "background",
];

/// Who shares answers: the workload, or the value of the label `scope`
/// names (`label:team`); an unidentified caller or a workload without the
/// label is its own tenant.
pub fn tenant(scope: &str, workload: Option<(&str, &BTreeMap<String, String>)>) -> String {
    match (scope.strip_prefix("label:"), workload) {
        (Some(label), Some((name, labels))) => match labels.get(label) {
            Some(v) => format!("label:{label}={v}"),
            None => format!("workload:{name}"),
        },
        (None, Some((name, _))) => format!("workload:{name}"),
        (_, None) => "unidentified".into(),
    }
}

/// How a request of `api` uses the cache. Bypassed: a client that says
/// `Cache-Control: no-cache`/`no-store` (or `Pragma: no-cache`), and a
/// `temperature` above the configured maximum.
pub fn lookup(
    cfg: &LlmCache,
    tenant: &str,
    api: Api,
    request: &Value,
    stream: bool,
    headers: &HeaderMap,
) -> Lookup {
    if !cfg.enabled || !matches!(api, Api::ChatCompletions | Api::Messages | Api::Responses) {
        return Lookup::Off;
    }
    let says_no = |name: header::HeaderName| {
        headers.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .map(|d| d.trim().to_ascii_lowercase())
                    .any(|d| d == "no-cache" || d == "no-store")
            })
        })
    };
    if says_no(header::CACHE_CONTROL) || says_no(header::PRAGMA) {
        return Lookup::Bypass("client_no_cache");
    }
    let temperature = request
        .get("temperature")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    if temperature > cfg.max_temperature {
        return Lookup::Bypass("temperature");
    }
    let Value::Object(members) = request else {
        return Lookup::Bypass("not_an_object");
    };
    let mut hash = Sha256::new();
    hash.update(b"trigate-llm-cache-v1\0");
    hash.update(tenant.as_bytes());
    hash.update(format!("\0{api:?}\0{stream}\0").as_bytes());
    hash_members(&mut hash, members);
    Lookup::Key(hash.finalize().into())
}

/// Feeds the request's members that can change an answer into `hash`, as
/// canonical JSON: serde_json's map is ordered by key.
pub(super) fn hash_members(hash: &mut Sha256, members: &serde_json::Map<String, Value>) {
    for (k, v) in members {
        if IGNORED.contains(&k.as_str()) {
            continue;
        }
        hash.update(serde_json::to_string(k).unwrap_or_default().as_bytes());
        hash.update(b":");
        hash.update(v.to_string().as_bytes());
        hash.update(b",");
    }
}

/// One kept answer.
#[derive(Debug)]
pub struct Cached {
    /// What the client was sent: JSON, or the SSE stream.
    pub body: Bytes,
    pub stream: bool,
    /// What the provider reported for the original call: the tokens and
    /// spend a hit saves.
    pub usage: Option<Usage>,
    pub cost_micros: Option<u64>,
    pub model_served: String,
    pub provider: String,
}

/// Answers kept on this node (and in Redis when shared).
pub struct AnswerCache {
    store: moka::sync::Cache<Key, Arc<Cached>>,
    max_entry_bytes: u64,
    shared: Option<Arc<SharedAnswers>>,
    /// Answered questions and the similarity a new one needs.
    semantic: Option<(SemanticIndex, f32)>,
}

/// Where an answer is kept: its exact key, and its question for the
/// semantic index.
#[derive(Debug, Clone)]
pub struct Slot {
    pub key: Key,
    pub question: Option<Arc<Question>>,
}

/// Bookkeeping bytes counted per entry on top of the body.
const ENTRY_OVERHEAD: u64 = 256;

impl AnswerCache {
    /// `Ok(None)` when caching is off; `redis` is where a shared cache
    /// lives.
    pub fn new(cfg: &LlmCache, redis: &RateLimitBackend) -> Result<Option<AnswerCache>, String> {
        if !cfg.enabled {
            return Ok(None);
        }
        let shared = if cfg.shared {
            Some(Arc::new(SharedAnswers::new(cfg, redis)?))
        } else {
            None
        };
        Ok(Some(AnswerCache {
            store: moka::sync::Cache::builder()
                .max_capacity(cfg.max_bytes)
                .weigher(|_, v: &Arc<Cached>| {
                    u32::try_from(v.body.len() as u64 + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
                })
                .time_to_live(Duration::from_secs(cfg.ttl_secs))
                .build(),
            max_entry_bytes: cfg.max_entry_bytes,
            shared,
            semantic: cfg.semantic.enabled.then(|| {
                (
                    SemanticIndex::new(cfg.semantic.max_entries),
                    cfg.semantic.threshold,
                )
            }),
        }))
    }

    /// Whether questions are compared by meaning too.
    pub fn semantic(&self) -> bool {
        self.semantic.is_some()
    }

    /// The answer of the closest question already answered in `q`'s
    /// context, with its similarity.
    pub async fn similar(&self, q: &Question) -> Option<(Arc<Cached>, f32)> {
        let (index, threshold) = self.semantic.as_ref()?;
        let (key, score) = index.find(q, *threshold)?;
        Some((self.get(&key).await?, score))
    }

    /// This node's answer, else the shared one (then kept here too).
    pub async fn get(&self, key: &Key) -> Option<Arc<Cached>> {
        if let Some(hit) = self.store.get(key) {
            return Some(hit);
        }
        let found = Arc::new(self.shared.as_ref()?.get(key).await?);
        self.store.insert(*key, Arc::clone(&found));
        Some(found)
    }

    /// Keeps `answer` unless it is larger than an entry may be; a shared
    /// cache gets it in the background, the semantic index its question.
    pub fn put(&self, slot: &Slot, answer: Cached) -> bool {
        let key = slot.key;
        if answer.body.len() as u64 > self.max_entry_bytes {
            return false;
        }
        if let (Some((index, _)), Some(q)) = (&self.semantic, &slot.question) {
            index.insert(q, key);
        }
        let answer = Arc::new(answer);
        if let Some(shared) = &self.shared {
            let (shared, answer) = (Arc::clone(shared), Arc::clone(&answer));
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { shared.put(&key, &answer).await });
            }
        }
        self.store.insert(key, answer);
        true
    }

    pub fn max_entry_bytes(&self) -> u64 {
        self.max_entry_bytes
    }
}

/// Answers in Redis, shared by every node. Values are a JSON line of what
/// the answer saved (usage, cost, model, provider, stream) then the body.
pub struct SharedAnswers {
    client: redis::Client,
    /// Made on first use: creating it needs the runtime.
    connection: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    timeout: Duration,
    ttl_secs: u64,
    /// Without its password, for logs.
    url: String,
}

impl SharedAnswers {
    fn new(cfg: &LlmCache, redis: &RateLimitBackend) -> Result<SharedAnswers, String> {
        use crate::policy::limits::redis_backend::{open_client, redact};
        let url = redis
            .redis_url
            .as_deref()
            .ok_or("llm.cache.shared needs rate_limits.redis_url, where the answers are kept")?;
        let ca = match &redis.redis_ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| format!("rate_limits.redis_ca_file {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let client = open_client(url, ca)
            .map_err(|e| format!("rate_limits.redis_url {}: {e}", redact(url)))?;
        Ok(SharedAnswers {
            client,
            connection: tokio::sync::OnceCell::new(),
            timeout: Duration::from_millis(redis.timeout_ms.max(1)),
            ttl_secs: cfg.ttl_secs,
            url: redact(url),
        })
    }

    async fn connection(&self) -> redis::RedisResult<redis::aio::ConnectionManager> {
        let manager = self
            .connection
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout.max(Duration::from_secs(1))))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                redis::aio::ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await?;
        Ok(manager.clone())
    }

    async fn get(&self, key: &Key) -> Option<Cached> {
        let read = async {
            let mut c = self.connection().await?;
            redis::cmd("GET")
                .arg(redis_key(key))
                .query_async::<Option<Vec<u8>>>(&mut c)
                .await
        };
        match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(value)) => value.and_then(|v| decode(&v)),
            Ok(Err(e)) => {
                tracing::warn!(redis = %self.url, error = %e, "shared answer cache: lookup failed; asking the provider");
                None
            }
            Err(_) => {
                tracing::warn!(redis = %self.url, timeout_ms = self.timeout.as_millis() as u64, "shared answer cache: no answer in time; asking the provider");
                None
            }
        }
    }

    async fn put(&self, key: &Key, answer: &Cached) {
        let write = async {
            let mut c = self.connection().await?;
            redis::cmd("SET")
                .arg(redis_key(key))
                .arg(encode(answer))
                .arg("EX")
                .arg(self.ttl_secs)
                .query_async::<()>(&mut c)
                .await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(redis = %self.url, error = %e, "shared answer cache: storing failed");
            }
            Err(_) => tracing::warn!(redis = %self.url, "shared answer cache: storing timed out"),
        }
    }
}

fn redis_key(key: &Key) -> String {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    format!("trigate:llm-answer:{hex}")
}

fn encode(c: &Cached) -> Vec<u8> {
    let usage = c.usage.map(|u| {
        serde_json::json!({"input": u.input, "output": u.output, "cached_input": u.cached_input,
                           "reasoning": u.reasoning, "estimated": u.estimated})
    });
    let meta = serde_json::json!({
        "stream": c.stream, "usage": usage, "cost_micros": c.cost_micros,
        "model_served": c.model_served, "provider": c.provider,
    });
    let mut out = meta.to_string().into_bytes();
    out.push(b'\n');
    out.extend_from_slice(&c.body);
    out
}

/// `None` for a value this version did not write (it is then a miss).
fn decode(v: &[u8]) -> Option<Cached> {
    let split = v.iter().position(|&b| b == b'\n')?;
    let meta: Value = serde_json::from_slice(&v[..split]).ok()?;
    let usage = meta.get("usage").filter(|u| !u.is_null()).map(|u| Usage {
        input: u["input"].as_u64().unwrap_or(0),
        output: u["output"].as_u64().unwrap_or(0),
        cached_input: u["cached_input"].as_u64().unwrap_or(0),
        reasoning: u["reasoning"].as_u64().unwrap_or(0),
        estimated: u["estimated"].as_bool().unwrap_or(false),
    });
    Some(Cached {
        body: Bytes::copy_from_slice(&v[split + 1..]),
        stream: meta.get("stream")?.as_bool()?,
        usage,
        cost_micros: meta.get("cost_micros").and_then(Value::as_u64),
        model_served: meta.get("model_served")?.as_str()?.to_owned(),
        provider: meta.get("provider")?.as_str()?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;
    use serde_json::json;

    fn cfg() -> LlmCache {
        LlmCache {
            enabled: true,
            ..LlmCache::default()
        }
    }

    fn key(tenant: &str, request: Value, stream: bool) -> Lookup {
        lookup(
            &cfg(),
            tenant,
            Api::ChatCompletions,
            &request,
            stream,
            &HeaderMap::new(),
        )
    }

    #[test]
    fn the_same_request_has_the_same_key_whatever_its_member_order() {
        let a = serde_json::from_str::<Value>(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#,
        )
        .unwrap();
        let b = serde_json::from_str::<Value>(
            r#"{"temperature":0,"messages":[{"content":"hi","role":"user"}],"model":"m","user":"u1"}"#,
        )
        .unwrap();
        assert_eq!(key("t", a.clone(), false), key("t", b, false));
        assert!(matches!(key("t", a, false), Lookup::Key(_)));
    }

    #[test]
    fn what_changes_the_answer_changes_the_key() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let k = key("t", base.clone(), false);
        let variants = [
            json!({"model": "m2", "messages": [{"role": "user", "content": "hi"}]}),
            json!({"model": "m", "messages": [{"role": "user", "content": "hi!"}]}),
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}),
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": []}),
        ];
        for v in variants {
            assert_ne!(key("t", v.clone(), false), k, "{v}");
        }
        assert_ne!(key("other", base.clone(), false), k, "tenants never share");
        assert_ne!(
            key("t", base.clone(), true),
            k,
            "a stream is kept as a stream"
        );
        assert_ne!(
            lookup(&cfg(), "t", Api::Messages, &base, false, &HeaderMap::new()),
            k
        );
    }

    #[test]
    fn bypasses() {
        let req = json!({"model": "m", "temperature": 1.5});
        assert_eq!(key("t", req, false), Lookup::Bypass("temperature"));
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, No-Store"),
        );
        let req = json!({"model": "m"});
        assert_eq!(
            lookup(&cfg(), "t", Api::ChatCompletions, &req, false, &h),
            Lookup::Bypass("client_no_cache")
        );
        let off = LlmCache::default();
        assert_eq!(
            lookup(
                &off,
                "t",
                Api::ChatCompletions,
                &req,
                false,
                &HeaderMap::new()
            ),
            Lookup::Off
        );
        assert_eq!(
            lookup(&cfg(), "t", Api::Embeddings, &req, false, &HeaderMap::new()),
            Lookup::Off
        );
        assert_eq!(Lookup::Bypass("x").header(), Some("bypass"));
        assert_eq!(Lookup::Off.header(), None);
    }

    #[test]
    fn tenants_by_workload_or_label() {
        let labels = BTreeMap::from([("team".to_string(), "fin".to_string())]);
        assert_eq!(tenant("workload", Some(("a", &labels))), "workload:a");
        assert_eq!(tenant("label:team", Some(("a", &labels))), "label:team=fin");
        assert_eq!(
            tenant("label:team", Some(("b", &BTreeMap::new()))),
            "workload:b"
        );
        assert_eq!(tenant("workload", None), "unidentified");
    }

    #[test]
    fn entries_over_the_size_limit_are_not_kept() {
        let mut c = cfg();
        c.max_entry_bytes = 4;
        let cache = AnswerCache::new(&c, &RateLimitBackend::default())
            .unwrap()
            .unwrap();
        let entry = |body: &'static str| Cached {
            body: Bytes::from_static(body.as_bytes()),
            stream: false,
            usage: None,
            cost_micros: None,
            model_served: "m".into(),
            provider: "p".into(),
        };
        let slot = |n| Slot {
            key: [n; 32],
            question: None,
        };
        assert!(!cache.put(&slot(1), entry("too long")));
        assert!(cache.store.get(&[1; 32]).is_none());
        assert!(cache.put(&slot(2), entry("ok")));
        assert_eq!(&cache.store.get(&[2; 32]).unwrap().body[..], b"ok");
        assert!(
            AnswerCache::new(&LlmCache::default(), &RateLimitBackend::default())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn shared_values_round_trip_and_foreign_ones_are_misses() {
        let c = Cached {
            body: Bytes::from_static(b"data: {}\n\n"),
            stream: true,
            usage: Some(Usage {
                input: 3,
                output: 4,
                estimated: true,
                ..Usage::default()
            }),
            cost_micros: Some(12),
            model_served: "m".into(),
            provider: "p".into(),
        };
        let back = decode(&encode(&c)).unwrap();
        assert_eq!(
            (back.body, back.stream, back.usage, back.cost_micros),
            (c.body.clone(), true, c.usage, Some(12))
        );
        assert!(decode(b"no newline").is_none());
        assert!(decode(b"{}\nbody").is_none());
        let shared = LlmCache {
            enabled: true,
            shared: true,
            ..LlmCache::default()
        };
        let err = AnswerCache::new(&shared, &RateLimitBackend::default()).err();
        assert!(err.is_some_and(|e| e.contains("rate_limits.redis_url")));
    }
}
