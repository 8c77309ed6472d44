//! The LLM gate's metrics, named after the OpenTelemetry GenAI semantic
//! conventions (`gen_ai.client.token.usage` → `gen_ai_client_token_usage`,
//! durations in seconds with the unit in the name, as Prometheus wants),
//! plus trigate's own cost, failover and limit counters.
use std::sync::{Arc, OnceLock};

use super::kept::{Kept, Labelled};

use prometheus::{
    Counter, CounterVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry,
};

/// Label order of the per-call families.
pub const CALL_LABELS: &[&str] = &[
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "workload",
];

/// Label order of `trigate_guardrail_findings_total`.
pub const GUARD_FINDING_LABELS: &[&str] = &[
    "gate",
    "phase",
    "policy",
    "detector",
    "action",
    "workload",
    "destination",
];

pub struct GenAiMetrics {
    /// Labels: `gen_ai_token_type` (input, output) then [`CALL_LABELS`].
    pub token_usage: HistogramVec,
    /// Cached and reasoning tokens too, as a plain counter.
    pub tokens: IntCounterVec,
    pub request_duration: HistogramVec,
    pub time_to_first_token: HistogramVec,
    pub time_per_output_token: HistogramVec,
    pub cost_usd: CounterVec,
    pub failovers: IntCounterVec,
    pub limit_refusals: IntCounterVec,
    /// Guardrail findings acted on (blocked, redacted or logged).
    pub guard_findings: IntCounterVec,
    /// Answer cache lookups by result (hit, miss, bypass).
    pub cache_requests: IntCounterVec,
    /// Tokens (input and output) and spend a cache hit did not use.
    pub cache_tokens_saved: IntCounterVec,
    pub cache_cost_saved: CounterVec,
    /// Questions embedded for the semantic cache by a provider, by
    /// provider and result (ok, error).
    pub cache_embeddings: IntCounterVec,
    /// Series by call labels (see [`GenAiMetrics::series`]).
    series: Kept<6, CallSeries>,
}

/// The series one call records into, for one set of [`CALL_LABELS`]
/// values (operation, provider, requested model, served model, workload)
/// and the destination the pod called (on the counters only: per-node
/// summaries split tokens and spend by destination, the histograms need
/// not).
pub struct CallSeries {
    pub duration: Histogram,
    /// `gen_ai_client_token_usage` for input and output tokens.
    pub usage_input: Histogram,
    pub usage_output: Histogram,
    /// `trigate_llm_tokens_total`: input, output, cached_input, reasoning.
    pub tokens: [IntCounter; 4],
    // Made on first use: a series that never records would show up as an
    // empty histogram (non-streamed calls have no time to first token).
    ttft: OnceLock<Histogram>,
    tpot: OnceLock<Histogram>,
    cost: OnceLock<Counter>,
}

impl CallSeries {
    fn new(m: &GenAiMetrics, labels: [&str; 6]) -> CallSeries {
        let [a, b, c, d, e, destination] = labels;
        let call = [a, b, c, d, e];
        let typed = |kind: &'static str| [kind, a, b, c, d, e];
        CallSeries {
            duration: m.request_duration.with_label_values(&call),
            usage_input: m.token_usage.with_label_values(&typed("input")),
            usage_output: m.token_usage.with_label_values(&typed("output")),
            tokens: ["input", "output", "cached_input", "reasoning"]
                .map(|k| m.tokens.with_label_values(&[k, a, b, c, d, e, destination])),
            ttft: OnceLock::new(),
            tpot: OnceLock::new(),
            cost: OnceLock::new(),
        }
    }
}

/// A call's kept series with its label values, which the series made on
/// first use need.
pub type Series = Labelled<6, CallSeries>;

impl Labelled<6, CallSeries> {
    /// The [`CALL_LABELS`] values.
    fn call(&self) -> [&str; 5] {
        let [a, b, c, d, e, _] = self.labels();
        [a, b, c, d, e]
    }

    pub fn time_to_first_token(&self, m: &GenAiMetrics) -> &Histogram {
        self.handles
            .ttft
            .get_or_init(|| m.time_to_first_token.with_label_values(&self.call()))
    }

    pub fn time_per_output_token(&self, m: &GenAiMetrics) -> &Histogram {
        self.handles
            .tpot
            .get_or_init(|| m.time_per_output_token.with_label_values(&self.call()))
    }

    /// `trigate_llm_cost_usd_total` of the workload, provider, served
    /// model and destination.
    pub fn cost(&self, m: &GenAiMetrics) -> &Counter {
        self.handles.cost.get_or_init(|| {
            let [_, provider, _, served, workload, destination] = self.labels();
            m.cost_usd
                .with_label_values(&[workload, provider, served, destination])
        })
    }
}

impl GenAiMetrics {
    /// The series of a call with these [`CALL_LABELS`] values and
    /// destination, made once and kept: per call, one hash and one
    /// uncontended lock instead of a label lookup per metric.
    pub fn series(&self, labels: [&str; 6]) -> Arc<Series> {
        self.series.get(labels, || CallSeries::new(self, labels))
    }

    pub fn new(registry: &Registry) -> prometheus::Result<GenAiMetrics> {
        let mut usage_labels = vec!["gen_ai_token_type"];
        usage_labels.extend_from_slice(CALL_LABELS);
        let mut token_labels = usage_labels.clone();
        token_labels.push("destination");
        let m = GenAiMetrics {
            // Buckets as the GenAI conventions advise for token counts.
            token_usage: HistogramVec::new(
                HistogramOpts::new(
                    "gen_ai_client_token_usage",
                    "Tokens used per LLM call (input, output), as the provider reported them or estimated.",
                )
                .buckets(
                    [1u32, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262_144, 1_048_576]
                        .iter()
                        .map(|&b| f64::from(b))
                        .collect(),
                ),
                &usage_labels,
            )?,
            tokens: IntCounterVec::new(
                Opts::new(
                    "trigate_llm_tokens_total",
                    "Tokens by type: input, output, cached_input, reasoning; and by the destination the pod called.",
                ),
                &token_labels,
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "gen_ai_server_request_duration_seconds",
                    "LLM call duration, until the last byte of the answer.",
                )
                .buckets(vec![
                    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92,
                ]),
                CALL_LABELS,
            )?,
            time_to_first_token: HistogramVec::new(
                HistogramOpts::new(
                    "gen_ai_server_time_to_first_token_seconds",
                    "Time from the request to the first streamed bytes sent to the client.",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                    5.0, 7.5, 10.0,
                ]),
                CALL_LABELS,
            )?,
            time_per_output_token: HistogramVec::new(
                HistogramOpts::new(
                    "gen_ai_server_time_per_output_token_seconds",
                    "Streaming time after the first token divided by the output tokens after it.",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4,
                    0.5, 0.75, 1.0, 2.5,
                ]),
                CALL_LABELS,
            )?,
            cost_usd: CounterVec::new(
                Opts::new(
                    "trigate_llm_cost_usd_total",
                    "Spend in USD from the price table, by workload, provider, served model and the destination the pod called.",
                ),
                &[
                    "workload",
                    "gen_ai_provider_name",
                    "gen_ai_response_model",
                    "destination",
                ],
            )?,
            failovers: IntCounterVec::new(
                Opts::new(
                    "trigate_llm_failovers_total",
                    "Provider attempts that failed and were retried elsewhere, by the provider that failed and why.",
                ),
                &["provider", "reason"],
            )?,
            limit_refusals: IntCounterVec::new(
                Opts::new(
                    "trigate_llm_limit_refusals_total",
                    "LLM requests refused by a limit, by limit, kind and workload.",
                ),
                &["limit", "kind", "workload"],
            )?,
            guard_findings: IntCounterVec::new(
                Opts::new(
                    "trigate_guardrail_findings_total",
                    "Guardrail findings acted on, by gate, phase (request or response), policy, detector, action, workload and destination.",
                ),
                GUARD_FINDING_LABELS,
            )?,
            cache_requests: IntCounterVec::new(
                Opts::new(
                    "trigate_llm_cache_requests_total",
                    "LLM answer cache lookups, by result (hit, miss, bypass), workload and destination.",
                ),
                &["result", "workload", "destination"],
            )?,
            cache_tokens_saved: IntCounterVec::new(
                Opts::new(
                    "trigate_llm_cache_tokens_saved_total",
                    "Tokens answers from the cache did not spend, by token type (input, output) and workload.",
                ),
                &["gen_ai_token_type", "workload"],
            )?,
            cache_cost_saved: CounterVec::new(
                Opts::new(
                    "trigate_llm_cache_cost_saved_usd_total",
                    "Spend answers from the cache did not cause, in USD, by workload.",
                ),
                &["workload"],
            )?,
            cache_embeddings: IntCounterVec::new(
                Opts::new(
                    "trigate_llm_cache_embeddings_total",
                    "Questions the semantic cache had a provider embed, by provider and result (ok, error).",
                ),
                &["provider", "result"],
            )?,
            series: Kept::default(),
        };
        registry.register(Box::new(m.token_usage.clone()))?;
        registry.register(Box::new(m.tokens.clone()))?;
        registry.register(Box::new(m.request_duration.clone()))?;
        registry.register(Box::new(m.time_to_first_token.clone()))?;
        registry.register(Box::new(m.time_per_output_token.clone()))?;
        registry.register(Box::new(m.cost_usd.clone()))?;
        registry.register(Box::new(m.failovers.clone()))?;
        registry.register(Box::new(m.limit_refusals.clone()))?;
        registry.register(Box::new(m.guard_findings.clone()))?;
        registry.register(Box::new(m.cache_requests.clone()))?;
        registry.register(Box::new(m.cache_tokens_saved.clone()))?;
        registry.register(Box::new(m.cache_cost_saved.clone()))?;
        registry.register(Box::new(m.cache_embeddings.clone()))?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_series_record_into_the_labelled_families() {
        let registry = Registry::new();
        let m = GenAiMetrics::new(&registry).unwrap();
        let labels = ["chat", "openai", "gpt-4o", "gpt-4o-mini", "pod-a", "llm"];
        let s = m.series(labels);
        assert!(Arc::ptr_eq(&s, &m.series(labels)), "made once");
        let other = m.series(["chat", "openai", "gpt-4o", "gpt-4o-mini", "pod-b", "llm"]);
        assert!(!Arc::ptr_eq(&s, &other));
        let elsewhere = m.series(["chat", "openai", "gpt-4o", "gpt-4o-mini", "pod-a", "proxy"]);
        assert!(!Arc::ptr_eq(&s, &elsewhere));
        elsewhere.handles.tokens[0].inc_by(5);
        s.handles.usage_input.observe(7.0);
        s.handles.tokens[3].inc_by(2);
        s.cost(&m).inc_by(0.5);
        assert_eq!(
            m.token_usage
                .with_label_values(&["input", "chat", "openai", "gpt-4o", "gpt-4o-mini", "pod-a"])
                .get_sample_sum(),
            7.0
        );
        assert_eq!(
            m.tokens
                .with_label_values(&[
                    "reasoning",
                    "chat",
                    "openai",
                    "gpt-4o",
                    "gpt-4o-mini",
                    "pod-a",
                    "llm"
                ])
                .get(),
            2
        );
        // Counted per destination; the histograms do not split by it.
        assert_eq!(
            m.tokens
                .with_label_values(&[
                    "input",
                    "chat",
                    "openai",
                    "gpt-4o",
                    "gpt-4o-mini",
                    "pod-a",
                    "proxy"
                ])
                .get(),
            5
        );
        assert_eq!(
            m.cost_usd
                .with_label_values(&["pod-a", "openai", "gpt-4o-mini", "llm"])
                .get(),
            0.5
        );
        // No time-to-first-token series until a stream records one.
        let families = registry.gather();
        let ttft = families
            .iter()
            .find(|f| f.name() == "gen_ai_server_time_to_first_token_seconds");
        assert!(ttft.is_none_or(|f| f.get_metric().is_empty()));
    }
}
