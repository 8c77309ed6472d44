//! A fake HTTP/1.1 upstream on a test-made address.

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Answers every request with `200` and the body
/// `hello from upstream path=<path> peer=<client addr>` (`Connection: close`),
/// counting accepted connections and remembering their peers and requests.
pub struct Upstream {
    addr: SocketAddr,
    tls: bool,
    accepted: Arc<AtomicUsize>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    requests: Arc<Mutex<Vec<(SocketAddr, String)>>>,
    heads: Arc<Mutex<Vec<String>>>,
    /// Request bodies (keep-alive mode), in order.
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Binds `ip` on an ephemeral port. `ip` must be one the test made
    /// (a pod's host-side veth address, or 127.0.0.x).
    pub fn start(ip: IpAddr) -> Result<Self> {
        Self::start_with(ip, None, Duration::ZERO, false)
    }

    /// Keeps connections open across requests and reads request bodies
    /// (Content-Length or chunked); answers say how many body bytes came
    /// (`body=N`). Paths under `/echo` are answered with the request's
    /// body and content type (`/echo-chunked`: in chunked coding).
    pub fn start_keepalive(ip: IpAddr) -> Result<Self> {
        Self::start_with(ip, None, Duration::ZERO, true)
    }

    /// Answers each request only after `delay` (timeout tests).
    pub fn start_slow(ip: IpAddr, delay: Duration) -> Result<Self> {
        Self::start_with(ip, None, delay, false)
    }

    /// The same over TLS, with a certificate from `ca` for `names`.
    pub fn start_tls(ip: IpAddr, ca: &TestCa, names: &[&str]) -> Result<Self> {
        let (chain, key) = ca.leaf(names)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Self::start_with(ip, Some(Arc::new(config)), Duration::ZERO, false)
    }

    fn start_with(
        ip: IpAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        delay: Duration,
        keepalive: bool,
    ) -> Result<Self> {
        let is_tls = tls.is_some();
        let listener =
            TcpListener::bind((ip, 0)).with_context(|| format!("binding upstream on {ip}"))?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, peers, stop) = (accepted.clone(), peers.clone(), stop.clone());
            let requests = requests.clone();
            let heads = heads.clone();
            let bodies = bodies.clone();
            std::thread::spawn(move || {
                // Accept only when poll() says a connection waits, checking
                // the stop flag at least every 50 ms: dropping never hangs,
                // even when the address has gone with its veth.
                while !stop.load(Ordering::SeqCst) {
                    if !readable(&listener, 50) {
                        continue;
                    }
                    let Ok((conn, _)) = listener.accept() else {
                        continue;
                    };
                    let peer = conn
                        .peer_addr()
                        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                    accepted.fetch_add(1, Ordering::SeqCst);
                    peers.lock().unwrap().push(peer);
                    let requests = requests.clone();
                    let heads = heads.clone();
                    let bodies = bodies.clone();
                    let tls = tls.clone();
                    std::thread::spawn(move || {
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                        match tls {
                            None if keepalive => {
                                let _ = serve_keepalive(conn, peer, &requests, &heads, &bodies);
                            }
                            None => {
                                let _ = serve(conn, peer, &requests, &heads, delay);
                            }
                            Some(config) => {
                                let Ok(session) = rustls::ServerConnection::new(config) else {
                                    return;
                                };
                                let stream = rustls::StreamOwned::new(session, conn);
                                let _ = serve(stream, peer, &requests, &heads, delay);
                            }
                        }
                    });
                }
            })
        };
        Ok(Self {
            addr,
            tls: is_tls,
            accepted,
            peers,
            requests,
            heads,
            bodies,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn ip(&self) -> IpAddr {
        self.addr.ip()
    }
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    /// `http(s)://<addr><path>` (IPv6 in brackets).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    /// Peer addresses of accepted connections, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
    /// The request heads (request line and headers) received, in order.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
    /// The request bodies received (keep-alive mode), in order.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().unwrap().clone()
    }
    /// (peer, path) of every request answered, in order.
    pub fn requests(&self) -> Vec<(SocketAddr, String)> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(
    mut conn: impl Read + Write,
    peer: SocketAddr,
    requests: &Mutex<Vec<(SocketAddr, String)>>,
    heads: &Mutex<Vec<String>>,
    delay: Duration,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let path = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_string();
    requests.lock().unwrap().push((peer, path.clone()));
    heads.lock().unwrap().push(head.to_string());
    std::thread::sleep(delay);
    // `Upgrade: echo`: switch protocols, then echo every byte back (the
    // shape of a WebSocket or any other upgrade, without its framing).
    if head.to_ascii_lowercase().contains("\r\nupgrade: echo") {
        conn.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
        )?;
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(buf.len(), |p| p + 4);
        conn.write_all(&buf[end..])?;
        conn.flush()?;
        loop {
            let n = conn.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            conn.write_all(&chunk[..n])?;
            conn.flush()?;
        }
    }
    let body = format!("hello from upstream path={path} peer={peer}");
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(resp.as_bytes())?;
    conn.flush()
}

/// Requests one after another on one connection, bodies read and counted.
fn serve_keepalive(
    mut conn: impl Read + Write,
    peer: SocketAddr,
    requests: &Mutex<Vec<(SocketAddr, String)>>,
    heads: &Mutex<Vec<String>>,
    bodies: &Mutex<Vec<Vec<u8>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let Some(end) = fill_until(&mut conn, &mut buf, |b| {
            b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
        })?
        else {
            return Ok(());
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        let lower = head.to_ascii_lowercase();
        let path = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_string();
        let header = |name: &str| {
            lower
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let mut bytes = Vec::new();
        let body = if header("transfer-encoding:").is_some_and(|v| v.ends_with("chunked")) {
            let mut total = 0;
            loop {
                let Some(line_end) = fill_until(&mut conn, &mut buf, |b| {
                    b.windows(2).position(|w| w == b"\r\n").map(|p| p + 2)
                })?
                else {
                    return Ok(());
                };
                let line = String::from_utf8_lossy(&buf[..line_end - 2]).to_string();
                buf.drain(..line_end);
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| std::io::Error::other("bad chunk size"))?;
                if size == 0 {
                    // No trailers from the clients used here: the final CRLF.
                    if fill_until(&mut conn, &mut buf, |b| (b.len() >= 2).then_some(2))?.is_none() {
                        return Ok(());
                    }
                    buf.drain(..2);
                    break;
                }
                if fill_until(&mut conn, &mut buf, |b| (b.len() >= size + 2).then_some(0))?
                    .is_none()
                {
                    return Ok(());
                }
                bytes.extend_from_slice(&buf[..size]);
                buf.drain(..size + 2);
                total += size;
            }
            total
        } else {
            let n: usize = header("content-length:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if fill_until(&mut conn, &mut buf, |b| (b.len() >= n).then_some(0))?.is_none() {
                return Ok(());
            }
            bytes.extend_from_slice(&buf[..n]);
            buf.drain(..n);
            n
        };
        requests.lock().unwrap().push((peer, path.clone()));
        heads.lock().unwrap().push(head.clone());
        bodies.lock().unwrap().push(bytes.clone());
        if path.starts_with("/echo") {
            let ct = header("content-type:").unwrap_or_else(|| "text/plain".into());
            let resp = if path.starts_with("/echo-chunked") {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                .into_bytes();
                // Two chunks cut in the middle, so the reader must join them.
                let (a, b) = bytes.split_at(bytes.len() / 2);
                for part in [a, b] {
                    if !part.is_empty() {
                        r.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                        r.extend_from_slice(part);
                        r.extend_from_slice(b"\r\n");
                    }
                }
                r.extend_from_slice(b"0\r\n\r\n");
                r
            } else {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
                    bytes.len()
                )
                .into_bytes();
                r.extend_from_slice(&bytes);
                r
            };
            conn.write_all(&resp)?;
            conn.flush()?;
            continue;
        }
        let text = format!("hello from upstream path={path} peer={peer} body={body}");
        // A HEAD answer has the GET's length and no body.
        let payload = if head.starts_with("HEAD ") { "" } else { &text };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{payload}",
            text.len()
        );
        conn.write_all(resp.as_bytes())?;
        conn.flush()?;
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

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether `listener` has a connection to accept within `timeout_ms`.
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

/// A CA made for one test: signs the TLS upstreams' certificates; the
/// daemon trusts it through `tls.upstream_ca_files`.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl TestCa {
    pub fn new() -> Result<Self> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "trigate e2e upstream CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A leaf for `names` (DNS names or IP literals) and its key.
    pub fn leaf(
        &self,
        names: &[&str],
    ) -> Result<(
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )> {
        let key = rcgen::KeyPair::generate()?;
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        Ok((vec![cert.der().clone()], key))
    }
}

/// A port nothing listens on at `ip` right now (bind to 0, read, release).
pub fn free_port(ip: IpAddr) -> Result<u16> {
    let l = TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}:0"))?;
    Ok(l.local_addr()?.port())
}
