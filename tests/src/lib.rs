//! End-to-end harness for trigate: a small node built inside this machine.
//!
//! A test builds a [`Node`] (one attach cgroup and one daemon instance name),
//! adds [`Pod`]s (network namespace + veth + child cgroup) or [`HostPod`]s
//! (child cgroup only), starts [`Upstream`] fake servers on addresses those
//! pods created (or [`FakeLlm`] providers for the LLM gate), writes a [`Config`] and starts the real daemon
//! ([`Daemon`]). Every object removes what it created when dropped, also
//! when the test panics. See `tests/README.md`.
//!
//! Network rule: test traffic goes only to 127.0.0.0/8 or to addresses on
//! veths the test created; nothing here ever adds a default route.

pub mod bench;
mod bpftool;
mod client;
mod config;
mod daemon;
mod dns;
mod env;
mod fake_llm;
mod http;
mod jwt;
mod kube_api;
mod mcp;
mod metrics;
mod names;
mod node;
mod process;
mod redis;
mod upstream;
mod yaml;

pub use bpftool::{
    attached_programs, enrolled_cgroup_ids, trigate_program_counts, AttachedProgram,
};
pub use client::{ClientMode, ClientRequest, ClientResult};
pub use config::{Config, Destination, FailMode, Workload};
pub use daemon::{is_access_log, log_field, log_str, log_u64, Daemon, LogLine, READY_TIMEOUT};
pub use dns::FakeDns;
pub use env::{env, sdk_python, Env};
pub use fake_llm::{FakeKind, FakeLlm, RecordedRequest, SigV4Check, StreamRecord};
pub use http::{http_request, HttpResponse};
pub use jwt::{b64url, JwtSigner};
pub use kube_api::{
    ApiMode, CgroupDriver, FakeKubeApi, KubeHostNetPod, KubePod, Kubepods, PodSpec,
};
pub use mcp::{mcp_client, mcp_client_over, McpServer, McpTransport};
pub use metrics::{Metrics, Sample};
pub use node::CMD_TIMEOUT;
pub use node::{HostPod, Node, Pod, Runner};
pub use process::{run_with_timeout, trigate, CmdOutput, TempFile};
pub use redis::RedisServer;
pub use upstream::{free_port, TestCa, Upstream};

use std::time::{Duration, Instant};

/// Polls `f` every 20 ms until it returns `Some`, or fails after `timeout`
/// naming `what`. An `Err` from `f` is fatal and returned at once: return
/// `Ok(None)` for "not yet".
pub fn poll_until<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
