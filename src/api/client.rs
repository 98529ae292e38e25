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
    out += &format!(
        "{:<28} {:>6}  {:<16} {:<16} {:>9}  {cost_header}{}\n",
        "SESSION", "TX", "SUMMARY", "MIND MAP", "SKIPPED", "ATTENTION"
    );
    let empty = Vec::new();
    let mut total = crate::spend::Cost::ZERO;
    for s in v
        .get("sessions")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
    {
        let ops = s.get("operations").cloned().unwrap_or(Value::Null);
        let skipped = |name: &str| {
            ops[name]
                .get("skipped")
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
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
        let _ = writeln!(
            out,
            "{:<28} {:>6}  {:<16} {:<16} {:>9}  {cost}{}",
            s.get("session_id").and_then(Value::as_str).unwrap_or("?"),
            s.get("transcripts").and_then(Value::as_u64).unwrap_or(0),
            op_state(&ops["summary"]),
            op_state(&ops["mind_map"]),
            format!("{}/{}", skipped("summary"), skipped("mind_map")),
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
