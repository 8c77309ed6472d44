//! Leaf certificates per server name, minted from the node CA on first use
//! and kept in a bounded LRU; and the rustls server config that presents them.
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tracing::{debug, warn};

use super::ca::{LeafName, NodeCa};
use super::{ring_provider, TlsError};

/// Shortest accepted leaf validity.
const MIN_VALIDITY: Duration = Duration::from_secs(1);
/// Longest accepted leaf validity. Leaves live in memory and are re-minted
/// anyway, and Apple platforms refuse TLS server certificates valid for
/// longer than this, even from private CAs.
const MAX_VALIDITY: Duration = Duration::from_secs(825 * 24 * 3600);

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Leaf certificates per server name, minted from the CA and cached (bounded LRU).
pub struct LeafCache {
    ca: Arc<NodeCa>,
    capacity: usize,
    validity: Duration,
    /// Age after which a cached leaf is re-minted: when less than a third
    /// of its validity remains, so a connection never gets a leaf about to
    /// expire under it.
    refresh_after: Duration,
    provider: Arc<CryptoProvider>,
    clock: Clock,
    lru: Mutex<Lru>,
}

impl fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl LeafCache {
    /// `capacity` is raised to at least 1; `validity` is kept within
    /// 1 s ..= 825 days.
    pub fn new(ca: Arc<NodeCa>, capacity: usize, validity: Duration) -> Self {
        Self::with_clock(ca, capacity, validity, Arc::new(SystemTime::now))
    }

    fn with_clock(ca: Arc<NodeCa>, capacity: usize, validity: Duration, clock: Clock) -> Self {
        let clamped = validity.clamp(MIN_VALIDITY, MAX_VALIDITY);
        if clamped != validity {
            warn!(
                requested = ?validity,
                used = ?clamped,
                "leaf certificate validity out of range; clamped"
            );
        }
        let capacity = capacity.max(1);
        LeafCache {
            ca,
            capacity,
            validity: clamped,
            refresh_after: clamped - clamped / 3,
            provider: ring_provider(),
            clock,
            lru: Mutex::new(Lru::new(capacity)),
        }
    }

    /// The certified key for `name` (a DNS name, or an IP address literal → IP SAN). Minted on a miss;
    /// re-minted when less than 1/3 of its validity remains. Invalid names → Err.
    pub fn certified_key(&self, name: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        let name = LeafName::parse(name)?;
        let key = name.key();
        let now = (self.clock)();
        if let Some(hit) = self.lock().get(&key, now) {
            return Ok(hit);
        }
        // Minted outside the lock so one slow mint never stalls handshakes
        // for names already cached. Two concurrent misses for one name both
        // mint; `insert` keeps the first, so callers still share one leaf.
        let minted = Arc::new(
            self.ca
                .mint_leaf(&name, now, self.validity, &self.provider)?,
        );
        debug!(name = %key, "minted a leaf certificate");
        Ok(self
            .lock()
            .insert(key, minted, now + self.refresh_after, now))
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A rustls server config presenting leaves from this cache by SNI; when the client sends no SNI,
    /// `fallback_name` (e.g. the original destination IP) is used. `alpn` e.g. [b"h2", b"http/1.1"].
    pub fn server_config(
        self: &Arc<Self>,
        fallback_name: Option<String>,
        alpn: Vec<Vec<u8>>,
    ) -> Arc<ServerConfig> {
        let resolver = SniResolver {
            cache: Arc::clone(self),
            fallback_name,
        };
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            // Fails only for a provider without suites for TLS 1.2/1.3; the
            // compiled-in ring provider has them (every handshake test
            // goes through here).
            .expect("the ring provider supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = alpn;
        Arc::new(config)
    }

    /// The LRU holds no invariant a panicking holder could break half-way
    /// (every mutation is a single map or queue operation), so a poisoned
    /// lock is taken over rather than propagated as a panic.
    fn lock(&self) -> MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Picks the leaf by SNI, else by the fallback name.
#[derive(Debug)]
struct SniResolver {
    cache: Arc<LeafCache>,
    fallback_name: Option<String>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = client_hello.server_name().or(self.fallback_name.as_deref()) else {
            warn!("TLS client sent no SNI and no fallback name is set; failing the handshake");
            return None;
        };
        match self.cache.certified_key(name) {
            Ok(key) => Some(key),
            Err(error) => {
                warn!(server_name = name, %error, "no leaf certificate; failing the handshake");
                None
            }
        }
    }
}

/// A bounded LRU: a map of entries plus a queue of (tick, name) in use
/// order. A hit pushes a new tick instead of moving the old queue item
/// (O(1)); items whose tick is no longer the entry's are stale and skipped
/// on eviction, and purged once they outnumber live ones.
struct Lru {
    capacity: usize,
    entries: HashMap<Arc<str>, Entry>,
    order: VecDeque<(u64, Arc<str>)>,
    tick: u64,
}

struct Entry {
    key: Arc<CertifiedKey>,
    refresh_at: SystemTime,
    tick: u64,
}

impl Lru {
    fn new(capacity: usize) -> Lru {
        Lru {
            capacity,
            entries: HashMap::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity * 2),
            tick: 0,
        }
    }

    /// The fresh leaf for `name`, marked most recently used.
    fn get(&mut self, name: &str, now: SystemTime) -> Option<Arc<CertifiedKey>> {
        let (name, entry) = self.entries.get_key_value(name)?;
        if now >= entry.refresh_at {
            return None;
        }
        let (name, key) = (Arc::clone(name), Arc::clone(&entry.key));
        self.touch(name);
        Some(key)
    }

    /// Stores `key` unless a fresh leaf for `name` arrived meanwhile (that
    /// one is returned instead), evicting the least recently used if full.
    fn insert(
        &mut self,
        name: String,
        key: Arc<CertifiedKey>,
        refresh_at: SystemTime,
        now: SystemTime,
    ) -> Arc<CertifiedKey> {
        if let Some(existing) = self.get(&name, now) {
            return existing;
        }
        let name: Arc<str> = name.into();
        if !self.entries.contains_key(&name) {
            while self.entries.len() >= self.capacity {
                self.evict_one();
            }
        }
        self.entries.insert(
            Arc::clone(&name),
            Entry {
                key: Arc::clone(&key),
                refresh_at,
                tick: 0,
            },
        );
        self.touch(name);
        key
    }

    fn touch(&mut self, name: Arc<str>) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(entry) = self.entries.get_mut(&name) {
            entry.tick = tick;
        }
        self.order.push_back((tick, name));
        if self.order.len() > 2 * self.capacity {
            // Amortised O(1): after this the queue holds at most `capacity`
            // items, so the next purge is `capacity` touches away.
            let entries = &self.entries;
            self.order
                .retain(|(tick, name)| entries.get(name).is_some_and(|e| e.tick == *tick));
        }
    }

    fn evict_one(&mut self) {
        while let Some((tick, name)) = self.order.pop_front() {
            if self.entries.get(&name).is_some_and(|e| e.tick == tick) {
                self.entries.remove(&name);
                return;
            }
        }
        // Unreachable while every entry has its live queue item; never loop.
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, RootCertStore};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    const HOUR: Duration = Duration::from_secs(3600);

    fn ca() -> Arc<NodeCa> {
        Arc::new(NodeCa::generate_in_memory().unwrap())
    }

    /// A clock at a fixed base plus `offset` seconds.
    fn fake_clock() -> (Arc<AtomicU64>, Clock) {
        let base = SystemTime::now();
        let offset = Arc::new(AtomicU64::new(0));
        let read = Arc::clone(&offset);
        let clock: Clock =
            Arc::new(move || base + Duration::from_secs(read.load(Ordering::SeqCst)));
        (offset, clock)
    }

    fn roots(trusted: &NodeCa) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(trusted.cert_der()).unwrap();
        Arc::new(roots)
    }

    fn client_config(trusted: &NodeCa, alpn: &[&[u8]]) -> ClientConfig {
        let mut config = ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(trusted))
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    struct Handshake {
        client: Result<tokio_rustls::client::TlsStream<tokio::io::DuplexStream>, std::io::Error>,
        server: Result<tokio_rustls::server::TlsStream<tokio::io::DuplexStream>, std::io::Error>,
    }

    impl Handshake {
        fn peer_chain(&self) -> Vec<CertificateDer<'static>> {
            let client = self.client.as_ref().expect("client handshake");
            client.get_ref().1.peer_certificates().unwrap().to_vec()
        }
    }

    async fn handshake(server: Arc<ServerConfig>, client: ClientConfig, name: &str) -> Handshake {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from(name.to_string()).unwrap();
        let connect = TlsConnector::from(Arc::new(client)).connect(name, client_io);
        let accept = TlsAcceptor::from(server).accept(server_io);
        let (client, server) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(connect, accept)
        })
        .await
        .expect("handshake finished in time");
        Handshake { client, server }
    }

    /// Whether `chain` verifies for `name` against `trusted`, outside any
    /// handshake: the SAN check made explicit.
    fn verifies_for(trusted: &NodeCa, chain: &[CertificateDer<'static>], name: &str) -> bool {
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(trusted), ring_provider())
            .build()
            .unwrap();
        verifier
            .verify_server_cert(
                &chain[0],
                &chain[1..],
                &ServerName::try_from(name).unwrap(),
                &[],
                UnixTime::now(),
            )
            .is_ok()
    }

    #[tokio::test]
    async fn sni_handshake_presents_a_leaf_for_the_name() {
        let ca = ca();
        let cache = Arc::new(LeafCache::new(ca.clone(), 16, 24 * HOUR));
        let server = cache.server_config(None, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);

        let hs = handshake(server.clone(), client_config(&ca, &[]), "api.example.test").await;
        hs.server.as_ref().expect("server handshake");
        let chain = hs.peer_chain();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], ca.cert_der(), "chain is [leaf, CA]");
        assert!(verifies_for(&ca, &chain, "api.example.test"));
        assert!(!verifies_for(&ca, &chain, "other.example.test"));
        assert_eq!(
            hs.server.as_ref().unwrap().get_ref().1.server_name(),
            Some("api.example.test")
        );
        assert!(hs
            .client
            .as_ref()
            .unwrap()
            .get_ref()
            .1
            .alpn_protocol()
            .is_none());
        assert_eq!(cache.len(), 1);

        // Application data flows.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, mut server) = (hs.client.unwrap(), hs.server.unwrap());
        client.write_all(b"ping").await.unwrap();
        client.flush().await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[tokio::test]
    async fn client_trusting_another_ca_fails() {
        let cache = Arc::new(LeafCache::new(ca(), 16, 24 * HOUR));
        let stranger = NodeCa::generate_in_memory().unwrap();
        let hs = handshake(
            cache.server_config(None, vec![]),
            client_config(&stranger, &[]),
            "api.example.test",
        )
        .await;
        let err = hs.client.expect_err("client must reject the leaf");
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
        assert!(hs.server.is_err());
    }

    #[tokio::test]
    async fn no_sni_uses_the_fallback_ip() {
        let ca = ca();
        let cache = Arc::new(LeafCache::new(ca.clone(), 16, 24 * HOUR));
        let mut client = client_config(&ca, &[]);
        client.enable_sni = false;
        let server = cache.server_config(Some("10.1.2.3".to_string()), vec![]);
        // An IP ServerName: the client sends no SNI and checks the IP SAN.
        let hs = handshake(server, client.clone(), "10.1.2.3").await;
        hs.server.as_ref().expect("server handshake");
        assert_eq!(hs.server.as_ref().unwrap().get_ref().1.server_name(), None);
        let chain = hs.peer_chain();
        assert!(verifies_for(&ca, &chain, "10.1.2.3"));
        assert!(!verifies_for(&ca, &chain, "10.1.2.4"));

        // Without a fallback there is nothing to present.
        let hs = handshake(cache.server_config(None, vec![]), client, "10.1.2.3").await;
        assert!(hs.server.is_err());
        assert!(hs.client.is_err());
    }

    #[tokio::test]
    async fn alpn_h2_when_offered() {
        let ca = ca();
        let cache = Arc::new(LeafCache::new(ca.clone(), 16, 24 * HOUR));
        let server = cache.server_config(None, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        let hs = handshake(
            server.clone(),
            client_config(&ca, &[b"http/1.1", b"h2"]),
            "llm.example.test",
        )
        .await;
        assert_eq!(
            hs.client.as_ref().unwrap().get_ref().1.alpn_protocol(),
            Some(&b"h2"[..])
        );
        let hs = handshake(
            server,
            client_config(&ca, &[b"http/1.1"]),
            "llm.example.test",
        )
        .await;
        assert_eq!(
            hs.client.as_ref().unwrap().get_ref().1.alpn_protocol(),
            Some(&b"http/1.1"[..])
        );
    }

    #[tokio::test]
    async fn tls12_client() {
        let ca = ca();
        let cache = Arc::new(LeafCache::new(ca.clone(), 16, 24 * HOUR));
        let config = ClientConfig::builder_with_provider(ring_provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots(&ca))
            .with_no_client_auth();
        let hs = handshake(
            cache.server_config(None, vec![]),
            config,
            "old.example.test",
        )
        .await;
        let client = hs.client.expect("TLS 1.2 handshake");
        assert_eq!(
            client.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
    }

    #[test]
    fn same_name_same_leaf() {
        let cache = LeafCache::new(ca(), 4, 24 * HOUR);
        let a = cache.certified_key("api.example.test").unwrap();
        let b = cache.certified_key("api.example.test").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // Same name as rustls would normalise it.
        let c = cache.certified_key("API.Example.Test.").unwrap();
        assert!(Arc::ptr_eq(&a, &c));
        let other = cache.certified_key("other.example.test").unwrap();
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn evicts_least_recently_used() {
        let cache = LeafCache::new(ca(), 2, 24 * HOUR);
        let a = cache.certified_key("a.test").unwrap();
        let b = cache.certified_key("b.test").unwrap();
        // a is now more recent than b.
        assert!(Arc::ptr_eq(&a, &cache.certified_key("a.test").unwrap()));
        let c = cache.certified_key("c.test").unwrap();
        assert_eq!(cache.len(), 2);
        assert!(
            Arc::ptr_eq(&a, &cache.certified_key("a.test").unwrap()),
            "a was used recently"
        );
        assert!(Arc::ptr_eq(&c, &cache.certified_key("c.test").unwrap()));
        let b2 = cache.certified_key("b.test").unwrap();
        assert!(!Arc::ptr_eq(&b, &b2), "b was evicted and re-minted");
        assert_eq!(cache.len(), 2);
        // b's return evicted a (c was touched after a).
        assert!(Arc::ptr_eq(&c, &cache.certified_key("c.test").unwrap()));
        assert!(!Arc::ptr_eq(&a, &cache.certified_key("a.test").unwrap()));
    }

    #[test]
    fn capacity_at_least_one() {
        let cache = LeafCache::new(ca(), 0, HOUR);
        assert!(cache.is_empty());
        let a = cache.certified_key("a.test").unwrap();
        assert!(Arc::ptr_eq(&a, &cache.certified_key("a.test").unwrap()));
        cache.certified_key("b.test").unwrap();
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn remints_when_a_third_of_validity_remains() {
        let (offset, clock) = fake_clock();
        let cache = LeafCache::with_clock(ca(), 4, 3 * HOUR, clock);
        let first = cache.certified_key("api.example.test").unwrap();
        offset.store(2 * 3600 - 1, Ordering::SeqCst);
        let same = cache.certified_key("api.example.test").unwrap();
        assert!(Arc::ptr_eq(&first, &same), "more than a third left: cached");
        offset.store(2 * 3600, Ordering::SeqCst);
        let renewed = cache.certified_key("api.example.test").unwrap();
        assert!(!Arc::ptr_eq(&first, &renewed), "a third left: re-minted");
        assert_eq!(cache.len(), 1);
        let again = cache.certified_key("api.example.test").unwrap();
        assert!(Arc::ptr_eq(&renewed, &again));
    }

    #[test]
    fn leaf_validity_follows_the_clock() {
        // The re-minted leaf is valid at its own minting time, not the first's.
        let (offset, clock) = fake_clock();
        let ca = ca();
        let cache = LeafCache::with_clock(ca.clone(), 4, 3 * HOUR, clock);
        offset.store(10 * 3600, Ordering::SeqCst);
        let leaf = cache.certified_key("api.example.test").unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(&ca), ring_provider())
            .build()
            .unwrap();
        let name = ServerName::try_from("api.example.test").unwrap();
        let at = |secs: u64| {
            let t = SystemTime::now() + Duration::from_secs(secs);
            verifier.verify_server_cert(
                &leaf.cert[0],
                &leaf.cert[1..],
                &name,
                &[],
                UnixTime::since_unix_epoch(t.duration_since(SystemTime::UNIX_EPOCH).unwrap()),
            )
        };
        assert!(at(10 * 3600).is_ok());
        assert!(at(12 * 3600).is_ok());
        assert!(at(14 * 3600).is_err(), "expired after 3 h");
        assert!(
            at(0).is_err(),
            "not valid 10 h before its minting time (1 h skew)"
        );
    }

    #[test]
    fn invalid_names_are_errors() {
        let cache = LeafCache::new(ca(), 4, HOUR);
        for bad in ["", "bad name.test", "a..b"] {
            assert!(cache.certified_key(bad).is_err(), "{bad:?}");
        }
        assert!(cache.is_empty());
    }

    #[test]
    fn lru_queue_stays_bounded() {
        let cache = LeafCache::new(ca(), 3, HOUR);
        let names = ["a.test", "b.test", "c.test"];
        for _ in 0..50 {
            for name in names {
                cache.certified_key(name).unwrap();
            }
        }
        let lru = cache.lock();
        assert_eq!(lru.entries.len(), 3);
        assert!(lru.order.len() <= 2 * 3, "queue len {}", lru.order.len());
    }

    #[test]
    fn concurrent_lookups() {
        let cache = LeafCache::new(ca(), 4, HOUR);
        std::thread::scope(|s| {
            for t in 0..4 {
                let cache = &cache;
                s.spawn(move || {
                    for i in 0..40 {
                        let name = format!("n{}.test", (i + t) % 6);
                        let key = cache.certified_key(&name).unwrap();
                        assert_eq!(key.cert.len(), 2);
                    }
                });
            }
        });
        assert!(cache.len() <= 4);
    }

    #[test]
    fn validity_is_clamped() {
        let cache = LeafCache::new(ca(), 1, Duration::ZERO);
        assert_eq!(cache.validity, MIN_VALIDITY);
        let cache = LeafCache::new(ca(), 1, Duration::from_secs(u64::MAX));
        assert_eq!(cache.validity, MAX_VALIDITY);
        cache.certified_key("a.test").unwrap();
    }
}
