//! Config of the MCP gate: which tools, resources and prompts each
//! workload may see and use on the MCP servers it calls.
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The MCP gate (destinations with `gate: mcp`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct McpConfig {
    /// Which workloads may use what. Every policy that selects a workload
    /// applies: an item is usable only when none of them refuses it. A
    /// workload no policy selects may use everything (transparent mode).
    pub policies: Vec<McpPolicy>,
    /// Most JSON-RPC messages in one batch; larger batches are refused
    /// whole (invalid request).
    pub max_batch: usize,
    /// Tools whose description carries what the injection detectors find
    /// (instructions to the model hidden in a tool's description): `flag`
    /// puts a warning in front of the description, `hide` removes the
    /// tool from listings, `allow` leaves it. Either way it is logged.
    pub poisoned_tools: PoisonedTools,
    /// OAuth 2.1 resource server: MCP clients must present a bearer JWT
    /// issued for this resource; the gateway publishes the resource's
    /// metadata (RFC 9728) for them to find the authorization server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<McpOauth>,
    /// Per MCP destination: credentials the gateway adds for the server
    /// and whether the client's own `Authorization` goes on.
    pub upstreams: Vec<McpUpstream>,
    /// Virtual MCP endpoints: a destination whose requests the gateway
    /// serves itself, as one MCP server aggregating several.
    pub federations: Vec<McpFederation>,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            policies: Vec::new(),
            max_batch: 32,
            poisoned_tools: PoisonedTools::Flag,
            oauth: None,
            upstreams: Vec::new(),
            federations: Vec::new(),
        }
    }
}

/// One virtual MCP endpoint: the pods call `destination` (gate mcp) as
/// their MCP server; the gateway answers it from `servers`, each item's
/// name prefixed with its server's prefix (`files__read_file`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpFederation {
    /// `destinations[].name` (gate mcp) the pods call. Nothing needs to
    /// listen there: the gateway answers.
    pub destination: String,
    /// Between a server's prefix and an item's name.
    #[serde(default = "default_separator")]
    pub separator: String,
    /// The aggregated servers (streamable HTTP), in listing order.
    pub servers: Vec<FederatedServer>,
    /// Longest wait for one server's answer to a fanned-out message
    /// (`initialize`, listings); a server that does not answer in time is
    /// left out of that answer.
    #[serde(default = "default_fanout_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_separator() -> String {
    "__".into()
}

fn default_fanout_timeout_ms() -> u64 {
    5000
}

/// An MCP server behind a federation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FederatedServer {
    /// Unique within the federation; in audit lines and metrics.
    pub name: String,
    /// The server's MCP endpoint, `http(s)://host:port/path`, reached from
    /// the calling pod's network namespace. The host is an IP address or
    /// a name the node resolves.
    pub url: String,
    /// Put before its tools' and prompts' names; default `name`. Empty
    /// (`""`) in a federation of one server: its names stay as they are,
    /// which makes the federation a transport bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Headers set on every request to it (its credentials). The client's
    /// own `Authorization` never reaches it.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How it speaks MCP: `streamable-http` (`url` is its endpoint) or the
    /// older HTTP+SSE transport (`sse`: `url` is its event stream, e.g.
    /// `http://host:8000/sse`), which the gateway bridges to streamable
    /// HTTP for the clients.
    #[serde(default)]
    pub transport: McpTransport,
}

/// An MCP server's transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum McpTransport {
    #[default]
    StreamableHttp,
    Sse,
}

impl FederatedServer {
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(&self.name)
    }
}

/// The MCP destinations as one OAuth protected resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpOauth {
    /// The resource identifier clients ask tokens for (the MCP server's
    /// URL as clients know it, `https://mcp.example.com/mcp`); tokens must
    /// name it in `aud` (list it in the JWT provider's `audiences`).
    pub resource: String,
    /// Issuer URLs of the authorization servers clients get tokens from.
    pub authorization_servers: Vec<String>,
    /// The `auth.jwt[].name` that verifies the tokens.
    pub jwt: String,
    /// Scopes published in the metadata.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// What the gateway does to requests for one MCP destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct McpUpstream {
    /// `destinations[].name` (gate mcp).
    pub destination: String,
    /// Headers set on every request to the server (`Authorization:
    /// Bearer …` for a static token), replacing the client's.
    pub headers: BTreeMap<String, String>,
    /// Let the client's own `Authorization` reach the server. Off: it is
    /// removed (with OAuth it is the gateway's token, not the server's).
    pub forward_authorization: bool,
}

/// What happens to a tool whose description looks poisoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PoisonedTools {
    Flag,
    Hide,
    Allow,
}

/// Rules for the workloads a policy selects (by name or labels; empty
/// selects all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct McpPolicy {
    /// Unique name, given in refusals, audit lines and metrics.
    pub name: String,
    pub workloads: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Kubernetes namespaces (the pod's `k8s:namespace` label); empty: any.
    pub namespaces: Vec<String>,
    /// Kubernetes service accounts (`k8s:serviceaccount`); empty: any.
    pub service_accounts: Vec<String>,
    /// JWT claims the caller's token (`mcp.oauth`, or a route's `jwt:`
    /// authn) must carry: claim → accepted values (a string claim equal to
    /// one, or an array claim holding one). Empty: no token needed.
    pub claims: BTreeMap<String, Vec<String>>,
    /// Tool names (`read_*`).
    pub tools: AllowDeny,
    /// Resource URIs (`file:///data/reports/**`: `*` stays within one path
    /// segment, `**` crosses them).
    pub resources: AllowDeny,
    /// Prompt names.
    pub prompts: AllowDeny,
    /// Conditions on the arguments of the tools they name; a call that
    /// breaks one is refused.
    pub arguments: Vec<ArgumentRule>,
    /// Call rates per workload and tool (node-local, or shared through
    /// `rate_limits.redis_url` like the routes' limits).
    pub limits: Vec<ToolLimit>,
}

/// A token bucket per workload and tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolLimit {
    /// Name, used in refusals and metrics.
    pub name: String,
    /// Tool name glob; each matching tool has its own bucket.
    #[serde(default = "every_tool")]
    pub tools: String,
    /// Calls allowed per `per_secs`.
    pub requests: u64,
    #[serde(default = "default_per_secs")]
    pub per_secs: u64,
    /// Bucket size (burst); default `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

fn every_tool() -> String {
    "*".into()
}

fn default_per_secs() -> u64 {
    60
}

/// Conditions on one tool's (or several tools', by glob) arguments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArgumentRule {
    /// Tool name glob.
    pub tool: String,
    /// Argument name (`path`, or `options.mode` inside an object) →
    /// what its value must be.
    pub arguments: BTreeMap<String, ArgumentConstraint>,
}

/// What an argument's value must be; every given condition must hold.
/// A condition on a value of another type fails (a number for `pattern`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ArgumentConstraint {
    /// The call must have it.
    pub required: bool,
    /// One of these values.
    #[serde(rename = "enum", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// A string matching this regex (anchor it with ^…$ to match whole).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// A string matching this path glob (`/data/reports/**`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
    /// A string of at most this many characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// A number at least this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    /// A number at most this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
}

/// Glob lists: an item matching `deny` is refused; when `allow` is not
/// empty, an item matching none of it is refused too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AllowDeny {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

impl McpConfig {
    /// Problems as (field, message), in field order.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.max_batch == 0 {
            out.push(("mcp.max_batch".into(), "must be at least 1".into()));
        }
        if let Some(o) = &self.oauth {
            for (field, url) in std::iter::once(("resource", &o.resource)).chain(
                o.authorization_servers
                    .iter()
                    .map(|u| ("authorization_servers", u)),
            ) {
                let ok = url.parse::<hyper::Uri>().is_ok_and(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
                });
                if !ok {
                    out.push((
                        format!("mcp.oauth.{field}"),
                        format!("{url:?} is not an http(s) URL"),
                    ));
                }
            }
            if o.authorization_servers.is_empty() {
                out.push((
                    "mcp.oauth.authorization_servers".into(),
                    "name at least one".into(),
                ));
            }
        }
        for (i, u) in self.upstreams.iter().enumerate() {
            for name in u.headers.keys() {
                if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    out.push((
                        format!("mcp.upstreams[{i}].headers"),
                        format!("{name:?} is not a header name"),
                    ));
                }
            }
        }
        for (i, f) in self.federations.iter().enumerate() {
            federation_problems(&format!("mcp.federations[{i}]"), f, &mut out);
        }
        let mut names = BTreeMap::new();
        for (i, p) in self.policies.iter().enumerate() {
            let at = format!("mcp.policies[{i}]");
            if p.name.is_empty() {
                out.push((format!("{at}.name"), "must not be empty".into()));
            } else if let Some(first) = names.insert(p.name.as_str(), i) {
                out.push((
                    format!("{at}.name"),
                    format!("{:?} is also the name of mcp.policies[{first}]", p.name),
                ));
            }
            for (kind, lists) in [
                ("tools", &p.tools),
                ("resources", &p.resources),
                ("prompts", &p.prompts),
            ] {
                for (list, globs) in [("allow", &lists.allow), ("deny", &lists.deny)] {
                    for (k, glob) in globs.iter().enumerate() {
                        if let Err(e) = globset::Glob::new(glob) {
                            out.push((format!("{at}.{kind}.{list}[{k}]"), e.kind().to_string()));
                        }
                    }
                }
            }
            for (k, l) in p.limits.iter().enumerate() {
                let at = format!("{at}.limits[{k}]");
                if let Err(e) = globset::Glob::new(&l.tools) {
                    out.push((format!("{at}.tools"), e.kind().to_string()));
                }
                if l.requests == 0 || l.per_secs == 0 || l.burst == Some(0) {
                    out.push((
                        at,
                        "requests, per_secs and burst must be more than 0".into(),
                    ));
                }
            }
            for (k, rule) in p.arguments.iter().enumerate() {
                let at = format!("{at}.arguments[{k}]");
                if let Err(e) = globset::Glob::new(&rule.tool) {
                    out.push((format!("{at}.tool"), e.kind().to_string()));
                }
                for (name, c) in &rule.arguments {
                    let at = format!("{at}.arguments.{name}");
                    if let Some(Err(e)) = c.pattern.as_deref().map(regex::Regex::new) {
                        out.push((format!("{at}.pattern"), e.to_string()));
                    }
                    if let Some(Err(e)) = c.glob.as_deref().map(globset::Glob::new) {
                        out.push((format!("{at}.glob"), e.kind().to_string()));
                    }
                    if let (Some(lo), Some(hi)) = (c.minimum, c.maximum) {
                        if lo > hi {
                            out.push((format!("{at}.minimum"), "is more than maximum".into()));
                        }
                    }
                }
            }
        }
        out
    }
}

fn federation_problems(at: &str, f: &McpFederation, out: &mut Vec<(String, String)>) {
    if f.separator.is_empty() {
        out.push((format!("{at}.separator"), "must not be empty".into()));
    }
    if f.servers.is_empty() {
        out.push((format!("{at}.servers"), "name at least one server".into()));
    }
    if f.timeout_ms == 0 {
        out.push((format!("{at}.timeout_ms"), "must be more than 0".into()));
    }
    let mut names = BTreeMap::new();
    let mut prefixes = BTreeMap::new();
    for (k, s) in f.servers.iter().enumerate() {
        let at = format!("{at}.servers[{k}]");
        if s.name.is_empty() {
            out.push((format!("{at}.name"), "must not be empty".into()));
        } else if let Some(first) = names.insert(s.name.as_str(), k) {
            out.push((
                format!("{at}.name"),
                format!("{:?} is also the name of servers[{first}]", s.name),
            ));
        }
        let prefix = s.prefix();
        // Without a prefix, names could not say whose they are: only a
        // federation of one server (a transport bridge) may go without.
        if prefix.is_empty() && f.servers.len() > 1 {
            out.push((
                format!("{at}.prefix"),
                "may be empty only when the federation has one server".into(),
            ));
        } else if !f.separator.is_empty() && prefix.contains(f.separator.as_str()) {
            out.push((
                format!("{at}.prefix"),
                format!(
                    "{prefix:?} must not contain the separator {:?}",
                    f.separator
                ),
            ));
        } else if let Some(first) = prefixes.insert(prefix, k) {
            out.push((
                format!("{at}.prefix"),
                format!("{prefix:?} is also the prefix of servers[{first}]"),
            ));
        }
        let ok = s
            .url
            .parse::<hyper::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if !ok {
            out.push((
                format!("{at}.url"),
                format!("{:?} is not an http(s) URL", s.url),
            ));
        }
        for name in s.headers.keys() {
            if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                out.push((
                    format!("{at}.headers"),
                    format!("{name:?} is not a header name"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, prefix: Option<&str>, url: &str) -> FederatedServer {
        FederatedServer {
            name: name.into(),
            url: url.into(),
            prefix: prefix.map(Into::into),
            headers: BTreeMap::new(),
            transport: McpTransport::StreamableHttp,
        }
    }

    fn problems(servers: Vec<FederatedServer>) -> Vec<String> {
        let f = McpFederation {
            destination: "hub".into(),
            separator: "__".into(),
            servers,
            timeout_ms: 5000,
        };
        let mut out = Vec::new();
        federation_problems("mcp.federations[0]", &f, &mut out);
        out.into_iter().map(|(f, m)| format!("{f}: {m}")).collect()
    }

    #[test]
    fn federation_problems_name_the_field() {
        let ok = "http://10.0.0.1:8000/mcp";
        assert!(problems(vec![server("a", None, ok), server("b", None, ok)]).is_empty());
        assert!(problems(vec![server("a", Some(""), ok)]).is_empty());
        let cases = [
            (vec![], "mcp.federations[0].servers: name at least one server"),
            (
                vec![server("a", None, ok), server("a", Some("x"), ok)],
                "mcp.federations[0].servers[1].name: \"a\" is also the name of servers[0]",
            ),
            (
                vec![server("a", None, ok), server("b", Some("a"), ok)],
                "mcp.federations[0].servers[1].prefix: \"a\" is also the prefix of servers[0]",
            ),
            (
                vec![server("a", Some(""), ok), server("b", None, ok)],
                "mcp.federations[0].servers[0].prefix: may be empty only when the federation has one server",
            ),
            (
                vec![server("a__b", None, ok)],
                "mcp.federations[0].servers[0].prefix: \"a__b\" must not contain the separator \"__\"",
            ),
            (
                vec![server("a", None, "ftp://x/mcp")],
                "mcp.federations[0].servers[0].url: \"ftp://x/mcp\" is not an http(s) URL",
            ),
        ];
        for (servers, want) in cases {
            let got = problems(servers);
            assert_eq!(got, [want], "{want}");
        }
    }
}
