//! Web authorization (网页授权, `sns/oauth2`): a user's consent code for a user token, its
//! refresh, the user's profile, and the token check.
//!
//! These tokens are the user's, not the account's: nothing is injected, and a 40001 or 42001
//! here means the user token is bad, so the account's token is never refreshed for it.

use crate::client::{Auth, Call, Client};
use crate::error::{Error, Result};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use wechat_proto::Secret;
use wechat_proto::api::{
    ErrBody, GRANT_AUTHORIZATION_CODE, OAuth2AccessTokenResponse, PATH_OAUTH2_ACCESS_TOKEN,
    PATH_OAUTH2_REFRESH_TOKEN, PATH_SNS_AUTH, PATH_SNS_USERINFO,
};
/// Where the browser is sent for consent.
pub const OAUTH2_AUTHORIZE_URL: &str = "https://open.weixin.qq.com/connect/oauth2/authorize";

/// What the user is asked to consent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthScope {
    /// The openid only, without a consent page.
    SnsapiBase,
    /// The openid and the profile ([`Client::oauth2_userinfo`]), after consent.
    SnsapiUserinfo,
}

impl OAuthScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SnsapiBase => "snsapi_base",
            Self::SnsapiUserinfo => "snsapi_userinfo",
        }
    }
}

/// `GET /sns/userinfo`. WeChat no longer sends real `sex`, `province`, `city` or `country`
/// (they arrive as 0 or empty); they stay for the accounts that still get them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthUserInfo {
    pub openid: String,
    #[serde(default)]
    pub nickname: String,
    #[serde(default)]
    pub sex: i64,
    #[serde(default)]
    pub province: String,
    #[serde(default)]
    pub city: String,
    #[serde(default)]
    pub country: String,
    #[serde(default)]
    pub headimgurl: String,
    #[serde(default)]
    pub privilege: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
}

/// The consent URL to redirect a browser to; WeChat sends it back to `redirect_uri` with
/// `code` and `state`. The parameters are in the order WeChat's docs require.
pub fn oauth2_authorize_url(
    appid: &str,
    redirect_uri: &str,
    scope: OAuthScope,
    state: &str,
) -> Result<String> {
    let mut url = reqwest::Url::parse(OAUTH2_AUTHORIZE_URL)
        .map_err(|e| Error::InvalidArgument(format!("authorize URL: {e}")))?;
    if !(redirect_uri.starts_with("https://") || redirect_uri.starts_with("http://")) {
        return Err(Error::InvalidArgument("redirect_uri must be an http(s) URL".into()));
    }
    url.query_pairs_mut()
        .append_pair("appid", appid)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("scope", scope.as_str())
        .append_pair("state", state);
    url.set_fragment(Some("wechat_redirect"));
    Ok(url.into())
}

impl Client {
    /// `GET /sns/oauth2/access_token`: the consent `code` for the user's token and openid.
    /// Takes the app secret (or a client key the hub accepts in its place). A code works once.
    pub async fn oauth2_access_token(
        &self,
        appid: &str,
        secret: &Secret,
        code: &str,
    ) -> Result<OAuth2AccessTokenResponse> {
        if code.is_empty() {
            return Err(Error::InvalidArgument("code is empty".into()));
        }
        let call = Call::new(appid, Method::GET, PATH_OAUTH2_ACCESS_TOKEN, Auth::None)
            .query("appid", appid)
            .secret("secret", secret)
            .query("code", code)
            .query("grant_type", GRANT_AUTHORIZATION_CODE);
        self.execute(&call, self.options()).await?.json(PATH_OAUTH2_ACCESS_TOKEN)
    }

    /// `GET /sns/oauth2/refresh_token`: a new user token from the refresh token (valid 30 days).
    pub async fn oauth2_refresh_token(
        &self,
        appid: &str,
        refresh_token: &Secret,
    ) -> Result<OAuth2AccessTokenResponse> {
        let call = Call::new(appid, Method::GET, PATH_OAUTH2_REFRESH_TOKEN, Auth::None)
            .query("appid", appid)
            .query("grant_type", "refresh_token")
            .secret("refresh_token", refresh_token);
        self.execute(&call, self.options()).await?.json(PATH_OAUTH2_REFRESH_TOKEN)
    }

    /// `GET /sns/userinfo`: the user's profile (scope `snsapi_userinfo`). `lang` is `zh_CN`
    /// (default), `zh_TW` or `en`.
    pub async fn oauth2_userinfo(
        &self,
        user_token: &Secret,
        openid: &str,
        lang: Option<&str>,
    ) -> Result<OAuthUserInfo> {
        let mut call = Call::new("", Method::GET, PATH_SNS_USERINFO, Auth::None)
            .secret("access_token", user_token)
            .query("openid", openid);
        if let Some(lang) = lang {
            call = call.query("lang", lang);
        }
        self.execute(&call, self.options()).await?.json(PATH_SNS_USERINFO)
    }

    /// `GET /sns/auth`: whether the user token is still valid. `Ok(())` when it is; WeChat's
    /// errcode (40003, 40001, 42001, …) when not.
    pub async fn oauth2_check(&self, user_token: &Secret, openid: &str) -> Result<()> {
        let call = Call::new("", Method::GET, PATH_SNS_AUTH, Auth::None)
            .secret("access_token", user_token)
            .query("openid", openid);
        self.execute(&call, self.options()).await?.json::<ErrBody>(PATH_SNS_AUTH).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorize_url_is_in_wechats_order_and_escaped() {
        let url = oauth2_authorize_url(
            "wx520c15f417810387",
            "https://example.com/cb?x=1&y=2",
            OAuthScope::SnsapiBase,
            "s1",
        )
        .unwrap();
        assert_eq!(
            url,
            "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx520c15f417810387\
             &redirect_uri=https%3A%2F%2Fexample.com%2Fcb%3Fx%3D1%26y%3D2&response_type=code\
             &scope=snsapi_base&state=s1#wechat_redirect"
        );
        assert!(oauth2_authorize_url("wx", "javascript:alert(1)", OAuthScope::SnsapiBase, "").is_err());
    }
}
