//! Where credentials, durable secrets, quota books and refresh leases live.
//!
//! Each capability is its own small trait so a backend states what it guarantees; [`Store`]
//! bundles them for `Arc<dyn Store>` in the engine. Backends: [`MemoryStore`] (tests),
//! [`SqliteStore`] (the embedded default), and [`RedisStore`] for clusters.

mod memory;
mod redis;
mod sqlite;

pub use memory::MemoryStore;
pub use redis::{RedisConfig, RedisStore, valid_namespace, valid_redis_url};
pub use sqlite::SqliteStore;

use crate::authorizer::{AuthorizerRecord, AuthorizerWrite};
use crate::error::Result;
use crate::kind::{AppKind, AppSpec, Credential, CredentialKey, TokenApi};
use crate::seal::Sealer;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use wechat_proto::Secret;
use wechat_proto::api::TicketType;

/// A value as fetched, before the store gives it its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCredential {
    pub value: Secret,
    pub expires_at_ms: i64,
    pub fetched_at_ms: i64,
}

impl NewCredential {
    pub fn with_version(self, version: u64) -> Credential {
        Credential::new(self.value, self.expires_at_ms, self.fetched_at_ms, version)
    }
}

/// Versioned credential values. Every write is made under a [`Lease`] and fenced by it.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    async fn get_credential(&self, key: &CredentialKey) -> Result<Option<Credential>>;
    /// Writes `cred` under `lease`, unless a newer grant of that lease exists (the holder
    /// stalled past its lease and someone else took it): then nothing is written and `None`
    /// comes back. An accepted write also ends the lease (one commit instead of two: the
    /// holder has nothing left to do under it). The store gives the value its version, `max(lease.fence, stored + 1)`, so a
    /// write that is accepted is always newer than what it replaces, whatever the writer's
    /// clock says; the stored credential is returned.
    async fn put_credential(
        &self,
        key: &CredentialKey,
        cred: &NewCredential,
        lease: &Lease,
    ) -> Result<Option<Credential>>;
    async fn load_credentials(&self) -> Result<Vec<(CredentialKey, Credential)>>;
    /// Forgets every credential of `appid` and its refresh leases (the app was removed). A
    /// refresh still in flight for it cannot write back: its lease is gone with the rows.
    async fn delete_credentials(&self, appid: &str) -> Result<()>;
}

/// Apps added at runtime (the admin API), so every node and every restart sees them. The
/// secret is sealed at rest: a store without a [`Sealer`] refuses to keep one.
#[async_trait]
pub trait AppStore: Send + Sync {
    /// Writes all of `apps` or none.
    async fn put_apps(&self, apps: &[AppSpec]) -> Result<()>;
    /// Removes the app with its credentials and leases; whether it existed.
    async fn delete_app(&self, appid: &str) -> Result<bool>;
    async fn get_app(&self, appid: &str) -> Result<Option<AppSpec>>;
    async fn load_apps(&self) -> Result<Vec<AppSpec>>;
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

/// The open platform's authorizers: a record each (state, permissions, the event that set
/// them) with the refresh token sealed beside it. Refresh tokens are what WeChat cannot give
/// back without the merchant (or its authorizer list), so every write here is durable when the
/// call returns, and a rotated one is written in the same transaction as the token it came with.
#[async_trait]
pub trait AuthorizerStore: Send + Sync {
    /// Writes each record and, when given, its refresh token, in one transaction, except those
    /// whose stored record has a newer event (a later `unauthorized` stands): those write
    /// nothing and answer `false`.
    async fn put_authorizers(&self, recs: &[(AuthorizerRecord, Option<Secret>)]) -> Result<Vec<bool>>;
    /// [`AuthorizerStore::put_authorizers`] of one.
    async fn put_authorizer(&self, rec: &AuthorizerRecord, refresh_token: Option<&Secret>) -> Result<bool> {
        let written = self.put_authorizers(&[(rec.clone(), refresh_token.cloned())]).await?;
        Ok(written.first().copied().unwrap_or(false))
    }
    /// [`CredentialStore::put_credential`] of an authorizer's access token together with what
    /// `write` carries, in one transaction: all of it or (a newer lease grant, or a record
    /// newer than `write.record`) none of it.
    async fn put_authorizer_token(
        &self,
        key: &CredentialKey,
        cred: &NewCredential,
        lease: &Lease,
        write: AuthorizerWrite<'_>,
    ) -> Result<Option<Credential>>;
    async fn get_authorizer(&self, appid: &str) -> Result<Option<AuthorizerRecord>>;
    /// Every record, tombstones included.
    async fn load_authorizers(&self) -> Result<Vec<AuthorizerRecord>>;
    async fn get_refresh_token(&self, appid: &str) -> Result<Option<Secret>>;
    /// The merchant revoked the authorization at `event_ms`: the record becomes a tombstone
    /// (one is written if there was no record, so a late `authorized` push cannot bring it
    /// in) and its refresh token, credentials and leases go, in one transaction. Refused
    /// (`false`) when the stored record is newer than the event.
    async fn unauthorize(&self, component: &str, appid: &str, event_ms: i64) -> Result<bool>;
}

/// Per-app, per-endpoint call counts of a WeChat day (see [`crate::quota::wechat_day`]).
#[async_trait]
pub trait QuotaStore: Send + Sync {
    /// Adds one call and returns the day's count after it.
    async fn incr_quota(&self, appid: &str, endpoint: &str, day: &str) -> Result<u64>;
    async fn get_quota(&self, appid: &str, endpoint: &str, day: &str) -> Result<u64>;
    /// Every count of `day`: `(appid, endpoint, calls)`.
    async fn quotas_of_day(&self, day: &str) -> Result<Vec<(String, String, u64)>>;
}

/// A granted lease. `fence` grows with every grant of the same name, across holders, restarts
/// and processes, so a write made under a superseded grant can be told apart and refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub fence: u64,
}

/// Short exclusive leases so one node refreshes a credential at a time.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Grants the lease `name` to `holder` for `ttl` if it is free, expired or already
    /// `holder`'s; every grant carries a fence above every earlier grant of `name`.
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>>;
    /// Ends the grant `lease` early; a newer grant of the same name is left alone.
    async fn release_lease(&self, lease: &Lease) -> Result<()>;
}

/// Something in the store changed that a node may hold in memory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    /// A new value of this credential was written.
    Credential(CredentialKey),
    /// A runtime app or an authorizer was added, changed or removed.
    App(String),
    /// Changes were missed (a lagging receiver, a feed that lost its place): look at
    /// everything again.
    Resync,
}

/// How the engine learns of writes made by other processes (and by itself): a wake-up per
/// changed key, within a bound that each backend states.
pub trait ChangeFeed: Send + Sync {
    fn subscribe(&self) -> broadcast::Receiver<Change>;
}

/// Everything the engine needs from a backend.
#[async_trait]
pub trait Store:
    CredentialStore
    + SecretStore
    + AppStore
    + AuthorizerStore
    + QuotaStore
    + LeaseStore
    + ChangeFeed
    + std::fmt::Debug
{
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<()>;
    /// The store is known to be unreachable right now (a networked store that lost its
    /// connection): a refresh goes straight to what it may do without the store instead of
    /// spending the store's timeouts first. A hint, never a guarantee either way.
    fn unreachable(&self) -> bool {
        false
    }
}

/// The names of an app's refresh leases start with this (`refresh:{appid}:{kind}`).
pub(crate) fn lease_prefix(appid: &str) -> String {
    format!("refresh:{appid}:")
}

/// The fence of a new grant after `last`: above it, and at least the wall clock in
/// milliseconds, so fences (and the versions derived from them) keep growing even if the store
/// lost its rows, and stay above versions written before fences existed.
pub(crate) fn next_fence(last: u64, now_ms: i64) -> u64 {
    last.saturating_add(1).max(u64::try_from(now_ms).unwrap_or(0))
}

/// Capacity of a change feed's channel; a receiver further behind gets [`Change::Resync`].
pub(crate) const FEED_CAPACITY: usize = 4096;

/// Which backend to open; picked by the config's `[store] kind`.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    Memory,
    Sqlite { path: std::path::PathBuf },
    Redis(RedisConfig),
}

impl StoreConfig {
    /// `sealer` seals the secrets the store keeps; without one, storing a secret is refused.
    pub async fn open(&self, sealer: Option<Arc<Sealer>>) -> Result<Arc<dyn Store>> {
        Ok(match self {
            Self::Memory => Arc::new(MemoryStore::new()),
            Self::Sqlite { path } => Arc::new(SqliteStore::open_sealed(path, sealer).await?),
            Self::Redis(config) => Arc::new(RedisStore::open(config, sealer).await?),
        })
    }
}

/// What a store keeps of an app besides its sealed secret.
#[derive(Serialize, Deserialize)]
pub(crate) struct AppRow {
    pub kind: AppKind,
    pub token_api: TokenApi,
    pub tickets: Vec<TicketType>,
}

impl AppRow {
    pub(crate) fn of(app: &AppSpec) -> Self {
        Self { kind: app.kind, token_api: app.token_api, tickets: app.tickets.clone() }
    }

    pub(crate) fn into_spec(self, appid: String, secret: wechat_proto::Secret) -> AppSpec {
        AppSpec {
            appid,
            secret,
            kind: self.kind,
            token_api: self.token_api,
            tickets: self.tickets,
            role: crate::kind::Role::App,
        }
    }
}

/// The sealer of a store that keeps secrets at rest, or the error that says why it cannot.
pub(crate) fn need_sealer<'a>(sealer: Option<&'a Arc<Sealer>>, what: &str) -> Result<&'a Sealer> {
    sealer.map(|s| &**s).ok_or_else(|| {
        crate::Error::NoEncryptionKey(format!(
            "{what} is kept sealed and no [store] encryption_key (32 random bytes, base64) is \
             configured: nothing is stored in clear"
        ))
    })
}

#[cfg(test)]
mod tests;
