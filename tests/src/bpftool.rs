//! What is attached to a cgroup, as `bpftool -j cgroup show` reports it.

use crate::env::env;
use crate::process::run_with_timeout;
use anyhow::{Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
pub struct AttachedProgram {
    pub id: u64,
    pub attach_type: String,
    #[serde(default)]
    pub name: String,
}

/// Programs attached directly to `cgroup` (not inherited ones).
pub fn attached_programs(cgroup: &Path) -> Result<Vec<AttachedProgram>> {
    let env = env()?;
    let mut cmd = Command::new(&env.bpftool);
    cmd.args(["-j", "cgroup", "show"]).arg(cgroup);
    let out = run_with_timeout(cmd, Duration::from_secs(10))?.check("bpftool cgroup show")?;
    let text = out.stdout.trim();
    if text.is_empty() {
        return Ok(vec![]);
    }
    serde_json::from_str(text).with_context(|| format!("parsing bpftool output {text:?}"))
}

/// How many programs of each trigate kind are attached, keyed by the
/// program names in gateway-common (`trigate_connect4`, …). The kernel
/// truncates names to 15 bytes (`trigate_connect`; bpftool prints the full
/// name from BTF when it can), so the attach type tells connect4 from
/// connect6; the name prefix tells ours from others.
pub fn trigate_program_counts(progs: &[AttachedProgram]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for p in progs.iter().filter(|p| p.name.starts_with("trigate")) {
        let kind = match p.attach_type.as_str() {
            "cgroup_inet4_connect" | "connect4" => "trigate_connect4",
            "cgroup_inet6_connect" | "connect6" => "trigate_connect6",
            "cgroup_sock_ops" | "sock_ops" => "trigate_sock_ops",
            "cgroup_inet4_getpeername" | "getpeername4" => "trigate_getpeername4",
            "cgroup_inet6_getpeername" | "getpeername6" => "trigate_getpeername6",
            _ => "other",
        };
        *counts.entry(kind).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_attach_type() {
        let progs: Vec<AttachedProgram> = serde_json::from_str(
            r#"[{"id":1,"attach_type":"cgroup_inet4_connect","attach_flags":"multi","name":"trigate_connect"},
                {"id":2,"attach_type":"cgroup_inet6_connect","attach_flags":"multi","name":"trigate_connect"},
                {"id":3,"attach_type":"cgroup_sock_ops","attach_flags":"multi","name":"trigate_sock_op"},
                {"id":4,"attach_type":"cgroup_inet4_getpeername","name":"trigate_getpeer"},
                {"id":5,"attach_type":"cgroup_inet6_getpeername","name":"trigate_getpeer"},
                {"id":6,"attach_type":"cgroup_inet4_connect","name":"other_prog"}]"#,
        )
        .unwrap();
        let c = trigate_program_counts(&progs);
        assert_eq!(c.len(), 5);
        assert!(c.values().all(|n| *n == 1));
    }
}
