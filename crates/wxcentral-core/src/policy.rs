//! The engine's timing rules as pure functions of times in unix milliseconds, so they can be
//! checked exhaustively without a clock (DESIGN.md §2 rules 1, 2, 5 and 6).

use crate::upstream::FaultClass;
use rand::Rng;

const SEC: i64 = 1000;

/// Default proactive margin: at least this much before expiry (rule 1).
const MIN_REFRESH_BEFORE: i64 = 300 * SEC;
/// Default serve margin (rule 2).
const DEFAULT_SERVE_MARGIN: i64 = 30 * SEC;

/// When a value is refreshed and until when it is served, relative to its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Margins {
    /// The proactive refresh starts this long before expiry (before jitter).
    pub refresh_before_ms: i64,
    /// The value is served only while more than this is left.
    pub serve_margin_ms: i64,
}

/// The margins for a value living `lifetime_ms`.
///
/// Explicit settings are capped by the same fractions as the defaults so that one config works
/// for WeChat's 7200 s and a test's 4 s. `stable_rotate_ms` is set for tokens from
/// `stable_token`, which only hands out a new token inside that last window: a refresh before
/// it would get the same token back, so the refresh moves inside it (with 20 % to spare).
/// The serve margin is kept at most half the refresh margin so the proactive refresh always
/// starts while the old value is still served.
pub(crate) fn margins(
    lifetime_ms: i64,
    refresh_before_secs: Option<u64>,
    serve_margin_secs: Option<u64>,
    stable_rotate_ms: Option<i64>,
) -> Margins {
    let lifetime = lifetime_ms.max(1);
    let half = lifetime / 2;
    let mut refresh = match refresh_before_secs {
        Some(s) => secs(s),
        None => (lifetime / 10).max(MIN_REFRESH_BEFORE),
    }
    .min(half);
    if let Some(rotate) = stable_rotate_ms.filter(|r| *r > 0) {
        refresh = refresh.min(rotate.min(half) * 4 / 5);
    }
    let serve = match serve_margin_secs {
        Some(s) => secs(s),
        None => DEFAULT_SERVE_MARGIN,
    }
    .min(lifetime / 10)
    .min(refresh / 2);
    Margins { refresh_before_ms: refresh, serve_margin_ms: serve }
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX / SEC).saturating_mul(SEC)
}

/// Whether a value expiring at `expires_at_ms` may be handed out at `now_ms`.
pub(crate) fn servable(expires_at_ms: i64, m: Margins, now_ms: i64) -> bool {
    now_ms < expires_at_ms - m.serve_margin_ms
}

/// Up to a tenth of the refresh margin, so that apps fetched together drift apart without any
/// refresh moving much closer to expiry.
pub(crate) fn jitter_ms(m: Margins, rng: &mut impl Rng) -> i64 {
    let max = m.refresh_before_ms / 10;
    if max <= 0 { 0 } else { rng.gen_range(0..=max) }
}

/// When the proactive refresh of a value is due; jitter is subtracted (earlier, never later).
pub(crate) fn refresh_at(expires_at_ms: i64, m: Margins, jitter_ms: i64) -> i64 {
    expires_at_ms - m.refresh_before_ms - jitter_ms
}

/// A version above everything seen so far. Using the wall clock as a floor keeps versions
/// growing across restarts and nodes even when the store lost the last one.
pub(crate) fn next_version(highest_seen: Option<u64>, now_ms: i64) -> u64 {
    let floor = u64::try_from(now_ms).unwrap_or(0);
    highest_seen.map_or(floor, |v| v.saturating_add(1).max(floor))
}

/// What the backoff after a failed refresh depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failure {
    pub class: FaultClass,
    /// Consecutive failures including this one (1 for the first).
    pub attempt: u32,
    /// Lifetime of the last value (or WeChat's 7200 s if none was ever held); the fast retry
    /// steps scale with it like the margins.
    pub lifetime_ms: i64,
    /// How long the value held can still be served, if one can.
    pub servable_left_ms: Option<i64>,
    /// Time to 00:00 Asia/Shanghai, when WeChat's quotas reset.
    pub until_next_day_ms: i64,
}

/// Transient faults: the first retry after a hundredth of the lifetime (0.1–1 s), doubling.
fn transient_base(lifetime: i64) -> i64 {
    (lifetime / 100).clamp(100, SEC)
}

/// The longest step between retries with nothing valid left: a tenth of the lifetime, at most
/// 10 s (rule 6) and at least 0.2 s.
pub(crate) fn transient_cap(lifetime: i64, servable_left_ms: Option<i64>) -> i64 {
    let base = transient_base(lifetime);
    match servable_left_ms {
        // Several tries fit before the held value stops being served, a minute apart at most.
        Some(left) if left > 0 => (left / 3).clamp(base, 60 * SEC),
        _ => (lifetime / 10).clamp(200, 10 * SEC),
    }
}

/// Delay before the next attempt, before jitter.
///
/// - transient (busy, 5xx, timeout, transport, malformed, other errcodes): exponential from
///   [`transient_base`] up to [`transient_cap`];
/// - config (bad appid/secret, IP whitelist, ...): a fixed slow retry, half a lifetime
///   clamped to 1–60 s, so a fix at WeChat's console is picked up within a minute while a
///   broken app costs at most 1440 calls a day;
/// - quota: every lifetime clamped to 2 s–10 min (an operator may reset the quota at WeChat),
///   and at the latest just after 00:00 Asia/Shanghai, when the quota resets.
pub(crate) fn backoff_ms(f: Failure) -> i64 {
    let lifetime = f.lifetime_ms.max(1);
    match f.class {
        FaultClass::Config => (lifetime / 2).clamp(SEC, 60 * SEC),
        FaultClass::Quota => lifetime.clamp(2 * SEC, 600 * SEC).min(f.until_next_day_ms.max(0) + SEC),
        FaultClass::Busy | FaultClass::Transient | FaultClass::Rejected | FaultClass::TokenInvalid => {
            let base = transient_base(lifetime);
            let cap = transient_cap(lifetime, f.servable_left_ms);
            let shift = f.attempt.saturating_sub(1).min(20);
            base.saturating_mul(1 << shift).min(cap)
        }
    }
}

/// Spreads retries of many credentials failing together: fast retries are shortened by up to
/// 20 % (so the cap still holds), slow ones lengthened by up to 5 % (so a quota retry never
/// lands before midnight).
pub(crate) fn jittered_backoff_ms(f: Failure, rng: &mut impl Rng) -> i64 {
    let d = backoff_ms(f);
    if f.class.stops_retries() { d + rng.gen_range(0..=d / 20) } else { d - rng.gen_range(0..=d / 5) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const H2: i64 = 7200 * SEC;

    #[test]
    fn defaults_match_the_design_for_wechat_lifetimes() {
        let m = margins(H2, None, None, None);
        assert_eq!(m, Margins { refresh_before_ms: 720 * SEC, serve_margin_ms: 30 * SEC });
        // 10 % of a short-ish lifetime is below the 300 s floor.
        assert_eq!(margins(1200 * SEC, None, None, None).refresh_before_ms, 300 * SEC);
        // ... and the floor yields to half the lifetime.
        assert_eq!(margins(400 * SEC, None, None, None).refresh_before_ms, 200 * SEC);
    }

    #[test]
    fn margins_scale_down_to_seconds() {
        let m = margins(4 * SEC, None, None, None);
        assert_eq!(m, Margins { refresh_before_ms: 2 * SEC, serve_margin_ms: 400 });
        let m = margins(10 * SEC, Some(720), Some(30), None);
        assert_eq!(m, Margins { refresh_before_ms: 5 * SEC, serve_margin_ms: SEC });
        for lifetime in [1, 10, 999, 4_000, 60_000, H2, 30 * 86_400 * SEC] {
            for rb in [None, Some(0), Some(1), Some(720), Some(1_000_000)] {
                for sm in [None, Some(0), Some(5), Some(30), Some(100_000)] {
                    for rot in [None, Some(300 * SEC), Some(3 * SEC)] {
                        let m = margins(lifetime, rb, sm, rot);
                        assert!(m.refresh_before_ms <= lifetime / 2, "{lifetime} {m:?}");
                        assert!(m.serve_margin_ms <= lifetime / 10, "{lifetime} {m:?}");
                        assert!(m.serve_margin_ms <= m.refresh_before_ms / 2, "{lifetime} {m:?}");
                        assert!(m.serve_margin_ms >= 0);
                    }
                }
            }
        }
    }

    #[test]
    fn stable_tokens_refresh_inside_the_rotation_window() {
        let m = margins(H2, None, None, Some(300 * SEC));
        assert_eq!(m.refresh_before_ms, 240 * SEC);
        assert_eq!(m.serve_margin_ms, 30 * SEC);
        // Short test lifetimes: ttl 10 s, rotate 3 s.
        let m = margins(10 * SEC, None, None, Some(3 * SEC));
        assert_eq!(m.refresh_before_ms, 2_400);
        assert_eq!(m.serve_margin_ms, 1_000);
        // Even the earliest jittered refresh is inside the window.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let j = jitter_ms(m, &mut rng);
            let at = refresh_at(10 * SEC, m, j);
            assert!(10 * SEC - at < 3 * SEC, "{at}");
            assert!(servable(10 * SEC, m, at), "refresh starts while the value is served");
        }
    }

    #[test]
    fn jitter_is_small_and_only_moves_refreshes_earlier() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let m = margins(H2, None, None, None);
        let mut seen_nonzero = false;
        for _ in 0..10_000 {
            let j = jitter_ms(m, &mut rng);
            assert!((0..=72 * SEC).contains(&j), "{j}");
            seen_nonzero |= j > 0;
        }
        assert!(seen_nonzero);
        assert_eq!(jitter_ms(Margins { refresh_before_ms: 5, serve_margin_ms: 0 }, &mut rng), 0);
    }

    #[test]
    fn serving_stops_at_the_margin() {
        let m = Margins { refresh_before_ms: 2000, serve_margin_ms: 400 };
        assert!(servable(10_000, m, 9_599));
        assert!(!servable(10_000, m, 9_600));
        assert!(!servable(10_000, m, 20_000));
    }

    #[test]
    fn versions_strictly_grow() {
        assert_eq!(next_version(None, 1_700_000_000_000), 1_700_000_000_000);
        assert_eq!(next_version(Some(5), 1_700_000_000_000), 1_700_000_000_000);
        // A clock behind the stored version (another node ahead, or a clock step back).
        assert_eq!(next_version(Some(1_800_000_000_000), 1_700_000_000_000), 1_800_000_000_001);
        let mut v = None;
        for now in [10, 10, 9, 11, 11, 3] {
            let n = next_version(v, now);
            assert!(v.is_none_or(|v| n > v));
            v = Some(n);
        }
        assert_eq!(next_version(Some(u64::MAX), 0), u64::MAX);
    }

    fn failure(class: FaultClass, attempt: u32, lifetime_ms: i64, left: Option<i64>) -> Failure {
        Failure { class, attempt, lifetime_ms, servable_left_ms: left, until_next_day_ms: 5 * 3600 * SEC }
    }

    #[test]
    fn transient_backoff_doubles_and_is_bounded() {
        let steps: Vec<i64> =
            (1..=8).map(|a| backoff_ms(failure(FaultClass::Transient, a, H2, None))).collect();
        assert_eq!(steps, [1000, 2000, 4000, 8000, 10_000, 10_000, 10_000, 10_000]);
        // Nothing valid left: never more than 10 s, whatever the lifetime or attempt.
        for lifetime in [1, 4 * SEC, 60 * SEC, H2, 86_400 * SEC] {
            for attempt in [1, 2, 10, 1000, u32::MAX] {
                for class in [FaultClass::Busy, FaultClass::Transient, FaultClass::Rejected] {
                    let d = backoff_ms(failure(class, attempt, lifetime, None));
                    assert!((100..=10 * SEC).contains(&d), "{lifetime} {attempt} {d}");
                    assert!(d <= (lifetime / 10).max(200), "scaled with the lifetime: {lifetime} {d}");
                }
            }
        }
        // Short lifetimes retry fast.
        assert_eq!(backoff_ms(failure(FaultClass::Busy, 9, 4 * SEC, None)), 400);
        // With a valid value held the steps may grow longer, but several fit before it runs out.
        let d = backoff_ms(failure(FaultClass::Transient, 30, H2, Some(600 * SEC)));
        assert_eq!(d, 60 * SEC);
        let d = backoff_ms(failure(FaultClass::Transient, 30, 4 * SEC, Some(1_500)));
        assert_eq!(d, 500);
    }

    #[test]
    fn stopping_classes_back_off_slowly() {
        assert_eq!(backoff_ms(failure(FaultClass::Config, 1, H2, None)), 60 * SEC);
        assert_eq!(backoff_ms(failure(FaultClass::Config, 1, 4 * SEC, None)), 2 * SEC);
        assert_eq!(backoff_ms(failure(FaultClass::Quota, 1, H2, None)), 600 * SEC);
        assert_eq!(backoff_ms(failure(FaultClass::Quota, 1, 4 * SEC, None)), 4 * SEC);
        // Close to Shanghai midnight the quota retry waits only for the reset.
        let near_midnight =
            Failure { until_next_day_ms: 90 * SEC, ..failure(FaultClass::Quota, 1, H2, None) };
        assert_eq!(backoff_ms(near_midnight), 91 * SEC);
    }

    #[test]
    fn jitter_keeps_backoff_bounds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..2000 {
            let f = failure(FaultClass::Transient, 9, H2, None);
            let d = jittered_backoff_ms(f, &mut rng);
            assert!((8 * SEC..=10 * SEC).contains(&d), "{d}");
            let near = Failure { until_next_day_ms: 90 * SEC, ..failure(FaultClass::Quota, 1, H2, None) };
            let d = jittered_backoff_ms(near, &mut rng);
            assert!(d > 90 * SEC && d <= 91 * SEC + 91 * SEC / 20, "{d}");
        }
    }
}
