//! JS-SDK `wx.config` arguments, signed here with the `jsapi_ticket` from the token source.
//!
//! Signing locally (rather than asking the hub's `jssdk_config`) keeps the ticket's single
//! source of truth while working the same with the engine source; the ticket itself never goes
//! to the browser, only the signature.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::source::CredentialKind;
use rand::Rng;
use rand::distributions::Alphanumeric;
use std::time::{SystemTime, UNIX_EPOCH};
pub use wechat_proto::signature::JssdkConfig;

impl Client {
    /// The arguments for `wx.config` on the page at `url` (exactly as the browser has it;
    /// anything from `#` on is ignored), with a fresh nonce and the current time.
    pub async fn jssdk_config(&self, appid: &str, url: &str) -> Result<JssdkConfig> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::InvalidArgument("the page URL must be http(s)".into()));
        }
        let ticket = self.source().token(appid, CredentialKind::JsapiTicket).await?;
        let nonce: String = rand::thread_rng().sample_iter(&Alphanumeric).take(16).map(char::from).collect();
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Ok(JssdkConfig::sign(appid, ticket.value.expose(), &nonce, timestamp, url))
    }
}
