//! Logs and metrics.
//!
//! Log lines carry appids, kinds, versions and errcodes, never values: request spans record the
//! path without its query string, because WeChat-style URLs put `secret` and `access_token`
//! there.

use crate::config::LogFormat;
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber; `RUST_LOG` overrides the default `info` filter.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: a log file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The process-wide Prometheus recorder. A process can install one global recorder only, and
/// tests run several servers in one process, so they share it.
///
/// Histogram samples pile up in the recorder until they are folded into their buckets, which
/// otherwise happens only when `/metrics` is scraped: a server nobody scrapes would grow by every
/// request it serves. A background thread folds them every few seconds instead.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("wxcentral_http_request_duration_seconds".into()),
                    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is already global (a test harness or embedding program):
                // keep a private one so /metrics still renders.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no metrics upkeep thread; histograms fold on scrape only");
            }
            handle
        })
        .clone()
}

const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The span of one HTTP request: method and path, never the query string. Debug level, because
/// an enabled span costs about as much as the rest of a credential read.
pub fn request_span(method: &Method, path: &str) -> tracing::Span {
    tracing::debug_span!("http", method = %method, path = %path)
}

/// Counts the requests the router answers; the credential fast path records its own.
pub async fn track_http(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let response = next.run(req).await;
    let label = response.extensions().get::<crate::http_metrics::RouteLabel>();
    let route =
        label.map(|l| l.0.as_str()).or(route.as_ref().map(MatchedPath::as_str)).unwrap_or("unmatched");
    state.http_metrics().record(&method, route, response.status(), start.elapsed());
    response
}
