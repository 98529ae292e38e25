//! The parsers of flag values that need more than their type's own: URLs
//! of feeds and of Redis, durations, instance names, operations. A value is
//! refused when the flags are read (exit 2, with what to write instead),
//! whichever of flag, variable or file gave it.

use std::time::Duration;

use crate::model::Operation;

/// A feed's URL: `ws://` or `wss://` with a host. Checked once, here, so a
/// typo stops inflight at start instead of retrying forever.
pub(super) fn parse_feed_url(raw: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| {
        format!(
            "{:?} is not a URL ({e}); write e.g. ws://127.0.0.1:9100/live",
            crate::net::redact_url(raw)
        )
    })?;
    if !matches!(url.scheme(), "ws" | "wss") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{:?} is not a WebSocket URL; write ws://HOST[:PORT]/PATH or wss://…",
            crate::net::redact_url(raw)
        ));
    }
    Ok(raw.to_string())
}

pub(super) fn parse_redis_url(raw: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| {
        format!(
            "{:?} is not a URL ({e}); write e.g. redis://127.0.0.1:6379/0",
            crate::net::redact_url(raw)
        )
    })?;
    if url.scheme() != "redis" || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{:?} is not a Redis URL; write redis://[:PASSWORD@]HOST[:PORT][/DB]",
            crate::net::redact_url(raw)
        ));
    }
    Ok(raw.to_string())
}

pub(super) fn parse_lease_ttl(raw: &str) -> Result<Duration, String> {
    match parse_duration(raw)? {
        d if d < Duration::from_millis(300) => Err(format!(
            "{raw:?} is too short for a lease; give 300ms or more"
        )),
        d => Ok(d),
    }
}

pub(super) fn parse_instance(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(raw.to_string())
    } else {
        Err(format!(
            "{raw:?} is not an instance name: up to 64 letters, digits, '-', '_', '.' or ':'"
        ))
    }
}

pub(super) fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw)
        .map_err(|e| format!("{raw:?} is not a duration ({e}); write e.g. 300s or 2m"))
}

pub(super) fn parse_positive_duration(raw: &str) -> Result<Duration, String> {
    match parse_duration(raw)? {
        d if d.is_zero() => Err(format!("{raw:?} must be above zero")),
        d => Ok(d),
    }
}

/// An amount of the prices' currency, above zero (`0.50`).
pub(super) fn parse_amount(raw: &str) -> Result<crate::spend::Cost, String> {
    match raw.trim().parse::<f64>() {
        Ok(units) if units.is_finite() && units > 0.0 && units < 1e9 => {
            Ok(crate::spend::Cost::from_units(units))
        }
        _ => Err(format!(
            "{raw:?} is not an amount: a number above zero, in the prices' currency (e.g. 5.0)"
        )),
    }
}

pub(super) fn parse_operation(raw: &str) -> Result<Operation, String> {
    // Only the name's form here: which names are defined is known once
    // the config file is read (`EngineArgs::check_ops`).
    Operation::named(raw).map_err(|e| e.to_string())
}

/// A size in bytes: a whole number with an optional unit (`KB`, `MB`,
/// `GB` are powers of 1000; `KiB`, `MiB`, `GiB` of 1024).
pub(super) fn parse_size(raw: &str) -> Result<u64, String> {
    let text = raw.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_bytes: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "{raw:?}: {other:?} is not a unit; write e.g. 64MiB, 500MB or 1048576"
            ));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a size; write e.g. 64MiB, 500MB or 1048576"))?;
    match n.checked_mul(unit_bytes) {
        Some(bytes) if bytes >= 4096 => Ok(bytes),
        Some(_) => Err(format!("{raw:?} is too small: at least 4096 bytes")),
        None => Err(format!("{raw:?} is too large")),
    }
}
