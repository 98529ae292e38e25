//! Webhooks: every fresh result POSTed to the user's own systems, none of
//! them stale.
//!
//! Endpoints come from the config file (`[[webhooks]]`, `config/webhooks.rs`).
//! Each delivery carries a `revision` that only grows per (session, op), so
//! a receiver can drop a late one; it is signed (`sign.rs`). What waits to
//! be sent is the outbox (`outbox.rs`): per endpoint and (session, op) only
//! the newest undelivered result is kept, one superseded before it went out
//! is dropped and counted, and one is never sent after a newer one. It is
//! bounded; with a database it also lives in SQLite, written in the same
//! transaction as its result, so it survives a crash. The sender
//! (`sender.rs`) works through it per endpoint, off the engine's path:
//! a slow or dead receiver never slows ingest or runs.

pub mod outbox;
pub mod sender;
pub mod sign;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::model::{Operation, SessionId};
pub use outbox::{DeadLetter, Delivery, EndpointView, Key, Outbox};

/// What an endpoint may be told of.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[schema(as = WebhookEvent)]
pub enum EventKind {
    /// A fresh result of an operation.
    Result,
    /// An operation's runs failed past their retries, leaving transcripts
    /// no result covers.
    Stale,
    /// The session ended.
    SessionEnd,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [EventKind::Result, EventKind::Stale, EventKind::SessionEnd];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Result => "result",
            EventKind::Stale => "stale",
            EventKind::SessionEnd => "session_end",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }
}

/// One receiver, as the config file defines it.
#[derive(Clone, PartialEq)]
pub struct Endpoint {
    pub url: reqwest::Url,
    /// The HMAC key, read from its file at start.
    pub secret: Arc<[u8]>,
    pub events: Vec<EventKind>,
    /// Only these operations' results (all when empty).
    pub operations: Vec<Operation>,
    /// Only sessions of these kinds (all when empty).
    pub kinds: Vec<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.shown_url())
            .field("events", &self.events)
            .field("operations", &self.operations)
            .field("kinds", &self.kinds)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The URL with its user, password and query values hidden.
    pub fn shown_url(&self) -> String {
        crate::net::redact_url(self.url.as_str())
    }

    /// Whether this endpoint wants `event` of `op` (none: a session event)
    /// in a session of `kind`.
    pub fn wants(&self, event: EventKind, op: Option<Operation>, kind: Option<&str>) -> bool {
        self.events.contains(&event)
            && (self.operations.is_empty() || op.is_none_or(|op| self.operations.contains(&op)))
            && (self.kinds.is_empty() || kind.is_some_and(|k| self.kinds.iter().any(|w| w == k)))
    }
}

/// How deliveries are sent and when they are given up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// A delivery not made within this long of its result is given up and
    /// kept as a dead letter.
    pub max_age: Duration,
    /// Deliveries waiting at once, across endpoints; past it new ones are
    /// dropped and counted.
    pub max_pending: usize,
    /// One attempt's limit, connect to answer.
    pub timeout: Duration,
    /// Attempts in flight at once per endpoint.
    pub concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(24 * 3600),
            max_pending: 10_000,
            timeout: Duration::from_secs(10),
            concurrency: 8,
        }
    }
}

/// The webhooks of one process: endpoints, settings and the outbox.
pub struct Webhooks {
    pub endpoints: Vec<Endpoint>,
    pub settings: Settings,
    pub outbox: Outbox,
}

impl Webhooks {
    pub fn new(endpoints: Vec<Endpoint>, settings: Settings) -> Self {
        let outbox = Outbox::new(endpoints.len(), settings.max_pending);
        Self {
            endpoints,
            settings,
            outbox,
        }
    }

    /// The deliveries `event` makes, one per endpoint that wants it, each
    /// with its body; offered to the outbox, and returned (those it took)
    /// for the database.
    pub fn offer(&self, event: &Payload<'_>) -> Vec<Delivery> {
        let body: Arc<str> = match serde_json::to_string(event) {
            Ok(body) => body.into(),
            Err(e) => {
                tracing::warn!("webhook body not encoded: {e}");
                return Vec::new();
            }
        };
        let mut taken = Vec::new();
        for (index, endpoint) in self.endpoints.iter().enumerate() {
            if !endpoint.wants(event.event, event.operation, event.kind) {
                continue;
            }
            let delivery = Delivery::new(
                Key {
                    endpoint: index,
                    session: event.session_id.clone(),
                    op: event.operation,
                    event: event.event,
                },
                event.revision,
                event.id.clone(),
                body.clone(),
                SystemTime::now(),
            );
            if self.outbox.offer(delivery.clone()) {
                taken.push(delivery);
            }
        }
        taken
    }
}

/// What a delivery's body says.
#[derive(Debug, Serialize)]
pub struct Payload<'a> {
    /// Stable across retries and restarts: `{event}:{session}:{op}:{revision}`.
    pub id: String,
    pub event: EventKind,
    pub session_id: &'a SessionId,
    /// The session's kind, when its feed gave one.
    pub kind: Option<&'a str>,
    /// The operation (none for `session_end`).
    pub operation: Option<Operation>,
    /// Only grows per (session, op): the run's fencing id. A receiver drops
    /// a delivery whose revision is not above the one it holds.
    pub revision: u64,
    /// The transcripts the result covers (for `stale`: those it covered
    /// before the runs failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covered_generation: Option<u64>,
    /// The transcripts the session holds.
    pub generation: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<crate::ops::output::WireRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// For `stale`: why the last run failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// When it happened, as an RFC 3339 time.
    pub at: String,
}

impl Payload<'_> {
    /// The stable delivery id of an event.
    pub fn id_of(
        event: EventKind,
        session: &SessionId,
        op: Option<Operation>,
        revision: u64,
    ) -> String {
        let op = op.map_or("", |op| op.as_str());
        format!("{}:{session}:{op}:{revision}", event.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_gets_only_the_events_operations_and_kinds_it_asked_for() {
        let endpoint = Endpoint {
            url: reqwest::Url::parse("http://127.0.0.1:9/h").unwrap(),
            secret: Arc::from(&b"s"[..]),
            events: vec![EventKind::Result, EventKind::SessionEnd],
            operations: vec![Operation::SUMMARY],
            kinds: vec!["standup".into()],
        };
        let summary = Some(Operation::SUMMARY);
        assert!(endpoint.wants(EventKind::Result, summary, Some("standup")));
        assert!(!endpoint.wants(
            EventKind::Result,
            Some(Operation::MIND_MAP),
            Some("standup")
        ));
        assert!(!endpoint.wants(EventKind::Result, summary, Some("sales")));
        assert!(
            !endpoint.wants(EventKind::Result, summary, None),
            "a session of no kind"
        );
        assert!(!endpoint.wants(EventKind::Stale, summary, Some("standup")));
        assert!(
            endpoint.wants(EventKind::SessionEnd, None, Some("standup")),
            "a session's own event names no operation"
        );
        let all = Endpoint {
            operations: Vec::new(),
            kinds: Vec::new(),
            ..endpoint
        };
        assert!(all.wants(EventKind::Result, Some(Operation::MIND_MAP), None));
    }

    #[test]
    fn events_read_back_by_their_names_and_a_secret_never_shows() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("finished"), None);
        let endpoint = Endpoint {
            url: reqwest::Url::parse("https://user:pw@hooks.example.com/h?key=abc").unwrap(),
            secret: Arc::from(&b"very-secret"[..]),
            events: vec![EventKind::Result],
            operations: Vec::new(),
            kinds: Vec::new(),
        };
        let shown = format!("{endpoint:?}");
        assert!(shown.contains("hooks.example.com"), "{shown}");
        for secret in ["very-secret", "pw", "abc"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn a_delivery_id_names_its_event_session_operation_and_revision() {
        let session = SessionId::parse("standup-7").unwrap();
        assert_eq!(
            Payload::id_of(EventKind::Result, &session, Some(Operation::SUMMARY), 12),
            "result:standup-7:summary:12"
        );
        assert_eq!(
            Payload::id_of(EventKind::SessionEnd, &session, None, 40),
            "session_end:standup-7::40"
        );
    }
}
