//! Apps at runtime (DESIGN.md §8): added and removed through the admin API, persisted (secret
//! sealed) so every node and every restart sees them; config-file apps stay read-only there.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};
use wechat_proto::api::TicketType;
use wxcentral_core::seal::Sealer;

const TOKEN: &str = "/cgi-bin/token";

async fn put(c: &reqwest::Client, url: &str, key: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = c.put(url).bearer_auth(key).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(serde_json::Value::Null))
}

async fn delete(c: &reqwest::Client, url: &str, key: &str) -> u16 {
    c.delete(url).bearer_auth(key).send().await.unwrap().status().as_u16()
}

/// Polls `url` until it answers `status`, within `limit`.
async fn until_status(c: &reqwest::Client, url: &str, status: u16, limit: Duration) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let (s, body) = get_json(c, url, ADMIN_KEY).await;
        if s == status {
            return body;
        }
        assert!(t0.elapsed() < limit, "{url} still {s} after {limit:?}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runtime_apps_are_added_shared_persisted_and_removed() {
    let fixed = TestApp::new("wxfixed000000001");
    let runtime = TestApp::new("wxruntime0000001").classic().ttl(4).tickets(&[TicketType::Jsapi]);
    let sim = start_sim(&[fixed.clone(), runtime.clone()]).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("admin.db");
    let mut config = config(&sim, std::slice::from_ref(&fixed));
    sqlite(&mut config, db.clone());
    config.store.encryption_key = Some(Sealer::generate_key());
    let a = Server::start(&config).await;
    let b = Server::start(&config).await;
    let c = http();
    let app_url = |s: &Server| s.url(&format!("/v1/apps/{}", runtime.appid()));
    let token_url = |s: &Server| s.url(&format!("/v1/apps/{}/access_token", runtime.appid()));
    let secret = runtime.sim.secret.clone();
    let body = json!({"secret": secret, "token_api": "classic", "tickets": ["jsapi"]});

    // Who may, and what is refused.
    assert_eq!(put(&c, &app_url(&a), REFRESHER_KEY, body.clone()).await.0, 403, "admin keys only");
    assert_eq!(put(&c, &app_url(&a), "nope", body.clone()).await.0, 401);
    let (s, e) = put(&c, &a.url(&format!("/v1/apps/{}", fixed.appid())), ADMIN_KEY, body.clone()).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "config-file apps are read-only: {e}"
    );
    for bad in [
        json!({}),
        json!({"secret": ""}),
        json!({"secret": "s", "tickets": ["nope"]}),
        json!({"secret": "s", "x": 1}),
    ] {
        let (s, e) = put(&c, &app_url(&a), ADMIN_KEY, bad.clone()).await;
        assert_eq!((s, e["error"]["code"].as_str()), (400, Some("invalid_request")), "{bad}: {e}");
    }
    let (s, e) = put(&c, &a.url("/v1/apps/wx.bad"), ADMIN_KEY, body.clone()).await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("invalid_request")), "{e}");
    assert_eq!(delete(&c, &a.url(&format!("/v1/apps/{}", fixed.appid())), ADMIN_KEY).await, 403);
    assert_eq!(delete(&c, &app_url(&a), ADMIN_KEY).await, 404);

    // Added on a: served there, and on b (same file) without b calling WeChat.
    let (s, view) = put(&c, &app_url(&a), ADMIN_KEY, body.clone()).await;
    assert_eq!(s, 201, "{view}");
    assert_eq!(view["origin"], "runtime");
    assert!(!view.to_string().contains(&secret), "the secret is never answered");
    let (s, t) = get_json(&c, &token_url(&a), ADMIN_KEY).await;
    assert_eq!(s, 200, "{t}");
    sim_accepts(&sim, t["value"].as_str().unwrap()).await.expect("valid upstream");
    let on_b = until_status(&c, &token_url(&b), 200, Duration::from_secs(2)).await;
    assert_eq!(on_b["value"], t["value"], "b serves a's value");
    let (s, _) = get_json(&c, &b.url(&format!("/v1/apps/{}/jsapi_ticket", runtime.appid())), ADMIN_KEY).await;
    assert_eq!(s, 200);
    assert_eq!(put(&c, &app_url(&a), ADMIN_KEY, body.clone()).await.0, 200, "a second put changes nothing");
    // Scopes: `*` sees it, a key for other apps does not.
    assert_eq!(get_json(&c, &token_url(&a), REFRESHER_KEY).await.0, 200);
    assert_eq!(get_json(&c, &token_url(&a), READER_KEY).await.0, 403);
    let (_, list) = get_json(&c, &b.url("/v1/apps"), ADMIN_KEY).await;
    assert!(
        list["apps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["appid"] == runtime.appid() && a["origin"] == "runtime")
    );

    // A restart (a new process on the file) serves it from the store, without a fetch.
    let calls = sim.calls(runtime.appid(), TOKEN);
    b.stop().await;
    let b = Server::start(&config).await;
    let (s, again) = get_json(&c, &token_url(&b), ADMIN_KEY).await;
    assert_eq!((s, &again["value"]), (200, &t["value"]), "{again}");
    assert_eq!(sim.calls(runtime.appid(), TOKEN), calls);

    // Removed on b: gone everywhere, no more upstream calls, no series, no rows.
    assert_eq!(delete(&c, &app_url(&b), ADMIN_KEY).await, 204);
    assert_eq!(get_json(&c, &token_url(&b), ADMIN_KEY).await.0, 404);
    until_status(&c, &token_url(&a), 404, Duration::from_secs(2)).await;
    let calls = sim.total_calls(TOKEN) + sim.total_calls("/cgi-bin/ticket/getticket");
    tokio::time::sleep(Duration::from_secs(5)).await; // more than a lifetime
    assert_eq!(
        sim.total_calls(TOKEN) + sim.total_calls("/cgi-bin/ticket/getticket"),
        calls,
        "no calls for it"
    );
    for s in [&a, &b] {
        let text = c.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(!text.contains(runtime.appid()), "no series left");
        assert!(text.contains(fixed.appid()));
    }
    let rows: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM credentials WHERE appid = ?1", [runtime.appid()], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);

    // The secret never reached the file, its WAL or the logs.
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "secret on disk");
    }
    assert_not_logged([secret.as_str()]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn without_an_encryption_key_runtime_apps_are_refused() {
    let fixed = TestApp::new("wxfixed000000002");
    let sim = start_sim(std::slice::from_ref(&fixed)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&sim, std::slice::from_ref(&fixed));
    sqlite(&mut config, dir.path().join("plain.db"));
    let server = Server::start(&config).await;
    let (s, e) =
        put(&http(), &server.url("/v1/apps/wxnokey"), ADMIN_KEY, json!({"secret": "some-secret"})).await;
    assert_eq!((s, e["error"]["code"].as_str()), (501, Some("not_configured")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("encryption_key"), "{e}");
    assert_eq!(get_json(&http(), &server.url("/v1/apps/wxnokey/access_token"), ADMIN_KEY).await.0, 404);
    server.stop().await;
}

/// 10,000 apps added through the admin API and removed again (DESIGN.md §8). Prints the time
/// and memory figures docs/benchmarks.md quotes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_apps_come_and_go() {
    const N: usize = 10_000;
    let fixed = TestApp::new("wxfixed000000003");
    let apps: Vec<TestApp> = (0..N).map(|i| TestApp::new(&format!("wxmass{i:010}"))).collect();
    let mut all = vec![fixed.clone()];
    all.extend(apps.iter().cloned());
    let sim = start_sim(&all).await;
    let mut config = config(&sim, std::slice::from_ref(&fixed));
    config.store.encryption_key = Some(Sealer::generate_key());
    config.upstream.max_per_second = 5000;
    config.server.body_limit_bytes = 1 << 20;
    let server = Server::start(&config).await;
    let c = http();
    let rss0 = rss_kib();
    let t0 = Instant::now();
    // Batches of 200, four in flight.
    let puts = futures::stream::iter(apps.chunks(200).map(|chunk| {
        let items: Vec<_> =
            chunk.iter().map(|a| json!({"appid": a.appid(), "secret": a.sim.secret})).collect();
        let (c, url) = (c.clone(), server.url("/v1/apps"));
        async move { put(&c, &url, ADMIN_KEY, json!({ "apps": items })).await.0 }
    }));
    let statuses: Vec<u16> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(puts, 4)).await;
    let added = t0.elapsed();
    assert!(statuses.iter().all(|s| *s == 200), "{:?}", statuses.iter().find(|s| **s != 200));
    let (_, list) = get_json(&c, &server.url("/v1/apps"), ADMIN_KEY).await;
    assert_eq!(list["apps"].as_array().unwrap().len(), N + 1);
    // Every one valid once the limiter let their fetches through.
    let last = server.url(&format!("/v1/apps/{}/access_token", apps[N - 1].appid()));
    until_status(&c, &last, 200, Duration::from_secs(30)).await;
    let t1 = Instant::now();
    while sim.total_calls("/cgi-bin/stable_token") < (N + 1) as u64 {
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "fetches: {}",
            sim.total_calls("/cgi-bin/stable_token")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss1 = rss_kib();

    let t2 = Instant::now();
    let dels = futures::stream::iter(apps.iter().map(|a| {
        let (c, url) = (c.clone(), server.url(&format!("/v1/apps/{}", a.appid())));
        async move { delete(&c, &url, ADMIN_KEY).await }
    }));
    let statuses: Vec<u16> =
        futures::StreamExt::collect(futures::StreamExt::buffer_unordered(dels, 64)).await;
    let removed = t2.elapsed();
    assert!(statuses.iter().all(|s| *s == 204));
    let calls = sim.total_calls("/cgi-bin/stable_token");
    assert_eq!(get_json(&c, &last, ADMIN_KEY).await.0, 404);
    let text = c.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("wxmass"), "no series of removed apps");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.total_calls("/cgi-bin/stable_token"), calls, "no upstream call for removed apps");
    eprintln!(
        "10000 apps: added in {added:?} ({:.0} µs each over HTTP, 200 a request), removed in {removed:?}; \
         RSS {} MiB before, {} MiB with them, {} MiB after removal",
        added.as_micros() as f64 / N as f64,
        rss0 / 1024,
        rss1 / 1024,
        rss_kib() / 1024
    );
    server.stop().await;
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_batch_is_written_whole_or_not_at_all() {
    let fixed = TestApp::new("wxfixed000000004");
    let apps: Vec<TestApp> = (0..3).map(|i| TestApp::new(&format!("wxbatch{i:09}"))).collect();
    let mut all = vec![fixed.clone()];
    all.extend(apps.iter().cloned());
    let sim = start_sim(&all).await;
    let mut config = config(&sim, std::slice::from_ref(&fixed));
    config.store.encryption_key = Some(Sealer::generate_key());
    let server = Server::start(&config).await;
    let c = http();
    let url = server.url("/v1/apps");
    let item = |a: &TestApp| json!({"appid": a.appid(), "secret": a.sim.secret});
    // A config-file app in the batch: nothing of it is written.
    let (s, e) = put(&c, &url, ADMIN_KEY, json!({"apps": [item(&apps[0]), item(&fixed)]})).await;
    assert_eq!((s, e["error"]["code"].as_str()), (403, Some("forbidden")), "{e}");
    assert_eq!(
        get_json(&c, &server.url(&format!("/v1/apps/{}/access_token", apps[0].appid())), ADMIN_KEY).await.0,
        404
    );
    for bad in [
        json!({"apps": []}),
        json!({"apps": [{"appid": "a.b", "secret": "s"}]}),
        json!({"apps": [{"appid": "wxok"}]}),
    ] {
        assert_eq!(put(&c, &url, ADMIN_KEY, bad.clone()).await.0, 400, "{bad}");
    }
    assert_eq!(put(&c, &url, REFRESHER_KEY, json!({"apps": [item(&apps[0])]})).await.0, 403);
    // An invalid entry is refused even when a later one for the same appid would replace it.
    let long = json!({"appid": apps[0].appid(), "secret": "x".repeat(257)});
    assert_eq!(put(&c, &url, ADMIN_KEY, json!({"apps": [long, item(&apps[0])]})).await.0, 400);
    // A later entry for the same appid wins (the first one's secret is wrong).
    let wrong = json!({"appid": apps[0].appid(), "secret": "not-the-secret"});
    let (s, body) =
        put(&c, &url, ADMIN_KEY, json!({"apps": [wrong, item(&apps[0]), item(&apps[1]), item(&apps[2])]}))
            .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["created"].as_array().unwrap().len(), 3, "{body}");
    for a in &apps {
        let (s, t) =
            get_json(&c, &server.url(&format!("/v1/apps/{}/access_token", a.appid())), ADMIN_KEY).await;
        assert_eq!(s, 200, "{t}");
        sim_accepts(&sim, t["value"].as_str().unwrap()).await.expect("valid");
    }
    let (_, body) = put(&c, &url, ADMIN_KEY, json!({"apps": [item(&apps[1])]})).await;
    assert_eq!(body["changed"], json!([apps[1].appid()]));
    server.stop().await;
}
