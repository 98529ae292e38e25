//! The dashboard at 10 000 sessions: taking a snapshot from a real engine,
//! sorting it, and drawing the table into a 140x40 and an 80x24 buffer.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use inflight::engine::{Engine, EngineConfig};
use inflight::llm::LatencyRange;
use inflight::llm::builtin::BuiltinBackend;
use inflight::model::{SessionId, Transcript};
use inflight::tui::app::App;
use inflight::tui::keymap::Key;
use inflight::tui::theme::Theme;
use inflight::tui::views;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const SESSIONS: usize = 10_000;

/// An engine that has seen 10 000 sessions and finished their runs.
fn loaded_engine(runtime: &tokio::runtime::Runtime) -> Engine {
    runtime.block_on(async {
        let engine = Engine::new(
            EngineConfig::default(),
            Arc::new(BuiltinBackend::new(LatencyRange::ZERO)),
        );
        let mut events = engine.subscribe();
        for i in 0..SESSIONS {
            let session = SessionId::parse(&format!("session-{i:05}")).expect("valid id");
            engine.ingest(
                Transcript {
                    session_id: session,
                    seq: Some(1),
                    text: "The release moves to Tuesday after the migration.".into(),
                    speaker: Some("ana".into()),
                    start: Some(0.0),
                    end: Some(2.0),
                    is_final: true,
                    kind: None,
                },
                Some(0),
            );
        }
        while !engine.is_idle() {
            let _ = events.recv().await;
        }
        engine
    })
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let engine = loaded_engine(&runtime);
    let _enter = runtime.enter();

    c.bench_function("engine snapshot, 10k sessions", |b| {
        b.iter(|| black_box(engine.snapshot()))
    });

    let mut app = App::new(Theme::new(true), engine.snapshot());
    c.bench_function(
        "app takes snapshot (sort + keep selection), 10k sessions",
        |b| {
            let snapshot = engine.snapshot();
            b.iter(|| app.set_snapshot(black_box(snapshot.clone())))
        },
    );
    app.handle_key(Key::Char('o'));

    for (w, h) in [(140u16, 40u16), (80, 24)] {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("test backend");
        c.bench_function(&format!("draw table {w}x{h}, 10k sessions"), |b| {
            b.iter(|| {
                terminal
                    .draw(|frame| views::draw(frame, &app))
                    .expect("draw");
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
