//! Which provider models serve a requested model, in which order, and what
//! the request looks like after the model's policy. Pure functions: the
//! clock, the cooldown state and the random draw come in as arguments.
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::{ModelAccess, ModelRoute};

/// `pattern` is an exact name or a prefix ending in `*`.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The first configured model matching the requested name.
pub fn find<'a>(models: &'a [ModelRoute], requested: &str) -> Option<&'a ModelRoute> {
    models.iter().find(|m| name_matches(&m.name, requested))
}

/// The identity access rules see.
pub struct Who<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// Whether a rule's selector picks this workload: every given field must
/// match; an unknown workload (no attribution) matches only rules that
/// select nothing.
pub fn selects(
    workloads: &[String],
    labels: &BTreeMap<String, String>,
    (namespaces, service_accounts): (&[String], &[String]),
    who: Option<&Who<'_>>,
) -> bool {
    let by_name =
        workloads.is_empty() || who.is_some_and(|w| workloads.iter().any(|n| n == w.name));
    let by_labels = labels.is_empty()
        || who.is_some_and(|w| labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)));
    let by_pod = crate::workload::selects_pod(namespaces, service_accounts, who.map(|w| w.labels));
    by_name && by_labels && by_pod
}

/// Whether the workload may ask for `model`. No rules: everyone may use
/// everything; with rules, the union of the rules that select it.
pub fn allowed(access: &[ModelAccess], who: Option<&Who<'_>>, model: &str) -> bool {
    access.is_empty()
        || access.iter().any(|rule| {
            selects(
                &rule.workloads,
                &rule.labels,
                (&rule.namespaces, &rule.service_accounts),
                who,
            ) && rule.models.iter().any(|p| name_matches(p, model))
        })
}

/// One provider model to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Index into the providers.
    pub provider: usize,
    /// The model name sent to the provider.
    pub model: String,
}

/// The order to try a model's targets in: by priority (lowest first),
/// weighted-random among equal priorities (`draw` is a fresh random number
/// per request), and targets whose provider is cooling down after a
/// failure moved behind every healthy one — still tried, since a cooling
/// provider is better than no answer.
pub fn order(
    route: &ModelRoute,
    requested: &str,
    provider_index: impl Fn(&str) -> Option<usize>,
    cooling: impl Fn(usize) -> bool,
    mut draw: u64,
) -> Vec<Candidate> {
    let mut targets: Vec<(u32, u32, usize, String)> = route
        .targets
        .iter()
        .filter_map(|t| {
            let provider = provider_index(&t.provider)?;
            let model = t.model.clone().unwrap_or_else(|| requested.to_owned());
            Some((t.priority, t.weight.max(1), provider, model))
        })
        .collect();
    targets.sort_by_key(|t| t.0);
    let mut ordered = Vec::with_capacity(targets.len());
    let mut rest = targets.as_mut_slice();
    while !rest.is_empty() {
        let priority = rest[0].0;
        let n = rest.iter().take_while(|t| t.0 == priority).count();
        let (group, tail) = rest.split_at_mut(n);
        // Weighted shuffle: pick one by weight, move it to the front of
        // what is left, repeat.
        for i in 0..group.len() {
            let total: u64 = group[i..].iter().map(|t| u64::from(t.1)).sum();
            let mut pick = draw % total;
            draw = next(draw);
            let mut chosen = i;
            for (j, t) in group[i..].iter().enumerate() {
                if pick < u64::from(t.1) {
                    chosen = i + j;
                    break;
                }
                pick -= u64::from(t.1);
            }
            group.swap(i, chosen);
        }
        ordered.extend(group.iter().map(|t| Candidate {
            provider: t.2,
            model: t.3.clone(),
        }));
        rest = tail;
    }
    // Stable: healthy ones keep their order, cooling ones theirs.
    ordered.sort_by_key(|c| cooling(c.provider));
    ordered
}

/// splitmix64: spreads one per-request draw over the picks.
fn next(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Applies a model's request policy to the client's body, in the client's
/// protocol: defaults where the field is absent, overrides always, then
/// the `max_tokens` cap (after overrides, so an override cannot lift it).
/// A client that sent no limit gets the cap as its limit.
pub fn shape(body: &mut impl Members, route: &ModelRoute) {
    for (k, v) in &route.defaults {
        if !body.has(k) {
            body.set(k, v.clone());
        }
    }
    for (k, v) in &route.overrides {
        body.set(k, v.clone());
    }
    if let Some(cap) = route.max_tokens {
        let mut capped = false;
        for field in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
            if let Some(n) = body.u64_of(field) {
                capped = true;
                if n.is_none_or(|n| n > cap) {
                    body.set(field, Value::from(cap));
                }
            }
        }
        if !capped {
            body.set("max_tokens", Value::from(cap));
        }
    }
}

/// The top-level members of a request body, as [`shape`] reads and sets
/// them.
pub trait Members {
    fn has(&self, key: &str) -> bool;
    /// `Some(None)`: present, but not a non-negative integer.
    fn u64_of(&self, key: &str) -> Option<Option<u64>>;
    fn set(&mut self, key: &str, value: Value);
}

impl Members for Map<String, Value> {
    fn has(&self, key: &str) -> bool {
        self.contains_key(key)
    }

    fn u64_of(&self, key: &str) -> Option<Option<u64>> {
        self.get(key).map(Value::as_u64)
    }

    fn set(&mut self, key: &str, value: Value) {
        self.insert(key.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelTarget;
    use serde_json::json;

    fn target(provider: &str, model: Option<&str>, weight: u32, priority: u32) -> ModelTarget {
        ModelTarget {
            provider: provider.into(),
            model: model.map(str::to_owned),
            weight,
            priority,
        }
    }

    fn route(name: &str, targets: Vec<ModelTarget>) -> ModelRoute {
        ModelRoute {
            name: name.into(),
            targets,
            max_tokens: None,
            defaults: BTreeMap::new(),
            overrides: BTreeMap::new(),
            report_model: None,
        }
    }

    fn index(name: &str) -> Option<usize> {
        ["a", "b", "c"].iter().position(|n| *n == name)
    }

    #[test]
    fn names_match_exactly_or_by_trailing_star() {
        assert!(name_matches("gpt-4o", "gpt-4o"));
        assert!(!name_matches("gpt-4o", "gpt-4o-mini"));
        assert!(name_matches("gpt-4o*", "gpt-4o-mini"));
        assert!(name_matches("*", "anything"));
        assert!(!name_matches("claude-*", "gpt-4o"));
    }

    #[test]
    fn the_first_matching_model_wins() {
        let models = vec![
            route("gpt-4o", vec![target("a", None, 1, 0)]),
            route("gpt-*", vec![target("b", None, 1, 0)]),
        ];
        assert_eq!(find(&models, "gpt-4o").unwrap().targets[0].provider, "a");
        assert_eq!(
            find(&models, "gpt-4o-mini").unwrap().targets[0].provider,
            "b"
        );
        assert!(find(&models, "claude").is_none());
    }

    #[test]
    fn access_is_open_without_rules_and_a_union_with_them() {
        let labels: BTreeMap<String, String> = [("team".to_string(), "fin".to_string())].into();
        let none = BTreeMap::new();
        let fin = Who {
            name: "pod-a",
            labels: &labels,
        };
        let other = Who {
            name: "pod-b",
            labels: &none,
        };
        assert!(allowed(&[], Some(&fin), "gpt-4o"));
        assert!(allowed(&[], None, "gpt-4o"));
        let rules = vec![
            ModelAccess {
                workloads: vec![],
                labels: labels.clone(),
                models: vec!["gpt-4o*".into()],
                ..Default::default()
            },
            ModelAccess {
                workloads: vec!["pod-b".into()],
                labels: BTreeMap::new(),
                models: vec!["claude-haiku".into()],
                ..Default::default()
            },
        ];
        assert!(allowed(&rules, Some(&fin), "gpt-4o-mini"));
        assert!(!allowed(&rules, Some(&fin), "claude-haiku"));
        assert!(allowed(&rules, Some(&other), "claude-haiku"));
        assert!(!allowed(&rules, Some(&other), "gpt-4o"));
        assert!(!allowed(&rules, None, "gpt-4o"));

        let pod: BTreeMap<String, String> = [
            ("k8s:namespace".to_string(), "finance".to_string()),
            ("k8s:serviceaccount".to_string(), "agent".to_string()),
        ]
        .into();
        let fin_pod = Who {
            name: "finance/agent-1",
            labels: &pod,
        };
        let by_identity = vec![ModelAccess {
            namespaces: vec!["finance".into()],
            service_accounts: vec!["agent".into()],
            models: vec!["gpt-4o".into()],
            ..Default::default()
        }];
        assert!(allowed(&by_identity, Some(&fin_pod), "gpt-4o"));
        assert!(!allowed(&by_identity, Some(&fin), "gpt-4o"), "not a pod");
        let other_ns = vec![ModelAccess {
            namespaces: vec!["legal".into()],
            models: vec!["gpt-4o".into()],
            ..Default::default()
        }];
        assert!(!allowed(&other_ns, Some(&fin_pod), "gpt-4o"));
    }

    #[test]
    fn priorities_order_and_unknown_providers_are_skipped() {
        let r = route(
            "m",
            vec![
                target("c", Some("m-c"), 1, 2),
                target("a", Some("m-a"), 1, 0),
                target("zz", None, 1, 0),
                target("b", None, 1, 1),
            ],
        );
        for draw in 0..50 {
            let got = order(&r, "m", index, |_| false, draw);
            let names: Vec<_> = got.iter().map(|c| (c.provider, c.model.as_str())).collect();
            assert_eq!(names, vec![(0, "m-a"), (1, "m"), (2, "m-c")]);
        }
    }

    #[test]
    fn weights_spread_first_picks_in_proportion() {
        let r = route("m", vec![target("a", None, 3, 0), target("b", None, 1, 0)]);
        let mut first_a = 0;
        let mut draw = 12345u64;
        for _ in 0..4000 {
            draw = next(draw);
            let got = order(&r, "m", index, |_| false, draw);
            assert_eq!(got.len(), 2);
            assert_ne!(got[0].provider, got[1].provider);
            if got[0].provider == 0 {
                first_a += 1;
            }
        }
        // 3:1 → about 3000 of 4000.
        assert!((2800..3200).contains(&first_a), "a first {first_a} times");
    }

    #[test]
    fn cooling_providers_go_last_but_stay() {
        let r = route(
            "m",
            vec![
                target("a", None, 1, 0),
                target("b", None, 1, 1),
                target("c", None, 1, 2),
            ],
        );
        let got = order(&r, "m", index, |p| p == 0, 7);
        let providers: Vec<_> = got.iter().map(|c| c.provider).collect();
        assert_eq!(providers, vec![1, 2, 0]);
        let all_cooling = order(&r, "m", index, |_| true, 7);
        assert_eq!(
            all_cooling.iter().map(|c| c.provider).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn shape_applies_defaults_overrides_and_the_cap() {
        let mut r = route("m", vec![]);
        r.defaults.insert("temperature".into(), json!(0.2));
        r.overrides.insert("top_p".into(), json!(0.9));
        r.max_tokens = Some(100);
        let mut body = json!({"model": "m", "max_tokens": 5000, "top_p": 0.1})
            .as_object()
            .unwrap()
            .clone();
        shape(&mut body, &r);
        assert_eq!(body["temperature"], json!(0.2));
        assert_eq!(body["top_p"], json!(0.9));
        assert_eq!(body["max_tokens"], json!(100));

        let mut body = json!({"temperature": 1.0, "max_completion_tokens": 50})
            .as_object()
            .unwrap()
            .clone();
        shape(&mut body, &r);
        assert_eq!(body["temperature"], json!(1.0), "a default never replaces");
        assert_eq!(
            body["max_completion_tokens"],
            json!(50),
            "under the cap stays"
        );
        assert!(body.get("max_tokens").is_none());

        let mut body = Map::new();
        shape(&mut body, &r);
        assert_eq!(
            body["max_tokens"],
            json!(100),
            "no limit sent: the cap is the limit"
        );

        r.overrides.insert("max_tokens".into(), json!(9999));
        let mut body = Map::new();
        shape(&mut body, &r);
        assert_eq!(
            body["max_tokens"],
            json!(100),
            "an override cannot lift the cap"
        );
    }
}
