//! wxcentral's HTTP server: the authenticated credential API, JS-SDK signing and operations
//! endpoints over the `wxcentral-core` engine.
//!
//! The binary is thin: it parses the command line, loads the [`config::Config`], and calls
//! [`build_state`] and [`serve`]. Tests do the same on a listener bound to port 0:
//!
//! ```no_run
//! # async fn demo(config: wxcentral::config::Config) -> Result<(), wxcentral::ServerError> {
//! let state = wxcentral::build_state(&config).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! wxcentral::serve(listener, state, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod auth;
pub mod config;
pub mod dropin;
pub mod error;
pub mod front;
pub mod http_metrics;
pub mod offline;
pub mod openapi;
pub mod platform;
pub mod proxy;
pub mod render;
pub mod repeats;
pub mod sandbox;
pub mod state;
pub mod telemetry;
pub mod workers;
pub mod wx_error;

use crate::auth::Clients;
use crate::config::Config;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use hyper::body::Incoming;
use std::future::Future;
use std::time::Duration;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use wxcentral_core::Engine;
use wxcentral_core::upstream::Upstream;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("config: {0}")]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Core(#[from] wxcentral_core::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the store, starts the engine (which loads stored values first) and builds the state.
pub async fn build_state(config: &Config) -> Result<AppState, ServerError> {
    let store = config.store_config().open(config.sealer()?).await?;
    let upstream =
        Upstream::new(&config.upstream.base_url, Duration::from_millis(config.upstream.timeout_ms))?;
    let engine = Engine::start(config.app_specs(), store, upstream, config.engine_config()).await?;
    let state = AppState::new(
        engine,
        Clients::from_config(&config.clients),
        telemetry::metrics_handle(),
        config.server.body_limit_bytes,
        config.server.metrics_per_app,
        proxy::Proxy::new(config)
            .map_err(|e| ServerError::Core(wxcentral_core::Error::Config(format!("proxy client: {e}"))))?,
    );
    state.set_components(platform::Components::from_config(config)?);
    Ok(state)
}

/// Applies a config file read again (SIGHUP): apps added, removed or changed, and clients (key
/// rotation). `config` must have passed validation; unchanged apps are not touched, so their
/// reads never notice. Settings that need a restart (listen address, store, upstream,
/// refresh tuning) are reported and left as they were.
pub async fn reload(state: &AppState, running: &Config, config: &Config) -> Result<(), ServerError> {
    let restart_only = [
        ("server.listen", running.server.listen != config.server.listen),
        (
            "store",
            format!("{:?}{:?}", running.store.kind, running.store.path)
                != format!("{:?}{:?}", config.store.kind, config.store.path),
        ),
        ("upstream.base_url", running.upstream.base_url != config.upstream.base_url),
    ];
    for (key, changed) in restart_only {
        if changed {
            tracing::warn!(key, "changed in the config file; takes effect at the next restart");
        }
    }
    // Everything that can fail first, so a refused reload leaves the running config whole.
    let components = platform::Components::from_config(config)?;
    state.engine().set_config_apps(config.app_specs()).await?;
    state.set_clients(Clients::from_config(&config.clients));
    state.set_components(components);
    tracing::info!(
        apps = config.apps.len(),
        components = config.components.len(),
        clients = config.clients.len(),
        "config reloaded"
    );
    Ok(())
}

/// The body limit of `PUT /v1/apps` (1000 apps of the largest shape fit).
pub const BATCH_BODY_LIMIT: usize = 4 << 20;

/// All routes, with the body limit, request metrics and secret-free request spans.
/// [`serve`] puts the credential fast path of [`front::Front`] in front of it.
pub fn router(state: AppState) -> Router {
    let body_limit = state.body_limit();
    // One handler for each of `dropin::OWN_PATHS`, in its order: the front service reads that
    // list to know which paths are not the proxy's.
    let own = [
        any(dropin::token),
        any(dropin::stable_token),
        any(dropin::getticket),
        any(dropin::component_token),
        any(dropin::authorizer_token),
        any(dropin::with_secret),
        any(dropin::with_secret),
        any(dropin::known_app),
    ];
    let mut wechat =
        dropin::OWN_PATHS.into_iter().zip(own).fold(Router::new(), |r, (path, h)| r.route(path, h));
    for prefix in state.proxy().prefixes() {
        wechat = wechat.route(&format!("{prefix}{{*path}}"), any(dropin::proxy));
    }
    Router::new()
        .merge(wechat)
        .route("/v1/apps/{appid}/wechat/{*path}", any(dropin::token_free))
        .route("/", get(api::root))
        // A batch of up to 1000 apps needs more room than the body limit of everything else.
        .route(
            "/v1/apps",
            get(api::list_apps)
                .put(api::put_apps)
                .layer(DefaultBodyLimit::max(body_limit.max(BATCH_BODY_LIMIT))),
        )
        .route("/v1/apps/{appid}", axum::routing::put(api::put_app).delete(api::delete_app))
        .route("/v1/apps/{appid}/jssdk_config", post(api::jssdk_config))
        .route(front::CREDENTIAL_ROUTE, get(api::get_credential))
        .route("/v1/apps/{appid}/{kind}/refresh", post(api::refresh_credential))
        .route("/v1/components/{appid}", get(platform::component_status))
        .route("/v1/components/{appid}/component_access_token", get(platform::component_token))
        .route("/v1/components/{appid}/authorization_url", post(platform::create_authorization_url))
        .route("/v1/components/{appid}/authorizations", post(platform::create_authorization))
        .route("/v1/components/{appid}/authorizers", get(platform::list_authorizers))
        .route("/v1/components/{appid}/import", post(platform::import))
        .route("/callback/component/{appid}", post(platform::push))
        .route("/callback/component/{appid}/authorized", get(platform::landing))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route(
            "/openapi.json",
            get(|| async { ([(axum::http::header::CONTENT_TYPE, "application/json")], openapi::document()) }),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), telemetry::track_http))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    telemetry::request_span(req.method(), req.uri().path())
                })
                // A 5xx here is an answer the hub chose (503 with Retry-After while a refresh
                // outlasts the read bound, a WeChat 5xx passed through, a 502 for a rejection):
                // worth a warning, not an error. A real fault is logged at ERROR where it is
                // mapped (error.rs, wx_error.rs), with its detail.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        .with_state(state)
}

/// Serves until `shutdown` resolves, then drains connections and stops the engine's loops.
///
/// `listener` is accepted on here; every connection is served on one of the connection
/// [`workers`] (one single-threaded runtime per core), which stop last.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let engine = state.engine().clone();
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let front = front::Front::new(router(state.clone()), state);
    let workers = workers::Workers::start(workers::default_count())?;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Taken off this runtime's reactor, to be registered with the worker's.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepted connection dropped");
                continue;
            }
        };
        // Created here, before the shutdown below can be signalled, so no connection is missed.
        let watcher = graceful.watcher();
        let front = front.clone();
        workers.spawn(async move {
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => return tracing::warn!(error = %e, "accepted connection dropped"),
            };
            // Answers are written whole; Nagle would only hold the last segment back.
            let _ = stream.set_nodelay(true);
            let service = tower::ServiceExt::map_request(front, move |req: axum::http::Request<Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                req
            });
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(
                hyper_util::rt::TokioIo::new(stream),
                hyper_util::service::TowerToHyperService::new(service),
            );
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    engine.shutdown().await;
    workers.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// What to do when `accept` fails: a connection reset before it was accepted is nothing; any
/// other error (no file descriptors left, say) is logged and accepting pauses for a second,
/// as hyper and axum do.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
