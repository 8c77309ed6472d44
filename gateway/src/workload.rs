//! Workloads: who may be intercepted, how the kernel recognises them (cgroup
//! id, netns cookie) and where their connections are redirected.
use std::{
    collections::{BTreeMap, HashMap},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, RwLock},
};

use gateway_common::WorkloadValue;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{ListenerMode, WorkloadConfig},
    daemon::Node,
    discovery::pods::{PodIdentity, LABEL_NAMESPACE, LABEL_SERVICE_ACCOUNT},
    intercept::{cgroup, InterceptError},
    listener::{self, ListenerContext, Listeners},
    netns::{Netns, NetnsWorker},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EnrollSource {
    Config,
    Admin,
    /// A pod found through the Kubernetes API (`kubernetes:`).
    Kubernetes,
}

/// An enrolled workload.
#[derive(Debug)]
pub struct Workload {
    pub id: u32,
    pub name: Arc<str>,
    pub cgroup: Option<PathBuf>,
    pub cgroup_id: Option<u64>,
    pub netns_path: Option<PathBuf>,
    pub netns_cookie: Option<u64>,
    pub labels: BTreeMap<String, String>,
    pub listeners: Vec<SocketAddr>,
    pub source: EnrollSource,
    /// The pod's identity, for workloads found through Kubernetes.
    pub kubernetes: Option<PodIdentity>,
    /// Stops this workload's own accept loops (in-pod mode).
    stop: CancellationToken,
}

/// What `GET /workloads` shows.
#[derive(Debug, Serialize)]
pub struct WorkloadView {
    pub name: String,
    pub id: u32,
    pub cgroup: Option<PathBuf>,
    pub cgroup_id: Option<u64>,
    pub netns: Option<PathBuf>,
    pub netns_cookie: Option<u64>,
    pub labels: BTreeMap<String, String>,
    pub listeners: Vec<String>,
    pub source: EnrollSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<PodIdentity>,
}

impl Workload {
    pub fn view(&self) -> WorkloadView {
        WorkloadView {
            name: self.name.to_string(),
            id: self.id,
            cgroup: self.cgroup.clone(),
            cgroup_id: self.cgroup_id,
            netns: self.netns_path.clone(),
            netns_cookie: self.netns_cookie,
            labels: self.labels.clone(),
            listeners: self.listeners.iter().map(ToString::to_string).collect(),
            source: self.source,
            kubernetes: self.kubernetes.clone(),
        }
    }
}

/// Whether a policy's `namespaces:` and `service_accounts:` select a
/// workload (empty: any). They read the reserved `k8s:*` labels, so a
/// workload that is not a pod matches only selectors that leave both empty.
pub fn selects_pod(
    namespaces: &[String],
    service_accounts: &[String],
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let any_of = |wanted: &[String], key: &str| {
        wanted.is_empty()
            || labels
                .and_then(|l| l.get(key))
                .is_some_and(|v| wanted.iter().any(|w| w == v))
    };
    any_of(namespaces, LABEL_NAMESPACE) && any_of(service_accounts, LABEL_SERVICE_ACCOUNT)
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("workload {0:?} is already enrolled")]
    Exists(String),
    #[error("workload {0:?} is not enrolled")]
    Unknown(String),
    #[error("workload {name}: {message}")]
    Invalid { name: String, message: String },
    #[error("workload {name}: {source}")]
    Kernel {
        name: String,
        source: InterceptError,
    },
    #[error("workload {name}: cannot open its listener: {source}")]
    Listener {
        name: String,
        source: std::io::Error,
    },
}

/// Enrolled workloads by name and by the id the kernel reports.
#[derive(Default)]
pub struct Registry {
    inner: RwLock<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    by_name: BTreeMap<String, Arc<Workload>>,
    by_id: HashMap<u32, Arc<Workload>>,
    next_id: u32,
}

impl Registry {
    pub fn by_id(&self, id: u32) -> Option<Arc<Workload>> {
        self.read().by_id.get(&id).cloned()
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<Workload>> {
        self.read().by_name.get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Workload>> {
        self.read().by_name.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RegistryInner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RegistryInner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a name and an id; ids are never reused so a late kernel
    /// record cannot be attributed to a different, newer workload.
    fn reserve(&self, name: &str) -> Result<u32, EnrollError> {
        let mut inner = self.write();
        if inner.by_name.contains_key(name) {
            return Err(EnrollError::Exists(name.to_string()));
        }
        inner.next_id += 1;
        Ok(inner.next_id)
    }

    fn insert(&self, w: Arc<Workload>) -> Result<(), EnrollError> {
        let mut inner = self.write();
        if inner.by_name.contains_key(&*w.name) {
            return Err(EnrollError::Exists(w.name.to_string()));
        }
        inner.by_id.insert(w.id, Arc::clone(&w));
        inner.by_name.insert(w.name.to_string(), w);
        Ok(())
    }

    /// Gives an enrolled workload new labels and pod identity in place: the
    /// same id, maps and listeners, so a pod whose labels change keeps its
    /// connections. False when no such workload is enrolled.
    pub fn relabel(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        kubernetes: Option<PodIdentity>,
    ) -> bool {
        let mut inner = self.write();
        let Some(old) = inner.by_name.get(name) else {
            return false;
        };
        let new = Arc::new(Workload {
            id: old.id,
            name: Arc::clone(&old.name),
            cgroup: old.cgroup.clone(),
            cgroup_id: old.cgroup_id,
            netns_path: old.netns_path.clone(),
            netns_cookie: old.netns_cookie,
            labels,
            listeners: old.listeners.clone(),
            source: old.source,
            kubernetes,
            stop: old.stop.clone(),
        });
        inner.by_id.insert(new.id, Arc::clone(&new));
        inner.by_name.insert(name.to_string(), new);
        true
    }

    fn remove(&self, name: &str) -> Option<Arc<Workload>> {
        let mut inner = self.write();
        let w = inner.by_name.remove(name)?;
        inner.by_id.remove(&w.id);
        Some(w)
    }
}

/// The map value that sends a workload's connects to a loopback listener
/// on `port` in the namespace with `netns_cookie`.
pub fn listener_value(id: u32, port: u16, has_v6: bool, netns_cookie: u64) -> WorkloadValue {
    WorkloadValue {
        workload_id: id,
        listener_port: port,
        _pad0: 0,
        listener_v4: Ipv4Addr::LOCALHOST.octets(),
        listener_v6: if has_v6 {
            Ipv6Addr::LOCALHOST.octets()
        } else {
            [0; 16]
        },
        _pad1: 0,
        listener_netns_cookie: netns_cookie,
    }
}

/// Enrolls a workload: resolves its cgroup and namespace, opens its
/// listener (in-pod mode), then writes the enrollment maps — last, so the
/// kernel never redirects to a listener that does not exist yet.
pub async fn enroll(
    node: &Arc<Node>,
    spec: &WorkloadConfig,
    source: EnrollSource,
) -> Result<Arc<Workload>, EnrollError> {
    enroll_pod(node, spec, source, None, NetnsUse::Own).await
}

/// Whose network namespace a workload's `netns` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetnsUse {
    /// The workload's own (a pod's): the whole namespace is enrolled and
    /// its listener takes `listener.port`.
    Own,
    /// The node's, shared with the node's services and every other
    /// hostNetwork pod: only the workload's cgroup may be enrolled, and its
    /// listener takes a free port there.
    SharedWithNode,
}

/// The in-pod listener's port and whether the namespace itself goes into
/// the enrollment map. A shared namespace must not: every process in it
/// (kubelet, other hostNetwork pods) would be redirected and attributed to
/// this workload. Nor may it take the fixed port: a second hostNetwork pod,
/// or a node service, may hold it.
pub fn in_pod_listener(netns: NetnsUse, port: u16) -> (u16, bool) {
    match netns {
        NetnsUse::Own => (port, true),
        NetnsUse::SharedWithNode => (0, false),
    }
}

/// [`enroll`] with the pod identity of a workload found through Kubernetes.
pub async fn enroll_pod(
    node: &Arc<Node>,
    spec: &WorkloadConfig,
    source: EnrollSource,
    kubernetes: Option<PodIdentity>,
    netns_use: NetnsUse,
) -> Result<Arc<Workload>, EnrollError> {
    let name = spec.name.clone();
    let invalid = |message: String| EnrollError::Invalid {
        name: name.clone(),
        message,
    };
    let kernel = |source: InterceptError| EnrollError::Kernel {
        name: name.clone(),
        source,
    };
    if spec.cgroup.is_none() && spec.netns.is_none() {
        return Err(invalid("needs a cgroup or a netns".into()));
    }
    if netns_use == NetnsUse::SharedWithNode && spec.cgroup.is_none() {
        return Err(invalid(
            "a workload in the node's network namespace needs a cgroup: the namespace is shared"
                .into(),
        ));
    }
    let id = node.workloads.reserve(&name)?;

    let (cgroup_path, cgroup_id) = match &spec.cgroup {
        Some(c) => {
            let path = cgroup::resolve(&node.cgroup2, c).map_err(kernel)?;
            let id = cgroup::cgroup_id(&path).map_err(kernel)?;
            (Some(path), Some(id))
        }
        None => (None, None),
    };

    let stop = node.stop.child_token();
    // `pod`: the in-pod listener's netns cookie, namespace and sockets.
    let (listener_addrs, value, pod) = match node.listener.mode {
        ListenerMode::InPod => {
            let path = spec
                .netns
                .as_ref()
                .ok_or_else(|| invalid("netns is required when listener.mode is in-pod".into()))?;
            let worker = NetnsWorker::spawn(path).map_err(|source| EnrollError::Listener {
                name: name.clone(),
                source,
            })?;
            let netns = Netns::Pod(worker);
            let (port, _) = in_pod_listener(netns_use, node.listener.port);
            let listeners = Listeners::open(&netns, port, node.listener.ipv6)
                .await
                .map_err(|source| EnrollError::Listener {
                    name: name.clone(),
                    source,
                })?;
            let value = listener_value(
                id,
                listeners.port,
                listeners.v6.is_some(),
                listeners.netns_cookie,
            );
            let addrs = listeners.addresses();
            let cookie = listeners.netns_cookie;
            (addrs, value, Some((cookie, netns, listeners)))
        }
        ListenerMode::Host => {
            if spec.netns.is_some() {
                return Err(invalid(
                    "netns is set but listener.mode is host: a pod in its own network namespace needs listener.mode in-pod".into(),
                ));
            }
            let host = node
                .host_listener
                .as_ref()
                .ok_or_else(|| invalid("no host listener is open".into()))?;
            (
                host.addresses.clone(),
                listener_value(id, host.port, host.has_v6, host.netns_cookie),
                None,
            )
        }
    };

    let workload = Arc::new(Workload {
        id,
        name: Arc::from(name.as_str()),
        cgroup: cgroup_path,
        cgroup_id,
        netns_path: spec.netns.clone(),
        // The namespace's cookie only when the namespace itself is enrolled.
        netns_cookie: pod
            .as_ref()
            .filter(|_| in_pod_listener(netns_use, 0).1)
            .map(|(c, _, _)| *c),
        labels: spec.labels.clone(),
        listeners: listener_addrs,
        source,
        kubernetes,
        stop: stop.clone(),
    });
    if let Some((cookie, netns, listeners)) = pod {
        listener::spawn_accept_loops(
            node,
            listeners,
            ListenerContext {
                netns_cookie: cookie,
                netns,
                owner: Some(Arc::clone(&workload)),
            },
            stop.clone(),
        );
    }
    let enrolled = (|| {
        if let Some(cg) = cgroup_id {
            node.interceptor.enroll_cgroup(cg, value)?;
        }
        if let Some(cookie) = workload.netns_cookie {
            node.interceptor.enroll_netns(cookie, value)?;
        }
        Ok(())
    })();
    if let Err(e) = enrolled {
        stop.cancel();
        remove_from_maps(node, &workload);
        return Err(kernel(e));
    }
    node.workloads
        .insert(Arc::clone(&workload))
        .inspect_err(|_| {
            stop.cancel();
        })?;
    node.metrics
        .workloads_enrolled
        .set(node.workloads.len() as i64);
    tracing::info!(
        workload = %workload.name,
        id,
        cgroup = workload.cgroup.as_ref().map(|p| p.display().to_string()),
        cgroup_id = workload.cgroup_id,
        netns = workload.netns_path.as_ref().map(|p| p.display().to_string()),
        listeners = %workload.listeners.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        "enrolled"
    );
    Ok(workload)
}

/// Removes a workload from the maps first (no new redirects), then closes
/// its listeners. Connections already proxied run to completion.
pub fn unenroll(node: &Node, name: &str) -> Result<Arc<Workload>, EnrollError> {
    let workload = node
        .workloads
        .remove(name)
        .ok_or_else(|| EnrollError::Unknown(name.to_string()))?;
    remove_from_maps(node, &workload);
    workload.stop.cancel();
    // Idle upstream connections were made in its namespace, which may go
    // away with it: close them rather than keep them for a reuse that
    // cannot come.
    node.api_clients.forget_workload(workload.id);
    node.api_idle.forget_workload(workload.id);
    node.metrics
        .workloads_enrolled
        .set(node.workloads.len() as i64);
    tracing::info!(workload = %workload.name, "unenrolled");
    Ok(workload)
}

fn remove_from_maps(node: &Node, w: &Workload) {
    if let Some(id) = w.cgroup_id {
        if let Err(e) = node.interceptor.unenroll_cgroup(id) {
            tracing::warn!(workload = %w.name, error = %e, "removing the cgroup enrollment failed");
        }
    }
    if let Some(cookie) = w.netns_cookie {
        if let Err(e) = node.interceptor.unenroll_netns(cookie) {
            tracing::warn!(workload = %w.name, error = %e, "removing the netns enrollment failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_namespace_is_never_enrolled_and_takes_a_free_port() {
        assert_eq!(in_pod_listener(NetnsUse::Own, 15001), (15001, true));
        assert_eq!(in_pod_listener(NetnsUse::SharedWithNode, 15001), (0, false));
    }

    #[test]
    fn pod_selectors_read_the_reserved_labels() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let pod: BTreeMap<String, String> = [
            (LABEL_NAMESPACE.to_string(), "finance".to_string()),
            (LABEL_SERVICE_ACCOUNT.to_string(), "agent".to_string()),
        ]
        .into();
        // A plain label spelled like a namespace does not count.
        let not_pod: BTreeMap<String, String> =
            [("namespace".to_string(), "finance".to_string())].into();
        assert!(selects_pod(&[], &[], None));
        assert!(selects_pod(&[], &[], Some(&not_pod)));
        assert!(selects_pod(&s(&["finance"]), &[], Some(&pod)));
        assert!(selects_pod(
            &s(&["legal", "finance"]),
            &s(&["agent"]),
            Some(&pod)
        ));
        assert!(!selects_pod(&s(&["legal"]), &[], Some(&pod)));
        assert!(!selects_pod(&s(&["finance"]), &s(&["other"]), Some(&pod)));
        assert!(!selects_pod(&[], &s(&["agent"]), Some(&not_pod)));
        assert!(!selects_pod(&s(&["finance"]), &[], None));
    }
}
