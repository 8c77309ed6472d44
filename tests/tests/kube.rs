//! Pod discovery end to end: a fake Kubernetes API server (recorded wire
//! format, tests/fixtures/kube) tells the real daemon about pods laid out
//! like kubelet's (systemd or cgroupfs driver cgroups under the test's node
//! cgroup, a sandbox process in a netns the test made, or in the host netns
//! for hostNetwork pods); the daemon enrolls them and their traffic goes
//! through the real eBPF redirect. See tests/README.md.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use trigate_e2e::{
    enrolled_cgroup_ids, log_str, poll_until, ApiMode, ClientRequest, ClientResult, Daemon,
    Destination, FakeKubeApi, KubePod, Kubepods, Node, Runner, Upstream, CMD_TIMEOUT,
};

/// Long enough for the watcher's backoff (0.8 s, doubling) after a failure
/// or two, and for pod retries.
const WAIT: Duration = Duration::from_secs(20);

fn node_name(node: &Node) -> String {
    format!("node-{}", node.instance)
}

/// The node's config with pod discovery against `api`.
fn kube_config(node: &Node, api: &FakeKubeApi) -> trigate_e2e::Config {
    node.config().set(
        "/kubernetes",
        json!({
            "enabled": true,
            "node_name": node_name(node),
            "api_server": api.url(),
            "cgroup_root": node.cgroup.to_string_lossy(),
            "proc_root": "/proc",
        }),
    )
}

fn workloads(d: &Daemon) -> Result<Vec<Value>> {
    let r = d.admin_get("/workloads")?;
    ensure!(r.status == 200, "GET /workloads: {} {}", r.status, r.body);
    r.json()?
        .as_array()
        .cloned()
        .context("GET /workloads is not an array")
}

fn workload(d: &Daemon, name: &str) -> Result<Option<Value>> {
    Ok(workloads(d)?.into_iter().find(|w| w["name"] == name))
}

/// Waits until `name` is enrolled (and `pred` holds for its entry).
fn wait_enrolled(d: &Daemon, name: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    poll_until(WAIT, &format!("{name} enrolled"), || {
        Ok(workload(d, name)?.filter(|w| w["source"] == "kubernetes" && pred(w)))
    })
    .map_err(|e| anyhow::anyhow!("{e:#}; workloads: {:#?}", workloads(d)))
}

fn wait_unenrolled(d: &Daemon, name: &str) -> Result<()> {
    poll_until(WAIT, &format!("{name} unenrolled"), || {
        Ok(workload(d, name)?.is_none().then_some(()))
    })
}

fn cgroup_id(w: &Value) -> Result<u64> {
    w["cgroup_id"]
        .as_u64()
        .with_context(|| format!("no cgroup_id: {w}"))
}

fn metric(d: &Daemon, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    Ok(d.metrics()?.sum(name, labels))
}

fn wait_metric(d: &Daemon, name: &str, labels: &[(&str, &str)], at_least: f64) -> Result<()> {
    poll_until(WAIT, &format!("{name}{labels:?} >= {at_least}"), || {
        Ok((metric(d, name, labels)? >= at_least).then_some(()))
    })
}

/// The client's connection went through the daemon: its socket is on the
/// listener's loopback and the upstream saw another one.
fn proxied(r: &ClientResult) -> Result<bool> {
    let body = r.body()?;
    ensure!(
        r.status == Some(200) && body.starts_with("hello from upstream"),
        "unexpected answer {r:?}"
    );
    let peer = body.rsplit("peer=").next().unwrap_or_default().trim();
    Ok(r.local.as_deref().is_some_and(|l| l.starts_with("127."))
        && r.local.as_deref() != Some(peer))
}

/// Pod discovery from the API to the kernel and back: a running pod is
/// enrolled with its Kubernetes identity, its traffic is redirected and
/// attributed to `<namespace>/<pod>`; a label change updates the identity
/// in place; opting out unenrolls; deleting unenrolls, closes its listener
/// and removes its map entry.
#[test]
fn pod_is_enrolled_attributed_relabelled_opted_out_and_deleted() -> Result<()> {
    let node = Node::new()?;
    let kubepods = Kubepods::new(&node)?;
    let api = FakeKubeApi::start()?;
    let mut spec = Kubepods::spec("finance", "agent-1", &node_name(&node));
    spec.service_account = "agent".into();
    let pod = kubepods.create(&node, spec)?;
    let other_node = Kubepods::spec("finance", "elsewhere", "some-other-node");
    api.apply(&pod.spec);
    api.apply(&other_node);
    let up = Upstream::start(pod.pod.host_ip.into())?;
    let cfg = kube_config(&node, &api).destination(
        Destination::redirect("upstream")
            .addr(up.ip())
            .port(up.port()),
    );
    let d = node.start(&cfg)?;
    let name = pod.spec.workload();

    let w = wait_enrolled(&d, &name, |_| true)?;
    let labels = &w["labels"];
    ensure!(
        labels["k8s:namespace"] == "finance"
            && labels["k8s:pod"] == "agent-1"
            && labels["k8s:serviceaccount"] == "agent"
            && labels["k8s:node"] == node_name(&node).as_str()
            && labels["app"] == "agent-1",
        "identity labels: {w}"
    );
    ensure!(w["kubernetes"]["uid"] == pod.spec.uid.as_str(), "uid: {w}");
    ensure!(
        w["cgroup"] == pod.pod.cgroup.to_string_lossy().as_ref(),
        "the pod-level cgroup is enrolled: {w}"
    );
    ensure!(
        w["netns"]
            .as_str()
            .is_some_and(|p| p.starts_with("/proc/") && p.ends_with("/ns/net")),
        "netns from a process of the pod: {w}"
    );
    let id = cgroup_id(&w)?;
    ensure!(
        enrolled_cgroup_ids(&node.cgroup)?.contains(&id),
        "cgroup {id} not in ENROLL_CGROUP"
    );
    ensure!(
        workload(&d, "finance/elsewhere")?.is_none(),
        "a pod of another node was enrolled"
    );
    ensure!(
        api.requests()
            .iter()
            .all(|r| r.contains(&format!("spec.nodeName%3D{}", node_name(&node)))),
        "every request selects this node's pods: {:?}",
        api.requests()
    );

    let r = pod.pod.client(&ClientRequest::get(up.addr(), "/k8s"))?;
    ensure!(proxied(&r)?, "not redirected: {r:?}");
    d.wait_for_access_log(WAIT, |l| log_str(l, "workload") == Some(name.as_str()))?;
    ensure!(
        metric(&d, "trigate_kube_pods", &[("state", "enrolled")])? == 1.0,
        "trigate_kube_pods{{state=enrolled}}"
    );

    // New labels: the same enrollment with a new identity.
    let relabelled = pod.spec.clone().label("app", "agent-v2");
    api.apply(&relabelled);
    let w2 = wait_enrolled(&d, &name, |w| w["labels"]["app"] == "agent-v2")?;
    ensure!(w2["id"] == w["id"], "relabel re-enrolled: {w} then {w2}");

    // Opting out by annotation unenrolls.
    api.apply(
        &relabelled
            .clone()
            .annotation("trigate.io/intercept", "false"),
    );
    wait_unenrolled(&d, &name)?;
    ensure!(
        !enrolled_cgroup_ids(&node.cgroup)?.contains(&id),
        "map entry left after opt-out"
    );
    let r = pod.pod.client(&ClientRequest::get(up.addr(), "/out"))?;
    ensure!(!proxied(&r)?, "an opted-out pod was redirected: {r:?}");
    wait_metric(&d, "trigate_kube_pods", &[("state", "opted_out")], 1.0)?;

    // Back in, then deleted.
    api.apply(&relabelled);
    let w3 = wait_enrolled(&d, &name, |_| true)?;
    let listener = w3["listeners"][0]
        .as_str()
        .context("a listener address")?
        .to_string();
    api.delete("finance", "agent-1")?;
    wait_unenrolled(&d, &name)?;
    ensure!(
        !enrolled_cgroup_ids(&node.cgroup)?.contains(&cgroup_id(&w3)?),
        "map entry left after delete"
    );
    let env = trigate_e2e::env()?;
    let out = pod.pod.run(
        &env.curl,
        &["-sS", "--max-time", "3", &format!("http://{listener}/")],
        CMD_TIMEOUT,
    )?;
    ensure!(
        !out.success(),
        "the pod's listener {listener} still accepts: {out:?}"
    );
    let r = pod.pod.client(&ClientRequest::get(up.addr(), "/gone"))?;
    ensure!(!proxied(&r)?, "a deleted pod was redirected: {r:?}");
    Ok(())
}

/// A dropped watch is resumed; a watch answered 410 Gone relists, and a
/// pod deleted while the daemon was not watching is unenrolled; a daemon
/// restart finds every pod again with nothing left over.
#[test]
fn watch_reconnects_relists_on_410_and_restart_rediscovers() -> Result<()> {
    let node = Node::new()?;
    let kubepods = Kubepods::new(&node)?;
    let api = FakeKubeApi::start()?;
    let n = node_name(&node);
    let a = kubepods.create(&node, Kubepods::spec("team", "a", &n))?;
    let b = kubepods.create(&node, Kubepods::spec("team", "b", &n))?;
    api.apply(&a.spec);
    api.apply(&b.spec);
    let cfg = kube_config(&node, &api);
    let mut d = node.start(&cfg)?;
    wait_enrolled(&d, "team/a", |_| true)?;
    wait_enrolled(&d, "team/b", |_| true)?;

    api.wait_watching(WAIT)?;
    api.drop_watches();
    let c = kubepods.create(&node, Kubepods::spec("team", "c", &n))?;
    api.apply(&c.spec);
    wait_enrolled(&d, "team/c", |_| true)?;
    let watches = api
        .requests()
        .iter()
        .filter(|r| r.contains("watch=true"))
        .count();
    ensure!(
        watches >= 2,
        "the watch was not resumed: {:?}",
        api.requests()
    );

    // Down while a is deleted; the history is compacted, so the resumed
    // watch gets 410 and the daemon relists.
    api.set_mode(ApiMode::Down);
    api.delete("team", "a")?;
    api.compact();
    std::thread::sleep(Duration::from_millis(300));
    api.set_mode(ApiMode::Up);
    wait_unenrolled(&d, "team/a")?;
    ensure!(
        workload(&d, "team/b")?.is_some() && workload(&d, "team/c")?.is_some(),
        "b and c stay"
    );
    ensure!(
        metric(&d, "trigate_kube_relists_total", &[])? >= 2.0,
        "no relist counted"
    );
    ensure!(
        metric(&d, "trigate_kube_watch_restarts_total", &[])? >= 1.0,
        "no watch restart counted"
    );
    let ids: Vec<u64> = [&b, &c]
        .iter()
        .map(|p| workload(&d, &p.spec.workload()).and_then(|w| cgroup_id(&w.context("enrolled")?)))
        .collect::<Result<_>>()?;
    let mut in_map = enrolled_cgroup_ids(&node.cgroup)?;
    in_map.sort_unstable();
    let mut want = ids.clone();
    want.sort_unstable();
    ensure!(
        in_map == want,
        "ENROLL_CGROUP holds {in_map:?}, expected {want:?}"
    );

    d.stop()?;
    let d2 = node.start(&cfg)?;
    wait_enrolled(&d2, "team/b", |_| true)?;
    wait_enrolled(&d2, "team/c", |_| true)?;
    let mut in_map = enrolled_cgroup_ids(&node.cgroup)?;
    in_map.sort_unstable();
    ensure!(
        in_map == want,
        "after restart ENROLL_CGROUP holds {in_map:?}, expected {want:?}"
    );
    ensure!(
        workloads(&d2)?.len() == 2,
        "workloads after restart: {:#?}",
        workloads(&d2)?
    );
    drop(a);
    Ok(())
}

/// An API server that answers garbage, then is down, at start: the daemon
/// starts anyway, retries, and enrolls once it is back. A pod whose cgroup
/// does not exist yet is logged by name, counted, retried, and enrolled
/// when it appears; the other pods are not held up.
#[test]
fn bad_api_and_missing_cgroup_are_retried_without_blocking_others() -> Result<()> {
    let node = Node::new()?;
    let kubepods = Kubepods::new(&node)?;
    let api = FakeKubeApi::start()?;
    let n = node_name(&node);
    let ok = kubepods.create(&node, Kubepods::spec("apps", "ok", &n))?;
    let late = Kubepods::spec("apps", "late", &n);
    api.apply(&ok.spec);
    api.apply(&late);
    api.set_mode(ApiMode::Garbage);
    let mut d = node.start(&kube_config(&node, &api))?;
    wait_metric(&d, "trigate_kube_watch_restarts_total", &[], 1.0)?;
    api.set_mode(ApiMode::Down);
    wait_metric(&d, "trigate_kube_watch_restarts_total", &[], 2.0)?;
    ensure!(
        workloads(&d)?.is_empty(),
        "nothing enrolled while the API is away"
    );
    api.set_mode(ApiMode::Up);

    wait_enrolled(&d, "apps/ok", |_| true)?;
    wait_metric(
        &d,
        "trigate_kube_enroll_errors_total",
        &[("reason", "no_cgroup")],
        1.0,
    )?;
    d.wait_for_log(WAIT, "a warning naming the pod", |l| {
        log_str(l, "pod") == Some("apps/late") && log_str(l, "reason") == Some("no_cgroup")
    })?;
    ensure!(
        metric(&d, "trigate_kube_pods", &[("state", "pending")])? == 1.0,
        "apps/late pending"
    );
    ensure!(
        workload(&d, "apps/late")?.is_none(),
        "late enrolled without a cgroup"
    );

    // kubelet creates it: the retry picks it up.
    let late = kubepods.create(&node, late)?;
    wait_enrolled(&d, "apps/late", |_| true)?;
    ensure!(d.try_status()?.is_none(), "the daemon exited");
    drop(late);
    Ok(())
}

/// `namespaces:` and `service_accounts:` in an authorization rule select
/// pods by their Kubernetes identity.
#[test]
fn policies_select_namespaces_and_service_accounts() -> Result<()> {
    let node = Node::new()?;
    let kubepods = Kubepods::new(&node)?;
    let api = FakeKubeApi::start()?;
    let n = node_name(&node);
    let mut fin_agent = Kubepods::spec("finance", "agent", &n);
    fin_agent.service_account = "agent".into();
    let fin_other = Kubepods::spec("finance", "other", &n);
    let mut legal_agent = Kubepods::spec("legal", "agent", &n);
    legal_agent.service_account = "agent".into();
    let pods: Vec<KubePod> = [fin_agent, fin_other, legal_agent]
        .into_iter()
        .map(|s| kubepods.create(&node, s))
        .collect::<Result<_>>()?;
    let up = Upstream::start(pods[0].pod.host_ip.into())?;
    for p in &pods[1..] {
        p.pod.route_to(up.ip())?;
    }
    for p in &pods {
        api.apply(&p.spec);
    }
    let cfg = kube_config(&node, &api)
        .set(
            "/routes",
            json!([{"name": "finance-agents", "match": {"path": {"prefix": "/"}},
                    "allow": [{"namespaces": ["finance"], "service_accounts": ["agent"]}]}]),
        )
        .destination(Destination::redirect("api").addr(up.ip()).port(up.port()))
        .gate_all("api");
    let d = node.start(&cfg)?;
    for p in &pods {
        wait_enrolled(&d, &p.spec.workload(), |_| true)?;
    }
    let env = trigate_e2e::env()?;
    let status = |p: &KubePod| -> Result<String> {
        let out = p.pod.run(
            &env.curl,
            &[
                "-sS",
                "--noproxy",
                "*",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{}/x", up.addr()),
            ],
            CMD_TIMEOUT,
        )?;
        Ok(out.stdout.trim().to_string())
    };
    ensure!(
        status(&pods[0])? == "200",
        "finance/agent (sa agent) is allowed"
    );
    ensure!(
        status(&pods[1])? == "403",
        "finance/other (sa default) is refused"
    );
    ensure!(
        status(&pods[2])? == "403",
        "legal/agent (namespace legal) is refused"
    );
    Ok(())
}

/// With `kubernetes.namespaces`, `trigate.io/intercept` on a namespace opts
/// its pods out (label) or back in; an annotation works too.
#[test]
fn namespaces_opt_their_pods_out_and_in() -> Result<()> {
    let node = Node::new()?;
    let kubepods = Kubepods::new(&node)?;
    let api = FakeKubeApi::start()?;
    let n = node_name(&node);
    api.apply_namespace("quiet", &[("trigate.io/intercept", "false")], &[]);
    api.apply_namespace("loud", &[], &[]);
    let quiet = kubepods.create(&node, Kubepods::spec("quiet", "p", &n))?;
    let loud = kubepods.create(&node, Kubepods::spec("loud", "p", &n))?;
    api.apply(&quiet.spec);
    api.apply(&loud.spec);
    let d = node.start(&kube_config(&node, &api).set("/kubernetes/namespaces", json!(true)))?;
    wait_enrolled(&d, "loud/p", |_| true)?;
    // Both pods were decided in the same pass, once namespaces were listed.
    ensure!(
        workload(&d, "quiet/p")?.is_none(),
        "a pod of an opted-out namespace was enrolled"
    );
    wait_metric(&d, "trigate_kube_pods", &[("state", "opted_out")], 1.0)?;
    ensure!(
        api.requests()
            .iter()
            .any(|r| r.starts_with("/api/v1/namespaces")),
        "namespaces were not read: {:?}",
        api.requests()
    );

    api.apply_namespace("quiet", &[], &[]);
    wait_enrolled(&d, "quiet/p", |_| true)?;
    api.apply_namespace("loud", &[], &[("trigate.io/intercept", "false")]);
    wait_unenrolled(&d, "loud/p")?;
    ensure!(workload(&d, "quiet/p")?.is_some(), "quiet/p stays");
    Ok(())
}

/// hostNetwork pods share the node's network namespace. By default they
/// are skipped (counted as `host_network`) and not redirected; one that
/// opts in (`trigate.io/intercept: "true"`) is enrolled, and unenrolled
/// when it stops opting in; with `kubernetes.host_network` all are. They
/// are enrolled by cgroup only, each with its own listener on a free port
/// in the node's namespace: two of them side by side each get their own
/// traffic attributed, and a node process outside them (kubelet, in
/// effect) is not redirected.
#[test]
fn host_network_pods_are_skipped_unless_opted_in_and_enrolled_by_cgroup() -> Result<()> {
    let node = Node::new()?;
    let kubepods = Kubepods::new(&node)?;
    let api = FakeKubeApi::start()?;
    let n = node_name(&node);
    let exporter = kubepods.create_host_network(&node, Kubepods::spec("infra", "exporter", &n))?;
    let mut agent = Kubepods::spec("infra", "agent", &n);
    agent.qos = "Burstable".into();
    let agent = kubepods.create_host_network(&node, agent)?;
    let system = node.host_pod("system.slice")?;
    api.apply(&exporter.spec);
    api.apply(&agent.spec);
    let up = Upstream::start(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))?;
    let cfg = kube_config(&node, &api).destination(
        Destination::redirect("upstream")
            .addr(up.ip())
            .port(up.port()),
    );
    let mut d = node.start(&cfg)?;
    wait_metric(&d, "trigate_kube_pods", &[("state", "host_network")], 2.0)?;
    ensure!(
        workloads(&d)?.is_empty(),
        "hostNetwork pods enrolled by default: {:#?}",
        workloads(&d)?
    );
    let r = exporter
        .pod
        .client(&ClientRequest::get(up.addr(), "/skipped"))?;
    ensure!(
        !proxied(&r)?,
        "a skipped hostNetwork pod was redirected: {r:?}"
    );

    // The pod opts in by annotation.
    let opted_in = exporter
        .spec
        .clone()
        .annotation("trigate.io/intercept", "true");
    api.apply(&opted_in);
    let w = wait_enrolled(&d, "infra/exporter", |_| true)?;
    ensure!(
        w["cgroup"] == exporter.pod.cgroup.to_string_lossy().as_ref(),
        "the pod-level cgroup is enrolled: {w}"
    );
    ensure!(
        w["netns_cookie"].is_null(),
        "the node's network namespace was enrolled: {w}"
    );
    ensure!(
        enrolled_cgroup_ids(&node.cgroup)?.contains(&cgroup_id(&w)?),
        "cgroup not in ENROLL_CGROUP: {w}"
    );
    wait_metric(&d, "trigate_kube_pods", &[("state", "enrolled")], 1.0)?;
    ensure!(
        metric(&d, "trigate_kube_pods", &[("state", "host_network")])? == 1.0,
        "the other hostNetwork pod is still skipped"
    );
    let r = exporter
        .pod
        .client(&ClientRequest::get(up.addr(), "/opted-in"))?;
    ensure!(
        proxied(&r)?,
        "an opted-in hostNetwork pod was not redirected: {r:?}"
    );
    d.wait_for_access_log(WAIT, |l| log_str(l, "workload") == Some("infra/exporter"))?;
    for (who, runner) in [
        ("infra/agent", &agent.pod as &dyn Runner),
        ("system.slice", &system),
    ] {
        let r = runner.client(&ClientRequest::get(up.addr(), "/bystander"))?;
        ensure!(!proxied(&r)?, "{who} was redirected: {r:?}");
    }

    // No longer opted in: unenrolled.
    api.apply(&exporter.spec);
    wait_unenrolled(&d, "infra/exporter")?;
    wait_metric(&d, "trigate_kube_pods", &[("state", "host_network")], 2.0)?;
    d.stop()?;

    // Opted in by config: both, side by side.
    let d = node.start(&cfg.set("/kubernetes/host_network", json!(true)))?;
    let we = wait_enrolled(&d, "infra/exporter", |_| true)?;
    let wa = wait_enrolled(&d, "infra/agent", |_| true)?;
    ensure!(
        we["listeners"] != wa["listeners"],
        "two hostNetwork pods share a listener: {we} {wa}"
    );
    ensure!(
        we["netns_cookie"].is_null() && wa["netns_cookie"].is_null(),
        "the node's network namespace was enrolled: {we} {wa}"
    );
    for p in [&exporter, &agent] {
        let name = p.spec.workload();
        let before = d
            .access_logs()
            .iter()
            .filter(|l| log_str(l, "workload") == Some(name.as_str()))
            .count();
        let r = p.pod.client(&ClientRequest::get(up.addr(), "/both"))?;
        ensure!(proxied(&r)?, "{name} was not redirected: {r:?}");
        poll_until(WAIT, &format!("an access-log line for {name}"), || {
            let now = d
                .access_logs()
                .iter()
                .filter(|l| log_str(l, "workload") == Some(name.as_str()))
                .count();
            Ok((now > before).then_some(()))
        })?;
    }
    let r = system.client(&ClientRequest::get(up.addr(), "/kubelet"))?;
    ensure!(!proxied(&r)?, "a node process was redirected: {r:?}");
    ensure!(
        d.access_logs().len() == 2,
        "expected one access-log line per pod: {:#?}",
        d.access_logs()
    );
    ensure!(
        metric(&d, "trigate_kube_pods", &[("state", "enrolled")])? == 2.0
            && metric(&d, "trigate_kube_pods", &[("state", "host_network")])? == 0.0,
        "trigate_kube_pods by state"
    );
    Ok(())
}

/// kubelet's cgroupfs driver (`kubepods/<qos>/pod<uid>`, guaranteed pods
/// directly under `kubepods`): there is no driver setting, the daemon looks
/// for both layouts. A pod of each QoS class, and one whose class the API
/// has not reported, is found, enrolled and has its traffic attributed.
#[test]
fn cgroupfs_driver_pods_of_every_qos_class_are_enrolled() -> Result<()> {
    let node = Node::new()?;
    let kubepods = Kubepods::cgroupfs(&node)?;
    let api = FakeKubeApi::start()?;
    let n = node_name(&node);
    let mut pods = Vec::new();
    for (name, qos, layout) in [
        ("besteffort", "BestEffort", "kubepods/besteffort/pod"),
        ("burstable", "Burstable", "kubepods/burstable/pod"),
        ("guaranteed", "Guaranteed", "kubepods/pod"),
        ("unreported", "", "kubepods/besteffort/pod"),
    ] {
        let mut spec = Kubepods::spec("shop", name, &n);
        spec.qos = qos.into();
        let p = kubepods.create(&node, spec)?;
        let want = node.cgroup.join(format!("{layout}{}", p.spec.uid));
        ensure!(
            p.pod.cgroup == want,
            "{name}: cgroup {} is not the cgroupfs layout {}",
            p.pod.cgroup.display(),
            want.display()
        );
        pods.push(p);
    }
    let up = Upstream::start(pods[0].pod.host_ip.into())?;
    for p in &pods[1..] {
        p.pod.route_to(up.ip())?;
    }
    for p in &pods {
        api.apply(&p.spec);
    }
    let cfg = kube_config(&node, &api).destination(
        Destination::redirect("upstream")
            .addr(up.ip())
            .port(up.port()),
    );
    let d = node.start(&cfg)?;
    let mut ids = Vec::new();
    for p in &pods {
        let name = p.spec.workload();
        let w = wait_enrolled(&d, &name, |_| true)?;
        ensure!(
            w["cgroup"] == p.pod.cgroup.to_string_lossy().as_ref(),
            "{name}: the pod-level cgroup is enrolled: {w}"
        );
        ids.push(cgroup_id(&w)?);
    }
    let mut in_map = enrolled_cgroup_ids(&node.cgroup)?;
    in_map.sort_unstable();
    ids.sort_unstable();
    ensure!(
        in_map == ids,
        "ENROLL_CGROUP holds {in_map:?}, expected {ids:?}"
    );
    for p in &pods {
        let name = p.spec.workload();
        let r = p.pod.client(&ClientRequest::get(up.addr(), "/cgroupfs"))?;
        ensure!(proxied(&r)?, "{name} was not redirected: {r:?}");
        d.wait_for_access_log(WAIT, |l| log_str(l, "workload") == Some(name.as_str()))?;
    }
    ensure!(
        metric(&d, "trigate_kube_pods", &[("state", "enrolled")])? == 4.0,
        "trigate_kube_pods{{state=enrolled}}"
    );
    ensure!(
        metric(&d, "trigate_kube_enroll_errors_total", &[])? == 0.0,
        "enroll errors counted: every pod should be found at the first look"
    );
    Ok(())
}

/// A slow (not down) API server. An answer slower than usual but within
/// `kubernetes.request_timeout_ms` is waited for. One slower than that is
/// abandoned: logged naming the request and the limit, counted in
/// `trigate_kube_api_timeouts_total`, retried with backoff. Meanwhile the
/// enrolled pod's traffic is still redirected and attributed and the
/// daemon is healthy and ready; a pod added meanwhile is enrolled once the
/// API answers in time again.
#[test]
fn slow_api_requests_time_out_while_enrolled_pods_are_served() -> Result<()> {
    let node = Node::new()?;
    let kubepods = Kubepods::new(&node)?;
    let api = FakeKubeApi::start()?;
    let n = node_name(&node);
    let a = kubepods.create(&node, Kubepods::spec("apps", "a", &n))?;
    api.apply(&a.spec);
    let up = Upstream::start(a.pod.host_ip.into())?;
    let cfg = kube_config(&node, &api)
        .set("/kubernetes/request_timeout_ms", json!(2000))
        .destination(
            Destination::redirect("upstream")
                .addr(up.ip())
                .port(up.port()),
        );
    let mut d = node.start(&cfg)?;
    wait_enrolled(&d, "apps/a", |_| true)?;

    // Slow, but within the limit: waited for.
    api.set_delay(Duration::from_millis(300));
    api.wait_watching(WAIT)?;
    api.drop_watches();
    let b = kubepods.create(&node, Kubepods::spec("apps", "b", &n))?;
    api.apply(&b.spec);
    wait_enrolled(&d, "apps/b", |_| true)?;
    ensure!(
        metric(&d, "trigate_kube_api_timeouts_total", &[])? == 0.0,
        "an answer within the limit timed out"
    );

    // Too slow: the resumed watch is abandoned, and so is every retry.
    api.set_delay(Duration::from_secs(5));
    api.wait_watching(WAIT)?;
    api.drop_watches();
    let c = kubepods.create(&node, Kubepods::spec("apps", "c", &n))?;
    c.pod.route_to(up.ip())?;
    api.apply(&c.spec);
    wait_metric(
        &d,
        "trigate_kube_api_timeouts_total",
        &[("request", "watch")],
        1.0,
    )?;
    d.wait_for_log(WAIT, "a warning naming the request and the limit", |l| {
        log_str(l, "error").is_some_and(|e| {
            e.contains("did not start answering the watch /api/v1/pods?")
                && e.contains(&format!("spec.nodeName%3D{n}"))
                && e.contains("within 2000 ms")
        })
    })?;
    ensure!(
        metric(&d, "trigate_kube_watch_restarts_total", &[])? >= 1.0,
        "the abandoned watch is not counted as a restart"
    );
    let r = a
        .pod
        .client(&ClientRequest::get(up.addr(), "/while-slow"))?;
    ensure!(
        proxied(&r)?,
        "an enrolled pod was not served while the API is slow: {r:?}"
    );
    d.wait_for_access_log(WAIT, |l| log_str(l, "workload") == Some("apps/a"))?;
    for path in ["/healthz", "/readyz"] {
        let h = d.admin_get(path)?;
        ensure!(
            h.status == 200,
            "GET {path} while the API is slow: {} {}",
            h.status,
            h.body
        );
    }
    ensure!(
        workload(&d, "apps/c")?.is_none(),
        "apps/c enrolled although no answer came in time"
    );
    ensure!(d.try_status()?.is_none(), "the daemon exited");

    // Prompt again: the retry lists or watches, and c is enrolled.
    api.set_delay(Duration::ZERO);
    wait_enrolled(&d, "apps/c", |_| true)?;
    let r = c.pod.client(&ClientRequest::get(up.addr(), "/after"))?;
    ensure!(proxied(&r)?, "apps/c not redirected: {r:?}");
    d.wait_for_access_log(WAIT, |l| log_str(l, "workload") == Some("apps/c"))?;
    ensure!(
        workload(&d, "apps/a")?.is_some() && workload(&d, "apps/b")?.is_some(),
        "a and b stay"
    );
    Ok(())
}
