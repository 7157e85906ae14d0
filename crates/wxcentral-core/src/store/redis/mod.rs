//! The cluster store: one Redis (or a Redis Cluster slot) shared by every node.
//!
//! Every write that must be atomic is one Lua script (one round trip): fenced credential
//! writes, lease grants, authorizer writes. Scripts use Redis's clock for leases, so nodes need
//! not agree on the time. Each script that changes something a node holds in memory also
//! publishes it on the namespace's channel with a sequence number ([`feed`]); a node that
//! loses the subscription, or sees a gap in the numbers, resyncs from the store.
//!
//! All keys of a namespace are `wxcentral:{<namespace>}:…`: the braces are a hash tag, so a
//! namespace lives in one Redis Cluster slot and every script's keys are in it.
//!
//! Everything secret is sealed before it leaves the process (credential values included: an
//! AOF file or a replica holds nothing in clear), so this store needs an encryption key.
//!
//! Durability is Redis's: a call returns once Redis has applied the write. With
//! `appendonly yes` and `appendfsync always` that is on disk; with `wait_replicas` the store
//! also waits (`WAIT`) until that many replicas have it, and answers an error otherwise. A
//! Redis without AOF is warned about at open.

mod feed;

use super::{
    AppRow, AppStore, AuthorizerStore, Change, ChangeFeed, CredentialStore, FEED_CAPACITY, Lease, LeaseStore,
    NewCredential, QuotaStore, SecretStore, Store,
};
use crate::authorizer::{AuthorizerRecord, AuthorizerWrite, code_name, refresh_token_name, tombstone};
use crate::error::{Error, Result};
use crate::kind::{AppSpec, Credential, CredentialKey, CredentialKind};
use crate::seal::Sealer;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use wechat_proto::Secret;

/// Quota books are kept this long: a day past WeChat's day whatever the time zones involved.
const QUOTA_KEEP_SECS: i64 = 3 * 86_400;

/// Where a Redis store lives and how patient it is.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` (TLS), with a password or ACL user in it if needed.
    pub url: Secret,
    /// Several deployments may share one Redis, each under its own namespace.
    pub namespace: String,
    /// A command that takes longer fails (and a node keeps serving what it holds).
    pub timeout: Duration,
    /// Durable writes (refresh tokens, verify tickets) wait until this many replicas have them.
    pub wait_replicas: u32,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &"[redacted]")
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .field("wait_replicas", &self.wait_replicas)
            .finish()
    }
}

/// Whether `ns` can be a namespace: it goes inside a hash tag and key names.
pub fn valid_namespace(ns: &str) -> bool {
    (1..=64).contains(&ns.len()) && ns.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// Whether `url` is a URL the Redis client accepts (it is not connected to).
pub fn valid_redis_url(url: &str) -> bool {
    redis::Client::open(url).is_ok()
}

/// The key names of one namespace.
#[derive(Debug)]
struct Keys {
    prefix: String,
    channel: String,
    seq: String,
    lease: String,
    cred: String,
    apps: String,
    authz: String,
    groups: String,
}

impl Keys {
    fn new(namespace: &str) -> Self {
        let prefix = format!("wxcentral:{{{namespace}}}:");
        let k = |s: &str| format!("{prefix}{s}");
        Self {
            channel: k("changes"),
            seq: k("seq"),
            lease: k("leases"),
            cred: k("credentials"),
            apps: k("apps"),
            authz: k("authorizers"),
            groups: k("secret_groups"),
            prefix,
        }
    }

    fn group(&self, group: &str) -> String {
        format!("{}secrets:{group}", self.prefix)
    }

    fn quota(&self, day: &str) -> String {
        format!("{}quota:{day}", self.prefix)
    }
}

/// A durable secret's place: the hash of its group and its field there, `group + field` being
/// the name. Names are `kind:owner:rest` (a hash per kind and component: `pending_auth:wxcomp:`,
/// `auth_code:wxcomp:`) or `kind:owner` (a hash per kind: `refresh_token:`, `verify_ticket:`),
/// so listing a component's pending events reads one hash and nothing needs SCAN.
fn secret_place(name: &str) -> (&str, &str) {
    let mut colons = name.match_indices(':').map(|(i, _)| i);
    let cut = match (colons.next(), colons.next()) {
        (_, Some(second)) => second + 1,
        (Some(first), None) => first + 1,
        _ => 0,
    };
    name.split_at(cut)
}

fn cred_field(key: &CredentialKey) -> String {
    format!("{}/{}", key.appid, key.kind.as_str())
}

/// The name a credential value is sealed under (bound into its seal).
fn cred_seal_name(key: &CredentialKey) -> String {
    format!("credential:{}:{}", key.appid, key.kind.as_str())
}

fn app_secret_name(appid: &str) -> String {
    format!("app:{appid}:secret")
}

fn authz_entry(rec: &AuthorizerRecord) -> Result<String> {
    let json = serde_json::to_string(rec).map_err(|e| Error::Store(format!("authorizer row: {e}")))?;
    Ok(format!("{}|{}|{json}", rec.event_ms, rec.component_appid))
}

fn authz_from_entry(appid: &str, entry: &str) -> Result<AuthorizerRecord> {
    let json = entry.splitn(3, '|').nth(2).unwrap_or_default();
    serde_json::from_str(json).map_err(|e| Error::Store(format!("authorizer {appid}: unreadable entry: {e}")))
}

/// The Lua scripts, each with the shared prelude.
struct Scripts {
    try_lease: Script,
    release_lease: Script,
    put_credential: Script,
    put_authorizer_token: Script,
    put_authorizers: Script,
    unauthorize: Script,
    delete_app: Script,
    put_apps: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{}\n{body}", include_str!("prelude.lua")));
        Self {
            try_lease: s(include_str!("try_lease.lua")),
            release_lease: s(include_str!("release_lease.lua")),
            put_credential: s(include_str!("put_credential.lua")),
            put_authorizer_token: s(include_str!("put_authorizer_token.lua")),
            put_authorizers: s(include_str!("put_authorizers.lua")),
            unauthorize: s(include_str!("unauthorize.lua")),
            delete_app: s(include_str!("delete_app.lua")),
            put_apps: s(include_str!("put_apps.lua")),
        }
    }
}

/// Nodes read from memory; this store is touched by refreshes, the feed and admin calls.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    keys: Arc<Keys>,
    scripts: Arc<Scripts>,
    feed: broadcast::Sender<Change>,
    feed_state: Arc<feed::FeedState>,
    _feed_stop: Arc<tokio_util::sync::DropGuard>,
    sealer: Arc<Sealer>,
    timeout: Duration,
    wait_replicas: u32,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.keys.prefix).finish_non_exhaustive()
    }
}

/// A Redis error as a store error. Redis's messages (and the crate's) name commands, scripts
/// and addresses, never arguments, so no secret travels through here.
fn redis_err(op: &str, e: &redis::RedisError) -> Error {
    Error::Store(format!("redis {op}: {e}"))
}

impl RedisStore {
    /// Connects, subscribes to the namespace's channel and checks Redis's persistence.
    pub async fn open(config: &RedisConfig, sealer: Option<Arc<Sealer>>) -> Result<Self> {
        super::need_sealer(sealer.as_ref(), "everything kept in redis")?;
        let sealer = sealer.ok_or_else(|| Error::Store("no sealer".into()))?;
        if !valid_namespace(&config.namespace) {
            return Err(Error::Config(format!(
                "redis namespace {:?}: letters, digits, '_', '-' and '.', at most 64",
                config.namespace
            )));
        }
        // The crate's parse errors do not repeat the URL; ours must not either.
        let client = redis::Client::open(config.url.expose().as_str()).map_err(|_| {
            Error::Config(
                "redis url: not a redis:// or rediss:// URL (redis://[user:password@]host:port[/db])".into(),
            )
        })?;
        let manager = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.timeout))
            .set_connection_timeout(Some(config.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = tokio::time::timeout(
            config.timeout * 3,
            ConnectionManager::new_with_config(client.clone(), manager),
        )
        .await
        .map_err(|_| Error::Store("redis connect: timed out".into()))?
        .map_err(|e| redis_err("connect", &e))?;
        let keys = Arc::new(Keys::new(&config.namespace));
        let feed = broadcast::Sender::new(FEED_CAPACITY);
        let (feed_state, stop) =
            feed::start(client, conn.clone(), Arc::clone(&keys), feed.clone(), config.timeout).await?;
        let store = Self {
            conn,
            keys,
            scripts: Arc::new(Scripts::new()),
            feed,
            feed_state,
            _feed_stop: Arc::new(stop.drop_guard()),
            sealer,
            timeout: config.timeout,
            wait_replicas: config.wait_replicas,
        };
        store.check_persistence().await;
        Ok(store)
    }

    /// Runs one command or script, failing after the store's timeout (a stalled Redis must not
    /// stall a refresh past its lease).
    async fn run<T, F>(&self, op: &str, f: F) -> Result<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.timeout * 2, f).await {
            Ok(r) => r.map_err(|e| redis_err(op, &e)),
            Err(_) => Err(Error::Store(format!("redis {op}: timed out after {:?}", self.timeout * 2))),
        }
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Logs what a Redis restart would lose.
    async fn check_persistence(&self) {
        let info: Result<String> =
            self.run("info", redis::cmd("INFO").arg("persistence").query_async(&mut self.conn())).await;
        let Ok(info) = info else { return };
        let aof = info.lines().any(|l| l.trim() == "aof_enabled:1");
        let fsync: Option<String> = if aof {
            let r: Result<Vec<String>> = self
                .run(
                    "config",
                    redis::cmd("CONFIG").arg("GET").arg("appendfsync").query_async(&mut self.conn()),
                )
                .await;
            r.ok().and_then(|v| v.get(1).cloned())
        } else {
            None
        };
        if !aof && self.wait_replicas == 0 {
            tracing::warn!(
                "redis has appendonly off: a Redis restart loses what was written since its last \
                 snapshot, refresh tokens and verify tickets included (set appendonly yes and \
                 appendfsync always, or [store] wait_replicas)"
            );
        } else if fsync.as_deref().is_some_and(|f| f != "always") && self.wait_replicas == 0 {
            tracing::warn!(
                appendfsync = fsync.as_deref().unwrap_or_default(),
                "redis does not fsync every write: a crash of Redis may lose the last second of \
                 writes, refresh tokens included (appendfsync always, or [store] wait_replicas)"
            );
        }
    }

    /// After a write Redis applied: waits for the configured replicas to have it.
    async fn replicated(&self, op: &str) -> Result<()> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        let ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let acked: i64 = self
            .run(op, redis::cmd("WAIT").arg(self.wait_replicas).arg(ms).query_async(&mut self.conn()))
            .await?;
        if acked < i64::from(self.wait_replicas) {
            return Err(Error::Store(format!(
                "redis {op}: written, but only {acked} of {} replicas acknowledged within {ms} ms",
                self.wait_replicas
            )));
        }
        Ok(())
    }

    fn open_cred(&self, key: &CredentialKey, entry: &str) -> Result<Credential> {
        let mut parts = entry.splitn(4, '|');
        let bad = || Error::Store(format!("credential {}/{}: unreadable entry", key.appid, key.kind));
        let (Some(v), Some(e), Some(f), Some(value)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let (version, expires, fetched) = (
            v.parse::<u64>().map_err(|_| bad())?,
            e.parse::<i64>().map_err(|_| bad())?,
            f.parse::<i64>().map_err(|_| bad())?,
        );
        let value = self.sealer.open(&cred_seal_name(key), value)?;
        Ok(Credential::new(value, expires, fetched, version))
    }

    fn app_from_entry(&self, appid: &str, entry: &str) -> Result<AppSpec> {
        let (sealed, row) = entry.split_once('|').unwrap_or((entry, ""));
        let row: AppRow = serde_json::from_str(row)
            .map_err(|e| Error::Store(format!("app {appid}: unreadable entry: {e}")))?;
        let secret = self.sealer.open(&app_secret_name(appid), sealed)?;
        Ok(row.into_spec(appid.to_owned(), secret))
    }

    /// The kinds' names, for scripts that forget everything of an app.
    fn kinds() -> impl Iterator<Item = &'static str> {
        CredentialKind::ALL.into_iter().map(CredentialKind::as_str)
    }

    async fn forget(&self, appid: &str, remove_app: bool) -> Result<bool> {
        let k = &self.keys;
        let mut inv = self.scripts.delete_app.prepare_invoke();
        inv.key(&k.apps).key(&k.cred).key(&k.lease).key(&k.seq);
        inv.arg(&k.channel).arg(appid).arg(super::lease_prefix(appid)).arg(if remove_app {
            "1"
        } else {
            "0"
        });
        for kind in Self::kinds() {
            inv.arg(kind);
        }
        let existed: i64 = self.run("delete_app", inv.invoke_async(&mut self.conn())).await?;
        Ok(existed == 1)
    }
}

#[async_trait]
impl CredentialStore for RedisStore {
    async fn get_credential(&self, key: &CredentialKey) -> Result<Option<Credential>> {
        let entry: Option<String> =
            self.run("get_credential", self.conn().hget(&self.keys.cred, cred_field(key))).await?;
        entry.map(|e| self.open_cred(key, &e)).transpose()
    }

    async fn put_credential(
        &self,
        key: &CredentialKey,
        cred: &NewCredential,
        lease: &Lease,
    ) -> Result<Option<Credential>> {
        let sealed = self.sealer.seal(&cred_seal_name(key), &cred.value)?;
        let k = &self.keys;
        let mut inv = self.scripts.put_credential.prepare_invoke();
        inv.key(&k.lease).key(&k.cred).key(&k.seq);
        inv.arg(&k.channel)
            .arg(&lease.name)
            .arg(lease.fence)
            .arg(cred_field(key))
            .arg(cred.expires_at_ms)
            .arg(cred.fetched_at_ms)
            .arg(sealed)
            .arg(key.kind.as_str())
            .arg(&key.appid);
        let version: Option<u64> = self.run("put_credential", inv.invoke_async(&mut self.conn())).await?;
        Ok(version.map(|v| cred.clone().with_version(v)))
    }

    async fn load_credentials(&self) -> Result<Vec<(CredentialKey, Credential)>> {
        let all: HashMap<String, String> =
            self.run("load_credentials", self.conn().hgetall(&self.keys.cred)).await?;
        let mut out = Vec::with_capacity(all.len());
        for (field, entry) in all {
            let Some((appid, kind)) = field.rsplit_once('/') else { continue };
            let Ok(kind) = kind.parse::<CredentialKind>() else {
                tracing::warn!(appid, kind, "redis store: skipping credential of unknown kind");
                continue;
            };
            let key = CredentialKey::new(appid, kind);
            let cred = self.open_cred(&key, &entry)?;
            out.push((key, cred));
        }
        Ok(out)
    }

    async fn delete_credentials(&self, appid: &str) -> Result<()> {
        self.forget(appid, false).await.map(drop)
    }
}

#[async_trait]
impl AppStore for RedisStore {
    async fn put_apps(&self, apps: &[AppSpec]) -> Result<()> {
        if apps.is_empty() {
            return Ok(());
        }
        let k = &self.keys;
        let mut inv = self.scripts.put_apps.prepare_invoke();
        inv.key(&k.apps).key(&k.seq).arg(&k.channel);
        for app in apps {
            let sealed = self.sealer.seal(&app_secret_name(&app.appid), &app.secret)?;
            let row =
                serde_json::to_string(&AppRow::of(app)).map_err(|e| Error::Store(format!("app row: {e}")))?;
            inv.arg(&app.appid).arg(format!("{sealed}|{row}"));
        }
        let _: i64 = self.run("put_apps", inv.invoke_async(&mut self.conn())).await?;
        Ok(())
    }

    async fn delete_app(&self, appid: &str) -> Result<bool> {
        self.forget(appid, true).await
    }

    async fn get_app(&self, appid: &str) -> Result<Option<AppSpec>> {
        let entry: Option<String> = self.run("get_app", self.conn().hget(&self.keys.apps, appid)).await?;
        entry.map(|e| self.app_from_entry(appid, &e)).transpose()
    }

    async fn load_apps(&self) -> Result<Vec<AppSpec>> {
        let all: HashMap<String, String> =
            self.run("load_apps", self.conn().hgetall(&self.keys.apps)).await?;
        let mut apps =
            all.iter().map(|(appid, e)| self.app_from_entry(appid, e)).collect::<Result<Vec<_>>>()?;
        apps.sort_by(|a, b| a.appid.cmp(&b.appid));
        Ok(apps)
    }
}

#[async_trait]
impl SecretStore for RedisStore {
    async fn put_secret(&self, name: &str, value: &Secret) -> Result<()> {
        let sealed = self.sealer.seal(name, value)?;
        let (group, field) = secret_place(name);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(self.keys.group(group), field, sealed)
            .ignore()
            .sadd(&self.keys.groups, group)
            .ignore();
        let () = self.run("put_secret", pipe.query_async(&mut self.conn())).await?;
        self.replicated("put_secret").await
    }

    async fn get_secret(&self, name: &str) -> Result<Option<Secret>> {
        let (group, field) = secret_place(name);
        let sealed: Option<String> =
            self.run("get_secret", self.conn().hget(self.keys.group(group), field)).await?;
        sealed.map(|s| self.sealer.open(name, &s)).transpose()
    }

    async fn delete_secret(&self, name: &str) -> Result<()> {
        let (group, field) = secret_place(name);
        let () = self.run("delete_secret", self.conn().hdel(self.keys.group(group), field)).await?;
        Ok(())
    }

    async fn list_secrets(&self, prefix: &str) -> Result<Vec<String>> {
        // A prefix naming its group reads that one hash; a shorter one reads every group it
        // may reach.
        let groups: Vec<String> = if prefix.matches(':').count() >= 2 {
            vec![secret_place(prefix).0.to_owned()]
        } else {
            let all: Vec<String> = self.run("list_secrets", self.conn().smembers(&self.keys.groups)).await?;
            all.into_iter().filter(|g| g.starts_with(prefix) || prefix.starts_with(g.as_str())).collect()
        };
        let mut names = Vec::new();
        for g in groups {
            let fields: Vec<String> =
                self.run("list_secrets", self.conn().hkeys(self.keys.group(&g))).await?;
            names.extend(fields.into_iter().map(|f| format!("{g}{f}")).filter(|n| n.starts_with(prefix)));
        }
        names.sort();
        Ok(names)
    }
}

#[async_trait]
impl AuthorizerStore for RedisStore {
    async fn put_authorizers(&self, recs: &[(AuthorizerRecord, Option<Secret>)]) -> Result<Vec<bool>> {
        if recs.is_empty() {
            return Ok(Vec::new());
        }
        let k = &self.keys;
        let (rt_group, _) = secret_place("refresh_token:x");
        let mut inv = self.scripts.put_authorizers.prepare_invoke();
        inv.key(&k.authz).key(k.group(rt_group)).key(&k.seq).key(&k.groups);
        inv.arg(&k.channel).arg(rt_group);
        for (rec, rt) in recs {
            let sealed = match rt {
                Some(rt) => self.sealer.seal(&refresh_token_name(&rec.authorizer_appid), rt)?,
                None => String::new(),
            };
            inv.arg(&rec.authorizer_appid).arg(rec.event_ms).arg(authz_entry(rec)?).arg(sealed);
        }
        let written: Vec<i64> = self.run("put_authorizers", inv.invoke_async(&mut self.conn())).await?;
        if recs.iter().zip(&written).any(|((_, rt), w)| rt.is_some() && *w == 1) {
            self.replicated("put_authorizers").await?;
        }
        Ok(written.into_iter().map(|w| w == 1).collect())
    }

    async fn put_authorizer_token(
        &self,
        key: &CredentialKey,
        cred: &NewCredential,
        lease: &Lease,
        write: AuthorizerWrite<'_>,
    ) -> Result<Option<Credential>> {
        let k = &self.keys;
        let sealed = self.sealer.seal(&cred_seal_name(key), &cred.value)?;
        let rt_name = refresh_token_name(&key.appid);
        let (rt_group, rt_field) = secret_place(&rt_name);
        let rt = self.sealer.seal(&rt_name, write.refresh_token)?;
        let (record, event) = match write.record {
            Some(r) => (authz_entry(r)?, r.event_ms),
            None => (String::new(), 0),
        };
        let code = match (write.record, write.code_digest) {
            (Some(r), Some(d)) => Some(code_name(&r.component_appid, d)),
            _ => None,
        };
        let (code_group, code_field, code_sealed) = match &code {
            Some(name) => {
                let (g, f) = secret_place(name);
                (g, f, self.sealer.seal(name, &Secret::new(key.appid.clone()))?)
            }
            None => ("auth_code:", "", String::new()),
        };
        debug_assert_eq!(rt_field, key.appid);
        let mut inv = self.scripts.put_authorizer_token.prepare_invoke();
        inv.key(&k.lease)
            .key(&k.cred)
            .key(&k.seq)
            .key(&k.authz)
            .key(k.group(rt_group))
            .key(k.group(code_group))
            .key(&k.groups);
        inv.arg(&k.channel)
            .arg(&lease.name)
            .arg(lease.fence)
            .arg(cred_field(key))
            .arg(cred.expires_at_ms)
            .arg(cred.fetched_at_ms)
            .arg(sealed)
            .arg(key.kind.as_str())
            .arg(&key.appid)
            .arg(rt)
            .arg(rt_group)
            .arg(record)
            .arg(event)
            .arg(code_field)
            .arg(code_sealed)
            .arg(code_group);
        let version: Option<u64> =
            self.run("put_authorizer_token", inv.invoke_async(&mut self.conn())).await?;
        let Some(version) = version else { return Ok(None) };
        self.replicated("put_authorizer_token").await?;
        Ok(Some(cred.clone().with_version(version)))
    }

    async fn get_authorizer(&self, appid: &str) -> Result<Option<AuthorizerRecord>> {
        let entry: Option<String> =
            self.run("get_authorizer", self.conn().hget(&self.keys.authz, appid)).await?;
        entry.map(|e| authz_from_entry(appid, &e)).transpose()
    }

    async fn load_authorizers(&self) -> Result<Vec<AuthorizerRecord>> {
        let all: HashMap<String, String> =
            self.run("load_authorizers", self.conn().hgetall(&self.keys.authz)).await?;
        let mut recs = all.iter().map(|(appid, e)| authz_from_entry(appid, e)).collect::<Result<Vec<_>>>()?;
        recs.sort_by(|a, b| a.authorizer_appid.cmp(&b.authorizer_appid));
        Ok(recs)
    }

    async fn get_refresh_token(&self, appid: &str) -> Result<Option<Secret>> {
        self.get_secret(&refresh_token_name(appid)).await
    }

    async fn unauthorize(&self, component: &str, appid: &str, event_ms: i64) -> Result<bool> {
        let old = self.get_authorizer(appid).await?;
        if old.as_ref().is_some_and(|o| o.component_appid != component) {
            return Ok(false);
        }
        let tomb = tombstone(component, appid, event_ms, old.as_ref());
        let k = &self.keys;
        let (rt_group, _) = secret_place("refresh_token:x");
        let mut inv = self.scripts.unauthorize.prepare_invoke();
        inv.key(&k.authz).key(k.group(rt_group)).key(&k.cred).key(&k.lease).key(&k.seq);
        inv.arg(&k.channel)
            .arg(component)
            .arg(appid)
            .arg(event_ms)
            .arg(authz_entry(&tomb)?)
            .arg(super::lease_prefix(appid));
        for kind in Self::kinds() {
            inv.arg(kind);
        }
        let done: i64 = self.run("unauthorize", inv.invoke_async(&mut self.conn())).await?;
        Ok(done == 1)
    }
}

#[async_trait]
impl QuotaStore for RedisStore {
    async fn incr_quota(&self, appid: &str, endpoint: &str, day: &str) -> Result<u64> {
        let key = self.keys.quota(day);
        let mut pipe = redis::pipe();
        pipe.atomic().hincr(&key, format!("{appid} {endpoint}"), 1).expire(&key, QUOTA_KEEP_SECS).ignore();
        let (n,): (i64,) = self.run("incr_quota", pipe.query_async(&mut self.conn())).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn get_quota(&self, appid: &str, endpoint: &str, day: &str) -> Result<u64> {
        let n: Option<i64> = self
            .run("get_quota", self.conn().hget(self.keys.quota(day), format!("{appid} {endpoint}")))
            .await?;
        Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    async fn quotas_of_day(&self, day: &str) -> Result<Vec<(String, String, u64)>> {
        let all: HashMap<String, i64> =
            self.run("quotas_of_day", self.conn().hgetall(self.keys.quota(day))).await?;
        Ok(all
            .into_iter()
            .filter_map(|(field, n)| {
                let (appid, endpoint) = field.split_once(' ')?;
                Some((appid.to_owned(), endpoint.to_owned(), u64::try_from(n).unwrap_or(0)))
            })
            .collect())
    }
}

#[async_trait]
impl LeaseStore for RedisStore {
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX / 2);
        let mut inv = self.scripts.try_lease.prepare_invoke();
        inv.key(&self.keys.lease).arg(name).arg(holder).arg(ttl_ms);
        let fence: Option<u64> = self.run("try_lease", inv.invoke_async(&mut self.conn())).await?;
        Ok(fence.map(|fence| Lease { name: name.to_owned(), holder: holder.to_owned(), fence }))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let mut inv = self.scripts.release_lease.prepare_invoke();
        inv.key(&self.keys.lease).arg(&lease.name).arg(&lease.holder).arg(lease.fence);
        let _: i64 = self.run("release_lease", inv.invoke_async(&mut self.conn())).await?;
        Ok(())
    }
}

impl ChangeFeed for RedisStore {
    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.feed.subscribe()
    }
}

#[async_trait]
impl Store for RedisStore {
    /// Redis answers, and the change feed is subscribed (without it this node would serve
    /// values other nodes replaced).
    async fn ping(&self) -> Result<()> {
        let () = self.run("ping", redis::cmd("PING").query_async(&mut self.conn())).await?;
        if !self.feed_state.connected() {
            return Err(Error::Store("redis change feed is not subscribed".into()));
        }
        Ok(())
    }

    /// The feed's subscription is down: it pings every second, so this turns within about two
    /// seconds of Redis stopping to answer, and back once it subscribed again.
    fn unreachable(&self) -> bool {
        !self.feed_state.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_placed_per_kind_and_component() {
        assert_eq!(secret_place("pending_auth:wxc:wxa:d1"), ("pending_auth:wxc:", "wxa:d1"));
        assert_eq!(secret_place("auth_code:wxc:d1"), ("auth_code:wxc:", "d1"));
        assert_eq!(secret_place("refresh_token:wxa"), ("refresh_token:", "wxa"));
        assert_eq!(secret_place("plain"), ("", "plain"));
        for name in ["pending_auth:wxc:wxa:d1", "refresh_token:wxa", "plain", "a:", ":b", "::", ""] {
            let (g, f) = secret_place(name);
            assert_eq!(format!("{g}{f}"), name);
        }
    }

    #[test]
    fn namespaces_stay_inside_their_hash_tag() {
        assert!(valid_namespace("prod"));
        assert!(valid_namespace("team-a.prod_2"));
        for bad in ["", "a}b", "{a}", "a b", "a:b", &"x".repeat(65)] {
            assert!(!valid_namespace(bad), "{bad:?}");
        }
        assert_eq!(Keys::new("prod").cred, "wxcentral:{prod}:credentials");
    }
}
