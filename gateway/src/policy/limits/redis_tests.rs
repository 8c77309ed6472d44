//! The Redis backend against a real `redis-server`, started by each test on
//! a free loopback port and killed when the test ends.
//!
//! These tests fail, never skip, when `redis-server` is missing: CI installs
//! it (Debian package `redis-server`).
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::redis_backend::{bucket_key, budget_key, BUDGET_EXPIRY_MARGIN, PROBE_EVERY, TRIP_AFTER};
use super::tests::limit;
use super::*;

/// A `redis-server` child process; killed (by its PID) on drop.
struct RedisServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl RedisServer {
    fn start() -> RedisServer {
        RedisServer::start_on(free_port())
    }

    fn start_on(port: u16) -> RedisServer {
        let mut server = RedisServer::spawn(port, &["--port".to_string(), port.to_string()]);
        server.wait_until_ready();
        server
    }

    /// Starts redis-server with `listen` (its port arguments); does not
    /// wait for it.
    fn spawn(port: u16, listen: &[String]) -> RedisServer {
        let log = std::env::temp_dir().join(format!(
            "trigate-limits-redis-{}-{port}.log",
            std::process::id()
        ));
        let child = Command::new("redis-server")
            .args(listen)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    panic!(
                        "redis-server is not installed, and the Redis rate-limit tests need it: \
                         install the Debian package (DEBIAN_FRONTEND=noninteractive apt-get install -y \
                         redis-server); CI installs it"
                    )
                }
                panic!("could not start redis-server: {e}")
            });
        RedisServer { child, port, log }
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "redis-server on port {} exited with {status}; its log ({}):\n{}",
                    self.port,
                    self.log.display(),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if ping(self.port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, signal).unwrap();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (SIGSTOP) server too.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

fn redis_limiter(url: &str, fail_mode: FailMode, timeout_ms: u64) -> Arc<Limiter> {
    Limiter::new(&RateLimitBackend {
        backend: LimitBackendKind::Redis,
        redis_url: Some(url.into()),
        redis_ca_file: None,
        fail_mode,
        timeout_ms,
    })
    .unwrap()
}

fn in_outage(l: &Limiter) -> bool {
    match &l.store {
        Store::Redis(r) => r.in_outage(),
        Store::Local(..) => panic!("not redis"),
    }
}

/// A direct connection, to look at what the script left behind.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Checks until Redis answers (not BackendDown), within `within`.
async fn wait_for_recovery(l: &Limiter, lim: &RateLimit, key: &str, within: Duration) -> Decision {
    let deadline = Instant::now() + within;
    loop {
        let d = l.check("r", lim, key).await;
        if !matches!(d, Decision::BackendDown { .. }) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery within {within:?}: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_limiters_share_one_budget() {
    let server = RedisServer::start();
    // Two gateways' limiters on one Redis: the cluster-wide case.
    let nodes = [
        redis_limiter(&server.url(), FailMode::Closed, 1000),
        redis_limiter(&server.url(), FailMode::Closed, 1000),
    ];
    assert_eq!(nodes[0].backend_name(), "redis");
    // 20 per hour: nothing refills during the test.
    let lim = Arc::new(limit("per-pod", 20, 3600, None));
    let admitted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for node in &nodes {
        for _ in 0..4 {
            let (l, lim, admitted) = (node.clone(), lim.clone(), admitted.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..10 {
                    match l.check("api", &lim, "workload=pod-a").await {
                        Decision::Allowed { .. } => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        Decision::Limited { retry_after } => {
                            // 20 per hour: one token every 180 s.
                            assert!(
                                retry_after > Duration::from_secs(170)
                                    && retry_after <= Duration::from_secs(180)
                            );
                        }
                        other => panic!("{other:?}"),
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        admitted.load(Ordering::Relaxed),
        20,
        "80 requests on two nodes against a budget of 20"
    );

    // The other node sees the same empty bucket; another key is untouched.
    assert!(matches!(
        nodes[1].check("api", &lim, "workload=pod-a").await,
        Decision::Limited { .. }
    ));
    match nodes[1].check("api", &lim, "workload=pod-b").await {
        Decision::Allowed {
            remaining,
            reset_after,
        } => {
            assert_eq!(remaining, 19);
            assert!(
                reset_after > Duration::from_secs(170) && reset_after <= Duration::from_secs(180)
            );
        }
        other => panic!("{other:?}"),
    }

    // The bucket expires when it would be full: 20 tokens × 180 s.
    let key = bucket_key("api", "per-pod", "workload=pod-a");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "PTTL {key} = {ttl}");
}

#[tokio::test]
async fn refills_by_the_server_clock_and_retry_after_is_enough() {
    let server = RedisServer::start();
    let l = redis_limiter(&server.url(), FailMode::Closed, 1000);
    // 5 per second, burst 5: a token every 200 ms.
    let lim = limit("fast", 5, 1, None);
    for left in (0..5).rev() {
        match l.check("r", &lim, "k").await {
            Decision::Allowed { remaining, .. } => assert_eq!(remaining, left),
            other => panic!("{other:?}"),
        }
    }
    let retry_after = match l.check("r", &lim, "k").await {
        Decision::Limited { retry_after } => retry_after,
        other => panic!("{other:?}"),
    };
    assert!(
        retry_after > Duration::ZERO && retry_after <= Duration::from_millis(200),
        "{retry_after:?}"
    );
    tokio::time::sleep(retry_after).await;
    assert!(matches!(
        l.check("r", &lim, "k").await,
        Decision::Allowed { remaining: 0, .. }
    ));
    // After a second of nothing the bucket is full (and gone from Redis).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(bucket_key("r", "fast", "k"))
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    assert_eq!(exists, 0, "a full bucket should have expired");
    assert!(matches!(
        l.check("r", &lim, "k").await,
        Decision::Allowed { remaining: 4, .. }
    ));
}

#[tokio::test]
async fn a_flushed_script_cache_is_reloaded() {
    let server = RedisServer::start();
    let l = redis_limiter(&server.url(), FailMode::Closed, 1000);
    let lim = limit("l", 10, 60, None);
    assert!(matches!(
        l.check("r", &lim, "k").await,
        Decision::Allowed { remaining: 9, .. }
    ));
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    // EVALSHA fails with NOSCRIPT; the script is loaded again.
    assert!(matches!(
        l.check("r", &lim, "k").await,
        Decision::Allowed { remaining: 8, .. }
    ));
}

#[tokio::test]
async fn redis_down_is_decided_by_fail_mode_and_recovers_after_a_restart() {
    let server = RedisServer::start();
    let port = server.port;
    let timeout = Duration::from_millis(200);
    let open = redis_limiter(&server.url(), FailMode::Open, 200);
    let closed = redis_limiter(&server.url(), FailMode::Closed, 200);
    let lim = limit("l", 100, 60, None);
    assert!(matches!(
        open.check("r", &lim, "k").await,
        Decision::Allowed { remaining: 99, .. }
    ));
    assert!(matches!(
        closed.check("r", &lim, "k").await,
        Decision::Allowed { remaining: 98, .. }
    ));

    drop(server);
    for (l, admitted) in [(&open, true), (&closed, false)] {
        for _ in 0..20 {
            let started = Instant::now();
            match l.check("r", &lim, "k").await {
                Decision::BackendDown {
                    admitted: a,
                    reason,
                } => {
                    assert_eq!(a, admitted);
                    assert!(reason.starts_with("redis "), "{reason}");
                }
                other => panic!("Redis is down, yet {other:?}"),
            }
            let took = started.elapsed();
            assert!(
                took < timeout + Duration::from_millis(300),
                "a check took {took:?}"
            );
        }
        assert!(in_outage(l));
    }

    // Same port, empty data: the limiters reconnect by themselves.
    let _server = RedisServer::start_on(port);
    for l in [&open, &closed] {
        let d = wait_for_recovery(l, &lim, "k", Duration::from_secs(10)).await;
        assert!(matches!(d, Decision::Allowed { .. }), "{d:?}");
        assert!(!in_outage(l));
    }
}

#[tokio::test]
async fn a_hung_redis_costs_at_most_the_timeout() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(100);
    let l = redis_limiter(&server.url(), FailMode::Closed, 100);
    let lim = limit("l", 100, 60, None);
    assert!(matches!(
        l.check("r", &lim, "k").await,
        Decision::Allowed { .. }
    ));

    // Stopped, not dead: connections stay open and nothing answers.
    server.signal(Signal::SIGSTOP);
    let started = Instant::now();
    match l.check("r", &lim, "k").await {
        Decision::BackendDown {
            admitted: false,
            reason,
        } => assert_eq!(reason, "redis timeout"),
        other => panic!("{other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(300),
        "took {took:?}"
    );
    // Once Redis counts as down (a few timeouts in a row), most requests do
    // not wait at all; one per probe interval waits its timeout.
    let started = Instant::now();
    let mut waited = 0;
    for _ in 0..50 {
        let one = Instant::now();
        assert!(matches!(
            l.check("r", &lim, "k").await,
            Decision::BackendDown {
                admitted: false,
                ..
            }
        ));
        if one.elapsed() >= timeout {
            waited += 1;
        }
    }
    let probes_possible = started.elapsed().as_millis() / PROBE_EVERY.as_millis() + 1;
    assert!(
        waited as u128 <= probes_possible + u128::from(TRIP_AFTER),
        "{waited} checks waited; {probes_possible} probes possible"
    );

    server.signal(Signal::SIGCONT);
    let d = wait_for_recovery(&l, &lim, "k", Duration::from_secs(10)).await;
    assert!(matches!(d, Decision::Allowed { .. }), "{d:?}");
}

#[tokio::test]
async fn connects_lazily_to_a_redis_that_comes_later() {
    let port = free_port();
    // Nothing listens yet: building the limiter must not fail or wait.
    let l = redis_limiter(&format!("redis://127.0.0.1:{port}/0"), FailMode::Open, 200);
    let lim = limit("l", 10, 60, None);
    let started = Instant::now();
    assert!(matches!(
        l.check("r", &lim, "k").await,
        Decision::BackendDown { admitted: true, .. }
    ));
    assert!(started.elapsed() < Duration::from_millis(500));

    let _server = RedisServer::start_on(port);
    let d = wait_for_recovery(&l, &lim, "k", Duration::from_secs(10)).await;
    assert!(matches!(d, Decision::Allowed { remaining: 9, .. }), "{d:?}");
}

#[tokio::test]
async fn one_slow_answer_does_not_refuse_everyone() {
    let server = RedisServer::start();
    let l = redis_limiter(&server.url(), FailMode::Closed, 100);
    let lim = limit("l", 100, 3600, None);
    assert!(matches!(
        l.check("r", &lim, "k").await,
        Decision::Allowed { .. }
    ));
    server.signal(Signal::SIGSTOP);
    assert!(matches!(
        l.check("r", &lim, "k").await,
        Decision::BackendDown {
            admitted: false,
            ..
        }
    ));
    server.signal(Signal::SIGCONT);
    // The next request goes to Redis rather than being refused for the
    // blip. (The timed-out request's script ran late: its token is spent.)
    match l.check("r", &lim, "k").await {
        Decision::Allowed { remaining, .. } => assert_eq!(remaining, 97),
        other => panic!("{other:?}"),
    }
    assert!(!in_outage(&l));
}

/// A CA and a `redis-server` with TLS only, its certificate for 127.0.0.1
/// signed by that CA.
struct TlsRedis {
    server: RedisServer,
    ca_file: PathBuf,
    dir: PathBuf,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let dir = std::env::temp_dir().join(format!(
            "trigate-redis-tls-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, &ca_key);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.subject_alt_names = vec![SanType::IpAddress(Ipv4Addr::LOCALHOST.into())];
        let leaf = leaf.signed_by(&key, &issuer).unwrap();
        let path = |name: &str| dir.join(name);
        std::fs::write(path("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(path("redis.pem"), leaf.pem()).unwrap();
        std::fs::write(path("redis.key"), key.serialize_pem()).unwrap();
        let port = free_port();
        let tls_args = [
            "--port".to_string(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            path("redis.pem").display().to_string(),
            "--tls-key-file".into(),
            path("redis.key").display().to_string(),
            "--tls-ca-cert-file".into(),
            path("ca.pem").display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        let server = RedisServer::spawn(port, &tls_args);
        TlsRedis {
            server,
            ca_file: path("ca.pem"),
            dir,
        }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.server.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn rediss_is_verified_against_the_configured_ca() {
    let tls = TlsRedis::start();
    let backend = |ca: Option<PathBuf>| {
        Limiter::new(&RateLimitBackend {
            backend: LimitBackendKind::Redis,
            redis_url: Some(tls.url()),
            redis_ca_file: ca,
            fail_mode: FailMode::Closed,
            timeout_ms: 1000,
        })
        .unwrap()
    };
    let lim = limit("tls", 2, 3600, None);
    let trusted = backend(Some(tls.ca_file.clone()));
    // The server takes a moment to accept TLS after it listens.
    let first = wait_for_recovery(&trusted, &lim, "k", Duration::from_secs(10)).await;
    assert!(
        matches!(first, Decision::Allowed { remaining: 1, .. }),
        "{first:?}"
    );
    assert!(matches!(
        trusted.check("r", &lim, "k").await,
        Decision::Allowed { .. }
    ));
    assert!(matches!(
        trusted.check("r", &lim, "k").await,
        Decision::Limited { .. }
    ));
    // Verified against the Mozilla roots, the test CA's certificate fails:
    // the backend counts as down and this limiter fails closed.
    let untrusted = backend(None);
    let d = untrusted.check("r", &lim, "other").await;
    assert!(
        matches!(
            d,
            Decision::BackendDown {
                admitted: false,
                ..
            }
        ),
        "an unverifiable server must not be used: {d:?}"
    );
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
async fn take_and_adjust_on_redis() {
    let server = RedisServer::start();
    let l = redis_limiter(&server.url(), FailMode::Closed, 1000);
    // 100 per hour, burst 100: a token every 36 s, nothing refills here.
    let lim = limit("tokens", 100, 3600, None);
    assert_eq!(remaining(&l.take("r", &lim, "k", 30).await), 70);
    assert_eq!(remaining(&l.check("r", &lim, "k").await), 69);
    // Never fits: the time to fill the whole bucket; nothing is taken.
    assert_eq!(
        retry_after(&l.take("r", &lim, "k", 101).await),
        Duration::from_secs(3600)
    );
    assert_eq!(remaining(&l.take("r", &lim, "k", 0).await), 69);
    // Refunds up to the bucket's size, no further.
    assert_eq!(l.adjust("r", &lim, "k", -9).await, None);
    assert_eq!(remaining(&l.take("r", &lim, "k", 0).await), 78);
    assert_eq!(l.adjust("r", &lim, "k", -1000).await, None);
    assert_eq!(remaining(&l.take("r", &lim, "k", 0).await), 100);
    // A charge beyond what is there is a debt: 100 - 150 = -50, so one
    // token is 51 × 36 s away, and the bucket lives until it is full.
    assert_eq!(l.adjust("r", &lim, "k", 150).await, None);
    let wait = retry_after(&l.take("r", &lim, "k", 1).await);
    let want = Duration::from_secs(51 * 36);
    assert!(
        wait <= want && want - wait < Duration::from_secs(1),
        "{wait:?}"
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(bucket_key("r", "tokens", "k"))
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    assert!(ttl > 5_390_000 && ttl <= 5_400_000, "PTTL {ttl}");
    // Refunding a key Redis has no bucket for leaves a full bucket.
    assert_eq!(l.adjust("r", &lim, "fresh", -5).await, None);
    assert_eq!(remaining(&l.take("r", &lim, "fresh", 1).await), 99);
}

#[tokio::test]
async fn a_debt_on_redis_refills_by_the_server_clock() {
    let server = RedisServer::start();
    let l = redis_limiter(&server.url(), FailMode::Closed, 1000);
    // 10 per second, burst 10.
    let lim = limit("fast", 10, 1, None);
    assert_eq!(remaining(&l.take("r", &lim, "k", 10).await), 0);
    assert_eq!(l.adjust("r", &lim, "k", 3).await, None);
    // -3 and one more: ~400 ms.
    let wait = retry_after(&l.take("r", &lim, "k", 1).await);
    assert!(
        wait > Duration::from_millis(300) && wait <= Duration::from_millis(400),
        "{wait:?}"
    );
    tokio::time::sleep(wait).await;
    assert!(l.take("r", &lim, "k", 1).await.admitted());
}

#[tokio::test]
async fn redis_and_local_agree_on_takes_and_adjustments() {
    let server = RedisServer::start();
    let on_redis = redis_limiter(&server.url(), FailMode::Closed, 1000);
    let on_node = Limiter::new(&RateLimitBackend::default()).unwrap();
    let lim = limit("tokens", 50, 3600, Some(40));
    let steps: [(bool, i64); 14] = [
        (true, 10),
        (true, 25),
        (true, 10),
        (false, 12),
        (true, 0),
        (true, 1),
        (false, -30),
        (true, 41),
        (true, 40),
        (false, -7),
        (true, 7),
        (false, 100),
        (true, 0),
        (false, -1000),
    ];
    for (i, (is_take, n)) in steps.into_iter().enumerate() {
        if is_take {
            let cost = u64::try_from(n).unwrap();
            let a = on_redis.take("r", &lim, "k", cost).await;
            let b = on_node.take("r", &lim, "k", cost).await;
            match (&a, &b) {
                (
                    Decision::Allowed { remaining: x, .. },
                    Decision::Allowed { remaining: y, .. },
                ) => assert_eq!(x, y, "step {i}"),
                (Decision::Limited { retry_after: x }, Decision::Limited { retry_after: y }) => {
                    let gap = if x > y { *x - *y } else { *y - *x };
                    assert!(gap < Duration::from_millis(500), "step {i}: {a:?} {b:?}");
                }
                _ => panic!("step {i}: redis {a:?}, local {b:?}"),
            }
        } else {
            assert_eq!(on_redis.adjust("r", &lim, "k", n).await, None);
            assert_eq!(on_node.adjust("r", &lim, "k", n).await, None);
        }
    }
    assert_eq!(remaining(&on_redis.take("r", &lim, "k", 0).await), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_on_redis_are_shared_and_expire_after_their_window() {
    use std::time::{SystemTime, UNIX_EPOCH};
    let server = RedisServer::start();
    let nodes = [
        redis_limiter(&server.url(), FailMode::Closed, 1000),
        redis_limiter(&server.url(), FailMode::Closed, 1000),
    ];
    let now = SystemTime::now();
    let (day_id, day_end) = window_bounds(BudgetWindow::Day, now);
    let until_end = day_end.duration_since(now).unwrap();
    let limit_micros = 1_000_000;
    match nodes[0]
        .budget_check(
            "api",
            "daily",
            "team=a",
            BudgetWindow::Day,
            limit_micros,
            now,
        )
        .await
    {
        Decision::Allowed {
            remaining,
            reset_after,
        } => {
            assert_eq!(remaining, limit_micros);
            assert_eq!(reset_after, until_end);
        }
        other => panic!("{other:?}"),
    }
    // Both nodes spend concurrently into one counter: 2 × 5 × 5 × 10 000.
    let mut tasks = Vec::new();
    for node in &nodes {
        for _ in 0..5 {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    let r = node
                        .budget_spend("api", "daily", "team=a", BudgetWindow::Day, 10_000, now)
                        .await;
                    assert_eq!(r, None);
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for node in &nodes {
        assert_eq!(
            remaining(
                &node
                    .budget_check(
                        "api",
                        "daily",
                        "team=a",
                        BudgetWindow::Day,
                        limit_micros,
                        now
                    )
                    .await
            ),
            500_000
        );
    }
    assert_eq!(
        nodes[1]
            .budget_spend("api", "daily", "team=a", BudgetWindow::Day, 500_000, now)
            .await,
        None
    );
    let refused = nodes[0]
        .budget_check(
            "api",
            "daily",
            "team=a",
            BudgetWindow::Day,
            limit_micros,
            now,
        )
        .await;
    assert_eq!(
        refused,
        Decision::Limited {
            retry_after: until_end.max(Duration::from_secs(1))
        }
    );

    // The counter is a plain integer under a key naming the window, and
    // expires an hour after the window ends.
    let key = budget_key("api", "daily", "team=a", BudgetWindow::Day, &day_id);
    assert!(key.starts_with("trigate:budget:api:daily:day:"), "{key}");
    let mut conn = raw(&server).await;
    let spent: i64 = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(spent, 1_000_000);
    let expire_at: i64 = redis::cmd("EXPIRETIME")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let want = (day_end + BUDGET_EXPIRY_MARGIN)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(u64::try_from(expire_at).unwrap(), want);

    // The month window is another counter; the next day starts at zero.
    assert!(nodes[0]
        .budget_check(
            "api",
            "daily",
            "team=a",
            BudgetWindow::Month,
            limit_micros,
            now
        )
        .await
        .admitted());
    assert_eq!(
        remaining(
            &nodes[0]
                .budget_check(
                    "api",
                    "daily",
                    "team=a",
                    BudgetWindow::Day,
                    limit_micros,
                    day_end
                )
                .await
        ),
        limit_micros
    );
}

#[tokio::test]
async fn redis_down_decides_budgets_by_fail_mode_and_loses_usage() {
    let server = RedisServer::start();
    let now = std::time::SystemTime::now();
    let open = redis_limiter(&server.url(), FailMode::Open, 200);
    let closed = redis_limiter(&server.url(), FailMode::Closed, 200);
    let lim = limit("tokens", 100, 3600, None);
    for l in [&open, &closed] {
        assert!(l
            .budget_check("r", "b", "k", BudgetWindow::Month, 10, now)
            .await
            .admitted());
    }
    drop(server);
    for (l, admitted) in [(&open, true), (&closed, false)] {
        match l
            .budget_check("r", "b", "k", BudgetWindow::Month, 10, now)
            .await
        {
            Decision::BackendDown {
                admitted: a,
                reason,
            } => {
                assert_eq!(a, admitted);
                assert!(reason.starts_with("redis "), "{reason}");
            }
            other => panic!("Redis is down, yet {other:?}"),
        }
        assert!(matches!(
            l.take("r", &lim, "k", 5).await,
            Decision::BackendDown { .. }
        ));
        let started = Instant::now();
        let reason = l.adjust("r", &lim, "k", 5).await;
        assert!(
            reason.is_some_and(|r| r.starts_with("redis ")),
            "{reason:?}"
        );
        let reason = l
            .budget_spend("r", "b", "k", BudgetWindow::Month, 5, now)
            .await;
        assert!(
            reason.is_some_and(|r| r.starts_with("redis ")),
            "{reason:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(1000));
        assert!(in_outage(l));
    }
}
