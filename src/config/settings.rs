//! What the flags make: the LLM backend, the feed options, the API's and
//! the cluster's settings, and the engine's.

use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;

use super::{DEFAULT_API_PORT, EngineArgs, FileConfig, LlmKind, SummaryMode};
use crate::engine::EngineConfig;
use crate::llm::LatencyRange;
use crate::state::StateConfig;

impl EngineArgs {
    /// True when no feed was given: the embedded demo feed is used.
    pub fn is_demo(&self) -> bool {
        self.feeds.is_empty()
    }

    /// Where and how much to record (`--record`), when asked.
    pub fn record_options(&self) -> Option<crate::record::RecordOptions> {
        self.record
            .as_ref()
            .map(|path| crate::record::RecordOptions {
                path: path.clone(),
                max_bytes: self.record_max_size,
                keep: self.record_keep,
                max_age: self.record_max_age,
            })
    }

    /// Where the database lives: `None` with `--no-db`. The demo gets a
    /// file of its own (in the temp folder, one per process) unless `--db`
    /// names one.
    pub fn db_path(&self) -> Result<Option<std::path::PathBuf>, String> {
        if self.no_db {
            return Ok(None);
        }
        if let Some(path) = &self.db {
            return Ok(Some(path.clone()));
        }
        if self.is_demo() {
            let name = format!("inflight-demo-{}.db", std::process::id());
            return Ok(Some(std::env::temp_dir().join(name)));
        }
        crate::db::default_path("inflight.db").map(Some).ok_or_else(|| {
            "no place for the database: set XDG_STATE_HOME or HOME, or give --db PATH or --no-db"
                .to_string()
        })
    }

    /// The builtin backend's latency: as given, else 2s..6s on the demo.
    pub fn builtin_latency(&self) -> LatencyRange {
        self.simulate_latency.unwrap_or(if self.is_demo() {
            LatencyRange {
                min: Duration::from_secs(2),
                max: Duration::from_secs(6),
            }
        } else {
            LatencyRange::ZERO
        })
    }

    /// The LLM backend the flags ask for.
    pub fn backend(&self) -> Result<std::sync::Arc<dyn crate::llm::Backend>, String> {
        use crate::llm::{builtin::BuiltinBackend, ollama::OllamaBackend, openai::OpenAiBackend};
        let prompts = match &self.config {
            Some(path) => FileConfig::load(path).map_err(|e| e.to_string())?.prompts,
            None => Default::default(),
        };
        let model = || {
            self.model.clone().ok_or_else(|| {
                format!(
                    "--llm {} needs --model NAME",
                    self.llm
                        .to_possible_value()
                        .map(|v| v.get_name().to_string())
                        .unwrap_or_default()
                )
            })
        };
        Ok(match self.llm {
            LlmKind::Builtin => std::sync::Arc::new(BuiltinBackend::new(self.builtin_latency())),
            LlmKind::Ollama => std::sync::Arc::new(
                OllamaBackend::new(self.llm_url.as_deref(), &model()?, prompts)?
                    .with_limits(self.answer_limits()),
            ),
            LlmKind::Openai => {
                let url = self.llm_url.as_deref().ok_or(
                    "--llm openai needs --llm-url URL (for example http://127.0.0.1:8080)",
                )?;
                let key = std::env::var(&self.llm_api_key_env).ok();
                // Without --model, the one the server serves (learnt at
                // its first check).
                let model = self.model.clone().unwrap_or_default();
                std::sync::Arc::new(
                    OpenAiBackend::new(url, &model, key, prompts)?
                        .with_limits(self.answer_limits()),
                )
            }
        })
    }

    /// What an LLM answer may cost.
    pub fn answer_limits(&self) -> crate::llm::http::AnswerLimits {
        crate::llm::http::AnswerLimits {
            max_tokens: self.max_tokens,
            max_answer_bytes: self.max_answer_bytes as usize,
            context: self.llm_context,
        }
    }

    /// How feed clients connect.
    pub fn feed_options(&self) -> Result<crate::feed::client::FeedOptions, String> {
        Ok(crate::feed::client::FeedOptions {
            retries: self.feed_retries,
            format: self.feed_format,
            headers: self.feed_headers.clone(),
            tls: Some(crate::net::tls_client_config(self.feed_ca.as_deref())?),
            upstream_status: !self.no_upstream_status,
            upstream_results: self.upstream_results,
            connect_timeout: self.feed_connect_timeout,
            idle_timeout: self.feed_idle_timeout,
            ..Default::default()
        })
    }

    /// Where `serve` listens: `--api`, else 127.0.0.1:8787.
    pub fn serve_api_addr(&self) -> SocketAddr {
        self.api.unwrap_or(SocketAddr::from((
            std::net::Ipv4Addr::LOCALHOST,
            DEFAULT_API_PORT,
        )))
    }

    /// The webhooks' settings.
    pub fn webhook_settings(&self) -> crate::webhooks::Settings {
        crate::webhooks::Settings {
            max_age: self.webhook_max_age,
            max_pending: self.webhook_max_pending as usize,
            timeout: self.webhook_timeout,
            ..Default::default()
        }
    }

    /// The API's settings, listening on `addr`.
    pub fn api_config(&self, addr: SocketAddr) -> crate::api::ApiConfig {
        crate::api::ApiConfig {
            addr,
            token: self.api_token.clone(),
            read_token: self.api_read_token.clone(),
            ingest_token: self.api_ingest_token.clone(),
            ingest: crate::api::ingest::IngestLimits {
                max_sockets: self.api_max_ingest_sockets as usize,
                max_batch: self.api_max_batch as usize,
            },
            logs: None,
            allowed_origins: self.api_allow_origins.clone(),
            allowed_hosts: self.api_allow_hosts.clone(),
            ws: crate::api::WsLimits {
                max_clients: self.api_max_ws_clients as usize,
                max_incoming: self.api_ws_max_frame as usize,
                timeout: self.api_ws_timeout,
            },
        }
    }

    /// The cluster settings, with `--redis`.
    pub fn cluster_config(&self) -> Option<crate::cluster::ClusterConfig> {
        let url = self.redis.clone()?;
        Some(crate::cluster::ClusterConfig {
            url,
            prefix: self.redis_prefix.clone(),
            lease_ttl: self.lease_ttl,
            instance: self
                .instance
                .clone()
                .unwrap_or_else(crate::cluster::default_instance),
        })
    }

    /// Every operation `--ops` names is defined in `operations`.
    pub fn check_ops(&self, operations: &crate::ops::OpRegistry) -> Result<(), String> {
        match self.ops.iter().find(|op| !operations.is_defined(**op)) {
            Some(op) => Err(format!(
                "--ops: unknown operation {:?}; defined: {}",
                op.as_str(),
                operations.names().join(", ")
            )),
            None => Ok(()),
        }
    }

    /// The defined operations `--ops` chooses (all, unless it is given;
    /// the process's registry holds only those already).
    fn chosen_ops(&self) -> Vec<&'static crate::ops::OpDef> {
        crate::ops::registry()
            .defs()
            .iter()
            .filter(|d| self.ops.is_empty() || self.ops.contains(&d.op))
            .collect()
    }

    pub fn engine_config(&self) -> EngineConfig {
        let chosen = self.chosen_ops();
        let registry = crate::ops::registry();
        EngineConfig {
            state: StateConfig {
                policy: crate::ops::OpMap::filled_with(|op| {
                    registry
                        .def(op)
                        .and_then(|d| d.on_busy)
                        .unwrap_or(self.on_busy)
                }),
                op_timeout: self.op_timeout,
                retries: self.run_retries,
            },
            retry_backoff: self.retry_backoff,
            prices: std::sync::Arc::new(self.prices.clone()),
            budgets: crate::spend::Budgets {
                session_tokens: self.budget_session_tokens,
                session_cost: self.budget_session_cost,
                feed_tokens_per_hour: self.budget_feed_tokens_per_hour,
                feed_cost_per_hour: self.budget_feed_cost_per_hour,
                tokens_per_hour: self.budget_tokens_per_hour,
                cost_per_hour: self.budget_cost_per_hour,
            },
            llm_concurrency: self.llm_concurrency as usize,
            incremental: self.summary_mode == SummaryMode::Incremental,
            min_interval: self.min_interval,
            automatic_ops: chosen
                .iter()
                .filter(|d| d.when == crate::ops::When::Transcripts)
                .map(|d| d.op)
                .collect(),
            end_ops: chosen
                .iter()
                .filter(|d| d.when != crate::ops::When::Manual)
                .map(|d| d.op)
                .collect(),
            sessions: crate::engine::SessionLimits {
                max_sessions: self.max_sessions as usize,
                idle_after: self.idle_after,
                forget_after: self.forget_after,
                remember_forgotten: self.remember_forgotten as usize,
                max_held_transcripts: self.max_held_transcripts as usize,
                kept_transcripts: self.keep_transcripts as usize,
                ..Default::default()
            },
        }
    }
}
