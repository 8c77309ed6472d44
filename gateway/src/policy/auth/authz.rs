//! Authorization: does one of the route's allow rules match the caller.
//! Pure: values in, a decision out.
use std::collections::BTreeMap;

use hyper::Method;
use serde_json::Value;

use super::Caller;
use crate::config::AllowRule;

/// The refusal of an authorization step; `reason` names the caller (never a
/// secret) and goes back to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub reason: String,
}

/// The parts of a caller the rules look at; lets the decision be tested
/// without an enrolled workload.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Principal<'a> {
    pub(super) workload: Option<(&'a str, &'a BTreeMap<String, String>)>,
    pub(super) api_key: Option<&'a str>,
    /// Provider, subject, claims.
    pub(super) jwt: Option<(&'a str, Option<&'a str>, &'a serde_json::Map<String, Value>)>,
}

impl<'a> From<&'a Caller> for Principal<'a> {
    fn from(c: &'a Caller) -> Self {
        Principal {
            workload: c.workload.as_deref().map(|w| (&*w.name, &w.labels)),
            api_key: c.api_key.as_deref(),
            jwt: c
                .jwt
                .as_ref()
                .map(|j| (j.provider.as_str(), j.subject.as_deref(), &j.claims)),
        }
    }
}

/// `Ok` when `rules` is empty or one rule matches. A rule matches when each
/// of its non-empty fields does: `workloads` (the workload's name is
/// listed), `labels` (all present on the workload with equal values),
/// `api_keys` (the verified key's name is listed), `claims` (each listed
/// claim is a string equal to one of the values, or an array holding one of
/// them), `methods` (the request method is listed).
pub fn authorize(rules: &[AllowRule], caller: &Caller, method: &Method) -> Result<(), Denied> {
    decide(rules, Principal::from(caller), method)
}

pub(super) fn decide(
    rules: &[AllowRule],
    who: Principal<'_>,
    method: &Method,
) -> Result<(), Denied> {
    if rules.is_empty() {
        return Ok(());
    }
    let mut identity_matched = false;
    for rule in rules {
        if identity_matches(rule, &who) {
            if method_matches(rule, method) {
                return Ok(());
            }
            identity_matched = true;
        }
    }
    let reason = if identity_matched {
        format!(
            "{} may not use method {} on this route",
            describe(&who),
            printable(method.as_str())
        )
    } else {
        format!("{} is not allowed on this route", describe(&who))
    };
    Err(Denied { reason })
}

fn identity_matches(rule: &AllowRule, who: &Principal<'_>) -> bool {
    let workloads = rule.workloads.is_empty()
        || who
            .workload
            .is_some_and(|(name, _)| rule.workloads.iter().any(|w| w == name));
    let labels = rule.labels.is_empty()
        || who.workload.is_some_and(|(_, labels)| {
            rule.labels
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
        });
    let pod = crate::workload::selects_pod(
        &rule.namespaces,
        &rule.service_accounts,
        who.workload.map(|(_, labels)| labels),
    );
    let api_keys = rule.api_keys.is_empty()
        || who
            .api_key
            .is_some_and(|key| rule.api_keys.iter().any(|k| k == key));
    let claims = rule.claims.is_empty()
        || who.jwt.is_some_and(|(_, _, claims)| {
            rule.claims
                .iter()
                .all(|(name, wanted)| claims.get(name).is_some_and(|v| claim_matches(v, wanted)))
        });
    workloads && labels && pod && api_keys && claims
}

/// A string claim equal to one of `wanted`, or an array claim holding one
/// of them as a string element. Other JSON types never match.
pub(crate) fn claim_matches(value: &Value, wanted: &[String]) -> bool {
    let is_wanted = |v: &Value| v.as_str().is_some_and(|s| wanted.iter().any(|w| w == s));
    match value {
        Value::Array(items) => items.iter().any(is_wanted),
        other => is_wanted(other),
    }
}

fn method_matches(rule: &AllowRule, method: &Method) -> bool {
    rule.methods.is_empty()
        || rule
            .methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method.as_str()))
}

/// "workload pod-b, API key ci, JWT subject alice (corp)"; "anonymous
/// caller" when nothing is known.
fn describe(who: &Principal<'_>) -> String {
    let mut parts = Vec::new();
    if let Some((name, _)) = who.workload {
        parts.push(format!("workload {}", printable(name)));
    }
    if let Some(key) = who.api_key {
        parts.push(format!("API key {}", printable(key)));
    }
    if let Some((provider, subject, _)) = who.jwt {
        parts.push(match subject {
            Some(s) => format!("JWT subject {} ({})", printable(s), printable(provider)),
            None => format!("JWT of {}", printable(provider)),
        });
    }
    if parts.is_empty() {
        "anonymous caller".to_string()
    } else {
        parts.join(", ")
    }
}

/// Caller-controlled text (a JWT subject) as it may appear in a response:
/// bounded, control characters replaced.
fn printable(s: &str) -> String {
    const MAX: usize = 128;
    let mut out: String = s
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use hyper::Method;
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn claims(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("claims must be an object"),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_rules_allow_everyone_even_anonymous() {
        assert_eq!(authorize(&[], &Caller::default(), &Method::POST), Ok(()));
    }

    #[test]
    fn empty_rule_allows_everyone() {
        let rules = [AllowRule::default()];
        assert_eq!(authorize(&rules, &Caller::default(), &Method::GET), Ok(()));
    }

    #[test]
    fn workloads_field() {
        let l = labels(&[]);
        let rules = [AllowRule {
            workloads: strings(&["pod-a", "pod-c"]),
            ..AllowRule::default()
        }];
        let a = Principal {
            workload: Some(("pod-a", &l)),
            ..Principal::default()
        };
        let b = Principal {
            workload: Some(("pod-b", &l)),
            ..Principal::default()
        };
        assert_eq!(decide(&rules, a, &Method::GET), Ok(()));
        assert_eq!(
            decide(&rules, b, &Method::GET),
            Err(Denied {
                reason: "workload pod-b is not allowed on this route".into()
            })
        );
        assert!(decide(&rules, Principal::default(), &Method::GET).is_err());
    }

    #[test]
    fn labels_field_needs_all_with_equal_values() {
        let rules = [AllowRule {
            labels: labels(&[("app", "web"), ("tier", "front")]),
            ..AllowRule::default()
        }];
        let all = labels(&[("app", "web"), ("tier", "front"), ("extra", "x")]);
        let one = labels(&[("app", "web")]);
        let wrong = labels(&[("app", "web"), ("tier", "back")]);
        let with = |l| Principal {
            workload: Some(("pod", l)),
            ..Principal::default()
        };
        assert_eq!(decide(&rules, with(&all), &Method::GET), Ok(()));
        assert!(decide(&rules, with(&one), &Method::GET).is_err());
        assert!(decide(&rules, with(&wrong), &Method::GET).is_err());
        // No workload: labels cannot match.
        assert!(decide(&rules, Principal::default(), &Method::GET).is_err());
    }

    #[test]
    fn namespaces_and_service_accounts_read_the_pod_identity() {
        let rules = [AllowRule {
            namespaces: strings(&["finance"]),
            service_accounts: strings(&["agent"]),
            ..AllowRule::default()
        }];
        let pod = |ns: &str, sa: &str| labels(&[("k8s:namespace", ns), ("k8s:serviceaccount", sa)]);
        let with = |l| Principal {
            workload: Some(("ns/pod", l)),
            ..Principal::default()
        };
        let (fin_agent, fin_default, legal_agent) = (
            pod("finance", "agent"),
            pod("finance", "default"),
            pod("legal", "agent"),
        );
        let not_pod = labels(&[("app", "x")]);
        assert_eq!(decide(&rules, with(&fin_agent), &Method::GET), Ok(()));
        assert!(decide(&rules, with(&fin_default), &Method::GET).is_err());
        assert!(decide(&rules, with(&legal_agent), &Method::GET).is_err());
        // Not a pod (no k8s:* labels), or no workload at all.
        assert!(decide(&rules, with(&not_pod), &Method::GET).is_err());
        assert!(decide(&rules, Principal::default(), &Method::GET).is_err());
    }

    #[test]
    fn api_keys_field() {
        let rules = [AllowRule {
            api_keys: strings(&["ci"]),
            ..AllowRule::default()
        }];
        let ci = Caller {
            api_key: Some("ci".into()),
            ..Caller::default()
        };
        let other = Caller {
            api_key: Some("batch".into()),
            ..Caller::default()
        };
        assert_eq!(authorize(&rules, &ci, &Method::GET), Ok(()));
        assert_eq!(
            authorize(&rules, &other, &Method::GET),
            Err(Denied {
                reason: "API key batch is not allowed on this route".into()
            })
        );
        assert_eq!(
            authorize(&rules, &Caller::default(), &Method::GET),
            Err(Denied {
                reason: "anonymous caller is not allowed on this route".into()
            })
        );
    }

    fn jwt_caller(c: Value) -> Caller {
        let claims = claims(c);
        Caller {
            jwt: Some(super::super::JwtIdentity {
                provider: "corp".into(),
                subject: claims
                    .get("sub")
                    .and_then(|s| s.as_str())
                    .map(str::to_owned),
                claims,
            }),
            ..Caller::default()
        }
    }

    #[test]
    fn claims_field_strings_and_arrays() {
        let rules = [AllowRule {
            claims: [
                ("groups".to_string(), strings(&["admins", "ops"])),
                ("tenant".to_string(), strings(&["t1"])),
            ]
            .into_iter()
            .collect(),
            ..AllowRule::default()
        }];
        let ok_string = jwt_caller(json!({"sub": "alice", "groups": "ops", "tenant": "t1"}));
        let ok_array =
            jwt_caller(json!({"sub": "alice", "groups": ["dev", "admins"], "tenant": "t1"}));
        let wrong_array = jwt_caller(json!({"sub": "bob", "groups": ["dev"], "tenant": "t1"}));
        let missing_claim = jwt_caller(json!({"sub": "bob", "groups": "ops"}));
        let wrong_type = jwt_caller(json!({"sub": "bob", "groups": {"ops": true}, "tenant": "t1"}));
        let array_of_non_strings = jwt_caller(json!({"groups": [1, true], "tenant": "t1"}));
        assert_eq!(authorize(&rules, &ok_string, &Method::GET), Ok(()));
        assert_eq!(authorize(&rules, &ok_array, &Method::GET), Ok(()));
        assert_eq!(
            authorize(&rules, &wrong_array, &Method::GET),
            Err(Denied {
                reason: "JWT subject bob (corp) is not allowed on this route".into()
            })
        );
        assert!(authorize(&rules, &missing_claim, &Method::GET).is_err());
        assert!(authorize(&rules, &wrong_type, &Method::GET).is_err());
        assert_eq!(
            authorize(&rules, &array_of_non_strings, &Method::GET),
            Err(Denied {
                reason: "JWT of corp is not allowed on this route".into()
            })
        );
        // No JWT at all.
        assert!(authorize(&rules, &Caller::default(), &Method::GET).is_err());
    }

    #[test]
    fn methods_field() {
        let rules = [AllowRule {
            api_keys: strings(&["ci"]),
            methods: strings(&["GET", "head"]),
            ..AllowRule::default()
        }];
        let ci = Caller {
            api_key: Some("ci".into()),
            ..Caller::default()
        };
        assert_eq!(authorize(&rules, &ci, &Method::GET), Ok(()));
        assert_eq!(authorize(&rules, &ci, &Method::HEAD), Ok(()));
        assert_eq!(
            authorize(&rules, &ci, &Method::POST),
            Err(Denied {
                reason: "API key ci may not use method POST on this route".into()
            })
        );
        // A rule of methods only applies to anyone.
        let only_methods = [AllowRule {
            methods: strings(&["GET"]),
            ..AllowRule::default()
        }];
        assert_eq!(
            authorize(&only_methods, &Caller::default(), &Method::GET),
            Ok(())
        );
        assert!(authorize(&only_methods, &Caller::default(), &Method::DELETE).is_err());
    }

    #[test]
    fn every_non_empty_field_must_match() {
        let l = labels(&[("app", "web")]);
        let c = claims(json!({"role": "admin"}));
        let rule = AllowRule {
            workloads: strings(&["pod-a"]),
            labels: labels(&[("app", "web")]),
            api_keys: strings(&["ci"]),
            claims: [("role".to_string(), strings(&["admin"]))]
                .into_iter()
                .collect(),
            methods: strings(&["POST"]),
            ..Default::default()
        };
        let full = Principal {
            workload: Some(("pod-a", &l)),
            api_key: Some("ci"),
            jwt: Some(("corp", None, &c)),
        };
        let rules = [rule];
        assert_eq!(decide(&rules, full, &Method::POST), Ok(()));
        // Drop each part in turn: the rule no longer matches.
        let mut no_workload = full;
        no_workload.workload = None;
        let mut no_key = full;
        no_key.api_key = None;
        let mut no_jwt = full;
        no_jwt.jwt = None;
        for (what, p) in [("workload", no_workload), ("key", no_key), ("jwt", no_jwt)] {
            assert!(decide(&rules, p, &Method::POST).is_err(), "{what}");
        }
        assert_eq!(
            decide(&rules, full, &Method::GET),
            Err(Denied {
                reason:
                    "workload pod-a, API key ci, JWT of corp may not use method GET on this route"
                        .into()
            })
        );
    }

    #[test]
    fn any_one_rule_suffices() {
        let rules = [
            AllowRule {
                api_keys: strings(&["ci"]),
                ..AllowRule::default()
            },
            AllowRule {
                claims: [("sub".to_string(), strings(&["alice"]))]
                    .into_iter()
                    .collect(),
                ..AllowRule::default()
            },
        ];
        assert_eq!(
            authorize(&rules, &jwt_caller(json!({"sub": "alice"})), &Method::GET),
            Ok(())
        );
        assert!(authorize(&rules, &jwt_caller(json!({"sub": "bob"})), &Method::GET).is_err());
    }

    #[test]
    fn caller_text_is_bounded_and_printable() {
        let long = "x".repeat(500);
        let c = jwt_caller(json!({"sub": format!("evil\r\nSet-Cookie: a{long}")}));
        let rules = [AllowRule {
            api_keys: strings(&["ci"]),
            ..AllowRule::default()
        }];
        let reason = authorize(&rules, &c, &Method::GET).unwrap_err().reason;
        assert!(!reason.contains('\r') && !reason.contains('\n'), "{reason}");
        assert!(reason.len() < 250, "{}", reason.len());
    }
}
