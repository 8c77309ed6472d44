//! trigate: the node-local gateway. The module tree follows a connection:
//! `intercept` (eBPF, original destination) → `listener` (accept,
//! attribution) → `gate` (serve it) → `upstream` (connect out), with
//! `telemetry` and `admin` beside, `workload` for identity, `discovery` for where workloads come from
//! (config, Kubernetes) and `daemon` for
//! start-up and shutdown.
pub mod admin;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod discovery;
pub mod gate;
pub mod intercept;
pub mod json_text;
pub mod listener;
pub mod netns;
pub mod policy;
pub mod reload;
pub mod telemetry;
pub mod tls;
pub mod top;
pub mod upstream;
pub mod workload;

/// An error with its sources, which is where libraries (aya, hyper) keep
/// the part that says what went wrong (an errno, a refused connection).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
