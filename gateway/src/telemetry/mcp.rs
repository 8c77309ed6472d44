//! The MCP gate's metrics and its audit line, one per JSON-RPC call.
use std::time::Duration;

use super::kept::Kept;
use super::logging::{AccessLine, Val};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Metric families of the MCP gate, named as the issue that asked for
/// them names them (no `trigate_` prefix), like the `gen_ai_*` ones.
pub struct McpMetrics {
    /// Calls by method, tool (or resource, prompt), server and decision.
    pub requests: IntCounterVec,
    /// From the call reaching the gateway to its answer.
    pub duration: HistogramVec,
    /// Sessions (`Mcp-Session-Id`) seen and not ended or idle for an hour.
    pub sessions: IntGauge,
    /// `requests` and `duration` of each (method, tool, server, decision,
    /// workload): per call one lookup instead of two label lookups.
    kept: Kept<5, (IntCounter, Histogram)>,
}

impl McpMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<McpMetrics> {
        let m = McpMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "mcp_requests_total",
                    "MCP JSON-RPC calls, by method, tool (or resource or prompt), server, decision (allowed, denied) and workload.",
                ),
                &["method", "tool", "server", "decision", "workload"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "mcp_request_duration_seconds",
                    "MCP JSON-RPC calls from request to answer, by method and server.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ]),
                &["method", "server"],
            )?,
            sessions: IntGauge::new(
                "mcp_sessions_active",
                "MCP sessions this node has seen that were not ended (DELETE) or idle for an hour.",
            )?,
            kept: Kept::default(),
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.sessions.clone()))?;
        Ok(m)
    }
}

/// One audited call.
pub struct CallRecord<'a> {
    pub workload: &'a str,
    pub session: &'a str,
    pub server: &'a str,
    pub method: &'a str,
    /// `tool`, `resource` or `prompt`, and its name.
    pub target: Option<(&'a str, &'a str)>,
    pub args_hash: Option<&'a str>,
    /// `allowed` or `denied`.
    pub decision: &'static str,
    /// The refusing policy.
    pub policy: Option<&'a str>,
    /// `ok`, `tool_error`, `error <code>`, `denied`, `no_answer`.
    pub status: &'a str,
    /// Items a listing hid.
    pub hidden: usize,
    pub elapsed: Duration,
}

impl McpMetrics {
    /// The metrics and the audit line (`target: trigate::mcp`) of a call.
    pub fn record(&self, c: &CallRecord<'_>) {
        let name = c.target.map_or("", |(_, n)| n);
        let series = self
            .kept
            .get([c.method, name, c.server, c.decision, c.workload], || {
                (
                    self.requests
                        .with_label_values(&[c.method, name, c.server, c.decision, c.workload]),
                    self.duration.with_label_values(&[c.method, c.server]),
                )
            });
        let (calls, duration) = &series.handles;
        calls.inc();
        duration.observe(c.elapsed.as_secs_f64());
        // Written like the access log, not through `tracing::info!`: one
        // line per call, and tracing's JSON formatter was about a sixth of
        // the gateway's CPU per call in `cargo xtask bench mcp` profiles.
        let Some(mut line) = AccessLine::mcp("mcp call") else {
            return;
        };
        line.field("workload", c.workload)
            .field("session", c.session)
            .field("server", c.server)
            .field("method", c.method)
            .field("item", c.target.map(|(k, _)| k))
            .field("name", c.target.map(|(_, n)| n))
            .field("args_sha256", c.args_hash)
            .field("decision", c.decision)
            .field("policy", c.policy)
            .field("status", c.status)
            .field("hidden", c.hidden as u64)
            .field("latency_ms", Val::millis(c.elapsed));
        line.write();
    }
}
