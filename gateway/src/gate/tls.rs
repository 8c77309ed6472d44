//! The TLS gate for destinations with `tls`: `passthrough` (SNI checked,
//! bytes forwarded untouched), `terminate` (the client gets a leaf from the
//! node CA for its SNI; the gateway speaks its own verified TLS upstream)
//! and `originate` (plaintext from the client, TLS upstream).
//!
//! In `terminate` the upstream handshake comes first, offering the client's
//! ALPN list; the client is then offered exactly what the upstream chose.
//! Both sides therefore agree on the protocol the bytes carry, which is
//! what lets the gateway relay them before the L7 gates exist.
use std::{net::SocketAddr, sync::Arc};

use super::{tcp::pump, Accepted};
use crate::{
    config::{DestinationTls, TlsConfig, TlsMode},
    daemon::Node,
    detect::{self, Protocol},
    intercept::destinations::Destination,
    telemetry::access::{ConnectionLog, Outcome},
    tls::{LeafCache, NodeCa},
    upstream::tls::UpstreamTls,
    upstream::{self, tls::handshake},
};

/// Why a client's SNI is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SniRefusal {
    Denied(String),
    NotAllowed(String),
    Missing,
}

impl std::fmt::Display for SniRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SniRefusal::Denied(p) => write!(f, "SNI matches sni_deny pattern {p:?}"),
            SniRefusal::NotAllowed(s) => write!(f, "SNI {s:?} matches no sni_allow pattern"),
            SniRefusal::Missing => write!(f, "no SNI, and sni_allow is set"),
        }
    }
}

/// `api.openai.com` matches itself; `*.openai.com` matches any name below
/// openai.com (one label or more), not openai.com itself. Names compare
/// case-insensitively.
pub fn sni_matches(pattern: &str, sni: &str) -> bool {
    let sni = sni.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            sni.len() > suffix.len() + 1
                && sni[sni.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && sni.as_bytes()[sni.len() - suffix.len() - 1] == b'.'
        }
        None => pattern.eq_ignore_ascii_case(sni),
    }
}

/// Deny wins; a non-empty allow list must match.
pub fn check_sni(policy: &DestinationTls, sni: Option<&str>) -> Result<(), SniRefusal> {
    if let Some(sni) = sni {
        if let Some(p) = policy.sni_deny.iter().find(|p| sni_matches(p, sni)) {
            return Err(SniRefusal::Denied(p.clone()));
        }
    }
    if policy.sni_allow.is_empty() {
        return Ok(());
    }
    match sni {
        None => Err(SniRefusal::Missing),
        Some(sni) if policy.sni_allow.iter().any(|p| sni_matches(p, sni)) => Ok(()),
        Some(sni) => Err(SniRefusal::NotAllowed(sni.to_string())),
    }
}

/// The name verified upstream: configured, else the client's SNI, else the
/// destination's first host name, else the address.
pub fn upstream_name(
    policy: &DestinationTls,
    sni: Option<&str>,
    hosts: &[String],
    original_dst: SocketAddr,
) -> String {
    policy
        .upstream_name
        .clone()
        .or_else(|| sni.map(str::to_string))
        .or_else(|| hosts.first().cloned())
        .unwrap_or_else(|| original_dst.ip().to_string())
}

/// Lazily built TLS state: the node CA is loaded (or created) the first
/// time a `terminate` destination needs it, so nodes without one never
/// write a CA.
#[derive(Default)]
pub struct TlsState {
    leaves: std::sync::OnceLock<Arc<LeafCache>>,
    upstream: std::sync::OnceLock<Arc<UpstreamTls>>,
    init: std::sync::Mutex<()>,
}

impl TlsState {
    pub fn leaves(&self, cfg: &TlsConfig) -> Result<Arc<LeafCache>, String> {
        if let Some(l) = self.leaves.get() {
            return Ok(Arc::clone(l));
        }
        let _one_at_a_time = self.init.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = self.leaves.get() {
            return Ok(Arc::clone(l));
        }
        let ca = NodeCa::load_or_generate(&cfg.ca_cert, &cfg.ca_key, cfg.generate_ca)
            .map_err(|e| format!("node CA: {e}"))?;
        tracing::info!(cert = %cfg.ca_cert.display(), "node CA ready; workloads must trust this certificate for terminated destinations");
        let cache = Arc::new(LeafCache::new(
            Arc::new(ca),
            cfg.leaf_cache_size,
            std::time::Duration::from_secs(cfg.leaf_validity_hours * 3600),
        ));
        Ok(Arc::clone(self.leaves.get_or_init(|| cache)))
    }

    pub fn upstream(&self, cfg: &TlsConfig) -> Result<Arc<UpstreamTls>, String> {
        if let Some(u) = self.upstream.get() {
            return Ok(Arc::clone(u));
        }
        let _one_at_a_time = self.init.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = self.upstream.get() {
            return Ok(Arc::clone(u));
        }
        let u = Arc::new(UpstreamTls::new(&cfg.upstream_ca_files).map_err(|e| e.to_string())?);
        Ok(Arc::clone(self.upstream.get_or_init(|| u)))
    }

    /// Leaf certificates held, for the metrics.
    pub fn leaf_count(&self) -> usize {
        self.leaves.get().map_or(0, |l| l.len())
    }
}

/// Largest ClientHello we wait for; larger ones are parsed from this much.
const MAX_HELLO: usize = 16 * 1024;

pub async fn serve(node: &Arc<Node>, mut accepted: Accepted, destination: &Destination) {
    let Some(policy) = destination.tls.as_ref() else {
        return super::tcp::forward(accepted, &node.proxy, &node.stop).await;
    };
    let hosts = &destination.hosts;
    let stop = &node.stop;
    let tls_cfg = node.config.load().tls.clone();
    accepted.log.tls_mode = Some(policy.mode.as_str());
    let hello = match policy.mode {
        TlsMode::Originate => None,
        TlsMode::Passthrough | TlsMode::Terminate => {
            let timeout = std::time::Duration::from_millis(tls_cfg.detect_timeout_ms);
            match detect::detect(&accepted.stream, timeout, MAX_HELLO).await {
                Ok(Protocol::Tls { sni, alpn }) => Some((sni, alpn)),
                Ok(other) => {
                    accepted.log.protocol = Some(other.name());
                    accepted.log.fail(
                        Outcome::NotTls,
                        format!(
                            "expected a TLS ClientHello, the client sent {}",
                            other.name()
                        ),
                    );
                    return;
                }
                Err(e) => {
                    accepted.log.fail(Outcome::IoError, e);
                    return;
                }
            }
        }
    };
    if let Some((sni, _)) = &hello {
        accepted.log.protocol = Some("tls");
        accepted.log.sni.clone_from(sni);
        if let Err(refusal) = check_sni(policy, sni.as_deref()) {
            node.metrics
                .tls_handshakes
                .with_label_values(&[policy.mode.as_str(), "client", "sni_refused"])
                .inc();
            accepted.log.fail(Outcome::SniDenied, refusal);
            return;
        }
    }
    // The api gate speaks HTTP itself on both sides; otherwise the bytes
    // are relayed between the two TLS sessions.
    let api = destination.gate.is_http();
    match (policy.mode, hello) {
        (TlsMode::Passthrough, _) => super::tcp::forward(accepted, &node.proxy, stop).await,
        (TlsMode::Terminate, Some((sni, _))) if api => {
            terminate_http(node, accepted, policy, destination, sni, &tls_cfg).await
        }
        (TlsMode::Terminate, Some((sni, alpn))) => {
            terminate(node, accepted, policy, hosts, sni, alpn, &tls_cfg).await
        }
        (TlsMode::Originate, _) if api => {
            let name = upstream_name(policy, None, hosts, accepted.original_dst);
            super::api::serve_accepted(node, accepted, destination, Some(name)).await;
        }
        (TlsMode::Originate, _) => originate(node, accepted, policy, hosts, &tls_cfg).await,
        (TlsMode::Terminate, None) => {}
    }
}

async fn terminate(
    node: &Arc<Node>,
    accepted: Accepted,
    policy: &DestinationTls,
    hosts: &[String],
    sni: Option<String>,
    alpn: Vec<String>,
    tls_cfg: &TlsConfig,
) {
    let Accepted {
        stream,
        original_dst,
        netns,
        mut log,
        ..
    } = accepted;
    let leaves = match node.tls.leaves(tls_cfg) {
        Ok(l) => l,
        Err(e) => {
            log.fail(Outcome::ClientTlsFailed, e);
            return;
        }
    };
    let name = upstream_name(policy, sni.as_deref(), hosts, original_dst);
    let offered: Vec<Vec<u8>> = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let Some(upstream) = connect_upstream(
        node,
        original_dst,
        &netns,
        &name,
        &offered,
        "terminate",
        tls_cfg,
        &mut log,
    )
    .await
    else {
        return;
    };
    let chosen: Vec<Vec<u8>> = upstream
        .get_ref()
        .1
        .alpn_protocol()
        .map(|p| vec![p.to_vec()])
        .unwrap_or_default();
    let fallback = sni.unwrap_or_else(|| original_dst.ip().to_string());
    let config = leaves.server_config(Some(fallback), chosen);
    let Some(client) = accept_client(node, stream, config, tls_cfg, &mut log).await else {
        return;
    };
    pump(client, upstream, &node.proxy, &node.stop, &mut log).await;
}

/// `terminate` for the api gate: the gateway speaks HTTP itself on both
/// sides, so the client is offered h2 and http/1.1 and the upstream pool
/// negotiates on its own.
async fn terminate_http(
    node: &Arc<Node>,
    accepted: Accepted,
    policy: &DestinationTls,
    destination: &Destination,
    sni: Option<String>,
    tls_cfg: &TlsConfig,
) {
    let Accepted {
        stream,
        original_dst,
        netns,
        mut log,
        workload,
        ..
    } = accepted;
    let leaves = match node.tls.leaves(tls_cfg) {
        Ok(l) => l,
        Err(e) => {
            log.fail(Outcome::ClientTlsFailed, e);
            return;
        }
    };
    let fallback = sni.clone().unwrap_or_else(|| original_dst.ip().to_string());
    let config = leaves.server_config(Some(fallback), vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    let Some(client) = accept_client(node, stream, config, tls_cfg, &mut log).await else {
        return;
    };
    let name = upstream_name(policy, sni.as_deref(), &destination.hosts, original_dst);
    super::api::serve_io(
        node,
        client,
        original_dst,
        netns,
        workload,
        destination,
        Some(name),
        &mut log,
    )
    .await;
}

async fn originate(
    node: &Arc<Node>,
    accepted: Accepted,
    policy: &DestinationTls,
    hosts: &[String],
    tls_cfg: &TlsConfig,
) {
    let Accepted {
        stream,
        original_dst,
        netns,
        mut log,
        ..
    } = accepted;
    let name = upstream_name(policy, None, hosts, original_dst);
    let Some(upstream) = connect_upstream(
        node,
        original_dst,
        &netns,
        &name,
        &[],
        "originate",
        tls_cfg,
        &mut log,
    )
    .await
    else {
        return;
    };
    pump(stream, upstream, &node.proxy, &node.stop, &mut log).await;
}

/// TCP then TLS to the upstream, verifying `name` and offering `alpn`;
/// failures are recorded in `log` and the metrics.
#[allow(clippy::too_many_arguments)]
async fn connect_upstream(
    node: &Arc<Node>,
    addr: SocketAddr,
    netns: &crate::netns::Netns,
    name: &str,
    alpn: &[Vec<u8>],
    mode: &'static str,
    tls_cfg: &TlsConfig,
    log: &mut ConnectionLog,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let upstream_tls = match node.tls.upstream(tls_cfg) {
        Ok(u) => u,
        Err(e) => {
            log.fail(Outcome::UpstreamTlsFailed, e);
            return None;
        }
    };
    let tcp =
        match upstream::connect(addr, netns, node.proxy.mark, node.proxy.connect_timeout).await {
            Ok(s) => s,
            Err(e) => {
                log.fail(e.outcome(), e);
                return None;
            }
        };
    let timeout = std::time::Duration::from_millis(tls_cfg.handshake_timeout_ms);
    let handshakes = &node.metrics.tls_handshakes;
    match handshake(tcp, name, upstream_tls.config(alpn), timeout).await {
        Ok(s) => {
            handshakes
                .with_label_values(&[mode, "upstream", "ok"])
                .inc();
            Some(s)
        }
        Err(e) => {
            handshakes
                .with_label_values(&[mode, "upstream", "failed"])
                .inc();
            log.fail(Outcome::UpstreamTlsFailed, e);
            None
        }
    }
}

/// The client's TLS handshake with the gateway (leaf from the node CA),
/// within the handshake timeout; failures are recorded.
async fn accept_client(
    node: &Arc<Node>,
    stream: tokio::net::TcpStream,
    config: Arc<rustls::ServerConfig>,
    tls_cfg: &TlsConfig,
    log: &mut ConnectionLog,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let timeout = std::time::Duration::from_millis(tls_cfg.handshake_timeout_ms);
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    let result = match tokio::time::timeout(timeout, accept).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!(
            "client TLS handshake failed: {e} (does the client trust the node CA?)"
        )),
        Err(_) => Err(format!("client TLS handshake timed out after {timeout:?}")),
    };
    let handshakes = &node.metrics.tls_handshakes;
    match result {
        Ok(s) => {
            handshakes
                .with_label_values(&["terminate", "client", "ok"])
                .inc();
            Some(s)
        }
        Err(e) => {
            handshakes
                .with_label_values(&["terminate", "client", "failed"])
                .inc();
            log.fail(Outcome::ClientTlsFailed, e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str]) -> DestinationTls {
        DestinationTls {
            mode: TlsMode::Passthrough,
            sni_allow: allow.iter().map(|s| s.to_string()).collect(),
            sni_deny: deny.iter().map(|s| s.to_string()).collect(),
            upstream_name: None,
        }
    }

    #[test]
    fn patterns_match_names_and_subdomains() {
        assert!(sni_matches("api.openai.com", "api.openai.com"));
        assert!(sni_matches("api.openai.com", "API.OpenAI.com"));
        assert!(sni_matches("api.openai.com", "api.openai.com."));
        assert!(!sni_matches("api.openai.com", "xapi.openai.com"));
        assert!(sni_matches("*.openai.com", "api.openai.com"));
        assert!(sni_matches("*.openai.com", "a.b.openai.com"));
        assert!(!sni_matches("*.openai.com", "openai.com"));
        assert!(!sni_matches("*.openai.com", "evilopenai.com"));
        assert!(!sni_matches("*.openai.com", ".openai.com"));
    }

    #[test]
    fn deny_wins_and_allow_must_match() {
        assert_eq!(check_sni(&policy(&[], &[]), None), Ok(()));
        assert_eq!(check_sni(&policy(&[], &[]), Some("x.test")), Ok(()));
        assert_eq!(
            check_sni(&policy(&[], &["*.test"]), Some("x.test")),
            Err(SniRefusal::Denied("*.test".into()))
        );
        assert_eq!(
            check_sni(&policy(&[], &["*.test"]), None),
            Ok(()),
            "deny needs a name to match"
        );
        assert_eq!(
            check_sni(&policy(&["*.test"], &["bad.test"]), Some("bad.test")),
            Err(SniRefusal::Denied("bad.test".into()))
        );
        assert_eq!(
            check_sni(&policy(&["*.test"], &["bad.test"]), Some("ok.test")),
            Ok(())
        );
        assert_eq!(
            check_sni(&policy(&["*.test"], &[]), Some("ok.other")),
            Err(SniRefusal::NotAllowed("ok.other".into()))
        );
        assert_eq!(
            check_sni(&policy(&["*.test"], &[]), None),
            Err(SniRefusal::Missing)
        );
    }

    #[test]
    fn upstream_name_falls_back_in_order() {
        let addr: SocketAddr = "10.1.2.3:443".parse().unwrap();
        let mut p = policy(&[], &[]);
        let hosts = vec!["api.example.com".to_string()];
        assert_eq!(
            upstream_name(&p, Some("sni.test"), &hosts, addr),
            "sni.test"
        );
        assert_eq!(upstream_name(&p, None, &hosts, addr), "api.example.com");
        assert_eq!(upstream_name(&p, None, &[], addr), "10.1.2.3");
        p.upstream_name = Some("fixed.test".into());
        assert_eq!(
            upstream_name(&p, Some("sni.test"), &hosts, addr),
            "fixed.test"
        );
    }
}
