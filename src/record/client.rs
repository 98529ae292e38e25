//! `inflight record --from URL`: a running server recorded from outside,
//! over its API's live stream of records (`GET /api/recording`), into a
//! file written as `--record` writes one (rotated, bounded).
//!
//! The connection is held open and made again, after a pause that grows
//! to 10 s, when it drops (the log says so; what happened meanwhile is not
//! in the file). Each connection opens with the server's header: the same
//! one again goes on in the same segment; a server started again gives a
//! new header, and the file a new segment.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

use super::{Record, RecordOptions, Recorder};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What recording from outside did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    pub records: u64,
    pub connections: u64,
    /// Lines from the server that were not records (counted, skipped).
    pub unreadable: u64,
}

/// Records the server at `base` (`http://host:8787`) into `options`' file
/// until `stop`. An error only when nothing could be recorded at all (the
/// file cannot be written); a server that is down is waited for, and said
/// so in the log.
pub async fn record_from(
    base: &str,
    token: Option<&str>,
    options: RecordOptions,
    stop: CancellationToken,
) -> Result<Recorded, String> {
    let mut recorder: Option<Recorder> = None;
    let mut header: Option<Record> = None;
    let mut done = Recorded::default();
    let mut failures = 0u32;
    loop {
        let session = tokio::select! {
            _ = stop.cancelled() => break,
            ended = listen(base, token, &mut recorder, &options, &mut header, &mut done) => ended,
        };
        match session {
            Ok(()) => failures = 0,
            Err(Fatal(why)) => {
                if let Some(recorder) = &recorder {
                    recorder.close(Duration::from_secs(10));
                }
                return Err(why);
            }
            Err(Retry(why)) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(server = %base, failures, "cannot record: {why}; trying again");
                }
            }
        }
        let pause =
            Duration::from_millis(500 * 2u64.pow(failures.min(5))).min(Duration::from_secs(10));
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    if let Some(recorder) = &recorder {
        recorder.close(Duration::from_secs(10));
    }
    Ok(done)
}

use Ending::{Fatal, Retry};

enum Ending {
    /// The file cannot be written: stop.
    Fatal(String),
    /// The server is down or went away: connect again.
    Retry(String),
}

/// One connection, until it ends.
async fn listen(
    base: &str,
    token: Option<&str>,
    recorder: &mut Option<Recorder>,
    options: &RecordOptions,
    header: &mut Option<Record>,
    done: &mut Recorded,
) -> Result<(), Ending> {
    let ws_base = base
        .trim_end_matches('/')
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let mut request = format!("{ws_base}/api/recording")
        .into_client_request()
        .map_err(|e| Fatal(format!("{base} is not a server's URL: {e}")))?;
    if let Some(token) = token
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        request.headers_mut().insert("authorization", value);
    }
    let tls = crate::net::tls_client_config(None).map_err(Fatal)?;
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        request,
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(tls)),
    );
    let (mut socket, _) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| Retry("no answer".into()))?
        .map_err(|e| Retry(e.to_string()))?;
    done.connections += 1;
    tracing::info!(server = %base, "recording");
    while let Some(message) = socket.next().await {
        let text = match message.map_err(|e| Retry(e.to_string()))? {
            Message::Text(text) => text,
            Message::Close(_) => return Ok(()),
            _ => continue,
        };
        let Ok(record) = serde_json::from_str::<Record>(&text) else {
            done.unreadable += 1;
            continue;
        };
        if let Record::Header { .. } = record {
            if recorder.is_none() {
                *recorder = Some(Recorder::start(options.clone(), record.clone()).map_err(Fatal)?);
            } else if header.as_ref() != Some(&record) {
                // A server started again: a new segment.
                if let Some(recorder) = recorder.as_ref() {
                    recorder.record(record.clone());
                }
            }
            *header = Some(record);
            continue;
        }
        if let Some(recorder) = recorder.as_ref() {
            recorder.record(record);
            done.records += 1;
        }
    }
    Ok(())
}
