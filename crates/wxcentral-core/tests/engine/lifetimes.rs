use crate::common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wechat_proto::api::{PATH_STABLE_TOKEN, PATH_TOKEN};
use wechat_sim::SimHandle;
use wxcentral_core::store::MemoryStore;
use wxcentral_core::{CredentialKind, Engine, TokenApi};

const AT: CredentialKind = CredentialKind::AccessToken;

/// Reads every 100 ms for `run` and checks each value against the simulator at once, as a
/// business server would use it. Returns the distinct values seen.
async fn poll_and_verify(sim: &SimHandle, engine: &Arc<Engine>, appid: &str, run: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    let mut reads = 0;
    while start.elapsed() < run {
        let c = engine.get(appid, AT).await.unwrap_or_else(|e| panic!("read {reads} failed: {e:?}"));
        let now = now_ms();
        assert!(c.expires_at_ms > now, "never an expired value");
        if let Err(code) = token_accepted(sim, c.value.expose()).await {
            panic!("read {reads} at {:?}: WeChat rejected the served token with {code}", start.elapsed());
        }
        if seen.last() != Some(c.value.expose()) {
            assert!(!seen.contains(c.value.expose()), "a replaced value came back");
            seen.push(c.value.expose().clone());
        }
        reads += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reads >= (run.as_millis() / 150) as usize, "reader kept up: {reads}");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_tokens_across_short_lifetimes_are_never_rejected() {
    // ttl 4 s, the previous token dies 1 s after a new one is issued.
    let sim = sim(vec![sim_app("wxa", 4).overlap(1)]).await;
    let engine = engine(&sim, vec![app("wxa", TokenApi::Classic, &[])]).await;
    let run = Duration::from_secs(13);
    let seen = poll_and_verify(&sim, &engine, "wxa", run).await;
    let calls = sim.calls("wxa", PATH_TOKEN);
    // Refresh margin: half of 4 s, jitter up to 10 % of it: one fetch every 1.8–2.0 s.
    let (lo, hi) = (1 + (13.0 / 2.0) as u64 - 1, 1 + (13.0 / 1.8) as u64 + 1);
    assert!((lo..=hi).contains(&calls), "{calls} fetches in 13 s, expected {lo}..={hi}");
    assert!(
        calls.abs_diff(seen.len() as u64) <= 1,
        "one fetch per value: {calls} fetches, {} values",
        seen.len()
    );
    let status = engine.status();
    assert_eq!(status[0].credentials[0].state, "valid");
    assert_eq!(status[0].quota_today, vec![(PATH_TOKEN.to_owned(), calls)]);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stable_tokens_rotate_inside_wechats_window() {
    // ttl 6 s; the stable endpoint hands out a new token only in the last 2 s.
    let sim = sim(vec![sim_app("wxa", 6).stable_rotate(2)]).await;
    let mut cfg = config("n1");
    cfg.stable_rotate_secs = 2;
    let engine =
        engine_with(&sim, vec![app("wxa", TokenApi::Stable, &[])], Arc::new(MemoryStore::new()), cfg).await;
    let first = engine.get("wxa", AT).await.unwrap();
    let seen = poll_and_verify(&sim, &engine, "wxa", Duration::from_secs(13)).await;
    let calls = sim.calls("wxa", PATH_STABLE_TOKEN);
    // Refresh 1.6–1.76 s before expiry: one new token every ~4.3 s, none wasted on a refresh
    // that got the same token back.
    assert!(seen.len() >= 3, "rotated: {} values", seen.len());
    assert!((3..=5).contains(&calls), "{calls} calls");
    assert!(calls.abs_diff(seen.len() as u64) <= 1, "{calls} calls for {} values", seen.len());
    // A rotated-out stable token stays valid until its own expiry; the first has expired.
    assert!(token_accepted(&sim, first.value.expose()).await.is_err());
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stable_refresh_outside_the_window_keeps_the_value_and_backs_off() {
    // The engine believes the window is 4 s while WeChat rotates only in the last 1 s: each
    // early refresh gets the same token back. It must keep it and retry at half the remaining
    // time, not hammer, and still never serve an expired token.
    let sim = sim(vec![sim_app("wxa", 8).stable_rotate(1)]).await;
    let mut cfg = config("n1");
    cfg.stable_rotate_secs = 4;
    let engine =
        engine_with(&sim, vec![app("wxa", TokenApi::Stable, &[])], Arc::new(MemoryStore::new()), cfg).await;
    let seen = poll_and_verify(&sim, &engine, "wxa", Duration::from_secs(10)).await;
    let calls = sim.calls("wxa", PATH_STABLE_TOKEN);
    assert!(seen.len() >= 2, "the token did rotate: {seen:?}");
    // Refresh at ~3.2 s left, then halving towards the serve end (0.8 s): a handful per
    // lifetime, not hundreds.
    assert!(calls <= 12, "{calls} calls in 10 s");
    engine.shutdown().await;
}
