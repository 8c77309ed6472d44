//! What an LLM call costs: per-model prices per million tokens, from config
//! over a built-in table, and the cost of a [`Usage`] in micro-USD.
//!
//! A price per million tokens in USD is, conveniently, the price of one
//! token in micro-USD, so costs are `tokens × price` with no scaling.
use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::usage::Usage;

/// The price of one model, in USD per million tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// The model name as sent to the provider (`gpt-4o`), or a prefix
    /// ending in `*` (`ft:gpt-4o-mini:*`). Dated versions
    /// (`gpt-4o-2024-08-06`, `claude-sonnet-4-20250514`) find the price of
    /// their undated name. Case does not matter.
    pub model: String,
    /// Prompt tokens not read from the provider's cache.
    pub input_per_mtok: f64,
    /// Completion tokens, reasoning included.
    pub output_per_mtok: f64,
    /// Prompt tokens read from the provider's cache; absent: billed as
    /// `input_per_mtok`.
    #[serde(default)]
    pub cached_input_per_mtok: Option<f64>,
}

impl Price {
    fn new(model: &str, input: f64, output: f64, cached: Option<f64>) -> Price {
        Price {
            model: model.to_string(),
            input_per_mtok: input,
            output_per_mtok: output,
            cached_input_per_mtok: cached,
        }
    }

    /// The cost of `usage` at this price, in micro-USD, rounded up: a call
    /// costs at least what it is billed. Cached input over `input` counts
    /// as all of `input`.
    pub fn cost_micros(&self, usage: &Usage) -> u64 {
        let cached = usage.cached_input.min(usage.input);
        let uncached = usage.input - cached;
        let cached_rate = self.cached_input_per_mtok.unwrap_or(self.input_per_mtok);
        let micros = uncached as f64 * rate(self.input_per_mtok)
            + cached as f64 * rate(cached_rate)
            + usage.output as f64 * rate(self.output_per_mtok);
        // `as` saturates at u64::MAX.
        micros.ceil() as u64
    }
}

/// A price that is negative, NaN or infinite counts as 0 (validation
/// refuses them; an unvalidated one must not make costs NaN or negative).
fn rate(per_mtok: f64) -> f64 {
    if per_mtok.is_finite() && per_mtok > 0.0 {
        per_mtok
    } else {
        0.0
    }
}

/// Contradictions in configured prices, as messages naming the field
/// (`field` is where the list sits, e.g. `llm.prices`).
pub fn validate(prices: &[Price], field: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let mut seen = HashMap::new();
    for (i, p) in prices.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let name = p.model.trim();
        if name.is_empty() || name == "*" {
            errors.push(format!(
                "{at}.model is {:?}: name a model, or a prefix ending in *",
                p.model
            ));
        }
        if name.trim_end_matches('*').contains('*') || name.ends_with("**") {
            errors.push(format!(
                "{at}.model {:?}: only one trailing * is supported (a prefix)",
                p.model
            ));
        }
        if let Some(first) = seen.insert(name.to_ascii_lowercase(), i) {
            errors.push(format!(
                "{at}.model {:?} is priced twice, also in {field}[{first}]",
                p.model
            ));
        }
        for (what, value) in [
            ("input_per_mtok", Some(p.input_per_mtok)),
            ("output_per_mtok", Some(p.output_per_mtok)),
            ("cached_input_per_mtok", p.cached_input_per_mtok),
        ] {
            if let Some(v) = value.filter(|v| !v.is_finite() || *v < 0.0) {
                errors.push(format!(
                    "{at}.{what} is {v}: a price is a finite number ≥ 0 (USD per million tokens)"
                ));
            }
        }
    }
    errors
}

/// The built-in prices: public list prices per million tokens, standard
/// (not batch or priority) tier, as of 2025-11. Tiered prices keep the
/// lower tier (Gemini Pro and Claude Sonnet 4.x charge more above 128K or
/// 200K prompt tokens), and prompt-cache writes are billed as ordinary
/// input (Anthropic charges 1.25×). Gemini's cached rates are left out:
/// billed at the input rate, an overestimate. Config prices override these.
pub fn default_prices() -> Vec<Price> {
    const DEFAULTS: &[(&str, f64, f64, Option<f64>)] = &[
        // OpenAI
        ("gpt-4o", 2.50, 10.00, Some(1.25)),
        ("gpt-4o-mini", 0.15, 0.60, Some(0.075)),
        ("gpt-4.1", 2.00, 8.00, Some(0.50)),
        ("gpt-4.1-mini", 0.40, 1.60, Some(0.10)),
        ("gpt-4.1-nano", 0.10, 0.40, Some(0.025)),
        ("gpt-5", 1.25, 10.00, Some(0.125)),
        ("gpt-5-mini", 0.25, 2.00, Some(0.025)),
        ("gpt-5-nano", 0.05, 0.40, Some(0.005)),
        ("o3", 2.00, 8.00, Some(0.50)),
        ("o3-mini", 1.10, 4.40, Some(0.55)),
        ("o4-mini", 1.10, 4.40, Some(0.275)),
        ("text-embedding-3-small", 0.02, 0.0, None),
        ("text-embedding-3-large", 0.13, 0.0, None),
        ("text-embedding-ada-002", 0.10, 0.0, None),
        // Anthropic (cached: cache reads)
        ("claude-3-5-sonnet", 3.00, 15.00, Some(0.30)),
        ("claude-3-7-sonnet", 3.00, 15.00, Some(0.30)),
        ("claude-sonnet-4", 3.00, 15.00, Some(0.30)),
        ("claude-sonnet-4-5", 3.00, 15.00, Some(0.30)),
        ("claude-3-5-haiku", 0.80, 4.00, Some(0.08)),
        ("claude-haiku-4-5", 1.00, 5.00, Some(0.10)),
        ("claude-opus-4", 15.00, 75.00, Some(1.50)),
        ("claude-opus-4-1", 15.00, 75.00, Some(1.50)),
        ("claude-opus-4-5", 5.00, 25.00, Some(0.50)),
        // Google
        ("gemini-1.5-pro", 1.25, 5.00, None),
        ("gemini-1.5-flash", 0.075, 0.30, None),
        ("gemini-2.0-flash", 0.10, 0.40, None),
        ("gemini-2.5-pro", 1.25, 10.00, None),
        ("gemini-2.5-flash", 0.30, 2.50, None),
    ];
    DEFAULTS
        .iter()
        .map(|&(model, input, output, cached)| Price::new(model, input, output, cached))
        .collect()
}

/// Prices by model: configured ones first, then the built-in ones.
#[derive(Debug, Clone)]
pub struct PriceTable {
    configured: Prices,
    defaults: Prices,
}

impl Default for PriceTable {
    /// The built-in prices only.
    fn default() -> Self {
        PriceTable::new(&[])
    }
}

impl PriceTable {
    /// `configured` (validated with [`validate`]) over [`default_prices`].
    /// A configured entry wins over every built-in one, even a more exact
    /// one: `claude-*` in config prices every Claude model.
    pub fn new(configured: &[Price]) -> PriceTable {
        PriceTable {
            configured: Prices::new(configured),
            defaults: Prices::new(&default_prices()),
        }
    }

    /// The price of `model`. In the configured prices, then the built-in
    /// ones: the exact name; the name without a version suffix
    /// (`-2024-08-06`, `-20241022`, `-001`, `-latest`, `-preview-05-20`);
    /// the longest matching prefix (`*` entries); and the same again for
    /// the name without a provider's wrapping (`models/…`, `openai/…`,
    /// Bedrock's `us.anthropic.…-v2:0`, Vertex's `…@20241022`).
    pub fn lookup(&self, model: &str) -> Option<&Price> {
        // Per LLM call: names are usually lower case already and found
        // as they are, so neither copy nor unwrapping is made unless needed.
        let model = model.trim();
        let model: std::borrow::Cow<str> = if model.bytes().any(|b| b.is_ascii_uppercase()) {
            model.to_ascii_lowercase().into()
        } else {
            model.into()
        };
        // Configured before built-in; in each, the name before its
        // unwrapped form (made once, when first needed).
        let mut bare: Option<Option<String>> = None;
        for prices in [&self.configured, &self.defaults] {
            if prices.is_empty() {
                continue;
            }
            if let Some(p) = prices.find(&model) {
                return Some(p);
            }
            let bare = bare.get_or_insert_with(|| unwrap_provider(&model));
            if let Some(p) = bare.as_deref().and_then(|b| prices.find(b)) {
                return Some(p);
            }
        }
        None
    }

    /// What `usage` of `model` costs in micro-USD (cached input at the
    /// cached rate where known, else the input rate); `None` when the model
    /// has no price.
    pub fn cost_micros(&self, model: &str, usage: &Usage) -> Option<u64> {
        self.lookup(model).map(|p| p.cost_micros(usage))
    }
}

#[derive(Debug, Clone, Default)]
struct Prices {
    /// By lower-case name.
    exact: HashMap<String, Price>,
    /// Lower-case prefix and price, longest prefix first.
    prefixes: Vec<(String, Price)>,
}

impl Prices {
    fn new(prices: &[Price]) -> Prices {
        let mut table = Prices::default();
        for p in prices {
            let name = p.model.trim().to_ascii_lowercase();
            match name.strip_suffix('*') {
                Some(prefix) => table.prefixes.push((prefix.to_string(), p.clone())),
                None => {
                    // The first of duplicates wins, as validation reports.
                    table.exact.entry(name).or_insert_with(|| p.clone());
                }
            }
        }
        // Stable: among equal prefixes the first listed wins.
        table
            .prefixes
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        table
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    fn find(&self, model: &str) -> Option<&Price> {
        if let Some(p) = self.exact.get(model) {
            return Some(p);
        }
        let undated = strip_version(model);
        if undated != model {
            if let Some(p) = self.exact.get(undated) {
                return Some(p);
            }
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| model.starts_with(prefix.as_str()))
            .map(|(_, p)| p)
    }
}

/// `model` without trailing version segments: all-digit segments of two or
/// more digits (dates, `-001`), `latest`, `preview`, `exp`. A single digit
/// is part of the name (`claude-opus-4-5` is not `claude-opus-4`).
fn strip_version(model: &str) -> &str {
    let mut name = model;
    while let Some((head, last)) = name.rsplit_once('-') {
        let version = (last.len() >= 2 && last.bytes().all(|b| b.is_ascii_digit()))
            || matches!(last, "latest" | "preview" | "exp");
        if !version || head.is_empty() {
            break;
        }
        name = head;
    }
    name
}

/// The model name inside a provider's wrapping, if there is any:
/// `models/gemini-1.5-pro` and `openai/gpt-4o` (a path or router prefix),
/// `claude-3-5-sonnet-v2@20241022` (Vertex), and
/// `us.anthropic.claude-3-5-sonnet-20241022-v2:0` (Bedrock: region,
/// vendor, `-vN:M`).
fn unwrap_provider(model: &str) -> Option<String> {
    let mut name = model.rsplit('/').next().unwrap_or(model);
    if let Some((head, _)) = name.split_once('@') {
        name = head;
    }
    // Bedrock: `[region.]anthropic.model-vN:M` (the only vendor with
    // built-in prices there).
    if let Some(i) = name.find("anthropic.") {
        name = &name[i + "anthropic.".len()..];
    }
    if let Some((head, last)) = name.rsplit_once(':') {
        // Not OpenAI's `ft:model:org::id`: only a numeric revision.
        if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
            name = head;
        }
    }
    if let Some((head, last)) = name.rsplit_once('-') {
        if last.len() >= 2 && last.starts_with('v') && last[1..].bytes().all(|b| b.is_ascii_digit())
        {
            name = head;
        }
    }
    (name != model && !name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
#[path = "price_tests.rs"]
mod tests;
