//! In-memory store for tests and `kind = "memory"`: nothing survives the process.

use super::{
    AppStore, Change, ChangeFeed, CredentialStore, FEED_CAPACITY, Lease, LeaseStore, NewCredential,
    QuotaStore, SecretStore, Store,
};
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
        let mut inner = self.lock();
        if inner.leases.get(&lease.name).is_none_or(|l| l.fence != lease.fence) {
            return Ok(None);
        }
        let stored = inner.credentials.get(key).map(|c| c.version);
        let version = stored.map_or(lease.fence, |v| lease.fence.max(v.saturating_add(1)));
        let written = cred.clone().with_version(version);
        inner.credentials.insert(key.clone(), written.clone());
        if let Some(l) = inner.leases.get_mut(&lease.name) {
            l.until = Instant::now();
        }
        drop(inner);
        // No subscriber is fine: nobody to tell.
        let _ = self.feed.send(Change::Credential(key.clone()));
        Ok(Some(written))
    }

    async fn load_credentials(&self) -> Result<Vec<(CredentialKey, Credential)>> {
        Ok(self.lock().credentials.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    async fn delete_credentials(&self, appid: &str) -> Result<()> {
        let mut inner = self.lock();
        let prefix = super::lease_prefix(appid);
        for kind in crate::kind::CredentialKind::ALL {
            inner.credentials.remove(&CredentialKey::new(appid, kind));
            inner.leases.remove(&format!("{prefix}{kind}"));
        }
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
