//! Config of the HTTP (L7) gates: routes, authentication, rate limits.
use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which gate serves a destination's connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GateKind {
    /// Bytes as they are (after the TLS handling, if any).
    #[default]
    L4,
    /// HTTP/1.1 and HTTP/2: routes, auth, limits, per-request logs.
    Api,
    /// LLM provider APIs (OpenAI, Anthropic): the routes' policy, then
    /// model routing, translation, accounting (config `llm`).
    Llm,
    /// MCP servers over streamable HTTP: the routes' policy, then which
    /// tools, resources and prompts the workload may see and use (config
    /// `mcp`), with an audit line per JSON-RPC call.
    Mcp,
}

impl GateKind {
    /// Whether the gate speaks HTTP itself (and so needs to see it).
    pub fn is_http(self) -> bool {
        matches!(self, GateKind::Api | GateKind::Llm | GateKind::Mcp)
    }

    /// The `gate` label of metrics and log lines.
    pub fn label(self) -> &'static str {
        match self {
            GateKind::L4 => "l4",
            GateKind::Api => "api",
            GateKind::Llm => "llm",
            GateKind::Mcp => "mcp",
        }
    }
}

/// An HTTP route: requests it matches get its policy. Routes are tried in
/// order; the first match wins. A request on an `api` destination that no
/// route matches is forwarded unchanged (and logged with route `-`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// What the request must look like; every given field must match.
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    /// A named cluster (`clusters[].name`) serving this route instead of
    /// the original destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Whole-request limit (until the response headers arrive), in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retries of idempotent requests (GET, HEAD, OPTIONS, PUT, DELETE) and
    /// of any request whose upstream connection failed.
    #[serde(default)]
    pub retries: Retries,
    /// Changes to the request before it goes upstream.
    #[serde(default)]
    pub request_headers: HeaderRewrite,
    /// Changes to the response before it goes back.
    #[serde(default)]
    pub response_headers: HeaderRewrite,
    /// Replace the matched path prefix with this one (needs `match.path.prefix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_prefix: Option<String>,
    /// Who may call: empty allows anyone; otherwise the caller must pass at
    /// least one of these (`workload`, `api-key`, `jwt:<provider>`).
    #[serde(default)]
    pub authn: Vec<String>,
    /// Authorization rules: empty allows every authenticated caller;
    /// otherwise one rule must match.
    #[serde(default)]
    pub allow: Vec<AllowRule>,
    /// Rate limits; all must admit the request.
    #[serde(default)]
    pub limits: Vec<RateLimit>,
    /// CORS: answer preflights and add the response headers browsers need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// Cache GET responses the upstream marks cacheable (Cache-Control).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<ResponseCache>,
}

/// CORS policy of a route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Cors {
    /// Allowed origins (`https://app.example.com`), or `*`.
    pub allow_origins: Vec<String>,
    /// Allowed methods for preflights; empty: the request's own.
    pub allow_methods: Vec<String>,
    /// Allowed request headers for preflights; empty: those asked for.
    pub allow_headers: Vec<String>,
    /// Response headers exposed to scripts.
    pub expose_headers: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` (not with `*`).
    pub allow_credentials: bool,
    /// Preflight cache lifetime, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
}

/// GET response caching of a route, honouring Cache-Control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ResponseCache {
    /// Memory for cached responses of this route, in bytes.
    pub max_bytes: usize,
    /// Largest single response kept, in bytes.
    pub max_entry_bytes: usize,
    /// Freshness used when the upstream sends no max-age/Expires, in
    /// seconds; 0: such responses are not cached.
    pub default_ttl_secs: u64,
}

impl Default for ResponseCache {
    fn default() -> Self {
        ResponseCache {
            max_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
            default_ttl_secs: 0,
        }
    }
}

/// Request conditions of a route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RouteMatch {
    /// Destination names (config `destinations[].name`); empty: any.
    pub destinations: Vec<String>,
    /// Host header / :authority without port; `*.example.com` matches
    /// subdomains. Empty: any.
    pub hosts: Vec<String>,
    /// Path condition; absent: any path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Methods (upper case); empty: any.
    pub methods: Vec<String>,
    /// Headers that must be present with exactly these values (names are
    /// case-insensitive).
    pub headers: BTreeMap<String, String>,
}

/// How a path matches: exactly one of the three.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PathMatch {
    /// The path starts with this (segment-aware: `/v1` matches `/v1` and
    /// `/v1/x`, not `/v10`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The path is exactly this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The path matches this regular expression (Rust `regex` syntax).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Retry policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Retries {
    /// Extra attempts after the first; 0 disables retries.
    pub attempts: u32,
    /// First backoff, doubled per attempt, in ms.
    pub backoff_ms: u64,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: 0,
            backoff_ms: 50,
        }
    }
}

/// Header changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderRewrite {
    /// Set (replace) these headers.
    pub set: BTreeMap<String, String>,
    /// Append these headers (keeping existing values).
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    pub remove: Vec<String>,
}

impl HeaderRewrite {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// One authorization rule: every given field must match the caller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AllowRule {
    /// Workload names.
    pub workloads: Vec<String>,
    /// Workload labels that must all be present with these values.
    pub labels: BTreeMap<String, String>,
    /// Kubernetes namespaces (the pod's `k8s:namespace` label); empty: any.
    pub namespaces: Vec<String>,
    /// Kubernetes service accounts (`k8s:serviceaccount`); empty: any.
    pub service_accounts: Vec<String>,
    /// API key names (`auth.api_keys[].name`).
    pub api_keys: Vec<String>,
    /// JWT claims: each listed claim must have one of the given values
    /// (string claims, or any element of an array claim).
    pub claims: BTreeMap<String, Vec<String>>,
    /// Methods; empty: any.
    pub methods: Vec<String>,
}

/// A token-bucket limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Name, used in metrics and in the refusal.
    pub name: String,
    /// What a bucket is kept per: `workload`, `route`, `api-key`,
    /// `header:<name>` or `claim:<name>`.
    #[serde(default = "default_limit_key")]
    pub key: String,
    /// Requests allowed per `per_secs`.
    pub requests: u64,
    /// Window of `requests`, in seconds.
    #[serde(default = "default_per_secs")]
    pub per_secs: u64,
    /// Bucket size (burst); default `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

fn default_limit_key() -> String {
    "workload".into()
}

fn default_per_secs() -> u64 {
    60
}

/// Authentication sources routes refer to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// JWT issuers (`authn: [jwt:<name>]`).
    pub jwt: Vec<JwtProvider>,
    /// API keys (`authn: [api-key]`), stored as SHA-256 hashes.
    pub api_keys: Vec<ApiKey>,
    /// Header carrying an API key; `Authorization: Bearer <key>` is
    /// accepted too.
    #[serde(default = "default_api_key_header")]
    pub api_key_header: String,
}

fn default_api_key_header() -> String {
    "x-api-key".into()
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt: Vec::new(),
            api_keys: Vec::new(),
            api_key_header: default_api_key_header(),
        }
    }
}

/// A JWT issuer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtProvider {
    pub name: String,
    /// Required `iss`.
    pub issuer: String,
    /// Accepted `aud` values; empty: `aud` not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// JWKS from a file (re-read when it changes) …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// … or from a URL, refreshed every `jwks_refresh_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_secs: u64,
    /// Accepted algorithms.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Tolerance for `exp`/`nbf`, in seconds.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
}

fn default_jwks_refresh() -> u64 {
    300
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}

fn default_skew() -> u64 {
    60
}

/// An API key, by the hex SHA-256 of the key (`printf %s KEY | sha256sum`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub name: String,
    pub sha256: String,
}

/// HTTP limits of the L7 gates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest request head (request line + headers), in bytes.
    pub max_header_bytes: usize,
    /// HTTP/2 streams per client connection.
    pub max_concurrent_streams: u32,
    /// Default whole-request limit (until response headers), in ms.
    pub request_timeout_ms: u64,
    /// Idle upstream connections kept per workload and destination.
    pub pool_max_idle: usize,
    /// How long a client may take to send a complete request head (also
    /// what a silent, half-open connection gets), in ms.
    pub header_read_timeout_ms: u64,
    /// Largest request body relayed, in bytes; larger ones get 413.
    pub max_request_body_bytes: u64,
    /// How long a client connection may stay idle between requests, in ms.
    pub keepalive_timeout_ms: u64,
    /// How long an idle upstream connection is kept for reuse, in ms.
    pub pool_idle_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_header_bytes: 64 * 1024,
            max_concurrent_streams: 100,
            request_timeout_ms: 60_000,
            pool_max_idle: 32,
            header_read_timeout_ms: 30_000,
            // Room for LLM requests with images, not for unbounded uploads.
            max_request_body_bytes: 100 * 1024 * 1024,
            keepalive_timeout_ms: 75_000,
            pool_idle_timeout_ms: 90_000,
        }
    }
}

/// Where rate-limit buckets live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitBackend {
    /// `local` (this node's memory) or `redis` (shared by every node).
    pub backend: LimitBackendKind,
    /// `redis://host:port/db` (or `rediss://` for TLS) when the backend is
    /// redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// PEM CA certificate(s) that sign a `rediss://` server's certificate;
    /// unset: the Mozilla roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// What to do when Redis does not answer: `open` (admit, counted in
    /// metrics) or `closed` (refuse with 503).
    pub fail_mode: super::FailMode,
    /// Limit for one Redis round trip, in ms.
    pub timeout_ms: u64,
}

impl Default for RateLimitBackend {
    fn default() -> Self {
        RateLimitBackend {
            backend: LimitBackendKind::Local,
            redis_url: None,
            redis_ca_file: None,
            fail_mode: super::FailMode::Open,
            timeout_ms: 50,
        }
    }
}

/// Rate-limit storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LimitBackendKind {
    #[default]
    Local,
    Redis,
}

/// A named group of upstream endpoints, load-balanced, with outlier
/// ejection (a circuit breaker per endpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    /// `ip:port` endpoints (at least one).
    pub endpoints: Vec<std::net::SocketAddr>,
    /// How an endpoint is chosen.
    #[serde(default)]
    pub lb: LoadBalancing,
    /// Speak TLS to the endpoints, verifying this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_name: Option<String>,
    /// Eject an endpoint after this many consecutive failures (connect
    /// errors, timeouts, 5xx); 0 disables ejection.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// How long an ejected endpoint sits out, in seconds.
    #[serde(default = "default_eject_secs")]
    pub eject_secs: u64,
}

fn default_consecutive_failures() -> u32 {
    5
}

fn default_eject_secs() -> u64 {
    30
}

/// Load-balancing policy of a cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    Random,
    /// The endpoint with the fewest requests in flight.
    LeastRequest,
}
