//! Keeping JWKS current: file providers are re-read when the file changes,
//! URL providers fetched periodically. This is the I/O edge of the auth
//! step; a failed refresh always keeps the keys already in use.
use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{
    header::{ACCEPT, CONTENT_LENGTH, HOST, USER_AGENT},
    Request, StatusCode, Uri,
};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;

use super::{
    jwt::{KeySet, Provider, Source},
    RefreshTiming,
};

/// Whole-fetch limit (connect, TLS, request, body).
pub(super) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS accepted; real ones are a few KiB.
pub(super) const MAX_JWKS_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub(super) enum FetchError {
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error("{host:?} is not a name TLS can verify")]
    TlsName { host: String },
    #[error("TLS handshake with {host} failed: {source}")]
    Tls {
        host: String,
        source: std::io::Error,
    },
    #[error("HTTP exchange failed: {0}")]
    Http(String),
    #[error("answered {0} (expected 200)")]
    Status(StatusCode),
    #[error("response larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("no complete answer within {FETCH_TIMEOUT:?}")]
    Timeout,
    #[error("not a usable JWKS: {0}")]
    Parse(String),
}

pub(super) fn spawn(provider: Arc<Provider>, timing: RefreshTiming, stop: CancellationToken) {
    match provider.source.clone() {
        Source::File(path) => {
            tokio::spawn(watch_file(provider, path, timing.file_poll, stop));
        }
        Source::Url { url, refresh } => {
            tokio::spawn(poll_url(provider, url, refresh, timing, stop));
        }
    }
}

/// Re-reads the file every `poll`; installs its keys when the content
/// changed and parses. Problems are logged once until the file is good
/// again.
async fn watch_file(
    provider: Arc<Provider>,
    path: std::path::PathBuf,
    poll: Duration,
    stop: CancellationToken,
) {
    // The content last seen (installed or refused), to act once per change.
    let mut seen: Option<[u8; 32]> = provider.keys().map(|k| k.digest);
    let mut read_failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => {
                if !read_failing {
                    tracing::warn!(provider = %provider.name, path = %path.display(), error = %e,
                        "cannot read the JWKS file; keeping the keys in use");
                    read_failing = true;
                }
                continue;
            }
        };
        read_failing = false;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if seen == Some(digest) {
            continue;
        }
        seen = Some(digest);
        match KeySet::parse(&bytes) {
            Ok(set) => {
                tracing::info!(provider = %provider.name, path = %path.display(), keys = set.keys.len(),
                    skipped = ?set.skipped, "JWKS file changed; keys replaced");
                provider.install(set);
            }
            Err(e) => tracing::warn!(provider = %provider.name, path = %path.display(), error = %e,
                "JWKS file changed but is not usable; keeping the keys in use"),
        }
    }
}

/// Fetches now, then every `refresh`; after a failure retries with a
/// doubling backoff, logging a warning at the start of a failure streak
/// and a note when it ends.
async fn poll_url(
    provider: Arc<Provider>,
    url: Uri,
    refresh: Duration,
    timing: RefreshTiming,
    stop: CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = fetch_keys(&url) => r,
        };
        let wait = match result {
            Ok(set) => {
                let changed = provider.keys().map(|k| k.digest) != Some(set.digest);
                if failures > 0 {
                    tracing::info!(provider = %provider.name, url = %url, failures,
                        "JWKS fetched again after failures");
                }
                if changed {
                    tracing::info!(provider = %provider.name, url = %url, keys = set.keys.len(),
                        skipped = ?set.skipped, "JWKS loaded");
                    provider.install(set);
                }
                failures = 0;
                refresh
            }
            Err(e) => {
                if failures == 0 {
                    let state = if provider.keys().is_some() {
                        "keeping the keys in use"
                    } else {
                        "its tokens are refused until a fetch succeeds"
                    };
                    tracing::warn!(provider = %provider.name, url = %url, error = %e,
                        "JWKS fetch failed; retrying with backoff; {state}");
                } else {
                    tracing::debug!(provider = %provider.name, url = %url, error = %e, failures,
                        "JWKS fetch failed again");
                }
                failures = failures.saturating_add(1);
                backoff(failures, timing, refresh)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Wait before retry number `failures` (1-based): base·2^(n-1), capped by
/// the backoff maximum and by the refresh period.
pub(super) fn backoff(failures: u32, timing: RefreshTiming, refresh: Duration) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    timing
        .backoff_base
        .saturating_mul(factor)
        .min(timing.backoff_max)
        .min(refresh)
}

async fn fetch_keys(url: &Uri) -> Result<KeySet, FetchError> {
    let body = fetch(url).await?;
    KeySet::parse(&body).map_err(FetchError::Parse)
}

/// GET `url` (http or https), with the 5 s limit and the 1 MiB cap.
pub(super) async fn fetch(url: &Uri) -> Result<Bytes, FetchError> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch_inner(url))
        .await
        .map_err(|_| FetchError::Timeout)?
}

async fn fetch_inner(url: &Uri) -> Result<Bytes, FetchError> {
    let https = url.scheme_str() == Some("https");
    // Checked by Provider::from_config.
    let authority = url
        .authority()
        .ok_or_else(|| FetchError::Http("URL has no host".into()))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|source| FetchError::Connect {
            authority: authority.to_string(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let request = Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(HOST, authority.as_str())
        .header(ACCEPT, "application/jwk-set+json, application/json")
        .header(USER_AGENT, concat!("trigate/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    if https {
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|_| {
            FetchError::TlsName {
                host: host.to_string(),
            }
        })?;
        let tls = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await
            .map_err(|source| FetchError::Tls {
                host: host.to_string(),
                source,
            })?;
        exchange(tls, request).await
    } else {
        exchange(tcp, request).await
    }
}

async fn exchange<S>(io: S, request: Request<Empty<Bytes>>) -> Result<Bytes, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| FetchError::Http(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http)?;
    // The connection future does the I/O; it ends with the exchange (or is
    // cut by `abort` when this function returns early).
    let driver = tokio::spawn(connection);
    let result = async {
        let response = sender.send_request(request).await.map_err(http)?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status(response.status()));
        }
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(FetchError::TooLarge);
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FetchError::TooLarge
                } else {
                    FetchError::Http(e.to_string())
                }
            })?;
        Ok(body.to_bytes())
    }
    .await;
    driver.abort();
    result
}

/// Verifies JWKS servers against the Mozilla roots, with ring (see
/// Cargo.toml: no aws-lc-rs).
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
            // Only reachable if ring lacked the default protocol versions.
            Err(e) => {
                tracing::error!(error = %e, "building the JWKS TLS config failed; using rustls defaults");
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore {
                        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                    })
                    .with_no_client_auth()
            }
        };
        Arc::new(config)
    }))
}
