//! What the engine tells the webhooks (`crate::webhooks`): a result kept
//! from a run here, an operation left stale, a session's end. Each becomes
//! deliveries in the outbox and, with a database, rows written with what
//! they are about (a result's in the result's own transaction).
//!
//! With several instances, a result is delivered by the instance whose run
//! made it (results from the others are stored, not delivered), and its
//! revision is the run's lease fence, which every instance agrees on.

use std::sync::Arc;
use std::time::SystemTime;

use super::{Engine, OpResult, Shared};
use crate::db::{OutboxRow, Write};
use crate::model::{Operation, SessionId};
use crate::webhooks::{Delivery, EndpointView, EventKind, Payload, Webhooks};

impl Engine {
    /// Delivers to `webhooks` from now on (once; before any transcript).
    pub fn use_webhooks(&self, webhooks: Arc<Webhooks>) -> bool {
        self.shared.webhooks.set(webhooks).is_ok()
    }

    pub fn webhooks(&self) -> Option<&Arc<Webhooks>> {
        self.shared.webhooks.get()
    }

    /// Each endpoint's counters and what waits for it.
    pub fn webhook_views(&self) -> Vec<EndpointView> {
        self.webhooks()
            .map(|w| w.outbox.views(&w.endpoints))
            .unwrap_or_default()
    }
}

fn now_rfc3339() -> String {
    crate::wire::timestamp(SystemTime::now())
}

/// The rows the database keeps for `deliveries`.
fn rows(webhooks: &Webhooks, deliveries: Vec<Delivery>) -> Vec<OutboxRow> {
    deliveries
        .into_iter()
        .filter_map(|d| {
            Some(OutboxRow {
                endpoint: webhooks.endpoints.get(d.key.endpoint)?.url.to_string(),
                session: d.key.session,
                op: d.key.op,
                event: d.key.event,
                revision: d.revision,
                id: d.id,
                body: d.body,
                created_at: d.created,
            })
        })
        .collect()
}

/// A result kept from a run here, with its revision: the deliveries it
/// makes, as rows for the database to write with the result.
pub(super) fn result_kept(
    shared: &Shared,
    session: &SessionId,
    op: Operation,
    revision: u64,
    result: &OpResult,
) -> Vec<OutboxRow> {
    let Some(webhooks) = shared.webhooks.get() else {
        return Vec::new();
    };
    let kind = shared.store.kind(session);
    let payload = Payload {
        id: Payload::id_of(EventKind::Result, session, Some(op), revision),
        event: EventKind::Result,
        session_id: session,
        kind: kind.as_deref(),
        operation: Some(op),
        revision,
        covered_generation: Some(result.covered_generation),
        generation: shared.store.generation(session),
        result: Some(crate::ops::output::WireRef(&result.body)),
        model: Some(&result.model),
        truncated: Some(result.truncated),
        error: None,
        at: crate::wire::timestamp(result.finished_at),
    };
    rows(webhooks, webhooks.offer(&payload))
}

/// An operation's runs failed past their retries with transcripts left
/// uncovered.
pub(super) fn stale(shared: &Shared, session: &SessionId, op: Operation, error: Option<&str>) {
    let Some(webhooks) = shared.webhooks.get() else {
        return;
    };
    let kind = shared.store.kind(session);
    let generation = shared.store.generation(session);
    let covered = shared.store.covered(session, op);
    let payload = Payload {
        id: Payload::id_of(EventKind::Stale, session, Some(op), generation),
        event: EventKind::Stale,
        session_id: session,
        kind: kind.as_deref(),
        operation: Some(op),
        revision: generation,
        covered_generation: Some(covered),
        generation,
        result: None,
        model: None,
        truncated: None,
        error,
        at: now_rfc3339(),
    };
    write(shared, rows(webhooks, webhooks.offer(&payload)));
}

/// The session ended.
pub(super) fn session_ended(shared: &Shared, session: &SessionId) {
    let Some(webhooks) = shared.webhooks.get() else {
        return;
    };
    let kind = shared.store.kind(session);
    let generation = shared.store.generation(session);
    let payload = Payload {
        id: Payload::id_of(EventKind::SessionEnd, session, None, generation),
        event: EventKind::SessionEnd,
        session_id: session,
        kind: kind.as_deref(),
        operation: None,
        revision: generation,
        covered_generation: None,
        generation,
        result: None,
        model: None,
        truncated: None,
        error: None,
        at: now_rfc3339(),
    };
    write(shared, rows(webhooks, webhooks.offer(&payload)));
}

fn write(shared: &Shared, rows: Vec<OutboxRow>) {
    if let (Some(db), false) = (shared.db.get(), rows.is_empty()) {
        db.write(Write::Outbox(rows));
    }
}

/// Takes back what the database held for the webhooks: deliveries still
/// waiting (for endpoints still configured) and the newest dead letters.
pub(super) fn restore(
    shared: &Shared,
    outbox: Vec<OutboxRow>,
    dead: Vec<(String, crate::webhooks::DeadLetter)>,
) {
    let Some(webhooks) = shared.webhooks.get() else {
        return;
    };
    let index_of = |url: &str| {
        webhooks
            .endpoints
            .iter()
            .position(|e| e.url.as_str() == url)
    };
    let mut back = 0;
    for row in outbox {
        let Some(endpoint) = index_of(&row.endpoint) else {
            continue;
        };
        let delivery = Delivery::new(
            crate::webhooks::Key {
                endpoint,
                session: row.session,
                op: row.op,
                event: row.event,
            },
            row.revision,
            row.id,
            row.body,
            row.created_at,
        );
        if webhooks.outbox.offer(delivery) {
            back += 1;
        }
    }
    for (url, mut letter) in dead {
        if let Some(endpoint) = index_of(&url) {
            letter.endpoint = endpoint;
            webhooks.outbox.restore_dead(letter);
        }
    }
    if back > 0 {
        tracing::info!(
            deliveries = back,
            "webhook deliveries still waiting, taken back"
        );
    }
}

/// Where the sender reports to the database: a delivery done or given up.
pub struct DbRecord {
    pub db: crate::db::Db,
    pub webhooks: Arc<Webhooks>,
}

impl crate::webhooks::sender::Record for DbRecord {
    fn delivered(&self, delivery: &Delivery) {
        let Some(endpoint) = self.webhooks.endpoints.get(delivery.key.endpoint) else {
            return;
        };
        self.db.write(Write::Delivered {
            endpoint: endpoint.url.to_string(),
            session: delivery.key.session.clone(),
            op: delivery.key.op,
            event: delivery.key.event,
            revision: delivery.revision,
        });
    }

    fn dead(&self, delivery: &Delivery, letter: &crate::webhooks::DeadLetter) {
        let Some(row) = rows(&self.webhooks, vec![delivery.clone()]).pop() else {
            return;
        };
        self.db.write(Write::Dead {
            row,
            attempts: letter.attempts,
            error: letter.error.clone(),
            died_at: SystemTime::now(),
        });
    }
}

/// No database: the sender reports to nobody.
pub struct NoRecord;

impl crate::webhooks::sender::Record for NoRecord {
    fn delivered(&self, _delivery: &Delivery) {}
    fn dead(&self, _delivery: &Delivery, _letter: &crate::webhooks::DeadLetter) {}
}
