//! The one harness of the server's integration tests: a real `wechat-sim` and a real wxcentral
//! server, both in-process on port 0, talking real HTTP; and a log capture so every test can
//! assert that no secret or credential value reached the logs.

#![allow(dead_code)]

pub mod platform;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wechat_proto::Secret;
use wechat_proto::api::TicketType;
use wechat_sim::{SimApp, SimConfig, SimHandle};
use wxcentral::config::{AppConfig, ClientConfig, Config, StoreKind, hash_key};
pub use wxcentral_core::testing::RedisServer;
use wxcentral_core::{AppKind, TokenApi};

/// A store handle on the nodes' Redis, for a test to look at what they wrote.
pub async fn open_redis_store(server: &RedisServer, namespace: &str) -> wxcentral_core::store::RedisStore {
    let config = wxcentral_core::store::RedisConfig {
        url: Secret::new(server.url()),
        namespace: namespace.into(),
        timeout: Duration::from_secs(2),
        wait_replicas: 0,
    };
    let sealer = Arc::new(wxcentral_core::seal::Sealer::new(&STORE_KEY, &[]).unwrap());
    wxcentral_core::store::RedisStore::open(&config, Some(sealer)).await.unwrap()
}

pub const ADMIN_KEY: &str = "test-admin-key-0f9e8d7c6b5a";
pub const READER_KEY: &str = "test-reader-key-1a2b3c4d5e6f";
pub const REFRESHER_KEY: &str = "test-refresher-key-a1b2c3d4e5";

// ---------------------------------------------------------------------------------------------
// Log capture

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        let filter = tracing_subscriber::EnvFilter::new(
            "info,wxcentral=trace,wxcentral_core=trace,wechat_proto=trace,wechat_sim=debug,tower_http=debug",
        );
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        capture
    })
}

/// Everything logged by this test binary so far.
pub fn logs() -> String {
    String::from_utf8_lossy(&capture().0.lock().unwrap()).into_owned()
}

/// Whether WeChat's `errcode` appears in `logs` anywhere but in the lines' timestamps (whose
/// microseconds can spell any six digits: `…57.061023Z` is no 61023).
pub fn logs_mention_errcode(logs: &str, errcode: i64) -> bool {
    let code = errcode.to_string();
    logs.lines().any(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).contains(&code))
}

// ---------------------------------------------------------------------------------------------
// Apps and config

/// One app as both the simulator and the server know it.
#[derive(Clone, Debug)]
pub struct TestApp {
    pub sim: SimApp,
    pub token_api: TokenApi,
    pub tickets: Vec<TicketType>,
}

impl TestApp {
    pub fn new(appid: &str) -> Self {
        let secret = format!("secret-{appid}-{}", uniq());
        Self { sim: SimApp::new(appid, secret), token_api: TokenApi::Stable, tickets: vec![] }
    }
    pub fn classic(mut self) -> Self {
        self.token_api = TokenApi::Classic;
        self
    }
    pub fn tickets(mut self, t: &[TicketType]) -> Self {
        self.tickets = t.to_vec();
        self
    }
    /// Token (and ticket) lifetime with the other windows scaled to it.
    pub fn ttl(mut self, secs: u64) -> Self {
        self.sim = self.sim.ttl(secs).overlap((secs / 4).max(1)).stable_rotate((secs / 2).max(1));
        self
    }
    pub fn appid(&self) -> &str {
        &self.sim.appid
    }
}

fn uniq() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id())
}

pub async fn start_sim(apps: &[TestApp]) -> SimHandle {
    capture();
    let mut config = SimConfig::new();
    for a in apps {
        config = config.app(a.sim.clone());
    }
    wechat_sim::start_on("127.0.0.1:0", config).await.expect("simulator starts")
}

/// A server config for `apps` against `sim`, in memory unless a store is set afterwards, with
/// three clients: admin (all apps), reader (first app only, no refresh), refresher (all apps).
pub fn config(sim: &SimHandle, apps: &[TestApp]) -> Config {
    let mut c = Config::from_toml("", std::iter::empty()).unwrap();
    c.store.kind = StoreKind::Memory;
    c.upstream.base_url = sim.base_url();
    c.upstream.timeout_ms = 2000;
    c.upstream.max_concurrency = 64;
    c.upstream.max_per_second = 1000;
    c.refresh.read_wait_ms = Some(1500);
    // The simulator's stable rotation window for these apps, so stable refreshes land inside it.
    c.refresh.stable_rotate_secs = apps.first().map(|a| a.sim.stable_rotate_secs);
    c.refresh.token_overlap_secs = apps.first().map(|a| a.sim.overlap_secs);
    c.apps = apps
        .iter()
        .map(|a| AppConfig {
            appid: a.sim.appid.clone(),
            secret: Secret::new(a.sim.secret.clone()),
            kind: AppKind::OfficialAccount,
            token_api: a.token_api,
            tickets: a.tickets.clone(),
        })
        .collect();
    let first: Vec<String> = apps.first().map(|a| vec![a.sim.appid.clone()]).unwrap_or_default();
    c.clients = vec![
        ClientConfig {
            name: "admin".into(),
            key_sha256: hash_key(ADMIN_KEY),
            apps: vec!["*".into()],
            refresh: true,
            admin: true,
        },
        ClientConfig {
            name: "reader".into(),
            key_sha256: hash_key(READER_KEY),
            apps: first,
            refresh: false,
            admin: false,
        },
        ClientConfig {
            name: "refresher".into(),
            key_sha256: hash_key(REFRESHER_KEY),
            apps: vec!["*".into()],
            refresh: true,
            admin: false,
        },
    ];
    c
}

pub fn sqlite(c: &mut Config, path: PathBuf) {
    c.store.kind = StoreKind::Sqlite;
    c.store.path = path;
}

// ---------------------------------------------------------------------------------------------
// Server

pub struct Server {
    pub base: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    pub async fn start(config: &Config) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, config).await
    }

    /// [`Server::start`] on a listener bound earlier (the simulator must know where to push
    /// before the server exists).
    pub async fn start_on(listener: tokio::net::TcpListener, config: &Config) -> Server {
        capture();
        let state = wxcentral::build_state(config).await.expect("server state builds");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            wxcentral::serve(listener, state, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        Server { base, shutdown: Some(tx), task: Some(task) }
    }

    /// Graceful shutdown, waiting until the engine's loops stopped.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task).await.expect("server stops in time").unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Reads a credential as `key`; returns status and JSON body.
pub async fn get_json(client: &reqwest::Client, url: &str, key: &str) -> (u16, serde_json::Value) {
    let r = client.get(url).bearer_auth(key).send().await.expect("request sent");
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = client.post(url).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request sent");
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// Asks the simulator whether it accepts `token` (a business API that checks it).
pub async fn sim_accepts(sim: &SimHandle, token: &str) -> Result<(), serde_json::Value> {
    sim_accepts_at(&http(), &sim.base_url(), token).await
}

/// [`sim_accepts`] for tasks that hold the simulator's URL rather than its handle.
pub async fn sim_accepts_at(
    client: &reqwest::Client,
    sim_url: &str,
    token: &str,
) -> Result<(), serde_json::Value> {
    let body: serde_json::Value = client
        .get(format!("{sim_url}/cgi-bin/get_api_domain_ip"))
        .query(&[("access_token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    if body.get("ip_list").is_some() { Ok(()) } else { Err(body) }
}

pub async fn sim_fault(sim: &SimHandle, fault: serde_json::Value) {
    let r = http().post(format!("{}/__sim/faults", sim.base_url())).json(&fault).send().await.unwrap();
    assert!(r.status().is_success(), "fault accepted: {}", r.text().await.unwrap());
}

pub async fn sim_clear_faults(sim: &SimHandle) {
    http().delete(format!("{}/__sim/faults", sim.base_url())).send().await.unwrap();
}

/// Asserts that none of `secrets` appears in anything logged so far.
pub fn assert_not_logged<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) {
    let logs = logs();
    assert!(!logs.is_empty(), "the capture saw the server's logs");
    for s in secrets {
        let s = s.as_ref();
        assert!(s.len() >= 8, "a secret worth searching for: {s:?}");
        assert!(!logs.contains(s), "secret or credential value leaked into logs: {s}");
    }
}

/// The secrets of a test setup: app secrets and client keys.
pub fn config_secrets(c: &Config) -> Vec<String> {
    let mut v: Vec<String> = c.apps.iter().map(|a| a.secret.expose().clone()).collect();
    v.extend([ADMIN_KEY, READER_KEY, REFRESHER_KEY].map(String::from));
    v
}

/// Scrapes one sample of a Prometheus metric whose labels include all of `labels`.
pub async fn metric(server: &Server, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = http().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))) {
            let value: f64 = rest.rsplit(' ').next().unwrap().parse().unwrap();
            total = Some(total.unwrap_or(0.0) + value);
        }
    }
    total
}

// ---------------------------------------------------------------------------------------------
// Real `wxcentral serve` processes, for claims about several nodes, crashes and stalls

/// The config file of a node serving `apps` from `sim` on the SQLite file `db`, with the
/// harness's three client keys. `extra` is appended (more `[server]`/`[refresh]` keys).
pub fn node_toml(
    sim: &SimHandle,
    apps: &[TestApp],
    db: &std::path::Path,
    node_id: &str,
    extra: &str,
) -> String {
    node_toml_on(sim, apps, &format!("kind = \"sqlite\"\npath = {db:?}\n"), node_id, extra)
}

/// The `[store]` keys of a node on the Redis at `url`, under `namespace`, sealing with the
/// harness's store key.
pub fn redis_store_toml(url: &str, namespace: &str) -> String {
    format!(
        "kind = \"redis\"\nurl = \"{url}\"\nnamespace = \"{namespace}\"\ntimeout_ms = 500\nencryption_key = \"{}\"\n",
        STORE_KEY.expose()
    )
}

/// One store key for every node of a test run (they must all open what the others sealed).
pub static STORE_KEY: std::sync::LazyLock<Secret> =
    std::sync::LazyLock::new(wxcentral_core::seal::Sealer::generate_key);

/// [`node_toml`] on any store: `store` is the body of its `[store]` table.
pub fn node_toml_on(sim: &SimHandle, apps: &[TestApp], store: &str, node_id: &str, extra: &str) -> String {
    let c = config(sim, apps);
    let mut t = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nnode_id = \"{node_id}\"\n\n[store]\n{store}\n\
         [upstream]\nbase_url = \"{}\"\ntimeout_ms = {}\n\n[refresh]\nread_wait_ms = {}\n",
        c.upstream.base_url,
        c.upstream.timeout_ms,
        c.refresh.read_wait_ms.unwrap_or(1500),
    );
    if let Some(s) = c.refresh.stable_rotate_secs {
        t += &format!("stable_rotate_secs = {s}\n");
    }
    if let Some(s) = c.refresh.token_overlap_secs {
        t += &format!("token_overlap_secs = {s}\n");
    }
    t += extra;
    for a in &c.apps {
        let api = match a.token_api {
            TokenApi::Stable => "stable",
            TokenApi::Classic => "classic",
        };
        let tickets: Vec<String> = a.tickets.iter().map(|t| format!("\"{}\"", t.as_str())).collect();
        t += &format!(
            "\n[[app]]\nappid = \"{}\"\nsecret = \"{}\"\ntoken_api = \"{api}\"\ntickets = [{}]\n",
            a.appid,
            a.secret.expose(),
            tickets.join(", ")
        );
    }
    t += &clients_toml(&c.clients);
    t
}

/// The `[[client]]` tables of a config file for `clients`.
pub fn clients_toml(clients: &[ClientConfig]) -> String {
    let mut t = String::new();
    for cl in clients {
        let apps: Vec<String> = cl.apps.iter().map(|a| format!("\"{a}\"")).collect();
        t += &format!(
            "\n[[client]]\nname = \"{}\"\nkey_sha256 = \"{}\"\napps = [{}]\nrefresh = {}\nadmin = {}\n",
            cl.name,
            cl.key_sha256,
            apps.join(", "),
            cl.refresh,
            cl.admin
        );
    }
    t
}

/// Sends `sig` (`STOP`, `CONT`, `HUP`, …) to `pid`; whether it was delivered.
pub fn send_signal(pid: u32, sig: &str) -> bool {
    let status = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
    status.is_ok_and(|s| s.success())
}

/// Whether process `pid` is stopped (SIGSTOP) right now, from `/proc/<pid>/stat`.
///
/// A test that freezes a process checks this: a stopped process in an orphaned process group (a
/// test run started detached from its shell) gets SIGHUP and SIGCONT from the kernel when another
/// process of the group exits, which would end the freeze behind the test's back.
pub fn is_stopped(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses and may hold spaces.
    stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T'))
}

/// A `wxcentral serve` child process. Its stderr goes to a file the test can read; dropping
/// the node kills it.
pub struct Node {
    pub child: std::process::Child,
    pub base: String,
    pub log: PathBuf,
}

impl Node {
    /// Starts the binary on `toml` and waits until it listens.
    pub fn spawn(dir: &std::path::Path, name: &str, toml: &str) -> Node {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Self::start(&config, &log);
        let mut node = Node { child, base: String::new(), log };
        node.base = node.wait_listening(Duration::from_secs(30));
        node
    }

    fn start(config: &std::path::Path, log: &std::path::Path) -> std::process::Child {
        let err = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_wxcentral"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info,wxcentral_core=debug")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(err)
            .spawn()
            .expect("wxcentral starts")
    }

    fn wait_listening(&mut self, limit: Duration) -> String {
        let t0 = std::time::Instant::now();
        loop {
            let text = self.logs();
            // The last `listening` line: a restarted node appends to the same log.
            if let Some(line) = text.lines().rev().find(|l| l.contains("listening")) {
                let addr = line.rsplit("addr=").next().unwrap().split_whitespace().next().unwrap();
                return format!("http://{addr}");
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("node exited with {status} before listening:\n{text}");
            }
            assert!(t0.elapsed() < limit, "node not listening after {limit:?}:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// See [`is_stopped`].
    pub fn is_stopped(&self) -> bool {
        is_stopped(self.child.id())
    }

    pub fn signal(&self, sig: &str) {
        assert!(send_signal(self.child.id(), sig), "kill -{sig} {}", self.pid());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Not `signal`: a node that already exited makes `kill` fail, and a panic here, while a
        // failed test unwinds, would abort the run and hide that test's message.
        send_signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
