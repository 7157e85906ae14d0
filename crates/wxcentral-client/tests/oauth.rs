//! Web authorization calls the simulator does not have (`/sns/oauth2/refresh_token`,
//! `/sns/userinfo`, `/sns/auth`), against a stand-in that answers as WeChat's docs show; and the
//! rule that a user token's error never refreshes the account's token.

use axum::Json;
use axum::extract::{Query, State};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use wechat_proto::Secret;
use wxcentral_client::{
    BoxFuture, Client, CredentialKind, Error, OAuthScope, Token, TokenSource, oauth2_authorize_url,
};

/// A source that must not be asked: these calls carry the user's token.
#[derive(Debug, Default)]
struct Untouched {
    asked: AtomicU64,
}

impl TokenSource for Untouched {
    fn token<'a>(&'a self, _: &'a str, _: CredentialKind) -> BoxFuture<'a, wxcentral_client::Result<Token>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err(Error::InvalidArgument("no app token here".into())) })
    }
    fn refresh<'a>(
        &'a self,
        _: &'a str,
        _: CredentialKind,
        _: &'a str,
    ) -> BoxFuture<'a, wxcentral_client::Result<Token>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err(Error::InvalidArgument("no app token here".into())) })
    }
}

#[derive(Default)]
struct Sns {
    requests: AtomicU64,
}

type Q = Query<HashMap<String, String>>;

fn err(code: i64, msg: &str) -> Json<Value> {
    Json(json!({ "errcode": code, "errmsg": format!("{msg} rid: 6650a1b2-0c3d4e5f-1a2b3c4d") }))
}

async fn refresh(State(s): State<Arc<Sns>>, Query(q): Q) -> Json<Value> {
    s.requests.fetch_add(1, Ordering::SeqCst);
    if q.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return err(40002, "invalid grant_type");
    }
    if q.get("appid").map(String::as_str) != Some("wxweb0000000000001") {
        return err(40013, "invalid appid");
    }
    match q.get("refresh_token").map(String::as_str) {
        Some("RT-good") => Json(json!({
            "access_token": "UT-new", "expires_in": 7200, "refresh_token": "RT-good",
            "openid": "oWeb1", "scope": "snsapi_userinfo"
        })),
        _ => err(40030, "invalid refresh_token"),
    }
}

async fn userinfo(State(s): State<Arc<Sns>>, Query(q): Q) -> Json<Value> {
    s.requests.fetch_add(1, Ordering::SeqCst);
    match (q.get("access_token").map(String::as_str), q.get("openid").map(String::as_str)) {
        (Some("UT-good"), Some("oWeb1")) => Json(json!({
            "openid": "oWeb1", "nickname": "微信用户", "sex": 0, "province": "", "city": "", "country": "",
            "headimgurl": "https://thirdwx.qlogo.cn/mmopen/x/132", "privilege": [],
            "unionid": "oUnion1", "lang": q.get("lang").cloned().unwrap_or_default()
        })),
        (Some("UT-good"), _) => err(40003, "invalid openid"),
        _ => err(40001, "invalid credential, access_token is invalid or not latest"),
    }
}

async fn auth(State(s): State<Arc<Sns>>, Query(q): Q) -> Json<Value> {
    s.requests.fetch_add(1, Ordering::SeqCst);
    match (q.get("access_token").map(String::as_str), q.get("openid").map(String::as_str)) {
        (Some("UT-good"), Some("oWeb1")) => Json(json!({ "errcode": 0, "errmsg": "ok" })),
        (Some("UT-good"), _) => err(40003, "invalid openid"),
        _ => err(42001, "access_token expired"),
    }
}

async fn setup() -> (Arc<Sns>, Arc<Untouched>, Client) {
    let sns = Arc::new(Sns::default());
    let app = axum::Router::new()
        .route("/sns/oauth2/refresh_token", get(refresh))
        .route("/sns/userinfo", get(userinfo))
        .route("/sns/auth", get(auth))
        .with_state(Arc::clone(&sns));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let source = Arc::new(Untouched::default());
    let client = Client::builder_shared(source.clone()).base_url(base).build().unwrap();
    (sns, source, client)
}

const WEB_APP: &str = "wxweb0000000000001";

#[tokio::test]
async fn refresh_token_gives_a_new_user_token() {
    let (sns, source, client) = setup().await;
    let t = client.oauth2_refresh_token(WEB_APP, &Secret::from("RT-good")).await.unwrap();
    assert_eq!((t.access_token.expose().as_str(), t.openid.as_str()), ("UT-new", "oWeb1"));
    let e = client.oauth2_refresh_token(WEB_APP, &Secret::from("RT-revoked")).await.unwrap_err();
    assert_eq!(e.errcode().map(|c| c.code()), Some(40030));
    assert!(!format!("{e:?}").contains("RT-revoked"));
    assert_eq!(sns.requests.load(Ordering::SeqCst), 2);
    assert_eq!(source.asked.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn userinfo_reads_the_profile_and_a_bad_user_token_refreshes_nothing() {
    let (sns, source, client) = setup().await;
    let u = client.oauth2_userinfo(&Secret::from("UT-good"), "oWeb1", Some("en")).await.unwrap();
    assert_eq!(
        (u.openid.as_str(), u.nickname.as_str(), u.unionid.as_deref()),
        ("oWeb1", "微信用户", Some("oUnion1"))
    );
    let e = client.oauth2_userinfo(&Secret::from("UT-stale"), "oWeb1", None).await.unwrap_err();
    assert_eq!(e.errcode().map(|c| c.code()), Some(40001));
    // 40001 on a user token: one request, and the account's token source never asked.
    assert_eq!(sns.requests.load(Ordering::SeqCst), 2);
    assert_eq!(source.asked.load(Ordering::SeqCst), 0);
    let e = client.oauth2_userinfo(&Secret::from("UT-good"), "oOther", None).await.unwrap_err();
    assert_eq!(e.errcode().map(|c| c.code()), Some(40003));
}

#[tokio::test]
async fn auth_check_tells_valid_from_expired() {
    let (sns, source, client) = setup().await;
    client.oauth2_check(&Secret::from("UT-good"), "oWeb1").await.unwrap();
    let e = client.oauth2_check(&Secret::from("UT-old"), "oWeb1").await.unwrap_err();
    assert_eq!(e.errcode().map(|c| c.code()), Some(42001));
    assert_eq!(sns.requests.load(Ordering::SeqCst), 2, "42001 on a user token is not retried");
    assert_eq!(source.asked.load(Ordering::SeqCst), 0);
}

#[test]
fn authorize_urls_carry_the_scope() {
    let url =
        oauth2_authorize_url(WEB_APP, "https://m.example.com/cb", OAuthScope::SnsapiUserinfo, "xyz").unwrap();
    assert!(url.contains("scope=snsapi_userinfo&state=xyz#wechat_redirect"), "{url}");
}
