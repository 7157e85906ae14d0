//! The client side of `bench/authorizers.sh`: a hub whose component has N authorizers (imported
//! from the simulator's authorizer list into an empty store) is watched while all of them are
//! refreshed over several short lifetimes. Prints, as Markdown: the time until every authorizer
//! is served valid, the hub's RSS, refreshes per second (the spread), the most WeChat calls in
//! flight against the limiter's bound, sampled tokens WeChat rejected, and read throughput of an
//! authorizer's token against a plain app's in the same run.
//!
//! `cargo run --release -p wxcentral --example bench_authorizers -- HUB SIM KEY HUB_PID COMPONENT APP N SOAK_SECS MAX_CONCURRENCY DELAY_MS`

use futures::StreamExt;
use rand::Rng;
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

async fn json(c: &reqwest::Client, req: reqwest::RequestBuilder) -> serde_json::Value {
    let _ = c;
    req.send().await.unwrap().json().await.unwrap_or(serde_json::Value::Null)
}

/// `(calls of api_authorizer_token so far, peak in flight)` at the simulator.
async fn sim_calls(c: &reqwest::Client, sim: &str) -> (u64, u64) {
    let v = json(c, c.get(format!("{sim}/__sim/calls"))).await;
    let refreshes = v["calls"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["endpoint"] == "/cgi-bin/component/api_authorizer_token")
                .map(|c| c["count"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    (refreshes, v["peak_in_flight"].as_u64().unwrap_or(0))
}

/// Reads per second of `url` with `conc` clients in a closed loop for `secs`.
async fn reads(c: &reqwest::Client, url: &str, key: &str, conc: usize, secs: f64) -> f64 {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let n: usize = futures::stream::iter(0..conc)
        .map(|_| async {
            let mut n = 0usize;
            while Instant::now() < until {
                if c.get(url).bearer_auth(key).send().await.is_ok_and(|r| r.status() == 200) {
                    n += 1;
                }
            }
            n
        })
        .buffer_unordered(conc)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .sum();
    n as f64 / secs
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (hub, sim, key, pid, comp, app) = (&a[1], &a[2], &a[3], &a[4], &a[5], &a[6]);
    let n: usize = a[7].parse().unwrap();
    let soak: u64 = a[8].parse().unwrap();
    let bound: u64 = a[9].parse().unwrap();
    let delay_ms: u64 = a[10].parse().unwrap();
    let c = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let t0 = Instant::now();
    // Every authorizer imported and served valid.
    let appids: Vec<String> = loop {
        let v = json(&c, c.get(format!("{hub}/v1/apps")).bearer_auth(key)).await;
        let auth: Vec<&serde_json::Value> = v["apps"]
            .as_array()
            .map(|a| a.iter().filter(|a| a["origin"] == "authorization").collect())
            .unwrap_or_default();
        let valid = auth
            .iter()
            .filter(|a| a["credentials"].as_array().is_some_and(|c| c.iter().all(|c| c["state"] == "valid")))
            .count();
        if valid >= n {
            break auth.iter().map(|a| a["appid"].as_str().unwrap().to_owned()).collect();
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "{valid} of {n} valid");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let ready = t0.elapsed();
    let rss_ready = rss_mib(pid);
    // The soak: refreshes per second, and sampled tokens checked at WeChat.
    let (mut last, _) = sim_calls(&c, sim).await;
    let mut per_sec = Vec::new();
    let (mut sampled, mut rejected, mut unavailable) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while start.elapsed() < Duration::from_secs(soak) {
        tick.tick().await;
        let (now, _) = sim_calls(&c, sim).await;
        per_sec.push(now - last);
        last = now;
        let picks: Vec<String> =
            (0..20).map(|_| appids[rand::thread_rng().gen_range(0..appids.len())].clone()).collect();
        for appid in picks {
            let r =
                c.get(format!("{hub}/v1/apps/{appid}/access_token")).bearer_auth(key).send().await.unwrap();
            if r.status() != 200 {
                unavailable += 1;
                continue;
            }
            let v: serde_json::Value = r.json().await.unwrap();
            let token = v["value"].as_str().unwrap().to_owned();
            let ok =
                json(&c, c.get(format!("{sim}/cgi-bin/get_api_domain_ip")).query(&[("access_token", token)]))
                    .await;
            sampled += 1;
            if ok.get("ip_list").is_none() {
                rejected += 1;
            }
        }
    }
    let (total_refreshes, peak) = sim_calls(&c, sim).await;
    let rss_soak = rss_mib(pid);
    per_sec.sort_unstable();
    let mean = per_sec.iter().sum::<u64>() as f64 / per_sec.len().max(1) as f64;
    let p = |q: f64| per_sec[((per_sec.len() as f64 - 1.0) * q).round() as usize];
    // Reads: one authorizer's token against one app's, alternating rounds.
    let auth_url = format!("{hub}/v1/apps/{}/access_token", appids[0]);
    let app_url = format!("{hub}/v1/apps/{app}/access_token");
    let mut ratios = Vec::new();
    let mut rows = Vec::new();
    for _ in 0..3 {
        let x = reads(&c, &auth_url, key, 32, 3.0).await;
        let y = reads(&c, &app_url, key, 32, 3.0).await;
        ratios.push(x / y);
        rows.push((x, y));
    }
    ratios.sort_by(f64::total_cmp);
    println!("{n} authorizers of {comp}, {soak} s soak");
    println!();
    println!("| what | value |");
    println!("|---|---|");
    println!("| imported and all served valid after start | {:.1} s |", ready.as_secs_f64());
    println!("| hub RSS then / after the soak | {rss_ready} MiB / {rss_soak} MiB |");
    println!("| api_authorizer_token calls in all | {total_refreshes} |");
    println!(
        "| refreshes per second in the soak: mean / median / p99 / max | {mean:.1} / {} / {} / {} |",
        p(0.5),
        p(0.99),
        per_sec.last().copied().unwrap_or(0)
    );
    // The simulator counts every call in flight, the bench's own token check (one at a time)
    // among them, so the hub's share is at most one less than the peak.
    println!(
        "| most WeChat calls in flight (hub's, plus the bench's one check) / limiter bound ({delay_ms} ms per call) | {peak} / {bound} + 1 |"
    );
    assert!(peak <= bound + 1, "the limiter let {} calls be in flight, over its bound of {bound}", peak - 1);
    println!(
        "| sampled tokens checked at WeChat / rejected / not served | {sampled} / {rejected} / {unavailable} |"
    );
    for (i, (x, y)) in rows.iter().enumerate() {
        println!("| reads/s round {}: authorizer / app | {x:.0} / {y:.0} |", i + 1);
    }
    println!("| read ratio authorizer : app (median of 3) | {:.3} |", ratios[1]);
}
