//! Authentication (who is calling: workload, API key, JWT) and
//! authorization (may they call this route).
//!
//! The request-time decisions are pure functions of the request headers, the
//! caller and the key material loaded so far; the only I/O is the loading of
//! that material (JWKS files and URLs), done at start-up by
//! [`Authenticator::new`] and afterwards by the tasks of
//! [`Authenticator::spawn_refresh`].
use std::{collections::BTreeMap, fmt, path::PathBuf, sync::Arc, time::Duration};

use hyper::{
    header::{HeaderName, AUTHORIZATION},
    HeaderMap, StatusCode,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

mod authz;
mod jwt;
mod refresh;
#[cfg(test)]
mod tests;

pub(crate) use authz::claim_matches;
pub use authz::{authorize, Denied};
pub use jwt::TokenProblem;

use jwt::Provider;

/// Who is calling, as established so far.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub workload: Option<Arc<crate::workload::Workload>>,
    /// Name of the API key presented and verified.
    pub api_key: Option<String>,
    /// Verified JWT: provider name and claims.
    pub jwt: Option<JwtIdentity>,
}

/// A verified JWT.
#[derive(Debug, Clone)]
pub struct JwtIdentity {
    /// The `auth.jwt[].name` that verified it.
    pub provider: String,
    /// `sub`, when it is a string.
    pub subject: Option<String>,
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Why a request was not authenticated. The messages go back to the client:
/// they never contain a token or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential for any accepted method was presented.
    #[error("missing credentials: this route accepts {accepted}")]
    Missing { accepted: String },
    /// A JWT was presented and refused.
    #[error("invalid token: {0}")]
    InvalidToken(TokenProblem),
    /// An API key was presented that matches no `auth.api_keys` hash.
    #[error("unknown API key")]
    UnknownApiKey,
    /// The provider's JWKS URL has not been fetched successfully yet.
    #[error("signing keys of JWT provider {provider} not loaded yet; try again shortly")]
    KeysNotLoaded { provider: String },
    /// The route names a method this authenticator does not know (the
    /// config validation normally refuses such a route).
    #[error("this route is misconfigured: authentication method {method:?} is not configured")]
    UnknownMethod { method: String },
}

impl AuthError {
    /// Value for the `WWW-Authenticate` response header (RFC 6750 syntax).
    pub fn www_authenticate(&self) -> String {
        const BASE: &str = "Bearer realm=\"trigate\"";
        match self {
            AuthError::InvalidToken(problem) => format!(
                "{BASE}, error=\"invalid_token\", error_description=\"{}\"",
                quoted_string_safe(&problem.to_string())
            ),
            AuthError::UnknownApiKey => {
                format!("{BASE}, error=\"invalid_token\", error_description=\"unknown API key\"")
            }
            // No credential: RFC 6750 §3.1 says to send no error code.
            // The other two are not the client's fault (503, 500).
            AuthError::Missing { .. }
            | AuthError::KeysNotLoaded { .. }
            | AuthError::UnknownMethod { .. } => BASE.to_string(),
        }
    }

    /// The response status: 401 for the client's credentials, 503 while
    /// keys load, 500 for a route naming an unknown method.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Missing { .. } | AuthError::InvalidToken(_) | AuthError::UnknownApiKey => {
                StatusCode::UNAUTHORIZED
            }
            AuthError::KeysNotLoaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::UnknownMethod { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short label for metrics and access logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing { .. } => "missing_credentials",
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::UnknownApiKey => "unknown_api_key",
            AuthError::KeysNotLoaded { .. } => "keys_not_loaded",
            AuthError::UnknownMethod { .. } => "unknown_method",
        }
    }

    /// How much the error says about what the client presented; the
    /// highest wins when every method failed. Ties go to the first method.
    fn specificity(&self) -> u8 {
        match self {
            AuthError::Missing { .. } => 0,
            // The token was meant for another provider of the route.
            AuthError::InvalidToken(TokenProblem::WrongIssuer) => 1,
            AuthError::InvalidToken(_) | AuthError::UnknownApiKey => 2,
            AuthError::KeysNotLoaded { .. } => 2,
            // The route itself is broken: say so rather than blame the client.
            AuthError::UnknownMethod { .. } => 3,
        }
    }
}

/// `error_description` is a quoted-string limited to visible ASCII without
/// `"` and `\` (RFC 6750 §3).
fn quoted_string_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ' ' | '!' | '#'..='[' | ']'..='~' => c,
            _ => '?',
        })
        .collect()
}

/// Problems in `auth` found when building the [`Authenticator`]; each names
/// the config field.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("auth.api_keys[{name}].sha256: {message}")]
    ApiKeyHash { name: String, message: &'static str },
    #[error("auth.api_key_header: {header:?} is not a valid header name")]
    ApiKeyHeader { header: String },
    #[error("auth.jwt[{provider}]: {message}")]
    Provider { provider: String, message: String },
    #[error("auth.jwt[{provider}].jwks_file: cannot read {}: {source}", path.display())]
    JwksRead {
        provider: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("auth.jwt[{provider}].jwks_file: {} is not a usable JWKS: {message}", path.display())]
    JwksParse {
        provider: String,
        path: PathBuf,
        message: String,
    },
}

/// How often the refresh tasks look again; shortened by the tests.
#[derive(Debug, Clone, Copy)]
struct RefreshTiming {
    /// Period of the JWKS file content check.
    file_poll: Duration,
    /// First wait after a failed JWKS fetch; doubled per failure.
    backoff_base: Duration,
    /// Longest wait after a failed fetch (also bounded by the refresh period).
    backoff_max: Duration,
}

impl Default for RefreshTiming {
    fn default() -> Self {
        RefreshTiming {
            file_poll: Duration::from_secs(5),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// The serde default of `auth.api_key_header`.
const DEFAULT_API_KEY_HEADER: &str = "x-api-key";

struct ApiKeyHash {
    name: String,
    sha256: [u8; 32],
}

/// Verifies credentials against `auth`. Built once per config; shared by
/// every request.
pub struct Authenticator {
    api_keys: Vec<ApiKeyHash>,
    api_key_header: HeaderName,
    providers: BTreeMap<String, Arc<Provider>>,
    timing: RefreshTiming,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hashes are not secrets, but nobody needs them in a log.
        f.debug_struct("Authenticator")
            .field(
                "api_keys",
                &self.api_keys.iter().map(|k| &k.name).collect::<Vec<_>>(),
            )
            .field("api_key_header", &self.api_key_header)
            .field("jwt", &self.providers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One entry of a route's `authn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method<'a> {
    Workload,
    ApiKey,
    Jwt(&'a str),
}

impl<'a> Method<'a> {
    fn parse(s: &'a str) -> Option<Self> {
        match s {
            "workload" => Some(Method::Workload),
            "api-key" => Some(Method::ApiKey),
            _ => s.strip_prefix("jwt:").map(Method::Jwt),
        }
    }
}

/// What one method made of the request.
enum Attempt {
    Passed(Authenticated),
    /// The request carries nothing for this method.
    NotPresented,
    Refused(AuthError),
}

/// The identity a successful method established.
#[derive(Debug, Clone)]
enum Authenticated {
    Workload,
    ApiKey(String),
    Jwt(JwtIdentity),
}

/// The credentials a request carries, read once.
struct Presented<'h> {
    /// The API key header: `Err` when it is not visible ASCII.
    api_key_header: Option<Result<&'h str, ()>>,
    /// The value after `Authorization: Bearer`.
    bearer: Option<&'h str>,
}

impl<'h> Presented<'h> {
    fn read(headers: &'h HeaderMap, api_key_header: &HeaderName) -> Self {
        let api_key_header = headers
            .get(api_key_header)
            .map(|v| v.to_str().map(str::trim).map_err(|_| ()));
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty());
        Presented {
            api_key_header,
            bearer,
        }
    }
}

impl Authenticator {
    /// Builds from config: API key hashes are parsed, JWKS files are read
    /// now (the error names the file). JWKS URLs are fetched by
    /// [`Authenticator::spawn_refresh`]; until the first fetch succeeds,
    /// that provider's tokens are refused with
    /// [`AuthError::KeysNotLoaded`].
    pub fn new(cfg: &crate::config::AuthConfig) -> Result<Arc<Self>, AuthConfigError> {
        let api_keys = cfg
            .api_keys
            .iter()
            .map(|k| {
                parse_sha256_hex(&k.sha256)
                    .map(|sha256| ApiKeyHash {
                        name: k.name.clone(),
                        sha256,
                    })
                    .map_err(|message| AuthConfigError::ApiKeyHash {
                        name: k.name.clone(),
                        message,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // `AuthConfig::default()` (derived) leaves the header empty, while
        // serde fills in `x-api-key`: both mean the default.
        let header = match cfg.api_key_header.as_str() {
            "" => DEFAULT_API_KEY_HEADER,
            h => h,
        };
        let api_key_header = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
            AuthConfigError::ApiKeyHeader {
                header: cfg.api_key_header.clone(),
            }
        })?;
        let mut providers = BTreeMap::new();
        for p in &cfg.jwt {
            let provider = Provider::from_config(p)?;
            if providers
                .insert(p.name.clone(), Arc::new(provider))
                .is_some()
            {
                return Err(AuthConfigError::Provider {
                    provider: p.name.clone(),
                    message: "the name is used by another auth.jwt entry".into(),
                });
            }
        }
        Ok(Arc::new(Authenticator {
            api_keys,
            api_key_header,
            providers,
            timing: RefreshTiming::default(),
        }))
    }

    /// Takes over the keys `previous` (the authenticator this one replaces
    /// on a config reload) fetched for URL providers of the same name and
    /// URL, so that a reload does not refuse their tokens until the next
    /// fetch. Call before [`Authenticator::spawn_refresh`]. File providers
    /// were read by `new` and need nothing.
    pub fn inherit_keys(&self, previous: &Authenticator) {
        for (name, provider) in &self.providers {
            let jwt::Source::Url { url, .. } = &provider.source else {
                continue;
            };
            let Some(old) = previous.providers.get(name) else {
                continue;
            };
            let same_url = matches!(&old.source, jwt::Source::Url { url: u, .. } if u == url);
            if let (true, None, Some(keys)) = (same_url, provider.keys(), old.keys()) {
                provider.install_shared(keys);
            }
        }
    }

    /// Starts the background refresh: URL providers are fetched now and
    /// every `jwks_refresh_secs` (retrying with backoff on failure, logging
    /// once per failure streak); file providers are re-read when the file's
    /// content changes (checked every 5 s). The tasks end when `stop` fires.
    pub fn spawn_refresh(self: &Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        for provider in self.providers.values() {
            refresh::spawn(Arc::clone(provider), self.timing, stop.clone());
        }
    }

    /// Tries the route's methods in order; the first that succeeds fills
    /// `caller` and returns `Ok`. With no methods: `Ok`, `caller` untouched.
    /// When all fail: the most specific error (a credential that was
    /// presented and refused beats "missing").
    pub fn authenticate(
        &self,
        methods: &[String],
        headers: &HeaderMap,
        caller: &mut Caller,
    ) -> Result<(), AuthError> {
        if methods.is_empty() {
            return Ok(());
        }
        match self.decide(methods, headers, caller.workload.is_some())? {
            Authenticated::Workload => {}
            Authenticated::ApiKey(name) => caller.api_key = Some(name),
            Authenticated::Jwt(identity) => caller.jwt = Some(identity),
        }
        Ok(())
    }

    /// The decision of [`Authenticator::authenticate`], apart from filling
    /// the caller (so it can be tested without an enrolled workload).
    fn decide(
        &self,
        methods: &[String],
        headers: &HeaderMap,
        has_workload: bool,
    ) -> Result<Authenticated, AuthError> {
        let presented = Presented::read(headers, &self.api_key_header);
        let parsed: Vec<Option<Method<'_>>> = methods.iter().map(|m| Method::parse(m)).collect();
        let jwt_listed = parsed.iter().any(|m| matches!(m, Some(Method::Jwt(_))));
        let api_key_listed = parsed.contains(&Some(Method::ApiKey));
        let mut best: Option<AuthError> = None;
        for (raw, method) in methods.iter().zip(parsed) {
            let attempt = match method {
                None => Attempt::Refused(AuthError::UnknownMethod {
                    method: raw.clone(),
                }),
                Some(Method::Workload) if has_workload => Attempt::Passed(Authenticated::Workload),
                Some(Method::Workload) => Attempt::NotPresented,
                Some(Method::ApiKey) => self.try_api_key(&presented, jwt_listed),
                Some(Method::Jwt(name)) => match self.providers.get(name) {
                    None => Attempt::Refused(AuthError::UnknownMethod {
                        method: raw.clone(),
                    }),
                    Some(provider) => match presented.bearer {
                        None => Attempt::NotPresented,
                        // An opaque bearer value is an API key when the
                        // route takes those.
                        Some(t) if api_key_listed && !jwt::looks_like_jwt(t) => {
                            Attempt::NotPresented
                        }
                        Some(token) => match provider.verify(token) {
                            Ok(identity) => Attempt::Passed(Authenticated::Jwt(identity)),
                            Err(e) => Attempt::Refused(e),
                        },
                    },
                },
            };
            match attempt {
                Attempt::Passed(who) => return Ok(who),
                Attempt::NotPresented => {}
                Attempt::Refused(e) => {
                    if best
                        .as_ref()
                        .is_none_or(|b| e.specificity() > b.specificity())
                    {
                        best = Some(e);
                    }
                }
            }
        }
        Err(best.unwrap_or_else(|| AuthError::Missing {
            accepted: methods.join(", "),
        }))
    }

    fn try_api_key(&self, presented: &Presented<'_>, jwt_listed: bool) -> Attempt {
        let key = match presented.api_key_header {
            Some(Ok(key)) => key,
            Some(Err(())) => return Attempt::Refused(AuthError::UnknownApiKey),
            None => match presented.bearer {
                // A JWT goes to the route's jwt methods, not here.
                Some(b) if !(jwt_listed && jwt::looks_like_jwt(b)) => b,
                _ => return Attempt::NotPresented,
            },
        };
        match self.api_key_name(key) {
            Some(name) => Attempt::Passed(Authenticated::ApiKey(name.to_string())),
            None => Attempt::Refused(AuthError::UnknownApiKey),
        }
    }

    /// The name of the configured key whose hash is SHA-256(`key`). Every
    /// configured hash is compared, in constant time, so the time taken
    /// says nothing about which bytes matched.
    fn api_key_name(&self, key: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for k in &self.api_keys {
            if bool::from(k.sha256.ct_eq(&digest)) {
                found = Some(k.name.as_str());
            }
        }
        found
    }
}

fn parse_sha256_hex(hex: &str) -> Result<[u8; 32], &'static str> {
    const MESSAGE: &str =
        "must be 64 hex digits: the SHA-256 of the key (printf %s KEY | sha256sum)";
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return Err(MESSAGE);
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let hi = hex_digit(pair[0]).ok_or(MESSAGE)?;
        let lo = hex_digit(pair[1]).ok_or(MESSAGE)?;
        *byte = hi << 4 | lo;
    }
    Ok(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
