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
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            policies: Vec::new(),
            max_batch: 32,
            poisoned_tools: PoisonedTools::Flag,
        }
    }
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
    /// Tool names (`read_*`).
    pub tools: AllowDeny,
    /// Resource URIs (`file:///data/reports/**`: `*` stays within one path
    /// segment, `**` crosses them).
    pub resources: AllowDeny,
    /// Prompt names.
    pub prompts: AllowDeny,
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
        }
        out
    }
}
