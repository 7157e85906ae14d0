//! Rule 8: secrets and values never reach the logs, even at TRACE, through every path that
//! logs (refresh, adopt, unchanged, failures of each class, forced refresh, tickets).

use crate::common::*;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wechat_proto::api::{PATH_GETTICKET, PATH_STABLE_TOKEN, PATH_TOKEN, TicketType};
use wechat_sim::FaultKind;
use wxcentral_core::store::MemoryStore;
use wxcentral_core::{CredentialKind, TokenApi};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn no_secret_or_value_in_logs_or_debug() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("wxcentral_core=trace")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // One thread, so every task logs through this test's subscriber.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut values: Vec<String> = vec![SECRET.to_owned()];
    rt.block_on(async {
        let sim = sim(vec![sim_app("wxa", 7200), sim_app("wxb", 7200)]).await;
        let engine = engine_with(
            &sim,
            vec![app("wxa", TokenApi::Classic, &[TicketType::Jsapi]), app("wxb", TokenApi::Stable, &[])],
            Arc::new(MemoryStore::new()),
            config("n1"),
        )
        .await;
        for (appid, kind) in [
            ("wxa", CredentialKind::AccessToken),
            ("wxa", CredentialKind::JsapiTicket),
            ("wxb", CredentialKind::AccessToken),
        ] {
            let c = engine.get(appid, kind).await.unwrap();
            assert!(!format!("{c:?}").contains(c.value.expose()), "Debug shows the value");
            values.push(c.value.expose().clone());
        }
        // Failures of each kind, then the paths that log on success.
        for (endpoint, kind, errcode) in [
            (PATH_TOKEN, FaultKind::Errcode, Some(45009)),
            (PATH_TOKEN, FaultKind::Malformed, None),
            (PATH_STABLE_TOKEN, FaultKind::Status, None),
            (PATH_GETTICKET, FaultKind::Errcode, Some(40001)),
        ] {
            let mut f = fault(endpoint, None, kind);
            f.errcode = errcode;
            f.status = (kind == FaultKind::Status).then_some(502);
            f.count = Some(1);
            add_fault(&sim, f);
        }
        let _ = engine.force_refresh("wxa", CredentialKind::AccessToken).await;
        let _ = engine.force_refresh("wxa", CredentialKind::AccessToken).await;
        let _ = engine.force_refresh("wxb", CredentialKind::AccessToken).await;
        let _ = engine.force_refresh("wxa", CredentialKind::JsapiTicket).await;
        for (appid, kind) in [("wxa", CredentialKind::AccessToken), ("wxb", CredentialKind::AccessToken)] {
            let c = engine.force_refresh(appid, kind).await.unwrap();
            values.push(c.value.expose().clone());
            let c = engine.report_invalid(appid, kind, c.value.expose()).await.unwrap();
            values.push(c.value.expose().clone());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = format!("{:?} {}", engine.status(), serde_json::to_string(&engine.status()).unwrap());
        for v in &values {
            assert!(!status.contains(v.as_str()), "status shows a value");
        }
        assert!(!format!("{engine:?}").contains(SECRET));
        engine.shutdown().await;
    });
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    if std::env::var_os("SHOW_LOGS").is_some() {
        eprintln!("{logs}");
    }
    assert!(logs.contains("credential refreshed"), "the test saw the logs:\n{logs}");
    assert!(logs.contains("upstream call failed"), "failures were logged:\n{logs}");
    for v in &values {
        assert!(!logs.contains(v.as_str()), "a secret or value leaked into the logs");
    }
}
