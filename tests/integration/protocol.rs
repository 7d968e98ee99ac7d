//! Protocol conformance over a real Unix socket, with a recording driver behind the routes: exact
//! JSON per endpoint, decoding rules, misuse answers, probe connections, concurrency.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flocker_docker_plugin::driver::{
    self, CreateOptions, MountId, VolumeDriver, VolumeInfo, VolumeName,
};
use flocker_docker_plugin::{protocol, server};
use hyper::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use crate::util::DockerClient;

/// Records every call and answers from fixed data: volume "known" exists, mounted at /mnt/known.
/// Shared with `properties`, which fuzzes the same routes.
#[derive(Default)]
pub(crate) struct Recorder {
    /// One line per driver call that reached it.
    pub(crate) calls: Mutex<Vec<String>>,
    /// A Mount of "slow" waits for this, to prove other calls are served meanwhile.
    release_slow: tokio::sync::Notify,
}

impl Recorder {
    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn known(name: &VolumeName) -> driver::Result<()> {
        if name.as_str() == "known" {
            Ok(())
        } else {
            Err(driver::Error::NotFound {
                name: name.to_string(),
            })
        }
    }
}

impl VolumeDriver for Recorder {
    async fn create(&self, name: &VolumeName, opts: CreateOptions) -> driver::Result<()> {
        self.record(format!("create {name} {:?}", opts.0));
        Ok(())
    }
    async fn remove(&self, name: &VolumeName) -> driver::Result<()> {
        self.record(format!("remove {name}"));
        Ok(())
    }
    async fn mount(&self, name: &VolumeName, id: &MountId) -> driver::Result<PathBuf> {
        self.record(format!("mount {name} {id}"));
        if name.as_str() == "slow" {
            self.release_slow.notified().await;
            return Ok(PathBuf::from("/mnt/slow"));
        }
        Self::known(name).map(|()| PathBuf::from("/mnt/known"))
    }
    async fn unmount(&self, name: &VolumeName, id: &MountId) -> driver::Result<()> {
        self.record(format!("unmount {name} {id}"));
        Ok(())
    }
    async fn path(&self, name: &VolumeName) -> driver::Result<PathBuf> {
        Self::known(name).map(|()| PathBuf::from("/mnt/known"))
    }
    async fn get(&self, name: &VolumeName) -> driver::Result<VolumeInfo> {
        Self::known(name).map(|()| VolumeInfo {
            name: name.to_string(),
            mountpoint: None,
            status: [("dataset_id".to_string(), json!("d1"))].into(),
        })
    }
    async fn list(&self) -> driver::Result<Vec<VolumeInfo>> {
        Ok(vec![VolumeInfo {
            name: "known".into(),
            mountpoint: Some("/mnt/known".into()),
            status: Default::default(),
        }])
    }
}

/// A protocol router over a [`Recorder`], served on a temporary socket until the runtime ends.
pub(crate) struct Server {
    _dir: TempDir,
    pub(crate) socket: PathBuf,
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) docker: DockerClient,
}

/// Binds a fresh socket and serves on it from a spawned task.
pub(crate) async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("plugins").join("flocker.sock");
    let listener = server::bind(&socket).unwrap();
    let recorder = Arc::new(Recorder::default());
    let app = protocol::router(Arc::clone(&recorder));
    tokio::spawn(server::serve(
        listener,
        socket.clone(),
        app,
        std::future::pending(),
    ));
    Server {
        docker: DockerClient::new(&socket),
        _dir: dir,
        socket,
        recorder,
    }
}

#[tokio::test]
async fn every_endpoint_answers_the_exact_shape() {
    let server = start().await;
    let docker = &server.docker;
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "/Plugin.Activate",
            json!(12345),
            json!({ "Implements": ["VolumeDriver"] }),
        ),
        (
            "/VolumeDriver.Capabilities",
            json!({}),
            json!({ "Capabilities": { "Scope": "global" } }),
        ),
        (
            "/VolumeDriver.Create",
            json!({ "Name": "v", "Opts": { "size": "1G" } }),
            json!({ "Err": "" }),
        ),
        (
            "/VolumeDriver.Create",
            json!({ "Name": "v", "Opts": null }),
            json!({ "Err": "" }),
        ),
        (
            "/VolumeDriver.Create",
            json!({ "Name": "v" }),
            json!({ "Err": "" }),
        ),
        (
            "/VolumeDriver.Remove",
            json!({ "Name": "v" }),
            json!({ "Err": "" }),
        ),
        (
            "/VolumeDriver.Mount",
            json!({ "Name": "known", "ID": "abc" }),
            json!({ "Err": "", "Mountpoint": "/mnt/known" }),
        ),
        (
            "/VolumeDriver.Unmount",
            json!({ "Name": "known", "ID": "abc" }),
            json!({ "Err": "" }),
        ),
        (
            "/VolumeDriver.Unmount",
            json!({ "Name": "known" }),
            json!({ "Err": "" }),
        ),
        (
            "/VolumeDriver.Path",
            json!({ "Name": "known" }),
            json!({ "Err": "", "Mountpoint": "/mnt/known" }),
        ),
        (
            "/VolumeDriver.Get",
            json!({ "Name": "known" }),
            json!({ "Err": "", "Volume": { "Name": "known", "Mountpoint": "", "Status": { "dataset_id": "d1" } } }),
        ),
        (
            "/VolumeDriver.List",
            json!({}),
            json!({ "Err": "", "Volumes": [{ "Name": "known", "Mountpoint": "/mnt/known" }] }),
        ),
    ];
    for (path, body, expected) in cases {
        let (status, answer) = docker.raw("POST", path, body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(answer, expected, "{path}");
    }
    let calls = server.recorder.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            "create v {\"size\": \"1G\"}",
            "create v {}",
            "create v {}",
            "remove v",
            "mount known abc",
            "unmount known abc",
            "unmount known ",
        ]
    );
}

#[tokio::test]
async fn driver_errors_are_200_with_err_and_name_the_volume() {
    let server = start().await;
    for call in ["Mount", "Path", "Get"] {
        let answer = server
            .docker
            .call(call, json!({ "Name": "other", "ID": "x" }))
            .await;
        let err = answer["Err"].as_str().unwrap();
        assert!(
            err.starts_with("Could not find volume with given name."),
            "{call}: {err}"
        );
        assert!(err.contains("\"other\""), "{call}: {err}");
        assert!(
            answer.get("Mountpoint").is_none(),
            "{call}: no empty Mountpoint with an error"
        );
    }
    let answer = server.docker.call("Create", json!({ "Name": "" })).await;
    assert!(answer["Err"].as_str().unwrap().contains("empty"));
    let answer = server
        .docker
        .call("Create", json!({ "Name": "v", "Opts": { "size": ["1G"] } }))
        .await;
    assert!(
        answer["Err"].as_str().unwrap().contains("must be strings"),
        "{answer}"
    );
}

#[tokio::test]
async fn decoding_is_lenient_where_the_engine_needs_it() {
    let server = start().await;
    let docker = &server.docker;
    // Unknown fields are ignored; numbers as option values are taken as text.
    let (status, answer) = docker
        .raw(
            "POST",
            "/VolumeDriver.Create",
            json!({ "Name": "v", "Opts": { "size": 1073741824 }, "Future": true }).to_string(),
        )
        .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({ "Err": "" })));
    // An empty body is `{}` for List and Capabilities.
    let (status, answer) = docker.raw("POST", "/VolumeDriver.List", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["Err"], json!(""));
    let (status, _) = docker.raw("POST", "/VolumeDriver.Capabilities", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server.recorder.calls.lock().unwrap()[0],
        "create v {\"size\": \"1073741824\"}"
    );
}

#[tokio::test]
async fn misuse_gets_json_errors() {
    let server = start().await;
    let docker = &server.docker;
    let (status, answer) = docker.raw("POST", "/VolumeDriver.Nonsense", "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(answer["Err"]
        .as_str()
        .unwrap()
        .contains("/VolumeDriver.Nonsense"));
    let (status, answer) = docker.raw("GET", "/VolumeDriver.Path", "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(answer["Err"].as_str().unwrap().contains("POST"));
    let (status, answer) = docker.raw("POST", "/VolumeDriver.Mount", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["Err"]
        .as_str()
        .unwrap()
        .contains("invalid request body"));
    let (status, answer) = docker
        .raw("POST", "/VolumeDriver.Mount", "{\"ID\":\"x\"}")
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a Mount without Name: {answer}"
    );
    assert!(answer["Err"].as_str().unwrap().contains("Name"));
    let (status, _) = docker
        .raw("POST", "/VolumeDriver.Get", "{\"Name\": 5}")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let huge = format!("{{\"Name\":\"{}\"}}", "x".repeat(10 * 1024 * 1024));
    let (status, answer) = docker.raw("POST", "/VolumeDriver.Create", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer["Err"].as_str().unwrap().contains("larger than"));
    assert!(
        server.recorder.calls.lock().unwrap().is_empty(),
        "no driver call for misuse"
    );
    // Still serving afterwards.
    let (status, _) = docker.raw("POST", "/VolumeDriver.Capabilities", "{}").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn probe_connections_and_half_requests_are_tolerated() {
    let server = start().await;
    // The engine's start-up probe: connect, close, no request.
    for _ in 0..3 {
        drop(UnixStream::connect(&server.socket).await.unwrap());
    }
    // A client that sends half a request and vanishes.
    let mut half = UnixStream::connect(&server.socket).await.unwrap();
    half.write_all(b"POST /VolumeDriver.List HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    drop(half);
    let (status, _) = server.docker.raw("POST", "/VolumeDriver.List", "{}").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn slow_calls_do_not_block_others_and_socket_is_private() {
    let server = start().await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&server.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode");
    let slow_docker = server.docker.clone();
    let slow = tokio::spawn(async move {
        slow_docker
            .call("Mount", json!({ "Name": "slow", "ID": "1" }))
            .await
    });
    // These complete while the slow Mount is still blocked; served one at a time, they would hang.
    tokio::time::timeout(Duration::from_secs(10), async {
        for _ in 0..20 {
            server.docker.call("Get", json!({ "Name": "known" })).await;
        }
    })
    .await
    .expect("other calls are served while a Mount waits");
    assert!(!slow.is_finished());
    server.recorder.release_slow.notify_one();
    assert_eq!(slow.await.unwrap()["Mountpoint"], json!("/mnt/slow"));
}

#[tokio::test]
async fn stop_removes_the_socket_and_a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("flocker.sock");
    std::fs::write(&socket, "stale").unwrap();
    let listener = server::bind(&socket).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = protocol::router(Arc::new(Recorder::default()));
    let task = tokio::spawn(server::serve(listener, socket.clone(), app, async move {
        let _ = rx.await;
    }));
    let docker = DockerClient::new(&socket);
    assert_eq!(
        docker.raw("POST", "/VolumeDriver.List", "{}").await.0,
        StatusCode::OK
    );
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops within 5 s")
        .unwrap()
        .unwrap();
    assert!(!socket.exists(), "socket file removed on stop");
}

#[tokio::test]
async fn a_second_instance_does_not_take_a_live_socket() {
    let server = start().await;
    let err = server::bind(&server.socket).expect_err("the socket is served");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "another plugin instance is already serving on SOCKET={}",
            server.socket.display()
        )) && text.contains("stop it first"),
        "{text}"
    );
    // The first instance keeps its socket file and its callers.
    let (status, answer) = server.docker.raw("POST", "/VolumeDriver.List", "{}").await;
    assert_eq!((status, &answer["Err"]), (StatusCode::OK, &json!("")));
}

#[tokio::test]
async fn a_socket_left_by_a_crash_is_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("flocker.sock");
    // Bound, then closed without removing the file: what a killed instance leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(std::fs::metadata(&socket).unwrap().file_type().is_socket());
    let listener = server::bind(&socket).expect("nobody listens: replaced");
    let app = protocol::router(Arc::new(Recorder::default()));
    tokio::spawn(server::serve(
        listener,
        socket.clone(),
        app,
        std::future::pending(),
    ));
    let (status, _) = DockerClient::new(&socket)
        .raw("POST", "/VolumeDriver.List", "{}")
        .await;
    assert_eq!(status, StatusCode::OK);
}
