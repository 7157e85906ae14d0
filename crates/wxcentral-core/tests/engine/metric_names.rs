//! The metric names and labels the server's `/metrics` shows, recorded through the `metrics`
//! facade with a small in-test recorder.

use crate::common::*;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use wechat_proto::api::PATH_TOKEN;
use wechat_sim::FaultKind;
use wxcentral_core::store::MemoryStore;
use wxcentral_core::{CredentialKind, TokenApi};

type Values = Arc<Mutex<BTreeMap<String, f64>>>;

#[derive(Default)]
struct TestRecorder(Values);

struct Cell(Values, String);

impl CounterFn for Cell {
    fn increment(&self, v: u64) {
        *self.0.lock().unwrap().entry(self.1.clone()).or_default() += v as f64;
    }
    fn absolute(&self, v: u64) {
        self.0.lock().unwrap().insert(self.1.clone(), v as f64);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, v: f64) {
        *self.0.lock().unwrap().entry(self.1.clone()).or_default() += v;
    }
    fn decrement(&self, v: f64) {
        *self.0.lock().unwrap().entry(self.1.clone()).or_default() -= v;
    }
    fn set(&self, v: f64) {
        self.0.lock().unwrap().insert(self.1.clone(), v);
    }
}

/// `name{k=v,...}` with labels sorted, Prometheus-like.
fn render(key: &Key) -> String {
    let mut labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Cell(self.0.clone(), render(key))))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Cell(self.0.clone(), render(key))))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn engine_metrics_have_the_documented_names_and_labels() {
    let recorder = TestRecorder::default();
    let values = recorder.0.clone();
    // The recorder is thread-local: run everything on this thread.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let sim = sim(vec![sim_app("wxa", 7200)]).await;
            let engine = engine_with(
                &sim,
                vec![app("wxa", TokenApi::Classic, &[])],
                Arc::new(MemoryStore::new()),
                config("n1"),
            )
            .await;
            let at = CredentialKind::AccessToken;
            engine.get("wxa", at).await.unwrap();
            let mut quota = fault(PATH_TOKEN, None, FaultKind::Errcode);
            quota.errcode = Some(45009);
            quota.count = Some(1);
            add_fault(&sim, quota);
            assert!(engine.force_refresh("wxa", at).await.is_err());
            engine.force_refresh("wxa", at).await.unwrap();
            engine.update_gauges();
            engine.shutdown().await;
        });
    });
    let v = values.lock().unwrap().clone();
    let get = |k: &str| v.get(k).copied().unwrap_or_else(|| panic!("missing {k} in {v:#?}"));
    assert_eq!(get("wxcentral_upstream_calls_total{app=wxa,endpoint=/cgi-bin/token,outcome=ok}"), 2.0);
    assert_eq!(get("wxcentral_upstream_calls_total{app=wxa,endpoint=/cgi-bin/token,outcome=45009}"), 1.0);
    assert_eq!(get("wxcentral_refreshes_total{app=wxa,kind=access_token,reason=startup}"), 1.0);
    assert_eq!(get("wxcentral_refreshes_total{app=wxa,kind=access_token,reason=forced}"), 1.0);
    assert_eq!(get("wxcentral_refresh_failures_total{app=wxa,class=quota,kind=access_token}"), 1.0);
    assert_eq!(get("wxcentral_quota_used_today{app=wxa,endpoint=/cgi-bin/token}"), 3.0);
    let ttl = get("wxcentral_credential_seconds_to_expiry{app=wxa,kind=access_token}");
    assert!((7190.0..=7200.0).contains(&ttl), "{ttl}");
}
