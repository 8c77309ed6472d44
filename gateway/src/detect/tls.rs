//! The TLS ClientHello: enough of it to route a connection (SNI, ALPN), read
//! strictly enough that garbage is not taken for TLS.
//!
//! The hello is read in place, across as many handshake records as it spans,
//! by a [`Reader`] that steps over record headers as it meets them; nothing is
//! copied until a verdict is returned, so a `NeedMore` costs no allocation.
//! Every length is checked against the structure that contains it before it
//! is used: a lying length is `Malformed` as soon as it is read, never a wait
//! for bytes that cannot belong to the hello.

use super::{Classification, Protocol};

/// TLS record content type of a handshake record.
pub(super) const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const NAME_TYPE_HOST_NAME: u8 = 0;

const RECORD_HEADER: usize = 5;
/// RFC 8446 §5.1: a plaintext fragment is at most 2^14 bytes.
const MAX_FRAGMENT: usize = 1 << 14;
/// The smallest body that holds the fixed fields: version, random, an empty
/// session id, one cipher suite, one compression method.
const MIN_HELLO: usize = 2 + 32 + 1 + (2 + 2) + (1 + 1);
/// The largest body whose fields all fit their own length prefixes; a
/// handshake length beyond it is a lie, not a long wait.
const MAX_HELLO: usize = 2 + 32 + (1 + 32) + (2 + 0xfffe) + (1 + 0xff) + (2 + 0xffff);
/// RFC 1035 §2.3.4, in its textual form.
const MAX_HOST_NAME: usize = 253;

/// Why reading stopped short of a complete hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The bytes so far are a consistent beginning; more are needed.
    Incomplete,
    /// The bytes so far cannot begin a ClientHello.
    Malformed,
}

type Step<T> = Result<T, Stop>;

/// Reads the handshake byte stream carried by consecutive handshake records
/// of `buf`, without copying it. `Copy`, so a position can be kept and read
/// again later (that is how SNI and ALPN are extracted after validation).
#[derive(Debug, Clone, Copy)]
struct Reader<'a> {
    buf: &'a [u8],
    /// Next unread byte of `buf`; never beyond `buf.len()`.
    pos: usize,
    /// Bytes of the current record's fragment not read yet.
    in_record: usize,
    /// Handshake bytes read so far: the coordinate nested lengths live in.
    offset: usize,
    /// Offset the innermost open structure ends at; reading past it is
    /// `Malformed`, whatever `buf` holds.
    end: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            in_record: 0,
            offset: 0,
            end: usize::MAX,
        }
    }

    /// Steps over a record header, judging each byte as soon as it is there so
    /// garbage is rejected before a whole header arrives.
    fn next_record(&mut self) -> Step<()> {
        let header = self.buf.get(self.pos..).unwrap_or_default();
        let content_type_ok = header.first().is_none_or(|&t| t == CONTENT_HANDSHAKE);
        // 0x0300 (SSL 3.0) to 0x0304; TLS 1.3 clients put 0x0301 or 0x0303 here.
        let major_ok = header.get(1).is_none_or(|&v| v == 3);
        let minor_ok = header.get(2).is_none_or(|&v| v <= 4);
        if !(content_type_ok && major_ok && minor_ok) {
            return Err(Stop::Malformed);
        }
        let &[_, _, _, hi, lo, ..] = header else {
            return Err(Stop::Incomplete);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        // RFC 8446 §5.1 forbids zero-length handshake fragments.
        if len == 0 || len > MAX_FRAGMENT {
            return Err(Stop::Malformed);
        }
        self.pos += RECORD_HEADER;
        self.in_record = len;
        Ok(())
    }

    /// Checks that `n` more bytes fit the innermost open structure.
    fn fits(&self, n: usize) -> Step<()> {
        if n > self.end.saturating_sub(self.offset) {
            Err(Stop::Malformed)
        } else {
            Ok(())
        }
    }

    /// Bytes of the current fragment that can be read now, stepping into the
    /// next record if the current one is used up. Never zero on success.
    fn available(&mut self) -> Step<usize> {
        if self.in_record == 0 {
            self.next_record()?;
        }
        let in_buf = self.buf.len().saturating_sub(self.pos);
        match self.in_record.min(in_buf) {
            0 => Err(Stop::Incomplete),
            n => Ok(n),
        }
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
        self.in_record -= n;
        self.offset += n;
    }

    fn u8(&mut self) -> Step<u8> {
        self.fits(1)?;
        self.available()?;
        let b = *self.buf.get(self.pos).ok_or(Stop::Incomplete)?;
        self.advance(1);
        Ok(b)
    }

    fn u16(&mut self) -> Step<u16> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn u24(&mut self) -> Step<usize> {
        let [a, b, c] = [self.u8()?, self.u8()?, self.u8()?];
        Ok((usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c))
    }

    fn skip(&mut self, mut n: usize) -> Step<()> {
        self.fits(n)?;
        while n > 0 {
            let step = self.available()?.min(n);
            self.advance(step);
            n -= step;
        }
        Ok(())
    }

    /// Narrows reading to the next `len` bytes. Returns the outer end, for
    /// [`Reader::close`].
    fn open(&mut self, len: usize) -> Step<usize> {
        self.fits(len)?;
        let outer = self.end;
        self.end = self.offset + len;
        Ok(outer)
    }

    /// Leaves the structure opened by [`Reader::open`], which must have been
    /// read exactly to its end: trailing bytes inside a length are a lie too.
    fn close(&mut self, outer: usize) -> Step<()> {
        if self.offset != self.end {
            return Err(Stop::Malformed);
        }
        self.end = outer;
        Ok(())
    }

    fn at_end(&self) -> bool {
        self.offset >= self.end
    }
}

/// What the hello said, located but not copied out.
#[derive(Debug, Default)]
struct Found<'a> {
    /// The handshake header named a ClientHello of a plausible length: the
    /// connection is TLS even if the hello is cut short.
    started: bool,
    /// Narrowed to the host_name's bytes, which are all in the buffer.
    host_name: Option<Reader<'a>>,
    /// Narrowed to the ALPN protocol list, which is all in the buffer.
    alpn: Option<Reader<'a>>,
}

impl Found<'_> {
    fn protocol(&self) -> Protocol {
        Protocol::Tls {
            sni: self.host_name.and_then(host_name),
            alpn: self.alpn.map(alpn).unwrap_or_default(),
        }
    }
}

/// Decides from the bytes so far; `buf` starts with a handshake record type.
pub(super) fn classify(buf: &[u8]) -> Classification {
    let mut found = Found::default();
    match parse(buf, &mut found) {
        Ok(()) => Classification::Done(found.protocol()),
        Err(Stop::Incomplete) => Classification::NeedMore,
        Err(Stop::Malformed) => Classification::Done(Protocol::Opaque),
    }
}

/// The verdict on a hello that will not be seen whole (the caller's buffer is
/// full): TLS with whatever SNI and ALPN were read completely, if the
/// handshake header was reached; otherwise `Opaque`.
pub(super) fn classify_cut_short(buf: &[u8]) -> Protocol {
    let mut found = Found::default();
    match parse(buf, &mut found) {
        Ok(()) => found.protocol(),
        Err(Stop::Incomplete) if found.started => found.protocol(),
        Err(_) => Protocol::Opaque,
    }
}

fn parse<'a>(buf: &'a [u8], found: &mut Found<'a>) -> Step<()> {
    let mut r = Reader::new(buf);
    if r.u8()? != HANDSHAKE_CLIENT_HELLO {
        return Err(Stop::Malformed);
    }
    let len = r.u24()?;
    if !(MIN_HELLO..=MAX_HELLO).contains(&len) {
        return Err(Stop::Malformed);
    }
    r.open(len)?;
    found.started = true;

    // legacy_version: 0x0300..=0x0304, as in the record header.
    if r.u8()? != 3 || r.u8()? > 4 {
        return Err(Stop::Malformed);
    }
    r.skip(32)?; // random
    let session_id = usize::from(r.u8()?);
    if session_id > 32 {
        return Err(Stop::Malformed);
    }
    r.skip(session_id)?;
    let suites = usize::from(r.u16()?);
    if suites < 2 || suites % 2 != 0 {
        return Err(Stop::Malformed);
    }
    r.skip(suites)?;
    let compression = usize::from(r.u8()?);
    if compression == 0 {
        return Err(Stop::Malformed);
    }
    r.skip(compression)?;
    if r.at_end() {
        // A hello without extensions (TLS 1.0-era clients) is well formed.
        return Ok(());
    }

    let extensions = usize::from(r.u16()?);
    if extensions != r.end - r.offset {
        return Err(Stop::Malformed);
    }
    // RFC 8446 §4.2: no extension type twice. A second server_name could
    // otherwise show a policy one name and the server another.
    let (mut seen_sni, mut seen_alpn) = (false, false);
    while !r.at_end() {
        let kind = r.u16()?;
        let len = usize::from(r.u16()?);
        let outer = r.open(len)?;
        match kind {
            EXT_SERVER_NAME if seen_sni => return Err(Stop::Malformed),
            EXT_SERVER_NAME => {
                seen_sni = true;
                found.host_name = server_name(&mut r)?;
            }
            EXT_ALPN if seen_alpn => return Err(Stop::Malformed),
            EXT_ALPN => {
                seen_alpn = true;
                found.alpn = Some(alpn_list(&mut r)?);
            }
            _ => r.skip(len)?,
        }
        r.close(outer)?;
    }
    Ok(())
}

/// RFC 6066 §3 ServerNameList. Returns the host_name entry, if any.
fn server_name<'a>(r: &mut Reader<'a>) -> Step<Option<Reader<'a>>> {
    let len = usize::from(r.u16()?);
    let list = r.open(len)?;
    let mut host = None;
    while !r.at_end() {
        let kind = r.u8()?;
        let len = usize::from(r.u16()?);
        let entry = r.open(len)?;
        let at = *r;
        r.skip(len)?;
        r.close(entry)?;
        if kind == NAME_TYPE_HOST_NAME {
            // "MUST NOT contain more than one name of the same name_type."
            if host.is_some() {
                return Err(Stop::Malformed);
            }
            host = Some(at);
        }
    }
    r.close(list)?;
    Ok(host)
}

/// RFC 7301 §3.1 ProtocolNameList: non-empty, of non-empty names.
fn alpn_list<'a>(r: &mut Reader<'a>) -> Step<Reader<'a>> {
    let len = usize::from(r.u16()?);
    if len == 0 {
        return Err(Stop::Malformed);
    }
    let list = r.open(len)?;
    let at = *r;
    while !r.at_end() {
        let name = usize::from(r.u8()?);
        if name == 0 {
            return Err(Stop::Malformed);
        }
        r.skip(name)?;
    }
    r.close(list)?;
    Ok(at)
}

/// The host name, lower-cased, if it looks like one: 1..=253 bytes of
/// dot-separated non-empty labels of ASCII letters, digits, '-' and '_'
/// (seen in real service names). Anything else, including a trailing dot
/// (RFC 6066 forbids it) or an IP literal's ':' is no SNI at all.
fn host_name(mut r: Reader<'_>) -> Option<String> {
    let len = r.end - r.offset;
    if !(1..=MAX_HOST_NAME).contains(&len) {
        return None;
    }
    let mut name = String::with_capacity(len);
    let mut prev = b'.';
    while !r.at_end() {
        let b = r.u8().ok()?;
        let ok = match b {
            b'.' => prev != b'.',
            b'-' | b'_' => true,
            _ => b.is_ascii_alphanumeric(),
        };
        if !ok {
            return None;
        }
        name.push(char::from(b.to_ascii_lowercase()));
        prev = b;
    }
    (prev != b'.').then_some(name)
}

/// The protocol names in order. They are opaque bytes on the wire; a name
/// that is not UTF-8 is kept, lossily, so the list keeps its length.
fn alpn(mut r: Reader<'_>) -> Vec<String> {
    let mut names = Vec::new();
    while !r.at_end() {
        let Ok(len) = r.u8() else { break };
        let mut name = Vec::with_capacity(usize::from(len));
        for _ in 0..len {
            let Ok(b) = r.u8() else { break };
            name.push(b);
        }
        names.push(
            String::from_utf8(name)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        );
    }
    names
}
