//! A real, unmodified SDK through the hub: wechatpy from PyPI (pinned by `.ci/wechatpy-venv.sh`,
//! which this test runs; it installs into `target/` once), pointed at the hub by its base URL and
//! its token hook, authenticating with a client key instead of the AppSecret.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use wechat_proto::api::{PATH_GETTICKET, PATH_TOKEN, PATH_USER_INFO, TicketType};

/// The venv's interpreter, installed on first use.
fn wechatpy_python() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new("bash")
        .arg(format!("{root}/.ci/wechatpy-venv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "the wechatpy venv installs (python3 and PyPI needed)");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechatpy_works_through_the_hub_and_recovers_from_a_killed_token() {
    let python = tokio::task::spawn_blocking(wechatpy_python).await.unwrap();
    let a = TestApp::new("wxwechatpy").classic().tickets(&[TicketType::Jsapi]);
    let sim = start_sim(std::slice::from_ref(&a)).await;
    let config = config(&sim, std::slice::from_ref(&a));
    let server = Server::start(&config).await;
    // The hub holds its values before the SDK starts: what follows is all the SDK's doing.
    get_json(&http(), &server.url("/v1/apps/wxwechatpy/jsapi_ticket"), ADMIN_KEY).await;
    assert_eq!(sim.calls("wxwechatpy", PATH_TOKEN), 1);
    let tickets_before = sim.calls("wxwechatpy", PATH_GETTICKET);

    let mut child = Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/wechatpy/drive.py"))
        .env("HUB", &server.base)
        .env("APPID", "wxwechatpy")
        .env("SECRET", READER_KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = move || -> Value {
        let line = lines.next().expect("the driver speaks").expect("a line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };

    let (before, next) = tokio::task::spawn_blocking(move || (next(), next)).await.unwrap();
    assert_eq!(before["step"], "before", "{before}");
    let central = get_json(&http(), &server.url("/v1/apps/wxwechatpy/access_token"), ADMIN_KEY).await.1;
    assert_eq!(before["token"], central["value"], "the SDK holds the central token");
    assert_eq!(before["openid"], "openid-before");
    let ticket = get_json(&http(), &server.url("/v1/apps/wxwechatpy/jsapi_ticket"), ADMIN_KEY).await.1;
    assert_eq!(before["ticket"], ticket["value"], "the central jsapi ticket");
    assert!(before["qr_ticket"].as_str().is_some_and(|t| !t.is_empty()), "{before}");
    assert_eq!(before["png"], true, "the wxa code came back as a PNG");
    assert_eq!(before["fetches"], 1);
    assert_eq!(sim.calls("wxwechatpy", PATH_TOKEN), 1, "the SDK's token request never reached WeChat");
    assert_eq!(sim.calls("wxwechatpy", PATH_GETTICKET), tickets_before, "nor its ticket request");

    // Every token of the app dies behind the hub's back.
    let r = common::platform::sim_post(&sim, "/__sim/invalidate", json!({ "appid": "wxwechatpy" })).await;
    assert!(r["invalidated"].as_u64().unwrap() >= 1, "{r}");
    let calls_before = sim.calls("wxwechatpy", PATH_USER_INFO);
    writeln!(stdin, "go").unwrap();
    let after = tokio::task::spawn_blocking(next).await.unwrap();
    assert_eq!(after["step"], "after", "{after}");
    assert_eq!(after["openid"], "openid-after", "the call succeeded: {after}");
    assert_eq!(after["ticket"], ticket["value"]);
    assert_eq!(sim.calls("wxwechatpy", PATH_TOKEN), 2, "exactly one upstream refresh");
    assert_eq!(after["fetches"], 1, "the SDK never saw the 40001, so never asked for a token again");
    assert_eq!(sim.calls("wxwechatpy", PATH_USER_INFO) - calls_before, 2, "the rejected call and its retry");
    let status = child.wait().unwrap();
    assert!(status.success(), "the driver exits cleanly");
    assert_not_logged(config_secrets(&config));
    server.stop().await;
}
