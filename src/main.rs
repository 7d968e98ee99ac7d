//! `flocker-docker-plugin`: the daemon Docker talks to, and `doctor`, which checks its setup. Settings come
//! from the environment (SPEC §2).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flocker_docker_plugin::config::{Config, LogFormat};
use flocker_docker_plugin::driver::{DriverSettings, FlockerDriver};
use flocker_docker_plugin::{doctor, flocker, identity, protocol, server};
use tracing::info;

/// Flocker volume plugin for Docker. Configure it with environment variables (see README).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Docker volume plugin protocol (the default).
    Serve,
    /// Check certificates, control service, node identity and mounts; print one line per check
    /// and exit 1 if any failed. Opens no socket.
    Doctor,
}

fn main() -> ExitCode {
    // `docker plugin set flocker args=` (back from `args=doctor`) passes one empty argument
    // (reference/docker-plugin.md §2.1, moby v2/plugin.go:201): that means "serve", not a usage error.
    let cli = Cli::parse_from(std::env::args_os().filter(|arg| !arg.is_empty()));
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("flocker-docker-plugin: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("flocker-docker-plugin: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => runtime.block_on(serve(config)),
        Command::Doctor => {
            // A config error already exited 2 above: that line is the diagnosis.
            let report = runtime.block_on(doctor::run(&config));
            print!("{report}");
            return if report.failed() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("flocker-docker-plugin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let client = flocker::Client::new(&config.control_url, &config.certs_dir)?;
    // Listen before any network call: the engine probes the socket within seconds of start.
    let listener = server::bind(&config.socket)
        .with_context(|| format!("cannot listen on SOCKET={}", config.socket.display()))?;
    info!(
        socket = %config.socket.display(),
        control_url = %config.control_url,
        mount_mode = ?config.mount_mode,
        "flocker-docker-plugin {} listening",
        env!("CARGO_PKG_VERSION")
    );
    let identity = identity::discover(
        client.clone(),
        identity::Sources {
            node_uuid: config.node_uuid,
            network_identity: config.network_identity.clone(),
        },
    );
    let driver = FlockerDriver::new(client, DriverSettings::from_config(&config), identity);
    let reconciler = driver.clone();
    tokio::spawn(async move { reconciler.reconcile().await });
    let app = protocol::router(Arc::new(driver));
    server::serve(listener, config.socket.clone(), app, server::stop_signal())
        .await
        .context("serving the plugin socket")
}
