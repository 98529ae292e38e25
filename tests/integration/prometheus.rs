//! `/metrics` as Prometheus reads it: a busy `serve`, with its database
//! and the Redis cluster on, scraped and checked by Prometheus' own
//! `promtool`: no lint problem (units in names, `_total` on counters, HELP
//! and TYPE on every family).

use crate::common::blocking::get;
use crate::common::child::{Logged, field, fresh_dir, inflight as bin};
use crate::common::promtool::check_metrics;
use crate::common::redis_server::RedisServer;

#[test]
fn a_busy_servers_metrics_pass_promtools_checks() {
    let redis = RedisServer::start();
    let dir = fresh_dir("prometheus", "busy");
    let mut serve = Logged::spawn(
        bin()
            .args(["serve", "--api", "127.0.0.1:0", "--db"])
            .arg(dir.join("inflight.db"))
            .args(["--redis", &redis.url(), "--instance", "a"])
            .args(["--demo-speed", "8", "--simulate-latency", "100ms..300ms"]),
    );
    let api = field(&serve.wait_for("API listening"), "bound");
    // Runs ended, skipped and in flight: every family has series.
    serve.wait_for_nth("processing finished", 12);
    let (status, text) = get(&format!("http://{api}/metrics")).expect("a scrape");
    assert_eq!(status, 200, "{text}");
    for family in [
        "inflight_runs_total",
        "inflight_skipped_total",
        "inflight_cluster_redis_reachable",
        "inflight_cluster_runs_here",
    ] {
        assert!(text.contains(family), "no {family} in {text}");
    }
    let checked = check_metrics(&text);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(checked.status.success(), "promtool: {said}");
    assert_eq!(said.trim(), "", "promtool has nothing to say");

    // It does fail a text that breaks its rules: the check is real.
    let broken = "# TYPE inflight_things counter\ninflight_things 1\n";
    assert!(
        !check_metrics(broken).status.success(),
        "a counter without _total"
    );
    serve.stop();
}
