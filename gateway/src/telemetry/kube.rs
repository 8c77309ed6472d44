//! Metrics of pod discovery (`discovery/kube.rs`).
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

pub struct KubeMetrics {
    /// Pods of this node the watcher knows, by state (`enrolled`,
    /// `pending` (to be enrolled, waiting for a retry), `not_running`,
    /// `opted_out`, `not_opted_in`, `host_network`).
    pub pods: IntGaugeVec,
    /// Failed enrollments by reason (`no_cgroup`, `no_netns`, `enroll`,
    /// `bad_object`).
    pub enroll_errors: IntCounterVec,
    /// Times the pod watch failed and was started again (API server down,
    /// stream cut, 410 Gone answered with a relist).
    pub watch_restarts: IntCounter,
    /// Full lists of this node's pods (the first one and every relist).
    pub relists: IntCounter,
    /// Lists and watches the API server did not start answering within
    /// `kubernetes.request_timeout_ms`, by `request` (`list`, `watch`).
    pub api_timeouts: IntCounterVec,
}

/// Every `state` value, so a state that has gone to zero is reset.
pub const POD_STATES: &[&str] = &[
    "enrolled",
    "pending",
    "not_running",
    "opted_out",
    "not_opted_in",
    "host_network",
];

impl KubeMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<KubeMetrics> {
        let m = KubeMetrics {
            pods: IntGaugeVec::new(
                Opts::new(
                    "trigate_kube_pods",
                    "Pods on this node seen through the Kubernetes API, by state.",
                ),
                &["state"],
            )?,
            enroll_errors: IntCounterVec::new(
                Opts::new(
                    "trigate_kube_enroll_errors_total",
                    "Pods that could not be enrolled (retried with backoff), by reason.",
                ),
                &["reason"],
            )?,
            watch_restarts: IntCounter::new(
                "trigate_kube_watch_restarts_total",
                "Times the pod watch failed and was restarted.",
            )?,
            relists: IntCounter::new(
                "trigate_kube_relists_total",
                "Full lists of this node's pods (the first and every resync).",
            )?,
            api_timeouts: IntCounterVec::new(
                Opts::new(
                    "trigate_kube_api_timeouts_total",
                    "Kubernetes API lists and watches not answered within kubernetes.request_timeout_ms, by request.",
                ),
                &["request"],
            )?,
        };
        registry.register(Box::new(m.pods.clone()))?;
        registry.register(Box::new(m.enroll_errors.clone()))?;
        registry.register(Box::new(m.watch_restarts.clone()))?;
        registry.register(Box::new(m.relists.clone()))?;
        registry.register(Box::new(m.api_timeouts.clone()))?;
        for s in POD_STATES {
            m.pods.with_label_values(&[s]).set(0);
        }
        for r in ["list", "watch"] {
            m.api_timeouts.with_label_values(&[r]).reset();
        }
        Ok(m)
    }
}
