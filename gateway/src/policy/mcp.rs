//! Which tools, resources and prompts of MCP servers a workload may see
//! and use. Pure: compiled once from `mcp.policies`, asked per JSON-RPC
//! call and per listed item.
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::config::{AllowDeny, McpConfig};

/// What an MCP server offers that policies name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    Tool,
    Resource,
    Prompt,
}

impl Item {
    pub fn as_str(self) -> &'static str {
        match self {
            Item::Tool => "tool",
            Item::Resource => "resource",
            Item::Prompt => "prompt",
        }
    }
}

/// A refusal: which policy refused which item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub policy: Arc<str>,
    pub item: Item,
    pub name: String,
    /// The item matched a deny glob (else: it matched no allow glob).
    pub by_deny: bool,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = if self.by_deny {
            "is denied"
        } else {
            "is not among the allowed ones"
        };
        write!(
            f,
            "{} {:?} {why} by mcp policy {:?}",
            self.item.as_str(),
            self.name,
            &*self.policy
        )
    }
}

/// One list pair, compiled.
#[derive(Debug, Clone)]
struct Lists {
    /// `None`: no allow list, everything not denied is allowed.
    allow: Option<GlobSet>,
    deny: GlobSet,
}

impl Lists {
    /// `Some(by_deny)` when refused.
    fn refuses(&self, name: &str) -> Option<bool> {
        if self.deny.is_match(name) {
            return Some(true);
        }
        match &self.allow {
            Some(allow) if !allow.is_match(name) => Some(false),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Policy {
    name: Arc<str>,
    workloads: Vec<String>,
    labels: BTreeMap<String, String>,
    tools: Lists,
    resources: Lists,
    prompts: Lists,
}

/// The policies of one config.
#[derive(Debug, Default)]
pub struct McpAuthz {
    policies: Vec<Arc<Policy>>,
}

/// The policies that select one workload.
#[derive(Debug)]
pub struct McpPlan {
    policies: Vec<Arc<Policy>>,
}

fn compile(globs: &[String], cross_slash: bool) -> Result<GlobSet, globset::Error> {
    let mut set = GlobSetBuilder::new();
    for g in globs {
        // Resource URIs are paths: `*` stays in one segment there. Tool and
        // prompt names have no segments.
        set.add(
            GlobBuilder::new(g)
                .literal_separator(!cross_slash)
                .build()?,
        );
    }
    set.build()
}

fn lists(cfg: &AllowDeny, names_are_paths: bool) -> Result<Lists, globset::Error> {
    Ok(Lists {
        allow: if cfg.allow.is_empty() {
            None
        } else {
            Some(compile(&cfg.allow, !names_are_paths)?)
        },
        deny: compile(&cfg.deny, !names_are_paths)?,
    })
}

impl McpAuthz {
    pub fn build(cfg: &McpConfig) -> Result<McpAuthz, String> {
        let policies = cfg
            .policies
            .iter()
            .map(|p| {
                let bad = |e: globset::Error| format!("mcp.policies {:?}: {e}", p.name);
                Ok(Arc::new(Policy {
                    name: Arc::from(p.name.as_str()),
                    workloads: p.workloads.clone(),
                    labels: p.labels.clone(),
                    tools: lists(&p.tools, false).map_err(bad)?,
                    resources: lists(&p.resources, true).map_err(bad)?,
                    prompts: lists(&p.prompts, false).map_err(bad)?,
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(McpAuthz { policies })
    }

    /// The policies selecting a workload (name and labels; `None`: not
    /// identified); `None` when none does, and everything is allowed.
    pub fn plan(&self, who: Option<(&str, &BTreeMap<String, String>)>) -> Option<McpPlan> {
        let policies: Vec<Arc<Policy>> = self
            .policies
            .iter()
            .filter(|p| {
                let by_name = p.workloads.is_empty()
                    || who.is_some_and(|(name, _)| p.workloads.iter().any(|n| n == name));
                let by_labels = p.labels.is_empty()
                    || who.is_some_and(|(_, labels)| {
                        p.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
                    });
                by_name && by_labels
            })
            .cloned()
            .collect();
        (!policies.is_empty()).then_some(McpPlan { policies })
    }
}

impl McpPlan {
    /// `Err` names the first selecting policy that refuses the item.
    pub fn check(&self, item: Item, name: &str) -> Result<(), Denied> {
        for p in &self.policies {
            let lists = match item {
                Item::Tool => &p.tools,
                Item::Resource => &p.resources,
                Item::Prompt => &p.prompts,
            };
            if let Some(by_deny) = lists.refuses(name) {
                return Err(Denied {
                    policy: Arc::clone(&p.name),
                    item,
                    name: name.to_owned(),
                    by_deny,
                });
            }
        }
        Ok(())
    }

    pub fn allows(&self, item: Item, name: &str) -> bool {
        self.check(item, name).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::McpPolicy;

    fn globs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn authz(policies: Vec<McpPolicy>) -> McpAuthz {
        McpAuthz::build(&McpConfig {
            policies,
            ..McpConfig::default()
        })
        .unwrap()
    }

    fn agents() -> McpPolicy {
        McpPolicy {
            name: "agents".into(),
            tools: AllowDeny {
                allow: globs(&["echo", "read_*", "get_*", "count_slowly"]),
                deny: globs(&["get_secret*"]),
            },
            resources: AllowDeny {
                allow: globs(&["file:///data/reports/**"]),
                deny: globs(&["file:///data/reports/private/*"]),
            },
            prompts: AllowDeny {
                allow: vec![],
                deny: globs(&["admin_*"]),
            },
            ..McpPolicy::default()
        }
    }

    #[test]
    fn no_selecting_policy_means_everything_is_allowed() {
        assert!(authz(vec![]).plan(None).is_none());
        let mut p = agents();
        p.workloads = vec!["pod-a".into()];
        let a = authz(vec![p]);
        assert!(a.plan(Some(("pod-b", &BTreeMap::new()))).is_none());
        assert!(a.plan(None).is_none());
        assert!(a.plan(Some(("pod-a", &BTreeMap::new()))).is_some());
    }

    #[test]
    fn tools_by_allow_and_deny() {
        let plan = authz(vec![agents()]).plan(None).unwrap();
        for (tool, ok) in [
            ("echo", true),
            ("read_file", true),
            ("read_", true),
            ("get_config", true),
            ("get_secret", false),
            ("get_secrets_all", false),
            ("delete_all", false),
            ("echo2", false),
            ("", false),
        ] {
            assert_eq!(plan.allows(Item::Tool, tool), ok, "{tool}");
        }
        let denied = plan.check(Item::Tool, "get_secret").unwrap_err();
        assert!(denied.by_deny);
        assert_eq!(
            denied.to_string(),
            r#"tool "get_secret" is denied by mcp policy "agents""#
        );
        let not_allowed = plan.check(Item::Tool, "delete_all").unwrap_err();
        assert!(!not_allowed.by_deny);
        assert!(not_allowed.to_string().contains("not among the allowed"));
    }

    #[test]
    fn resource_globs_treat_slashes_as_segments() {
        let plan = authz(vec![agents()]).plan(None).unwrap();
        for (uri, ok) in [
            ("file:///data/reports/q3.txt", true),
            ("file:///data/reports/2026/q3.txt", true),
            ("file:///data/reports/private/pay.txt", false),
            // `*` stays in one segment: a deeper private file is allowed
            // by `reports/**` and not denied by `private/*`.
            ("file:///data/reports/private/x/pay.txt", true),
            ("file:///etc/passwd", false),
            ("file:///data/reports", false),
        ] {
            assert_eq!(plan.allows(Item::Resource, uri), ok, "{uri}");
        }
        // No allow list: everything but the denied.
        assert!(plan.allows(Item::Prompt, "summarize"));
        assert!(!plan.allows(Item::Prompt, "admin_reset"));
    }

    #[test]
    fn every_selecting_policy_must_allow() {
        let strict = McpPolicy {
            name: "strict".into(),
            labels: BTreeMap::from([("team".into(), "fin".into())]),
            tools: AllowDeny {
                allow: globs(&["echo"]),
                deny: vec![],
            },
            ..McpPolicy::default()
        };
        let a = authz(vec![agents(), strict]);
        let fin = BTreeMap::from([("team".to_string(), "fin".to_string())]);
        let plan = a.plan(Some(("pod-a", &fin))).unwrap();
        assert!(plan.allows(Item::Tool, "echo"));
        let d = plan.check(Item::Tool, "read_file").unwrap_err();
        assert_eq!(&*d.policy, "strict");
        let other = a.plan(Some(("pod-a", &BTreeMap::new()))).unwrap();
        assert!(other.allows(Item::Tool, "read_file"));
    }

    #[test]
    fn bad_globs_are_config_problems() {
        let mut p = agents();
        p.tools.deny = globs(&["a[b"]);
        let cfg = McpConfig {
            policies: vec![p.clone(), p],
            max_batch: 0,
            ..McpConfig::default()
        };
        let fields: Vec<String> = cfg.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "mcp.max_batch",
                "mcp.policies[0].tools.deny[0]",
                "mcp.policies[1].name",
                "mcp.policies[1].tools.deny[0]"
            ]
        );
        assert!(McpAuthz::build(&cfg).is_err());
    }
}
