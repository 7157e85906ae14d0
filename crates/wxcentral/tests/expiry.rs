//! `expires_in` is a promise (DESIGN.md §8): a client that caches a classic token for exactly
//! the time it was given never holds one WeChat already killed, across refresh periods.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_caching_for_expires_in_never_holds_a_killed_token() {
    // 12 s lifetime, 3 s overlap: each token is refreshed ~6 s before its expiry and dies 3 s
    // later, so answering with the time to WeChat's expiry would promise 3 s too many.
    let app = TestApp::new("wxhonest00000001").classic().ttl(12);
    let sim = start_sim(std::slice::from_ref(&app)).await;
    let server = Server::start(&config(&sim, std::slice::from_ref(&app))).await;
    let client = http();
    let url = server.url(&format!("/v1/apps/{}/access_token", app.appid()));
    let started = Instant::now();
    let mut checks = Vec::new();
    let mut versions = std::collections::BTreeSet::new();
    // A new caching client every 400 ms for 40 s (several refresh periods); each checks its
    // token with WeChat right before its cache runs out.
    while started.elapsed() < Duration::from_secs(40) {
        let (status, body) = get_json(&client, &url, READER_KEY).await;
        assert_eq!(status, 200, "{body}");
        let expires_in = body["expires_in"].as_u64().unwrap();
        let expires_at = body["expires_at"].as_i64().unwrap();
        let now_secs =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!(
            (expires_at - now_secs - expires_in as i64).abs() <= 1,
            "expires_at and expires_in agree: {body}"
        );
        assert!(expires_in >= 1, "a served value is promised for a while: {body}");
        versions.insert(body["version"].as_u64().unwrap());
        let (value, sim_url, client) =
            (body["value"].as_str().unwrap().to_owned(), sim.base_url(), client.clone());
        checks.push(tokio::spawn(async move {
            // Whole seconds, rounded down: the cache ends `expires_in` seconds after the read.
            tokio::time::sleep(Duration::from_secs(expires_in).saturating_sub(Duration::from_millis(150)))
                .await;
            (expires_in, sim_accepts_at(&client, &sim_url, &value).await)
        }));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    for c in checks {
        let (expires_in, check) = c.await.unwrap();
        assert!(check.is_ok(), "a token cached for its expires_in ({expires_in} s) was rejected: {check:?}");
    }
    assert!(versions.len() >= 5, "several refresh periods: {versions:?}");
    server.stop().await;
}
