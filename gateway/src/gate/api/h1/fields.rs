//! Where a head's header fields lie in its buffer, and which of them the
//! relay reads itself (framing, keep-alive, hop-by-hop, `Expect`): found
//! once, in the pass that records where the fields lie, so later steps
//! test a bit instead of comparing names or hashing them into a map again.
use bytes::Bytes;
use hyper::{
    header::{self, HeaderName, HeaderValue},
    HeaderMap,
};

use super::framing::Fields;

/// `HeaderName`'s longest name.
pub(super) const MAX_FIELD_NAME: usize = (1 << 16) - 1;

/// A field the relay reads itself, or `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Other,
    Connection,
    ContentLength,
    TransferEncoding,
    Expect,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    ProxyAuthorization,
}

impl Kind {
    /// The kind of a field name, in any case.
    pub(super) fn of(name: &[u8]) -> Kind {
        // By length, then one comparison: most names are none of these,
        // and then no byte is compared. Two share a length: their first
        // letters differ.
        let first = name.first().map_or(0, |b| b | 0x20);
        let (known, kind): (&[u8], Kind) = match name.len() {
            2 => (b"te", Kind::Te),
            6 => (b"expect", Kind::Expect),
            7 if first == b't' => (b"trailer", Kind::Trailer),
            7 => (b"upgrade", Kind::Upgrade),
            10 if first == b'c' => (b"connection", Kind::Connection),
            10 => (b"keep-alive", Kind::KeepAlive),
            14 => (b"content-length", Kind::ContentLength),
            16 => (b"proxy-connection", Kind::ProxyConnection),
            17 => (b"transfer-encoding", Kind::TransferEncoding),
            19 => (b"proxy-authorization", Kind::ProxyAuthorization),
            _ => return Kind::Other,
        };
        if eq_lower(name, known) {
            kind
        } else {
            Kind::Other
        }
    }

    /// The kind of a `HeaderName`: standard names compare as what they
    /// are in `http` (no byte is read).
    pub(super) fn of_header(name: &HeaderName) -> Kind {
        const STANDARD: [(HeaderName, Kind); 8] = [
            (header::CONNECTION, Kind::Connection),
            (header::CONTENT_LENGTH, Kind::ContentLength),
            (header::TRANSFER_ENCODING, Kind::TransferEncoding),
            (header::EXPECT, Kind::Expect),
            (header::TE, Kind::Te),
            (header::TRAILER, Kind::Trailer),
            (header::UPGRADE, Kind::Upgrade),
            (header::PROXY_AUTHORIZATION, Kind::ProxyAuthorization),
        ];
        match STANDARD.iter().find(|(n, _)| n == name) {
            Some(&(_, kind)) => kind,
            None => Kind::of(name.as_str().as_bytes()),
        }
    }

    /// One of the fixed hop-by-hop fields (`super::super::HOP_BY_HOP`).
    pub(super) fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Kind::Connection
                | Kind::KeepAlive
                | Kind::ProxyConnection
                | Kind::Te
                | Kind::Trailer
                | Kind::Upgrade
                | Kind::ProxyAuthorization
        )
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// Whether `name` is `lower` (as long, in lower case) in any case: eight
/// bytes at a time, as every field name of every head is classified.
fn eq_lower(name: &[u8], lower: &[u8]) -> bool {
    let n = name.len();
    if n != lower.len() {
        return false;
    }
    if n < 8 {
        return name.eq_ignore_ascii_case(lower);
    }
    let word = |s: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    };
    // Words at 0, 8, …, and the last eight bytes (overlapping the one
    // before when the length is not a multiple of eight).
    let mut at = 0;
    loop {
        let at_ = at.min(n - 8);
        if to_lower(word(name, at_)) != word(lower, at_) {
            return false;
        }
        if at_ + 8 == n {
            return true;
        }
        at += 8;
    }
}

/// Eight bytes with their ASCII capitals made small; other bytes as
/// they are.
fn to_lower(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // Seven low bits of each byte: adding below 0x80 carries into no
    // other byte.
    let low7 = x & (0x7f * ONES);
    // Each byte's high bit: at least `A`; past `Z`; a high byte.
    let from_a = low7 + (0x80 - u64::from(b'A')) * ONES;
    let past_z = low7 + (0x80 - u64::from(b'Z') - 1) * ONES;
    let capital = from_a & !past_z & !x & (0x80 * ONES);
    x | (capital >> 2)
}

/// The kinds of field a head holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Present(u16);

impl Present {
    pub(super) fn has(self, kind: Kind) -> bool {
        kind == Kind::Other || self.0 & kind.bit() != 0
    }
}

/// One field: its name's and value's offsets in the head, and its kind.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    name: (u32, u32),
    value: (u32, u32),
    pub(super) kind: Kind,
}

/// Where a head's fields lie in its buffer, so the map can share the
/// buffer instead of copying each value, and a head relayed as it came
/// can be written from its bytes.
pub(super) struct Spans {
    pub(super) fields: Vec<Span>,
    pub(super) present: Present,
}

impl Spans {
    /// The spans of the fields httparse read from `base`; `None` when a
    /// name is longer than `HeaderName` takes. httparse has checked every
    /// byte already, as `http` checks them (its name bytes are tokens, its
    /// values tab, space, visible and high bytes, as `HeaderValue` wants:
    /// `fields_httparse_takes_are_ones_http_takes`).
    pub(super) fn of(base: &[u8], headers: &[httparse::Header<'_>]) -> Option<Spans> {
        let at = |s: &[u8]| (s.as_ptr() as usize - base.as_ptr() as usize) as u32;
        let mut present = Present::default();
        let mut fields = Vec::with_capacity(headers.len());
        for h in headers {
            let name = h.name.as_bytes();
            if name.len() > MAX_FIELD_NAME {
                return None;
            }
            let kind = Kind::of(name);
            present.0 |= kind.bit();
            let (n, v) = (at(name), at(h.value));
            fields.push(Span {
                name: (n, n + name.len() as u32),
                value: (v, v + h.value.len() as u32),
                kind,
            });
        }
        Some(Spans { fields, present })
    }

    /// A field's name and value in `head`.
    pub(super) fn field<'a>(head: &'a [u8], f: &Span) -> (&'a [u8], &'a [u8]) {
        (
            &head[f.name.0 as usize..f.name.1 as usize],
            &head[f.value.0 as usize..f.value.1 as usize],
        )
    }

    /// Where a field's line starts and ends in `head`, when it is written
    /// as the relay would write it (`name: value\r\n`), so it can be
    /// copied as it is.
    pub(super) fn plain_line(head: &[u8], f: &Span) -> Option<(usize, usize)> {
        let (n1, v0, v1) = (f.name.1 as usize, f.value.0 as usize, f.value.1 as usize);
        (v0 == n1 + 2 && head.get(n1..v0)? == b": " && head.get(v1..v1 + 2)? == b"\r\n")
            .then_some((f.name.0 as usize, v1 + 2))
    }

    /// The header map, its values slices of `head`.
    pub(super) fn map(&self, head: &Bytes) -> Option<HeaderMap> {
        self.map_of(head, |_| true)
    }

    /// The header map of the fields whose names `keep` takes (names as
    /// sent, in any case), its values slices of `head`.
    pub(super) fn map_of(&self, head: &Bytes, keep: impl Fn(&[u8]) -> bool) -> Option<HeaderMap> {
        // Room for the fields the gateway adds (`traceparent` to a request,
        // `x-trigate-cache` to a response): growing the table then would
        // rehash it and move its entries, which showed per request.
        const ADDED: usize = 2;
        let mut map = HeaderMap::with_capacity(self.fields.len() + ADDED);
        for f in &self.fields {
            let name = &head[f.name.0 as usize..f.name.1 as usize];
            if !keep(name) {
                continue;
            }
            let name = HeaderName::from_bytes(name).ok()?;
            let value =
                HeaderValue::from_maybe_shared(head.slice(f.value.0 as usize..f.value.1 as usize))
                    .ok()?;
            map.append(name, value);
        }
        Some(map)
    }

    /// The values of the fields called `name` in `head`, in order: by kind
    /// for a field the relay reads (none at all when the head has no such
    /// field), by name for any other.
    pub(super) fn values<'a>(
        &'a self,
        head: &'a [u8],
        name: &'a HeaderName,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        let kind = Kind::of_header(name);
        let name = name.as_str().as_bytes();
        let fields = if self.present.has(kind) {
            &self.fields[..]
        } else {
            &[]
        };
        fields
            .iter()
            .filter(move |f| match kind {
                Kind::Other => Spans::field(head, f).0.eq_ignore_ascii_case(name),
                k => f.kind == k,
            })
            .map(move |f| Spans::field(head, f).1)
    }
}

/// A request's header map, with the kinds of field its head held when it
/// was parsed: a field the relay reads that the head did not have is not
/// looked up (each lookup hashes the name). Only valid until the map is
/// changed.
pub(super) struct Parsed<'a> {
    pub(super) headers: &'a HeaderMap,
    pub(super) present: Present,
}

impl Fields for Parsed<'_> {
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        let all = self
            .present
            .has(Kind::of_header(name))
            .then(|| self.headers.get_all(name));
        all.into_iter().flatten().map(HeaderValue::as_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::api::HOP_BY_HOP;

    const KNOWN: [(&str, Kind); 10] = [
        ("connection", Kind::Connection),
        ("content-length", Kind::ContentLength),
        ("transfer-encoding", Kind::TransferEncoding),
        ("expect", Kind::Expect),
        ("keep-alive", Kind::KeepAlive),
        ("proxy-connection", Kind::ProxyConnection),
        ("te", Kind::Te),
        ("trailer", Kind::Trailer),
        ("upgrade", Kind::Upgrade),
        ("proxy-authorization", Kind::ProxyAuthorization),
    ];

    #[test]
    fn kinds_are_found_in_any_case_and_only_for_their_names() {
        for (name, kind) in KNOWN {
            assert_eq!(Kind::of(name.as_bytes()), kind, "{name}");
            assert_eq!(Kind::of(name.to_ascii_uppercase().as_bytes()), kind);
            let mixed: String = name
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            assert_eq!(Kind::of(mixed.as_bytes()), kind, "{mixed}");
            // Same length, one byte off: not it.
            let mut off = name.as_bytes().to_vec();
            off[0] = b'x';
            assert_eq!(Kind::of(&off), Kind::Other, "{off:?}");
            // A prefix or a longer name: not it.
            assert_eq!(Kind::of(&name.as_bytes()[1..]), Kind::Other);
            assert_eq!(Kind::of(format!("{name}s").as_bytes()), Kind::Other);
        }
        for other in ["", "host", "x-te", "content-type", "date", "server", "tes"] {
            assert_eq!(Kind::of(other.as_bytes()), Kind::Other, "{other}");
        }
        // Each kind has its own bit.
        let bits: std::collections::HashSet<u16> = KNOWN.iter().map(|(_, k)| k.bit()).collect();
        assert_eq!(bits.len(), KNOWN.len());
        assert!(!bits.contains(&Kind::Other.bit()));
    }

    #[test]
    fn kinds_of_header_names_are_the_kinds_of_their_bytes() {
        for (name, kind) in KNOWN {
            assert_eq!(Kind::of_header(&HeaderName::from_static(name)), kind);
        }
        for other in ["host", "x-te", "content-type", "x-connection"] {
            assert_eq!(
                Kind::of_header(&HeaderName::from_static(other)),
                Kind::Other
            );
        }
    }

    #[test]
    fn words_are_lower_cased_as_bytes_are() {
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut bytes = *b"aZ-09\xffq@";
                bytes[at] = b;
                let lowered = to_lower(u64::from_le_bytes(bytes)).to_le_bytes();
                assert_eq!(
                    lowered.to_vec(),
                    bytes.to_ascii_lowercase(),
                    "{b:#04x} at {at}"
                );
            }
        }
    }

    #[test]
    fn lower_case_comparison_is_ascii_case_insensitive_equality() {
        for (name, _) in KNOWN {
            let lower = name.as_bytes();
            assert!(eq_lower(lower, lower));
            assert!(eq_lower(&lower.to_ascii_uppercase(), lower));
            for at in 0..lower.len() {
                for b in 0..=255u8 {
                    let mut other = lower.to_vec();
                    other[at] = b;
                    assert_eq!(
                        eq_lower(&other, lower),
                        other.eq_ignore_ascii_case(lower),
                        "{other:?}"
                    );
                }
            }
            assert!(!eq_lower(&lower[1..], lower));
        }
    }

    #[test]
    fn hop_by_hop_kinds_are_the_hop_by_hop_names() {
        for (name, kind) in KNOWN {
            assert_eq!(kind.is_hop_by_hop(), HOP_BY_HOP.contains(&name), "{name}");
        }
        for name in HOP_BY_HOP {
            assert!(Kind::of(name.as_bytes()).is_hop_by_hop(), "{name}");
        }
        assert!(!Kind::Other.is_hop_by_hop());
    }

    fn spans_of(raw: &[u8]) -> Spans {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Response::new(&mut headers);
        assert!(r.parse(raw).unwrap().is_complete());
        Spans::of(raw, r.headers).unwrap()
    }

    #[test]
    fn spans_say_where_fields_are_and_which_kinds_are_there() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length:  2 \r\nX-A:b\r\n\r\n";
        let s = spans_of(raw);
        let fields: Vec<_> = s.fields.iter().map(|f| Spans::field(raw, f)).collect();
        assert_eq!(
            fields,
            [
                (&b"Server"[..], &b"x"[..]),
                (b"Content-Length", b"2"),
                (b"X-A", b"b")
            ]
        );
        assert!(s.present.has(Kind::ContentLength));
        assert!(s.present.has(Kind::Other));
        assert!(!s.present.has(Kind::Connection));
        // Only a line already as the relay writes it is copied as it is.
        let lines: Vec<_> = s
            .fields
            .iter()
            .map(|f| Spans::plain_line(raw, f).map(|(a, b)| &raw[a..b]))
            .collect();
        assert_eq!(lines, [Some(&b"Server: x\r\n"[..]), None, None]);
        let lf = b"HTTP/1.1 200 OK\nServer: x\nX: y\r\n\n";
        let s = spans_of(lf);
        let lines: Vec<_> = s
            .fields
            .iter()
            .map(|f| Spans::plain_line(lf, f).map(|(a, b)| &lf[a..b]))
            .collect();
        assert_eq!(lines, [None, Some(&b"X: y\r\n"[..])]);
    }

    #[test]
    fn values_by_kind_are_the_values_by_name() {
        let raw = b"HTTP/1.1 200 OK\r\nconnection: a\r\nX-Y: 1\r\nCONNECTION: b\r\nx-y: 2\r\n\r\n";
        let s = spans_of(raw);
        let get = |name: &'static str| -> Vec<Vec<u8>> {
            let name = HeaderName::from_static(name);
            s.values(raw, &name).map(<[u8]>::to_vec).collect()
        };
        assert_eq!(get("connection"), [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(get("x-y"), [b"1".to_vec(), b"2".to_vec()]);
        assert!(get("content-length").is_empty());
        assert!(get("x-z").is_empty());

        let map = s.map(&Bytes::copy_from_slice(raw)).unwrap();
        let parsed = Parsed {
            headers: &map,
            present: s.present,
        };
        for name in ["connection", "x-y", "content-length", "x-z"] {
            let name = HeaderName::from_static(name);
            let by_map: Vec<_> = parsed.values(&name).collect();
            let by_spans: Vec<_> = s.values(raw, &name).collect();
            assert_eq!(by_map, by_spans, "{name}");
        }
        // What the head did not have is not looked up, even if the map
        // gained it since (which is why `Parsed` is only valid until then).
        let mut changed = map.clone();
        changed.insert("content-length", HeaderValue::from_static("9"));
        let stale = Parsed {
            headers: &changed,
            present: s.present,
        };
        assert_eq!(
            stale
                .values(&HeaderName::from_static("content-length"))
                .count(),
            0
        );
    }

    #[test]
    fn names_longer_than_http_takes_are_refused() {
        for (len, ok) in [(MAX_FIELD_NAME, true), (MAX_FIELD_NAME + 1, false)] {
            let raw = format!("HTTP/1.1 200 OK\r\n{}: v\r\n\r\n", "a".repeat(len));
            let mut headers = [httparse::EMPTY_HEADER; 4];
            let mut r = httparse::Response::new(&mut headers);
            assert!(r.parse(raw.as_bytes()).unwrap().is_complete());
            assert_eq!(Spans::of(raw.as_bytes(), r.headers).is_some(), ok, "{len}");
            assert_eq!(HeaderName::from_bytes(&vec![b'a'; len]).is_ok(), ok);
        }
    }
}
