//! Benchmark report for SPEC §9.5: does the plugin's socket stay responsive while Mounts are in flight?
//!
//! The real `FlockerDriver` is served through `protocol::router` on a real Unix socket, against the
//! emulator over real mTLS, with real bind mounts (root; `make bench` runs it in a private mount
//! namespace). While 50 Mounts are in flight, a separate client measures `/VolumeDriver.Capabilities`
//! and `/VolumeDriver.Path` round trips over the socket in four phases:
//!
//! - **idle**: nothing in flight (the baseline);
//! - **waiting**: 50 Mounts on node A wait for their datasets to move from node B (manual convergence,
//!   so none can finish during the window);
//! - **completing**: the emulator converges and all 50 Mounts finish at once: mount-table reads, bind
//!   mounts and state-file fsyncs, the work that would stall the socket if it ran on the async workers;
//! - **unmounting**: 50 Unmounts at once (unbinds, fsyncs, lease releases).
//!
//! Each component runs on its own runtime, as separate processes would: the emulator (control service
//! and agent), the "engine" sending Mounts, and the probe; the plugin's runtime is built as `main.rs`
//! builds it, and it logs as the daemon does (text, `info`) into a pipe that another thread drains.
//! A plain thread sleeping 1 ms at a time records how late it wakes ("Wakeup" rows): when it stalls
//! too, the machine was busy, not the plugin's workers.
//!
//! Prints a Markdown report (kept in docs/benchmarks.md). Asserts no timing inside tests: when a p99
//! reaches the 10 ms target it prints `TARGET MISSED` and exits 1, so a regression is visible.

#[path = "common/engine.rs"]
mod engine;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flocker_docker_plugin::config::MountMode;
use flocker_docker_plugin::driver::{
    CreateOptions, DriverSettings, FlockerDriver, StateFile, VolumeDriver, VolumeName,
};
use flocker_docker_plugin::emulator::{self, Convergence, Emulator};
use flocker_docker_plugin::flocker::{DatasetId, NodeId};
use flocker_docker_plugin::identity::Identity;
use flocker_docker_plugin::size::Size;
use flocker_docker_plugin::{certs, flocker, protocol, server};
use serde_json::json;
use tokio::runtime::Runtime;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use engine::Engine;

/// Mounts in flight at once (SPEC §9.5).
const VOLUMES: usize = 50;
/// Each round moves the 50 datasets to node A (Mounts), then back to B.
const ROUNDS: usize = 8;
/// How long the 50 Mounts are held waiting in each round.
const WAIT_WINDOW: Duration = Duration::from_secs(1);
/// The baseline window.
const IDLE_WINDOW: Duration = Duration::from_secs(1);
/// Pause between two probes (one probe in flight at a time, Capabilities and Path alternating).
const PROBE_GAP: Duration = Duration::from_millis(1);
/// SPEC §9.5: Capabilities and Path answer in under 10 ms.
const TARGET: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Capabilities,
    Path,
    /// Not a call: how late a plain thread wakes from a 1 ms sleep, for telling the plugin's stalls
    /// from the machine's (another build, the agent's mount work, fsync).
    Wakeup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Waiting,
    Completing,
    Unmounting,
}

const PHASES: [(Phase, &str); 4] = [
    (Phase::Idle, "idle (nothing in flight)"),
    (Phase::Waiting, "50 Mounts waiting for moves"),
    (Phase::Completing, "50 Mounts completing at once"),
    (Phase::Unmounting, "50 Unmounts at once"),
];

/// One probe: when it was sent, what, and how long until its whole answer was read.
struct Sample {
    sent: Instant,
    call: Call,
    latency: Duration,
}

/// A phase's time span and what was in flight.
struct Window {
    phase: Phase,
    start: Instant,
    end: Instant,
    in_flight_start: usize,
    in_flight_end: usize,
}

impl Engine {
    async fn mount(&self, name: &str, id: &str) -> Result<String, String> {
        let value = self
            .call("Mount", json!({ "Name": name, "ID": id }))
            .await?;
        match value["Mountpoint"].as_str() {
            Some(path) if !path.is_empty() => Ok(path.to_string()),
            _ => Err(format!("Mount {name}: no mountpoint in {value}")),
        }
    }
}

/// Mounts or Unmounts sent at once; each task returns its result and when it was answered.
struct Batch {
    answered: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<(Result<(), String>, Instant)>>,
}

impl Batch {
    fn in_flight(&self) -> usize {
        self.tasks.len() - self.answered.load(Ordering::SeqCst)
    }

    /// Waits for every answer; panics on any failure; returns when the last one came.
    fn finish(self, engine_rt: &Runtime) -> Instant {
        let results = engine_rt.block_on(async {
            let mut results = Vec::with_capacity(self.tasks.len());
            for task in self.tasks {
                results.push(task.await);
            }
            results
        });
        let mut last = None;
        for result in results {
            let (outcome, answered) = result.expect("engine task");
            outcome.unwrap_or_else(|e| panic!("a call of the batch failed: {e}"));
            last = last.max(Some(answered));
        }
        last.expect("a non-empty batch")
    }
}

fn send_all(engine_rt: &Runtime, engine: &Engine, call: &'static str, round: usize) -> Batch {
    let answered = Arc::new(AtomicUsize::new(0));
    let tasks = (0..VOLUMES)
        .map(|i| {
            let (engine, answered) = (engine.clone(), answered.clone());
            engine_rt.spawn(async move {
                let (name, id) = (volume(i), format!("container-{round}-{i}"));
                let outcome = match call {
                    "Mount" => engine.mount(&name, &id).await.map(drop),
                    _ => engine
                        .call(call, json!({ "Name": name, "ID": id }))
                        .await
                        .map(drop),
                };
                answered.fetch_add(1, Ordering::SeqCst);
                (outcome, Instant::now())
            })
        })
        .collect();
    Batch { answered, tasks }
}

fn volume(i: usize) -> String {
    format!("busy-{i:02}")
}

fn settings(dir: &Path, root: &Path) -> DriverSettings {
    DriverSettings {
        agent_mount_root: root.to_path_buf(),
        flocker_root: root.to_path_buf(),
        mount_mode: MountMode::Propagated(dir.join("propagated")),
        default_size: Size::from_bytes(1 << 30),
        default_profile: None,
        // Far longer than a round: no Mount may give up while it is held waiting.
        mount_timeout: Duration::from_secs(120),
        state_file: StateFile::in_dir(&dir.join("state")),
        restart_grace: flocker_docker_plugin::driver::RESTART_GRACE,
        report_age: flocker_docker_plugin::driver::REPORT_AGE,
    }
}

fn known(uuid: Uuid) -> watch::Receiver<Identity> {
    // The receiver keeps the value after the sender is gone.
    watch::channel(Identity::Known(NodeId(uuid))).1
}

fn dataset_of(emulator: &Emulator, name: &str) -> DatasetId {
    emulator
        .configured_datasets()
        .into_iter()
        .find(|d| d["metadata"]["name"] == name && d["deleted"] != true)
        .and_then(|d| d["dataset_id"].as_str().and_then(|s| s.parse().ok()))
        .map(DatasetId)
        .expect("dataset exists")
}

/// Waits (bounded) for a condition another thread or process brings about.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "gave up waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Probes Capabilities and Path alternately, one at a time, until `stop`; on its own thread and runtime.
fn start_probe(
    socket: PathBuf,
    path_volume: String,
    mountpoint: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Sample>> {
    let thread = std::thread::Builder::new().name("probe".into());
    thread
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let engine = Engine::new(&socket);
                let mut samples = Vec::new();
                for call in [Call::Capabilities, Call::Path].into_iter().cycle() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let sent = Instant::now();
                    let answer = if call == Call::Path {
                        engine.call("Path", json!({ "Name": path_volume })).await
                    } else {
                        engine.call("Capabilities", json!({})).await
                    };
                    let latency = sent.elapsed();
                    let answer = answer.unwrap_or_else(|e| panic!("probe {call:?} failed: {e}"));
                    if call == Call::Path {
                        assert_eq!(answer["Mountpoint"], mountpoint.as_str());
                    } else {
                        assert_eq!(answer["Capabilities"]["Scope"], "global", "{answer}");
                    }
                    samples.push(Sample {
                        sent,
                        call,
                        latency,
                    });
                    tokio::time::sleep(PROBE_GAP).await;
                }
                samples
            })
        })
        .unwrap()
}

/// A plain thread, outside every runtime, sleeping 1 ms at a time and recording how late it wakes.
fn start_control(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Sample>> {
    let thread = std::thread::Builder::new().name("control".into());
    thread
        .spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                std::thread::sleep(Duration::from_millis(1));
                samples.push(Sample {
                    sent,
                    call: Call::Wakeup,
                    latency: sent.elapsed().saturating_sub(Duration::from_millis(1)),
                });
            }
            samples
        })
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `BENCH_MAX_BLOCKING_THREADS`, for experiments only: caps the plugin runtime's blocking pool,
/// which `main.rs` leaves at Tokio's default (512).
fn max_blocking_threads() -> Option<usize> {
    let n = std::env::var("BENCH_MAX_BLOCKING_THREADS").ok()?;
    Some(n.parse().expect("BENCH_MAX_BLOCKING_THREADS is a number"))
}

/// The 1-minute load average: another build on the machine shows here.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({model}), Linux {}", kernel.trim())
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark makes real mounts: run it as root (make bench)"
    );
    let load_before = load();
    let dir = tempfile::tempdir().unwrap();
    // The plugin logs as the daemon does (text, info, one line per call) into a pipe, as into its
    // stderr; another thread drains it into a file, as dockerd collects a managed plugin's output.
    let (mut from_plugin, to_reader) = std::io::pipe().unwrap();
    let mut log = std::fs::File::create(dir.path().join("plugin.log")).unwrap();
    std::thread::spawn(move || std::io::copy(&mut from_plugin, &mut log));
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::sync::Mutex::new(to_reader))
        .with_ansi(false)
        .init();

    let certs_dir = dir.path().join("certs");
    certs::generate(&certs_dir, &certs::CertOptions::default()).unwrap();
    let (a_uuid, b_uuid) = (Uuid::new_v4(), Uuid::new_v4());
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let (a_root, b_root) = (a_dir.join("flocker"), b_dir.join("flocker"));

    // The control service and its agent: another process on the same host in production.
    let emulator_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("emulator")
        .enable_all()
        .build()
        .unwrap();
    let emulator = {
        let _in = emulator_rt.enter();
        Emulator::start(emulator::Config {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            certs_dir: certs_dir.clone(),
            data_dir: dir.path().join("emulator"),
            nodes: [(a_uuid, &a_root, 10), (b_uuid, &b_root, 11)]
                .into_iter()
                .map(|(uuid, root, host)| emulator::Node {
                    uuid,
                    era: Uuid::new_v4(),
                    host: IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)),
                    mount_root: root.clone(),
                })
                .collect(),
            convergence: Convergence::Manual,
            // As on a host where the agent's root propagates: the driver verifies it (SPEC §9.3).
            share_mount_roots: true,
        })
        .unwrap()
    };
    let converge = || emulator_rt.block_on(emulator.converge());
    let client = flocker::Client::new(&emulator.url().parse().unwrap(), &certs_dir).unwrap();

    // The plugin under test on node A, served as the daemon serves it.
    let mut plugin_builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = max_blocking_threads() {
        plugin_builder.max_blocking_threads(n);
    }
    // Named, so a scheduler trace (`perf sched`) tells its threads (workers and blocking pool) apart.
    let plugin_rt = plugin_builder
        .thread_name("plugin")
        .enable_all()
        .build()
        .unwrap();
    let socket = a_dir.join("flocker.sock");
    let (stop_serving, stopped) = oneshot::channel::<()>();
    let (a, served) = plugin_rt.block_on(async {
        let listener = server::bind(&socket).unwrap();
        let driver = FlockerDriver::new(client.clone(), settings(&a_dir, &a_root), known(a_uuid));
        driver.spawn_reconcile().await.unwrap();
        let app = protocol::router(Arc::new(driver.clone()));
        let served = tokio::spawn(server::serve(listener, socket.clone(), app, async move {
            let _ = stopped.await;
        }));
        (driver, served)
    });

    // The engine: Mounts and Unmounts for node A, and node B's plugin creating the 50 volumes there.
    let engine_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("engine")
        .enable_all()
        .build()
        .unwrap();
    let engine = Engine::new(&socket);
    let b = engine_rt.block_on(async {
        FlockerDriver::new(client.clone(), settings(&b_dir, &b_root), known(b_uuid))
    });
    engine_rt.block_on(async {
        for i in 0..VOLUMES {
            let name = VolumeName::new(&volume(i)).unwrap();
            b.create(&name, CreateOptions::default()).await.unwrap();
        }
        engine
            .call("Create", json!({ "Name": "probe" }))
            .await
            .unwrap();
    });
    converge();
    let probe_mountpoint = engine_rt.block_on(engine.mount("probe", "prober")).unwrap();
    let datasets: Vec<DatasetId> = (0..VOLUMES)
        .map(|i| dataset_of(&emulator, &volume(i)))
        .collect();

    let stop_probe = Arc::new(AtomicBool::new(false));
    let probe = start_probe(
        socket.clone(),
        "probe".into(),
        probe_mountpoint.clone(),
        stop_probe.clone(),
    );
    let control = start_control(stop_probe.clone());
    let mut windows = Vec::new();
    // Let the probe's connection settle before the baseline.
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    std::thread::sleep(IDLE_WINDOW);
    windows.push(Window {
        phase: Phase::Idle,
        start,
        end: Instant::now(),
        in_flight_start: 0,
        in_flight_end: 0,
    });

    let mut settle_times = Vec::new();
    for round in 0..ROUNDS {
        if round > 0 {
            // Back to node B (node A released its leases when it unmounted), for another move.
            engine_rt.block_on(async {
                for dataset in &datasets {
                    client.move_dataset(*dataset, NodeId(b_uuid)).await.unwrap();
                }
            });
            converge();
        }
        emulator.reset_counts();
        let mounts = send_all(&engine_rt, &engine, "Mount", round);
        // Truly in flight: each Mount has taken its lease and asked for its move.
        wait_until("all 50 Mounts asked for their moves", || {
            datasets.iter().all(|d| {
                emulator.request_count("POST", &format!("/v1/configuration/datasets/{d}")) > 0
            })
        });
        let start = Instant::now();
        let in_flight_start = mounts.in_flight();
        std::thread::sleep(WAIT_WINDOW);
        windows.push(Window {
            phase: Phase::Waiting,
            start,
            end: Instant::now(),
            in_flight_start,
            in_flight_end: mounts.in_flight(),
        });

        // The agent moves all 50 at once; every Mount notices on the same poll and binds.
        let start = Instant::now();
        let in_flight_start = mounts.in_flight();
        converge();
        let converged = Instant::now();
        let end = mounts.finish(&engine_rt);
        settle_times.push((converged - start, end - converged));
        windows.push(Window {
            phase: Phase::Completing,
            start,
            end,
            in_flight_start,
            in_flight_end: 0,
        });

        let start = Instant::now();
        let unmounts = send_all(&engine_rt, &engine, "Unmount", round);
        let in_flight_start = unmounts.in_flight();
        let end = unmounts.finish(&engine_rt);
        windows.push(Window {
            phase: Phase::Unmounting,
            start,
            end,
            in_flight_start,
            in_flight_end: 0,
        });
        wait_until("node A released the 50 leases", || {
            emulator.leases().len() == 1 // the probe volume's
        });
    }
    stop_probe.store(true, Ordering::SeqCst);
    let mut samples = probe.join().expect("probe thread");
    samples.extend(control.join().expect("control thread"));

    // Clean up: the probe's bind, the plugin, the emulator's mounts.
    engine_rt
        .block_on(engine.call("Unmount", json!({ "Name": "probe", "ID": "prober" })))
        .unwrap();
    plugin_rt.block_on(async {
        a.stop_background();
        let _ = stop_serving.send(());
        served.await.unwrap().unwrap();
        a.shutdown(Duration::from_secs(5)).await;
    });
    engine_rt.block_on(b.shutdown(Duration::from_secs(5)));
    emulator_rt.block_on(emulator.shutdown()).unwrap();

    // `exit` below skips destructors: remove the files now.
    drop(dir);

    let loads = (load_before, load());
    let (report, missed) = report(&samples, &windows, &settle_times, loads);
    print!("{report}");
    if !missed.is_empty() {
        for line in missed {
            println!("TARGET MISSED: {line}");
        }
        std::process::exit(1);
    }
}

/// The Markdown report, and one line per phase and call whose p99 reached the target.
fn report(
    samples: &[Sample],
    windows: &[Window],
    settle_times: &[(Duration, Duration)],
    (load_before, load_after): (String, String),
) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut missed = Vec::new();
    let date = time::OffsetDateTime::now_utc().date();
    let _ = writeln!(out, "# Responsiveness benchmark (SPEC §9.5)\n");
    let _ = writeln!(
        out,
        "Real driver behind the real router on a Unix socket; emulator over mTLS on loopback; real bind \
         mounts and fsyncs. {machine}; load average {load_before} before, {load_after} after; {date}. \
         {ROUNDS} rounds; one probe in flight at a time, Capabilities and Path alternating, {gap} ms \
         apart. Target: p99 < {target} ms.{experiment}\n",
        experiment = max_blocking_threads().map_or(String::new(), |n| format!(
            " **Experiment: blocking pool capped at {n} threads (the daemon does not cap it).**"
        )),
        machine = machine(),
        gap = PROBE_GAP.as_millis(),
        target = TARGET.as_millis(),
    );
    let _ = writeln!(
        out,
        "| phase | in flight (start → end) | window | call | samples | p50 | p99 | max |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for (phase, label) in PHASES {
        let spans: Vec<&Window> = windows.iter().filter(|w| w.phase == phase).collect();
        let in_flight = {
            let starts: Vec<usize> = spans.iter().map(|w| w.in_flight_start).collect();
            let ends: Vec<usize> = spans.iter().map(|w| w.in_flight_end).collect();
            format!(
                "{} → {}",
                starts.iter().min().unwrap(),
                ends.iter().max().unwrap()
            )
        };
        let total: Duration = spans.iter().map(|w| w.end - w.start).sum();
        let window = format!(
            "{} × {:.0} ms",
            spans.len(),
            total.as_secs_f64() * 1e3 / spans.len() as f64
        );
        for call in [Call::Capabilities, Call::Path, Call::Wakeup] {
            let mut latencies: Vec<Duration> = samples
                .iter()
                .filter(|s| s.call == call)
                .filter(|s| spans.iter().any(|w| s.sent >= w.start && s.sent < w.end))
                .map(|s| s.latency)
                .collect();
            latencies.sort();
            if latencies.is_empty() {
                let _ = writeln!(
                    out,
                    "| {label} | {in_flight} | {window} | {call:?} | 0 | | | |"
                );
                missed.push(format!("{label}, {call:?}: no samples"));
                continue;
            }
            let p99 = percentile(&latencies, 0.99);
            let _ = writeln!(
                out,
                "| {label} | {in_flight} | {window} | {call:?} | {} | {} | {} | {} |",
                latencies.len(),
                ms(percentile(&latencies, 0.5)),
                ms(p99),
                ms(*latencies.last().unwrap()),
            );
            if p99 >= TARGET && call != Call::Wakeup {
                missed.push(format!("{label}, {call:?}: p99 {}", ms(p99)));
            }
        }
    }
    let _ = writeln!(
        out,
        "\n\"Completing\" runs from the convergence call (the agent's 100 mount changes) to the last \
         Mount's answer. Per round, convergence / convergence → last answer:"
    );
    for (i, (converge, settle)) in settle_times.iter().enumerate() {
        let _ = writeln!(
            out,
            "- round {}: {} / {}",
            i + 1,
            ms(*converge),
            ms(*settle)
        );
    }
    let mut slowest: Vec<(&Sample, &Window)> = samples
        .iter()
        .filter(|s| s.call != Call::Wakeup)
        .filter_map(|s| {
            windows
                .iter()
                .find(|w| s.sent >= w.start && s.sent < w.end)
                .map(|w| (s, w))
        })
        .collect();
    slowest.sort_by_key(|(s, _)| std::cmp::Reverse(s.latency));
    let _ = writeln!(
        out,
        "\nSlowest probes (phase, ms into its window; the control thread's worst wake-up delay while \
         the probe was out, overlapping sleeps included):"
    );
    for (sample, window) in slowest.iter().take(5) {
        let label = PHASES.iter().find(|(p, _)| *p == window.phase).unwrap().1;
        let answered = sample.sent + sample.latency;
        let stalled = samples
            .iter()
            .filter(|w| w.call == Call::Wakeup)
            // A 1 ms sleep that started before the answer and ended (late) after the probe was sent.
            .filter(|w| {
                w.sent < answered && w.sent + w.latency + Duration::from_millis(1) > sample.sent
            })
            .map(|w| w.latency)
            .max()
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "- {:?} {}: {label}, {:.0} ms in; wake-up delay {}",
            sample.call,
            ms(sample.latency),
            (sample.sent - window.start).as_secs_f64() * 1e3,
            ms(stalled)
        );
    }
    (out, missed)
}
