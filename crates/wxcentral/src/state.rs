//! Shared state of the HTTP handlers.

use crate::auth::Clients;
use crate::http_metrics::HttpMetrics;
use crate::platform::Components;
use crate::proxy::Proxy;
use crate::repeats::Repeats;
use arc_swap::{ArcSwap, Guard};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use wxcentral_core::Engine;

/// Cheap to clone: one `Arc`.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    engine: Arc<Engine>,
    /// Swapped whole when the config is reloaded (key rotation without a restart).
    clients: ArcSwap<Clients>,
    /// The components' callback crypto, swapped with the config too.
    components: ArcSwap<Components>,
    metrics: PrometheusHandle,
    http_metrics: HttpMetrics,
    body_limit: usize,
    metrics_per_app: bool,
    proxy: Proxy,
    repeats: Repeats,
}

impl AppState {
    pub fn new(
        engine: Arc<Engine>,
        clients: Clients,
        metrics: PrometheusHandle,
        body_limit: usize,
        metrics_per_app: bool,
        proxy: Proxy,
    ) -> Self {
        Self(Arc::new(Inner {
            engine,
            clients: ArcSwap::from_pointee(clients),
            components: ArcSwap::from_pointee(Components::default()),
            metrics,
            http_metrics: HttpMetrics::default(),
            body_limit,
            metrics_per_app,
            proxy,
            repeats: Repeats::default(),
        }))
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.0.engine
    }

    /// The clients in force, borrowed for a moment (the read path: no counter touched).
    pub fn clients(&self) -> Guard<Arc<Clients>> {
        self.0.clients.load()
    }

    /// The clients in force, held across awaits.
    pub fn clients_owned(&self) -> Arc<Clients> {
        self.0.clients.load_full()
    }

    pub fn set_clients(&self, clients: Clients) {
        self.0.clients.store(Arc::new(clients));
    }

    pub fn components(&self) -> Guard<Arc<Components>> {
        self.0.components.load()
    }

    pub fn set_components(&self, components: Components) {
        self.0.components.store(Arc::new(components));
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

    pub fn proxy(&self) -> &Proxy {
        &self.0.proxy
    }

    pub fn repeats(&self) -> &Repeats {
        &self.0.repeats
    }

    pub fn metrics_per_app(&self) -> bool {
        self.0.metrics_per_app
    }
}
