//! Errors of the credential engine. The HTTP layer maps each variant to a status and a stable
//! code in exactly one place.

use crate::kind::CredentialKind;
use std::time::Duration;
use wechat_proto::ErrCode;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown app {0}")]
    UnknownApp(String),
    #[error("app {appid} has no credential {kind}")]
    UnknownCredential { appid: String, kind: CredentialKind },
    /// Nothing valid is held and no refresh landed within the read bound.
    #[error("credential {kind} of {appid} is unavailable")]
    Unavailable {
        appid: String,
        kind: CredentialKind,
        retry_after: Duration,
        /// Short, secret-free reason of the last failure (e.g. `errcode 45009`).
        reason: Option<String>,
    },
    /// WeChat refused a refresh the caller asked for explicitly.
    #[error("wechat rejected the request: errcode {errcode}")]
    UpstreamRejected { errcode: ErrCode, errmsg: String },
    /// The upstream could not be reached or answered garbage.
    #[error("upstream unavailable: {0}")]
    Upstream(String),
    #[error("store: {0}")]
    Store(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A secret was to be stored but no `[store] encryption_key` is configured.
    #[error("{0}")]
    NoEncryptionKey(String),
    /// The app comes from the config file: change it there (and send SIGHUP).
    #[error("app {0} comes from the config file; change it there and reload")]
    ReadOnlyApp(String),
    /// The appid is an authorizer of a component: it follows its authorization, not the admin API.
    #[error("app {0} is an authorizer of a component; it follows its authorization")]
    AuthorizerApp(String),
    /// The request carries something malformed (a push's appid, say).
    #[error("{0}")]
    Invalid(String),
    /// The appid is taken by something else here (an app, another component's authorizer).
    #[error("{0}")]
    AppConflict(String),
    /// The merchant revoked the authorization after the event that would have brought it in.
    #[error("authorizer {0} was unauthorized after this authorization")]
    AuthorizationRevoked(String),
}
