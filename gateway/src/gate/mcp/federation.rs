//! Federated MCP endpoints (`mcp.federations`): the pods call one
//! destination as their MCP server and the gateway answers it from several
//! servers. A client session gets its own session on each server (made at
//! its `initialize`, made again when a server forgot it or was down), tied
//! to the client's session id and workload. What the messages mean for the
//! routing is decided in [`super::federate`]; this module does the
//! exchanges. The policy, guardrails and audit run on the client's side of
//! it, in [`super::serve`], on the names the client sees (`files__read`).
use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::{
    header::{self, HeaderValue},
    http::{request, response},
    Method, Response, StatusCode,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{
    bridge::{Bridge, Relayed},
    federate::{self, Listing, Route},
    rpc,
    serve::{boxed, encode, poll_events},
};
use crate::{
    config::{FederatedServer, McpFederation, McpTransport},
    gate::{
        api::{
            client::{ApiBody, BoxError, PoolKey},
            h1::outbound::{self, UpBody},
            json_response, ConnContext, Failure,
        },
        llm::stream::{SseEvent, SseParser},
    },
};

/// Largest answer of one server read whole.
const MAX_ANSWER_BYTES: usize = 16 << 20;
/// Most pages of one server's listing gathered for one client listing.
const MAX_PAGES: usize = 32;
/// A server that failed is asked again after this long.
const RETRY_DOWN: Duration = Duration::from_secs(10);
/// Most client sessions kept; the least recently used go first.
const MAX_SESSIONS: usize = 10_000;
/// Most in-flight request ids remembered per session (for cancellation).
const MAX_IN_FLIGHT: usize = 1024;

/// The federation serving `destination`, if any.
pub fn of(cx: &ConnContext) -> Option<McpFederation> {
    cx.node
        .config
        .load()
        .mcp
        .federations
        .iter()
        .find(|f| *f.destination == *cx.destination.name)
        .cloned()
}

/// Client sessions of every federation, by the id the gateway gave them.
#[derive(Default)]
pub struct FederationSessions {
    map: Mutex<HashMap<String, Arc<FedSession>>>,
}

impl FederationSessions {
    fn get(&self, id: &str) -> Option<Arc<FedSession>> {
        let s = lock(&self.map).get(id).cloned()?;
        *lock(&s.last_used) = Instant::now();
        Some(s)
    }

    fn insert(&self, s: Arc<FedSession>) {
        let mut map = lock(&self.map);
        if map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| *lock(&s.last_used))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                tracing::info!(session = %k, "mcp federation session dropped: too many sessions");
                map.remove(&k);
            }
        }
        map.insert(s.id.clone(), s);
    }

    fn remove(&self, id: &str) -> Option<Arc<FedSession>> {
        lock(&self.map).remove(id)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One client session.
pub struct FedSession {
    id: String,
    destination: String,
    workload: u32,
    /// The client's `initialize` params, for servers joined later.
    init: Value,
    last_used: Mutex<Instant>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// By server prefix.
    servers: HashMap<String, Joined>,
    /// Resource URIs (and template stems) → the prefix of their server.
    owned: Vec<(String, String)>,
    /// Request ids (as JSON) in flight → the prefix of their server.
    in_flight: HashMap<String, String>,
}

#[derive(Clone)]
enum Joined {
    Live(Link),
    Down { since: Instant, why: String },
}

/// A server's session for one client session.
#[derive(Clone)]
struct Link {
    /// The server's `Mcp-Session-Id`, if it keeps sessions.
    session: Option<String>,
    version: Option<String>,
    capabilities: Value,
    /// Its event stream, on the SSE transport.
    bridge: Option<Arc<Bridge>>,
}

/// A server as the gateway reaches it.
#[derive(Clone)]
pub(super) struct Target {
    pub name: String,
    prefix: String,
    addr: SocketAddr,
    authority: String,
    /// The URL's path: the endpoint (streamable HTTP) or the event
    /// stream (SSE).
    pub path: String,
    tls: Option<String>,
    headers: Vec<(String, String)>,
    sse: bool,
}

impl Target {
    async fn resolve(s: &FederatedServer) -> Result<Target, String> {
        let uri: hyper::Uri = s.url.parse().map_err(|e| format!("url {:?}: {e}", s.url))?;
        let tls = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or("the url has no host")?;
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addr = match bare.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|e| format!("resolving {bare}: {e}"))?
                .next()
                .ok_or_else(|| format!("{bare} has no address"))?,
        };
        Ok(Target {
            name: s.name.clone(),
            prefix: s.prefix().to_owned(),
            addr,
            authority: uri
                .authority()
                .map_or_else(|| bare.to_owned(), |a| a.to_string()),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
            tls: tls.then(|| bare.to_owned()),
            headers: s
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            sse: s.transport == McpTransport::Sse,
        })
    }

    /// Sends one request to the server; `session` and `version` are the
    /// server's own, not the client's.
    async fn send(
        &self,
        cx: &Arc<ConnContext>,
        method: Method,
        session: Option<&str>,
        version: Option<&str>,
        body: &[u8],
    ) -> Result<(response::Parts, UpBody), Failure> {
        self.send_to(cx, method, &self.path, session, version, body)
            .await
    }

    /// [`Target::send`] to another path of the server (an SSE server's
    /// message endpoint).
    pub(super) async fn send_to(
        &self,
        cx: &Arc<ConnContext>,
        method: Method,
        path: &str,
        session: Option<&str>,
        version: Option<&str>,
        body: &[u8],
    ) -> Result<(response::Parts, UpBody), Failure> {
        let key = PoolKey {
            workload: cx.workload.as_ref().map_or(0, |w| w.id),
            addr: self.addr,
            tls_name: self.tls.clone(),
        };
        let mut m = Vec::with_capacity(256 + body.len());
        m.extend_from_slice(
            format!(
                "{method} {path} HTTP/1.1\r\nhost: {}\r\naccept: application/json, text/event-stream\r\n",
                self.authority
            )
            .as_bytes(),
        );
        if method == Method::POST {
            m.extend_from_slice(
                format!(
                    "content-type: application/json\r\ncontent-length: {}\r\n",
                    body.len()
                )
                .as_bytes(),
            );
        }
        if let Some(s) = session {
            m.extend_from_slice(format!("mcp-session-id: {s}\r\n").as_bytes());
        }
        if let Some(v) = version {
            m.extend_from_slice(format!("mcp-protocol-version: {v}\r\n").as_bytes());
        }
        for (k, v) in &self.headers {
            m.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        m.extend_from_slice(b"\r\n");
        m.extend_from_slice(body);
        outbound::send(cx, key, &method, &m, outbound::all_fields).await
    }
}

/// Why one exchange with a server failed.
enum AskError {
    /// It answered 404 to its session: it forgot it.
    Expired,
    Failed(String),
}

/// Sends `msg` and reads its answer: the JSON body, or the message with
/// `msg`'s id in an SSE answer (its other events dropped). `None` for a
/// notification or an answer the server took with 202.
async fn ask(
    cx: &Arc<ConnContext>,
    t: &Target,
    session: Option<&str>,
    version: Option<&str>,
    msg: &Value,
) -> Result<(Option<String>, Option<Value>), AskError> {
    let (head, body) = t
        .send(
            cx,
            Method::POST,
            session,
            version,
            msg.to_string().as_bytes(),
        )
        .await
        .map_err(|f| AskError::Failed(f.detail()))?;
    let session_id = head
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| AskError::Failed(format!("reading its answer: {e}")))?
        .to_bytes();
    if head.status == StatusCode::NOT_FOUND && session.is_some() {
        return Err(AskError::Expired);
    }
    if head.status == StatusCode::ACCEPTED {
        return Ok((session_id, None));
    }
    if !head.status.is_success() {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        return Err(AskError::Failed(format!("HTTP {}: {text}", head.status)));
    }
    let id = msg.get("id");
    let sse = is_sse(&head.headers);
    let messages: Vec<Value> = if sse {
        let mut parser = SseParser::default();
        let events = parser
            .push(&bytes)
            .map_err(|e| AskError::Failed(format!("its event stream: {e}")))?;
        events
            .iter()
            .filter_map(|e| serde_json::from_str(&e.data).ok())
            .collect()
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(Value::Array(items)) => items,
            Ok(one) => vec![one],
            Err(e) => return Err(AskError::Failed(format!("its answer is not JSON: {e}"))),
        }
    };
    let answer = messages
        .into_iter()
        .find(|m| m.get("method").is_none() && m.get("id") == id);
    match (id, answer) {
        (None, _) => Ok((session_id, None)),
        (Some(_), Some(a)) => Ok((session_id, Some(a))),
        (Some(_), None) => Err(AskError::Failed("no answer to the request".into())),
    }
}

/// [`ask`] over a server's link: its event stream on the SSE transport.
async fn ask_link(
    cx: &Arc<ConnContext>,
    t: &Target,
    link: &Link,
    msg: &Value,
) -> Result<Option<Value>, AskError> {
    let Some(bridge) = &link.bridge else {
        let (_, answer) = ask(cx, t, link.session.as_deref(), link.version.as_deref(), msg).await?;
        return Ok(answer);
    };
    let Some(mut rx) = bridge.post(cx, t, msg).await.map_err(AskError::Failed)? else {
        return Ok(None);
    };
    while let Some(m) = rx.recv().await {
        if m.get("method").is_none() {
            return Ok(Some(m));
        }
    }
    Err(AskError::Failed(
        bridge
            .ended()
            .unwrap_or_else(|| "no answer to the request".into()),
    ))
}

fn is_sse(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

/// Opens a session on one server: `initialize` with the client's params,
/// then `notifications/initialized`. The server's `initialize` result
/// when it joined.
async fn join(cx: &Arc<ConnContext>, t: &Target, init: &Value) -> (Joined, Option<Value>) {
    let msg = json!({"jsonrpc": "2.0", "id": "trigate-initialize", "method": "initialize", "params": init});
    let mut link = Link {
        session: None,
        version: None,
        capabilities: json!({}),
        bridge: None,
    };
    let answer = if t.sse {
        match Bridge::open(cx, t).await {
            Ok(b) => link.bridge = Some(Arc::new(b)),
            Err(why) => return down(t, why),
        }
        ask_link(cx, t, &link, &msg).await
    } else {
        ask(cx, t, None, None, &msg).await.map(|(session, answer)| {
            link.session = session;
            answer
        })
    };
    let answer = match answer {
        Ok(a) => a,
        Err(AskError::Expired) => return down(t, "HTTP 404 to initialize".into()),
        Err(AskError::Failed(why)) => return down(t, why),
    };
    let Some(result) = answer.as_ref().and_then(|a| a.get("result")).cloned() else {
        let why = answer
            .as_ref()
            .and_then(|a| a["error"]["message"].as_str())
            .unwrap_or("no result")
            .to_owned();
        return down(t, format!("initialize refused: {why}"));
    };
    link.version = result["protocolVersion"].as_str().map(str::to_owned);
    link.capabilities = result.get("capabilities").cloned().unwrap_or(json!({}));
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    if let Err(AskError::Failed(why)) = ask_link(cx, t, &link, &note).await {
        tracing::info!(server = %t.name, reason = %why, "mcp federation: notifications/initialized not taken");
    }
    (Joined::Live(link), Some(result))
}

fn down(t: &Target, why: String) -> (Joined, Option<Value>) {
    tracing::warn!(server = %t.name, addr = %t.addr, reason = %why, "mcp federation server unavailable: its items are left out");
    (
        Joined::Down {
            since: Instant::now(),
            why,
        },
        None,
    )
}

/// The answer to a client's request (nothing for a notification).
fn reply(id: Option<&Value>, result: Result<Value, (i64, String)>) -> Answer {
    match (id, result) {
        (None, _) => Answer::Taken,
        (Some(id), Ok(r)) => Answer::Json(json!({"jsonrpc": "2.0", "id": id, "result": r})),
        (Some(id), Err((code, m))) => Answer::Json(rpc::error(id.clone(), code, &m, None)),
    }
}

/// A message for a server that cannot take it.
fn unavailable(id: Option<&Value>, prefix: &str, why: &str) -> Answer {
    let Some(id) = id else {
        return Answer::Taken;
    };
    Answer::Json(rpc::error(
        id.clone(),
        -32002,
        &format!("MCP server {prefix:?} of this federation is unavailable: {why}"),
        Some(json!({"server": prefix})),
    ))
}

/// The federation's servers, resolved; those that cannot be are logged
/// and left out.
async fn targets(fed: &McpFederation) -> Vec<Target> {
    let mut out = Vec::with_capacity(fed.servers.len());
    for s in &fed.servers {
        match Target::resolve(s).await {
            Ok(t) => out.push(t),
            Err(why) => {
                tracing::warn!(server = %s.name, reason = %why, "mcp federation server unavailable")
            }
        }
    }
    out
}

/// A refusal in the client's protocol.
pub type Refused = Box<(Response<ApiBody>, &'static str)>;

fn refuse(status: StatusCode, code: i64, message: String, outcome: &'static str) -> Refused {
    tracing::info!(status = status.as_u16(), reason = %message, "mcp federation request refused");
    Box::new((
        json_response(status, &rpc::error(Value::Null, code, &message, None)),
        outcome,
    ))
}

/// The client's session, checked: it exists and belongs to this workload
/// and federation.
// The refusal is the response itself, built once on a cold path; boxing it
// would only add an allocation.
fn session_of(
    cx: &ConnContext,
    fed: &McpFederation,
    parts: &request::Parts,
) -> Result<Arc<FedSession>, Refused> {
    let Some(id) = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
    else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            rpc::INVALID_REQUEST,
            "no Mcp-Session-Id header: send initialize first".into(),
            "mcp_invalid",
        ));
    };
    let workload = cx.workload.as_ref().map_or(0, |w| w.id);
    match cx.node.mcp_federation.get(id) {
        Some(s) if s.workload == workload && s.destination == fed.destination => Ok(s),
        _ => Err(refuse(
            StatusCode::NOT_FOUND,
            rpc::INVALID_REQUEST,
            format!("unknown MCP session {id:?}: initialize again"),
            "mcp_unknown_session",
        )),
    }
}

/// What one client message got.
enum Answer {
    /// A notification, or an answer to a server's request: 202.
    Taken,
    Json(Value),
    /// A server's SSE answer, relayed event by event.
    Stream(ApiBody),
}

/// Serves the POSTed messages the policy let through (see the module
/// doc): the synthetic answer goes on through the gate's answer filter
/// as a server's would.
pub async fn post(
    cx: &Arc<ConnContext>,
    fed: &McpFederation,
    parts: &request::Parts,
    messages: Vec<Value>,
    batch: bool,
) -> Result<(response::Parts, ApiBody), Refused> {
    let targets = targets(fed).await;
    let initialize = !batch
        && messages.len() == 1
        && messages[0].get("method").and_then(Value::as_str) == Some("initialize");
    let session = if initialize {
        let id = new_session_id();
        let s = Arc::new(FedSession {
            id,
            destination: fed.destination.clone(),
            workload: cx.workload.as_ref().map_or(0, |w| w.id),
            init: messages[0].get("params").cloned().unwrap_or(json!({})),
            last_used: Mutex::new(Instant::now()),
            state: Mutex::new(State::default()),
        });
        cx.node.mcp_federation.insert(Arc::clone(&s));
        s
    } else {
        session_of(cx, fed, parts)?
    };
    let fx = Fx {
        cx,
        fed,
        targets: &targets,
        session: &session,
    };
    let mut answers = Vec::with_capacity(messages.len());
    for msg in messages {
        answers.push(fx.one(msg, batch).await);
    }
    let mut head = Response::builder().status(StatusCode::OK);
    head = head.header("mcp-session-id", &session.id);
    if !batch {
        if let Some(answer) = answers.pop() {
            return Ok(match answer {
                Answer::Taken => {
                    let (p, _) = head
                        .status(StatusCode::ACCEPTED)
                        .body(())
                        .unwrap_or_default()
                        .into_parts();
                    (p, empty())
                }
                Answer::Json(v) => json_parts(head, &v),
                Answer::Stream(t) => {
                    let (p, _) = head
                        .header(header::CONTENT_TYPE, "text/event-stream")
                        .header(header::CACHE_CONTROL, "no-cache")
                        .body(())
                        .unwrap_or_default()
                        .into_parts();
                    (p, t)
                }
            });
        }
    }
    let items: Vec<Value> = answers
        .into_iter()
        .filter_map(|a| match a {
            Answer::Json(v) => Some(v),
            _ => None,
        })
        .collect();
    if items.is_empty() {
        let (p, _) = head
            .status(StatusCode::ACCEPTED)
            .body(())
            .unwrap_or_default()
            .into_parts();
        return Ok((p, empty()));
    }
    Ok(json_parts(head, &Value::Array(items)))
}

fn json_parts(head: hyper::http::response::Builder, v: &Value) -> (response::Parts, ApiBody) {
    let bytes = Bytes::from(v.to_string());
    let (p, _) = head
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, bytes.len())
        .body(())
        .unwrap_or_default()
        .into_parts();
    (p, Full::new(bytes).map_err(|e| match e {}).boxed())
}

fn new_session_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // Unique enough without the OS generator: the time and a counter.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b[..8].copy_from_slice(&n.to_le_bytes());
        b[8..].copy_from_slice(&(t as u64).to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One client session's exchanges.
struct Fx<'a> {
    cx: &'a Arc<ConnContext>,
    fed: &'a McpFederation,
    targets: &'a [Target],
    session: &'a Arc<FedSession>,
}

impl Fx<'_> {
    fn target(&self, prefix: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.prefix == prefix)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.fed.timeout_ms)
    }

    async fn one(&self, mut msg: Value, batch: bool) -> Answer {
        let id = msg.get("id").cloned();
        let prefixes: Vec<&str> = self.targets.iter().map(|t| t.prefix.as_str()).collect();
        let route = federate::route(&mut msg, &self.fed.separator, &prefixes);
        let id = id.as_ref();
        match route {
            Route::Initialize => reply(id, Ok(self.initialize().await)),
            Route::List(kind) => reply(id, Ok(self.list(kind).await)),
            Route::Everyone => {
                self.everyone(&msg).await;
                reply(id, Ok(json!({})))
            }
            Route::Local(v) => reply(id, Ok(v)),
            Route::Error(code, m) => {
                tracing::info!(session = %self.session.id, reason = %m, "mcp federation message refused");
                reply(id, Err((code, m)))
            }
            Route::One(prefix) => self.relay(&prefix, msg, batch).await,
            Route::Resource(uri) => match self.owner(&uri).await {
                Some(prefix) => self.relay(&prefix, msg, batch).await,
                None => reply(
                    id,
                    Err((
                        federate::INVALID_PARAMS,
                        format!("no server of this federation lists the resource {uri:?}"),
                    )),
                ),
            },
            Route::InFlight(request) => {
                let prefix = lock(&self.session.state).in_flight.get(&request).cloned();
                if let Some(prefix) = prefix {
                    self.relay(&prefix, msg, batch).await;
                }
                Answer::Taken
            }
        }
    }

    /// Every server joins the session at once.
    async fn initialize(&self) -> Value {
        let mut set = tokio::task::JoinSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let (cx, t, init, timeout) = (
                Arc::clone(self.cx),
                t.clone(),
                self.session.init.clone(),
                self.timeout(),
            );
            set.spawn(async move {
                let joined = match tokio::time::timeout(timeout, join(&cx, &t, &init)).await {
                    Ok(j) => j,
                    Err(_) => {
                        let why = format!("no answer to initialize in {} ms", timeout.as_millis());
                        tracing::warn!(server = %t.name, reason = %why, "mcp federation server unavailable: its items are left out");
                        (Joined::Down { since: Instant::now(), why }, None)
                    }
                };
                (i, t.prefix, joined)
            });
        }
        let mut results = Vec::new();
        while let Some(r) = set.join_next().await {
            let Ok((i, prefix, (joined, result))) = r else {
                continue;
            };
            lock(&self.session.state)
                .servers
                .insert(prefix.clone(), joined);
            if let Some(result) = result {
                results.push((i, prefix, result));
            }
        }
        results.sort_by_key(|(i, _, _)| *i);
        let answers: Vec<(&str, Value)> = results
            .iter()
            .map(|(_, p, r)| (p.as_str(), r.clone()))
            .collect();
        let asked = self.session.init["protocolVersion"].as_str();
        federate::merge_initialize(
            asked,
            &answers,
            &format!("trigate federation {}", self.fed.destination),
        )
    }

    /// The server's session, joining it first when it has none yet or
    /// was down long enough to be asked again; `Err` says why it is out.
    async fn joined(&self, t: &Target, rejoin: bool) -> Result<Link, String> {
        let now = lock(&self.session.state).servers.get(&t.prefix).cloned();
        let ask_again = match &now {
            _ if rejoin => true,
            None => true,
            Some(Joined::Down { since, .. }) => since.elapsed() >= RETRY_DOWN,
            // A bridged server whose event stream ended lost the session.
            Some(Joined::Live(l)) => l.bridge.as_ref().is_some_and(|b| b.ended().is_some()),
        };
        let joined = if ask_again {
            let j = match tokio::time::timeout(self.timeout(), join(self.cx, t, &self.session.init))
                .await
            {
                Ok((j, _)) => j,
                Err(_) => Joined::Down {
                    since: Instant::now(),
                    why: format!("no answer to initialize in {} ms", self.fed.timeout_ms),
                },
            };
            lock(&self.session.state)
                .servers
                .insert(t.prefix.clone(), j.clone());
            j
        } else {
            now.unwrap_or(Joined::Down {
                since: Instant::now(),
                why: "not joined".into(),
            })
        };
        match joined {
            Joined::Live(link) => Ok(link),
            Joined::Down { why, .. } => Err(why),
        }
    }

    /// Asks one server, joining it again once when it forgot the session.
    async fn ask(&self, t: &Target, msg: &Value) -> Result<Option<Value>, String> {
        for rejoin in [false, true] {
            let link = self.joined(t, rejoin).await?;
            let asked =
                tokio::time::timeout(self.timeout(), ask_link(self.cx, t, &link, msg)).await;
            match asked {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(AskError::Expired)) if !rejoin => {
                    tracing::info!(server = %t.name, session = %self.session.id, "mcp federation: the server forgot its session; joining again");
                }
                Ok(Err(AskError::Expired)) => return Err("it forgot the session twice".into()),
                Ok(Err(AskError::Failed(why))) => return Err(why),
                Err(_) => return Err(format!("no answer in {} ms", self.fed.timeout_ms)),
            }
        }
        Err("unreachable".into())
    }

    /// One listing of every server that has the capability, all pages.
    async fn list(&self, kind: Listing) -> Value {
        let method = match kind {
            Listing::Tools => "tools/list",
            Listing::Prompts => "prompts/list",
            Listing::Resources => "resources/list",
            Listing::Templates => "resources/templates/list",
        };
        let mut set = tokio::task::JoinSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let this = FxOwned::of(self);
            let t = t.clone();
            set.spawn(async move {
                let fx = this.borrow();
                let r = fx.list_one(&t, kind, method).await;
                (i, t, r)
            });
        }
        let mut parts = Vec::new();
        while let Some(r) = set.join_next().await {
            let Ok((i, t, r)) = r else { continue };
            match r {
                Ok(Some(result)) => parts.push((i, t.prefix, result)),
                Ok(None) => {}
                Err(why) => {
                    tracing::warn!(server = %t.name, session = %self.session.id, method, reason = %why, "mcp federation server left out of a listing")
                }
            }
        }
        parts.sort_by_key(|(i, _, _)| *i);
        let named: Vec<(&str, Value)> = parts
            .iter()
            .map(|(_, p, r)| (p.as_str(), r.clone()))
            .collect();
        let (merged, owned) = federate::merge_listing(kind, &named, &self.fed.separator);
        if matches!(kind, Listing::Resources | Listing::Templates) {
            let mut st = lock(&self.session.state);
            st.owned
                .retain(|(u, p)| !owned.iter().any(|(u2, p2)| u == u2 && p == p2));
            st.owned.extend(owned);
        }
        merged
    }

    /// One server's listing, every page; `None` when it lacks the
    /// capability.
    async fn list_one(
        &self,
        t: &Target,
        kind: Listing,
        method: &str,
    ) -> Result<Option<Value>, String> {
        let link = self.joined(t, false).await?;
        if link.capabilities.get(kind.capability()).is_none() {
            return Ok(None);
        }
        let mut all: Vec<Value> = Vec::new();
        let mut cursor: Option<Value> = None;
        let mut pages = 0;
        let mut first = None;
        loop {
            let mut msg =
                json!({"jsonrpc": "2.0", "id": format!("trigate-list-{pages}"), "method": method});
            if let Some(c) = cursor.take() {
                msg["params"] = json!({"cursor": c});
            }
            let answer = self.ask(t, &msg).await?.unwrap_or(Value::Null);
            let Some(result) = answer.get("result") else {
                let why = answer["error"]["message"].as_str().unwrap_or("no result");
                return Err(format!("{method} refused: {why}"));
            };
            let key = match kind {
                Listing::Templates => "resourceTemplates",
                _ => kind.capability(),
            };
            if let Some(items) = result.get(key).and_then(Value::as_array) {
                all.extend(items.iter().cloned());
            }
            first.get_or_insert_with(|| key.to_owned());
            pages += 1;
            match result.get("nextCursor") {
                Some(c) if !c.is_null() && pages < MAX_PAGES => cursor = Some(c.clone()),
                _ => break,
            }
        }
        let key = first.unwrap_or_default();
        Ok(Some(json!({ key: all })))
    }

    /// A message for every live server (notifications, `logging/setLevel`).
    async fn everyone(&self, msg: &Value) {
        if msg.get("method").and_then(Value::as_str) == Some("notifications/initialized") {
            // Each server got its own when it joined.
            return;
        }
        for t in self.targets {
            if let Err(why) = self.ask(t, msg).await {
                tracing::info!(server = %t.name, reason = %why, "mcp federation: a server did not take a message for everyone");
            }
        }
    }

    /// The server of a resource URI, looking at the listings again once
    /// when it is not known yet.
    async fn owner(&self, uri: &str) -> Option<String> {
        let known = |st: &State| federate::resource_owner(uri, &st.owned).map(str::to_owned);
        if let Some(p) = known(&lock(&self.session.state)) {
            return Some(p);
        }
        self.list(Listing::Resources).await;
        self.list(Listing::Templates).await;
        let st = lock(&self.session.state);
        known(&st)
    }

    /// A message for one server; its answer relayed (JSON, or SSE with the
    /// server's own requests tagged with its prefix).
    async fn relay(&self, prefix: &str, msg: Value, batch: bool) -> Answer {
        let id = msg.get("id").cloned();
        let Some(t) = self.target(prefix) else {
            return unavailable(id.as_ref(), prefix, "not configured");
        };
        let is_request = msg.get("method").is_some() && id.is_some();
        if is_request {
            let mut st = lock(&self.session.state);
            if st.in_flight.len() >= MAX_IN_FLIGHT {
                st.in_flight.clear();
            }
            st.in_flight
                .insert(msg["id"].to_string(), prefix.to_owned());
        }
        let body = msg.to_string();
        let mut last = String::new();
        let timeout = Duration::from_millis(self.cx.node.config.load().http.request_timeout_ms);
        for rejoin in [false, true] {
            let link = match self.joined(t, rejoin).await {
                Ok(j) => j,
                Err(why) => return unavailable(id.as_ref(), prefix, &why),
            };
            if let Some(bridge) = &link.bridge {
                return self.bridged(t, bridge, &msg, batch, timeout).await;
            }
            let (session, version) = (link.session, link.version);
            let sent = tokio::time::timeout(
                timeout,
                t.send(
                    self.cx,
                    Method::POST,
                    session.as_deref(),
                    version.as_deref(),
                    body.as_bytes(),
                ),
            )
            .await;
            let (head, up) = match sent {
                Ok(Ok(r)) => r,
                Ok(Err(f)) => return unavailable(id.as_ref(), prefix, &f.detail()),
                Err(_) => return unavailable(id.as_ref(), prefix, "no answer in time"),
            };
            if head.status == StatusCode::NOT_FOUND && session.is_some() && !rejoin {
                last = "it forgot the session".into();
                drop(up);
                continue;
            }
            if head.status == StatusCode::ACCEPTED {
                return Answer::Taken;
            }
            if is_sse(&head.headers) && head.status.is_success() && !batch {
                return Answer::Stream(
                    Tagged::new(boxed(up), t.prefix.clone(), self.fed.separator.clone()).boxed(),
                );
            }
            let bytes = match Limited::new(up, MAX_ANSWER_BYTES).collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) => {
                    return unavailable(id.as_ref(), prefix, &format!("reading its answer: {e}"))
                }
            };
            if !head.status.is_success() {
                return unavailable(id.as_ref(), prefix, &format!("HTTP {}", head.status));
            }
            let answer = if is_sse(&head.headers) {
                let mut parser = SseParser::default();
                let events = parser.push(&bytes).unwrap_or_default();
                events
                    .iter()
                    .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
                    .find(|m| m.get("method").is_none() && m.get("id") == id.as_ref())
            } else {
                serde_json::from_slice::<Value>(&bytes).ok()
            };
            if let Some(id) = &id {
                lock(&self.session.state).in_flight.remove(&id.to_string());
            }
            return match answer {
                Some(a) => Answer::Json(a),
                None => unavailable(id.as_ref(), prefix, "its answer is not JSON-RPC"),
            };
        }
        unavailable(id.as_ref(), prefix, &last)
    }
}

impl Fx<'_> {
    /// [`Fx::relay`] to a server on the SSE transport: the message is
    /// POSTed to its endpoint and the answer comes on its event stream.
    async fn bridged(
        &self,
        t: &Target,
        bridge: &Bridge,
        msg: &Value,
        batch: bool,
        timeout: Duration,
    ) -> Answer {
        let id = msg.get("id");
        let rx = match tokio::time::timeout(timeout, bridge.post(self.cx, t, msg)).await {
            Ok(Ok(Some(rx))) => rx,
            Ok(Ok(None)) => return Answer::Taken,
            Ok(Err(why)) => return unavailable(id, &t.prefix, &why),
            Err(_) => return unavailable(id, &t.prefix, "no answer in time"),
        };
        if !batch {
            return Answer::Stream(
                Relayed {
                    rx,
                    prefix: t.prefix.clone(),
                    separator: self.fed.separator.clone(),
                }
                .boxed(),
            );
        }
        let mut rx = rx;
        let answer = tokio::time::timeout(timeout, async {
            while let Some(m) = rx.recv().await {
                if m.get("method").is_none() {
                    return Some(m);
                }
            }
            None
        })
        .await;
        match answer {
            Ok(Some(a)) => Answer::Json(a),
            Ok(None) => unavailable(id, &t.prefix, &bridge.ended().unwrap_or_default()),
            Err(_) => unavailable(id, &t.prefix, "no answer in time"),
        }
    }
}

/// An [`Fx`] that can move into a task.
struct FxOwned {
    cx: Arc<ConnContext>,
    fed: McpFederation,
    targets: Vec<Target>,
    session: Arc<FedSession>,
}

impl FxOwned {
    fn of(fx: &Fx<'_>) -> Arc<FxOwned> {
        Arc::new(FxOwned {
            cx: Arc::clone(fx.cx),
            fed: fx.fed.clone(),
            targets: fx.targets.to_vec(),
            session: Arc::clone(fx.session),
        })
    }

    fn borrow(&self) -> Fx<'_> {
        Fx {
            cx: &self.cx,
            fed: &self.fed,
            targets: &self.targets,
            session: &self.session,
        }
    }
}

/// GET: the servers' own streams (their notifications and requests) as
/// one, each request's id tagged with its server's prefix.
pub async fn listen(
    cx: &Arc<ConnContext>,
    fed: &McpFederation,
    parts: &request::Parts,
) -> Result<(response::Parts, ApiBody), Refused> {
    let session = session_of(cx, fed, parts)?;
    let targets = targets(fed).await;
    let fx = Fx {
        cx,
        fed,
        targets: &targets,
        session: &session,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut streams = 0;
    for t in &targets {
        let Ok(link) = fx.joined(t, false).await else {
            continue;
        };
        if let Some(bridge) = &link.bridge {
            // The server's own messages, from the stream the gateway keeps.
            let (stray_tx, mut stray_rx) = mpsc::channel::<Value>(64);
            bridge.set_stray(stray_tx);
            streams += 1;
            let (tx, prefix, sep) = (tx.clone(), t.prefix.clone(), fed.separator.clone());
            tokio::spawn(async move {
                while let Some(mut m) = stray_rx.recv().await {
                    federate::tag_server_request(&mut m, &prefix, &sep);
                    let ev = SseEvent {
                        event: None,
                        data: m.to_string(),
                        id: None,
                    };
                    if tx.send(Bytes::from(encode(&ev))).await.is_err() {
                        return;
                    }
                }
            });
            continue;
        }
        let (Some(up_session), version) = (link.session, link.version) else {
            continue;
        };
        let opened = tokio::time::timeout(
            fx.timeout(),
            t.send(cx, Method::GET, Some(&up_session), version.as_deref(), b""),
        )
        .await;
        let (head, up) = match opened {
            Ok(Ok((head, up))) if head.status.is_success() && is_sse(&head.headers) => (head, up),
            Ok(Ok((head, _))) => {
                tracing::debug!(server = %t.name, status = head.status.as_u16(), "mcp federation: no server stream");
                continue;
            }
            Ok(Err(f)) => {
                tracing::info!(server = %t.name, reason = %f.detail(), "mcp federation: server stream not opened");
                continue;
            }
            Err(_) => continue,
        };
        drop(head);
        streams += 1;
        let mut tagged = Tagged::new(boxed(up), t.prefix.clone(), fed.separator.clone());
        let tx = tx.clone();
        let name = t.name.clone();
        tokio::spawn(async move {
            while let Some(frame) = tagged.frame().await {
                match frame {
                    Ok(f) => {
                        if let Ok(data) = f.into_data() {
                            if tx.send(data).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::info!(server = %name, error = %e, "mcp federation: server stream ended");
                        return;
                    }
                }
            }
        });
    }
    if streams == 0 {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            rpc::INVALID_REQUEST,
            "no server of this federation offers a server stream".into(),
            "mcp_no_stream",
        ));
    }
    let (p, _) = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("mcp-session-id", &session.id)
        .body(())
        .unwrap_or_default()
        .into_parts();
    Ok((p, Merged { rx }.boxed()))
}

/// DELETE: the client's session ends, and with it its session on every
/// server.
pub async fn end(
    cx: &Arc<ConnContext>,
    fed: &McpFederation,
    parts: &request::Parts,
) -> Response<ApiBody> {
    let session = match session_of(cx, fed, parts) {
        Ok(s) => s,
        Err(r) => return r.0,
    };
    cx.node.mcp_federation.remove(&session.id);
    cx.node.mcp_sessions.end(&session.id);
    let targets = targets(fed).await;
    let joined: Vec<(Target, Joined)> = {
        let st = lock(&session.state);
        targets
            .into_iter()
            .filter_map(|t| st.servers.get(&t.prefix).cloned().map(|j| (t, j)))
            .collect()
    };
    for (t, j) in joined {
        if let Joined::Live(Link {
            session: Some(s),
            version,
            ..
        }) = j
        {
            let sent = tokio::time::timeout(
                Duration::from_millis(fed.timeout_ms),
                t.send(cx, Method::DELETE, Some(&s), version.as_deref(), b""),
            )
            .await;
            if let Ok(Ok((_, body))) = sent {
                // Read to its end so the connection can be reused.
                let _ = Limited::new(body, 64 << 10).collect().await;
            }
        }
    }
    tracing::info!(session = %session.id, destination = %fed.destination, "mcp federation session ended");
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

/// A server's SSE body with its own requests' ids tagged.
pub struct Tagged {
    upstream: ApiBody,
    parser: SseParser,
    out: VecDeque<Bytes>,
    prefix: String,
    separator: String,
    done: bool,
}

impl Tagged {
    fn new(upstream: ApiBody, prefix: String, separator: String) -> Tagged {
        Tagged {
            upstream,
            parser: SseParser::default(),
            out: VecDeque::new(),
            prefix,
            separator,
            done: false,
        }
    }
}

impl Body for Tagged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match poll_events(&mut this.upstream, &mut this.parser, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.done = true,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(events))) => {
                    for mut ev in events {
                        if let Ok(mut v) = serde_json::from_str::<Value>(&ev.data) {
                            if federate::tag_server_request(&mut v, &this.prefix, &this.separator) {
                                ev.data = v.to_string();
                            }
                        }
                        // Event ids are the server's: resuming a merged
                        // stream by them is not possible.
                        ev.id = None;
                        this.out.push_back(Bytes::from(encode(&ev)));
                    }
                }
            }
        }
    }
}

/// The merged server streams of a GET.
struct Merged {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for Merged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn empty() -> ApiBody {
    Empty::new().map_err(|e| match e {}).boxed()
}
