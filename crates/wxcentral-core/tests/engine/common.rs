//! Helpers shared by the simulator-backed engine tests.

use std::sync::Arc;
use std::time::Duration;
use wechat_proto::api::{PATH_GET_API_DOMAIN_IP, TicketType};
use wechat_sim::{FaultKind, FaultSpec, SimApp, SimConfig, SimHandle};
use wxcentral_core::store::{MemoryStore, Store};
use wxcentral_core::upstream::Upstream;
use wxcentral_core::{AppSpec, Engine, EngineConfig, TokenApi};

pub const SECRET: &str = "s3cr3t-app-secret-for-tests-0001";

pub async fn sim(apps: Vec<SimApp>) -> SimHandle {
    let config = apps.into_iter().fold(SimConfig::new(), SimConfig::app);
    wechat_sim::start_on("127.0.0.1:0", config).await.expect("sim starts")
}

pub fn sim_app(appid: &str, ttl: u64) -> SimApp {
    SimApp::new(appid, SECRET).ttl(ttl)
}

pub fn app(appid: &str, api: TokenApi, tickets: &[TicketType]) -> AppSpec {
    let mut a = AppSpec::official_account(appid, SECRET);
    a.token_api = api;
    a.tickets = tickets.to_vec();
    a
}

pub fn config(node: &str) -> EngineConfig {
    EngineConfig { read_wait: Duration::from_secs(3), node_id: node.into(), ..EngineConfig::default() }
}

/// The upstream timeout the tests use: short, so hung calls end quickly.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(1000);

pub async fn engine_with(
    sim: &SimHandle,
    apps: Vec<AppSpec>,
    store: Arc<dyn Store>,
    config: EngineConfig,
) -> Arc<Engine> {
    let upstream = Upstream::new(&sim.base_url(), UPSTREAM_TIMEOUT).unwrap();
    Engine::start(apps, store, upstream, config).await.expect("engine starts")
}

pub async fn engine(sim: &SimHandle, apps: Vec<AppSpec>) -> Arc<Engine> {
    engine_with(sim, apps, Arc::new(MemoryStore::new()), config("n1")).await
}

pub fn fault(endpoint: &str, appid: Option<&str>, kind: FaultKind) -> FaultSpec {
    FaultSpec {
        endpoint: endpoint.into(),
        appid: appid.map(Into::into),
        kind,
        errcode: None,
        status: None,
        delay_ms: None,
        count: None,
        probability: None,
    }
}

pub fn add_fault(sim: &SimHandle, spec: FaultSpec) {
    sim.simulator().add_fault(spec).expect("valid fault");
}

/// Whether the simulator accepts `token` on a business API right now; the errcode if not.
pub async fn token_accepted(sim: &SimHandle, token: &str) -> Result<(), i64> {
    let url = format!("{}{PATH_GET_API_DOMAIN_IP}", sim.base_url());
    let body: serde_json::Value = reqwest::Client::new()
        .get(url)
        .query(&[("access_token", token)])
        .send()
        .await
        .expect("sim reachable")
        .json()
        .await
        .expect("json body");
    match body.get("errcode").and_then(serde_json::Value::as_i64) {
        None | Some(0) => Ok(()),
        Some(code) => Err(code),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
