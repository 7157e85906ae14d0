//! Mini-program server APIs: login (`jscode2session`), phone number, unlimited QR codes.

use crate::client::{Auth, Binary, Call, Client};
use crate::env::EnvVersion;
use crate::error::{Error, Result};
use reqwest::Method;
use serde::Serialize;
use wechat_proto::Secret;
use wechat_proto::api::{
    GRANT_AUTHORIZATION_CODE, JsCode2SessionResponse, PATH_GETUSERPHONENUMBER, PATH_GETWXACODEUNLIMIT,
    PATH_JSCODE2SESSION, PhoneInfo, PhoneNumberRequest, PhoneNumberResponse,
};

/// Body of `POST /wxa/getwxacodeunlimit`. Only `scene` is required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WxaCodeRequest {
    /// At most 32 visible characters; the page reads it from `options.scene`.
    pub scene: String,
    /// The page to open (no leading `/`, no query); the home page when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// Whether WeChat checks that `page` exists in the published version (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_path: Option<bool>,
    /// Which version the code opens (default release).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_version: Option<EnvVersion>,
    /// Width in pixels, 280 to 1280 (default 430).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_color: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line_color: Option<LineColor>,
    /// Transparent background.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_hyaline: Option<bool>,
}

impl WxaCodeRequest {
    pub fn new(scene: impl Into<String>) -> Self {
        Self { scene: scene.into(), ..Self::default() }
    }

    pub fn page(mut self, page: impl Into<String>) -> Self {
        self.page = Some(page.into());
        self
    }

    pub fn env_version(mut self, env: EnvVersion) -> Self {
        self.env_version = Some(env);
        self
    }

    pub fn check_path(mut self, check: bool) -> Self {
        self.check_path = Some(check);
        self
    }

    pub fn width(mut self, width: u32) -> Self {
        self.width = Some(width);
        self
    }
}

/// The code's line colour when `auto_color` is false.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LineColor {
    pub r: u8,
    pub g: u8,
    pub b: u8,
}

impl Client {
    /// `GET /sns/jscode2session`: a user's login code (from `wx.login`) for their openid and
    /// session key. Takes the app secret (or, through a hub, a client key the hub accepts in its
    /// place), not a token. A code works once: a second exchange answers 40163.
    pub async fn jscode2session(
        &self,
        appid: &str,
        secret: &Secret,
        js_code: &str,
    ) -> Result<JsCode2SessionResponse> {
        if js_code.is_empty() {
            return Err(Error::InvalidArgument("js_code is empty".into()));
        }
        let call = Call::new(appid, Method::GET, PATH_JSCODE2SESSION, Auth::None)
            .query("appid", appid)
            .secret("secret", secret)
            .query("js_code", js_code)
            .query("grant_type", GRANT_AUTHORIZATION_CODE);
        self.execute(&call, self.options()).await?.json(PATH_JSCODE2SESSION)
    }

    /// `POST /wxa/business/getuserphonenumber`: the phone number behind a
    /// `getPhoneNumber` button code. A code works once (40029 after that).
    pub async fn get_user_phone_number(&self, appid: &str, code: &str) -> Result<PhoneInfo> {
        if code.is_empty() {
            return Err(Error::InvalidArgument("code is empty".into()));
        }
        let body = PhoneNumberRequest { code: code.to_owned() };
        let r: PhoneNumberResponse =
            self.post_json(appid, PATH_GETUSERPHONENUMBER, &body, self.options()).await?;
        Ok(r.phone_info)
    }

    /// `POST /wxa/getwxacodeunlimit`: a mini-program code image. WeChat answers its errors as
    /// JSON in place of the image; those become [`Error::WeChat`].
    pub async fn get_wxacode_unlimit(&self, appid: &str, request: &WxaCodeRequest) -> Result<Binary> {
        self.post_binary(appid, PATH_GETWXACODEUNLIMIT, request, self.options()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wxacode_request_writes_only_what_is_set() {
        let r =
            WxaCodeRequest::new("id=42").page("pages/item").env_version(EnvVersion::Trial).check_path(false);
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"scene":"id=42","page":"pages/item","env_version":"trial","check_path":false})
        );
        let r =
            WxaCodeRequest { line_color: Some(LineColor { r: 1, g: 2, b: 3 }), ..WxaCodeRequest::new("s") };
        assert_eq!(serde_json::to_value(&r).unwrap()["line_color"], serde_json::json!({"r":1,"g":2,"b":3}));
    }
}
