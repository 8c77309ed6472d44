//! The destination table: config destinations turned into LPM trie entries,
//! host names resolved by the daemon and refreshed on their TTL.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use gateway_common::{
    dest_prefix_len, v4_prefix_bits, DestKey, DestValue, ACTION_DENY, ACTION_OBSERVE,
    ACTION_REDIRECT,
};
use hickory_resolver::TokioResolver;
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use super::{origdst::ip_key, Interceptor};
use crate::{
    config::{Action, Config, DestinationTls, DnsConfig, GateKind},
    telemetry::Metrics,
};

/// One trie entry: key, prefix length, value.
pub type TrieEntry = (DestKey, u32, DestValue);

pub fn action_code(action: Action) -> u32 {
    match action {
        Action::Redirect => ACTION_REDIRECT,
        Action::Deny => ACTION_DENY,
        Action::Observe => ACTION_OBSERVE,
    }
}

/// The trie entries for one network of a destination, one per port.
pub fn trie_entries(dest_id: u32, action: Action, ports: &[u16], net: IpNet) -> Vec<TrieEntry> {
    let (addr, bits) = match net {
        IpNet::V4(n) => (
            ip_key(IpAddr::V4(n.network())),
            v4_prefix_bits(u32::from(n.prefix_len())),
        ),
        IpNet::V6(n) => (ip_key(IpAddr::V6(n.network())), u32::from(n.prefix_len())),
    };
    let value = DestValue {
        dest_id,
        action: action_code(action),
    };
    ports
        .iter()
        .map(|p| {
            (
                DestKey {
                    port: p.to_be_bytes(),
                    addr,
                },
                dest_prefix_len(bits),
                value,
            )
        })
        .collect()
}

/// A host address as the /32 or /128 network the trie stores.
pub fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// How long to wait before resolving again: the record's TTL, kept within
/// the configured bounds so a TTL of 0 does not spin and a day-long TTL does
/// not hide a move.
pub fn refresh_after(ttl: Duration, dns: &DnsConfig) -> Duration {
    ttl.clamp(
        Duration::from_secs(dns.min_refresh_secs),
        Duration::from_secs(dns.max_refresh_secs),
    )
}

/// A destination at run time.
pub struct Destination {
    pub id: u32,
    pub name: Arc<str>,
    pub action: Action,
    pub ports: Vec<u16>,
    pub hosts: Vec<String>,
    pub tls: Option<DestinationTls>,
    pub gate: GateKind,
    /// Installed networks with a reference count: a CIDR from config and
    /// host names resolving to the same address each hold one reference.
    installed: Mutex<BTreeMap<IpNet, usize>>,
    /// The current addresses of each host name; empty until resolved.
    resolved: Mutex<BTreeMap<String, BTreeSet<IpAddr>>>,
}

impl Destination {
    pub fn addresses(&self) -> Vec<IpNet> {
        lock(&self.installed).keys().copied().collect()
    }

    pub fn unresolved(&self) -> Vec<String> {
        lock(&self.resolved)
            .iter()
            .filter(|(_, a)| a.is_empty())
            .map(|(h, _)| h.clone())
            .collect()
    }
}

/// Every destination, indexed by the id the kernel reports (index + 1).
pub struct Destinations {
    list: Vec<Arc<Destination>>,
    interceptor: Arc<Interceptor>,
    metrics: Arc<Metrics>,
    /// Taken by every kernel write; `retired` is set under it when a reload
    /// replaced this table, so a resolver that was mid-lookup then cannot
    /// write stale entries afterwards.
    writer: Mutex<bool>,
    /// Stops this table's resolver tasks.
    resolvers: CancellationToken,
}

impl Destinations {
    /// Installs the literal CIDRs now; host names wait for
    /// [`Self::spawn_resolvers`], except those `previous` (the table this one
    /// replaces on a reload) had already resolved: they carry over, so a
    /// reload never leaves a resolved name uninstalled. Entries of `previous`
    /// the new table does not have are removed last; entries both have are
    /// overwritten in place, so interception never lapses for them.
    pub fn install(
        config: &Config,
        interceptor: Arc<Interceptor>,
        metrics: Arc<Metrics>,
        previous: Option<&Destinations>,
        stop: &CancellationToken,
    ) -> Result<Self, super::InterceptError> {
        let list: Vec<Arc<Destination>> = config
            .destinations
            .iter()
            .enumerate()
            .map(|(i, d)| {
                Arc::new(Destination {
                    id: i as u32 + 1,
                    name: Arc::from(d.name.as_str()),
                    action: d.action,
                    ports: d.ports.clone(),
                    hosts: d.hosts.clone(),
                    tls: d.tls.clone(),
                    gate: d.gate,
                    installed: Mutex::new(BTreeMap::new()),
                    resolved: Mutex::new(
                        d.hosts
                            .iter()
                            .map(|h| (h.clone(), BTreeSet::new()))
                            .collect(),
                    ),
                })
            })
            .collect();
        let this = Destinations {
            list,
            interceptor,
            metrics,
            writer: Mutex::new(false),
            resolvers: stop.child_token(),
        };
        let _retired_guard = previous.map(Destinations::retire);
        for (dest, cfg) in this.list.iter().zip(&config.destinations) {
            for net in &cfg.cidrs {
                this.add_ref(dest, *net)?;
            }
            let carried = previous
                .and_then(|p| p.list.iter().find(|d| d.name == dest.name))
                .map(|old| lock(&old.resolved).clone())
                .unwrap_or_default();
            for (host, addrs) in carried {
                if lock(&dest.resolved).contains_key(&host) && !addrs.is_empty() {
                    this.set_host(dest, &host, addrs)?;
                }
            }
            this.publish_count(dest);
        }
        if let Some(previous) = previous {
            let keep: BTreeSet<(Vec<u8>, u32)> = this
                .entries()
                .into_iter()
                .map(|(k, prefix, _)| (entry_id(&k), prefix))
                .collect();
            for (key, prefix, _) in previous.entries() {
                if !keep.contains(&(entry_id(&key), prefix)) {
                    this.interceptor.remove_destination(key, prefix)?;
                }
            }
            for old in &previous.list {
                if !this.list.iter().any(|d| d.name == old.name) {
                    let _ = this
                        .metrics
                        .destination_addresses
                        .remove_label_values(&[&*old.name]);
                }
            }
        }
        Ok(this)
    }

    /// Stops this table's resolvers and its kernel writes for good.
    fn retire(&self) -> std::sync::MutexGuard<'_, bool> {
        self.resolvers.cancel();
        let mut retired = lock(&self.writer);
        *retired = true;
        retired
    }

    /// Every kernel entry this table has installed.
    fn entries(&self) -> Vec<TrieEntry> {
        self.list
            .iter()
            .flat_map(|d| {
                lock(&d.installed)
                    .keys()
                    .flat_map(|net| trie_entries(d.id, d.action, &d.ports, *net))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub fn all(&self) -> &[Arc<Destination>] {
        &self.list
    }

    pub fn by_id(&self, id: u32) -> Option<&Arc<Destination>> {
        (id as usize).checked_sub(1).and_then(|i| self.list.get(i))
    }

    /// Userspace match, for connections that arrive without an eBPF record
    /// (iptables REDIRECT): the longest installed prefix with the port.
    pub fn lookup(&self, addr: SocketAddr) -> Option<&Arc<Destination>> {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        self.list
            .iter()
            .filter(|d| d.ports.contains(&addr.port()))
            .filter_map(|d| {
                lock(&d.installed)
                    .keys()
                    .filter(|n| n.contains(&ip))
                    .map(|n| n.prefix_len())
                    .max()
                    .map(|len| (len, d))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, d)| d)
    }

    fn add_ref(&self, dest: &Destination, net: IpNet) -> Result<(), super::InterceptError> {
        let mut installed = lock(&dest.installed);
        let count = installed.entry(net).or_insert(0);
        *count += 1;
        if *count == 1 {
            for (key, prefix, value) in trie_entries(dest.id, dest.action, &dest.ports, net) {
                self.interceptor.set_destination(key, prefix, value)?;
            }
        }
        Ok(())
    }

    fn drop_ref(&self, dest: &Destination, net: IpNet) -> Result<(), super::InterceptError> {
        let mut installed = lock(&dest.installed);
        let Some(count) = installed.get_mut(&net) else {
            return Ok(());
        };
        *count -= 1;
        if *count == 0 {
            installed.remove(&net);
            for (key, prefix, _) in trie_entries(dest.id, dest.action, &dest.ports, net) {
                self.interceptor.remove_destination(key, prefix)?;
            }
        }
        Ok(())
    }

    fn publish_count(&self, dest: &Destination) {
        self.metrics
            .destination_addresses
            .with_label_values(&[&*dest.name])
            .set(lock(&dest.installed).len() as i64);
    }

    /// Replaces the addresses of one host name of a destination.
    pub fn update_host(
        &self,
        dest: &Destination,
        host: &str,
        addrs: BTreeSet<IpAddr>,
    ) -> Result<(), super::InterceptError> {
        let retired = lock(&self.writer);
        if *retired {
            return Ok(());
        }
        let result = self.set_host(dest, host, addrs);
        drop(retired);
        result
    }

    fn set_host(
        &self,
        dest: &Destination,
        host: &str,
        addrs: BTreeSet<IpAddr>,
    ) -> Result<(), super::InterceptError> {
        let old = lock(&dest.resolved)
            .insert(host.to_string(), addrs.clone())
            .unwrap_or_default();
        for ip in addrs.difference(&old) {
            self.add_ref(dest, host_net(*ip))?;
        }
        for ip in old.difference(&addrs) {
            self.drop_ref(dest, host_net(*ip))?;
        }
        self.publish_count(dest);
        Ok(())
    }

    /// One task per host name: static table entries are installed once;
    /// DNS answers are refreshed on TTL, failures retried and counted.
    pub fn spawn_resolvers(self: &Arc<Self>, dns: &DnsConfig) {
        let stop = self.resolvers.clone();
        let resolver = match resolver(dns) {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                tracing::warn!(error = %e, "no system DNS configuration (/etc/resolv.conf) and no dns.servers; host destinations resolve only from dns.hosts");
                None
            }
        };
        for dest in &self.list {
            let hosts: Vec<String> = lock(&dest.resolved).keys().cloned().collect();
            for host in hosts {
                if let Some(addrs) = dns.hosts.get(&host) {
                    let addrs = addrs.iter().copied().collect();
                    if let Err(e) = self.update_host(dest, &host, addrs) {
                        tracing::error!(destination = %dest.name, host = %host, error = %e, "installing static addresses failed");
                    }
                    continue;
                }
                let this = Arc::clone(self);
                let dest = Arc::clone(dest);
                let resolver = resolver.clone();
                let dns = dns.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut failures = 0u32;
                    loop {
                        let wait = match this
                            .resolve_once(&dest, &host, resolver.as_deref(), failures)
                            .await
                        {
                            Ok(ttl) => {
                                if failures > 0 {
                                    tracing::info!(destination = %dest.name, host = %host, "destination host resolves again");
                                }
                                failures = 0;
                                refresh_after(ttl, &dns)
                            }
                            Err(()) => {
                                failures = failures.saturating_add(1);
                                retry_after(failures, &dns)
                            }
                        };
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                });
            }
        }
    }

    /// Resolves once and installs the answer; the TTL on success. Failures
    /// are counted every time but logged as a warning only the first time
    /// in a row, so a node without DNS does not flood its log.
    async fn resolve_once(
        &self,
        dest: &Destination,
        host: &str,
        resolver: Option<&TokioResolver>,
        failures: u32,
    ) -> Result<Duration, ()> {
        let result = match resolver {
            Some(r) => r.lookup_ip(host).await.map_err(|e| e.to_string()),
            None => Err("no system DNS configuration".to_string()),
        };
        match result {
            Ok(lookup) => {
                let addrs: BTreeSet<IpAddr> = lookup.iter().collect();
                let ttl = lookup
                    .valid_until()
                    .saturating_duration_since(Instant::now());
                tracing::debug!(destination = %dest.name, host, addresses = ?addrs, ttl_secs = ttl.as_secs(), "resolved");
                if let Err(e) = self.update_host(dest, host, addrs) {
                    tracing::error!(destination = %dest.name, host, error = %e, "installing resolved addresses failed");
                }
                Ok(ttl)
            }
            Err(error) => {
                // Keep the addresses we had: a DNS outage must not turn
                // interception off for names that resolved before.
                self.metrics.dns_failures.with_label_values(&[host]).inc();
                if failures == 0 {
                    tracing::warn!(destination = %dest.name, host, error = %error, "cannot resolve destination host; retrying with backoff");
                } else {
                    tracing::debug!(destination = %dest.name, host, error = %error, failures, "still cannot resolve destination host");
                }
                Err(())
            }
        }
    }
}

/// The configured name servers, or the system's.
fn resolver(dns: &DnsConfig) -> Result<TokioResolver, hickory_resolver::ResolveError> {
    use hickory_resolver::{
        config::{NameServerConfigGroup, ResolverConfig},
        name_server::TokioConnectionProvider,
    };
    if dns.servers.is_empty() {
        return Ok(TokioResolver::builder_tokio()?.build());
    }
    let mut group = NameServerConfigGroup::new();
    for server in &dns.servers {
        group.merge(NameServerConfigGroup::from_ips_clear(
            &[server.ip()],
            server.port(),
            true,
        ));
    }
    let config = ResolverConfig::from_parts(None, Vec::new(), group);
    Ok(TokioResolver::builder_with_config(config, TokioConnectionProvider::default()).build())
}

/// Exponential backoff from `retry_secs`, capped at `max_refresh_secs`.
pub fn retry_after(failures: u32, dns: &DnsConfig) -> Duration {
    let base = dns.retry_secs.max(1);
    let factor = 1u64 << failures.saturating_sub(1).min(16);
    Duration::from_secs(
        base.saturating_mul(factor)
            .min(dns.max_refresh_secs.max(base)),
    )
}

/// A trie key as comparable bytes (port and address).
fn entry_id(key: &DestKey) -> Vec<u8> {
    key.port.iter().chain(key.addr.iter()).copied().collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_port_with_port_in_the_prefix() {
        let net: IpNet = "10.1.2.0/24".parse().unwrap();
        let e = trie_entries(3, Action::Deny, &[443, 8443], net);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0.port, 443u16.to_be_bytes());
        assert_eq!(e[1].0.port, 8443u16.to_be_bytes());
        assert_eq!(e[0].1, 16 + 96 + 24);
        assert_eq!(&e[0].0.addr[12..], &[10, 1, 2, 0]);
        assert_eq!(
            e[0].2,
            DestValue {
                dest_id: 3,
                action: ACTION_DENY
            }
        );
    }

    #[test]
    fn ipv6_prefixes_are_not_shifted() {
        let net: IpNet = "fd00::1/128".parse().unwrap();
        let e = trie_entries(1, Action::Redirect, &[80], net);
        assert_eq!(e[0].1, 16 + 128);
        assert_eq!(
            e[0].0.addr,
            "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(e[0].2.action, ACTION_REDIRECT);
    }

    #[test]
    fn host_addresses_are_full_length() {
        assert_eq!(host_net("1.2.3.4".parse().unwrap()).prefix_len(), 32);
        assert_eq!(host_net("::1".parse().unwrap()).prefix_len(), 128);
    }

    #[test]
    fn refresh_is_clamped() {
        let dns = DnsConfig {
            min_refresh_secs: 5,
            max_refresh_secs: 300,
            ..DnsConfig::default()
        };
        assert_eq!(refresh_after(Duration::ZERO, &dns), Duration::from_secs(5));
        assert_eq!(
            refresh_after(Duration::from_secs(60), &dns),
            Duration::from_secs(60)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(86400), &dns),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let dns = DnsConfig {
            retry_secs: 5,
            max_refresh_secs: 300,
            ..DnsConfig::default()
        };
        let secs: Vec<u64> = (1..=8).map(|n| retry_after(n, &dns).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(retry_after(u32::MAX, &dns).as_secs(), 300);
    }

    #[test]
    fn action_codes_match_the_kernel_contract() {
        assert_eq!(action_code(Action::Redirect), ACTION_REDIRECT);
        assert_eq!(action_code(Action::Deny), ACTION_DENY);
        assert_eq!(action_code(Action::Observe), ACTION_OBSERVE);
    }
}
