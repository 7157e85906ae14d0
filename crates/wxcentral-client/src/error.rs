//! The one error type of the crate.
//!
//! A business server mostly wants to know whether WeChat refused the request (and with which
//! errcode), whether the hub or the engine could not give a credential, or whether the network
//! failed; each of those is one variant. No message or `Debug` output carries a credential:
//! request URLs (which hold `access_token`) are stripped from transport errors, and bodies that
//! may hold credentials are kept as [`Secret`]s.

use std::sync::Arc;
use wechat_proto::api::ApiError;
use wechat_proto::{ErrCode, Secret};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a call of this crate can fail with. `Clone` so that callers sharing one in-flight
/// token fetch all get its failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// WeChat answered with a non-zero errcode. After a token error or -1 the call was already
    /// retried once (unless the options turned that off).
    #[error("wechat errcode {errcode}: {errmsg}")]
    WeChat {
        errcode: ErrCode,
        errmsg: String,
        /// The body as received. WeChat's error bodies never echo a credential.
        raw: String,
    },
    /// The body was neither the expected shape nor an errcode body. It is kept as a secret
    /// because a half-understood success body may hold a token or session key.
    #[error("malformed wechat response: {reason}")]
    Malformed { reason: String, raw: Secret },
    /// WeChat (or a gateway in front of it) answered an HTTP error status without an errcode body.
    #[error("HTTP status {status} from {path}")]
    Status { status: u16, path: String },
    /// The hub refused to give a credential (`{"error":{"code","message"}}` of its API).
    #[error("hub answered {status} {code}: {message}")]
    Hub {
        status: u16,
        /// The hub's stable code: `unauthorized`, `forbidden`, `unknown_app`,
        /// `credential_unavailable`, `upstream_rejected`, …
        code: String,
        message: String,
        /// WeChat's errcode, with `upstream_rejected`.
        errcode: Option<i64>,
    },
    /// The in-process engine could not give a credential.
    #[error("engine: {0}")]
    Engine(#[source] Arc<wxcentral_core::Error>),
    /// The request did not get an answer: connection refused, reset, or timed out.
    #[error("request failed: {0}")]
    Transport(#[source] Arc<reqwest::Error>),
    /// The answer was larger than the call accepts.
    #[error("response from {path} exceeds {limit} bytes")]
    TooLarge { path: String, limit: usize },
    /// A subscribe-message value that no truncation can make acceptable to WeChat.
    #[error("template value {key}: {reason}")]
    InvalidTemplateValue { key: String, reason: String },
    /// An argument this crate refuses before calling anyone (an empty code, a bad URL).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// WeChat's errcode, if WeChat (directly or through the hub) refused the request.
    pub fn errcode(&self) -> Option<ErrCode> {
        match self {
            Self::WeChat { errcode, .. } => Some(*errcode),
            Self::Hub { errcode: Some(c), .. } => Some(ErrCode(*c)),
            _ => None,
        }
    }

    /// Whether the call gave up because it ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Transport(e) if e.is_timeout())
    }

    pub(crate) fn transport(e: reqwest::Error) -> Self {
        // reqwest puts the URL, query and thus `access_token` into its message.
        Self::Transport(Arc::new(e.without_url()))
    }
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::WeChat { errcode, errmsg, raw } => Self::WeChat { errcode, errmsg, raw },
            ApiError::Malformed { reason, raw } => Self::Malformed { reason, raw: Secret::new(raw) },
        }
    }
}

impl From<wxcentral_core::Error> for Error {
    fn from(e: wxcentral_core::Error) -> Self {
        Self::Engine(Arc::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_bodies_stay_out_of_debug_and_display() {
        let api = wechat_proto::api::parse_response::<wechat_proto::api::AccessTokenResponse>(
            br#"{"access_token":"TOKEN-XYZ-123","expires_in":"soon"}"#,
        )
        .unwrap_err();
        let e = Error::from(api);
        for shown in [format!("{e:?}"), e.to_string()] {
            assert!(!shown.contains("TOKEN-XYZ-123"), "{shown}");
        }
        assert!(matches!(e, Error::Malformed { .. }));
    }

    #[test]
    fn wechat_errors_keep_code_message_and_body() {
        let body = br#"{"errcode":40029,"errmsg":"invalid code rid: 1"}"#;
        let e = Error::from(wechat_proto::api::parse_response::<serde_json::Value>(body).unwrap_err());
        assert_eq!(e.errcode(), Some(ErrCode::INVALID_CODE));
        match &e {
            Error::WeChat { errmsg, raw, .. } => {
                assert_eq!(errmsg, "invalid code rid: 1");
                assert_eq!(raw.as_bytes(), body);
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("40029"), "{e}");
    }

    #[test]
    fn hub_errors_expose_the_upstream_errcode() {
        let e = Error::Hub {
            status: 502,
            code: "upstream_rejected".into(),
            message: "x".into(),
            errcode: Some(45009),
        };
        assert_eq!(e.errcode(), Some(ErrCode::QUOTA_EXCEEDED));
    }
}
