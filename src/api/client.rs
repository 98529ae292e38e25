//! `inflight status`: a small command-line client of the API.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde_json::Value;

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
        let why = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or(body);
        return Err(format!("{url} answered {code}: {why}"));
    }
    if raw_json {
        return Ok(body);
    }
    let value: Value =
        serde_json::from_str(&body).map_err(|e| format!("{url} sent invalid JSON: {e}"))?;
    Ok(match session {
        Some(_) => format_status(&value),
        None => format_sessions(&value),
    })
}

fn format_status(v: &Value) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let op = |name: &str| match v.get(format!("{name}_start_time")).and_then(Value::as_f64) {
        Some(start) => format!("processing for {:.1}s", (now - start).max(0.0)),
        None => "idle".to_string(),
    };
    format!(
        "{}: summary {}, mind map {}\n",
        v.get("session_id").and_then(Value::as_str).unwrap_or("?"),
        op("summary"),
        op("mind_map")
    )
}

fn op_state(op: &Value) -> String {
    let state = match (op.get("retry").and_then(Value::as_u64), op.get("stale")) {
        (Some(n), _) => format!("retry {n}"),
        (None, Some(Value::Bool(true))) => "stale".to_string(),
        _ => op
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string(),
    };
    let mut out = match op.get("in_flight_seconds").and_then(Value::as_f64) {
        Some(s) => format!("{state} {s:.1}s"),
        None => state,
    };
    if op.get("pending").and_then(Value::as_bool) == Some(true) {
        out.push_str(" +1");
    }
    out
}

fn format_sessions(v: &Value) -> String {
    let backend = &v["backend"];
    let mut out = format!(
        "backend: {} {}{}{}\n",
        backend["kind"].as_str().unwrap_or("?"),
        backend["model"].as_str().unwrap_or(""),
        if backend["simulated"] == true {
            " (simulated, no model)"
        } else {
            ""
        },
        if backend["reachable"] == false {
            " (unreachable)"
        } else {
            ""
        },
    );
    // Spend, when the server has a price table.
    let currency = v.get("currency").and_then(Value::as_str);
    let cost_header = currency.map_or(String::new(), |c| format!("{:>10}  ", format!("COST {c}")));
    let empty = Vec::new();
    let sessions = v
        .get("sessions")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    // A column for each operation the server runs (its config file's too),
    // in the server's order; the built-in two when no session says.
    let names: Vec<String> = sessions
        .first()
        .and_then(|s| s.get("operations")?.as_object())
        .map(|ops| ops.keys().cloned().collect())
        .unwrap_or_else(|| vec!["summary".into(), "mind_map".into()]);
    let mut header = format!("{:<28} {:>6}  ", "SESSION", "TX");
    for name in &names {
        header += &format!("{:<16} ", name.replace('_', " ").to_uppercase());
    }
    out += &format!("{header}{:>9}  {cost_header}ATTENTION\n", "SKIPPED");
    let mut total = crate::spend::Cost::ZERO;
    for s in sessions {
        let ops = s.get("operations").cloned().unwrap_or(Value::Null);
        let skipped: Vec<String> = names
            .iter()
            .map(|name| {
                ops[name.as_str()]
                    .get("skipped")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    .to_string()
            })
            .collect();
        // The engine's own reasons, in the dashboard's words, and a spent
        // budget.
        let mut attention: Vec<String> = s
            .get("attention")
            .and_then(Value::as_array)
            .unwrap_or(&empty)
            .iter()
            .filter_map(|a| serde_json::from_value::<crate::engine::Attention>(a.clone()).ok())
            .map(|a| a.describe())
            .collect();
        if let Some(budget) = s.get("over_budget").and_then(Value::as_str) {
            attention.push(format!("⊘ budget {budget} spent"));
        }
        let cost = match currency {
            Some(_) => {
                let cost = crate::spend::Cost::from_units(
                    s.get("cost").and_then(Value::as_f64).unwrap_or(0.0),
                );
                total = total.plus(cost);
                format!("{:>10}  ", cost.shown())
            }
            None => String::new(),
        };
        let mut line = format!(
            "{:<28} {:>6}  ",
            s.get("session_id").and_then(Value::as_str).unwrap_or("?"),
            s.get("transcripts").and_then(Value::as_u64).unwrap_or(0),
        );
        for name in &names {
            line += &format!("{:<16} ", op_state(&ops[name.as_str()]));
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

    fn sessions(ops: serde_json::Value) -> Value {
        serde_json::json!({
            "backend": {"kind": "builtin", "model": "m", "simulated": true},
            "currency": null,
            "sessions": [{
                "session_id": "s1", "transcripts": 3, "operations": ops,
                "attention": [], "over_budget": null, "cost": 0.0
            }]
        })
    }

    #[test]
    fn the_table_has_a_column_for_every_operation_the_server_runs() {
        let idle = |skipped: u64| serde_json::json!({"state": "idle", "skipped": skipped, "pending": false});
        let running = serde_json::json!({"state": "running", "in_flight_seconds": 2.0, "skipped": 4, "pending": true});
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
        let idle = serde_json::json!({"state": "idle", "skipped": 0, "pending": false});
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
}
