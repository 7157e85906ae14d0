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
use crate::kind::{AppKind, AppSpec, Credential, CredentialKey, CredentialKind, Role, TokenApi};
use crate::limiter::{Limiter, Permit};
use crate::policy::{self, ExpiryWindow, Failure, Margins};
use crate::quota::{ms_until_next_day, wechat_day};
use crate::store::{Change, Lease, NewCredential, Store};
use crate::upstream::{FaultClass, Upstream, UpstreamError};
use arc_swap::ArcSwapOption;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wechat_proto::Secret;
use wechat_proto::api::{self, TicketType};

mod feed;
mod flight;
mod index;
mod metrics_text;
mod platform;
mod reads;
mod registry;
mod schedule;
mod slot;
mod source;
mod status;

use flight::*;
pub use index::TokenOwner;
use metrics_text::{AppCalls, SlotCounters};
pub use platform::{AuthorizerStatus, ComponentStatus, ImportReport, TICKET_STALE_MS};
pub use registry::Origin;
use registry::{AppEntry, Platform, Registry, Stored};
use slot::*;
use source::*;

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
    /// The youngest a value may be for a guarded report ([`Engine::report_suspect`]) to
    /// refresh it: 30 s, WeChat's own spacing of `force_refresh`.
    pub report_guard: Duration,
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
            report_guard: Duration::from_secs(30),
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
    pub origin: Origin,
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
struct Inner {
    store: Arc<dyn Store>,
    upstream: Upstream,
    config: EngineConfig,
    /// The live set of apps and their slots.
    registry: Registry,
    /// Held while the set of apps changes (an admin call, a reload, the change feed), so a
    /// look at the store and the change made from it are one step: a feed event read before a
    /// delete can never bring the app back after it.
    apps_lock: tokio::sync::Mutex<()>,
    /// The engine's own cancellation; every slot's token is a child of it.
    cancel: CancellationToken,
    /// Every loop and refresh task, so shutdown can wait for them.
    tasks: TaskTracker,
    /// The runtime the engine was started on. Its tasks run there whoever asks for them (a
    /// request served on one of the server's connection workers, say), so they live as long
    /// as the engine and never as long as a caller's runtime.
    runtime: tokio::runtime::Handle,
    next_flight: AtomicU64,
    limiter: Limiter,
    /// Token value (digest) to slot, for the drop-in proxy.
    index: index::TokenIndex,
}

pub struct Engine {
    inner: Arc<Inner>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("apps", &self.inner.registry.len())
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

/// The longest appid accepted (WeChat's are 18 characters).
const MAX_APPID_LEN: usize = 64;

/// Appids are labels in metrics, keys in the store and path segments: letters, digits, `_`
/// and `-` only.
pub fn check_appid(appid: &str) -> Result<()> {
    if appid.is_empty() || appid.len() > MAX_APPID_LEN {
        return Err(Error::Config(format!("an appid has 1 to {MAX_APPID_LEN} characters")));
    }
    if !appid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(Error::Config("an appid has only letters, digits, '_' and '-'".into()));
    }
    Ok(())
}

/// How long a starting engine keeps retrying the store's first reads before it gives up (and the
/// process exits with the error): a Redis stalled by an fsync or a failover, or one still loading
/// its AOF, should delay a start, not fail it.
const STARTUP_READ_BOUND: Duration = Duration::from_secs(30);

/// `read`, retried with backoff while the store fails, up to [`STARTUP_READ_BOUND`].
async fn startup_read<T, F, Fut>(what: &'static str, mut read: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match read().await {
            Err(Error::Store(e)) if started.elapsed() + pause < STARTUP_READ_BOUND => {
                tracing::warn!(what, error = %e, retry_in_ms = pause.as_millis() as u64, "store read at start failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

impl Engine {
    /// Loads the apps added at runtime and the stored values, then starts one refresh loop per
    /// credential. Values still valid are served and scheduled without an upstream call
    /// (rule 7); the others are fetched in the background (queued behind the limiter), and
    /// reads wait for them up to `read_wait`. `apps` are the config file's; a runtime app
    /// with the same appid is shadowed by it.
    pub async fn start(
        apps: Vec<AppSpec>,
        store: Arc<dyn Store>,
        upstream: Upstream,
        config: EngineConfig,
    ) -> Result<Arc<Self>> {
        let mut seen = std::collections::HashSet::new();
        for app in &apps {
            check_appid(&app.appid).map_err(|e| Error::Config(format!("app {:?}: {e}", app.appid)))?;
            if !seen.insert(app.appid.clone()) {
                return Err(Error::Config(format!("app {} is configured twice", app.appid)));
            }
        }
        let limiter = Limiter::new(config.max_concurrency, config.max_per_second);
        let inner = Arc::new(Inner {
            limiter,
            store,
            upstream,
            config,
            registry: Registry::default(),
            apps_lock: tokio::sync::Mutex::new(()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            runtime: tokio::runtime::Handle::current(),
            next_flight: AtomicU64::new(1),
            index: index::TokenIndex::default(),
        });
        // Subscribed before the load, so nothing written in between is missed.
        let changes = inner.store.subscribe();
        // Everything is read before anything starts, so a read that fails leaves nothing running.
        let store = &inner.store;
        let today = wechat_day(now_ms());
        let stored_apps = startup_read("load_apps", || store.load_apps()).await?;
        let records = startup_read("load_authorizers", || store.load_authorizers()).await?;
        let quotas = startup_read("quotas_of_day", || store.quotas_of_day(&today)).await?;
        let mut all: Vec<(AppSpec, Origin)> = apps.into_iter().map(|a| (a, Origin::Config)).collect();
        for app in stored_apps {
            if seen.contains(&app.appid) {
                tracing::warn!(appid = app.appid, "an app added at runtime is shadowed by the config file's");
            } else {
                all.push((app, Origin::Runtime));
            }
        }
        inner.add_apps(all, Stored::Scan).await?;
        // After the components, which decide which authorizers are kept.
        inner.adopt_authorizers(records, Stored::Scan).await?;
        for (appid, endpoint, calls) in quotas {
            if let Some(entry) = inner.registry.get(&appid)
                && let Some(ep) = entry.endpoints().find(|e| *e == endpoint)
            {
                entry.record_quota(ep, &today, calls);
            }
        }
        inner.spawn(Arc::clone(&inner).follow_changes(changes));
        Ok(Arc::new(Self { inner }))
    }

    /// The definition of an app, if it is in the live set.
    pub fn app(&self, appid: &str) -> Option<AppSpec> {
        self.inner.registry.get(appid).map(|e| e.spec.clone())
    }

    pub fn appids(&self) -> Vec<String> {
        self.inner.registry.entries().iter().map(|e| e.spec.appid.clone()).collect()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Adds or changes a runtime app: written to the store first (secret sealed), so every
    /// node and every restart sees it, then live here. Returns whether it is new. A config-file
    /// app cannot be changed this way.
    pub async fn put_app(&self, spec: AppSpec) -> Result<bool> {
        Ok(self.put_apps(vec![spec]).await?[0])
    }

    /// [`Engine::put_app`] for many apps at once: one store write for all of them, and all or
    /// none (a config-file appid or a bad appid refuses the batch). Returns which are new.
    pub async fn put_apps(&self, specs: Vec<AppSpec>) -> Result<Vec<bool>> {
        let mut seen = std::collections::HashSet::new();
        for spec in &specs {
            check_appid(&spec.appid)?;
            if !seen.insert(spec.appid.as_str()) {
                return Err(Error::Config(format!("app {} is in the batch twice", spec.appid)));
            }
        }
        let _changing = self.inner.apps_lock.lock().await;
        let mut created = Vec::with_capacity(specs.len());
        for spec in &specs {
            let existing = self.inner.registry.get(&spec.appid);
            match existing.as_ref().map(|e| e.origin) {
                Some(Origin::Config) => return Err(Error::ReadOnlyApp(spec.appid.clone())),
                Some(Origin::Authorization) => return Err(Error::AuthorizerApp(spec.appid.clone())),
                Some(Origin::Runtime) | None => {}
            }
            created.push(existing.is_none());
        }
        self.inner.store.put_apps(&specs).await?;
        // A new appid has no values stored (removing an app deletes its rows); a changed one may.
        let (new, changed): (Vec<_>, Vec<_>) =
            specs.into_iter().zip(&created).partition(|(_, created)| **created);
        let runtime = |v: Vec<(AppSpec, &bool)>| v.into_iter().map(|(s, _)| (s, Origin::Runtime)).collect();
        self.inner.add_apps(runtime(new), Stored::Nothing).await?;
        self.inner.add_apps(runtime(changed), Stored::Each).await?;
        Ok(created)
    }

    /// Removes a runtime app with its stored values, here and (through the store) everywhere.
    pub async fn delete_app(&self, appid: &str) -> Result<()> {
        let _changing = self.inner.apps_lock.lock().await;
        match self.inner.registry.get(appid) {
            None => Err(Error::UnknownApp(appid.to_owned())),
            Some(e) if e.origin == Origin::Config => Err(Error::ReadOnlyApp(appid.to_owned())),
            Some(e) if e.origin == Origin::Authorization => Err(Error::AuthorizerApp(appid.to_owned())),
            Some(_) => {
                // The store drops the app with its values and leases in one transaction.
                self.inner.store.delete_app(appid).await?;
                self.inner.remove_app(appid, false).await.map(drop)
            }
        }
    }

    /// The config file's apps after a reload: new ones are added, changed ones replaced (values
    /// kept in the store are loaded again), missing ones removed with their stored values.
    /// Unchanged apps are not touched: their reads never notice.
    pub async fn set_config_apps(&self, apps: Vec<AppSpec>) -> Result<()> {
        let _changing = self.inner.apps_lock.lock().await;
        let mut seen = std::collections::HashSet::new();
        for app in &apps {
            check_appid(&app.appid).map_err(|e| Error::Config(format!("app {:?}: {e}", app.appid)))?;
            if !seen.insert(app.appid.clone()) {
                return Err(Error::Config(format!("app {} is configured twice", app.appid)));
            }
        }
        for entry in self.inner.registry.entries() {
            if entry.origin == Origin::Config && !seen.contains(&entry.spec.appid) {
                self.inner.remove_app(&entry.spec.appid, true).await?;
            }
        }
        self.inner.add_apps(apps.into_iter().map(|a| (a, Origin::Config)).collect(), Stored::Each).await?;
        // A runtime app the file shadowed until now comes back.
        self.inner.sync_apps_held().await
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

    /// [`Engine::get`], handing `read` the value together with something derived from it by
    /// `make` and kept beside it until the value changes (the HTTP layer renders each value's
    /// JSON once this way). Nothing is copied on the way: `read` borrows both.
    pub async fn read_with<T, R>(
        &self,
        appid: &str,
        kind: CredentialKind,
        make: impl FnOnce(&Credential) -> T,
        read: impl FnOnce(&Arc<Credential>, &T) -> R,
    ) -> Result<R>
    where
        T: Send + Sync + 'static,
    {
        let slot = self.inner.slot(appid, kind)?;
        let cred = self.inner.get_from(&slot, self.inner.config.read_wait).await?;
        {
            let memo = slot.memo.load();
            if let Some(m) = memo.as_ref()
                && Arc::ptr_eq(&m.cred, &cred)
                && let Some(v) = m.value.downcast_ref::<T>()
            {
                return Ok(read(&cred, v));
            }
        }
        let v = make(&cred);
        let r = read(&cred, &v);
        slot.memo.store(Some(Arc::new(Memo { cred: Arc::clone(&cred), value: Box::new(v) })));
        Ok(r)
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

    /// A caller suspects the current value without having seen WeChat reject it (a drop-in
    /// `force_refresh`, an SDK asking for its token again): treated as a report of the current
    /// value, but at most one per credential per 30 s (a value younger than that is answered
    /// as it is, whichever node fetched it) and 20 a WeChat day; over that the current value
    /// is answered.
    pub async fn report_suspect(&self, appid: &str, kind: CredentialKind) -> Result<Arc<Credential>> {
        self.inner.report_suspect(appid, kind).await
    }

    /// The app (authorizer, component) and credential whose token `value` is: the current
    /// value, or its predecessor within WeChat's overlap. `None` for anything the hub did not
    /// hand out, so the proxy never relays a token it cannot vouch for.
    pub fn resolve_token(&self, value: &str) -> Option<TokenOwner> {
        self.inner.resolve_token(value)
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

    /// Every app in the live set with the state of its credentials, from memory.
    pub fn status(&self) -> Vec<AppStatus> {
        let today = wechat_day(now_ms());
        self.inner.registry.entries().iter().map(|e| self.inner.app_status(e, &today)).collect()
    }

    /// [`Engine::status`] of one app.
    pub fn app_status(&self, appid: &str) -> Option<AppStatus> {
        let entry = self.inner.registry.get(appid)?;
        Some(self.inner.app_status(&entry, &wechat_day(now_ms())))
    }

    /// Appends the per-app series (upstream calls, refreshes, failures, quota, seconds to
    /// expiry) in Prometheus text format: rendered from the live set at each scrape, so a
    /// removed app's series are gone with it. Without `per_app` the `app` label is dropped
    /// and the series are summed (gauges: the app closest to its limit).
    pub fn render_metrics(&self, per_app: bool, out: &mut String) {
        metrics_text::render(&self.inner, per_app, out);
    }

    /// Stops the refresh loops; in-flight fetches finish or are dropped.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

impl Inner {
    fn slot(&self, appid: &str, kind: CredentialKind) -> Result<Arc<Slot>> {
        self.registry.slot(appid, kind)
    }

    /// A tracked task on the engine's runtime (see `runtime`).
    fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn_on(task, &self.runtime)
    }
}
