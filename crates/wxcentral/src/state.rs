//! Shared state of the HTTP handlers.

use crate::auth::Clients;
use crate::render::RenderCache;
use crate::telemetry::HttpMetrics;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use wxcentral_core::Engine;

/// Cheap to clone: one `Arc`.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    engine: Arc<Engine>,
    clients: Clients,
    metrics: PrometheusHandle,
    http_metrics: HttpMetrics,
    rendered: RenderCache,
    body_limit: usize,
}

impl AppState {
    pub fn new(
        engine: Arc<Engine>,
        clients: Clients,
        metrics: PrometheusHandle,
        rendered: RenderCache,
        body_limit: usize,
    ) -> Self {
        Self(Arc::new(Inner {
            engine,
            clients,
            metrics,
            http_metrics: HttpMetrics::default(),
            rendered,
            body_limit,
        }))
    }

    pub fn rendered(&self) -> &RenderCache {
        &self.0.rendered
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.0.engine
    }

    pub fn clients(&self) -> &Clients {
        &self.0.clients
    }

    pub fn metrics(&self) -> &PrometheusHandle {
        &self.0.metrics
    }

    pub fn http_metrics(&self) -> &HttpMetrics {
        &self.0.http_metrics
    }

    pub fn body_limit(&self) -> usize {
        self.0.body_limit
    }
}
