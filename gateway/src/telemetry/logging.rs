//! Structured logs on stdout, with a filter that can change at run time.
use tracing_subscriber::{
    fmt, layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter, Registry,
};

use crate::config::LogFormat;

/// Changes the log filter of the running daemon (admin `PUT /logging`).
#[derive(Clone)]
pub struct LogHandle(reload::Handle<EnvFilter, Registry>);

impl LogHandle {
    pub fn set(&self, directive: &str) -> Result<(), String> {
        let filter =
            EnvFilter::try_new(directive).map_err(|e| format!("bad filter {directive:?}: {e}"))?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

/// Flushes the log writer when dropped: keep it until the process ends.
pub type FlushGuard = tracing_appender::non_blocking::WorkerGuard;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the
/// configured level, as operators expect.
///
/// Lines go to stdout from a writer thread, so a connection never waits on
/// a slow stdout (a pipe to a log shipper); the queue blocks rather than
/// drops when full, because access-log lines must not be lost.
pub fn init(level: &str, format: LogFormat) -> (LogHandle, FlushGuard) {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stdout());
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .with_writer(writer)
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Text => registry.with(fmt::layer().with_writer(writer)).try_init(),
    };
    if let Err(e) = result {
        eprintln!("trigate: logging already initialised: {e}");
    }
    (LogHandle(handle), guard)
}
