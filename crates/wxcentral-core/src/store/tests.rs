//! One conformance suite run against every backend through the traits, so the engine can rely
//! on the same semantics whichever store is configured.

use super::*;
use crate::kind::CredentialKind;
use std::time::Duration;

fn new(value: &str) -> NewCredential {
    NewCredential { value: Secret::from(value), expires_at_ms: 9_000_000, fetched_at_ms: 1_000 }
}

const TTL: Duration = Duration::from_secs(30);

async fn lease(store: &dyn Store, name: &str, holder: &str) -> Lease {
    store.try_lease(name, holder, TTL).await.unwrap().expect("lease is free")
}

async fn fenced_writes_version_and_refuse_late_writers(store: &dyn Store) {
    let key = CredentialKey::new("wxa", CredentialKind::AccessToken);
    let other = CredentialKey::new("wxa", CredentialKind::JsapiTicket);
    assert_eq!(store.get_credential(&key).await.unwrap(), None);
    let l1 = lease(store, "refresh:wxa:access_token", "n1").await;
    let w1 = store.put_credential(&key, &new("v1"), &l1).await.unwrap().expect("current lease writes");
    assert_eq!(w1.version, l1.fence, "the first version is the fence");
    assert_eq!(store.get_credential(&key).await.unwrap(), Some(w1.clone()));
    // The write ended the lease: the next node need not wait for it to expire.
    let l2 = lease(store, "refresh:wxa:access_token", "n2").await;
    assert!(l2.fence > l1.fence, "fences grow with every grant");
    // n1 writing late (it stalled, n2 holds the lease now) is refused.
    // n1's late write is refused even though it comes first, and leaves the store alone.
    assert_eq!(store.put_credential(&key, &new("late"), &l1).await.unwrap(), None);
    assert_eq!(store.get_credential(&key).await.unwrap(), Some(w1.clone()));
    let w2 = store.put_credential(&key, &new("v2"), &l2).await.unwrap().unwrap();
    assert!(w2.version > w1.version);
    assert_eq!(store.put_credential(&key, &new("late"), &l1).await.unwrap(), None);
    assert_eq!(store.get_credential(&key).await.unwrap().unwrap().value, Secret::from("v2"));
    // A lease for one credential fences nothing else; a lease that was never granted writes nothing.
    let forged = Lease { name: "refresh:wxa:jsapi_ticket".into(), holder: "n9".into(), fence: u64::MAX };
    assert_eq!(store.put_credential(&other, &new("t"), &forged).await.unwrap(), None);
    let lt = lease(store, "refresh:wxa:jsapi_ticket", "n1").await;
    let t1 = store.put_credential(&other, &new("t1"), &lt).await.unwrap().unwrap();
    let mut all = store.load_credentials().await.unwrap();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(all, vec![(key, w2), (other, t1)]);
}

async fn versions_grow_past_stored_ones_whatever_the_fence(store: &dyn Store) {
    // A second write under the same grant still gets a higher version.
    let key = CredentialKey::new("wxv", CredentialKind::AccessToken);
    let l = lease(store, "refresh:wxv:access_token", "n1").await;
    let a = store.put_credential(&key, &new("a"), &l).await.unwrap().unwrap();
    let b = store.put_credential(&key, &new("b"), &l).await.unwrap().unwrap();
    assert!(b.version > a.version, "{} > {}", b.version, a.version);
}

async fn concurrent_grants_are_exclusive(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store.try_lease("refresh:wxc:access_token", &format!("n{i}"), TTL).await.unwrap()
            })
        })
        .collect();
    let mut granted = Vec::new();
    for t in tasks {
        granted.extend(t.await.unwrap());
    }
    assert_eq!(granted.len(), 1, "{granted:?}");
}

async fn leases_are_exclusive_until_expiry(store: &dyn Store) {
    let ttl = Duration::from_millis(300);
    let name = "refresh:wxa:access_token";
    let a = store.try_lease(name, "n1", ttl).await.unwrap().unwrap();
    assert_eq!(store.try_lease(name, "n2", ttl).await.unwrap(), None);
    // The holder may renew (a new grant, a higher fence); another lease name is independent.
    let a2 = store.try_lease(name, "n1", ttl).await.unwrap().unwrap();
    assert!(a2.fence > a.fence);
    assert!(store.try_lease("refresh:wxb:access_token", "n2", ttl).await.unwrap().is_some());
    // Only the holder of the current grant releases.
    store.release_lease(&Lease { holder: "n2".into(), ..a2.clone() }).await.unwrap();
    store.release_lease(&a).await.unwrap();
    assert_eq!(store.try_lease(name, "n2", ttl).await.unwrap(), None);
    store.release_lease(&a2).await.unwrap();
    let b = store.try_lease(name, "n2", ttl).await.unwrap().unwrap();
    assert!(b.fence > a2.fence, "a release keeps the fence growing");
    // Expiry frees it for others.
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    let c = store.try_lease(name, "n3", ttl).await.unwrap().unwrap();
    assert!(c.fence > b.fence);
}

/// Writes through `writer` reach subscribers of `reader` (the same store, or another handle
/// on the same file) within the bound the design promises.
async fn changes_reach_subscribers(writer: &dyn Store, reader: &dyn Store, bound: Duration) {
    let mut rx = reader.subscribe();
    let key = CredentialKey::new("wxf", CredentialKind::AccessToken);
    for round in 0..3 {
        let l = lease(writer, "refresh:wxf:access_token", "n1").await;
        let t0 = std::time::Instant::now();
        writer.put_credential(&key, &new(&format!("f{round}")), &l).await.unwrap().unwrap();
        writer.release_lease(&l).await.unwrap();
        // Quota writes are not credential changes.
        writer.incr_quota("wxf", "/cgi-bin/token", "2026-11-20").await.unwrap();
        let got = tokio::time::timeout(bound, rx.recv()).await;
        assert_eq!(
            got.ok().map(Result::unwrap),
            Some(Change::Credential(key.clone())),
            "round {round} within {bound:?}"
        );
        assert!(t0.elapsed() <= bound);
    }
    // A refused write tells nobody.
    let stale = Lease { name: "refresh:wxf:access_token".into(), holder: "n1".into(), fence: 1 };
    assert_eq!(writer.put_credential(&key, &new("late"), &stale).await.unwrap(), None);
    tokio::time::sleep(bound).await;
    assert!(rx.try_recv().is_err(), "a refused write must not be announced");
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

async fn authorizers_keep_refresh_tokens_and_tombstones(store: &dyn Store) {
    use crate::authorizer::{AuthorizerRecord, AuthorizerState, AuthorizerWrite};
    let rec = |state, event_ms| AuthorizerRecord {
        component_appid: "wxcomp".into(),
        authorizer_appid: "wxauth".into(),
        state,
        func_info: vec![1, 15],
        event_ms,
        updated_ms: event_ms,
    };
    let mut rx = store.subscribe();
    assert_eq!(store.get_authorizer("wxauth").await.unwrap(), None);
    assert!(
        store
            .put_authorizer(&rec(AuthorizerState::Authorized, 100), Some(&Secret::from("rt1")))
            .await
            .unwrap()
    );
    assert_eq!(store.get_authorizer("wxauth").await.unwrap(), Some(rec(AuthorizerState::Authorized, 100)));
    assert_eq!(store.get_refresh_token("wxauth").await.unwrap(), Some(Secret::from("rt1")));
    assert_eq!(rx.recv().await.unwrap(), Change::App("wxauth".into()));
    // The token and the rotated refresh token land together, fenced like any credential.
    let key = CredentialKey::new("wxauth", CredentialKind::AccessToken);
    let l = lease(store, "refresh:wxauth:access_token", "n1").await;
    let w = AuthorizerWrite { refresh_token: &Secret::from("rt2"), record: None, code_digest: None };
    let t = store.put_authorizer_token(&key, &new("tok1"), &l, w).await.unwrap().expect("lease stands");
    assert_eq!(store.get_credential(&key).await.unwrap(), Some(t));
    assert_eq!(store.get_refresh_token("wxauth").await.unwrap(), Some(Secret::from("rt2")));
    // A late writer changes neither.
    let l2 = lease(store, "refresh:wxauth:access_token", "n2").await;
    let late = AuthorizerWrite { refresh_token: &Secret::from("rt-late"), record: None, code_digest: None };
    assert_eq!(store.put_authorizer_token(&key, &new("late"), &l, late).await.unwrap(), None);
    assert_eq!(store.get_refresh_token("wxauth").await.unwrap(), Some(Secret::from("rt2")));
    // An authorization written with its token marks the code as exchanged.
    let updated = rec(AuthorizerState::Authorized, 200);
    let w = AuthorizerWrite {
        refresh_token: &Secret::from("rt3"),
        record: Some(&updated),
        code_digest: Some("d1"),
    };
    store.put_authorizer_token(&key, &new("tok2"), &l2, w).await.unwrap().expect("written");
    assert_eq!(store.get_secret("auth_code:wxcomp:d1").await.unwrap(), Some(Secret::from("wxauth")));
    assert_eq!(store.get_authorizer("wxauth").await.unwrap(), Some(updated.clone()));
    // unauthorized: a tombstone; the refresh token, values and leases are gone.
    assert!(!store.unauthorize("wxcomp", "wxauth", 150).await.unwrap(), "older than the record");
    assert!(store.unauthorize("wxcomp", "wxauth", 300).await.unwrap());
    let tomb = store.get_authorizer("wxauth").await.unwrap().unwrap();
    assert_eq!(
        (tomb.state, tomb.event_ms, tomb.func_info),
        (AuthorizerState::Unauthorized, 300, vec![1, 15])
    );
    assert_eq!(store.get_refresh_token("wxauth").await.unwrap(), None);
    assert_eq!(store.get_credential(&key).await.unwrap(), None);
    // A late push (older than the tombstone) cannot bring it back, in either write.
    assert!(
        !store
            .put_authorizer(&rec(AuthorizerState::Authorized, 250), Some(&Secret::from("rt4")))
            .await
            .unwrap()
    );
    let l3 = lease(store, "refresh:wxauth:access_token", "n3").await;
    let old = rec(AuthorizerState::Authorized, 260);
    let w = AuthorizerWrite { refresh_token: &Secret::from("rt5"), record: Some(&old), code_digest: None };
    assert_eq!(store.put_authorizer_token(&key, &new("tok3"), &l3, w).await.unwrap(), None);
    assert_eq!(store.get_refresh_token("wxauth").await.unwrap(), None);
    assert_eq!(store.get_authorizer("wxauth").await.unwrap().unwrap().state, AuthorizerState::Unauthorized);
    // A re-authorization after it does.
    assert!(
        store
            .put_authorizer(&rec(AuthorizerState::Authorized, 400), Some(&Secret::from("rt6")))
            .await
            .unwrap()
    );
    // Another component cannot revoke it.
    assert!(!store.unauthorize("wxother", "wxauth", 10_000).await.unwrap());
    assert_eq!(store.get_refresh_token("wxauth").await.unwrap(), Some(Secret::from("rt6")));
    // An unauthorized push for an authorizer never seen leaves a tombstone too.
    assert!(store.unauthorize("wxcomp", "wxnever", 500).await.unwrap());
    let all = store.load_authorizers().await.unwrap();
    let states: Vec<_> = all.iter().map(|r| (r.authorizer_appid.as_str(), r.state)).collect();
    assert_eq!(states, [("wxauth", AuthorizerState::Authorized), ("wxnever", AuthorizerState::Unauthorized)]);
}

fn sealer() -> Arc<crate::seal::Sealer> {
    Arc::new(crate::seal::Sealer::new(&crate::seal::Sealer::generate_key(), &[]).unwrap())
}

/// One key for a whole test, so a reopened file still opens.
fn key_of_the_run() -> Arc<crate::seal::Sealer> {
    static KEY: std::sync::OnceLock<Arc<crate::seal::Sealer>> = std::sync::OnceLock::new();
    Arc::clone(KEY.get_or_init(sealer))
}

async fn apps_round_trip_and_take_their_credentials_along(store: &dyn Store) {
    use crate::kind::{AppKind, AppSpec, TokenApi};
    use wechat_proto::api::TicketType;
    let mut rx = store.subscribe();
    let app = AppSpec {
        appid: "wxrt".into(),
        secret: Secret::from("runtime-app-secret-0001"),
        kind: AppKind::MiniProgram,
        token_api: TokenApi::Classic,
        tickets: vec![TicketType::Jsapi],
        role: crate::kind::Role::App,
    };
    assert_eq!(store.get_app("wxrt").await.unwrap(), None);
    store.put_apps(std::slice::from_ref(&app)).await.unwrap();
    assert_eq!(store.get_app("wxrt").await.unwrap(), Some(app.clone()));
    let changed = AppSpec { secret: Secret::from("rotated-secret-0002"), tickets: vec![], ..app.clone() };
    store.put_apps(std::slice::from_ref(&changed)).await.unwrap();
    assert_eq!(store.load_apps().await.unwrap(), vec![changed.clone()]);
    let key = CredentialKey::new("wxrt", CredentialKind::AccessToken);
    let l = lease(store, "refresh:wxrt:access_token", "n1").await;
    store.put_credential(&key, &new("t"), &l).await.unwrap().unwrap();
    assert!(store.delete_app("wxrt").await.unwrap());
    assert!(!store.delete_app("wxrt").await.unwrap(), "deleted once");
    assert_eq!(store.get_app("wxrt").await.unwrap(), None);
    assert_eq!(store.get_credential(&key).await.unwrap(), None, "its credentials go with it");
    assert_eq!(store.put_credential(&key, &new("late"), &l).await.unwrap(), None, "and its leases");
    let mut seen = Vec::new();
    while let Ok(Ok(c)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        seen.push(c);
    }
    let apps: Vec<_> = seen.iter().filter(|c| **c == Change::App("wxrt".into())).collect();
    assert_eq!(apps.len(), 3, "put, put, delete: {seen:?}");
    // Other apps' credentials stay.
    let other = CredentialKey::new("wxother", CredentialKind::AccessToken);
    let lo = lease(store, "refresh:wxother:access_token", "n1").await;
    store.put_credential(&other, &new("o"), &lo).await.unwrap().unwrap();
    store.delete_credentials("wxrt").await.unwrap();
    assert!(store.get_credential(&other).await.unwrap().is_some());
    store.delete_credentials("wxother").await.unwrap();
    assert!(store.get_credential(&other).await.unwrap().is_none());
}

async fn quotas_of_a_day(store: &dyn Store) {
    store.incr_quota("wxa", "/cgi-bin/token", "2026-11-20").await.unwrap();
    store.incr_quota("wxa", "/cgi-bin/token", "2026-11-20").await.unwrap();
    store.incr_quota("wxb", "/cgi-bin/stable_token", "2026-11-20").await.unwrap();
    store.incr_quota("wxa", "/cgi-bin/token", "2026-11-21").await.unwrap();
    let mut q = store.quotas_of_day("2026-11-20").await.unwrap();
    q.sort();
    assert_eq!(
        q,
        vec![("wxa".into(), "/cgi-bin/token".into(), 2), ("wxb".into(), "/cgi-bin/stable_token".into(), 1)]
    );
}

async fn conformance(make: impl Fn() -> Arc<dyn Store>) {
    apps_round_trip_and_take_their_credentials_along(&*make()).await;
    quotas_of_a_day(&*make()).await;
    fenced_writes_version_and_refuse_late_writers(&*make()).await;
    versions_grow_past_stored_ones_whatever_the_fence(&*make()).await;
    concurrent_grants_are_exclusive(make()).await;
    leases_are_exclusive_until_expiry(&*make()).await;
    quota_counts_per_day(&*make()).await;
    secrets_round_trip(&*make()).await;
    authorizers_keep_refresh_tokens_and_tombstones(&*make()).await;
    let s = make();
    changes_reach_subscribers(&*s, &*s, Duration::from_millis(250)).await;
}

#[test]
fn fences_grow_and_follow_the_clock() {
    assert_eq!(next_fence(0, 1_700_000_000_000), 1_700_000_000_000);
    assert_eq!(next_fence(1_800_000_000_000, 1_700_000_000_000), 1_800_000_000_001);
    let mut last = 0;
    for now in [10, 10, 9, 11, 11, 3, -5] {
        let f = next_fence(last, now);
        assert!(f > last);
        last = f;
    }
    assert_eq!(next_fence(u64::MAX, 0), u64::MAX);
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(|| Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let mut stores = Vec::new();
    for i in 0..10 {
        stores.push(Arc::new(
            SqliteStore::open_sealed(&dir.path().join(format!("s{i}.db")), Some(sealer())).await.unwrap(),
        ) as _);
    }
    let next = std::sync::Mutex::new(stores.into_iter());
    conformance(|| next.lock().unwrap().next().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_handles_on_one_file_share_leases_and_changes() {
    // Two handles are two connections, as two processes have.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let opened = futures::future::join_all((0..3).map(|_| SqliteStore::open(&path))).await;
    let [a, b, _c] = <[_; 3]>::try_from(opened).unwrap().map(Result::unwrap);
    two_handles_share_leases_and_changes(&a, &b, Duration::from_millis(250), None).await;
}

/// Two handles on one store (two processes, two nodes): changes reach the other within
/// `bound`, leases and fences are shared. `elsewhere`, a handle on another namespace, shares
/// nothing.
async fn two_handles_share_leases_and_changes(
    a: &dyn Store,
    b: &dyn Store,
    bound: Duration,
    elsewhere: Option<&dyn Store>,
) {
    changes_reach_subscribers(a, b, bound).await;
    let l = lease(a, "refresh:wxs:access_token", "a").await;
    assert_eq!(b.try_lease("refresh:wxs:access_token", "b", TTL).await.unwrap(), None);
    if let Some(other) = elsewhere {
        assert!(other.try_lease("refresh:wxs:access_token", "c", TTL).await.unwrap().is_some());
    }
    a.release_lease(&l).await.unwrap();
    let lb = lease(b, "refresh:wxs:access_token", "b").await;
    let key = CredentialKey::new("wxs", CredentialKind::AccessToken);
    assert_eq!(a.put_credential(&key, &new("late"), &l).await.unwrap(), None);
    assert!(b.put_credential(&key, &new("b"), &lb).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_feed_resyncs_after_pruned_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pruned.db");
    let a = SqliteStore::open(&path).await.unwrap();
    let b = SqliteStore::open(&path).await.unwrap();
    let mut rx = b.subscribe();
    {
        // Another process's writes pruned rows this one never read.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("INSERT INTO changes (seq, appid, kind) VALUES (50000, 'wxp', 'access_token')")
            .unwrap();
    }
    drop(a);
    let first = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await.unwrap().unwrap();
    assert_eq!(first, Change::Resync);
}

#[tokio::test]
async fn sqlite_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wx.db");
    let key = CredentialKey::new("wxa", CredentialKind::AccessToken);
    let (written, held) = {
        let store = StoreConfig::Sqlite { path: path.clone() }.open(Some(key_of_the_run())).await.unwrap();
        let l = lease(&*store, "refresh:wxa:access_token", "n1").await;
        let written = store.put_credential(&key, &new("v7"), &l).await.unwrap().unwrap();
        store.put_secret("authorizer:wxc:wx1", &Secret::from("refresh-1")).await.unwrap();
        store.incr_quota("wxa", "/cgi-bin/token", "2026-11-20").await.unwrap();
        let held = lease(&*store, "refresh:wxa:access_token", "n1").await;
        (written, held)
    };
    let store = SqliteStore::open_sealed(&path, Some(key_of_the_run())).await.unwrap();
    assert_eq!(store.get_credential(&key).await.unwrap(), Some(written));
    assert_eq!(store.get_secret("authorizer:wxc:wx1").await.unwrap(), Some(Secret::from("refresh-1")));
    assert_eq!(store.load_credentials().await.unwrap().len(), 1);
    assert_eq!(store.try_lease("refresh:wxa:access_token", "n2", TTL).await.unwrap(), None);
    // The grant survives too: its holder may still write, and only it.
    assert!(store.put_credential(&key, &new("v8"), &held).await.unwrap().is_some());
}

#[tokio::test]
async fn sqlite_migrates_a_version_1_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             CREATE TABLE credentials (appid TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,
                 expires_at_ms INTEGER NOT NULL, fetched_at_ms INTEGER NOT NULL, version INTEGER NOT NULL,
                 PRIMARY KEY (appid, kind));
             CREATE TABLE secrets (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
             CREATE TABLE quotas (appid TEXT NOT NULL, endpoint TEXT NOT NULL, day TEXT NOT NULL,
                 count INTEGER NOT NULL, PRIMARY KEY (appid, endpoint, day));
             CREATE TABLE leases (name TEXT PRIMARY KEY NOT NULL, holder TEXT NOT NULL, until_ms INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (1);
             INSERT INTO credentials VALUES ('wxa', 'access_token', 'old', 9000000, 1000, 99999999999999);
             INSERT INTO leases VALUES ('refresh:wxa:access_token', 'node', 0);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let key = CredentialKey::new("wxa", CredentialKind::AccessToken);
    assert_eq!(store.get_credential(&key).await.unwrap().unwrap().version, 99_999_999_999_999);
    // A version from before fences (ahead of the clock here) is still outgrown.
    let l = lease(&store, "refresh:wxa:access_token", "n1").await;
    let w = store.put_credential(&key, &new("new"), &l).await.unwrap().unwrap();
    assert_eq!(w.version, 100_000_000_000_000);
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
    let store = SqliteStore::open_sealed(&path2, Some(sealer())).await.unwrap();
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

#[tokio::test]
async fn sqlite_refuses_secrets_without_a_key_and_never_writes_them_in_clear() {
    use crate::kind::{AppKind, AppSpec, TokenApi};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sealed.db");
    let app = AppSpec {
        appid: "wxsealed".into(),
        secret: Secret::from("APP-SECRET-IN-CLEAR-0123456789"),
        kind: AppKind::OfficialAccount,
        token_api: TokenApi::Stable,
        tickets: vec![],
        role: crate::kind::Role::App,
    };
    {
        let plain = SqliteStore::open(&path).await.unwrap();
        let e = plain.put_apps(std::slice::from_ref(&app)).await.unwrap_err();
        assert!(matches!(e, crate::Error::NoEncryptionKey(_)), "{e}");
        let e = plain
            .put_secret("authorizer:wxc:wx1", &Secret::from("REFRESH-TOKEN-IN-CLEAR-987"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("encryption_key"), "{e}");
    }
    let sealer = sealer();
    {
        let store = SqliteStore::open_sealed(&path, Some(Arc::clone(&sealer))).await.unwrap();
        store.put_apps(std::slice::from_ref(&app)).await.unwrap();
        store.put_secret("authorizer:wxc:wx1", &Secret::from("REFRESH-TOKEN-IN-CLEAR-987")).await.unwrap();
        assert_eq!(store.get_app("wxsealed").await.unwrap().unwrap().secret, app.secret);
        // Bytes on disk, WAL included, while the store is open.
        for file in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            for secret in ["APP-SECRET-IN-CLEAR-0123456789", "REFRESH-TOKEN-IN-CLEAR-987"] {
                assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} on disk");
            }
        }
    }
    // A wrong key: the store does not open (at start, not at the first use), naming the key
    // it needs and nothing of the values.
    let e = SqliteStore::open_sealed(&path, Some(super::tests::sealer())).await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("{}, which is not configured", sealer_id(&path))) && !e.contains("IN-CLEAR"),
        "{e}"
    );
}

/// The key id of the first sealed secret in a file.
fn sealer_id(path: &std::path::Path) -> String {
    let c = rusqlite::Connection::open(path).unwrap();
    let v: String = c.query_row("SELECT value FROM secrets LIMIT 1", [], |r| r.get(0)).unwrap();
    v.split(':').nth(1).unwrap().to_owned()
}

#[tokio::test]
async fn sqlite_reseals_under_a_new_key_at_open() {
    use crate::seal::Sealer;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rotate.db");
    let (old, new) = (Sealer::generate_key(), Sealer::generate_key());
    {
        let store =
            SqliteStore::open_sealed(&path, Some(Arc::new(Sealer::new(&old, &[]).unwrap()))).await.unwrap();
        store.put_secret("verify_ticket:wxc", &Secret::from("ticket-1")).await.unwrap();
    }
    // The new key with the old one kept: everything opens, and is sealed again under the new.
    {
        let both = Arc::new(Sealer::new(&new, std::slice::from_ref(&old)).unwrap());
        let store = SqliteStore::open_sealed(&path, Some(both)).await.unwrap();
        assert_eq!(store.get_secret("verify_ticket:wxc").await.unwrap(), Some(Secret::from("ticket-1")));
    }
    // So the old key can go.
    let only_new = Arc::new(Sealer::new(&new, &[]).unwrap());
    let store = SqliteStore::open_sealed(&path, Some(only_new)).await.unwrap();
    assert_eq!(store.get_secret("verify_ticket:wxc").await.unwrap(), Some(Secret::from("ticket-1")));
}

// ---------------------------------------------------------------------------------------------
// Redis: the same suite against a real redis-server, plus what only a networked store can do.

fn redis_config(server: &crate::testing::RedisServer, namespace: &str) -> RedisConfig {
    RedisConfig {
        url: Secret::new(server.url()),
        namespace: namespace.into(),
        timeout: Duration::from_millis(500),
        wait_replicas: 0,
    }
}

async fn open_redis(server: &crate::testing::RedisServer, namespace: &str) -> RedisStore {
    RedisStore::open(&redis_config(server, namespace), Some(key_of_the_run())).await.unwrap()
}

/// Every key and value of the server, as raw text.
async fn redis_dump(server: &crate::testing::RedisServer) -> String {
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS").arg("*").query_async(&mut c).await.unwrap();
    let mut out = String::new();
    for k in keys {
        let kind: String = ::redis::cmd("TYPE").arg(&k).query_async(&mut c).await.unwrap();
        let v: Vec<String> = match kind.as_str() {
            "hash" => ::redis::cmd("HGETALL").arg(&k).query_async(&mut c).await.unwrap(),
            "set" => ::redis::cmd("SMEMBERS").arg(&k).query_async(&mut c).await.unwrap(),
            _ => vec![::redis::cmd("GET").arg(&k).query_async(&mut c).await.unwrap()],
        };
        out += &format!("{k} {v:?}\n");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_conforms() {
    let server = crate::testing::RedisServer::start();
    let mut stores = Vec::new();
    for i in 0..10 {
        stores.push(Arc::new(open_redis(&server, &format!("conf{i}")).await) as Arc<dyn Store>);
    }
    let next = std::sync::Mutex::new(stores.into_iter());
    conformance(|| next.lock().unwrap().next().unwrap()).await;
    // Two handles are two nodes: leases, fences and changes are shared, within the 100 ms the
    // cluster mode promises.
    let (a, b) = (open_redis(&server, "pair").await, open_redis(&server, "pair").await);
    // Namespaces do not see each other.
    let other = open_redis(&server, "elsewhere").await;
    two_handles_share_leases_and_changes(&a, &b, Duration::from_millis(100), Some(&other)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_nothing_in_clear_and_refuses_without_a_key() {
    let server = crate::testing::RedisServer::start();
    let err = RedisStore::open(&redis_config(&server, "nokey"), None).await.unwrap_err();
    assert!(matches!(err, crate::Error::NoEncryptionKey(_)), "{err}");
    let bad_url =
        RedisConfig { url: Secret::new("redis://:hunter2@[bad".into()), ..redis_config(&server, "x") };
    let err = RedisStore::open(&bad_url, Some(sealer())).await.unwrap_err().to_string();
    assert!(!err.contains("hunter2"), "{err}");
    let store = open_redis(&server, "clear").await;
    authorizers_keep_refresh_tokens_and_tombstones(&store).await;
    apps_round_trip_and_take_their_credentials_along(&store).await;
    let key = CredentialKey::new("wxclear", CredentialKind::AccessToken);
    let l = lease(&store, "refresh:wxclear:access_token", "n1").await;
    store.put_credential(&key, &new("token-in-the-clear-0001"), &l).await.unwrap().unwrap();
    store.put_secret("verify_ticket:wxcomp", &Secret::from("ticket-in-the-clear-0002")).await.unwrap();
    let dump = redis_dump(&server).await;
    assert!(dump.contains("wxcentral:{clear}:credentials"), "{dump}");
    for secret in ["token-in-the-clear-0001", "ticket-in-the-clear-0002", "rt6", "rotated-secret-0002"] {
        assert!(!dump.contains(secret), "{secret} in clear:\n{dump}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_with_aof_keeps_everything_and_the_feed_resyncs() {
    let mut server = crate::testing::RedisServer::start();
    let store = open_redis(&server, "restart").await;
    let mut rx = store.subscribe();
    store.put_secret("refresh_token:wxa", &Secret::from("rt-before-kill")).await.unwrap();
    let key = CredentialKey::new("wxa", CredentialKind::AccessToken);
    let l = lease(&store, "refresh:wxa:access_token", "n1").await;
    let w = store.put_credential(&key, &new("v1"), &l).await.unwrap().unwrap();
    assert_eq!(rx.recv().await.unwrap(), Change::Credential(key.clone()));
    store.ping().await.unwrap();

    server.restart();
    // The feed notices the dropped subscription, subscribes again and says what it missed.
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a resync").unwrap();
    assert_eq!(got, Change::Resync);
    assert_eq!(store.get_refresh_token("wxa").await.unwrap(), Some(Secret::from("rt-before-kill")));
    assert_eq!(store.get_credential(&key).await.unwrap(), Some(w.clone()));
    // Fences keep growing across the restart: the old grant cannot write.
    let l2 = lease(&store, "refresh:wxa:access_token", "n2").await;
    assert!(l2.fence > l.fence);
    assert_eq!(store.put_credential(&key, &new("late"), &l).await.unwrap(), None);
    store.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_fails_calls_within_the_timeout_and_the_feed_comes_back() {
    let server = crate::testing::RedisServer::start();
    let store = open_redis(&server, "frozen").await;
    let writer = open_redis(&server, "frozen").await;
    let mut rx = store.subscribe();
    server.signal("STOP");
    let t0 = std::time::Instant::now();
    assert!(store.try_lease("refresh:wxa:access_token", "n1", TTL).await.is_err());
    assert!(store.ping().await.is_err());
    assert!(t0.elapsed() < Duration::from_secs(3), "calls fail within the timeout: {:?}", t0.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.signal("CONT");
    // After the freeze: the feed resubscribes (a resync) and new writes arrive again.
    let t1 = std::time::Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a resync").unwrap();
    assert_eq!(got, Change::Resync, "nothing was written while frozen");
    assert!(t1.elapsed() < Duration::from_secs(8));
    let key = CredentialKey::new("wxa", CredentialKind::AccessToken);
    let l = loop {
        if let Some(l) = writer.try_lease("refresh:wxa:access_token", "n2", TTL).await.unwrap() {
            break l;
        }
        // The grant asked for while frozen was applied once Redis resumed; it expires.
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    writer.put_credential(&key, &new("after"), &l).await.unwrap().unwrap();
    let got = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await.unwrap().unwrap();
    assert_eq!(got, Change::Credential(key));
    store.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_makes_the_feed_resync() {
    let server = crate::testing::RedisServer::start_with(false);
    let store = open_redis(&server, "lost").await;
    let mut rx = store.subscribe();
    for i in 0..3 {
        let key = CredentialKey::new(format!("wx{i}"), CredentialKind::AccessToken);
        let l = lease(&store, &format!("refresh:wx{i}:access_token"), "n1").await;
        store.put_credential(&key, &new("v"), &l).await.unwrap().unwrap();
        assert_eq!(rx.recv().await.unwrap(), Change::Credential(key));
    }
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let () = ::redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a resync").unwrap();
    assert_eq!(got, Change::Resync);
}
