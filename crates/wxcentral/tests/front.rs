//! Plain credential reads are answered in front of the router (`wxcentral::front`); anything
//! else, percent-encoded paths included, takes the router. Both must answer alike and be counted
//! alike. Its own test binary, so the process-wide metrics count this test's requests alone.

mod common;

use common::*;
use serde_json::Value;

/// Status and body, without `expires_in` (which moves with the clock between two reads).
async fn answer(c: &reqwest::Client, url: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = c.get(url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "application/json", "{url}");
    let mut body: Value = r.json().await.unwrap();
    if let Some(o) = body.as_object_mut() {
        o.remove("expires_in");
    }
    (status, body)
}

/// Whether the router's trace layer logged a request for `path`.
fn routed(path: &str) -> bool {
    logs().lines().any(|l| l.contains("finished processing request") && l.contains(&format!("path={path}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_and_router_answer_alike() {
    let apps = [TestApp::new("wxfront00000000001"), TestApp::new("wxfront00000000002")];
    let sim = start_sim(&apps).await;
    let config = config(&sim, &apps);
    let server = Server::start(&config).await;
    let c = http();
    let ok = || {
        metric(
            &server,
            "wxcentral_http_requests_total",
            &[("route", "/v1/apps/{appid}/{kind}"), ("status", "200")],
        )
    };
    let before = ok().await.unwrap_or(0.0);

    // `%77` is `w`: the same appid, spelled so that only the router can read it.
    let cases = [
        ("wxfront00000000001/access_token", "%77xfront00000000001/access_token", Some(ADMIN_KEY), 200),
        ("wxfront00000000001/access_token", "wxfront00000000001/access_%74oken", Some(READER_KEY), 200),
        ("wxfront00000000002/access_token", "%77xfront00000000002/access_token", Some(READER_KEY), 403),
        ("wxfront00000000001/access_token", "%77xfront00000000001/access_token", None, 401),
        ("wxfront00000000001/access_token", "%77xfront00000000001/access_token", Some("wrong-key"), 401),
        ("wxnope/access_token", "%77xnope/access_token", Some(ADMIN_KEY), 404),
        ("wxfront00000000001/jsapi_ticket", "%77xfront00000000001/jsapi_ticket", Some(ADMIN_KEY), 404),
    ];
    let mut token = String::new();
    for (fast, encoded, key, status) in cases {
        let a = answer(&c, &server.url(&format!("/v1/apps/{fast}")), key).await;
        let b = answer(&c, &server.url(&format!("/v1/apps/{encoded}")), key).await;
        assert_eq!(a.0, status, "{fast}: {}", a.1);
        assert_eq!(a, b, "{fast} and {encoded} answer alike");
        if status == 200 {
            token = a.1["value"].as_str().unwrap().to_owned();
            sim_accepts(&sim, &token).await.unwrap();
        }
    }
    assert_eq!(sim.calls("wxfront00000000001", "/cgi-bin/stable_token"), 1);
    let after = ok().await.unwrap_or(0.0);
    assert_eq!(after - before, 4.0, "both paths count their reads under the route template");

    // The router's trace layer logs every request it handles; the fast path answered the plain
    // spellings itself, so only the percent-encoded ones appear there.
    assert!(routed("/v1/apps/%77xfront00000000001/access_token"), "the router logs what it handles");
    assert!(!routed("/v1/apps/wxfront00000000001/access_token"), "plain reads never reach the router");

    server.stop().await;
    let mut secrets = config_secrets(&config);
    secrets.push(token);
    assert_not_logged(secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_calls_are_answered_in_front_of_the_router_and_counted_by_template() {
    let apps = [TestApp::new("wxfrontproxy000001").classic()];
    let sim = start_sim(&apps).await;
    let config = config(&sim, &apps);
    let server = Server::start(&config).await;
    let c = http();
    // The token through the drop-in endpoint, not the native read: the other test in this binary
    // counts native reads in the process-wide metrics.
    let url = server.url(&format!(
        "/cgi-bin/token?grant_type=client_credential&appid=wxfrontproxy000001&secret={}",
        apps[0].sim.secret
    ));
    let token = get_json(&c, &url, ADMIN_KEY).await.1["access_token"].as_str().unwrap().to_owned();
    let counted =
        || metric(&server, "wxcentral_http_requests_total", &[("route", "/cgi-bin/user"), ("status", "200")]);
    let before = counted().await.unwrap_or(0.0);
    for i in 0..3 {
        let url = server.url(&format!("/cgi-bin/user/info?access_token={token}&openid=o{i}"));
        let v: Value = c.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["openid"], format!("o{i}"), "{v}");
    }
    // An unknown token: WeChat's 40001 from the hub, no upstream call, still counted.
    let (_, v) = get_json(&c, &server.url("/cgi-bin/user/info?access_token=never-issued"), ADMIN_KEY).await;
    assert_eq!(v["errcode"], 40001, "{v}");
    assert_eq!(sim.calls("wxfrontproxy000001", "/cgi-bin/user/info"), 3);
    assert_eq!(counted().await.unwrap_or(0.0) - before, 4.0, "counted under the path's template");
    // The hub's own WeChat paths still take the router.
    let url = server.url("/cgi-bin/token?grant_type=client_credential&appid=wxfrontproxy000001&secret=x");
    assert_eq!(get_json(&c, &url, ADMIN_KEY).await.1["errcode"], 40125);

    assert!(routed("/cgi-bin/token"), "the drop-in token endpoint is the router's");
    assert!(!routed("/cgi-bin/user/info"), "proxied calls never reach the router");
    server.stop().await;
    let mut secrets = config_secrets(&config);
    secrets.push(token);
    assert_not_logged(secrets);
}
