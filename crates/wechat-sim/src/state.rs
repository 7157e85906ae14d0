//! Everything the simulator remembers, behind one mutex.
//!
//! The lock is never held across an `.await`: handlers take it, decide, release it, and only then
//! sleep, hang or push. That keeps a faulted or slow request from stalling the others.

use crate::clock::{Millis, shanghai_day};
use crate::config::{SimApp, SimComponent, SimConfig};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

/// What kind of credential a token is; each family rotates by its own rules and never touches
/// another's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Classic,
    Stable,
    Authorizer,
    Component,
}

#[derive(Debug, Clone)]
pub struct TokenRec {
    pub appid: String,
    pub family: Family,
    pub expires_at: Millis,
    /// When it stopped working before its expiry (superseded or force-refreshed away).
    pub invalidated_at: Option<Millis>,
}

/// Per configured app: which classic and stable tokens are current.
#[derive(Debug, Default)]
pub struct AppState {
    pub classic_current: Option<String>,
    pub classic_prev: Option<String>,
    pub stable_current: Option<String>,
    pub force_day: u64,
    pub force_count: u64,
    pub last_forced: Option<Millis>,
}

/// One delivery attempt of a push.
#[derive(Debug, Clone, Serialize)]
pub struct PushRecord {
    /// Which push this attempt belongs to: a retry repeats its push's id.
    pub push_id: u64,
    /// 1 for the first delivery, 2.. for retries.
    pub attempt: u32,
    pub info_type: String,
    pub at: u64,
    pub ok: bool,
    /// HTTP status of the receiver's answer; absent when the POST itself failed.
    pub status: Option<u16>,
    pub error: Option<String>,
}

#[derive(Debug, Default)]
pub struct ComponentState {
    /// Every verify ticket pushed, with its push time: any of them is accepted while fresh.
    pub verify_tickets: HashMap<String, Millis>,
    pub token_current: Option<String>,
    pub token_prev: Option<String>,
    /// Delivery attempts acknowledged with `success` (at most one per push: the last attempt).
    pub pushes_ok: u64,
    /// Delivery attempts not acknowledged, retried or not.
    pub pushes_failed: u64,
    /// Attempts after the first.
    pub pushes_retried: u64,
    /// Pushes whose every attempt failed.
    pub pushes_given_up: u64,
    pub recent_pushes: VecDeque<PushRecord>,
    /// `POST /__sim/rotation`'s (enabled, grace secs), over the config's until a reset.
    pub rotation: Option<(bool, u64)>,
    /// The authorizers currently authorized, in `api_get_authorizer_list` order (auth time, then
    /// appid), so a page is read without sorting every authorizer.
    pub authorized: BTreeSet<(Millis, String)>,
}

#[derive(Debug)]
pub struct AuthorizerState {
    pub refresh_token: String,
    /// The refresh token it replaced and when that one stops: only the latest predecessor is
    /// kept, so anything older answers 61023 at once.
    pub refresh_prev: Option<(String, Millis)>,
    pub revoked: bool,
    pub token_current: Option<String>,
    pub token_prev: Option<String>,
    /// Permission set ids granted (`funcscope_category.id`).
    pub func_info: Vec<i64>,
    /// When this authorization began (kept by `updateauthorized`, so list order is stable).
    pub auth_time: Millis,
}

/// Permission sets granted by a simulated authorization unless told otherwise (message
/// management, user management, account service, web service, …): a typical official-account
/// grant.
pub const DEFAULT_FUNC_INFO: [i64; 8] = [1, 15, 4, 7, 2, 3, 11, 6];

pub fn new_refresh_token() -> String {
    format!("refreshtoken@@@{}", random_string(64))
}

#[derive(Debug)]
pub struct PreAuthCode {
    pub component_appid: String,
    pub expires_at: Millis,
    pub used: bool,
}

#[derive(Debug)]
pub struct AuthCode {
    pub component_appid: String,
    pub authorizer_appid: String,
    pub expires_at: Millis,
    pub used: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Errcode,
    Status,
    Delay,
    Timeout,
    Malformed,
}

/// `POST /__sim/faults` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    pub kind: FaultKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errcode: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
}

impl FaultSpec {
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoint.is_empty() {
            return Err("endpoint must be a path or \"*\"".into());
        }
        if let Some(p) = self.probability
            && !(0.0..=1.0).contains(&p)
        {
            return Err("probability must be within 0..=1".into());
        }
        match self.kind {
            FaultKind::Errcode if self.errcode.is_none() => Err("kind errcode needs \"errcode\"".into()),
            FaultKind::Status => match self.status {
                Some(s) if axum::http::StatusCode::from_u16(s).is_ok() && s >= 200 => Ok(()),
                _ => Err("kind status needs \"status\" between 200 and 999".into()),
            },
            FaultKind::Delay if self.delay_ms.is_none() => Err("kind delay needs \"delay_ms\"".into()),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FaultSpec,
    pub fired: u64,
}

/// What a fired fault does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    Errcode(i64),
    Status(u16),
    Delay(u64),
    Timeout,
    Malformed,
}

/// Why a token was refused, as an errcode.
pub type TokenError = i64;

#[derive(Debug)]
pub struct State {
    pub config: SimConfig,
    pub apps: HashMap<String, AppState>,
    pub tokens: HashMap<String, TokenRec>,
    pub tickets: HashMap<(String, String), (String, Millis)>,
    /// (appid, endpoint) -> (Shanghai day, calls that day).
    pub quotas: HashMap<(String, String), (u64, u64)>,
    pub calls: BTreeMap<(String, String), u64>,
    pub faults: Vec<Fault>,
    pub next_fault_id: u64,
    pub components: HashMap<String, ComponentState>,
    /// (component appid, authorizer appid) -> authorization.
    pub authorizers: HashMap<(String, String), AuthorizerState>,
    pub pre_auth_codes: HashMap<String, PreAuthCode>,
    pub auth_codes: HashMap<String, AuthCode>,
    /// Single-use user codes (js_code, OAuth code, phone code) already redeemed, per app.
    pub used_codes: HashSet<(String, String)>,
    /// Web-login user tokens (`sns/oauth2`): value → (appid, openid, expires at).
    pub sns_tokens: HashMap<String, (String, String, Millis)>,
    /// Web-login refresh tokens: value → (appid, openid). They last 30 days; the simulator
    /// keeps them for its lifetime.
    pub sns_refresh_tokens: HashMap<String, (String, String)>,
    /// Apps `auto_register` created: their secret follows the last one presented.
    pub auto_registered: HashSet<String>,
    /// Authorizer appid -> the component it was last authorized to: quota and ticket lifetime
    /// lookups by authorizer stay O(1) with thousands of authorizers.
    pub authorizer_component: HashMap<String, String>,
    /// Numbers the appids `POST /__sim/authorizers` makes up.
    pub bulk_seq: u64,
    pub next_push_id: u64,
    issued_since_sweep: u64,
}

const SWEEP_EVERY: u64 = 4096;
/// Records this long past their expiry are forgotten (then they answer 40001, not 42001).
const FORGET_AFTER_MS: Millis = 2 * 86_400_000;

impl State {
    pub fn new(config: SimConfig) -> Self {
        let apps = config.apps.iter().map(|a| (a.appid.clone(), AppState::default())).collect();
        let components =
            config.components.iter().map(|c| (c.appid.clone(), ComponentState::default())).collect();
        Self {
            config,
            apps,
            tokens: HashMap::new(),
            tickets: HashMap::new(),
            quotas: HashMap::new(),
            calls: BTreeMap::new(),
            faults: Vec::new(),
            next_fault_id: 1,
            components,
            authorizers: HashMap::new(),
            auto_registered: HashSet::new(),
            pre_auth_codes: HashMap::new(),
            auth_codes: HashMap::new(),
            used_codes: HashSet::new(),
            sns_tokens: HashMap::new(),
            sns_refresh_tokens: HashMap::new(),
            authorizer_component: HashMap::new(),
            bulk_seq: 0,
            next_push_id: 1,
            issued_since_sweep: 0,
        }
    }

    /// Forgets every credential, counter, fault and code; the config stays.
    pub fn reset(&mut self) {
        let config = std::mem::take(&mut self.config);
        *self = Self::new(config);
    }

    pub fn app(&self, appid: &str) -> Option<&SimApp> {
        self.config.apps.iter().find(|a| a.appid == appid)
    }

    pub fn component(&self, appid: &str) -> Option<&SimComponent> {
        self.config.components.iter().find(|c| c.appid == appid)
    }

    // ---- tokens ------------------------------------------------------------------------------

    /// Issues a new random token of `family` for `appid`, valid `ttl_secs` from `now`.
    pub fn issue(&mut self, appid: &str, family: Family, now: Millis, ttl_secs: u64) -> String {
        self.issued_since_sweep += 1;
        if self.issued_since_sweep >= SWEEP_EVERY {
            self.issued_since_sweep = 0;
            self.tokens.retain(|_, t| t.expires_at.saturating_add(FORGET_AFTER_MS) > now);
        }
        let token = random_token();
        self.tokens.insert(
            token.clone(),
            TokenRec {
                appid: appid.to_owned(),
                family,
                expires_at: now.saturating_add(ttl_secs.saturating_mul(1000)),
                invalidated_at: None,
            },
        );
        token
    }

    /// Makes `token` stop working at `at` (or keeps an earlier invalidation).
    pub fn invalidate(&mut self, token: &str, at: Millis) {
        if let Some(t) = self.tokens.get_mut(token) {
            t.invalidated_at = Some(t.invalidated_at.map_or(at, |i| i.min(at)));
        }
    }

    /// The rotation of classic, component and authorizer tokens: the new token becomes current,
    /// the previous one keeps working `overlap_secs` (or until its own expiry if that is sooner),
    /// and the one before it stops now.
    pub fn rotate(
        &mut self,
        current: Option<String>,
        prev: Option<String>,
        now: Millis,
        overlap_secs: u64,
    ) -> Option<String> {
        if let Some(p) = prev {
            self.invalidate(&p, now);
        }
        let cur = current?;
        if let Some(t) = self.tokens.get(&cur)
            && now.saturating_add(overlap_secs.saturating_mul(1000)) < t.expires_at
        {
            self.invalidate(&cur, now + overlap_secs * 1000);
        }
        Some(cur)
    }

    /// 41001 when absent, 40001 when unknown or superseded, 42001 when expired.
    pub fn check_token(&self, token: Option<&str>, now: Millis) -> Result<&TokenRec, TokenError> {
        let token = match token {
            Some(t) if !t.is_empty() => t,
            _ => return Err(41001),
        };
        let rec = self.tokens.get(token).ok_or(40001)?;
        // Whichever ended it first decides the answer: a token superseded before its expiry is
        // "not latest" (40001), one that simply ran out is "expired" (42001).
        if let Some(i) = rec.invalidated_at
            && i <= now
            && i < rec.expires_at
        {
            return Err(40001);
        }
        if now >= rec.expires_at {
            return Err(42001);
        }
        Ok(rec)
    }

    /// Kills every token of `appid` at `now`, behind its holders' backs (as another server's
    /// `force_refresh`, or WeChat revoking a leaked token, does); returns how many it killed.
    /// The next token call mints a new one.
    pub fn invalidate_app(&mut self, appid: &str, now: Millis) -> usize {
        let mut killed = 0;
        for rec in self.tokens.values_mut() {
            if rec.appid == appid && rec.invalidated_at.is_none_or(|i| i > now) && rec.expires_at > now {
                rec.invalidated_at = Some(now);
                killed += 1;
            }
        }
        if let Some(app) = self.apps.get_mut(appid) {
            app.classic_current = None;
            app.classic_prev = None;
            app.stable_current = None;
        }
        killed
    }

    pub fn is_valid(&self, token: &str, now: Millis) -> bool {
        self.check_token(Some(token), now).is_ok()
    }

    // ---- quotas and counters -----------------------------------------------------------------

    /// Takes one call from today's quota of (appid, endpoint); false once `limit` is spent.
    pub fn take_quota(&mut self, appid: &str, endpoint: &str, limit: u64, now: Millis) -> bool {
        let day = shanghai_day(now);
        let entry = self.quotas.entry((appid.to_owned(), endpoint.to_owned())).or_insert((day, 0));
        if entry.0 != day {
            *entry = (day, 0);
        }
        if entry.1 >= limit {
            return false;
        }
        entry.1 += 1;
        true
    }

    /// The daily quota of an app, an authorizer (its component's) or a component.
    pub fn quota_limit(&self, appid: &str) -> u64 {
        if let Some(a) = self.app(appid) {
            return a.daily_quota;
        }
        if let Some(c) = self.component(appid) {
            return c.daily_quota;
        }
        self.authorizer_component.get(appid).and_then(|c| self.component(c)).map_or(2000, |c| c.daily_quota)
    }

    pub fn count_call(&mut self, appid: &str, endpoint: &str) {
        *self.calls.entry((appid.to_owned(), endpoint.to_owned())).or_insert(0) += 1;
    }

    pub fn calls(&self, appid: &str, endpoint: &str) -> u64 {
        self.calls.get(&(appid.to_owned(), endpoint.to_owned())).copied().unwrap_or(0)
    }

    pub fn total_calls(&self, endpoint: &str) -> u64 {
        self.calls.iter().filter(|((_, e), _)| e == endpoint).map(|(_, n)| n).sum()
    }

    // ---- authorizations ----------------------------------------------------------------------

    /// Whether `api_authorizer_token` hands out a new refresh token per call, and the grace of the
    /// one it replaces: `POST /__sim/rotation`'s setting, else the config's.
    pub fn rotation(&self, component_appid: &str) -> (bool, u64) {
        if let Some(r) = self.components.get(component_appid).and_then(|c| c.rotation) {
            return r;
        }
        self.component(component_appid)
            .map_or((false, 300), |c| (c.rotate_refresh_token, c.refresh_token_grace_secs))
    }

    /// The merchant's consent: an authorized authorizer stays as it is (re-consent keeps the
    /// refresh token), a new or unauthorized one gets a fresh authorization with `func_info`.
    /// True when a new authorization began.
    pub fn grant(
        &mut self,
        component_appid: &str,
        authorizer_appid: &str,
        func_info: Option<Vec<i64>>,
        now: Millis,
    ) -> bool {
        let key = (component_appid.to_owned(), authorizer_appid.to_owned());
        if self.authorizers.get(&key).is_some_and(|a| !a.revoked) {
            return false;
        }
        self.authorizers.insert(
            key,
            AuthorizerState {
                refresh_token: new_refresh_token(),
                refresh_prev: None,
                revoked: false,
                token_current: None,
                token_prev: None,
                func_info: func_info.unwrap_or_else(|| DEFAULT_FUNC_INFO.to_vec()),
                auth_time: now,
            },
        );
        self.authorizer_component.insert(authorizer_appid.to_owned(), component_appid.to_owned());
        self.components
            .entry(component_appid.to_owned())
            .or_default()
            .authorized
            .insert((now, authorizer_appid.to_owned()));
        true
    }

    /// Unauthorize: the access tokens stop now and every refresh token answers 61023. False when
    /// there was no live authorization.
    pub fn revoke(&mut self, key: &(String, String), now: Millis) -> bool {
        let (tokens, auth_time) = match self.authorizers.get_mut(key) {
            Some(a) if !a.revoked => {
                a.revoked = true;
                a.refresh_prev = None;
                ([a.token_current.take(), a.token_prev.take()], a.auth_time)
            }
            _ => return false,
        };
        for t in tokens.into_iter().flatten() {
            self.invalidate(&t, now);
        }
        if let Some(cs) = self.components.get_mut(&key.0) {
            cs.authorized.remove(&(auth_time, key.1.clone()));
        }
        true
    }

    /// Replaces the refresh token; the one replaced keeps working `grace_secs`, the one before it
    /// stops now. Returns the new token.
    pub fn rotate_refresh(&mut self, key: &(String, String), now: Millis, grace_secs: u64) -> Option<String> {
        let a = self.authorizers.get_mut(key)?;
        let new = new_refresh_token();
        let old = std::mem::replace(&mut a.refresh_token, new.clone());
        a.refresh_prev = Some((old, now.saturating_add(grace_secs.saturating_mul(1000))));
        Some(new)
    }

    /// Whether `presented` is a refresh token of a live authorization: the current one, or its
    /// predecessor within the grace.
    pub fn refresh_ok(&self, key: &(String, String), presented: &str, now: Millis) -> bool {
        let eq = |t: &str| wechat_proto::signature::ct_eq(t.as_bytes(), presented.as_bytes());
        match self.authorizers.get(key) {
            Some(a) if !a.revoked => {
                eq(&a.refresh_token)
                    || a.refresh_prev.as_ref().is_some_and(|(p, until)| now < *until && eq(p))
            }
            _ => false,
        }
    }

    // ---- faults ------------------------------------------------------------------------------

    pub fn add_fault(&mut self, spec: FaultSpec) -> u64 {
        let id = self.next_fault_id;
        self.next_fault_id += 1;
        self.faults.push(Fault { id, spec, fired: 0 });
        id
    }

    /// The first matching fault that fires for this call, if any. Spent faults are dropped.
    pub fn pick_fault(&mut self, endpoint: &str, appid: &str) -> Option<FaultAction> {
        let mut rng = rand::thread_rng();
        let mut fired = None;
        for (i, f) in self.faults.iter_mut().enumerate() {
            let s = &f.spec;
            if (s.endpoint != "*" && s.endpoint != endpoint)
                || s.appid.as_deref().is_some_and(|a| a != appid)
                || s.count == Some(0)
            {
                continue;
            }
            let p = s.probability.unwrap_or(1.0);
            if !(p >= 1.0 || (p > 0.0 && rng.r#gen::<f64>() < p)) {
                continue;
            }
            f.fired += 1;
            if let Some(c) = f.spec.count.as_mut() {
                *c -= 1;
            }
            let s = &f.spec;
            let action = match s.kind {
                FaultKind::Errcode => FaultAction::Errcode(s.errcode.unwrap_or(-1)),
                FaultKind::Status => FaultAction::Status(s.status.unwrap_or(500)),
                FaultKind::Delay => FaultAction::Delay(s.delay_ms.unwrap_or(0)),
                FaultKind::Timeout => FaultAction::Timeout,
                FaultKind::Malformed => FaultAction::Malformed,
            };
            fired = Some((i, action));
            break;
        }
        let (i, action) = fired?;
        if self.faults[i].spec.count == Some(0) {
            self.faults.remove(i);
        }
        Some(action)
    }
}

pub const TOKEN_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// `len` random characters of `[A-Za-z0-9_-]`.
pub fn random_string(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len).map(|_| TOKEN_ALPHABET[rng.gen_range(0..TOKEN_ALPHABET.len())] as char).collect()
}

/// Shaped like WeChat's (`<n>_<random>`), 112 characters, 648 random bits: distinctive enough
/// that a test grepping logs for it can only find a real leak.
pub fn random_token() -> String {
    format!("{}_{}", rand::thread_rng().gen_range(80..100), random_string(109))
}

/// A stable pseudo-identifier (openid, unionid, phone digits) derived from `seed`.
pub fn derived_id(seed: &str, len: usize, alphabet: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    (0..len)
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            alphabet[(h % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

pub fn derived_openid(seed: &str) -> String {
    format!("o{}", derived_id(seed, 27, TOKEN_ALPHABET))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::new(SimConfig::new().app(SimApp::new("wxa", "s")))
    }

    #[test]
    fn tokens_are_long_random_and_distinct() {
        let a = random_token();
        let b = random_token();
        assert_ne!(a, b);
        assert!(a.len() >= 64);
        assert!(a.bytes().all(|c| TOKEN_ALPHABET.contains(&c)));
    }

    #[test]
    fn rotation_keeps_one_previous_token_for_the_overlap() {
        let mut s = state();
        let t1 = s.issue("wxa", Family::Classic, 0, 100);
        let cur = s.rotate(Some(t1.clone()), None, 10_000, 5);
        let t2 = s.issue("wxa", Family::Classic, 10_000, 100);
        assert_eq!(cur.as_deref(), Some(t1.as_str()));
        assert!(s.is_valid(&t1, 14_999));
        assert_eq!(s.check_token(Some(&t1), 15_000).unwrap_err(), 40001);
        // A third issue ends t1 at once even inside its overlap.
        let prev = s.rotate(Some(t2.clone()), Some(t1.clone()), 12_000, 5);
        assert_eq!(s.check_token(Some(&t1), 12_000).unwrap_err(), 40001);
        assert_eq!(prev.as_deref(), Some(t2.as_str()));
        assert!(s.is_valid(&t2, 16_999));
    }

    #[test]
    fn expiry_wins_when_it_comes_first() {
        let mut s = state();
        let t = s.issue("wxa", Family::Classic, 0, 10);
        s.rotate(Some(t.clone()), None, 8_000, 300);
        assert!(s.is_valid(&t, 9_999));
        assert_eq!(s.check_token(Some(&t), 10_000).unwrap_err(), 42001);
        assert_eq!(s.check_token(None, 0).unwrap_err(), 41001);
        assert_eq!(s.check_token(Some(""), 0).unwrap_err(), 41001);
        assert_eq!(s.check_token(Some("nope"), 0).unwrap_err(), 40001);
    }

    #[test]
    fn refresh_tokens_rotate_with_one_predecessor_in_grace() {
        let mut s = state();
        let key = ("wxc".to_owned(), "wxauth".to_owned());
        assert!(s.grant("wxc", "wxauth", None, 1_000));
        assert!(!s.grant("wxc", "wxauth", Some(vec![1]), 2_000), "re-consent keeps the authorization");
        let r0 = s.authorizers[&key].refresh_token.clone();
        assert_eq!(s.authorizers[&key].func_info, DEFAULT_FUNC_INFO);
        let r1 = s.rotate_refresh(&key, 10_000, 5).unwrap();
        assert!(s.refresh_ok(&key, &r0, 14_999) && s.refresh_ok(&key, &r1, 14_999));
        assert!(!s.refresh_ok(&key, &r0, 15_000));
        let r2 = s.rotate_refresh(&key, 11_000, 5).unwrap();
        assert!(!s.refresh_ok(&key, &r0, 11_000), "only the latest predecessor keeps a grace");
        assert!(s.refresh_ok(&key, &r1, 11_000) && s.refresh_ok(&key, &r2, 11_000));
        assert!(!s.refresh_ok(&key, "", 11_000));
        assert_eq!(s.components["wxc"].authorized.len(), 1);
        assert!(s.revoke(&key, 12_000));
        assert!(!s.revoke(&key, 12_000));
        assert!(!s.refresh_ok(&key, &r2, 12_000) && !s.refresh_ok(&key, &r1, 12_000));
        assert!(s.components["wxc"].authorized.is_empty());
        assert!(s.grant("wxc", "wxauth", None, 20_000));
        assert!(!s.refresh_ok(&key, &r2, 20_000), "a new authorization, a new refresh token");
        assert_eq!(s.components["wxc"].authorized.iter().next(), Some(&(20_000, "wxauth".to_owned())));
    }

    #[test]
    fn quota_resets_with_the_shanghai_day() {
        let mut s = state();
        let midnight_utc8 = 1_704_124_800_000; // 2024-01-02T00:00+08:00
        assert!(s.take_quota("wxa", "/x", 2, midnight_utc8 - 5_000));
        assert!(s.take_quota("wxa", "/x", 2, midnight_utc8 - 4_000));
        assert!(!s.take_quota("wxa", "/x", 2, midnight_utc8 - 1));
        assert!(s.take_quota("wxa", "/y", 2, midnight_utc8 - 1), "endpoints count apart");
        assert!(s.take_quota("wxa", "/x", 2, midnight_utc8));
    }

    #[test]
    fn faults_fire_by_count_and_match_appid() {
        let mut s = state();
        let spec = |appid: Option<&str>, count| FaultSpec {
            endpoint: "/cgi-bin/token".into(),
            appid: appid.map(Into::into),
            kind: FaultKind::Errcode,
            errcode: Some(-1),
            status: None,
            delay_ms: None,
            count,
            probability: None,
        };
        s.add_fault(spec(Some("wxa"), Some(2)));
        assert_eq!(s.pick_fault("/cgi-bin/token", "wxb"), None);
        assert_eq!(s.pick_fault("/cgi-bin/other", "wxa"), None);
        assert_eq!(s.pick_fault("/cgi-bin/token", "wxa"), Some(FaultAction::Errcode(-1)));
        assert_eq!(s.pick_fault("/cgi-bin/token", "wxa"), Some(FaultAction::Errcode(-1)));
        assert_eq!(s.pick_fault("/cgi-bin/token", "wxa"), None);
        assert!(s.faults.is_empty());
    }
}
