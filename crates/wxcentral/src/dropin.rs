//! The WeChat-compatible surface: token endpoints in WeChat's shape, secret-bearing paths, the
//! proxy for every other WeChat API path, and token-free calls under `/v1/apps/{appid}/wechat`
//! (DESIGN.md §5). An SDK changes its base URL and nothing else.
//!
//! Token requests never reach WeChat while the central value is valid. The secret a caller
//! presents is the app's AppSecret or a client key whose scopes include the app, so business
//! servers need not hold the AppSecret at all; both are compared in constant time, and both
//! checks run whichever matches. `force_refresh` and repeated requests are guarded reports
//! ([`Engine::report_suspect`]). Every answer that is not WeChat's own goes through
//! [`WxError`].

use crate::api::now_ms;
use crate::error::ApiError;
use crate::http_metrics::RouteLabel;
use crate::proxy::{Inject, target};
use crate::repeats;
use crate::state::AppState;
use crate::wx_error::WxError;
use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::net::SocketAddr;
use wechat_proto::api::{self as wx, TicketType};
use wxcentral_core::kind::Role;
use wxcentral_core::wire::expires_in;
use wxcentral_core::{AppSpec, Credential, CredentialKind, Engine};

const AT: CredentialKind = CredentialKind::AccessToken;
const CT: CredentialKind = CredentialKind::ComponentAccessToken;

/// Paths whose `access_token` is a user's (web authorization), not the app's: forwarded as
/// they come, with nothing injected or checked.
const USER_TOKEN_PATHS: [&str; 2] = ["/sns/userinfo", "/sns/auth"];

/// The WeChat paths the hub answers (or forwards with the real secret) itself, in the order of
/// [`crate::router`]'s handlers for them; every other path under a proxy prefix is [`proxy`]'s.
pub const OWN_PATHS: [&str; 8] = [
    wx::PATH_TOKEN,
    wx::PATH_STABLE_TOKEN,
    wx::PATH_GETTICKET,
    wx::PATH_COMPONENT_TOKEN,
    wx::PATH_AUTHORIZER_TOKEN,
    wx::PATH_JSCODE2SESSION,
    wx::PATH_OAUTH2_ACCESS_TOKEN,
    wx::PATH_OAUTH2_REFRESH_TOKEN,
];

type WxResult<T> = Result<T, WxError>;

fn answer(r: WxResult<Response>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

fn peer(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

fn query(req: &Request, name: &str) -> Option<String> {
    target::param(req.uri().query(), name).filter(|v| !v.is_empty()).map(std::borrow::Cow::into_owned)
}

/// The app `appid` if `presented` is its AppSecret or a key of a client that may use it.
fn check_secret(state: &AppState, appid: &str, presented: &str) -> WxResult<AppSpec> {
    let engine = state.engine();
    let app = engine.app(appid).ok_or(WxError::UnknownApp)?;
    let by_secret = !app.secret.expose().is_empty() && app.secret.ct_eq(presented);
    let by_key = state.clients().by_key(presented).is_some_and(|c| c.may_see(appid, engine));
    if by_secret | by_key { Ok(app) } else { Err(WxError::WrongSecret) }
}

/// The JSON body of a drop-in POST, under the server's body limit.
async fn json_body(state: &AppState, req: Request) -> WxResult<serde_json::Map<String, Value>> {
    let limit = state.body_limit();
    let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|e| {
        if is_length_limit(&e) {
            WxError::RequestTooLarge(limit as u64)
        } else {
            WxError::BadBody(e.to_string())
        }
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(WxError::BadBody("the body is not a JSON object".into())),
        Err(e) => Err(WxError::BadBody(format!("the body is not JSON: {e}"))),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

fn field<'a>(body: &'a serde_json::Map<String, Value>, name: &str) -> WxResult<Option<&'a str>> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(WxError::InvalidArgs(format!("{name} must be a string"))),
    }
}

fn token_json(name: &str, cred: &Credential) -> Response {
    Json(json!({ name: cred.value.expose(), "expires_in": expires_in(cred, now_ms()) })).into_response()
}

/// The central access token for a caller that showed `presented`; `force` and a repeat of the
/// same request are guarded reports.
async fn access_token(
    state: &AppState,
    appid: &str,
    presented: &str,
    force: bool,
    peer: Option<std::net::IpAddr>,
) -> WxResult<Response> {
    check_secret(state, appid, presented)?;
    let engine = state.engine();
    let mut cred =
        if force { engine.report_suspect(appid, AT).await? } else { engine.get(appid, AT).await? };
    let now = now_ms();
    let caller = repeats::caller(peer, appid, presented);
    if !force && state.repeats().is_repeat(caller, cred.version, expires_in(&cred, now), now) {
        cred = engine.report_suspect(appid, AT).await?;
    }
    Ok(token_json("access_token", &cred))
}

/// `GET /cgi-bin/token?grant_type=client_credential&appid=…&secret=…`
pub async fn token(State(state): State<AppState>, req: Request) -> Response {
    answer(
        async move {
            if !matches!(*req.method(), Method::GET | Method::POST) {
                return Err(WxError::MethodNotAllowed);
            }
            if query(&req, "grant_type").as_deref() != Some("client_credential") {
                return Err(WxError::InvalidGrantType);
            }
            let appid = query(&req, "appid").ok_or(WxError::AppidMissing)?;
            let secret = query(&req, "secret").ok_or(WxError::SecretMissing)?;
            access_token(&state, &appid, &secret, false, peer(&req)).await
        }
        .await,
    )
}

/// `POST /cgi-bin/stable_token` `{"grant_type","appid","secret","force_refresh"}`
pub async fn stable_token(State(state): State<AppState>, req: Request) -> Response {
    answer(
        async move {
            if req.method() != Method::POST {
                return Err(WxError::MethodNotAllowed);
            }
            let peer = peer(&req);
            let body = json_body(&state, req).await?;
            if field(&body, "grant_type")? != Some("client_credential") {
                return Err(WxError::InvalidGrantType);
            }
            let appid = field(&body, "appid")?.ok_or(WxError::AppidMissing)?;
            let secret = field(&body, "secret")?.ok_or(WxError::SecretMissing)?;
            let force = match body.get("force_refresh") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(WxError::InvalidArgs("force_refresh must be a boolean".into())),
            };
            access_token(&state, appid, secret, force, peer).await
        }
        .await,
    )
}

/// The app (authorizer) whose current access token the request's `access_token` is.
fn token_owner(engine: &Engine, req: &Request, param: &str, kind: CredentialKind) -> WxResult<String> {
    let value = query(req, param).ok_or(WxError::TokenMissing)?;
    match engine.resolve_token(&value) {
        Some(owner) if owner.kind == kind => Ok(owner.appid),
        _ => Err(WxError::UnknownToken),
    }
}

/// `GET /cgi-bin/ticket/getticket?access_token=…&type=jsapi|wx_card`
pub async fn getticket(State(state): State<AppState>, req: Request) -> Response {
    answer(
        async move {
            if !matches!(*req.method(), Method::GET | Method::POST) {
                return Err(WxError::MethodNotAllowed);
            }
            let appid = token_owner(state.engine(), &req, "access_token", AT)?;
            let kind = match query(&req, "type").as_deref() {
                Some("jsapi") => CredentialKind::from_ticket_type(TicketType::Jsapi),
                Some("wx_card") => CredentialKind::from_ticket_type(TicketType::WxCard),
                _ => return Err(WxError::InvalidArgs("type must be jsapi or wx_card".into())),
            };
            let cred = state.engine().get(&appid, kind).await?;
            Ok(Json(json!({
                "errcode": 0,
                "errmsg": "ok",
                "ticket": cred.value.expose(),
                "expires_in": expires_in(&cred, now_ms()),
            }))
            .into_response())
        }
        .await,
    )
}

/// `POST /cgi-bin/component/api_component_token`: the verify ticket sent is ignored, the hub
/// holds the real one.
pub async fn component_token(State(state): State<AppState>, req: Request) -> Response {
    answer(
        async move {
            if req.method() != Method::POST {
                return Err(WxError::MethodNotAllowed);
            }
            let body = json_body(&state, req).await?;
            let appid = field(&body, "component_appid")?.ok_or(WxError::AppidMissing)?;
            let secret = field(&body, "component_appsecret")?.ok_or(WxError::SecretMissing)?;
            let app = check_secret(&state, appid, secret)?;
            if !matches!(app.role, Role::Component { .. }) {
                return Err(WxError::UnknownApp);
            }
            let cred = state.engine().get(appid, CT).await?;
            Ok(token_json("component_access_token", &cred))
        }
        .await,
    )
}

/// `POST /cgi-bin/component/api_authorizer_token?component_access_token=…`: the central
/// authorizer token, with the refresh token the caller sent echoed back (its bookkeeping keeps
/// working; the stored one is never shown).
pub async fn authorizer_token(State(state): State<AppState>, req: Request) -> Response {
    answer(
        async move {
            if req.method() != Method::POST {
                return Err(WxError::MethodNotAllowed);
            }
            let component = token_owner(state.engine(), &req, "component_access_token", CT)?;
            let body = json_body(&state, req).await?;
            if field(&body, "component_appid")?.is_some_and(|c| c != component) {
                return Err(WxError::InvalidArgs(
                    "component_appid is not the component_access_token's".into(),
                ));
            }
            let authorizer = field(&body, "authorizer_appid")?.ok_or(WxError::AppidMissing)?;
            let echoed = field(&body, "authorizer_refresh_token")?.unwrap_or_default().to_owned();
            if state.engine().component_of(authorizer).as_deref() != Some(component.as_str()) {
                return Err(WxError::NotAuthorized);
            }
            let cred = state.engine().get(authorizer, AT).await?;
            Ok(Json(json!({
                "authorizer_access_token": cred.value.expose(),
                "expires_in": expires_in(&cred, now_ms()),
                "authorizer_refresh_token": echoed,
            }))
            .into_response())
        }
        .await,
    )
}

/// `/sns/jscode2session` and `/sns/oauth2/access_token`: the caller's secret (or client key)
/// is checked and the real AppSecret forwarded.
pub async fn with_secret(State(state): State<AppState>, req: Request) -> Response {
    answer(
        async move {
            let appid = query(&req, "appid").ok_or(WxError::AppidMissing)?;
            let presented = query(&req, "secret").ok_or(WxError::SecretMissing)?;
            let app = check_secret(&state, &appid, &presented)?;
            if app.secret.expose().is_empty() {
                return Err(WxError::InvalidArgs(format!(
                    "{appid} is an authorizer: it has no AppSecret; use the component variant of this API"
                )));
            }
            forward(&state, req, Inject::Secret(app.secret)).await
        }
        .await,
    )
}

/// `/sns/oauth2/refresh_token`: no secret, but only for apps the hub knows.
pub async fn known_app(State(state): State<AppState>, req: Request) -> Response {
    answer(
        async move {
            let appid = query(&req, "appid").ok_or(WxError::AppidMissing)?;
            state.engine().app(&appid).ok_or(WxError::UnknownApp)?;
            forward(&state, req, Inject::Nothing).await
        }
        .await,
    )
}

/// Every other WeChat API path: the token presented names the app and is replaced.
pub async fn proxy(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let target = match target::check(&parts.method, &parts.uri, parts.uri.path(), state.proxy().prefixes()) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let inject = if USER_TOKEN_PATHS.contains(&target.path.as_str()) {
        Ok(Inject::Nothing)
    } else {
        let q = target.query.as_deref();
        let presented = match target::param(q, "access_token").filter(|v| !v.is_empty()) {
            Some(v) => Ok(("access_token", v)),
            None => target::param(q, "component_access_token")
                .filter(|v| !v.is_empty())
                .map(|v| ("component_access_token", v))
                .ok_or(WxError::TokenMissing),
        };
        presented.and_then(|(param, value)| {
            let owner = state.engine().resolve_token(&value).ok_or(WxError::UnknownToken)?;
            Ok(Inject::Token { appid: owner.appid, kind: owner.kind, param })
        })
    };
    let result = match inject {
        Ok(inject) => {
            state.proxy().forward(state.engine(), parts.method, parts.headers, body, &target, inject).await
        }
        Err(e) => Err(e),
    };
    let mut response = answer(result);
    response.extensions_mut().insert(RouteLabel(target.label));
    response
}

async fn forward(state: &AppState, req: Request, inject: Inject) -> WxResult<Response> {
    let (parts, body) = req.into_parts();
    let proxy = state.proxy();
    let target = target::check(&parts.method, &parts.uri, parts.uri.path(), proxy.prefixes())?;
    forward_to(state, parts.method, parts.headers, body, &target, inject).await
}

async fn forward_to(
    state: &AppState,
    method: Method,
    headers: axum::http::HeaderMap,
    body: Body,
    target: &target::Target,
    inject: Inject,
) -> WxResult<Response> {
    let mut response = state.proxy().forward(state.engine(), method, headers, body, target, inject).await?;
    response.extensions_mut().insert(RouteLabel(target.label.clone()));
    Ok(response)
}

/// `ANY /v1/apps/{appid}/wechat/{*path}`: the client key authorizes, the hub injects the token
/// (the component token for a component). Errors before the call are the native API's; what
/// WeChat answers passes through.
pub async fn token_free(State(state): State<AppState>, req: Request) -> Response {
    let result = async move {
        let path = req.uri().path();
        let rest = path.strip_prefix("/v1/apps/").and_then(|r| r.split_once("/wechat/"));
        let Some((appid, rest)) = rest.map(|(a, r)| (a.to_owned(), format!("/{r}"))) else {
            return Err(ApiError::NotFound);
        };
        {
            let clients = state.clients();
            clients.authenticate(req.headers())?.check_app(&appid, state.engine())?;
        }
        let app = state.engine().app(&appid).ok_or_else(|| ApiError::UnknownApp(appid.clone()))?;
        let (kind, param) = match app.role {
            Role::Component { .. } => (CT, "component_access_token"),
            Role::App | Role::Authorizer { .. } => (AT, "access_token"),
        };
        let (parts, body) = req.into_parts();
        Ok(async move {
            let target = target::check(&parts.method, &parts.uri, &rest, state.proxy().prefixes())?;
            forward_to(
                &state,
                parts.method,
                parts.headers,
                body,
                &target,
                Inject::Token { appid, kind, param },
            )
            .await
        }
        .await)
    }
    .await;
    match result {
        Ok(r) => answer(r),
        Err(e) => e.into_response(),
    }
}
