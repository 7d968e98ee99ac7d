//! Contract tests for the Flocker control-service REST API v1, after upstream's
//! `flocker/control/test/test_httpapi.py` and `flocker/apiclient/test/test_client.py`
//! (`reference/flocker-upstream.md` §5, §6.5, §6.6).
//!
//! Every test talks HTTPS with a `user-plugin` client certificate to a [`ControlServiceUnderTest`]:
//! the emulator by default, or a real control service when `FLOCKER_CONTRACT_URL` (plus
//! `FLOCKER_CONTRACT_CERTS`, a directory with cluster.crt, plugin.crt and plugin.key) is set.
//! Tests that need the emulator's own handle (convergence, mounts, faults, certificates) say so
//! on stderr when run against a real service. Tests that mount need root: they panic under
//! `CI=true` and print a skip notice otherwise. This module is self-contained on purpose.

use crate::util::{eventually, require_root};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flocker_docker_plugin::certs::{self, CertOptions};
use flocker_docker_plugin::emulator::{self, Convergence, Emulator, Node, FLOCKER_VERSION};
use flocker_docker_plugin::flocker::{self, DatasetId, NodeId};
use reqwest::{Method, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tempfile::TempDir;
use uuid::Uuid;

/// The name every control-service certificate carries and clients verify (reference §4.1).
const SERVER_NAME: &str = "control-service";
const GIB: u64 = 1 << 30;
const DECODE_ERROR: &str =
    "The request body could not be decoded according to the value of the\nContent-Type header.";
const SCHEMA_ERROR: &str = "The provided JSON doesn't match the required schema.";

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A reply: status, headers and the body as JSON (or as a JSON string if it was not JSON).
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn description(&self) -> &str {
        self.body["description"].as_str().unwrap_or_default()
    }

    fn tag(&self) -> String {
        self.headers
            .get("x-configuration-tag")
            .expect("X-Configuration-Tag header")
            .to_str()
            .unwrap()
            .to_string()
    }
}

/// Builds an mTLS client that trusts `ca` and presents `cert`/`key` (if given).
fn client(ca: &Path, identity: Option<(&Path, &Path)>, addr: SocketAddr) -> reqwest::Client {
    client_with_timeout(ca, identity, addr, Duration::from_secs(10))
}

/// Like [`client`], giving up on each request after `timeout`.
fn client_with_timeout(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    addr: SocketAddr,
    timeout: Duration,
) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        // Upstream clients always verify the server as "control-service" (reference §4.1).
        .resolve(SERVER_NAME, addr)
        .timeout(timeout)
        .build()
        .unwrap()
}

/// The service whose contract is checked: the emulator, or a real control service.
struct ControlServiceUnderTest {
    client: reqwest::Client,
    base: String,
    addr: SocketAddr,
    certs: PathBuf,
    emulator: Option<Emulator>,
    node_a: Node,
    node_b: Node,
    _dir: TempDir,
}

impl ControlServiceUnderTest {
    /// Starts an emulator with two local nodes (A and B), or connects to `FLOCKER_CONTRACT_URL`.
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let node = |name: &str| Node {
            uuid: Uuid::new_v4(),
            era: Uuid::new_v4(),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            mount_root: dir.path().join(name),
        };
        let (node_a, node_b) = (node("node-a"), node("node-b"));
        if let Ok(url) = std::env::var("FLOCKER_CONTRACT_URL") {
            let certs = PathBuf::from(std::env::var("FLOCKER_CONTRACT_CERTS").expect(
                "FLOCKER_CONTRACT_URL needs FLOCKER_CONTRACT_CERTS (cluster.crt, plugin.crt/.key)",
            ));
            let parsed = reqwest::Url::parse(&url).expect("FLOCKER_CONTRACT_URL is a URL");
            let host = parsed.host_str().expect("URL has a host").to_string();
            let port = parsed.port().unwrap_or(4523);
            let addr = tokio::net::lookup_host((host.as_str(), port))
                .await
                .unwrap()
                .next()
                .expect("control service address resolves");
            return Self::connect(None, addr, certs, node_a, node_b, dir);
        }
        let certs = dir.path().join("certs");
        let opts = CertOptions {
            nodes: vec![node_a.uuid],
            ..CertOptions::default()
        };
        certs::generate(&certs, &opts).unwrap();
        let emulator = Emulator::start(emulator::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            certs_dir: certs.clone(),
            data_dir: dir.path().join("data"),
            nodes: vec![node_a.clone(), node_b.clone()],
            convergence: Convergence::Manual,
            share_mount_roots: false,
        })
        .unwrap();
        let addr = emulator.addr();
        Self::connect(Some(emulator), addr, certs, node_a, node_b, dir)
    }

    fn connect(
        emulator: Option<Emulator>,
        addr: SocketAddr,
        certs: PathBuf,
        node_a: Node,
        node_b: Node,
        dir: TempDir,
    ) -> Self {
        let client = client(
            &certs.join("cluster.crt"),
            Some((&certs.join("plugin.crt"), &certs.join("plugin.key"))),
            addr,
        );
        ControlServiceUnderTest {
            client,
            base: format!("https://{SERVER_NAME}:{}", addr.port()),
            addr,
            certs,
            emulator,
            node_a,
            node_b,
            _dir: dir,
        }
    }

    /// The emulator handle, or `None` after printing why the calling test does not apply.
    fn emulator(&self, test: &str) -> Option<&Emulator> {
        if self.emulator.is_none() {
            eprintln!("SKIP {test}: needs the emulator's handle, not available against FLOCKER_CONTRACT_URL");
        }
        self.emulator.as_ref()
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        tag: Option<&str>,
    ) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        if let Some(tag) = tag {
            request = request.header("x-if-configuration-matches", tag);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> Reply {
        self.request(Method::POST, path, Some(&body.to_string()), None)
            .await
    }

    async fn post_if(&self, path: &str, body: &Value, tag: &str) -> Reply {
        self.request(Method::POST, path, Some(&body.to_string()), Some(tag))
            .await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.request(Method::DELETE, path, None, None).await
    }

    /// Creates a dataset on `primary` and returns its JSON (asserting 201).
    async fn create(&self, primary: Uuid, extra: Value) -> Value {
        let mut body = json!({ "primary": primary.to_string() });
        if let (Some(obj), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            obj.extend(extra.clone());
        }
        let reply = self.post("/v1/configuration/datasets", &body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.body
    }

    async fn configured(&self) -> (Vec<Value>, String) {
        let reply = self.get("/v1/configuration/datasets").await;
        assert_eq!(reply.status, StatusCode::OK);
        (reply.body.as_array().unwrap().clone(), reply.tag())
    }

    async fn state(&self) -> Vec<Value> {
        let reply = self.get("/v1/state/datasets").await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.body.as_array().unwrap().clone()
    }

    async fn leases(&self) -> Vec<Value> {
        let reply = self.get("/v1/configuration/leases").await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.body.as_array().unwrap().clone()
    }

    /// The plugin's own control-service client, with the plugin's certificates.
    fn flocker_client(&self) -> flocker::Client {
        let url = format!("https://127.0.0.1:{}", self.addr.port());
        flocker::Client::new(&url.parse().unwrap(), &self.certs).unwrap()
    }

    /// Stops the emulator and unmounts everything it mounted.
    async fn shutdown(self) {
        if let Some(emulator) = &self.emulator {
            emulator.shutdown().await.unwrap();
        }
    }
}

fn is_mount_point(path: &Path) -> bool {
    flocker_docker_plugin::mount::is_mount_point(path).unwrap()
}

fn id_of(dataset: &Value) -> String {
    dataset["dataset_id"].as_str().unwrap().to_string()
}

fn dataset_path(id: &str) -> String {
    format!("/v1/configuration/datasets/{id}")
}

fn is_uuid4_lowercase(s: &str) -> bool {
    Uuid::parse_str(s).is_ok_and(|u| u.get_version_num() == 4 && u.to_string() == s)
}

// ---------------------------------------------------------------------------------------------
// Version, routing, content type
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn version_is_reported() {
    let svc = ControlServiceUnderTest::start().await;
    let reply = svc.get("/v1/version").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body["flocker"].is_string(), "{:?}", reply.body);
    assert_eq!(reply.headers["content-type"], "application/json");
    svc.shutdown().await;
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_is_405() {
    let svc = ControlServiceUnderTest::start().await;
    assert_eq!(svc.get("/v1/nonsense").await.status, StatusCode::NOT_FOUND);
    let put = svc
        .request(Method::PUT, "/v1/configuration/datasets", Some("{}"), None)
        .await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    let get_lease = svc
        .get(&format!("/v1/configuration/leases/{}", Uuid::new_v4()))
        .await;
    assert_eq!(get_lease.status, StatusCode::METHOD_NOT_ALLOWED);
    if svc
        .emulator("unknown_path_is_404_and_wrong_method_is_405 (JSON bodies)")
        .is_some()
    {
        assert_eq!(put.headers["content-type"], "application/json");
        assert!(put.body["description"].is_string());
    }
    svc.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Configuration: list and create
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn empty_configuration_has_a_tag() {
    let svc = ControlServiceUnderTest::start().await;
    let (datasets, tag) = svc.configured().await;
    if svc.emulator.is_some() {
        assert!(datasets.is_empty());
    }
    assert_eq!(tag.len(), 32);
    assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()));
    svc.shutdown().await;
}

#[tokio::test]
async fn create_generates_distinct_uuid4_ids() {
    let svc = ControlServiceUnderTest::start().await;
    let a = svc.create(svc.node_a.uuid, json!({})).await;
    let b = svc.create(svc.node_a.uuid, json!({})).await;
    assert!(is_uuid4_lowercase(&id_of(&a)), "{a}");
    assert_ne!(id_of(&a), id_of(&b));
    assert_eq!(
        a,
        json!({"dataset_id": id_of(&a), "primary": svc.node_a.uuid.to_string(), "metadata": {}, "deleted": false}),
        "no size means no maximum_size key"
    );
    let (listed, _) = svc.configured().await;
    assert!(listed.contains(&a) && listed.contains(&b), "{listed:?}");
    svc.shutdown().await;
}

#[tokio::test]
async fn create_with_given_id_metadata_and_size() {
    let svc = ControlServiceUnderTest::start().await;
    let id = Uuid::new_v4();
    let created = svc
        .create(
            svc.node_b.uuid,
            json!({
                "dataset_id": id.to_string().to_uppercase(),
                "metadata": {"name": "db", "clusterhq:flocker:profile": "gold"},
                "maximum_size": GIB,
            }),
        )
        .await;
    let expected = json!({
        "dataset_id": id.to_string(),
        "primary": svc.node_b.uuid.to_string(),
        "metadata": {"name": "db", "clusterhq:flocker:profile": "gold"},
        "maximum_size": GIB,
        "deleted": false,
    });
    assert_eq!(created, expected, "the given id is lowercased");
    let (listed, _) = svc.configured().await;
    assert!(listed.contains(&expected));

    let null_size = svc
        .create(svc.node_a.uuid, json!({"maximum_size": null}))
        .await;
    assert!(null_size.get("maximum_size").is_none(), "{null_size}");
    svc.shutdown().await;
}

#[tokio::test]
async fn unknown_primary_is_accepted() {
    // test_unknown_primary_node is skipped upstream: primaries are not validated (FLOC-1278).
    let svc = ControlServiceUnderTest::start().await;
    svc.create(Uuid::new_v4(), json!({})).await;
    svc.shutdown().await;
}

#[tokio::test]
async fn dataset_id_collisions_are_409() {
    let svc = ControlServiceUnderTest::start().await;
    let id = Uuid::new_v4().to_string();
    svc.create(svc.node_a.uuid, json!({"dataset_id": id})).await;
    let attempts = [
        (svc.node_a.uuid, id.clone()),
        (svc.node_b.uuid, id.clone()),
        (svc.node_a.uuid, id.to_uppercase()),
    ];
    for (primary, dataset_id) in attempts {
        let body = json!({"primary": primary.to_string(), "dataset_id": dataset_id});
        let reply = svc.post("/v1/configuration/datasets", &body).await;
        assert_eq!(reply.status, StatusCode::CONFLICT);
        assert_eq!(
            reply.body,
            json!({"description": "The provided dataset_id is already in use."})
        );
    }
    // Deleted datasets keep their id forever.
    assert_eq!(svc.delete(&dataset_path(&id)).await.status, StatusCode::OK);
    let body = json!({"primary": svc.node_a.uuid.to_string(), "dataset_id": id});
    assert_eq!(
        svc.post("/v1/configuration/datasets", &body).await.status,
        StatusCode::CONFLICT
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn schema_violations_are_400() {
    let svc = ControlServiceUnderTest::start().await;
    let node = svc.node_a.uuid.to_string();
    let missing = svc.post("/v1/configuration/datasets", &json!({})).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        missing.body,
        json!({"description": SCHEMA_ERROR, "errors": ["'primary' is a required property"]})
    );
    let junk = svc
        .post(
            "/v1/configuration/datasets",
            &json!({"primary": node, "junk": "x"}),
        )
        .await;
    assert_eq!(junk.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        junk.body["errors"],
        json!(["Additional properties are not allowed (u'junk' was unexpected)"])
    );
    let long = "x".repeat(257);
    let too_many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let bad_bodies = [
        json!({"primary": "not-a-uuid"}),
        json!({"primary": node, "dataset_id": "1234"}),
        json!({"primary": node, "maximum_size": 1024}),
        json!({"primary": node, "maximum_size": 67108864 + 1}),
        json!({"primary": node, "maximum_size": 67108864 - 1024}),
        json!({"primary": node, "maximum_size": "1G"}),
        json!({"primary": node, "metadata": {"name": 5}}),
        json!({"primary": node, "metadata": {"name": long}}),
        json!({"primary": node, "metadata": too_many}),
        json!([node]),
    ];
    for body in bad_bodies {
        let reply = svc.post("/v1/configuration/datasets", &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.description(), SCHEMA_ERROR, "{body}");
    }
    let minimum = svc
        .post(
            "/v1/configuration/datasets",
            &json!({"primary": node, "maximum_size": 67108864}),
        )
        .await;
    assert_eq!(minimum.status, StatusCode::CREATED, "64 MiB is the minimum");

    let not_json = svc
        .request(Method::POST, "/v1/configuration/datasets", Some("{"), None)
        .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(not_json.body, json!({"description": DECODE_ERROR}));
    svc.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Conditional requests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn matching_tag_succeeds_and_stale_tag_is_412() {
    let svc = ControlServiceUnderTest::start().await;
    let node = svc.node_a.uuid.to_string();
    let (_, tag) = svc.configured().await;
    let created = svc
        .post_if(
            "/v1/configuration/datasets",
            &json!({"primary": node}),
            &tag,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = id_of(&created.body);
    let (_, current) = svc.configured().await;
    assert_ne!(tag, current, "a create changes the tag");

    let stale = svc
        .post_if(
            "/v1/configuration/datasets",
            &json!({"primary": node}),
            &tag,
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        stale.body,
        json!({"description": format!("Tag doesn't match. Required: {tag}, current: {current}")})
    );
    // The tag is checked before the body is parsed.
    let stale_garbage = svc
        .request(
            Method::POST,
            "/v1/configuration/datasets",
            Some("{"),
            Some(&tag),
        )
        .await;
    assert_eq!(stale_garbage.status, StatusCode::PRECONDITION_FAILED);

    let moved = svc
        .post_if(
            &dataset_path(&id),
            &json!({"primary": svc.node_b.uuid.to_string()}),
            &tag,
        )
        .await;
    assert_eq!(moved.status, StatusCode::PRECONDITION_FAILED);
    let deleted = svc
        .request(Method::DELETE, &dataset_path(&id), None, Some(&tag))
        .await;
    assert_eq!(deleted.status, StatusCode::PRECONDITION_FAILED);

    let moved = svc
        .post_if(
            &dataset_path(&id),
            &json!({"primary": svc.node_b.uuid.to_string()}),
            &current,
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK);
    let (_, current) = svc.configured().await;
    let deleted = svc
        .request(Method::DELETE, &dataset_path(&id), None, Some(&current))
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    svc.shutdown().await;
}

#[tokio::test]
async fn leases_change_the_tag() {
    let svc = ControlServiceUnderTest::start().await;
    let (_, before) = svc.configured().await;
    let lease = json!({"dataset_id": Uuid::new_v4().to_string(), "node_uuid": svc.node_a.uuid.to_string(), "expires": null});
    assert_eq!(
        svc.post("/v1/configuration/leases", &lease).await.status,
        StatusCode::CREATED
    );
    let (_, after) = svc.configured().await;
    assert_ne!(before, after);
    svc.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Move and delete
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn move_changes_the_primary() {
    let svc = ControlServiceUnderTest::start().await;
    let created = svc
        .create(svc.node_a.uuid, json!({"metadata": {"name": "m"}}))
        .await;
    let id = id_of(&created);
    let reply = svc
        .post(
            &dataset_path(&id),
            &json!({"primary": svc.node_b.uuid.to_string()}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let mut expected = created.clone();
    expected["primary"] = json!(svc.node_b.uuid.to_string());
    assert_eq!(reply.body, expected);
    let (listed, tag) = svc.configured().await;
    assert!(listed.contains(&expected));

    // Unchanged primary: nothing changes, not even the tag.
    let same = svc
        .post(
            &dataset_path(&id),
            &json!({"primary": svc.node_b.uuid.to_string()}),
        )
        .await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(svc.configured().await.1, tag);

    // An unconfigured node is accepted.
    let elsewhere = svc
        .post(
            &dataset_path(&id),
            &json!({"primary": Uuid::new_v4().to_string()}),
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::OK);

    let invalid = svc.post(&dataset_path(&id), &json!({"primary": "x"})).await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    svc.shutdown().await;
}

#[tokio::test]
async fn move_or_delete_of_unknown_dataset_is_404() {
    let svc = ControlServiceUnderTest::start().await;
    let path = dataset_path(&Uuid::new_v4().to_string());
    let moved = svc
        .post(&path, &json!({"primary": svc.node_a.uuid.to_string()}))
        .await;
    assert_eq!(moved.status, StatusCode::NOT_FOUND);
    assert_eq!(moved.body, json!({"description": "Dataset not found."}));
    let deleted = svc.delete(&path).await;
    assert_eq!(deleted.status, StatusCode::NOT_FOUND);
    assert_eq!(deleted.body, json!({"description": "Dataset not found."}));
    svc.shutdown().await;
}

#[tokio::test]
async fn delete_is_idempotent_and_kept_in_configuration() {
    let svc = ControlServiceUnderTest::start().await;
    let created = svc
        .create(svc.node_a.uuid, json!({"maximum_size": GIB}))
        .await;
    let id = id_of(&created);
    let first = svc.delete(&dataset_path(&id)).await;
    assert_eq!(first.status, StatusCode::OK);
    let mut expected = created.clone();
    expected["deleted"] = json!(true);
    assert_eq!(first.body, expected);
    let (_, tag) = svc.configured().await;
    let second = svc.delete(&dataset_path(&id)).await;
    assert_eq!((second.status, &second.body), (StatusCode::OK, &expected));
    let (listed, tag_after) = svc.configured().await;
    assert_eq!(tag, tag_after, "a repeated delete changes nothing");
    assert!(
        listed.contains(&expected),
        "deleted datasets stay listed: {listed:?}"
    );

    let moved = svc
        .post(
            &dataset_path(&id),
            &json!({"primary": svc.node_b.uuid.to_string()}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        moved.body,
        json!({"description": "The dataset has been deleted."})
    );
    svc.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn lease_acquire_renew_conflict_release() {
    let svc = ControlServiceUnderTest::start().await;
    let dataset = Uuid::new_v4().to_string();
    let (a, b) = (svc.node_a.uuid.to_string(), svc.node_b.uuid.to_string());
    let lease = |node: &str, expires: Value| json!({"dataset_id": dataset, "node_uuid": node, "expires": expires});

    let acquired = svc
        .post("/v1/configuration/leases", &lease(&a, Value::Null))
        .await;
    assert_eq!(acquired.status, StatusCode::CREATED);
    assert_eq!(acquired.body, lease(&a, Value::Null));
    assert!(svc.leases().await.contains(&lease(&a, Value::Null)));

    let renewed = svc
        .post("/v1/configuration/leases", &lease(&a, json!(60)))
        .await;
    assert_eq!(renewed.status, StatusCode::OK);
    let remaining = renewed.body["expires"].as_f64().unwrap();
    assert!(remaining > 55.0 && remaining <= 60.0, "{remaining}");

    let conflict = svc
        .post("/v1/configuration/leases", &lease(&b, Value::Null))
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.body, json!({"description": "Lease already held."}));

    let listed = svc.leases().await;
    let held = listed
        .iter()
        .find(|l| l["dataset_id"] == json!(dataset))
        .unwrap();
    assert_eq!(held["node_uuid"], json!(a));
    assert!(held["expires"].as_f64().unwrap() <= 60.0);

    let released = svc
        .delete(&format!("/v1/configuration/leases/{dataset}"))
        .await;
    assert_eq!(released.status, StatusCode::OK);
    assert_eq!(released.body["node_uuid"], json!(a));
    let again = svc
        .delete(&format!("/v1/configuration/leases/{dataset}"))
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.body, json!({"description": "Lease not found."}));

    let missing_expires = json!({"dataset_id": dataset, "node_uuid": a});
    let reply = svc.post("/v1/configuration/leases", &missing_expires).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    svc.shutdown().await;
}

#[tokio::test]
async fn expired_leases_are_removed() {
    let svc = ControlServiceUnderTest::start().await;
    let dataset = Uuid::new_v4().to_string();
    let body =
        json!({"dataset_id": dataset, "node_uuid": svc.node_a.uuid.to_string(), "expires": 0});
    assert_eq!(
        svc.post("/v1/configuration/leases", &body).await.status,
        StatusCode::CREATED
    );
    // The emulator expires on access; a real service's LeaseService ticks every second.
    let mut gone = false;
    for _ in 0..30 {
        if !svc
            .leases()
            .await
            .iter()
            .any(|l| l["dataset_id"] == json!(dataset))
        {
            gone = true;
            break;
        }
        assert!(
            svc.emulator.is_none(),
            "the emulator removes expired leases at once"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "expired lease still listed");
    let other =
        json!({"dataset_id": dataset, "node_uuid": svc.node_b.uuid.to_string(), "expires": null});
    assert_eq!(
        svc.post("/v1/configuration/leases", &other).await.status,
        StatusCode::CREATED
    );
    svc.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn nodes_are_listed_and_found_by_era() {
    let svc = ControlServiceUnderTest::start().await;
    let unknown = svc
        .get(&format!("/v1/state/nodes/by_era/{}", Uuid::new_v4()))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.body,
        json!({"description": "No node found with given era."})
    );
    let Some(emulator) = svc.emulator("nodes_are_listed_and_found_by_era (known eras)") else {
        return;
    };
    let nodes = svc.get("/v1/state/nodes").await;
    assert_eq!(nodes.status, StatusCode::OK);
    for node in [&svc.node_a, &svc.node_b] {
        assert!(
            nodes
                .body
                .as_array()
                .unwrap()
                .contains(&json!({"host": "127.0.0.1", "uuid": node.uuid.to_string()})),
            "{:?}",
            nodes.body
        );
        let found = svc
            .get(&format!("/v1/state/nodes/by_era/{}", node.era))
            .await;
        assert_eq!(found.status, StatusCode::OK);
        assert_eq!(found.body, json!({"uuid": node.uuid.to_string()}));
    }

    // A node whose agent connects later: 404 first, then 200 (test_this_node_uuid_retry).
    let late = Node {
        uuid: Uuid::new_v4(),
        era: Uuid::new_v4(),
        host: "10.0.0.9".parse().unwrap(),
        mount_root: svc._dir.path().join("late"),
    };
    let path = format!("/v1/state/nodes/by_era/{}", late.era);
    assert_eq!(svc.get(&path).await.status, StatusCode::NOT_FOUND);
    emulator.add_node(late.clone()).unwrap();
    let found = svc.get(&path).await;
    assert_eq!(found.body, json!({"uuid": late.uuid.to_string()}));
    svc.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// State and convergence (emulator with real bind mounts)
// ---------------------------------------------------------------------------------------------

fn entry_for<'a>(state: &'a [Value], id: &str) -> Vec<&'a Value> {
    state
        .iter()
        .filter(|d| d["dataset_id"] == json!(id))
        .collect()
}

#[tokio::test]
async fn state_follows_create_move_and_delete_with_real_mounts() {
    const TEST: &str = "state_follows_create_move_and_delete_with_real_mounts";
    if !require_root(TEST) {
        return;
    }
    let svc = ControlServiceUnderTest::start().await;
    let Some(emulator) = svc.emulator(TEST) else {
        return;
    };
    let id = id_of(
        &svc.create(svc.node_a.uuid, json!({"maximum_size": GIB}))
            .await,
    );
    assert!(
        entry_for(&svc.state().await, &id).is_empty(),
        "absent until the agent converges"
    );

    emulator.converge().await;
    let path_a = svc.node_a.mount_root.canonicalize().unwrap().join(&id);
    let state = svc.state().await;
    assert_eq!(
        entry_for(&state, &id),
        vec![
            &json!({"dataset_id": id, "primary": svc.node_a.uuid.to_string(), "path": path_a, "maximum_size": GIB})
        ]
    );
    assert!(is_mount_point(&path_a));
    std::fs::write(path_a.join("hello"), "from node A").unwrap();

    svc.post(
        &dataset_path(&id),
        &json!({"primary": svc.node_b.uuid.to_string()}),
    )
    .await;
    assert_eq!(
        entry_for(&svc.state().await, &id)[0]["primary"],
        json!(svc.node_a.uuid.to_string()),
        "state lags configuration"
    );
    emulator.converge().await;
    let path_b = svc.node_b.mount_root.canonicalize().unwrap().join(&id);
    let state = svc.state().await;
    assert_eq!(
        entry_for(&state, &id),
        vec![
            &json!({"dataset_id": id, "primary": svc.node_b.uuid.to_string(), "path": path_b, "maximum_size": GIB})
        ]
    );
    assert!(!is_mount_point(&path_a), "unmounted from node A");
    assert!(is_mount_point(&path_b));
    assert_eq!(
        std::fs::read_to_string(path_b.join("hello")).unwrap(),
        "from node A"
    );

    // Moved to a node this agent does not run: mounted nowhere, listed without primary/path.
    svc.post(
        &dataset_path(&id),
        &json!({"primary": Uuid::new_v4().to_string()}),
    )
    .await;
    emulator.converge().await;
    assert_eq!(
        entry_for(&svc.state().await, &id),
        vec![&json!({"dataset_id": id, "maximum_size": GIB})]
    );
    assert!(!is_mount_point(&path_b));

    svc.post(
        &dataset_path(&id),
        &json!({"primary": svc.node_a.uuid.to_string()}),
    )
    .await;
    emulator.converge().await;
    assert!(is_mount_point(&path_a));
    svc.delete(&dataset_path(&id)).await;
    emulator.converge().await;
    assert!(
        entry_for(&svc.state().await, &id).is_empty(),
        "destroyed datasets leave state"
    );
    assert!(!is_mount_point(&path_a));
    let backing = svc._dir.path().join("data/backing").join(&id);
    assert!(!backing.exists(), "backing directory removed");
    svc.shutdown().await;
}

#[tokio::test]
async fn a_leased_dataset_is_not_moved_or_destroyed() {
    const TEST: &str = "a_leased_dataset_is_not_moved_or_destroyed";
    if !require_root(TEST) {
        return;
    }
    let svc = ControlServiceUnderTest::start().await;
    let Some(emulator) = svc.emulator(TEST) else {
        return;
    };
    let id = id_of(&svc.create(svc.node_a.uuid, json!({})).await);
    emulator.converge().await;
    let path_a = svc.node_a.mount_root.canonicalize().unwrap().join(&id);
    let lease =
        json!({"dataset_id": id, "node_uuid": svc.node_a.uuid.to_string(), "expires": null});
    svc.post("/v1/configuration/leases", &lease).await;

    let moved = svc
        .post(
            &dataset_path(&id),
            &json!({"primary": svc.node_b.uuid.to_string()}),
        )
        .await;
    assert_eq!(
        moved.status,
        StatusCode::OK,
        "the API accepts moves of leased datasets"
    );
    emulator.converge().await;
    let state = svc.state().await;
    assert_eq!(
        entry_for(&state, &id)[0]["primary"],
        json!(svc.node_a.uuid.to_string())
    );
    assert_eq!(entry_for(&state, &id)[0]["path"], json!(path_a));
    assert!(is_mount_point(&path_a));

    svc.delete(&format!("/v1/configuration/leases/{id}")).await;
    emulator.converge().await;
    let state = svc.state().await;
    assert_eq!(
        entry_for(&state, &id)[0]["primary"],
        json!(svc.node_b.uuid.to_string())
    );
    assert!(!is_mount_point(&path_a));

    // Deletion waits for the lease too.
    let lease_b =
        json!({"dataset_id": id, "node_uuid": svc.node_b.uuid.to_string(), "expires": null});
    svc.post("/v1/configuration/leases", &lease_b).await;
    svc.delete(&dataset_path(&id)).await;
    emulator.converge().await;
    assert_eq!(
        entry_for(&svc.state().await, &id).len(),
        1,
        "kept while leased"
    );
    svc.delete(&format!("/v1/configuration/leases/{id}")).await;
    emulator.converge().await;
    assert!(entry_for(&svc.state().await, &id).is_empty());
    svc.shutdown().await;
}

#[tokio::test]
async fn shutdown_unmounts_everything() {
    const TEST: &str = "shutdown_unmounts_everything";
    if !require_root(TEST) {
        return;
    }
    let svc = ControlServiceUnderTest::start().await;
    let Some(emulator) = svc.emulator(TEST) else {
        return;
    };
    let a = id_of(&svc.create(svc.node_a.uuid, json!({})).await);
    let b = id_of(&svc.create(svc.node_b.uuid, json!({})).await);
    emulator.converge().await;
    let paths = [
        svc.node_a.mount_root.canonicalize().unwrap().join(&a),
        svc.node_b.mount_root.canonicalize().unwrap().join(&b),
    ];
    assert!(paths.iter().all(|p| is_mount_point(p)));
    emulator.shutdown().await.unwrap();
    assert!(paths.iter().all(|p| !is_mount_point(p)));
    assert!(emulator
        .state_datasets()
        .iter()
        .all(|d| d.get("path").is_none()));
}

// ---------------------------------------------------------------------------------------------
// Emulator controls: faults, counts, delays, listening
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn injected_faults_are_counted_and_consumed() {
    let svc = ControlServiceUnderTest::start().await;
    let Some(emulator) = svc.emulator("injected_faults_are_counted_and_consumed") else {
        return;
    };
    emulator.fail_next("GET", "/v1/state/datasets", 503);
    let failed = svc.get("/v1/state/datasets").await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failed.body, json!({"description": "injected fault"}));
    assert_eq!(svc.get("/v1/state/datasets").await.status, StatusCode::OK);
    assert_eq!(emulator.request_count("GET", "/v1/state/datasets"), 2);
    assert_eq!(emulator.request_count("POST", "/v1/state/datasets"), 0);
    emulator.reset_counts();
    assert_eq!(emulator.request_count("GET", "/v1/state/datasets"), 0);

    let delay = Duration::from_millis(200);
    emulator.delay("/v1/version", delay);
    let started = std::time::Instant::now();
    assert_eq!(svc.get("/v1/version").await.status, StatusCode::OK);
    assert!(started.elapsed() >= delay);
    emulator.delay("/v1/version", Duration::ZERO);
    svc.shutdown().await;
}

#[tokio::test]
async fn stop_and_start_listening_keeps_the_model() {
    let svc = ControlServiceUnderTest::start().await;
    let Some(emulator) = svc.emulator("stop_and_start_listening_keeps_the_model") else {
        return;
    };
    let created = svc.create(svc.node_a.uuid, json!({})).await;
    emulator.stop_listening().await;
    let refused = svc
        .client
        .get(format!("{}/v1/version", svc.base))
        .send()
        .await;
    assert!(refused.is_err(), "no listener while stopped");
    emulator.start_listening().await.unwrap();
    let (listed, _) = svc.configured().await;
    assert_eq!(listed, vec![created]);
    assert_eq!(emulator.configured_datasets(), listed);
    svc.shutdown().await;
}

#[tokio::test]
async fn a_dropped_answer_is_a_transport_error_although_the_change_is_applied() {
    let svc = ControlServiceUnderTest::start().await;
    let Some(emulator) =
        svc.emulator("a_dropped_answer_is_a_transport_error_although_the_change_is_applied")
    else {
        return;
    };
    let client = svc.flocker_client();
    let (dataset, node) = (Uuid::new_v4(), svc.node_a.uuid);
    emulator.drop_answer_next("POST", "/v1/configuration/leases");
    let err = client
        .acquire_lease(DatasetId(dataset), NodeId(node))
        .await
        .unwrap_err();
    assert!(matches!(err, flocker::Error::NoAnswer { .. }), "{err}");
    assert!(
        err.in_doubt(),
        "applied, answer lost: the outcome is unknown"
    );
    assert_eq!(
        svc.leases().await,
        vec![
            json!({"dataset_id": dataset.to_string(), "node_uuid": node.to_string(), "expires": null})
        ],
        "the lease was acquired although its answer was lost"
    );
    assert_eq!(
        emulator.request_count("POST", "/v1/configuration/leases"),
        1
    );
    // Consumed: the retry is answered, and sees the lease as its own (a renewal).
    let renewed = client
        .acquire_lease(DatasetId(dataset), NodeId(node))
        .await
        .unwrap();
    assert_eq!(renewed, flocker_docker_plugin::flocker::Acquired::Renewed);
    assert_eq!(
        emulator.request_count("POST", "/v1/configuration/leases"),
        2
    );

    // Over raw HTTPS: either the status line or the body never arrives complete.
    emulator.drop_answer_next("GET", "/v1/version");
    emulator.drop_answer_next("GET", "/v1/version");
    for _ in 0..2 {
        let url = format!("{}/v1/version", svc.base);
        let answer = async { svc.client.get(url).send().await?.bytes().await }.await;
        assert!(answer.is_err(), "{answer:?}");
    }
    assert_eq!(svc.get("/v1/version").await.status, StatusCode::OK);
    assert_eq!(emulator.request_count("GET", "/v1/version"), 3);
    svc.shutdown().await;
}

#[tokio::test]
async fn delay_holds_requests_unapplied_and_delay_answer_holds_applied_answers() {
    let svc = ControlServiceUnderTest::start().await;
    let Some(emulator) =
        svc.emulator("delay_holds_requests_unapplied_and_delay_answer_holds_applied_answers")
    else {
        return;
    };
    // The client gives up long before either delay ends; nothing here waits for the delays.
    let impatient = client_with_timeout(
        &svc.certs.join("cluster.crt"),
        Some((&svc.certs.join("plugin.crt"), &svc.certs.join("plugin.key"))),
        svc.addr,
        Duration::from_millis(300),
    );
    let path = "/v1/configuration/datasets";
    let create = || {
        impatient
            .post(format!("{}{path}", svc.base))
            .body(json!({"primary": svc.node_a.uuid.to_string()}).to_string())
            .send()
    };
    let long = Duration::from_secs(60);

    emulator.delay(path, long);
    let err = create().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(
        emulator.configured_datasets().is_empty(),
        "delay: not applied yet when the client gives up"
    );
    emulator.delay(path, Duration::ZERO);

    emulator.delay_answer(path, long);
    let err = create().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(
        emulator.configured_datasets().len(),
        1,
        "delay_answer: applied although the client timed out"
    );
    emulator.delay_answer(path, Duration::ZERO);
    assert_eq!(create().await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(emulator.request_count("POST", path), 3);
    svc.shutdown().await;
}

#[tokio::test]
async fn tls_fault_fails_handshakes_with_a_tls_error_until_cleared() {
    let svc = ControlServiceUnderTest::start().await;
    let Some(emulator) = svc.emulator("tls_fault_fails_handshakes_with_a_tls_error_until_cleared")
    else {
        return;
    };
    let pooled = svc.flocker_client();
    assert_eq!(pooled.version().await.unwrap(), FLOCKER_VERSION);

    emulator.set_tls_fault(true).await.unwrap();
    let fresh = svc.flocker_client();
    let err = fresh.version().await.unwrap_err();
    assert!(matches!(err, flocker::Error::Tls { .. }), "{err}");
    assert!(
        version_with(&svc.client, &svc.base).await.is_err(),
        "raw HTTPS fails too"
    );
    // The pooled connection was closed; a request already written on it may see that close
    // (keep-alive race) before the client handshakes anew and fails verifying the foreign CA.
    let mut err = pooled.version().await.unwrap_err();
    if matches!(
        err,
        flocker::Error::Unreachable { .. } | flocker::Error::NoAnswer { .. }
    ) {
        err = pooled.version().await.unwrap_err();
    }
    assert!(matches!(err, flocker::Error::Tls { .. }), "{err}");
    assert_eq!(
        emulator.request_count("GET", "/v1/version"),
        1,
        "no request got through"
    );

    emulator.set_tls_fault(false).await.unwrap();
    assert_eq!(pooled.version().await.unwrap(), FLOCKER_VERSION);
    assert_eq!(fresh.version().await.unwrap(), FLOCKER_VERSION);
    // Turning it on again reuses the foreign CA made the first time.
    emulator.set_tls_fault(true).await.unwrap();
    let err = svc.flocker_client().version().await.unwrap_err();
    assert!(matches!(err, flocker::Error::Tls { .. }), "{err}");
    emulator.set_tls_fault(false).await.unwrap();
    svc.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Authentication (reference §5.1)
// ---------------------------------------------------------------------------------------------

async fn version_with(client: &reqwest::Client, base: &str) -> Result<StatusCode, reqwest::Error> {
    client
        .get(format!("{base}/v1/version"))
        .send()
        .await
        .map(|r| r.status())
}

#[tokio::test]
async fn client_certificates_are_required_and_checked() {
    let svc = ControlServiceUnderTest::start().await;
    if svc
        .emulator("client_certificates_are_required_and_checked")
        .is_none()
    {
        return;
    }
    let ca = svc.certs.join("cluster.crt");

    let anonymous = client(&ca, None, svc.addr);
    assert!(
        version_with(&anonymous, &svc.base).await.is_err(),
        "missing client certificate"
    );

    let other = tempfile::tempdir().unwrap();
    certs::generate(other.path(), &CertOptions::default()).unwrap();
    let foreign = client(
        &ca,
        Some((
            &other.path().join("plugin.crt"),
            &other.path().join("plugin.key"),
        )),
        svc.addr,
    );
    assert!(
        version_with(&foreign, &svc.base).await.is_err(),
        "certificate from another CA"
    );

    // A node certificate chains to the right CA but its CN is node-<uuid>, not user-*.
    let node = client(
        &ca,
        Some((&svc.certs.join("node.crt"), &svc.certs.join("node.key"))),
        svc.addr,
    );
    assert!(
        version_with(&node, &svc.base).await.is_err(),
        "CN without user- prefix"
    );

    assert_eq!(
        version_with(&svc.client, &svc.base).await.unwrap(),
        StatusCode::OK
    );
    svc.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Emulator-only settings: shared mount roots and background convergence
// ---------------------------------------------------------------------------------------------

/// The optional fields (e.g. `shared:3`) of the mountinfo line for `path`, if it is a mount point.
fn mount_options(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let wanted = path.to_str().unwrap();
    let found = info
        .lines()
        .rfind(|line| line.split(' ').nth(4) == Some(wanted))
        .map(|line| line.split(" - ").next().unwrap_or_default().to_string());
    found
}

/// An emulator with one node, built directly (these settings have no real-service equivalent).
fn start_emulator(
    dir: &Path,
    convergence: Convergence,
    share_mount_roots: bool,
) -> (Emulator, Node) {
    let certs = dir.join("certs");
    certs::generate(&certs, &CertOptions::default()).unwrap();
    let node = Node {
        uuid: Uuid::new_v4(),
        era: Uuid::new_v4(),
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        mount_root: dir.join("flocker"),
    };
    let emulator = Emulator::start(emulator::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        certs_dir: certs,
        data_dir: dir.join("data"),
        nodes: vec![node.clone()],
        convergence,
        share_mount_roots,
    })
    .unwrap();
    (emulator, node)
}

fn plugin_client(dir: &Path, emulator: &Emulator) -> (reqwest::Client, String) {
    let certs = dir.join("certs");
    let client = client(
        &certs.join("cluster.crt"),
        Some((&certs.join("plugin.crt"), &certs.join("plugin.key"))),
        emulator.addr(),
    );
    (
        client,
        format!("https://{SERVER_NAME}:{}", emulator.addr().port()),
    )
}

#[tokio::test]
async fn shared_mount_roots_propagate_and_are_undone() {
    const TEST: &str = "shared_mount_roots_propagate_and_are_undone";
    if !require_root(TEST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (emulator, node) = start_emulator(dir.path(), Convergence::Manual, true);
    let root = node.mount_root.canonicalize().unwrap();
    let root_options = mount_options(&root).expect("mount root is a mount point");
    assert!(root_options.contains("shared:"), "{root_options}");

    let (client, base) = plugin_client(dir.path(), &emulator);
    let created: Value = client
        .post(format!("{base}/v1/configuration/datasets"))
        .body(json!({"primary": node.uuid.to_string()}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    emulator.converge().await;
    let dataset_options = mount_options(&root.join(id_of(&created))).expect("dataset mounted");
    assert!(dataset_options.contains("shared:"), "{dataset_options}");

    emulator.shutdown().await.unwrap();
    assert!(
        mount_options(&root).is_none(),
        "the root's self bind mount is removed"
    );
}

#[tokio::test]
async fn after_lag_state_follows_without_converge() {
    // Times the lag itself, so this one test waits on the clock; the primary is a node the agent
    // does not run, so no mount (and no root) is needed.
    let dir = tempfile::tempdir().unwrap();
    let lag = Duration::from_millis(100);
    let (emulator, _) = start_emulator(dir.path(), Convergence::After(lag), false);
    let (client, base) = plugin_client(dir.path(), &emulator);
    let started = std::time::Instant::now();
    let status = client
        .post(format!("{base}/v1/configuration/datasets"))
        .body(json!({"primary": Uuid::new_v4().to_string()}).to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::CREATED);
    assert!(emulator.state_datasets().is_empty());
    while emulator.state_datasets().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "state never followed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(started.elapsed() >= lag);
    let state = emulator.state_datasets();
    assert!(state[0].get("path").is_none(), "non-manifest: {state:?}");
    emulator.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_paused_agent_changes_nothing_until_resumed() {
    const TEST: &str = "a_paused_agent_changes_nothing_until_resumed";
    if !require_root(TEST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lag = Duration::from_millis(50);
    let (emulator, node) = start_emulator(dir.path(), Convergence::After(lag), false);
    let (client, base) = plugin_client(dir.path(), &emulator);
    let created: Value = client
        .post(format!("{base}/v1/configuration/datasets"))
        .body(json!({"primary": node.uuid.to_string()}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = id_of(&created);
    let path = node.mount_root.canonicalize().unwrap().join(&id);
    eventually("the dataset is mounted", || is_mount_point(&path)).await;

    // A short lease pins it while a move away is configured; then the agent is paused.
    let lease = json!({"dataset_id": id, "node_uuid": node.uuid.to_string(), "expires": 0.2});
    let leased = client
        .post(format!("{base}/v1/configuration/leases"))
        .body(lease.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(leased.status(), StatusCode::CREATED);
    let elsewhere = json!({"primary": Uuid::new_v4().to_string()});
    let moved = client
        .post(format!("{base}{}", dataset_path(&id)))
        .body(elsewhere.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), StatusCode::OK);
    emulator.pause_agent(true);
    eventually("the lease expires", || emulator.leases().is_empty()).await;
    // Absence can only be shown by waiting: several lags after the expiry-triggered pass was due.
    tokio::time::sleep(lag * 6).await;
    assert!(is_mount_point(&path), "paused: the expiry moved nothing");
    assert_eq!(
        emulator.state_datasets()[0]["primary"],
        json!(node.uuid.to_string())
    );

    emulator.pause_agent(false);
    eventually("the resumed agent unmounts it", || !is_mount_point(&path)).await;
    assert!(emulator.state_datasets()[0].get("primary").is_none());

    // An explicit converge is a test step and still works while paused.
    emulator.pause_agent(true);
    let back = json!({"primary": node.uuid.to_string()});
    let moved = client
        .post(format!("{base}{}", dataset_path(&id)))
        .body(back.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), StatusCode::OK);
    tokio::time::sleep(lag * 6).await;
    assert!(!is_mount_point(&path), "paused: the move back did nothing");
    emulator.converge().await;
    assert!(is_mount_point(&path));
    emulator.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_dead_node_vanishes_keeps_its_mounts_and_is_force_detached_by_a_move() {
    const TEST: &str = "a_dead_node_vanishes_keeps_its_mounts_and_is_force_detached_by_a_move";
    if !require_root(TEST) {
        return;
    }
    let svc = ControlServiceUnderTest::start().await;
    let Some(emulator) = svc.emulator(TEST) else {
        return;
    };
    let (a, b) = (svc.node_a.clone(), svc.node_b.clone());
    let root_a = a.mount_root.canonicalize().unwrap();
    let moving = id_of(&svc.create(a.uuid, json!({})).await);
    let staying = id_of(&svc.create(a.uuid, json!({})).await);
    emulator.converge().await;
    let (moving_a, staying_a) = (root_a.join(&moving), root_a.join(&staying));
    assert!(is_mount_point(&moving_a) && is_mount_point(&staying_a));
    std::fs::write(moving_a.join("hello"), "written on A").unwrap();
    let lease = json!({"dataset_id": moving, "node_uuid": a.uuid.to_string(), "expires": null});
    svc.post("/v1/configuration/leases", &lease).await;

    emulator.kill_node(a.uuid).unwrap();
    assert_eq!(emulator.live_nodes(), vec![b.uuid]);
    let nodes = svc.get("/v1/state/nodes").await.body;
    assert_eq!(
        nodes,
        json!([{"host": "127.0.0.1", "uuid": b.uuid.to_string()}])
    );
    let by_era = svc.get(&format!("/v1/state/nodes/by_era/{}", a.era)).await;
    assert_eq!(by_era.status, StatusCode::NOT_FOUND);
    let state = svc.state().await;
    assert!(
        entry_for(&state, &moving).is_empty() && entry_for(&state, &staying).is_empty(),
        "the dead node's state is forgotten: {state:?}"
    );
    assert!(
        is_mount_point(&moving_a) && is_mount_point(&staying_a),
        "nobody unmounts a dead machine"
    );

    // Its agent acts no more: a dataset configured there is neither created nor mounted.
    let late = id_of(&svc.create(a.uuid, json!({})).await);
    emulator.converge().await;
    assert!(entry_for(&svc.state().await, &late).is_empty());
    assert!(!is_mount_point(&root_a.join(&late)));

    // The dead node's lease pins the dataset through a move...
    svc.post(
        &dataset_path(&moving),
        &json!({"primary": b.uuid.to_string()}),
    )
    .await;
    emulator.converge().await;
    let moving_b = b.mount_root.canonicalize().unwrap().join(&moving);
    assert!(is_mount_point(&moving_a) && !is_mount_point(&moving_b));
    assert!(entry_for(&svc.state().await, &moving).is_empty());

    // ...until it is released through the API: then it is force-detached and moves.
    let released = svc
        .delete(&format!("/v1/configuration/leases/{moving}"))
        .await;
    assert_eq!(released.status, StatusCode::OK);
    emulator.converge().await;
    assert!(
        !is_mount_point(&moving_a),
        "force-detached from the dead node"
    );
    assert!(is_mount_point(&moving_b));
    assert_eq!(
        std::fs::read_to_string(moving_b.join("hello")).unwrap(),
        "written on A"
    );
    assert_eq!(
        entry_for(&svc.state().await, &moving)[0]["primary"],
        json!(b.uuid.to_string())
    );
    assert!(is_mount_point(&staying_a), "datasets not moved stay put");

    emulator.revive_node(a.uuid).unwrap();
    assert_eq!(emulator.live_nodes(), vec![a.uuid, b.uuid]);
    let found = svc.get(&format!("/v1/state/nodes/by_era/{}", a.era)).await;
    assert_eq!(found.body, json!({"uuid": a.uuid.to_string()}));
    let state = svc.state().await;
    assert_eq!(
        entry_for(&state, &staying)[0]["primary"],
        json!(a.uuid.to_string()),
        "state shows what is still mounted there"
    );
    assert_eq!(entry_for(&state, &moving).len(), 1, "not back on A");
    emulator.converge().await;
    assert!(is_mount_point(&root_a.join(&late)), "its agent acts again");

    assert!(matches!(
        emulator.kill_node(Uuid::new_v4()),
        Err(emulator::Error::UnknownNode { .. })
    ));
    svc.shutdown().await;
}
