//! `cargo xtask bench llm`: what the LLM gate costs per chat completion,
//! next to no proxy, nginx as a plain reverse proxy and LiteLLM's proxy.
//!
//! One fake provider — nginx answering `POST /v1/chat/completions` with a
//! fixed OpenAI `chat.completion` (usage included), keep-alive, on the host
//! side of a pod's veth — and five modes, each driven by `wrk` (POST, Lua
//! script) inside a simulated pod, interleaved in rounds so machine noise
//! hits every mode alike (each round also starts at a different mode):
//! (a) direct — wrk posts to the fake; nothing is attached to its cgroup;
//! (b) llm-openai — wrk posts the same request to the same address; the
//!     eBPF redirect hands the connection to trigate's in-pod listener,
//!     whose LLM gate (destination `gate: llm`) resolves the model, injects
//!     the provider key, forwards to an `openai-compatible` provider (the
//!     same nginx), reads usage, prices it, counts it in the GenAI metrics
//!     and writes the access-log line;
//! (b2) llm-anthropic — as (b), but the client speaks Anthropic
//!     (`POST /v1/messages`): the gate translates to OpenAI and back;
//! (c) nginx — wrk posts to an nginx reverse proxy (1 worker, upstream
//!     keepalive) on 127.0.0.1 in its own pod's netns, which reaches the
//!     fake through that pod's veth: plain proxying, nothing parsed;
//! (d) litellm — wrk posts to LiteLLM's proxy (`litellm --config`, one
//!     uvicorn worker, installed from PyPI into target/bench-venv) on
//!     127.0.0.1 in its own pod's netns, model `gpt-4o-mini` →
//!     `openai/gpt-4o-mini` at the same fake.
//! Modes (b), (b2), (c) and (d) are laid out alike: the client reaches the
//! proxy over the pod's loopback, the proxy reaches the fake over the
//! pod's veth.
//!
//! Per run: requests/s and p50/p99 from `wrk --latency`, and the proxy's
//! CPU time per request (utime+stime delta from /proc of its whole process
//! tree, over requests served). Every run is checked: the fake (nginx
//! `stub_status`) saw the requests wrk reported, and in (b)/(b2) trigate's
//! `gen_ai_client_token_usage_count` and its access log grew by them.
//!
//! Time to first token: a small streaming fake in this process (first SSE
//! chunk at once, the rest 50 ms later) and a client (this binary, run in a
//! pod as `bench-llm ttft-client`) timing request → first `data:` line,
//! directly and through the gate, interleaved with the rounds.
use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use nix::{
    sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal},
    unistd::Pid,
};
use serde_json::{json, Value};
use trigate_e2e::bench::{
    cpu_ticks, find_tool, median, nginx_conf, parse_wrk, peak_rss_kib, tree, upstream_counters,
    TempDir, Wrk,
};
use trigate_e2e::{
    env, free_port, http_request, log_str, Config, Destination, HostPod, Metrics, Node, Pod, Runner,
};

/// Where the nginx proxy listens inside its pod's netns.
const NGINX_PROXY_PORT: u16 = 8080;
/// Where LiteLLM listens inside its pod's netns.
const LITELLM_PORT: u16 = 4000;
/// The LiteLLM release measured (installs on Python 3.11 here).
const LITELLM_VERSION: &str = "1.108.7";
/// Client concurrencies measured, in this order within a round.
const CONNS: [u32; 2] = [32, 1];
/// Share of requests that may fail (socket errors, non-2xx) before a run
/// counts as broken.
const MAX_ERROR_SHARE: f64 = 0.001;
/// The key clients send. The gate replaces it with the provider's; LiteLLM
/// checks it as its master key (it refuses to start without one, and a
/// short one counts as weak).
const POD_KEY: &str = "sk-pod-3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a";
const POD_AUTH: &str =
    "Bearer sk-pod-3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a";
/// The model the TTFT client asks for (served by the streaming fake).
const STREAM_MODEL: &str = "stream-model";
/// The model every other client asks for.
const MODEL: &str = "gpt-4o-mini";
/// What the fake provider says.
const REPLY: &str = "The capital of France is Paris. It has been the capital of the kingdom, then of the republic, for most of the last thousand years, and about 2.1 million people live in the city proper.";
/// The fake's streamed answer is split here: the first part goes out at
/// once, the rest after [`STREAM_REST_DELAY`].
const STREAM_REST_DELAY: Duration = Duration::from_millis(50);
/// Targets from the issue.
const CPU_VS_NGINX: f64 = 1.5;
const RPS_VS_LITELLM: f64 = 300.0;
const ADDED_P50_US: f64 = 100.0;
const ADDED_TTFT_US: f64 = 1000.0;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

struct Args {
    rounds: usize,
    secs: u64,
    litellm: bool,
    ttft_requests: usize,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("ttft-client") {
        return ttft_client(&args[1..]);
    }
    let mut a = Args {
        rounds: 3,
        secs: 4,
        litellm: true,
        ttft_requests: 40,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => a.rounds = it.next().context("--rounds N")?.parse()?,
            "--secs" => a.secs = it.next().context("--secs S")?.parse()?,
            "--ttft-requests" => {
                a.ttft_requests = it.next().context("--ttft-requests N")?.parse()?
            }
            "--no-litellm" => a.litellm = false,
            "llm" => {}
            other => bail!(
                "unknown argument {other:?} (use --rounds N --secs S --ttft-requests N --no-litellm)"
            ),
        }
    }
    if a.rounds == 0 || a.secs == 0 || a.ttft_requests == 0 {
        bail!("--rounds, --secs and --ttft-requests must be at least 1");
    }
    // Ctrl-C reaches wrk, nginx, LiteLLM and trigate too (one process
    // group): they stop, the current step fails, and the drops below
    // remove namespaces and cgroups on the way out.
    let action = SigAction::new(
        SigHandler::Handler(on_sigint),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    unsafe { sigaction(Signal::SIGINT, &action) }?;
    bench(&a)
}

// ----------------------------------------------------------- what is sent

/// The fake provider's answer, as OpenAI sends it.
fn completion_json() -> String {
    json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": REPLY, "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": 25,
            "completion_tokens": 36,
            "total_tokens": 61,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        },
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306"
    })
    .to_string()
}

const PROMPT: &str = "What is the capital of France? Answer in two sentences.";

fn openai_request(model: &str, stream: bool) -> String {
    let mut v = json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": PROMPT}
        ]
    });
    if stream {
        v["stream"] = json!(true);
    }
    v.to_string()
}

fn anthropic_request() -> String {
    json!({
        "model": MODEL,
        "max_tokens": 256,
        "system": "You are a helpful assistant.",
        "messages": [{"role": "user", "content": PROMPT}]
    })
    .to_string()
}

/// The client's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    OpenAi,
    Anthropic,
}

impl Wire {
    fn headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Wire::OpenAi => &[
                ("Content-Type", "application/json"),
                ("Authorization", POD_AUTH),
            ],
            Wire::Anthropic => &[
                ("Content-Type", "application/json"),
                ("x-api-key", POD_KEY),
                ("anthropic-version", "2023-06-01"),
            ],
        }
    }

    fn body(self) -> String {
        match self {
            Wire::OpenAi => openai_request(MODEL, false),
            Wire::Anthropic => anthropic_request(),
        }
    }

    /// The answer's text, if the body is a well-formed answer.
    fn reply_text(self, body: &str) -> Option<String> {
        let v: Value = serde_json::from_str(body).ok()?;
        let t = match self {
            Wire::OpenAi => &v["choices"][0]["message"]["content"],
            Wire::Anthropic => &v["content"][0]["text"],
        };
        t.as_str().map(str::to_owned)
    }

    /// wrk's Lua script for this protocol.
    fn wrk_script(self) -> String {
        let mut s = "wrk.method = \"POST\"\n".to_string();
        s.push_str(&format!("wrk.body = {}\n", lua_string(&self.body())));
        for (k, v) in self.headers() {
            s.push_str(&format!(
                // `[ [[k]] ]`: `[[[` would open a long string.
                "wrk.headers[ {} ] = {}\n",
                lua_string(k),
                lua_string(v)
            ));
        }
        s
    }
}

/// A Lua long string that cannot end early: `[==[ … ]==]`.
fn lua_string(s: &str) -> String {
    let mut eq = String::new();
    while s.contains(&format!("]{eq}]")) {
        eq.push('=');
    }
    format!("[{eq}[{s}]{eq}]")
}

// ------------------------------------------------------------------- wrk

// ------------------------------------------------------------- processes

fn clock_hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// A child we started: SIGTERM on drop, SIGKILL after 5 s, then SIGKILL to
/// any descendant seen that is still ours (same comm). By pid only.
struct Proc {
    what: &'static str,
    child: Child,
    /// Descendants seen while running, with their comm.
    seen: Vec<(i32, String)>,
    /// Its output files.
    dir: TempDir,
    /// Its config, if it has one of its own.
    conf: Option<TempDir>,
}

impl Proc {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The process and its current descendants (remembered for the drop).
    fn pids(&mut self) -> Vec<i32> {
        let all = tree(self.pid());
        for &p in &all[1..] {
            if !self.seen.iter().any(|(q, _)| *q == p) {
                if let Ok(c) = std::fs::read_to_string(format!("/proc/{p}/comm")) {
                    self.seen.push((p, c.trim().to_owned()));
                }
            }
        }
        all
    }

    fn cpu_ticks(&mut self) -> Result<u64> {
        // A child that exited between listing and reading counts 0.
        Ok(self
            .pids()
            .into_iter()
            .map(|p| cpu_ticks(p).unwrap_or(0))
            .sum())
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.0.join(name)).unwrap_or_default()
    }

    fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                eprintln!("{} ignored SIGTERM: SIGKILL", self.what);
                let _ = kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
                let _ = self.child.wait();
            }
        }
        for (p, comm) in &self.seen {
            if std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm) {
                let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
            }
        }
    }
}

/// Spawns `program args` in `runner` (its cgroup, and its netns if any),
/// output to files in a temp dir.
fn spawn(
    what: &'static str,
    runner: &impl Runner,
    program: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Result<Proc> {
    let dir = TempDir::new(what)?;
    let mut cmd = runner.command(program, args);
    cmd.envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.0.join("stdout"))?,
        )
        .stderr(File::create(dir.0.join("stderr"))?);
    // `sh` and `ip netns exec` both exec: the child's pid is the program's.
    let child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", program.display()))?;
    Ok(Proc {
        what,
        child,
        seen: Vec::new(),
        dir,
        conf: None,
    })
}

/// Starts nginx (master + 1 worker) with `http` as the body of its
/// `http {}` block and waits until its worker runs.
fn start_nginx(nginx: &Path, runner: &impl Runner, what: &'static str, http: &str) -> Result<Proc> {
    let dir = TempDir::new(&format!("{what}-conf"))?;
    let d = dir.0.display();
    let conf = nginx_conf(&dir.0, http);
    let conf_path = dir.0.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let err_log = dir.0.join("error.log");
    let prefix = format!("{d}/");
    let mut p = spawn(
        what,
        runner,
        nginx,
        &[
            "-p",
            &prefix,
            "-c",
            &conf_path.to_string_lossy(),
            "-e",
            &err_log.to_string_lossy(),
        ],
        &[],
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = p.exited()? {
            bail!(
                "nginx ({what}) exited during start-up ({status}): {}{}",
                p.file("stderr"),
                std::fs::read_to_string(&err_log).unwrap_or_default()
            );
        }
        if p.pids().len() > 1 {
            p.conf = Some(dir);
            return Ok(p);
        }
        if Instant::now() >= deadline {
            bail!(
                "nginx ({what}) started no worker within 10 s: {}",
                std::fs::read_to_string(&err_log).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The fake's counters once no proxy is still sending it requests left
/// over from the previous run (LiteLLM works through its queue after wrk
/// has gone).
fn quiet_upstream(addr: SocketAddr) -> Result<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = upstream_counters(addr)?;
    loop {
        thread::sleep(Duration::from_millis(200));
        let now = upstream_counters(addr)?;
        // Only our own status read in between.
        if now.1 == last.1 + 1 {
            return Ok(now);
        }
        if Instant::now() >= deadline {
            bail!("the fake provider still gets requests 30 s after the last run");
        }
        last = now;
    }
}

// ------------------------------------------------------------ the daemon

/// trigate run with stdout (JSON logs, access log included) appended to a
/// file, as a container runtime would take it: the harness's `Daemon`
/// keeps every line parsed in memory, which at tens of thousands of
/// requests a second would cost this process more than the daemon.
struct Gate {
    proc: Proc,
    admin: SocketAddr,
}

impl Gate {
    fn start(runner: &HostPod, cfg: &Config) -> Result<Gate> {
        let env = env()?;
        let conf = TempDir::new("trigate-conf")?;
        let path = conf.0.join("config.yaml");
        std::fs::write(&path, cfg.to_yaml())?;
        let mut proc = spawn(
            "trigate",
            runner,
            &env.trigate,
            &["run", "--config", &path.to_string_lossy()],
            &[("BENCH_PROVIDER_KEY", "sk-provider")],
        )?;
        proc.conf = Some(conf);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut admin = None;
        loop {
            if let Some(s) = proc.exited()? {
                bail!(
                    "trigate exited during start-up ({s}): {}{}",
                    proc.file("stdout"),
                    proc.file("stderr")
                );
            }
            if admin.is_none() {
                admin = proc.file("stdout").lines().find_map(|l| {
                    let v: Value = serde_json::from_str(l).ok()?;
                    (log_str(&v, "message") == Some("admin listening"))
                        .then(|| log_str(&v, "address")?.parse::<SocketAddr>().ok())?
                });
            }
            if let Some(a) = admin {
                if http_request(a, "GET", "/readyz", None).is_ok_and(|r| r.status == 200) {
                    return Ok(Gate { proc, admin: a });
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "trigate not ready within 20 s: {}{}",
                    proc.file("stdout"),
                    proc.file("stderr")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> i32 {
        self.proc.pid()
    }

    fn metrics(&self) -> Result<Metrics> {
        let r = http_request(self.admin, "GET", "/metrics", None)?;
        ensure!(r.status == 200, "GET /metrics: {} {:?}", r.status, r.body);
        Ok(Metrics::parse(&r.body))
    }

    /// Requests the LLM gate accounted: (token-usage observations of input
    /// tokens, `trigate_http_requests_total{gate="llm",status="200"}`).
    fn counted(&self) -> Result<(f64, f64)> {
        let m = self.metrics()?;
        Ok((
            m.sum(
                "gen_ai_client_token_usage_count",
                &[("gen_ai_token_type", "input")],
            ),
            m.sum(
                "trigate_http_requests_total",
                &[("gate", "llm"), ("status", "200")],
            ),
        ))
    }

    fn log_path(&self) -> PathBuf {
        self.proc.dir.0.join("stdout")
    }

    /// Empties the log file (the daemon appends: its next line lands at 0).
    fn truncate_log(&self) -> Result<()> {
        OpenOptions::new()
            .write(true)
            .open(self.log_path())?
            .set_len(0)?;
        Ok(())
    }

    /// LLM request lines in the log file now.
    fn llm_log_lines(&self) -> Result<u64> {
        let f = File::open(self.log_path())?;
        let mut n = 0;
        for line in BufReader::new(f).lines() {
            let line = line?;
            // Cheap pre-filter; the parse confirms.
            if !line.contains("\"request\"") {
                continue;
            }
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if log_str(&v, "message") == Some("request") && log_str(&v, "gate") == Some("llm") {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

// --------------------------------------------------------------- LiteLLM

/// target/bench-venv with litellm[proxy] at [`LITELLM_VERSION`]; installed
/// when missing or at another version.
fn litellm_venv() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/bench-llm
    let target = exe
        .parent()
        .and_then(Path::parent)
        .context("where is the target dir?")?;
    let venv = target.join("bench-venv");
    let py = venv.join("bin/python3");
    let installed = Command::new(&py)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if installed.as_deref() == Some(LITELLM_VERSION) && venv.join("bin/litellm").exists() {
        return Ok(venv);
    }
    eprintln!(
        "installing litellm[proxy]=={LITELLM_VERSION} into {} (a few minutes, once)",
        venv.display()
    );
    if !py.exists() {
        let st = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("python3 -m venv (Debian package python3-venv)")?;
        ensure!(st.success(), "python3 -m venv {} failed", venv.display());
    }
    let st = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet"])
        .arg(format!("litellm[proxy]=={LITELLM_VERSION}"))
        .status()
        .context("pip install litellm[proxy]")?;
    ensure!(
        st.success(),
        "pip install litellm[proxy]=={LITELLM_VERSION} failed"
    );
    Ok(venv)
}

/// LiteLLM's proxy in `pod` on 127.0.0.1:[`LITELLM_PORT`], one worker,
/// the fake as its only model; waits until it answers a completion.
fn start_litellm(venv: &Path, pod: &Pod, upstream: SocketAddr) -> Result<Proc> {
    let dir = TempDir::new("litellm-conf")?;
    let conf = dir.0.join("config.yaml");
    std::fs::write(
        &conf,
        format!(
            "model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: http://{upstream}/v1
      api_key: sk-x
general_settings:
  master_key: {POD_KEY}
litellm_settings:
  telemetry: false
"
        ),
    )?;
    let port = LITELLM_PORT.to_string();
    let mut p = spawn(
        "litellm",
        pod,
        &venv.join("bin/litellm"),
        &[
            "--config",
            &conf.to_string_lossy(),
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--num_workers",
            "1",
        ],
        // The pod has no route out: use the cost map shipped in the package
        // rather than trying to fetch one.
        &[
            ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
            ("LITELLM_LOG", "ERROR"),
            ("PYTHONUNBUFFERED", "1"),
        ],
    )?;
    let url = format!("http://127.0.0.1:{LITELLM_PORT}/v1/chat/completions");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        check_interrupted()?;
        if let Some(s) = p.exited()? {
            bail!(
                "litellm exited during start-up ({s}): {}{}",
                p.file("stdout"),
                p.file("stderr")
            );
        }
        if let Ok(text) = post(pod, &url, Wire::OpenAi) {
            if Wire::OpenAi.reply_text(&text).as_deref() == Some(REPLY) {
                p.conf = Some(dir);
                return Ok(p);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "litellm did not answer within 180 s: {}{}",
                p.file("stdout"),
                p.file("stderr")
            );
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// One POST with curl from `pod`: the body of a 200 answer.
fn post(pod: &Pod, url: &str, wire: Wire) -> Result<String> {
    let env = env()?;
    let body = wire.body();
    let mut args = vec![
        "-sS",
        "--noproxy",
        "*",
        "--max-time",
        "10",
        "--fail-with-body",
        "-X",
        "POST",
    ];
    let headers: Vec<String> = wire
        .headers()
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    for h in &headers {
        args.extend(["-H", h]);
    }
    args.extend(["--data-binary", &body, url]);
    let out = pod.run(&env.curl, &args, Duration::from_secs(20))?;
    ensure!(
        out.success(),
        "curl {url} from {}: {} {}{}",
        pod.name,
        out.status,
        out.stdout,
        out.stderr
    );
    Ok(out.stdout)
}

// ----------------------------------------------------------------- modes

/// The proxy a mode goes through, whose CPU time is measured.
enum Proxy<'a> {
    None,
    Gate(&'a Gate),
    Other(&'a std::cell::RefCell<Proc>),
}

impl Proxy<'_> {
    fn cpu_ticks(&self) -> Result<u64> {
        match self {
            Proxy::None => Ok(0),
            Proxy::Gate(g) => tree(g.pid()).into_iter().map(cpu_ticks).sum(),
            Proxy::Other(p) => p.borrow_mut().cpu_ticks(),
        }
    }
}

struct Mode<'a> {
    name: &'static str,
    pod: &'a Pod,
    url: String,
    wire: Wire,
    script: PathBuf,
    proxy: Proxy<'a>,
}

/// One measured run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    wrk: Wrk,
    /// Proxy CPU time per request, µs.
    cpu_us_per_req: Option<f64>,
    /// Proxy CPU time over the run's wall time, % of one core.
    cpu_pct: Option<f64>,
    /// Connections the fake accepted during the run.
    upstream_conns: u64,
}

fn run_mode(wrk: &Path, mode: &Mode, upstream: SocketAddr, conns: u32, secs: u64) -> Result<Run> {
    check_interrupted()?;
    let threads = conns.min(2).to_string();
    let conns_s = conns.to_string();
    let duration = format!("{secs}s");
    if let Proxy::Gate(g) = mode.proxy {
        g.truncate_log()?;
    }
    let up_before = quiet_upstream(upstream)?;
    let gate_before = match mode.proxy {
        Proxy::Gate(g) => Some(g.counted()?),
        _ => None,
    };
    let cpu_before = mode.proxy.cpu_ticks()?;
    let script = mode.script.to_string_lossy();
    let out = mode.pod.run(
        wrk,
        &[
            "-t",
            &threads,
            "-c",
            &conns_s,
            "-d",
            &duration,
            "--timeout",
            "5s",
            "--latency",
            "-s",
            &script,
            &mode.url,
        ],
        Duration::from_secs(secs + 60),
    )?;
    let cpu_after = mode.proxy.cpu_ticks()?;
    let gate_after = match mode.proxy {
        Proxy::Gate(g) => Some(g.counted()?),
        _ => None,
    };
    let up_after = upstream_counters(upstream)?;
    if !out.success() {
        bail!(
            "wrk in {} failed ({}): {}{}",
            mode.pod.name,
            out.status,
            out.stdout,
            out.stderr
        );
    }
    // wrk reports a broken script on stderr and then runs without it.
    if !out.stderr.trim().is_empty() {
        bail!("wrk in {} complained: {}", mode.pod.name, out.stderr);
    }
    let w = parse_wrk(&out.stdout).with_context(|| format!("wrk output {:?}", out.stdout))?;
    let n = w.requests;
    if n == 0 || w.errors as f64 > n as f64 * MAX_ERROR_SHARE {
        let tail = match mode.proxy {
            Proxy::Gate(g) => {
                let log = std::fs::read_to_string(g.log_path()).unwrap_or_default();
                let lines: Vec<&str> = log.lines().filter(|l| l.contains("\"request\"")).collect();
                format!(
                    "; trigate's last request log lines:\n{}",
                    lines[lines.len().saturating_sub(3)..].join("\n")
                )
            }
            _ => String::new(),
        };
        bail!(
            "{n} requests with {} errors (socket errors or non-2xx): {}{tail}",
            w.errors,
            out.stdout
        );
    }
    // Every mode reached the fake with (about) the requests wrk counted; a
    // proxy may have some in flight when wrk stops. The status read itself
    // is one connection and one request.
    let slack = 2 * conns as u64 + 8;
    let up_requests = up_after.1 - up_before.1 - 1;
    if up_requests < n || up_requests > n + slack {
        bail!("the fake provider served {up_requests} requests while wrk counted {n}");
    }
    if let (Proxy::Gate(g), Some(b), Some(a)) = (&mode.proxy, gate_before, gate_after) {
        let (usage, ok) = (a.0 - b.0, a.1 - b.1);
        if usage < n as f64 || usage > (n + slack) as f64 {
            bail!(
                "trigate accounted token usage for {usage} requests while wrk counted {n}: the mode bypassed the llm gate"
            );
        }
        if ok > 0.0 && (ok < n as f64 || ok > (n + slack) as f64) {
            bail!("trigate counted {ok} llm requests with 200 while wrk counted {n}");
        }
        // The access log is written off the request path: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut lines = g.llm_log_lines()?;
        while lines < n && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
            lines = g.llm_log_lines()?;
        }
        if lines < n || lines > n + slack {
            bail!("trigate wrote {lines} llm access-log lines while wrk counted {n}");
        }
    }
    let cpu_secs = (cpu_after - cpu_before) as f64 / clock_hz();
    let proxied = !matches!(mode.proxy, Proxy::None);
    if proxied && cpu_after == cpu_before {
        bail!(
            "{}: the proxy's processes spent no CPU time serving {n} requests: they are not the ones serving",
            mode.name
        );
    }
    Ok(Run {
        wrk: w,
        cpu_us_per_req: proxied.then(|| cpu_secs * 1e6 / n as f64),
        cpu_pct: proxied.then(|| cpu_secs / w.secs * 100.0),
        upstream_conns: up_after.0 - up_before.0 - 1,
    })
}

// ----------------------------------------------------- time to first token

/// A streaming chat-completions fake: per request, the response head and
/// the first SSE chunk at once, the rest [`STREAM_REST_DELAY`] later.
/// Keep-alive; one thread per connection. Counts requests.
fn start_stream_fake(addr: SocketAddr) -> Result<Arc<AtomicU64>> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    // The thread ends with the process; the listener address goes away with
    // the pod's veth.
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let count = count.clone();
            thread::spawn(move || {
                let _ = serve_stream(conn, &count);
            });
        }
    });
    Ok(served)
}

/// Reads one HTTP/1.1 request (head + Content-Length body); `None` at EOF.
/// Returns whether the client asked to close.
fn read_request(r: &mut BufReader<TcpStream>) -> Result<Option<bool>> {
    let mut len = 0usize;
    let mut close = false;
    let mut first = true;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return if first {
                Ok(None)
            } else {
                bail!("EOF in request head")
            };
        }
        first = false;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                len = v.parse()?;
            } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Some(close))
}

fn sse_chunk(event: &str) -> String {
    format!("{:x}\r\n{event}\r\n", event.len())
}

fn stream_event(delta: Value, finish: Value, usage: Option<Value>) -> String {
    let mut c = json!({
        "id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": 1741570283,
        "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_06737a9306",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    if let Some(u) = usage {
        c["choices"] = json!([]);
        c["usage"] = u;
    }
    format!("data: {c}\n\n")
}

fn serve_stream(conn: TcpStream, served: &AtomicU64) -> Result<()> {
    conn.set_nodelay(true)?;
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    while let Some(close) = read_request(&mut r)? {
        served.fetch_add(1, Ordering::SeqCst);
        let first = stream_event(
            json!({"role": "assistant", "content": "The", "refusal": null}),
            Value::Null,
            None,
        );
        w.write_all(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n{}",
                sse_chunk(&first)
            )
            .as_bytes(),
        )?;
        thread::sleep(STREAM_REST_DELAY);
        let mut rest = String::new();
        for part in [" capital", " of France", " is Paris."] {
            rest.push_str(&sse_chunk(&stream_event(
                json!({"content": part}),
                Value::Null,
                None,
            )));
        }
        rest.push_str(&sse_chunk(&stream_event(json!({}), json!("stop"), None)));
        rest.push_str(&sse_chunk(&stream_event(
            json!({}),
            Value::Null,
            Some(json!({"prompt_tokens": 25, "completion_tokens": 6, "total_tokens": 31})),
        )));
        rest.push_str(&sse_chunk("data: [DONE]\n\n"));
        rest.push_str("0\r\n\r\n");
        w.write_all(rest.as_bytes())?;
        if close {
            break;
        }
    }
    Ok(())
}

/// `bench-llm ttft-client ADDR N`: N streamed completions, one connection
/// each; prints the µs from sending the request to the first `data:` line
/// of the body, one figure per line.
fn ttft_client(args: &[String]) -> Result<()> {
    let addr: SocketAddr = args.first().context("ttft-client ADDR N")?.parse()?;
    let n: usize = args.get(1).context("ttft-client ADDR N")?.parse()?;
    let body = openai_request(STREAM_MODEL, true);
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAuthorization: {POD_AUTH}\r\nAccept: text/event-stream\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut out = String::new();
    for _ in 0..n {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let start = Instant::now();
        s.write_all(req.as_bytes())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        let mut ttft = None;
        loop {
            let k = s.read(&mut chunk)?;
            if k == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..k]);
            if ttft.is_none() {
                if let Some(head_end) = find(&buf, b"\r\n\r\n") {
                    ensure!(
                        buf.starts_with(b"HTTP/1.1 200"),
                        "answer: {}",
                        String::from_utf8_lossy(&buf)
                    );
                    if find(&buf[head_end..], b"data:").is_some() {
                        ttft = Some(start.elapsed());
                    }
                }
            }
        }
        let t = ttft.with_context(|| {
            format!(
                "no SSE data in the answer: {}",
                String::from_utf8_lossy(&buf)
            )
        })?;
        ensure!(
            find(&buf, b"[DONE]").is_some() && find(&buf, b" is Paris.").is_some(),
            "the stream did not end well: {}",
            String::from_utf8_lossy(&buf)
        );
        out.push_str(&format!("{:.1}\n", t.as_secs_f64() * 1e6));
    }
    print!("{out}");
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Runs the TTFT client in `pod`: the TTFTs, µs.
fn ttft(pod: &Pod, addr: SocketAddr, n: usize) -> Result<Vec<f64>> {
    check_interrupted()?;
    let exe = std::env::current_exe()?;
    let out = pod.run(
        &exe,
        &["ttft-client", &addr.to_string(), &n.to_string()],
        Duration::from_secs(60 + n as u64),
    )?;
    ensure!(
        out.success(),
        "ttft-client in {}: {} {}{}",
        pod.name,
        out.status,
        out.stdout,
        out.stderr
    );
    let v: Vec<f64> = out
        .stdout
        .lines()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    ensure!(v.len() == n, "ttft-client printed {} figures", v.len());
    Ok(v)
}

// ------------------------------------------------------------------ bench

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

fn bench(a: &Args) -> Result<()> {
    let (rounds, secs) = (a.rounds, a.secs);
    let nginx = find_tool("nginx")?;
    let wrk = find_tool("wrk")?;
    let venv = if a.litellm {
        Some(litellm_venv()?)
    } else {
        None
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    eprintln!("$ {command}");

    // Programs attach to `node`'s cgroup only; `free` never has any, so the
    // direct, nginx and LiteLLM pods and the fakes pay nothing for eBPF.
    let node = Node::new()?;
    let free = Node::new()?;
    let gate_pod = node.pod("trigate")?;
    let direct_pod = free.pod("direct")?;
    let nginx_pod = free.pod("nginx")?;
    let litellm_pod = free.pod("litellm")?;
    let upstream_cg: HostPod = free.host_pod("upstream")?;
    let daemon_cg: HostPod = free.host_pod("daemon")?;
    let up_ip = IpAddr::V4(gate_pod.host_ip);
    for p in [&direct_pod, &nginx_pod, &litellm_pod] {
        p.route_to(up_ip)?;
    }

    let upstream = SocketAddr::new(up_ip, free_port(up_ip)?);
    let _fake = start_nginx(
        &nginx,
        &upstream_cg,
        "upstream",
        &format!(
            "    server {{
        listen {upstream};
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 '{}';
        }}
        location = /__status {{ stub_status; }}
    }}",
            completion_json()
        ),
    )?;
    let proxy_nginx = std::cell::RefCell::new(start_nginx(
        &nginx,
        &nginx_pod,
        "proxy",
        &format!(
            "    upstream llm {{
        server {upstream};
        keepalive 32;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{NGINX_PROXY_PORT};
        location / {{
            proxy_pass http://llm;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}"
        ),
    )?);
    let stream_addr = SocketAddr::new(up_ip, free_port(up_ip)?);
    let stream_served = start_stream_fake(stream_addr)?;

    let cfg = node
        .config()
        .listener_in_pod()
        // The shipped default: access lines (one per request) included.
        .set("/log/level", json!("info"))
        .set("/intercept/heartbeat_interval_ms", json!(1000))
        .set("/intercept/heartbeat_timeout_ms", json!(5000))
        .destination(
            Destination::redirect("llm")
                .addr(up_ip)
                .port(upstream.port())
                .gate("llm"),
        )
        .destination(
            Destination::redirect("llm-stream")
                .addr(up_ip)
                .port(stream_addr.port())
                .gate("llm"),
        )
        .set(
            "/llm",
            json!({
                "providers": [
                    {"name": "fake", "kind": "openai-compatible",
                     "url": format!("http://{upstream}/v1"), "api_key": {"env": "BENCH_PROVIDER_KEY"}},
                    {"name": "fake-stream", "kind": "openai-compatible",
                     "url": format!("http://{stream_addr}/v1"), "api_key": {"env": "BENCH_PROVIDER_KEY"}},
                ],
                "models": [
                    {"name": MODEL, "targets": [{"provider": "fake", "model": MODEL}]},
                    {"name": STREAM_MODEL, "targets": [{"provider": "fake-stream", "model": MODEL}]},
                ],
                "prices": [{"model": "gpt-4o-mini*", "input_per_mtok": 0.15, "output_per_mtok": 0.6}],
            }),
        )
        .workload(gate_pod.workload());
    let gate = Gate::start(&daemon_cg, &cfg)?;

    let litellm = match &venv {
        Some(v) => {
            eprintln!("starting LiteLLM {LITELLM_VERSION} (slow imports)…");
            Some(std::cell::RefCell::new(start_litellm(
                v,
                &litellm_pod,
                upstream,
            )?))
        }
        None => None,
    };

    let scripts = TempDir::new("wrk")?;
    let script = |wire: Wire| -> Result<PathBuf> {
        let p = scripts.0.join(format!("{wire:?}.lua"));
        std::fs::write(&p, wire.wrk_script())?;
        Ok(p)
    };
    let (oa_lua, an_lua) = (script(Wire::OpenAi)?, script(Wire::Anthropic)?);
    let up_url = format!("http://{upstream}/v1/chat/completions");
    let mut modes = vec![
        Mode {
            name: "direct",
            pod: &direct_pod,
            url: up_url.clone(),
            wire: Wire::OpenAi,
            script: oa_lua.clone(),
            proxy: Proxy::None,
        },
        Mode {
            name: "llm-openai",
            pod: &gate_pod,
            url: up_url,
            wire: Wire::OpenAi,
            script: oa_lua.clone(),
            proxy: Proxy::Gate(&gate),
        },
        Mode {
            name: "llm-anthropic",
            pod: &gate_pod,
            url: format!("http://{upstream}/v1/messages"),
            wire: Wire::Anthropic,
            script: an_lua,
            proxy: Proxy::Gate(&gate),
        },
        Mode {
            name: "nginx",
            pod: &nginx_pod,
            url: format!("http://127.0.0.1:{NGINX_PROXY_PORT}/v1/chat/completions"),
            wire: Wire::OpenAi,
            script: oa_lua.clone(),
            proxy: Proxy::Other(&proxy_nginx),
        },
    ];
    if let Some(l) = &litellm {
        modes.push(Mode {
            name: "litellm",
            pod: &litellm_pod,
            url: format!("http://127.0.0.1:{LITELLM_PORT}/v1/chat/completions"),
            wire: Wire::OpenAi,
            script: oa_lua,
            proxy: Proxy::Other(l),
        });
    }
    let (direct, gate_oa, gate_an, ngx) = (0, 1, 2, 3);
    let lite = litellm.as_ref().map(|_| 4);

    // Each path answers what its client expects (wrk only counts statuses).
    for m in &modes {
        let body = post(m.pod, &m.url, m.wire).with_context(|| format!("check of {}", m.name))?;
        ensure!(
            m.wire.reply_text(&body).as_deref() == Some(REPLY),
            "{} answered {body}",
            m.name
        );
    }

    // What each proxy burns doing nothing (timers, heartbeat, LiteLLM's
    // background tasks): part of every CPU-per-request figure.
    let idle = Duration::from_secs(2);
    let idle_before: Vec<u64> = modes
        .iter()
        .map(|m| m.proxy.cpu_ticks())
        .collect::<Result<_>>()?;
    thread::sleep(idle);
    let idle_pct: Vec<f64> = modes
        .iter()
        .zip(&idle_before)
        .map(|(m, b)| {
            Ok((m.proxy.cpu_ticks()? - b) as f64 / clock_hz() / idle.as_secs_f64() * 100.0)
        })
        .collect::<Result<_>>()?;

    // Warm-up (pools, page cache, LiteLLM's lazy imports), also a first
    // check of every path and its accounting.
    for m in &modes {
        run_mode(&wrk, m, upstream, CONNS[0], 1)
            .with_context(|| format!("warm-up of {}", m.name))?;
    }
    ttft(&direct_pod, stream_addr, 5).context("TTFT warm-up, direct")?;
    ttft(&gate_pod, stream_addr, 5).context("TTFT warm-up, through the gate")?;

    // results[conns index][mode index][round]
    let mut results: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); modes.len()]; CONNS.len()];
    // ttfts[0 direct | 1 gate][round]
    let mut ttfts: [Vec<Vec<f64>>; 2] = [Vec::new(), Vec::new()];
    let stream_before = stream_served.load(Ordering::SeqCst);
    let usage_before = gate.metrics()?.sum(
        "gen_ai_client_token_usage_count",
        &[
            ("gen_ai_token_type", "input"),
            ("gen_ai_request_model", STREAM_MODEL),
        ],
    );
    for round in 0..rounds {
        for (ci, &conns) in CONNS.iter().enumerate() {
            for k in 0..modes.len() {
                let i = (round + k) % modes.len();
                let r = run_mode(&wrk, &modes[i], upstream, conns, secs).with_context(|| {
                    format!("round {round} of {} at {conns} connections", modes[i].name)
                })?;
                results[ci][i].push(r);
            }
        }
        // TTFT, direct and gated in alternating order.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let pod = if which == 0 { &direct_pod } else { &gate_pod };
            ttfts[which].push(ttft(pod, stream_addr, a.ttft_requests)?);
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }
    let stream_requests = stream_served.load(Ordering::SeqCst) - stream_before;
    let want = (2 * rounds * a.ttft_requests) as u64;
    ensure!(
        stream_requests == want,
        "the streaming fake served {stream_requests} requests, expected {want}"
    );
    let usage_streamed = gate.metrics()?.sum(
        "gen_ai_client_token_usage_count",
        &[
            ("gen_ai_token_type", "input"),
            ("gen_ai_request_model", STREAM_MODEL),
        ],
    ) - usage_before;
    ensure!(
        usage_streamed == (rounds * a.ttft_requests) as f64,
        "the gate accounted {usage_streamed} streamed requests, expected {}",
        rounds * a.ttft_requests
    );

    let rss_gate = peak_rss_kib(gate.pid());
    let rss_nginx: u64 = proxy_nginx
        .borrow_mut()
        .pids()
        .into_iter()
        .map(peak_rss_kib)
        .sum();
    let rss_litellm: Option<u64> = litellm
        .as_ref()
        .map(|l| l.borrow_mut().pids().into_iter().map(peak_rss_kib).sum());

    println!("\n$ {command}");
    println!(
        "cargo xtask bench llm — {rounds} interleaved rounds of {secs} s wrk runs per mode and concurrency (non-streaming chat completion); medians of the rounds; proxy CPU from /proc utime+stime of the proxy's process tree"
    );
    println!("| mode | conns | req/s | p50 µs | p99 µs | proxy CPU µs/req | proxy CPU % of a core | CPU/req vs nginx | req/s vs LiteLLM | fake conns opened |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let per_round = |ci: usize, a: usize, b: usize, f: &dyn Fn(&Run, &Run) -> f64| {
        median(
            results[ci][a]
                .iter()
                .zip(&results[ci][b])
                .map(|(x, y)| f(x, y))
                .collect(),
        )
    };
    let cpu = |r: &Run| r.cpu_us_per_req.unwrap_or(f64::NAN);
    for (ci, conns) in CONNS.iter().enumerate() {
        for (i, m) in modes.iter().enumerate() {
            let rs = &results[ci][i];
            let med = |f: &dyn Fn(&Run) -> f64| median(rs.iter().map(f).collect());
            let opt = |f: &dyn Fn(&Run) -> Option<f64>, prec: usize| {
                rs.iter()
                    .map(f)
                    .collect::<Option<Vec<_>>>()
                    .map(median)
                    .map(|v| format!("{v:.prec$}"))
                    .unwrap_or_else(|| "–".into())
            };
            let vs_nginx = if i == direct {
                "–".into()
            } else {
                format!("{:.2}×", per_round(ci, i, ngx, &|x, n| cpu(x) / cpu(n)))
            };
            let vs_lite = match lite {
                Some(l) => format!("{:.0}×", per_round(ci, i, l, &|x, y| x.wrk.rps / y.wrk.rps)),
                None => "–".into(),
            };
            println!(
                "| {} | {conns} | {:.0} | {:.0} | {:.0} | {} | {} | {vs_nginx} | {vs_lite} | {:.0} |",
                m.name,
                med(&|r| r.wrk.rps),
                med(&|r| r.wrk.p50_us),
                med(&|r| r.wrk.p99_us),
                opt(&|r| r.cpu_us_per_req, 1),
                opt(&|r| r.cpu_pct, 0),
                med(&|r| r.upstream_conns as f64),
            );
        }
    }
    let idle_of = |i: usize| idle_pct.get(i).copied().unwrap_or(f64::NAN);
    println!(
        "\npeak RSS: trigate {:.1} MiB, nginx proxy {:.1} MiB{}; idle CPU (% of a core over {:.0} s, {:.0} ms ticks): trigate {:.1}, nginx {:.1}{}",
        rss_gate as f64 / 1024.0,
        rss_nginx as f64 / 1024.0,
        rss_litellm
            .map(|r| format!(", LiteLLM {:.1} MiB", r as f64 / 1024.0))
            .unwrap_or_default(),
        idle.as_secs_f64(),
        1000.0 / clock_hz(),
        idle_of(gate_oa),
        idle_of(ngx),
        lite.map(|l| format!(", LiteLLM {:.1}", idle_of(l)))
            .unwrap_or_default(),
    );

    // Time to first token.
    let all = |w: usize| ttfts[w].iter().flatten().copied().collect::<Vec<f64>>();
    let added_ttft = median(
        ttfts[1]
            .iter()
            .zip(&ttfts[0])
            .map(|(g, d)| median(g.clone()) - median(d.clone()))
            .collect(),
    );
    println!(
        "\ntime to first token (streamed, {} requests per mode per round, new connection each; the fake sends the first chunk at once, the rest {} ms later): direct p50 {:.0} µs p90 {:.0} µs; through the gate p50 {:.0} µs p90 {:.0} µs",
        a.ttft_requests,
        STREAM_REST_DELAY.as_millis(),
        median(all(0)),
        percentile(all(0), 0.9),
        median(all(1)),
        percentile(all(1), 0.9),
    );

    // Rounds are interleaved, so a round's modes saw the same machine: the
    // median of per-round ratios is steadier than a ratio of medians.
    println!();
    for (ci, conns) in CONNS.iter().enumerate() {
        for (g, what) in [
            (gate_oa, "OpenAI in"),
            (gate_an, "Anthropic in, translated"),
        ] {
            let ratio = per_round(ci, g, ngx, &|t, n| cpu(t) / cpu(n));
            println!(
                "target LLM gate ({what}) CPU/request ≤ {CPU_VS_NGINX}× nginx's at {conns} conn: {ratio:.2}× → {}",
                pass(ratio <= CPU_VS_NGINX)
            );
        }
    }
    if let Some(l) = lite {
        for (ci, conns) in CONNS.iter().enumerate() {
            for (g, what) in [
                (gate_oa, "OpenAI in"),
                (gate_an, "Anthropic in, translated"),
            ] {
                let ratio = per_round(ci, g, l, &|t, y| t.wrk.rps / y.wrk.rps);
                println!(
                    "target LLM gate ({what}) req/s ≥ {RPS_VS_LITELLM}× LiteLLM's at {conns} conn: {ratio:.0}× → {}",
                    pass(ratio >= RPS_VS_LITELLM)
                );
            }
        }
    } else {
        println!("target req/s ≥ {RPS_VS_LITELLM}× LiteLLM's: not measured (--no-litellm)");
    }
    let one = CONNS.iter().position(|&c| c == 1).context("1 connection")?;
    for (g, what) in [
        (gate_oa, "OpenAI in"),
        (gate_an, "Anthropic in, translated"),
    ] {
        let added = per_round(one, g, direct, &|t, d| t.wrk.p50_us - d.wrk.p50_us);
        println!(
            "target LLM gate ({what}) adds ≤ {ADDED_P50_US} µs to p50 over direct at 1 conn: {added:+.0} µs → {}",
            pass(added <= ADDED_P50_US)
        );
    }
    let added_nginx = per_round(one, ngx, direct, &|n, d| n.wrk.p50_us - d.wrk.p50_us);
    println!("  (nginx adds {added_nginx:+.0} µs)");
    println!(
        "target LLM gate adds ≤ {ADDED_TTFT_US} µs to time to first token: median of per-round p50 differences {added_ttft:+.0} µs → {}",
        pass(added_ttft <= ADDED_TTFT_US)
    );
    drop(modes);
    drop(litellm);
    drop(gate);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_strings_cannot_end_early() {
        assert_eq!(lua_string("a"), "[[a]]");
        assert_eq!(lua_string("x]]y"), "[=[x]]y]=]");
        assert_eq!(lua_string("]=]]]"), "[==[]=]]]]==]");
    }

    #[test]
    fn the_fake_answer_is_valid_for_nginx() {
        // Inside nginx's single-quoted string: no single quote, no `$`.
        let c = completion_json();
        assert!(!c.contains('\'') && !c.contains('$'));
        assert_eq!(Wire::OpenAi.reply_text(&c).as_deref(), Some(REPLY));
    }
}
