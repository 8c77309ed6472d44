//! The policy chain's steps, shared by every HTTP gate: who is calling
//! (identity, authn), may they (authz), how often (limits), and what the
//! content holds (guard: PII, secrets, prompt injection).
pub mod auth;
pub mod embed;
pub mod guard;
pub mod guardrail;
pub mod judge;
pub mod limits;
pub mod mcp;
