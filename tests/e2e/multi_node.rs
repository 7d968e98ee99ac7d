//! The two-node scenarios of issue 7: a volume follows its container between two real Docker engines,
//! each with the managed plugin, and in a real two-node Swarm. Data is checked by content (md5sum in
//! the containers, files in the backing store), not only by exit codes.
//!
//! Node loss runs last: node B is dead after it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::fixture::{wait_until, IMAGE, PLUGIN};
use crate::two_nodes::{Engine, TwoNodes};

/// A two-node scenario and its name.
pub type Scenario = (&'static str, fn(&TwoNodes));

/// Every two-node scenario, in the order they run.
pub const ALL: &[Scenario] = &[
    (
        "two_nodes_data_moves_with_the_container",
        data_moves_with_the_container,
    ),
    (
        "two_nodes_in_use_elsewhere_is_refused_at_once",
        in_use_elsewhere_is_refused_at_once,
    ),
    (
        "two_nodes_volume_ls_and_inspect_on_both",
        volume_ls_and_inspect_on_both,
    ),
    (
        "two_nodes_remove_from_the_other_node",
        remove_from_the_other_node,
    ),
    ("two_nodes_move_time", move_time),
    (
        "two_nodes_swarm_reschedules_on_drain",
        swarm_reschedules_on_drain,
    ),
    ("two_nodes_node_loss", node_loss),
];

/// `md5sum` output lines (`<hash>  <file>`) as file → hash; other lines are ignored.
fn md5s(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|line| line.split_once("  "))
        .filter(|(hash, _)| hash.len() == 32 && hash.chars().all(|c| c.is_ascii_hexdigit()))
        .map(|(hash, file)| (file.to_string(), hash.to_string()))
        .collect()
}

/// `docker volume rm` on node A (B when A is dead), then on the other engine, which finds it gone
/// ("no such volume": its plugin no longer knows it) or forgets its record; the dataset is deleted.
fn remove_volume(fx: &TwoNodes, name: &str) {
    let mut nodes = [&fx.a, &fx.b].into_iter().filter(|n| n.is_alive());
    if let Some(first) = nodes.next() {
        first.must(&["volume", "rm", name]);
    }
    for other in nodes {
        if let Err(e) = other.docker(&["volume", "rm", name]) {
            assert!(
                e.to_lowercase().contains("no such volume"),
                "node {}: {e}",
                other.name
            );
        }
    }
    assert!(fx.live(name).is_empty(), "dataset of {name} deleted");
}

fn data_moves_with_the_container(fx: &TwoNodes) {
    let vol = "e2e-move";
    let mount = format!("{vol}:/data");
    let on_a = fx.a.must_run(&[
        "--rm",
        "-v",
        &mount,
        "--volume-driver",
        PLUGIN,
        IMAGE,
        "sh",
        "-c",
        "echo 'written on A' > /data/text && dd if=/dev/urandom of=/data/random bs=1048576 count=10 2>/dev/null && cd /data && md5sum text random",
    ]);
    let written = md5s(&on_a);
    assert_eq!(written.len(), 2, "checksums of both files: {on_a}");
    assert_eq!(fx.primary(vol), fx.a.uuid.to_string(), "made on A");
    assert_eq!(
        fx.lease_holder(vol),
        None,
        "no lease once no container uses it"
    );

    let on_b = fx.b.must_run(&[
        "--rm",
        "-v",
        &mount,
        "--volume-driver",
        PLUGIN,
        IMAGE,
        "sh",
        "-c",
        "cd /data && md5sum text random && wc -c < random && cat text && echo 'written on B' > from-b && md5sum from-b",
    ]);
    let read = md5s(&on_b);
    assert_eq!(
        read["text"], written["text"],
        "text file intact on B: {on_b}"
    );
    assert_eq!(
        read["random"], written["random"],
        "10 MB file intact on B: {on_b}"
    );
    assert!(
        on_b.lines().any(|l| l.trim() == "10485760"),
        "10 MiB on B: {on_b}"
    );
    assert!(on_b.lines().any(|l| l == "written on A"), "{on_b}");
    assert_eq!(fx.primary(vol), fx.b.uuid.to_string(), "moved to B");
    assert_eq!(
        fx.stored_file(vol, "from-b").as_deref(),
        Some("written on B\n"),
        "B's write reached the dataset"
    );

    let back = fx.a.must_run(&[
        "--rm",
        "-v",
        &mount,
        "--volume-driver",
        PLUGIN,
        IMAGE,
        "sh",
        "-c",
        "cd /data && md5sum text random from-b && cat from-b",
    ]);
    let again = md5s(&back);
    assert_eq!(again["text"], written["text"], "{back}");
    assert_eq!(again["random"], written["random"], "{back}");
    assert_eq!(
        again["from-b"], read["from-b"],
        "B's file read back on A: {back}"
    );
    assert!(back.lines().any(|l| l == "written on B"), "{back}");
    assert_eq!(fx.primary(vol), fx.a.uuid.to_string(), "moved back to A");
    assert_eq!(fx.lease_holder(vol), None);
    remove_volume(fx, vol);
}

fn in_use_elsewhere_is_refused_at_once(fx: &TwoNodes) {
    let vol = "e2e-busy";
    let mount = format!("{vol}:/data");
    fx.a.must_run(&[
        "-d",
        "--name",
        "e2e-holder",
        "-v",
        &mount,
        "--volume-driver",
        PLUGIN,
        IMAGE,
        "sh",
        "-c",
        "echo 'held on A' > /data/f; sleep 600",
    ]);
    wait_until("the holder wrote", Duration::from_secs(30), || {
        fx.a.docker(&["exec", "e2e-holder", "cat", "/data/f"])
            .as_deref()
            == Ok("held on A")
    });
    let before = fx.a.must(&["exec", "e2e-holder", "md5sum", "/data/f"]);

    let started = Instant::now();
    let err =
        fx.b.run(&[
            "--rm",
            "-v",
            &mount,
            "--volume-driver",
            PLUGIN,
            IMAGE,
            "sh",
            "-c",
            "echo clobbered > /data/f",
        ])
        .expect_err("docker run on B while A uses the volume");
    let took = started.elapsed();
    println!("    refused on B after {:.2} s: {err}", took.as_secs_f64());
    assert!(
        err.contains(&format!("in use on node {}", fx.a.uuid)),
        "the refusal names node A ({}): {err}",
        fx.a.uuid
    );
    assert!(
        took < Duration::from_secs(2),
        "refused in {took:?}, not under 2 s"
    );
    assert_eq!(
        fx.a.must(&["exec", "e2e-holder", "md5sum", "/data/f"]),
        before,
        "A's data untouched"
    );
    assert_eq!(fx.primary(vol), fx.a.uuid.to_string(), "still on A");
    assert_eq!(fx.lease_holder(vol), Some(fx.a.uuid.to_string()));

    fx.a.must(&["rm", "-f", "e2e-holder"]);
    assert_eq!(
        fx.lease_holder(vol),
        None,
        "released when A's container stopped"
    );
    let out = fx.b.must_run(&[
        "--rm",
        "-v",
        &mount,
        "--volume-driver",
        PLUGIN,
        IMAGE,
        "sh",
        "-c",
        "cat /data/f; md5sum /data/f",
    ]);
    assert!(out.starts_with("held on A\n"), "B reads A's data: {out}");
    assert_eq!(
        md5s(&out).get("/data/f"),
        md5s(&before).get("/data/f"),
        "same content on B: {out}"
    );
    assert_eq!(fx.primary(vol), fx.b.uuid.to_string());
    remove_volume(fx, vol);
}

/// Returns `Err(message)` from the enclosing function unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err(format!($($message)+));
        }
    };
}

/// Retries `check` every 200 ms until it passes or `limit` is up, then panics with its last error.
///
/// For another node's view of a change: the plugin may answer Get and List from a control-service
/// read made shortly before (reads shared between concurrent callers), so it is seen within seconds,
/// not necessarily at once.
fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let started = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if started.elapsed() >= limit => panic!("{what}, after {limit:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// What `docker volume ls` and `inspect` show of `vol` on `node`.
fn view(
    node: &Engine,
    vol: &str,
    dataset: &str,
    holder: &Engine,
    mounted_here: bool,
) -> Result<(), String> {
    let on = node.name;
    let listed = node.docker(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"])?;
    ensure!(
        listed.lines().any(|l| l == format!("flocker:latest {vol}")),
        "node {on} lists {vol}: {listed}"
    );
    let out: serde_json::Value =
        serde_json::from_str(&node.docker(&["volume", "inspect", vol])?).unwrap();
    let volume = &out[0];
    ensure!(volume["Driver"] == "flocker:latest", "node {on}: {volume}");
    ensure!(volume["Scope"] == "global", "node {on}: {volume}");
    ensure!(
        volume["Status"]["dataset_id"] == dataset,
        "node {on}: {volume}"
    );
    ensure!(
        volume["Status"]["primary"] == holder.uuid.to_string().as_str(),
        "node {on} names node {} ({}) as the holder: {volume}",
        holder.name,
        holder.uuid
    );
    ensure!(volume["Status"]["size"] == "1GiB", "node {on}: {volume}");
    let mountpoint = volume["Mountpoint"].as_str().unwrap_or_default();
    if mounted_here {
        ensure!(mountpoint.ends_with(dataset), "node {on}: {volume}");
    } else {
        ensure!(mountpoint.is_empty(), "not mounted on node {on}: {volume}");
    }
    Ok(())
}

/// Neither engine lists `vol`, and inspecting it says there is no such volume.
fn gone_everywhere(fx: &TwoNodes, vol: &str) -> Result<(), String> {
    for node in [&fx.a, &fx.b] {
        let listed = node.docker(&["volume", "ls", "-q"])?;
        ensure!(
            !listed.lines().any(|l| l == vol),
            "node {} still lists {vol}: {listed}",
            node.name
        );
        match node.docker(&["volume", "inspect", vol]) {
            Ok(out) => return Err(format!("node {} inspects {vol}: {out}", node.name)),
            Err(e) => ensure!(
                e.to_lowercase().contains("no such volume"),
                "node {}: {e}",
                node.name
            ),
        }
    }
    Ok(())
}

fn volume_ls_and_inspect_on_both(fx: &TwoNodes) {
    let vol = "e2e-listed";
    fx.a.must(&["volume", "create", "-d", PLUGIN, "-o", "size=1G", vol]);
    let dataset = fx.dataset(vol);
    let views = |what: &str, holder: &Engine, mounted_on: Option<&Engine>| {
        eventually(what, Duration::from_secs(10), || {
            for node in [&fx.a, &fx.b] {
                let here = mounted_on.is_some_and(|m| m.name == node.name);
                view(node, vol, &dataset, holder, here)?;
            }
            Ok(())
        });
    };
    views("both nodes show the volume on A", &fx.a, None);

    fx.b.must_run(&[
        "-d",
        "--name",
        "e2e-lister",
        "-v",
        &format!("{vol}:/data"),
        "--volume-driver",
        PLUGIN,
        IMAGE,
        "sleep",
        "600",
    ]);
    views("both nodes show it on B, mounted there", &fx.b, Some(&fx.b));
    fx.b.must(&["rm", "-f", "e2e-lister"]);
    views("both nodes show it on B, not mounted", &fx.b, None);
    remove_volume(fx, vol);
    eventually("neither node lists it", Duration::from_secs(10), || {
        gone_everywhere(fx, vol)
    });
}

fn remove_from_the_other_node(fx: &TwoNodes) {
    let vol = "e2e-rm-elsewhere";
    fx.a.must_run(&[
        "-d",
        "--name",
        "e2e-user",
        "-v",
        &format!("{vol}:/data"),
        "--volume-driver",
        PLUGIN,
        IMAGE,
        "sh",
        "-c",
        "echo data > /data/f; sleep 600",
    ]);
    let dataset = fx.dataset(vol);
    let err =
        fx.b.docker(&["volume", "rm", vol])
            .expect_err("volume rm on B while A uses it");
    assert!(
        err.contains(&format!("in use on node {}", fx.a.uuid)),
        "the refusal names node A: {err}"
    );
    assert_eq!(fx.live(vol).len(), 1, "nothing deleted");
    assert_eq!(fx.stored_file(vol, "f").as_deref(), Some("data\n"));

    fx.a.must(&["rm", "-f", "e2e-user"]);
    fx.b.must(&["volume", "rm", vol]);
    let deleted = fx
        .emulator()
        .configured_datasets()
        .into_iter()
        .find(|d| d["dataset_id"] == dataset.as_str())
        .unwrap();
    assert_eq!(
        deleted["deleted"], true,
        "the dataset is deleted: {deleted}"
    );
    eventually("neither node lists it", Duration::from_secs(10), || {
        gone_everywhere(fx, vol)
    });
}

/// Seconds from starting `docker run` on `node` until the container's first output line.
fn time_to_first_line(node: &Engine, vol: &str) -> f64 {
    let mount = format!("{vol}:/data");
    let args = node.run_args(&[
        "--rm",
        "-v",
        &mount,
        "--volume-driver",
        PLUGIN,
        IMAGE,
        "sh",
        "-c",
        "echo started; cat /data/marker",
    ]);
    let started = Instant::now();
    let mut child = node
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start docker run");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    // Read on to the end: a closed pipe would fail the CLI's later writes.
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success() && first.trim() == "started" && rest.trim() == "marker",
        "docker run on {}: {first:?} {rest:?} {}",
        node.name,
        String::from_utf8_lossy(&output.stderr)
    );
    seconds
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn move_time(fx: &TwoNodes) {
    const RUNS: usize = 5;
    let (moving, staying) = ("e2e-time-move", "e2e-time-stay");
    for vol in [moving, staying] {
        fx.a.must_run(&[
            "--rm",
            "-v",
            &format!("{vol}:/data"),
            "--volume-driver",
            PLUGIN,
            IMAGE,
            "sh",
            "-c",
            "echo marker > /data/marker",
        ]);
    }
    // The volume already on B is moved there once, untimed.
    time_to_first_line(&fx.b, staying);
    let mut moved = Vec::new();
    let mut local = Vec::new();
    for _ in 0..RUNS {
        if fx.primary(moving) != fx.a.uuid.to_string() {
            fx.a.must_run(&[
                "--rm",
                "-v",
                &format!("{moving}:/data"),
                "--volume-driver",
                PLUGIN,
                IMAGE,
                "true",
            ]);
        }
        assert_eq!(fx.primary(moving), fx.a.uuid.to_string(), "last used on A");
        moved.push(time_to_first_line(&fx.b, moving));
        assert_eq!(fx.primary(moving), fx.b.uuid.to_string(), "moved to B");
        assert_eq!(fx.primary(staying), fx.b.uuid.to_string(), "already on B");
        local.push(time_to_first_line(&fx.b, staying));
    }
    let list = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("    docker run on B until the container's first line (median of {RUNS}):");
    println!("    | volume                | median  | runs (s)");
    println!("    |-----------------------|---------|---------");
    println!(
        "    | last used on A (move) | {:.2} s  | {}",
        median(moved.clone()),
        list(&moved)
    );
    println!(
        "    | already on B          | {:.2} s  | {}",
        median(local.clone()),
        list(&local)
    );
    for vol in [moving, staying] {
        remove_volume(fx, vol);
    }
}

/// The counter service's script: counts on from the file's value, logs each start and stop.
const COUNTER: &str = "trap 'echo stop $n >> /data/log; exit 0' TERM; \
    n=$(cat /data/count 2>/dev/null || echo 0); echo start $n >> /data/log; \
    while true; do n=$((n+1)); echo $n > /data/count.new; mv /data/count.new /data/count; sleep 1; done";

fn create_counter_service(fx: &TwoNodes, service: &str, vol: &str) {
    fx.a.must(&[
        "service",
        "create",
        "--detach",
        "--no-resolve-image",
        "--name",
        service,
        "--replicas",
        "1",
        "--restart-delay",
        "1s",
        "--stop-grace-period",
        "5s",
        "--container-label",
        "fdp-e2e",
        "--mount",
        &format!("type=volume,source={vol},target=/data,volume-driver=flocker"),
        IMAGE,
        "sh",
        "-c",
        COUNTER,
    ]);
}

/// The counter's current value in the dataset (0 before the first write).
fn counter(fx: &TwoNodes, vol: &str) -> u64 {
    fx.stored_file(vol, "count")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The counter's log: ("start"|"stop", value) per line.
fn counter_log(fx: &TwoNodes, vol: &str) -> Vec<(String, u64)> {
    fx.stored_file(vol, "log")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(what, n)| Some((what.to_string(), n.parse().ok()?)))
        .collect()
}

/// The node running the service's task, if exactly one does.
fn running_on<'a>(fx: &'a TwoNodes, service: &str) -> Option<&'a Engine> {
    let on: Vec<&Engine> = [&fx.a, &fx.b]
        .into_iter()
        .filter(|n| !n.service_containers(service).is_empty())
        .collect();
    (on.len() == 1).then(|| on[0])
}

/// Waits until a task started after the log's first `starts_before` lines runs on `node` (any
/// node when `None`) and has counted on; returns its node and the value it started from.
fn wait_counting<'a>(
    fx: &'a TwoNodes,
    service: &str,
    vol: &str,
    node: Option<&Engine>,
    starts_before: usize,
) -> (&'a Engine, u64) {
    let mut found = None;
    let where_ = node.map(|n| format!("node {}", n.name));
    wait_until(
        &format!(
            "{service} runs on {} and counts on",
            where_.as_deref().unwrap_or("a node")
        ),
        Duration::from_secs(120),
        || {
            let Some(on) = running_on(fx, service) else {
                return false;
            };
            if node.is_some_and(|n| n.name != on.name) || fx.live(vol).is_empty() {
                return false;
            }
            let log = counter_log(fx, vol);
            let started = log
                .iter()
                .skip(starts_before)
                .rfind(|(what, _)| what == "start")
                .map(|(_, n)| *n);
            found = started.map(|n| (on, n));
            started.is_some_and(|n| counter(fx, vol) > n + 1)
        },
    );
    found.unwrap()
}

/// Reads the counter through the task's container on `node`.
fn counter_in_container(node: &Engine, service: &str) -> u64 {
    let container = node.service_containers(service).pop().unwrap();
    node.must(&["exec", &container, "cat", "/data/count"])
        .trim()
        .parse()
        .unwrap()
}

fn swarm_reschedules_on_drain(fx: &TwoNodes) {
    let (service, vol) = ("fdp-e2e-counter", "e2e-counter");
    create_counter_service(fx, service, vol);
    let (mut on, _) = wait_counting(fx, service, vol, None, 0);
    for _ in 0..2 {
        let other = if on.name == "A" { &fx.b } else { &fx.a };
        let before = counter_log(fx, vol).len();
        let started = Instant::now();
        fx.a.must(&["node", "update", "--availability", "drain", &on.swarm_id]);
        let (_, from) = wait_counting(fx, service, vol, Some(other), before);
        let log = counter_log(fx, vol);
        let stops: Vec<u64> = log[before..]
            .iter()
            .filter(|(what, _)| what == "stop")
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(
            stops.len(),
            1,
            "the task on {} stopped once: {log:?}",
            on.name
        );
        assert_eq!(
            from, stops[0],
            "the task on {} starts from the last value written on {}: {log:?}",
            other.name, on.name
        );
        let seen = counter_in_container(other, service);
        assert!(
            seen > from,
            "counting on in the container on {}: {seen} after {from}",
            other.name
        );
        println!(
            "    drain {}: the task runs on {} after {:.1} s, counting on from {from}",
            on.name,
            other.name,
            started.elapsed().as_secs_f64()
        );
        assert_eq!(fx.primary(vol), other.uuid.to_string());
        // Back to normal before draining the other way.
        fx.a.must(&["node", "update", "--availability", "active", &on.swarm_id]);
        on = other;
    }
    fx.remove_service(service);
    wait_until("no lease is left", Duration::from_secs(30), || {
        fx.lease_holder(vol).is_none()
    });
    remove_volume(fx, vol);
}

fn node_loss(fx: &TwoNodes) {
    let (service, vol) = ("fdp-e2e-survivor", "e2e-survivor");
    // Start the task on B: drain A while it is placed, then make A available again.
    fx.a.must(&["node", "update", "--availability", "drain", &fx.a.swarm_id]);
    create_counter_service(fx, service, vol);
    wait_counting(fx, service, vol, Some(&fx.b), 0);
    fx.a.must(&["node", "update", "--availability", "active", &fx.a.swarm_id]);
    let b = fx.b.uuid.to_string();
    assert_eq!(fx.lease_holder(vol).as_deref(), Some(b.as_str()));

    // While B lives, the operator command refuses.
    let refused = fx.release_leases(&["--node", &b]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is alive"), "{stderr}");

    // Node B dies: its engine, plugin, containers and dataset agent.
    let container = fx.b.service_containers(service).pop().unwrap();
    let task_pid: i32 =
        fx.b.must(&["inspect", "-f", "{{.State.Pid}}", &container])
            .parse()
            .unwrap();
    let killed = Instant::now();
    fx.kill_node_b(&[task_pid]);
    fx.emulator().kill_node(fx.b.uuid).unwrap();
    let at_death = counter(fx, vol);
    println!("    node B killed; the counter stood at {at_death}");

    // What the user gets: Swarm reschedules the task to A, whose Mount refuses.
    let mut error = String::new();
    wait_until(
        "the task rescheduled to A fails: the volume is in use on B",
        Duration::from_secs(120),
        || {
            error =
                fx.a.docker(&[
                    "service",
                    "ps",
                    "--no-trunc",
                    "--format",
                    "{{.Error}}",
                    service,
                ])
                .unwrap_or_default();
            error.contains(&format!("in use on node {b}"))
        },
    );
    let shown = error
        .lines()
        .find(|l| l.contains("in use on node"))
        .unwrap_or_default();
    println!(
        "    after {:.1} s, docker service ps shows: {shown}",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(counter(fx, vol), at_death, "nothing wrote meanwhile");
    assert_eq!(
        fx.lease_holder(vol).as_deref(),
        Some(b.as_str()),
        "B's lease pins it"
    );

    // The operator frees the dead node's leases, as README "A node that is gone for good" says.
    let released = fx.release_leases(&["--node", &b]);
    let stdout = String::from_utf8_lossy(&released.stdout);
    assert!(
        released.status.success(),
        "release-leases: {stdout}{}",
        String::from_utf8_lossy(&released.stderr)
    );
    assert!(
        stdout.contains(&format!("released the lease on volume {vol}")),
        "{stdout}"
    );
    println!("    release-leases --node {b}: {}", stdout.trim());
    let freed = Instant::now();
    let starts_before = counter_log(fx, vol).len();
    let (_, from) = wait_counting(fx, service, vol, Some(&fx.a), starts_before);
    let log = counter_log(fx, vol);
    assert_eq!(
        from, at_death,
        "the task on A starts from B's last value: {log:?}"
    );
    assert!(
        counter_in_container(&fx.a, service) > at_death,
        "counting on on A"
    );
    assert_eq!(fx.primary(vol), fx.a.uuid.to_string());
    assert_eq!(fx.lease_holder(vol), Some(fx.a.uuid.to_string()));
    println!(
        "    the task runs on A {:.1} s after the release ({:.1} s after the kill)",
        freed.elapsed().as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    fx.remove_service(service);
    fx.a.must(&["volume", "rm", vol]);
    assert!(fx.live(vol).is_empty(), "dataset deleted");
}
