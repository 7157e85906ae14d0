//! The service in front of the router: plain credential reads and proxied WeChat calls are
//! answered before routing.
//!
//! Business servers read credentials and call WeChat through the proxy far more often than they
//! do anything else, and axum's routing (matching, boxed route services, path extraction, the
//! middleware stack) costs about as much as the rest of a read. `GET /v1/apps/{appid}/{kind}`
//! with a plain appid and one of the app kinds is therefore answered here, by the same
//! [`api::read_credential`] the route uses, and an origin-form request under a proxy prefix that
//! is not one of the hub's own WeChat paths by the same [`dropin::proxy`] handler, each with the
//! same span, metrics and 5xx warning; every other request goes to the router untouched, so the
//! two cannot disagree on anything but speed.

use crate::api;
use crate::dropin;
use crate::http_metrics::RouteLabel;
use crate::state::AppState;
use crate::telemetry;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::Response;
use futures::future::{BoxFuture, Either};
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::Service;
use tracing::Instrument;

/// The route template the fast path stands in for, as the router and the metrics name it.
pub const CREDENTIAL_ROUTE: &str = "/v1/apps/{appid}/{kind}";
const PREFIX: &str = "/v1/apps/";

/// The router with the credential fast path in front of it.
#[derive(Clone, Debug)]
pub struct Front {
    router: Router,
    state: AppState,
}

impl Front {
    pub fn new(router: Router, state: AppState) -> Self {
        Self { router, state }
    }
}

/// `(appid, kind)` of a request the fast path answers.
fn credential_read(req: &Request) -> Option<(&str, &str)> {
    if req.method() != Method::GET {
        return None;
    }
    let (appid, kind) = req.uri().path().strip_prefix(PREFIX)?.split_once('/')?;
    let plain = |s: &str| !s.is_empty() && !s.contains(['/', '%']);
    (plain(appid) && plain(kind) && api::app_kind(appid, kind).is_ok()).then_some((appid, kind))
}

/// Whether the proxy handler is the route the router would pick for `req`: a path under one of
/// its prefixes with something after it (the router's `{*path}` needs a segment), not one of the
/// drop-in paths, and an origin-form target (anything else the router refuses as it likes).
fn proxied(req: &Request, prefixes: &[String]) -> bool {
    let uri = req.uri();
    let path = uri.path();
    uri.scheme().is_none()
        && req.method() != Method::CONNECT
        && prefixes.iter().any(|p| path.len() > p.len() && path.starts_with(p.as_str()))
        && !dropin::OWN_PATHS.contains(&path)
}

/// What the router's `TraceLayer` does with an answer: a 5xx is worth a warning.
fn warn_on_failure(response: &Response, start: Instant) {
    if response.status().is_server_error() {
        tracing::warn!(
            status = response.status().as_u16(),
            latency_ms = start.elapsed().as_millis() as u64,
            "response failed"
        );
    }
}

impl Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future =
        Either<BoxFuture<'static, Result<Response, Infallible>>, <Router as Service<Request>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if proxied(&req, self.state.proxy().prefixes()) {
            let state = self.state.clone();
            let span = telemetry::request_span(req.method(), req.uri().path());
            return Either::Left(Box::pin(
                async move {
                    let start = Instant::now();
                    let method = req.method().clone();
                    let response = dropin::proxy(State(state.clone()), req).await;
                    let route =
                        response.extensions().get::<RouteLabel>().map_or("unmatched", |l| l.0.as_str());
                    state.http_metrics().record(&method, route, response.status(), start.elapsed());
                    warn_on_failure(&response, start);
                    Ok(response)
                }
                .instrument(span),
            ));
        }
        let Some((appid, kind)) = credential_read(&req) else {
            return Either::Right(self.router.call(req));
        };
        // Where the appid ends, so the future can borrow both segments from the request.
        let split = appid.len();
        debug_assert_eq!(kind.len() + split + 1 + PREFIX.len(), req.uri().path().len());
        let state = self.state.clone();
        let span = telemetry::request_span(req.method(), req.uri().path());
        Either::Left(Box::pin(
            async move {
                let start = Instant::now();
                let rest = &req.uri().path()[PREFIX.len()..];
                let (appid, kind) = (&rest[..split], &rest[split + 1..]);
                let response = api::read_credential(&state, req.headers(), appid, kind).await;
                state.http_metrics().record(
                    &Method::GET,
                    CREDENTIAL_ROUTE,
                    response.status(),
                    start.elapsed(),
                );
                warn_on_failure(&response, start);
                Ok(response)
            }
            .instrument(span),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_origin_form_proxy_paths_bypass_the_router() {
        let prefixes = ["/cgi-bin/".to_owned(), "/wxa/".to_owned(), "/sns/".to_owned()];
        let proxied_req = |method: Method, uri: &str| {
            let req = Request::builder().method(method).uri(uri).body(axum::body::Body::empty()).unwrap();
            proxied(&req, &prefixes)
        };
        assert!(proxied_req(Method::GET, "/cgi-bin/user/info?access_token=x&openid=o"));
        assert!(proxied_req(Method::POST, "/wxa/getwxacodeunlimit?access_token=x"));
        assert!(proxied_req(Method::GET, "/sns/userinfo?access_token=x"));
        for (method, uri) in [
            (Method::GET, "/cgi-bin/token?grant_type=client_credential"),
            (Method::POST, "/cgi-bin/stable_token"),
            (Method::GET, "/cgi-bin/ticket/getticket"),
            (Method::POST, "/cgi-bin/component/api_component_token"),
            (Method::POST, "/cgi-bin/component/api_authorizer_token"),
            (Method::GET, "/sns/jscode2session"),
            (Method::GET, "/sns/oauth2/access_token"),
            (Method::GET, "/sns/oauth2/refresh_token"),
            (Method::GET, "/cgi-bin/"),
            (Method::GET, "/datacube/getweanalysisappiddailysummarytrend"),
            (Method::GET, "http://evil.example/cgi-bin/user/info"),
            (Method::CONNECT, "api.weixin.qq.com:443"),
            (Method::GET, "/v1/apps/wx1/access_token"),
        ] {
            assert!(!proxied_req(method.clone(), uri), "{method} {uri}");
        }
    }

    fn read(method: Method, path: &str) -> Option<(String, String)> {
        let req = Request::builder().method(method).uri(path).body(axum::body::Body::empty()).unwrap();
        credential_read(&req).map(|(a, k)| (a.to_owned(), k.to_owned()))
    }

    #[test]
    fn only_plain_credential_reads_take_the_fast_path() {
        let hit = |a: &str, k: &str| Some((a.to_owned(), k.to_owned()));
        assert_eq!(read(Method::GET, "/v1/apps/wx1/access_token"), hit("wx1", "access_token"));
        assert_eq!(read(Method::GET, "/v1/apps/wx1/jsapi_ticket?x=1"), hit("wx1", "jsapi_ticket"));
        assert_eq!(read(Method::GET, "/v1/apps/wx1/wx_card_ticket"), hit("wx1", "wx_card_ticket"));
        for (method, path) in [
            (Method::POST, "/v1/apps/wx1/access_token"),
            (Method::HEAD, "/v1/apps/wx1/access_token"),
            (Method::GET, "/v1/apps/wx1/access_token/refresh"),
            (Method::GET, "/v1/apps/wx1/access_token/"),
            (Method::GET, "/v1/apps/wx%31/access_token"),
            (Method::GET, "/v1/apps//access_token"),
            (Method::GET, "/v1/apps/wx1/jssdk_config"),
            (Method::GET, "/v1/apps/wx1/component_access_token"),
            (Method::GET, "/v1/apps/wx1"),
            (Method::GET, "/v1/apps"),
            (Method::GET, "/v2/apps/wx1/access_token"),
        ] {
            assert_eq!(read(method.clone(), path), None, "{method} {path}");
        }
    }
}
