//! Structured output that survives real servers: the format ladder and the
//! one repair retry, shared by the HTTP backends. (Its second half is its
//! unit tests: every rung against scripted answers.)
//!
//! Servers differ in how they can be asked for JSON. The ladder has three
//! rungs, tried from the top:
//!
//! 1. [`Rung::JsonSchema`]: the mind map's JSON schema (OpenAI's
//!    `response_format: json_schema`, Ollama's `format: {schema}`);
//! 2. [`Rung::JsonObject`]: any JSON (`response_format: json_object`,
//!    Ollama's `format: "json"`);
//! 3. [`Rung::Plain`]: no constraint; the prompt asks for JSON and the
//!    answer is read leniently.
//!
//! A server that refuses a request (400, 422, 500, 501) while a lower rung
//! exists gets the same request one rung lower at once. When the lower rung
//! answers, the backend remembers it for every later call and says so in its
//! [`super::BackendInfo`]: at once for a 400, 422 or 501, or a 500 whose
//! words name the format (llama-cpp-python's do); a bare 500 is also how a
//! server says its own trouble, so it must happen [`STEP_DOWN_AFTER`] times
//! in a row at the current rung first (any answer there starts the count
//! again). Otherwise a flaky server's errors would talk the ladder down to
//! plain text for good. When even the plain rung is refused, the format
//! was not the cause: the first error is the run's, and nothing is learnt.
//!
//! An answer that cannot be used (empty, or no mind map in it) is retried
//! once with a short repair prompt that shows the answer and says what was
//! wrong. An empty answer under a constraint is repaired one rung lower
//! (small models under a schema often say nothing at all); after
//! [`STEP_DOWN_AFTER`] such rescues in a row, the lower rung stays. A repair
//! that fails too ends the run with the cause.

use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use super::{LlmError, LlmErrorKind, LlmRequest, LlmResponse, Repair, Usage};
use crate::model::Operation;
use crate::ops::OutputKind;
use crate::ops::output::Format;

/// How a request asks for JSON; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rung {
    JsonSchema = 0,
    JsonObject = 1,
    Plain = 2,
}

impl Rung {
    /// The name shown in views and the API.
    pub fn name(self) -> &'static str {
        match self {
            Rung::JsonSchema => "json_schema",
            Rung::JsonObject => "json_object",
            Rung::Plain => "plain",
        }
    }

    /// The rung a name stands for.
    pub fn from_name(name: &str) -> Option<Rung> {
        [Rung::JsonSchema, Rung::JsonObject, Rung::Plain]
            .into_iter()
            .find(|r| r.name() == name)
    }

    /// The next rung down, if any.
    pub fn lower(self) -> Option<Rung> {
        match self {
            Rung::JsonSchema => Some(Rung::JsonObject),
            Rung::JsonObject => Some(Rung::Plain),
            Rung::Plain => None,
        }
    }

    fn from_u8(value: u8) -> Rung {
        match value {
            0 => Rung::JsonSchema,
            1 => Rung::JsonObject,
            _ => Rung::Plain,
        }
    }
}

/// Unreadable answers (or bare server errors) in a row at one rung, each
/// rescued one rung lower, before the lower rung stays.
pub const STEP_DOWN_AFTER: u32 = 3;

/// The most of a bad answer shown back to the model in a repair prompt.
pub const MAX_REPAIR_ECHO_CHARS: usize = 2_000;

/// Statuses with which servers refuse a request they cannot take as asked
/// (an unknown `response_format` among them).
fn refuses_the_format(status: u16) -> bool {
    matches!(status, 400 | 422 | 500 | 501)
}

/// Whether a refusal surely is of the format: a client error, or a 500
/// whose words name it. A bare 500 may be the server's own trouble.
fn surely_the_format(refusal: &LlmError) -> bool {
    match refusal.kind {
        LlmErrorKind::Refused { status: 500 } => {
            let words = refusal.message.to_lowercase();
            [
                "response_format",
                "json_schema",
                "json_object",
                "schema",
                "format",
            ]
            .iter()
            .any(|named| words.contains(named))
        }
        _ => true,
    }
}

/// What one server accepted, learnt as calls go. One per backend.
#[derive(Debug)]
pub struct Ladder {
    rung: AtomicU8,
    /// First answers at the current rung that were unreadable and rescued
    /// one rung lower, in a row.
    rescued_in_a_row: AtomicU32,
}

impl Default for Ladder {
    fn default() -> Self {
        Self::new(Rung::JsonSchema)
    }
}

impl Ladder {
    pub fn new(top: Rung) -> Self {
        Self {
            rung: AtomicU8::new(top as u8),
            rescued_in_a_row: AtomicU32::new(0),
        }
    }

    /// The rung mind maps are asked at now.
    pub fn current(&self) -> Rung {
        Rung::from_u8(self.rung.load(Ordering::Relaxed))
    }

    /// Moves from `from` down to `to`, unless another call already moved.
    fn step_down(&self, from: Rung, to: Rung, server: &str, why: &str) {
        if self
            .rung
            .compare_exchange(from as u8, to as u8, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.rescued_in_a_row.store(0, Ordering::Relaxed);
            tracing::warn!(
                from = from.name(),
                to = to.name(),
                "{server} does not take {} answers ({why}); asking with {} from now on",
                from.name(),
                to.name()
            );
        }
    }

    fn readable_at(&self, rung: Rung) {
        if rung == self.current() {
            self.rescued_in_a_row.store(0, Ordering::Relaxed);
        }
    }

    /// A call at `rung` failed as `what` says and was rescued at `lower`:
    /// the lower rung stays after [`STEP_DOWN_AFTER`] in a row.
    fn rescued_below(&self, rung: Rung, lower: Rung, server: &str, what: &str) {
        if rung != self.current() {
            return;
        }
        let n = self.rescued_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= STEP_DOWN_AFTER {
            let why = format!("{n} {what} in a row");
            self.step_down(rung, lower, server, &why);
        }
    }
}

/// Why an answer cannot be used for `op`, if it cannot.
pub fn unusable(op: Operation, text: &str) -> Option<String> {
    if text.trim().is_empty() {
        return Some("the answer was empty".into());
    }
    match crate::ops::registry().def(op) {
        Some(def) => OutputKind::read(def, text).err(),
        None => Some(format!("{op} is no longer defined")),
    }
}

/// How `op`'s answers are asked for on the ladder's top rung: `Prose`
/// (`None` when it is no longer defined) sends no schema.
pub fn format(op: Operation) -> Option<Format> {
    crate::ops::registry().def(op).map(OutputKind::format)
}

/// The start of an answer, for error messages.
pub fn preview(text: &str) -> String {
    text.chars().take(120).collect()
}

/// Makes one call through `call(request, rung)` as the module docs say:
/// down the ladder past refusals, then one repair retry if the answer
/// cannot be used. The usage returned (or carried by the error) is that of
/// every call made. `server` names the server in logs.
pub async fn generate<F, Fut>(
    ladder: &Ladder,
    server: &str,
    request: LlmRequest,
    call: F,
) -> Result<LlmResponse, LlmError>
where
    F: Fn(LlmRequest, Rung) -> Fut,
    Fut: Future<Output = Result<LlmResponse, LlmError>>,
{
    let op = request.op;
    let start = match format(op) {
        Some(Format::Json { .. }) => ladder.current(),
        Some(Format::Prose) | None => Rung::Plain,
    };
    let mut spent = Usage::default();
    let (answer, rung) = first_answer(ladder, server, &request, start, &call, &mut spent).await?;
    spent = spent.plus(answer.usage);
    let Some(why) = unusable(op, &answer.text) else {
        ladder.readable_at(rung);
        return Ok(LlmResponse {
            usage: spent,
            ..answer
        });
    };
    let repair_rung = match rung.lower() {
        Some(lower) if answer.text.trim().is_empty() => lower,
        _ => rung,
    };
    tracing::debug!(
        session_id = %request.session,
        op = op.as_str(),
        "{why}; asking once more"
    );
    let mut retry = request;
    retry.repair = Some(Repair {
        answer: answer.text.chars().take(MAX_REPAIR_ECHO_CHARS).collect(),
        why: why.clone(),
    });
    let second = match call(retry, repair_rung).await {
        Ok(second) => second,
        Err(mut e) => {
            e.usage = spent.plus(e.usage);
            return Err(e);
        }
    };
    spent = spent.plus(second.usage);
    match unusable(op, &second.text) {
        None => {
            if repair_rung != rung {
                ladder.rescued_below(rung, repair_rung, server, "unreadable answers");
            }
            Ok(LlmResponse {
                usage: spent,
                ..second
            })
        }
        Some(why_again) => Err(LlmError {
            message: format!(
                "{why_again}, also after a repair retry ({why} the first time); the answer began: {:?}",
                preview(&second.text)
            ),
            kind: LlmErrorKind::BadAnswer {
                answer: second.text,
            },
            usage: spent,
            retry_after: None,
        }),
    }
}

/// The first answer, going down the ladder past refusals from `start`.
async fn first_answer<F, Fut>(
    ladder: &Ladder,
    server: &str,
    request: &LlmRequest,
    start: Rung,
    call: &F,
    spent: &mut Usage,
) -> Result<(LlmResponse, Rung), LlmError>
where
    F: Fn(LlmRequest, Rung) -> Fut,
    Fut: Future<Output = Result<LlmResponse, LlmError>>,
{
    let mut rung = start;
    let mut first_refusal: Option<LlmError> = None;
    loop {
        match call(request.clone(), rung).await {
            Ok(answer) => {
                match &first_refusal {
                    Some(refusal) if surely_the_format(refusal) => {
                        ladder.step_down(start, rung, server, &refusal.message);
                    }
                    Some(_) => ladder.rescued_below(start, rung, server, "server errors"),
                    None => {}
                }
                return Ok((answer, rung));
            }
            Err(e) => {
                *spent = spent.plus(e.usage);
                let refused = matches!(e.kind, LlmErrorKind::Refused { status } if refuses_the_format(status));
                match rung.lower() {
                    Some(lower) if refused => {
                        first_refusal.get_or_insert(e);
                        rung = lower;
                    }
                    // Refused on every rung: the format was not the cause.
                    _ => {
                        let mut error = match first_refusal {
                            Some(first) if refused => first,
                            _ => e,
                        };
                        error.usage = *spent;
                        return Err(error);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SessionId;
    use std::sync::Mutex;

    fn request(op: Operation) -> LlmRequest {
        LlmRequest::new(SessionId::parse("s").unwrap(), op, Vec::new())
    }

    fn ok(text: &str) -> Result<LlmResponse, LlmError> {
        Ok(LlmResponse {
            text: text.into(),
            model: "m".into(),
            usage: Usage::tokens(10, 1),
            truncated: false,
        })
    }

    fn refused(status: u16) -> Result<LlmResponse, LlmError> {
        Err(LlmError::new(LlmErrorKind::Refused { status }, "no"))
    }

    /// A refusal that still cost `prompt_tokens`.
    fn refused_after(status: u16, prompt_tokens: u64) -> Result<LlmResponse, LlmError> {
        Err(LlmError {
            usage: Usage::tokens(prompt_tokens, 0),
            ..LlmError::new(LlmErrorKind::Refused { status }, "no schema")
        })
    }

    const MAP: &str = r#"{"root": {"label": "x", "children": []}}"#;

    /// Runs `generate` with a script of answers by call; returns the result
    /// and the (rung, repaired) of each call.
    async fn play(
        ladder: &Ladder,
        op: Operation,
        script: impl Fn(usize, Rung) -> Result<LlmResponse, LlmError>,
    ) -> (Result<LlmResponse, LlmError>, Vec<(Rung, bool)>) {
        let calls = Mutex::new(Vec::new());
        let result = generate(ladder, "the server", request(op), |req, rung| {
            let n = {
                let mut calls = calls.lock().unwrap();
                calls.push((rung, req.repair.is_some()));
                calls.len() - 1
            };
            let answer = script(n, rung);
            async move { answer }
        })
        .await;
        (result, calls.into_inner().unwrap())
    }

    /// llama-cpp-python's refusal of a schema: a 500 that names it.
    fn schema_refused() -> Result<LlmResponse, LlmError> {
        Err(LlmError::new(
            LlmErrorKind::Refused { status: 500 },
            "the server answered 500: response_format: Input should be 'text' or 'json_object'",
        ))
    }

    #[tokio::test]
    async fn a_refused_schema_steps_down_and_is_remembered() {
        let ladder = Ladder::default();
        let (result, calls) = play(&ladder, Operation::MIND_MAP, |_, rung| match rung {
            Rung::JsonSchema => schema_refused(),
            _ => ok(MAP),
        })
        .await;
        assert_eq!(result.unwrap().usage.prompt_tokens, 10);
        assert_eq!(
            calls,
            vec![(Rung::JsonSchema, false), (Rung::JsonObject, false)]
        );
        assert_eq!(ladder.current(), Rung::JsonObject);
        let (_, calls) = play(&ladder, Operation::MIND_MAP, |_, _| ok(MAP)).await;
        assert_eq!(calls, vec![(Rung::JsonObject, false)], "remembered");
    }

    #[tokio::test]
    async fn a_bare_server_error_steps_down_only_when_it_repeats() {
        let ladder = Ladder::default();
        let flaky = |_: usize, rung: Rung| match rung {
            Rung::JsonSchema => refused(500),
            _ => ok(MAP),
        };
        // A flaky server: a 500, rescued one rung lower, then an answer at
        // the top again. Nothing is learnt, however often that happens.
        for _ in 0..10 {
            let (result, calls) = play(&ladder, Operation::MIND_MAP, flaky).await;
            assert!(result.is_ok());
            assert_eq!(calls[1], (Rung::JsonObject, false), "rescued below");
            let (_, calls) = play(&ladder, Operation::MIND_MAP, |_, _| ok(MAP)).await;
            assert_eq!(calls, vec![(Rung::JsonSchema, false)]);
        }
        assert_eq!(ladder.current(), Rung::JsonSchema);
        // A server that always fails the top rung: it stays one lower.
        for _ in 0..STEP_DOWN_AFTER {
            play(&ladder, Operation::MIND_MAP, flaky).await.0.unwrap();
        }
        assert_eq!(ladder.current(), Rung::JsonObject);
    }

    #[tokio::test]
    async fn refused_on_every_rung_is_not_the_format() {
        let ladder = Ladder::default();
        let (result, calls) = play(&ladder, Operation::MIND_MAP, |n, _| {
            refused([500, 400, 422][n])
        })
        .await;
        let error = result.unwrap_err();
        assert_eq!(
            error.kind,
            LlmErrorKind::Refused { status: 500 },
            "the first error"
        );
        assert_eq!(calls.len(), 3);
        assert_eq!(ladder.current(), Rung::JsonSchema, "nothing learnt");
        // A 404 (no such model) or 401 is no reason to change format.
        let (_, calls) = play(&ladder, Operation::MIND_MAP, |_, _| refused(404)).await;
        assert_eq!(calls.len(), 1);
        // Summaries are plain text: no ladder to go down.
        let (_, calls) = play(&ladder, Operation::SUMMARY, |_, _| refused(500)).await;
        assert_eq!(calls, vec![(Rung::Plain, false)]);
    }

    #[tokio::test]
    async fn after_a_refusal_another_kind_of_error_is_the_one_reported_and_all_usage_counts() {
        let ladder = Ladder::default();
        let (result, _) = play(&ladder, Operation::MIND_MAP, |n, _| match n {
            0 => refused_after(500, 7),
            _ => Err(LlmError::new(
                LlmErrorKind::Unreachable,
                "connection refused",
            )),
        })
        .await;
        let error = result.unwrap_err();
        assert_eq!(
            error.kind,
            LlmErrorKind::Unreachable,
            "the newer, other cause"
        );
        assert_eq!(error.usage.prompt_tokens, 7);
        let (result, _) = play(&ladder, Operation::MIND_MAP, |n, _| match n {
            0 => refused_after(400, 7),
            _ => ok(MAP),
        })
        .await;
        assert_eq!(
            result.unwrap().usage.prompt_tokens,
            17,
            "the refused call's tokens too"
        );
    }

    #[tokio::test]
    async fn an_unreadable_answer_is_repaired_once_at_the_same_rung() {
        let ladder = Ladder::default();
        let (result, calls) = play(&ladder, Operation::MIND_MAP, |n, _| {
            ok(if n == 0 {
                "{\"root\": {\"label\": "
            } else {
                MAP
            })
        })
        .await;
        let answer = result.unwrap();
        assert_eq!(answer.text, MAP);
        assert_eq!(answer.usage.prompt_tokens, 20, "both calls counted");
        assert_eq!(
            calls,
            vec![(Rung::JsonSchema, false), (Rung::JsonSchema, true)]
        );
        let (result, calls) = play(&ladder, Operation::MIND_MAP, |_, _| ok("no map")).await;
        let error = result.unwrap_err();
        assert_eq!(calls.len(), 2, "one repair, no more");
        assert!(matches!(error.kind, LlmErrorKind::BadAnswer { ref answer } if answer == "no map"));
        assert!(
            error.message.contains("after a repair retry"),
            "{}",
            error.message
        );
        assert_eq!(error.usage.prompt_tokens, 20);
    }

    #[tokio::test]
    async fn empty_answers_under_a_schema_are_repaired_lower_and_then_it_stays_lower() {
        let ladder = Ladder::default();
        for round in 1..=STEP_DOWN_AFTER {
            let (result, calls) = play(&ladder, Operation::MIND_MAP, |_, rung| match rung {
                Rung::JsonSchema => ok(""),
                _ => ok(MAP),
            })
            .await;
            assert!(result.is_ok());
            assert_eq!(
                calls,
                vec![(Rung::JsonSchema, false), (Rung::JsonObject, true)]
            );
            let expected = if round < STEP_DOWN_AFTER {
                Rung::JsonSchema
            } else {
                Rung::JsonObject
            };
            assert_eq!(ladder.current(), expected, "after round {round}");
        }
        // A readable answer in between starts the count again.
        let ladder = Ladder::default();
        for n in 0..(2 * STEP_DOWN_AFTER) {
            let empty = n % 2 == 0;
            let (result, _) = play(&ladder, Operation::MIND_MAP, move |_, rung| match rung {
                Rung::JsonSchema if empty => ok(""),
                _ => ok(MAP),
            })
            .await;
            assert!(result.is_ok());
        }
        assert_eq!(ladder.current(), Rung::JsonSchema);
    }

    #[tokio::test]
    async fn an_empty_summary_is_repaired() {
        let ladder = Ladder::default();
        let (result, calls) = play(&ladder, Operation::SUMMARY, |n, _| {
            ok(if n == 0 { "  \n" } else { "We met." })
        })
        .await;
        assert_eq!(result.unwrap().text, "We met.");
        assert_eq!(calls, vec![(Rung::Plain, false), (Rung::Plain, true)]);
    }
}
