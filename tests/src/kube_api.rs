//! A fake Kubernetes API server on 127.0.0.1 for the pod-discovery tests,
//! and simulated kubelet pods (cgroup laid out like kubelet's systemd or
//! cgroupfs driver, a netns, a process inside it; hostNetwork pods without
//! a netns of their own).
//!
//! The server speaks the API server's wire format from recorded objects
//! (`tests/fixtures/kube/`): `GET /api/v1/pods?fieldSelector=spec.nodeName=N`
//! answers a PodList with `metadata.resourceVersion`; with `watch=true` and
//! a `resourceVersion` it streams newline-delimited watch events as HTTP
//! chunks from that version on, or the recorded `ERROR` 410 `Expired`
//! Status when the version has been compacted away. The test drives it:
//! add, update and delete pods, cut the open watches, take it down (every
//! connection is closed at once), make it answer garbage, or slow it down
//! (every answer starts only after a delay).

use crate::names::Uniq;
use crate::node::{Node, Pod, Runner};
use crate::HostPod;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/kube");

fn fixture(name: &str) -> Result<String> {
    let path = Path::new(FIXTURES).join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiMode {
    Up,
    /// Every connection is closed before a byte is answered.
    Down,
    /// `200 OK` with a body that is not JSON.
    Garbage,
}

struct State {
    mode: ApiMode,
    rv: u64,
    /// Current objects by `pods/<namespace>/<name>` or `namespaces/<name>`.
    pods: BTreeMap<String, Value>,
    /// Every change: (resourceVersion, resource, event type, object).
    history: Vec<(u64, &'static str, &'static str, Value)>,
    /// Watches from a version below this get 410 Gone.
    compacted: u64,
    /// Bumped to end every open watch.
    watch_generation: u64,
    /// Request paths (with query), in order.
    requests: Vec<String>,
    /// How long every answer (list, or a watch's response head) waits.
    delay: Duration,
    /// Watch streams open now (past their response head).
    watching: usize,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

pub struct FakeKubeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    template: Value,
    ns_template: Value,
}

impl FakeKubeApi {
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let list: Value = serde_json::from_str(&fixture("podlist.json")?)?;
        let rv: u64 = list["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("podlist.json has no numeric metadata.resourceVersion")?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: ApiMode::Up,
                rv,
                pods: BTreeMap::new(),
                history: Vec::new(),
                compacted: 0,
                watch_generation: 0,
                requests: Vec::new(),
                delay: Duration::ZERO,
                watching: 0,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let s = Arc::clone(&s);
                        std::thread::spawn(move || {
                            let _ = serve(&s, conn);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Self {
            addr,
            shared,
            thread: Some(thread),
            template: serde_json::from_str(&fixture("pod.json")?)?,
            ns_template: serde_json::from_str(&fixture("namespace.json")?)?,
        })
    }

    /// `http://127.0.0.1:PORT`: `kubernetes.api_server`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_mode(&self, mode: ApiMode) {
        let mut st = self.lock();
        st.mode = mode;
        if mode != ApiMode::Up {
            st.watch_generation += 1;
        }
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Ends every open watch (the stream closes cleanly, as when the API
    /// server or a load balancer drops it).
    pub fn drop_watches(&self) {
        self.lock().watch_generation += 1;
        self.shared.changed.notify_all();
    }

    /// Makes every request wait this long before its answer starts (a
    /// slow, not down, API server); `Duration::ZERO` answers at once again.
    /// A request already waiting keeps the delay it started with.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Waits until a watch stream is open: a `drop_watches()` before that
    /// would cut nothing (the watch about to open starts after it).
    pub fn wait_watching(&self, timeout: Duration) -> Result<()> {
        crate::poll_until(timeout, "an open watch", || {
            Ok((self.lock().watching > 0).then_some(()))
        })
    }

    /// Forgets the history: a watch from any version seen so far gets 410.
    pub fn compact(&self) {
        let mut st = self.lock();
        st.compacted = st.rv + 1;
        st.history.clear();
    }

    /// The request paths seen so far.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// The recorded pod with this identity, in phase Running.
    pub fn pod_object(&self, p: &PodSpec) -> Value {
        let mut o = self.template.clone();
        let m = &mut o["metadata"];
        m["name"] = json!(p.name);
        m["generateName"] = Value::Null;
        m["namespace"] = json!(p.namespace);
        m["uid"] = json!(p.uid);
        m["labels"] = json!(p.labels);
        m["annotations"] = json!(p.annotations);
        m["ownerReferences"] = Value::Null;
        o["spec"]["nodeName"] = json!(p.node);
        o["spec"]["serviceAccountName"] = json!(p.service_account);
        o["spec"]["serviceAccount"] = json!(p.service_account);
        if p.host_network {
            o["spec"]["hostNetwork"] = json!(true);
        }
        o["status"]["phase"] = json!(p.phase);
        // An empty class: the API server has not reported one yet.
        o["status"]["qosClass"] = if p.qos.is_empty() {
            Value::Null
        } else {
            json!(p.qos)
        };
        o
    }

    fn change(&self, resource: &'static str, kind: &'static str, key: String, mut obj: Value) {
        let mut st = self.lock();
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        match kind {
            "DELETED" => {
                st.pods.remove(&key);
            }
            _ => {
                st.pods.insert(key, obj.clone());
            }
        }
        st.history.push((rv, resource, kind, obj));
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Adds or updates a pod (ADDED or MODIFIED).
    pub fn apply(&self, p: &PodSpec) {
        let key = format!("pods/{}/{}", p.namespace, p.name);
        let kind = if self.lock().pods.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.change("pods", kind, key, self.pod_object(p));
    }

    /// Adds or updates a namespace with these labels and annotations.
    pub fn apply_namespace(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) {
        let mut o = self.ns_template.clone();
        let mut l: BTreeMap<&str, &str> = labels.iter().copied().collect();
        l.insert("kubernetes.io/metadata.name", name);
        o["metadata"]["name"] = json!(name);
        o["metadata"]["labels"] = json!(l);
        o["metadata"]["annotations"] =
            json!(annotations.iter().copied().collect::<BTreeMap<_, _>>());
        let key = format!("namespaces/{name}");
        let kind = if self.lock().pods.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.change("namespaces", kind, key, o);
    }

    /// Deletes a pod (DELETED with its last state).
    pub fn delete(&self, namespace: &str, name: &str) -> Result<()> {
        let key = format!("pods/{namespace}/{name}");
        let Some(mut obj) = self.lock().pods.get(&key).cloned() else {
            bail!("no pod {key} to delete");
        };
        obj["metadata"]["deletionTimestamp"] = json!("2026-11-27T10:02:11Z");
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        self.change("pods", "DELETED", key, obj);
        Ok(())
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.lock().watch_generation += 1;
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `%XX` and `+` decoding of one query value.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(target: &str) -> (String, BTreeMap<String, String>) {
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let params = q
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect();
    (path.to_string(), params)
}

/// The node a `fieldSelector` of `spec.nodeName=N` selects.
fn selected_node(params: &BTreeMap<String, String>) -> Option<String> {
    params
        .get("fieldSelector")?
        .split(',')
        .find_map(|t| t.strip_prefix("spec.nodeName=").map(str::to_string))
}

fn on_node(obj: &Value, node: Option<&str>) -> bool {
    node.is_none_or(|n| obj["spec"]["nodeName"] == n)
}

fn respond(conn: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

fn chunk(conn: &mut TcpStream, line: &str) -> std::io::Result<()> {
    let data = format!("{line}\n");
    write!(conn, "{:x}\r\n{data}\r\n", data.len())?;
    conn.flush()
}

fn serve(s: &Shared, mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let target = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let (path, params) = query(&target);
    let (mode, delay) = {
        let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
        st.requests.push(target.clone());
        (st.mode, st.delay)
    };
    if !delay.is_zero() {
        std::thread::sleep(delay);
        if s.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
    }
    match mode {
        ApiMode::Down => return Ok(()), // closed without an answer
        ApiMode::Garbage => return respond(&mut conn, "200 OK", "<html>502 Bad Gateway</html>"),
        ApiMode::Up => {}
    }
    let resource = match path.as_str() {
        "/api/v1/pods" => "pods",
        "/api/v1/namespaces" => "namespaces",
        _ => "",
    };
    if resource.is_empty() {
        let status = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":format!("the server could not find the requested resource ({path})"),
            "reason":"NotFound","details":{},"code":404});
        return respond(&mut conn, "404 Not Found", &status.to_string());
    }
    let node = if resource == "pods" {
        selected_node(&params)
    } else {
        None
    };
    let prefix = format!("{resource}/");
    if params.get("watch").map(String::as_str) != Some("true") {
        let st = s.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Value = serde_json::from_str(&fixture("podlist.json").unwrap_or_default())
            .unwrap_or_else(|_| json!({"kind":"PodList","apiVersion":"v1","metadata":{}}));
        list["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        if resource == "namespaces" {
            list["kind"] = json!("NamespaceList");
        }
        list["items"] = Value::Array(
            st.pods
                .iter()
                .filter(|(k, p)| k.starts_with(&prefix) && on_node(p, node.as_deref()))
                .map(|(_, p)| p.clone())
                .collect(),
        );
        drop(st);
        return respond(&mut conn, "200 OK", &list.to_string());
    }
    let from: u64 = params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(300));
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )?;
    conn.flush()?;
    let deadline = Instant::now() + timeout;
    let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
    if from < st.compacted {
        drop(st);
        let gone = fixture("watch-gone.ndjson").unwrap_or_default();
        chunk(&mut conn, gone.trim())?;
        return write!(conn, "0\r\n\r\n");
    }
    let generation = st.watch_generation;
    st.watching += 1;
    let _open = OpenWatch(s);
    let mut sent = from;
    loop {
        // Ended first: a change made after the watch was cut (taken down,
        // dropped) must not reach this stream.
        if s.stop.load(Ordering::SeqCst)
            || st.watch_generation != generation
            || Instant::now() >= deadline
        {
            let cut = st.mode != ApiMode::Up;
            drop(st);
            if cut {
                // Down: the connection just goes away.
                return Ok(());
            }
            return write!(conn, "0\r\n\r\n");
        }
        let new: Vec<String> = st
            .history
            .iter()
            .filter(|(rv, r, _, o)| *rv > sent && *r == resource && on_node(o, node.as_deref()))
            .map(|(_, _, kind, o)| json!({"type": kind, "object": o}).to_string())
            .collect();
        if let Some((rv, _, _, _)) = st.history.last() {
            sent = sent.max(*rv);
        }
        drop(st);
        for line in new {
            chunk(&mut conn, &line)?;
        }
        st = s.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.watch_generation == generation && !s.stop.load(Ordering::SeqCst) {
            st = s
                .changed
                .wait_timeout(st, Duration::from_millis(200))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

/// Counts a watch stream as open until it ends, however it ends.
struct OpenWatch<'a>(&'a Shared);

impl Drop for OpenWatch<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        st.watching = st.watching.saturating_sub(1);
    }
}

/// What the fake API server says about one pod.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub phase: String,
    pub qos: String,
    pub host_network: bool,
}

impl PodSpec {
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }
    /// `<namespace>/<name>`: the workload name.
    pub fn workload(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A kubelet-like pod on the node: the pod cgroup where kubelet's cgroup
/// driver puts it for the pod's QoS class (see [`Kubepods`]), with a
/// container cgroup below it running `sleep` inside a netns the test made
/// (the sandbox's pause process, in effect). The fields drop in order: the
/// process and cgroups before the netns.
pub struct KubePod {
    pub spec: PodSpec,
    /// netns + veth + the pod-level cgroup; clients run in it.
    pub pod: Pod,
    sandbox: Option<Child>,
}

/// A hostNetwork pod: its cgroups laid out like [`KubePod`]'s, its
/// sandbox process in the node's (the test's) network namespace.
pub struct KubeHostNetPod {
    pub spec: PodSpec,
    /// The pod-level cgroup; clients run in it, in the host netns.
    pub pod: HostPod,
    sandbox: Option<Child>,
}

/// kubelet's `--cgroup-driver`: where it puts the pod cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    /// `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid with _>.slice`
    /// (guaranteed: `kubepods.slice/kubepods-pod<uid>.slice`).
    Systemd,
    /// `kubepods/<qos>/pod<uid>` (guaranteed: `kubepods/pod<uid>`).
    Cgroupfs,
}

/// The QoS cgroups a node's pods live under, for one cgroup driver (kept
/// until the node drops).
pub struct Kubepods {
    driver: CgroupDriver,
    _slices: Vec<HostPod>,
}

impl Kubepods {
    /// The systemd driver's `kubepods.slice` with its besteffort and
    /// burstable slices under the node cgroup.
    pub fn new(node: &Node) -> Result<Self> {
        let top = node.host_pod("kubepods.slice")?;
        let be = top.child("kubepods-besteffort.slice")?;
        let bu = top.child("kubepods-burstable.slice")?;
        Ok(Self {
            driver: CgroupDriver::Systemd,
            _slices: vec![be, bu, top],
        })
    }

    /// The cgroupfs driver's `kubepods` with `besteffort` and `burstable`
    /// under the node cgroup.
    pub fn cgroupfs(node: &Node) -> Result<Self> {
        let top = node.host_pod("kubepods")?;
        let be = top.child("besteffort")?;
        let bu = top.child("burstable")?;
        Ok(Self {
            driver: CgroupDriver::Cgroupfs,
            _slices: vec![be, bu, top],
        })
    }

    /// A pod spec on `node_name` with a fresh uid, BestEffort and Running.
    pub fn spec(namespace: &str, name: &str, node_name: &str) -> PodSpec {
        let u = Uniq::next();
        PodSpec {
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("{:08x}-7e2e-4c0d-9a5b-{:012x}", u.pid, u.n),
            node: node_name.into(),
            service_account: "default".into(),
            labels: BTreeMap::from([("app".to_string(), name.to_string())]),
            annotations: BTreeMap::new(),
            phase: "Running".into(),
            qos: "BestEffort".into(),
            host_network: false,
        }
    }

    /// The pod cgroup relative to the node cgroup, as kubelet with this
    /// driver names it for the spec's QoS class (written out here from
    /// kubelet's naming, not taken from the daemon).
    pub fn pod_cgroup(&self, spec: &PodSpec) -> PathBuf {
        let uid = &spec.uid;
        match (self.driver, spec.qos.as_str()) {
            (CgroupDriver::Cgroupfs, "Guaranteed") => format!("kubepods/pod{uid}").into(),
            (CgroupDriver::Cgroupfs, "Burstable") => format!("kubepods/burstable/pod{uid}").into(),
            (CgroupDriver::Cgroupfs, _) => format!("kubepods/besteffort/pod{uid}").into(),
            (CgroupDriver::Systemd, qos) => {
                let u = uid.replace('-', "_");
                match qos {
                    "Guaranteed" => format!("kubepods.slice/kubepods-pod{u}.slice").into(),
                    "Burstable" => format!(
                        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice"
                    )
                    .into(),
                    _ => format!(
                        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice"
                    )
                    .into(),
                }
            }
        }
    }

    /// Creates the pod's cgroup and netns and starts its sandbox process
    /// (returns once the process is inside the netns).
    pub fn create(&self, node: &Node, spec: PodSpec) -> Result<KubePod> {
        let rel = self.pod_cgroup(&spec);
        let pod = node.pod(rel.to_str().context("utf-8 cgroup path")?)?;
        let container = Container {
            cgroup: pod.cgroup.join("cri-containerd-e2e.scope"),
            netns: Some(pod.netns.clone()),
        };
        std::fs::create_dir(&container.cgroup)
            .with_context(|| format!("creating {}", container.cgroup.display()))?;
        let mut kp = KubePod {
            spec,
            pod,
            sandbox: None,
        };
        let pid = container.start_sandbox(&mut kp.sandbox)?;
        let host_ns = std::fs::read_link("/proc/self/ns/net")?;
        crate::poll_until(
            Duration::from_secs(5),
            "the sandbox inside its netns",
            || {
                Ok(std::fs::read_link(format!("/proc/{pid}/ns/net"))
                    .ok()
                    .filter(|ns| *ns != host_ns)
                    .map(|_| ()))
            },
        )?;
        Ok(kp)
    }

    /// Creates a hostNetwork pod (the spec says `hostNetwork: true`): its
    /// cgroups, and its sandbox process in the host netns (returns once the
    /// process is in its container cgroup).
    pub fn create_host_network(&self, node: &Node, mut spec: PodSpec) -> Result<KubeHostNetPod> {
        spec.host_network = true;
        let rel = self.pod_cgroup(&spec);
        let pod = node.host_pod(rel.to_str().context("utf-8 cgroup path")?)?;
        let container = Container {
            cgroup: pod.cgroup.join("cri-containerd-e2e.scope"),
            netns: None,
        };
        std::fs::create_dir(&container.cgroup)
            .with_context(|| format!("creating {}", container.cgroup.display()))?;
        let mut kp = KubeHostNetPod {
            spec,
            pod,
            sandbox: None,
        };
        let pid = container.start_sandbox(&mut kp.sandbox)?;
        let procs = container.cgroup.join("cgroup.procs");
        crate::poll_until(
            Duration::from_secs(5),
            "the sandbox in its container cgroup",
            || {
                Ok(std::fs::read_to_string(&procs)
                    .ok()
                    .filter(|p| p.lines().any(|l| l.trim() == pid.to_string()))
                    .map(|_| ()))
            },
        )?;
        Ok(kp)
    }
}

impl Drop for KubeHostNetPod {
    fn drop(&mut self) {
        if let Some(mut c) = self.sandbox.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl KubePod {
    /// Kills the sandbox process and removes the pod's cgroups (kubelet
    /// tearing the pod down); the netns stays until drop.
    pub fn remove_cgroup(&mut self) -> Result<()> {
        if let Some(mut c) = self.sandbox.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        crate::node::remove_cgroup_tree(&self.pod.cgroup)
    }
}

impl Drop for KubePod {
    fn drop(&mut self) {
        if let Some(mut c) = self.sandbox.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A container cgroup inside a pod (commands join it, then the netns).
struct Container {
    cgroup: PathBuf,
    netns: Option<String>,
}

impl Container {
    /// Starts the sandbox's `sleep` here; the child goes into `slot` at
    /// once, so the pod's Drop kills it even if the caller fails later.
    fn start_sandbox(&self, slot: &mut Option<Child>) -> Result<u32> {
        let child = self
            .command(Path::new("/bin/sleep"), &["600"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting the pod's sleep")?;
        let pid = child.id();
        *slot = Some(child);
        Ok(pid)
    }
}

impl Runner for Container {
    fn name(&self) -> &str {
        "container"
    }
    fn cgroup(&self) -> &Path {
        &self.cgroup
    }
    fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        let (path, q) = query(
            "/api/v1/pods?&fieldSelector=spec.nodeName%3Dnode-1&watch=true&resourceVersion=12",
        );
        assert_eq!(path, "/api/v1/pods");
        assert_eq!(selected_node(&q).as_deref(), Some("node-1"));
        assert_eq!(q["watch"], "true");
        assert_eq!(decode("a%2Cb+c%"), "a,b c%");
    }

    #[test]
    fn fixtures_are_the_wire_format() {
        let pod: Value = serde_json::from_str(&fixture("pod.json").unwrap()).unwrap();
        assert_eq!(pod["kind"], "Pod");
        let ns: Value = serde_json::from_str(&fixture("namespace.json").unwrap()).unwrap();
        assert_eq!(ns["kind"], "Namespace");
        let list: Value = serde_json::from_str(&fixture("podlist.json").unwrap()).unwrap();
        assert!(list["metadata"]["resourceVersion"].is_string());
        for line in fixture("watch-added.ndjson").unwrap().lines() {
            let ev: Value = serde_json::from_str(line).unwrap();
            assert!(["ADDED", "MODIFIED", "DELETED"].contains(&ev["type"].as_str().unwrap()));
            assert_eq!(ev["object"]["kind"], "Pod");
        }
        let gone: Value =
            serde_json::from_str(fixture("watch-gone.ndjson").unwrap().trim()).unwrap();
        assert_eq!(gone["type"], "ERROR");
        assert_eq!(gone["object"]["code"], 410);
        assert_eq!(gone["object"]["reason"], "Expired");
    }
}
