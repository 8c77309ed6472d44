//! Accounting once a call's usage is known: GenAI metrics, cost from the
//! price table, and the limits charged with what was really used (taken
//! up front from the estimate, settled here with the difference).
use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use super::{usage::Usage, LlmPolicy};
use crate::policy::limits::{BudgetWindow, Limiter};

/// Which limits of the policy apply to this workload, and what was taken
/// from them before the call (settled after it).
#[derive(Default)]
pub(super) struct Charges {
    pub(super) limits: Vec<usize>,
    pub(super) estimated_input: u64,
}

/// Everything accounting needs once the usage is known.
pub(super) struct Settle {
    pub(super) node: Arc<crate::daemon::Node>,
    pub(super) llm: Arc<LlmPolicy>,
    pub(super) limiter: Arc<Limiter>,
    pub(super) workload: String,
    /// The destination the pod called (tokens and spend are counted by it).
    pub(super) destination: std::sync::Arc<str>,
    pub(super) operation: &'static str,
    /// The provider kind, as `gen_ai_provider_name`.
    pub(super) provider: &'static str,
    pub(super) provider_name: String,
    pub(super) requested: String,
    pub(super) served: String,
    pub(super) charges: Charges,
    pub(super) started: Instant,
}

impl Settle {
    /// Records metrics and charges the limits; returns the cost.
    pub(super) fn settle(
        self,
        usage: Option<Usage>,
        ttft: Option<Duration>,
        stream_end: Option<Instant>,
    ) -> Option<u64> {
        let m = &self.node.metrics.genai;
        let series = m.series([
            self.operation,
            self.provider,
            self.requested.as_str(),
            self.served.as_str(),
            self.workload.as_str(),
            &self.destination,
        ]);
        series
            .handles
            .duration
            .observe(self.started.elapsed().as_secs_f64());
        if let Some(t) = ttft {
            series.time_to_first_token(m).observe(t.as_secs_f64());
        }
        let usage = usage.unwrap_or_default();
        if let (Some(t), Some(end)) = (ttft, stream_end) {
            if usage.output > 1 {
                let after_first = end.duration_since(self.started).saturating_sub(t);
                series
                    .time_per_output_token(m)
                    .observe(after_first.as_secs_f64() / (usage.output - 1) as f64);
            }
        }
        series.handles.usage_input.observe(usage.input as f64);
        series.handles.usage_output.observe(usage.output as f64);
        for (counter, n) in series.handles.tokens.iter().zip([
            usage.input,
            usage.output,
            usage.cached_input,
            usage.reasoning,
        ]) {
            counter.inc_by(n);
        }
        let cost = self.llm.prices.cost_micros(&self.served, &usage);
        if let Some(c) = cost {
            series.cost(m).inc_by(c as f64 / 1e6);
        }
        self.charge(usage, cost);
        cost
    }

    /// The difference between what was taken up front and what was used,
    /// and the spend; in the background (a Redis round trip must not hold
    /// the answer).
    fn charge(self, usage: Usage, cost: Option<u64>) {
        if self.charges.limits.is_empty() {
            return;
        }
        let limiter = Arc::clone(&self.limiter);
        let llm = Arc::clone(&self.llm);
        let key = self.workload;
        let charges = self.charges;
        tokio::spawn(async move {
            let now = SystemTime::now();
            for &i in &charges.limits {
                let limit = &llm.limits[i];
                if let Some(b) = &limit.input_tokens {
                    let taken = charges.estimated_input.max(1);
                    let delta = i64::try_from(usage.input).unwrap_or(i64::MAX)
                        - i64::try_from(taken).unwrap_or(i64::MAX);
                    if delta != 0 {
                        limiter.adjust("llm", b, &key, delta).await;
                    }
                }
                if let Some(b) = &limit.output_tokens {
                    let delta = i64::try_from(usage.output).unwrap_or(i64::MAX) - 1;
                    if delta != 0 {
                        limiter.adjust("llm", b, &key, delta).await;
                    }
                }
                if let Some(c) = cost.filter(|c| *c > 0) {
                    for (usd, window) in [
                        (limit.cfg.cost_per_day_usd, BudgetWindow::Day),
                        (limit.cfg.cost_per_month_usd, BudgetWindow::Month),
                    ] {
                        if usd.is_some() {
                            limiter
                                .budget_spend("llm", &limit.cfg.name, &key, window, c, now)
                                .await;
                        }
                    }
                }
            }
        });
    }

    /// Nothing was served: the tokens taken up front go back.
    pub(super) fn refund(&self) {
        settle_refund(&self.limiter, &self.llm, &self.charges, &self.workload);
    }
}

pub(super) fn settle_refund(
    limiter: &Arc<Limiter>,
    llm: &Arc<LlmPolicy>,
    charges: &Charges,
    key: &str,
) {
    if charges.limits.is_empty() {
        return;
    }
    let limiter = Arc::clone(limiter);
    let llm = Arc::clone(llm);
    let key = key.to_owned();
    let limits = charges.limits.clone();
    let taken = charges.estimated_input.max(1);
    tokio::spawn(async move {
        for i in limits {
            let limit = &llm.limits[i];
            if let Some(b) = &limit.input_tokens {
                limiter
                    .adjust("llm", b, &key, -i64::try_from(taken).unwrap_or(i64::MAX))
                    .await;
            }
            if let Some(b) = &limit.output_tokens {
                limiter.adjust("llm", b, &key, -1).await;
            }
        }
    });
}
