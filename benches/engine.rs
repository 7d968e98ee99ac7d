//! Benchmark report through the real Docker engine: what a flocker volume costs a `docker run`, next to
//! the `local` driver, with one dataset in the cluster and with 10,000 others (SPEC §10).
//!
//! Uses the end-to-end fixture (emulator on the host as control service and agent, the managed plugin
//! configured against it) under its own plugin name, so it can share an engine with other work:
//! `make bench-engine` builds `flocker-bench` and runs it. Needs root and a running engine. Prints
//! Markdown (kept in docs/benchmarks.md). Commands run one at a time, alternating flocker and local,
//! each flocker command after the plugin's reuse window so it starts cold, as separate users' would.

#[path = "../tests/e2e/fixture.rs"]
#[allow(dead_code)]
mod fixture;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use fixture::{docker, must, Fixture, IMAGE};
use flocker_docker_plugin::driver::REPORT_AGE;

const PLUGIN: &str = "flocker-bench";
const ROUNDS: usize = 15;
const OTHERS: usize = 10_000;
const FLOCKER_VOLUME: &str = "fdp-bench-flocker";
const LOCAL_VOLUME: &str = "fdp-bench-local";

/// One Docker command, timed on its own.
struct Command {
    what: &'static str,
    args: fn(&str) -> Vec<String>,
    /// Whether the same command on the local volume is a fair comparison (`ls` lists both).
    compare: bool,
}

const COMMANDS: [Command; 3] = [
    Command {
        what: "docker run --rm -v VOL:/data busybox true",
        args: |volume| {
            [
                "run",
                "--rm",
                "-v",
                &format!("{volume}:/data"),
                IMAGE,
                "true",
            ]
            .map(String::from)
            .to_vec()
        },
        compare: true,
    },
    Command {
        what: "docker volume inspect VOL",
        args: |volume| ["volume", "inspect", volume].map(String::from).to_vec(),
        compare: true,
    },
    Command {
        what: "docker volume ls",
        args: |_| ["volume", "ls", "-q"].map(String::from).to_vec(),
        compare: false,
    },
];

/// Wall-clock seconds of each run, flocker and local, and the control-service requests of the
/// flocker runs.
#[derive(Default)]
struct Samples {
    flocker: Vec<f64>,
    local: Vec<f64>,
    requests: Vec<usize>,
    detail: String,
}

fn timed(args: &[String]) -> f64 {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    docker(&args).unwrap_or_else(|e| panic!("docker {}: {e}", args.join(" ")));
    started.elapsed().as_secs_f64()
}

fn measure(fx: &Fixture, command: &Command) -> Samples {
    let mut samples = Samples::default();
    // One unmeasured run of each warms the engine's caches (image layers, the driver lookup).
    timed(&(command.args)(FLOCKER_VOLUME));
    timed(&(command.args)(LOCAL_VOLUME));
    for _ in 0..ROUNDS {
        std::thread::sleep(REPORT_AGE + Duration::from_millis(200));
        fx.emulator.reset_counts();
        samples.flocker.push(timed(&(command.args)(FLOCKER_VOLUME)));
        let (requests, detail) = fx.emulator.requests_received();
        samples.requests.push(requests);
        samples.detail = detail;
        if command.compare {
            samples.local.push(timed(&(command.args)(LOCAL_VOLUME)));
        }
    }
    samples
}

/// Seconds until the plugin's whole answer to one protocol call on its socket, as dockerd sends it.
fn plugin_call(socket: &Path, call: &str, body: &str) -> f64 {
    let started = Instant::now();
    let mut stream = UnixStream::connect(socket).expect("connect to the plugin socket");
    write!(
        stream,
        "POST /VolumeDriver.{call} HTTP/1.0\r\nHost: plugin\r\n\
         Content-Type: application/vnd.docker.plugins.v1.2+json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{call}: {answer}"
    );
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let body: serde_json::Value = serde_json::from_str(body).expect("a JSON answer");
    assert!(
        body["Err"].as_str().unwrap_or("").is_empty(),
        "{call}: {answer}"
    );
    elapsed
}

/// Get and List straight on the plugin's socket, each cold.
fn socket_calls(fx: &Fixture, socket: &Path) -> Vec<(&'static str, Samples)> {
    let get = format!("{{\"Name\":\"{FLOCKER_VOLUME}\"}}");
    [("Get", get.as_str()), ("List", "{}")]
        .into_iter()
        .map(|(call, body)| {
            let mut samples = Samples::default();
            for _ in 0..ROUNDS {
                std::thread::sleep(REPORT_AGE + Duration::from_millis(200));
                fx.emulator.reset_counts();
                samples.flocker.push(plugin_call(socket, call, body));
                let (requests, detail) = fx.emulator.requests_received();
                samples.requests.push(requests);
                samples.detail = detail;
            }
            (call, samples)
        })
        .collect()
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(seconds: f64) -> String {
    format!("{:.0} ms", seconds * 1000.0)
}

fn report(cluster: &str, results: &[(&Command, Samples)], calls: &[(&str, Samples)]) {
    println!("\n### {cluster}\n");
    println!(
        "| command | flocker p50 | flocker p90 | local p50 | local p90 | p50 ratio | requests (flocker) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (command, s) in results {
        let f50 = percentile(&s.flocker, 0.5);
        let (l50, l90, ratio) = if s.local.is_empty() {
            let na = "—".to_string();
            (na.clone(), na.clone(), na)
        } else {
            let l50 = percentile(&s.local, 0.5);
            (
                ms(l50),
                ms(percentile(&s.local, 0.9)),
                format!("{:.2}×", f50 / l50),
            )
        };
        println!(
            "| `{}` | {} | {} | {l50} | {l90} | {ratio} | {} |",
            command.what,
            ms(f50),
            ms(percentile(&s.flocker, 0.9)),
            requests(s)
        );
    }
    println!("\n| plugin socket call | p50 | p90 | requests |\n|---|---|---|---|");
    for (call, s) in calls {
        println!(
            "| {call} | {} | {} | {} |",
            ms(percentile(&s.flocker, 0.5)),
            ms(percentile(&s.flocker, 0.9)),
            requests(s)
        );
    }
}

/// The request counts seen (count ×times), and the last one's breakdown.
fn requests(s: &Samples) -> String {
    let seen: BTreeMap<usize, usize> = s.requests.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(*r).or_default() += 1;
        m
    });
    let seen = seen
        .iter()
        .map(|(r, n)| format!("{r} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{seen} (last: {})", s.detail)
}

/// Datasets on a node that is not this one, as the rest of a big cluster (inert: the agent reports
/// them mounted there but mounts nothing).
fn add_other_datasets(fx: &Fixture) -> Duration {
    let elsewhere = uuid::Uuid::new_v4();
    let others: Vec<(String, uuid::Uuid)> = (0..OTHERS)
        .map(|i| (format!("other-{i:05}"), elsewhere))
        .collect();
    let started = Instant::now();
    fx.emulator
        .seed(&others, true)
        .expect("seed the other datasets");
    started.elapsed()
}

fn main() {
    if !nix::unistd::geteuid().is_root() || docker(&["info"]).is_err() {
        eprintln!("the engine benchmark needs root and a running Docker engine");
        std::process::exit(2);
    }
    if docker(&["plugin", "inspect", PLUGIN]).is_err() {
        eprintln!("no plugin {PLUGIN}: run `make bench-engine` (it runs `make plugin PLUGIN_NAME={PLUGIN}`)");
        std::process::exit(2);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fx = Fixture::cluster("fdp-bench");
    // Whatever happens, leave the engine as it was: only our two volumes go through the plugin
    // (the 10,000 others are the emulator's alone and go with it).
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fx.configure_and_enable_as(PLUGIN, &fx.root);
        run(&fx, &load)
    }));
    let _ = docker(&["volume", "rm", "-f", FLOCKER_VOLUME]);
    let _ = docker(&["volume", "rm", "-f", LOCAL_VOLUME]);
    let _ = docker(&["plugin", "disable", "-f", PLUGIN]);
    let _ = docker(&["plugin", "rm", "-f", PLUGIN]);
    fx.stop_emulator();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn run(fx: &Fixture, load: &str) {
    let _ = docker(&["volume", "rm", "-f", LOCAL_VOLUME]);
    must(&["volume", "create", "-d", PLUGIN, FLOCKER_VOLUME]);
    must(&["volume", "create", "-d", "local", LOCAL_VOLUME]);

    println!("# Docker commands: flocker vs the local driver");
    println!(
        "\nReal engine ({}), managed plugin `{PLUGIN}` against the emulator on loopback (mTLS); \
         {ROUNDS} rounds per command, alternating flocker and local; each flocker command \
         starts cold ({} ms apart); the volume's dataset is already on this node. \
         {} cores, load average before: {}; {}.",
        must(&["version", "-f", "{{.Server.Version}}"]),
        (REPORT_AGE + Duration::from_millis(200)).as_millis(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        fixture::run("date", &["-u", "+%Y-%m-%d"]).unwrap(),
    );

    let socket = Path::new("/run/docker/plugins")
        .join(must(&["plugin", "inspect", "-f", "{{.Id}}", PLUGIN]))
        .join("flocker.sock");
    let results: Vec<_> = COMMANDS.iter().map(|c| (c, measure(fx, c))).collect();
    report(
        "1 dataset in the cluster",
        &results,
        &socket_calls(fx, &socket),
    );

    let seeding = add_other_datasets(fx);
    let results: Vec<_> = COMMANDS.iter().map(|c| (c, measure(fx, c))).collect();
    report(
        &format!(
            "{} datasets in the cluster ({OTHERS} others on another node, added in {:.1} s)",
            OTHERS + 1,
            seeding.as_secs_f64()
        ),
        &results,
        &socket_calls(fx, &socket),
    );

    must(&["volume", "rm", FLOCKER_VOLUME]);
}
