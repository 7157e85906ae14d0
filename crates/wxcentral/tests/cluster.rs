//! Several real `wxcentral serve` processes on one store (DESIGN.md §8), one SQLite file or one
//! real `redis-server`: they all start, fetch each credential once per lifetime between them,
//! learn of each other's writes within the store's bound (SQLite 250 ms, Redis 100 ms), and a
//! node that stalls past its lease never gets its value served.

mod common;

use common::*;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wxcentral_core::CredentialKey;
use wxcentral_core::store::CredentialStore;

const TOKEN: &str = "/cgi-bin/token";

/// Lifetime 12 s, WeChat's overlap 3 s (the harness scales it to a quarter).
const LIFETIME_MS: u64 = 12_000;
/// The shortest time between two proactive fetches: lifetime − refresh margin (half the
/// lifetime here) − the largest jitter (a tenth of the margin).
const MIN_PERIOD_MS: u64 = LIFETIME_MS - LIFETIME_MS / 2 - LIFETIME_MS / 20;

fn run_for(default_secs: u64) -> Duration {
    Duration::from_secs(
        std::env::var("CLUSTER_TEST_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_secs),
    )
}

/// The store the nodes of a test share.
enum Backend {
    Sqlite(PathBuf),
    Redis { server: RedisServer, namespace: String },
}

impl Backend {
    fn sqlite(dir: &Path) -> Self {
        Self::Sqlite(dir.join("shared.db"))
    }

    fn redis(namespace: &str) -> Self {
        Self::Redis { server: RedisServer::start(), namespace: namespace.into() }
    }

    fn store_toml(&self) -> String {
        match self {
            Self::Sqlite(db) => format!("kind = \"sqlite\"\npath = {db:?}\n"),
            Self::Redis { server, namespace } => redis_store_toml(&server.url(), namespace),
        }
    }

    /// How soon every node must serve what one node wrote.
    fn propagation_bound(&self) -> Duration {
        match self {
            Self::Sqlite(_) => Duration::from_millis(250),
            Self::Redis { .. } => Duration::from_millis(100),
        }
    }

    /// The access token the store holds for `appid`: value and version.
    async fn stored(&self, appid: &str) -> (String, u64) {
        match self {
            Self::Sqlite(db) => {
                let (value, version): (String, i64) = rusqlite::Connection::open(db)
                    .unwrap()
                    .query_row(
                        "SELECT value, version FROM credentials WHERE appid = ?1 AND kind = 'access_token'",
                        [appid],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .unwrap();
                (value, version as u64)
            }
            Self::Redis { server, namespace } => {
                let store = open_redis_store(server, namespace).await;
                let key = CredentialKey::new(appid, wxcentral_core::CredentialKind::AccessToken);
                let c = store.get_credential(&key).await.unwrap().expect("a stored token");
                (c.value.expose().clone(), c.version)
            }
        }
    }
}

#[derive(Default)]
struct Seen {
    /// version -> (value, first time each node served it)
    versions: BTreeMap<u64, (String, HashMap<usize, Instant>)>,
    rejected: Vec<String>,
    failed_reads: Vec<String>,
    reads: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_on_one_sqlite_file_fetch_once_and_serve_only_live_tokens() {
    let dir = tempfile::tempdir().unwrap();
    three_processes_fetch_once_and_serve_only_live_tokens(&Backend::sqlite(dir.path()), dir.path(), 180, 100)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_on_one_redis_fetch_once_and_serve_only_live_tokens() {
    let dir = tempfile::tempdir().unwrap();
    // Readers every 10 ms: the propagation bound (100 ms) is checked to that resolution.
    three_processes_fetch_once_and_serve_only_live_tokens(&Backend::redis("cluster"), dir.path(), 60, 10)
        .await;
}

/// Three nodes started at once on `backend`, a reader on each every `poll_ms`, for `secs`.
async fn three_processes_fetch_once_and_serve_only_live_tokens(
    backend: &Backend,
    dir: &Path,
    secs: u64,
    poll_ms: u64,
) {
    let app = TestApp::new("wxcluster0000001").classic().ttl(LIFETIME_MS / 1000);
    let sim = start_sim(std::slice::from_ref(&app)).await;
    let store = backend.store_toml();
    let tomls: Vec<String> = (0..3)
        .map(|i| node_toml_on(&sim, std::slice::from_ref(&app), &store, &format!("node-{i}"), ""))
        .collect();
    // Fetches as the simulator counts them, with the time each was first seen, counted from
    // before the nodes start: the first fetch happens while they start, and a clock started
    // after it would make the first period look short.
    let origin = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fetches = {
        let (sim, done) = (sim.simulator().clone(), Arc::clone(&done));
        let appid = app.appid().to_owned();
        tokio::spawn(async move {
            let (mut times, mut last) = (Vec::new(), 0);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let n = sim.calls(&appid, TOKEN);
                for _ in last..n {
                    times.push(origin.elapsed());
                }
                last = n;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            times
        })
    };
    // All three at the same instant, on a store none of them wrote to yet.
    let path = dir.to_path_buf();
    let mut nodes: Vec<Node> = std::thread::scope(|s| {
        let handles: Vec<_> = tomls
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let path = &path;
                s.spawn(move || Node::spawn(path, &format!("node-{i}"), t))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let started = Instant::now();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let deadline = started + run_for(secs);
    let client = http();

    // A reader on every node every 100 ms; each value read is checked against the simulator.
    let mut tasks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (url, seen, client, sim_url) = (
            node.url(&format!("/v1/apps/{}/access_token", app.appid())),
            Arc::clone(&seen),
            client.clone(),
            sim.base_url(),
        );
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(poll_ms));
            while Instant::now() < deadline {
                tick.tick().await;
                let (status, body) = get_json(&client, &url, READER_KEY).await;
                let at = Instant::now();
                if status != 200 {
                    seen.lock().unwrap().failed_reads.push(format!("node {i}: {status} {body}"));
                    continue;
                }
                let value = body["value"].as_str().unwrap().to_owned();
                let version = body["version"].as_u64().unwrap();
                {
                    let mut s = seen.lock().unwrap();
                    s.reads += 1;
                    let entry = s.versions.entry(version).or_insert_with(|| (value.clone(), HashMap::new()));
                    assert_eq!(entry.0, value, "one version, one value");
                    entry.1.entry(i).or_insert(at);
                }
                if let Err(check) = sim_accepts_at(&client, &sim_url, &value).await {
                    seen.lock().unwrap().rejected.push(format!("node {i} version {version}: {check}"));
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let fetch_times = fetches.await.unwrap();
    let elapsed = started.elapsed();
    let window = origin.elapsed();
    let s = seen.lock().unwrap();
    assert!(s.failed_reads.is_empty(), "failed reads: {:?}", s.failed_reads);
    assert!(s.rejected.is_empty(), "values the simulator rejected: {:?}", s.rejected);
    assert!(
        s.reads > 3 * (elapsed.as_millis() as u64 / poll_ms) * 7 / 10,
        "readers kept up: {} reads",
        s.reads
    );

    // Fetches: one per refresh period between the three of them, plus the first.
    let allowed = window.as_millis() as u64 / MIN_PERIOD_MS + 1;
    assert!(
        fetch_times.len() as u64 <= allowed,
        "{} fetches in {window:?}, at most {allowed}: {fetch_times:?}",
        fetch_times.len()
    );
    for pair in fetch_times.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(MIN_PERIOD_MS) - Duration::from_millis(100),
            "two fetches {:?} apart: {fetch_times:?}",
            pair[1] - pair[0]
        );
    }
    assert!(fetch_times.len() as u64 >= window.as_millis() as u64 / LIFETIME_MS, "refreshes kept going");

    // Every node served every new value within the store's bound of the first node to serve it
    // (the writer, right after its write), give or take the time between reads.
    let mut spreads = Vec::new();
    for (version, (_, firsts)) in s.versions.iter().skip(1) {
        if firsts.len() < 3 {
            // A value replaced before a reader of every node came by (only the last one).
            assert_eq!(Some(version), s.versions.keys().next_back(), "version {version} seen by {firsts:?}");
            continue;
        }
        let min = firsts.values().min().unwrap();
        let max = firsts.values().max().unwrap();
        spreads.push(*max - *min);
    }
    let worst = spreads.iter().max().copied().unwrap_or_default();
    let bound = backend.propagation_bound() + Duration::from_millis(poll_ms);
    assert!(worst <= bound, "propagation spread {worst:?} over {bound:?}: {spreads:?}");
    assert!(spreads.len() >= 3, "several refreshes propagated: {spreads:?}");

    for node in &mut nodes {
        assert!(node.child.try_wait().unwrap().is_none(), "every node still runs");
        let logs = node.logs();
        // Opening a shared SQLite file may be retried while another process holds it (logged
        // at debug); nothing may fail.
        assert!(!logs.contains(" ERROR ") && !logs.contains("error: "), "{logs}");
        assert!(!logs.contains(&app.sim.secret), "secret in the logs");
        for (value, _) in s.versions.values() {
            assert!(!logs.contains(value.as_str()), "token value in the logs");
        }
    }
    eprintln!(
        "{} reads, {} fetches in {elapsed:?}, worst propagation spread {worst:?}",
        s.reads,
        fetch_times.len()
    );
}

/// The node holding the refresh lease is frozen mid-fetch for longer than its lease; another
/// node refreshes meanwhile. Once resumed, the frozen node's value is never written or served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_holder_frozen_past_its_lease_never_gets_its_value_served() {
    let dir = tempfile::tempdir().unwrap();
    a_frozen_lease_holder_never_gets_its_value_served(&Backend::sqlite(dir.path()), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_redis_a_lease_holder_frozen_past_its_lease_never_gets_its_value_served() {
    let dir = tempfile::tempdir().unwrap();
    a_frozen_lease_holder_never_gets_its_value_served(&Backend::redis("frozen"), dir.path()).await;
}

async fn a_frozen_lease_holder_never_gets_its_value_served(backend: &Backend, dir: &Path) {
    let app = TestApp::new("wxfrozen00000001").classic().ttl(120);
    let sim = start_sim(std::slice::from_ref(&app)).await;
    let store = backend.store_toml();
    let toml = |name: &str| node_toml_on(&sim, std::slice::from_ref(&app), &store, name, "");
    let a = Node::spawn(dir, "a", &toml("a"));
    let client = http();
    let token_path = format!("/v1/apps/{}/access_token", app.appid());
    let (status, t0) = get_json(&client, &a.url(&token_path), ADMIN_KEY).await;
    assert_eq!(status, 200, "{t0}");
    let b = Node::spawn(dir, "b", &toml("b"));
    let (_, b0) = get_json(&client, &b.url(&token_path), ADMIN_KEY).await;
    assert_eq!(b0["version"], t0["version"], "b starts from the stored value");
    assert_eq!(sim.calls(app.appid(), TOKEN), 1);

    // A forced refresh on a whose upstream call hangs 1.5 s; a is frozen inside it.
    sim_fault(&sim, serde_json::json!({"endpoint": TOKEN, "kind": "delay", "delay_ms": 1500, "count": 1}))
        .await;
    let forced_on_a = {
        let (client, url) = (client.clone(), a.url(&format!("{token_path}/refresh")));
        tokio::spawn(async move { post_json(&client, &url, ADMIN_KEY, None).await })
    };
    let granted = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.signal("STOP");
    // The lease lives upstream timeout (2 s) + 5 s; b forces a refresh once it ran out.
    tokio::time::sleep(Duration::from_millis(8000).saturating_sub(granted.elapsed())).await;
    assert!(
        a.is_stopped(),
        "a was resumed before b's refresh, so this run cannot test a frozen lease holder (an orphaned \
         process group gets SIGHUP and SIGCONT when a member exits; see Node::is_stopped):\n{}",
        a.logs()
    );
    let (status, tb) = post_json(&client, &b.url(&format!("{token_path}/refresh")), ADMIN_KEY, None).await;
    assert_eq!(status, 200, "{tb}");
    assert!(tb["version"].as_u64() > t0["version"].as_u64());
    assert_eq!(sim.calls(app.appid(), TOKEN), 3, "a's hung call and b's");
    let tb_value = tb["value"].as_str().unwrap().to_owned();

    a.signal("CONT");
    let _ =
        tokio::time::timeout(Duration::from_secs(10), forced_on_a).await.expect("a answers after resuming");
    // Both nodes serve b's value from now on, and the store keeps it.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for node in [&a, &b] {
            let (status, body) = get_json(&client, &node.url(&token_path), ADMIN_KEY).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(
                body["value"].as_str(),
                Some(tb_value.as_str()),
                "only b's value is served, {} answered {body} (the value b replaced: {}) after {} fetches:\n{}",
                node.base,
                body["value"] == t0["value"],
                sim.calls(app.appid(), TOKEN),
                a.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sim_accepts(&sim, &tb_value).await.expect("b's value is live");
    let stored = backend.stored(app.appid()).await;
    assert_eq!(stored.0, tb_value);
    assert_eq!(Some(stored.1), tb["version"].as_u64());
    let logs = a.logs();
    assert!(
        logs.contains("refresh lease lost before the write") || logs.contains("timeout"),
        "a dropped its late value:\n{logs}"
    );
}
