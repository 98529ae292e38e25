//! inflight keeps slow LLM work on live transcripts from piling up.
//!
//! Transcripts arrive over WebSocket feeds; for each session inflight runs
//! summary and mind-map generation through an LLM, lets at most one run of
//! each operation per session be in flight, never lets a backlog grow, and
//! shows an operator what is running, for how long, and what was skipped.
//!
//! ```text
//!  feeds ──WS──► feed::client ──► Engine::ingest
//!                                    │
//!                     scheduler ─► state::ProcessingStateManager (start | busy)
//!                                    │ RunGuard
//!                     runner ── LLM permits ──► llm::Backend
//!                                    │
//!          events (broadcast) + Snapshot (pull) ──► tui · logs
//! ```
//!
//! | module | holds |
//! |---|---|
//! | [`model`] | session ids, transcripts, mind maps |
//! | [`ops`] | operations: their interned names and per-operation tables |
//! | [`state`] | the processing state manager, run guards, lifetime counters, the original status JSON |
//! | [`events`] | the event stream and its logging |
//! | [`cluster`] | several instances through Redis: leases, fences, pending requests, the events stream, one Lua script a step |
//! | [`db`] | durable state in SQLite: the writer thread, the schema, reading it back at start |
//! | [`engine`] | the bounded session store, scheduling, runner, draining, snapshots, feed health |
//! | [`llm`] | the backend trait; builtin, Ollama and OpenAI-compatible backends; answer limits |
//! | [`feed`] | the feed protocol and other formats, the feed client and the replay server |
//! | [`api`] | the HTTP and WebSocket API, its guards against web pages, metrics, the `status` client |
//! | `wire` | the envelopes sent to `/ws` subscribers and up the feeds |
//! | [`webhooks`] | results POSTed to the user's receivers: endpoints, signatures, the outbox, the sender |
//! | [`config`] | command-line flags, their `INFLIGHT_*` variables, the config file and which wins |
//! | [`net`] | TLS and HTTP client setup, URLs redacted for display |
//! | [`signals`] | the signals that stop the process, and SIGHUP |
//! | [`spend`] | what LLM work costs: the price table, a call's cost |
//! | [`record`] | recordings of what crossed the engine's edges, and replaying them through the engine |
//! | [`monotime`] | instants on the wire: milliseconds from the sender's anchor, mapped onto the reader's clock |
//! | [`logs`] | the in-memory log the dashboard shows, capped log lines |
//! | `format` | durations, ages, counts and times in a few fixed-width characters |
//! | [`text`] | making outside text safe for a terminal |
//! | [`tui`] | the operator dashboard |

pub mod api;
pub mod cluster;
pub mod config;
pub mod db;
pub mod engine;
pub mod events;
pub mod feed;
pub(crate) mod format;
pub mod llm;
pub mod logs;
pub mod model;
pub mod monotime;
pub mod net;
pub mod ops;
pub mod record;
pub mod signals;
pub mod spend;
pub mod state;
pub mod text;
pub mod tui;
pub mod webhooks;
pub(crate) mod wire;
