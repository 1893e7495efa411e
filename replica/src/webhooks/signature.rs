//! How a webhook delivery is signed, so a receiver can check it came from
//! chatd, unchanged, recently (ARCHITECTURE.md §17, invariant 17).
//!
//! Every attempt carries:
//!
//! - `Chatd-Delivery`: the delivery id, the same on every attempt (and the
//!   body's `id`): receivers drop a delivery id they have processed.
//! - `Chatd-Event`: the event (`turn.completed`, …).
//! - `Chatd-Timestamp`: when this attempt was signed, in Unix seconds.
//! - `Chatd-Signature`: `v1=` and the lowercase hex HMAC-SHA256, keyed with
//!   the webhook's secret, of `{timestamp}.{body}` (the timestamp header's
//!   digits, a full stop, the raw body bytes).
//!
//! To verify: recompute the HMAC over the timestamp header and the raw
//! body, compare in constant time, and refuse a timestamp more than
//! [`REPLAY_WINDOW_SECS`] from your clock (a captured request cannot be
//! replayed later); de-duplicate by `Chatd-Delivery` (retries re-sign with
//! a new timestamp, the id and body stay the same).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The delivery id header.
pub const DELIVERY_HEADER: &str = "chatd-delivery";
/// The event header.
pub const EVENT_HEADER: &str = "chatd-event";
/// The signing time header (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "chatd-timestamp";
/// The signature header (`v1=<hex>`).
pub const SIGNATURE_HEADER: &str = "chatd-signature";
/// How far a receiver should accept a timestamp from its own clock.
pub const REPLAY_WINDOW_SECS: i64 = 300;

/// The `Chatd-Signature` value for `body` signed at `timestamp` with `secret`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: Python's hmac.new(b"Jefe",
        // b"1.what do ya want for nothing?", hashlib.sha256).hexdigest().
        assert_eq!(
            sign("Jefe", 1, b"what do ya want for nothing?"),
            "v1=a9049465ce89cfb8e9aac62333abda66f80e3403f51f57f6bae3c3a4485eca38"
        );
        assert_ne!(
            sign("Jefe", 2, b"what do ya want for nothing?"),
            sign("Jefe", 1, b"what do ya want for nothing?")
        );
    }
}
