use crate::common::*;
use std::sync::Arc;
use std::time::Duration;
use wechat_proto::api::{PATH_GETTICKET, PATH_STABLE_TOKEN, PATH_TOKEN, TicketType};
use wechat_sim::FaultKind;
use wxcentral_core::store::{CredentialStore, SqliteStore, Store, StoreConfig};
use wxcentral_core::{CredentialKind, TokenApi};

const AT: CredentialKind = CredentialKind::AccessToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_the_same_sqlite_file_makes_zero_upstream_calls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wxcentral.db");
    let sim = sim(vec![sim_app("wxa", 7200), sim_app("wxb", 7200)]).await;
    let apps = || {
        vec![
            app("wxa", TokenApi::Classic, &[TicketType::Jsapi, TicketType::WxCard]),
            app("wxb", TokenApi::Stable, &[]),
        ]
    };
    let open = || async { StoreConfig::Sqlite { path: path.clone() }.open(None).await.unwrap() };

    let engine = engine_with(&sim, apps(), open().await, config("n1")).await;
    let mut before = Vec::new();
    for (appid, kind) in [
        ("wxa", AT),
        ("wxa", CredentialKind::JsapiTicket),
        ("wxa", CredentialKind::WxCardTicket),
        ("wxb", AT),
    ] {
        before.push(engine.get(appid, kind).await.unwrap());
    }
    engine.shutdown().await;
    drop(engine);
    let calls = |sim: &wechat_sim::SimHandle| {
        (sim.calls("wxa", PATH_TOKEN), sim.calls("wxa", PATH_GETTICKET), sim.calls("wxb", PATH_STABLE_TOKEN))
    };
    assert_eq!(calls(&sim), (1, 2, 1));

    let engine = engine_with(&sim, apps(), open().await, config("n1")).await;
    // Loaded at start, before any read or refresh loop had a chance to run.
    let status = engine.status();
    let loaded: Vec<_> = status.iter().flat_map(|s| &s.credentials).map(|c| (c.state, c.version)).collect();
    assert_eq!(
        loaded,
        [before[0].version, before[1].version, before[2].version, before[3].version]
            .map(|v| ("valid", Some(v)))
            .to_vec()
    );
    let mut after = Vec::new();
    for (appid, kind) in [
        ("wxa", AT),
        ("wxa", CredentialKind::JsapiTicket),
        ("wxa", CredentialKind::WxCardTicket),
        ("wxb", AT),
    ] {
        after.push(engine.get(appid, kind).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(after, before, "same values and versions after the restart");
    assert_eq!(calls(&sim), (1, 2, 1), "no upstream call after the restart");
    let status = engine.status();
    assert!(status.iter().flat_map(|s| &s.credentials).all(|c| c.state == "valid"), "{status:?}");
    // The quota book survived too.
    let a = status.iter().find(|s| s.appid == "wxa").unwrap();
    assert_eq!(a.quota_today, vec![(PATH_TOKEN.to_owned(), 1), (PATH_GETTICKET.to_owned(), 2)]);

    // After a refresh the version only grows, also across the restart.
    let forced = engine.force_refresh("wxa", AT).await.unwrap();
    assert!(forced.version > before[0].version);
    engine.shutdown().await;
    drop(engine);
    let store = SqliteStore::open(&path).await.unwrap();
    let stored = store.get_credential(&wxcentral_core::CredentialKey::new("wxa", AT)).await.unwrap().unwrap();
    // What the store keeps is WeChat's answer; the promise to clients is derived on install.
    assert_eq!(
        (&stored.value, stored.version, stored.expires_at_ms, stored.fetched_at_ms),
        (&forced.value, forced.version, forced.expires_at_ms, forced.fetched_at_ms)
    );
    assert!(forced.valid_until_ms < forced.expires_at_ms, "a classic token is promised less than its expiry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sharing_a_store_fetch_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.db");
    let sim = sim(vec![sim_app("wxa", 7200)]).await;
    // A slow WeChat, so both nodes want the token at the same time.
    let mut slow = fault(PATH_TOKEN, None, FaultKind::Delay);
    slow.delay_ms = Some(600);
    slow.count = Some(1);
    add_fault(&sim, slow);
    let store_a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let store_b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let (a, b) = tokio::join!(
        engine_with(&sim, vec![app("wxa", TokenApi::Classic, &[])], store_a, config("node-a")),
        engine_with(&sim, vec![app("wxa", TokenApi::Classic, &[])], store_b, config("node-b")),
    );
    let (va, vb) = tokio::join!(a.get("wxa", AT), b.get("wxa", AT));
    let (va, vb) = (va.unwrap(), vb.unwrap());
    assert_eq!(va, vb, "both nodes serve the one value");
    assert_eq!(sim.calls("wxa", PATH_TOKEN), 1, "one fetch for the cluster");

    // A compare-and-refresh on one node reaches the other through the store: a report of the
    // old value there costs no call once it has adopted the new one.
    let v2 = a.report_invalid("wxa", AT, va.value.expose()).await.unwrap();
    assert_eq!(sim.calls("wxa", PATH_TOKEN), 2);
    let seen_by_b = b.report_invalid("wxa", AT, va.value.expose()).await.unwrap();
    assert_eq!(seen_by_b, v2, "node b adopted node a's newer value instead of fetching");
    assert_eq!(sim.calls("wxa", PATH_TOKEN), 2);
    a.shutdown().await;
    b.shutdown().await;
}
