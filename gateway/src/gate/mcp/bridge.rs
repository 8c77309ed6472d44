//! A federated server on the older HTTP+SSE transport, bridged to
//! streamable HTTP for the client: the gateway keeps the server's event
//! stream (GET) open for the client's session, POSTs each message to the
//! endpoint that stream named, and hands every message the stream carries
//! to whoever waits for it — the answer and its progress notifications to
//! the POST that asked, the server's own requests and notifications to the
//! client's GET stream (or, without one, to the one request in flight).
use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::Value;
use tokio::{sync::mpsc, task::AbortHandle};

use super::{federate, federation::Target, serve::encode};
use crate::gate::{
    api::{client::BoxError, ConnContext},
    llm::stream::{SseEvent, SseParser},
};

/// Messages buffered per waiter before the server's stream waits.
const QUEUE: usize = 64;

/// One server session on the SSE transport.
pub struct Bridge {
    /// Where messages are POSTed (the stream's `endpoint` event).
    pub endpoint: String,
    routes: Arc<Mutex<Routes>>,
    reader: AbortHandle,
}

#[derive(Default)]
struct Routes {
    /// Request id (as JSON) → the POST waiting for its answer.
    pending: HashMap<String, mpsc::Sender<Value>>,
    /// Progress token (as JSON) → the request id it reports on.
    tokens: HashMap<String, String>,
    /// The client's GET stream, when open.
    stray: Option<mpsc::Sender<Value>>,
    /// Why the server's stream ended, once it has.
    ended: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Where the `endpoint` event's URL points, as a path on the server: an
/// absolute URL's path (same server), an absolute path, or a path
/// relative to the stream's.
pub fn endpoint_path(stream_path: &str, data: &str) -> String {
    let data = data.trim();
    if let Ok(uri) = data.parse::<hyper::Uri>() {
        if uri.scheme().is_some() {
            return uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        }
    }
    if data.starts_with('/') {
        return data.to_owned();
    }
    let dir = stream_path
        .split('?')
        .next()
        .and_then(|p| p.rsplit_once('/'))
        .map_or("", |(d, _)| d);
    format!("{dir}/{data}")
}

/// Where one message from the server's stream goes.
#[derive(Debug, PartialEq)]
pub enum Dispatch {
    /// To the request with this id (its answer, or its progress).
    Request(String, bool),
    /// To the client's stream.
    Stray,
}

/// Decides where a message of the server's stream goes (pure).
pub fn dispatch(msg: &Value, tokens: &HashMap<String, String>) -> Dispatch {
    let is_answer = msg.get("method").is_none();
    if is_answer {
        if let Some(id) = msg.get("id") {
            return Dispatch::Request(id.to_string(), true);
        }
    }
    if msg.get("method").and_then(Value::as_str) == Some("notifications/progress") {
        if let Some(req) = msg
            .pointer("/params/progressToken")
            .and_then(|t| tokens.get(&t.to_string()))
        {
            return Dispatch::Request(req.clone(), false);
        }
    }
    Dispatch::Stray
}

impl Bridge {
    /// Opens the server's event stream and waits for its `endpoint`.
    pub(super) async fn open(cx: &Arc<ConnContext>, t: &Target) -> Result<Bridge, String> {
        let stream_path = t.path.as_str();
        let (head, mut body) = t
            .send_to(cx, Method::GET, stream_path, None, None, b"")
            .await
            .map_err(|f| f.detail())?;
        if head.status != StatusCode::OK {
            return Err(format!("GET {stream_path}: HTTP {}", head.status));
        }
        let mut parser = SseParser::default();
        let mut early: Vec<SseEvent> = Vec::new();
        let endpoint = loop {
            let Some(frame) = body.frame().await else {
                return Err("its event stream ended before naming an endpoint".into());
            };
            let frame = frame.map_err(|e| format!("its event stream: {e}"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let events = parser
                .push(&data)
                .map_err(|e| format!("its event stream: {e}"))?;
            let mut found = None;
            for ev in events {
                if found.is_none() && ev.event.as_deref() == Some("endpoint") {
                    found = Some(endpoint_path(stream_path, &ev.data));
                } else {
                    early.push(ev);
                }
            }
            if let Some(e) = found {
                break e;
            }
        };
        let routes = Arc::new(Mutex::new(Routes::default()));
        let reader_routes = Arc::clone(&routes);
        let server = t.name.clone();
        let reader = tokio::spawn(async move {
            let deliver = |ev: SseEvent| {
                if ev.event.as_deref().is_some_and(|e| e != "message") {
                    return;
                }
                let Ok(msg) = serde_json::from_str::<Value>(&ev.data) else {
                    tracing::info!(server = %server, "mcp bridge: an event that is not JSON, dropped");
                    return;
                };
                let mut routes = lock(&reader_routes);
                let to = match dispatch(&msg, &routes.tokens) {
                    Dispatch::Request(id, last) => {
                        let tx = if last {
                            routes.tokens.retain(|_, r| *r != id);
                            routes.pending.remove(&id)
                        } else {
                            routes.pending.get(&id).cloned()
                        };
                        tx
                    }
                    Dispatch::Stray => match &routes.stray {
                        Some(tx) if !tx.is_closed() => Some(tx.clone()),
                        // Without a client stream, a server request can
                        // only be about the one call in flight.
                        _ if routes.pending.len() == 1 => routes.pending.values().next().cloned(),
                        _ => None,
                    },
                };
                drop(routes);
                match to {
                    Some(tx) => {
                        if tx.try_send(msg).is_err() {
                            tracing::info!(server = %server, "mcp bridge: a waiter is gone or full; message dropped");
                        }
                    }
                    None => {
                        tracing::debug!(server = %server, "mcp bridge: a message nobody waits for, dropped")
                    }
                }
            };
            for ev in early {
                deliver(ev);
            }
            let why = loop {
                match body.frame().await {
                    None => break "the server closed its event stream".to_owned(),
                    Some(Err(e)) => break format!("its event stream failed: {e}"),
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        match parser.push(&data) {
                            Ok(events) => events.into_iter().for_each(&deliver),
                            Err(e) => break format!("its event stream is broken: {e}"),
                        }
                    }
                }
            };
            tracing::info!(server = %server, reason = %why, "mcp bridge: server stream ended");
            let mut routes = lock(&reader_routes);
            routes.ended = Some(why);
            // Waiters see their channel close.
            routes.pending.clear();
            routes.stray = None;
        });
        Ok(Bridge {
            endpoint,
            routes,
            reader: reader.abort_handle(),
        })
    }

    /// Why the server's stream ended, if it did.
    pub fn ended(&self) -> Option<String> {
        lock(&self.routes).ended.clone()
    }

    /// POSTs one message to the endpoint; for a request, the channel its
    /// answer (and its progress) will come on.
    pub(super) async fn post(
        &self,
        cx: &Arc<ConnContext>,
        t: &Target,
        msg: &Value,
    ) -> Result<Option<mpsc::Receiver<Value>>, String> {
        if let Some(why) = self.ended() {
            return Err(why);
        }
        let is_request = msg.get("method").is_some() && msg.get("id").is_some_and(|i| !i.is_null());
        let waiter = if is_request {
            let (tx, rx) = mpsc::channel(QUEUE);
            let id = msg["id"].to_string();
            let mut routes = lock(&self.routes);
            if let Some(token) = msg.pointer("/params/_meta/progressToken") {
                routes.tokens.insert(token.to_string(), id.clone());
            }
            routes.pending.insert(id, tx);
            Some(rx)
        } else {
            None
        };
        let sent = t
            .send_to(
                cx,
                Method::POST,
                &self.endpoint,
                None,
                None,
                msg.to_string().as_bytes(),
            )
            .await
            .map_err(|f| f.detail());
        let failed = match sent {
            Ok((head, body)) => {
                // Read to the end: the connection goes back to the pool.
                let _ = body.collect().await;
                (!head.status.is_success())
                    .then(|| format!("POST {}: HTTP {}", self.endpoint, head.status))
            }
            Err(why) => Some(why),
        };
        if let Some(why) = failed {
            if is_request {
                lock(&self.routes).pending.remove(&msg["id"].to_string());
            }
            return Err(why);
        }
        Ok(waiter)
    }

    /// The client's GET stream gets the server's own messages.
    pub fn set_stray(&self, tx: mpsc::Sender<Value>) {
        lock(&self.routes).stray = Some(tx);
    }
}

/// Messages from a bridge as the client's SSE stream, the server's own
/// requests tagged with its prefix. Ends after the answer (a POST's
/// stream) or when the server's stream ends.
pub struct Relayed {
    pub rx: mpsc::Receiver<Value>,
    pub prefix: String,
    pub separator: String,
}

impl Body for Relayed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        this.rx.poll_recv(cx).map(|m| {
            m.map(|mut msg| {
                federate::tag_server_request(&mut msg, &this.prefix, &this.separator);
                Ok(Frame::data(Bytes::from(encode(&SseEvent {
                    event: None,
                    data: msg.to_string(),
                    id: None,
                }))))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoints_resolve_against_the_stream() {
        assert_eq!(
            endpoint_path("/sse", "/messages/?session_id=ab"),
            "/messages/?session_id=ab"
        );
        assert_eq!(
            endpoint_path("/mcp/sse", "messages?session_id=ab"),
            "/mcp/messages?session_id=ab"
        );
        assert_eq!(
            endpoint_path("/sse", "http://10.0.0.1:8000/messages/?session_id=ab\n"),
            "/messages/?session_id=ab"
        );
    }

    #[test]
    fn messages_go_to_their_waiters() {
        let tokens = HashMap::from([("7".to_owned(), "\"call-1\"".to_owned())]);
        assert_eq!(
            dispatch(&json!({"id": "call-1", "result": {}}), &tokens),
            Dispatch::Request("\"call-1\"".into(), true)
        );
        assert_eq!(
            dispatch(&json!({"id": 3, "error": {"code": -1}}), &tokens),
            Dispatch::Request("3".into(), true)
        );
        assert_eq!(
            dispatch(
                &json!({"method": "notifications/progress", "params": {"progressToken": 7, "progress": 1}}),
                &tokens
            ),
            Dispatch::Request("\"call-1\"".into(), false)
        );
        // Progress for a token nobody registered, the server's requests
        // and its other notifications: the client's stream.
        for m in [
            json!({"method": "notifications/progress", "params": {"progressToken": 8}}),
            json!({"id": 0, "method": "elicitation/create", "params": {}}),
            json!({"method": "notifications/tools/list_changed"}),
        ] {
            assert_eq!(dispatch(&m, &tokens), Dispatch::Stray, "{m}");
        }
    }
}
