//! The two LLM backends of recordings: one writes every call down as it
//! passes to the real backend, the other answers a replay's calls with
//! what was written.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Answer, Record, Tap};
use crate::llm::{
    Backend, BackendInfo, BoxFuture, LlmError, LlmErrorKind, LlmRequest, LlmResponse, Progress,
    Usage,
};
use crate::model::{Operation, SessionId};

/// Passes every call to `inner` and, while something records, records
/// its answer (or error) and when it was sent and ended.
pub struct RecordingBackend {
    inner: Arc<dyn Backend>,
    tap: Arc<Tap>,
}

impl RecordingBackend {
    pub fn new(inner: Arc<dyn Backend>, tap: Arc<Tap>) -> Self {
        Self { inner, tap }
    }
}

fn answer_of(result: &Result<LlmResponse, LlmError>) -> (Answer, Usage) {
    match result {
        Ok(response) => (
            Answer::Text {
                text: response.text.clone(),
                model: response.model.clone(),
                truncated: response.truncated,
            },
            response.usage,
        ),
        Err(error) => {
            let (kind, status) = match &error.kind {
                LlmErrorKind::Unreachable => ("unreachable", None),
                LlmErrorKind::Dropped => ("dropped", None),
                LlmErrorKind::TimedOut => ("timed_out", None),
                LlmErrorKind::Refused { status } => ("refused", Some(*status)),
                LlmErrorKind::ContextExceeded { .. } => ("context_exceeded", None),
                LlmErrorKind::BadAnswer { .. } => ("bad_answer", None),
                LlmErrorKind::Other => ("other", None),
            };
            let answer = match &error.kind {
                LlmErrorKind::BadAnswer { answer } => Some(answer.clone()),
                _ => None,
            };
            (
                Answer::Error {
                    kind: kind.into(),
                    status,
                    message: error.message.clone(),
                    answer,
                },
                error.usage,
            )
        }
    }
}

impl Backend for RecordingBackend {
    fn info(&self) -> BackendInfo {
        self.inner.info()
    }

    fn generate<'a>(
        &'a self,
        request: LlmRequest,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        if !self.tap.active() {
            return self.inner.generate(request, progress);
        }
        Box::pin(async move {
            let mut call = InFlight {
                tap: &self.tap,
                sent: self.tap.now(),
                first: None,
                session: Some(request.session.clone()),
                op: request.op,
            };
            let answering = self.inner.generate(request, progress);
            tokio::pin!(answering);
            // The first answer token is seen by looking at the call's
            // progress every few milliseconds: its time is that close.
            let mut look = tokio::time::interval(FIRST_TOKEN_EVERY);
            let result = loop {
                tokio::select! {
                    result = &mut answering => break result,
                    _ = look.tick(), if call.first.is_none() => {
                        if progress.tokens() > 0 {
                            call.first = Some(self.tap.now());
                        }
                    }
                }
            };
            if call.first.is_none() && progress.tokens() > 0 {
                call.first = Some(self.tap.now());
            }
            let (answer, usage) = answer_of(&result);
            call.ended(answer, usage);
            result
        })
    }

    fn prompt_room(&self, op: Operation) -> Option<usize> {
        self.inner.prompt_room(op)
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        self.inner.check()
    }
}

/// How often a recorded call's progress is looked at for its first token.
const FIRST_TOKEN_EVERY: Duration = Duration::from_millis(10);

/// A call on its way: recorded when it ends, or, dropped first (its run
/// was stopped), as never answered.
struct InFlight<'a> {
    tap: &'a Tap,
    sent: u64,
    /// When the first answer token was seen.
    first: Option<u64>,
    /// Taken when the call is recorded.
    session: Option<SessionId>,
    op: Operation,
}

impl InFlight<'_> {
    fn ended(&mut self, answer: Answer, usage: Usage) {
        if let Some(session) = self.session.take() {
            self.tap.record(Record::Llm {
                at: self.sent,
                session,
                op: self.op,
                first: self.first,
                end: self.tap.now(),
                answer,
                usage,
            });
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.ended(Answer::Unanswered, Usage::default());
    }
}

/// How much later than the recorded call a replayed one may be sent and
/// still answer when the recorded one did: a few of the clock's ticks.
const ON_TIME: Duration = Duration::from_millis(5);

/// A recorded call: how long it took and what it answered.
#[derive(Debug, Clone)]
struct Call {
    took: Duration,
    answer: Answer,
    usage: Usage,
    /// When it answered, in microseconds of the recording.
    ended: u64,
    /// When following the recording: the time (microseconds of the
    /// recording) before which it must not answer.
    not_before: Option<u64>,
}

/// Answers each call of a (session, operation) with that pair's next
/// recorded call, after as long as it took. A replay that calls more
/// often than the recording did gets the pair's last answer again (or the
/// operation's latest from any session) after the operation's median
/// call time; those calls are counted as made up.
pub struct ReplayBackend {
    model: String,
    calls: Mutex<Calls>,
    /// The replay's clock at the recording's start, once it follows the
    /// recording's near-ties.
    origin: Option<tokio::time::Instant>,
}

#[derive(Default)]
struct Calls {
    recorded: HashMap<(SessionId, Operation), VecDeque<Call>>,
    last: HashMap<(SessionId, Operation), Call>,
    latest_of_op: HashMap<Operation, Call>,
    median_of_op: HashMap<Operation, Duration>,
    made_up: u64,
}

impl Call {
    /// When it was sent, in microseconds of the recording.
    fn sent(&self) -> u64 {
        self.ended
            .saturating_sub(u64::try_from(self.took.as_micros()).unwrap_or(u64::MAX))
    }
}

impl ReplayBackend {
    /// From a recording's records.
    pub fn new<'a>(records: impl IntoIterator<Item = &'a Record>) -> Self {
        let mut calls = Calls::default();
        let mut took_by_op: HashMap<Operation, Vec<Duration>> = HashMap::new();
        let mut model = String::from("recorded");
        for record in records {
            if let Record::Llm {
                at,
                session,
                op,
                end,
                answer,
                usage,
                ..
            } = record
            {
                if let Answer::Text { model: m, .. } = answer {
                    model.clone_from(m);
                }
                let call = Call {
                    took: Duration::from_micros(end.saturating_sub(*at)),
                    answer: answer.clone(),
                    usage: *usage,
                    ended: *end,
                    not_before: None,
                };
                took_by_op.entry(*op).or_default().push(call.took);
                if matches!(call.answer, Answer::Text { .. }) {
                    calls.latest_of_op.insert(*op, call.clone());
                }
                calls
                    .recorded
                    .entry((session.clone(), *op))
                    .or_default()
                    .push_back(call);
            }
        }
        for (op, mut took) in took_by_op {
            took.sort();
            calls.median_of_op.insert(op, took[took.len() / 2]);
        }
        Self {
            model,
            calls: Mutex::new(calls),
            origin: None,
        }
    }

    /// Follows the recording, on a clock that was at `origin` when the
    /// recording began: no call answers before it did in the recording,
    /// and a run's last call answers after the last line that met the run
    /// (see `ties`). A replay's engine takes none of the live engine's own
    /// milliseconds, so without this its runs would end a little earlier,
    /// more so down a chain of runs, and a line that came that close to a
    /// run's end would meet it differently. Only a replay with the
    /// recorded settings should follow: with others, calls are made at
    /// times of their own.
    pub fn following(mut self, holds: super::ties::Holds, origin: tokio::time::Instant) -> Self {
        let calls = self.calls.get_mut().unwrap_or_else(|e| e.into_inner());
        for (pair, recorded) in calls.recorded.iter_mut() {
            let held = holds.get(pair);
            for (index, call) in recorded.iter_mut().enumerate() {
                let tie = held.and_then(|held| held.get(&index));
                // A millisecond (a tick of the clock) after the line, so
                // the engine has taken it in before the answer comes.
                call.not_before = Some(tie.map_or(call.ended, |at| call.ended.max(at + 1_000)));
            }
        }
        self.origin = Some(origin);
        self
    }

    /// Calls answered with no recorded call of their own.
    pub fn made_up(&self) -> u64 {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).made_up
    }

    fn next(&self, session: &SessionId, op: Operation) -> Call {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let key = (session.clone(), op);
        if let Some(call) = calls.recorded.get_mut(&key).and_then(VecDeque::pop_front) {
            calls.last.insert(key, call.clone());
            return call;
        }
        calls.made_up += 1;
        let took = calls
            .median_of_op
            .get(&op)
            .copied()
            .unwrap_or(Duration::from_secs(1));
        let answer = calls
            .last
            .get(&key)
            .filter(|c| matches!(c.answer, Answer::Text { .. }))
            .or_else(|| calls.latest_of_op.get(&op))
            .map(|c| c.answer.clone())
            .unwrap_or(Answer::Error {
                kind: "other".into(),
                status: None,
                message: "the recording has no answer of this operation".into(),
                answer: None,
            });
        Call {
            took,
            answer,
            usage: Usage::default(),
            ended: 0,
            not_before: None,
        }
    }
}

impl Backend for ReplayBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo::simulated("replay", &self.model)
    }

    fn generate<'a>(
        &'a self,
        request: LlmRequest,
        _progress: &'a Progress,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        let call = self.next(&request.session, request.op);
        Box::pin(async move {
            if call.answer == Answer::Unanswered {
                // Its run was stopped before it answered: so it is here,
                // unless the replay's engine lets it run on (then its
                // deadline ends it).
                return std::future::pending().await;
            }
            let sent = tokio::time::Instant::now();
            match (self.origin, call.not_before) {
                // Sent when the recorded call was, within the clock's
                // ticks: it answers when that one did (or after the line
                // that met its run), not a took later, so ticks rounded up
                // do not add up down a chain of runs.
                (Some(origin), Some(at))
                    if sent <= origin + Duration::from_micros(call.sent()) + ON_TIME =>
                {
                    tokio::time::sleep_until(origin + Duration::from_micros(at)).await;
                }
                (Some(origin), Some(at)) => {
                    tokio::time::sleep(call.took).await;
                    tokio::time::sleep_until(origin + Duration::from_micros(at)).await;
                }
                _ => tokio::time::sleep(call.took).await,
            }
            match call.answer {
                Answer::Unanswered => std::future::pending().await,
                Answer::Text {
                    text,
                    model,
                    truncated,
                } => Ok(LlmResponse {
                    text,
                    model,
                    usage: call.usage,
                    truncated,
                }),
                Answer::Error {
                    kind,
                    status,
                    message,
                    answer,
                } => {
                    let kind = match kind.as_str() {
                        "bad_answer" => LlmErrorKind::BadAnswer {
                            answer: answer.unwrap_or_default(),
                        },
                        "unreachable" => LlmErrorKind::Unreachable,
                        "dropped" => LlmErrorKind::Dropped,
                        "timed_out" => LlmErrorKind::TimedOut,
                        "refused" => LlmErrorKind::Refused {
                            status: status.unwrap_or(500),
                        },
                        "context_exceeded" => LlmErrorKind::ContextExceeded {
                            window: None,
                            requested: None,
                        },
                        _ => LlmErrorKind::Other,
                    };
                    Err(LlmError {
                        kind,
                        message,
                        usage: call.usage,
                        retry_after: None,
                    })
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorded empty answer comes back as one, so the replay's engine
    /// lowers its calls at once as the recorded one did.
    #[tokio::test(start_paused = true)]
    async fn a_recorded_error_comes_back_of_its_kind_with_its_answer() {
        let session = SessionId::parse("s1").unwrap();
        let error = |kind: &str, status, answer: Option<&str>| Record::Llm {
            at: 0,
            session: session.clone(),
            op: Operation::SUMMARY,
            first: None,
            end: 1_000,
            answer: Answer::Error {
                kind: kind.into(),
                status,
                message: "m".into(),
                answer: answer.map(str::to_string),
            },
            usage: Usage::default(),
        };
        let records = [
            error("bad_answer", None, Some("")),
            error("refused", Some(503), None),
        ];
        let backend = ReplayBackend::new(records.iter());
        let call = || crate::llm::LlmRequest::new(session.clone(), Operation::SUMMARY, Vec::new());
        let progress = Progress::default();
        let first = backend.generate(call(), &progress).await.unwrap_err();
        assert_eq!(
            first.kind,
            LlmErrorKind::BadAnswer {
                answer: String::new()
            }
        );
        let second = backend.generate(call(), &progress).await.unwrap_err();
        assert_eq!(second.kind, LlmErrorKind::Refused { status: 503 });
        // Past the recording: the last answer again, not a text.
        assert_eq!(backend.made_up(), 0);
        let _ = backend.generate(call(), &progress).await;
        assert_eq!(backend.made_up(), 1);
    }
}
