use super::*;
use crate::telemetry::Metrics;
use prometheus::Registry;

/// A registry with the daemon's real families and known traffic of two
/// workloads (`ns/agent` and `batch`) to two destinations.
fn traffic() -> Metrics {
    let m = Metrics::new(Registry::new()).unwrap();
    let req = |gate, dest, route, w, status, n| {
        m.http_requests
            .with_label_values(&[gate, dest, route, w, status])
            .inc_by(n)
    };
    req("llm", "openai", "-", "ns/agent", "200", 7);
    req("llm", "openai", "-", "ns/agent", "429", 2);
    req("llm", "openai", "-", "ns/agent", "502", 1);
    req("llm", "openai", "-", "ns/agent", "499", 4);
    req("api", "github", "repos", "ns/agent", "403", 3);
    req("api", "github", "repos", "batch", "200", 5);
    let g = &m.genai;
    let tok = |kind, served, w, n| {
        g.tokens
            .with_label_values(&[kind, "chat", "openai", "gpt-4o", served, w, "openai"])
            .inc_by(n)
    };
    tok("input", "gpt-4o-2024", "ns/agent", 100);
    tok("output", "gpt-4o-2024", "ns/agent", 40);
    tok("cached_input", "gpt-4o-2024", "ns/agent", 60);
    tok("reasoning", "gpt-4o-2024", "ns/agent", 10);
    tok("input", "", "batch", 9);
    g.cost_usd
        .with_label_values(&["ns/agent", "openai", "gpt-4o-2024", "openai"])
        .inc_by(0.25);
    g.cost_usd
        .with_label_values(&["batch", "openai", "gpt-4o", "openai"])
        .inc_by(0.5);
    for (result, n) in [("hit", 3), ("semantic_hit", 2), ("miss", 6), ("bypass", 9)] {
        g.cache_requests
            .with_label_values(&[result, "ns/agent", "openai"])
            .inc_by(n);
    }
    g.limit_refusals
        .with_label_values(&["daily", "tokens", "ns/agent"])
        .inc_by(2);
    for (action, n) in [("block", 2), ("redact", 3), ("error_blocked", 1)] {
        g.guard_findings
            .with_label_values(&[
                "llm", "request", "pii", "email", action, "ns/agent", "openai",
            ])
            .inc_by(n);
    }
    let mcp = |method, tool, decision, w, n| {
        m.mcp
            .requests
            .with_label_values(&[method, tool, "files", decision, w])
            .inc_by(n)
    };
    mcp("tools/call", "read", "allowed", "ns/agent", 4);
    mcp("tools/call", "delete", "denied", "ns/agent", 1);
    mcp("tools/call", "read", "limited", "ns/agent", 1);
    mcp("tools/list", "", "allowed", "ns/agent", 2);
    mcp("tools/call", "read", "allowed", "batch", 1);
    mcp("tools/call", "write", "allowed", "batch", 1);
    let ebpf = |w, d, outcome, n| {
        m.ebpf_connects
            .with_label_values(&[w, d, outcome])
            .inc_by(n)
    };
    ebpf("ns/agent", "openai", "redirected", 11);
    ebpf("ns/agent", "pastebin", "denied", 3);
    ebpf("batch", "github", "redirected", 2);
    m.connections
        .with_label_values(&["ns/agent", "openai", "ok"])
        .inc_by(10);
    m.connections
        .with_label_values(&["ns/agent", "openai", "upstream_timeout"])
        .inc_by(1);
    for (dir, n) in [("sent", 1000), ("received", 5000)] {
        m.connection_bytes
            .with_label_values(&["ns/agent", "openai", dir])
            .inc_by(n);
    }
    m
}

fn guard(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(a, n)| (a.to_string(), *n)).collect()
}

#[test]
fn every_field_of_a_workload_comes_from_its_family() {
    let m = traffic();
    let s = summarize(&m.registry.gather(), &["ns/agent".into(), "idle".into()]);
    let a = s.workload("ns/agent").unwrap();
    assert!(a.enrolled);
    assert_eq!(
        a.counts,
        Counts {
            requests: 17,
            errors: 1,
            refused: 5,
            tokens_input: 100,
            tokens_output: 40,
            cost_usd: 0.25,
            cache_hits: 5,
            cache_misses: 6,
            limit_refusals: 2,
            guardrails: guard(&[
                ("block", 2),
                ("redact", 3),
                ("log", 0),
                ("error_blocked", 1)
            ]),
            mcp_calls: 8,
            mcp_denied: 2,
            denied_connects: 3,
            connections: 11,
            bytes_sent: 1000,
            bytes_received: 5000,
        }
    );
    assert_eq!(
        a.models,
        BTreeMap::from([(
            "gpt-4o-2024".to_string(),
            ModelCounts {
                tokens_input: 100,
                tokens_output: 40,
                cost_usd: 0.25
            }
        )])
    );
    assert_eq!(
        a.top_tools,
        vec![
            ToolCount {
                tool: "read".into(),
                calls: 5
            },
            ToolCount {
                tool: "delete".into(),
                calls: 1
            }
        ]
    );
}

#[test]
fn an_enrolled_workload_without_traffic_is_listed_with_zeros() {
    let s = summarize(&traffic().registry.gather(), &["idle".into()]);
    let idle = s.workload("idle").unwrap();
    assert!(idle.enrolled);
    assert_eq!(idle.counts.requests, 0);
    assert_eq!(
        idle.counts.guardrails,
        guard(&[("block", 0), ("redact", 0), ("log", 0)])
    );
    // Counted but not enrolled now (e.g. removed): still listed.
    assert!(!s.workload("batch").unwrap().enrolled);
    let names: Vec<_> = s.workloads.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["batch", "idle", "ns/agent"], "sorted by name");
}

#[test]
fn a_model_the_provider_did_not_name_is_the_requested_one() {
    let s = summarize(&traffic().registry.gather(), &[]);
    let b = s.workload("batch").unwrap();
    assert_eq!(b.models["gpt-4o"].tokens_input, 9);
    // Cost is labelled by the served model only.
    assert_eq!(b.models["gpt-4o"].cost_usd, 0.5);
    assert_eq!(s.models["gpt-4o"].tokens_input, 9);
    assert_eq!(s.models["gpt-4o-2024"].tokens_output, 40);
}

#[test]
fn node_totals_add_up_the_workloads() {
    let s = summarize(&traffic().registry.gather(), &[]);
    let t = &s.totals;
    assert_eq!(t.requests, 22);
    assert_eq!(t.errors, 1);
    assert_eq!(t.refused, 5);
    assert_eq!(t.tokens_input, 109);
    assert_eq!(t.tokens_output, 40);
    assert!((t.cost_usd - 0.75).abs() < 1e-9);
    assert_eq!(t.mcp_calls, 10);
    assert_eq!(t.denied_connects, 3);
    assert_eq!(
        t.guardrails,
        guard(&[
            ("block", 2),
            ("redact", 3),
            ("log", 0),
            ("error_blocked", 1)
        ])
    );
    assert_eq!(
        s.top_tools,
        vec![
            ToolCount {
                tool: "read".into(),
                calls: 6
            },
            ToolCount {
                tool: "delete".into(),
                calls: 1
            },
            ToolCount {
                tool: "write".into(),
                calls: 1
            },
        ],
        "most called first, ties by name"
    );
    assert_eq!(s.ebpf, guard(&[("redirected", 13), ("denied", 3)]));
}

#[test]
fn destinations_pair_requests_connections_bytes_and_kernel_outcomes() {
    let s = summarize(&traffic().registry.gather(), &[]);
    let keys: Vec<_> = s
        .destinations
        .iter()
        .map(|d| (d.workload.as_str(), d.destination.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("batch", "files"),
            ("batch", "github"),
            ("batch", "openai"),
            ("ns/agent", "files"),
            ("ns/agent", "github"),
            ("ns/agent", "openai"),
            ("ns/agent", "pastebin")
        ]
    );
    assert_eq!(
        s.destinations[5],
        DestinationSummary {
            workload: "ns/agent".into(),
            destination: "openai".into(),
            requests: 14,
            errors: 1,
            refused: 2,
            connections: 11,
            bytes_sent: 1000,
            bytes_received: 5000,
            ebpf: guard(&[("redirected", 11)]),
            tokens_input: 100,
            tokens_output: 40,
            cost_usd: 0.25,
            cache_hits: 5,
            cache_misses: 6,
            guardrails: guard(&[
                ("block", 2),
                ("redact", 3),
                ("log", 0),
                ("error_blocked", 1)
            ]),
            mcp_calls: 0,
            mcp_denied: 0,
        }
    );
    assert_eq!(s.destinations[6].ebpf, guard(&[("denied", 3)]));
    assert_eq!(s.destinations[4].refused, 3);
    // MCP calls are paired by their server (the destination called).
    let files = &s.destinations[3];
    assert_eq!(
        (files.workload.as_str(), files.mcp_calls, files.mcp_denied),
        ("ns/agent", 8, 2)
    );
    let batch_openai = &s.destinations[2];
    assert_eq!(
        (batch_openai.tokens_input, batch_openai.cost_usd),
        (9, 0.5),
        "{batch_openai:?}"
    );
}

#[test]
fn an_empty_registry_gives_an_empty_summary() {
    let s = summarize(&Registry::new().gather(), &[]);
    assert!(s.workloads.is_empty() && s.destinations.is_empty() && s.models.is_empty());
    assert_eq!(s.totals.requests, 0);
    // Serialises with every key, for readers that index blindly.
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["totals"]["guardrails"]["block"], 0);
}

#[test]
fn summary_json_flattens_a_workloads_counts() {
    let s = summarize(&traffic().registry.gather(), &[]);
    let v = serde_json::to_value(s.workload("ns/agent").unwrap()).unwrap();
    assert_eq!(v["name"], "ns/agent");
    assert_eq!(v["tokens_input"], 100);
    assert_eq!(v["cost_usd"], 0.25);
    let back: WorkloadSummary = serde_json::from_value(v).unwrap();
    assert_eq!(&back, s.workload("ns/agent").unwrap());
}

fn point(t_ms: u64, requests: u64, tokens: u64, cost: f64, hits: u64, misses: u64) -> Point {
    let c = Counts {
        requests,
        tokens_input: tokens,
        cost_usd: cost,
        cache_hits: hits,
        cache_misses: misses,
        guardrails: guard(&[("block", requests / 10)]),
        ..Counts::default()
    };
    Point {
        t_ms,
        totals: c.clone(),
        workloads: BTreeMap::from([("w".to_string(), c)]),
        models: BTreeMap::from([(
            "m".to_string(),
            ModelCounts {
                tokens_input: tokens,
                ..ModelCounts::default()
            },
        )]),
        ebpf: guard(&[("redirected", requests)]),
    }
}

#[test]
fn rates_come_from_consecutive_samples() {
    let mut h = History::new(10);
    h.push(point(10_000, 0, 0, 0.0, 0, 0));
    h.push(point(12_000, 20, 600, 0.5, 1, 3));
    h.push(point(14_000, 20, 600, 0.5, 1, 3));
    let r = h.rates(60_000);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].t_ms, 12_000);
    assert_eq!(r[0].seconds, 2.0);
    assert_eq!(r[0].node.requests_per_s, 10.0);
    assert_eq!(r[0].node.tokens_per_min, 18_000.0);
    assert_eq!(r[0].node.cost_per_min, 15.0);
    assert_eq!(r[0].node.cache_hit_ratio, Some(0.25));
    assert_eq!(r[0].node.guardrail_blocks, 2);
    assert_eq!(r[0].tokens_per_min_by_model["m"], 18_000.0);
    assert_eq!(r[0].ebpf_per_s["redirected"], 10.0);
    assert_eq!(r[0].workloads["w"].requests_per_s, 10.0);
    // Nothing happened: zero rates, and no ratio without lookups.
    assert_eq!(r[1].node.requests_per_s, 0.0);
    assert_eq!(r[1].node.cache_hit_ratio, None);
}

#[test]
fn the_window_keeps_one_earlier_sample_and_the_ring_is_bounded() {
    let mut h = History::new(3);
    for i in 0..5u64 {
        h.push(point(i * 1000, i * 10, 0, 0.0, 0, 0));
    }
    assert_eq!(h.len(), 3, "oldest dropped");
    // Samples at 2,3,4 s; a 1 s window still yields the 3→4 interval.
    let r = h.rates(1000);
    assert_eq!(r.iter().map(|r| r.t_ms).collect::<Vec<_>>(), [3000, 4000]);
    let all = h.rates(u64::MAX);
    assert_eq!(all.len(), 2);
    let recent = h.recent(2000).unwrap();
    assert_eq!(recent.seconds, 2.0);
    assert_eq!(recent.node.requests_per_s, 10.0);
    assert!(History::new(3).recent(1000).is_none());
}

#[test]
fn a_workload_new_in_a_sample_starts_from_zero_and_shrinking_counts_are_zero() {
    let a = point(0, 5, 0, 0.0, 0, 0);
    let mut b = point(1000, 0, 0, 0.0, 0, 0);
    b.workloads.insert(
        "new".into(),
        Counts {
            requests: 3,
            ..Counts::default()
        },
    );
    let r = rates(&a, &b).unwrap();
    assert_eq!(r.workloads["new"].requests_per_s, 3.0);
    assert_eq!(r.node.requests_per_s, 0.0, "never negative");
    assert!(rates(&b, &a).is_none(), "time must move forward");
}

#[test]
fn workload_summary_paths_take_multi_segment_and_encoded_names() {
    let ok = |p: &str| summary_path_name(p).unwrap().unwrap();
    assert_eq!(ok("/workloads/local/summary"), "local");
    assert_eq!(ok("/workloads/ns/pod-1/summary"), "ns/pod-1");
    assert_eq!(ok("/workloads/ns%2Fpod-1/summary"), "ns/pod-1");
    assert_eq!(ok("/workloads/x/summary/summary"), "x/summary");
    assert_eq!(ok("/workloads/caf%C3%A9/summary"), "café");
    assert!(summary_path_name("/workloads/summary").is_none());
    assert!(summary_path_name("/workloads//summary").is_none());
    assert!(summary_path_name("/workloads/a").is_none());
    assert!(summary_path_name("/workloads/%zz/summary")
        .unwrap()
        .is_err());
    assert!(summary_path_name("/workloads/%ff/summary")
        .unwrap()
        .is_err());
    assert!(summary_path_name("/workloads/%4/summary").unwrap().is_err());
}

#[test]
fn window_parameter() {
    assert_eq!(window_ms(None, 600_000), Ok(600_000));
    assert_eq!(window_ms(Some("window=60"), 600_000), Ok(60_000));
    assert_eq!(window_ms(Some("x=1&window=30s"), 600_000), Ok(30_000));
    assert_eq!(window_ms(Some("window=9999"), 600_000), Ok(600_000));
    assert!(window_ms(Some("window=0"), 600_000).is_err());
    assert!(window_ms(Some("window=abc"), 600_000)
        .unwrap_err()
        .contains("window"));
}
