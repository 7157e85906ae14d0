//! The engine's per-app metric series: documented names and labels, aggregation without the
//! `app` label, and series that leave with their app.

use crate::common::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use wechat_proto::api::PATH_TOKEN;
use wechat_sim::FaultKind;
use wxcentral_core::store::MemoryStore;
use wxcentral_core::{CredentialKind, Engine, TokenApi};

/// `name{k=v,...}` -> value, labels sorted.
fn samples(engine: &Engine, per_app: bool) -> BTreeMap<String, f64> {
    let mut text = String::new();
    engine.render_metrics(per_app, &mut text);
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = series.split_once('{').unwrap();
        let mut labels: Vec<String> = labels
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| l.replace('"', ""))
            .collect();
        labels.sort();
        out.insert(format!("{name}{{{}}}", labels.join(",")), value.parse().unwrap());
    }
    out
}

#[tokio::test]
async fn engine_metrics_have_the_documented_names_and_labels() {
    let sim = sim(vec![sim_app("wxa", 7200), sim_app("wxb", 7200)]).await;
    let engine = engine_with(
        &sim,
        vec![app("wxa", TokenApi::Classic, &[]), app("wxb", TokenApi::Classic, &[])],
        Arc::new(MemoryStore::new()),
        config("n1"),
    )
    .await;
    let at = CredentialKind::AccessToken;
    engine.get("wxa", at).await.unwrap();
    engine.get("wxb", at).await.unwrap();
    let mut quota = fault(PATH_TOKEN, Some("wxa"), FaultKind::Errcode);
    quota.errcode = Some(45009);
    quota.count = Some(1);
    add_fault(&sim, quota);
    assert!(engine.force_refresh("wxa", at).await.is_err());
    engine.force_refresh("wxa", at).await.unwrap();

    let v = samples(&engine, true);
    let get = |k: &str| v.get(k).copied().unwrap_or_else(|| panic!("missing {k} in {v:#?}"));
    assert_eq!(get("wxcentral_upstream_calls_total{app=wxa,endpoint=/cgi-bin/token,outcome=ok}"), 2.0);
    assert_eq!(get("wxcentral_upstream_calls_total{app=wxa,endpoint=/cgi-bin/token,outcome=45009}"), 1.0);
    assert_eq!(get("wxcentral_refreshes_total{app=wxa,kind=access_token,reason=startup}"), 1.0);
    assert_eq!(get("wxcentral_refreshes_total{app=wxa,kind=access_token,reason=forced}"), 1.0);
    assert_eq!(get("wxcentral_refresh_failures_total{app=wxa,class=quota,kind=access_token}"), 1.0);
    assert_eq!(get("wxcentral_quota_used_today{app=wxa,endpoint=/cgi-bin/token}"), 3.0);
    assert_eq!(get("wxcentral_apps{origin=config}"), 2.0);
    let ttl = get("wxcentral_credential_seconds_to_expiry{app=wxa,kind=access_token}");
    assert!(ttl > 7000.0 && ttl <= 7200.0, "{ttl}");

    // Without the app label: counters summed over apps, gauges the app nearest its limit.
    let v = samples(&engine, false);
    let get = |k: &str| v.get(k).copied().unwrap_or_else(|| panic!("missing {k} in {v:#?}"));
    assert_eq!(get("wxcentral_upstream_calls_total{endpoint=/cgi-bin/token,outcome=ok}"), 3.0);
    assert_eq!(get("wxcentral_refreshes_total{kind=access_token,reason=startup}"), 2.0);
    assert_eq!(get("wxcentral_quota_used_today{endpoint=/cgi-bin/token}"), 3.0);
    assert!(v.keys().all(|k| !k.contains("app=")), "{v:#?}");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_removed_app_takes_its_series_along() {
    let sim = sim(vec![sim_app("wxkeep", 7200), sim_app("wxgone", 7200)]).await;
    let engine = engine_with(
        &sim,
        vec![app("wxkeep", TokenApi::Stable, &[])],
        Arc::new(MemoryStore::new()),
        config("n1"),
    )
    .await;
    engine.put_app(app("wxgone", TokenApi::Stable, &[])).await.unwrap();
    engine.get("wxgone", CredentialKind::AccessToken).await.unwrap();
    engine.get("wxkeep", CredentialKind::AccessToken).await.unwrap();
    assert!(samples(&engine, true).keys().any(|k| k.contains("app=wxgone")));
    engine.delete_app("wxgone").await.unwrap();
    let v = samples(&engine, true);
    assert!(!v.keys().any(|k| k.contains("wxgone")), "{v:#?}");
    assert!(v.keys().any(|k| k.contains("app=wxkeep")));
    assert_eq!(v["wxcentral_apps{origin=config}"], 1.0);
    engine.shutdown().await;
}
