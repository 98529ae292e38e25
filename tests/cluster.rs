//! The cluster protocol against a real Redis: one lease per (session, op)
//! across instances, fences that only grow, pending flags that outlive
//! their holder, results refused when older, and a Redis that goes away.

#[path = "common/redis.rs"]
mod redis_server;

use std::time::Duration;

use inflight::cluster::{Cluster, ClusterConfig, ClusterError, Finished, Start};
use inflight::model::{Operation, SessionId};
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

#[tokio::test]
async fn one_run_per_session_and_operation_across_instances() {
    let redis = RedisServer::start();
    let a = instance(&redis.url(), "a", Duration::from_secs(30));
    let b = instance(&redis.url(), "b", Duration::from_secs(30));
    let s = sid("s1");

    let first = started(a.try_start(&s, Operation::Summary).await.unwrap());
    // The other instance finds it held, and leaves a pending flag.
    let held = b.try_start(&s, Operation::Summary).await.unwrap();
    assert_eq!(
        held,
        Start::HeldElsewhere {
            holder: format!("a/{}", first.fence)
        }
    );
    assert_eq!(
        b.pending().await.unwrap(),
        [(s.clone(), Operation::Summary)]
    );
    // Another operation of the same session is free.
    started(b.try_start(&s, Operation::MindMap).await.unwrap());

    // The holder's finish hands the lease to one follow-up, with a new fence.
    let follow_up = match a.finish(&first).await.unwrap() {
        Finished::FollowUp(lease) => lease,
        other => panic!("{other:?}"),
    };
    assert!(follow_up.fence > first.fence);
    assert!(b.pending().await.unwrap().is_empty());
    assert!(matches!(
        b.try_start(&s, Operation::Summary).await.unwrap(),
        Start::HeldElsewhere { .. }
    ));
    // That pending flag goes to the follow-up's own follow-up, then free.
    let again = match a.finish(&follow_up).await.unwrap() {
        Finished::FollowUp(lease) => lease,
        other => panic!("{other:?}"),
    };
    assert_eq!(a.finish(&again).await.unwrap(), Finished::Released);
    let b_run = started(b.try_start(&s, Operation::Summary).await.unwrap());
    assert!(b_run.fence > again.fence, "fences only grow");
    // A finish with a lease that is not the holder's changes nothing.
    assert_eq!(a.finish(&again).await.unwrap(), Finished::Lost);
    assert!(!a.renew(&again).await.unwrap());
    assert!(b.renew(&b_run).await.unwrap());
}

#[tokio::test]
async fn results_are_fenced_wherever_they_come_from() {
    let redis = RedisServer::start();
    let a = instance(&redis.url(), "a", Duration::from_secs(30));
    let b = instance(&redis.url(), "b", Duration::from_secs(30));
    let s = sid("s1");
    assert!(
        a.put_result(&s, Operation::Summary, 5, "five")
            .await
            .unwrap()
    );
    assert!(
        !b.put_result(&s, Operation::Summary, 4, "four, late")
            .await
            .unwrap()
    );
    assert!(
        !b.put_result(&s, Operation::Summary, 5, "five again")
            .await
            .unwrap()
    );
    assert_eq!(
        a.result(&s, Operation::Summary).await.unwrap(),
        Some((5, "a".into(), "five".into()))
    );
    assert!(
        b.put_result(&s, Operation::Summary, 6, "six")
            .await
            .unwrap()
    );
    assert_eq!(
        a.result(&s, Operation::Summary).await.unwrap(),
        Some((6, "b".into(), "six".into()))
    );
}

#[tokio::test]
async fn a_dead_holders_lease_expires_and_its_pending_work_is_claimed() {
    let redis = RedisServer::start();
    let ttl = Duration::from_millis(300);
    let a = instance(&redis.url(), "a", ttl);
    let b = instance(&redis.url(), "b", ttl);
    let s = sid("s1");
    let dead = started(a.try_start(&s, Operation::Summary).await.unwrap());
    assert!(matches!(
        b.try_start(&s, Operation::Summary).await.unwrap(),
        Start::HeldElsewhere { .. }
    ));
    // While the lease lives, nobody claims it.
    assert_eq!(b.claim(&s, Operation::Summary).await.unwrap(), None);
    // `a` stops renewing (it died): the lease expires on Redis's clock.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let claimed = loop {
        if let Some(lease) = b.claim(&s, Operation::Summary).await.unwrap() {
            break lease;
        }
        assert!(std::time::Instant::now() < until, "the lease never expired");
        tokio::time::sleep(ttl / 3).await;
    };
    assert!(claimed.fence > dead.fence);
    assert!(b.pending().await.unwrap().is_empty());
    // The old holder learns it lost the lease, and its result is refused.
    assert!(!a.renew(&dead).await.unwrap());
    assert_eq!(a.finish(&dead).await.unwrap(), Finished::Lost);
    assert!(
        b.put_result(&s, Operation::Summary, claimed.fence, "new")
            .await
            .unwrap()
    );
    assert!(
        !a.put_result(&s, Operation::Summary, dead.fence, "late")
            .await
            .unwrap()
    );
    // Nothing pending: a claim takes nothing.
    assert_eq!(b.finish(&claimed).await.unwrap(), Finished::Released);
    assert_eq!(b.claim(&s, Operation::Summary).await.unwrap(), None);
}

#[tokio::test]
async fn without_redis_nothing_starts_and_it_says_so_then_recovers() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let a = instance(&redis.url(), "a", Duration::from_secs(30));
    let s = sid("s1");
    let lease = started(a.try_start(&s, Operation::Summary).await.unwrap());
    assert!(a.reachable());

    redis.kill();
    let refused = a.try_start(&s, Operation::MindMap).await;
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
    started(a.try_start(&s, Operation::Summary).await.unwrap());
}
