//! The api gate's HTTP/1.1 relay: one task per client connection reads a
//! request head, runs the policy chain ([`super::decide`]) and relays the
//! request and response over an upstream connection the client connection
//! keeps while it lives (checked into [`pool::IdlePool`] when it ends).
//!
//! Why not hyper here: with hyper's server and pooled client, every request
//! crossed two tasks and a channel, and the gateway spent about twice
//! nginx's CPU per proxied request (`cargo xtask bench api`). This relay
//! reads and writes both sockets from one task, like nginx's event loop,
//! with no per-request hand-off. Parsing stays with `httparse` (hyper's own
//! parser); the framing rules are in [`framing`]. HTTP/2 clients (h2c prior
//! knowledge, or ALPN h2 after `terminate`) are handed to hyper.
mod fields;
pub mod framing;
pub(crate) mod outbound;
pub mod pool;

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::{
    header::{self, HeaderName, HeaderValue},
    http::{request, response},
    HeaderMap, Method, Request, Response, StatusCode, Uri, Version,
};
use prometheus::{Histogram, IntCounter};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use self::fields::{Kind, Parsed, Present, Spans};
use self::framing::{Chunked, Fields, Framing, FramingError};
use super::{
    client::{ApiBody, PoolKey, UpStream},
    decide, idempotent, refusal, ConnContext, Failure, Plan, RequestLog, Target, Verdict,
    HOP_BY_HOP,
};
use crate::gate::llm::serve::Reply;
use crate::{
    telemetry::access::{ConnectionLog, Outcome},
    upstream,
};

/// Most header fields accepted in one head.
const MAX_HEADERS: usize = 128;
/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;
/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long, and how much, a closing connection drains from its client.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;
/// How long a stop waits for a request in flight.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// A kept upstream connection idle for longer than this is checked for a
/// close from the upstream before it carries a request.
const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// Serves one client connection: HTTP/1.x here, HTTP/2 through hyper.
pub async fn serve<S>(cx: Arc<ConnContext>, mut io: S, log: &mut ConnectionLog)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = cx.node.config.load().http.clone();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let first_wait = Duration::from_millis(http.header_read_timeout_ms);
    match sniff_h2(&mut io, &mut buf, first_wait).await {
        Ok(true) => {
            let io = Prefixed {
                prefix: buf.freeze(),
                io,
            };
            return super::serve(cx, io, log).await;
        }
        Ok(false) => {}
        Err(e) => {
            cx.node
                .metrics
                .http_connection_errors
                .with_label_values(&[cx.destination.gate.label()])
                .inc();
            return log.fail(Outcome::IoError, format!("HTTP connection: {e}"));
        }
    }
    let stop = cx.node.stop.clone();
    let idle = Arc::new(AtomicBool::new(true));
    let mut relay = Relay {
        cx: Arc::clone(&cx),
        client: io,
        buf,
        out: Vec::with_capacity(READ_CHUNK),
        upstream: None,
        http,
        idle: Arc::clone(&idle),
        watchdog: Watchdog::new(),
        policy: cx.node.api.load_full(),
        counters: Vec::new(),
    };
    let result = {
        let run = relay.run();
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => r,
            // A stop ends idle connections at once; a request in flight
            // gets a moment to finish.
            _ = stop.cancelled() => {
                let grace = tokio::time::sleep(STOP_GRACE);
                tokio::pin!(grace);
                loop {
                    if idle.load(Ordering::Relaxed) {
                        break Ok(());
                    }
                    tokio::select! {
                        r = &mut run => break r,
                        () = &mut grace => break Err(ConnError::Stopping),
                        () = tokio::time::sleep(Duration::from_millis(20)) => {}
                    }
                }
            }
        }
    };
    relay.check_in_upstream();
    if !matches!(result, Err(ConnError::Stopping)) {
        relay.linger().await;
    }
    match result {
        Ok(()) => log.succeed(),
        Err(e) => {
            if e.is_protocol_error() {
                relay
                    .cx
                    .node
                    .metrics
                    .http_connection_errors
                    .with_label_values(&[cx.destination.gate.label()])
                    .inc();
            }
            log.fail(Outcome::IoError, format!("HTTP connection: {e}"));
        }
    }
}

/// Reads until the buffer either starts with the HTTP/2 preface or cannot.
async fn sniff_h2<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    wait: Duration,
) -> Result<bool, ConnError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Err(_) => return Err(ConnError::Silent(wait)),
            // Closed before a whole request: `run` sees it and ends quietly.
            Ok(Ok(0)) => return Ok(false),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(ConnError::Client(e)),
        }
    }
}

/// Why a client connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("no request within {} ms", .0.as_millis())]
    Silent(Duration),
    #[error("request head not complete within {} ms", .0.as_millis())]
    SlowHead(Duration),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request head larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("client: {0}")]
    Client(io::Error),
    #[error("client closed the connection in the middle of a request")]
    ClientClosed,
    #[error("client sent no body bytes for {} ms", .0.as_millis())]
    ClientStalled(Duration),
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("trigate is stopping")]
    Stopping,
}

impl ConnError {
    /// Bad input and timeouts (counted in
    /// `trigate_http_connection_errors_total`), not peers going away.
    fn is_protocol_error(&self) -> bool {
        matches!(
            self,
            ConnError::Silent(_)
                | ConnError::SlowHead(_)
                | ConnError::Malformed(_)
                | ConnError::HeadTooLarge(_)
                | ConnError::BodyTooLarge(_)
                | ConnError::ClientStalled(_)
        )
    }
}

/// An upstream connection and what was read from it but not yet relayed.
struct Upstream {
    key: PoolKey,
    io: UpStream,
    buf: BytesMut,
    last_used: Instant,
}

/// One client connection's state.
struct Relay<S> {
    cx: Arc<ConnContext>,
    client: S,
    /// Read from the client, not yet consumed (pipelined requests stay).
    buf: BytesMut,
    /// What goes to the peer next (a head, then body bytes).
    out: Vec<u8>,
    /// Kept from the last request for the next one.
    upstream: Option<Upstream>,
    http: crate::config::HttpConfig,
    /// Between requests (a stop may end the connection at once).
    idle: Arc<AtomicBool>,
    watchdog: Watchdog,
    /// The api policy last read (see `run`).
    policy: Arc<super::ApiPolicy>,
    /// Request metrics by route and status (see `counters`).
    counters: Vec<(String, u16, IntCounter, Histogram)>,
}

/// The one timer of a client connection, for its head and response waits.
/// It is moved only when a wait needs an earlier deadline or after it
/// fired early, instead of a timer registered and cancelled around every
/// read (which showed in `cargo xtask bench api` profiles).
struct Watchdog {
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Watchdog {
    fn new() -> Self {
        Watchdog {
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
        }
    }

    /// `fut`'s output, or `None` once `deadline` passed.
    async fn within<F: std::future::Future>(
        &mut self,
        deadline: tokio::time::Instant,
        fut: F,
    ) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            if self.sleep.deadline() > deadline {
                self.sleep.as_mut().reset(deadline);
            }
            tokio::select! {
                biased;
                r = &mut fut => return Some(r),
                () = self.sleep.as_mut() => {
                    if tokio::time::Instant::now() >= deadline {
                        return None;
                    }
                    // Fired for an earlier wait's deadline: move it on.
                    self.sleep.as_mut().reset(deadline);
                }
            }
        }
    }
}

/// What an exchange with the upstream produced.
struct UpstreamResponse {
    head: ResponseHead,
    framing: Framing,
    /// The upstream asked to close its connection after this response.
    close: bool,
}

/// How one attempt failed.
enum AttemptError {
    /// Worth another try under the route's rules.
    Failed(Failure),
    /// A reused connection turned out closed before anything was sent
    /// back: try once more on a new connection.
    Stale(Failure),
    /// The client side failed: the connection ends.
    Client(ConnError),
}

impl<S> Relay<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn run(&mut self) -> Result<(), ConnError> {
        let mut first = true;
        loop {
            self.idle.store(true, Ordering::Relaxed);
            let Some((parts, present)) = self.read_head(first).await? else {
                return Ok(());
            };
            self.idle.store(false, Ordering::Relaxed);
            first = false;
            // The policy in force, re-read per request; the Arc is only
            // replaced after a reload (a shared count bumped per request
            // would bounce between cores).
            let current = self.cx.node.api.load();
            if !Arc::ptr_eq(&current, &self.policy) {
                self.policy = arc_swap::Guard::into_inner(current);
            } else {
                drop(current);
            }
            let policy = Arc::clone(&self.policy);
            let mut rlog = RequestLog::start(&self.cx, &parts);
            let keep = self.request(parts, present, &policy, &mut rlog).await;
            rlog.counters = Some(self.counters(&rlog.route, rlog.status));
            drop(rlog);
            if !keep? {
                return Ok(());
            }
        }
    }

    /// Closes our side, then reads and drops what the client still sends
    /// for a moment: closing with unread bytes makes the kernel send a
    /// reset, which can destroy the error response the client has not read
    /// yet (a 413 or 431 while it is still uploading).
    async fn linger(&mut self) {
        let _ = self.client.shutdown().await;
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut scratch = vec![0u8; 8192];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match tokio::time::timeout_at(deadline, self.client.read(&mut scratch)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    }

    /// The request metrics of this connection's workload for a route and
    /// status, looked up once per connection rather than per request.
    fn counters(&mut self, route: &str, status: u16) -> (IntCounter, Histogram) {
        if let Some((_, _, c, h)) = self
            .counters
            .iter()
            .find(|(r, s, _, _)| *s == status && r == route)
        {
            return (c.clone(), h.clone());
        }
        let (c, h) = super::request_metrics(&self.cx, route, status);
        if self.counters.len() < 16 {
            self.counters
                .push((route.to_string(), status, c.clone(), h.clone()));
        }
        (c, h)
    }

    /// Hands the upstream connection to the idle pool.
    fn check_in_upstream(&mut self) {
        if let Some(up) = self.upstream.take() {
            if up.buf.is_empty() {
                let idle = Duration::from_millis(self.http.pool_idle_timeout_ms);
                self.cx
                    .node
                    .api_idle
                    .put(up.key, up.io, self.http.pool_max_idle, idle);
            }
        }
    }

    /// The next request head; `None` when the client closed (or stayed
    /// idle past the keep-alive timeout) between requests.
    async fn read_head(
        &mut self,
        first: bool,
    ) -> Result<Option<(request::Parts, Present)>, ConnError> {
        let head_wait = Duration::from_millis(self.http.header_read_timeout_ms);
        let idle_wait = if first {
            head_wait
        } else {
            Duration::from_millis(self.http.keepalive_timeout_ms)
        };
        let idle_deadline = tokio::time::Instant::now() + idle_wait;
        let mut head_deadline = None;
        loop {
            if !self.buf.is_empty() {
                match parse_request(&mut self.buf) {
                    Ok(Some(head)) => return Ok(Some(head)),
                    Ok(None) if self.buf.len() > self.http.max_header_bytes => {
                        let max = self.http.max_header_bytes;
                        Box::pin(self.reject(
                            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                            "header_too_large",
                            "the request head is too large",
                        ))
                        .await;
                        return Err(ConnError::HeadTooLarge(max));
                    }
                    Ok(None) => {}
                    Err(HeadError::TooMany) => {
                        Box::pin(self.reject(
                            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                            "header_too_large",
                            &format!("more than {MAX_HEADERS} header fields"),
                        ))
                        .await;
                        return Err(ConnError::HeadTooLarge(self.http.max_header_bytes));
                    }
                    Err(HeadError::Malformed(why)) => {
                        Box::pin(self.reject(StatusCode::BAD_REQUEST, "bad_request", &why)).await;
                        return Err(ConnError::Malformed(why));
                    }
                }
                // Slow-loris guard: a started head must complete in time.
                head_deadline.get_or_insert_with(|| tokio::time::Instant::now() + head_wait);
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(READ_CHUNK);
            }
            let deadline = head_deadline.unwrap_or(idle_deadline);
            let read = self
                .watchdog
                .within(deadline, self.client.read_buf(&mut self.buf));
            match read.await.ok_or(()) {
                Err(()) if self.buf.is_empty() && first => {
                    return Err(ConnError::Silent(head_wait))
                }
                Err(()) if self.buf.is_empty() => return Ok(None),
                Err(()) => {
                    Box::pin(self.reject(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        "the request head did not arrive in time",
                    ))
                    .await;
                    return Err(ConnError::SlowHead(head_wait));
                }
                Ok(Ok(0)) if self.buf.is_empty() => return Ok(None),
                Ok(Ok(0)) => return Err(ConnError::ClientClosed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(ConnError::Client(e)),
            }
        }
    }

    /// Answers a request that could not be parsed, and closes.
    async fn reject(&mut self, status: StatusCode, kind: &str, message: &str) {
        tracing::debug!(
            status = status.as_u16(),
            kind,
            message,
            "refusing a malformed request"
        );
        let resp = refusal(status, kind, message);
        let _ = self.write_answer(resp, &Method::GET, true).await;
    }

    /// One request: the policy chain, then the upstream. Returns whether the
    /// connection may carry another request.
    async fn request(
        &mut self,
        mut parts: request::Parts,
        present: Present,
        policy: &super::ApiPolicy,
        rlog: &mut RequestLog,
    ) -> Result<bool, ConnError> {
        let cx = Arc::clone(&self.cx);
        let http10 = parts.version == Version::HTTP_10;
        // The map as parsed: what the head did not have is not looked up
        // (until the map changes, below).
        let parsed = Parsed {
            headers: &parts.headers,
            present,
        };
        let client_close = wants_close(&parsed, http10);
        let body = match framing::request(http10, &parsed) {
            Ok(f) => f,
            Err(e) => {
                rlog.outcome = "bad_request";
                rlog.status = 400;
                Box::pin(self.reject(StatusCode::BAD_REQUEST, "bad_request", &e.to_string())).await;
                return Err(ConnError::Malformed(e.to_string()));
            }
        };
        let max_body = self.http.max_request_body_bytes;
        if matches!(body, Framing::Length(n) if n > max_body) {
            let resp = if cx.destination.gate == crate::config::GateKind::Llm {
                let dialect = crate::gate::llm::front::dialect_of(&parts.headers);
                crate::gate::llm::front::Refusal::BodyTooLarge(max_body).response(dialect)
            } else {
                refusal(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    &format!("the request body is larger than {max_body} bytes"),
                )
            };
            Box::pin(self.answer(resp, "body_too_large", &parts.method, true, rlog)).await?;
            return Err(ConnError::BodyTooLarge(max_body));
        }
        if parts.method == Method::CONNECT {
            let resp = refusal(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "CONNECT is not proxied by the api gate",
            );
            Box::pin(self.answer(resp, "method_not_allowed", &parts.method, true, rlog)).await?;
            return Ok(false);
        }
        let upgrade = upgrade_protocol(&parts, present);
        // The gateway answers `Expect: 100-continue` itself once the
        // policy admitted the request (as nginx does), then relays the body.
        let expects_continue = present.has(Kind::Expect)
            && parts
                .headers
                .remove(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));

        let mut plan = match decide(&cx, policy, &mut parts, rlog).await {
            Verdict::Answer(resp, outcome) => {
                let resp = if cx.destination.gate == crate::config::GateKind::Llm {
                    // Said as the caller's SDK reads errors.
                    Box::pin(crate::gate::llm::front::in_callers_shape(
                        resp,
                        &parts.headers,
                    ))
                    .await
                } else {
                    resp
                };
                // An unread request body would be taken for the next
                // request: close instead.
                let close = client_close || body != Framing::Empty;
                Box::pin(self.answer(resp, outcome, &parts.method, close, rlog)).await?;
                return Ok(!close);
            }
            Verdict::Forward(plan) => plan,
        };
        if expects_continue && body != Framing::Empty && !http10 {
            self.client
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(ConnError::Client)?;
        }

        if cx.destination.gate == crate::config::GateKind::Llm {
            // Boxed: the LLM gate's future is large and api requests
            // should not carry its size.
            return Box::pin(self.llm(parts, body, http10, client_close, policy, rlog)).await;
        }
        // MCP messages are POSTed; GET (the server's stream) and DELETE
        // are relayed below like any request.
        if cx.destination.gate == crate::config::GateKind::Mcp && parts.method == Method::POST {
            let claims = plan.jwt_claims.take();
            return Box::pin(self.mcp(parts, body, claims, http10, client_close, rlog)).await;
        }
        if cx.destination.gate == crate::config::GateKind::Mcp
            && parts.method == Method::GET
            && (crate::gate::mcp::serve::wants_stream(&parts.headers)
                || crate::gate::mcp::serve::federated(&cx))
        {
            let claims = plan.jwt_claims.take();
            let reply = crate::gate::mcp::serve::stream(&self.cx, parts, claims, rlog).await;
            return Box::pin(self.mcp_reply(reply, &Method::GET, http10, client_close, rlog)).await;
        }
        // A federation answers everything itself: nothing is relayed.
        if cx.destination.gate == crate::config::GateKind::Mcp
            && crate::gate::mcp::serve::federated(&cx)
        {
            let method = parts.method.clone();
            let reply = crate::gate::mcp::serve::other(&self.cx, &parts).await;
            // A body nobody reads leaves the connection mid-message.
            let close = client_close || body != Framing::Empty;
            return Box::pin(self.mcp_reply(reply, &method, http10, close, rlog)).await;
        }

        // Guardrails read a textual body whole and send on what they
        // leave of it, with its length.
        let mut guard = plan.guard.take();
        let mut body = body;
        let mut held = None;
        let kind = guard.as_ref().and_then(|g| g.request_kind(&parts.headers));
        if let (Some(g), Some(kind), false) = (guard.as_mut(), kind, body == Framing::Empty) {
            let bytes = self.read_body_or_413(body, &parts.method, rlog).await?;
            match g.request(kind, &bytes) {
                // The body was read: the connection is at a request
                // boundary and may carry the next one.
                Err(r) => {
                    Box::pin(self.answer(
                        r.response(),
                        r.outcome,
                        &parts.method,
                        client_close,
                        rlog,
                    ))
                    .await?;
                    return Ok(!client_close);
                }
                Ok(new) => {
                    let bytes = new.unwrap_or(bytes);
                    super::guard::set_length(&mut parts.headers, bytes.len());
                    held = Some(bytes);
                    body = Framing::Empty;
                }
            }
        }

        strip_hop_by_hop(&mut parts.headers);
        if !parts.headers.contains_key(header::HOST) {
            let host = match &plan.authority {
                Some(a) => Some(a.clone()),
                None => HeaderValue::from_str(&cx.original_dst.to_string()).ok(),
            };
            if let Some(v) = host {
                parts.headers.insert(header::HOST, v);
            }
        }
        let mut head = Vec::with_capacity(512);
        write_request_head(&mut head, &parts, upgrade.as_ref());

        if let Some(held) = &held {
            head.extend_from_slice(held);
        }
        let resp = match self
            .exchange(policy, &plan, &parts, &head, body, rlog)
            .await
        {
            Ok(r) => r,
            Err(AttemptError::Client(e)) => return Err(e),
            Err(AttemptError::Failed(f) | AttemptError::Stale(f)) => {
                cx.node
                    .metrics
                    .upstream_errors
                    .with_label_values(&["api", &rlog.route, f.outcome()])
                    .inc();
                // Part of a body may have been read: the connection cannot
                // be trusted to be at a request boundary.
                let close = client_close || body != Framing::Empty;
                Box::pin(self.answer(f.response(), f.outcome(), &parts.method, close, rlog))
                    .await?;
                return Ok(!close);
            }
        };
        self.respond(
            resp,
            &plan,
            guard.as_mut(),
            &parts,
            upgrade.is_some(),
            http10,
            client_close,
            rlog,
        )
        .await
    }

    /// A request on an `llm` destination: its whole body, then the LLM
    /// gate ([`crate::gate::llm::serve::respond`]), then its answer, whole
    /// or streamed event by event.
    async fn llm(
        &mut self,
        parts: request::Parts,
        body: Framing,
        http10: bool,
        client_close: bool,
        policy: &super::ApiPolicy,
        rlog: &mut RequestLog,
    ) -> Result<bool, ConnError> {
        let bytes = match self.read_body(body).await {
            Ok(b) => b,
            Err(ConnError::BodyTooLarge(max)) => {
                let dialect = crate::gate::llm::front::dialect_of(&parts.headers);
                let refusal = crate::gate::llm::front::Refusal::BodyTooLarge(max);
                let resp = refusal.response(dialect);
                self.answer(resp, refusal.outcome(), &parts.method, true, rlog)
                    .await?;
                return Err(ConnError::BodyTooLarge(max));
            }
            Err(e) => return Err(e),
        };
        let method = parts.method.clone();
        match crate::gate::llm::serve::respond(&self.cx, policy, parts, bytes, rlog).await {
            Reply::Whole(resp, outcome) => {
                self.answer(resp, outcome, &method, client_close, rlog)
                    .await?;
                Ok(!client_close)
            }
            Reply::Stream(resp, outcome) => {
                let (parts, mut body) = resp.into_parts();
                rlog.status = parts.status.as_u16();
                rlog.outcome = outcome;
                let close = client_close || http10;
                let result = self.stream_out(parts, &mut body, http10, close, rlog).await;
                // How the stream ended (its usage, or the client leaving)
                // goes into the request's log line.
                body.end_into(rlog);
                result.map(|()| !close)
            }
        }
    }

    /// A POST on an `mcp` destination: its whole body, then the MCP gate
    /// ([`crate::gate::mcp::serve::respond`]), then its answer, whole or
    /// streamed event by event.
    async fn mcp(
        &mut self,
        parts: request::Parts,
        body: Framing,
        claims: Option<serde_json::Map<String, serde_json::Value>>,
        http10: bool,
        client_close: bool,
        rlog: &mut RequestLog,
    ) -> Result<bool, ConnError> {
        let bytes = self.read_body_or_413(body, &parts.method, rlog).await?;
        let method = parts.method.clone();
        let reply = crate::gate::mcp::serve::respond(&self.cx, parts, bytes, claims, rlog).await;
        self.mcp_reply(reply, &method, http10, client_close, rlog)
            .await
    }

    /// Sends what the MCP gate answered: whole, or streamed event by event.
    async fn mcp_reply(
        &mut self,
        reply: crate::gate::mcp::serve::Reply,
        method: &Method,
        http10: bool,
        client_close: bool,
        rlog: &mut RequestLog,
    ) -> Result<bool, ConnError> {
        match reply {
            crate::gate::mcp::serve::Reply::Whole(resp, outcome) => {
                self.answer(resp, outcome, method, client_close, rlog)
                    .await?;
                Ok(!client_close)
            }
            crate::gate::mcp::serve::Reply::Stream(resp, outcome) => {
                let (parts, mut body) = resp.into_parts();
                rlog.status = parts.status.as_u16();
                rlog.outcome = outcome;
                let close = client_close || http10;
                let result = self.stream_out(parts, &mut body, http10, close, rlog).await;
                result.map(|()| !close)
            }
        }
    }

    /// The whole request body; one over the cap is answered with 413 (the
    /// api gate's error shape) and ends the connection.
    async fn read_body_or_413(
        &mut self,
        body: Framing,
        method: &Method,
        rlog: &mut RequestLog,
    ) -> Result<Bytes, ConnError> {
        match self.read_body(body).await {
            Err(ConnError::BodyTooLarge(max)) => {
                let resp = refusal(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    &format!("the request body is larger than {max} bytes"),
                );
                self.answer(resp, "body_too_large", method, true, rlog)
                    .await?;
                Err(ConnError::BodyTooLarge(max))
            }
            other => other,
        }
    }

    /// The whole request body (an LLM request is read whole: it is parsed
    /// before anything goes upstream).
    async fn read_body(&mut self, body: Framing) -> Result<Bytes, ConnError> {
        let max = self.http.max_request_body_bytes;
        match body {
            Framing::Empty => return Ok(Bytes::new()),
            Framing::Length(n) if n > max => return Err(ConnError::BodyTooLarge(max)),
            // Usually all there with the head: no copy.
            Framing::Length(n) if self.buf.len() as u64 >= n => {
                return Ok(self.buf.split_to(n as usize).freeze());
            }
            _ => {}
        }
        let mut whole = Vec::new();
        self.out.clear();
        let idle = self.cx.node.proxy.idle_timeout;
        relay(
            &mut self.client,
            &mut self.buf,
            &mut whole,
            &mut self.out,
            body,
            true,
            Some(max),
            idle,
        )
        .await
        .map_err(|e| match e {
            RelayError::Source(e) | RelayError::Sink(e) => ConnError::Client(e),
            RelayError::SourceClosed => ConnError::ClientClosed,
            RelayError::Stalled(t) => ConnError::ClientStalled(t),
            RelayError::Framing(e) => ConnError::Malformed(e.to_string()),
            RelayError::TooLarge(n) => ConnError::BodyTooLarge(n),
        })?;
        Ok(Bytes::from(whole))
    }

    /// Sends a streamed LLM answer: chunked (to HTTP/1.0 clients as it
    /// is, ended by the close), every event written as soon as it exists;
    /// events ready together share one write. A client that closes ends
    /// the stream, and dropping it ends the provider's generation.
    async fn stream_out<B>(
        &mut self,
        mut parts: response::Parts,
        body: &mut B,
        http10: bool,
        close: bool,
        rlog: &mut RequestLog,
    ) -> Result<(), ConnError>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        if !http10 {
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        parts.headers.insert(header::DATE, http_date());
        self.out.clear();
        write_response_head(&mut self.out, &parts, close, None);
        loop {
            let frame = if self.out.is_empty() {
                tokio::select! {
                    biased;
                    f = body.frame() => f,
                    // Read while waiting, to see the client leave; bytes
                    // it sends (a pipelined request) stay for later.
                    r = self.client.read_buf(&mut self.buf), if self.buf.len() < READ_CHUNK => {
                        match r {
                            Ok(0) => return Err(ConnError::ClientClosed),
                            Ok(_) => continue,
                            Err(e) => return Err(ConnError::Client(e)),
                        }
                    }
                }
            } else {
                tokio::select! {
                    biased;
                    f = body.frame() => f,
                    () = std::future::ready(()) => {
                        write_out(&mut self.client, &mut self.out)
                            .await
                            .map_err(ConnError::Client)?;
                        continue;
                    }
                }
            };
            match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    rlog.bytes_out += data.len() as u64;
                    if !http10 {
                        self.out
                            .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    }
                    self.out.extend_from_slice(&data);
                    if !http10 {
                        self.out.extend_from_slice(b"\r\n");
                    }
                }
                Some(Err(e)) => return Err(ConnError::Upstream(e.to_string())),
                None => {
                    if !http10 {
                        self.out.extend_from_slice(b"0\r\n\r\n");
                    }
                    return write_out(&mut self.client, &mut self.out)
                        .await
                        .map_err(ConnError::Client);
                }
            }
        }
    }

    /// Sends the request (head and body) and reads the response head, with
    /// the route's retries; leaves the connection in `self.upstream`.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &mut self,
        policy: &super::ApiPolicy,
        plan: &Plan<'_>,
        parts: &request::Parts,
        head: &[u8],
        body: Framing,
        rlog: &mut RequestLog,
    ) -> Result<UpstreamResponse, AttemptError> {
        let cx = Arc::clone(&self.cx);
        let route = plan.route;
        let cluster = route
            .and_then(|r| r.upstream.as_ref())
            .and_then(|name| policy.clusters.get(name).cloned());
        let target = Target {
            cx: &cx,
            cluster: cluster.as_ref(),
            pq: "",
        };
        let retries = route.map_or(0, |r| r.retries.attempts);
        let backoff = route.map_or(50, |r| r.retries.backoff_ms);
        // Only requests without a body can be sent again after the upstream
        // saw them; a failed connect sent nothing, so any request may retry.
        let replayable = idempotent(&parts.method) && body == Framing::Empty;
        let mut attempt = 0;
        let mut stale_retry_left = true;
        let mut tried = Vec::new();
        loop {
            let (addr, tls_name, pick) = target.endpoint(&tried).map_err(AttemptError::Failed)?;
            tried.extend(pick.as_ref().map(|p| p.index));
            let key = PoolKey {
                workload: cx.workload.as_ref().map_or(0, |w| w.id),
                addr,
                tls_name,
            };
            let result = self.attempt(key, parts, head, body, plan.timeout).await;
            // Outlier ejection hears about the endpoint's failures only: a
            // stale pooled connection or a failing client is not one.
            if let Some(pick) = pick {
                match &result {
                    Ok(r) => pick.report(!r.head.status.is_server_error()),
                    Err(AttemptError::Failed(_)) => pick.report(false),
                    Err(AttemptError::Stale(_) | AttemptError::Client(_)) => {}
                }
            }
            let retry = match &result {
                Err(AttemptError::Client(_)) => false,
                Err(AttemptError::Stale(_)) if stale_retry_left => {
                    // Not a failure of the upstream: it closed an idle
                    // connection as we reused it. Once, at no cost.
                    stale_retry_left = false;
                    continue;
                }
                Err(AttemptError::Failed(Failure::Connect(_))) => true,
                Err(AttemptError::Failed(Failure::Timeout(_)) | AttemptError::Stale(_)) => {
                    replayable
                }
                Err(AttemptError::Failed(Failure::Upstream(_))) => false,
                Ok(r) => {
                    replayable
                        && matches!(
                            r.head.status,
                            StatusCode::BAD_GATEWAY
                                | StatusCode::SERVICE_UNAVAILABLE
                                | StatusCode::GATEWAY_TIMEOUT
                        )
                }
            };
            if !retry || attempt >= retries {
                rlog.attempts = attempt + 1;
                return result;
            }
            if result.is_ok() {
                // The refused response's body is not wanted: the connection
                // is not at a message boundary any more.
                self.upstream = None;
            }
            attempt += 1;
            cx.node
                .metrics
                .http_retries
                .with_label_values(&[&rlog.route])
                .inc();
            tokio::time::sleep(Duration::from_millis(
                backoff.saturating_mul(1 << (attempt - 1).min(10)),
            ))
            .await;
        }
    }

    /// One try against one upstream address.
    async fn attempt(
        &mut self,
        key: PoolKey,
        parts: &request::Parts,
        head: &[u8],
        body: Framing,
        timeout: Duration,
    ) -> Result<UpstreamResponse, AttemptError> {
        let (mut up, reused) = self.upstream_for(key).await.map_err(AttemptError::Failed)?;
        // A failure on a reused connection before any response byte is the
        // upstream having closed it while idle.
        let lost = |e: io::Error, up: &Upstream| {
            let f = Failure::Upstream(format!("connection lost: {e}"));
            if reused && up.buf.is_empty() && pool::is_stale(&e) {
                AttemptError::Stale(f)
            } else {
                AttemptError::Failed(f)
            }
        };
        self.out.clear();
        self.out.extend_from_slice(head);
        if body == Framing::Empty {
            if let Err(e) = write_out(&mut up.io, &mut self.out).await {
                return Err(lost(e, &up));
            }
        } else {
            let max = self.http.max_request_body_bytes;
            let idle = self.cx.node.proxy.idle_timeout;
            // Boxed: most requests have no body.
            match Box::pin(relay(
                &mut self.client,
                &mut self.buf,
                &mut up.io,
                &mut self.out,
                body,
                false,
                Some(max),
                idle,
            ))
            .await
            {
                Ok(_) => {}
                Err(RelayError::Source(e)) => {
                    return Err(AttemptError::Client(ConnError::Client(e)))
                }
                Err(RelayError::SourceClosed) => {
                    return Err(AttemptError::Client(ConnError::ClientClosed))
                }
                Err(RelayError::Stalled(t)) => {
                    return Err(AttemptError::Client(ConnError::ClientStalled(t)))
                }
                Err(RelayError::Framing(e)) => {
                    return Err(AttemptError::Client(ConnError::Malformed(e.to_string())))
                }
                Err(RelayError::TooLarge(n)) => {
                    return Err(AttemptError::Client(ConnError::BodyTooLarge(n)))
                }
                // Only the head may have been sent: nothing to replay from.
                Err(RelayError::Sink(e)) => {
                    return Err(AttemptError::Failed(Failure::Upstream(format!(
                        "sending the request body: {e}"
                    ))))
                }
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let read = read_response_head(&mut self.client, &mut up, &parts.method);
        match self.watchdog.within(deadline, read).await.ok_or(()) {
            Err(()) => Err(AttemptError::Failed(Failure::Timeout(timeout))),
            Ok(Err(HeadRead::Io(e))) => Err(lost(e, &up)),
            Ok(Err(HeadRead::Closed)) => Err(lost(io::ErrorKind::UnexpectedEof.into(), &up)),
            Ok(Err(HeadRead::Bad(why))) => Err(AttemptError::Failed(Failure::Upstream(why))),
            Ok(Err(HeadRead::Client(e))) => Err(AttemptError::Client(ConnError::Client(e))),
            Ok(Ok(resp)) => {
                self.upstream = Some(up);
                Ok(resp)
            }
        }
    }

    /// The kept connection when it goes to `key`, else an idle one from the
    /// pool, else a new one. `true` when reused.
    async fn upstream_for(&mut self, key: PoolKey) -> Result<(Upstream, bool), Failure> {
        let cx = Arc::clone(&self.cx);
        let node = &cx.node;
        if let Some(mut up) = self.upstream.take() {
            if up.key == key && up.buf.is_empty() {
                let fresh = up.last_used.elapsed() < RECHECK_AFTER;
                if fresh || pool::is_idle_and_open(&mut up.io) {
                    return Ok((up, true));
                }
            } else {
                self.upstream = Some(up);
                self.check_in_upstream();
            }
        }
        let idle = Duration::from_millis(self.http.pool_idle_timeout_ms);
        if let Some(io) = node.api_idle.take(&key, idle) {
            return Ok((
                Upstream {
                    key,
                    io,
                    buf: BytesMut::with_capacity(READ_CHUNK),
                    last_used: Instant::now(),
                },
                true,
            ));
        }
        // Connecting is the cold path: boxed, so its large future does not
        // weigh on every request's state (moved around per request).
        let io = Box::pin(connect(Arc::clone(&cx), key.clone())).await?;
        Ok((
            Upstream {
                key,
                io,
                buf: BytesMut::with_capacity(READ_CHUNK),
                last_used: Instant::now(),
            },
            false,
        ))
    }

    /// Relays the upstream response to the client; returns whether the
    /// client connection may carry another request.
    #[allow(clippy::too_many_arguments)]
    async fn respond(
        &mut self,
        resp: UpstreamResponse,
        plan: &Plan<'_>,
        guard: Option<&mut super::guard::BodyGuard>,
        req: &request::Parts,
        upgrade: bool,
        http10: bool,
        client_close: bool,
        rlog: &mut RequestLog,
    ) -> Result<bool, ConnError> {
        let UpstreamResponse {
            head,
            framing,
            close: upstream_close,
        } = resp;
        let mut up = self
            .upstream
            .take()
            .ok_or_else(|| ConnError::Upstream("no upstream connection".into()))?;
        rlog.status = head.status.as_u16();
        rlog.outcome = "ok";
        // HTTP/1.0 clients get no chunked coding: the payload is sent as
        // is, and the end of the connection ends it.
        let decode = http10 && framing == Framing::Chunked;
        let close = client_close || http10 || framing == Framing::UntilClose;
        // A response no step reads or changes is relayed from the bytes
        // the upstream sent (hop-by-hop fields left out), with no map.
        let relayed_as_sent = head.status != StatusCode::SWITCHING_PROTOCOLS
            && guard.is_none()
            && plan.cache.is_none()
            && !plan.changes_response()
            && !decode;
        let mut cached_body = None;
        if relayed_as_sent {
            self.out.clear();
            write_relayed_head(&mut self.out, &head, close);
        } else {
            let mut parts = match head.parts() {
                Ok(parts) => parts,
                // Fields are checked as the head is parsed: not reached.
                Err(why) => {
                    let f = Failure::Upstream(format!("malformed response: {why}"));
                    Box::pin(self.answer(f.response(), f.outcome(), &req.method, true, rlog))
                        .await?;
                    return Ok(false);
                }
            };
            if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                if !upgrade {
                    let f = Failure::Upstream(
                        "101 Switching Protocols to a request without Upgrade".into(),
                    );
                    Box::pin(self.answer(f.response(), f.outcome(), &req.method, true, rlog))
                        .await?;
                    return Ok(false);
                }
                return Box::pin(self.upgrade(parts, up, rlog)).await;
            }
            strip_hop_by_hop(&mut parts.headers);
            // A response the guardrails read is read whole, checked, then
            // sent (and cached) as they leave it.
            let mut whole_body = None;
            let kind = guard
                .as_ref()
                .and_then(|g| g.response_kind(&req.method, parts.status, &parts.headers));
            if let (Some(g), Some(kind)) = (guard, kind) {
                let read = match Box::pin(self.read_guarded(&mut up, framing, g.max_body())).await {
                    Ok(read) => read,
                    // Nothing was sent yet: a 502 rather than a cut connection.
                    Err(ConnError::Upstream(e)) => {
                        let f = Failure::Upstream(e);
                        Box::pin(self.answer(
                            f.response(),
                            "upstream_body_error",
                            &req.method,
                            true,
                            rlog,
                        ))
                        .await?;
                        return Ok(false);
                    }
                    Err(e) => return Err(e),
                };
                let checked = match read {
                    Some(body) => g.response(kind, &body).map(|new| new.unwrap_or(body)),
                    None => Err(g.too_large("response body")),
                };
                match checked {
                    Ok(body) => {
                        super::guard::set_length(&mut parts.headers, body.len());
                        whole_body = Some(body);
                    }
                    // Nothing was sent yet: the client gets the refusal on a
                    // connection still at a response boundary. The upstream
                    // connection is dropped (its body may be partly unread).
                    Err(r) => {
                        Box::pin(self.answer(
                            r.response(),
                            r.outcome,
                            &req.method,
                            client_close,
                            rlog,
                        ))
                        .await?;
                        return Ok(!client_close);
                    }
                }
            }
            // A whole cacheable response is read, stored, then sent.
            if let Some(fill) = &plan.cache {
                let admitted = fill.admits(parts.status, &parts.headers);
                match (admitted, framing, whole_body.take()) {
                    (Some(fresh_for), _, Some(body)) => {
                        fill.put(&mut parts.headers, parts.status, body.clone(), fresh_for);
                        parts
                            .headers
                            .insert("x-trigate-cache", HeaderValue::from_static("miss"));
                        cached_body = Some(body);
                    }
                    (None, _, Some(body)) => {
                        parts
                            .headers
                            .insert("x-trigate-cache", HeaderValue::from_static("bypass"));
                        cached_body = Some(body);
                    }
                    (Some(fresh_for), Framing::Length(n), None) => {
                        let body = Box::pin(self.read_whole(&mut up, n)).await?;
                        fill.put(&mut parts.headers, parts.status, body.clone(), fresh_for);
                        parts
                            .headers
                            .insert("x-trigate-cache", HeaderValue::from_static("miss"));
                        cached_body = Some(body);
                    }
                    _ => {
                        parts
                            .headers
                            .insert("x-trigate-cache", HeaderValue::from_static("bypass"));
                    }
                }
            }
            cached_body = cached_body.or(whole_body);
            plan.finish(&mut parts);
            if decode {
                parts.headers.remove(header::TRANSFER_ENCODING);
            }
            self.out.clear();
            write_response_head(&mut self.out, &parts, close, None);
        }
        let relayed = match cached_body {
            Some(body) => {
                if req.method != Method::HEAD {
                    self.out.extend_from_slice(&body);
                }
                write_out(&mut self.client, &mut self.out)
                    .await
                    .map_err(ConnError::Client)?;
                Ok(body.len() as u64)
            }
            None => {
                relay(
                    &mut up.io,
                    &mut up.buf,
                    &mut self.client,
                    &mut self.out,
                    framing,
                    decode,
                    None,
                    self.cx.node.proxy.idle_timeout,
                )
                .await
            }
        };
        match relayed {
            Ok(n) => {
                rlog.bytes_out = n;
                if !upstream_close && framing != Framing::UntilClose && up.buf.is_empty() {
                    up.last_used = Instant::now();
                    self.upstream = Some(up);
                }
                Ok(!close)
            }
            // The status line went out: all that is left is to cut the
            // client off so it sees a truncated response, and log why.
            Err(RelayError::Sink(e)) => {
                rlog.outcome = "client_closed";
                Err(ConnError::Client(e))
            }
            Err(e) => {
                rlog.outcome = "upstream_body_error";
                Err(ConnError::Upstream(format!("response body: {e}")))
            }
        }
    }

    /// Reads a whole response body of any framing for the guardrails;
    /// `None` when it is larger than `max`.
    async fn read_guarded(
        &mut self,
        up: &mut Upstream,
        framing: Framing,
        max: usize,
    ) -> Result<Option<Bytes>, ConnError> {
        match framing {
            Framing::Empty => return Ok(Some(Bytes::new())),
            Framing::Length(n) if n > max as u64 => return Ok(None),
            Framing::Length(n) => return self.read_whole(up, n).await.map(Some),
            Framing::Chunked | Framing::UntilClose => {}
        }
        let mut whole = Vec::new();
        self.out.clear();
        let idle = self.cx.node.proxy.idle_timeout;
        let read = relay(
            &mut up.io,
            &mut up.buf,
            &mut whole,
            &mut self.out,
            framing,
            true,
            Some(max as u64),
            idle,
        )
        .await;
        self.out.clear();
        match read {
            Ok(_) => Ok(Some(Bytes::from(whole))),
            Err(RelayError::TooLarge(_)) => Ok(None),
            Err(e) => Err(ConnError::Upstream(format!("response body: {e}"))),
        }
    }

    /// Reads a whole `n`-byte body (a response the cache stores).
    async fn read_whole(&mut self, up: &mut Upstream, n: u64) -> Result<Bytes, ConnError> {
        let n = usize::try_from(n).map_err(|_| ConnError::Upstream("body too large".into()))?;
        let idle = self.cx.node.proxy.idle_timeout;
        while up.buf.len() < n {
            up.buf.reserve(n - up.buf.len());
            match tokio::time::timeout(idle, up.io.read_buf(&mut up.buf)).await {
                Err(_) => return Err(ConnError::Upstream("response body stalled".into())),
                Ok(Ok(0)) => return Err(ConnError::Upstream("response body cut short".into())),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(ConnError::Upstream(format!("response body: {e}"))),
            }
        }
        Ok(up.buf.split_to(n).freeze())
    }

    /// After a 101: the response head to the client, then bytes both ways
    /// until either side closes. The connection is no longer HTTP.
    async fn upgrade(
        &mut self,
        mut parts: response::Parts,
        mut up: Upstream,
        rlog: &mut RequestLog,
    ) -> Result<bool, ConnError> {
        let protocol = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        self.out.clear();
        write_response_head(&mut self.out, &parts, false, protocol.as_ref());
        // Bytes each side sent right behind its head belong to the other.
        self.out.extend_from_slice(&up.buf.split());
        write_out(&mut self.client, &mut self.out)
            .await
            .map_err(ConnError::Client)?;
        let early = self.buf.split();
        if !early.is_empty() {
            up.io
                .write_all(&early)
                .await
                .map_err(|e| ConnError::Upstream(e.to_string()))?;
        }
        rlog.outcome = "upgraded";
        match tokio::io::copy_bidirectional(&mut self.client, &mut up.io).await {
            Ok((_, to_client)) => rlog.bytes_out = to_client,
            Err(e) => tracing::debug!(error = %e, "upgraded connection ended with an error"),
        }
        Ok(false)
    }

    /// Sends a response the gateway made (refusal, preflight, cache hit).
    async fn answer(
        &mut self,
        resp: Response<ApiBody>,
        outcome: &'static str,
        method: &Method,
        close: bool,
        rlog: &mut RequestLog,
    ) -> Result<(), ConnError> {
        rlog.status = resp.status().as_u16();
        rlog.outcome = outcome;
        let sent = self.write_answer(resp, method, close).await;
        rlog.bytes_out = sent.as_ref().map_or(0, |n| *n);
        sent.map(|_| ())
    }

    async fn write_answer(
        &mut self,
        resp: Response<ApiBody>,
        method: &Method,
        close: bool,
    ) -> Result<u64, ConnError> {
        let (mut parts, body) = resp.into_parts();
        // Gateway-made bodies are in memory already.
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        if !parts.headers.contains_key(header::DATE) {
            parts.headers.insert(header::DATE, http_date());
        }
        self.out.clear();
        write_response_head(&mut self.out, &parts, close, None);
        if *method != Method::HEAD {
            self.out.extend_from_slice(&body);
        }
        write_out(&mut self.client, &mut self.out)
            .await
            .map_err(ConnError::Client)?;
        Ok(body.len() as u64)
    }
}

/// The `Date` of responses the gateway makes, formatted once a second
/// per thread rather than per response.
fn http_date() -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<(u64, HeaderValue)> =
            const { std::cell::RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LAST.with_borrow_mut(|(at, value)| {
        if *at != secs {
            if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(now)) {
                *value = v;
                *at = secs;
            }
        }
        value.clone()
    })
}

/// Reads the final response head; interim 1xx responses (except 101)
/// go to the client as they come.
async fn read_response_head<S: AsyncWrite + Unpin>(
    client: &mut S,
    up: &mut Upstream,
    method: &Method,
) -> Result<UpstreamResponse, HeadRead> {
    loop {
        if !up.buf.is_empty() {
            match parse_response(&mut up.buf) {
                Ok(Some(head)) => {
                    if head.status.is_informational()
                        && head.status != StatusCode::SWITCHING_PROTOCOLS
                    {
                        // 100 Continue was the gateway's to send.
                        if head.status != StatusCode::CONTINUE {
                            client
                                .write_all(&head.bytes)
                                .await
                                .map_err(HeadRead::Client)?;
                        }
                        continue;
                    }
                    let framing = framing::response(method, head.status, &head)
                        .map_err(|e| HeadRead::Bad(format!("response framing: {e}")))?;
                    let close = wants_close(&head, head.version == Version::HTTP_10);
                    return Ok(UpstreamResponse {
                        head,
                        framing,
                        close,
                    });
                }
                Ok(None) if up.buf.len() > 256 * 1024 => {
                    return Err(HeadRead::Bad("response head larger than 256 KiB".into()))
                }
                Ok(None) => {}
                Err(why) => return Err(HeadRead::Bad(format!("malformed response: {why}"))),
            }
        }
        if up.buf.capacity() - up.buf.len() < 1024 {
            up.buf.reserve(READ_CHUNK);
        }
        match up.io.read_buf(&mut up.buf).await {
            Ok(0) => return Err(HeadRead::Closed),
            Ok(_) => {}
            Err(e) => return Err(HeadRead::Io(e)),
        }
    }
}

/// A new upstream connection for `key`: TCP from the workload's namespace,
/// then TLS offering HTTP/1.1 only when the key names a TLS server.
async fn connect(cx: Arc<ConnContext>, key: PoolKey) -> Result<UpStream, Failure> {
    let node = &cx.node;
    let tcp = upstream::connect(
        key.addr,
        &cx.netns,
        node.proxy.mark,
        node.proxy.connect_timeout,
    )
    .await
    .map_err(|e| Failure::Connect(crate::error_chain(&e)))?;
    match &key.tls_name {
        None => Ok(UpStream::Plain(tcp)),
        Some(name) => {
            let tls_cfg = node.config.load().tls.clone();
            let tls = node.tls.upstream(&tls_cfg).map_err(Failure::Connect)?;
            // This relay speaks HTTP/1.1 only.
            let config = tls.config(&[b"http/1.1".to_vec()]);
            let timeout = Duration::from_millis(tls_cfg.handshake_timeout_ms);
            let s = upstream::tls::handshake(tcp, name, config, timeout)
                .await
                .map_err(|e| Failure::Connect(crate::error_chain(&e)))?;
            Ok(UpStream::Tls(Box::new(s)))
        }
    }
}

/// Why no response head was read.
enum HeadRead {
    Io(io::Error),
    Closed,
    Bad(String),
    /// Forwarding an interim response to the client failed.
    Client(io::Error),
}

/// Why a body relay stopped short.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("reading: {0}")]
    Source(io::Error),
    #[error("the sender closed before the end of the body")]
    SourceClosed,
    #[error("no body bytes for {} ms", .0.as_millis())]
    Stalled(Duration),
    #[error("writing: {0}")]
    Sink(io::Error),
    #[error("{0}")]
    Framing(FramingError),
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
}

/// Copies one body from `src` to `dst`: first what `out` holds (a head),
/// then the body's bytes already in `pending`, then more as they arrive;
/// whatever follows the body stays in `pending`. Everything read is
/// written before the next read, so streamed responses (SSE) are not held
/// back. `decode` strips the chunked coding. Returns the payload size.
#[allow(clippy::too_many_arguments)]
async fn relay<R, W>(
    src: &mut R,
    pending: &mut BytesMut,
    dst: &mut W,
    out: &mut Vec<u8>,
    framing: Framing,
    decode: bool,
    max: Option<u64>,
    idle: Duration,
) -> Result<u64, RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut chunked = Chunked::default();
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut payload = 0u64;
    loop {
        let done = match framing {
            Framing::Empty => true,
            Framing::Length(_) => {
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(pending.len());
                out.extend_from_slice(&pending[..take]);
                pending.advance(take);
                left -= take as u64;
                payload += take as u64;
                left == 0
            }
            Framing::Chunked => {
                let p = chunked
                    .advance(pending, |r| {
                        if decode {
                            out.extend_from_slice(&pending[r]);
                        }
                    })
                    .map_err(RelayError::Framing)?;
                if !decode {
                    out.extend_from_slice(&pending[..p.consumed]);
                }
                pending.advance(p.consumed);
                payload = chunked.payload;
                p.done
            }
            Framing::UntilClose => {
                out.extend_from_slice(pending);
                payload += pending.len() as u64;
                pending.clear();
                false
            }
        };
        if let Some(max) = max {
            if payload > max {
                return Err(RelayError::TooLarge(max));
            }
        }
        if !out.is_empty() {
            write_out(dst, out).await.map_err(RelayError::Sink)?;
        }
        if done {
            return Ok(payload);
        }
        if pending.capacity() - pending.len() < 1024 {
            pending.reserve(READ_CHUNK);
        }
        match tokio::time::timeout(idle, src.read_buf(pending)).await {
            Err(_) => return Err(RelayError::Stalled(idle)),
            Ok(Ok(0)) if framing == Framing::UntilClose => return Ok(payload),
            Ok(Ok(0)) => return Err(RelayError::SourceClosed),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(RelayError::Source(e)),
        }
    }
}

async fn write_out<W: AsyncWrite + Unpin>(dst: &mut W, out: &mut Vec<u8>) -> io::Result<()> {
    dst.write_all(out).await?;
    out.clear();
    dst.flush().await
}

enum HeadError {
    TooMany,
    Malformed(String),
}

/// Takes a complete request head off the front of `buf`, with the kinds
/// of field the relay reads that it holds.
fn parse_request(buf: &mut BytesMut) -> Result<Option<(request::Parts, Present)>, HeadError> {
    // Uninitialised slots: zeroing 128 of them per head showed in profiles.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooMany),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let bad = |what: &str| HeadError::Malformed(what.to_string());
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| bad("invalid method"))?;
    let path = req.path.unwrap_or_default();
    let path_at = path.as_ptr() as usize - buf.as_ptr() as usize;
    let path = path_at..path_at + path.len();
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let spans = Spans::of(buf, req.headers).ok_or_else(|| bad("invalid header field"))?;
    let head = buf.split_to(len).freeze();
    let uri =
        Uri::from_maybe_shared(head.slice(path)).map_err(|_| bad("invalid request target"))?;
    let map = spans
        .map(&head)
        .ok_or_else(|| bad("invalid header field"))?;
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = map;
    Ok(Some((parts, spans.present)))
}

/// A response head as the upstream sent it: its bytes and where its
/// fields lie. The header map is made only for the steps that need one
/// (guardrails, cache, header rules, CORS, limit headers, upgrades, the
/// LLM gate); a response none of them touches is relayed from the bytes,
/// which spares a map per response.
pub(super) struct ResponseHead {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    /// The whole head; interim responses are relayed as they are.
    pub(super) bytes: Bytes,
    spans: Spans,
}

impl ResponseHead {
    /// The head as `http` parts, its values slices of the head's bytes.
    pub(super) fn parts(&self) -> Result<response::Parts, String> {
        self.parts_of(|_| true)
    }

    /// The head as `http` parts with only the fields `keep` takes (by
    /// name as sent, in any case).
    pub(super) fn parts_of(&self, keep: impl Fn(&[u8]) -> bool) -> Result<response::Parts, String> {
        let map = self
            .spans
            .map_of(&self.bytes, keep)
            .ok_or("invalid header field")?;
        let (mut parts, ()) = Response::new(()).into_parts();
        parts.status = self.status;
        parts.version = self.version;
        parts.headers = map;
        Ok(parts)
    }
}

impl Fields for ResponseHead {
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.spans.values(&self.bytes, name)
    }
}

/// Takes a complete response head off the front of `buf`.
fn parse_response(buf: &mut BytesMut) -> Result<Option<ResponseHead>, String> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let status = StatusCode::from_u16(resp.code.unwrap_or(0)).map_err(|e| e.to_string())?;
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let spans = Spans::of(buf, resp.headers).ok_or("invalid header field")?;
    let bytes = buf.split_to(len).freeze();
    Ok(Some(ResponseHead {
        status,
        version,
        bytes,
        spans,
    }))
}

/// Whether the sender of these headers closes after this message:
/// `Connection: close`, or HTTP/1.0 without `keep-alive`.
fn wants_close(headers: &impl Fields, http10: bool) -> bool {
    let has = |token: &str| {
        headers
            .values(&header::CONNECTION)
            .flat_map(|v| v.split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    has("close") || (http10 && !has("keep-alive"))
}

/// The protocol an HTTP/1.1 upgrade request asks for (`Connection`
/// lists `upgrade` and `Upgrade` names it). `present`: what its head held.
fn upgrade_protocol(req: &request::Parts, present: Present) -> Option<HeaderValue> {
    let asks = req.version == Version::HTTP_11
        && present.has(Kind::Connection)
        && present.has(Kind::Upgrade)
        && req
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
    asks.then(|| req.headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Whether a `Connection` token names a field to drop besides the fixed
/// hop-by-hop ones (`close` names none; the fixed ones go anyway).
fn names_another_field(token: &[u8]) -> bool {
    !token.is_empty() && !token.eq_ignore_ascii_case(b"close") && !Kind::of(token).is_hop_by_hop()
}

/// Drops hop-by-hop fields (RFC 9110 §7.6.1): the fixed ones and those the
/// `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names marks which fixed ones are here: usually
    // none, or `Connection` alone. No allocation unless `Connection`
    // lists a name outside the fixed set (rare).
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name.as_str()) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| names_another_field(t))
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
}

fn write_request_head(out: &mut Vec<u8>, req: &request::Parts, upgrade: Option<&HeaderValue>) {
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    let target = match req.uri.path_and_query() {
        Some(pq) => pq.as_str(),
        None if req.uri == "*" => "*",
        None => "/",
    };
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_fields(out, &req.headers);
    if let Some(p) = upgrade {
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
        out.extend_from_slice(p.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `HTTP/1.1 <code> <reason>`: responses go to the client as HTTP/1.1
/// whatever the upstream spoke.
fn write_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn write_response_head(
    out: &mut Vec<u8>,
    resp: &response::Parts,
    close: bool,
    upgrade: Option<&HeaderValue>,
) {
    write_status_line(out, resp.status);
    write_fields(out, &resp.headers);
    if let Some(p) = upgrade {
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
        out.extend_from_slice(p.as_bytes());
        out.extend_from_slice(b"\r\n");
    } else if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The head of a response relayed as the upstream sent it: its fields in
/// their order and spelling, less the hop-by-hop ones (RFC 9110 §7.6.1:
/// the fixed ones and those its `Connection` names), as
/// [`strip_hop_by_hop`] leaves a map.
fn write_relayed_head(out: &mut Vec<u8>, head: &ResponseHead, close: bool) {
    write_status_line(out, head.status);
    let tokens = || {
        head.values(&header::CONNECTION)
            .flat_map(|v| v.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| names_another_field(t))
    };
    // Usually `Connection` holds only `keep-alive` or `close`: then no
    // field needs looking up in it.
    let lists_others = tokens().next().is_some();
    let listed = |name: &[u8]| lists_others && tokens().any(|t| name.eq_ignore_ascii_case(t));
    let bytes = &head.bytes[..];
    // Kept lines already written `name: value\r\n` that follow each other
    // in the head are copied as one run; any other line is written anew.
    let mut run = 0..0;
    for f in &head.spans.fields {
        let (name, value) = Spans::field(bytes, f);
        if f.kind.is_hop_by_hop() || listed(name) {
            continue;
        }
        match Spans::plain_line(bytes, f) {
            Some((start, end)) if start == run.end => run.end = end,
            Some((start, end)) => {
                out.extend_from_slice(&bytes[run]);
                run = start..end;
            }
            None => {
                out.extend_from_slice(&bytes[run]);
                run = 0..0;
                out.extend_from_slice(name);
                out.extend_from_slice(b": ");
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(&bytes[run]);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

pub(crate) fn write_fields(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// A stream whose first bytes were already read (the HTTP/2 preface):
/// reads give those back first.
struct Prefixed<S> {
    prefix: Bytes,
    io: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
