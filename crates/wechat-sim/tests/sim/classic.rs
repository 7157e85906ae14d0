//! Classic `/cgi-bin/token`: a new token per call, one previous token overlapping, expiry, quota.

use crate::common::*;
use serde_json::json;
use wechat_sim::{SimApp, SimConfig};

fn config(app: SimApp) -> SimConfig {
    SimConfig::new().app(app).app(SimApp::new(APPID2, SECRET2))
}

#[tokio::test]
async fn each_call_issues_a_new_token_and_only_the_previous_overlaps() {
    let sim = start(config(SimApp::new(APPID, SECRET).ttl(60).overlap(2))).await;
    let v = sim.classic(APPID, SECRET).await;
    assert_eq!(v["expires_in"], 60, "{v}");
    let t1 = v["access_token"].as_str().unwrap().to_owned();
    assert!(
        t1.len() >= 64 && t1.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "{t1}"
    );

    let t2 = sim.classic_ok(APPID, SECRET).await;
    assert_ne!(t1, t2);
    assert_eq!(sim.use_token(&t1).await, 0, "the previous token overlaps");
    assert_eq!(sim.use_token(&t2).await, 0);

    sim.advance(2).await;
    let (_, v) = sim.get(&format!("/cgi-bin/get_api_domain_ip?access_token={t1}")).await;
    assert_wx_err(&v, 40001, "invalid credential, access_token is invalid or not latest");
    assert_eq!(sim.use_token(&t2).await, 0);

    let t3 = sim.classic_ok(APPID, SECRET).await;
    assert_eq!(sim.use_token(&t2).await, 0, "t2 is now the previous one");
    let t4 = sim.classic_ok(APPID, SECRET).await;
    assert_eq!(sim.use_token(&t2).await, 40001, "older than the previous: invalid at once");
    assert_eq!(sim.use_token(&t3).await, 0);
    assert_eq!(sim.use_token(&t4).await, 0);
    assert_eq!(sim.h.calls(APPID, "/cgi-bin/token"), 4);
}

#[tokio::test]
async fn expired_tokens_answer_42001_even_inside_an_overlap() {
    let sim = start(config(SimApp::new(APPID, SECRET).ttl(5).overlap(300))).await;
    let t1 = sim.classic_ok(APPID, SECRET).await;
    sim.advance(3).await;
    let t2 = sim.classic_ok(APPID, SECRET).await;
    assert_eq!(sim.use_token(&t1).await, 0);
    sim.advance(2).await;
    let (_, v) = sim.get(&format!("/cgi-bin/user/info?access_token={t1}&openid=o1")).await;
    assert_wx_err(&v, 42001, "access_token expired");
    assert_eq!(sim.use_token(&t2).await, 0);
    sim.advance(3).await;
    assert_eq!(sim.use_token(&t2).await, 42001);
}

#[tokio::test]
async fn the_overlap_is_real_time_too() {
    let sim = start(config(SimApp::new(APPID, SECRET).ttl(30).overlap(1))).await;
    let t1 = sim.classic_ok(APPID, SECRET).await;
    let _t2 = sim.classic_ok(APPID, SECRET).await;
    assert_eq!(sim.use_token(&t1).await, 0);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(sim.use_token(&t1).await, 40001);
}

#[tokio::test]
async fn quota_gives_45009_until_the_next_shanghai_day() {
    let sim = start(config(SimApp::new(APPID, SECRET).quota(3))).await;
    sim.to_next_shanghai_day(60).await;
    for _ in 0..3 {
        sim.classic_ok(APPID, SECRET).await;
    }
    let v = sim.classic(APPID, SECRET).await;
    assert_wx_err(&v, 45009, "reach max api daily quota limit");
    // Each endpoint has its own quota, and each app its own.
    sim.stable_ok(APPID, SECRET, false).await;
    sim.classic_ok(APPID2, SECRET2).await;
    // Still refused one second before midnight in Shanghai…
    sim.advance(86_400 - 60 - 1).await;
    assert_eq!(errcode(&sim.classic(APPID, SECRET).await), 45009);
    // …and served again from 00:00.
    sim.advance(1).await;
    sim.classic_ok(APPID, SECRET).await;
    assert_eq!(sim.h.calls(APPID, "/cgi-bin/token"), 6, "refused calls are counted too");
}

#[tokio::test]
async fn refused_credentials_do_not_spend_quota() {
    let sim = start(config(SimApp::new(APPID, SECRET).quota(1))).await;
    for _ in 0..3 {
        assert_eq!(errcode(&sim.classic(APPID, "wrong").await), 40125);
    }
    sim.classic_ok(APPID, SECRET).await;
}

#[tokio::test]
async fn bad_appid_secret_and_grant_type_have_their_errcodes() {
    let sim = start(config(SimApp::new(APPID, SECRET))).await;
    let v = sim.classic("wx0000000000000000", SECRET).await;
    assert_wx_err(&v, 40013, "invalid appid");
    let v = sim.classic(APPID, "not-the-secret").await;
    assert_wx_err(&v, 40125, "invalid appsecret");
    let v = sim.classic(APPID, SECRET2).await;
    assert_wx_err(&v, 40125, "invalid appsecret");
    let (_, v) = sim.get(&format!("/cgi-bin/token?grant_type=password&appid={APPID}&secret={SECRET}")).await;
    assert_wx_err(&v, 40002, "invalid grant_type");
    let (_, v) = sim.get(&format!("/cgi-bin/token?appid={APPID}&secret={SECRET}")).await;
    assert_wx_err(&v, 40002, "invalid grant_type");
    let (_, v) = sim.get("/cgi-bin/token?grant_type=client_credential&secret=x").await;
    assert_wx_err(&v, 41002, "appid missing");
    let (_, v) = sim.get(&format!("/cgi-bin/token?grant_type=client_credential&appid={APPID}")).await;
    assert_wx_err(&v, 41004, "appsecret missing");
    let (_, v) = sim.get("/cgi-bin/get_api_domain_ip").await;
    assert_wx_err(&v, 41001, "access_token missing");
    let (_, v) = sim.get("/cgi-bin/get_api_domain_ip?access_token=").await;
    assert_wx_err(&v, 41001, "access_token missing");
    let (_, v) = sim.post("/cgi-bin/message/subscribe/send", json!({})).await;
    assert_wx_err(&v, 41001, "access_token missing");
    let (_, v) = sim.get("/cgi-bin/get_api_domain_ip?access_token=made-up").await;
    assert_wx_err(&v, 40001, "invalid credential, access_token is invalid or not latest");
}

#[tokio::test]
async fn auto_register_makes_unknown_apps_on_their_first_token_request() {
    let off = start(SimConfig::new()).await;
    assert_eq!(errcode(&off.classic("wxnew", "s3cret").await), 40013, "off by default");
    let on = start(SimConfig::new().auto_register(true)).await;
    let t = on.classic_ok("wxnew", "s3cret").await;
    assert_eq!(on.use_token(&t).await, 0, "a working token");
    let _ = on.classic_ok("wxnew", "changed").await;
    assert_eq!(errcode(&on.classic("wxnew", "").await), 41004, "an empty secret is still refused");
    // Configured apps keep their secret.
    let fixed = start(SimConfig::new().auto_register(true).app(SimApp::new("wxfixed", "right"))).await;
    assert_eq!(errcode(&fixed.classic("wxfixed", "wrong").await), 40125);
    let (token, ttl) = on.stable_ok("wxnew2", "s2", false).await;
    assert!(!token.is_empty() && ttl > 0);
}
