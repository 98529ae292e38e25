//! The event task: `/ws?since=ID` held open, resumed after the last event
//! seen, waking the sync loop on each event.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{Api, Picture, REQUEST_TIMEOUT, backoff, lock};

/// The event task's state.
pub(super) struct Events {
    pub(super) api: Api,
    pub(super) picture: Arc<Mutex<Picture>>,
    pub(super) poke: Arc<Notify>,
}

impl Events {
    pub(super) async fn run(self) {
        let mut seen: u64 = 0;
        let mut failures = 0u32;
        loop {
            match self.listen(&mut seen).await {
                Ok(()) => failures = 0,
                Err(_) => failures += 1,
            }
            tokio::time::sleep(backoff(failures)).await;
        }
    }

    /// One connection to `/ws`, resumed after event `seen`, until it ends.
    pub(super) async fn listen(&self, seen: &mut u64) -> Result<(), String> {
        let ws_base = self
            .api
            .base
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1);
        let mut request = format!("{ws_base}/ws?since={seen}")
            .into_client_request()
            .map_err(|e| e.to_string())?;
        if let Some(token) = &self.api.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.headers_mut().insert("authorization", value);
        }
        let tls = crate::net::tls_client_config(None)?;
        let connecting = tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            false,
            Some(tokio_tungstenite::Connector::Rustls(tls)),
        );
        let (mut socket, _) = tokio::time::timeout(REQUEST_TIMEOUT, connecting)
            .await
            .map_err(|_| "no answer".to_string())?
            .map_err(|e| e.to_string())?;
        while let Some(message) = socket.next().await {
            let text = match message.map_err(|e| e.to_string())? {
                Message::Text(text) => text,
                Message::Close(_) => return Ok(()),
                _ => continue,
            };
            match serde_json::from_str::<Frame>(&text) {
                Ok(Frame::Resume(resume)) if resume.kind == "resume" => {
                    if resume.too_old {
                        // What was missed is gone: read the whole picture again.
                        lock(&self.picture).reload = true;
                    }
                    *seen = resume.next_id.saturating_sub(1);
                }
                Ok(Frame::Numbered { id }) => *seen = id,
                _ => {}
            }
            self.poke.notify_one();
        }
        Ok(())
    }
}

/// What attach reads of a `/ws` message: a resume, or any other message's
/// number.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Frame {
    Resume(crate::api::ws::ResumeJson),
    Numbered { id: crate::events::EventId },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_and_a_numbered_message_read_as_what_they_are() {
        let resume = r#"{"type":"resume","next_id":42,"too_old":true,"replayed":0}"#;
        match serde_json::from_str::<Frame>(resume) {
            Ok(Frame::Resume(resume)) => {
                assert_eq!(resume.kind, "resume");
                assert_eq!(resume.next_id, 42);
                assert!(resume.too_old);
            }
            _ => panic!("not read as a resume"),
        }
        let status =
            r#"{"type":"processing_status","data":{},"timestamp":"t","sessionId":"s","id":7}"#;
        assert!(matches!(
            serde_json::from_str::<Frame>(status),
            Ok(Frame::Numbered { id: 7 })
        ));
        // A plain stream's message carries no number: nothing to note.
        let plain = r#"{"type":"processing_status","data":{},"timestamp":"t","sessionId":"s"}"#;
        assert!(serde_json::from_str::<Frame>(plain).is_err());
    }
}
