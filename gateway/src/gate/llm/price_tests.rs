//! Price lookup, cost arithmetic and price validation.
use super::*;

fn usage(input: u64, cached_input: u64, output: u64) -> Usage {
    Usage {
        input,
        output,
        cached_input,
        reasoning: 0,
        estimated: false,
    }
}

fn price(model: &str, input: f64, output: f64, cached: Option<f64>) -> Price {
    Price::new(model, input, output, cached)
}

#[test]
fn every_listed_model_has_a_price() {
    let t = PriceTable::default();
    for model in [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "o3-mini",
        "o4-mini",
        "claude-3-5-sonnet",
        "claude-3-7-sonnet",
        "claude-sonnet-4",
        "claude-3-5-haiku",
        "claude-opus-4",
        "gemini-1.5-pro",
        "gemini-1.5-flash",
        "gemini-2.0-flash",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "text-embedding-3-small",
        "text-embedding-3-large",
    ] {
        let p = t
            .lookup(model)
            .unwrap_or_else(|| panic!("{model} has no price"));
        assert_eq!(p.model, model);
        assert!(p.input_per_mtok > 0.0, "{model}");
        if let Some(c) = p.cached_input_per_mtok {
            assert!(c < p.input_per_mtok, "{model}: cached not cheaper");
        }
    }
    // The built-in list is itself valid.
    assert_eq!(
        validate(&default_prices(), "defaults"),
        Vec::<String>::new()
    );
}

#[test]
fn dated_and_versioned_names_find_their_model() {
    let t = PriceTable::default();
    for (name, model) in [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("gemini-1.5-pro-002", "gemini-1.5-pro"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
        ("GPT-4o", "gpt-4o"),
        (" gpt-4o ", "gpt-4o"),
    ] {
        assert_eq!(
            t.lookup(name).map(|p| p.model.as_str()),
            Some(model),
            "{name}"
        );
    }
}

#[test]
fn provider_wrapped_names_find_their_model() {
    let t = PriceTable::default();
    for (name, model) in [
        ("models/gemini-1.5-pro", "gemini-1.5-pro"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        (
            "anthropic.claude-3-5-sonnet-20241022-v2:0",
            "claude-3-5-sonnet",
        ),
        (
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            "claude-sonnet-4",
        ),
        (
            "eu.anthropic.claude-3-7-sonnet-20250219-v1:0",
            "claude-3-7-sonnet",
        ),
        ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),
        ("claude-opus-4@20250514", "claude-opus-4"),
    ] {
        assert_eq!(
            t.lookup(name).map(|p| p.model.as_str()),
            Some(model),
            "{name}"
        );
    }
}

#[test]
fn names_that_only_look_alike_have_no_price() {
    let t = PriceTable::default();
    for name in [
        "gpt-4",
        "gpt-4o-audio-preview-2024-12-17",
        "gpt-4o-mini-search-preview",
        "gpt-3.5-turbo-0125",
        "claude-opus-4-7",
        "claude-2",
        "gemini-2.0-flash-lite",
        "gemini-pro",
        "o1",
        "text-embedding-3",
        "",
        "-",
        "--2024",
        "ft:gpt-4o-mini:acme::abc123",
        "llama-3.1-70b",
    ] {
        assert_eq!(t.lookup(name), None, "{name}");
        assert_eq!(t.cost_micros(name, &usage(1, 0, 1)), None, "{name}");
    }
}

#[test]
fn configured_prices_win_over_built_in_ones() {
    let t = PriceTable::new(&[
        price("gpt-4o", 1.0, 2.0, None),
        price("claude-*", 9.0, 9.0, None),
        price("ft:gpt-4o-mini:*", 0.3, 1.2, Some(0.15)),
        price("llama-3.1-70b", 0.5, 0.5, None),
    ]);
    assert_eq!(t.lookup("gpt-4o").unwrap().input_per_mtok, 1.0);
    assert_eq!(t.lookup("gpt-4o-2024-08-06").unwrap().input_per_mtok, 1.0);
    // A configured prefix beats a built-in exact name.
    assert_eq!(t.lookup("claude-3-5-haiku").unwrap().model, "claude-*");
    assert_eq!(
        t.lookup("us.anthropic.claude-sonnet-4-20250514-v1:0")
            .unwrap()
            .model,
        "claude-*"
    );
    assert_eq!(
        t.lookup("ft:gpt-4o-mini:acme::abc123").unwrap().model,
        "ft:gpt-4o-mini:*"
    );
    assert_eq!(t.lookup("llama-3.1-70b").unwrap().input_per_mtok, 0.5);
    // Models config does not name keep the built-in price.
    assert_eq!(t.lookup("gpt-4o-mini").unwrap().input_per_mtok, 0.15);
}

#[test]
fn the_longest_prefix_wins_and_exact_beats_prefix() {
    let t = PriceTable::new(&[
        price("gpt-*", 1.0, 1.0, None),
        price("gpt-4o*", 2.0, 2.0, None),
        price("gpt-4o-mini*", 3.0, 3.0, None),
        price("gpt-4o-mini-2024-07-18", 4.0, 4.0, None),
        // Listed second with an equal prefix: the first wins.
        price("gpt-4o*", 5.0, 5.0, None),
    ]);
    let input = |m: &str| t.lookup(m).unwrap().input_per_mtok;
    assert_eq!(input("gpt-3.5-turbo"), 1.0);
    assert_eq!(input("gpt-4o"), 2.0);
    assert_eq!(input("gpt-4o-audio-preview"), 2.0);
    assert_eq!(input("gpt-4o-mini"), 3.0);
    assert_eq!(input("gpt-4o-mini-2024-07-18"), 4.0);
    // A dated name with an undated exact entry in the same table prefers
    // that entry over a prefix.
    let t = PriceTable::new(&[
        price("gpt-*", 1.0, 1.0, None),
        price("gpt-4o", 7.0, 7.0, None),
    ]);
    assert_eq!(t.lookup("gpt-4o-2024-08-06").unwrap().input_per_mtok, 7.0);
}

#[test]
fn costs_in_micro_usd() {
    let t = PriceTable::default();
    // gpt-4o: $2.50 in, $1.25 cached, $10 out per million.
    // 1000 in (400 cached), 500 out: 600×2.5 + 400×1.25 + 500×10.
    assert_eq!(
        t.cost_micros("gpt-4o", &usage(1000, 400, 500)),
        Some(1500 + 500 + 5000)
    );
    // A million of each: the list prices in micro-USD.
    assert_eq!(
        t.cost_micros("claude-opus-4", &usage(1_000_000, 0, 1_000_000)),
        Some(90_000_000)
    );
    // Embeddings: input only.
    assert_eq!(
        t.cost_micros("text-embedding-3-small", &usage(1_000_000, 0, 0)),
        Some(20_000)
    );
    // Nothing used costs nothing.
    assert_eq!(t.cost_micros("gpt-4o", &Usage::default()), Some(0));
}

#[test]
fn cached_input_without_a_cached_rate_is_billed_as_input() {
    let p = price("m", 2.0, 0.0, None);
    assert_eq!(p.cost_micros(&usage(100, 100, 0)), 200);
    assert_eq!(p.cost_micros(&usage(100, 0, 0)), 200);
    let p = price("m", 2.0, 0.0, Some(0.5));
    assert_eq!(p.cost_micros(&usage(100, 100, 0)), 50);
    // More cached than input (a provider's bad count): all input cached.
    assert_eq!(p.cost_micros(&usage(100, 1000, 0)), 50);
}

#[test]
fn reasoning_is_part_of_output_not_extra() {
    let p = price("m", 0.0, 10.0, None);
    let mut u = usage(0, 0, 100);
    let plain = p.cost_micros(&u);
    u.reasoning = 80;
    assert_eq!(p.cost_micros(&u), plain);
    assert_eq!(plain, 1000);
}

#[test]
fn fractions_round_up_and_extremes_saturate() {
    // gpt-4o-mini: 0.15 per token.
    let t = PriceTable::default();
    assert_eq!(t.cost_micros("gpt-4o-mini", &usage(1, 0, 0)), Some(1));
    assert_eq!(t.cost_micros("gpt-4o-mini", &usage(20, 0, 0)), Some(3));
    assert_eq!(
        t.cost_micros("claude-opus-4", &usage(u64::MAX, 0, u64::MAX)),
        Some(u64::MAX)
    );
    // Broken prices count as free rather than NaN or negative.
    for bad in [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY] {
        assert_eq!(
            price("m", bad, bad, Some(bad)).cost_micros(&usage(10, 5, 10)),
            0
        );
    }
}

#[test]
fn validation_names_the_field() {
    let errors = validate(
        &[
            price("gpt-4o", 1.0, 1.0, None),
            price("", 1.0, 1.0, None),
            price("a*b", 1.0, 1.0, None),
            price("GPT-4o", 1.0, 1.0, None),
            price("m", -1.0, f64::NAN, Some(f64::INFINITY)),
            price("*", 1.0, 1.0, None),
            price("x**", 1.0, 1.0, None),
        ],
        "llm.prices",
    );
    let expect = [
        "llm.prices[1].model is \"\"",
        "llm.prices[2].model \"a*b\": only one trailing *",
        "llm.prices[3].model \"GPT-4o\" is priced twice, also in llm.prices[0]",
        "llm.prices[4].input_per_mtok is -1",
        "llm.prices[4].output_per_mtok is NaN",
        "llm.prices[4].cached_input_per_mtok is inf",
        "llm.prices[5].model is \"*\"",
        "llm.prices[6].model \"x**\": only one trailing *",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    assert!(validate(&[price("claude-*", 3.0, 15.0, Some(0.3))], "p").is_empty());
}

#[test]
fn prices_parse_from_config_and_refuse_unknown_fields() {
    let p: Price = serde_json::from_str(
        r#"{"model": "gpt-4o*", "input_per_mtok": 2.5, "output_per_mtok": 10}"#,
    )
    .unwrap();
    assert_eq!(p, price("gpt-4o*", 2.5, 10.0, None));
    let e = serde_json::from_str::<Price>(
        r#"{"model": "m", "input_per_mtok": 1, "output_per_mtok": 1, "cache_per_mtok": 1}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("cache_per_mtok"), "{e}");
    let schema = schemars::schema_for!(Price);
    let json = serde_json::to_string(&schema).unwrap();
    assert!(json.contains("cached_input_per_mtok"));
}

#[test]
fn version_stripping() {
    for (name, want) in [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("gemini-1.5-pro-002", "gemini-1.5-pro"),
        ("gemini-2.5-pro-exp-03-25", "gemini-2.5-pro"),
        ("claude-opus-4-5", "claude-opus-4-5"),
        ("gpt-4", "gpt-4"),
        ("2024", "2024"),
        ("-2024", "-2024"),
        ("x--2024", "x-"),
        ("", ""),
    ] {
        assert_eq!(strip_version(name), want, "{name}");
    }
    assert_eq!(unwrap_provider("gpt-4o"), None);
    assert_eq!(unwrap_provider("a/"), None);
    assert_eq!(unwrap_provider("ft:gpt-4o-mini:acme::abc"), None);
}
