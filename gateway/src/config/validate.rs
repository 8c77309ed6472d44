//! The rules serde cannot express. Each check pushes a [`Problem`] naming the
//! field in YAML spelling and keeps going, so one run reports everything.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Component, Path};

use super::{
    Config, Destination, DnsConfig, InterceptConfig, ListenerConfig, ListenerMode, LogConfig,
    Problem, ProxyConfig, TlsMode, WorkloadConfig,
};

/// Lowest heartbeat interval: below it the daemon's timer jitter is a
/// sizeable part of the interval and `fail_mode` trips on scheduling noise.
const MIN_HEARTBEAT_INTERVAL_MS: u64 = 50;

/// Absolute paths that are the root of a cgroup2 mount on common systems.
/// Attaching there would intercept every process on the node; the daemon
/// still checks the real mount at start-up, this catches the obvious case.
const CGROUP2_MOUNT_ROOTS: &[&str] = &["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Every problem in `config`, in field order.
pub(super) fn problems(config: &Config) -> Vec<Problem> {
    let mut p = Problems::default();
    check_instance(&config.instance, &mut p);
    check_admin(config, &mut p);
    check_log(&config.log, &mut p);
    check_intercept(&config.intercept, &mut p);
    check_listener(config, &mut p);
    check_proxy(&config.proxy, &mut p);
    check_dns(&config.dns, &mut p);
    check_destinations(&config.destinations, &mut p);
    check_tls(config, &mut p);
    check_http(config, &mut p);
    check_llm(config, &mut p);
    for (field, message) in config.mcp.problems() {
        p.push(field, message);
    }
    check_mcp(config, &mut p);
    for (field, message) in config.guardrails.problems() {
        p.push(field, message);
    }
    check_workloads(&config.workloads, config.listener.mode, &mut p);
    for (field, message) in config
        .kubernetes
        .problems(config.listener.mode == ListenerMode::InPod)
    {
        p.push(field, message);
    }
    p.0
}

fn check_tls(config: &Config, p: &mut Problems) {
    let tls = &config.tls;
    for (field, value) in [
        ("tls.leaf_cache_size", tls.leaf_cache_size as u64),
        ("tls.leaf_validity_hours", tls.leaf_validity_hours),
        ("tls.detect_timeout_ms", tls.detect_timeout_ms),
        ("tls.handshake_timeout_ms", tls.handshake_timeout_ms),
    ] {
        if value == 0 {
            p.push(field, "must be more than 0");
        }
    }
    for (field, path) in [("tls.ca_cert", &tls.ca_cert), ("tls.ca_key", &tls.ca_key)] {
        if !path.is_absolute() {
            p.push(field, format!("{path:?} must be an absolute path"));
        }
    }
    if tls.ca_cert == tls.ca_key {
        p.push("tls.ca_key", "must be another file than tls.ca_cert");
    }
    for (i, dest) in config.destinations.iter().enumerate() {
        let Some(t) = &dest.tls else { continue };
        let at = format!("destinations[{i}].tls");
        for (list, patterns) in [("sni_allow", &t.sni_allow), ("sni_deny", &t.sni_deny)] {
            if t.mode == TlsMode::Originate && !patterns.is_empty() {
                p.push(
                    format!("{at}.{list}"),
                    "has no effect with mode originate (the client sends no SNI: it speaks plaintext)",
                );
            }
            for (j, pattern) in patterns.iter().enumerate() {
                let name = pattern.strip_prefix("*.").unwrap_or(pattern);
                if let Some(message) = host_problem(name) {
                    p.push(
                        format!("{at}.{list}[{j}]"),
                        format!(
                            "{message} (patterns are host names, optionally starting with `*.`)"
                        ),
                    );
                }
            }
        }
        if let Some(name) = &t.upstream_name {
            if name.parse::<std::net::IpAddr>().is_err() {
                if let Some(message) = host_problem(name) {
                    p.push(format!("{at}.upstream_name"), message);
                }
            }
        }
    }
}

fn check_http(config: &Config, p: &mut Problems) {
    for (i, dest) in config.destinations.iter().enumerate() {
        if dest.gate.is_http()
            && dest
                .tls
                .as_ref()
                .is_some_and(|t| t.mode == TlsMode::Passthrough)
        {
            p.push(
                format!("destinations[{i}].gate"),
                "api and llm need to see HTTP: use tls.mode terminate (or originate), not passthrough",
            );
        }
    }
    let h = &config.http;
    for (field, value) in [
        ("http.max_header_bytes", h.max_header_bytes as u64),
        (
            "http.max_concurrent_streams",
            u64::from(h.max_concurrent_streams),
        ),
        ("http.request_timeout_ms", h.request_timeout_ms),
        ("http.header_read_timeout_ms", h.header_read_timeout_ms),
        ("http.max_request_body_bytes", h.max_request_body_bytes),
        ("http.keepalive_timeout_ms", h.keepalive_timeout_ms),
        ("http.pool_idle_timeout_ms", h.pool_idle_timeout_ms),
    ] {
        if value == 0 {
            p.push(field, "must be more than 0");
        }
    }
    check_unique_names("routes", config.routes.iter().map(|r| r.name.as_str()), p);
    let providers: Vec<&str> = config.auth.jwt.iter().map(|j| j.name.as_str()).collect();
    for (i, route) in config.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if !is_valid_name(&route.name, 64, |c| matches!(c, '_' | '.' | '-')) {
            p.push(format!("{at}.name"), name_message(&route.name));
        }
        for (j, d) in route.matches.destinations.iter().enumerate() {
            if !config.destinations.iter().any(|x| &x.name == d) {
                p.push(
                    format!("{at}.match.destinations[{j}]"),
                    format!("no destination is named {d:?}"),
                );
            }
        }
        for (j, host) in route.matches.hosts.iter().enumerate() {
            let name = host.strip_prefix("*.").unwrap_or(host);
            if let Some(message) = host_problem(name) {
                if name.parse::<IpAddr>().is_err() {
                    p.push(format!("{at}.match.hosts[{j}]"), message);
                }
            }
        }
        if let Some(path) = &route.matches.path {
            let given = [&path.prefix, &path.exact, &path.regex]
                .iter()
                .filter(|x| x.is_some())
                .count();
            if given != 1 {
                p.push(
                    format!("{at}.match.path"),
                    "needs exactly one of prefix, exact and regex",
                );
            }
            for x in path.prefix.iter().chain(&path.exact) {
                if !x.starts_with('/') {
                    p.push(
                        format!("{at}.match.path"),
                        format!("{x:?} must start with /"),
                    );
                }
            }
            if let Some(r) = &path.regex {
                if let Err(e) = regex::Regex::new(r) {
                    p.push(
                        format!("{at}.match.path.regex"),
                        format!("not a valid regular expression: {e}"),
                    );
                }
            }
        }
        if let Some(prefix) = &route.rewrite_prefix {
            if route
                .matches
                .path
                .as_ref()
                .is_none_or(|m| m.prefix.is_none())
            {
                p.push(
                    format!("{at}.rewrite_prefix"),
                    "needs match.path.prefix (the part it replaces)",
                );
            }
            if !prefix.starts_with('/') {
                p.push(
                    format!("{at}.rewrite_prefix"),
                    format!("{prefix:?} must start with /"),
                );
            }
        }
        for (j, m) in route
            .matches
            .methods
            .iter()
            .chain(route.allow.iter().flat_map(|a| &a.methods))
            .enumerate()
        {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') {
                p.push(
                    format!("{at}.methods[{j}]"),
                    format!("{m:?} is not an upper-case HTTP method"),
                );
            }
        }
        for (field, rw) in [
            ("request_headers", &route.request_headers),
            ("response_headers", &route.response_headers),
        ] {
            for name in rw.set.keys().chain(rw.add.keys()).chain(rw.remove.iter()) {
                if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    p.push(
                        format!("{at}.{field}"),
                        format!("{name:?} is not a valid header name"),
                    );
                }
            }
            for value in rw.set.values().chain(rw.add.values()) {
                if hyper::header::HeaderValue::from_str(value).is_err() {
                    p.push(
                        format!("{at}.{field}"),
                        format!("{value:?} is not a valid header value"),
                    );
                }
            }
        }
        for (j, method) in route.authn.iter().enumerate() {
            let ok = match method.strip_prefix("jwt:") {
                Some(name) => providers.contains(&name),
                None => matches!(method.as_str(), "workload" | "api-key"),
            };
            if !ok {
                p.push(
                    format!("{at}.authn[{j}]"),
                    format!("{method:?}: use workload, api-key or jwt:<name of an auth.jwt entry>"),
                );
            }
        }
        for (j, limit) in route.limits.iter().enumerate() {
            let lat = format!("{at}.limits[{j}]");
            let key_ok = matches!(limit.key.as_str(), "workload" | "route" | "api-key")
                || limit
                    .key
                    .strip_prefix("header:")
                    .is_some_and(|h| hyper::header::HeaderName::from_bytes(h.as_bytes()).is_ok())
                || limit
                    .key
                    .strip_prefix("claim:")
                    .is_some_and(|c| !c.is_empty());
            if !key_ok {
                p.push(
                    format!("{lat}.key"),
                    format!(
                        "{:?}: use workload, route, api-key, header:<name> or claim:<name>",
                        limit.key
                    ),
                );
            }
            if limit.requests == 0 {
                p.push(format!("{lat}.requests"), "must be more than 0");
            }
            if limit.per_secs == 0 {
                p.push(format!("{lat}.per_secs"), "must be more than 0");
            }
            if limit.burst == Some(0) {
                p.push(format!("{lat}.burst"), "must be more than 0");
            }
        }
        if let Some(0) = route.timeout_ms {
            p.push(format!("{at}.timeout_ms"), "must be more than 0");
        }
    }
    check_unique_names(
        "clusters",
        config.clusters.iter().map(|c| c.name.as_str()),
        p,
    );
    for (i, c) in config.clusters.iter().enumerate() {
        if c.endpoints.is_empty() {
            p.push(
                format!("clusters[{i}].endpoints"),
                "needs at least one ip:port",
            );
        }
        if let Some(name) = &c.tls_name {
            if name.parse::<IpAddr>().is_err() {
                if let Some(message) = host_problem(name) {
                    p.push(format!("clusters[{i}].tls_name"), message);
                }
            }
        }
        if c.eject_secs == 0 && c.consecutive_failures > 0 {
            p.push(
                format!("clusters[{i}].eject_secs"),
                "must be more than 0 when ejection is on",
            );
        }
    }
    for (i, route) in config.routes.iter().enumerate() {
        if let Some(u) = &route.upstream {
            if !config.clusters.iter().any(|c| &c.name == u) {
                p.push(
                    format!("routes[{i}].upstream"),
                    format!("no cluster is named {u:?}"),
                );
            }
        }
    }
    let rl = &config.rate_limits;
    if rl.backend == super::LimitBackendKind::Redis && rl.redis_url.is_none() {
        p.push(
            "rate_limits.redis_url",
            "required when rate_limits.backend is redis",
        );
    }
    if let Some(url) = &rl.redis_url {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            p.push(
                "rate_limits.redis_url",
                format!("{url:?} must start with redis:// or rediss://"),
            );
        }
    }
    if rl.redis_ca_file.is_some()
        && !rl
            .redis_url
            .as_deref()
            .is_some_and(|u| u.starts_with("rediss://"))
    {
        p.push(
            "rate_limits.redis_ca_file",
            "only used with a rediss:// redis_url",
        );
    }
    if rl.timeout_ms == 0 {
        p.push("rate_limits.timeout_ms", "must be more than 0");
    }
    check_unique_names(
        "auth.jwt",
        config.auth.jwt.iter().map(|j| j.name.as_str()),
        p,
    );
    for (i, jwt) in config.auth.jwt.iter().enumerate() {
        let at = format!("auth.jwt[{i}]");
        if jwt.jwks_file.is_some() == jwt.jwks_url.is_some() {
            p.push(&at, "needs exactly one of jwks_file and jwks_url");
        }
        for (j, alg) in jwt.algorithms.iter().enumerate() {
            if !matches!(
                alg.as_str(),
                "RS256"
                    | "RS384"
                    | "RS512"
                    | "PS256"
                    | "PS384"
                    | "PS512"
                    | "ES256"
                    | "ES384"
                    | "EdDSA"
            ) {
                p.push(
                    format!("{at}.algorithms[{j}]"),
                    format!(
                        "{alg:?} is not supported (RS256/384/512, PS256/384/512, ES256/384, EdDSA)"
                    ),
                );
            }
        }
        if jwt.issuer.is_empty() {
            p.push(format!("{at}.issuer"), "must not be empty");
        }
    }
    check_unique_names(
        "auth.api_keys",
        config.auth.api_keys.iter().map(|k| k.name.as_str()),
        p,
    );
    for (i, key) in config.auth.api_keys.iter().enumerate() {
        if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            p.push(
                format!("auth.api_keys[{i}].sha256"),
                "must be 64 hex digits: the SHA-256 of the key (printf %s KEY | sha256sum)",
            );
        }
    }
}

fn check_instance(instance: &str, p: &mut Problems) {
    if !is_valid_name(instance, 32, |c| c == '-') {
        p.push(
            "instance",
            format!(
                "{instance:?} is not a valid instance name: use 1 to 32 lower-case letters, \
                 digits and '-', starting with a letter or digit (it names the pin directory \
                 <bpffs>/trigate/<instance>)"
            ),
        );
    }
}

fn check_log(log: &LogConfig, p: &mut Problems) {
    if log.level.trim().is_empty() {
        p.push(
            "log.level",
            "must not be empty; write a tracing filter such as info or info,trigate=debug",
        );
    } else if let Err(err) = tracing_subscriber::EnvFilter::builder().parse(&log.level) {
        p.push(
            "log.level",
            format!("{:?} is not a valid tracing filter: {err}", log.level),
        );
    }
}

fn check_intercept(intercept: &InterceptConfig, p: &mut Problems) {
    if let Some(message) = cgroup_path_problem(&intercept.cgroup) {
        p.push("intercept.cgroup", message);
    }
    if intercept.heartbeat_interval_ms < MIN_HEARTBEAT_INTERVAL_MS {
        p.push(
            "intercept.heartbeat_interval_ms",
            format!(
                "is {}; must be at least {MIN_HEARTBEAT_INTERVAL_MS}",
                intercept.heartbeat_interval_ms
            ),
        );
    }
    let twice_interval = intercept.heartbeat_interval_ms.saturating_mul(2);
    if intercept.heartbeat_timeout_ms <= twice_interval {
        p.push(
            "intercept.heartbeat_timeout_ms",
            format!(
                "is {}; must be more than twice intercept.heartbeat_interval_ms ({}), so one \
                 late heartbeat does not trigger fail_mode",
                intercept.heartbeat_timeout_ms, intercept.heartbeat_interval_ms
            ),
        );
    }
    if intercept.mark == 0 {
        p.push(
            "intercept.mark",
            "must not be 0: every unmarked socket has mark 0, so the eBPF programs could not \
             tell the daemon's own connections apart",
        );
    }
    if !intercept.bpffs.is_absolute() {
        p.push(
            "intercept.bpffs",
            format!(
                "{:?} must be an absolute path (where the bpf filesystem is mounted, usually \
                 /sys/fs/bpf)",
                intercept.bpffs
            ),
        );
    }
}

/// The public (read-only) admin listener must be bindable next to the
/// admin endpoint and the host-mode listener: equal ports on the same or a
/// wildcard address would fail at start-up.
fn check_admin(config: &Config, p: &mut Problems) {
    let Some(public) = config.admin.public_address else {
        return;
    };
    let admin = config.admin.address;
    if binds_overlap(public, admin) {
        p.push(
            "admin.public_address",
            format!(
                "{public} must differ from admin.address ({admin}): the public listener serves \
                 only the read-only endpoints, so it needs its own port"
            ),
        );
    }
    let ListenerConfig { mode, port, .. } = config.listener;
    let host_listener = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    if mode == ListenerMode::Host && binds_overlap(public, host_listener) {
        p.push(
            "admin.public_address",
            format!("{public}: port {port} is also listener.port; pick another"),
        );
    }
}

/// Whether two listeners would fight over one port (port 0 never does).
fn binds_overlap(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn check_listener(config: &Config, p: &mut Problems) {
    let ListenerConfig { mode, port, ipv6 } = config.listener;
    if port == 0 && mode == ListenerMode::InPod {
        p.push(
            "listener.port",
            "0 (any free port) is only allowed when listener.mode is host; in in-pod mode every \
             pod's listener must be on the same known port",
        );
    }
    // In host mode the listener binds loopback; an admin endpoint on the same
    // port and a loopback or wildcard address would fail to bind at start-up.
    let admin = config.admin.address;
    let clashes = match admin.ip() {
        IpAddr::V4(ip) => ip.is_loopback() || ip.is_unspecified(),
        IpAddr::V6(ip) => ipv6 && (ip.is_loopback() || ip.is_unspecified()),
    };
    if mode == ListenerMode::Host && port != 0 && admin.port() == port && clashes {
        p.push(
            "listener.port",
            format!("{port} is also the port of admin.address ({admin}); pick another"),
        );
    }
}

fn check_proxy(proxy: &ProxyConfig, p: &mut Problems) {
    if proxy.connect_timeout_ms == 0 {
        p.push("proxy.connect_timeout_ms", "must be more than 0");
    }
    if proxy.idle_timeout_secs == 0 {
        p.push("proxy.idle_timeout_secs", "must be more than 0");
    }
}

fn check_dns(dns: &DnsConfig, p: &mut Problems) {
    for (name, addrs) in &dns.hosts {
        let field = format!("dns.hosts[{name:?}]");
        if let Some(message) = host_problem(name) {
            p.push(&field, message);
        }
        if addrs.is_empty() {
            p.push(&field, "must list at least one address");
        }
    }
    for (i, server) in dns.servers.iter().enumerate() {
        if server.port() == 0 || server.ip().is_unspecified() {
            p.push(
                format!("dns.servers[{i}]"),
                format!("{server} is not an address a query can be sent to"),
            );
        }
    }
    if dns.min_refresh_secs == 0 {
        p.push(
            "dns.min_refresh_secs",
            "must be at least 1 (a record with TTL 0 would be re-resolved in a busy loop)",
        );
    }
    if dns.max_refresh_secs < dns.min_refresh_secs {
        p.push(
            "dns.max_refresh_secs",
            format!(
                "is {}; must be at least dns.min_refresh_secs ({})",
                dns.max_refresh_secs, dns.min_refresh_secs
            ),
        );
    }
    if dns.retry_secs == 0 {
        p.push("dns.retry_secs", "must be more than 0");
    }
}

fn check_destinations(destinations: &[Destination], p: &mut Problems) {
    check_unique_names(
        "destinations",
        destinations.iter().map(|d| d.name.as_str()),
        p,
    );
    // Which destinations list a host or network, to report one that two
    // destinations claim on a common port: the kernel map keys on address and
    // port, so only one of them could win.
    let mut host_owners: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut cidr_owners: HashMap<ipnet::IpNet, Vec<usize>> = HashMap::new();

    for (i, dest) in destinations.iter().enumerate() {
        let at = format!("destinations[{i}]");
        if !is_valid_name(&dest.name, 64, |c| matches!(c, '_' | '.' | '-')) {
            p.push(format!("{at}.name"), name_message(&dest.name));
        }
        if dest.hosts.is_empty() && dest.cidrs.is_empty() {
            p.push(
                &at,
                format!(
                    "destination {:?} needs at least one of hosts or cidrs",
                    dest.name
                ),
            );
        }

        for (j, host) in dest.hosts.iter().enumerate() {
            let field = format!("{at}.hosts[{j}]");
            if let Some(message) = host_problem(host) {
                p.push(field, message);
                continue;
            }
            if let Some(k) = dest.hosts[..j].iter().position(|h| h == host) {
                p.push(field, format!("{host} is listed twice (also hosts[{k}])"));
                continue;
            }
            let owners = host_owners.entry(host.as_str()).or_default();
            if let Some(message) = shared_ports(host, dest, owners, destinations) {
                p.push(field, message);
            }
            owners.push(i);
        }

        for (j, net) in dest.cidrs.iter().enumerate() {
            let field = format!("{at}.cidrs[{j}]");
            if net.trunc() != *net {
                p.push(
                    field,
                    format!(
                        "{net} has bits set after the prefix length; write {} for the network \
                         or {} for the single address",
                        net.trunc(),
                        net.addr()
                    ),
                );
                continue;
            }
            if let Some(k) = dest.cidrs[..j].iter().position(|n| n == net) {
                p.push(field, format!("{net} is listed twice (also cidrs[{k}])"));
                continue;
            }
            let owners = cidr_owners.entry(*net).or_default();
            if let Some(message) = shared_ports(net, dest, owners, destinations) {
                p.push(field, message);
            }
            owners.push(i);
        }

        if dest.ports.is_empty() {
            p.push(
                format!("{at}.ports"),
                "must list at least one port, e.g. [443]",
            );
        }
        for (j, &port) in dest.ports.iter().enumerate() {
            let field = format!("{at}.ports[{j}]");
            if port == 0 {
                p.push(field, "port 0 is not a destination port");
            } else if let Some(k) = dest.ports[..j].iter().position(|&q| q == port) {
                p.push(field, format!("{port} is listed twice (also ports[{k}])"));
            }
        }
    }
}

/// If an earlier destination in `owners` lists `what` on one of `dest`'s
/// ports, says which.
fn shared_ports(
    what: &dyn std::fmt::Display,
    dest: &Destination,
    owners: &[usize],
    destinations: &[Destination],
) -> Option<String> {
    owners.iter().find_map(|&k| {
        let other = &destinations[k];
        let mut common: Vec<u16> = dest
            .ports
            .iter()
            .copied()
            .filter(|port| *port != 0 && other.ports.contains(port))
            .collect();
        common.sort_unstable();
        common.dedup();
        if common.is_empty() {
            return None;
        }
        let ports = common
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        Some(format!(
            "{what} with port {ports} is already in destinations[{k}] ({:?}); a connection can \
             match only one destination",
            other.name
        ))
    })
}

fn check_workloads(workloads: &[WorkloadConfig], mode: ListenerMode, p: &mut Problems) {
    check_unique_names("workloads", workloads.iter().map(|w| w.name.as_str()), p);
    // Two workloads with one cgroup or netns: a connection from it could not
    // be attributed to either.
    let mut cgroups: BTreeMap<Vec<Component<'_>>, usize> = BTreeMap::new();
    let mut netnses: BTreeMap<Vec<Component<'_>>, usize> = BTreeMap::new();

    for (i, workload) in workloads.iter().enumerate() {
        let at = format!("workloads[{i}]");
        if !is_valid_name(&workload.name, 64, |c| matches!(c, '_' | '.' | '-')) {
            p.push(format!("{at}.name"), name_message(&workload.name));
        }

        match &workload.netns {
            None if mode == ListenerMode::InPod => p.push(
                format!("{at}.netns"),
                "required when listener.mode is in-pod (the listener opens inside the pod's \
                 network namespace)",
            ),
            None if workload.cgroup.is_none() => p.push(
                &at,
                format!(
                    "workload {:?} needs a cgroup, a netns, or both",
                    workload.name
                ),
            ),
            None => {}
            Some(netns) if !netns.is_absolute() => p.push(
                format!("{at}.netns"),
                format!(
                    "{netns:?} must be an absolute path, e.g. /var/run/netns/NAME or \
                     /proc/PID/ns/net"
                ),
            ),
            Some(netns) => {
                if let Some(k) = netnses.insert(netns.components().collect(), i) {
                    p.push(
                        format!("{at}.netns"),
                        format!("is also the netns of workloads[{k}]"),
                    );
                }
            }
        }

        if let Some(cgroup) = &workload.cgroup {
            if let Some(message) = cgroup_path_problem(cgroup) {
                p.push(format!("{at}.cgroup"), message);
            } else if let Some(k) = cgroups.insert(cgroup_key(cgroup), i) {
                p.push(
                    format!("{at}.cgroup"),
                    format!("is also the cgroup of workloads[{k}]"),
                );
            }
        }

        if workload.labels.keys().any(|k| k.trim().is_empty()) {
            p.push(format!("{at}.labels"), "label names must not be empty");
        }
    }
}

fn check_unique_names<'a>(list: &str, names: impl Iterator<Item = &'a str>, p: &mut Problems) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.enumerate() {
        if let Some(k) = seen.insert(name, i) {
            p.push(
                format!("{list}[{i}].name"),
                format!("{name:?} is also the name of {list}[{k}]; names must be unique"),
            );
        }
    }
}

/// `^[a-z0-9][a-z0-9<extra>]{0,max-1}$` without a regex engine.
fn is_valid_name(name: &str, max: usize, extra: impl Fn(char) -> bool) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= max
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra(c))
}

fn name_message(name: &str) -> String {
    format!(
        "{name:?} is not a valid name: use 1 to 64 lower-case letters, digits, '_', '.' and \
         '-', starting with a letter or digit"
    )
}

/// Why `path` cannot name the cgroup to intercept, if it cannot.
fn cgroup_path_problem(path: &Path) -> Option<String> {
    if path.as_os_str().is_empty() {
        return Some("must not be empty; name a cgroup such as trigate".to_owned());
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Some(format!("{path:?} must not contain '..'"));
    }
    let key = cgroup_key(path);
    let is_root = key
        .iter()
        .all(|c| matches!(c, Component::RootDir | Component::CurDir))
        || (path.is_absolute() && CGROUP2_MOUNT_ROOTS.iter().any(|r| Path::new(r) == path));
    if is_root {
        return Some(format!(
            "{path:?} is the root cgroup, which holds every process on the node; name a child \
             cgroup such as trigate"
        ));
    }
    None
}

/// Components that identify a cgroup path: `./a/b/` and `a/b` are the same.
fn cgroup_key(path: &Path) -> Vec<Component<'_>> {
    let key: Vec<_> = path
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect();
    if key.is_empty() {
        vec![Component::CurDir]
    } else {
        key
    }
}

/// Why `raw` is not a host name as `hosts` lists take them, with the fix when
/// one is obvious (`https://api.openai.com` → `api.openai.com`).
pub(super) fn host_problem(raw: &str) -> Option<String> {
    if raw.parse::<IpAddr>().is_ok() {
        return Some(format!(
            "{raw:?} is an IP address, not a host name; put it in cidrs"
        ));
    }
    if is_dns_name(raw) {
        return None;
    }
    if raw.starts_with("*.") {
        return Some(format!(
            "{raw:?}: wildcards are not supported; list each host name"
        ));
    }
    let guess = host_guess(raw);
    if guess.parse::<IpAddr>().is_ok() {
        return Some(format!(
            "{raw:?} is not a host name; {guess} is an IP address: put it in cidrs"
        ));
    }
    if is_dns_name(&guess) {
        if guess == raw.to_ascii_lowercase() {
            return Some(format!("{raw:?} must be written in lower case: {guess}"));
        }
        return Some(format!("{raw:?} is not a host name; write {guess}"));
    }
    Some(format!(
        "{raw:?} is not a host name: use dot-separated labels of 1 to 63 lower-case letters, \
         digits and '-', at most 253 characters in all"
    ))
}

/// The host name inside a URL-ish string: drop scheme, user info, path,
/// port and trailing dot, and lower-case what is left.
fn host_guess(raw: &str) -> String {
    let mut s = raw.trim();
    if let Some((_, rest)) = s.split_once("://") {
        s = rest;
    }
    if let Some(end) = s.find(['/', '?', '#']) {
        s = &s[..end];
    }
    if let Some((_, rest)) = s.rsplit_once('@') {
        s = rest;
    }
    if let Some(inner) = s.strip_prefix('[') {
        // [2001:db8::1]:443
        s = inner.split_once(']').map_or(inner, |(addr, _)| addr);
    } else if let Some((host, port)) = s.rsplit_once(':') {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            s = host;
        }
    }
    s.trim_end_matches('.').to_ascii_lowercase()
}

/// A lower-case DNS name: dot-separated labels of `[a-z0-9_-]`, 1 to 63
/// characters, not starting or ending with '-'; at most 253 in all; no
/// trailing dot; a last label that is not all digits (that would be an
/// address).
fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    });
    let last_not_numeric = name
        .rsplit('.')
        .next()
        .is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && last_not_numeric
}

/// Problems of one workload on its own (admin enrollment), with paths
/// relative to the workload (`netns`, not `workloads[0].netns`).
pub(super) fn workload_problems(workload: &WorkloadConfig, mode: ListenerMode) -> Vec<Problem> {
    let mut p = Problems(Vec::new());
    check_workloads(std::slice::from_ref(workload), mode, &mut p);
    p.0.into_iter()
        .map(|mut problem| {
            problem.field = match problem.field.strip_prefix("workloads[0]") {
                Some(rest) => rest.trim_start_matches('.').to_string(),
                None => problem.field,
            };
            if problem.field.is_empty() {
                problem.field = "workload".into();
            }
            problem
        })
        .collect()
}

/// What `mcp` names elsewhere in the config.
fn check_mcp(config: &Config, p: &mut Problems) {
    if let Some(o) = &config.mcp.oauth {
        match config.auth.jwt.iter().find(|j| j.name == o.jwt) {
            None => p.push(
                "mcp.oauth.jwt",
                format!("{:?} is not one of auth.jwt", o.jwt),
            ),
            Some(j) if !j.audiences.contains(&o.resource) => p.push(
                "mcp.oauth.jwt",
                format!(
                    "auth.jwt {:?} does not accept the audience {:?}: add the resource to its audiences, \
                     so tokens for other services are refused here",
                    o.jwt, o.resource
                ),
            ),
            Some(_) => {}
        }
    }
    for (i, u) in config.mcp.upstreams.iter().enumerate() {
        let gate = config
            .destinations
            .iter()
            .find(|d| d.name == u.destination)
            .map(|d| d.gate);
        if gate != Some(super::GateKind::Mcp) {
            p.push(
                format!("mcp.upstreams[{i}].destination"),
                format!("{:?} is not a destination with gate mcp", u.destination),
            );
        }
    }
    let mut federated = BTreeMap::new();
    for (i, f) in config.mcp.federations.iter().enumerate() {
        let gate = config
            .destinations
            .iter()
            .find(|d| d.name == f.destination)
            .map(|d| d.gate);
        if gate != Some(super::GateKind::Mcp) {
            p.push(
                format!("mcp.federations[{i}].destination"),
                format!("{:?} is not a destination with gate mcp", f.destination),
            );
        } else if let Some(first) = federated.insert(f.destination.as_str(), i) {
            p.push(
                format!("mcp.federations[{i}].destination"),
                format!(
                    "{:?} is already the destination of mcp.federations[{first}]",
                    f.destination
                ),
            );
        }
    }
}

fn check_llm(config: &Config, p: &mut Problems) {
    use super::ProviderKind;
    let llm = &config.llm;
    check_unique_names(
        "llm.providers",
        llm.providers.iter().map(|x| x.name.as_str()),
        p,
    );
    for (i, prov) in llm.providers.iter().enumerate() {
        let at = format!("llm.providers[{i}]");
        match (&prov.url, prov.kind.default_url()) {
            (None, None) => p.push(
                format!("{at}.url"),
                format!("required for kind {}", prov.kind.as_str()),
            ),
            (Some(url), _) => match url.parse::<hyper::Uri>() {
                Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
                    if u.query().is_some() {
                        p.push(format!("{at}.url"), "a base URL takes no query");
                    }
                }
                _ => p.push(
                    format!("{at}.url"),
                    format!("{url:?} is not an http:// or https:// URL with a host"),
                ),
            },
            (None, Some(_)) => {}
        }
        for (name, source) in
            [("api_key", prov.api_key.as_ref())]
                .into_iter()
                .chain(prov.aws.iter().flat_map(|a| {
                    [
                        ("aws.access_key_id", Some(&a.access_key_id)),
                        ("aws.secret_access_key", Some(&a.secret_access_key)),
                        ("aws.session_token", a.session_token.as_ref()),
                    ]
                }))
        {
            if let Some(s) = source {
                if s.file.is_some() == s.env.is_some() {
                    p.push(format!("{at}.{name}"), "give exactly one of file and env");
                }
            }
        }
        if prov.kind == ProviderKind::Bedrock && prov.aws.is_none() {
            p.push(
                format!("{at}.aws"),
                "required for kind bedrock (region and credentials)",
            );
        }
        if prov.kind == ProviderKind::AzureOpenai && prov.api_version.is_none() {
            p.push(
                format!("{at}.api_version"),
                "required for kind azure-openai",
            );
        }
        if prov.timeout_ms == 0 {
            p.push(format!("{at}.timeout_ms"), "must be more than 0");
        }
        for name in prov.headers.keys() {
            if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push(
                    format!("{at}.headers"),
                    format!("{name:?} is not a header name"),
                );
            }
        }
    }
    for (i, m) in llm.models.iter().enumerate() {
        let at = format!("llm.models[{i}]");
        check_model_pattern(&m.name, &format!("{at}.name"), p);
        if m.targets.is_empty() {
            p.push(format!("{at}.targets"), "needs at least one provider");
        }
        for (j, t) in m.targets.iter().enumerate() {
            if !llm.providers.iter().any(|x| x.name == t.provider) {
                p.push(
                    format!("{at}.targets[{j}].provider"),
                    format!("no provider is named {:?}", t.provider),
                );
            }
            if t.weight == 0 {
                p.push(format!("{at}.targets[{j}].weight"), "must be more than 0");
            }
        }
        if m.max_tokens == Some(0) {
            p.push(format!("{at}.max_tokens"), "must be more than 0");
        }
    }
    for (i, a) in llm.access.iter().enumerate() {
        for (j, m) in a.models.iter().enumerate() {
            check_model_pattern(m, &format!("llm.access[{i}].models[{j}]"), p);
        }
    }
    check_unique_names("llm.limits", llm.limits.iter().map(|l| l.name.as_str()), p);
    for (i, l) in llm.limits.iter().enumerate() {
        let at = format!("llm.limits[{i}]");
        for (field, v) in [
            ("requests_per_minute", l.requests_per_minute),
            ("input_tokens_per_minute", l.input_tokens_per_minute),
            ("output_tokens_per_minute", l.output_tokens_per_minute),
        ] {
            if v == Some(0) {
                p.push(
                    format!("{at}.{field}"),
                    "must be more than 0 (omit it for no limit)",
                );
            }
        }
        for (field, v) in [
            ("cost_per_day_usd", l.cost_per_day_usd),
            ("cost_per_month_usd", l.cost_per_month_usd),
        ] {
            if v.is_some_and(|v| !v.is_finite() || v <= 0.0) {
                p.push(format!("{at}.{field}"), "must be a positive amount");
            }
        }
    }
    for message in crate::gate::llm::price::validate(&llm.prices, "llm.prices") {
        // The price module starts each message with the field's path.
        let (field, rest) = message.split_once(' ').unwrap_or(("llm.prices", &message));
        p.push(field, rest);
    }
    let cache = &llm.cache;
    if cache.scope != "workload"
        && cache
            .scope
            .strip_prefix("label:")
            .is_none_or(|l| l.trim().is_empty())
    {
        p.push(
            "llm.cache.scope",
            format!("{:?}: use workload or label:<name>", cache.scope),
        );
    }
    if cache.enabled && (cache.ttl_secs == 0 || cache.max_bytes == 0 || cache.max_entry_bytes == 0)
    {
        p.push(
            "llm.cache",
            "ttl_secs, max_bytes and max_entry_bytes must be more than 0 when enabled",
        );
    }
    if cache.shared && config.rate_limits.redis_url.is_none() {
        p.push(
            "llm.cache.shared",
            "answers are shared through the Redis of rate_limits.redis_url, which is not set",
        );
    }
    if !(0.0..=1.0).contains(&cache.semantic.threshold) {
        p.push("llm.cache.semantic.threshold", "must be between 0 and 1");
    }
    if cache.semantic.enabled && !cache.enabled {
        p.push(
            "llm.cache.semantic.enabled",
            "the semantic cache keeps its answers in the cache: set llm.cache.enabled too",
        );
    }
    if let Some(e) = &cache.semantic.embeddings {
        embeddings_problems(llm, e, p);
    }
    if cache.max_temperature.is_nan() || cache.max_temperature < 0.0 {
        p.push("llm.cache.max_temperature", "must be 0 or more");
    }
    if llm.max_attempts == 0 {
        p.push("llm.max_attempts", "must be at least 1");
    }
    let llm_destinations = config
        .destinations
        .iter()
        .any(|d| d.gate == super::GateKind::Llm);
    if llm_destinations && llm.models.is_empty() {
        p.push(
            "llm.models",
            "a destination has gate llm but no model is configured: every request would be refused",
        );
    }
}

/// The semantic cache's embeddings provider must exist and speak the
/// OpenAI embeddings API.
fn embeddings_problems(llm: &super::LlmConfig, e: &super::SemanticEmbeddings, p: &mut Problems) {
    use super::ProviderKind;
    const AT: &str = "llm.cache.semantic.embeddings";
    match llm.providers.iter().find(|x| x.name == e.provider) {
        None => p.push(
            format!("{AT}.provider"),
            format!("{:?} is not one of llm.providers", e.provider),
        ),
        Some(prov) => {
            if !matches!(
                prov.kind,
                ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::AzureOpenai
            ) {
                p.push(
                    format!("{AT}.provider"),
                    format!(
                        "{:?} is of kind {}, which has no OpenAI embeddings API: use an openai, \
                         openai-compatible or azure-openai provider",
                        e.provider,
                        prov.kind.as_str()
                    ),
                );
            }
        }
    }
    if e.model.trim().is_empty() {
        p.push(format!("{AT}.model"), "must not be empty");
    }
    if e.dimensions == Some(0) {
        p.push(format!("{AT}.dimensions"), "must be at least 1");
    }
    if e.timeout_ms == 0 {
        p.push(format!("{AT}.timeout_ms"), "must be at least 1");
    }
}

/// Model names: exact, or a prefix with one trailing `*`.
fn check_model_pattern(pattern: &str, field: &str, p: &mut Problems) {
    if pattern.is_empty() {
        p.push(field, "must not be empty");
    } else if pattern.trim_end_matches('*').contains('*') {
        p.push(field, "`*` is only allowed at the end");
    }
}
