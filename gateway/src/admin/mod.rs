//! The admin endpoint on loopback: health, metrics, workloads (list, enroll,
//! unenroll), destinations and the run-time log filter.
use std::{convert::Infallible, sync::atomic::Ordering, sync::Arc};

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

pub async fn serve(listener: TcpListener, node: Arc<Node>) {
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
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let node = Arc::clone(&node);
                async move { Ok::<_, Infallible>(route(&node, req).await) }
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

async fn route(node: &Arc<Node>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n"),
        (&Method::GET, ["readyz"]) => {
            if node.ready.load(Ordering::SeqCst) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::GET, ["metrics"]) => metrics(node),
        (&Method::GET, ["workloads"]) => {
            let views: Vec<_> = node.workloads.all().iter().map(|w| w.view()).collect();
            json(StatusCode::OK, &views)
        }
        (&Method::POST, ["workloads"]) => enroll(node, req).await,
        (&Method::DELETE, ["workloads", name]) => match workload::unenroll(node, name) {
            Ok(_) => empty(StatusCode::NO_CONTENT),
            Err(e) => error(enroll_status(&e), e.to_string()),
        },
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
        (_, ["healthz" | "readyz" | "metrics" | "destinations" | "logging"])
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

fn metrics(node: &Node) -> Response<Body> {
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
    let mut resp = text(StatusCode::OK, "");
    *resp.body_mut() = Full::new(Bytes::from(node.metrics.render()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
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
