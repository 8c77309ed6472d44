//! A profile-guided build of the daemon: `cargo xtask pgo`.
//!
//! Why: the daemon's per-request path is some 20k instructions spread over
//! tokio, httparse, http, the relay and the policy chain. Laid out as the
//! compiler guesses, it touches more instruction-cache lines per request
//! than nginx does (callgrind's cache model: 1153 against 842 first-level
//! misses per proxied request), and that, not the instruction count, kept
//! its CPU per request above nginx's. A build that knows which branches
//! and calls are hot packs the hot path together and inlines along it.
//!
//! Steps: an instrumented release build (`target/pgo-gen`); the daemon
//! run under the bench load generators, which write counts; the counts
//! merged with `llvm-profdata` (rustup's `llvm-tools`, the compiler's own
//! LLVM) into `target/pgo/trigate.profdata`; a release build that uses
//! them (`target/pgo-use/release/trigate`). Each build has its own target
//! directory: the flags differ, and sharing one would rebuild everything
//! each time.
//!
//! The training load is the benches' own traffic (API gate, LLM gate both
//! ways, MCP gate), short and in one round: it is what the gateway spends
//! its time on, and a profile only steers layout and inlining, so nothing
//! it does not cover is slower than in the plain build, only not faster.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{
    setup,
    util::{self, cargo, output, run},
};

/// Where the merged profile goes.
pub fn profile_path(root: &Path) -> PathBuf {
    util::target_dir(root).join("pgo/trigate.profdata")
}

/// The daemon built with the profile.
pub fn binary(root: &Path) -> PathBuf {
    util::target_dir(root).join("pgo-use/release/trigate")
}

/// The training runs: bench binary and its arguments.
const TRAINING: &[(&str, &[&str])] = &[
    ("bench-api", &["--rounds", "1", "--secs", "3"]),
    (
        "bench-llm",
        &["--rounds", "1", "--secs", "3", "--no-litellm"],
    ),
    ("bench-api", &["mcp", "--rounds", "1", "--secs", "3"]),
];

/// Trains a profile (always anew) and builds the daemon with it.
pub fn train_and_build(root: &Path) -> Result<PathBuf> {
    if !util::is_root()? {
        bail!("training runs the daemon (BPF, cgroups, network namespaces): run as root");
    }
    setup::toolchain()?;
    setup::debian_packages(setup::TEST_PACKAGES)?;
    setup::debian_packages(setup::BENCH_PACKAGES)?;
    let profdata = setup::llvm_profdata(root)?;
    let target = util::target_dir(root);
    let raw = target.join("pgo/raw");
    if raw.exists() {
        std::fs::remove_dir_all(&raw)
            .with_context(|| format!("removing old counts in {}", raw.display()))?;
    }
    std::fs::create_dir_all(&raw).with_context(|| format!("creating {}", raw.display()))?;

    // Build scripts and proc macros are instrumented too (the flags are
    // the host's): their counts go to a directory of their own, and only
    // the daemon's runs write to `raw` (LLVM_PROFILE_FILE below).
    let scratch = target.join("pgo-gen/build-counts");
    let flags = format!("-Cprofile-generate={}", scratch.display());
    run(&mut release_build(root, &target.join("pgo-gen"), &flags)?)?;
    let instrumented = target.join("pgo-gen/release/trigate");

    run(cargo(root).args(["build", "--release", "-p", "trigate-e2e", "--bins"]))?;
    for (bench, args) in TRAINING {
        // %p: one file per process, so two daemons never write one file.
        let mut cmd = Command::new(target.join("release").join(bench));
        cmd.current_dir(root)
            .args(*args)
            .env("TRIGATE_BIN", &instrumented)
            .env("LLVM_PROFILE_FILE", raw.join("trigate-%p.profraw"))
            .env("PATH", util::path_with(&root.join(".venv/bin"))?);
        run(&mut cmd).with_context(|| format!("training run {bench} {}", args.join(" ")))?;
    }

    let counts: Vec<PathBuf> = std::fs::read_dir(&raw)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "profraw"))
        .collect();
    if counts.is_empty() {
        bail!(
            "the training runs left no counts in {}: did the daemon exit cleanly \
             (counts are written at exit)?",
            raw.display()
        );
    }
    let merged = profile_path(root);
    run(Command::new(&profdata)
        .arg("merge")
        .arg("-o")
        .arg(&merged)
        .args(&counts))?;
    build_with_profile(root)
}

/// The release daemon built with the merged profile (a no-op when neither
/// the sources nor the profile changed: rustc lists the profile in its
/// dep-info, so cargo rebuilds after a new training). Trains first if
/// there is no profile yet.
pub fn build(root: &Path) -> Result<PathBuf> {
    if !profile_path(root).exists() {
        return train_and_build(root);
    }
    setup::toolchain()?;
    build_with_profile(root)
}

fn build_with_profile(root: &Path) -> Result<PathBuf> {
    let flags = format!("-Cprofile-use={}", profile_path(root).display());
    let target = util::target_dir(root);
    run(&mut release_build(root, &target.join("pgo-use"), &flags)?)?;
    Ok(binary(root))
}

/// `cargo build --release -p trigate` into `target_dir` with `flags` for
/// code built for this machine (so not for the eBPF object, which
/// gateway/build.rs builds for bpfel-unknown-none).
fn release_build(root: &Path, target_dir: &Path, flags: &str) -> Result<Command> {
    let host = host_triple()?;
    let mut cmd = cargo(root);
    cmd.args(["build", "--release", "-p", "trigate"])
        .env("CARGO_TARGET_DIR", target_dir)
        .env(target_flags_var(&host), flags);
    Ok(cmd)
}

/// `CARGO_TARGET_<TRIPLE>_RUSTFLAGS` for a target triple.
fn target_flags_var(triple: &str) -> String {
    format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        triple.to_ascii_uppercase().replace(['-', '.'], "_")
    )
}

/// The host triple from `rustc -vV`.
pub fn host_triple() -> Result<String> {
    let out = String::from_utf8(output(Command::new("rustc").arg("-vV"))?)
        .context("`rustc -vV` printed non-UTF-8")?;
    parse_host(&out)
        .map(str::to_owned)
        .context("no `host:` line in `rustc -vV`")
}

fn parse_host(vv: &str) -> Option<&str> {
    vv.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_variable_is_cargos_name_for_the_triple() {
        assert_eq!(
            target_flags_var("x86_64-unknown-linux-gnu"),
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS"
        );
        assert_eq!(
            target_flags_var("thumbv7em-none-eabihf.json"),
            "CARGO_TARGET_THUMBV7EM_NONE_EABIHF_JSON_RUSTFLAGS"
        );
    }

    #[test]
    fn host_is_read_from_rustc_verbose_version() {
        let vv = "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\ncommit-hash: 59807616e\nhost: x86_64-unknown-linux-gnu\nrelease: 1.95.0\n";
        assert_eq!(parse_host(vv), Some("x86_64-unknown-linux-gnu"));
        assert_eq!(parse_host("rustc 1.95.0\n"), None);
    }
}
