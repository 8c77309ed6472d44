use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

use super::*;

fn parse(raw: &[u8]) -> Result<Option<request::Parts>, HeadError> {
    parse_request(&mut BytesMut::from(raw)).map(|head| head.map(|(parts, _)| parts))
}

/// A request head that parses, with the kinds of field it holds.
fn parsed_head(raw: &str) -> (request::Parts, Present) {
    match parse_request(&mut BytesMut::from(raw)) {
        Ok(Some(head)) => head,
        _ => panic!("{raw:?} should parse"),
    }
}

fn parsed(raw: &str) -> request::Parts {
    let mut buf = BytesMut::from(raw);
    match parse_request(&mut buf) {
        Ok(Some((p, _))) => {
            assert_eq!(
                buf.len(),
                raw.len() - (raw.find("\r\n\r\n").unwrap() + 4),
                "the head is taken off the buffer, the rest stays"
            );
            p
        }
        _ => panic!("{raw:?} should parse"),
    }
}

#[test]
fn request_heads_parse_or_say_why_not() {
    let p = parsed("POST /v1/x?q=1 HTTP/1.1\r\nHost: api\r\nX-A: 1\r\nX-A: 2\r\n\r\nbody");
    assert_eq!(p.method, Method::POST);
    assert_eq!(p.uri.path_and_query().unwrap().as_str(), "/v1/x?q=1");
    assert_eq!(p.version, Version::HTTP_11);
    assert_eq!(p.headers.get_all("x-a").iter().count(), 2);
    assert_eq!(parsed("GET / HTTP/1.0\r\n\r\n").version, Version::HTTP_10);
    let abs = parsed("GET http://api.example/p HTTP/1.1\r\n\r\n");
    assert_eq!(abs.uri.authority().unwrap().as_str(), "api.example");

    assert!(matches!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None)));
    assert!(matches!(parse(b"GE"), Ok(None)));
    for bad in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\n folded: x\r\n\r\n",
    ] {
        assert!(
            matches!(parse(bad), Err(HeadError::Malformed(_))),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert!(matches!(parse(raw.as_bytes()), Err(HeadError::TooMany)));
}

#[test]
fn response_heads_parse() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 404 Nope\r\nContent-Length: 3\r\n\r\nabc"[..]);
    let head = parse_response(&mut buf).unwrap().unwrap();
    assert_eq!(head.status, StatusCode::NOT_FOUND);
    assert_eq!(head.parts().unwrap().headers["content-length"], "3");
    assert_eq!(head.bytes.len(), 40);
    assert_eq!(&buf[..], b"abc");
    assert!(
        parse_response(&mut BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]))
            .unwrap()
            .is_none()
    );
    assert!(parse_response(&mut BytesMut::from(&b"HTTP/1.1 999999 x\r\n\r\n"[..])).is_err());
    assert!(parse_response(&mut BytesMut::from(&b"garbage\r\n\r\n"[..])).is_err());
}

/// Heads covering what relaying from the bytes must get right: fixed and
/// `Connection`-listed hop-by-hop fields in any case, repeated names,
/// several `Connection` fields, framing by length, chunks or close.
const RESPONSE_HEADS: [&str; 8] = [
    "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
    "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: text/plain\r\n\r\n",
    "HTTP/1.1 404 Not Found\r\nKeep-Alive: timeout=5\r\nX-Secret: 1\r\nConnection: x-secret, Keep-Alive\r\nTE: trailers\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nTransfer-Encoding: chunked\r\n\r\n",
    "HTTP/1.1 503 Service Unavailable\r\nCONNECTION: X-Other\r\nx-other: gone\r\nConnection: x-more\r\nX-More: gone\r\nX-Kept: yes\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.0 200 OK\r\nProxy-Authorization: Basic x\r\nUpgrade: h2c\r\nTrailer: x\r\nProxy-Connection: keep-alive\r\nVary: a\r\nVary: b\r\n\r\n",
    "HTTP/1.1 204 No Content\r\nDate: Sun, 29 Nov 2026 19:00:00 GMT\r\n\r\n",
    "HTTP/1.1 200 OK\r\nConnection: close, x-gone\r\nClose: kept\r\nX-Gone: 1\r\n\r\n",
    // Lines not written as the relay writes them: bare LF, no space or
    // more than one around the value.
    "HTTP/1.1 200 OK\nServer:nginx\r\nX-Pad:  a b  \r\nKeep-Alive: 1\nContent-Length: 0\n\n",
];

/// A written head's status line and its fields, lower-cased, in order per
/// name (a map groups a name's values; the bytes keep the upstream's order).
fn head_fields(raw: &[u8]) -> (u16, Vec<(String, String)>) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    assert!(r.parse(raw).unwrap().is_complete());
    let mut fields: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8(h.value.to_vec()).unwrap(),
            )
        })
        .collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    (r.code.unwrap(), fields)
}

#[test]
fn heads_relayed_from_their_bytes_say_what_the_map_would() {
    for raw in RESPONSE_HEADS {
        let head = parse_response(&mut BytesMut::from(raw)).unwrap().unwrap();
        let mut parts = head.parts().unwrap();
        // What framing and keep-alive read is the same either way.
        for method in [Method::GET, Method::HEAD] {
            assert_eq!(
                framing::response(&method, head.status, &head),
                framing::response(&method, head.status, &parts.headers),
                "{raw:?}"
            );
        }
        for http10 in [false, true] {
            assert_eq!(
                wants_close(&head, http10),
                wants_close(&parts.headers, http10),
                "{raw:?}"
            );
        }
        strip_hop_by_hop(&mut parts.headers);
        for close in [false, true] {
            let mut relayed = Vec::new();
            write_relayed_head(&mut relayed, &head, close);
            let mut mapped = Vec::new();
            write_response_head(&mut mapped, &parts, close, None);
            assert_eq!(head_fields(&relayed), head_fields(&mapped), "{raw:?}");
        }
    }
    // Spelling and order are the upstream's.
    let head = parse_response(&mut BytesMut::from(RESPONSE_HEADS[2]))
        .unwrap()
        .unwrap();
    let mut out = Vec::new();
    write_relayed_head(&mut out, &head, false);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 404 Not Found\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    // Lines are written `name: value` with CRLF, whatever the upstream's
    // spacing and line ends; runs of such lines are copied as they are.
    let head = parse_response(&mut BytesMut::from(RESPONSE_HEADS[7]))
        .unwrap()
        .unwrap();
    let mut out = Vec::new();
    write_relayed_head(&mut out, &head, true);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nServer: nginx\r\nX-Pad: a b\r\nContent-Length: 0\r\n\
         connection: close\r\n\r\n"
    );
    let raw = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nKeep-Alive: x\r\nC: 3\r\nD:4\r\nE: 5\r\n\r\n";
    let head = parse_response(&mut BytesMut::from(raw)).unwrap().unwrap();
    let mut out = Vec::new();
    write_relayed_head(&mut out, &head, false);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n"
    );
}

/// Every field a parsed response head holds is one `http` takes as it is
/// (the relay writes fields from the head's bytes without making them
/// `HeaderName`s and `HeaderValue`s), and every field `http` takes is kept.
/// This rests on httparse's byte checks, so it tries every byte in a name
/// and in a value.
#[test]
fn fields_httparse_takes_are_ones_http_takes() {
    let check = |name: &[u8], value: &[u8]| {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        raw.extend_from_slice(name);
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(value);
        raw.extend_from_slice(b"\r\n\r\n");
        let http_takes =
            HeaderName::from_bytes(name).is_ok() && HeaderValue::from_bytes(value).is_ok();
        match parse_response(&mut BytesMut::from(&raw[..])) {
            Ok(Some(head)) => {
                let parts = head.parts().expect("a parsed head makes a map");
                let fields: Vec<_> = head
                    .spans
                    .fields
                    .iter()
                    .map(|f| fields::Spans::field(&head.bytes, f))
                    .collect();
                for (n, v) in &fields {
                    assert!(HeaderName::from_bytes(n).is_ok(), "{raw:?}");
                    assert!(HeaderValue::from_bytes(v).is_ok(), "{raw:?}");
                }
                assert_eq!(parts.headers.len(), fields.len());
                if http_takes {
                    assert_eq!(fields, [(name, value)], "{raw:?}");
                }
            }
            Ok(None) => panic!("{raw:?} is complete"),
            Err(_) => assert!(!http_takes, "{raw:?} refused"),
        }
    };
    for b in 0..=255u8 {
        check(&[b], b"v");
        check(&[b'x', b, b'x'], b"v");
        check(b"x", &[b'a', b, b'z']);
    }
    // A name httparse takes but http would not fails the head, as it did
    // when every head became a map.
    let long = format!(
        "HTTP/1.1 200 OK\r\n{}: v\r\n\r\n",
        "a".repeat(fields::MAX_FIELD_NAME + 1)
    );
    assert_eq!(
        parse_response(&mut BytesMut::from(long.as_str())).err(),
        Some("invalid header field".to_string())
    );
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn connection_semantics() {
    assert!(!wants_close(&headers(&[]), false));
    assert!(
        wants_close(&headers(&[]), true),
        "HTTP/1.0 closes by default"
    );
    assert!(!wants_close(
        &headers(&[("connection", "Keep-Alive")]),
        true
    ));
    assert!(wants_close(
        &headers(&[("connection", "foo, Close")]),
        false
    ));

    let mut h = headers(&[
        ("connection", "keep-alive, x-secret"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("proxy-authorization", "Basic x"),
        ("transfer-encoding", "chunked"),
        ("x-kept", "1"),
    ]);
    strip_hop_by_hop(&mut h);
    let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    left.sort_unstable();
    assert_eq!(left, ["transfer-encoding", "x-kept"]);

    let upgrade = |raw: &str| {
        let (parts, present) = parsed_head(raw);
        upgrade_protocol(&parts, present)
    };
    assert_eq!(
        upgrade(
            "GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        .unwrap(),
        "websocket"
    );
    assert!(
        upgrade("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").is_none(),
        "Connection must name upgrade"
    );
    assert!(
        upgrade("GET /ws HTTP/1.1\r\nConnection: upgrade\r\n\r\n").is_none(),
        "and Upgrade must name a protocol"
    );
    assert!(
        upgrade("GET /ws HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").is_none(),
        "not in HTTP/1.0"
    );
}

/// A request's framing and keep-alive read through [`Parsed`] (which skips
/// the fields its head did not have) are what the whole map says.
#[test]
fn requests_read_as_parsed_say_what_the_map_would() {
    for raw in [
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nCONNECTION: close\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "PUT / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 0\r\n\r\n",
    ] {
        let (parts, present) = parsed_head(raw);
        let parsed = Parsed {
            headers: &parts.headers,
            present,
        };
        let http10 = parts.version == Version::HTTP_10;
        assert_eq!(
            wants_close(&parsed, http10),
            wants_close(&parts.headers, http10),
            "{raw:?}"
        );
        assert_eq!(
            framing::request(http10, &parsed),
            framing::request(http10, &parts.headers),
            "{raw:?}"
        );
    }
}

#[test]
fn heads_are_written_in_http11_form() {
    let p = parsed("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut out = Vec::new();
    write_request_head(&mut out, &p, None);
    assert_eq!(out, b"OPTIONS * HTTP/1.1\r\nhost: a\r\n\r\n");

    let p = parsed("GET http://a/p?q HTTP/1.0\r\nHost: a\r\n\r\n");
    out.clear();
    write_request_head(&mut out, &p, Some(&HeaderValue::from_static("websocket")));
    assert_eq!(
        out,
        b"GET /p?q HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
    );

    let (mut r, _) = Response::new(()).into_parts();
    r.status = StatusCode::TOO_MANY_REQUESTS;
    r.headers.insert("retry-after", HeaderValue::from(3));
    out.clear();
    write_response_head(&mut out, &r, true, None);
    assert_eq!(
        out,
        b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 3\r\nconnection: close\r\n\r\n"
    );
}

/// Runs `relay` from a peer that writes `input` (in two pieces, then
/// closes if `close`) into a sink; returns the result, what the sink got
/// and what stayed pending.
async fn run_relay(
    input: &[u8],
    already: &[u8],
    framing: Framing,
    decode: bool,
    max: Option<u64>,
    close: bool,
) -> (Result<u64, RelayError>, Vec<u8>, Vec<u8>) {
    let (mut src, mut peer) = duplex(1 << 16);
    let (mut sink, mut sink_peer) = duplex(1 << 20);
    let input = input.to_vec();
    let writer = tokio::spawn(async move {
        let half = input.len() / 2;
        peer.write_all(&input[..half]).await.unwrap();
        tokio::task::yield_now().await;
        peer.write_all(&input[half..]).await.unwrap();
        if !close {
            // Keep the connection open until the relay is done.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut pending = BytesMut::from(already);
    let mut out = b"HEAD|".to_vec();
    let result = relay(
        &mut src,
        &mut pending,
        &mut sink,
        &mut out,
        framing,
        decode,
        max,
        Duration::from_millis(200),
    )
    .await;
    drop(sink);
    let mut got = Vec::new();
    sink_peer.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    (result, got, pending.to_vec())
}

#[tokio::test]
async fn relay_copies_each_framing_and_leaves_what_follows() {
    let (r, got, left) = run_relay(
        b"",
        b"hello worldGET /next",
        Framing::Length(11),
        false,
        None,
        false,
    )
    .await;
    assert_eq!(r.unwrap(), 11);
    assert_eq!(got, b"HEAD|hello world");
    assert_eq!(left, b"GET /next", "a pipelined request stays pending");
    let (r, got, _) = run_relay(b"lo world", b"hel", Framing::Length(11), false, None, false).await;
    assert_eq!(r.unwrap(), 11);
    assert_eq!(
        got, b"HEAD|hello world",
        "read bytes follow the pending ones"
    );

    let chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let (r, got, left) = run_relay(chunked, b"", Framing::Chunked, false, None, false).await;
    assert_eq!(r.unwrap(), 11);
    assert_eq!(
        got,
        [b"HEAD|".as_slice(), chunked].concat(),
        "passed through as is"
    );
    assert!(left.is_empty());

    let (r, got, _) = run_relay(chunked, b"", Framing::Chunked, true, None, false).await;
    assert_eq!(r.unwrap(), 11);
    assert_eq!(got, b"HEAD|hello world", "decoded for HTTP/1.0 clients");

    let (r, got, _) = run_relay(
        b"until the end",
        b"",
        Framing::UntilClose,
        false,
        None,
        true,
    )
    .await;
    assert_eq!(r.unwrap(), 13);
    assert_eq!(got, b"HEAD|until the end");

    let (r, got, _) = run_relay(b"", b"", Framing::Empty, false, None, false).await;
    assert_eq!(r.unwrap(), 0);
    assert_eq!(got, b"HEAD|", "the head alone");
}

#[tokio::test]
async fn relay_stops_on_bad_or_short_or_large_bodies() {
    let (r, _, _) = run_relay(b"abc", b"", Framing::Length(10), false, None, true).await;
    assert!(matches!(r, Err(RelayError::SourceClosed)), "{r:?}");
    let (r, _, _) = run_relay(b"abc", b"", Framing::Length(10), false, None, false).await;
    assert!(matches!(r, Err(RelayError::Stalled(_))), "{r:?}");
    let (r, _, _) = run_relay(b"zz\r\n", b"", Framing::Chunked, false, None, false).await;
    assert!(matches!(r, Err(RelayError::Framing(_))), "{r:?}");
    let big = b"a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n";
    let (r, _, _) = run_relay(big, b"", Framing::Chunked, false, Some(15), false).await;
    assert!(matches!(r, Err(RelayError::TooLarge(15))), "{r:?}");
    let (r, _, _) = run_relay(big, b"", Framing::Chunked, false, Some(20), false).await;
    assert_eq!(r.unwrap(), 20, "exactly at the cap passes");
}

#[tokio::test]
async fn prefixed_streams_replay_their_prefix_first() {
    let (a, mut b) = duplex(64);
    let mut p = Prefixed {
        prefix: Bytes::from_static(b"PRI "),
        io: a,
    };
    b.write_all(b"rest").await.unwrap();
    drop(b);
    let mut all = Vec::new();
    p.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, b"PRI rest");
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_times_out_and_moves_on() {
    let mut w = Watchdog::new();
    let now = tokio::time::Instant::now();
    // Ready at once: no timeout.
    assert_eq!(
        w.within(now + Duration::from_secs(1), async { 7 }).await,
        Some(7)
    );
    // Never ready: times out at its deadline, not earlier.
    let r = w
        .within(now + Duration::from_secs(2), std::future::pending::<()>())
        .await;
    assert_eq!(r, None);
    assert!(tokio::time::Instant::now() >= now + Duration::from_secs(2));
    // A later, longer wait is not cut short by the earlier deadline.
    let start = tokio::time::Instant::now();
    let r = w
        .within(
            start + Duration::from_secs(10),
            tokio::time::sleep(Duration::from_secs(5)),
        )
        .await;
    assert_eq!(r, Some(()));
    // A shorter deadline than the timer's pulls it in.
    let start = tokio::time::Instant::now();
    let r = w
        .within(
            start + Duration::from_millis(100),
            std::future::pending::<()>(),
        )
        .await;
    assert_eq!(r, None);
    assert!(tokio::time::Instant::now() - start < Duration::from_secs(1));
}
