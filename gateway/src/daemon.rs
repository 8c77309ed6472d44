//! `trigate run`: start-up in dependency order, the heartbeat, and a clean
//! stop that leaves nothing attached.
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    admin,
    config::{Config, ListenerConfig, ListenerMode},
    gate::{
        api::{client::Clients, ApiPolicy},
        tls::TlsState,
        ProxySettings,
    },
    intercept::{cgroup, destinations::Destinations, preflight, Interceptor},
    listener::{self, ListenerContext, Listeners},
    netns::Netns,
    reload,
    telemetry::{logging::LogHandle, Metrics},
    workload::Registry,
};

/// The shared listener of host mode.
pub struct HostListener {
    pub addresses: Vec<SocketAddr>,
    pub port: u16,
    pub has_v6: bool,
    pub netns_cookie: u64,
}

/// Everything the request path and the admin API share.
pub struct Node {
    /// The config in force: static parts as started, policy parts as last
    /// reloaded.
    pub config: ArcSwap<Config>,
    /// Listener settings are static: they shape the kernel maps.
    pub listener: ListenerConfig,
    /// Where the config came from (`None`: the embedded default), watched
    /// for hot reload.
    pub config_path: Option<PathBuf>,
    pub cgroup2: PathBuf,
    pub metrics: Arc<Metrics>,
    pub interceptor: Arc<Interceptor>,
    pub destinations: ArcSwap<Destinations>,
    pub workloads: Registry,
    pub host_listener: Option<HostListener>,
    pub proxy: ProxySettings,
    pub ready: AtomicBool,
    pub log: LogHandle,
    pub stop: CancellationToken,
    /// Connection tasks, so a stop waits for their access-log lines.
    pub connections: TaskTracker,
    /// Node CA, leaf cache and upstream TLS configs, built on first use.
    pub tls: TlsState,
    /// Routes, authentication and limits of the api gate.
    pub api: ArcSwap<ApiPolicy>,
    /// Pooled upstream HTTP clients of the api gate (HTTP/2 clients).
    pub api_clients: Clients,
    /// Idle upstream connections of the api gate's HTTP/1.1 relay.
    pub api_idle: crate::gate::api::h1::pool::IdlePool,
    /// Providers, models, access and limits of the LLM gate.
    pub llm: ArcSwap<crate::gate::llm::LlmPolicy>,
    /// Guardrail policies (compiled detectors and rules per workload).
    pub guard: ArcSwap<crate::policy::guardrail::Guardrails>,
    /// Which tools, resources and prompts workloads may use (MCP gate).
    pub mcp: ArcSwap<crate::policy::mcp::McpAuthz>,
    /// MCP sessions seen on this node (active count, first tool listings).
    pub mcp_sessions: crate::gate::mcp::sessions::Sessions,
    /// Client sessions of the federated MCP endpoints.
    pub mcp_federation: crate::gate::mcp::federation::FederationSessions,
    /// HTTP+SSE transport endpoints whose streams pass the gateway.
    pub mcp_sse: crate::gate::mcp::sessions::SseEndpoints,
}

/// How long a stop waits for cut connections to finish their bookkeeping.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Detaches the programs on every way out of `run` after they attached,
/// errors included.
struct DetachOnDrop(Arc<Interceptor>);

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        self.0.detach();
        tracing::info!(cgroup = %self.0.cgroup().display(), "eBPF programs detached");
    }
}

pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    log: LogHandle,
) -> anyhow::Result<()> {
    preflight::check_host()?;
    let cgroup2 = cgroup::cgroup2_mount()?;
    let metrics =
        Arc::new(Metrics::new(prometheus::Registry::new()).context("registering metrics")?);
    let stop = CancellationToken::new();

    // Admin first: /healthz answers (and /readyz says 503) while we start.
    let admin_listener = tokio::net::TcpListener::bind(config.admin.address)
        .await
        .with_context(|| {
            format!(
                "admin.address {}: cannot listen (port in use?)",
                config.admin.address
            )
        })?;
    let admin_addr = admin_listener.local_addr()?;
    tracing::info!(address = %admin_addr, "admin listening");
    let public_listener = match config.admin.public_address {
        Some(a) => {
            let l = tokio::net::TcpListener::bind(a).await.with_context(|| {
                format!("admin.public_address {a}: cannot listen (port in use?)")
            })?;
            tracing::info!(address = %l.local_addr()?, "public admin listening (read-only)");
            Some(l)
        }
        None => None,
    };

    let interceptor = Arc::new(Interceptor::start(&config, &cgroup2)?);
    let _detach = DetachOnDrop(Arc::clone(&interceptor));
    tracing::info!(
        cgroup = %interceptor.cgroup().display(),
        pin_dir = %interceptor.pin_dir().display(),
        fail_mode = config.intercept.fail_mode.as_str(),
        "eBPF programs attached"
    );
    spawn_heartbeat(&interceptor, &metrics, &config, stop.clone());

    let destinations = Arc::new(Destinations::install(
        &config,
        Arc::clone(&interceptor),
        Arc::clone(&metrics),
        None,
        &stop,
    )?);
    destinations.spawn_resolvers(&config.dns);

    let host_listeners = match config.listener.mode {
        ListenerMode::Host => Some(
            Listeners::open(&Netns::Host, config.listener.port, config.listener.ipv6)
                .await
                .with_context(|| {
                    format!(
                        "listener.port {}: cannot listen on loopback",
                        config.listener.port
                    )
                })?,
        ),
        ListenerMode::InPod => None,
    };
    let host_listener = host_listeners.as_ref().map(|l| HostListener {
        addresses: l.addresses(),
        port: l.port,
        has_v6: l.v6.is_some(),
        netns_cookie: l.netns_cookie,
    });

    let api = Arc::new(ApiPolicy::build(&config, &stop, None).map_err(|e| anyhow::anyhow!(e))?);
    let llm = crate::gate::llm::LlmPolicy::build(&config.llm, &config.rate_limits)
        .map_err(|e| anyhow::anyhow!(e))?;
    let guard = crate::policy::guardrail::Guardrails::build(&config.guardrails)
        .map_err(|e| anyhow::anyhow!("guardrails: {e}"))?;
    let mcp = crate::policy::mcp::McpAuthz::build(&config.mcp).map_err(|e| anyhow::anyhow!(e))?;
    if !config.llm.models.is_empty() {
        // The tokenizer takes ~0.4 s to build; not on the first request.
        tokio::task::spawn_blocking(crate::gate::llm::usage::warm_up);
    }
    let metrics_sessions = metrics.mcp.sessions.clone();
    let node = Arc::new(Node {
        proxy: ProxySettings {
            mark: config.intercept.mark,
            connect_timeout: Duration::from_millis(config.proxy.connect_timeout_ms),
            idle_timeout: Duration::from_secs(config.proxy.idle_timeout_secs),
        },
        listener: config.listener.clone(),
        config: ArcSwap::from_pointee(config),
        config_path,
        cgroup2,
        metrics,
        interceptor,
        destinations: ArcSwap::new(destinations),
        workloads: Registry::default(),
        host_listener,
        ready: AtomicBool::new(false),
        log,
        stop: stop.clone(),
        connections: TaskTracker::new(),
        tls: TlsState::default(),
        api: ArcSwap::new(api),
        api_clients: Clients::default(),
        api_idle: Default::default(),
        llm: ArcSwap::from_pointee(llm),
        guard: ArcSwap::from_pointee(guard),
        mcp: ArcSwap::from_pointee(mcp),
        mcp_sessions: crate::gate::mcp::sessions::Sessions::new(metrics_sessions),
        mcp_federation: Default::default(),
        mcp_sse: Default::default(),
    });
    // The CA must exist before any pod connects: workloads are given its
    // certificate to trust, so it cannot wait for the first connection.
    if needs_node_ca(&node.config.load()) {
        node.tls
            .leaves(&node.config.load().tls)
            .map_err(|e| anyhow::anyhow!("tls: {e}"))?;
    }
    if let Some(listeners) = host_listeners {
        tracing::info!(
            addresses = %listeners.addresses().iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            "host listener open"
        );
        let ctx = ListenerContext {
            netns_cookie: listeners.netns_cookie,
            netns: Netns::Host,
            owner: None,
        };
        listener::spawn_accept_loops(&node, listeners, ctx, stop.clone());
    }
    for source in crate::discovery::sources(&node.config.load(), &node.cgroup2)? {
        let name = source.name();
        source.start(&node).await?;
        tracing::debug!(source = name, "enrollment source started");
    }

    admin::spawn(admin_listener, public_listener, Arc::clone(&node));
    if let Some(path) = node.config_path.clone() {
        tokio::spawn(reload::watch(Arc::clone(&node), path));
    }
    node.ready.store(true, Ordering::SeqCst);
    tracing::info!(
        admin = %admin_addr,
        metrics = %format!("http://{admin_addr}/metrics"),
        workloads = node.workloads.len(),
        destinations = node.destinations.load().all().len(),
        "ready"
    );
    // For the person at the terminal; stdout stays machine-readable.
    eprintln!(
        "trigate ready: admin http://{admin_addr}/ (metrics http://{admin_addr}/metrics), \
         intercepting cgroup {}; Ctrl-C stops and detaches",
        node.interceptor.cgroup().display()
    );

    wait_for_signal().await?;
    tracing::info!("stopping");
    node.ready.store(false, Ordering::SeqCst);
    // Open connections are cut (outcome `shutdown`): L4 streams can last
    // for hours, so waiting for them would make a stop unbounded.
    stop.cancel();
    node.connections.close();
    let open = node.connections.len();
    if tokio::time::timeout(SHUTDOWN_GRACE, node.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(open, "connections still closing after the grace period");
    }
    Ok(())
}

/// Whether a destination terminates TLS (and so needs the node CA).
pub fn needs_node_ca(config: &Config) -> bool {
    config.destinations.iter().any(|d| {
        d.tls
            .as_ref()
            .is_some_and(|t| t.mode == crate::config::TlsMode::Terminate)
    })
}

fn spawn_heartbeat(
    interceptor: &Arc<Interceptor>,
    metrics: &Arc<Metrics>,
    config: &Config,
    stop: CancellationToken,
) {
    let interceptor = Arc::clone(interceptor);
    let metrics = Arc::clone(metrics);
    let every = Duration::from_millis(config.intercept.heartbeat_interval_ms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match interceptor.beat() {
                Ok(()) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or(0);
                    metrics.heartbeat.set(now);
                }
                Err(e) => tracing::error!(error = %e, "writing the heartbeat failed"),
            }
        }
    });
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "signal received"),
    }
    Ok(())
}
