//! The TLS gate end to end: `terminate` (curl trusts only the node CA and
//! still reaches an upstream whose certificate comes from another CA),
//! `passthrough` with an SNI deny list, and `originate` (plaintext curl, TLS
//! upstream). Upstreams are TLS servers on pod veth addresses with
//! certificates from a CA made by the test.

use anyhow::{ensure, Context, Result};
use serde_json::json;
use std::time::Duration;
use trigate_e2e::{
    log_str, poll_until, Daemon, Destination, LogLine, Node, Pod, Runner, TempFile, TestCa,
    Upstream, CMD_TIMEOUT,
};

const LOG_WAIT: Duration = Duration::from_secs(5);

/// curl in `pod` to `https://{name}:{port}{path}` resolved to the upstream,
/// trusting only `cafile`.
fn curl_https(
    pod: &Pod,
    up: &Upstream,
    name: &str,
    path: &str,
    cafile: &std::path::Path,
) -> Result<trigate_e2e::CmdOutput> {
    let env = trigate_e2e::env()?;
    let resolve = format!("{name}:{}:{}", up.port(), up.ip());
    let url = format!("https://{name}:{}{path}", up.port());
    let cafile = cafile.to_string_lossy();
    pod.run(
        &env.curl,
        &[
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "--cacert",
            &cafile,
            "--resolve",
            &resolve,
            &url,
        ],
        CMD_TIMEOUT,
    )
}

fn access_line(d: &Daemon, pred: impl Fn(&LogLine) -> bool) -> Result<LogLine> {
    d.wait_for_access_log(LOG_WAIT, pred)
}

fn ensure_fields(line: &LogLine, want: &[(&str, &str)]) -> Result<()> {
    for (k, v) in want {
        ensure!(
            log_str(line, k) == Some(*v),
            "access log {k} should be {v:?}: {line}"
        );
    }
    Ok(())
}

/// A node CA location in a directory of the test's own.
struct CaFiles {
    _dir: TempFile,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn ca_files() -> Result<CaFiles> {
    let dir = TempFile::new("README", "node CA of one e2e test\n")?;
    let base = dir.path().parent().context("temp dir")?.to_path_buf();
    Ok(CaFiles {
        cert: base.join("ca.crt"),
        key: base.join("ca.key"),
        _dir: dir,
    })
}

#[test]
fn terminate_presents_a_node_ca_leaf_and_reencrypts_upstream() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let test_ca = TestCa::new()?;
    let test_ca_file = TempFile::new("upstream-ca.pem", test_ca.pem())?;
    let up = Upstream::start_tls(pod.host_ip.into(), &test_ca, &["api.e2e.test"])?;
    let ca = ca_files()?;
    let cfg = node
        .config()
        .set(
            "/tls",
            json!({
                "ca_cert": ca.cert, "ca_key": ca.key,
                "upstream_ca_files": [test_ca_file.path()],
            }),
        )
        .dns_host("api.e2e.test", &[up.ip()])
        .destination(
            Destination::redirect("api")
                .host("api.e2e.test")
                .port(up.port())
                .tls(json!({"mode": "terminate"})),
        )
        .workload(pod.workload());
    let d = node.start(&cfg)?;
    ensure!(
        ca.cert.exists(),
        "the daemon should create the node CA at start"
    );

    // Trusting only the node CA works: the gateway presented its leaf.
    let out =
        curl_https(&pod, &up, "api.e2e.test", "/secret", &ca.cert)?.check("curl via terminate")?;
    ensure!(
        out.stdout.starts_with("hello from upstream path=/secret "),
        "curl got {:?}",
        out.stdout
    );
    let line = access_line(&d, |l| log_str(l, "comm") == Some("curl"))?;
    ensure_fields(
        &line,
        &[
            ("tls_mode", "terminate"),
            ("sni", "api.e2e.test"),
            ("protocol", "tls"),
            ("outcome", "ok"),
            ("workload", "pod-a"),
        ],
    )?;

    // Trusting only the upstream's CA fails: the client never sees it.
    let out = curl_https(
        &pod,
        &up,
        "api.e2e.test",
        "/direct-trust",
        test_ca_file.path(),
    )?;
    ensure!(
        !out.success(),
        "curl trusting the upstream CA should fail through terminate: {out:?}"
    );
    ensure!(
        up.requests().iter().all(|(_, p)| p != "/direct-trust"),
        "a request whose client refused the certificate reached the upstream"
    );
    let m = d.metrics()?;
    ensure!(
        m.sum(
            "trigate_tls_handshakes_total",
            &[
                ("mode", "terminate"),
                ("side", "upstream"),
                ("result", "ok")
            ]
        ) >= 1.0,
        "upstream handshakes not counted:\n{}",
        m.text
    );
    Ok(())
}

#[test]
fn terminate_refuses_an_upstream_it_cannot_verify() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let test_ca = TestCa::new()?;
    let up = Upstream::start_tls(pod.host_ip.into(), &test_ca, &["api.e2e.test"])?;
    let ca = ca_files()?;
    // No upstream_ca_files: the test CA is not trusted upstream.
    let cfg = node
        .config()
        .set("/tls", json!({"ca_cert": ca.cert, "ca_key": ca.key}))
        .destination(
            Destination::redirect("api")
                .addr(up.ip())
                .port(up.port())
                .tls(json!({"mode": "terminate"})),
        )
        .workload(pod.workload());
    let d = node.start(&cfg)?;
    let out = curl_https(&pod, &up, "api.e2e.test", "/x", &ca.cert)?;
    ensure!(
        !out.success(),
        "curl should fail when the upstream cannot be verified: {out:?}"
    );
    let line = access_line(&d, |l| log_str(l, "workload") == Some("pod-a"))?;
    ensure_fields(
        &line,
        &[("outcome", "upstream_tls_failed"), ("sni", "api.e2e.test")],
    )?;
    ensure!(
        log_str(&line, "error").is_some_and(|e| e.contains("api.e2e.test")),
        "{line}"
    );
    Ok(())
}

#[test]
fn passthrough_checks_sni_and_forwards_the_clients_tls() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let test_ca = TestCa::new()?;
    let test_ca_file = TempFile::new("upstream-ca.pem", test_ca.pem())?;
    let up = Upstream::start_tls(
        pod.host_ip.into(),
        &test_ca,
        &["allowed.e2e.test", "blocked.e2e.test"],
    )?;
    let cfg = node
        .config()
        .destination(
            Destination::redirect("api")
                .addr(up.ip())
                .port(up.port())
                .tls(json!({"mode": "passthrough", "sni_deny": ["blocked.e2e.test"]})),
        )
        .workload(pod.workload());
    let d = node.start(&cfg)?;

    // The client's own TLS reaches the upstream: it trusts the upstream CA.
    let out = curl_https(&pod, &up, "allowed.e2e.test", "/ok", test_ca_file.path())?
        .check("curl allowed SNI")?;
    ensure!(
        out.stdout.starts_with("hello from upstream path=/ok "),
        "curl got {:?}",
        out.stdout
    );
    let line = access_line(&d, |l| log_str(l, "sni") == Some("allowed.e2e.test"))?;
    ensure_fields(&line, &[("tls_mode", "passthrough"), ("outcome", "ok")])?;

    let out = curl_https(
        &pod,
        &up,
        "blocked.e2e.test",
        "/blocked",
        test_ca_file.path(),
    )?;
    ensure!(!out.success(), "a denied SNI should not connect: {out:?}");
    let line = access_line(&d, |l| log_str(l, "sni") == Some("blocked.e2e.test"))?;
    ensure_fields(&line, &[("outcome", "sni_denied")])?;
    ensure!(
        up.requests().iter().all(|(_, p)| p != "/blocked"),
        "the denied request reached the upstream"
    );

    // Plaintext to a TLS destination is refused, not forwarded.
    let out = pod.curl(&format!("http://{}/plain", up.addr()))?;
    ensure!(
        !out.success(),
        "plaintext to a passthrough destination should fail: {out:?}"
    );
    let line = access_line(&d, |l| log_str(l, "outcome") == Some("not_tls"))?;
    ensure_fields(&line, &[("protocol", "http1")])?;
    Ok(())
}

#[test]
fn originate_speaks_tls_upstream_for_a_plaintext_client() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let test_ca = TestCa::new()?;
    let test_ca_file = TempFile::new("upstream-ca.pem", test_ca.pem())?;
    let up = Upstream::start_tls(pod.host_ip.into(), &test_ca, &["api.e2e.test"])?;
    let cfg = node
        .config()
        .set("/tls", json!({"upstream_ca_files": [test_ca_file.path()], "ca_cert": "/nonexistent/ca.crt", "ca_key": "/nonexistent/ca.key", "generate_ca": false}))
        .destination(
            Destination::redirect("api")
                .addr(up.ip())
                .port(up.port())
                .tls(json!({"mode": "originate", "upstream_name": "api.e2e.test"})),
        )
        .workload(pod.workload());
    let d = node.start(&cfg)?;
    let out = pod
        .curl(&format!("http://{}/plain", up.addr()))?
        .check("plaintext curl via originate")?;
    ensure!(
        out.stdout.starts_with("hello from upstream path=/plain "),
        "curl got {:?}",
        out.stdout
    );
    let line = access_line(&d, |l| log_str(l, "comm") == Some("curl"))?;
    ensure_fields(&line, &[("tls_mode", "originate"), ("outcome", "ok")])?;
    poll_until(LOG_WAIT, "the originate handshake metric", || {
        let n = d.metrics()?.sum(
            "trigate_tls_handshakes_total",
            &[
                ("mode", "originate"),
                ("side", "upstream"),
                ("result", "ok"),
            ],
        );
        Ok((n >= 1.0).then_some(()))
    })?;
    Ok(())
}

#[test]
fn tls_garbage_is_refused_and_logged() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let test_ca = TestCa::new()?;
    let up = Upstream::start_tls(pod.host_ip.into(), &test_ca, &["api.e2e.test"])?;
    let cfg = node
        .config()
        .destination(
            Destination::redirect("api")
                .addr(up.ip())
                .port(up.port())
                .tls(json!({"mode": "passthrough", "sni_allow": ["api.e2e.test"]})),
        )
        .workload(pod.workload());
    let d = node.start(&cfg)?;
    // A handshake record header whose body is not a ClientHello.
    let script = format!(
        r#"
import socket
s = socket.create_connection(("{ip}", {port}), timeout=5)
s.sendall(b"\x16\x03\x01\x00\x10" + b"\xff" * 16)
try:
    print("closed" if s.recv(4096) == b"" else "answered")
except ConnectionResetError:
    print("closed")
"#,
        ip = up.ip(),
        port = up.port()
    );
    let env = trigate_e2e::env()?;
    let out = pod
        .run(&env.python3, &["-c", &script], CMD_TIMEOUT)?
        .check("garbage client")?;
    ensure!(
        out.stdout.trim() == "closed",
        "garbage should be closed: {:?}",
        out.stdout
    );
    let line = access_line(&d, |l| log_str(l, "workload") == Some("pod-a"))?;
    ensure_fields(&line, &[("outcome", "not_tls"), ("protocol", "opaque")])?;
    ensure!(up.accepted() == 0, "garbage must not reach the upstream");
    Ok(())
}
