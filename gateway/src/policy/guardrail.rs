//! The guardrail step of the policy chain: which rules of a workload's
//! policies a finding triggers and what follows — the request or answer
//! is refused, the finding replaced by a placeholder, or only counted.
//!
//! Pure: the gates walk the texts of their protocol (messages, system
//! prompt, answer, stream deltas) and hand each to a [`Session`], which
//! scans it with the shared engine ([`crate::policy::guard`]) and decides.
//! One session per request keeps the placeholders of its prompt, so the
//! answer's placeholders are the prompt's and can be restored.
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{Detect, GateKind, GuardAction, GuardrailsConfig};
use crate::policy::guard::{
    Category, Finding, FindingFilter, GuardConfig, Kind, Redactor, Restorer, ScanError, Scanner,
    TopicMatcher,
};
use crate::policy::judge::Judge;

/// The guardrails of one config, compiled once and read per request.
#[derive(Default)]
pub struct Guardrails {
    /// `None` when no policy exists: nothing to scan for.
    scanner: Option<Arc<Scanner>>,
    /// The topics, examples embedded; `None` without topics.
    topics: Option<Arc<TopicMatcher>>,
    topic_names: Vec<String>,
    judges: Vec<Arc<Judge>>,
    policies: Vec<Policy>,
}

struct Policy {
    name: Arc<str>,
    /// Empty: every gate.
    gates: Vec<GateKind>,
    workloads: Vec<String>,
    labels: BTreeMap<String, String>,
    namespaces: Vec<String>,
    service_accounts: Vec<String>,
    request: Vec<Rule>,
    response: Vec<Rule>,
    /// Indexes into the topics.
    deny_topics: Vec<usize>,
    allow_topics: Vec<usize>,
    /// Indexes into the judges, per phase.
    request_judges: Vec<usize>,
    response_judges: Vec<usize>,
}

/// One rule with its policy's name, as a [`Plan`] holds it.
#[derive(Debug, Clone)]
struct Rule {
    policy: Arc<str>,
    detect: Vec<Detect>,
    action: GuardAction,
    restore: bool,
}

impl Rule {
    fn matches(&self, f: &Finding) -> bool {
        self.detect.iter().any(|d| match d {
            Detect::Kind(k) => *k == f.kind,
            Detect::Category(c) => *c == f.category(),
            Detect::Custom(name) => f.kind == Kind::Custom && *f.rule == **name,
        })
    }
}

/// Where a text is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Request,
    Response,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Request => "request",
            Phase::Response => "response",
        }
    }
}

impl Guardrails {
    /// Compiles the detectors every policy needs into one scanner.
    pub fn build(cfg: &GuardrailsConfig) -> Result<Guardrails, String> {
        if cfg.policies.is_empty() {
            return Ok(Guardrails::default());
        }
        let mut kinds: Vec<Kind> = Vec::new();
        let mut policies = Vec::new();
        for p in &cfg.policies {
            let name: Arc<str> = Arc::from(p.name.as_str());
            let compile = |rules: &[crate::config::GuardRuleConfig]| -> Result<Vec<Rule>, String> {
                rules
                    .iter()
                    .map(|r| {
                        let detect = r
                            .detect
                            .iter()
                            .map(|d| {
                                Detect::parse(d, &cfg.custom)
                                    .ok_or_else(|| format!("guardrails: {d:?} names no detector"))
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok(Rule {
                            policy: Arc::clone(&name),
                            detect,
                            action: r.action,
                            restore: r.restore,
                        })
                    })
                    .collect()
            };
            let topic_indexes = |names: &[String]| -> Result<Vec<usize>, String> {
                names
                    .iter()
                    .map(|n| {
                        cfg.topics
                            .iter()
                            .position(|t| t.name == *n)
                            .ok_or_else(|| format!("guardrails: no topic is named {n:?}"))
                    })
                    .collect()
            };
            let judge_indexes = |names: &[String]| -> Result<Vec<usize>, String> {
                names
                    .iter()
                    .map(|n| {
                        cfg.judges
                            .iter()
                            .position(|j| j.name == *n)
                            .ok_or_else(|| format!("guardrails: no judge is named {n:?}"))
                    })
                    .collect()
            };
            let policy = Policy {
                request_judges: judge_indexes(&p.judges)?,
                response_judges: judge_indexes(&p.response_judges)?,
                name: Arc::clone(&name),
                gates: p.gates.clone(),
                deny_topics: topic_indexes(&p.deny_topics)?,
                allow_topics: topic_indexes(&p.allow_topics)?,
                workloads: p.workloads.clone(),
                labels: p.labels.clone(),
                namespaces: p.namespaces.clone(),
                service_accounts: p.service_accounts.clone(),
                request: compile(&p.request)?,
                response: compile(&p.response)?,
            };
            for rule in policy.request.iter().chain(&policy.response) {
                for d in &rule.detect {
                    match d {
                        Detect::Kind(k) => kinds.push(*k),
                        Detect::Category(c) => kinds.extend(kinds_of(*c)),
                        Detect::Custom(_) => {}
                    }
                }
            }
            policies.push(policy);
        }
        kinds.sort();
        kinds.dedup();
        let scanner = Scanner::new(&GuardConfig {
            detectors: kinds,
            custom: cfg.custom.clone(),
            max_scan_bytes: cfg.max_scan_bytes,
        })
        .map_err(|e| e.to_string())?;
        let topics = if cfg.topics.is_empty() {
            None
        } else {
            Some(Arc::new(
                TopicMatcher::new(&cfg.topics).map_err(|e| e.to_string())?,
            ))
        };
        let judges = cfg
            .judges
            .iter()
            .map(|j| Judge::new(j).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Guardrails {
            scanner: Some(Arc::new(scanner)),
            judges,
            topics,
            topic_names: cfg.topics.iter().map(|t| t.name.clone()).collect(),
            policies,
        })
    }

    /// The rules for one workload (name and labels; `None`: not
    /// identified) on one gate, or `None` when no policy selects it.
    /// Topics and judges are for LLM questions and answers: other gates
    /// get the detector rules only.
    pub fn plan(
        &self,
        gate: GateKind,
        who: Option<(&str, &BTreeMap<String, String>)>,
    ) -> Option<Arc<Plan>> {
        let scanner = self.scanner.as_ref()?;
        let llm = gate == GateKind::Llm;
        let mut request = Vec::new();
        let mut response = Vec::new();
        let mut deny_topics = Vec::new();
        let mut allow_topics = Vec::new();
        let mut judges: [Judges; 2] = Default::default();
        for p in &self.policies {
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
            let on_gate = p.gates.is_empty() || p.gates.contains(&gate);
            if by_name && by_labels && by_pod && on_gate {
                request.extend(p.request.iter().cloned());
                response.extend(p.response.iter().cloned());
                if !llm {
                    continue;
                }
                deny_topics.extend(p.deny_topics.iter().map(|&t| (Arc::clone(&p.name), t)));
                for (phase, wanted) in [&p.request_judges, &p.response_judges]
                    .into_iter()
                    .enumerate()
                {
                    let set = &mut judges[phase];
                    for &j in wanted {
                        if !set.judges.iter().any(|x| Arc::ptr_eq(x, &self.judges[j])) {
                            set.judges.push(Arc::clone(&self.judges[j]));
                        }
                    }
                    if !wanted.is_empty() {
                        set.policies.push(p.name.to_string());
                    }
                }
                if !p.allow_topics.is_empty() {
                    let names: Vec<&str> = p
                        .allow_topics
                        .iter()
                        .map(|&t| self.topic_names[t].as_str())
                        .collect();
                    allow_topics.push((
                        Arc::clone(&p.name),
                        p.allow_topics.clone(),
                        names.join(", "),
                    ));
                }
            }
        }
        if request.is_empty()
            && response.is_empty()
            && deny_topics.is_empty()
            && allow_topics.is_empty()
            && judges.iter().all(|j| j.judges.is_empty())
        {
            return None;
        }
        let [request_judges, response_judges] = judges;
        Some(Arc::new(Plan {
            scanner: Arc::clone(scanner),
            request,
            response,
            topics: self.topics.clone(),
            deny_topics,
            allow_topics,
            request_judges,
            response_judges,
        }))
    }
}

/// The rules that apply to one workload.
#[derive(Debug)]
pub struct Plan {
    scanner: Arc<Scanner>,
    request: Vec<Rule>,
    response: Vec<Rule>,
    topics: Option<Arc<TopicMatcher>>,
    /// (policy, topic index) pairs the question may not touch.
    deny_topics: Vec<(Arc<str>, usize)>,
    /// Per policy that restricts them, the topics a question must touch
    /// one of.
    allow_topics: Vec<(Arc<str>, Vec<usize>, String)>,
    request_judges: Judges,
    response_judges: Judges,
}

/// The judges one phase asks, and the policies that named them.
#[derive(Debug, Default)]
pub struct Judges {
    pub judges: Vec<Arc<Judge>>,
    pub policies: Vec<String>,
}

/// What a finding triggers: the strictest matching rule's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub policy: Arc<str>,
    pub action: GuardAction,
    /// Redacted and every redacting rule that matched restores it.
    pub restore: bool,
}

impl Plan {
    fn rules(&self, phase: Phase) -> &[Rule] {
        match phase {
            Phase::Request => &self.request,
            Phase::Response => &self.response,
        }
    }

    /// Whether anything is checked in `phase`.
    pub fn checks(&self, phase: Phase) -> bool {
        !self.rules(phase).is_empty()
    }

    /// The judges asked in `phase`.
    pub fn judges(&self, phase: Phase) -> &Judges {
        match phase {
            Phase::Request => &self.request_judges,
            Phase::Response => &self.response_judges,
        }
    }

    /// Whether questions are checked against topics.
    pub fn checks_topics(&self) -> bool {
        !self.deny_topics.is_empty() || !self.allow_topics.is_empty()
    }

    pub fn scanner(&self) -> &Arc<Scanner> {
        &self.scanner
    }

    /// The strictest rule a finding triggers in `phase` (block, then
    /// redact, then log; the first such rule names the policy); `None`
    /// when no rule of the phase names its detector.
    pub fn decide(&self, phase: Phase, f: &Finding) -> Option<Decision> {
        let matching: Vec<&Rule> = self.rules(phase).iter().filter(|r| r.matches(f)).collect();
        let action = matching.iter().map(|r| r.action).max()?;
        let first = matching.iter().find(|r| r.action == action)?;
        Some(Decision {
            policy: Arc::clone(&first.policy),
            action,
            restore: action == GuardAction::Redact
                && matching
                    .iter()
                    .filter(|r| r.action == GuardAction::Redact)
                    .all(|r| r.restore),
        })
    }

    /// Accepts the findings `phase` redacts, for a [`Redactor`] (a
    /// streamed answer's scanner redacts as it goes).
    pub fn redacts(self: &Arc<Self>, phase: Phase) -> FindingFilter {
        let plan = Arc::clone(self);
        Arc::new(move |f: &Finding| {
            plan.decide(phase, f)
                .is_some_and(|d| d.action == GuardAction::Redact)
        })
    }
}

/// A finding that refuses its request or ends its answer. Names the policy
/// and detector and where in the message it was; never the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub policy: Arc<str>,
    pub kind: Kind,
    pub rule: Arc<str>,
    pub phase: Phase,
    /// Where in the caller's message (`messages[1].content`).
    pub place: String,
}

impl Blocked {
    pub fn message(&self) -> String {
        let what = match self.kind {
            Kind::Custom => format!("the custom rule {:?}", &*self.rule),
            kind if *self.rule == *kind.as_str() => kind.to_string(),
            kind => format!("{kind} ({})", &*self.rule),
        };
        match self.phase {
            Phase::Request => format!(
                "blocked by guardrail policy {:?}: {what} found in {}; the request was not sent upstream",
                &*self.policy, self.place
            ),
            Phase::Response => format!(
                "blocked by guardrail policy {:?}: {what} found in the answer ({}); the answer was withheld",
                &*self.policy, self.place
            ),
        }
    }
}

/// Why a text could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("{}", .0.message())]
    Blocked(Blocked),
    /// The question is on a denied topic (`topic`), or on none of a
    /// policy's allowed ones (`topic: None`).
    #[error("{}", match .topic {
        Some(t) => format!("blocked by guardrail policy {policy:?}: the question is about {t:?}, a topic this workload may not ask about; the request was not sent to the model"),
        None => format!("blocked by guardrail policy {policy:?}: the question is about none of the topics this workload may ask about ({allowed}); the request was not sent to the model"),
    })]
    Topic {
        policy: Arc<str>,
        topic: Option<Arc<str>>,
        allowed: String,
    },
    /// Too large to scan: refused rather than passed unscanned.
    #[error("{place} is {len} bytes, more than the {limit} bytes guardrails scan (guardrails.max_scan_bytes)")]
    TooLarge {
        place: String,
        len: usize,
        limit: usize,
    },
}

/// One finding acted on, for metrics and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub policy: Arc<str>,
    /// The detector's kind (`email`), or `topic:<name>`.
    pub detector: String,
    pub rule: Arc<str>,
    pub action: GuardAction,
    pub phase: Phase,
}

/// One request's guardrail state: its placeholders and what was found.
/// Cloned for each streamed attempt (a failover starts from the prompt's
/// placeholders again).
#[derive(Clone)]
pub struct Session {
    plan: Arc<Plan>,
    redactor: Redactor,
    /// Labels (`EMAIL`) whose placeholders go back into the answer.
    restore_labels: Vec<String>,
    hits: Vec<Hit>,
}

impl Session {
    pub fn new(plan: Arc<Plan>) -> Session {
        let redactor = Redactor::new().with_filter(plan.redacts(Phase::Request));
        Session {
            plan,
            redactor,
            restore_labels: Vec::new(),
            hits: Vec::new(),
        }
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// Checks one text of `phase`: `Ok(None)` to keep it as it is,
    /// `Ok(Some(redacted))` to replace it, `Err` to refuse.
    pub fn check(
        &mut self,
        phase: Phase,
        text: &str,
        place: impl Fn() -> String,
    ) -> Result<Option<String>, CheckError> {
        if !self.plan.checks(phase) || text.is_empty() {
            return Ok(None);
        }
        let findings = self.plan.scanner.scan(text).map_err(|e| match e {
            ScanError::TooLarge { len, limit } => CheckError::TooLarge {
                place: place(),
                len,
                limit,
            },
        })?;
        let mut redact = false;
        for f in &findings {
            let Some(d) = self.note(phase, f) else {
                continue;
            };
            match d.action {
                GuardAction::Block => {
                    return Err(CheckError::Blocked(Blocked {
                        policy: d.policy,
                        kind: f.kind,
                        rule: Arc::clone(&f.rule),
                        phase,
                        place: place(),
                    }))
                }
                GuardAction::Redact => redact = true,
                GuardAction::Log => {}
            }
        }
        if !redact {
            return Ok(None);
        }
        Ok(Some(match phase {
            Phase::Request => self.redactor.redact(text, &findings),
            Phase::Response => self.answer_redactor().redact(text, &findings),
        }))
    }

    /// Records what a finding triggers; the decision, if any rule names it.
    pub fn note(&mut self, phase: Phase, f: &Finding) -> Option<Decision> {
        let d = self.plan.decide(phase, f)?;
        if d.restore && phase == Phase::Request {
            let label = f.label();
            if !self.restore_labels.contains(&label) {
                self.restore_labels.push(label);
            }
        }
        self.hits.push(Hit {
            policy: Arc::clone(&d.policy),
            detector: f.kind.as_str().to_owned(),
            rule: Arc::clone(&f.rule),
            action: d.action,
            phase,
        });
        Some(d)
    }

    /// A redactor for the answer: it continues the prompt's numbering, so
    /// a new value in the answer never takes a placeholder the prompt's
    /// restore would turn into something else.
    pub fn answer_redactor(&self) -> Redactor {
        self.redactor
            .clone()
            .with_filter(self.plan.redacts(Phase::Response))
    }

    /// Whether the answer has placeholders to put back (cheap; the
    /// restorer itself copies the mapping).
    pub fn restores(&self) -> bool {
        !self.restore_labels.is_empty()
    }

    /// Puts the prompt's restorable originals back; `None` when there are
    /// none.
    pub fn restorer(&self) -> Option<Restorer> {
        if self.restore_labels.is_empty() {
            return None;
        }
        Some(
            self.redactor
                .restorer_for(|label| self.restore_labels.iter().any(|l| l == label)),
        )
    }

    /// Checks the question (the last user turn) against the denied and
    /// allowed topics.
    pub fn check_topics(&mut self, question: &str) -> Result<(), CheckError> {
        let Some(matcher) = self.plan.topics.clone() else {
            return Ok(());
        };
        if !self.plan.checks_topics() {
            return Ok(());
        }
        let hits = matcher.classify(question);
        let plan = Arc::clone(&self.plan);
        let mut refusal = None;
        for (policy, t) in &plan.deny_topics {
            if let Some(hit) = hits.iter().find(|h| h.index == *t) {
                self.topic_hit(policy, &hit.topic, GuardAction::Block);
                refusal.get_or_insert(CheckError::Topic {
                    policy: Arc::clone(policy),
                    topic: Some(Arc::clone(&hit.topic)),
                    allowed: String::new(),
                });
            }
        }
        for (policy, allowed, names) in &plan.allow_topics {
            let on_topic = hits.iter().find(|h| allowed.contains(&h.index));
            match on_topic {
                Some(hit) => self.topic_hit(policy, &hit.topic, GuardAction::Log),
                None => {
                    self.hits.push(Hit {
                        policy: Arc::clone(policy),
                        detector: "topic:none_allowed".into(),
                        rule: Arc::from("allow_topics"),
                        action: GuardAction::Block,
                        phase: Phase::Request,
                    });
                    refusal.get_or_insert(CheckError::Topic {
                        policy: Arc::clone(policy),
                        topic: None,
                        allowed: names.clone(),
                    });
                }
            }
        }
        refusal.map_or(Ok(()), Err)
    }

    fn topic_hit(&mut self, policy: &Arc<str>, topic: &Arc<str>, action: GuardAction) {
        self.hits.push(Hit {
            policy: Arc::clone(policy),
            detector: format!("topic:{topic}"),
            rule: Arc::clone(topic),
            action,
            phase: Phase::Request,
        });
    }

    /// What was found since the last call.
    pub fn take_hits(&mut self) -> Vec<Hit> {
        std::mem::take(&mut self.hits)
    }
}

/// Kinds of `category` among the built-in detectors (for docs and tests).
pub fn kinds_of(category: Category) -> Vec<Kind> {
    Kind::BUILTIN
        .iter()
        .filter(|k| k.category() == category)
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GuardPolicyConfig, GuardRuleConfig};
    use crate::policy::guard::CustomRule;

    fn rule(detect: &[&str], action: GuardAction, restore: bool) -> GuardRuleConfig {
        GuardRuleConfig {
            detect: detect.iter().map(|s| s.to_string()).collect(),
            action,
            restore,
        }
    }

    fn config(policies: Vec<GuardPolicyConfig>) -> GuardrailsConfig {
        GuardrailsConfig {
            custom: vec![CustomRule {
                name: "project-x".into(),
                keywords: vec!["Project Falcon".into()],
                ..CustomRule::default()
            }],
            policies,
            ..GuardrailsConfig::default()
        }
    }

    fn pii_policy() -> GuardPolicyConfig {
        GuardPolicyConfig {
            name: "pii".into(),
            request: vec![
                rule(&["email"], GuardAction::Redact, true),
                rule(&["phone"], GuardAction::Redact, false),
                rule(&["credit_card"], GuardAction::Block, false),
                rule(&["ipv4"], GuardAction::Log, false),
            ],
            response: vec![rule(&["secret"], GuardAction::Redact, false)],
            ..GuardPolicyConfig::default()
        }
    }

    fn session(cfg: &GuardrailsConfig, who: &str) -> Option<Session> {
        let g = Guardrails::build(cfg).unwrap();
        g.plan(GateKind::Llm, Some((who, &BTreeMap::new())))
            .map(Session::new)
    }

    #[test]
    fn no_policy_no_plan() {
        let g = Guardrails::build(&GuardrailsConfig::default()).unwrap();
        assert!(g.plan(GateKind::Llm, None).is_none());
    }

    #[test]
    fn policies_select_by_name_and_labels() {
        let mut finance = pii_policy();
        finance.name = "finance".into();
        finance.workloads = vec!["agent".into()];
        finance.labels = BTreeMap::from([("team".into(), "fin".into())]);
        let g = Guardrails::build(&config(vec![finance])).unwrap();
        let fin = BTreeMap::from([("team".to_string(), "fin".to_string())]);
        assert!(g.plan(GateKind::Llm, Some(("agent", &fin))).is_some());
        assert!(g
            .plan(GateKind::Llm, Some(("agent", &BTreeMap::new())))
            .is_none());
        assert!(g.plan(GateKind::Llm, Some(("other", &fin))).is_none());
        assert!(g.plan(GateKind::Llm, None).is_none());
    }

    #[test]
    fn policies_select_by_namespace_and_service_account() {
        let mut p = pii_policy();
        p.namespaces = vec!["finance".into()];
        p.service_accounts = vec!["agent".into()];
        let g = Guardrails::build(&config(vec![p])).unwrap();
        let pod = |ns: &str, sa: &str| {
            BTreeMap::from([
                ("k8s:namespace".to_string(), ns.to_string()),
                ("k8s:serviceaccount".to_string(), sa.to_string()),
            ])
        };
        let plan = |l: &BTreeMap<String, String>| g.plan(GateKind::Llm, Some(("ns/p", l)));
        assert!(plan(&pod("finance", "agent")).is_some());
        assert!(plan(&pod("finance", "default")).is_none());
        assert!(plan(&pod("legal", "agent")).is_none());
        assert!(plan(&BTreeMap::new()).is_none());
    }

    #[test]
    fn policies_apply_on_their_gates_and_topics_only_on_llm() {
        let mut api_only = pii_policy();
        api_only.name = "api-only".into();
        api_only.gates = vec![GateKind::Api];
        let mut llm_topics = GuardPolicyConfig {
            name: "topics".into(),
            deny_topics: vec!["legal".into()],
            ..GuardPolicyConfig::default()
        };
        let mut cfg = config(vec![api_only, llm_topics.clone()]);
        cfg.topics = vec![crate::policy::guard::TopicConfig {
            name: "legal".into(),
            keywords: vec!["lawsuit".into()],
            ..Default::default()
        }];
        let g = Guardrails::build(&cfg).unwrap();
        let none = BTreeMap::new();
        let api = g.plan(GateKind::Api, Some(("w", &none))).unwrap();
        assert!(api.checks(Phase::Request) && !api.checks_topics());
        let llm = g.plan(GateKind::Llm, Some(("w", &none))).unwrap();
        assert!(!llm.checks(Phase::Request) && llm.checks_topics());

        // A topics-only policy has nothing for the api gate: no plan.
        llm_topics.gates = vec![GateKind::Api, GateKind::Llm];
        cfg.policies = vec![llm_topics];
        let g = Guardrails::build(&cfg).unwrap();
        assert!(g.plan(GateKind::Api, Some(("w", &none))).is_none());
        assert!(g.plan(GateKind::Llm, Some(("w", &none))).is_some());
    }

    #[test]
    fn redacts_blocks_and_logs_per_rule() {
        let mut s = session(&config(vec![pii_policy()]), "w").unwrap();
        let text = "mail bob@example.com or call +1 415 555 0100 from 10.1.2.3";
        let out = s
            .check(Phase::Request, text, || "messages[0].content".into())
            .unwrap()
            .unwrap();
        assert!(
            out.contains("<EMAIL_1>") && out.contains("<PHONE_1>"),
            "{out}"
        );
        assert!(out.contains("10.1.2.3"), "logged, not redacted: {out}");
        let actions: Vec<_> = s
            .take_hits()
            .into_iter()
            .map(|h| (h.detector, h.action))
            .collect();
        assert!(
            actions.contains(&("ipv4".into(), GuardAction::Log)),
            "{actions:?}"
        );
        assert!(actions.contains(&("email".into(), GuardAction::Redact)));

        let err = s
            .check(Phase::Request, "card 4111 1111 1111 1111", || {
                "messages[1].content".into()
            })
            .unwrap_err();
        let CheckError::Blocked(b) = &err else {
            panic!("{err:?}")
        };
        assert_eq!((b.kind, &*b.policy), (Kind::CreditCard, "pii"));
        let message = err.to_string();
        assert!(message.contains("messages[1].content") && message.contains("\"pii\""));
        assert!(
            !message.contains("4111"),
            "never echoes the finding: {message}"
        );
    }

    #[test]
    fn only_restoring_rules_come_back_in_the_answer() {
        let mut s = session(&config(vec![pii_policy()]), "w").unwrap();
        let text = "bob@example.com, +1 415 555 0100";
        s.check(Phase::Request, text, String::new).unwrap().unwrap();
        let r = s.restorer().unwrap();
        assert_eq!(
            r.restore("wrote <EMAIL_1>, called <PHONE_1>"),
            "wrote bob@example.com, called <PHONE_1>"
        );
    }

    #[test]
    fn answer_placeholders_continue_the_prompts_numbering() {
        let mut cfg = config(vec![pii_policy()]);
        cfg.policies[0].response = vec![rule(&["email"], GuardAction::Redact, false)];
        let mut s = session(&cfg, "w").unwrap();
        s.check(Phase::Request, "a@example.com", String::new)
            .unwrap();
        let out = s
            .check(Phase::Response, "b@example.com and <EMAIL_1>", String::new)
            .unwrap()
            .unwrap();
        assert_eq!(out, "<EMAIL_2> and <EMAIL_1>");
        assert_eq!(
            s.restorer().unwrap().restore(&out),
            "<EMAIL_2> and a@example.com"
        );
    }

    #[test]
    fn the_strictest_rule_wins_across_policies() {
        let lenient = GuardPolicyConfig {
            name: "audit".into(),
            request: vec![rule(&["pii"], GuardAction::Log, false)],
            ..GuardPolicyConfig::default()
        };
        let strict = GuardPolicyConfig {
            name: "strict".into(),
            request: vec![rule(&["email", "project-x"], GuardAction::Block, false)],
            ..GuardPolicyConfig::default()
        };
        let mut s = session(&config(vec![lenient, strict]), "w").unwrap();
        let err = s
            .check(Phase::Request, "about Project Falcon", String::new)
            .unwrap_err();
        assert!(
            err.to_string().contains("custom rule \"project-x\""),
            "{err}"
        );
        let CheckError::Blocked(b) = s
            .check(Phase::Request, "x@example.com", String::new)
            .unwrap_err()
        else {
            panic!()
        };
        assert_eq!(&*b.policy, "strict");
        assert_eq!(
            s.check(Phase::Request, "call 415-555-0100", String::new),
            Ok(None)
        );
    }

    #[test]
    fn a_redact_rule_that_does_not_restore_keeps_the_others_out() {
        let a = GuardPolicyConfig {
            name: "a".into(),
            request: vec![rule(&["pii"], GuardAction::Redact, true)],
            ..GuardPolicyConfig::default()
        };
        let b = GuardPolicyConfig {
            name: "b".into(),
            request: vec![rule(&["email"], GuardAction::Redact, false)],
            ..GuardPolicyConfig::default()
        };
        let mut s = session(&config(vec![a, b]), "w").unwrap();
        s.check(Phase::Request, "x@example.com 415-555-0100", String::new)
            .unwrap();
        let r = s.restorer().unwrap();
        assert_eq!(r.restore("<EMAIL_1> <PHONE_1>"), "<EMAIL_1> 415-555-0100");
    }

    #[test]
    fn too_large_is_refused_not_passed() {
        let mut cfg = config(vec![pii_policy()]);
        cfg.max_scan_bytes = 16;
        let mut s = session(&cfg, "w").unwrap();
        let err = s
            .check(Phase::Request, &"a".repeat(17), || "input".into())
            .unwrap_err();
        assert!(matches!(
            err,
            CheckError::TooLarge {
                len: 17,
                limit: 16,
                ..
            }
        ));
    }

    #[test]
    fn a_phase_without_rules_scans_nothing() {
        let mut s = session(&config(vec![pii_policy()]), "w").unwrap();
        assert_eq!(
            s.check(Phase::Response, "card 4111 1111 1111 1111", String::new),
            Ok(None)
        );
        assert!(s.take_hits().is_empty());
    }

    #[test]
    fn denied_and_allowed_topics() {
        use crate::policy::guard::TopicConfig;
        let topic = |name: &str, keywords: &[&str]| TopicConfig {
            name: name.into(),
            keywords: keywords.iter().map(|k| k.to_string()).collect(),
            ..TopicConfig::default()
        };
        let mut cfg = config(vec![
            GuardPolicyConfig {
                name: "no-legal".into(),
                deny_topics: vec!["legal".into()],
                ..GuardPolicyConfig::default()
            },
            GuardPolicyConfig {
                name: "finance-only".into(),
                allow_topics: vec!["finance".into()],
                ..GuardPolicyConfig::default()
            },
        ]);
        cfg.topics = vec![
            topic("legal", &["lawsuit"]),
            topic("finance", &["budget", "invoice"]),
        ];
        assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
        let mut s = session(&cfg, "w").unwrap();
        assert!(s.plan().checks_topics());
        assert_eq!(s.check_topics("Is the Q3 budget final?"), Ok(()));
        let err = s
            .check_topics("Could this budget overrun end in a lawsuit?")
            .unwrap_err();
        assert!(
            matches!(&err, CheckError::Topic { policy, topic: Some(t), .. } if &**policy == "no-legal" && &**t == "legal"),
            "{err:?}"
        );
        let err = s.check_topics("Tell me a joke").unwrap_err();
        assert!(
            err.to_string().contains("none of the topics") && err.to_string().contains("finance")
        );
        let detectors: Vec<String> = s.take_hits().into_iter().map(|h| h.detector).collect();
        assert!(
            detectors.contains(&"topic:legal".to_string()),
            "{detectors:?}"
        );
        assert!(detectors.contains(&"topic:none_allowed".to_string()));

        cfg.policies[0].deny_topics = vec!["medical".into()];
        let problems = cfg.problems();
        assert_eq!(
            problems[0].0, "guardrails.policies[0].deny_topics[0]",
            "{problems:?}"
        );
    }

    #[test]
    fn config_problems_name_the_field() {
        let mut cfg = config(vec![pii_policy(), pii_policy()]);
        cfg.policies[1].request = vec![
            rule(&["emial"], GuardAction::Block, false),
            rule(&["injection"], GuardAction::Redact, false),
            rule(&["email"], GuardAction::Block, true),
        ];
        cfg.policies[1].gates = vec![GateKind::Api, GateKind::L4];
        let problems = cfg.problems();
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "guardrails.policies[1].name",
                "guardrails.policies[1].gates[1]",
                "guardrails.policies[1].request[0].detect[0]",
                "guardrails.policies[1].request[1].detect[0]",
                "guardrails.policies[1].request[2].restore",
            ],
            "{problems:?}"
        );
        assert!(config(vec![pii_policy()]).problems().is_empty());
        assert_eq!(kinds_of(Category::Injection).len(), 4);
    }
}
