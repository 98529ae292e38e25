//! The signals that end the process politely: Ctrl-C, and on Unix SIGTERM
//! and SIGHUP (an SSH session closing).
//!
//! The dashboard stops on SIGHUP: its terminal is gone. `serve` does not:
//! `nohup inflight serve` must outlive the SSH session that started it, so
//! there SIGHUP is caught, logged and ignored.
//!
//! Catch them with [`StopSignals::install`] before starting anything: a
//! signal that arrives before its handler is installed kills the process
//! the default way, with no drain.

/// What SIGHUP does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hangup {
    Stops,
    Ignored,
}

/// The stop signals, caught from the moment this is made.
pub struct StopSignals {
    hangup: Hangup,
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    /// Catches SIGTERM and SIGHUP now (Ctrl-C is caught when waited for).
    /// Needs a tokio runtime.
    pub fn install(hangup: Hangup) -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let unix = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(term), Ok(hup)) => Some((term, hup)),
                _ => None,
            };
            Self { hangup, unix }
        }
        #[cfg(not(unix))]
        Self { hangup }
    }

    /// Resolves when the process is asked to stop.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some((term, hup)) = &mut self.unix {
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return,
                    _ = term.recv() => return,
                    _ = hup.recv() => match self.hangup {
                        Hangup::Stops => return,
                        Hangup::Ignored => {
                            tracing::info!("SIGHUP ignored: inflight serve keeps running (SIGTERM or Ctrl-C stops it)");
                        }
                    },
                }
            }
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolves when the process is asked to stop (catching from the first poll).
pub async fn stop_requested(hangup: Hangup) {
    StopSignals::install(hangup).recv().await
}
