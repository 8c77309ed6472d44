//! TLS termination material: the node CA and the leaf certificates it mints.
//!
//! For destinations in `terminate` mode the daemon answers the workload's
//! TLS handshake itself. Workloads trust the node CA (its certificate is
//! published by the DaemonSet); the daemon presents a leaf for whatever name
//! the client asked for (SNI, or the original destination IP when the client
//! sent none), minted on first use and kept in a bounded cache:
//!
//! ```text
//! ClientHello ─ SNI ─▶ LeafCache::certified_key ─ miss ─▶ NodeCa::mint_leaf
//!                          │ hit (fresh)                       │
//!                          ▼                                   ▼
//!                    [leaf, CA] + key  ◀──────────── cached, LRU-bounded
//! ```
//!
//! Crypto is always rustls' ring provider, passed explicitly: the build has no
//! aws-lc-rs, so a process-default provider must never be relied on.
mod ca;
mod der;
mod leaf;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use ca::NodeCa;
pub use leaf::LeafCache;

/// Errors from loading, generating or using the node CA.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "{action} {}: {source} (check the path, its parent directories and that the daemon may access them)",
        path.display()
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the node CA certificate and key must be two different files, both are set to {}",
        path.display()
    )]
    SameFile { path: PathBuf },
    #[error(
        "node CA file {} exists but {} does not: both the certificate and the key are needed; \
         restore the missing file, or remove the other one to have a new CA generated \
         (pods must then trust the new CA)",
        present.display(),
        missing.display()
    )]
    PartialCa { present: PathBuf, missing: PathBuf },
    #[error(
        "node CA certificate {} and key {} do not exist and CA generation is off: \
         provide both PEM files or enable generation",
        cert.display(),
        key.display()
    )]
    CaMissing { cert: PathBuf, key: PathBuf },
    #[error("{}: {problem}", path.display())]
    Pem { path: PathBuf, problem: String },
    #[error(
        "the private key in {} does not belong to the certificate in {}: \
         check that both files come from the same CA",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{origin} cannot serve as the node CA: {problem}")]
    CaUnusable { origin: String, problem: String },
    #[error("cannot mint a certificate for {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("{what}: {source}")]
    Rcgen {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("{what}: {source}")]
    Rustls {
        what: &'static str,
        source: rustls::Error,
    },
}

/// The one crypto provider used for everything here.
fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
