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

use super::{CredentialStore, LeaseStore, QuotaStore, SecretStore, Store};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::kind::{Credential, CredentialKey, CredentialKind};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wechat_proto::Secret;

/// The schema this build writes. Bump it with a migration step in [`migrate`].
const SCHEMA_VERSION: i64 = 1;
/// How long a statement waits for another process holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Quota rows older than this are pruned at open: the books only matter for today.
const QUOTA_KEEP_DAYS: i64 = 31;

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
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
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self> {
        let path = path.to_path_buf();
        let p = path.clone();
        let conn = tokio::task::spawn_blocking(move || open_blocking(&p))
            .await
            .map_err(|e| Error::Store(format!("sqlite open: {e}")))??;
        Ok(Self { conn: Arc::new(Mutex::new(conn)), path })
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

fn open_blocking(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|e| store_err("open", &e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| store_err("busy_timeout", &e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| store_err("journal_mode", &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Store(format!("sqlite open: journal_mode is {mode}, WAL is required")));
    }
    conn.pragma_update(None, "synchronous", "FULL").map_err(|e| store_err("synchronous", &e))?;
    migrate(&conn)?;
    let cutoff = crate::quota::wechat_day(now_ms() - QUOTA_KEEP_DAYS * 86_400_000);
    conn.execute("DELETE FROM quotas WHERE day < ?1", params![cutoff]).map_err(|e| store_err("prune", &e))?;
    Ok(conn)
}

/// Creates the schema or checks the existing one; refuses a file written by a newer build
/// rather than guess at its layout.
fn migrate(conn: &Connection) -> Result<()> {
    let err = |e: rusqlite::Error| store_err("migrate", &e);
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(err)?;
    let found: Option<i64> =
        conn.query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0)).map_err(err)?;
    match found {
        Some(v) if v == SCHEMA_VERSION => Ok(()),
        Some(v) if v > SCHEMA_VERSION => Err(Error::Store(format!(
            "sqlite schema version {v} is newer than this build understands ({SCHEMA_VERSION})"
        ))),
        Some(v) => Err(Error::Store(format!("sqlite schema version {v} has no migration path"))),
        None => conn
            .execute_batch(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS credentials (
                     appid TEXT NOT NULL,
                     kind TEXT NOT NULL,
                     value TEXT NOT NULL,
                     expires_at_ms INTEGER NOT NULL,
                     fetched_at_ms INTEGER NOT NULL,
                     version INTEGER NOT NULL,
                     PRIMARY KEY (appid, kind)
                 );
                 CREATE TABLE IF NOT EXISTS secrets (
                     name TEXT PRIMARY KEY NOT NULL,
                     value TEXT NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS quotas (
                     appid TEXT NOT NULL,
                     endpoint TEXT NOT NULL,
                     day TEXT NOT NULL,
                     count INTEGER NOT NULL,
                     PRIMARY KEY (appid, endpoint, day)
                 );
                 CREATE TABLE IF NOT EXISTS leases (
                     name TEXT PRIMARY KEY NOT NULL,
                     holder TEXT NOT NULL,
                     until_ms INTEGER NOT NULL
                 );
                 INSERT INTO schema_version (version) VALUES (1);
                 COMMIT;",
            )
            .map_err(err),
    }
}

fn version_to_sql(v: u64) -> rusqlite::Result<i64> {
    i64::try_from(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn row_to_credential(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Credential> {
    let version: i64 = row.get(first + 3)?;
    Ok(Credential {
        value: Secret::new(row.get::<_, String>(first)?),
        expires_at_ms: row.get(first + 1)?,
        fetched_at_ms: row.get(first + 2)?,
        version: u64::try_from(version).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(first + 3, rusqlite::types::Type::Integer, Box::new(e))
        })?,
    })
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

    async fn put_credential(&self, key: &CredentialKey, cred: &Credential) -> Result<bool> {
        let (appid, kind) = (key.appid.clone(), key.kind.as_str());
        let cred = cred.clone();
        self.run("put_credential", move |c| {
            let n = c.execute(
                "INSERT INTO credentials (appid, kind, value, expires_at_ms, fetched_at_ms, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (appid, kind) DO UPDATE SET
                     value = excluded.value,
                     expires_at_ms = excluded.expires_at_ms,
                     fetched_at_ms = excluded.fetched_at_ms,
                     version = excluded.version
                 WHERE excluded.version > credentials.version",
                params![
                    appid,
                    kind,
                    cred.value.expose(),
                    cred.expires_at_ms,
                    cred.fetched_at_ms,
                    version_to_sql(cred.version)?
                ],
            )?;
            Ok(n > 0)
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
}

#[async_trait]
impl SecretStore for SqliteStore {
    async fn put_secret(&self, name: &str, value: &Secret) -> Result<()> {
        let (name, value) = (name.to_owned(), value.clone());
        self.run("put_secret", move |c| {
            c.execute(
                "INSERT INTO secrets (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, value.expose()],
            )
            .map(drop)
        })
        .await
    }

    async fn get_secret(&self, name: &str) -> Result<Option<Secret>> {
        let name = name.to_owned();
        self.run("get_secret", move |c| {
            c.query_row("SELECT value FROM secrets WHERE name = ?1", params![name], |r| {
                r.get::<_, String>(0).map(Secret::new)
            })
            .optional()
        })
        .await
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
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.run("try_lease", move |c| {
            // Wall-clock milliseconds: several processes may share the file, and they share
            // no monotonic clock.
            let now = now_ms();
            let n = c.execute(
                "INSERT INTO leases (name, holder, until_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms
                 WHERE leases.holder = excluded.holder OR leases.until_ms <= ?4",
                params![name, holder, now.saturating_add(ttl_ms), now],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.run("release_lease", move |c| {
            c.execute("DELETE FROM leases WHERE name = ?1 AND holder = ?2", params![name, holder]).map(drop)
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        self.run("ping", |c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(drop)).await
    }
}
