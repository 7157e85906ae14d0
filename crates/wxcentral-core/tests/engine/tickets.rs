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

/// Whether `ticket` is the simulator's current ticket for the app, asked with `token`.
/// The call is counted by the simulator like the engine's own; callers subtract them.
async fn sim_current_ticket(sim: &wechat_sim::SimHandle, token: &str, tt: TicketType) -> String {
    let url = format!("{}{PATH_GETTICKET}", sim.base_url());
    let body: serde_json::Value = reqwest::Client::new()
        .get(url)
        .query(&[("access_token", token), ("type", tt.as_str())])
        .send()
        .await
        .expect("sim reachable")
        .json()
        .await
        .expect("json body");
    assert_eq!(body["errcode"], 0, "getticket failed: {body}");
    body["ticket"].as_str().expect("a ticket").to_owned()
}

/// WeChat hands out the same ticket until it expires, so no newer one can be had in the last
/// serve margin. Once WeChat confirmed the ticket in its refresh window the engine serves it up
/// to a small guard before expiry, fetches the next one just after expiry, and reads in the short
/// gap wait for that fetch: a reader every 75 ms never fails and never gets a ticket the
/// simulator no longer considers current, at two getticket calls per lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_served_without_a_gap_at_two_calls_per_lifetime() {
    // Tickets live 6 s: serve margin 0.6 s, guard after confirmation 0.3 s. read_wait 1 s is
    // less than what the gap used to cost (margin + the wait for expiry + a fetch), as WeChat's
    // 30 s margin is ten times the default read_wait.
    let sim = sim(vec![sim_app("wxa", 7200).ticket_ttl(6)]).await;
    let mut cfg = config("n1");
    cfg.read_wait = Duration::from_secs(1);
    let engine = engine_with(
        &sim,
        vec![app("wxa", TokenApi::Stable, &[TicketType::Jsapi])],
        Arc::new(MemoryStore::new()),
        cfg,
    )
    .await;
    let token = engine.get("wxa", AT).await.unwrap();
    let start = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    let (mut reads, mut checks) = (0u64, 0u64);
    let mut slowest = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(20) {
        let t0 = Instant::now();
        let t = engine
            .get("wxa", JSAPI)
            .await
            .unwrap_or_else(|e| panic!("read {reads} at {:?} failed: {e:?}", start.elapsed()));
        slowest = slowest.max(t0.elapsed());
        assert!(t.expires_at_ms > now_ms(), "an expired ticket was served");
        let current = sim_current_ticket(&sim, token.value.expose(), TicketType::Jsapi).await;
        checks += 1;
        assert_eq!(
            &current,
            t.value.expose(),
            "read {reads} at {:?}: served a ticket WeChat no longer hands out",
            start.elapsed()
        );
        if seen.last() != Some(t.value.expose()) {
            assert!(!seen.contains(t.value.expose()), "a replaced ticket came back");
            seen.push(t.value.expose().clone());
        }
        reads += 1;
        tokio::time::sleep(Duration::from_millis(75)).await;
    }
    assert!(seen.len() >= 4, "a new ticket after each expiry: {}", seen.len());
    assert!(reads >= 150, "the reader kept up: {reads}");
    let calls = sim.calls("wxa", PATH_GETTICKET) - checks;
    // Each ticket: the fetch that got it, then one confirmation in its refresh window; the last
    // one's confirmation may fall after the end of the run. No call in the last seconds.
    let k = seen.len() as u64;
    assert!((2 * k - 1..=2 * k).contains(&calls), "{calls} getticket calls for {k} tickets");
    assert_eq!(sim.calls("wxa", wechat_proto::api::PATH_STABLE_TOKEN), 1);
    eprintln!("{k} tickets, {reads} reads, {calls} calls, slowest read {slowest:?}");
    engine.shutdown().await;
}

/// The guard replaces the serve margin only on WeChat's word: when the check in the refresh
/// window fails, the ticket is not served past the margin, reads answer Unavailable instead,
/// and the ticket that follows once WeChat answers again is new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_ticket_keeps_the_serve_margin() {
    let sim = sim(vec![sim_app("wxa", 7200).ticket_ttl(6)]).await;
    let mut cfg = config("n1");
    cfg.read_wait = Duration::from_millis(300);
    let engine = engine_with(
        &sim,
        vec![app("wxa", TokenApi::Stable, &[TicketType::Jsapi])],
        Arc::new(MemoryStore::new()),
        cfg,
    )
    .await;
    let first = engine.get("wxa", JSAPI).await.unwrap();
    let mut busy = fault(PATH_GETTICKET, Some("wxa"), FaultKind::Errcode);
    busy.errcode = Some(-1);
    add_fault(&sim, busy);
    // Serve margin of a 6 s ticket: 0.6 s.
    let serve_end = first.expires_at_ms - 600;
    let mut unavailable = 0;
    while now_ms() < first.expires_at_ms + 500 {
        match engine.get("wxa", JSAPI).await {
            Ok(t) => {
                assert_eq!(t.value, first.value);
                assert!(now_ms() < serve_end + 50, "served {} ms before expiry", t.expires_at_ms - now_ms());
            }
            Err(wxcentral_core::Error::Unavailable { .. }) => {
                assert!(now_ms() >= serve_end - 50, "unavailable while it could be served");
                unavailable += 1;
            }
            Err(e) => panic!("{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(unavailable >= 5, "{unavailable}");
    sim.simulator().clear_faults();
    let deadline = Instant::now() + Duration::from_secs(5);
    let next = loop {
        match engine.get("wxa", JSAPI).await {
            Ok(t) => break t,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("did not recover: {e:?}"),
        }
    };
    assert_ne!(next.value, first.value);
    engine.shutdown().await;
}
