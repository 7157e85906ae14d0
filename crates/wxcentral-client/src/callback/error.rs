//! Why a push was refused, and the one place that turns that into an HTTP answer.
//!
//! WeChat retries a push that does not get a 200, so only requests WeChat could not have sent
//! (forged, garbled, for another account, too large) get a 4xx; the one 5xx is a handler that
//! panicked, so that WeChat retries once the bug is fixed. Bodies are short plain text that names
//! the rule broken and never echoes the request.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wechat_proto::crypto::CryptoError;

use super::message::ParseError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("missing query parameter {0}")]
    MissingParam(&'static str),
    #[error("invalid query string")]
    InvalidQuery,
    #[error("signature does not match")]
    BadSignature,
    #[error("the push is encrypted but no EncodingAESKey is configured")]
    NoAesKey,
    #[error("plaintext pushes are refused: this server requires safe mode")]
    PlaintextRefused,
    #[error("the push is for another account")]
    WrongAccount,
    #[error("cannot decrypt the push: {0}")]
    Undecryptable(CryptoError),
    #[error("malformed push: {0}")]
    Malformed(String),
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("could not read the body")]
    BodyRead,
    #[error("the message handler failed")]
    HandlerFailed,
}

impl From<CryptoError> for CallbackError {
    fn from(err: CryptoError) -> Self {
        match err {
            CryptoError::SignatureMismatch => Self::BadSignature,
            CryptoError::ReceiveIdMismatch => Self::WrongAccount,
            CryptoError::MalformedEnvelope(reason) => Self::Malformed(reason),
            CryptoError::MissingEncrypt => Self::Malformed(err.to_string()),
            CryptoError::InvalidAesKey(_)
            | CryptoError::InvalidBase64
            | CryptoError::InvalidBlockLength
            | CryptoError::InvalidPadding
            | CryptoError::InvalidLengthField
            | CryptoError::InvalidUtf8 => Self::Undecryptable(err),
        }
    }
}

impl From<ParseError> for CallbackError {
    fn from(err: ParseError) -> Self {
        Self::Malformed(err.to_string())
    }
}

impl CallbackError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingParam(_)
            | Self::InvalidQuery
            | Self::NoAesKey
            | Self::Undecryptable(_)
            | Self::Malformed(_)
            | Self::BodyRead => StatusCode::BAD_REQUEST,
            Self::BadSignature | Self::PlaintextRefused | Self::WrongAccount => StatusCode::FORBIDDEN,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HandlerFailed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for CallbackError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "callback push failed");
        } else {
            tracing::warn!(error = %self, status = status.as_u16(), "callback push refused");
        }
        (status, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.to_string())
            .into_response()
    }
}
