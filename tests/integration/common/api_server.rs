//! An API server over a real loopback socket, on an engine whose runs take
//! long enough to be seen running; and the HTTP client the tests use.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use inflight::api::{self, ApiConfig};
use inflight::engine::{Engine, EngineConfig};
use inflight::llm::LatencyRange;
use inflight::llm::builtin::BuiltinBackend;
use inflight::state::{Policy, StateConfig};
use tokio_util::sync::CancellationToken;

pub struct Server {
    pub engine: Engine,
    pub base: String,
    pub addr: SocketAddr,
    _stop: tokio_util::sync::DropGuard,
}

pub async fn server(policy: Policy, token: Option<&str>) -> Server {
    let api = ApiConfig {
        token: token.map(str::to_string),
        ..Default::default()
    };
    server_with(policy, api).await
}

/// A server on a free loopback port with `api`'s other settings.
pub async fn server_with(policy: Policy, api: ApiConfig) -> Server {
    let config = EngineConfig {
        state: StateConfig {
            policy: inflight::ops::OpMap::filled_with(|_| policy),
            ..Default::default()
        },
        ..Default::default()
    };
    // Runs take long enough to be seen running.
    let engine = Engine::new(
        config,
        Arc::new(BuiltinBackend::new(LatencyRange::fixed(
            Duration::from_secs(30),
        ))),
    );
    serving(engine, api).await
}

/// The API of `engine` on a free loopback port with `api`'s other settings.
pub async fn serving(engine: Engine, api: ApiConfig) -> Server {
    let shutdown = CancellationToken::new();
    let addr = api::serve(
        engine.clone(),
        ApiConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..api
        },
        shutdown.clone(),
    )
    .await
    .expect("the API binds");
    Server {
        engine,
        base: format!("http://{addr}"),
        addr,
        _stop: shutdown.drop_guard(),
    }
}

pub fn http() -> reqwest::Client {
    inflight::net::http_client(reqwest::Client::builder()).expect("an HTTP client")
}

pub async fn get_text(url: &str) -> (u16, String) {
    let response = http().get(url).send().await.expect("request");
    (
        response.status().as_u16(),
        response.text().await.expect("body"),
    )
}
