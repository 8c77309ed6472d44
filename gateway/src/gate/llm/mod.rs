//! The LLM gate. Applications keep the SDK they already use (OpenAI or
//! Anthropic) and the gateway picks the provider and model that serve each
//! request, so a team can move between providers without touching code.
//!
//! The request path, in files:
//! [`front`] (which API, which protocol answers) → the api gate's route
//! policy (authn, authz, route limits) → [`serve`] (model policy, limits,
//! provider attempts with failover) → [`provider`] (URL, credentials, body
//! in the provider's protocol, via [`translate`]) → the answer back through
//! [`translate`] or, streamed, [`streaming`] inside the body `answer`
//! builds → `account` ([`usage`], [`price`], the limiter, GenAI metrics,
//! the access log).
//!
//! Translation is pure functions over JSON values: no I/O and no clock, so
//! every mapping is pinned by golden files and a bad request becomes a 400
//! that names the field instead of a surprise from the provider.
mod account;
pub(crate) mod answer;
pub mod cache;
mod embeddings;
pub mod front;
pub mod guard;
#[cfg(test)]
mod guard_tests;
pub mod price;
pub mod provider;
pub mod request;
pub mod routing;
pub mod semantic;
pub mod serve;
mod skim;
#[cfg(test)]
mod skim_tests;
pub mod stream;
pub mod streaming;
pub mod translate;
pub mod usage;

use std::{collections::HashMap, time::Instant};

use crate::config::{LlmConfig, LlmLimit, RateLimit, RateLimitBackend};

use self::{price::PriceTable, provider::ProviderRt};

pub use serve::handle;

/// The LLM gate's policy, rebuilt when `llm` changes and read per request.
pub struct LlmPolicy {
    pub cfg: LlmConfig,
    pub providers: Vec<ProviderRt>,
    by_name: HashMap<String, usize>,
    pub prices: PriceTable,
    pub limits: Vec<LimitRt>,
    /// Kept answers; rebuilt (emptied) when `llm` changes, since models,
    /// providers and prices may have.
    pub cache: Option<cache::AnswerCache>,
    /// The clock of provider cooldowns.
    epoch: Instant,
}

/// A configured limit with the token buckets it needs, made once.
pub struct LimitRt {
    pub cfg: LlmLimit,
    pub requests: Option<RateLimit>,
    pub input_tokens: Option<RateLimit>,
    pub output_tokens: Option<RateLimit>,
}

impl LimitRt {
    fn new(cfg: &LlmLimit) -> LimitRt {
        // Buckets are named `<limit>/<what>`, so the limiter keeps each
        // apart; per minute, bursting to the whole minute's allowance.
        let bucket = |what: &str, per_minute: Option<u64>| {
            per_minute.map(|n| RateLimit {
                name: format!("{}/{what}", cfg.name),
                key: "workload".into(),
                requests: n,
                per_secs: 60,
                burst: None,
            })
        };
        LimitRt {
            requests: bucket("requests", cfg.requests_per_minute),
            input_tokens: bucket("input_tokens", cfg.input_tokens_per_minute),
            output_tokens: bucket("output_tokens", cfg.output_tokens_per_minute),
            cfg: cfg.clone(),
        }
    }
}

impl LlmPolicy {
    /// `redis`: where a shared answer cache lives (the limits' Redis).
    pub fn build(cfg: &LlmConfig, redis: &RateLimitBackend) -> Result<LlmPolicy, String> {
        let providers = cfg
            .providers
            .iter()
            .map(ProviderRt::new)
            .collect::<Result<Vec<_>, _>>()?;
        let by_name = providers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name().to_owned(), i))
            .collect();
        Ok(LlmPolicy {
            providers,
            by_name,
            prices: PriceTable::new(&cfg.prices),
            limits: cfg.limits.iter().map(LimitRt::new).collect(),
            cache: cache::AnswerCache::new(&cfg.cache, redis)?,
            cfg: cfg.clone(),
            epoch: Instant::now(),
        })
    }

    pub fn provider_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Milliseconds on the cooldown clock.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
