//! The offline verbs through the real binary: flags, stdin/stdout, exit codes and the
//! `error: …` line, as a shell script would see them.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn wxcentral(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxcentral"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wxcentral");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn ok_stdout(args: &[&str], stdin: &[u8]) -> String {
    let out = wxcentral(args, stdin);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts exit code 1 with a single `error: …` line and nothing on stdout; returns the line.
fn failure(args: &[&str], stdin: &[u8]) -> String {
    let out = wxcentral(args, stdin);
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const ENCRYPT: &str = "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04=";
const PLAINTEXT: &str = "{\"ToUserName\":\"gh_97417a04a28d\",\"FromUserName\":\"o9AgO5Kd5ggOC-bXrbNODIiE3bGY\",\"CreateTime\":1714112445,\"MsgType\":\"event\",\"Event\":\"debug_demo\",\"debug_str\":\"hello world\"}";

fn decrypt_args(msg_signature: &str) -> Vec<&str> {
    vec![
        "crypto",
        "decrypt",
        "--token",
        "AAAAA",
        "--aes-key",
        KEY,
        "--appid",
        "wxba5fad812f8e6fb9",
        "--timestamp",
        "1714112445",
        "--nonce",
        "415670741",
        "--msg-signature",
        msg_signature,
    ]
}

#[test]
fn sign_url() {
    let out = ok_stdout(
        &["sign", "url", "--token", "AAAAA", "--timestamp", "1714036504", "--nonce", "1514711492"],
        b"",
    );
    assert_eq!(out, "f464b24fc39322e44b38aa78f5edd27bd1441696\n");
}

#[test]
fn sign_jssdk() {
    let out = ok_stdout(
        &[
            "sign",
            "jssdk",
            "--ticket",
            "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg",
            "--noncestr",
            "Wm3WZYTPz0wzccnW",
            "--timestamp",
            "1414587457",
            "--url",
            "http://mp.weixin.qq.com?params=value",
        ],
        b"",
    );
    assert_eq!(out, "0f9de62fce790f9a083d5c99e95740ceb90c27ed\n");
}

#[test]
fn sign_card() {
    let out = ok_stdout(
        &[
            "sign",
            "card",
            "--api-ticket",
            "ojZ8YtyVyr30HheH3CM73y7h4jJE",
            "--timestamp",
            "1404896688",
            "--nonce-str",
            "123",
            "--card-id",
            "pjZ8Yt1XGILfi-FUsewpnnolGgZk",
            "--code",
            "1434008071",
        ],
        b"",
    );
    assert_eq!(out, "f137ab68b7f8112d20ee528ab6074564e2796250\n");
}

#[test]
fn crypto_decrypt_json_envelope_and_bare_value() {
    let args = decrypt_args("046e02f8204d34f8ba5fa3b1db94908f3df2e9b3");
    let body = format!(r#"{{"ToUserName":"gh_97417a04a28d","Encrypt":"{ENCRYPT}"}}"#);
    assert_eq!(ok_stdout(&args, body.as_bytes()), format!("{PLAINTEXT}\n"));
    assert_eq!(ok_stdout(&args, format!("{ENCRYPT}\n").as_bytes()), format!("{PLAINTEXT}\n"));
}

#[test]
fn crypto_encrypt_reproduces_the_official_reply_and_decrypts_back() {
    let encrypt = [
        "crypto",
        "encrypt",
        "--token",
        "AAAAA",
        "--aes-key",
        KEY,
        "--appid",
        "wxba5fad812f8e6fb9",
        "--timestamp",
        "1713424427",
        "--nonce",
        "415670741",
        "--random",
        "707722b803182950",
        "--format",
        "json",
    ];
    let out = ok_stdout(&encrypt, b"{\"demo_resp\":\"good luck\"}\n");
    assert_eq!(
        out,
        "{\"Encrypt\":\"ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ==\",\"MsgSignature\":\"1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1\",\"TimeStamp\":1713424427,\"Nonce\":\"415670741\"}\n"
    );
    let xml = ok_stdout(&encrypt[..14], b"{\"demo_resp\":\"good luck\"}");
    assert!(xml.starts_with("<xml><Encrypt><![CDATA["), "{xml}");
    let sig = xml.split("<MsgSignature><![CDATA[").nth(1).unwrap().split("]]>").next().unwrap();
    let mut decrypt = decrypt_args(sig);
    decrypt[9] = "1713424427";
    assert_eq!(ok_stdout(&decrypt, xml.as_bytes()), "{\"demo_resp\":\"good luck\"}\n");
}

#[test]
fn failures_exit_1_with_one_error_line_and_no_secrets() {
    let line = failure(&decrypt_args("0000000000000000000000000000000000000000"), ENCRYPT.as_bytes());
    assert!(line.contains("msg_signature"), "{line}");

    let line = failure(&decrypt_args("046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"), b"not an envelope at all");
    assert!(line.contains("malformed envelope"), "{line}");

    let mut bad_key = decrypt_args("046e02f8204d34f8ba5fa3b1db94908f3df2e9b3");
    bad_key[5] = "secretkeyfragment";
    let line = failure(&bad_key, ENCRYPT.as_bytes());
    assert!(line.contains("EncodingAESKey"), "{line}");
    assert!(!line.contains("secretkeyfragment"), "{line}");

    let mut wrong_appid = decrypt_args("046e02f8204d34f8ba5fa3b1db94908f3df2e9b3");
    wrong_appid[7] = "wx0000000000000000";
    let line = failure(&wrong_appid, ENCRYPT.as_bytes());
    assert!(line.contains("receive id"), "{line}");
    assert!(!line.contains("debug_demo"), "the plaintext must not leak: {line}");

    let line = failure(
        &[
            "crypto",
            "encrypt",
            "--token",
            "t",
            "--aes-key",
            KEY,
            "--appid",
            "wx",
            "--timestamp",
            "1",
            "--nonce",
            "n",
            "--random",
            "short",
        ],
        b"hi",
    );
    assert_eq!(line, "error: --random must be exactly 16 bytes (got 5)\n");
}

#[test]
fn usage_errors_are_one_error_line_and_exit_1() {
    for args in [
        &["sign", "url", "--token", "AAAAA"][..],
        &["sign", "jssdk", "--ticket", "T", "--noncestr", "N", "--timestamp", "soon", "--url", "https://x/"],
        &["crypto", "decrypt", "--token", "T"],
        &["sign", "url", "--token", "T", "--timestamp", "1", "--nonce", "n", "--bogus"],
        &["no-such-verb"],
    ] {
        let out = wxcentral(args, b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains("(see --help)"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = wxcentral(&["sign", "url", "--token", "AAAAA"], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--timestamp") && stderr.contains("--nonce"), "names what is missing: {stderr}");
    assert!(!stderr.contains("AAAAA"), "echoes no value: {stderr}");
    // Help is not a failure.
    let out = wxcentral(&["sign", "--help"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("jssdk"));
}
