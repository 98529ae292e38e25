//! Budgets: limits on what the LLM work may spend, and the ledger that
//! holds them.
//!
//! A budget is per session (a meeting's total, all operations), per feed
//! per rolling hour, or for everything per rolling hour; in tokens or in
//! the prices' currency. It is checked when a run is admitted (a spent
//! budget admits nothing it covers) and again before each call, with the
//! call's prompt counted: a call that would overshoot is not started. So a
//! budget is overshot by at most the calls already in flight when it was
//! reached.
//!
//! Hours roll: spending is kept in one-minute buckets, sixty of them, so
//! what was spent more than an hour ago stops counting a minute at a time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::Cost;
use crate::llm::Usage;

/// The limits, from the config file's `[budgets]` and the flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budgets {
    pub session_tokens: Option<u64>,
    pub session_cost: Option<Cost>,
    pub feed_tokens_per_hour: Option<u64>,
    pub feed_cost_per_hour: Option<Cost>,
    pub tokens_per_hour: Option<u64>,
    pub cost_per_hour: Option<Cost>,
}

impl Budgets {
    pub fn any(&self) -> bool {
        *self != Budgets::default()
    }
}

/// Which budget stopped a run, by its config key.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    SessionTokens,
    SessionCost,
    FeedTokensPerHour,
    FeedCostPerHour,
    TokensPerHour,
    CostPerHour,
}

impl Budget {
    /// A session's own budget (not an hourly one).
    pub fn per_session(self) -> bool {
        matches!(self, Budget::SessionTokens | Budget::SessionCost)
    }

    /// Every budget there is.
    pub const ALL: [Budget; 6] = [
        Budget::SessionTokens,
        Budget::SessionCost,
        Budget::FeedTokensPerHour,
        Budget::FeedCostPerHour,
        Budget::TokensPerHour,
        Budget::CostPerHour,
    ];

    /// The budget a config key names.
    pub fn parse(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.as_str() == key)
    }

    /// Its config key (`session_tokens`).
    pub fn as_str(self) -> &'static str {
        match self {
            Budget::SessionTokens => "session_tokens",
            Budget::SessionCost => "session_cost",
            Budget::FeedTokensPerHour => "feed_tokens_per_hour",
            Budget::FeedCostPerHour => "feed_cost_per_hour",
            Budget::TokensPerHour => "tokens_per_hour",
            Budget::CostPerHour => "cost_per_hour",
        }
    }
}

const MINUTE: Duration = Duration::from_secs(60);
const BUCKETS: usize = 60;

/// Spending over the last hour, a minute at a time.
#[derive(Debug, Clone)]
struct Hour {
    /// `(minute number, spent in it)`; a bucket of an older minute is
    /// stale and counts nothing.
    buckets: [(u64, Usage); BUCKETS],
}

impl Default for Hour {
    fn default() -> Self {
        Self {
            buckets: [(u64::MAX, Usage::default()); BUCKETS],
        }
    }
}

impl Hour {
    fn add(&mut self, minute: u64, usage: Usage) {
        let bucket = &mut self.buckets[(minute % BUCKETS as u64) as usize];
        if bucket.0 != minute {
            *bucket = (minute, Usage::default());
        }
        bucket.1 = bucket.1.plus(usage);
    }

    /// What was spent in this minute and the 59 before it.
    fn total(&self, minute: u64) -> Usage {
        self.buckets
            .iter()
            .filter(|(at, _)| *at != u64::MAX && *at <= minute && minute - *at < BUCKETS as u64)
            .fold(Usage::default(), |sum, (_, usage)| sum.plus(*usage))
    }
}

fn tokens(usage: &Usage) -> u64 {
    usage.prompt_tokens + usage.completion_tokens
}

/// The budgets and what has been spent against the hourly ones.
#[derive(Debug)]
pub struct Ledger {
    budgets: Budgets,
    started: Instant,
    hours: Mutex<Hours>,
}

#[derive(Debug, Default)]
struct Hours {
    all: Hour,
    feeds: HashMap<usize, Hour>,
    /// Hourly budgets found spent by the other instances too (through
    /// Redis), with the minute they were: they admit nothing they cover
    /// until the next minute. `None` is everything's hour.
    elsewhere: HashMap<(Budget, Option<usize>), u64>,
}

impl Ledger {
    pub fn new(budgets: Budgets) -> Self {
        Self {
            budgets,
            started: Instant::now(),
            hours: Mutex::default(),
        }
    }

    pub fn budgets(&self) -> Budgets {
        self.budgets
    }

    fn minute(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.started).as_secs()) / MINUTE.as_secs()
    }

    /// Counts a call's spending (of a session of `feed`) now.
    pub fn record(&self, feed: Option<usize>, usage: Usage) {
        if !self.budgets.any() || usage == Usage::default() {
            return;
        }
        let minute = self.minute(Instant::now());
        let mut hours = self.hours.lock().unwrap_or_else(|e| e.into_inner());
        hours.all.add(minute, usage);
        if let Some(feed) = feed {
            hours.feeds.entry(feed).or_default().add(minute, usage);
        }
    }

    /// A budget shared with other instances was found spent (for a
    /// session of `feed`): an hourly one admits nothing it covers here for
    /// the rest of this minute. A session's own budget is the session's
    /// mark (see the engine's `budget::over`).
    pub fn spent_elsewhere(&self, budget: Budget, feed: Option<usize>) {
        let scope = match budget {
            Budget::FeedTokensPerHour | Budget::FeedCostPerHour => feed,
            Budget::TokensPerHour | Budget::CostPerHour => None,
            Budget::SessionTokens | Budget::SessionCost => return,
        };
        let minute = self.minute(Instant::now());
        let mut hours = self.hours.lock().unwrap_or_else(|e| e.into_inner());
        hours.elsewhere.insert((budget, scope), minute);
    }

    /// The first budget that `ahead` (a call about to start; nothing at
    /// admission) would overshoot, for a session that has spent
    /// `session` and came from `feed`; `None` when every budget has room.
    /// At admission (`ahead` empty), a budget exactly spent stops it too.
    /// `session_budgets` is false for a session whose budget an operator
    /// lifted.
    pub fn over(
        &self,
        session: Usage,
        session_budgets: bool,
        feed: Option<usize>,
        ahead: Usage,
    ) -> Option<Budget> {
        let b = &self.budgets;
        if !b.any() {
            return None;
        }
        let admission = ahead == Usage::default();
        let over_tokens = |spent: &Usage, limit: Option<u64>| {
            limit.is_some_and(|limit| {
                let total = tokens(spent) + tokens(&ahead);
                if admission {
                    total >= limit
                } else {
                    total > limit
                }
            })
        };
        let over_cost = |spent: &Usage, limit: Option<Cost>| {
            limit.is_some_and(|limit| {
                let total = spent.cost.plus(ahead.cost);
                if admission {
                    total >= limit
                } else {
                    total > limit
                }
            })
        };
        if session_budgets {
            if over_tokens(&session, b.session_tokens) {
                return Some(Budget::SessionTokens);
            }
            if over_cost(&session, b.session_cost) {
                return Some(Budget::SessionCost);
            }
        }
        let minute = self.minute(Instant::now());
        let mut hours = self.hours.lock().unwrap_or_else(|e| e.into_inner());
        if admission && !hours.elsewhere.is_empty() {
            hours.elsewhere.retain(|_, at| *at == minute);
            let found = hours
                .elsewhere
                .keys()
                .find(|(_, scope)| scope.is_none() || *scope == feed);
            if let Some((budget, _)) = found {
                return Some(*budget);
            }
        }
        if let Some(feed) = feed {
            let spent = hours
                .feeds
                .get(&feed)
                .map(|h| h.total(minute))
                .unwrap_or_default();
            if over_tokens(&spent, b.feed_tokens_per_hour) {
                return Some(Budget::FeedTokensPerHour);
            }
            if over_cost(&spent, b.feed_cost_per_hour) {
                return Some(Budget::FeedCostPerHour);
            }
        }
        let spent = hours.all.total(minute);
        if over_tokens(&spent, b.tokens_per_hour) {
            return Some(Budget::TokensPerHour);
        }
        if over_cost(&spent, b.cost_per_hour) {
            return Some(Budget::CostPerHour);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(tokens: u64) -> Usage {
        Usage::tokens(tokens, 0)
    }

    #[test]
    fn a_session_budget_refuses_the_call_that_would_overshoot_it() {
        let ledger = Ledger::new(Budgets {
            session_tokens: Some(1000),
            ..Budgets::default()
        });
        assert_eq!(
            ledger.over(used(900), true, None, used(100)),
            None,
            "exactly to the limit"
        );
        assert_eq!(
            ledger.over(used(900), true, None, used(101)),
            Some(Budget::SessionTokens)
        );
        assert_eq!(ledger.over(used(999), true, None, Usage::default()), None);
        assert_eq!(
            ledger.over(used(1000), true, None, Usage::default()),
            Some(Budget::SessionTokens),
            "spent: nothing more is admitted"
        );
        assert_eq!(
            ledger.over(used(5000), false, None, used(1)),
            None,
            "lifted"
        );
        let money = Ledger::new(Budgets {
            session_cost: Some(Cost(1_000)),
            ..Budgets::default()
        });
        let costing = |nanos| Usage {
            cost: Cost(nanos),
            ..Usage::default()
        };
        assert_eq!(
            money.over(costing(600), true, None, costing(401)),
            Some(Budget::SessionCost)
        );
        assert_eq!(money.over(costing(600), true, None, costing(400)), None);
        assert_eq!(
            money.over(costing(1_000), true, None, Usage::default()),
            Some(Budget::SessionCost),
            "spent to the billionth: nothing more is admitted"
        );
        assert_eq!(money.over(costing(999), true, None, Usage::default()), None);
        // Prompt and answer tokens both count.
        assert_eq!(
            ledger.over(Usage::tokens(600, 300), true, None, used(101)),
            Some(Budget::SessionTokens)
        );
        assert_eq!(
            ledger.over(Usage::tokens(600, 300), true, None, used(100)),
            None
        );
        assert_eq!(ledger.budgets().session_tokens, Some(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn hourly_budgets_roll_a_minute_at_a_time() {
        let ledger = Ledger::new(Budgets {
            feed_tokens_per_hour: Some(1000),
            tokens_per_hour: Some(1500),
            ..Budgets::default()
        });
        ledger.record(Some(0), used(600));
        tokio::time::advance(Duration::from_secs(30 * 60)).await;
        ledger.record(Some(0), used(300));
        ledger.record(Some(1), used(500));
        let none = Usage::default();
        assert_eq!(
            ledger.over(none, true, Some(0), used(100)),
            None,
            "900 + 100"
        );
        assert_eq!(
            ledger.over(none, true, Some(0), used(101)),
            Some(Budget::FeedTokensPerHour)
        );
        assert_eq!(
            ledger.over(none, true, Some(1), used(101)),
            Some(Budget::TokensPerHour),
            "1 400 + 101 in all"
        );
        assert_eq!(ledger.over(none, true, Some(1), used(100)), None);
        // The first 600 leave the hour once their minute is an hour old.
        tokio::time::advance(Duration::from_secs(29 * 60 + 59)).await;
        assert_eq!(
            ledger.over(none, true, Some(0), used(101)),
            Some(Budget::FeedTokensPerHour)
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            ledger.over(none, true, Some(0), used(700)),
            None,
            "300 left in feed 0's hour"
        );
        tokio::time::advance(Duration::from_secs(30 * 60)).await;
        assert_eq!(
            ledger.over(none, true, Some(0), used(1000)),
            None,
            "an hour of nothing"
        );
    }

    #[test]
    fn a_budget_is_named_by_its_config_key_and_knows_whose_it_is() {
        let all = Budget::ALL;
        let names: Vec<&str> = all.iter().map(|b| b.as_str()).collect();
        assert_eq!(
            names,
            [
                "session_tokens",
                "session_cost",
                "feed_tokens_per_hour",
                "feed_cost_per_hour",
                "tokens_per_hour",
                "cost_per_hour"
            ]
        );
        for budget in all {
            assert_eq!(
                serde_json::to_value(budget).unwrap(),
                budget.as_str(),
                "the API names it as the config file does"
            );
        }
        for budget in all {
            assert_eq!(Budget::parse(budget.as_str()), Some(budget));
        }
        assert_eq!(Budget::parse("session"), None);
        let own: Vec<bool> = all.iter().map(|b| b.per_session()).collect();
        assert_eq!(own, [true, true, false, false, false, false]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_other_instances_found_spent_admits_nothing_here_for_the_minute() {
        let ledger = Ledger::new(Budgets {
            feed_tokens_per_hour: Some(1000),
            tokens_per_hour: Some(5000),
            ..Budgets::default()
        });
        let none = Usage::default();
        ledger.spent_elsewhere(Budget::FeedTokensPerHour, Some(1));
        assert_eq!(
            ledger.over(none, true, Some(1), none),
            Some(Budget::FeedTokensPerHour)
        );
        assert_eq!(ledger.over(none, true, Some(0), none), None, "another feed");
        assert_eq!(
            ledger.over(none, true, Some(1), used(10)),
            None,
            "before a call the shared count decides"
        );
        ledger.spent_elsewhere(Budget::SessionTokens, Some(0));
        assert_eq!(
            ledger.over(none, true, Some(0), none),
            None,
            "a session's budget is the session's own mark"
        );
        ledger.spent_elsewhere(Budget::TokensPerHour, Some(0));
        assert_eq!(
            ledger.over(none, true, None, none),
            Some(Budget::TokensPerHour),
            "everything's hour covers every session"
        );
        tokio::time::advance(MINUTE).await;
        assert_eq!(ledger.over(none, true, Some(1), none), None, "asked again");
        assert_eq!(ledger.over(none, true, None, none), None);
    }

    #[test]
    fn no_budget_never_refuses() {
        let ledger = Ledger::new(Budgets::default());
        ledger.record(Some(0), used(u64::MAX / 4));
        assert_eq!(
            ledger.over(used(u64::MAX / 4), true, Some(0), used(1)),
            None
        );
    }
}
