//! Which tools, resources and prompts of MCP servers a workload may see
//! and use. Pure: compiled once from `mcp.policies`, asked per JSON-RPC
//! call and per listed item.
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use serde_json::Value;

use crate::config::{AllowDeny, ArgumentConstraint, McpConfig, RateLimit};
use crate::policy::auth::claim_matches;

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
    namespaces: Vec<String>,
    service_accounts: Vec<String>,
    claims: BTreeMap<String, Vec<String>>,
    tools: Lists,
    resources: Lists,
    prompts: Lists,
    arguments: Vec<ArgRule>,
    /// Per-tool limits: the tool glob and the bucket's shape.
    limits: Vec<(globset::GlobMatcher, RateLimit)>,
}

/// One `arguments[]` rule, compiled.
#[derive(Debug)]
struct ArgRule {
    tool: globset::GlobMatcher,
    /// (argument path, its condition, its compiled regex and glob).
    arguments: Vec<(
        String,
        ArgumentConstraint,
        Option<regex::Regex>,
        Option<globset::GlobMatcher>,
    )>,
}

/// A call whose arguments break a policy's condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgViolation {
    pub policy: Arc<str>,
    pub tool: String,
    pub argument: String,
    /// Which condition, said without the value (it may be sensitive).
    pub rule: String,
}

impl fmt::Display for ArgViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "argument {:?} of tool {:?} {} (mcp policy {:?})",
            self.argument, self.tool, self.rule, &*self.policy
        )
    }
}

/// The first condition `value` (`None`: the call lacks the argument)
/// breaks, said as a phrase.
fn broken(
    c: &ArgumentConstraint,
    re: Option<&regex::Regex>,
    glob: Option<&globset::GlobMatcher>,
    value: Option<&Value>,
) -> Option<String> {
    let Some(value) = value else {
        return c.required.then(|| "is required".to_owned());
    };
    if let Some(one_of) = &c.one_of {
        if !one_of.contains(value) {
            return Some(format!("must be one of {}", Value::Array(one_of.clone())));
        }
    }
    let text = value.as_str();
    if let Some(re) = re {
        if !text.is_some_and(|t| re.is_match(t)) {
            return Some(format!("must be a string matching /{}/", re.as_str()));
        }
    }
    if let Some(g) = glob {
        if !text.is_some_and(|t| g.is_match(t)) {
            return Some(format!("must be a path matching {:?}", g.glob().glob()));
        }
    }
    if let Some(max) = c.max_length {
        if text.is_none_or(|t| t.chars().count() > max) {
            return Some(format!("must be a string of at most {max} characters"));
        }
    }
    let number = value.as_f64();
    if let Some(lo) = c.minimum {
        if !number.is_some_and(|n| n >= lo) {
            return Some(format!("must be a number of at least {lo}"));
        }
    }
    if let Some(hi) = c.maximum {
        if !number.is_some_and(|n| n <= hi) {
            return Some(format!("must be a number of at most {hi}"));
        }
    }
    None
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
                    namespaces: p.namespaces.clone(),
                    service_accounts: p.service_accounts.clone(),
                    claims: p.claims.clone(),
                    tools: lists(&p.tools, false).map_err(bad)?,
                    resources: lists(&p.resources, true).map_err(bad)?,
                    prompts: lists(&p.prompts, false).map_err(bad)?,
                    arguments: p
                        .arguments
                        .iter()
                        .map(|r| {
                            let tool = GlobBuilder::new(&r.tool)
                                .build()
                                .map_err(bad)?
                                .compile_matcher();
                            let arguments = r
                                .arguments
                                .iter()
                                .map(|(name, c)| {
                                    let re = c
                                        .pattern
                                        .as_deref()
                                        .map(regex::Regex::new)
                                        .transpose()
                                        .map_err(|e| format!("mcp.policies {:?}: {e}", p.name))?;
                                    let glob = c
                                        .glob
                                        .as_deref()
                                        .map(|g| {
                                            GlobBuilder::new(g)
                                                .literal_separator(true)
                                                .build()
                                                .map(|g| g.compile_matcher())
                                        })
                                        .transpose()
                                        .map_err(bad)?;
                                    Ok((name.clone(), c.clone(), re, glob))
                                })
                                .collect::<Result<Vec<_>, String>>()?;
                            Ok(ArgRule { tool, arguments })
                        })
                        .collect::<Result<Vec<_>, String>>()?,
                    limits: p
                        .limits
                        .iter()
                        .map(|l| {
                            let tools = GlobBuilder::new(&l.tools)
                                .build()
                                .map_err(bad)?
                                .compile_matcher();
                            let shape = RateLimit {
                                name: l.name.clone(),
                                key: "workload".into(),
                                requests: l.requests,
                                per_secs: l.per_secs,
                                burst: l.burst,
                            };
                            Ok((tools, shape))
                        })
                        .collect::<Result<Vec<_>, String>>()?,
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(McpAuthz { policies })
    }

    /// The policies selecting a workload (name and labels; `None`: not
    /// identified) and its verified JWT claims, if any; `None` when none
    /// does, and everything is allowed.
    pub fn plan(
        &self,
        who: Option<(&str, &BTreeMap<String, String>)>,
        claims: Option<&serde_json::Map<String, Value>>,
    ) -> Option<McpPlan> {
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
                let by_pod = crate::workload::selects_pod(
                    &p.namespaces,
                    &p.service_accounts,
                    who.map(|(_, labels)| labels),
                );
                let by_claims = p.claims.is_empty()
                    || claims.is_some_and(|have| {
                        p.claims.iter().all(|(name, wanted)| {
                            have.get(name).is_some_and(|v| claim_matches(v, wanted))
                        })
                    });
                by_name && by_labels && by_pod && by_claims
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

    /// The limits a call of `tool` spends from, with their policy's name:
    /// the bucket is (policy, limit, workload, tool).
    pub fn limits(&self, tool: &str) -> Vec<(Arc<str>, &RateLimit)> {
        self.policies
            .iter()
            .flat_map(|p| {
                p.limits
                    .iter()
                    .filter(|(glob, _)| glob.is_match(tool))
                    .map(|(_, l)| (Arc::clone(&p.name), l))
            })
            .collect()
    }

    /// `Err` names the first condition of a selecting policy that the
    /// call's arguments (`params.arguments`, `None` when absent) break.
    /// Whether any policy has argument conditions for `tool` (a call of
    /// another tool passes [`McpPlan::check_arguments`] unread).
    pub fn constrains(&self, tool: &str) -> bool {
        self.policies
            .iter()
            .any(|p| p.arguments.iter().any(|r| r.tool.is_match(tool)))
    }

    pub fn check_arguments(&self, tool: &str, args: Option<&Value>) -> Result<(), ArgViolation> {
        for p in &self.policies {
            for rule in p.arguments.iter().filter(|r| r.tool.is_match(tool)) {
                for (name, c, re, glob) in &rule.arguments {
                    let pointer = format!("/{}", name.replace('.', "/"));
                    let value = args.and_then(|a| a.pointer(&pointer));
                    if let Some(why) = broken(c, re.as_ref(), glob.as_ref(), value) {
                        return Err(ArgViolation {
                            policy: Arc::clone(&p.name),
                            tool: tool.to_owned(),
                            argument: name.clone(),
                            rule: why,
                        });
                    }
                }
            }
        }
        Ok(())
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
        assert!(authz(vec![]).plan(None, None).is_none());
        let mut p = agents();
        p.workloads = vec!["pod-a".into()];
        let a = authz(vec![p]);
        assert!(a.plan(Some(("pod-b", &BTreeMap::new())), None).is_none());
        assert!(a.plan(None, None).is_none());
        assert!(a.plan(Some(("pod-a", &BTreeMap::new())), None).is_some());
    }

    #[test]
    fn tools_by_allow_and_deny() {
        let plan = authz(vec![agents()]).plan(None, None).unwrap();
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
        let plan = authz(vec![agents()]).plan(None, None).unwrap();
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
    fn policies_can_select_by_jwt_claims() {
        let mut p = agents();
        p.claims = BTreeMap::from([("team".to_string(), vec!["finance".to_string()])]);
        let a = authz(vec![p]);
        let claims = |v: serde_json::Value| v.as_object().cloned().unwrap();
        let fin = claims(serde_json::json!({"team": "finance"}));
        let many = claims(serde_json::json!({"team": ["ops", "finance"]}));
        let ops = claims(serde_json::json!({"team": "ops"}));
        assert!(a.plan(None, Some(&fin)).is_some());
        assert!(a.plan(None, Some(&many)).is_some());
        assert!(a.plan(None, Some(&ops)).is_none());
        assert!(
            a.plan(None, None).is_none(),
            "no token: the policy does not select"
        );
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
        let plan = a.plan(Some(("pod-a", &fin)), None).unwrap();
        assert!(plan.allows(Item::Tool, "echo"));
        let d = plan.check(Item::Tool, "read_file").unwrap_err();
        assert_eq!(&*d.policy, "strict");
        let other = a.plan(Some(("pod-a", &BTreeMap::new())), None).unwrap();
        assert!(other.allows(Item::Tool, "read_file"));
    }

    #[test]
    fn arguments_must_meet_their_conditions() {
        use crate::config::ArgumentRule;
        use serde_json::json;
        let c = |v: Value| -> ArgumentConstraint { serde_json::from_value(v).unwrap() };
        let mut p = agents();
        p.arguments = vec![ArgumentRule {
            tool: "read_*".into(),
            arguments: BTreeMap::from([
                (
                    "path".to_string(),
                    c(json!({"required": true, "glob": "/data/reports/**", "max_length": 64})),
                ),
                ("mode".to_string(), c(json!({"enum": ["r", "rb"]}))),
                (
                    "opts.depth".to_string(),
                    c(json!({"minimum": 1, "maximum": 3})),
                ),
                ("id".to_string(), c(json!({"pattern": "^[a-z]+$"}))),
            ]),
        }];
        let plan = authz(vec![p]).plan(None, None).unwrap();
        let check = |tool: &str, args: Value| {
            plan.check_arguments(tool, Some(&args))
                .map_err(|v| (v.argument, v.rule))
        };
        assert_eq!(
            check("read_file", json!({"path": "/data/reports/q3.txt"})),
            Ok(())
        );
        assert_eq!(
            check(
                "read_file",
                json!({"path": "/data/reports/2026/q3.txt", "mode": "rb", "opts": {"depth": 3}, "id": "abc"})
            ),
            Ok(())
        );
        let bad = |args: Value| check("read_file", args).unwrap_err();
        assert_eq!(bad(json!({})), ("path".into(), "is required".into()));
        assert_eq!(
            bad(json!({"path": "/etc/passwd"})).1,
            r#"must be a path matching "/data/reports/**""#
        );
        assert_eq!(
            bad(json!({"path": 7})).1,
            r#"must be a path matching "/data/reports/**""#
        );
        let long = format!("/data/reports/{}", "x".repeat(60));
        assert_eq!(
            bad(json!({"path": long})).1,
            "must be a string of at most 64 characters"
        );
        let ok = "/data/reports/a";
        assert_eq!(
            bad(json!({"path": ok, "mode": "w"})),
            ("mode".into(), r#"must be one of ["r","rb"]"#.into())
        );
        assert_eq!(
            bad(json!({"path": ok, "opts": {"depth": 0}})).1,
            "must be a number of at least 1"
        );
        assert_eq!(
            bad(json!({"path": ok, "opts": {"depth": 9}})).1,
            "must be a number of at most 3"
        );
        assert_eq!(
            bad(json!({"path": ok, "opts": {"depth": "2"}})).1,
            "must be a number of at least 1"
        );
        assert_eq!(
            bad(json!({"path": ok, "id": "ABC"})).1,
            "must be a string matching /^[a-z]+$/"
        );
        // Other tools, and absent optional arguments, are not held to it.
        assert_eq!(check("echo", json!({})), Ok(()));
        assert_eq!(
            plan.check_arguments("read_file", None).unwrap_err().rule,
            "is required"
        );
        let v = plan
            .check_arguments("read_file", Some(&json!({"path": "/etc/x"})))
            .unwrap_err();
        assert_eq!(
            v.to_string(),
            r#"argument "path" of tool "read_file" must be a path matching "/data/reports/**" (mcp policy "agents")"#
        );
    }

    #[test]
    fn tool_limits_apply_to_the_tools_they_name() {
        let mut p = agents();
        p.limits = vec![
            crate::config::ToolLimit {
                name: "reads".into(),
                tools: "read_*".into(),
                requests: 2,
                per_secs: 60,
                burst: None,
            },
            crate::config::ToolLimit {
                name: "all".into(),
                tools: "*".into(),
                requests: 100,
                per_secs: 60,
                burst: Some(10),
            },
        ];
        let plan = authz(vec![p]).plan(None, None).unwrap();
        let names = |tool| -> Vec<String> {
            plan.limits(tool)
                .iter()
                .map(|(pol, l)| format!("{pol}/{}", l.name))
                .collect()
        };
        assert_eq!(names("read_file"), ["agents/reads", "agents/all"]);
        assert_eq!(names("echo"), ["agents/all"]);
        assert_eq!(plan.limits("echo")[0].1.burst, Some(10));
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
