//! Process configuration: the YAML file `trigate run --config` reads.
//!
//! The types here are the whole contract: serde reads them, schemars turns
//! their doc comments into `gateway/config.schema.json`, and [`Config::validate`]
//! turns contradictions into messages that name the offending field in YAML
//! spelling (`destinations[2].ports[0]: ...`).
//!
//! Parsing and validation are separate steps on purpose: serde rejects what is
//! malformed (unknown field, wrong type, bad enum value) and stops at the first
//! such error, while `validate` looks at a well-formed config and reports every
//! problem at once, so one edit-and-retry fixes them all.

mod cidr;
mod validate;

#[cfg(test)]
mod tests;

mod http;
pub use http::{
    AllowRule, ApiKey, AuthConfig, Cluster, Cors, GateKind, HeaderRewrite, HttpConfig, JwtProvider,
    LimitBackendKind, LoadBalancing, PathMatch, RateLimit, RateLimitBackend, ResponseCache,
    Retries, Route, RouteMatch,
};
mod guardrails;
pub use guardrails::{Detect, GuardAction, GuardPolicyConfig, GuardRuleConfig, GuardrailsConfig};
mod kube;
pub use kube::KubernetesConfig;
mod llm;
mod mcp;
pub use llm::{
    AwsAuth, LlmCache, LlmConfig, LlmLimit, ModelAccess, ModelRoute, ModelTarget, Price, Provider,
    ProviderKind, ReportModel, SecretSource, SemanticEmbeddings,
};
pub use mcp::{
    AllowDeny, ArgumentConstraint, ArgumentRule, FederatedServer, McpConfig, McpFederation,
    McpOauth, McpPolicy, McpTransport, McpUpstream, PoisonedTools, ToolLimit,
};

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The configuration compiled into the binary: what `trigate run` uses when
/// no `--config` is given, and what `cargo xtask run` runs.
pub const DEFAULT_YAML: &str = include_str!("default.yaml");

/// The trigate daemon configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Name of this daemon instance. The eBPF maps and links are pinned under
    /// `<intercept.bpffs>/trigate/<instance>`, so two daemons on one node need
    /// different instance names. Lower-case letters, digits and `-`, at most
    /// 32 characters, starting with a letter or digit.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,31}$"))]
    pub instance: String,
    /// The admin HTTP endpoint (metrics, health, log level).
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
    /// How connections are captured: the cgroup the eBPF programs attach to
    /// and what happens when the daemon is gone.
    pub intercept: InterceptConfig,
    /// Where redirected connections arrive.
    pub listener: ListenerConfig,
    /// Upstream connection handling.
    pub proxy: ProxyConfig,
    /// Resolution of the host names listed in `destinations[].hosts`.
    pub dns: DnsConfig,
    /// The remote endpoints to act on. A connection whose destination address
    /// and port match no entry is left alone.
    pub destinations: Vec<Destination>,
    /// The workloads (cgroups or network namespaces) whose connections are
    /// intercepted and attributed.
    pub workloads: Vec<WorkloadConfig>,
    /// The node CA, leaf certificates and upstream TLS verification.
    pub tls: TlsConfig,
    /// HTTP routes of the `api` gate, tried in order.
    pub routes: Vec<Route>,
    /// Authentication sources routes refer to.
    pub auth: AuthConfig,
    /// HTTP limits of the L7 gates.
    pub http: HttpConfig,
    /// Where rate-limit buckets live (node memory or Redis).
    pub rate_limits: RateLimitBackend,
    /// Named upstream clusters routes can send to.
    pub clusters: Vec<Cluster>,
    /// The LLM gate: providers, models, access, limits, prices.
    pub llm: LlmConfig,
    /// Detectors and, per workload, what happens to prompts and answers
    /// they find personal data, secrets or injection attempts in.
    pub guardrails: GuardrailsConfig,
    /// The MCP gate: which tools, resources and prompts workloads may see
    /// and use.
    pub mcp: McpConfig,
    /// Pod discovery through the Kubernetes API.
    pub kubernetes: KubernetesConfig,
}

/// Certificates and verification for the destinations with `tls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The node CA certificate (PEM) workloads trust for `terminate`.
    pub ca_cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub ca_key: PathBuf,
    /// Create the CA at those paths on first start when neither file exists.
    pub generate_ca: bool,
    /// Leaf certificates kept in memory (one per server name).
    #[schemars(range(min = 1))]
    pub leaf_cache_size: usize,
    /// Validity of minted leaf certificates, in hours; they are re-minted
    /// when a third of it remains.
    #[schemars(range(min = 1))]
    pub leaf_validity_hours: u64,
    /// Extra CA files (PEM) trusted for upstream verification, on top of the
    /// Mozilla roots.
    pub upstream_ca_files: Vec<PathBuf>,
    /// How long a client may take to send its first bytes (ClientHello)
    /// before the connection is treated as not TLS, in ms.
    #[schemars(range(min = 1))]
    pub detect_timeout_ms: u64,
    /// Limit for TLS handshakes (client and upstream side), in ms.
    #[schemars(range(min = 1))]
    pub handshake_timeout_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            ca_cert: PathBuf::from("/var/lib/trigate/ca.crt"),
            ca_key: PathBuf::from("/var/lib/trigate/ca.key"),
            generate_ca: true,
            leaf_cache_size: 10_000,
            leaf_validity_hours: 24 * 7,
            upstream_ca_files: Vec::new(),
            detect_timeout_ms: 5_000,
            handshake_timeout_ms: 10_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            instance: "default".to_owned(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            intercept: InterceptConfig::default(),
            listener: ListenerConfig::default(),
            proxy: ProxyConfig::default(),
            dns: DnsConfig::default(),
            destinations: Vec::new(),
            workloads: Vec::new(),
            tls: TlsConfig::default(),
            routes: Vec::new(),
            auth: AuthConfig::default(),
            http: HttpConfig::default(),
            rate_limits: RateLimitBackend::default(),
            clusters: Vec::new(),
            llm: LlmConfig::default(),
            guardrails: GuardrailsConfig::default(),
            mcp: McpConfig::default(),
            kubernetes: KubernetesConfig::default(),
        }
    }
}

/// The admin HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address the admin endpoint listens on, `IP:PORT`. Port 0 picks a free
    /// port (the daemon logs the one it got).
    pub address: SocketAddr,
    /// A second, read-only listener (e.g. `0.0.0.0:15090`) for probes,
    /// Prometheus scraping and the dashboard: it serves only `/healthz`,
    /// `/readyz`, `/metrics`, `/api/summary*`, `/workloads/<name>/summary`
    /// and the dashboard, never enrollment or the log level. None: off.
    pub public_address: Option<SocketAddr>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 15000)),
            public_address: None,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter directive, e.g. `info` or `info,trigate::gate=debug`.
    /// Can be changed at run time on the admin endpoint.
    pub level: String,
    /// Log line format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Json,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// How connections are captured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct InterceptConfig {
    /// The cgroup v2 the eBPF programs attach to; they see every process in it
    /// and in its descendants. A relative path is taken relative to the
    /// cgroup2 mount (usually `/sys/fs/cgroup`); an absolute path is used as
    /// is. Never the root cgroup: `""`, `.`, `/` and paths with `..` are
    /// rejected.
    pub cgroup: PathBuf,
    /// Create `cgroup` at start-up if it does not exist.
    pub create_cgroup: bool,
    /// What the eBPF programs do when the daemon stops heartbeating.
    pub fail_mode: FailMode,
    /// How often the daemon writes its heartbeat into the eBPF map, in
    /// milliseconds. At least 50.
    #[schemars(range(min = 50))]
    pub heartbeat_interval_ms: u64,
    /// How long the eBPF programs wait without a heartbeat before applying
    /// `fail_mode`, in milliseconds. Must be more than twice
    /// `heartbeat_interval_ms`, so one late heartbeat does not trip it.
    pub heartbeat_timeout_ms: u64,
    /// `SO_MARK` set on the daemon's own upstream sockets so the eBPF programs
    /// let them through instead of redirecting them back. Must not be 0 (0 is
    /// every unmarked socket).
    #[schemars(range(min = 1))]
    pub mark: u32,
    /// Where the bpf filesystem is mounted. Absolute path.
    pub bpffs: PathBuf,
}

impl Default for InterceptConfig {
    fn default() -> Self {
        Self {
            cgroup: PathBuf::from("trigate"),
            create_cgroup: true,
            fail_mode: FailMode::Open,
            heartbeat_interval_ms: 1000,
            heartbeat_timeout_ms: 5000,
            mark: 0x7467,
            bpffs: PathBuf::from("/sys/fs/bpf"),
        }
    }
}

/// What the eBPF programs do with matching connections while the daemon is
/// not heartbeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailMode {
    /// Let connections go to their original destination, unproxied.
    Open,
    /// Refuse connections that would have been redirected.
    Closed,
}

/// Where redirected connections arrive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerConfig {
    /// Where the listener sockets live.
    pub mode: ListenerMode,
    /// Listener port. 0 picks a free port, allowed only in `host` mode.
    pub port: u16,
    /// Also listen on `[::1]` so IPv6 destinations can be redirected.
    pub ipv6: bool,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            mode: ListenerMode::Host,
            port: 15001,
            ipv6: true,
        }
    }
}

/// Where the listener sockets live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerMode {
    /// One listener on the node's loopback, in the daemon's own network
    /// namespace.
    Host,
    /// One listener inside each workload's network namespace
    /// (`workloads[].netns` is then required).
    InPod,
}

/// Upstream connection handling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Time allowed to connect to the original destination, in milliseconds.
    #[schemars(range(min = 1))]
    pub connect_timeout_ms: u64,
    /// A proxied connection with no bytes in either direction for this long is
    /// closed, in seconds.
    #[schemars(range(min = 1))]
    pub idle_timeout_secs: u64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 5000,
            idle_timeout_secs: 3600,
        }
    }
}

/// Resolution of the host names listed in `destinations[].hosts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Static name → addresses table consulted before DNS (tests, air-gapped
    /// nodes). Names are lower-case DNS names; each needs at least one
    /// address.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
    /// Name servers to ask (`10.96.0.10:53`), plain UDP/TCP. Empty: the
    /// system's (/etc/resolv.conf).
    pub servers: Vec<SocketAddr>,
    /// Shortest time between two resolutions of a name, whatever its TTL, in
    /// seconds. At least 1.
    #[schemars(range(min = 1))]
    pub min_refresh_secs: u64,
    /// Longest time between two resolutions of a name, whatever its TTL, in
    /// seconds. At least `min_refresh_secs`.
    pub max_refresh_secs: u64,
    /// Time before retrying a failed resolution, in seconds. The last good
    /// addresses stay in force meanwhile.
    #[schemars(range(min = 1))]
    pub retry_secs: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            hosts: BTreeMap::new(),
            servers: Vec::new(),
            min_refresh_secs: 5,
            max_refresh_secs: 300,
            retry_secs: 5,
        }
    }
}

/// A remote endpoint: addresses (named or literal) and ports, and what to do
/// with connections to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Unique name, used in metrics and logs. Lower-case letters, digits, `_`,
    /// `.` and `-`, at most 64 characters, starting with a letter or digit.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_.-]{0,63}$"))]
    pub name: String,
    /// DNS names (no scheme, port or path: `api.openai.com`). The daemon
    /// resolves them and refreshes the addresses when their TTL expires.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Literal networks: `10.0.0.0/8`, `2001:db8::/32`, or a bare address
    /// (`10.1.2.3` means `10.1.2.3/32`, `2001:db8::1` means `/128`).
    #[serde(default, deserialize_with = "cidr::deserialize")]
    #[schemars(with = "Vec<cidr::CidrSchema>")]
    pub cidrs: Vec<IpNet>,
    /// Destination ports; at least one, no duplicates, no 0.
    #[schemars(length(min = 1), inner(range(min = 1)))]
    pub ports: Vec<u16>,
    /// What to do with a connection to one of these addresses and ports.
    #[serde(default)]
    pub action: Action,
    /// TLS handling of redirected connections. Absent: bytes are forwarded
    /// as they are (L4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<DestinationTls>,
    /// Which gate serves redirected connections: `l4` (bytes) or `api`
    /// (HTTP: routes, auth, limits). `api` needs plaintext HTTP from the
    /// client, or `tls.mode` terminate.
    #[serde(default)]
    pub gate: GateKind,
}

/// How the gateway treats TLS to one destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationTls {
    /// `passthrough`: the client's TLS goes through untouched (SNI checked,
    /// bytes counted). `terminate`: the gateway presents a certificate for
    /// the SNI from the node CA, and opens its own verified TLS upstream.
    /// `originate`: the client speaks plaintext, the gateway speaks TLS
    /// upstream.
    pub mode: TlsMode,
    /// SNI patterns allowed (`api.openai.com`, `*.openai.com`); empty allows
    /// any. Applies to `passthrough` and `terminate`.
    #[serde(default)]
    pub sni_allow: Vec<String>,
    /// SNI patterns refused; wins over `sni_allow`. A client without SNI is
    /// refused when `sni_allow` is not empty.
    #[serde(default)]
    pub sni_deny: Vec<String>,
    /// The name sent (SNI) and verified upstream. Default: the client's SNI
    /// (`terminate`), or the destination's first host name, else its
    /// address (`originate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_name: Option<String>,
}

/// TLS handling mode of a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Passthrough,
    Terminate,
    Originate,
}

/// What to do with a connection to a destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Send the connection through the gateway.
    #[default]
    Redirect,
    /// Refuse the connection.
    Deny,
    /// Let the connection go to its original destination and record it.
    Observe,
}

/// A workload: a cgroup, a network namespace, or both, whose connections are
/// intercepted and attributed to `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    /// Unique name, used in metrics and logs. Same characters as destination
    /// names.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_.-]{0,63}$"))]
    pub name: String,
    /// The workload's cgroup v2: relative to the cgroup2 mount, or absolute.
    /// Same rules as `intercept.cgroup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
    /// The workload's network namespace file, e.g. `/var/run/netns/NAME` or
    /// `/proc/PID/ns/net`. Absolute path. Required in `in-pod` listener mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// Free-form labels attached to the workload's telemetry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

macro_rules! enum_str {
    ($ty:ty { $($variant:ident => $s:literal),+ $(,)? }) => {
        impl $ty {
            /// The YAML spelling of this value.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $(Self::$variant => $s,)+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

enum_str!(LogFormat { Json => "json", Text => "text" });
enum_str!(FailMode { Open => "open", Closed => "closed" });
enum_str!(ListenerMode { Host => "host", InPod => "in-pod" });
enum_str!(Action { Redirect => "redirect", Deny => "deny", Observe => "observe" });
enum_str!(TlsMode { Passthrough => "passthrough", Terminate => "terminate", Originate => "originate" });

impl WorkloadConfig {
    /// Checks one workload the way `validate` checks `workloads[]`, for
    /// enrollment through the admin API.
    pub fn validate(&self, mode: ListenerMode) -> Result<(), ConfigError> {
        let problems = validate::workload_problems(self, mode);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

impl Config {
    /// Parses YAML and validates the result.
    ///
    /// A file that is empty or holds only comments means "all defaults", the
    /// same as `{}`.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let text = if is_blank_yaml(text) { "{}" } else { text };
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(parse_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a file and parses it with [`Config::from_yaml`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// The configuration compiled into the binary ([`DEFAULT_YAML`]).
    pub fn embedded_default() -> Config {
        // A unit test parses DEFAULT_YAML, so this cannot fail in a tested build.
        Self::from_yaml(DEFAULT_YAML).expect("embedded default.yaml is invalid; see config tests")
    }

    /// Checks the rules serde cannot express. Reports every problem found,
    /// not only the first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = validate::problems(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The JSON schema of the config file, pretty-printed, with a trailing
    /// newline (the content of `gateway/config.schema.json`).
    pub fn json_schema() -> String {
        let schema = schemars::schema_for!(Config);
        // Serializing a schema (string keys, plain values) into a String has
        // no failure path; a panic here is a bug in schemars or serde_json.
        let mut text =
            serde_json::to_string_pretty(&schema).expect("a JSON schema always serializes");
        text.push('\n');
        text
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The YAML is malformed or does not fit the types. The message starts
    /// with the field path (`destinations[0].action: unknown variant ...`);
    /// shown in the same list shape as validation problems.
    #[error("invalid config:\n  - {0}")]
    Parse(String),
    /// The config is well-formed but breaks one or more rules.
    #[error(
        "invalid config:\n{}",
        .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
    )]
    Invalid(Vec<Problem>),
}

/// One validation problem: the field in YAML spelling and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field, e.g. `destinations[2].ports[0]`.
    pub field: String,
    /// What is wrong and, where it helps, what to write instead.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// True if the text holds no YAML content: only blank lines, comments and
/// document markers. serde_yaml_ng reports such input as "EOF while parsing a
/// value" instead of an empty mapping.
fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

/// Builds a [`ConfigError::Parse`] whose message starts with the field path.
///
/// serde_yaml_ng already prefixes most of its errors with its own idea of the
/// path; serde_path_to_error's path is the more precise one (it also covers
/// errors raised inside custom deserializers), so it wins, and the YAML
/// prefix is dropped when it would repeat a path.
fn parse_error(err: serde_path_to_error::Error<serde_yaml_ng::Error>) -> ConfigError {
    // A syntax error has no field: the path is empty or only `?` segments.
    let has_field = err
        .path()
        .iter()
        .any(|segment| !matches!(segment, serde_path_to_error::Segment::Unknown));
    let path = err.path().to_string();
    let inner = err.into_inner();
    let mut message = inner.to_string();
    if !has_field {
        // libyaml's syntax errors carry their position but do not print it.
        if let (false, Some(at)) = (message.contains(" at line "), inner.location()) {
            message = format!("{message} at line {} column {}", at.line(), at.column());
        }
        return ConfigError::Parse(message);
    }
    if let Some(rest) = message.strip_prefix(&format!("{path}: ")) {
        message = rest.to_owned();
    } else if let Some((prefix, rest)) = message.split_once(": ") {
        // A YAML path that is a prefix of ours (the parent struct, for a
        // missing field) is redundant too.
        if path.starts_with(prefix) && !prefix.contains(' ') {
            message = rest.to_owned();
        }
    }
    ConfigError::Parse(format!("{path}: {message}"))
}
