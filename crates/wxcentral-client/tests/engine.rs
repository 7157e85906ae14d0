//! `EngineSource`: an in-process engine keeps one upstream fetch per credential and lifetime,
//! whatever the number of callers going through the client.

mod common;

use common::*;
use std::sync::Arc;
use wechat_proto::api::{PATH_GET_API_DOMAIN_IP, PATH_STABLE_TOKEN, PATH_TOKEN};
use wxcentral_client::{CredentialKind, EngineSource, Error, TokenSource};

#[tokio::test]
async fn a_thousand_concurrent_callers_cause_one_token_fetch() {
    let app = appid();
    let sim = sim(&[&app]).await;
    let engine = engine(&sim, &[&app]).await;
    let client = engine_client(&sim, &engine);
    let calls = (0..1000).map(|_| {
        let (client, app) = (client.clone(), app.clone());
        tokio::spawn(async move { client.get_api_domain_ip(&app).await })
    });
    for r in futures::future::join_all(calls).await {
        assert!(!r.unwrap().unwrap().is_empty());
    }
    assert_eq!(sim_calls(&sim, &app, PATH_GET_API_DOMAIN_IP).await, 1000);
    assert_eq!(sim_calls(&sim, &app, PATH_STABLE_TOKEN).await, 1);
    assert_eq!(sim_calls(&sim, &app, PATH_TOKEN).await, 0);
}

#[tokio::test]
async fn reports_are_compare_and_refresh() {
    let app = appid();
    let sim = sim(&[&app]).await;
    let engine = engine(&sim, &[&app]).await;
    let source = EngineSource::new(Arc::clone(&engine));
    let first = source.token(&app, CredentialKind::AccessToken).await.unwrap();
    assert!(first.expires_in().as_secs() > 7000, "{first:?}");
    // A value that is not current: the current one, no upstream call.
    let same = source.refresh(&app, CredentialKind::AccessToken, "some-old-token").await.unwrap();
    assert_eq!(same.value, first.value);
    assert_eq!(sim_calls(&sim, &app, PATH_STABLE_TOKEN).await, 1);
    // The current value, after WeChat stopped taking it: a thousand reports, one refresh.
    invalidate(&sim, &app).await;
    let reports = (0..1000).map(|_| source.refresh(&app, CredentialKind::AccessToken, first.value.expose()));
    let fresh: Vec<_> = futures::future::join_all(reports).await.into_iter().map(Result::unwrap).collect();
    assert!(fresh.iter().all(|t| t.value == fresh[0].value && t.value != first.value));
    assert!(fresh[0].version > first.version);
    assert_eq!(sim_calls(&sim, &app, PATH_STABLE_TOKEN).await, 2);
}

#[tokio::test]
async fn engine_errors_are_typed() {
    let app = appid();
    let sim = sim(&[&app]).await;
    let engine = engine(&sim, &[&app]).await;
    let source = EngineSource::new(engine);
    let err = source.token("wxnotconfigured00", CredentialKind::AccessToken).await.unwrap_err();
    match &err {
        Error::Engine(e) => assert!(matches!(**e, wxcentral_core::Error::UnknownApp(_)), "{e:?}"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("wxnotconfigured00"), "{err}");
}
