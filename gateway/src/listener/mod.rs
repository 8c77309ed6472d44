//! Where redirected connections land: loopback listeners in the daemon's
//! namespace (`host` mode) or inside each pod's namespace (`in-pod` mode),
//! and the accept path that attributes each connection before a gate serves
//! it.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::{
    daemon::Node,
    gate::{self, Accepted},
    intercept::origdst::{self, comm, ip_from_key, tuple_key},
    netns::{netns_cookie, Netns},
    telemetry::access::{ConnectionLog, Process, Source},
    workload::Workload,
};

/// Listeners of one namespace: IPv4 always, IPv6 when asked for and the
/// namespace has it.
pub struct Listeners {
    pub v4: TcpListener,
    pub v6: Option<TcpListener>,
    pub port: u16,
    pub netns_cookie: u64,
}

impl Listeners {
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        out.extend(self.v4.local_addr().ok());
        if let Some(v6) = &self.v6 {
            out.extend(v6.local_addr().ok());
        }
        out
    }

    /// Opens them in `netns`: `127.0.0.1:port` and `[::1]:port`. Port 0
    /// picks one for IPv4 and reuses it for IPv6 (one port in the maps).
    pub async fn open(netns: &Netns, port: u16, ipv6: bool) -> io::Result<Listeners> {
        let (v4, v6, cookie) = netns
            .run(move || -> io::Result<_> {
                let v4 = listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))?;
                let port = v4.local_addr()?.port();
                let v6 = if ipv6 {
                    match listen(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)) {
                        Ok(l) => Some(l),
                        Err(e) => {
                            tracing::warn!(error = %e, port, "no IPv6 listener (is IPv6 disabled in this namespace?); IPv6 destinations will not be redirected");
                            None
                        }
                    }
                } else {
                    None
                };
                let cookie = netns_cookie(&v4)?;
                Ok((v4, v6, cookie))
            })
            .await??;
        let port = v4.local_addr()?.port();
        Ok(Listeners {
            v4: TcpListener::from_std(v4)?,
            v6: v6.map(TcpListener::from_std).transpose()?,
            port,
            netns_cookie: cookie,
        })
    }
}

fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // A restarted daemon must be able to bind while old connections linger.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// What an accept loop knows about its listener.
#[derive(Clone)]
pub struct ListenerContext {
    pub netns_cookie: u64,
    pub netns: Netns,
    /// The workload whose namespace this is (in-pod mode); `None` for the
    /// shared host listener, where the eBPF record names the workload.
    pub owner: Option<Arc<Workload>>,
}

/// Accepts until `stop` fires; each connection is served on its own task.
pub fn spawn_accept_loops(
    node: &Arc<Node>,
    listeners: Listeners,
    ctx: ListenerContext,
    stop: CancellationToken,
) {
    let Listeners { v4, v6, .. } = listeners;
    for listener in std::iter::once(v4).chain(v6) {
        let node = Arc::clone(node);
        let ctx = ctx.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let node = Arc::clone(&node);
                let ctx = ctx.clone();
                let tracker = node.connections.clone();
                tracker.spawn(async move { serve(&node, stream, peer, &ctx).await });
            }
        });
    }
}

async fn serve(node: &Arc<Node>, stream: TcpStream, peer: SocketAddr, ctx: &ListenerContext) {
    let Some(accepted) = attribute(node, stream, peer, ctx) else {
        return;
    };
    // The destination picks the gate: its TLS policy first (which hands
    // HTTP on to the api gate when asked), the api gate for plaintext
    // HTTP, else bytes as they are.
    let destination = accepted.destination.clone();
    match destination.as_deref() {
        Some(d) if d.tls.is_some() => gate::tls::serve(node, accepted, d).await,
        Some(d) if d.gate.is_http() => gate::api::serve_accepted(node, accepted, d, None).await,
        _ => gate::tcp::forward(accepted, &node.proxy, &node.stop).await,
    }
}

/// Finds the original destination and the workload of an accepted
/// connection: the eBPF record first, `SO_ORIGINAL_DST` second.
fn attribute(
    node: &Arc<Node>,
    stream: TcpStream,
    peer: SocketAddr,
    ctx: &ListenerContext,
) -> Option<Accepted> {
    let t0 = Instant::now();
    let record = match node
        .interceptor
        .orig_table()
        .take(&tuple_key(ctx.netns_cookie, peer))
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(client = %peer, error = %e, "reading the original-destination map failed");
            None
        }
    };
    node.metrics
        .origdst_lookup_seconds
        .observe(t0.elapsed().as_secs_f64());

    let (original_dst, workload, destination, process, source) = match record {
        Some(rec) => {
            let orig = SocketAddr::new(ip_from_key(rec.orig_addr), rec.orig_port);
            let workload = node
                .workloads
                .by_id(rec.workload_id)
                .or_else(|| ctx.owner.clone());
            let destination = node.destinations.load().by_id(rec.dest_id).map(Arc::clone);
            let process = Process {
                pid: rec.tgid,
                uid: rec.uid,
                comm: comm(&rec),
            };
            (orig, workload, destination, process, Source::Ebpf)
        }
        None => {
            let local = stream.local_addr().ok()?;
            let Some(orig) = origdst::so_original_dst(&stream, local) else {
                // Somebody connected to the listener itself. Nothing to
                // proxy to; closing is the only safe answer.
                tracing::warn!(client = %peer, listener = %local, "connection without an original destination (not redirected by trigate's eBPF programs nor by iptables); closing it");
                return None;
            };
            let destination = node.destinations.load().lookup(orig).map(Arc::clone);
            (
                orig,
                ctx.owner.clone(),
                destination,
                Process::default(),
                Source::OriginalDst,
            )
        }
    };
    let workload_name: Arc<str> = workload
        .clone()
        .as_ref()
        .map(|w| Arc::clone(&w.name))
        .unwrap_or_else(|| Arc::from("unknown"));
    let destination_name: Arc<str> = destination
        .as_ref()
        .map(|d| Arc::clone(&d.name))
        .unwrap_or_else(|| Arc::from("unlisted"));
    let log = ConnectionLog::start(
        Arc::clone(&node.metrics),
        workload_name,
        destination_name,
        original_dst,
        peer,
        source,
        process,
    );
    Some(Accepted {
        stream,
        original_dst,
        netns: ctx.netns.clone(),
        log,
        destination,
        workload,
    })
}
