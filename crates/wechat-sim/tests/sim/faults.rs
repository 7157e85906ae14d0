//! Fault injection: each kind, by count and by probability, scoped by endpoint and appid. A
//! faulted call is counted and never changes state.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};
use wechat_sim::{SimApp, SimConfig};

const TOKEN: &str = "/cgi-bin/token";

async fn sim() -> Sim {
    start(SimConfig::new().app(SimApp::new(APPID, SECRET).overlap(1)).app(SimApp::new(APPID2, SECRET2))).await
}

#[tokio::test]
async fn errcode_faults_fire_count_times_and_change_nothing() {
    let sim = sim().await;
    let t1 = sim.classic_ok(APPID, SECRET).await;
    sim.add_fault(json!({ "endpoint": TOKEN, "kind": "errcode", "errcode": -1, "count": 2 })).await;
    for _ in 0..2 {
        assert_wx_err(&sim.classic(APPID, SECRET).await, -1, "system error");
    }
    // No token was issued by the faulted calls: t1 has no successor, so no overlap runs out.
    sim.advance(2).await;
    assert_eq!(sim.use_token(&t1).await, 0);
    let t2 = sim.classic_ok(APPID, SECRET).await;
    assert_ne!(t1, t2);
    assert_eq!(sim.h.calls(APPID, TOKEN), 4, "faulted calls are counted");
    assert_eq!(sim.get("/__sim/faults").await.1["faults"], json!([]), "a spent fault is gone");
}

#[tokio::test]
async fn errcode_faults_use_wechats_texts() {
    let sim = sim().await;
    for (code, text) in [
        (45009, "reach max api daily quota limit".to_owned()),
        (40164, "invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1, not in whitelist".to_owned()),
        (40001, "invalid credential, access_token is invalid or not latest".to_owned()),
        (61023, "refresh_token is invalid".to_owned()),
    ] {
        sim.add_fault(json!({ "endpoint": TOKEN, "kind": "errcode", "errcode": code, "count": 1 })).await;
        assert_wx_err(&sim.classic(APPID, SECRET).await, code, &text);
    }
}

#[tokio::test]
async fn status_faults_answer_that_status() {
    let sim = sim().await;
    sim.add_fault(json!({ "endpoint": TOKEN, "kind": "status", "status": 503, "count": 1 })).await;
    let r = sim
        .c
        .get(sim.url(&format!("{TOKEN}?grant_type=client_credential&appid={APPID}&secret={SECRET}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().await.unwrap().contains("503"));
    sim.classic_ok(APPID, SECRET).await;
}

#[tokio::test]
async fn delay_faults_answer_late_but_normally() {
    let sim = sim().await;
    sim.add_fault(json!({ "endpoint": TOKEN, "kind": "delay", "delay_ms": 300, "count": 1 })).await;
    let started = Instant::now();
    sim.classic_ok(APPID, SECRET).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(sim.get("/__sim/faults").await.1["faults"], json!([]), "fired once, then gone");
    sim.classic_ok(APPID, SECRET).await;
}

#[tokio::test]
async fn timeout_faults_hang_until_reset() {
    let sim = sim().await;
    sim.add_fault(json!({ "endpoint": TOKEN, "kind": "timeout", "count": 2 })).await;
    let url = sim.url(&format!("{TOKEN}?grant_type=client_credential&appid={APPID}&secret={SECRET}"));
    let err = sim.c.get(&url).timeout(Duration::from_millis(300)).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");

    let hung = tokio::spawn({
        let (c, url) = (sim.c.clone(), url.clone());
        async move { c.get(url).send().await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!hung.is_finished());
    let (s, _) = sim.post("/__sim/reset", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let status =
        tokio::time::timeout(Duration::from_secs(2), hung).await.expect("released by reset").unwrap();
    assert_eq!(status.unwrap(), StatusCode::GATEWAY_TIMEOUT);
    sim.classic_ok(APPID, SECRET).await;
}

#[tokio::test]
async fn malformed_faults_answer_broken_json() {
    let sim = sim().await;
    sim.add_fault(json!({ "endpoint": TOKEN, "kind": "malformed", "count": 1 })).await;
    let r = sim
        .c
        .get(sim.url(&format!("{TOKEN}?grant_type=client_credential&appid={APPID}&secret={SECRET}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_err(), "{text}");
    assert!(
        wechat_proto::api::parse_response::<wechat_proto::api::AccessTokenResponse>(text.as_bytes()).is_err()
    );
    sim.classic_ok(APPID, SECRET).await;
}

#[tokio::test]
async fn probability_zero_never_fires_and_one_always_does() {
    let sim = sim().await;
    sim.add_fault(json!({ "endpoint": TOKEN, "kind": "errcode", "errcode": -1, "probability": 0.0 })).await;
    for _ in 0..20 {
        sim.classic_ok(APPID, SECRET).await;
    }
    sim.c.delete(sim.url("/__sim/faults")).send().await.unwrap();
    sim.add_fault(json!({ "endpoint": TOKEN, "kind": "errcode", "errcode": -1, "probability": 1.0 })).await;
    for _ in 0..20 {
        assert_eq!(errcode(&sim.classic(APPID, SECRET).await), -1);
    }
    let r = sim.c.delete(sim.url("/__sim/faults")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    sim.classic_ok(APPID, SECRET).await;
}

#[tokio::test]
async fn probability_half_fires_about_half_the_time() {
    let sim = sim().await;
    sim.add_fault(json!({ "endpoint": "/cgi-bin/get_api_domain_ip", "kind": "errcode", "errcode": -1, "probability": 0.5 })).await;
    let t = sim.classic_ok(APPID, SECRET).await;
    let mut fired = 0;
    for _ in 0..200 {
        if sim.use_token(&t).await == -1 {
            fired += 1;
        }
    }
    // Outside 50..=150 has a probability below 1e-12.
    assert!((50..=150).contains(&fired), "{fired}");
}

#[tokio::test]
async fn faults_are_scoped_by_endpoint_and_appid() {
    let sim = sim().await;
    sim.add_fault(json!({ "endpoint": TOKEN, "appid": APPID, "kind": "errcode", "errcode": 40164 })).await;
    assert_eq!(errcode(&sim.classic(APPID, SECRET).await), 40164);
    sim.classic_ok(APPID2, SECRET2).await;
    sim.stable_ok(APPID, SECRET, false).await;
    sim.c.delete(sim.url("/__sim/faults")).send().await.unwrap();

    // "*" matches every WeChat path; the appid may come from the token.
    let t2 = sim.classic_ok(APPID2, SECRET2).await;
    sim.add_fault(json!({ "endpoint": "*", "appid": APPID2, "kind": "status", "status": 502, "count": 2 }))
        .await;
    let r =
        sim.c.get(sim.url(&format!("/cgi-bin/get_api_domain_ip?access_token={t2}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let r = sim
        .c
        .post(sim.url("/cgi-bin/stable_token"))
        .json(&json!({ "grant_type": "client_credential", "appid": APPID2, "secret": SECRET2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    sim.classic_ok(APPID, SECRET).await;
    assert_eq!(sim.use_token(&t2).await, 0);
}

#[tokio::test]
async fn bad_fault_specs_are_refused() {
    let sim = sim().await;
    for spec in [
        json!({ "endpoint": TOKEN, "kind": "errcode" }),
        json!({ "endpoint": TOKEN, "kind": "errcode", "errcode": -1, "probability": 1.5 }),
        json!({ "endpoint": TOKEN, "kind": "status", "status": 42 }),
        json!({ "endpoint": TOKEN, "kind": "delay" }),
        json!({ "endpoint": TOKEN, "kind": "explode" }),
        json!({ "kind": "timeout" }),
    ] {
        let (s, v) = sim.post("/__sim/faults", spec.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{spec} -> {v}");
        assert_eq!(v["ok"], false);
    }
    let (s, _) = sim.post_raw("/__sim/faults", "not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    sim.classic_ok(APPID, SECRET).await;
}

#[tokio::test]
async fn shutdown_releases_hung_requests_promptly() {
    let Sim { h, c } = sim().await;
    let url = format!("{}{TOKEN}?grant_type=client_credential&appid={APPID}&secret={SECRET}", h.base_url());
    let fault = json!({ "endpoint": TOKEN, "kind": "timeout" });
    let r = c.post(format!("{}/__sim/faults", h.base_url())).json(&fault).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let hung = tokio::spawn(async move { c.get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    h.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let answer = tokio::time::timeout(Duration::from_secs(2), hung).await.expect("released").unwrap();
    // Either the 504 of a released hang or a closed connection: never a hang.
    if let Ok(status) = answer {
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    }
}
