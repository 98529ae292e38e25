//! `/readyz` on the real binary: 503 while its feed is down, 200 once the
//! feed is connected, 503 again when the feed goes away; `/healthz` stays
//! 200 throughout.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::net::TcpListener;

/// A free loopback port (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `/readyz` until it answers `status`; returns its body.
async fn readyz_becomes(api: &str, status: u16) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = reqwest::get(format!("{api}/readyz")).await
            && response.status().as_u16() == status
        {
            return response.json().await.expect("JSON");
        }
        assert!(Instant::now() < until, "/readyz never answered {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_feed_and_healthz_stays_up() {
    inflight::net::install_crypto();
    let (feed_port, api_port) = (free_port(), free_port());
    let api = format!("http://127.0.0.1:{api_port}");
    let _serve = Killed(
        Command::new(env!("CARGO_BIN_EXE_inflight"))
            .args(["serve", "--no-db", "--feed-idle-timeout", "2s"])
            .args(["--api", &format!("127.0.0.1:{api_port}")])
            .args(["--feed", &format!("ws://127.0.0.1:{feed_port}/")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts"),
    );

    // Nothing listens on the feed's port yet.
    let body = readyz_becomes(&api, 503).await;
    assert_eq!(body["ready"], false);
    assert_eq!(body["feeds_configured"], 1);
    assert!(
        body["not_ready"][0]
            .as_str()
            .unwrap()
            .starts_with("feeds: none of 1 connected"),
        "{body}"
    );
    assert_eq!(body["database"], "none");
    let health = reqwest::get(format!("{api}/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200, "alive, if not ready");

    // The feed comes up: ready.
    let listener = TcpListener::bind(("127.0.0.1", feed_port)).await.unwrap();
    let feed = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let _hello = ws.next().await;
        // Hold the connection until told to drop it.
        (ws, listener)
    });
    let (ws, listener) = feed.await.unwrap();
    let body = readyz_becomes(&api, 200).await;
    assert_eq!(
        (body["ready"].clone(), body["feeds_connected"].clone()),
        (true.into(), 1.into())
    );

    // The feed goes away and stays away: not ready again.
    drop(ws);
    drop(listener);
    let body = readyz_becomes(&api, 503).await;
    assert_eq!(body["feeds_connected"], 0);
    let health = reqwest::get(format!("{api}/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}
