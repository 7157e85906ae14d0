//! The JSON of wxcentral's native API, shared by the server and the SDK so the two cannot
//! drift apart. With the `openapi` feature the types also describe themselves for the
//! server's OpenAPI document.

use crate::kind::{AppKind, AppSpec, Credential, CredentialKind, TokenApi};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use wechat_proto::Secret;
use wechat_proto::api::TicketType;

/// A credential value as served to clients (`GET /v1/apps/{appid}/{kind}`, refresh answers).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialResponse {
    pub appid: String,
    /// access_token, jsapi_ticket, wx_card_ticket or component_access_token.
    pub kind: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub value: Secret,
    /// Unix seconds until which the value is promised to keep working: WeChat's expiry, or for
    /// tokens whose refresh kills them (classic, component, authorizer), no later than the
    /// planned refresh plus WeChat's overlap. A client may cache the value until then.
    pub expires_at: i64,
    /// Seconds from now to `expires_at`.
    pub expires_in: i64,
    /// Grows with every new value; a client may drop a value older than one it has seen.
    pub version: u64,
}

impl CredentialResponse {
    pub fn new(appid: &str, kind: CredentialKind, cred: &Credential, now_ms: i64) -> Self {
        Self {
            appid: appid.to_owned(),
            kind: kind.as_str().to_owned(),
            value: cred.value.clone(),
            expires_at: cred.valid_until_ms.div_euclid(1000),
            expires_in: expires_in(cred, now_ms),
            version: cred.version,
        }
    }
}

/// Whole seconds from `now_ms` to the promised expiry, never negative.
pub fn expires_in(cred: &Credential, now_ms: i64) -> i64 {
    (cred.valid_until_ms - now_ms).div_euclid(1000).max(0)
}

/// Body of `POST /v1/apps/{appid}/{kind}/refresh` for compare-and-refresh.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The value WeChat rejected (errcode 40001, 40014 or 42001).
    pub invalid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JssdkConfigRequest {
    /// The page URL exactly as the browser has it (http or https); anything from `#` on is
    /// ignored.
    #[cfg_attr(feature = "openapi", schema(pattern = "^https?://", max_length = 4096))]
    pub url: String,
}

/// What the page passes to `wx.config`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JssdkConfigResponse {
    pub app_id: String,
    pub timestamp: i64,
    pub nonce_str: String,
    pub signature: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppsResponse {
    pub apps: Vec<AppView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppView {
    pub appid: String,
    /// official_account or mini_program.
    pub kind: String,
    /// config (from the config file) or runtime (added through the admin API).
    pub origin: String,
    pub credentials: Vec<CredentialStatusView>,
    /// Upstream calls made today (Asia/Shanghai day) per WeChat endpoint.
    pub quota_today: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialStatusView {
    pub kind: String,
    /// valid, absent, failing or stopped.
    pub state: String,
    pub expires_at: Option<i64>,
    pub expires_in: Option<i64>,
    pub version: Option<u64>,
    /// Secret-free reason of the last failed refresh, e.g. `errcode 45009`.
    pub last_error: Option<String>,
    pub next_refresh_at: Option<i64>,
}

/// Body of `PUT /v1/apps/{appid}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutAppRequest {
    /// The AppSecret; sealed in the store, never returned.
    #[cfg_attr(feature = "openapi", schema(value_type = String, min_length = 1, max_length = 256))]
    pub secret: Secret,
    /// official_account (default) or mini_program.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = AppKind))]
    pub kind: AppKind,
    /// stable (default) or classic.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = TokenApi))]
    pub token_api: TokenApi,
    /// Tickets kept for the app.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<TicketName>, max_items = 8))]
    pub tickets: Vec<TicketType>,
}

/// `{"error":{"code":"…","message":"…"}}`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable snake_case code: invalid_request, unauthorized, forbidden, unknown_app,
    /// unknown_credential, not_found, method_not_allowed, payload_too_large, rate_limited,
    /// upstream_rejected, credential_unavailable, not_configured, internal.
    pub code: String,
    pub message: String,
    /// WeChat's errcode, with `upstream_rejected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errcode: Option<i64>,
}

/// Body of `PUT /v1/apps`: many apps in one store write.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutAppsRequest {
    /// At most 1000 (the request may be up to 4 MiB); a later entry for the same appid wins.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 1000))]
    pub apps: Vec<PutAppsItem>,
}

/// One app of a [`PutAppsRequest`]: its appid and what `PUT /v1/apps/{appid}` takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutAppsItem {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9_-]{1,64}$"))]
    pub appid: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, min_length = 1, max_length = 256))]
    pub secret: Secret,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = AppKind))]
    pub kind: AppKind,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = TokenApi))]
    pub token_api: TokenApi,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<TicketName>, max_items = 8))]
    pub tickets: Vec<TicketType>,
}

/// The longest AppSecret accepted, in characters.
pub const MAX_SECRET_CHARS: usize = 256;
/// The most `tickets` entries an app may list.
pub const MAX_TICKETS: usize = 8;

impl PutAppsItem {
    /// The app this entry defines, or why the API refuses it.
    pub fn into_spec(self) -> Result<AppSpec, String> {
        crate::engine::check_appid(&self.appid).map_err(|e| match e {
            crate::Error::Config(m) => format!("{}: {m}", self.appid),
            other => other.to_string(),
        })?;
        let chars = self.secret.expose().chars().count();
        if chars == 0 || chars > MAX_SECRET_CHARS {
            return Err(format!("{}: secret must be 1 to {MAX_SECRET_CHARS} characters", self.appid));
        }
        if self.tickets.len() > MAX_TICKETS {
            return Err(format!("{}: at most {MAX_TICKETS} tickets", self.appid));
        }
        Ok(AppSpec {
            appid: self.appid,
            secret: self.secret,
            kind: self.kind,
            token_api: self.token_api,
            tickets: self.tickets,
            role: crate::kind::Role::App,
        })
    }
}

impl PutAppRequest {
    /// [`PutAppsItem::into_spec`] for the app at `appid`.
    pub fn into_spec(self, appid: String) -> Result<AppSpec, String> {
        PutAppsItem {
            appid,
            secret: self.secret,
            kind: self.kind,
            token_api: self.token_api,
            tickets: self.tickets,
        }
        .into_spec()
    }
}

/// What `PUT /v1/apps` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PutAppsResponse {
    pub created: Vec<String>,
    pub changed: Vec<String>,
}

/// The tickets an app may keep (the `type` of WeChat's getticket), for the OpenAPI document.
#[cfg(feature = "openapi")]
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
pub enum TicketName {
    Jsapi,
    WxCard,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_requests_show_no_secret_in_debug() {
        let r: PutAppsRequest =
            serde_json::from_str(r#"{"apps":[{"appid":"wx1","secret":"APP-SECRET-42"}]}"#).unwrap();
        assert!(!format!("{r:?}").contains("APP-SECRET-42"), "{r:?}");
        let one: PutAppRequest = serde_json::from_str(r#"{"secret":"APP-SECRET-42"}"#).unwrap();
        assert!(!format!("{one:?}").contains("APP-SECRET-42"));
        assert_eq!(one.into_spec("wx1".into()).unwrap().secret.expose(), "APP-SECRET-42");
    }

    #[test]
    fn credential_responses_show_no_value_in_debug() {
        let cred = Credential::new(Secret::new("TOKEN-VALUE-123".to_owned()), 7_200_000, 0, 7);
        let r = CredentialResponse::new("wx1", CredentialKind::AccessToken, &cred, 0);
        assert!(!format!("{r:?}").contains("TOKEN-VALUE-123"), "{r:?}");
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"value\":\"TOKEN-VALUE-123\""));
        let back: CredentialResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (back.value.expose().as_str(), back.version, back.expires_in),
            ("TOKEN-VALUE-123", 7, 7200)
        );
    }
}
