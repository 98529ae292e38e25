//! `/metrics` as Prometheus reads it: a busy `serve`, with its database
//! and the Redis cluster on, scraped and checked by Prometheus' own
//! `promtool`: no lint problem (units in names, `_total` on counters, HELP
//! and TYPE on every family); scraped by a real Prometheus server, whose
//! query API gives the series back; and the example alerting rules in
//! `contrib/` pass `promtool check rules`, name only series that exist,
//! and load into that server.

use std::time::{Duration, Instant};

use crate::common::blocking::{get, get_json};
use crate::common::child::{Logged, field, fresh_dir, inflight as bin};
use crate::common::promtool::{Prometheus, check_metrics, check_rules};
use crate::common::redis_server::RedisServer;

fn rules_file() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/inflight.rules.yml")
}

#[test]
fn a_busy_servers_metrics_pass_promtool_and_a_real_prometheus_reads_them() {
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

    // The example rules: valid, and every inflight series they name is
    // one a busy server has.
    let rules = rules_file();
    let checked = check_rules(&rules);
    assert!(checked.status.success(), "{checked:?}");
    let written = std::fs::read_to_string(&rules).unwrap();
    let named: std::collections::BTreeSet<&str> = written
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("inflight_"))
        .collect();
    assert!(named.len() >= 5, "{named:?}");
    for series in named {
        assert!(
            text.contains(&format!("\n{series}{{")) || text.contains(&format!("\n{series} ")),
            "the rules name {series}, which /metrics does not have"
        );
    }

    // A real Prometheus scrapes it and gives the series back; the rules load.
    let prometheus = Prometheus::scraping(&api, &rules, &dir);
    let query = format!("{}/api/v1/query?query=inflight_runs_total", prometheus.url);
    let until = Instant::now() + Duration::from_secs(30);
    let runs = loop {
        let found = get_json(&query).and_then(|answer| {
            let series = answer["data"]["result"].as_array()?.clone();
            (!series.is_empty()).then_some(series)
        });
        if let Some(series) = found {
            break series;
        }
        assert!(
            Instant::now() < until,
            "Prometheus never had inflight_runs_total"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let ops: Vec<&str> = runs
        .iter()
        .filter_map(|s| s["metric"]["op"].as_str())
        .collect();
    assert!(
        ops.contains(&"summary") && ops.contains(&"mind_map"),
        "{runs:?}"
    );
    for series in &runs {
        assert_eq!(series["metric"]["job"], "inflight", "{series}");
        let value: f64 = series["value"][1].as_str().unwrap().parse().unwrap();
        assert!(value >= 1.0, "{series}");
    }
    let loaded = get_json(&format!("{}/api/v1/rules", prometheus.url)).expect("the rules API");
    let alerts: Vec<&str> = loaded["data"]["groups"][0]["rules"]
        .as_array()
        .expect("a group of rules")
        .iter()
        .filter_map(|rule| rule["name"].as_str())
        .collect();
    assert!(alerts.contains(&"InflightRedisUnreachable"), "{alerts:?}");
    assert_eq!(alerts.len(), 6, "{alerts:?}");
    serve.stop();
}
