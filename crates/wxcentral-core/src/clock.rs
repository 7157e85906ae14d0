//! Wall-clock unix milliseconds: credential expiries are absolute times shared with WeChat, the
//! store and other nodes, so they cannot live on a process-local monotonic clock. Sleeping is
//! done with tokio's timers on durations derived from these.

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
