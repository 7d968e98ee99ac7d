//! The control-service client against the emulator over real mutual TLS: every call the plugin makes,
//! typed errors with the server's description, and the certificate failures users actually hit; plus,
//! over plain HTTP, what the client does with redirects and with a server that never answers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flocker_docker_plugin::certs::{self, CertOptions};
use flocker_docker_plugin::emulator::{self, Convergence};
use flocker_docker_plugin::flocker::{self, DatasetId, NewDataset, NodeId};
use flocker_docker_plugin::identity::{self, Identity};
use uuid::Uuid;

use crate::util::Cluster;

fn new_dataset(node: Uuid, name: &str) -> NewDataset {
    NewDataset {
        primary: NodeId(node),
        metadata: BTreeMap::from([("name".to_string(), name.to_string())]),
        maximum_size: 64 << 20,
    }
}

#[tokio::test]
async fn every_call_round_trips_over_mtls() {
    let cluster = Cluster::start(2, Convergence::Manual).await;
    let client = cluster.client();
    let (a, b) = (cluster.nodes[0].uuid, cluster.nodes[1].uuid);

    assert!(!client.version().await.unwrap().is_empty());
    let empty = client.configuration().await.unwrap();
    assert!(empty.datasets.is_empty());
    let tag = empty.tag.expect("X-Configuration-Tag");

    let created = client
        .create_dataset(&new_dataset(a, "v"), Some(&tag))
        .await
        .unwrap();
    assert_eq!(created.primary, Some(NodeId(a)));
    assert_eq!(created.name(), Some("v"));
    let err = client
        .create_dataset(&new_dataset(a, "w"), Some(&tag))
        .await
        .unwrap_err();
    assert!(
        matches!(err, flocker::Error::ConfigurationChanged { .. }),
        "stale tag: {err}"
    );
    assert!(err.to_string().contains("Tag doesn't match"), "{err}");

    let moved = client
        .move_dataset(created.dataset_id, NodeId(b))
        .await
        .unwrap();
    assert_eq!(moved.primary, Some(NodeId(b)));
    assert!(
        client.state().await.unwrap().is_empty(),
        "nothing converged yet"
    );

    let acquired = client
        .acquire_lease(created.dataset_id, NodeId(b))
        .await
        .unwrap();
    assert_eq!(acquired, flocker::Acquired::Created);
    assert_eq!(client.leases().await.unwrap()[0].expires, None);
    let again = client
        .acquire_lease(created.dataset_id, NodeId(b))
        .await
        .unwrap();
    assert_eq!(again, flocker::Acquired::Renewed, "the same node renews");
    let err = client
        .acquire_lease(created.dataset_id, NodeId(a))
        .await
        .unwrap_err();
    assert!(
        matches!(err, flocker::Error::Conflict { .. })
            && err.to_string().contains("Lease already held.")
    );
    assert_eq!(client.leases().await.unwrap().len(), 1);
    client.release_lease(created.dataset_id).await.unwrap();
    let err = client.release_lease(created.dataset_id).await.unwrap_err();
    assert!(
        matches!(err, flocker::Error::NotFound { .. })
            && err.to_string().contains("Lease not found.")
    );

    let deleted = client
        .delete_dataset(created.dataset_id, None)
        .await
        .unwrap();
    assert!(deleted.deleted);
    let config = client.configuration().await.unwrap();
    assert!(config.datasets[0].deleted, "deleted datasets stay listed");
    let err = client
        .move_dataset(created.dataset_id, NodeId(a))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("HTTP 405")
            && err.to_string().contains("The dataset has been deleted."),
        "{err}"
    );
    let err = client
        .move_dataset(DatasetId(Uuid::new_v4()), NodeId(a))
        .await
        .unwrap_err();
    assert!(matches!(err, flocker::Error::NotFound { .. }), "{err}");

    let nodes = client.nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    cluster.stop().await;
}

#[tokio::test]
async fn errors_carry_the_url_and_the_description() {
    let cluster = Cluster::start(1, Convergence::Manual).await;
    let client = cluster.client();
    cluster.emulator.fail_next("GET", "/v1/state/datasets", 500);
    let err = client.state().await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, flocker::Error::Status { status: 500, .. }),
        "{text}"
    );
    assert!(
        text.contains(&cluster.emulator.url()) && text.contains("injected fault"),
        "{text}"
    );
    assert!(err.is_unavailable(), "a 5xx means: use cached answers");

    cluster.emulator.stop_listening().await;
    let err = client.state().await.unwrap_err();
    assert!(matches!(err, flocker::Error::Unreachable { .. }), "{err}");
    assert!(
        !err.in_doubt(),
        "never connected: certainly not carried out"
    );
    assert!(err.to_string().contains(&cluster.emulator.url()), "{err}");
    cluster.emulator.start_listening().await.unwrap();
    client
        .state()
        .await
        .expect("reconnects after the control service is back");
    cluster.stop().await;
}

#[tokio::test]
async fn wrong_cluster_ca_is_a_tls_error() {
    let cluster = Cluster::start(1, Convergence::Manual).await;
    let other = cluster.dir.path().join("other-cluster");
    certs::generate(&other, &CertOptions::default()).unwrap();
    let client = flocker::Client::new(&cluster.emulator.url().parse().unwrap(), &other).unwrap();
    let err = client.version().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, flocker::Error::Tls { .. }), "{text}");
    assert!(
        text.contains("UnknownIssuer") || text.contains("issuer"),
        "{text}"
    );
    assert!(text.contains("CERTS_DIR"), "says what to check: {text}");
    cluster.stop().await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_rejected() {
    let cluster = Cluster::start(1, Convergence::Manual).await;
    let other = cluster.dir.path().join("other-cluster");
    certs::generate(&other, &CertOptions::default()).unwrap();
    let mixed = cluster.dir.path().join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(cluster.certs.join("cluster.crt"), mixed.join("cluster.crt")).unwrap();
    std::fs::copy(other.join("plugin.crt"), mixed.join("plugin.crt")).unwrap();
    std::fs::copy(other.join("plugin.key"), mixed.join("plugin.key")).unwrap();
    let client = flocker::Client::new(&cluster.emulator.url().parse().unwrap(), &mixed).unwrap();
    let err = client.version().await.unwrap_err();
    assert!(
        matches!(err, flocker::Error::Tls { .. }),
        "the server refused our certificate: {err}"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn missing_or_mismatched_credentials_are_reported_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = "https://127.0.0.1:4523".parse().unwrap();
    let err = flocker::Client::new(&url, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cluster.crt") && err.contains("CERTS_DIR"),
        "{err}"
    );

    certs::generate(dir.path(), &CertOptions::default()).unwrap();
    std::fs::remove_file(dir.path().join("plugin.key")).unwrap();
    let err = flocker::Client::new(&url, dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("plugin.key"), "{err}");

    let other = tempfile::tempdir().unwrap();
    certs::generate(other.path(), &CertOptions::default()).unwrap();
    std::fs::copy(
        other.path().join("plugin.key"),
        dir.path().join("plugin.key"),
    )
    .unwrap();
    let err = flocker::Client::new(&url, dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not match plugin.crt"), "{err}");
}

#[tokio::test]
async fn server_name_control_service_is_accepted_for_any_url_host() {
    // A control certificate with no SAN for 127.0.0.1: only `control-service`, as flocker-ca issues
    // for a host name the plugin does not use.
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    certs::generate(
        &certs_dir,
        &CertOptions {
            control_hosts: vec![],
            ..CertOptions::default()
        },
    )
    .unwrap();
    let emulator = emulator::Emulator::start(emulator::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        certs_dir: certs_dir.clone(),
        data_dir: dir.path().join("data"),
        nodes: vec![],
        convergence: Convergence::Manual,
        share_mount_roots: false,
    })
    .unwrap();
    let client = flocker::Client::new(&emulator.url().parse().unwrap(), &certs_dir).unwrap();
    client.version().await.expect("verified as control-service");
    emulator.shutdown().await.unwrap();
}

#[tokio::test]
async fn node_identity_waits_for_the_agent_then_resolves_by_era() {
    let cluster = Cluster::start(0, Convergence::Manual).await;
    let era = flocker_docker_plugin::identity::this_boot_era().expect("this boot's era");
    let mut rx = identity::discover(
        cluster.client(),
        identity::Sources {
            node_uuid: None,
            network_identity: None,
        },
        tokio_util::sync::CancellationToken::new(),
    );
    // The agent has not registered: by_era answers 404 and discovery says so.
    let pending = tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|i| matches!(i, Identity::Pending(r) if r.contains("has not connected"))),
    )
    .await
    .expect("explains the wait")
    .unwrap()
    .clone();
    assert!(matches!(pending, Identity::Pending(r) if r.contains(&era.to_string())));

    let node = Uuid::new_v4();
    cluster
        .emulator
        .add_node(emulator::Node {
            uuid: node,
            era,
            host: "127.0.0.1".parse().unwrap(),
            mount_root: cluster.dir.path().join("late-node"),
        })
        .unwrap();
    let known = tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|i| matches!(i, Identity::Known(_))),
    )
    .await
    .expect("resolves once the agent registers")
    .unwrap()
    .clone();
    assert_eq!(known, Identity::Known(NodeId(node)));
    cluster.stop().await;
}

/// A plain-HTTP server on 127.0.0.1 serving `app`; returns its base URL.
async fn http_server(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn redirects_are_reported_not_followed() {
    // The redirect target would answer like a control service, and counts the requests it gets.
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let elsewhere = http_server(axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { r#"{"flocker": "1.15.0"}"# }
    }))
    .await;
    let target = format!("{elsewhere}/v1/version");
    let location = target.clone();
    let control = http_server(axum::Router::new().route(
        "/v1/version",
        axum::routing::get(move || async move {
            (
                axum::http::StatusCode::FOUND,
                [(axum::http::header::LOCATION, location)],
            )
        }),
    ))
    .await;
    let no_certs = tempfile::tempdir().unwrap();
    let client = flocker::Client::new(&control.parse().unwrap(), no_certs.path()).unwrap();
    let err = client.version().await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, flocker::Error::Status { status: 302, .. }),
        "{text}"
    );
    assert!(
        text.contains(&format!("{control}/v1/version"))
            && text.contains(&format!("redirect to {target}")),
        "{text}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect was followed");
}

#[tokio::test]
async fn a_control_service_that_never_answers_times_out() {
    // Connections complete in the kernel's backlog, but nothing ever reads or answers them.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let no_certs = tempfile::tempdir().unwrap();
    let timeout = Duration::from_millis(300);
    let client =
        flocker::Client::with_timeout(&url.parse().unwrap(), no_certs.path(), timeout).unwrap();
    let started = Instant::now();
    let err = client.state().await.unwrap_err();
    let took = started.elapsed();
    let text = err.to_string();
    assert!(matches!(err, flocker::Error::NoAnswer { .. }), "{text}");
    assert!(
        err.in_doubt(),
        "sent, never answered: it may still be carried out"
    );
    assert!(
        text.contains(&url) && text.contains("timed out") && text.contains("300ms"),
        "{text}"
    );
    assert!(
        took >= timeout && took < Duration::from_secs(5),
        "gave up after {took:?}"
    );
    drop(silent);
}

/// Regression: reqwest (feature `rustls-no-provider`) builds a rustls configuration even for an
/// http:// URL and panicked unless something had installed the crypto provider first, so the daemon
/// with `CONTROL_URL=http://…` died at start. Checked in a fresh process of this test binary, because
/// in this one other tests install the provider.
#[test]
fn a_plain_http_client_builds_in_a_fresh_process() {
    const CHILD: &str = "FDP_FRESH_PROCESS";
    if std::env::var_os(CHILD).is_some() {
        let url = "http://127.0.0.1:1".parse().unwrap();
        flocker::Client::new(&url, std::path::Path::new("/nonexistent")).expect("http client");
        return;
    }
    let name = "flocker_client::a_plain_http_client_builds_in_a_fresh_process";
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
