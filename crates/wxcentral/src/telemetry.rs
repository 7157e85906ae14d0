//! Logs and metrics.
//!
//! Log lines carry appids, kinds, versions and errcodes, never values: request spans record the
//! path without its query string, because WeChat-style URLs put `secret` and `access_token`
//! there.

use crate::config::LogFormat;
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
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

/// Request counters and latency histograms by route template (not by raw path, which would make
/// one series per appid), method and status.
///
/// `metrics::counter!` with labels builds and hashes its key on every call; credential reads are
/// the hot path, so each series is looked up once and its handles kept.
#[derive(Default)]
pub struct HttpMetrics {
    series: RwLock<HashMap<Box<str>, Vec<Series>>>,
}

struct Series {
    method: &'static str,
    status: u16,
    requests: Counter,
    duration: Histogram,
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routes = self.series.read().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("HttpMetrics").field("routes", &routes).finish()
    }
}

impl HttpMetrics {
    pub fn record(&self, method: &Method, route: &str, status: StatusCode, elapsed: Duration) {
        let method = method_label(method);
        let status = status.as_u16();
        let seconds = elapsed.as_secs_f64();
        let find = |v: &Vec<Series>| v.iter().position(|s| s.method == method && s.status == status);
        {
            let series = self.series.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(s) = series.get(route).and_then(|v| find(v).map(|i| &v[i])) {
                s.requests.increment(1);
                s.duration.record(seconds);
                return;
            }
        }
        let mut series = self.series.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = series.entry(route.into()).or_default();
        let i = find(list).unwrap_or_else(|| {
            list.push(Series {
                method,
                status,
                requests: metrics::counter!("wxcentral_http_requests_total",
                    "method" => method, "route" => route.to_owned(), "status" => status.to_string()),
                duration: metrics::histogram!("wxcentral_http_request_duration_seconds", "route" => route.to_owned()),
            });
            list.len() - 1
        });
        list[i].requests.increment(1);
        list[i].duration.record(seconds);
    }
}

/// Standard methods by name, anything else as `other`: a client must not be able to mint series.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::PATCH, "PATCH"),
        (Method::TRACE, "TRACE"),
        (Method::CONNECT, "CONNECT"),
    ];
    KNOWN.iter().find(|(m, _)| m == method).map_or("other", |(_, name)| name)
}

/// Counts the requests the router answers; the credential fast path records its own.
pub async fn track_http(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let response = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state.http_metrics().record(&method, route, response.status(), start.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_set_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }

    #[test]
    fn a_series_is_created_once_and_counted_every_time() {
        let m = HttpMetrics::default();
        for _ in 0..3 {
            m.record(&Method::GET, "/t/{x}", StatusCode::OK, Duration::from_millis(1));
        }
        m.record(&Method::GET, "/t/{x}", StatusCode::NOT_FOUND, Duration::from_millis(1));
        m.record(&Method::from_bytes(b"BREW").unwrap(), "/t/{x}", StatusCode::OK, Duration::ZERO);
        m.record(&Method::from_bytes(b"MELT").unwrap(), "/t/{x}", StatusCode::OK, Duration::ZERO);
        let series = m.series.read().unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series["/t/{x}"].len(), 3, "GET 200, GET 404, other 200");
    }
}
