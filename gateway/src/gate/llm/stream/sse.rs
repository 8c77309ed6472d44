//! Server-sent events as the WHATWG HTML standard's "event stream
//! interpretation" reads them, parsed incrementally: bytes arrive in
//! whatever pieces the network cuts, and every cut gives the same events.
use std::borrow::Cow;

/// The most a line plus the event it belongs to may hold. LLM events are a
/// few hundred bytes; the bound is what stops an upstream that never ends a
/// line or an event from growing the gateway's memory.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` is the standard's default type, `message`.
    pub event: Option<String>,
    pub data: String,
    /// The last `id:` the stream set, on this event or an earlier one: the
    /// standard keeps it across events until the next `id:` changes it.
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error(
        "a server-sent event or line exceeds {MAX_EVENT_BYTES} bytes; is the upstream \
         sending an event stream, and does it end its lines and events?"
    )]
    TooLarge,
}

/// Bytes after the last blank line are an unfinished event, which the
/// standard discards when the stream ends; so there is no `finish`, and
/// dropping the parser is the end of the stream. After an error the parser
/// has released its buffers and refuses everything: a stream cut mid-event
/// cannot be resynchronised.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Past the start of the stream, where one byte-order mark is skipped.
    past_bom: bool,
    /// How much of a byte-order mark the stream has started with so far; it
    /// may arrive split over pushes.
    bom_matched: usize,
    line: Vec<u8>,
    /// The last push ended on `\r`: a `\n` starting the next one is the rest
    /// of that line end, not a blank line.
    after_cr: bool,
    data: String,
    event: String,
    last_id: String,
    retry: Option<u64>,
    failed: bool,
}

impl SseParser {
    /// The events completed by `bytes`.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        if self.failed {
            return Err(SseError::TooLarge);
        }
        let mut events = Vec::new();
        match self.feed_stream(bytes, &mut events) {
            Ok(()) => Ok(events),
            Err(e) => {
                *self = Self {
                    failed: true,
                    ..Self::default()
                };
                Err(e)
            }
        }
    }

    /// The reconnection time (milliseconds) the stream last asked for. The
    /// gateway does not reconnect to upstreams; it is kept for completeness
    /// of the standard and for logs.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    fn feed_stream(
        &mut self,
        mut bytes: &[u8],
        events: &mut Vec<SseEvent>,
    ) -> Result<(), SseError> {
        while !self.past_bom {
            let Some((&b, rest)) = bytes.split_first() else {
                return Ok(());
            };
            if b == BOM[self.bom_matched] {
                bytes = rest;
                self.bom_matched += 1;
                self.past_bom = self.bom_matched == BOM.len();
            } else {
                // The start of a BOM that turned out not to be one is data.
                self.past_bom = true;
                self.feed(&BOM[..self.bom_matched], events)?;
            }
        }
        self.feed(bytes, events)
    }

    fn feed(&mut self, mut bytes: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        while let Some((&first, rest)) = bytes.split_first() {
            if std::mem::take(&mut self.after_cr) && first == b'\n' {
                bytes = rest;
                continue;
            }
            let end = bytes.iter().position(|&b| b == b'\n' || b == b'\r');
            let piece = &bytes[..end.unwrap_or(bytes.len())];
            // Checked before copying, so one huge push allocates nothing.
            self.check(piece.len())?;
            self.line.extend_from_slice(piece);
            let Some(end) = end else { break };
            self.after_cr = bytes[end] == b'\r';
            bytes = &bytes[end + 1..];
            let line = std::mem::take(&mut self.line);
            let result = self.process(&line, events);
            // Keep the allocation for the next line.
            self.line = line;
            self.line.clear();
            result?;
        }
        Ok(())
    }

    /// Whether `extra` more bytes fit beside the partial line and the
    /// pending event.
    fn check(&self, extra: usize) -> Result<(), SseError> {
        let held = self.line.len() + self.data.len() + self.event.len();
        if held.saturating_add(extra) > MAX_EVENT_BYTES {
            return Err(SseError::TooLarge);
        }
        Ok(())
    }

    fn process(&mut self, line: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(events);
            return Ok(());
        }
        // The standard decodes the stream with replacement. Line ends are
        // ASCII and never inside a UTF-8 sequence, so decoding line by line
        // gives the same text.
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            // A comment; upstreams send them as keep-alives.
            return Ok(());
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*line, ""),
        };
        match name {
            "event" => self.event = value.to_owned(),
            "data" => {
                self.check(value.len() + 1)?;
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // Too many digits for a u64 is as good as ignored.
                self.retry = value.parse().ok().or(self.retry);
            }
            // Unknown fields are ignored, as the standard says.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let mut data = std::mem::take(&mut self.data);
        let event = std::mem::take(&mut self.event);
        // An event without data lines is not dispatched.
        if data.is_empty() {
            return;
        }
        // The `\n` after the last data line.
        data.pop();
        events.push(SseEvent {
            event: (!event.is_empty()).then_some(event),
            data,
            id: (!self.last_id.is_empty()).then(|| self.last_id.clone()),
        });
    }
}

/// One event on the wire: `event: <event>` if given, one `data:` line per
/// line of `data`, and the blank line that dispatches it. A line end inside
/// `data` would end the field early, so each line gets its own `data:` and a
/// parser joins them back with `\n` (a `\r\n` or `\r` comes back as `\n`:
/// the format cannot carry them). `event` must be a single line.
pub fn encode(event: Option<&str>, data: &str) -> String {
    debug_assert!(
        !event.is_some_and(|e| e.contains(['\r', '\n'])),
        "event name {event:?} spans lines"
    );
    let data = if data.contains('\r') {
        Cow::Owned(data.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(data)
    };
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(event) = event {
        out.push_str("event: ");
        out.push_str(event);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events of `input` pushed whole, and in pieces of every size up to
    /// 8 bytes; all must agree.
    fn events(input: &[u8]) -> Vec<SseEvent> {
        let whole = SseParser::default().push(input).expect("parse");
        for size in 1..=8 {
            let mut parser = SseParser::default();
            let mut split = Vec::new();
            for piece in input.chunks(size) {
                split.extend(parser.push(piece).expect("parse"));
            }
            assert_eq!(split, whole, "pieces of {size} bytes");
        }
        whole
    }

    fn data(input: &[u8]) -> Vec<String> {
        events(input).into_iter().map(|e| e.data).collect()
    }

    #[test]
    fn every_line_end_form() {
        for stream in [
            "event: a\ndata: 1\ndata: 2\n\ndata: 3\n\n",
            "event: a\r\ndata: 1\r\ndata: 2\r\n\r\ndata: 3\r\n\r\n",
            "event: a\rdata: 1\rdata: 2\r\rdata: 3\r\r",
            "event: a\r\ndata: 1\rdata: 2\n\r\ndata: 3\r\n\n",
        ] {
            let got = events(stream.as_bytes());
            let want = vec![
                SseEvent {
                    event: Some("a".into()),
                    data: "1\n2".into(),
                    id: None,
                },
                SseEvent {
                    data: "3".into(),
                    ..SseEvent::default()
                },
            ];
            assert_eq!(got, want, "{stream:?}");
        }
    }

    #[test]
    fn one_leading_bom_is_skipped() {
        assert_eq!(data("\u{FEFF}data: x\n\n".as_bytes()), ["x"]);
        // A second one is part of the first field's name, which is unknown.
        assert!(data("\u{FEFF}\u{FEFF}data: x\n\n".as_bytes()).is_empty());
        // Not at the start: part of the value.
        assert_eq!(data("data: \u{FEFF}x\n\n".as_bytes()), ["\u{FEFF}x"]);
        // The start of a BOM that is not one is data (invalid UTF-8 here).
        assert_eq!(data(b"\xEF\xBB\ndata: x\n\n"), ["x"]);
        assert_eq!(data(b"\xEF\xBB:c\ndata: y\n\n"), ["y"]);
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        let stream = b": keep-alive\n\ndata: a\n: in the middle\nfoo: bar\ndata: b\n\n";
        assert_eq!(data(stream), ["a\nb"]);
    }

    #[test]
    fn data_lines_join_and_only_one_space_is_stripped() {
        assert_eq!(
            data(b"data: a\ndata:\ndata:  b\ndata:c:d\n\n"),
            ["a\n\n b\nc:d"]
        );
    }

    #[test]
    fn field_without_colon_has_an_empty_value() {
        let got = events(b"data\n\nevent\ndata: x\n\n");
        assert_eq!(got[0].data, "");
        assert_eq!(got[1].event, None);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn events_without_data_are_not_dispatched_and_reset_the_type() {
        let got = events(b"event: a\n\ndata: x\n\n");
        assert_eq!(
            got,
            [SseEvent {
                data: "x".into(),
                ..SseEvent::default()
            }]
        );
    }

    #[test]
    fn id_persists_until_changed() {
        let got = events(b"id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: x\0y\ndata: d\n\n");
        let ids: Vec<_> = got.iter().map(|e| e.id.as_deref()).collect();
        assert_eq!(ids, [Some("7"), Some("7"), None, None]);
    }

    #[test]
    fn retry_takes_only_digits() {
        let mut parser = SseParser::default();
        parser.push(b"retry: 1500\n").expect("parse");
        assert_eq!(parser.retry(), Some(1500));
        parser
            .push(b"retry: 15x\nretry:\nretry: 99999999999999999999999\n")
            .expect("parse");
        assert_eq!(parser.retry(), Some(1500));
    }

    #[test]
    fn unterminated_last_event_is_discarded() {
        assert!(data(b"data: x\n").is_empty());
        assert!(data(b"data: x").is_empty());
        assert_eq!(data(b"data: x\n\ndata: y\n"), ["x"]);
    }

    #[test]
    fn utf8_split_anywhere_and_invalid_bytes_replaced() {
        assert_eq!(data("data: héllo € 👋\n\n".as_bytes()), ["héllo € 👋"]);
        assert_eq!(data(b"data: a\xFFb\xE2\x82\n\n"), ["a\u{FFFD}b\u{FFFD}"]);
    }

    #[test]
    fn size_is_bounded() {
        // One line that never ends, in pieces.
        let mut parser = SseParser::default();
        let piece = vec![b'x'; 64 * 1024];
        let result =
            (0..=MAX_EVENT_BYTES / piece.len()).try_for_each(|_| parser.push(&piece).map(drop));
        assert_eq!(result, Err(SseError::TooLarge));
        assert!(parser.line.capacity() == 0, "buffers are released");
        // Sticky: the stream cannot be resynchronised.
        assert_eq!(parser.push(b"\n\ndata: x\n\n"), Err(SseError::TooLarge));
        assert!(SseError::TooLarge.to_string().contains("1048576 bytes"));

        // An event that never ends, in short lines.
        let mut parser = SseParser::default();
        let line = format!("data: {}\n", "y".repeat(1000));
        let result =
            (0..=MAX_EVENT_BYTES / 1000).try_for_each(|_| parser.push(line.as_bytes()).map(drop));
        assert_eq!(result, Err(SseError::TooLarge));

        // Just under the bound is fine, and the next event starts afresh.
        let mut parser = SseParser::default();
        let big = format!("data: {}\n\n", "z".repeat(MAX_EVENT_BYTES - 16));
        let got = parser.push(big.as_bytes()).expect("fits");
        assert_eq!(got[0].data.len(), MAX_EVENT_BYTES - 16);
        assert_eq!(parser.push(big.as_bytes()).expect("fits").len(), 1);
    }

    #[test]
    fn encode_round_trips() {
        let cases = [
            (Some("message_start"), "{\"a\":1}"),
            (None, "[DONE]"),
            (None, "two\nlines"),
            (None, "cr\r\nlf and\rcr"),
            (None, ""),
            (Some("x"), "\n\ntrailing\n"),
        ];
        for (event, data) in cases {
            let wire = encode(event, data);
            let got = events(wire.as_bytes());
            let want = data.replace("\r\n", "\n").replace('\r', "\n");
            assert_eq!(got.len(), 1, "{wire:?}");
            assert_eq!(got[0].event.as_deref(), event, "{wire:?}");
            assert_eq!(got[0].data, want, "{wire:?}");
        }
        assert_eq!(
            encode(Some("ping"), "{}\nx"),
            "event: ping\ndata: {}\ndata: x\n\n"
        );
    }
}
