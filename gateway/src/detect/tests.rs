use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Duration,
};

use rustls::{pki_types::ServerName, ClientConfig, ClientConnection, RootCertStore};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::Instant,
};

use super::{classify, classify_final, detect, http::H2_PREFACE, Classification, Protocol};

// ---------------------------------------------------------------- helpers

fn done(p: Protocol) -> Classification {
    Classification::Done(p)
}

fn tls(sni: Option<&str>, alpn: &[&str]) -> Protocol {
    Protocol::Tls {
        sni: sni.map(str::to_string),
        alpn: alpn.iter().map(|s| s.to_string()).collect(),
    }
}

fn http1(method: &str) -> Protocol {
    Protocol::Http1 {
        method: method.to_string(),
    }
}

/// The first flight of a real rustls client: its ClientHello records.
fn rustls_hello(
    name: ServerName<'static>,
    alpn: &[&[u8]],
    tweak: impl FnOnce(&mut ClientConfig),
) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tweak(&mut config);
    let mut conn = ClientConnection::new(Arc::new(config), name).expect("client config is valid");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)
            .expect("writing to a Vec cannot fail");
    }
    out
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_string()).expect("valid DNS name")
}

const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];

fn golden_basic() -> Vec<u8> {
    rustls_hello(dns("api.Example.com"), H2_H1, |_| {})
}

/// A hello of ~4 KB (many ALPN names) cut by rustls into 512-byte records.
fn golden_fragmented() -> (Vec<u8>, Vec<String>) {
    let names: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("proto-{i:03}-{}", "x".repeat(30)).into_bytes())
        .collect();
    let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let hello = rustls_hello(dns("llm.example.net"), &refs, |c| {
        c.max_fragment_size = Some(512)
    });
    let alpn = names
        .into_iter()
        .map(|n| String::from_utf8(n).unwrap())
        .collect();
    (hello, alpn)
}

/// Record lengths of a run of TLS records; panics (test failure) if `buf`
/// is not exactly whole records.
fn record_lengths(buf: &[u8]) -> Vec<usize> {
    let mut lens = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        lens.push(len);
        rest = &rest[5 + len..];
    }
    lens
}

fn u16be(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap().to_be_bytes()
}

fn ext(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut e = kind.to_be_bytes().to_vec();
    e.extend(u16be(data.len()));
    e.extend(data);
    e
}

fn sni_ext(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in entries {
        list.push(*kind);
        list.extend(u16be(name.len()));
        list.extend(*name);
    }
    let mut data = u16be(list.len()).to_vec();
    data.extend(list);
    ext(0, &data)
}

fn alpn_ext(names: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for name in names {
        list.push(u8::try_from(name.len()).unwrap());
        list.extend(*name);
    }
    let mut data = u16be(list.len()).to_vec();
    data.extend(list);
    ext(16, &data)
}

/// Fixed fields of a ClientHello body, up to and including compression.
fn hello_fields() -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend([0xab; 32]); // random
    b.push(32);
    b.extend([0xcd; 32]); // session id
    b.extend([0, 4, 0x13, 0x01, 0x13, 0x02]); // two suites
    b.extend([1, 0]); // null compression
    b
}

fn hello_body(extensions: &[Vec<u8>]) -> Vec<u8> {
    let block: Vec<u8> = extensions.concat();
    let mut b = hello_fields();
    b.extend(u16be(block.len()));
    b.extend(block);
    b
}

/// Handshake message: type 1, u24 length, body.
fn handshake(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    let mut h = vec![1, len[1], len[2], len[3]];
    h.extend(body);
    h
}

/// `hs` wrapped in handshake records, one record per piece between `cuts`.
fn records(hs: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain([&hs.len()]) {
        out.extend([22, 3, 1]);
        out.extend(u16be(end - start));
        out.extend(&hs[start..end]);
        start = end;
    }
    out
}

fn hand_hello(extensions: &[Vec<u8>]) -> Vec<u8> {
    records(&handshake(&hello_body(extensions)), &[])
}

fn sni_alpn_exts(host: &[u8]) -> Vec<Vec<u8>> {
    vec![sni_ext(&[(0, host)]), alpn_ext(H2_H1)]
}

fn assert_every_prefix_needs_more(buf: &[u8]) {
    for n in 0..buf.len() {
        assert_eq!(
            classify(&buf[..n]),
            Classification::NeedMore,
            "prefix of {n} of {} bytes",
            buf.len()
        );
    }
}

/// What a valid SNI must look like, checked independently of the parser.
fn valid_looking(sni: &str) -> bool {
    !sni.is_empty()
        && sni.len() <= 253
        && sni.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
        && sni.split('.').all(|label| !label.is_empty())
}

/// xorshift64*, enough for test inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

// ---------------------------------------------------------------- TLS, golden

#[test]
fn rustls_hello_with_sni_and_alpn() {
    let hello = golden_basic();
    assert_eq!(
        classify(&hello),
        done(tls(Some("api.example.com"), &["h2", "http/1.1"]))
    );
}

#[test]
fn rustls_hello_for_an_ip_has_no_sni() {
    let hello = rustls_hello(
        ServerName::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)).into()),
        H2_H1,
        |_| {},
    );
    assert_eq!(classify(&hello), done(tls(None, &["h2", "http/1.1"])));
}

#[test]
fn rustls_hello_without_alpn() {
    let hello = rustls_hello(dns("example.org"), &[], |_| {});
    assert_eq!(classify(&hello), done(tls(Some("example.org"), &[])));
}

#[test]
fn rustls_hello_with_sni_disabled() {
    let hello = rustls_hello(dns("example.org"), H2_H1, |c| c.enable_sni = false);
    assert_eq!(classify(&hello), done(tls(None, &["h2", "http/1.1"])));
}

#[test]
fn rustls_hello_across_many_records() {
    let (hello, alpn) = golden_fragmented();
    let lens = record_lengths(&hello);
    assert!(
        lens.len() >= 5,
        "expected the hello split across records: {lens:?}"
    );
    let alpn: Vec<&str> = alpn.iter().map(String::as_str).collect();
    assert_eq!(classify(&hello), done(tls(Some("llm.example.net"), &alpn)));
}

#[test]
fn rustls_hello_larger_than_one_record() {
    // ~40 KB of ALPN names: more than the 2^14 bytes a record can carry, so
    // rustls itself splits the hello at the record limit.
    let names: Vec<Vec<u8>> = (0..160)
        .map(|i| format!("{i:03}{}", "p".repeat(250)).into_bytes())
        .collect();
    let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let hello = rustls_hello(dns("big.example"), &refs, |_| {});
    let lens = record_lengths(&hello);
    assert!(lens.len() >= 3 && lens[0] == 1 << 14, "{lens:?}");
    let Classification::Done(Protocol::Tls { sni, alpn }) = classify(&hello) else {
        panic!("big hello not classified as TLS");
    };
    assert_eq!(sni.as_deref(), Some("big.example"));
    assert_eq!(alpn.len(), 160);
    assert_eq!(alpn[159].as_bytes(), names[159].as_slice());
    // Prefixes, sampled (every one of 40 KB is quadratic in a debug build),
    // plus every length around each record boundary.
    let mut boundary = 0;
    for len in &lens {
        boundary += 5 + len;
        for n in boundary.saturating_sub(8)..(boundary + 8).min(hello.len()) {
            assert_eq!(
                classify(&hello[..n]),
                Classification::NeedMore,
                "prefix {n}"
            );
        }
    }
    for n in (0..hello.len()).step_by(211) {
        assert_eq!(
            classify(&hello[..n]),
            Classification::NeedMore,
            "prefix {n}"
        );
    }
}

#[test]
fn every_prefix_of_a_golden_hello_needs_more() {
    let basic = golden_basic();
    assert_every_prefix_needs_more(&basic);
    assert!(matches!(
        classify(&basic),
        Classification::Done(Protocol::Tls { .. })
    ));

    let (fragmented, _) = golden_fragmented();
    assert_every_prefix_needs_more(&fragmented);
    assert!(matches!(
        classify(&fragmented),
        Classification::Done(Protocol::Tls { .. })
    ));

    let hand = hand_hello(&sni_alpn_exts(b"a.example"));
    assert_every_prefix_needs_more(&hand);
    assert_eq!(
        classify(&hand),
        done(tls(Some("a.example"), &["h2", "http/1.1"]))
    );
}

#[test]
fn hand_built_hello_split_at_every_point_across_two_records() {
    let hs = handshake(&hello_body(&sni_alpn_exts(b"Split.Example.COM")));
    let want = done(tls(Some("split.example.com"), &["h2", "http/1.1"]));
    for cut in 1..hs.len() {
        let two = records(&hs, &[cut]);
        assert_eq!(classify(&two), want, "cut at {cut}");
        // The prefix ending just inside the second record's header, too.
        assert_eq!(
            classify(&two[..cut + 5 + 3]),
            Classification::NeedMore,
            "cut at {cut}"
        );
    }
    // One record per byte: the most fragmented a hello can be.
    let cuts: Vec<usize> = (1..hs.len()).collect();
    let per_byte = records(&hs, &cuts);
    assert_every_prefix_needs_more(&per_byte);
    assert_eq!(classify(&per_byte), want);
}

#[test]
fn hello_without_extensions_is_tls() {
    let hello = records(&handshake(&hello_fields()), &[]);
    assert_eq!(classify(&hello), done(tls(None, &[])));
}

#[test]
fn bytes_after_the_hello_do_not_matter() {
    let mut hello = hand_hello(&sni_alpn_exts(b"x.example"));
    let want = classify(&hello);
    // An early-data record, then a half-sent record header.
    hello.extend([23, 3, 3, 0, 4, 1, 2, 3, 4, 23, 3]);
    assert_eq!(classify(&hello), want);
    // Another handshake message coalesced into the hello's record.
    let mut hs = handshake(&hello_body(&sni_alpn_exts(b"x.example")));
    hs.extend([20, 0, 0, 1, 0xff]);
    assert_eq!(classify(&records(&hs, &[])), want);
}

#[test]
fn unknown_extensions_and_other_name_types_are_skipped() {
    let hello = hand_hello(&[
        ext(0xfe0d, &[7; 200]), // ECH outer, say
        sni_ext(&[(1, b"not-a-host-name"), (0, b"svc.example")]),
        ext(21, &[0; 64]), // padding
        alpn_ext(&[b"h2"]),
        ext(0x1a1a, &[]), // GREASE, empty
    ]);
    assert_eq!(classify(&hello), done(tls(Some("svc.example"), &["h2"])));
    let only_other_type = hand_hello(&[sni_ext(&[(1, b"x")])]);
    assert_eq!(classify(&only_other_type), done(tls(None, &[])));
}

#[test]
fn sni_is_lower_cased_and_must_look_like_a_host_name() {
    let sni_of = |host: &[u8]| match classify(&hand_hello(&[sni_ext(&[(0, host)])])) {
        Classification::Done(Protocol::Tls { sni, .. }) => sni,
        other => panic!("{host:?} gave {other:?}"),
    };
    assert_eq!(sni_of(b"API.OpenAI.com").as_deref(), Some("api.openai.com"));
    assert_eq!(
        sni_of(b"_svc-1.a-b.example").as_deref(),
        Some("_svc-1.a-b.example")
    );
    assert_eq!(sni_of(b"localhost").as_deref(), Some("localhost"));
    let longest = [
        b"a".repeat(63),
        b"b".repeat(63),
        b"c".repeat(63),
        b"d".repeat(61),
    ]
    .join(&b'.');
    assert_eq!(longest.len(), 253);
    assert_eq!(sni_of(&longest).map(|s| s.len()), Some(253));
    let too_long = [longest.as_slice(), b"e"].concat();
    for bad in [
        &b""[..],
        b"a\0b.example",
        b"\0",
        b"caf\xc3\xa9.example",
        b"a b.example",
        b".example.com",
        b"example.com.",
        b"a..b",
        b".",
        b"::1",
        b"x/y",
        b"x\xff",
        &too_long,
    ] {
        assert_eq!(sni_of(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn alpn_names_that_are_not_utf8_are_kept_lossily() {
    let hello = hand_hello(&[alpn_ext(&[b"h2", b"\xff\xfe", b"x"])]);
    let Classification::Done(Protocol::Tls { alpn, .. }) = classify(&hello) else {
        panic!("not TLS");
    };
    assert_eq!(alpn.len(), 3);
    assert_eq!(alpn[0], "h2");
    assert_eq!(alpn[2], "x");
}

// ---------------------------------------------------------------- TLS, malformed

/// Decided as Opaque from these bytes alone: a lie is not waited on.
fn assert_opaque(buf: &[u8], what: &str) {
    assert_eq!(classify(buf), done(Protocol::Opaque), "{what}");
}

#[test]
fn bad_record_headers_are_opaque_at_once() {
    for (bytes, what) in [
        (&[23u8][..], "application data"),
        (&[21], "alert"),
        (&[20], "change cipher spec"),
        (&[22, 2], "major version 2"),
        (&[22, 3, 5], "minor version 5"),
        (&[22, 3, 1, 0, 0], "empty record"),
        (&[22, 3, 1, 0x40, 0x01], "record over 2^14"),
        (&[22, 3, 1, 0xff, 0xff], "record of 64 KB"),
        (&[22, 3, 1, 0, 4, 2], "server hello"),
        (&[22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff], "handshake of 16 MB"),
        (
            &[22, 3, 1, 0, 4, 1, 0, 0, 10],
            "handshake too short for a hello",
        ),
        (&[22, 3, 1, 0, 50, 1, 0, 0, 46, 2], "legacy_version 2.x"),
        (&[22, 3, 1, 0, 50, 1, 0, 0, 46, 3, 9], "legacy_version 3.9"),
    ] {
        assert_opaque(bytes, what);
    }
    // A partial header that could still be TLS waits.
    for ok in [&[22u8][..], &[22, 3], &[22, 3, 3], &[22, 3, 0, 0]] {
        assert_eq!(classify(ok), Classification::NeedMore, "{ok:?}");
    }
}

#[test]
fn lying_lengths_are_opaque() {
    let base = hello_fields();
    let with_fields = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = base.clone();
        f(&mut b);
        b.extend([0, 0]); // empty extension block
        hand_records(&b)
    };
    fn hand_records(body: &[u8]) -> Vec<u8> {
        records(&handshake(body), &[])
    }
    assert_opaque(&with_fields(&|b| b[34] = 33), "session id of 33");
    assert_opaque(
        &with_fields(&|b| b[34 + 33 + 1] = 3),
        "odd cipher suite length",
    );
    assert_opaque(&with_fields(&|b| b[34 + 33 + 1] = 0), "no cipher suites");
    assert_opaque(
        &with_fields(&|b| b[34 + 33 + 1] = 200),
        "cipher suites past the body",
    );
    assert_opaque(
        &with_fields(&|b| b[34 + 33 + 6] = 0),
        "no compression methods",
    );
    assert_opaque(
        &with_fields(&|b| b[34 + 33 + 6] = 9),
        "compression past the body",
    );

    let good = hello_body(&sni_alpn_exts(b"x.example"));
    let ext_block = base.len(); // offset of the extensions length
    let patched = |at: usize, delta: i32| {
        let mut b = good.clone();
        let v = i32::from(u16::from_be_bytes([b[at], b[at + 1]])) + delta;
        b[at..at + 2].copy_from_slice(&u16::try_from(v).unwrap().to_be_bytes());
        hand_records(&b)
    };
    let sni_ext_len = ext_block + 2 + 2;
    let sni_list_len = sni_ext_len + 2;
    let sni_name_len = sni_list_len + 3;
    let alpn_ext = sni_name_len + 2 + b"x.example".len();
    let alpn_ext_len = alpn_ext + 2;
    let alpn_list_len = alpn_ext_len + 2;
    assert_eq!(
        classify(&hand_records(&good)),
        done(tls(Some("x.example"), &["h2", "http/1.1"]))
    );
    for (at, what) in [
        (ext_block, "extension block"),
        (sni_ext_len, "server_name extension"),
        (sni_list_len, "server name list"),
        (sni_name_len, "host name"),
        (alpn_ext_len, "ALPN extension"),
        (alpn_list_len, "ALPN list"),
    ] {
        for delta in [-1, 1] {
            assert_opaque(&patched(at, delta), &format!("{what} length {delta:+}"));
        }
    }
    // The first ALPN name's own length, off by one either way.
    for first in [1u8, 3] {
        let mut b = good.clone();
        b[alpn_list_len + 2] = first;
        assert_opaque(&hand_records(&b), &format!("ALPN name length {first}"));
    }

    // The handshake length disagreeing with the body it frames.
    for delta in [-1i64, 1] {
        let mut hs = handshake(&good);
        let len = i64::from(u32::from_be_bytes([0, hs[1], hs[2], hs[3]])) + delta;
        hs[1..4].copy_from_slice(&u32::try_from(len).unwrap().to_be_bytes()[1..]);
        assert_opaque(&records(&hs, &[]), &format!("handshake length {delta:+}"));
    }
    // A trailing byte inside the body, after the extensions.
    let mut trailing = good.clone();
    trailing.push(0);
    assert_opaque(&hand_records(&trailing), "byte after the extensions");
}

#[test]
fn contradictory_extensions_are_opaque() {
    for (exts, what) in [
        (
            vec![sni_ext(&[(0, b"a.example")]), sni_ext(&[(0, b"b.example")])],
            "two server_name extensions",
        ),
        (
            vec![sni_ext(&[(0, b"a.example"), (0, b"b.example")])],
            "two host names",
        ),
        (
            vec![alpn_ext(&[b"h2"]), alpn_ext(&[b"http/1.1"])],
            "two ALPN extensions",
        ),
        (vec![ext(0, &[])], "empty server_name extension"),
        (vec![ext(16, &[0, 0])], "empty ALPN list"),
        (vec![ext(16, &[])], "empty ALPN extension"),
        (vec![ext(16, &[0, 3, 0, 1, b'x'])], "empty ALPN name"),
        (
            vec![ext(0, &[0, 4, 0, 0, 1, b'a', 0])],
            "byte after the server name list",
        ),
    ] {
        assert_opaque(&hand_hello(&exts), what);
    }
}

#[test]
fn a_non_handshake_record_mid_hello_is_opaque() {
    let hs = handshake(&hello_body(&sni_alpn_exts(b"x.example")));
    let cut = 40;
    let mut buf = records(&hs[..cut], &[]);
    for (header, what) in [
        ([23u8, 3, 3, 0, 10], "application data"),
        ([21, 3, 3, 0, 2], "alert"),
        ([22, 9, 3, 0, 10], "bad version"),
        ([22, 3, 3, 0, 0], "empty record"),
    ] {
        let mut b = buf.clone();
        b.extend(header);
        b.extend(&hs[cut..]);
        assert_opaque(&b, what);
    }
    buf.extend(records(&hs[cut..], &[]));
    assert!(matches!(
        classify(&buf),
        Classification::Done(Protocol::Tls { .. })
    ));
}

#[test]
fn every_single_byte_mutation_of_a_golden_hello_is_safe() {
    let goldens = [
        golden_basic(),
        records(&handshake(&hello_body(&sni_alpn_exts(b"m.example"))), &[60]),
    ];
    for golden in goldens {
        let mut buf = golden.clone();
        let mut outcomes = [0usize; 3];
        for at in 0..golden.len() {
            for delta in 1..=255u8 {
                buf[at] = golden[at].wrapping_add(delta);
                match classify(&buf) {
                    Classification::Done(Protocol::Tls { sni, .. }) => {
                        if let Some(sni) = sni {
                            assert!(valid_looking(&sni), "{sni:?}");
                        }
                        outcomes[0] += 1;
                    }
                    Classification::Done(_) => outcomes[1] += 1,
                    Classification::NeedMore => outcomes[2] += 1,
                }
            }
            buf[at] = golden[at];
        }
        // Random and session bytes are free, lengths and types are not:
        // both must be seen, or the parser is not looking. (NeedMore is rare
        // here: a single byte seldom makes every length agree on a longer
        // hello.)
        assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
    }
}

// ---------------------------------------------------------------- HTTP

#[test]
fn http1_request_lines() {
    for (line, method) in [
        (&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], "GET"),
        (b"POST /v1/chat/completions HTTP/1.1\r\n", "POST"),
        (b"CONNECT api.example.com:443 HTTP/1.1\r\n", "CONNECT"),
        (b"M-SEARCH * HTTP/1.1\r\n", "M-SEARCH"),
        (b"OPTIONS * HTTP/1.0\n", "OPTIONS"),
        (b"DELETE /x?y=%20 HTTP/1.1", "DELETE"),
        (b"GET /caf\xc3\xa9 HTTP/1.1\r\n", "GET"),
        (b"PRI / HTTP/1.1\r\n", "PRI"),
        (b"PRI * HTTP/1.1\r\n", "PRI"),
        (b"ABCDEFGHIJKLMNOPQRST /", "ABCDEFGHIJKLMNOPQRST"),
    ] {
        assert_eq!(
            classify(line),
            done(http1(method)),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn http1_decides_at_method_and_space() {
    let line = b"GET /index.html HTTP/1.1\r\n";
    for n in 0..3 {
        assert_eq!(classify(&line[..n]), Classification::NeedMore, "{n}");
    }
    for n in 4..=line.len() {
        assert_eq!(classify(&line[..n]), done(http1("GET")), "{n}");
    }
    assert_eq!(classify(b"GET"), Classification::NeedMore);
    assert_eq!(classify(&[b'A'; 20]), Classification::NeedMore);
}

#[test]
fn not_http1() {
    for bytes in [
        &b"get / HTTP/1.1\r\n"[..],
        b"GET/ HTTP/1.1\r\n",
        b"GET\t/ HTTP/1.1",
        b" GET / HTTP/1.1",
        b"GET  / HTTP/1.1",
        b"GET  HTTP/1.1\r\n",
        b"GET  ",
        b"GET /\r\n",
        b"GET / \r\n",
        b"GET / HTTP/2.0\r\n",
        b"GET / HTTP/1.x\r\n",
        b"GET / HTTP/1.10\r\n",
        b"GET / http/1.1\r\n",
        b"GET /\0",
        b"GET /\x7f",
        b"ABCDEFGHIJKLMNOPQRSTU /",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"*1\r\n$4\r\nPING\r\n",
        b"\0\0\0\x08\x04\xd2\x16\x2f", // postgres SSLRequest
        b"\x80\x01\x03\x01",           // SSLv2-style hello
        b"\x16\x00",
        &[0xff; 64],
        &[0; 64],
    ] {
        assert_opaque(bytes, &String::from_utf8_lossy(bytes));
    }
}

#[test]
fn h2_preface() {
    assert_eq!(classify(H2_PREFACE), done(Protocol::Http2));
    // With the client's SETTINGS frame after it.
    let mut with_settings = H2_PREFACE.to_vec();
    with_settings.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    assert_eq!(classify(&with_settings), done(Protocol::Http2));
    // "PRI " is not taken for an HTTP/1 method while it can still be h2.
    for n in 0..H2_PREFACE.len() {
        assert_eq!(classify(&H2_PREFACE[..n]), Classification::NeedMore, "{n}");
    }
    // A damaged preface is neither h2 nor an HTTP/1 request.
    for at in 0..H2_PREFACE.len() {
        let mut damaged = H2_PREFACE.to_vec();
        damaged[at] = b'x';
        assert_opaque(&damaged, &format!("preface damaged at {at}"));
    }
}

#[test]
fn names() {
    assert_eq!(tls(None, &[]).name(), "tls");
    assert_eq!(http1("GET").name(), "http1");
    assert_eq!(Protocol::Http2.name(), "http2");
    assert_eq!(Protocol::Opaque.name(), "opaque");
}

// ---------------------------------------------------------------- garbage

#[test]
fn random_buffers_never_panic_and_opaque_is_final() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let golden = golden_basic();
    let prefixes: [&[u8]; 6] = [
        &[],
        &[22, 3, 1],
        &[22, 3, 3, 1, 0, 1, 0, 0],
        b"GET ",
        b"PRI * HTTP/2.0\r\n",
        &golden[..60],
    ];
    let mut verdicts = [0usize; 5];
    for i in 0..10_000 {
        let prefix = prefixes[i % prefixes.len()];
        // Short buffers too: they are where NeedMore and HTTP/1 live.
        let len = if rng.below(4) == 0 {
            rng.below(8)
        } else {
            rng.below(600)
        };
        let mut buf = prefix.to_vec();
        buf.extend(rng.bytes(len));
        let full = classify(&buf);
        verdicts[match &full {
            Classification::NeedMore => 0,
            Classification::Done(Protocol::Opaque) => 1,
            Classification::Done(Protocol::Tls { .. }) => 2,
            Classification::Done(Protocol::Http1 { .. }) => 3,
            Classification::Done(Protocol::Http2) => 4,
        }] += 1;
        if let Classification::Done(Protocol::Tls { sni: Some(sni), .. }) = &full {
            assert!(valid_looking(sni), "{sni:?}");
        }
        // Whatever a prefix decided as Opaque, the whole must agree; and a
        // decided TLS hello or h2 preface does not change with more bytes.
        // (Only HTTP/1, decided early, may still turn Opaque.)
        let cut = rng.below(buf.len() + 1);
        let early = classify(&buf[..cut]);
        if !matches!(
            early,
            Classification::NeedMore | Classification::Done(Protocol::Http1 { .. })
        ) {
            assert_eq!(full, early, "{buf:?} cut at {cut}");
        }
        // The cut-short verdict is total too.
        let _ = classify_final(&buf[..cut]);
    }
    // The shapes above must reach more than one verdict.
    assert!(
        verdicts[0] > 0 && verdicts[1] > 0 && verdicts[3] > 0,
        "{verdicts:?}"
    );
}

#[test]
fn random_record_streams_never_panic() {
    // Plausible record headers around random fragments reach deep into the
    // parser, where pure noise stops at the first byte.
    let mut rng = Rng(42);
    for _ in 0..2_000 {
        let mut buf = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let len = rng.below(300);
            buf.extend([22, 3, 1]);
            buf.extend(u16be(len));
            let mut frag = rng.bytes(len);
            if buf.len() == 5 && len >= 4 {
                // A ClientHello header with a length near the truth.
                frag[0] = 1;
                frag[1] = 0;
                frag[2] = 0;
                frag[3] = rng.below(256) as u8;
            }
            buf.extend(frag);
        }
        let _ = classify(&buf);
        let _ = classify_final(&buf);
    }
}

// ---------------------------------------------------------------- cut short

#[test]
fn a_hello_larger_than_the_buffer_keeps_what_was_read() {
    let padding = ext(21, &[0; 3000]);
    let early = records(
        &handshake(&hello_body(&[
            sni_ext(&[(0, b"early.example")]),
            alpn_ext(&[b"h2"]),
            padding.clone(),
        ])),
        &[],
    );
    let late = records(
        &handshake(&hello_body(&[padding, sni_ext(&[(0, b"late.example")])])),
        &[],
    );
    assert_eq!(classify(&early[..1000]), Classification::NeedMore);
    assert_eq!(
        classify_final(&early[..1000]),
        tls(Some("early.example"), &["h2"])
    );
    assert_eq!(classify_final(&late[..1000]), tls(None, &[]));
    // Cut inside the host name: it was not read whole, so it is not reported.
    let at = early.windows(5).position(|w| w == b"early").unwrap();
    assert_eq!(classify_final(&early[..at + 3]), tls(None, &[]));
    // Whole hellos are unaffected.
    assert_eq!(classify_final(&early), tls(Some("early.example"), &["h2"]));
    // Before the handshake header, nothing says ClientHello yet.
    for n in 1..9 {
        assert_eq!(classify_final(&early[..n]), Protocol::Opaque, "{n}");
    }
    assert_eq!(classify_final(&early[..9]), tls(None, &[]));
    // Undecided non-TLS is Opaque.
    assert_eq!(classify_final(b"GE"), Protocol::Opaque);
    assert_eq!(classify_final(&H2_PREFACE[..10]), Protocol::Opaque);
    assert_eq!(classify_final(b""), Protocol::Opaque);
}

// ---------------------------------------------------------------- detect, on sockets

/// A connected (client, server-side) pair on loopback.
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    client.set_nodelay(true).unwrap();
    (client, server)
}

const LONG: Duration = Duration::from_secs(5);

/// The bytes are still in the socket after detection, in full.
async fn assert_unconsumed(server: &mut TcpStream, sent: &[u8]) {
    let mut got = vec![0; sent.len()];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(got, sent);
}

#[tokio::test]
async fn detect_a_hello_in_one_write() {
    let (mut client, mut server) = pair().await;
    let hello = golden_basic();
    client.write_all(&hello).await.unwrap();
    let p = detect(&server, LONG, 16 * 1024).await.unwrap();
    assert_eq!(p, tls(Some("api.example.com"), &["h2", "http/1.1"]));
    assert_unconsumed(&mut server, &hello).await;
}

#[tokio::test]
async fn detect_a_hello_in_two_writes_30ms_apart() {
    let (mut client, mut server) = pair().await;
    let (hello, alpn) = golden_fragmented();
    let sent = hello.clone();
    let writer = tokio::spawn(async move {
        client.write_all(&hello[..700]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        client.write_all(&hello[700..]).await.unwrap();
        client
    });
    let start = Instant::now();
    let p = detect(&server, LONG, 16 * 1024).await.unwrap();
    let alpn: Vec<&str> = alpn.iter().map(String::as_str).collect();
    assert_eq!(p, tls(Some("llm.example.net"), &alpn));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let _client = writer.await.unwrap();
    assert_unconsumed(&mut server, &sent).await;
}

#[tokio::test]
async fn detect_a_hello_dripped_in_small_pieces() {
    let (mut client, mut server) = pair().await;
    let hello = hand_hello(&sni_alpn_exts(b"drip.example"));
    let sent = hello.clone();
    let writer = tokio::spawn(async move {
        for piece in hello.chunks(17) {
            client.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        client
    });
    let p = detect(&server, LONG, 16 * 1024).await.unwrap();
    assert_eq!(p, tls(Some("drip.example"), &["h2", "http/1.1"]));
    let _client = writer.await.unwrap();
    assert_unconsumed(&mut server, &sent).await;
}

#[tokio::test]
async fn detect_cleartext_http() {
    let (mut client, mut server) = pair().await;
    let request = b"POST /v1/messages HTTP/1.1\r\nHost: api\r\n\r\n";
    client.write_all(request).await.unwrap();
    assert_eq!(detect(&server, LONG, 1024).await.unwrap(), http1("POST"));
    assert_unconsumed(&mut server, request).await;

    let (mut client, mut server) = pair().await;
    client.write_all(&H2_PREFACE[..10]).await.unwrap();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        client.write_all(&H2_PREFACE[10..]).await.unwrap();
        client
    });
    assert_eq!(detect(&server, LONG, 1024).await.unwrap(), Protocol::Http2);
    let _client = writer.await.unwrap();
    assert_unconsumed(&mut server, H2_PREFACE).await;
}

#[tokio::test]
async fn a_silent_client_is_opaque_after_the_timeout() {
    let (_client, server) = pair().await;
    let timeout = Duration::from_millis(100);
    let start = Instant::now();
    assert_eq!(
        detect(&server, timeout, 1024).await.unwrap(),
        Protocol::Opaque
    );
    let took = start.elapsed();
    assert!(took >= timeout && took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn a_client_that_stalls_mid_hello_is_opaque_after_the_timeout() {
    let (mut client, server) = pair().await;
    client.write_all(&golden_basic()[..50]).await.unwrap();
    let timeout = Duration::from_millis(100);
    let start = Instant::now();
    assert_eq!(
        detect(&server, timeout, 1024).await.unwrap(),
        Protocol::Opaque
    );
    let took = start.elapsed();
    assert!(took >= timeout && took < Duration::from_secs(2), "{took:?}");
}

/// CPU time (user + system, in clock ticks) this thread has used so far.
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("Linux /proc");
    // Fields after the command name, which may hold spaces: state is the
    // first, utime and stime the 12th and 13th.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn waiting_for_the_rest_of_a_hello_does_not_spin() {
    // The queued bytes keep the socket readable; without the pauses this
    // wait would burn a core for the whole 400 ms.
    let (mut client, server) = pair().await;
    client.write_all(&golden_basic()[..50]).await.unwrap();
    let before = thread_cpu_ticks();
    let timeout = Duration::from_millis(400);
    assert_eq!(
        detect(&server, timeout, 1024).await.unwrap(),
        Protocol::Opaque
    );
    let used = thread_cpu_ticks() - before;
    // Ticks are 10 ms on Linux: 400 ms of spinning is ~40.
    assert!(used < 10, "{used} ticks of CPU while waiting");
}

#[tokio::test]
async fn a_peer_that_closes_at_once_is_opaque_without_waiting() {
    let (client, server) = pair().await;
    drop(client);
    let start = Instant::now();
    assert_eq!(detect(&server, LONG, 1024).await.unwrap(), Protocol::Opaque);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_peer_that_closes_mid_hello_is_opaque_without_waiting() {
    let (mut client, mut server) = pair().await;
    let partial = &golden_basic()[..50];
    client.write_all(partial).await.unwrap();
    client.shutdown().await.unwrap();
    let start = Instant::now();
    assert_eq!(detect(&server, LONG, 1024).await.unwrap(), Protocol::Opaque);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_unconsumed(&mut server, partial).await;
}

#[tokio::test]
async fn a_hello_larger_than_max_bytes_is_tls_with_what_was_read() {
    let (mut client, mut server) = pair().await;
    let hello = records(
        &handshake(&hello_body(&[
            sni_ext(&[(0, b"big.example")]),
            alpn_ext(&[b"h2"]),
            ext(21, &[0; 4000]),
        ])),
        &[],
    );
    client.write_all(&hello).await.unwrap();
    assert_eq!(
        detect(&server, LONG, 512).await.unwrap(),
        tls(Some("big.example"), &["h2"])
    );
    assert_unconsumed(&mut server, &hello).await;
}

#[tokio::test]
async fn undecided_bytes_filling_max_bytes_are_opaque() {
    let (mut client, mut server) = pair().await;
    client.write_all(b"ABCDEFGH").await.unwrap();
    assert_eq!(detect(&server, LONG, 4).await.unwrap(), Protocol::Opaque);
    assert_eq!(detect(&server, LONG, 0).await.unwrap(), Protocol::Opaque);
    assert_unconsumed(&mut server, b"ABCDEFGH").await;
}
