//! Helpers shared by the simulator's HTTP tests: a started simulator plus a client.

use reqwest::StatusCode;
use serde_json::{Value, json};
use wechat_sim::{SimConfig, SimHandle};

pub const APPID: &str = "wx1111111111111111";
pub const SECRET: &str = "secret-of-app-one";
pub const APPID2: &str = "wx2222222222222222";
pub const SECRET2: &str = "secret-of-app-two";

pub struct Sim {
    pub h: SimHandle,
    pub c: reqwest::Client,
}

pub async fn start(config: SimConfig) -> Sim {
    let h = wechat_sim::start_on("127.0.0.1:0", config).await.expect("simulator starts");
    Sim { h, c: reqwest::Client::new() }
}

impl Sim {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.h.base_url())
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.c.get(self.url(path)).send().await.expect("GET reaches the simulator");
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}")))
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.post_raw(path, body.to_string()).await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let r = self.c.post(self.url(path)).body(body).send().await.expect("POST reaches the simulator");
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: {e}: {text}")))
    }

    pub async fn classic(&self, appid: &str, secret: &str) -> Value {
        self.get(&format!("/cgi-bin/token?grant_type=client_credential&appid={appid}&secret={secret}"))
            .await
            .1
    }

    /// A classic token, which must be issued.
    pub async fn classic_ok(&self, appid: &str, secret: &str) -> String {
        let v = self.classic(appid, secret).await;
        v["access_token"].as_str().unwrap_or_else(|| panic!("no token: {v}")).to_owned()
    }

    pub async fn stable(&self, appid: &str, secret: &str, force: bool) -> Value {
        let body = json!({ "grant_type": "client_credential", "appid": appid, "secret": secret, "force_refresh": force });
        self.post("/cgi-bin/stable_token", body).await.1
    }

    pub async fn stable_ok(&self, appid: &str, secret: &str, force: bool) -> (String, u64) {
        let v = self.stable(appid, secret, force).await;
        let t = v["access_token"].as_str().unwrap_or_else(|| panic!("no token: {v}")).to_owned();
        (t, v["expires_in"].as_u64().unwrap())
    }

    /// errcode of a business call made with `token` (0 when it succeeded).
    pub async fn use_token(&self, token: &str) -> i64 {
        let (_, v) = self.get(&format!("/cgi-bin/get_api_domain_ip?access_token={token}")).await;
        if v.get("ip_list").is_some() { 0 } else { errcode(&v) }
    }

    pub async fn advance(&self, secs: u64) {
        let (s, v) = self.post("/__sim/clock", json!({ "advance_secs": secs })).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    pub async fn now(&self) -> u64 {
        self.get("/__sim/clock").await.1["now"].as_u64().unwrap()
    }

    /// Moves the clock to `secs_after` seconds past the next 00:00 Asia/Shanghai, so that a test
    /// counting per-day limits cannot straddle a real midnight.
    pub async fn to_next_shanghai_day(&self, secs_after: u64) {
        let now = self.now().await;
        self.advance(wechat_sim::secs_to_next_shanghai_midnight(now * 1000) + secs_after).await;
    }

    pub async fn add_fault(&self, spec: Value) {
        let (s, v) = self.post("/__sim/faults", spec).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
}

pub fn errcode(v: &Value) -> i64 {
    v["errcode"].as_i64().unwrap_or_else(|| panic!("no errcode in {v}"))
}

/// Asserts a WeChat error body: the errcode, the exact errmsg text, and a `rid: x-y-z` of hex.
#[track_caller]
pub fn assert_wx_err(v: &Value, code: i64, text: &str) {
    assert_eq!(v["errcode"].as_i64(), Some(code), "{v}");
    let msg = v["errmsg"].as_str().unwrap_or_else(|| panic!("no errmsg in {v}"));
    let rid = msg
        .strip_prefix(text)
        .and_then(|rest| rest.strip_prefix(" rid: "))
        .unwrap_or_else(|| panic!("errmsg {msg:?} is not {text:?} + rid"));
    let parts: Vec<&str> = rid.split('-').collect();
    assert_eq!(parts.len(), 3, "{rid}");
    assert!(parts.iter().all(|p| p.len() == 8 && p.bytes().all(|b| b.is_ascii_hexdigit())), "{rid}");
}
