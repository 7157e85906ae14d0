//! Request counters and latency histograms of the HTTP surface, by route template.

use axum::http::{Method, StatusCode};
use metrics::{Counter, Histogram};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

/// The route a response is counted under when the router's template is too coarse (the
/// proxy's `/cgi-bin/{*path}`): set by the handler, bounded by construction.
#[derive(Clone, Debug)]
pub struct RouteLabel(pub String);

/// Request counters and latency histograms by route template (not by raw path, which would make
/// one series per appid), method and status.
///
/// `metrics::counter!` with labels builds and hashes its key on every call; credential reads are
/// the hot path, so each series is looked up once and its handles kept.
#[derive(Default)]
pub struct HttpMetrics {
    series: RwLock<HashMap<Box<str>, Vec<Series>, foldhash::fast::RandomState>>,
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
