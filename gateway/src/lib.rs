//! trigate: the node-local gateway. The module tree follows a connection:
//! intercept → listener → gate → upstream, with telemetry and admin beside.
pub mod config;
