//! One access-log line and one set of metric updates per connection,
//! written from `Drop` so a connection that ends in an error (or a panic in
//! its task) is logged too.
use std::{net::SocketAddr, sync::Arc, time::Instant};

use super::Metrics;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    UpstreamConnectFailed,
    UpstreamTimeout,
    IoError,
    IdleTimeout,
    /// The daemon stopped while the connection was open.
    Shutdown,
    /// A TLS destination got something else than a ClientHello.
    NotTls,
    /// The SNI is refused by the destination's sni_allow/sni_deny.
    SniDenied,
    /// The client's TLS handshake with the gateway failed.
    ClientTlsFailed,
    /// The gateway's TLS handshake with the upstream failed.
    UpstreamTlsFailed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::UpstreamConnectFailed => "upstream_connect_failed",
            Outcome::UpstreamTimeout => "upstream_timeout",
            Outcome::IoError => "io_error",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::Shutdown => "shutdown",
            Outcome::NotTls => "not_tls",
            Outcome::SniDenied => "sni_denied",
            Outcome::ClientTlsFailed => "client_tls_failed",
            Outcome::UpstreamTlsFailed => "upstream_tls_failed",
        }
    }
}

/// How the daemon learnt the original destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Ebpf,
    OriginalDst,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Ebpf => "ebpf",
            Source::OriginalDst => "original_dst",
        }
    }
}

/// Who opened the connection, as far as the kernel told us.
#[derive(Clone, Debug, Default)]
pub struct Process {
    pub pid: u32,
    pub uid: u32,
    pub comm: String,
}

pub struct ConnectionLog {
    metrics: Arc<Metrics>,
    pub workload: Arc<str>,
    pub destination: Arc<str>,
    pub original_dst: SocketAddr,
    pub client: SocketAddr,
    pub source: Source,
    pub process: Process,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub outcome: Outcome,
    pub error: Option<String>,
    /// What detection saw (`tls`, `http1`, …), when it ran.
    pub protocol: Option<&'static str>,
    pub sni: Option<String>,
    pub tls_mode: Option<&'static str>,
    start: Instant,
}

impl ConnectionLog {
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        metrics: Arc<Metrics>,
        workload: Arc<str>,
        destination: Arc<str>,
        original_dst: SocketAddr,
        client: SocketAddr,
        source: Source,
        process: Process,
    ) -> Self {
        metrics
            .connections_active
            .with_label_values(&[&workload])
            .inc();
        ConnectionLog {
            metrics,
            workload,
            destination,
            original_dst,
            client,
            source,
            process,
            bytes_sent: 0,
            bytes_received: 0,
            // Until the proxy says otherwise: a task that ends early was an
            // I/O failure, not a success, and the line must say why.
            outcome: Outcome::IoError,
            error: Some("the connection ended before it was proxied".into()),
            protocol: None,
            sni: None,
            tls_mode: None,
            start: Instant::now(),
        }
    }

    pub fn fail(&mut self, outcome: Outcome, error: impl ToString) {
        self.outcome = outcome;
        self.error = Some(error.to_string());
    }

    pub fn succeed(&mut self) {
        self.outcome = Outcome::Ok;
        self.error = None;
    }
}

impl Drop for ConnectionLog {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let m = &self.metrics;
        let (w, d) = (&*self.workload, &*self.destination);
        m.connections_active.with_label_values(&[w]).dec();
        m.connections
            .with_label_values(&[w, d, self.outcome.as_str()])
            .inc();
        m.connection_bytes
            .with_label_values(&[w, d, "sent"])
            .inc_by(self.bytes_sent);
        m.connection_bytes
            .with_label_values(&[w, d, "received"])
            .inc_by(self.bytes_received);
        m.connection_duration
            .with_label_values(&[w, d])
            .observe(elapsed.as_secs_f64());
        let Some(mut line) = super::logging::AccessLine::start("connection") else {
            return;
        };
        line.field("workload", w)
            .field("destination", d)
            .display("original_dst", &self.original_dst)
            .display("client", &self.client)
            .field("source", self.source.as_str())
            .field("pid", self.process.pid)
            .field("uid", self.process.uid)
            .display("comm", &self.process.comm)
            .field("bytes_sent", self.bytes_sent)
            .field("bytes_received", self.bytes_received)
            .field("duration_ms", super::logging::Val::millis(elapsed))
            .field("outcome", self.outcome.as_str())
            .field("error", self.error.as_deref())
            .field("protocol", self.protocol)
            .field("sni", self.sni.as_deref())
            .field("tls_mode", self.tls_mode);
        line.write();
    }
}

/// What the LLM gate adds to a request's access-log line. Never request
/// or response content, never keys: names, numbers and the outcome.
#[derive(Debug, Default)]
pub struct LlmRecord {
    pub model_requested: String,
    pub model_served: Option<String>,
    pub provider: Option<String>,
    pub stream: bool,
    pub usage: Option<crate::gate::llm::usage::Usage>,
    /// Micro-USD; `None` when the served model has no price.
    pub cost_micros: Option<u64>,
    pub finish_reason: Option<String>,
    pub failovers: u32,
    pub ttft: Option<std::time::Duration>,
    /// `hit`, `miss` or `bypass` when the answer cache is on.
    pub cache: Option<&'static str>,
}
