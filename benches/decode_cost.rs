//! Benchmark report: what a 10,000-dataset cluster costs the plugin itself for Get and List
//! (decoding `GET /v1/configuration/datasets` and `/v1/state/datasets`, choosing, answering).
//!
//! The emulator (in this process, mutual TLS on loopback) holds 10,000 inert datasets on 100 nodes
//! (no mounts, so no root needed); the real driver answers Get and List in legacy mode. Prints
//! Markdown (kept in docs/benchmarks.md). Target: the plugin's own share of a Get or List answer
//! (decode + select) under 15 ms.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use flocker_docker_plugin::config::MountMode;
use flocker_docker_plugin::driver::{
    DriverSettings, FlockerDriver, StateFile, VolumeDriver, VolumeName,
};
use flocker_docker_plugin::emulator::{self, Convergence, Emulator};
use flocker_docker_plugin::flocker::{DatasetConfig, DatasetState};
use flocker_docker_plugin::identity::Identity;
use flocker_docker_plugin::size::Size;
use flocker_docker_plugin::{certs, flocker};
use tokio::sync::watch;
use uuid::Uuid;

const DATASETS: usize = 10_000;
const NODES: usize = 100;
const ROUNDS: usize = 30;

fn driver(
    client: &flocker::Client,
    dir: &std::path::Path,
    node: Uuid,
    report_age: Duration,
) -> FlockerDriver {
    let settings = DriverSettings {
        agent_mount_root: dir.join("flocker"),
        flocker_root: dir.join("flocker"),
        mount_mode: MountMode::Legacy,
        default_size: Size::from_bytes(1 << 30),
        default_profile: None,
        mount_timeout: Duration::from_secs(30),
        state_file: StateFile::in_dir(&dir.join("state")),
        restart_grace: flocker_docker_plugin::driver::RESTART_GRACE,
        report_age,
    };
    let (_, rx): (_, watch::Receiver<Identity>) =
        watch::channel(Identity::Known(flocker::NodeId(node)));
    FlockerDriver::new(client.clone(), settings, rx)
}

/// p50, p90 and max of `samples`, in ms.
fn row(what: &str, mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    format!(
        "| {what} | {} | {} | {} |",
        ms(at(0.5)),
        ms(at(0.9)),
        ms(*samples.last().unwrap())
    )
}

async fn timed<T, F: std::future::Future<Output = T>>(f: impl Fn() -> F) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        std::hint::black_box(f().await);
        samples.push(started.elapsed());
    }
    samples
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{} cores ({cpu}), Linux {}; load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    certs::generate(&certs_dir, &certs::CertOptions::default()).unwrap();
    let nodes: Vec<Uuid> = (0..NODES).map(|_| Uuid::new_v4()).collect();
    let emulator = Emulator::start(emulator::Config {
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        certs_dir: certs_dir.clone(),
        data_dir: dir.path().join("emulator"),
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, uuid)| emulator::Node {
                uuid: *uuid,
                era: Uuid::new_v4(),
                host: IpAddr::V4(Ipv4Addr::new(127, 0, 1, i as u8)),
                mount_root: dir.path().join(format!("n{i}/flocker")),
            })
            .collect(),
        convergence: Convergence::Manual,
        share_mount_roots: false,
    })
    .unwrap();
    let volumes: Vec<(String, Uuid)> = (0..DATASETS)
        .map(|i| (format!("vol-{i:05}"), nodes[i % NODES]))
        .collect();
    let ids = emulator.seed(&volumes, true).unwrap();

    let config_bytes = serde_json::to_vec(&emulator.configured_datasets()).unwrap();
    let state_bytes = serde_json::to_vec(&emulator.state_datasets()).unwrap();
    let client = flocker::Client::new(&emulator.url().parse().unwrap(), &certs_dir).unwrap();
    let me = nodes[0];
    let reused = driver(
        &client,
        &dir.path().join("reused"),
        me,
        Duration::from_secs(3600),
    );
    let fresh = driver(&client, &dir.path().join("fresh"), me, Duration::ZERO);
    let name = VolumeName::new("vol-05000").unwrap();

    let decode_config =
        timed(|| async { serde_json::from_slice::<Vec<DatasetConfig>>(&config_bytes).unwrap() })
            .await;
    let decode_state =
        timed(|| async { serde_json::from_slice::<Vec<DatasetState>>(&state_bytes).unwrap() })
            .await;
    let fetch_config = timed(|| async { client.configuration().await.unwrap() }).await;
    let fetch_state = timed(|| async { client.state().await.unwrap() }).await;
    reused.get(&name).await.unwrap();
    let get_reused = timed(|| async { reused.get(&name).await.unwrap() }).await;
    let list_reused = timed(|| async { reused.list().await.unwrap().len() }).await;
    // Every answer is new and different: another node moved a dataset in between, so the plugin
    // decodes, refreshes what it remembers and chooses again each time.
    let mut flip = 0usize;
    let mut changed_call = |list: bool| {
        flip += 1;
        let (client, fresh, name) = (client.clone(), fresh.clone(), name.clone());
        let id = flocker::DatasetId(ids[1]);
        let to = flocker::NodeId(nodes[1 + flip % 2]);
        async move {
            client.move_dataset(id, to).await.unwrap();
            let started = Instant::now();
            if list {
                std::hint::black_box(fresh.list().await.unwrap().len());
            } else {
                std::hint::black_box(fresh.get(&name).await.unwrap());
            }
            started.elapsed()
        }
    };
    let mut get_fresh = Vec::new();
    let mut list_fresh = Vec::new();
    for _ in 0..ROUNDS {
        get_fresh.push(changed_call(false).await);
    }
    for _ in 0..ROUNDS {
        list_fresh.push(changed_call(true).await);
    }
    let listed = reused.list().await.unwrap().len();

    println!("# Decode cost benchmark (10,000 datasets)\n");
    println!(
        "Real driver and client, emulator over mTLS on loopback in the same process; {DATASETS} datasets \
         named like the original plugin's on {NODES} nodes; {ROUNDS} rounds each. {}; {}.\n",
        machine(),
        time::OffsetDateTime::now_utc().date()
    );
    println!(
        "Answer sizes: configuration {:.2} MB, state {:.2} MB; List answers {listed} volumes.\n",
        config_bytes.len() as f64 / 1e6,
        state_bytes.len() as f64 / 1e6
    );
    println!("| step | p50 | p90 | max |\n|---|---|---|---|");
    println!(
        "{}",
        row("decode configuration (bytes → datasets)", decode_config)
    );
    println!("{}", row("decode state (bytes → datasets)", decode_state));
    println!(
        "{}",
        row(
            "configuration request (TLS, emulator, decode)",
            fetch_config
        )
    );
    println!(
        "{}",
        row("state request (TLS, emulator, decode)", fetch_state)
    );
    println!("{}", row("Get, answer reused (select only)", get_reused));
    println!("{}", row("List, answer reused (select only)", list_reused));
    println!(
        "{}",
        row(
            "Get, new configuration each time (request + decode + select)",
            get_fresh
        )
    );
    println!(
        "{}",
        row(
            "List, new configuration each time (request + decode + select)",
            list_fresh
        )
    );
    emulator.shutdown().await.unwrap();
}
