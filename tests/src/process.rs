//! Running helper commands with a deadline, capturing their output.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Fails with both streams when the command did not exit 0.
    pub fn check(self, what: &str) -> Result<Self> {
        if !self.status.success() {
            bail!(
                "{what} failed ({}): stdout={:?} stderr={:?}",
                self.status,
                self.stdout,
                self.stderr
            );
        }
        Ok(self)
    }
}

/// Runs `cmd` to completion, killing it (by its pid) after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<CmdOutput> {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {desc}"))?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = match wait_deadline(&mut child, timeout)? {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out.join().unwrap_or_default();
            let stderr = err.join().unwrap_or_default();
            bail!("{desc} did not finish within {timeout:?}; stdout={stdout:?} stderr={stderr:?}");
        }
    };
    Ok(CmdOutput {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Waits for `child` to exit, at most `timeout`; `None` if still running.
pub(crate) fn wait_deadline(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().context("waiting for child")? {
            return Ok(Some(s));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs a host command that must succeed (setup steps: `ip …`).
pub(crate) fn must(program: &std::path::Path, args: &[&str]) -> Result<CmdOutput> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_with_timeout(cmd, Duration::from_secs(10))?.check(&format!(
        "{} {}",
        program.display(),
        args.join(" ")
    ))
}

/// A file under the temp dir, removed on drop.
pub struct TempFile {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl TempFile {
    pub fn new(name: &str, contents: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(crate::names::Uniq::next().long_name());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        Ok(Self { dir, path })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the trigate binary with `args` (not in any pod), e.g. `check`.
pub fn trigate(args: &[&std::ffi::OsStr]) -> Result<CmdOutput> {
    let env = crate::env::env()?;
    let mut cmd = Command::new(&env.trigate);
    cmd.args(args);
    run_with_timeout(cmd, Duration::from_secs(20))
}
