//! `getticket`: one ticket per app and type until it expires, whichever valid token asks.

use crate::common::*;
use serde_json::Value;
use wechat_sim::{SimApp, SimConfig};

async fn ticket(sim: &Sim, token: &str, kind: &str) -> Value {
    sim.get(&format!("/cgi-bin/ticket/getticket?access_token={token}&type={kind}")).await.1
}

#[tokio::test]
async fn the_same_ticket_until_it_expires_whatever_token_asks() {
    let sim = start(
        SimConfig::new()
            .app(SimApp::new(APPID, SECRET).ttl(100).overlap(1).ticket_ttl(10))
            .app(SimApp::new(APPID2, SECRET2)),
    )
    .await;
    let c1 = sim.classic_ok(APPID, SECRET).await;
    let v = ticket(&sim, &c1, "jsapi").await;
    assert_eq!((v["errcode"].as_i64(), v["errmsg"].as_str()), (Some(0), Some("ok")), "{v}");
    assert_eq!(v["expires_in"], 10);
    let j1 = v["ticket"].as_str().unwrap().to_owned();

    let (s1, _) = sim.stable_ok(APPID, SECRET, false).await;
    let _c2 = sim.classic_ok(APPID, SECRET).await;
    let c3 = sim.classic_ok(APPID, SECRET).await;
    sim.advance(4).await;
    assert_eq!(sim.use_token(&c1).await, 40001, "the token that fetched it is gone…");
    for t in [&s1, &c3] {
        let v = ticket(&sim, t, "jsapi").await;
        assert_eq!(v["ticket"].as_str(), Some(j1.as_str()), "…the ticket is not");
        assert!(v["expires_in"].as_u64().unwrap() <= 6);
    }
    let card = ticket(&sim, &s1, "wx_card").await;
    assert_ne!(card["ticket"].as_str(), Some(j1.as_str()), "each type has its own ticket");

    let other = sim.classic_ok(APPID2, SECRET2).await;
    assert_ne!(ticket(&sim, &other, "jsapi").await["ticket"].as_str(), Some(j1.as_str()), "and each app");

    sim.advance(6).await;
    let v = ticket(&sim, &s1, "jsapi").await;
    assert_ne!(v["ticket"].as_str(), Some(j1.as_str()), "a new one after expiry");
    assert_eq!(v["expires_in"], 10);
}

#[tokio::test]
async fn getticket_checks_token_and_type() {
    let sim = start(SimConfig::new().app(SimApp::new(APPID, SECRET).quota(2))).await;
    let t = sim.classic_ok(APPID, SECRET).await;
    assert_wx_err(&ticket(&sim, &t, "oauth").await, 40097, "invalid args");
    assert_wx_err(
        &ticket(&sim, "bogus", "jsapi").await,
        40001,
        "invalid credential, access_token is invalid or not latest",
    );
    let (_, v) = sim.get("/cgi-bin/ticket/getticket?type=jsapi").await;
    assert_wx_err(&v, 41001, "access_token missing");
    // getticket has its own daily quota.
    sim.to_next_shanghai_day(60).await;
    let t = sim.classic_ok(APPID, SECRET).await;
    assert!(ticket(&sim, &t, "jsapi").await["ticket"].is_string());
    assert!(ticket(&sim, &t, "wx_card").await["ticket"].is_string());
    assert_wx_err(&ticket(&sim, &t, "jsapi").await, 45009, "reach max api daily quota limit");
}
