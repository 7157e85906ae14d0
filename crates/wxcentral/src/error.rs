//! The one place where errors become HTTP responses.
//!
//! Every variant has a stable `code` that clients may match on; the table in [`ApiError::parts`]
//! is exhaustive so a new variant cannot ship without a status and a code. 5xx bodies never carry
//! internals: those go to the log (and even there without secrets).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;
use wxcentral_core::CredentialKind;
pub use wxcentral_core::wire::{ErrorBody, ErrorDetail};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("missing or unknown client key")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("unknown app {0}")]
    UnknownApp(String),
    #[error("app {appid} has no credential {kind}")]
    UnknownCredential { appid: String, kind: String },
    #[error("no such endpoint")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body too large")]
    PayloadTooLarge,
    /// A push whose `msg_signature` does not match (forged, or signed with another token).
    #[error("msg_signature does not match")]
    InvalidSignature,
    /// The state of the resource refuses the request (an authorization revoked since).
    #[error("{0}")]
    Conflict(String),
    /// A feature this server is not set up for (e.g. storing secrets without an encryption key).
    #[error("{0}")]
    NotConfigured(String),
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    #[error("wechat rejected the request with errcode {errcode}")]
    UpstreamRejected { errcode: i64, errmsg: String },
    #[error("{message}")]
    Unavailable { message: String, retry_after: Duration },
    /// Details are logged, never sent.
    #[error("internal error")]
    Internal(String),
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    /// Status and stable code of each variant.
    pub fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::UnknownApp(_) => (StatusCode::NOT_FOUND, "unknown_app"),
            Self::UnknownCredential { .. } => (StatusCode::NOT_FOUND, "unknown_credential"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::InvalidSignature => (StatusCode::UNAUTHORIZED, "invalid_signature"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::NotConfigured(_) => (StatusCode::NOT_IMPLEMENTED, "not_configured"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::UpstreamRejected { .. } => (StatusCode::BAD_GATEWAY, "upstream_rejected"),
            Self::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "credential_unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } | Self::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

impl From<wxcentral_core::Error> for ApiError {
    fn from(e: wxcentral_core::Error) -> Self {
        use wxcentral_core::Error as E;
        match e {
            E::UnknownApp(appid) => Self::UnknownApp(appid),
            E::UnknownCredential { appid, kind } => Self::UnknownCredential { appid, kind: kind.to_string() },
            E::Unavailable { appid, kind, retry_after, reason } => Self::Unavailable {
                message: unavailable_message(&appid, kind, reason.as_deref()),
                retry_after,
            },
            E::UpstreamRejected { errcode, errmsg } => {
                Self::UpstreamRejected { errcode: errcode.code(), errmsg }
            }
            E::Upstream(reason) => Self::Unavailable {
                message: format!("upstream unavailable: {reason}"),
                retry_after: Duration::from_secs(1),
            },
            E::Store(e) => Self::Internal(format!("store: {e}")),
            E::Config(e) => Self::Internal(format!("config: {e}")),
            E::NoEncryptionKey(m) => Self::NotConfigured(m),
            E::ReadOnlyApp(appid) => Self::Forbidden(format!(
                "app {appid} comes from the config file; change it there and reload (SIGHUP)"
            )),
            E::AuthorizerApp(appid) => Self::Forbidden(format!(
                "app {appid} is an authorizer of a component; it follows its authorization"
            )),
            E::Invalid(m) => Self::InvalidRequest(m),
            E::AppConflict(m) => Self::Conflict(m),
            E::AuthorizationRevoked(appid) => {
                Self::Conflict(format!("authorizer {appid} was unauthorized after this authorization"))
            }
        }
    }
}

fn unavailable_message(appid: &str, kind: CredentialKind, reason: Option<&str>) -> String {
    match reason {
        Some(r) => format!("{kind} of {appid} is not available yet ({r}); retry later"),
        None => format!("{kind} of {appid} is not available yet; retry later"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = match &self {
            Self::Internal(detail) => {
                tracing::error!(detail = %detail, "internal error");
                "internal error".to_owned()
            }
            Self::UpstreamRejected { errcode, errmsg } => {
                format!("wechat rejected the request with errcode {errcode}: {errmsg}")
            }
            other => other.to_string(),
        };
        let errcode = match &self {
            Self::UpstreamRejected { errcode, .. } => Some(*errcode),
            _ => None,
        };
        let retry_after = self.retry_after();
        let mut response =
            (status, Json(ErrorBody { error: ErrorDetail { code: code.to_owned(), message, errcode } }))
                .into_response();
        if matches!(self, Self::PayloadTooLarge) {
            // The rest of the body is still on the wire and will not be read: tell the client
            // this connection is done, or its next request races the close.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(after) = retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_hide_details_and_unavailable_sets_retry_after() {
        let r = ApiError::Internal("db path /secret/place".into()).into_response();
        assert_eq!(r.status(), 500);
        let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("\"code\":\"internal\""), "{text}");

        let r = ApiError::Unavailable { message: "x".into(), retry_after: Duration::from_millis(1500) }
            .into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
