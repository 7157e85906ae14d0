use crate::common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wechat_proto::api::PATH_TOKEN;
use wechat_sim::{FaultKind, FaultSpec, SimHandle};
use wxcentral_core::store::MemoryStore;
use wxcentral_core::{CredentialKind, Engine, Error, TokenApi};

const AT: CredentialKind = CredentialKind::AccessToken;

struct Case {
    appid: &'static str,
    spec: FaultSpec,
    /// `stopped` for quota / whitelist, `failing` for transient faults.
    state: &'static str,
    reason: &'static str,
}

fn cases() -> Vec<Case> {
    let mk = |appid: &'static str, kind, f: &dyn Fn(&mut FaultSpec), state, reason| {
        let mut spec = fault(PATH_TOKEN, Some(appid), kind);
        f(&mut spec);
        Case { appid, spec, state, reason }
    };
    vec![
        mk("wxbusy", FaultKind::Errcode, &|s| s.errcode = Some(-1), "failing", "errcode -1"),
        mk("wx500", FaultKind::Status, &|s| s.status = Some(500), "failing", "http 500"),
        mk("wxhang", FaultKind::Timeout, &|_| {}, "failing", "timeout"),
        mk("wxgarbage", FaultKind::Malformed, &|_| {}, "failing", "malformed response"),
        mk("wxquota", FaultKind::Errcode, &|s| s.errcode = Some(45009), "stopped", "errcode 45009"),
        mk("wxwhitelist", FaultKind::Errcode, &|s| s.errcode = Some(40164), "stopped", "errcode 40164"),
    ]
}

/// Reads until `until`, checking that every read succeeds with a value WeChat accepts.
async fn reads_keep_succeeding(sim: &SimHandle, engine: &Arc<Engine>, appid: &str, until: i64) -> String {
    let mut value = None;
    while now_ms() < until {
        let c =
            engine.get(appid, AT).await.unwrap_or_else(|e| panic!("{appid}: read failed while valid: {e:?}"));
        token_accepted(sim, c.value.expose()).await.unwrap_or_else(|code| panic!("{appid}: rejected {code}"));
        value = Some(c.value.expose().clone());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    value.unwrap()
}

/// Every fault kind at once, each on its own app: a valid value held carries reads through the
/// fault; once it runs out reads answer Unavailable (never the expired value); when the fault
/// clears the credential recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_while_valid_keep_reads_going_then_unavailable_then_recovery() {
    let cases = cases();
    // ttl 6 s: refresh from 3 s before expiry, served until 0.6 s before.
    let sim = sim(cases.iter().map(|c| sim_app(c.appid, 6)).collect()).await;
    let mut cfg = config("n1");
    cfg.read_wait = Duration::from_millis(500);
    let apps = cases.iter().map(|c| app(c.appid, TokenApi::Classic, &[])).collect();
    let engine = engine_with(&sim, apps, Arc::new(MemoryStore::new()), cfg).await;
    let mut first = Vec::new();
    for c in &cases {
        first.push(engine.get(c.appid, AT).await.unwrap());
    }
    for c in &cases {
        add_fault(&sim, c.spec.clone());
    }
    let serve_end = first.iter().map(|c| c.expires_at_ms - 600).min().unwrap();
    let results = futures::future::join_all(cases.iter().zip(&first).map(|(c, f)| {
        let (sim, engine) = (&sim, &engine);
        async move {
            let held = reads_keep_succeeding(sim, engine, c.appid, serve_end - 100).await;
            assert_eq!(&held, f.value.expose(), "{}: the held value is served through the fault", c.appid);
        }
    }))
    .await;
    assert_eq!(results.len(), cases.len());

    // Status shows the fault while the value is still held.
    let status = engine.status();
    for c in &cases {
        let s = &status.iter().find(|s| s.appid == c.appid).unwrap().credentials[0];
        assert_eq!(s.state, c.state, "{}: {s:?}", c.appid);
        assert_eq!(s.last_error.as_deref(), Some(c.reason), "{}", c.appid);
        assert!(s.consecutive_failures >= 1);
    }

    // Past the serve margin: Unavailable with a reason and a retry-after, never the old value.
    tokio::time::sleep(Duration::from_millis(
        (first.iter().map(|c| c.expires_at_ms).max().unwrap() - 600 - now_ms()).max(0) as u64 + 50,
    ))
    .await;
    for c in &cases {
        let t0 = Instant::now();
        match engine.get(c.appid, AT).await {
            Err(Error::Unavailable { retry_after, reason, .. }) => {
                assert!(retry_after >= Duration::from_secs(1), "{}: {retry_after:?}", c.appid);
                assert!(reason.is_some(), "{}: a reason is given", c.appid);
            }
            other => panic!("{}: expected Unavailable, got {other:?}", c.appid),
        }
        assert!(t0.elapsed() < Duration::from_millis(1500), "{}: bounded wait {:?}", c.appid, t0.elapsed());
    }
    let calls_stopped: Vec<u64> =
        ["wxquota", "wxwhitelist"].iter().map(|a| sim.calls(a, PATH_TOKEN)).collect();
    let calls_busy = sim.calls("wxbusy", PATH_TOKEN);

    // Recovery without any help once WeChat works again.
    sim.simulator().clear_faults();
    let deadline = Instant::now() + Duration::from_secs(12);
    for (c, f) in cases.iter().zip(&first) {
        loop {
            match engine.get(c.appid, AT).await {
                Ok(v) => {
                    assert_ne!(v.value, f.value, "{}", c.appid);
                    token_accepted(&sim, v.value.expose()).await.unwrap();
                    break;
                }
                Err(Error::Unavailable { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("{}: did not recover: {e:?}", c.appid),
            }
        }
    }
    let status = engine.status();
    assert!(status.iter().all(|s| s.credentials[0].state == "valid"), "{status:?}");

    // Stopped credentials were not hammered: ~3 s of failing made a couple of calls each,
    // against about a dozen for the transient fault with its 0.1–0.6 s steps.
    for n in &calls_stopped {
        assert!(*n <= 4, "stopped credential called {n} times");
    }
    assert!(calls_busy > 4 && calls_busy < 40, "busy credential called {calls_busy} times");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_valid_many_readers_make_bounded_calls_and_get_unavailable() {
    let sim = sim(vec![sim_app("wxa", 7200)]).await;
    let mut busy = fault(PATH_TOKEN, Some("wxa"), FaultKind::Errcode);
    busy.errcode = Some(-1);
    add_fault(&sim, busy);
    let mut cfg = config("n1");
    cfg.read_wait = Duration::from_millis(300);
    let engine =
        engine_with(&sim, vec![app("wxa", TokenApi::Classic, &[])], Arc::new(MemoryStore::new()), cfg).await;
    let start = Instant::now();
    let readers: Vec<_> = (0..200)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while start.elapsed() < Duration::from_secs(3) {
                    match engine.get("wxa", AT).await {
                        Err(Error::Unavailable { retry_after, reason, .. }) => {
                            assert!(retry_after >= Duration::from_secs(1));
                            assert_eq!(reason.as_deref(), Some("errcode -1"));
                        }
                        other => panic!("expected Unavailable, got {other:?}"),
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                n
            })
        })
        .collect();
    let mut reads = 0;
    for r in readers {
        reads += r.await.unwrap();
    }
    let calls = sim.calls("wxa", PATH_TOKEN);
    // Backoff 1 s, 2 s (jittered down by up to 20 %) with a 7200 s default lifetime: 3–4 calls
    // in 3 s, whatever the thousands of reads.
    assert!(reads > 1000, "{reads} reads");
    assert!((2..=5).contains(&calls), "{calls} calls for {reads} reads");
    let st = &engine.status()[0].credentials[0];
    assert_eq!((st.state, st.last_error.as_deref()), ("failing", Some("errcode -1")));
    assert!(st.next_refresh_ms.is_some());
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_secret_stops_fast_retries_and_reads_say_why() {
    let sim = sim(vec![sim_app("wxa", 7200)]).await;
    let mut spec = app("wxa", TokenApi::Stable, &[]);
    spec.secret = "wrong-secret".into();
    let mut cfg = config("n1");
    cfg.read_wait = Duration::from_millis(300);
    let engine = engine_with(&sim, vec![spec], Arc::new(MemoryStore::new()), cfg).await;
    match engine.get("wxa", AT).await {
        Err(Error::Unavailable { retry_after, reason, .. }) => {
            assert_eq!(reason.as_deref(), Some("errcode 40125"));
            // Config faults retry once a minute with WeChat's lifetimes.
            assert!(retry_after >= Duration::from_secs(50), "{retry_after:?}");
        }
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        engine.get("wxa", AT).await.unwrap_err().to_string(),
        "credential access_token of wxa is unavailable"
    );
    assert_eq!(sim.calls("wxa", wechat_proto::api::PATH_STABLE_TOKEN), 1);
    let st = &engine.status()[0].credentials[0];
    assert_eq!((st.state, st.last_error.as_deref()), ("stopped", Some("errcode 40125")));
    // An admin's forced refresh bypasses the stop and reports WeChat's answer.
    match engine.force_refresh("wxa", AT).await {
        Err(Error::UpstreamRejected { errcode, .. }) => assert_eq!(errcode.code(), 40125),
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.calls("wxa", wechat_proto::api::PATH_STABLE_TOKEN), 2);
    engine.shutdown().await;
}

#[tokio::test]
async fn an_absurd_expires_in_is_an_upstream_error() {
    // A lifetime of more than a day: no value is kept, reads get 503 with the reason.
    let sim = sim(vec![sim_app("wxforever", 200_000)]).await;
    let engine = engine(&sim, vec![app("wxforever", TokenApi::Stable, &[])]).await;
    match engine.get("wxforever", AT).await {
        Err(Error::Unavailable { reason: Some(r), .. }) => assert!(r.contains("beyond a day"), "{r}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    let status = engine.status();
    assert_eq!(status[0].credentials[0].state, "failing");
}
