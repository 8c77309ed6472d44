//! Upstream clusters: endpoint choice (round robin, random, least request)
//! and outlier ejection, the per-endpoint circuit breaker: after N
//! consecutive failures an endpoint sits out for a while. When every
//! endpoint is ejected the cluster uses them all anyway ("panic mode"),
//! since refusing every request would be worse than trying.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::config::{Cluster as ClusterConfig, LoadBalancing};

pub struct Endpoint {
    pub addr: SocketAddr,
    consecutive_failures: AtomicU32,
    /// Ms since the cluster's epoch until which it is ejected; 0: in.
    ejected_until_ms: AtomicU64,
    in_flight: AtomicUsize,
}

pub struct Cluster {
    pub name: String,
    pub tls_name: Option<String>,
    lb: LoadBalancing,
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    threshold: u32,
    eject_for: Duration,
    epoch: Instant,
}

/// One request's hold on an endpoint; reports the result when finished.
pub struct Pick {
    pub index: usize,
    pub addr: SocketAddr,
    cluster: Arc<Cluster>,
}

impl Pick {
    /// Records the outcome: success resets the failure streak, failure
    /// extends it and may eject the endpoint.
    pub fn report(self, ok: bool) {
        self.cluster.report(self.index, ok, Instant::now());
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.cluster.endpoints[self.index]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Cluster {
    pub fn new(cfg: &ClusterConfig) -> Cluster {
        Cluster {
            name: cfg.name.clone(),
            tls_name: cfg.tls_name.clone(),
            lb: cfg.lb,
            endpoints: cfg
                .endpoints
                .iter()
                .map(|addr| Endpoint {
                    addr: *addr,
                    consecutive_failures: AtomicU32::new(0),
                    ejected_until_ms: AtomicU64::new(0),
                    in_flight: AtomicUsize::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            threshold: cfg.consecutive_failures,
            eject_for: Duration::from_secs(cfg.eject_secs),
            epoch: Instant::now(),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    pub fn is_ejected(&self, index: usize, now: Instant) -> bool {
        self.endpoints[index]
            .ejected_until_ms
            .load(Ordering::Relaxed)
            > self.ms(now)
    }

    /// Chooses an endpoint, avoiding `tried` (earlier attempts of the same
    /// request) and ejected ones while others remain.
    pub fn pick(self: &Arc<Self>, tried: &[usize], now: Instant) -> Option<Pick> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let usable = |i: &usize| !tried.contains(i) && !self.is_ejected(*i, now);
        let mut candidates: Vec<usize> = (0..n).filter(usable).collect();
        if candidates.is_empty() {
            candidates = (0..n).filter(|i| !tried.contains(i)).collect();
        }
        if candidates.is_empty() {
            candidates = (0..n).collect();
        }
        let index = match self.lb {
            LoadBalancing::RoundRobin => {
                candidates[self.next.fetch_add(1, Ordering::Relaxed) % candidates.len()]
            }
            LoadBalancing::Random => candidates[random_index(candidates.len())],
            LoadBalancing::LeastRequest => *candidates
                .iter()
                .min_by_key(|i| self.endpoints[**i].in_flight.load(Ordering::Relaxed))
                .unwrap_or(&candidates[0]),
        };
        self.endpoints[index]
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        Some(Pick {
            index,
            addr: self.endpoints[index].addr,
            cluster: Arc::clone(self),
        })
    }

    fn report(&self, index: usize, ok: bool, now: Instant) {
        let e = &self.endpoints[index];
        if ok {
            e.consecutive_failures.store(0, Ordering::Relaxed);
            return;
        }
        let streak = e.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if self.threshold > 0 && streak >= self.threshold {
            let until = self.ms(now) + self.eject_for.as_millis() as u64;
            e.ejected_until_ms.store(until, Ordering::Relaxed);
            e.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::warn!(cluster = %self.name, endpoint = %e.addr, failures = streak, eject_secs = self.eject_for.as_secs(), "endpoint ejected");
        }
    }

    /// Endpoints currently ejected (metrics).
    pub fn ejected(&self, now: Instant) -> usize {
        (0..self.endpoints.len())
            .filter(|i| self.is_ejected(*i, now))
            .count()
    }
}

/// A cheap, well-spread index for random balancing (no RNG crate: the
/// quality needed is "not always the same endpoint").
fn random_index(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() as usize) % n
}

/// Clusters by name.
pub fn build(configs: &[ClusterConfig]) -> HashMap<String, Arc<Cluster>> {
    configs
        .iter()
        .map(|c| (c.name.clone(), Arc::new(Cluster::new(c))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(lb: LoadBalancing, n: u16, threshold: u32) -> Arc<Cluster> {
        Arc::new(Cluster::new(&ClusterConfig {
            name: "c".into(),
            endpoints: (1..=n)
                .map(|p| SocketAddr::from(([10, 0, 0, 1], p)))
                .collect(),
            lb,
            tls_name: None,
            consecutive_failures: threshold,
            eject_secs: 30,
        }))
    }

    #[test]
    fn round_robin_cycles() {
        let c = cluster(LoadBalancing::RoundRobin, 3, 5);
        let now = Instant::now();
        let ports: Vec<u16> = (0..6)
            .map(|_| c.pick(&[], now).unwrap().addr.port())
            .collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn retries_avoid_endpoints_already_tried() {
        let c = cluster(LoadBalancing::RoundRobin, 3, 5);
        let now = Instant::now();
        let first = c.pick(&[], now).unwrap();
        let second = c.pick(&[first.index], now).unwrap();
        assert_ne!(first.index, second.index);
        let third = c.pick(&[first.index, second.index], now).unwrap();
        assert!(third.index != first.index && third.index != second.index);
        let any = c.pick(&[0, 1, 2], now).unwrap();
        assert!(any.index < 3, "all tried: still answers");
    }

    #[test]
    fn consecutive_failures_eject_and_time_brings_back() {
        let c = cluster(LoadBalancing::RoundRobin, 2, 3);
        let t0 = Instant::now();
        for _ in 0..2 {
            c.report(0, false, t0);
        }
        assert!(!c.is_ejected(0, t0), "below the threshold");
        c.report(0, true, t0);
        for _ in 0..2 {
            c.report(0, false, t0);
        }
        assert!(!c.is_ejected(0, t0), "a success resets the streak");
        c.report(0, false, t0);
        assert!(c.is_ejected(0, t0));
        assert_eq!(c.ejected(t0), 1);
        for _ in 0..5 {
            assert_eq!(
                c.pick(&[], t0).unwrap().index,
                1,
                "ejected endpoint skipped"
            );
        }
        let later = t0 + Duration::from_secs(31);
        assert!(!c.is_ejected(0, later));
    }

    #[test]
    fn all_ejected_uses_them_anyway() {
        let c = cluster(LoadBalancing::RoundRobin, 2, 1);
        let t0 = Instant::now();
        c.report(0, false, t0);
        c.report(1, false, t0);
        assert_eq!(c.ejected(t0), 2);
        assert!(c.pick(&[], t0).is_some());
    }

    #[test]
    fn zero_threshold_never_ejects() {
        let c = cluster(LoadBalancing::RoundRobin, 1, 0);
        let t0 = Instant::now();
        for _ in 0..100 {
            c.report(0, false, t0);
        }
        assert!(!c.is_ejected(0, t0));
    }

    #[test]
    fn least_request_prefers_idle_endpoints() {
        let c = cluster(LoadBalancing::LeastRequest, 2, 5);
        let now = Instant::now();
        let held = c.pick(&[], now).unwrap();
        let next = c.pick(&[], now).unwrap();
        assert_ne!(held.index, next.index, "the busy one is avoided");
        drop(next);
        drop(held);
        let random = cluster(LoadBalancing::Random, 4, 5);
        let seen: std::collections::BTreeSet<usize> = (0..64)
            .map(|_| random.pick(&[], now).unwrap().index)
            .collect();
        assert!(seen.len() > 1, "random balancing always chose {seen:?}");
    }
}
