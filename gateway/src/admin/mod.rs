//! The admin endpoint on loopback: health, metrics, workloads (list, enroll,
//! unenroll), destinations, the run-time log filter, the per-workload
//! summary with its history, and the dashboard. An optional public listener
//! serves only the read-only part.
pub mod summary;

use std::{
    convert::Infallible,
    sync::atomic::Ordering,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::{
    config::WorkloadConfig,
    daemon::Node,
    telemetry::ebpf_outcome_label,
    workload::{self, EnrollError, EnrollSource},
};

/// Enrollment bodies are small JSON objects; anything bigger is a mistake.
const MAX_BODY: usize = 64 * 1024;

type Body = Full<Bytes>;

/// How often the summary history takes a sample.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept: ten minutes.
const HISTORY_SAMPLES: usize = 300;
/// The interval `/api/summary` reports its `recent` rates over.
const RECENT_MS: u64 = 10_000;

/// What both admin listeners share.
pub struct Admin {
    node: Arc<Node>,
    history: Mutex<summary::History>,
    /// Mirroring the kernel counters into the registry is a read and an add;
    /// two at once (a scrape and a sample) would add the same growth twice.
    kernel_sync: Mutex<()>,
}

/// Serves the admin endpoint, the public read-only listener when there is
/// one, and samples the summary history until the node stops.
pub fn spawn(admin: TcpListener, public: Option<TcpListener>, node: Arc<Node>) {
    let state = Arc::new(Admin {
        node,
        history: Mutex::new(summary::History::new(HISTORY_SAMPLES)),
        kernel_sync: Mutex::new(()),
    });
    tokio::spawn(sample(Arc::clone(&state)));
    if let Some(public) = public {
        tokio::spawn(serve(public, Arc::clone(&state), Access::Public));
    }
    tokio::spawn(serve(admin, state, Access::Full));
}

/// Which endpoints a listener serves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    Full,
    /// Read-only GETs: health, metrics, summaries, dashboard.
    Public,
}

async fn sample(state: Arc<Admin>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.node.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = current(&state);
        let point = summary::Point::of(now_ms(), &s);
        lock(&state.history).push(point);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A poisoned lock only means a panic elsewhere mid-update; the data is
/// counters and samples, still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The summary now, from the registry (after the kernel counters).
fn current(state: &Admin) -> summary::Summary {
    sync_gauges(state);
    let enrolled: Vec<String> = state
        .node
        .workloads
        .all()
        .iter()
        .map(|w| w.name.to_string())
        .collect();
    summary::summarize(&state.node.metrics.registry.gather(), &enrolled)
}

async fn serve(listener: TcpListener, state: Arc<Admin>, access: Access) {
    let node = Arc::clone(&state.node);
    loop {
        let (stream, peer) = tokio::select! {
            _ = node.stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(&state, req, access).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(client = %peer, error = %e, "admin connection ended with an error");
            }
        });
    }
}

async fn route(state: &Arc<Admin>, req: Request<Incoming>, access: Access) -> Response<Body> {
    let node = &state.node;
    let path = req.uri().path().to_string();
    if access == Access::Public && !(req.method() == Method::GET && is_read_only(&path)) {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "{} {path} is not served on the public admin listener (read-only: /healthz, \
                 /readyz, /metrics, /api/summary, /workloads/<name>/summary, /dashboard)",
                req.method()
            ),
        );
    }
    if req.method() == Method::GET {
        if let Some(name) = summary::summary_path_name(&path) {
            return match name {
                Ok(name) => workload_summary(state, &name),
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            };
        }
    }
    // Discovered names span segments (`ns/pod`), plain or percent-encoded.
    if req.method() == Method::DELETE {
        if let Some(rest) = path.strip_prefix("/workloads/").filter(|r| !r.is_empty()) {
            return match summary::percent_decode(rest.trim_end_matches('/')) {
                Ok(name) => match workload::unenroll(node, &name) {
                    Ok(_) => empty(StatusCode::NO_CONTENT),
                    Err(e) => error(enroll_status(&e), e.to_string()),
                },
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            };
        }
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, [""] | ["dashboard"]) => asset(DASHBOARD_HTML, "text/html; charset=utf-8"),
        (&Method::GET, ["dashboard", "app.js"]) => {
            asset(DASHBOARD_JS, "text/javascript; charset=utf-8")
        }
        (&Method::GET, ["dashboard", "style.css"]) => {
            asset(DASHBOARD_CSS, "text/css; charset=utf-8")
        }
        (&Method::GET, ["api", "summary"]) => summary_now(state),
        (&Method::GET, ["api", "summary", "history"]) => history(state, req.uri().query()),
        (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n"),
        (&Method::GET, ["readyz"]) => {
            if node.ready.load(Ordering::SeqCst) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::GET, ["metrics"]) => metrics(state),
        (&Method::GET, ["workloads"]) => {
            let views: Vec<_> = node.workloads.all().iter().map(|w| w.view()).collect();
            json(StatusCode::OK, &views)
        }
        (&Method::POST, ["workloads"]) => enroll(node, req).await,
        (&Method::GET, ["destinations"]) => destinations(node),
        (&Method::PUT, ["logging"]) => {
            let level = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("level=")))
                .map(|v| v.replace("%2C", ",").replace("%3D", "="));
            match level {
                None => error(
                    StatusCode::BAD_REQUEST,
                    "missing ?level=<filter>, e.g. ?level=debug".into(),
                ),
                Some(level) => match node.log.set(&level) {
                    Ok(()) => {
                        tracing::info!(level = %level, "log filter changed");
                        text(StatusCode::OK, "ok\n")
                    }
                    Err(e) => error(StatusCode::BAD_REQUEST, e),
                },
            }
        }
        (_, ["healthz" | "readyz" | "metrics" | "destinations" | "logging" | "dashboard"])
        | (_, ["api", "summary"] | ["api", "summary", "history"])
        | (_, ["workloads"])
        | (_, ["workloads", _]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} not allowed on {path}", req.method()),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no admin endpoint at {path}"),
        ),
    }
}

async fn enroll(node: &Arc<Node>, req: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )
        }
    };
    let spec: WorkloadConfig = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid workload JSON: {e}"),
            )
        }
    };
    if let Err(e) = spec.validate(node.listener.mode) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    match workload::enroll(node, &spec, EnrollSource::Admin).await {
        Ok(w) => json(StatusCode::CREATED, &w.view()),
        Err(e) => {
            tracing::warn!(workload = %spec.name, error = %e, "enrollment refused");
            error(enroll_status(&e), e.to_string())
        }
    }
}

fn enroll_status(e: &EnrollError) -> StatusCode {
    match e {
        EnrollError::Exists(_) => StatusCode::CONFLICT,
        EnrollError::Unknown(_) => StatusCode::NOT_FOUND,
        EnrollError::Invalid { .. } | EnrollError::Kernel { .. } | EnrollError::Listener { .. } => {
            StatusCode::BAD_REQUEST
        }
    }
}

/// Paths the public listener serves (GET only).
pub fn is_read_only(path: &str) -> bool {
    matches!(
        path,
        "/" | "/dashboard"
            | "/dashboard/"
            | "/dashboard/app.js"
            | "/dashboard/style.css"
            | "/healthz"
            | "/readyz"
            | "/metrics"
            | "/api/summary"
            | "/api/summary/history"
    ) || summary::summary_path_name(path).is_some()
}

// The dashboard: static files embedded in the binary (no CDN, no fonts).
const DASHBOARD_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("dashboard/app.js");
const DASHBOARD_CSS: &str = include_str!("dashboard/style.css");

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    // Only our own files run, and nothing is framed elsewhere: names shown
    // come from outside (workloads, tools) and the page never needs more.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    r
}

#[derive(Serialize)]
struct SummaryView<'a> {
    t_ms: u64,
    #[serde(flatten)]
    summary: &'a summary::Summary,
    /// Rates over the last ten seconds of history (none until two samples).
    recent: Option<summary::Rates>,
}

fn summary_now(state: &Admin) -> Response<Body> {
    let s = current(state);
    let recent = lock(&state.history).recent(RECENT_MS);
    json(
        StatusCode::OK,
        &SummaryView {
            t_ms: now_ms(),
            summary: &s,
            recent,
        },
    )
}

fn workload_summary(state: &Admin, name: &str) -> Response<Body> {
    let s = current(state);
    let Some(w) = s.workload(name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no workload named {name:?} is enrolled or has been counted"),
        );
    };
    let destinations: Vec<_> = s
        .destinations
        .iter()
        .filter(|d| d.workload == name)
        .collect();
    let recent = lock(&state.history)
        .recent(RECENT_MS)
        .and_then(|r| r.workloads.get(name).cloned());
    json(
        StatusCode::OK,
        &serde_json::json!({
            "workload": w,
            "destinations": destinations,
            "recent": recent,
        }),
    )
}

fn history(state: &Admin, query: Option<&str>) -> Response<Body> {
    let max = SAMPLE_EVERY.as_millis() as u64 * HISTORY_SAMPLES as u64;
    let window = match summary::window_ms(query, max) {
        Ok(w) => w,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let points = lock(&state.history).rates(window);
    json(
        StatusCode::OK,
        &serde_json::json!({
            "interval_ms": SAMPLE_EVERY.as_millis() as u64,
            "window_ms": window,
            "points": points,
        }),
    )
}

fn metrics(state: &Admin) -> Response<Body> {
    sync_gauges(state);
    let mut resp = text(StatusCode::OK, "");
    *resp.body_mut() = Full::new(Bytes::from(state.node.metrics.render()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

/// Brings the values kept outside the registry into it: the kernel's
/// counters, leaf certificates, ejected endpoints.
fn sync_gauges(state: &Admin) {
    let node = &state.node;
    let _one_at_a_time = lock(&state.kernel_sync);
    // The kernel's per-CPU counters are the source of truth; mirror them
    // into the registry at scrape time by adding what grew since the last
    // scrape (they only ever grow, and nothing else touches this family).
    for (key, total) in node.interceptor.counters() {
        let workload = node
            .workloads
            .by_id(key.workload_id)
            .map(|w| w.name.to_string())
            .unwrap_or_else(|| format!("id:{}", key.workload_id));
        let destination = node
            .destinations
            .load()
            .by_id(key.dest_id)
            .map(|d| d.name.to_string())
            .unwrap_or_else(|| format!("id:{}", key.dest_id));
        let counter = node.metrics.ebpf_connects.with_label_values(&[
            &workload,
            &destination,
            ebpf_outcome_label(key.outcome),
        ]);
        let seen = counter.get();
        if total > seen {
            counter.inc_by(total - seen);
        }
    }
    node.metrics
        .tls_leaf_certificates
        .set(node.tls.leaf_count() as i64);
    let now = std::time::Instant::now();
    for (name, cluster) in &node.api.load().clusters {
        node.metrics
            .cluster_ejected
            .with_label_values(&[name])
            .set(cluster.ejected(now) as i64);
    }
}

#[derive(Serialize)]
struct DestinationView {
    name: String,
    action: &'static str,
    ports: Vec<u16>,
    addresses: Vec<String>,
    unresolved: Vec<String>,
}

fn destinations(node: &Node) -> Response<Body> {
    let views: Vec<_> = node
        .destinations
        .load()
        .all()
        .iter()
        .map(|d| DestinationView {
            name: d.name.to_string(),
            action: d.action.as_str(),
            ports: d.ports.clone(),
            addresses: d.addresses().iter().map(ToString::to_string).collect(),
            unresolved: d.unresolved(),
        })
        .collect();
    json(StatusCode::OK, &views)
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(bytes) => {
            let mut r = Response::new(Full::new(Bytes::from(bytes)));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("serialising the answer failed: {e}"),
        ),
    }
}

fn error(status: StatusCode, message: String) -> Response<Body> {
    json_plain(status, &serde_json::json!({ "error": message }))
}

fn json_plain(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_listener_serves_only_read_only_paths() {
        for p in [
            "/",
            "/dashboard",
            "/dashboard/app.js",
            "/dashboard/style.css",
            "/healthz",
            "/readyz",
            "/metrics",
            "/api/summary",
            "/api/summary/history",
            "/workloads/ns/pod/summary",
        ] {
            assert!(is_read_only(p), "{p}");
        }
        for p in [
            "/workloads",
            "/workloads/a",
            "/destinations",
            "/logging",
            "/api",
            "/dashboard/other.js",
            "/metrics/x",
        ] {
            assert!(!is_read_only(p), "{p}");
        }
    }

    #[test]
    fn the_dashboard_never_renders_markup_from_data() {
        // Names on the page come from outside (workloads, tools, models):
        // the script builds nodes and sets textContent, never HTML.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!DASHBOARD_JS.contains(sink), "app.js uses {sink}");
        }
        // No CDN or external fonts: every URL the page loads is our own.
        for text in [DASHBOARD_HTML, DASHBOARD_CSS, DASHBOARD_JS] {
            assert!(!text.contains("http://") || text.contains("http://www.w3.org/2000/svg"));
            assert!(!text.contains("https://"));
            assert!(!text.contains("@import") && !text.contains("@font-face"));
        }
    }
}
