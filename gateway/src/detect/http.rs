//! Cleartext HTTP: an HTTP/1.x request line, or the HTTP/2 prior-knowledge
//! preface (which is built to look like one).

use super::{Classification, Protocol};

/// RFC 9113 §3.4.
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longer than any registered method ("VERSION-CONTROL", "BASELINE-CONTROL"
/// are 15 and 16) with room for custom ones like "M-SEARCH".
const MAX_METHOD: usize = 20;
const VERSION_PREFIX: &[u8] = b"HTTP/1.";

/// Decides from the bytes so far; `buf` does not start a TLS record.
pub(super) fn classify(buf: &[u8]) -> Classification {
    // The preface is checked first: as HTTP/1 its "PRI " would be a method
    // followed by a space, which would decide too early. Only once the preface
    // is contradicted are the bytes judged as an HTTP/1 request (where the
    // "HTTP/2.0" of a damaged preface then makes them Opaque).
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Classification::Done(Protocol::Http2)
        } else {
            Classification::NeedMore
        };
    }
    http1(buf)
}

fn is_method_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'-'
}

/// Done as soon as a method and its space are in, unless the rest of the
/// bytes already contradict an HTTP/1 request line: waiting for the whole
/// line would only add latency, and a client that lies after a good start
/// is the upstream's to refuse.
fn http1(buf: &[u8]) -> Classification {
    let probe = &buf[..buf.len().min(MAX_METHOD + 1)];
    let Some(method_len) = probe.iter().position(|&b| !is_method_byte(b)) else {
        return if probe.len() > MAX_METHOD {
            Classification::Done(Protocol::Opaque)
        } else {
            Classification::NeedMore
        };
    };
    let (method, rest) = buf.split_at(method_len);
    let Some((&b' ', rest)) = rest.split_first() else {
        return Classification::Done(Protocol::Opaque);
    };
    if method.is_empty() || !line_consistent(rest) {
        return Classification::Done(Protocol::Opaque);
    }
    // Method bytes are ASCII by construction.
    let method = method.iter().map(|&b| char::from(b)).collect();
    Classification::Done(Protocol::Http1 { method })
}

/// Whether `rest` (what follows "METHOD ") can begin "target HTTP/1.x\r\n".
/// The target is one or more visible bytes; bytes >= 0x80 are allowed, some
/// clients send raw UTF-8 paths.
fn line_consistent(rest: &[u8]) -> bool {
    let is_target_byte = |b: u8| b > b' ' && b != 0x7f;
    let target_len = rest
        .iter()
        .position(|&b| !is_target_byte(b))
        .unwrap_or(rest.len());
    let Some((&sep, version)) = rest[target_len..].split_first() else {
        return true;
    };
    // A CR or LF here would be HTTP/0.9 ("GET /\r\n"), not HTTP/1.x.
    if target_len == 0 || sep != b' ' {
        return false;
    }
    let n = version.len().min(VERSION_PREFIX.len());
    if version[..n] != VERSION_PREFIX[..n] {
        return false;
    }
    match version.get(VERSION_PREFIX.len()..).unwrap_or_default() {
        [] => true,
        [minor] => minor.is_ascii_digit(),
        [minor, eol, ..] => minor.is_ascii_digit() && matches!(eol, b'\r' | b'\n'),
    }
}
