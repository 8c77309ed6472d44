//! Connections from the daemon to where the workload was going.
//!
//! Every upstream socket carries the configured `SO_MARK`, which the connect
//! programs skip (no loop back into the daemon). In in-pod mode the socket is
//! made inside the pod's network namespace, so the connection leaves from the
//! pod as it would have without trigate and the cluster's network policies
//! still apply.
pub mod sigv4;
pub mod tls;

use std::{io, net::SocketAddr, time::Duration};

use tokio::net::{TcpSocket, TcpStream};

use crate::{netns::Netns, telemetry::access::Outcome};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot create the upstream socket: {0} (SO_MARK needs CAP_NET_ADMIN)")]
    Socket(io::Error),
    #[error("connecting to {addr} failed: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("connecting to {addr} timed out after {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
}

impl UpstreamError {
    /// The access-log outcome for this error.
    pub fn outcome(&self) -> Outcome {
        match self {
            UpstreamError::Socket(_) | UpstreamError::Connect { .. } => {
                Outcome::UpstreamConnectFailed
            }
            UpstreamError::Timeout { .. } => Outcome::UpstreamTimeout,
        }
    }
}

pub async fn connect(
    addr: SocketAddr,
    netns: &Netns,
    mark: u32,
    timeout: Duration,
) -> Result<TcpStream, UpstreamError> {
    let std_sock = netns
        .upstream_socket(addr.is_ipv6(), mark)
        .await
        .map_err(UpstreamError::Socket)?;
    let socket = TcpSocket::from_std_stream(std_sock);
    match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(UpstreamError::Connect { addr, source }),
        Err(_) => Err(UpstreamError::Timeout { addr, timeout }),
    }
}
