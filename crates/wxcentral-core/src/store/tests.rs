//! One conformance suite run against every backend through the traits, so the engine can rely
//! on the same semantics whichever store is configured.

use super::*;
use crate::kind::CredentialKind;
use std::time::Duration;

fn cred(value: &str, version: u64) -> Credential {
    Credential {
        value: Secret::from(value),
        expires_at_ms: 1_000_000 + i64::try_from(version).unwrap(),
        fetched_at_ms: 1_000,
        version,
    }
}

async fn versions_never_go_backwards(store: &dyn Store) {
    let key = CredentialKey::new("wxa", CredentialKind::AccessToken);
    let other = CredentialKey::new("wxa", CredentialKind::JsapiTicket);
    assert_eq!(store.get_credential(&key).await.unwrap(), None);
    assert!(store.put_credential(&key, &cred("v5", 5)).await.unwrap());
    assert!(!store.put_credential(&key, &cred("v4", 4)).await.unwrap(), "older version must lose");
    assert!(!store.put_credential(&key, &cred("v5b", 5)).await.unwrap(), "equal version must lose");
    assert_eq!(store.get_credential(&key).await.unwrap(), Some(cred("v5", 5)));
    assert!(store.put_credential(&key, &cred("v9", 9)).await.unwrap());
    assert_eq!(store.get_credential(&key).await.unwrap(), Some(cred("v9", 9)));
    // Keys are independent.
    assert!(store.put_credential(&other, &cred("t1", 1)).await.unwrap());
    let mut all = store.load_credentials().await.unwrap();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(all, vec![(key.clone(), cred("v9", 9)), (other, cred("t1", 1))]);
}

async fn concurrent_writers_keep_the_highest(store: Arc<dyn Store>) {
    let key = CredentialKey::new("wxc", CredentialKind::AccessToken);
    let tasks: Vec<_> = (1..=40u64)
        .map(|v| {
            let (store, key) = (Arc::clone(&store), key.clone());
            tokio::spawn(async move { store.put_credential(&key, &cred(&format!("v{v}"), v)).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.get_credential(&key).await.unwrap().unwrap().version, 40);
}

async fn leases_are_exclusive_until_expiry(store: &dyn Store) {
    let ttl = Duration::from_millis(300);
    assert!(store.try_lease("refresh:wxa:access_token", "n1", ttl).await.unwrap());
    assert!(!store.try_lease("refresh:wxa:access_token", "n2", ttl).await.unwrap());
    // The holder may renew; another lease name is independent.
    assert!(store.try_lease("refresh:wxa:access_token", "n1", ttl).await.unwrap());
    assert!(store.try_lease("refresh:wxb:access_token", "n2", ttl).await.unwrap());
    // Only the holder releases.
    store.release_lease("refresh:wxa:access_token", "n2").await.unwrap();
    assert!(!store.try_lease("refresh:wxa:access_token", "n2", ttl).await.unwrap());
    store.release_lease("refresh:wxa:access_token", "n1").await.unwrap();
    assert!(store.try_lease("refresh:wxa:access_token", "n2", ttl).await.unwrap());
    // Expiry frees it for others.
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert!(store.try_lease("refresh:wxa:access_token", "n3", ttl).await.unwrap());
}

async fn quota_counts_per_day(store: &dyn Store) {
    let ep = "/cgi-bin/token";
    assert_eq!(store.get_quota("wxa", ep, "2026-11-20").await.unwrap(), 0);
    for i in 1..=3 {
        assert_eq!(store.incr_quota("wxa", ep, "2026-11-20").await.unwrap(), i);
    }
    assert_eq!(store.incr_quota("wxa", ep, "2026-11-21").await.unwrap(), 1);
    assert_eq!(store.incr_quota("wxb", ep, "2026-11-20").await.unwrap(), 1);
    assert_eq!(store.incr_quota("wxa", "/cgi-bin/ticket/getticket", "2026-11-20").await.unwrap(), 1);
    assert_eq!(store.get_quota("wxa", ep, "2026-11-20").await.unwrap(), 3);
    assert_eq!(store.get_quota("wxa", ep, "2026-11-21").await.unwrap(), 1);
}

async fn secrets_round_trip(store: &dyn Store) {
    store.put_secret("authorizer:wxc:wx1", &Secret::from("r1")).await.unwrap();
    store.put_secret("authorizer:wxc:wx2", &Secret::from("r2")).await.unwrap();
    store.put_secret("authorizer:wxc_x:wx3", &Secret::from("r3")).await.unwrap();
    store.put_secret("verify_ticket:wxc", &Secret::from("t")).await.unwrap();
    store.put_secret("authorizer:wxc:wx1", &Secret::from("r1b")).await.unwrap();
    assert_eq!(store.get_secret("authorizer:wxc:wx1").await.unwrap(), Some(Secret::from("r1b")));
    let mut names = store.list_secrets("authorizer:wxc:").await.unwrap();
    names.sort();
    assert_eq!(names, ["authorizer:wxc:wx1", "authorizer:wxc:wx2"]);
    // A LIKE-style wildcard in the prefix is literal.
    assert!(store.list_secrets("authorizer:wxc_").await.unwrap().len() == 1);
    store.delete_secret("authorizer:wxc:wx2").await.unwrap();
    assert_eq!(store.get_secret("authorizer:wxc:wx2").await.unwrap(), None);
    store.delete_secret("never-there").await.unwrap();
    store.ping().await.unwrap();
}

async fn conformance(make: impl Fn() -> Arc<dyn Store>) {
    versions_never_go_backwards(&*make()).await;
    concurrent_writers_keep_the_highest(make()).await;
    leases_are_exclusive_until_expiry(&*make()).await;
    quota_counts_per_day(&*make()).await;
    secrets_round_trip(&*make()).await;
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(|| Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let mut stores = Vec::new();
    for i in 0..5 {
        stores.push(Arc::new(SqliteStore::open(&dir.path().join(format!("s{i}.db"))).await.unwrap()) as _);
    }
    let next = std::sync::Mutex::new(stores.into_iter());
    conformance(|| next.lock().unwrap().next().unwrap()).await;
}

#[tokio::test]
async fn sqlite_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wx.db");
    let key = CredentialKey::new("wxa", CredentialKind::AccessToken);
    {
        let store = StoreConfig::Sqlite { path: path.clone() }.open().await.unwrap();
        assert!(store.put_credential(&key, &cred("v7", 7)).await.unwrap());
        store.put_secret("authorizer:wxc:wx1", &Secret::from("refresh-1")).await.unwrap();
        store.incr_quota("wxa", "/cgi-bin/token", "2026-11-20").await.unwrap();
        assert!(store.try_lease("refresh:wxa:access_token", "n1", Duration::from_secs(60)).await.unwrap());
    }
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.get_credential(&key).await.unwrap(), Some(cred("v7", 7)));
    assert!(!store.put_credential(&key, &cred("v6", 6)).await.unwrap());
    assert_eq!(store.get_secret("authorizer:wxc:wx1").await.unwrap(), Some(Secret::from("refresh-1")));
    assert_eq!(store.load_credentials().await.unwrap().len(), 1);
    assert!(!store.try_lease("refresh:wxa:access_token", "n2", Duration::from_secs(60)).await.unwrap());
}

#[tokio::test]
async fn sqlite_prunes_old_quota_days_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wx.db");
    let today = crate::quota::wechat_day(crate::clock::now_ms());
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.incr_quota("wxa", "/cgi-bin/token", "2000-01-01").await.unwrap();
        store.incr_quota("wxa", "/cgi-bin/token", &today).await.unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.get_quota("wxa", "/cgi-bin/token", "2000-01-01").await.unwrap(), 0);
    assert_eq!(store.get_quota("wxa", "/cgi-bin/token", &today).await.unwrap(), 1);
}

#[tokio::test]
async fn sqlite_refuses_a_newer_schema_and_errors_carry_no_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wx.db");
    drop(SqliteStore::open(&path).await.unwrap());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute("INSERT INTO schema_version (version) VALUES (99)", []).unwrap();
    }
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(matches!(&err, crate::Error::Store(m) if m.contains("99")), "{err}");

    // A write that fails (the table is gone) reports the operation, never the value.
    let path2 = dir.path().join("broken.db");
    let store = SqliteStore::open(&path2).await.unwrap();
    {
        let c = rusqlite::Connection::open(&path2).unwrap();
        c.execute("DROP TABLE secrets", []).unwrap();
    }
    let err = store.put_secret("x", &Secret::from("hunter2-secret")).await.unwrap_err().to_string();
    assert!(err.contains("put_secret") && !err.contains("hunter2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_calls_do_not_block_the_runtime() {
    // A second process holding the write lock makes our write wait on busy_timeout; a timer on
    // the same runtime must keep ticking meanwhile.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wx.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let write = tokio::spawn(async move { store.incr_quota("a", "/e", "d").await });
    let t0 = std::time::Instant::now();
    let mut ticks = 0;
    while t0.elapsed() < Duration::from_millis(300) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        ticks += 1;
    }
    assert!(ticks >= 10, "runtime stalled: {ticks} ticks");
    assert!(!write.is_finished(), "write should wait for the lock");
    blocker.execute_batch("COMMIT").unwrap();
    assert_eq!(write.await.unwrap().unwrap(), 1);
}
