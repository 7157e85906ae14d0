//! SIGHUP (DESIGN.md §8): the config file is read again; apps added, removed and changed and
//! client keys rotated take effect within a second, unchanged apps never miss a read, and a
//! broken file is refused while serving goes on.

mod common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wxcentral::config::hash_key;

const NEW_KEY: &str = "rotated-admin-key-77f0c1d2e3";

async fn until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !check().await {
        assert!(t0.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_applies_apps_and_keys_and_refuses_a_broken_file() {
    let keep = TestApp::new("wxkeep0000000001");
    let gone = TestApp::new("wxgone0000000001");
    let added = TestApp::new("wxadded000000001");
    let sim = start_sim(&[keep.clone(), gone.clone(), added.clone()]).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("reload.db");
    let before = node_toml(&sim, &[keep.clone(), gone.clone()], &db, "r", "");
    let node = Node::spawn(dir.path(), "r", &before);
    let c = http();
    let url =
        |a: &TestApp, key: &str| (node.url(&format!("/v1/apps/{}/access_token", a.appid())), key.to_owned());
    for a in [&keep, &gone] {
        assert_eq!(get_json(&c, &url(a, ADMIN_KEY).0, ADMIN_KEY).await.0, 200);
    }
    assert_eq!(get_json(&c, &url(&added, ADMIN_KEY).0, ADMIN_KEY).await.0, 404);

    // A reader of the unchanged app all along: not one failed read.
    let (stop, reads, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (stop, reads, failed, c, u) =
            (stop.clone(), reads.clone(), failed.clone(), c.clone(), url(&keep, READER_KEY).0);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (s, _) = get_json(&c, &u, READER_KEY).await;
                reads.fetch_add(1, Ordering::Relaxed);
                if s != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // New file: `gone` removed, `added` added, the admin key rotated.
    let after = node_toml(&sim, &[keep.clone(), added.clone()], &db, "r", "")
        .replace(&hash_key(ADMIN_KEY), &hash_key(NEW_KEY));
    std::fs::write(dir.path().join("r.toml"), &after).unwrap();
    let calls_keep = sim.calls(keep.appid(), "/cgi-bin/stable_token");
    node.signal("HUP");
    let took = until(Duration::from_secs(1), async || {
        get_json(&c, &url(&added, NEW_KEY).0, NEW_KEY).await.0 == 200
            && get_json(&c, &url(&gone, NEW_KEY).0, NEW_KEY).await.0 == 404
            && get_json(&c, &url(&keep, ADMIN_KEY).0, ADMIN_KEY).await.0 == 401
    })
    .await;
    let token = get_json(&c, &url(&added, NEW_KEY).0, NEW_KEY).await.1;
    sim_accepts(&sim, token["value"].as_str().unwrap()).await.expect("the added app's token is valid");
    assert_eq!(
        sim.calls(keep.appid(), "/cgi-bin/stable_token"),
        calls_keep,
        "the unchanged app was not touched"
    );
    let rows: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM credentials WHERE appid = ?1", [gone.appid()], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0, "a removed app's values go");

    // A broken file: refused with its one-line error, and the running config stays.
    std::fs::write(dir.path().join("r.toml"), after.replace("[[app]]", "[[app]]\nbogus = 1")).unwrap();
    node.signal("HUP");
    until(Duration::from_secs(2), async || node.logs().contains("config reload refused")).await;
    let line = node.logs().lines().find(|l| l.contains("config reload refused")).unwrap().to_owned();
    assert!(line.contains("bogus"), "{line}");
    assert_eq!(get_json(&c, &url(&added, NEW_KEY).0, NEW_KEY).await.0, 200);
    assert_eq!(get_json(&c, &url(&keep, ADMIN_KEY).0, ADMIN_KEY).await.0, 401);

    // Reads go on a while after both reloads too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    assert!(reads.load(Ordering::Relaxed) > 20, "the reader ran");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "reads of the unchanged app never failed");
    let logs = node.logs();
    for secret in [&keep.sim.secret, &gone.sim.secret, &added.sim.secret] {
        assert!(!logs.contains(secret.as_str()), "secret in the logs");
    }
    eprintln!("reload applied within {took:?}; {} reads of the unchanged app", reads.load(Ordering::Relaxed));
}
