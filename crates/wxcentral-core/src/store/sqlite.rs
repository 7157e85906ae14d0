//! The embedded default store: one SQLite file in WAL mode.
//!
//! Durability: `synchronous = FULL`. The secrets table holds values WeChat cannot give back
//! (authorizer refresh tokens: losing one forces the merchant to re-authorize), and
//! [`SecretStore`] promises a write is durable when the call returns; in WAL mode `NORMAL` may
//! lose the last commits on power loss. Writes are rare (one per refresh, one per upstream call
//! for the quota book), so the extra fsync per commit costs nothing that matters.
//!
//! Every statement runs on tokio's blocking pool behind one mutex-guarded connection: SQLite
//! serializes writers anyway, and a runtime worker must never wait on disk or on the busy timeout.

use super::{
    AppRow, AppStore, AuthorizerStore, Change, ChangeFeed, CredentialStore, FEED_CAPACITY, Lease, LeaseStore,
    NewCredential, QuotaStore, SecretStore, Store, need_sealer,
};
use crate::authorizer::{AuthorizerRecord, AuthorizerWrite, code_name, refresh_token_name, tombstone};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::kind::AppSpec;
use crate::kind::{Credential, CredentialKey, CredentialKind};
use crate::seal::Sealer;
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use wechat_proto::Secret;

/// The schema this build writes. Bump it with a migration step in [`migrate`].
const SCHEMA_VERSION: i64 = 4;
/// How long a statement waits for another process holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Quota rows older than this are pruned at open: the books only matter for today.
const QUOTA_KEEP_DAYS: i64 = 31;
/// How often the feed looks for writes of other processes (DESIGN.md §8 promises 250 ms).
const FEED_POLL: Duration = Duration::from_millis(50);
/// Rows kept in the change log; a process further behind resyncs from the tables.
const CHANGES_KEPT: i64 = 10_000;
/// How long opening waits for other processes opening or migrating the same file.
const OPEN_PATIENCE: Duration = Duration::from_secs(20);

/// Several processes may share one file: each learns of the others' writes through the change
/// log, a table written in the same transaction as every credential write and read by a feed
/// thread whenever `PRAGMA data_version` says another connection committed.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    feed: broadcast::Sender<Change>,
    _feed_thread: Arc<FeedStop>,
    /// Seals app secrets and durable secrets; without it they are refused.
    sealer: Option<Arc<Sealer>>,
}

/// The change-log `kind` of a runtime app's row (credential kinds are the others).
const APP_CHANGE: &str = "app";

/// Stops the feed thread when the last clone of the store goes.
struct FeedStop(Arc<AtomicBool>);

impl Drop for FeedStop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Turns a rusqlite error into a store error. SQLite's messages name tables, columns and
/// constraints, never bound parameter values, so no secret can travel through here.
fn store_err(op: &str, e: &rusqlite::Error) -> Error {
    Error::Store(format!("sqlite {op}: {e}"))
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date. A store
    /// opened this way refuses to keep secrets; see [`SqliteStore::open_sealed`].
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_sealed(path, None).await
    }

    /// [`SqliteStore::open`], sealing every secret it keeps with `sealer`.
    pub async fn open_sealed(path: &Path, sealer: Option<Arc<Sealer>>) -> Result<Self> {
        let path = path.to_path_buf();
        let p = path.clone();
        let (conn, cursor) = tokio::task::spawn_blocking(move || open_blocking(&p))
            .await
            .map_err(|e| Error::Store(format!("sqlite open: {e}")))??;
        let feed = broadcast::Sender::new(FEED_CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let poll = Connection::open(&path).map_err(|e| store_err("open", &e))?;
        poll.busy_timeout(BUSY_TIMEOUT).map_err(|e| store_err("busy_timeout", &e))?;
        if let Some(s) = &sealer {
            let (p, s) = (path.clone(), Arc::clone(s));
            tokio::task::spawn_blocking(move || reseal(&p, &s))
                .await
                .map_err(|e| Error::Store(format!("sqlite reseal: {e}")))??;
        }
        let (tx, flag) = (feed.clone(), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("wxcentral-sqlite-feed".into())
            .spawn(move || run_feed(&poll, &tx, &flag, cursor))
            .map_err(|e| Error::Store(format!("sqlite feed thread: {e}")))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
            feed,
            _feed_thread: Arc::new(FeedStop(stop)),
            sealer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the blocking pool with the connection.
    async fn run<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic inside a statement leaves no half-applied Rust state behind the lock
            // (SQLite rolls back the statement), so a poisoned mutex is still usable.
            let mut guard = conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut guard).map_err(|e| store_err(op, &e))
        })
        .await
        .map_err(|e| Error::Store(format!("sqlite {op}: task failed: {e}")))?
    }
}

/// Opens the file, retrying while another process holds it for its own opening or migration
/// (switching to WAL and creating the schema take the write lock, and SQLite's busy handler
/// is not consulted everywhere on that path). Returns the connection and the change log's end.
fn open_blocking(path: &Path) -> Result<(Connection, i64)> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match open_once(path) {
            Err(OpenError::Busy(e)) if start.elapsed() < OPEN_PATIENCE => {
                tracing::debug!(error = %e, "sqlite file busy while opening; retrying");
                std::thread::sleep(pause + Duration::from_millis(rand::random::<u64>() % 20));
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(OpenError::Busy(e)) => return Err(store_err("open", &e)),
            Err(OpenError::Other(e)) => return Err(e),
            Ok(opened) => return Ok(opened),
        }
    }
}

enum OpenError {
    Busy(rusqlite::Error),
    Other(Error),
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn open_once(path: &Path) -> std::result::Result<(Connection, i64), OpenError> {
    let step = |op: &'static str| {
        move |e: rusqlite::Error| {
            if is_busy(&e) { OpenError::Busy(e) } else { OpenError::Other(store_err(op, &e)) }
        }
    };
    let conn = Connection::open(path).map_err(step("open"))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(step("busy_timeout"))?;
    let mode: String =
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(step("journal_mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::Other(Error::Store(format!(
            "sqlite open: journal_mode is {mode}, WAL is required"
        ))));
    }
    conn.pragma_update(None, "synchronous", "FULL").map_err(step("synchronous"))?;
    migrate(&conn).map_err(|e| match e {
        MigrateError::Sql(e) => step("migrate")(e),
        MigrateError::Refused(e) => OpenError::Other(e),
    })?;
    let cutoff = crate::quota::wechat_day(now_ms() - QUOTA_KEEP_DAYS * 86_400_000);
    conn.execute("DELETE FROM quotas WHERE day < ?1", params![cutoff]).map_err(step("prune"))?;
    let cursor: i64 = conn
        .query_row("SELECT coalesce(max(seq), 0) FROM changes", [], |r| r.get(0))
        .map_err(step("changes"))?;
    Ok((conn, cursor))
}

/// Seals again under the current key every secret sealed under a previous one, so a retired
/// key can be dropped from the config after one start with both.
fn reseal(path: &Path, sealer: &Sealer) -> Result<()> {
    let mut conn = Connection::open(path).map_err(|e| store_err("reseal", &e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| store_err("reseal", &e))?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| store_err("reseal", &e))?;
    let mut n = 0;
    for (table, key, name_of) in [
        ("secrets", "name", (|k: &str| k.to_owned()) as fn(&str) -> String),
        ("apps", "appid", app_secret_name as fn(&str) -> String),
    ] {
        let value = if table == "apps" { "secret" } else { "value" };
        let rows: Vec<(String, String)> = {
            let mut stmt = tx
                .prepare(&format!("SELECT {key}, {value} FROM {table}"))
                .map_err(|e| store_err("reseal", &e))?;
            let rows =
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(|e| store_err("reseal", &e))?;
            rows.collect::<rusqlite::Result<_>>().map_err(|e| store_err("reseal", &e))?
        };
        for (k, sealed) in rows.into_iter().filter(|(_, s)| sealer.is_stale(s)) {
            let name = name_of(&k);
            let again = sealer.seal(&name, &sealer.open(&name, &sealed)?)?;
            tx.execute(&format!("UPDATE {table} SET {value} = ?1 WHERE {key} = ?2"), params![again, k])
                .map_err(|e| store_err("reseal", &e))?;
            n += 1;
        }
    }
    tx.commit().map_err(|e| store_err("reseal", &e))?;
    if n > 0 {
        tracing::info!(resealed = n, key_id = sealer.key_id(), "sealed again under the current key");
    }
    Ok(())
}

/// The feed thread: wakes every [`FEED_POLL`], and when another connection committed, sends
/// what the change log gained since `cursor`.
fn run_feed(conn: &Connection, tx: &broadcast::Sender<Change>, stop: &AtomicBool, mut cursor: i64) {
    let data_version = |c: &Connection| c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0));
    let mut seen = data_version(conn).ok();
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(FEED_POLL);
        let now = data_version(conn).ok();
        if now.is_some() && now == seen && !failing {
            continue;
        }
        match read_changes(conn, cursor) {
            Ok((changes, end)) => {
                if failing {
                    tracing::info!("sqlite change feed reading again; resyncing");
                    let _ = tx.send(Change::Resync);
                    failing = false;
                }
                for c in changes {
                    // No subscriber yet (or any more) is fine.
                    let _ = tx.send(c);
                }
                cursor = end;
                seen = now;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "sqlite change feed cannot read the change log");
                }
                failing = true;
            }
        }
    }
}

fn read_changes(conn: &Connection, cursor: i64) -> rusqlite::Result<(Vec<Change>, i64)> {
    let first: Option<i64> = conn.query_row("SELECT min(seq) FROM changes", [], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached("SELECT seq, appid, kind FROM changes WHERE seq > ?1 ORDER BY seq")?;
    let rows = stmt.query_map(params![cursor], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
    })?;
    let mut changes = Vec::new();
    let mut end = cursor;
    // Rows we never saw were pruned: what they said is lost, so look at everything.
    if first.is_some_and(|f| f > cursor + 1) {
        changes.push(Change::Resync);
    }
    for row in rows {
        let (seq, appid, kind) = row?;
        end = seq;
        if kind == APP_CHANGE {
            changes.push(Change::App(appid));
        } else if let Ok(kind) = kind.parse::<CredentialKind>() {
            changes.push(Change::Credential(CredentialKey::new(appid, kind)));
        }
    }
    Ok((changes, end))
}

enum MigrateError {
    Sql(rusqlite::Error),
    Refused(Error),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

/// Creates the schema or brings an older one up to date, inside one write transaction so
/// processes opening the same file at once do it exactly once; refuses a file written by a
/// newer build rather than guess at its layout.
fn migrate(conn: &Connection) -> std::result::Result<(), MigrateError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let current = |c: &Connection| {
        c.query_row("SELECT max(version) FROM schema_version", [], |r| r.get::<_, Option<i64>>(0))
    };
    if current(conn)? == Some(SCHEMA_VERSION) {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let found = current(conn)?;
        match found {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(MigrateError::Refused(Error::Store(format!(
                    "sqlite schema version {v} is newer than this build understands ({SCHEMA_VERSION})"
                ))));
            }
            Some(v) if v < 1 => {
                return Err(MigrateError::Refused(Error::Store(format!(
                    "sqlite schema version {v} has no migration path"
                ))));
            }
            _ => {}
        }
        if found.is_none() {
            conn.execute_batch(
                "CREATE TABLE credentials (
                     appid TEXT NOT NULL,
                     kind TEXT NOT NULL,
                     value TEXT NOT NULL,
                     expires_at_ms INTEGER NOT NULL,
                     fetched_at_ms INTEGER NOT NULL,
                     version INTEGER NOT NULL,
                     PRIMARY KEY (appid, kind)
                 );
                 CREATE TABLE secrets (
                     name TEXT PRIMARY KEY NOT NULL,
                     value TEXT NOT NULL
                 );
                 CREATE TABLE quotas (
                     appid TEXT NOT NULL,
                     endpoint TEXT NOT NULL,
                     day TEXT NOT NULL,
                     count INTEGER NOT NULL,
                     PRIMARY KEY (appid, endpoint, day)
                 );
                 CREATE TABLE leases (
                     name TEXT PRIMARY KEY NOT NULL,
                     holder TEXT NOT NULL,
                     until_ms INTEGER NOT NULL
                 );
                 INSERT INTO schema_version (version) VALUES (1);",
            )?;
        }
        if found.is_none_or(|v| v < 2) {
            // 2: fenced leases (the row outlives its grant so fences keep growing) and the
            // change log other processes read.
            conn.execute_batch(
                "ALTER TABLE leases ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
                 CREATE TABLE changes (
                     seq INTEGER PRIMARY KEY AUTOINCREMENT,
                     appid TEXT NOT NULL,
                     kind TEXT NOT NULL
                 );
                 INSERT INTO schema_version (version) VALUES (2);",
            )?;
        }
        if found.is_none_or(|v| v < 3) {
            // 3: apps added at runtime, their secret sealed.
            conn.execute_batch(
                "CREATE TABLE apps (
                     appid TEXT PRIMARY KEY NOT NULL,
                     spec TEXT NOT NULL,
                     secret TEXT NOT NULL
                 );
                 INSERT INTO schema_version (version) VALUES (3);",
            )?;
        }
        if found.is_none_or(|v| v < 4) {
            // 4: the open platform's authorizers (refresh tokens live sealed in `secrets`).
            conn.execute_batch(
                "CREATE TABLE authorizers (
                     appid TEXT PRIMARY KEY NOT NULL,
                     component TEXT NOT NULL,
                     event_ms INTEGER NOT NULL,
                     record TEXT NOT NULL
                 );
                 INSERT INTO schema_version (version) VALUES (4);",
            )?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(_) => {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    result
}

fn version_to_sql(v: u64) -> rusqlite::Result<i64> {
    i64::try_from(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn row_to_credential(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Credential> {
    let version: i64 = row.get(first + 3)?;
    Ok(Credential::new(
        Secret::new(row.get::<_, String>(first)?),
        row.get(first + 1)?,
        row.get(first + 2)?,
        u64::try_from(version).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(first + 3, rusqlite::types::Type::Integer, Box::new(e))
        })?,
    ))
}

#[async_trait]
impl CredentialStore for SqliteStore {
    async fn get_credential(&self, key: &CredentialKey) -> Result<Option<Credential>> {
        let (appid, kind) = (key.appid.clone(), key.kind.as_str());
        self.run("get_credential", move |c| {
            c.query_row(
                "SELECT value, expires_at_ms, fetched_at_ms, version FROM credentials
                 WHERE appid = ?1 AND kind = ?2",
                params![appid, kind],
                |r| row_to_credential(r, 0),
            )
            .optional()
        })
        .await
    }

    async fn put_credential(
        &self,
        key: &CredentialKey,
        cred: &NewCredential,
        lease: &Lease,
    ) -> Result<Option<Credential>> {
        let (key, cred, lease) = (key.clone(), cred.clone(), lease.clone());
        self.run("put_credential", move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let written = write_credential(&tx, &key, &cred, &lease)?;
            if written.is_some() {
                tx.commit()?;
            }
            Ok(written)
        })
        .await
    }

    async fn load_credentials(&self) -> Result<Vec<(CredentialKey, Credential)>> {
        let rows = self
            .run("load_credentials", |c| {
                let mut stmt = c.prepare(
                    "SELECT appid, kind, value, expires_at_ms, fetched_at_ms, version FROM credentials",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, row_to_credential(r, 2)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(appid, kind, cred)| match kind.parse::<CredentialKind>() {
                Ok(kind) => Some((CredentialKey::new(appid, kind), cred)),
                Err(()) => {
                    // Written by a newer build with more kinds: not ours to serve.
                    tracing::warn!(appid, kind, "sqlite store: skipping credential of unknown kind");
                    None
                }
            })
            .collect())
    }

    async fn delete_credentials(&self, appid: &str) -> Result<()> {
        let appid = appid.to_owned();
        self.run("delete_credentials", move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            delete_app_rows(&tx, &appid)?;
            tx.commit()
        })
        .await
    }
}

/// A fenced credential write inside `tx` (see [`CredentialStore::put_credential`]); `None`
/// when a newer grant of the lease exists, with nothing written.
fn write_credential(
    tx: &rusqlite::Transaction<'_>,
    key: &CredentialKey,
    cred: &NewCredential,
    lease: &Lease,
) -> rusqlite::Result<Option<Credential>> {
    let granted: Option<i64> = tx
        .query_row("SELECT fence FROM leases WHERE name = ?1", params![lease.name], |r| r.get(0))
        .optional()?;
    if granted.is_none_or(|g| u64::try_from(g).ok() != Some(lease.fence)) {
        return Ok(None);
    }
    let stored: Option<i64> = tx
        .query_row(
            "SELECT version FROM credentials WHERE appid = ?1 AND kind = ?2",
            params![key.appid, key.kind.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    let stored = stored.and_then(|v| u64::try_from(v).ok());
    let version = stored.map_or(lease.fence, |v| lease.fence.max(v.saturating_add(1)));
    let written = cred.clone().with_version(version);
    tx.execute(
        "INSERT INTO credentials (appid, kind, value, expires_at_ms, fetched_at_ms, version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (appid, kind) DO UPDATE SET
             value = excluded.value,
             expires_at_ms = excluded.expires_at_ms,
             fetched_at_ms = excluded.fetched_at_ms,
             version = excluded.version",
        params![
            key.appid,
            key.kind.as_str(),
            written.value.expose(),
            written.expires_at_ms,
            written.fetched_at_ms,
            version_to_sql(version)?
        ],
    )?;
    log_change(tx, &key.appid, key.kind.as_str())?;
    tx.execute("UPDATE leases SET until_ms = 0 WHERE name = ?1", params![lease.name])?;
    Ok(Some(written))
}

/// An app's credentials and leases (a refresh in flight then has no lease to write under).
fn delete_app_rows(tx: &rusqlite::Transaction<'_>, appid: &str) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM credentials WHERE appid = ?1", params![appid])?;
    let prefix = super::lease_prefix(appid);
    tx.execute("DELETE FROM leases WHERE substr(name, 1, length(?1)) = ?1", params![prefix])?;
    Ok(())
}

fn log_change(tx: &rusqlite::Transaction<'_>, appid: &str, kind: &str) -> rusqlite::Result<()> {
    tx.execute("INSERT INTO changes (appid, kind) VALUES (?1, ?2)", params![appid, kind])?;
    let seq = tx.last_insert_rowid();
    tx.execute("DELETE FROM changes WHERE seq <= ?1", params![seq - CHANGES_KEPT])?;
    Ok(())
}

#[async_trait]
impl AppStore for SqliteStore {
    async fn put_apps(&self, apps: &[AppSpec]) -> Result<()> {
        let sealer = need_sealer(self.sealer.as_ref(), "an app secret")?;
        let rows = apps
            .iter()
            .map(|app| {
                let sealed = sealer.seal(&app_secret_name(&app.appid), &app.secret)?;
                let spec = serde_json::to_string(&AppRow::of(app))
                    .map_err(|e| Error::Store(format!("app row: {e}")))?;
                Ok((app.appid.clone(), spec, sealed))
            })
            .collect::<Result<Vec<_>>>()?;
        self.run("put_apps", move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (appid, spec, sealed) in &rows {
                tx.execute(
                    "INSERT INTO apps (appid, spec, secret) VALUES (?1, ?2, ?3)
                     ON CONFLICT (appid) DO UPDATE SET spec = excluded.spec, secret = excluded.secret",
                    params![appid, spec, sealed],
                )?;
                log_change(&tx, appid, APP_CHANGE)?;
            }
            tx.commit()
        })
        .await
    }

    async fn delete_app(&self, appid: &str) -> Result<bool> {
        let appid = appid.to_owned();
        self.run("delete_app", move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute("DELETE FROM apps WHERE appid = ?1", params![appid])?;
            delete_app_rows(&tx, &appid)?;
            if n > 0 {
                log_change(&tx, &appid, APP_CHANGE)?;
            }
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn get_app(&self, appid: &str) -> Result<Option<AppSpec>> {
        let id = appid.to_owned();
        let row = self
            .run("get_app", move |c| {
                c.query_row("SELECT spec, secret FROM apps WHERE appid = ?1", params![id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .optional()
            })
            .await?;
        row.map(|(spec, secret)| self.app_from_row(appid.to_owned(), &spec, &secret)).transpose()
    }

    async fn load_apps(&self) -> Result<Vec<AppSpec>> {
        let rows = self
            .run("load_apps", |c| {
                let mut stmt = c.prepare("SELECT appid, spec, secret FROM apps ORDER BY appid")?;
                let rows = stmt.query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.into_iter().map(|(appid, spec, secret)| self.app_from_row(appid, &spec, &secret)).collect()
    }
}

/// The sealed secret's name, bound into its seal.
fn app_secret_name(appid: &str) -> String {
    format!("app:{appid}:secret")
}

impl SqliteStore {
    fn app_from_row(&self, appid: String, spec: &str, secret: &str) -> Result<AppSpec> {
        let row: AppRow = serde_json::from_str(spec)
            .map_err(|e| Error::Store(format!("app {appid}: unreadable row: {e}")))?;
        let secret =
            need_sealer(self.sealer.as_ref(), "an app secret")?.open(&app_secret_name(&appid), secret)?;
        Ok(row.into_spec(appid, secret))
    }
}

/// The stored event time of an authorizer, if any.
fn authorizer_event(tx: &rusqlite::Transaction<'_>, appid: &str) -> rusqlite::Result<Option<i64>> {
    tx.query_row("SELECT event_ms FROM authorizers WHERE appid = ?1", params![appid], |r| r.get(0)).optional()
}

fn write_authorizer(
    tx: &rusqlite::Transaction<'_>,
    rec: &AuthorizerRecord,
    json: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO authorizers (appid, component, event_ms, record) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (appid) DO UPDATE SET
             component = excluded.component, event_ms = excluded.event_ms, record = excluded.record",
        params![rec.authorizer_appid, rec.component_appid, rec.event_ms, json],
    )?;
    log_change(tx, &rec.authorizer_appid, APP_CHANGE)
}

fn write_secret(tx: &rusqlite::Transaction<'_>, name: &str, sealed: &str) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO secrets (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        params![name, sealed],
    )
    .map(drop)
}

fn record_json(rec: &AuthorizerRecord) -> Result<String> {
    serde_json::to_string(rec).map_err(|e| Error::Store(format!("authorizer row: {e}")))
}

fn record_from_json(appid: &str, json: &str) -> Result<AuthorizerRecord> {
    serde_json::from_str(json).map_err(|e| Error::Store(format!("authorizer {appid}: unreadable row: {e}")))
}

#[async_trait]
impl AuthorizerStore for SqliteStore {
    async fn put_authorizers(&self, recs: &[(AuthorizerRecord, Option<Secret>)]) -> Result<Vec<bool>> {
        let rows = recs
            .iter()
            .map(|(rec, rt)| {
                let name = refresh_token_name(&rec.authorizer_appid);
                let sealed = rt
                    .as_ref()
                    .map(|rt| need_sealer(self.sealer.as_ref(), "a refresh token")?.seal(&name, rt))
                    .transpose()?;
                Ok((rec.clone(), record_json(rec)?, name, sealed))
            })
            .collect::<Result<Vec<_>>>()?;
        self.run("put_authorizers", move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut written = Vec::with_capacity(rows.len());
            for (rec, json, name, sealed) in &rows {
                if authorizer_event(&tx, &rec.authorizer_appid)?.is_some_and(|e| e > rec.event_ms) {
                    written.push(false);
                    continue;
                }
                write_authorizer(&tx, rec, json)?;
                if let Some(sealed) = sealed {
                    write_secret(&tx, name, sealed)?;
                }
                written.push(true);
            }
            tx.commit()?;
            Ok(written)
        })
        .await
    }

    async fn put_authorizer_token(
        &self,
        key: &CredentialKey,
        cred: &NewCredential,
        lease: &Lease,
        write: AuthorizerWrite<'_>,
    ) -> Result<Option<Credential>> {
        let sealer = need_sealer(self.sealer.as_ref(), "a refresh token")?;
        let rt_name = refresh_token_name(&key.appid);
        let rt = sealer.seal(&rt_name, write.refresh_token)?;
        let record = write.record.map(|r| Ok::<_, Error>((r.clone(), record_json(r)?))).transpose()?;
        let code = match (write.record, write.code_digest) {
            (Some(r), Some(d)) => {
                let name = code_name(&r.component_appid, d);
                let sealed = sealer.seal(&name, &Secret::new(key.appid.clone()))?;
                Some((name, sealed))
            }
            _ => None,
        };
        let (key, cred, lease) = (key.clone(), cred.clone(), lease.clone());
        self.run("put_authorizer_token", move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some((rec, _)) = &record
                && authorizer_event(&tx, &rec.authorizer_appid)?.is_some_and(|e| e > rec.event_ms)
            {
                return Ok(None);
            }
            let Some(written) = write_credential(&tx, &key, &cred, &lease)? else { return Ok(None) };
            write_secret(&tx, &rt_name, &rt)?;
            if let Some((rec, json)) = &record {
                write_authorizer(&tx, rec, json)?;
            }
            if let Some((name, sealed)) = &code {
                write_secret(&tx, name, sealed)?;
            }
            tx.commit()?;
            Ok(Some(written))
        })
        .await
    }

    async fn get_authorizer(&self, appid: &str) -> Result<Option<AuthorizerRecord>> {
        let id = appid.to_owned();
        let row = self
            .run("get_authorizer", move |c| {
                c.query_row("SELECT record FROM authorizers WHERE appid = ?1", params![id], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
            })
            .await?;
        row.map(|json| record_from_json(appid, &json)).transpose()
    }

    async fn load_authorizers(&self) -> Result<Vec<AuthorizerRecord>> {
        let rows = self
            .run("load_authorizers", |c| {
                let mut stmt = c.prepare("SELECT appid, record FROM authorizers ORDER BY appid")?;
                let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.iter().map(|(appid, json)| record_from_json(appid, json)).collect()
    }

    async fn get_refresh_token(&self, appid: &str) -> Result<Option<Secret>> {
        self.get_secret(&refresh_token_name(appid)).await
    }

    async fn unauthorize(&self, component: &str, appid: &str, event_ms: i64) -> Result<bool> {
        let old = self.get_authorizer(appid).await?;
        // Another component's authorizer with the same appid is not this push's to revoke.
        if old.as_ref().is_some_and(|o| o.component_appid != component) {
            return Ok(false);
        }
        let tomb = tombstone(component, appid, event_ms, old.as_ref());
        let json = record_json(&tomb)?;
        self.run("unauthorize", move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let held: Option<String> = tx
                .query_row(
                    "SELECT component FROM authorizers WHERE appid = ?1",
                    params![tomb.authorizer_appid],
                    |r| r.get(0),
                )
                .optional()?;
            if held.is_some_and(|c| c != tomb.component_appid)
                || authorizer_event(&tx, &tomb.authorizer_appid)?.is_some_and(|e| e > tomb.event_ms)
            {
                return Ok(false);
            }
            write_authorizer(&tx, &tomb, &json)?;
            tx.execute(
                "DELETE FROM secrets WHERE name = ?1",
                params![refresh_token_name(&tomb.authorizer_appid)],
            )?;
            delete_app_rows(&tx, &tomb.authorizer_appid)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}

#[async_trait]
impl SecretStore for SqliteStore {
    async fn put_secret(&self, name: &str, value: &Secret) -> Result<()> {
        let sealed = need_sealer(self.sealer.as_ref(), "a secret")?.seal(name, value)?;
        let name = name.to_owned();
        self.run("put_secret", move |c| {
            c.execute(
                "INSERT INTO secrets (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, sealed],
            )
            .map(drop)
        })
        .await
    }

    async fn get_secret(&self, name: &str) -> Result<Option<Secret>> {
        let n = name.to_owned();
        let sealed = self
            .run("get_secret", move |c| {
                c.query_row("SELECT value FROM secrets WHERE name = ?1", params![n], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
            })
            .await?;
        sealed.map(|s| need_sealer(self.sealer.as_ref(), "a secret")?.open(name, &s)).transpose()
    }

    async fn delete_secret(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.run("delete_secret", move |c| {
            c.execute("DELETE FROM secrets WHERE name = ?1", params![name]).map(drop)
        })
        .await
    }

    async fn list_secrets(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = prefix.to_owned();
        self.run("list_secrets", move |c| {
            // substr rather than LIKE: a prefix may contain `%` or `_`.
            let mut stmt =
                c.prepare("SELECT name FROM secrets WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name")?;
            let names = stmt.query_map(params![prefix], |r| r.get::<_, String>(0))?;
            names.collect()
        })
        .await
    }
}

#[async_trait]
impl QuotaStore for SqliteStore {
    async fn incr_quota(&self, appid: &str, endpoint: &str, day: &str) -> Result<u64> {
        let (appid, endpoint, day) = (appid.to_owned(), endpoint.to_owned(), day.to_owned());
        let n: i64 = self
            .run("incr_quota", move |c| {
                c.query_row(
                    "INSERT INTO quotas (appid, endpoint, day, count) VALUES (?1, ?2, ?3, 1)
                     ON CONFLICT (appid, endpoint, day) DO UPDATE SET count = count + 1
                     RETURNING count",
                    params![appid, endpoint, day],
                    |r| r.get(0),
                )
            })
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn get_quota(&self, appid: &str, endpoint: &str, day: &str) -> Result<u64> {
        let (appid, endpoint, day) = (appid.to_owned(), endpoint.to_owned(), day.to_owned());
        let n: Option<i64> = self
            .run("get_quota", move |c| {
                c.query_row(
                    "SELECT count FROM quotas WHERE appid = ?1 AND endpoint = ?2 AND day = ?3",
                    params![appid, endpoint, day],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    async fn quotas_of_day(&self, day: &str) -> Result<Vec<(String, String, u64)>> {
        let day = day.to_owned();
        self.run("quotas_of_day", move |c| {
            let mut stmt = c.prepare("SELECT appid, endpoint, count FROM quotas WHERE day = ?1")?;
            let rows = stmt.query_map(params![day], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                ))
            })?;
            rows.collect()
        })
        .await
    }
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.run("try_lease", move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Wall-clock milliseconds: several processes may share the file, and they share
            // no monotonic clock.
            let now = now_ms();
            let row: Option<(String, i64, i64)> = tx
                .query_row("SELECT holder, until_ms, fence FROM leases WHERE name = ?1", params![name], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            let last = match row {
                Some((h, until, _)) if h != holder && until > now => return Ok(None),
                Some((_, _, fence)) => u64::try_from(fence).unwrap_or(0),
                None => 0,
            };
            let fence = super::next_fence(last, now);
            tx.execute(
                "INSERT INTO leases (name, holder, until_ms, fence) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET
                     holder = excluded.holder, until_ms = excluded.until_ms, fence = excluded.fence",
                params![name, holder, now.saturating_add(ttl_ms), version_to_sql(fence)?],
            )?;
            tx.commit()?;
            Ok(Some(Lease { name, holder, fence }))
        })
        .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let lease = lease.clone();
        self.run("release_lease", move |c| {
            // The row stays: the next grant's fence must still exceed this one.
            c.execute(
                "UPDATE leases SET until_ms = 0 WHERE name = ?1 AND holder = ?2 AND fence = ?3",
                params![lease.name, lease.holder, version_to_sql(lease.fence)?],
            )
            .map(drop)
        })
        .await
    }
}

impl ChangeFeed for SqliteStore {
    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.feed.subscribe()
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        self.run("ping", |c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(drop)).await
    }
}
