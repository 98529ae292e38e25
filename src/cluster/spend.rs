//! Budgets shared by every instance: what the calls of all of them spent,
//! counted in Redis, and the check before each call made there in one
//! step with the counting, so two instances never both take the last of a
//! budget.
//!
//! Before a call, its estimated prompt is *reserved* (`reserve`): counted
//! at once against the session, its feed's hour and everything's hour, if
//! each budget has room and the run still holds its lease (the fence).
//! After it, the estimate is *settled* (`settle`) to what the call spent.
//! A call that never answered keeps its estimate counted. So, as on one
//! instance, a budget is overshot by at most the calls in flight when it
//! was reached, wherever they run.
//!
//! Hours are minutes of the instances' clocks since 1970: instances whose
//! clocks disagree by seconds count a call in neighbouring minutes, which
//! moves it at most a minute in the rolling hour.

use super::{Cluster, ClusterError, Lease, scripts};
use crate::llm::Usage;
use crate::model::SessionId;
use crate::spend::{Budget, Budgets};

/// A call's estimate, counted in Redis until it is settled.
#[derive(Debug, Clone)]
pub struct Reservation {
    session: String,
    feed: Option<String>,
    all: String,
    minute: u64,
    ahead: Usage,
}

/// What `reserve` found.
#[derive(Debug, Clone)]
pub enum Reserved {
    /// Counted: the call may start.
    Room(Reservation),
    /// This budget has no room for the call; nothing was counted.
    Spent(Budget),
    /// A later run of the (session, op) has started: this one must not
    /// call.
    Superseded,
}

/// The minutes since 1970 on this machine's clock.
fn minute_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

fn limit(value: Option<u64>) -> i64 {
    value.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

fn tokens(usage: &Usage) -> i64 {
    i64::try_from(usage.prompt_tokens + usage.completion_tokens).unwrap_or(i64::MAX)
}

fn cost(usage: &Usage) -> i64 {
    i64::try_from(usage.cost.0).unwrap_or(i64::MAX)
}

impl Cluster {
    fn spending_key(&self, what: &str) -> String {
        format!("{}spent:{what}", self.inner.config.prefix)
    }

    fn budget_key(&self, session: &SessionId) -> String {
        format!("{}budget:{}", self.inner.config.prefix, session.as_str())
    }

    /// Counts `ahead` (a call's estimate) for `lease`'s session, of feed
    /// `feed` (its URL), if every one of `budgets` has room.
    /// `lifted_here` says an operator lifted the session's own budget on
    /// this instance (a lift or a raise on any instance counts).
    pub async fn reserve(
        &self,
        lease: &Lease,
        feed: Option<&str>,
        ahead: Usage,
        budgets: &Budgets,
        lifted_here: bool,
    ) -> Result<Reserved, ClusterError> {
        let fence = self.keys(&lease.session, lease.op).fence;
        let reservation = Reservation {
            session: self.spending_key(&format!("session:{}", lease.session.as_str())),
            feed: feed.map(|url| self.spending_key(&format!("feed:{url}"))),
            all: self.spending_key("all"),
            minute: minute_now(),
            ahead,
        };
        let mut connection = self.inner.connection.clone();
        let mut invocation = self.inner.reserve.prepare_invoke();
        invocation
            .key(&fence)
            .key(&reservation.session)
            .key(reservation.feed.as_deref().unwrap_or(&reservation.all))
            .key(&reservation.all)
            .key(self.budget_key(&lease.session))
            .arg(lease.fence)
            .arg(reservation.minute)
            .arg(tokens(&ahead))
            .arg(cost(&ahead))
            .arg(limit(budgets.session_tokens))
            .arg(limit(budgets.session_cost.map(|c| c.0)))
            .arg(limit(budgets.feed_tokens_per_hour))
            .arg(limit(budgets.feed_cost_per_hour.map(|c| c.0)))
            .arg(limit(budgets.tokens_per_hour))
            .arg(limit(budgets.cost_per_hour.map(|c| c.0)))
            .arg(u8::from(lifted_here))
            .arg(u8::from(reservation.feed.is_some()))
            .arg(scripts::KEY_TTL_MS)
            .arg(scripts::HOUR_KEY_TTL_MS);
        let (answer, budget): (i64, String) =
            self.call(invocation.invoke_async(&mut connection)).await?;
        match answer {
            0 => Ok(Reserved::Room(reservation)),
            -1 => Ok(Reserved::Superseded),
            1 => Budget::parse(&budget).map(Reserved::Spent).ok_or_else(|| {
                ClusterError::Protocol(format!("reserve named no budget: {budget:?}"))
            }),
            other => Err(ClusterError::Protocol(format!("reserve answered {other}"))),
        }
    }

    /// Replaces the reservation's estimate by what the call spent.
    pub async fn settle(
        &self,
        reservation: &Reservation,
        spent: Usage,
    ) -> Result<(), ClusterError> {
        let (tokens, cost) = (
            tokens(&spent).saturating_sub(tokens(&reservation.ahead)),
            cost(&spent).saturating_sub(cost(&reservation.ahead)),
        );
        if tokens == 0 && cost == 0 {
            return Ok(());
        }
        let mut connection = self.inner.connection.clone();
        let mut invocation = self.inner.settle.prepare_invoke();
        invocation
            .key(&reservation.session)
            .key(reservation.feed.as_deref().unwrap_or(&reservation.all))
            .key(&reservation.all)
            .arg(reservation.minute)
            .arg(tokens)
            .arg(cost)
            .arg(u8::from(reservation.feed.is_some()));
        let _: i64 = self.call(invocation.invoke_async(&mut connection)).await?;
        Ok(())
    }

    /// Lifts the session's own budget on every instance.
    pub async fn lift_budget(&self, session: &SessionId) -> Result<(), ClusterError> {
        self.change_budget(session, &[("lifted", 1)]).await
    }

    /// Raises the session's own budget by `by` on every instance.
    pub async fn raise_budget(&self, session: &SessionId, by: Usage) -> Result<(), ClusterError> {
        self.change_budget(session, &[("t", tokens(&by)), ("c", cost(&by))])
            .await
    }

    /// Adds to the fields of the session's budget hash, in one step.
    async fn change_budget(
        &self,
        session: &SessionId,
        fields: &[(&str, i64)],
    ) -> Result<(), ClusterError> {
        let key = self.budget_key(session);
        let mut connection = self.inner.connection.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (field, by) in fields {
            pipe.cmd("HINCRBY").arg(&key).arg(*field).arg(*by).ignore();
        }
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(scripts::KEY_TTL_MS)
            .ignore();
        self.call(async { pipe.query_async::<()>(&mut connection).await })
            .await
    }
}
