//! The engine in this process, as a [`Source`]: snapshots and details read
//! directly, commands carried out at once.

use std::collections::VecDeque;

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::{Answer, Link, Source, Wake};
use crate::engine::{Engine, SessionDetail, Snapshot};
use crate::events::Event;
use crate::logs::LogBuffer;
use crate::model::SessionId;
use crate::tui::app::Command;

/// Transcripts shown in the detail view.
pub const DETAIL_TRANSCRIPTS: usize = 40;

pub struct Embedded {
    engine: Engine,
    logs: LogBuffer,
    events: broadcast::Receiver<Event>,
    answers: VecDeque<Answer>,
}

impl Embedded {
    pub fn new(engine: Engine, logs: LogBuffer) -> Self {
        let events = engine.subscribe();
        Self {
            engine,
            logs,
            events,
            answers: VecDeque::new(),
        }
    }
}

impl Source for Embedded {
    fn snapshot(&mut self) -> Snapshot {
        self.engine.snapshot()
    }

    fn detail(&mut self, session: &SessionId) -> Option<SessionDetail> {
        self.engine.session_detail(session, DETAIL_TRANSCRIPTS)
    }

    fn logs(&self) -> &LogBuffer {
        &self.logs
    }

    fn link(&self) -> Link {
        Link::Embedded
    }

    fn read_only(&self) -> Option<String> {
        None
    }

    fn carry_out(&mut self, command: Command) {
        let engine = &self.engine;
        let answer = match command {
            Command::Quit => return,
            Command::Replay(_) => Answer::Refused("not a replay".into()),
            Command::Trigger { session, ops } => {
                let answers: Option<Vec<_>> = ops
                    .iter()
                    .map(|op| engine.request(&session, *op).map(|answer| (*op, answer)))
                    .collect();
                match answers {
                    Some(answers) => Answer::Triggered { session, answers },
                    None => Answer::Refused(format!("{session} · no such session any more")),
                }
            }
            Command::LiftBudget { session } => match engine.lift_budget(&session) {
                Ok(()) => Answer::BudgetLifted { session },
                Err(why) => Answer::Refused(budget_refused(&session, why)),
            },
            Command::RaiseBudget { session } => match engine.raise_budget(&session, None) {
                Ok(raised) => Answer::BudgetRaised {
                    session,
                    tokens: raised.prompt_tokens,
                    cost: raised.cost,
                },
                Err(why) => Answer::Refused(budget_refused(&session, why)),
            },
            Command::Cancel { session, ops } => Answer::Cancelled {
                stopped: ops
                    .into_iter()
                    .map(|op| (op, engine.cancel(&session, op)))
                    .collect(),
                session,
            },
            Command::OpenStored { session } => {
                // One session's rows by primary key: a few milliseconds.
                let detail = engine
                    .db()
                    .and_then(|db| db.session(&session).ok().flatten())
                    .map(|stored| {
                        Box::new(crate::engine::detail_from_disk(&stored, DETAIL_TRANSCRIPTS))
                    });
                Answer::Stored { session, detail }
            }
        };
        self.answers.push_back(answer);
    }

    async fn wake(&mut self) -> Wake {
        if let Some(answer) = self.answers.pop_front() {
            return Wake::Answer(answer);
        }
        match self.events.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => {
                // Many events, one wake: they only say something changed.
                while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) =
                    self.events.try_recv()
                {}
                Wake::Changed
            }
            // The engine outlives this source; nothing more will come.
            Err(RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// Why the engine refused an operator's change to a session's budget.
fn budget_refused(session: &SessionId, why: crate::engine::BudgetChange) -> String {
    match why {
        crate::engine::BudgetChange::NoSession => format!("{session} · no such session held"),
        crate::engine::BudgetChange::NoSessionBudget => format!(
            "{session} · no budget is set per session (--budget-session-tokens, --budget-session-cost)"
        ),
    }
}
