//! `trigate top`: the admin summary as a terminal table, like `kubectl
//! top`, refreshed in place (or printed once for scripts).
use std::{fmt::Write as _, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::admin::summary::{Rates, Summary};

/// How long one poll may take before it counts as a down daemon.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("--admin {0:?}: expected http://HOST:PORT (the daemon's admin.address)")]
    BadAddress(String),
    #[error(
        "cannot reach the trigate admin endpoint at {addr}: {reason} (is the daemon running? \
         is admin.address {addr}?)"
    )]
    Unreachable { addr: String, reason: String },
    #[error("{addr}/api/summary answered {status}: {body}")]
    Status {
        addr: String,
        status: StatusCode,
        body: String,
    },
    #[error("{addr}/api/summary: the answer is not a summary ({reason}); is this a trigate daemon of the same version?")]
    BadAnswer { addr: String, reason: String },
}

/// What the table is sorted by (largest first; `name` alphabetically).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    Name,
    Requests,
    Rate,
    Errors,
    Refused,
    Tokens,
    Cost,
    Mcp,
    Denied,
    Bytes,
}

/// One row per workload, or per (workload, destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    Workload,
    Destination,
}

/// `/api/summary` as the daemon sends it.
#[derive(Debug, Deserialize)]
pub struct Fetched {
    #[serde(flatten)]
    pub summary: Summary,
    pub recent: Option<Rates>,
}

/// `http://127.0.0.1:15000`, `127.0.0.1:15000/` → `127.0.0.1:15000`.
pub fn host_port(admin: &str) -> Result<String, TopError> {
    let rest = admin.strip_prefix("http://").unwrap_or(admin);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains("://") || rest.contains('/') || !rest.contains(':') {
        return Err(TopError::BadAddress(admin.to_owned()));
    }
    Ok(rest.to_owned())
}

/// The admin URL of a configured admin address: a wildcard bind is
/// reached on loopback.
pub fn default_admin(address: std::net::SocketAddr) -> String {
    let ip = match address.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{ip}:{}", address.port())
}

pub async fn fetch(addr: &str) -> Result<Fetched, TopError> {
    let unreachable = |reason: String| TopError::Unreachable {
        addr: addr.to_owned(),
        reason,
    };
    let get = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(conn);
        let req = Request::get("/api/summary")
            .header(hyper::header::HOST, addr)
            .body(Empty::<Bytes>::new())
            .map_err(|e| unreachable(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok::<_, TopError>((status, body))
    };
    let (status, body) = tokio::time::timeout(POLL_TIMEOUT, get)
        .await
        .map_err(|_| unreachable(format!("no answer within {POLL_TIMEOUT:?}")))??;
    if !status.is_success() {
        return Err(TopError::Status {
            addr: addr.to_owned(),
            status,
            body: String::from_utf8_lossy(&body).chars().take(200).collect(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| TopError::BadAnswer {
        addr: addr.to_owned(),
        reason: e.to_string(),
    })
}

/// One row of the table: its text cells and the numbers it sorts by.
struct Row {
    cells: Vec<String>,
    name: String,
    keys: [f64; 9],
}

fn sort_index(s: SortBy) -> Option<usize> {
    match s {
        SortBy::Name => None,
        SortBy::Requests => Some(0),
        SortBy::Rate => Some(1),
        SortBy::Errors => Some(2),
        SortBy::Refused => Some(3),
        SortBy::Tokens => Some(4),
        SortBy::Cost => Some(5),
        SortBy::Mcp => Some(6),
        SortBy::Denied => Some(7),
        SortBy::Bytes => Some(8),
    }
}

/// The table as text: a header line, then one line per row, sorted.
pub fn render(f: &Fetched, by: By, sort: SortBy) -> String {
    let (header, mut rows) = match by {
        By::Workload => workload_rows(f),
        By::Destination => destination_rows(f),
    };
    match sort_index(sort) {
        None => rows.sort_by(|a, b| a.name.cmp(&b.name)),
        Some(i) => rows.sort_by(|a, b| {
            b.keys[i]
                .total_cmp(&a.keys[i])
                .then_with(|| a.name.cmp(&b.name))
        }),
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(&r.cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            // Names left-aligned, numbers right-aligned.
            let names = if by == By::Workload { 1 } else { 2 };
            if i > 0 {
                l.push_str("  ");
            }
            if i < names {
                let _ = write!(l, "{c:<w$}");
            } else {
                let _ = write!(l, "{c:>w$}");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(
        &mut out,
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    );
    if rows.is_empty() {
        out.push_str("(no workloads enrolled or counted yet)\n");
    }
    for r in &rows {
        line(&mut out, &r.cells);
    }
    out
}

/// Printable form of a name from outside: control characters (which
/// could drive the terminal) become `?`.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn workload_rows(f: &Fetched) -> (Vec<&'static str>, Vec<Row>) {
    let header = vec![
        "WORKLOAD",
        "REQUESTS",
        "REQ/S",
        "ERRORS",
        "REFUSED",
        "TOKENS-IN",
        "TOKENS-OUT",
        "TOK/MIN",
        "COST-USD",
        "CACHE-HIT",
        "BLOCKS",
        "MCP",
        "DENIED",
        "BYTES",
    ];
    let rows = f
        .summary
        .workloads
        .iter()
        .map(|w| {
            let c = &w.counts;
            let rate = f.recent.as_ref().and_then(|r| r.workloads.get(&w.name));
            let rps = rate.map_or(0.0, |r| r.requests_per_s);
            let tpm = rate.map_or(0.0, |r| r.tokens_per_min);
            let lookups = c.cache_hits + c.cache_misses;
            let bytes = c.bytes_sent + c.bytes_received;
            Row {
                name: w.name.clone(),
                keys: [
                    c.requests as f64,
                    rps,
                    c.errors as f64,
                    c.refused as f64,
                    (c.tokens_input + c.tokens_output) as f64,
                    c.cost_usd,
                    c.mcp_calls as f64,
                    c.denied_connects as f64,
                    bytes as f64,
                ],
                cells: vec![
                    clean(&w.name),
                    c.requests.to_string(),
                    format!("{rps:.2}"),
                    c.errors.to_string(),
                    c.refused.to_string(),
                    c.tokens_input.to_string(),
                    c.tokens_output.to_string(),
                    format!("{tpm:.0}"),
                    format!("{:.6}", c.cost_usd),
                    if lookups == 0 {
                        "-".into()
                    } else {
                        format!("{:.1}%", 100.0 * c.cache_hits as f64 / lookups as f64)
                    },
                    c.guardrails.get("block").copied().unwrap_or(0).to_string(),
                    c.mcp_calls.to_string(),
                    c.denied_connects.to_string(),
                    human_bytes(bytes),
                ],
            }
        })
        .collect();
    (header, rows)
}

fn destination_rows(f: &Fetched) -> (Vec<&'static str>, Vec<Row>) {
    let header = vec![
        "WORKLOAD",
        "DESTINATION",
        "REQUESTS",
        "ERRORS",
        "REFUSED",
        "TOKENS-IN",
        "TOKENS-OUT",
        "COST-USD",
        "BLOCKS",
        "MCP",
        "CONNECTIONS",
        "DENIED",
        "SENT",
        "RECEIVED",
    ];
    let rows = f
        .summary
        .destinations
        .iter()
        .map(|d| {
            let denied = d.ebpf.get("denied").copied().unwrap_or(0);
            let bytes = d.bytes_sent + d.bytes_received;
            Row {
                name: format!("{}\u{0}{}", d.workload, d.destination),
                keys: [
                    d.requests as f64,
                    d.connections as f64,
                    d.errors as f64,
                    d.refused as f64,
                    (d.tokens_input + d.tokens_output) as f64,
                    d.cost_usd,
                    d.mcp_calls as f64,
                    denied as f64,
                    bytes as f64,
                ],
                cells: vec![
                    clean(&d.workload),
                    clean(&d.destination),
                    d.requests.to_string(),
                    d.errors.to_string(),
                    d.refused.to_string(),
                    d.tokens_input.to_string(),
                    d.tokens_output.to_string(),
                    format!("{:.6}", d.cost_usd),
                    d.guardrails.get("block").copied().unwrap_or(0).to_string(),
                    d.mcp_calls.to_string(),
                    d.connections.to_string(),
                    denied.to_string(),
                    human_bytes(d.bytes_sent),
                    human_bytes(d.bytes_received),
                ],
            }
        })
        .collect();
    (header, rows)
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// Polls and prints until Ctrl-C (or once). A failed poll while running
/// shows the error in place and keeps trying; a failed first poll (or
/// `--once`) is an error.
pub async fn run(
    admin: &str,
    interval: Duration,
    by: By,
    sort: SortBy,
    once: bool,
) -> Result<(), TopError> {
    let addr = host_port(admin)?;
    let first = fetch(&addr).await?;
    if once {
        print!("{}", render(&first, by, sort));
        return Ok(());
    }
    let mut result = Ok(first);
    loop {
        // Home, clear screen: the frame replaces the last one in place.
        let mut frame = String::from("\x1b[H\x1b[2J");
        let _ = writeln!(
            frame,
            "trigate top — {admin} — every {:.1}s, sorted by {sort:?} (Ctrl-C quits)\n",
            interval.as_secs_f64()
        );
        match &result {
            Ok(f) => frame.push_str(&render(f, by, sort)),
            Err(e) => {
                let _ = writeln!(frame, "{e}");
            }
        }
        print!("{frame}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
        result = fetch(&addr).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::summary::{Counts, DestinationSummary, Rate, WorkloadSummary};
    use std::collections::BTreeMap;

    fn w(name: &str, requests: u64, tokens: u64, cost: f64, errors: u64) -> WorkloadSummary {
        WorkloadSummary {
            name: name.into(),
            enrolled: true,
            counts: Counts {
                requests,
                errors,
                tokens_input: tokens,
                tokens_output: tokens / 2,
                cost_usd: cost,
                cache_hits: 1,
                cache_misses: 3,
                guardrails: BTreeMap::from([("block".to_string(), 2)]),
                bytes_sent: 2048,
                ..Counts::default()
            },
            ..WorkloadSummary::default()
        }
    }

    fn fetched() -> Fetched {
        Fetched {
            summary: Summary {
                workloads: vec![
                    w("alpha", 5, 1000, 0.5, 0),
                    w("ns/beta", 50, 10, 0.01, 3),
                    w("gamma\x1b[2J", 1, 0, 0.0, 9),
                ],
                destinations: vec![DestinationSummary {
                    workload: "alpha".into(),
                    destination: "openai".into(),
                    requests: 5,
                    connections: 2,
                    bytes_sent: 10,
                    bytes_received: 3 * 1024 * 1024,
                    ebpf: BTreeMap::from([("denied".to_string(), 4)]),
                    tokens_input: 120,
                    tokens_output: 30,
                    cost_usd: 0.25,
                    guardrails: BTreeMap::from([("block".to_string(), 1)]),
                    mcp_calls: 0,
                    ..DestinationSummary::default()
                }],
                ..Summary::default()
            },
            recent: Some(Rates {
                workloads: BTreeMap::from([(
                    "alpha".to_string(),
                    Rate {
                        requests_per_s: 1.5,
                        tokens_per_min: 300.0,
                        ..Rate::default()
                    },
                )]),
                ..Rates::default()
            }),
        }
    }

    fn names(table: &str) -> Vec<String> {
        table
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn sorted_by_the_chosen_column() {
        let f = fetched();
        let t = render(&f, By::Workload, SortBy::Requests);
        assert_eq!(names(&t), ["ns/beta", "alpha", "gamma?[2J"]);
        assert_eq!(
            names(&render(&f, By::Workload, SortBy::Tokens)),
            ["alpha", "ns/beta", "gamma?[2J"]
        );
        assert_eq!(
            names(&render(&f, By::Workload, SortBy::Errors)),
            ["gamma?[2J", "ns/beta", "alpha"]
        );
        assert_eq!(
            names(&render(&f, By::Workload, SortBy::Cost)),
            ["alpha", "ns/beta", "gamma?[2J"]
        );
        assert_eq!(
            names(&render(&f, By::Workload, SortBy::Name)),
            ["alpha", "gamma?[2J", "ns/beta"]
        );
        assert_eq!(
            names(&render(&f, By::Workload, SortBy::Rate))[0],
            "alpha",
            "only alpha has a rate"
        );
    }

    #[test]
    fn a_row_carries_every_column_and_no_control_codes() {
        let t = render(&fetched(), By::Workload, SortBy::Name);
        let header: Vec<_> = t.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header[0], "WORKLOAD");
        assert_eq!(header.len(), 14);
        let alpha: Vec<_> = t.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            alpha,
            [
                "alpha", "5", "1.50", "0", "0", "1000", "500", "300", "0.500000", "25.0%", "2",
                "0", "0", "2.0KiB"
            ]
        );
        assert!(!t.contains('\x1b'), "a name cannot drive the terminal");
        // Columns line up: every line has the header's width or less.
        let width = t.lines().next().unwrap().len();
        assert!(t.lines().all(|l| l.chars().count() <= width + 2), "{t}");
    }

    #[test]
    fn by_destination() {
        let t = render(&fetched(), By::Destination, SortBy::Requests);
        let lines: Vec<_> = t.lines().collect();
        assert!(lines[0].starts_with("WORKLOAD  DESTINATION  REQUESTS"));
        let cells: Vec<_> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "alpha", "openai", "5", "0", "0", "120", "30", "0.250000", "1", "0", "2", "4",
                "10B", "3.0MiB"
            ]
        );
    }

    #[test]
    fn empty_node_says_so() {
        let f = Fetched {
            summary: Summary::default(),
            recent: None,
        };
        let t = render(&f, By::Workload, SortBy::Requests);
        assert!(t.contains("no workloads enrolled"), "{t}");
    }

    #[test]
    fn admin_addresses() {
        assert_eq!(
            host_port("http://127.0.0.1:15000").unwrap(),
            "127.0.0.1:15000"
        );
        assert_eq!(host_port("127.0.0.1:15000/").unwrap(), "127.0.0.1:15000");
        assert_eq!(host_port("http://[::1]:15000").unwrap(), "[::1]:15000");
        for bad in ["https://h:1", "http://h", "", "http://h:1/x"] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
        assert_eq!(
            default_admin("0.0.0.0:15000".parse().unwrap()),
            "http://127.0.0.1:15000"
        );
        assert_eq!(default_admin("[::]:1".parse().unwrap()), "http://[::1]:1");
        assert_eq!(
            default_admin("10.1.2.3:9".parse().unwrap()),
            "http://10.1.2.3:9"
        );
    }

    #[tokio::test]
    async fn a_down_daemon_is_named() {
        // A port that was free a moment ago: nothing listens there.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let e = fetch(&addr).await.unwrap_err().to_string();
        assert!(e.contains(&addr) && e.contains("cannot reach"), "{e}");
    }
}
