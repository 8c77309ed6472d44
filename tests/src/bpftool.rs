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

/// The cgroup ids in the `ENROLL_CGROUP` map of the daemon whose programs
/// are attached to `cgroup` (found through its connect4 program's maps, so
/// concurrent daemons of other tests are not mixed in).
pub fn enrolled_cgroup_ids(cgroup: &Path) -> Result<Vec<u64>> {
    let env = env()?;
    let bpftool = |args: &[&str]| -> Result<serde_json::Value> {
        let mut cmd = Command::new(&env.bpftool);
        cmd.arg("-j").args(args);
        let out = run_with_timeout(cmd, Duration::from_secs(10))?
            .check(&format!("bpftool {}", args.join(" ")))?;
        serde_json::from_str(out.stdout.trim())
            .with_context(|| format!("parsing bpftool {} output", args.join(" ")))
    };
    let progs = attached_programs(cgroup)?;
    let connect = progs
        .iter()
        .find(|p| {
            p.name.starts_with("trigate")
                && matches!(p.attach_type.as_str(), "cgroup_inet4_connect" | "connect4")
        })
        .with_context(|| format!("no trigate connect4 program on {}", cgroup.display()))?;
    let prog = bpftool(&["prog", "show", "id", &connect.id.to_string()])?;
    let map_ids: Vec<u64> = prog["map_ids"]
        .as_array()
        .context("bpftool prog show: no map_ids")?
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    for id in map_ids {
        let map = bpftool(&["map", "show", "id", &id.to_string()])?;
        if map["name"] != "ENROLL_CGROUP" {
            continue;
        }
        let dump = bpftool(&["map", "dump", "id", &id.to_string()])?;
        let entries = dump.as_array().cloned().unwrap_or_default();
        return entries.iter().map(entry_key_u64).collect();
    }
    anyhow::bail!(
        "the connect4 program on {} uses no ENROLL_CGROUP map",
        cgroup.display()
    )
}

/// A u64 map key as bpftool prints it: a BTF-formatted number, or the raw
/// bytes as hex strings (little-endian).
fn entry_key_u64(entry: &serde_json::Value) -> Result<u64> {
    if let Some(k) = entry["formatted"]["key"].as_u64() {
        return Ok(k);
    }
    if let Some(k) = entry["key"].as_u64() {
        return Ok(k);
    }
    let bytes: Vec<u8> = entry["key"]
        .as_array()
        .with_context(|| format!("bpftool map entry without a key: {entry}"))?
        .iter()
        .map(|b| {
            b.as_str()
                .and_then(|s| u8::from_str_radix(s.trim_start_matches("0x"), 16).ok())
                .with_context(|| format!("bad key byte in {entry}"))
        })
        .collect::<Result<_>>()?;
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("key is not 8 bytes: {entry}"))?;
    Ok(u64::from_le_bytes(arr))
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
