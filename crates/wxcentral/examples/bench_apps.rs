//! The client side of `bench/apps.sh`: adds N apps through the admin API (`PUT /v1/apps` with
//! BATCH apps a request, or `PUT /v1/apps/{id}` one by one when BATCH is 1; C requests in
//! flight), waits until every one is served valid, removes them all (`DELETE /v1/apps/{id}`), and
//! prints each phase's time with the hub's memory (read from `/proc/HUB_PID/status`).
//!
//! `cargo run --release -p wxcentral --example bench_apps -- HUB_URL KEY HUB_PID [N] [C] [CYCLES] [BATCH]`

use futures::StreamExt;
use std::time::{Duration, Instant};

fn rss_mib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

async fn storm(c: &reqwest::Client, reqs: Vec<reqwest::RequestBuilder>, conc: usize) -> Vec<u16> {
    let _ = c;
    futures::stream::iter(
        reqs.into_iter().map(|r| async move { r.send().await.map_or(0, |r| r.status().as_u16()) }),
    )
    .buffer_unordered(conc)
    .collect()
    .await
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (hub, key, pid) = (&args[1], &args[2], &args[3]);
    let n: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let conc: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(64);
    let cycles: usize = args.get(6).and_then(|s| s.parse().ok()).unwrap_or(3);
    let batch: usize = args.get(7).and_then(|s| s.parse().ok()).unwrap_or(200).max(1);
    let c = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let id = |i: usize| format!("wxmass{i:010}");
    println!("{n} apps, {batch} a PUT, {conc} requests in flight");
    println!();
    println!(
        "| cycle | add {n} (s) | per add (µs) | all valid (s) | RSS with them (MiB) | remove (s) | RSS after (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let rss0 = rss_mib(pid);
    for cycle in 1..=cycles {
        let t0 = Instant::now();
        let puts = if batch == 1 {
            (0..n)
                .map(|i| {
                    c.put(format!("{hub}/v1/apps/{}", id(i)))
                        .bearer_auth(key)
                        .json(&serde_json::json!({"secret": format!("secret-{i}")}))
                })
                .collect()
        } else {
            (0..n)
                .step_by(batch)
                .map(|start| {
                    let apps: Vec<_> = (start..(start + batch).min(n))
                        .map(|i| serde_json::json!({"appid": id(i), "secret": format!("secret-{i}")}))
                        .collect();
                    c.put(format!("{hub}/v1/apps"))
                        .bearer_auth(key)
                        .json(&serde_json::json!({ "apps": apps }))
                })
                .collect()
        };
        let st = storm(&c, puts, conc).await;
        let added = t0.elapsed();
        let ok = if batch == 1 { 201 } else { 200 };
        assert!(st.iter().all(|s| *s == ok), "a PUT failed: {:?}", st.iter().find(|s| **s != ok));
        loop {
            let v: serde_json::Value =
                c.get(format!("{hub}/v1/apps")).bearer_auth(key).send().await.unwrap().json().await.unwrap();
            let valid = v["apps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["credentials"].as_array().unwrap().iter().all(|c| c["state"] == "valid"))
                .count();
            if valid >= n {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(600), "{valid} of {n} valid");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let valid = t0.elapsed();
        let rss1 = rss_mib(pid);
        let t1 = Instant::now();
        let dels = (0..n).map(|i| c.delete(format!("{hub}/v1/apps/{}", id(i))).bearer_auth(key)).collect();
        let st = storm(&c, dels, conc).await;
        let removed = t1.elapsed();
        assert!(st.iter().all(|s| *s == 204), "a DELETE failed");
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!(
            "| {cycle} | {:.2} | {:.0} | {:.2} | {rss1} | {:.2} | {} |",
            added.as_secs_f64(),
            added.as_micros() as f64 / n as f64,
            valid.as_secs_f64(),
            removed.as_secs_f64(),
            rss_mib(pid)
        );
    }
    println!("\nRSS before the first add: {rss0} MiB");
}
