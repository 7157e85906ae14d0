//! The `wechat-sim` binary: serves a config file, and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn binary_serves_its_config_and_stops_on_sigterm() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(file, "[[app]]\nappid = \"wxb1nary000000001\"\nsecret = \"bin-secret\"\ntoken_ttl_secs = 42\n")
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wechat-sim"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(file.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base =
        line.trim().strip_prefix("wechat-sim listening on ").unwrap_or_else(|| panic!("{line:?}")).to_owned();

    let url = format!(
        "{base}/cgi-bin/token?grant_type=client_credential&appid=wxb1nary000000001&secret=bin-secret"
    );
    let v: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(v["expires_in"], 42, "{v}");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still running 5 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn binary_rejects_a_bad_config_with_one_line() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(file, "[[app]]\nappid = \"wxa\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wechat-sim"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: ") && last.contains("secret"), "{stderr}");
}
