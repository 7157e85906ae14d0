//! The native HTTP API over real HTTP against the simulator: authentication and scopes, the
//! error table, JS-SDK signing, operations endpoints.

mod common;

use common::*;
use serde_json::json;
use wechat_proto::api::TicketType;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_scopes_and_error_table() {
    let apps = [TestApp::new("wxapi0000000000001"), TestApp::new("wxapi0000000000002")];
    let sim = start_sim(&apps).await;
    let config = config(&sim, &apps);
    let server = Server::start(&config).await;
    let c = http();
    let a1 = server.url("/v1/apps/wxapi0000000000001/access_token");
    let a2 = server.url("/v1/apps/wxapi0000000000002/access_token");

    // No key, wrong key, wrong scheme: 401.
    let r = c.get(&a1).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(get_json(&c, &a1, "not-a-key").await.0, 401);
    let r = c.get(&a1).header("Authorization", format!("Basic {ADMIN_KEY}")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // A key without the app: 403; with it: 200.
    let (s, body) = get_json(&c, &a2, READER_KEY).await;
    assert_eq!((s, body["error"]["code"].as_str()), (403, Some("forbidden")));
    let (s, body) = get_json(&c, &a1, READER_KEY).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["appid"], "wxapi0000000000001");
    assert_eq!(body["kind"], "access_token");
    let token = body["value"].as_str().unwrap().to_owned();
    sim_accepts(&sim, &token).await.expect("served token is valid");
    assert!(body["expires_in"].as_i64().unwrap() > 7000, "{body}");
    assert!(body["version"].as_u64().unwrap() > 0);

    // Unknown app (for a key that may see all apps), unknown kind, ticket not configured: 404.
    let (s, body) = get_json(&c, &server.url("/v1/apps/wxnope/access_token"), ADMIN_KEY).await;
    assert_eq!((s, body["error"]["code"].as_str()), (404, Some("unknown_app")));
    let (s, body) = get_json(&c, &server.url("/v1/apps/wxapi0000000000001/password"), ADMIN_KEY).await;
    assert_eq!((s, body["error"]["code"].as_str()), (404, Some("unknown_credential")));
    let (s, body) = get_json(&c, &server.url("/v1/apps/wxapi0000000000001/jsapi_ticket"), ADMIN_KEY).await;
    assert_eq!((s, body["error"]["code"].as_str()), (404, Some("unknown_credential")), "{body}");
    let (s, body) = get_json(&c, &server.url("/no/such/path"), ADMIN_KEY).await;
    assert_eq!((s, body["error"]["code"].as_str()), (404, Some("not_found")));

    // A path segment that is not UTF-8 once decoded: 400 through the error table, on every
    // route with path parameters.
    for path in ["/v1/apps/%FF/access_token", "/v1/apps/wx1/%C3%28", "/v1/apps/%FF/access_token/refresh"] {
        let r = if path.ends_with("refresh") {
            c.post(server.url(path)).bearer_auth(ADMIN_KEY).send().await.unwrap()
        } else {
            c.get(server.url(path)).bearer_auth(ADMIN_KEY).send().await.unwrap()
        };
        assert_eq!(r.status(), 400, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_request", "{path}: {body}");
    }
    let r = c
        .post(server.url("/v1/apps/%FF/jssdk_config"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"url": "https://a.example/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The root points at the API description.
    let (s, body) = get_json(&c, &server.url("/"), ADMIN_KEY).await;
    assert_eq!(s, 200);
    assert_eq!(body["openapi"], "/openapi.json");

    // Garbage bodies: 400. Oversized: 413.
    let refresh = server.url("/v1/apps/wxapi0000000000001/access_token/refresh");
    for garbage in ["{not json", "[]", "{\"invalid\":5}", "{\"other\":\"x\"}", "\u{0}\u{1}"] {
        let r = c.post(&refresh).bearer_auth(REFRESHER_KEY).body(garbage).send().await.unwrap();
        assert_eq!(r.status(), 400, "{garbage:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_request");
    }
    let huge = format!("{{\"invalid\":\"{}\"}}", "x".repeat(200 * 1024));
    let r = c.post(&refresh).bearer_auth(REFRESHER_KEY).body(huge).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["connection"], "close", "the unread rest of the body ends the connection");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");

    // Reporting needs `refresh`; forcing needs `admin`.
    let (s, _) = post_json(&c, &refresh, READER_KEY, Some(json!({"invalid": token}))).await;
    assert_eq!(s, 403);
    let (s, body) = post_json(&c, &refresh, REFRESHER_KEY, None).await;
    assert_eq!((s, body["error"]["code"].as_str()), (403, Some("forbidden")));
    let (s, body) = post_json(&c, &refresh, ADMIN_KEY, None).await;
    assert_eq!(s, 200, "{body}");

    // Method not allowed is JSON too.
    let r = c.delete(&a1).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(r.status(), 405);

    // /v1/apps lists only what the key may see, with no values.
    let (s, body) = get_json(&c, &server.url("/v1/apps"), READER_KEY).await;
    assert_eq!(s, 200);
    let listed: Vec<&str> =
        body["apps"].as_array().unwrap().iter().map(|a| a["appid"].as_str().unwrap()).collect();
    assert_eq!(listed, ["wxapi0000000000001"]);
    assert!(!body.to_string().contains(&token), "no values in /v1/apps");
    let (_, body) = get_json(&c, &server.url("/v1/apps"), ADMIN_KEY).await;
    assert_eq!(body["apps"].as_array().unwrap().len(), 2);

    server.stop().await;
    let mut secrets = config_secrets(&config);
    secrets.push(token);
    assert_not_logged(secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jssdk_config_signs_with_the_served_ticket() {
    let apps = [TestApp::new("wxjs00000000000001").tickets(&[TicketType::Jsapi, TicketType::WxCard])];
    let sim = start_sim(&apps).await;
    let config = config(&sim, &apps);
    let server = Server::start(&config).await;
    let c = http();

    let (s, ticket) = get_json(&c, &server.url("/v1/apps/wxjs00000000000001/jsapi_ticket"), READER_KEY).await;
    assert_eq!(s, 200, "{ticket}");
    let ticket = ticket["value"].as_str().unwrap().to_owned();
    let (s, card) = get_json(&c, &server.url("/v1/apps/wxjs00000000000001/wx_card_ticket"), READER_KEY).await;
    assert_eq!(s, 200, "{card}");
    assert_ne!(card["value"].as_str().unwrap(), ticket);

    let url = "https://shop.example.com/page?id=1&from=x#section";
    let (s, cfg) = post_json(
        &c,
        &server.url("/v1/apps/wxjs00000000000001/jssdk_config"),
        READER_KEY,
        Some(json!({ "url": url })),
    )
    .await;
    assert_eq!(s, 200, "{cfg}");
    assert_eq!(cfg["appId"], "wxjs00000000000001");
    let nonce = cfg["nonceStr"].as_str().unwrap();
    let ts = cfg["timestamp"].as_u64().unwrap();
    let expected = wechat_proto::signature::jssdk_signature(&ticket, nonce, ts, url);
    assert_eq!(cfg["signature"], expected.as_str());
    // The fragment does not count, as in the browser's wx.config check.
    let without_fragment = wechat_proto::signature::jssdk_signature(
        &ticket,
        nonce,
        ts,
        "https://shop.example.com/page?id=1&from=x",
    );
    assert_eq!(expected, without_fragment);

    // Bad URLs are 400.
    for bad in [json!({"url": "not a url"}), json!({"url": "ftp://x/y"}), json!({})] {
        let (s, body) =
            post_json(&c, &server.url("/v1/apps/wxjs00000000000001/jssdk_config"), READER_KEY, Some(bad))
                .await;
        assert_eq!((s, body["error"]["code"].as_str()), (400, Some("invalid_request")));
    }
    server.stop().await;
    let mut secrets = config_secrets(&config);
    secrets.push(ticket);
    assert_not_logged(secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints() {
    let apps = [TestApp::new("wxops0000000000001")];
    let sim = start_sim(&apps).await;
    let config = config(&sim, &apps);
    let server = Server::start(&config).await;
    let c = http();

    assert_eq!(c.get(server.url("/healthz")).send().await.unwrap().text().await.unwrap(), "ok");
    let r = c.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let (s, _) = get_json(&c, &server.url("/v1/apps/wxops0000000000001/access_token"), ADMIN_KEY).await;
    assert_eq!(s, 200);
    let calls = metric(&server, "wxcentral_upstream_calls_total", &[("app", "wxops0000000000001")]).await;
    assert_eq!(calls, Some(1.0), "one upstream call recorded");
    let reqs = metric(
        &server,
        "wxcentral_http_requests_total",
        &[("route", "/v1/apps/{appid}/{kind}"), ("status", "200")],
    )
    .await;
    assert!(reqs.unwrap_or(0.0) >= 1.0);
    assert!(
        metric(&server, "wxcentral_credential_seconds_to_expiry", &[("app", "wxops0000000000001")])
            .await
            .unwrap()
            > 7000.0
    );

    let doc: serde_json::Value =
        c.get(server.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    for path in [
        "/v1/apps",
        "/v1/apps/{appid}/{kind}",
        "/v1/apps/{appid}/{kind}/refresh",
        "/v1/apps/{appid}/jssdk_config",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi documents {path}");
    }
    server.stop().await;
}

/// `docs/openapi.json` is the served document; regenerate with `UPDATE_OPENAPI=1 cargo test`.
#[test]
fn committed_openapi_document_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = wxcentral::openapi::document();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is stale: run UPDATE_OPENAPI=1 cargo test -p wxcentral --test api"
    );
}
