//! The integration tests, in one binary: one module a subject, each over
//! real sockets, real files or the real binary (`common` holds the peers
//! they start). One binary links the crate once instead of once a file.
//!
//! Run one subject with a filter: `cargo test --test integration cluster::`.
//! The log-capture tests live apart, in `tests/logs.rs`: tracing decides
//! per log site, for the whole process, whether anyone listens, so a test
//! here that hits a site without a capture could switch it off for them.

mod common;

mod api;
mod api_limits;
mod attach_api;
mod budgets;
mod cluster;
mod cluster_serve;
mod config;
mod dashboard;
mod db;
mod deadline;
mod docs;
mod failures;
mod feeds;
mod frame_fuzz;
mod ingest;
mod lifecycle;
mod llm_http;
mod llm_limits;
mod llm_structured;
mod manuals;
mod openapi;
mod operations;
mod prometheus;
mod pty;
mod readiness;
mod recording;
mod replay_engine;
mod restart;
mod retries;
mod scheduling;
mod scrape;
mod serve;
mod spend;
mod state;
mod state_stress;
mod webhooks;
