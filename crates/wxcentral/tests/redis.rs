//! Cluster mode on a real `redis-server` (DESIGN.md §6, §8): several real `wxcentral serve`
//! processes under load, a node killed mid-fetch, and Redis itself frozen (SIGSTOP), killed and
//! restarted with AOF, while every value read is checked against the simulator.
//! (A lease holder frozen past its lease is in `cluster.rs`, run on SQLite and on Redis.)

mod common;

use common::platform::*;
use common::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wxcentral_core::store::{AuthorizerStore, CredentialStore};
use wxcentral_core::{CredentialKey, CredentialKind};

const TOKEN: &str = "/cgi-bin/token";
const AUTHORIZER_TOKEN: &str = "/cgi-bin/component/api_authorizer_token";

fn spawn_nodes(dir: &std::path::Path, names: &[&str], toml: impl Fn(&str) -> String) -> Vec<Node> {
    names.iter().map(|n| Node::spawn(dir, n, &toml(n))).collect()
}

/// Waits until every node serves the same version at `path`; returns that answer.
async fn agreed(nodes: &[Node], path: &str) -> Value {
    let client = http();
    let t0 = Instant::now();
    loop {
        let mut answers = Vec::new();
        for n in nodes {
            let (s, v) = get_json(&client, &n.url(path), ADMIN_KEY).await;
            if s == 200 {
                answers.push(v);
            }
        }
        if answers.len() == nodes.len() && answers.iter().all(|a| a["version"] == answers[0]["version"]) {
            return answers.swap_remove(0);
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "nodes never agreed on {path}: {answers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The time of day (seconds, UTC) a node's log line was written: `2026-12-02T18:50:01.123456Z …`.
fn log_seconds(line: &str) -> f64 {
    let stamp = line.split_whitespace().next().unwrap_or_default();
    let time = stamp.split('T').nth(1).unwrap_or_default().trim_end_matches('Z');
    let mut parts =
        time.split(':').map(|p| p.parse::<f64>().unwrap_or_else(|_| panic!("log time in {line}")));
    let (h, m, s) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    h * 3600.0 + m * 60.0 + s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_take_5000_reads_and_600_reports_with_one_fetch_and_agree_within_100ms() {
    let app = TestApp::new("wxredisreads0001").classic().ttl(600);
    let apps = std::slice::from_ref(&app);
    let sim = Arc::new(start_sim(apps).await);
    let redis = RedisServer::start();
    let store = redis_store_toml(&redis.url(), "reads");
    let dir = tempfile::tempdir().unwrap();
    let nodes = spawn_nodes(dir.path(), &["n0", "n1", "n2"], |n| node_toml_on(&sim, apps, &store, n, ""));
    let path = format!("/v1/apps/{}/access_token", app.appid());
    let v1 = agreed(&nodes, &path).await["value"].as_str().unwrap().to_owned();
    assert_eq!(sim.calls(app.appid(), TOKEN), 1, "three nodes started, one fetch");

    // 5,000 reads and 600 reports that v1 failed, spread over the nodes, all in flight at once.
    const READS: usize = 5000;
    const REPORTS: usize = 600;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(READS + REPORTS));
    let tasks: Vec<_> = (0..READS + REPORTS)
        .map(|i| {
            let (client, start, v1) = (client.clone(), Arc::clone(&start), v1.clone());
            let url = nodes[i % 3].url(&path);
            tokio::spawn(async move {
                start.wait().await;
                let report = i < REPORTS;
                let (s, v) = if report {
                    // A report waits the read bound for the refresh; under this flood on two
                    // cores the refresh may take longer, and the answer is 503 with
                    // Retry-After, which a client follows (the SDK does): at most three tries.
                    let mut tries = 0;
                    loop {
                        tries += 1;
                        let body = Some(json!({ "invalid": v1 }));
                        let (s, v) = post_json(&client, &format!("{url}/refresh"), REFRESHER_KEY, body).await;
                        if s != 503 || tries == 3 {
                            break (s, v);
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                } else {
                    get_json(&client, &url, READER_KEY).await
                };
                (report, s, v["value"].as_str().unwrap_or_default().to_owned(), v)
            })
        })
        .collect();
    let mut v2s = std::collections::BTreeSet::new();
    let mut read_values = std::collections::BTreeSet::new();
    for t in tasks {
        let (report, status, value, body) = t.await.unwrap();
        assert_eq!(status, 200, "report {report}: {body}");
        if report {
            assert_ne!(value, v1, "a report of v1 is answered with its successor");
            v2s.insert(value);
        } else {
            read_values.insert(value);
        }
    }
    assert_eq!(v2s.len(), 1, "one successor: {v2s:?}");
    let v2 = v2s.into_iter().next().unwrap();
    assert!(read_values.iter().all(|v| *v == v1 || *v == v2), "reads saw only v1 and v2");
    sim_accepts(&sim, &v2).await.expect("the successor is live");
    assert_eq!(sim.calls(app.appid(), TOKEN), 2, "600 reports across three nodes, one refresh");

    // Each node's own log says when it installed the new value in memory (the writer right
    // after its fenced write, the others when the change feed told them): that is when it
    // serves it. Under this flood an HTTP probe would measure its queue, not the feed.
    let version = agreed(&nodes, &path).await["version"].as_u64().unwrap();
    let mut installed: Vec<f64> = nodes
        .iter()
        .map(|n| {
            let line = n
                .logs()
                .lines()
                .find(|l| {
                    (l.contains("credential refreshed") || l.contains("adopted a newer value"))
                        && l.contains(&format!("version={version}"))
                })
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no install of version {version} in {}:\n{}", n.base, n.logs()));
            log_seconds(&line)
        })
        .collect();
    // Across midnight the later stamps are the small ones.
    if installed.iter().any(|t| *t > 43_200.0) {
        installed.iter_mut().filter(|t| **t < 3_600.0).for_each(|t| *t += 86_400.0);
    }
    let first = installed.iter().copied().fold(f64::MAX, f64::min);
    for (i, t) in installed.iter().enumerate() {
        let after = Duration::from_secs_f64(t - first);
        eprintln!("node {i} installed the new value {after:?} after the first node");
        assert!(after <= Duration::from_millis(100), "node {i} installed it {after:?} after the writer");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.calls(app.appid(), TOKEN), 2, "nothing more afterwards");
    for n in &nodes {
        assert!(!n.logs().contains(" ERROR "), "{}", n.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_lease_holder_mid_fetch_fails_no_read_and_another_node_refreshes_once() {
    let app = TestApp::new("wxrediskill00001").classic().ttl(600);
    let apps = std::slice::from_ref(&app);
    let sim = start_sim(apps).await;
    let redis = RedisServer::start();
    let store = redis_store_toml(&redis.url(), "kill");
    let dir = tempfile::tempdir().unwrap();
    let toml = |n: &str| node_toml_on(&sim, apps, &store, n, "");
    let mut nodes = spawn_nodes(dir.path(), &["a", "b", "c"], toml);
    let path = format!("/v1/apps/{}/access_token", app.appid());
    let v1 = agreed(&nodes, &path).await["value"].as_str().unwrap().to_owned();
    assert_eq!(sim.calls(app.appid(), TOKEN), 1);

    // Readers on b and c every 50 ms until the end.
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = nodes[1..]
        .iter()
        .map(|n| {
            let (client, url, failures, stop) =
                (http(), n.url(&path), Arc::clone(&failures), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut reads = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (status, body): (u16, Value) = get_json(&client, &url, READER_KEY).await;
                    if status != 200 {
                        failures.lock().unwrap().push(format!("{url}: {status} {body}"));
                    }
                    reads += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                reads
            })
        })
        .collect();

    // a is told v1 failed; its upstream call hangs 4 s, and a is killed inside it, lease held.
    sim_fault(&sim, json!({"endpoint": TOKEN, "kind": "delay", "delay_ms": 4000, "count": 1})).await;
    let refresh = format!("{path}/refresh");
    let report = json!({ "invalid": v1 });
    {
        // a dies before it answers: the request fails, and that is all.
        let (url, report) = (nodes[0].url(&refresh), report.clone());
        tokio::spawn(async move { http().post(url).bearer_auth(REFRESHER_KEY).json(&report).send().await });
    }
    let t0 = Instant::now();
    while sim.calls(app.appid(), TOKEN) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(5), "a never called WeChat");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let granted = Instant::now();
    nodes[0].signal("KILL");

    // b is told the same: it waits out a's lease (upstream timeout 2 s + 5 s), then refreshes.
    let vb = loop {
        let (s, v) = post_json(&http(), &nodes[1].url(&refresh), REFRESHER_KEY, Some(report.clone())).await;
        if s == 200 {
            break v;
        }
        // The lease outlives the read bound: 503 with Retry-After until it expired.
        assert_eq!(s, 503, "{v}");
        assert!(granted.elapsed() < Duration::from_secs(15), "b never refreshed: {v}");
    };
    let vb_value = vb["value"].as_str().unwrap().to_owned();
    assert_ne!(vb_value, v1);
    assert!(
        granted.elapsed() >= Duration::from_secs(6),
        "b refreshed at {:?}, inside a's lease",
        granted.elapsed()
    );
    sim_accepts(&sim, &vb_value).await.expect("b's value is live");
    assert_eq!(sim.calls(app.appid(), TOKEN), 3, "a's hung call and b's, nothing else");
    let (s, vc) = get_json(&http(), &nodes[2].url(&path), READER_KEY).await;
    assert_eq!((s, vc["value"].as_str()), (200, Some(vb_value.as_str())), "c follows b at once");

    // a comes back on the same store: it serves b's value and fetches nothing.
    drop(nodes.remove(0));
    let a = Node::spawn(dir.path(), "a-again", &toml("a"));
    let (s, va) = get_json(&http(), &a.url(&path), READER_KEY).await;
    assert_eq!((s, va["value"].as_str()), (200, Some(vb_value.as_str())));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.calls(app.appid(), TOKEN), 3);
    let stored = open_redis_store(&redis, "kill")
        .await
        .get_credential(&CredentialKey::new(app.appid(), CredentialKind::AccessToken))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.value.expose(), &vb_value);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut reads = 0;
    for r in readers {
        reads += r.await.unwrap();
    }
    assert!(reads > 100, "{reads} reads");
    assert!(failures.lock().unwrap().is_empty(), "reads failed: {:?}", failures.lock().unwrap());
}

/// What the readers of the fault test saw.
#[derive(Default)]
struct Watch {
    reads: u64,
    failed: Vec<String>,
    rejected: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_frozen_for_10s_then_killed_and_restarted_loses_nothing_and_fails_no_read() {
    // A classic app with a ticket, and a platform with 20 authorizers whose refresh tokens
    // rotate on every refresh (the previous one works 5 s more): 30 s lifetimes refreshed
    // 15 s before expiry, so a 10 s outage always has refreshes falling due inside it.
    const LIFETIME: u64 = 30;
    let app = TestApp::new("wxredisfault0001")
        .classic()
        .ttl(LIFETIME)
        .tickets(&[wechat_proto::api::TicketType::Jsapi]);
    let port = free_port();
    let hub = format!("http://127.0.0.1:{port}");
    let overlap = app.sim.overlap_secs;
    let sim = {
        let comp = wechat_sim::SimComponent::new(COMP, COMP_SECRET, MSG_TOKEN, AES_KEY)
            .push_url(format!("{hub}/callback/component/{COMP}"))
            .push_interval(3600)
            .authorizer_ttl(LIFETIME)
            .rotate_refresh_token(true, 5);
        let comp = wechat_sim::SimComponent { overlap_secs: overlap, ..comp };
        wechat_sim::start_on("127.0.0.1:0", wechat_sim::SimConfig::new().app(app.sim.clone()).component(comp))
            .await
            .unwrap()
    };
    let made = sim_post(&sim, "/__sim/authorizers", json!({ "component_appid": COMP, "count": 20 })).await;
    let authorizers: Vec<String> = made["authorizers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["authorizer_appid"].as_str().unwrap().to_owned())
        .collect();
    let mut redis = RedisServer::start();
    let store = redis_store_toml(&redis.url(), "faults");
    let dir = tempfile::tempdir().unwrap();
    let apps = std::slice::from_ref(&app);
    let toml = |n: &str| {
        let mut t = node_toml_on(&sim, apps, &store, n, "refresh_before_secs = 15\n");
        if n == "n0" {
            t = t.replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""), 1);
        }
        t + &format!(
            "\n[[component]]\nappid = \"{COMP}\"\nsecret = \"{COMP_SECRET}\"\ntoken = \"{MSG_TOKEN}\"\n\
             encoding_aes_key = \"{AES_KEY}\"\n\n[[client]]\nname = \"platform\"\nkey_sha256 = \"{}\"\n\
             apps = [\"component:{COMP}\"]\nrefresh = true\n",
            wxcentral::config::hash_key(PLATFORM_KEY)
        )
    };
    // n0 takes WeChat's pushes and adopts the authorizers into the empty store; then the others.
    let mut nodes = spawn_nodes(dir.path(), &["n0"], toml);
    for a in &authorizers {
        let url = nodes[0].url(&format!("/v1/apps/{a}/access_token"));
        wait_for(Duration::from_secs(30), "every authorizer's token", async || {
            let (s, _) = get_json(&http(), &url, PLATFORM_KEY).await;
            (s == 200).then_some(())
        })
        .await;
    }
    nodes.extend(spawn_nodes(dir.path(), &["n1", "n2"], toml));
    let token_path = format!("/v1/apps/{}/access_token", app.appid());
    let ticket_path = format!("/v1/apps/{}/jsapi_ticket", app.appid());
    agreed(&nodes, &token_path).await;

    // Readers on every node every 100 ms: the app's token and ticket and one authorizer's
    // token in turn, each token checked against the simulator.
    let watch = Arc::new(Mutex::new(Watch::default()));
    let began = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (base, watch, stop, sim_url, authorizers) =
            (node.base.clone(), Arc::clone(&watch), Arc::clone(&stop), sim.base_url(), authorizers.clone());
        let (token_path, ticket_path) = (token_path.clone(), ticket_path.clone());
        readers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
            let mut turn = i;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                turn += 1;
                let authz = format!("/v1/apps/{}/access_token", authorizers[turn % authorizers.len()]);
                for (path, key, is_token) in [
                    (&token_path, ADMIN_KEY, true),
                    (&ticket_path, ADMIN_KEY, false),
                    (&authz, PLATFORM_KEY, true),
                ] {
                    let (s, v) = get_json(&client, &format!("{base}{path}"), key).await;
                    {
                        let mut w = watch.lock().unwrap();
                        w.reads += 1;
                        if s != 200 {
                            w.failed.push(format!("{:?} node {i} {path}: {s} {v}", began.elapsed()));
                            continue;
                        }
                    }
                    let value = v["value"].as_str().unwrap().to_owned();
                    if is_token && let Err(e) = sim_accepts_at(&client, &sim_url, &value).await {
                        let at = began.elapsed();
                        watch
                            .lock()
                            .unwrap()
                            .rejected
                            .push(format!("{at:?} node {i} {path} v{}: {e}", v["version"]));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    let client = http();
    let classic_calls_before = sim.calls(app.appid(), TOKEN);
    let authz_calls_before: u64 = authorizers.iter().map(|a| sim.calls(a, AUTHORIZER_TOKEN)).sum();
    let t0 = Instant::now();
    eprintln!("readers began {:?} before the faults' clock", t0 - began);
    let mut fetch_times = Vec::new();
    let mut seen = classic_calls_before;
    let mut sample = async |until: Duration, fetch_times: &mut Vec<Duration>| {
        while t0.elapsed() < until {
            let n = sim.calls(app.appid(), TOKEN);
            for _ in seen..n {
                fetch_times.push(t0.elapsed());
            }
            seen = n;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    // 5 s of normal service, then Redis frozen for 10 s.
    sample(Duration::from_secs(5), &mut fetch_times).await;
    redis.signal("STOP");
    sample(Duration::from_secs(9), &mut fetch_times).await;
    for n in &nodes {
        let r = client.get(n.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 503, "readiness degraded while Redis is frozen");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "degraded", "{body}");
        assert_eq!(client.get(n.url("/healthz")).send().await.unwrap().status(), 200);
    }
    sample(Duration::from_secs(15), &mut fetch_times).await;
    redis.signal("CONT");
    // Readiness comes back once the feed subscribed again.
    for n in &nodes {
        wait_for(Duration::from_secs(10), "ready again", async || {
            let r = client.get(n.url("/readyz")).send().await.unwrap();
            (r.status() == 200).then_some(())
        })
        .await;
    }

    // Later Redis is killed (kill -9) and restarted 2 s later on the same AOF.
    sample(Duration::from_secs(33), &mut fetch_times).await;
    redis.kill();
    sample(Duration::from_secs(35), &mut fetch_times).await;
    redis.restart();
    sample(Duration::from_secs(60), &mut fetch_times).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    let elapsed = t0.elapsed();

    let w = std::mem::take(&mut *watch.lock().unwrap());
    if !w.failed.is_empty() {
        for n in &nodes {
            eprintln!(
                "---- {}\n{}",
                n.base,
                n.logs()
                    .lines()
                    .filter(|l| l.contains("jsapi") || l.contains("WARN") || l.contains("ERROR"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    assert!(w.failed.is_empty(), "failed reads: {:#?}", w.failed);
    assert!(w.rejected.is_empty(), "values WeChat rejects: {:#?}", w.rejected);
    assert!(w.reads > 3 * 3 * 400, "readers kept up: {} reads", w.reads);

    // One fetch per refresh period for the classic token, across the outages too: the
    // earliest refresh comes 15 s (and up to 1.5 s of jitter) before expiry.
    let min_period = Duration::from_millis(LIFETIME * 1000 - 15_000 - 1_500);
    for pair in fetch_times.windows(2) {
        assert!(
            pair[1] - pair[0] >= min_period - Duration::from_millis(200),
            "two fetches {:?} apart: {fetch_times:?}",
            pair[1] - pair[0]
        );
    }
    let allowed = elapsed.as_millis() as u64 / min_period.as_millis() as u64 + 1;
    assert!(fetch_times.len() as u64 <= allowed, "{fetch_times:?}");
    assert!(!fetch_times.is_empty(), "the classic token was refreshed during the test");
    let authz_calls: u64 =
        authorizers.iter().map(|a| sim.calls(a, AUTHORIZER_TOKEN)).sum::<u64>() - authz_calls_before;
    assert!(
        authz_calls <= authorizers.len() as u64 * allowed,
        "{authz_calls} authorizer refreshes for {} authorizers in {elapsed:?}",
        authorizers.len()
    );
    assert!(authz_calls >= authorizers.len() as u64, "authorizers were refreshed: {authz_calls}");

    // No refresh token lost: what the store keeps is what WeChat will take next, for each one.
    let store = open_redis_store(&redis, "faults").await;
    let mut mismatched = Vec::new();
    for attempt in 0..10 {
        mismatched.clear();
        let current = reqwest::get(format!("{}/__sim/authorizers?component_appid={COMP}", sim.base_url()))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        for a in current["authorizers"].as_array().unwrap() {
            let appid = a["authorizer_appid"].as_str().unwrap();
            let stored = store.get_refresh_token(appid).await.unwrap();
            if stored.as_ref().map(|s| s.expose().as_str()) != a["refresh_token"].as_str() {
                mismatched.push(appid.to_owned());
            }
        }
        if mismatched.is_empty() {
            break;
        }
        // A refresh may be between WeChat's answer and the store's write right now.
        eprintln!("attempt {attempt}: {} refresh tokens differ; looking again", mismatched.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(mismatched.is_empty(), "refresh tokens lost: {mismatched:?}");
    for n in &nodes {
        let logs = n.logs();
        assert!(!logs_mention_errcode(&logs, 61023), "a refresh token was refused:\n{logs}");
        assert!(!logs.contains("never written"), "{logs}");
    }
    eprintln!("{} reads, classic fetches at {fetch_times:?}, {authz_calls} authorizer refreshes", w.reads);
}

/// A node starting while Redis stalls (an fsync, a failover, an AOF still loading) waits for it
/// instead of exiting: the engine's first reads are retried, and it starts and serves once Redis
/// answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_started_while_redis_stalls_waits_for_it_and_starts() {
    let app = TestApp::new("wxredisstall0001").classic();
    let _ = logs(); // captures what the engine logs from here on
    let sim = start_sim(std::slice::from_ref(&app)).await;
    let redis = RedisServer::start();
    let config = wxcentral_core::store::RedisConfig {
        url: wechat_proto::Secret::new(redis.url()),
        namespace: "stall".into(),
        timeout: Duration::from_millis(200),
        wait_replicas: 0,
    };
    let sealer = Arc::new(wxcentral_core::seal::Sealer::new(&STORE_KEY, &[]).unwrap());
    let store = wxcentral_core::store::RedisStore::open(&config, Some(sealer)).await.unwrap();
    // Frozen before the engine's first read, thawed 1.5 s later: several reads time out first.
    redis.signal("STOP");
    wait_for(Duration::from_secs(2), "redis stopped", async || is_stopped(redis.pid()).then_some(())).await;
    let pid = redis.pid();
    let thaw = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(send_signal(pid, "CONT"), "kill -CONT {pid}");
    });
    let spec = wxcentral_core::AppSpec::official_account(app.appid(), app.sim.secret.as_str());
    let spec = wxcentral_core::AppSpec { token_api: wxcentral_core::TokenApi::Classic, ..spec };
    let upstream = wxcentral_core::upstream::Upstream::new(&sim.base_url(), Duration::from_secs(2)).unwrap();
    let started = Instant::now();
    let engine = wxcentral_core::Engine::start(
        vec![spec],
        Arc::new(store),
        upstream,
        wxcentral_core::EngineConfig::default(),
    )
    .await
    .expect("the engine starts once Redis answers");
    assert!(started.elapsed() >= Duration::from_millis(1000), "it did wait: {:?}", started.elapsed());
    thaw.await.unwrap();
    let token = engine.get(app.appid(), CredentialKind::AccessToken).await.expect("a token");
    sim_accepts(&sim, token.value.expose()).await.expect("the token is live");
    assert_eq!(sim.calls(app.appid(), TOKEN), 1);
    assert!(logs().contains("store read at start failed; retrying"), "the wait is logged");
    engine.shutdown().await;
}

#[test]
fn an_errcode_is_found_in_a_log_line_but_not_in_its_timestamp() {
    let refused = "2026-12-06T14:35:57.000001Z  WARN wxcentral_core::engine::slot: refresh failed error=\"errcode 61023\"";
    let timestamp_only =
        "2026-12-06T14:35:57.061023Z  INFO wxcentral_core::engine::slot: adopted a newer value";
    assert!(logs_mention_errcode(refused, 61023));
    assert!(!logs_mention_errcode(timestamp_only, 61023));
    assert!(logs_mention_errcode(&format!("{timestamp_only}\n{refused}"), 61023));
}
