//! Repeated token requests, seen as suspicions of the value handed out.
//!
//! An SDK that calls WeChat directly and gets 40001 asks its token endpoint again at once. The
//! hub cannot see that 40001, but it sees the same caller asking again for the value it just
//! gave: that is reported as a suspicion ([`Engine::report_suspect`], guarded to one refresh
//! per 30 s and 20 a day). A caller is its address, the app and the secret or key it showed,
//! kept only as a digest.
//!
//! [`Engine::report_suspect`]: wxcentral_core::Engine::report_suspect

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// A second request for the same value within this long counts as a repeat.
pub const WINDOW_MS: i64 = 60_000;
/// ... but only when the first answer promised at least this long: a caller told that the
/// value has minutes left (near a rotation) may ask again for good reason (SDKs cache for
/// `expires_in` minus a margin of up to 1,500 s, and below that margin ask on every call).
pub const MIN_PROMISED_SECS: i64 = 1800;
/// Callers remembered at most; past that, those outside the window are forgotten (and if the
/// window alone holds more, everyone: a flood of callers must not grow the map).
const MAX_CALLERS: usize = 50_000;

#[derive(Debug, Default)]
pub struct Repeats {
    seen: Mutex<HashMap<[u8; 32], (u64, i64, i64)>>,
}

impl Repeats {
    /// Records that `caller` got `version` at `now_ms`, promised for `expires_in` seconds; true
    /// if it had been given that same version within the window before, with a promise long
    /// enough that asking again means the caller no longer trusts it.
    pub fn is_repeat(&self, caller: [u8; 32], version: u64, expires_in: i64, now_ms: i64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= MAX_CALLERS && !seen.contains_key(&caller) {
            seen.retain(|_, (_, at, _)| now_ms - *at < WINDOW_MS);
            if seen.len() >= MAX_CALLERS {
                seen.clear();
            }
        }
        let previous = seen.insert(caller, (version, now_ms, expires_in));
        previous.is_some_and(|(v, at, promised)| {
            v == version && now_ms - at < WINDOW_MS && promised >= MIN_PROMISED_SECS
        })
    }
}

/// The digest naming a caller.
pub fn caller(peer: Option<std::net::IpAddr>, appid: &str, presented: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(peer.map(|p| p.to_string()).unwrap_or_default().as_bytes());
    h.update([0]);
    h.update(appid.as_bytes());
    h.update([0]);
    h.update(presented.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_the_same_caller_and_value_within_the_window() {
        let r = Repeats::default();
        let a = caller(None, "wx1", "s");
        let b = caller(None, "wx1", "other");
        assert!(!r.is_repeat(a, 1, 7000, 0));
        assert!(!r.is_repeat(b, 1, 7000, 10), "another caller");
        assert!(r.is_repeat(a, 1, 7000, 1000));
        assert!(!r.is_repeat(a, 2, 7000, 2000), "a new value is no repeat");
        assert!(!r.is_repeat(a, 2, 7000, 2000 + WINDOW_MS), "outside the window");
        // Told the value has minutes left, asking again is no suspicion.
        assert!(!r.is_repeat(b, 3, 600, 3000));
        assert!(!r.is_repeat(b, 3, 600, 3100));
    }

    #[test]
    fn the_map_is_bounded() {
        let r = Repeats::default();
        for i in 0..(MAX_CALLERS as u64 + 10) {
            let mut c = [0u8; 32];
            c[..8].copy_from_slice(&i.to_le_bytes());
            r.is_repeat(c, 1, 7000, 0);
        }
        assert!(r.seen.lock().unwrap().len() <= MAX_CALLERS);
    }
}
