//! The MCP gate: MCP servers over streamable HTTP. Every JSON-RPC call a
//! workload sends is checked against its `mcp.policies` (a refused call is
//! answered here with a JSON-RPC error naming the policy), listings are
//! filtered so refused tools, resources and prompts are invisible, and
//! every call gets an audit line and metrics.
pub mod bridge;
pub mod federate;
pub mod federation;
pub mod guard;
pub mod oauth;
pub mod rpc;
pub mod serve;
pub mod sessions;
