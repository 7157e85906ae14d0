//! Open-platform components, end to end: a callback server that checks `msg_signature` and
//! decrypts with `wechat-proto`, then the component token, authorization, authorizer tokens and
//! revocation.

use crate::common::*;
use axum::extract::{Query, State};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use wechat_proto::api::ComponentNotification;
use wechat_proto::crypto::MsgCrypt;
use wechat_sim::{SimApp, SimComponent, SimConfig};

const COMP: &str = "wxc0mp0nent0000001";
const COMP_SECRET: &str = "component-secret";
const MSG_TOKEN: &str = "component-msg-token";
const AES_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const AUTHORIZER: &str = "wxa0th0r1zer000001";

#[derive(Clone)]
struct Receiver {
    crypt: MsgCrypt,
    tx: mpsc::UnboundedSender<ComponentNotification>,
    answer: &'static str,
}

/// What a component's callback must do: check both signatures, decrypt, parse, answer `success`.
async fn callback(
    State(r): State<Receiver>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> (StatusCode, &'static str) {
    let (Some(sig), Some(ts), Some(nonce), Some(msg_sig)) =
        (q.get("signature"), q.get("timestamp"), q.get("nonce"), q.get("msg_signature"))
    else {
        return (StatusCode::BAD_REQUEST, "missing query");
    };
    if q.get("encrypt_type").map(String::as_str) != Some("aes")
        || !wechat_proto::signature::verify_url_signature(MSG_TOKEN, ts, nonce, sig)
    {
        return (StatusCode::FORBIDDEN, "bad signature");
    }
    let Ok(xml) = r.crypt.decrypt_message(msg_sig, ts, nonce, &body) else {
        return (StatusCode::FORBIDDEN, "bad msg_signature or ciphertext");
    };
    let Ok(n) = ComponentNotification::from_xml(&xml) else {
        return (StatusCode::BAD_REQUEST, "bad xml");
    };
    let _ = r.tx.send(n);
    (StatusCode::OK, r.answer)
}

async fn receiver(answer: &'static str) -> (String, mpsc::UnboundedReceiver<ComponentNotification>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let crypt = MsgCrypt::new(MSG_TOKEN, AES_KEY, COMP).unwrap();
    let app = axum::Router::new()
        .route("/callback/component", axum::routing::post(callback))
        .with_state(Receiver { crypt, tx, answer });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/callback/component", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<ComponentNotification>) -> ComponentNotification {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a push within 5 s").unwrap()
}

async fn next_ticket(rx: &mut mpsc::UnboundedReceiver<ComponentNotification>) -> String {
    match next(rx).await {
        ComponentNotification::VerifyTicket { component_appid, ticket, .. } => {
            assert_eq!(component_appid, COMP);
            ticket.expose().clone()
        }
        other => panic!("expected a verify ticket, got {other:?}"),
    }
}

fn component(push_url: &str) -> SimComponent {
    SimComponent::new(COMP, COMP_SECRET, MSG_TOKEN, AES_KEY).push_url(push_url).push_interval(3600)
}

async fn component_token(sim: &Sim, ticket: &str) -> Value {
    let body = json!({ "component_appid": COMP, "component_appsecret": COMP_SECRET, "component_verify_ticket": ticket });
    sim.post("/cgi-bin/component/api_component_token", body).await.1
}

#[tokio::test]
async fn pushed_ticket_decrypts_and_buys_a_component_token() {
    let (url, mut rx) = receiver("success").await;
    let sim = start(SimConfig::new().component(component(&url))).await;
    // The first push comes right at start.
    let ticket = next_ticket(&mut rx).await;
    assert!(ticket.starts_with("ticket@@@"));
    let v = component_token(&sim, &ticket).await;
    assert_eq!(v["expires_in"], 7200, "{v}");
    let token = v["component_access_token"].as_str().unwrap();
    assert!(token.len() >= 64);

    assert_wx_err(&component_token(&sim, "ticket@@@made-up").await, 61006, "component ticket is invalid");
    let body =
        json!({ "component_appid": COMP, "component_appsecret": "nope", "component_verify_ticket": ticket });
    assert_wx_err(
        &sim.post("/cgi-bin/component/api_component_token", body).await.1,
        40125,
        "invalid appsecret",
    );
    let body = json!({ "component_appid": "wxnotacomponent000", "component_appsecret": "x", "component_verify_ticket": ticket });
    assert_wx_err(&sim.post("/cgi-bin/component/api_component_token", body).await.1, 40013, "invalid appid");
    assert_wx_err(
        &sim.post_raw("/cgi-bin/component/api_component_token", "<xml/>").await.1,
        47001,
        "data format error",
    );

    // A component token is no official-account API credential.
    assert_eq!(sim.use_token(token).await, 40001);

    // 12 h after its push the ticket is refused; a fresh push (on demand) fixes it.
    sim.advance(12 * 3600).await;
    assert_wx_err(&component_token(&sim, &ticket).await, 61005, "component ticket is expired");
    let (s, v) = sim.post("/__sim/push_ticket", json!({ "component_appid": COMP })).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((&v["ok"], &v["push"]["status"]), (&json!(true), &json!(200)), "{v}");
    let fresh = next_ticket(&mut rx).await;
    assert_eq!(v["ticket"].as_str(), Some(fresh.as_str()));
    assert!(component_token(&sim, &fresh).await["component_access_token"].is_string());

    let (_, pushes) = sim.get("/__sim/pushes").await;
    assert_eq!(pushes["components"][0]["pushes_ok"], 2, "{pushes}");
    assert_eq!(sim.get("/__sim/calls").await.1["pushes_ok"], 2);
    // Five named this component; the body naming another appid and the XML body are counted apart.
    assert_eq!(sim.h.calls(COMP, "/cgi-bin/component/api_component_token"), 5);
    assert_eq!(sim.h.total_calls("/cgi-bin/component/api_component_token"), 7);
}

#[tokio::test]
async fn component_tokens_overlap_like_classic_ones() {
    let (url, mut rx) = receiver("success").await;
    let mut comp = component(&url);
    comp.overlap_secs = 2;
    let sim = start(SimConfig::new().component(comp)).await;
    let ticket = next_ticket(&mut rx).await;
    let c1 = component_token(&sim, &ticket).await["component_access_token"].as_str().unwrap().to_owned();
    let c2 = component_token(&sim, &ticket).await["component_access_token"].as_str().unwrap().to_owned();
    let preauth = |t: &str| {
        let t = t.to_owned();
        let sim = &sim;
        async move {
            sim.post(
                &format!("/cgi-bin/component/api_create_preauthcode?component_access_token={t}"),
                json!({ "component_appid": COMP }),
            )
            .await
            .1
        }
    };
    assert!(preauth(&c1).await["pre_auth_code"].is_string());
    sim.advance(2).await;
    assert_wx_err(&preauth(&c1).await, 40001, "invalid credential, access_token is invalid or not latest");
    let v = preauth(&c2).await;
    assert_eq!(v["expires_in"], 600);
    assert!(v["pre_auth_code"].as_str().unwrap().starts_with("preauthcode@@@"));
    let (_, v) =
        sim.post("/cgi-bin/component/api_create_preauthcode", json!({ "component_appid": COMP })).await;
    assert_wx_err(&v, 41001, "access_token missing");
}

#[tokio::test]
async fn authorization_lifecycle_with_pushes() {
    let (url, mut rx) = receiver("success").await;
    let mut comp = component(&url);
    comp.overlap_secs = 2;
    let sim = start(SimConfig::new().component(comp).app(SimApp::new(APPID, SECRET))).await;
    let ticket = next_ticket(&mut rx).await;
    let ctoken = component_token(&sim, &ticket).await["component_access_token"].as_str().unwrap().to_owned();
    let q = format!("?component_access_token={ctoken}");

    let (_, v) = sim
        .post(&format!("/cgi-bin/component/api_create_preauthcode{q}"), json!({ "component_appid": COMP }))
        .await;
    let pre_auth = v["pre_auth_code"].as_str().unwrap().to_owned();

    // The merchant consents: an auth code, a redirect, and an `authorized` push.
    let consent = json!({ "component_appid": COMP, "pre_auth_code": pre_auth, "authorizer_appid": AUTHORIZER, "redirect_uri": "https://hub.example/cb?x=1" });
    let (s, v) = sim.post("/__sim/authorize", consent.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let auth_code = v["auth_code"].as_str().unwrap().to_owned();
    assert!(auth_code.starts_with("queryauthcode@@@"));
    let redirect = v["redirect_uri"].as_str().unwrap();
    assert!(
        redirect.starts_with("https://hub.example/cb?x=1&auth_code=queryauthcode%40%40%40"),
        "{redirect}"
    );
    assert!(redirect.ends_with("&expires_in=3600"));
    assert_eq!(v["push"]["ok"], true);
    match next(&mut rx).await {
        ComponentNotification::Authorized(n) => {
            assert_eq!(n.component_appid, COMP);
            assert_eq!(n.authorizer_appid, AUTHORIZER);
            assert_eq!(n.authorization_code.expose(), &auth_code);
            assert_eq!(n.pre_auth_code.as_ref().map(|p| p.expose().as_str()), Some(pre_auth.as_str()));
            assert_eq!(n.authorization_code_expired_time - n.create_time, 3600);
        }
        other => panic!("expected authorized, got {other:?}"),
    }
    let (s, v) = sim.post("/__sim/authorize", consent).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a pre-auth code is single use: {v}");

    // The auth code buys the authorizer's tokens, once.
    let query = json!({ "component_appid": COMP, "authorization_code": auth_code });
    let (_, v) = sim.post(&format!("/cgi-bin/component/api_query_auth{q}"), query.clone()).await;
    let info: wechat_proto::api::QueryAuthResponse = serde_json::from_value(v.clone()).unwrap();
    let info = info.authorization_info;
    assert_eq!(info.authorizer_appid, AUTHORIZER);
    assert_eq!(info.expires_in, 7200);
    assert!(!info.func_info.is_empty());
    let a1 = info.authorizer_access_token.expose().clone();
    let refresh = info.authorizer_refresh_token.expose().clone();
    assert!(refresh.starts_with("refreshtoken@@@"));
    let (_, v) = sim.post(&format!("/cgi-bin/component/api_query_auth{q}"), query).await;
    assert_wx_err(&v, 61010, "code is expired");
    let (_, v) = sim
        .post(
            &format!("/cgi-bin/component/api_query_auth{q}"),
            json!({ "component_appid": COMP, "authorization_code": "queryauthcode@@@nope" }),
        )
        .await;
    assert_wx_err(&v, 61009, "code is invalid");

    // The authorizer token works on business APIs and tickets.
    assert_eq!(sim.use_token(&a1).await, 0);
    let (_, v) = sim.get(&format!("/cgi-bin/ticket/getticket?access_token={a1}&type=jsapi")).await;
    assert!(v["ticket"].is_string(), "{v}");
    assert_eq!(sim.h.calls(AUTHORIZER, "/cgi-bin/ticket/getticket"), 1);

    // Refresh: a new token, the old one overlapping, the same refresh token.
    let refresh_body = json!({ "component_appid": COMP, "authorizer_appid": AUTHORIZER, "authorizer_refresh_token": refresh });
    let (_, v) = sim.post(&format!("/cgi-bin/component/api_authorizer_token{q}"), refresh_body.clone()).await;
    let a2 = v["authorizer_access_token"].as_str().unwrap().to_owned();
    assert_ne!(a2, a1);
    assert_eq!(v["authorizer_refresh_token"].as_str(), Some(refresh.as_str()));
    assert_eq!(v["expires_in"], 7200);
    assert_eq!(sim.use_token(&a1).await, 0);
    sim.advance(2).await;
    assert_eq!(sim.use_token(&a1).await, 40001);
    assert_eq!(sim.use_token(&a2).await, 0);
    let bad = json!({ "component_appid": COMP, "authorizer_appid": AUTHORIZER, "authorizer_refresh_token": "refreshtoken@@@guess" });
    let (_, v) = sim.post(&format!("/cgi-bin/component/api_authorizer_token{q}"), bad).await;
    assert_wx_err(&v, 61023, "refresh_token is invalid");

    // The merchant revokes: an `unauthorized` push, tokens dead, the refresh token refused.
    let (s, v) = sim
        .post("/__sim/unauthorize", json!({ "component_appid": COMP, "authorizer_appid": AUTHORIZER }))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    match next(&mut rx).await {
        ComponentNotification::Unauthorized { component_appid, authorizer_appid, .. } => {
            assert_eq!((component_appid.as_str(), authorizer_appid.as_str()), (COMP, AUTHORIZER));
        }
        other => panic!("expected unauthorized, got {other:?}"),
    }
    assert_eq!(sim.use_token(&a2).await, 40001);
    let (_, v) = sim.post(&format!("/cgi-bin/component/api_authorizer_token{q}"), refresh_body).await;
    assert_wx_err(&v, 61023, "refresh_token is invalid");
    let (s, _) = sim
        .post("/__sim/unauthorize", json!({ "component_appid": COMP, "authorizer_appid": AUTHORIZER }))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Authorizing again gives a new refresh token.
    let (_, v) = sim
        .post(&format!("/cgi-bin/component/api_create_preauthcode{q}"), json!({ "component_appid": COMP }))
        .await;
    let consent = json!({ "component_appid": COMP, "pre_auth_code": v["pre_auth_code"], "authorizer_appid": AUTHORIZER });
    let (_, v) = sim.post("/__sim/authorize", consent).await;
    assert_eq!(v["redirect_uri"], "");
    let _ = next(&mut rx).await;
    let (_, v) = sim
        .post(
            &format!("/cgi-bin/component/api_query_auth{q}"),
            json!({ "component_appid": COMP, "authorization_code": v["auth_code"] }),
        )
        .await;
    assert_ne!(v["authorization_info"]["authorizer_refresh_token"].as_str(), Some(refresh.as_str()));
}

#[tokio::test]
async fn pre_auth_codes_expire_after_600_s() {
    let sim =
        start(SimConfig::new().component(SimComponent::new(COMP, COMP_SECRET, MSG_TOKEN, AES_KEY))).await;
    // Without push_url the ticket is only in the control answer.
    let (_, v) = sim.post("/__sim/push_ticket", json!({ "component_appid": COMP })).await;
    assert_eq!(v["push"]["sent"], false);
    let ctoken = component_token(&sim, v["ticket"].as_str().unwrap()).await["component_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, v) = sim
        .post(
            &format!("/cgi-bin/component/api_create_preauthcode?component_access_token={ctoken}"),
            json!({ "component_appid": COMP }),
        )
        .await;
    sim.advance(600).await;
    let consent = json!({ "component_appid": COMP, "pre_auth_code": v["pre_auth_code"], "authorizer_appid": AUTHORIZER });
    let (s, v) = sim.post("/__sim/authorize", consent).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("expired"), "{v}");
    let (s, _) = sim.post("/__sim/push_ticket", json!({ "component_appid": "wxunknown" })).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pushes_repeat_and_failures_are_counted() {
    let (url, mut rx) = receiver("not-success").await;
    // Without retries, so each ticket arrives once (retries: tests/sim/open_platform.rs).
    let comp = component(&url).push_interval(1).push_retries(0, 0);
    let sim = start(SimConfig::new().component(comp)).await;
    let t1 = next_ticket(&mut rx).await;
    let t2 = next_ticket(&mut rx).await;
    assert_ne!(t1, t2);
    // Both were delivered, so both are accepted.
    assert!(component_token(&sim, &t1).await["component_access_token"].is_string());
    assert!(component_token(&sim, &t2).await["component_access_token"].is_string());
    let (_, v) = sim.get("/__sim/pushes").await;
    let c = &v["components"][0];
    assert!(c["pushes_failed"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(c["pushes_ok"], 0);
    assert_eq!(c["recent"][0]["info_type"], "component_verify_ticket");
    assert_eq!(c["recent"][0]["status"], 200);
    let (s, v) = sim.post("/__sim/push_ticket", json!({ "component_appid": COMP })).await;
    assert_eq!((s, &v["ok"]), (StatusCode::OK, &json!(false)));
    assert_eq!(v["push"]["body"], "not-success");
}

#[tokio::test]
async fn a_dead_push_url_does_not_stop_the_simulator() {
    // Bind then drop, so nothing listens there.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let comp = component(&format!("http://{dead}/cb"));
    let sim = start(SimConfig::new().component(comp)).await;
    let (s, v) = sim.post("/__sim/push_ticket", json!({ "component_appid": COMP })).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["ok"], false);
    assert!(v["push"]["error"].is_string(), "{v}");
    assert!(v["push"]["status"].is_null());
    sim.h.shutdown().await;
}

#[tokio::test]
async fn reset_forgets_tickets_and_pushes_a_fresh_one_at_once() {
    let (url, mut rx) = receiver("success").await;
    let sim = start(SimConfig::new().component(component(&url))).await;
    let t1 = next_ticket(&mut rx).await;
    let (s, _) = sim.post("/__sim/reset", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let t2 = next_ticket(&mut rx).await;
    assert_ne!(t1, t2);
    assert_wx_err(&component_token(&sim, &t1).await, 61006, "component ticket is invalid");
    assert!(component_token(&sim, &t2).await["component_access_token"].is_string());
}
