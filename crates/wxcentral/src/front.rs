//! The service in front of the router: plain credential reads are answered before routing.
//!
//! Business servers read credentials far more often than they do anything else, and axum's
//! routing (matching, boxed route services, path extraction) costs about as much as the rest of
//! such a read. `GET /v1/apps/{appid}/{kind}` with a plain appid and one of the app kinds is
//! therefore answered here, by the same [`api::read_credential`] the route uses, with the same
//! span and metrics; every other request, including percent-encoded paths, goes to the router
//! untouched, so the two cannot disagree on anything but speed.

use crate::api;
use crate::state::AppState;
use crate::telemetry;
use axum::Router;
use axum::extract::Request;
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

impl Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future =
        Either<BoxFuture<'static, Result<Response, Infallible>>, <Router as Service<Request>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
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
                Ok(response)
            }
            .instrument(span),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
