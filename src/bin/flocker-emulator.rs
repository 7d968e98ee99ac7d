//! `flocker-emulator`: runs the local Flocker control-service emulator, or generates certificates.
//!
//! Thin wiring only (argument parsing, logging, signals); the behaviour lives in
//! `flocker_docker_plugin::emulator` and `flocker_docker_plugin::certs`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use flocker_docker_plugin::certs::{self, CertOptions};
use flocker_docker_plugin::emulator::{Config, Convergence, Emulator, Node};
use flocker_docker_plugin::identity::{this_boot_era, BOOT_ID};
use tokio::signal::unix::{signal, SignalKind};
use uuid::Uuid;

/// File in the data dir that keeps the node uuid stable across restarts.
const NODE_UUID_FILE: &str = "node-uuid";

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Local Flocker control-service emulator (REST API v1 over mutual TLS)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a cluster's certificates (CA, control-service, user `plugin`, nodes).
    Certs {
        /// Output directory.
        #[arg(long)]
        dir: PathBuf,
        /// Extra SAN for the control-service certificate (default: localhost and 127.0.0.1).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Node uuid to issue `<uuid>.crt` for; the first one is also `node.crt`.
        #[arg(long = "node")]
        nodes: Vec<Uuid>,
    },
    /// Serve the REST API and converge datasets into bind mounts under --mount-root.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4523")]
    listen: SocketAddr,
    /// Certificates directory (cluster.crt, control-service.crt/.key).
    #[arg(long)]
    certs: PathBuf,
    /// Generate the certificates first if cluster.crt is missing.
    #[arg(long)]
    generate_certs: bool,
    /// Where dataset backing directories (and the node uuid) are kept.
    #[arg(long)]
    data_dir: PathBuf,
    /// Datasets on this node are bind-mounted at <mount-root>/<dataset_id>.
    #[arg(long, default_value = "/flocker")]
    mount_root: PathBuf,
    /// This node's uuid (default: kept in <data-dir>/node-uuid, generated once).
    #[arg(long)]
    node_uuid: Option<Uuid>,
    /// This node's era (default: this machine's boot id, so a local plugin finds the node).
    #[arg(long)]
    era: Option<Uuid>,
    /// Address reported for this node by /v1/state/nodes.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Lag between configuration and state, e.g. 500ms, 1s, 0 (immediately).
    #[arg(long, default_value = "1s", value_parser = parse_lag)]
    lag: Duration,
    /// Make the mount root a shared mount point (needed for Docker's rslave propagation).
    #[arg(long)]
    share_mount_root: bool,
    /// Serve many nodes and seed datasets from this JSON file instead of the one node above
    /// (benches/fleet.rs): `{"nodes": [{"uuid", "era", "host", "mount_root"}],
    /// "volumes": [{"name", "node"}], "inert": N}`; `inert` datasets (named `idle-00000`, …, spread
    /// over the nodes) are reported mounted but never mounted.
    #[arg(long)]
    fleet: Option<PathBuf>,
    /// Write the requests and answer bytes per route to this JSON file every 200 ms.
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// On SIGUSR1, stop listening (dropping every connection) for this long, then listen again:
    /// a control-service restart that keeps the configuration, as Flocker's does.
    #[arg(long, default_value = "2s", value_parser = parse_lag)]
    restart_outage: Duration,
}

/// The `--fleet` file.
#[derive(Debug, serde::Deserialize)]
struct Fleet {
    nodes: Vec<FleetNode>,
    #[serde(default)]
    volumes: Vec<FleetVolume>,
    #[serde(default)]
    inert: usize,
}

#[derive(Debug, serde::Deserialize)]
struct FleetNode {
    uuid: Uuid,
    era: Uuid,
    host: IpAddr,
    mount_root: PathBuf,
}

#[derive(Debug, serde::Deserialize)]
struct FleetVolume {
    name: String,
    node: Uuid,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::Certs { dir, sans, nodes } => {
            let opts = cert_options(sans, nodes);
            certs::generate(&dir, &opts)
                .with_context(|| format!("generating certificates in {}", dir.display()))?;
            println!("certificates written to {}", dir.display());
            Ok(())
        }
        Command::Serve(args) => tokio::runtime::Runtime::new()
            .context("starting the Tokio runtime")?
            .block_on(serve(args)),
    }
}

fn cert_options(sans: Vec<String>, nodes: Vec<Uuid>) -> CertOptions {
    let defaults = CertOptions::default();
    CertOptions {
        control_hosts: if sans.is_empty() {
            defaults.control_hosts
        } else {
            sans
        },
        nodes,
        ..defaults
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let node_uuid = match args.node_uuid {
        Some(uuid) => uuid,
        None => persistent_node_uuid(&args.data_dir)?,
    };
    let era = match args.era {
        Some(era) => era,
        None => boot_id()?,
    };
    if args.generate_certs && !args.certs.join("cluster.crt").exists() {
        certs::generate(&args.certs, &cert_options(Vec::new(), vec![node_uuid]))
            .with_context(|| format!("generating certificates in {}", args.certs.display()))?;
    }
    let fleet: Option<Fleet> = match &args.fleet {
        Some(path) => Some(
            serde_json::from_slice(
                &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("parsing {}", path.display()))?,
        ),
        None => None,
    };
    let nodes = match &fleet {
        Some(fleet) => fleet
            .nodes
            .iter()
            .map(|n| Node {
                uuid: n.uuid,
                era: n.era,
                host: n.host,
                mount_root: n.mount_root.clone(),
            })
            .collect(),
        None => vec![Node {
            uuid: node_uuid,
            era,
            host: args.host,
            mount_root: args.mount_root.clone(),
        }],
    };
    let emulator = Emulator::start(Config {
        listen: args.listen,
        certs_dir: args.certs.clone(),
        data_dir: args.data_dir.clone(),
        nodes,
        convergence: Convergence::After(args.lag),
        share_mount_roots: args.share_mount_root,
    })
    .context("starting the emulator")?;
    if let Some(fleet) = &fleet {
        let volumes: Vec<(String, Uuid)> = fleet
            .volumes
            .iter()
            .map(|v| (v.name.clone(), v.node))
            .collect();
        emulator.seed(&volumes, false).context("seeding volumes")?;
        let inert: Vec<(String, Uuid)> = (0..fleet.inert)
            .map(|i| {
                (
                    format!("idle-{i:05}"),
                    fleet.nodes[i % fleet.nodes.len()].uuid,
                )
            })
            .collect();
        emulator
            .seed(&inert, true)
            .context("seeding inert datasets")?;
    }
    let emulator = std::sync::Arc::new(emulator);
    if let Some(path) = args.stats_file.clone() {
        let emulator = std::sync::Arc::clone(&emulator);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                write_stats(&emulator, &path);
            }
        });
    }
    println!(
        "flocker-emulator listening on {} (certs: {}, node: {node_uuid}, era: {era})",
        emulator.url(),
        args.certs.display()
    );

    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut restart =
        signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = restart.recv() => {
                tracing::warn!(outage = ?args.restart_outage, "restart: not listening");
                emulator.stop_listening().await;
                tokio::time::sleep(args.restart_outage).await;
                emulator.start_listening().await.context("listening again after a restart")?;
                tracing::warn!("restart: listening again");
            }
        }
    }
    tracing::info!("shutting down");
    emulator
        .shutdown()
        .await
        .context("unmounting datasets on shutdown")?;
    Ok(())
}

/// `{"routes": [{"method", "route", "requests", "bytes"}]}`, written atomically.
fn write_stats(emulator: &Emulator, path: &Path) {
    let routes: Vec<serde_json::Value> = emulator
        .route_stats()
        .into_iter()
        .map(|((method, route), stats)| {
            serde_json::json!({
                "method": method, "route": route,
                "requests": stats.requests, "bytes": stats.bytes,
            })
        })
        .collect();
    let tmp = path.with_extension("tmp");
    let text = serde_json::json!({ "routes": routes }).to_string();
    if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
        tracing::error!(path = %path.display(), error = %e, "cannot write the stats file");
    }
}

/// The node uuid stored in the data dir, created on first use so restarts keep the identity.
fn persistent_node_uuid(data_dir: &Path) -> Result<Uuid> {
    let path = data_dir.join(NODE_UUID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            Uuid::parse_str(text.trim()).with_context(|| format!("parsing {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            let uuid = Uuid::new_v4();
            std::fs::write(&path, format!("{uuid}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(uuid)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn boot_id() -> Result<Uuid> {
    this_boot_era().with_context(|| format!("reading this node's era from {BOOT_ID}; pass --era"))
}

/// Parses `500ms`, `1s`, `2m` or a bare number of seconds such as `0` or `1.5`.
fn parse_lag(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .with_context(|| format!("invalid duration {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        _ => bail!("invalid duration unit in {text:?}: use ms, s or m"),
    };
    Duration::try_from_secs_f64(seconds).with_context(|| format!("invalid duration {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_parsing() {
        assert_eq!(parse_lag("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_lag("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_lag("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_lag("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_lag("fast").is_err());
        assert!(parse_lag("1h").is_err());
    }
}
