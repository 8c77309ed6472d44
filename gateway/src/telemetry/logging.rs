//! Structured logs on stdout, with a filter that can change at run time.
use std::{
    io::{self, Write},
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use tracing_subscriber::{
    fmt::{self, MakeWriter},
    layer::SubscriberExt,
    reload,
    util::SubscriberInitExt,
    EnvFilter, Registry,
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
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        lock(&self.shared).closed = true;
        self.shared.wake_writer.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the
/// configured level, as operators expect.
pub fn init(level: &str, format: LogFormat) -> (LogHandle, FlushGuard) {
    let (writer, guard) = BatchWriter::start(std::io::stdout());
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

/// How long the writer thread lets lines gather before writing them.
const GATHER: Duration = Duration::from_millis(10);
/// Past this many buffered bytes the writer is woken at once.
const WRITE_NOW: usize = 256 * 1024;
/// Past this many, a thread logging waits for the writer: lines are
/// never dropped (access-log lines are records), a stuck stdout stalls.
const MAX_BUFFERED: usize = 16 * 1024 * 1024;

/// Log lines from every thread gathered in one buffer that a writer thread
/// empties into stdout, so a connection never waits on a slow stdout (a
/// pipe to a log shipper).
///
/// Why not `tracing_appender::non_blocking`: it sends every line through a
/// channel and wakes its writer thread for each, which cost about a tenth
/// of the daemon's CPU per request in `cargo xtask bench llm` profiles.
/// Here a line is one append under a lock; the writer is woken once per
/// batch (when the buffer turns non-empty) and writes every [`GATHER`].
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake_writer: Condvar,
    room: Condvar,
}

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    closed: bool,
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

impl BatchWriter {
    /// The writer, and the guard that flushes what is left when dropped.
    pub fn start<W: Write + Send + 'static>(mut out: W) -> (BatchWriter, FlushGuard) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake_writer: Condvar::new(),
            room: Condvar::new(),
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("trigate-log".into())
            .spawn(move || {
                let shared = for_thread;
                let mut spare = Vec::new();
                loop {
                    let mut state = lock(&shared);
                    while state.lines.is_empty() && !state.closed {
                        state = shared
                            .wake_writer
                            .wait(state)
                            .unwrap_or_else(|p| p.into_inner());
                    }
                    if !state.closed && state.lines.len() < WRITE_NOW {
                        // Let the batch gather; an early wake (the buffer
                        // grew large, or closing) cuts this short.
                        state = shared
                            .wake_writer
                            .wait_timeout(state, GATHER)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    let closed = state.closed;
                    std::mem::swap(&mut state.lines, &mut spare);
                    drop(state);
                    shared.room.notify_all();
                    let _ = out.write_all(&spare);
                    let _ = out.flush();
                    spare.clear();
                    if closed && lock(&shared).lines.is_empty() {
                        return;
                    }
                }
            })
            .ok();
        (
            BatchWriter {
                shared: Arc::clone(&shared),
            },
            FlushGuard { shared, thread },
        )
    }
}

impl Write for BatchWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = lock(&self.shared);
        while state.lines.len() >= MAX_BUFFERED && !state.closed {
            state = self
                .shared
                .room
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        let was_empty = state.lines.is_empty();
        state.lines.extend_from_slice(buf);
        let now = state.lines.len() >= WRITE_NOW;
        drop(state);
        if was_empty || now {
            self.shared.wake_writer.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read while the writer thread owns it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_in_order_per_thread_and_the_guard_flushes_the_rest() {
        let sink = Sink::default();
        let (writer, guard) = BatchWriter::start(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        w.write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let mut next = [0u32; 4];
        for line in text.lines() {
            let (t, i) = line.split_once(' ').unwrap();
            let (t, i): (usize, u32) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[t], "thread {t}'s lines out of order or lost");
            next[t] += 1;
        }
        assert_eq!(next, [5000; 4]);
    }

    #[test]
    fn lines_are_written_without_waiting_for_the_guard() {
        let sink = Sink::default();
        let (mut writer, _guard) = BatchWriter::start(sink.clone());
        writer.write_all(b"one line\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"one line\n");
    }
}
