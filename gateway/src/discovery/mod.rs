//! Where enrollments come from. Every source enrolls through
//! `workload::enroll`: the static `workloads:` of the config (and the admin
//! API, which calls it directly) and, with `kubernetes.enabled`, the pods
//! of this node found through the Kubernetes API.
use std::{future::Future, path::Path, pin::Pin, sync::Arc};

use crate::{
    config::Config,
    daemon::Node,
    workload::{self, EnrollError, EnrollSource},
};

pub mod api_timeout;
pub mod kube;
pub mod pods;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("workloads[{index}] ({name}): {source}")]
    Static {
        index: usize,
        name: String,
        source: EnrollError,
    },
    #[error(
        "kubernetes.node_name: not set and NODE_NAME is not in the environment (the DaemonSet \
         sets it from spec.nodeName)"
    )]
    NodeName,
    #[error(
        "kubernetes.cgroup_root {root}: not under the cgroup2 mount {mount}; point it at \
         kubelet's hierarchy inside the mount"
    )]
    CgroupRoot { root: String, mount: String },
    #[error(
        "kubernetes: cannot set up the API client: {0}; in a pod, is the service account token \
         mounted (automountServiceAccountToken)? elsewhere, set kubernetes.api_server"
    )]
    Client(String),
}

type Started<'a> = Pin<Box<dyn Future<Output = Result<(), DiscoveryError>> + Send + 'a>>;

/// A source of enrollments. `start` enrolls what is known at start-up
/// (failing start-up on an error the operator must fix) and may leave a
/// task running that follows changes until the node stops.
pub trait EnrollmentSource: Send {
    fn name(&self) -> &'static str;
    fn start<'a>(self: Box<Self>, node: &'a Arc<Node>) -> Started<'a>;
}

/// The sources the config asks for, in start order.
pub fn sources(
    config: &Config,
    cgroup2: &Path,
) -> Result<Vec<Box<dyn EnrollmentSource>>, DiscoveryError> {
    let mut out: Vec<Box<dyn EnrollmentSource>> = vec![Box::new(StaticSource)];
    if config.kubernetes.enabled {
        out.push(Box::new(kube::KubeSource::new(
            &config.kubernetes,
            cgroup2,
        )?));
    }
    Ok(out)
}

/// The config's `workloads:`. A workload that cannot be enrolled stops
/// start-up: it is the operator's own list.
pub struct StaticSource;

impl EnrollmentSource for StaticSource {
    fn name(&self) -> &'static str {
        "config"
    }

    fn start<'a>(self: Box<Self>, node: &'a Arc<Node>) -> Started<'a> {
        Box::pin(async move {
            let config = node.config.load_full();
            for (index, spec) in config.workloads.iter().enumerate() {
                workload::enroll(node, spec, EnrollSource::Config)
                    .await
                    .map_err(|source| DiscoveryError::Static {
                        index,
                        name: spec.name.clone(),
                        source,
                    })?;
            }
            Ok(())
        })
    }
}
