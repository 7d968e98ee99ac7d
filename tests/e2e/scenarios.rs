//! The user paths of issue 3, each against the real engine and the managed plugin, asserting what a user
//! would see: data written in one container read in another, datasets and leases in the control service,
//! bind mounts on the host.

use std::collections::BTreeMap;
use std::time::Duration;

use flocker_docker_plugin::flocker::{DatasetId, NewDataset, NodeId};
use serde_json::Value;
use uuid::Uuid;

use crate::fixture::{docker, must, restart_dockerd, run, wait_until, Fixture, IMAGE, PLUGIN};

/// A scenario and its name.
pub type Scenario = (&'static str, fn(&Fixture));

/// Every scenario, in the order they run.
pub const ALL: &[Scenario] = &[
    (
        "volume_create_ls_inspect_and_bad_options",
        volume_create_ls_inspect_and_bad_options,
    ),
    (
        "containers_share_data_and_docker_cp_keeps_counts",
        containers_share_data_and_docker_cp_keeps_counts,
    ),
    (
        "agent_mounts_made_later_reach_containers",
        agent_mounts_made_later_reach_containers,
    ),
    (
        "broken_propagation_is_a_clear_error",
        broken_propagation_is_a_clear_error,
    ),
    (
        "volume_rm_deletes_unless_in_use",
        volume_rm_deletes_unless_in_use,
    ),
    (
        "anonymous_volume_leaves_no_dataset",
        anonymous_volume_leaves_no_dataset,
    ),
    (
        "daemon_restart_keeps_volumes_and_leaks_nothing",
        daemon_restart_keeps_volumes_and_leaks_nothing,
    ),
    (
        "plugin_crash_and_disable_enable",
        plugin_crash_and_disable_enable,
    ),
    ("compose_volume", compose_volume),
    ("swarm_service_volume", swarm_service_volume),
    (
        "request_budgets_through_the_engine",
        request_budgets_through_the_engine,
    ),
];

const LABEL: &str = "--label=fdp-e2e";

fn inspect_volume(name: &str) -> Value {
    let out: Value = serde_json::from_str(&must(&["volume", "inspect", name])).unwrap();
    out[0].clone()
}

fn dataset_bind(fx: &Fixture, name: &str) -> std::path::PathBuf {
    fx.propagated_dir().join(fx.dataset(name))
}

fn volume_create_ls_inspect_and_bad_options(fx: &Fixture) {
    must(&[
        "volume",
        "create",
        "-d",
        PLUGIN,
        "-o",
        "size=1G",
        "-o",
        "profile=gold",
        "e2e-v1",
    ]);
    let listed = must(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]);
    assert!(
        listed.lines().any(|l| l == "flocker:latest e2e-v1"),
        "{listed}"
    );
    let volume = inspect_volume("e2e-v1");
    assert_eq!(volume["Driver"], "flocker:latest");
    assert_eq!(volume["Scope"], "global");
    assert_eq!(
        volume["Status"]["dataset_id"],
        fx.dataset("e2e-v1").as_str()
    );
    assert_eq!(volume["Status"]["size"], "1GiB");
    assert_eq!(volume["Status"]["profile"], "gold");
    assert_eq!(volume["Status"]["primary"], fx.node.to_string().as_str());
    let dataset = &fx.live("e2e-v1")[0];
    assert_eq!(dataset["maximum_size"], 1u64 << 30);
    assert_eq!(dataset["metadata"]["clusterhq:flocker:profile"], "gold");

    let err = docker(&[
        "volume",
        "create",
        "-d",
        PLUGIN,
        "-o",
        "size=lots",
        "e2e-bad",
    ])
    .unwrap_err();
    assert!(err.contains("'lots' is not a size"), "{err}");
    let err = docker(&[
        "volume",
        "create",
        "-d",
        PLUGIN,
        "-o",
        "colour=red",
        "e2e-bad",
    ])
    .unwrap_err();
    assert!(
        err.contains("colour") && err.contains("accepted options are size"),
        "{err}"
    );
    assert!(
        fx.live("e2e-bad").is_empty(),
        "refused Creates make no dataset"
    );
    must(&["volume", "rm", "e2e-v1"]);
}

fn containers_share_data_and_docker_cp_keeps_counts(fx: &Fixture) {
    must(&["volume", "create", "-d", PLUGIN, "e2e-shared"]);
    must(&[
        "run",
        "--rm",
        LABEL,
        "-v",
        "e2e-shared:/data",
        IMAGE,
        "sh",
        "-c",
        "echo one > /data/f",
    ]);
    assert_eq!(
        must(&[
            "run",
            "--rm",
            LABEL,
            "-v",
            "e2e-shared:/data",
            IMAGE,
            "cat",
            "/data/f"
        ]),
        "one"
    );
    assert_eq!(
        fx.read_on_host("e2e-shared", "f").trim(),
        "one",
        "the write reached the dataset"
    );
    let id = fx.dataset("e2e-shared");
    assert!(
        !fx.leased().contains(&id),
        "no lease once no container uses it"
    );

    for name in ["e2e-a", "e2e-b"] {
        must(&[
            "run",
            "-d",
            "--name",
            name,
            LABEL,
            "-v",
            "e2e-shared:/data",
            IMAGE,
            "sleep",
            "600",
        ]);
    }
    must(&["exec", "e2e-a", "sh", "-c", "echo two >> /data/f"]);
    assert_eq!(must(&["exec", "e2e-b", "cat", "/data/f"]), "one\ntwo");
    assert!(fx.leased().contains(&id), "leased while in use");
    let mountpoint = inspect_volume("e2e-shared")["Mountpoint"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        mountpoint.ends_with(&id),
        "inspect shows the mountpoint: {mountpoint}"
    );

    // docker cp mounts and unmounts with the running container's own ID.
    let copied = fx.dir.join("copied");
    must(&["cp", "e2e-a:/data/f", copied.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&copied).unwrap().trim(), "one\ntwo");
    must(&["rm", "-f", "e2e-b"]);
    assert_eq!(
        must(&["exec", "e2e-a", "cat", "/data/f"]),
        "one\ntwo",
        "still mounted after cp and rm"
    );
    assert!(fx.leased().contains(&id));
    assert!(fx.host_binds().contains(&dataset_bind(fx, "e2e-shared")));

    must(&["rm", "-f", "e2e-a"]);
    assert!(
        !fx.leased().contains(&id),
        "lease released with the last container"
    );
    assert!(
        !fx.host_binds().contains(&dataset_bind(fx, "e2e-shared")),
        "bind removed"
    );
    must(&["volume", "rm", "e2e-shared"]);
}

fn agent_mounts_made_later_reach_containers(fx: &Fixture) {
    // A dataset made through the REST API after the plugin started, mounted by the agent later.
    let metadata = BTreeMap::from([("name".to_string(), "e2e-rest".to_string())]);
    let created = fx
        .rt
        .block_on(fx.client.create_dataset(
            &NewDataset {
                primary: NodeId(fx.node),
                metadata,
                maximum_size: 1 << 30,
            },
            None,
        ))
        .unwrap();
    let on_host = fx.root.join(created.dataset_id.to_string());
    wait_until(
        "the agent mounts the dataset",
        Duration::from_secs(30),
        || flocker_docker_plugin::mount::is_mount_point(&on_host).unwrap_or(false),
    );
    std::fs::write(on_host.join("pre"), "made on the host").unwrap();
    let seen = must(&[
        "run",
        "--rm",
        LABEL,
        "-v",
        "e2e-rest:/data",
        "--volume-driver",
        PLUGIN,
        IMAGE,
        "cat",
        "/data/pre",
    ]);
    assert_eq!(seen, "made on the host");
    must(&["volume", "rm", "e2e-rest"]);
}

fn broken_propagation_is_a_clear_error(fx: &Fixture) {
    // The plugin sees the agent's root through a private bind: later agent mounts never reach it.
    let private = fx.dir.join("private-view");
    std::fs::create_dir_all(&private).unwrap();
    run(
        "mount",
        &[
            "--bind",
            fx.root.to_str().unwrap(),
            private.to_str().unwrap(),
        ],
    )
    .unwrap();
    run("mount", &["--make-private", private.to_str().unwrap()]).unwrap();
    fx.configure_and_enable(&private);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        must(&["volume", "create", "-d", PLUGIN, "e2e-hidden"]);
        let err = docker(&[
            "run",
            "--rm",
            LABEL,
            "-v",
            "e2e-hidden:/data",
            IMAGE,
            "true",
        ])
        .unwrap_err();
        assert!(
            err.contains("a private mount in the plugin") && err.contains("make-shared"),
            "{err}"
        );
        assert!(
            !fx.leased().contains(&fx.dataset("e2e-hidden")),
            "no lease for a refused Mount"
        );
        must(&["volume", "rm", "e2e-hidden"]);
    }));
    fx.configure_and_enable(&fx.root);
    run("umount", &["-l", private.to_str().unwrap()]).unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn volume_rm_deletes_unless_in_use(fx: &Fixture) {
    must(&["volume", "create", "-d", PLUGIN, "e2e-rm"]);
    let id = fx.dataset("e2e-rm");
    must(&[
        "run",
        "-d",
        "--name",
        "e2e-rm-user",
        LABEL,
        "-v",
        "e2e-rm:/data",
        IMAGE,
        "sleep",
        "600",
    ]);
    let err = docker(&["volume", "rm", "e2e-rm"]).unwrap_err();
    assert!(
        err.contains("in use"),
        "the engine refuses while a container uses it: {err}"
    );
    must(&["rm", "-f", "e2e-rm-user"]);

    // In use on another node (it holds the lease): the plugin refuses and says where.
    let other = Uuid::new_v4();
    let dataset = DatasetId(Uuid::parse_str(&id).unwrap());
    fx.rt
        .block_on(fx.client.acquire_lease(dataset, NodeId(other)))
        .unwrap();
    let err = docker(&["volume", "rm", "e2e-rm"]).unwrap_err();
    assert!(err.contains(&format!("in use on node {other}")), "{err}");
    assert_eq!(fx.live("e2e-rm").len(), 1, "nothing deleted");
    fx.rt.block_on(fx.client.release_lease(dataset)).unwrap();

    must(&["volume", "rm", "e2e-rm"]);
    let all = fx.emulator.configured_datasets();
    let entry = all.iter().find(|d| d["dataset_id"] == id.as_str()).unwrap();
    assert_eq!(
        entry["deleted"], true,
        "the control service shows it deleted"
    );
}

fn anonymous_volume_leaves_no_dataset(fx: &Fixture) {
    let before = fx.live_count();
    let out = must(&[
        "run",
        "--rm",
        LABEL,
        "-v",
        "/data",
        "--volume-driver",
        PLUGIN,
        IMAGE,
        "sh",
        "-c",
        "echo anon > /data/f; cat /data/f",
    ]);
    assert_eq!(out, "anon");
    wait_until(
        "the anonymous volume's dataset is deleted",
        Duration::from_secs(30),
        || fx.live_count() == before,
    );
}

fn running(name: &str) -> bool {
    docker(&["inspect", "-f", "{{.State.Running}}", name]).as_deref() == Ok("true")
}

fn daemon_restart_keeps_volumes_and_leaks_nothing(fx: &Fixture) {
    must(&["volume", "create", "-d", PLUGIN, "e2e-keep"]);
    must(&["volume", "create", "-d", PLUGIN, "e2e-stop"]);
    must(&[
        "run",
        "-d",
        "--name",
        "e2e-keeper",
        LABEL,
        "--restart",
        "always",
        "-v",
        "e2e-keep:/data",
        IMAGE,
        "sh",
        "-c",
        "echo kept >> /data/f; sleep 3600",
    ]);
    must(&[
        "run",
        "--name",
        "e2e-stopped",
        LABEL,
        "-v",
        "e2e-stop:/data",
        IMAGE,
        "sh",
        "-c",
        "echo once >> /data/f",
    ]);
    wait_until("keeper wrote", Duration::from_secs(30), || {
        docker(&["exec", "e2e-keeper", "cat", "/data/f"]).is_ok()
    });

    restart_dockerd();
    wait_until(
        "the restart policy brings keeper back",
        Duration::from_secs(120),
        || running("e2e-keeper"),
    );
    assert_eq!(
        must(&["exec", "e2e-keeper", "cat", "/data/f"]),
        "kept\nkept",
        "data intact"
    );
    let keep = fx.dataset("e2e-keep");
    wait_until(
        "only the running container's volume is leased",
        Duration::from_secs(30),
        || fx.leased() == vec![keep.clone()],
    );
    assert_eq!(
        fx.host_binds(),
        vec![dataset_bind(fx, "e2e-keep")],
        "no stale bind mounts"
    );

    must(&["start", "e2e-stopped"]);
    wait_until(
        "the stopped container ran again",
        Duration::from_secs(30),
        || !running("e2e-stopped"),
    );
    assert_eq!(
        fx.read_on_host("e2e-stop", "f"),
        "once\nonce\n",
        "the stopped container starts with its data"
    );
    assert_eq!(fx.leased(), vec![keep.clone()]);
    assert_eq!(fx.host_binds(), vec![dataset_bind(fx, "e2e-keep")]);
    must(&["rm", "-f", "e2e-keeper", "e2e-stopped"]);
    assert!(fx.leased().is_empty());
    assert!(fx.host_binds().is_empty());
    must(&["volume", "rm", "e2e-keep", "e2e-stop"]);
}

/// Lines of process `pid`'s mount table whose mount point is `path`.
fn mount_lines(pid: &str, path: &str) -> usize {
    let table = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    table
        .lines()
        .filter(|line| line.split(' ').nth(4) == Some(path))
        .count()
}

fn plugin_pid() -> Option<String> {
    run("pgrep", &["-f", "^/flocker-docker-plugin"])
        .ok()
        .filter(|p| !p.is_empty())
}

fn plugin_crash_and_disable_enable(fx: &Fixture) {
    must(&["volume", "create", "-d", PLUGIN, "e2e-crash"]);
    must(&[
        "run",
        "-d",
        "--name",
        "e2e-crashy",
        LABEL,
        "-v",
        "e2e-crash:/data",
        IMAGE,
        "sh",
        "-c",
        "echo before >> /data/f; sleep 3600",
    ]);
    wait_until("the container wrote", Duration::from_secs(30), || {
        docker(&["exec", "e2e-crashy", "cat", "/data/f"]).is_ok()
    });
    let old = plugin_pid().expect("the plugin process runs");
    let inside = format!("/mnt/flocker/{}", fx.dataset("e2e-crash"));
    let layers_before = mount_lines(&old, &inside);
    assert!(
        layers_before >= 1,
        "the plugin has the volume bound at {inside}"
    );
    run("kill", &["-9", &old]).unwrap();
    wait_until(
        "the engine restarts the plugin",
        Duration::from_secs(30),
        || plugin_pid().is_some_and(|p| p != old) && docker(&["volume", "ls"]).is_ok(),
    );
    assert_eq!(must(&["exec", "e2e-crashy", "cat", "/data/f"]), "before");
    let id = fx.dataset("e2e-crash");
    assert!(fx.leased().contains(&id), "the lease survives the crash");
    let new = plugin_pid().expect("the plugin runs again");
    // Counted in the plugin's own table, without dedup: a second bind on top would add a line.
    assert_eq!(
        mount_lines(&new, &inside),
        layers_before,
        "the old bind is reused, not stacked"
    );
    assert_eq!(fx.host_binds(), vec![dataset_bind(fx, "e2e-crash")]);

    must(&["stop", "-t", "1", "e2e-crashy"]);
    assert!(
        !fx.leased().contains(&id),
        "the restarted plugin remembered the mount and released it"
    );
    assert!(fx.host_binds().is_empty());
    must(&["start", "e2e-crashy"]);
    wait_until("the container wrote again", Duration::from_secs(30), || {
        docker(&["exec", "e2e-crashy", "cat", "/data/f"]).as_deref() == Ok("before\nbefore")
    });
    must(&["rm", "-f", "e2e-crashy"]);
    assert!(fx.leased().is_empty());

    // Disable and enable: volumes are still known and usable.
    must(&["plugin", "disable", "-f", PLUGIN]);
    must(&["plugin", "enable", "--timeout", "120", PLUGIN]);
    let listed = must(&["volume", "ls", "-q"]);
    assert!(listed.lines().any(|l| l == "e2e-crash"), "{listed}");
    assert_eq!(
        must(&[
            "run",
            "--rm",
            LABEL,
            "-v",
            "e2e-crash:/data",
            IMAGE,
            "cat",
            "/data/f"
        ]),
        "before\nbefore"
    );
    must(&["volume", "rm", "e2e-crash"]);
}

fn compose_volume(fx: &Fixture) {
    let dir = fx.dir.join("compose");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("docker-compose.yml");
    std::fs::write(
        &file,
        format!(
            "version: \"3.7\"\nservices:\n  app:\n    image: {IMAGE}\n    command: sh -c \"echo compose > /data/f; sleep 3600\"\n    labels: {{fdp-e2e: \"1\"}}\n    volumes: [\"data:/data\"]\nvolumes:\n  data:\n    driver: {PLUGIN}\n    driver_opts: {{size: \"1G\"}}\n"
        ),
    )
    .unwrap();
    let compose = |args: &[&str]| {
        let mut all = vec!["-p", "fdpe2e", "-f", file.to_str().unwrap()];
        all.extend_from_slice(args);
        run("docker-compose", &all)
    };
    compose(&["up", "-d"]).unwrap_or_else(|e| panic!("docker-compose up: {e}"));
    wait_until("the compose service wrote", Duration::from_secs(60), || {
        fx.live("fdpe2e_data").len() == 1 && fx.read_on_host("fdpe2e_data", "f").trim() == "compose"
    });
    assert_eq!(fx.live("fdpe2e_data")[0]["maximum_size"], 1u64 << 30);
    compose(&["down", "-v"]).unwrap_or_else(|e| panic!("docker-compose down: {e}"));
    assert!(
        fx.live("fdpe2e_data").is_empty(),
        "down -v deletes the dataset"
    );
}

fn swarm_service_volume(fx: &Fixture) {
    if docker(&["info", "-f", "{{.Swarm.LocalNodeState}}"]).as_deref() != Ok("active") {
        must(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        must(&[
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            "--name",
            "fdp-e2e-svc",
            "--container-label",
            "fdp-e2e",
            "--mount",
            "type=volume,source=e2e-swarm,target=/data,volume-driver=flocker,volume-opt=size=1G",
            IMAGE,
            "sh",
            "-c",
            "echo swarm > /data/f; sleep 3600",
        ]);
        wait_until(
            "the service task wrote to its Flocker volume",
            Duration::from_secs(120),
            || {
                fx.live("e2e-swarm").len() == 1
                    && std::fs::read_to_string(fx.root.join(fx.dataset("e2e-swarm")).join("f"))
                        .is_ok_and(|s| s.trim() == "swarm")
            },
        );
        assert_eq!(fx.live("e2e-swarm")[0]["maximum_size"], 1u64 << 30);
    }));
    let _ = docker(&["service", "rm", "fdp-e2e-svc"]);
    wait_until(
        "the service's container is gone",
        Duration::from_secs(60),
        || {
            docker(&[
                "ps",
                "-aq",
                "--filter",
                "label=com.docker.swarm.service.name=fdp-e2e-svc",
            ])
            .is_ok_and(|s| s.is_empty())
        },
    );
    let _ = docker(&["swarm", "leave", "--force"]);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    wait_until(
        "no lease is left after the service is gone",
        Duration::from_secs(30),
        || fx.leased().is_empty(),
    );
    assert!(fx.host_binds().is_empty());
    let _ = docker(&["volume", "rm", "e2e-swarm"]);
}

/// SPEC §10 through the real engine (issue 8): what each Docker command costs the control service,
/// for a volume whose dataset is already on this node. Counts, not times.
fn request_budgets_through_the_engine(fx: &Fixture) {
    must(&["volume", "create", "-d", PLUGIN, "e2e-budget"]);
    must(&[
        "run",
        "--rm",
        LABEL,
        "-v",
        "e2e-budget:/data",
        IMAGE,
        "true",
    ]);
    let dataset = fx.dataset("e2e-budget");
    // Older than the plugin's reuse window, so every command starts cold.
    let cold = || {
        std::thread::sleep(flocker_docker_plugin::driver::REPORT_AGE + Duration::from_millis(200))
    };

    cold();
    fx.emulator.reset_counts();
    must(&[
        "run",
        "--rm",
        LABEL,
        "-v",
        "e2e-budget:/data",
        IMAGE,
        "true",
    ]);
    let (run, detail) = fx.emulator.requests_received();
    println!("  docker run --rm -v e2e-budget:/data: {run} requests ({detail})");
    // 1 configuration read shared by the engine's Gets, the lease, the read after it, and the
    // release (read the leases, then DELETE): README "Requests" explains why not fewer.
    assert!(run <= 5, "docker run cost {run} requests: {detail}");

    cold();
    fx.emulator.reset_counts();
    must(&["volume", "inspect", "e2e-budget"]);
    let (inspect, detail) = fx.emulator.requests_received();
    println!("  docker volume inspect: {inspect} requests ({detail})");
    assert!(inspect <= 1, "{detail}");

    cold();
    fx.emulator.reset_counts();
    must(&["volume", "ls"]);
    let (ls, detail) = fx.emulator.requests_received();
    println!("  docker volume ls: {ls} requests ({detail})");
    assert!(ls <= 1, "{detail}");

    // Idle, with a container using the volume: nothing is polled or renewed.
    must(&[
        "run",
        "-d",
        LABEL,
        "--name",
        "e2e-budget-idle",
        "-v",
        "e2e-budget:/data",
        IMAGE,
        "sleep",
        "60",
    ]);
    fx.emulator.reset_counts();
    std::thread::sleep(Duration::from_secs(3));
    let (idle, detail) = fx.emulator.requests_received();
    println!("  idle 3 s with the volume in use: {idle} requests ({detail})");
    assert_eq!(idle, 0, "{detail}");
    must(&["rm", "-f", "e2e-budget-idle"]);
    wait_until("the lease is given back", Duration::from_secs(30), || {
        !fx.leased().contains(&dataset)
    });
    must(&["volume", "rm", "e2e-budget"]);
}
