//! What the drop-in endpoints and the proxy need of the engine: tokens resolved to their
//! credential, and guarded reports.

use crate::common::*;
use std::time::Duration;
use wechat_proto::api::{PATH_STABLE_TOKEN, PATH_TOKEN};
use wxcentral_core::store::MemoryStore;
use wxcentral_core::{CredentialKind, EngineConfig, TokenApi, TokenOwner};

const AT: CredentialKind = CredentialKind::AccessToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_resolve_to_their_app_while_current_or_within_the_overlap() {
    let sim = sim(vec![sim_app("wxa", 7200), sim_app("wxb", 7200)]).await;
    let cfg = EngineConfig { token_overlap_secs: 2, ..config("n1") };
    let apps = vec![app("wxa", TokenApi::Classic, &[]), app("wxb", TokenApi::Classic, &[])];
    let engine = engine_with(&sim, apps, std::sync::Arc::new(MemoryStore::new()), cfg).await;
    let a1 = engine.get("wxa", AT).await.unwrap();
    let b1 = engine.get("wxb", AT).await.unwrap();
    let owner = |appid: &str, current| Some(TokenOwner { appid: appid.into(), kind: AT, current });
    assert_eq!(engine.resolve_token(a1.value.expose()), owner("wxa", true));
    assert_eq!(engine.resolve_token(b1.value.expose()), owner("wxb", true));
    assert_eq!(engine.resolve_token("not-a-token-the-hub-issued"), None);
    assert_eq!(engine.resolve_token(""), None);

    // Replaced: the predecessor still names the app within the overlap, then nothing.
    let a2 = engine.report_invalid("wxa", AT, a1.value.expose()).await.unwrap();
    assert_ne!(a1.value.expose(), a2.value.expose());
    assert_eq!(engine.resolve_token(a2.value.expose()), owner("wxa", true));
    assert_eq!(engine.resolve_token(a1.value.expose()), owner("wxa", false));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(engine.resolve_token(a1.value.expose()), None, "past the overlap");
    assert_eq!(engine.resolve_token(a2.value.expose()), owner("wxa", true));

    // Two replacements: only the current value and its predecessor stay indexed.
    let a3 = engine.report_invalid("wxa", AT, a2.value.expose()).await.unwrap();
    let a4 = engine.report_invalid("wxa", AT, a3.value.expose()).await.unwrap();
    assert_eq!(engine.resolve_token(a2.value.expose()), None);
    assert_eq!(engine.resolve_token(a3.value.expose()), owner("wxa", false));
    assert_eq!(engine.resolve_token(a4.value.expose()), owner("wxa", true));

    // A removed app takes its tokens along; the other app's stay.
    engine.set_config_apps(vec![app("wxb", TokenApi::Classic, &[])]).await.unwrap();
    assert_eq!(engine.resolve_token(a4.value.expose()), None);
    assert_eq!(engine.resolve_token(b1.value.expose()), owner("wxb", true));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_reports_refresh_once_per_interval_and_never_a_young_value() {
    let sim = sim(vec![sim_app("wxc", 7200), sim_app("wxs", 7200)]).await;
    let cfg = EngineConfig { report_guard: Duration::from_millis(3000), ..config("n1") };
    let apps = vec![app("wxc", TokenApi::Classic, &[]), app("wxs", TokenApi::Stable, &[])];
    let engine = engine_with(&sim, apps, std::sync::Arc::new(MemoryStore::new()), cfg).await;
    let c1 = engine.get("wxc", AT).await.unwrap();
    let s1 = engine.get("wxs", AT).await.unwrap();

    // Young values: fifty suspicions cost nothing.
    for _ in 0..50 {
        assert_eq!(engine.report_suspect("wxc", AT).await.unwrap().value.expose(), c1.value.expose());
        assert_eq!(engine.report_suspect("wxs", AT).await.unwrap().value.expose(), s1.value.expose());
    }
    assert_eq!(sim.calls("wxc", PATH_TOKEN), 1);
    assert_eq!(sim.calls("wxs", PATH_STABLE_TOKEN), 1);

    // Past the guard: fifty at once are one report of the current value, one refresh.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let e = engine.clone();
        tasks.push(tokio::spawn(async move { e.report_suspect("wxc", AT).await }));
    }
    let mut seen = std::collections::HashSet::new();
    for t in tasks {
        seen.insert(t.await.unwrap().unwrap().value.expose().clone());
    }
    assert_eq!(sim.calls("wxc", PATH_TOKEN), 2, "one refresh for fifty suspicions");
    assert_eq!(seen.len(), 1, "all fifty get the new value");
    assert!(!seen.contains(c1.value.expose()));
    token_accepted(&sim, seen.iter().next().unwrap()).await.unwrap();
    // The stable token WeChat still holds is asked about once and kept (no force_refresh).
    let s2 = engine.report_suspect("wxs", AT).await.unwrap();
    assert_eq!(s2.value.expose(), s1.value.expose());
    assert_eq!(sim.calls("wxs", PATH_STABLE_TOKEN), 2);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_reports_stop_at_twenty_a_day() {
    let sim = sim(vec![sim_app("wxd", 7200)]).await;
    let cfg = EngineConfig { report_guard: Duration::ZERO, ..config("n1") };
    let engine = engine_with(
        &sim,
        vec![app("wxd", TokenApi::Classic, &[])],
        std::sync::Arc::new(MemoryStore::new()),
        cfg,
    )
    .await;
    engine.get("wxd", AT).await.unwrap();
    for _ in 0..30 {
        engine.report_suspect("wxd", AT).await.unwrap();
    }
    assert_eq!(sim.calls("wxd", PATH_TOKEN), 1 + 20, "twenty guarded refreshes, then the value is kept");
    engine.shutdown().await;
}
