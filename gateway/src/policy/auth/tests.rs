//! Authentication tests: real keys (P-256, P-384, Ed25519 made with ring),
//! real signatures (jsonwebtoken), JWKS from files and from a plain-HTTP
//! server on 127.0.0.1.
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hyper::{header::HeaderValue, HeaderMap};
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use ring::{
    rand::SystemRandom,
    signature::{
        EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
        ECDSA_P384_SHA384_FIXED_SIGNING,
    },
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::{ApiKey, AuthConfig, JwtProvider};

const ISS: &str = "https://idp.example";

// ---------------------------------------------------------------- helpers

struct TestKey {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn ec_key(kid: &str, p384: bool) -> TestKey {
    let rng = SystemRandom::new();
    let (alg, signing, crv, len) = if p384 {
        (
            Algorithm::ES384,
            &ECDSA_P384_SHA384_FIXED_SIGNING,
            "P-384",
            48,
        )
    } else {
        (
            Algorithm::ES256,
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            "P-256",
            32,
        )
    };
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).expect("generate EC key");
    let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).expect("parse EC key");
    let public = pair.public_key().as_ref(); // 0x04 || x || y
    TestKey {
        alg,
        kid: kid.into(),
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({
            "kty": "EC", "crv": crv, "kid": kid, "use": "sig",
            "x": b64(&public[1..1 + len]), "y": b64(&public[1 + len..]),
        }),
    }
}

fn p256(kid: &str) -> TestKey {
    ec_key(kid, false)
}

fn ed25519(kid: &str) -> TestKey {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generate Ed25519");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse Ed25519");
    TestKey {
        alg: Algorithm::EdDSA,
        kid: kid.into(),
        encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: json!({
            "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA",
            "x": b64(pair.public_key().as_ref()),
        }),
    }
}

fn jwks(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

fn now() -> u64 {
    get_current_timestamp()
}

fn good_claims() -> Value {
    json!({
        "iss": ISS, "aud": "api", "sub": "alice", "exp": now() + 600,
        "groups": ["dev", "ops"],
    })
}

fn sign_with(key: &TestKey, kid: Option<&str>, alg: Algorithm, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key.encoding).expect("sign")
}

fn sign(key: &TestKey, claims: &Value) -> String {
    sign_with(key, Some(&key.kid), key.alg, claims)
}

/// A file in the temp dir, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(content: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "trigate-auth-test-{}-{}.json",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, content).expect("write temp file");
        TempFile(path)
    }

    fn write(&self, content: &str) {
        std::fs::write(&self.0, content).expect("rewrite temp file");
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn provider(name: &str, file: Option<&TempFile>, url: Option<String>) -> JwtProvider {
    JwtProvider {
        name: name.into(),
        issuer: ISS.into(),
        audiences: vec!["api".into()],
        jwks_file: file.map(|f| f.0.clone()),
        jwks_url: url,
        jwks_refresh_secs: 300,
        algorithms: vec!["ES256".into(), "ES384".into(), "EdDSA".into()],
        clock_skew_secs: 60,
    }
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn api_keys() -> Vec<ApiKey> {
    vec![
        ApiKey {
            name: "ci".into(),
            sha256: sha256_hex("ci-secret-1"),
        },
        ApiKey {
            name: "batch".into(),
            sha256: sha256_hex("batch-secret-2").to_uppercase(),
        },
    ]
}

fn auth(jwt: Vec<JwtProvider>) -> Arc<Authenticator> {
    Authenticator::new(&AuthConfig {
        jwt,
        api_keys: api_keys(),
        api_key_header: "x-api-key".into(),
    })
    .expect("authenticator")
}

/// An authenticator with one file provider "corp" holding `keys`.
fn corp(keys: &[&TestKey]) -> (Arc<Authenticator>, TempFile) {
    let file = TempFile::new(&jwks(keys));
    (auth(vec![provider("corp", Some(&file), None)]), file)
}

fn methods(m: &[&str]) -> Vec<String> {
    m.iter().map(|s| s.to_string()).collect()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

fn bearer(token: &str) -> HeaderMap {
    headers(&[("authorization", &format!("Bearer {token}"))])
}

/// Runs the route methods `m` as `authenticate` does, for a caller without
/// a workload.
fn run(a: &Authenticator, m: &[&str], h: &HeaderMap) -> Result<Caller, AuthError> {
    let mut caller = Caller::default();
    a.authenticate(&methods(m), h, &mut caller).map(|()| caller)
}

fn refused(a: &Authenticator, m: &[&str], h: &HeaderMap) -> AuthError {
    match run(a, m, h) {
        Ok(c) => panic!("expected a refusal, got {c:?}"),
        Err(e) => e,
    }
}

fn invalid(p: TokenProblem) -> AuthError {
    AuthError::InvalidToken(p)
}

// ---------------------------------------------------------------- JWT

#[test]
fn es256_token_accepted_with_claims() {
    let key = p256("k1");
    let (a, _f) = corp(&[&key]);
    let caller = run(&a, &["jwt:corp"], &bearer(&sign(&key, &good_claims()))).expect("accepted");
    let jwt = caller.jwt.expect("jwt identity");
    assert_eq!(jwt.provider, "corp");
    assert_eq!(jwt.subject.as_deref(), Some("alice"));
    assert_eq!(jwt.claims["groups"], json!(["dev", "ops"]));
    assert!(caller.api_key.is_none());
}

#[test]
fn eddsa_and_es384_tokens_accepted() {
    let ed = ed25519("ed");
    let p384 = ec_key("p384", true);
    let (a, _f) = corp(&[&ed, &p384]);
    for key in [&ed, &p384] {
        let caller = run(&a, &["jwt:corp"], &bearer(&sign(key, &good_claims())))
            .unwrap_or_else(|e| panic!("{:?}: {e}", key.alg));
        assert_eq!(caller.jwt.expect("jwt").subject.as_deref(), Some("alice"));
    }
}

#[test]
fn expiry_is_checked_with_the_clock_skew() {
    let key = p256("k1");
    let (a, _f) = corp(&[&key]);
    let mut claims = good_claims();
    claims["exp"] = json!(now() - 120); // skew is 60 s
    assert_eq!(
        refused(&a, &["jwt:corp"], &bearer(&sign(&key, &claims))),
        invalid(TokenProblem::Expired)
    );
    claims["exp"] = json!(now() - 20);
    assert!(run(&a, &["jwt:corp"], &bearer(&sign(&key, &claims))).is_ok());
}

#[test]
fn exp_is_required_and_must_be_a_number() {
    let key = p256("k1");
    let (a, _f) = corp(&[&key]);
    let mut claims = good_claims();
    claims.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        refused(&a, &["jwt:corp"], &bearer(&sign(&key, &claims))),
        invalid(TokenProblem::MissingClaim("exp"))
    );
    claims["exp"] = json!("tomorrow");
    assert!(matches!(
        refused(&a, &["jwt:corp"], &bearer(&sign(&key, &claims))),
        AuthError::InvalidToken(
            TokenProblem::MissingClaim("exp") | TokenProblem::MalformedClaim("exp")
        )
    ));
}

#[test]
fn nbf_is_honoured_with_the_clock_skew() {
    let key = p256("k1");
    let (a, _f) = corp(&[&key]);
    let mut claims = good_claims();
    claims["nbf"] = json!(now() + 300);
    assert_eq!(
        refused(&a, &["jwt:corp"], &bearer(&sign(&key, &claims))),
        invalid(TokenProblem::NotYetValid)
    );
    claims["nbf"] = json!(now() + 20);
    assert!(run(&a, &["jwt:corp"], &bearer(&sign(&key, &claims))).is_ok());
}

#[test]
fn wrong_or_missing_issuer_refused() {
    let key = p256("k1");
    let (a, _f) = corp(&[&key]);
    let mut claims = good_claims();
    claims["iss"] = json!("https://evil.example");
    assert_eq!(
        refused(&a, &["jwt:corp"], &bearer(&sign(&key, &claims))),
        invalid(TokenProblem::WrongIssuer)
    );
    claims.as_object_mut().unwrap().remove("iss");
    assert_eq!(
        refused(&a, &["jwt:corp"], &bearer(&sign(&key, &claims))),
        invalid(TokenProblem::MissingClaim("iss"))
    );
}

#[test]
fn audience_checked_when_configured() {
    let key = p256("k1");
    let (a, file) = corp(&[&key]);
    let mut claims = good_claims();
    claims["aud"] = json!("other");
    assert_eq!(
        refused(&a, &["jwt:corp"], &bearer(&sign(&key, &claims))),
        invalid(TokenProblem::WrongAudience)
    );
    claims["aud"] = json!(["other", "api"]);
    assert!(run(&a, &["jwt:corp"], &bearer(&sign(&key, &claims))).is_ok());
    claims.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        refused(&a, &["jwt:corp"], &bearer(&sign(&key, &claims))),
        invalid(TokenProblem::MissingClaim("aud"))
    );

    // No audiences configured: aud is not checked, present or not.
    let mut p = provider("open", Some(&file), None);
    p.audiences.clear();
    let open = auth(vec![p]);
    assert!(run(&open, &["jwt:open"], &bearer(&sign(&key, &claims))).is_ok());
    claims["aud"] = json!("anything");
    assert!(run(&open, &["jwt:open"], &bearer(&sign(&key, &claims))).is_ok());
}

#[test]
fn key_selection_by_kid() {
    let k1 = p256("k1");
    let k2 = p256("k2");
    let (a, _f) = corp(&[&k1, &k2]);
    let claims = good_claims();
    // The kid picks the key.
    assert!(run(&a, &["jwt:corp"], &bearer(&sign(&k2, &claims))).is_ok());
    // Unknown kid.
    assert_eq!(
        refused(
            &a,
            &["jwt:corp"],
            &bearer(&sign_with(&k1, Some("nope"), Algorithm::ES256, &claims))
        ),
        invalid(TokenProblem::UnknownKey)
    );
    // No kid while several keys are published.
    assert_eq!(
        refused(
            &a,
            &["jwt:corp"],
            &bearer(&sign_with(&k1, None, Algorithm::ES256, &claims))
        ),
        invalid(TokenProblem::UnknownKey)
    );
    // No kid and a single key: that key.
    let (single, _g) = corp(&[&k1]);
    assert!(run(
        &single,
        &["jwt:corp"],
        &bearer(&sign_with(&k1, None, Algorithm::ES256, &claims))
    )
    .is_ok());
}

#[test]
fn signature_by_another_key_refused() {
    let published = p256("k1");
    let attacker = p256("k1"); // same kid, different key
    let (a, _f) = corp(&[&published]);
    assert_eq!(
        refused(&a, &["jwt:corp"], &bearer(&sign(&attacker, &good_claims()))),
        invalid(TokenProblem::BadSignature)
    );
}

#[test]
fn tampered_claims_refused() {
    let key = p256("k1");
    let (a, _f) = corp(&[&key]);
    let token = sign(&key, &good_claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut claims = good_claims();
    claims["sub"] = json!("root");
    let forged = b64(claims.to_string().as_bytes());
    parts[1] = &forged;
    assert_eq!(
        refused(&a, &["jwt:corp"], &bearer(&parts.join("."))),
        invalid(TokenProblem::BadSignature)
    );
}

#[test]
fn algorithm_outside_the_providers_list_refused() {
    let ed = ed25519("ed");
    let file = TempFile::new(&jwks(&[&ed]));
    let mut p = provider("corp", Some(&file), None);
    p.algorithms = vec!["ES256".into()];
    let a = auth(vec![p]);
    assert_eq!(
        refused(&a, &["jwt:corp"], &bearer(&sign(&ed, &good_claims()))),
        invalid(TokenProblem::AlgorithmNotAccepted("EdDSA".into()))
    );
}

#[test]
fn alg_none_refused() {
    let key = p256("k1");
    let (a, _f) = corp(&[&key]);
    let header = b64(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
    let claims = b64(good_claims().to_string().as_bytes());
    for token in [
        format!("{header}.{claims}."),
        format!("{header}.{claims}.c2ln"),
    ] {
        let e = refused(&a, &["jwt:corp"], &bearer(&token));
        assert_eq!(
            e,
            invalid(TokenProblem::AlgorithmNotAccepted("none".into()))
        );
        assert_eq!(e.to_string(), "invalid token: algorithm none not accepted");
    }
    // Nor as an API key on a route that also takes keys.
    assert_eq!(
        refused(
            &a,
            &["api-key", "jwt:corp"],
            &bearer(&format!("{header}.{claims}."))
        ),
        invalid(TokenProblem::AlgorithmNotAccepted("none".into()))
    );
}

#[test]
fn hs256_refused_even_with_the_public_key_as_secret() {
    let key = p256("k1");
    let (a, _f) = corp(&[&key]);
    // The classic confusion: HMAC keyed with the published public key.
    let x = key.jwk["x"].as_str().unwrap().to_string();
    let hmac = TestKey {
        alg: Algorithm::HS256,
        kid: "k1".into(),
        encoding: EncodingKey::from_secret(x.as_bytes()),
        jwk: Value::Null,
    };
    assert_eq!(
        refused(&a, &["jwt:corp"], &bearer(&sign(&hmac, &good_claims()))),
        invalid(TokenProblem::AlgorithmNotAccepted("HS256".into()))
    );
    // And HS* cannot be configured.
    let file = TempFile::new(&jwks(&[&key]));
    let mut p = provider("hs", Some(&file), None);
    p.algorithms = vec!["HS256".into()];
    let e = Authenticator::new(&AuthConfig {
        jwt: vec![p],
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("auth.jwt[hs]: algorithms: \"HS256\" is not supported"),
        "{e}"
    );
}

#[test]
fn algorithm_must_fit_the_key() {
    // A P-256 key named by an ES384 token (both algorithms accepted).
    let key = p256("k1");
    let (a, _f) = corp(&[&key]);
    let p384 = ec_key("k1", true);
    let token = sign_with(&p384, Some("k1"), Algorithm::ES384, &good_claims());
    assert_eq!(
        refused(&a, &["jwt:corp"], &bearer(&token)),
        invalid(TokenProblem::KeyAlgorithmMismatch)
    );
}

#[test]
fn missing_and_malformed_bearer() {
    let key = p256("k1");
    let (a, _f) = corp(&[&key]);
    let e = refused(&a, &["jwt:corp"], &HeaderMap::new());
    assert_eq!(
        e,
        AuthError::Missing {
            accepted: "jwt:corp".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "missing credentials: this route accepts jwt:corp"
    );
    // Another scheme is not a bearer token.
    assert!(matches!(
        refused(
            &a,
            &["jwt:corp"],
            &headers(&[("authorization", "Basic dXNlcjpwYXNz")])
        ),
        AuthError::Missing { .. }
    ));
    // Garbage where only JWTs are accepted.
    assert_eq!(
        refused(&a, &["jwt:corp"], &bearer("not-a-token")),
        invalid(TokenProblem::Malformed)
    );
    assert_eq!(
        refused(&a, &["jwt:corp"], &bearer("e30.e30.")), // {} . {} : no alg
        invalid(TokenProblem::Malformed)
    );
    // The scheme is case-insensitive.
    let token = sign(&key, &good_claims());
    assert!(run(
        &a,
        &["jwt:corp"],
        &headers(&[("authorization", &format!("bearer {token}"))])
    )
    .is_ok());
}

// ---------------------------------------------------------------- API keys

#[test]
fn api_key_by_header_and_by_bearer() {
    let a = auth(vec![]);
    let by_header =
        run(&a, &["api-key"], &headers(&[("x-api-key", "ci-secret-1")])).expect("header");
    assert_eq!(by_header.api_key.as_deref(), Some("ci"));
    // The hash may be configured in upper case.
    let by_bearer = run(&a, &["api-key"], &bearer("batch-secret-2")).expect("bearer");
    assert_eq!(by_bearer.api_key.as_deref(), Some("batch"));
    // A JWT-shaped key is still a key when the route takes no JWT.
    let dotted = Authenticator::new(&AuthConfig {
        api_keys: vec![ApiKey {
            name: "dotted".into(),
            sha256: sha256_hex("abc.def.ghi"),
        }],
        ..AuthConfig::default()
    })
    .expect("authenticator");
    assert_eq!(
        run(&dotted, &["api-key"], &bearer("abc.def.ghi"))
            .expect("dotted")
            .api_key
            .as_deref(),
        Some("dotted")
    );
}

#[test]
fn wrong_api_key_refused() {
    let a = auth(vec![]);
    for h in [
        headers(&[("x-api-key", "ci-secret-2")]),
        bearer("nope"),
        headers(&[("x-api-key", "")]),
    ] {
        let e = refused(&a, &["api-key"], &h);
        assert_eq!(e, AuthError::UnknownApiKey);
        assert_eq!(e.to_string(), "unknown API key");
    }
    assert_eq!(
        refused(&a, &["api-key"], &HeaderMap::new()),
        AuthError::Missing {
            accepted: "api-key".into()
        }
    );
    // A key of another header name is not looked at.
    assert!(matches!(
        refused(
            &a,
            &["api-key"],
            &headers(&[("x-other-key", "ci-secret-1")])
        ),
        AuthError::Missing { .. }
    ));
}

#[test]
fn custom_api_key_header() {
    let a = Authenticator::new(&AuthConfig {
        api_keys: api_keys(),
        api_key_header: "X-Trigate-Key".into(),
        ..AuthConfig::default()
    })
    .expect("authenticator");
    assert!(run(
        &a,
        &["api-key"],
        &headers(&[("x-trigate-key", "ci-secret-1")])
    )
    .is_ok());
    assert!(matches!(
        refused(&a, &["api-key"], &headers(&[("x-api-key", "ci-secret-1")])),
        AuthError::Missing { .. }
    ));
}

#[test]
fn api_key_hashes_compare_whole() {
    let a = auth(vec![]);
    assert_eq!(a.api_key_name("ci-secret-1"), Some("ci"));
    assert_eq!(a.api_key_name("ci-secret-"), None);
    assert_eq!(a.api_key_name(""), None);
    assert_eq!(
        parse_sha256_hex(&sha256_hex("x")).unwrap(),
        <[u8; 32]>::from(Sha256::digest(b"x"))
    );
}

// ---------------------------------------------------------------- methods

#[test]
fn no_methods_means_no_authentication() {
    let a = auth(vec![]);
    let mut caller = Caller {
        api_key: Some("kept".into()),
        ..Caller::default()
    };
    a.authenticate(&[], &bearer("whatever"), &mut caller)
        .expect("ok");
    assert_eq!(caller.api_key.as_deref(), Some("kept"));
    assert!(caller.jwt.is_none());
}

#[test]
fn workload_method() {
    let a = auth(vec![]);
    let none = HeaderMap::new();
    assert!(matches!(
        a.decide(&methods(&["workload"]), &none, true),
        Ok(Authenticated::Workload)
    ));
    let e = a.decide(&methods(&["workload"]), &none, false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "missing credentials: this route accepts workload"
    );
    // Falls through to the next method.
    let key = headers(&[("x-api-key", "ci-secret-1")]);
    assert!(matches!(
        a.decide(&methods(&["workload", "api-key"]), &key, false),
        Ok(Authenticated::ApiKey(n)) if n == "ci"
    ));
    // First success wins: the workload, though a key is presented too.
    assert!(matches!(
        a.decide(&methods(&["workload", "api-key"]), &key, true),
        Ok(Authenticated::Workload)
    ));
    // Through authenticate: no workload on the caller.
    assert!(matches!(
        refused(&a, &["workload"], &none),
        AuthError::Missing { .. }
    ));
}

#[test]
fn methods_tried_in_order_first_success_wins() {
    let key = p256("k1");
    let (a, _f) = corp(&[&key]);
    let token = sign(&key, &good_claims());
    let both = headers(&[
        ("x-api-key", "ci-secret-1"),
        ("authorization", &format!("Bearer {token}")),
    ]);
    let c = run(&a, &["jwt:corp", "api-key"], &both).unwrap();
    assert!(c.jwt.is_some() && c.api_key.is_none());
    let c = run(&a, &["api-key", "jwt:corp"], &both).unwrap();
    assert!(c.api_key.is_some() && c.jwt.is_none());
    // A bad credential for one method does not stop a later one.
    let mut expired = good_claims();
    expired["exp"] = json!(now() - 3600);
    let h = headers(&[
        ("x-api-key", "ci-secret-1"),
        ("authorization", &format!("Bearer {}", sign(&key, &expired))),
    ]);
    assert_eq!(
        run(&a, &["jwt:corp", "api-key"], &h)
            .unwrap()
            .api_key
            .as_deref(),
        Some("ci")
    );
}

#[test]
fn most_specific_error_wins() {
    let key = p256("k1");
    let (a, f) = corp(&[&key]);
    let mut expired = good_claims();
    expired["exp"] = json!(now() - 3600);
    let expired = sign(&key, &expired);
    // A present-but-bad JWT beats "missing" for api-key, whatever the order.
    for m in [["api-key", "jwt:corp"], ["jwt:corp", "api-key"]] {
        assert_eq!(
            refused(&a, &m, &bearer(&expired)),
            invalid(TokenProblem::Expired)
        );
    }
    // An opaque bearer on a route with both is an API key, not a bad JWT.
    for m in [["api-key", "jwt:corp"], ["jwt:corp", "api-key"]] {
        assert_eq!(
            refused(&a, &m, &bearer("opaque-key")),
            AuthError::UnknownApiKey
        );
    }
    // Two providers: the one whose issuer the token names reports.
    let mut other = provider("other", Some(&f), None);
    other.issuer = "https://other.example".into();
    let two = auth(vec![provider("corp", Some(&f), None), other]);
    for m in [["jwt:other", "jwt:corp"], ["jwt:corp", "jwt:other"]] {
        assert_eq!(
            refused(&two, &m, &bearer(&expired)),
            invalid(TokenProblem::Expired)
        );
    }
    // Nothing presented: all accepted methods are listed.
    assert_eq!(
        refused(&a, &["workload", "api-key", "jwt:corp"], &HeaderMap::new()).to_string(),
        "missing credentials: this route accepts workload, api-key, jwt:corp"
    );
    // A route naming an unknown method is reported as such (500).
    let e = refused(&a, &["jwt:nope", "api-key"], &HeaderMap::new());
    assert_eq!(
        e,
        AuthError::UnknownMethod {
            method: "jwt:nope".into()
        }
    );
    assert_eq!(e.status(), hyper::StatusCode::INTERNAL_SERVER_ERROR);
    // … but does not stop a method that works.
    assert!(run(
        &a,
        &["kerberos", "api-key"],
        &headers(&[("x-api-key", "ci-secret-1")])
    )
    .is_ok());
}

// ---------------------------------------------------------------- errors

#[test]
fn www_authenticate_and_status() {
    let cases = [
        (
            AuthError::Missing {
                accepted: "jwt:corp".into(),
            },
            r#"Bearer realm="trigate""#,
            401,
        ),
        (
            invalid(TokenProblem::Expired),
            r#"Bearer realm="trigate", error="invalid_token", error_description="expired""#,
            401,
        ),
        (
            invalid(TokenProblem::WrongAudience),
            r#"Bearer realm="trigate", error="invalid_token", error_description="wrong audience""#,
            401,
        ),
        (
            AuthError::UnknownApiKey,
            r#"Bearer realm="trigate", error="invalid_token", error_description="unknown API key""#,
            401,
        ),
        (
            AuthError::KeysNotLoaded {
                provider: "corp".into(),
            },
            r#"Bearer realm="trigate""#,
            503,
        ),
    ];
    for (e, www, status) in cases {
        assert_eq!(e.www_authenticate(), www, "{e}");
        assert_eq!(e.status().as_u16(), status, "{e}");
        assert!(HeaderValue::from_str(&e.www_authenticate()).is_ok());
    }
    assert_eq!(
        invalid(TokenProblem::Expired).to_string(),
        "invalid token: expired"
    );
    assert_eq!(
        invalid(TokenProblem::WrongAudience).to_string(),
        "invalid token: wrong audience"
    );
    assert_eq!(quoted_string_safe("a\"b\\c\nd"), "a?b?c?d");
}

#[test]
fn token_supplied_alg_names_are_sanitised() {
    let key = p256("k1");
    let (a, _f) = corp(&[&key]);
    let header = b64(br#"{"alg":"x\"y\r\nz","kid":"k1"}"#);
    let token = format!(
        "{header}.{}.c2ln",
        b64(good_claims().to_string().as_bytes())
    );
    let e = refused(&a, &["jwt:corp"], &bearer(&token));
    assert_eq!(
        e.to_string(),
        "invalid token: algorithm (unsupported) not accepted"
    );
    assert!(HeaderValue::from_str(&e.www_authenticate()).is_ok());
}

#[test]
fn errors_never_echo_credentials() {
    let key = p256("k1");
    let (a, _f) = corp(&[&key]);
    let mut claims = good_claims();
    claims["exp"] = json!(now() - 3600);
    let token = sign(&key, &claims);
    for (m, h, secret) in [
        (&["jwt:corp"][..], bearer(&token), token.as_str()),
        (
            &["api-key"][..],
            headers(&[("x-api-key", "very-secret-value")]),
            "very-secret-value",
        ),
    ] {
        let e = refused(&a, m, &h);
        for text in [e.to_string(), e.www_authenticate(), format!("{e:?}")] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}

// ---------------------------------------------------------------- config

#[test]
fn config_errors_name_the_field() {
    let bad_hash = Authenticator::new(&AuthConfig {
        api_keys: vec![ApiKey {
            name: "ci".into(),
            sha256: "abc".into(),
        }],
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert!(bad_hash
        .to_string()
        .starts_with("auth.api_keys[ci].sha256: must be 64 hex digits"));
    let not_hex = Authenticator::new(&AuthConfig {
        api_keys: vec![ApiKey {
            name: "ci".into(),
            sha256: "g".repeat(64),
        }],
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert!(matches!(not_hex, AuthConfigError::ApiKeyHash { .. }));

    let header = Authenticator::new(&AuthConfig {
        api_key_header: "bad header".into(),
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert_eq!(
        header.to_string(),
        "auth.api_key_header: \"bad header\" is not a valid header name"
    );

    let missing = PathBuf::from("/nonexistent/trigate-jwks.json");
    let mut p = provider("corp", None, None);
    p.jwks_file = Some(missing);
    let e = Authenticator::new(&AuthConfig {
        jwt: vec![p],
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("auth.jwt[corp].jwks_file: cannot read /nonexistent/trigate-jwks.json:"),
        "{e}"
    );

    let junk = TempFile::new("{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}");
    let e = Authenticator::new(&AuthConfig {
        jwt: vec![provider("corp", Some(&junk), None)],
        ..AuthConfig::default()
    })
    .unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&junk.0.display().to_string()), "{text}");
    assert!(text.contains("no usable signing key"), "{text}");
    assert!(text.contains("symmetric"), "{text}");

    let neither = Authenticator::new(&AuthConfig {
        jwt: vec![provider("corp", None, None)],
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert_eq!(
        neither.to_string(),
        "auth.jwt[corp]: needs exactly one of jwks_file and jwks_url"
    );
    for url in ["ftp://x/jwks", "/relative", "http://"] {
        let e = Authenticator::new(&AuthConfig {
            jwt: vec![provider("corp", None, Some(url.into()))],
            ..AuthConfig::default()
        });
        assert!(e.is_err(), "{url}");
    }
}

#[test]
fn jwks_parsing_skips_unusable_keys() {
    let good = p256("good");
    let ed = ed25519("ed");
    let short_x = json!({"kty": "EC", "crv": "P-256", "kid": "short", "x": b64(&[1; 31]), "y": b64(&[1; 32])});
    let off_curve =
        json!({"kty": "EC", "crv": "P-256", "kid": "off", "x": b64(&[1; 32]), "y": b64(&[2; 32])});
    let doc = json!({"keys": [
        good.jwk,
        ed.jwk,
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "small", "n": b64(&[0xc5; 128]), "e": "AQAB"},
        {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"},
        {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc", "x": good.jwk["x"], "y": good.jwk["y"]},
        {"kty": "EC", "crv": "P-256", "kid": "mismatch", "alg": "RS256", "x": good.jwk["x"], "y": good.jwk["y"]},
        short_x,
        off_curve,
        {"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": b64(&[0; 32])},
        {"kid": "nokty"},
        "not an object",
    ]});
    let set = jwt::KeySet::parse(doc.to_string().as_bytes()).expect("parse");
    assert_eq!(set.keys.len(), 2, "{set:?}");
    assert_eq!(set.skipped.len(), 10, "{set:?}");
    // Padded base64url members are accepted too.
    let mut padded = good.jwk.clone();
    padded["x"] = json!(format!("{}=", good.jwk["x"].as_str().unwrap()));
    assert!(jwt::KeySet::parse(json!({"keys": [padded]}).to_string().as_bytes()).is_ok());
    assert!(jwt::KeySet::parse(b"{\"keys\": []}").is_err());
    assert!(jwt::KeySet::parse(b"[]").is_err());
}

#[test]
fn jwks_rsa_key_parses() {
    // An odd 2048-bit modulus: RSA keys cannot be generated with ring, but
    // the (n, e) path is exercised up to building a verifier.
    let mut n = vec![0xc7u8; 256];
    n[255] = 0x01;
    let doc =
        json!({"keys": [{"kty": "RSA", "kid": "r", "alg": "RS256", "n": b64(&n), "e": "AQAB"}]});
    let set = jwt::KeySet::parse(doc.to_string().as_bytes()).expect("rsa");
    assert_eq!(set.keys.len(), 1, "{set:?}");
}

#[test]
fn jwt_shape() {
    assert!(jwt::looks_like_jwt("eyJh.eyJi.c2ln"));
    assert!(jwt::looks_like_jwt("eyJh.eyJi."));
    assert!(!jwt::looks_like_jwt("eyJh.eyJi"));
    assert!(!jwt::looks_like_jwt("a.b.c.d"));
    assert!(!jwt::looks_like_jwt(".b.c"));
    assert!(!jwt::looks_like_jwt("a+b.c.d"));
    assert!(!jwt::looks_like_jwt("sk-live-123"));
}

#[test]
fn backoff_doubles_within_bounds() {
    let t = RefreshTiming {
        file_poll: Duration::from_secs(5),
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
    };
    let refresh = Duration::from_secs(300);
    let waits: Vec<u64> = (1..=8)
        .map(|n| refresh::backoff(n, t, refresh).as_secs())
        .collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    assert_eq!(
        refresh::backoff(u32::MAX, t, refresh),
        Duration::from_secs(60)
    );
    assert_eq!(
        refresh::backoff(5, t, Duration::from_secs(10)),
        Duration::from_secs(10)
    );
}

// ---------------------------------------------------------------- refresh

fn fast(mut a: Arc<Authenticator>) -> Arc<Authenticator> {
    Arc::get_mut(&mut a).expect("unshared").timing = RefreshTiming {
        file_poll: Duration::from_millis(20),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
    };
    a
}

/// Polls `check` every 10 ms for up to 5 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn jwks_file_reread_after_change() {
    let old = p256("old");
    let new = ed25519("new");
    let file = TempFile::new(&jwks(&[&old]));
    let a = fast(auth(vec![provider("corp", Some(&file), None)]));
    let stop = CancellationToken::new();
    a.spawn_refresh(stop.clone());
    let old_token = sign(&old, &good_claims());
    let new_token = sign(&new, &good_claims());
    assert!(run(&a, &["jwt:corp"], &bearer(&old_token)).is_ok());
    assert_eq!(
        refused(&a, &["jwt:corp"], &bearer(&new_token)),
        invalid(TokenProblem::UnknownKey)
    );

    file.write(&jwks(&[&new]));
    eventually("new key in use", || {
        run(&a, &["jwt:corp"], &bearer(&new_token)).is_ok()
    })
    .await;
    assert_eq!(
        refused(&a, &["jwt:corp"], &bearer(&old_token)),
        invalid(TokenProblem::UnknownKey)
    );

    // A broken or vanished file keeps the keys in use.
    file.write("{ not json");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(run(&a, &["jwt:corp"], &bearer(&new_token)).is_ok());
    std::fs::remove_file(&file.0).expect("remove");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(run(&a, &["jwt:corp"], &bearer(&new_token)).is_ok());

    // After stop, changes are no longer picked up.
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    file.write(&jwks(&[&old]));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(run(&a, &["jwt:corp"], &bearer(&old_token)).is_err());
}

/// A plain-HTTP server on 127.0.0.1 answering the n-th connection with
/// `answers[min(n, last)]` (status, body); counts the requests.
async fn serve(answers: Vec<(u16, String)>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let served = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let n = served.fetch_add(1, Ordering::SeqCst);
            let (status, body) = answers[n.min(answers.len() - 1)].clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (addr, count)
}

#[tokio::test]
async fn jwks_url_fetched_and_keys_not_loaded_before() {
    let key = p256("k1");
    let (addr, count) = serve(vec![(200, jwks(&[&key]))]).await;
    let a = fast(auth(vec![provider(
        "corp",
        None,
        Some(format!("http://{addr}/.well-known/jwks.json")),
    )]));
    let token = sign(&key, &good_claims());
    let e = refused(&a, &["jwt:corp"], &bearer(&token));
    assert_eq!(
        e,
        AuthError::KeysNotLoaded {
            provider: "corp".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "signing keys of JWT provider corp not loaded yet; try again shortly"
    );
    assert_eq!(count.load(Ordering::SeqCst), 0);

    let stop = CancellationToken::new();
    a.spawn_refresh(stop.clone());
    eventually("keys fetched", || {
        run(&a, &["jwt:corp"], &bearer(&token)).is_ok()
    })
    .await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
    stop.cancel();
}

#[tokio::test]
async fn reload_inherits_fetched_keys() {
    let key = p256("k1");
    let (addr, _) = serve(vec![(200, jwks(&[&key]))]).await;
    let url = format!("http://{addr}/jwks");
    let old = fast(auth(vec![provider("corp", None, Some(url.clone()))]));
    let stop = CancellationToken::new();
    old.spawn_refresh(stop.clone());
    let token = sign(&key, &good_claims());
    eventually("keys fetched", || {
        run(&old, &["jwt:corp"], &bearer(&token)).is_ok()
    })
    .await;
    stop.cancel();

    // Same name and URL: keys carried over, before any fetch.
    let new = auth(vec![provider("corp", None, Some(url.clone()))]);
    new.inherit_keys(&old);
    assert!(run(&new, &["jwt:corp"], &bearer(&token)).is_ok());
    // Another URL: nothing carried over.
    let moved = auth(vec![provider("corp", None, Some(format!("{url}2")))]);
    moved.inherit_keys(&old);
    assert!(matches!(
        refused(&moved, &["jwt:corp"], &bearer(&token)),
        AuthError::KeysNotLoaded { .. }
    ));
}

#[test]
fn authenticator_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Authenticator>();
    check::<Caller>();
    check::<AuthError>();
}

#[tokio::test]
async fn jwks_url_retried_after_failure_and_stopped() {
    let key = p256("k1");
    let (addr, count) = serve(vec![
        (503, "busy".into()),
        (200, "{\"not\": \"jwks\"}".into()),
        (200, jwks(&[&key])),
    ])
    .await;
    let a = fast(auth(vec![provider(
        "corp",
        None,
        Some(format!("http://{addr}/jwks")),
    )]));
    let stop = CancellationToken::new();
    a.spawn_refresh(stop.clone());
    let token = sign(&key, &good_claims());
    eventually("keys fetched after retries", || {
        run(&a, &["jwt:corp"], &bearer(&token)).is_ok()
    })
    .await;
    assert_eq!(count.load(Ordering::SeqCst), 3);
    stop.cancel();

    // A server that always fails: retried quickly, and no more after stop.
    let (addr, count) = serve(vec![(500, "no".into())]).await;
    let a = fast(auth(vec![provider(
        "corp",
        None,
        Some(format!("http://{addr}/jwks")),
    )]));
    let stop = CancellationToken::new();
    a.spawn_refresh(stop.clone());
    eventually("several attempts", || count.load(Ordering::SeqCst) >= 3).await;
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = count.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count.load(Ordering::SeqCst), after);
}

#[tokio::test]
async fn fetch_limits_and_errors() {
    let big = "x".repeat(refresh::MAX_JWKS_BYTES + 1);
    let (addr, _) = serve(vec![(200, big)]).await;
    let url: hyper::Uri = format!("http://{addr}/").parse().unwrap();
    assert!(matches!(
        refresh::fetch(&url).await,
        Err(refresh::FetchError::TooLarge)
    ));

    let (addr, _) = serve(vec![(404, "missing".into())]).await;
    let url: hyper::Uri = format!("http://{addr}/jwks").parse().unwrap();
    assert!(matches!(
        refresh::fetch(&url).await,
        Err(refresh::FetchError::Status(s)) if s == hyper::StatusCode::NOT_FOUND
    ));

    let (addr, _) = serve(vec![(200, "{\"keys\":[]}".into())]).await;
    let url: hyper::Uri = format!("http://{addr}/jwks?x=1").parse().unwrap();
    assert_eq!(
        &refresh::fetch(&url).await.expect("fetch")[..],
        b"{\"keys\":[]}"
    );

    // Nobody listening.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let url: hyper::Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
    assert!(matches!(
        refresh::fetch(&url).await,
        Err(refresh::FetchError::Connect { .. })
    ));
}

#[tokio::test]
async fn fetch_times_out_on_a_silent_server() {
    // Accepts and never answers; paused time makes the 5 s pass at once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let (_conn, _) = listener.accept().await.unwrap();
        // No timer here: the paused clock may only jump to the fetch's.
        std::future::pending::<()>().await;
    });
    let url: hyper::Uri = format!("http://{addr}/").parse().unwrap();
    let fetch = tokio::spawn(async move { refresh::fetch(&url).await });
    // Let the connection establish in real time, then jump the clock.
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::pause();
    tokio::time::advance(refresh::FETCH_TIMEOUT + Duration::from_secs(1)).await;
    tokio::time::resume();
    assert!(matches!(
        fetch.await.unwrap(),
        Err(refresh::FetchError::Timeout)
    ));
    held.abort();
}

#[tokio::test]
async fn https_fetch_verifies_the_server() {
    // A TLS server on 127.0.0.1 with a self-signed certificate: the fetch
    // speaks TLS and refuses the certificate (not in the Mozilla roots).
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (conn, _) = listener.accept().await.unwrap();
        // The handshake fails on the client's side; the error is expected.
        let _ = acceptor.accept(conn).await;
    });
    let url: hyper::Uri = format!("https://{addr}/jwks").parse().unwrap();
    match refresh::fetch(&url).await {
        Err(refresh::FetchError::Tls { source, .. }) => {
            assert!(source.to_string().contains("certificate"), "{source}");
        }
        other => panic!("expected a TLS verification error, got {other:?}"),
    }
    server.abort();
}
