//! `wechat-sim`: the WeChat API simulator as its own process, for the sandbox, manual testing and
//! for programs in other languages.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use wechat_sim::{DEMO_APPID, DEMO_SECRET, SimConfig};

/// A faithful simulator of the WeChat API server (api.weixin.qq.com).
#[derive(Debug, Parser)]
#[command(name = "wechat-sim", version)]
struct Cli {
    /// Address to listen on, e.g. 127.0.0.1:9000 (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: String,
    /// sim.toml with [[app]] and [[component]] tables; without it one demo app is served.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let config = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            SimConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => {
            tracing::warn!(
                appid = DEMO_APPID,
                secret = DEMO_SECRET,
                "no --config given: serving one demo app"
            );
            SimConfig::demo()
        }
    };
    let apps: Vec<&str> = config.apps.iter().map(|a| a.appid.as_str()).collect();
    let comps: Vec<&str> = config.components.iter().map(|c| c.appid.as_str()).collect();
    tracing::info!(apps = ?apps, components = ?comps, "config loaded");
    let sim = wechat_sim::start_on(&cli.listen, config).await.map_err(|e| format!("{}: {e}", cli.listen))?;
    println!("wechat-sim listening on {}", sim.base_url());
    shutdown_signal().await;
    tracing::info!("shutting down");
    sim.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
