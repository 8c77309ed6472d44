//! The limiter with the local backend, its config errors and key naming.
//! Redis: `redis_tests.rs`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::budget::LocalBudgets;
use super::local::{LocalBuckets, MAX_BUCKETS};
use super::redis_backend::{bucket_key, redact};
use super::*;

pub(super) fn limit(name: &str, requests: u64, per_secs: u64, burst: Option<u64>) -> RateLimit {
    RateLimit {
        name: name.into(),
        key: "workload".into(),
        requests,
        per_secs,
        burst,
    }
}

fn local(fail_mode: FailMode) -> Arc<Limiter> {
    Limiter::new(&RateLimitBackend {
        fail_mode,
        ..RateLimitBackend::default()
    })
    .unwrap()
}

/// A local limiter with a small table, to reach the cap.
fn small_local(max_buckets: usize, fail_mode: FailMode) -> Limiter {
    Limiter {
        store: Store::Local(Box::new(LocalStore {
            buckets: LocalBuckets::new(max_buckets),
            budgets: LocalBudgets::new(budget::MAX_BUDGETS),
        })),
        fail_open: fail_mode == FailMode::Open,
    }
}

fn table(limiter: &Limiter) -> &LocalBuckets {
    match &limiter.store {
        Store::Local(local) => &local.buckets,
        Store::Redis(_) => panic!("not local"),
    }
}

/// Checks until refused; returns how many were admitted.
async fn admitted_until_limited(l: &Limiter, route: &str, lim: &RateLimit, key: &str) -> u64 {
    let mut n = 0;
    loop {
        match l.check(route, lim, key).await {
            Decision::Allowed { .. } => n += 1,
            Decision::Limited { .. } => return n,
            other => panic!("unexpected {other:?}"),
        }
        assert!(n < 100_000, "never limited");
    }
}

#[test]
fn limiter_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Limiter>();
}

#[tokio::test]
async fn allowed_counts_down_and_says_when_full() {
    let l = local(FailMode::Open);
    assert_eq!(l.backend_name(), "local");
    // 10 per 10 s, burst 3: a token per second.
    let lim = limit("l", 10, 10, Some(3));
    for left in [2u64, 1, 0] {
        match l.check("r", &lim, "workload=a").await {
            Decision::Allowed {
                remaining,
                reset_after,
            } => {
                assert_eq!(remaining, left);
                let want = Duration::from_secs(3 - left);
                assert!(
                    reset_after <= want && want - reset_after < Duration::from_millis(100),
                    "{reset_after:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    match l.check("r", &lim, "workload=a").await {
        Decision::Limited { retry_after } => {
            assert!(
                retry_after > Duration::from_millis(900) && retry_after <= Duration::from_secs(1)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn keys_routes_and_limits_have_their_own_buckets() {
    let l = local(FailMode::Open);
    let lim = limit("per-pod", 2, 3600, None);
    assert_eq!(
        admitted_until_limited(&l, "r1", &lim, "workload=a").await,
        2
    );
    // Another key, another route, another limit name: each a full bucket.
    assert_eq!(
        admitted_until_limited(&l, "r1", &lim, "workload=b").await,
        2
    );
    assert_eq!(
        admitted_until_limited(&l, "r2", &lim, "workload=a").await,
        2
    );
    let other = limit("per-pod-2", 2, 3600, None);
    assert_eq!(
        admitted_until_limited(&l, "r1", &other, "workload=a").await,
        2
    );
    // Names that would run together as strings stay apart.
    assert_eq!(
        admitted_until_limited(&l, "r1:per-pod", &limit("x", 2, 3600, None), "a").await,
        2
    );
    assert_eq!(
        admitted_until_limited(&l, "r1", &limit("per-pod:x", 2, 3600, None), "a").await,
        2
    );
    // And the first is still empty.
    assert!(matches!(
        l.check("r1", &lim, "workload=a").await,
        Decision::Limited { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_overspend() {
    let l = local(FailMode::Closed);
    // 100 per hour: nothing refills during the test.
    let lim = Arc::new(limit("l", 100, 3600, None));
    let admitted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (l, lim, admitted) = (l.clone(), lim.clone(), admitted.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                match l.check("r", &lim, "workload=a").await {
                    Decision::Allowed { .. } => {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    Decision::Limited { .. } => {}
                    other => panic!("{other:?}"),
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(admitted.load(Ordering::Relaxed), 100);
}

#[test]
fn refilled_buckets_are_dropped_and_the_table_stays_bounded() {
    let buckets = LocalBuckets::new(MAX_BUCKETS);
    // 1000/s, burst 1: every bucket is full again 1 ms after its request.
    let shape = Shape::of(&limit("l", 1000, 1, Some(1)));
    let t0 = Instant::now();
    for i in 0..100_000u64 {
        let now = t0 + Duration::from_millis(i);
        let d = buckets
            .take("r", "l", &format!("header=x-id={i}"), shape, 1, now)
            .unwrap();
        assert!(matches!(d, Decision::Allowed { .. }));
    }
    // Without eviction there would be 100 000; sweeps keep each shard
    // under its sweep threshold.
    assert!(buckets.len() <= 16 * 256, "{} buckets", buckets.len());
}

#[test]
fn buckets_in_use_survive_a_flood_of_new_keys() {
    let buckets = LocalBuckets::new(16 * 8);
    let hour = Shape::of(&limit("l", 1, 3600, None));
    let t0 = Instant::now();
    assert!(matches!(
        buckets.take("r", "l", "hot", hour, 1, t0),
        Ok(Decision::Allowed { .. })
    ));
    // The flood: short-lived buckets, then the same keys' buckets refilled.
    let second = Shape::of(&limit("l", 1, 1, None));
    let mut full = 0;
    for i in 0..1000 {
        match buckets.take("r", "l", &format!("k{i}"), second, 1, t0) {
            Ok(_) => {}
            Err(f) => {
                assert_eq!(f.reason, "local bucket table full");
                full += 1;
            }
        }
        assert!(buckets.largest_shard() <= buckets.per_shard());
    }
    assert!(full > 0, "the cap was never reached");
    assert!(buckets.len() <= 16 * 8);
    // Two seconds on, every flood bucket is full again and can go; new keys
    // get their place, and "hot" is still empty.
    let t1 = t0 + Duration::from_secs(2);
    let admitted = (0..1000)
        .filter(|i| {
            buckets
                .take("r", "l", &format!("n{i}"), second, 1, t1)
                .is_ok()
        })
        .count();
    assert!(
        admitted >= 16 * 8 - 1,
        "only {admitted} new keys got a bucket"
    );
    assert!(matches!(
        buckets.take("r", "l", "hot", hour, 1, t1),
        Ok(Decision::Limited { .. })
    ));
}

#[tokio::test]
async fn a_full_table_is_decided_by_fail_mode() {
    for (mode, admitted) in [(FailMode::Open, true), (FailMode::Closed, false)] {
        let l = small_local(16 * 4, mode);
        let lim = limit("l", 1, 3600, None);
        let mut down = 0;
        for i in 0..500 {
            match l.check("r", &lim, &format!("k{i}")).await {
                Decision::Allowed { .. } => {}
                Decision::BackendDown {
                    admitted: a,
                    reason,
                } => {
                    assert_eq!(a, admitted);
                    assert_eq!(reason, "local bucket table full");
                    down += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(down >= 500 - 16 * 4, "{down}");
        assert!(table(&l).len() <= 16 * 4);
        // A key with a bucket is still limited, table full or not.
        let tracked = (0..500)
            .map(|i| format!("k{i}"))
            .find(|k| has_empty_bucket(&l, &lim, k));
        assert!(tracked.is_some());
    }
}

/// Whether `key` has a bucket in `l` and it is empty (refused, not decided
/// by fail_mode).
fn has_empty_bucket(l: &Limiter, lim: &RateLimit, key: &str) -> bool {
    matches!(
        table(l).take("r", &lim.name, key, Shape::of(lim), 1, Instant::now()),
        Ok(Decision::Limited { .. })
    )
}

#[tokio::test]
async fn a_zero_limit_from_unvalidated_config_refuses_without_panicking() {
    let l = local(FailMode::Open);
    for lim in [
        limit("zero", 0, 60, None),
        limit("zero-window", 5, 0, None),
        limit("zero-burst", 5, 60, Some(0)),
    ] {
        let d = l.check("r", &lim, "k").await;
        if lim.requests == 0 || lim.burst == Some(0) {
            assert!(matches!(d, Decision::Limited { .. }), "{}: {d:?}", lim.name);
        } else {
            assert!(d.admitted(), "{}: {d:?}", lim.name);
        }
    }
}

#[test]
fn decision_admitted() {
    assert!(Decision::Allowed {
        remaining: 0,
        reset_after: Duration::ZERO
    }
    .admitted());
    assert!(!Decision::Limited {
        retry_after: Duration::from_secs(1)
    }
    .admitted());
    assert!(Decision::BackendDown {
        admitted: true,
        reason: String::new()
    }
    .admitted());
    assert!(!Decision::BackendDown {
        admitted: false,
        reason: String::new()
    }
    .admitted());
}

#[test]
fn config_errors_name_the_field() {
    let mut cfg = RateLimitBackend {
        backend: LimitBackendKind::Redis,
        ..RateLimitBackend::default()
    };
    let e = Limiter::new(&cfg).err().unwrap();
    assert!(matches!(e, LimitError::MissingRedisUrl));
    assert!(e.to_string().contains("rate_limits.redis_url"));

    cfg.redis_url = Some("http://user:hunter2@example.com/".into());
    let e = Limiter::new(&cfg).err().unwrap().to_string();
    assert!(e.contains("rate_limits.redis_url"), "{e}");
    assert!(!e.contains("hunter2"), "password in the error: {e}");

    // TLS URLs build; a CA file must exist and goes with rediss:// only.
    cfg.redis_url = Some("rediss://127.0.0.1:6379".into());
    assert!(Limiter::new(&cfg).is_ok());
    cfg.redis_ca_file = Some("/nonexistent/redis-ca.pem".into());
    let e = Limiter::new(&cfg).err().unwrap().to_string();
    assert!(
        e.contains("rate_limits.redis_ca_file") && e.contains("/nonexistent"),
        "{e}"
    );
    cfg.redis_url = Some("redis://127.0.0.1:6379".into());
    let e = Limiter::new(&cfg).err().unwrap().to_string();
    assert!(e.contains("not rediss://"), "{e}");
    cfg.redis_ca_file = None;

    // A good URL needs no server to build the limiter.
    cfg.redis_url = Some("redis://127.0.0.1:1/0".into());
    assert_eq!(Limiter::new(&cfg).unwrap().backend_name(), "redis");
}

#[test]
fn redis_keys_cannot_collide() {
    assert_eq!(
        bucket_key("api", "per-pod", "workload=pod-a"),
        "trigate:rl:api:per-pod:workload=pod-a"
    );
    assert_ne!(bucket_key("a:b", "c", "k"), bucket_key("a", "b:c", "k"));
    assert_ne!(bucket_key("a%3Ab", "c", "k"), bucket_key("a:b", "c", "k"));
    assert_eq!(bucket_key("a:b%", "c", "k:k"), "trigate:rl:a%3Ab%25:c:k:k");
}

#[test]
fn urls_are_logged_without_passwords() {
    assert_eq!(
        redact("redis://127.0.0.1:6379/0"),
        "redis://127.0.0.1:6379/0"
    );
    assert_eq!(redact("redis://:pw@h:1/2"), "redis://***@h:1/2");
    assert_eq!(redact("redis://u:p@ss@h"), "redis://***@h");
    assert_eq!(redact("not a url"), "not a url");
}

fn remaining(d: &Decision) -> u64 {
    match d {
        Decision::Allowed { remaining, .. } => *remaining,
        other => panic!("not allowed: {other:?}"),
    }
}

fn retry_after(d: &Decision) -> Duration {
    match d {
        Decision::Limited { retry_after } => *retry_after,
        other => panic!("not limited: {other:?}"),
    }
}

#[tokio::test]
async fn take_takes_a_cost_all_or_nothing() {
    let l = local(FailMode::Closed);
    // 10 per 10 s: a token a second.
    let lim = limit("tokens", 10, 10, None);
    assert_eq!(remaining(&l.take("r", &lim, "k", 4).await), 6);
    assert_eq!(remaining(&l.take("r", &lim, "k", 6).await), 0);
    // 3 tokens are 3 s away; the refusal takes nothing.
    let wait = retry_after(&l.take("r", &lim, "k", 3).await);
    assert!(
        wait > Duration::from_millis(2900) && wait <= Duration::from_secs(3),
        "{wait:?}"
    );
    // `check` is a take of 1, on the same bucket.
    let wait = retry_after(&l.check("r", &lim, "k").await);
    assert!(wait <= Duration::from_secs(1), "{wait:?}");
    assert_eq!(remaining(&l.take("r", &lim, "other", 1).await), 9);
    assert_eq!(remaining(&l.check("r", &lim, "other").await), 8);
}

#[tokio::test]
async fn a_cost_larger_than_the_burst_is_refused_with_the_time_to_fill_the_bucket() {
    let l = local(FailMode::Open);
    // 100 per minute, burst 20: the bucket fills from empty in 12 s.
    let lim = limit("tokens", 100, 60, Some(20));
    for cost in [21, 1000, u64::MAX] {
        assert_eq!(
            l.take("r", &lim, "k", cost).await,
            Decision::Limited {
                retry_after: Duration::from_secs(12)
            },
            "cost {cost}"
        );
    }
    // Nothing was taken; exactly the burst still goes through.
    assert_eq!(remaining(&l.take("r", &lim, "k", 20).await), 0);
}

#[test]
fn adjust_leaves_a_debt_that_refills_before_the_next_take() {
    let buckets = LocalBuckets::new(MAX_BUCKETS);
    // 1 token a second, burst 10.
    let shape = Shape::of(&limit("l", 10, 10, None));
    let t0 = Instant::now();
    let take = |cost, at| buckets.take("r", "l", "k", shape, cost, at).unwrap();
    assert_eq!(remaining(&take(5, t0)), 5);
    // Used 25, estimated 5: 20 more, 15 of them debt.
    buckets.adjust("r", "l", "k", shape, 20, t0).unwrap();
    assert_eq!(retry_after(&take(1, t0)), Duration::from_secs(16));
    assert_eq!(
        retry_after(&take(4, t0 + Duration::from_secs(10))),
        Duration::from_secs(9)
    );
    assert!(matches!(
        take(1, t0 + Duration::from_millis(15_999)),
        Decision::Limited { .. }
    ));
    assert_eq!(remaining(&take(1, t0 + Duration::from_secs(16))), 0);
    // The debt also counts toward "full again": the bucket is kept until
    // then, not dropped as if refilled.
    let Decision::Allowed { reset_after, .. } = take(0, t0 + Duration::from_secs(16)) else {
        panic!()
    };
    assert_eq!(reset_after, Duration::from_secs(10));
}

#[test]
fn refunds_fill_the_bucket_at_most_to_its_size() {
    let buckets = LocalBuckets::new(MAX_BUCKETS);
    let shape = Shape::of(&limit("l", 10, 3600, None));
    let t0 = Instant::now();
    let take = |cost| buckets.take("r", "l", "k", shape, cost, t0).unwrap();
    assert_eq!(remaining(&take(8)), 2);
    buckets.adjust("r", "l", "k", shape, -5, t0).unwrap();
    assert_eq!(remaining(&take(0)), 7);
    buckets.adjust("r", "l", "k", shape, -1000, t0).unwrap();
    assert_eq!(remaining(&take(10)), 0);
    assert!(matches!(take(1), Decision::Limited { .. }));
    // Refunding a key without a bucket (a full one) makes no bucket.
    let before = buckets.len();
    buckets
        .adjust("r", "l", "never-seen", shape, -3, t0)
        .unwrap();
    assert_eq!(buckets.len(), before);
}

#[tokio::test]
async fn adjust_through_the_limiter() {
    let l = local(FailMode::Closed);
    let lim = limit("tokens", 100, 3600, None);
    assert_eq!(remaining(&l.take("r", &lim, "k", 10).await), 90);
    assert_eq!(l.adjust("r", &lim, "k", 40).await, None);
    assert_eq!(remaining(&l.take("r", &lim, "k", 0).await), 50);
    assert_eq!(l.adjust("r", &lim, "k", -20).await, None);
    assert_eq!(l.adjust("r", &lim, "k", 0).await, None);
    assert_eq!(remaining(&l.take("r", &lim, "k", 0).await), 70);
    // Beyond the whole bucket: a debt of 100 at 100/h.
    assert_eq!(l.adjust("r", &lim, "k", 170).await, None);
    let wait = retry_after(&l.take("r", &lim, "k", 1).await);
    let want = Duration::from_secs(101 * 36);
    assert!(
        wait <= want && want - wait < Duration::from_secs(1),
        "{wait:?}"
    );
}

#[tokio::test]
async fn a_full_table_loses_charges_but_not_refunds() {
    let l = small_local(16, FailMode::Closed);
    let lim = limit("l", 10, 3600, None);
    // Fill every shard (one bucket each) with keys that are in use.
    let mut in_use = Vec::new();
    for i in 0..1000 {
        let key = format!("k{i}");
        if l.take("r", &lim, &key, 5).await.admitted() {
            in_use.push(key);
        }
    }
    assert_eq!(in_use.len(), 16);
    let mut refused = 0;
    for i in 0..100 {
        if let Some(reason) = l.adjust("r", &lim, &format!("new{i}"), 5).await {
            assert_eq!(reason, "local bucket table full");
            refused += 1;
        }
        assert_eq!(l.adjust("r", &lim, &format!("new{i}"), -5).await, None);
    }
    assert_eq!(refused, 100);
    // Keys with a bucket are still charged and refunded.
    assert_eq!(l.adjust("r", &lim, &in_use[0], 5).await, None);
    assert!(matches!(
        l.take("r", &lim, &in_use[0], 1).await,
        Decision::Limited { .. }
    ));
    assert_eq!(l.adjust("r", &lim, &in_use[0], -10).await, None);
    assert_eq!(remaining(&l.take("r", &lim, &in_use[0], 0).await), 10);
}

#[tokio::test]
async fn budgets_through_the_limiter() {
    use std::time::UNIX_EPOCH;
    let l = local(FailMode::Closed);
    // 2025-03-14T12:00:00Z.
    let now = UNIX_EPOCH + Duration::from_secs(1_741_953_600);
    let day = BudgetWindow::Day;
    let check = |spent_limit| l.budget_check("r", "daily", "team=a", day, spent_limit, now);
    assert_eq!(
        check(5_000_000).await,
        Decision::Allowed {
            remaining: 5_000_000,
            reset_after: Duration::from_secs(12 * 3600)
        }
    );
    assert_eq!(
        l.budget_spend("r", "daily", "team=a", day, 4_999_999, now)
            .await,
        None
    );
    assert_eq!(remaining(&check(5_000_000).await), 1);
    assert_eq!(
        l.budget_spend("r", "daily", "team=a", day, 0, now).await,
        None
    );
    assert_eq!(
        l.budget_spend("r", "daily", "team=a", day, 1, now).await,
        None
    );
    assert_eq!(
        check(5_000_000).await,
        Decision::Limited {
            retry_after: Duration::from_secs(12 * 3600)
        }
    );
    // A raised limit admits again; the month is its own budget.
    assert!(check(6_000_000).await.admitted());
    let month = l
        .budget_check("r", "daily", "team=a", BudgetWindow::Month, 1, now)
        .await;
    assert_eq!(
        month,
        Decision::Allowed {
            remaining: 1,
            reset_after: Duration::from_secs((17 * 24 + 12) * 3600)
        }
    );
}

#[tokio::test]
async fn a_full_budget_table_is_decided_by_fail_mode() {
    use std::time::UNIX_EPOCH;
    let now = UNIX_EPOCH + Duration::from_secs(1_741_953_600);
    for (mode, admitted) in [(FailMode::Open, true), (FailMode::Closed, false)] {
        let l = Limiter {
            store: Store::Local(Box::new(LocalStore {
                buckets: LocalBuckets::new(16),
                budgets: LocalBudgets::new(4),
            })),
            fail_open: mode == FailMode::Open,
        };
        for i in 0..4 {
            let key = format!("k{i}");
            assert_eq!(
                l.budget_spend("r", "b", &key, BudgetWindow::Day, 10, now)
                    .await,
                None
            );
        }
        assert_eq!(
            l.budget_spend("r", "b", "k9", BudgetWindow::Day, 10, now)
                .await,
            Some("local budget table full")
        );
        assert_eq!(
            l.budget_check("r", "b", "k9", BudgetWindow::Day, 100, now)
                .await,
            Decision::BackendDown {
                admitted,
                reason: "local budget table full".into()
            }
        );
        assert_eq!(
            remaining(
                &l.budget_check("r", "b", "k0", BudgetWindow::Day, 100, now)
                    .await
            ),
            90
        );
    }
}
