//! Metrics, logs and the access log. Metric families are named once here
//! and registered on a registry the caller passes in.
pub mod access;
pub mod genai;
pub mod guard;
pub mod kept;
pub mod kube;
pub mod logging;
pub mod mcp;
pub mod trace;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use gateway_common::{
    OUTCOME_BYPASSED, OUTCOME_DENIED, OUTCOME_NO_LISTENER, OUTCOME_OBSERVED, OUTCOME_REDIRECTED,
    OUTCOME_REFUSED,
};

pub struct Metrics {
    pub registry: Registry,
    pub connections: IntCounterVec,
    pub connection_bytes: IntCounterVec,
    pub connections_active: IntGaugeVec,
    pub connection_duration: HistogramVec,
    pub ebpf_connects: IntCounterVec,
    pub workloads_enrolled: IntGauge,
    pub destination_addresses: IntGaugeVec,
    pub dns_failures: IntCounterVec,
    pub heartbeat: IntGauge,
    pub origdst_lookup_seconds: Histogram,
    pub config_last_reload_success: IntGauge,
    pub config_last_reload_timestamp: IntGauge,
    pub config_reloads: IntCounterVec,
    pub tls_handshakes: IntCounterVec,
    pub tls_leaf_certificates: IntGauge,
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub http_retries: IntCounterVec,
    pub rate_limit_decisions: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub cluster_ejected: IntGaugeVec,
    pub http_connection_errors: IntCounterVec,
    pub genai: genai::GenAiMetrics,
    pub mcp: mcp::McpMetrics,
    pub kube: kube::KubeMetrics,
}

impl Metrics {
    pub fn new(registry: Registry) -> prometheus::Result<Self> {
        let build = IntGaugeVec::new(
            Opts::new("trigate_build_info", "Build of the running daemon."),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(build))?;
        let m = Metrics {
            connections: IntCounterVec::new(
                Opts::new(
                    "trigate_connections_total",
                    "Proxied connections by outcome.",
                ),
                &["workload", "destination", "outcome"],
            )?,
            connection_bytes: IntCounterVec::new(
                Opts::new(
                    "trigate_connection_bytes_total",
                    "Bytes proxied; sent is client to upstream.",
                ),
                &["workload", "destination", "direction"],
            )?,
            connections_active: IntGaugeVec::new(
                Opts::new(
                    "trigate_connections_active",
                    "Connections being proxied now.",
                ),
                &["workload"],
            )?,
            connection_duration: HistogramVec::new(
                HistogramOpts::new(
                    "trigate_connection_duration_seconds",
                    "Lifetime of proxied connections.",
                )
                .buckets(vec![
                    0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0,
                ]),
                &["workload", "destination"],
            )?,
            ebpf_connects: IntCounterVec::new(
                Opts::new(
                    "trigate_ebpf_connects_total",
                    "connect() calls the eBPF programs acted on, by outcome.",
                ),
                &["workload", "destination", "outcome"],
            )?,
            workloads_enrolled: IntGauge::new("trigate_workloads_enrolled", "Enrolled workloads.")?,
            destination_addresses: IntGaugeVec::new(
                Opts::new(
                    "trigate_destination_addresses",
                    "Networks installed for a destination.",
                ),
                &["destination"],
            )?,
            dns_failures: IntCounterVec::new(
                Opts::new(
                    "trigate_dns_failures_total",
                    "Failed resolutions of destination host names.",
                ),
                &["host"],
            )?,
            heartbeat: IntGauge::new(
                "trigate_heartbeat_timestamp_seconds",
                "Wall-clock time of the last heartbeat written to the eBPF programs.",
            )?,
            origdst_lookup_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "trigate_original_destination_lookup_seconds",
                    "Time to find the original destination of an accepted connection.",
                )
                .buckets(vec![
                    0.000_002, 0.000_005, 0.000_01, 0.000_02, 0.000_05, 0.000_1, 0.001,
                ]),
            )?,
            config_last_reload_success: IntGauge::new(
                "trigate_config_last_reload_success",
                "1 when the last config reload applied (or none happened yet), 0 when it failed.",
            )?,
            config_last_reload_timestamp: IntGauge::new(
                "trigate_config_last_reload_timestamp_seconds",
                "When the config file last changed and was reloaded (or rejected).",
            )?,
            config_reloads: IntCounterVec::new(
                Opts::new("trigate_config_reloads_total", "Config reloads by result."),
                &["result"],
            )?,
            tls_handshakes: IntCounterVec::new(
                Opts::new(
                    "trigate_tls_handshakes_total",
                    "TLS handshakes by destination mode, side (client or upstream) and result.",
                ),
                &["mode", "side", "result"],
            )?,
            tls_leaf_certificates: IntGauge::new(
                "trigate_tls_leaf_certificates",
                "Leaf certificates minted from the node CA and held in the cache.",
            )?,
            http_requests: IntCounterVec::new(
                Opts::new(
                    "trigate_http_requests_total",
                    "HTTP requests by gate, destination, route, workload and status code.",
                ),
                &["gate", "destination", "route", "workload", "status"],
            )?,
            http_request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "trigate_http_request_duration_seconds",
                    "HTTP request latency, until the response body ended.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0,
                ]),
                &["gate", "route"],
            )?,
            http_retries: IntCounterVec::new(
                Opts::new("trigate_http_retries_total", "Upstream retries by route."),
                &["route"],
            )?,
            rate_limit_decisions: IntCounterVec::new(
                Opts::new(
                    "trigate_rate_limit_decisions_total",
                    "Rate-limit decisions by route, limit and decision.",
                ),
                &["route", "limit", "decision"],
            )?,
            upstream_errors: IntCounterVec::new(
                Opts::new(
                    "trigate_upstream_errors_total",
                    "Requests that got no upstream response, by gate, route and kind.",
                ),
                &["gate", "route", "kind"],
            )?,
            cluster_ejected: IntGaugeVec::new(
                Opts::new(
                    "trigate_cluster_endpoints_ejected",
                    "Cluster endpoints sitting out after consecutive failures.",
                ),
                &["cluster"],
            )?,
            http_connection_errors: IntCounterVec::new(
                Opts::new(
                    "trigate_http_connection_errors_total",
                    "Client connections of an HTTP gate that ended in a protocol error or timeout (malformed or oversized requests, silent clients).",
                ),
                &["gate"],
            )?,
            genai: genai::GenAiMetrics::new(&registry)?,
            mcp: mcp::McpMetrics::new(&registry)?,
            kube: kube::KubeMetrics::new(&registry)?,
            registry,
        };
        m.config_last_reload_success.set(1);
        m.registry.register(Box::new(m.connections.clone()))?;
        m.registry.register(Box::new(m.connection_bytes.clone()))?;
        m.registry
            .register(Box::new(m.connections_active.clone()))?;
        m.registry
            .register(Box::new(m.connection_duration.clone()))?;
        m.registry.register(Box::new(m.ebpf_connects.clone()))?;
        m.registry
            .register(Box::new(m.workloads_enrolled.clone()))?;
        m.registry
            .register(Box::new(m.destination_addresses.clone()))?;
        m.registry.register(Box::new(m.dns_failures.clone()))?;
        m.registry.register(Box::new(m.heartbeat.clone()))?;
        m.registry
            .register(Box::new(m.origdst_lookup_seconds.clone()))?;
        m.registry
            .register(Box::new(m.config_last_reload_success.clone()))?;
        m.registry
            .register(Box::new(m.config_last_reload_timestamp.clone()))?;
        m.registry.register(Box::new(m.config_reloads.clone()))?;
        m.registry.register(Box::new(m.tls_handshakes.clone()))?;
        m.registry.register(Box::new(m.http_requests.clone()))?;
        m.registry
            .register(Box::new(m.http_request_duration.clone()))?;
        m.registry.register(Box::new(m.http_retries.clone()))?;
        m.registry.register(Box::new(m.upstream_errors.clone()))?;
        m.registry.register(Box::new(m.cluster_ejected.clone()))?;
        m.registry
            .register(Box::new(m.http_connection_errors.clone()))?;
        m.registry
            .register(Box::new(m.rate_limit_decisions.clone()))?;
        m.registry
            .register(Box::new(m.tls_leaf_certificates.clone()))?;
        Ok(m)
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
    }
}

/// Metric label of a kernel counter outcome.
pub fn ebpf_outcome_label(outcome: u32) -> &'static str {
    match outcome {
        OUTCOME_REDIRECTED => "redirected",
        OUTCOME_DENIED => "denied",
        OUTCOME_OBSERVED => "observed",
        OUTCOME_BYPASSED => "bypassed",
        OUTCOME_REFUSED => "refused",
        OUTCOME_NO_LISTENER => "no_listener",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_outcome_has_a_label() {
        let labels: Vec<_> = (1..=6).map(ebpf_outcome_label).collect();
        assert_eq!(
            labels,
            [
                "redirected",
                "denied",
                "observed",
                "bypassed",
                "refused",
                "no_listener"
            ]
        );
        assert_eq!(ebpf_outcome_label(99), "unknown");
    }

    #[test]
    fn families_register_once_and_render() {
        let m = Metrics::new(Registry::new()).unwrap();
        m.connections.with_label_values(&["w", "d", "ok"]).inc();
        let text = m.render();
        assert!(text.contains("trigate_build_info{version="), "{text}");
        assert!(
            text.contains(
                r#"trigate_connections_total{destination="d",outcome="ok",workload="w"} 1"#
            ),
            "{text}"
        );
    }
}
