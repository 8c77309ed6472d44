//! Interception end to end: simulated pods, the real daemon, real eBPF.
//!
//! Every test builds its own node (attach cgroup + instance), pods and
//! upstreams, so they run concurrently; each needs root, cgroup v2, bpffs,
//! curl, bpftool, python3 and a built trigate binary, and fails (never
//! skips) without them. See tests/README.md.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use trigate_e2e::{
    free_port, log_field, log_str, log_u64, poll_until, trigate, ClientMode, ClientRequest,
    ClientResult, Daemon, Destination, FailMode, FakeDns, LogLine, Node, Pod, Runner, TempFile,
    Upstream,
};

/// How long a log line or a metric may take to show up.
const LOG_WAIT: Duration = Duration::from_secs(5);

/// The response body, which must come from `up` for `path`.
fn expect_body(r: &ClientResult, path: &str) -> Result<String> {
    let body = r.body()?;
    ensure!(
        r.status == Some(200) && body.starts_with(&format!("hello from upstream path={path} ")),
        "unexpected response: {r:?}"
    );
    Ok(body.to_string())
}

/// The client address the upstream saw, from the body.
fn upstream_peer(body: &str) -> Result<SocketAddr> {
    body.rsplit("peer=")
        .next()
        .and_then(|p| p.trim().parse().ok())
        .with_context(|| format!("no peer= in {body:?}"))
}

/// The client's socket was redirected: its local address is loopback (the
/// listener's side) and the upstream saw some other socket (the daemon's).
/// In in-pod mode the daemon dials from inside the pod's netns, so the
/// upstream may well see the pod's address; only the exact socket tells.
fn ensure_proxied(r: &ClientResult) -> Result<()> {
    let local: SocketAddr = r
        .local
        .as_deref()
        .and_then(|l| l.parse().ok())
        .with_context(|| format!("the client reported no local address: {r:?}"))?;
    let peer = upstream_peer(r.body()?)?;
    ensure!(
        local.ip().is_loopback() && peer != local,
        "the connection was not redirected: client socket {local}, upstream saw {peer}"
    );
    Ok(())
}

/// The client connected directly: the upstream saw the client's own socket.
fn ensure_direct(r: &ClientResult) -> Result<()> {
    let peer = upstream_peer(r.body()?)?;
    ensure!(
        r.local.as_deref() == Some(peer.to_string().as_str()),
        "expected a direct connection: client socket {:?}, upstream saw {peer}",
        r.local
    );
    Ok(())
}

fn access_logs_of(d: &Daemon, workload: &str) -> Vec<LogLine> {
    d.access_logs()
        .into_iter()
        .filter(|l| log_str(l, "workload") == Some(workload))
        .collect()
}

/// Checks the fields every proxied-ok line must carry.
fn ensure_access_line(
    l: &LogLine,
    workload: &str,
    destination: &str,
    original_dst: SocketAddr,
) -> Result<()> {
    let want = [
        ("message", "connection"),
        ("workload", workload),
        ("destination", destination),
        ("source", "ebpf"),
        ("outcome", "ok"),
    ];
    for (k, v) in want {
        ensure!(
            log_str(l, k) == Some(v),
            "access log {k} should be {v:?}: {l}"
        );
    }
    ensure!(
        log_str(l, "original_dst") == Some(original_dst.to_string().as_str()),
        "access log original_dst should be {original_dst}: {l}"
    );
    for k in ["client", "comm"] {
        ensure!(log_str(l, k).is_some(), "access log lacks {k}: {l}");
    }
    for k in ["pid", "uid", "bytes_sent", "bytes_received"] {
        ensure!(log_u64(l, k).is_some(), "access log lacks integer {k}: {l}");
    }
    ensure!(
        log_field(l, "duration_ms").is_some_and(Value::is_number),
        "access log lacks numeric duration_ms: {l}"
    );
    ensure!(
        log_u64(l, "bytes_received").unwrap_or(0) > 0,
        "no bytes received: {l}"
    );
    Ok(())
}

/// Waits until `GET /destinations` shows `name` resolved to `ip`.
fn wait_resolved(d: &Daemon, name: &str, ip: IpAddr) -> Result<()> {
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    let want = format!("{ip}/{bits}");
    poll_until(
        LOG_WAIT,
        &format!("destination {name} to resolve to {want}"),
        || {
            let r = d.admin_get("/destinations")?;
            ensure!(
                r.status == 200,
                "GET /destinations: {} {}",
                r.status,
                r.body
            );
            let list = r.json()?;
            let found = list.as_array().into_iter().flatten().any(|dest| {
                dest["name"] == name
                    && dest["addresses"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(&want)))
            });
            Ok(found.then_some(()))
        },
    )
}

/// Waits until the kernel counter for `workload` × `destination` ×
/// `outcome` reaches `at_least`.
fn wait_ebpf_count(
    d: &Daemon,
    workload: &str,
    destination: &str,
    outcome: &str,
    at_least: f64,
) -> Result<()> {
    poll_until(
        LOG_WAIT,
        &format!("trigate_ebpf_connects_total{{outcome={outcome}}} ≥ {at_least}"),
        || {
            let n = d.metrics()?.sum(
                "trigate_ebpf_connects_total",
                &[
                    ("workload", workload),
                    ("destination", destination),
                    ("outcome", outcome),
                ],
            );
            Ok((n >= at_least).then_some(()))
        },
    )
}

/// One pod (IPv4), one upstream on its host-side address, a redirect
/// destination for it and the pod enrolled.
fn single_pod_setup(node: &Node) -> Result<(Pod, Upstream, trigate_e2e::Config)> {
    let pod = node.pod("pod-a")?;
    let up = Upstream::start(pod.host_ip.into())?;
    let cfg = node
        .config()
        .destination(
            Destination::redirect("upstream")
                .addr(up.ip())
                .port(up.port()),
        )
        .workload(pod.workload());
    Ok((pod, up, cfg))
}

/// A dual-stack pod, an upstream on its host-side IPv6 address, a redirect
/// destination for it and the pod enrolled; `ipv6_listener` opens the
/// daemon's `[::1]` listener or not.
fn v6_pod_setup(node: &Node, ipv6_listener: bool) -> Result<(Pod, Upstream, trigate_e2e::Config)> {
    let pod = node.pod_v6("pod-a")?;
    let up = Upstream::start(IpAddr::V6(pod.host_ip6.context("v6 pod")?))?;
    let cfg = node
        .config()
        .listener_ipv6(ipv6_listener)
        .destination(
            Destination::redirect("upstream6")
                .addr(up.ip())
                .port(up.port()),
        )
        .workload(pod.workload());
    Ok((pod, up, cfg))
}

/// Case 1: Unmodified clients reach the upstream through trigate; the
/// destination is named by host (resolved by the daemon from `dns.hosts`).
#[test]
fn curl_and_python_reach_upstream_through_trigate() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let up = Upstream::start(pod.host_ip.into())?;
    let cfg = node
        .config()
        .dns_host("api.e2e.test", &[up.ip()])
        .destination(
            Destination::redirect("upstream")
                .host("api.e2e.test")
                .port(up.port()),
        )
        .workload(pod.workload());
    let d = node.start(&cfg)?;
    wait_resolved(&d, "upstream", up.ip())?;

    let out = pod.curl(&up.url("/curl"))?.check("curl in pod-a")?;
    ensure!(
        out.stdout.starts_with("hello from upstream path=/curl "),
        "curl got {:?}",
        out.stdout
    );
    let line = d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "comm") == Some("curl"))?;
    ensure_access_line(&line, "pod-a", "upstream", up.addr())?;

    for (mode, path) in [
        (ClientMode::Urllib, "/urllib"),
        (ClientMode::HttpClient, "/http-client"),
    ] {
        let before = d.access_logs().len();
        let r = pod.client(&ClientRequest::get(up.addr(), path).mode(mode))?;
        expect_body(&r, path)?;
        if r.local.is_some() {
            ensure_proxied(&r)?;
        }
        let line = poll_until(LOG_WAIT, "the python client's access-log line", || {
            Ok(d.access_logs().get(before).cloned())
        })?;
        ensure_access_line(&line, "pod-a", "upstream", up.addr())?;
        let comm = log_str(&line, "comm").unwrap_or_default();
        ensure!(
            comm.starts_with("python"),
            "comm should be python3…, got {comm:?}: {line}"
        );
    }
    ensure!(
        up.accepted() == 3,
        "upstream accepted {} connections, expected 3",
        up.accepted()
    );
    Ok(())
}

/// A destination named by host follows its DNS answers: when the record
/// (TTL 1 s, from a fake name server on loopback) moves to another address,
/// the new address is intercepted and the old one no longer is.
#[test]
fn host_destinations_follow_dns_ttl_changes() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    // A second host-side address the pod can reach: another pod's veth.
    let other = node.pod("other")?;
    pod.route_to(other.host_ip.into())?;
    let up1 = Upstream::start(pod.host_ip.into())?;
    let up2 = Upstream::start(other.host_ip.into())?;
    let dns = FakeDns::start()?;
    dns.set("moving.e2e.test", &[pod.host_ip], 1);
    let cfg = node
        .config()
        .set("/dns/servers", json!([dns.addr().to_string()]))
        .set("/dns/min_refresh_secs", json!(1))
        .destination(
            Destination::redirect("moving")
                .host("moving.e2e.test")
                .port(up1.port())
                .port(up2.port()),
        )
        .workload(pod.workload());
    let d = node.start(&cfg)?;
    wait_resolved(&d, "moving", up1.ip())?;
    let r = pod.client(&ClientRequest::get(up1.addr(), "/before"))?;
    expect_body(&r, "/before")?;
    ensure_proxied(&r)?;

    dns.set("moving.e2e.test", &[other.host_ip], 1);
    wait_resolved(&d, "moving", up2.ip())?;
    poll_until(LOG_WAIT, "the old address to leave the destination", || {
        let list = d.admin_get("/destinations")?.json()?;
        let old = format!("{}/32", up1.ip());
        let still = list[0]["addresses"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(old.as_str())));
        Ok((!still).then_some(()))
    })?;
    let r = pod.client(&ClientRequest::get(up2.addr(), "/after"))?;
    expect_body(&r, "/after")?;
    ensure_proxied(&r)?;
    let r = pod.client(&ClientRequest::get(up1.addr(), "/old"))?;
    expect_body(&r, "/old")?;
    ensure_direct(&r)?;
    ensure!(
        dns.queries() >= 2,
        "the daemon asked the name server {} times",
        dns.queries()
    );
    let proxied: Vec<_> = access_logs_of(&d, "pod-a");
    ensure!(
        proxied.len() == 2,
        "expected 2 proxied connections (before, after), got {proxied:?}"
    );
    Ok(())
}

/// Case 2: getpeername() in the client shows the address it dialed.
#[test]
fn getpeername_shows_original_destination() -> Result<()> {
    let node = Node::new()?;
    let (pod, up, cfg) = single_pod_setup(&node)?;
    let d = node.start(&cfg)?;

    let r = pod.client(&ClientRequest::get(up.addr(), "/peer"))?;
    expect_body(&r, "/peer")?;
    ensure_proxied(&r)?;
    ensure!(
        r.peer.as_deref() == Some(up.addr().to_string().as_str()),
        "getpeername() returned {:?}, expected the original {}",
        r.peer,
        up.addr()
    );
    // http.client reads it the same way.
    let r = pod.client(&ClientRequest::get(up.addr(), "/peer2").mode(ClientMode::HttpClient))?;
    expect_body(&r, "/peer2")?;
    ensure!(
        r.peer.as_deref() == Some(up.addr().to_string().as_str()),
        "http.client peer {:?}",
        r.peer
    );
    d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "workload") == Some("pod-a"))?;
    Ok(())
}

/// Case 3: A pod under the attach cgroup but not enrolled goes direct.
#[test]
fn non_enrolled_cgroup_is_not_redirected() -> Result<()> {
    let node = Node::new()?;
    let pod_a = node.pod("pod-a")?;
    let pod_b = node.pod("pod-b")?;
    let up = Upstream::start(pod_a.host_ip.into())?;
    pod_b.route_to(up.ip())?;
    let cfg = node
        .config()
        .destination(
            Destination::redirect("upstream")
                .addr(up.ip())
                .port(up.port()),
        )
        .workload(pod_a.workload());
    let d = node.start(&cfg)?;

    let r = pod_b.client(&ClientRequest::get(up.addr(), "/from-b"))?;
    expect_body(&r, "/from-b")?;
    ensure_direct(&r)?;

    // The enrolled pod is redirected to the same destination meanwhile.
    let r = pod_a.client(&ClientRequest::get(up.addr(), "/from-a"))?;
    expect_body(&r, "/from-a")?;
    ensure_proxied(&r)?;
    d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "workload") == Some("pod-a"))?;

    let all = d.access_logs();
    ensure!(
        all.len() == 1,
        "expected only pod-a's access-log line, got {all:#?}"
    );
    ensure!(
        all.iter().all(|l| log_str(l, "workload") != Some("pod-b")),
        "an access-log line names pod-b: {all:#?}"
    );
    Ok(())
}

/// Case 4: A `deny` destination: connect() fails with EPERM.
#[test]
fn deny_destination_fails_with_eperm() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let up = Upstream::start(pod.host_ip.into())?;
    let cfg = node
        .config()
        .destination(Destination::deny("forbidden").addr(up.ip()).port(up.port()))
        .workload(pod.workload());
    let d = node.start(&cfg)?;

    let r = pod.client(&ClientRequest::get(up.addr(), "/denied"))?;
    ensure!(
        !r.ok
            && r.is_eperm()
            && r.error
                .as_deref()
                .unwrap_or("")
                .starts_with("PermissionError"),
        "expected PermissionError (EPERM), got {r:?}"
    );
    let out = pod.curl(&up.url("/denied"))?;
    ensure!(
        !out.success(),
        "curl to a denied destination succeeded: {out:?}"
    );
    ensure!(
        up.accepted() == 0,
        "the upstream accepted {} connections",
        up.accepted()
    );
    wait_ebpf_count(&d, "pod-a", "forbidden", "denied", 2.0)?;
    Ok(())
}

/// Case 5: The daemon runs inside the enrolled cgroup (host listener mode): its
/// own upstream connection must not be redirected back to itself.
///
/// The client runs in a child cgroup of the enrolled one (enrolled through
/// the ancestor walk): the programs deliberately skip every socket of the
/// daemon's *exact* cgroup (DESIGN.md, loop avoidance), so a client sharing
/// that very cgroup would never be redirected at all.
#[test]
fn daemon_own_upstream_connections_are_not_looped() -> Result<()> {
    let node = Node::new()?;
    let host = node.host_pod("host-a")?;
    let up_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let up = Upstream::start(up_ip)?;
    let listen_port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
    let cfg = node
        .config()
        .listener_host(listen_port)
        .destination(
            Destination::redirect("upstream")
                .cidr("127.0.0.2/32")
                .port(up.port()),
        )
        .workload(host.workload());
    let d = node.start_in(&cfg, &host)?;
    let daemon_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", d.pid()))?;
    ensure!(
        daemon_cgroup.contains(&format!("/{}\n", host.name)),
        "the daemon is not in the enrolled cgroup: {daemon_cgroup}"
    );

    let client = host.child("client")?;
    let r = client.client(&ClientRequest::get(up.addr(), "/loop"))?;
    expect_body(&r, "/loop")?;
    ensure_proxied(&r)?;
    let line = d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "workload") == Some("host-a"))?;
    ensure_access_line(&line, "host-a", "upstream", up.addr())?;
    // Let any looped connection finish and be logged before counting.
    poll_until(LOG_WAIT, "no active connections", || {
        Ok((d.metrics()?.sum("trigate_connections_active", &[]) == 0.0).then_some(()))
    })?;
    let lines = d.access_logs();
    ensure!(
        lines.len() == 1,
        "expected exactly one access-log line, got {lines:#?}"
    );
    let total = d.metrics()?.sum("trigate_connections_total", &[]);
    ensure!(
        total == 1.0,
        "trigate_connections_total = {total}, expected 1"
    );
    ensure!(
        up.accepted() == 1,
        "the upstream accepted {} connections, expected 1",
        up.accepted()
    );
    Ok(())
}

/// Runs `pod`'s client once through the daemon, checking the access log.
fn one_proxied_request(d: &Daemon, pod: &Pod, up: &Upstream, path: &str) -> Result<()> {
    let before = access_logs_of(d, &pod.name).len();
    let r = pod.client(&ClientRequest::get(up.addr(), path))?;
    expect_body(&r, path)?;
    ensure_proxied(&r)?;
    poll_until(LOG_WAIT, "the access-log line of the request", || {
        Ok((access_logs_of(d, &pod.name).len() > before).then_some(()))
    })?;
    Ok(())
}

/// Case 6: SIGKILL, fail-open: once the heartbeat is stale, pods go direct.
#[test]
fn sigkill_fail_open_connects_directly() -> Result<()> {
    let node = Node::new()?;
    let (pod, up, cfg) = single_pod_setup(&node)?;
    let mut d = node.start(&cfg.fail_mode(FailMode::Open))?;
    one_proxied_request(&d, &pod, &up, "/before")?;

    d.sigkill()?;
    // heartbeat_timeout_ms is 2000; until then connects go to the dead
    // listener and are refused.
    let r = poll_until(
        Duration::from_secs(5),
        "a direct connection after SIGKILL",
        || {
            let r = pod.client(&ClientRequest::get(up.addr(), "/after").timeout(2.0))?;
            Ok(r.ok.then_some(r))
        },
    )?;
    expect_body(&r, "/after")?;
    ensure_direct(&r)?;
    Ok(())
}

/// Case 7: SIGKILL, fail-closed: once the heartbeat is stale, connects fail with EPERM.
#[test]
fn sigkill_fail_closed_refuses_with_eperm() -> Result<()> {
    let node = Node::new()?;
    let (pod, up, cfg) = single_pod_setup(&node)?;
    let mut d = node.start(&cfg.fail_mode(FailMode::Closed))?;
    one_proxied_request(&d, &pod, &up, "/before")?;

    d.sigkill()?;
    let r = poll_until(
        Duration::from_secs(5),
        "connect() to fail with EPERM after SIGKILL",
        || {
            let r = pod.client(&ClientRequest::get(up.addr(), "/after").timeout(2.0))?;
            ensure!(
                !r.ok,
                "the request succeeded after SIGKILL in fail-closed mode: {r:?}"
            );
            Ok(r.is_eperm().then_some(r))
        },
    )?;
    ensure!(
        r.error
            .as_deref()
            .unwrap_or("")
            .starts_with("PermissionError"),
        "{r:?}"
    );
    let after: Vec<_> = up
        .requests()
        .into_iter()
        .filter(|(_, p)| p == "/after")
        .collect();
    ensure!(
        after.is_empty(),
        "requests reached the upstream after SIGKILL: {after:?}"
    );
    Ok(())
}

fn ensure_one_of_each(node: &Node) -> Result<()> {
    let progs = node.attached()?;
    let counts = trigate_e2e::trigate_program_counts(&progs);
    let want = [
        "trigate_connect4",
        "trigate_connect6",
        "trigate_getpeername4",
        "trigate_getpeername6",
        "trigate_sock_ops",
    ];
    ensure!(
        counts.len() == want.len() && want.iter().all(|p| counts.get(p) == Some(&1)),
        "expected exactly one of each trigate program on {}, got {counts:?} from {progs:#?}",
        node.cgroup.display()
    );
    Ok(())
}

/// Case 8: Restart after SIGKILL replaces the pinned links (no duplicates);
/// a clean stop detaches everything and removes the pins.
#[test]
fn restart_reattaches_without_duplicates_and_stop_detaches() -> Result<()> {
    let node = Node::new()?;
    let (pod, up, cfg) = single_pod_setup(&node)?;
    let mut first = node.start(&cfg)?;
    ensure_one_of_each(&node)?;
    ensure!(
        node.pin_dir().is_dir(),
        "no pin dir {} while running",
        node.pin_dir().display()
    );
    first.sigkill()?;
    ensure!(
        node.pin_dir().is_dir(),
        "the pin dir {} vanished after SIGKILL",
        node.pin_dir().display()
    );
    ensure_one_of_each(&node)?;

    let mut second = node.start(&cfg)?;
    ensure_one_of_each(&node)?;
    one_proxied_request(&second, &pod, &up, "/second")?;

    second.stop()?;
    let left: Vec<_> = node
        .attached()?
        .into_iter()
        .filter(|p| p.name.starts_with("trigate"))
        .collect();
    ensure!(
        left.is_empty(),
        "programs still attached after a clean stop: {left:#?}"
    );
    ensure!(
        !node.pin_dir().exists(),
        "the pin dir {} is still there after a clean stop",
        node.pin_dir().display()
    );
    Ok(())
}

/// Case 9: Two pods whose clients use the same local port: the redirected
/// tuples (127.0.0.1:40123 → 127.0.0.1:15001) differ only by netns.
#[test]
fn same_client_port_in_two_pods_is_attributed_per_pod() -> Result<()> {
    const PORT: u16 = 40123;
    let node = Node::new()?;
    let pod_a = node.pod("pod-a")?;
    let pod_b = node.pod("pod-b")?;
    let up_a = Upstream::start(pod_a.host_ip.into())?;
    let up_b = Upstream::start(pod_b.host_ip.into())?;
    let cfg = node
        .config()
        .destination(
            Destination::redirect("up-a")
                .addr(up_a.ip())
                .port(up_a.port()),
        )
        .destination(
            Destination::redirect("up-b")
                .addr(up_b.ip())
                .port(up_b.port()),
        )
        .workload(pod_a.workload())
        .workload(pod_b.workload());
    let d = node.start(&cfg)?;

    let (ra, rb) = std::thread::scope(|s| {
        let a =
            s.spawn(|| pod_a.client(&ClientRequest::get(up_a.addr(), "/from-a").bind_port(PORT)));
        let b =
            s.spawn(|| pod_b.client(&ClientRequest::get(up_b.addr(), "/from-b").bind_port(PORT)));
        (
            a.join().expect("client thread"),
            b.join().expect("client thread"),
        )
    });
    let (ra, rb) = (ra?, rb?);
    expect_body(&ra, "/from-a")?;
    expect_body(&rb, "/from-b")?;
    for (r, pod) in [(&ra, &pod_a), (&rb, &pod_b)] {
        ensure_proxied(r)?;
        ensure!(
            r.local
                .as_deref()
                .is_some_and(|l| l.ends_with(&format!(":{PORT}"))),
            "client in {} did not use local port {PORT}: {r:?}",
            pod.name
        );
    }
    for (pod, up, dest) in [(&pod_a, &up_a, "up-a"), (&pod_b, &up_b, "up-b")] {
        let line =
            d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "workload") == Some(&pod.name))?;
        ensure_access_line(&line, &pod.name, dest, up.addr())?;
        let r = if pod.name == "pod-a" { &ra } else { &rb };
        ensure!(
            log_u64(&line, "pid") == Some(u64::from(r.pid)),
            "access log pid should be the client's {}: {line}",
            r.pid
        );
        let client = log_str(&line, "client").unwrap_or_default();
        ensure!(
            client.ends_with(&format!(":{PORT}")),
            "client should be …:{PORT}: {line}"
        );
    }
    ensure!(
        d.access_logs().len() == 2,
        "expected two access-log lines: {:#?}",
        d.access_logs()
    );
    Ok(())
}

/// Case 10: IPv6 end to end, with getpeername and the access log's `[addr]:port`.
#[test]
fn ipv6_pod_reaches_upstream_through_trigate() -> Result<()> {
    let node = Node::new()?;
    let (pod, up, cfg) = v6_pod_setup(&node, true)?;
    let d = node.start(&cfg)?;

    let r = pod.client(&ClientRequest::get(up.addr(), "/v6"))?;
    expect_body(&r, "/v6")?;
    ensure_proxied(&r)?;
    ensure!(
        r.peer.as_deref() == Some(up.addr().to_string().as_str()),
        "getpeername() returned {:?}, expected {}",
        r.peer,
        up.addr()
    );
    let line = d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "workload") == Some("pod-a"))?;
    ensure_access_line(&line, "pod-a", "upstream6", up.addr())?;
    let want = format!("[{}]:{}", up.ip(), up.port());
    ensure!(
        log_str(&line, "original_dst") == Some(want.as_str()),
        "original_dst should be {want}: {line}"
    );

    let out = pod.curl(&up.url("/v6-curl"))?.check("curl over IPv6")?;
    ensure!(
        out.stdout.starts_with("hello from upstream path=/v6-curl "),
        "{out:?}"
    );
    Ok(())
}

/// Case 11: `trigate check` and `trigate run` reject an invalid config, naming the field.
#[test]
fn invalid_config_is_rejected_naming_the_field() -> Result<()> {
    let node = Node::new()?;
    let good = node.config().destination(
        Destination::redirect("upstream")
            .cidr("127.0.0.2/32")
            .port(8080),
    );
    let good_file = TempFile::new("good.yaml", &good.to_yaml())?;
    let out = trigate(&[
        "check".as_ref(),
        "--config".as_ref(),
        good_file.path().as_os_str(),
    ])?;
    ensure!(
        out.success() && out.stdout.contains("config ok"),
        "trigate check rejected a valid config: {out:?}\n{}",
        good.to_yaml()
    );

    // A type error (caught while parsing) and a rule violation (caught by
    // validation): both must name the field in the contract's format.
    let cases = [
        (
            json!([{"name": "upstream", "cidrs": ["127.0.0.2/32"], "ports": [70000], "action": "redirect"}]),
            "destinations[0].ports",
        ),
        (
            json!([{"name": "upstream", "ports": [8080], "action": "redirect"}]),
            "destinations[0]",
        ),
    ];
    let mut problems = Vec::new();
    for (destinations, field) in cases {
        let bad_yaml = good.clone().set("/destinations", destinations).to_yaml();
        let bad_file = TempFile::new("bad.yaml", &bad_yaml)?;
        let out = trigate(&[
            "check".as_ref(),
            "--config".as_ref(),
            bad_file.path().as_os_str(),
        ])?;
        if out.status.code() != Some(2) {
            problems.push(format!(
                "{field}: trigate check should exit 2 on an invalid config, got {out:?}"
            ));
        }
        // CONTRACT.md: each problem on stderr as `  - <field path>: <message>`.
        if !out
            .stderr
            .lines()
            .any(|l| l.starts_with(&format!("  - {field}")))
        {
            problems.push(format!(
                "{field}: stderr should have a line `  - {field}…: <message>`, got {:?}",
                out.stderr
            ));
        }

        let mut d = Daemon::spawn(&node, &bad_yaml, None)?;
        let status = d.wait_exit(Duration::from_secs(10))?;
        if status.code() != Some(2) {
            problems.push(format!("{field}: trigate run should exit 2, got {status}"));
        }
        ensure!(
            !node.pin_dir().exists(),
            "trigate run pinned links despite an invalid config"
        );
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// Case 12: An upstream nobody listens on: the client is closed promptly, the
/// failure is logged, and the daemon keeps serving.
#[test]
fn unreachable_upstream_closes_client_promptly() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let up = Upstream::start(pod.host_ip.into())?;
    let dead = SocketAddr::new(pod.host_ip.into(), free_port(pod.host_ip.into())?);
    let cfg = node
        .config()
        .destination(
            Destination::redirect("dead")
                .addr(dead.ip())
                .port(dead.port()),
        )
        .destination(Destination::redirect("live").addr(up.ip()).port(up.port()))
        .workload(pod.workload());
    let d = node.start(&cfg)?;

    let r = pod.client(&ClientRequest::get(dead, "/nobody").timeout(10.0))?;
    ensure!(
        r.connect_ms.is_some(),
        "the redirected connect should succeed (the listener takes it): {r:?}"
    );
    ensure!(
        !r.ok || r.status.is_some_and(|s| s >= 500),
        "the client got a successful answer from a dead upstream: {r:?}"
    );
    ensure!(
        r.elapsed_ms < 5000.0,
        "the client was closed only after {} ms: {r:?}",
        r.elapsed_ms
    );
    let line = d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "destination") == Some("dead"))?;
    // Refused at once: a connect failure, not a timeout.
    ensure!(
        log_str(&line, "outcome") == Some("upstream_connect_failed"),
        "outcome should be upstream_connect_failed: {line}"
    );
    ensure!(
        log_str(&line, "error").is_some_and(|e| !e.is_empty()),
        "a failed connection's access log needs an error: {line}"
    );
    ensure!(
        log_str(&line, "original_dst") == Some(dead.to_string().as_str()),
        "original_dst should be {dead}: {line}"
    );

    one_proxied_request(&d, &pod, &up, "/alive")?;
    Ok(())
}

fn listed_workloads(d: &Daemon) -> Result<Vec<Value>> {
    let r = d.admin_get("/workloads")?;
    ensure!(r.status == 200, "GET /workloads: {} {}", r.status, r.body);
    r.json()?
        .as_array()
        .cloned()
        .context("GET /workloads is not an array")
}

/// Case 13: Enrolling and removing a pod through the admin API at run time.
#[test]
fn admin_enrollment_at_run_time() -> Result<()> {
    let node = Node::new()?;
    let pod_a = node.pod("pod-a")?;
    let pod_b = node.pod("pod-b")?;
    let up = Upstream::start(pod_b.host_ip.into())?;
    let cfg = node
        .config()
        .destination(
            Destination::redirect("upstream")
                .addr(up.ip())
                .port(up.port()),
        )
        .workload(pod_a.workload());
    let d = node.start(&cfg)?;

    let r = pod_b.client(&ClientRequest::get(up.addr(), "/not-yet"))?;
    expect_body(&r, "/not-yet")?;
    ensure_direct(&r)?;

    let body = pod_b.workload().to_json();
    let r = d.admin_post("/workloads", &body)?;
    ensure!(r.status == 201, "POST /workloads: {} {}", r.status, r.body);
    let created = r.json()?;
    ensure!(
        created["name"] == "pod-b" && created["source"] == "admin",
        "POST answer: {created}"
    );
    let r = d.admin_post("/workloads", &body)?;
    ensure!(
        r.status == 409,
        "a second POST of pod-b should be 409, got {} {}",
        r.status,
        r.body
    );
    let listed = listed_workloads(&d)?;
    ensure!(
        listed
            .iter()
            .any(|w| w["name"] == "pod-b" && w["source"] == "admin"),
        "GET /workloads does not list pod-b: {listed:#?}"
    );
    let keys = [
        "name",
        "id",
        "cgroup",
        "cgroup_id",
        "netns",
        "netns_cookie",
        "labels",
        "listeners",
        "source",
    ];
    for w in &listed {
        let missing: Vec<_> = keys.iter().filter(|k| w.get(**k).is_none()).collect();
        ensure!(
            missing.is_empty(),
            "GET /workloads entry lacks {missing:?}: {w}"
        );
    }
    let r = d.admin_post("/workloads", &json!({"name": "Not A Name!"}))?;
    ensure!(
        r.status == 400 && r.json().is_ok_and(|j| j["error"].is_string()),
        "an invalid POST /workloads should be 400 with {{\"error\": …}}, got {} {}",
        r.status,
        r.body
    );

    let r = pod_b.client(&ClientRequest::get(up.addr(), "/enrolled"))?;
    expect_body(&r, "/enrolled")?;
    ensure_proxied(&r)?;
    let line = d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "workload") == Some("pod-b"))?;
    ensure_access_line(&line, "pod-b", "upstream", up.addr())?;

    let r = d.admin_delete("/workloads/pod-b")?;
    ensure!(
        r.status == 204,
        "DELETE /workloads/pod-b: {} {}",
        r.status,
        r.body
    );
    let r = d.admin_delete("/workloads/pod-b")?;
    ensure!(
        r.status == 404,
        "a second DELETE should be 404, got {} {}",
        r.status,
        r.body
    );
    let listed = listed_workloads(&d)?;
    ensure!(
        listed.iter().all(|w| w["name"] != "pod-b"),
        "pod-b still listed after DELETE: {listed:#?}"
    );
    let r = pod_b.client(&ClientRequest::get(up.addr(), "/removed"))?;
    expect_body(&r, "/removed")?;
    ensure_direct(&r)?;
    let lines = access_logs_of(&d, "pod-b");
    ensure!(
        lines.len() == 1,
        "pod-b was redirected after DELETE: {lines:#?}"
    );
    Ok(())
}

/// Case 14: Connection and eBPF counters on /metrics.
#[test]
fn metrics_count_connections_and_ebpf_redirects() -> Result<()> {
    let node = Node::new()?;
    let (pod, up, cfg) = single_pod_setup(&node)?;
    let d = node.start(&cfg)?;
    one_proxied_request(&d, &pod, &up, "/m1")?;
    one_proxied_request(&d, &pod, &up, "/m2")?;

    let m = poll_until(LOG_WAIT, "connection and eBPF counters", || {
        let m = d.metrics()?;
        let conns = m.sum(
            "trigate_connections_total",
            &[
                ("workload", "pod-a"),
                ("destination", "upstream"),
                ("outcome", "ok"),
            ],
        );
        let redirected = m.sum(
            "trigate_ebpf_connects_total",
            &[
                ("workload", "pod-a"),
                ("destination", "upstream"),
                ("outcome", "redirected"),
            ],
        );
        Ok((conns >= 2.0 && redirected >= 2.0).then_some(m))
    })
    .map_err(|e| {
        let text = d.metrics().map(|m| m.text).unwrap_or_default();
        e.context(format!("/metrics:\n{text}"))
    })?;
    ensure!(
        m.find("trigate_build_info", &[]).next().is_some(),
        "no trigate_build_info:\n{}",
        m.text
    );
    let enrolled = m.sum("trigate_workloads_enrolled", &[]);
    ensure!(
        enrolled == 1.0,
        "trigate_workloads_enrolled = {enrolled}, expected 1"
    );
    let sent = m.sum(
        "trigate_connection_bytes_total",
        &[("workload", "pod-a"), ("direction", "sent")],
    );
    ensure!(sent > 0.0, "no bytes sent counted:\n{}", m.text);
    Ok(())
}

/// The harness refuses to run without its tools rather than passing.
#[test]
fn environment_is_complete() -> Result<()> {
    match trigate_e2e::env() {
        Ok(env) => {
            let out = trigate(&["version".as_ref()])?;
            ensure!(
                out.success() && out.stdout.starts_with("trigate "),
                "`{} version` printed {out:?}",
                env.trigate.display()
            );
            Ok(())
        }
        Err(e) => bail!("{e:#}"),
    }
}

/// Case 15: An `observe` destination is counted, not redirected.
#[test]
fn observe_destination_is_counted_not_redirected() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let up = Upstream::start(pod.host_ip.into())?;
    let cfg = node
        .config()
        .destination(
            Destination::observe("watched")
                .addr(up.ip())
                .port(up.port()),
        )
        .workload(pod.workload());
    let d = node.start(&cfg)?;

    let r = pod.client(&ClientRequest::get(up.addr(), "/observed"))?;
    expect_body(&r, "/observed")?;
    ensure_direct(&r)?;
    wait_ebpf_count(&d, "pod-a", "watched", "observed", 1.0)?;
    ensure!(
        d.access_logs().is_empty(),
        "observed connections are not proxied: {:#?}",
        d.access_logs()
    );
    Ok(())
}

/// Case 16: `trigate exec` puts a command into the workload's cgroup and netns,
/// so it is intercepted like any process of the pod.
#[test]
fn trigate_exec_runs_a_command_as_the_workload() -> Result<()> {
    let node = Node::new()?;
    let (_pod, up, cfg) = single_pod_setup(&node)?;
    let d = node.start(&cfg)?;
    let config = d.config_path();
    let url = up.url("/exec");
    let out = trigate(&[
        "exec".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--workload".as_ref(),
        "pod-a".as_ref(),
        "--".as_ref(),
        node.env.curl.as_os_str(),
        "-sS".as_ref(),
        "--noproxy".as_ref(),
        "*".as_ref(),
        "--max-time".as_ref(),
        "10".as_ref(),
        url.as_ref(),
    ])?;
    ensure!(
        out.success() && out.stdout.starts_with("hello from upstream path=/exec "),
        "trigate exec curl: {out:?}"
    );
    let line = d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "comm") == Some("curl"))?;
    ensure_access_line(&line, "pod-a", "upstream", up.addr())?;
    Ok(())
}

/// Case 17: A dual-stack (AF_INET6) socket dialing a v4-mapped address goes
/// through connect6 and still reaches the IPv4 listener; getpeername shows
/// the mapped original.
#[test]
fn dual_stack_socket_to_v4_mapped_address_is_redirected() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod_v6("pod-a")?;
    let up = Upstream::start(pod.host_ip.into())?;
    let cfg = node
        .config()
        .destination(
            Destination::redirect("upstream")
                .addr(up.ip())
                .port(up.port()),
        )
        .workload(pod.workload());
    let d = node.start(&cfg)?;

    let mut req = ClientRequest::get(up.addr(), "/mapped");
    req.host = format!("::ffff:{}", up.ip());
    let r = pod.client(&req)?;
    expect_body(&r, "/mapped")?;
    let want_peer = format!("[::ffff:{}]:{}", up.ip(), up.port());
    ensure!(
        r.peer.as_deref() == Some(want_peer.as_str()),
        "getpeername() {:?}, expected {want_peer}",
        r.peer
    );
    ensure!(
        r.local
            .as_deref()
            .is_some_and(|l| l.starts_with("[::ffff:127.0.0.1]:")),
        "the socket should be connected to the IPv4 listener: {r:?}"
    );
    let line = d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "workload") == Some("pod-a"))?;
    ensure_access_line(&line, "pod-a", "upstream", up.addr())?;
    Ok(())
}

/// Case 18: Without an IPv6 listener (`listener.ipv6: false`) an IPv6
/// destination is left alone and counted as `no_listener`.
#[test]
fn ipv6_destination_without_ipv6_listener_goes_direct() -> Result<()> {
    let node = Node::new()?;
    let (pod, up, cfg) = v6_pod_setup(&node, false)?;
    let d = node.start(&cfg)?;

    let r = pod.client(&ClientRequest::get(up.addr(), "/v6-direct"))?;
    expect_body(&r, "/v6-direct")?;
    let peer = upstream_peer(r.body()?)?;
    ensure!(
        r.local.as_deref() == Some(peer.to_string().as_str()),
        "expected a direct connection: client socket {:?}, upstream saw {peer}",
        r.local
    );
    wait_ebpf_count(&d, "pod-a", "upstream6", "no_listener", 1.0)?;
    ensure!(
        d.access_logs().is_empty(),
        "nothing should be proxied: {:#?}",
        d.access_logs()
    );
    Ok(())
}

/// Case 19: A clean stop with a connection still open: the daemon exits 0
/// promptly and the cut connection is logged, with a non-ok outcome and
/// the `error` CONTRACT.md requires for every non-ok line.
#[test]
fn stop_with_an_open_connection_logs_it() -> Result<()> {
    let node = Node::new()?;
    let (pod, up, cfg) = single_pod_setup(&node)?;
    let mut d = node.start(&cfg)?;
    let python = &node.env.python3;
    let script = format!(
        "import socket, time\ns = socket.create_connection(('{}', {}))\ntime.sleep(30)",
        up.ip(),
        up.port()
    );
    let mut holder = pod.command(python, &["-c", &script]).spawn()?;
    let res = (|| {
        poll_until(
            LOG_WAIT,
            "the held connection to reach the upstream",
            || Ok((up.accepted() >= 1).then_some(())),
        )?;
        d.stop()?;
        let line = d.wait_for_access_log(LOG_WAIT, |l| log_str(l, "workload") == Some("pod-a"))?;
        let outcome = log_str(&line, "outcome").unwrap_or_default();
        ensure!(
            outcome == "shutdown",
            "a connection cut by the stop should have outcome shutdown: {line}"
        );
        // Written before the daemon reports it stopped, not lost with it.
        let logs = d.logs();
        let pos = |msg: &str| logs.iter().position(|l| log_str(l, "message") == Some(msg));
        ensure!(
            matches!(
                (pos("connection"), pos("eBPF programs detached")),
                (Some(a), Some(b)) if a < b
            ),
            "the access-log line must come before the daemon finishes stopping"
        );
        ensure!(
            log_str(&line, "error").is_some_and(|e| !e.is_empty()),
            "a non-ok access-log line needs an error (CONTRACT.md): {line}"
        );
        Ok(())
    })();
    let _ = holder.kill();
    let _ = holder.wait();
    res
}

/// Replaces the daemon's config file the way editors and tools do: write a
/// new file, then rename it over the old one.
fn rewrite_config(d: &Daemon, cfg: &trigate_e2e::Config) -> Result<()> {
    let path = d.config_path();
    let tmp = path.with_extension("yaml.new");
    std::fs::write(&tmp, cfg.to_yaml())?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// Waits for the `result` counter of config reloads to reach `n`.
fn wait_reloads(d: &Daemon, result: &str, n: f64) -> Result<()> {
    poll_until(
        LOG_WAIT,
        &format!("{n} config reloads with result {result}"),
        || {
            let got = d
                .metrics()?
                .sum("trigate_config_reloads_total", &[("result", result)]);
            Ok((got >= n).then_some(()))
        },
    )
}

/// Hot reload: a valid change applies without a restart (a destination
/// turns to deny, a new one is redirected); an invalid one is rejected and
/// the running config stays; a ConfigMap-style symlink swap is picked up.
#[test]
fn config_hot_reload_applies_valid_changes_and_rejects_invalid_ones() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let up1 = Upstream::start(pod.host_ip.into())?;
    let up2 = Upstream::start(pod.host_ip.into())?;
    let first = |action: fn(&str) -> Destination| action("first").addr(up1.ip()).port(up1.port());
    let base = node.config().workload(pod.workload());
    let d = node.start(&base.clone().destination(first(Destination::redirect)))?;
    let r = pod.client(&ClientRequest::get(up1.addr(), "/one"))?;
    expect_body(&r, "/one")?;
    ensure_proxied(&r)?;
    let r = pod.client(&ClientRequest::get(up2.addr(), "/two"))?;
    expect_body(&r, "/two")?;
    ensure_direct(&r)?;

    // Valid change: first is denied now, second is redirected.
    let second = Destination::redirect("second")
        .addr(up2.ip())
        .port(up2.port());
    let changed = base
        .clone()
        .destination(first(Destination::deny))
        .destination(second.clone());
    rewrite_config(&d, &changed)?;
    wait_reloads(&d, "success", 1.0)?;
    let r = pod.client(&ClientRequest::get(up1.addr(), "/one-denied"))?;
    ensure!(
        r.is_eperm(),
        "first should be denied after the reload: {r:?}"
    );
    let r = pod.client(&ClientRequest::get(up2.addr(), "/two-proxied"))?;
    expect_body(&r, "/two-proxied")?;
    ensure_proxied(&r)?;
    let m = d.metrics()?;
    ensure!(
        m.sum("trigate_config_last_reload_success", &[]) == 1.0,
        "reload success gauge should be 1:\n{}",
        m.text
    );

    // Invalid change: rejected, the running config stays, gauge 0.
    let path = d.config_path();
    std::fs::write(
        path.with_extension("bad"),
        "destinations:\n  - name: x\n    ports: [0]\n",
    )?;
    std::fs::rename(path.with_extension("bad"), &path)?;
    wait_reloads(&d, "failure", 1.0)?;
    let line = d.wait_for_log(LOG_WAIT, "the reload failure log line", |l| {
        log_str(l, "message").is_some_and(|m| m.starts_with("config reload failed"))
    })?;
    let error = log_str(&line, "error").unwrap_or_default();
    ensure!(
        error.contains("destinations[0]"),
        "the error should name the field: {line}"
    );
    ensure!(
        d.metrics()?.sum("trigate_config_last_reload_success", &[]) == 0.0,
        "reload success gauge should be 0 after a rejected change"
    );
    let r = pod.client(&ClientRequest::get(up2.addr(), "/still-proxied"))?;
    expect_body(&r, "/still-proxied")?;
    ensure_proxied(&r)?;

    // A ConfigMap update: the path becomes a symlink swapped to new content.
    let target = path.with_extension("v3");
    std::fs::write(
        &target,
        base.clone()
            .destination(first(Destination::redirect))
            .to_yaml(),
    )?;
    let link = path.with_extension("link");
    std::os::unix::fs::symlink(&target, &link)?;
    std::fs::rename(&link, &path)?;
    wait_reloads(&d, "success", 2.0)?;
    let r = pod.client(&ClientRequest::get(up1.addr(), "/one-again"))?;
    expect_body(&r, "/one-again")?;
    ensure_proxied(&r)?;
    let r = pod.client(&ClientRequest::get(up2.addr(), "/two-direct-again"))?;
    expect_body(&r, "/two-direct-again")?;
    ensure_direct(&r)?;
    ensure!(
        d.metrics()?.sum("trigate_config_last_reload_success", &[]) == 1.0,
        "reload success gauge should be back to 1"
    );
    Ok(())
}
