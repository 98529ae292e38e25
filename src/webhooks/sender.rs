//! The sender: one task per endpoint that POSTs what its outbox slots hold,
//! a few at a time, and decides what a failure means.
//!
//! - 2xx: delivered.
//! - A connection that failed or timed out, 408, 429, 5xx: tried again
//!   after a backoff that doubles from one second up to five minutes, half
//!   to all of it at random, or after the receiver's `Retry-After` when
//!   that is longer.
//! - Any other answer (a 400, 401, 404, …): given up at once; the receiver
//!   said it will not take it.
//! - A delivery whose next try would fall past `max_age` of its event is
//!   given up. Given-up deliveries are dead letters.
//!
//! Each attempt is signed afresh (`sign.rs`) with the time it is sent.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::outbox::AfterFailure;
use super::{Delivery, Webhooks, sign};

/// The first retry's wait; it doubles each try after.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between tries (unless the receiver asks for more).
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What one attempt found.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered,
    /// Worth another try; the receiver's `Retry-After`, if it gave one.
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// The receiver refused it for good.
    Refused(String),
}

/// Where the sender reports what it did: the database, when there is one.
pub trait Record: Send + Sync + 'static {
    fn delivered(&self, delivery: &Delivery);
    fn dead(&self, delivery: &Delivery, letter: &super::DeadLetter);
}

/// Runs every endpoint's sender until `stop`.
pub async fn run(webhooks: Arc<Webhooks>, record: Arc<dyn Record>, stop: CancellationToken) {
    let client = match crate::net::http_client(reqwest::Client::builder()) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("webhooks: no HTTP client ({e}); nothing will be delivered");
            return;
        }
    };
    let mut senders = JoinSet::new();
    for endpoint in 0..webhooks.endpoints.len() {
        senders.spawn(send_for(
            webhooks.clone(),
            endpoint,
            client.clone(),
            record.clone(),
            stop.clone(),
        ));
    }
    while senders.join_next().await.is_some() {}
}

async fn send_for(
    webhooks: Arc<Webhooks>,
    endpoint: usize,
    client: reqwest::Client,
    record: Arc<dyn Record>,
    stop: CancellationToken,
) {
    let Some(wake) = webhooks.outbox.woken(endpoint) else {
        return;
    };
    let most = webhooks.settings.concurrency.max(1);
    let mut attempts: JoinSet<(Delivery, Attempt)> = JoinSet::new();
    loop {
        // Listening before looking, so a delivery that comes in between is
        // not missed.
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let room = most.saturating_sub(attempts.len());
        let (due, next) = webhooks.outbox.take_due(endpoint, Instant::now(), room);
        for delivery in due {
            let client = client.clone();
            let webhooks = webhooks.clone();
            attempts.spawn(async move {
                let attempt = attempt(&client, &webhooks, &delivery).await;
                (delivery, attempt)
            });
        }
        let sleep = next.map(tokio::time::sleep_until);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = &mut woken => {}
            _ = async { if let Some(sleep) = sleep { sleep.await } else { std::future::pending().await } } => {}
            Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                if let Ok((delivery, attempt)) = done {
                    settle(&webhooks, record.as_ref(), delivery, attempt);
                }
            }
        }
    }
}

/// One POST of a delivery, signed now.
async fn attempt(client: &reqwest::Client, webhooks: &Webhooks, delivery: &Delivery) -> Attempt {
    let Some(endpoint) = webhooks.endpoints.get(delivery.key.endpoint) else {
        return Attempt::Refused("the endpoint is no longer configured".into());
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let signature = sign::signature(&endpoint.secret, now, delivery.body.as_bytes());
    let sent = client
        .post(endpoint.url.clone())
        .timeout(webhooks.settings.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(sign::HEADER, signature)
        .header("inflight-delivery", &delivery.id)
        .header("inflight-event", delivery.key.event.as_str())
        .body(delivery.body.to_string())
        .send()
        .await;
    match sent {
        Ok(response) => judge(response.status().as_u16(), retry_after(response.headers())),
        Err(e) if e.is_timeout() => Attempt::Retry {
            why: format!(
                "no answer within {}",
                humantime::format_duration(webhooks.settings.timeout)
            ),
            after: None,
        },
        Err(e) => Attempt::Retry {
            why: format!(
                "could not reach the receiver: {}",
                crate::llm::http::error_chain(&e)
            ),
            after: None,
        },
    }
}

/// What a receiver's status means.
pub fn judge(status: u16, after: Option<Duration>) -> Attempt {
    match status {
        200..=299 => Attempt::Delivered,
        408 | 429 | 500..=599 => Attempt::Retry {
            why: format!("the receiver answered {status}"),
            after,
        },
        _ => Attempt::Refused(format!("the receiver refused it with {status}")),
    }
}

/// A `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// The wait before try `attempts + 1`: doubling, capped, half to all of it
/// (`jitter` in 0..1), or the receiver's ask when longer.
pub fn backoff(attempts: u32, asked: Option<Duration>, jitter: f64) -> Duration {
    let doubled = FIRST_BACKOFF
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let wait = doubled.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0);
    asked.map_or(wait, |asked| asked.max(wait))
}

/// Puts an attempt's outcome in the outbox, and in the record.
fn settle(webhooks: &Webhooks, record: &dyn Record, delivery: Delivery, attempt: Attempt) {
    let age = SystemTime::now()
        .duration_since(delivery.created)
        .unwrap_or_default();
    let (retry_at, error) = match attempt {
        Attempt::Delivered => {
            webhooks.outbox.delivered(&delivery);
            record.delivered(&delivery);
            return;
        }
        Attempt::Retry { why, after } => {
            let wait = backoff(delivery.attempts + 1, after, fastrand::f64());
            if age + wait > webhooks.settings.max_age {
                let given_up = format!(
                    "{why}; given up: not delivered within {}",
                    humantime::format_duration(webhooks.settings.max_age)
                );
                (None, given_up)
            } else {
                (Some(Instant::now() + wait), why)
            }
        }
        Attempt::Refused(why) => (None, why),
    };
    let url = webhooks
        .endpoints
        .get(delivery.key.endpoint)
        .map(|e| e.shown_url())
        .unwrap_or_default();
    let kept = delivery.clone();
    match webhooks.outbox.failed(delivery, retry_at, error.clone()) {
        AfterFailure::Retrying => tracing::debug!(
            endpoint = %url,
            delivery = %kept.id,
            "webhook delivery failed ({error}); trying again"
        ),
        AfterFailure::Superseded => {}
        AfterFailure::Dead(letter) => {
            tracing::warn!(
                endpoint = %url,
                delivery = %kept.id,
                attempts = letter.attempts,
                "webhook delivery given up: {error}"
            );
            record.dead(&kept, &letter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_receiver_answers_decides_retry_or_give_up() {
        assert_eq!(judge(204, None), Attempt::Delivered);
        for status in [408, 429, 500, 503] {
            assert!(
                matches!(judge(status, None), Attempt::Retry { .. }),
                "{status}"
            );
        }
        for status in [301, 400, 401, 404, 410] {
            assert!(
                matches!(judge(status, None), Attempt::Refused(_)),
                "{status}"
            );
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_five_minutes_or_what_the_receiver_asks() {
        assert_eq!(backoff(1, None, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(1, None, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(4, None, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(40, None, 1.0), MAX_BACKOFF);
        assert_eq!(
            backoff(1, Some(Duration::from_secs(30)), 1.0),
            Duration::from_secs(30)
        );
        assert_eq!(
            backoff(4, Some(Duration::from_secs(2)), 1.0),
            Duration::from_secs(8)
        );
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "30".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(30)));
        let later = SystemTime::now() + Duration::from_secs(120);
        headers.insert(
            reqwest::header::RETRY_AFTER,
            httpdate::fmt_http_date(later).parse().unwrap(),
        );
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait > Duration::from_secs(110) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    /// Counts what the sender reports.
    #[derive(Default)]
    struct Counted {
        delivered: std::sync::atomic::AtomicUsize,
        dead: std::sync::atomic::AtomicUsize,
    }

    impl Record for Counted {
        fn delivered(&self, _: &Delivery) {
            self.delivered
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        fn dead(&self, _: &Delivery, _: &super::super::DeadLetter) {
            self.dead.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn webhooks(max_age: Duration) -> Webhooks {
        Webhooks::new(
            vec![super::super::Endpoint {
                url: reqwest::Url::parse("http://127.0.0.1:9/h").unwrap(),
                secret: Arc::from(&b"s"[..]),
                events: vec![super::super::EventKind::Result],
                operations: Vec::new(),
                kinds: Vec::new(),
            }],
            super::super::Settings {
                max_age,
                ..Default::default()
            },
        )
    }

    /// A delivery of `session` made `age` ago, taken out to be sent.
    fn out(webhooks: &Webhooks, session: &str, age: Duration) -> Delivery {
        let key = super::super::Key {
            endpoint: 0,
            session: crate::model::SessionId::parse(session).unwrap(),
            op: None,
            event: super::super::EventKind::SessionEnd,
        };
        let created = SystemTime::now() - age;
        webhooks
            .outbox
            .offer(Delivery::new(key, 1, session.into(), "{}".into(), created));
        let (mut due, _) = webhooks.outbox.take_due(0, Instant::now(), 10);
        due.pop().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_tried_again_unless_the_next_try_falls_past_the_max_age() {
        let webhooks = webhooks(Duration::from_secs(60));
        let record = Counted::default();
        let retry = || Attempt::Retry {
            why: "503".into(),
            after: None,
        };
        // Its next try (half a second to a second away) is within the age.
        let young = out(&webhooks, "young", Duration::from_secs(30));
        settle(&webhooks, &record, young, retry());
        assert_eq!(webhooks.outbox.views(&webhooks.endpoints)[0].retried, 1);
        // Its next try (at least half a second away) would fall past it:
        // given up, and recorded so.
        let old = out(&webhooks, "old", Duration::from_millis(59_600));
        settle(&webhooks, &record, old, retry());
        let letters = webhooks.outbox.dead_letters();
        assert_eq!(letters.len(), 1);
        assert!(
            letters[0]
                .error
                .contains("given up: not delivered within 1m"),
            "{}",
            letters[0].error
        );
        assert_eq!(record.dead.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A refusal gives up at once, whatever the age; a 2xx is recorded.
        let refused = out(&webhooks, "refused", Duration::ZERO);
        settle(&webhooks, &record, refused, Attempt::Refused("404".into()));
        assert_eq!(record.dead.load(std::sync::atomic::Ordering::SeqCst), 2);
        let made = out(&webhooks, "made", Duration::ZERO);
        settle(&webhooks, &record, made, Attempt::Delivered);
        assert_eq!(
            record.delivered.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        assert_eq!(webhooks.outbox.views(&webhooks.endpoints)[0].delivered, 1);
    }
}
