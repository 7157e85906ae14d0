//! The Rust SDK for business servers that call WeChat with credentials kept by a wxcentral hub
//! (or by an in-process engine when the server runs alone).
//!
//! A business server should never fetch an `access_token` itself: every fetch can cut off the
//! token the other servers hold, and the daily quota is small. With this crate it does not
//! touch tokens at all. A [`TokenSource`] hands out the current value ([`HubSource`] asks the
//! hub with a client key and caches until near expiry; [`EngineSource`] wraps a
//! `wxcentral_core::Engine`), and the [`Client`] injects it into each WeChat call. When WeChat
//! rejects the token (40001, 40014, 42001) the client reports the value it sent for a
//! compare-and-refresh and retries once; after -1 (busy) it waits a moment and retries once;
//! never more, and either can be turned off per call ([`CallOptions`]). Through the hub's proxy
//! ([`ClientBuilder::hub_proxy`]) the hub does the token retry and the client only the -1 one.
//!
//! Typed calls cover the mini-program and web APIs: [`Client::jscode2session`],
//! [`Client::get_user_phone_number`], [`Client::get_wxacode_unlimit`] (image bytes, or the
//! JSON error WeChat sends in their place as an [`Error::WeChat`]),
//! [`Client::send_subscribe_message`] with [`TemplateData`] cutting each value to its keyword's
//! limit, web authorization ([`Client::oauth2_access_token`], [`Client::oauth2_refresh_token`],
//! [`Client::oauth2_userinfo`], [`Client::oauth2_check`]), [`Client::get_api_domain_ip`] and
//! [`Client::jssdk_config`]. Anything else goes through [`Client::get_json`],
//! [`Client::post_json`], [`Client::post_binary`] and [`Client::get_binary`].
//!
//! For the other direction, WeChat calling the business server, [`callback::Callback`] is the
//! server URL as an axum route: URL verification, plaintext, compatible and safe mode with key
//! rotation, routing by `MsgType`/`Event`/`InfoType`, encrypted passive replies, and WeChat's
//! five-second budget kept (feature `callback`, on by default).
//!
//! Credentials never show in `Debug` output, error messages or logs: they travel as
//! [`Secret`]s, and request URLs are stripped from transport errors.
//!
//! ```no_run
//! use wxcentral_client::{Client, EnvVersion, HubSource, SubscribeMessage, TemplateData, WxaCodeRequest};
//!
//! # async fn demo() -> Result<(), wxcentral_client::Error> {
//! let appid = "wx0123456789abcdef";
//! // Tokens from the hub; WeChat itself is called directly (or pass the hub's URL to
//! // `base_url` to go through its proxy).
//! let source = HubSource::new("http://wxcentral:8080", std::env::var("WXCENTRAL_KEY").unwrap_or_default())?;
//! let client = Client::new(source)?;
//!
//! let code = client
//!     .get_wxacode_unlimit(appid, &WxaCodeRequest::new("item=42").page("pages/item/index").env_version(EnvVersion::Trial))
//!     .await?;
//! std::fs::write("code.png", &code.bytes).ok();
//!
//! let data = TemplateData::new().value("thing1", "一杯很长很长名字的咖啡，已经做好了，请到柜台取").value("time2", "15:01");
//! client.send_subscribe_message(appid, &SubscribeMessage::new("oUSER_OPENID", "TEMPLATE_ID", data)).await?;
//! # Ok(()) }
//! ```

#[cfg(feature = "callback")]
pub mod callback;
mod calls;
mod client;
mod engine;
mod env;
mod error;
mod http;
mod hub;
mod jssdk;
mod options;
mod source;
mod template;

pub use calls::{
    LineColor, OAuthScope, OAuthUserInfo, SubscribeMessage, WxaCodeRequest, oauth2_authorize_url,
};
pub use client::{
    Binary, Client, ClientBuilder, DEFAULT_BUSY_BACKOFF, DEFAULT_MAX_RESPONSE, DEFAULT_TIMEOUT, WECHAT_API,
};
pub use engine::EngineSource;
pub use env::EnvVersion;
pub use error::{Error, Result};
pub use hub::{DEFAULT_HUB_TIMEOUT, HubSource, HubSourceBuilder};
pub use jssdk::JssdkConfig;
pub use options::CallOptions;
pub use source::{BoxFuture, CredentialKind, Token, TokenSource};
pub use template::{Keyword, TemplateData};
pub use wechat_proto as proto;
pub use wechat_proto::api::{JsCode2SessionResponse, OAuth2AccessTokenResponse, PhoneInfo, Watermark};
pub use wechat_proto::{ErrCode, Secret};
