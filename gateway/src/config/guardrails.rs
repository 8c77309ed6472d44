//! Config of the guardrails: what the detectors look for and, per
//! workload, what happens to a request or an answer in which they find it.
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::guard::{Category, CustomRule, Kind, TopicConfig, DEFAULT_MAX_SCAN_BYTES};

/// Guardrails, shared by the gates (the LLM gate applies them to prompts
/// and answers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GuardrailsConfig {
    /// Detectors of the operator's own (a regex or a keyword list each),
    /// named in `policies[].request[].detect` like the built-in ones.
    pub custom: Vec<CustomRule>,
    /// Largest text, in bytes, one scan accepts (a whole prompt, or one
    /// streamed answer in total). Larger input is refused, never passed
    /// unscanned.
    pub max_scan_bytes: usize,
    /// Topics policies deny or require, by keywords and example sentences
    /// (compared by meaning with the built-in local embedding).
    pub topics: Vec<TopicConfig>,
    /// External judges policies ask: a webhook or a model, each with its
    /// timeout and fail mode; the judges of a request are asked at once.
    pub judges: Vec<crate::policy::judge::JudgeConfig>,
    /// Which rules apply to which workloads. Every policy that selects a
    /// workload applies; for one finding the strictest action wins
    /// (block, then redact, then log).
    pub policies: Vec<GuardPolicyConfig>,
}

impl Default for GuardrailsConfig {
    fn default() -> Self {
        GuardrailsConfig {
            custom: Vec::new(),
            max_scan_bytes: DEFAULT_MAX_SCAN_BYTES,
            topics: Vec::new(),
            judges: Vec::new(),
            policies: Vec::new(),
        }
    }
}

/// Rules for the workloads a policy selects (by name or labels; empty
/// selects all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GuardPolicyConfig {
    /// Unique name, given in refusals, logs and metrics.
    pub name: String,
    pub workloads: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Kubernetes namespaces (the pod's `k8s:namespace` label); empty: any.
    pub namespaces: Vec<String>,
    /// Kubernetes service accounts (`k8s:serviceaccount`); empty: any.
    pub service_accounts: Vec<String>,
    /// Applied to what the workload sends (prompts, messages, system
    /// prompt, tool results it passes back).
    pub request: Vec<GuardRuleConfig>,
    /// Applied to what the model answers, streamed answers included.
    pub response: Vec<GuardRuleConfig>,
    /// `topics[].name`s the workload may not ask about: a question (the
    /// last user turn) on one of them is refused.
    pub deny_topics: Vec<String>,
    /// When set, the only `topics[].name`s the workload may ask about: a
    /// question on none of them is refused.
    pub allow_topics: Vec<String>,
    /// `judges[].name`s asked about each question (the last user turn):
    /// allow, block, or (webhooks) redact it.
    pub judges: Vec<String>,
    /// `judges[].name`s asked about each whole answer (streamed answers
    /// are not sent to judges): allow or block it.
    pub response_judges: Vec<String>,
    /// The gates the policy applies on (`llm`, `api`); empty: all of
    /// them. On `api` destinations the request and response rules scan
    /// textual bodies (JSON string values, text, forms); topics and judges
    /// judge LLM questions and answers only.
    pub gates: Vec<crate::config::GateKind>,
}

/// What to do with findings of some detectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardRuleConfig {
    /// Detector kinds (`email`, `credit_card`, `openai_key`, …), whole
    /// categories (`pii`, `secret`, `injection`), or `custom[].name`s.
    pub detect: Vec<String>,
    pub action: GuardAction,
    /// Request rules with `action: redact` only: put the originals back
    /// where the answer repeats a placeholder, so the application still
    /// gets its data while the provider never saw it.
    #[serde(default)]
    pub restore: bool,
}

/// What a finding does to its request or answer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    /// Let it pass; count it and write an audit line.
    Log,
    /// Replace what was found with a typed placeholder (`<EMAIL_1>`).
    Redact,
    /// Refuse the request (or end the answer) in the caller's protocol,
    /// naming the policy and detector, never the text found.
    Block,
}

impl GuardAction {
    pub fn as_str(self) -> &'static str {
        match self {
            GuardAction::Log => "log",
            GuardAction::Redact => "redact",
            GuardAction::Block => "block",
        }
    }
}

/// One `detect` entry, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detect {
    Kind(Kind),
    Category(Category),
    Custom(String),
}

impl Detect {
    /// Reads a `detect` entry against the built-in names and the custom
    /// rules; `None` when it names nothing.
    pub fn parse(name: &str, custom: &[CustomRule]) -> Option<Detect> {
        if let Some(kind) = Kind::BUILTIN.iter().find(|k| k.as_str() == name) {
            return Some(Detect::Kind(*kind));
        }
        let category = [Category::Pii, Category::Secret, Category::Injection]
            .into_iter()
            .find(|c| c.as_str() == name || (*c == Category::Secret && name == "secrets"));
        if let Some(c) = category {
            return Some(Detect::Category(c));
        }
        custom
            .iter()
            .any(|r| r.name == name)
            .then(|| Detect::Custom(name.to_owned()))
    }

    /// Whether an injection finding can be among what it detects:
    /// those are for refusing, a placeholder would only hide the evidence.
    pub fn is_injection(&self) -> bool {
        match self {
            Detect::Kind(k) => k.category() == Category::Injection,
            Detect::Category(c) => *c == Category::Injection,
            Detect::Custom(_) => false,
        }
    }
}

impl GuardrailsConfig {
    /// Problems as (field, message), fields spelled as in YAML.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let engine = crate::policy::guard::GuardConfig {
            detectors: Vec::new(),
            custom: self.custom.clone(),
            max_scan_bytes: self.max_scan_bytes,
        };
        let messages =
            engine
                .validate("guardrails")
                .into_iter()
                .chain(crate::policy::guard::validate_topics(
                    &self.topics,
                    "guardrails.topics",
                ));
        for message in messages {
            let (field, rest) = message
                .split_once(' ')
                .map_or(("guardrails", message.as_str()), |(f, r)| (f, r));
            out.push((field.trim_end_matches(':').to_owned(), rest.to_owned()));
        }
        out.extend(crate::policy::judge::list_problems(
            &self.judges,
            "guardrails.judges",
        ));
        let mut names = BTreeMap::new();
        for (i, policy) in self.policies.iter().enumerate() {
            let at = format!("guardrails.policies[{i}]");
            if policy.name.is_empty() {
                out.push((format!("{at}.name"), "must not be empty".into()));
            } else if let Some(first) = names.insert(policy.name.as_str(), i) {
                out.push((
                    format!("{at}.name"),
                    format!(
                        "{:?} is also the name of guardrails.policies[{first}]",
                        policy.name
                    ),
                ));
            }
            if policy.request.is_empty()
                && policy.response.is_empty()
                && policy.deny_topics.is_empty()
                && policy.allow_topics.is_empty()
                && policy.judges.is_empty()
                && policy.response_judges.is_empty()
            {
                out.push((
                    at.clone(),
                    "has no rules: add request or response rules or topics, or remove it".into(),
                ));
            }
            for (k, gate) in policy.gates.iter().enumerate() {
                if !gate.is_http() {
                    out.push((
                        format!("{at}.gates[{k}]"),
                        format!(
                            "{} carries no requests to scan: use llm or api",
                            gate.label()
                        ),
                    ));
                }
            }
            for (list, names) in [
                ("deny_topics", &policy.deny_topics),
                ("allow_topics", &policy.allow_topics),
            ] {
                for (k, name) in names.iter().enumerate() {
                    if !self.topics.iter().any(|t| t.name == *name) {
                        out.push((
                            format!("{at}.{list}[{k}]"),
                            format!("{name:?} is not the name of a guardrails.topics entry"),
                        ));
                    }
                }
            }
            for (list, names) in [
                ("judges", &policy.judges),
                ("response_judges", &policy.response_judges),
            ] {
                for (k, name) in names.iter().enumerate() {
                    if !self.judges.iter().any(|j| j.name == *name) {
                        out.push((
                            format!("{at}.{list}[{k}]"),
                            format!("{name:?} is not the name of a guardrails.judges entry"),
                        ));
                    }
                }
            }
            for (phase, rules) in [("request", &policy.request), ("response", &policy.response)] {
                for (j, rule) in rules.iter().enumerate() {
                    let at = format!("{at}.{phase}[{j}]");
                    if rule.detect.is_empty() {
                        out.push((
                            format!("{at}.detect"),
                            "must name at least one detector".into(),
                        ));
                    }
                    for (k, name) in rule.detect.iter().enumerate() {
                        match Detect::parse(name, &self.custom) {
                            None => out.push((
                                format!("{at}.detect[{k}]"),
                                format!(
                                    "{name:?} is neither a detector ({}), a category (pii, secret, injection) nor a guardrails.custom rule",
                                    Kind::BUILTIN.map(Kind::as_str).join(", ")
                                ),
                            )),
                            Some(d) if d.is_injection() && rule.action == GuardAction::Redact => {
                                out.push((
                                    format!("{at}.detect[{k}]"),
                                    format!("{name:?} finds injection attempts, which can be blocked or logged, not redacted"),
                                ))
                            }
                            Some(_) => {}
                        }
                    }
                    if rule.restore && (phase != "request" || rule.action != GuardAction::Redact) {
                        out.push((
                            format!("{at}.restore"),
                            "only request rules with action redact restore placeholders".into(),
                        ));
                    }
                }
            }
        }
        out
    }
}
