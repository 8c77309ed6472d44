//! Small helpers: where the workspace is, who we run as, and running commands
//! with errors that say what to check.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

/// The workspace root (xtask lives in `<root>/xtask`).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask/ has a parent directory")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `<root>/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// A `cargo` command run from the workspace root. `cargo` is the rustup proxy
/// from PATH, as when a developer types it.
pub fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root);
    cmd
}

/// Whether this process runs with effective uid 0.
pub fn is_root() -> Result<bool> {
    let status = fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status to find our uid (is /proc mounted?)")?;
    let euid = parse_euid(&status).context("no `Uid:` line in /proc/self/status")?;
    Ok(euid == 0)
}

/// The effective uid from `/proc/self/status` (`Uid: real effective saved fs`).
fn parse_euid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `PATH` with `dir` in front.
pub fn path_with(dir: &Path) -> Result<OsString> {
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    env::join_paths(dirs).context("building PATH (a directory name contains ':'?)")
}

/// The command as a shell-like line, for logs and error messages.
pub fn display(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                format!("'{}'", w.replace('\'', r"'\''"))
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn spawn_context(cmd: &Command) -> String {
    format!(
        "could not start `{}`: is `{}` installed and on PATH?",
        display(cmd),
        cmd.get_program().to_string_lossy()
    )
}

/// Runs `cmd` with inherited stdio (after printing it); fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    eprintln!("$ {line}");
    let status = cmd.status().with_context(|| spawn_context(cmd))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` (after printing it) and returns its stdout; stderr is inherited
/// so build errors stay visible. Fails on a non-zero exit.
pub fn output(cmd: &mut Command) -> Result<Vec<u8>> {
    let line = display(cmd);
    eprintln!("$ {line}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| spawn_context(cmd))?;
    if !out.status.success() {
        bail!("`{line}` failed ({})", out.status);
    }
    Ok(out.stdout)
}

/// Runs `cmd` quietly, for checks: `Ok(Some(stdout))` when it exits 0,
/// `Ok(None)` when it exits non-zero, an error when it cannot start.
pub fn probe(cmd: &mut Command) -> Result<Option<String>> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .with_context(|| spawn_context(cmd))?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Like [`probe`], but a program that is not installed counts as failing.
pub fn probe_optional(cmd: &mut Command) -> Option<String> {
    probe(cmd).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn euid_is_the_second_uid() {
        let status = "Name:\txtask\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_euid(status), Some(0));
        assert_eq!(parse_euid("Name:\tx\n"), None);
    }

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let mut cmd = Command::new("cargo");
        cmd.args(["test", "--", "a b", "it's", ""]);
        assert_eq!(display(&cmd), r"cargo test -- 'a b' 'it'\''s' ''");
    }
}
