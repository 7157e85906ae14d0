//! The WeChat-compatible surface over real HTTP against wechat-sim: token endpoints in WeChat's
//! shape, guarded force_refresh, the token-injecting proxy with its one retry, secret-bearing
//! paths, token-free calls, the safety rules, and 50 MiB streamed both ways.

mod common;

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wechat_proto::api::{
    PATH_GETTICKET, PATH_GETWXACODEUNLIMIT, PATH_JSCODE2SESSION, PATH_STABLE_TOKEN, PATH_TOKEN,
    PATH_USER_INFO, TicketType,
};
use wechat_sim::SimHandle;

/// Every WeChat call the simulator counted, all apps and endpoints together.
async fn sim_total(sim: &SimHandle) -> u64 {
    let v: Value =
        http().get(format!("{}/__sim/calls", sim.base_url())).send().await.unwrap().json().await.unwrap();
    v["calls"].as_array().unwrap().iter().map(|c| c["count"].as_u64().unwrap()).sum()
}

async fn wx_get(url: &str) -> (u16, Value) {
    let r = http().get(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn wx_post(url: &str, body: &Value) -> (u16, Value) {
    let r = http().post(url).json(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn native_token(server: &Server, appid: &str) -> String {
    let (s, v) = get_json(&http(), &server.url(&format!("/v1/apps/{appid}/access_token")), ADMIN_KEY).await;
    assert_eq!(s, 200, "{v}");
    v["value"].as_str().unwrap().to_owned()
}

async fn invalidate(sim: &SimHandle, appid: &str) {
    let v = common::platform::sim_post(sim, "/__sim/invalidate", json!({ "appid": appid })).await;
    assert!(v["invalidated"].as_u64().unwrap() >= 1, "{v}");
}

fn errcode(v: &Value) -> i64 {
    v["errcode"].as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoints_answer_in_wechat_shape_and_never_call_wechat() {
    let a = TestApp::new("wxdropa").classic().tickets(&[TicketType::Jsapi]);
    let b = TestApp::new("wxdropb");
    let sim = start_sim(&[a.clone(), b.clone()]).await;
    let config = config(&sim, &[a.clone(), b.clone()]);
    let server = Server::start(&config).await;
    let central = native_token(&server, "wxdropa").await;
    native_token(&server, "wxdropb").await;
    let ticket = get_json(&http(), &server.url("/v1/apps/wxdropa/jsapi_ticket"), ADMIN_KEY).await.1;
    let before = sim_total(&sim).await;

    let token_url = |appid: &str, secret: &str| {
        server.url(&format!("{PATH_TOKEN}?grant_type=client_credential&appid={appid}&secret={secret}"))
    };
    // The AppSecret, and a client key in its place, both get the central value.
    for secret in [a.sim.secret.as_str(), READER_KEY, ADMIN_KEY] {
        let (s, v) = wx_get(&token_url("wxdropa", secret)).await;
        assert_eq!(s, 200);
        assert_eq!(v["access_token"], central.as_str(), "{v}");
        let expires_in = v["expires_in"].as_i64().unwrap();
        assert!(expires_in > 0 && expires_in <= 7200, "{v}");
        assert!(v.get("errcode").is_none(), "WeChat's success shape: {v}");
    }
    let (s, v) = wx_post(
        &server.url(PATH_STABLE_TOKEN),
        &json!({ "grant_type": "client_credential", "appid": "wxdropa", "secret": REFRESHER_KEY }),
    )
    .await;
    assert_eq!((s, v["access_token"].as_str()), (200, Some(central.as_str())), "{v}");
    let (s, v) = wx_get(&server.url(&format!("{PATH_GETTICKET}?access_token={central}&type=jsapi"))).await;
    assert_eq!(s, 200);
    assert_eq!((errcode(&v), v["ticket"].as_str()), (0, ticket["value"].as_str()), "{v}");
    assert!(v["expires_in"].as_i64().unwrap() > 0);

    // Errors, each in WeChat's shape: wrong secret, a key without the app's scope, unknown
    // appid, missing fields, wrong grant type, unknown or missing token, malformed JSON.
    let cases: Vec<(String, Option<Value>, i64)> = vec![
        (token_url("wxdropa", "not-the-secret"), None, 40125),
        (token_url("wxdropb", READER_KEY), None, 40125),
        (token_url("wxnobody", ADMIN_KEY), None, 40013),
        (server.url(&format!("{PATH_TOKEN}?grant_type=client_credential&secret=x")), None, 41002),
        (server.url(&format!("{PATH_TOKEN}?grant_type=client_credential&appid=wxdropa")), None, 41004),
        (server.url(&format!("{PATH_TOKEN}?grant_type=password&appid=wxdropa&secret=x")), None, 40002),
        (server.url(&format!("{PATH_GETTICKET}?access_token=forged-token-value&type=jsapi")), None, 40001),
        (server.url(&format!("{PATH_GETTICKET}?type=jsapi")), None, 41001),
        (server.url(&format!("{PATH_USER_INFO}?access_token=forged-token-value&openid=o1")), None, 40001),
        (server.url(&format!("{PATH_USER_INFO}?openid=o1")), None, 41001),
        (
            server.url(PATH_STABLE_TOKEN),
            Some(json!({ "grant_type": "client_credential", "appid": "wxdropa", "secret": "wrong" })),
            40125,
        ),
        (
            server.url(PATH_STABLE_TOKEN),
            Some(json!({ "grant_type": "client_credential", "appid": "wxnobody", "secret": "wrong" })),
            40013,
        ),
        (server.url(PATH_STABLE_TOKEN), Some(json!(["not", "an", "object"])), 47001),
    ];
    for (url, body, want) in &cases {
        let (s, v) = match body {
            Some(b) => wx_post(url, b).await,
            None => wx_get(url).await,
        };
        assert_eq!((s, errcode(&v)), (200, *want), "{url}: {v}");
        assert!(v["errmsg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    let r = http().post(server.url(PATH_STABLE_TOKEN)).body("{not json").send().await.unwrap();
    assert_eq!(errcode(&r.json().await.unwrap()), 47001);
    assert_eq!(sim_total(&sim).await, before, "no token request and no refused call reached WeChat");
    assert_not_logged(config_secrets(&config).into_iter().chain([central]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_force_refreshes_cost_one_refresh_at_most() {
    let a = TestApp::new("wxforce").classic();
    let sim = start_sim(std::slice::from_ref(&a)).await;
    let mut config = config(&sim, std::slice::from_ref(&a));
    // Long enough that fifty calls on a loaded machine still fall inside it.
    config.refresh.report_guard_secs = Some(3);
    let server = Server::start(&config).await;
    let first = native_token(&server, "wxforce").await;
    let body = json!({ "grant_type": "client_credential", "appid": "wxforce", "secret": a.sim.secret, "force_refresh": true });
    // A value younger than the guard: fifty force_refresh calls are answered with it.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (url, body) = (server.url(PATH_STABLE_TOKEN), body.clone());
        tasks.push(tokio::spawn(async move { wx_post(&url, &body).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().1["access_token"], first.as_str());
    }
    assert_eq!(sim.calls("wxforce", PATH_TOKEN), 1);
    // Older than the guard: fifty at once are one refresh, and all get its value.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (url, body) = (server.url(PATH_STABLE_TOKEN), body.clone());
        tasks.push(tokio::spawn(async move { wx_post(&url, &body).await }));
    }
    let mut values = std::collections::HashSet::new();
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert_eq!(s, 200, "{v}");
        values.insert(v["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(sim.calls("wxforce", PATH_TOKEN), 2, "fifty force_refresh calls, one refresh");
    assert_eq!(values.len(), 1);
    let new = values.into_iter().next().unwrap();
    assert_ne!(new, first);
    sim_accepts(&sim, &new).await.unwrap();

    // The same caller asking /cgi-bin/token again for the value it was just given (an SDK that
    // got 40001 calling WeChat directly) is a guarded report too; another caller is not.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let url = |secret: &str| {
        server.url(&format!("{PATH_TOKEN}?grant_type=client_credential&appid=wxforce&secret={secret}"))
    };
    assert_eq!(wx_get(&url(&a.sim.secret)).await.1["access_token"], new.as_str());
    assert_eq!(wx_get(&url(ADMIN_KEY)).await.1["access_token"], new.as_str(), "another caller");
    assert_eq!(sim.calls("wxforce", PATH_TOKEN), 2);
    let again = wx_get(&url(&a.sim.secret)).await.1;
    assert_eq!(sim.calls("wxforce", PATH_TOKEN), 3, "the repeat was a report: one refresh");
    assert_ne!(again["access_token"], new.as_str());
    // Asking again at once: the new value is younger than the guard, answered as it is.
    assert_eq!(wx_get(&url(&a.sim.secret)).await.1["access_token"], again["access_token"]);
    assert_eq!(sim.calls("wxforce", PATH_TOKEN), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_calls_hitting_40001_at_once_cost_one_refresh_and_all_succeed() {
    let a = TestApp::new("wxproxy").classic();
    let sim = start_sim(std::slice::from_ref(&a)).await;
    let config = config(&sim, std::slice::from_ref(&a));
    let server = Server::start(&config).await;
    let token = native_token(&server, "wxproxy").await;
    let (s, v) = wx_get(&server.url(&format!("{PATH_USER_INFO}?access_token={token}&openid=o-first"))).await;
    assert_eq!((s, v["openid"].as_str()), (200, Some("o-first")), "{v}");
    assert_eq!(sim.calls("wxproxy", PATH_TOKEN), 1);

    // Behind the hub's back, every token of the app dies.
    invalidate(&sim, "wxproxy").await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = server.url(&format!("{PATH_USER_INFO}?access_token={token}&openid=o{i}&lang=en"));
        tasks.push(tokio::spawn(async move { (i, wx_get(&url).await) }));
    }
    for t in tasks {
        let (i, (s, v)) = t.await.unwrap();
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["openid"], format!("o{i}"), "every call succeeds: {v}");
        assert_eq!(v["language"], "en", "the query came through: {v}");
    }
    assert_eq!(sim.calls("wxproxy", PATH_TOKEN), 2, "one refresh for 200 rejected calls");
    let calls = sim.calls("wxproxy", PATH_USER_INFO);
    assert!((201..=401).contains(&calls), "each call sent at most twice: {calls}");
    // The SDK's old token still names the app (within the overlap) and is replaced.
    let (s, v) = wx_get(&server.url(&format!("{PATH_USER_INFO}?access_token={token}&openid=o-late"))).await;
    assert_eq!((s, v["openid"].as_str()), (200, Some("o-late")), "{v}");

    // WeChat answering 40001 every time: one retry, never more, and its answer passes through.
    sim_fault(&sim, json!({ "endpoint": PATH_USER_INFO, "kind": "errcode", "errcode": 40001 })).await;
    let before = sim.calls("wxproxy", PATH_USER_INFO);
    let (s, v) = wx_get(&server.url(&format!("{PATH_USER_INFO}?access_token={token}&openid=o-x"))).await;
    assert_eq!((s, errcode(&v)), (200, 40001), "{v}");
    assert_eq!(sim.calls("wxproxy", PATH_USER_INFO) - before, 2, "exactly two calls");
    sim_clear_faults(&sim).await;

    // Metrics name proxied paths by a bounded template, never the raw path.
    wx_get(&server.url(&format!("/cgi-bin/zz{}q/abc?access_token={token}", 12345))).await;
    let text = http().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("route=\"/cgi-bin/user\""), "labelled by template");
    assert!(text.contains("route=\"/cgi-bin/other\""));
    assert!(!text.contains("zz12345q") && !text.contains("/cgi-bin/user/info"), "no raw paths in metrics");
    assert_not_logged(config_secrets(&config).into_iter().chain([token]));
    server.stop().await;
}

/// `upstream.proxy_timeout_ms` bounds a proxied call on its own: a WeChat endpoint that does not
/// answer in time gets a 504 in WeChat's shape while the token the hub holds is untouched, and the
/// next call goes through with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_call_that_outlasts_its_budget_gets_504_and_costs_no_token() {
    let a = TestApp::new("wxslowapi").classic();
    let sim = start_sim(std::slice::from_ref(&a)).await;
    let mut config = config(&sim, std::slice::from_ref(&a));
    config.upstream.proxy_timeout_ms = 300;
    let server = Server::start(&config).await;
    let token = native_token(&server, "wxslowapi").await;
    let url = server.url(&format!("{PATH_USER_INFO}?access_token={token}&openid=o-slow"));
    sim_fault(&sim, json!({ "endpoint": PATH_USER_INFO, "kind": "delay", "delay_ms": 5000 })).await;
    let started = std::time::Instant::now();
    let (s, v) = wx_get(&url).await;
    let waited = started.elapsed();
    assert_eq!((s, errcode(&v)), (504, -1), "{v}");
    assert!(
        waited < Duration::from_millis(4000),
        "answered at the proxy's budget, not WeChat's pace: {waited:?}"
    );
    assert_eq!(sim.calls("wxslowapi", PATH_USER_INFO), 1, "a timeout is not retried");
    sim_clear_faults(&sim).await;
    let (s, v) = wx_get(&url).await;
    assert_eq!((s, v["openid"].as_str()), (200, Some("o-slow")), "{v}");
    assert_eq!(sim.calls("wxslowapi", PATH_TOKEN), 1, "the timeout cost no token");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_bearing_and_token_free_calls_keep_the_secret_in_the_hub() {
    let a = TestApp::new("wxsns");
    let sim = start_sim(std::slice::from_ref(&a)).await;
    let config = config(&sim, std::slice::from_ref(&a));
    let server = Server::start(&config).await;
    native_token(&server, "wxsns").await;

    // jscode2session with a client key in place of the AppSecret: the hub sends the real one.
    let url = |secret: &str, code: &str| {
        server.url(&format!(
            "{PATH_JSCODE2SESSION}?appid=wxsns&secret={secret}&js_code={code}&grant_type=authorization_code"
        ))
    };
    let (s, v) = wx_get(&url(READER_KEY, "code-1")).await;
    assert_eq!(s, 200);
    assert!(v["openid"].as_str().is_some() && v["session_key"].as_str().is_some(), "{v}");
    let before = sim.calls("wxsns", PATH_JSCODE2SESSION);
    let (_, v) = wx_get(&url("wrong-secret", "code-2")).await;
    assert_eq!(errcode(&v), 40125);
    assert_eq!(sim.calls("wxsns", PATH_JSCODE2SESSION), before, "refused in the hub");

    // Token-free: the client key authorizes, the hub injects the token; WeChat's PNG streams back.
    let tf = server.url(&format!("/v1/apps/wxsns/wechat{PATH_GETWXACODEUNLIMIT}"));
    let r = http().post(&tf).bearer_auth(READER_KEY).json(&json!({ "scene": "a=1" })).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let png = r.bytes().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG came through");
    let r = http().post(&tf).json(&json!({ "scene": "a=1" })).send().await.unwrap();
    assert_eq!(r.status(), 401, "no key, no call");
    let r =
        http().get(server.url("/v1/apps/wxsns/wechat/v1/apps")).bearer_auth(READER_KEY).send().await.unwrap();
    assert_eq!(r.status(), 404, "only WeChat's paths are forwarded");
    assert_eq!(errcode(&r.json().await.unwrap()), 40066);
    assert_not_logged(config_secrets(&config));
    server.stop().await;
}

/// Sends `raw` on a fresh connection and returns the response head and body.
async fn raw_request(server: &Server, raw: &str) -> String {
    let addr = server.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_is_no_open_relay() {
    let a = TestApp::new("wxsafe").classic();
    let sim = start_sim(std::slice::from_ref(&a)).await;
    let mut config = config(&sim, std::slice::from_ref(&a));
    config.proxy.max_request_bytes = 1 << 20;
    config.proxy.retry_body_bytes = 64 << 10;
    let server = Server::start(&config).await;
    let token = native_token(&server, "wxsafe").await;
    let before = sim_total(&sim).await;

    // Absolute-form (a forward-proxy request for another host) and CONNECT.
    let r = raw_request(
        &server,
        &format!("GET http://evil.example/cgi-bin/user/info?access_token={token} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.contains("\"errcode\":40066"), "{r}");
    let r = raw_request(
        &server,
        "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 4"), "refused: {r}");
    // Dot segments, encoded (sent raw: an HTTP client would resolve them first).
    for path in ["/cgi-bin/%2e%2e/v1/apps", "/cgi-bin/%2E./v1/apps", "/cgi-bin/a%2fb"] {
        let r = raw_request(
            &server,
            &format!("GET {path}?access_token={token} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 400") && r.contains("\"errcode\":40066"), "{path}: {r}");
    }
    // A body over the request limit: 413 in WeChat's shape, nothing forwarded.
    let big = vec![b'x'; (1 << 20) + 1];
    let r = http()
        .post(server.url(&format!("/cgi-bin/media/upload?access_token={token}&type=image")))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(errcode(&r.json().await.unwrap()), 47001);
    assert_eq!(sim_total(&sim).await, before, "nothing reached WeChat");
    // The same body streamed without a length is cut off at the limit, with the same answer.
    let chunks = futures::stream::iter((0..20).map(|_| Ok::<Vec<u8>, std::io::Error>(vec![b'y'; 64 << 10])));
    let r = http()
        .post(server.url(&format!("/cgi-bin/media/upload?access_token={token}&type=image")))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_stream_through_both_ways() {
    const LEN: u64 = 50 << 20;
    let a = TestApp::new("wxmedia").classic();
    let sim = start_sim(std::slice::from_ref(&a)).await;
    let config = config(&sim, std::slice::from_ref(&a));
    let server = Server::start(&config).await;
    let token = native_token(&server, "wxmedia").await;

    // Upload: generated as it is sent, never held whole here either.
    let chunk = 256u64 << 10;
    let pieces = (0..LEN).step_by(chunk as usize).map(move |start| {
        Ok::<Vec<u8>, std::io::Error>((start..(start + chunk).min(LEN)).map(wechat_sim::media_byte).collect())
    });
    let mut want = Sha256::new();
    for start in (0..LEN).step_by(chunk as usize) {
        want.update((start..(start + chunk).min(LEN)).map(wechat_sim::media_byte).collect::<Vec<u8>>());
    }
    let want = hex::encode(want.finalize());
    let r = http()
        .post(server.url(&format!("/cgi-bin/media/upload?access_token={token}&type=video")))
        .header("content-length", LEN.to_string())
        .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["media_id"], format!("m{LEN}_{want}"), "every byte arrived in order: {v}");

    // Download: streamed back, headers kept, every byte checked.
    let media_id = v["media_id"].as_str().unwrap();
    let r = http()
        .get(server.url(&format!("/cgi-bin/media/get?access_token={token}&media_id={media_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], LEN.to_string().as_str());
    assert!(r.headers()["content-disposition"].to_str().unwrap().contains("attachment"));
    let mut stream = r.bytes_stream();
    let mut at = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece.unwrap();
        for (i, b) in piece.iter().enumerate() {
            assert_eq!(*b, wechat_sim::media_byte(at + i as u64), "byte {}", at + i as u64);
        }
        at += piece.len() as u64;
    }
    assert_eq!(at, LEN);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_platform_token_endpoints_and_proxy() {
    use common::platform::*;
    use wechat_proto::api::{PATH_AUTHORIZER_TOKEN, PATH_COMPONENT_TOKEN, PATH_GET_AUTHORIZER_INFO};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub = format!("http://{}", listener.local_addr().unwrap());
    let sim = platform_sim(&hub, |c| c).await;
    let made = sim_post(&sim, "/__sim/authorizers", json!({ "component_appid": COMP, "count": 1 })).await;
    let authz = made["authorizers"][0]["authorizer_appid"].as_str().unwrap().to_owned();
    let config = platform_config(&sim);
    let server = Server::start_on(listener, &config).await;
    let native = |path: String| {
        let url = server.url(&path);
        async move {
            wait_for(Duration::from_secs(20), &path, async || {
                let (s, v) = get_json(&http(), &url, PLATFORM_KEY).await;
                (s == 200).then(|| v["value"].as_str().unwrap().to_owned())
            })
            .await
        }
    };
    let component = native(format!("/v1/components/{COMP}/component_access_token")).await;
    let authorizer = native(format!("/v1/apps/{authz}/access_token")).await;
    let (ct_calls, at_calls) =
        (sim.calls(COMP, PATH_COMPONENT_TOKEN), sim.total_calls(PATH_AUTHORIZER_TOKEN));

    // The component token: the verify ticket sent is ignored, the client key stands in for the
    // component's secret.
    let body = json!({ "component_appid": COMP, "component_appsecret": PLATFORM_KEY, "component_verify_ticket": "stale" });
    let (s, v) = wx_post(&server.url(PATH_COMPONENT_TOKEN), &body).await;
    assert_eq!((s, v["component_access_token"].as_str()), (200, Some(component.as_str())), "{v}");
    let (_, v) = wx_post(
        &server.url(PATH_COMPONENT_TOKEN),
        &json!({ "component_appid": COMP, "component_appsecret": "wrong", "component_verify_ticket": "t" }),
    )
    .await;
    assert_eq!(errcode(&v), 40125);

    // The authorizer token: the central value, and the caller's refresh token echoed back.
    let url = server.url(&format!("{PATH_AUTHORIZER_TOKEN}?component_access_token={component}"));
    let body = json!({ "component_appid": COMP, "authorizer_appid": authz, "authorizer_refresh_token": "caller-held-refreshtoken" });
    let (s, v) = wx_post(&url, &body).await;
    assert_eq!(s, 200);
    assert_eq!(v["authorizer_access_token"], authorizer.as_str(), "{v}");
    assert_eq!(
        v["authorizer_refresh_token"], "caller-held-refreshtoken",
        "echoed, the stored one never shown"
    );
    assert!(v["expires_in"].as_i64().unwrap() > 0);
    let other = json!({ "component_appid": COMP, "authorizer_appid": "wxnotauthorized00", "authorizer_refresh_token": "x" });
    assert_eq!(errcode(&wx_post(&url, &other).await.1), 61003);
    let forged =
        server.url(&format!("{PATH_AUTHORIZER_TOKEN}?component_access_token=forged-component-token"));
    assert_eq!(errcode(&wx_post(&forged, &body).await.1), 40001);
    assert_eq!(sim.calls(COMP, PATH_COMPONENT_TOKEN), ct_calls, "no component token call upstream");
    assert_eq!(sim.total_calls(PATH_AUTHORIZER_TOKEN), at_calls, "no authorizer token call upstream");

    // Proxied with the component token, and with the authorizer's.
    let (s, v) = wx_post(
        &server.url(&format!("{PATH_GET_AUTHORIZER_INFO}?component_access_token={component}")),
        &json!({ "component_appid": COMP, "authorizer_appid": authz }),
    )
    .await;
    assert_eq!(s, 200);
    assert!(v.get("authorizer_info").is_some() || v.get("authorization_info").is_some(), "{v}");
    let (s, v) = wx_get(&server.url(&format!("/cgi-bin/get_api_domain_ip?access_token={authorizer}"))).await;
    assert_eq!(s, 200);
    assert!(v["ip_list"].is_array(), "{v}");
    server.stop().await;
}
