//! The python3 test client (`client.py`, standard library only): one
//! request described as JSON, one JSON result. Run it with
//! [`crate::Runner::client`].

use crate::process::CmdOutput;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

pub(crate) const SCRIPT: &str = include_str!("client.py");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientMode {
    /// A raw socket: connect, getpeername, GET, read to EOF.
    Socket,
    /// `urllib.request` (no proxy).
    Urllib,
    /// `http.client.HTTPConnection`.
    #[serde(rename = "http.client")]
    HttpClient,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientRequest {
    pub mode: ClientMode,
    pub host: String,
    pub port: u16,
    pub path: String,
    /// Bind this local port first (socket mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_port: Option<u16>,
    /// Socket timeout in seconds.
    pub timeout: f64,
    /// Send the GET (socket mode); false only connects.
    pub send: bool,
}

impl ClientRequest {
    /// A raw-socket GET of `path` on `addr`.
    pub fn get(addr: SocketAddr, path: &str) -> Self {
        Self {
            mode: ClientMode::Socket,
            host: addr.ip().to_string(),
            port: addr.port(),
            path: path.to_string(),
            bind_port: None,
            timeout: 10.0,
            send: true,
        }
    }
    pub fn mode(mut self, m: ClientMode) -> Self {
        self.mode = m;
        self
    }
    pub fn bind_port(mut self, p: u16) -> Self {
        self.bind_port = Some(p);
        self
    }
    pub fn timeout(mut self, secs: f64) -> Self {
        self.timeout = secs;
        self
    }
    pub fn connect_only(mut self) -> Self {
        self.send = false;
        self
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClientResult {
    /// Connected and (unless connect-only) got an HTTP response.
    pub ok: bool,
    pub status: Option<u16>,
    pub body: Option<String>,
    /// `getpeername()` after connect: `ip:port` / `[ip6]:port`.
    pub peer: Option<String>,
    pub local: Option<String>,
    /// errno of the failure (1 = EPERM, 111 = ECONNREFUSED).
    pub errno: Option<i32>,
    pub error: Option<String>,
    pub connect_ms: Option<f64>,
    pub elapsed_ms: f64,
    /// Bytes read before EOF/reset (socket mode).
    pub received: Option<usize>,
    /// The client's pid (what the access log's `pid` should say).
    pub pid: u32,
}

impl ClientResult {
    pub(crate) fn parse(out: &CmdOutput) -> Result<Self> {
        let line = out.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).with_context(|| {
            format!(
                "client printed no result ({}): stdout={:?} stderr={:?}",
                out.status, out.stdout, out.stderr
            )
        })
    }

    /// The response body, or an error describing what happened instead.
    pub fn body(&self) -> Result<&str> {
        match (&self.ok, &self.body) {
            (true, Some(b)) => Ok(b),
            _ => anyhow::bail!("client got no response: {self:?}"),
        }
    }

    pub fn is_eperm(&self) -> bool {
        self.errno == Some(libc::EPERM)
    }
}
