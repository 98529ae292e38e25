//! The API calls attach makes, and refusals in a few words.

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::super::Answer;
use crate::api::dashboard::DetailAnswer;
use crate::api::json::{CancelJson, TriggerJson};
use crate::engine::TriggerAnswer;
use crate::model::{Operation, SessionId};

use super::Api;

/// Why an API call gave no answer to use. Callers branch on the kind (a
/// 404 is "no such session", not a failure); the text is what the screen
/// says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No answer: the server is down, unreachable or too slow.
    #[error("{0}")]
    NoAnswer(String),
    /// The server answered with a status other than the one expected.
    #[error("{} {why}", status.as_u16())]
    Refused { status: StatusCode, why: String },
    /// An answer that does not read as what was asked for.
    #[error("unreadable answer{}: {why}", status.map(|s| format!(" ({s})")).unwrap_or_default())]
    Unreadable {
        status: Option<StatusCode>,
        why: String,
    },
}

impl From<CallError> for String {
    fn from(e: CallError) -> String {
        e.to_string()
    }
}

impl Api {
    pub(super) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub(super) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<(StatusCode, Value), CallError> {
        let response = self.request(method, path).send().await.map_err(|e| {
            CallError::NoAnswer(match e {
                e if e.is_timeout() => "no answer".to_string(),
                e if e.is_connect() => "cannot connect".to_string(),
                e => e.to_string(),
            })
        })?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| CallError::Unreadable {
            status: Some(status),
            why: e.to_string(),
        })?;
        Ok((status, body))
    }

    /// A GET whose answer must be 200.
    pub(super) async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, CallError> {
        let (status, body) = self.send(reqwest::Method::GET, path).await?;
        if status != StatusCode::OK {
            return Err(refused(status, &body));
        }
        serde_json::from_value(body).map_err(|e| CallError::Unreadable {
            status: None,
            why: e.to_string(),
        })
    }

    /// [`Api::get`] for an answer whose instants are on the server's clock
    /// (its `now` says where).
    pub(super) async fn get_timed<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, CallError> {
        let (status, body) = self.send(reqwest::Method::GET, path).await?;
        if status != StatusCode::OK {
            return Err(refused(status, &body));
        }
        let now = body.get("now").and_then(Value::as_i64).unwrap_or(0);
        crate::monotime::decoding_with(now, || serde_json::from_value(body)).map_err(|e| {
            CallError::Unreadable {
                status: None,
                why: e.to_string(),
            }
        })
    }

    /// One session's details; `None` when the server has no such session.
    pub(super) async fn detail(
        &self,
        session: &SessionId,
    ) -> Result<Option<DetailAnswer>, CallError> {
        match self
            .get_timed(&format!("/api/dashboard/sessions/{session}"))
            .await
        {
            Ok(answer) => Ok(Some(answer)),
            Err(CallError::Refused {
                status: StatusCode::NOT_FOUND,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn trigger(&self, session: SessionId, ops: Vec<Operation>) -> Answer {
        let mut answers = Vec::new();
        for op in ops {
            let path = format!("/api/sessions/{session}/operations/{}", op.as_str());
            let (status, body) = match self.send(reqwest::Method::POST, &path).await {
                Ok(answer) => answer,
                Err(e) => return Answer::Refused(format!("{session} · {e}")),
            };
            // Started, pending, skipped and over budget are answers; any
            // other body is a refusal.
            let Ok(answer) = serde_json::from_value::<TriggerJson>(body.clone()) else {
                return Answer::Refused(format!("{session} · {}", refusal(status, &body)));
            };
            answers.push((op, TriggerAnswer::from(answer)));
        }
        Answer::Triggered { session, answers }
    }

    pub(super) async fn lift_budget(&self, session: SessionId) -> Answer {
        let path = format!("/api/sessions/{session}/budget/lift");
        match self.send(reqwest::Method::POST, &path).await {
            Ok((status, _)) if status.is_success() => Answer::BudgetLifted { session },
            Ok((status, body)) => {
                Answer::Refused(format!("{session} · {}", refusal(status, &body)))
            }
            Err(e) => Answer::Refused(format!("{session} · {e}")),
        }
    }

    pub(super) async fn raise_budget(&self, session: SessionId) -> Answer {
        let path = format!("/api/sessions/{session}/budget/raise");
        match self.send(reqwest::Method::POST, &path).await {
            Ok((status, body)) if status.is_success() => {
                match serde_json::from_value::<crate::api::BudgetRaisedJson>(body) {
                    Ok(raised) => Answer::BudgetRaised {
                        session,
                        tokens: raised.raised_tokens,
                        cost: crate::spend::Cost::from_units(raised.raised_cost),
                    },
                    Err(e) => Answer::Refused(format!("{session} · a raise answered {e}")),
                }
            }
            Ok((status, body)) => {
                Answer::Refused(format!("{session} · {}", refusal(status, &body)))
            }
            Err(e) => Answer::Refused(format!("{session} · {e}")),
        }
    }

    pub(super) async fn cancel(&self, session: SessionId, ops: Vec<Operation>) -> Answer {
        let mut stopped = Vec::new();
        for op in ops {
            let path = format!("/api/sessions/{session}/operations/{}", op.as_str());
            match self.send(reqwest::Method::DELETE, &path).await {
                Ok((StatusCode::OK, body)) => match serde_json::from_value::<CancelJson>(body) {
                    Ok(CancelJson::Cancelled { run_id }) => stopped.push((op, Some(run_id))),
                    Ok(CancelJson::None { .. }) => stopped.push((op, None)),
                    Err(e) => return Answer::Refused(format!("{session} · a cancel answered {e}")),
                },
                Ok((StatusCode::NOT_FOUND, _)) => stopped.push((op, None)),
                Ok((status, body)) => {
                    return Answer::Refused(format!("{session} · {}", refusal(status, &body)));
                }
                Err(e) => return Answer::Refused(format!("{session} · {e}")),
            }
        }
        Answer::Cancelled { session, stopped }
    }
}

/// A refused request in a few words: `403 a read-only token: …`.
fn refused(status: StatusCode, body: &Value) -> CallError {
    let said = crate::api::ErrorJson::deserialize(body).ok();
    let why = said
        .as_ref()
        .map(|refusal| refusal.error.as_ref())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("refused"));
    CallError::Refused {
        status,
        why: crate::text::strip_controls(why).into_owned(),
    }
}

fn refusal(status: StatusCode, body: &Value) -> String {
    refused(status, body).to_string()
}
