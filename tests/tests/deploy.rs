//! The DaemonSet's capabilities are enough: the daemon runs with exactly
//! the capabilities `deploy/manifests/trigate.yaml` grants (and no others)
//! and still intercepts a simulated pod end to end (in-pod listener through
//! setns, eBPF programs loaded and attached, SO_MARK on its upstream
//! socket).
//!
//! A root process's permitted capabilities after exec are its bounding
//! set, so the daemon is started through `setpriv --bounding-set` (util-
//! linux) with the manifest's list; its `CapEff` is checked to be that list.
//! One test in this binary: it points TRIGATE_BIN at the wrapper before
//! the harness first reads it.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, ensure, Context, Result};
use trigate_e2e::{Destination, Node, Runner, Upstream};

/// Capability numbers (linux/capability.h) of the names a manifest may use.
const CAPS: &[(&str, u32)] = &[
    ("CHOWN", 0),
    ("DAC_OVERRIDE", 1),
    ("DAC_READ_SEARCH", 2),
    ("FOWNER", 3),
    ("KILL", 5),
    ("SETGID", 6),
    ("SETUID", 7),
    ("NET_BIND_SERVICE", 10),
    ("NET_RAW", 13),
    ("IPC_LOCK", 14),
    ("NET_ADMIN", 12),
    ("SYS_CHROOT", 18),
    ("SYS_PTRACE", 19),
    ("SYS_ADMIN", 21),
    ("SYS_RESOURCE", 24),
    ("PERFMON", 38),
    ("BPF", 39),
];

/// The names under `capabilities.add` of the manifest's (one) container.
fn added_capabilities(manifest: &str) -> Result<Vec<String>> {
    let mut lines = manifest.lines().skip_while(|l| l.trim() != "capabilities:");
    lines.next().context("no `capabilities:` in the manifest")?;
    let mut in_add = false;
    let mut caps = Vec::new();
    for line in lines {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t == "add:" {
            in_add = true;
        } else if let Some(name) = t.strip_prefix("- ").filter(|_| in_add) {
            caps.push(name.trim().trim_matches('"').to_owned());
        } else if t.starts_with("drop:") {
            continue;
        } else {
            break;
        }
    }
    ensure!(
        !caps.is_empty(),
        "no `capabilities.add` list in the manifest"
    );
    Ok(caps)
}

fn cap_mask(names: &[String]) -> Result<u64> {
    names.iter().try_fold(0u64, |mask, n| {
        let bit = CAPS
            .iter()
            .find(|(c, _)| c == n)
            .map(|(_, b)| *b)
            .with_context(|| format!("unknown capability {n} in the manifest"))?;
        Ok(mask | (1 << bit))
    })
}

/// Removes the wrapper's directory on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn manifest_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/manifests/trigate.yaml")
}

#[test]
fn added_capabilities_parse() -> Result<()> {
    let m = "      securityContext:\n            capabilities:\n              drop: [\"ALL\"]\n              add:\n                # why\n                - NET_ADMIN\n\n                - SYS_ADMIN\n          volumeMounts:\n";
    assert_eq!(added_capabilities(m)?, ["NET_ADMIN", "SYS_ADMIN"]);
    assert!(added_capabilities("spec: {}\n").is_err());
    assert_eq!(
        cap_mask(&["NET_ADMIN".into(), "SYS_ADMIN".into()])?,
        (1 << 12) | (1 << 21)
    );
    assert!(cap_mask(&["MADE_UP".into()]).is_err());
    Ok(())
}

#[test]
fn daemon_intercepts_with_only_the_daemonsets_capabilities() -> Result<()> {
    let manifest = fs::read_to_string(manifest_path())
        .with_context(|| format!("reading {}", manifest_path().display()))?;
    let caps = added_capabilities(&manifest)?;
    let mask = cap_mask(&caps)?;

    // The real binary, as the harness would find it.
    let bin = match std::env::var_os("TRIGATE_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/trigate"),
    };
    let bin = fs::canonicalize(&bin)
        .with_context(|| format!("{} (build it with cargo build -p trigate)", bin.display()))?;
    let dir = Dir(std::env::temp_dir().join(format!("trigate-e2e-caps-{}", std::process::id())));
    fs::create_dir_all(&dir.0)?;
    let wrapper = dir.0.join("trigate");
    let list: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.to_lowercase()))
        .collect();
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec setpriv --bounding-set=-all,{} --inh-caps=-all -- '{}' \"$@\"\n",
            list.join(","),
            bin.display()
        ),
    )?;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))?;
    // Before the harness reads it (once, in env()); the only test in this
    // binary that starts a daemon.
    std::env::set_var("TRIGATE_BIN", &wrapper);

    let node = Node::new()?;
    let pod = node.pod("pod-a")?;
    let up = Upstream::start(pod.host_ip.into())?;
    let cfg = node
        .config()
        .destination(
            Destination::redirect("upstream")
                .addr(up.ip())
                .port(up.port()),
        )
        .workload(pod.workload());
    let d = node.start(&cfg)?;

    let status = fs::read_to_string(format!("/proc/{}/status", d.pid()))
        .context("reading the daemon's /proc status")?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .context("no CapEff in the daemon's status")?;
    if eff != mask {
        bail!(
            "the daemon runs with capabilities {eff:#x}, not exactly the manifest's {caps:?} \
             ({mask:#x}): is setpriv (util-linux) installed?"
        );
    }

    let out = pod.curl(&up.url("/caps"))?.check("curl in pod-a")?;
    ensure!(
        out.stdout.starts_with("hello from upstream path=/caps "),
        "curl got {:?}",
        out.stdout
    );
    ensure!(
        up.accepted() == 1,
        "upstream accepted {} connections",
        up.accepted()
    );
    // Through the daemon, not around it: one redirect counted.
    let metrics = d.metrics()?;
    let redirected = metrics.sum("trigate_ebpf_connects_total", &[("outcome", "redirected")]);
    ensure!(
        redirected >= 1.0,
        "no redirected connect counted: {}",
        d.dump()
    );
    Ok(())
}
