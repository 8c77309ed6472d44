//! HTTP/1.1 message framing (RFC 9112 §6): where a body ends. Pure
//! functions and a chunked-coding walker the relay drives over whatever
//! bytes have arrived; nothing here does I/O.
//!
//! Framing is where request smuggling lives, so the rules are strict: a
//! request with both `Transfer-Encoding` and `Content-Length`, differing
//! `Content-Length` values, a transfer coding other than a final `chunked`,
//! or `Transfer-Encoding` in HTTP/1.0 is refused, never guessed at.
use std::ops::Range;

use hyper::{header, header::HeaderName, HeaderMap, Method, StatusCode};

/// A message's header fields as framing reads them: a header map, or a
/// response head not yet turned into one (see `ResponseHead`).
pub trait Fields {
    /// The values of the fields called `name`, in order.
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a;
}

impl Fields for HeaderMap {
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name).iter().map(|v| v.as_bytes())
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes (more than 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("both Transfer-Encoding and Content-Length are set")]
    LengthAndChunked,
    #[error("Transfer-Encoding must end in chunked (got {0:?})")]
    NotChunked(String),
    #[error("Transfer-Encoding is not allowed in HTTP/1.0")]
    ChunkedInHttp10,
    #[error("Content-Length is not a single decimal number")]
    BadContentLength,
    #[error("malformed chunked body: {0}")]
    BadChunk(&'static str),
}

/// The transfer codings named by `Transfer-Encoding`, in order.
fn transfer_codings(headers: &impl Fields) -> Option<Vec<String>> {
    let mut codings = Vec::new();
    let mut seen = false;
    for v in headers.values(&header::TRANSFER_ENCODING) {
        seen = true;
        let v = String::from_utf8_lossy(v);
        codings.extend(
            v.split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty()),
        );
    }
    seen.then_some(codings)
}

/// `Content-Length`, when present: every value (repeated headers or a
/// list) must be the same decimal number.
fn content_length(headers: &impl Fields) -> Result<Option<u64>, FramingError> {
    let mut length = None;
    for v in headers.values(&header::CONTENT_LENGTH) {
        let v = std::str::from_utf8(v).map_err(|_| FramingError::BadContentLength)?;
        for part in v.split(',') {
            let part = part.trim();
            if part.is_empty() || part.len() > 19 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FramingError::BadContentLength);
            }
            let n: u64 = part.parse().map_err(|_| FramingError::BadContentLength)?;
            match length {
                Some(l) if l != n => return Err(FramingError::BadContentLength),
                _ => length = Some(n),
            }
        }
    }
    Ok(length)
}

/// A request's body framing (RFC 9112 §6.3, rules 3–6), strictly.
pub fn request(http10: bool, headers: &impl Fields) -> Result<Framing, FramingError> {
    let length = content_length(headers)?;
    match transfer_codings(headers) {
        Some(_) if http10 => Err(FramingError::ChunkedInHttp10),
        Some(_) if length.is_some() => Err(FramingError::LengthAndChunked),
        Some(codings) => match codings.last().map(String::as_str) {
            // `chunked` must come last and only once.
            Some("chunked") if codings.iter().filter(|c| *c == "chunked").count() == 1 => {
                Ok(Framing::Chunked)
            }
            _ => Err(FramingError::NotChunked(codings.join(", "))),
        },
        None => Ok(match length {
            None | Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        }),
    }
}

/// A response's body framing (RFC 9112 §6.3, rules 1–7) for a request
/// with `method`.
pub fn response(
    method: &Method,
    status: StatusCode,
    headers: &impl Fields,
) -> Result<Framing, FramingError> {
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if let Some(codings) = transfer_codings(headers) {
        // Transfer-Encoding overrides Content-Length; a response whose
        // final coding is not chunked runs until the connection closes.
        return Ok(if codings.last().map(String::as_str) == Some("chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    Ok(match content_length(headers)? {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

/// Longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size,
    /// After the size: extensions up to CR.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer line, or of the final CRLF.
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// Walks a chunked body as its bytes arrive, so the relay knows where it
/// ends and which bytes are payload. Constant memory whatever the input.
#[derive(Debug)]
pub struct Chunked {
    state: State,
    /// Size of the current chunk, then what is left of it.
    remaining: u64,
    digits: usize,
    line: usize,
    trailers: usize,
    /// Payload bytes seen so far.
    pub payload: u64,
}

/// How far [`Chunked::advance`] got in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the buffer that belong to the body.
    pub consumed: usize,
    /// The body's last byte was among them.
    pub done: bool,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size,
            remaining: 0,
            digits: 0,
            line: 0,
            trailers: 0,
            payload: 0,
        }
    }
}

impl Chunked {
    /// Consumes the body bytes at the start of `buf` and calls `data` with
    /// the range of every piece of chunk payload among them. Stops at the
    /// end of the body: bytes after it are not consumed.
    pub fn advance(
        &mut self,
        buf: &[u8],
        mut data: impl FnMut(Range<usize>),
    ) -> Result<Progress, FramingError> {
        let bad = FramingError::BadChunk;
        let mut i = 0;
        while i < buf.len() && self.state != State::Done {
            let b = buf[i];
            match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.digits += 1;
                        if self.digits > 16 {
                            return Err(bad("chunk size too large"));
                        }
                        self.remaining = self.remaining * 16 + d;
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => {
                        self.state = State::Extension;
                        self.line = self.digits + 1;
                    }
                    b'\r' if self.digits > 0 => self.state = State::SizeLf,
                    _ => return Err(bad("expected a hex chunk size")),
                },
                State::Extension => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => return Err(bad("bare LF in a chunk extension")),
                    _ => {
                        self.line += 1;
                        if self.line > MAX_CHUNK_LINE {
                            return Err(bad("chunk extension too long"));
                        }
                    }
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(bad("expected LF after the chunk size"));
                    }
                    self.digits = 0;
                    self.state = if self.remaining == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let take =
                        (buf.len() - i).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    data(i..i + take);
                    self.remaining -= take as u64;
                    self.payload += take as u64;
                    i += take;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(bad("chunk longer than its size"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(bad("expected LF after chunk data"));
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => {
                    self.state = if b == b'\r' {
                        State::EndLf
                    } else {
                        self.count_trailer()?;
                        State::Trailer
                    };
                }
                State::Trailer => match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\n' => return Err(bad("bare LF in a trailer")),
                    _ => self.count_trailer()?,
                },
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(bad("expected LF after a trailer"));
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(bad("expected LF at the end of the body"));
                    }
                    self.state = State::Done;
                }
                State::Done => break,
            }
            i += 1;
        }
        Ok(Progress {
            consumed: i,
            done: self.state == State::Done,
        })
    }

    fn count_trailer(&mut self) -> Result<(), FramingError> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(FramingError::BadChunk("trailers too large"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    type Case<'a> = (&'a [(&'a str, &'a str)], Result<Framing, FramingError>);

    #[test]
    fn request_framing_follows_rfc_9112() {
        let cases: &[Case] = &[
            (&[], Ok(Framing::Empty)),
            (&[("content-length", "0")], Ok(Framing::Empty)),
            (&[("content-length", "12")], Ok(Framing::Length(12))),
            (
                &[("content-length", "12"), ("content-length", "12")],
                Ok(Framing::Length(12)),
            ),
            (&[("content-length", "12, 12")], Ok(Framing::Length(12))),
            (
                &[("content-length", "12"), ("content-length", "13")],
                Err(FramingError::BadContentLength),
            ),
            (
                &[("content-length", "+12")],
                Err(FramingError::BadContentLength),
            ),
            (
                &[("content-length", "0x10")],
                Err(FramingError::BadContentLength),
            ),
            (
                &[("content-length", "")],
                Err(FramingError::BadContentLength),
            ),
            (
                &[("content-length", "99999999999999999999")],
                Err(FramingError::BadContentLength),
            ),
            (&[("transfer-encoding", "chunked")], Ok(Framing::Chunked)),
            (&[("transfer-encoding", "Chunked")], Ok(Framing::Chunked)),
            (
                &[("transfer-encoding", "gzip, chunked")],
                Ok(Framing::Chunked),
            ),
            (
                &[
                    ("transfer-encoding", "gzip"),
                    ("transfer-encoding", "chunked"),
                ],
                Ok(Framing::Chunked),
            ),
            (
                &[("transfer-encoding", "chunked, gzip")],
                Err(FramingError::NotChunked("chunked, gzip".into())),
            ),
            (
                &[("transfer-encoding", "chunked, chunked")],
                Err(FramingError::NotChunked("chunked, chunked".into())),
            ),
            (
                &[("transfer-encoding", "identity")],
                Err(FramingError::NotChunked("identity".into())),
            ),
            (
                &[("transfer-encoding", "chunked"), ("content-length", "5")],
                Err(FramingError::LengthAndChunked),
            ),
        ];
        for (h, want) in cases {
            assert_eq!(&request(false, &headers(h)), want, "{h:?}");
        }
        assert_eq!(
            request(true, &headers(&[("transfer-encoding", "chunked")])),
            Err(FramingError::ChunkedInHttp10)
        );
        assert_eq!(
            request(true, &headers(&[("content-length", "3")])),
            Ok(Framing::Length(3))
        );
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let ok = StatusCode::OK;
        let get = Method::GET;
        let cl = headers(&[("content-length", "5")]);
        assert_eq!(response(&get, ok, &cl), Ok(Framing::Length(5)));
        assert_eq!(response(&Method::HEAD, ok, &cl), Ok(Framing::Empty));
        for s in [100, 101, 103, 204, 304] {
            let s = StatusCode::from_u16(s).unwrap();
            assert_eq!(response(&get, s, &cl), Ok(Framing::Empty), "{s}");
        }
        assert_eq!(response(&get, ok, &headers(&[])), Ok(Framing::UntilClose));
        assert_eq!(
            response(&get, ok, &headers(&[("content-length", "0")])),
            Ok(Framing::Empty)
        );
        assert_eq!(
            response(
                &get,
                ok,
                &headers(&[("transfer-encoding", "chunked"), ("content-length", "5")])
            ),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            response(&get, ok, &headers(&[("transfer-encoding", "gzip")])),
            Ok(Framing::UntilClose)
        );
        assert_eq!(
            response(&get, ok, &headers(&[("content-length", "5, 6")])),
            Err(FramingError::BadContentLength)
        );
    }

    /// Feeds `input` in pieces of `step` bytes (as reads would deliver it);
    /// returns the payload, the bytes consumed, and whether the body ended.
    fn walk(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), FramingError> {
        let mut c = Chunked::default();
        let mut payload = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let end = (at + step).min(input.len());
            let piece = &input[at..end];
            let p = c.advance(piece, |r| payload.extend_from_slice(&piece[r]))?;
            at += p.consumed;
            if p.done {
                return Ok((payload, at, true));
            }
            assert_eq!(
                p.consumed,
                piece.len(),
                "an unfinished body consumes all it is given"
            );
        }
        Ok((payload, at, false))
    }

    #[test]
    fn chunked_bodies_are_walked_in_any_split() {
        let body =
            b"5\r\nhello\r\n6;ext=1\r\n world\r\nA \r\n0123456789\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        for step in 1..=body.len() {
            let (payload, consumed, done) = walk(body, step).unwrap();
            assert_eq!(payload, b"hello world0123456789", "step {step}");
            assert_eq!(
                consumed,
                body.len() - 4,
                "step {step}: the next message is left"
            );
            assert!(done);
        }
        assert_eq!(walk(b"0\r\n\r\n", 1).unwrap(), (vec![], 5, true));
        assert_eq!(walk(b"3\r\nabc", 2).unwrap(), (b"abc".to_vec(), 6, false));
        let mut c = Chunked::default();
        c.advance(b"3\r\nabc\r\n0\r\n\r\n", |_| {}).unwrap();
        assert_eq!(c.payload, 3);
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n",
            b"3\r\nabcd\r\n",
            b"3\r\nabc\n",
            b"11111111111111111\r\n",
            b"0\r\nx-t: 1\n",
            b"0\r\n\rX",
            b";ext\r\n",
            b"-1\r\n",
        ] {
            assert!(walk(bad, 1).is_err(), "{:?}", String::from_utf8_lossy(bad));
            assert!(
                walk(bad, bad.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_ext = [b"1;".as_slice(), &[b'a'; MAX_CHUNK_LINE], b"\r\n"].concat();
        assert_eq!(
            walk(&long_ext, 64),
            Err(FramingError::BadChunk("chunk extension too long"))
        );
        let long_trailer = [b"0\r\n".as_slice(), &[b'a'; MAX_TRAILERS + 1]].concat();
        assert_eq!(
            walk(&long_trailer, 100),
            Err(FramingError::BadChunk("trailers too large"))
        );
        // A 16-digit size is accepted (and then waits for its data).
        assert!(walk(b"ffffffffffffffff\r\n", 3).is_ok());
    }
}
