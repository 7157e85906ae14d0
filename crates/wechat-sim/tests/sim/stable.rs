//! `POST /cgi-bin/stable_token`: normal mode, rotation in the last window, guarded force_refresh,
//! and isolation from classic tokens.

use crate::common::*;
use serde_json::json;
use wechat_sim::{SimApp, SimConfig};

#[tokio::test]
async fn normal_mode_returns_the_same_token_then_rotates_in_the_last_window() {
    let sim = start(SimConfig::new().app(SimApp::new(APPID, SECRET).ttl(1000).stable_rotate(300))).await;
    let (s1, e1) = sim.stable_ok(APPID, SECRET, false).await;
    assert_eq!(e1, 1000);
    sim.advance(100).await;
    let (s, e) = sim.stable_ok(APPID, SECRET, false).await;
    assert_eq!(s, s1, "same token while more than 300 s remain");
    assert!((899..=900).contains(&e), "expires_in is what remains: {e}");

    sim.advance(601).await; // 299 s left
    let (s2, e2) = sim.stable_ok(APPID, SECRET, false).await;
    assert_ne!(s2, s1, "rotated within the last 300 s");
    assert_eq!(e2, 1000);
    assert_eq!(sim.use_token(&s1).await, 0, "the old one stays valid until its own expiry");
    let (s, _) = sim.stable_ok(APPID, SECRET, false).await;
    assert_eq!(s, s2);

    sim.advance(299).await;
    assert_eq!(sim.use_token(&s1).await, 42001);
    assert_eq!(sim.use_token(&s2).await, 0);
}

#[tokio::test]
async fn force_refresh_is_honoured_20_times_a_day_30_s_apart() {
    let sim = start(SimConfig::new().app(SimApp::new(APPID, SECRET))).await;
    sim.to_next_shanghai_day(60).await;
    let (s0, _) = sim.stable_ok(APPID, SECRET, false).await;

    let (mut current, _) = sim.stable_ok(APPID, SECRET, true).await;
    assert_ne!(current, s0);
    assert_eq!(sim.use_token(&s0).await, 40001, "force_refresh invalidates the old token at once");

    // Within 30 s of the last honoured force: nothing is refreshed.
    sim.advance(29).await;
    let (same, _) = sim.stable_ok(APPID, SECRET, true).await;
    assert_eq!(same, current);
    assert_eq!(sim.use_token(&current).await, 0);

    sim.advance(1).await;
    for n in 2..=20 {
        let (next, e) = sim.stable_ok(APPID, SECRET, true).await;
        assert_ne!(next, current, "forced refresh #{n} issues a new token");
        assert_eq!(e, 7200);
        assert_eq!(sim.use_token(&current).await, 40001);
        current = next;
        sim.advance(30).await;
    }
    // The 21st of the day is refused: the current token comes back unchanged and still works.
    let (same, e) = sim.stable_ok(APPID, SECRET, true).await;
    assert_eq!(same, current);
    assert!(e < 7200, "{e}");
    assert_eq!(sim.use_token(&current).await, 0);
    let (same, _) = sim.stable_ok(APPID, SECRET, false).await;
    assert_eq!(same, current, "normal mode still returns it");

    // A new day in Shanghai gives 20 more.
    sim.to_next_shanghai_day(0).await;
    let (next, _) = sim.stable_ok(APPID, SECRET, true).await;
    assert_ne!(next, current);
}

#[tokio::test]
async fn force_refresh_also_ends_a_token_rotated_out_in_normal_mode() {
    let sim = start(SimConfig::new().app(SimApp::new(APPID, SECRET).ttl(1000).stable_rotate(300))).await;
    let (s1, _) = sim.stable_ok(APPID, SECRET, false).await;
    sim.advance(800).await;
    let (s2, _) = sim.stable_ok(APPID, SECRET, false).await;
    assert_ne!(s1, s2);
    let (s3, _) = sim.stable_ok(APPID, SECRET, true).await;
    assert_ne!(s3, s2);
    assert_eq!(sim.use_token(&s1).await, 40001);
    assert_eq!(sim.use_token(&s2).await, 40001);
}

#[tokio::test]
async fn classic_and_stable_never_affect_each_other() {
    let sim = start(SimConfig::new().app(SimApp::new(APPID, SECRET).overlap(1))).await;
    let (s1, _) = sim.stable_ok(APPID, SECRET, false).await;
    let c1 = sim.classic_ok(APPID, SECRET).await;
    let c2 = sim.classic_ok(APPID, SECRET).await;
    let _c3 = sim.classic_ok(APPID, SECRET).await;
    assert_eq!(sim.use_token(&c1).await, 40001);
    assert_eq!(sim.use_token(&s1).await, 0, "classic calls leave the stable token alone");
    assert_eq!(sim.stable_ok(APPID, SECRET, false).await.0, s1);

    let (s2, _) = sim.stable_ok(APPID, SECRET, true).await;
    assert_ne!(s2, s1);
    assert_eq!(sim.use_token(&c2).await, 0, "force_refresh leaves classic tokens alone");
    sim.advance(2).await;
    assert_eq!(sim.use_token(&c2).await, 40001, "…which keep their own overlap rules");
    assert_eq!(sim.use_token(&s2).await, 0);
}

#[tokio::test]
async fn bad_requests_have_their_errcodes() {
    let sim = start(SimConfig::new().app(SimApp::new(APPID, SECRET))).await;
    assert_wx_err(&sim.stable("wx0000000000000000", SECRET, false).await, 40013, "invalid appid");
    assert_wx_err(&sim.stable(APPID, "wrong", false).await, 40125, "invalid appsecret");
    let (_, v) = sim
        .post(
            "/cgi-bin/stable_token",
            json!({ "grant_type": "authorization_code", "appid": APPID, "secret": SECRET }),
        )
        .await;
    assert_wx_err(&v, 40002, "invalid grant_type");
    let (_, v) = sim.post_raw("/cgi-bin/stable_token", "{\"grant_type\":").await;
    assert_wx_err(&v, 47001, "data format error");
    let (_, v) = sim.post_raw("/cgi-bin/stable_token", "[1,2]").await;
    assert_wx_err(&v, 47001, "data format error");
    let (_, v) = sim
        .post(
            "/cgi-bin/stable_token",
            json!({ "grant_type": "client_credential", "appid": APPID, "secret": SECRET, "force_refresh": "yes" }),
        )
        .await;
    assert_wx_err(&v, 47001, "data format error");
    let (_, v) = sim.post_raw("/cgi-bin/stable_token", "").await;
    assert_wx_err(&v, 44002, "empty post data");
    // force_refresh may be left out.
    let (_, v) = sim
        .post(
            "/cgi-bin/stable_token",
            json!({ "grant_type": "client_credential", "appid": APPID, "secret": SECRET }),
        )
        .await;
    assert!(v["access_token"].is_string(), "{v}");
}
