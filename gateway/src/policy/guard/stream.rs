//! Scanning text that arrives in chunks (SSE deltas) without letting a
//! match slip through a chunk boundary.
//!
//! The scanner keeps the unsent text and sends what no match can still run
//! into: everything but the last `window` bytes, and less when a match near
//! the end may still grow (a JWT still arriving, a PEM block waiting for its
//! END line). It keeps a little already-sent text as look-behind context
//! for `\b` and context words. What it returns, concatenated, equals
//! redacting the whole text in one go with the same scanner, as long as no
//! match needs more than the window to show its start (every built-in
//! detector's does within 64 bytes) and nothing is held past `MAX_HOLD`
//! (beyond it text is sent regardless, so memory stays bounded).
use std::fmt;
use std::sync::Arc;

use super::finding::Finding;
use super::redact::Redactor;
use super::scanner::{ScanError, Scanner};
use super::secrets::PEM_MAX;
use super::text::{floor_boundary, LOOKAROUND};

/// Default tail held back: longer than any token the built-in detectors
/// match in one piece (emails are at most 320 bytes, keys a few hundred).
pub const DEFAULT_WINDOW: usize = 512;

/// Text that arrives beyond the window before scanning again: scanning per
/// tiny SSE delta would rescan the window for every few bytes.
const BATCH: usize = 256;

/// Most text ever held back: a PEM block waiting for its END line, plus a
/// window. Beyond it, text is sent even if a match might still grow, so a
/// stream never buffers without bound.
const MAX_HOLD: usize = PEM_MAX + 2 * DEFAULT_WINDOW;

/// Scans and redacts a stream of chunks.
pub struct StreamScanner {
    scanner: Arc<Scanner>,
    redactor: Redactor,
    window: usize,
    /// Look-behind context (already sent) followed by unsent text.
    buf: String,
    /// Bytes at the start of `buf` that were already sent.
    context: usize,
    /// Stream offset of `buf[context]`.
    offset: usize,
    total: usize,
    /// `buf.len()` at the last scan.
    scanned_len: usize,
    findings: Vec<Finding>,
}

impl fmt::Debug for StreamScanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamScanner")
            .field("window", &self.window)
            .field("held_bytes", &(self.buf.len() - self.context))
            .field("offset", &self.offset)
            .finish()
    }
}

impl StreamScanner {
    /// A stream redacting with a fresh [`Redactor`].
    pub fn new(scanner: Arc<Scanner>) -> StreamScanner {
        StreamScanner::with_redactor(scanner, Redactor::new())
    }

    /// A stream that continues an existing redaction session (same
    /// placeholders for the same values as the prompt had).
    pub fn with_redactor(scanner: Arc<Scanner>, redactor: Redactor) -> StreamScanner {
        StreamScanner {
            scanner,
            redactor,
            window: DEFAULT_WINDOW,
            buf: String::new(),
            context: 0,
            offset: 0,
            total: 0,
            scanned_len: 0,
            findings: Vec::new(),
        }
    }

    /// Holds back `bytes` instead of [`DEFAULT_WINDOW`]; never less than the
    /// validators' look-around. A custom rule whose matches can be longer
    /// than the window needs a larger one.
    pub fn window(mut self, bytes: usize) -> StreamScanner {
        self.window = bytes.max(2 * LOOKAROUND);
        self
    }

    /// Adds a chunk; returns the redacted text that is now safe to send
    /// (often empty). Fails once the stream exceeds the scanner's
    /// `max_scan_bytes`.
    pub fn push(&mut self, chunk: &str) -> Result<String, ScanError> {
        self.total += chunk.len();
        let limit = self.scanner.max_scan_bytes();
        if self.total > limit {
            return Err(ScanError::TooLarge {
                len: self.total,
                limit,
            });
        }
        self.buf.push_str(chunk);
        let unsent = self.buf.len() - self.context;
        if unsent < self.window + BATCH || self.buf.len() < self.scanned_len + BATCH {
            return Ok(String::new());
        }
        Ok(self.advance(false))
    }

    /// Sends everything still held back.
    pub fn finish(&mut self) -> String {
        self.advance(true)
    }

    /// Findings since the last call, with offsets into the whole stream.
    pub fn take_findings(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.findings)
    }

    /// Bytes received but not yet sent.
    pub fn held_bytes(&self) -> usize {
        self.buf.len() - self.context
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    pub fn into_redactor(self) -> Redactor {
        self.redactor
    }

    fn advance(&mut self, flush: bool) -> String {
        let from = self.context;
        let len = self.buf.len();
        let window = self.scanner.scan_window(&self.buf, from, !flush);
        let straddling = |cut: usize| {
            window
                .spans
                .iter()
                .filter(move |r| r.start < cut && r.end > cut)
        };
        let mut cut = len;
        if !flush {
            let tail = len.saturating_sub(self.window);
            cut = floor_boundary(&self.buf, tail.min(window.open_from).max(from));
            // Back up to before anything the cut would split. Going forward
            // instead could send a finding that a longer rival, still open,
            // would have beaten in a one-shot scan.
            while let Some(start) = straddling(cut).map(|r| r.start).min() {
                cut = start;
            }
            // Memory bound: past MAX_HOLD, send anyway, moving forward over
            // what the cut would split so no finding goes out half redacted.
            let floor = floor_boundary(&self.buf, len.saturating_sub(MAX_HOLD));
            if cut < floor {
                cut = floor;
                while let Some(end) = straddling(cut).map(|r| r.end).max() {
                    cut = end;
                }
            }
        }
        let relative: Vec<Finding> = window
            .findings
            .into_iter()
            .filter(|f| f.range.start < cut)
            .map(|f| Finding {
                range: f.range.start - from..f.range.end - from,
                ..f
            })
            .collect();
        let out = self.redactor.redact(&self.buf[from..cut], &relative);
        let base = self.offset;
        self.findings.extend(relative.into_iter().map(|f| Finding {
            range: f.range.start + base..f.range.end + base,
            ..f
        }));
        self.offset += cut - from;
        let keep = floor_boundary(&self.buf, cut.saturating_sub(LOOKAROUND));
        self.buf.drain(..keep);
        self.context = cut - keep;
        self.scanned_len = len - keep;
        out
    }
}
