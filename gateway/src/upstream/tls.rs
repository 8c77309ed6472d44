//! TLS towards upstreams: verified against the Mozilla roots plus the
//! configured extra CAs, with the ALPN the client asked for.
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("tls.upstream_ca_files: cannot read {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tls.upstream_ca_files: {path} holds no usable certificate: {message}")]
    CaCert { path: PathBuf, message: String },
    #[error("{name:?} is not a name TLS can verify: {message}")]
    Name { name: String, message: String },
    #[error("TLS handshake with the upstream ({name}) failed: {source}")]
    Handshake {
        name: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with the upstream ({name}) timed out after {timeout:?}")]
    Timeout { name: String, timeout: Duration },
}

/// Client configs for upstream connections, one per ALPN list in use.
pub struct UpstreamTls {
    roots: Arc<RootCertStore>,
    configs: Mutex<HashMap<Vec<Vec<u8>>, Arc<ClientConfig>>>,
}

impl UpstreamTls {
    pub fn new(extra_ca_files: &[PathBuf]) -> Result<Self, UpstreamTlsError> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for path in extra_ca_files {
            let pem = std::fs::read(path).map_err(|source| UpstreamTlsError::CaFile {
                path: path.clone(),
                source,
            })?;
            let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|e| UpstreamTlsError::CaCert {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(UpstreamTlsError::CaCert {
                    path: path.clone(),
                    message: "no PEM CERTIFICATE block parsed as a CA".into(),
                });
            }
        }
        Ok(UpstreamTls {
            roots: Arc::new(roots),
            configs: Mutex::new(HashMap::new()),
        })
    }

    /// The config offering `alpn` (empty: no ALPN extension).
    pub fn config(&self, alpn: &[Vec<u8>]) -> Arc<ClientConfig> {
        let mut configs = self.configs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = configs.get(alpn) {
            return Arc::clone(c);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = match ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(b) => b
                .with_root_certificates(Arc::clone(&self.roots))
                .with_no_client_auth(),
            // The ring provider supports the default versions; this arm
            // exists only because the builder API is fallible.
            Err(e) => {
                tracing::error!(error = %e, "building the upstream TLS config failed; using rustls defaults");
                ClientConfig::builder()
                    .with_root_certificates(Arc::clone(&self.roots))
                    .with_no_client_auth()
            }
        };
        config.alpn_protocols = alpn.to_vec();
        let config = Arc::new(config);
        configs.insert(alpn.to_vec(), Arc::clone(&config));
        config
    }
}

/// TLS over an upstream TCP connection, verifying `name` (a host name or
/// an IP address literal).
pub async fn handshake(
    stream: TcpStream,
    name: &str,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, UpstreamTlsError> {
    let server_name =
        ServerName::try_from(name.to_string()).map_err(|e| UpstreamTlsError::Name {
            name: name.to_string(),
            message: e.to_string(),
        })?;
    let connect = TlsConnector::from(config).connect(server_name, stream);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(UpstreamTlsError::Handshake {
            name: name.to_string(),
            source,
        }),
        Err(_) => Err(UpstreamTlsError::Timeout {
            name: name.to_string(),
            timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_cached_per_alpn_list() {
        let t = UpstreamTls::new(&[]).unwrap();
        let a = t.config(&[b"h2".to_vec()]);
        let b = t.config(&[b"h2".to_vec()]);
        let c = t.config(&[]);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(a.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(c.alpn_protocols.is_empty());
    }

    #[test]
    fn extra_ca_files_are_checked() {
        let missing = UpstreamTls::new(&["/nonexistent/ca.pem".into()]);
        let err = missing.err().unwrap().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let dir = std::env::temp_dir().join(format!("trigate-upstream-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let err = UpstreamTls::new(std::slice::from_ref(&junk))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("junk.pem") && err.contains("no PEM"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
