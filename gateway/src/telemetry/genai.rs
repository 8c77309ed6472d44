//! The LLM gate's metrics, named after the OpenTelemetry GenAI semantic
//! conventions (`gen_ai.client.token.usage` → `gen_ai_client_token_usage`,
//! durations in seconds with the unit in the name, as Prometheus wants),
//! plus trigate's own cost, failover and limit counters.
use prometheus::{CounterVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Label order of the per-call families.
pub const CALL_LABELS: &[&str] = &[
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "workload",
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
}

impl GenAiMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<GenAiMetrics> {
        let mut usage_labels = vec!["gen_ai_token_type"];
        usage_labels.extend_from_slice(CALL_LABELS);
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
                    "Tokens by type: input, output, cached_input, reasoning.",
                ),
                &usage_labels,
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
                    "Spend in USD from the price table, by workload, provider and served model.",
                ),
                &["workload", "gen_ai_provider_name", "gen_ai_response_model"],
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
        };
        registry.register(Box::new(m.token_usage.clone()))?;
        registry.register(Box::new(m.tokens.clone()))?;
        registry.register(Box::new(m.request_duration.clone()))?;
        registry.register(Box::new(m.time_to_first_token.clone()))?;
        registry.register(Box::new(m.time_per_output_token.clone()))?;
        registry.register(Box::new(m.cost_usd.clone()))?;
        registry.register(Box::new(m.failovers.clone()))?;
        registry.register(Box::new(m.limit_refusals.clone()))?;
        Ok(m)
    }
}
