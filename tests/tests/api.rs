//! The API gate end to end: routes with rewrites, API-key authentication,
//! authorization and rate limits per workload, HTTP/2 from the client,
//! upstream failures with retries, and TLS termination with HTTP/2.

use anyhow::{ensure, Result};
use serde_json::{json, Value};
use std::time::Duration;
use trigate_e2e::{
    free_port, log_str, log_u64, Daemon, Destination, JwtSigner, Node, Pod, Runner, TempFile,
    TestCa, Upstream, CMD_TIMEOUT,
};

const LOG_WAIT: Duration = Duration::from_secs(5);

/// The API key the tests present; the config holds its SHA-256.
const KEY: &str = "s3cret";

/// curl in `pod` with extra arguments; prints status, then headers and body.
fn curl(pod: &Pod, args: &[&str]) -> Result<(u16, String, String)> {
    let env = trigate_e2e::env()?;
    let mut all = vec!["-sS", "--noproxy", "*", "--max-time", "10", "-i"];
    all.extend_from_slice(args);
    let out = pod.run(&env.curl, &all, CMD_TIMEOUT)?.check("curl")?;
    let text = out.stdout.replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_ascii_lowercase(), body.to_string()))
}

/// Waits for a request access-log line matching `want`.
fn poll_until_logged(d: &Daemon, want: impl Fn(&Value) -> bool) -> Result<()> {
    let deadline = std::time::Instant::now() + LOG_WAIT;
    while std::time::Instant::now() < deadline {
        if request_logs(d).iter().any(&want) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("no matching request log line: {:?}", request_logs(d))
}

fn request_logs(d: &Daemon) -> Vec<Value> {
    d.access_logs()
        .into_iter()
        .filter(|l| log_str(l, "message") == Some("request"))
        .collect()
}

fn sha256_hex(s: &str) -> String {
    // Computed by the system tool so the test does not trust our own code.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s '{s}' | sha256sum"))
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Two pods; the upstream sits on pod-a's veth and pod-b has a route to it.
fn two_pods_one_upstream(node: &Node) -> Result<(Pod, Pod, Upstream)> {
    let pod_a = node.pod("pod-a")?;
    let pod_b = node.pod("pod-b")?;
    pod_b.route_to(pod_a.host_ip.into())?;
    let up = Upstream::start(pod_a.host_ip.into())?;
    Ok((pod_a, pod_b, up))
}

/// Runs a python3 script in the pod; fails when it exits non-zero.
fn python(pod: &Pod, script: &str) -> Result<trigate_e2e::CmdOutput> {
    let env = trigate_e2e::env()?;
    pod.run(&env.python3, &["-c", script], CMD_TIMEOUT)?
        .check("python3 in pod")
}

fn api_destination(up: &Upstream) -> Destination {
    Destination::redirect("api").addr(up.ip()).port(up.port())
}

#[test]
fn routes_rewrite_and_api_keys_authenticate() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let up = Upstream::start(pod.host_ip.into())?;
    let cfg = node
        .config()
        .set(
            "/auth",
            json!({"api_keys": [{"name": "ci", "sha256": sha256_hex(KEY)}]}),
        )
        .set(
            "/routes",
            json!([
                {
                    "name": "public",
                    "match": {"path": {"prefix": "/public"}},
                    "rewrite_prefix": "/v2",
                    "request_headers": {"set": {"x-gw": "trigate"}, "remove": ["x-secret"]},
                    "response_headers": {"set": {"x-route": "public"}}
                },
                {"name": "keyed", "match": {"path": {"prefix": "/keyed"}}, "authn": ["api-key"]}
            ]),
        )
        .destination(api_destination(&up))
        .workload(pod.workload());
    let d = node.start(&set_gate_api(cfg))?;

    let url = |p: &str| format!("http://{}{p}", up.addr());
    let (status, head, body) = curl(&pod, &["-H", "x-secret: hush", &url("/public/x?q=1")])?;
    ensure!(status == 200, "public: {status} {head} {body}");
    ensure!(
        body.starts_with("hello from upstream path=/v2/x?q=1 "),
        "rewrite not applied: {body}"
    );
    ensure!(
        head.contains("x-route: public"),
        "response header not set: {head}"
    );
    let upstream_head = up
        .heads()
        .last()
        .cloned()
        .unwrap_or_default()
        .to_ascii_lowercase();
    ensure!(
        upstream_head.contains("x-gw: trigate"),
        "request header not set upstream: {upstream_head}"
    );
    ensure!(
        !upstream_head.contains("x-secret"),
        "removed header reached upstream: {upstream_head}"
    );

    let (status, head, body) = curl(&pod, &[&url("/keyed")])?;
    ensure!(status == 401, "no key should be 401: {status} {body}");
    ensure!(
        head.contains("www-authenticate:"),
        "401 without WWW-Authenticate: {head}"
    );
    let err: Value = serde_json::from_str(&body)?;
    ensure!(
        err["error"]["type"] == "unauthenticated",
        "error body: {body}"
    );
    let (status, _, body) = curl(&pod, &["-H", "x-api-key: wrong", &url("/keyed")])?;
    ensure!(status == 401, "wrong key should be 401: {status} {body}");
    ensure!(
        !body.contains("wrong"),
        "the refusal must not echo the key: {body}"
    );
    let (status, _, body) = curl(&pod, &["-H", &format!("x-api-key: {KEY}"), &url("/keyed")])?;
    ensure!(status == 200, "right key should pass: {status} {body}");
    ensure!(
        up.requests().iter().filter(|(_, p)| p == "/keyed").count() == 1,
        "only the authenticated request may reach the upstream: {:?}",
        up.requests()
    );

    trigate_e2e::poll_until(LOG_WAIT, "four request log lines", || {
        Ok((request_logs(&d).len() >= 4).then_some(()))
    })?;
    // Each curl was one connection: its line counts the bytes both ways
    // (the request head at least, and the response with its status line).
    let connections = || -> Vec<Value> {
        d.access_logs()
            .into_iter()
            .filter(|l| log_str(l, "message") == Some("connection"))
            .collect()
    };
    trigate_e2e::poll_until(LOG_WAIT, "four connection log lines", || {
        Ok((connections().len() >= 4).then_some(()))
    })?;
    let lines = connections();
    ensure!(
        lines
            .iter()
            .all(|l| log_u64(l, "bytes_sent").unwrap_or(0) > 40
                && log_u64(l, "bytes_received").unwrap_or(0) > 60),
        "connection lines must count the bytes: {lines:#?}"
    );
    let logs = request_logs(&d);
    let public = logs
        .iter()
        .find(|l| log_str(l, "route") == Some("public"))
        .cloned()
        .unwrap_or_default();
    ensure!(
        log_str(&public, "workload") == Some("pod-a") && log_u64(&public, "status") == Some(200),
        "{public}"
    );
    let keyed_ok = logs.iter().any(|l| {
        log_str(l, "route") == Some("keyed") && log_str(l, "caller") == Some("api-key:ci")
    });
    ensure!(
        keyed_ok,
        "no access line for the authenticated request: {logs:?}"
    );
    Ok(())
}

/// The test config builder has no gate setter: set `gate: api` on every
/// destination.
fn set_gate_api(cfg: trigate_e2e::Config) -> trigate_e2e::Config {
    cfg.gate_all("api")
}

#[test]
fn limits_and_authorization_are_per_workload() -> Result<()> {
    let node = Node::new()?;
    let (pod_a, pod_b, up) = two_pods_one_upstream(&node)?;
    let cfg = set_gate_api(
        node.config()
            .set(
                "/routes",
                json!([
                    {"name": "admin", "match": {"path": {"prefix": "/admin"}}, "allow": [{"workloads": ["pod-a"]}]},
                    {"name": "limited", "match": {"path": {"prefix": "/"}}, "limits": [{"name": "per-workload", "requests": 2, "per_secs": 60}]}
                ]),
            )
            .destination(api_destination(&up))
            .workload(pod_a.workload())
            .workload(pod_b.workload()),
    );
    let d = node.start(&cfg)?;
    let url = |p: &str| format!("http://{}{p}", up.addr());

    for i in 0..2 {
        let (status, head, _) = curl(&pod_a, &[&url("/x")])?;
        ensure!(status == 200, "request {i} of pod-a: {status}");
        ensure!(
            head.contains("ratelimit-remaining:"),
            "no rate-limit headers: {head}"
        );
    }
    let (status, head, body) = curl(&pod_a, &[&url("/x")])?;
    ensure!(
        status == 429,
        "third request of pod-a should be limited: {status} {body}"
    );
    ensure!(
        head.contains("retry-after:"),
        "429 without Retry-After: {head}"
    );
    let err: Value = serde_json::from_str(&body)?;
    ensure!(err["error"]["type"] == "rate_limited", "{body}");
    let (status, _, _) = curl(&pod_b, &[&url("/x")])?;
    ensure!(status == 200, "pod-b has its own budget: {status}");

    let (status, _, _) = curl(&pod_a, &[&url("/admin")])?;
    ensure!(status == 200, "pod-a may use /admin: {status}");
    let (status, _, body) = curl(&pod_b, &[&url("/admin")])?;
    ensure!(status == 403, "pod-b may not use /admin: {status} {body}");
    ensure!(body.contains("forbidden"), "{body}");
    let m = d.metrics()?;
    ensure!(
        m.sum(
            "trigate_rate_limit_decisions_total",
            &[("decision", "limited")]
        ) >= 1.0,
        "limited decisions not counted:\n{}",
        m.text
    );
    ensure!(
        m.sum(
            "trigate_http_requests_total",
            &[("status", "429"), ("workload", "pod-a")]
        ) >= 1.0,
        "429 not counted:\n{}",
        m.text
    );
    Ok(())
}

#[test]
fn http2_clients_and_upstream_failures() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let up = Upstream::start(pod.host_ip.into())?;
    let dead_port = free_port(pod.host_ip.into())?;
    let cfg = set_gate_api(
        node.config()
            .set(
                "/routes",
                json!([{"name": "retrying", "match": {"path": {"prefix": "/"}}, "retries": {"attempts": 2, "backoff_ms": 10}}]),
            )
            .destination(api_destination(&up))
            .destination(Destination::redirect("dead").addr(pod.host_ip.into()).port(dead_port))
            .workload(pod.workload()),
    );
    let d = node.start(&cfg)?;

    // HTTP/2 with prior knowledge from the client, HTTP/1.1 upstream.
    let (status, _, body) = curl(
        &pod,
        &[
            "--http2-prior-knowledge",
            &format!("http://{}/h2", up.addr()),
        ],
    )?;
    ensure!(
        status == 200 && body.starts_with("hello from upstream path=/h2 "),
        "h2: {status} {body}"
    );
    let line = d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "path") == Some("/h2"))?;
    ensure!(log_str(&line, "version") == Some("HTTP/2.0"), "{line}");

    // Nothing listens: retried, then 503 in the API's error shape.
    let (status, _, body) = curl(&pod, &[&format!("http://{}:{dead_port}/gone", pod.host_ip)])?;
    ensure!(
        status == 503,
        "dead upstream should be 503: {status} {body}"
    );
    let err: Value = serde_json::from_str(&body)?;
    ensure!(err["error"]["type"] == "upstream_unavailable", "{body}");
    let line = d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "path") == Some("/gone"))?;
    ensure!(
        log_u64(&line, "attempts") == Some(3),
        "expected 3 attempts: {line}"
    );
    // A POST with a body is retried too when the connect failed: nothing
    // of it had been sent.
    let (status, _, body) = curl(
        &pod,
        &[
            "--data-binary",
            "payload",
            &format!("http://{}:{dead_port}/gone-post", pod.host_ip),
        ],
    )?;
    ensure!(status == 503, "dead upstream POST: {status} {body}");
    let line = d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "path") == Some("/gone-post"))?;
    ensure!(
        log_u64(&line, "attempts") == Some(3),
        "a failed connect is retried for any method: {line}"
    );
    ensure!(
        d.metrics()?
            .sum("trigate_http_retries_total", &[("route", "retrying")])
            >= 4.0,
        "retries not counted"
    );
    ensure!(
        d.metrics()?.sum(
            "trigate_upstream_errors_total",
            &[("kind", "upstream_unavailable")]
        ) >= 1.0,
        "upstream errors not counted"
    );
    Ok(())
}

#[test]
fn slow_upstream_times_out_with_504() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let slow = Upstream::start_slow(pod.host_ip.into(), Duration::from_secs(3))?;
    let cfg = set_gate_api(
        node.config()
            .set("/routes", json!([{"name": "impatient", "timeout_ms": 300}]))
            .destination(api_destination(&slow))
            .workload(pod.workload()),
    );
    let d = node.start(&cfg)?;
    let started = std::time::Instant::now();
    let (status, _, body) = curl(&pod, &[&format!("http://{}/slow", slow.addr())])?;
    ensure!(
        status == 504,
        "a slow upstream should give 504: {status} {body}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(2),
        "504 should come after the route's 300 ms, took {:?}",
        started.elapsed()
    );
    let err: Value = serde_json::from_str(&body)?;
    ensure!(err["error"]["type"] == "upstream_timeout", "{body}");
    let line = d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "path") == Some("/slow"))?;
    ensure!(
        log_str(&line, "outcome") == Some("upstream_timeout"),
        "{line}"
    );
    Ok(())
}

#[test]
fn terminate_with_the_api_gate_serves_http2_and_http11_clients() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let test_ca = TestCa::new()?;
    let test_ca_file = TempFile::new("upstream-ca.pem", test_ca.pem())?;
    let up = Upstream::start_tls(pod.host_ip.into(), &test_ca, &["api.e2e.test"])?;
    let ca_dir = TempFile::new("README", "node CA\n")?;
    let ca_cert = ca_dir.path().with_file_name("ca.crt");
    let cfg = set_gate_api(
        node.config()
            .set(
                "/tls",
                json!({"ca_cert": ca_cert, "ca_key": ca_dir.path().with_file_name("ca.key"), "upstream_ca_files": [test_ca_file.path()]}),
            )
            .set("/routes", json!([{"name": "all", "response_headers": {"set": {"x-gw": "1"}}}]))
            .dns_host("api.e2e.test", &[up.ip()])
            .destination(
                Destination::redirect("api")
                    .host("api.e2e.test")
                    .port(up.port())
                    .tls(json!({"mode": "terminate"})),
            )
            .workload(pod.workload()),
    );
    let d = node.start(&cfg)?;
    let resolve = format!("api.e2e.test:{}:{}", up.port(), up.ip());
    let cafile = ca_cert.to_string_lossy().to_string();
    let (status, head, body) = curl(
        &pod,
        &[
            "--http2",
            "--cacert",
            &cafile,
            "--resolve",
            &resolve,
            &format!("https://api.e2e.test:{}/tls-h2", up.port()),
        ],
    )?;
    ensure!(
        status == 200 && body.starts_with("hello from upstream path=/tls-h2 "),
        "{status} {head} {body}"
    );
    ensure!(
        head.starts_with("http/2"),
        "the client should get HTTP/2: {head}"
    );
    ensure!(head.contains("x-gw: 1"), "route applied: {head}");
    let line = d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "path") == Some("/tls-h2"))?;
    ensure!(
        log_str(&line, "route") == Some("all") && log_u64(&line, "status") == Some(200),
        "{line}"
    );
    // An HTTP/1.1 client over the same terminated TLS goes through the
    // HTTP/1.1 relay, which speaks TLS upstream itself.
    let (status, head, body) = curl(
        &pod,
        &[
            "--http1.1",
            "--cacert",
            &cafile,
            "--resolve",
            &resolve,
            &format!("https://api.e2e.test:{}/tls-h1", up.port()),
        ],
    )?;
    ensure!(
        status == 200 && body.starts_with("hello from upstream path=/tls-h1 "),
        "{status} {head} {body}"
    );
    ensure!(
        head.starts_with("http/1.1 200"),
        "HTTP/1.1 to the client: {head}"
    );
    ensure!(
        head.contains("x-gw: 1"),
        "route applied on the relay too: {head}"
    );
    let line = d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "path") == Some("/tls-h1"))?;
    ensure!(
        log_str(&line, "version") == Some("HTTP/1.1") && log_u64(&line, "status") == Some(200),
        "{line}"
    );
    Ok(())
}

/// base64url without padding (RFC 7515).
#[test]
fn jwt_tokens_are_verified_and_claims_authorize() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let up = Upstream::start(pod.host_ip.into())?;
    let signer = JwtSigner::new()?;
    let jwks = TempFile::new("jwks.json", &signer.jwks())?;
    let cfg = set_gate_api(
        node.config()
            .set(
                "/auth",
                json!({"jwt": [{"name": "corp", "issuer": "https://idp.e2e.test", "audiences": ["api"], "jwks_file": jwks.path()}]}),
            )
            .set(
                "/routes",
                json!([{"name": "finance", "authn": ["jwt:corp"], "allow": [{"claims": {"team": ["finance"]}}]}]),
            )
            .destination(api_destination(&up))
            .workload(pod.workload()),
    );
    let _d = node.start(&cfg)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = |aud: &str, exp: u64, team: &str| json!({"iss": "https://idp.e2e.test", "sub": "alice", "aud": aud, "exp": exp, "team": team});
    let call = |token: &str| -> Result<(u16, String, String)> {
        curl(
            &pod,
            &[
                "-H",
                &format!("authorization: Bearer {token}"),
                &format!("http://{}/ledger", up.addr()),
            ],
        )
    };

    let (status, _, body) = call(&signer.token(&claims("api", now + 300, "finance"))?)?;
    ensure!(
        status == 200 && body.starts_with("hello from upstream path=/ledger "),
        "valid token: {status} {body}"
    );

    let (status, head, body) = call(&signer.token(&claims("api", now - 3600, "finance"))?)?;
    ensure!(status == 401, "expired token: {status} {body}");
    ensure!(
        head.contains("invalid_token"),
        "WWW-Authenticate should say invalid_token: {head}"
    );
    ensure!(body.contains("expired"), "{body}");

    let (status, _, body) = call(&signer.token(&claims("other-api", now + 300, "finance"))?)?;
    ensure!(
        status == 401 && body.contains("audience"),
        "wrong audience: {status} {body}"
    );

    let (status, _, body) = call(&signer.token(&claims("api", now + 300, "legal"))?)?;
    ensure!(
        status == 403,
        "the legal team may not use the finance route: {status} {body}"
    );

    let other = JwtSigner::new()?;
    let (status, _, body) = call(&other.token(&claims("api", now + 300, "finance"))?)?;
    ensure!(
        status == 401,
        "a token signed by another key: {status} {body}"
    );
    ensure!(
        up.requests().len() == 1,
        "only the valid request may reach the upstream: {:?}",
        up.requests()
    );
    Ok(())
}

#[test]
fn redis_backed_limits_are_shared_by_two_daemons_and_fail_open() -> Result<()> {
    let mut redis = trigate_e2e::RedisServer::start()?;
    // Two nodes, each with its own daemon and pod: two gateways in a cluster.
    let node_a = Node::new()?;
    let node_b = Node::new()?;
    let pod_a = node_a.pod("pod-a")?;
    let pod_b = node_b.pod("pod-b")?;
    pod_b.route_to(pod_a.host_ip.into())?;
    let up = Upstream::start(pod_a.host_ip.into())?;
    let config = |node: &Node, pod: &Pod| {
        set_gate_api(
            node.config()
                .set("/rate_limits", json!({"backend": "redis", "redis_url": redis.url(), "fail_mode": "open", "timeout_ms": 200}))
                .set(
                    "/routes",
                    json!([{"name": "shared", "limits": [{"name": "cluster", "key": "route", "requests": 3, "per_secs": 3600}]}]),
                )
                .destination(api_destination(&up))
                .workload(pod.workload()),
        )
    };
    let d_a = node_a.start(&config(&node_a, &pod_a))?;
    let d_b = node_b.start(&config(&node_b, &pod_b))?;
    let url = format!("http://{}/shared", up.addr());
    let mut statuses = Vec::new();
    for pod in [&pod_a, &pod_b, &pod_a, &pod_b] {
        statuses.push(curl(pod, &[&url])?.0);
    }
    ensure!(
        statuses.iter().filter(|s| **s == 200).count() == 3
            && statuses.iter().filter(|s| **s == 429).count() == 1,
        "3 requests per hour across both gateways: {statuses:?}"
    );

    // Redis gone, fail-open: requests pass and the decision is counted.
    redis.kill();
    let (status, _, body) = curl(&pod_a, &[&url])?;
    ensure!(
        status == 200,
        "fail-open should admit while Redis is down: {status} {body}"
    );
    let m = d_a.metrics()?;
    ensure!(
        m.sum(
            "trigate_rate_limit_decisions_total",
            &[("decision", "backend_down_admitted")]
        ) >= 1.0,
        "backend-down decisions not counted:\n{}",
        m.text
    );
    drop(d_b);
    Ok(())
}

#[test]
fn upgrades_pass_through_as_a_byte_relay() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let up = Upstream::start(pod.host_ip.into())?;
    let cfg = set_gate_api(
        node.config()
            .set("/routes", json!([{"name": "ws"}]))
            .destination(api_destination(&up))
            .workload(pod.workload()),
    );
    let d = node.start(&cfg)?;
    let script = format!(
        r#"
import socket
s = socket.create_connection(("{ip}", {port}), timeout=5)
s.sendall(b"GET /ws HTTP/1.1\r\nHost: up\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = s.recv(1024)
    if not chunk:
        break
    buf += chunk
head, rest = buf.split(b"\r\n\r\n", 1)
print(head.split(b"\r\n")[0].decode())
s.sendall(b"ping-123")
data = rest
while len(data) < 8:
    data += s.recv(1024)
print(data.decode())
"#,
        ip = up.ip(),
        port = up.port()
    );
    let out = python(&pod, &script)?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    ensure!(
        lines.first().is_some_and(|l| l.starts_with("HTTP/1.1 101")),
        "expected 101 Switching Protocols: {:?}",
        out.stdout
    );
    ensure!(
        lines.get(1) == Some(&"ping-123"),
        "bytes after the upgrade should echo: {:?}",
        out.stdout
    );
    let line = d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "path") == Some("/ws"))?;
    ensure!(log_u64(&line, "status") == Some(101), "{line}");
    Ok(())
}

#[test]
fn clusters_balance_and_eject_a_failing_endpoint() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let front = Upstream::start(pod.host_ip.into())?;
    let up1 = Upstream::start(pod.host_ip.into())?;
    let up2 = Upstream::start(pod.host_ip.into())?;
    let dead = format!("{}:{}", pod.host_ip, free_port(pod.host_ip.into())?);
    let cfg = set_gate_api(
        node.config()
            .set(
                "/clusters",
                json!([{"name": "pool", "endpoints": [up1.addr().to_string(), dead, up2.addr().to_string()],
                        "consecutive_failures": 1, "eject_secs": 60}]),
            )
            .set(
                "/routes",
                json!([{"name": "balanced", "upstream": "pool", "retries": {"attempts": 2, "backoff_ms": 1}}]),
            )
            .destination(api_destination(&front))
            .workload(pod.workload()),
    );
    let d = node.start(&cfg)?;
    for i in 0..6 {
        let (status, _, body) = curl(&pod, &[&format!("http://{}/item/{i}", front.addr())])?;
        ensure!(
            status == 200,
            "request {i} should find a live endpoint: {status} {body}"
        );
    }
    ensure!(
        front.requests().is_empty(),
        "the cluster replaces the original destination"
    );
    ensure!(
        !up1.requests().is_empty() && !up2.requests().is_empty(),
        "both live endpoints should serve: {} and {}",
        up1.requests().len(),
        up2.requests().len()
    );
    let m = d.metrics()?;
    ensure!(
        m.sum("trigate_cluster_endpoints_ejected", &[("cluster", "pool")]) == 1.0,
        "the dead endpoint should be ejected:\n{}",
        m.text
    );
    Ok(())
}

#[test]
fn bad_input_gets_a_clear_error_and_the_daemon_keeps_serving() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let up = Upstream::start(pod.host_ip.into())?;
    let cfg = set_gate_api(
        node.config()
            .set("/http", json!({"max_header_bytes": 16384}))
            .set("/routes", json!([{"name": "any"}]))
            .destination(api_destination(&up))
            .workload(pod.workload()),
    );
    let d = node.start(&cfg)?;
    let raw = |payload: &str| -> Result<String> {
        let script = format!(
            r#"
import socket, sys
s = socket.create_connection(("{ip}", {port}), timeout=5)
s.sendall({payload})
data = b""
try:
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except socket.timeout:
    pass
print((data.split(b"\r\n")[0] or b"<closed>").decode(errors="replace"))
"#,
            ip = up.ip(),
            port = up.port()
        );
        let out = python(&pod, &script)?;
        Ok(out.stdout.trim().to_string())
    };
    let first = raw(r#"b"NOT HTTP AT ALL\r\n\r\n""#)?;
    ensure!(
        first.starts_with("HTTP/1.1 400") || first == "<closed>",
        "malformed request: {first}"
    );
    let big = raw(r#"b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n""#)?;
    ensure!(
        big.starts_with("HTTP/1.1 431") || big.starts_with("HTTP/1.1 400") || big == "<closed>",
        "oversized header: {big}"
    );
    ensure!(
        up.requests().is_empty(),
        "bad requests must not reach the upstream: {:?}",
        up.requests()
    );
    // Still serving, and nothing panicked.
    let (status, _, _) = curl(&pod, &[&format!("http://{}/after", up.addr())])?;
    ensure!(status == 200, "the daemon should keep serving: {status}");
    ensure!(
        !d.logs().iter().any(|l| l.to_string().contains("panicked")),
        "a panic was logged"
    );
    ensure!(
        d.metrics()?
            .sum("trigate_http_connection_errors_total", &[("gate", "api")])
            >= 2.0,
        "both bad connections should be counted"
    );
    Ok(())
}

#[test]
fn get_responses_are_cached_per_tenant_and_cors_is_answered() -> Result<()> {
    let node = Node::new()?;
    let (pod_a, pod_b, up) = two_pods_one_upstream(&node)?;
    let cfg = set_gate_api(
        node.config()
            .set(
                "/routes",
                json!([{"name": "cached", "cache": {"default_ttl_secs": 60},
                        "cors": {"allow_origins": ["https://app.example"], "allow_methods": ["GET", "POST"]}}]),
            )
            .destination(api_destination(&up))
            .workload(pod_a.workload())
            .workload(pod_b.workload()),
    );
    let d = node.start(&cfg)?;
    let url = format!("http://{}/catalog", up.addr());
    let cache_state = |head: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix("x-trigate-cache: "))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let (s1, h1, b1) = curl(&pod_a, &[&url])?;
    let (s2, h2, b2) = curl(&pod_a, &[&url])?;
    ensure!(s1 == 200 && s2 == 200, "{s1} {s2}");
    ensure!(
        cache_state(&h1) == "miss" && cache_state(&h2) == "hit",
        "miss then hit: {h1} / {h2}"
    );
    ensure!(b1 == b2, "a hit serves the stored body");
    ensure!(h2.contains("age:"), "a hit carries Age: {h2}");
    ensure!(
        up.requests().len() == 1,
        "one upstream request for two GETs: {:?}",
        up.requests()
    );
    // Another tenant never gets pod-a's answer.
    let (_, hb, _) = curl(&pod_b, &[&url])?;
    ensure!(
        cache_state(&hb) == "miss",
        "pod-b must not hit pod-a's entry: {hb}"
    );
    ensure!(up.requests().len() == 2, "{:?}", up.requests());
    // The client can refuse a cached answer.
    let (_, hn, _) = curl(&pod_a, &["-H", "cache-control: no-cache", &url])?;
    ensure!(
        cache_state(&hn) != "hit",
        "no-cache must not be served from the cache: {hn}"
    );
    ensure!(up.requests().len() == 3, "{:?}", up.requests());

    // CORS: the preflight is answered here; the actual request gets headers.
    let (status, head, _) = curl(
        &pod_a,
        &[
            "-X",
            "OPTIONS",
            "-H",
            "origin: https://app.example",
            "-H",
            "access-control-request-method: POST",
            &url,
        ],
    )?;
    ensure!(status == 204, "preflight: {status} {head}");
    ensure!(
        head.contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );
    ensure!(
        up.requests().len() == 3,
        "preflights never reach the upstream"
    );
    let (status, head, _) = curl(&pod_a, &["-H", "origin: https://evil.example", &url])?;
    ensure!(
        status == 200 && !head.contains("access-control-allow-origin"),
        "a foreign origin gets no grant: {head}"
    );
    let (_, head, _) = curl(&pod_a, &["-H", "origin: https://app.example", &url])?;
    ensure!(
        head.contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );
    let line = d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "outcome") == Some("cache_hit"))?;
    ensure!(log_str(&line, "route") == Some("cached"), "{line}");
    Ok(())
}

#[test]
fn silent_and_slow_clients_are_closed() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let up = Upstream::start(pod.host_ip.into())?;
    let cfg = set_gate_api(
        node.config()
            .set("/http", json!({"header_read_timeout_ms": 500}))
            .destination(api_destination(&up))
            .workload(pod.workload()),
    );
    let _d = node.start(&cfg)?;
    // One client says nothing, one sends half a request head.
    let script = format!(
        r#"
import socket, time
for payload in [b"", b"GET / HTTP/1.1\r\nHost: x\r\n"]:
    s = socket.create_connection(("{ip}", {port}), timeout=10)
    s.sendall(payload)
    t = time.time()
    try:
        data = s.recv(4096)
        while data:
            data = s.recv(4096)
    except socket.timeout:
        print("not closed")
        continue
    print("closed after %.1f s" % (time.time() - t))
"#,
        ip = up.ip(),
        port = up.port()
    );
    let out = python(&pod, &script)?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    ensure!(lines.len() == 2, "two results expected: {:?}", out.stdout);
    for line in lines {
        let secs: f64 = line
            .strip_prefix("closed after ")
            .and_then(|r| r.strip_suffix(" s"))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("a client was not closed: {line}"))?;
        ensure!(
            secs < 5.0,
            "closed too late ({secs} s) for a 500 ms header timeout"
        );
    }
    ensure!(up.requests().is_empty(), "nothing reached the upstream");
    Ok(())
}

#[test]
fn route_changes_apply_on_reload() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let up = Upstream::start(pod.host_ip.into())?;
    let base = node
        .config()
        .destination(api_destination(&up))
        .workload(pod.workload());
    let with_route = |v: &str| {
        set_gate_api(base.clone().set(
            "/routes",
            json!([{"name": "r", "response_headers": {"set": {"x-version": v}}}]),
        ))
    };
    let d = node.start(&with_route("1"))?;
    let url = format!("http://{}/v", up.addr());
    let (_, head, _) = curl(&pod, &[&url])?;
    ensure!(head.contains("x-version: 1"), "{head}");
    let path = d.config_path();
    std::fs::write(path.with_extension("new"), with_route("2").to_yaml())?;
    std::fs::rename(path.with_extension("new"), &path)?;
    trigate_e2e::poll_until(LOG_WAIT, "the new route to apply", || {
        let (_, head, _) = curl(&pod, &[&url])?;
        Ok(head.contains("x-version: 2").then_some(()))
    })?;
    Ok(())
}

/// The HTTP/1.1 relay: request bodies by length and chunked, the body cap,
/// `Expect: 100-continue`, HTTP/1.0 clients, and upstream connections kept
/// across client connections (one upstream connection serves them all).
#[test]
fn http11_bodies_limits_and_upstream_reuse() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let up = Upstream::start_keepalive(pod.host_ip.into())?;
    let cfg = set_gate_api(
        node.config()
            .set("/http", json!({"max_request_body_bytes": 4096}))
            .set("/routes", json!([{"name": "any"}]))
            .destination(api_destination(&up))
            .workload(pod.workload()),
    );
    let d = node.start(&cfg)?;
    let url = up.url("/upload");
    let body_of = |n: usize| "x".repeat(n);

    let (status, _, text) = curl(&pod, &["--data-binary", &body_of(1000), &url])?;
    ensure!(
        status == 200 && text.ends_with("body=1000"),
        "{status} {text}"
    );
    // No traceparent from the client: the gateway starts one, sends it
    // upstream and logs it; a valid one from the client goes on unchanged.
    let sent = |head: &str| {
        head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("traceparent: ")
                .map(str::to_string)
        })
    };
    let generated = up.heads().last().and_then(|h| sent(h));
    let generated = generated.ok_or_else(|| anyhow::anyhow!("no traceparent went upstream"))?;
    ensure!(
        generated.len() == 55 && generated.starts_with("00-"),
        "{generated}"
    );
    poll_until_logged(&d, |l| {
        log_str(l, "traceparent") == Some(generated.as_str())
    })?;
    let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    curl(
        &pod,
        &["-H", &format!("traceparent: {theirs}"), &up.url("/traced")],
    )?;
    ensure!(
        up.heads().last().and_then(|h| sent(h)).as_deref() == Some(theirs),
        "a valid traceparent is passed on unchanged"
    );

    // A body of unknown length (stdin) goes chunked.
    let env = trigate_e2e::env()?;
    let script = format!(
        "head -c 3000 /dev/zero | {} -sS --noproxy '*' --max-time 10 \\
         -H 'Transfer-Encoding: chunked' --data-binary @- {url}",
        env.curl.display()
    );
    let out = pod
        .run(
            std::path::Path::new("/bin/sh"),
            &["-c", &script],
            CMD_TIMEOUT,
        )?
        .check("chunked upload")?;
    ensure!(out.stdout.ends_with("body=3000"), "chunked: {}", out.stdout);
    ensure!(
        up.heads().last().is_some_and(|h| h
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")),
        "the chunked framing goes upstream as sent"
    );

    // Expect: 100-continue is answered by the gateway once policy admits.
    let (status, _, text) = curl(
        &pod,
        &[
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            &body_of(2000),
            &url,
        ],
    )?;
    // curl -i prints the interim 100 first, then the final response.
    ensure!(
        status == 100 && text.starts_with("HTTP/1.1 200") && text.ends_with("body=2000"),
        "{status} {text}"
    );

    // Over the cap: 413 before anything goes upstream.
    let seen = up.requests().len();
    let (status, _, text) = curl(&pod, &["--data-binary", &body_of(5000), &url])?;
    ensure!(status == 413, "oversized body: {status} {text}");
    ensure!(text.contains("body_too_large"), "{text}");
    ensure!(
        up.requests().len() == seen,
        "a refused body must not reach the upstream"
    );

    // Pipelined requests (two in one write) are answered in order; a HEAD
    // answer has the length but no body, and the connection stays usable.
    let script = format!(
        r#"
import socket
s = socket.create_connection(("{ip}", {port}), timeout=5)
s.sendall(b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nHEAD /p2 HTTP/1.1\r\nHost: a\r\n\r\nGET /p3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
text = data.decode()
print(text.count("HTTP/1.1 200"), text.count("path=/p1"), text.count("path=/p2"), text.count("path=/p3"), text.index("path=/p1") < text.index("path=/p3"))
"#,
        ip = up.ip(),
        port = up.port()
    );
    let out = python(&pod, &script)?;
    ensure!(
        out.stdout.trim() == "3 1 0 1 True",
        "pipelined GET, HEAD, GET: {}",
        out.stdout
    );

    // HTTP/1.0: a response, then the connection closes.
    let script = format!(
        r#"
import socket
s = socket.create_connection(("{ip}", {port}), timeout=5)
s.sendall(b"GET /old HTTP/1.0\r\n\r\n")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.split(b"\r\n")[0].decode(), data.endswith(b"body=0"))
"#,
        ip = up.ip(),
        port = up.port()
    );
    let out = python(&pod, &script)?;
    ensure!(
        out.stdout.trim() == "HTTP/1.1 200 OK True",
        "HTTP/1.0 client: {}",
        out.stdout
    );

    // Two requests on one client connection, then more client connections:
    // all of it on the one upstream connection (kept, then pooled).
    let (status, _, _) = curl(&pod, &[&up.url("/a"), &up.url("/b")])?;
    ensure!(status == 200);
    ensure!(
        up.accepted() == 1,
        "upstream connections opened: {} (want 1: kept and pooled)",
        up.accepted()
    );
    let logs = request_logs(&d);
    ensure!(
        logs.iter()
            .filter(|l| log_str(l, "route") == Some("any"))
            .count()
            >= 6,
        "one access-log line per request: {logs:?}"
    );
    Ok(())
}

/// Guardrails on an `api` destination, through the real redirect: a JSON
/// body's e-mail is redacted before the upstream sees it and restored in
/// the answer (HTTP/1.1 and HTTP/2 clients), a card number is refused
/// with a 400 naming the rule, a secret in a chunked answer is redacted,
/// an answer with an SSN is withheld, and a binary body passes as it is.
#[test]
fn guardrails_check_api_bodies_both_ways() -> Result<()> {
    const TOKEN: &str = "ghp_R4nd0mT0k3nV4lu3Xy9Qz8Wv7Ut6Sr5Pq4On";
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let up = Upstream::start_keepalive(pod.host_ip.into())?;
    let rule = |detect: &str, action: &str| json!({"detect": [detect], "action": action});
    let cfg = set_gate_api(
        node.config()
            .set("/routes", json!([{"name": "any"}]))
            .set(
                "/guardrails",
                json!({"policies": [{
                    "name": "customer-data",
                    "gates": ["api"],
                    "request": [
                        {"detect": ["email"], "action": "redact", "restore": true},
                        rule("credit_card", "block"),
                    ],
                    "response": [rule("secret", "redact"), rule("us_ssn", "block")],
                }]}),
            )
            .destination(api_destination(&up))
            .workload(pod.workload()),
    );
    let d = node.start(&cfg)?;
    let json_post = |url: &str, body: &str, extra: &[&str]| {
        let mut args = vec![
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ];
        args.extend_from_slice(extra);
        args.push(url);
        curl(&pod, &args)
    };
    let last_body =
        || String::from_utf8_lossy(up.bodies().last().map_or(&[][..], |b| b)).to_string();

    // Redacted on the way up, restored on the way back.
    let sent = r#"{"to": "bob@example.com", "note": "call me"}"#;
    let (status, _, text) = json_post(&up.url("/echo"), sent, &[])?;
    ensure!(
        status == 200 && text == sent,
        "restored answer: {status} {text}"
    );
    ensure!(
        last_body() == r#"{"to": "<EMAIL_1>", "note": "call me"}"#,
        "the upstream saw: {}",
        last_body()
    );
    let (status, _, text) = json_post(&up.url("/echo"), sent, &["--http2-prior-knowledge"])?;
    ensure!(
        status == 200 && text == sent && !last_body().contains("bob@"),
        "HTTP/2: {status} {text}; the upstream saw {}",
        last_body()
    );

    // A card number is refused before anything goes up.
    let before = up.bodies().len();
    let (status, _, text) = json_post(&up.url("/echo"), r#"{"card": "4111 1111 1111 1111"}"#, &[])?;
    let err: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let message = err["error"]["message"].as_str().unwrap_or_default();
    ensure!(
        status == 400
            && err["error"]["type"] == "guardrail_blocked"
            && message.contains("customer-data")
            && message.contains("credit_card")
            && !text.contains("4111")
            && up.bodies().len() == before,
        "card refusal: {status} {text}"
    );

    // A secret in a chunked answer is redacted; an SSN withholds it.
    let (status, head, text) = curl(
        &pod,
        &[
            "-H",
            "content-type: text/plain",
            "--data-binary",
            &format!("token {TOKEN} ok"),
            &up.url("/echo-chunked"),
        ],
    )?;
    ensure!(
        status == 200
            && text == "token <GITHUB_TOKEN_1> ok"
            && head.contains(&format!("content-length: {}", text.len())),
        "secret answer: {status} {head} {text}"
    );
    let (status, _, text) = curl(
        &pod,
        &[
            "-H",
            "content-type: text/plain",
            "--data-binary",
            "My SSN is 536-22-8714",
            &up.url("/echo"),
        ],
    )?;
    let err: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    ensure!(
        status == 502 && err["error"]["type"] == "guardrail_blocked" && !text.contains("536-22"),
        "SSN answer: {status} {text}"
    );

    // What the guard cannot read passes unchanged.
    let (status, _, text) = curl(
        &pod,
        &[
            "-H",
            "content-type: application/octet-stream",
            "--data-binary",
            "raw bob@example.com",
            &up.url("/echo"),
        ],
    )?;
    ensure!(
        status == 200 && text == "raw bob@example.com" && last_body() == text,
        "binary body: {status} {text}"
    );

    poll_until_logged(&d, |l| log_str(l, "outcome") == Some("guardrail_blocked"))?;
    let m = d.metrics()?;
    let found = |detector, action| {
        m.sum(
            "trigate_guardrail_findings_total",
            &[
                ("gate", "api"),
                ("workload", "pod-a"),
                ("detector", detector),
                ("action", action),
            ],
        )
    };
    ensure!(
        found("email", "redact") == 2.0
            && found("credit_card", "block") == 1.0
            && found("github_token", "redact") == 1.0
            && found("us_ssn", "block") == 1.0,
        "findings: email {} card {} token {} ssn {}",
        found("email", "redact"),
        found("credit_card", "block"),
        found("github_token", "redact"),
        found("us_ssn", "block")
    );
    Ok(())
}
