//! The token bucket itself: values in, values out, the clock passed in.
//!
//! The Redis script (`redis.rs`) implements the same arithmetic in Lua; the
//! two must change together.
use std::time::{Duration, Instant};

/// A bucket never promises a wait longer than this. Rates so small that the
/// true wait is longer (1 request per century) are not worth the overflow
/// cases of `Instant + Duration`; a year is "never" for a client.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Slack in "is a whole token there": refills add up in floating point, and
/// a bucket refilled a token in many small steps may land on
/// 0.9999999999999999. The slack gives away at most this much of a token and
/// shortens waits by at most `TOKEN_EPSILON / rate` (a nanosecond at 0.1/s).
pub(super) const TOKEN_EPSILON: f64 = 1e-10;

/// One bucket's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date; never moves backwards.
    last: Instant,
}

impl Bucket {
    /// A bucket as it is before its first request: full.
    pub fn full(capacity: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: sanitize(capacity),
            last: now,
        }
    }

    /// Tokens in the bucket as of its last update (fractional).
    pub fn tokens(&self) -> f64 {
        self.tokens
    }

    /// When the bucket was last brought up to date (the latest `now` seen).
    pub fn updated(&self) -> Instant {
        self.last
    }
}

/// Takes one token at `now`: `Ok(tokens left)` or `Err(wait until one is
/// there)`. The refusal does not change the bucket beyond bringing its
/// refill up to date, so a client that keeps retrying does not push its own
/// retry further out.
///
/// A `now` before the bucket's last update (a clock that went backwards)
/// refills nothing and leaves the update time where it was, so the interval
/// is not refilled twice once the clock passes it again.
pub fn take(
    bucket: &mut Bucket,
    capacity: f64,
    refill_per_sec: f64,
    now: Instant,
) -> Result<f64, Duration> {
    take_cost(bucket, capacity, refill_per_sec, 1.0, now)
}

/// Takes `cost` tokens at once, as [`take`] takes one (a cost of 1 is
/// exactly [`take`]).
///
/// A bucket in debt (see [`adjust`]) admits nothing until the debt is
/// refilled and `cost` tokens are there again. A cost the bucket can never
/// hold (more than `capacity`) is refused with the time to refill a whole
/// bucket from empty: no wait would be enough, and that answer is finite,
/// names the limit's own time scale, and keeps a client that retries on it
/// from retrying in a tight loop.
pub fn take_cost(
    bucket: &mut Bucket,
    capacity: f64,
    refill_per_sec: f64,
    cost: f64,
    now: Instant,
) -> Result<f64, Duration> {
    let capacity = sanitize(capacity);
    let rate = sanitize(refill_per_sec);
    let cost = sanitize(cost);
    bring_up_to_date(bucket, capacity, rate, now);
    if has(bucket.tokens, cost) {
        bucket.tokens = (bucket.tokens - cost).max(0.0);
        Ok(bucket.tokens)
    } else if capacity < 1.0 {
        // A bucket that cannot hold a whole token never admits.
        Err(MAX_WAIT)
    } else if !has(capacity, cost) {
        Err(time_to_refill(capacity, rate).max(Duration::from_nanos(1)))
    } else {
        Err(wait_for(bucket.tokens, cost, rate, capacity))
    }
}

/// Charges `delta` more tokens (a refund when negative) at `now`, without
/// asking: the request has already been served. A charge may take the
/// bucket below zero, a debt that refills at the usual rate and that
/// [`take_cost`] waits for; a refund fills the bucket at most to
/// `capacity`.
pub fn adjust(bucket: &mut Bucket, capacity: f64, refill_per_sec: f64, delta: f64, now: Instant) {
    let capacity = sanitize(capacity);
    let rate = sanitize(refill_per_sec);
    bring_up_to_date(bucket, capacity, rate, now);
    if delta.is_nan() {
        return;
    }
    // The floor keeps an absurd charge finite, so later arithmetic never
    // meets -inf; waits are capped at MAX_WAIT long before it.
    bucket.tokens = (bucket.tokens - delta).clamp(-f64::MAX, capacity);
}

/// Refills the bucket up to `now` and applies a capacity lowered by a
/// config reload.
fn bring_up_to_date(bucket: &mut Bucket, capacity: f64, rate: f64, now: Instant) {
    if now > bucket.last {
        bucket.tokens = refilled(bucket.tokens, now - bucket.last, rate, capacity);
        bucket.last = now;
    }
    bucket.tokens = bucket.tokens.min(capacity);
}

fn refilled(tokens: f64, elapsed: Duration, rate: f64, capacity: f64) -> f64 {
    if elapsed.is_zero() {
        // `rate` may be infinite: keep 0 × ∞ (NaN) out.
        return tokens;
    }
    (tokens + elapsed.as_secs_f64() * rate).min(capacity)
}

fn has(tokens: f64, cost: f64) -> bool {
    tokens + TOKEN_EPSILON >= cost
}

/// The shortest wait after which [`take_cost`] admits `cost`, in the same
/// floating-point arithmetic it will use: the closed form is off by a
/// nanosecond either way through rounding, so it is nudged until it is
/// exact.
fn wait_for(tokens: f64, cost: f64, rate: f64, capacity: f64) -> Duration {
    const NS: Duration = Duration::from_nanos(1);
    let mut wait = time_to_refill(cost - TOKEN_EPSILON - tokens, rate).max(NS);
    if wait >= MAX_WAIT {
        return MAX_WAIT;
    }
    let enough = |d: Duration| has(refilled(tokens, d, rate, capacity), cost);
    // A few steps are enough whenever a nanosecond is worth more than an
    // ulp of a token; at rates too slow for that, any of the equal answers
    // is exact.
    for _ in 0..4 {
        if enough(wait) {
            break;
        }
        wait += NS;
    }
    for _ in 0..4 {
        let shorter = wait - NS;
        if shorter.is_zero() || !enough(shorter) {
            break;
        }
        wait = shorter;
    }
    wait
}

/// How long `rate` takes to refill `tokens`, rounded up to the nanosecond
/// (so waiting exactly that long is enough) and capped at [`MAX_WAIT`].
pub fn time_to_refill(tokens: f64, refill_per_sec: f64) -> Duration {
    let rate = sanitize(refill_per_sec);
    if tokens.is_nan() || tokens <= 0.0 {
        return Duration::ZERO;
    }
    if rate == 0.0 {
        return MAX_WAIT;
    }
    let nanos = (tokens / rate * 1e9).ceil();
    if nanos >= MAX_WAIT.as_nanos() as f64 {
        MAX_WAIT
    } else {
        Duration::from_nanos(nanos as u64)
    }
}

/// Negative and NaN amounts are treated as 0: a broken number must not turn
/// into free tokens (`NaN.min(capacity)` is `capacity`).
fn sanitize(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        0.0
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Takes until refused; returns how many were admitted and the wait.
    fn drain(b: &mut Bucket, cap: f64, rate: f64, now: Instant) -> (u64, Duration) {
        let mut n = 0;
        loop {
            match take(b, cap, rate, now) {
                Ok(_) => n += 1,
                Err(wait) => return (n, wait),
            }
            assert!(n <= 1_000_000, "bucket never ran dry");
        }
    }

    #[test]
    fn a_full_bucket_admits_its_burst_then_refuses() {
        let t0 = Instant::now();
        let mut b = Bucket::full(5.0, t0);
        let remaining: Vec<f64> = (0..5)
            .map(|_| take(&mut b, 5.0, 1.0, t0).unwrap())
            .collect();
        assert_eq!(remaining, [4.0, 3.0, 2.0, 1.0, 0.0]);
        assert_eq!(take(&mut b, 5.0, 1.0, t0), Err(Duration::from_secs(1)));
        // Refusals do not dig a hole: the wait stays the same.
        assert_eq!(take(&mut b, 5.0, 1.0, t0), Err(Duration::from_secs(1)));
        assert_eq!(b.tokens(), 0.0);
    }

    #[test]
    fn refills_over_time_up_to_capacity() {
        let t0 = Instant::now();
        let mut b = Bucket::full(3.0, t0);
        assert_eq!(drain(&mut b, 3.0, 2.0, t0).0, 3);
        // 2 per second: one token after 500 ms, two after 1 s.
        assert_eq!(drain(&mut b, 3.0, 2.0, t0 + ms(500)).0, 1);
        assert_eq!(drain(&mut b, 3.0, 2.0, t0 + ms(1500)).0, 2);
        // A long pause fills the bucket, no further.
        assert_eq!(drain(&mut b, 3.0, 2.0, t0 + Duration::from_secs(3600)).0, 3);
    }

    #[test]
    fn fractional_refill_accumulates() {
        // 10 requests per 60 s: one token every 6 s, in tenths of a second.
        let rate = 10.0 / 60.0;
        let t0 = Instant::now();
        let mut b = Bucket::full(1.0, t0);
        take(&mut b, 1.0, rate, t0).unwrap();
        let mut now = t0;
        for _ in 0..59 {
            now += ms(100);
            assert!(
                take(&mut b, 1.0, rate, now).is_err(),
                "admitted early at {:?}",
                now - t0
            );
        }
        assert!(b.tokens() > 0.98 && b.tokens() < 1.0, "{}", b.tokens());
        now += ms(100);
        assert_eq!(take(&mut b, 1.0, rate, now), Ok(0.0));
    }

    #[test]
    fn retry_after_is_exact_to_the_nanosecond() {
        for (cap, rate) in [
            (1.0, 1.0),
            (5.0, 1.0 / 3.0),
            (10.0, 7.0),
            (2.0, 0.001),
            (100.0, 123_456.0),
        ] {
            let t0 = Instant::now();
            let mut b = Bucket::full(cap, t0);
            let (_, wait) = drain(&mut b, cap, rate, t0);
            assert!(wait > Duration::ZERO);
            let early = t0 + wait - Duration::from_nanos(1);
            assert!(
                take(&mut b, cap, rate, early).is_err(),
                "cap {cap} rate {rate}: admitted 1 ns early"
            );
            // The early refusal's own wait must agree.
            let again = take(&mut b, cap, rate, early).unwrap_err();
            assert!(
                again <= Duration::from_nanos(2),
                "cap {cap} rate {rate}: {again:?}"
            );
            assert!(
                take(&mut b, cap, rate, t0 + wait).is_ok(),
                "cap {cap} rate {rate}: wait {wait:?} not enough"
            );
        }
    }

    #[test]
    fn partial_tokens_shorten_the_wait() {
        let t0 = Instant::now();
        let mut b = Bucket::full(1.0, t0);
        take(&mut b, 1.0, 1.0, t0).unwrap();
        assert_eq!(take(&mut b, 1.0, 1.0, t0 + ms(250)), Err(ms(750)));
    }

    #[test]
    fn a_clock_going_backwards_gives_no_free_tokens() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = Bucket::full(2.0, t0);
        assert_eq!(drain(&mut b, 2.0, 1.0, t0).0, 2);
        // 5 s back: nothing refills, nothing panics, the wait is unchanged.
        let back = t0 - Duration::from_secs(5);
        assert_eq!(take(&mut b, 2.0, 1.0, back), Err(Duration::from_secs(1)));
        // Forward again: only time after t0 counts, not the 5 s twice.
        assert_eq!(drain(&mut b, 2.0, 1.0, t0 + ms(999)).0, 0);
        assert_eq!(drain(&mut b, 2.0, 1.0, t0 + ms(1000)).0, 1);
    }

    #[test]
    fn huge_rates_and_capacities() {
        let t0 = Instant::now();
        let cap = u64::MAX as f64;
        let mut b = Bucket::full(cap, t0);
        for _ in 0..1000 {
            assert!(take(&mut b, cap, f64::INFINITY, t0).is_ok());
        }
        // An infinite rate refills instantly even from empty.
        let mut b = Bucket::full(1.0, t0);
        take(&mut b, 1.0, f64::INFINITY, t0).unwrap();
        assert_eq!(
            take(&mut b, 1.0, f64::INFINITY, t0 + Duration::from_nanos(1)),
            Ok(0.0)
        );
        // Very high finite rate: the wait is a nanosecond, not zero.
        let mut b = Bucket::full(1.0, t0);
        take(&mut b, 1.0, 1e15, t0).unwrap();
        assert_eq!(take(&mut b, 1.0, 1e15, t0), Err(Duration::from_nanos(1)));
    }

    #[test]
    fn tiny_and_zero_rates_wait_at_most_max_wait() {
        let t0 = Instant::now();
        for rate in [1.0 / u64::MAX as f64, 1e-300, 0.0, -1.0, f64::NAN] {
            let mut b = Bucket::full(1.0, t0);
            take(&mut b, 1.0, rate, t0).unwrap();
            assert_eq!(take(&mut b, 1.0, rate, t0), Err(MAX_WAIT), "rate {rate}");
            assert!(take(&mut b, 1.0, rate, t0 + Duration::from_secs(3600)).is_err());
        }
        // A year-scale rate that is still under the cap is reported as is.
        let rate = 1.0 / (30.0 * 24.0 * 3600.0);
        let mut b = Bucket::full(1.0, t0);
        take(&mut b, 1.0, rate, t0).unwrap();
        let wait = take(&mut b, 1.0, rate, t0).unwrap_err();
        let month = Duration::from_secs(30 * 24 * 3600);
        assert!(wait <= month && month - wait < ms(1), "{wait:?}");
    }

    #[test]
    fn capacity_below_one_never_admits_and_nan_gives_nothing() {
        let t0 = Instant::now();
        for cap in [0.0, 0.5, -3.0, f64::NAN] {
            let mut b = Bucket::full(cap, t0);
            assert_eq!(
                take(&mut b, cap, 1e9, t0 + Duration::from_secs(1)),
                Err(MAX_WAIT),
                "cap {cap}"
            );
        }
    }

    #[test]
    fn a_lowered_capacity_caps_an_existing_bucket() {
        let t0 = Instant::now();
        let mut b = Bucket::full(100.0, t0);
        assert_eq!(take(&mut b, 3.0, 1.0, t0), Ok(2.0));
    }

    #[test]
    fn time_to_refill_rounds_up_and_caps() {
        assert_eq!(time_to_refill(0.0, 1.0), Duration::ZERO);
        assert_eq!(time_to_refill(-1.0, 1.0), Duration::ZERO);
        assert_eq!(time_to_refill(1.0, 3.0), Duration::from_nanos(333_333_334));
        assert_eq!(time_to_refill(1.0, 0.0), MAX_WAIT);
        assert_eq!(time_to_refill(f64::INFINITY, 1.0), MAX_WAIT);
        assert_eq!(time_to_refill(1.0, f64::INFINITY), Duration::ZERO);
    }

    #[test]
    fn take_cost_takes_several_tokens_at_once() {
        let t0 = Instant::now();
        let mut b = Bucket::full(10.0, t0);
        assert_eq!(take_cost(&mut b, 10.0, 1.0, 4.0, t0), Ok(6.0));
        assert_eq!(take_cost(&mut b, 10.0, 1.0, 6.0, t0), Ok(0.0));
        // 3 tokens at 1/s: 3 s, exactly.
        assert_eq!(
            take_cost(&mut b, 10.0, 1.0, 3.0, t0),
            Err(Duration::from_secs(3))
        );
        assert!(take_cost(&mut b, 10.0, 1.0, 3.0, t0 + ms(2999)).is_err());
        assert_eq!(take_cost(&mut b, 10.0, 1.0, 3.0, t0 + ms(3000)), Ok(0.0));
        // A cost of 1 is `take`.
        let (mut x, mut y) = (Bucket::full(3.0, t0), Bucket::full(3.0, t0));
        for i in 0..6 {
            let now = t0 + ms(300 * i);
            assert_eq!(
                take(&mut x, 3.0, 0.7, now),
                take_cost(&mut y, 3.0, 0.7, 1.0, now)
            );
            assert_eq!(x, y);
        }
    }

    #[test]
    fn a_cost_above_capacity_is_refused_with_the_time_to_fill_the_bucket() {
        let t0 = Instant::now();
        let mut b = Bucket::full(10.0, t0);
        // 10 tokens at 2/s: 5 s, full bucket or not, and the bucket is not
        // touched.
        assert_eq!(
            take_cost(&mut b, 10.0, 2.0, 11.0, t0),
            Err(Duration::from_secs(5))
        );
        assert_eq!(b.tokens(), 10.0);
        assert_eq!(
            take_cost(&mut b, 10.0, 2.0, 11.0, t0 + Duration::from_secs(3600)),
            Err(Duration::from_secs(5))
        );
        assert_eq!(
            take_cost(&mut b, 10.0, 2.0, u64::MAX as f64, t0),
            Err(Duration::from_secs(5))
        );
        // Never zero, never longer than MAX_WAIT.
        assert_eq!(
            take_cost(&mut b, 10.0, f64::INFINITY, 11.0, t0),
            Err(Duration::from_nanos(1))
        );
        assert_eq!(take_cost(&mut b, 10.0, 0.0, 11.0, t0), Err(MAX_WAIT));
        // Exactly the capacity is admitted from a full bucket.
        assert_eq!(take_cost(&mut b, 10.0, 2.0, 10.0, t0), Ok(0.0));
    }

    #[test]
    fn a_zero_cost_is_admitted_unless_in_debt() {
        let t0 = Instant::now();
        let mut b = Bucket::full(2.0, t0);
        assert_eq!(take_cost(&mut b, 2.0, 1.0, 0.0, t0), Ok(2.0));
        adjust(&mut b, 2.0, 1.0, 3.0, t0);
        assert_eq!(
            take_cost(&mut b, 2.0, 1.0, 0.0, t0),
            Err(Duration::from_secs(1))
        );
        assert_eq!(take_cost(&mut b, 2.0, 1.0, 0.0, t0 + ms(1000)), Ok(0.0));
    }

    #[test]
    fn debt_refills_before_anything_is_admitted() {
        let t0 = Instant::now();
        let mut b = Bucket::full(10.0, t0);
        assert_eq!(take_cost(&mut b, 10.0, 1.0, 5.0, t0), Ok(5.0));
        // The call used 25 tokens, not 5: 20 more, 15 of them debt.
        adjust(&mut b, 10.0, 1.0, 20.0, t0);
        assert_eq!(b.tokens(), -15.0);
        // One token needs the debt repaid and one more: 16 s.
        assert_eq!(take(&mut b, 10.0, 1.0, t0), Err(Duration::from_secs(16)));
        assert_eq!(
            take(&mut b, 10.0, 1.0, t0 + ms(10_000)),
            Err(Duration::from_secs(6))
        );
        assert!(take(&mut b, 10.0, 1.0, t0 + ms(15_999)).is_err());
        assert_eq!(take(&mut b, 10.0, 1.0, t0 + ms(16_000)), Ok(0.0));
    }

    #[test]
    fn refunds_are_capped_at_capacity() {
        let t0 = Instant::now();
        let mut b = Bucket::full(10.0, t0);
        take_cost(&mut b, 10.0, 1.0, 8.0, t0).unwrap();
        adjust(&mut b, 10.0, 1.0, -5.0, t0);
        assert_eq!(b.tokens(), 7.0);
        adjust(&mut b, 10.0, 1.0, -1000.0, t0);
        assert_eq!(b.tokens(), 10.0);
        // Refill is brought up to date first, so it is not counted twice.
        take_cost(&mut b, 10.0, 1.0, 10.0, t0).unwrap();
        adjust(&mut b, 10.0, 1.0, -3.0, t0 + ms(4000));
        assert_eq!(b.tokens(), 7.0);
        assert_eq!(b.updated(), t0 + ms(4000));
    }

    #[test]
    fn absurd_adjustments_stay_finite() {
        let t0 = Instant::now();
        let mut b = Bucket::full(10.0, t0);
        adjust(&mut b, 10.0, 1.0, f64::NAN, t0);
        assert_eq!(b.tokens(), 10.0);
        adjust(&mut b, 10.0, 1.0, f64::INFINITY, t0);
        assert!(b.tokens().is_finite() && b.tokens() < 0.0);
        assert_eq!(take(&mut b, 10.0, 1.0, t0), Err(MAX_WAIT));
        adjust(&mut b, 10.0, 1.0, f64::NEG_INFINITY, t0);
        assert_eq!(b.tokens(), 10.0);
        adjust(&mut b, 10.0, 1.0, i64::MAX as f64, t0);
        assert_eq!(
            take(&mut b, 10.0, 1e6, t0 + Duration::from_secs(3600)),
            Err(MAX_WAIT)
        );
    }
}
