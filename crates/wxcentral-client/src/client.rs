//! [`Client`]: WeChat API calls with the token injected and token errors handled.
//!
//! Every call that needs the account's `access_token` takes it from the [`TokenSource`], so
//! the business code never holds one. When WeChat rejects the token (40001, 40014, 42001) the
//! client reports exactly the value it sent (compare-and-refresh: a thousand callers that saw
//! the same token fail cause one refresh) and sends the call once more; when WeChat answers -1
//! it waits a moment and sends it once more. Never a third time for either reason, so a token
//! that keeps failing cannot turn into a loop that burns the day's quota.

use crate::error::{Error, Result};
use crate::options::CallOptions;
use crate::source::{CredentialKind, TokenSource};
use bytes::Bytes;
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use wechat_proto::Secret;
use wechat_proto::api::parse_response;
use wechat_proto::errcode::{ErrClass, ErrCode};

/// WeChat's API server.
pub const WECHAT_API: &str = "https://api.weixin.qq.com";
/// Budget of one attempt unless the builder or [`CallOptions::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before the one retry after -1.
pub const DEFAULT_BUSY_BACKOFF: Duration = Duration::from_millis(200);
/// The largest answer read (QR codes are tens of kilobytes; media downloads need their own
/// limit, see [`ClientBuilder::max_response_bytes`]).
pub const DEFAULT_MAX_RESPONSE: usize = 8 << 20;
/// Answers up to this size that look like JSON are checked for an errcode before the retry
/// decision; WeChat's error bodies are far smaller.
const INSPECT_MAX: usize = 64 << 10;

/// A WeChat API client: cheap to clone, clones share connections and the token source.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Arc<str>,
    source: Arc<dyn TokenSource>,
    busy_backoff: Duration,
    max_response: usize,
    defaults: CallOptions,
    /// The base is a wxcentral hub's proxy, which already answers a token error with one
    /// compare-and-refresh and one retry of its own.
    hub_proxy: bool,
}

/// Options of a [`Client`].
pub struct ClientBuilder {
    source: Arc<dyn TokenSource>,
    base: String,
    timeout: Duration,
    busy_backoff: Duration,
    max_response: usize,
    http: Option<reqwest::Client>,
    hub_proxy: bool,
}

impl ClientBuilder {
    /// Where WeChat's paths are served: [`WECHAT_API`] (default), a wxcentral hub's proxy, or a
    /// simulator in tests.
    pub fn base_url(mut self, base: impl Into<String>) -> Self {
        self.base = base.into();
        self.hub_proxy = false;
        self
    }

    /// Calls WeChat through the proxy of the wxcentral hub at `hub_url`. The hub injects its
    /// current token and retries a token error once itself, so the client does not retry token
    /// errors again (that would double the calls WeChat sees); -1 is still retried.
    pub fn hub_proxy(mut self, hub_url: impl Into<String>) -> Self {
        self.base = hub_url.into();
        self.hub_proxy = true;
        self
    }

    /// Budget of each attempt (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Wait before the retry after -1 (default [`DEFAULT_BUSY_BACKOFF`]).
    pub fn busy_backoff(mut self, backoff: Duration) -> Self {
        self.busy_backoff = backoff;
        self
    }

    /// Largest answer accepted (default [`DEFAULT_MAX_RESPONSE`]).
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response = limit;
        self
    }

    /// Shares an existing HTTP client; the timeout above still applies per attempt.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    pub fn build(self) -> Result<Client> {
        let http = crate::http::or_default(self.http, self.timeout)?;
        Ok(Client {
            http,
            base: Arc::from(self.base.trim_end_matches('/')),
            source: self.source,
            busy_backoff: self.busy_backoff,
            max_response: self.max_response,
            defaults: CallOptions::default(),
            hub_proxy: self.hub_proxy,
        })
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder").field("base", &self.base).field("source", &self.source).finish()
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("base", &self.base).field("source", &self.source).finish()
    }
}

/// A binary answer (a QR code, a media file) with its content type.
#[derive(Clone, PartialEq, Eq)]
pub struct Binary {
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

impl fmt::Debug for Binary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binary")
            .field("content_type", &self.content_type)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// How a call authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// `?access_token=` of the account, from the source, with the token retry.
    AccessToken,
    /// Nothing injected (the call carries an app secret or a user's token in its query).
    None,
}

/// One request, kept whole so it can be sent twice.
pub(crate) struct Call<'a> {
    pub appid: &'a str,
    pub method: Method,
    pub path: &'a str,
    pub auth: Auth,
    pub query: Vec<(&'a str, &'a str)>,
    /// Query parameters that are secrets (an app secret, a user's token).
    pub secret_query: Vec<(&'a str, &'a Secret)>,
    pub json: Option<Vec<u8>>,
}

impl<'a> Call<'a> {
    pub fn new(appid: &'a str, method: Method, path: &'a str, auth: Auth) -> Self {
        Self { appid, method, path, auth, query: Vec::new(), secret_query: Vec::new(), json: None }
    }

    pub fn query(mut self, key: &'a str, value: &'a str) -> Self {
        self.query.push((key, value));
        self
    }

    pub fn secret(mut self, key: &'a str, value: &'a Secret) -> Self {
        self.secret_query.push((key, value));
        self
    }

    pub fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Result<Self> {
        self.json =
            Some(serde_json::to_vec(body).map_err(|e| Error::InvalidArgument(format!("request body: {e}")))?);
        Ok(self)
    }
}

/// An answer as received.
pub(crate) struct Answer {
    status: u16,
    content_type: Option<String>,
    body: Bytes,
}

impl Answer {
    fn looks_like_json(&self) -> bool {
        let ct = self.content_type.as_deref().unwrap_or_default().to_ascii_lowercase();
        ct.starts_with("application/json")
            || ct.starts_with("text/")
            || self.body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    }

    /// The non-zero errcode of a JSON answer, for the retry decision.
    fn errcode(&self) -> Option<ErrCode> {
        if self.body.len() > INSPECT_MAX || !self.looks_like_json() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v.get("errcode").and_then(serde_json::Value::as_i64).filter(|c| *c != 0).map(ErrCode)
    }

    fn error_of_status(&self, path: &str) -> Error {
        match parse_response::<serde_json::Value>(&self.body) {
            Err(e @ wechat_proto::api::ApiError::WeChat { .. }) => e.into(),
            _ => Error::Status { status: self.status, path: path.to_owned() },
        }
    }

    pub fn json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        if !(200..300).contains(&self.status) {
            return Err(self.error_of_status(path));
        }
        Ok(parse_response(&self.body)?)
    }

    /// The bytes, unless WeChat sent its JSON error instead (as `getwxacodeunlimit` does).
    pub fn binary(self, path: &str) -> Result<Binary> {
        if !(200..300).contains(&self.status) {
            return Err(self.error_of_status(path));
        }
        if self.looks_like_json() {
            parse_response::<serde_json::Value>(&self.body)?;
            return Err(Error::Malformed {
                reason: format!("{path} answered JSON without an errcode where binary data was expected"),
                raw: Secret::new(String::from_utf8_lossy(&self.body).into_owned()),
            });
        }
        Ok(Binary { content_type: self.content_type, bytes: self.body })
    }
}

impl Client {
    /// A client against WeChat itself with the default options.
    pub fn new(source: impl TokenSource + 'static) -> Result<Self> {
        Self::builder(source).build()
    }

    pub fn builder(source: impl TokenSource + 'static) -> ClientBuilder {
        Self::builder_shared(Arc::new(source))
    }

    /// [`Client::builder`] with a source shared with other code.
    pub fn builder_shared(source: Arc<dyn TokenSource>) -> ClientBuilder {
        ClientBuilder {
            source,
            base: WECHAT_API.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            busy_backoff: DEFAULT_BUSY_BACKOFF,
            max_response: DEFAULT_MAX_RESPONSE,
            http: None,
            hub_proxy: false,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn source(&self) -> &Arc<dyn TokenSource> {
        &self.source
    }

    /// This client with other options for its typed calls (`jscode2session`, `send_subscribe_message`,
    /// …), e.g. `client.with_options(CallOptions::once())` for a call that must reach WeChat
    /// exactly once. The generic calls take their options as an argument.
    pub fn with_options(&self, options: CallOptions) -> Self {
        Self { defaults: options, ..self.clone() }
    }

    /// The options the typed calls use.
    pub fn options(&self) -> CallOptions {
        self.defaults
    }

    /// `GET {path}?access_token=…&{query}` for `appid`, parsed as WeChat JSON.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        appid: &str,
        path: &str,
        query: &[(&str, &str)],
        options: CallOptions,
    ) -> Result<T> {
        let mut call = Call::new(appid, Method::GET, path, Auth::AccessToken);
        call.query.extend_from_slice(query);
        self.execute(&call, options).await?.json(path)
    }

    /// `POST {path}?access_token=…` with a JSON body, parsed as WeChat JSON.
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        appid: &str,
        path: &str,
        body: &B,
        options: CallOptions,
    ) -> Result<T> {
        let call = Call::new(appid, Method::POST, path, Auth::AccessToken).json(body)?;
        self.execute(&call, options).await?.json(path)
    }

    /// `POST {path}?access_token=…` with a JSON body whose success answer is binary; WeChat's
    /// JSON error in its place becomes an [`Error::WeChat`].
    pub async fn post_binary<B: Serialize + ?Sized>(
        &self,
        appid: &str,
        path: &str,
        body: &B,
        options: CallOptions,
    ) -> Result<Binary> {
        let call = Call::new(appid, Method::POST, path, Auth::AccessToken).json(body)?;
        self.execute(&call, options).await?.binary(path)
    }

    /// `GET {path}?access_token=…&{query}` whose success answer is binary (media downloads).
    pub async fn get_binary(
        &self,
        appid: &str,
        path: &str,
        query: &[(&str, &str)],
        options: CallOptions,
    ) -> Result<Binary> {
        let mut call = Call::new(appid, Method::GET, path, Auth::AccessToken);
        call.query.extend_from_slice(query);
        self.execute(&call, options).await?.binary(path)
    }

    /// Sends `call`, with at most one retry per reason.
    pub(crate) async fn execute(&self, call: &Call<'_>, options: CallOptions) -> Result<Answer> {
        let mut token = match call.auth {
            Auth::AccessToken => Some(self.source.token(call.appid, CredentialKind::AccessToken).await?),
            Auth::None => None,
        };
        let mut reload = options.reload_access_token && token.is_some() && !self.hub_proxy;
        let mut busy = options.retryable;
        loop {
            let answer = self.send(call, token.as_ref().map(|t| &t.value), options).await?;
            let errcode = answer.errcode();
            tracing::debug!(
                path = call.path,
                appid = call.appid,
                status = answer.status,
                errcode = errcode.map(ErrCode::code),
                "wechat call"
            );
            match (errcode.map(ErrCode::class), token.as_ref()) {
                (Some(ErrClass::TokenInvalid), Some(sent)) if reload => {
                    reload = false;
                    tracing::info!(
                        path = call.path,
                        appid = call.appid,
                        errcode = errcode.map(ErrCode::code),
                        "token rejected; refreshing once"
                    );
                    let fresh = self
                        .source
                        .refresh(call.appid, CredentialKind::AccessToken, sent.value.expose())
                        .await?;
                    token = Some(fresh);
                }
                (Some(ErrClass::Busy), _) if busy => {
                    busy = false;
                    tokio::time::sleep(self.busy_backoff).await;
                }
                _ => return Ok(answer),
            }
        }
    }

    async fn send(&self, call: &Call<'_>, token: Option<&Secret>, options: CallOptions) -> Result<Answer> {
        let mut request = self.http.request(call.method.clone(), format!("{}{}", self.base, call.path));
        if let Some(t) = token {
            request = request.query(&[("access_token", t.expose())]);
        }
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        for (k, v) in &call.secret_query {
            request = request.query(&[(k, v.expose())]);
        }
        if let Some(body) = &call.json {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
        }
        if let Some(t) = options.timeout {
            request = request.timeout(t);
        }
        let response = request.send().await.map_err(Error::transport)?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_limited(response, self.max_response, call.path).await?;
        Ok(Answer { status, content_type, body })
    }
}

/// The whole body, refused past `limit` bytes without reading the rest.
pub(crate) async fn read_limited(mut response: reqwest::Response, limit: usize, path: &str) -> Result<Bytes> {
    let too_large = || Error::TooLarge { path: path.to_owned(), limit };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(Error::transport)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, ct: Option<&str>, body: &[u8]) -> Answer {
        Answer { status, content_type: ct.map(str::to_owned), body: Bytes::copy_from_slice(body) }
    }

    #[test]
    fn errcodes_are_found_only_in_json() {
        let json = Some("application/json; encoding=utf-8");
        assert_eq!(answer(200, json, br#"{"errcode":40001,"errmsg":"x"}"#).errcode(), Some(ErrCode(40001)));
        assert_eq!(answer(200, json, br#"{"errcode":0,"errmsg":"ok"}"#).errcode(), None);
        assert_eq!(answer(200, None, br#" {"errcode":-1}"#).errcode(), Some(ErrCode(-1)));
        assert_eq!(answer(200, Some("image/png"), b"\x89PNG{\"errcode\":40001}").errcode(), None);
    }

    #[test]
    fn binary_answers_turn_json_errors_into_wechat_errors() {
        let png = answer(200, Some("image/png"), b"\x89PNG\r\n");
        assert_eq!(png.binary("/p").unwrap().bytes.as_ref(), b"\x89PNG\r\n");
        let err = answer(200, Some("application/json"), br#"{"errcode":40169,"errmsg":"bad scene"}"#)
            .binary("/p")
            .unwrap_err();
        assert_eq!(err.errcode(), Some(ErrCode(40169)));
        let err = answer(200, Some("application/json"), br#"{"ok":1}"#).binary("/p").unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{err:?}");
    }

    #[test]
    fn http_errors_keep_an_errcode_body_or_the_status() {
        let e = answer(404, Some("application/json"), br#"{"errcode":48001,"errmsg":"api unauthorized"}"#)
            .json::<serde_json::Value>("/x")
            .unwrap_err();
        assert_eq!(e.errcode(), Some(ErrCode(48001)));
        let e = answer(502, Some("text/html"), b"<html>").json::<serde_json::Value>("/x").unwrap_err();
        assert!(matches!(e, Error::Status { status: 502, .. }), "{e:?}");
    }

    #[test]
    fn binary_debug_shows_no_bytes() {
        let b = Binary { content_type: Some("image/png".into()), bytes: Bytes::from_static(b"SECRETBYTES") };
        assert!(!format!("{b:?}").contains("SECRETBYTES"));
    }
}
