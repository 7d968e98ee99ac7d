//! The fault matrix (issue 6, RELIABILITY.md): every fault the control service, the plugin process and
//! the state file can suffer, injected in the middle of a volume call; once the fault ends, the SPEC §9
//! invariants are checked on the node that suffered it:
//! - every bind under the propagated mount has a record, and every record its bind;
//! - every lease this node holds is needed by a record (given time for a background retry);
//! - no lease another node held when the fault ended was touched;
//! - no dataset was deleted that the user did not remove;
//! - Get still answers for every volume the user created and did not remove.
//!
//! One test runs every row in order against one cluster and prints a table (faults injected, checks
//! made, violations found); it fails listing every violation. Node 0 and 1 run the plugin in this
//! process, node 2 runs the real binary (for `kill -9`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use flocker_docker_plugin::emulator::Convergence;
use flocker_docker_plugin::mount;
use serde_json::{json, Value};

use crate::safety::lease_holder;
use crate::util::{dataset_id, require_root, Cluster, Daemon, DockerClient, Plugin};

/// How long a node may take to settle once a fault ends (a release retry backs off up to 8 s here).
const SETTLE: Duration = Duration::from_secs(20);
/// The in-process plugins' per-request timeout, so "answers after the timeout" rows are quick.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the user did, for the invariants.
#[derive(Default)]
struct Intent {
    /// Volumes created and not removed: Get must answer for them.
    live: BTreeSet<String>,
    /// Volumes the user removed: their datasets may be gone.
    removed: BTreeSet<String>,
}

/// One row's outcome.
struct Row {
    name: &'static str,
    faults: usize,
    checks: usize,
    violations: Vec<String>,
}

struct Matrix {
    cluster: Cluster,
    a: Option<Plugin>,
    b: Plugin,
    c: Option<Daemon>,
    intent: Intent,
    rows: Vec<Row>,
}

impl Matrix {
    fn a(&self) -> &DockerClient {
        &self.a.as_ref().expect("plugin A").docker
    }

    fn c(&self) -> &DockerClient {
        &self.c.as_ref().expect("daemon C").docker
    }

    async fn create(&mut self, docker: &DockerClient, name: &str) {
        docker.create(name, json!({})).await.expect("create");
        self.intent.live.insert(name.to_string());
    }

    fn dataset(&self, name: &str) -> String {
        dataset_id(&self.cluster.emulator, name)
    }

    fn dataset_path(&self, name: &str) -> String {
        format!("/v1/configuration/datasets/{}", self.dataset(name))
    }

    fn lease_path(&self, name: &str) -> String {
        format!("/v1/configuration/leases/{}", self.dataset(name))
    }

    /// Other nodes' leases right now, as (dataset, node) pairs.
    fn leases_not_of(&self, node: usize) -> Vec<(String, String)> {
        let me = self.cluster.nodes[node].uuid.to_string();
        self.cluster
            .emulator
            .leases()
            .iter()
            .filter(|l| l["node_uuid"] != json!(me))
            .map(|l| {
                (
                    l["dataset_id"].as_str().unwrap().to_string(),
                    l["node_uuid"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Checks the invariants on `node` after a fault ended, and records the row.
    async fn check(&mut self, name: &'static str, node: usize, faults: usize) {
        let docker = match node {
            0 => self.a().clone(),
            1 => self.b.docker.clone(),
            _ => self.c().clone(),
        };
        let others = self.leases_not_of(node);
        let dirs = self.cluster.nodes[node].clone();
        let me = dirs.uuid.to_string();
        let mut checks = 0;
        let mut violations = Vec::new();

        // Leases of this node that no record needs may take a retry to go.
        let started = std::time::Instant::now();
        let (records, leased_here) = loop {
            let records = read_records(&dirs.state_dir);
            let recorded: BTreeSet<String> = records
                .values()
                .map(|r| r["dataset_id"].as_str().unwrap().to_string())
                .collect();
            let unneeded: Vec<String> = self
                .cluster
                .emulator
                .leases()
                .iter()
                .filter(|l| l["node_uuid"] == json!(me))
                .map(|l| l["dataset_id"].as_str().unwrap().to_string())
                .filter(|d| !recorded.contains(d))
                .collect();
            if unneeded.is_empty() || started.elapsed() > SETTLE {
                break (records, unneeded);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        checks += 1;
        for dataset in leased_here {
            violations.push(format!(
                "node {node} holds the lease on {dataset} but no mount needs it"
            ));
        }

        let binds: BTreeSet<PathBuf> = mount::mounts_below(&dirs.propagated)
            .unwrap()
            .into_iter()
            .collect();
        let recorded: BTreeSet<PathBuf> = records
            .values()
            .map(|r| PathBuf::from(r["mountpoint"].as_str().unwrap()))
            .collect();
        checks += 2;
        for bind in binds.difference(&recorded) {
            violations.push(format!("bind {} has no record", bind.display()));
        }
        for record in recorded.difference(&binds) {
            violations.push(format!("record {} has no bind", record.display()));
        }

        checks += 1;
        for (dataset, holder) in others {
            if lease_holder(&self.cluster, &dataset).as_deref() != Some(holder.as_str()) {
                violations.push(format!(
                    "node {holder}'s lease on {dataset} was touched by node {node}'s recovery"
                ));
            }
        }

        checks += 1;
        for dataset in self.cluster.emulator.configured_datasets() {
            let name = dataset["metadata"]["name"].as_str().unwrap_or_default();
            if dataset["deleted"] == json!(true) && !self.intent.removed.contains(name) {
                violations.push(format!("dataset of volume {name} deleted unasked"));
            }
        }

        for volume in self.intent.live.clone() {
            checks += 1;
            if let Err(e) = docker.get(&volume).await {
                violations.push(format!("Get {volume} on node {node} failed: {e}"));
            }
        }
        println!(
            "fault matrix: {name}: {faults} fault(s), {checks} checks, {} violation(s)",
            violations.len()
        );
        self.rows.push(Row {
            name,
            faults,
            checks,
            violations,
        });
    }
}

/// The `mounts` object of a node's state file.
fn read_records(state_dir: &std::path::Path) -> serde_json::Map<String, Value> {
    let text = std::fs::read(state_dir.join("state.json")).unwrap_or_default();
    let file: Value = serde_json::from_slice(&text).unwrap_or(json!({}));
    file["mounts"].as_object().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_matrix() {
    if !require_root("fault_matrix") {
        return;
    }
    let cluster = Cluster::start(3, Convergence::After(Duration::from_millis(200))).await;
    let mut settings = cluster.settings(0);
    // Longer than the settle window (2 × CLIENT_TIMEOUT), so a Mount can wait out an unanswered request.
    settings.mount_timeout = Duration::from_secs(6);
    let a = cluster
        .plugin_with_timeout(0, settings, CLIENT_TIMEOUT)
        .await;
    let b = cluster.plugin(1).await;
    let c = cluster.daemon(2, &[("MOUNT_TIMEOUT", "5s")]).await;
    let mut m = Matrix {
        cluster,
        a: Some(a),
        b,
        c: Some(c),
        intent: Intent::default(),
        rows: Vec::new(),
    };

    control_service_faults(&mut m).await;
    late_and_lost_answers(&mut m).await;
    agent_faults(&mut m).await;
    process_faults(&mut m).await;
    state_file_faults(&mut m).await;
    racing_nodes(&mut m).await;

    println!("\n| fault | faults injected | invariant checks | violations |\n|---|---|---|---|");
    let (mut faults, mut checks, mut violations) = (0, 0, Vec::new());
    for row in &m.rows {
        println!(
            "| {} | {} | {} | {} |",
            row.name,
            row.faults,
            row.checks,
            row.violations.len()
        );
        faults += row.faults;
        checks += row.checks;
        violations.extend(row.violations.iter().map(|v| format!("{}: {v}", row.name)));
    }
    println!(
        "| **all {} rows** | **{faults}** | **{checks}** | **{}** |",
        m.rows.len(),
        violations.len()
    );
    if let Some(a) = m.a.take() {
        a.stop().await;
    }
    m.b.stop().await;
    drop(m.c.take());
    m.cluster.stop().await;
    assert!(
        violations.is_empty(),
        "violations:\n{}",
        violations.join("\n")
    );
}

async fn control_service_faults(m: &mut Matrix) {
    // Stopped: Mount fails, last Unmount succeeds and releases once the service is back.
    m.create(&m.a().clone(), "cs-down-mount").await;
    m.create(&m.a().clone(), "cs-down-unmount").await;
    m.a().mount("cs-down-unmount", "c").await.unwrap();
    m.cluster.emulator.stop_listening().await;
    let err = m.a().mount("cs-down-mount", "c").await.unwrap_err();
    assert!(err.contains("unreachable"), "{err}");
    m.a().unmount("cs-down-unmount", "c").await.unwrap();
    m.cluster.emulator.start_listening().await.unwrap();
    m.check("control service stopped (Mount, last Unmount)", 0, 1)
        .await;

    // 500 on the lease request of a Mount, and on the lease release of an Unmount.
    m.create(&m.a().clone(), "cs-500").await;
    m.cluster
        .emulator
        .fail_next("POST", "/v1/configuration/leases", 500);
    m.a().mount("cs-500", "c").await.unwrap_err();
    m.a().mount("cs-500", "c").await.unwrap();
    let lease = m.lease_path("cs-500");
    m.cluster.emulator.fail_next("DELETE", &lease, 500);
    m.a().unmount("cs-500", "c").await.unwrap();
    m.check("HTTP 500 (lease take, lease release)", 0, 2).await;

    // 500 on the configuration read of a Remove.
    m.create(&m.a().clone(), "cs-500-rm").await;
    m.cluster
        .emulator
        .fail_next("GET", "/v1/configuration/datasets", 500);
    m.a().remove("cs-500-rm").await.unwrap_err();
    m.check("HTTP 500 (Remove)", 0, 1).await;

    // TLS refused: Mount fails; a last Unmount's release waits for it to heal.
    m.create(&m.a().clone(), "tls").await;
    m.create(&m.a().clone(), "tls-unmount").await;
    m.a().mount("tls-unmount", "c").await.unwrap();
    m.cluster.emulator.set_tls_fault(true).await.unwrap();
    let err = m.a().mount("tls", "c").await.unwrap_err();
    assert!(err.contains("TLS") || err.contains("unreachable"), "{err}");
    m.a().unmount("tls-unmount", "c").await.unwrap();
    m.cluster.emulator.set_tls_fault(false).await.unwrap();
    m.check("TLS failure (Mount, last Unmount)", 0, 1).await;
}

async fn late_and_lost_answers(m: &mut Matrix) {
    // Applied, answer lost: the lease request of a Mount.
    m.create(&m.a().clone(), "lost-take").await;
    m.cluster
        .emulator
        .drop_answer_next("POST", "/v1/configuration/leases");
    m.a().mount("lost-take", "c").await.unwrap_err();
    m.check("answer lost after apply (lease take)", 0, 1).await;

    // Applied, answer lost: the release of a last Unmount; another node takes the volume before the
    // retry runs, and the retry must leave that node's lease alone.
    m.create(&m.a().clone(), "lost-release").await;
    m.a().mount("lost-release", "c").await.unwrap();
    let lease = m.lease_path("lost-release");
    m.cluster.emulator.drop_answer_next("DELETE", &lease);
    m.a().unmount("lost-release", "c").await.unwrap();
    m.b.docker.mount("lost-release", "b").await.unwrap();
    let gets = m
        .cluster
        .emulator
        .request_count("GET", "/v1/configuration/leases");
    crate::util::eventually("A's release retry ran", || {
        m.cluster
            .emulator
            .request_count("GET", "/v1/configuration/leases")
            > gets
    })
    .await;
    m.check(
        "answer lost after apply (lease release; other node took it)",
        0,
        1,
    )
    .await;
    let b_uuid = m.cluster.nodes[1].uuid.to_string();
    let id = m.dataset("lost-release");
    assert_eq!(lease_holder(&m.cluster, &id), Some(b_uuid));
    m.b.docker.unmount("lost-release", "b").await.unwrap();

    // Carried out late, after the client gave up: the lease take of a Mount, then the release of a
    // last Unmount followed at once by a new Mount of the same volume (docker restart).
    m.create(&m.a().clone(), "late-take").await;
    m.cluster.emulator.apply_late_next(
        "POST",
        "/v1/configuration/leases",
        CLIENT_TIMEOUT + Duration::from_secs(1),
    );
    m.a().mount("late-take", "c").await.unwrap_err();
    m.check("carried out after the client's timeout (lease take)", 0, 1)
        .await;
    m.create(&m.a().clone(), "late-release-remount").await;
    m.a().mount("late-release-remount", "c1").await.unwrap();
    let lease = m.lease_path("late-release-remount");
    m.cluster
        .emulator
        .apply_late_next("DELETE", &lease, CLIENT_TIMEOUT + Duration::from_secs(1));
    m.a().unmount("late-release-remount", "c1").await.unwrap();
    m.a().mount("late-release-remount", "c2").await.unwrap();
    m.check(
        "carried out after the client's timeout (lease release, then a new Mount)",
        0,
        1,
    )
    .await;
    let id = m.dataset("late-release-remount");
    let a_uuid = m.cluster.nodes[0].uuid.to_string();
    if lease_holder(&m.cluster, &id).as_deref() != Some(a_uuid.as_str()) {
        m.rows
            .last_mut()
            .unwrap()
            .violations
            .push("the new Mount's lease was freed by the late release".into());
    }
    m.a().unmount("late-release-remount", "c2").await.unwrap();

    // Not applied before the client's timeout: the release of a last Unmount.
    m.create(&m.a().clone(), "late-release").await;
    m.a().mount("late-release", "c").await.unwrap();
    let lease = m.lease_path("late-release");
    m.cluster
        .emulator
        .delay(&lease, CLIENT_TIMEOUT + Duration::from_secs(1));
    m.a().unmount("late-release", "c").await.unwrap();
    m.cluster.emulator.delay(&lease, Duration::ZERO);
    m.check(
        "answer after the client's timeout, not applied (lease release)",
        0,
        1,
    )
    .await;

    // Applied, answered after the client's timeout: the delete of a Remove.
    m.create(&m.a().clone(), "late-remove").await;
    let path = m.dataset_path("late-remove");
    m.cluster
        .emulator
        .delay_answer(&path, CLIENT_TIMEOUT + Duration::from_secs(1));
    m.intent.live.remove("late-remove");
    m.intent.removed.insert("late-remove".into());
    let _ = m.a().remove("late-remove").await;
    m.cluster.emulator.delay_answer(&path, Duration::ZERO);
    m.check("answer after the client's timeout, applied (Remove)", 0, 1)
        .await;
}

async fn agent_faults(m: &mut Matrix) {
    // The agent never converges: a move Mount times out, takes nothing; after it heals a retry works.
    m.create(&m.b.docker.clone(), "stuck").await;
    m.cluster.emulator.pause_agent(true);
    let err = m.a().mount("stuck", "c").await.unwrap_err();
    assert!(err.starts_with("Timed out"), "{err}");
    m.check("agent never converging (move Mount)", 0, 1).await;
    m.cluster.emulator.pause_agent(false);
    m.a().mount("stuck", "c").await.unwrap();
    m.a().unmount("stuck", "c").await.unwrap();
}

async fn process_faults(m: &mut Matrix) {
    // kill -9 while a Mount waits for the agent (lease taken, move asked).
    m.create(&m.b.docker.clone(), "kill-mount").await;
    m.cluster.emulator.pause_agent(true);
    let docker = m.c().clone();
    let call = tokio::spawn(async move {
        docker
            .call_or_hangup("Mount", json!({"Name": "kill-mount", "ID": "c"}))
            .await
    });
    let id = m.dataset("kill-mount");
    let c_uuid = m.cluster.nodes[2].uuid.to_string();
    crate::util::eventually("C took the lease", || {
        lease_holder(&m.cluster, &id).as_deref() == Some(c_uuid.as_str())
    })
    .await;
    m.c.as_mut().unwrap().kill9();
    let _ = call.await;
    m.cluster.emulator.pause_agent(false);
    let c = m.c.take().unwrap().restart().await;
    m.c = Some(c);
    m.check("plugin SIGKILLed mid-Mount", 2, 1).await;

    // kill -9 while the last Unmount is giving the lease back.
    m.create(&m.c().clone(), "kill-unmount").await;
    m.c().mount("kill-unmount", "c").await.unwrap();
    let lease = m.lease_path("kill-unmount");
    m.cluster.emulator.delay(&lease, Duration::from_secs(3));
    let docker = m.c().clone();
    let call = tokio::spawn(async move {
        docker
            .call_or_hangup("Unmount", json!({"Name": "kill-unmount", "ID": "c"}))
            .await
    });
    crate::util::eventually("the release is on its way", || {
        m.cluster
            .emulator
            .request_count("GET", "/v1/configuration/leases")
            > 0
            && m.cluster.emulator.request_count("DELETE", &lease) > 0
    })
    .await;
    m.c.as_mut().unwrap().kill9();
    let _ = call.await;
    m.cluster.emulator.delay(&lease, Duration::ZERO);
    let c = m.c.take().unwrap().restart().await;
    m.c = Some(c);
    m.check("plugin SIGKILLed mid-Unmount", 2, 1).await;

    // kill -9 while a Remove waits for the delete.
    m.create(&m.c().clone(), "kill-remove").await;
    let path = m.dataset_path("kill-remove");
    m.cluster.emulator.delay(&path, Duration::from_secs(3));
    m.intent.live.remove("kill-remove");
    m.intent.removed.insert("kill-remove".into());
    let docker = m.c().clone();
    let call = tokio::spawn(async move {
        docker
            .call_or_hangup("Remove", json!({"Name": "kill-remove"}))
            .await
    });
    crate::util::eventually("the delete is on its way", || {
        m.cluster.emulator.request_count("DELETE", &path) > 0
    })
    .await;
    m.c.as_mut().unwrap().kill9();
    let _ = call.await;
    m.cluster.emulator.delay(&path, Duration::ZERO);
    let c = m.c.take().unwrap().restart().await;
    m.c = Some(c);
    m.check("plugin SIGKILLed mid-Remove", 2, 1).await;

    // kill -9 while containers use two volumes: both stay mounted and leased after the restart.
    m.create(&m.c().clone(), "kill-busy-1").await;
    m.create(&m.c().clone(), "kill-busy-2").await;
    let one = m.c().mount("kill-busy-1", "c1").await.unwrap();
    m.c().mount("kill-busy-2", "c2").await.unwrap();
    m.c.as_mut().unwrap().kill9();
    let c = m.c.take().unwrap().restart().await;
    m.c = Some(c);
    m.check("plugin SIGKILLed with volumes in use", 2, 1).await;
    assert_eq!(m.c().path("kill-busy-1").await.unwrap(), one);
    m.c().unmount("kill-busy-1", "c1").await.unwrap();
    m.c().unmount("kill-busy-2", "c2").await.unwrap();
}

async fn state_file_faults(m: &mut Matrix) {
    let state_dir = m.cluster.nodes[2].state_dir.clone();
    m.create(&m.c().clone(), "state-lost").await;
    m.c().mount("state-lost", "c").await.unwrap();
    m.c.as_mut().unwrap().kill9();
    std::fs::remove_file(state_dir.join("state.json")).unwrap();
    let c = m.c.take().unwrap().restart().await;
    m.c = Some(c);
    m.check("state file lost", 2, 1).await;

    m.c.as_mut().unwrap().kill9();
    std::fs::write(state_dir.join("state.json"), b"{\"mounts\": [").unwrap();
    let c = m.c.take().unwrap().restart().await;
    m.c = Some(c);
    m.check("state file corrupt", 2, 1).await;

    // Unwritable: the directory is replaced by a file while the daemon runs.
    m.create(&m.c().clone(), "state-unwritable").await;
    let aside = state_dir.with_extension("aside");
    std::fs::rename(&state_dir, &aside).unwrap();
    std::fs::write(&state_dir, "not a directory").unwrap();
    let err = m.c().mount("state-unwritable", "c").await.unwrap_err();
    assert!(err.contains("cannot save the plugin state"), "{err}");
    std::fs::remove_file(&state_dir).unwrap();
    std::fs::rename(&aside, &state_dir).unwrap();
    m.check("state file unwritable", 2, 1).await;
}

async fn racing_nodes(m: &mut Matrix) {
    // Two nodes Mount the same volume at once, ten times: one wins each round, never both.
    m.create(&m.a().clone(), "raced").await;
    let mut both = 0;
    for round in 0..10 {
        let (a, b) = (m.a().clone(), m.b.docker.clone());
        let (on_a, on_b) = tokio::join!(a.mount("raced", "a"), b.mount("raced", "b"));
        match (&on_a, &on_b) {
            (Ok(_), Ok(_)) => both += 1,
            (Err(e), Err(f)) => panic!("round {round}: neither node mounted it: {e} / {f}"),
            _ => {}
        }
        if on_a.is_ok() {
            m.a().unmount("raced", "a").await.unwrap();
        }
        if on_b.is_ok() {
            m.b.docker.unmount("raced", "b").await.unwrap();
        }
    }
    m.check("two plugins racing on two nodes (10 rounds)", 0, 10)
        .await;
    if both > 0 {
        m.rows.last_mut().unwrap().violations.push(format!(
            "the volume was mounted on both nodes at once in {both} round(s)"
        ));
    }
}
