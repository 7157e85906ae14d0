//! The client of WeChat's token endpoints. It takes a `base_url` so tests point it at
//! `wechat-sim`.
//!
//! Every call records `wxcentral_upstream_calls_total{endpoint, app, outcome}` and one tracing
//! event. Neither ever carries a secret: URLs are never logged (classic token calls put the app
//! secret in the query, ticket calls the access token), success bodies are never logged, and
//! transport errors are stripped of their URL before they are formatted.

use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::time::{Duration, Instant};
use wechat_proto::api::{
    self, AccessTokenResponse, ApiError, AuthorizerTokenRequest, AuthorizerTokenResponse,
    ComponentTokenQuery, ComponentTokenRequest, ComponentTokenResponse, PreAuthCodeRequest,
    PreAuthCodeResponse, QueryAuthRequest, QueryAuthResponse, StableTokenRequest, TicketQuery,
    TicketResponse, TicketType, TokenQuery,
};
use wechat_proto::errcode::ErrClass;
use wechat_proto::{ErrCode, Secret};

/// Why an upstream call failed, in enough detail to pick a retry policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// WeChat answered with a non-zero errcode.
    #[error("errcode {}: {errmsg}", errcode.code())]
    WeChat { errcode: ErrCode, errmsg: String },
    /// A non-2xx HTTP status (WeChat itself answers errors with 200).
    #[error("http status {status}")]
    Http { status: u16 },
    /// No complete answer within the client timeout.
    #[error("timed out")]
    Timeout,
    /// Connecting, TLS or reading the body failed.
    #[error("transport: {0}")]
    Transport(String),
    /// A 200 whose body is neither the expected shape nor an errcode body.
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// What a failure means for the caller's retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultClass {
    /// 40001 / 40014 / 42001: the token used was rejected; one compare-and-refresh, then retry.
    TokenInvalid,
    /// errcode -1: WeChat asks to retry later.
    Busy,
    /// 45009: the day's quota is spent until 00:00 Asia/Shanghai.
    Quota,
    /// Wrong appid/secret, IP not whitelisted, verify ticket or refresh token invalid: retrying
    /// fast cannot help; an operator must act.
    Config,
    /// 5xx, timeouts, transport errors, garbage: likely to pass on retry.
    Transient,
    /// Any other errcode: the request itself was refused.
    Rejected,
}

impl FaultClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenInvalid => "token_invalid",
            Self::Busy => "busy",
            Self::Quota => "quota",
            Self::Config => "config",
            Self::Transient => "transient",
            Self::Rejected => "rejected",
        }
    }

    /// Whether fast retries stop for this class (DESIGN.md §2 rule 6).
    pub fn stops_retries(self) -> bool {
        matches!(self, Self::Quota | Self::Config)
    }
}

impl fmt::Display for FaultClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl UpstreamError {
    pub fn class(&self) -> FaultClass {
        match self {
            Self::WeChat { errcode, .. } => match errcode.class() {
                ErrClass::TokenInvalid => FaultClass::TokenInvalid,
                ErrClass::Busy => FaultClass::Busy,
                ErrClass::Quota => FaultClass::Quota,
                ErrClass::Config => FaultClass::Config,
                ErrClass::Ok | ErrClass::Other => FaultClass::Rejected,
            },
            // 429 and 5xx are load or outage; other 4xx mean we talk to the wrong thing
            // (base_url, a proxy refusing us), which retrying fast cannot fix.
            Self::Http { status } if *status == 429 || *status >= 500 => FaultClass::Transient,
            Self::Http { .. } => FaultClass::Config,
            Self::Timeout | Self::Transport(_) | Self::Malformed(_) => FaultClass::Transient,
        }
    }

    pub fn errcode(&self) -> Option<ErrCode> {
        match self {
            Self::WeChat { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// The `outcome` label of `wxcentral_upstream_calls_total`.
    pub fn outcome(&self) -> String {
        match self {
            Self::WeChat { errcode, .. } => errcode.code().to_string(),
            Self::Http { status } if *status >= 500 => "http_5xx".into(),
            Self::Http { .. } => "http_4xx".into(),
            Self::Timeout => "timeout".into(),
            Self::Transport(_) => "transport".into(),
            Self::Malformed(_) => "malformed".into(),
        }
    }

    /// Short and secret-free, for status pages and `Retry-After` reasons: `errcode 45009`,
    /// `http 502`, `timeout`, ...
    pub fn short(&self) -> String {
        match self {
            Self::WeChat { errcode, .. } => format!("errcode {}", errcode.code()),
            Self::Http { status } => format!("http {status}"),
            Self::Timeout => "timeout".into(),
            Self::Transport(_) => "transport error".into(),
            Self::Malformed(_) => "malformed response".into(),
        }
    }

    /// The engine-level error for a caller who asked for this call explicitly.
    pub fn into_error(self) -> Error {
        match self {
            Self::WeChat { errcode, errmsg } => Error::UpstreamRejected { errcode, errmsg },
            other => Error::Upstream(other.to_string()),
        }
    }
}

/// A reqwest error without the URL (which may carry a secret or token) but with its causes.
fn describe(e: &reqwest::Error) -> String {
    let mut out = String::new();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(err) = cur {
        let msg = err.to_string();
        if !msg.contains("://") && !out.contains(&msg) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&msg);
        }
        cur = err.source();
    }
    if out.is_empty() {
        out = if e.is_connect() { "connect failed".into() } else { "request failed".into() };
    }
    out
}

/// serde's messages may quote the offending input (`invalid type: string "…"`), which could be
/// a token; keep the message, drop anything quoted.
fn scrub(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut quote: Option<char> = None;
    for c in reason.chars() {
        match quote {
            Some(q) if c == q => {
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None if c == '"' || c == '`' => {
                out.push(c);
                out.push('…');
                quote = Some(c);
            }
            None => out.push(c),
        }
    }
    out
}

#[derive(Clone, Debug)]
pub struct Upstream {
    base_url: String,
    http: reqwest::Client,
    timeout: Duration,
}

enum Method<'a, Q, B> {
    Get(&'a Q),
    Post { query: Option<&'a Q>, body: &'a B },
}

impl Upstream {
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .build()
            .map_err(|e| Error::Config(format!("upstream client: {e}")))?;
        Ok(Self { base_url: base_url.trim_end_matches('/').to_owned(), http, timeout })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The whole-request timeout; the engine sizes refresh leases from it.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `POST /cgi-bin/stable_token`. In normal mode WeChat returns the current token while it
    /// has more than ~300 s left; `force_refresh` revokes it (20/day, 30 s apart, otherwise the
    /// same token comes back).
    pub async fn stable_token(
        &self,
        appid: &str,
        secret: &Secret,
        force_refresh: bool,
    ) -> Result<AccessTokenResponse, UpstreamError> {
        let body = StableTokenRequest {
            grant_type: "client_credential".into(),
            appid: appid.to_owned(),
            secret: secret.clone(),
            force_refresh,
        };
        self.call::<(), _, _>(api::PATH_STABLE_TOKEN, appid, Method::Post { query: None, body: &body }).await
    }

    /// `GET /cgi-bin/token`: a new token each call; the previous one dies ~5 minutes later.
    pub async fn classic_token(
        &self,
        appid: &str,
        secret: &Secret,
    ) -> Result<AccessTokenResponse, UpstreamError> {
        let query = TokenQuery {
            grant_type: "client_credential".into(),
            appid: appid.to_owned(),
            secret: secret.clone(),
        };
        self.call::<_, (), _>(api::PATH_TOKEN, appid, Method::Get(&query)).await
    }

    /// `GET /cgi-bin/ticket/getticket`; `appid` only labels the metric.
    pub async fn ticket(
        &self,
        appid: &str,
        access_token: &Secret,
        ticket_type: TicketType,
    ) -> Result<TicketResponse, UpstreamError> {
        let query = TicketQuery { access_token: access_token.clone(), ticket_type };
        self.call::<_, (), _>(api::PATH_GETTICKET, appid, Method::Get(&query)).await
    }

    /// `POST /cgi-bin/component/api_component_token`.
    pub async fn component_token(
        &self,
        component_appid: &str,
        secret: &Secret,
        verify_ticket: &Secret,
    ) -> Result<ComponentTokenResponse, UpstreamError> {
        let body = ComponentTokenRequest {
            component_appid: component_appid.to_owned(),
            component_appsecret: secret.clone(),
            component_verify_ticket: verify_ticket.clone(),
        };
        self.call::<(), _, _>(
            api::PATH_COMPONENT_TOKEN,
            component_appid,
            Method::Post { query: None, body: &body },
        )
        .await
    }

    /// `POST /cgi-bin/component/api_create_preauthcode`.
    pub async fn create_preauthcode(
        &self,
        component_appid: &str,
        component_access_token: &Secret,
    ) -> Result<PreAuthCodeResponse, UpstreamError> {
        let query = ComponentTokenQuery { component_access_token: component_access_token.clone() };
        let body = PreAuthCodeRequest { component_appid: component_appid.to_owned() };
        self.call(api::PATH_PREAUTHCODE, component_appid, Method::Post { query: Some(&query), body: &body })
            .await
    }

    /// `POST /cgi-bin/component/api_query_auth`: exchanges an authorization code.
    pub async fn query_auth(
        &self,
        component_appid: &str,
        component_access_token: &Secret,
        authorization_code: &Secret,
    ) -> Result<QueryAuthResponse, UpstreamError> {
        let query = ComponentTokenQuery { component_access_token: component_access_token.clone() };
        let body = QueryAuthRequest {
            component_appid: component_appid.to_owned(),
            authorization_code: authorization_code.clone(),
        };
        self.call(api::PATH_QUERY_AUTH, component_appid, Method::Post { query: Some(&query), body: &body })
            .await
    }

    /// `POST /cgi-bin/component/api_authorizer_token`; the metric is labelled with the
    /// authorizer, whose token it is.
    pub async fn authorizer_token(
        &self,
        component_appid: &str,
        component_access_token: &Secret,
        authorizer_appid: &str,
        authorizer_refresh_token: &Secret,
    ) -> Result<AuthorizerTokenResponse, UpstreamError> {
        let query = ComponentTokenQuery { component_access_token: component_access_token.clone() };
        let body = AuthorizerTokenRequest {
            component_appid: component_appid.to_owned(),
            authorizer_appid: authorizer_appid.to_owned(),
            authorizer_refresh_token: authorizer_refresh_token.clone(),
        };
        self.call(
            api::PATH_AUTHORIZER_TOKEN,
            authorizer_appid,
            Method::Post { query: Some(&query), body: &body },
        )
        .await
    }

    /// `POST /cgi-bin/component/api_get_authorizer_list`: one page (`count` at most 500) of
    /// every authorizer with its current refresh token.
    pub async fn authorizer_list(
        &self,
        component_appid: &str,
        component_access_token: &Secret,
        offset: u32,
        count: u32,
    ) -> Result<api::AuthorizerListResponse, UpstreamError> {
        let query = ComponentTokenQuery { component_access_token: component_access_token.clone() };
        let body = api::AuthorizerListRequest { component_appid: component_appid.to_owned(), offset, count };
        self.call(
            api::PATH_GET_AUTHORIZER_LIST,
            component_appid,
            Method::Post { query: Some(&query), body: &body },
        )
        .await
    }

    /// `POST /cgi-bin/component/api_start_push_ticket`: asks WeChat to push a verify ticket now.
    pub async fn start_push_ticket(
        &self,
        component_appid: &str,
        secret: &Secret,
    ) -> Result<(), UpstreamError> {
        let body = api::StartPushTicketRequest {
            component_appid: component_appid.to_owned(),
            component_secret: secret.clone(),
        };
        self.call::<(), _, serde_json::Value>(
            api::PATH_START_PUSH_TICKET,
            component_appid,
            Method::Post { query: None, body: &body },
        )
        .await
        .map(drop)
    }

    async fn call<Q: Serialize, B: Serialize, T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        app: &str,
        method: Method<'_, Q, B>,
    ) -> Result<T, UpstreamError> {
        let started = Instant::now();
        let result = self.send(endpoint, method).await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.outcome(),
        };
        match &result {
            Ok(_) => tracing::debug!(endpoint, app, outcome, elapsed_ms, "upstream call"),
            Err(e) => tracing::warn!(endpoint, app, outcome, elapsed_ms, error = %e, "upstream call failed"),
        }
        result
    }

    async fn send<Q: Serialize, B: Serialize, T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        method: Method<'_, Q, B>,
    ) -> Result<T, UpstreamError> {
        let url = format!("{}{endpoint}", self.base_url);
        let req = match method {
            Method::Get(query) => self.http.get(url).query(query),
            Method::Post { query, body } => {
                let req = self.http.post(url).json(body);
                match query {
                    Some(q) => req.query(q),
                    None => req,
                }
            }
        };
        let net = |e: reqwest::Error| {
            if e.is_timeout() { UpstreamError::Timeout } else { UpstreamError::Transport(describe(&e)) }
        };
        let resp = req.send().await.map_err(net)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(UpstreamError::Http { status: status.as_u16() });
        }
        let body = resp.bytes().await.map_err(net)?;
        api::parse_response(&body).map_err(|e| match e {
            ApiError::WeChat { errcode, errmsg, .. } => UpstreamError::WeChat { errcode, errmsg },
            ApiError::Malformed { reason, .. } => {
                UpstreamError::Malformed(format!("{} ({} bytes)", scrub(&reason), body.len()))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_design() {
        let wc = |c| UpstreamError::WeChat { errcode: ErrCode(c), errmsg: String::new() };
        assert_eq!(wc(-1).class(), FaultClass::Busy);
        assert_eq!(wc(45009).class(), FaultClass::Quota);
        for c in [40013, 40125, 40164, 61004] {
            assert_eq!(wc(c).class(), FaultClass::Config, "{c}");
            assert!(wc(c).class().stops_retries());
        }
        for c in [40001, 40014, 42001] {
            assert_eq!(wc(c).class(), FaultClass::TokenInvalid);
        }
        assert_eq!(wc(45011).class(), FaultClass::Rejected);
        assert_eq!(UpstreamError::Http { status: 500 }.class(), FaultClass::Transient);
        assert_eq!(UpstreamError::Http { status: 429 }.class(), FaultClass::Transient);
        assert_eq!(UpstreamError::Http { status: 404 }.class(), FaultClass::Config);
        assert_eq!(UpstreamError::Timeout.class(), FaultClass::Transient);
        assert!(!UpstreamError::Timeout.class().stops_retries());
        assert_eq!(wc(45009).outcome(), "45009");
        assert_eq!(UpstreamError::Http { status: 503 }.outcome(), "http_5xx");
        assert_eq!(UpstreamError::Malformed("x".into()).outcome(), "malformed");
        assert_eq!(wc(45009).short(), "errcode 45009");
    }

    #[test]
    fn scrub_drops_quoted_input() {
        let s = scrub(r#"invalid type: string "SECRET_TOKEN", expected u64 at line 1 column 30"#);
        assert!(!s.contains("SECRET_TOKEN"), "{s}");
        assert!(s.contains("expected u64"), "{s}");
        assert_eq!(scrub("missing field `expires_in`"), "missing field `…`");
    }

    #[tokio::test]
    async fn transport_errors_never_show_the_url() {
        // Port 9 (discard) on loopback: refused at once.
        let up = Upstream::new("http://127.0.0.1:9", Duration::from_secs(2)).unwrap();
        let err = up.classic_token("wxa", &Secret::from("very-secret-value")).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Transport(_)), "{err:?}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("very-secret-value") && !shown.contains("127.0.0.1"), "{shown}");
        assert_eq!(err.class(), FaultClass::Transient);
    }
}
