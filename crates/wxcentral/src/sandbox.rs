//! `wxcentral sandbox`: the server against an in-process WeChat simulator with two demo apps,
//! so a newcomer sees real refreshes, tickets and signatures without a WeChat account.

use crate::config::{AppConfig, ClientConfig, Config, StoreKind, hash_key};
use crate::{ServerError, build_state, serve};
use rand::Rng;
use rand::distributions::Alphanumeric;
use std::future::Future;
use std::path::Path;
use wechat_proto::Secret;
use wechat_proto::api::TicketType;
use wechat_sim::{SimApp, SimConfig};
use wxcentral_core::{AppKind, TokenApi};

pub const DEMO_OFFICIAL_ACCOUNT: &str = "wxdemo00000000oa01";
pub const DEMO_MINI_PROGRAM: &str = "wxdemo00000000mp02";

fn random(n: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(n).map(char::from).collect()
}

/// Runs the sandbox until `shutdown` resolves.
pub async fn run(
    listen: &str,
    data: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    std::fs::create_dir_all(data)?;
    let db = data.join("wxcentral.db");
    // The simulator keeps its tokens in memory, so values stored by an earlier run would only be
    // rejected by this one: every sandbox run starts from a fresh database.
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }

    let oa_secret = random(32);
    let mp_secret = random(32);
    let sim = wechat_sim::start_on(
        "127.0.0.1:0",
        SimConfig::new()
            .app(SimApp::new(DEMO_OFFICIAL_ACCOUNT, &oa_secret))
            .app(SimApp::new(DEMO_MINI_PROGRAM, &mp_secret))
            // Apps added through `PUT /v1/apps/{appid}` exist at the sandbox's WeChat too.
            .auto_register(true),
    )
    .await
    .map_err(|e| ServerError::Io(std::io::Error::other(format!("simulator: {e}"))))?;

    let client_key = format!("sbx_{}", random(32));
    let mut config = Config::from_toml("", std::iter::empty())?;
    config.server.listen = listen.to_owned();
    config.store.kind = StoreKind::Sqlite;
    config.store.path = db.clone();
    // A fresh key each run, like the fresh file: apps added at runtime keep their secret sealed.
    config.store.encryption_key = Some(wxcentral_core::seal::Sealer::generate_key());
    config.upstream.base_url = sim.base_url();
    config.apps = vec![
        AppConfig {
            appid: DEMO_OFFICIAL_ACCOUNT.into(),
            secret: Secret::new(oa_secret),
            kind: AppKind::OfficialAccount,
            token_api: TokenApi::Stable,
            tickets: vec![TicketType::Jsapi, TicketType::WxCard],
        },
        AppConfig {
            appid: DEMO_MINI_PROGRAM.into(),
            secret: Secret::new(mp_secret),
            kind: AppKind::MiniProgram,
            token_api: TokenApi::Classic,
            tickets: vec![],
        },
    ];
    config.clients = vec![ClientConfig {
        name: "sandbox".into(),
        key_sha256: hash_key(&client_key),
        apps: vec!["*".into()],
        refresh: true,
        admin: true,
    }];
    let addr = config.listen_addr()?;

    let state = build_state(&config).await?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let base = format!("http://{}", listener.local_addr()?);
    print!("{}", banner(&base, &sim.base_url(), &db, &client_key));
    let result = serve(listener, state, shutdown).await;
    sim.shutdown().await;
    result
}

fn banner(base: &str, sim: &str, db: &Path, key: &str) -> String {
    let auth = format!("-H 'Authorization: Bearer {key}'");
    format!(
        "wxcentral sandbox is running\n\
         \n  API         {base}\
         \n  simulator   {sim}   (control API: {sim}/__sim/calls)\
         \n  store       {db}\
         \n  client key  {key}   (all apps, refresh, admin)\
         \n\nTry:\
         \n  curl -s {auth} {base}/v1/apps\
         \n  curl -s {auth} {base}/v1/apps/{oa}/access_token\
         \n  curl -s {auth} {base}/v1/apps/{oa}/jsapi_ticket\
         \n  curl -s {auth} -X POST -d '{{\"url\":\"https://example.com/page\"}}' {base}/v1/apps/{oa}/jssdk_config\
         \n  curl -s {auth} {base}/v1/apps/{mp}/access_token\
         \n  curl -s {auth} -X POST {base}/v1/apps/{mp}/access_token/refresh\
         \n  curl -s {base}/metrics | grep wxcentral_\
         \n  curl -s {sim}/__sim/calls\
         \n\nCtrl-C stops it.\n",
        db = db.display(),
        oa = DEMO_OFFICIAL_ACCOUNT,
        mp = DEMO_MINI_PROGRAM,
    )
}
