//! The `redis` backend: buckets in Redis, so every node takes from one
//! budget.
//!
//! One Lua script reads, refills and writes a bucket atomically, timed by
//! the Redis server's clock (`TIME`): nodes whose clocks disagree still
//! refill a shared bucket once. The bucket expires when it would be full
//! again, so idle keys cost Redis nothing.
//!
//! While Redis is down, requests do not queue behind it: once the
//! connection is gone, or after [`TRIP_AFTER`] failures in a row (a hung
//! server costs every request its whole timeout), requests are decided by
//! `fail_mode` at once and only one request per [`PROBE_EVERY`] goes to
//! Redis to find out whether it is back. A single slow answer does not trip
//! this: in fail-closed mode that would refuse everyone for a blip.
use std::borrow::Cow;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::bucket::{MAX_WAIT, TOKEN_EPSILON};
use super::{Decision, Failure, LimitError, Shape};

/// The same arithmetic as `bucket::take`, in microseconds; change both
/// together.
///
/// KEYS[1]: the bucket. ARGV: capacity, refill per second, longest wait
/// (µs), token slack. Returns {admitted (0|1), whole tokens left (at most
/// 2^53), µs until a token is there (when refused), µs until full}.
const SCRIPT: &str = r"
-- Before Redis 5 a script must ask for effects replication to write after
-- TIME; later versions always replicate effects and keep this as a no-op.
if redis.replicate_commands then redis.replicate_commands() end
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local max_us = tonumber(ARGV[3])
local eps = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
elseif now > ts then
  tokens = tokens + (now - ts) * rate / 1000000
  ts = now
end
-- A clock that went back (failover to another server) refills nothing and
-- keeps ts, so the interval is not refilled twice.
if tokens > capacity then tokens = capacity end
local function wait_us(need)
  if need <= 0 then return 0 end
  if rate <= 0 then return max_us end
  local us = math.ceil(need * 1000000 / rate)
  if us > max_us then return max_us end
  return us
end
local admitted = 0
local retry = 0
if tokens + eps >= 1 then
  tokens = math.max(0, tokens - 1)
  admitted = 1
elseif capacity < 1 then
  retry = max_us
else
  retry = math.max(1, wait_us(1 - eps - tokens))
  -- Rounding may leave the closed form a microsecond short.
  if retry < max_us and tokens + retry * rate / 1000000 + eps < 1 then
    retry = retry + 1
  end
end
local full = wait_us(capacity - tokens)
-- %.17g and %.0f keep every digit; Lua's own number-to-string keeps 14,
-- fewer than a microsecond timestamp has.
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'ts', string.format('%.0f', ts))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(full / 1000)))
return {admitted, math.floor(math.min(tokens, 9007199254740992)), retry, full}
";

/// While Redis is known down, at most one request this often asks it.
pub(super) const PROBE_EVERY: Duration = Duration::from_millis(200);

/// Timeouts or errors in a row after which Redis counts as down.
pub(super) const TRIP_AFTER: u32 = 3;

const UNREACHABLE: &str = "redis unreachable";

/// One connection attempt may take this long even when requests give up
/// sooner: reconnecting goes on in the background, and a Redis a few
/// milliseconds away must still be reachable with a small `timeout_ms`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) struct RedisBuckets {
    client: redis::Client,
    /// Made by the first request: creating it spawns a task, which needs the
    /// runtime, and `Limiter::new` may run outside one.
    connection: OnceCell<ConnectionManager>,
    script: redis::Script,
    timeout: Duration,
    /// For logs: the URL without its password.
    url: String,
    outage: Mutex<Option<Outage>>,
}

/// A run of failures, from the first until Redis answers again.
struct Outage {
    since: Instant,
    failures_in_a_row: u32,
    /// Set once Redis counts as down; until then every request still goes
    /// to Redis, from then on only one per probe interval.
    next_probe: Option<Instant>,
    reason: &'static str,
    /// Requests decided by `fail_mode` during the outage.
    decided: u64,
}

impl RedisBuckets {
    /// `ca`: PEM roots for a `rediss://` server (else the Mozilla roots).
    pub(super) fn new(
        url: &str,
        ca: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<RedisBuckets, LimitError> {
        let client = match ca {
            None => redis::Client::open(url),
            Some(pem) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            ),
        }
        .map_err(|source| LimitError::BadRedisUrl {
            url: redact(url),
            source,
        })?;
        Ok(RedisBuckets {
            client,
            connection: OnceCell::new(),
            script: redis::Script::new(SCRIPT),
            timeout,
            url: redact(url),
            outage: Mutex::new(None),
        })
    }

    pub(super) async fn take(
        &self,
        route: &str,
        limit: &str,
        key: &str,
        shape: Shape,
    ) -> Result<Decision, Failure> {
        if let Some(failure) = self.skip_during_outage() {
            return Err(failure);
        }
        let key = bucket_key(route, limit, key);
        let failure = match tokio::time::timeout(self.timeout, self.run(&key, shape)).await {
            Ok(Ok(reply)) => {
                self.answered();
                return Ok(reply.decision());
            }
            Ok(Err(e)) => Failure {
                reason: classify(&e),
                detail: format!("{}: {e}", self.url),
            },
            Err(_) => Failure {
                reason: "redis timeout",
                detail: format!(
                    "{}: no answer within {} ms",
                    self.url,
                    self.timeout.as_millis()
                ),
            },
        };
        self.failed(&failure);
        Err(failure)
    }

    async fn run(&self, key: &str, shape: Shape) -> redis::RedisResult<Reply> {
        let manager = self
            .connection
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT.max(self.timeout)))
                    .set_response_timeout(Some(self.timeout))
                    // A short chain of retries: the probes start a new one
                    // after it gives up, so a long one only delays noticing
                    // that Redis is back.
                    .set_number_of_retries(2)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await?;
        // A clone shares the one multiplexed connection.
        let mut connection = manager.clone();
        let (admitted, remaining, retry_us, full_us): (i64, i64, i64, i64) = self
            .script
            .key(key)
            // `{:e}`: the shortest exact form, which Lua's tonumber reads.
            .arg(format!("{:e}", shape.capacity))
            .arg(format!("{:e}", shape.refill_per_sec))
            .arg(MAX_WAIT.as_micros() as u64)
            .arg(format!("{TOKEN_EPSILON:e}"))
            // EVALSHA, then SCRIPT LOAD and EVALSHA again on NOSCRIPT (a
            // restarted or flushed Redis).
            .invoke_async(&mut connection)
            .await?;
        Ok(Reply {
            admitted: admitted == 1,
            remaining: u64::try_from(remaining).unwrap_or(0),
            retry_after: micros(retry_us),
            reset_after: micros(full_us),
        })
    }

    /// While Redis is known down, answers for it unless it is time to
    /// probe.
    fn skip_during_outage(&self) -> Option<Failure> {
        let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        let o = outage.as_mut()?;
        let next_probe = o.next_probe?;
        let now = Instant::now();
        if now >= next_probe {
            // This request probes; the others keep being answered until it
            // has an answer (or its timeout).
            o.next_probe = Some(now + PROBE_EVERY.max(self.timeout));
            return None;
        }
        o.decided += 1;
        Some(Failure {
            reason: o.reason,
            // The cause was logged when the outage began.
            detail: String::new(),
        })
    }

    fn failed(&self, failure: &Failure) {
        let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let o = match outage.as_mut() {
            Some(o) => {
                o.reason = failure.reason;
                o.failures_in_a_row += 1;
                o.decided += 1;
                tracing::debug!(backend = "redis", error = %failure.detail, "rate-limit backend still failing");
                o
            }
            None => {
                // Once per outage, not per request.
                tracing::warn!(
                    backend = "redis",
                    reason = failure.reason,
                    error = %failure.detail,
                    "rate-limit backend failing: requests are decided by rate_limits.fail_mode until it answers again"
                );
                outage.insert(Outage {
                    since: now,
                    failures_in_a_row: 1,
                    next_probe: None,
                    reason: failure.reason,
                    decided: 1,
                })
            }
        };
        // A lost connection is certain to fail the next request too (it waits
        // for the reconnect); timeouts may be a blip, so they must repeat.
        let down = failure.reason == UNREACHABLE || o.failures_in_a_row >= TRIP_AFTER;
        if down && o.next_probe.is_none() {
            o.next_probe = Some(now + PROBE_EVERY);
        }
    }

    fn answered(&self) {
        let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(o) = outage.take() {
            tracing::info!(
                backend = "redis",
                url = %self.url,
                down_for_ms = o.since.elapsed().as_millis() as u64,
                decided_by_fail_mode = o.decided,
                "rate-limit backend answers again"
            );
        }
    }

    #[cfg(test)]
    pub(super) fn in_outage(&self) -> bool {
        self.outage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

struct Reply {
    admitted: bool,
    remaining: u64,
    retry_after: Duration,
    reset_after: Duration,
}

impl Reply {
    fn decision(self) -> Decision {
        if self.admitted {
            Decision::Allowed {
                remaining: self.remaining,
                reset_after: self.reset_after,
            }
        } else {
            Decision::Limited {
                retry_after: self.retry_after.max(Duration::from_micros(1)),
            }
        }
    }
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0)).min(MAX_WAIT)
}

fn classify(e: &redis::RedisError) -> &'static str {
    if e.is_timeout() {
        "redis timeout"
    } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        UNREACHABLE
    } else {
        // Script errors, OOM, a read-only replica, a key of another type.
        "redis error"
    }
}

/// `trigate:rl:<route>:<limit>:<key>`. `%` and `:` in the route and limit
/// names are percent-escaped so that two different triples can never make
/// one key; the key is last and needs no escaping.
pub(super) fn bucket_key(route: &str, limit: &str, key: &str) -> String {
    format!("trigate:rl:{}:{}:{key}", escape(route), escape(limit))
}

fn escape(s: &str) -> Cow<'_, str> {
    if s.contains([':', '%']) {
        Cow::Owned(s.replace('%', "%25").replace(':', "%3A"))
    } else {
        Cow::Borrowed(s)
    }
}

/// The URL with the password (or the whole user part) replaced by `***`.
pub(super) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}
