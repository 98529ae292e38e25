//! What LLM work costs in money: the price table, the cost of a call,
//! and the budgets it may spend ([`Ledger`]).
//!
//! Tokens are counted where calls end (`llm::Usage`); a call's cost is its
//! tokens priced by the config file's `[[prices]]` ([`Prices`]) when it
//! ends, and it travels with its tokens from then on: into the run's
//! record, its (session, operation) counters, the database, the API and
//! `/metrics`. Costs are whole billionths of the prices' currency, so sums
//! are exact whatever the order they are added in.

mod budgets;
mod prices;

pub use budgets::{Budget, Budgets, Ledger};
pub use prices::{MAX_UNPRICED_WARNED, Price, PriceError, Prices, Unpriced};

/// An amount of the prices' currency, in billionths of it.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Cost(pub u64);

impl Cost {
    pub const ZERO: Cost = Cost(0);

    pub fn plus(self, other: Cost) -> Cost {
        Cost(self.0.saturating_add(other.0))
    }

    /// An amount given in units of the currency; nothing for a negative or
    /// not-a-number one.
    pub fn from_units(units: f64) -> Cost {
        if units.is_finite() && units > 0.0 {
            Cost((units * 1e9).round() as u64)
        } else {
            Cost::ZERO
        }
    }

    /// The amount in units of the currency (for JSON and metrics).
    pub fn units(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// The amount for a person: four significant places below one unit
    /// (`0.01235`), cents from one unit up (`1234.50`).
    pub fn shown(self) -> String {
        let units = self.units();
        if self.0 == 0 {
            return "0".into();
        }
        if units >= 1.0 {
            let cents = (self.0 + 5_000_000) / 10_000_000;
            return format!("{}.{:02}", cents / 100, cents % 100);
        }
        let places = (4 - units.log10().floor() as i32 - 1).clamp(2, 9) as usize;
        format!("{units:.places$}")
    }
}

/// A [`Cost`] written as a number of the currency (`0.00024`), as the API
/// and its clients read and write it.
pub mod units {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Cost;

    pub fn serialize<S: Serializer>(cost: &Cost, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(cost.units())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Cost, D::Error> {
        let units = f64::deserialize(d)?;
        Ok(Cost::from_units(units))
    }
}

impl Cost {
    /// The amount in at most eight characters, for a table cell: four
    /// places below ten (`0.0123`), two below a thousand (`123.45`), whole
    /// units above; `<0.0001` for less than shows.
    pub fn short(self) -> String {
        let units = self.units();
        match units {
            _ if self.0 == 0 => "0".into(),
            u if u < 0.0001 => "<0.0001".into(),
            u if u < 10.0 => format!("{u:.4}"),
            u if u < 1000.0 => format!("{u:.2}"),
            u => format!("{u:.0}"),
        }
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(costs: I) -> Cost {
        costs.fold(Cost::ZERO, Cost::plus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_show_four_places_below_one_and_cents_above() {
        assert_eq!(Cost(0).shown(), "0");
        assert_eq!(Cost(150).shown(), "0.000000150");
        assert_eq!(Cost(12_345_678).shown(), "0.01235");
        assert_eq!(Cost(123_456_789).shown(), "0.1235");
        assert_eq!(Cost(1_234_567_890).shown(), "1.23");
        assert_eq!(Cost(1_234_995_000_000).shown(), "1235.00");
        assert_eq!(Cost(u64::MAX).plus(Cost(1)), Cost(u64::MAX));
        assert_eq!([Cost(1), Cost(2)].into_iter().sum::<Cost>(), Cost(3));
        let short: Vec<String> = [
            0,
            50_000,
            12_345_678,
            9_999_000_000,
            123_456_000_000,
            98_765_432_000_000,
        ]
        .map(|n| Cost(n).short())
        .to_vec();
        assert_eq!(
            short,
            ["0", "<0.0001", "0.0123", "9.9990", "123.46", "98765"]
        );
    }
}
