//! Signing a delivery, the way Stripe and GitHub sign theirs: an
//! HMAC-SHA256 over the timestamp and the body, keyed with the endpoint's
//! secret, sent as `Inflight-Signature: t=<unix seconds>,v1=<hex>`.
//!
//! A receiver recomputes the HMAC over `"{t}.{body}"` with its copy of the
//! secret, compares in constant time, and refuses a timestamp too far from
//! its clock (a replayed request). [`verify`] does exactly that, for the
//! tests and as the reference for `docs/webhooks.md`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const HEADER: &str = "inflight-signature";

/// The signature header's value for `body` sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac(secret, timestamp, body))
    )
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return Vec::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the signature header does not read t=…,v1=…")]
    Malformed,
    #[error("the signature was made {0} s from now: too far to be fresh")]
    Stale(u64),
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks a signature header against `body`, made within `tolerance`
/// seconds of `now` (unix seconds).
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Result<(), Refused> {
    let mut timestamp = None;
    let mut given = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
            Some(("v1", v)) => given.push(hex::decode(v).map_err(|_| Refused::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Refused::Malformed)?;
    if given.is_empty() {
        return Err(Refused::Malformed);
    }
    let skew = now.abs_diff(timestamp);
    if skew > tolerance {
        return Err(Refused::Stale(skew));
    }
    // `verify_slice` compares in constant time.
    let matches = given.iter().any(|v| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return false;
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(v).is_ok()
    });
    if matches {
        Ok(())
    } else {
        Err(Refused::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_checks_out_with_its_secret_body_and_time_only() {
        let header = signature(b"s3cret", 1_700_000_000, b"{\"a\":1}");
        assert!(header.starts_with("t=1700000000,v1="), "{header}");
        assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
        let check = |secret: &[u8], body: &[u8], now| verify(secret, &header, body, now, 300);
        assert_eq!(check(b"s3cret", b"{\"a\":1}", 1_700_000_100), Ok(()));
        assert_eq!(
            check(b"other", b"{\"a\":1}", 1_700_000_100),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            check(b"s3cret", b"{\"a\":2}", 1_700_000_100),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            check(b"s3cret", b"{\"a\":1}", 1_700_001_000),
            Err(Refused::Stale(1000))
        );
        // The tolerance itself is still fresh.
        assert_eq!(check(b"s3cret", b"{\"a\":1}", 1_700_000_300), Ok(()));
        assert_eq!(
            verify(b"s3cret", "v1=00", b"", 0, 300),
            Err(Refused::Malformed)
        );
    }

    #[test]
    fn the_mac_is_hmac_sha256_over_timestamp_dot_body() {
        // RFC 4231 test case 2's key and the same construction by hand:
        // HMAC-SHA256("Jefe", "what do ya want for nothing?").
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Ours: "0" "." "x".
        let ours = signature(b"Jefe", 0, b"x");
        let mut by_hand = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        by_hand.update(b"0.x");
        assert_eq!(
            ours,
            format!("t=0,v1={}", hex::encode(by_hand.finalize().into_bytes()))
        );
    }
}
