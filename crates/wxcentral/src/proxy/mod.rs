//! The token-injecting forwarder in front of WeChat's API (DESIGN.md §5).
//!
//! A proxied call carries a token the hub issued (or a secret, or nothing it needs to touch);
//! the hub sets the current value in its place and forwards method, query, headers and body to
//! the configured upstream, streaming both ways. When WeChat answers a token error
//! (40001/40014/42001) for the value the hub injected, the hub reports exactly that value
//! (compare-and-refresh: many such answers at once share one refresh) and sends the call once
//! more with the new value, never a third time. Only request bodies up to
//! `proxy.retry_body_bytes` are kept for that retry; larger ones stream through once.
//!
//! Responses are inspected for a token error only when they can be one: JSON or text of at
//! most [`INSPECT_MAX`] bytes. Everything else (QR codes, media) streams through untouched,
//! under the response limit.

pub mod target;

use crate::config::Config;
use crate::workers;
use crate::wx_error::WxError;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyDataStream, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
pub use target::Target;
use wechat_proto::Secret;
use wechat_proto::errcode::{ErrClass, ErrCode};
use wxcentral_core::{CredentialKind, Engine};

/// The largest response read whole to look for a token error.
pub const INSPECT_MAX: usize = 64 << 10;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the hub puts into a forwarded request.
#[derive(Debug)]
pub enum Inject {
    /// The current value of `kind` of `appid` as the query parameter `param`; token errors
    /// are reported and retried once.
    Token { appid: String, kind: CredentialKind, param: &'static str },
    /// The app's real secret as the `secret` parameter (the caller showed a client key).
    Secret(Secret),
    /// Forwarded as it came (the token in it is a user's, not the app's).
    Nothing,
}

/// What a forwarded request carries.
type OutBody = UnsyncBoxBody<Bytes, BoxError>;
type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, OutBody>;

/// The forwarder: pooled HTTP clients with their own timeout, and the limits. The client is
/// hyper's own (with rustls for https): a proxied call is mostly HTTP, and a higher-level
/// client's per-request URL parsing and bookkeeping cost more than the rest of the hub's work.
/// Each connection worker has a client of its own (and everything else shares the first), so
/// an upstream connection is driven on the worker whose callers use it (see `workers`).
pub struct Proxy {
    http: Vec<HttpClient>,
    timeout: Duration,
    base: String,
    /// `base` taken apart once, so a call only parses its own path and query.
    scheme: axum::http::uri::Scheme,
    authority: axum::http::uri::Authority,
    base_path: String,
    /// The upstream's `Host` header, made once (the client would format it on every call).
    host: HeaderValue,
    prefixes: Vec<String>,
    max_request: u64,
    max_response: u64,
    retry_body: u64,
}

/// A request body as the forwarder holds it.
enum Prepared {
    /// Small enough to send again.
    Whole(Bytes),
    /// Streams through once; the flag tells whether it was cut off at the request limit.
    Streaming(OutBody, Arc<AtomicBool>),
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("base", &self.base)
            .field("prefixes", &self.prefixes)
            .finish_non_exhaustive()
    }
}

fn whole(b: Bytes) -> OutBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

/// Why the proxy's client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("proxy client: {0}")]
pub struct ProxyInitError(String);

impl Proxy {
    pub fn new(config: &Config) -> Result<Self, ProxyInitError> {
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(config.upstream.timeout_ms)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        // Redirects are never followed (hyper's client does not): they go back to the caller.
        let http = (0..=workers::default_count())
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_max_idle_per_host(256)
                    .build(https.clone())
            })
            .collect();
        let base = config.upstream.base_url.trim_end_matches('/').to_owned();
        let uri = base.parse::<Uri>().map_err(|e| ProxyInitError(format!("upstream.base_url: {e}")))?;
        let parts = uri.into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(ProxyInitError("upstream.base_url must be an absolute http(s) URL".into()));
        };
        let base_path =
            parts.path_and_query.as_ref().map_or("", |p| p.path()).trim_end_matches('/').to_owned();
        let default_port = if scheme == axum::http::uri::Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        let host = HeaderValue::from_str(&host)
            .map_err(|_| ProxyInitError("upstream.base_url: the host is not a header value".into()))?;
        Ok(Self {
            http,
            timeout: Duration::from_millis(config.upstream.proxy_timeout_ms),
            base,
            scheme,
            authority,
            base_path,
            host,
            prefixes: config.proxy.prefixes.clone(),
            max_request: config.proxy.max_request_bytes,
            max_response: config.proxy.max_response_bytes,
            retry_body: config.proxy.retry_body_bytes,
        })
    }

    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// The calling worker's client; the first one off the workers.
    fn client(&self) -> &HttpClient {
        // `http` holds one client per worker and one more, so the divisor is never zero.
        &self.http[workers::index().map_or(0, |i| 1 + i % (self.http.len() - 1))]
    }

    /// Forwards one call to `target` with `inject` applied; see the module doc.
    pub async fn forward(
        &self,
        engine: &Engine,
        method: Method,
        headers: HeaderMap,
        body: Body,
        target: &Target,
        inject: Inject,
    ) -> Result<Response<Body>, WxError> {
        let body = self.prepare(&headers, body).await?;
        let headers = request_headers(headers, matches!(body, Prepared::Streaming(..)));
        let (query, injected) = match &inject {
            Inject::Token { appid, kind, param } => {
                let cred = engine.get(appid, *kind).await?;
                (Some(target::set_param(target.query.as_deref(), param, cred.value.expose())), Some(cred))
            }
            Inject::Secret(secret) => {
                (Some(target::set_param(target.query.as_deref(), "secret", secret.expose())), None)
            }
            Inject::Nothing => (target.query.clone(), None),
        };
        let (retry_body, first_body, tripped) = match body {
            Prepared::Whole(b) => (Some(b.clone()), whole(b), None),
            Prepared::Streaming(b, t) => (None, b, Some(t)),
        };
        // Only a call that may be sent again keeps a copy of its headers.
        let retry_headers = (injected.is_some() && retry_body.is_some()).then(|| headers.clone());
        // One deadline per attempt covers the answer's head and, when it is read whole, its body.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let uri = self.upstream_uri(target, query.as_deref())?;
        let first = self.send(&method, uri, headers, first_body, tripped.as_deref(), deadline).await?;
        let Some(cred) = injected else { return self.answer(first).await };
        let Inject::Token { appid, kind, param } = &inject else { return self.answer(first).await };
        let (first, errcode) = self.inspect(first, deadline).await?;
        if !errcode.is_some_and(|c| ErrCode(c).class() == ErrClass::TokenInvalid) {
            return Ok(first);
        }
        // WeChat refused the value the hub injected: report exactly that one, so concurrent
        // failures share one refresh and a value someone already replaced costs nothing.
        let fresh = match engine.report_invalid(appid, *kind, cred.value.expose()).await {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::warn!(appid, %kind, error = %e, "token error from WeChat; no new value to retry with");
                return Ok(first);
            }
        };
        let (Some(body), Some(headers)) = (retry_body, retry_headers) else {
            tracing::debug!(appid, "token error on a streamed body: reported, not retried");
            return Ok(first);
        };
        tracing::info!(appid, %kind, errcode, "token error from WeChat: refreshed, retrying once");
        let query = target::set_param(target.query.as_deref(), param, fresh.value.expose());
        let deadline = tokio::time::Instant::now() + self.timeout;
        let uri = self.upstream_uri(target, Some(&query))?;
        let second = self.send(&method, uri, headers, whole(body), None, deadline).await?;
        self.answer(second).await
    }

    /// The body limit and the retry bound applied: bodies up to the bound are read whole,
    /// larger ones stream on, counted against the request limit.
    async fn prepare(&self, headers: &HeaderMap, body: Body) -> Result<Prepared, WxError> {
        if content_length(headers).is_some_and(|n| n > self.max_request) {
            return Err(WxError::RequestTooLarge(self.max_request));
        }
        let mut stream = body.into_data_stream();
        let mut head = BytesMut::new();
        loop {
            match stream.next().await {
                None => return Ok(Prepared::Whole(head.freeze())),
                Some(Err(e)) => return Err(WxError::BadBody(format!("request body: {e}"))),
                Some(Ok(chunk)) => {
                    head.extend_from_slice(&chunk);
                    if head.len() as u64 > self.retry_body {
                        break;
                    }
                }
            }
        }
        let tripped = Arc::new(AtomicBool::new(false));
        let rest = TryStreamExt::map_err(stream, BoxError::from);
        let all = futures::stream::once(async move { Ok::<Bytes, BoxError>(head.freeze()) }).chain(rest);
        let counted = limited(all, self.max_request, Arc::clone(&tripped), "request body over the limit");
        Ok(Prepared::Streaming(StreamBody::new(counted.map_ok(Frame::data)).boxed_unsync(), tripped))
    }

    /// Where `target` with `query` is on the upstream.
    fn upstream_uri(&self, target: &Target, query: Option<&str>) -> Result<Uri, WxError> {
        let mut pq =
            String::with_capacity(self.base_path.len() + target.path.len() + query.map_or(0, str::len) + 1);
        pq.push_str(&self.base_path);
        pq.push_str(&target.path);
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            pq.push('?');
            pq.push_str(q);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| WxError::Refused("the path and query do not form a URL"))
    }

    async fn send(
        &self,
        method: &Method,
        uri: Uri,
        headers: HeaderMap,
        body: OutBody,
        tripped: Option<&AtomicBool>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<Incoming>, WxError> {
        let mut req = Request::new(body);
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        req.headers_mut().insert(header::HOST, self.host.clone());
        match tokio::time::timeout_at(deadline, self.client().request(req)).await {
            Err(_) => Err(WxError::UpstreamTimeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) if tripped.is_some_and(|t| t.load(Ordering::Acquire)) => {
                Err(WxError::RequestTooLarge(self.max_request))
            }
            // The error names no URL (its query holds the token or the secret).
            Ok(Err(e)) => Err(WxError::UpstreamUnreachable(error_chain(&e))),
        }
    }

    /// Reads a response whole when it may be a token error, returning it (ready to answer)
    /// with the errcode it carries; the reading ends at the attempt's `deadline`.
    async fn inspect(
        &self,
        resp: Response<Incoming>,
        deadline: tokio::time::Instant,
    ) -> Result<(Response<Body>, Option<i64>), WxError> {
        let inspectable =
            resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| {
                let t = t.as_bytes();
                t.windows(4).any(|w| w.eq_ignore_ascii_case(b"json"))
                    || t.get(..5).is_some_and(|p| p.eq_ignore_ascii_case(b"text/"))
            }) && content_length(resp.headers()).is_none_or(|n| n <= INSPECT_MAX as u64);
        if !inspectable {
            return self.answer(resp).await.map(|r| (r, None));
        }
        let (parts, mut body) = resp.into_parts();
        let headers = end_to_end(parts.headers);
        let mut head = Head::default();
        let read = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| WxError::UpstreamUnreachable(error_chain(&e)))?;
                if let Ok(data) = frame.into_data() {
                    head.push(data);
                    if head.len() > INSPECT_MAX {
                        return Ok(false);
                    }
                }
            }
            Ok::<_, WxError>(true)
        };
        let complete =
            tokio::time::timeout_at(deadline, read).await.map_err(|_| WxError::UpstreamTimeout)??;
        let head = head.into_bytes();
        if !complete {
            // Longer than any error: the rest streams on behind what was read.
            let rest = TryStreamExt::map_err(BodyDataStream::new(body), BoxError::from);
            let all = futures::stream::once(async move { Ok::<Bytes, BoxError>(head) }).chain(rest);
            return Ok((
                self.respond(parts.status, headers, Body::from_stream(self.limit_response(all))),
                None,
            ));
        }
        let errcode = serde_json::from_slice::<Probe>(&head).ok().and_then(|p| p.errcode);
        Ok((self.respond(parts.status, headers, Body::from(head)), errcode))
    }

    /// The upstream's answer as the caller gets it: status and end-to-end headers, the body
    /// streamed under the response limit.
    async fn answer(&self, resp: Response<Incoming>) -> Result<Response<Body>, WxError> {
        if content_length(resp.headers()).is_some_and(|n| n > self.max_response) {
            return Err(WxError::ResponseTooLarge(self.max_response));
        }
        let (parts, body) = resp.into_parts();
        let headers = end_to_end(parts.headers);
        let max = usize::try_from(self.max_response).unwrap_or(usize::MAX);
        Ok(self.respond(parts.status, headers, Body::new(Limited::new(body, max))))
    }

    fn limit_response(
        &self,
        s: impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static,
    ) -> impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static {
        limited(s, self.max_response, Arc::new(AtomicBool::new(false)), "response body over the limit")
    }

    fn respond(&self, status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
        let mut r = Response::new(body);
        *r.status_mut() = status;
        *r.headers_mut() = headers;
        r
    }
}

/// The start of a response body as read: a body that came in one frame (most answers do) is
/// kept as that frame, not copied.
#[derive(Default)]
enum Head {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Head {
    fn push(&mut self, data: Bytes) {
        *self = match std::mem::take(self) {
            Head::Empty => Head::One(data),
            Head::One(first) => {
                let mut all = BytesMut::with_capacity(first.len() + data.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&data);
                Head::Many(all)
            }
            Head::Many(mut all) => {
                all.extend_from_slice(&data);
                Head::Many(all)
            }
        };
    }

    fn len(&self) -> usize {
        match self {
            Head::Empty => 0,
            Head::One(b) => b.len(),
            Head::Many(b) => b.len(),
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Head::Empty => Bytes::new(),
            Head::One(b) => b,
            Head::Many(b) => b.freeze(),
        }
    }
}

#[derive(serde::Deserialize)]
struct Probe {
    errcode: Option<i64>,
}

/// `s`, ended with an error once more than `max` bytes went through (`tripped` tells).
fn limited(
    s: impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static,
    max: u64,
    tripped: Arc<AtomicBool>,
    what: &'static str,
) -> impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static {
    let mut total = 0u64;
    s.map(move |chunk| {
        let chunk = chunk?;
        total += chunk.len() as u64;
        if total > max {
            tripped.store(true, Ordering::Release);
            return Err(BoxError::from(what));
        }
        Ok(chunk)
    })
}

/// An error and its sources in one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Hop-by-hop headers and those the `Connection` header names, dropped (in place: the maps
/// are the request's and the response's own, so nothing is copied).
fn end_to_end(mut headers: HeaderMap) -> HeaderMap {
    // Most messages carry none of them: one look at the names, no hashing per header.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k) || k == header::UPGRADE) {
        return headers;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| HeaderName::from_bytes(s.trim().to_ascii_lowercase().as_bytes()).ok())
        .collect();
    for h in HOP_BY_HOP.iter().chain([&header::UPGRADE]).chain(&named) {
        headers.remove(h);
    }
    headers
}

/// The caller's headers as sent upstream: no hop-by-hop headers, no `Host` (the upstream's
/// own is set), no `Authorization` (a client key is the hub's business, not WeChat's), no
/// `Accept-Encoding` (token errors must be readable). `Content-Length` is kept only for a
/// streamed body; a whole one gets its own.
fn request_headers(headers: HeaderMap, streaming: bool) -> HeaderMap {
    const PRIVATE: [HeaderName; 4] =
        [header::HOST, header::AUTHORIZATION, header::ACCEPT_ENCODING, header::CONTENT_LENGTH];
    let private = if streaming { &PRIVATE[..3] } else { &PRIVATE[..] };
    let mut out = end_to_end(headers);
    // A scan of the few names a call has is cheaper than hashing each name removed.
    while let Some(name) = out.keys().find(|k| private.contains(k)).cloned() {
        out.remove(name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_private_headers_stay_behind() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("authorization", "Bearer client-key"),
            ("host", "hub.internal"),
            ("content-type", "application/json"),
            ("content-length", "10"),
            ("x-custom", "kept"),
        ] {
            h.insert(HeaderName::from_static(k), v.parse().unwrap());
        }
        let out = request_headers(h.clone(), false);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(out.contains_key("content-type") && out.contains_key("x-custom"));
        assert!(request_headers(h, true).contains_key("content-length"));
    }
}
