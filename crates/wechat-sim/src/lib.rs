//! A faithful simulator of the WeChat API server (api.weixin.qq.com), for tests, benchmarks and
//! `wxcentral sandbox`.
//!
//! WeChat cannot be reached from CI, and a mock of our own code proves nothing, so this crate
//! implements WeChat's rules as its docs and real responses show them: classic tokens that retire
//! their predecessor after an overlap, stable tokens with guarded `force_refresh`, tickets that
//! outlive the token that fetched them, daily quotas by Asia/Shanghai day, encrypted
//! open-platform pushes, and the errcodes with WeChat's own `errmsg … rid: …` texts. A control API
//! under `/__sim` counts calls, injects faults, moves the clock and resets state. Every lifetime
//! is configurable down to seconds. See `docs/simulator.md` for the full list of behaviours.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use wechat_sim::{SimApp, SimConfig};
//!
//! let config = SimConfig::new().app(SimApp::new("wx0123456789abcdef", "app-secret").ttl(5).overlap(1));
//! let sim = wechat_sim::start_on("127.0.0.1:0", config).await?;
//! let url = format!(
//!     "{}/cgi-bin/token?grant_type=client_credential&appid=wx0123456789abcdef&secret=app-secret",
//!     sim.base_url()
//! );
//! let body: serde_json::Value = reqwest::get(url).await?.json().await?;
//! assert_eq!(body["expires_in"], 5);
//! assert_eq!(sim.calls("wx0123456789abcdef", "/cgi-bin/token"), 1);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod clock;
mod config;
mod errmsg;
mod png;
mod push;
mod server;
mod state;
mod wechat;

pub use clock::{Clock, secs_to_next_shanghai_midnight, shanghai_day};
pub use config::{DEMO_APPID, DEMO_SECRET, SimApp, SimComponent, SimConfig, SimError};
pub use push::PushOutcome;
pub use server::{PATH_MEDIA_GET, PATH_MEDIA_UPLOAD, Simulator, media_byte, router};
pub use state::{FaultKind, FaultSpec};
pub use wechat::PATH_QRCODE_CREATE;

use std::net::SocketAddr;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long [`SimHandle::shutdown`] lets in-flight requests finish before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Starts the simulator on an already-bound listener (tests bind `127.0.0.1:0`) and returns once
/// it is serving, with the first verify-ticket pushes under way.
pub async fn start(listener: tokio::net::TcpListener, config: SimConfig) -> Result<SimHandle, SimError> {
    let sim = Simulator::new(config)?;
    let addr = listener.local_addr()?;
    let app = router(sim.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let stopper = sim.clone();
    let server = tokio::spawn(async move {
        let stop = async move { stopper.stopped().await };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
            tracing::error!(error = %e, "wechat-sim server stopped");
        }
    });
    let pushers = sim.spawn_pushers();
    tracing::info!(%addr, "wechat-sim listening");
    Ok(SimHandle { addr, sim, server: Some(server), pushers })
}

/// [`start`] on a fresh listener bound to `addr` (e.g. `"127.0.0.1:0"`).
pub async fn start_on(addr: &str, config: SimConfig) -> Result<SimHandle, SimError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    start(listener, config).await
}

/// A running simulator. Dropping it stops it too, without waiting.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    sim: Simulator,
    server: Option<JoinHandle<()>>,
    pushers: Vec<JoinHandle<()>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, to use as the WeChat API base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received on `endpoint` (a path such as `/cgi-bin/token`) for `appid`, faulted
    /// and failed ones included; the same counters as `GET /__sim/calls`.
    pub fn calls(&self, appid: &str, endpoint: &str) -> u64 {
        self.sim.calls(appid, endpoint)
    }

    /// The most WeChat calls in flight at once since start or the last reset (also
    /// `peak_in_flight` in `GET /__sim/calls`).
    pub fn peak_in_flight(&self) -> u64 {
        self.sim.peak_in_flight()
    }

    /// Requests received on `endpoint` for all apps.
    pub fn total_calls(&self, endpoint: &str) -> u64 {
        self.sim.total_calls(endpoint)
    }

    /// The shared state behind the HTTP API, for tests that drive it directly.
    pub fn simulator(&self) -> &Simulator {
        &self.sim
    }

    /// Moves the simulator's clock forward, as `POST /__sim/clock` does.
    pub fn advance_clock(&self, secs: u64) {
        self.sim.clock().advance_secs(secs);
    }

    /// Unix seconds on the simulator's clock.
    pub fn now_secs(&self) -> u64 {
        self.sim.clock().now_secs()
    }

    /// As `POST /__sim/reset`.
    pub fn reset(&self) {
        self.sim.reset();
    }

    /// As `POST /__sim/push_ticket`: a new verify ticket, pushed now; returns the ticket and the
    /// push outcome (`None` without `push_url`).
    pub async fn push_ticket(&self, component_appid: &str) -> Result<(String, Option<PushOutcome>), String> {
        self.sim.push_ticket(component_appid).await
    }

    /// Stops serving (hung requests are released) and stops the push tasks.
    pub async fn shutdown(mut self) {
        self.signal_stop();
        for p in self.pushers.drain(..) {
            p.abort();
        }
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
                abort.abort();
            }
        }
    }

    fn signal_stop(&self) {
        self.sim.stop();
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.signal_stop();
        for p in &self.pushers {
            p.abort();
        }
        if let Some(s) = &self.server {
            s.abort();
        }
    }
}
