//! JWT providers: their JWKS (parsed into verification keys) and the
//! verification of a bearer token against them.
use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;
use base64::{
    alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine,
};
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{AuthConfigError, AuthError, JwtIdentity};

/// base64url, accepting members with or without `=` padding (JWK members
/// should have none; some issuers add it anyway).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token was refused; the text after "invalid token: ".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenProblem {
    /// Not three base64url segments with a JSON header and claims.
    Malformed,
    /// The header's `alg` is not in the provider's `algorithms` (`none`
    /// and HS* never are). Holds the (sanitised) name.
    AlgorithmNotAccepted(String),
    /// The token names a key (`kid`) the JWKS does not hold, or names none
    /// while the JWKS holds several.
    UnknownKey,
    /// The key the token names is not of the kind its `alg` needs.
    KeyAlgorithmMismatch,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    /// A required claim (`exp`, `iss`, `aud`) is absent.
    MissingClaim(&'static str),
    /// A registered claim has the wrong type (e.g. `exp` as a string).
    MalformedClaim(&'static str),
}

impl fmt::Display for TokenProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenProblem::Malformed => f.write_str("malformed"),
            TokenProblem::AlgorithmNotAccepted(alg) => write!(f, "algorithm {alg} not accepted"),
            TokenProblem::UnknownKey => f.write_str("unknown signing key"),
            TokenProblem::KeyAlgorithmMismatch => {
                f.write_str("signing key does not fit the algorithm")
            }
            TokenProblem::BadSignature => f.write_str("bad signature"),
            TokenProblem::Expired => f.write_str("expired"),
            TokenProblem::NotYetValid => f.write_str("not yet valid"),
            TokenProblem::WrongIssuer => f.write_str("wrong issuer"),
            TokenProblem::WrongAudience => f.write_str("wrong audience"),
            TokenProblem::MissingClaim(c) => write!(f, "missing claim {c}"),
            TokenProblem::MalformedClaim(c) => write!(f, "malformed claim {c}"),
        }
    }
}

impl From<TokenProblem> for AuthError {
    fn from(p: TokenProblem) -> Self {
        AuthError::InvalidToken(p)
    }
}

/// Three base64url segments, the first two non-empty (the third is empty
/// for `alg: none`, which still counts as a JWT so that it is refused as
/// one rather than tried as an API key).
pub(super) fn looks_like_jwt(value: &str) -> bool {
    let mut parts = value.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let b64 = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    !h.is_empty() && !c.is_empty() && b64(h) && b64(c) && b64(s)
}

/// Where a provider's JWKS comes from.
#[derive(Debug, Clone)]
pub(super) enum Source {
    File(PathBuf),
    Url { url: hyper::Uri, refresh: Duration },
}

/// One `auth.jwt` entry, with the keys loaded so far.
pub(super) struct Provider {
    pub(super) name: String,
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    clock_skew_secs: u64,
    pub(super) source: Source,
    /// `None` until a URL provider's first successful fetch.
    keys: ArcSwapOption<KeySet>,
}

impl Provider {
    pub(super) fn from_config(cfg: &crate::config::JwtProvider) -> Result<Self, AuthConfigError> {
        let problem = |message: String| AuthConfigError::Provider {
            provider: cfg.name.clone(),
            message,
        };
        if cfg.issuer.is_empty() {
            return Err(problem("issuer must not be empty".into()));
        }
        if cfg.algorithms.is_empty() {
            return Err(problem("algorithms must not be empty".into()));
        }
        let algorithms = cfg
            .algorithms
            .iter()
            .map(|a| accepted_algorithm(a).ok_or_else(|| problem(format!(
                "algorithms: {a:?} is not supported (RS256/384/512, PS256/384/512, ES256/384, EdDSA; \
                 HS* would need a shared secret in the JWKS)"
            ))))
            .collect::<Result<Vec<_>, _>>()?;
        let source = match (&cfg.jwks_file, &cfg.jwks_url) {
            (Some(path), None) => Source::File(path.clone()),
            (None, Some(url)) => {
                let uri: hyper::Uri = url
                    .parse()
                    .map_err(|e| problem(format!("jwks_url {url:?}: {e}")))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                    return Err(problem(format!(
                        "jwks_url {url:?}: must be an http:// or https:// URL with a host"
                    )));
                }
                if cfg.jwks_refresh_secs == 0 {
                    return Err(problem("jwks_refresh_secs must be at least 1".into()));
                }
                Source::Url {
                    url: uri,
                    refresh: Duration::from_secs(cfg.jwks_refresh_secs),
                }
            }
            _ => {
                return Err(problem(
                    "needs exactly one of jwks_file and jwks_url".into(),
                ))
            }
        };
        let provider = Provider {
            name: cfg.name.clone(),
            issuer: cfg.issuer.clone(),
            audiences: cfg.audiences.clone(),
            algorithms,
            clock_skew_secs: cfg.clock_skew_secs,
            source,
            keys: ArcSwapOption::empty(),
        };
        if let Source::File(path) = &provider.source {
            let bytes = std::fs::read(path).map_err(|source| AuthConfigError::JwksRead {
                provider: cfg.name.clone(),
                path: path.clone(),
                source,
            })?;
            let set = KeySet::parse(&bytes).map_err(|message| AuthConfigError::JwksParse {
                provider: cfg.name.clone(),
                path: path.clone(),
                message,
            })?;
            for skipped in &set.skipped {
                tracing::warn!(provider = %cfg.name, path = %path.display(), "JWKS key ignored: {skipped}");
            }
            provider.install(set);
        }
        Ok(provider)
    }

    /// The keys in use, if any were loaded.
    pub(super) fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    pub(super) fn install(&self, keys: KeySet) {
        self.keys.store(Some(Arc::new(keys)));
    }

    pub(super) fn install_shared(&self, keys: Arc<KeySet>) {
        self.keys.store(Some(keys));
    }

    /// Verifies `token`: the header's `alg` is one of the provider's, the
    /// key is the JWKS key named by `kid` (or the only key) and fits `alg`,
    /// the signature holds, `iss` is the issuer, `aud` one of the audiences
    /// (when any are configured), `exp` is present and not past (with the
    /// clock skew), `nbf` (if present) not ahead.
    pub(super) fn verify(&self, token: &str) -> Result<JwtIdentity, AuthError> {
        let (header, claims) = peek(token).ok_or(TokenProblem::Malformed)?;
        let alg = header.alg.as_deref().ok_or(TokenProblem::Malformed)?;
        let alg = match accepted_algorithm(alg) {
            Some(a) if self.algorithms.contains(&a) => a,
            _ => return Err(TokenProblem::AlgorithmNotAccepted(printable_name(alg)).into()),
        };
        // Checked before the key lookup so that, on a route with several
        // providers, a token of another issuer says so rather than "unknown
        // signing key". Nothing is trusted from this unverified read: it only
        // picks the error; `decode` below checks `iss` again after the
        // signature.
        if claims.iss.as_deref() != Some(self.issuer.as_str()) {
            return Err(match claims.iss {
                None => TokenProblem::MissingClaim("iss"),
                Some(_) => TokenProblem::WrongIssuer,
            }
            .into());
        }
        let keys = self.keys().ok_or_else(|| AuthError::KeysNotLoaded {
            provider: self.name.clone(),
        })?;
        let key = keys.find(header.kid.as_deref(), alg)?;

        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = self.clock_skew_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        let mut required = vec!["exp", "iss"];
        if self.audiences.is_empty() {
            // jsonwebtoken refuses any `aud` when none is configured;
            // an empty list means "not checked" here.
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);

        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.decoding,
            &validation,
        )
        .map_err(|e| problem_of(e.kind()))?;
        let claims = data.claims;
        Ok(JwtIdentity {
            provider: self.name.clone(),
            subject: claims
                .get("sub")
                .and_then(|s| s.as_str())
                .map(str::to_owned),
            claims,
        })
    }
}

fn problem_of(kind: &ErrorKind) -> TokenProblem {
    match kind {
        ErrorKind::ExpiredSignature => TokenProblem::Expired,
        ErrorKind::ImmatureSignature => TokenProblem::NotYetValid,
        ErrorKind::InvalidIssuer => TokenProblem::WrongIssuer,
        ErrorKind::InvalidAudience => TokenProblem::WrongAudience,
        ErrorKind::InvalidSignature => TokenProblem::BadSignature,
        ErrorKind::MissingRequiredClaim(c) => TokenProblem::MissingClaim(registered_claim(c)),
        ErrorKind::InvalidClaimFormat(c) => TokenProblem::MalformedClaim(registered_claim(c)),
        // The key material could not be used with the algorithm (e.g. a
        // P-256 key for ES384; an RSA modulus the backend refuses).
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_) => TokenProblem::KeyAlgorithmMismatch,
        _ => TokenProblem::Malformed,
    }
}

/// The `&'static` spelling of a registered claim jsonwebtoken names.
fn registered_claim(c: &str) -> &'static str {
    match c {
        "exp" => "exp",
        "nbf" => "nbf",
        "iss" => "iss",
        "aud" => "aud",
        "sub" => "sub",
        _ => "claims",
    }
}

/// An algorithm this gateway accepts from a JWKS: asymmetric ones only.
fn accepted_algorithm(name: &str) -> Option<Algorithm> {
    let alg: Algorithm = name.parse().ok()?;
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => None,
        other => Some(other),
    }
}

/// A token-supplied name, safe to put in a message: short, alphanumeric.
fn printable_name(s: &str) -> String {
    if !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        s.to_string()
    } else {
        "(unsupported)".to_string()
    }
}

#[derive(Deserialize)]
struct PeekHeader {
    alg: Option<String>,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct PeekClaims {
    #[serde(default, deserialize_with = "string_or_none")]
    iss: Option<String>,
}

/// `iss` when it is a string; anything else reads as absent (and is then
/// refused as a missing/wrong issuer).
fn string_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

/// The header and the claims this module needs before verification.
fn peek(token: &str) -> Option<(PeekHeader, PeekClaims)> {
    if !looks_like_jwt(token) {
        return None;
    }
    let mut parts = token.split('.');
    let header = B64URL.decode(parts.next()?).ok()?;
    let claims = B64URL.decode(parts.next()?).ok()?;
    Some((
        serde_json::from_slice(&header).ok()?,
        serde_json::from_slice(&claims).ok()?,
    ))
}

/// A verification key from a JWKS.
pub(super) struct Key {
    kid: Option<String>,
    /// The algorithms the key may verify: those of its type, or only its
    /// `alg` when the JWK names one.
    algorithms: Vec<Algorithm>,
    decoding: DecodingKey,
}

/// A parsed JWKS.
pub(super) struct KeySet {
    pub(super) keys: Vec<Key>,
    /// SHA-256 of the document, to notice changes.
    pub(super) digest: [u8; 32],
    /// Keys left out, and why (logged when the set is installed).
    pub(super) skipped: Vec<String>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field("skipped", &self.skipped)
            .finish()
    }
}

/// The JWK members read here; the others are ignored.
#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// RSA moduli below this many bits are refused (NIST: 2048 at least).
const MIN_RSA_BITS: usize = 2048;

impl KeySet {
    /// Parses a JWKS document. Keys that cannot verify signatures here
    /// (encryption keys, symmetric keys, unknown types or curves, bad
    /// encodings) are skipped and listed in `skipped`; a document with no
    /// usable key is an error.
    pub(super) fn parse(bytes: &[u8]) -> Result<KeySet, String> {
        let doc: RawJwks = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a JSON object with a \"keys\" array: {e}"))?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, value) in doc.keys.into_iter().enumerate() {
            let raw: Result<RawJwk, _> = serde_json::from_value(value);
            let result = match raw {
                Ok(raw) => {
                    let kid = raw.kid.clone();
                    Key::from_jwk(raw).map_err(|why| match kid {
                        Some(kid) => format!("keys[{i}] (kid {kid:?}): {why}"),
                        None => format!("keys[{i}]: {why}"),
                    })
                }
                Err(e) => Err(format!("keys[{i}]: {e}")),
            };
            match result {
                Ok(key) => keys.push(key),
                Err(why) => skipped.push(why),
            }
        }
        if keys.is_empty() {
            return Err(if skipped.is_empty() {
                "it holds no keys".to_string()
            } else {
                format!("it holds no usable signing key ({})", skipped.join("; "))
            });
        }
        Ok(KeySet {
            keys,
            digest: Sha256::digest(bytes).into(),
            skipped,
        })
    }

    /// The key for a token with this `kid` (or none) and `alg`.
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<&Key, TokenProblem> {
        let key = match kid {
            Some(kid) => {
                let mut named = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
                let first = named.clone().next().ok_or(TokenProblem::UnknownKey)?;
                // A JWKS may publish one kid for several algorithms.
                named.find(|k| k.algorithms.contains(&alg)).unwrap_or(first)
            }
            None => match self.keys.as_slice() {
                [only] => only,
                _ => return Err(TokenProblem::UnknownKey),
            },
        };
        if key.algorithms.contains(&alg) {
            Ok(key)
        } else {
            Err(TokenProblem::KeyAlgorithmMismatch)
        }
    }
}

impl Key {
    fn from_jwk(raw: RawJwk) -> Result<Key, String> {
        if let Some(u) = raw.use_.as_deref() {
            if u != "sig" {
                return Err(format!("use {u:?} is not \"sig\""));
            }
        }
        let member = |name: &str, v: &Option<String>| -> Result<Vec<u8>, String> {
            let v = v
                .as_deref()
                .ok_or_else(|| format!("member {name} missing"))?;
            B64URL
                .decode(v)
                .map_err(|e| format!("member {name} is not base64url: {e}"))
        };
        let sized = |name: &str, v: &Option<String>, len: usize| -> Result<Vec<u8>, String> {
            let bytes = member(name, v)?;
            if bytes.len() != len {
                return Err(format!(
                    "member {name} has {} bytes, expected {len}",
                    bytes.len()
                ));
            }
            Ok(bytes)
        };
        let kty = raw.kty.as_deref().ok_or("member kty missing")?;
        let (decoding, algorithms) = match kty {
            "RSA" => {
                let n = member("n", &raw.n)?;
                let e = member("e", &raw.e)?;
                let bits = significant_bits(&n);
                if bits < MIN_RSA_BITS {
                    return Err(format!(
                        "RSA modulus of {bits} bits is below the {MIN_RSA_BITS} accepted"
                    ));
                }
                if significant_bits(&e) == 0 {
                    return Err("RSA exponent is zero".into());
                }
                (
                    DecodingKey::from_rsa_raw_components(&n, &e),
                    vec![
                        Algorithm::RS256,
                        Algorithm::RS384,
                        Algorithm::RS512,
                        Algorithm::PS256,
                        Algorithm::PS384,
                        Algorithm::PS512,
                    ],
                )
            }
            "EC" => {
                let (len, alg) = match raw.crv.as_deref() {
                    Some("P-256") => (32, Algorithm::ES256),
                    Some("P-384") => (48, Algorithm::ES384),
                    other => return Err(format!("EC curve {other:?} is not supported")),
                };
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(0x04); // SEC1 uncompressed
                point.extend(sized("x", &raw.x, len)?);
                point.extend(sized("y", &raw.y, len)?);
                (DecodingKey::from_ec_der(&point), vec![alg])
            }
            "OKP" => match raw.crv.as_deref() {
                Some("Ed25519") => (
                    DecodingKey::from_ed_der(&sized("x", &raw.x, 32)?),
                    vec![Algorithm::EdDSA],
                ),
                other => return Err(format!("OKP curve {other:?} is not supported")),
            },
            "oct" => return Err("symmetric (oct) keys are not accepted".into()),
            other => return Err(format!("key type {other:?} is not supported")),
        };
        let algorithms = match raw.alg.as_deref() {
            None => algorithms,
            Some(name) => match accepted_algorithm(name) {
                Some(a) if algorithms.contains(&a) => vec![a],
                _ => return Err(format!("alg {name:?} does not fit a {kty} key")),
            },
        };
        // Build a verifier once now (with a dummy signature) so that a key
        // the backend cannot use (EC point off the curve, absurd RSA
        // exponent) is skipped at load time, not blamed on every token.
        ensure_crypto_provider();
        if let Err(e) = jsonwebtoken::crypto::verify("AA", b"probe", &decoding, algorithms[0]) {
            return Err(format!("unusable key: {e}"));
        }
        Ok(Key {
            kid: raw.kid,
            algorithms,
            decoding,
        })
    }
}

/// Selects the RustCrypto backend explicitly: jsonwebtoken panics on first
/// use when it cannot tell which backend to use (e.g. when another crate of
/// the build enables `aws_lc_rs` too). Installing twice is harmless.
pub(super) fn ensure_crypto_provider() {
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
        &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
    );
}

/// Bit length of a big-endian unsigned integer.
fn significant_bits(bytes: &[u8]) -> usize {
    match bytes.iter().position(|&b| b != 0) {
        None => 0,
        Some(i) => (bytes.len() - i - 1) * 8 + (8 - bytes[i].leading_zeros() as usize),
    }
}
