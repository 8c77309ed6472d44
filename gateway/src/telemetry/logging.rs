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
    let _ = SINK.set(Sink {
        writer: writer.clone(),
        json: format == LogFormat::Json,
    });
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
    fn strings_are_written_as_serde_json_writes_them() {
        for s in [
            "",
            "plain /v1/chat/completions",
            "quote \" backslash \\ newline \n tab \t nul \u{0} del \u{7f}",
            "unicode é 漢字 \u{2028} 🦀",
        ] {
            let mut out = Vec::new();
            super::json_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
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

/// Where access lines go: the same buffer as every other log line.
struct Sink {
    writer: BatchWriter,
    json: bool,
}

static SINK: std::sync::OnceLock<Sink> = std::sync::OnceLock::new();

/// One access-log line (target `trigate::access`), written straight into
/// the log buffer in the configured format.
///
/// Why not `tracing::info!`: these are the daemon's busiest lines (one per
/// request); tracing's JSON formatter sends every field through
/// `fmt::Write` with a UTF-8 check per piece, several percent of the CPU
/// per request in `cargo xtask bench llm` profiles. The lines look the
/// same and obey the same filter (`trigate::access` at `info`).
pub struct AccessLine {
    buf: Vec<u8>,
    json: bool,
}

/// A field value; `None` leaves the field out, as `tracing` does.
pub enum Val<'a> {
    Str(&'a str),
    U64(u64),
    /// `units` over 10^`places`, written with exactly `places` decimals
    /// (see [`Val::millis`], [`Val::micro_units`]). Durations and costs
    /// are kept as integers: written from them, they are exact, and
    /// cheaper than through a float formatter.
    Fixed {
        units: u64,
        places: u32,
    },
    Bool(bool),
    None,
}

impl Val<'_> {
    /// A duration in milliseconds, to the microsecond (`12.345`).
    pub fn millis(d: Duration) -> Val<'static> {
        Val::Fixed {
            units: u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            places: 3,
        }
    }

    /// An amount kept in millionths (micro-dollars), as its whole
    /// (`0.000123`).
    pub fn micro_units(n: u64) -> Val<'static> {
        Val::Fixed {
            units: n,
            places: 6,
        }
    }
}

impl<'a> From<&'a str> for Val<'a> {
    fn from(v: &'a str) -> Self {
        Val::Str(v)
    }
}
impl From<u64> for Val<'_> {
    fn from(v: u64) -> Self {
        Val::U64(v)
    }
}
impl From<u32> for Val<'_> {
    fn from(v: u32) -> Self {
        Val::U64(v.into())
    }
}
impl From<u16> for Val<'_> {
    fn from(v: u16) -> Self {
        Val::U64(v.into())
    }
}
impl From<bool> for Val<'_> {
    fn from(v: bool) -> Self {
        Val::Bool(v)
    }
}
impl<'a, T: Into<Val<'a>>> From<Option<T>> for Val<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Val::None, Into::into)
    }
}

impl AccessLine {
    /// A new line, or `None` when the filter leaves access lines out (or
    /// logging was not set up, as in unit tests).
    pub fn start(message: &str) -> Option<AccessLine> {
        if !tracing::enabled!(target: "trigate::access", tracing::Level::INFO) {
            return None;
        }
        Self::begin("trigate::access", message)
    }

    /// An MCP audit line (target `trigate::mcp`), one per JSON-RPC call:
    /// as busy as access lines on MCP traffic.
    pub fn mcp(message: &str) -> Option<AccessLine> {
        if !tracing::enabled!(target: "trigate::mcp", tracing::Level::INFO) {
            return None;
        }
        Self::begin("trigate::mcp", message)
    }

    fn begin(target: &str, message: &str) -> Option<AccessLine> {
        let sink = SINK.get()?;
        let mut line = AccessLine {
            buf: Vec::with_capacity(1024),
            json: sink.json,
        };
        let now = std::time::SystemTime::now();
        if line.json {
            // Target and message are names in the code (as keys are):
            // written as they are, without a look for escapes.
            debug_assert!(is_plain(target) && is_plain(message));
            line.buf.extend_from_slice(b"{\"timestamp\":\"");
            rfc3339_micros(now, &mut line.buf);
            line.buf
                .extend_from_slice(b"\",\"level\":\"INFO\",\"target\":\"");
            line.buf.extend_from_slice(target.as_bytes());
            line.buf.extend_from_slice(b"\",\"message\":\"");
            line.buf.extend_from_slice(message.as_bytes());
            line.buf.push(b'"');
        } else {
            rfc3339_micros(now, &mut line.buf);
            line.buf.extend_from_slice(b"  INFO ");
            line.buf.extend_from_slice(target.as_bytes());
            line.buf.extend_from_slice(b": ");
            line.buf.extend_from_slice(message.as_bytes());
        }
        Some(line)
    }

    /// Inlined where it is called, so that writing the key (a constant
    /// there) is a few moves of known length rather than three calls to
    /// `memcpy`: a line has some thirty fields.
    #[inline]
    pub fn field<'v>(&mut self, key: &str, value: impl Into<Val<'v>>) -> &mut Self {
        let value = value.into();
        if matches!(value, Val::None) {
            return self;
        }
        // Keys are names in the code, never escaped: written as they are.
        debug_assert!(is_plain(key), "{key:?}");
        // `,"key":` in JSON, ` key=` in text.
        self.buf.reserve(key.len() + 4);
        if self.json {
            self.buf.extend_from_slice(b",\"");
            self.buf.extend_from_slice(key.as_bytes());
            self.buf.extend_from_slice(b"\":");
        } else {
            self.buf.push(b' ');
            self.buf.extend_from_slice(key.as_bytes());
            self.buf.push(b'=');
        }
        self.value(value);
        self
    }

    fn value(&mut self, value: Val<'_>) {
        match value {
            Val::Str(s) if self.json => json_str(&mut self.buf, s),
            Val::Str(s) => {
                let _ = write!(self.buf, "{s:?}");
            }
            Val::U64(n) => self
                .buf
                .extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
            Val::Fixed { units, places } => {
                let scale = 10u64.pow(places);
                let mut digits = itoa::Buffer::new();
                self.buf
                    .extend_from_slice(digits.format(units / scale).as_bytes());
                self.buf.push(b'.');
                let fraction = digits.format(units % scale).as_bytes();
                self.buf
                    .resize(self.buf.len() + places as usize - fraction.len(), b'0');
                self.buf.extend_from_slice(fraction);
            }
            Val::Bool(b) => self
                .buf
                .extend_from_slice(if b { b"true" } else { b"false" }),
            Val::None => {}
        }
    }

    /// A field from any `Display` value (addresses, methods).
    pub fn display(&mut self, key: &str, value: &dyn std::fmt::Display) -> &mut Self {
        let s = value.to_string();
        self.field(key, s.as_str())
    }

    pub fn write(mut self) {
        self.buf
            .extend_from_slice(if self.json { b"}\n" } else { b"\n" });
        if let Some(sink) = SINK.get() {
            let _ = sink.writer.clone().write_all(&self.buf);
        }
    }
}

/// Whether `s` needs no escaping in a JSON string.
fn is_plain(s: &str) -> bool {
    crate::json_text::find_stop(s.as_bytes(), 0) == s.len()
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Most values (names, paths, models) need no escaping: copied as they
    // are, without a serializer per value.
    if is_plain(s) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// `2026-11-27T22:00:20.452202Z`, as the rest of the log lines. The date
/// and time of day are formatted once a second per thread.
fn rfc3339_micros(t: std::time::SystemTime, out: &mut Vec<u8>) {
    thread_local! {
        static LAST: std::cell::RefCell<(u64, Vec<u8>)> =
            const { std::cell::RefCell::new((u64::MAX, Vec::new())) };
    }
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    LAST.with_borrow_mut(|(at, prefix)| {
        if *at != secs {
            let (y, m, day) = civil_from_days((secs / 86_400) as i64);
            let s = secs % 86_400;
            prefix.clear();
            let _ = write!(
                prefix,
                "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.",
                s / 3600,
                s / 60 % 60,
                s % 60,
            );
            *at = secs;
        }
        out.extend_from_slice(prefix);
    });
    // By hand: `write!` with a width showed in access-line profiles.
    let mut micros = d.subsec_micros();
    let mut tail = *b"000000Z";
    for digit in tail[..6].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.extend_from_slice(&tail);
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (the
/// well-known era-based conversion: 400-year eras of 146 097 days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod line_tests {
    use super::*;

    #[test]
    fn dates_follow_the_gregorian_calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        // 2000 was a leap year (divisible by 400), 2100 will not be.
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
        // Every day of 1900..2200 follows the one before.
        let mut prev = civil_from_days(-25_567);
        assert_eq!(prev, (1900, 1, 1));
        for z in -25_566..84_000 {
            let (y, m, d) = civil_from_days(z);
            let next_day = (y, m, d) > prev
                && (d == prev.2 + 1 && m == prev.1 && y == prev.0
                    || d == 1 && (m == prev.1 + 1 && y == prev.0 || m == 1 && y == prev.0 + 1));
            assert!(next_day, "{prev:?} then {:?}", (y, m, d));
            prev = (y, m, d);
        }
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_795_816_820, 452_202_999);
        let mut out = Vec::new();
        rfc3339_micros(t, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-27T22:00:20.452202Z"
        );
        // Leading zeros of the microseconds, and the largest.
        for (nanos, tail) in [
            (0, ".000000Z"),
            (7_999, ".000007Z"),
            (999_999_999, ".999999Z"),
        ] {
            let mut out = Vec::new();
            rfc3339_micros(
                std::time::UNIX_EPOCH + std::time::Duration::new(1_795_816_820, nanos),
                &mut out,
            );
            assert!(out.ends_with(tail.as_bytes()), "{nanos}");
        }
    }

    #[test]
    fn json_fields_are_escaped_and_none_is_left_out() {
        let mut line = AccessLine {
            buf: b"{\"first\":0".to_vec(),
            json: true,
        };
        line.field("a", "x\"y\n")
            .field("n", 3u64)
            .field("b", true)
            .field("gone", None::<&str>);
        line.buf.push(b'}');
        let v: serde_json::Value = serde_json::from_slice(&line.buf[..]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"first": 0, "a": "x\"y\n", "n": 3, "b": true})
        );
    }

    #[test]
    fn fixed_point_values_have_exactly_their_places() {
        let cases = [
            (Val::millis(Duration::from_micros(12_345)), "12.345"),
            (Val::millis(Duration::from_nanos(7_999)), "0.007"),
            (Val::millis(Duration::ZERO), "0.000"),
            (Val::millis(Duration::from_secs(3600)), "3600000.000"),
            (Val::micro_units(1), "0.000001"),
            (Val::micro_units(2_500_000), "2.500000"),
            (Val::micro_units(u64::MAX), "18446744073709.551615"),
        ];
        for (value, text) in cases {
            let mut line = AccessLine {
                buf: Vec::new(),
                json: true,
            };
            line.field("v", value);
            assert_eq!(
                String::from_utf8(line.buf).unwrap(),
                format!(",\"v\":{text}")
            );
        }
    }
}
