//! The real `wxcentral` binary: `check-config`, `hash-key`, and `sandbox` end to end.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wxcentral");

#[test]
fn hash_key_prints_sha256_hex() {
    let out = Command::new(BIN).args(["hash-key", "test"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"
    );
}

#[test]
fn check_config_redacts_secrets_and_names_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wxcentral.toml");
    std::fs::write(
        &path,
        r#"
[[app]]
appid = "wx0123456789abcdef"
secret = "${CHECK_CONFIG_APP_SECRET}"
tickets = ["jsapi"]

[[client]]
name = "shop"
key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
apps = ["wx0123456789abcdef"]
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .env("CHECK_CONFIG_APP_SECRET", "very-secret-value-123")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("wx0123456789abcdef") && stdout.contains("shop"), "{stdout}");
    assert!(!stdout.contains("very-secret-value-123"), "{stdout}");
    assert!(stdout.contains("[redacted]"), "{stdout}");

    // A missing variable: exit 1, one line naming the key, no panic.
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .env_remove("CHECK_CONFIG_APP_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: app[0].secret:"), "{stderr}");

    // An override with a bad value, and a missing file.
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .env("CHECK_CONFIG_APP_SECRET", "x")
        .env("WXCENTRAL_SERVER_LISTEN", "nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: server.listen:"));
    let out = Command::new(BIN).args(["check-config", "--config", "/nonexistent/wx.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: config: cannot read"));
}

#[test]
fn serve_refuses_a_bad_config_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wxcentral.toml");
    std::fs::write(&path, "[store]\nkind = \"cassandra\"\n").unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("store.kind"), "{stderr}");
}

/// The README's quick start: the sandbox prints a key and curl lines that work, and stops
/// cleanly on SIGTERM.
#[test]
fn sandbox_serves_demo_apps_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["sandbox", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut api, mut key, mut curl) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(Ok(line)) = lines.next() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["API", url, ..] => api = Some(url.to_string()),
            ["client", "key", k, ..] => key = Some(k.to_string()),
            ["curl", ..] if line.contains("/access_token") && curl.is_none() => {
                curl = Some(line.trim().to_owned());
            }
            _ => {}
        }
        if line.starts_with("Ctrl-C") || Instant::now() > deadline {
            break;
        }
    }
    let (api, key, curl) = (api.expect("API line"), key.expect("key line"), curl.expect("curl line"));
    assert!(curl.contains(&key) && curl.contains(&api), "{curl}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let url = format!("{api}/v1/apps/{}/access_token", wxcentral::sandbox::DEMO_OFFICIAL_ACCOUNT);
        let body: serde_json::Value =
            c.get(&url).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        assert!(body["value"].as_str().is_some_and(|v| v.len() >= 32), "{body}");
        let r = c
            .post(format!("{api}/v1/apps/{}/jssdk_config", wxcentral::sandbox::DEMO_OFFICIAL_ACCOUNT))
            .bearer_auth(&key)
            .json(&serde_json::json!({"url": "https://example.com/page"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });
    assert!(dir.path().join("wxcentral.db").exists(), "sqlite under --data");

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "sandbox exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "sandbox did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
