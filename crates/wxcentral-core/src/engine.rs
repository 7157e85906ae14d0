//! The credential engine: proactive refresh, single flight, compare-and-refresh, backoff
//! (DESIGN.md §2).
//!
//! Each credential lives in a [`Slot`]: the current value behind an `ArcSwapOption` (reads take
//! no lock), at most one in-flight refresh shared by every caller that needs it, and a refresh
//! loop that sleeps until the value's (jittered) refresh time or the end of a backoff. The
//! refresh itself runs in its own task, so a reader that gives up after `read_wait` never
//! cancels an upstream call halfway (which would burn quota and, for classic tokens, kill the
//! token others hold).
//!
//! Cluster-wide single flight goes through the store: before fetching, a refresh re-reads the
//! stored value (another node may have written a newer one) and takes the lease
//! `refresh:{appid}:{kind}`; a node that finds the lease held polls the store for the holder's
//! value instead of fetching.

use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::kind::{AppKind, AppSpec, Credential, CredentialKey, CredentialKind, TokenApi};
use crate::limiter::{Limiter, Permit};
use crate::policy::{self, ExpiryWindow, Failure, Margins};
use crate::quota::{ms_until_next_day, wechat_day};
use crate::store::{Change, Lease, NewCredential, Store};
use crate::upstream::{FaultClass, Upstream, UpstreamError};
use arc_swap::{ArcSwap, ArcSwapOption};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wechat_proto::Secret;
use wechat_proto::api::{self, TicketType};

/// Tuning of the refresh rules of DESIGN.md §2; `None` means the lifetime-scaled default.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub refresh_before_secs: Option<u64>,
    pub serve_margin_secs: Option<u64>,
    /// How long a read with nothing valid waits for the in-flight refresh before it gives up.
    pub read_wait: Duration,
    /// WeChat's stable_token rotation window: a normal-mode call returns a new token only when
    /// the current one has less than this left.
    pub stable_rotate_secs: u64,
    /// This node's name in refresh leases; must differ between processes sharing a store.
    pub node_id: String,
    /// How long WeChat keeps a classic (component, authorizer) token working after its
    /// successor was fetched: 300 s. Bounds the expiry promised to clients.
    pub token_overlap_secs: u64,
    /// Upstream calls in flight at once, all credentials together.
    pub max_concurrency: usize,
    /// Upstream calls started per second, all credentials together.
    pub max_per_second: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            refresh_before_secs: None,
            serve_margin_secs: None,
            read_wait: Duration::from_secs(3),
            stable_rotate_secs: 300,
            node_id: default_node_id(),
            token_overlap_secs: 300,
            max_concurrency: 16,
            max_per_second: 50,
        }
    }
}

/// `hostname-pid-random`: unique per process, and readable in the store's lease rows.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{}-{:08x}", std::process::id(), rand::random::<u32>())
}

/// What `/v1/apps` shows of an app: no values, only their state.
#[derive(Clone, Debug, Serialize)]
pub struct AppStatus {
    pub appid: String,
    pub kind: AppKind,
    pub credentials: Vec<CredentialStatus>,
    /// Upstream calls made today (Asia/Shanghai) per endpoint path.
    pub quota_today: Vec<(String, u64)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CredentialStatus {
    pub kind: CredentialKind,
    /// `valid`, `absent`, `failing` (a refresh failed and is being retried) or `stopped`
    /// (quota, whitelist or bad secret: fast retries stopped).
    pub state: &'static str,
    pub expires_at_ms: Option<i64>,
    pub version: Option<u64>,
    pub last_error: Option<String>,
    pub next_refresh_ms: Option<i64>,
    /// Refresh failures in a row (0 once a refresh succeeds).
    pub consecutive_failures: u32,
    /// Whether a value is being served right now (it may be `failing` and still served).
    pub serving: bool,
}

/// The result of [`Engine::force_refresh_detailed`].
#[derive(Clone, Debug)]
pub struct ForcedRefresh {
    pub credential: Arc<Credential>,
    /// False when WeChat handed back the value already held: for stable tokens that is how it
    /// answers a `force_refresh` over its limit (20 a day, 30 s apart).
    pub rotated: bool,
}

/// Why a refresh ran; the `reason` label of `wxcentral_refreshes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    /// The first fetch of a credential nothing valid was loaded for.
    Startup,
    /// The value nears expiry.
    Proactive,
    /// A caller reported the current value rejected.
    InvalidReport,
    /// An admin asked.
    Forced,
    /// A read found nothing valid (or the loop did, after startup).
    Expired,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Startup => "startup",
            Self::Proactive => "proactive",
            Self::InvalidReport => "invalid_report",
            Self::Forced => "forced",
            Self::Expired => "expired",
        }
    }
}

/// Where a slot's values come from.
enum Source {
    Token { secret: Secret, api: TokenApi },
    Ticket(TicketType),
}

impl Source {
    /// Whether WeChat hands out the same value until it expires, whoever asks: then no
    /// successor exists before expiry, and once WeChat confirms the value in its refresh window
    /// it is served up to a small guard before expiry and its successor is fetched just after
    /// (DESIGN.md §2 rule 2). Tickets are like that. Stable tokens are not: WeChat rotates them
    /// inside their last window, where the proactive refresh goes. Classic, component and
    /// authorizer tokens are new at every call, with the predecessor kept alive for a while.
    fn same_until_expiry(&self) -> bool {
        matches!(self, Self::Ticket(_))
    }

    /// Whether a fetch kills the value others hold (after WeChat's overlap): such a credential
    /// is never fetched without the store's lease, even when the store is unreachable, since
    /// two nodes fetching in turn would each kill the other's value. Stable tokens and tickets
    /// are handed out the same to every caller, so a node that cannot reach the store may
    /// fetch them alone and keep the answer in memory.
    fn kills_predecessor(&self) -> bool {
        matches!(self, Self::Token { api: TokenApi::Classic, .. })
    }
}

/// Why non-forced refreshes are held back for a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// A refresh failed; retry after the backoff.
    Backoff,
    /// WeChat just returned the value already held (stable token outside its rotation window,
    /// a ticket before its expiry): asking again at once would get the same answer.
    Unchanged,
}

#[derive(Default)]
struct SlotState {
    /// When the loop refreshes the current value (expiry − margin − jitter).
    planned_refresh_ms: Option<i64>,
    /// Non-forced refreshes wait until then.
    not_before_ms: Option<(i64, Gate)>,
    failures: u32,
    last_error: Option<String>,
    last_class: Option<FaultClass>,
    /// A refresh was attempted since start (`startup` vs `expired` reasons).
    attempted: bool,
    /// Where WeChat's real expiry of the value with that version lies, from the answers that
    /// carried it (only kept for values that stay the same until they expire).
    window: Option<(u64, ExpiryWindow)>,
}

#[derive(Clone)]
struct Fetched {
    cred: Arc<Credential>,
    rotated: bool,
}

/// A failed refresh as every caller sharing it sees it. No secret inside.
#[derive(Clone, Debug)]
struct FlightError {
    class: FaultClass,
    /// Short reason for `Unavailable` and status (`errcode 45009`, `timeout`, ...).
    short: String,
    /// The upstream error when WeChat (or the way to it) failed, for explicit refreshes.
    upstream: Option<UpstreamError>,
    /// When the next attempt is allowed.
    retry_at_ms: i64,
}

impl FlightError {
    fn from_upstream(e: UpstreamError) -> Self {
        Self { class: e.class(), short: e.short(), upstream: Some(e), retry_at_ms: 0 }
    }

    fn other(class: FaultClass, short: impl Into<String>) -> Self {
        Self { class, short: short.into(), upstream: None, retry_at_ms: 0 }
    }
}

type FlightResult = std::result::Result<Fetched, FlightError>;
type Flight = Shared<BoxFuture<'static, FlightResult>>;

enum Begin {
    /// A value that satisfies the caller is already there.
    Ready(Arc<Credential>),
    /// A refresh is in flight; `created` if this call started it.
    Join { flight: Flight, created: bool },
    /// Refreshes are held back until then.
    Gated { until_ms: i64, gate: Gate, reason: Option<String> },
}

struct Slot {
    key: CredentialKey,
    source: Source,
    current: ArcSwapOption<Credential>,
    /// Version of the last installed value, for waiters and subscribers.
    published: watch::Sender<u64>,
    inflight: Mutex<Option<(u64, Flight)>>,
    state: Mutex<SlotState>,
    /// Version + 1 of the value WeChat confirmed in its refresh window to have no successor
    /// before it expires (0: none). Atomic because every read checks it and reads take no lock.
    confirmed: AtomicU64,
    /// Wakes the refresh loop to recompute its schedule.
    wake: Notify,
}

/// Locks a std mutex guarding plain bookkeeping: every update is a few field writes with no
/// await and no panicking call between them, so a poisoned lock is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ms(d: i64) -> Duration {
    Duration::from_millis(u64::try_from(d).unwrap_or(0))
}

fn lifetime_of(cred: &Credential) -> i64 {
    cred.lifetime_ms().max(1)
}

// foldhash rather than SipHash: keys are configured appids, lookups never insert, so there is
// no collision flood to resist, and the hash is a visible part of every read.
type AppSlots = HashMap<CredentialKind, Arc<Slot>, foldhash::fast::RandomState>;
type SlotMap = HashMap<String, AppSlots, foldhash::fast::RandomState>;

/// The longest lifetime believed from an answer (exclusive).
const MAX_EXPIRES_IN_SECS: u64 = 86_400;

/// How much earlier than the held expiry WeChat may report the same value's expiry before we
/// believe it: its whole-second rounding plus a generous round trip.
const UNCHANGED_EXPIRY_SLACK_MS: i64 = 2_000;

struct Inner {
    store: Arc<dyn Store>,
    upstream: Upstream,
    config: EngineConfig,
    /// Built at start; authorizers will be added at runtime by copy and swap. Every read looks a
    /// slot up here, so readers take no lock and share no counter.
    slots: ArcSwap<SlotMap>,
    cancel: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    next_flight: AtomicU64,
    limiter: Limiter,
}

pub struct Engine {
    apps: Vec<AppSpec>,
    inner: Arc<Inner>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("apps", &self.appids())
            .field("store", &self.inner.store)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.inner.cancel.cancel();
    }
}

impl Engine {
    /// Loads stored values, then starts one refresh loop per credential. Values still valid are
    /// served and scheduled without an upstream call (rule 7); the others are fetched in the
    /// background, and reads wait for them up to `read_wait`.
    pub async fn start(
        apps: Vec<AppSpec>,
        store: Arc<dyn Store>,
        upstream: Upstream,
        config: EngineConfig,
    ) -> Result<Arc<Self>> {
        let mut slots = SlotMap::default();
        for app in &apps {
            if app.appid.is_empty() {
                return Err(Error::Config("app with an empty appid".into()));
            }
            if slots.contains_key(&app.appid) {
                return Err(Error::Config(format!("app {} is configured twice", app.appid)));
            }
            let mut kinds = AppSlots::default();
            for kind in app.kinds() {
                let source = match kind.ticket_type() {
                    Some(t) => Source::Ticket(t),
                    None => Source::Token { secret: app.secret.clone(), api: app.token_api },
                };
                kinds
                    .entry(kind)
                    .or_insert_with(|| Arc::new(Slot::new(CredentialKey::new(&app.appid, kind), source)));
            }
            slots.insert(app.appid.clone(), kinds);
        }
        let limiter = Limiter::new(config.max_concurrency, config.max_per_second);
        let inner = Arc::new(Inner {
            limiter,
            store,
            upstream,
            config,
            slots: ArcSwap::from_pointee(slots),
            cancel: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
            next_flight: AtomicU64::new(1),
        });
        // Subscribed before the load, so nothing written in between is missed.
        let changes = inner.store.subscribe();
        let now = now_ms();
        for (key, cred) in inner.store.load_credentials().await? {
            if let Ok(slot) = inner.slot(&key.appid, key.kind) {
                let m = inner.margins(&slot, &cred);
                tracing::info!(
                    appid = key.appid,
                    kind = %key.kind,
                    version = cred.version,
                    expires_in = (cred.expires_at_ms - now) / 1000,
                    servable = policy::servable(cred.expires_at_ms, m, now),
                    "credential loaded from store"
                );
                inner.install(&slot, Arc::new(cred));
            }
        }
        let handles: Vec<JoinHandle<()>> = inner
            .all_slots()
            .into_iter()
            .map(|slot| tokio::spawn(Arc::clone(&inner).run_loop(slot)))
            .chain(std::iter::once(tokio::spawn(Arc::clone(&inner).follow_changes(changes))))
            .collect();
        lock(&inner.tasks).extend(handles);
        Ok(Arc::new(Self { apps, inner }))
    }

    pub fn app(&self, appid: &str) -> Option<&AppSpec> {
        self.apps.iter().find(|a| a.appid == appid)
    }

    pub fn appids(&self) -> Vec<String> {
        self.apps.iter().map(|a| a.appid.clone()).collect()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The current value, refreshed first if nothing valid is held. Never returns a value
    /// closer than the serve margin to its expiry, or for a ticket WeChat confirmed to have no
    /// successor before it expires, than a small guard: with nothing servable it waits up to
    /// `read_wait` for the refresh, then answers [`Error::Unavailable`].
    ///
    /// The value comes shared, as held: reads are the hot path and copy nothing.
    pub async fn get(&self, appid: &str, kind: CredentialKind) -> Result<Arc<Credential>> {
        self.inner.get(appid, kind, self.inner.config.read_wait).await
    }

    /// Compare-and-refresh: `value` was rejected by WeChat. Returns the current value without an
    /// upstream call if `value` is no longer current; concurrent reports of the current value
    /// share one refresh.
    pub async fn report_invalid(
        &self,
        appid: &str,
        kind: CredentialKind,
        value: &str,
    ) -> Result<Arc<Credential>> {
        self.inner.report_invalid(appid, kind, value).await
    }

    /// Refreshes now whatever is held (admin action). Stable tokens use `force_refresh`, which
    /// WeChat limits; see [`Engine::force_refresh_detailed`] to learn whether it rotated.
    pub async fn force_refresh(&self, appid: &str, kind: CredentialKind) -> Result<Arc<Credential>> {
        self.force_refresh_detailed(appid, kind).await.map(|f| f.credential)
    }

    /// [`Engine::force_refresh`], telling whether the value actually changed.
    pub async fn force_refresh_detailed(&self, appid: &str, kind: CredentialKind) -> Result<ForcedRefresh> {
        self.inner.force_refresh(appid, kind).await
    }

    /// Version changes of one credential (the version of each newly installed value), for
    /// pushing updates to clients or to other nodes.
    pub fn subscribe(&self, appid: &str, kind: CredentialKind) -> Result<watch::Receiver<u64>> {
        Ok(self.inner.slot(appid, kind)?.published.subscribe())
    }

    pub async fn status(&self) -> Vec<AppStatus> {
        let today = wechat_day(now_ms());
        let mut out = Vec::with_capacity(self.apps.len());
        for app in &self.apps {
            let mut credentials = Vec::new();
            for kind in app.kinds() {
                if let Ok(slot) = self.inner.slot(&app.appid, kind)
                    && !credentials.iter().any(|c: &CredentialStatus| c.kind == kind)
                {
                    credentials.push(self.inner.credential_status(&slot));
                }
            }
            let mut endpoints = vec![match app.token_api {
                TokenApi::Stable => api::PATH_STABLE_TOKEN,
                TokenApi::Classic => api::PATH_TOKEN,
            }];
            if !app.tickets.is_empty() {
                endpoints.push(api::PATH_GETTICKET);
            }
            let mut quota_today = Vec::new();
            for ep in endpoints {
                let n = self.inner.store.get_quota(&app.appid, ep, &today).await.unwrap_or_else(|e| {
                    tracing::warn!(appid = app.appid, endpoint = ep, error = %e, "quota book unreadable");
                    0
                });
                quota_today.push((ep.to_owned(), n));
            }
            out.push(AppStatus { appid: app.appid.clone(), kind: app.kind, credentials, quota_today });
        }
        out
    }

    /// Sets `wxcentral_credential_seconds_to_expiry` for every credential to its current value;
    /// the server calls it before rendering `/metrics` so the gauge does not stand still
    /// between refreshes.
    pub fn update_gauges(&self) {
        let now = now_ms();
        for slot in self.inner.all_slots() {
            if let Some(c) = slot.current.load_full() {
                set_expiry_gauge(&slot.key, &c, now);
            }
        }
    }

    /// Stops the refresh loops; in-flight fetches finish or are dropped.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        let handles: Vec<JoinHandle<()>> = lock(&self.inner.tasks).drain(..).collect();
        for h in handles {
            let _ = h.await;
        }
    }
}

fn set_expiry_gauge(key: &CredentialKey, c: &Credential, now: i64) {
    metrics::gauge!(
        "wxcentral_credential_seconds_to_expiry",
        "app" => key.appid.clone(),
        "kind" => key.kind.as_str()
    )
    .set((c.expires_at_ms - now) as f64 / 1000.0);
}

impl Slot {
    fn new(key: CredentialKey, source: Source) -> Self {
        Self {
            key,
            source,
            current: ArcSwapOption::empty(),
            published: watch::Sender::new(0),
            inflight: Mutex::new(None),
            state: Mutex::new(SlotState::default()),
            confirmed: AtomicU64::new(0),
            wake: Notify::new(),
        }
    }

    fn version(&self) -> Option<u64> {
        self.current.load().as_ref().map(|c| c.version)
    }

    fn is_confirmed(&self, version: u64) -> bool {
        self.source.same_until_expiry() && self.confirmed.load(Ordering::Acquire) == version.wrapping_add(1)
    }

    fn confirm(&self, version: u64) {
        self.confirmed.store(version.wrapping_add(1), Ordering::Release);
    }
}

impl Inner {
    fn slot(&self, appid: &str, kind: CredentialKind) -> Result<Arc<Slot>> {
        let slots = self.slots.load();
        let app = slots.get(appid).ok_or_else(|| Error::UnknownApp(appid.to_owned()))?;
        app.get(&kind).cloned().ok_or_else(|| Error::UnknownCredential { appid: appid.to_owned(), kind })
    }

    fn all_slots(&self) -> Vec<Arc<Slot>> {
        let slots = self.slots.load();
        slots.values().flat_map(|a| a.values().cloned()).collect()
    }

    fn margins(&self, slot: &Slot, cred: &Credential) -> Margins {
        let rotate = match slot.source {
            Source::Token { api: TokenApi::Stable, .. } => Some(
                i64::try_from(self.config.stable_rotate_secs).unwrap_or(i64::MAX / 1000).saturating_mul(1000),
            ),
            _ => None,
        };
        policy::margins(
            lifetime_of(cred),
            self.config.refresh_before_secs,
            self.config.serve_margin_secs,
            rotate,
        )
    }

    /// `cred` with the expiry promised to clients set (see [`Credential::valid_until_ms`]).
    fn with_promise(&self, slot: &Slot, mut cred: Credential) -> Arc<Credential> {
        cred.valid_until_ms = if slot.source.kills_predecessor() {
            let overlap_ms =
                i64::try_from(self.config.token_overlap_secs).unwrap_or(i64::MAX / 1000).saturating_mul(1000);
            policy::promised_until(cred.expires_at_ms, self.margins(slot, &cred), overlap_ms)
        } else {
            cred.expires_at_ms
        };
        Arc::new(cred)
    }

    /// The last moment `cred` is handed out (rule 2, with the confirmed-value guard).
    fn serve_end(&self, slot: &Slot, cred: &Credential) -> i64 {
        let m = self.margins(slot, cred);
        policy::serve_end(cred.expires_at_ms, m, lifetime_of(cred), slot.is_confirmed(cred.version))
    }

    fn servable(&self, slot: &Slot, cred: &Credential, now: i64) -> bool {
        now < self.serve_end(slot, cred)
    }

    /// Whether `cred` already answers a caller who wants a refresh for `reason` and saw `seen`.
    fn satisfies(&self, slot: &Slot, reason: Reason, seen: Option<u64>, cred: &Credential, now: i64) -> bool {
        self.servable(slot, cred, now)
            && match reason {
                Reason::Startup | Reason::Expired => true,
                Reason::Proactive | Reason::InvalidReport => Some(cred.version) != seen,
                Reason::Forced => false,
            }
    }

    fn unavailable(&self, slot: &Slot, retry_after_ms: i64, reason: Option<String>) -> Error {
        Error::Unavailable {
            appid: slot.key.appid.clone(),
            kind: slot.key.kind,
            retry_after: ms(retry_after_ms.max(1000)),
            reason,
        }
    }

    // ---- reads ---------------------------------------------------------------------------

    async fn get(
        self: &Arc<Self>,
        appid: &str,
        kind: CredentialKind,
        wait: Duration,
    ) -> Result<Arc<Credential>> {
        let slot = self.slot(appid, kind)?;
        if let Some(c) = slot.current.load_full()
            && self.servable(&slot, &c, now_ms())
        {
            return Ok(c);
        }
        self.wait_for_value(&slot, wait).await
    }

    /// The slow path of a read: join or start the refresh, and if refreshes are held back,
    /// wait for a value to land, all within `wait`.
    async fn wait_for_value(self: &Arc<Self>, slot: &Arc<Slot>, wait: Duration) -> Result<Arc<Credential>> {
        let deadline = tokio::time::Instant::now() + wait;
        let deadline_ms = now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
        let mut published = slot.published.subscribe();
        let mut last_reason: Option<String> = None;
        loop {
            match self.begin(slot, Reason::Expired, None) {
                Begin::Ready(c) => return Ok(c),
                Begin::Join { flight, .. } => match tokio::time::timeout_at(deadline, flight).await {
                    Err(_) => {
                        let reason = last_reason.or_else(|| lock(&slot.state).last_error.clone());
                        return Err(self.unavailable(
                            slot,
                            1000,
                            reason.or_else(|| Some("refresh in flight".into())),
                        ));
                    }
                    Ok(Ok(f)) if self.servable(slot, &f.cred, now_ms()) => return Ok(f.cred),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => last_reason = Some(e.short),
                },
                Begin::Gated { until_ms, reason, .. } => {
                    let now = now_ms();
                    if until_ms >= deadline_ms {
                        return Err(self.unavailable(slot, until_ms - now, reason.or(last_reason)));
                    }
                    last_reason = reason.or(last_reason);
                    tokio::select! {
                        _ = published.changed() => {}
                        () = tokio::time::sleep(ms(until_ms - now)) => {}
                    }
                }
            }
        }
    }

    async fn report_invalid(
        self: &Arc<Self>,
        appid: &str,
        kind: CredentialKind,
        value: &str,
    ) -> Result<Arc<Credential>> {
        let slot = self.slot(appid, kind)?;
        let wait = self.config.read_wait;
        let Some(cur) = slot.current.load_full() else {
            return self.wait_for_value(&slot, wait).await;
        };
        if !cur.value.ct_eq(value) {
            // Someone already replaced the reported value: no upstream call.
            if self.servable(&slot, &cur, now_ms()) {
                return Ok(cur);
            }
            return self.wait_for_value(&slot, wait).await;
        }
        let seen = Some(cur.version);
        let deadline = tokio::time::Instant::now() + wait;
        match self.begin(&slot, Reason::InvalidReport, seen) {
            Begin::Ready(c) => Ok(c),
            Begin::Join { flight, .. } => match tokio::time::timeout_at(deadline, flight).await {
                Ok(Ok(f)) if self.servable(&slot, &f.cred, now_ms()) => Ok(f.cred),
                Ok(Ok(_)) => {
                    Err(self.unavailable(&slot, 1000, Some("refreshed value not yet servable".into())))
                }
                Ok(Err(e)) => Err(self.unavailable(&slot, e.retry_at_ms - now_ms(), Some(e.short))),
                Err(_) => Err(self.unavailable(&slot, 1000, Some("refresh in flight".into()))),
            },
            // WeChat confirmed this value moments ago: hand it back rather than ask again.
            Begin::Gated { gate: Gate::Unchanged, .. } if self.servable(&slot, &cur, now_ms()) => Ok(cur),
            // ... and said its successor comes only after it expires: wait for that fetch as
            // a read does.
            Begin::Gated { gate: Gate::Unchanged, .. } => self.wait_for_value(&slot, wait).await,
            Begin::Gated { until_ms, reason, .. } => {
                Err(self.unavailable(&slot, until_ms - now_ms(), reason))
            }
        }
    }

    async fn force_refresh(self: &Arc<Self>, appid: &str, kind: CredentialKind) -> Result<ForcedRefresh> {
        let slot = self.slot(appid, kind)?;
        loop {
            match self.begin(&slot, Reason::Forced, None) {
                // Someone else's refresh: let it land, then force our own.
                Begin::Join { flight, created: false } => {
                    let _ = flight.await;
                }
                Begin::Join { flight, created: true } => {
                    return match flight.await {
                        Ok(f) => Ok(ForcedRefresh { credential: f.cred, rotated: f.rotated }),
                        Err(e) => Err(match e.upstream {
                            Some(u) => u.into_error(),
                            None => self.unavailable(&slot, e.retry_at_ms - now_ms(), Some(e.short)),
                        }),
                    };
                }
                Begin::Ready(c) => return Ok(ForcedRefresh { credential: c, rotated: false }),
                Begin::Gated { until_ms, reason, .. } => {
                    return Err(self.unavailable(&slot, until_ms - now_ms(), reason));
                }
            }
        }
    }

    // ---- single flight -------------------------------------------------------------------

    /// Joins the refresh in flight or starts one, unless a value already satisfies the caller
    /// or refreshes are held back. The check and the start happen under the slot's `inflight`
    /// lock, and a flight installs its value before it leaves that slot, so a caller either
    /// sees the new value or joins the flight producing it: never a second fetch.
    fn begin(self: &Arc<Self>, slot: &Arc<Slot>, reason: Reason, seen: Option<u64>) -> Begin {
        let now = now_ms();
        let mut inflight = lock(&slot.inflight);
        if let Some(c) = slot.current.load_full()
            && self.satisfies(slot, reason, seen, &c, now)
        {
            return Begin::Ready(c);
        }
        if let Some((_, flight)) = inflight.as_ref() {
            return Begin::Join { flight: flight.clone(), created: false };
        }
        let mut reason = reason;
        if reason != Reason::Forced {
            let st = lock(&slot.state);
            if reason == Reason::Expired && !st.attempted {
                reason = Reason::Startup;
            }
            if let Some((until_ms, gate)) = st.not_before_ms
                && until_ms > now
            {
                return Begin::Gated { until_ms, gate, reason: st.last_error.clone() };
            }
        }
        lock(&slot.state).attempted = true;
        let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
        let task = tokio::spawn(Arc::clone(self).run_flight(Arc::clone(slot), reason, seen, id));
        let (inner, owner) = (Arc::clone(self), Arc::clone(slot));
        let flight: Flight = async move {
            match task.await {
                Ok(result) => result,
                // A panic skipped run_flight's own cleanup: clear the flight and back off, or
                // every caller would join this finished flight forever.
                Err(e) => {
                    let err = FlightError::other(FaultClass::Transient, format!("refresh task: {e}"));
                    let err = inner.record_failure(&owner, err);
                    let mut inflight = lock(&owner.inflight);
                    if inflight.as_ref().is_some_and(|(i, _)| *i == id) {
                        *inflight = None;
                    }
                    drop(inflight);
                    owner.wake.notify_one();
                    Err(err)
                }
            }
        }
        .boxed()
        .shared();
        *inflight = Some((id, flight.clone()));
        Begin::Join { flight, created: true }
    }

    async fn run_flight(
        self: Arc<Self>,
        slot: Arc<Slot>,
        reason: Reason,
        seen: Option<u64>,
        id: u64,
    ) -> FlightResult {
        let result = tokio::select! {
            r = self.refresh(&slot, reason, seen) => r.map_err(|e| self.record_failure(&slot, e)),
            // Not a failure of the credential: nothing to book or back off from.
            () = self.cancel.cancelled() => Err(FlightError {
                retry_at_ms: now_ms() + 1000,
                ..FlightError::other(FaultClass::Transient, "shutting down")
            }),
        };
        {
            let mut inflight = lock(&slot.inflight);
            if inflight.as_ref().is_some_and(|(i, _)| *i == id) {
                *inflight = None;
            }
        }
        slot.wake.notify_one();
        result
    }

    /// One refresh: adopt a newer stored value if there is one, else take the lease, fetch,
    /// write under the lease and install.
    async fn refresh(self: &Arc<Self>, slot: &Arc<Slot>, reason: Reason, seen: Option<u64>) -> FlightResult {
        let key = &slot.key;
        let stored = match self.store.get_credential(key).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(appid = key.appid, kind = %key.kind, error = %e, "store read failed before refresh");
                None
            }
        };
        if let Some(s) = self.adopt_if_newer(slot, stored.clone())
            && self.satisfies(slot, reason, seen, &s, now_ms())
        {
            return Ok(Fetched { cred: s, rotated: true });
        }
        // A token fetch is one call: its place in the limiter's queue comes before the lease, so
        // the lease is not spent waiting. A ticket first needs the token (its own refresh, with
        // its own permit), so it queues inside the fetch.
        let permit = match slot.source {
            Source::Token { .. } => Some(self.limiter.acquire().await),
            Source::Ticket(_) => None,
        };
        let lease = match self.take_lease(slot, reason, seen).await {
            LeaseOutcome::Adopted(c) => return Ok(Fetched { cred: c, rotated: true }),
            LeaseOutcome::Held(grant) => Some(grant),
            LeaseOutcome::Unavailable(why) if slot.source.kills_predecessor() => {
                return Err(FlightError::other(FaultClass::Transient, why));
            }
            LeaseOutcome::Unavailable(why) => {
                tracing::warn!(appid = key.appid, kind = %key.kind, reason = why, "refreshing without the lease; the value stays in this node's memory");
                None
            }
        };
        let highest = [slot.version(), stored.map(|s| s.version)].into_iter().flatten().max();
        let fetched_at = now_ms();
        let result = match self.fetch(slot, reason, permit).await {
            Ok((value, expires_in)) => {
                self.land(slot, reason, value, expires_in, fetched_at, highest, lease.as_ref()).await
            }
            Err(e) => Err(e),
        };
        if let Some(grant) = lease {
            self.release(&grant).await;
        }
        result
    }

    async fn release(&self, lease: &Lease) {
        if let Err(e) = self.store.release_lease(lease).await {
            tracing::warn!(lease = lease.name, error = %e, "lease release failed; it expires by itself");
        }
    }

    /// Our write came after a newer grant of the lease: the value we fetched is not the one
    /// the cluster keeps. Adopt what the store holds and count the refusal.
    async fn late_write(&self, slot: &Slot) -> FlightError {
        let key = &slot.key;
        metrics::counter!("wxcentral_late_writes_refused_total", "kind" => key.kind.as_str()).increment(1);
        tracing::warn!(appid = key.appid, kind = %key.kind, "refresh lease lost before the write; the fetched value is dropped");
        if let Ok(stored) = self.store.get_credential(key).await {
            self.adopt_if_newer(slot, stored);
        }
        FlightError::other(FaultClass::Transient, "refresh lease lost before the write")
    }

    /// Installs a stored value newer than the one held (another node refreshed, or a late
    /// write of ours lost), returning it.
    fn adopt_if_newer(&self, slot: &Slot, stored: Option<Credential>) -> Option<Arc<Credential>> {
        let s = stored?;
        if slot.version().is_some_and(|v| v >= s.version) {
            return None;
        }
        tracing::info!(
            appid = slot.key.appid,
            kind = %slot.key.kind,
            version = s.version,
            expires_in = (s.expires_at_ms - now_ms()) / 1000,
            "adopted a newer value from the store"
        );
        Some(self.install(slot, Arc::new(s)))
    }

    /// Long enough for one refresh to finish: the upstream call (a ticket first waits for
    /// the access token, then may retry once after a rejected token) and the store write.
    fn lease_ttl(&self, slot: &Slot) -> Duration {
        let call = self.upstream.timeout();
        let slack = Duration::from_secs(5);
        match slot.source {
            Source::Token { .. } => call + slack,
            Source::Ticket(_) => self.config.read_wait + call * 3 + slack,
        }
    }

    /// Takes the slot's refresh lease, waiting while another node holds it: that node's value
    /// usually arrives meanwhile (through the change feed) and is adopted instead of fetching.
    async fn take_lease(&self, slot: &Slot, reason: Reason, seen: Option<u64>) -> LeaseOutcome {
        let name = format!("refresh:{}:{}", slot.key.appid, slot.key.kind);
        let ttl = self.lease_ttl(slot);
        let poll = Duration::from_millis(200);
        let deadline = tokio::time::Instant::now() + ttl + Duration::from_secs(1);
        let mut published = slot.published.subscribe();
        let adopted = |stored: Option<Credential>| {
            self.adopt_if_newer(slot, stored);
            slot.current.load_full().filter(|c| self.satisfies(slot, reason, seen, c, now_ms()))
        };
        loop {
            match self.store.try_lease(&name, &self.config.node_id, ttl).await {
                Ok(Some(lease)) => {
                    // The look at the store must come under the lease: a holder that wrote
                    // its value and let go between our last look and this lease would
                    // otherwise be followed by a second fetch of what it just fetched.
                    if let Ok(stored) = self.store.get_credential(&slot.key).await
                        && let Some(c) = adopted(stored)
                    {
                        self.release(&lease).await;
                        return LeaseOutcome::Adopted(c);
                    }
                    return LeaseOutcome::Held(lease);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(lease = name, error = %e, "refresh lease unavailable");
                    return LeaseOutcome::Unavailable(format!(
                        "store unavailable for the refresh lease: {e}"
                    ));
                }
            }
            if let Some(c) =
                slot.current.load_full().filter(|c| self.satisfies(slot, reason, seen, c, now_ms()))
            {
                return LeaseOutcome::Adopted(c);
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(lease = name, "refresh lease still held elsewhere past its lifetime");
                return LeaseOutcome::Unavailable("refresh lease held elsewhere".into());
            }
            tokio::select! {
                _ = published.changed() => {}
                () = tokio::time::sleep(poll) => {
                    if let Ok(stored) = self.store.get_credential(&slot.key).await
                        && let Some(c) = adopted(stored)
                    {
                        return LeaseOutcome::Adopted(c);
                    }
                }
            }
        }
    }

    // ---- upstream ------------------------------------------------------------------------

    /// Counts the call in the quota book (alongside the call, so the store's fsync does not
    /// delay it) and makes it.
    async fn call_upstream<T>(
        &self,
        appid: &str,
        endpoint: &'static str,
        permit: Option<Permit>,
        call: impl Future<Output = std::result::Result<T, UpstreamError>>,
    ) -> std::result::Result<T, UpstreamError> {
        let _permit = match permit {
            Some(p) => p,
            None => self.limiter.acquire().await,
        };
        let day = wechat_day(now_ms());
        let book = async {
            match self.store.incr_quota(appid, endpoint, &day).await {
                Ok(n) => metrics::gauge!(
                    "wxcentral_quota_used_today",
                    "app" => appid.to_owned(),
                    "endpoint" => endpoint
                )
                .set(n as f64),
                Err(e) => tracing::warn!(appid, endpoint, error = %e, "quota book not updated"),
            }
        };
        let ((), result) = tokio::join!(book, call);
        result
    }

    /// Fetches a new value: `(value, expires_in seconds)`.
    async fn fetch(
        self: &Arc<Self>,
        slot: &Slot,
        reason: Reason,
        permit: Option<Permit>,
    ) -> std::result::Result<(Secret, u64), FlightError> {
        let appid = slot.key.appid.as_str();
        let up = &self.upstream;
        match &slot.source {
            Source::Token { secret, api: TokenApi::Stable } => {
                let force = reason == Reason::Forced;
                self.call_upstream(
                    appid,
                    api::PATH_STABLE_TOKEN,
                    permit,
                    up.stable_token(appid, secret, force),
                )
                .await
                .map(|r| (r.access_token, r.expires_in))
                .map_err(FlightError::from_upstream)
            }
            Source::Token { secret, api: TokenApi::Classic } => self
                .call_upstream(appid, api::PATH_TOKEN, permit, up.classic_token(appid, secret))
                .await
                .map(|r| (r.access_token, r.expires_in))
                .map_err(FlightError::from_upstream),
            Source::Ticket(tt) => self.fetch_ticket(appid, *tt).await,
        }
    }

    /// Tickets are fetched with the app's current access token. A token WeChat rejects is
    /// reported (compare-and-refresh, shared with every other caller) and the fetch retried once.
    async fn fetch_ticket(
        self: &Arc<Self>,
        appid: &str,
        tt: TicketType,
    ) -> std::result::Result<(Secret, u64), FlightError> {
        let wait = self.config.read_wait + self.upstream.timeout();
        let dependency = |e: Error| match e {
            Error::Unavailable { reason, .. } => FlightError::other(
                FaultClass::Transient,
                format!("access_token unavailable{}", reason.map(|r| format!(": {r}")).unwrap_or_default()),
            ),
            other => FlightError::other(FaultClass::Config, format!("access_token: {other}")),
        };
        let token = self.get(appid, CredentialKind::AccessToken, wait).await.map_err(dependency)?;
        let up = &self.upstream;
        match self.call_upstream(appid, api::PATH_GETTICKET, None, up.ticket(appid, &token.value, tt)).await {
            Ok(r) => Ok((r.ticket, r.expires_in)),
            Err(e) if e.class() == FaultClass::TokenInvalid => {
                tracing::info!(appid, ticket = tt.as_str(), errcode = ?e.errcode(), "getticket rejected the token; reporting it");
                let fresh = self
                    .report_invalid(appid, CredentialKind::AccessToken, token.value.expose())
                    .await
                    .map_err(dependency)?;
                self.call_upstream(appid, api::PATH_GETTICKET, None, up.ticket(appid, &fresh.value, tt))
                    .await
                    .map(|r| (r.ticket, r.expires_in))
                    .map_err(|e| {
                        // Rejected twice: not something a quick compare-and-refresh fixes.
                        let mut fe = FlightError::from_upstream(e);
                        if fe.class == FaultClass::TokenInvalid {
                            fe.class = FaultClass::Transient;
                        }
                        fe
                    })
            }
            Err(e) => Err(FlightError::from_upstream(e)),
        }
    }

    /// Turns a fetched value into the current one: written to the store under the lease (which
    /// versions it), installed. Without a lease (an idempotent credential while the store is
    /// unreachable) it is versioned above everything seen and kept in memory.
    #[allow(clippy::too_many_arguments)]
    async fn land(
        &self,
        slot: &Slot,
        reason: Reason,
        value: Secret,
        expires_in: u64,
        fetched_at: i64,
        highest: Option<u64>,
        lease: Option<&Lease>,
    ) -> FlightResult {
        let key = &slot.key;
        if expires_in == 0 && slot.current.load().as_ref().is_none_or(|c| !c.value.ct_eq(value.expose())) {
            return Err(FlightError::other(FaultClass::Transient, "malformed response: expires_in is 0"));
        }
        // WeChat's lifetimes are two hours; a day or more is a broken answer, not a value to
        // keep (and it must not overflow the arithmetic below).
        if expires_in >= MAX_EXPIRES_IN_SECS {
            return Err(FlightError::other(
                FaultClass::Transient,
                format!("malformed response: expires_in {expires_in} is beyond a day"),
            ));
        }
        let expires_at_ms =
            fetched_at.saturating_add(i64::try_from(expires_in).unwrap_or(i64::MAX / 2000) * 1000);
        let observed = policy::observe_expiry(fetched_at, now_ms(), expires_in);
        if let Some(cur) = slot.current.load_full()
            && cur.value.ct_eq(value.expose())
        {
            return Ok(self.land_unchanged(slot, reason, &cur, expires_at_ms, observed));
        }
        let highest = [highest, slot.version()].into_iter().flatten().max();
        let new = NewCredential { value, expires_at_ms, fetched_at_ms: fetched_at };
        let local_version = |fence: u64| highest.map_or(fence, |h| fence.max(h.saturating_add(1)));
        // Whether our lease still stands is the store's call: it refuses the write once a newer
        // grant exists (we stalled, or the fetch was slow, and another node took over).
        let cred = match lease {
            Some(grant) => match self.store.put_credential(key, &new, grant).await {
                Ok(Some(written)) => written,
                Ok(None) => {
                    let e = self.late_write(slot).await;
                    // The node that took the lease over usually wrote already: its value is the
                    // answer to this refresh too.
                    return match slot.current.load_full() {
                        Some(c)
                            if highest.is_none_or(|h| c.version > h) && self.servable(slot, &c, now_ms()) =>
                        {
                            Ok(Fetched { cred: c, rotated: true })
                        }
                        _ => Err(e),
                    };
                }
                Err(e) => {
                    tracing::warn!(appid = key.appid, kind = %key.kind, error = %e, "store write failed; serving the new value from memory");
                    new.with_version(local_version(grant.fence))
                }
            },
            None => new.with_version(local_version(u64::try_from(now_ms()).unwrap_or(0))),
        };
        let version = cred.version;
        let installed = self.install_observed(slot, Arc::new(cred), Some(observed));
        metrics::counter!(
            "wxcentral_refreshes_total",
            "app" => key.appid.clone(),
            "kind" => key.kind.as_str(),
            "reason" => reason.as_str()
        )
        .increment(1);
        tracing::info!(
            appid = key.appid,
            kind = %key.kind,
            version,
            expires_in,
            reason = reason.as_str(),
            "credential refreshed"
        );
        Ok(Fetched { cred: installed, rotated: true })
    }

    /// WeChat answered with the value already held (a stable token outside its rotation window,
    /// a ticket before its expiry, a refused `force_refresh`, a report WeChat disagrees with).
    /// Keep it with WeChat's expiry and ask again later instead of hammering.
    ///
    /// For a value that stays the same until it expires, an answer in the refresh window is
    /// WeChat's confirmation that no successor comes before expiry: the value is then served up
    /// to the confirmed guard before expiry, and the one next fetch goes just after its latest
    /// possible expiry. Until then refreshes other than forced ones are held back: a read that
    /// finds nothing servable in the short gap waits for that fetch (within `read_wait`), and a
    /// report gets the confirmed value back.
    fn land_unchanged(
        &self,
        slot: &Slot,
        reason: Reason,
        cur: &Arc<Credential>,
        expires_at_ms: i64,
        observed: ExpiryWindow,
    ) -> Fetched {
        let now = now_ms();
        // WeChat reports whole seconds left, rounded down, so its answer for the same value
        // lands up to a second (plus latency) before the expiry already held. Taking that would
        // shrink the lifetime the margins scale with at every unchanged answer; only an expiry
        // clearly earlier than rounding explains (a clock step, a revocation) is adopted, and a
        // later one never is.
        let mut st = lock(&slot.state);
        let cred = if expires_at_ms < cur.expires_at_ms - UNCHANGED_EXPIRY_SLACK_MS {
            let updated = self.with_promise(slot, Credential { expires_at_ms, ..(**cur).clone() });
            // Same version, so only if nothing newer was installed meanwhile.
            if slot.version() == Some(cur.version) {
                slot.current.store(Some(Arc::clone(&updated)));
            }
            updated
        } else {
            Arc::clone(cur)
        };
        let m = self.margins(slot, &cred);
        let lifetime = lifetime_of(&cred);
        let step = (lifetime / 100).max(200);
        let keeps_until_expiry = slot.source.same_until_expiry();
        let confirmed = keeps_until_expiry && policy::confirmed_in_window(cred.expires_at_ms, m, now);
        let window = keeps_until_expiry.then(|| match st.window {
            Some((v, w)) if v == cred.version => w.narrow(observed),
            _ => observed,
        });
        st.window = window.map(|w| (cred.version, w));
        if confirmed {
            slot.confirm(cred.version);
        }
        let serve_end = self.serve_end(slot, &cred);
        let servable = serve_end > now;
        let after_expiry = cred.expires_at_ms.max(now) + 500;
        // The proactive plan, for answers that came before it (a report, a refused
        // force_refresh).
        let planned = st
            .planned_refresh_ms
            .filter(|p| *p > now)
            .unwrap_or_else(|| policy::refresh_at(cred.expires_at_ms, m, 0))
            .max(now + step);
        let retry_at = match (&slot.source, window) {
            (_, Some(w)) if confirmed => policy::successor_fetch_at(w, now),
            // Too early to tell: the check in the refresh window is still to come.
            (_, Some(_)) => planned,
            (Source::Token { .. }, _) if !servable => after_expiry,
            // The proactive refresh came too early for WeChat's rotation window: close in on
            // it at half the remaining serving time.
            (Source::Token { .. }, _) if reason == Reason::Proactive => {
                now + ((serve_end - now) / 2).max(step)
            }
            // A report or a refused force_refresh: the proactive plan still stands.
            (Source::Token { .. }, _) => planned,
            (Source::Ticket(_), None) => after_expiry,
        };
        // Reads only ask upstream when nothing is servable, so the gate matters for them only
        // then; for reports it is a short hold (WeChat just vouched for this value), or all the
        // way to the successor's fetch once WeChat confirmed there is none before.
        let hold = (lifetime / 100).clamp(1000, 30_000);
        let gate_until = if servable && !confirmed { retry_at.min(now + hold) } else { retry_at };
        st.planned_refresh_ms = Some(retry_at);
        st.not_before_ms = Some((gate_until, Gate::Unchanged));
        st.failures = 0;
        st.last_error = None;
        st.last_class = None;
        drop(st);
        tracing::info!(
            appid = slot.key.appid,
            kind = %slot.key.kind,
            version = cred.version,
            expires_in = (cred.expires_at_ms - now) / 1000,
            reason = reason.as_str(),
            confirmed,
            serve_left_ms = serve_end - now,
            retry_in_ms = retry_at - now,
            "upstream returned the value already held"
        );
        Fetched { cred, rotated: false }
    }

    /// [`Inner::install_observed`] for a value whose fetch we did not see (loaded, adopted).
    fn install(&self, slot: &Slot, cred: Arc<Credential>) -> Arc<Credential> {
        self.install_observed(slot, cred, None)
    }

    /// Makes `cred` current unless a newer version is held, resets the failure state, plans the
    /// next proactive refresh and tells waiters. Returns what is current afterwards. `fetched`
    /// is what the fetch that produced `cred` said about its expiry; for values that stay the
    /// same until they expire it times the check in the refresh window
    /// ([`policy::aligned_check_at`]).
    fn install_observed(
        &self,
        slot: &Slot,
        cred: Arc<Credential>,
        fetched: Option<ExpiryWindow>,
    ) -> Arc<Credential> {
        // The one place a value becomes current. The compare and the swap happen under the
        // slot's state lock, so of any installs racing (own fetch, change feed, adoption before
        // a refresh) the newest version wins whatever their order.
        let mut st = lock(&slot.state);
        if let Some(cur) = slot.current.load_full()
            && cur.version >= cred.version
        {
            return cur;
        }
        let cred = self.with_promise(slot, Arc::unwrap_or_clone(cred));
        let m = self.margins(slot, &cred);
        let jitter = policy::jitter_ms(m, &mut rand::thread_rng());
        let window = fetched.filter(|_| slot.source.same_until_expiry());
        let planned = policy::refresh_at(cred.expires_at_ms, m, jitter);
        let planned = window.map_or(planned, |w| policy::aligned_check_at(planned, w));
        slot.current.store(Some(Arc::clone(&cred)));
        st.planned_refresh_ms = Some(planned);
        st.not_before_ms = None;
        st.failures = 0;
        st.last_error = None;
        st.last_class = None;
        st.window = window.map(|w| (cred.version, w));
        drop(st);
        set_expiry_gauge(&slot.key, &cred, now_ms());
        slot.published.send_replace(cred.version);
        slot.wake.notify_one();
        cred
    }

    /// Books a failed refresh: backoff, status and metrics.
    fn record_failure(&self, slot: &Slot, mut e: FlightError) -> FlightError {
        let now = now_ms();
        let cur = slot.current.load_full();
        let lifetime_ms = cur.as_ref().map_or(7_200_000, |c| lifetime_of(c));
        let servable_left_ms = cur.as_ref().and_then(|c| {
            let end = self.serve_end(slot, c);
            (end > now).then_some(end - now)
        });
        let mut st = lock(&slot.state);
        st.failures = st.failures.saturating_add(1);
        let failure = Failure {
            class: e.class,
            attempt: st.failures,
            lifetime_ms,
            servable_left_ms,
            until_next_day_ms: ms_until_next_day(now),
        };
        let delay = policy::jittered_backoff_ms(failure, &mut rand::thread_rng());
        e.retry_at_ms = now + delay;
        st.not_before_ms = Some((e.retry_at_ms, Gate::Backoff));
        st.last_error = Some(e.short.clone());
        st.last_class = Some(e.class);
        let failures = st.failures;
        drop(st);
        metrics::counter!(
            "wxcentral_refresh_failures_total",
            "app" => slot.key.appid.clone(),
            "kind" => slot.key.kind.as_str(),
            "class" => e.class.as_str()
        )
        .increment(1);
        let stopped = e.class.stops_retries();
        tracing::warn!(
            appid = slot.key.appid,
            kind = %slot.key.kind,
            class = e.class.as_str(),
            error = e.short,
            failures,
            retry_in_ms = delay,
            serving = servable_left_ms.is_some(),
            stopped,
            "credential refresh failed"
        );
        e
    }

    // ---- the change feed -----------------------------------------------------------------

    /// Adopts what other nodes (and other engines on the same store) write, as the store tells
    /// of it.
    async fn follow_changes(self: Arc<Self>, mut changes: broadcast::Receiver<Change>) {
        loop {
            let change = tokio::select! {
                c = changes.recv() => c,
                () = self.cancel.cancelled() => return,
            };
            match change {
                Ok(Change::Credential(key)) => {
                    let Ok(slot) = self.slot(&key.appid, key.kind) else { continue };
                    match self.store.get_credential(&key).await {
                        Ok(stored) => {
                            self.adopt_if_newer(&slot, stored);
                        }
                        Err(e) => {
                            tracing::warn!(appid = key.appid, kind = %key.kind, error = %e, "store read after a change failed");
                        }
                    }
                }
                Ok(Change::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => self.resync().await,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Looks at every stored credential and adopts the newer ones.
    async fn resync(&self) {
        match self.store.load_credentials().await {
            Ok(all) => {
                for (key, cred) in all {
                    if let Ok(slot) = self.slot(&key.appid, key.kind) {
                        self.adopt_if_newer(&slot, Some(cred));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "store resync failed"),
        }
    }

    // ---- the loop --------------------------------------------------------------------------

    /// What the loop does next, and when.
    fn next_action(&self, slot: &Slot, now: i64) -> (i64, Reason) {
        let cur = slot.current.load_full();
        let st = lock(&slot.state);
        let (at, reason) = match cur {
            Some(c) if self.servable(slot, &c, now) => {
                (st.planned_refresh_ms.unwrap_or(now), Reason::Proactive)
            }
            _ => (now, if st.attempted { Reason::Expired } else { Reason::Startup }),
        };
        let at = match st.not_before_ms {
            Some((nb, _)) => at.max(nb),
            None => at,
        };
        (at, reason)
    }

    async fn run_loop(self: Arc<Self>, slot: Arc<Slot>) {
        loop {
            let now = now_ms();
            let (at, reason) = self.next_action(&slot, now);
            if at > now {
                tokio::select! {
                    () = tokio::time::sleep(ms(at - now)) => {}
                    () = slot.wake.notified() => continue,
                    () = self.cancel.cancelled() => return,
                }
                // The sleep may have overshot into another state (e.g. the value expired).
                if self.next_action(&slot, now_ms()).0 > now_ms() {
                    continue;
                }
            }
            if self.cancel.is_cancelled() {
                return;
            }
            let (_, reason_now) = self.next_action(&slot, now_ms());
            let reason = if reason == Reason::Proactive { reason_now } else { reason };
            match self.begin(&slot, reason, slot.version()) {
                Begin::Ready(_) => {}
                Begin::Join { flight, .. } => {
                    tokio::select! {
                        _ = flight => {}
                        () = self.cancel.cancelled() => return,
                    }
                }
                Begin::Gated { until_ms, .. } => {
                    tokio::select! {
                        () = tokio::time::sleep(ms(until_ms - now_ms())) => {}
                        () = slot.wake.notified() => {}
                        () = self.cancel.cancelled() => return,
                    }
                }
            }
        }
    }

    fn credential_status(&self, slot: &Slot) -> CredentialStatus {
        let now = now_ms();
        let cur = slot.current.load_full();
        let serving = cur.as_ref().is_some_and(|c| self.servable(slot, c, now));
        let st = lock(&slot.state);
        let state = match (st.failures, st.last_class) {
            (n, Some(class)) if n > 0 && class.stops_retries() => "stopped",
            (n, _) if n > 0 => "failing",
            _ if serving => "valid",
            _ => "absent",
        };
        let next_refresh_ms = match (st.not_before_ms, st.planned_refresh_ms) {
            (Some((nb, _)), Some(p)) => Some(nb.max(p)),
            (Some((nb, _)), None) => Some(nb),
            (None, p) if serving => p,
            (None, _) => None,
        };
        CredentialStatus {
            kind: slot.key.kind,
            state,
            expires_at_ms: cur.as_ref().map(|c| c.valid_until_ms),
            version: cur.as_ref().map(|c| c.version),
            last_error: st.last_error.clone(),
            next_refresh_ms,
            consecutive_failures: st.failures,
            serving,
        }
    }
}

enum LeaseOutcome {
    Held(Lease),
    /// No lease to be had (store trouble, or a holder that never finished).
    Unavailable(String),
    /// The holder's value arrived while waiting.
    Adopted(Arc<Credential>),
}
