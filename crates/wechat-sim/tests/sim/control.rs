//! The control API: call counters, reset, clock.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wechat_sim::{SimApp, SimConfig};

fn count(calls: &Value, appid: &str, endpoint: &str) -> u64 {
    calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["appid"] == appid && c["endpoint"] == endpoint)
        .map_or(0, |c| c["count"].as_u64().unwrap())
}

#[tokio::test]
async fn every_call_is_counted_per_app_and_endpoint() {
    let sim = start(SimConfig::new().app(SimApp::new(APPID, SECRET)).app(SimApp::new(APPID2, SECRET2))).await;
    let t = sim.classic_ok(APPID, SECRET).await;
    sim.classic(APPID, "wrong").await;
    sim.classic_ok(APPID2, SECRET2).await;
    sim.stable_ok(APPID, SECRET, false).await;
    sim.use_token(&t).await;
    sim.use_token(&t).await;
    sim.use_token("unknown-token").await;
    sim.get("/cgi-bin/token").await;
    sim.get("/cgi-bin/nowhere").await;

    let (s, calls) = sim.get("/__sim/calls").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(count(&calls, APPID, "/cgi-bin/token"), 2, "{calls}");
    assert_eq!(count(&calls, APPID2, "/cgi-bin/token"), 1);
    assert_eq!(count(&calls, "", "/cgi-bin/token"), 1, "no appid: counted under \"\"");
    assert_eq!(count(&calls, APPID, "/cgi-bin/stable_token"), 1, "appid from the JSON body");
    assert_eq!(count(&calls, APPID, "/cgi-bin/get_api_domain_ip"), 2, "appid from the token");
    assert_eq!(count(&calls, "", "/cgi-bin/get_api_domain_ip"), 1);
    assert_eq!(count(&calls, "", "/cgi-bin/nowhere"), 1);
    assert_eq!(calls["pushes_ok"], 0);

    assert_eq!(sim.h.calls(APPID, "/cgi-bin/token"), 2);
    assert_eq!(sim.h.total_calls("/cgi-bin/token"), 4);
    assert_eq!(sim.h.total_calls("/cgi-bin/get_api_domain_ip"), 3);
    let _ = sim.get("/__sim/calls").await;
    assert_eq!(sim.h.total_calls("/__sim/calls"), 0, "control calls are not WeChat calls");
}

#[tokio::test]
async fn reset_forgets_credentials_counters_faults_and_quotas() {
    let sim = start(SimConfig::new().app(SimApp::new(APPID, SECRET).quota(1))).await;
    sim.to_next_shanghai_day(60).await;
    let t = sim.classic_ok(APPID, SECRET).await;
    assert_eq!(errcode(&sim.classic(APPID, SECRET).await), 45009);
    let (s1, _) = sim.stable_ok(APPID, SECRET, false).await;
    sim.add_fault(json!({ "endpoint": "/cgi-bin/user/info", "kind": "errcode", "errcode": -1 })).await;
    let before = sim.now().await;

    let (s, v) = sim.post("/__sim/reset", json!({})).await;
    assert_eq!((s, &v["ok"]), (StatusCode::OK, &json!(true)));
    assert_eq!(sim.get("/__sim/calls").await.1["calls"], json!([]));
    assert_eq!(sim.get("/__sim/faults").await.1["faults"], json!([]));
    assert_eq!(sim.use_token(&t).await, 40001, "tokens are forgotten");
    assert!(sim.now().await >= before, "the clock does not go back");
    let t2 = sim.classic_ok(APPID, SECRET).await;
    let (_, v) = sim.get(&format!("/cgi-bin/user/info?access_token={t2}&openid=o")).await;
    assert_eq!(v["openid"], "o");
    assert_ne!(sim.stable_ok(APPID, SECRET, false).await.0, s1);
    // The config stays.
    assert_eq!(errcode(&sim.classic(APPID, "wrong").await), 40125);
}

#[tokio::test]
async fn the_clock_moves_forward_only_and_by_request() {
    let sim = start(SimConfig::new().app(SimApp::new(APPID, SECRET))).await;
    let (_, v) = sim.get("/__sim/clock").await;
    let t0 = v["now"].as_u64().unwrap();
    assert!(
        t0.abs_diff(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs())
            <= 2
    );
    let (_, v) = sim.post("/__sim/clock", json!({ "advance_secs": 86_400 })).await;
    assert!(v["now"].as_u64().unwrap() >= t0 + 86_400);
    assert_eq!(v["offset_secs"], 86_400);
    sim.h.advance_clock(10);
    assert!(sim.h.now_secs() >= t0 + 86_410);
    let (s, _) = sim.post("/__sim/clock", json!({ "advance_secs": -5 })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = sim.post_raw("/__sim/clock", "{").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn peak_in_flight_counts_calls_answered_at_once() {
    let sim = start(SimConfig::new().app(SimApp::new(APPID, SECRET))).await;
    assert_eq!(sim.get("/__sim/calls").await.1["peak_in_flight"], 0);
    // Five calls held 300 ms each, sent together, then one alone.
    sim.add_fault(json!({ "endpoint": "/cgi-bin/token", "kind": "delay", "delay_ms": 300, "count": 5 }))
        .await;
    let calls: Vec<_> = (0..5).map(|_| sim.classic(APPID, SECRET)).collect();
    futures::future::join_all(calls).await;
    sim.classic_ok(APPID, SECRET).await;
    assert_eq!(sim.get("/__sim/calls").await.1["peak_in_flight"], 5);
    assert_eq!(sim.h.peak_in_flight(), 5);
    sim.post("/__sim/reset", json!({})).await;
    assert_eq!(sim.h.peak_in_flight(), 0, "reset starts the count again");
}
