//! The daemon under test: spawned with a generated config, its JSON log
//! lines collected, its admin API at hand.

use crate::config::Config;
use crate::env::{env, Env};
use crate::http::{http_request, HttpResponse};
use crate::metrics::Metrics;
use crate::names::Uniq;
use crate::node::{remove_pin_dir, Node};
use crate::poll_until;
use crate::process::wait_deadline;
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One stdout line: the parsed JSON object, or the raw text as a JSON
/// string when it is not JSON.
pub type LogLine = Value;

/// How long start-up may take before the test fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `trigate run`. Dropping it sends SIGTERM (SIGKILL after 5 s),
/// removes the pin dir if this daemon was the node's last, and prints the
/// config and output (shown by the test harness only when the test fails).
pub struct Daemon {
    pub env: &'static Env,
    child: Child,
    pid: i32,
    status: Option<ExitStatus>,
    stdout: Arc<Mutex<Vec<LogLine>>>,
    /// Stdout lines containing this are not kept (a benchmark's per-call
    /// audit lines would otherwise pile up in memory).
    skip: Arc<Mutex<Option<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    admin: Option<SocketAddr>,
    dir: PathBuf,
    config_yaml: String,
    pin_dir: PathBuf,
    generation: u64,
    node_generation: Arc<AtomicU64>,
    /// Print config and output when dropped (tests: cargo shows it only for
    /// failures). Tools that ran fine turn it off.
    dump_on_drop: bool,
}

impl Daemon {
    /// Writes `cfg`, spawns the daemon (inside `cgroup` if given) and waits
    /// until it is ready.
    pub fn start(node: &Node, cfg: &Config, cgroup: Option<&Path>) -> Result<Self> {
        let mut d = Self::spawn(node, &cfg.to_yaml(), cgroup)?;
        d.wait_ready(READY_TIMEOUT)?;
        Ok(d)
    }

    /// Spawns `trigate run --config <yaml written to a temp file>` without
    /// waiting for anything (for tests that expect it to fail).
    pub fn spawn(node: &Node, yaml: &str, cgroup: Option<&Path>) -> Result<Self> {
        let env = env()?;
        let dir = std::env::temp_dir().join(Uniq::next().long_name());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("config.yaml");
        std::fs::write(&config, yaml).with_context(|| format!("writing {}", config.display()))?;
        let mut cmd = match cgroup {
            Some(cg) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg(r#"echo $$ > "$1" && shift && exec "$@""#)
                    .arg("sh")
                    .arg(cg.join("cgroup.procs"))
                    .arg(&env.trigate);
                c
            }
            None => Command::new(&env.trigate),
        };
        cmd.arg("run").arg("--config").arg(&config);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.env("RUST_BACKTRACE", "1");
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", env.trigate.display()))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let skip: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let skipping = skip.clone();
        collect_lines(
            child.stdout.take().expect("piped"),
            stdout.clone(),
            move |l| {
                if skipping
                    .lock()
                    .unwrap()
                    .as_deref()
                    .is_some_and(|s| l.contains(s))
                {
                    return None;
                }
                Some(match serde_json::from_str::<Value>(&l) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => Value::String(l),
                })
            },
        );
        collect_lines(child.stderr.take().expect("piped"), stderr.clone(), Some);
        let generation = node.generation.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Self {
            env,
            pid: child.id() as i32,
            child,
            status: None,
            stdout,
            skip,
            stderr,
            admin: None,
            dir,
            config_yaml: yaml.to_string(),
            pin_dir: node.pin_dir(),
            generation,
            node_generation: node.generation.clone(),
            dump_on_drop: true,
        })
    }

    /// Waits for `admin listening` and `GET /readyz` = 200.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let res = poll_until(
            timeout,
            "the daemon to log `admin listening` and answer /readyz with 200",
            || {
                if let Some(status) = self.try_status()? {
                    bail!("the daemon exited during start-up ({status})");
                }
                if self.admin.is_none() {
                    self.admin = self
                        .logs()
                        .iter()
                        .find(|l| log_str(l, "message") == Some("admin listening"))
                        .and_then(|l| log_str(l, "address").and_then(|a| a.parse().ok()));
                }
                let Some(addr) = self.admin else {
                    return Ok(None);
                };
                match http_request(addr, "GET", "/readyz", None) {
                    Ok(r) if r.status == 200 => Ok(Some(())),
                    _ => Ok(None),
                }
            },
        );
        res.map_err(|e| {
            let err = self.stderr_lines();
            let tail = &err[err.len().saturating_sub(20)..];
            anyhow::anyhow!(
                "{e:#}; last daemon stderr lines: {tail:#?} (full output printed with the test's output)"
            )
        })
    }

    /// Whether dropping prints the daemon's config and output.
    pub fn dump_on_drop(&mut self, on: bool) {
        self.dump_on_drop = on;
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The config file the daemon was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// The admin address from the `admin listening` line.
    pub fn admin_addr(&self) -> Result<SocketAddr> {
        self.admin
            .context("the daemon has not logged `admin listening` yet")
    }

    /// From now on, stdout lines containing `text` are read but not kept.
    pub fn skip_lines_containing(&self, text: &str) {
        *self.skip.lock().unwrap() = Some(text.to_owned());
    }

    /// Every stdout line so far.
    pub fn logs(&self) -> Vec<LogLine> {
        self.stdout.lock().unwrap().clone()
    }

    /// Every stderr line so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Access-log lines (`target: trigate::access`).
    pub fn access_logs(&self) -> Vec<LogLine> {
        self.logs().into_iter().filter(is_access_log).collect()
    }

    /// Waits for a log line matching `pred`.
    pub fn wait_for_log(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&LogLine) -> bool,
    ) -> Result<LogLine> {
        poll_until(timeout, what, || {
            Ok(self.logs().into_iter().find(|l| pred(l)))
        })
    }

    /// Waits for an access-log line matching `pred`.
    pub fn wait_for_access_log(
        &self,
        timeout: Duration,
        pred: impl Fn(&LogLine) -> bool,
    ) -> Result<LogLine> {
        poll_until(timeout, "a matching access-log line", || {
            Ok(self.access_logs().into_iter().find(|l| pred(l)))
        })
        .map_err(|e| anyhow::anyhow!("{e:#}; access logs so far: {:#?}", self.access_logs()))
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Result<HttpResponse> {
        let body = body.map(|b| b.to_string());
        http_request(self.admin_addr()?, method, path, body.as_deref())
    }
    pub fn admin_get(&self, path: &str) -> Result<HttpResponse> {
        self.admin("GET", path, None)
    }
    pub fn admin_post(&self, path: &str, body: &Value) -> Result<HttpResponse> {
        self.admin("POST", path, Some(body))
    }
    pub fn admin_delete(&self, path: &str) -> Result<HttpResponse> {
        self.admin("DELETE", path, None)
    }

    /// `GET /metrics`, parsed.
    pub fn metrics(&self) -> Result<Metrics> {
        let r = self.admin_get("/metrics")?;
        if r.status != 200 {
            bail!("GET /metrics: {} {:?}", r.status, r.body);
        }
        Ok(Metrics::parse(&r.body))
    }

    /// Exit status if the process has ended.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().context("waiting for the daemon")?;
        }
        Ok(self.status)
    }

    /// Waits for the process to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        match wait_deadline(&mut self.child, timeout)? {
            Some(s) => {
                self.status = Some(s);
                Ok(s)
            }
            None => bail!("the daemon did not exit within {timeout:?}"),
        }
    }

    /// SIGKILL and reap; pinned links stay behind, as after a crash.
    pub fn sigkill(&mut self) -> Result<()> {
        if self.try_status()?.is_none() {
            kill(Pid::from_raw(self.pid), Signal::SIGKILL).context("SIGKILL")?;
        }
        self.wait_exit(Duration::from_secs(5))?;
        Ok(())
    }

    /// SIGTERM and wait; the daemon must exit 0 within 10 s.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(s) = self.try_status()? {
            bail!("the daemon had already exited ({s}) before SIGTERM");
        }
        kill(Pid::from_raw(self.pid), Signal::SIGTERM).context("SIGTERM")?;
        let s = self.wait_exit(Duration::from_secs(10))?;
        if !s.success() {
            bail!("the daemon exited with {s} after SIGTERM, expected 0");
        }
        Ok(())
    }

    /// Config, stdout and stderr, for failure messages.
    pub fn dump(&self) -> String {
        let out = self.stdout.lock().unwrap();
        let err = self.stderr.lock().unwrap();
        let skip = out.len().saturating_sub(400);
        let mut s = format!(
            "---- daemon pid {} config ----\n{}---- daemon stdout ({} lines{}) ----\n",
            self.pid,
            self.config_yaml,
            out.len(),
            if skip > 0 {
                format!(", first {skip} left out")
            } else {
                String::new()
            }
        );
        for l in out.iter().skip(skip) {
            match l {
                Value::String(t) => s.push_str(t),
                v => s.push_str(&v.to_string()),
            }
            s.push('\n');
        }
        s.push_str(&format!("---- daemon stderr ({} lines) ----\n", err.len()));
        for l in err.iter() {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("---- end of daemon output ----");
        s
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.try_status(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
            if !matches!(
                wait_deadline(&mut self.child, Duration::from_secs(5)),
                Ok(Some(_))
            ) {
                let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
                let _ = self.child.wait();
            }
        }
        // A later daemon of the same instance owns the pins now.
        if self.node_generation.load(Ordering::SeqCst) == self.generation {
            remove_pin_dir(&self.pin_dir);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if self.dump_on_drop {
            eprintln!("{}", self.dump());
        }
    }
}

fn collect_lines<R: Read + Send + 'static, T: Send + 'static>(
    r: R,
    into: Arc<Mutex<Vec<T>>>,
    map: impl Fn(String) -> Option<T> + Send + 'static,
) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    if let Some(item) = map(line) {
                        into.lock().unwrap().push(item);
                    }
                }
            }
        }
    });
}

/// A field of a tracing JSON line: top level (flattened events) or under
/// `fields`.
pub fn log_field<'a>(line: &'a Value, key: &str) -> Option<&'a Value> {
    line.get(key)
        .or_else(|| line.get("fields").and_then(|f| f.get(key)))
}

/// A string field (`None` when missing or not a string).
pub fn log_str<'a>(line: &'a Value, key: &str) -> Option<&'a str> {
    log_field(line, key).and_then(Value::as_str)
}

/// A numeric field, also when it was recorded as a string.
pub fn log_u64(line: &Value, key: &str) -> Option<u64> {
    match log_field(line, key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub fn is_access_log(line: &Value) -> bool {
    line.get("target").and_then(Value::as_str) == Some("trigate::access")
}
