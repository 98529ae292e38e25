//! `/metrics`: Prometheus text, through the `prometheus-client` crate.
//!
//! Counters and gauges are read from an engine snapshot at scrape time, so
//! they always equal what the engine and the dashboard show. Histograms of
//! run duration and of queue wait (admission to LLM permit) are filled from
//! the event stream by [`Metrics::record_events`].

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::engine::Engine;
use crate::events::{Event, Outcome, RunId};
use crate::model::Operation;
use crate::state::OpCounters;

type OpLabels = Vec<(String, String)>;

fn op_labels(op: Operation) -> OpLabels {
    vec![("op".to_string(), op.as_str().to_string())]
}

fn duration_buckets() -> impl Iterator<Item = f64> {
    [
        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
    ]
    .into_iter()
}

/// The registry behind `/metrics`.
pub struct Metrics {
    registry: Registry,
    run_seconds: Family<OpLabels, Histogram>,
    queue_wait_seconds: Family<OpLabels, Histogram>,
}

impl Metrics {
    pub fn new(engine: Engine) -> Arc<Self> {
        let mut registry = Registry::with_prefix("inflight");
        let run_seconds = Family::<OpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(duration_buckets())
        });
        let queue_wait_seconds = Family::<OpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(duration_buckets())
        });
        registry.register(
            "run_duration_seconds",
            "How long runs took, admission to end",
            run_seconds.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "How long admitted runs waited for an LLM permit",
            queue_wait_seconds.clone(),
        );
        registry.register_collector(Box::new(EngineCollector { engine }));
        Arc::new(Self {
            registry,
            run_seconds,
            queue_wait_seconds,
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Fills the histograms from the engine's events until the bus closes.
    pub async fn record_events(self: Arc<Self>, engine: Engine) {
        let mut events = engine.subscribe();
        let mut queued_at: HashMap<RunId, Instant> = HashMap::new();
        loop {
            match events.recv().await {
                Ok(Event::OpQueued { run_id, .. }) => {
                    queued_at.insert(run_id, Instant::now());
                }
                Ok(Event::OpStarted { op, run_id, .. }) => {
                    if let Some(at) = queued_at.remove(&run_id) {
                        self.queue_wait_seconds
                            .get_or_create(&op_labels(op))
                            .observe(at.elapsed().as_secs_f64());
                    }
                }
                Ok(Event::OpFinished {
                    op,
                    run_id,
                    duration,
                    ..
                }) => {
                    queued_at.remove(&run_id);
                    self.run_seconds
                        .get_or_create(&op_labels(op))
                        .observe(duration.as_secs_f64());
                }
                Ok(_) => {}
                // Missed events only thin the histograms; counters come from snapshots.
                Err(RecvError::Lagged(_)) => queued_at.clear(),
                Err(RecvError::Closed) => return,
            }
        }
    }
}

/// Reads counters and gauges from an engine snapshot on every scrape.
struct EngineCollector {
    engine: Engine,
}

impl std::fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineCollector")
    }
}

fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(OpLabels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric =
        encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (labels, value) in series {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(OpLabels, i64)],
) -> Result<(), std::fmt::Error> {
    let mut metric =
        encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
    for (labels, value) in series {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // The held sessions come added up, not as the dashboard's rows.
        let (snapshot, tally) = self.engine.scrape();
        // Counters come from the process's lifetime counts, not from the
        // sessions held: forgetting a session never makes them fall.
        let per_op = |f: &dyn Fn(&OpCounters) -> u64| -> Vec<(OpLabels, u64)> {
            crate::ops::registry()
                .ops()
                .map(|op| {
                    let counts = snapshot.lifetime.get(op).copied().unwrap_or_default();
                    (op_labels(op), f(&counts))
                })
                .collect()
        };
        counter_family(
            &mut encoder,
            "runs",
            "Runs admitted, follow-ups included",
            &per_op(&|o| o.runs),
        )?;
        counter_family(
            &mut encoder,
            "skipped",
            "Requests refused because the operation was running",
            &per_op(&|o| o.skipped),
        )?;
        counter_family(
            &mut encoder,
            "follow_up_runs",
            "Runs started by a pending flag",
            &per_op(&|o| o.follow_ups),
        )?;
        counter_family(
            &mut encoder,
            "nothing_new_runs",
            "Runs that found nothing said since the result they would update, and made no call",
            &per_op(&|o| o.nothing_new),
        )?;
        counter_family(
            &mut encoder,
            "truncated_answers",
            "Answers the LLM server cut at the token limit, kept marked truncated",
            &per_op(&|o| o.truncated),
        )?;
        counter_family(
            &mut encoder,
            "run_retries",
            "Runs started again after a failed one left transcripts uncovered",
            &per_op(&|o| o.retries),
        )?;
        let stale: Vec<(OpLabels, i64)> = tally
            .ops
            .iter()
            .zip(&tally.stale)
            .map(|(op, n)| (op_labels(*op), i64::try_from(*n).unwrap_or(i64::MAX)))
            .collect();
        gauge_family(
            &mut encoder,
            "stale_operations",
            "Held sessions whose operation failed past its retries with transcripts uncovered",
            &stale,
        )?;
        // Every budget has its series, 0 when none stops a session; one
        // pass over the sessions.
        let over_budget: Vec<(OpLabels, i64)> = crate::spend::Budget::ALL
            .iter()
            .zip(tally.over_budget)
            .map(|(budget, n)| {
                let labels = vec![("budget".into(), budget.as_str().into())];
                (labels, i64::try_from(n).unwrap_or(i64::MAX))
            })
            .collect();
        gauge_family(
            &mut encoder,
            "sessions_over_budget",
            "Held sessions whose last run a budget stopped, by budget",
            &over_budget,
        )?;
        let mut tokens = Vec::new();
        for op in crate::ops::registry().ops() {
            let counts = &snapshot.lifetime[op];
            for (kind, n) in [
                ("prompt", counts.prompt_tokens),
                ("completion", counts.completion_tokens),
                ("cached", counts.cached_tokens),
            ] {
                let mut labels = op_labels(op);
                labels.push(("kind".into(), kind.into()));
                tokens.push((labels, n));
            }
        }
        counter_family(
            &mut encoder,
            "llm_tokens",
            "Tokens the LLM calls cost, as the servers counted them (estimated for builtin)",
            &tokens,
        )?;
        // A gauge, not a counter: the series goes when the session is
        // forgotten; the per-operation totals above never fall. Written
        // straight from the snapshot with borrowed labels: a series per
        // session, operation and kind is tens of thousands at scale, and
        // owned labels for each made a scrape cost megabytes.
        {
            let mut metric = encoder.encode_descriptor(
                "session_llm_tokens",
                "Tokens each held session's operation has cost so far",
                None,
                ConstGauge::new(0i64).metric_type(),
            )?;
            for (id, tokens) in tally.sessions() {
                for (op, [prompt, completion]) in tally.ops.iter().zip(tokens) {
                    for (kind, n) in [("prompt", *prompt), ("completion", *completion)] {
                        let labels = [
                            ("session_id", id.as_str()),
                            ("op", op.as_str()),
                            ("kind", kind),
                        ];
                        ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
                            .encode(metric.encode_family(&labels)?)?;
                    }
                }
            }
        }
        {
            let mut metric = encoder.encode_descriptor(
                "permit_wait_seconds",
                "Time runs spent waiting for an LLM permit, in all",
                None,
                ConstCounter::new(0f64).metric_type(),
            )?;
            for op in crate::ops::registry().ops() {
                let waited = snapshot.lifetime[op].waited.as_secs_f64();
                ConstCounter::new(waited).encode(metric.encode_family(&op_labels(op))?)?;
            }
        }
        if !snapshot.currency.is_empty() {
            let mut metric = encoder.encode_descriptor(
                "llm_cost",
                &format!(
                    "What the LLM calls cost at the config file's prices, in {}, per operation \
                     and feed (feed=\"none\": sessions no feed brought)",
                    snapshot.currency
                ),
                None,
                ConstCounter::new(0f64).metric_type(),
            )?;
            for op in crate::ops::registry().ops() {
                let mut fed = crate::spend::Cost::ZERO;
                for feed in &snapshot.feeds {
                    let cost = feed
                        .by_op
                        .get(op)
                        .map_or(crate::spend::Cost::ZERO, |u| u.cost);
                    fed = fed.plus(cost);
                    let feed = feed.index.to_string();
                    let labels = [("op", op.as_str()), ("feed", feed.as_str())];
                    ConstCounter::new(cost.units()).encode(metric.encode_family(&labels)?)?;
                }
                let rest = snapshot.lifetime[op].cost.0.saturating_sub(fed.0);
                let labels = [("op", op.as_str()), ("feed", "none")];
                ConstCounter::new(crate::spend::Cost(rest).units())
                    .encode(metric.encode_family(&labels)?)?;
            }
        }
        let mut finished = Vec::new();
        for op in crate::ops::registry().ops() {
            for outcome in [
                Outcome::Ok,
                Outcome::Failed,
                Outcome::TimedOut,
                Outcome::Cancelled,
            ] {
                let total = snapshot.lifetime[op].finished(outcome);
                let mut labels = op_labels(op);
                labels.push(("outcome".into(), outcome.as_str().into()));
                finished.push((labels, total));
            }
        }
        counter_family(
            &mut encoder,
            "runs_finished",
            "Runs ended, by outcome",
            &finished,
        )?;
        counter_family(
            &mut encoder,
            "transcripts",
            "Final transcripts ingested",
            &[(Vec::new(), snapshot.totals.transcripts)],
        )?;

        let mut in_flight = Vec::new();
        for (i, op) in tally.ops.iter().enumerate() {
            for (n, name) in [(tally.queued[i], "queued"), (tally.running[i], "running")] {
                let mut labels = op_labels(*op);
                labels.push(("phase".into(), name.into()));
                in_flight.push((labels, i64::try_from(n).unwrap_or(i64::MAX)));
            }
        }
        gauge_family(
            &mut encoder,
            "in_flight",
            "Runs in flight, by phase",
            &in_flight,
        )?;
        gauge_family(
            &mut encoder,
            "llm_permits_in_use",
            "LLM calls running now",
            &[(Vec::new(), snapshot.permits_in_use as i64)],
        )?;
        gauge_family(
            &mut encoder,
            "llm_permits",
            "Most LLM calls at once",
            &[(Vec::new(), snapshot.permits_cap as i64)],
        )?;
        gauge_family(
            &mut encoder,
            "llm_permits_limit",
            "LLM calls at once in effect, as learnt from the server's failures",
            &[(Vec::new(), snapshot.permits_limit as i64)],
        )?;
        gauge_family(
            &mut encoder,
            "sessions",
            "Sessions known",
            &[(Vec::new(), tally.ids.len() as i64)],
        )?;
        let mut states: HashMap<&'static str, i64> = [
            "listening",
            "connecting",
            "connected",
            "backing off",
            "closed",
        ]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
        for feed in &snapshot.feeds {
            *states.entry(feed.state.word()).or_insert(0) += 1;
        }
        let mut feed_states: Vec<(OpLabels, i64)> = states
            .into_iter()
            .map(|(state, n)| (vec![("state".to_string(), state.replace(' ', "_"))], n))
            .collect();
        feed_states.sort();
        gauge_family(
            &mut encoder,
            "feeds",
            "Feeds by connection state",
            &feed_states,
        )?;
        let feed_counter = |f: &dyn Fn(&crate::engine::FeedView) -> u64| -> Vec<(OpLabels, u64)> {
            snapshot
                .feeds
                .iter()
                .map(|feed| (vec![("feed".to_string(), feed.index.to_string())], f(feed)))
                .collect()
        };
        counter_family(
            &mut encoder,
            "feed_messages",
            "Frames received per feed",
            &feed_counter(&|f| f.messages),
        )?;
        counter_family(
            &mut encoder,
            "feed_bad_frames",
            "Frames refused per feed",
            &feed_counter(&|f| f.bad_frames),
        )?;
        counter_family(
            &mut encoder,
            "feed_sessions_refused",
            "New sessions refused per feed because the most sessions were held",
            &feed_counter(&|f| f.refused_sessions),
        )?;
        counter_family(
            &mut encoder,
            "feed_database_waits",
            "Times a feed stopped reading to wait for the database's writer",
            &feed_counter(&|f| f.database_waits),
        )?;
        gauge_family(
            &mut encoder,
            "max_sessions",
            "The most sessions held at once",
            &[(Vec::new(), snapshot.max_sessions as i64)],
        )?;
        if let Some(cluster) = &snapshot.cluster {
            cluster_families(&mut encoder, cluster)?;
        }
        if !snapshot.webhooks.is_empty() {
            webhook_families(&mut encoder, &snapshot.webhooks)?;
        }
        Ok(())
    }
}

/// The webhooks' series, labelled by endpoint (its URL, secrets hidden).
fn webhook_families(
    encoder: &mut DescriptorEncoder,
    endpoints: &[crate::webhooks::EndpointView],
) -> Result<(), std::fmt::Error> {
    type Pick = fn(&crate::webhooks::EndpointView) -> u64;
    let counters: [(&str, &str, Pick); 6] = [
        (
            "webhook_delivered",
            "Deliveries the receiver took (2xx)",
            |e| e.delivered,
        ),
        (
            "webhook_failed",
            "Attempts that failed, each retry's too",
            |e| e.failed,
        ),
        (
            "webhook_retried",
            "Failed attempts put back to be tried again",
            |e| e.retried,
        ),
        (
            "webhook_superseded",
            "Deliveries dropped because a newer one of the same session and operation came first",
            |e| e.superseded,
        ),
        ("webhook_dead", "Deliveries given up (dead letters)", |e| {
            e.dead
        }),
        (
            "webhook_overflow",
            "Deliveries refused because the outbox was full",
            |e| e.overflow,
        ),
    ];
    let labels = |e: &crate::webhooks::EndpointView| vec![("endpoint".to_string(), e.url.clone())];
    for (name, help, pick) in counters {
        let series: Vec<(OpLabels, u64)> = endpoints.iter().map(|e| (labels(e), pick(e))).collect();
        counter_family(encoder, name, help, &series)?;
    }
    let pending: Vec<(OpLabels, i64)> = endpoints
        .iter()
        .map(|e| (labels(e), e.pending as i64))
        .collect();
    gauge_family(
        encoder,
        "webhook_pending",
        "Deliveries waiting or in flight",
        &pending,
    )?;
    let oldest: Vec<(OpLabels, i64)> = endpoints
        .iter()
        .map(|e| (labels(e), e.oldest_pending_seconds.unwrap_or(0.0) as i64))
        .collect();
    gauge_family(
        encoder,
        "webhook_oldest_pending_seconds",
        "Age of the oldest delivery waiting, in whole seconds (0: none)",
        &oldest,
    )
}

/// The cluster's series, with `--redis`: whether Redis answers, and what
/// the leases did here. `inflight_runs_total` counts the runs this instance
/// saw, wherever they ran; `cluster_runs_here` those it made the calls of.
fn cluster_families(
    encoder: &mut DescriptorEncoder,
    cluster: &crate::engine::ClusterView,
) -> Result<(), std::fmt::Error> {
    let labels = vec![("instance".to_string(), cluster.instance.clone())];
    gauge_family(
        encoder,
        "cluster_redis_reachable",
        "1 when the last Redis call was answered; 0: no run starts here",
        &[(labels.clone(), i64::from(cluster.reachable))],
    )?;
    let counts = cluster.counts;
    for (name, help, value) in [
        (
            "cluster_runs_here",
            "Runs that took their lease here and called the LLM",
            counts.ran_here,
        ),
        (
            "cluster_runs_followed",
            "Runs that found their lease held and followed another instance's run",
            counts.followed,
        ),
        (
            "cluster_takeovers",
            "Runs that took over work whose holder stopped renewing its lease",
            counts.takeovers,
        ),
        (
            "cluster_leases_lost",
            "Runs stopped because their lease was lost or could not be renewed",
            counts.lost_leases,
        ),
        (
            "cluster_results_refused",
            "Results refused by their fence: a later run had started",
            counts.refused_results,
        ),
        (
            "cluster_results_from_others",
            "Results made by other instances and stored here",
            counts.results_from_others,
        ),
        (
            "cluster_numbering_mismatches",
            "Sessions another instance counts more transcripts of (it heard the feed from an earlier point)",
            counts.numbering_mismatches,
        ),
        (
            "cluster_refused_unreachable",
            "Runs that could not start because Redis was unreachable",
            counts.refused_unreachable,
        ),
    ] {
        counter_family(encoder, name, help, &[(labels.clone(), value)])?;
    }
    Ok(())
}
