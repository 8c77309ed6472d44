//! The LLM gate. Applications keep the SDK they already use (OpenAI or
//! Anthropic) and the gateway picks the provider and model that serve each
//! request, so a team can move between providers without touching code.
//!
//! That needs each wire format rewritten into the other. [`translate`] does
//! it as pure functions over JSON values: no I/O and no clock, so every
//! mapping is pinned by golden files and a bad request becomes a 400 that
//! names the field instead of a surprise from the provider.
pub mod front;
pub mod routing;
pub mod stream;
pub mod translate;
