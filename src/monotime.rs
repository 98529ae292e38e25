//! Monotonic instants on the wire.
//!
//! A snapshot's times are `Instant`s, which mean nothing outside the process
//! that made them. On the wire each is the signed number of milliseconds
//! since this process's anchor (the first instant it asked for one), so the
//! same instant always reads the same: a row that did not change serialises
//! to the same bytes, which is what lets `/api/dashboard` send only the rows
//! that changed. A reader maps them back onto its own clock with
//! [`decoding_with`], given where the sender's anchor falls on it.

use std::cell::Cell;
use std::sync::LazyLock;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};
use tokio::time::Instant;

static ANCHOR: LazyLock<Instant> = LazyLock::new(Instant::now);

thread_local! {
    /// Where the sender's anchor falls on this process's clock, while
    /// decoding its instants.
    static DECODE_ANCHOR: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Milliseconds from this process's anchor to `at` (negative before it).
pub fn to_millis(at: Instant) -> i64 {
    let anchor = *ANCHOR;
    if at >= anchor {
        i64::try_from(at.duration_since(anchor).as_millis()).unwrap_or(i64::MAX)
    } else {
        -i64::try_from(anchor.duration_since(at).as_millis()).unwrap_or(i64::MAX)
    }
}

/// This process's now, on the wire.
pub fn now_millis() -> i64 {
    to_millis(Instant::now())
}

fn from_millis(millis: i64) -> Instant {
    let anchor = DECODE_ANCHOR.with(Cell::get).unwrap_or(*ANCHOR);
    from_millis_at(anchor, millis)
}

/// Runs `decode` with the sender's instants mapped so that its `sender_now`
/// (milliseconds, as it sent them) is this process's now.
pub fn decoding_with<T>(sender_now: i64, decode: impl FnOnce() -> T) -> T {
    let at_zero = from_millis_at(Instant::now(), -sender_now);
    let previous = DECODE_ANCHOR.with(|a| a.replace(Some(at_zero)));
    let value = decode();
    DECODE_ANCHOR.with(|a| a.set(previous));
    value
}

fn from_millis_at(base: Instant, millis: i64) -> Instant {
    let offset = Duration::from_millis(millis.unsigned_abs());
    if millis >= 0 {
        base.checked_add(offset).unwrap_or(base)
    } else {
        base.checked_sub(offset).unwrap_or(base)
    }
}

/// `#[serde(with = "crate::monotime")]` for an `Instant`.
pub fn serialize<S: Serializer>(at: &Instant, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64(to_millis(*at))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
    Ok(from_millis(i64::deserialize(d)?))
}

/// `#[serde(with = "crate::monotime::option")]` for an `Option<Instant>`.
pub(crate) mod option {
    use super::*;

    pub fn serialize<S: Serializer>(at: &Option<Instant>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_some(&to_millis(*at)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Instant>, D::Error> {
        Ok(Option::<i64>::deserialize(d)?.map(from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct At {
        #[serde(with = "super")]
        at: Instant,
        #[serde(with = "super::option")]
        maybe: Option<Instant>,
    }

    #[test]
    fn the_same_instant_always_reads_the_same() {
        let at = Instant::now() - Duration::from_secs(3);
        let a = serde_json::to_string(&At { at, maybe: None }).unwrap();
        std::thread::yield_now();
        let b = serde_json::to_string(&At { at, maybe: None }).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn a_reader_maps_instants_onto_its_own_clock() {
        // The sender's now is 10 000 ms; an instant 4 s before it must read
        // as 4 s ago here, wherever the anchors are.
        let json = r#"{"at": 6000, "maybe": 9500}"#;
        let at: At = decoding_with(10_000, || serde_json::from_str(json).unwrap());
        let ago = Instant::now().duration_since(at.at);
        assert!(
            ago >= Duration::from_secs(4) && ago < Duration::from_millis(4100),
            "{ago:?}"
        );
        let ago = Instant::now().duration_since(at.maybe.unwrap());
        assert!(
            ago >= Duration::from_millis(500) && ago < Duration::from_millis(600),
            "{ago:?}"
        );
    }
}
