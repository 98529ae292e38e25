//! The cluster protocol against a real Redis: one lease per (session, op)
//! across instances, fences that only grow, pending requests that outlive
//! their holder, results kept only from the current run, the events
//! stream, and a Redis that goes away.

use crate::common::redis_server;

use std::time::Duration;

use inflight::cluster::events::EventKind;
use inflight::cluster::{
    Cluster, ClusterConfig, ClusterError, Ending, Finished, Holder, Reserved, RunEnd, Start,
};
use inflight::llm::Usage;
use inflight::model::{Operation, SessionId};
use inflight::spend::{Budget, Budgets, Cost};
use redis_server::RedisServer;

fn instance(redis: &str, name: &str, ttl: Duration) -> Cluster {
    Cluster::connect(ClusterConfig {
        url: redis.to_string(),
        prefix: "test:".into(),
        lease_ttl: ttl,
        instance: name.into(),
    })
    .expect("a cluster handle")
}

fn sid(raw: &str) -> SessionId {
    SessionId::parse(raw).unwrap()
}

fn started(start: Start) -> inflight::cluster::Lease {
    match start {
        Start::Started(lease) => lease,
        other => panic!("expected to start, got {other:?}"),
    }
}

fn ending(covered: u64) -> Ending<'static> {
    Ending {
        covered_generation: covered,
        outcome: "ok",
        error: None,
    }
}

fn room(reserved: Reserved) -> inflight::cluster::Reservation {
    match reserved {
        Reserved::Room(reservation) => reservation,
        other => panic!("expected room, got {other:?}"),
    }
}

fn spent(reserved: Reserved) -> Budget {
    match reserved {
        Reserved::Spent(budget) => budget,
        other => panic!("expected a spent budget, got {other:?}"),
    }
}

#[tokio::test]
async fn budgets_are_shared_checked_and_counted_in_one_step_and_fenced() {
    let redis = RedisServer::start();
    let a = instance(&redis.url(), "a", Duration::from_secs(30));
    let b = instance(&redis.url(), "b", Duration::from_secs(30));
    let budgets = Budgets {
        session_tokens: Some(1_000),
        feed_tokens_per_hour: Some(1_500),
        cost_per_hour: Some(Cost(10_000)),
        ..Budgets::default()
    };
    let (s1, s2, s3) = (sid("s1"), sid("s2"), sid("s3"));
    let feed = Some("ws://feed/");
    let priced = |tokens, nanos| Usage {
        cost: Cost(nanos),
        ..Usage::tokens(tokens, 0)
    };
    let on_a = started(a.try_start(&s1, Operation::SUMMARY, 1).await.unwrap());
    let on_b = started(b.try_start(&s1, Operation::MIND_MAP, 1).await.unwrap());
    // Two instances' calls of one session share its budget: 600 + 400 fit
    // exactly, one token more does not.
    let first = room(
        a.reserve(&on_a, feed, priced(600, 1_000), &budgets, false)
            .await
            .unwrap(),
    );
    room(
        b.reserve(&on_b, feed, priced(400, 1_000), &budgets, false)
            .await
            .unwrap(),
    );
    assert_eq!(
        spent(
            a.reserve(&on_a, feed, priced(1, 0), &budgets, false)
                .await
                .unwrap()
        ),
        Budget::SessionTokens
    );
    // A call that spent less than its estimate gives the rest back.
    a.settle(&first, priced(500, 1_000)).await.unwrap();
    assert_eq!(
        redis.hget("test:spent:session:s1", "t").as_deref(),
        Some("900")
    );
    room(
        a.reserve(&on_a, feed, priced(100, 0), &budgets, false)
            .await
            .unwrap(),
    );
    // A raise on any instance holds on every one: 1 000 spent, 50 more.
    b.raise_budget(&s1, Usage::tokens(50, 0)).await.unwrap();
    assert_eq!(
        spent(
            a.reserve(&on_a, feed, priced(51, 0), &budgets, false)
                .await
                .unwrap()
        ),
        Budget::SessionTokens
    );
    room(
        a.reserve(&on_a, feed, priced(50, 0), &budgets, false)
            .await
            .unwrap(),
    );
    // A lift on any instance holds on every one, for that session only.
    b.lift_budget(&s1).await.unwrap();
    room(
        a.reserve(&on_a, feed, priced(200, 0), &budgets, false)
            .await
            .unwrap(),
    );
    let s4_lease = started(
        a.try_start(&sid("s4"), Operation::SUMMARY, 1)
            .await
            .unwrap(),
    );
    assert_eq!(
        spent(
            a.reserve(
                &s4_lease,
                Some("ws://fourth/"),
                priced(1_001, 0),
                &budgets,
                false
            )
            .await
            .unwrap()
        ),
        Budget::SessionTokens,
        "another session's budget still holds"
    );
    // A call whose tokens were as estimated but whose price was not.
    let priced_call = room(
        a.reserve(
            &s4_lease,
            Some("ws://fourth/"),
            priced(10, 100),
            &budgets,
            false,
        )
        .await
        .unwrap(),
    );
    a.settle(&priced_call, priced(10, 300)).await.unwrap();
    assert_eq!(
        redis.hget("test:spent:session:s4", "c").as_deref(),
        Some("300")
    );
    // The feed's hour: 1 250 counted so far; another session of that feed
    // finds 250 left, one of another feed the whole hour.
    let s2_lease = started(b.try_start(&s2, Operation::SUMMARY, 1).await.unwrap());
    assert_eq!(
        spent(
            b.reserve(&s2_lease, feed, priced(251, 0), &budgets, false)
                .await
                .unwrap()
        ),
        Budget::FeedTokensPerHour
    );
    room(
        b.reserve(
            &s2_lease,
            Some("ws://other/"),
            priced(900, 0),
            &budgets,
            false,
        )
        .await
        .unwrap(),
    );
    // Everything's hour, in money: 2 300 billionths spent of 10 000.
    // An hour-old minute counts nothing, and is swept at the next count.
    redis.hset("test:spent:all", "c1", "1000000");
    redis.hset("test:spent:all", "swept", "1");
    let s3_lease = started(a.try_start(&s3, Operation::SUMMARY, 1).await.unwrap());
    assert_eq!(
        spent(
            a.reserve(&s3_lease, None, priced(1, 7_701), &budgets, false)
                .await
                .unwrap()
        ),
        Budget::CostPerHour
    );
    room(
        a.reserve(&s3_lease, None, priced(1, 7_700), &budgets, false)
            .await
            .unwrap(),
    );
    assert_eq!(redis.hget("test:spent:all", "c1"), None, "swept");
    // A run a later run superseded counts nothing.
    a.finish(&on_a, ending(1)).await.unwrap();
    let later = started(b.try_start(&s1, Operation::SUMMARY, 2).await.unwrap());
    assert!(matches!(
        a.reserve(&on_a, feed, priced(1, 0), &budgets, false)
            .await
            .unwrap(),
        Reserved::Superseded
    ));
    assert!(later.fence > on_a.fence);
}

#[tokio::test]
async fn one_run_per_session_and_operation_across_instances() {
    let redis = RedisServer::start();
    let a = instance(&redis.url(), "a", Duration::from_secs(30));
    let b = instance(&redis.url(), "b", Duration::from_secs(30));
    let s = sid("s1");
    let summary = Operation::SUMMARY;

    let first = started(a.try_start(&s, summary, 3).await.unwrap());
    // The other instance finds it held, and leaves a pending request.
    let held = b.try_start(&s, summary, 3).await.unwrap();
    assert_eq!(
        held,
        Start::HeldElsewhere(Holder {
            instance: "a".into(),
            fence: first.fence
        })
    );
    assert_eq!(b.pending().await.unwrap(), [(s.clone(), summary)]);
    // Another operation of the same session is free.
    started(b.try_start(&s, Operation::MIND_MAP, 3).await.unwrap());
    // While the lease is held, the request is nobody's to take.
    assert_eq!(b.abandoned(&s, summary).await.unwrap(), None);

    // The run covered what the request asked for: released, nothing more.
    assert_eq!(
        a.finish(&first, ending(3)).await.unwrap(),
        Finished::Released
    );
    assert!(b.pending().await.unwrap().is_empty());

    // A request for a generation the run did not read: more is wanted, and
    // the flag stays for whoever runs next.
    let second = started(b.try_start(&s, summary, 4).await.unwrap());
    assert!(second.fence > first.fence, "fences only grow");
    assert!(matches!(
        a.try_start(&s, summary, 6).await.unwrap(),
        Start::HeldElsewhere(_)
    ));
    // A lower request does not lower the flag.
    assert!(matches!(
        a.try_start(&s, summary, 5).await.unwrap(),
        Start::HeldElsewhere(_)
    ));
    assert_eq!(
        b.finish(&second, ending(5)).await.unwrap(),
        Finished::MoreWanted
    );
    assert_eq!(b.abandoned(&s, summary).await.unwrap(), Some(6));
    let third = started(a.try_start(&s, summary, 6).await.unwrap());
    assert_eq!(
        b.look(&s, summary).await.unwrap().last_end.map(|e| e.fence),
        Some(second.fence)
    );
    assert_eq!(
        a.finish(&third, ending(6)).await.unwrap(),
        Finished::Released
    );
    // The end is kept beside the lease: a follower finding the lease gone
    // knows the run ended (its holder did not die).
    let look = b.look(&s, summary).await.unwrap();
    assert_eq!(look.holder, None);
    assert_eq!(
        look.last_end,
        Some(RunEnd {
            fence: third.fence,
            instance: "a".into(),
            outcome: "ok".into(),
            covered_generation: 6,
            error: None
        })
    );
    assert_eq!(a.abandoned(&s, summary).await.unwrap(), None);

    // A finish or renewal of a run a later one replaced changes nothing.
    let b_run = started(b.try_start(&s, summary, 6).await.unwrap());
    assert_eq!(a.finish(&third, ending(6)).await.unwrap(), Finished::Lost);
    assert!(!a.renew(&third).await.unwrap());
    assert!(b.renew(&b_run).await.unwrap());
    assert_eq!(
        a.look(&s, summary).await.unwrap().holder.map(|(h, _)| h),
        Some(Holder {
            instance: "b".into(),
            fence: b_run.fence
        })
    );
}

#[tokio::test]
async fn results_are_kept_only_from_the_current_run_and_reach_every_instance() {
    let redis = RedisServer::start();
    let a = instance(&redis.url(), "a", Duration::from_secs(30));
    let b = instance(&redis.url(), "b", Duration::from_secs(30));
    let s = sid("s1");
    let head = b.events_head().await.unwrap();
    let old = started(a.try_start(&s, Operation::SUMMARY, 1).await.unwrap());
    assert!(a.put_result(&old, "one").await.unwrap());
    assert!(!a.put_result(&old, "one again").await.unwrap(), "not newer");
    assert_eq!(a.finish(&old, ending(1)).await.unwrap(), Finished::Released);
    let new = started(b.try_start(&s, Operation::SUMMARY, 2).await.unwrap());
    // A late result of a run a later one replaced is refused, wherever it
    // comes from, even before the later run has a result.
    assert!(!a.put_result(&old, "late").await.unwrap());
    assert!(b.put_result(&new, "two").await.unwrap());
    assert_eq!(
        a.result(&s, Operation::SUMMARY).await.unwrap(),
        Some((new.fence, "b".into(), "two".into()))
    );

    // Every kept result and every end went on the stream, in order.
    let (_, events) = b.read_events(&head).await.unwrap();
    let seen: Vec<(String, u64, EventKind)> = events
        .into_iter()
        .map(|e| (e.instance, e.fence, e.kind))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "a".into(),
                old.fence,
                EventKind::Result { body: "one".into() }
            ),
            (
                "a".into(),
                old.fence,
                EventKind::Finished {
                    outcome: "ok".into(),
                    covered_generation: 1,
                    error: None
                }
            ),
            (
                "b".into(),
                new.fence,
                EventKind::Result { body: "two".into() }
            ),
        ]
    );
}

#[tokio::test]
async fn a_dead_holders_lease_expires_and_its_pending_work_is_free() {
    let redis = RedisServer::start();
    // Long enough that the checks made while it lives come before it
    // lapses, also on a loaded machine; Redis's clock cannot be paused.
    let ttl = Duration::from_secs(2);
    let a = instance(&redis.url(), "a", ttl);
    let b = instance(&redis.url(), "b", ttl);
    let s = sid("s1");
    let dead = started(a.try_start(&s, Operation::SUMMARY, 1).await.unwrap());
    assert!(matches!(
        b.try_start(&s, Operation::SUMMARY, 2).await.unwrap(),
        Start::HeldElsewhere(_)
    ));
    // While the lease lives, the work is not abandoned.
    assert_eq!(b.abandoned(&s, Operation::SUMMARY).await.unwrap(), None);
    let (_, left) = b
        .look(&s, Operation::SUMMARY)
        .await
        .unwrap()
        .holder
        .unwrap();
    assert!(left <= ttl && left > Duration::ZERO, "{left:?}");
    // `a` stops renewing (it died): the lease expires on Redis's clock.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while b.abandoned(&s, Operation::SUMMARY).await.unwrap() != Some(2) {
        assert!(std::time::Instant::now() < until, "the lease never expired");
        tokio::time::sleep(ttl / 3).await;
    }
    // A lapsed lease nobody took is taken back by its renewal.
    assert!(a.renew(&dead).await.unwrap());
    assert_eq!(b.abandoned(&s, Operation::SUMMARY).await.unwrap(), None);
    // Once another run started, the old holder can neither renew, finish
    // nor keep a result.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let taken = loop {
        match b.try_start(&s, Operation::SUMMARY, 2).await.unwrap() {
            Start::Started(lease) => break lease,
            Start::HeldElsewhere(_) => {
                assert!(
                    std::time::Instant::now() < until,
                    "the lease never lapsed again"
                );
                tokio::time::sleep(ttl / 3).await;
            }
        }
    };
    assert!(taken.fence > dead.fence);
    assert!(!a.renew(&dead).await.unwrap());
    assert_eq!(a.finish(&dead, ending(1)).await.unwrap(), Finished::Lost);
    assert!(!a.put_result(&dead, "late").await.unwrap());
    assert_eq!(
        b.finish(&taken, ending(2)).await.unwrap(),
        Finished::Released
    );
    assert!(b.pending().await.unwrap().is_empty());
}

#[tokio::test]
async fn without_redis_nothing_starts_and_it_says_so_then_recovers() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let a = instance(&redis.url(), "a", Duration::from_secs(30));
    let s = sid("s1");
    let lease = started(a.try_start(&s, Operation::SUMMARY, 1).await.unwrap());
    assert!(a.reachable());

    redis.kill();
    let refused = a.try_start(&s, Operation::MIND_MAP, 1).await;
    assert!(
        matches!(refused, Err(ClusterError::Unreachable(_))),
        "{refused:?}"
    );
    assert!(!a.reachable());
    assert!(a.last_error().is_some());
    assert!(matches!(
        a.renew(&lease).await,
        Err(ClusterError::Unreachable(_))
    ));

    // Back, empty (no persistence): the manager reconnects, the old lease
    // is gone, so its run must stop, and work starts afresh.
    let _redis = RedisServer::on(port);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while a.ping().await.is_err() {
        assert!(std::time::Instant::now() < until, "never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(a.reachable());
    assert!(!a.renew(&lease).await.unwrap(), "the old lease is gone");
    let again = started(a.try_start(&s, Operation::SUMMARY, 1).await.unwrap());
    assert!(
        again.fence > lease.fence,
        "fences never repeat, even after Redis lost its counters"
    );
}
