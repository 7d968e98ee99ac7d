//! `doctor` against the emulator and real mounts: each check's ok and FAIL lines as a user reads them,
//! and the binary's output and exit code.

use std::fs;
use std::path::{Path, PathBuf};

use flocker_docker_plugin::certs::{self, CertOptions};
use flocker_docker_plugin::config::MountMode;
use flocker_docker_plugin::doctor::{self, Check, NodeSources, Outcome};
use flocker_docker_plugin::emulator::{self, Convergence};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::util::{require_root, Cluster};

fn lines(checks: &[Check]) -> String {
    checks.iter().map(|c| format!("{c}\n")).collect::<String>()
}

fn named<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} check in:\n{}", lines(checks)))
}

#[tokio::test]
async fn generated_certificates_pass_every_certificate_check() {
    let cluster = Cluster::start(1, Convergence::Manual).await;
    let checks = doctor::certificates(&cluster.certs);
    let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "certificate files",
            "certificate chain",
            "certificate validity",
            "client key",
            "client user"
        ]
    );
    for check in &checks {
        assert!(
            matches!(check.outcome, Outcome::Ok(_)),
            "{}",
            lines(&checks)
        );
    }
    let text = lines(&checks);
    assert!(
        text.contains(
            "ok   certificate chain: plugin.crt is signed by cluster.crt (flocker-cluster)"
        ),
        "{text}"
    );
    assert!(
        text.contains("ok   client user: plugin.crt is API user user-plugin"),
        "{text}"
    );

    let (check, client) =
        doctor::control_service(&cluster.emulator.url().parse().unwrap(), &cluster.certs).await;
    assert!(client.is_some());
    let line = check.to_string();
    assert!(
        line.starts_with(&format!("ok   control service: {}", cluster.emulator.url()))
            && line.contains("(Flocker "),
        "{line}"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn expired_certificates_fail_naming_the_date() {
    let dir = tempfile::tempdir().unwrap();
    let past = OffsetDateTime::now_utc() - Duration::days(3);
    certs::generate(
        dir.path(),
        &CertOptions {
            not_after: Some(past),
            ..CertOptions::default()
        },
    )
    .unwrap();
    let checks = doctor::certificates(dir.path());
    let validity = named(&checks, "certificate validity");
    let line = validity.to_string();
    let day = past.date().to_string();
    assert!(validity.failed(), "{line}");
    assert!(
        line.contains(&format!("cluster.crt expired on {day}"))
            && line.contains(&format!("plugin.crt expired on {day}")),
        "{line}"
    );
    assert!(
        line.contains("Fix: issue new certificates with flocker-ca"),
        "{line}"
    );
}

#[tokio::test]
async fn plugin_certificate_from_another_cluster_does_not_chain() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours");
    let other = dir.path().join("other");
    certs::generate(&ours, &CertOptions::default()).unwrap();
    certs::generate(&other, &CertOptions::default()).unwrap();
    for file in ["plugin.crt", "plugin.key"] {
        fs::copy(other.join(file), ours.join(file)).unwrap();
    }
    let checks = doctor::certificates(&ours);
    assert_eq!(
        checks.len(),
        5,
        "the other checks still run: {}",
        lines(&checks)
    );
    assert!(
        !named(&checks, "client key").failed(),
        "key and certificate belong together"
    );
    let chain = named(&checks, "certificate chain");
    assert!(chain.failed());
    assert!(
        chain.to_string().contains("does not chain to cluster.crt"),
        "{chain}"
    );
    assert!(
        chain
            .to_string()
            .contains("Fix: use the cluster.crt of the cluster that issued plugin.crt"),
        "{chain}"
    );
}

#[tokio::test]
async fn missing_files_and_a_foreign_key_fail_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    certs::generate(dir.path(), &CertOptions::default()).unwrap();
    fs::remove_file(dir.path().join("plugin.key")).unwrap();
    let checks = doctor::certificates(dir.path());
    let key_path = dir.path().join("plugin.key").display().to_string();
    assert_eq!(checks.len(), 1, "{}", lines(&checks));
    assert_eq!(
        checks[0].to_string().split(". Fix: ").next().unwrap(),
        format!("FAIL certificate files: missing {key_path}")
    );

    let other = tempfile::tempdir().unwrap();
    certs::generate(other.path(), &CertOptions::default()).unwrap();
    fs::copy(other.path().join("plugin.key"), &key_path).unwrap();
    let checks = doctor::certificates(dir.path());
    let key = named(&checks, "client key");
    assert!(key.failed());
    assert!(
        key.to_string().contains(&key_path)
            && key.to_string().contains("does not match plugin.crt"),
        "{key}"
    );
}

#[tokio::test]
async fn a_stopped_control_service_fails_naming_the_url() {
    let cluster = Cluster::start(1, Convergence::Manual).await;
    cluster.emulator.stop_listening().await;
    let url = cluster.emulator.url();
    let (check, client) = doctor::control_service(&url.parse().unwrap(), &cluster.certs).await;
    assert!(client.is_none());
    let line = check.to_string();
    assert!(line.starts_with("FAIL control service: "), "{line}");
    assert!(
        line.contains(&url) && line.contains("unreachable"),
        "{line}"
    );
    assert!(line.contains("Fix: check CONTROL_URL"), "{line}");
    cluster.emulator.start_listening().await.unwrap();
    cluster.stop().await;
}

#[tokio::test]
async fn a_foreign_cluster_ca_is_a_tls_failure() {
    let cluster = Cluster::start(1, Convergence::Manual).await;
    let other = cluster.dir.path().join("other-cluster");
    certs::generate(&other, &CertOptions::default()).unwrap();
    let url = cluster.emulator.url();
    let (check, client) = doctor::control_service(&url.parse().unwrap(), &other).await;
    assert!(client.is_none());
    let line = check.to_string();
    assert!(
        line.starts_with("FAIL control service: TLS with the Flocker control service at "),
        "{line}"
    );
    assert!(
        line.contains(&url) && line.contains("Fix: make sure cluster.crt and plugin.crt come from"),
        "{line}"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn node_identity_from_each_source() {
    let cluster = Cluster::start(1, Convergence::Manual).await;
    let client = cluster.client();
    let known = cluster.nodes[0].uuid;

    let check = doctor::node_identity(
        &client,
        &NodeSources {
            node_uuid: Some(known),
            era: None,
            network_identity: None,
        },
    )
    .await;
    assert_eq!(
        check.to_string(),
        format!("ok   node identity: NODE_UUID={known} is a known node (127.0.0.10)")
    );

    let stranger = Uuid::new_v4();
    let check = doctor::node_identity(
        &client,
        &NodeSources {
            node_uuid: Some(stranger),
            ..NodeSources::default()
        },
    )
    .await;
    assert!(
        matches!(&check.outcome, Outcome::Warn(m) if m.contains(&format!("NODE_UUID={stranger} is not in GET /v1/state/nodes"))),
        "{check}"
    );

    // The era lookup answers 404 until the local agent registers.
    let era = Uuid::new_v4();
    let sources = NodeSources {
        era: Some(era),
        ..NodeSources::default()
    };
    let check = doctor::node_identity(&client, &sources).await;
    let line = check.to_string();
    assert!(check.failed(), "{line}");
    assert!(
        line.contains(&format!("knows no node with era {era}"))
            && line.contains("the local Flocker dataset agent has not registered")
            && line.contains("Fix: start the dataset agent"),
        "{line}"
    );
    let node = Uuid::new_v4();
    cluster
        .emulator
        .add_node(emulator::Node {
            uuid: node,
            era,
            host: "127.0.0.99".parse().unwrap(),
            mount_root: cluster.dir.path().join("late-node"),
        })
        .unwrap();
    let check = doctor::node_identity(&client, &sources).await;
    assert_eq!(
        check.to_string(),
        format!("ok   node identity: era {era} is node {node}")
    );

    let check = doctor::node_identity(
        &client,
        &NodeSources {
            network_identity: Some("127.0.0.10".into()),
            ..NodeSources::default()
        },
    )
    .await;
    assert_eq!(
        check.to_string(),
        format!("ok   node identity: MY_NETWORK_IDENTITY=127.0.0.10 is node {known}")
    );
    let check = doctor::node_identity(
        &client,
        &NodeSources {
            network_identity: Some("10.9.9.9".into()),
            ..NodeSources::default()
        },
    )
    .await;
    assert!(
        check.failed()
            && check
                .to_string()
                .contains("no node with MY_NETWORK_IDENTITY=10.9.9.9"),
        "{check}"
    );
    cluster.stop().await;
}

/// A directory bind-mounted onto itself with the given propagation; unmounted on drop.
struct OwnMount(PathBuf);

impl OwnMount {
    fn new(path: &Path, propagation: MsFlags) -> OwnMount {
        fs::create_dir_all(path).unwrap();
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind");
        let own = OwnMount(path.to_path_buf());
        mount(None::<&str>, path, None::<&str>, propagation, None::<&str>)
            .expect("set propagation");
        own
    }
}

impl Drop for OwnMount {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

fn propagated(dir: &Path) -> MountMode {
    MountMode::Propagated(dir.to_path_buf())
}

#[test]
fn a_private_flocker_root_fails_with_the_make_shared_fix() {
    if !require_root("a_private_flocker_root_fails_with_the_make_shared_fix") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("flocker");
    let _private = OwnMount::new(&root, MsFlags::MS_PRIVATE);
    let check = doctor::flocker_root(
        &root,
        Path::new("/flocker"),
        &propagated(&dir.path().join("p")),
    );
    let line = check.to_string();
    assert!(check.failed(), "{line}");
    assert!(
        line.contains(&format!(
            "FLOCKER_ROOT={} is a mount point, which is private",
            root.display()
        )),
        "{line}"
    );
    assert!(
        line.contains(
            "Fix: on the host: mount --bind /flocker /flocker && mount --make-shared /flocker, then docker plugin \
             disable flocker && docker plugin enable flocker"
        ),
        "{line}"
    );

    // A plain directory on the private root of this namespace: the same diagnosis.
    let plain = dir.path().join("plain");
    fs::create_dir_all(&plain).unwrap();
    let check = doctor::flocker_root(
        &plain,
        Path::new("/flocker"),
        &propagated(&dir.path().join("p")),
    );
    assert!(
        check.failed() && check.to_string().contains("lies on mount"),
        "{check}"
    );
    // In legacy mode the plugin shares the agent's namespace: only a warning.
    let check = doctor::flocker_root(&plain, Path::new("/flocker"), &MountMode::Legacy);
    assert!(matches!(check.outcome, Outcome::Warn(_)), "{check}");
}

#[test]
fn a_shared_or_slave_flocker_root_passes() {
    if !require_root("a_shared_or_slave_flocker_root_passes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host_root = dir.path().join("host-flocker");
    let _shared = OwnMount::new(&host_root, MsFlags::MS_SHARED);
    let check = doctor::flocker_root(&host_root, &host_root, &propagated(&dir.path().join("p")));
    let line = check.to_string();
    assert!(
        line.starts_with(&format!(
            "ok   flocker root: FLOCKER_ROOT={} is a mount point (shared:",
            host_root.display()
        )),
        "{line}"
    );

    // As config.json mounts it into the plugin: rbind, then rslave. A subdirectory lies under it.
    let plugin_root = dir.path().join("plugin-flocker");
    fs::create_dir_all(&plugin_root).unwrap();
    mount(
        Some(&host_root),
        &plugin_root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .unwrap();
    let _slave = OwnMount(plugin_root.clone());
    mount(
        None::<&str>,
        &plugin_root,
        None::<&str>,
        MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .unwrap();
    let below = plugin_root.join("dataset");
    fs::create_dir_all(&below).unwrap();
    let check = doctor::flocker_root(&below, &host_root, &propagated(&dir.path().join("p")));
    let line = check.to_string();
    assert!(line.starts_with("ok   flocker root: "), "{line}");
    assert!(
        line.contains(&format!("lies on mount {} (master:", plugin_root.display())),
        "{line}"
    );
}

#[test]
fn the_propagated_mount_must_be_shared_and_writable() {
    if !require_root("the_propagated_mount_must_be_shared_and_writable") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let _shared = OwnMount::new(&shared, MsFlags::MS_SHARED);
    let created = shared.join("not-yet").join("mnt");
    let check = doctor::propagated_mount(&propagated(&created));
    let line = check.to_string();
    assert!(
        line.starts_with(&format!(
            "ok   propagated mount: PROPAGATED_MOUNT={} is writable and on shared mount {}",
            created.display(),
            shared.display()
        )),
        "{line}"
    );
    assert!(created.is_dir(), "created as the daemon would");
    assert_eq!(
        fs::read_dir(&created).unwrap().count(),
        0,
        "the probe file is removed"
    );

    let private = dir.path().join("private");
    let _private = OwnMount::new(&private, MsFlags::MS_PRIVATE);
    let check = doctor::propagated_mount(&propagated(&private));
    let line = check.to_string();
    assert!(check.failed(), "{line}");
    assert!(line.contains("(private), which is not shared"), "{line}");
    assert!(line.contains("mount --make-shared"), "{line}");

    // Read-only: not writable.
    let readonly = dir.path().join("readonly");
    let _ro = OwnMount::new(&readonly, MsFlags::MS_SHARED);
    mount(
        None::<&str>,
        &readonly,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .unwrap();
    let check = doctor::propagated_mount(&propagated(&readonly));
    assert!(
        check.failed() && check.to_string().contains("is not writable"),
        "{check}"
    );
}

/// Runs the real binary's `doctor` with only `env` set; returns stdout then stderr, and the exit code.
async fn run_binary(env: Vec<(&'static str, String)>) -> (String, Option<i32>) {
    run_binary_with(&["doctor"], env).await
}

async fn run_binary_with(
    args: &[&'static str],
    env: Vec<(&'static str, String)>,
) -> (String, Option<i32>) {
    let args = args.to_vec();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_flocker-docker-plugin"))
            .args(args)
            .env_clear()
            .envs(env)
            .output()
            .expect("run flocker-docker-plugin doctor");
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        (text, output.status.code())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_binary_prints_one_line_per_check_and_exits_by_outcome() {
    if !require_root("the_binary_prints_one_line_per_check_and_exits_by_outcome") {
        return;
    }
    let cluster = Cluster::start(1, Convergence::Manual).await;
    let node = &cluster.nodes[0];
    let shared = cluster.dir.path().join("shared");
    let _shared = OwnMount::new(&shared, MsFlags::MS_SHARED);
    let root = shared.join("flocker");
    fs::create_dir_all(&root).unwrap();
    let socket = cluster.dir.path().join("doctor.sock");
    let env = vec![
        ("CONTROL_URL", cluster.emulator.url()),
        ("CERTS_DIR", cluster.certs.display().to_string()),
        ("NODE_UUID", node.uuid.to_string()),
        ("FLOCKER_ROOT", root.display().to_string()),
        ("AGENT_MOUNT_ROOT", root.display().to_string()),
        ("PROPAGATED_MOUNT", shared.join("mnt").display().to_string()),
        (
            "STATE_DIR",
            cluster.dir.path().join("state").display().to_string(),
        ),
        ("SOCKET", socket.display().to_string()),
    ];
    let (stdout, code) = run_binary(env.clone()).await;
    let prefixes: Vec<&str> = stdout.lines().map(|l| &l[..5]).collect();
    assert_eq!(prefixes, ["ok   "; 9], "{stdout}");
    assert_eq!(code, Some(0), "{stdout}");
    assert!(!socket.exists(), "doctor never opens the plugin socket");

    cluster.emulator.stop_listening().await;
    let (stdout, code) = run_binary(env).await;
    assert_eq!(code, Some(1), "{stdout}");
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(
        failed.len(),
        2,
        "control service and node identity: {stdout}"
    );
    assert!(
        failed[0].starts_with("FAIL control service: ")
            && failed[0].contains(&cluster.emulator.url())
    );
    assert_eq!(
        failed[1],
        "FAIL node identity: not checked, because the control service did not answer. Fix: fix the control service \
         check first"
    );
    cluster.emulator.start_listening().await.unwrap();
    cluster.stop().await;
}

#[tokio::test]
async fn a_configuration_error_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![("CERTS_DIR", dir.path().display().to_string())];
    let (output, code) = run_binary(env.clone()).await;
    assert_eq!(code, Some(2), "{output}");
    assert_eq!(
        output,
        format!(
            "flocker-docker-plugin: CONTROL_URL is not set and {}/agent.yml does not exist; set \
             CONTROL_URL=https://CONTROL-HOST:4523\n",
            dir.path().display()
        )
    );
    // With an empty argument (`docker plugin set flocker args=`) the binary serves, and a serving
    // daemon answers a bad configuration to every call: daemon::bad_settings_are_answered_….
}
