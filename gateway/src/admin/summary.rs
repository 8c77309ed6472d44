//! The per-workload summary the dashboard and `trigate top` show, computed
//! from the gathered Prometheus registry (no counters of its own on the
//! request path), and a bounded history of samples from which rates are
//! served.
use std::collections::{BTreeMap, HashMap, VecDeque};

use prometheus::proto::MetricFamily;
use serde::{Deserialize, Serialize};

/// Guardrail actions every summary names, even at zero, so readers need
/// no special case for a missing key.
const GUARD_ACTIONS: [&str; 3] = ["block", "redact", "log"];

/// Most tools listed per workload.
const TOP_TOOLS: usize = 5;

/// Counts of one workload (or of the node, or of one model).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// HTTP requests through any gate (`trigate_http_requests_total`).
    pub requests: u64,
    /// Requests answered 5xx (upstream failures and gateway errors).
    pub errors: u64,
    /// Requests answered 4xx by the gateway or upstream (refused by a
    /// policy, limit or guardrail, or bad input); 499 (client left) is
    /// neither.
    pub refused: u64,
    pub tokens_input: u64,
    pub tokens_output: u64,
    pub cost_usd: f64,
    /// LLM answer cache hits (exact and semantic) and misses.
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// LLM requests refused by a token, request or cost limit.
    pub limit_refusals: u64,
    /// Guardrail findings acted on, by action (`block`, `redact`, `log`,
    /// and the judge outcomes).
    pub guardrails: BTreeMap<String, u64>,
    /// MCP JSON-RPC calls, and those refused (by policy or a per-tool
    /// limit: any decision but `allowed`).
    pub mcp_calls: u64,
    pub mcp_denied: u64,
    /// connect() calls the eBPF programs refused (`deny` destinations).
    pub denied_connects: u64,
    pub connections: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// One workload's counts, the models it used and its busiest MCP tools.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSummary {
    pub name: String,
    /// Whether the workload is enrolled now (counts outlive unenrolment).
    pub enrolled: bool,
    #[serde(flatten)]
    pub counts: Counts,
    /// Tokens and cost by served model.
    pub models: BTreeMap<String, ModelCounts>,
    /// `tools/call` counts by tool, most called first.
    pub top_tools: Vec<ToolCount>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelCounts {
    pub tokens_input: u64,
    pub tokens_output: u64,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCount {
    pub tool: String,
    pub calls: u64,
}

/// What a workload sent to one destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DestinationSummary {
    pub workload: String,
    pub destination: String,
    pub requests: u64,
    pub errors: u64,
    pub refused: u64,
    pub connections: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Kernel connect() outcomes (`redirected`, `denied`, `observed`, …).
    pub ebpf: BTreeMap<String, u64>,
    /// LLM tokens and spend of calls to this destination.
    pub tokens_input: u64,
    pub tokens_output: u64,
    pub cost_usd: f64,
    /// Answer cache lookups (exact and semantic hits; misses).
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Guardrail findings acted on, by action.
    pub guardrails: BTreeMap<String, u64>,
    /// MCP calls, and those refused (denied or limited).
    pub mcp_calls: u64,
    pub mcp_denied: u64,
}

/// The node at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub totals: Counts,
    /// Sorted by name.
    pub workloads: Vec<WorkloadSummary>,
    /// Sorted by workload, then destination.
    pub destinations: Vec<DestinationSummary>,
    /// Node-wide tokens and cost by served model.
    pub models: BTreeMap<String, ModelCounts>,
    /// Node-wide `tools/call` counts, most called first.
    pub top_tools: Vec<ToolCount>,
    /// Node-wide kernel connect() outcomes.
    pub ebpf: BTreeMap<String, u64>,
}

impl Summary {
    pub fn workload(&self, name: &str) -> Option<&WorkloadSummary> {
        self.workloads.iter().find(|w| w.name == name)
    }
}

/// One sample of a metric family: its labels and value.
struct Sample<'a> {
    labels: Vec<(&'a str, &'a str)>,
    value: f64,
}

impl Sample<'_> {
    fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v)
    }
}

/// Counters and gauges by family name (histograms are not summed here).
fn index(families: &[MetricFamily]) -> HashMap<&str, Vec<Sample<'_>>> {
    let mut out: HashMap<&str, Vec<Sample<'_>>> = HashMap::new();
    for f in families {
        let samples = f
            .get_metric()
            .iter()
            .map(|m| Sample {
                labels: m
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect(),
                // A family is either a counter or a gauge here; the other
                // field is the default 0.
                value: m.get_counter().get_value() + m.get_gauge().get_value(),
            })
            .collect();
        out.insert(f.name(), samples);
    }
    out
}

/// Counter values are whole numbers stored as f64; negative or NaN never
/// happen for counters, and map to 0 rather than wrapping.
fn whole(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

fn status_class(status: &str) -> (u64, u64) {
    // (errors, refused) a status adds per request.
    match status.parse::<u16>() {
        Ok(500..=599) => (1, 0),
        Ok(499) => (0, 0),
        Ok(400..=498) => (0, 1),
        _ => (0, 0),
    }
}

/// The summary of everything the registry counted, with `enrolled` (the
/// workloads enrolled now) listed even when they sent nothing.
pub fn summarize(families: &[MetricFamily], enrolled: &[String]) -> Summary {
    let idx = index(families);
    let samples = |name: &str| idx.get(name).map(Vec::as_slice).unwrap_or(&[]);
    let mut workloads: BTreeMap<String, WorkloadSummary> = BTreeMap::new();
    let mut pairs: BTreeMap<(String, String), DestinationSummary> = BTreeMap::new();
    let mut tools: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut s = Summary::default();

    fn ws<'m>(m: &'m mut BTreeMap<String, WorkloadSummary>, name: &str) -> &'m mut WorkloadSummary {
        m.entry(name.to_owned()).or_insert_with(|| WorkloadSummary {
            name: name.to_owned(),
            ..WorkloadSummary::default()
        })
    }
    fn wl<'m>(m: &'m mut BTreeMap<String, WorkloadSummary>, name: &str) -> &'m mut Counts {
        &mut ws(m, name).counts
    }
    fn pair<'m>(
        m: &'m mut BTreeMap<(String, String), DestinationSummary>,
        workload: &str,
        destination: &str,
    ) -> &'m mut DestinationSummary {
        m.entry((workload.to_owned(), destination.to_owned()))
            .or_insert_with(|| DestinationSummary {
                workload: workload.to_owned(),
                destination: destination.to_owned(),
                ..DestinationSummary::default()
            })
    }

    for x in samples("trigate_http_requests_total") {
        let n = whole(x.value);
        let (e, r) = status_class(x.label("status"));
        let c = wl(&mut workloads, x.label("workload"));
        c.requests += n;
        c.errors += e * n;
        c.refused += r * n;
        let p = pair(&mut pairs, x.label("workload"), x.label("destination"));
        p.requests += n;
        p.errors += e * n;
        p.refused += r * n;
    }
    for x in samples("trigate_llm_tokens_total") {
        let n = whole(x.value);
        let model = served_model(x);
        let w = x.label("workload");
        let input = match x.label("gen_ai_token_type") {
            "input" => true,
            "output" => false,
            // cached_input is part of input, reasoning part of output.
            _ => continue,
        };
        let one = ws(&mut workloads, w);
        let node_model = s.models.entry(model.to_owned()).or_default();
        let one_model = one.models.entry(model.to_owned()).or_default();
        let p = pair(&mut pairs, w, x.label("destination"));
        if input {
            one.counts.tokens_input += n;
            one_model.tokens_input += n;
            node_model.tokens_input += n;
            p.tokens_input += n;
        } else {
            one.counts.tokens_output += n;
            one_model.tokens_output += n;
            node_model.tokens_output += n;
            p.tokens_output += n;
        }
    }
    for x in samples("trigate_llm_cost_usd_total") {
        let w = x.label("workload");
        let model = x.label("gen_ai_response_model");
        let one = ws(&mut workloads, w);
        one.counts.cost_usd += x.value;
        one.models.entry(model.to_owned()).or_default().cost_usd += x.value;
        s.models.entry(model.to_owned()).or_default().cost_usd += x.value;
        pair(&mut pairs, w, x.label("destination")).cost_usd += x.value;
    }
    for x in samples("trigate_llm_cache_requests_total") {
        let n = whole(x.value);
        let w = x.label("workload");
        let hit = match x.label("result") {
            "hit" | "semantic_hit" => true,
            "miss" => false,
            _ => continue,
        };
        let c = wl(&mut workloads, w);
        let p = pair(&mut pairs, w, x.label("destination"));
        if hit {
            c.cache_hits += n;
            p.cache_hits += n;
        } else {
            c.cache_misses += n;
            p.cache_misses += n;
        }
    }
    for x in samples("trigate_llm_limit_refusals_total") {
        wl(&mut workloads, x.label("workload")).limit_refusals += whole(x.value);
    }
    for x in samples("trigate_guardrail_findings_total") {
        let n = whole(x.value);
        let w = x.label("workload");
        let action = x.label("action");
        *wl(&mut workloads, w)
            .guardrails
            .entry(action.to_owned())
            .or_default() += n;
        *pair(&mut pairs, w, x.label("destination"))
            .guardrails
            .entry(action.to_owned())
            .or_default() += n;
    }
    for x in samples("mcp_requests_total") {
        let n = whole(x.value);
        let w = x.label("workload");
        let denied = x.label("decision") != "allowed";
        let c = wl(&mut workloads, w);
        c.mcp_calls += n;
        c.mcp_denied += u64::from(denied) * n;
        // `server` is the destination the pod called (a federation's too).
        let p = pair(&mut pairs, w, x.label("server"));
        p.mcp_calls += n;
        p.mcp_denied += u64::from(denied) * n;
        if x.label("method") == "tools/call" && !x.label("tool").is_empty() {
            *tools
                .entry(w.to_owned())
                .or_default()
                .entry(x.label("tool").to_owned())
                .or_default() += n;
        }
    }
    for x in samples("trigate_ebpf_connects_total") {
        let n = whole(x.value);
        let outcome = x.label("outcome");
        if outcome == "denied" {
            wl(&mut workloads, x.label("workload")).denied_connects += n;
        }
        *pair(&mut pairs, x.label("workload"), x.label("destination"))
            .ebpf
            .entry(outcome.to_owned())
            .or_default() += n;
        *s.ebpf.entry(outcome.to_owned()).or_default() += n;
    }
    for x in samples("trigate_connections_total") {
        let n = whole(x.value);
        wl(&mut workloads, x.label("workload")).connections += n;
        pair(&mut pairs, x.label("workload"), x.label("destination")).connections += n;
    }
    for x in samples("trigate_connection_bytes_total") {
        let n = whole(x.value);
        let sent = match x.label("direction") {
            "sent" => true,
            "received" => false,
            _ => continue,
        };
        let c = wl(&mut workloads, x.label("workload"));
        let p = pair(&mut pairs, x.label("workload"), x.label("destination"));
        if sent {
            c.bytes_sent += n;
            p.bytes_sent += n;
        } else {
            c.bytes_received += n;
            p.bytes_received += n;
        }
    }

    for name in enrolled {
        ws(&mut workloads, name).enrolled = true;
    }
    let mut node_tools: BTreeMap<String, u64> = BTreeMap::new();
    for w in workloads.values_mut() {
        for a in GUARD_ACTIONS {
            w.counts.guardrails.entry(a.to_owned()).or_default();
        }
        if let Some(t) = tools.get(&w.name) {
            w.top_tools = top(t);
            for (tool, n) in t {
                *node_tools.entry(tool.clone()).or_default() += n;
            }
        }
        add(&mut s.totals, &w.counts);
    }
    for a in GUARD_ACTIONS {
        s.totals.guardrails.entry(a.to_owned()).or_default();
    }
    s.top_tools = top(&node_tools);
    s.workloads = workloads.into_values().collect();
    s.destinations = pairs
        .into_values()
        .map(|mut d| {
            for a in GUARD_ACTIONS {
                d.guardrails.entry(a.to_owned()).or_default();
            }
            d
        })
        .collect();
    s
}

/// The model that answered, or the one asked for when the provider did
/// not say.
fn served_model<'a>(x: &'a Sample<'_>) -> &'a str {
    match x.label("gen_ai_response_model") {
        "" => x.label("gen_ai_request_model"),
        m => m,
    }
}

fn top(tools: &BTreeMap<String, u64>) -> Vec<ToolCount> {
    let mut v: Vec<_> = tools
        .iter()
        .map(|(t, n)| ToolCount {
            tool: t.clone(),
            calls: *n,
        })
        .collect();
    // Most calls first; equal counts by name, so the order is stable.
    v.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.tool.cmp(&b.tool)));
    v.truncate(TOP_TOOLS);
    v
}

fn add(into: &mut Counts, c: &Counts) {
    into.requests += c.requests;
    into.errors += c.errors;
    into.refused += c.refused;
    into.tokens_input += c.tokens_input;
    into.tokens_output += c.tokens_output;
    into.cost_usd += c.cost_usd;
    into.cache_hits += c.cache_hits;
    into.cache_misses += c.cache_misses;
    into.limit_refusals += c.limit_refusals;
    for (a, n) in &c.guardrails {
        *into.guardrails.entry(a.clone()).or_default() += n;
    }
    into.mcp_calls += c.mcp_calls;
    into.mcp_denied += c.mcp_denied;
    into.denied_connects += c.denied_connects;
    into.connections += c.connections;
    into.bytes_sent += c.bytes_sent;
    into.bytes_received += c.bytes_received;
}

// ---------------------------------------------------------------- history

/// What one history sample keeps: the cumulative numbers rates are made of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    /// Milliseconds since the Unix epoch.
    pub t_ms: u64,
    pub totals: Counts,
    pub workloads: BTreeMap<String, Counts>,
    pub models: BTreeMap<String, ModelCounts>,
    pub ebpf: BTreeMap<String, u64>,
}

impl Point {
    pub fn of(t_ms: u64, s: &Summary) -> Point {
        Point {
            t_ms,
            totals: s.totals.clone(),
            workloads: s
                .workloads
                .iter()
                .map(|w| (w.name.clone(), w.counts.clone()))
                .collect(),
            models: s.models.clone(),
            ebpf: s.ebpf.clone(),
        }
    }
}

/// A bounded ring of samples, oldest first.
#[derive(Debug)]
pub struct History {
    points: VecDeque<Point>,
    capacity: usize,
}

impl History {
    pub fn new(capacity: usize) -> History {
        History {
            points: VecDeque::with_capacity(capacity),
            capacity: capacity.max(2),
        }
    }

    pub fn push(&mut self, p: Point) {
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back(p);
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Rates between consecutive samples of the last `window_ms`.
    pub fn rates(&self, window_ms: u64) -> Vec<Rates> {
        let Some(last) = self.points.back() else {
            return Vec::new();
        };
        let from = last.t_ms.saturating_sub(window_ms);
        let kept: Vec<&Point> = self.points.iter().filter(|p| p.t_ms >= from).collect();
        // One sample before the window too, so the first rate in it exists.
        let start = self
            .points
            .iter()
            .rev()
            .find(|p| p.t_ms < from)
            .into_iter()
            .chain(kept.iter().copied());
        let v: Vec<&Point> = start.collect();
        v.windows(2).filter_map(|w| rates(w[0], w[1])).collect()
    }

    /// Rates over the last `window_ms` as one interval (from the oldest
    /// sample inside the window to the newest), for a steadier "now".
    pub fn recent(&self, window_ms: u64) -> Option<Rates> {
        let last = self.points.back()?;
        let from = last.t_ms.saturating_sub(window_ms);
        let first = self.points.iter().find(|p| p.t_ms >= from)?;
        rates(first, last)
    }
}

/// Rates of one interval. Per second for requests and connects, per
/// minute for tokens and cost (how people budget them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// End of the interval, ms since the Unix epoch.
    pub t_ms: u64,
    pub seconds: f64,
    pub node: Rate,
    pub workloads: BTreeMap<String, Rate>,
    /// Tokens (input + output) per minute by served model.
    pub tokens_per_min_by_model: BTreeMap<String, f64>,
    /// Kernel connect() outcomes per second.
    pub ebpf_per_s: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub requests_per_s: f64,
    pub errors_per_s: f64,
    pub refused_per_s: f64,
    pub tokens_per_min: f64,
    pub cost_per_min: f64,
    pub mcp_calls_per_s: f64,
    /// Guardrail blocks in the interval.
    pub guardrail_blocks: u64,
    /// Hits over lookups in the interval; None without lookups.
    pub cache_hit_ratio: Option<f64>,
}

fn rates(a: &Point, b: &Point) -> Option<Rates> {
    if b.t_ms <= a.t_ms {
        return None;
    }
    let secs = (b.t_ms - a.t_ms) as f64 / 1000.0;
    let d = |x: u64, y: u64| y.saturating_sub(x) as f64;
    let zero = Counts::default();
    let rate = |x: &Counts, y: &Counts| {
        let hits = d(x.cache_hits, y.cache_hits);
        let lookups = hits + d(x.cache_misses, y.cache_misses);
        let blocks = |c: &Counts| c.guardrails.get("block").copied().unwrap_or(0);
        Rate {
            requests_per_s: d(x.requests, y.requests) / secs,
            errors_per_s: d(x.errors, y.errors) / secs,
            refused_per_s: d(x.refused, y.refused) / secs,
            tokens_per_min: (d(x.tokens_input, y.tokens_input)
                + d(x.tokens_output, y.tokens_output))
                * 60.0
                / secs,
            cost_per_min: (y.cost_usd - x.cost_usd).max(0.0) * 60.0 / secs,
            mcp_calls_per_s: d(x.mcp_calls, y.mcp_calls) / secs,
            guardrail_blocks: blocks(y).saturating_sub(blocks(x)),
            cache_hit_ratio: (lookups > 0.0).then(|| hits / lookups),
        }
    };
    let zero_model = ModelCounts::default();
    Some(Rates {
        t_ms: b.t_ms,
        seconds: secs,
        node: rate(&a.totals, &b.totals),
        // A workload new in `b` started from zero.
        workloads: b
            .workloads
            .iter()
            .map(|(n, y)| (n.clone(), rate(a.workloads.get(n).unwrap_or(&zero), y)))
            .collect(),
        tokens_per_min_by_model: b
            .models
            .iter()
            .map(|(m, y)| {
                let x = a.models.get(m).unwrap_or(&zero_model);
                let n = d(x.tokens_input, y.tokens_input) + d(x.tokens_output, y.tokens_output);
                (m.clone(), n * 60.0 / secs)
            })
            .collect(),
        ebpf_per_s: b
            .ebpf
            .iter()
            .map(|(o, y)| (o.clone(), d(a.ebpf.get(o).copied().unwrap_or(0), *y) / secs))
            .collect(),
    })
}

// ---------------------------------------------------------------- paths

/// The workload name in `/workloads/<name>/summary`: everything between,
/// so Kubernetes names (`ns/pod`) work plain or percent-encoded.
pub fn summary_path_name(path: &str) -> Option<Result<String, String>> {
    let name = path.strip_prefix("/workloads/")?.strip_suffix("/summary")?;
    if name.is_empty() {
        return None;
    }
    Some(percent_decode(name))
}

/// `%XX` decoding (UTF-8); a `+` stays a `+` (this is a path, not a form).
pub fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding at byte {i} of {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

/// `?window=<seconds>` of a query string, in ms, clamped to what the
/// history holds; the default is all of it.
pub fn window_ms(query: Option<&str>, max_ms: u64) -> Result<u64, String> {
    let Some(v) = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("window="))
    else {
        return Ok(max_ms);
    };
    let secs: u64 = v
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("window: {v:?} is not a number of seconds (e.g. ?window=60)"))?;
    if secs == 0 {
        return Err("window: must be at least 1 second".into());
    }
    Ok(secs.saturating_mul(1000).min(max_ms))
}

#[cfg(test)]
#[path = "summary_tests.rs"]
mod tests;
