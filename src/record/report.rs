//! A replay's comparison as people read it (a table) and as scripts read
//! it (one JSON object).

use std::fmt::Write;

use super::Comparison;

/// The comparison as one JSON object: `identical`, `differences` (each
/// naming the session, the operation and what differs), the totals of both
/// sides and the settings.
pub fn json(comparison: &Comparison) -> String {
    serde_json::to_string_pretty(comparison).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The comparison as a table: the totals of both sides, then every
/// (session, operation) that differs.
pub fn table(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "replayed {:.1} s of recording in {:.2} s ({:.0}× real time)",
        c.recorded_seconds, c.wall_seconds, c.speed
    );
    if let Some(damage) = &c.damage {
        let _ = writeln!(out, "the recording was {damage}");
    }
    if c.changed.is_empty() {
        let _ = writeln!(out, "settings: as recorded");
    } else {
        let _ = writeln!(out, "settings: {}", c.changed.join(", "));
    }
    if c.made_up_calls > 0 {
        let _ = writeln!(
            out,
            "{} calls had no recorded call of their own: answered with their operation's last answer",
            c.made_up_calls
        );
    }
    if c.missed_events > 0 {
        let _ = writeln!(
            out,
            "{} events were missed by the count: its figures are short",
            c.missed_events
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<10} {:>8} {:>5} {:>7} {:>7} {:>6}",
        "", "SESSIONS", "RUNS", "FAILED", "SKIPS", "STALE"
    );
    for (name, t) in [("recorded", &c.recorded), ("replayed", &c.replayed)] {
        let _ = writeln!(
            out,
            "{:<10} {:>8} {:>5} {:>7} {:>7} {:>6}",
            name, t.sessions, t.runs, t.failed, t.skips, t.stale_sessions
        );
    }
    let _ = writeln!(out);
    if c.identical {
        let _ = writeln!(
            out,
            "identical: every session's runs, skips and covered lines are as recorded"
        );
        return out;
    }
    let session_width = c
        .differences
        .iter()
        .map(|d| d.session.as_str().chars().count())
        .max()
        .unwrap_or(7)
        .max(7);
    let _ = writeln!(
        out,
        "{:<session_width$}  {:<10} {:<8} {:>8} {:>8}",
        "SESSION", "OPERATION", "WHAT", "RECORDED", "REPLAYED"
    );
    for d in &c.differences {
        let _ = writeln!(
            out,
            "{:<session_width$}  {:<10} {:<8} {:>8} {:>8}",
            d.session.as_str(),
            d.op.as_str(),
            d.what,
            d.recorded,
            d.replayed
        );
    }
    let _ = writeln!(out, "\nnot identical: {} differences", c.differences.len());
    out
}
