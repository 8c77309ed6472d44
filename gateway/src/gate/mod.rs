//! Gates take an accepted, attributed connection and serve it: `tcp`
//! forwards bytes, `tls` applies a destination's TLS policy, `api` serves
//! HTTP with routes and the policy chain. The LLM and MCP gates will take
//! the same [`Accepted`] value.
pub mod api;
pub mod llm;
pub mod mcp;
pub mod tcp;
pub mod tls;

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpStream;

use crate::{
    intercept::destinations::Destination, netns::Netns, telemetry::access::ConnectionLog,
    workload::Workload,
};

/// An accepted connection with everything the kernel told us about it.
pub struct Accepted {
    pub stream: TcpStream,
    pub original_dst: SocketAddr,
    /// Namespace the upstream socket must be made in.
    pub netns: Netns,
    pub log: ConnectionLog,
    /// The destination it matched, if any (its TLS policy picks the gate).
    pub destination: Option<Arc<Destination>>,
    /// The workload the kernel attributed it to.
    pub workload: Option<Arc<Workload>>,
}

/// Per-daemon settings the gates read on every connection.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    pub mark: u32,
    pub connect_timeout: std::time::Duration,
    pub idle_timeout: std::time::Duration,
}

pub type SharedSettings = Arc<ProxySettings>;
