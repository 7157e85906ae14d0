//! The open-platform additions: authorizer list and info, `api_start_push_ticket`, refresh-token
//! rotation, push retries, `updateauthorized`, bulk authorizers, and authorizer tokens on
//! tickets and business APIs.

use crate::common::*;
use axum::extract::{Query, State};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use wechat_proto::api::{
    AuthorizerInfoResponse, AuthorizerListResponse, ComponentNotification, PATH_AUTHORIZER_TOKEN,
    PATH_GET_AUTHORIZER_INFO, PATH_GET_AUTHORIZER_LIST, PATH_GETTICKET, PATH_START_PUSH_TICKET,
};
use wechat_proto::crypto::MsgCrypt;
use wechat_sim::{SimComponent, SimConfig};

const COMP: &str = "wxc0mp0nent0000002";
const COMP_SECRET: &str = "component-secret-2";
const MSG_TOKEN: &str = "component-msg-token-2";
const AES_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const LIST: &str = "/cgi-bin/component/api_get_authorizer_list";
const INFO: &str = "/cgi-bin/component/api_get_authorizer_info";
const REFRESH: &str = "/cgi-bin/component/api_authorizer_token";
const QUERY_AUTH: &str = "/cgi-bin/component/api_query_auth";

/// One delivery as the callback saw it.
#[derive(Debug)]
struct Delivery {
    query: HashMap<String, String>,
    n: ComponentNotification,
}

#[derive(Clone)]
struct Receiver {
    crypt: MsgCrypt,
    tx: mpsc::UnboundedSender<Delivery>,
    /// Deliveries still to refuse (answered `fail`): the next ones are acknowledged.
    fail: Arc<AtomicUsize>,
}

async fn callback(
    State(r): State<Receiver>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> (StatusCode, &'static str) {
    let (Some(ts), Some(nonce), Some(msg_sig)) = (q.get("timestamp"), q.get("nonce"), q.get("msg_signature"))
    else {
        return (StatusCode::BAD_REQUEST, "missing query");
    };
    let Ok(xml) = r.crypt.decrypt_message(msg_sig, ts, nonce, &body) else {
        return (StatusCode::FORBIDDEN, "bad msg_signature or ciphertext");
    };
    let Ok(n) = ComponentNotification::from_xml(&xml) else {
        return (StatusCode::BAD_REQUEST, "bad xml");
    };
    let refuse = r.fail.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1)).is_ok();
    let _ = r.tx.send(Delivery { query: q, n });
    if refuse { (StatusCode::OK, "fail") } else { (StatusCode::OK, "success") }
}

struct Callback {
    url: String,
    rx: mpsc::UnboundedReceiver<Delivery>,
    fail: Arc<AtomicUsize>,
}

async fn receiver() -> Callback {
    let (tx, rx) = mpsc::unbounded_channel();
    let fail = Arc::new(AtomicUsize::new(0));
    let crypt = MsgCrypt::new(MSG_TOKEN, AES_KEY, COMP).unwrap();
    let app = axum::Router::new().route("/cb", axum::routing::post(callback)).with_state(Receiver {
        crypt,
        tx,
        fail: fail.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Callback { url, rx, fail }
}

impl Callback {
    async fn next(&mut self) -> Delivery {
        tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("a push within 5 s")
            .unwrap()
    }

    async fn next_ticket(&mut self) -> (String, i64) {
        match self.next().await.n {
            ComponentNotification::VerifyTicket { ticket, create_time, .. } => {
                (ticket.expose().clone(), create_time)
            }
            other => panic!("expected a verify ticket, got {other:?}"),
        }
    }

    /// Nothing more arrives within `ms`.
    async fn quiet(&mut self, ms: u64) {
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(ms), self.rx.recv()).await {
            panic!("unexpected push {d:?}");
        }
    }
}

fn comp() -> SimComponent {
    SimComponent::new(COMP, COMP_SECRET, MSG_TOKEN, AES_KEY)
}

/// A component token, the ticket fetched from the control API (works with or without push_url).
async fn ctoken(sim: &Sim) -> String {
    let (_, v) = sim.post("/__sim/push_ticket", json!({ "component_appid": COMP })).await;
    let body = json!({ "component_appid": COMP, "component_appsecret": COMP_SECRET, "component_verify_ticket": v["ticket"] });
    let (_, v) = sim.post("/cgi-bin/component/api_component_token", body).await;
    v["component_access_token"].as_str().unwrap_or_else(|| panic!("no component token: {v}")).to_owned()
}

/// `count` authorizers made by `POST /__sim/authorizers`: (appid, refresh token).
async fn bulk(sim: &Sim, count: u64) -> Vec<(String, String)> {
    let (s, v) = sim.post("/__sim/authorizers", json!({ "component_appid": COMP, "count": count })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["authorizers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["authorizer_appid"].as_str().unwrap().to_owned(),
                a["refresh_token"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn list(sim: &Sim, ct: &str, offset: Value, count: Value) -> Value {
    let body = json!({ "component_appid": COMP, "offset": offset, "count": count });
    sim.post(&format!("{LIST}?component_access_token={ct}"), body).await.1
}

async fn refresh(sim: &Sim, ct: &str, authorizer: &str, refresh_token: &str) -> Value {
    let body = json!({ "component_appid": COMP, "authorizer_appid": authorizer, "authorizer_refresh_token": refresh_token });
    sim.post(&format!("{REFRESH}?component_access_token={ct}"), body).await.1
}

fn refresh_token_of(v: &Value) -> String {
    v["authorizer_refresh_token"].as_str().unwrap_or_else(|| panic!("no refresh token: {v}")).to_owned()
}

async fn unauthorize(sim: &Sim, authorizer: &str) {
    let (s, v) = sim
        .post("/__sim/unauthorize", json!({ "component_appid": COMP, "authorizer_appid": authorizer }))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn authorizer_list_pages_the_authorized_in_a_stable_order() {
    let sim = start(SimConfig::new().component(comp())).await;
    let ct = ctoken(&sim).await;
    let first = bulk(&sim, 3).await;
    sim.advance(10).await;
    let second = bulk(&sim, 3).await;
    unauthorize(&sim, &first[1].0).await;
    // Authorized later, so listed last, whatever its appid.
    let all: Vec<&(String, String)> = first.iter().chain(&second).filter(|a| a.0 != first[1].0).collect();

    let v = list(&sim, &ct, json!(0), json!(500)).await;
    let r: AuthorizerListResponse = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(r.total_count, 5, "{v}");
    let got: Vec<(&str, &str)> = r
        .list
        .iter()
        .map(|e| (e.authorizer_appid.as_str(), e.refresh_token.as_ref().unwrap().expose().as_str()))
        .collect();
    let want: Vec<(&str, &str)> = all.iter().map(|(a, t)| (a.as_str(), t.as_str())).collect();
    assert_eq!(got, want);
    let apart = r.list[2].auth_time - r.list[0].auth_time;
    assert!((10..=11).contains(&apart), "auth_time is Unix seconds: {v}");

    // Pages of two, via the newer `access_token=` spelling of the parameter.
    let mut paged = Vec::new();
    for offset in [0, 2, 4, 6] {
        let body = json!({ "component_appid": COMP, "offset": offset, "count": 2 });
        let (_, v) = sim.post(&format!("{LIST}?access_token={ct}"), body).await;
        assert_eq!(v["total_count"], 5, "{v}");
        for e in v["list"].as_array().unwrap() {
            paged.push(e["authorizer_appid"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(paged, want.iter().map(|w| w.0).collect::<Vec<_>>());

    // The current refresh token is listed: after a rotation the new one.
    sim.post("/__sim/rotation", json!({ "component_appid": COMP, "enabled": true })).await;
    let rotated = refresh_token_of(&refresh(&sim, &ct, &first[0].0, &first[0].1).await);
    assert_ne!(rotated, first[0].1);
    let v = list(&sim, &ct, json!(0), json!(1)).await;
    assert_eq!(v["list"][0]["refresh_token"].as_str(), Some(rotated.as_str()), "{v}");

    for count in [json!(0), json!(501), Value::Null] {
        assert_wx_err(&list(&sim, &ct, json!(0), count).await, 40097, "invalid args");
    }
    assert_wx_err(&list(&sim, &ct, json!("x"), json!(10)).await, 47001, "data format error");
    assert_eq!(list(&sim, &ct, json!(100), json!(10)).await, json!({ "total_count": 5, "list": [] }));
    let (_, v) = sim.post(LIST, json!({ "component_appid": COMP, "offset": 0, "count": 1 })).await;
    assert_wx_err(&v, 41001, "access_token missing");
    assert_wx_err(
        &list(&sim, "not-a-token", json!(0), json!(1)).await,
        40001,
        "invalid credential, access_token is invalid or not latest",
    );
    assert_eq!(sim.h.calls(COMP, PATH_GET_AUTHORIZER_LIST), 13);
}

#[tokio::test]
async fn authorizer_list_may_omit_refresh_tokens() {
    let sim = start(SimConfig::new().component(comp().list_omits_refresh_token(true))).await;
    let ct = ctoken(&sim).await;
    bulk(&sim, 2).await;
    let v = list(&sim, &ct, json!(0), json!(10)).await;
    let r: AuthorizerListResponse = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(r.list.len(), 2);
    assert!(r.list.iter().all(|e| e.refresh_token.is_none()), "{v}");
    assert!(v["list"][0].get("refresh_token").is_none());
}

#[tokio::test]
async fn start_push_ticket_answers_then_pushes_a_fresh_ticket() {
    let mut cb = receiver().await;
    let sim = start(SimConfig::new().component(comp().push_url(&cb.url).push_interval(3600))).await;
    let (t1, _) = cb.next_ticket().await;
    let body = json!({ "component_appid": COMP, "component_secret": COMP_SECRET });
    let (s, v) = sim.post(PATH_START_PUSH_TICKET, body).await;
    assert_eq!((s, v), (StatusCode::OK, json!({ "errcode": 0, "errmsg": "ok" })));
    let (t2, _) = cb.next_ticket().await;
    assert_ne!(t1, t2);
    let body =
        json!({ "component_appid": COMP, "component_appsecret": COMP_SECRET, "component_verify_ticket": t2 });
    let (_, v) = sim.post("/cgi-bin/component/api_component_token", body).await;
    assert!(v["component_access_token"].is_string(), "{v}");

    let (_, v) =
        sim.post(PATH_START_PUSH_TICKET, json!({ "component_appid": COMP, "component_secret": "no" })).await;
    assert_wx_err(&v, 40125, "invalid appsecret");
    let (_, v) = sim.post(PATH_START_PUSH_TICKET, json!({ "component_appid": COMP })).await;
    assert_wx_err(&v, 41004, "appsecret missing");
    let (_, v) = sim
        .post(
            PATH_START_PUSH_TICKET,
            json!({ "component_appid": "wxnotacomponent0", "component_secret": "x" }),
        )
        .await;
    assert_wx_err(&v, 40013, "invalid appid");
    let (_, v) = sim.post(PATH_START_PUSH_TICKET, json!({})).await;
    assert_wx_err(&v, 41002, "appid missing");
    cb.quiet(300).await;
    assert_eq!(sim.h.calls(COMP, PATH_START_PUSH_TICKET), 3);
}

#[tokio::test]
async fn authorizer_info_answers_func_info_for_authorized_accounts_only() {
    let sim = start(SimConfig::new().component(comp())).await;
    let ct = ctoken(&sim).await;
    let a = bulk(&sim, 2).await;
    let info = |authorizer: String, param: &'static str| {
        let (sim, ct) = (&sim, ct.clone());
        async move {
            let body = json!({ "component_appid": COMP, "authorizer_appid": authorizer });
            sim.post(&format!("{INFO}?{param}={ct}"), body).await.1
        }
    };
    let v = info(a[0].0.clone(), "component_access_token").await;
    assert!(v["authorizer_info"]["nick_name"].is_string(), "{v}");
    assert!(v["authorizer_info"]["user_name"].as_str().unwrap().starts_with("gh_"));
    let r: AuthorizerInfoResponse = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(r.authorization_info.authorizer_appid, a[0].0);
    let ids: Vec<i64> = r.authorization_info.func_info.iter().map(|f| f.funcscope_category.id).collect();
    assert_eq!(ids, [1, 15, 4, 7, 2, 3, 11, 6]);
    assert_eq!(v["authorization_info"]["authorizer_refresh_token"].as_str(), Some(a[0].1.as_str()));
    assert!(info(a[1].0.clone(), "access_token").await["authorization_info"].is_object());

    unauthorize(&sim, &a[1].0).await;
    let text = "component is not authorized by this account";
    assert_wx_err(&info(a[1].0.clone(), "access_token").await, 61003, text);
    assert_wx_err(&info("wxneverauthorized0".into(), "access_token").await, 61003, text);
    let (_, v) = sim.post(INFO, json!({ "component_appid": COMP, "authorizer_appid": a[0].0 })).await;
    assert_wx_err(&v, 41001, "access_token missing");
    assert_eq!(sim.h.calls(COMP, PATH_GET_AUTHORIZER_INFO), 5);
}

#[tokio::test]
async fn rotation_issues_new_refresh_tokens_and_keeps_the_previous_for_the_grace() {
    let sim = start(SimConfig::new().component(comp().rotate_refresh_token(true, 60))).await;
    let ct = ctoken(&sim).await;
    let a = bulk(&sim, 1).await.remove(0);
    let r0 = a.1.clone();
    let v = refresh(&sim, &ct, &a.0, &r0).await;
    assert!(v["authorizer_access_token"].is_string(), "{v}");
    let r1 = refresh_token_of(&v);
    assert_ne!(r1, r0);
    assert!(r1.starts_with("refreshtoken@@@"));
    // r0 is r1's predecessor: still good within the grace; using it supersedes r1.
    let r2 = refresh_token_of(&refresh(&sim, &ct, &a.0, &r0).await);
    assert_ne!(r2, r1);
    // Only the latest predecessor (now r1) keeps its grace.
    assert_wx_err(&refresh(&sim, &ct, &a.0, &r0).await, 61023, "refresh_token is invalid");
    sim.advance(59).await;
    let r3 = refresh_token_of(&refresh(&sim, &ct, &a.0, &r1).await);
    sim.advance(60).await;
    assert_eq!(errcode(&refresh(&sim, &ct, &a.0, &r2).await), 61023, "r2's grace is over");
    let r4 = refresh_token_of(&refresh(&sim, &ct, &a.0, &r3).await);
    unauthorize(&sim, &a.0).await;
    for r in [&r3, &r4] {
        assert_eq!(
            errcode(&refresh(&sim, &ct, &a.0, r).await),
            61023,
            "unauthorize ends every refresh token"
        );
    }
    assert_eq!(sim.h.calls(&a.0, PATH_AUTHORIZER_TOKEN), 8, "counted under the authorizer");
}

#[tokio::test]
async fn rotation_is_switched_at_runtime_until_a_reset() {
    let sim = start(SimConfig::new().component(comp())).await;
    let ct = ctoken(&sim).await;
    let a = bulk(&sim, 1).await.remove(0);
    assert_eq!(refresh_token_of(&refresh(&sim, &ct, &a.0, &a.1).await), a.1, "off by default");

    let (s, v) = sim
        .post("/__sim/rotation", json!({ "component_appid": COMP, "enabled": true, "grace_secs": 5 }))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((&v["enabled"], &v["grace_secs"]), (&json!(true), &json!(5)));
    let r1 = refresh_token_of(&refresh(&sim, &ct, &a.0, &a.1).await);
    assert_ne!(r1, a.1);
    sim.advance(5).await;
    assert_eq!(errcode(&refresh(&sim, &ct, &a.0, &a.1).await), 61023);

    let (_, v) = sim.post("/__sim/rotation", json!({ "component_appid": COMP, "enabled": false })).await;
    assert_eq!(v["grace_secs"], 5, "the grace in force stays: {v}");
    assert_eq!(refresh_token_of(&refresh(&sim, &ct, &a.0, &r1).await), r1);
    assert_eq!(refresh_token_of(&refresh(&sim, &ct, &a.0, &r1).await), r1);

    let (s, _) = sim.post("/__sim/rotation", json!({ "component_appid": "wxnope", "enabled": true })).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = sim.post("/__sim/rotation", json!({ "component_appid": COMP })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    sim.post("/__sim/rotation", json!({ "component_appid": COMP, "enabled": true })).await;
    sim.h.reset();
    let ct = ctoken(&sim).await;
    let a = bulk(&sim, 1).await.remove(0);
    assert_eq!(refresh_token_of(&refresh(&sim, &ct, &a.0, &a.1).await), a.1, "reset: the config's setting");
}

#[tokio::test]
async fn unacknowledged_pushes_are_retried_with_the_same_content() {
    let mut cb = receiver().await;
    let comp = comp().push_url(&cb.url).push_interval(3600).push_retries(3, 100);
    let sim = start(SimConfig::new().component(comp)).await;
    cb.next_ticket().await;

    // Two refusals, then an acknowledgement on the third attempt.
    cb.fail.store(2, Ordering::SeqCst);
    let (s, v) = sim.post("/__sim/push_ticket", json!({ "component_appid": COMP })).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (&v["ok"], &v["push"]["body"], &v["push"]["will_retry"]),
        (&json!(false), &json!("fail"), &json!(true))
    );
    let started = Instant::now();
    let d1 = cb.next().await;
    let d2 = cb.next().await;
    let d3 = cb.next().await;
    assert!(started.elapsed() >= Duration::from_millis(150), "retries are spaced: {:?}", started.elapsed());
    assert_eq!(d1.n, d2.n);
    assert_eq!(d2.n, d3.n);
    match &d1.n {
        ComponentNotification::VerifyTicket { ticket, .. } => {
            assert_eq!(v["ticket"].as_str(), Some(ticket.expose().as_str()));
        }
        other => panic!("{other:?}"),
    }
    assert_ne!(d1.query["nonce"], d2.query["nonce"], "a new envelope per attempt");
    cb.quiet(400).await;

    let (_, p) = sim.get("/__sim/pushes").await;
    let c = &p["components"][0];
    assert_eq!(
        (&c["pushes_ok"], &c["pushes_failed"], &c["pushes_retried"], &c["pushes_given_up"]),
        (&json!(2), &json!(2), &json!(2), &json!(0)),
        "{p}"
    );
    let recent: Vec<(u64, u64, bool)> = c["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["push_id"].as_u64().unwrap(), r["attempt"].as_u64().unwrap(), r["ok"].as_bool().unwrap()))
        .collect();
    let id = recent[1].0;
    assert_eq!(recent[1..], [(id, 1, false), (id, 2, false), (id, 3, true)]);

    // A receiver that never acknowledges gets 1 + 3 attempts of the authorization event.
    cb.fail.store(usize::MAX, Ordering::SeqCst);
    let ct = ctoken(&sim).await;
    let d = cb.next().await;
    assert!(matches!(d.n, ComponentNotification::VerifyTicket { .. }));
    for _ in 0..3 {
        cb.next().await;
    }
    let (_, v) = sim
        .post(
            &format!("/cgi-bin/component/api_create_preauthcode?component_access_token={ct}"),
            json!({ "component_appid": COMP }),
        )
        .await;
    let consent = json!({ "component_appid": COMP, "pre_auth_code": v["pre_auth_code"], "authorizer_appid": "wxretr1ed00000001" });
    let (_, v) = sim.post("/__sim/authorize", consent).await;
    assert_eq!(v["push"]["ok"], false, "{v}");
    let mut codes = HashSet::new();
    let mut times = HashSet::new();
    for _ in 0..4 {
        match cb.next().await.n {
            ComponentNotification::Authorized(n) => {
                codes.insert(n.authorization_code.expose().clone());
                times.insert(n.create_time);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(codes.len(), 1);
    assert_eq!(times.len(), 1);
    assert!(codes.contains(v["auth_code"].as_str().unwrap()));
    cb.quiet(400).await;
    let (_, calls) = sim.get("/__sim/calls").await;
    assert_eq!(calls["pushes_given_up"], 2, "{calls}");
    assert_eq!(calls["pushes_ok"], 2);
    assert_eq!(calls["pushes_failed"], 10);
    assert_eq!(calls["pushes_retried"], 8);
}

#[tokio::test]
async fn a_reset_ends_pending_retries() {
    let mut cb = receiver().await;
    let comp = comp().push_url(&cb.url).push_interval(3600).push_retries(5, 300);
    let sim = start(SimConfig::new().component(comp)).await;
    cb.next_ticket().await;
    cb.fail.store(usize::MAX, Ordering::SeqCst);
    sim.post("/__sim/push_ticket", json!({ "component_appid": COMP })).await;
    let (stale, _) = cb.next_ticket().await;
    cb.fail.store(0, Ordering::SeqCst);
    sim.h.reset();
    // The fresh ticket of the reset arrives; the stale one is never retried.
    let (fresh, _) = cb.next_ticket().await;
    assert_ne!(fresh, stale);
    cb.quiet(800).await;
}

#[tokio::test]
async fn update_authorize_pushes_a_new_code_with_new_func_info_and_refresh_token() {
    let mut cb = receiver().await;
    let sim = start(SimConfig::new().component(comp().push_url(&cb.url).push_interval(3600))).await;
    cb.next_ticket().await;
    let ct = ctoken(&sim).await;
    cb.next_ticket().await;
    let (_, v) = sim
        .post(
            &format!("/cgi-bin/component/api_create_preauthcode?access_token={ct}"),
            json!({ "component_appid": COMP }),
        )
        .await;
    let authorizer = "wxupd4ted00000001";
    let consent = json!({ "component_appid": COMP, "pre_auth_code": v["pre_auth_code"], "authorizer_appid": authorizer });
    let (s, v) = sim.post("/__sim/authorize", consent).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(matches!(cb.next().await.n, ComponentNotification::Authorized(_)));
    let query_auth = |code: Value| {
        let (sim, ct) = (&sim, ct.clone());
        async move {
            sim.post(
                &format!("{QUERY_AUTH}?access_token={ct}"),
                json!({ "component_appid": COMP, "authorization_code": code }),
            )
            .await
            .1
        }
    };
    let old = query_auth(v["auth_code"].clone()).await["authorization_info"]["authorizer_refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let body = json!({ "component_appid": COMP, "authorizer_appid": authorizer, "func_info": [1, 2, 18] });
    let (s, v) = sim.post("/__sim/update_authorize", body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["push"]["ok"], true);
    let code = v["auth_code"].as_str().unwrap().to_owned();
    match cb.next().await.n {
        ComponentNotification::UpdateAuthorized(n) => {
            assert_eq!(n.authorizer_appid, authorizer);
            assert_eq!(n.authorization_code.expose(), &code);
            assert_eq!(n.authorization_code_expired_time - n.create_time, 3600);
            assert!(n.pre_auth_code.is_none());
        }
        other => panic!("expected updateauthorized, got {other:?}"),
    }
    let v = query_auth(json!(code)).await;
    let info: wechat_proto::api::QueryAuthResponse = serde_json::from_value(v.clone()).unwrap();
    let ids: Vec<i64> = info.authorization_info.func_info.iter().map(|f| f.funcscope_category.id).collect();
    assert_eq!(ids, [1, 2, 18]);
    let new = info.authorization_info.authorizer_refresh_token.expose().clone();
    assert_ne!(new, old, "re-authorization gives a new refresh token");
    assert_wx_err(&query_auth(json!(code)).await, 61010, "code is expired");
    let (_, v) = sim
        .post(
            &format!("{INFO}?access_token={ct}"),
            json!({ "component_appid": COMP, "authorizer_appid": authorizer }),
        )
        .await;
    assert_eq!(v["authorization_info"]["func_info"][2]["funcscope_category"]["id"], 18, "{v}");

    // The old refresh token works for the grace (300 s by default), then 61023.
    assert_eq!(refresh_token_of(&refresh(&sim, &ct, authorizer, &old).await), new);
    sim.advance(300).await;
    let ct = ctoken(&sim).await;
    let _ = cb.next().await;
    assert_wx_err(&refresh(&sim, &ct, authorizer, &old).await, 61023, "refresh_token is invalid");
    assert_eq!(refresh_token_of(&refresh(&sim, &ct, authorizer, &new).await), new);

    // Without func_info the grant stays as it was.
    let (_, v) = sim
        .post("/__sim/update_authorize", json!({ "component_appid": COMP, "authorizer_appid": authorizer }))
        .await;
    let _ = cb.next().await;
    let v = query_auth(v["auth_code"].clone()).await;
    assert_eq!(v["authorization_info"]["func_info"].as_array().unwrap().len(), 3, "{v}");

    let (s, _) = sim
        .post("/__sim/update_authorize", json!({ "component_appid": COMP, "authorizer_appid": "wxnobody" }))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    unauthorize(&sim, authorizer).await;
    let _ = cb.next().await;
    let (s, _) = sim
        .post("/__sim/update_authorize", json!({ "component_appid": COMP, "authorizer_appid": authorizer }))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn ten_thousand_authorizers_are_made_listed_and_paged_quickly() {
    let sim = start(SimConfig::new().component(comp())).await;
    let ct = ctoken(&sim).await;
    let started = Instant::now();
    let made = bulk(&sim, 10_000).await;
    assert_eq!(made.len(), 10_000);
    let appids: HashSet<&str> = made.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(appids.len(), 10_000);
    assert!(made.iter().all(|(a, _)| a.len() <= 32 && a.bytes().all(|b| b.is_ascii_alphanumeric())));
    assert!(made[0].0.starts_with("wxa"));
    let tokens: HashSet<&str> = made.iter().map(|a| a.1.as_str()).collect();
    assert_eq!(tokens.len(), 10_000);

    let (_, v) = sim.get(&format!("/__sim/authorizers?component_appid={COMP}")).await;
    let listed = v["authorizers"].as_array().unwrap();
    assert_eq!(listed.len(), 10_000);
    assert_eq!(listed[0]["authorized"], true);
    assert_eq!(listed[0]["func_info"].as_array().unwrap().len(), 8);

    let mut paged = HashMap::new();
    let mut offset = 0;
    while offset < 10_000 {
        let v = list(&sim, &ct, json!(offset), json!(500)).await;
        assert_eq!(v["total_count"], 10_000);
        for e in v["list"].as_array().unwrap() {
            paged.insert(
                e["authorizer_appid"].as_str().unwrap().to_owned(),
                e["refresh_token"].as_str().unwrap().to_owned(),
            );
        }
        offset += 500;
    }
    assert_eq!(paged.len(), 10_000);
    assert!(made.iter().all(|(a, t)| paged.get(a) == Some(t)));
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());

    // A second batch with its own prefix never reuses an appid.
    let (_, v) = sim
        .post("/__sim/authorizers", json!({ "component_appid": COMP, "count": 2, "prefix": "wxload" }))
        .await;
    assert!(v["authorizers"][0]["authorizer_appid"].as_str().unwrap().starts_with("wxload"), "{v}");
    assert_eq!(list(&sim, &ct, json!(0), json!(1)).await["total_count"], 10_002);

    for bad in [
        json!({ "component_appid": COMP, "count": 0 }),
        json!({ "component_appid": COMP, "count": 1, "prefix": "wx-a" }),
        json!({ "component_appid": COMP, "count": 1, "prefix": "" }),
        json!({ "component_appid": COMP }),
    ] {
        let (s, v) = sim.post("/__sim/authorizers", bad.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    let (s, _) = sim.post("/__sim/authorizers", json!({ "component_appid": "wxnope", "count": 1 })).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = sim.get("/__sim/authorizers").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn authorizer_tokens_work_for_tickets_and_business_apis() {
    let sim = start(SimConfig::new().component(comp())).await;
    let ct = ctoken(&sim).await;
    let a = bulk(&sim, 2).await;
    let mut tickets = HashSet::new();
    for (appid, rt) in &a {
        let token =
            refresh(&sim, &ct, appid, rt).await["authorizer_access_token"].as_str().unwrap().to_owned();
        assert_eq!(sim.use_token(&token).await, 0);
        let (_, v) = sim.get(&format!("/cgi-bin/user/info?access_token={token}&openid=o123")).await;
        assert_eq!(v["subscribe"], 1, "{v}");
        for kind in ["jsapi", "wx_card"] {
            let (_, v) =
                sim.get(&format!("/cgi-bin/ticket/getticket?access_token={token}&type={kind}")).await;
            let t = v["ticket"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned();
            let (_, again) =
                sim.get(&format!("/cgi-bin/ticket/getticket?access_token={token}&type={kind}")).await;
            assert_eq!(again["ticket"].as_str(), Some(t.as_str()), "one ticket per authorizer and type");
            assert_eq!(v["expires_in"], 7200);
            tickets.insert(t);
        }
        assert_eq!(sim.h.calls(appid, PATH_GETTICKET), 4);
        assert_eq!(sim.h.calls(appid, PATH_AUTHORIZER_TOKEN), 1);
    }
    assert_eq!(tickets.len(), 4);
    // The component token is no business credential.
    assert_eq!(sim.use_token(&ct).await, 40001);
}
