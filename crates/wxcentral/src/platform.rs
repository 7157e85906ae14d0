//! The open platform's HTTP surface: WeChat's pushes to the component callback, the browser's
//! landing after consent, and the native `/v1/components/…` API.
//!
//! A push is answered `success` only after what it carries is durable in the store (the
//! engine's calls return then); anything that fails before that gets an error status, so WeChat
//! retries it. Retries and replays of a push already kept change nothing.

use crate::api::{ApiJson, ApiPath, ApiQuery, body_rejection, now_ms};
use crate::error::{ApiError, ErrorBody, Result};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};
use wechat_proto::Secret;
use wechat_proto::api::ComponentNotification;
use wechat_proto::crypto::{CryptoError, MsgCrypt};
use wxcentral_core::authorizer::AuthorizerState;
use wxcentral_core::{CredentialKind, ImportReport};

/// What the callback needs of each configured component: its message crypto and where the
/// landing page sends the browser.
#[derive(Debug, Default)]
pub struct Components {
    by_appid: HashMap<String, ComponentCallback>,
    /// `[server] public_url`, for the default redirect of authorization URLs.
    public_url: Option<String>,
}

#[derive(Debug)]
struct ComponentCallback {
    crypt: MsgCrypt,
    after_authorize_url: Option<String>,
}

impl Components {
    pub fn from_config(config: &crate::config::Config) -> Result<Self, crate::config::ConfigError> {
        let mut by_appid = HashMap::new();
        for (i, c) in config.components.iter().enumerate() {
            let bad = |key: &str| {
                crate::config::ConfigError::new(
                    format!("component[{i}].{key}"),
                    "must be the 43-character EncodingAESKey",
                )
            };
            let mut crypt = MsgCrypt::new(c.token.expose(), c.encoding_aes_key.expose(), &c.appid)
                .map_err(|_| bad("encoding_aes_key"))?;
            if let Some(prev) = &c.previous_encoding_aes_key {
                crypt =
                    crypt.with_previous_key(prev.expose()).map_err(|_| bad("previous_encoding_aes_key"))?;
            }
            by_appid.insert(
                c.appid.clone(),
                ComponentCallback { crypt, after_authorize_url: c.after_authorize_url.clone() },
            );
        }
        Ok(Self { by_appid, public_url: config.server.public_url.clone() })
    }

    fn get(&self, appid: &str) -> Result<&ComponentCallback> {
        self.by_appid.get(appid).ok_or_else(|| ApiError::UnknownApp(appid.to_owned()))
    }
}

/// The query WeChat sends with a push.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PushQuery {
    timestamp: String,
    nonce: String,
    msg_signature: String,
    #[serde(default)]
    #[param(required = false)]
    #[allow(dead_code)] // WeChat sends `aes`; the body decides
    encrypt_type: Option<String>,
}

/// The `InfoType` label of `wxcentral_component_pushes_total` (bounded).
fn info_type(n: &ComponentNotification) -> &'static str {
    match n {
        ComponentNotification::VerifyTicket { .. } => "component_verify_ticket",
        ComponentNotification::Authorized(_) => "authorized",
        ComponentNotification::UpdateAuthorized(_) => "updateauthorized",
        ComponentNotification::Unauthorized { .. } => "unauthorized",
        ComponentNotification::Other { .. } => "other",
    }
}

fn count_push(component: &str, info: &'static str, outcome: &'static str) {
    metrics::counter!("wxcentral_component_pushes_total", "component" => component.to_owned(), "info_type" => info, "outcome" => outcome)
        .increment(1);
}

#[utoipa::path(
    post, path = "/callback/component/{appid}", tag = "open platform",
    params(("appid" = String, Path, description = "The component's appid"), PushQuery),
    request_body(content = String, description = "WeChat's encrypted XML envelope", content_type = "text/xml"),
    responses(
        (status = 200, description = "`success`: what the push carries is durable", body = String),
        (status = 400, body = ErrorBody), (status = 401, description = "invalid_signature", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
    )
)]
pub async fn push(
    State(state): State<AppState>,
    ApiPath(appid): ApiPath<String>,
    ApiQuery(q): ApiQuery<PushQuery>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let components = state.components();
    let component = components.get(&appid)?;
    let body = body.map_err(body_rejection)?;
    let plaintext =
        component.crypt.decrypt_message(&q.msg_signature, &q.timestamp, &q.nonce, &body).map_err(|e| {
            count_push(&appid, "unknown", "refused");
            match e {
                CryptoError::SignatureMismatch => ApiError::InvalidSignature,
                other => ApiError::InvalidRequest(format!("push not readable: {other}")),
            }
        })?;
    let n = ComponentNotification::from_xml(&plaintext).map_err(|e| {
        count_push(&appid, "unknown", "refused");
        ApiError::InvalidRequest(format!("push not readable: {e}"))
    })?;
    let info = info_type(&n);
    let engine = state.engine();
    let done = match n {
        ComponentNotification::VerifyTicket { component_appid, create_time, ticket } => {
            same_component(&appid, &component_appid)?;
            engine.verify_ticket_pushed(&appid, ticket, create_time).await
        }
        ComponentNotification::Authorized(n) | ComponentNotification::UpdateAuthorized(n) => {
            same_component(&appid, &n.component_appid)?;
            engine
                .authorization_pushed(&appid, &n.authorizer_appid, &n.authorization_code, n.create_time)
                .await
        }
        ComponentNotification::Unauthorized { component_appid, create_time, authorizer_appid } => {
            same_component(&appid, &component_appid)?;
            engine.unauthorized_pushed(&appid, &authorizer_appid, create_time).await
        }
        ComponentNotification::Other { component_appid, info_type } => {
            same_component(&appid, &component_appid)?;
            // Acknowledged so WeChat stops retrying; nothing here acts on it.
            let shown: String = info_type.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
            tracing::info!(
                component = appid,
                info_type = shown,
                "push of an InfoType the hub does not use; acknowledged"
            );
            Ok(())
        }
    };
    match done {
        Ok(()) => {
            count_push(&appid, info, "ok");
            let mut r = "success".into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            Ok(r)
        }
        Err(e) => {
            count_push(&appid, info, "failed");
            Err(e.into())
        }
    }
}

/// A push names its component inside too; one for another component is not this one's.
fn same_component(path: &str, inside: &str) -> Result<()> {
    if path == inside {
        Ok(())
    } else {
        Err(ApiError::InvalidRequest("the push is for another component".into()))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LandingQuery {
    #[param(min_length = 1, max_length = 1024, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    auth_code: String,
    #[serde(default)]
    #[param(required = false)]
    #[allow(dead_code)] // the code's lifetime; it is exchanged at once
    expires_in: Option<String>,
}

/// The longest authorization code accepted (WeChat's are ~100 characters).
const MAX_CODE_LEN: usize = 1024;

fn code_of(raw: &str) -> Result<Secret> {
    if raw.is_empty() || raw.chars().count() > MAX_CODE_LEN || raw.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(format!(
            "auth_code must be 1 to {MAX_CODE_LEN} printable characters"
        )));
    }
    Ok(Secret::new(raw.to_owned()))
}

#[utoipa::path(
    get, path = "/callback/component/{appid}/authorized", tag = "open platform",
    params(("appid" = String, Path), LandingQuery),
    responses(
        (status = 302, description = "To `after_authorize_url` with `authorizer_appid` and `component_appid`"),
        (status = 200, description = "Without `after_authorize_url`: the authorization", body = AuthorizationResponse),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn landing(
    State(state): State<AppState>,
    ApiPath(appid): ApiPath<String>,
    ApiQuery(q): ApiQuery<LandingQuery>,
) -> Result<Response> {
    let after = state.components().get(&appid)?.after_authorize_url.clone();
    let code = code_of(&q.auth_code)?;
    let rec = state.engine().exchange_code(&appid, &code).await?;
    let Some(after) = after else {
        return Ok(Json(AuthorizationResponse::of(rec)).into_response());
    };
    let mut url =
        url::Url::parse(&after).map_err(|e| ApiError::Internal(format!("after_authorize_url: {e}")))?;
    url.query_pairs_mut()
        .append_pair("authorizer_appid", &rec.authorizer_appid)
        .append_pair("component_appid", &appid);
    let location =
        HeaderValue::from_str(url.as_str()).map_err(|e| ApiError::Internal(format!("redirect: {e}")))?;
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}

/// `POST /v1/components/{appid}/authorization_url` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationUrlRequest {
    /// Where WeChat sends the browser after consent; default: this hub's landing page
    /// (`[server] public_url` + `/callback/component/{appid}/authorized`).
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// 1 official accounts, 2 mini programs, 3 both, 4 mini program (test), 5 and 6 as WeChat
    /// documents. Exclusive with `biz_appid`.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 6)]
    pub auth_type: Option<u8>,
    /// The one account to authorize. Exclusive with `auth_type`.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub biz_appid: Option<String>,
    /// The mobile (WeChat client) URL instead of the PC one.
    #[serde(default)]
    pub mobile: bool,
}

/// JSON Schema's `integer` takes `4.0` as well as `4`; so does this.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<u8>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else { return Ok(None) };
    let whole = n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64));
    whole
        .and_then(|w| u8::try_from(w).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom("auth_type must be a whole number 1 to 6"))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizationUrlResponse {
    pub url: String,
    pub pre_auth_code: String,
    /// Unix seconds when the pre-auth code expires.
    pub expires_at: i64,
}

/// The URL for a pre-auth code, as WeChat documents it for PC and mobile.
pub fn authorization_url(
    component: &str,
    pre_auth_code: &str,
    redirect_uri: &str,
    auth_type: Option<u8>,
    biz_appid: Option<&str>,
    mobile: bool,
) -> String {
    let base = if mobile {
        "https://open.weixin.qq.com/wxaopen/safe/bindcomponent"
    } else {
        "https://mp.weixin.qq.com/cgi-bin/componentloginpage"
    };
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    if mobile {
        q.append_pair("action", "bindcomponent").append_pair("no_scan", "1");
    }
    q.append_pair("component_appid", component)
        .append_pair("pre_auth_code", pre_auth_code)
        .append_pair("redirect_uri", redirect_uri);
    if let Some(t) = auth_type {
        q.append_pair("auth_type", &t.to_string());
    }
    if let Some(b) = biz_appid {
        q.append_pair("biz_appid", b);
    }
    let fragment = if mobile { "#wechat_redirect" } else { "" };
    format!("{base}?{}{fragment}", q.finish())
}

/// The client, if it may use `component`'s endpoints.
fn component_client<'c>(
    state: &AppState,
    clients: &'c crate::auth::Clients,
    headers: &HeaderMap,
    component: &str,
) -> Result<&'c crate::auth::Client> {
    let client = clients.authenticate(headers)?;
    client.check_app(component, state.engine())?;
    state.components().get(component)?;
    Ok(client)
}

#[utoipa::path(
    post, path = "/v1/components/{appid}/authorization_url", tag = "open platform",
    params(("appid" = String, Path)),
    request_body = AuthorizationUrlRequest,
    responses(
        (status = 200, body = AuthorizationUrlResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_authorization_url(
    State(state): State<AppState>,
    ApiPath(appid): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AuthorizationUrlRequest>,
) -> Result<Json<AuthorizationUrlResponse>> {
    let clients = state.clients_owned();
    component_client(&state, &clients, &headers, &appid)?;
    if req.auth_type.is_some() && req.biz_appid.is_some() {
        return Err(ApiError::InvalidRequest("auth_type and biz_appid are exclusive".into()));
    }
    if req.auth_type.is_some_and(|t| !(1..=6).contains(&t)) {
        return Err(ApiError::InvalidRequest("auth_type is 1 to 6".into()));
    }
    if let Some(b) = &req.biz_appid {
        wxcentral_core::engine::check_appid(b)
            .map_err(|e| ApiError::InvalidRequest(format!("biz_appid: {e}")))?;
    }
    let redirect = match (&req.redirect_uri, &state.components().public_url) {
        (Some(r), _) => r.clone(),
        (None, Some(public)) => {
            format!("{}/callback/component/{appid}/authorized", public.trim_end_matches('/'))
        }
        (None, None) => {
            return Err(ApiError::InvalidRequest(
                "redirect_uri is required without [server] public_url".into(),
            ));
        }
    };
    if !(redirect.starts_with("https://") || redirect.starts_with("http://")) || redirect.len() > 2048 {
        return Err(ApiError::InvalidRequest(
            "redirect_uri must be an http(s) URL of at most 2048 bytes".into(),
        ));
    }
    let (code, expires_in) = state.engine().pre_auth_code(&appid).await?;
    let url = authorization_url(
        &appid,
        code.expose(),
        &redirect,
        req.auth_type,
        req.biz_appid.as_deref(),
        req.mobile,
    );
    let expires_at = now_ms().div_euclid(1000) + i64::try_from(expires_in).unwrap_or(0);
    Ok(Json(AuthorizationUrlResponse { url, pre_auth_code: code.expose().to_owned(), expires_at }))
}

/// `POST /v1/components/{appid}/authorizations` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationRequest {
    #[schema(min_length = 1, max_length = 1024, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    pub auth_code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizationResponse {
    pub authorizer_appid: String,
    pub func_info: Vec<i64>,
}

impl AuthorizationResponse {
    fn of(rec: wxcentral_core::authorizer::AuthorizerRecord) -> Self {
        Self { authorizer_appid: rec.authorizer_appid, func_info: rec.func_info }
    }
}

#[utoipa::path(
    post, path = "/v1/components/{appid}/authorizations", tag = "open platform",
    params(("appid" = String, Path)),
    request_body = AuthorizationRequest,
    responses(
        (status = 200, description = "The authorizer (the code is exchanged once: again answers the same)", body = AuthorizationResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_authorization(
    State(state): State<AppState>,
    ApiPath(appid): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AuthorizationRequest>,
) -> Result<Json<AuthorizationResponse>> {
    let clients = state.clients_owned();
    component_client(&state, &clients, &headers, &appid)?;
    let code = code_of(&req.auth_code)?;
    Ok(Json(AuthorizationResponse::of(state.engine().exchange_code(&appid, &code).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    #[serde(default)]
    /// Bounded so a generated huge number is refused by the schema, not by the parser.
    #[param(required = false, minimum = 0, maximum = 4294967295_u64)]
    offset: u32,
    #[serde(default = "default_limit")]
    #[param(required = false, minimum = 1, maximum = 1000)]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizersResponse {
    pub total: usize,
    pub offset: usize,
    pub authorizers: Vec<AuthorizerView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizerView {
    pub authorizer_appid: String,
    /// `authorized` or `needs_reauthorization`.
    pub state: AuthorizerState,
    pub func_info: Vec<i64>,
    /// Unix seconds of the authorization (or import) event.
    pub authorized_at: i64,
    pub credentials: Vec<crate::api::CredentialStatusView>,
}

#[utoipa::path(
    get, path = "/v1/components/{appid}/authorizers", tag = "open platform",
    params(("appid" = String, Path), PageQuery),
    responses(
        (status = 200, description = "Authorizers with status, in appid order (no secrets)", body = AuthorizersResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_authorizers(
    State(state): State<AppState>,
    ApiPath(appid): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
    headers: HeaderMap,
) -> Result<Json<AuthorizersResponse>> {
    let clients = state.clients_owned();
    component_client(&state, &clients, &headers, &appid)?;
    if !(1..=1000).contains(&page.limit) {
        return Err(ApiError::InvalidRequest("limit is 1 to 1000".into()));
    }
    let (total, list) = state.engine().authorizers(&appid, page.offset as usize, page.limit)?;
    let now = now_ms();
    let authorizers = list
        .into_iter()
        .map(|a| AuthorizerView {
            authorizer_appid: a.authorizer_appid,
            state: a.state,
            func_info: a.func_info,
            authorized_at: a.authorized_at_ms.div_euclid(1000),
            credentials: a
                .credentials
                .into_iter()
                .map(|c| crate::api::credential_status_view(c, now))
                .collect(),
        })
        .collect();
    Ok(Json(AuthorizersResponse { total, offset: page.offset as usize, authorizers }))
}

#[utoipa::path(
    post, path = "/v1/components/{appid}/import", tag = "open platform",
    params(("appid" = String, Path)),
    responses(
        (status = 200, description = "Every authorizer of api_get_authorizer_list adopted with its refresh token", body = ImportReport),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn import(
    State(state): State<AppState>,
    ApiPath(appid): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<ImportReport>> {
    let clients = state.clients_owned();
    let client = component_client(&state, &clients, &headers, &appid)?;
    if !client.admin {
        return Err(ApiError::Forbidden(format!("client {} may not import authorizers", client.name)));
    }
    tracing::info!(client = %client.name, component = %appid, "authorizer import");
    Ok(Json(state.engine().import_authorizers(&appid).await?))
}

#[utoipa::path(
    get, path = "/v1/components/{appid}/component_access_token", tag = "open platform",
    params(("appid" = String, Path)),
    responses(
        (status = 200, body = crate::api::CredentialResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn component_token(
    State(state): State<AppState>,
    ApiPath(appid): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response> {
    {
        let clients = state.clients();
        component_client(&state, &clients, &headers, &appid)?;
    }
    let body = crate::render::read_body(state.engine(), &appid, CredentialKind::ComponentAccessToken, now_ms)
        .await?;
    Ok(crate::api::credential_response(body))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ComponentView {
    pub appid: String,
    pub credential: crate::api::CredentialStatusView,
    /// Unix seconds of the newest verify ticket's push known to this node.
    pub verify_ticket_pushed_at: Option<i64>,
    pub verify_ticket_age_secs: Option<i64>,
    /// No ticket, or none pushed for an hour (WeChat's pushes are not reaching the hub).
    pub verify_ticket_stale: bool,
    pub authorizers: usize,
}

#[utoipa::path(
    get, path = "/v1/components/{appid}", tag = "open platform",
    params(("appid" = String, Path)),
    responses(
        (status = 200, description = "The component token's state and the verify ticket's age", body = ComponentView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn component_status(
    State(state): State<AppState>,
    ApiPath(appid): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Json<ComponentView>> {
    let clients = state.clients_owned();
    component_client(&state, &clients, &headers, &appid)?;
    let s = state.engine().component_status(&appid)?;
    Ok(Json(ComponentView {
        appid: s.appid,
        credential: crate::api::credential_status_view(s.credential, now_ms()),
        verify_ticket_pushed_at: s.verify_ticket_pushed_at_ms.map(|t| t.div_euclid(1000)),
        verify_ticket_age_secs: s.verify_ticket_age_secs,
        verify_ticket_stale: s.verify_ticket_stale,
        authorizers: s.authorizers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_urls_follow_wechat_docs() {
        let pc =
            authorization_url("wxc", "preauthcode@@@x", "https://h.example/cb?a=1", Some(3), None, false);
        assert_eq!(
            pc,
            "https://mp.weixin.qq.com/cgi-bin/componentloginpage?component_appid=wxc&pre_auth_code=preauthcode%40%40%40x&redirect_uri=https%3A%2F%2Fh.example%2Fcb%3Fa%3D1&auth_type=3"
        );
        let m = authorization_url("wxc", "p", "https://h.example/cb", None, Some("wxbiz"), true);
        assert_eq!(
            m,
            "https://open.weixin.qq.com/wxaopen/safe/bindcomponent?action=bindcomponent&no_scan=1&component_appid=wxc&pre_auth_code=p&redirect_uri=https%3A%2F%2Fh.example%2Fcb&biz_appid=wxbiz#wechat_redirect"
        );
    }

    #[test]
    fn codes_are_bounded() {
        assert!(code_of("").is_err());
        assert!(code_of(&"x".repeat(MAX_CODE_LEN + 1)).is_err());
        assert!(code_of("a\nb").is_err());
        assert_eq!(code_of("queryauthcode@@@ok").unwrap().expose(), "queryauthcode@@@ok");
    }
}
