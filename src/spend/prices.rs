//! The price table: what a million tokens cost, per model.
//!
//! A call is priced by the model the server says answered it. Servers
//! answer with a dated name (`gpt-4o-mini-2024-07-18` for `gpt-4o-mini`),
//! so a price's model matches that name exactly or as its longest
//! prefix. Prices are held as trillionths of the currency per token, so
//! that a call's cost is whole arithmetic, rounded once to billionths.

use super::Cost;
use crate::llm::Usage;

/// What one model's tokens cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub model: String,
    /// Per prompt token not read from the server's cache, in trillionths.
    prompt: u64,
    /// Per prompt token the server read from its cache, in trillionths.
    cached: u64,
    /// Per answer token, in trillionths.
    completion: u64,
}

/// Why a price cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PriceError {
    #[error("a price is a number of the currency per million tokens, 0 or more (got {0})")]
    NotAPrice(f64),
}

/// Trillionths of the currency per token, from a price per million.
fn per_token(per_million: f64) -> Result<u64, PriceError> {
    if !(0.0..=1e9).contains(&per_million) {
        return Err(PriceError::NotAPrice(per_million));
    }
    Ok((per_million * 1e6).round() as u64)
}

impl Price {
    /// A price from the figures providers publish: per million prompt
    /// tokens, per million answer tokens and, when the provider charges
    /// less for them, per million cached prompt tokens (the prompt price
    /// otherwise).
    pub fn per_million(
        model: impl Into<String>,
        prompt: f64,
        completion: f64,
        cached: Option<f64>,
    ) -> Result<Self, PriceError> {
        Ok(Self {
            model: model.into(),
            prompt: per_token(prompt)?,
            cached: per_token(cached.unwrap_or(prompt))?,
            completion: per_token(completion)?,
        })
    }

    /// What a call's tokens cost at this price.
    pub fn cost(&self, usage: &Usage) -> Cost {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let trillionths = u128::from(usage.prompt_tokens - cached) * u128::from(self.prompt)
            + u128::from(cached) * u128::from(self.cached)
            + u128::from(usage.completion_tokens) * u128::from(self.completion);
        Cost(u64::try_from((trillionths + 500) / 1000).unwrap_or(u64::MAX))
    }
}

/// Most model names warned of as unpriced: a server names the model that
/// answered, so the names come from outside and are not trusted to be few.
pub const MAX_UNPRICED_WARNED: usize = 32;

/// The models found without a price, each to be warned of once.
#[derive(Debug, Default)]
pub struct Unpriced {
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Unpriced {
    /// True the first time `model` is seen, for the first
    /// [`MAX_UNPRICED_WARNED`] names; false after (the set stops growing).
    pub fn first_time(&self, model: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_UNPRICED_WARNED || seen.contains(model) {
            return false;
        }
        seen.insert(model.to_string())
    }
}

/// The config file's prices, in one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prices {
    currency: String,
    table: Vec<Price>,
}

impl Prices {
    /// A table whose amounts are all in `currency`.
    pub fn new(currency: impl Into<String>, table: Vec<Price>) -> Self {
        Self {
            currency: currency.into(),
            table,
        }
    }

    /// Whether any price is known: without one, spend is not shown.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The currency every amount is in (`USD`); empty without prices.
    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// The price of `model`: the one named so, else the one whose name is
    /// the longest start of it.
    pub fn of(&self, model: &str) -> Option<&Price> {
        self.table
            .iter()
            .filter(|price| model.starts_with(price.model.as_str()))
            .max_by_key(|price| price.model.len())
    }

    /// `usage` with its cost at the price of the first of `models` that
    /// has one (the model that answered, then the one asked for: a local
    /// server may answer with its file's path); unchanged (costing
    /// nothing) when none has.
    pub fn priced(&self, models: &[&str], usage: Usage) -> Usage {
        match models.iter().find_map(|model| self.of(model)) {
            Some(price) => Usage {
                cost: price.cost(&usage),
                ..usage
            },
            None => usage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, cached: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: cached,
            cost: Cost::ZERO,
        }
    }

    fn mini() -> Price {
        Price::per_million("gpt-4o-mini", 0.15, 0.60, Some(0.075)).unwrap()
    }

    #[test]
    fn a_call_costs_its_uncached_cached_and_answer_tokens_each_at_its_price() {
        // 1 000 prompt tokens of which 400 cached, 200 answer tokens:
        // 600 × 0.15 + 400 × 0.075 + 200 × 0.60 = 90 + 30 + 120 millionths.
        assert_eq!(mini().cost(&usage(1000, 400, 200)), Cost(240_000));
        assert_eq!(mini().cost(&usage(1000, 0, 0)), Cost(150_000));
        assert_eq!(
            mini().cost(&usage(10, 50, 0)),
            Cost(750),
            "no more cached tokens than prompt tokens"
        );
        let plain = Price::per_million("m", 2.5, 10.0, None).unwrap();
        assert_eq!(
            plain.cost(&usage(1000, 1000, 0)),
            plain.cost(&usage(1000, 0, 0)),
            "cached tokens cost the prompt price unless priced apart"
        );
        assert_eq!(
            Price::per_million("m", 0.0375, 0.0, None)
                .unwrap()
                .cost(&usage(1, 0, 0)),
            Cost(38),
            "37.5 billionths rounds once, to the nearest"
        );
    }

    #[test]
    fn unpriced_models_are_warned_of_once_and_the_names_kept_are_bounded() {
        let unpriced = Unpriced::default();
        assert!(unpriced.first_time("llama3"));
        assert!(!unpriced.first_time("llama3"), "once");
        let new: usize = (0..1000)
            .filter(|i| unpriced.first_time(&format!("model-{i}")))
            .count();
        assert_eq!(
            new,
            MAX_UNPRICED_WARNED - 1,
            "a server naming a new model each call"
        );
        assert_eq!(unpriced.seen.lock().unwrap().len(), MAX_UNPRICED_WARNED);
    }

    #[test]
    fn a_price_is_a_number_zero_or_more() {
        for bad in [-0.1, f64::NAN, f64::INFINITY, 2e9] {
            assert!(Price::per_million("m", bad, 0.0, None).is_err(), "{bad}");
            assert!(Price::per_million("m", 0.0, bad, None).is_err(), "{bad}");
            assert!(
                Price::per_million("m", 0.0, 0.0, Some(bad)).is_err(),
                "{bad}"
            );
        }
        assert!(Price::per_million("free", 0.0, 0.0, Some(0.0)).is_ok());
    }

    #[test]
    fn a_model_is_priced_by_its_name_or_the_longest_start_of_it() {
        let prices = Prices::new(
            "USD",
            vec![
                Price::per_million("gpt-4o", 2.5, 10.0, None).unwrap(),
                mini(),
            ],
        );
        assert_eq!(
            prices.of("gpt-4o-mini").map(|p| p.model.as_str()),
            Some("gpt-4o-mini")
        );
        assert_eq!(
            prices
                .of("gpt-4o-mini-2024-07-18")
                .map(|p| p.model.as_str()),
            Some("gpt-4o-mini")
        );
        assert_eq!(
            prices.of("gpt-4o-2024-08-06").map(|p| p.model.as_str()),
            Some("gpt-4o")
        );
        assert_eq!(prices.of("llama3"), None);
        let call = usage(1000, 0, 100);
        assert_eq!(prices.priced(&["llama3"], call).cost, Cost::ZERO);
        assert_eq!(prices.priced(&["gpt-4o-mini"], call).cost, Cost(210_000));
        assert_eq!(prices.priced(&["gpt-4o-mini"], call).prompt_tokens, 1000);
        assert_eq!(
            prices
                .priced(&["/models/mini.gguf", "gpt-4o-mini"], call)
                .cost,
            Cost(210_000),
            "the model asked for, when the answering name has no price"
        );
        assert_eq!(
            prices
                .priced(&["gpt-4o-2024-08-06", "gpt-4o-mini"], call)
                .cost,
            Cost(3_500_000),
            "the answering name first"
        );
        assert!(!prices.is_empty() && Prices::default().is_empty());
        assert_eq!(prices.currency(), "USD");
    }
}
