//! What one held session costs in heap, measured by a counting allocator.
//!
//! ```sh
//! cargo run --release --example session_cost -- --sessions 100000
//! heaptrack target/release/examples/session_cost --sessions 100000   # the breakdown
//! ```
//!
//! An engine with the built-in operations and an LLM that answers at once
//! takes `--lines` final transcripts into each of `--sessions` sessions;
//! once every run has ended (each session holds its transcripts, both
//! results and their statistics), the heap in use is read and divided by
//! the sessions. Printed as one JSON line: the heap per session, the part
//! of it that is transcript text (the floor: it is held until summarised),
//! and the rest.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use inflight::engine::{Engine, EngineConfig, SessionLimits};
use inflight::llm::LatencyRange;
use inflight::llm::builtin::BuiltinBackend;
use inflight::model::{SessionId, Transcript};

/// The system allocator, counting the bytes in use.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; the
// counter only adds and subtracts the sizes asked for.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout, as given.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    sessions: usize,
    /// Final transcripts per session.
    #[arg(long, default_value_t = 1)]
    lines: u64,
}

const TEXT: &str = "We ship on Friday, after the review.";
const SPEAKER: &str = "spk1";

fn main() -> Result<(), String> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let engine = Engine::new(
            EngineConfig {
                sessions: SessionLimits {
                    max_sessions: args.sessions,
                    ..Default::default()
                },
                ..Default::default()
            },
            Arc::new(BuiltinBackend::new(LatencyRange::ZERO)),
        );
        let ids: Vec<SessionId> = (0..args.sessions)
            .map(|i| SessionId::parse(&format!("s{i:06}")).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let before = IN_USE.load(Ordering::Relaxed);
        for seq in 1..=args.lines {
            for id in &ids {
                engine.ingest(
                    Transcript {
                        session_id: id.clone(),
                        seq: Some(seq),
                        text: TEXT.into(),
                        speaker: Some(SPEAKER.into()),
                        start: None,
                        end: None,
                        is_final: true,
                        kind: None,
                    },
                    None,
                );
            }
            // Each line's runs end before the next, as a live feed's do.
            while !engine.is_idle() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // Let the last events and tasks go.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let held = IN_USE.load(Ordering::Relaxed).saturating_sub(before);
        // The ids vector is the harness's own, not the engine's.
        let harness = ids.capacity() * std::mem::size_of::<SessionId>()
            + ids.iter().map(|id| id.as_str().len()).sum::<usize>();
        let per_session = held.saturating_sub(harness) as f64 / args.sessions as f64;
        let text = (TEXT.len() + SPEAKER.len()) as f64 * args.lines as f64;
        println!(
            "{}",
            serde_json::json!({
                "sessions": args.sessions,
                "lines_per_session": args.lines,
                "heap_per_session_bytes": per_session.round(),
                "transcript_text_bytes": text,
                "rest_bytes": (per_session - text).round(),
                "heap_total_mb": (held as f64 / 1e6 * 10.0).round() / 10.0,
            })
        );
        drop(engine);
        Ok(())
    })
}
