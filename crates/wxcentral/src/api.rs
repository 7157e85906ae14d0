//! The native HTTP API (`/v1/…`) and the operations endpoints.

use crate::error::{ApiError, ErrorBody, Result};
use crate::state::AppState;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};
use utoipa::ToSchema;
use wxcentral_core::CredentialKind;
pub use wxcentral_core::wire::{
    AppView, AppsResponse, CredentialResponse, CredentialStatusView, JssdkConfigRequest, JssdkConfigResponse,
    PutAppRequest, PutAppsItem, PutAppsRequest, PutAppsResponse, RefreshRequest,
};

/// The 200 answer with a credential's JSON body.
pub(crate) fn credential_response(body: serde_json::Result<Vec<u8>>) -> Response {
    match body {
        Ok(body) => {
            let mut response = Response::new(Body::from(body));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(e) => ApiError::Internal(format!("credential response: {e}")).into_response(),
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// JSON body extractor whose rejections are our error codes (400, or 413 past the body limit).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Path parameters whose rejections (a segment that is not UTF-8 once percent-decoded, say)
/// answer `400 invalid_request` through the error table like every other bad input.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(ApiPath(t)),
            Err(e) => Err(ApiError::InvalidRequest(format!("invalid path: {}", e.body_text()))),
        }
    }
}

/// Query parameters whose rejections answer `400 invalid_request` through the error table.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(t)) => Ok(ApiQuery(t)),
            Err(e) => Err(ApiError::InvalidRequest(format!("invalid query: {}", e.body_text()))),
        }
    }
}

/// `GET /`: where to look, for a person or a script that found the port.
#[utoipa::path(get, path = "/", tag = "operations", responses((status = 200, description = "Where the API is described", body = RootResponse)))]
pub async fn root() -> Json<RootResponse> {
    Json(RootResponse {
        service: "wxcentral",
        version: env!("CARGO_PKG_VERSION"),
        openapi: "/openapi.json",
        docs: "https://github.com/wxcentral/wxcentral/blob/main/docs/design.md",
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RootResponse {
    pub service: &'static str,
    pub version: &'static str,
    /// The OpenAPI document of this server.
    pub openapi: &'static str,
    pub docs: &'static str,
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(body_rejection)`
pub(crate) fn body_rejection(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::InvalidRequest(format!("cannot read body: {}", e.body_text()))
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
}

/// Kinds served under `/v1/apps/{appid}/…`.
pub(crate) fn app_kind(appid: &str, kind: &str) -> Result<CredentialKind> {
    match CredentialKind::from_str(kind) {
        Ok(
            k @ (CredentialKind::AccessToken | CredentialKind::JsapiTicket | CredentialKind::WxCardTicket),
        ) => Ok(k),
        _ => Err(ApiError::UnknownCredential { appid: appid.to_owned(), kind: kind.to_owned() }),
    }
}

#[utoipa::path(
    get, path = "/v1/apps", tag = "credentials",
    responses(
        (status = 200, description = "Apps this key may see, with credential status (no values)", body = AppsResponse),
        (status = 401, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_apps(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<AppsResponse>> {
    let clients = state.clients_owned();
    let client = clients.authenticate(&headers)?;
    let now = now_ms();
    let apps = state
        .engine()
        .status()
        .into_iter()
        .filter(|a| client.may_see(&a.appid, state.engine()))
        .map(|a| app_view(a, now))
        .collect();
    Ok(Json(AppsResponse { apps }))
}

/// A credential's state on the wire.
pub(crate) fn credential_status_view(c: wxcentral_core::CredentialStatus, now: i64) -> CredentialStatusView {
    let secs = |ms: i64| ms.div_euclid(1000);
    CredentialStatusView {
        kind: c.kind.as_str().to_owned(),
        state: c.state.to_owned(),
        expires_at: c.expires_at_ms.map(secs),
        expires_in: c.expires_at_ms.map(|e| secs(e - now).max(0)),
        version: c.version,
        last_error: c.last_error,
        next_refresh_at: c.next_refresh_ms.map(secs),
    }
}

fn app_view(a: wxcentral_core::AppStatus, now: i64) -> AppView {
    let name = |v: serde_json::Result<serde_json::Value>| {
        v.ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    };
    AppView {
        kind: name(serde_json::to_value(a.kind)),
        origin: name(serde_json::to_value(a.origin)),
        appid: a.appid,
        credentials: a.credentials.into_iter().map(|c| credential_status_view(c, now)).collect(),
        quota_today: a.quota_today.into_iter().collect(),
    }
}

#[utoipa::path(
    get, path = "/v1/apps/{appid}/{kind}", tag = "credentials",
    params(("appid" = String, Path), ("kind" = String, Path, description = "access_token | jsapi_ticket | wx_card_ticket")),
    responses(
        (status = 200, body = CredentialResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "unknown_app or unknown_credential", body = ErrorBody),
        (status = 503, description = "credential_unavailable, with Retry-After", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_credential(
    State(state): State<AppState>,
    ApiPath((appid, kind)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    read_credential(&state, &headers, &appid, &kind).await
}

/// The credential read, shared by the route above and the fast path in [`crate::front`]:
/// authentication, then scope, then existence, then the engine.
pub(crate) async fn read_credential(
    state: &AppState,
    headers: &HeaderMap,
    appid: &str,
    kind: &str,
) -> Response {
    let read = async {
        {
            let clients = state.clients();
            clients.authenticate(headers)?.check_app(appid, state.engine())?;
        }
        let kind = app_kind(appid, kind)?;
        Ok::<_, ApiError>(crate::render::read_body(state.engine(), appid, kind, now_ms).await?)
    };
    match read.await {
        Ok(body) => credential_response(body),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(
    post, path = "/v1/apps/{appid}/{kind}/refresh", tag = "credentials",
    params(("appid" = String, Path), ("kind" = String, Path)),
    request_body(content = Option<RefreshRequest>, description = "With `invalid`: compare-and-refresh (keys with `refresh`). Without a body: forced refresh (admin keys)."),
    responses(
        (status = 200, description = "The current value after the report or refresh", body = CredentialResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 502, description = "upstream_rejected, with errcode", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn refresh_credential(
    State(state): State<AppState>,
    ApiPath((appid, kind)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let clients = state.clients_owned();
    let client = clients.authenticate(&headers)?;
    client.check_app(&appid, state.engine())?;
    let kind = app_kind(&appid, &kind)?;
    let body = body.map_err(body_rejection)?;
    // No body, or a JSON `null` (what a generated client sends for an absent optional body).
    let empty = body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null";
    let cred = if empty {
        if !client.admin {
            return Err(ApiError::Forbidden(format!("client {} may not force a refresh", client.name)));
        }
        tracing::info!(client = %client.name, appid = %appid, kind = %kind, "forced refresh");
        state.engine().force_refresh(&appid, kind).await?
    } else {
        let req: RefreshRequest = parse_json(&body)?;
        if !(client.refresh || client.admin) {
            return Err(ApiError::Forbidden(format!("client {} may not report invalid values", client.name)));
        }
        state.engine().report_invalid(&appid, kind, &req.invalid).await?
    };
    Ok(credential_response(crate::render::body(&appid, kind, &cred, now_ms())))
}

#[utoipa::path(
    post, path = "/v1/apps/{appid}/jssdk_config", tag = "credentials",
    params(("appid" = String, Path)),
    request_body = JssdkConfigRequest,
    responses(
        (status = 200, description = "Arguments for wx.config", body = JssdkConfigResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn jssdk_config(
    State(state): State<AppState>,
    ApiPath(appid): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<JssdkConfigRequest>,
) -> Result<Json<JssdkConfigResponse>> {
    let clients = state.clients_owned();
    let client = clients.authenticate(&headers)?;
    client.check_app(&appid, state.engine())?;
    // What the document promises (`^https?://`, at most 4096): the signature covers the URL
    // as the browser has it, so it is not parsed or normalized.
    if !(req.url.starts_with("http://") || req.url.starts_with("https://")) || req.url.len() > 4096 {
        return Err(ApiError::InvalidRequest("url must be an http(s) URL of at most 4096 bytes".into()));
    }
    let ticket = state.engine().get(&appid, CredentialKind::JsapiTicket).await?;
    let timestamp = now_ms().div_euclid(1000);
    let nonce_str: String = rand::thread_rng().sample_iter(&Alphanumeric).take(16).map(char::from).collect();
    let signature = wechat_proto::signature::jssdk_signature(
        ticket.value.expose(),
        &nonce_str,
        timestamp as u64,
        &req.url,
    );
    Ok(Json(JssdkConfigResponse { app_id: appid, timestamp, nonce_str, signature }))
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is alive")))]
pub async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Store reachable (and, on Redis, the change feed subscribed), config loaded"),
        (status = 503, description = "Degraded: the store does not answer in time; values held in memory are still served until they near expiry"),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    // A frozen store must not freeze the probe.
    let ping = tokio::time::timeout(READYZ_PATIENCE, state.engine().store().ping()).await;
    match ping {
        Ok(Ok(())) => (StatusCode::OK, Json(serde_json::json!({"status": "ready"}))),
        failed => {
            let detail = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {READYZ_PATIENCE:?}"),
            };
            tracing::warn!(error = detail, "store unreachable; readiness degraded");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({
                    "status": "degraded",
                    "reason": "store_unreachable",
                    "message": "the store does not answer: held values are served until they near expiry, and refreshes that need the store wait for it"
                })),
            )
        }
    }
}

/// How long `/readyz` waits for the store.
const READYZ_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state.metrics().render();
    // Per-app series come from the live set, so removed apps take theirs along.
    state.engine().render_metrics(state.metrics_per_app(), &mut text);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

#[utoipa::path(
    put, path = "/v1/apps/{appid}", tag = "admin",
    params(("appid" = String, Path, description = "letters, digits, '_' and '-', at most 64", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = PutAppRequest,
    responses(
        (status = 201, description = "Added; every node serves it", body = AppView),
        (status = 200, description = "Changed", body = AppView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "Not an admin key, or an app of the config file", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 501, description = "No [store] encryption_key: secrets cannot be stored", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put_app(
    State(state): State<AppState>,
    ApiPath(appid): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PutAppRequest>,
) -> Result<Response> {
    let clients = state.clients_owned();
    let client = clients.authenticate(&headers)?;
    if !client.admin {
        return Err(ApiError::Forbidden(format!("client {} may not change apps", client.name)));
    }
    let spec = req.into_spec(appid.clone()).map_err(ApiError::InvalidRequest)?;
    let created = state.engine().put_app(spec).await?;
    tracing::info!(client = %client.name, appid = %appid, created, "app put");
    let view = state
        .engine()
        .app_status(&appid)
        .map(|a| app_view(a, now_ms()))
        .ok_or_else(|| ApiError::UnknownApp(appid.clone()))?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view)).into_response())
}

#[utoipa::path(
    put, path = "/v1/apps", tag = "admin",
    request_body = PutAppsRequest,
    responses(
        (status = 200, description = "All written in one store write and live; which were new", body = PutAppsResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "Not an admin key, or an app of the config file (nothing written)", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 501, description = "No [store] encryption_key: secrets cannot be stored", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put_apps(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PutAppsRequest>,
) -> Result<Json<PutAppsResponse>> {
    let clients = state.clients_owned();
    let client = clients.authenticate(&headers)?;
    if !client.admin {
        return Err(ApiError::Forbidden(format!("client {} may not change apps", client.name)));
    }
    if req.apps.is_empty() || req.apps.len() > 1000 {
        return Err(ApiError::InvalidRequest("apps must hold 1 to 1000 entries".into()));
    }
    // Every entry is checked, also one a later entry for the same appid replaces; then the
    // later entry wins.
    let mut by_id = std::collections::BTreeMap::new();
    for item in req.apps {
        let spec = item.into_spec().map_err(ApiError::InvalidRequest)?;
        by_id.insert(spec.appid.clone(), spec);
    }
    let specs: Vec<_> = by_id.into_values().collect();
    let ids: Vec<String> = specs.iter().map(|s| s.appid.clone()).collect();
    let created = state.engine().put_apps(specs).await?;
    let (mut new, mut changed) = (Vec::new(), Vec::new());
    for (appid, c) in ids.into_iter().zip(created) {
        if c { new.push(appid) } else { changed.push(appid) }
    }
    tracing::info!(client = %client.name, created = new.len(), changed = changed.len(), "apps put");
    Ok(Json(PutAppsResponse { created: new, changed }))
}

#[utoipa::path(
    delete, path = "/v1/apps/{appid}", tag = "admin",
    params(("appid" = String, Path)),
    responses(
        (status = 204, description = "Removed here and on every node; its values, loops and metric series are gone"),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not an admin key, or an app of the config file", body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_app(
    State(state): State<AppState>,
    ApiPath(appid): ApiPath<String>,
    headers: HeaderMap,
) -> Result<StatusCode> {
    let clients = state.clients_owned();
    let client = clients.authenticate(&headers)?;
    if !client.admin {
        return Err(ApiError::Forbidden(format!("client {} may not change apps", client.name)));
    }
    state.engine().delete_app(&appid).await?;
    tracing::info!(client = %client.name, appid = %appid, "app deleted");
    Ok(StatusCode::NO_CONTENT)
}
