//! The engine's timing rules as pure functions of times in unix milliseconds, so they can be
//! checked exhaustively without a clock (DESIGN.md §2 rules 1, 2, 4, 5 and 6).

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

/// Bounds of the guard kept before the expiry of a value WeChat confirmed to have no successor.
const MIN_CONFIRMED_GUARD: i64 = 300;
const MAX_CONFIRMED_GUARD: i64 = SEC;

/// How close to its expiry a value may be served once WeChat, asked in the refresh window,
/// answered with that same value (see [`confirmed_in_window`]).
///
/// The serve margin exists so that the proactive refresh can replace a value before callers
/// hold one about to die. For a value WeChat hands out unchanged until it expires (tickets) no
/// replacement exists before expiry, and the margin only turns into a hole in which nothing can
/// be served (30 s every 2 h). What is left to protect is the caller's use of the value right
/// after the read (signing a page, the browser's `wx.config`): a second at WeChat's lifetimes,
/// scaled down for short ones but never below a few hundred milliseconds, and never more than
/// the serve margin itself.
pub(crate) fn confirmed_guard_ms(m: Margins, lifetime_ms: i64) -> i64 {
    (lifetime_ms.max(1) / 100).clamp(MIN_CONFIRMED_GUARD, MAX_CONFIRMED_GUARD).min(m.serve_margin_ms)
}

/// The last moment a value expiring at `expires_at_ms` is handed out: the serve margin before
/// expiry, or only the [`confirmed_guard_ms`] once WeChat confirmed it has no successor.
pub(crate) fn serve_end(expires_at_ms: i64, m: Margins, lifetime_ms: i64, confirmed: bool) -> i64 {
    let margin = if confirmed { confirmed_guard_ms(m, lifetime_ms) } else { m.serve_margin_ms };
    expires_at_ms - margin
}

/// Where WeChat's real expiry of a value lies, `earliest_ms <= expiry < latest_ms`.
///
/// The engine's `expires_at` is the earliest bound (safe to serve against); the latest bound is
/// when a value that stays the same until it expires can first be replaced, so the fetch of its
/// successor goes there and not a rounding error earlier, where it would get the old value back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExpiryWindow {
    pub earliest_ms: i64,
    pub latest_ms: i64,
}

/// What one answer says: `expires_in` whole seconds left, rounded down, counted by WeChat at
/// some moment between `sent_ms` and `received_ms`.
pub(crate) fn observe_expiry(sent_ms: i64, received_ms: i64, expires_in_secs: u64) -> ExpiryWindow {
    let left = secs(expires_in_secs);
    ExpiryWindow {
        earliest_ms: sent_ms.saturating_add(left),
        latest_ms: received_ms.max(sent_ms).saturating_add(left).saturating_add(SEC),
    }
}

impl ExpiryWindow {
    /// Both answers at once. If they cannot both hold (a clock step, or WeChat changed its mind
    /// about the value), the newer answer `other` alone is believed.
    pub(crate) fn narrow(self, other: Self) -> Self {
        let both = Self {
            earliest_ms: self.earliest_ms.max(other.earliest_ms),
            latest_ms: self.latest_ms.min(other.latest_ms),
        };
        if both.earliest_ms < both.latest_ms { both } else { other }
    }
}

/// Where in a second the confirmation is sent, past the latest expiry of a value issued at our
/// own fetch (a few milliseconds absorb clock drift between us and WeChat).
const CHECK_PHASE_MS: i64 = 20;

/// When to ask WeChat for a value that stays the same until it expires, given the proactive
/// plan `planned_ms` and the window its fetch left. Up to a second earlier than planned, at the
/// phase where WeChat's rounded-down `expires_in` tells whether the value was issued at our
/// fetch (the usual case: we fetch just after the previous one expired). If so the answer pins
/// the expiry to within the two round trips, instead of the second that rounding leaves, and
/// the next fetch waits that much less after expiry. No extra call: only the timing moves.
pub(crate) fn aligned_check_at(planned_ms: i64, fetched: ExpiryWindow) -> i64 {
    // A value issued at our fetch expires at latest − 1 s at the latest.
    let anchor = fetched.latest_ms - SEC + CHECK_PHASE_MS;
    if anchor <= planned_ms {
        return planned_ms;
    }
    let back = (anchor - planned_ms + SEC - 1) / SEC;
    anchor - back * SEC
}

/// From when an answer with the value already held counts as WeChat's confirmation that no
/// newer value comes before expiry: the earliest the proactive check can run (full jitter, then
/// alignment). Earlier answers (a report at mid-life) leave the proactive check to come.
pub(crate) fn confirmed_in_window(expires_at_ms: i64, m: Margins, now_ms: i64) -> bool {
    now_ms >= expires_at_ms - m.refresh_before_ms - m.refresh_before_ms / 10 - SEC
}

/// Slack after the latest possible expiry before fetching the successor: clock drift between
/// us and WeChat since the answers that bound it.
const AFTER_EXPIRY_MS: i64 = 100;

/// When to fetch the successor of a value that stays the same until it expires: just after
/// its latest possible expiry, so the one fetch gets the new value (never at once: the answer
/// that produced `window` came just now).
pub(crate) fn successor_fetch_at(window: ExpiryWindow, now_ms: i64) -> i64 {
    window.latest_ms.max(now_ms) + AFTER_EXPIRY_MS
}

/// Up to a tenth of the refresh margin, so that apps fetched together drift apart without any
/// refresh moving much closer to expiry.
pub(crate) fn jitter_ms(m: Margins, rng: &mut impl Rng) -> i64 {
    let max = m.refresh_before_ms / 10;
    if max <= 0 { 0 } else { rng.gen_range(0..=max) }
}

/// Until when a value whose refresh kills it (after WeChat's `overlap_ms`) surely works: no
/// proactive refresh comes before its earliest jittered time, so the value lives at least the
/// overlap past that, and never past its expiry. Refreshes that come earlier (a caller reported
/// the value rejected, an admin forced one) are not planned and cannot be promised against.
pub(crate) fn promised_until(expires_at_ms: i64, m: Margins, overlap_ms: i64) -> i64 {
    let earliest_refresh = refresh_at(expires_at_ms, m, m.refresh_before_ms / 10);
    expires_at_ms.min(earliest_refresh.saturating_add(overlap_ms.max(0)))
}

/// When the proactive refresh of a value is due; jitter is subtracted (earlier, never later).
pub(crate) fn refresh_at(expires_at_ms: i64, m: Margins, jitter_ms: i64) -> i64 {
    expires_at_ms - m.refresh_before_ms - jitter_ms
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
    use rand::{Rng, SeedableRng};

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
    fn confirmed_values_are_served_up_to_a_small_guard() {
        // WeChat's 2 h: one second instead of thirty.
        let m = margins(H2, None, None, None);
        assert_eq!(confirmed_guard_ms(m, H2), SEC);
        assert_eq!(serve_end(H2, m, H2, false), H2 - 30 * SEC);
        assert_eq!(serve_end(H2, m, H2, true), H2 - SEC);
        // Lifetimes of seconds: a few hundred milliseconds, never more than the serve margin.
        assert_eq!(confirmed_guard_ms(margins(6 * SEC, None, None, None), 6 * SEC), 300);
        assert_eq!(confirmed_guard_ms(margins(60 * SEC, None, None, None), 60 * SEC), 600);
        assert_eq!(confirmed_guard_ms(margins(2 * SEC, None, None, None), 2 * SEC), 200);
        assert_eq!(confirmed_guard_ms(margins(H2, None, Some(0), None), H2), 0);
        for lifetime in [1, 999, 4 * SEC, 60 * SEC, H2, 30 * 86_400 * SEC] {
            for sm in [None, Some(0), Some(1), Some(30), Some(100_000)] {
                let m = margins(lifetime, None, sm, None);
                let g = confirmed_guard_ms(m, lifetime);
                assert!((0..=SEC).contains(&g) && g <= m.serve_margin_ms, "{lifetime} {m:?} {g}");
                assert!(serve_end(lifetime, m, lifetime, true) >= serve_end(lifetime, m, lifetime, false));
            }
        }
    }

    #[test]
    fn the_check_window_starts_with_the_earliest_proactive_check() {
        let m = margins(H2, None, None, None);
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..1000 {
            let planned = refresh_at(H2, m, jitter_ms(m, &mut rng));
            let w = ExpiryWindow { earliest_ms: H2, latest_ms: H2 + rng.gen_range(0..=2 * SEC) };
            assert!(confirmed_in_window(H2, m, aligned_check_at(planned, w)));
        }
        // A report at mid-life is not a confirmation.
        assert!(!confirmed_in_window(H2, m, H2 / 2));
        assert!(!confirmed_in_window(H2, m, H2 - 720 * SEC - 72 * SEC - SEC - 1));
    }

    #[test]
    fn expiry_windows_bound_wechats_rounded_answers() {
        assert_eq!(
            observe_expiry(1_000, 1_040, 7200),
            ExpiryWindow { earliest_ms: 7_201_000, latest_ms: 7_202_040 }
        );
        let a = ExpiryWindow { earliest_ms: 100, latest_ms: 1_100 };
        assert_eq!(
            a.narrow(ExpiryWindow { earliest_ms: 600, latest_ms: 1_600 }),
            ExpiryWindow { earliest_ms: 600, latest_ms: 1_100 }
        );
        // Answers that cannot both hold: the newer one wins.
        let late = ExpiryWindow { earliest_ms: 5_000, latest_ms: 6_000 };
        assert_eq!(a.narrow(late), late);
        assert_eq!(successor_fetch_at(a, 0), 1_100 + AFTER_EXPIRY_MS);
        assert_eq!(successor_fetch_at(a, 5_000), 5_000 + AFTER_EXPIRY_MS);
    }

    /// WeChat's side modelled: a value expiring at `real` answered at `t` says
    /// `floor((real - t) / 1000)` seconds.
    fn answer(real: i64, t: i64) -> u64 {
        u64::try_from((real - t).div_euclid(SEC)).unwrap()
    }

    #[test]
    fn the_aligned_check_pins_the_expiry_of_a_value_issued_at_our_fetch() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for lifetime in [6 * SEC, 60 * SEC, H2] {
            let m = margins(lifetime, None, None, None);
            for _ in 0..5000 {
                let issued_here = rng.gen_bool(0.5);
                let s1 = 1_700_000_000_000 + rng.gen_range(0..SEC);
                let (lat1, lat2) = (rng.gen_range(0..300), rng.gen_range(0..300));
                let t1 = s1 + rng.gen_range(0..=lat1);
                let r1 = s1 + lat1;
                // Issued at our fetch (WeChat's full lifetime), or earlier by someone else.
                let real =
                    if issued_here { t1 + lifetime } else { t1 + lifetime - rng.gen_range(1..SEC * 5) };
                let w1 = observe_expiry(s1, r1, answer(real, t1));
                assert!(w1.earliest_ms <= real && real < w1.latest_ms);
                let planned = refresh_at(w1.earliest_ms, m, jitter_ms(m, &mut rng));
                let s2 = aligned_check_at(planned, w1);
                assert!(s2 <= planned && s2 > planned - SEC, "{planned} {s2}");
                assert!(confirmed_in_window(w1.earliest_ms, m, s2));
                let delay = rng.gen_range(0..50); // timer and store before the call
                let t2 = s2 + delay + rng.gen_range(0..=lat2);
                let r2 = s2 + delay + lat2;
                let w = w1.narrow(observe_expiry(s2 + delay, r2, answer(real, t2)));
                assert!(w.earliest_ms <= real && real < w.latest_ms, "{w:?} {real}");
                let fetch = successor_fetch_at(w, r2);
                assert!(fetch > real);
                let slack =
                    if issued_here { lat1 + CHECK_PHASE_MS + delay + lat2 } else { SEC + lat1 + lat2 };
                assert!(w.latest_ms - real <= slack, "{} > {slack} ({issued_here})", w.latest_ms - real);
            }
        }
    }

    #[test]
    fn promises_end_an_overlap_after_the_earliest_refresh() {
        let m = margins(H2, None, None, None);
        // 7200 s: refreshed from 6408 s on (720 s margin, up to 72 s jitter), alive 300 s after.
        assert_eq!(promised_until(H2, m, 300 * SEC), 6708 * SEC);
        // An overlap longer than the margin promises no more than the expiry.
        assert_eq!(promised_until(H2, m, 3600 * SEC), H2);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let planned = refresh_at(H2, m, jitter_ms(m, &mut rng));
            assert!(planned + 300 * SEC >= promised_until(H2, m, 300 * SEC));
        }
        // 12 s lifetime with a 3 s overlap, as the tests run it.
        let m = margins(12 * SEC, None, None, None);
        let p = promised_until(12 * SEC, m, 3 * SEC);
        assert!(p < 12 * SEC && p >= refresh_at(12 * SEC, m, m.refresh_before_ms / 10), "{p}");
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
