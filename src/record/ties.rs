//! Near-ties: lines that met a run in the recording, though the run's
//! call had already answered when they came.
//!
//! A live run ends a few milliseconds after its call answers (the answer
//! is read, kept, and told). A line that came within those milliseconds
//! met the run still in flight: it was skipped, and a follow-up ran later.
//! A replay's engine ends the run the moment the recorded answer comes, so
//! the same line would find it ended and start a run of its own. The
//! recording says which requests met which run (each skip names the run it
//! met, and counts its requests), so the replay can follow it: the run's
//! last call answers no earlier than the last request that met the run.
//!
//! The arrivals that make requests of an operation are the session's
//! final lines when the operation runs on new lines, and its ends when it
//! runs at the end; the requests that met a run are the first ones after
//! the run was queued, as many as its skips count.

use std::collections::HashMap;

use super::{Record, Settings};
use crate::model::{Operation, SessionId};

/// For each (session, operation), by the index of its call in the
/// recording (in the order the calls ended), the time, in microseconds of
/// the recording, before which the call must not answer.
pub type Holds = HashMap<(SessionId, Operation), HashMap<usize, u64>>;

/// One run as the recording tells it.
struct Run {
    session: SessionId,
    op: Operation,
    /// Where the session's arrivals stood when the run was queued.
    arrivals_before: usize,
    /// Requests that met it in flight.
    met: u64,
    /// Its latest call so far: index among the pair's calls, and its end.
    last_call: Option<(usize, u64)>,
}

/// The holds of a recording's calls (see the module's documentation).
pub fn holds<'a>(records: impl IntoIterator<Item = &'a Record>, settings: &Settings) -> Holds {
    let on_lines = |op: &Operation| settings.automatic_ops.contains(op);
    let at_end = |op: &Operation| settings.end_ops.contains(op);
    // Per session, the times of its final lines and of its ends, in order.
    let mut lines: HashMap<SessionId, Vec<u64>> = HashMap::new();
    let mut ends: HashMap<SessionId, Vec<u64>> = HashMap::new();
    let mut runs: HashMap<u64, Run> = HashMap::new();
    let mut running: HashMap<(SessionId, Operation), u64> = HashMap::new();
    let mut calls: HashMap<(SessionId, Operation), usize> = HashMap::new();
    let mut holds = Holds::new();
    for record in records {
        match record {
            Record::Transcript { at, line, .. } if line.is_final => {
                lines.entry(line.session.clone()).or_default().push(*at);
            }
            Record::End { at, session, .. } => {
                ends.entry(session.clone()).or_default().push(*at);
            }
            Record::Queued {
                session, op, run, ..
            } => {
                let arrivals = if on_lines(op) { &lines } else { &ends };
                runs.insert(
                    *run,
                    Run {
                        session: session.clone(),
                        op: *op,
                        arrivals_before: arrivals.get(session).map_or(0, Vec::len),
                        met: 0,
                        last_call: None,
                    },
                );
            }
            Record::Started {
                session, op, run, ..
            } => {
                running.insert((session.clone(), *op), *run);
            }
            Record::Skipped {
                running: met, n, ..
            } => {
                if let Some(run) = runs.get_mut(met) {
                    run.met += n;
                }
            }
            Record::Llm {
                session, op, end, ..
            } => {
                let key = (session.clone(), *op);
                let index = calls.entry(key.clone()).or_default();
                if let Some(run) = running.get(&key).and_then(|id| runs.get_mut(id)) {
                    run.last_call = Some((*index, *end));
                }
                *index += 1;
            }
            Record::Finished { run, .. } => {
                let Some(run) = runs.remove(run) else {
                    continue;
                };
                let Some((call, end)) = run.last_call else {
                    continue;
                };
                // A run of an operation that runs both on lines and at the
                // end is met by either; only lines are followed then.
                if run.met == 0 || !(on_lines(&run.op) || at_end(&run.op)) {
                    continue;
                }
                let arrivals = if on_lines(&run.op) { &lines } else { &ends };
                let last_met = usize::try_from(run.met)
                    .ok()
                    .and_then(|met| run.arrivals_before.checked_add(met - 1))
                    .and_then(|i| arrivals.get(&run.session)?.get(i).copied());
                // A line in the same microsecond as the answer met the run
                // too: on a replay's tick the two would race.
                if let Some(last_met) = last_met
                    && last_met >= end
                {
                    holds
                        .entry((run.session, run.op))
                        .or_default()
                        .insert(call, last_met);
                }
            }
            _ => {}
        }
    }
    holds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Usage;
    use crate::record::{Answer, Line, RunOutcome};

    fn session() -> SessionId {
        SessionId::parse("s1").unwrap()
    }

    fn line(at: u64) -> Record {
        Record::Transcript {
            at,
            feed: None,
            line: Line {
                session: session(),
                seq: None,
                text: "hello".into(),
                speaker: None,
                start: None,
                end: None,
                is_final: true,
                kind: None,
            },
        }
    }

    fn queued(at: u64, run: u64) -> Record {
        Record::Queued {
            at,
            session: session(),
            op: Operation::SUMMARY,
            run,
            follow_up: false,
        }
    }

    fn started(at: u64, run: u64) -> Record {
        Record::Started {
            at,
            session: session(),
            op: Operation::SUMMARY,
            run,
            covered: 0,
        }
    }

    fn skipped(at: u64, running: u64, n: u64) -> Record {
        Record::Skipped {
            at,
            session: session(),
            op: Operation::SUMMARY,
            running,
            pending: false,
            n,
        }
    }

    fn call(at: u64, end: u64) -> Record {
        Record::Llm {
            at,
            session: session(),
            op: Operation::SUMMARY,
            first: None,
            end,
            answer: Answer::Unanswered,
            usage: Usage::default(),
        }
    }

    fn finished(at: u64, run: u64) -> Record {
        Record::Finished {
            at,
            session: session(),
            op: Operation::SUMMARY,
            run,
            outcome: RunOutcome::Ok,
            ms: 0,
            error: None,
        }
    }

    fn partial(at: u64) -> Record {
        let Record::Transcript { feed, mut line, .. } = line(at) else {
            unreachable!()
        };
        line.is_final = false;
        Record::Transcript { at, feed, line }
    }

    fn end(at: u64) -> Record {
        Record::End {
            at,
            feed: None,
            session: session(),
        }
    }

    fn settings() -> Settings {
        let mut settings = Settings::of(&crate::engine::EngineConfig::default());
        settings.automatic_ops = vec![Operation::SUMMARY];
        settings.end_ops = vec![];
        settings
    }

    #[test]
    fn a_line_after_the_answer_that_met_the_run_holds_the_answer_back() {
        let records = [
            line(0),
            queued(0, 1),
            started(0, 1),
            line(500),
            skipped(500, 1, 1),
            call(0, 1_000),
            // Came 2 ms after the answer, and still met the run.
            line(3_000),
            skipped(3_000, 1, 1),
            finished(4_000, 1),
            line(9_000),
            queued(9_000, 2),
            started(9_000, 2),
            call(9_000, 10_000),
            finished(10_500, 2),
        ];
        let holds = holds(records.iter(), &settings());
        let pair = (session(), Operation::SUMMARY);
        assert_eq!(holds[&pair], HashMap::from([(0, 3_000)]));
    }

    #[test]
    fn a_line_as_the_answer_came_holds_it_and_partial_lines_make_no_request() {
        let records = [
            line(0),
            queued(0, 1),
            started(0, 1),
            // Partial lines ask for no run: the one request that met the
            // run is the final line, in the answer's microsecond.
            partial(200),
            partial(900),
            call(0, 1_000),
            line(1_000),
            skipped(1_000, 1, 1),
            finished(1_100, 1),
        ];
        let holds = holds(records.iter(), &settings());
        let pair = (session(), Operation::SUMMARY);
        assert_eq!(holds[&pair], HashMap::from([(0, 1_000)]));
    }

    #[test]
    fn a_run_at_the_end_is_met_by_the_session_ending_again() {
        let mut settings = settings();
        settings.automatic_ops = vec![];
        settings.end_ops = vec![Operation::SUMMARY];
        let records = [
            line(0),
            end(100),
            queued(100, 1),
            started(100, 1),
            // More was said, and the session ended again, after the answer
            // and before the run ended: that end met the run.
            line(1_100),
            call(100, 1_000),
            end(1_200),
            skipped(1_200, 1, 1),
            finished(1_300, 1),
        ];
        let holds = holds(records.iter(), &settings);
        let pair = (session(), Operation::SUMMARY);
        assert_eq!(holds[&pair], HashMap::from([(0, 1_200)]));
    }

    #[test]
    fn lines_that_met_the_run_before_its_answer_hold_nothing() {
        let records = [
            line(0),
            queued(0, 1),
            started(0, 1),
            line(500),
            line(600),
            // Two requests in one record, as the writer merges them.
            skipped(500, 1, 2),
            call(0, 1_000),
            finished(1_200, 1),
            // After the run ended: a run of its own, not a meeting.
            line(1_500),
            queued(1_500, 2),
            started(1_500, 2),
            call(1_500, 2_000),
            finished(2_100, 2),
        ];
        assert!(holds(records.iter(), &settings()).is_empty());
    }

    #[test]
    fn the_requests_that_met_a_run_are_counted_from_when_it_was_queued() {
        let records = [
            line(0),
            queued(0, 1),
            started(0, 1),
            call(0, 1_000),
            finished(1_000, 1),
            line(2_000),
            queued(2_000, 2),
            started(2_000, 2),
            line(2_500),
            call(2_000, 3_000),
            line(3_400),
            // Both lines after run 2 was queued met it, the later after
            // its answer.
            skipped(2_500, 2, 2),
            finished(3_500, 2),
        ];
        let holds = holds(records.iter(), &settings());
        let pair = (session(), Operation::SUMMARY);
        assert_eq!(holds[&pair], HashMap::from([(1, 3_400)]));
    }
}
