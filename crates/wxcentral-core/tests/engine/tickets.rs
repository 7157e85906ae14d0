use crate::common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wechat_proto::api::{PATH_GETTICKET, PATH_TOKEN, TicketType};
use wechat_sim::FaultKind;
use wxcentral_core::store::MemoryStore;
use wxcentral_core::{CredentialKind, TokenApi};

const AT: CredentialKind = CredentialKind::AccessToken;
const JSAPI: CredentialKind = CredentialKind::JsapiTicket;
const CARD: CredentialKind = CredentialKind::WxCardTicket;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_fetched_with_the_token_and_survive_a_rejected_token() {
    let sim = sim(vec![sim_app("wxa", 7200)]).await;
    let engine =
        engine(&sim, vec![app("wxa", TokenApi::Classic, &[TicketType::Jsapi, TicketType::WxCard])]).await;
    let jsapi = engine.get("wxa", JSAPI).await.unwrap();
    let card = engine.get("wxa", CARD).await.unwrap();
    assert_ne!(jsapi.value, card.value);
    assert_eq!(sim.calls("wxa", PATH_TOKEN), 1, "both tickets used the one token");
    assert_eq!(sim.calls("wxa", PATH_GETTICKET), 2);
    let token = engine.get("wxa", AT).await.unwrap();

    // getticket rejects the token once (as after someone else's classic fetch): the engine
    // reports it, gets a new token and retries once.
    let mut reject = fault(PATH_GETTICKET, None, FaultKind::Errcode);
    reject.errcode = Some(40001);
    reject.count = Some(1);
    add_fault(&sim, reject);
    let again = engine.force_refresh("wxa", JSAPI).await.unwrap();
    // WeChat keeps the same ticket until it expires, whatever token asks.
    assert_eq!(again.value, jsapi.value);
    assert_eq!(sim.calls("wxa", PATH_GETTICKET), 4);
    assert_eq!(sim.calls("wxa", PATH_TOKEN), 2, "the rejected token was refreshed once");
    let token2 = engine.get("wxa", AT).await.unwrap();
    assert!(token2.version > token.version);
    token_accepted(&sim, token2.value.expose()).await.unwrap();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tickets_are_replaced_after_they_expire() {
    // Tickets live 3 s; WeChat only issues a new one after the old expires.
    let sim = sim(vec![sim_app("wxa", 600).ticket_ttl(3)]).await;
    let engine = engine_with(
        &sim,
        vec![app("wxa", TokenApi::Classic, &[TicketType::Jsapi])],
        Arc::new(MemoryStore::new()),
        config("n1"),
    )
    .await;
    let start = Instant::now();
    let mut seen: Vec<(String, i64)> = Vec::new();
    while start.elapsed() < Duration::from_secs(8) {
        let t = engine.get("wxa", JSAPI).await.expect("reads wait through the short gap");
        // Never within the serve margin (0.3 s here) of its expiry; 0.1 s of it is left for
        // the time between the engine's check and this one on a loaded machine.
        assert!(t.expires_at_ms - now_ms() > 200, "served too close to expiry");
        if seen.last().map(|s| &s.0) != Some(t.value.expose()) {
            seen.push((t.value.expose().clone(), t.expires_at_ms));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.len() >= 3, "a new ticket after each expiry: {}", seen.len());
    let calls = sim.calls("wxa", PATH_GETTICKET);
    // Per 3 s ticket: the proactive try that gets the same ticket back, then one just after
    // expiry (plus a retry if it landed a hair early).
    assert!(calls <= 4 * seen.len() as u64, "{calls} getticket calls for {} tickets", seen.len());
    assert_eq!(sim.calls("wxa", PATH_TOKEN), 1);
    engine.shutdown().await;
}
