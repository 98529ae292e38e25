//! For tests that drive the real binary from plain threads: a GET read
//! whole, and an axum app (a scripted peer) served on a thread of its own.
#![allow(dead_code)]

use std::time::Duration;

/// `url`'s status and body; `None` when it cannot be reached.
pub fn get(url: &str) -> Option<(u16, String)> {
    call("GET", url, None, None)
}

/// `method url`, with a bearer `token` and a `(content type, body)` when
/// given: the answer's status and body; `None` when it cannot be reached.
pub fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> Option<(u16, String)> {
    inflight::net::install_crypto();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let method = reqwest::Method::from_bytes(method.as_bytes()).ok()?;
        let mut request = reqwest::Client::new()
            .request(method, url)
            .timeout(Duration::from_secs(5));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, body)) = body {
            request = request
                .header("content-type", content_type)
                .body(body.to_string());
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.unwrap_or_default()))
    })
}

/// POSTs `body` to `url`; its answer as JSON, when it gives some.
pub fn post_json(url: &str, body: &str) -> Option<serde_json::Value> {
    inflight::net::install_crypto();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(url)
            .body(body.to_string())
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    })
}

/// `url`'s body as JSON, when it answers with some.
pub fn get_json(url: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&get(url)?.1).ok()
}

/// Serves `app` on a free loopback port from a thread of its own, for as
/// long as the test process lives; answers its base URL.
pub fn serve(app: axum::Router) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}
