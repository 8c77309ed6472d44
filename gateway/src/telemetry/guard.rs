//! Where guardrail findings go: one metric increment and one audit line
//! per finding a rule acted on, for every gate.
use std::sync::Arc;

use prometheus::IntCounterVec;

use crate::policy::guardrail::Hit;

/// The findings counter (`trigate_guardrail_findings_total`) and the
/// labels every finding of one request shares.
#[derive(Clone)]
pub struct Audit {
    pub findings: IntCounterVec,
    /// The gate's label (`llm`, `api`).
    pub gate: &'static str,
    pub workload: Arc<str>,
    /// The destination the pod called.
    pub destination: Arc<str>,
}

impl Audit {
    /// One metric increment and one audit line per finding acted on. The
    /// line names the detector and rule, never the text.
    pub fn record(&self, hits: Vec<Hit>) {
        for h in hits {
            self.findings
                .with_label_values(&[
                    self.gate,
                    h.phase.as_str(),
                    &h.policy,
                    &h.detector,
                    h.action.as_str(),
                    &self.workload,
                    &self.destination,
                ])
                .inc();
            tracing::info!(
                target: "trigate::guard",
                gate = self.gate,
                workload = &*self.workload,
                destination = &*self.destination,
                phase = h.phase.as_str(),
                policy = &*h.policy,
                detector = h.detector.as_str(),
                rule = &*h.rule,
                action = h.action.as_str(),
                "guardrail finding"
            );
        }
    }
}
