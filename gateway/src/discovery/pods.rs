//! Pure decisions about one pod: is it enrolled, under which name and
//! labels, and where kubelet put its cgroup. No I/O here but
//! [`find_netns`] and [`find_cgroup`], which only read the filesystem.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::Pod;

/// The label or annotation a pod sets to opt in (`"true"`) or out
/// (`"false"`).
pub const INTERCEPT_KEY: &str = "trigate.io/intercept";

/// Reserved workload labels carrying the pod's identity. Kubernetes label
/// keys cannot contain `:`, so these never collide with the pod's own.
pub const LABEL_NAMESPACE: &str = "k8s:namespace";
pub const LABEL_POD: &str = "k8s:pod";
pub const LABEL_SERVICE_ACCOUNT: &str = "k8s:serviceaccount";
pub const LABEL_NODE: &str = "k8s:node";

/// A pod's QoS class (`status.qosClass`): it decides where kubelet puts
/// the pod's cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    pub fn parse(s: &str) -> Option<Qos> {
        match s {
            "Guaranteed" => Some(Qos::Guaranteed),
            "Burstable" => Some(Qos::Burstable),
            "BestEffort" => Some(Qos::BestEffort),
            _ => None,
        }
    }
}

/// kubelet's `--cgroup-driver`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

/// Where kubelet puts a pod's cgroup, relative to the cgroup root.
/// cgroupfs: `kubepods/burstable/pod<uid>` (guaranteed pods directly under
/// `kubepods`); systemd: `kubepods.slice/kubepods-burstable.slice/
/// kubepods-burstable-pod<uid>.slice` with the uid's `-` turned into `_`
/// (systemd reads `-` in a slice name as nesting).
pub fn pod_cgroup(driver: CgroupDriver, qos: Qos, uid: &str) -> PathBuf {
    match driver {
        CgroupDriver::Cgroupfs => {
            let pod = format!("pod{uid}");
            match qos {
                Qos::Guaranteed => PathBuf::from("kubepods").join(pod),
                Qos::Burstable => PathBuf::from("kubepods/burstable").join(pod),
                Qos::BestEffort => PathBuf::from("kubepods/besteffort").join(pod),
            }
        }
        CgroupDriver::Systemd => {
            let uid = uid.replace('-', "_");
            match qos {
                Qos::Guaranteed => {
                    PathBuf::from("kubepods.slice").join(format!("kubepods-pod{uid}.slice"))
                }
                Qos::Burstable => PathBuf::from("kubepods.slice/kubepods-burstable.slice")
                    .join(format!("kubepods-burstable-pod{uid}.slice")),
                Qos::BestEffort => PathBuf::from("kubepods.slice/kubepods-besteffort.slice")
                    .join(format!("kubepods-besteffort-pod{uid}.slice")),
            }
        }
    }
}

/// Every place the pod's cgroup may be, most likely first: the driver is
/// not configured (it is found by looking), and a pod without a reported
/// QoS class may be in any of the three.
pub fn pod_cgroup_candidates(qos: Option<Qos>, uid: &str) -> Vec<PathBuf> {
    let classes: &[Qos] = match qos {
        Some(Qos::Guaranteed) => &[Qos::Guaranteed],
        Some(Qos::Burstable) => &[Qos::Burstable],
        Some(Qos::BestEffort) => &[Qos::BestEffort],
        None => &[Qos::Burstable, Qos::BestEffort, Qos::Guaranteed],
    };
    let mut out = Vec::new();
    for driver in [CgroupDriver::Systemd, CgroupDriver::Cgroupfs] {
        for q in classes {
            out.push(pod_cgroup(driver, *q, uid));
        }
    }
    out
}

/// Who a pod is, as policies and telemetry see it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PodIdentity {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub service_account: String,
    pub node: String,
    /// The pod's own labels.
    pub labels: BTreeMap<String, String>,
}

impl PodIdentity {
    /// The workload name: `<namespace>/<pod>`.
    pub fn workload_name(&self) -> String {
        format!("{}/{}", self.namespace, self.pod)
    }

    /// The pod's labels plus the reserved `k8s:*` identity labels.
    pub fn workload_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        for (k, v) in [
            (LABEL_NAMESPACE, &self.namespace),
            (LABEL_POD, &self.pod),
            (LABEL_SERVICE_ACCOUNT, &self.service_account),
            (LABEL_NODE, &self.node),
        ] {
            labels.insert(k.to_string(), v.clone());
        }
        labels
    }
}

/// What a pod says about interception, label or annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptIn {
    Unset,
    In,
    Out,
}

/// The facts about a pod the decisions need, taken out of the API object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    pub identity: PodIdentity,
    pub phase: String,
    pub host_network: bool,
    pub qos: Option<Qos>,
    pub opt: OptIn,
}

/// Why a pod the API lists is not enrolled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    NotRunning,
    OptedOut,
    NotOptedIn,
    HostNetwork,
}

impl Skip {
    /// The `state` label of `trigate_kube_pods`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Skip::NotRunning => "not_running",
            Skip::OptedOut => "opted_out",
            Skip::NotOptedIn => "not_opted_in",
            Skip::HostNetwork => "host_network",
        }
    }
}

/// The opt-in value of one label or annotation value. Anything but
/// `true`/`false` is ignored (and logged by the caller).
fn opt_value(v: Option<&String>) -> Option<OptIn> {
    match v.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        Some("true") => Some(OptIn::In),
        Some("false") => Some(OptIn::Out),
        _ => None,
    }
}

/// The pod's opt-in from its label and annotation. Opting out wins when
/// the two disagree: the safe reading of a contradiction is "leave it".
pub fn opt_in(labels: &BTreeMap<String, String>, annotations: &BTreeMap<String, String>) -> OptIn {
    let l = opt_value(labels.get(INTERCEPT_KEY));
    let a = opt_value(annotations.get(INTERCEPT_KEY));
    match (l, a) {
        (Some(OptIn::Out), _) | (_, Some(OptIn::Out)) => OptIn::Out,
        (Some(OptIn::In), _) | (_, Some(OptIn::In)) => OptIn::In,
        _ => OptIn::Unset,
    }
}

/// The pod's and its namespace's opt-ins together: opting out anywhere
/// wins, then opting in anywhere.
pub fn combine(pod: OptIn, namespace: OptIn) -> OptIn {
    match (pod, namespace) {
        (OptIn::Out, _) | (_, OptIn::Out) => OptIn::Out,
        (OptIn::In, _) | (_, OptIn::In) => OptIn::In,
        _ => OptIn::Unset,
    }
}

/// Whether to enroll a pod (`namespace`: its namespace's opt-in). Only
/// running pods have a process (and so a network namespace) to intercept.
pub fn decide(
    facts: &PodFacts,
    namespace: OptIn,
    intercept_by_default: bool,
    host_network: bool,
) -> Result<(), Skip> {
    if facts.phase != "Running" {
        return Err(Skip::NotRunning);
    }
    match combine(facts.opt, namespace) {
        OptIn::Out => return Err(Skip::OptedOut),
        OptIn::In => return Ok(()),
        OptIn::Unset => {}
    }
    if facts.host_network && !host_network {
        return Err(Skip::HostNetwork);
    }
    if !intercept_by_default {
        return Err(Skip::NotOptedIn);
    }
    Ok(())
}

/// The decision's facts from an API object. An object without namespace,
/// name or uid is not a pod the API server would send: an error naming
/// what is missing.
pub fn facts(pod: &Pod, node: &str) -> Result<PodFacts, String> {
    let meta = &pod.metadata;
    let name = meta
        .name
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or("a pod without metadata.name")?;
    let namespace = meta
        .namespace
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("pod {name}: no metadata.namespace"))?;
    let uid = meta
        .uid
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("pod {namespace}/{name}: no metadata.uid"))?;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let labels = meta.labels.clone().unwrap_or_default();
    let annotations = meta.annotations.clone().unwrap_or_default();
    Ok(PodFacts {
        opt: opt_in(&labels, &annotations),
        identity: PodIdentity {
            namespace,
            pod: name,
            uid,
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".to_string()),
            node: spec
                .and_then(|s| s.node_name.clone())
                .unwrap_or_else(|| node.to_string()),
            labels,
        },
        phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        qos: status
            .and_then(|s| s.qos_class.as_deref())
            .and_then(Qos::parse),
    })
}

/// The pod's cgroup directory under `root`, if kubelet made it.
pub fn find_cgroup(root: &Path, qos: Option<Qos>, uid: &str) -> Option<PathBuf> {
    pod_cgroup_candidates(qos, uid)
        .into_iter()
        .map(|rel| root.join(rel))
        .find(|p| p.is_dir())
}

/// How deep below the pod cgroup to look for a process: kubelet puts
/// containers one level down (`cri-containerd-<id>.scope`); a container
/// may nest its own cgroups a little further.
const MAX_DEPTH: usize = 4;

/// A network namespace file of a process in the pod's cgroup or a cgroup
/// below it (its containers, the sandbox's pause process).
pub fn find_netns(cgroup: &Path, proc_root: &Path) -> Option<PathBuf> {
    let mut stack = vec![(cgroup.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                let ns = proc_root.join(pid.to_string()).join("ns/net");
                // The process may exit between the two reads: try the next.
                if fs::metadata(&ns).is_ok() {
                    return Some(ns);
                }
            }
        }
        if depth < MAX_DEPTH {
            if let Ok(entries) = fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push((e.path(), depth + 1));
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8dd2fd2b-3a3c-4d3b-9f2e-6f1c2b1a0c9d";

    #[test]
    fn cgroupfs_paths() {
        assert_eq!(
            pod_cgroup(CgroupDriver::Cgroupfs, Qos::Guaranteed, UID),
            PathBuf::from(format!("kubepods/pod{UID}"))
        );
        assert_eq!(
            pod_cgroup(CgroupDriver::Cgroupfs, Qos::Burstable, UID),
            PathBuf::from(format!("kubepods/burstable/pod{UID}"))
        );
        assert_eq!(
            pod_cgroup(CgroupDriver::Cgroupfs, Qos::BestEffort, UID),
            PathBuf::from(format!("kubepods/besteffort/pod{UID}"))
        );
    }

    #[test]
    fn systemd_paths_replace_dashes() {
        let u = "8dd2fd2b_3a3c_4d3b_9f2e_6f1c2b1a0c9d";
        assert_eq!(
            pod_cgroup(CgroupDriver::Systemd, Qos::Guaranteed, UID),
            PathBuf::from(format!("kubepods.slice/kubepods-pod{u}.slice"))
        );
        assert_eq!(
            pod_cgroup(CgroupDriver::Systemd, Qos::Burstable, UID),
            PathBuf::from(format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice"
            ))
        );
        assert_eq!(
            pod_cgroup(CgroupDriver::Systemd, Qos::BestEffort, UID),
            PathBuf::from(format!(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice"
            ))
        );
    }

    #[test]
    fn candidates_cover_both_drivers_and_unknown_qos() {
        let known = pod_cgroup_candidates(Some(Qos::BestEffort), UID);
        assert_eq!(
            known,
            vec![
                pod_cgroup(CgroupDriver::Systemd, Qos::BestEffort, UID),
                pod_cgroup(CgroupDriver::Cgroupfs, Qos::BestEffort, UID),
            ]
        );
        let unknown = pod_cgroup_candidates(None, UID);
        assert_eq!(unknown.len(), 6);
        for driver in [CgroupDriver::Systemd, CgroupDriver::Cgroupfs] {
            for q in [Qos::Guaranteed, Qos::Burstable, Qos::BestEffort] {
                assert!(
                    unknown.contains(&pod_cgroup(driver, q, UID)),
                    "{driver:?} {q:?}"
                );
            }
        }
        assert_eq!(Qos::parse("Burstable"), Some(Qos::Burstable));
        assert_eq!(Qos::parse("burstable"), None);
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn opt_in_from_labels_and_annotations() {
        let none = map(&[]);
        let t = map(&[(INTERCEPT_KEY, "true")]);
        let f = map(&[(INTERCEPT_KEY, "false")]);
        let junk = map(&[(INTERCEPT_KEY, "maybe")]);
        assert_eq!(opt_in(&none, &none), OptIn::Unset);
        assert_eq!(opt_in(&junk, &junk), OptIn::Unset);
        assert_eq!(opt_in(&t, &none), OptIn::In);
        assert_eq!(opt_in(&none, &t), OptIn::In);
        assert_eq!(opt_in(&f, &none), OptIn::Out);
        assert_eq!(opt_in(&none, &f), OptIn::Out);
        assert_eq!(opt_in(&t, &f), OptIn::Out, "out wins");
        assert_eq!(opt_in(&f, &t), OptIn::Out, "out wins");
        assert_eq!(
            opt_in(&map(&[(INTERCEPT_KEY, " FALSE ")]), &none),
            OptIn::Out
        );
    }

    fn facts_with(phase: &str, host_network: bool, opt: OptIn) -> PodFacts {
        PodFacts {
            identity: PodIdentity {
                namespace: "ns".into(),
                pod: "p".into(),
                uid: UID.into(),
                service_account: "default".into(),
                node: "n".into(),
                labels: BTreeMap::new(),
            },
            phase: phase.into(),
            host_network,
            qos: None,
            opt,
        }
    }

    #[test]
    fn decision_table() {
        use OptIn::*;
        // (phase, hostNetwork, opt, by_default, host_network allowed) → outcome
        let cases = [
            ("Pending", false, In, true, true, Err(Skip::NotRunning)),
            (
                "Succeeded",
                false,
                Unset,
                true,
                false,
                Err(Skip::NotRunning),
            ),
            ("", false, Unset, true, false, Err(Skip::NotRunning)),
            ("Running", false, Unset, true, false, Ok(())),
            ("Running", false, Out, true, false, Err(Skip::OptedOut)),
            ("Running", true, Out, true, true, Err(Skip::OptedOut)),
            ("Running", false, Unset, false, false, Err(Skip::NotOptedIn)),
            ("Running", false, In, false, false, Ok(())),
            ("Running", true, Unset, true, false, Err(Skip::HostNetwork)),
            ("Running", true, Unset, true, true, Ok(())),
            ("Running", true, Unset, false, true, Err(Skip::NotOptedIn)),
            ("Running", true, In, true, false, Ok(())),
            ("Running", true, In, false, false, Ok(())),
        ];
        for (phase, hn, opt, by_default, allow_hn, want) in cases {
            assert_eq!(
                decide(
                    &facts_with(phase, hn, opt),
                    OptIn::Unset,
                    by_default,
                    allow_hn
                ),
                want,
                "{phase} hostNetwork={hn} {opt:?} by_default={by_default} host_network={allow_hn}"
            );
        }
    }

    #[test]
    fn namespace_opt_in_combines_with_the_pod() {
        use OptIn::*;
        for (pod, ns, want) in [
            (Unset, Unset, Unset),
            (Unset, In, In),
            (Unset, Out, Out),
            (In, Unset, In),
            (In, Out, Out),
            (Out, In, Out),
            (In, In, In),
            (Out, Unset, Out),
        ] {
            assert_eq!(combine(pod, ns), want, "{pod:?} {ns:?}");
        }
        let f = facts_with("Running", false, Unset);
        assert_eq!(decide(&f, Out, true, false), Err(Skip::OptedOut));
        assert_eq!(decide(&f, In, false, false), Ok(()));
        assert_eq!(decide(&f, Unset, false, false), Err(Skip::NotOptedIn));
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("a pod")
    }

    #[test]
    fn identity_from_a_pod() {
        let p = pod(serde_json::json!({
            "metadata": {
                "name": "agent-7f9", "namespace": "finance", "uid": UID,
                "labels": {"app": "agent", "trigate.io/intercept": "true"},
                "annotations": {"note": "x"}
            },
            "spec": {"nodeName": "node-1", "serviceAccountName": "agent", "containers": []},
            "status": {"phase": "Running", "qosClass": "Guaranteed"}
        }));
        let f = facts(&p, "fallback").unwrap();
        assert_eq!(f.identity.workload_name(), "finance/agent-7f9");
        assert_eq!(f.qos, Some(Qos::Guaranteed));
        assert_eq!(f.opt, OptIn::In);
        assert_eq!(f.phase, "Running");
        assert!(!f.host_network);
        let labels = f.identity.workload_labels();
        assert_eq!(labels["app"], "agent");
        assert_eq!(labels[LABEL_NAMESPACE], "finance");
        assert_eq!(labels[LABEL_POD], "agent-7f9");
        assert_eq!(labels[LABEL_SERVICE_ACCOUNT], "agent");
        assert_eq!(labels[LABEL_NODE], "node-1");
        assert_eq!(labels.len(), 6);
    }

    #[test]
    fn identity_defaults_and_garbage() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "a", "namespace": "b", "uid": UID},
            "spec": {"containers": [], "hostNetwork": true}
        }));
        let f = facts(&p, "node-x").unwrap();
        assert_eq!(f.identity.service_account, "default");
        assert_eq!(f.identity.node, "node-x");
        assert_eq!(f.phase, "");
        assert!(f.host_network);
        assert_eq!(f.qos, None);

        let no_uid = pod(serde_json::json!({"metadata": {"name": "a", "namespace": "b"}}));
        assert!(facts(&no_uid, "n").unwrap_err().contains("metadata.uid"));
        let no_ns = pod(serde_json::json!({"metadata": {"name": "a", "uid": UID}}));
        assert!(facts(&no_ns, "n")
            .unwrap_err()
            .contains("metadata.namespace"));
        let no_name = pod(serde_json::json!({"metadata": {}}));
        assert!(facts(&no_name, "n").unwrap_err().contains("metadata.name"));
    }

    #[test]
    fn finds_cgroup_and_netns_on_disk() {
        let dir = std::env::temp_dir().join(format!("trigate-pods-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let root = dir.join("cg");
        let proc_root = dir.join("proc");
        let pod_dir = root.join(pod_cgroup(CgroupDriver::Cgroupfs, Qos::BestEffort, UID));
        let container = pod_dir.join("cri-containerd-abc.scope");
        fs::create_dir_all(&container).unwrap();
        fs::write(pod_dir.join("cgroup.procs"), "").unwrap();
        // pid 41 has exited (no /proc entry); 42 is alive.
        fs::write(container.join("cgroup.procs"), "41\n42\n").unwrap();
        fs::create_dir_all(proc_root.join("42/ns")).unwrap();
        fs::write(proc_root.join("42/ns/net"), "").unwrap();

        assert_eq!(
            find_cgroup(&root, Some(Qos::BestEffort), UID),
            Some(pod_dir.clone())
        );
        assert_eq!(find_cgroup(&root, None, UID), Some(pod_dir.clone()));
        assert_eq!(find_cgroup(&root, Some(Qos::Guaranteed), UID), None);
        assert_eq!(
            find_netns(&pod_dir, &proc_root),
            Some(proc_root.join("42/ns/net"))
        );
        fs::remove_dir_all(proc_root.join("42")).unwrap();
        assert_eq!(find_netns(&pod_dir, &proc_root), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
