//! A cold start with many credentials queues behind the one upstream limiter: WeChat never sees
//! more calls at once than the bound, every app is valid within the time the rate implies, and
//! reads succeed from then on.

mod common;

use common::*;
use std::time::{Duration, Instant};
use wechat_proto::api::TicketType;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cold_start_of_1000_apps_stays_within_the_bound() {
    const APPS: usize = 1000;
    const CONCURRENCY: usize = 8;
    const PER_SECOND: u32 = 400;
    let apps: Vec<TestApp> =
        (0..APPS).map(|i| TestApp::new(&format!("wxcold{i:010}")).tickets(&[TicketType::Jsapi])).collect();
    let sim = start_sim(&apps).await;
    let mut config = config(&sim, &apps);
    config.upstream.max_concurrency = CONCURRENCY;
    config.upstream.max_per_second = PER_SECOND;
    let t0 = Instant::now();
    let server = Server::start(&config).await;
    let client = http();
    // 2,000 calls at 400/s: five seconds, plus slack for the machine.
    let implied = Duration::from_secs_f64((2 * APPS) as f64 / f64::from(PER_SECOND));
    let all_valid = async {
        loop {
            let (_, body) = get_json(&client, &server.url("/v1/apps"), ADMIN_KEY).await;
            let valid = body["apps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["credentials"].as_array().unwrap().iter().all(|c| c["state"] == "valid"))
                .count();
            if valid == APPS {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(implied + Duration::from_secs(10), all_valid)
        .await
        .expect("every app valid in time");
    let took = t0.elapsed();
    assert!(took >= implied.mul_f64(0.8), "the rate held: all valid after {took:?}");
    assert!(sim.peak_in_flight() <= CONCURRENCY as u64, "peak {} > {CONCURRENCY}", sim.peak_in_flight());
    assert!(sim.peak_in_flight() >= 2, "calls did overlap: {}", sim.peak_in_flight());

    // From now on every read succeeds, without another upstream call.
    let calls = sim.total_calls("/cgi-bin/stable_token") + sim.total_calls("/cgi-bin/ticket/getticket");
    assert_eq!(calls, 2 * APPS as u64);
    let reads = apps.iter().flat_map(|a| {
        ["access_token", "jsapi_ticket"].map(|k| server.url(&format!("/v1/apps/{}/{k}", a.appid())))
    });
    let results = futures::future::join_all(reads.map(|u| {
        let client = client.clone();
        async move { get_json(&client, &u, ADMIN_KEY).await }
    }))
    .await;
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
    }
    let token = results[0].1["value"].as_str().unwrap();
    sim_accepts(&sim, token).await.expect("served token is valid");
    assert_eq!(
        sim.total_calls("/cgi-bin/stable_token") + sim.total_calls("/cgi-bin/ticket/getticket"),
        calls
    );
    eprintln!(
        "1000 apps valid after {took:?} (rate implies {implied:?}); peak in flight {}",
        sim.peak_in_flight()
    );
    server.stop().await;
}
