use crate::common::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use wechat_proto::api::{PATH_STABLE_TOKEN, PATH_TOKEN};
use wechat_sim::FaultKind;
use wxcentral_core::{CredentialKind, Error, TokenApi};

const AT: CredentialKind = CredentialKind::AccessToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_gets_of_an_absent_credential_make_one_call() {
    let sim = sim(vec![sim_app("wxclassic", 7200), sim_app("wxstable", 7200)]).await;
    // Slow the first fetch down so every read arrives while it is in flight.
    let mut slow = fault(PATH_TOKEN, None, FaultKind::Delay);
    slow.delay_ms = Some(300);
    slow.count = Some(1);
    add_fault(&sim, slow);
    let mut slow = fault(PATH_STABLE_TOKEN, None, FaultKind::Delay);
    slow.delay_ms = Some(300);
    slow.count = Some(1);
    add_fault(&sim, slow);
    let engine =
        engine(&sim, vec![app("wxclassic", TokenApi::Classic, &[]), app("wxstable", TokenApi::Stable, &[])])
            .await;

    let mut tasks = Vec::new();
    for i in 0..10_000 {
        let engine = engine.clone();
        let appid = if i % 2 == 0 { "wxclassic" } else { "wxstable" };
        tasks.push(tokio::spawn(async move { (appid, engine.get(appid, AT).await) }));
    }
    let mut values: std::collections::HashMap<&str, HashSet<String>> = Default::default();
    for t in tasks {
        let (appid, r) = t.await.unwrap();
        values.entry(appid).or_default().insert(r.expect("every read gets a value").value.expose().clone());
    }
    assert_eq!(values["wxclassic"].len(), 1, "all readers see one value");
    assert_eq!(values["wxstable"].len(), 1, "all readers see one value");
    assert_eq!(sim.calls("wxclassic", PATH_TOKEN), 1);
    assert_eq!(sim.calls("wxstable", PATH_STABLE_TOKEN), 1);
    for v in values.values().flatten() {
        token_accepted(&sim, v).await.expect("the value works");
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reports_of_the_current_value_share_one_refresh() {
    let sim = sim(vec![sim_app("wxa", 7200)]).await;
    let engine = engine(&sim, vec![app("wxa", TokenApi::Classic, &[])]).await;
    let v1 = engine.get("wxa", AT).await.unwrap();
    assert_eq!(sim.calls("wxa", PATH_TOKEN), 1);

    let mut slow = fault(PATH_TOKEN, Some("wxa"), FaultKind::Delay);
    slow.delay_ms = Some(200);
    slow.count = Some(1);
    add_fault(&sim, slow);
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (engine, old) = (engine.clone(), v1.value.expose().clone());
        tasks.push(tokio::spawn(async move { engine.report_invalid("wxa", AT, &old).await }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        let c = t.await.unwrap().expect("report answered with a value");
        seen.insert((c.value.expose().clone(), c.version));
    }
    assert_eq!(seen.len(), 1, "every reporter sees the same new value");
    let (v2, version2) = seen.into_iter().next().unwrap();
    assert_ne!(&v2, v1.value.expose());
    assert!(version2 > v1.version);
    assert_eq!(sim.calls("wxa", PATH_TOKEN), 2, "1000 reports, one refresh");

    // Reports of the replaced value, or of anything not current, cost nothing.
    for stale in [v1.value.expose().as_str(), "not-a-token-we-ever-issued", ""] {
        let c = engine.report_invalid("wxa", AT, stale).await.unwrap();
        assert_eq!(c.value.expose(), &v2);
    }
    assert_eq!(sim.calls("wxa", PATH_TOKEN), 2);
    token_accepted(&sim, &v2).await.unwrap();
    // The old classic token still works for the overlap (WeChat: ~5 min).
    token_accepted(&sim, v1.value.expose()).await.unwrap();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_stable_refresh_rotates_once_then_reports_the_limit() {
    let sim = sim(vec![sim_app("wxa", 7200)]).await;
    let engine = engine(&sim, vec![app("wxa", TokenApi::Stable, &[])]).await;
    let v1 = engine.get("wxa", AT).await.unwrap();
    let f1 = engine.force_refresh_detailed("wxa", AT).await.unwrap();
    assert!(f1.rotated);
    assert_ne!(f1.credential.value, v1.value);
    assert!(f1.credential.version > v1.version);
    // force_refresh revokes the old stable token at WeChat.
    assert!(token_accepted(&sim, v1.value.expose()).await.is_err());
    token_accepted(&sim, f1.credential.value.expose()).await.unwrap();
    // WeChat allows one forced refresh per 30 s: the same token comes back, and we say so.
    let f2 = engine.force_refresh_detailed("wxa", AT).await.unwrap();
    assert!(!f2.rotated);
    assert_eq!(f2.credential.value, f1.credential.value);
    assert_eq!(f2.credential.version, f1.credential.version);
    assert_eq!(sim.calls("wxa", PATH_STABLE_TOKEN), 3);
    assert_eq!(engine.get("wxa", AT).await.unwrap().value, f1.credential.value);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_apps_and_kinds_are_errors_without_calls() {
    let sim = sim(vec![sim_app("wxa", 7200)]).await;
    let engine = engine(&sim, vec![app("wxa", TokenApi::Classic, &[])]).await;
    assert!(matches!(engine.get("wxnope", AT).await, Err(Error::UnknownApp(a)) if a == "wxnope"));
    assert!(matches!(
        engine.get("wxa", CredentialKind::JsapiTicket).await,
        Err(Error::UnknownCredential { kind: CredentialKind::JsapiTicket, .. })
    ));
    assert!(matches!(engine.report_invalid("wxnope", AT, "x").await, Err(Error::UnknownApp(_))));
    assert!(matches!(engine.force_refresh("wxnope", AT).await, Err(Error::UnknownApp(_))));
    engine.shutdown().await;
}

/// What the engine starts for a caller (an app's refresh loop, a refresh) runs on the runtime the
/// engine was started on: a caller on a runtime of its own (the server's connection workers are
/// such runtimes) may go away in the middle without taking the work along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_asked_for_from_a_runtime_that_goes_away_still_completes() {
    let sim = sim(vec![sim_app("wxa", 7200), sim_app("wxlate", 7200)]).await;
    // Slow enough that no fetch could finish on the caller's runtime before it is gone.
    let mut slow = fault(PATH_TOKEN, Some("wxlate"), FaultKind::Delay);
    slow.delay_ms = Some(400);
    add_fault(&sim, slow);
    let engine = engine(&sim, vec![app("wxa", TokenApi::Classic, &[])]).await;
    let caller = Arc::clone(&engine);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            caller.put_app(app("wxlate", TokenApi::Classic, &[])).await.unwrap();
            // A read that starts the fetch (or joins the loop's) and is given up on.
            let read = caller.get("wxlate", AT);
            assert!(tokio::time::timeout(Duration::from_millis(100), read).await.is_err());
        });
        // The caller's runtime is dropped here, with whatever it was running.
    })
    .join()
    .unwrap();
    // Nobody asks again: the value still arrives, from the fetch already under way.
    let mut changes = engine.subscribe("wxlate", AT).unwrap();
    let arrived = tokio::time::timeout(Duration::from_secs(5), changes.wait_for(|v| *v > 0)).await;
    assert!(matches!(arrived, Ok(Ok(_))), "no value arrived after the caller's runtime went away");
    let value = engine.get("wxlate", AT).await.unwrap();
    assert_eq!(token_accepted(&sim, value.value.expose()).await, Ok(()));
    assert_eq!(sim.calls("wxlate", PATH_TOKEN), 1, "one fetch, not one per caller");
    engine.shutdown().await;
}
