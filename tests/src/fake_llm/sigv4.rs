//! The receiving side of AWS Signature Version 4, as the Bedrock fake
//! checks it: the `authorization` header's form, the credential scope,
//! the clock, the payload hash and — given the secret — the signature
//! itself, recomputed. Written from the AWS documentation ("Elements of an
//! AWS API request signature", "Create a signed AWS API request"), apart
//! from the gateway's signer, so a mistake in one is not repeated in the
//! other.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const SERVICE: &str = "bedrock";
/// How far the signing time may be from the fake's clock (AWS: 15 min).
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// The credentials a fake verifies signatures with.
#[derive(Debug, Clone)]
pub(super) struct AwsKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

/// What the fake made of a request's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigV4Check {
    /// Recomputed with the expected credentials: equal.
    Verified,
    /// Well formed, fresh and with the right payload hash; not recomputed
    /// (the fake was given no credentials).
    WellFormed,
    /// Refused, as AWS would with a 403: the error type and why.
    Rejected { error_type: String, reason: String },
}

pub(super) fn check(
    method: &str,
    path: &str,
    headers: &BTreeMap<String, String>,
    body: &[u8],
    key: Option<&AwsKey>,
    now: SystemTime,
) -> SigV4Check {
    match verify(method, path, headers, body, key, now) {
        Ok(true) => SigV4Check::Verified,
        Ok(false) => SigV4Check::WellFormed,
        Err(rejected) => rejected,
    }
}

fn reject(error_type: &str, reason: impl Into<String>) -> SigV4Check {
    SigV4Check::Rejected {
        error_type: error_type.to_string(),
        reason: reason.into(),
    }
}

fn incomplete(reason: impl Into<String>) -> SigV4Check {
    reject("IncompleteSignatureException", reason)
}

/// `Ok(true)`: verified; `Ok(false)`: well formed, no key to verify with.
fn verify(
    method: &str,
    path: &str,
    headers: &BTreeMap<String, String>,
    body: &[u8],
    key: Option<&AwsKey>,
    now: SystemTime,
) -> Result<bool, SigV4Check> {
    let Some(auth) = headers.get("authorization") else {
        return Err(reject(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let Some(fields) = auth
        .strip_prefix(ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
    else {
        return Err(incomplete(format!(
            "Authorization header requires the {ALGORITHM} algorithm: {auth:?}"
        )));
    };
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for field in fields.split(',').map(str::trim) {
        match field.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {
                return Err(incomplete(format!(
                    "unexpected element {field:?} in {auth:?}"
                )))
            }
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(incomplete(format!(
            "Authorization header requires Credential, SignedHeaders and Signature: {auth:?}"
        )));
    };

    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminator] = scope[..] else {
        return Err(incomplete(format!(
            "Credential must be <key id>/<date>/<region>/<service>/aws4_request: {credential:?}"
        )));
    };
    if key_id.is_empty()
        || date.len() != 8
        || !date.bytes().all(|b| b.is_ascii_digit())
        || region.is_empty()
        || service != SERVICE
        || terminator != "aws4_request"
    {
        return Err(incomplete(format!(
            "Credential scope must be <key id>/<yyyymmdd>/<region>/{SERVICE}/aws4_request: {credential:?}"
        )));
    }

    let names: Vec<&str> = signed.split(';').collect();
    if names
        .iter()
        .any(|n| n.is_empty() || n.bytes().any(|b| b.is_ascii_uppercase()))
        || !names.windows(2).all(|w| w[0] < w[1])
    {
        return Err(incomplete(format!(
            "SignedHeaders must be lower-case names, sorted, separated by ';': {signed:?}"
        )));
    }
    for must in ["host", "x-amz-date"] {
        if !names.contains(&must) {
            return Err(incomplete(format!(
                "SignedHeaders must include {must}: {signed:?}"
            )));
        }
    }
    if let Some(missing) = names.iter().find(|n| !headers.contains_key(**n)) {
        return Err(incomplete(format!(
            "the signed header {missing} is not in the request"
        )));
    }
    if signature.len() != 64
        || !signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(incomplete(format!(
            "Signature must be 64 lower-case hex digits: {signature:?}"
        )));
    }

    let amz_date = headers["x-amz-date"].as_str();
    let Some(signed_at) = parse_amz_date(amz_date) else {
        return Err(incomplete(format!(
            "x-amz-date must be yyyymmddThhmmssZ: {amz_date:?}"
        )));
    };
    if !amz_date.starts_with(date) {
        return Err(reject(
            "InvalidSignatureException",
            format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{date}' != '{}'",
                &amz_date[..8]
            ),
        ));
    }
    let skew = now
        .duration_since(signed_at)
        .or_else(|_| signed_at.duration_since(now))
        .unwrap_or_default();
    if skew > MAX_SKEW {
        return Err(reject(
            "InvalidSignatureException",
            format!("Signature expired or not yet valid: signed at {amz_date}, {skew:?} from now"),
        ));
    }

    let payload_hash = hex(&Sha256::digest(body));
    if let Some(claimed) = headers.get("x-amz-content-sha256") {
        if *claimed != payload_hash {
            return Err(reject(
                "InvalidSignatureException",
                format!("x-amz-content-sha256 {claimed} is not the SHA-256 of the body ({payload_hash})"),
            ));
        }
    }

    let Some(key) = key else {
        return Ok(false);
    };
    if key_id != key.access_key_id {
        return Err(reject(
            "UnrecognizedClientException",
            format!(
                "The security token included in the request is invalid (access key id {key_id:?})."
            ),
        ));
    }
    if region != key.region {
        return Err(reject(
            "InvalidSignatureException",
            format!("Credential should be scoped to a valid region, not '{region}'."),
        ));
    }
    let canonical = canonical_request(method, path, headers, &names, &payload_hash);
    let expected = signature_of(
        &key.secret_access_key,
        amz_date,
        region,
        SERVICE,
        &canonical,
    );
    if signature != expected {
        return Err(reject(
            "InvalidSignatureException",
            format!(
                "The request signature we calculated does not match the signature you provided. \
                 The Canonical String for this request should have been\n{canonical}"
            ),
        ));
    }
    Ok(true)
}

/// Method, canonical URI, canonical query, the signed headers as
/// `name:value` lines, the signed header names, the payload hash — one a
/// line.
fn canonical_request(
    method: &str,
    path_and_query: &str,
    headers: &BTreeMap<String, String>,
    signed: &[&str],
    payload_hash: &str,
) -> String {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    // Every service but S3 encodes each segment of the path as it was
    // sent once more: an id sent as `v1%3A0` is signed as `v1%253A0`.
    let uri = if path.is_empty() {
        "/".to_string()
    } else {
        path.split('/')
            .map(|s| uri_encode(s.as_bytes()))
            .collect::<Vec<_>>()
            .join("/")
    };
    // The query's names and values are encoded exactly once, then sorted.
    let mut pairs: Vec<(String, String)> = query
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
    pairs.sort();
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut lines = format!("{method}\n{uri}\n{query}\n");
    for name in signed {
        let value = headers.get(*name).map(String::as_str).unwrap_or_default();
        // Trimmed, inner runs of spaces made one.
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        lines.push_str(&format!("{name}:{value}\n"));
    }
    lines.push_str(&format!("\n{}\n{payload_hash}", signed.join(";")));
    lines
}

/// The hex signature of `canonical` under the derived signing key.
fn signature_of(
    secret: &str,
    amz_date: &str,
    region: &str,
    service: &str,
    canonical: &str,
) -> String {
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    hex(&hmac(&k_signing, to_sign.as_bytes()))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 3986 unreserved characters stay, every other byte becomes `%XX`.
fn uri_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex_at = |j: usize| {
            b.get(j)
                .and_then(|c| (*c as char).to_digit(16))
                .map(|d| d as u8)
        };
        match (b[i], hex_at(i + 1), hex_at(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi * 16 + lo);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// `yyyymmddThhmmssZ` (UTC) as a time.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, sec) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let secs = days_since_epoch(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days from 1970-01-01 to a proleptic Gregorian date, counting years
/// from March so the leap day ends the year.
fn days_since_epoch(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The worked example of the AWS documentation (IAM `ListUsers`).
    #[test]
    fn the_documented_example_signs_as_documented() {
        let h = headers(&[
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("host", "iam.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
        ]);
        let canonical = canonical_request(
            "GET",
            "/?Version=2010-05-08&Action=ListUsers",
            &h,
            &["content-type", "host", "x-amz-date"],
            &hex(&Sha256::digest(b"")),
        );
        assert_eq!(
            hex(&Sha256::digest(canonical.as_bytes())),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59",
            "{canonical}"
        );
        assert_eq!(
            signature_of(
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                "20150830T123600Z",
                "us-east-1",
                "iam",
                &canonical
            ),
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(days_since_epoch(1970, 1, 1), 0);
        assert_eq!(days_since_epoch(2000, 3, 1), 11_017);
        assert_eq!(
            parse_amz_date("20150830T123600Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_440_938_160))
        );
        assert_eq!(parse_amz_date("2015-08-30T12:36:00Z"), None);
    }

    /// A Bedrock request signed here (the signing half of this module)
    /// and checked as the fake checks what the gateway sends.
    #[test]
    fn a_bedrock_request_verifies_and_tampering_does_not() {
        let key = AwsKey {
            access_key_id: "AKIDFAKE".into(),
            secret_access_key: "secret/fake".into(),
            region: "us-east-1".into(),
        };
        let at = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let path = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse";
        let body = br#"{"messages":[]}"#;
        let hash = hex(&Sha256::digest(body));
        let mut h = headers(&[
            ("content-type", "application/json"),
            ("host", "10.0.0.1:8080"),
            ("x-amz-date", "20150830T123600Z"),
            ("x-amz-content-sha256", &hash),
        ]);
        let names = ["content-type", "host", "x-amz-content-sha256", "x-amz-date"];
        let canonical = canonical_request("POST", path, &h, &names, &hash);
        assert!(
            canonical.contains("/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse\n"),
            "{canonical}"
        );
        let sig = signature_of(
            &key.secret_access_key,
            "20150830T123600Z",
            "us-east-1",
            "bedrock",
            &canonical,
        );
        h.insert(
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDFAKE/20150830/us-east-1/bedrock/aws4_request, \
                 SignedHeaders={}, Signature={sig}",
                names.join(";")
            ),
        );
        assert_eq!(
            check("POST", path, &h, body, Some(&key), at),
            SigV4Check::Verified
        );
        assert_eq!(
            check("POST", path, &h, body, None, at),
            SigV4Check::WellFormed
        );
        let rejected = |c: SigV4Check| match c {
            SigV4Check::Rejected { error_type, .. } => error_type,
            other => panic!("accepted: {other:?}"),
        };
        // Another body (its hash header kept), path, secret, clock.
        assert_eq!(
            rejected(check(
                "POST",
                path,
                &h,
                br#"{"messages":[1]}"#,
                Some(&key),
                at
            )),
            "InvalidSignatureException"
        );
        assert_eq!(
            rejected(check(
                "POST",
                &path.replace("%3A", ":"),
                &h,
                body,
                Some(&key),
                at
            )),
            "InvalidSignatureException"
        );
        let wrong = AwsKey {
            secret_access_key: "other".into(),
            ..key.clone()
        };
        assert_eq!(
            rejected(check("POST", path, &h, body, Some(&wrong), at)),
            "InvalidSignatureException"
        );
        assert_eq!(
            rejected(check(
                "POST",
                path,
                &h,
                body,
                Some(&key),
                at + Duration::from_secs(3600)
            )),
            "InvalidSignatureException"
        );
        let mut unsigned = h.clone();
        unsigned.remove("authorization");
        assert_eq!(
            rejected(check("POST", path, &unsigned, body, Some(&key), at)),
            "MissingAuthenticationTokenException"
        );
        let mut bad = h.clone();
        bad.insert(
            "authorization".into(),
            h["authorization"].replace("SignedHeaders=content-type;", "SignedHeaders="),
        );
        assert_eq!(
            rejected(check("POST", path, &bad, body, Some(&key), at)),
            "InvalidSignatureException"
        );
    }
}
