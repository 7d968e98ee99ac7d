//! Control-service requests per Docker operation (SPEC §10, issue 8): counts, not times. The calls are
//! the ones the engine sends for each command (reference/docker-plugin.md §1.6); `make e2e` checks the
//! same budgets through the real engine.

use std::time::Duration;

use flocker_docker_plugin::emulator::{Convergence, Emulator};
use serde_json::json;

use crate::util::{require_root, Cluster};

#[tokio::test]
async fn a_docker_run_on_a_volume_already_here_costs_five_requests() {
    if !require_root("a_docker_run_on_a_volume_already_here_costs_five_requests") {
        return;
    }
    let cluster = Cluster::start(1, Convergence::After(Duration::from_millis(100))).await;
    let plugin = cluster.plugin(0).await;
    let docker = &plugin.docker;
    docker.create("here", json!({})).await.unwrap();
    // Agent mounted it; nothing uses it; every cached answer is older than the reuse window.
    docker.mount("here", "warm").await.unwrap();
    docker.unmount("here", "warm").await.unwrap();
    tokio::time::sleep(flocker_docker_plugin::driver::REPORT_AGE).await;
    cluster.emulator.reset_counts();

    // `docker run --rm -v here:/data …`: Get (create), Get + Mount (start), Get + Unmount (stop).
    docker.get("here").await.unwrap();
    docker.get("here").await.unwrap();
    docker.mount("here", "c1").await.unwrap();
    docker.get("here").await.unwrap();
    docker.unmount("here", "c1").await.unwrap();
    let (total, detail) = cluster.emulator.requests_received();
    // One configuration read for the Gets, the lease, a configuration read after it (a Remove
    // elsewhere just before must be seen), and the release: a read of the leases (only this node's
    // lease may be deleted, SPEC §9.1) and the DELETE. No state read: the agent's mount is visible.
    assert_eq!(total, 5, "{detail}");
    assert_eq!(
        cluster.emulator.request_count("GET", "/v1/state/datasets"),
        0,
        "{detail}"
    );
    plugin.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn inspect_and_ls_cost_one_request_and_concurrent_callers_share() {
    if !require_root("inspect_and_ls_cost_one_request_and_concurrent_callers_share") {
        return;
    }
    let cluster = Cluster::start(1, Convergence::After(Duration::from_millis(100))).await;
    let plugin = cluster.plugin(0).await;
    for i in 0..5 {
        plugin
            .docker
            .create(&format!("v{i}"), json!({}))
            .await
            .unwrap();
    }
    tokio::time::sleep(flocker_docker_plugin::driver::REPORT_AGE).await;
    let reads = |e: &Emulator| e.request_count("GET", "/v1/configuration/datasets");

    cluster.emulator.reset_counts();
    plugin.docker.get("v0").await.unwrap(); // docker volume inspect
    assert_eq!(reads(&cluster.emulator), 1);
    tokio::time::sleep(flocker_docker_plugin::driver::REPORT_AGE).await;
    cluster.emulator.reset_counts();
    assert_eq!(plugin.docker.list().await.unwrap().len(), 5); // docker volume ls
    assert_eq!(reads(&cluster.emulator), 1);

    tokio::time::sleep(flocker_docker_plugin::driver::REPORT_AGE).await;
    cluster.emulator.reset_counts();
    // A slow control service makes the 64 calls overlap for sure.
    cluster
        .emulator
        .delay("/v1/configuration/datasets", Duration::from_millis(200));
    let mut calls = Vec::new();
    for i in 0..64 {
        let docker = plugin.docker.clone();
        calls.push(tokio::spawn(async move {
            docker.get(&format!("v{}", i % 5)).await.map(|_| ())
        }));
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let gets = reads(&cluster.emulator);
    assert!(gets <= 2, "64 concurrent Gets made {gets} requests");

    tokio::time::sleep(flocker_docker_plugin::driver::REPORT_AGE).await;
    cluster.emulator.reset_counts();
    let mut calls = Vec::new();
    for _ in 0..64 {
        let docker = plugin.docker.clone();
        calls.push(tokio::spawn(async move { docker.list().await.map(|_| ()) }));
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let lists = reads(&cluster.emulator);
    assert!(lists <= 2, "64 concurrent Lists made {lists} requests");
    cluster
        .emulator
        .delay("/v1/configuration/datasets", Duration::ZERO);
    plugin.stop().await;
    cluster.stop().await;
}

#[tokio::test]
async fn an_idle_plugin_makes_no_requests() {
    if !require_root("an_idle_plugin_makes_no_requests") {
        return;
    }
    let cluster = Cluster::start(1, Convergence::After(Duration::from_millis(100))).await;
    let plugin = cluster.plugin(0).await;
    plugin.docker.create("busy", json!({})).await.unwrap();
    plugin.docker.mount("busy", "c").await.unwrap();
    cluster.emulator.reset_counts();
    // A volume in use and nothing asked: nothing is polled, renewed or re-read.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (total, detail) = cluster.emulator.requests_received();
    assert_eq!(total, 0, "{detail}");
    plugin.docker.unmount("busy", "c").await.unwrap();
    plugin.stop().await;
    cluster.stop().await;
}
