//! Upstream HTTP clients of the api gate: pooled per workload and original
//! destination, each connection a marked socket made in the workload's
//! namespace, over TLS when the destination asks for it (ALPN h2 or
//! http/1.1, whichever the upstream picks).
use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::Uri;
use hyper_util::{
    client::legacy::{
        connect::{Connected, Connection},
        Client,
    },
    rt::{TokioExecutor, TokioIo},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::{netns::Netns, upstream, upstream::tls::UpstreamTls};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ApiBody = BoxBody<Bytes, BoxError>;
pub type UpstreamClient = Client<Connector, ApiBody>;

/// How to reach one upstream.
#[derive(Clone)]
pub struct Connector {
    pub addr: SocketAddr,
    pub netns: Netns,
    pub mark: u32,
    pub connect_timeout: Duration,
    /// `Some(name)`: TLS, verifying `name`.
    pub tls: Option<(String, Arc<UpstreamTls>)>,
    pub handshake_timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// The URI only keys the pool: every connection of this connector goes
    /// to the one original destination.
    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp =
                upstream::connect(this.addr, &this.netns, this.mark, this.connect_timeout).await?;
            match &this.tls {
                None => Ok(TokioIo::new(UpStream::Plain(tcp))),
                Some((name, tls)) => {
                    let config = tls.config(&[b"h2".to_vec(), b"http/1.1".to_vec()]);
                    let s =
                        upstream::tls::handshake(tcp, name, config, this.handshake_timeout).await?;
                    Ok(TokioIo::new(UpStream::Tls(Box::new(s))))
                }
            }
        })
    }
}

/// A connection to an upstream, plain or TLS.
pub enum UpStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for UpStream {
    fn connected(&self) -> Connected {
        match self {
            UpStream::Plain(_) => Connected::new(),
            UpStream::Tls(s) if s.get_ref().1.alpn_protocol() == Some(b"h2") => {
                Connected::new().negotiated_h2()
            }
            UpStream::Tls(_) => Connected::new(),
        }
    }
}

impl AsyncRead for UpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Pool key: connections are never shared between workloads (each leaves
/// from its own namespace) nor between destinations or TLS names.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub workload: u32,
    pub addr: SocketAddr,
    pub tls_name: Option<String>,
}

/// Clients by pool key, created on first use.
#[derive(Default)]
pub struct Clients {
    clients: Mutex<HashMap<PoolKey, UpstreamClient>>,
}

impl Clients {
    pub fn get(
        &self,
        key: PoolKey,
        connector: impl FnOnce() -> Connector,
        max_idle: usize,
    ) -> UpstreamClient {
        let mut map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| {
                Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(max_idle)
                    .pool_idle_timeout(Duration::from_secs(90))
                    .build(connector())
            })
            .clone()
    }

    /// Drops the clients of a workload (unenrolled: its namespace may go).
    pub fn forget_workload(&self, workload: u32) {
        let mut map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|k, _| k.workload != workload);
    }
}
