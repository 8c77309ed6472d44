//! The L4 gate: bytes both ways between the client and its original
//! destination, half-close preserved, idle connections closed.
use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

// tokio's clock, so tests can run the idle timer on paused time.
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};

use tokio_util::sync::CancellationToken;

use super::{Accepted, ProxySettings};
use crate::{
    telemetry::access::{ConnectionLog, Outcome},
    upstream,
};

/// Proxies until either side closes, the connection idles out, or `stop`
/// fires (daemon shutdown); the access log records which.
pub async fn forward(accepted: Accepted, settings: &ProxySettings, stop: &CancellationToken) {
    let Accepted {
        stream,
        original_dst,
        netns,
        mut log,
        ..
    } = accepted;
    let upstream = match upstream::connect(
        original_dst,
        &netns,
        settings.mark,
        settings.connect_timeout,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "upstream connect failed");
            // Dropping the client stream closes it at once: the client sees
            // a reset/EOF instead of waiting on a dead connection.
            log.fail(e.outcome(), e);
            return;
        }
    };
    pump(stream, upstream, settings, stop, &mut log).await;
}

/// Copies both ways between two connected streams (plain or TLS) until
/// both sides are done, the pair idles out, or `stop` fires; records bytes
/// and the outcome in `log`.
pub async fn pump<C, U>(
    client: C,
    upstream: U,
    settings: &ProxySettings,
    stop: &CancellationToken,
    log: &mut ConnectionLog,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let mut client = Counted::new(client, start, Arc::clone(&activity));
    let mut upstream = Counted::new(upstream, start, Arc::clone(&activity));
    let result = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match r {
            // A TLS peer that closes without close_notify after its data
            // (common among servers) ends the relay like a plain EOF: what
            // was sent has been relayed, and the other side then sees the
            // same unannounced close.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok((0, 0)),
            // The client finished and closed after an answer; passing its
            // close on, the relay met an upstream that had closed already
            // (a reset for our late FIN or TLS close_notify): what either
            // side sent was delivered.
            Err(e)
                if client.eof
                    && upstream.read > 0
                    && matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    ) =>
            {
                Ok((0, 0))
            }
            r => r.map_err(|e| (Outcome::IoError, e.to_string())),
        },
        _ = idle(start, &activity, settings.idle_timeout) => Err((
            Outcome::IdleTimeout,
            format!("no data either way for {:?}", settings.idle_timeout),
        )),
        _ = stop.cancelled() => Err((Outcome::Shutdown, "trigate is stopping".to_string())),
    };
    // Bytes read from the client went upstream, and the other way round.
    log.bytes_sent = client.read;
    log.bytes_received = upstream.read;
    match result {
        Ok(_) => log.succeed(),
        Err((outcome, e)) => log.fail(outcome, e),
    }
}

/// Resolves once no byte moved for `limit`.
async fn idle(start: Instant, activity: &AtomicU64, limit: Duration) {
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        let quiet = start.elapsed().saturating_sub(last);
        if quiet >= limit {
            return;
        }
        tokio::time::sleep(limit - quiet).await;
    }
}

/// Counts bytes read through it and stamps the last activity.
struct Counted<S> {
    inner: S,
    read: u64,
    /// A read returned end of stream.
    eof: bool,
    start: Instant,
    activity: Arc<AtomicU64>,
}

impl<S> Counted<S> {
    fn new(inner: S, start: Instant, activity: Arc<AtomicU64>) -> Self {
        Counted {
            inner,
            read: 0,
            eof: false,
            start,
            activity,
        }
    }

    fn touch(&self) {
        self.activity
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read += n as u64;
            self.touch();
        } else if matches!(r, Poll::Ready(Ok(()))) && buf.remaining() > 0 {
            self.eof = true;
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_bytes_and_stamps_activity() {
        let (a, mut b) = tokio::io::duplex(64);
        let start = Instant::now();
        let activity = Arc::new(AtomicU64::new(0));
        let mut c = Counted::new(a, start, Arc::clone(&activity));
        b.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 16];
        let n = c.read(&mut buf).await.unwrap();
        assert_eq!(n, 5);
        assert_eq!(c.read, 5);
        drop(b);
        assert_eq!(c.read(&mut buf).await.unwrap(), 0, "EOF counts nothing");
        assert_eq!(c.read, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_fires_after_the_limit_without_activity() {
        let start = Instant::now();
        let activity = AtomicU64::new(0);
        let t = tokio::time::Instant::now();
        idle(start, &activity, Duration::from_secs(30)).await;
        assert!(t.elapsed() >= Duration::from_secs(30));
    }
}
