//! The policy chain's steps, shared by every HTTP gate: who is calling
//! (identity, authn), may they (authz), how often (limits).
pub mod auth;
pub mod limits;
