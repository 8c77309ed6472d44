//! `kubernetes:`: pod discovery on this node (see `discovery/kube.rs`).
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pods scheduled on this node, found through the Kubernetes API and
/// enrolled as workloads named `<namespace>/<pod>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Watch the pods of this node and enroll the running ones.
    pub enabled: bool,
    /// This node's name (the pods' `spec.nodeName`). Default: the
    /// `NODE_NAME` environment variable (the DaemonSet sets it from the
    /// downward API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The API server's URL (`https://…`, or `http://…` for a local proxy).
    /// Default: in-cluster (`KUBERNETES_SERVICE_HOST`/`_PORT`, the service
    /// account token and CA under
    /// /var/run/secrets/kubernetes.io/serviceaccount).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_server: Option<String>,
    /// Enroll every pod unless it opts out (`trigate.io/intercept: "false"`
    /// as a label or annotation). When false, only pods that opt in
    /// (`"true"`) are enrolled.
    pub intercept_by_default: bool,
    /// Also read `trigate.io/intercept` on the pod's namespace (labels and
    /// annotations): `"false"` there opts every pod of it out, `"true"` in.
    /// Needs get/list/watch on namespaces; off, the daemon reads pods only.
    pub namespaces: bool,
    /// Enroll hostNetwork pods too. They share the node's network
    /// namespace, so by default they are skipped unless they opt in.
    pub host_network: bool,
    /// Where kubelet's cgroup hierarchy (`kubepods…`) lives. Default: the
    /// cgroup v2 mount the daemon found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_root: Option<PathBuf>,
    /// The host's /proc, for `<proc_root>/<pid>/ns/net` of a process in the
    /// pod (the DaemonSet runs with hostPID).
    pub proc_root: PathBuf,
    /// How long the API server has to start answering a list or a watch of
    /// pods (or namespaces). A slower answer is abandoned, logged with the
    /// request, counted in `trigate_kube_api_timeouts_total` and retried
    /// with backoff; enrolled pods stay as they are meanwhile.
    pub request_timeout_ms: u64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            enabled: false,
            node_name: None,
            api_server: None,
            intercept_by_default: true,
            namespaces: false,
            host_network: false,
            cgroup_root: None,
            proc_root: PathBuf::from("/proc"),
            request_timeout_ms: 30_000,
        }
    }
}

impl KubernetesConfig {
    /// The node name in force: the configured one, else `$NODE_NAME`.
    pub fn node_name(&self) -> Option<String> {
        self.node_name
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok())
            .filter(|n| !n.trim().is_empty())
    }

    /// Contradictions, by field (`NODE_NAME` read from the environment).
    pub fn problems(&self, in_pod: bool) -> Vec<(String, String)> {
        self.problems_with(in_pod, std::env::var("NODE_NAME").ok())
    }

    fn problems_with(&self, in_pod: bool, env_node: Option<String>) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if !self.enabled {
            return p;
        }
        let node = self.node_name.clone().or(env_node);
        if node.is_none_or(|n| n.trim().is_empty()) {
            p.push((
                "kubernetes.node_name".into(),
                "required when kubernetes.enabled is true: set it or the NODE_NAME environment \
                 variable (the DaemonSet sets it from spec.nodeName)"
                    .into(),
            ));
        }
        if let Some(url) = &self.api_server {
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.parse::<hyper::Uri>().is_err()
            {
                p.push((
                    "kubernetes.api_server".into(),
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
        }
        if !in_pod {
            p.push((
                "kubernetes.enabled".into(),
                "needs listener.mode in-pod: each pod has its own network namespace and gets \
                 its listener there"
                    .into(),
            ));
        }
        if self.request_timeout_ms == 0 {
            p.push((
                "kubernetes.request_timeout_ms".into(),
                "must be more than 0: the time the API server has to answer a list or watch".into(),
            ));
        }
        for (field, path) in [
            ("kubernetes.cgroup_root", self.cgroup_root.as_ref()),
            ("kubernetes.proc_root", Some(&self.proc_root)),
        ] {
            if let Some(path) = path {
                if !path.is_absolute() {
                    p.push((field.into(), format!("{path:?} must be an absolute path")));
                }
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(p: &[(String, String)]) -> Vec<&str> {
        p.iter().map(|(f, _)| f.as_str()).collect()
    }

    #[test]
    fn defaults_and_disabled_need_nothing() {
        let c = KubernetesConfig::default();
        assert!(!c.enabled && c.intercept_by_default && !c.host_network);
        assert_eq!(c.proc_root, PathBuf::from("/proc"));
        assert!(c.problems_with(false, None).is_empty());
        let parsed: KubernetesConfig = serde_yaml_ng::from_str("enabled: false").unwrap();
        assert_eq!(parsed, c);
        assert!(serde_yaml_ng::from_str::<KubernetesConfig>("nodename: x").is_err());
    }

    #[test]
    fn enabled_needs_a_node_in_pod_mode_and_sane_paths() {
        let on = KubernetesConfig {
            enabled: true,
            ..Default::default()
        };
        assert_eq!(
            fields(&on.problems_with(true, None)),
            ["kubernetes.node_name"]
        );
        assert!(on.problems_with(true, Some("node-1".into())).is_empty());
        assert_eq!(
            fields(&on.problems_with(true, Some(" ".into()))),
            ["kubernetes.node_name"]
        );
        let named = KubernetesConfig {
            node_name: Some("n".into()),
            ..on.clone()
        };
        assert!(named.problems_with(true, None).is_empty());
        assert_eq!(
            fields(&named.problems_with(false, None)),
            ["kubernetes.enabled"]
        );
        let bad = KubernetesConfig {
            api_server: Some("127.0.0.1:6443".into()),
            cgroup_root: Some("sys/fs/cgroup".into()),
            proc_root: "proc".into(),
            request_timeout_ms: 0,
            ..named.clone()
        };
        assert_eq!(
            fields(&bad.problems_with(true, None)),
            [
                "kubernetes.api_server",
                "kubernetes.request_timeout_ms",
                "kubernetes.cgroup_root",
                "kubernetes.proc_root"
            ]
        );
        let http = KubernetesConfig {
            api_server: Some("http://127.0.0.1:8001".into()),
            ..named
        };
        assert!(http.problems_with(true, None).is_empty());
    }
}
