//! AWS Signature Version 4 for requests the gateway sends to AWS services
//! (Bedrock): a pure function of the request, the credentials and the clock,
//! returning the headers to add.
//!
//! The canonical request follows the SigV4 specification for services other
//! than S3: the path is taken as it goes on the wire and each segment is
//! URI-encoded once more, so a Bedrock model id sent as
//! `/model/anthropic.claude-v2%3A1/converse` is signed as
//! `.../anthropic.claude-v2%253A1/...` and one sent with a bare `:` is
//! signed with `%3A`, which is what the service computes from the path it
//! receives either way (AWS's SDKs send the first form). Paths are not
//! normalised (`.` / `..` segments): the gateway builds them itself and
//! never writes those.
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Set for temporary credentials (STS, instance and pod roles).
    pub session_token: Option<String>,
}

/// Secrets stay out of logs and panics.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The headers that sign a request: `authorization`, `x-amz-date`,
/// `x-amz-content-sha256`, and `x-amz-security-token` with a session token.
///
/// `headers` are the ones the request will carry that should be signed
/// (at least `content-type`); none of them may change afterwards, so leave
/// out what a proxy on the way may rewrite (`user-agent`, hop-by-hop
/// headers). Without a `host` among them the URL's authority (less the
/// scheme's default port) is signed as the host, which is what an HTTP
/// client sends.
/// `url` must be the URI as it goes on the wire (path already
/// percent-encoded where the caller wants it).
// Every argument is an input of the signature; a struct for them would
// only be built to be taken apart here.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    region: &str,
    service: &str,
    creds: &Credentials,
    now: SystemTime,
) -> Vec<(String, String)> {
    let amz_date = amz_date(now);
    let payload_hash = hex(&Sha256::digest(body));
    let mut added = vec![
        ("x-amz-date".to_owned(), amz_date.clone()),
        ("x-amz-content-sha256".to_owned(), payload_hash.clone()),
    ];
    if let Some(token) = &creds.session_token {
        added.push(("x-amz-security-token".to_owned(), token.clone()));
    }
    let parts = UrlParts::parse(url);
    let mut all: Vec<(String, String)> = headers.iter().chain(&added).cloned().collect();
    if !all.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) && !parts.host.is_empty() {
        all.push(("host".to_owned(), parts.host.to_owned()));
    }
    let (path, query) = (parts.path, parts.query);
    let (canonical, signed_headers) = canonical_request(method, path, query, &all, &payload_hash);
    let scope = scope(&amz_date, region, service);
    let to_sign = string_to_sign(&amz_date, &scope, &canonical);
    let key = signing_key(&creds.secret_access_key, &amz_date[..8], region, service);
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    added.push((
        "authorization".to_owned(),
        format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    added
}

/// The pieces of an absolute URL the signature covers. Read by hand, not
/// with a URI type, so a URL the HTTP client would refuse still signs (and
/// then fails where the request is built, with that client's message).
struct UrlParts<'a> {
    /// As an HTTP client sends it in `Host`: lower-case is not required,
    /// the port only when it is not the scheme's default.
    host: String,
    path: &'a str,
    query: &'a str,
}

impl<'a> UrlParts<'a> {
    fn parse(url: &'a str) -> Self {
        let url = url.split_once('#').map_or(url, |(u, _)| u);
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let (authority, path_and_query) = match rest.find(['/', '?']) {
            Some(i) if !url.starts_with('/') => rest.split_at(i),
            // A bare path: no authority.
            _ if url.starts_with('/') => ("", url),
            _ => (rest, ""),
        };
        // Credentials in a URL are not part of the host.
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "https" => Some(":443"),
            "http" => Some(":80"),
            _ => None,
        };
        let host = match default_port {
            Some(port) => authority.strip_suffix(port).unwrap_or(authority),
            None => authority,
        };
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        UrlParts {
            host: host.to_owned(),
            path,
            query,
        }
    }
}

/// `YYYYMMDD'T'HHMMSS'Z'` in UTC. A clock before 1970 signs as the epoch;
/// AWS refuses it as skewed, which says what is wrong.
fn amz_date(now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

fn scope(amz_date: &str, region: &str, service: &str) -> String {
    format!("{}/{region}/{service}/aws4_request", &amz_date[..8])
}

/// The canonical request and its signed-headers list.
fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    payload_hash: &str,
) -> (String, String) {
    let path = if path.is_empty() { "/" } else { path };
    let uri = path
        .split('/')
        .map(|segment| uri_encode(segment.as_bytes()))
        .collect::<Vec<_>>()
        .join("/");

    // Names and values decoded, then encoded the one canonical way, so
    // `a=b%20c` and `a=b c` sign alike; sorted by name, then value.
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k)),
                uri_encode(&percent_decode(v)),
            )
        })
        .collect();
    params.sort();
    let query = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");

    // Lower-case names, values trimmed with inner runs of spaces folded;
    // a header sent twice is one line with its values joined by commas.
    let mut lines: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (k.trim().to_ascii_lowercase(), v)
        })
        .collect();
    // Stable: repeated headers keep the order they are sent in.
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    let mut canonical_headers = String::new();
    let mut names: Vec<&str> = Vec::new();
    for (name, value) in &lines {
        if names.last() == Some(&name.as_str()) {
            canonical_headers.pop();
            canonical_headers.push(',');
        } else {
            names.push(name);
            canonical_headers.push_str(name);
            canonical_headers.push(':');
        }
        canonical_headers.push_str(value);
        canonical_headers.push('\n');
    }
    let signed = names.join(";");
    (
        format!("{method}\n{uri}\n{query}\n{canonical_headers}\n{signed}\n{payload_hash}"),
        signed,
    )
}

fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let hash = hex(&Sha256::digest(canonical_request.as_bytes()));
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{hash}")
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Lower-case hex; four lines do not need the `hex` crate.
pub(crate) fn hex(bytes: &[u8]) -> String {
    // By table, not `write!` per byte: this runs per MCP call (argument
    // hashes) and `fmt::write` showed in its profiles.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// SigV4's URI encoding: every byte but the unreserved ones
/// (`A-Z a-z 0-9 - . _ ~`) as `%XX`, upper-case hex.
fn uri_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%XX` escapes decoded; a `%` not followed by two hex digits is itself.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_at = |j: usize| bytes.get(j).and_then(|b| char::from(*b).to_digit(16));
        match (bytes[i], hex_at(i + 1), hex_at(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                // Two hex digits: at most 255.
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn example_creds(session_token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SECRET.into(),
            session_token: session_token.map(str::to_owned),
        }
    }

    /// 2015-08-30T12:36:00Z, the documentation's clock.
    fn example_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn get<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
    }

    #[test]
    fn clock_formats_as_amz_date() {
        assert_eq!(amz_date(example_time()), "20150830T123600Z");
        assert_eq!(amz_date(UNIX_EPOCH), "19700101T000000Z");
        // A leap day and the last second of a year.
        assert_eq!(
            amz_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "20000229T000000Z"
        );
        assert_eq!(
            amz_date(UNIX_EPOCH + Duration::from_secs(1_798_761_599)),
            "20261231T235959Z"
        );
    }

    /// The IAM `ListUsers` example of the SigV4 documentation, step by step:
    /// canonical request, string to sign, signing key, signature.
    #[test]
    fn documented_iam_example() {
        let hdrs = headers(&[
            (
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("Host", "iam.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ]);
        let empty = hex(&Sha256::digest(b""));
        let (canonical, signed) = canonical_request(
            "GET",
            "/",
            "Action=ListUsers&Version=2010-05-08",
            &hdrs,
            &empty,
        );
        assert_eq!(
            canonical,
            "GET\n/\nAction=ListUsers&Version=2010-05-08\n\
             content-type:application/x-www-form-urlencoded; charset=utf-8\n\
             host:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
             content-type;host;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(signed, "content-type;host;x-amz-date");
        assert_eq!(
            hex(&Sha256::digest(canonical.as_bytes())),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let scope = scope("20150830T123600Z", "us-east-1", "iam");
        let to_sign = string_to_sign("20150830T123600Z", &scope, &canonical);
        assert_eq!(
            to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\n\
             f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let key = signing_key(SECRET, "20150830", "us-east-1", "iam");
        assert_eq!(
            hex(&key),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
        assert_eq!(
            hex(&hmac(&key, to_sign.as_bytes())),
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    /// `get-vanilla-query-order-key-case` of the AWS SigV4 test suite:
    /// parameters sorted, host signed.
    #[test]
    fn test_suite_query_order() {
        let hdrs = headers(&[
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ]);
        let empty = hex(&Sha256::digest(b""));
        let (canonical, _) =
            canonical_request("GET", "/", "Param2=value2&Param1=value1", &hdrs, &empty);
        assert!(canonical.starts_with("GET\n/\nParam1=value1&Param2=value2\n"));
        let scope = scope("20150830T123600Z", "us-east-1", "service");
        let to_sign = string_to_sign("20150830T123600Z", &scope, &canonical);
        let key = signing_key(SECRET, "20150830", "us-east-1", "service");
        assert_eq!(
            hex(&hmac(&key, to_sign.as_bytes())),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    /// The public function on a Bedrock Converse call with temporary
    /// credentials. The expected signature was computed independently with
    /// botocore's `SigV4Auth` on the same request (same headers, the same
    /// `x-amz-content-sha256` set beforehand).
    #[test]
    fn bedrock_post_with_session_token() {
        let url = "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1:0/converse";
        let body = br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
        let hdrs = headers(&[("content-type", "application/json")]);
        let creds = example_creds(Some("FQoGZXIvYXdzEXAMPLETOKEN//+="));
        let added = sign(
            "POST",
            url,
            &hdrs,
            body,
            "us-east-1",
            "bedrock",
            &creds,
            example_time(),
        );
        let names: Vec<_> = added.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-amz-date",
                "x-amz-content-sha256",
                "x-amz-security-token",
                "authorization"
            ]
        );
        assert_eq!(get(&added, "x-amz-date"), "20150830T123600Z");
        assert_eq!(
            get(&added, "x-amz-content-sha256"),
            hex(&Sha256::digest(body))
        );
        assert_eq!(
            get(&added, "x-amz-security-token"),
            "FQoGZXIvYXdzEXAMPLETOKEN//+="
        );
        assert_eq!(
            get(&added, "authorization"),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, \
                 Signature={BEDROCK_SIGNATURE}"
            )
        );

        // The model id's `:` is encoded in the canonical URI; sent already
        // encoded, the `%` is encoded once more.
        let (canonical, _) = canonical_request(
            "POST",
            UrlParts::parse(url).path,
            "",
            &headers(&[("host", "h")]),
            "x",
        );
        assert!(
            canonical
                .starts_with("POST\n/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse\n\n"),
            "{canonical}"
        );
        let (canonical, _) = canonical_request(
            "POST",
            "/model/arn%3Aaws%3Abedrock%2Fx/converse-stream",
            "",
            &headers(&[("host", "h")]),
            "x",
        );
        assert!(
            canonical.starts_with("POST\n/model/arn%253Aaws%253Abedrock%252Fx/converse-stream\n"),
            "{canonical}"
        );
    }

    const BEDROCK_SIGNATURE: &str =
        "6b11d47391cb60699a696abd5ce34cb780d878ba82d9861d545d0c92062e0796";

    #[test]
    fn without_session_token_and_with_a_host_given() {
        let url = "https://example.amazonaws.com:8443/?b=2&a=1";
        let added = sign(
            "GET",
            url,
            &[],
            b"",
            "eu-west-1",
            "service",
            &example_creds(None),
            example_time(),
        );
        assert!(added.iter().all(|(k, _)| k != "x-amz-security-token"));
        assert!(get(&added, "authorization")
            .contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date,"));
        // The non-default port is part of the signed host: the same as
        // giving that host explicitly.
        let explicit = sign(
            "GET",
            url,
            &headers(&[("Host", "example.amazonaws.com:8443")]),
            b"",
            "eu-west-1",
            "service",
            &example_creds(None),
            example_time(),
        );
        assert_eq!(added, explicit);
        // And the default one is not.
        let url = "https://example.amazonaws.com:443/";
        let default_port = sign(
            "GET",
            url,
            &headers(&[("Host", "example.amazonaws.com")]),
            b"",
            "eu-west-1",
            "service",
            &example_creds(None),
            example_time(),
        );
        let no_port = sign(
            "GET",
            url,
            &[],
            b"",
            "eu-west-1",
            "service",
            &example_creds(None),
            example_time(),
        );
        assert_eq!(default_port, no_port);
    }

    #[test]
    fn url_parts() {
        let cases = [
            (
                "https://h.example:443/a/b?x=1#frag",
                "h.example",
                "/a/b",
                "x=1",
            ),
            ("http://h.example:80", "h.example", "", ""),
            ("http://h.example:8080?q", "h.example:8080", "", "q"),
            ("https://user:pw@h.example/p", "h.example", "/p", ""),
            ("/only/path?z", "", "/only/path", "z"),
        ];
        for (url, host, path, query) in cases {
            let p = UrlParts::parse(url);
            assert_eq!(
                (p.host.as_str(), p.path, p.query),
                (host, path, query),
                "{url}"
            );
        }
    }

    #[test]
    fn canonical_headers_and_query() {
        let hdrs = headers(&[
            ("My-Header1", "  a   b   c  "),
            ("Host", "example.amazonaws.com"),
            ("my-header1", "second"),
        ]);
        let (canonical, signed) =
            canonical_request("GET", "", "b=x%20y&a=%7E~&a=1&flag&c=%ZZ", &hdrs, "p");
        assert_eq!(
            canonical,
            "GET\n/\na=1&a=~~&b=x%20y&c=%25ZZ&flag=\nhost:example.amazonaws.com\nmy-header1:a b c,second\n\nhost;my-header1\np"
        );
        assert_eq!(signed, "host;my-header1");
        assert_eq!(uri_encode("a b/é*".as_bytes()), "a%20b%2F%C3%A9%2A");
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let shown = format!("{:?}", example_creds(Some("token")));
        assert!(
            !shown.contains(SECRET) && !shown.contains("token\""),
            "{shown}"
        );
        assert!(shown.contains("AKIDEXAMPLE"));
    }
}
