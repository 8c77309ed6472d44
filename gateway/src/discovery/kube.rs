//! The Kubernetes enrollment source: watches the pods scheduled on this
//! node (field selector `spec.nodeName=<node>`) and keeps one workload per
//! running pod enrolled. kube-rs's watcher lists, then watches from the
//! list's resourceVersion, reconnects when the stream ends and relists on
//! 410 Gone; a relist is applied only once complete, so pods missing from
//! it are unenrolled and the others keep their listeners.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    api::Api,
    client::ClientBuilder,
    runtime::{watcher, WatchStreamExt as _},
    Client,
};
use tokio::time::Instant;

use super::{
    api_timeout::AnswerTimeout,
    pods::{self, OptIn, PodFacts, Skip},
    DiscoveryError, EnrollmentSource, Started,
};
use crate::{
    config::{KubernetesConfig, WorkloadConfig},
    daemon::Node,
    telemetry::kube::POD_STATES,
    workload::{self, EnrollError, EnrollSource, NetnsUse},
};

/// Where a pod's service account token and the cluster CA are mounted.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The server ends each watch after this long and the watcher starts a new
/// one from the last resourceVersion: a half-dead connection is noticed.
const WATCH_TIMEOUT_SECS: u32 = 60;

/// First and longest wait before trying again to enroll a pod whose
/// cgroup or process is not there yet.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How often pods waiting for a retry are looked at.
const TICK: Duration = Duration::from_millis(250);

pub struct KubeSource {
    cfg: KubernetesConfig,
    node_name: String,
    cgroup_root: PathBuf,
}

impl KubeSource {
    pub fn new(cfg: &KubernetesConfig, cgroup2: &Path) -> Result<KubeSource, DiscoveryError> {
        let node_name = cfg.node_name().ok_or(DiscoveryError::NodeName)?;
        let cgroup_root = cfg
            .cgroup_root
            .clone()
            .unwrap_or_else(|| cgroup2.to_path_buf());
        // Enrollment takes cgroups below the mount only; say so now rather
        // than for every pod.
        if !cgroup_root.starts_with(cgroup2) {
            return Err(DiscoveryError::CgroupRoot {
                root: cgroup_root.display().to_string(),
                mount: cgroup2.display().to_string(),
            });
        }
        Ok(KubeSource {
            cfg: cfg.clone(),
            node_name,
            cgroup_root,
        })
    }

    fn client(&self, timeouts: prometheus::IntCounterVec) -> Result<Client, DiscoveryError> {
        let err = |e: &dyn std::fmt::Display| DiscoveryError::Client(e.to_string());
        let mut config = match &self.cfg.api_server {
            Some(url) => {
                let uri: hyper::Uri = url.parse().map_err(|e| err(&e))?;
                let mut c = kube::Config::new(uri);
                // An override of the URL (a proxy, a test server) keeps the
                // pod's credentials when it has them.
                let sa = Path::new(SERVICE_ACCOUNT_DIR);
                if sa.join("token").is_file() {
                    c.auth_info.token_file = Some(sa.join("token").display().to_string());
                }
                if let Ok(pem) = std::fs::read(sa.join("ca.crt")) {
                    let certs: Vec<Vec<u8>> = rustls_pemfile::certs(&mut pem.as_slice())
                        .filter_map(Result::ok)
                        .map(|c| c.to_vec())
                        .collect();
                    if !certs.is_empty() {
                        c.root_cert = Some(certs);
                    }
                }
                c
            }
            None => kube::Config::incluster().map_err(|e| err(&e))?,
        };
        // A server that accepts the connection and then says nothing: give
        // up on the read and let the watcher reconnect with backoff.
        config.read_timeout = Some(Duration::from_secs(u64::from(WATCH_TIMEOUT_SECS) + 15));
        // And one that answers too slowly: the read timeout alone would let
        // a list wait that long, or longer on a busy shared connection.
        let layer = AnswerTimeout {
            limit: Duration::from_millis(self.cfg.request_timeout_ms),
            timeouts,
        };
        Ok(ClientBuilder::try_from(config)
            .map_err(|e| err(&e))?
            .with_layer(&layer)
            .build())
    }
}

impl EnrollmentSource for KubeSource {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn start<'a>(self: Box<Self>, node: &'a Arc<Node>) -> Started<'a> {
        Box::pin(async move {
            let client = self.client(node.metrics.kube.api_timeouts.clone())?;
            tracing::info!(
                node = %self.node_name,
                api_server = self.cfg.api_server.as_deref().unwrap_or("in-cluster"),
                cgroup_root = %self.cgroup_root.display(),
                request_timeout_ms = self.cfg.request_timeout_ms,
                "watching this node's pods"
            );
            tokio::spawn(run(*self, client, Arc::clone(node)));
            Ok(())
        })
    }
}

/// What this source enrolled for a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrolled {
    pub uid: String,
    pub labels: BTreeMap<String, String>,
}

/// What to do to make the enrolled state match a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Enroll,
    Unenroll,
    /// Same pod, new labels: update the identity in place.
    Relabel,
    /// Another pod under the same name (a StatefulSet pod recreated): its
    /// cgroup and namespace are new.
    Reenroll,
}

/// The step that brings `enrolled` to `wanted` (the pod, if it should be
/// enrolled).
pub fn plan(wanted: Option<&PodFacts>, enrolled: Option<&Enrolled>) -> Action {
    match (wanted, enrolled) {
        (None, None) => Action::Nothing,
        (None, Some(_)) => Action::Unenroll,
        (Some(_), None) => Action::Enroll,
        (Some(f), Some(e)) if f.identity.uid != e.uid => Action::Reenroll,
        (Some(f), Some(e)) if f.identity.workload_labels() != e.labels => Action::Relabel,
        (Some(_), Some(_)) => Action::Nothing,
    }
}

/// The wait before retry number `attempt` (1 = first retry): doubling
/// from [`RETRY_FIRST`] up to [`RETRY_MAX`].
pub fn retry_delay(attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    RETRY_FIRST.saturating_mul(factor).min(RETRY_MAX)
}

/// Why an enrollment failed, as the metric's `reason`.
#[derive(Debug, thiserror::Error)]
enum PodError {
    #[error("no cgroup for pod uid {uid} under {root} (looked for {candidates}); not created yet or already gone")]
    NoCgroup {
        uid: String,
        root: String,
        candidates: String,
    },
    #[error("no process in cgroup {0} (nor below it) with a network namespace under the proc root; is the pod's sandbox running, and does the daemon see host PIDs (hostPID)?")]
    NoNetns(String),
    #[error("{0}")]
    Enroll(EnrollError),
}

impl PodError {
    fn reason(&self) -> &'static str {
        match self {
            PodError::NoCgroup { .. } => "no_cgroup",
            PodError::NoNetns(_) => "no_netns",
            PodError::Enroll(_) => "enroll",
        }
    }
}

struct Retry {
    attempts: u32,
    at: Instant,
}

struct Reconciler {
    src: KubeSource,
    node: Arc<Node>,
    /// This node's pods as the API last said, by workload name.
    pods: BTreeMap<String, PodFacts>,
    enrolled: BTreeMap<String, Enrolled>,
    retries: BTreeMap<String, Retry>,
    /// Pods of a relist in progress (`Init` … `InitDone`).
    relist: Option<BTreeMap<String, PodFacts>>,
    /// Namespaces' `trigate.io/intercept` (`kubernetes.namespaces`).
    namespaces: BTreeMap<String, OptIn>,
    namespaces_relist: Option<BTreeMap<String, OptIn>>,
    /// Whether pods may be acted on: with `kubernetes.namespaces`, only
    /// once the namespaces were listed (or listing them failed), so a pod of
    /// an opted-out namespace is not enrolled for a moment at start.
    namespaces_ready: bool,
}

async fn run(src: KubeSource, client: Client, node: Arc<Node>) {
    let api: Api<Pod> = Api::all(client.clone());
    let watch_namespaces = src.cfg.namespaces;
    let mut ns_events = if watch_namespaces {
        let wc = watcher::Config::default().timeout(WATCH_TIMEOUT_SECS);
        watcher(Api::<Namespace>::all(client), wc)
            .default_backoff()
            .boxed()
    } else {
        futures::stream::pending().boxed()
    };
    let wc = watcher::Config::default()
        .fields(&format!("spec.nodeName={}", src.node_name))
        .timeout(WATCH_TIMEOUT_SECS);
    // default_backoff: exponential from 0.8 s to 30 s between failed
    // attempts, so a down API server is not hammered.
    let mut events = watcher(api, wc).default_backoff().boxed();
    let mut r = Reconciler {
        src,
        node: Arc::clone(&node),
        pods: BTreeMap::new(),
        enrolled: BTreeMap::new(),
        retries: BTreeMap::new(),
        relist: None,
        namespaces: BTreeMap::new(),
        namespaces_relist: None,
        namespaces_ready: !watch_namespaces,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = node.stop.cancelled() => return,
            ev = events.next() => match ev {
                Some(Ok(ev)) => r.on_event(ev).await,
                Some(Err(e)) => {
                    node.metrics.kube.watch_restarts.inc();
                    tracing::warn!(
                        node = %r.src.node_name,
                        error = %crate::error_chain(&e),
                        "pod watch failed; retrying with backoff (pods stay as they are until the next list)"
                    );
                }
                // The watcher's stream does not end; if it ever did, no
                // more changes would arrive: say so loudly.
                None => {
                    tracing::error!("the pod watch ended; pods are no longer followed");
                    return;
                }
            },
            ev = ns_events.next() => match ev {
                Some(Ok(ev)) => r.on_namespace_event(ev).await,
                Some(Err(e)) => {
                    node.metrics.kube.watch_restarts.inc();
                    tracing::warn!(
                        error = %crate::error_chain(&e),
                        "namespace watch failed (does the service account may list and watch namespaces?); retrying with backoff"
                    );
                    if !r.namespaces_ready {
                        tracing::warn!("enrolling pods without namespace opt-ins until the namespaces are listed");
                        r.namespaces_ready = true;
                        r.reconcile_all().await;
                    }
                }
                None => {}
            },
            _ = tick.tick() => r.retry_due().await,
        }
    }
}

impl Reconciler {
    async fn on_namespace_event(&mut self, ev: watcher::Event<Namespace>) {
        let opt = |ns: &Namespace| {
            let m = &ns.metadata;
            (
                m.name.clone().unwrap_or_default(),
                pods::opt_in(
                    &m.labels.clone().unwrap_or_default(),
                    &m.annotations.clone().unwrap_or_default(),
                ),
            )
        };
        match ev {
            watcher::Event::Init => self.namespaces_relist = Some(BTreeMap::new()),
            watcher::Event::InitApply(ns) => {
                let (name, o) = opt(&ns);
                self.namespaces_relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name, o);
            }
            watcher::Event::InitDone => {
                self.namespaces = self.namespaces_relist.take().unwrap_or_default();
                self.namespaces_ready = true;
                self.reconcile_all().await;
            }
            watcher::Event::Apply(_) | watcher::Event::Delete(_) => {
                let (name, o) = match &ev {
                    watcher::Event::Apply(ns) => opt(ns),
                    watcher::Event::Delete(ns) => (opt(ns).0, OptIn::Unset),
                    _ => return,
                };
                let before = self.namespaces.get(&name).copied().unwrap_or(OptIn::Unset);
                if matches!(ev, watcher::Event::Delete(_)) {
                    self.namespaces.remove(&name);
                } else {
                    self.namespaces.insert(name.clone(), o);
                }
                if before != o {
                    let in_ns: Vec<String> = self
                        .pods
                        .iter()
                        .filter(|(_, f)| f.identity.namespace == name)
                        .map(|(n, _)| n.clone())
                        .collect();
                    for n in in_ns {
                        self.reconcile(&n).await;
                    }
                    self.update_gauges();
                }
            }
        }
    }

    /// Every pod the API listed and every pod enrolled.
    async fn reconcile_all(&mut self) {
        let mut names: Vec<String> = self.pods.keys().cloned().collect();
        names.extend(
            self.enrolled
                .keys()
                .filter(|n| !self.pods.contains_key(*n))
                .cloned(),
        );
        for name in names {
            self.reconcile(&name).await;
        }
        self.update_gauges();
    }

    async fn on_event(&mut self, ev: watcher::Event<Pod>) {
        match ev {
            watcher::Event::Init => {
                self.node.metrics.kube.relists.inc();
                self.relist = Some(BTreeMap::new());
            }
            watcher::Event::InitApply(pod) => {
                if let Some(f) = self.facts(&pod) {
                    let name = f.identity.workload_name();
                    match self.relist.as_mut() {
                        Some(buf) => {
                            buf.insert(name, f);
                        }
                        None => {
                            self.pods.insert(name.clone(), f);
                            self.reconcile(&name).await;
                        }
                    }
                }
            }
            watcher::Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                tracing::info!(node = %self.src.node_name, pods = listed.len(), "listed this node's pods");
                let mut names: Vec<String> = listed.keys().cloned().collect();
                // Pods enrolled before that the list no longer has (deleted
                // while the watch was down) go too.
                names.extend(
                    self.enrolled
                        .keys()
                        .filter(|n| !listed.contains_key(*n))
                        .cloned(),
                );
                self.pods = listed;
                for name in names {
                    self.reconcile(&name).await;
                }
            }
            watcher::Event::Apply(pod) => {
                if let Some(f) = self.facts(&pod) {
                    let name = f.identity.workload_name();
                    self.pods.insert(name.clone(), f);
                    self.reconcile(&name).await;
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some(f) = self.facts(&pod) {
                    let name = f.identity.workload_name();
                    // A delete of an older pod with this name must not
                    // remove its successor.
                    if self
                        .pods
                        .get(&name)
                        .is_some_and(|known| known.identity.uid == f.identity.uid)
                    {
                        self.pods.remove(&name);
                    }
                    self.reconcile(&name).await;
                }
            }
        }
        self.update_gauges();
    }

    fn facts(&self, pod: &Pod) -> Option<PodFacts> {
        match pods::facts(pod, &self.src.node_name) {
            Ok(f) => Some(f),
            Err(e) => {
                self.node
                    .metrics
                    .kube
                    .enroll_errors
                    .with_label_values(&["bad_object"])
                    .inc();
                tracing::warn!(error = %e, "ignoring a pod object the API server sent");
                None
            }
        }
    }

    fn decision(&self, f: &PodFacts) -> Result<(), Skip> {
        let namespace = self
            .namespaces
            .get(&f.identity.namespace)
            .copied()
            .unwrap_or(OptIn::Unset);
        pods::decide(
            f,
            namespace,
            self.src.cfg.intercept_by_default,
            self.src.cfg.host_network,
        )
    }

    async fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .retries
            .iter()
            .filter(|(_, r)| r.at <= now)
            .map(|(n, _)| n.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        for name in due {
            self.reconcile(&name).await;
        }
        self.update_gauges();
    }

    /// Brings one pod's enrollment in line with what the API says.
    async fn reconcile(&mut self, name: &str) {
        if !self.namespaces_ready {
            return;
        }
        let wanted = self
            .pods
            .get(name)
            .filter(|f| self.decision(f).is_ok())
            .cloned();
        let mut enrolled = self.enrolled.get(name).cloned();
        // Removed behind our back (DELETE /workloads on the admin port):
        // enroll it again.
        if enrolled.is_some() && self.node.workloads.by_name(name).is_none() {
            self.enrolled.remove(name);
            enrolled = None;
        }
        match plan(wanted.as_ref(), enrolled.as_ref()) {
            Action::Nothing => {
                if wanted.is_none() {
                    self.retries.remove(name);
                }
            }
            Action::Unenroll => {
                self.unenroll(name);
                self.retries.remove(name);
            }
            Action::Relabel => {
                let Some(f) = wanted else { return };
                let labels = f.identity.workload_labels();
                if self
                    .node
                    .workloads
                    .relabel(name, labels.clone(), Some(f.identity.clone()))
                {
                    tracing::info!(workload = name, "pod labels changed; identity updated");
                    self.enrolled.insert(
                        name.to_string(),
                        Enrolled {
                            uid: f.identity.uid.clone(),
                            labels,
                        },
                    );
                }
            }
            Action::Reenroll => {
                self.unenroll(name);
                if let Some(f) = wanted {
                    self.try_enroll(name, &f).await;
                }
            }
            Action::Enroll => {
                let Some(f) = wanted else { return };
                if self
                    .retries
                    .get(name)
                    .is_some_and(|r| r.at > Instant::now())
                {
                    return;
                }
                self.try_enroll(name, &f).await;
            }
        }
    }

    fn unenroll(&mut self, name: &str) {
        self.enrolled.remove(name);
        match workload::unenroll(&self.node, name) {
            Ok(_) | Err(EnrollError::Unknown(_)) => {}
            Err(e) => tracing::warn!(workload = name, error = %e, "unenrolling the pod failed"),
        }
    }

    async fn try_enroll(&mut self, name: &str, f: &PodFacts) {
        match self.enroll(f).await {
            Ok(()) => {
                self.retries.remove(name);
                self.enrolled.insert(
                    name.to_string(),
                    Enrolled {
                        uid: f.identity.uid.clone(),
                        labels: f.identity.workload_labels(),
                    },
                );
            }
            Err(e) => {
                let attempts = self.retries.get(name).map_or(0, |r| r.attempts) + 1;
                let wait = retry_delay(attempts);
                self.node
                    .metrics
                    .kube
                    .enroll_errors
                    .with_label_values(&[e.reason()])
                    .inc();
                tracing::warn!(
                    pod = name,
                    uid = %f.identity.uid,
                    reason = e.reason(),
                    error = %e,
                    attempt = attempts,
                    retry_in_ms = wait.as_millis() as u64,
                    "cannot enroll the pod yet"
                );
                self.retries.insert(
                    name.to_string(),
                    Retry {
                        attempts,
                        at: Instant::now() + wait,
                    },
                );
            }
        }
    }

    async fn enroll(&self, f: &PodFacts) -> Result<(), PodError> {
        let root = &self.src.cgroup_root;
        let uid = &f.identity.uid;
        let cgroup = pods::find_cgroup(root, f.qos, uid).ok_or_else(|| PodError::NoCgroup {
            uid: uid.clone(),
            root: root.display().to_string(),
            candidates: pods::pod_cgroup_candidates(f.qos, uid)
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let netns = pods::find_netns(&cgroup, &self.src.cfg.proc_root)
            .ok_or_else(|| PodError::NoNetns(cgroup.display().to_string()))?;
        let spec = WorkloadConfig {
            name: f.identity.workload_name(),
            cgroup: Some(cgroup),
            netns: Some(netns),
            labels: f.identity.workload_labels(),
        };
        // A hostNetwork pod's process is in the node's namespace: enroll
        // its cgroup only.
        let netns_use = if f.host_network {
            NetnsUse::SharedWithNode
        } else {
            NetnsUse::Own
        };
        workload::enroll_pod(
            &self.node,
            &spec,
            EnrollSource::Kubernetes,
            Some(f.identity.clone()),
            netns_use,
        )
        .await
        .map(|_| ())
        .map_err(PodError::Enroll)
    }

    fn update_gauges(&self) {
        let mut counts: BTreeMap<&'static str, i64> = POD_STATES.iter().map(|s| (*s, 0)).collect();
        for (name, f) in &self.pods {
            let state = match self.decision(f) {
                Err(skip) => skip.as_str(),
                Ok(()) if self.enrolled.contains_key(name) => "enrolled",
                Ok(()) => "pending",
            };
            *counts.entry(state).or_default() += 1;
        }
        for (state, n) in counts {
            self.node
                .metrics
                .kube
                .pods
                .with_label_values(&[state])
                .set(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::pods::{OptIn, PodIdentity};

    fn facts(uid: &str, app: &str) -> PodFacts {
        PodFacts {
            identity: PodIdentity {
                namespace: "ns".into(),
                pod: "p".into(),
                uid: uid.into(),
                service_account: "sa".into(),
                node: "n".into(),
                labels: [("app".to_string(), app.to_string())].into(),
            },
            phase: "Running".into(),
            host_network: false,
            qos: None,
            opt: OptIn::Unset,
        }
    }

    #[test]
    fn plan_steps() {
        let f = facts("u1", "a");
        let same = Enrolled {
            uid: "u1".into(),
            labels: f.identity.workload_labels(),
        };
        let relabelled = Enrolled {
            uid: "u1".into(),
            labels: facts("u1", "b").identity.workload_labels(),
        };
        let other = Enrolled {
            uid: "u0".into(),
            labels: f.identity.workload_labels(),
        };
        assert_eq!(plan(None, None), Action::Nothing);
        assert_eq!(plan(None, Some(&same)), Action::Unenroll);
        assert_eq!(plan(Some(&f), None), Action::Enroll);
        assert_eq!(plan(Some(&f), Some(&same)), Action::Nothing);
        assert_eq!(plan(Some(&f), Some(&relabelled)), Action::Relabel);
        assert_eq!(plan(Some(&f), Some(&other)), Action::Reenroll);
    }

    #[test]
    fn retry_delays_double_and_cap() {
        assert_eq!(retry_delay(1), Duration::from_millis(500));
        assert_eq!(retry_delay(2), Duration::from_secs(1));
        assert_eq!(retry_delay(3), Duration::from_secs(2));
        assert_eq!(retry_delay(7), Duration::from_secs(30));
        assert_eq!(retry_delay(1000), Duration::from_secs(30));
        assert_eq!(retry_delay(0), Duration::from_millis(500));
    }
}
