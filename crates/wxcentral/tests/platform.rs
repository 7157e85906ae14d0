//! The open platform over real HTTP: WeChat's pushes (from the simulator) to the hub's
//! callback, the component token, the authorization flow, authorizers' tokens and tickets, and
//! what the hub does with forged or repeated pushes.

mod common;

use common::platform::*;
use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use wechat_proto::Secret;
use wechat_proto::api::ComponentNotification;
use wechat_proto::crypto::MsgCrypt;
use wechat_sim::SimHandle;

/// Whether WeChat (the simulator) takes `token` as a component token.
async fn sim_accepts_component_token(sim: &SimHandle, token: &str) -> bool {
    let v: Value = http()
        .post(format!("{}/cgi-bin/component/api_create_preauthcode", sim.base_url()))
        .query(&[("component_access_token", token)])
        .json(&json!({ "component_appid": COMP }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.get("pre_auth_code").is_some()
}

async fn component_token(server: &Server) -> Value {
    let url = server.url(&format!("/v1/components/{COMP}/component_access_token"));
    wait_for(Duration::from_secs(15), "component token", async || {
        let (s, v) = get_json(&http(), &url, PLATFORM_KEY).await;
        (s == 200).then_some(v)
    })
    .await
}

/// Authorizes `authorizer` through the hub's authorization URL and the simulator's consent;
/// returns the landing URL WeChat redirects the browser to.
async fn consent(sim: &SimHandle, server: &Server, authorizer: &str) -> String {
    let landing = server.url(&format!("/callback/component/{COMP}/authorized"));
    let (s, v) = post_json(
        &http(),
        &server.url(&format!("/v1/components/{COMP}/authorization_url")),
        PLATFORM_KEY,
        Some(json!({ "redirect_uri": landing, "auth_type": 3 })),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let url = v["url"].as_str().unwrap();
    let pre = v["pre_auth_code"].as_str().unwrap();
    assert!(url.starts_with("https://mp.weixin.qq.com/cgi-bin/componentloginpage?component_appid="), "{url}");
    assert!(url.contains("auth_type=3"), "{url}");
    let v = sim_post(
        sim,
        "/__sim/authorize",
        json!({ "component_appid": COMP, "pre_auth_code": pre, "authorizer_appid": authorizer, "redirect_uri": landing }),
    )
    .await;
    v["redirect_uri"].as_str().expect("the browser's redirect").to_owned()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_from_ticket_to_unauthorized() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub = format!("http://{}", listener.local_addr().unwrap());
    let sim = platform_sim(&hub, |c| {
        let mut c = c.authorizer_ttl(8);
        c.overlap_secs = 2;
        c
    })
    .await;
    let mut config = platform_config(&sim);
    config.refresh.token_overlap_secs = Some(2);
    let server = Server::start_on(listener, &config).await;

    // No ticket yet: the hub asks WeChat to push one, keeps it and fetches the component token.
    let ct = component_token(&server).await;
    assert_eq!(ct["kind"], "component_access_token");
    assert!(sim_accepts_component_token(&sim, ct["value"].as_str().unwrap()).await);
    assert!(sim.calls(COMP, "/cgi-bin/component/api_start_push_ticket") >= 1);
    let (s, status) = get_json(&http(), &server.url(&format!("/v1/components/{COMP}")), PLATFORM_KEY).await;
    assert_eq!(s, 200, "{status}");
    assert_eq!(status["verify_ticket_stale"], false, "{status}");

    // Consent: the browser lands on the hub, which exchanges the code and redirects.
    let authz = "wxauth0rizer0001";
    let redirect = consent(&sim, &server, authz).await;
    let r = no_redirects().get(&redirect).send().await.unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        format!("https://admin.example.com/done?from=hub&authorizer_appid={authz}&component_appid={COMP}")
    );
    // The same code also came by push: exchanged once.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sim.calls(COMP, "/cgi-bin/component/api_query_auth"), 1);

    // The authorizer is served like an app, to a key scoped to the component.
    let token_url = server.url(&format!("/v1/apps/{authz}/access_token"));
    let (s, tok) = get_json(&http(), &token_url, PLATFORM_KEY).await;
    assert_eq!(s, 200, "{tok}");
    sim_accepts(&sim, tok["value"].as_str().unwrap()).await.expect("authorizer token valid at WeChat");
    let (s, ticket) =
        get_json(&http(), &server.url(&format!("/v1/apps/{authz}/jsapi_ticket")), PLATFORM_KEY).await;
    assert_eq!(s, 200, "{ticket}");
    // The reader key (one app) may not see it.
    let (s, _) = get_json(&http(), &token_url, READER_KEY).await;
    assert_eq!(s, 403);
    let (s, list) =
        get_json(&http(), &server.url(&format!("/v1/components/{COMP}/authorizers")), PLATFORM_KEY).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["authorizers"][0]["authorizer_appid"], authz);
    assert_eq!(list["authorizers"][0]["state"], "authorized");
    assert!(!list.to_string().contains("refresh_token"), "no refresh token shown: {list}");

    // Refreshes over a few short lifetimes keep a token WeChat accepts.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        let (s, tok) = get_json(&http(), &token_url, PLATFORM_KEY).await;
        assert_eq!(s, 200, "{tok}");
        sim_accepts(&sim, tok["value"].as_str().unwrap()).await.expect("served authorizer token is valid");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(sim.calls(authz, "/cgi-bin/component/api_authorizer_token") >= 1);

    // updateauthorized: the new permissions are queried and kept.
    sim_post(
        &sim,
        "/__sim/update_authorize",
        json!({ "component_appid": COMP, "authorizer_appid": authz, "func_info": [1, 2, 3] }),
    )
    .await;
    let url = server.url(&format!("/v1/components/{COMP}/authorizers"));
    wait_for(Duration::from_secs(10), "updated func_info", async || {
        let (_, list) = get_json(&http(), &url, PLATFORM_KEY).await;
        (list["authorizers"][0]["func_info"] == json!([1, 2, 3])).then_some(())
    })
    .await;
    assert_eq!(sim.calls(COMP, "/cgi-bin/component/api_query_auth"), 2);
    let (s, tok) = get_json(&http(), &token_url, PLATFORM_KEY).await;
    assert_eq!(s, 200);
    sim_accepts(&sim, tok["value"].as_str().unwrap()).await.expect("token valid after the update");

    // unauthorized: 404, and no more calls for it.
    sim_post(&sim, "/__sim/unauthorize", json!({ "component_appid": COMP, "authorizer_appid": authz })).await;
    wait_for(Duration::from_secs(10), "authorizer gone", async || {
        let (s, _) = get_json(&http(), &token_url, ADMIN_KEY).await;
        (s == 404).then_some(())
    })
    .await;
    // A key scoped to the component no longer sees it as the component's: 403, as for any
    // appid outside a key's scope.
    let (s, _) = get_json(&http(), &token_url, PLATFORM_KEY).await;
    assert_eq!(s, 403);
    let calls = sim.calls(authz, "/cgi-bin/component/api_authorizer_token")
        + sim.calls(authz, "/cgi-bin/ticket/getticket");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        sim.calls(authz, "/cgi-bin/component/api_authorizer_token")
            + sim.calls(authz, "/cgi-bin/ticket/getticket"),
        calls,
        "no calls for an unauthorized authorizer"
    );
    let (_, list) = get_json(&http(), &url, PLATFORM_KEY).await;
    assert_eq!(list["total"], 0, "{list}");
    assert_not_logged([COMP_SECRET, MSG_TOKEN, AES_KEY, PLATFORM_KEY, ct["value"].as_str().unwrap()]);
    server.stop().await;
}

/// A push as WeChat sends it: the query and the envelope of `xml` under the component's keys.
fn push_of(xml: &str, key: &str) -> (Vec<(String, String)>, String) {
    let crypt = MsgCrypt::new(MSG_TOKEN, key, COMP).unwrap();
    let encrypt = crypt.encrypt_random(xml.as_bytes());
    let (ts, nonce) = ("1700000000".to_owned(), "nonce123".to_owned());
    let sig = crypt.signature(&ts, &nonce, &encrypt);
    let query = vec![
        ("timestamp".into(), ts),
        ("nonce".into(), nonce),
        ("encrypt_type".into(), "aes".into()),
        ("msg_signature".into(), sig),
    ];
    (query, format!("<xml><AppId><![CDATA[{COMP}]]></AppId><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"))
}

fn ticket_xml(ticket: &str, create_time: i64) -> String {
    format!(
        "<xml><AppId><![CDATA[{COMP}]]></AppId><CreateTime>{create_time}</CreateTime><InfoType><![CDATA[component_verify_ticket]]></InfoType><ComponentVerifyTicket><![CDATA[{ticket}]]></ComponentVerifyTicket></xml>"
    )
}

/// Every row of the tables that hold what pushes change.
fn dump(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut rows = Vec::new();
    for (table, cols) in [
        ("credentials", "appid || kind || value || version"),
        ("secrets", "name || value"),
        ("authorizers", "appid || record"),
        ("apps", "appid || spec"),
    ] {
        let mut stmt = conn.prepare(&format!("SELECT {cols} FROM {table} ORDER BY 1")).unwrap();
        let got: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        rows.extend(got.into_iter().map(|r| format!("{table}: {r}")));
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_garbage_and_oversized_pushes_change_nothing() {
    // The simulator pushes nowhere: every push here is the test's.
    let sim = platform_sim("http://127.0.0.1:9", |c| c).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    let mut config = platform_config(&sim);
    sqlite(&mut config, db.clone());
    config.store.encryption_key = Some(wxcentral_core::seal::Sealer::generate_key());
    let server = Server::start(&config).await;
    let url = server.url(&format!("/callback/component/{COMP}"));
    let send = async |query: &[(String, String)], body: String, to: &str| {
        let r = http().post(to).query(query).body(body).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };

    // A genuine push is kept and answered `success`.
    let (q, body) = push_of(&ticket_xml("ticket@@@genuine-0001", 1_700_000_000), AES_KEY);
    assert_eq!(send(&q, body.clone(), &url).await, (200, "success".into()));
    let kept = dump(&db);
    assert!(kept.iter().any(|r| r.starts_with("secrets: verify_ticket:")), "{kept:?}");
    assert!(!kept.iter().any(|r| r.contains("genuine-0001")), "the ticket is sealed at rest: {kept:?}");

    // Replayed as it was: acknowledged, nothing changes.
    assert_eq!(send(&q, body.clone(), &url).await, (200, "success".into()));
    assert_eq!(dump(&db), kept);

    let mut refused = Vec::new();
    // Forged: signed with another token.
    let (mut fq, fbody) = push_of(&ticket_xml("ticket@@@forged-0002", 1_700_000_100), AES_KEY);
    fq[3].1 = wechat_proto::signature::msg_signature("not-the-token", "1700000000", "nonce123", "x");
    refused.push(("forged signature", send(&fq, fbody, &url).await, 401));
    // Encrypted with a key that is not the component's (signature right, content unreadable).
    let (oq, obody) = push_of(
        &ticket_xml("ticket@@@otherkey-0003", 1_700_000_200),
        "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut",
    );
    refused.push(("other key", send(&oq, obody, &url).await, 400));
    // Garbage.
    refused.push(("garbage", send(&q, "<xml><<not xml".into(), &url).await, 400));
    refused.push(("no query", send(&[], body.clone(), &url).await, 400));
    // Too big: the body limit refuses it before anything is read into memory.
    refused.push(("oversized", send(&q, "x".repeat(200_000), &url).await, 413));
    // For a component the hub does not have.
    let other = server.url("/callback/component/wxnotacomponent1");
    refused.push(("unknown component", send(&q, body.clone(), &other).await, 404));
    for (what, (status, text), want) in &refused {
        assert_eq!(status, want, "{what}: {text}");
        assert!(!text.contains("success"), "{what}");
    }
    assert_eq!(dump(&db), kept, "refused pushes change nothing");

    // An older ticket (a late retry) is acknowledged and kept out.
    let (q2, b2) = push_of(&ticket_xml("ticket@@@older-0004", 1_699_999_000), AES_KEY);
    assert_eq!(send(&q2, b2, &url).await, (200, "success".into()));
    assert_eq!(dump(&db), kept);
    // An InfoType the hub does not use is acknowledged and ignored.
    let other_info = format!(
        "<xml><AppId><![CDATA[{COMP}]]></AppId><CreateTime>1700000300</CreateTime><InfoType><![CDATA[notify_third_fasteregister]]></InfoType></xml>"
    );
    let (q3, b3) = push_of(&other_info, AES_KEY);
    assert_eq!(send(&q3, b3, &url).await, (200, "success".into()));
    assert_eq!(dump(&db), kept);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_imports_every_listed_authorizer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub = format!("http://{}", listener.local_addr().unwrap());
    let sim = platform_sim(&hub, |c| c).await;
    let made = sim_post(&sim, "/__sim/authorizers", json!({ "component_appid": COMP, "count": 1200 })).await;
    let made: Vec<String> = made["authorizers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["authorizer_appid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(made.len(), 1200);
    let dir = tempfile::tempdir().unwrap();
    let mut config = platform_config(&sim);
    sqlite(&mut config, dir.path().join("hub.db"));
    config.store.encryption_key = Some(wxcentral_core::seal::Sealer::generate_key());
    let server = Server::start_on(listener, &config).await;
    // The first housekeeping finds no authorizer of the component and pages through the list.
    let url = server.url(&format!("/v1/components/{COMP}/authorizers?limit=1"));
    wait_for(Duration::from_secs(30), "1200 authorizers imported", async || {
        let (_, v) = get_json(&http(), &url, PLATFORM_KEY).await;
        (v["total"] == 1200).then_some(())
    })
    .await;
    assert_eq!(sim.calls(COMP, "/cgi-bin/component/api_get_authorizer_list"), 3, "three pages of 500");
    // Listed is not yet fetched: 1,200 token fetches queue behind the limiter (beside the other
    // tests of this binary), longer than one read waits. Wait until every one is held.
    let apps = server.url("/v1/apps");
    wait_for(Duration::from_secs(60), "1200 authorizer tokens held", async || {
        let (_, v) = get_json(&http(), &apps, ADMIN_KEY).await;
        let valid = v["apps"].as_array()?.iter().filter(|a| {
            a["origin"] == "authorization"
                && a["credentials"].as_array().is_some_and(|c| c.iter().all(|c| c["state"] == "valid"))
        });
        (valid.count() == 1200).then_some(())
    })
    .await;
    // Every one serves a token WeChat takes, each fetched once.
    let client = http();
    let sim_url = sim.base_url();
    for chunk in made.chunks(100) {
        let checks = chunk.iter().map(|appid| {
            let (client, sim_url) = (client.clone(), sim_url.clone());
            let url = server.url(&format!("/v1/apps/{appid}/access_token"));
            async move {
                let (s, v) = get_json(&client, &url, PLATFORM_KEY).await;
                assert_eq!(s, 200, "{appid}: {v}");
                sim_accepts_at(&client, &sim_url, v["value"].as_str().unwrap()).await.expect("valid token");
            }
        });
        futures::future::join_all(checks).await;
    }
    for appid in &made {
        assert_eq!(sim.calls(appid, "/cgi-bin/component/api_authorizer_token"), 1, "{appid}");
    }
    // An admin import again finds nothing new.
    let (s, report) =
        post_json(&http(), &server.url(&format!("/v1/components/{COMP}/import")), ADMIN_KEY, None).await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["listed"], 1200);
    assert_eq!(report["unchanged"], 1200);
    // The platform key may not import (admin only).
    let (s, _) =
        post_json(&http(), &server.url(&format!("/v1/components/{COMP}/import")), PLATFORM_KEY, None).await;
    assert_eq!(s, 403);
    server.stop().await;
}

/// The config file of a `wxcentral serve` node for the platform on `port`.
fn platform_node_toml(sim: &SimHandle, db: &Path, port: u16, store_key: &Secret) -> String {
    let c = platform_config(sim);
    let mut t = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nnode_id = \"n1\"\n\n\
         [store]\nkind = \"sqlite\"\npath = {db:?}\nencryption_key = \"{}\"\n\n\
         [upstream]\nbase_url = \"{}\"\ntimeout_ms = 2000\n\n[refresh]\nread_wait_ms = 1500\ntoken_overlap_secs = 2\n\n\
         [[component]]\nappid = \"{COMP}\"\nsecret = \"{COMP_SECRET}\"\ntoken = \"{MSG_TOKEN}\"\n\
         encoding_aes_key = \"{AES_KEY}\"\ntickets = [\"jsapi\"]\nafter_authorize_url = \"https://admin.example.com/done\"\n",
        store_key.expose(),
        sim.base_url(),
    );
    t += &clients_toml(&c.clients);
    t
}

/// The verify ticket the node's store keeps, opened with the store's key.
fn stored_ticket(db: &Path, store_key: &Secret) -> Option<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let name = format!("verify_ticket:{COMP}");
    let sealed: String =
        conn.query_row("SELECT value FROM secrets WHERE name = ?1", [&name], |r| r.get(0)).ok()?;
    let sealer = wxcentral_core::seal::Sealer::new(store_key, &[]).unwrap();
    let opened = sealer.open(&name, &sealed).unwrap();
    Some(opened.expose().split_once(':').unwrap().1.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_success_and_after_the_landing_loses_nothing() {
    let port = free_port();
    let hub = format!("http://127.0.0.1:{port}");
    let sim = platform_sim(&hub, |c| {
        let mut c = c.authorizer_ttl(6);
        c.overlap_secs = 2;
        c
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    let key = wxcentral_core::seal::Sealer::generate_key();
    let toml = platform_node_toml(&sim, &db, port, &key);
    let node = Node::spawn(dir.path(), "n1", &toml);
    let ct_url = node.url(&format!("/v1/components/{COMP}/component_access_token"));
    wait_for(Duration::from_secs(20), "component token", async || {
        let (s, _) = get_json(&http(), &ct_url, PLATFORM_KEY).await;
        (s == 200).then_some(())
    })
    .await;

    // A push answered `success`, then kill -9 at once: the ticket is in the store.
    let pushed = sim_post(&sim, "/__sim/push_ticket", json!({ "component_appid": COMP })).await;
    assert_eq!(pushed["ok"], true, "{pushed}");
    node.signal("KILL");
    drop(node);
    assert_eq!(stored_ticket(&db, &key).as_deref(), pushed["ticket"].as_str(), "the pushed ticket survived");
    // A log of its own per run: the last `listening` line must be this run's.
    let node = Node::spawn(dir.path(), "n1-second", &toml);
    let (s, ct) =
        get_json(&http(), &node.url(&format!("/v1/components/{COMP}/component_access_token")), PLATFORM_KEY)
            .await;
    assert_eq!(s, 200, "{ct}");
    assert!(sim_accepts_component_token(&sim, ct["value"].as_str().unwrap()).await);
    assert_eq!(
        sim.calls(COMP, "/cgi-bin/component/api_component_token"),
        1,
        "the stored token is served after the restart"
    );

    // The landing answered, then kill -9: the authorizer is there after the restart.
    let authz = "wxauth0rizer0002";
    let landing = node.url(&format!("/callback/component/{COMP}/authorized"));
    let (s, v) = post_json(
        &http(),
        &node.url(&format!("/v1/components/{COMP}/authorization_url")),
        PLATFORM_KEY,
        Some(json!({ "redirect_uri": landing })),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let consent = sim_post(
        &sim,
        "/__sim/authorize",
        json!({ "component_appid": COMP, "pre_auth_code": v["pre_auth_code"], "authorizer_appid": authz, "redirect_uri": landing }),
    )
    .await;
    let r = no_redirects().get(consent["redirect_uri"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 302);
    // A store that lost the landing's write would hold no authorizer, and the start would
    // import it from WeChat's list: the list is not asked again.
    let lists = sim.calls(COMP, "/cgi-bin/component/api_get_authorizer_list");
    node.signal("KILL");
    drop(node);
    let node = Node::spawn(dir.path(), "n1-third", &toml);
    let token_url = node.url(&format!("/v1/apps/{authz}/access_token"));
    let (s, tok) = get_json(&http(), &token_url, PLATFORM_KEY).await;
    assert_eq!(s, 200, "{tok}");
    sim_accepts(&sim, tok["value"].as_str().unwrap())
        .await
        .expect("authorizer token valid after the restart");
    // Refreshed with the kept refresh token over a few lifetimes: nobody re-authorizes.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(8) {
        let (s, tok) = get_json(&http(), &token_url, PLATFORM_KEY).await;
        assert_eq!(s, 200, "{tok}");
        sim_accepts(&sim, tok["value"].as_str().unwrap()).await.expect("valid");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(sim.calls(authz, "/cgi-bin/component/api_authorizer_token") >= 1);
    assert_eq!(sim.calls(COMP, "/cgi-bin/component/api_query_auth"), 1, "the code was exchanged once");
    let (_, list) =
        get_json(&http(), &node.url(&format!("/v1/components/{COMP}/authorizers")), PLATFORM_KEY).await;
    assert_eq!(list["authorizers"][0]["state"], "authorized", "{list}");
    assert_eq!(
        sim.calls(COMP, "/cgi-bin/component/api_get_authorizer_list"),
        lists,
        "the landing's write survived"
    );
    let logs = node.logs();
    assert!(!logs_mention_errcode(&logs, 61023), "no refresh token was refused:\n{logs}");

    // An `authorized` push answered `success`, then kill -9 at once (the code's exchange may
    // not have begun): after the restart the authorizer is there, and WeChat's retry of the
    // push exchanges nothing again.
    let authz = "wxauth0rizer0007";
    let (s, v) = post_json(
        &http(),
        &node.url(&format!("/v1/components/{COMP}/authorization_url")),
        PLATFORM_KEY,
        Some(json!({ "redirect_uri": "https://platform.example/authorized" })),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let queries = sim.calls(COMP, "/cgi-bin/component/api_query_auth");
    let consent = sim_post(
        &sim,
        "/__sim/authorize",
        json!({ "component_appid": COMP, "pre_auth_code": v["pre_auth_code"], "authorizer_appid": authz }),
    )
    .await;
    assert_eq!(consent["push"]["ok"], true, "{consent}");
    node.signal("KILL");
    drop(node);
    let node = Node::spawn(dir.path(), "n1-fourth", &toml);
    let token_url = node.url(&format!("/v1/apps/{authz}/access_token"));
    let tok = wait_for(Duration::from_secs(15), "the pushed authorizer after the restart", async || {
        let (s, tok) = get_json(&http(), &token_url, PLATFORM_KEY).await;
        (s == 200).then_some(tok)
    })
    .await;
    sim_accepts(&sim, tok["value"].as_str().unwrap()).await.expect("its token is valid");
    let retried = ComponentNotification::Authorized(wechat_proto::api::AuthorizationNotice {
        component_appid: COMP.into(),
        create_time: now_secs(),
        authorizer_appid: authz.into(),
        authorization_code: Secret::from(consent["auth_code"].as_str().unwrap()),
        authorization_code_expired_time: now_secs() + 3600,
        pre_auth_code: None,
    });
    let callback = node.url(&format!("/callback/component/{COMP}"));
    assert_eq!(deliver(&callback, &retried, AES_KEY).await, (200, "success".into()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One exchange; a second call only if the kill fell between WeChat's answer and the write
    // (WeChat refuses the spent code, and the list gives the authorizer back).
    let exchanged = sim.calls(COMP, "/cgi-bin/component/api_query_auth") - queries;
    assert!(
        exchanged == 1 || (exchanged == 2 && node.logs().contains("recovering the authorizer from the list")),
        "{exchanged} exchanges:\n{}",
        node.logs()
    );
    let (_, list) =
        get_json(&http(), &node.url(&format!("/v1/components/{COMP}/authorizers")), PLATFORM_KEY).await;
    assert_eq!(list["total"], 2, "{list}");
    let runs = ["n1", "n1-second", "n1-third", "n1-fourth"];
    let logs: String =
        runs.iter().map(|r| std::fs::read_to_string(dir.path().join(format!("{r}.log"))).unwrap()).collect();
    for secret in [COMP_SECRET, MSG_TOKEN, AES_KEY, key.expose().as_str()] {
        assert!(!logs.contains(secret), "secret in a node's log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_refresh_tokens_survive_kill_9_at_random_moments() {
    use rand::Rng;
    let port = free_port();
    let hub = format!("http://127.0.0.1:{port}");
    // Every api_authorizer_token call rotates the refresh token; the previous one works 5 s.
    let sim = platform_sim(&hub, |c| {
        let mut c = c.authorizer_ttl(4).rotate_refresh_token(true, 5);
        c.overlap_secs = 2;
        c
    })
    .await;
    let made = sim_post(&sim, "/__sim/authorizers", json!({ "component_appid": COMP, "count": 1 })).await;
    let authz = made["authorizers"][0]["authorizer_appid"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let key = wxcentral_core::seal::Sealer::generate_key();
    let toml = platform_node_toml(&sim, &dir.path().join("hub.db"), port, &key);
    let mut node = Node::spawn(dir.path(), "run0", &toml);
    let token_path = format!("/v1/apps/{authz}/access_token");
    wait_for(Duration::from_secs(30), "the imported authorizer's token", async || {
        let (s, _) = get_json(&http(), &node.url(&token_path), PLATFORM_KEY).await;
        (s == 200).then_some(())
    })
    .await;
    // 20 refresh periods (a refresh every ~2 s), three kill -9 at random moments.
    let total = Duration::from_secs(40);
    let mut kills: Vec<Duration> = (0..3)
        .map(|i| Duration::from_millis(rand::thread_rng().gen_range(2_000..12_000) + i * 12_000))
        .collect();
    kills.sort();
    let (mut served, mut restarts) = (0u32, 0u32);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < total {
        if kills.first().is_some_and(|k| t0.elapsed() >= *k) {
            kills.remove(0);
            node.signal("KILL");
            drop(node);
            restarts += 1;
            node = Node::spawn(dir.path(), &format!("run{restarts}"), &toml);
        }
        let r = client.get(node.url(&token_path)).bearer_auth(PLATFORM_KEY).send().await.unwrap();
        if r.status() == 200 {
            let v: Value = r.json().await.unwrap();
            sim_accepts(&sim, v["value"].as_str().unwrap())
                .await
                .unwrap_or_else(|e| panic!("served a token WeChat rejects ({e}) after {restarts} restarts"));
            served += 1;
        } else {
            // Only a cold restart may briefly have nothing to serve.
            assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(restarts, 3);
    assert!(served > 150, "reads were served: {served}");
    let refreshes = sim.calls(&authz, "/cgi-bin/component/api_authorizer_token");
    assert!(refreshes >= 15, "refreshed over 20 periods: {refreshes}");
    let logs: String = (0..=restarts)
        .map(|i| std::fs::read_to_string(dir.path().join(format!("run{i}.log"))).unwrap())
        .collect();
    assert!(!logs_mention_errcode(&logs, 61023), "no refresh token was refused:\n{logs}");
    assert!(!logs.contains("needs_reauthorization") && !logs.contains("must authorize again"), "{logs}");
}

/// Unix seconds now, as WeChat stamps a push's `CreateTime`.
fn now_secs() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs())
        .unwrap()
}

/// Posts `n` to `callback` as WeChat would, encrypted under `key`.
async fn deliver(callback: &str, n: &ComponentNotification, key: &str) -> (u16, String) {
    let (q, body) = push_of(&n.to_xml(), key);
    let r = http().post(callback).query(&q).body(body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The pushes the simulator made go nowhere; the test hands the hub the ticket it issued.
async fn ticket_delivered(sim: &SimHandle, server: &Server, key: &str) {
    let issued = sim_post(sim, "/__sim/push_ticket", json!({ "component_appid": COMP })).await;
    let ticket = ComponentNotification::VerifyTicket {
        component_appid: COMP.into(),
        create_time: now_secs(),
        ticket: Secret::from(issued["ticket"].as_str().unwrap()),
    };
    let callback = server.url(&format!("/callback/component/{COMP}"));
    assert_eq!(deliver(&callback, &ticket, key).await, (200, "success".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_landing_pages_exchange_once_and_a_revocation_a_moment_later_stands() {
    // WeChat's pushes go nowhere: the test delivers each one, so what the hub saw is known.
    let sim = platform_sim("http://127.0.0.1:9", |c| c).await;
    let server = Server::start(&platform_config(&sim)).await;
    ticket_delivered(&sim, &server, AES_KEY).await;
    component_token(&server).await;
    let callback = server.url(&format!("/callback/component/{COMP}"));
    let authz = "wxauth0rizer0005";

    // Requests WeChat's authorization page would refuse are refused here.
    let url_api = server.url(&format!("/v1/components/{COMP}/authorization_url"));
    let cb = "https://platform.example/authorized";
    for (what, body) in [
        ("auth_type with biz_appid", json!({ "redirect_uri": cb, "auth_type": 3, "biz_appid": authz })),
        ("auth_type 7", json!({ "redirect_uri": cb, "auth_type": 7 })),
        ("auth_type 0", json!({ "redirect_uri": cb, "auth_type": 0 })),
        ("a bad biz_appid", json!({ "redirect_uri": cb, "biz_appid": "wx<script>" })),
    ] {
        let (s, v) = post_json(&http(), &url_api, PLATFORM_KEY, Some(body)).await;
        assert_eq!(s, 400, "{what}: {v}");
    }
    // The mobile URL, for one account.
    let (s, v) = post_json(
        &http(),
        &url_api,
        PLATFORM_KEY,
        Some(json!({ "redirect_uri": cb, "mobile": true, "biz_appid": authz })),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let url = v["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!(
            "https://open.weixin.qq.com/wxaopen/safe/bindcomponent?action=bindcomponent&no_scan=1&component_appid={COMP}&pre_auth_code="
        )),
        "{url}"
    );
    assert!(url.contains(&format!("&biz_appid={authz}")) && url.ends_with("#wechat_redirect"), "{url}");
    assert!(!url.contains("auth_type"), "{url}");

    // Consent; the platform's own landing page hands the hub the code.
    let consent = sim_post(
        &sim,
        "/__sim/authorize",
        json!({ "component_appid": COMP, "pre_auth_code": v["pre_auth_code"], "authorizer_appid": authz }),
    )
    .await;
    let code = consent["auth_code"].as_str().unwrap().to_owned();
    let api = server.url(&format!("/v1/components/{COMP}/authorizations"));
    let (s, _) = post_json(&http(), &api, READER_KEY, Some(json!({ "auth_code": code }))).await;
    assert_eq!(s, 403, "a key without the component may not hand in codes");
    let (s, first) = post_json(&http(), &api, PLATFORM_KEY, Some(json!({ "auth_code": code }))).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["authorizer_appid"], authz);
    // Again (a reloaded page), and by push: the same authorizer, one exchange.
    let (s, again) = post_json(&http(), &api, PLATFORM_KEY, Some(json!({ "auth_code": code }))).await;
    assert_eq!((s, &again), (200, &first));
    let authorized = ComponentNotification::Authorized(wechat_proto::api::AuthorizationNotice {
        component_appid: COMP.into(),
        create_time: now_secs(),
        authorizer_appid: authz.into(),
        authorization_code: Secret::from(code.as_str()),
        authorization_code_expired_time: now_secs() + 3600,
        pre_auth_code: None,
    });
    assert_eq!(deliver(&callback, &authorized, AES_KEY).await, (200, "success".into()));
    // A code WeChat never issued authorizes nobody.
    let (s, v) =
        post_json(&http(), &api, PLATFORM_KEY, Some(json!({ "auth_code": "queryauthcode@@@never-issued" })))
            .await;
    assert_ne!(s, 200, "{v}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sim.calls(COMP, "/cgi-bin/component/api_query_auth"),
        2,
        "the real code once, the forged one once"
    );
    let token_url = server.url(&format!("/v1/apps/{authz}/access_token"));
    let (s, tok) = get_json(&http(), &token_url, PLATFORM_KEY).await;
    assert_eq!(s, 200, "{tok}");
    sim_accepts(&sim, tok["value"].as_str().unwrap()).await.expect("the authorizer's token works");

    // The merchant revokes within the same second WeChat stamped the authorization with (and
    // the hub's clock a little ahead of WeChat's would make it look older still): it stands.
    let revoked = ComponentNotification::Unauthorized {
        component_appid: COMP.into(),
        create_time: now_secs(),
        authorizer_appid: authz.into(),
    };
    assert_eq!(deliver(&callback, &revoked, AES_KEY).await, (200, "success".into()));
    let (s, v) = get_json(&http(), &token_url, ADMIN_KEY).await;
    assert_eq!(s, 404, "revoked at once: {v}");
    // WeChat retrying the authorization push (or a reloaded landing page) brings nothing back.
    assert_eq!(deliver(&callback, &authorized, AES_KEY).await, (200, "success".into()));
    let (s, _) = post_json(&http(), &api, PLATFORM_KEY, Some(json!({ "auth_code": code }))).await;
    assert_ne!(s, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, _) = get_json(&http(), &token_url, ADMIN_KEY).await;
    assert_eq!(s, 404);
    let (_, list) =
        get_json(&http(), &server.url(&format!("/v1/components/{COMP}/authorizers")), PLATFORM_KEY).await;
    assert_eq!(list["total"], 0, "{list}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_token_is_recovered_from_the_list_else_the_merchant_is_asked_again() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub = format!("http://{}", listener.local_addr().unwrap());
    let sim = platform_sim(&hub, |c| c).await;
    // A replaced refresh token stops working at once.
    sim_post(&sim, "/__sim/rotation", json!({ "component_appid": COMP, "enabled": false, "grace_secs": 0 }))
        .await;
    let server = Server::start_on(listener, &platform_config(&sim)).await;
    component_token(&server).await;
    let authz = "wxauth0rizer0006";
    let landing = consent(&sim, &server, authz).await;
    assert_eq!(no_redirects().get(&landing).send().await.unwrap().status(), 302);
    let token_url = server.url(&format!("/v1/apps/{authz}/access_token"));
    let (s, tok) = get_json(&http(), &token_url, PLATFORM_KEY).await;
    assert_eq!(s, 200, "{tok}");
    wait_for(Duration::from_secs(5), "the pushed code seen as exchanged", async || {
        (sim.calls(COMP, "/cgi-bin/component/api_query_auth") == 1).then_some(())
    })
    .await;

    // WeChat replaces the refresh token (updateauthorized); the hub's exchange of the new code
    // fails, so it still holds the old one, which WeChat now refuses.
    sim_fault(&sim, json!({ "endpoint": "/cgi-bin/component/api_query_auth", "kind": "errcode", "errcode": -1, "count": 1 }))
        .await;
    sim_post(&sim, "/__sim/update_authorize", json!({ "component_appid": COMP, "authorizer_appid": authz }))
        .await;
    wait_for(Duration::from_secs(5), "the failed exchange", async || {
        (sim.calls(COMP, "/cgi-bin/component/api_query_auth") == 2).then_some(())
    })
    .await;
    let lists = sim.calls(COMP, "/cgi-bin/component/api_get_authorizer_list");
    let refresh = server.url(&format!("/v1/apps/{authz}/access_token/refresh"));
    let (s, tok) = post_json(&http(), &refresh, ADMIN_KEY, None).await;
    assert_eq!(s, 200, "recovered through the list: {tok}");
    sim_accepts(&sim, tok["value"].as_str().unwrap()).await.expect("the new token works");
    assert_eq!(sim.calls(COMP, "/cgi-bin/component/api_get_authorizer_list"), lists + 1);
    assert_eq!(metric(&server, "wxcentral_refresh_tokens_recovered_total", &[]).await, Some(1.0));
    let authorizers = server.url(&format!("/v1/components/{COMP}/authorizers"));
    let (_, list) = get_json(&http(), &authorizers, PLATFORM_KEY).await;
    assert_eq!(list["authorizers"][0]["state"], "authorized", "{list}");

    // A refresh token WeChat refuses while its list has no other: the merchant must authorize
    // again, and status and metrics say so.
    sim_fault(
        &sim,
        json!({ "endpoint": "/cgi-bin/component/api_authorizer_token", "kind": "errcode", "errcode": 61023, "count": 1 }),
    )
    .await;
    let (s, v) = post_json(&http(), &refresh, ADMIN_KEY, None).await;
    assert_ne!(s, 200, "{v}");
    let (_, list) = get_json(&http(), &authorizers, PLATFORM_KEY).await;
    assert_eq!(list["authorizers"][0]["state"], "needs_reauthorization", "{list}");
    let gauge = [("component", COMP), ("state", "needs_reauthorization")];
    assert_eq!(metric(&server, "wxcentral_authorizers", &gauge).await, Some(1.0));
    assert_eq!(
        metric(&server, "wxcentral_refresh_tokens_recovered_total", &[]).await,
        Some(1.0),
        "the same refresh token listed again is no recovery"
    );

    // The merchant authorizes again: served again, with the refresh token of that consent.
    let landing = consent(&sim, &server, authz).await;
    assert_eq!(no_redirects().get(&landing).send().await.unwrap().status(), 302);
    wait_for(Duration::from_secs(10), "authorized again", async || {
        let (_, list) = get_json(&http(), &authorizers, PLATFORM_KEY).await;
        (list["authorizers"][0]["state"] == "authorized").then_some(())
    })
    .await;
    let (s, tok) = post_json(&http(), &refresh, ADMIN_KEY, None).await;
    assert_eq!(s, 200, "{tok}");
    sim_accepts(&sim, tok["value"].as_str().unwrap()).await.expect("valid after the new consent");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_under_the_previous_aes_key_are_read_while_the_key_rotates() {
    const NEW_KEY: &str = "QRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456";
    let sim = platform_sim("http://127.0.0.1:9", |c| c).await;
    let mut config = platform_config(&sim);
    // The platform set a new key on WeChat's console; pushes under the old one still arrive.
    config.components[0].encoding_aes_key = Secret::from(NEW_KEY);
    config.components[0].previous_encoding_aes_key = Some(Secret::from(AES_KEY));
    let server = Server::start(&config).await;
    ticket_delivered(&sim, &server, AES_KEY).await;
    let ct = component_token(&server).await;
    assert!(
        sim_accepts_component_token(&sim, ct["value"].as_str().unwrap()).await,
        "fetched with the old key's ticket"
    );
    let status_url = server.url(&format!("/v1/components/{COMP}"));
    let (_, before) = get_json(&http(), &status_url, PLATFORM_KEY).await;
    assert!(before["verify_ticket_pushed_at"].is_i64(), "{before}");
    // Under the new key as well, and the newer ticket is kept.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ticket_delivered(&sim, &server, NEW_KEY).await;
    let (_, after) = get_json(&http(), &status_url, PLATFORM_KEY).await;
    assert!(
        after["verify_ticket_pushed_at"].as_i64() > before["verify_ticket_pushed_at"].as_i64(),
        "{after}"
    );
    // A key that is neither: refused.
    let n = ComponentNotification::VerifyTicket {
        component_appid: COMP.into(),
        create_time: now_secs(),
        ticket: Secret::from("ticket@@@third-key"),
    };
    let callback = server.url(&format!("/callback/component/{COMP}"));
    let (s, _) = deliver(&callback, &n, "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut").await;
    assert_eq!(s, 400);
    let (_, last) = get_json(&http(), &status_url, PLATFORM_KEY).await;
    assert_eq!(last["verify_ticket_pushed_at"], after["verify_ticket_pushed_at"]);
    server.stop().await;
}

/// WeChat refusing the verify ticket (61006) is a fault of state, not of the network: the hub
/// backs off for half the token's lifetime (at most a minute) instead of hammering, asks for a
/// push at most once a minute, and the next pushed ticket wakes it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_stuck_on_a_refused_ticket_wakes_when_the_next_one_is_pushed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub = format!("http://{}", listener.local_addr().unwrap());
    let sim = platform_sim(&hub, |c| c).await;
    let token_api = "/cgi-bin/component/api_component_token";
    sim_fault(&sim, json!({ "endpoint": token_api, "kind": "errcode", "errcode": 61006, "count": 1000 }))
        .await;
    let server = Server::start_on(listener, &platform_config(&sim)).await;
    let status_url = server.url(&format!("/v1/components/{COMP}"));
    let state = async || {
        let (s, v) = get_json(&http(), &status_url, PLATFORM_KEY).await;
        assert_eq!(s, 200, "{v}");
        v["credential"]["state"].as_str().unwrap_or_default().to_owned()
    };

    // Started without a ticket: asked for one, got it pushed, and WeChat refused it.
    wait_for(Duration::from_secs(10), "the refused ticket", async || {
        (sim.calls(COMP, token_api) >= 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused = sim.calls(COMP, token_api);
    assert!(refused <= 2, "61006 was retried {refused} times in 2 s");
    assert_eq!(
        sim.calls(COMP, "/cgi-bin/component/api_start_push_ticket"),
        1,
        "asked for a push more than once a minute"
    );
    assert_ne!(state().await, "valid");

    // The next push wakes it well before the backoff (a minute for a 7,200 s token) ends.
    sim_clear_faults(&sim).await;
    let pushed = Instant::now();
    sim_post(&sim, "/__sim/push_ticket", json!({ "component_appid": COMP })).await;
    wait_for(Duration::from_secs(10), "a valid component token after the push", async || {
        (state().await == "valid").then_some(())
    })
    .await;
    assert!(pushed.elapsed() < Duration::from_secs(10));
    assert_eq!(sim.calls(COMP, token_api), refused + 1, "one fetch after the push");
    let ct = component_token(&server).await;
    assert!(sim_accepts_component_token(&sim, ct["value"].as_str().unwrap()).await);
    server.stop().await;
}
