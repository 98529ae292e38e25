//! The `inflight` command: parses flags and wires the pieces together.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use inflight::api;
use inflight::config::{
    AttachArgs, Command, ConfigCommand, EngineArgs, FeedArgs, LlmKind, LogFormat, layers,
};
use inflight::engine::Engine;
use inflight::feed::{client, meetings, replay};
use inflight::logs::{CaptureLayer, LogBuffer};
use inflight::signals::{Hangup, StopSignals};
use inflight::tui;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `inflight man`: the page on stdout, or every command's page in `dir`
/// and their paths on stdout.
fn print_man(dir: Option<&std::path::Path>) -> ExitCode {
    match dir {
        None => print_out(&inflight::config::manuals::man_page()),
        Some(dir) => match inflight::config::manuals::man_pages(dir) {
            Ok(pages) => {
                let list: String = pages.iter().map(|p| format!("{}\n", p.display())).collect();
                print_out(list.as_bytes())
            }
            Err(e) => {
                eprintln!(
                    "inflight: cannot write the man pages into {}: {e}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        },
    }
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is no error.
fn print_out(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inflight: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let loaded = match layers::load(std::env::args_os().collect()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("inflight: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The operations that run (those `--ops` chooses of the defined
    // ones), before anything reads them.
    let chosen = loaded
        .cli
        .engine_args()
        .map(|args| args.ops.clone())
        .unwrap_or_default();
    inflight::ops::install(loaded.operations.chosen(&chosen));
    if let Some(Command::Config(command)) = &loaded.cli.command {
        let answer = match command {
            ConfigCommand::Check { file } => layers::check(file),
            ConfigCommand::Show(_) => layers::show(&loaded),
        };
        return match answer {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("inflight: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match &loaded.cli.command {
        Some(Command::Completions(args)) => {
            return print_out(&inflight::config::manuals::completions(args.shell));
        }
        Some(Command::Man(args)) => return print_man(args.dir.as_deref()),
        Some(Command::Openapi) => return print_out(api::document_json().as_bytes()),
        _ => {}
    }
    let cli = loaded.cli;
    if let Some(Command::Replay(args)) = &cli.command {
        return match run_replay(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("inflight: {e}");
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("inflight: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Feed(args)) => run_feed_server(args).await,
            Some(Command::Status(args)) => {
                let text = api::client::status(
                    &args.api_url,
                    args.session.as_deref(),
                    args.json,
                    args.token.as_deref(),
                )
                .await?;
                print!("{text}");
                Ok(())
            }
            Some(Command::Serve(engine)) => run_headless(*engine).await,
            Some(Command::Config(_)) => Ok(()),
            Some(Command::Attach(args)) => run_attach(args).await,
            Some(
                Command::Replay(_) | Command::Completions(_) | Command::Man(_) | Command::Openapi,
            ) => Ok(()),
            Some(Command::Record(args)) => run_record(args).await,
            None => run_dashboard(cli.engine, cli.no_color).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inflight: {e}");
            ExitCode::FAILURE
        }
    }
}

/// In the dashboard, logs go to the log pane instead of the terminal.
fn init_captured_logs() -> LogBuffer {
    let buffer = LogBuffer::new();
    let filter = inflight::logs::without_secrets(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(CAPTURED)),
    );
    tracing_subscriber::registry()
        .with(filter)
        .with(CaptureLayer::new(buffer.clone()))
        .init();
    buffer
}

/// What the log buffer keeps (the dashboard's pane, `/api/logs`).
const CAPTURED: &str = "warn,inflight=debug";

/// `serve`'s logs on stdout: the filter from `--log-level`, else
/// RUST_LOG, else `info`; text or one JSON object a line. Beside them, the
/// newest lines are kept in memory for `/api/logs` (attached dashboards).
fn init_logs(format: LogFormat, level: Option<&str>) -> Result<LogBuffer, String> {
    use tracing_subscriber::Layer;
    let filter = match level {
        Some(level) => tracing_subscriber::EnvFilter::try_new(level)
            .map_err(|e| format!("--log-level {level:?}: {e}"))?,
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let filter = inflight::logs::without_secrets(filter);
    let buffer = LogBuffer::new();
    let captured =
        CaptureLayer::new(buffer.clone()).with_filter(tracing_subscriber::EnvFilter::new(CAPTURED));
    let stdout = match format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
                && std::env::var_os("NO_COLOR").is_none();
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(ansi)
                .with_writer(inflight::logs::CappedStdout)
                .with_filter(filter)
                .boxed()
        }
        // Whole lines: a cut one would not parse. What comes from outside
        // is bounded before it is logged (ids, server messages, errors).
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_target(false)
            .with_writer(std::io::stdout)
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(stdout)
        .with(captured)
        .init();
    Ok(buffer)
}

/// A running engine and what stops it.
struct Running {
    engine: Engine,
    /// The feed clients' tasks; they end once `stop_feeds` is cancelled,
    /// after saying goodbye to their feeds.
    feeds: TaskTracker,
    stop_feeds: CancellationToken,
    /// Closed last, once the runs have drained.
    db: Option<DbFile>,
    /// The recording (`--record`): flushed and closed when dropped.
    recording: Option<RecordingFile>,
}

/// A recording being written: what is waiting is written and flushed when
/// dropped.
struct RecordingFile(inflight::record::Recorder);

impl Drop for RecordingFile {
    fn drop(&mut self) {
        self.0.close(Duration::from_secs(5));
    }
}

/// Builds the engine and connects its feeds: the given ones, or the embedded
/// demo feed on an ephemeral loopback port. `shutdown` stops everything but
/// the feed clients (the demo feed among it).
async fn start_engine(args: &EngineArgs, shutdown: &CancellationToken) -> Result<Running, String> {
    let backend = args.backend()?;
    if args.llm != LlmKind::Builtin {
        tokio::spawn(inflight::llm::watch(backend.clone()));
    }
    let engine = Engine::new(args.engine_config(), backend);
    let recorder = match args.record_options() {
        Some(options) => {
            let bound = options.bound();
            let path = options.path.clone();
            let recorder = engine.events().tap().record_into(options)?;
            tracing::info!(path = %path.display(), bound_bytes = bound, "recording");
            Some(recorder)
        }
        None => None,
    };
    let webhooks = (!args.webhooks.is_empty()).then(|| {
        Arc::new(inflight::webhooks::Webhooks::new(
            args.webhooks.clone(),
            args.webhook_settings(),
        ))
    });
    if let Some(webhooks) = &webhooks {
        // Before the database gives back the deliveries still waiting.
        engine.use_webhooks(webhooks.clone());
    }
    let db = match args.db_path()? {
        Some(path) => {
            let limits = inflight::db::RestoreLimits {
                forget_after: args.forget_after,
                max_sessions: args.max_sessions as usize,
                retain: args.retain,
                remember_forgotten: args.remember_forgotten as usize,
            };
            let opened = tokio::task::spawn_blocking(move || inflight::db::open(&path, limits))
                .await
                .map_err(|e| format!("cannot open the database: {e}"))?
                .map_err(|e| e.to_string())?;
            tracing::info!(path = %opened.db.path().display(), "database open");
            engine.use_db(opened.db.clone());
            engine.restore(opened.restored);
            Some(DbFile {
                db: opened.db,
                remove_at_stop: args.is_demo() && args.db.is_none(),
            })
        }
        None => None,
    };
    if let Some(config) = args.cluster_config() {
        let instance = config.instance.clone();
        let redis = inflight::net::redact_url(&config.url);
        let cluster = inflight::cluster::Cluster::connect(config).map_err(|e| e.to_string())?;
        engine.join_cluster(cluster);
        tokio::spawn(engine.clone().run_cluster(shutdown.clone()));
        tracing::info!(%instance, %redis, "sharing the work through Redis");
    }
    if let Some(webhooks) = webhooks {
        let record: Arc<dyn inflight::webhooks::sender::Record> = match engine.db() {
            Some(db) => Arc::new(inflight::engine::DbRecord {
                db: db.clone(),
                webhooks: webhooks.clone(),
            }),
            None => Arc::new(inflight::engine::NoRecord),
        };
        tracing::info!(
            endpoints = webhooks.endpoints.len(),
            "delivering results to webhooks"
        );
        tokio::spawn(inflight::webhooks::sender::run(
            webhooks,
            record,
            shutdown.clone(),
        ));
    }
    tokio::spawn(engine.clone().housekeeping(shutdown.clone()));
    let mut feeds = args.feeds.clone();
    if args.is_demo() {
        let options = replay::ReplayOptions {
            speed: args.demo_speed.max(0.0),
            looping: true,
            ..Default::default()
        };
        let addr = replay::start(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            meetings::embedded(),
            options,
            shutdown.clone(),
        )
        .await
        .map_err(|e| format!("cannot start the demo feed: {e}"))?;
        feeds.push(format!("ws://{addr}/demo"));
    }
    let mut options = args.feed_options()?;
    if args.is_demo() {
        // The demo feed speaks the native protocol.
        options.format = inflight::feed::adapters::FeedFormat::Native;
    }
    let tracker = TaskTracker::new();
    let stop_feeds = shutdown.child_token();
    for url in feeds {
        let task = client::spawn(engine.clone(), url, options.clone(), stop_feeds.clone());
        tracker.spawn(async move {
            let _ = task.await;
        });
    }
    tracker.close();
    Ok(Running {
        engine,
        feeds: tracker,
        stop_feeds,
        db,
        recording: recorder.map(RecordingFile),
    })
}

/// The database of a running engine: closed (its last writes committed)
/// when dropped, and for the demo deleted.
struct DbFile {
    db: inflight::db::Db,
    remove_at_stop: bool,
}

impl Drop for DbFile {
    fn drop(&mut self) {
        self.db.close(Duration::from_secs(5));
        if self.remove_at_stop {
            let path = self.db.path().as_os_str().to_owned();
            for suffix in ["", "-wal", "-shm", ".lock"] {
                let mut file = path.clone();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
        }
    }
}

async fn run_dashboard(args: EngineArgs, no_color: bool) -> Result<(), String> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err("the dashboard needs a terminal; use `inflight serve` to run headless".into());
    }
    let logs = init_captured_logs();
    let shutdown = CancellationToken::new();
    let _stop_feeds = shutdown.clone().drop_guard();
    let running = start_engine(&args, &shutdown).await?;
    let _db = running.db;
    let _recording = running.recording;
    let engine = running.engine;
    if let Some(addr) = args.api {
        let mut config = args.api_config(addr);
        config.logs = Some(logs.clone());
        let bound = api::serve(engine.clone(), config, shutdown.clone()).await?;
        tracing::info!(%bound, "API listening");
    }
    let color = !no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let source = tui::source::embedded::Embedded::new(engine, logs);
    tui::run(source, tui::TuiOptions { color }).await
}

/// The dashboard on a server's API. Nothing is logged here: the server's
/// log lines fill the log pane.
async fn run_attach(args: AttachArgs) -> Result<(), String> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err("the dashboard needs a terminal; use `inflight status` in scripts".into());
    }
    let source = tui::source::remote::Remote::start(tui::source::remote::RemoteOptions {
        url: args.url.clone(),
        token: args.token()?,
    })?;
    let color = !args.no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tui::run(source, tui::TuiOptions { color }).await
}

async fn run_headless(args: EngineArgs) -> Result<(), String> {
    // Caught before anything starts, so every stop drains.
    let mut stop = StopSignals::install(Hangup::Ignored);
    let logs = init_logs(args.log_format, args.log_level.as_deref())?;
    let shutdown = CancellationToken::new();
    let mut api_config = args.api_config(args.serve_api_addr());
    api_config.logs = Some(logs);
    // Refuse a bad API setting before anything starts.
    api_config.check()?;
    let Running {
        engine,
        feeds,
        stop_feeds,
        db,
        recording,
    } = start_engine(&args, &shutdown).await?;
    let (bound, api) = api::start(engine.clone(), api_config, shutdown.clone()).await?;
    tracing::info!(%bound, "API listening");
    let info = engine.backend_info();
    tracing::info!(
        backend = %info.kind,
        model = %info.model,
        on_busy = ?args.on_busy,
        llm_concurrency = args.llm_concurrency,
        "inflight engine running; SIGTERM or Ctrl-C stops it"
    );
    stop.recv().await;

    // Stop taking work in: each feed gets a Close frame.
    tracing::info!(
        "stopping: feeds first, then the runs in flight (up to {}), then the API",
        humantime::format_duration(args.drain_timeout)
    );
    stop_feeds.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), feeds.wait()).await;
    let drained = engine.drain(args.drain_timeout).await;
    // The runs' last results and records are in: commit them.
    drop(db);
    drop(recording);
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), api).await;
    let totals = engine.snapshot().totals;
    tracing::info!(
        transcripts = totals.transcripts,
        runs = totals.counts.runs,
        skipped = totals.counts.skipped,
        failed = totals.counts.failures(),
        in_flight_at_stop = drained.in_flight,
        cancelled_at_stop = drained.cancelled,
        "stopped"
    );
    Ok(())
}

async fn run_feed_server(args: FeedArgs) -> Result<(), String> {
    let mut stop = StopSignals::install(Hangup::Stops);
    init_logs(LogFormat::Text, None)?;
    let meetings = match &args.dir {
        Some(dir) => meetings::load_dir(dir)?,
        None => meetings::embedded(),
    };
    let shutdown = CancellationToken::new();
    let options = replay::ReplayOptions {
        speed: args.speed.max(0.0),
        looping: args.looping,
        drop_every: args.drop_every.filter(|n| *n > 0),
        ..Default::default()
    };
    let count = meetings.len();
    let addr = replay::start(args.listen, meetings, options, shutdown.clone())
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(%addr, meetings = count, speed = args.speed, looping = args.looping, "replay feed listening");
    stop.recv().await;
    shutdown.cancel();
    Ok(())
}

/// `inflight replay FILE --engine`: the recording through the engine on a
/// paused clock, and the comparison printed. Exits 0 when the replay is
/// identical to the recording, 1 when it differs.
fn run_replay(args: &inflight::config::ReplayArgs) -> Result<ExitCode, String> {
    use inflight::config::ReportFormat;
    use inflight::record::{ReplaySettings, read, replay, report};
    let reading = read(&args.file)?;
    if let Some(damage) = &reading.damage {
        eprintln!("inflight: {} was {damage}", args.file.display());
    }
    if !args.engine {
        replay_dashboard(&reading, args)?;
        return Ok(ExitCode::SUCCESS);
    }
    let changes = ReplaySettings {
        llm_concurrency: args.llm_concurrency.map(|n| n as usize),
        min_interval: args.min_interval,
        on_busy: args.on_busy,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| format!("cannot start the replay's runtime: {e}"))?;
    let comparison = runtime.block_on(replay(&reading, &changes));
    match args.report {
        ReportFormat::Table => print!("{}", report::table(&comparison)),
        ReportFormat::Json => println!("{}", report::json(&comparison)),
    }
    Ok(if comparison.identical {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `inflight replay FILE`: the dashboard on the recording.
fn replay_dashboard(
    reading: &inflight::record::Reading,
    args: &inflight::config::ReplayArgs,
) -> Result<(), String> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(
            "the replay's dashboard needs a terminal; `--engine --report json` replays for scripts"
                .into(),
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let color = !args.no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    runtime.block_on(async {
        let source = tui::source::replayed::Replayed::start(reading, args.speed).await?;
        tui::run(source, tui::TuiOptions { color }).await
    })
}

/// `inflight record --from URL --out FILE`: a server recorded from outside
/// until SIGTERM or Ctrl-C.
async fn run_record(args: inflight::config::RecordArgs) -> Result<(), String> {
    let mut stop = StopSignals::install(Hangup::Stops);
    init_logs(LogFormat::Text, None)?;
    let options = inflight::record::RecordOptions {
        path: args.out.clone(),
        max_bytes: args.max_size,
        keep: args.keep,
        max_age: args.max_age,
    };
    let stopping = CancellationToken::new();
    let recording = tokio::spawn({
        let stopping = stopping.clone();
        let from = args.from.clone();
        let token = args.token.clone();
        async move { inflight::record::record_from(&from, token.as_deref(), options, stopping).await }
    });
    tracing::info!(server = %inflight::net::redact_url(&args.from), out = %args.out.display(), "recording from outside; SIGTERM or Ctrl-C stops it");
    let mut recording = recording;
    // It ends by itself only when the file cannot be written.
    let ended = tokio::select! {
        _ = stop.recv() => None,
        ended = &mut recording => Some(ended),
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            stopping.cancel();
            recording.await
        }
    };
    let done = ended.map_err(|e| format!("the recording stopped: {e}"))??;
    tracing::info!(
        records = done.records,
        connections = done.connections,
        unreadable = done.unreadable,
        "recording stopped"
    );
    Ok(())
}
