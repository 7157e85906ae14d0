//! The harness of the SDK's integration tests: a real `wechat-sim`, a real in-process engine or
//! wxcentral hub in front of it, all on port 0 and talking real HTTP, and the simulator's own
//! call counters (`GET /__sim/calls`) to count what reached "WeChat".

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;
use wechat_proto::Secret;
use wechat_proto::api::TicketType;
use wechat_sim::{SimApp, SimConfig, SimHandle};
use wxcentral::config::{AppConfig, ClientConfig, Config, StoreKind, hash_key};
use wxcentral_client::{Client, EngineSource, HubSource};
use wxcentral_core::store::MemoryStore;
use wxcentral_core::upstream::Upstream;
use wxcentral_core::{AppKind, AppSpec, Engine, EngineConfig, TokenApi};

pub const HUB_KEY: &str = "sdk-test-client-key-7f3a9c";
pub const READ_ONLY_KEY: &str = "sdk-test-reader-key-2b8d1e";

/// A fresh appid per call, so tests in one binary never share counters.
pub fn appid() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("wxsdk{:05}{:08}", std::process::id() % 100_000, N.fetch_add(1, Ordering::Relaxed))
}

pub fn secret_of(appid: &str) -> String {
    format!("secret-of-{appid}")
}

pub async fn sim(appids: &[&str]) -> SimHandle {
    let config = appids.iter().fold(SimConfig::new(), |c, a| c.app(SimApp::new(*a, secret_of(a))));
    wechat_sim::start_on("127.0.0.1:0", config).await.expect("simulator starts")
}

/// An engine on a memory store in front of `sim`, keeping tokens and jsapi tickets of `appids`.
pub async fn engine(sim: &SimHandle, appids: &[&str]) -> Arc<Engine> {
    let apps = appids
        .iter()
        .map(|a| {
            let mut spec = AppSpec::official_account(*a, secret_of(a));
            spec.tickets = vec![TicketType::Jsapi];
            spec
        })
        .collect();
    let upstream = Upstream::new(&sim.base_url(), Duration::from_secs(2)).expect("upstream");
    let config = EngineConfig { node_id: "sdk-test".into(), ..EngineConfig::default() };
    Engine::start(apps, Arc::new(MemoryStore::new()), upstream, config).await.expect("engine starts")
}

/// A client calling `sim` directly with tokens from `engine`, busy backoff shortened.
pub fn engine_client(sim: &SimHandle, engine: &Arc<Engine>) -> Client {
    Client::builder(EngineSource::new(Arc::clone(engine)))
        .base_url(sim.base_url())
        .busy_backoff(Duration::from_millis(20))
        .build()
        .expect("client builds")
}

/// How many requests `GET /__sim/calls` says reached `endpoint` for `appid`.
pub async fn sim_calls(sim: &SimHandle, appid: &str, endpoint: &str) -> u64 {
    let body: serde_json::Value = reqwest::get(format!("{}/__sim/calls", sim.base_url()))
        .await
        .expect("sim reachable")
        .json()
        .await
        .expect("calls JSON");
    body["calls"]
        .as_array()
        .expect("calls array")
        .iter()
        .filter(|c| c["appid"] == appid && c["endpoint"] == endpoint)
        .map(|c| c["count"].as_u64().unwrap_or(0))
        .sum()
}

/// `POST /__sim/faults`.
pub async fn fault(sim: &SimHandle, spec: serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/__sim/faults", sim.base_url()))
        .json(&spec)
        .send()
        .await
        .expect("sim reachable");
    assert!(r.status().is_success(), "fault refused: {}", r.text().await.unwrap_or_default());
}

/// `POST /__sim/invalidate`: WeChat kills every token of `appid` behind the holders' backs.
pub async fn invalidate(sim: &SimHandle, appid: &str) {
    let r = reqwest::Client::new()
        .post(format!("{}/__sim/invalidate", sim.base_url()))
        .json(&serde_json::json!({ "appid": appid }))
        .send()
        .await
        .expect("sim reachable");
    assert!(r.status().is_success());
}

/// A wxcentral hub in-process, in front of `sim`, serving `appids` (with jsapi tickets) to
/// [`HUB_KEY`] (may report invalid values) and [`READ_ONLY_KEY`] (may not).
pub struct Hub {
    pub base: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Hub {
    pub async fn start(sim: &SimHandle, appids: &[&str]) -> Hub {
        let mut c = Config::from_toml("", std::iter::empty()).expect("empty config");
        c.store.kind = StoreKind::Memory;
        c.upstream.base_url = sim.base_url();
        c.upstream.timeout_ms = 2000;
        c.refresh.read_wait_ms = Some(1500);
        c.apps = appids
            .iter()
            .map(|a| AppConfig {
                appid: (*a).to_owned(),
                secret: Secret::new(secret_of(a)),
                kind: AppKind::MiniProgram,
                token_api: TokenApi::Stable,
                tickets: vec![TicketType::Jsapi],
            })
            .collect();
        c.clients = vec![
            ClientConfig {
                name: "sdk".into(),
                key_sha256: hash_key(HUB_KEY),
                apps: vec!["*".into()],
                refresh: true,
                admin: false,
            },
            ClientConfig {
                name: "reader".into(),
                key_sha256: hash_key(READ_ONLY_KEY),
                apps: vec!["*".into()],
                refresh: false,
                admin: false,
            },
        ];
        let state = wxcentral::build_state(&c).await.expect("hub state builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            wxcentral::serve(listener, state, async {
                let _ = rx.await;
            })
            .await
            .expect("hub runs");
        });
        Hub { base, shutdown: Some(tx), task: Some(task) }
    }

    pub fn source(&self) -> HubSource {
        HubSource::new(&self.base, HUB_KEY).expect("hub source")
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
