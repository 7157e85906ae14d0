//! The open platform's side of the harness: a simulator with one component pushing to the
//! hub, the hub's config for it, and small waits.

use super::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use wechat_sim::{SimComponent, SimConfig, SimHandle};
use wxcentral::config::{ClientConfig, ComponentConfig, Config, hash_key};

pub const COMP: &str = "wxc0mp0nent00001";
pub const COMP_SECRET: &str = "component-secret-7f3a9b2c1d";
pub const MSG_TOKEN: &str = "component-msg-token-5e6f";
pub const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub const PLATFORM_KEY: &str = "test-platform-key-9a8b7c6d5e";

/// A simulator with one component pushing to `hub`'s callback, and the hub's config for it
/// (memory store unless changed), with a client scoped to the component.
pub async fn platform_sim(hub: &str, tweak: impl FnOnce(SimComponent) -> SimComponent) -> SimHandle {
    let comp = SimComponent::new(COMP, COMP_SECRET, MSG_TOKEN, AES_KEY)
        .push_url(format!("{hub}/callback/component/{COMP}"))
        .push_interval(3600);
    wechat_sim::start_on("127.0.0.1:0", SimConfig::new().component(tweak(comp)))
        .await
        .expect("simulator starts")
}

pub fn platform_config(sim: &SimHandle) -> Config {
    let mut c = config(sim, &[]);
    c.components = vec![ComponentConfig {
        appid: COMP.into(),
        secret: Secret::from(COMP_SECRET),
        token: Secret::from(MSG_TOKEN),
        encoding_aes_key: Secret::from(AES_KEY),
        tickets: vec![TicketType::Jsapi],
        after_authorize_url: Some("https://admin.example.com/done?from=hub".into()),
        previous_encoding_aes_key: None,
    }];
    c.clients.push(ClientConfig {
        name: "platform".into(),
        key_sha256: hash_key(PLATFORM_KEY),
        apps: vec![format!("component:{COMP}")],
        refresh: true,
        admin: false,
    });
    c
}

pub async fn wait_for<T>(limit: Duration, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if t0.elapsed() >= limit {
            let logs = logs();
            let tail: Vec<&str> =
                logs.lines().filter(|l| !l.contains("DEBUG") && !l.contains("TRACE")).collect();
            panic!(
                "{what}: not within {limit:?}; log tail:\n{}",
                tail[tail.len().saturating_sub(40)..].join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn sim_post(sim: &SimHandle, path: &str, body: Value) -> Value {
    let r = http().post(format!("{}{path}", sim.base_url())).json(&body).send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{path}: {v}");
    v
}

/// A free loopback port (bound, then let go), so WeChat's push URL can name a node before the
/// node starts, and the node restarts on the same one.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
