//! What the dashboard says to the operator on its message line: the
//! answers to triggers and cancels, notes from keys, and, when one cause
//! fails an operation in many sessions, that cause once.

use std::time::SystemTime;

use super::app::App;
use crate::engine::{Snapshot, TriggerAnswer};
use crate::events::RunId;
use crate::format;
use crate::model::{Operation, SessionId};

/// How a message reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Info,
    Good,
    Warn,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub text: String,
    pub tone: Tone,
    /// When it was said (the snapshot's time then): after [`MESSAGE_FOR`]
    /// it gives way to the alert.
    pub at: tokio::time::Instant,
}

/// How long a message stays before a standing alert shows again.
pub const MESSAGE_FOR: std::time::Duration = std::time::Duration::from_secs(10);

impl App {
    pub fn say(&mut self, text: &str, tone: Tone) {
        self.message = Some(Message {
            text: text.to_string(),
            tone,
            // On the snapshots' clock, which views read time from.
            at: self.snapshot.taken_at,
        });
    }

    /// Reports the engine's answers to a trigger.
    pub fn show_triggered(
        &mut self,
        session: &SessionId,
        answers: &[(Operation, TriggerAnswer)],
        now: SystemTime,
    ) {
        let parts: Vec<String> = answers
            .iter()
            .map(|(op, answer)| match answer {
                TriggerAnswer::Started { run_id } => {
                    format!("{} started (run {run_id})", op.label())
                }
                TriggerAnswer::Pending {
                    running_run_id,
                    since,
                } => format!(
                    "{} pending: run {running_run_id} busy {}",
                    op.label(),
                    format::duration(now.duration_since(*since).unwrap_or_default())
                ),
                TriggerAnswer::Skipped {
                    running_run_id,
                    since,
                } => format!(
                    "{} skipped: run {running_run_id} busy {}",
                    op.label(),
                    format::duration(now.duration_since(*since).unwrap_or_default())
                ),
                TriggerAnswer::OverBudget { budget } => format!(
                    "{} not started: the {} budget is spent",
                    op.label(),
                    budget.as_str()
                ),
            })
            .collect();
        let tone = if answers
            .iter()
            .all(|(_, a)| matches!(a, TriggerAnswer::Started { .. }))
        {
            Tone::Good
        } else {
            Tone::Warn
        };
        self.say(&format!("{session} · {}", parts.join(" · ")), tone);
    }

    /// Reports what a cancel stopped.
    pub fn show_cancelled(&mut self, session: &SessionId, stopped: &[(Operation, Option<RunId>)]) {
        let parts: Vec<String> = stopped
            .iter()
            .filter_map(|(op, run)| run.map(|id| format!("{} cancelled (run {id})", op.label())))
            .collect();
        if parts.is_empty() {
            self.say(
                &format!("{session} · nothing running to cancel"),
                Tone::Info,
            );
        } else {
            self.say(&format!("{session} · {}", parts.join(" · ")), Tone::Good);
        }
    }
}

pub fn shared_failure(snapshot: &Snapshot) -> Option<String> {
    // Count the failing operations by their error first: few distinct
    // messages, so the cause is read once each, not once a row a frame.
    let mut errors: std::collections::HashMap<(Operation, &str), usize> = Default::default();
    for row in &snapshot.sessions {
        for op in snapshot.operations.iter().map(|d| d.op) {
            let stats = row.op(op);
            if let Some(error) = stats.last_error.as_deref()
                && stats.consecutive_failures > 0
                && stats
                    .in_flight
                    .as_ref()
                    .is_none_or(|run| run.retry.is_some())
            {
                *errors.entry((op, error)).or_default() += 1;
            }
        }
    }
    let mut causes: Vec<(Operation, String, usize)> = Vec::new();
    for ((op, error), count) in errors {
        let cause = crate::engine::short_cause(error);
        match causes.iter_mut().find(|(o, c, _)| *o == op && *c == cause) {
            Some((_, _, n)) => *n += count,
            None => causes.push((op, cause, count)),
        }
    }
    let others = causes
        .iter()
        .filter(|(_, _, n)| *n >= 2)
        .count()
        .saturating_sub(1);
    let (op, cause, n) = causes
        .into_iter()
        .filter(|(_, _, n)| *n >= 2)
        .max_by_key(|(_, _, n)| *n)?;
    let more = match others {
        0 => String::new(),
        1 => " (and 1 other shared cause)".to_string(),
        n => format!(" (and {n} other shared causes)"),
    };
    Some(format!(
        "{} failing in {n} sessions: {cause}{more} · ↵ on one shows the whole error",
        op.label()
    ))
}
