//! Hot reload of the config file.
//!
//! The file is polled by content, not by inotify: Kubernetes updates a
//! ConfigMap volume by swapping a `..data` symlink, which inotify on the
//! file itself does not report, while a read always sees the new target.
//! A change is parsed and validated first; an invalid one is rejected, the
//! running config stays, the reason is logged and
//! `trigate_config_last_reload_success` drops to 0.
//!
//! Policy parts apply at once: destinations (the kernel table is rewritten
//! in place, so interception does not lapse), DNS settings, workloads from
//! the config (admin-enrolled ones are left alone) and `log.level`. Process
//! parts (instance, admin, intercept, listener, proxy, log.format, tls) shape
//! sockets and kernel objects that exist already: a change to them is
//! reported as needing a restart and otherwise ignored.
use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use crate::{
    config::{Config, ConfigError, WorkloadConfig},
    daemon::Node,
    intercept::{destinations::Destinations, InterceptError},
    workload::{self, EnrollError, EnrollSource},
};

/// How often the file is read.
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error("installing the destinations failed: {0}")]
    Destinations(#[from] InterceptError),
    #[error("api gate: {0}")]
    Api(String),
    #[error("llm gate: {0}")]
    Llm(String),
    #[error("guardrails: {0}")]
    Guardrails(String),
    #[error("mcp gate: {0}")]
    Mcp(String),
    #[error("some workloads could not be enrolled: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Workloads(Vec<EnrollError>),
}

/// Reads the file every [`POLL`] and applies each new content once.
pub async fn watch(node: Arc<Node>, path: PathBuf) {
    let mut seen = tokio::fs::read_to_string(&path).await.ok();
    let mut missing_logged = false;
    loop {
        tokio::select! {
            _ = node.stop.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => {
                missing_logged = false;
                if seen.as_deref() != Some(text.as_str()) {
                    apply(&node, &text).await;
                    seen = Some(text);
                }
            }
            // A symlink swap can leave the path briefly dangling; say so
            // once, keep the running config, and keep looking.
            Err(e) if !missing_logged => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the config file; keeping the running config");
                missing_logged = true;
            }
            Err(_) => {}
        }
    }
}

/// Applies a new config text, recording the outcome in logs and metrics.
pub async fn apply(node: &Arc<Node>, text: &str) {
    let m = &node.metrics;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    m.config_last_reload_timestamp.set(now);
    match reload(node, text).await {
        Ok(restart_needed) => {
            m.config_last_reload_success.set(1);
            m.config_reloads.with_label_values(&["success"]).inc();
            if restart_needed.is_empty() {
                tracing::info!("config reloaded");
            } else {
                tracing::warn!(
                    ignored = %restart_needed.join(","),
                    "config reloaded; changes to these sections need a restart and were not applied"
                );
            }
        }
        Err(e) => {
            m.config_last_reload_success.set(0);
            m.config_reloads.with_label_values(&["failure"]).inc();
            tracing::error!(error = %e, "config reload failed; keeping the running config where it was not applied");
        }
    }
}

async fn reload(node: &Arc<Node>, text: &str) -> Result<Vec<&'static str>, ReloadError> {
    let mut new = Config::from_yaml(text)?;
    let old = node.config.load_full();
    let restart_needed = static_changes(&old, &new);
    keep_static(&old, &mut new);
    // Built before anything changes, so a policy that cannot be built (a
    // JWKS file missing, say) rejects the whole reload.
    let api_policy = if new.routes != old.routes
        || new.auth != old.auth
        || new.rate_limits != old.rate_limits
        || new.clusters != old.clusters
    {
        let previous = node.api.load_full();
        Some(
            crate::gate::api::ApiPolicy::build(&new, &node.stop, Some((&previous, &old)))
                .map_err(ReloadError::Api)?,
        )
    } else {
        None
    };
    // A shared answer cache lives in the limits' Redis.
    let llm_policy =
        if new.llm != old.llm || (new.llm.cache.shared && new.rate_limits != old.rate_limits) {
            Some(
                crate::gate::llm::LlmPolicy::build(&new.llm, &new.rate_limits)
                    .map_err(ReloadError::Llm)?,
            )
        } else {
            None
        };
    let guardrails = if new.guardrails != old.guardrails {
        Some(
            crate::policy::guardrail::Guardrails::build(&new.guardrails)
                .map_err(ReloadError::Guardrails)?,
        )
    } else {
        None
    };
    let mcp = if new.mcp != old.mcp {
        Some(crate::policy::mcp::McpAuthz::build(&new.mcp).map_err(ReloadError::Mcp)?)
    } else {
        None
    };

    if new.log.level != old.log.level {
        if let Err(e) = node.log.set(&new.log.level) {
            tracing::warn!(error = %e, "log.level not applied");
        }
    }
    if new.destinations != old.destinations || new.dns != old.dns {
        let previous = node.destinations.load_full();
        let table = Arc::new(Destinations::install(
            &new,
            Arc::clone(&node.interceptor),
            Arc::clone(&node.metrics),
            Some(&previous),
            &node.stop,
        )?);
        table.spawn_resolvers(&new.dns);
        node.destinations.store(table);
        if crate::daemon::needs_node_ca(&new) {
            if let Err(e) = node.tls.leaves(&new.tls) {
                tracing::error!(error = %e, "a destination terminates TLS but the node CA is not available");
            }
        }
    }

    if let Some(policy) = api_policy {
        node.api.store(Arc::new(policy));
    }
    if let Some(policy) = llm_policy {
        node.llm.store(Arc::new(policy));
    }
    if let Some(g) = guardrails {
        node.guard.store(Arc::new(g));
    }
    if let Some(m) = mcp {
        node.mcp.store(Arc::new(m));
    }

    let (remove, add) = workload_plan(&old.workloads, &new.workloads);
    let mut failures = Vec::new();
    for name in remove {
        // Only what the config enrolled: the admin API's enrollments are
        // not the file's to take away.
        let from_config = node
            .workloads
            .by_name(&name)
            .is_some_and(|w| w.source == EnrollSource::Config);
        if from_config {
            if let Err(e) = workload::unenroll(node, &name) {
                failures.push(e);
            }
        }
    }
    for spec in add {
        if let Err(e) = workload::enroll(node, &spec, EnrollSource::Config).await {
            failures.push(e);
        }
    }
    node.config.store(Arc::new(new));
    if failures.is_empty() {
        Ok(restart_needed)
    } else {
        Err(ReloadError::Workloads(failures))
    }
}

/// The process sections that differ: they need a restart.
pub fn static_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.instance != new.instance {
        out.push("instance");
    }
    if old.admin != new.admin {
        out.push("admin");
    }
    if old.intercept != new.intercept {
        out.push("intercept");
    }
    if old.listener != new.listener {
        out.push("listener");
    }
    if old.proxy != new.proxy {
        out.push("proxy");
    }
    if old.log.format != new.log.format {
        out.push("log.format");
    }
    if old.tls != new.tls {
        out.push("tls");
    }
    if old.http != new.http {
        out.push("http");
    }
    if old.kubernetes != new.kubernetes {
        out.push("kubernetes");
    }
    out
}

/// Keeps the running values of the process sections in `new`.
fn keep_static(old: &Config, new: &mut Config) {
    new.instance.clone_from(&old.instance);
    new.admin = old.admin.clone();
    new.intercept = old.intercept.clone();
    new.listener = old.listener.clone();
    new.proxy = old.proxy.clone();
    new.log.format = old.log.format;
    new.tls = old.tls.clone();
    new.http = old.http.clone();
    new.kubernetes = old.kubernetes.clone();
}

/// Which config workloads to unenroll (gone or changed) and which to enroll
/// (new or changed). A changed workload is re-enrolled as a whole: its
/// cgroup or namespace may be another one.
pub fn workload_plan(
    old: &[WorkloadConfig],
    new: &[WorkloadConfig],
) -> (Vec<String>, Vec<WorkloadConfig>) {
    let old_by: BTreeMap<&str, &WorkloadConfig> =
        old.iter().map(|w| (w.name.as_str(), w)).collect();
    let new_by: BTreeMap<&str, &WorkloadConfig> =
        new.iter().map(|w| (w.name.as_str(), w)).collect();
    let remove = old
        .iter()
        .filter(|w| new_by.get(w.name.as_str()) != Some(w))
        .map(|w| w.name.clone())
        .collect();
    let add = new
        .iter()
        .filter(|w| old_by.get(w.name.as_str()) != Some(w))
        .cloned()
        .collect();
    (remove, add)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str, cgroup: &str) -> WorkloadConfig {
        WorkloadConfig {
            name: name.into(),
            cgroup: Some(cgroup.into()),
            netns: None,
            labels: Default::default(),
        }
    }

    #[test]
    fn plan_removes_gone_and_changed_and_adds_new_and_changed() {
        let old = vec![w("same", "a"), w("gone", "b"), w("moved", "c")];
        let new = vec![w("same", "a"), w("moved", "d"), w("fresh", "e")];
        let (remove, add) = workload_plan(&old, &new);
        assert_eq!(remove, ["gone", "moved"]);
        let added: Vec<_> = add
            .iter()
            .map(|w| (w.name.as_str(), w.cgroup.clone()))
            .collect();
        assert_eq!(
            added,
            [("moved", Some("d".into())), ("fresh", Some("e".into()))]
        );
    }

    #[test]
    fn plan_is_empty_when_nothing_changed() {
        let list = vec![w("a", "a"), w("b", "b")];
        let (remove, add) = workload_plan(&list, &list);
        assert!(remove.is_empty() && add.is_empty());
        let mut labelled = list.clone();
        labelled[1].labels.insert("team".into(), "x".into());
        let (remove, add) = workload_plan(&list, &labelled);
        assert_eq!(remove, ["b"], "a label change re-enrolls");
        assert_eq!(add.len(), 1);
    }

    #[test]
    fn static_sections_are_reported_and_kept() {
        let old = Config::default();
        let mut new = Config::default();
        assert!(static_changes(&old, &new).is_empty());
        new.listener.port = 1;
        new.proxy.connect_timeout_ms = 7;
        new.instance = "other".into();
        new.log.level = "debug".into();
        new.destinations = Config::embedded_default().destinations;
        assert_eq!(
            static_changes(&old, &new),
            ["instance", "listener", "proxy"]
        );
        keep_static(&old, &mut new);
        assert!(static_changes(&old, &new).is_empty());
        assert_eq!(new.log.level, "debug", "policy parts stay as reloaded");
        assert!(!new.destinations.is_empty());
    }
}
