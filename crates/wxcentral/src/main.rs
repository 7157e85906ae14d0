//! The `wxcentral` binary: parse the command line, load config, init tracing, serve.

/// Proxied calls free on one worker what another allocated (request and response buffers
/// cross between the server's and the upstream client's tasks); glibc's arenas serialize that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use wxcentral::config::{Config, hash_key};
use wxcentral::{offline, sandbox, telemetry};

#[derive(Parser, Debug)]
#[command(name = "wxcentral", version, about = "WeChat credential central-control server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve {
        #[arg(long, default_value = "wxcentral.toml")]
        config: PathBuf,
    },
    /// Server + in-process WeChat simulator + demo apps on the embedded store.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, default_value = "wxcentral-sandbox")]
        data: PathBuf,
    },
    /// Validate a config and print apps and clients with secrets redacted.
    CheckConfig {
        #[arg(long, default_value = "wxcentral.toml")]
        config: PathBuf,
    },
    /// Print the sha256 hex of a client key, for `[[client]] key_sha256`.
    HashKey { key: String },
    /// Compute a WeChat signature.
    Sign {
        #[command(subcommand)]
        cmd: offline::SignCommand,
    },
    /// Decrypt a pushed message or encrypt a reply (WXBizMsgCrypt safe mode).
    Crypto {
        #[command(subcommand)]
        cmd: offline::CryptoCommand,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are not failures.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {}", usage_error_line(&e));
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Sandbox { listen, data } => runtime().and_then(|rt| {
            telemetry::init_tracing(Default::default());
            rt.block_on(sandbox::run(&listen, &data, shutdown_signal())).map_err(|e| e.to_string())
        }),
        Command::CheckConfig { config } => {
            Config::load(&config).map(|c| print!("{}", c.redacted_summary())).map_err(|e| e.to_string())
        }
        Command::HashKey { key } => {
            println!("{}", hash_key(&key));
            Ok(())
        }
        Command::Sign { cmd } => offline::run_sign(cmd, &mut std::io::stdout()).map_err(|e| e.to_string()),
        Command::Crypto { cmd } => {
            offline::run_crypto(cmd, &mut std::io::stdin(), &mut std::io::stdout()).map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// clap's usage error as the one `error: …` line every failing verb prints (operators grep
/// for it and scripts test for exit 1), without the usage block that follows it.
fn usage_error_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let message = text.split("\nUsage:").next().unwrap_or(&text);
    let message = message.trim_start().strip_prefix("error:").unwrap_or(message);
    let mut line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    line.push_str(" (see --help)");
    line
}

fn serve(path: &std::path::Path) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| format!("config: {e}"))?;
    telemetry::init_tracing(config.server.log_format);
    let addr = config.listen_addr().map_err(|e| e.to_string())?;
    runtime()?.block_on(async {
        let state = wxcentral::build_state(&config).await.map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("bind {addr}: {e}"))?;
        tokio::spawn(reload_on_sighup(path.to_path_buf(), config, state.clone()));
        wxcentral::serve(listener, state, shutdown_signal()).await.map_err(|e| e.to_string())
    })
}

/// Re-reads the config file on every SIGHUP; a file that fails validation is refused with its
/// one-line error and the running config stays in force.
async fn reload_on_sighup(path: PathBuf, mut running: Config, state: wxcentral::state::AppState) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("SIGHUP cannot be caught; config reload is off");
            return;
        };
        while hup.recv().await.is_some() {
            match Config::load(&path) {
                Err(e) => tracing::error!(error = %e, "config reload refused; the running config stays"),
                Ok(config) => match wxcentral::reload(&state, &running, &config).await {
                    Ok(()) => running = config,
                    Err(e) => tracing::error!(error = %e, "config reload failed"),
                },
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, &mut running, state);
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| format!("runtime: {e}"))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}
