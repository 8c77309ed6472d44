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
use std::time::{Duration, Instant, SystemTime};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::bucket::{MAX_WAIT, TOKEN_EPSILON};
use super::budget::{self, window_bounds, BudgetWindow};
use super::{Decision, Failure, LimitError, Shape};

/// The same arithmetic as `bucket::take_cost` and `bucket::adjust`, in
/// microseconds; change both together.
///
/// KEYS[1]: the bucket. ARGV: capacity, refill per second, longest wait
/// (µs), token slack, cost (the tokens to take, or for `adjust` the tokens
/// to charge, negative to refund), `take` or `adjust`. Returns {admitted
/// (0|1; 1 for adjust), whole tokens left (at most 2^53, at least 0), µs
/// until the cost is there (when refused), µs until full}.
const SCRIPT: &str = r"
-- Before Redis 5 a script must ask for effects replication to write after
-- TIME; later versions always replicate effects and keep this as a no-op.
if redis.replicate_commands then redis.replicate_commands() end
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local max_us = tonumber(ARGV[3])
local eps = tonumber(ARGV[4])
local cost = tonumber(ARGV[5])
local adjust = ARGV[6] == 'adjust'
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
if adjust then
  -- A charge may leave a debt below zero; a refund fills to capacity.
  tokens = tokens - cost
  if tokens > capacity then tokens = capacity end
  admitted = 1
elseif tokens + eps >= cost then
  tokens = math.max(0, tokens - cost)
  admitted = 1
elseif capacity < 1 then
  retry = max_us
elseif capacity + eps < cost then
  -- Never admitted: the time to refill a whole bucket.
  retry = math.max(1, wait_us(capacity))
else
  retry = math.max(1, wait_us(cost - eps - tokens))
  -- Rounding may leave the closed form a microsecond short.
  if retry < max_us and tokens + retry * rate / 1000000 + eps < cost then
    retry = retry + 1
  end
end
local full = wait_us(capacity - tokens)
-- %.17g and %.0f keep every digit; Lua's own number-to-string keeps 14,
-- fewer than a microsecond timestamp has.
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'ts', string.format('%.0f', ts))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(full / 1000)))
return {admitted, math.floor(math.max(0, math.min(tokens, 9007199254740992))), retry, full}
";

/// A budget's key outlives its window by this much: a node whose clock is
/// behind still adds to (and reads) the window the others have left.
pub(super) const BUDGET_EXPIRY_MARGIN: Duration = Duration::from_secs(3600);

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
    /// Adjustments and spends not recorded during the outage.
    lost: u64,
}

/// What a call to Redis is for, to count what an outage cost.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    /// A request waits for the answer; without one, `fail_mode` decides.
    Decide,
    /// Usage is recorded after the fact; without Redis it is lost.
    Record,
}

impl RedisBuckets {
    /// `ca`: PEM roots for a `rediss://` server (else the Mozilla roots).
    pub(super) fn new(
        url: &str,
        ca: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<RedisBuckets, LimitError> {
        let client = open_client(url, ca).map_err(|source| LimitError::BadRedisUrl {
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

    /// Takes `cost` tokens; see `bucket::take_cost`.
    pub(super) async fn take(
        &self,
        route: &str,
        limit: &str,
        key: &str,
        shape: Shape,
        cost: u64,
    ) -> Result<Decision, Failure> {
        let key = bucket_key(route, limit, key);
        let reply = self
            .call(
                Op::Decide,
                self.run_script(&key, shape, cost.to_string(), "take"),
            )
            .await?;
        Ok(reply.decision())
    }

    /// Charges (or refunds, when negative) `delta` tokens; see
    /// `bucket::adjust`.
    pub(super) async fn adjust(
        &self,
        route: &str,
        limit: &str,
        key: &str,
        shape: Shape,
        delta: i64,
    ) -> Result<(), Failure> {
        let key = bucket_key(route, limit, key);
        self.call(
            Op::Record,
            self.run_script(&key, shape, delta.to_string(), "adjust"),
        )
        .await?;
        Ok(())
    }

    /// Whether the budget's window has `limit_micros` left.
    pub(super) async fn budget_check(
        &self,
        scope: &str,
        name: &str,
        key: &str,
        window: BudgetWindow,
        limit_micros: u64,
        now: SystemTime,
    ) -> Result<Decision, Failure> {
        let (id, ends_at) = window_bounds(window, now);
        let key = budget_key(scope, name, key, window, &id);
        let spent: Option<i64> = self
            .call(Op::Decide, async {
                let mut connection = self.connection().await?;
                redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        let spent = u64::try_from(spent.unwrap_or(0)).unwrap_or(0);
        Ok(budget::decide(spent, limit_micros, ends_at, now))
    }

    /// Adds `micros` to the budget's window; the key expires a margin after
    /// the window ends.
    pub(super) async fn budget_spend(
        &self,
        scope: &str,
        name: &str,
        key: &str,
        window: BudgetWindow,
        micros: u64,
        now: SystemTime,
    ) -> Result<(), Failure> {
        let (id, ends_at) = window_bounds(window, now);
        let key = budget_key(scope, name, key, window, &id);
        let expire_at = (ends_at + BUDGET_EXPIRY_MARGIN)
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Redis counters are i64; a spend beyond that (9 trillion USD) is
        // recorded as the largest it can hold, and INCRBY refuses to
        // overflow, which is logged as a backend error.
        let micros = i64::try_from(micros).unwrap_or(i64::MAX);
        self.call(Op::Record, async {
            let mut connection = self.connection().await?;
            // MULTI/EXEC: a key is never left without its expiry.
            let () = redis::pipe()
                .atomic()
                .cmd("INCRBY")
                .arg(&key)
                .arg(micros)
                .ignore()
                .cmd("EXPIREAT")
                .arg(&key)
                .arg(expire_at)
                .ignore()
                .query_async(&mut connection)
                .await?;
            Ok(())
        })
        .await
    }

    /// Runs `op` with the outage bookkeeping: skipped while Redis is known
    /// down, bounded by the timeout, failures classified and counted.
    async fn call<T>(
        &self,
        op: Op,
        run: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Failure> {
        if let Some(failure) = self.skip_during_outage(op) {
            return Err(failure);
        }
        let failure = match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(value)) => {
                self.answered();
                return Ok(value);
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
        self.failed(op, &failure);
        Err(failure)
    }

    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
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
        Ok(manager.clone())
    }

    async fn run_script(
        &self,
        key: &str,
        shape: Shape,
        cost: String,
        mode: &str,
    ) -> redis::RedisResult<Reply> {
        let mut connection = self.connection().await?;
        let (admitted, remaining, retry_us, full_us): (i64, i64, i64, i64) = self
            .script
            .key(key)
            // `{:e}`: the shortest exact form, which Lua's tonumber reads.
            .arg(format!("{:e}", shape.capacity))
            .arg(format!("{:e}", shape.refill_per_sec))
            .arg(MAX_WAIT.as_micros() as u64)
            .arg(format!("{TOKEN_EPSILON:e}"))
            .arg(cost)
            .arg(mode)
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
    fn skip_during_outage(&self, op: Op) -> Option<Failure> {
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
        o.count(op);
        Some(Failure {
            reason: o.reason,
            // The cause was logged when the outage began.
            detail: String::new(),
        })
    }

    fn failed(&self, op: Op, failure: &Failure) {
        let mut outage = self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let o = match outage.as_mut() {
            Some(o) => {
                o.reason = failure.reason;
                o.failures_in_a_row += 1;
                o.count(op);
                tracing::debug!(backend = "redis", error = %failure.detail, "rate-limit backend still failing");
                o
            }
            None => {
                // Once per outage, not per request.
                tracing::warn!(
                    backend = "redis",
                    reason = failure.reason,
                    error = %failure.detail,
                    "rate-limit backend failing: requests are decided by rate_limits.fail_mode, and usage \
                     (adjustments, budget spend) goes unrecorded, until it answers again"
                );
                let o = outage.insert(Outage {
                    since: now,
                    failures_in_a_row: 1,
                    next_probe: None,
                    reason: failure.reason,
                    decided: 0,
                    lost: 0,
                });
                o.count(op);
                o
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
                usage_records_lost = o.lost,
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

impl Outage {
    fn count(&mut self, op: Op) {
        match op {
            Op::Decide => self.decided += 1,
            Op::Record => self.lost += 1,
        }
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

/// `trigate:budget:<scope>:<name>:<day|month>:<window id>:<key>`, escaped
/// like [`bucket_key`]; the window id (`2025-03-14`, `2025-03`) needs no
/// escaping.
pub(super) fn budget_key(
    scope: &str,
    name: &str,
    key: &str,
    window: BudgetWindow,
    id: &str,
) -> String {
    format!(
        "trigate:budget:{}:{}:{}:{id}:{key}",
        escape(scope),
        escape(name),
        window.as_str()
    )
}

fn escape(s: &str) -> Cow<'_, str> {
    if s.contains([':', '%']) {
        Cow::Owned(s.replace('%', "%25").replace(':', "%3A"))
    } else {
        Cow::Borrowed(s)
    }
}

/// The URL with the password (or the whole user part) replaced by `***`.
/// A client for `url`; `ca`: PEM roots for a `rediss://` server (else the
/// Mozilla roots). Shared with the LLM gate's answer cache.
pub(crate) fn open_client(url: &str, ca: Option<Vec<u8>>) -> redis::RedisResult<redis::Client> {
    match ca {
        None => redis::Client::open(url),
        Some(pem) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            },
        ),
    }
}

pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}
