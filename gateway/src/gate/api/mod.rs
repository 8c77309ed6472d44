//! The API gate: HTTP/1.1 and HTTP/2 from the client (plaintext, or after
//! `terminate`), routes, the policy chain, pooled upstream connections,
//! one access-log line per request.
pub mod cache;
pub mod client;
pub mod cluster;
pub mod cors;
pub mod guard;
pub mod h1;
pub mod route;

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::{
    body::Incoming,
    header::{self, HeaderName, HeaderValue},
    Method, Request, Response, StatusCode, Uri, Version,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use self::{
    cache::{CacheKey, CachedResponse, ResponseCacheStore},
    client::{ApiBody, BoxError, Connector, PoolKey},
    cluster::{Cluster, Pick},
    cors::CorsAction,
    route::{apply_headers, host_of, rewrite_prefix, RequestFacts, RouteTable},
};
use crate::{
    config::{Config, GateKind, RateLimit, Route},
    daemon::Node,
    intercept::destinations::Destination,
    netns::Netns,
    policy::{
        auth::{authorize, Authenticator, Caller},
        guardrail::Session,
        limits::{Decision, Limiter},
    },
    telemetry::{
        access::{ConnectionLog, LlmRecord, Outcome},
        guard::Audit,
        logging::{AccessLine, Val},
        trace,
    },
    workload::Workload,
};

/// The api gate's policy, rebuilt on reload and read per request.
pub struct ApiPolicy {
    pub routes: RouteTable,
    pub clusters: std::collections::HashMap<String, Arc<Cluster>>,
    /// GET response caches, one per route that asks for one.
    pub caches: std::collections::HashMap<String, Arc<ResponseCacheStore>>,
    pub auth: Arc<Authenticator>,
    pub limiter: Arc<Limiter>,
    /// Stops this policy's background work (JWKS refresh) once replaced.
    refresh: tokio_util::sync::CancellationToken,
}

impl ApiPolicy {
    /// Compiles routes and builds authentication and limits; starts the
    /// JWKS refresh under `stop`. On a reload, `previous` lends what must
    /// survive it: fetched signing keys (else tokens would be refused until
    /// the next fetch) and the limiter with its buckets when the backend
    /// settings did not change (else every budget would reset).
    pub fn build(
        config: &Config,
        stop: &tokio_util::sync::CancellationToken,
        previous: Option<(&ApiPolicy, &Config)>,
    ) -> Result<ApiPolicy, String> {
        let routes = RouteTable::compile(&config.routes)?;
        let auth = Authenticator::new(&config.auth).map_err(|e| format!("auth: {e}"))?;
        let limiter = match previous {
            Some((p, old)) if old.rate_limits == config.rate_limits => Arc::clone(&p.limiter),
            _ => Limiter::new(&config.rate_limits).map_err(|e| format!("rate_limits: {e}"))?,
        };
        if let Some((p, _)) = previous {
            auth.inherit_keys(&p.auth);
        }
        let refresh = stop.child_token();
        auth.spawn_refresh(refresh.clone());
        Ok(ApiPolicy {
            routes,
            clusters: cluster::build(&config.clusters),
            caches: config
                .routes
                .iter()
                .filter_map(|r| {
                    r.cache
                        .as_ref()
                        .map(|c| (r.name.clone(), Arc::new(ResponseCacheStore::new(c))))
                })
                .collect(),
            auth,
            limiter,
            refresh,
        })
    }
}

impl Drop for ApiPolicy {
    fn drop(&mut self) {
        self.refresh.cancel();
    }
}

/// What every request of one client connection shares.
pub struct ConnContext {
    pub node: Arc<Node>,
    pub workload: Option<Arc<Workload>>,
    pub destination: Arc<Destination>,
    pub original_dst: SocketAddr,
    pub netns: Netns,
    /// TLS towards the upstream, verifying this name.
    pub upstream_tls: Option<String>,
}

/// Serves an accepted connection (plaintext, or the client side of a
/// terminated TLS connection) with the api gate; `upstream_tls` names the
/// upstream to verify when the gateway speaks TLS upstream.
pub async fn serve_accepted(
    node: &Arc<Node>,
    accepted: super::Accepted,
    destination: &Destination,
    upstream_tls: Option<String>,
) {
    let super::Accepted {
        stream,
        original_dst,
        netns,
        mut log,
        workload,
        ..
    } = accepted;
    serve_io(
        node,
        stream,
        original_dst,
        netns,
        workload,
        destination,
        upstream_tls,
        &mut log,
    )
    .await;
}

/// As [`serve_accepted`], for any stream (a TLS server stream).
#[allow(clippy::too_many_arguments)]
pub async fn serve_io<S>(
    node: &Arc<Node>,
    io: S,
    original_dst: SocketAddr,
    netns: Netns,
    workload: Option<Arc<Workload>>,
    destination: &Destination,
    upstream_tls: Option<String>,
    log: &mut ConnectionLog,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let destination = node
        .destinations
        .load()
        .all()
        .iter()
        .find(|d| d.name == destination.name)
        .cloned();
    let Some(destination) = destination else {
        log.fail(Outcome::IoError, "the destination was removed by a reload");
        return;
    };
    let cx = Arc::new(ConnContext {
        node: Arc::clone(node),
        workload,
        destination,
        original_dst,
        netns,
        upstream_tls,
    });
    // HTTP/1.1 on the relay (both gates), HTTP/2 through hyper. The
    // connection's own line counts what the client sent and was sent.
    let counts = Arc::new(ByteCounts::default());
    let io = Counted {
        io,
        counts: Arc::clone(&counts),
    };
    h1::serve(cx, io, log).await;
    log.bytes_sent = counts
        .from_client
        .load(std::sync::atomic::Ordering::Relaxed);
    log.bytes_received = counts.to_client.load(std::sync::atomic::Ordering::Relaxed);
}

/// Bytes through a client connection of an HTTP gate: `from_client` is
/// the log line's `bytes_sent` (towards the upstream), `to_client` its
/// `bytes_received`, as for L4 connections.
#[derive(Default)]
struct ByteCounts {
    from_client: std::sync::atomic::AtomicU64,
    to_client: std::sync::atomic::AtomicU64,
}

/// A client stream that counts its bytes into [`ByteCounts`] (shared: the
/// stream itself ends up inside hyper for HTTP/2 clients).
struct Counted<S> {
    io: S,
    counts: Arc<ByteCounts>,
}

impl<S> Counted<S> {
    /// Counts what a write wrote.
    fn wrote(&self, r: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = &r {
            self.counts
                .to_client
                .fetch_add(*n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before) as u64;
        if n > 0 {
            self.counts
                .from_client
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves a client connection with hyper (HTTP/2 clients, which the
/// [`h1`] relay hands over) until it closes or the daemon stops; the
/// connection's own access-log line records the outcome.
pub async fn serve<S>(cx: Arc<ConnContext>, io: S, log: &mut ConnectionLog)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = cx.node.config.load().http.clone();
    let stop = cx.node.stop.clone();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(http.max_header_bytes.max(8192))
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_millis(http.header_read_timeout_ms));
    builder
        .http2()
        .max_concurrent_streams(http.max_concurrent_streams)
        .timer(hyper_util::rt::TokioTimer::new());
    let service_cx = Arc::clone(&cx);
    // hyper's header timeout starts with the first byte; a client that
    // never sends one (half-open, or a probe) is closed by this instead.
    let first_request = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = Arc::clone(&first_request);
    let service = hyper::service::service_fn(move |req| {
        let cx = Arc::clone(&service_cx);
        seen.store(true, std::sync::atomic::Ordering::Relaxed);
        async move {
            Ok::<_, Infallible>(match cx.destination.gate {
                crate::config::GateKind::Llm => crate::gate::llm::handle(&cx, req).await,
                crate::config::GateKind::Mcp
                    if req.method() == Method::POST
                        || (req.method() == Method::GET
                            && crate::gate::mcp::serve::wants_stream(req.headers()))
                        || crate::gate::mcp::serve::federated(&cx) =>
                {
                    crate::gate::mcp::serve::handle(&cx, req).await
                }
                _ => handle(&cx, req).await,
            })
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let silent_for = Duration::from_millis(http.header_read_timeout_ms);
    let silent = async {
        tokio::time::sleep(silent_for).await;
        if first_request.load(std::sync::atomic::Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = silent => Err(format!("no request within {} ms", silent_for.as_millis()).into()),
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            // In-flight requests get a moment to finish; then the task ends.
            match tokio::time::timeout(Duration::from_secs(2), conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => Err("trigate is stopping".into()),
            }
        }
    };
    match result {
        Ok(()) => log.succeed(),
        // Malformed requests, oversized heads, silent clients: hyper answers
        // 400/431 itself where it can; each is counted and logged here.
        Err(e) => {
            cx.node
                .metrics
                .http_connection_errors
                .with_label_values(&[cx.destination.gate.label()])
                .inc();
            log.fail(Outcome::IoError, format!("HTTP connection: {e}"));
        }
    }
}

/// The policy chain's outcome for one request, whatever the transport.
pub(crate) enum Verdict<'p> {
    /// Answered by the gateway (a refusal, a CORS preflight, a cache hit):
    /// the response and the outcome the access log records.
    Answer(Response<ApiBody>, &'static str),
    /// Go upstream, then apply [`Plan::finish`] to the response.
    Forward(Box<Plan<'p>>),
}

/// What the chain decided for a request that goes upstream.
pub(crate) struct Plan<'p> {
    pub route: Option<&'p Route>,
    /// Request authority (HTTP/2 `:authority`, else `Host`).
    pub authority: Option<HeaderValue>,
    pub timeout: Duration,
    cors_headers: Option<hyper::HeaderMap>,
    /// (limit, remaining, reset) of the last limit that admitted it.
    limit_headers: Option<(u64, u64, Duration)>,
    /// A cache miss to fill: store, key, the request's headers (Vary and
    /// Cache-Control are read from them) and the route's entry limit.
    pub cache: Option<CacheFill>,
    /// The workload's guardrails (`api` destinations whose workload a
    /// policy selects): the transport reads textual bodies whole and has
    /// them checked before they travel on.
    pub guard: Option<guard::BodyGuard>,
    /// The verified JWT's claims on `mcp` destinations (MCP policies may
    /// select by them).
    pub jwt_claims: Option<serde_json::Map<String, serde_json::Value>>,
}

pub(crate) struct CacheFill {
    pub store: Arc<ResponseCacheStore>,
    pub key: CacheKey,
    pub request_headers: hyper::HeaderMap,
    pub max_entry: usize,
}

/// Serves one request on hyper's transport (HTTP/2 clients): the policy
/// chain, then the upstream through the pooled clients.
async fn handle(cx: &Arc<ConnContext>, req: Request<Incoming>) -> Response<ApiBody> {
    let policy = cx.node.api.load_full();
    let (mut parts, body) = req.into_parts();
    let mut rlog = RequestLog::start(cx, &parts);
    let mut plan = match decide(cx, &policy, &mut parts, &mut rlog).await {
        Verdict::Answer(resp, outcome) => return rlog.finish_answered(resp, outcome),
        Verdict::Forward(plan) => plan,
    };
    // The body cap: a declared length over it is refused up front; a
    // streamed body is cut where it crosses it.
    let max_body = cx.node.config.load().http.max_request_body_bytes;
    if body.size_hint().lower() > max_body {
        let resp = refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("the request body is larger than {max_body} bytes"),
        );
        return rlog.finish_answered(resp, "body_too_large");
    }
    let body = http_body_util::Limited::new(body, usize::try_from(max_body).unwrap_or(usize::MAX));
    let mut guard = plan.guard.take();
    let method = parts.method.clone();
    let kind = guard.as_ref().and_then(|g| g.request_kind(&parts.headers));
    let body = match (guard.as_mut(), kind) {
        (Some(g), Some(kind)) => match Box::pin(guard_request(g, kind, &mut parts, body)).await {
            Ok(body) => body,
            Err((resp, outcome)) => return rlog.finish_answered(resp, outcome),
        },
        _ => body.boxed(),
    };
    let req = Request::from_parts(parts, body);
    let result = forward(cx, &policy, req, &plan, &mut rlog).await;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(failure) => {
            cx.node
                .metrics
                .upstream_errors
                .with_label_values(&["api", &rlog.route, failure.outcome()])
                .inc();
            return rlog.finish_answered(failure.response(), failure.outcome());
        }
    };
    // Guardrails before the cache store: the cache keeps what clients
    // may see.
    let kind = guard
        .as_ref()
        .and_then(|g| g.response_kind(&method, resp.status(), resp.headers()));
    if let (Some(g), Some(kind)) = (guard.as_mut(), kind) {
        resp = match Box::pin(guard_response(g, kind, resp)).await {
            Ok(resp) => resp,
            Err((resp, outcome)) => return rlog.finish_answered(resp, outcome),
        };
    }
    // Cache store before the response rewrites, which are per request.
    if let Some(fill) = &plan.cache {
        resp = store_in_cache(fill, resp).await;
    }
    let (mut parts, body) = resp.into_parts();
    plan.finish(&mut parts);
    rlog.finish_answered(Response::from_parts(parts, body), "ok")
}

/// The guardrails of the connection's workload on the api gate, if a
/// policy selects it.
fn api_guard(cx: &ConnContext, workload: &Arc<str>) -> Option<guard::BodyGuard> {
    let who = cx.workload.as_ref().map(|w| (&*w.name, &w.labels));
    let plan = cx.node.guard.load().plan(GateKind::Api, who)?;
    Some(guard::BodyGuard::new(
        Session::new(plan),
        Audit {
            findings: cx.node.metrics.genai.guard_findings.clone(),
            gate: "api",
            workload: Arc::clone(workload),
            destination: cx.destination.name.clone(),
        },
    ))
}

/// Reads a request body whole and has the guard check it: the body to
/// send (the redacted one, with its length) or the refusal.
async fn guard_request(
    guard: &mut guard::BodyGuard,
    kind: guard::BodyKind,
    parts: &mut hyper::http::request::Parts,
    body: http_body_util::Limited<Incoming>,
) -> Result<ApiBody, (Response<ApiBody>, &'static str)> {
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let resp = refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is larger than http.max_request_body_bytes",
            );
            return Err((resp, "body_too_large"));
        }
        Err(e) => {
            let resp = refusal(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("reading the request body: {e}"),
            );
            return Err((resp, "bad_request"));
        }
    };
    match guard.request(kind, &bytes) {
        Err(r) => Err((r.response(), r.outcome)),
        Ok(new) => {
            let bytes = new.unwrap_or(bytes);
            guard::set_length(&mut parts.headers, bytes.len());
            Ok(Full::new(bytes).map_err(|e| match e {}).boxed())
        }
    }
}

/// Reads a response body whole (up to what one scan takes) and has the
/// guard check it and restore the request's placeholders.
async fn guard_response(
    guard: &mut guard::BodyGuard,
    kind: guard::BodyKind,
    resp: Response<ApiBody>,
) -> Result<Response<ApiBody>, (Response<ApiBody>, &'static str)> {
    let (mut parts, body) = resp.into_parts();
    let bytes = match collect_at_most(body, guard.max_body()).await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let r = guard.too_large("response body");
            return Err((r.response(), r.outcome));
        }
        Err(e) => {
            let resp = refusal(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                &format!("reading the upstream body: {e}"),
            );
            return Err((resp, "upstream_body_error"));
        }
    };
    match guard.response(kind, &bytes) {
        Err(r) => Err((r.response(), r.outcome)),
        Ok(new) => {
            let bytes = new.unwrap_or(bytes);
            guard::set_length(&mut parts.headers, bytes.len());
            Ok(Response::from_parts(
                parts,
                Full::new(bytes).map_err(|e| match e {}).boxed(),
            ))
        }
    }
}

/// A whole body of at most `max` bytes. Boxed as a `Send` future: left
/// to inference inside `handle`, the collecting future's `Send` cannot be
/// proven for every lifetime of the connection context (a known rustc
/// limitation with higher-ranked lifetimes in async blocks).
fn collect_at_most(
    body: ApiBody,
    max: usize,
) -> std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<http_body_util::Collected<Bytes>, BoxError>> + Send,
    >,
> {
    Box::pin(http_body_util::Limited::new(body, max).collect())
}

/// The policy chain, in order, on the request head. Each step may end the
/// request with a typed refusal in the caller's protocol (JSON error,
/// status, headers); rewrites are applied to `parts` in place.
pub(crate) async fn decide<'p>(
    cx: &ConnContext,
    policy: &'p ApiPolicy,
    req: &mut hyper::http::request::Parts,
    rlog: &mut RequestLog,
) -> Verdict<'p> {
    let node = &cx.node;
    // 0. Trace context first, so refusals are logged with it too.
    let valid = req
        .headers
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(trace::is_valid);
    if !valid {
        if let Some(fresh) = trace::generate() {
            // A tracestate belongs to the traceparent it came with.
            req.headers.remove(&TRACESTATE);
            req.headers.insert(TRACEPARENT.clone(), fresh.clone());
            rlog.traceparent = Some(fresh);
        }
    }
    // 1. Route: every later step reads the matched route's policy.
    // A `Host` value is shared with the request head, not copied.
    let authority = match req.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req
            .headers
            .get(header::HOST)
            .filter(|v| v.to_str().is_ok())
            .cloned(),
    };
    let authority_str = authority.as_ref().and_then(|v| v.to_str().ok());
    let facts = RequestFacts {
        destination: &cx.destination.name,
        host: authority_str.map(host_of),
        path: req.uri.path(),
        method: &req.method,
        headers: &req.headers,
    };
    let route = policy.routes.find(&facts).map(|r| &r.route);
    rlog.route = route.map_or_else(|| "-".to_string(), |r| r.name.clone());

    // 2. Identity: the workload the kernel attributed the connection to.
    let mut caller = Caller {
        workload: cx.workload.clone(),
        ..Caller::default()
    };
    // 2b. An MCP destination that is an OAuth protected resource: its
    //     metadata is public (clients read it to find where to get a
    //     token); every other request needs a token for the resource,
    //     checked before the route's own steps (their authz may read its
    //     claims).
    let mcp = (cx.destination.gate == GateKind::Mcp).then(|| node.config.load_full());
    if let Some(oauth) = mcp.as_ref().and_then(|c| c.mcp.oauth.as_ref()) {
        if crate::gate::mcp::oauth::is_metadata_path(oauth, req.uri.path()) {
            let body = crate::gate::mcp::oauth::metadata(oauth);
            return Verdict::Answer(
                json_response(StatusCode::OK, &body),
                "mcp_resource_metadata",
            );
        }
        let methods = [format!("jwt:{}", oauth.jwt)];
        if let Err(e) = policy
            .auth
            .authenticate(&methods, &req.headers, &mut caller)
        {
            let mut resp = refusal(e.status(), "unauthenticated", &e.to_string());
            let challenge = crate::gate::mcp::oauth::challenge(oauth, &e.www_authenticate());
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            return Verdict::Answer(resp, "unauthenticated");
        }
    }
    let mut limit_headers = None;
    let mut cors_headers = None;
    let mut cache = None;
    if let Some(route) = route {
        // CORS preflights are answered before authn: browsers send them
        // without credentials.
        if let Some(cors_cfg) = &route.cors {
            match cors::decide(cors_cfg, &req.method, &req.headers) {
                CorsAction::Preflight { status, headers } => {
                    let mut resp =
                        Response::new(Full::new(Bytes::new()).map_err(|e| match e {}).boxed());
                    *resp.status_mut() = status;
                    *resp.headers_mut() = headers;
                    return Verdict::Answer(resp, "cors_preflight");
                }
                CorsAction::Actual { response_headers } => cors_headers = Some(response_headers),
                CorsAction::None => {}
            }
        }
        // 3. Authn before authz: allow rules name authenticated principals.
        if let Err(e) = policy
            .auth
            .authenticate(&route.authn, &req.headers, &mut caller)
        {
            let mut resp = refusal(e.status(), "unauthenticated", &e.to_string());
            if let Ok(v) = HeaderValue::from_str(&e.www_authenticate()) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            return Verdict::Answer(resp, "unauthenticated");
        }
        // 4. Authz before limits: a refused caller must not spend anyone's
        //    budget.
        if let Err(d) = authorize(&route.allow, &caller, &req.method) {
            let resp = refusal(StatusCode::FORBIDDEN, "forbidden", &d.reason);
            return Verdict::Answer(resp, "forbidden");
        }
        // 5. Limits: keyed by the identity established above.
        for limit in &route.limits {
            let key = limit_key(limit, route, &caller, &req.headers);
            // Boxed: routes without limits should not carry a Redis
            // round trip's future in every request's state.
            let decision = Box::pin(policy.limiter.check(&route.name, limit, &key)).await;
            let label = match &decision {
                Decision::Allowed { .. } => "allowed",
                Decision::Limited { .. } => "limited",
                Decision::BackendDown { admitted: true, .. } => "backend_down_admitted",
                Decision::BackendDown {
                    admitted: false, ..
                } => "backend_down_refused",
            };
            node.metrics
                .rate_limit_decisions
                .with_label_values(&[&route.name, &limit.name, label])
                .inc();
            match decision {
                Decision::Allowed {
                    remaining,
                    reset_after,
                } => {
                    limit_headers = Some((
                        limit.burst.unwrap_or(limit.requests),
                        remaining,
                        reset_after,
                    ));
                }
                Decision::Limited { retry_after } => {
                    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                    let mut resp = refusal(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        &format!(
                            "rate limit {:?} of route {:?} exceeded; retry after {secs} s",
                            limit.name, route.name
                        ),
                    );
                    let h = resp.headers_mut();
                    h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
                    h.insert(
                        "ratelimit-limit",
                        HeaderValue::from(limit.burst.unwrap_or(limit.requests)),
                    );
                    h.insert("ratelimit-remaining", HeaderValue::from(0u64));
                    h.insert("ratelimit-reset", HeaderValue::from(secs));
                    return Verdict::Answer(resp, "rate_limited");
                }
                // The limiter logs outages once; the decision metric counts each.
                Decision::BackendDown {
                    admitted: false, ..
                } => {
                    let resp = refusal(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "rate_limit_unavailable",
                        "the rate-limit backend is unavailable and this gateway fails closed",
                    );
                    return Verdict::Answer(resp, "rate_limit_unavailable");
                }
                Decision::BackendDown { admitted: true, .. } => {}
            }
        }
        // Cache lookup after the limits: a refused caller is never served
        // from the cache, and a hit spends budget like any request. Entries
        // are per tenant (workload and caller), so no answer crosses them.
        if let (Some(cache_cfg), Some(store)) = (&route.cache, policy.caches.get(&route.name)) {
            if req.method == Method::GET {
                let tenant = format!("{}|{}", rlog.workload, caller_label(&caller));
                let host = authority_str.map(host_of).unwrap_or("");
                let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
                let key = store.lookup_key(&tenant, &route.name, host, pq, &req.headers);
                let now = Instant::now();
                if let Some(hit) = store.lookup(&key, &req.headers, now) {
                    let mut resp =
                        Response::new(Full::new(hit.body.clone()).map_err(|e| match e {}).boxed());
                    *resp.status_mut() = hit.status;
                    *resp.headers_mut() = hit.headers.clone();
                    resp.headers_mut()
                        .insert(header::AGE, cache::age_header(&hit, now));
                    resp.headers_mut()
                        .insert("x-trigate-cache", HeaderValue::from_static("hit"));
                    if let Some(h) = &cors_headers {
                        cors::apply(resp.headers_mut(), h);
                    }
                    rlog.caller = caller_label(&caller);
                    return Verdict::Answer(resp, "cache_hit");
                }
                cache = Some(CacheFill {
                    store: Arc::clone(store),
                    key,
                    request_headers: req.headers.clone(),
                    max_entry: cache_cfg.max_entry_bytes,
                });
            }
        }
        // 6. Rewrites after policy: policies judge what the client sent.
        apply_headers(&route.request_headers, &mut req.headers);
        if let (Some(to), Some(from)) = (
            &route.rewrite_prefix,
            route
                .matches
                .path
                .as_ref()
                .and_then(|p| p.prefix.as_deref()),
        ) {
            let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
            let new = rewrite_prefix(pq, from, to);
            if let Ok(uri) = new.parse::<Uri>() {
                req.uri = uri;
            }
        }
    }
    // 6b. What an MCP server gets instead of the client's credentials.
    //     A DELETE ends the client's session (the server is told as well).
    if let Some(config) = &mcp {
        if req.method == Method::DELETE {
            if let Some(id) = req
                .headers
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
            {
                node.mcp_sessions.end(id);
            }
        }
        let upstream = config
            .mcp
            .upstreams
            .iter()
            .find(|u| *u.destination == *cx.destination.name);
        crate::gate::mcp::oauth::upstream_headers(upstream, &mut req.headers);
    }
    rlog.caller = caller_label(&caller);
    // 7. Guardrails on the bodies, planned here and applied by the
    //    transport once it has read them: after the limits (a refused
    //    caller's body is never read) and on what the rewrites left, as
    //    the upstream will see it. The LLM gate plans its own.
    let guard = if cx.destination.gate == GateKind::Api {
        api_guard(cx, &rlog.workload)
    } else {
        None
    };
    // 8. Upstream (the transport's), with the route's timeout and retries.
    let timeout = Duration::from_millis(
        route
            .and_then(|r| r.timeout_ms)
            .unwrap_or(node.config.load().http.request_timeout_ms),
    );
    Verdict::Forward(Box::new(Plan {
        route,
        authority,
        timeout,
        cors_headers,
        limit_headers,
        cache,
        guard,
        jwt_claims: mcp.and(caller.jwt).map(|j| j.claims),
    }))
}

impl Plan<'_> {
    /// Whether [`Plan::finish`] changes a response's fields.
    pub(crate) fn changes_response(&self) -> bool {
        self.route.is_some_and(|r| !r.response_headers.is_empty())
            || self.cors_headers.is_some()
            || self.limit_headers.is_some()
    }

    /// Step 9, response rewrites, on the upstream response's head (after
    /// the cache stored it: rewrites are per request).
    pub(crate) fn finish(&self, resp: &mut hyper::http::response::Parts) {
        if let Some(route) = self.route {
            apply_headers(&route.response_headers, &mut resp.headers);
        }
        if let Some(h) = &self.cors_headers {
            cors::apply(&mut resp.headers, h);
        }
        if let Some((limit, remaining, reset)) = self.limit_headers {
            let h = &mut resp.headers;
            h.insert("ratelimit-limit", HeaderValue::from(limit));
            h.insert("ratelimit-remaining", HeaderValue::from(remaining));
            h.insert(
                "ratelimit-reset",
                HeaderValue::from(reset.as_secs_f64().ceil() as u64),
            );
        }
    }
}

/// Buffers and stores a cacheable response (RFC 9111 freshness, a known
/// length within the route's entry limit); anything else streams through
/// untouched. Marks the response `x-trigate-cache: miss` or `bypass`.
async fn store_in_cache(fill: &CacheFill, resp: Response<ApiBody>) -> Response<ApiBody> {
    let Some(fresh_for) = fill.admits(resp.status(), resp.headers()) else {
        return mark(resp, "bypass");
    };
    let (mut parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let resp = refusal(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                &format!("reading the upstream body: {e}"),
            );
            return resp;
        }
    };
    fill.put(&mut parts.headers, parts.status, bytes.clone(), fresh_for);
    let resp = Response::from_parts(parts, Full::new(bytes).map_err(|e| match e {}).boxed());
    mark(resp, "miss")
}

impl CacheFill {
    /// How long this response may be served from the cache, when it may be
    /// stored at all: fresh by RFC 9111 and of a known length within the
    /// route's entry limit (else it streams through as a `bypass`).
    pub(crate) fn admits(
        &self,
        status: StatusCode,
        headers: &hyper::HeaderMap,
    ) -> Option<Duration> {
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())?;
        if length > self.max_entry {
            return None;
        }
        cache::freshness(
            status,
            &self.request_headers,
            headers,
            self.store.default_ttl(),
        )
    }

    /// Stores a whole response admitted by [`CacheFill::admits`]; drops its
    /// hop-by-hop headers first (they are per connection).
    pub(crate) fn put(
        &self,
        headers: &mut hyper::HeaderMap,
        status: StatusCode,
        body: Bytes,
        fresh_for: Duration,
    ) {
        for h in HOP_BY_HOP {
            headers.remove(h);
        }
        let stored_key = self.key.for_response(headers, &self.request_headers);
        self.store.store(
            stored_key,
            CachedResponse {
                status,
                headers: headers.clone(),
                body,
                stored_at: Instant::now(),
                fresh_for,
            },
        );
    }
}

fn mark(mut resp: Response<ApiBody>, how: &'static str) -> Response<ApiBody> {
    resp.headers_mut()
        .insert("x-trigate-cache", HeaderValue::from_static(how));
    resp
}

/// Why a request got no upstream response.
pub(crate) enum Failure {
    Connect(String),
    Timeout(Duration),
    Upstream(String),
}

impl Failure {
    fn response(&self) -> Response<ApiBody> {
        match self {
            // 503, as proxies answer when no upstream connection can be made.
            Failure::Connect(e) => refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                &format!("cannot reach the upstream: {e}"),
            ),
            Failure::Timeout(t) => refusal(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                &format!("the upstream did not answer within {} ms", t.as_millis()),
            ),
            Failure::Upstream(e) => refusal(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                &format!("upstream error: {e}"),
            ),
        }
    }

    /// What went wrong, for a message of the caller's own.
    pub(crate) fn detail(&self) -> String {
        match self {
            Failure::Connect(e) | Failure::Upstream(e) => e.clone(),
            Failure::Timeout(t) => format!("no answer within {} ms", t.as_millis()),
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "upstream_unavailable",
            Failure::Timeout(_) => "upstream_timeout",
            Failure::Upstream(_) => "upstream_error",
        }
    }
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) never travel on.
pub(crate) const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
];

/// W3C trace context (`traceparent`, `tracestate`).
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// An HTTP/1.1 upgrade request (WebSocket and the like): `Connection`
/// lists `upgrade` and an `Upgrade` header names the protocol.
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// `policy` is the one the route came from: the cluster is looked up there
/// too, so a reload between the two cannot mix old and new.
#[allow(clippy::too_many_arguments)]
async fn forward(
    cx: &Arc<ConnContext>,
    policy: &ApiPolicy,
    mut req: Request<ApiBody>,
    plan: &Plan<'_>,
    rlog: &mut RequestLog,
) -> Result<Response<ApiBody>, Failure> {
    let (route, timeout) = (plan.route, plan.timeout);
    let node = &cx.node;
    // An upgrade keeps its Upgrade/Connection headers (hop-by-hop, but the
    // upstream must see them) and, on 101, becomes a byte relay.
    let client_upgrade = is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let upgrade_protocol = parts.headers.get(header::UPGRADE).cloned();
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    if let (Some(_), Some(protocol)) = (&client_upgrade, upgrade_protocol) {
        parts.headers.insert(header::UPGRADE, protocol);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // HTTP/2 clients send :authority, HTTP/1 upstreams want Host.
    if !parts.headers.contains_key(header::HOST) {
        if let Some(a) = plan.authority.clone() {
            parts.headers.insert(header::HOST, a);
        }
    }
    let pq = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    // The pool speaks HTTP/2 only when the upstream negotiated it.
    parts.version = Version::HTTP_11;
    let cluster = route
        .and_then(|r| r.upstream.as_ref())
        .and_then(|name| policy.clusters.get(name).cloned());
    let target = Target {
        cx,
        cluster: cluster.as_ref(),
        pq: &pq,
    };

    // Only requests without a body can be sent twice: any method after a
    // failed connect (nothing was sent), idempotent ones after a timeout
    // or a 502/503/504.
    let retries = route.map_or(0, |r| r.retries.attempts);
    let bodyless = body.size_hint().exact() == Some(0);
    let idempotent = idempotent(&parts.method);
    let route_name = rlog.route.clone();
    if !(retries > 0 && bodyless) {
        let (client, pick, uri) = target.next(&[])?;
        parts.uri = uri;
        let req = Request::from_parts(parts, body);
        let result = send(&client, req, timeout).await;
        report(pick, &result);
        let mut resp = result?;
        if let Some(client_upgrade) = client_upgrade {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                relay_upgraded(node, client_upgrade, upstream_upgrade);
            }
        }
        return Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed()));
    }
    let backoff = route.map_or(50, |r| r.retries.backoff_ms);
    let mut attempt = 0;
    let mut tried = Vec::new();
    loop {
        let (client, pick, uri) = target.next(&tried)?;
        tried.extend(pick.as_ref().map(|p| p.index));
        let mut attempt_parts = parts.clone();
        attempt_parts.uri = uri;
        let req = Request::from_parts(
            attempt_parts,
            Full::new(Bytes::new()).map_err(|e| match e {}).boxed(),
        );
        let result = send(&client, req, timeout).await;
        report(pick, &result);
        let retry = match &result {
            Err(Failure::Connect(_)) => true,
            Err(Failure::Timeout(_)) => idempotent,
            Ok(r) => {
                idempotent
                    && matches!(
                        r.status(),
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    )
            }
            Err(Failure::Upstream(_)) => false,
        };
        if !retry || attempt >= retries {
            rlog.attempts = attempt + 1;
            return result.map(|r| r.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed()));
        }
        attempt += 1;
        node.metrics
            .http_retries
            .with_label_values(&[&route_name])
            .inc();
        tokio::time::sleep(Duration::from_millis(
            backoff.saturating_mul(1 << (attempt - 1).min(10)),
        ))
        .await;
    }
}

/// Where one request goes: the original destination, or an endpoint of the
/// route's cluster chosen per attempt.
struct Target<'a> {
    cx: &'a Arc<ConnContext>,
    cluster: Option<&'a Arc<Cluster>>,
    pq: &'a str,
}

impl Target<'_> {
    /// The address, TLS name and endpoint hold (clusters) of the next
    /// attempt; `tried` are endpoint indexes of earlier attempts.
    fn endpoint(
        &self,
        tried: &[usize],
    ) -> Result<(SocketAddr, Option<String>, Option<Pick>), Failure> {
        let cx = self.cx;
        Ok(match self.cluster {
            Some(c) => {
                let pick = c.pick(tried, Instant::now()).ok_or_else(|| {
                    Failure::Connect(format!("cluster {} has no endpoints", c.name))
                })?;
                (pick.addr, c.tls_name.clone(), Some(pick))
            }
            None => (cx.original_dst, cx.upstream_tls.clone(), None),
        })
    }

    /// The pooled client, the endpoint hold (clusters) and the URI of the
    /// next attempt; `tried` are endpoint indexes of earlier attempts.
    fn next(
        &self,
        tried: &[usize],
    ) -> Result<(client::UpstreamClient, Option<Pick>, Uri), Failure> {
        let cx = self.cx;
        let node = &cx.node;
        let (addr, tls_name, pick) = self.endpoint(tried)?;
        let config = node.config.load();
        let tls_cfg = &config.tls;
        let upstream_tls = match &tls_name {
            Some(name) => Some((
                name.clone(),
                node.tls.upstream(tls_cfg).map_err(Failure::Connect)?,
            )),
            None => None,
        };
        let scheme = if tls_name.is_some() { "https" } else { "http" };
        let uri = format!("{scheme}://{addr}{}", self.pq)
            .parse()
            .map_err(|e| Failure::Upstream(format!("bad request target: {e}")))?;
        let key = PoolKey {
            workload: cx.workload.as_ref().map_or(0, |w| w.id),
            addr,
            tls_name,
        };
        let client = node.api_clients.get(
            key,
            || Connector {
                addr,
                netns: cx.netns.clone(),
                mark: node.proxy.mark,
                connect_timeout: node.proxy.connect_timeout,
                tls: upstream_tls,
                handshake_timeout: Duration::from_millis(tls_cfg.handshake_timeout_ms),
            },
            config.http.pool_max_idle,
        );
        Ok((client, pick, uri))
    }
}

/// Tells the cluster how its endpoint did: connect errors, timeouts and
/// 5xx count as failures for outlier ejection.
fn report(pick: Option<Pick>, result: &Result<Response<Incoming>, Failure>) {
    if let Some(pick) = pick {
        let ok = match result {
            Ok(r) => !r.status().is_server_error(),
            Err(_) => false,
        };
        pick.report(ok);
    }
}

/// After a 101, both sides are plain byte streams: relay them on a task of
/// their own (tracked, so a stop waits for it to end).
fn relay_upgraded(
    node: &Arc<Node>,
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
) {
    node.connections.spawn(async move {
        match tokio::try_join!(client, upstream) {
            Ok((c, u)) => {
                let mut c = TokioIo::new(c);
                let mut u = TokioIo::new(u);
                if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                    tracing::debug!(error = %e, "upgraded connection ended with an error");
                }
            }
            Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
        }
    });
}

async fn send(
    client: &client::UpstreamClient,
    req: Request<ApiBody>,
    timeout: Duration,
) -> Result<Response<Incoming>, Failure> {
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => Err(Failure::Timeout(timeout)),
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) if e.is_connect() => Err(Failure::Connect(crate::error_chain(&e))),
        Ok(Err(e)) => Err(Failure::Upstream(crate::error_chain(&e))),
    }
}

/// The bucket key a limit counts this request under.
pub fn limit_key(
    limit: &RateLimit,
    route: &Route,
    caller: &Caller,
    headers: &hyper::HeaderMap,
) -> String {
    match limit.key.as_str() {
        "workload" => format!(
            "workload={}",
            caller.workload.as_ref().map_or("unknown", |w| &w.name)
        ),
        "route" => format!("route={}", route.name),
        "api-key" => format!("api-key={}", caller.api_key.as_deref().unwrap_or("-")),
        k => {
            if let Some(h) = k.strip_prefix("header:") {
                let v = headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("-");
                format!("header:{h}={v}")
            } else if let Some(c) = k.strip_prefix("claim:") {
                let v = caller
                    .jwt
                    .as_ref()
                    .and_then(|j| j.claims.get(c))
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .unwrap_or_else(|| "-".into());
                format!("claim:{c}={v}")
            } else {
                k.to_string()
            }
        }
    }
}

fn caller_label(caller: &Caller) -> std::borrow::Cow<'static, str> {
    if let Some(j) = &caller.jwt {
        return format!("jwt:{}:{}", j.provider, j.subject.as_deref().unwrap_or("-")).into();
    }
    if let Some(k) = &caller.api_key {
        return format!("api-key:{k}").into();
    }
    "workload".into()
}

/// A JSON value as bytes. Through `serde_json::to_vec`, not `Display`:
/// `to_string` goes through a `fmt::Write` adapter, which showed in
/// profiles of bodies the gateway writes per request.
pub(crate) fn to_json(body: &serde_json::Value) -> Vec<u8> {
    // A `Value` always serializes (its map keys are strings).
    serde_json::to_vec(body).unwrap_or_default()
}

/// A JSON body the gateway answers with itself.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<ApiBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(to_json(body)))
            .map_err(|e| match e {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A refusal in the shape clients of an HTTP API expect.
fn refusal(status: StatusCode, kind: &str, message: &str) -> Response<ApiBody> {
    let body = serde_json::json!({ "error": { "type": kind, "message": message } }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert("x-trigate-refusal", HeaderValue::from_static("1"));
    r
}

/// One access-log line per request, written when the response body ends
/// (or the request is dropped), with the metrics.
pub(crate) struct RequestLog {
    node: Arc<Node>,
    /// `api` or `llm`: the LLM gate runs the same route policy first.
    pub(crate) gate: &'static str,
    pub(crate) workload: Arc<str>,
    destination: Arc<str>,
    pub(crate) route: String,
    method: Method,
    /// The request target; its path is logged (a shared copy of the head).
    uri: Uri,
    version: Version,
    traceparent: Option<HeaderValue>,
    caller: std::borrow::Cow<'static, str>,
    pub(crate) status: u16,
    pub(crate) outcome: &'static str,
    pub(crate) attempts: u32,
    pub(crate) bytes_out: u64,
    start: Instant,
    /// The request metrics, when the transport looked them up already.
    counters: Option<(prometheus::IntCounter, prometheus::Histogram)>,
    /// What the LLM gate adds to the line.
    pub(crate) llm: Option<Box<LlmRecord>>,
}

impl RequestLog {
    pub(crate) fn start(cx: &ConnContext, req: &hyper::http::request::Parts) -> Self {
        RequestLog {
            node: Arc::clone(&cx.node),
            workload: cx
                .workload
                .as_ref()
                .map_or_else(|| Arc::from("unknown"), |w| Arc::clone(&w.name)),
            destination: Arc::clone(&cx.destination.name),
            route: "-".into(),
            method: req.method.clone(),
            uri: req.uri.clone(),
            version: req.version,
            traceparent: req.headers.get(&TRACEPARENT).cloned(),
            caller: "workload".into(),
            // Until a response is produced: the client went away.
            status: 499,
            outcome: "client_closed",
            attempts: 1,
            bytes_out: 0,
            start: Instant::now(),
            counters: None,
            gate: cx.destination.gate.label(),
            llm: None,
        }
    }

    /// Attaches this log to the response body: the line is written when
    /// the body has been sent (or the client left).
    pub(crate) fn finish_answered(
        mut self,
        resp: Response<ApiBody>,
        outcome: &'static str,
    ) -> Response<ApiBody> {
        self.status = resp.status().as_u16();
        self.outcome = outcome;
        let (parts, body) = resp.into_parts();
        Response::from_parts(
            parts,
            LoggedBody {
                inner: body,
                log: Some(self),
            }
            .boxed(),
        )
    }
}

/// `trigate_http_requests_total` and `trigate_http_request_duration_seconds`
/// of a connection's workload for one route and status.
fn request_metrics(
    cx: &ConnContext,
    route: &str,
    status: u16,
) -> (prometheus::IntCounter, prometheus::Histogram) {
    let m = &cx.node.metrics;
    let workload = cx.workload.as_ref().map_or("unknown", |w| &*w.name);
    let gate = cx.destination.gate.label();
    (
        m.http_requests.with_label_values(&[
            gate,
            &cx.destination.name,
            route,
            workload,
            &status.to_string(),
        ]),
        m.http_request_duration.with_label_values(&[gate, route]),
    )
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let (requests, duration) = self.counters.take().unwrap_or_else(|| {
            let m = &self.node.metrics;
            (
                m.http_requests.with_label_values(&[
                    self.gate,
                    &self.destination,
                    &self.route,
                    &self.workload,
                    &self.status.to_string(),
                ]),
                m.http_request_duration
                    .with_label_values(&[self.gate, &self.route]),
            )
        });
        requests.inc();
        duration.observe(elapsed.as_secs_f64());
        let Some(mut line) = AccessLine::start("request") else {
            return;
        };
        line.field("gate", self.gate)
            .field("workload", &*self.workload)
            .field("destination", &*self.destination)
            .field("route", self.route.as_str())
            .field("method", self.method.as_str())
            .field("path", self.uri.path())
            .field("version", version_str(self.version))
            .field("status", self.status)
            .field("outcome", self.outcome)
            .field("caller", &*self.caller)
            .field("attempts", self.attempts)
            .field("bytes_sent", self.bytes_out)
            .field("duration_ms", Val::millis(elapsed))
            .field(
                "traceparent",
                self.traceparent.as_ref().and_then(|v| v.to_str().ok()),
            );
        if let Some(l) = self.llm.as_deref() {
            let usage = l.usage;
            line.field("model_requested", l.model_requested.as_str())
                .field("model_served", l.model_served.as_deref())
                .field("provider", l.provider.as_deref())
                .field("stream", l.stream)
                .field("input_tokens", usage.map(|u| u.input))
                .field("output_tokens", usage.map(|u| u.output))
                .field("cached_input_tokens", usage.map(|u| u.cached_input))
                .field("reasoning_tokens", usage.map(|u| u.reasoning))
                .field("tokens_estimated", usage.map(|u| u.estimated))
                .field("cost_usd", l.cost_micros.map(Val::micro_units))
                .field("finish_reason", l.finish_reason.as_deref())
                .field("failovers", l.failovers)
                .field("ttft_ms", l.ttft.map(Val::millis))
                .field("cache", l.cache);
        }
        line.write();
    }
}

/// How access lines name an HTTP version (as `Debug` of `http::Version`).
fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// The response body on its way out: counts bytes; the log line goes when
/// it is dropped (end of stream, or the client leaving).
struct LoggedBody {
    inner: ApiBody,
    log: Option<RequestLog>,
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &r {
            if let (Some(data), Some(log)) = (frame.data_ref(), self.log.as_mut()) {
                log.bytes_out += data.len() as u64;
            }
        }
        if let Poll::Ready(Some(Err(_))) = &r {
            if let Some(log) = self.log.as_mut() {
                log.outcome = "upstream_body_error";
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
