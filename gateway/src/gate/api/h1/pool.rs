//! Idle HTTP/1.1 upstream connections, shared by the client connections of
//! a workload. A client connection keeps the upstream connection it used
//! for as long as it lives (no pool round trip per request) and checks it
//! in here when it ends; the next client connection takes it back.
use std::{
    io,
    pin::Pin,
    sync::Mutex,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use tokio::io::{AsyncRead, ReadBuf};

use super::super::client::{PoolKey, UpStream};

/// Idle connections by key, most recently used last.
#[derive(Default)]
pub struct IdlePool {
    /// foldhash: a key is hashed on every check-in and check-out.
    idle: Mutex<foldhash::HashMap<PoolKey, Vec<(UpStream, Instant)>>>,
    /// Check-ins since the last sweep of every key.
    puts: std::sync::atomic::AtomicU64,
}

/// Every this many check-ins, connections idle too long are closed under
/// every key, not only the one checked into (keys may never be used again).
const SWEEP_EVERY: u64 = 256;

impl IdlePool {
    /// A live idle connection for `key`, if one is kept and fresh. Dead ones
    /// met on the way (closed by the upstream, or idle too long) are dropped.
    pub fn take(&self, key: &PoolKey, max_idle_for: Duration) -> Option<UpStream> {
        let now = Instant::now();
        loop {
            let (mut conn, since) = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.get_mut(key)?.pop()?
            };
            if now.duration_since(since) < max_idle_for && is_idle_and_open(&mut conn) {
                return Some(conn);
            }
        }
    }

    /// Keeps `conn` for reuse, up to `max` per key; the oldest goes first.
    pub fn put(&self, key: PoolKey, conn: UpStream, max: usize, max_idle_for: Duration) {
        if max == 0 {
            return;
        }
        let sweep = self.puts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SWEEP_EVERY
            == SWEEP_EVERY - 1;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Read under the lock: each list then stays in check-in order,
        // oldest first, which the trimming below relies on.
        let now = Instant::now();
        if sweep {
            idle.retain(|_, list| {
                list.retain(|(_, since)| now.duration_since(*since) < max_idle_for);
                !list.is_empty()
            });
        }
        let list = idle.entry(key).or_default();
        // The connections idle too long are a prefix (oldest first): found
        // by bisection, not a pass over every kept connection per check-in.
        let expired = list.partition_point(|(_, since)| now.duration_since(*since) >= max_idle_for);
        list.drain(..expired);
        if list.len() >= max {
            list.remove(0);
        }
        list.push((conn, now));
    }

    /// Closes the connections of a workload (unenrolled: its namespace may
    /// go away).
    pub fn forget_workload(&self, workload: u32) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|k, _| k.workload != workload);
    }

    #[cfg(test)]
    fn len(&self, key: &PoolKey) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.get(key).map_or(0, Vec::len)
    }
}

/// An idle connection must have nothing to read: end of stream means the
/// upstream closed it, bytes mean it broke the protocol. Polled once
/// without blocking (the reactor has recorded readiness meanwhile).
pub(crate) fn is_idle_and_open(conn: &mut UpStream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(Pin::new(conn).poll_read(&mut cx, &mut buf), Poll::Pending)
}

/// Whether an I/O error means the upstream dropped a connection we reused
/// (a stale keep-alive), which is worth one more try on a fresh one.
pub fn is_stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::{
        io::AsyncWriteExt,
        net::{TcpListener, TcpStream},
    };

    use super::*;

    async fn pair(l: &TcpListener) -> (UpStream, TcpStream) {
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (UpStream::Plain(c), s)
    }

    fn key(addr: SocketAddr) -> PoolKey {
        PoolKey {
            workload: 7,
            addr,
            tls_name: None,
        }
    }

    #[tokio::test]
    async fn keeps_live_connections_and_drops_dead_ones() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let k = key(l.local_addr().unwrap());
        let pool = IdlePool::default();
        let long = Duration::from_secs(60);

        let (live, _live_peer) = pair(&l).await;
        pool.put(k.clone(), live, 4, long);
        assert!(
            pool.take(&k, long).is_some(),
            "a live idle connection is reused"
        );
        assert!(pool.take(&k, long).is_none());

        // Closed by the upstream while idle.
        let (closed, closed_peer) = pair(&l).await;
        pool.put(k.clone(), closed, 4, long);
        drop(closed_peer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            pool.take(&k, long).is_none(),
            "a closed connection is dropped"
        );

        // The upstream wrote while idle: out of sync, dropped.
        let (chatty, mut chatty_peer) = pair(&l).await;
        pool.put(k.clone(), chatty, 4, long);
        chatty_peer.write_all(b"HTTP/1.1 408\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take(&k, long).is_none(), "unexpected bytes drop it");

        // Idle for longer than allowed.
        let (old, _old_peer) = pair(&l).await;
        pool.put(k.clone(), old, 4, long);
        assert!(
            pool.take(&k, Duration::ZERO).is_none(),
            "too old is dropped"
        );
    }

    #[tokio::test]
    async fn bounded_per_key_and_forgotten_with_the_workload() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let k = key(l.local_addr().unwrap());
        let pool = IdlePool::default();
        let long = Duration::from_secs(60);
        let mut peers = Vec::new();
        for _ in 0..3 {
            let (c, p) = pair(&l).await;
            peers.push(p);
            pool.put(k.clone(), c, 2, long);
        }
        assert_eq!(pool.len(&k), 2, "at most max per key");
        let (c, p) = pair(&l).await;
        peers.push(p);
        pool.put(k.clone(), c, 0, long);
        assert_eq!(pool.len(&k), 2, "max 0 keeps nothing");
        pool.forget_workload(8);
        assert_eq!(pool.len(&k), 2);
        pool.forget_workload(7);
        assert_eq!(pool.len(&k), 0);
    }

    #[tokio::test]
    async fn check_in_drops_the_connections_idle_too_long() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let k = key(l.local_addr().unwrap());
        let pool = IdlePool::default();
        let mut peers = Vec::new();
        for _ in 0..3 {
            let (c, p) = pair(&l).await;
            peers.push(p);
            pool.put(k.clone(), c, 8, Duration::from_secs(60));
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        // Wide margins: the two new ones must stay fresh on a busy machine.
        let short = Duration::from_millis(500);
        for n in 1..=2 {
            let (c, p) = pair(&l).await;
            peers.push(p);
            pool.put(k.clone(), c, 8, short);
            assert_eq!(pool.len(&k), n, "the three idle for 600 ms are gone");
        }
    }

    #[tokio::test]
    async fn sweeps_expired_connections_under_other_keys() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let old = key(l.local_addr().unwrap());
        let mut other = old.clone();
        other.workload = 9;
        let pool = IdlePool::default();
        let (c, _p) = pair(&l).await;
        pool.put(old.clone(), c, 4, Duration::from_secs(60));
        let mut peers = Vec::new();
        for _ in 0..SWEEP_EVERY {
            let (c, p) = pair(&l).await;
            peers.push(p);
            // Expired at once: every check-in is past its idle time.
            pool.put(other.clone(), c, 1, Duration::ZERO);
        }
        assert_eq!(
            pool.len(&old),
            0,
            "the sweep closed the idle one of another key"
        );
    }
}
