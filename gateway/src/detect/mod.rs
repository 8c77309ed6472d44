//! Protocol detection: what a connection speaks, from its first bytes,
//! without taking them from the socket, so whoever serves the connection
//! (the L4 gate, or an L7 one) still reads the stream from its first byte.
//!
//! [`classify`] is the decision: pure, incremental and linear in the input,
//! allocating only the strings it returns. [`detect`] is the I/O edge that
//! feeds it peeked bytes until it decides. Both face untrusted clients:
//! neither may panic, and garbage must end as [`Protocol::Opaque`], never as
//! an endless [`Classification::NeedMore`].

mod http;
mod tls;

#[cfg(test)]
mod tests;

use std::{io, time::Duration};

// tokio's clock, so callers can test with paused time.
use tokio::{
    io::Interest,
    net::TcpStream,
    time::{self, Instant},
};

/// What the first bytes of a connection say it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// A TLS ClientHello (record type 22). `sni` from server_name (host_name
    /// type), lower-cased; `alpn` protocol names in order (e.g.
    /// `["h2", "http/1.1"]`).
    Tls {
        sni: Option<String>,
        alpn: Vec<String>,
    },
    /// An HTTP/1.x request line: method token then SP; `method` as sent
    /// (e.g. "GET").
    Http1 { method: String },
    /// The HTTP/2 prior-knowledge preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".
    Http2,
    /// Anything else, or a client that said nothing before the timeout
    /// (server-speaks-first protocols).
    Opaque,
}

impl Protocol {
    /// Metric and log label.
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Tls { .. } => "tls",
            Protocol::Http1 { .. } => "http1",
            Protocol::Http2 => "http2",
            Protocol::Opaque => "opaque",
        }
    }
}

/// Pure, incremental: decides from the bytes seen so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    Done(Protocol),
    NeedMore,
}

/// Decides from the bytes seen so far.
///
/// TLS is decided only on a complete ClientHello (reassembled across
/// handshake records), so its SNI and ALPN are final. HTTP/1 is decided as
/// soon as "METHOD " is in, provided nothing after it contradicts a request
/// line; more bytes can still turn such a verdict into `Opaque`, but never
/// the other way: `Done(Opaque)` is final for any longer input.
pub fn classify(buf: &[u8]) -> Classification {
    match buf.first() {
        None => Classification::NeedMore,
        Some(&tls::CONTENT_HANDSHAKE) => tls::classify(buf),
        Some(_) => http::classify(buf),
    }
}

/// The verdict when no more bytes will be looked at because the buffer is
/// full. A ClientHello larger than the buffer is still TLS (its record and
/// handshake headers say so), reported with the SNI and ALPN that were read
/// whole, which may be none: a client could push its SNI out of reach with
/// padding, but that leaves it no better off than one that sends no SNI.
/// Anything else undecided is `Opaque`.
fn classify_final(buf: &[u8]) -> Protocol {
    match classify(buf) {
        Classification::Done(protocol) => protocol,
        Classification::NeedMore if buf.first() == Some(&tls::CONTENT_HANDSHAKE) => {
            tls::classify_cut_short(buf)
        }
        Classification::NeedMore => Protocol::Opaque,
    }
}

/// First pause when a peek shows nothing new; doubles up to [`MAX_PAUSE`].
const MIN_PAUSE: Duration = Duration::from_millis(1);
const MAX_PAUSE: Duration = Duration::from_millis(20);

/// Peeks (does not consume: the bytes stay in the socket for whoever serves
/// the connection) until [`classify`] decides, `max_bytes` are buffered (then
/// `Opaque`, or `Tls` with the SNI/ALPN read so far if the ClientHello is
/// larger than `max_bytes`; see `classify_final`), the peer closes
/// (`Opaque`), or `timeout` passes (`Opaque`). I/O errors are returned.
///
/// Waiting for more bytes cannot be left to readiness alone: bytes that are
/// peeked stay queued, so the socket stays readable and `readable()` returns
/// at once. When a peek shows no new bytes the loop therefore sleeps, 1 ms at
/// first, doubling to 20 ms, which bounds both the wake-ups (about 50 per
/// second) and the added latency for a client that sends its first flight in
/// pieces. Readiness is still consulted, for the peer's FIN: once it is in,
/// no more bytes can come and an undecided prefix is `Opaque` at once.
pub async fn detect(
    stream: &TcpStream,
    timeout: Duration,
    max_bytes: usize,
) -> io::Result<Protocol> {
    // A peek into an empty buffer returns 0, which cannot be told from EOF.
    if max_bytes == 0 {
        return Ok(Protocol::Opaque);
    }
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0; max_bytes];
    let mut seen = 0;
    let mut pause = MIN_PAUSE;
    let mut closed = false;
    loop {
        // Checked here, not only by the timeouts below: a peek that is ready
        // completes even after the deadline.
        if Instant::now() >= deadline {
            return Ok(Protocol::Opaque);
        }
        let Ok(peeked) = time::timeout_at(deadline, stream.peek(&mut buf)).await else {
            return Ok(Protocol::Opaque);
        };
        let n = peeked?;
        if n == 0 {
            // EOF with nothing queued: the peer closed without a word.
            return Ok(Protocol::Opaque);
        }
        if n != seen {
            seen = n;
            pause = MIN_PAUSE;
            match classify(&buf[..n]) {
                Classification::Done(protocol) => return Ok(protocol),
                Classification::NeedMore if n >= max_bytes => return Ok(classify_final(&buf[..n])),
                Classification::NeedMore => {}
            }
        } else if closed {
            // The FIN was seen before this peek, so every byte the peer will
            // ever send was already in it.
            return Ok(Protocol::Opaque);
        } else {
            time::sleep_until(deadline.min(Instant::now() + pause)).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
        // Immediate while bytes are queued (they always are here); bounded
        // anyway in case someone else drains the socket meanwhile.
        let Ok(ready) = time::timeout_at(deadline, stream.ready(Interest::READABLE)).await else {
            return Ok(Protocol::Opaque);
        };
        closed = ready?.is_read_closed();
    }
}
