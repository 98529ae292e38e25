//! The config file's `[[prices]]`: what a million tokens cost, per model,
//! checked with the line and key of every mistake.
//!
//! ```toml
//! [[prices]]
//! model = "gpt-4o-mini"          # the answering model's name, or its start
//! prompt_per_million = 0.15
//! completion_per_million = 0.60
//! cached_per_million = 0.075     # default: the prompt price
//! currency = "USD"               # default: USD; one currency for all
//! ```

use serde::Deserialize;
use toml::Spanned;

use super::file::line_of;
use crate::spend::{Price, Prices};

/// The currency of a table that names none.
pub const DEFAULT_CURRENCY: &str = "USD";

/// One `[[prices]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrice {
    model: Spanned<String>,
    prompt_per_million: Spanned<f64>,
    completion_per_million: Spanned<f64>,
    cached_per_million: Option<Spanned<f64>>,
    currency: Option<Spanned<String>>,
}

/// A mistake in one price: its line, the key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTableError {
    pub line: usize,
    pub key: &'static str,
    pub why: String,
}

impl std::fmt::Display for PriceTableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: prices.{}: {}", self.line, self.key, self.why)
    }
}

/// Reads the tables into one price table, in the file's order.
pub(super) fn prices(text: &str, raw: Vec<RawPrice>) -> Result<Prices, PriceTableError> {
    let mut table: Vec<Price> = Vec::new();
    let mut currency: Option<String> = None;
    for entry in raw {
        let at = |span: std::ops::Range<usize>| line_of(text, span.start);
        let fail = |key, span, why: String| PriceTableError {
            line: at(span),
            key,
            why,
        };
        let model = entry.model.get_ref().trim();
        if model.is_empty() {
            return Err(fail(
                "model",
                entry.model.span(),
                "a price names its model".into(),
            ));
        }
        if table.iter().any(|p| p.model == model) {
            return Err(fail(
                "model",
                entry.model.span(),
                format!("{model:?} is priced twice"),
            ));
        }
        let this_currency = match &entry.currency {
            Some(c) => {
                let code = c.get_ref().trim().to_uppercase();
                if code.len() != 3 || !code.chars().all(|ch| ch.is_ascii_alphabetic()) {
                    return Err(fail(
                        "currency",
                        c.span(),
                        format!("{:?} is not a three-letter currency code", c.get_ref()),
                    ));
                }
                code
            }
            None => DEFAULT_CURRENCY.to_string(),
        };
        match &currency {
            Some(first) if *first != this_currency => {
                let span = entry
                    .currency
                    .as_ref()
                    .map_or(entry.model.span(), |c| c.span());
                return Err(fail(
                    "currency",
                    span,
                    format!(
                        "{this_currency} here, {first} before: every price is in one currency, \
                         so that spends add up"
                    ),
                ));
            }
            Some(_) => {}
            None => currency = Some(this_currency),
        }
        let check = |key, value: &Spanned<f64>| {
            let figure = *value.get_ref();
            if figure.is_finite() && figure >= 0.0 {
                Ok(figure)
            } else {
                Err(fail(
                    key,
                    value.span(),
                    format!("{figure} is not a price: a number, 0 or more"),
                ))
            }
        };
        let prompt = check("prompt_per_million", &entry.prompt_per_million)?;
        let completion = check("completion_per_million", &entry.completion_per_million)?;
        let cached = match &entry.cached_per_million {
            Some(value) => Some(check("cached_per_million", value)?),
            None => None,
        };
        let price = Price::per_million(model, prompt, completion, cached)
            .map_err(|e| fail("model", entry.model.span(), e.to_string()))?;
        table.push(price);
    }
    Ok(Prices::new(currency.unwrap_or_default(), table))
}

#[cfg(test)]
mod tests {
    use crate::config::file::{FileConfig, FileError};
    use crate::llm::Usage;
    use crate::spend::Cost;

    fn parse(text: &str) -> Result<FileConfig, FileError> {
        FileConfig::parse(text)
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_price_table_is_read_with_its_defaults() {
        let config = parse(
            r#"
[[prices]]
model = "gpt-4o-mini"
prompt_per_million = 0.15
completion_per_million = 0.60
cached_per_million = 0.075
currency = "usd"

[[prices]]
model = "llama3"
prompt_per_million = 0
completion_per_million = 0
"#,
        )
        .unwrap();
        let prices = &config.prices;
        assert_eq!(prices.currency(), "USD");
        let usage = Usage {
            cached_tokens: 400,
            ..Usage::tokens(1000, 200)
        };
        assert_eq!(
            prices.priced(&["gpt-4o-mini-2024-07-18"], usage).cost,
            Cost(240_000)
        );
        assert_eq!(prices.priced(&["llama3:8b"], usage).cost, Cost::ZERO);
        assert!(parse("").unwrap().prices.is_empty(), "no table, no prices");
    }

    #[test]
    fn mistakes_name_their_line_and_key() {
        let one = "[[prices]]\nmodel = \"a\"\nprompt_per_million = 1\ncompletion_per_million = 2\n";
        assert_eq!(
            error(&format!(
                "{one}[[prices]]\nmodel = \"b\"\nprompt_per_million = -1\ncompletion_per_million = 2\n"
            )),
            "7: prices.prompt_per_million: -1 is not a price: a number, 0 or more"
        );
        assert_eq!(
            error(&format!(
                "{one}[[prices]]\nmodel = \"a\"\nprompt_per_million = 1\ncompletion_per_million = 2\n"
            )),
            "6: prices.model: \"a\" is priced twice"
        );
        assert_eq!(
            error(&format!(
                "{one}currency = \"EUR\"\n[[prices]]\nmodel = \"b\"\nprompt_per_million = 1\ncompletion_per_million = 2\ncurrency = \"USD\"\n"
            )),
            "10: prices.currency: USD here, EUR before: every price is in one currency, so that spends add up"
        );
        assert_eq!(
            error(
                "[[prices]]\nmodel = \"a\"\nprompt_per_million = 1\ncompletion_per_million = 2\ncurrency = \"dollars\"\n"
            ),
            "5: prices.currency: \"dollars\" is not a three-letter currency code"
        );
        assert!(
            error("[[prices]]\nmodel = \"a\"\nprompt_per_million = 1\n")
                .contains("completion_per_million"),
            "a missing price is named"
        );
        assert!(
            error("[[prices]]\nmodel = \"a\"\nprompt_per_million = 1\ncompletion_per_million = 1\nprompt = 2\n")
                .contains("unknown field `prompt`"),
            "an unknown key is refused"
        );
    }
}
