//! The one place where errors of the WeChat-compatible surface become responses.
//!
//! SDKs read WeChat's `{"errcode","errmsg"}` and nothing else, so every answer of the drop-in
//! endpoints and the proxy that is not WeChat's own is shaped that way, extractor rejections
//! included. The table in [`WxError::parts`] is exhaustive: errors about the request's
//! parameters and credentials answer HTTP 200 as WeChat does (SDKs branch on the errcode);
//! conditions the hub imposes (a body over its limit, a path it does not forward, a value it
//! cannot get right now, an upstream it cannot reach) carry their HTTP status too, for
//! operators and load balancers. 5xx texts never carry internals: those go to the log.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum WxError {
    #[error("invalid grant_type")]
    InvalidGrantType,
    #[error("appid missing")]
    AppidMissing,
    #[error("appsecret missing")]
    SecretMissing,
    #[error("access_token missing")]
    TokenMissing,
    #[error("invalid appid")]
    UnknownApp,
    /// Neither the app's secret nor a client key allowed to use the app.
    #[error("invalid appsecret")]
    WrongSecret,
    /// A token the hub never issued (or one past WeChat's overlap): refused without an
    /// upstream call, so the hub relays no token it cannot vouch for.
    #[error("invalid credential, access_token is invalid or not latest")]
    UnknownToken,
    /// The authorizer has not authorized (or has unauthorized) the component.
    #[error("component is not authorized by this account")]
    NotAuthorized,
    #[error("invalid args: {0}")]
    InvalidArgs(String),
    #[error("data format error: {0}")]
    BadBody(String),
    #[error("request body over {0} bytes")]
    RequestTooLarge(u64),
    #[error("response body over {0} bytes")]
    ResponseTooLarge(u64),
    #[error("not a WeChat API path this hub forwards")]
    NotForwarded,
    #[error("refused: {0}")]
    Refused(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The central value cannot be had right now (a refresh failing, quota spent).
    #[error("{message}")]
    Unavailable { message: String, retry_after: Duration },
    /// WeChat refused the hub's own call for the central value: its errcode passes through.
    #[error("{errmsg}")]
    Upstream { errcode: i64, errmsg: String },
    #[error("upstream unreachable")]
    UpstreamUnreachable(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// Details are logged, never sent.
    #[error("system error")]
    Internal(String),
}

#[derive(Serialize)]
struct Body<'a> {
    errcode: i64,
    errmsg: &'a str,
}

impl WxError {
    /// HTTP status and WeChat errcode of each variant.
    pub fn parts(&self) -> (StatusCode, i64) {
        match self {
            Self::InvalidGrantType => (StatusCode::OK, 40002),
            Self::AppidMissing => (StatusCode::OK, 41002),
            Self::SecretMissing => (StatusCode::OK, 41004),
            Self::TokenMissing => (StatusCode::OK, 41001),
            Self::UnknownApp => (StatusCode::OK, 40013),
            Self::WrongSecret => (StatusCode::OK, 40125),
            Self::UnknownToken => (StatusCode::OK, 40001),
            Self::NotAuthorized => (StatusCode::OK, 61003),
            Self::InvalidArgs(_) => (StatusCode::OK, 40097),
            Self::BadBody(_) => (StatusCode::OK, 47001),
            Self::RequestTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, 47001),
            Self::ResponseTooLarge(_) => (StatusCode::BAD_GATEWAY, -1),
            Self::NotForwarded => (StatusCode::NOT_FOUND, 40066),
            Self::Refused(_) => (StatusCode::BAD_REQUEST, 40066),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, 43001),
            Self::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, -1),
            Self::Upstream { errcode, .. } => (StatusCode::OK, *errcode),
            Self::UpstreamUnreachable(_) => (StatusCode::BAD_GATEWAY, -1),
            Self::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, -1),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, -1),
        }
    }
}

impl From<wxcentral_core::Error> for WxError {
    fn from(e: wxcentral_core::Error) -> Self {
        use wxcentral_core::Error as E;
        match e {
            E::UnknownApp(_) => Self::UnknownApp,
            E::UnknownCredential { appid, kind } => Self::InvalidArgs(format!(
                "wxcentral keeps no {kind} for {appid}; add it to the app's tickets"
            )),
            E::Unavailable { appid, kind, retry_after, reason } => Self::Unavailable {
                message: match reason {
                    Some(r) => format!("system error: {kind} of {appid} is not available yet ({r})"),
                    None => format!("system error: {kind} of {appid} is not available yet"),
                },
                retry_after,
            },
            E::UpstreamRejected { errcode, errmsg } => Self::Upstream { errcode: errcode.code(), errmsg },
            E::Upstream(reason) => Self::UpstreamUnreachable(reason),
            E::Invalid(m) => Self::InvalidArgs(m),
            E::Store(e) => Self::Internal(format!("store: {e}")),
            E::Config(e) => Self::Internal(format!("config: {e}")),
            E::NoEncryptionKey(m) => Self::Internal(m),
            E::ReadOnlyApp(appid) | E::AuthorizerApp(appid) | E::AuthorizationRevoked(appid) => {
                Self::InvalidArgs(format!("app {appid} cannot be changed here"))
            }
            E::AppConflict(m) => Self::InvalidArgs(m),
        }
    }
}

impl IntoResponse for WxError {
    fn into_response(self) -> Response {
        let (status, errcode) = self.parts();
        let errmsg = match &self {
            Self::Internal(detail) => {
                tracing::error!(detail = %detail, "internal error");
                "system error".to_owned()
            }
            Self::UpstreamUnreachable(detail) => {
                tracing::warn!(detail = %detail, "upstream unreachable");
                "system error: upstream unreachable".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(Body { errcode, errmsg: &errmsg })).into_response();
        match &self {
            // The rest of the body is still on the wire and will not be read: this connection
            // is done, or the client's next request races the close.
            Self::RequestTooLarge(_) => {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Self::Unavailable { retry_after, .. } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(e: WxError) -> (StatusCode, serde_json::Value) {
        let r = e.into_response();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn answers_are_wechat_shaped_and_hide_internals() {
        let (s, b) = body(WxError::WrongSecret).await;
        assert_eq!((s, b["errcode"].as_i64()), (StatusCode::OK, Some(40125)));
        assert_eq!(b["errmsg"], "invalid appsecret");
        let (s, b) = body(WxError::Internal("db at /secret/path".into())).await;
        assert_eq!((s, b["errcode"].as_i64()), (StatusCode::INTERNAL_SERVER_ERROR, Some(-1)));
        assert!(!b.to_string().contains("secret"), "{b}");
        let (s, b) = body(WxError::UpstreamUnreachable("connect 10.0.0.1: refused".into())).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY);
        assert!(!b.to_string().contains("10.0.0.1"), "{b}");
        let r = WxError::Unavailable { message: "x".into(), retry_after: Duration::from_millis(1200) }
            .into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
