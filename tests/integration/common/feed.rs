//! A scripted feed for one client over a real WebSocket on loopback.
#![allow(dead_code)]

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A feed for one client: checks its hello, sends `frames`, then passes on
/// every text the client sends up, and "closed" when the client leaves.
pub async fn one_client_feed(
    frames: Vec<Message>,
) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (got, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let hello = ws.next().await.unwrap().unwrap();
        let hello: Value = serde_json::from_str(hello.to_text().unwrap()).unwrap();
        assert_eq!(hello["type"], "hello");
        for frame in frames {
            ws.send(frame).await.unwrap();
        }
        while let Some(Ok(message)) = ws.next().await {
            if let Ok(text) = message.to_text()
                && !text.is_empty()
            {
                let _ = got.send(text.to_string());
            }
        }
        let _ = got.send("closed".to_string());
    });
    (addr, received)
}

/// A feed for one client that the test drives: after the client's hello,
/// every message given to the returned sender goes out, in order.
pub async fn driven_feed() -> (SocketAddr, mpsc::UnboundedSender<Message>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (send, mut frames) = mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let _hello = ws.next().await;
        let (mut sink, mut incoming) = ws.split();
        // Read (and drop) what the client sends up, so it never blocks.
        tokio::spawn(async move { while let Some(Ok(_)) = incoming.next().await {} });
        while let Some(frame) = frames.recv().await {
            if sink.send(frame).await.is_err() {
                return;
            }
        }
    });
    (addr, send)
}
