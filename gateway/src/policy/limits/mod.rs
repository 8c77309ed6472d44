//! Rate limits: one token bucket per (route, limit, key).
//!
//! A bucket holds up to `burst` tokens (default `requests`) and refills at
//! `requests / per_secs` tokens a second; a request takes one. Buckets live
//! in this node's memory (`local`: each node has the whole budget) or in
//! Redis (`redis`: every node shares one budget, refilled by the Redis
//! server's clock). When the backend cannot answer, `fail_mode` decides.
//!
//! A request may take more than one token ([`Limiter::take`], e.g. the
//! tokens an LLM call is estimated to use) and settle the difference once
//! the real use is known ([`Limiter::adjust`]); a charge after the fact may
//! leave the bucket in debt, which refills before anything is admitted
//! again.
//!
//! Spend budgets ([`Limiter::budget_check`], [`Limiter::budget_spend`]) are
//! counters of micro-USD per UTC day or month, kept by the same backend and
//! under the same `fail_mode`; see `budget`.
//!
//! The caller builds the key (`workload=pod-a`); this module does not know
//! what it means, only that equal keys share a bucket.
mod bucket;
mod budget;
mod local;
pub(crate) mod redis_backend;
#[cfg(test)]
mod redis_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{FailMode, LimitBackendKind, RateLimit, RateLimitBackend};

pub use bucket::{adjust, take, take_cost, time_to_refill, Bucket};
pub use budget::{window_bounds, BudgetWindow};

use budget::LocalBudgets;
use local::LocalBuckets;
use redis_backend::RedisBuckets;

/// What a limit says about one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Admitted; `remaining` whole tokens left, `reset_after` until the
    /// bucket is full again.
    Allowed {
        remaining: u64,
        reset_after: Duration,
    },
    /// Refused; what was asked for is there again after `retry_after`
    /// (never zero, so it rounds up to at least 1 s for `Retry-After`). A
    /// cost larger than the bucket is never there: it is refused with the
    /// time the bucket takes to fill from empty. A spent budget: until its
    /// window ends.
    Limited { retry_after: Duration },
    /// The backend failed and `fail_mode` decided (open: admitted, closed:
    /// refused). `reason` is one of a few fixed phrases, fit for a metric
    /// label; the details are in the backend's warning log.
    BackendDown { admitted: bool, reason: String },
}

impl Decision {
    /// Whether the request may go on.
    pub fn admitted(&self) -> bool {
        match self {
            Decision::Allowed { .. } => true,
            Decision::Limited { .. } => false,
            Decision::BackendDown { admitted, .. } => *admitted,
        }
    }
}

/// Why a [`Limiter`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("rate_limits.redis_url is required when rate_limits.backend is redis")]
    MissingRedisUrl,
    #[error(
        "rate_limits.redis_url {url:?} is not usable: {source}; expected \
         redis://[user:password@]host:port[/db] or rediss://… for TLS"
    )]
    BadRedisUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        #[source]
        source: ::redis::RedisError,
    },
    #[error("rate_limits.redis_ca_file {path}: {source}")]
    RedisCa {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("rate_limits.redis_ca_file is set but rate_limits.redis_url is not rediss://")]
    CaWithoutTls,
}

/// Takes tokens for requests, from the configured backend.
pub struct Limiter {
    store: Store,
    fail_open: bool,
}

enum Store {
    // Boxed like Redis: one allocation per limiter, and the enum stays
    // small.
    Local(Box<LocalStore>),
    // Boxed: the Redis client is large and a local limiter need not carry it.
    Redis(Box<RedisBuckets>),
}

impl Limiter {
    /// Builds the backend. Redis is not contacted here: the connection is
    /// made by the first request and remade whenever it breaks, so a gateway
    /// starts (and reloads) while Redis is down.
    pub fn new(cfg: &RateLimitBackend) -> Result<Arc<Limiter>, LimitError> {
        let store = match cfg.backend {
            LimitBackendKind::Local => Store::Local(Box::new(LocalStore {
                buckets: LocalBuckets::new(local::MAX_BUCKETS),
                budgets: LocalBudgets::new(budget::MAX_BUDGETS),
            })),
            LimitBackendKind::Redis => {
                let url = cfg
                    .redis_url
                    .as_deref()
                    .ok_or(LimitError::MissingRedisUrl)?;
                // 0 would fail every request; validation refuses it anyway.
                let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
                let ca = match &cfg.redis_ca_file {
                    None => None,
                    Some(_) if !url.starts_with("rediss://") => {
                        return Err(LimitError::CaWithoutTls)
                    }
                    Some(path) => {
                        Some(std::fs::read(path).map_err(|source| LimitError::RedisCa {
                            path: path.clone(),
                            source,
                        })?)
                    }
                };
                Store::Redis(Box::new(RedisBuckets::new(url, ca, timeout)?))
            }
        };
        Ok(Arc::new(Limiter {
            store,
            fail_open: cfg.fail_mode == FailMode::Open,
        }))
    }

    /// Takes one token from the bucket of (`route`, `limit.name`, `key`).
    /// Never waits longer than the backend's `timeout_ms` for Redis.
    pub async fn check(&self, route: &str, limit: &RateLimit, key: &str) -> Decision {
        self.take(route, limit, key, 1).await
    }

    /// Takes `cost` tokens at once from the bucket of (`scope`,
    /// `limit.name`, `key`): all of them or none. A cost larger than the
    /// bucket (`burst`, default `requests`) can never be admitted and is
    /// [`Decision::Limited`] with the time the bucket takes to fill from
    /// empty. A cost of 0 is admitted unless the bucket is in debt.
    pub async fn take(&self, scope: &str, limit: &RateLimit, key: &str, cost: u64) -> Decision {
        let shape = Shape::of(limit);
        let outcome = match &self.store {
            Store::Local(local) => {
                local
                    .buckets
                    .take(scope, &limit.name, key, shape, cost, Instant::now())
            }
            Store::Redis(redis) => redis.take(scope, &limit.name, key, shape, cost).await,
        };
        self.decided(outcome)
    }

    /// Settles a [`take`](Self::take) once the real use is known: a
    /// positive `delta` takes that many more tokens and may leave the
    /// bucket in debt (below zero), which refills at the usual rate before
    /// the next `take` is admitted; a negative one refunds, at most up to a
    /// full bucket. Never refuses.
    ///
    /// `None` when recorded; `Some(reason)` when the backend failed and the
    /// adjustment is lost, with the reason phrase of
    /// [`Decision::BackendDown`] (the details are in the backend's log).
    pub async fn adjust(
        &self,
        scope: &str,
        limit: &RateLimit,
        key: &str,
        delta: i64,
    ) -> Option<&'static str> {
        if delta == 0 {
            return None;
        }
        let shape = Shape::of(limit);
        let outcome = match &self.store {
            Store::Local(local) => {
                local
                    .buckets
                    .adjust(scope, &limit.name, key, shape, delta, Instant::now())
            }
            Store::Redis(redis) => redis.adjust(scope, &limit.name, key, shape, delta).await,
        };
        outcome.err().map(|f| f.reason)
    }

    /// Whether the spend budget (`scope`, `name`, `key`) has money left in
    /// the `window` that `now` falls in: [`Decision::Allowed`] while less
    /// than `limit_micros` (micro-USD) is spent, with what is left and the
    /// time until the window ends; otherwise [`Decision::Limited`] until the
    /// window ends (the next 00:00 UTC, or the 1st of next month 00:00 UTC).
    ///
    /// Spend is recorded afterwards ([`budget_spend`](Self::budget_spend)),
    /// so concurrent calls admitted at once may together overspend by what
    /// they cost; a budget is a ceiling on what is started, not a hold.
    pub async fn budget_check(
        &self,
        scope: &str,
        name: &str,
        key: &str,
        window: BudgetWindow,
        limit_micros: u64,
        now: SystemTime,
    ) -> Decision {
        let outcome = match &self.store {
            Store::Local(local) => local
                .budgets
                .check(scope, name, key, window, limit_micros, now),
            Store::Redis(redis) => {
                redis
                    .budget_check(scope, name, key, window, limit_micros, now)
                    .await
            }
        };
        self.decided(outcome)
    }

    /// Adds `micros` (micro-USD) to the spend budget (`scope`, `name`,
    /// `key`) in the `window` that `now` falls in. `None` when recorded;
    /// `Some(reason)` as for [`adjust`](Self::adjust).
    pub async fn budget_spend(
        &self,
        scope: &str,
        name: &str,
        key: &str,
        window: BudgetWindow,
        micros: u64,
        now: SystemTime,
    ) -> Option<&'static str> {
        if micros == 0 {
            return None;
        }
        let outcome = match &self.store {
            Store::Local(local) => local.budgets.spend(scope, name, key, window, micros, now),
            Store::Redis(redis) => {
                redis
                    .budget_spend(scope, name, key, window, micros, now)
                    .await
            }
        };
        outcome.err().map(|f| f.reason)
    }

    fn decided(&self, outcome: Result<Decision, Failure>) -> Decision {
        outcome.unwrap_or_else(|failure| Decision::BackendDown {
            admitted: self.fail_open,
            reason: failure.reason.to_string(),
        })
    }

    /// `local` or `redis`, for logs and metrics.
    pub fn backend_name(&self) -> &'static str {
        match self.store {
            Store::Local(..) => "local",
            Store::Redis(_) => "redis",
        }
    }
}

/// The `local` backend's tables.
struct LocalStore {
    buckets: LocalBuckets,
    budgets: LocalBudgets,
}

/// A limit's bucket in numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Shape {
    capacity: f64,
    refill_per_sec: f64,
}

impl Shape {
    fn of(limit: &RateLimit) -> Shape {
        Shape {
            capacity: limit.burst.unwrap_or(limit.requests) as f64,
            // Validation refuses per_secs 0; an unvalidated 0 counts as 1
            // rather than an infinite rate.
            refill_per_sec: limit.requests as f64 / limit.per_secs.max(1) as f64,
        }
    }
}

/// A backend that could not decide.
#[derive(Debug)]
struct Failure {
    /// Fixed phrase for [`Decision::BackendDown`].
    reason: &'static str,
    /// What went wrong, for the backend's log (empty where the backend has
    /// logged it already).
    detail: String,
}
