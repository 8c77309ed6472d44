//! What the benchmark binaries share: reading `wrk`'s report, a process
//! tree's CPU time and peak memory from /proc, temp dirs, tools on PATH,
//! nginx's request counters.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// What one `wrk --latency` run printed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wrk {
    pub requests: u64,
    pub secs: f64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Socket errors (connect, read, write, timeout) plus non-2xx/3xx.
    pub errors: u64,
}

/// Parses wrk 4's text report (`--latency` prints the 50/75/90/99th
/// percentiles).
pub fn parse_wrk(out: &str) -> Result<Wrk> {
    let mut w = Wrk::default();
    let (mut p50, mut p99, mut reqs, mut rps) = (None, None, None, None);
    let mut in_distribution = false;
    for line in out.lines() {
        let t = line.trim();
        if t == "Latency Distribution" {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            if let Some((p, v)) = t.split_once('%') {
                match p.trim() {
                    "50" => p50 = Some(time_us(v.trim())?),
                    "99" => p99 = Some(time_us(v.trim())?),
                    _ => {}
                }
                continue;
            }
            in_distribution = false;
        }
        let words: Vec<&str> = t.split_whitespace().collect();
        if words.get(1) == Some(&"requests") && words.get(2) == Some(&"in") {
            // "50513 requests in 2.01s, 7.23MB read"
            reqs = Some(words[0].parse::<u64>()?);
            w.secs = time_us(words.get(3).context("duration")?.trim_end_matches(','))? / 1e6;
        } else if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>()?);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in v.split(',') {
                w.errors += part
                    .split_whitespace()
                    .nth(1)
                    .context("socket errors")?
                    .parse::<u64>()?;
            }
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            w.errors += v.trim().parse::<u64>()?;
        }
    }
    w.p50_us = p50.context("no 50% line (wrk without --latency?)")?;
    w.p99_us = p99.context("no 99% line")?;
    w.requests = reqs.context("no `N requests in` line")?;
    w.rps = rps.context("no Requests/sec line")?;
    Ok(w)
}

/// wrk's time units (`21.00us`, `1.23ms`, `5.00s`, `1.00m`) in µs.
pub fn time_us(s: &str) -> Result<f64> {
    for (unit, scale) in [
        ("us", 1.0),
        ("ms", 1e3),
        ("s", 1e6),
        ("m", 60e6),
        ("h", 3600e6),
    ] {
        if let Some(n) = s.strip_suffix(unit) {
            return Ok(n.parse::<f64>().with_context(|| format!("time {s:?}"))? * scale);
        }
    }
    bail!("unknown time unit in {s:?}")
}

/// A directory under the temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Result<TempDir> {
        let mut n = 0;
        loop {
            let p = std::env::temp_dir()
                .join(format!("trigate-bench-{}-{what}-{n}", std::process::id()));
            match std::fs::create_dir(&p) {
                Ok(()) => return Ok(TempDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => return Err(e).with_context(|| format!("creating {}", p.display())),
            }
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `/proc/PID/task/PID/children`: the direct children of a process.
pub fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A process and all its descendants, parents first: a proxy run under a
/// wrapper (perf record, say) is measured with the daemon it runs.
pub fn tree(pid: i32) -> Vec<i32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let kids = children(all[i]);
        all.extend(kids);
        i += 1;
    }
    all
}

/// utime + stime of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: i32) -> Result<u64> {
    cpu_times(pid).map(|(user, system)| user + system)
}

/// utime and stime of a process (all its threads), in clock ticks.
pub fn cpu_times(pid: i32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesised comm: state is #3, utime #14, stime #15.
    let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field =
        |i: usize| -> Result<u64> { Ok(f.get(i).context("short /proc stat")?.parse::<u64>()?) };
    Ok((field(11)?, field(12)?))
}

/// Peak resident set size (VmHWM) of a process, in KiB.
pub fn peak_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A tool from PATH or the sbin directories (nginx lives in /usr/sbin).
pub fn find_tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("{name} not found in PATH or /usr/sbin: `cargo xtask setup --test-deps` installs it (Debian package {name})")
        })
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// nginx's config for a bench: master + 1 worker in the foreground, logs,
/// pid and temp files in `dir`, access logs off (trigate's are on: that is
/// part of what it costs, and nginx's plain proxying is the reference),
/// keep-alive that never runs out during a run; `http` is the body of its
/// `http {}` block.
pub fn nginx_conf(dir: &std::path::Path, http: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
{http}
}}
"
    )
}

/// An nginx upstream's `stub_status` counters (served at `/__status`):
/// (accepted connections, requests). Reading them is itself one connection and one request.
pub fn upstream_counters(addr: std::net::SocketAddr) -> Result<(u64, u64)> {
    let r = crate::http_request(addr, "GET", "/__status", None)?;
    if r.status != 200 {
        bail!("upstream stub_status: {} {:?}", r.status, r.body);
    }
    // "Active connections: 1\nserver accepts handled requests\n 5 5 101029\n…"
    let nums: Vec<u64> = r
        .body
        .lines()
        .nth(2)
        .context("stub_status body")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    match nums[..] {
        [accepts, _handled, requests] => Ok((accepts, requests)),
        _ => bail!("odd stub_status body {:?}", r.body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_report() {
        let w = parse_wrk(
            "Running 2s test @ http://127.0.0.1:18082/
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   662.66us    1.50ms  18.47ms   89.03%
    Req/Sec    25.39k    15.63k   54.30k    70.00%
  Latency Distribution
     50%   21.00us
     75%  535.00us
     90%    2.33ms
     99%    6.75ms
  50513 requests in 2.01s, 7.23MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  25110.74
Transfer/sec:      3.59MB
",
        )
        .unwrap();
        assert_eq!(w.requests, 50513);
        assert!((w.secs - 2.01).abs() < 1e-9);
        assert!((w.rps - 25110.74).abs() < 1e-9);
        assert!((w.p50_us - 21.0).abs() < 1e-9);
        assert!((w.p99_us - 6750.0).abs() < 1e-9);
        assert_eq!(w.errors, 7);
        assert!(parse_wrk("nothing").is_err());
        assert_eq!(time_us("1.00m").unwrap(), 60e6);
    }
}
