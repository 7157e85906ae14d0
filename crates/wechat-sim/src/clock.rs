//! The simulator's own clock: real time plus an offset that only grows.
//!
//! Tests move it forward (`POST /__sim/clock`) to cross expiries and Asia/Shanghai day boundaries
//! without sleeping. It is deliberately not tokio's paused time: the code under test runs on a
//! real clock in another task or process, and only WeChat's side should jump.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as the simulator sees them.
pub type Millis = u64;

const SHANGHAI_OFFSET_SECS: u64 = 8 * 3600;

#[derive(Debug)]
pub struct Clock {
    start_unix_ms: Millis,
    start: Instant,
    offset_ms: AtomicU64,
}

impl Clock {
    pub fn new() -> Self {
        let start_unix_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        Self { start_unix_ms, start: Instant::now(), offset_ms: AtomicU64::new(0) }
    }

    /// Monotonic: built on `Instant`, so a wall-clock step on the host never moves it back.
    pub fn now_ms(&self) -> Millis {
        self.start_unix_ms + self.start.elapsed().as_millis() as u64 + self.offset_ms.load(Ordering::SeqCst)
    }

    pub fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }

    pub fn advance_secs(&self, secs: u64) {
        self.offset_ms.fetch_add(secs.saturating_mul(1000), Ordering::SeqCst);
    }

    pub fn offset_secs(&self) -> u64 {
        self.offset_ms.load(Ordering::SeqCst) / 1000
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The Asia/Shanghai calendar day (UTC+08:00, no DST) a moment falls in; quotas reset when it
/// changes, at 00:00 Beijing time as WeChat's do.
pub fn shanghai_day(now_ms: Millis) -> u64 {
    (now_ms / 1000 + SHANGHAI_OFFSET_SECS) / 86_400
}

/// Seconds from `now_ms` to the next 00:00 Asia/Shanghai.
pub fn secs_to_next_shanghai_midnight(now_ms: Millis) -> u64 {
    let local = now_ms / 1000 + SHANGHAI_OFFSET_SECS;
    86_400 - local % 86_400
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shanghai_day_changes_at_16_utc() {
        // 2024-01-01T15:59:59Z is 23:59:59 in Shanghai; one second later is the next day there.
        let before = 1_704_124_799_000;
        assert_eq!(shanghai_day(before) + 1, shanghai_day(before + 1000));
        assert_eq!(secs_to_next_shanghai_midnight(before), 1);
    }

    #[test]
    fn advance_moves_forward() {
        let c = Clock::new();
        let t0 = c.now_ms();
        c.advance_secs(3600);
        assert!(c.now_ms() >= t0 + 3_600_000);
        assert_eq!(c.offset_secs(), 3600);
    }
}
