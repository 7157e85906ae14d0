//! WeChat's day: quotas reset at 00:00 Asia/Shanghai, which has no DST, so a fixed +08:00
//! offset is exact.

use time::{OffsetDateTime, UtcOffset};

const SHANGHAI: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(o) => o,
    Err(_) => UtcOffset::UTC,
};

/// The WeChat day (`YYYY-MM-DD` in Asia/Shanghai) of a unix time in milliseconds.
pub fn wechat_day(unix_ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(unix_ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(SHANGHAI);
    let d = t.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Milliseconds from `unix_ms` to the next 00:00 Asia/Shanghai.
pub fn ms_until_next_day(unix_ms: i64) -> i64 {
    const DAY: i64 = 86_400_000;
    const OFFSET: i64 = 8 * 3_600_000;
    DAY - (unix_ms + OFFSET).rem_euclid(DAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_turns_at_shanghai_midnight() {
        // 2026-11-20T15:59:59Z is 23:59:59 in Shanghai; one second later is the next day.
        let before = 1_795_190_399_000;
        assert_eq!(wechat_day(before), "2026-11-20");
        assert_eq!(wechat_day(before + 1000), "2026-11-21");
        assert_eq!(ms_until_next_day(before), 1000);
        assert_eq!(ms_until_next_day(before + 1000), 86_400_000);
    }
}
