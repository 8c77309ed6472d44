//! What the machine must provide. Checked once per test process; a missing
//! piece fails the test with the reason (never a silent skip).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Tools and places every e2e test needs.
#[derive(Debug, Clone)]
pub struct Env {
    /// The daemon under test.
    pub trigate: PathBuf,
    /// Where the cgroup v2 hierarchy is mounted.
    pub cgroup2: PathBuf,
    pub bpffs: PathBuf,
    pub ip: PathBuf,
    pub curl: PathBuf,
    pub bpftool: PathBuf,
    /// The real interpreter (not a pyenv shim), so `comm` is `python3…` and
    /// start-up is quick.
    pub python3: PathBuf,
}

/// The checked environment, or an error naming what is missing.
pub fn env() -> Result<&'static Env> {
    static ENV: OnceLock<Result<Env, String>> = OnceLock::new();
    ENV.get_or_init(|| check().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("e2e precondition failed: {e}"))
}

fn check() -> Result<Env> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the e2e tests must run as root (they create network namespaces, cgroups and load eBPF)");
    }
    let cgroup2 = cgroup2_mount()?;
    let bpffs = PathBuf::from("/sys/fs/bpf");
    if !is_mount_of(&bpffs, "bpf")? {
        // A fresh host may not mount it (systemd usually does). The daemon
        // would mount it itself; the harness needs it before, to inspect pins.
        let out = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&bpffs)
            .output()
            .context("running mount")?;
        if !out.status.success() || !is_mount_of(&bpffs, "bpf")? {
            bail!(
                "no bpffs at /sys/fs/bpf and mounting one failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(Env {
        trigate: trigate_bin()?,
        cgroup2,
        bpffs,
        ip: which("ip").context("`ip` (iproute2) is required")?,
        curl: which("curl").context("`curl` is required")?,
        bpftool: which("bpftool").context("`bpftool` is required (Debian package bpftool)")?,
        python3: python3()?,
    })
}

/// The venv's interpreter (`<workspace>/.venv/bin/python3`) with the
/// packages of tests/requirements.txt (the official `openai`, `anthropic`
/// and `mcp` SDKs), for tests that drive the gateway with real clients.
pub fn sdk_python() -> Result<&'static Path> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(|| check_sdk_python().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(|e| anyhow::anyhow!("e2e precondition failed: {e}"))
}

fn check_sdk_python() -> Result<PathBuf> {
    let py = workspace_root().join(".venv/bin/python3");
    if !py.exists() {
        bail!(
            "{} is missing: run `cargo xtask setup --test-deps` (it creates .venv from tests/requirements.txt)",
            py.display()
        );
    }
    let out = std::process::Command::new(&py)
        .args(["-c", "import openai, anthropic, mcp"])
        .output()
        .with_context(|| format!("running {}", py.display()))?;
    if !out.status.success() {
        bail!(
            "{} cannot import openai, anthropic and mcp ({}): run `cargo xtask setup --test-deps` or \
             `.venv/bin/pip install -r tests/requirements.txt`",
            py.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(py)
}

/// `TRIGATE_BIN`, else `<target dir>/debug/trigate`.
fn trigate_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TRIGATE_BIN") {
        let p = PathBuf::from(p);
        let p = if p.is_relative() {
            workspace_root().join(p)
        } else {
            p
        };
        if !p.is_file() {
            bail!("TRIGATE_BIN={} does not exist", p.display());
        }
        return Ok(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let p = target.join("debug").join("trigate");
    if !p.is_file() {
        bail!(
            "trigate binary not found at {} (build it with `cargo build -p trigate`, or set TRIGATE_BIN)",
            p.display()
        );
    }
    Ok(p)
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The cgroup v2 mount point from /proc/self/mountinfo.
fn cgroup2_mount() -> Result<PathBuf> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    mounts_of(&info, "cgroup2").into_iter().next().context(
        "no cgroup v2 hierarchy mounted (looked for fstype cgroup2 in /proc/self/mountinfo)",
    )
}

fn is_mount_of(path: &Path, fstype: &str) -> Result<bool> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(mounts_of(&info, fstype).iter().any(|m| m == path))
}

/// Mount points whose filesystem type is `fstype`. A mountinfo line is
/// `id parent major:minor root mountpoint options [optional…] - fstype source superopts`.
fn mounts_of(mountinfo: &str, fstype: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fs = right.split_whitespace().next()?;
            let mountpoint = left.split_whitespace().nth(4)?;
            (fs == fstype).then(|| PathBuf::from(unescape_octal(mountpoint)))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// First `name` on PATH.
pub(crate) fn which(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{name} not found on PATH")
}

/// The interpreter behind `python3` (resolving shims such as pyenv's).
fn python3() -> Result<PathBuf> {
    let shim = which("python3").context("`python3` is required")?;
    let out = std::process::Command::new(&shim)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .with_context(|| format!("running {}", shim.display()))?;
    if !out.status.success() {
        bail!(
            "{} does not run: {}",
            shim.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let exe = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(if exe.is_file() { exe } else { shim })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_mount() {
        let info = "29 1 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:5 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            mounts_of(info, "cgroup2"),
            vec![PathBuf::from("/sys/fs/cgroup/unified")]
        );
        assert_eq!(unescape_octal(r"/a\040b"), "/a b");
    }
}
