//! `flocker-docker-plugin`: the daemon Docker talks to, and `doctor`, which checks its setup. Settings come
//! from the environment (SPEC §2).
//!
//! Panic policy: the release build aborts on panic (`panic = "abort"` in Cargo.toml). A panic is a bug
//! that leaves the in-memory records in an unknown state; carrying on could release a lease a container
//! needs. Aborting hands over to the engine, which restarts the plugin at once, and to start-up
//! recovery, which adopts whatever is mounted (SPEC §9.2). The code therefore never turns a task's
//! panic into an error answer: it propagates it (`blocking::run`, the driver's task joins).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flocker_docker_plugin::config::{Config, LogFormat};
use flocker_docker_plugin::driver::{
    DriverSettings, FlockerDriver, Misconfigured, StateFile, REPORT_AGE, RESTART_GRACE,
};
use flocker_docker_plugin::{dead_node, doctor, flocker, identity, protocol, server};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// How long driver tasks may take to finish or undo after the socket stopped serving; with the
/// server's drain this keeps the whole stop under the 5 s SPEC §3 allows.
const DRIVER_STOP: std::time::Duration = std::time::Duration::from_millis(800);

/// The version this binary reports (`--version`, the start-up log line): the crate's, unless the
/// build set `FLOCKER_PLUGIN_VERSION` (`make plugin VERSION=…`, which also writes it into the bundle's
/// config.json description), so two bundles built from one checkout can be told apart.
const VERSION: &str = match option_env!("FLOCKER_PLUGIN_VERSION") {
    Some(version) => version,
    None => env!("CARGO_PKG_VERSION"),
};

/// Flocker volume plugin for Docker. Configure it with environment variables (see README).
#[derive(Parser)]
#[command(version = VERSION, about)]
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
    /// Free the leases of a node that is gone for good, so its volumes can move to another node.
    /// Refused while the control service still sees the node (fence it first: power it off or stop
    /// its Docker engine). Exits 1 when refused.
    ReleaseLeases {
        /// The dead node's Flocker UUID (as in `docker volume inspect`'s Status.primary or the Err of
        /// a refused Mount).
        #[arg(long)]
        node: uuid::Uuid,
        /// Only this volume's lease.
        #[arg(long)]
        volume: Option<String>,
        /// Skip the check that the node looks dead. Only for a node known to be down, or a lease
        /// this node's UUID holds that no container uses.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    // `docker plugin set flocker args=` (back from `args=doctor`) passes one empty argument
    // (reference/docker-plugin.md §2.1, moby v2/plugin.go:201): that means "serve", not a usage error.
    let cli = Cli::parse_from(std::env::args_os().filter(|arg| !arg.is_empty()));
    let command = cli.command.unwrap_or(Command::Serve);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // Mount syscalls, mount-table reads and fsyncs run on the blocking pool; 50 Mounts finishing
        // at once on tokio's default of 512 threads wake 50 threads on a 2-core host and starve the
        // socket's workers (docs/benchmarks.md: capping the pool halved the tail latency).
        .max_blocking_threads(8)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("flocker-docker-plugin: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("flocker-docker-plugin: {e}");
            if let Command::Serve = command {
                // Served, not just printed: dockerd's log is not where users look.
                let reason = fix_line(&e.to_string(), e.setting());
                return runtime.block_on(serve_refusal(reason));
            }
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let result = match command {
        Command::Serve => {
            let served = runtime.block_on(serve(config));
            // Blocking-pool work still running (a hung mount syscall) must not hold the exit.
            runtime.shutdown_timeout(std::time::Duration::from_millis(300));
            served
        }
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
        Command::ReleaseLeases {
            node,
            volume,
            force,
        } => {
            let request = dead_node::Request {
                node: flocker::NodeId(node),
                volume,
                force,
            };
            return runtime.block_on(release_leases(&config, request));
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

/// The explanation every call answers when the settings are unusable: what is wrong and the
/// commands that fix it in a managed plugin.
fn fix_line(problem: &str, setting: Option<&str>) -> String {
    let set = match setting {
        Some(key) => format!("docker plugin set flocker {key}=…"),
        None => "docker plugin set flocker SETTING=…".to_string(),
    };
    format!(
        "{problem}. Fix: `docker plugin disable flocker && {set} && docker plugin enable flocker` \
         (use the name the plugin was installed under)"
    )
}

/// Serves `reason` as the answer to every volume call until stopped: on `SOCKET` if it is usable,
/// else on the default socket.
async fn serve_refusal(reason: String) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    tracing::error!(%reason, "settings unusable; every volume call will answer this until fixed");
    let socket = std::env::var_os("SOCKET")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| std::path::PathBuf::from("/run/docker/plugins/flocker.sock"));
    let listener = match server::bind(&socket) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "flocker-docker-plugin: cannot listen on {}: {e}",
                socket.display()
            );
            return ExitCode::from(2);
        }
    };
    let app = protocol::router(Arc::new(Misconfigured::new(reason)));
    match server::serve(listener, socket, app, server::stop_signal()).await {
        Ok(()) => ExitCode::from(2),
        Err(e) => {
            eprintln!("flocker-docker-plugin: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let client = match flocker::Client::new(&config.control_url, &config.certs_dir) {
        Ok(client) => client,
        Err(e) => {
            // Missing or unreadable certificates: served like a bad setting.
            let reason = fix_line(&e.to_string(), Some("certs.source"));
            eprintln!("flocker-docker-plugin: {e}");
            serve_refusal(reason).await;
            anyhow::bail!("{e}");
        }
    };
    // Listen before any network call: the engine probes the socket within seconds of start.
    let listener = server::bind(&config.socket)
        .with_context(|| format!("cannot listen on SOCKET={}", config.socket.display()))?;
    info!(
        socket = %config.socket.display(),
        control_url = %config.control_url,
        mount_mode = ?config.mount_mode,
        "flocker-docker-plugin {VERSION} listening"
    );
    let stop = CancellationToken::new();
    let identity = identity::discover(
        client.clone(),
        identity::Sources {
            node_uuid: config.node_uuid,
            network_identity: config.network_identity.clone(),
        },
        stop.clone(),
    );
    let driver = FlockerDriver::new(client, driver_settings(&config), identity);
    driver.spawn_reconcile();
    let app = protocol::router(Arc::new(driver.clone()));
    let stopping = driver.clone();
    let signal = async move {
        server::stop_signal().await;
        // Waiting Mounts give up (and undo) at once, so the drain below is short.
        stop.cancel();
        stopping.stop_background();
    };
    let served = server::serve(listener, config.socket.clone(), app, signal).await;
    driver.shutdown(DRIVER_STOP).await;
    served.context("serving the plugin socket")
}

async fn release_leases(config: &Config, request: dead_node::Request) -> ExitCode {
    let client = match flocker::Client::new(&config.control_url, &config.certs_dir) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("flocker-docker-plugin: {e}");
            return ExitCode::from(2);
        }
    };
    match dead_node::release_leases(&client, &request).await {
        Ok(outcomes) if outcomes.is_empty() => {
            println!("node {} holds no leases", request.node);
            ExitCode::SUCCESS
        }
        Ok(outcomes) => {
            for outcome in outcomes {
                println!("{outcome}");
            }
            ExitCode::SUCCESS
        }
        Err(refused) => {
            eprintln!("flocker-docker-plugin: {refused}");
            ExitCode::from(1)
        }
    }
}

fn driver_settings(config: &Config) -> DriverSettings {
    DriverSettings {
        agent_mount_root: config.agent_mount_root.clone(),
        flocker_root: config.flocker_root.clone(),
        mount_mode: config.mount_mode.clone(),
        default_size: config.default_size,
        default_profile: config.default_profile.clone(),
        mount_timeout: config.mount_timeout,
        state_file: StateFile::in_dir(&config.state_dir),
        restart_grace: RESTART_GRACE,
        report_age: REPORT_AGE,
    }
}
