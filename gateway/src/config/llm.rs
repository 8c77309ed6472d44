//! Config of the LLM gate: providers, the models clients may ask for and
//! where each is served, who may use which, token and cost limits, prices.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::gate::llm::price::Price;

/// The LLM gate. Destinations with `gate: llm` are served by it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// Where requests can be sent.
    pub providers: Vec<Provider>,
    /// The models clients may ask for, in order; the first whose `name`
    /// matches the requested model serves it. A request for a model no
    /// entry matches is refused (`model_not_found`).
    pub models: Vec<ModelRoute>,
    /// Which workloads may use which models. Empty: every workload may use
    /// every model; otherwise a workload may use the models of the rules
    /// it matches, and none if it matches no rule.
    pub access: Vec<ModelAccess>,
    /// Request, token and spend limits per workload.
    pub limits: Vec<LlmLimit>,
    /// Prices per 1M tokens; they win over the built-in table.
    pub prices: Vec<Price>,
    /// Which model the response names: the one `served` it (truthful) or
    /// the one the client `requested`. Per model overridable.
    pub report_model: ReportModel,
    /// Provider attempts per request, failovers included (at least 1).
    pub max_attempts: u32,
    /// Wait before retrying the same provider, doubled per attempt, in ms.
    pub retry_backoff_ms: u64,
    /// Answers kept and served again for the same request.
    pub cache: LlmCache,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            providers: Vec::new(),
            models: Vec::new(),
            access: Vec::new(),
            limits: Vec::new(),
            prices: Vec::new(),
            report_model: ReportModel::Served,
            max_attempts: 3,
            retry_backoff_ms: 100,
            cache: LlmCache::default(),
        }
    }
}

/// The model name a response carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReportModel {
    #[default]
    Served,
    Requested,
}

/// The wire protocol and authentication a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// api.openai.com: Chat Completions, Responses, Embeddings; Bearer key.
    Openai,
    /// Any server speaking the OpenAI API (vLLM, Ollama, LM Studio).
    OpenaiCompatible,
    /// Azure OpenAI: `/openai/deployments/<model>/…?api-version=`,
    /// `api-key` header.
    AzureOpenai,
    /// api.anthropic.com: Messages; `x-api-key`.
    Anthropic,
    /// Google Gemini: `generateContent`; `x-goog-api-key`.
    Gemini,
    /// AWS Bedrock Converse, SigV4-signed.
    Bedrock,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::OpenaiCompatible => "openai-compatible",
            ProviderKind::AzureOpenai => "azure-openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Bedrock => "bedrock",
        }
    }

    /// The base URL when none is configured.
    pub fn default_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
            ProviderKind::OpenaiCompatible | ProviderKind::AzureOpenai | ProviderKind::Bedrock => {
                None
            }
        }
    }
}

/// Where a secret comes from: exactly one of the two. Files are re-read
/// when they change (a Kubernetes Secret volume swaps a symlink).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SecretSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Name of an environment variable of the daemon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// AWS credentials and region of a Bedrock provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsAuth {
    pub region: String,
    pub access_key_id: SecretSource,
    pub secret_access_key: SecretSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<SecretSource>,
}

/// One provider endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Unique name, used in `models[].targets`, metrics and logs.
    pub name: String,
    pub kind: ProviderKind,
    /// Base URL (`https://api.openai.com/v1`, `http://vllm:8000/v1`,
    /// `https://api.anthropic.com`, `https://<resource>.openai.azure.com`,
    /// `https://bedrock-runtime.<region>.amazonaws.com`). Defaults for
    /// openai, anthropic and gemini.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Connect here instead of resolving the URL's host (the URL's host is
    /// still the TLS name and `Host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    /// The key the gateway sends; pods hold none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretSource>,
    /// Forward the key the pod sent instead of the configured one.
    #[serde(default)]
    pub pass_client_key: bool,
    /// Azure's `api-version`, Anthropic's `anthropic-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Bedrock only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsAuth>,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Until the response headers (a stream's first byte), in ms.
    #[serde(default = "default_provider_timeout")]
    pub timeout_ms: u64,
    /// How long a provider that failed (429, 5xx, timeout, connection
    /// error) is skipped when another can serve, in ms.
    #[serde(default = "default_cooldown")]
    pub cooldown_ms: u64,
}

fn default_provider_timeout() -> u64 {
    120_000
}

fn default_cooldown() -> u64 {
    30_000
}

/// A model clients may ask for and the provider models that serve it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRoute {
    /// The requested name: exact, or a prefix ending in `*` (`*` alone
    /// matches every model).
    pub name: String,
    /// Candidates: the lowest `priority` first, weighted among equals;
    /// the others are failovers.
    pub targets: Vec<ModelTarget>,
    /// Cap on `max_tokens` (and `max_completion_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Request fields set when the client did not send them (as the
    /// client's protocol names them; `temperature`, `top_p` are the same
    /// in both).
    #[serde(default)]
    pub defaults: BTreeMap<String, serde_json::Value>,
    /// Request fields always set, whatever the client sent.
    #[serde(default)]
    pub overrides: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_model: Option<ReportModel>,
}

/// One provider model serving a [`ModelRoute`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelTarget {
    /// `providers[].name`.
    pub provider: String,
    /// The provider's model name (for Azure, the deployment); default: the
    /// requested name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub priority: u32,
}

fn default_weight() -> u32 {
    1
}

/// Workloads (by name or labels; empty selects all) and the models they
/// may use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ModelAccess {
    pub workloads: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Kubernetes namespaces (the pod's `k8s:namespace` label); empty: any.
    pub namespaces: Vec<String>,
    /// Kubernetes service accounts (`k8s:serviceaccount`); empty: any.
    pub service_accounts: Vec<String>,
    /// Requested model names: exact or a prefix ending in `*`.
    pub models: Vec<String>,
}

/// Limits per workload. Every given limit must admit a request; token
/// limits are checked with the estimated prompt before the call and
/// charged with the reported usage after it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LlmLimit {
    /// Unique name, used in metrics and refusals.
    pub name: String,
    /// Which workloads it applies to (names; empty: all) …
    pub workloads: Vec<String>,
    /// … and labels they must carry.
    pub labels: BTreeMap<String, String>,
    /// Kubernetes namespaces (the pod's `k8s:namespace` label); empty: any.
    pub namespaces: Vec<String>,
    /// Kubernetes service accounts (`k8s:serviceaccount`); empty: any.
    pub service_accounts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens_per_minute: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens_per_minute: Option<u64>,
    /// Spend per UTC day, in USD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_day_usd: Option<f64>,
    /// Spend per UTC calendar month, in USD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_month_usd: Option<f64>,
}

/// The answer cache: a request the same tenant already sent (same model,
/// messages, tools and the parameters that change the output) is answered
/// from memory, without a provider. Answers are never shared across
/// tenants. Responses carry `x-trigate-cache: hit|miss|bypass`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LlmCache {
    pub enabled: bool,
    /// How long an answer is served, in seconds.
    pub ttl_secs: u64,
    /// Memory for answers on this node, in bytes; the least valuable
    /// (TinyLFU: rarely and not recently asked) go first.
    pub max_bytes: u64,
    /// Larger answers (streams included, as the bytes sent) are not kept.
    pub max_entry_bytes: u64,
    /// Requests with a higher `temperature` bypass the cache: their
    /// caller asked for variety. A request without one counts as 0.
    pub max_temperature: f64,
    /// Questions worded differently from one already answered get its
    /// answer when close enough in meaning.
    pub semantic: SemanticCache,
    /// Also keep answers in the Redis of `rate_limits.redis_url`, so every
    /// node's gateway serves them (same tenant scoping; this node's memory
    /// is asked first).
    pub shared: bool,
    /// Who shares answers: each workload on its own (`workload`), or the
    /// workloads carrying the same value of this label (`label:team`);
    /// a workload without the label is on its own.
    pub scope: String,
}

impl Default for LlmCache {
    fn default() -> Self {
        LlmCache {
            enabled: false,
            ttl_secs: 3600,
            max_bytes: 64 << 20,
            max_entry_bytes: 1 << 20,
            max_temperature: 1.0,
            shared: false,
            semantic: SemanticCache::default(),
            scope: "workload".into(),
        }
    }
}

/// The semantic cache: the last user turn is embedded (the built-in local
/// embedding, no model server needed) and compared with the questions
/// already answered in the same context — same tenant, API, model, system
/// prompt, tools, parameters and earlier turns, so only the wording of
/// the question may differ. The index is this node's; the answers it
/// points at follow `shared`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SemanticCache {
    pub enabled: bool,
    /// Cosine similarity a question needs with an answered one (0–1).
    /// The local embedding scores paraphrases that keep the key words
    /// around 0.8–1 and unrelated questions near 0.
    pub threshold: f32,
    /// Answered questions remembered on this node, all tenants together;
    /// the oldest go first.
    pub max_entries: usize,
    /// Where questions are embedded. Unset: the built-in local embedding
    /// (word and character n-gram hashing), which needs no model server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<SemanticEmbeddings>,
}

impl Default for SemanticCache {
    fn default() -> Self {
        SemanticCache {
            enabled: false,
            threshold: 0.8,
            max_entries: 10_000,
            embeddings: None,
        }
    }
}

/// An OpenAI-compatible embeddings endpoint for the semantic cache: one of
/// `llm.providers` (its URL, key and TLS) asked `POST …/embeddings`. A
/// question whose embedding fails (timeout, error status, a malformed
/// answer) skips the semantic cache and goes to its provider; the failure
/// is logged and counted. Model embeddings score paraphrases higher than
/// the local one: a threshold around 0.9 is usual with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SemanticEmbeddings {
    /// A provider of kind `openai`, `openai-compatible` or `azure-openai`.
    pub provider: String,
    /// The embedding model (for Azure: the deployment).
    pub model: String,
    /// Asks for vectors of this size (`dimensions`, which the
    /// text-embedding-3 models support); unset: the model's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub dimensions: Option<u32>,
    /// Limit for one embedding, in ms: a question waits this long at most
    /// before going to its provider without the semantic cache.
    #[serde(default = "default_embeddings_timeout_ms")]
    #[schemars(range(min = 1))]
    pub timeout_ms: u64,
}

fn default_embeddings_timeout_ms() -> u64 {
    1000
}
