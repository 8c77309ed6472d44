//! Rate limits: one token bucket per (route, limit, key).
//!
//! A bucket holds up to `burst` tokens (default `requests`) and refills at
//! `requests / per_secs` tokens a second; a request takes one. Buckets live
//! in this node's memory (`local`: each node has the whole budget) or in
//! Redis (`redis`: every node shares one budget, refilled by the Redis
//! server's clock). When the backend cannot answer, `fail_mode` decides.
//!
//! The caller builds the key (`workload=pod-a`); this module does not know
//! what it means, only that equal keys share a bucket.
mod bucket;
mod local;
mod redis_backend;
#[cfg(test)]
mod redis_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{FailMode, LimitBackendKind, RateLimit, RateLimitBackend};

pub use bucket::{take, time_to_refill, Bucket};

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
    /// Refused; a token is there again after `retry_after` (never zero, so
    /// it rounds up to at least 1 s for `Retry-After`).
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
    Local(LocalBuckets),
    // Boxed: the Redis client is large and a local limiter need not carry it.
    Redis(Box<RedisBuckets>),
}

impl Limiter {
    /// Builds the backend. Redis is not contacted here: the connection is
    /// made by the first request and remade whenever it breaks, so a gateway
    /// starts (and reloads) while Redis is down.
    pub fn new(cfg: &RateLimitBackend) -> Result<Arc<Limiter>, LimitError> {
        let store = match cfg.backend {
            LimitBackendKind::Local => Store::Local(LocalBuckets::new(local::MAX_BUCKETS)),
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
        let shape = Shape::of(limit);
        let outcome = match &self.store {
            Store::Local(buckets) => buckets.take(route, &limit.name, key, shape, Instant::now()),
            Store::Redis(redis) => redis.take(route, &limit.name, key, shape).await,
        };
        outcome.unwrap_or_else(|failure| Decision::BackendDown {
            admitted: self.fail_open,
            reason: failure.reason.to_string(),
        })
    }

    /// `local` or `redis`, for logs and metrics.
    pub fn backend_name(&self) -> &'static str {
        match self.store {
            Store::Local(_) => "local",
            Store::Redis(_) => "redis",
        }
    }
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
