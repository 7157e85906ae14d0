//! In-memory store for tests and `kind = "memory"`: nothing survives the process.

use super::{CredentialStore, LeaseStore, QuotaStore, SecretStore, Store};
use crate::error::Result;
use crate::kind::{Credential, CredentialKey};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wechat_proto::Secret;

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    credentials: HashMap<CredentialKey, Credential>,
    secrets: BTreeMap<String, Secret>,
    quotas: HashMap<(String, String, String), u64>,
    leases: HashMap<String, (String, Instant)>,
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

    async fn put_credential(&self, key: &CredentialKey, cred: &Credential) -> Result<bool> {
        let mut inner = self.lock();
        match inner.credentials.get(key) {
            Some(old) if old.version >= cred.version => Ok(false),
            _ => {
                inner.credentials.insert(key.clone(), cred.clone());
                Ok(true)
            }
        }
    }

    async fn load_credentials(&self) -> Result<Vec<(CredentialKey, Credential)>> {
        Ok(self.lock().credentials.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
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
}

#[async_trait]
impl LeaseStore for MemoryStore {
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let mut inner = self.lock();
        let now = Instant::now();
        match inner.leases.get(name) {
            Some((h, until)) if h != holder && *until > now => Ok(false),
            _ => {
                inner.leases.insert(name.to_owned(), (holder.to_owned(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let mut inner = self.lock();
        if inner.leases.get(name).is_some_and(|(h, _)| h == holder) {
            inner.leases.remove(name);
        }
        Ok(())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
