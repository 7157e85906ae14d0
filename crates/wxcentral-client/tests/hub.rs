//! `HubSource` against a real wxcentral hub in front of a real simulator, and, where requests to
//! the hub must be counted, against a stand-in speaking the hub's wire types.

mod common;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wechat_proto::Secret;
use wechat_proto::api::{PATH_GET_API_DOMAIN_IP, PATH_GETTICKET, PATH_STABLE_TOKEN, PATH_TOKEN};
use wxcentral_client::{Client, CredentialKind, Error, HubSource, TokenSource};
use wxcentral_core::wire::{CredentialResponse, ErrorBody, ErrorDetail, RefreshRequest};

// ---- a real hub -----------------------------------------------------------------------------

#[tokio::test]
async fn with_the_hub_the_sdk_makes_no_token_call_of_its_own() {
    let app = appid();
    let sim = sim(&[&app]).await;
    let hub = Hub::start(&sim, &[&app]).await;
    let client = Client::builder(hub.source()).base_url(sim.base_url()).build().unwrap();
    let calls = (0..50).map(|_| client.get_api_domain_ip(&app));
    for r in futures::future::join_all(calls).await {
        assert!(!r.unwrap().is_empty());
    }
    let config = client.jssdk_config(&app, "https://shop.example.com/p?id=1#top").await.unwrap();
    assert_eq!(config.app_id, app);
    assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 50);
    // The hub's own fetches, one per credential; nothing from the SDK.
    assert_eq!(sim_calls(&sim, &app, PATH_STABLE_TOKEN).await, 1);
    assert_eq!(sim_calls(&sim, &app, PATH_GETTICKET).await, 1);
    assert_eq!(sim_calls(&sim, &app, PATH_TOKEN).await, 0);
    hub.stop().await;
}

#[tokio::test]
async fn a_token_killed_at_wechat_is_replaced_through_the_hubs_compare_and_refresh() {
    let app = appid();
    let sim = sim(&[&app]).await;
    let hub = Hub::start(&sim, &[&app]).await;
    let source = hub.source();
    let client = Client::builder(source.clone()).base_url(sim.base_url()).build().unwrap();
    client.get_api_domain_ip(&app).await.unwrap();
    let before = source.token(&app, CredentialKind::AccessToken).await.unwrap();
    invalidate(&sim, &app).await;
    client.get_api_domain_ip(&app).await.unwrap();
    let after = source.token(&app, CredentialKind::AccessToken).await.unwrap();
    assert_ne!(after.value, before.value);
    assert!(after.version > before.version);
    assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 3);
    assert_eq!(sim_calls(&sim, &app, PATH_STABLE_TOKEN).await, 2, "the hub refreshed once");
    // A late report of the old value changes nothing upstream.
    let again = source.refresh(&app, CredentialKind::AccessToken, before.value.expose()).await.unwrap();
    assert_eq!(again.value, after.value);
    assert_eq!(sim_calls(&sim, &app, PATH_STABLE_TOKEN).await, 2);
    hub.stop().await;
}

#[tokio::test]
async fn with_the_hub_40001_every_time_still_gives_exactly_two_calls() {
    let app = appid();
    let sim = sim(&[&app]).await;
    let hub = Hub::start(&sim, &[&app]).await;
    fault(
        &sim,
        json!({"endpoint": PATH_GET_API_DOMAIN_IP, "appid": app, "kind": "errcode", "errcode": 40001}),
    )
    .await;
    let client = Client::builder(hub.source()).base_url(sim.base_url()).build().unwrap();
    let err = client.get_api_domain_ip(&app).await.unwrap_err();
    assert_eq!(err.errcode().map(|c| c.code()), Some(40001));
    assert!(matches!(err, Error::WeChat { .. }));
    assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 2);
    assert_eq!(sim_calls(&sim, &app, PATH_TOKEN).await, 0);
    hub.stop().await;
}

#[tokio::test]
async fn through_the_hub_proxy_the_client_leaves_the_token_retry_to_the_hub() {
    let app = appid();
    let sim = sim(&[&app]).await;
    let hub = Hub::start(&sim, &[&app]).await;
    let client = Client::builder(hub.source()).hub_proxy(&hub.base).build().unwrap();
    assert!(!client.get_api_domain_ip(&app).await.unwrap().is_empty());
    assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 1);

    fault(
        &sim,
        json!({"endpoint": PATH_GET_API_DOMAIN_IP, "appid": app, "kind": "errcode", "errcode": 40001}),
    )
    .await;
    let err = client.get_api_domain_ip(&app).await.unwrap_err();
    assert_eq!(err.errcode().map(|c| c.code()), Some(40001));
    // The hub's call and its one retry; the client added none.
    assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 3);
    assert_eq!(sim_calls(&sim, &app, PATH_TOKEN).await, 0);
    hub.stop().await;
}

#[tokio::test]
async fn the_hubs_refusals_are_typed() {
    let app = appid();
    let sim = sim(&[&app]).await;
    let hub = Hub::start(&sim, &[&app]).await;
    let wrong = HubSource::new(&hub.base, "not-a-client-key").unwrap();
    match wrong.token(&app, CredentialKind::AccessToken).await.unwrap_err() {
        Error::Hub { status: 401, code, .. } => assert_eq!(code, "unauthorized"),
        other => panic!("{other:?}"),
    }
    match hub.source().token("wxnosuchapp0000000", CredentialKind::AccessToken).await.unwrap_err() {
        Error::Hub { status: 404, code, .. } => assert_eq!(code, "unknown_app"),
        other => panic!("{other:?}"),
    }
    let reader = HubSource::new(&hub.base, READ_ONLY_KEY).unwrap();
    let current = reader.token(&app, CredentialKind::AccessToken).await.unwrap();
    match reader.refresh(&app, CredentialKind::AccessToken, current.value.expose()).await.unwrap_err() {
        Error::Hub { status: 403, code, .. } => assert_eq!(code, "forbidden"),
        other => panic!("{other:?}"),
    }
    let gone = HubSource::new("http://127.0.0.1:9", HUB_KEY).unwrap();
    assert!(matches!(gone.token(&app, CredentialKind::AccessToken).await, Err(Error::Transport(_))));
    hub.stop().await;
}

// ---- a stand-in hub that counts ---------------------------------------------------------------

#[derive(Default)]
struct Stub {
    reads: AtomicU64,
    refreshes: AtomicU64,
    version: AtomicU64,
    reported: Mutex<Vec<String>>,
    expires_in: AtomicU64,
    failing: std::sync::atomic::AtomicBool,
}

type Answer = (StatusCode, Json<serde_json::Value>);

impl Stub {
    fn current(&self, appid: &str, kind: &str) -> Answer {
        let version = self.version.load(Ordering::SeqCst);
        let expires_in = self.expires_in.load(Ordering::SeqCst) as i64;
        let body = CredentialResponse {
            appid: appid.to_owned(),
            kind: kind.to_owned(),
            value: Secret::new(format!("TOKEN-{version}")),
            expires_at: 0,
            expires_in,
            version,
        };
        (StatusCode::OK, Json(serde_json::to_value(body).unwrap()))
    }

    fn failure(&self) -> Option<Answer> {
        self.failing.load(Ordering::SeqCst).then(|| {
            let body = ErrorBody {
                error: ErrorDetail {
                    code: "credential_unavailable".into(),
                    message: "no value".into(),
                    errcode: None,
                },
            };
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::to_value(body).unwrap()))
        })
    }
}

async fn stub_read(State(s): State<Arc<Stub>>, Path((appid, kind)): Path<(String, String)>) -> Answer {
    s.reads.fetch_add(1, Ordering::SeqCst);
    // Slow enough that concurrent callers overlap.
    tokio::time::sleep(Duration::from_millis(150)).await;
    s.failure().unwrap_or_else(|| s.current(&appid, &kind))
}

async fn stub_refresh(
    State(s): State<Arc<Stub>>,
    Path((appid, kind)): Path<(String, String)>,
    Json(req): Json<RefreshRequest>,
) -> Answer {
    s.refreshes.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let current = format!("TOKEN-{}", s.version.load(Ordering::SeqCst));
    if req.invalid == current {
        s.version.fetch_add(1, Ordering::SeqCst);
    }
    s.reported.lock().unwrap().push(req.invalid);
    s.current(&appid, &kind)
}

async fn stub_component(State(s): State<Arc<Stub>>, Path(appid): Path<String>) -> Answer {
    s.reads.fetch_add(1, Ordering::SeqCst);
    s.current(&appid, "component_access_token")
}

async fn stub_hub() -> (Arc<Stub>, HubSource) {
    let stub =
        Arc::new(Stub { version: AtomicU64::new(1), expires_in: AtomicU64::new(7200), ..Stub::default() });
    let app = axum::Router::new()
        .route("/v1/apps/{appid}/{kind}", get(stub_read))
        .route("/v1/apps/{appid}/{kind}/refresh", post(stub_refresh))
        .route("/v1/components/{appid}/component_access_token", get(stub_component))
        .with_state(Arc::clone(&stub));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (stub, HubSource::new(base, HUB_KEY).unwrap())
}

const APP: &str = "wx0123456789abcdef";

#[tokio::test]
async fn concurrent_callers_share_one_hub_request_and_the_cache_answers_the_rest() {
    let (stub, source) = stub_hub().await;
    let reads = (0..200).map(|_| source.token(APP, CredentialKind::AccessToken));
    for t in futures::future::join_all(reads).await {
        assert_eq!(t.unwrap().value.expose(), "TOKEN-1");
    }
    assert_eq!(stub.reads.load(Ordering::SeqCst), 1);
    let t = source.token(APP, CredentialKind::AccessToken).await.unwrap();
    assert_eq!((t.version, stub.reads.load(Ordering::SeqCst)), (1, 1));
    assert!(t.expires_in() > Duration::from_secs(7100));
    // Another kind is another credential.
    source.token(APP, CredentialKind::JsapiTicket).await.unwrap();
    assert_eq!(stub.reads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn refresh_is_compare_and_refresh_shared_by_every_caller_of_the_same_value() {
    let (stub, source) = stub_hub().await;
    source.token(APP, CredentialKind::AccessToken).await.unwrap();
    // A value that is no longer current: answered from the cache, nobody asked.
    let t = source.refresh(APP, CredentialKind::AccessToken, "TOKEN-0").await.unwrap();
    assert_eq!(t.value.expose(), "TOKEN-1");
    assert_eq!(stub.refreshes.load(Ordering::SeqCst), 0);

    let reports = (0..100).map(|_| source.refresh(APP, CredentialKind::AccessToken, "TOKEN-1"));
    for t in futures::future::join_all(reports).await {
        assert_eq!(t.unwrap().value.expose(), "TOKEN-2");
    }
    assert_eq!(stub.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(*stub.reported.lock().unwrap(), ["TOKEN-1"]);
    // The new value is cached.
    assert_eq!(source.token(APP, CredentialKind::AccessToken).await.unwrap().version, 2);
    assert_eq!(stub.reads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_value_near_its_expiry_is_fetched_again() {
    let (stub, source) = stub_hub().await;
    stub.expires_in.store(2, Ordering::SeqCst);
    source.token(APP, CredentialKind::AccessToken).await.unwrap();
    source.token(APP, CredentialKind::AccessToken).await.unwrap();
    assert_eq!(stub.reads.load(Ordering::SeqCst), 1);
    // 2 s of life keeps a 0.2 s margin: at 1.85 s it is no longer served from the cache.
    tokio::time::sleep(Duration::from_millis(1850)).await;
    source.token(APP, CredentialKind::AccessToken).await.unwrap();
    assert_eq!(stub.reads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_failed_fetch_is_shared_too_and_the_next_call_tries_again() {
    let (stub, source) = stub_hub().await;
    stub.failing.store(true, Ordering::SeqCst);
    let reads = (0..50).map(|_| source.token(APP, CredentialKind::AccessToken));
    for r in futures::future::join_all(reads).await {
        match r.unwrap_err() {
            Error::Hub { status: 503, code, .. } => assert_eq!(code, "credential_unavailable"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(stub.reads.load(Ordering::SeqCst), 1);
    stub.failing.store(false, Ordering::SeqCst);
    assert_eq!(source.token(APP, CredentialKind::AccessToken).await.unwrap().version, 1);
    assert_eq!(stub.reads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn through_the_hub_proxy_a_client_key_stands_in_for_the_app_secret() {
    let app = appid();
    let sim = sim(&[&app]).await;
    let hub = Hub::start(&sim, &[&app]).await;
    let client = Client::builder(hub.source()).hub_proxy(&hub.base).build().unwrap();
    let key = Secret::from(HUB_KEY);
    let session = client.jscode2session(&app, &key, "login-1").await.unwrap();
    assert!(!session.openid.is_empty());
    let used = client.jscode2session(&app, &key, "login-1").await.unwrap_err();
    assert_eq!(used.errcode().map(|c| c.code()), Some(40163));
    let t = client.oauth2_access_token(&app, &key, "consent-1").await.unwrap();
    assert!(!t.openid.is_empty());
    // A key the hub does not know is refused by the hub, which never forwards it.
    let wrong = client.jscode2session(&app, &Secret::from("not-a-key"), "login-2").await.unwrap_err();
    assert_eq!(wrong.errcode().map(|c| c.code()), Some(40125), "{wrong:?}");
    assert_eq!(sim_calls(&sim, &app, wechat_proto::api::PATH_JSCODE2SESSION).await, 2);
    hub.stop().await;
}

#[tokio::test]
async fn component_tokens_are_read_from_the_component_route_and_refreshed_by_reading_again() {
    let (stub, source) = stub_hub().await;
    let t = source.token(APP, CredentialKind::ComponentAccessToken).await.unwrap();
    assert_eq!((t.value.expose().as_str(), stub.reads.load(Ordering::SeqCst)), ("TOKEN-1", 1));
    // The hub keeps component tokens itself: a report reads the current value again.
    stub.version.store(2, Ordering::SeqCst);
    let t = source.refresh(APP, CredentialKind::ComponentAccessToken, "TOKEN-1").await.unwrap();
    assert_eq!(t.value.expose(), "TOKEN-2");
    assert_eq!((stub.reads.load(Ordering::SeqCst), stub.refreshes.load(Ordering::SeqCst)), (2, 0));
}
