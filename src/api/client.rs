//! `inflight status`: a small command-line client of the API. It reads
//! the answers into the server's own types (`json.rs`, `state::status`),
//! so what it shows is what the API documents.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::json::{OpState, OperationJson, SessionsJson};
use crate::state::status::StatusResponse;

/// Fetches and formats statuses: one session's processing status, or the
/// sessions table. With `raw_json`, the server's JSON as it came.
pub async fn status(
    api: &str,
    session: Option<&str>,
    raw_json: bool,
    token: Option<&str>,
) -> Result<String, String> {
    let base = api.trim_end_matches('/');
    let url = match session {
        Some(id) => format!("{base}/api/llm/processing-status/{id}"),
        None => format!("{base}/api/sessions"),
    };
    let client =
        crate::net::http_client(reqwest::Client::builder().timeout(Duration::from_secs(10)))?;
    let mut request = client.get(&url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let code = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| format!("cannot read the answer of {url}: {e}"))?;
    if !code.is_success() {
        let why = serde_json::from_str::<super::ErrorJson>(&body)
            .map(|refusal| refusal.error.into_owned())
            .unwrap_or(body);
        return Err(format!("{url} answered {code}: {why}"));
    }
    if raw_json {
        return Ok(body);
    }
    let unreadable =
        |e: serde_json::Error| format!("{url} sent an answer this client cannot read: {e}");
    Ok(match session {
        Some(_) => format_status(&serde_json::from_str(&body).map_err(unreadable)?),
        None => format_sessions(&serde_json::from_str(&body).map_err(unreadable)?),
    })
}

fn format_status(answer: &StatusResponse) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let state = |start: Option<f64>| match start {
        Some(start) => format!("processing for {:.1}s", (now - start).max(0.0)),
        None => "idle".to_string(),
    };
    let status = &answer.status;
    let mut said = vec![
        format!("summary {}", state(status.summary_start_time)),
        format!("mind map {}", state(status.mind_map_start_time)),
    ];
    for (op, start) in &status.others.0 {
        said.push(format!("{} {}", op.label(), state(*start)));
    }
    format!("{}: {}\n", status.session_id, said.join(", "))
}

fn op_state(op: &OperationJson) -> String {
    let state = match (op.retry, op.stale) {
        (Some(n), _) => format!("retry {n}"),
        (None, true) => "stale".to_string(),
        _ => match op.state {
            OpState::Idle => "idle",
            OpState::Queued => "queued",
            OpState::Running => "running",
        }
        .to_string(),
    };
    let mut out = match op.in_flight_seconds {
        Some(s) => format!("{state} {s:.1}s"),
        None => state,
    };
    if op.pending {
        out.push_str(" +1");
    }
    out
}

fn format_sessions(answer: &SessionsJson) -> String {
    let backend = &answer.backend;
    let mut out = format!(
        "backend: {} {}{}{}\n",
        backend.kind,
        backend.model,
        if backend.simulated {
            " (simulated, no model)"
        } else {
            ""
        },
        if backend.reachable {
            ""
        } else {
            " (unreachable)"
        },
    );
    // Spend, when the server has a price table.
    let currency = answer.currency.as_deref();
    let cost_header = currency.map_or(String::new(), |c| format!("{:>10}  ", format!("COST {c}")));
    // A column for each operation the server runs (its config file's too),
    // in the server's order; the built-in two when no session says.
    let names: Vec<String> = answer
        .sessions
        .first()
        .map(|s| s.operations.names().map(str::to_string).collect())
        .unwrap_or_else(|| vec!["summary".into(), "mind_map".into()]);
    let mut header = format!("{:<28} {:>6}  ", "SESSION", "TX");
    for name in &names {
        header += &format!("{:<16} ", name.replace('_', " ").to_uppercase());
    }
    out += &format!("{header}{:>9}  {cost_header}ATTENTION\n", "SKIPPED");
    let mut total = crate::spend::Cost::ZERO;
    for s in &answer.sessions {
        let skipped: Vec<String> = names
            .iter()
            .map(|name| {
                let op = s.operations.get(name);
                op.map_or(0, |op| op.counts.skipped).to_string()
            })
            .collect();
        // The engine's own reasons, in the dashboard's words, and a spent
        // budget.
        let mut attention: Vec<String> = s.attention.iter().map(|a| a.describe()).collect();
        if let Some(budget) = s.over_budget {
            attention.push(format!("⊘ budget {} spent", budget.as_str()));
        }
        let cost = match currency {
            Some(_) => {
                total = total.plus(s.cost);
                format!("{:>10}  ", s.cost.shown())
            }
            None => String::new(),
        };
        let mut line = format!("{:<28} {:>6}  ", s.session_id.as_str(), s.transcripts);
        for name in &names {
            let shown = s
                .operations
                .get(name)
                .map_or_else(|| "?".to_string(), op_state);
            line += &format!("{shown:<16} ");
        }
        let _ = writeln!(
            out,
            "{line}{:>9}  {cost}{}",
            skipped.join("/"),
            attention.join(" · "),
        );
    }
    if let Some(currency) = currency {
        let _ = writeln!(
            out,
            "spent by the sessions held: {} {currency}",
            total.shown()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operation as a server writes it, idle but for `state`.
    fn op(state: &str, skipped: u64, extra: serde_json::Value) -> serde_json::Value {
        let mut op = serde_json::json!({
            "state": state, "run_id": null, "in_flight_seconds": null,
            "waiting_seconds": null, "call_seconds": null, "pending": false,
            "tokens": null, "tokens_per_second": null, "runs": 0, "ok": 0,
            "failed": 0, "timed_out": 0, "cancelled": 0, "skipped": skipped,
            "follow_ups": 0, "retries": 0, "nothing_new": 0, "truncated": 0,
            "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0,
            "cost": 0.0, "permit_wait_seconds": 0.0,
            "last_duration_seconds": null, "mean_duration_seconds": null,
            "p95_duration_seconds": null, "last_error": null,
            "covered_generation": null, "retry": null, "stale": false,
            "fresh_in_seconds": null
        });
        if let (Some(op), Some(extra)) = (op.as_object_mut(), extra.as_object()) {
            op.extend(extra.clone());
        }
        op
    }

    fn sessions(ops: serde_json::Value) -> SessionsJson {
        serde_json::from_value(serde_json::json!({
            "backend": {"kind": "builtin", "model": "m", "simulated": true,
                        "reachable": true, "structured_output": null},
            "max_sessions": 10, "refused_sessions": 0, "currency": null,
            "sessions": [{
                "session_id": "s1", "feed": 0, "transcripts": 3, "ended": false,
                "last_transcript_age_seconds": 1.0, "lost_transcripts": 0,
                "operations": ops, "cost": 0.0, "over_budget": null,
                "budget_lifted": false, "attention": []
            }]
        }))
        .expect("a sessions answer")
    }

    #[test]
    fn the_table_has_a_column_for_every_operation_the_server_runs() {
        let idle = |skipped: u64| op("idle", skipped, serde_json::json!({}));
        let running = op(
            "running",
            4,
            serde_json::json!({"in_flight_seconds": 2.0, "pending": true}),
        );
        let text = format_sessions(&sessions(serde_json::json!({
            "summary": idle(1), "mind_map": idle(2), "action_items": running
        })));
        let mut lines = text.lines().skip(1);
        let header = lines.next().unwrap();
        assert!(
            header.contains("SUMMARY") && header.contains("MIND MAP"),
            "{text}"
        );
        assert!(header.contains("ACTION ITEMS"), "{text}");
        let row = lines.next().unwrap();
        assert!(row.contains("running 2.0s +1"), "{text}");
        assert!(row.contains("1/2/4"), "skips in the columns' order: {text}");
    }

    #[test]
    fn the_built_in_two_read_as_they_always_did() {
        let idle = op("idle", 0, serde_json::json!({}));
        let text = format_sessions(&sessions(serde_json::json!({
            "summary": idle.clone(), "mind_map": idle
        })));
        let header = text.lines().nth(1).unwrap();
        assert_eq!(
            header.trim_end(),
            format!(
                "{:<28} {:>6}  {:<16} {:<16} {:>9}  ATTENTION",
                "SESSION", "TX", "SUMMARY", "MIND MAP", "SKIPPED"
            )
        );
        let row = text.lines().nth(2).unwrap();
        assert_eq!(
            row.trim_end(),
            format!(
                "{:<28} {:>6}  {:<16} {:<16} {:>9}",
                "s1", 3, "idle", "idle", "0/0"
            )
        );
    }

    #[test]
    fn a_retry_and_a_stale_operation_say_so() {
        let retrying = op("queued", 0, serde_json::json!({"retry": 2}));
        let stale = op("idle", 0, serde_json::json!({"stale": true}));
        let text = format_sessions(&sessions(serde_json::json!({
            "summary": retrying, "mind_map": stale
        })));
        let row = text.lines().nth(2).unwrap();
        assert!(row.contains("retry 2") && row.contains("stale"), "{text}");
    }

    #[test]
    fn a_status_names_every_operation_with_its_state() {
        let answer: StatusResponse = serde_json::from_value(serde_json::json!({
            "success": true, "session_id": "s1", "summary_processing": false,
            "mind_map_processing": true, "any_processing": true,
            "summary_start_time": null, "mind_map_start_time": 1.0,
            "client_notes_processing": false, "client_notes_start_time": null
        }))
        .expect("a status");
        let text = format_status(&answer);
        assert!(
            text.starts_with("s1: summary idle, mind map processing for "),
            "{text}"
        );
        assert!(text.ends_with(", client notes idle\n"), "{text}");
    }
}
