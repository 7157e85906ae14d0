//! Typed WeChat calls on [`crate::Client`]: the request and answer types of each endpoint, so
//! business code never builds a query string or reads an errcode by hand.
//!
//! Calls that take the account's `access_token` get it from the client's token source and are
//! retried as [`crate::CallOptions`] say; calls that take an app secret or a user's OAuth token
//! inject nothing, and a 40001 there is the user's token, never a reason to refresh the
//! account's.

mod domain;
mod miniprogram;
mod oauth;
mod subscribe;

pub use miniprogram::{LineColor, WxaCodeRequest};
pub use oauth::{OAuthScope, OAuthUserInfo, oauth2_authorize_url};
pub use subscribe::SubscribeMessage;
