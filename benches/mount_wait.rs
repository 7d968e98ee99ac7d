//! Benchmark report: how fast a Mount notices its dataset, what the wait costs the control service, and
//! how many control-service requests each Docker call makes.
//!
//! Runs the real driver against the emulator (real mTLS, real bind mounts), so it needs root; `make bench`
//! runs it inside a private mount namespace. Prints a Markdown report (kept in docs/benchmarks.md).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use flocker_docker_plugin::config::MountMode;
use flocker_docker_plugin::driver::{
    CreateOptions, DriverSettings, FlockerDriver, MountId, StateFile, VolumeDriver, VolumeName,
};
use flocker_docker_plugin::emulator::{self, Convergence, Emulator};
use flocker_docker_plugin::identity::Identity;
use flocker_docker_plugin::size::Size;
use flocker_docker_plugin::{certs, flocker};
use tokio::sync::watch;
use uuid::Uuid;

const ROUNDS: usize = 30;

fn driver(
    client: &flocker::Client,
    dir: &std::path::Path,
    uuid: Uuid,
    root: &std::path::Path,
) -> FlockerDriver {
    let settings = DriverSettings {
        agent_mount_root: root.to_path_buf(),
        flocker_root: root.to_path_buf(),
        mount_mode: MountMode::Propagated(dir.join("propagated")),
        default_size: Size::from_bytes(1 << 30),
        default_profile: None,
        mount_timeout: Duration::from_secs(30),
        state_file: StateFile::in_dir(&dir.join("state")),
        restart_grace: flocker_docker_plugin::driver::RESTART_GRACE,
        report_age: flocker_docker_plugin::driver::REPORT_AGE,
    };
    // A known node needs no discovery; the receiver keeps the value after the sender is gone.
    let (_, rx): (_, watch::Receiver<Identity>) =
        watch::channel(Identity::Known(flocker::NodeId(uuid)));
    FlockerDriver::new(client.clone(), settings, rx)
}

/// Every request path the plugin uses, for totals.
fn total_requests(emulator: &Emulator, dataset: Option<&str>) -> usize {
    let mut paths = vec![
        ("GET", "/v1/configuration/datasets".to_string()),
        ("POST", "/v1/configuration/datasets".to_string()),
        ("GET", "/v1/state/datasets".to_string()),
        ("GET", "/v1/configuration/leases".to_string()),
        ("POST", "/v1/configuration/leases".to_string()),
    ];
    if let Some(id) = dataset {
        paths.push(("POST", format!("/v1/configuration/datasets/{id}")));
        paths.push(("DELETE", format!("/v1/configuration/datasets/{id}")));
        paths.push(("DELETE", format!("/v1/configuration/leases/{id}")));
    }
    paths
        .iter()
        .map(|(m, p)| emulator.request_count(m, p))
        .sum()
}

fn dataset_of(emulator: &Emulator, name: &str) -> String {
    emulator
        .configured_datasets()
        .into_iter()
        .find(|d| d["metadata"]["name"] == name && d["deleted"] != true)
        .and_then(|d| d["dataset_id"].as_str().map(str::to_string))
        .expect("dataset exists")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark makes real mounts: run it as root (make bench)"
    );
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    certs::generate(&certs_dir, &certs::CertOptions::default()).unwrap();
    let uuids = [Uuid::new_v4(), Uuid::new_v4()];
    let roots = [dir.path().join("a/flocker"), dir.path().join("b/flocker")];
    let emulator = Emulator::start(emulator::Config {
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        certs_dir: certs_dir.clone(),
        data_dir: dir.path().join("emulator"),
        nodes: (0..2)
            .map(|i| emulator::Node {
                uuid: uuids[i],
                era: Uuid::new_v4(),
                host: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + i as u8)),
                mount_root: roots[i].clone(),
            })
            .collect(),
        convergence: Convergence::Manual,
        // As on a host where the agent's root propagates: the driver verifies it (SPEC §9.3).
        share_mount_roots: true,
    })
    .unwrap();
    let client = flocker::Client::new(&emulator.url().parse().unwrap(), &certs_dir).unwrap();
    let a = driver(&client, &dir.path().join("a"), uuids[0], &roots[0]);
    let b = driver(&client, &dir.path().join("b"), uuids[1], &roots[1]);

    // 1. Requests per call.
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let name = VolumeName::new("counted").unwrap();
    let id = MountId("c1".into());
    emulator.reset_counts();
    b.create(&name, CreateOptions::default()).await.unwrap();
    counts.insert("Create (new volume)", total_requests(&emulator, None));
    emulator.reset_counts();
    b.create(&name, CreateOptions::default()).await.unwrap();
    counts.insert("Create (exists)", total_requests(&emulator, None));
    let dataset = dataset_of(&emulator, "counted");
    emulator.converge().await;
    emulator.reset_counts();
    b.get(&name).await.unwrap();
    counts.insert("Get", total_requests(&emulator, Some(&dataset)));
    emulator.reset_counts();
    b.list().await.unwrap();
    counts.insert(
        "List (any number of volumes)",
        total_requests(&emulator, Some(&dataset)),
    );
    emulator.reset_counts();
    b.mount(&name, &id).await.unwrap();
    counts.insert(
        "Mount (dataset already here)",
        total_requests(&emulator, Some(&dataset)),
    );
    emulator.reset_counts();
    b.mount(&name, &MountId("c2".into())).await.unwrap();
    counts.insert(
        "Mount (already mounted by another container)",
        total_requests(&emulator, Some(&dataset)),
    );
    emulator.reset_counts();
    b.path(&name).await.unwrap();
    counts.insert("Path", total_requests(&emulator, Some(&dataset)));
    emulator.reset_counts();
    b.unmount(&name, &MountId("c2".into())).await.unwrap();
    counts.insert(
        "Unmount (not the last)",
        total_requests(&emulator, Some(&dataset)),
    );
    emulator.reset_counts();
    b.unmount(&name, &id).await.unwrap();
    counts.insert(
        "Unmount (last: unmount + lease release)",
        total_requests(&emulator, Some(&dataset)),
    );
    emulator.reset_counts();
    b.remove(&name).await.unwrap();
    counts.insert("Remove", total_requests(&emulator, Some(&dataset)));

    // 2. Move detection: from the state showing the dataset here to Mount returning.
    let mut latencies = Vec::new();
    let mut state_polls_per_mount = Vec::new();
    for round in 0..ROUNDS {
        let name = VolumeName::new(&format!("moving-{round}")).unwrap();
        b.create(&name, CreateOptions::default()).await.unwrap();
        emulator.converge().await;
        let dataset = dataset_of(&emulator, name.as_str());
        let move_path = format!("/v1/configuration/datasets/{dataset}");
        emulator.reset_counts();
        let driver = a.clone();
        let mount_name = name.clone();
        let mount = tokio::spawn(async move {
            let result = driver.mount(&mount_name, &MountId("m".into())).await;
            (result, Instant::now())
        });
        while emulator.request_count("POST", &move_path) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Let the waiter settle into its polling rhythm at a random phase.
        tokio::time::sleep(Duration::from_millis(150 + (round as u64 * 37) % 100)).await;
        emulator.converge().await;
        let shown = Instant::now();
        let (result, returned) = mount.await.unwrap();
        result.unwrap();
        latencies.push(returned.saturating_duration_since(shown));
        state_polls_per_mount.push(emulator.request_count("GET", "/v1/state/datasets"));
        a.unmount(&name, &MountId("m".into())).await.unwrap();
    }
    latencies.sort();

    // 3. Poll rate while volumes wait: 1 and 20 volumes waiting 3 s for moves that do not converge.
    let mut rates = Vec::new();
    for waiting in [1usize, 20] {
        let mut names = Vec::new();
        for i in 0..waiting {
            let name = VolumeName::new(&format!("waiting-{waiting}-{i}")).unwrap();
            b.create(&name, CreateOptions::default()).await.unwrap();
            names.push(name);
        }
        emulator.converge().await;
        emulator.reset_counts();
        let window = Duration::from_secs(3);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for name in &names {
            let driver = a.clone();
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(window, driver.mount(&name, &MountId("w".into()))).await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let polls = emulator.request_count("GET", "/v1/state/datasets");
        rates.push((waiting, polls as f64 / started.elapsed().as_secs_f64()));
        emulator.converge().await;
    }

    println!("# Mount wait benchmark\n");
    println!("Real driver, emulator over mTLS on loopback, real bind mounts; {ROUNDS} rounds.\n");
    println!("## Move detection: state shows the dataset here → Mount returns\n");
    println!("| p50 | p90 | max | mean |\n|---|---|---|---|");
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    println!(
        "| {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |\n",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.9).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3
    );
    println!("## State polls while Mounts wait (3 s window)\n");
    println!("| volumes waiting | state requests/s in all | per waiting volume |\n|---|---|---|");
    for (waiting, rate) in rates {
        println!("| {waiting} | {rate:.1} | {:.2} |", rate / waiting as f64);
    }
    println!("\n## Control-service requests per Docker call\n");
    println!("| call | requests |\n|---|---|");
    for (call, n) in counts {
        println!("| {call} | {n} |");
    }
    let max_polls = state_polls_per_mount.iter().max().unwrap();
    println!("\nState polls per moving Mount (whole wait incl. settle time): max {max_polls}.");
    emulator.shutdown().await.unwrap();
}
