//! In-memory store for tests and `kind = "memory"`: nothing survives the process.

use super::{
    AppStore, AuthorizerStore, Change, ChangeFeed, CredentialStore, FEED_CAPACITY, Lease, LeaseStore,
    NewCredential, QuotaStore, SecretStore, Store,
};
use crate::authorizer::{AuthorizerRecord, AuthorizerWrite, code_name, refresh_token_name};
use crate::error::Result;
use crate::kind::AppSpec;
use crate::kind::{Credential, CredentialKey};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use wechat_proto::Secret;

/// Tells its subscribers of every write at once (several engines may share one in a process).
/// Nothing is kept at rest, so secrets need no sealing here.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    feed: broadcast::Sender<Change>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self { inner: Mutex::default(), feed: broadcast::Sender::new(FEED_CAPACITY) }
    }
}

#[derive(Debug)]
struct LeaseRow {
    holder: String,
    until: Instant,
    fence: u64,
}

#[derive(Debug, Default)]
struct Inner {
    credentials: HashMap<CredentialKey, Credential>,
    secrets: BTreeMap<String, Secret>,
    quotas: HashMap<(String, String, String), u64>,
    leases: HashMap<String, LeaseRow>,
    apps: BTreeMap<String, AppSpec>,
    authorizers: BTreeMap<String, AuthorizerRecord>,
}

impl Inner {
    /// Whether `rec` may replace what is stored (its event is not older).
    fn accepts(&self, rec: &AuthorizerRecord) -> bool {
        self.authorizers.get(&rec.authorizer_appid).is_none_or(|old| old.event_ms <= rec.event_ms)
    }

    fn write_credential(
        &mut self,
        key: &CredentialKey,
        cred: &NewCredential,
        lease: &Lease,
    ) -> Option<Credential> {
        if self.leases.get(&lease.name).is_none_or(|l| l.fence != lease.fence) {
            return None;
        }
        let stored = self.credentials.get(key).map(|c| c.version);
        let version = stored.map_or(lease.fence, |v| lease.fence.max(v.saturating_add(1)));
        let written = cred.clone().with_version(version);
        self.credentials.insert(key.clone(), written.clone());
        if let Some(l) = self.leases.get_mut(&lease.name) {
            l.until = Instant::now();
        }
        Some(written)
    }

    fn forget_credentials(&mut self, appid: &str) {
        let prefix = super::lease_prefix(appid);
        for kind in crate::kind::CredentialKind::ALL {
            self.credentials.remove(&CredentialKey::new(appid, kind));
            self.leases.remove(&format!("{prefix}{kind}"));
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-written (every update is a
        // single insert), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl CredentialStore for MemoryStore {
    async fn get_credential(&self, key: &CredentialKey) -> Result<Option<Credential>> {
        Ok(self.lock().credentials.get(key).cloned())
    }

    async fn put_credential(
        &self,
        key: &CredentialKey,
        cred: &NewCredential,
        lease: &Lease,
    ) -> Result<Option<Credential>> {
        let written = self.lock().write_credential(key, cred, lease);
        if written.is_some() {
            // No subscriber is fine: nobody to tell.
            let _ = self.feed.send(Change::Credential(key.clone()));
        }
        Ok(written)
    }

    async fn load_credentials(&self) -> Result<Vec<(CredentialKey, Credential)>> {
        Ok(self.lock().credentials.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    async fn delete_credentials(&self, appid: &str) -> Result<()> {
        self.lock().forget_credentials(appid);
        Ok(())
    }
}

#[async_trait]
impl AppStore for MemoryStore {
    async fn put_apps(&self, apps: &[AppSpec]) -> Result<()> {
        let mut inner = self.lock();
        for app in apps {
            inner.apps.insert(app.appid.clone(), app.clone());
        }
        drop(inner);
        for app in apps {
            let _ = self.feed.send(Change::App(app.appid.clone()));
        }
        Ok(())
    }

    async fn delete_app(&self, appid: &str) -> Result<bool> {
        let existed = self.lock().apps.remove(appid).is_some();
        self.delete_credentials(appid).await?;
        if existed {
            let _ = self.feed.send(Change::App(appid.to_owned()));
        }
        Ok(existed)
    }

    async fn get_app(&self, appid: &str) -> Result<Option<AppSpec>> {
        Ok(self.lock().apps.get(appid).cloned())
    }

    async fn load_apps(&self) -> Result<Vec<AppSpec>> {
        Ok(self.lock().apps.values().cloned().collect())
    }
}

#[async_trait]
impl AuthorizerStore for MemoryStore {
    async fn put_authorizers(&self, recs: &[(AuthorizerRecord, Option<Secret>)]) -> Result<Vec<bool>> {
        let mut inner = self.lock();
        let mut written = Vec::with_capacity(recs.len());
        for (rec, refresh_token) in recs {
            let ok = inner.accepts(rec);
            if ok {
                inner.authorizers.insert(rec.authorizer_appid.clone(), rec.clone());
                if let Some(rt) = refresh_token {
                    inner.secrets.insert(refresh_token_name(&rec.authorizer_appid), rt.clone());
                }
            }
            written.push(ok);
        }
        drop(inner);
        for ((rec, _), ok) in recs.iter().zip(&written) {
            if *ok {
                let _ = self.feed.send(Change::App(rec.authorizer_appid.clone()));
            }
        }
        Ok(written)
    }

    async fn put_authorizer_token(
        &self,
        key: &CredentialKey,
        cred: &NewCredential,
        lease: &Lease,
        write: AuthorizerWrite<'_>,
    ) -> Result<Option<Credential>> {
        let mut inner = self.lock();
        if write.record.is_some_and(|r| !inner.accepts(r)) {
            return Ok(None);
        }
        let Some(written) = inner.write_credential(key, cred, lease) else { return Ok(None) };
        inner.secrets.insert(refresh_token_name(&key.appid), write.refresh_token.clone());
        if let Some(rec) = write.record {
            inner.authorizers.insert(rec.authorizer_appid.clone(), rec.clone());
            if let Some(d) = write.code_digest {
                inner.secrets.insert(code_name(&rec.component_appid, d), Secret::new(key.appid.clone()));
            }
        }
        drop(inner);
        if write.record.is_some() {
            let _ = self.feed.send(Change::App(key.appid.clone()));
        }
        let _ = self.feed.send(Change::Credential(key.clone()));
        Ok(Some(written))
    }

    async fn get_authorizer(&self, appid: &str) -> Result<Option<AuthorizerRecord>> {
        Ok(self.lock().authorizers.get(appid).cloned())
    }

    async fn load_authorizers(&self) -> Result<Vec<AuthorizerRecord>> {
        Ok(self.lock().authorizers.values().cloned().collect())
    }

    async fn get_refresh_token(&self, appid: &str) -> Result<Option<Secret>> {
        Ok(self.lock().secrets.get(&refresh_token_name(appid)).cloned())
    }

    async fn unauthorize(&self, component: &str, appid: &str, event_ms: i64) -> Result<bool> {
        let mut inner = self.lock();
        let held = inner.authorizers.get(appid);
        // Another component's authorizer with the same appid is not this push's to revoke.
        if held.is_some_and(|h| h.component_appid != component) {
            return Ok(false);
        }
        let tomb = crate::authorizer::tombstone(component, appid, event_ms, held);
        if !inner.accepts(&tomb) {
            return Ok(false);
        }
        inner.authorizers.insert(appid.to_owned(), tomb);
        inner.secrets.remove(&refresh_token_name(appid));
        inner.forget_credentials(appid);
        drop(inner);
        let _ = self.feed.send(Change::App(appid.to_owned()));
        Ok(true)
    }
}

#[async_trait]
impl SecretStore for MemoryStore {
    async fn put_secret(&self, name: &str, value: &Secret) -> Result<()> {
        self.lock().secrets.insert(name.to_owned(), value.clone());
        Ok(())
    }

    async fn get_secret(&self, name: &str) -> Result<Option<Secret>> {
        Ok(self.lock().secrets.get(name).cloned())
    }

    async fn delete_secret(&self, name: &str) -> Result<()> {
        self.lock().secrets.remove(name);
        Ok(())
    }

    async fn list_secrets(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.lock().secrets.keys().filter(|k| k.starts_with(prefix)).cloned().collect())
    }
}

#[async_trait]
impl QuotaStore for MemoryStore {
    async fn incr_quota(&self, appid: &str, endpoint: &str, day: &str) -> Result<u64> {
        let mut inner = self.lock();
        let n = inner.quotas.entry((appid.to_owned(), endpoint.to_owned(), day.to_owned())).or_default();
        *n += 1;
        Ok(*n)
    }

    async fn get_quota(&self, appid: &str, endpoint: &str, day: &str) -> Result<u64> {
        let key = (appid.to_owned(), endpoint.to_owned(), day.to_owned());
        Ok(self.lock().quotas.get(&key).copied().unwrap_or(0))
    }

    async fn quotas_of_day(&self, day: &str) -> Result<Vec<(String, String, u64)>> {
        Ok(self
            .lock()
            .quotas
            .iter()
            .filter(|((_, _, d), _)| d == day)
            .map(|((a, e, _), n)| (a.clone(), e.clone(), *n))
            .collect())
    }
}

#[async_trait]
impl LeaseStore for MemoryStore {
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        let mut inner = self.lock();
        let now = Instant::now();
        let last = match inner.leases.get(name) {
            Some(l) if l.holder != holder && l.until > now => return Ok(None),
            Some(l) => l.fence,
            None => 0,
        };
        let fence = super::next_fence(last, crate::clock::now_ms());
        inner.leases.insert(name.to_owned(), LeaseRow { holder: holder.to_owned(), until: now + ttl, fence });
        Ok(Some(Lease { name: name.to_owned(), holder: holder.to_owned(), fence }))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let mut inner = self.lock();
        if let Some(l) = inner.leases.get_mut(&lease.name)
            && l.holder == lease.holder
            && l.fence == lease.fence
        {
            // The row stays: the next grant's fence must still exceed this one.
            l.until = Instant::now();
        }
        Ok(())
    }
}

impl ChangeFeed for MemoryStore {
    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.feed.subscribe()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
