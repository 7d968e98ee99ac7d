//! Regression tests for issue 6 ("Never lose a write"): each is a sequence of events that used to leave
//! a container writing to a volume no node held a lease on, or hand a container the wrong data
//! (SPEC §9). Real plugin, emulator and mounts; the names say what must never happen.

use std::path::Path;
use std::time::{Duration, Instant};

use flocker_docker_plugin::driver::StateFile;
use flocker_docker_plugin::emulator::Convergence;
use flocker_docker_plugin::flocker::NodeId;
use flocker_docker_plugin::identity::Identity;
use serde_json::{json, Value};

use crate::util::{
    bind_view, dataset_id, eventually, is_mounted, make_shared, require_root, Cluster, Plugin,
};

const LAG: Convergence = Convergence::After(Duration::from_millis(300));

/// The node holding the lease on `dataset`, if any.
pub fn lease_holder(cluster: &Cluster, dataset: &str) -> Option<String> {
    cluster
        .emulator
        .leases()
        .iter()
        .find(|l| l["dataset_id"] == json!(dataset))
        .map(|l| l["node_uuid"].as_str().unwrap().to_string())
}

/// A second plugin instance on node `i`'s UUID with its own directories (another host, or the same
/// host after a restart with other paths), with `adjust` applied to its settings.
async fn another_instance(
    cluster: &Cluster,
    i: usize,
    tag: &str,
    adjust: impl FnOnce(&mut flocker_docker_plugin::driver::DriverSettings),
) -> Plugin {
    let dir = cluster.dir.path().join(tag);
    let mut settings = cluster.settings(i);
    settings.mount_mode =
        flocker_docker_plugin::config::MountMode::Propagated(dir.join("propagated"));
    settings.state_file = StateFile::in_dir(&dir.join("state"));
    adjust(&mut settings);
    let (_tx, rx) = tokio::sync::watch::channel(Identity::Known(NodeId(cluster.nodes[i].uuid)));
    let mut plugin = Plugin::start(cluster.client(), settings, rx, &dir.join("plugin.sock")).await;
    plugin.reconciled().await;
    plugin
}

// Defect 1 (issue 6): a failed Mount that only *renewed* a lease must not release it. Two hosts
// configured with the same NODE_UUID: the second one's failed Mount used to free the first one's
// lease while its container wrote. Now the second host refuses outright.
#[tokio::test]
async fn a_lease_this_plugin_did_not_take_is_never_released() {
    if !require_root("a_lease_this_plugin_did_not_take_is_never_released") {
        return;
    }
    let cluster = Cluster::start(1, LAG).await;
    let first = cluster.plugin(0).await;
    first.docker.create("twin", json!({})).await.unwrap();
    first.docker.mount("twin", "c1").await.unwrap();
    let id = dataset_id(&cluster.emulator, "twin");

    let view = cluster.dir.path().join("twin-view");
    std::fs::create_dir_all(&view).unwrap();
    make_shared(&view);
    let second = another_instance(&cluster, 0, "twin-host", |s| s.flocker_root = view).await;
    assert_eq!(
        lease_holder(&cluster, &id),
        Some(cluster.nodes[0].uuid.to_string()),
        "the second instance's start-up recovery left the lease alone"
    );
    let err = second.docker.mount("twin", "c2").await.unwrap_err();
    assert!(err.contains("same NODE_UUID"), "{err}");
    assert_eq!(
        lease_holder(&cluster, &id),
        Some(cluster.nodes[0].uuid.to_string()),
        "the first host's lease survives the second host's failed Mount"
    );
    let err = second.docker.remove("twin").await.unwrap_err();
    assert!(err.contains("same NODE_UUID"), "{err}");

    first.docker.unmount("twin", "c1").await.unwrap();
    assert_eq!(lease_holder(&cluster, &id), None);
    second.stop().await;
    first.stop().await;
    cluster.stop().await;
}

// Defect 1 (issue 6): start-up recovery released leases from a snapshot taken before it waited;
// by the time it acted, another node could hold the lease.
#[tokio::test]
async fn recovery_never_frees_a_lease_another_node_took_meanwhile() {
    if !require_root("recovery_never_frees_a_lease_another_node_took_meanwhile") {
        return;
    }
    let cluster = Cluster::start(2, LAG).await;
    let b = cluster.plugin(1).await;
    let a = cluster.plugin(0).await;
    a.docker.create("contested", json!({})).await.unwrap();
    a.docker.mount("contested", "c").await.unwrap();
    let id = dataset_id(&cluster.emulator, "contested");
    // The last Unmount cannot release (500), and A stops before its retry: A restarts with a
    // leftover lease that no mount needs.
    cluster
        .emulator
        .fail_next("DELETE", &format!("/v1/configuration/leases/{id}"), 500);
    a.docker.unmount("contested", "c").await.unwrap();
    a.stop().await;
    assert_eq!(
        lease_holder(&cluster, &id),
        Some(cluster.nodes[0].uuid.to_string())
    );

    // A restarts; its snapshot shows its own lease, but the state read it waits for is slow.
    cluster
        .emulator
        .delay("/v1/state/datasets", Duration::from_millis(1500));
    cluster.emulator.reset_counts();
    let (_tx, rx) = tokio::sync::watch::channel(Identity::Known(NodeId(cluster.nodes[0].uuid)));
    let mut a = Plugin::start(
        cluster.client(),
        cluster.settings(0),
        rx,
        &cluster.nodes[0].socket,
    )
    .await;
    eventually("A read the leases", || {
        cluster
            .emulator
            .request_count("GET", "/v1/configuration/leases")
            > 0
    })
    .await;
    // Meanwhile the lease goes (an operator, or A's own earlier release) and B takes the volume.
    let _ = cluster
        .client()
        .release_lease(flocker_docker_plugin::flocker::DatasetId(
            id.parse().unwrap(),
        ))
        .await;
    let mounting = {
        let docker = b.docker.clone();
        tokio::spawn(async move { docker.mount("contested", "cb").await })
    };
    eventually("B holds the lease", || {
        lease_holder(&cluster, &id) == Some(cluster.nodes[1].uuid.to_string())
    })
    .await;
    a.reconciled().await;
    assert_eq!(
        lease_holder(&cluster, &id),
        Some(cluster.nodes[1].uuid.to_string()),
        "A's recovery left B's lease alone"
    );
    cluster.emulator.delay("/v1/state/datasets", Duration::ZERO);
    mounting.await.unwrap().unwrap();
    b.docker.unmount("contested", "cb").await.unwrap();
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

/// Mounts `name` on `plugin` (creating it) and writes a file the "container" keeps using.
async fn in_use(plugin: &Plugin, name: &str) -> std::path::PathBuf {
    plugin.docker.create(name, json!({})).await.unwrap();
    let path = plugin.docker.mount(name, "container").await.unwrap();
    std::fs::write(path.join("journal"), "entry 1\n").unwrap();
    path
}

/// Checks that node 0 still protects `name`: bind in place, node 0's lease, node 1 refused.
async fn still_protected(cluster: &Cluster, other: &Plugin, name: &str, bind: &Path) {
    let id = dataset_id(&cluster.emulator, name);
    assert!(is_mounted(bind), "the bind a container uses is kept");
    assert_eq!(
        std::fs::read_to_string(bind.join("journal")).unwrap(),
        "entry 1\n"
    );
    assert_eq!(
        lease_holder(cluster, &id),
        Some(cluster.nodes[0].uuid.to_string()),
        "node 0 still holds the lease"
    );
    let err = other.docker.mount(name, "elsewhere").await.unwrap_err();
    assert!(err.contains("in use on node"), "{err}");
}

// Defect 2 (issue 6): a restart with a lost or corrupt state file unmounted every bind it could not
// explain and released its lease, while containers kept writing through their own mounts.
#[tokio::test]
async fn lost_or_corrupt_state_file_adopts_what_is_mounted() {
    if !require_root("lost_or_corrupt_state_file_adopts_what_is_mounted") {
        return;
    }
    let cluster = Cluster::start(2, LAG).await;
    let b = cluster.plugin(1).await;
    let a = cluster.plugin(0).await;
    let lost = in_use(&a, "lost").await;
    let corrupt = in_use(&a, "corrupt").await;
    a.stop().await;

    let state = cluster.nodes[0].state_dir.join("state.json");
    std::fs::remove_file(&state).unwrap();
    let a = cluster.plugin(0).await;
    still_protected(&cluster, &b, "lost", &lost).await;
    let volume = a.docker.get("lost").await.unwrap();
    assert_eq!(volume["Mountpoint"], json!(lost), "adopted as mounted here");
    let err = a.docker.remove("lost").await.unwrap_err();
    assert!(
        err.contains("found mounted when the plugin started"),
        "{err}"
    );
    a.stop().await;

    std::fs::write(&state, b"{\"mounts\": {\"half-written").unwrap();
    let a = cluster.plugin(0).await;
    still_protected(&cluster, &b, "corrupt", &corrupt).await;
    still_protected(&cluster, &b, "lost", &lost).await;
    assert!(cluster.nodes[0]
        .state_dir
        .join("state.json.corrupt")
        .exists());
    // New containers mount and unmount an adopted volume without ever dropping the unknown users.
    a.docker.mount("lost", "new").await.unwrap();
    a.docker.unmount("lost", "new").await.unwrap();
    still_protected(&cluster, &b, "lost", &lost).await;
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

// Defect 2 (issue 6): saves that failed were only logged, so a restart forgot mounts Docker had been
// told about. Now a Mount is answered only once it is recorded; every answered Mount survives a restart.
#[tokio::test]
async fn every_answered_mount_survives_a_restart_even_when_state_saves_fail() {
    if !require_root("every_answered_mount_survives_a_restart_even_when_state_saves_fail") {
        return;
    }
    let cluster = Cluster::start(2, LAG).await;
    let b = cluster.plugin(1).await;
    let a = cluster.plugin(0).await;
    let first = in_use(&a, "first").await;
    a.docker.create("second", json!({})).await.unwrap();

    // The disk under STATE_DIR fails: the directory is replaced by a file.
    let state_dir = &cluster.nodes[0].state_dir;
    let aside = state_dir.with_extension("aside");
    std::fs::rename(state_dir, &aside).unwrap();
    std::fs::write(state_dir, "not a directory").unwrap();
    let answered = a.docker.mount("second", "container").await;
    a.stop().await;
    std::fs::remove_file(state_dir).unwrap();
    std::fs::rename(&aside, state_dir).unwrap();

    let a = cluster.plugin(0).await;
    still_protected(&cluster, &b, "first", &first).await;
    let id = dataset_id(&cluster.emulator, "second");
    match answered {
        Ok(path) => {
            // Whatever was answered must still be protected after the restart.
            assert!(is_mounted(&path));
            assert_eq!(
                lease_holder(&cluster, &id),
                Some(cluster.nodes[0].uuid.to_string())
            );
        }
        Err(err) => {
            assert!(err.contains("cannot save the plugin state"), "{err}");
            assert!(!is_mounted(&cluster.nodes[0].propagated.join(&id)));
            assert_eq!(lease_holder(&cluster, &id), None, "nothing leaked");
        }
    }
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

// Defect 3 (issue 6): propagation was checked only as "is a mount point". Through a private view of the
// agent's root, a dataset mounted before the view was made still looks mounted after it moved away.
#[tokio::test]
async fn a_private_view_of_the_agent_root_is_refused() {
    if !require_root("a_private_view_of_the_agent_root_is_refused") {
        return;
    }
    let cluster = Cluster::start(1, LAG).await;
    let plain = cluster.plugin(0).await;
    plain.docker.create("frozen", json!({})).await.unwrap();
    plain.docker.mount("frozen", "c").await.unwrap();
    plain.docker.unmount("frozen", "c").await.unwrap();
    plain.stop().await;

    // The agent has the dataset mounted now; a private copy of its root freezes that.
    let frozen = cluster.dir.path().join("frozen-view");
    bind_view(&cluster.nodes[0].root, &frozen, false);
    let mut settings = cluster.settings(0);
    settings.flocker_root = frozen.clone();
    let plugin = cluster.plugin_with(0, settings).await;
    let err = plugin.docker.mount("frozen", "c").await.unwrap_err();
    assert!(
        err.contains("private mount in the plugin") && err.contains("make-shared"),
        "{err}"
    );
    let id = dataset_id(&cluster.emulator, "frozen");
    assert_eq!(lease_holder(&cluster, &id), None);
    plugin.stop().await;

    // A propagating (rslave) view is accepted, also for datasets the agent mounts after it was made.
    let live = cluster.dir.path().join("live-view");
    bind_view(&cluster.nodes[0].root, &live, true);
    let mut settings = cluster.settings(0);
    settings.flocker_root = live.clone();
    let plugin = cluster.plugin_with(0, settings).await;
    plugin.docker.create("later", json!({})).await.unwrap();
    let path = plugin.docker.mount("later", "c").await.unwrap();
    std::fs::write(path.join("f"), "x").unwrap();
    let later = dataset_id(&cluster.emulator, "later");
    assert_eq!(
        std::fs::read_to_string(cluster.nodes[0].root.join(&later).join("f")).unwrap(),
        "x"
    );
    plugin.docker.unmount("later", "c").await.unwrap();
    plugin.stop().await;
    for view in [&frozen, &live] {
        nix::mount::umount2(view, nix::mount::MntFlags::MNT_DETACH).unwrap();
    }
    cluster.stop().await;
}

// Defect 3 (issue 6): a symlink planted at FLOCKER_ROOT/<dataset> was followed, handing one volume's
// container another dataset's data.
#[tokio::test]
async fn a_symlink_below_flocker_root_is_never_followed() {
    if !require_root("a_symlink_below_flocker_root_is_never_followed") {
        return;
    }
    let cluster = Cluster::start(1, LAG).await;
    let plugin = cluster.plugin(0).await;
    let secret = in_use(&plugin, "secret").await;
    std::fs::write(secret.join("private"), "not for others").unwrap();
    plugin.docker.create("victim", json!({})).await.unwrap();
    plugin.docker.mount("victim", "c").await.unwrap();
    plugin.docker.unmount("victim", "c").await.unwrap();
    let secret_id = dataset_id(&cluster.emulator, "secret");
    let victim_id = dataset_id(&cluster.emulator, "victim");

    // The agent's mount of "victim" is replaced by a symlink to "secret"'s.
    let root = &cluster.nodes[0].root;
    nix::mount::umount2(&root.join(&victim_id), nix::mount::MntFlags::MNT_DETACH).unwrap();
    std::fs::remove_dir(root.join(&victim_id)).unwrap();
    std::os::unix::fs::symlink(root.join(&secret_id), root.join(&victim_id)).unwrap();

    let err = plugin.docker.mount("victim", "c").await.unwrap_err();
    assert!(
        err.contains("not a mount point") || err.contains("not a directory"),
        "{err}"
    );
    assert!(!is_mounted(&cluster.nodes[0].propagated.join(&victim_id)));
    assert_eq!(lease_holder(&cluster, &victim_id), None);
    std::fs::remove_file(root.join(&victim_id)).unwrap();
    plugin.docker.unmount("secret", "container").await.unwrap();
    plugin.stop().await;
    cluster.stop().await;
}

// Defect 4 (issue 6): in legacy mode the state file was never reconciled, so after a reboot every
// volume mounted before it was leased again for good.
#[tokio::test]
async fn legacy_counts_from_before_a_reboot_are_dropped() {
    if !require_root("legacy_counts_from_before_a_reboot_are_dropped") {
        return;
    }
    let cluster = Cluster::start(2, LAG).await;
    let mut settings = cluster.settings(0);
    settings.mount_mode = flocker_docker_plugin::config::MountMode::Legacy;
    let a = cluster.plugin_with(0, settings.clone()).await;
    a.docker.create("rebooted", json!({})).await.unwrap();
    a.docker.mount("rebooted", "before-reboot").await.unwrap();
    a.stop().await;

    // The host reboots: a new boot ID, and no container survives.
    let state = cluster.nodes[0].state_dir.join("state.json");
    let mut file: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    file["boot_id"] = json!(uuid::Uuid::new_v4());
    std::fs::write(&state, file.to_string()).unwrap();

    let a = cluster.plugin_with(0, settings).await;
    let id = dataset_id(&cluster.emulator, "rebooted");
    assert_eq!(lease_holder(&cluster, &id), None, "the stale count is gone");
    assert!(a.docker.path("rebooted").await.is_err());
    let b = cluster.plugin(1).await;
    b.docker.mount("rebooted", "after-reboot").await.unwrap();
    b.docker.unmount("rebooted", "after-reboot").await.unwrap();
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

// Defect 6 (issue 6): Get answered an error on a 401/403/404 from a proxy, and the engine then forgot
// the volume.
#[tokio::test]
async fn get_answers_from_memory_when_a_proxy_refuses() {
    if !require_root("get_answers_from_memory_when_a_proxy_refuses") {
        return;
    }
    let cluster = Cluster::start(1, LAG).await;
    let mut settings = cluster.settings(0);
    settings.report_age = Duration::ZERO; // Every Get asks, so every injected failure is met.
    let plugin = cluster.plugin_with(0, settings).await;
    plugin.docker.create("known", json!({})).await.unwrap();
    plugin.docker.get("known").await.unwrap();
    for status in [401, 403, 404, 502] {
        cluster
            .emulator
            .fail_next("GET", "/v1/configuration/datasets", status);
        let volume = plugin.docker.get("known").await.unwrap();
        assert_eq!(volume["Status"]["stale"], json!(true), "{status}");
        cluster
            .emulator
            .fail_next("GET", "/v1/configuration/datasets", status);
        let listed = plugin.docker.list().await.unwrap();
        assert_eq!(listed.len(), 1, "{status}");
    }
    cluster
        .emulator
        .fail_next("GET", "/v1/configuration/datasets", 403);
    let err = plugin.docker.get("never-seen").await.unwrap_err();
    assert!(err.contains("403"), "{err}");
    plugin.stop().await;
    cluster.stop().await;
}

// Defect 6 (issue 6): Remove ran in the request's task, so Docker hanging up mid-call cut it off
// half-way. It now finishes.
#[tokio::test]
async fn remove_finishes_when_docker_hangs_up() {
    if !require_root("remove_finishes_when_docker_hangs_up") {
        return;
    }
    let cluster = Cluster::start(1, LAG).await;
    let plugin = cluster.plugin(0).await;
    plugin.docker.create("hangup", json!({})).await.unwrap();
    let id = dataset_id(&cluster.emulator, "hangup");
    let path = format!("/v1/configuration/datasets/{id}");
    cluster.emulator.delay(&path, Duration::from_millis(800));
    let docker = plugin.docker.clone();
    let call = tokio::spawn(async move { docker.remove("hangup").await });
    eventually("the DELETE is on its way", || {
        cluster.emulator.request_count("DELETE", &path) == 1
    })
    .await;
    call.abort();
    let _ = call.await;
    eventually("the dataset is deleted anyway", || {
        cluster
            .emulator
            .configured_datasets()
            .iter()
            .any(|d| d["dataset_id"] == json!(id) && d["deleted"] == json!(true))
    })
    .await;
    cluster.emulator.delay(&path, Duration::ZERO);
    plugin.stop().await;
    cluster.stop().await;
}

// Defect 6 (issue 6): Mount's deadline did not cover the configuration read and the lease after a
// late lock, so with a slow control service it answered after Docker had given up (and was undone).
#[tokio::test]
async fn mount_answers_by_its_deadline_when_the_control_service_is_slow() {
    if !require_root("mount_answers_by_its_deadline_when_the_control_service_is_slow") {
        return;
    }
    let cluster = Cluster::start(1, LAG).await;
    let mut settings = cluster.settings(0);
    settings.mount_timeout = Duration::from_secs(1);
    let plugin = cluster.plugin_with(0, settings).await;
    plugin.docker.create("slow", json!({})).await.unwrap();
    cluster
        .emulator
        .delay("/v1/configuration/leases", Duration::from_secs(3));
    let started = Instant::now();
    let err = plugin.docker.mount("slow", "c").await.unwrap_err();
    let answered = started.elapsed();
    assert!(err.starts_with("Timed out"), "{err}");
    assert!(
        answered < Duration::from_millis(2500),
        "answered after {answered:?}; Docker's own deadline would have passed"
    );
    cluster
        .emulator
        .delay("/v1/configuration/leases", Duration::ZERO);
    let id = dataset_id(&cluster.emulator, "slow");
    eventually("no lease is left behind", || {
        lease_holder(&cluster, &id).is_none()
    })
    .await;
    // Docker retries; the first Mount's worker may still be giving its lease back.
    let mut attempt = plugin.docker.mount("slow", "c").await;
    for _ in 0..5 {
        match &attempt {
            Err(e) if e.contains("still in progress") => {
                attempt = plugin.docker.mount("slow", "c").await
            }
            _ => break,
        }
    }
    let path = attempt.unwrap();
    plugin.docker.unmount("slow", "c").await.unwrap();
    assert!(!is_mounted(&path));
    plugin.stop().await;
    cluster.stop().await;
}

// Defect 1 (issue 6): the last Unmount's release was applied but its answer lost; the background retry
// then found the volume unmounted here and deleted the lease another node had taken meanwhile.
#[tokio::test]
async fn a_retried_release_never_frees_another_nodes_lease() {
    if !require_root("a_retried_release_never_frees_another_nodes_lease") {
        return;
    }
    let cluster = Cluster::start(2, LAG).await;
    // A short request timeout, so the unanswered release is past landing within the test.
    let a = cluster
        .plugin_with_timeout(0, cluster.settings(0), Duration::from_secs(1))
        .await;
    let b = cluster.plugin(1).await;
    a.docker.create("handover", json!({})).await.unwrap();
    a.docker.mount("handover", "ca").await.unwrap();
    let id = dataset_id(&cluster.emulator, "handover");
    let release = format!("/v1/configuration/leases/{id}");
    cluster.emulator.drop_answer_next("DELETE", &release);
    a.docker.unmount("handover", "ca").await.unwrap();
    b.docker.mount("handover", "cb").await.unwrap();
    let gets = cluster
        .emulator
        .request_count("GET", "/v1/configuration/leases");
    eventually("A's retry looked at the leases", || {
        cluster
            .emulator
            .request_count("GET", "/v1/configuration/leases")
            > gets
    })
    .await;
    a.stop().await; // Also waits for A's retry task to end.
    assert_eq!(
        lease_holder(&cluster, &id),
        Some(cluster.nodes[1].uuid.to_string()),
        "B keeps its lease"
    );
    assert_eq!(cluster.emulator.request_count("DELETE", &release), 1);
    b.docker.unmount("handover", "cb").await.unwrap();
    b.stop().await;
    cluster.stop().await;
}

// Defect 2 (issue 6): recovery treated a dataset as moved away when one state read did not show it
// here (the agent had not reported yet), unmounted it and released its lease under a running container.
#[tokio::test]
async fn recovery_keeps_a_volume_the_state_does_not_show_yet() {
    if !require_root("recovery_keeps_a_volume_the_state_does_not_show_yet") {
        return;
    }
    let cluster = Cluster::start(2, LAG).await;
    let a = cluster.plugin(0).await;
    let busy = in_use(&a, "unreported").await;
    let id = dataset_id(&cluster.emulator, "unreported");
    a.stop().await;
    // Someone points the dataset at B, and A's agent reconnects slowly: the state shows it nowhere.
    let dataset = flocker_docker_plugin::flocker::DatasetId(id.parse().unwrap());
    cluster
        .client()
        .move_dataset(dataset, NodeId(cluster.nodes[1].uuid))
        .await
        .unwrap();
    cluster.emulator.kill_node(cluster.nodes[0].uuid).unwrap();
    assert!(!cluster
        .emulator
        .state_datasets()
        .iter()
        .any(|s| s["dataset_id"] == json!(id) && s.get("path").is_some()));

    let a = cluster.plugin(0).await;
    assert!(is_mounted(&busy), "the bind a container uses is kept");
    assert_eq!(
        lease_holder(&cluster, &id),
        Some(cluster.nodes[0].uuid.to_string())
    );
    let configured = crate::util::live_datasets(&cluster.emulator, "unreported");
    assert_eq!(
        configured[0]["primary"],
        json!(cluster.nodes[0].uuid),
        "pointed back at the node that uses it"
    );
    cluster.emulator.revive_node(cluster.nodes[0].uuid).unwrap();
    a.docker.unmount("unreported", "container").await.unwrap();
    a.stop().await;
    cluster.stop().await;
}

// Defect 5 (issue 6): a node that died with a volume in use pinned it forever. `release-leases`
// frees a dead node's leases, and refuses while the node still looks alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_volume_moves_after_release_leases() {
    if !require_root("a_dead_nodes_volume_moves_after_release_leases") {
        return;
    }
    let cluster = Cluster::start(2, LAG).await;
    let a = cluster.plugin(0).await;
    let b = cluster.plugin(1).await;
    let on_a = in_use(&a, "orphaned").await;
    let id = dataset_id(&cluster.emulator, "orphaned");
    let dead = cluster.nodes[0].uuid.to_string();
    let release = |extra: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flocker-docker-plugin"));
        command
            .env_clear()
            .env("CONTROL_URL", cluster.emulator.url())
            .env("CERTS_DIR", &cluster.certs)
            .env("CONFIG_FILE", "")
            .args(["release-leases", "--node", &dead])
            .args(extra);
        // The emulator runs on this test's runtime: wait for the command off its workers.
        tokio::task::block_in_place(|| command.output().unwrap())
    };

    let refused = release(&[]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("is alive"), "{stderr}");
    assert_eq!(lease_holder(&cluster, &id), Some(dead.clone()));

    // Node A dies: its plugin, its agent, its machine.
    a.stop().await;
    cluster.emulator.kill_node(cluster.nodes[0].uuid).unwrap();
    let err = b.docker.mount("orphaned", "cb").await.unwrap_err();
    assert!(err.contains(&format!("in use on node {dead}")), "{err}");

    let done = release(&[]);
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        stdout.contains("released the lease on volume orphaned"),
        "{stdout}"
    );
    let path = b.docker.mount("orphaned", "cb").await.unwrap();
    assert_eq!(
        std::fs::read_to_string(path.join("journal")).unwrap(),
        "entry 1\n",
        "the data came along"
    );
    assert!(
        !is_mounted(&cluster.nodes[0].root.join(&id)),
        "detached from the dead node"
    );
    let again = release(&["--volume", "orphaned"]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "no lease of the dead node is left"
    );
    b.docker.unmount("orphaned", "cb").await.unwrap();
    // The stale bind on the dead node is its own business; clean it for the test's sake.
    mount_cleanup(&on_a);
    b.stop().await;
    cluster.stop().await;
}

fn mount_cleanup(path: &Path) {
    let _ = flocker_docker_plugin::mount::unmount_all(path);
}

// Review finding 1 (issue 6): a lease release the control service carried out late, after the
// request had timed out, freed the lease the next Mount on the same node had just renewed. Lease
// requests on a dataset now wait until an unanswered one can no longer land.
#[tokio::test]
async fn a_late_release_never_frees_the_lease_of_a_new_mount() {
    if !require_root("a_late_release_never_frees_the_lease_of_a_new_mount") {
        return;
    }
    let cluster = Cluster::start(2, LAG).await;
    let a = cluster
        .plugin_with_timeout(0, cluster.settings(0), Duration::from_secs(1))
        .await;
    let b = cluster.plugin(1).await;
    a.docker.create("late", json!({})).await.unwrap();
    let id = dataset_id(&cluster.emulator, "late");
    a.docker.mount("late", "c1").await.unwrap();
    cluster.emulator.apply_late_next(
        "DELETE",
        &format!("/v1/configuration/leases/{id}"),
        Duration::from_secs(2),
    );
    a.docker.unmount("late", "c1").await.unwrap(); // the release times out; it lands at 2 s
    let path = a.docker.mount("late", "c2").await.unwrap(); // docker restart
    assert_eq!(
        lease_holder(&cluster, &id),
        Some(cluster.nodes[0].uuid.to_string())
    );
    let err = b.docker.mount("late", "cb").await.unwrap_err();
    assert!(err.contains("in use on node"), "{err}");
    assert!(is_mounted(&path));
    a.docker.unmount("late", "c2").await.unwrap();
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

// Review finding 2 (issue 6): a lease request carried out after it timed out left a lease this node's
// UUID held but the plugin had disowned: every later Mount, Remove and restart was refused.
#[tokio::test]
async fn a_late_lease_is_found_and_given_back() {
    if !require_root("a_late_lease_is_found_and_given_back") {
        return;
    }
    let cluster = Cluster::start(2, LAG).await;
    let a = cluster
        .plugin_with_timeout(0, cluster.settings(0), Duration::from_secs(1))
        .await;
    let b = cluster.plugin(1).await;
    a.docker.create("wedge", json!({})).await.unwrap();
    let id = dataset_id(&cluster.emulator, "wedge");
    cluster
        .emulator
        .apply_late_next("POST", "/v1/configuration/leases", Duration::from_secs(2));
    a.docker.mount("wedge", "c1").await.unwrap_err();
    eventually("the late lease is given back", || {
        cluster
            .emulator
            .request_count("POST", "/v1/configuration/leases")
            == 1
            && cluster
                .emulator
                .request_count("DELETE", &format!("/v1/configuration/leases/{id}"))
                == 1
    })
    .await;
    assert_eq!(lease_holder(&cluster, &id), None);
    let path = b.docker.mount("wedge", "cb").await.unwrap();
    b.docker.unmount("wedge", "cb").await.unwrap();
    assert!(!is_mounted(&path));
    a.docker.mount("wedge", "c2").await.unwrap();
    a.docker.unmount("wedge", "c2").await.unwrap();
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

// Review finding 3 (issue 6): a Remove on another node between a Mount's configuration read and its
// lease deleted the dataset, and the Mount still handed a container the deleted dataset, destroyed
// once it stopped. The configuration is now read after the lease.
#[tokio::test]
async fn a_mount_racing_a_remove_never_hands_out_a_deleted_dataset() {
    if !require_root("a_mount_racing_a_remove_never_hands_out_a_deleted_dataset") {
        return;
    }
    let cluster = Cluster::start(2, Convergence::Manual).await;
    let a = cluster.plugin(0).await;
    let b = cluster.plugin(1).await;
    a.docker.create("doomed", json!({})).await.unwrap();
    cluster.emulator.converge().await;
    let id = dataset_id(&cluster.emulator, "doomed");
    cluster.emulator.reset_counts();
    cluster
        .emulator
        .delay("/v1/configuration/leases", Duration::from_millis(1500));
    let mounting = {
        let docker = a.docker.clone();
        tokio::spawn(async move { docker.mount("doomed", "c1").await })
    };
    eventually("A asked for the lease", || {
        cluster
            .emulator
            .request_count("POST", "/v1/configuration/leases")
            > 0
    })
    .await;
    cluster
        .emulator
        .delay("/v1/configuration/leases", Duration::ZERO);
    b.docker.remove("doomed").await.unwrap();
    let err = mounting.await.unwrap().unwrap_err();
    assert!(
        err.starts_with("Could not find volume with given name."),
        "{err}"
    );
    assert!(!is_mounted(&cluster.nodes[0].propagated.join(&id)));
    eventually("no lease is left", || lease_holder(&cluster, &id).is_none()).await;
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

// Review finding 4 (issue 6): after an engine crash the engine removes the plugin's propagated mounts
// before it stops the old containers; the restarted plugin released their leases at once while they
// still wrote. They are now kept for the restart grace.
#[tokio::test]
async fn binds_the_engine_removed_keep_their_lease_for_the_restart_grace() {
    if !require_root("binds_the_engine_removed_keep_their_lease_for_the_restart_grace") {
        return;
    }
    let cluster = Cluster::start(2, LAG).await;
    let a = cluster.plugin(0).await;
    let b = cluster.plugin(1).await;
    let path = in_use(&a, "crashed").await;
    let id = dataset_id(&cluster.emulator, "crashed");
    // The container's own bind of the volume, which outlives the plugin's.
    let container = cluster.dir.path().join("container-data");
    std::fs::create_dir_all(&container).unwrap();
    nix::mount::mount(
        Some(&path),
        &container,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    // The plugin dies with the engine: no clean stop.
    a.crash().await;
    flocker_docker_plugin::mount::unmount_all(&path).unwrap();
    let mut settings = cluster.settings(0);
    settings.restart_grace = Duration::from_secs(3);
    let a = cluster.plugin_with(0, settings).await;
    assert_eq!(
        lease_holder(&cluster, &id),
        Some(cluster.nodes[0].uuid.to_string()),
        "kept while the old container may still run"
    );
    let err = b.docker.mount("crashed", "cb").await.unwrap_err();
    assert!(err.contains("in use on node"), "{err}");
    // Docker 20.10 then sends the old container's Unmount, which drains it at once.
    a.docker.unmount("crashed", "container").await.unwrap();
    assert_eq!(lease_holder(&cluster, &id), None);
    nix::mount::umount2(&container, nix::mount::MntFlags::MNT_DETACH).unwrap();
    b.docker.mount("crashed", "cb").await.unwrap();
    b.docker.unmount("crashed", "cb").await.unwrap();
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

// Review finding (a) (issue 6): on a second host with the same NODE_UUID, a lease request refused
// with HTTP 500 made the plugin release the first host's lease. A request certainly not carried
// out now leaves nothing to give back.
#[tokio::test]
async fn a_refused_lease_request_never_releases_a_twins_lease() {
    if !require_root("a_refused_lease_request_never_releases_a_twins_lease") {
        return;
    }
    let cluster = Cluster::start(1, LAG).await;
    let first = cluster.plugin(0).await;
    first.docker.create("twin", json!({})).await.unwrap();
    first.docker.mount("twin", "c1").await.unwrap();
    let id = dataset_id(&cluster.emulator, "twin");
    let view = cluster.dir.path().join("twin-view");
    std::fs::create_dir_all(&view).unwrap();
    make_shared(&view);
    let second = another_instance(&cluster, 0, "twin-host", |s| s.flocker_root = view).await;
    cluster
        .emulator
        .fail_next("POST", "/v1/configuration/leases", 500);
    second.docker.mount("twin", "c2").await.unwrap_err();
    assert_eq!(
        lease_holder(&cluster, &id),
        Some(cluster.nodes[0].uuid.to_string())
    );
    first.docker.unmount("twin", "c1").await.unwrap();
    second.stop().await;
    first.stop().await;
    cluster.stop().await;
}

// Review finding 5 (issue 6): a plugin killed between its bind and the record of it left a bind that
// the next start adopted for good, although Docker never heard of it. The bind is noted as pending
// before it is made; a pending bind found at start is removed and its lease given back.
#[tokio::test]
async fn a_bind_docker_never_heard_of_is_removed_at_start() {
    if !require_root("a_bind_docker_never_heard_of_is_removed_at_start") {
        return;
    }
    let cluster = Cluster::start(2, LAG).await;
    let a = cluster.plugin(0).await;
    let b = cluster.plugin(1).await;
    a.docker.create("unanswered", json!({})).await.unwrap();
    let path = a.docker.mount("unanswered", "c").await.unwrap();
    a.stop().await;
    // As if killed after the bind and before the record: the state file has only the pending note.
    let state = cluster.nodes[0].state_dir.join("state.json");
    let mut file: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let record = file["mounts"]["unanswered"].take();
    file["mounts"] = json!({});
    file["pending"] = json!({ "unanswered": {
        "dataset_id": record["dataset_id"], "mountpoint": record["mountpoint"] } });
    std::fs::write(&state, file.to_string()).unwrap();

    let a = cluster.plugin(0).await;
    assert!(!is_mounted(&path), "nobody could be using it");
    let id = dataset_id(&cluster.emulator, "unanswered");
    eventually("its lease is given back", || {
        lease_holder(&cluster, &id).is_none()
    })
    .await;
    b.docker.mount("unanswered", "cb").await.unwrap();
    b.docker.unmount("unanswered", "cb").await.unwrap();
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

/// The daemon binary mounts a volume for a running container, then stops (`clean`: SIGTERM, as on
/// `docker plugin disable -f`; else `kill -9`); the engine removes its propagated mount while the
/// container keeps its own copy; the plugin starts again with a short restart grace. Returns the
/// plugin, the volume's dataset, its mountpoint and the container's copy.
async fn stopped_under_a_running_container(
    cluster: &Cluster,
    clean: bool,
) -> (Plugin, String, std::path::PathBuf, std::path::PathBuf) {
    let mut daemon = cluster.daemon(0, &[]).await;
    daemon.docker.create("held", json!({})).await.unwrap();
    let path = daemon.docker.mount("held", "container").await.unwrap();
    let id = dataset_id(&cluster.emulator, "held");
    let container = cluster.dir.path().join("held-container");
    std::fs::create_dir_all(&container).unwrap();
    nix::mount::mount(
        Some(&path),
        &container,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    if clean {
        let (status, _) = daemon.terminate();
        assert!(status.success(), "clean exit: {status}\n{}", daemon.log());
    } else {
        daemon.kill9();
    }
    drop(daemon);
    flocker_docker_plugin::mount::unmount_all(&path).unwrap();
    let mut settings = cluster.settings(0);
    settings.restart_grace = Duration::from_millis(300);
    let a = cluster.plugin_with(0, settings).await;
    (a, id, path, container)
}

// `docker plugin disable -f flocker` under a running container: Docker SIGTERMs the plugin and removes
// its propagated mount while the container keeps writing through its own copy. After `plugin enable`
// the restart grace ran out and the lease was released under the running container (SPEC §9). A
// volume in use at a clean stop is now held: its lease is kept until the container's Unmount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_in_use_at_a_clean_stop_keep_their_lease_past_the_restart_grace() {
    if !require_root("volumes_in_use_at_a_clean_stop_keep_their_lease_past_the_restart_grace") {
        return;
    }
    let cluster = Cluster::start(2, LAG).await;
    let b = cluster.plugin(1).await;
    let (a, id, path, container) = stopped_under_a_running_container(&cluster, true).await;
    let here = Some(cluster.nodes[0].uuid.to_string());
    // Well past the grace: nothing is expected to happen, so there is no event to wait for.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lease_holder(&cluster, &id), here, "kept past the grace");
    assert_eq!(a.docker.path("held").await.unwrap(), path, "record kept");
    std::fs::write(container.join("journal"), "still writing\n").unwrap();
    let err = b.docker.mount("held", "cb").await.unwrap_err();
    assert!(err.contains("in use on node"), "{err}");
    // The container stops: the engine sends its Unmount, with the ID it mounted with.
    a.docker.unmount("held", "container").await.unwrap();
    assert_eq!(lease_holder(&cluster, &id), None);
    assert!(a.docker.path("held").await.is_err(), "record drained");
    nix::mount::umount2(&container, nix::mount::MntFlags::MNT_DETACH).unwrap();
    b.docker.mount("held", "cb").await.unwrap();
    b.docker.unmount("held", "cb").await.unwrap();
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

// The same after a crash (`kill -9`, no clean stop): as after an engine crash, the lease is kept only
// for the restart grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_in_use_at_a_crash_keep_their_lease_only_for_the_restart_grace() {
    if !require_root("volumes_in_use_at_a_crash_keep_their_lease_only_for_the_restart_grace") {
        return;
    }
    let cluster = Cluster::start(2, LAG).await;
    let b = cluster.plugin(1).await;
    let (a, id, _path, container) = stopped_under_a_running_container(&cluster, false).await;
    eventually("the grace is over and the lease given back", || {
        lease_holder(&cluster, &id).is_none()
    })
    .await;
    assert!(a.docker.path("held").await.is_err(), "record dropped");
    nix::mount::umount2(&container, nix::mount::MntFlags::MNT_DETACH).unwrap();
    b.docker.mount("held", "cb").await.unwrap();
    b.docker.unmount("held", "cb").await.unwrap();
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

// Review of the known-volumes change: a Mount whose first guess was a stale dataset (the name had
// since been given to another one elsewhere) let go of the guess's lease; when that release failed,
// its retry saw the volume mounted (on the other dataset) and gave up, so the guess stayed leased by
// this node for good. The retry now gives up only for a mount of the same dataset.
#[tokio::test]
async fn a_released_wrong_guess_is_not_left_leased() {
    if !require_root("a_released_wrong_guess_is_not_left_leased") {
        return;
    }
    let cluster = Cluster::start(2, LAG).await;
    let a = cluster.plugin(0).await;
    a.docker.create("renamed", json!({})).await.unwrap();
    let guess = dataset_id(&cluster.emulator, "renamed");
    // Elsewhere, the name moves to a new dataset; A's known volumes still say the old one.
    let client = cluster.client();
    let old = flocker_docker_plugin::flocker::DatasetId(guess.parse().unwrap());
    client.delete_dataset(old, None).await.unwrap();
    client
        .create_dataset(
            &flocker_docker_plugin::flocker::NewDataset {
                primary: NodeId(cluster.nodes[0].uuid),
                metadata: [("name".to_string(), "renamed".to_string())].into(),
                maximum_size: 1 << 30,
            },
            None,
        )
        .await
        .unwrap();
    let right = dataset_id(&cluster.emulator, "renamed");
    assert_ne!(right, guess);
    let release = format!("/v1/configuration/leases/{guess}");
    cluster.emulator.fail_next("DELETE", &release, 500);
    a.docker.mount("renamed", "c1").await.unwrap();
    assert_eq!(
        cluster
            .emulator
            .request_count("POST", "/v1/configuration/leases"),
        2,
        "the guess was leased first, then the right dataset"
    );
    let me = cluster.nodes[0].uuid.to_string();
    assert_eq!(lease_holder(&cluster, &right), Some(me));
    eventually("the guess's lease is given back", || {
        lease_holder(&cluster, &guess).is_none()
    })
    .await;
    a.docker.unmount("renamed", "c1").await.unwrap();
    a.stop().await;
    cluster.stop().await;
}
