//! Fake LLM providers speaking the real wire formats: OpenAI Chat
//! Completions (`POST /v1/chat/completions`), Anthropic Messages
//! (`POST /v1/messages`, `POST /v1/messages/count_tokens`), Gemini
//! (`POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`, [`gemini`]) and Bedrock Converse
//! (`POST /model/{modelId}/converse` and `/converse-stream` as AWS event
//! stream frames, [`bedrock`]; requests must carry a SigV4 signature,
//! checked by [`sigv4`]), all plain and streamed, tool calls included.
//!
//! A test starts one on an address it made (a pod's host-side veth
//! address, so the daemon reaches it from the pod's namespace), points a
//! provider of the `llm` config at [`FakeLlm::base_url`], changes its
//! behaviour at any time ([`FakeLlm::fail_with`], [`FakeLlm::slow_stream`],
//! …) and reads what it received ([`FakeLlm::requests`]) and how its
//! streams ended ([`FakeLlm::streams`]).
//!
//! HTTP/1.1 by hand on blocking sockets, one thread per connection, like
//! [`crate::Upstream`]: connections are kept alive (the gateway pools
//! them), request bodies are read by `Content-Length` or chunked, plain
//! answers carry a `Content-Length`, streams are chunked with one chunk per
//! event so a client going away shows up as a failed write.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod bedrock;
mod gemini;
mod sigv4;

pub use sigv4::SigV4Check;

/// Which provider API a fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeKind {
    /// OpenAI Chat Completions; base URL ends in `/v1`.
    OpenAi,
    /// Anthropic Messages; base URL without `/v1`.
    Anthropic,
    /// Gemini `generateContent`; base URL without `/v1beta`.
    Gemini,
    /// Bedrock Runtime Converse; base URL without `/model`.
    Bedrock,
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query as sent.
    pub path: String,
    /// Lower-case names; repeated fields joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON, `Null` when it was not JSON (or empty).
    pub body: Value,
    pub raw_body: String,
    /// When the head arrived.
    pub received: Instant,
    /// Bedrock only: what the fake made of the SigV4 signature.
    pub sigv4: Option<SigV4Check>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// How one streamed answer ended.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    pub path: String,
    /// Content events the fake meant to send.
    pub planned: usize,
    /// Content events written before the end (or the failed write).
    pub written: usize,
    /// Every event and the end of the body were written.
    pub completed: bool,
    /// A write failed: the client (the gateway) went away first.
    pub client_gone: bool,
    pub started: Instant,
    pub ended: Instant,
}

/// What the fake answers; changed at run time through [`FakeLlm`]'s
/// setters.
#[derive(Debug, Clone)]
struct Behaviour {
    reply: String,
    input_tokens: u64,
    output_tokens: u64,
    fail: Option<u16>,
    /// (content events, delay before each).
    slow: Option<(usize, Duration)>,
    /// Streams break off with an event that is not JSON (Bedrock: a
    /// frame whose checksum is wrong).
    malformed_stream: bool,
    /// Streams send the reply in exactly these pieces (one content event
    /// each) instead of cutting it at words.
    split: Option<Vec<String>>,
    /// Bedrock: the credentials signatures are checked against; without
    /// them only the form of the signature is checked.
    aws: Option<sigv4::AwsKey>,
    /// Embeddings: a text containing one of these words (lowercase) has
    /// the word's concept among its dimensions; see [`FakeLlm::meanings`].
    meanings: Vec<(String, usize)>,
}

struct Shared {
    kind: FakeKind,
    behaviour: Mutex<Behaviour>,
    requests: Mutex<Vec<RecordedRequest>>,
    streams: Mutex<Vec<StreamRecord>>,
    ids: AtomicU64,
}

/// A fake provider; dropping it stops accepting (open connections end
/// when their client closes them or after 30 s idle).
pub struct FakeLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeLlm {
    /// An OpenAI Chat Completions fake on `ip` (ephemeral port), replying
    /// `hello from fake-openai`.
    pub fn openai(ip: IpAddr) -> Result<Self> {
        Self::start(ip, FakeKind::OpenAi)
    }

    /// An Anthropic Messages fake on `ip` (ephemeral port), replying
    /// `hello from fake-anthropic`.
    pub fn anthropic(ip: IpAddr) -> Result<Self> {
        Self::start(ip, FakeKind::Anthropic)
    }

    /// A Gemini fake on `ip` (ephemeral port), replying
    /// `hello from fake-gemini`.
    pub fn gemini(ip: IpAddr) -> Result<Self> {
        Self::start(ip, FakeKind::Gemini)
    }

    /// A Bedrock Converse fake on `ip` (ephemeral port), replying
    /// `hello from fake-bedrock`; see [`FakeLlm::expect_aws`].
    pub fn bedrock(ip: IpAddr) -> Result<Self> {
        Self::start(ip, FakeKind::Bedrock)
    }

    /// `ip` must be one the test made (a pod's host-side veth address or
    /// 127.0.0.x).
    pub fn start(ip: IpAddr, kind: FakeKind) -> Result<Self> {
        let listener =
            TcpListener::bind((ip, 0)).with_context(|| format!("binding fake LLM on {ip}"))?;
        let addr = listener.local_addr()?;
        let reply = match kind {
            FakeKind::OpenAi => "hello from fake-openai",
            FakeKind::Anthropic => "hello from fake-anthropic",
            FakeKind::Gemini => "hello from fake-gemini",
            FakeKind::Bedrock => "hello from fake-bedrock",
        };
        let shared = Arc::new(Shared {
            kind,
            behaviour: Mutex::new(Behaviour {
                reply: reply.to_string(),
                input_tokens: 11,
                output_tokens: 7,
                fail: None,
                slow: None,
                malformed_stream: false,
                split: None,
                aws: None,
                meanings: Vec::new(),
            }),
            requests: Mutex::new(Vec::new()),
            streams: Mutex::new(Vec::new()),
            ids: AtomicU64::new(1),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                // poll() before accept so the stop flag is seen every 50 ms.
                while !stop.load(Ordering::SeqCst) {
                    if !readable(&listener, 50) {
                        continue;
                    }
                    let Ok((conn, _)) = listener.accept() else {
                        continue;
                    };
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                        let _ = conn.set_nodelay(true);
                        let _ = serve(conn, &shared);
                    });
                }
            })
        };
        Ok(Self {
            addr,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn kind(&self) -> FakeKind {
        self.shared.kind
    }

    /// What a provider's `url` should be: `http://<addr>/v1` for OpenAI
    /// (the gateway appends `/chat/completions`), `http://<addr>` for the
    /// others (the gateway appends `/v1/messages`, `/v1beta/models/…`,
    /// `/model/…`).
    pub fn base_url(&self) -> String {
        match self.shared.kind {
            FakeKind::OpenAi => format!("http://{}/v1", self.addr),
            FakeKind::Anthropic | FakeKind::Gemini | FakeKind::Bedrock => {
                format!("http://{}", self.addr)
            }
        }
    }

    fn with(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.shared.behaviour.lock().unwrap());
    }

    /// The assistant text of every answer.
    pub fn reply(&self, text: &str) {
        self.with(|b| b.reply = text.to_string());
    }
    /// The reply is `pieces` joined; streams send one content event per
    /// piece, so a test can cut a word (a key, a placeholder) in two.
    pub fn reply_in_pieces(&self, pieces: &[&str]) {
        self.with(|b| {
            b.reply = pieces.concat();
            b.split = Some(pieces.iter().map(|p| p.to_string()).collect());
        });
    }
    /// What `POST /v1/embeddings` considers the same meaning: texts
    /// sharing a word's concept (an index below the vector size) point the
    /// same way, so two wordings a test calls synonyms embed alike. A text
    /// with none of the words gets a direction derived from its bytes,
    /// nearly orthogonal to every other text's.
    pub fn meanings(&self, words: &[(&str, usize)]) {
        self.with(|b| b.meanings = words.iter().map(|(w, k)| (w.to_lowercase(), *k)).collect());
    }
    /// The usage every answer reports (prompt/input, completion/output).
    pub fn usage(&self, input: u64, output: u64) {
        self.with(|b| {
            b.input_tokens = input;
            b.output_tokens = output;
        });
    }
    /// Answer every request with `status` and the provider's error JSON.
    pub fn fail_with(&self, status: u16) {
        self.with(|b| b.fail = Some(status));
    }
    /// Answer normally again.
    pub fn heal(&self) {
        self.with(|b| b.fail = None);
    }
    /// Streams send `events` content events, waiting `delay` before each.
    pub fn slow_stream(&self, events: usize, delay: Duration) {
        self.with(|b| b.slow = Some((events, delay)));
    }
    /// Streams start well, then send an event whose data is not JSON and
    /// end without finishing.
    pub fn malformed_stream(&self) {
        self.with(|b| b.malformed_stream = true);
    }

    /// Bedrock: verify every signature with these credentials (scope
    /// `<date>/<region>/bedrock/aws4_request`) and refuse, as AWS does
    /// with a 403, what does not verify.
    pub fn expect_aws(&self, access_key_id: &str, secret_access_key: &str, region: &str) {
        let key = sigv4::AwsKey {
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
            region: region.to_string(),
        };
        self.with(|b| b.aws = Some(key));
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }
    /// How many requests came.
    pub fn count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }
    /// Every streamed answer that has ended, in order of ending.
    pub fn streams(&self) -> Vec<StreamRecord> {
        self.shared.streams.lock().unwrap().clone()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------------ HTTP

/// Requests one after another on one connection.
fn serve(mut conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let Some(end) = fill_until(&mut conn, &mut buf, |b| {
            b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
        })?
        else {
            return Ok(());
        };
        let received = Instant::now();
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split_whitespace();
        let method = first.next().unwrap_or_default().to_string();
        let path = first.next().unwrap_or_default().to_string();
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for l in lines.filter(|l| !l.is_empty()) {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().to_string();
            headers
                .entry(k)
                .and_modify(|old| {
                    old.push_str(", ");
                    old.push_str(&v);
                })
                .or_insert(v);
        }
        let body = read_body(&mut conn, &mut buf, &headers)?;
        let Some(body) = body else { return Ok(()) };
        let behaviour = shared.behaviour.lock().unwrap().clone();
        // Checked on the bytes as they came: the signature covers them.
        let sigv4 = (shared.kind == FakeKind::Bedrock).then(|| {
            sigv4::check(
                &method,
                &path,
                &headers,
                &body,
                behaviour.aws.as_ref(),
                SystemTime::now(),
            )
        });
        let raw_body = String::from_utf8_lossy(&body).into_owned();
        let req = RecordedRequest {
            method,
            path,
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            raw_body,
            received,
            sigv4,
        };
        shared.requests.lock().unwrap().push(req.clone());
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let id = shared.ids.fetch_add(1, Ordering::SeqCst);
        match answer(shared.kind, &req, &behaviour, id) {
            Answer::Json(status, mut v) => {
                // Bedrock (restJson1) names the error in a header; the
                // body holds only the message.
                let error_type = v.as_object_mut().and_then(|o| o.remove("__type"));
                let body = v.to_string();
                let mut resp = format!(
                    "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}",
                    reason(status),
                    body.len(),
                    request_id_header(shared.kind, id),
                );
                if let Some(Value::String(ty)) = error_type {
                    resp.push_str(&format!(
                        "x-amzn-errortype: {ty}:http://internal.amazon.com/coral/com.amazon.bedrock/\r\n"
                    ));
                }
                if status == 429 {
                    resp.push_str("retry-after: 1\r\n");
                }
                if close {
                    resp.push_str("connection: close\r\n");
                }
                resp.push_str("\r\n");
                resp.push_str(&body);
                conn.write_all(resp.as_bytes())?;
                conn.flush()?;
            }
            Answer::Stream(events, delay, content_events) => {
                let content_type = match shared.kind {
                    FakeKind::Bedrock => "application/vnd.amazon.eventstream",
                    _ => "text/event-stream; charset=utf-8",
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n{}\r\n",
                    request_id_header(shared.kind, id),
                );
                let started = Instant::now();
                let mut written = 0;
                let mut result = conn.write_all(head.as_bytes()).and_then(|_| conn.flush());
                if result.is_ok() {
                    for ev in &events {
                        if ev.content && !delay.is_zero() {
                            std::thread::sleep(delay);
                        }
                        let mut chunk = format!("{:x}\r\n", ev.data.len()).into_bytes();
                        chunk.extend_from_slice(&ev.data);
                        chunk.extend_from_slice(b"\r\n");
                        result = conn.write_all(&chunk).and_then(|_| conn.flush());
                        if result.is_err() {
                            break;
                        }
                        if ev.content {
                            written += 1;
                        }
                    }
                }
                if result.is_ok() {
                    result = conn.write_all(b"0\r\n\r\n").and_then(|_| conn.flush());
                }
                shared.streams.lock().unwrap().push(StreamRecord {
                    path: req.path.clone(),
                    planned: content_events,
                    written,
                    completed: result.is_ok(),
                    client_gone: result.is_err(),
                    started,
                    ended: Instant::now(),
                });
                result?;
            }
        }
        if close {
            return Ok(());
        }
    }
}

fn read_body(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    headers: &BTreeMap<String, String>,
) -> std::io::Result<Option<Vec<u8>>> {
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked"));
    if !chunked {
        let n: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if fill_until(conn, buf, |b| (b.len() >= n).then_some(0))?.is_none() {
            return Ok(None);
        }
        return Ok(Some(buf.drain(..n).collect()));
    }
    let mut body = Vec::new();
    loop {
        let Some(line_end) = fill_until(conn, buf, |b| {
            b.windows(2).position(|w| w == b"\r\n").map(|p| p + 2)
        })?
        else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&buf[..line_end - 2]).to_string();
        buf.drain(..line_end);
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            loop {
                let Some(end) = fill_until(conn, buf, |b| {
                    b.windows(2).position(|w| w == b"\r\n").map(|p| p + 2)
                })?
                else {
                    return Ok(None);
                };
                let empty = end == 2;
                buf.drain(..end);
                if empty {
                    return Ok(Some(body));
                }
            }
        }
        if fill_until(conn, buf, |b| (b.len() >= size + 2).then_some(0))?.is_none() {
            return Ok(None);
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

/// Reads into `buf` until `done` finds what it needs; `None` at EOF.
fn fill_until(
    conn: &mut impl Read,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> Option<usize>,
) -> std::io::Result<Option<usize>> {
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(n) = done(buf) {
            return Ok(Some(n));
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        529 => "Overloaded",
        _ => "Status",
    }
}

fn request_id_header(kind: FakeKind, id: u64) -> String {
    match kind {
        FakeKind::OpenAi => format!("x-request-id: req_fake{id}\r\n"),
        FakeKind::Anthropic => format!("request-id: req_fake{id}\r\n"),
        // Google's front ends send no request id.
        FakeKind::Gemini => String::new(),
        FakeKind::Bedrock => format!("x-amzn-requestid: 00000000-0000-4000-8000-{id:012}\r\n"),
    }
}

fn readable(listener: &TcpListener, timeout_ms: i32) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for an fd that `listener` keeps open.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}

// ----------------------------------------------------------- the answers

/// One server-sent event (Bedrock: one event-stream frame); `content`
/// marks the events a slow stream spaces out.
#[derive(Debug, Clone)]
struct Event {
    data: Vec<u8>,
    content: bool,
}

#[derive(Debug)]
enum Answer {
    Json(u16, Value),
    /// Events, the delay before each content event, content events planned.
    Stream(Vec<Event>, Duration, usize),
}

fn answer(kind: FakeKind, req: &RecordedRequest, b: &Behaviour, id: u64) -> Answer {
    let path = req.path.split('?').next().unwrap_or_default();
    if let Some(status) = b.fail {
        return Answer::Json(status, error_body(kind, status, "the fake provider fails"));
    }
    match (kind, req.method.as_str(), path) {
        (FakeKind::Gemini, "POST", p) if p.starts_with("/v1beta/models/") => {
            gemini::answer(req, b, id)
        }
        (FakeKind::Bedrock, "POST", p) if p.starts_with("/model/") => bedrock::answer(req, b, id),
        (FakeKind::OpenAi, "POST", "/v1/chat/completions") => openai_chat(req, b, id),
        (FakeKind::OpenAi, "POST", "/v1/embeddings") => openai_embeddings(req, b),
        (FakeKind::Anthropic, "POST", "/v1/messages") => anthropic_messages(req, b, id),
        (FakeKind::Anthropic, "POST", "/v1/messages/count_tokens") => {
            match anthropic_invalid(&req.body, false) {
                Some(msg) => Answer::Json(400, error_body(kind, 400, &msg)),
                None => Answer::Json(200, json!({"input_tokens": b.input_tokens})),
            }
        }
        _ => Answer::Json(
            404,
            error_body(
                kind,
                404,
                &format!("the fake does not serve {} {path}", req.method),
            ),
        ),
    }
}

/// The provider's own error JSON for `status`.
fn error_body(kind: FakeKind, status: u16, message: &str) -> Value {
    match kind {
        FakeKind::OpenAi => {
            let (ty, code) = match status {
                400 => ("invalid_request_error", Value::Null),
                401 => ("invalid_request_error", json!("invalid_api_key")),
                404 => ("invalid_request_error", json!("model_not_found")),
                429 => ("requests", json!("rate_limit_exceeded")),
                _ => ("server_error", Value::Null),
            };
            json!({"error": {"message": message, "type": ty, "param": null, "code": code}})
        }
        FakeKind::Anthropic => {
            let ty = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": ty, "message": message}})
        }
        FakeKind::Gemini => gemini::error_body(status, message),
        FakeKind::Bedrock => bedrock::error_body(status, message),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The text of the last user message (string content or text blocks).
fn last_user_text(body: &Value) -> String {
    let Some(msgs) = body["messages"].as_array() else {
        return String::new();
    };
    let Some(m) = msgs.iter().rev().find(|m| m["role"] == "user") else {
        return String::new();
    };
    match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The first tool's name when the request offers tools and the last user
/// message asks for one.
fn wanted_tool(kind: FakeKind, body: &Value) -> Option<String> {
    let tools = body["tools"].as_array().filter(|t| !t.is_empty())?;
    if !last_user_text(body)
        .to_ascii_lowercase()
        .contains("use the tool")
    {
        return None;
    }
    let name = match kind {
        FakeKind::OpenAi => tools[0]["function"]["name"].as_str(),
        FakeKind::Anthropic => tools[0]["name"].as_str(),
        FakeKind::Gemini => tools[0]["functionDeclarations"][0]["name"].as_str(),
        FakeKind::Bedrock => tools[0]["toolSpec"]["name"].as_str(),
    };
    Some(name.unwrap_or("tool").to_string())
}

/// The arguments every fake tool call carries.
const TOOL_ARGS: &str = r#"{"city":"Paris"}"#;

/// The reply's content events: the configured split, or `n` pieces.
fn stream_pieces(b: &Behaviour, n: usize) -> Vec<String> {
    b.split.clone().unwrap_or_else(|| pieces(&b.reply, n))
}

/// `text` cut into `n` pieces (at least one), whole words where possible.
fn pieces(text: &str, n: usize) -> Vec<String> {
    let n = n.max(1);
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    if words.len() >= n {
        let len = words.len();
        return (0..n)
            .map(|i| words[i * len / n..(i + 1) * len / n].concat())
            .collect();
    }
    let mut out: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    while out.len() < n {
        out.push(format!("[{}] ", out.len()));
    }
    out
}

fn sse_data(v: &Value) -> Event {
    Event {
        data: format!("data: {v}\n\n").into_bytes(),
        content: false,
    }
}

fn sse_event(name: &str, v: &Value) -> Event {
    Event {
        data: format!("event: {name}\ndata: {v}\n\n").into_bytes(),
        content: false,
    }
}

fn content(mut e: Event) -> Event {
    e.content = true;
    e
}

/// A broken event: a data line that is not JSON, as a faulty provider or
/// a cut connection would leave.
fn garbage(kind: FakeKind) -> Event {
    let text = match kind {
        FakeKind::OpenAi => "data: {\"id\":\"chatcmpl-broken\",\"choices\":[{\"delta\n\n",
        FakeKind::Anthropic => "event: content_block_delta\ndata: {\"type\":\"content_blo\n\n",
        FakeKind::Gemini => "data: {\"candidates\": [{\"content\": {\"par\n\n",
        FakeKind::Bedrock => return bedrock::garbage(),
    };
    Event {
        data: text.as_bytes().to_vec(),
        content: true,
    }
}

/// Vector size when the request does not ask for `dimensions`.
const EMBEDDING_DIMENSIONS: usize = 64;

/// OpenAI `POST /v1/embeddings`: one vector per input string, built from
/// [`Behaviour::meanings`].
fn openai_embeddings(req: &RecordedRequest, b: &Behaviour) -> Answer {
    let body = &req.body;
    let invalid = |msg: &str| {
        Answer::Json(
            400,
            json!({"error": {"message": msg, "type": "invalid_request_error",
                "param": null, "code": null}}),
        )
    };
    let Some(model) = body["model"].as_str() else {
        return invalid("you must provide a model parameter");
    };
    let inputs: Vec<&str> = match &body["input"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => match items.iter().map(Value::as_str).collect() {
            Some(v) => v,
            None => return invalid("input must be a string or an array of strings"),
        },
        _ => return invalid("input must be a string or an array of strings"),
    };
    if body.get("encoding_format").is_some_and(|f| f != "float") {
        return invalid("the fake only answers encoding_format float");
    }
    let dims = body["dimensions"]
        .as_u64()
        .map_or(EMBEDDING_DIMENSIONS, |d| d as usize);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            json!({"object": "embedding", "index": i, "embedding": fake_embedding(text, b, dims)})
        })
        .collect();
    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count()).sum();
    Answer::Json(
        200,
        json!({"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}

/// A unit vector: the concepts of the words the text contains, or, with
/// none, a direction from an FNV hash of the text.
fn fake_embedding(text: &str, b: &Behaviour, dims: usize) -> Vec<f64> {
    let lower = text.to_lowercase();
    let dims = dims.max(1);
    let mut v = vec![0.0f64; dims];
    for (word, k) in &b.meanings {
        if lower.contains(word.as_str()) {
            v[k % dims] = 1.0;
        }
    }
    if v.iter().all(|x| *x == 0.0) {
        let mut h: u64 = 0xcbf29ce484222325;
        for byte in lower.bytes() {
            h = (h ^ u64::from(byte)).wrapping_mul(0x100000001b3);
        }
        for x in &mut v {
            h = h
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *x = ((h >> 33) as f64 / f64::from(u32::MAX)) - 0.25;
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

fn openai_chat(req: &RecordedRequest, b: &Behaviour, id: u64) -> Answer {
    let body = &req.body;
    let kind = FakeKind::OpenAi;
    if !body.is_object() {
        return Answer::Json(
            400,
            error_body(
                kind,
                400,
                "We could not parse the JSON body of your request.",
            ),
        );
    }
    let Some(model) = body["model"].as_str() else {
        return Answer::Json(
            400,
            json!({"error": {"message": "you must provide a model parameter",
                "type": "invalid_request_error", "param": "model", "code": null}}),
        );
    };
    if body["messages"].as_array().is_none_or(|m| m.is_empty()) {
        return Answer::Json(
            400,
            json!({"error": {"message": "Missing required parameter: 'messages'.",
                "type": "invalid_request_error", "param": "messages", "code": "missing_required_parameter"}}),
        );
    }
    let chat_id = format!("chatcmpl-fake{id}");
    let created = now_secs();
    let tool = wanted_tool(kind, body);
    let call_id = format!("call_fake{id}");
    let usage = json!({
        "prompt_tokens": b.input_tokens,
        "completion_tokens": b.output_tokens,
        "total_tokens": b.input_tokens + b.output_tokens,
    });
    if body["stream"] != json!(true) {
        let (message, finish) = match &tool {
            Some(name) => (
                json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [{
                    "id": call_id, "type": "function",
                    "function": {"name": name, "arguments": TOOL_ARGS}}]}),
                "tool_calls",
            ),
            None => (
                json!({"role": "assistant", "content": b.reply, "refusal": null}),
                "stop",
            ),
        };
        return Answer::Json(
            200,
            json!({
                "id": chat_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
                "usage": usage,
            }),
        );
    }
    let include_usage = body["stream_options"]["include_usage"] == json!(true);
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": chat_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        // With include_usage every chunk carries `usage: null` but the last.
        if include_usage {
            c["usage"] = Value::Null;
        }
        sse_data(&c)
    };
    let (n, delay) = b.slow.unwrap_or((3, Duration::ZERO));
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )];
    let planned;
    if let Some(name) = &tool {
        events.push(chunk(
            json!({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        ));
        for part in [&TOOL_ARGS[..8], &TOOL_ARGS[8..]] {
            events.push(content(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                Value::Null,
            )));
        }
        planned = 2;
    } else {
        let parts = stream_pieces(b, n);
        planned = parts.len();
        for p in parts {
            events.push(content(chunk(json!({"content": p}), Value::Null)));
        }
    }
    if b.malformed_stream {
        events.truncate(2);
        events.push(garbage(kind));
        return Answer::Stream(events, delay, planned);
    }
    let finish = if tool.is_some() { "tool_calls" } else { "stop" };
    events.push(chunk(json!({}), json!(finish)));
    if include_usage {
        events.push(sse_data(&json!({
            "id": chat_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [],
            "usage": usage,
        })));
    }
    events.push(Event {
        data: b"data: [DONE]\n\n".to_vec(),
        content: false,
    });
    Answer::Stream(events, delay, planned)
}

/// Why an Anthropic request is invalid (the API's own wording), if it is.
fn anthropic_invalid(body: &Value, need_max_tokens: bool) -> Option<String> {
    if !body.is_object() {
        return Some("There was an issue with the request body: not a JSON object".into());
    }
    if !body["model"].is_string() {
        return Some("model: Field required".into());
    }
    if need_max_tokens {
        match body["max_tokens"].as_i64() {
            None => return Some("max_tokens: Field required".into()),
            Some(n) if n < 1 => {
                return Some("max_tokens: Input should be greater than or equal to 1".into())
            }
            Some(_) => {}
        }
    }
    let Some(msgs) = body["messages"].as_array() else {
        return Some("messages: Field required".into());
    };
    if msgs.is_empty() {
        return Some("messages: at least one message is required".into());
    }
    for (i, m) in msgs.iter().enumerate() {
        if m["role"] != "user" && m["role"] != "assistant" {
            return Some(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            ));
        }
    }
    None
}

fn anthropic_messages(req: &RecordedRequest, b: &Behaviour, id: u64) -> Answer {
    let kind = FakeKind::Anthropic;
    let body = &req.body;
    if let Some(msg) = anthropic_invalid(body, true) {
        return Answer::Json(400, error_body(kind, 400, &msg));
    }
    let model = body["model"].as_str().unwrap_or_default();
    let msg_id = format!("msg_fake{id}");
    let tool = wanted_tool(kind, body);
    let tool_id = format!("toolu_fake{id}");
    let stop_reason = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    if body["stream"] != json!(true) {
        let content = match &tool {
            Some(name) => json!([
                {"type": "tool_use", "id": tool_id, "name": name,
                 "input": serde_json::from_str::<Value>(TOOL_ARGS).unwrap_or_default()}
            ]),
            None => json!([{"type": "text", "text": b.reply}]),
        };
        return Answer::Json(
            200,
            json!({
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": null,
                "usage": {
                    "input_tokens": b.input_tokens,
                    "output_tokens": b.output_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            }),
        );
    }
    let (n, delay) = b.slow.unwrap_or((3, Duration::ZERO));
    let mut events = vec![
        sse_event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": b.input_tokens, "output_tokens": 1,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
        ),
        sse_event(
            "content_block_start",
            &match &tool {
                Some(name) => json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}}}),
                None => json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
            },
        ),
        sse_event("ping", &json!({"type": "ping"})),
    ];
    let planned;
    if tool.is_some() {
        for part in [&TOOL_ARGS[..8], &TOOL_ARGS[8..]] {
            events.push(content(sse_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": part}}),
            )));
        }
        planned = 2;
    } else {
        let parts = stream_pieces(b, n);
        planned = parts.len();
        for p in parts {
            events.push(content(sse_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": p}}),
            )));
        }
    }
    if b.malformed_stream {
        events.truncate(4);
        events.push(garbage(kind));
        return Answer::Stream(events, delay, planned);
    }
    events.push(sse_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(sse_event(
        "message_delta",
        &json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": b.output_tokens}}),
    ));
    events.push(sse_event("message_stop", &json!({"type": "message_stop"})));
    Answer::Stream(events, delay, planned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(path: &str, body: Value) -> RecordedRequest {
        RecordedRequest {
            method: "POST".into(),
            path: path.into(),
            headers: BTreeMap::new(),
            raw_body: body.to_string(),
            body,
            received: Instant::now(),
            sigv4: None,
        }
    }

    fn behaviour() -> Behaviour {
        Behaviour {
            reply: "one two three four".into(),
            input_tokens: 5,
            output_tokens: 9,
            fail: None,
            slow: None,
            malformed_stream: false,
            split: None,
            aws: None,
            meanings: Vec::new(),
        }
    }

    /// The data of every event, parsed (`[DONE]` as a string).
    fn datas(a: &Answer) -> Vec<Value> {
        let Answer::Stream(events, _, _) = a else {
            panic!("not a stream: {a:?}")
        };
        events
            .iter()
            .flat_map(|e| {
                String::from_utf8_lossy(&e.data)
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
            .map(|d| serde_json::from_str(&d).unwrap_or_else(|_| json!(d)))
            .collect()
    }

    #[test]
    fn openai_stream_sends_usage_only_when_asked() {
        let b = behaviour();
        let plain = post(
            "/v1/chat/completions",
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        );
        let d = datas(&answer(FakeKind::OpenAi, &plain, &b, 1));
        assert_eq!(d.last(), Some(&json!("[DONE]")));
        assert!(d.iter().all(|c| c.get("usage").is_none()));
        let text: String = d
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "one two three four");

        let mut with = plain.clone();
        with.body["stream_options"] = json!({"include_usage": true});
        let d = datas(&answer(FakeKind::OpenAi, &with, &b, 1));
        let last = &d[d.len() - 2];
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["total_tokens"], 14);
        assert_eq!(d[d.len() - 3]["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn anthropic_validates_and_streams_in_order() {
        let b = behaviour();
        let bad = post(
            "/v1/messages",
            json!({"model": "c", "messages": [{"role": "user", "content": "hi"}]}),
        );
        let Answer::Json(400, err) = answer(FakeKind::Anthropic, &bad, &b, 1) else {
            panic!("missing max_tokens accepted")
        };
        assert_eq!(err["error"]["type"], "invalid_request_error");

        let mut ok = bad.clone();
        ok.body["max_tokens"] = json!(100);
        ok.body["stream"] = json!(true);
        let types: Vec<String> = datas(&answer(FakeKind::Anthropic, &ok, &b, 1))
            .iter()
            .map(|d| d["type"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            types,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
    }

    #[test]
    fn gemini_refuses_openai_fields_and_streams_usage_last() {
        let b = behaviour();
        let mut req = post(
            "/v1beta/models/gemini-2.0-flash:generateContent",
            json!({"model": "gemini-2.0-flash",
                   "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
        );
        req.headers.insert("x-goog-api-key".into(), "k".into());
        let Answer::Json(400, err) = answer(FakeKind::Gemini, &req, &b, 1) else {
            panic!("a `model` field accepted")
        };
        assert_eq!(err["error"]["status"], "INVALID_ARGUMENT");

        req.body.as_object_mut().unwrap().remove("model");
        let Answer::Json(200, v) = answer(FakeKind::Gemini, &req, &b, 1) else {
            panic!()
        };
        assert_eq!(
            v["candidates"][0]["content"]["parts"][0]["text"],
            "one two three four"
        );
        assert_eq!(v["usageMetadata"]["totalTokenCount"], 14);

        req.path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse".into();
        let d = datas(&answer(FakeKind::Gemini, &req, &b, 1));
        assert_eq!(d.len(), 3);
        let text: String = d
            .iter()
            .filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str())
            .collect();
        assert_eq!(text, "one two three four");
        assert!(d[..2]
            .iter()
            .all(|c| c["candidates"][0].get("finishReason").is_none()));
        assert_eq!(d[2]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(d[2]["usageMetadata"]["candidatesTokenCount"], 9);

        req.headers.clear();
        assert!(matches!(
            answer(FakeKind::Gemini, &req, &b, 1),
            Answer::Json(403, _)
        ));
    }

    #[test]
    fn bedrock_answers_only_signed_requests() {
        let b = behaviour();
        let mut req = post(
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}),
        );
        let Answer::Json(403, err) = answer(FakeKind::Bedrock, &req, &b, 1) else {
            panic!("an unsigned request accepted")
        };
        assert_eq!(err["__type"], "MissingAuthenticationTokenException");
        req.sigv4 = Some(SigV4Check::Verified);
        let Answer::Json(200, v) = answer(FakeKind::Bedrock, &req, &b, 1) else {
            panic!()
        };
        assert_eq!(
            v["output"]["message"]["content"][0]["text"],
            "one two three four"
        );
        assert_eq!(v["usage"]["totalTokens"], 14);
        assert_eq!(v["stopReason"], "end_turn");
        req.body["model"] = json!("m");
        assert!(matches!(
            answer(FakeKind::Bedrock, &req, &b, 1),
            Answer::Json(400, _)
        ));
        req.body.as_object_mut().unwrap().remove("model");
        req.path = req.path.replace("/converse", "/converse-stream");
        let Answer::Stream(events, _, 3) = answer(FakeKind::Bedrock, &req, &b, 1) else {
            panic!()
        };
        // messageStart, 3 deltas, contentBlockStop, messageStop, metadata.
        assert_eq!(events.len(), 7);
    }

    #[test]
    fn tool_calls_when_asked() {
        let b = behaviour();
        let req = post(
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": "Please use the tool"}],
                   "tools": [{"type": "function", "function": {"name": "weather", "parameters": {}}}]}),
        );
        let Answer::Json(200, v) = answer(FakeKind::OpenAi, &req, &b, 1) else {
            panic!()
        };
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "weather"
        );
    }
}
