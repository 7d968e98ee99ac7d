//! Driver scenarios: the real plugin (socket, driver, client, mounts) against the emulated control
//! service and its agent, asserting what a Docker user would notice.

use std::time::Duration;

use flocker_docker_plugin::emulator::Convergence;
use serde_json::json;

use crate::util::{
    dataset_id, eventually, is_mounted, live_datasets, make_shared, require_root, Cluster,
};

/// Realistic lag between configuration and state for scenario tests (the plugin waits, not the test).
const LAG: Convergence = Convergence::After(Duration::from_millis(300));

#[tokio::test]
async fn create_then_mount_then_unmount_on_one_node() {
    if !require_root("create_then_mount_then_unmount_on_one_node") {
        return;
    }
    let cluster = Cluster::start(1, LAG).await;
    let plugin = cluster.plugin(0).await;
    let docker = &plugin.docker;

    docker
        .create("db", json!({ "size": "1G", "profile": "gold" }))
        .await
        .unwrap();
    let datasets = live_datasets(&cluster.emulator, "db");
    assert_eq!(datasets.len(), 1);
    let dataset = &datasets[0];
    assert_eq!(dataset["primary"], json!(cluster.nodes[0].uuid));
    assert_eq!(dataset["maximum_size"], json!(1u64 << 30));
    assert_eq!(
        dataset["metadata"]["clusterhq:flocker:profile"],
        json!("gold")
    );
    assert_eq!(dataset["metadata"]["maximum_size"], json!("1073741824"));
    let id = dataset["dataset_id"].as_str().unwrap().to_string();

    let mountpoint = docker.mount("db", "c1").await.unwrap();
    assert_eq!(mountpoint, cluster.nodes[0].propagated.join(&id));
    assert!(is_mounted(&mountpoint), "bind mount made");
    std::fs::write(mountpoint.join("hello"), "world").unwrap();
    // The write went to the dataset's storage, as seen through the agent's mount.
    assert_eq!(
        std::fs::read_to_string(cluster.nodes[0].root.join(&id).join("hello")).unwrap(),
        "world"
    );
    assert_eq!(docker.path("db").await.unwrap(), mountpoint);
    let volume = docker.get("db").await.unwrap();
    assert_eq!(volume["Mountpoint"], json!(mountpoint));
    assert_eq!(volume["Status"]["dataset_id"], json!(id));
    assert_eq!(volume["Status"]["size"], json!("1GiB"));
    assert_eq!(volume["Status"]["profile"], json!("gold"));
    let leases = cluster.emulator.leases();
    assert_eq!(leases.len(), 1, "the node holds the lease while mounted");
    assert_eq!(leases[0]["node_uuid"], json!(cluster.nodes[0].uuid));

    docker.unmount("db", "c1").await.unwrap();
    assert!(
        !is_mounted(&mountpoint),
        "bind mount removed on the last unmount"
    );
    assert!(
        cluster.emulator.leases().is_empty(),
        "lease released on the last unmount"
    );
    assert!(docker.path("db").await.unwrap_err().contains("not mounted"));
    assert_eq!(docker.get("db").await.unwrap()["Mountpoint"], json!(""));

    plugin.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn create_is_idempotent_and_reports_bad_options() {
    if !require_root("create_is_idempotent_and_reports_bad_options") {
        return;
    }
    let cluster = Cluster::start(1, Convergence::Manual).await;
    let plugin = cluster.plugin(0).await;
    let docker = &plugin.docker;

    docker.create("v", json!(null)).await.unwrap();
    docker.create("v", json!({ "size": "5G" })).await.unwrap();
    assert_eq!(
        live_datasets(&cluster.emulator, "v").len(),
        1,
        "a second Create makes nothing"
    );

    let err = docker
        .create("w", json!({ "size": "lots" }))
        .await
        .unwrap_err();
    assert!(
        err.contains("volume w") && err.contains("'lots' is not a size"),
        "{err}"
    );
    let err = docker
        .create("w", json!({ "colour": "red" }))
        .await
        .unwrap_err();
    assert!(
        err.contains("colour") && err.contains("accepted options are size"),
        "{err}"
    );
    let err = docker
        .create("w", json!({ "size": "1M" }))
        .await
        .unwrap_err();
    assert!(err.contains("64 MiB minimum"), "{err}");
    assert!(
        live_datasets(&cluster.emulator, "w").is_empty(),
        "refused Creates make nothing"
    );

    plugin.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn create_retries_on_412_and_racing_creates_make_one_dataset() {
    if !require_root("create_retries_on_412_and_racing_creates_make_one_dataset") {
        return;
    }
    let cluster = Cluster::start(2, Convergence::Manual).await;
    let a = cluster.plugin(0).await;
    let b = cluster.plugin(1).await;

    cluster
        .emulator
        .fail_next("POST", "/v1/configuration/datasets", 412);
    a.docker.create("first", json!({})).await.unwrap();
    assert_eq!(live_datasets(&cluster.emulator, "first").len(), 1);
    assert_eq!(
        cluster
            .emulator
            .request_count("POST", "/v1/configuration/datasets"),
        2,
        "one refused, one accepted"
    );

    // Two nodes create the same name at once, ten times each: the tag makes exactly one win.
    let mut calls = Vec::new();
    for i in 0..20 {
        let docker = if i % 2 == 0 {
            a.docker.clone()
        } else {
            b.docker.clone()
        };
        calls.push(tokio::spawn(async move {
            docker.create("raced", json!({})).await
        }));
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(live_datasets(&cluster.emulator, "raced").len(), 1);

    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn move_between_nodes_carries_the_data() {
    if !require_root("move_between_nodes_carries_the_data") {
        return;
    }
    let cluster = Cluster::start(2, LAG).await;
    let a = cluster.plugin(0).await;
    let b = cluster.plugin(1).await;

    a.docker.create("shared", json!({})).await.unwrap();
    let on_a = a.docker.mount("shared", "ca").await.unwrap();
    std::fs::write(on_a.join("data.txt"), "written on node A").unwrap();

    // In use on A: B must refuse rather than pull it away (the original plugin's known hole).
    let err = b.docker.mount("shared", "cb").await.unwrap_err();
    assert!(
        err.contains("in use on node") && err.contains(&cluster.nodes[0].uuid.to_string()),
        "{err}"
    );
    let err = b.docker.remove("shared").await.unwrap_err();
    assert!(err.contains("in use"), "{err}");

    a.docker.unmount("shared", "ca").await.unwrap();
    let on_b = b.docker.mount("shared", "cb").await.unwrap();
    assert_eq!(
        std::fs::read_to_string(on_b.join("data.txt")).unwrap(),
        "written on node A"
    );
    let id = dataset_id(&cluster.emulator, "shared");
    let dataset = &live_datasets(&cluster.emulator, "shared")[0];
    assert_eq!(dataset["primary"], json!(cluster.nodes[1].uuid));
    assert!(
        !is_mounted(&cluster.nodes[0].root.join(&id)),
        "the agent unmounted it on A"
    );
    assert_eq!(
        cluster
            .emulator
            .request_count("POST", &format!("/v1/configuration/datasets/{id}")),
        1
    );

    b.docker.unmount("shared", "cb").await.unwrap();
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn mount_timeout_then_retry_joins_the_same_move() {
    if !require_root("mount_timeout_then_retry_joins_the_same_move") {
        return;
    }
    let cluster = Cluster::start(2, Convergence::Manual).await;
    let b = cluster.plugin(1).await;
    let mut settings = cluster.settings(0);
    settings.mount_timeout = Duration::from_secs(1);
    let a = cluster.plugin_with(0, settings).await;

    b.docker.create("slow", json!({})).await.unwrap();
    cluster.emulator.converge().await;
    let id = dataset_id(&cluster.emulator, "slow");

    let err = a.docker.mount("slow", "c1").await.unwrap_err();
    assert!(
        err.starts_with("Timed out waiting for dataset to mount."),
        "{err}"
    );
    assert!(
        err.contains("slow") && err.contains("retrying joins it"),
        "{err}"
    );
    assert!(
        cluster.emulator.leases().is_empty(),
        "no lease left by a timed-out Mount"
    );
    assert!(!is_mounted(&cluster.nodes[0].propagated.join(&id)));

    cluster.emulator.converge().await;
    let mountpoint = a.docker.mount("slow", "c1").await.unwrap();
    assert!(is_mounted(&mountpoint));
    let moves = cluster
        .emulator
        .request_count("POST", &format!("/v1/configuration/datasets/{id}"));
    assert_eq!(
        moves, 1,
        "the retry joined the first move instead of asking again"
    );

    a.docker.unmount("slow", "c1").await.unwrap();
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_mounts_share_one_move() {
    if !require_root("fifty_concurrent_mounts_share_one_move") {
        return;
    }
    let cluster = Cluster::start(2, LAG).await;
    let a = cluster.plugin(0).await;
    let b = cluster.plugin(1).await;
    b.docker.create("busy", json!({})).await.unwrap();
    let id = dataset_id(&cluster.emulator, "busy");
    cluster.emulator.reset_counts();

    let mut mounts = Vec::new();
    for i in 0..50 {
        let docker = a.docker.clone();
        mounts.push(tokio::spawn(async move {
            docker.mount("busy", &format!("c{i}")).await
        }));
    }
    let mut paths = Vec::new();
    for m in mounts {
        paths.push(m.await.unwrap().unwrap());
    }
    paths.dedup();
    assert_eq!(paths.len(), 1, "every Mount got the same mountpoint");
    assert_eq!(
        cluster
            .emulator
            .request_count("POST", &format!("/v1/configuration/datasets/{id}")),
        1
    );
    let polls = cluster.emulator.request_count("GET", "/v1/state/datasets");
    // 300 ms lag at one poll per 100 ms: a handful, not 50 × that.
    assert!(
        polls <= 12,
        "state polled {polls} times for 50 waiting Mounts"
    );
    assert_eq!(cluster.emulator.leases().len(), 1);

    for i in 0..49 {
        a.docker.unmount("busy", &format!("c{i}")).await.unwrap();
        assert!(
            is_mounted(&paths[0]),
            "still mounted while a container uses it"
        );
    }
    a.docker.unmount("busy", "c49").await.unwrap();
    assert!(!is_mounted(&paths[0]));
    assert!(cluster.emulator.leases().is_empty());

    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn same_id_mounted_twice_needs_two_unmounts() {
    if !require_root("same_id_mounted_twice_needs_two_unmounts") {
        return;
    }
    let cluster = Cluster::start(1, LAG).await;
    let plugin = cluster.plugin(0).await;
    plugin.docker.create("cp", json!({})).await.unwrap();
    let path = plugin.docker.mount("cp", "container").await.unwrap();
    // `docker cp` on a running container mounts and unmounts with the container's own ID.
    plugin.docker.mount("cp", "container").await.unwrap();
    plugin.docker.unmount("cp", "container").await.unwrap();
    assert!(is_mounted(&path), "the container still uses it");
    assert_eq!(cluster.emulator.leases().len(), 1);
    plugin.docker.unmount("cp", "container").await.unwrap();
    assert!(!is_mounted(&path));
    // Unknown IDs and volumes are success: the engine sends them after restarts.
    plugin.docker.unmount("cp", "never-mounted").await.unwrap();
    plugin.docker.unmount("no-such-volume", "x").await.unwrap();
    plugin.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn remove_deletes_unless_in_use() {
    if !require_root("remove_deletes_unless_in_use") {
        return;
    }
    let cluster = Cluster::start(1, LAG).await;
    let plugin = cluster.plugin(0).await;
    let docker = &plugin.docker;
    docker.create("gone", json!({})).await.unwrap();
    let id = dataset_id(&cluster.emulator, "gone");
    docker.mount("gone", "c1").await.unwrap();
    let err = docker.remove("gone").await.unwrap_err();
    assert!(err.contains("volume gone is in use on this node"), "{err}");
    docker.unmount("gone", "c1").await.unwrap();

    docker.remove("gone").await.unwrap();
    let all = cluster.emulator.configured_datasets();
    let entry = all.iter().find(|d| d["dataset_id"] == json!(id)).unwrap();
    assert_eq!(
        entry["deleted"],
        json!(true),
        "deleted, and kept listed as Flocker does"
    );
    docker.remove("gone").await.unwrap();
    docker.remove("never-existed").await.unwrap();
    let err = docker.get("gone").await.unwrap_err();
    assert!(
        err.starts_with("Could not find volume with given name."),
        "{err}"
    );
    // The name can be used again: a deleted dataset does not block it (flocker-upstream.md §7.5).
    docker.create("gone", json!({})).await.unwrap();
    assert_eq!(live_datasets(&cluster.emulator, "gone").len(), 1);
    plugin.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn list_and_get_use_few_requests_and_survive_an_outage() {
    if !require_root("list_and_get_use_few_requests_and_survive_an_outage") {
        return;
    }
    let cluster = Cluster::start(2, LAG).await;
    // No reuse of answers here: this counts what one call costs on its own.
    let mut settings = cluster.settings(0);
    settings.report_age = Duration::ZERO;
    let a = cluster.plugin_with(0, settings).await;
    let b = cluster.plugin(1).await;
    for name in ["a1", "a2", "a3"] {
        a.docker.create(name, json!({})).await.unwrap();
    }
    b.docker.create("b1", json!({})).await.unwrap();
    let mounted = a.docker.mount("a1", "c").await.unwrap();

    cluster.emulator.reset_counts();
    let volumes = a.docker.list().await.unwrap();
    let names: Vec<&str> = volumes
        .iter()
        .map(|v| v["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a1", "a2", "a3", "b1"]);
    assert_eq!(volumes[0]["Mountpoint"], json!(mounted));
    assert_eq!(volumes[1]["Mountpoint"], json!(""));
    assert_eq!(
        cluster
            .emulator
            .request_count("GET", "/v1/configuration/datasets"),
        1
    );
    assert_eq!(
        cluster.emulator.request_count("GET", "/v1/state/datasets"),
        0
    );
    a.docker.get("b1").await.unwrap();
    assert_eq!(
        cluster
            .emulator
            .request_count("GET", "/v1/configuration/datasets"),
        2,
        "Get is one request"
    );

    // Control service down: Get and List answer from the last known state, marked stale.
    cluster.emulator.stop_listening().await;
    let volume = a.docker.get("a1").await.unwrap();
    assert_eq!(volume["Mountpoint"], json!(mounted));
    assert_eq!(volume["Status"]["stale"], json!(true));
    assert!(volume["Status"]["stale_reason"]
        .as_str()
        .unwrap()
        .contains(&cluster.emulator.url()));
    assert_eq!(a.docker.list().await.unwrap().len(), 4);
    let err = a.docker.mount("a2", "c").await.unwrap_err();
    assert!(
        err.contains("unreachable") && err.contains(&cluster.emulator.url()),
        "{err}"
    );
    let err = a.docker.get("never-seen").await.unwrap_err();
    assert!(err.contains("unreachable"), "{err}");
    // Unmount never fails for bookkeeping; the lease is released once the service is back.
    a.docker.unmount("a1", "c").await.unwrap();
    assert!(!is_mounted(&mounted));

    cluster.emulator.start_listening().await.unwrap();
    a.docker.mount("a2", "c").await.unwrap();
    eventually("the lease on a1 is released", || {
        let a1 = dataset_id(&cluster.emulator, "a1");
        !cluster
            .emulator
            .leases()
            .iter()
            .any(|l| l["dataset_id"] == json!(a1))
    })
    .await;
    a.docker.unmount("a2", "c").await.unwrap();

    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn restart_keeps_mounts_and_counts() {
    if !require_root("restart_keeps_mounts_and_counts") {
        return;
    }
    let cluster = Cluster::start(1, LAG).await;
    let plugin = cluster.plugin(0).await;
    plugin.docker.create("kept", json!({})).await.unwrap();
    plugin.docker.create("dropped", json!({})).await.unwrap();
    let kept = plugin.docker.mount("kept", "c1").await.unwrap();
    plugin.docker.mount("kept", "c2").await.unwrap();
    let dropped = plugin.docker.mount("dropped", "c3").await.unwrap();
    // Killed, not stopped cleanly: nothing is held through the stop.
    plugin.crash().await;

    // While the plugin is down: "dropped" loses its bind (as after an engine crash), and a bind this
    // plugin did not make appears under the propagated mount.
    flocker_docker_plugin::mount::unmount_all(&dropped).unwrap();
    let stray = cluster.nodes[0].propagated.join("stray");
    std::fs::create_dir_all(&stray).unwrap();
    flocker_docker_plugin::mount::bind(&cluster.nodes[0].root, &stray).unwrap();

    let plugin = cluster.plugin(0).await;
    assert!(
        is_mounted(&stray),
        "a bind the plugin did not make is left alone (adopt, never destroy)"
    );
    flocker_docker_plugin::mount::unmount_all(&stray).unwrap();
    assert_eq!(
        plugin.docker.path("kept").await.unwrap(),
        kept,
        "the old mount is reused"
    );
    // The engine removed "dropped"'s bind, but after an engine crash the old containers may run a
    // little longer: its lease is kept for the restart grace, then given back.
    let dropped_id = dataset_id(&cluster.emulator, "dropped");
    assert!(
        cluster
            .emulator
            .leases()
            .iter()
            .any(|l| l["dataset_id"] == json!(dropped_id)),
        "kept during the grace"
    );
    eventually("the grace is over and the lease given back", || {
        !cluster
            .emulator
            .leases()
            .iter()
            .any(|l| l["dataset_id"] == json!(dropped_id))
    })
    .await;
    assert!(plugin.docker.path("dropped").await.is_err());
    // Counts survived: two unmounts are needed.
    plugin.docker.unmount("kept", "c1").await.unwrap();
    assert!(is_mounted(&kept));
    plugin.docker.unmount("kept", "c2").await.unwrap();
    assert!(!is_mounted(&kept));
    assert!(cluster.emulator.leases().is_empty());
    plugin.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn hostile_names_never_become_paths() {
    if !require_root("hostile_names_never_become_paths") {
        return;
    }
    let cluster = Cluster::start(1, LAG).await;
    let plugin = cluster.plugin(0).await;
    let docker = &plugin.docker;
    for name in ["../../etc", "a/b", "..", "with space", "ünïcödé"] {
        docker.create(name, json!({})).await.unwrap();
        let path = docker.mount(name, "c").await.unwrap();
        let id = dataset_id(&cluster.emulator, name);
        assert_eq!(path, cluster.nodes[0].propagated.join(&id), "{name}");
        docker.unmount(name, "c").await.unwrap();
    }
    let long = "x".repeat(300);
    let err = docker.create(&long, json!({})).await.unwrap_err();
    assert!(err.contains("300 characters"), "{err}");
    let err = docker.create("", json!({})).await.unwrap_err();
    assert!(err.contains("empty"), "{err}");
    let err = docker.mount("", "c").await.unwrap_err();
    assert!(err.contains("empty"), "{err}");
    assert_eq!(docker.list().await.unwrap().len(), 5);
    plugin.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn unknown_volume_errors_name_the_volume() {
    if !require_root("unknown_volume_errors_name_the_volume") {
        return;
    }
    let cluster = Cluster::start(1, LAG).await;
    let plugin = cluster.plugin(0).await;
    let err = plugin.docker.mount("nope", "c").await.unwrap_err();
    assert!(
        err.starts_with("Could not find volume with given name.") && err.contains("\"nope\""),
        "{err}"
    );
    let err = plugin.docker.get("nope").await.unwrap_err();
    assert!(
        err.starts_with("Could not find volume with given name."),
        "{err}"
    );
    plugin.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn state_path_that_is_not_a_mount_point_is_refused() {
    if !require_root("state_path_that_is_not_a_mount_point_is_refused") {
        return;
    }
    let cluster = Cluster::start(1, LAG).await;
    // The plugin looks for the agent's mounts in an empty directory (on a propagating mount), as when
    // FLOCKER_ROOT names the wrong place.
    let mut settings = cluster.settings(0);
    settings.flocker_root = cluster.dir.path().join("empty-view");
    std::fs::create_dir_all(&settings.flocker_root).unwrap();
    make_shared(&settings.flocker_root);
    let plugin = cluster.plugin_with(0, settings).await;
    plugin.docker.create("hidden", json!({})).await.unwrap();
    let err = plugin.docker.mount("hidden", "c").await.unwrap_err();
    assert!(
        err.contains("is not a mount point") && err.contains("make-shared"),
        "{err}"
    );
    assert!(
        cluster.emulator.leases().is_empty(),
        "no lease taken for a refused Mount"
    );
    assert!(plugin.docker.path("hidden").await.is_err());
    plugin.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn calls_before_the_node_is_known_explain_the_wait() {
    if !require_root("calls_before_the_node_is_known_explain_the_wait") {
        return;
    }
    use flocker_docker_plugin::identity::Identity;
    let cluster = Cluster::start(1, LAG).await;
    let (_tx, rx) = tokio::sync::watch::channel(Identity::Pending(
        "the local agent has not connected".into(),
    ));
    let plugin = crate::util::Plugin::start(
        cluster.client(),
        cluster.settings(0),
        rx,
        &cluster.nodes[0].socket,
    )
    .await;
    let err = plugin.docker.create("early", json!({})).await.unwrap_err();
    assert!(
        err.contains("identity is not known yet") && err.contains("agent has not connected"),
        "{err}"
    );
    // Capabilities needs no identity.
    let (_, caps) = plugin
        .docker
        .raw("POST", "/VolumeDriver.Capabilities", "{}")
        .await;
    assert_eq!(caps, json!({ "Capabilities": { "Scope": "global" } }));
    plugin.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn legacy_mode_hands_out_the_agent_path() {
    if !require_root("legacy_mode_hands_out_the_agent_path") {
        return;
    }
    let cluster = Cluster::start(1, LAG).await;
    let mut settings = cluster.settings(0);
    settings.mount_mode = flocker_docker_plugin::config::MountMode::Legacy;
    let plugin = cluster.plugin_with(0, settings).await;
    plugin.docker.create("legacy", json!({})).await.unwrap();
    let id = dataset_id(&cluster.emulator, "legacy");
    let path = plugin.docker.mount("legacy", "c").await.unwrap();
    assert_eq!(
        path,
        cluster.nodes[0].root.join(&id),
        "the agent's own mount, no bind of ours"
    );
    assert!(!cluster.nodes[0].propagated.join(&id).exists());
    assert_eq!(cluster.emulator.leases().len(), 1);
    plugin.docker.unmount("legacy", "c").await.unwrap();
    assert!(
        is_mounted(&path),
        "the agent's mount stays; only ours would be removed"
    );
    assert!(cluster.emulator.leases().is_empty());
    plugin.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn unwritable_state_dir_refuses_mounts_and_leaks_nothing() {
    if !require_root("unwritable_state_dir_refuses_mounts_and_leaks_nothing") {
        return;
    }
    let cluster = Cluster::start(1, LAG).await;
    let blocker = cluster.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "a file where STATE_DIR's parent should be").unwrap();
    let mut settings = cluster.settings(0);
    settings.state_file = flocker_docker_plugin::driver::StateFile::in_dir(&blocker.join("state"));
    let plugin = cluster.plugin_with(0, settings).await;
    plugin.docker.create("nostate", json!({})).await.unwrap();
    // A mount the state file cannot record would be lost by a restart (SPEC §9.2): refused and undone.
    let err = plugin.docker.mount("nostate", "c").await.unwrap_err();
    assert!(
        err.contains("cannot save the plugin state") && err.contains("STATE_DIR"),
        "{err}"
    );
    let id = dataset_id(&cluster.emulator, "nostate");
    assert!(!is_mounted(&cluster.nodes[0].propagated.join(&id)));
    assert!(cluster.emulator.leases().is_empty());
    assert!(plugin.docker.path("nostate").await.is_err());
    plugin.stop().await;
    cluster.stop().await;
}

// Review finding B1: a restart must not pull a volume from under a running container when the
// configuration points elsewhere but this node's lease keeps the dataset here.
#[tokio::test]
async fn restart_keeps_a_leased_mount_configured_elsewhere() {
    if !require_root("restart_keeps_a_leased_mount_configured_elsewhere") {
        return;
    }
    let cluster = Cluster::start(2, Convergence::Manual).await;
    let a = cluster.plugin(0).await;
    a.docker.create("pinned", json!({})).await.unwrap();
    cluster.emulator.converge().await;
    let path = a.docker.mount("pinned", "c").await.unwrap();
    let id = dataset_id(&cluster.emulator, "pinned");
    let dataset = flocker_docker_plugin::flocker::DatasetId(id.parse().unwrap());
    let b = flocker_docker_plugin::flocker::NodeId(cluster.nodes[1].uuid);
    cluster.client().move_dataset(dataset, b).await.unwrap();
    cluster.emulator.converge().await;
    assert!(
        is_mounted(&cluster.nodes[0].root.join(&id)),
        "the agent honours A's lease"
    );

    a.stop().await;
    let a = cluster.plugin(0).await;
    assert_eq!(a.docker.path("pinned").await.unwrap(), path);
    assert!(is_mounted(&path), "the bind the container uses is kept");
    assert_eq!(
        cluster.emulator.leases()[0]["node_uuid"],
        json!(cluster.nodes[0].uuid)
    );
    assert_eq!(
        live_datasets(&cluster.emulator, "pinned")[0]["primary"],
        json!(cluster.nodes[0].uuid)
    );
    a.docker.unmount("pinned", "c").await.unwrap();
    a.stop().await;
    cluster.stop().await;
}

// Review finding B1b: a lease held by another node refuses a Mount at once, even when the
// configuration already names this node (two nodes raced), instead of timing out.
#[tokio::test]
async fn lease_elsewhere_refuses_at_once_even_if_configured_here() {
    if !require_root("lease_elsewhere_refuses_at_once_even_if_configured_here") {
        return;
    }
    let cluster = Cluster::start(2, Convergence::Manual).await;
    let a = cluster.plugin(0).await;
    let mut settings = cluster.settings(1);
    settings.mount_timeout = Duration::from_secs(2);
    let b = cluster.plugin_with(1, settings).await;
    a.docker.create("raced", json!({})).await.unwrap();
    cluster.emulator.converge().await;
    a.docker.mount("raced", "c").await.unwrap();
    let id = dataset_id(&cluster.emulator, "raced");
    let dataset = flocker_docker_plugin::flocker::DatasetId(id.parse().unwrap());
    let node_b = flocker_docker_plugin::flocker::NodeId(cluster.nodes[1].uuid);
    cluster
        .client()
        .move_dataset(dataset, node_b)
        .await
        .unwrap();

    let err = b.docker.mount("raced", "c").await.unwrap_err();
    assert!(
        err.contains(&format!("in use on node {}", cluster.nodes[0].uuid)),
        "{err}"
    );
    assert_eq!(
        cluster.emulator.leases()[0]["node_uuid"],
        json!(cluster.nodes[0].uuid)
    );
    a.docker.unmount("raced", "c").await.unwrap();
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

// Review finding B2: a bind that vanished is mounted again, never handed out as an empty directory.
#[tokio::test]
async fn vanished_bind_is_mounted_again_keeping_its_counts() {
    if !require_root("vanished_bind_is_mounted_again_keeping_its_counts") {
        return;
    }
    let cluster = Cluster::start(1, LAG).await;
    let plugin = cluster.plugin(0).await;
    plugin.docker.create("flaky", json!({})).await.unwrap();
    let path = plugin.docker.mount("flaky", "c1").await.unwrap();
    std::fs::write(path.join("kept"), "yes").unwrap();
    flocker_docker_plugin::mount::unmount_all(&path).unwrap();

    assert_eq!(plugin.docker.mount("flaky", "c2").await.unwrap(), path);
    assert!(is_mounted(&path));
    assert_eq!(std::fs::read_to_string(path.join("kept")).unwrap(), "yes");
    plugin.docker.unmount("flaky", "c1").await.unwrap();
    assert!(
        is_mounted(&path),
        "c2 still uses it; c1's count was carried over"
    );
    plugin.docker.unmount("flaky", "c2").await.unwrap();
    assert!(!is_mounted(&path));
    assert!(cluster.emulator.leases().is_empty());
    plugin.stop().await;
    cluster.stop().await;
}

// Review finding R1: when Docker hangs up on a Mount (its deadline), the Mount is not cut off
// half-way; it finishes and, with nobody to answer, is undone: no lease, no bind left.
#[tokio::test]
async fn abandoned_mount_is_undone() {
    if !require_root("abandoned_mount_is_undone") {
        return;
    }
    let cluster = Cluster::start(2, Convergence::Manual).await;
    let a = cluster.plugin(0).await;
    let b = cluster.plugin(1).await;
    b.docker.create("abandoned", json!({})).await.unwrap();
    cluster.emulator.converge().await;
    let id = dataset_id(&cluster.emulator, "abandoned");
    let docker = a.docker.clone();
    let call = tokio::spawn(async move { docker.mount("abandoned", "c").await });
    let move_path = format!("/v1/configuration/datasets/{id}");
    eventually("the Mount asked for the move", || {
        cluster.emulator.request_count("POST", &move_path) == 1
    })
    .await;
    assert_eq!(
        cluster.emulator.leases().len(),
        1,
        "the lease is taken before the move"
    );
    call.abort(); // Docker closes the connection.
    let _ = call.await;
    cluster.emulator.converge().await;
    eventually("the abandoned Mount is undone", || {
        cluster.emulator.leases().is_empty() && !is_mounted(&cluster.nodes[0].propagated.join(&id))
    })
    .await;
    assert!(a.docker.path("abandoned").await.is_err());
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

// Issue 9: volumes the original Python plugin made (metadata `name`, `maximum_size` only when a size was
// given, an optional profile, 75 GiB by default, never leased) are found, listed, mounted and removed.
#[tokio::test]
async fn volumes_made_by_the_original_plugin_work_as_ours() {
    if !require_root("volumes_made_by_the_original_plugin_work_as_ours") {
        return;
    }
    use flocker_docker_plugin::flocker::{NewDataset, NodeId};
    use std::collections::BTreeMap;
    let cluster = Cluster::start(1, LAG).await;
    let node = NodeId(cluster.nodes[0].uuid);
    let client = cluster.client();
    let shapes = [
        ("old-default", vec![], 80_530_636_800u64),
        (
            "old-sized",
            vec![("maximum_size", "10737418240")],
            10_737_418_240,
        ),
        (
            "old-gold",
            vec![("clusterhq:flocker:profile", "gold")],
            80_530_636_800,
        ),
    ];
    for (name, extra, size) in &shapes {
        let mut metadata = BTreeMap::from([("name".to_string(), name.to_string())]);
        for (k, v) in extra {
            metadata.insert(k.to_string(), v.to_string());
        }
        client
            .create_dataset(
                &NewDataset {
                    primary: node,
                    metadata,
                    maximum_size: *size,
                },
                None,
            )
            .await
            .unwrap();
    }
    let plugin = cluster.plugin(0).await;
    let listed: Vec<String> = plugin
        .docker
        .list()
        .await
        .unwrap()
        .iter()
        .map(|v| v["Name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, ["old-default", "old-gold", "old-sized"]);
    let gold = plugin.docker.get("old-gold").await.unwrap();
    assert_eq!(gold["Status"]["profile"], json!("gold"));
    assert_eq!(gold["Status"]["size"], json!("75GiB"));
    // Create with the same name (Docker and Swarm resend it) adopts the existing dataset.
    plugin.docker.create("old-sized", json!({})).await.unwrap();
    assert_eq!(live_datasets(&cluster.emulator, "old-sized").len(), 1);
    let path = plugin.docker.mount("old-sized", "c").await.unwrap();
    std::fs::write(path.join("f"), "kept").unwrap();
    plugin.docker.unmount("old-sized", "c").await.unwrap();
    assert!(cluster.emulator.leases().is_empty());
    plugin.docker.remove("old-default").await.unwrap();
    assert!(live_datasets(&cluster.emulator, "old-default").is_empty());
    plugin.stop().await;
    cluster.stop().await;
}
