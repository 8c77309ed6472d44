//! The AWS event-stream binary framing (`application/vnd.amazon.eventstream`)
//! that Bedrock's `ConverseStream` answers with, decoded incrementally:
//! bytes arrive in whatever pieces the network cuts, and every cut gives
//! the same messages.
//!
//! A message on the wire, integers big-endian:
//!
//! ```text
//! total length u32 | headers length u32 | prelude CRC32 (of the 8 bytes before)
//! headers (headers length bytes) | payload | message CRC32 (of all bytes before)
//! ```
//!
//! A header is `name length u8, name, value type u8, value`.

/// The most one message may hold. Bedrock's events are a few hundred bytes;
/// the bound is what stops a broken upstream from growing the gateway's
/// memory with a length it never fills. The same bound as a server-sent
/// event ([`super::MAX_EVENT_BYTES`]).
pub const MAX_MESSAGE_BYTES: usize = super::MAX_EVENT_BYTES;

/// Prelude (12) and message CRC (4).
const OVERHEAD: usize = 16;
const PRELUDE: usize = 12;

#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValue {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(Vec<u8>),
    String(String),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventMessage {
    /// In wire order; names may repeat, [`EventMessage::header`] reads the
    /// first.
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Vec<u8>,
}

impl EventMessage {
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// A string header's value; `None` when absent or of another type.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        match self.header(name)? {
            HeaderValue::String(s) => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventStreamError {
    #[error(
        "an event-stream message declares {len} bytes, over the {max}-byte limit; is the \
         upstream answering with application/vnd.amazon.eventstream?"
    )]
    TooLarge { len: usize, max: usize },
    #[error(
        "event-stream {part} CRC mismatch (computed {computed:#010x}, sent {sent:#010x}); the \
         stream is corrupt or not an AWS event stream"
    )]
    Crc {
        part: &'static str,
        computed: u32,
        sent: u32,
    },
    #[error("malformed event-stream message: {0}")]
    Malformed(String),
    /// A later push after an error: a stream cut mid-message cannot be
    /// resynchronised.
    #[error("the event stream already failed")]
    Failed,
}

/// Holds at most one incomplete message. After an error the decoder has
/// released its buffer and refuses everything.
#[derive(Debug)]
pub struct EventStreamDecoder {
    buf: Vec<u8>,
    max: usize,
    failed: bool,
}

impl Default for EventStreamDecoder {
    fn default() -> Self {
        Self::with_max(MAX_MESSAGE_BYTES)
    }
}

impl EventStreamDecoder {
    /// A decoder refusing messages over `max` bytes (at least the 16 bytes
    /// of framing).
    pub fn with_max(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max: max.max(OVERHEAD),
            failed: false,
        }
    }

    /// The messages completed by `bytes`.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<EventMessage>, EventStreamError> {
        if self.failed {
            return Err(EventStreamError::Failed);
        }
        let mut messages = Vec::new();
        match self.feed(bytes, &mut messages) {
            Ok(()) => Ok(messages),
            Err(e) => {
                self.failed = true;
                self.buf = Vec::new();
                Err(e)
            }
        }
    }

    /// Whether bytes of an unfinished message are held: at the end of the
    /// body that means the stream was cut.
    pub fn is_mid_message(&self) -> bool {
        !self.buf.is_empty()
    }

    fn feed(
        &mut self,
        mut bytes: &[u8],
        messages: &mut Vec<EventMessage>,
    ) -> Result<(), EventStreamError> {
        while !bytes.is_empty() {
            // The prelude first, so the length is checked before anything
            // more is buffered.
            let need = match self.total_len()? {
                Some(total) => total,
                None => PRELUDE,
            };
            let take = (need - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == need && need > PRELUDE {
                messages.push(decode(&self.buf)?);
                self.buf.clear();
            }
        }
        // A prelude completed by the last bytes is checked now, not at the
        // next push, so a bad length fails as soon as it is seen.
        self.total_len()?;
        Ok(())
    }

    /// The held message's total length, once its prelude is whole and
    /// checked.
    fn total_len(&self) -> Result<Option<usize>, EventStreamError> {
        if self.buf.len() < PRELUDE {
            return Ok(None);
        }
        let total = be_u32(&self.buf[0..4]) as usize;
        let headers = be_u32(&self.buf[4..8]) as usize;
        check_crc("prelude", &self.buf[..8], be_u32(&self.buf[8..12]))?;
        if total > self.max {
            return Err(EventStreamError::TooLarge {
                len: total,
                max: self.max,
            });
        }
        if total < OVERHEAD || headers > total - OVERHEAD {
            return Err(EventStreamError::Malformed(format!(
                "total length {total} cannot hold {headers} bytes of headers and the framing"
            )));
        }
        Ok(Some(total))
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn check_crc(part: &'static str, bytes: &[u8], sent: u32) -> Result<(), EventStreamError> {
    let computed = crc32fast::hash(bytes);
    if computed != sent {
        return Err(EventStreamError::Crc {
            part,
            computed,
            sent,
        });
    }
    Ok(())
}

/// One whole message whose prelude was checked.
fn decode(msg: &[u8]) -> Result<EventMessage, EventStreamError> {
    let (body, crc) = msg.split_at(msg.len() - 4);
    check_crc("message", body, be_u32(crc))?;
    let headers_len = be_u32(&msg[4..8]) as usize;
    let headers = decode_headers(&body[PRELUDE..PRELUDE + headers_len])?;
    Ok(EventMessage {
        headers,
        payload: body[PRELUDE + headers_len..].to_vec(),
    })
}

fn decode_headers(mut b: &[u8]) -> Result<Vec<(String, HeaderValue)>, EventStreamError> {
    fn take<'a>(b: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], EventStreamError> {
        if b.len() < n {
            return Err(EventStreamError::Malformed(format!(
                "headers end inside {what}"
            )));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    fn array<const N: usize>(b: &mut &[u8], what: &str) -> Result<[u8; N], EventStreamError> {
        let mut out = [0; N];
        out.copy_from_slice(take(b, N, what)?);
        Ok(out)
    }
    let mut headers = Vec::new();
    while !b.is_empty() {
        let name_len = take(&mut b, 1, "a header name length")?[0] as usize;
        if name_len == 0 {
            return Err(EventStreamError::Malformed("empty header name".into()));
        }
        let name = std::str::from_utf8(take(&mut b, name_len, "a header name")?)
            .map_err(|_| EventStreamError::Malformed("header name is not UTF-8".into()))?
            .to_owned();
        let what = format!("header {name:?}");
        let value =
            match take(&mut b, 1, &what)?[0] {
                0 => HeaderValue::Bool(true),
                1 => HeaderValue::Bool(false),
                2 => HeaderValue::Byte(i8::from_be_bytes(array(&mut b, &what)?)),
                3 => HeaderValue::Short(i16::from_be_bytes(array(&mut b, &what)?)),
                4 => HeaderValue::Int(i32::from_be_bytes(array(&mut b, &what)?)),
                5 => HeaderValue::Long(i64::from_be_bytes(array(&mut b, &what)?)),
                kind @ (6 | 7) => {
                    let len = u16::from_be_bytes(array(&mut b, &what)?) as usize;
                    let bytes = take(&mut b, len, &what)?.to_vec();
                    if kind == 6 {
                        HeaderValue::Bytes(bytes)
                    } else {
                        HeaderValue::String(String::from_utf8(bytes).map_err(|_| {
                            EventStreamError::Malformed(format!("{what} is not UTF-8"))
                        })?)
                    }
                }
                8 => HeaderValue::Timestamp(i64::from_be_bytes(array(&mut b, &what)?)),
                9 => HeaderValue::Uuid(array(&mut b, &what)?),
                other => {
                    return Err(EventStreamError::Malformed(format!(
                        "{what} has unknown value type {other}"
                    )))
                }
            };
        headers.push((name, value));
    }
    Ok(headers)
}

/// One message on the wire; the inverse of the decoder, for tests and
/// fakes of a Bedrock upstream.
pub fn encode(headers: &[(&str, HeaderValue)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        let name = name.as_bytes();
        h.push(u8::try_from(name.len()).expect("header names are under 256 bytes"));
        h.extend_from_slice(name);
        match value {
            HeaderValue::Bool(true) => h.push(0),
            HeaderValue::Bool(false) => h.push(1),
            HeaderValue::Byte(v) => {
                h.push(2);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Short(v) => {
                h.push(3);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Int(v) => {
                h.push(4);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Long(v) => {
                h.push(5);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Bytes(v) => {
                h.push(6);
                h.extend_from_slice(&len16(v.len()).to_be_bytes());
                h.extend_from_slice(v);
            }
            HeaderValue::String(v) => {
                h.push(7);
                h.extend_from_slice(&len16(v.len()).to_be_bytes());
                h.extend_from_slice(v.as_bytes());
            }
            HeaderValue::Timestamp(v) => {
                h.push(8);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Uuid(v) => {
                h.push(9);
                h.extend_from_slice(v);
            }
        }
    }
    let total = OVERHEAD + h.len() + payload.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&len32(total).to_be_bytes());
    out.extend_from_slice(&len32(h.len()).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out
}

fn len16(n: usize) -> u16 {
    u16::try_from(n).expect("header values are under 64 KiB")
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).expect("messages are under 4 GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        encode(
            &[
                (":event-type", HeaderValue::String(kind.into())),
                (
                    ":content-type",
                    HeaderValue::String("application/json".into()),
                ),
                (":message-type", HeaderValue::String("event".into())),
            ],
            payload.as_bytes(),
        )
    }

    fn all_header_types() -> Vec<(&'static str, HeaderValue)> {
        vec![
            ("t", HeaderValue::Bool(true)),
            ("f", HeaderValue::Bool(false)),
            ("byte", HeaderValue::Byte(-7)),
            ("short", HeaderValue::Short(-300)),
            ("int", HeaderValue::Int(70_000)),
            ("long", HeaderValue::Long(-1 << 40)),
            ("bytes", HeaderValue::Bytes(vec![0, 0xFF, 7])),
            ("string", HeaderValue::String("héllo".into())),
            ("time", HeaderValue::Timestamp(1_700_000_000_000)),
            ("uuid", HeaderValue::Uuid(*b"0123456789abcdef")),
        ]
    }

    fn stream() -> (Vec<u8>, Vec<EventMessage>) {
        let headers = all_header_types();
        let frames = [
            event("messageStart", r#"{"role":"assistant"}"#),
            encode(&headers, b"\x00binary\xFF"),
            // No headers, no payload: the smallest message.
            encode(&[], b""),
            event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"é👋"}}"#,
            ),
        ];
        let want = vec![
            EventMessage {
                headers: vec![
                    (
                        ":event-type".into(),
                        HeaderValue::String("messageStart".into()),
                    ),
                    (
                        ":content-type".into(),
                        HeaderValue::String("application/json".into()),
                    ),
                    (":message-type".into(), HeaderValue::String("event".into())),
                ],
                payload: br#"{"role":"assistant"}"#.to_vec(),
            },
            EventMessage {
                headers: headers
                    .into_iter()
                    .map(|(n, v)| (n.to_owned(), v))
                    .collect(),
                payload: b"\x00binary\xFF".to_vec(),
            },
            EventMessage::default(),
            EventMessage {
                headers: vec![
                    (
                        ":event-type".into(),
                        HeaderValue::String("contentBlockDelta".into()),
                    ),
                    (
                        ":content-type".into(),
                        HeaderValue::String("application/json".into()),
                    ),
                    (":message-type".into(), HeaderValue::String("event".into())),
                ],
                payload: r#"{"contentBlockIndex":0,"delta":{"text":"é👋"}}"#.as_bytes().to_vec(),
            },
        ];
        (frames.concat(), want)
    }

    /// A small deterministic generator: the test must fail the same way twice.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn whole_per_byte_and_random_splits_agree() {
        let (bytes, want) = stream();
        assert_eq!(
            EventStreamDecoder::default().push(&bytes).expect("whole"),
            want
        );
        let mut d = EventStreamDecoder::default();
        let mut got = Vec::new();
        for b in &bytes {
            got.extend(d.push(std::slice::from_ref(b)).expect("per byte"));
        }
        assert_eq!(got, want);
        assert!(!d.is_mid_message());

        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        for _ in 0..200 {
            let mut d = EventStreamDecoder::default();
            let mut got = Vec::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = (rng.next() as usize % 40).min(rest.len());
                got.extend(d.push(&rest[..n]).expect("split"));
                rest = &rest[n..];
            }
            assert_eq!(got, want);
        }
    }

    #[test]
    fn reads_headers_by_name() {
        let (bytes, messages) = stream();
        assert_eq!(
            EventStreamDecoder::default().push(&bytes).expect("decode"),
            messages
        );
        assert_eq!(messages[0].header_str(":event-type"), Some("messageStart"));
        assert_eq!(messages[1].header_str("int"), None, "not a string");
        assert_eq!(messages[1].header("int"), Some(&HeaderValue::Int(70_000)));
        assert_eq!(messages[2].header(":event-type"), None);
    }

    /// A known frame from the event-stream specification's test vectors:
    /// one `content-type` string header, payload `{'foo':'bar'}`.
    #[test]
    fn decodes_a_reference_frame() {
        let frame: &[u8] = &[
            0x00, 0x00, 0x00, 0x3D, 0x00, 0x00, 0x00, 0x20, 0x07, 0xFD, 0x83, 0x96, 0x0C, b'c',
            b'o', b'n', b't', b'e', b'n', b't', b'-', b't', b'y', b'p', b'e', 0x07, 0x00, 0x10,
            b'a', b'p', b'p', b'l', b'i', b'c', b'a', b't', b'i', b'o', b'n', b'/', b'j', b's',
            b'o', b'n', b'{', b'\'', b'f', b'o', b'o', b'\'', b':', b'\'', b'b', b'a', b'r', b'\'',
            b'}', 0x8D, 0x9C, 0x08, 0xB1,
        ];
        let got = EventStreamDecoder::default().push(frame).expect("decode");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].header_str("content-type"), Some("application/json"));
        assert_eq!(got[0].payload, b"{'foo':'bar'}");
        assert_eq!(
            encode(
                &[(
                    "content-type",
                    HeaderValue::String("application/json".into())
                )],
                b"{'foo':'bar'}"
            ),
            frame
        );
    }

    #[test]
    fn corrupt_crcs_are_rejected_and_the_error_sticks() {
        let good = event("messageStop", r#"{"stopReason":"end_turn"}"#);

        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let mut d = EventStreamDecoder::default();
        assert!(matches!(
            d.push(&bad),
            Err(EventStreamError::Crc {
                part: "message",
                ..
            })
        ));
        assert_eq!(d.push(&good), Err(EventStreamError::Failed));

        // A flipped payload byte fails the message CRC too.
        let mut bad = good.clone();
        bad[last - 6] ^= 0x20;
        assert!(matches!(
            EventStreamDecoder::default().push(&bad),
            Err(EventStreamError::Crc {
                part: "message",
                ..
            })
        ));

        // A corrupt prelude fails before its length is trusted, fed in
        // pieces, as soon as the twelfth byte arrives.
        let mut bad = good;
        bad[9] ^= 0xFF;
        let mut d = EventStreamDecoder::default();
        assert_eq!(d.push(&bad[..11]), Ok(vec![]));
        let e = d.push(&bad[11..12]).expect_err("prelude CRC");
        assert!(matches!(
            e,
            EventStreamError::Crc {
                part: "prelude",
                ..
            }
        ));
        assert!(e.to_string().contains("prelude CRC mismatch"), "{e}");
    }

    /// A frame whose prelude is valid but declares `total` bytes and
    /// `headers` bytes of headers.
    fn prelude(total: u32, headers: u32) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&headers.to_be_bytes());
        let crc = crc32fast::hash(&p);
        p.extend_from_slice(&crc.to_be_bytes());
        p
    }

    #[test]
    fn oversized_and_impossible_lengths_are_rejected_at_once() {
        // Nothing past the prelude is waited for or buffered.
        let mut d = EventStreamDecoder::default();
        assert_eq!(
            d.push(&prelude(u32::MAX, 0)),
            Err(EventStreamError::TooLarge {
                len: u32::MAX as usize,
                max: MAX_MESSAGE_BYTES
            })
        );
        assert_eq!(d.buf.capacity(), 0, "buffer released");
        let e = EventStreamDecoder::with_max(64)
            .push(&event("x", &"y".repeat(64)))
            .expect_err("over 64");
        assert!(e.to_string().contains("over the 64-byte limit"), "{e}");

        for (total, headers) in [(0, 0), (15, 0), (16, 1), (20, 5)] {
            let got = EventStreamDecoder::default().push(&prelude(total, headers));
            assert!(
                matches!(got, Err(EventStreamError::Malformed(_))),
                "{total}/{headers}: {got:?}"
            );
        }
    }

    #[test]
    fn malformed_headers_are_errors() {
        // A header of unknown type 10, an empty name, a string running past
        // the headers, and invalid UTF-8: each framed with valid CRCs.
        let cases: [(&[u8], &str); 4] = [
            (b"\x01a\x0A", "unknown value type 10"),
            (b"\x00", "empty header name"),
            (b"\x01a\x07\x00\x09abc", "headers end inside header \"a\""),
            (b"\x01a\x07\x00\x01\xFF", "header \"a\" is not UTF-8"),
        ];
        for (headers, want) in cases {
            let mut frame = prelude((OVERHEAD + headers.len()) as u32, headers.len() as u32);
            frame.extend_from_slice(headers);
            let crc = crc32fast::hash(&frame);
            frame.extend_from_slice(&crc.to_be_bytes());
            let e = EventStreamDecoder::default()
                .push(&frame)
                .expect_err("malformed");
            assert!(e.to_string().contains(want), "{e} does not say {want:?}");
        }
    }

    #[test]
    fn a_cut_stream_is_visible() {
        let frame = event("messageStart", "{}");
        let mut d = EventStreamDecoder::default();
        assert!(d.push(&frame[..frame.len() - 1]).expect("part").is_empty());
        assert!(d.is_mid_message());
        assert_eq!(d.push(&frame[frame.len() - 1..]).expect("rest").len(), 1);
        assert!(!d.is_mid_message());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let (good, _) = stream();
        for _ in 0..2000 {
            let mut bytes = good.clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = rng.next() as usize % bytes.len();
                bytes[at] = rng.next() as u8;
            }
            let mut d = EventStreamDecoder::with_max(1 << 12);
            for piece in bytes.chunks(1 + rng.next() as usize % 32) {
                if d.push(piece).is_err() {
                    break;
                }
            }
        }
    }
}
