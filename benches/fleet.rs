//! Benchmark report: a fleet of plugin instances against one control service holding 10,000
//! datasets, under a churn workload sent over the Docker plugin protocol, with a control-service
//! restart part-way; and what the original Python plugin would have asked for the same calls.
//!
//! Everything is a real process: `flocker-emulator serve --fleet` (the control service and every
//! node's dataset agent, real bind mounts for the volumes in use, 10,000 datasets in all) and one
//! `flocker-docker-plugin` per node (its own socket, state dir, mount roots and `NODE_UUID`, mutual
//! TLS to the emulator). This process plays each node's Docker engine. Needs root; `make
//! bench-fleet` runs it inside a private mount namespace. Prints Markdown (docs/benchmarks.md).
//!
//! `FLEET_NODES` (default 100) and `FLEET_SECONDS` (steady window, default 60) change the size.

#[path = "common/engine.rs"]
#[allow(dead_code)] // Engine::new: every node here shares one pool.
mod engine;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flocker_docker_plugin::certs;
use hyper_util::client::legacy::Client as HyperClient;
use hyperlocal::UnixClientExt;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

use engine::Engine;

/// Datasets in the cluster, in use or not.
const DATASETS: usize = 10_000;
/// Volumes per node that the workload uses (the rest are idle datasets).
const VOLUMES_PER_NODE: usize = 3;
/// Share of container starts that pick a volume last used on another node.
const MOVE_SHARE: f64 = 0.2;
/// Pause between two containers on one node (uniform), and how long a container runs (uniform).
const THINK: (f64, f64) = (4.0, 12.0);
const HOLD: (f64, f64) = (1.0, 3.0);
/// Pause between two `docker volume ls` on one node (uniform).
const LIST_EVERY: (f64, f64) = (20.0, 40.0);
const WARMUP: Duration = Duration::from_secs(10);
const AFTER_RESTART: Duration = Duration::from_secs(10);
/// Between the end of the steady window and the restart: longer than a Mount takes here.
const GAP: Duration = Duration::from_secs(5);
const OUTAGE: &str = "2s";
const LAG: &str = "1s";

/// Child processes, killed when the bench ends or panics (the release profile aborts on panic,
/// so the panic hook does it).
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn track(child: &Child) {
    CHILDREN.lock().unwrap().push(child.id());
}

fn kill_all(signal: nix::sys::signal::Signal) {
    for pid in CHILDREN.lock().unwrap().iter() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), signal);
    }
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// One Docker call as the engine saw it.
#[derive(Debug, Clone)]
struct Call {
    kind: &'static str,
    started: Instant,
    took: Duration,
    ok: bool,
    /// Mount of a volume last used on another node.
    moved: bool,
    /// The plugin's error, if it failed.
    error: Option<String>,
}

/// Where each workload volume was last used, and whether a container uses it now.
struct Volumes {
    home: Vec<usize>,
    busy: Vec<bool>,
}

fn volume_name(i: usize) -> String {
    format!("fleet-{i:04}")
}

fn uniform(rng: &mut impl Rng, (low, high): (f64, f64)) -> Duration {
    Duration::from_secs_f64(rng.random_range(low..high))
}

/// One node's containers: Capabilities and Get before each Mount (as `docker run` does), the
/// container runs, then Unmount; a share of them use a volume last used on another node.
async fn containers(
    node: usize,
    engine: Engine,
    volumes: Arc<Mutex<Volumes>>,
    calls: Arc<Mutex<Vec<Call>>>,
    until: Instant,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(node as u64);
    tokio::time::sleep(uniform(&mut rng, (0.0, THINK.1))).await;
    let mut serial = 0;
    while Instant::now() < until {
        let picked = {
            let mut v = volumes.lock().unwrap();
            let free = |want_here: bool| -> Vec<usize> {
                (0..v.home.len())
                    .filter(|&i| !v.busy[i] && (v.home[i] == node) == want_here)
                    .collect()
            };
            let elsewhere = rng.random_bool(MOVE_SHARE);
            let mut choice = free(!elsewhere);
            if choice.is_empty() {
                choice = free(elsewhere);
            }
            let picked = (!choice.is_empty()).then(|| choice[rng.random_range(0..choice.len())]);
            if let Some(i) = picked {
                v.busy[i] = true;
            }
            picked.map(|i| (i, v.home[i] != node))
        };
        if let Some((i, moved)) = picked {
            serial += 1;
            let name = volume_name(i);
            let id = format!("c{node}x{serial}");
            let record = |kind, started: Instant, result: &Result<Value, String>, moved| {
                calls.lock().unwrap().push(Call {
                    kind,
                    started,
                    took: started.elapsed(),
                    ok: result.is_ok(),
                    moved,
                    error: result.as_ref().err().cloned(),
                })
            };
            let t = Instant::now();
            let answer = engine.call("Capabilities", json!({})).await;
            record("Capabilities", t, &answer, false);
            let t = Instant::now();
            let answer = engine.call("Get", json!({ "Name": name })).await;
            record("Get", t, &answer, false);
            let t = Instant::now();
            let mounted = engine
                .call("Mount", json!({ "Name": name, "ID": id }))
                .await;
            record("Mount", t, &mounted, moved);
            if mounted.is_ok() {
                volumes.lock().unwrap().home[i] = node;
                tokio::time::sleep(uniform(&mut rng, HOLD)).await;
                let t = Instant::now();
                let answer = engine
                    .call("Unmount", json!({ "Name": name, "ID": id }))
                    .await;
                record("Unmount", t, &answer, false);
            }
            volumes.lock().unwrap().busy[i] = false;
        }
        tokio::time::sleep(uniform(&mut rng, THINK)).await;
    }
}

/// One node's `docker volume ls`.
async fn listings(node: usize, engine: Engine, calls: Arc<Mutex<Vec<Call>>>, until: Instant) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1_000_000 + node as u64);
    tokio::time::sleep(uniform(&mut rng, (0.0, LIST_EVERY.1))).await;
    while Instant::now() < until {
        let t = Instant::now();
        let answer = engine.call("List", json!({})).await;
        calls.lock().unwrap().push(Call {
            kind: "List",
            started: t,
            took: t.elapsed(),
            ok: answer.is_ok(),
            moved: false,
            error: answer.err(),
        });
        tokio::time::sleep(uniform(&mut rng, LIST_EVERY)).await;
    }
}

/// One reading of the emulator's counters and everyone's CPU time.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    routes: BTreeMap<(String, String), (u64, u64)>,
    emulator_cpu: f64,
    plugins_cpu: f64,
    bench_cpu: f64,
}

impl Sample {
    fn total(&self) -> (u64, u64) {
        self.routes
            .values()
            .fold((0, 0), |(r, b), (rr, bb)| (r + rr, b + bb))
    }
}

fn read_stats(path: &Path) -> BTreeMap<(String, String), (u64, u64)> {
    let Ok(text) = std::fs::read(path) else {
        return BTreeMap::new();
    };
    let value: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
    value["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                (
                    r["method"].as_str().unwrap_or("").to_string(),
                    r["route"].as_str().unwrap_or("").to_string(),
                ),
                (
                    r["requests"].as_u64().unwrap_or(0),
                    r["bytes"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

/// The sample closest to `at`.
fn at(samples: &[Sample], at: Instant) -> &Sample {
    samples
        .iter()
        .min_by_key(|s| if s.at > at { s.at - at } else { at - s.at })
        .expect("samples")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
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

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the fleet makes real mounts: run it as root (make bench-fleet)"
    );
    std::panic::set_hook(Box::new(|info| {
        kill_all(nix::sys::signal::Signal::SIGKILL);
        eprintln!("{info}");
    }));
    let nodes = env_or("FLEET_NODES", 100);
    let steady = Duration::from_secs(env_or("FLEET_SECONDS", 60) as u64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let load_before = load();
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    certs::generate(&certs_dir, &certs::CertOptions::default()).unwrap();
    let uuids: Vec<Uuid> = (0..nodes).map(|_| Uuid::new_v4()).collect();
    let node_dir = |i: usize| dir.path().join(format!("n{i}"));
    let fleet = json!({
        "nodes": (0..nodes).map(|i| json!({
            "uuid": uuids[i], "era": Uuid::new_v4(), "host": "127.0.0.1",
            "mount_root": node_dir(i).join("flocker"),
        })).collect::<Vec<_>>(),
        "volumes": (0..nodes * VOLUMES_PER_NODE).map(|v| json!({
            "name": volume_name(v), "node": uuids[v % nodes],
        })).collect::<Vec<_>>(),
        "inert": DATASETS - nodes * VOLUMES_PER_NODE,
    });
    std::fs::write(dir.path().join("fleet.json"), fleet.to_string()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stats = dir.path().join("stats.json");
    let emulator_log = std::fs::File::create(dir.path().join("emulator.log")).unwrap();
    let mut emulator = Command::new(env!("CARGO_BIN_EXE_flocker-emulator"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--lag",
            LAG,
        ])
        .args(["--restart-outage", OUTAGE, "--share-mount-root"])
        .arg("--certs")
        .arg(&certs_dir)
        .arg("--data-dir")
        .arg(dir.path().join("emulator"))
        .arg("--fleet")
        .arg(dir.path().join("fleet.json"))
        .arg("--stats-file")
        .arg(&stats)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(emulator_log)
        .spawn()
        .expect("start flocker-emulator");
    track(&emulator);
    let started = Instant::now();
    while !stats.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the emulator did not start: {}",
            std::fs::read_to_string(dir.path().join("emulator.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let emulator_ready = started.elapsed();

    // The plugins, in batches so their start-up reads do not all land at once.
    let mut plugins = Vec::new();
    let started = Instant::now();
    for (i, uuid) in uuids.iter().enumerate() {
        let d = node_dir(i);
        std::fs::create_dir_all(&d).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_flocker-docker-plugin"))
            .env_clear()
            .env("CONTROL_URL", format!("https://127.0.0.1:{port}"))
            .env("CERTS_DIR", &certs_dir)
            .env("SOCKET", d.join("plugin.sock"))
            .env("STATE_DIR", d.join("state"))
            .env("PROPAGATED_MOUNT", d.join("propagated"))
            .env("AGENT_MOUNT_ROOT", d.join("flocker"))
            .env("FLOCKER_ROOT", d.join("flocker"))
            .env("NODE_UUID", uuid.to_string())
            .env("CONFIG_FILE", "")
            .env("LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("plugin.log")).unwrap())
            .spawn()
            .expect("start flocker-docker-plugin");
        track(&child);
        plugins.push(child);
        if i % 10 == 9 {
            wait_ready(&node_dir, i + 1 - 10..i + 1);
        }
    }
    wait_ready(&node_dir, 0..nodes);
    let plugins_ready = started.elapsed();
    let plugin_pids: Vec<u32> = plugins.iter().map(Child::id).collect();
    let emulator_pid = emulator.id();
    let sample = move || Sample {
        at: Instant::now(),
        routes: read_stats(&stats),
        emulator_cpu: cpu_seconds(emulator_pid),
        plugins_cpu: plugin_pids.iter().map(|p| cpu_seconds(*p)).sum(),
        bench_cpu: cpu_seconds(std::process::id()),
    };

    // The workload: warm-up, steady window, restart, ten seconds after it, a little more.
    let t0 = Instant::now();
    // A gap after the steady window, so no call in it is still in flight at the restart.
    let restart_at = t0 + WARMUP + steady + GAP;
    let until = restart_at + Duration::from_secs(2) + AFTER_RESTART + Duration::from_secs(5);
    let volumes = Arc::new(Mutex::new(Volumes {
        home: (0..nodes * VOLUMES_PER_NODE).map(|v| v % nodes).collect(),
        busy: vec![false; nodes * VOLUMES_PER_NODE],
    }));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let mut samples = Vec::new();
    let mut restarted = None;
    runtime.block_on(async {
        let http = HyperClient::unix();
        for i in 0..nodes {
            let engine = Engine::with_client(&node_dir(i).join("plugin.sock"), http.clone());
            tokio::spawn(containers(
                i,
                engine.clone(),
                Arc::clone(&volumes),
                Arc::clone(&calls),
                until,
            ));
            tokio::spawn(listings(i, engine, Arc::clone(&calls), until));
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        while Instant::now() < until + HOLD_MAX {
            tick.tick().await;
            let s = tokio::task::block_in_place(&sample);
            samples.push(s);
            if restarted.is_none() && Instant::now() >= restart_at {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(emulator_pid as i32),
                    nix::sys::signal::Signal::SIGUSR1,
                );
                restarted = Some(Instant::now());
            }
        }
    });
    let load_after = load();
    let restarted = restarted.expect("restarted");
    let back = restarted + Duration::from_secs(2);

    // Stop everything: plugins first (SIGTERM removes their sockets), then the emulator, which
    // unmounts what its agent mounted.
    for p in &plugins {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    for p in &mut plugins {
        let _ = p.wait();
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(emulator_pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = emulator.wait();
    CHILDREN.lock().unwrap().clear();
    // Whatever is still mounted under the temporary directory (the emulator unmounts what it made,
    // but not if it could not finish) would stop its removal: detach it, deepest first.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut leftover: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .filter(|p| p.starts_with(dir.path()))
        .collect();
    leftover.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for path in &leftover {
        let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    }
    let dir_path = dir.path().to_path_buf();
    if let Err(e) = dir.close() {
        eprintln!("could not remove {}: {e}", dir_path.display());
    }

    let calls = calls.lock().unwrap().clone();
    let report = report(Report {
        nodes,
        steady,
        t0,
        restarted,
        back,
        samples: &samples,
        calls: &calls,
        emulator_ready,
        plugins_ready,
        load_before,
        load_after,
    });
    print!("{report}");
}

/// Runs past the end by the longest container, so the last Unmounts are counted.
const HOLD_MAX: Duration = Duration::from_secs(3);

fn wait_ready(node_dir: &dyn Fn(usize) -> PathBuf, range: std::ops::Range<usize>) {
    let started = Instant::now();
    for i in range {
        let log = node_dir(i).join("plugin.log");
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("start-up recovery done") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "plugin {i} did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

struct Report<'a> {
    nodes: usize,
    steady: Duration,
    t0: Instant,
    restarted: Instant,
    back: Instant,
    samples: &'a [Sample],
    calls: &'a [Call],
    emulator_ready: Duration,
    plugins_ready: Duration,
    load_before: String,
    load_after: String,
}

fn report(r: Report) -> String {
    let mut out = String::new();
    let (from, to) = (r.t0 + WARMUP, r.t0 + WARMUP + r.steady);
    let (s0, s1) = (at(r.samples, from), at(r.samples, to));
    let secs = (s1.at - s0.at).as_secs_f64();
    let steady_calls: Vec<&Call> = r
        .calls
        .iter()
        .filter(|c| c.started >= from && c.started < to)
        .collect();
    let count = |kind: &str| steady_calls.iter().filter(|c| c.kind == kind).count();
    let moves = steady_calls
        .iter()
        .filter(|c| c.kind == "Mount" && c.moved && c.ok)
        .count();
    let (req0, bytes0) = s0.total();
    let (req1, bytes1) = s1.total();
    let _ = writeln!(
        out,
        "# Fleet benchmark ({} nodes, {DATASETS} datasets)\n",
        r.nodes
    );
    let _ = writeln!(
        out,
        "{}; load average {} before, {} after; {}. Emulator ready in {:.1} s (seeded and converged), \
         {} plugins ready in {:.1} s. Steady window {:.0} s after {} s of warm-up.\n",
        machine(),
        r.load_before,
        r.load_after,
        time::OffsetDateTime::now_utc().date(),
        r.emulator_ready.as_secs_f64(),
        r.nodes,
        r.plugins_ready.as_secs_f64(),
        secs,
        WARMUP.as_secs()
    );
    let _ = writeln!(
        out,
        "Workload per node: a container every {}–{} s (Capabilities, Get, Mount; runs {}–{} s; \
         Unmount), {:.0}% of them on a volume last used on another node; `docker volume ls` \
         (List) every {}–{} s. {} volumes in use by the workload ({VOLUMES_PER_NODE} per node), \
         the other datasets idle. Emulator agent lag {LAG}.\n",
        THINK.0,
        THINK.1,
        HOLD.0,
        HOLD.1,
        MOVE_SHARE * 100.0,
        LIST_EVERY.0,
        LIST_EVERY.1,
        r.nodes * VOLUMES_PER_NODE
    );
    let _ = writeln!(out, "## Control service, steady window\n");
    let _ = writeln!(
        out,
        "| | requests/s | MB/s (answers) |\n|---|---|---|\n| all | {:.1} | {:.2} |",
        (req1 - req0) as f64 / secs,
        (bytes1 - bytes0) as f64 / secs / 1e6
    );
    for (key, (r1, b1)) in &s1.routes {
        let (r0, b0) = s0.routes.get(key).copied().unwrap_or((0, 0));
        if r1 > &r0 {
            let _ = writeln!(
                out,
                "| {} {} | {:.2} | {:.2} |",
                key.0,
                key.1,
                (r1 - r0) as f64 / secs,
                (b1 - b0) as f64 / secs / 1e6
            );
        }
    }
    let core = |a: f64, b: f64| (b - a) / secs * 100.0;
    let _ = writeln!(
        out,
        "\nCPU (share of one core, steady window): emulator {:.1}%, {} plugins {:.1}% in all \
         ({:.2}% each), this bench (the engines) {:.1}%. Moves: {:.2}/s ({moves}).\n",
        core(s0.emulator_cpu, s1.emulator_cpu),
        r.nodes,
        core(s0.plugins_cpu, s1.plugins_cpu),
        core(s0.plugins_cpu, s1.plugins_cpu) / r.nodes as f64,
        core(s0.bench_cpu, s1.bench_cpu),
        moves as f64 / secs
    );

    let _ = writeln!(out, "## Docker calls, steady window\n");
    let _ = writeln!(
        out,
        "| call | calls/s | failed | p50 | p99 | max |\n|---|---|---|---|---|---|"
    );
    type Matches = Box<dyn Fn(&Call) -> bool>;
    let mut kinds: Vec<(&str, Matches)> = vec![
        (
            "Capabilities",
            Box::new(|c: &Call| c.kind == "Capabilities"),
        ),
        ("Get", Box::new(|c: &Call| c.kind == "Get")),
        ("List", Box::new(|c: &Call| c.kind == "List")),
        (
            "Mount (volume last used here)",
            Box::new(|c: &Call| c.kind == "Mount" && !c.moved),
        ),
        (
            "Mount (moved from another node)",
            Box::new(|c: &Call| c.kind == "Mount" && c.moved),
        ),
        ("Unmount", Box::new(|c: &Call| c.kind == "Unmount")),
    ];
    for (label, matches) in kinds.drain(..) {
        let these: Vec<&&Call> = steady_calls.iter().filter(|c| matches(c)).collect();
        if these.is_empty() {
            continue;
        }
        let mut took: Vec<Duration> = these.iter().map(|c| c.took).collect();
        took.sort();
        let _ = writeln!(
            out,
            "| {label} | {:.2} | {} | {} | {} | {} |",
            these.len() as f64 / secs,
            these.iter().filter(|c| !c.ok).count(),
            ms(percentile(&took, 0.5)),
            ms(percentile(&took, 0.99)),
            ms(*took.last().unwrap())
        );
    }

    // The restart: per-second requests around it.
    let steady_rate = (req1 - req0) as f64 / secs;
    let (a0, a1) = (at(r.samples, r.back), at(r.samples, r.back + AFTER_RESTART));
    let after_rate = (a1.total().0 - a0.total().0) as f64 / (a1.at - a0.at).as_secs_f64();
    let _ = writeln!(out, "\n## Control-service restart\n");
    let _ = writeln!(
        out,
        "SIGUSR1 to the emulator at {:.0} s: it closes every connection and stops listening for \
         {OUTAGE}, then listens again with its configuration intact. Requests/s in the 10 s after \
         it listens again: {after_rate:.1}, {:.2}× the steady {steady_rate:.1} (target ≤ 2×). \
         Per second (s from the restart signal; requests, then the busiest route):\n",
        (r.restarted - r.t0).as_secs_f64(),
        after_rate / steady_rate
    );
    let _ = writeln!(out, "| s | requests | busiest route |\n|---|---|---|");
    for pair in r.samples.windows(2) {
        let (p, q) = (&pair[0], &pair[1]);
        if q.at < r.restarted - Duration::from_secs(3)
            || p.at > r.back + AFTER_RESTART + Duration::from_secs(2)
        {
            continue;
        }
        let busiest = q
            .routes
            .iter()
            .map(|(k, v)| (v.0 - p.routes.get(k).map_or(0, |x| x.0), k))
            .max()
            .map(|(n, k)| format!("{} {} ({n})", k.0, k.1))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {busiest} |",
            (q.at.duration_since(r.t0).as_secs_f64() - (r.restarted - r.t0).as_secs_f64()).round()
                as i64,
            q.total().0 - p.total().0
        );
    }
    let failed_around: BTreeMap<&str, usize> = r
        .calls
        .iter()
        .filter(|c| !c.ok && c.started >= r.restarted - Duration::from_secs(1))
        .fold(BTreeMap::new(), |mut m, c| {
            *m.entry(c.kind).or_default() += 1;
            m
        });
    let _ =
        writeln!(
        out,
        "\nDocker calls that failed from 1 s before the restart on: {failed_around:?}; when they \
         started (s from the restart signal): {:?}. What failed (whole run):\n",
        r.calls
            .iter()
            .filter(|c| !c.ok && c.started >= r.restarted - Duration::from_secs(1))
            .map(|c| (c.started.duration_since(r.restarted - Duration::from_secs(1)).as_secs()
                as i64)
                - 1)
            .collect::<Vec<_>>()
    );
    let mut errors: BTreeMap<(bool, String), usize> = BTreeMap::new();
    for c in r.calls.iter().filter(|c| !c.ok) {
        // Names, ids and the port vary: fold them so each kind of failure is one line.
        let text = c.error.clone().unwrap_or_default();
        let folded: Vec<String> = text
            .split(' ')
            .map(|w| {
                let bare = w.trim_end_matches([',', ':', ';', ')']);
                if bare.starts_with("fleet-") {
                    w.replace(bare, "VOL")
                } else if let Some(at) = w.find("127.0.0.1:") {
                    format!("{}CONTROL_URL…", &w[..at])
                } else if bare.len() == 36 && Uuid::parse_str(bare).is_ok() {
                    w.replace(bare, "ID")
                } else {
                    w.to_string()
                }
            })
            .collect();
        let short: String = folded.join(" ").chars().take(200).collect();
        let steady = c.started >= from && c.started < to;
        *errors.entry((steady, short)).or_default() += 1;
    }
    for ((steady, text), n) in &errors {
        let when = if *steady {
            "steady window"
        } else {
            "around the restart"
        };
        let _ = writeln!(out, "- {when}, {n} × `{text}`");
    }
    let _ = writeln!(out);

    // The original plugin for the same Docker calls (flocker-upstream.md §1.14).
    let route = |m: &str, p: &str| {
        let (a, b) = (
            s0.routes
                .get(&(m.into(), p.into()))
                .copied()
                .unwrap_or((0, 0)),
            s1.routes
                .get(&(m.into(), p.into()))
                .copied()
                .unwrap_or((0, 0)),
        );
        (a, b)
    };
    let per_answer = |m: &str, p: &str| {
        let (_, b) = route(m, p);
        if b.0 == 0 {
            0.0
        } else {
            b.1 as f64 / b.0 as f64
        }
    };
    let config_bytes = per_answer("GET", "/v1/configuration/datasets");
    // No state read in the window: about the size of the configuration.
    let measured_state = per_answer("GET", "/v1/state/datasets");
    let state_bytes = if measured_state > 0.0 {
        measured_state
    } else {
        config_bytes
    };
    let named = DATASETS as f64;
    let mut theirs: Vec<(&str, f64, f64)> = Vec::new(); // call, requests, bytes (whole window)
    let gets = count("Get") as f64;
    theirs.push(("Get", 2.0 * gets, gets * (config_bytes + state_bytes)));
    let lists = count("List") as f64;
    theirs.push((
        "List",
        lists * (1.0 + named),
        lists * (config_bytes + named * state_bytes),
    ));
    let (mut mount_requests, mut mount_bytes) = (0.0, 0.0);
    for c in steady_calls.iter().filter(|c| c.kind == "Mount" && c.ok) {
        // Configuration, the unconditional move, then one state poll at once and one a second
        // until the state shows it here (our Mount's own duration stands for that wait).
        let polls = if c.moved {
            1.0 + c.took.as_secs_f64().ceil()
        } else {
            1.0
        };
        mount_requests += 2.0 + polls;
        mount_bytes += config_bytes + 200.0 + polls * state_bytes;
    }
    theirs.push(("Mount", mount_requests, mount_bytes));
    theirs.push(("Unmount, Capabilities", 0.0, 0.0));
    let _ = writeln!(out, "## The original plugin for the same calls\n");
    let _ = writeln!(
        out,
        "Modelled from its code (flocker-upstream.md §1.14): Get = configuration + state; List = \
         configuration + one state read per named dataset ({DATASETS}); Mount = configuration + \
         move + a state poll at once and then every second until the dataset is here; Unmount and \
         Capabilities none. Answer sizes as measured here ({:.2} MB configuration, {:.2} MB state).\n",
        config_bytes / 1e6,
        state_bytes / 1e6
    );
    let _ = writeln!(
        out,
        "| call | calls/s | original: requests/call | original: requests/s | original: MB/s |\n|---|---|---|---|---|"
    );
    let mut total = (0.0, 0.0);
    for (call, requests, bytes) in &theirs {
        let calls = match *call {
            "Get" => gets,
            "List" => lists,
            "Mount" => count("Mount") as f64,
            _ => (count("Unmount") + count("Capabilities")) as f64,
        };
        total.0 += requests;
        total.1 += bytes;
        let _ = writeln!(
            out,
            "| {call} | {:.2} | {:.1} | {:.1} | {:.1} |",
            calls / secs,
            if calls > 0.0 { requests / calls } else { 0.0 },
            requests / secs,
            bytes / secs / 1e6
        );
    }
    let _ = writeln!(
        out,
        "| **all** | | | **{:.1}** (ours: {:.1}) | **{:.1}** (ours: {:.2}) |",
        total.0 / secs,
        (req1 - req0) as f64 / secs,
        total.1 / secs / 1e6,
        (bytes1 - bytes0) as f64 / secs / 1e6
    );
    let ours_per = |m: &str, p: &str, per: usize| {
        let (a, b) = route(m, p);
        if per == 0 {
            0.0
        } else {
            (b.0 - a.0) as f64 / per as f64
        }
    };
    let mounts = count("Mount");
    let _ = writeln!(
        out,
        "\nOurs, per Docker call (steady window, from the routes): configuration reads per \
         Get+List+Mount {:.2}; lease requests per Mount {:.2}; moves per moving Mount {:.2}; \
         state polls per moving Mount {:.2}; lease reads and releases per Unmount {:.2} + {:.2}.",
        ours_per(
            "GET",
            "/v1/configuration/datasets",
            count("Get") + count("List") + mounts
        ),
        ours_per("POST", "/v1/configuration/leases", mounts),
        ours_per("POST", "/v1/configuration/datasets/{id}", moves),
        ours_per("GET", "/v1/state/datasets", moves),
        ours_per("GET", "/v1/configuration/leases", count("Unmount")),
        ours_per("DELETE", "/v1/configuration/leases/{id}", count("Unmount")),
    );
    out
}
