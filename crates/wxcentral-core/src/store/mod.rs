//! Where credentials, durable secrets, quota books and refresh leases live.
//!
//! Each capability is its own small trait so a backend states what it guarantees; [`Store`]
//! bundles them for `Arc<dyn Store>` in the engine. Backends: [`MemoryStore`] (tests),
//! [`SqliteStore`] (the embedded default), and redis for clusters (its own issue).

mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use crate::error::Result;
use crate::kind::{Credential, CredentialKey};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use wechat_proto::Secret;

/// Versioned credential values.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    async fn get_credential(&self, key: &CredentialKey) -> Result<Option<Credential>>;
    /// Writes `cred` only if its version is greater than the stored one; returns whether it
    /// was written. A late writer never replaces a newer value.
    async fn put_credential(&self, key: &CredentialKey, cred: &Credential) -> Result<bool>;
    async fn load_credentials(&self) -> Result<Vec<(CredentialKey, Credential)>>;
}

/// Durable secrets that WeChat cannot give back (authorizer refresh tokens, the last verify
/// ticket). A write is durable when the call returns.
#[async_trait]
pub trait SecretStore: Send + Sync {
    async fn put_secret(&self, name: &str, value: &Secret) -> Result<()>;
    async fn get_secret(&self, name: &str) -> Result<Option<Secret>>;
    async fn delete_secret(&self, name: &str) -> Result<()>;
    /// Names starting with `prefix`, for listing e.g. every authorizer of a component.
    async fn list_secrets(&self, prefix: &str) -> Result<Vec<String>>;
}

/// Per-app, per-endpoint call counts of a WeChat day (see [`crate::quota::wechat_day`]).
#[async_trait]
pub trait QuotaStore: Send + Sync {
    /// Adds one call and returns the day's count after it.
    async fn incr_quota(&self, appid: &str, endpoint: &str, day: &str) -> Result<u64>;
    async fn get_quota(&self, appid: &str, endpoint: &str, day: &str) -> Result<u64>;
}

/// Short exclusive leases so one node refreshes a credential at a time.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes the lease `name` for `holder` if it is free or expired (or already `holder`'s).
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool>;
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
}

/// Everything the engine needs from a backend.
#[async_trait]
pub trait Store: CredentialStore + SecretStore + QuotaStore + LeaseStore + std::fmt::Debug {
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<()>;
}

/// Which backend to open; picked by the config's `[store] kind`.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    Memory,
    Sqlite { path: std::path::PathBuf },
}

impl StoreConfig {
    pub async fn open(&self) -> Result<Arc<dyn Store>> {
        Ok(match self {
            Self::Memory => Arc::new(MemoryStore::new()),
            Self::Sqlite { path } => Arc::new(SqliteStore::open(path).await?),
        })
    }
}

#[cfg(test)]
mod tests;
