//! One POST on an `mcp` destination, after the routes' policy admitted it
//! and its body was read: the JSON-RPC messages are checked
//! ([`super::rpc`]), refused calls answered here, the rest sent to the
//! server the pod called, and its answer (JSON or an SSE stream) filtered
//! and audited on the way back. GET (the server's own stream) and DELETE
//! (ending a session) are relayed by the api gate unchanged.
use std::{
    collections::{HashMap, VecDeque},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    body::Incoming,
    header::{self, HeaderValue},
    http::request::Parts,
    Method, Request, Response, StatusCode,
};
use serde_json::Value;

use super::federation;
use super::guard as mcp_guard;
use super::rpc::{self, Call, Status};
use crate::{
    config::{GateKind, PoisonedTools},
    gate::{
        api::{
            client::{ApiBody, BoxError, PoolKey},
            decide,
            h1::outbound::{self, UpBody},
            json_response, ConnContext, Failure, RequestLog, Verdict,
        },
        llm::stream::{SseEvent, SseParser},
    },
    policy::{
        guardrail::Session,
        limits::Decision,
        mcp::{Item, McpPlan},
    },
    telemetry::{
        guard::Audit as GuardAudit,
        mcp::{CallRecord, McpMetrics},
    },
};

/// Largest JSON answer read whole to be filtered.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Request headers that are the connection's, not the message's.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// What [`respond`] produced.
pub(crate) enum Reply {
    Whole(Response<ApiBody>, &'static str),
    /// An SSE answer, filtered event by event.
    Stream(Response<Box<McpStream>>, &'static str),
}

/// Serves a POST that came through hyper (HTTP/2 clients; HTTP/1.1 ones
/// are served by the api gate's relay, which calls [`respond`] itself).
pub async fn handle(cx: &Arc<ConnContext>, req: Request<Incoming>) -> Response<ApiBody> {
    let api_policy = cx.node.api.load_full();
    let (mut parts, body) = req.into_parts();
    let mut rlog = RequestLog::start(cx, &parts);
    let claims = match decide(cx, &api_policy, &mut parts, &mut rlog).await {
        Verdict::Answer(resp, outcome) => return rlog.finish_answered(resp, outcome),
        Verdict::Forward(mut plan) => plan.jwt_claims.take(),
    };
    let reply = if parts.method == Method::GET {
        stream(cx, parts, claims, &mut rlog).await
    } else if parts.method != Method::POST {
        other(cx, &parts).await
    } else {
        match read(cx, body).await {
            Ok(body) => respond(cx, parts, body, claims, &mut rlog).await,
            Err((resp, outcome)) => return rlog.finish_answered(resp, outcome),
        }
    };
    match reply {
        Reply::Whole(resp, outcome) => rlog.finish_answered(resp, outcome),
        Reply::Stream(resp, outcome) => {
            let (parts, body) = resp.into_parts();
            rlog.finish_answered(Response::from_parts(parts, body.boxed()), outcome)
        }
    }
}

/// A request other than POST and GET on an `mcp` destination the gateway
/// answers itself (a federation): DELETE ends the session.
pub(crate) async fn other(cx: &Arc<ConnContext>, parts: &Parts) -> Reply {
    match federation::of(cx) {
        Some(fed) if parts.method == Method::DELETE => {
            Reply::Whole(federation::end(cx, &fed, parts).await, "ok")
        }
        _ => {
            let err = rpc::error(
                Value::Null,
                rpc::INVALID_REQUEST,
                &format!(
                    "{} is not an MCP request: use POST, GET or DELETE",
                    parts.method
                ),
                None,
            );
            Reply::Whole(
                json_response(StatusCode::METHOD_NOT_ALLOWED, &err),
                "method_not_allowed",
            )
        }
    }
}

/// Whether requests on this destination are the gate's own to answer
/// (a federation) rather than relayed to the server the pod called.
pub fn federated(cx: &ConnContext) -> bool {
    cx.node
        .config
        .load()
        .mcp
        .federations
        .iter()
        .any(|f| *f.destination == *cx.destination.name)
}

/// Whether a GET asks for the server's event stream.
pub fn wants_stream(headers: &hyper::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// A POST's body through hyper, up to the configured cap; the refusal
/// and its outcome when it cannot be read.
async fn read(
    cx: &ConnContext,
    body: Incoming,
) -> Result<Bytes, (Response<ApiBody>, &'static str)> {
    let max = cx.node.config.load().http.max_request_body_bytes;
    match Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX))
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            let too_large = e.is::<http_body_util::LengthLimitError>();
            let (status, message, outcome) = if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is larger than {max} bytes"),
                    "body_too_large",
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body: {e}"),
                    "bad_request",
                )
            };
            let err = rpc::error(Value::Null, rpc::INVALID_REQUEST, &message, None);
            Err((json_response(status, &err), outcome))
        }
    }
}

/// Where a call's audit line and metrics go.
#[derive(Clone)]
struct Audit {
    metrics: Arc<crate::telemetry::Metrics>,
    workload: Arc<str>,
    server: Arc<str>,
    session: String,
    started: Instant,
}

impl Audit {
    fn call(
        &self,
        call: &Call,
        decision: &'static str,
        policy: Option<&str>,
        status: &str,
        hidden: usize,
    ) {
        self.mcp().record(&CallRecord {
            workload: &self.workload,
            session: &self.session,
            server: &self.server,
            method: &call.method,
            target: call
                .target
                .as_ref()
                .map(|(item, name)| (item.as_str(), name.as_str())),
            args_hash: call.args_hash.as_deref(),
            decision,
            policy,
            status,
            hidden,
            elapsed: self.started.elapsed(),
        });
    }

    fn mcp(&self) -> &McpMetrics {
        &self.metrics.mcp
    }

    /// An answer the server sent: its status and what its listing hid.
    fn answered(&self, call: &Call, status: &Status, hidden: usize) {
        self.call(call, "allowed", None, &status.label(), hidden);
    }
}

/// A GET for a server stream (SSE) on an `mcp` destination: relayed event
/// by event with listings filtered, which matters for servers on the older
/// HTTP+SSE transport, whose answers to every POST come on this stream.
pub(crate) async fn stream(
    cx: &Arc<ConnContext>,
    parts: Parts,
    claims: Option<serde_json::Map<String, Value>>,
    rlog: &mut RequestLog,
) -> Reply {
    let node = &cx.node;
    let authz = node.mcp.load().plan(
        cx.workload.as_ref().map(|w| (&*w.name, &w.labels)),
        claims.as_ref(),
    );
    let timeout = Duration::from_millis(node.config.load().http.request_timeout_ms);
    let (mut head, up) = if let Some(fed) = federation::of(cx) {
        match federation::listen(cx, &fed, &parts).await {
            Ok(r) => r,
            Err(r) => {
                let (resp, outcome) = *r;
                return Reply::Whole(resp, outcome);
            }
        }
    } else {
        match tokio::time::timeout(timeout, send(cx, &parts, Method::GET, Bytes::new())).await {
            Ok(Ok((head, up))) => (head, boxed(up)),
            Ok(Err(f)) => return Reply::Whole(failure_response(&f), "upstream_error"),
            Err(_) => {
                return Reply::Whole(
                    failure_response(&Failure::Timeout(timeout)),
                    "upstream_timeout",
                )
            }
        }
    };
    for name in ["connection", "keep-alive", "transfer-encoding"] {
        head.headers.remove(name);
    }
    let audit = Audit {
        metrics: Arc::clone(&node.metrics),
        workload: rlog.workload.clone(),
        server: cx.destination.name.clone(),
        session: "-".into(),
        started: Instant::now(),
    };
    let stream = Box::new(McpStream {
        upstream: up,
        parser: SseParser::default(),
        out: VecDeque::new(),
        sse_transport: Some(SseTransport {
            workload: cx.workload.as_ref().map_or(0, |w| w.id),
            stream_path: parts.uri.path().to_owned(),
            endpoint: None,
            refusals: None,
        }),
        answers: Answers {
            node: Arc::clone(node),
            calls: HashMap::new(),
            authz,
            guard: None,
            guard_audit: GuardAudit {
                findings: node.metrics.genai.guard_findings.clone(),
                gate: "mcp",
                workload: rlog.workload.clone(),
                destination: cx.destination.name.clone(),
            },
            poisoned: node.config.load().mcp.poisoned_tools,
            audit,
        },
        done: false,
    });
    Reply::Stream(Response::from_parts(head, stream), "ok")
}

/// The MCP gate on one POST (see the module doc).
pub(crate) async fn respond(
    cx: &Arc<ConnContext>,
    parts: Parts,
    body: Bytes,
    claims: Option<serde_json::Map<String, Value>>,
    rlog: &mut RequestLog,
) -> Reply {
    let node = &cx.node;
    let max_batch = node.config.load().mcp.max_batch;
    let audit = Audit {
        metrics: Arc::clone(&node.metrics),
        workload: rlog.workload.clone(),
        server: cx.destination.name.clone(),
        session: parts
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned(),
        started: Instant::now(),
    };
    let authz = node.mcp.load().plan(
        cx.workload.as_ref().map(|w| (&*w.name, &w.labels)),
        claims.as_ref(),
    );
    let who = cx.workload.as_ref().map(|w| (&*w.name, &w.labels));
    let mut guard = node.guard.load().plan(GateKind::Mcp, who).map(Session::new);
    let fed = federation::of(cx);
    // One request with no guardrail to read its arguments, to a server
    // the pod called (not a federation, which rewrites every message): read
    // without a tree and, unless refused, sent as it came.
    let one = (guard.is_none() && fed.is_none())
        .then(|| rpc::plan_one(&body, authz.as_ref()))
        .flatten();
    let (mut planned, batch) = match one {
        Some(planned) => (planned, false),
        None => match rpc::parse(&body, max_batch) {
            Ok(b) => (rpc::plan(b.messages, authz.as_ref()), b.batch),
            Err(err) => {
                tracing::info!(
                    workload = &*audit.workload,
                    server = %audit.server,
                    error = %err["error"]["message"],
                    "mcp message refused"
                );
                return Reply::Whole(json_response(StatusCode::BAD_REQUEST, &err), "mcp_invalid");
            }
        },
    };
    for (call, why, _) in &planned.refused {
        audit.call(call, "denied", Some(why.policy()), "denied", 0);
    }
    let mut refused: Vec<Value> = planned.refused.iter().map(|(_, _, r)| r.clone()).collect();
    // Limits after authorization (a refused call spends nothing), before
    // the guardrails read anything.
    let mut rewritten = !planned.refused.is_empty();
    if let Some(plan) = authz.as_ref() {
        let limited = limit_calls(cx, plan, &planned, &audit).await;
        for (key, resp) in limited {
            planned.take(&key);
            refused.push(resp);
            rewritten = true;
        }
    }
    // Guardrails after authorization: a refused call's arguments are
    // never read. Their own refusals join the policy's.
    let guard_audit = GuardAudit {
        findings: node.metrics.genai.guard_findings.clone(),
        gate: "mcp",
        workload: rlog.workload.clone(),
        destination: cx.destination.name.clone(),
    };
    if let Some(session) = guard.as_mut() {
        let mut kept = Vec::with_capacity(planned.forward.len());
        for mut msg in std::mem::take(&mut planned.forward) {
            let before = msg.clone();
            let checked = mcp_guard::check_call(session, &mut msg);
            guard_audit.record(session.take_hits());
            match checked {
                Ok(()) => {
                    rewritten |= msg != before;
                    kept.push(msg);
                }
                Err(e) => {
                    let key = msg.get("id").map(Value::to_string).unwrap_or_default();
                    if let Some(call) = planned.calls.remove(&key) {
                        audit.call(&call, "denied", Some("guardrails"), "guardrail_blocked", 0);
                        refused.push(rpc::error(
                            call.id.clone(),
                            rpc::DENIED,
                            &e.to_string(),
                            None,
                        ));
                    }
                    rewritten = true;
                }
            }
        }
        planned.forward = kept;
    }
    // Clients of the HTTP+SSE transport read answers from their stream
    // only: refusals go there, and the POST gets the transport's 202.
    // (Looked up only with refusals: the lookup takes a node-wide lock.)
    let sse_stream = (!refused.is_empty())
        .then(|| {
            node.mcp_sse.stream_of(
                cx.workload.as_ref().map_or(0, |w| w.id),
                parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            )
        })
        .flatten();
    if let Some(tx) = sse_stream {
        for r in std::mem::take(&mut refused) {
            if tx.try_send(r).is_err() {
                tracing::warn!(
                    workload = &*audit.workload,
                    "mcp refusal not delivered: the client's event stream is gone or full"
                );
            }
        }
        if planned.nothing_to_forward() {
            let mut resp = Response::new(Full::new(Bytes::new()).map_err(|e| match e {}).boxed());
            *resp.status_mut() = StatusCode::ACCEPTED;
            return Reply::Whole(resp, "mcp_denied");
        }
    }
    if planned.nothing_to_forward() {
        let answer = if batch {
            Value::Array(refused)
        } else {
            refused.into_iter().next().unwrap_or(Value::Null)
        };
        return Reply::Whole(json_response(StatusCode::OK, &answer), "mcp_denied");
    }
    let (head, up) = if let Some(fed) = fed {
        // A federation: the gateway is the server.
        let forward = std::mem::take(&mut planned.forward);
        match federation::post(cx, &fed, &parts, forward, batch).await {
            Ok(r) => r,
            Err(r) => {
                let (resp, outcome) = *r;
                return Reply::Whole(resp, outcome);
            }
        }
    } else {
        // Unchanged when nothing was taken out or redacted: the server
        // gets the bytes the client sent.
        let up_body = if !rewritten {
            body
        } else if batch {
            Bytes::from(Value::Array(std::mem::take(&mut planned.forward)).to_string())
        } else {
            Bytes::from(planned.forward[0].to_string())
        };
        let timeout = Duration::from_millis(node.config.load().http.request_timeout_ms);
        match tokio::time::timeout(timeout, send(cx, &parts, Method::POST, up_body)).await {
            Ok(Ok((head, up))) => (head, boxed(up)),
            Ok(Err(f)) => return Reply::Whole(failure_response(&f), "upstream_error"),
            Err(_) => {
                let f = Failure::Timeout(timeout);
                return Reply::Whole(failure_response(&f), "upstream_timeout");
            }
        }
    };
    let mut head = head;
    for name in ["connection", "keep-alive", "transfer-encoding"] {
        head.headers.remove(name);
    }
    if let Some(id) = head
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .or((audit.session != "-").then_some(audit.session.as_str()))
    {
        node.mcp_sessions.seen(id);
    }
    let answers = Answers {
        node: Arc::clone(node),
        calls: planned.calls,
        authz,
        guard,
        guard_audit,
        poisoned: node.config.load().mcp.poisoned_tools,
        audit,
    };
    let sse = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    if sse && head.status.is_success() {
        let mut out = VecDeque::new();
        // Refused calls of a batch are answered first, on the same stream.
        for r in &refused {
            out.push_back(Bytes::from(encode(&SseEvent {
                event: None,
                data: r.to_string(),
                id: None,
            })));
        }
        let stream = Box::new(McpStream {
            upstream: up,
            parser: SseParser::default(),
            out,
            sse_transport: None,
            answers,
            done: false,
        });
        return Reply::Stream(Response::from_parts(head, stream), "ok");
    }
    let bytes = match read_whole(up).await {
        Ok(b) => b,
        Err(e) => {
            let f = Failure::Upstream(format!("reading the MCP server's answer: {e}"));
            return Reply::Whole(failure_response(&f), "upstream_body_error");
        }
    };
    let mut answers = answers;
    let answer = whole_answer(&bytes, head.status, batch, refused, &mut answers);
    answers.unanswered();
    let mut resp = Response::from_parts(
        head,
        Full::new(answer.clone()).map_err(|e| match e {}).boxed(),
    );
    let headers = resp.headers_mut();
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(answer.len()));
    Reply::Whole(resp, "ok")
}

/// Spends each forwarded tool call's limits; the calls over one, with
/// the error each gets (code [`rpc::LIMITED`], the seconds to wait in its
/// data).
async fn limit_calls(
    cx: &ConnContext,
    plan: &McpPlan,
    planned: &rpc::Planned,
    audit: &Audit,
) -> Vec<(String, Value)> {
    let limiter = Arc::clone(&cx.node.api.load().limiter);
    let mut out = Vec::new();
    for (key, call) in &planned.calls {
        let Some((Item::Tool, tool)) = &call.target else {
            continue;
        };
        for (policy, limit) in plan.limits(tool) {
            let scope = format!("mcp:{policy}");
            let bucket = format!("{}|{tool}", audit.workload);
            let decision = limiter.check(&scope, limit, &bucket).await;
            let label = match &decision {
                Decision::Allowed { .. } => "allowed",
                Decision::Limited { .. } => "limited",
                Decision::BackendDown { admitted: true, .. } => "backend_down_admitted",
                Decision::BackendDown {
                    admitted: false, ..
                } => "backend_down_refused",
            };
            cx.node
                .metrics
                .rate_limit_decisions
                .with_label_values(&[&scope, &limit.name, label])
                .inc();
            let wait = match decision {
                Decision::Limited { retry_after } => {
                    retry_after.as_secs_f64().ceil().max(1.0) as u64
                }
                Decision::BackendDown {
                    admitted: false, ..
                } => 1,
                _ => continue,
            };
            audit.call(call, "limited", Some(&policy), "rate_limited", 0);
            let message = format!(
                "tool {tool:?}: limit {:?} of mcp policy {:?} reached; retry after {wait} s",
                limit.name, &*policy
            );
            let data = serde_json::json!({"policy": &*policy, "limit": limit.name, "retry_after_secs": wait});
            out.push((
                key.clone(),
                rpc::error(call.id.clone(), rpc::LIMITED, &message, Some(data)),
            ));
            break;
        }
    }
    out
}

/// A whole (non-stream) answer, filtered: the server's messages with
/// their listings filtered, and the refused calls' errors added (a batch
/// gets them in its array; a 202 for forwarded notifications becomes the
/// errors themselves). Bytes that are not JSON pass unchanged.
fn whole_answer(
    bytes: &Bytes,
    status: StatusCode,
    batch: bool,
    refused: Vec<Value>,
    answers: &mut Answers,
) -> Bytes {
    if status == StatusCode::ACCEPTED && !refused.is_empty() {
        let v = if batch {
            Value::Array(refused)
        } else {
            refused.into_iter().next().unwrap_or(Value::Null)
        };
        return Bytes::from(v.to_string());
    }
    // Nothing to filter or guard (the common `tools/call`): the answers
    // are matched and audited without building a tree.
    if refused.is_empty()
        && answers.guard.is_none()
        && answers.calls.values().all(|c| c.lists.is_none())
    {
        if let Some(peeked) = rpc::peek_answers(bytes)
            .filter(|p| p.iter().all(|(key, _)| answers.calls.contains_key(key)))
        {
            for (key, status) in peeked {
                if let Some(call) = answers.calls.remove(&key) {
                    answers.audit.answered(&call, &status, 0);
                }
            }
            return bytes.clone();
        }
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(bytes) else {
        return bytes.clone();
    };
    let mut changed = answers.value(&mut value);
    if let (Value::Array(items), false) = (&mut value, refused.is_empty()) {
        items.extend(refused);
        changed = true;
    }
    if changed {
        Bytes::from(value.to_string())
    } else {
        bytes.clone()
    }
}

/// Sends the POST to the server the pod called (its original
/// destination, through the pooled upstream connections).
async fn send(
    cx: &Arc<ConnContext>,
    parts: &Parts,
    method: Method,
    body: Bytes,
) -> Result<(hyper::http::response::Parts, UpBody), Failure> {
    let key = PoolKey {
        workload: cx.workload.as_ref().map_or(0, |w| w.id),
        addr: cx.original_dst,
        tls_name: cx.upstream_tls.clone(),
    };
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut message = Vec::with_capacity(512 + body.len());
    message.extend_from_slice(method.as_str().as_bytes());
    message.push(b' ');
    message.extend_from_slice(pq.as_bytes());
    message.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_host = false;
    for (name, value) in &parts.headers {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        has_host |= name == header::HOST;
        message.extend_from_slice(name.as_str().as_bytes());
        message.extend_from_slice(b": ");
        message.extend_from_slice(value.as_bytes());
        message.extend_from_slice(b"\r\n");
    }
    if !has_host {
        // HTTP/2 clients send `:authority`, which HTTP/1.1 calls Host.
        let host = parts
            .uri
            .authority()
            .map_or_else(|| cx.original_dst.to_string(), |a| a.to_string());
        message.extend_from_slice(format!("host: {host}\r\n").as_bytes());
    }
    if method == Method::POST {
        message.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    message.extend_from_slice(b"\r\n");
    message.extend_from_slice(&body);
    outbound::send(cx, key, &method, &message, outbound::all_fields).await
}

/// A whole answer, up to [`MAX_ANSWER_BYTES`]. By hand: `Limited` over a
/// boxed body trips the compiler's higher-ranked `Send` check in hyper's
/// service (its error conversion is generic over the box's lifetime).
async fn read_whole(mut up: ApiBody) -> Result<Bytes, BoxError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = up.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > MAX_ANSWER_BYTES {
                return Err(format!("larger than {MAX_ANSWER_BYTES} bytes").into());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

pub(super) fn boxed(up: UpBody) -> ApiBody {
    up.map_err(|e| Box::new(e) as BoxError).boxed()
}

fn failure_response(f: &Failure) -> Response<ApiBody> {
    let (status, code) = match f {
        Failure::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, -32002),
        Failure::Connect(_) => (StatusCode::SERVICE_UNAVAILABLE, -32002),
        Failure::Upstream(_) => (StatusCode::BAD_GATEWAY, -32002),
    };
    tracing::warn!(error = %f.detail(), "mcp server unreachable or broken");
    let err = rpc::error(
        Value::Null,
        code,
        &format!("the MCP server did not answer: {}", f.detail()),
        None,
    );
    json_response(status, &err)
}

/// One SSE event as text, its id and name kept (clients resume from the
/// last id they saw).
pub(super) fn encode(ev: &SseEvent) -> String {
    let mut s = String::with_capacity(ev.data.len() + 32);
    if let Some(id) = &ev.id {
        s.push_str("id: ");
        s.push_str(id);
        s.push('\n');
    }
    if let Some(name) = &ev.event {
        s.push_str("event: ");
        s.push_str(name);
        s.push('\n');
    }
    for line in ev.data.split('\n') {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    s
}

/// An SSE answer, filtered and audited event by event: every event is
/// sent as soon as it arrived whole (progress notifications and the
/// server's own requests pass unchanged).
pub(crate) struct McpStream {
    upstream: ApiBody,
    parser: SseParser,
    out: VecDeque<Bytes>,
    /// A GET stream: its endpoint, once it names one (HTTP+SSE transport).
    sse_transport: Option<SseTransport>,
    answers: Answers,
    done: bool,
}

/// A GET stream of the older HTTP+SSE transport: the message endpoint it
/// named and the refusals of calls POSTed there.
struct SseTransport {
    workload: u32,
    stream_path: String,
    endpoint: Option<String>,
    refusals: Option<tokio::sync::mpsc::Receiver<Value>>,
}

impl McpStream {
    fn event(&mut self, mut ev: SseEvent) {
        if let (Some(t), Some("endpoint")) = (self.sse_transport.as_mut(), ev.event.as_deref()) {
            if t.endpoint.is_none() {
                let endpoint = super::bridge::endpoint_path(&t.stream_path, &ev.data);
                t.refusals = Some(self.answers.node.mcp_sse.open(t.workload, endpoint.clone()));
                t.endpoint = Some(endpoint);
            }
        }
        if let Ok(mut value) = serde_json::from_str::<Value>(&ev.data) {
            if self.answers.value(&mut value) {
                ev.data = value.to_string();
            }
        }
        self.out.push_back(Bytes::from(encode(&ev)));
    }
}

/// What the gate does to the server's messages to one POST: answers are
/// matched with their calls, listings filtered and screened, tool results
/// guarded, and every call audited.
struct Answers {
    node: Arc<crate::daemon::Node>,
    calls: HashMap<String, Call>,
    authz: Option<McpPlan>,
    guard: Option<Session>,
    guard_audit: GuardAudit,
    poisoned: PoisonedTools,
    audit: Audit,
}

impl Answers {
    /// One JSON body or event (a message or a batch); `true` when it was
    /// changed.
    fn value(&mut self, value: &mut Value) -> bool {
        match value {
            // Every message is looked at (no short cut at the first
            // change): each answer must be matched and audited.
            Value::Array(items) => items
                .iter_mut()
                .map(|m| self.message(m))
                .collect::<Vec<bool>>()
                .contains(&true),
            one => self.message(one),
        }
    }

    fn message(&mut self, msg: &mut Value) -> bool {
        let Some((call, status, hidden)) = rpc::answer(msg, &mut self.calls, self.authz.as_ref())
        else {
            // Not an answer to a call of this POST: on a server stream
            // (GET), listings are filtered and screened all the same.
            return match rpc::stray_listing(msg, self.authz.as_ref()) {
                Some((item, hidden)) => {
                    let mut changed = hidden > 0;
                    if item == Item::Tool {
                        if let Some(result) = msg.get_mut("result") {
                            changed |= !mcp_guard::screen_tools(result, self.poisoned).is_empty();
                        }
                    }
                    changed
                }
                None => false,
            };
        };
        let mut changed = hidden > 0;
        if call.lists == Some(Item::Tool) {
            if let Some(result) = msg.get_mut("result") {
                for p in mcp_guard::screen_tools(result, self.poisoned) {
                    changed = true;
                    tracing::warn!(
                        workload = &*self.audit.workload,
                        server = &*self.audit.server,
                        tool = %p.tool,
                        detector = p.kind.as_str(),
                        action = ?self.poisoned,
                        "mcp tool description looks poisoned"
                    );
                }
                if self.audit.session != "-" {
                    changed |= self.rug_pulls(result);
                }
            }
        }
        if let (Some(session), "tools/call", Status::Ok | Status::ToolError) =
            (self.guard.as_mut(), call.method.as_str(), &status)
        {
            let before = msg.clone();
            let checked = mcp_guard::check_result(session, msg);
            self.guard_audit.record(session.take_hits());
            if let Err(e) = checked {
                *msg = rpc::error(call.id.clone(), rpc::DENIED, &e.to_string(), None);
                self.audit
                    .call(&call, "allowed", None, "guardrail_blocked", 0);
                return true;
            }
            changed |= *msg != before;
        }
        self.audit.answered(&call, &status, hidden);
        changed
    }

    /// Flags the tools of a listing whose definition changed since the
    /// session first listed them; `true` when one did.
    fn rug_pulls(&self, result: &mut Value) -> bool {
        let Some(tools) = result.get_mut("tools").and_then(Value::as_array_mut) else {
            return false;
        };
        let changed = self
            .node
            .mcp_sessions
            .changed_tools(&self.audit.session, tools);
        for tool in tools.iter_mut() {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            if !changed.iter().any(|c| c == name) {
                continue;
            }
            tracing::warn!(
                workload = &*self.audit.workload,
                server = &*self.audit.server,
                session = %self.audit.session,
                tool = name,
                "mcp tool definition changed since it was first listed in the session"
            );
            let description = tool
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default();
            tool["description"] = Value::String(format!("{}{description}", mcp_guard::CHANGED));
        }
        !changed.is_empty()
    }

    /// Calls no answer came for get their audit line.
    fn unanswered(&mut self) {
        for call in std::mem::take(&mut self.calls).values() {
            self.audit.call(call, "allowed", None, "no_answer", 0);
        }
    }
}

impl Body for McpStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(b) = self.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let refused = self
                .sse_transport
                .as_mut()
                .and_then(|t| t.refusals.as_mut())
                .map(|rx| rx.poll_recv(cx));
            if let Some(Poll::Ready(Some(r))) = refused {
                self.out.push_back(Bytes::from(encode(&SseEvent {
                    event: Some("message".into()),
                    data: r.to_string(),
                    id: None,
                })));
                continue;
            }
            let this = &mut *self;
            match poll_events(&mut this.upstream, &mut this.parser, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.done = true,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(events))) => {
                    for ev in events {
                        this.event(ev);
                    }
                }
            }
        }
    }
}

/// The next events of an SSE body (none yet from a frame that ended
/// mid-event); `Ready(None)` at its end.
pub(super) fn poll_events(
    upstream: &mut ApiBody,
    parser: &mut SseParser,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Vec<SseEvent>, BoxError>>> {
    loop {
        match Pin::new(&mut *upstream).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                return Poll::Ready(Some(
                    parser.push(&data).map_err(|e| Box::new(e) as BoxError),
                ));
            }
        }
    }
}

impl Drop for McpStream {
    /// Calls the stream ended without answering (the server closed it,
    /// or the client left) still get their audit line.
    fn drop(&mut self) {
        self.answers.unanswered();
        if let Some(SseTransport {
            workload,
            endpoint: Some(e),
            ..
        }) = &self.sse_transport
        {
            self.answers.node.mcp_sse.close(*workload, e);
        }
    }
}
