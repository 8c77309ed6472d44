//! Node observability end to end: a pod sends LLM calls (to a fake OpenAI
//! provider) and API requests through the real eBPF redirect; then the
//! admin summary, `trigate top --once` and the dashboard rendered by
//! headless Chromium all show that workload's numbers, and the public
//! read-only listener serves metrics but refuses enrollment.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use trigate_e2e::{
    free_port, http_request, log_str, mcp_client, poll_until, trigate, Daemon, Destination,
    FakeLlm, McpServer, McpTransport, Node, Pod, Runner, Upstream, CMD_TIMEOUT,
};

const LOG_WAIT: Duration = Duration::from_secs(10);
const INPUT: u64 = 120;
const OUTPUT: u64 = 30;
const CALLS: u64 = 3;
const API_CALLS: u64 = 2;
/// USD per million tokens in the test's price table.
const IN_PRICE: f64 = 2.0;
const OUT_PRICE: f64 = 8.0;

fn curl(pod: &Pod, args: &[&str]) -> Result<(u16, String)> {
    let env = trigate_e2e::env()?;
    let mut all = vec![
        "-sS",
        "--noproxy",
        "*",
        "--max-time",
        "20",
        "-o",
        "/dev/stdout",
        "-w",
        "\n%{http_code}",
    ];
    all.extend_from_slice(args);
    let out = pod.run(&env.curl, &all, CMD_TIMEOUT)?.check("curl")?;
    let (body, status) = out.stdout.rsplit_once('\n').unwrap_or(("", &out.stdout));
    Ok((status.trim().parse().unwrap_or(0), body.to_string()))
}

fn request_lines(d: &Daemon) -> Vec<Value> {
    d.access_logs()
        .into_iter()
        .filter(|l| log_str(l, "message") == Some("request"))
        .collect()
}

/// The daemon with a pod that has sent `CALLS` chat completions and
/// `API_CALLS` API requests.
struct Scene {
    _node: Node,
    pod: Pod,
    d: Daemon,
    _fake: FakeLlm,
    api: Upstream,
    _mcp: McpServer,
    public: SocketAddr,
}

fn scene() -> Result<Scene> {
    let node = Node::new()?;
    let pod = node.pod("obs")?;
    let fake = FakeLlm::openai(pod.host_ip.into())?;
    fake.usage(INPUT, OUTPUT);
    let api = Upstream::start(pod.host_ip.into())?;
    let mcp = McpServer::start(
        pod.host_ip.into(),
        McpTransport::StreamableHttp,
        "tools",
        false,
    )?;
    let llm_ip = pod.host_ip.into();
    let llm = SocketAddr::new(llm_ip, free_port(llm_ip)?);
    let public = SocketAddr::from(([127, 0, 0, 1], free_port([127, 0, 0, 1].into())?));
    let cfg = node
        .config()
        .destination(
            Destination::redirect("llm")
                .addr(llm.ip())
                .port(llm.port())
                .gate("llm"),
        )
        .destination(
            Destination::redirect("api")
                .addr(api.ip())
                .port(api.port())
                .gate("api"),
        )
        .destination(
            Destination::redirect("tools")
                .addr(pod.host_ip.into())
                .port(mcp.port())
                .gate("mcp"),
        )
        .set(
            "/mcp",
            json!({"policies": [{"name": "agents", "tools": {"allow": ["echo"]}}]}),
        )
        .set("/admin/public_address", json!(public.to_string()))
        .set(
            "/llm",
            json!({
                "providers": [{"name": "fake-openai", "kind": "openai-compatible", "url": fake.base_url()}],
                "models": [{"name": "gpt-4o-mini", "targets": [{"provider": "fake-openai"}]}],
                "prices": [{"model": "gpt-4o-mini*", "input_per_mtok": IN_PRICE, "output_per_mtok": OUT_PRICE}],
            }),
        )
        .workload(pod.workload());
    let d = node.start(&cfg)?;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    let url = format!("http://{llm}/v1/chat/completions");
    for i in 0..CALLS {
        let (status, answer) = curl(
            &pod,
            &["-H", "content-type: application/json", "-d", &body, &url],
        )?;
        ensure!(status == 200, "chat call {i}: {status} {answer}");
    }
    for i in 0..API_CALLS {
        let (status, answer) = curl(&pod, &[&api.url("/things")])?;
        ensure!(status == 200, "api call {i}: {status} {answer}");
    }
    let out = mcp_client(
        &pod,
        mcp.url(),
        &[],
        &json!([
            {"op": "call", "tool": "echo", "args": {"text": "one"}},
            {"op": "call", "tool": "echo", "args": {"text": "two"}},
            {"op": "call", "tool": "delete_all", "args": {}},
            {"op": "terminate"},
        ]),
    )?;
    let r = &out["results"];
    ensure!(
        r[0]["ok"] == true && r[1]["ok"] == true && r[2]["ok"] == false,
        "mcp calls: {out:#}"
    );
    // The metrics are counted when the access line is written.
    poll_until(LOG_WAIT, "the request access lines", || {
        let llm_api = request_lines(&d)
            .iter()
            .filter(|l| matches!(log_str(l, "gate"), Some("llm" | "api")))
            .count() as u64;
        let audited = d
            .logs()
            .iter()
            .filter(|l| {
                log_str(l, "message") == Some("mcp call")
                    && log_str(l, "method") == Some("tools/call")
            })
            .count();
        Ok((llm_api >= CALLS + API_CALLS && audited >= 3).then_some(()))
    })
    .map_err(|e| anyhow::anyhow!("{e:#}; lines: {:#?}", request_lines(&d)))?;
    Ok(Scene {
        _node: node,
        pod,
        d,
        _fake: fake,
        api,
        _mcp: mcp,
        public,
    })
}

fn expected_cost() -> f64 {
    CALLS as f64 * (INPUT as f64 * IN_PRICE + OUTPUT as f64 * OUT_PRICE) / 1e6
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 + b.abs() * 1e-6
}

/// Waits until the history has a sample after the traffic and at least two
/// rate points (a chart needs two to draw a line).
fn wait_for_rates(d: &Daemon) -> Result<Value> {
    poll_until(
        Duration::from_secs(15),
        "two history points, one with tokens",
        || {
            let h = d.admin_get("/api/summary/history?window=600")?.json()?;
            let has = h["points"].as_array().is_some_and(|ps| {
                ps.len() >= 2
                    && ps.iter().any(|p| {
                        p["tokens_per_min_by_model"]
                            .as_object()
                            .is_some_and(|m| m.values().any(|v| v.as_f64() > Some(0.0)))
                    })
            });
            Ok(has.then_some(h))
        },
    )
}

#[test]
fn the_summary_top_and_dashboard_show_a_workloads_traffic() -> Result<()> {
    let s = scene()?;
    let name = s.pod.name.clone();

    // (a) the summary API.
    let sum = s.d.admin_get("/api/summary")?;
    ensure!(sum.status == 200, "GET /api/summary: {sum:?}");
    let sum = sum.json()?;
    let w = sum["workloads"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["name"] == name.as_str()))
        .with_context(|| format!("no workload {name} in {sum:#}"))?;
    let pair = |destination: &str| -> Result<&Value> {
        sum["destinations"]
            .as_array()
            .and_then(|ds| {
                ds.iter()
                    .find(|p| p["workload"] == name.as_str() && p["destination"] == destination)
            })
            .with_context(|| format!("no ({name}, {destination}) pair: {sum:#}"))
    };
    let tools_pair = pair("tools")?;
    let mcp_requests = tools_pair["requests"].as_u64().unwrap_or(0);
    ensure!(mcp_requests >= 3, "MCP HTTP requests to tools: {sum:#}");
    ensure!(
        w["requests"] == CALLS + API_CALLS + mcp_requests
            && w["errors"] == 0
            && w["tokens_input"] == CALLS * INPUT
            && w["tokens_output"] == CALLS * OUTPUT
            && w["enrolled"] == true,
        "workload summary: {w:#}"
    );
    ensure!(
        w["mcp_denied"] == 1
            && w["mcp_calls"].as_u64() >= Some(3)
            && w["top_tools"]
                == json!([{"tool": "echo", "calls": 2}, {"tool": "delete_all", "calls": 1}]),
        "MCP in the workload summary: {w:#}"
    );
    let cost = w["cost_usd"].as_f64().unwrap_or(-1.0);
    ensure!(close(cost, expected_cost()), "cost {cost}: {w:#}");
    let llm_pair = pair("llm")?;
    ensure!(
        llm_pair["requests"] == CALLS
            && llm_pair["ebpf"]["redirected"].as_u64() >= Some(1)
            && llm_pair["tokens_input"] == CALLS * INPUT
            && llm_pair["tokens_output"] == CALLS * OUTPUT
            && close(
                llm_pair["cost_usd"].as_f64().unwrap_or(-1.0),
                expected_cost()
            )
            && llm_pair["mcp_calls"] == 0,
        "llm destination: {llm_pair:#}"
    );
    // Tokens, spend and MCP calls are split by the destination called.
    ensure!(
        tools_pair["mcp_calls"] == w["mcp_calls"]
            && tools_pair["mcp_denied"] == 1
            && tools_pair["tokens_input"] == 0
            && tools_pair["cost_usd"] == 0.0,
        "tools destination: {tools_pair:#}"
    );
    let api_pair = pair("api")?;
    ensure!(
        api_pair["requests"] == API_CALLS && api_pair["bytes_received"].as_u64() > Some(0),
        "api destination: {api_pair:#}"
    );
    ensure!(
        sum["totals"]["tokens_input"] == CALLS * INPUT
            && sum["models"]
                .as_object()
                .is_some_and(|m| m.values().any(|v| v["tokens_input"] == CALLS * INPUT)),
        "node totals and models: {sum:#}"
    );
    let one = s.d.admin_get(&format!("/workloads/{name}/summary"))?;
    ensure!(
        one.status == 200 && one.json()?["workload"]["tokens_output"] == CALLS * OUTPUT,
        "GET /workloads/{name}/summary: {one:?}"
    );
    let none = s.d.admin_get("/workloads/ns%2Fnobody/summary")?;
    ensure!(
        none.status == 404 && none.body.contains("ns/nobody"),
        "unknown workload: {none:?}"
    );
    let history = wait_for_rates(&s.d)?;
    ensure!(
        history["points"].as_array().is_some_and(|p| p
            .iter()
            .any(|p| p["node"]["requests_per_s"].as_f64() > Some(0.0))),
        "history has a request rate: {history:#}"
    );

    // (b) trigate top --once.
    let admin = format!("http://{}", s.d.admin_addr()?);
    let out = trigate(&[
        "top".as_ref(),
        "--once".as_ref(),
        "--admin".as_ref(),
        admin.as_ref(),
        "--sort".as_ref(),
        "tokens".as_ref(),
    ])?;
    ensure!(out.success(), "trigate top --once: {out:?}");
    ensure!(!out.stdout.contains('\x1b'), "--once prints no ANSI codes");
    let header: Vec<&str> = out
        .stdout
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let row: Vec<&str> = out
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .with_context(|| format!("no row for {name}: {}", out.stdout))?
        .split_whitespace()
        .collect();
    let cell = |col: &str| {
        header
            .iter()
            .position(|h| *h == col)
            .and_then(|i| row.get(i).copied())
            .unwrap_or("")
    };
    ensure!(
        cell("REQUESTS") == (CALLS + API_CALLS + mcp_requests).to_string()
            && cell("MCP").parse::<u64>().ok() == w["mcp_calls"].as_u64()
            && cell("TOKENS-IN") == (CALLS * INPUT).to_string()
            && cell("TOKENS-OUT") == (CALLS * OUTPUT).to_string()
            && close(cell("COST-USD").parse().unwrap_or(-1.0), expected_cost()),
        "top row {row:?} under {header:?}"
    );
    let by_dest = trigate(&[
        "top".as_ref(),
        "--once".as_ref(),
        "--by".as_ref(),
        "destination".as_ref(),
        "--admin".as_ref(),
        admin.as_ref(),
    ])?;
    let dest_header: Vec<&str> = by_dest
        .stdout
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let tokens_col = dest_header.iter().position(|h| *h == "TOKENS-IN");
    ensure!(
        by_dest.success()
            && by_dest.stdout.lines().any(|l| {
                let c: Vec<_> = l.split_whitespace().collect();
                c.len() > 2
                    && c[0] == name
                    && c[1] == "llm"
                    && c[2] == CALLS.to_string()
                    && tokens_col.and_then(|i| c.get(i)) == Some(&&*(CALLS * INPUT).to_string())
            }),
        "top --by destination: {by_dest:?}"
    );
    // A daemon that is not there: an error naming the address, no panic.
    let dead = format!("127.0.0.1:{}", free_port([127, 0, 0, 1].into())?);
    let down = trigate(&[
        "top".as_ref(),
        "--once".as_ref(),
        "--admin".as_ref(),
        dead.as_ref(),
    ])?;
    ensure!(
        !down.success() && down.stderr.contains(&dead) && !down.stderr.contains("panicked"),
        "top against a dead address: {down:?}"
    );

    // (c) the dashboard in headless Chromium.
    let page = s.d.admin_get("/")?;
    ensure!(
        page.status == 200 && page.body.contains("app.js") && !page.body.contains(&name),
        "the static page must not contain the data (the JS renders it): {page:?}"
    );
    let url = format!("{admin}/");
    let dom = chromium(&["--dump-dom", &url], Duration::from_secs(60))?;
    let row = dom_row(&dom, &name)
        .with_context(|| format!("no rendered row for {name} in the DOM:\n{dom}"))?;
    let tokens_in = dom_cell(row, "tokens_input").unwrap_or_default();
    ensure!(
        tokens_in.replace(',', "") == (CALLS * INPUT).to_string(),
        "the row's tokens_input cell is {tokens_in:?}: {row}"
    );
    ensure!(
        dom.contains("<span class=\"name\" title=\"echo\">echo</span>"),
        "the top MCP tools list names echo: {dom}"
    );
    ensure!(
        dom.contains("data-loaded=\"true\"") && dom.contains("<polyline"),
        "the page loaded and drew its charts: {dom}"
    );
    let shot = artifacts()?.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,1600",
            &url,
        ],
        Duration::from_secs(60),
    )?;
    let png =
        std::fs::read(&shot).with_context(|| format!("no screenshot at {}", shot.display()))?;
    ensure!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} is not a plausible screenshot ({} bytes)",
        shot.display(),
        png.len()
    );
    println!("dashboard screenshot: {}", shot.display());

    // (d) the public listener: read-only.
    let metrics = http_request(s.public, "GET", "/metrics", None)?;
    ensure!(
        metrics.status == 200 && metrics.body.contains("trigate_http_requests_total"),
        "public /metrics: {}",
        metrics.status
    );
    let summary = http_request(s.public, "GET", "/api/summary", None)?;
    ensure!(summary.status == 200, "public /api/summary: {summary:?}");
    let enroll = http_request(
        s.public,
        "POST",
        "/workloads",
        Some(&json!({"name": "sneaky", "cgroup": "x"}).to_string()),
    )?;
    ensure!(
        enroll.status == 404 && enroll.json()?["error"].is_string(),
        "public POST /workloads must be refused: {enroll:?}"
    );
    for (method, path) in [("GET", "/workloads"), ("PUT", "/logging?level=debug")] {
        let r = http_request(s.public, method, path, None)?;
        ensure!(r.status == 404, "public {method} {path}: {r:?}");
    }
    let names: Vec<String> =
        s.d.admin_get("/workloads")?
            .json()?
            .as_array()
            .map(|ws| {
                ws.iter()
                    .filter_map(|w| w["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
    ensure!(
        names == [name.clone()],
        "nothing enrolled through the public port: {names:?}"
    );
    Ok(())
}

/// `trigate top` without `--once` redraws in place: a request sent while
/// it runs shows up in a later frame, and Ctrl-C (SIGINT) ends it cleanly.
#[test]
fn trigate_top_refreshes_until_interrupted() -> Result<()> {
    let s = scene()?;
    let name = s.pod.name.clone();
    let env = trigate_e2e::env()?;
    let admin = format!("http://{}", s.d.admin_addr()?);
    let mut child = Command::new(&env.trigate)
        .args(["top", "--admin", &admin, "--interval", "0.2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting trigate top")?;
    let pid = child.id() as i32;
    // Ends it (by its pid) whatever happens below.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().context("top's stdout")?;
    let stderr = child.stderr.take();
    let mut child = Reap(child);
    // Frames as they arrive, split on the home + clear-screen codes.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut stdout = stdout;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        const CLEAR: &[u8] = b"\x1b[H\x1b[2J";
        while let Ok(n) = std::io::Read::read(&mut stdout, &mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            // Everything before the last clear is complete frames.
            let Some(last) = buf.windows(CLEAR.len()).rposition(|w| w == CLEAR) else {
                continue;
            };
            let done: Vec<u8> = buf.drain(..last).collect();
            for frame in String::from_utf8_lossy(&done).split("\x1b[H\x1b[2J") {
                if !frame.is_empty() && tx.send(frame.to_string()).is_err() {
                    return;
                }
            }
        }
    });
    // The REQUESTS cell of the pod's row in a frame.
    let requests_in = |frame: &str| -> Option<u64> {
        let mut lines = frame.lines().skip_while(|l| !l.starts_with("WORKLOAD"));
        let header: Vec<&str> = lines.next()?.split_whitespace().collect();
        let col = header.iter().position(|h| *h == "REQUESTS")?;
        lines
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|c| c.first() == Some(&name.as_str()))?
            .get(col)?
            .parse()
            .ok()
    };
    let next_count = |deadline: Instant, past: Option<u64>| -> Result<u64> {
        let mut frames = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = rx.recv_timeout(left).map_err(|_| {
                anyhow::anyhow!("no frame from trigate top with a new count after {frames} frames")
            })?;
            frames += 1;
            ensure!(
                frame.starts_with("trigate top"),
                "a frame starts with the title line: {frame:?}"
            );
            if let Some(n) = requests_in(&frame).filter(|n| Some(*n) != past) {
                return Ok(n);
            }
        }
    };
    let before = next_count(Instant::now() + Duration::from_secs(10), None)?;
    let (status, answer) = curl(&s.pod, &[&s.api.url("/later")])?;
    ensure!(status == 200, "api call: {status} {answer}");
    let after = next_count(Instant::now() + Duration::from_secs(10), Some(before))?;
    ensure!(
        after == before + 1,
        "a later frame counts the new request: {before} then {after}"
    );
    // SAFETY: kill(2) on the child this test started.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = child.0.try_wait()? {
            break st;
        }
        ensure!(
            Instant::now() < deadline,
            "trigate top did not end on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = stderr {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    ensure!(
        status.success() && !err.contains("panicked"),
        "trigate top after SIGINT: {status}; stderr: {err}"
    );
    Ok(())
}

/// An enrolled workload without traffic shows up with zeros, and the
/// dashboard renders its empty states.
#[test]
fn an_idle_node_has_empty_states() -> Result<()> {
    let node = Node::new()?;
    let pod = node.pod("quiet")?;
    let d = node.start(&node.config().workload(pod.workload()))?;
    let sum = d.admin_get("/api/summary")?.json()?;
    let w = &sum["workloads"][0];
    ensure!(
        w["name"] == pod.name.as_str() && w["requests"] == 0 && w["tokens_input"] == 0,
        "{sum:#}"
    );
    let admin = format!("http://{}/dashboard", d.admin_addr()?);
    let dom = chromium(&["--dump-dom", &admin], Duration::from_secs(60))?;
    ensure!(
        dom_row(&dom, &pod.name).is_some(),
        "the idle workload has a row: {dom}"
    );
    // The empty-state notes are shown (no `hidden`) for tools and destinations.
    for id in ["tools-empty", "destinations-empty"] {
        let tag = dom
            .split(&format!("id=\"{id}\""))
            .nth(1)
            .and_then(|rest| rest.split('>').next())
            .with_context(|| format!("no #{id}: {dom}"))?;
        ensure!(!tag.contains("hidden"), "#{id} should be visible: {tag}");
    }
    Ok(())
}

// ------------------------------------------------------------ chromium

fn artifacts() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("e2e-artifacts");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.canonicalize()?)
}

fn chromium_bin() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "headless Chromium is required for the dashboard test and was not found on PATH \
         (Debian package `chromium`; cargo xtask setup --test-deps installs it)"
    )
}

/// Runs headless Chromium (its own process group and profile dir, both
/// removed after) and returns its stdout. Virtual time lets the page's
/// fetches and first renders finish before the DOM is dumped.
fn chromium(args: &[&str], timeout: Duration) -> Result<String> {
    let bin = chromium_bin()?;
    let profile = tempdir("trigate-chromium")?;
    let mut cmd = Command::new(&bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .env("HOME", &profile)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    for var in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pgid = child.id() as i32;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let read = |p: Option<std::process::ChildStdout>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = p {
                let _ = std::io::Read::read_to_string(&mut p, &mut s);
            }
            s
        })
    };
    let out = read(stdout);
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = stderr {
            let _ = std::io::Read::read_to_string(&mut p, &mut s);
        }
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The browser's helpers share its process group, which we made: end
    // whatever of it is left (also after a clean exit).
    // SAFETY: kill(2) on the process group this function created.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&profile);
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        None => bail!("chromium did not finish within {timeout:?}; stderr: {stderr}"),
        Some(s) if !s.success() => bail!("chromium failed ({s}); stderr: {stderr}"),
        Some(_) => Ok(stdout),
    }
}

fn tempdir(prefix: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ rand_ish()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn rand_ish() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The `<tr data-workload="NAME">…</tr>` the dashboard's JS rendered.
fn dom_row<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let start = dom.find(&format!("<tr data-workload=\"{name}\""))?;
    let rest = &dom[start..];
    Some(&rest[..rest.find("</tr>")?])
}

/// The text of the row's cell for column `col`.
fn dom_cell(row: &str, col: &str) -> Option<String> {
    let at = row.find(&format!("data-col=\"{col}\""))?;
    let rest = &row[at..];
    let text = &rest[rest.find('>')? + 1..];
    Some(text[..text.find('<')?].to_string())
}
