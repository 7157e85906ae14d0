//! HTTP: the WeChat paths (every one counted, faults applied first) and the `/__sim` control API.

use crate::clock::Clock;
use crate::config::{SimComponent, SimConfig};
use crate::errmsg;
use crate::push::{self, PushOutcome};
use crate::state::{AuthCode, FaultAction, FaultSpec, PreAuthCode, State, new_refresh_token, random_string};
use crate::wechat::{Effect, Reply, Req, func_info_json};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State as AxState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use wechat_proto::Secret;
use wechat_proto::api::{AuthorizationNotice, ComponentNotification};

/// Most authorizers one `POST /__sim/authorizers` creates: enough for a load test, bounded so a
/// typo cannot exhaust memory.
const MAX_BULK_AUTHORIZERS: u64 = 100_000;
/// An authorization code lives an hour, as WeChat's.
const AUTH_CODE_TTL_SECS: u64 = 3600;

/// Value of the epoch channel that means "shutting down"; any other change means "reset".
const SHUTDOWN: u64 = u64::MAX;
const MAX_BODY: usize = 2 * 1024 * 1024;
/// Verify tickets older than this are forgotten (they answer 61006 instead of 61005 then).
const FORGET_TICKETS_MS: u64 = 7 * 86_400_000;

/// The simulator's shared state: what the router serves and the push tasks write to.
#[derive(Clone)]
pub struct Simulator {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) clock: Clock,
    client: reqwest::Client,
    /// Bumped by reset (hung requests return, push loops push a fresh ticket); set to
    /// [`SHUTDOWN`] when stopping.
    pub(crate) epoch: watch::Sender<u64>,
    /// WeChat calls being answered right now, and the most there were at once since start or
    /// reset: how a client's concurrency bound is checked from outside. Apart from `state` so a
    /// reset never loses count of calls still in flight.
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

/// Counts one WeChat call in flight until dropped (answered, or cancelled by a hang-up).
struct InFlight(Simulator);

impl InFlight {
    fn enter(sim: &Simulator) -> Self {
        let now = sim.shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        sim.shared.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(sim.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator").finish_non_exhaustive()
    }
}

impl Simulator {
    pub fn new(config: SimConfig) -> Result<Self, crate::SimError> {
        config.validate()?;
        let client = reqwest::Client::builder()
            .timeout(push::PUSH_TIMEOUT)
            .build()
            .map_err(|e| crate::SimError::Config(format!("http client: {e}")))?;
        Ok(Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new(config)),
                clock: Clock::new(),
                client,
                epoch: watch::Sender::new(0),
                in_flight: AtomicU64::new(0),
                peak_in_flight: AtomicU64::new(0),
            }),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    pub fn calls(&self, appid: &str, endpoint: &str) -> u64 {
        self.lock().calls(appid, endpoint)
    }

    pub fn total_calls(&self, endpoint: &str) -> u64 {
        self.lock().total_calls(endpoint)
    }

    /// The most WeChat calls that were in flight at once since start or the last reset.
    pub fn peak_in_flight(&self) -> u64 {
        self.shared.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Clears credentials, codes, counters, faults and quotas (the clock keeps its offset, so time
    /// never runs backwards for the code under test); push loops push a new ticket at once.
    pub fn reset(&self) {
        self.lock().reset();
        self.shared.peak_in_flight.store(self.shared.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
        self.shared.epoch.send_if_modified(|e| {
            if *e == SHUTDOWN {
                return false;
            }
            *e = (*e + 1) % SHUTDOWN;
            true
        });
    }

    /// Releases hung requests and ends the push loops for good. [`crate::SimHandle::shutdown`]
    /// calls it; call it yourself when serving [`router`] on your own server.
    pub fn stop(&self) {
        self.shared.epoch.send_replace(SHUTDOWN);
    }

    /// Resolves once [`Simulator::stop`] has been called: the graceful-shutdown future to give
    /// `axum::serve` when serving [`router`] yourself.
    pub async fn stopped(&self) {
        let mut rx = self.shared.epoch.subscribe();
        while *rx.borrow_and_update() != SHUTDOWN {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Adds a fault, as `POST /__sim/faults` does; returns its id.
    pub fn add_fault(&self, spec: FaultSpec) -> Result<u64, String> {
        spec.validate()?;
        Ok(self.lock().add_fault(spec))
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Starts one task per component with a `push_url`: a verify ticket now, then every
    /// `push_interval_secs`, and at once after a reset. They end at shutdown.
    pub fn spawn_pushers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let comps: Vec<SimComponent> =
            self.lock().config.components.iter().filter(|c| c.push_url.is_some()).cloned().collect();
        comps
            .into_iter()
            .map(|c| {
                let sim = self.clone();
                tokio::spawn(async move { sim.push_loop(c).await })
            })
            .collect()
    }

    async fn push_loop(self, comp: SimComponent) {
        let mut epoch = self.shared.epoch.subscribe();
        let interval = Duration::from_secs(comp.push_interval_secs);
        loop {
            if *epoch.borrow_and_update() == SHUTDOWN {
                return;
            }
            if let Err(e) = self.push_ticket(&comp.appid).await {
                tracing::warn!(component = comp.appid, error = e, "verify ticket push skipped");
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                changed = epoch.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Issues a new verify ticket and pushes it; returns the ticket and how the push went
    /// (`None` when the component has no `push_url`).
    pub async fn push_ticket(&self, component_appid: &str) -> Result<(String, Option<PushOutcome>), String> {
        let now = self.shared.clock.now_ms();
        let ticket = format!("ticket@@@{}", random_string(86));
        let comp = {
            let mut st = self.lock();
            let comp = st.component(component_appid).cloned().ok_or("unknown component_appid")?;
            let cs = st.components.entry(component_appid.to_owned()).or_default();
            cs.verify_tickets.retain(|_, at| now.saturating_sub(*at) < FORGET_TICKETS_MS);
            // Valid before it is sent, so a receiver may use it while handling the push.
            cs.verify_tickets.insert(ticket.clone(), now);
            comp
        };
        let n = ComponentNotification::VerifyTicket {
            component_appid: comp.appid.clone(),
            create_time: (now / 1000) as i64,
            ticket: Secret::new(ticket.clone()),
        };
        let outcome = self.push(&comp, &n).await;
        Ok((ticket, outcome))
    }

    /// Delivers `n` to the component's `push_url` (`None` without one) and returns how the first
    /// attempt went. When that attempt is not acknowledged, the retries (`push_retries`,
    /// `push_retry_interval_ms` apart, same plaintext) run in a task of their own, so a control
    /// call or WeChat answer is never held up by a dead receiver. A reset or shutdown ends them.
    async fn push(&self, comp: &SimComponent, n: &ComponentNotification) -> Option<PushOutcome> {
        comp.push_url.as_ref()?;
        let xml = n.to_xml();
        let info = push::info_type(n).to_owned();
        let epoch = *self.shared.epoch.borrow();
        let push_id = {
            let mut st = self.lock();
            let id = st.next_push_id;
            st.next_push_id += 1;
            id
        };
        let mut first = self.attempt(comp, &xml, &info, push_id, 1).await?;
        if !first.ok && comp.push_retries > 0 {
            first.will_retry = true;
            let (sim, comp) = (self.clone(), comp.clone());
            tokio::spawn(async move { sim.retry_push(comp, xml, info, push_id, epoch).await });
        }
        Some(first)
    }

    async fn attempt(
        &self,
        comp: &SimComponent,
        xml: &str,
        info: &str,
        push_id: u64,
        number: u32,
    ) -> Option<PushOutcome> {
        let now_secs = self.shared.clock.now_secs();
        let outcome = push::send(&self.shared.client, comp, xml, now_secs).await?;
        let at = push::Attempt { info, push_id, number, last: number > comp.push_retries };
        push::record(&mut self.lock(), &comp.appid, at, &outcome, now_secs);
        Some(outcome)
    }

    async fn retry_push(self, comp: SimComponent, xml: String, info: String, push_id: u64, epoch: u64) {
        let mut rx = self.shared.epoch.subscribe();
        let interval = Duration::from_millis(comp.push_retry_interval_ms);
        for number in 2..=comp.push_retries.saturating_add(1) {
            if *rx.borrow_and_update() != epoch {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                // Reset forgot the push's state, shutdown ends everything: no more attempts.
                _ = rx.changed() => return,
            }
            match self.attempt(&comp, &xml, &info, push_id, number).await {
                Some(o) if !o.ok => {}
                _ => return,
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not turn every later request into a panic too.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The simulator's HTTP surface: WeChat's paths plus `/__sim/…`.
pub fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/__sim/calls", get(calls))
        .route("/__sim/faults", get(list_faults).post(add_fault).delete(clear_faults))
        .route("/__sim/push_ticket", post(push_ticket))
        .route("/__sim/authorize", post(authorize))
        .route("/__sim/unauthorize", post(unauthorize))
        .route("/__sim/update_authorize", post(update_authorize))
        .route("/__sim/authorizers", get(list_authorizers).post(bulk_authorizers))
        .route("/__sim/rotation", post(rotation))
        .route("/__sim/reset", post(reset))
        .route("/__sim/clock", get(clock).post(advance_clock))
        .route("/__sim/pushes", get(pushes))
        .route("/__sim/health", get(|| async { Json(json!({ "ok": true })) }))
        .route(
            "/__sim/{*rest}",
            any(|| async { control_error(StatusCode::NOT_FOUND, "no such control endpoint") }),
        )
        .route("/__sim/invalidate", post(invalidate))
        .route(PATH_MEDIA_UPLOAD, post(media_upload))
        .route(PATH_MEDIA_GET, get(media_get))
        .fallback(wechat)
        .with_state(sim)
}

// ---- WeChat paths --------------------------------------------------------------------------

async fn wechat(AxState(sim): AxState<Simulator>, request: Request) -> Response {
    let _in_flight = InFlight::enter(&sim);
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "127.0.0.1".to_owned(), |c| c.0.ip().to_canonical().to_string());
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query: HashMap<String, String> =
        axum::extract::Query::try_from_uri(&parts.uri).map(|q| q.0).unwrap_or_default();
    // An unreadable or oversized body is handled as an empty one: WeChat would refuse it too.
    let body = axum::body::to_bytes(body, MAX_BODY).await.unwrap_or_default();

    let (appid, fault) = {
        let mut st = sim.lock();
        let appid = st.resolve_appid(&path, &query, &body);
        st.count_call(&appid, &path);
        let fault = st.pick_fault(&path, &appid);
        (appid, fault)
    };
    tracing::debug!(path, appid, fault = ?fault, "wechat call");
    let now_secs = sim.shared.clock.now_secs();
    match fault {
        Some(FaultAction::Errcode(code)) => {
            return wx_json(StatusCode::OK, &errmsg::body(code, now_secs, &ip));
        }
        Some(FaultAction::Status(status)) => return status_page(status),
        Some(FaultAction::Malformed) => {
            return wx_raw(StatusCode::OK, "{\"errcode\":0,\"errmsg\":\"ok\",\"access_token\":\"");
        }
        Some(FaultAction::Timeout) => {
            wait_for_epoch_change(&sim, None).await;
            return status_page(504);
        }
        Some(FaultAction::Delay(ms)) => wait_for_epoch_change(&sim, Some(Duration::from_millis(ms))).await,
        None => {}
    }

    let now = sim.shared.clock.now_ms();
    let reply = sim.lock().handle(&Req { path: &path, query: &query, body: &body, now });
    match reply {
        Reply::Ok(v) => wx_json(StatusCode::OK, &v),
        Reply::OkThen(v, Effect::PushTicket(component_appid)) => {
            // WeChat answers first and pushes right after.
            let sim = sim.clone();
            tokio::spawn(async move {
                if let Err(e) = sim.push_ticket(&component_appid).await {
                    tracing::warn!(component = component_appid, error = e, "verify ticket push skipped");
                }
            });
            wx_json(StatusCode::OK, &v)
        }
        Reply::Err(code) => wx_json(StatusCode::OK, &errmsg::body(code, now / 1000, &ip)),
        Reply::Png(bytes) => {
            ([(header::CONTENT_TYPE, HeaderValue::from_static("image/png"))], bytes).into_response()
        }
        Reply::NotFound => wx_json(StatusCode::NOT_FOUND, &errmsg::body(48001, now / 1000, &ip)),
    }
}

/// `POST /cgi-bin/media/upload`.
pub const PATH_MEDIA_UPLOAD: &str = "/cgi-bin/media/upload";
/// `GET /cgi-bin/media/get`.
pub const PATH_MEDIA_GET: &str = "/cgi-bin/media/get";
/// Media bodies pass in pieces this large.
const MEDIA_CHUNK: usize = 64 << 10;
/// The largest upload accepted (WeChat's limits are lower; proxy tests need room).
const MEDIA_MAX: u64 = 1 << 30;

/// The byte at `i` of every generated media body: the download of `m<len>_…` is `len` of these.
pub fn media_byte(i: u64) -> u8 {
    ((i.wrapping_mul(31).wrapping_add(7)) % 251) as u8
}

/// Checks the query's token for a media call, counting the call as every WeChat call is.
fn media_token(sim: &Simulator, path: &str, query: &HashMap<String, String>) -> Result<String, i64> {
    let now = sim.shared.clock.now_ms();
    let mut st = sim.lock();
    let appid = st.resolve_appid(path, query, &[]);
    st.count_call(&appid, path);
    st.check_token(query.get("access_token").map(String::as_str), now).map(|r| r.appid.clone())
}

/// `POST /cgi-bin/media/upload?access_token=…&type=…`: the body is read as it streams (never
/// held whole) and its length and SHA-256 named in the `media_id`, so a download of that id
/// and a test can check what arrived.
async fn media_upload(AxState(sim): AxState<Simulator>, request: Request) -> Response {
    use futures::StreamExt;
    use sha2::Digest;
    let _in_flight = InFlight::enter(&sim);
    let (parts, body) = request.into_parts();
    let query: HashMap<String, String> =
        axum::extract::Query::try_from_uri(&parts.uri).map(|q| q.0).unwrap_or_default();
    let now = sim.shared.clock.now_ms();
    if let Err(code) = media_token(&sim, PATH_MEDIA_UPLOAD, &query) {
        return wx_json(StatusCode::OK, &errmsg::body(code, now / 1000, "127.0.0.1"));
    }
    let kind = query.get("type").cloned().unwrap_or_default();
    if !["image", "voice", "video", "thumb"].contains(&kind.as_str()) {
        return wx_json(StatusCode::OK, &errmsg::body(40004, now / 1000, "127.0.0.1"));
    }
    let mut stream = body.into_data_stream();
    let (mut len, mut hash) = (0u64, sha2::Sha256::new());
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { return status_page(400) };
        len += chunk.len() as u64;
        if len > MEDIA_MAX {
            return wx_json(StatusCode::OK, &errmsg::body(40006, now / 1000, "127.0.0.1"));
        }
        hash.update(&chunk);
    }
    if len == 0 {
        return wx_json(StatusCode::OK, &errmsg::body(41005, now / 1000, "127.0.0.1"));
    }
    let digest = hex::encode(hash.finalize());
    let media_id = format!("m{len}_{digest}");
    wx_json(StatusCode::OK, &json!({ "type": kind, "media_id": media_id, "created_at": now / 1000 }))
}

/// `GET /cgi-bin/media/get?access_token=…&media_id=m<len>_…`: `len` generated bytes
/// ([`media_byte`]), streamed in pieces.
async fn media_get(AxState(sim): AxState<Simulator>, request: Request) -> Response {
    let _in_flight = InFlight::enter(&sim);
    let query: HashMap<String, String> =
        axum::extract::Query::try_from_uri(request.uri()).map(|q| q.0).unwrap_or_default();
    let now = sim.shared.clock.now_ms();
    if let Err(code) = media_token(&sim, PATH_MEDIA_GET, &query) {
        return wx_json(StatusCode::OK, &errmsg::body(code, now / 1000, "127.0.0.1"));
    }
    let len = query
        .get("media_id")
        .and_then(|m| m.strip_prefix('m'))
        .and_then(|m| m.split_once('_'))
        .and_then(|(n, _)| n.parse::<u64>().ok())
        .filter(|n| *n <= MEDIA_MAX);
    let Some(len) = len else {
        return wx_json(StatusCode::OK, &errmsg::body(40007, now / 1000, "127.0.0.1"));
    };
    let chunks = futures::stream::iter((0..len).step_by(MEDIA_CHUNK).map(move |start| {
        let end = (start + MEDIA_CHUNK as u64).min(len);
        Ok::<Bytes, std::io::Error>((start..end).map(media_byte).collect::<Vec<u8>>().into())
    }));
    let mut r = Response::new(Body::from_stream(chunks));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"media.bin\""));
    if let Ok(v) = HeaderValue::from_str(&len.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    r
}

/// Sleeps `limit` (forever when `None`), cut short by a reset or shutdown.
async fn wait_for_epoch_change(sim: &Simulator, limit: Option<Duration>) {
    let mut rx = sim.shared.epoch.subscribe();
    if *rx.borrow_and_update() == SHUTDOWN {
        return;
    }
    match limit {
        Some(d) => {
            tokio::select! {
                () = tokio::time::sleep(d) => {}
                _ = rx.changed() => {}
            }
        }
        None => {
            let _ = rx.changed().await;
        }
    }
}

fn wx_json(status: StatusCode, v: &Value) -> Response {
    wx_raw(status, v.to_string())
}

fn wx_raw(status: StatusCode, body: impl Into<Body>) -> Response {
    // WeChat's own content type, parameter spelling included.
    let mut r = (status, body.into()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; encoding=utf-8"));
    r
}

/// What a gateway in front of WeChat answers with a bare status.
fn status_page(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = code.canonical_reason().unwrap_or("Error");
    let html = format!(
        "<html>\r\n<head><title>{s} {reason}</title></head>\r\n<body>\r\n<center><h1>{s} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
        s = code.as_u16()
    );
    (code, [(header::CONTENT_TYPE, HeaderValue::from_static("text/html"))], html).into_response()
}

// ---- control API ---------------------------------------------------------------------------

use axum::Json;

fn control_error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "ok": false, "error": msg.into() }))).into_response()
}

/// Control bodies are parsed by hand so that a bad one gets a JSON error, not axum's text.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("bad request body: {e}"))
}

fn outcome_json(outcome: Option<&PushOutcome>) -> Value {
    match outcome {
        None => json!({ "sent": false }),
        Some(o) => json!({
            "sent": true, "ok": o.ok, "status": o.status, "body": o.body, "error": o.error,
            "will_retry": o.will_retry,
        }),
    }
}

async fn calls(AxState(sim): AxState<Simulator>) -> Response {
    let st = sim.lock();
    let calls: Vec<Value> = st
        .calls
        .iter()
        .map(|((appid, endpoint), count)| json!({ "appid": appid, "endpoint": endpoint, "count": count }))
        .collect();
    let (ok, failed, retried, given_up) = st.components.values().fold((0, 0, 0, 0), |(o, f, r, g), c| {
        (o + c.pushes_ok, f + c.pushes_failed, r + c.pushes_retried, g + c.pushes_given_up)
    });
    let peak = sim.peak_in_flight();
    drop(st);
    Json(json!({
        "calls": calls, "pushes_ok": ok, "pushes_failed": failed, "pushes_retried": retried,
        "pushes_given_up": given_up, "peak_in_flight": peak,
    }))
    .into_response()
}

async fn pushes(AxState(sim): AxState<Simulator>) -> Response {
    let st = sim.lock();
    let comps: Vec<Value> = st
        .config
        .components
        .iter()
        .map(|c| {
            let cs = st.components.get(&c.appid);
            json!({
                "component_appid": c.appid,
                "push_url": c.push_url,
                "pushes_ok": cs.map_or(0, |s| s.pushes_ok),
                "pushes_failed": cs.map_or(0, |s| s.pushes_failed),
                "pushes_retried": cs.map_or(0, |s| s.pushes_retried),
                "pushes_given_up": cs.map_or(0, |s| s.pushes_given_up),
                "recent": cs.map(|s| s.recent_pushes.clone()).unwrap_or_default(),
            })
        })
        .collect();
    Json(json!({ "components": comps })).into_response()
}

async fn list_faults(AxState(sim): AxState<Simulator>) -> Response {
    Json(json!({ "faults": sim.lock().faults })).into_response()
}

async fn add_fault(AxState(sim): AxState<Simulator>, body: Bytes) -> Response {
    let spec: FaultSpec = match parse(&body) {
        Ok(s) => s,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    match sim.add_fault(spec) {
        Ok(id) => Json(json!({ "ok": true, "id": id })).into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn clear_faults(AxState(sim): AxState<Simulator>) -> Response {
    sim.clear_faults();
    Json(json!({ "ok": true })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateBody {
    appid: String,
}

/// `POST /__sim/invalidate {"appid"}`: every token of the app stops working now.
async fn invalidate(AxState(sim): AxState<Simulator>, body: Bytes) -> Response {
    let b: InvalidateBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    let now = sim.shared.clock.now_ms();
    let killed = sim.lock().invalidate_app(&b.appid, now);
    Json(json!({ "ok": true, "appid": b.appid, "invalidated": killed })).into_response()
}

async fn reset(AxState(sim): AxState<Simulator>) -> Response {
    sim.reset();
    Json(json!({ "ok": true })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    advance_secs: u64,
}

fn clock_json(sim: &Simulator) -> Response {
    let c = &sim.shared.clock;
    Json(json!({ "ok": true, "now": c.now_secs(), "offset_secs": c.offset_secs() })).into_response()
}

async fn clock(AxState(sim): AxState<Simulator>) -> Response {
    clock_json(&sim)
}

async fn advance_clock(AxState(sim): AxState<Simulator>, body: Bytes) -> Response {
    let b: ClockBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    sim.shared.clock.advance_secs(b.advance_secs);
    clock_json(&sim)
}

#[derive(Deserialize)]
struct PushTicketBody {
    component_appid: String,
}

async fn push_ticket(AxState(sim): AxState<Simulator>, body: Bytes) -> Response {
    let b: PushTicketBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    match sim.push_ticket(&b.component_appid).await {
        Err(e) => control_error(StatusCode::NOT_FOUND, e),
        Ok((ticket, outcome)) => Json(json!({
            // A component without push_url has no other way to learn its ticket.
            "ok": outcome.as_ref().is_none_or(|o| o.ok),
            "ticket": ticket,
            "push": outcome_json(outcome.as_ref()),
        }))
        .into_response(),
    }
}

#[derive(Deserialize)]
struct AuthorizeBody {
    component_appid: String,
    pre_auth_code: String,
    authorizer_appid: String,
    #[serde(default)]
    redirect_uri: Option<String>,
}

/// What the merchant's consent in the browser does: spends the pre-auth code, issues an
/// authorization code, and pushes `authorized`.
async fn authorize(AxState(sim): AxState<Simulator>, body: Bytes) -> Response {
    let b: AuthorizeBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    let now = sim.shared.clock.now_ms();
    let auth_code = format!("queryauthcode@@@{}", random_string(86));
    let comp = {
        let mut st = sim.lock();
        let Some(comp) = st.component(&b.component_appid).cloned() else {
            return control_error(StatusCode::NOT_FOUND, "unknown component_appid");
        };
        if b.authorizer_appid.is_empty() {
            return control_error(StatusCode::BAD_REQUEST, "authorizer_appid must not be empty");
        }
        match st.pre_auth_codes.get_mut(&b.pre_auth_code) {
            Some(p) if p.component_appid != b.component_appid => {
                return control_error(StatusCode::BAD_REQUEST, "pre_auth_code belongs to another component");
            }
            Some(PreAuthCode { used: true, .. }) => {
                return control_error(StatusCode::BAD_REQUEST, "pre_auth_code already used");
            }
            Some(p) if p.expires_at <= now => {
                return control_error(StatusCode::BAD_REQUEST, "pre_auth_code expired");
            }
            Some(p) => p.used = true,
            None => return control_error(StatusCode::BAD_REQUEST, "unknown pre_auth_code"),
        }
        // Re-consent while authorized keeps the refresh token.
        st.grant(&b.component_appid, &b.authorizer_appid, None, now);
        insert_auth_code(&mut st, &auth_code, &b.component_appid, &b.authorizer_appid, now);
        comp
    };
    let n = ComponentNotification::Authorized(AuthorizationNotice {
        component_appid: comp.appid.clone(),
        create_time: (now / 1000) as i64,
        authorizer_appid: b.authorizer_appid.clone(),
        authorization_code: Secret::new(auth_code.clone()),
        authorization_code_expired_time: (now / 1000 + AUTH_CODE_TTL_SECS) as i64,
        pre_auth_code: Some(Secret::new(b.pre_auth_code.clone())),
    });
    let outcome = sim.push(&comp, &n).await;
    let redirect = match b.redirect_uri.as_deref() {
        None | Some("") => String::new(),
        Some(uri) => {
            let sep = if uri.contains('?') { '&' } else { '?' };
            format!("{uri}{sep}auth_code={}&expires_in=3600", urlencode(&auth_code))
        }
    };
    Json(json!({
        "ok": true,
        "auth_code": auth_code,
        "expires_in": 3600,
        "redirect_uri": redirect,
        "push": outcome_json(outcome.as_ref()),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct UnauthorizeBody {
    component_appid: String,
    authorizer_appid: String,
}

/// The merchant revokes the authorization: its tokens stop at once, its refresh token answers
/// 61023 from now on, and the component is told with an `unauthorized` push.
async fn unauthorize(AxState(sim): AxState<Simulator>, body: Bytes) -> Response {
    let b: UnauthorizeBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    let now = sim.shared.clock.now_ms();
    let comp = {
        let mut st = sim.lock();
        let Some(comp) = st.component(&b.component_appid).cloned() else {
            return control_error(StatusCode::NOT_FOUND, "unknown component_appid");
        };
        let key = (b.component_appid.clone(), b.authorizer_appid.clone());
        if !st.authorizers.contains_key(&key) {
            return control_error(StatusCode::NOT_FOUND, "unknown authorizer for this component");
        }
        if !st.revoke(&key, now) {
            return control_error(StatusCode::BAD_REQUEST, "authorizer already unauthorized");
        }
        comp
    };
    let n = ComponentNotification::Unauthorized {
        component_appid: comp.appid.clone(),
        create_time: (now / 1000) as i64,
        authorizer_appid: b.authorizer_appid.clone(),
    };
    let outcome = sim.push(&comp, &n).await;
    Json(json!({ "ok": true, "push": outcome_json(outcome.as_ref()) })).into_response()
}

fn insert_auth_code(st: &mut State, code: &str, component_appid: &str, authorizer_appid: &str, now: u64) {
    st.auth_codes.insert(
        code.to_owned(),
        AuthCode {
            component_appid: component_appid.to_owned(),
            authorizer_appid: authorizer_appid.to_owned(),
            expires_at: now + AUTH_CODE_TTL_SECS * 1000,
            used: false,
        },
    );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateAuthorizeBody {
    component_appid: String,
    authorizer_appid: String,
    #[serde(default)]
    func_info: Option<Vec<i64>>,
}

/// The merchant changes what it granted (or re-consents): a new authorization code, the new
/// `func_info`, and an `updateauthorized` push. Re-authorization hands out a new refresh token
/// (the staff answer in docs/simulator.md); the previous one keeps working
/// `refresh_token_grace_secs`, so a hub that has not yet redeemed the code is not cut off.
async fn update_authorize(AxState(sim): AxState<Simulator>, body: Bytes) -> Response {
    let b: UpdateAuthorizeBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    let now = sim.shared.clock.now_ms();
    let auth_code = format!("queryauthcode@@@{}", random_string(86));
    let comp = {
        let mut st = sim.lock();
        let Some(comp) = st.component(&b.component_appid).cloned() else {
            return control_error(StatusCode::NOT_FOUND, "unknown component_appid");
        };
        let key = (b.component_appid.clone(), b.authorizer_appid.clone());
        let grace = st.rotation(&b.component_appid).1;
        match st.authorizers.get_mut(&key) {
            Some(a) if !a.revoked => {
                if let Some(f) = b.func_info {
                    a.func_info = f;
                }
            }
            Some(_) => return control_error(StatusCode::BAD_REQUEST, "authorizer is unauthorized"),
            None => return control_error(StatusCode::NOT_FOUND, "unknown authorizer for this component"),
        }
        st.rotate_refresh(&key, now, grace);
        insert_auth_code(&mut st, &auth_code, &b.component_appid, &b.authorizer_appid, now);
        comp
    };
    let n = ComponentNotification::UpdateAuthorized(AuthorizationNotice {
        component_appid: comp.appid.clone(),
        create_time: (now / 1000) as i64,
        authorizer_appid: b.authorizer_appid.clone(),
        authorization_code: Secret::new(auth_code.clone()),
        authorization_code_expired_time: (now / 1000 + AUTH_CODE_TTL_SECS) as i64,
        pre_auth_code: None,
    });
    let outcome = sim.push(&comp, &n).await;
    Json(json!({
        "ok": true,
        "auth_code": auth_code,
        "expires_in": AUTH_CODE_TTL_SECS,
        "push": outcome_json(outcome.as_ref()),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkBody {
    component_appid: String,
    count: u64,
    #[serde(default)]
    prefix: Option<String>,
}

/// Load-test setup: `count` authorizers authorized at once, without codes or pushes. Appids are
/// the prefix and a 15-digit sequence number, so they sort in creation order and never repeat.
async fn bulk_authorizers(AxState(sim): AxState<Simulator>, body: Bytes) -> Response {
    let b: BulkBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    let prefix = b.prefix.unwrap_or_else(|| "wxa".to_owned());
    if prefix.is_empty() || prefix.len() > 16 || !prefix.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return control_error(StatusCode::BAD_REQUEST, "prefix must be 1 to 16 letters or digits");
    }
    if b.count == 0 || b.count > MAX_BULK_AUTHORIZERS {
        return control_error(StatusCode::BAD_REQUEST, format!("count must be 1 to {MAX_BULK_AUTHORIZERS}"));
    }
    let now = sim.shared.clock.now_ms();
    let mut st = sim.lock();
    if st.component(&b.component_appid).is_none() {
        return control_error(StatusCode::NOT_FOUND, "unknown component_appid");
    }
    let mut made = Vec::with_capacity(usize::try_from(b.count).unwrap_or(0));
    while (made.len() as u64) < b.count {
        st.bulk_seq += 1;
        let appid = format!("{prefix}{:015}", st.bulk_seq);
        // An appid some earlier authorization already uses is skipped, not taken over.
        if st.authorizer_component.contains_key(&appid) || st.app(&appid).is_some() {
            continue;
        }
        st.grant(&b.component_appid, &appid, None, now);
        let refresh = st
            .authorizers
            .get(&(b.component_appid.clone(), appid.clone()))
            .map(|a| a.refresh_token.clone())
            .unwrap_or_else(new_refresh_token);
        made.push(json!({ "authorizer_appid": appid, "refresh_token": refresh }));
    }
    drop(st);
    Json(json!({ "ok": true, "authorizers": made })).into_response()
}

async fn list_authorizers(
    AxState(sim): AxState<Simulator>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    let Some(component_appid) = q.get("component_appid").filter(|c| !c.is_empty()) else {
        return control_error(StatusCode::BAD_REQUEST, "component_appid is required");
    };
    let st = sim.lock();
    if st.component(component_appid).is_none() {
        return control_error(StatusCode::NOT_FOUND, "unknown component_appid");
    }
    let mut list: Vec<(u64, &str, Value)> = st
        .authorizers
        .iter()
        .filter(|((c, _), _)| c == component_appid)
        .map(|((_, a), s)| {
            let v = json!({
                "authorizer_appid": a,
                "authorized": !s.revoked,
                "func_info": func_info_json(&s.func_info),
                "refresh_token": (!s.revoked).then(|| s.refresh_token.clone()),
                "auth_time": s.auth_time / 1000,
            });
            (s.auth_time, a.as_str(), v)
        })
        .collect();
    list.sort_unstable_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
    let list: Vec<Value> = list.into_iter().map(|(_, _, v)| v).collect();
    drop(st);
    Json(json!({ "ok": true, "authorizers": list })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotationBody {
    component_appid: String,
    enabled: bool,
    #[serde(default)]
    grace_secs: Option<u64>,
}

/// Switches refresh-token rotation of one component until the next reset (then the config's
/// setting is back). Without `grace_secs` the grace in force stays.
async fn rotation(AxState(sim): AxState<Simulator>, body: Bytes) -> Response {
    let b: RotationBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    let mut st = sim.lock();
    if st.component(&b.component_appid).is_none() {
        return control_error(StatusCode::NOT_FOUND, "unknown component_appid");
    }
    let grace = b.grace_secs.unwrap_or_else(|| st.rotation(&b.component_appid).1);
    st.components.entry(b.component_appid.clone()).or_default().rotation = Some((b.enabled, grace));
    drop(st);
    Json(json!({ "ok": true, "component_appid": b.component_appid, "enabled": b.enabled, "grace_secs": grace }))
        .into_response()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
