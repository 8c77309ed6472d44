//! Requests the gateway makes itself (the LLM gate's provider calls) over
//! HTTP/1.1, on the same idle pool as the relay, read and written by the
//! task that asked.
//!
//! Why not hyper's client: its pool hands every request to the
//! connection's own task through a channel and the answer back through
//! another; for a short JSON exchange those two hand-offs and wake-ups cost
//! more than the exchange (`cargo xtask bench llm`). Here the caller's task
//! writes the request, reads the head, and the body is read as it is
//! polled; a body read to its end puts the connection back in the pool, a
//! body dropped early closes it (which is what cancels a provider's
//! generation when the client leaves).
use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::{http::response, Method};
use tokio::io::AsyncWriteExt;

use super::{
    connect,
    framing::{Chunked, Framing},
    pool, read_response_head, HeadRead, Upstream, READ_CHUNK,
};
use crate::gate::api::{client::PoolKey, ConnContext, Failure};

/// For [`send`]: every field of the answer.
pub(crate) fn all_fields(_: &[u8]) -> bool {
    true
}

/// First read buffer of an exchange.
const ANSWER_BUF: usize = 4096;

/// Sends one request (`message`: the head, then the body its
/// `content-length` announces) and reads the response head, whose map
/// holds the fields `keep` takes (by name as sent, in any case: a caller
/// that reads few of them spares making a map of all). A pooled
/// connection the upstream closed while idle is replaced once.
pub(crate) async fn send(
    cx: &Arc<ConnContext>,
    key: PoolKey,
    method: &Method,
    message: &[u8],
    keep: fn(&[u8]) -> bool,
) -> Result<(response::Parts, UpBody), Failure> {
    let http = &cx.node.config.load().http;
    let idle_for = Duration::from_millis(http.pool_idle_timeout_ms);
    let max_idle = http.pool_max_idle;
    let mut may_retry = true;
    loop {
        let pooled = if may_retry {
            cx.node.api_idle.take(&key, idle_for)
        } else {
            None
        };
        let reused = pooled.is_some();
        let io = match pooled {
            Some(io) => io,
            None => Box::pin(connect(Arc::clone(cx), key.clone())).await?,
        };
        let mut up = Upstream {
            key: key.clone(),
            io,
            // Provider answers are mostly small: grown when they are not.
            buf: BytesMut::with_capacity(ANSWER_BUF),
            last_used: Instant::now(),
        };
        let sent = async {
            up.io.write_all(message).await?;
            up.io.flush().await
        }
        .await;
        let result = match sent {
            Err(e) => Err(HeadRead::Io(e)),
            Ok(()) => read_response_head(&mut tokio::io::sink(), &mut up, method)
                .await
                // The gates read the answer's fields from a map.
                .and_then(|resp| {
                    let parts = resp.head.parts_of(keep).map_err(HeadRead::Bad)?;
                    Ok((parts, resp.framing, resp.close))
                }),
        };
        let error = match result {
            Ok((parts, framing, close)) => {
                let body = UpBody {
                    left: match framing {
                        Framing::Length(n) => n,
                        _ => 0,
                    },
                    framing,
                    chunked: Chunked::default(),
                    keep: !close,
                    up: Some(up),
                    node: Arc::clone(&cx.node),
                    max_idle,
                    idle_for,
                    done: false,
                };
                let mut body = body;
                body.check_end();
                return Ok((parts, body));
            }
            Err(e) => e,
        };
        let (e, stale) = match error {
            HeadRead::Io(e) => {
                let stale = pool::is_stale(&e);
                (e.to_string(), stale)
            }
            HeadRead::Closed => ("closed before answering".to_owned(), true),
            HeadRead::Bad(why) => (why, false),
            HeadRead::Client(e) => (e.to_string(), false),
        };
        // A reused connection that fails before any response byte was
        // closed by the upstream while idle: not the upstream's failure.
        if reused && stale && up.buf.is_empty() && may_retry {
            may_retry = false;
            continue;
        }
        return Err(Failure::Upstream(format!("connection lost: {e}")));
    }
}

/// A response body read from its connection as it is polled.
pub(crate) struct UpBody {
    up: Option<Upstream>,
    framing: Framing,
    /// Bytes left of a `content-length` body.
    left: u64,
    chunked: Chunked,
    /// The upstream did not ask to close after this response.
    keep: bool,
    node: Arc<crate::daemon::Node>,
    max_idle: usize,
    idle_for: Duration,
    done: bool,
}

impl UpBody {
    /// Ends the body when nothing of it is left; the connection goes back
    /// to the pool when it is at a message boundary.
    fn check_end(&mut self) {
        let ended = match self.framing {
            Framing::Empty => true,
            Framing::Length(_) => self.left == 0,
            Framing::Chunked | Framing::UntilClose => false,
        };
        if ended {
            self.finish();
        }
    }

    fn finish(&mut self) {
        self.done = true;
        if let Some(up) = self.up.take() {
            if self.keep && self.framing != Framing::UntilClose && up.buf.is_empty() {
                self.node
                    .api_idle
                    .put(up.key, up.io, self.max_idle, self.idle_for);
            }
        }
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let Some(up) = this.up.as_mut() else {
                return Poll::Ready(None);
            };
            if !up.buf.is_empty() {
                let data = match this.framing {
                    Framing::Empty => Bytes::new(),
                    Framing::Length(_) => {
                        let take = usize::try_from(this.left)
                            .unwrap_or(usize::MAX)
                            .min(up.buf.len());
                        this.left -= take as u64;
                        up.buf.split_to(take).freeze()
                    }
                    Framing::Chunked => {
                        let mut payload = Vec::new();
                        let buf = &up.buf;
                        let progress = this
                            .chunked
                            .advance(buf, |r| payload.extend_from_slice(&buf[r]))
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                        up.buf.advance(progress.consumed);
                        if progress.done {
                            this.finish();
                        }
                        Bytes::from(payload)
                    }
                    Framing::UntilClose => up.buf.split().freeze(),
                };
                if !this.done {
                    this.check_end();
                }
                if !data.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                continue;
            }
            if up.buf.capacity() < 1024 {
                up.buf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut up.io), cx, &mut up.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if this.framing == Framing::UntilClose => {
                    this.done = true;
                    this.up = None;
                }
                Poll::Ready(Ok(0)) => {
                    this.done = true;
                    this.up = None;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection before the end of the body",
                    ))));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.done = true;
                    this.up = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(_) => SizeHint::with_exact(self.left),
            Framing::Empty => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
