//! The credential engine: proactive refresh, single flight, compare-and-refresh, backoff.
//!
//! Placeholder surface; the implementation lands with issue #4.

use crate::error::{Error, Result};
use crate::kind::{AppKind, AppSpec, Credential, CredentialKind};
use crate::store::Store;
use crate::upstream::Upstream;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

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
    /// This node's name in refresh leases.
    pub node_id: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            refresh_before_secs: None,
            serve_margin_secs: None,
            read_wait: Duration::from_secs(3),
            stable_rotate_secs: 300,
            node_id: "node".into(),
        }
    }
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
}

#[derive(Debug)]
pub struct Engine {
    apps: Vec<AppSpec>,
    store: Arc<dyn Store>,
    #[allow(dead_code)]
    upstream: Upstream,
    #[allow(dead_code)]
    config: EngineConfig,
}

impl Engine {
    /// Loads stored values, then starts one refresh loop per credential.
    pub async fn start(
        apps: Vec<AppSpec>,
        store: Arc<dyn Store>,
        upstream: Upstream,
        config: EngineConfig,
    ) -> Result<Arc<Self>> {
        Ok(Arc::new(Self { apps, store, upstream, config }))
    }

    pub fn app(&self, appid: &str) -> Option<&AppSpec> {
        self.apps.iter().find(|a| a.appid == appid)
    }

    pub fn appids(&self) -> Vec<String> {
        self.apps.iter().map(|a| a.appid.clone()).collect()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The current value, refreshed first if nothing valid is held.
    pub async fn get(&self, appid: &str, _kind: CredentialKind) -> Result<Credential> {
        Err(Error::UnknownApp(appid.to_owned()))
    }

    /// Compare-and-refresh: `value` was rejected by WeChat. Returns the current value without an
    /// upstream call if `value` is no longer current.
    pub async fn report_invalid(
        &self,
        appid: &str,
        _kind: CredentialKind,
        _value: &str,
    ) -> Result<Credential> {
        Err(Error::UnknownApp(appid.to_owned()))
    }

    /// Refreshes now whatever is held (admin action).
    pub async fn force_refresh(&self, appid: &str, _kind: CredentialKind) -> Result<Credential> {
        Err(Error::UnknownApp(appid.to_owned()))
    }

    pub async fn status(&self) -> Vec<AppStatus> {
        Vec::new()
    }

    /// Stops the refresh loops; in-flight fetches finish or are dropped.
    pub async fn shutdown(&self) {}
}
