//! The client's two retries against a real simulator: one after a token error, through
//! compare-and-refresh with the value it sent; one after -1; never more; both switchable.

mod common;

use common::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wechat_proto::api::{PATH_GET_API_DOMAIN_IP, PATH_STABLE_TOKEN, PATH_TOKEN};
use wxcentral_client::{
    BoxFuture, CallOptions, Client, CredentialKind, EngineSource, Error, Token, TokenSource,
};

/// An engine source that remembers every value it handed out and every value reported failed.
#[derive(Debug)]
struct Recording {
    inner: EngineSource,
    handed: Mutex<Vec<String>>,
    failed: Mutex<Vec<String>>,
}

impl Recording {
    fn new(inner: EngineSource) -> Arc<Self> {
        Arc::new(Self { inner, handed: Mutex::default(), failed: Mutex::default() })
    }
    fn handed(&self) -> Vec<String> {
        self.handed.lock().unwrap().clone()
    }
    fn failed(&self) -> Vec<String> {
        self.failed.lock().unwrap().clone()
    }
}

impl TokenSource for Recording {
    fn token<'a>(
        &'a self,
        appid: &'a str,
        kind: CredentialKind,
    ) -> BoxFuture<'a, wxcentral_client::Result<Token>> {
        Box::pin(async move {
            let t = self.inner.token(appid, kind).await?;
            self.handed.lock().unwrap().push(t.value.expose().clone());
            Ok(t)
        })
    }
    fn refresh<'a>(
        &'a self,
        appid: &'a str,
        kind: CredentialKind,
        failed: &'a str,
    ) -> BoxFuture<'a, wxcentral_client::Result<Token>> {
        Box::pin(async move {
            self.failed.lock().unwrap().push(failed.to_owned());
            let t = self.inner.refresh(appid, kind, failed).await?;
            self.handed.lock().unwrap().push(t.value.expose().clone());
            Ok(t)
        })
    }
}

async fn setup() -> (wechat_sim::SimHandle, String, Arc<Recording>, Client) {
    let app = appid();
    let sim = sim(&[&app]).await;
    let engine = engine(&sim, &[&app]).await;
    let source = Recording::new(EngineSource::new(engine));
    let client = Client::builder_shared(source.clone())
        .base_url(sim.base_url())
        .busy_backoff(Duration::from_millis(150))
        .build()
        .unwrap();
    (sim, app, source, client)
}

async fn always(sim: &wechat_sim::SimHandle, app: &str, errcode: i64) {
    fault(
        sim,
        json!({"endpoint": PATH_GET_API_DOMAIN_IP, "appid": app, "kind": "errcode", "errcode": errcode}),
    )
    .await;
}

#[tokio::test]
async fn a_token_error_every_time_gives_exactly_two_calls_and_a_typed_error() {
    for code in [40001, 40014, 42001] {
        let (sim, app, source, client) = setup().await;
        always(&sim, &app, code).await;
        let err = client.get_api_domain_ip(&app).await.unwrap_err();
        match &err {
            Error::WeChat { errcode, errmsg, raw } => {
                assert_eq!(errcode.code(), code);
                assert!(!errmsg.is_empty());
                assert!(raw.contains(&code.to_string()), "{raw}");
            }
            other => panic!("{code}: {other:?}"),
        }
        assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 2, "errcode {code}");
        // The refresh was a compare-and-refresh with exactly the value the first call carried.
        let handed = source.handed();
        assert_eq!(source.failed(), vec![handed[0].clone()], "errcode {code}");
        assert_eq!(handed.len(), 2);
        // No token value in what a caller would log.
        for shown in [format!("{err:?}"), err.to_string()] {
            for t in &handed {
                assert!(!shown.contains(t.as_str()), "{shown}");
            }
        }
    }
}

#[tokio::test]
async fn a_token_killed_behind_the_clients_back_is_replaced_and_the_call_succeeds() {
    let (sim, app, source, client) = setup().await;
    assert!(!client.get_api_domain_ip(&app).await.unwrap().is_empty());
    let fetched = sim_calls(&sim, &app, PATH_STABLE_TOKEN).await;
    assert_eq!(fetched, 1);
    invalidate(&sim, &app).await;
    let ips = client.get_api_domain_ip(&app).await.unwrap();
    assert!(!ips.is_empty());
    assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 3, "1 + the failed call + its retry");
    assert_eq!(sim_calls(&sim, &app, PATH_STABLE_TOKEN).await, 2, "one refresh");
    let handed = source.handed();
    assert_eq!(source.failed(), vec![handed[1].clone()]);
    assert_ne!(handed[2], handed[1], "the retry carried the new token");
}

#[tokio::test]
async fn busy_is_retried_once_after_the_backoff() {
    let (sim, app, source, client) = setup().await;
    fault(&sim, json!({"endpoint": PATH_GET_API_DOMAIN_IP, "appid": app, "kind": "errcode", "errcode": -1, "count": 1}))
        .await;
    let started = Instant::now();
    assert!(!client.get_api_domain_ip(&app).await.unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(150), "{:?}", started.elapsed());
    assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 2);
    assert!(source.failed().is_empty(), "-1 is not a token error");

    always(&sim, &app, -1).await;
    let err = client.get_api_domain_ip(&app).await.unwrap_err();
    assert_eq!(err.errcode().map(|c| c.code()), Some(-1));
    assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 4, "two more, not three");
}

#[tokio::test]
async fn each_reason_is_retried_at_most_once_in_one_call() {
    let (sim, app, source, client) = setup().await;
    fault(&sim, json!({"endpoint": PATH_GET_API_DOMAIN_IP, "appid": app, "kind": "errcode", "errcode": -1, "count": 1}))
        .await;
    always(&sim, &app, 40001).await;
    let err = client.get_api_domain_ip(&app).await.unwrap_err();
    assert_eq!(err.errcode().map(|c| c.code()), Some(40001));
    // -1, then 40001, then 40001 again after the one refresh.
    assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 3);
    assert_eq!(source.failed().len(), 1);
}

#[tokio::test]
async fn retries_can_be_turned_off_per_call() {
    let (sim, app, source, client) = setup().await;
    always(&sim, &app, 40001).await;
    let once =
        client.get_json::<serde_json::Value>(&app, PATH_GET_API_DOMAIN_IP, &[], CallOptions::once()).await;
    assert_eq!(once.unwrap_err().errcode().map(|c| c.code()), Some(40001));
    assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 1);
    assert!(source.failed().is_empty(), "no refresh without reload");

    // The typed calls follow the options the client carries.
    let err = client
        .with_options(CallOptions::default().reload_access_token(false))
        .get_api_domain_ip(&app)
        .await
        .unwrap_err();
    assert_eq!(err.errcode().map(|c| c.code()), Some(40001));
    assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 2);

    let (sim, app, _, client) = setup().await;
    always(&sim, &app, -1).await;
    let opts = CallOptions::default().retryable(false);
    let err =
        client.get_json::<serde_json::Value>(&app, PATH_GET_API_DOMAIN_IP, &[], opts).await.unwrap_err();
    assert_eq!(err.errcode().map(|c| c.code()), Some(-1));
    assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 1);
}

#[tokio::test]
async fn other_errcodes_statuses_and_garbage_are_not_retried() {
    let (sim, app, source, client) = setup().await;
    always(&sim, &app, 45009).await;
    let err = client.get_api_domain_ip(&app).await.unwrap_err();
    assert_eq!(err.errcode().map(|c| c.code()), Some(45009));
    assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 1);

    let (sim, app, _, client) = setup().await;
    fault(&sim, json!({"endpoint": PATH_GET_API_DOMAIN_IP, "appid": app, "kind": "status", "status": 502}))
        .await;
    let err = client.get_api_domain_ip(&app).await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 502, .. }), "{err:?}");
    assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 1);

    let (sim, app, _, client) = setup().await;
    fault(&sim, json!({"endpoint": PATH_GET_API_DOMAIN_IP, "appid": app, "kind": "malformed"})).await;
    let err = client.get_api_domain_ip(&app).await.unwrap_err();
    assert!(matches!(err, Error::Malformed { .. }), "{err:?}");
    assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 1);
    assert!(source.failed().is_empty());
}

#[tokio::test]
async fn a_call_that_outlives_its_budget_is_a_timeout_without_the_token_in_it() {
    let (sim, app, source, client) = setup().await;
    fault(&sim, json!({"endpoint": PATH_GET_API_DOMAIN_IP, "appid": app, "kind": "timeout"})).await;
    let opts = CallOptions::default().timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err =
        client.get_json::<serde_json::Value>(&app, PATH_GET_API_DOMAIN_IP, &[], opts).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let token = source.handed().pop().unwrap();
    for shown in [format!("{err:?}"), err.to_string(), format!("{:?}", std::error::Error::source(&err))] {
        assert!(!shown.contains(&token), "{shown}");
        assert!(!shown.contains("access_token="), "{shown}");
    }
    assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 1);
    assert_eq!(sim_calls(&sim, &app, PATH_TOKEN).await, 0);
}
