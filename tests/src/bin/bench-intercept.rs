//! `cargo xtask bench intercept`: what interception costs a new connection.
//!
//! Three simulated pods, each dialing a sink upstream on its own veth, in
//! interleaved rounds so machine noise hits every mode alike:
//! (a) direct — the pod's cgroup has no programs attached;
//! (b) ebpf — trigate's connect4 redirect to its in-pod listener;
//! (c) iptables — a `nat OUTPUT REDIRECT` rule in the pod's namespace to the
//!     same in-pod listener, which then finds the target with
//!     `SO_ORIGINAL_DST` (what Istio ambient's redirection does).
//! The client is this binary (`bench-intercept client ADDR N`) run inside
//! the pod: sequential connect / read to EOF / close, timing `connect()`.
use std::{
    io::Read,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use trigate_e2e::{bench::cpu_ticks, Destination, Node, Pod, Runner, Workload};

const MARK: u32 = 0x7467;
const LISTENER_PORT: u16 = 15001;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("client") {
        let addr: SocketAddr = args.get(2).context("client ADDR N")?.parse()?;
        let n: usize = args.get(3).context("client ADDR N")?.parse()?;
        return client(addr, n);
    }
    let mut rounds = 7;
    let mut conns = 3000;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => rounds = it.next().context("--rounds N")?.parse()?,
            "--conns" => conns = it.next().context("--conns N")?.parse()?,
            "intercept" => {}
            other => bail!("unknown argument {other:?} (use --rounds N --conns N)"),
        }
    }
    bench(rounds, conns)
}

/// One client run's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    conns_per_sec: f64,
    connect_p50_us: f64,
    connect_p99_us: f64,
    daemon_cpu_us_per_conn: Option<f64>,
}

/// Two phases. Throughput: `n` connections back to back (connect, read to
/// EOF, close). Latency: `n / 2` more, each after a pause so the proxy has
/// finished the previous one; `connect()` then measures what interception
/// adds to a connect, not CPU contention with the proxy's work on the
/// connection before.
fn client(addr: SocketAddr, n: usize) -> Result<()> {
    let mut buf = [0u8; 64];
    let mut one = |lat: Option<&mut Vec<u64>>| -> Result<()> {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        if let Some(lat) = lat {
            lat.push(t0.elapsed().as_nanos() as u64);
        }
        // The upstream writes one byte and closes: through a proxy that
        // is the whole round trip of a short connection.
        while s.read(&mut buf)? > 0 {}
        Ok(())
    };
    let start = Instant::now();
    for _ in 0..n {
        one(None)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut lat = Vec::with_capacity(n / 2);
    for _ in 0..(n / 2).max(1) {
        thread::sleep(Duration::from_micros(500));
        one(Some(&mut lat))?;
    }
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({"conns_per_sec": n as f64 / secs, "p50_us": pct(0.50), "p99_us": pct(0.99)})
    );
    Ok(())
}

/// Accepts, writes one byte, closes; until dropped.
struct Sink {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Sink {
    fn start(ip: IpAddr) -> Result<Sink> {
        let listener = TcpListener::bind((ip, 0)).with_context(|| format!("bind {ip}"))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        thread::spawn(move || {
            use std::io::Write;
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(b"x");
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_micros(50))
                    }
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Ok(Sink { addr, stop })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn sh(program: &str, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| {
            format!("running {program} (is it installed? cargo xtask setup --test-deps)")
        })?;
    if !out.status.success() {
        bail!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn run_client(pod: &Pod, addr: SocketAddr, n: usize, daemon_pid: Option<i32>) -> Result<Run> {
    let exe = std::env::current_exe()?;
    let before = daemon_pid.map(cpu_ticks).transpose()?;
    let out = pod.run(
        Path::new(&exe),
        &["client", &addr.to_string(), &n.to_string()],
        Duration::from_secs(300),
    )?;
    let after = daemon_pid.map(cpu_ticks).transpose()?;
    if !out.success() {
        bail!("client in {} failed: {}", pod.name, out.stderr);
    }
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("client output {:?}", out.stdout))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(Run {
        conns_per_sec: v["conns_per_sec"].as_f64().unwrap_or(0.0),
        connect_p50_us: v["p50_us"].as_f64().unwrap_or(0.0),
        connect_p99_us: v["p99_us"].as_f64().unwrap_or(0.0),
        daemon_cpu_us_per_conn: before
            .zip(after)
            // Both phases went through the daemon.
            .map(|(b, a)| (a - b) as f64 / hz * 1e6 / (n + (n / 2).max(1)) as f64),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn bench(rounds: usize, conns: usize) -> Result<()> {
    // Programs attach to `node`'s cgroup only; `free` never has any, so the
    // direct and iptables pods pay nothing for eBPF.
    let node = Node::new()?;
    let free = Node::new()?;
    let pod_b = node.pod("ebpf")?;
    let pod_a = free.pod("direct")?;
    let pod_c = free.pod("iptables")?;
    let sink_a = Sink::start(IpAddr::V4(pod_a.host_ip))?;
    let sink_b = Sink::start(IpAddr::V4(pod_b.host_ip))?;
    let sink_c = Sink::start(IpAddr::V4(pod_c.host_ip))?;

    let cfg = node
        .config()
        .listener_in_pod()
        // Quiet access logs, but the start-up lines the harness waits for.
        .set("/log/level", serde_json::json!("warn,trigate::daemon=info"))
        .destination(
            Destination::redirect("sink")
                .addr(sink_b.addr.ip())
                .port(sink_b.addr.port()),
        )
        .workload(pod_b.workload())
        // Enrolled for its in-pod listener only: its cgroup is outside the
        // attach point, so the kernel never redirects it; iptables does.
        .workload(Workload::new("iptables").netns(pod_c.netns_path()));
    let mut daemon = node.start(&cfg)?;
    let ip = trigate_e2e::env()?.ip.clone();
    let ip = ip.to_str().context("ip path")?;
    sh(
        ip,
        &[
            "netns",
            "exec",
            &pod_c.netns,
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            &pod_c.host_ip.to_string(),
            "--dport",
            &sink_c.addr.port().to_string(),
            "-m",
            "mark",
            "!",
            "--mark",
            &MARK.to_string(),
            "-j",
            "REDIRECT",
            "--to-ports",
            &LISTENER_PORT.to_string(),
        ],
    )?;

    let modes: [(&str, &Pod, SocketAddr, Option<i32>); 3] = [
        ("direct", &pod_a, sink_a.addr, None),
        ("ebpf redirect", &pod_b, sink_b.addr, Some(daemon.pid())),
        ("iptables REDIRECT", &pod_c, sink_c.addr, Some(daemon.pid())),
    ];
    for (name, pod, addr, pid) in &modes {
        run_client(pod, *addr, 300, *pid).with_context(|| format!("warm-up of {name}"))?;
    }
    let mut results: Vec<Vec<Run>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds {
        for (i, (name, pod, addr, pid)) in modes.iter().enumerate() {
            let r = run_client(pod, *addr, conns, *pid)
                .with_context(|| format!("round {round} of {name}"))?;
            results[i].push(r);
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }
    // The eBPF mode really went through trigate (and iptables too).
    let m = daemon.metrics()?;
    let through = m.sum("trigate_connections_total", &[]);
    // Throughput and latency phases of every run, warm-up included.
    let expected = (rounds * (conns + conns / 2) + 300 + 150) * 2;
    if (through as usize) < expected {
        bail!("trigate proxied {through} connections, expected {expected}: a mode bypassed it");
    }

    println!(
        "\ncargo xtask bench intercept — {rounds} interleaved rounds; per mode and round {conns} back-to-back connections (conn/s, daemon CPU) and {} paced ones (connect() latency); medians of the rounds",
        conns / 2
    );
    println!("| mode | conn/s | connect() p50 µs | connect() p99 µs | daemon CPU µs/conn |");
    println!("|---|---:|---:|---:|---:|");
    let mut summary = Vec::new();
    for (i, (name, ..)) in modes.iter().enumerate() {
        let rs = &results[i];
        let cps = median(rs.iter().map(|r| r.conns_per_sec).collect());
        let p50 = median(rs.iter().map(|r| r.connect_p50_us).collect());
        let p99 = median(rs.iter().map(|r| r.connect_p99_us).collect());
        let cpu = rs
            .iter()
            .map(|r| r.daemon_cpu_us_per_conn)
            .collect::<Option<Vec<_>>>()
            .map(median);
        println!(
            "| {name} | {cps:.0} | {p50:.1} | {p99:.1} | {} |",
            cpu.map(|c| format!("{c:.1}")).unwrap_or_else(|| "–".into())
        );
        summary.push((cps, p50));
    }
    let (a, b, c) = (summary[0], summary[1], summary[2]);
    // Rounds are interleaved, so a round's modes saw the same machine: the
    // median of per-round ratios is steadier than a ratio of medians.
    let ratio = median(
        results[1]
            .iter()
            .zip(&results[2])
            .map(|(b, c)| b.conns_per_sec / c.conns_per_sec)
            .collect(),
    );
    let added = median(
        results[1]
            .iter()
            .zip(&results[0])
            .map(|(b, a)| b.connect_p50_us - a.connect_p50_us)
            .collect(),
    );
    println!();
    println!(
        "target (b) ≥ (c) in conn/s: medians {:.0} vs {:.0}, per-round ratio b/c median {ratio:.2} → {}",
        b.0,
        c.0,
        if ratio >= 1.0 { "met" } else { "MISSED" }
    );
    println!(
        "target eBPF adds ≤ 5 µs to connect() p50 over direct: medians {:.1} vs {:.1}, per-round difference median +{added:.1} µs → {}",
        b.1,
        a.1,
        if added <= 5.0 { "met" } else { "MISSED" }
    );
    daemon.dump_on_drop(false);
    drop(daemon);
    Ok(())
}
