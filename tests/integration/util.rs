//! The test harness: a certificate set, an emulated control service with its agent, plugins bound to
//! temporary sockets, and a typed client for the Docker plugin protocol (STYLE.md 8.8).
//!
//! Everything lives under one temporary directory. Mounts are real; run the suite inside a private
//! mount namespace (`make test` does) so nothing can leak to the host even if a test panics.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flocker_docker_plugin::config::MountMode;
use flocker_docker_plugin::driver::{DriverSettings, FlockerDriver, StateFile};
use flocker_docker_plugin::emulator::{self, Convergence, Emulator};
use flocker_docker_plugin::identity::{self, Identity};
use flocker_docker_plugin::size::Size;
use flocker_docker_plugin::{certs, flocker, protocol, server};
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::client::legacy::Client as HyperClient;
use hyperlocal::{UnixClientExt, UnixConnector, Uri};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// True when the test may run; privileged tests never skip under `CI=true` (STYLE.md 8.8).
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root (real mounts) and CI=true forbids skipping it");
    }
    eprintln!("SKIPPED {test}: needs root for real mounts");
    false
}

/// Generates a cluster's certificates in `dir` (CA, control service with SANs localhost and 127.0.0.1,
/// user `plugin`).
pub fn make_certs(dir: &Path) {
    certs::generate(dir, &certs::CertOptions::default()).expect("generate certificates");
}

/// One emulated node: its agent's mount root and its plugin's directories.
#[derive(Debug, Clone)]
pub struct NodeDirs {
    /// The node's Flocker UUID.
    pub uuid: Uuid,
    /// The agent's mount root (also the plugin's `FLOCKER_ROOT`).
    pub root: PathBuf,
    /// The plugin's propagated mount.
    pub propagated: PathBuf,
    /// The plugin's state directory.
    pub state_dir: PathBuf,
    /// The plugin's socket.
    pub socket: PathBuf,
}

/// A control-service emulator with `n` nodes and their directories.
pub struct Cluster {
    /// Root of every file the test makes.
    pub dir: TempDir,
    /// The certificates directory.
    pub certs: PathBuf,
    /// The emulator.
    pub emulator: Emulator,
    /// Per-node directories.
    pub nodes: Vec<NodeDirs>,
}

impl Cluster {
    /// Starts an emulator with `nodes` nodes.
    pub async fn start(nodes: usize, convergence: Convergence) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("fdp-test-")
            .tempdir()
            .expect("temp dir");
        let certs = dir.path().join("certs");
        make_certs(&certs);
        let nodes: Vec<NodeDirs> = (0..nodes)
            .map(|i| {
                let node = dir.path().join(format!("node{i}"));
                NodeDirs {
                    uuid: Uuid::new_v4(),
                    root: node.join("flocker"),
                    propagated: node.join("propagated"),
                    state_dir: node.join("state"),
                    socket: node.join("flocker.sock"),
                }
            })
            .collect();
        let emulator = Emulator::start(emulator::Config {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            certs_dir: certs.clone(),
            data_dir: dir.path().join("emulator"),
            nodes: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| emulator::Node {
                    uuid: n.uuid,
                    era: Uuid::new_v4(),
                    host: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + i as u8)),
                    mount_root: n.root.clone(),
                })
                .collect(),
            convergence,
            // As on a host where the agent's root propagates: the plugin verifies it (SPEC §9.3).
            share_mount_roots: true,
        })
        .expect("start emulator");
        Cluster {
            dir,
            certs,
            emulator,
            nodes,
        }
    }

    /// A control-service client like the plugin's.
    pub fn client(&self) -> flocker::Client {
        flocker::Client::new(&self.emulator.url().parse().unwrap(), &self.certs).expect("client")
    }

    /// Default plugin settings for node `i`.
    pub fn settings(&self, i: usize) -> DriverSettings {
        let node = &self.nodes[i];
        DriverSettings {
            agent_mount_root: node.root.clone(),
            flocker_root: node.root.clone(),
            mount_mode: MountMode::Propagated(node.propagated.clone()),
            default_size: Size::from_bytes(1 << 30),
            default_profile: None,
            mount_timeout: Duration::from_secs(20),
            state_file: StateFile::in_dir(&node.state_dir),
            // Short, so tests see the end of it; the daemon waits 2 minutes.
            restart_grace: Duration::from_millis(500),
            report_age: flocker_docker_plugin::driver::REPORT_AGE,
        }
    }

    /// Starts the plugin for node `i` with its default settings.
    pub async fn plugin(&self, i: usize) -> Plugin {
        self.plugin_with(i, self.settings(i)).await
    }

    /// Starts the plugin for node `i` with `settings` and a control-service client whose requests
    /// time out after `timeout` (faults that answer late).
    pub async fn plugin_with_timeout(
        &self,
        i: usize,
        settings: DriverSettings,
        timeout: Duration,
    ) -> Plugin {
        let client = flocker::Client::with_timeout(
            &self.emulator.url().parse().unwrap(),
            &self.certs,
            timeout,
        )
        .expect("client");
        let (_tx, identity) = watch::channel(Identity::Known(flocker::NodeId(self.nodes[i].uuid)));
        let mut plugin = Plugin::start(client, settings, identity, &self.nodes[i].socket).await;
        plugin.reconciled().await;
        plugin
    }

    /// Starts the plugin for node `i` with `settings`, knowing its node UUID.
    pub async fn plugin_with(&self, i: usize, settings: DriverSettings) -> Plugin {
        let identity = identity::discover(
            self.client(),
            identity::Sources {
                node_uuid: Some(self.nodes[i].uuid),
                network_identity: None,
            },
            tokio_util::sync::CancellationToken::new(),
        );
        let mut plugin =
            Plugin::start(self.client(), settings, identity, &self.nodes[i].socket).await;
        plugin.reconciled().await;
        plugin
    }

    /// Unmounts everything the agent mounted; call at the end of every test.
    pub async fn stop(self) {
        self.emulator.shutdown().await.expect("emulator shutdown");
    }
}

/// A plugin daemon serving on a temporary socket, in this process.
pub struct Plugin {
    /// Typed protocol client on its socket.
    pub docker: DockerClient,
    /// The driver behind the socket, for tests that look inside or stop it.
    pub driver: FlockerDriver,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    reconcile: Option<JoinHandle<()>>,
}

impl Plugin {
    /// Binds `socket` first, then serves, as the daemon does.
    pub async fn start(
        client: flocker::Client,
        settings: DriverSettings,
        identity: watch::Receiver<Identity>,
        socket: &Path,
    ) -> Plugin {
        let listener = server::bind(socket).expect("bind plugin socket");
        let driver = FlockerDriver::new(client, settings, identity);
        let reconcile = driver.spawn_reconcile();
        let app = protocol::router(Arc::new(driver.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(
            listener,
            socket.to_path_buf(),
            app,
            async move {
                let _ = stopped.await;
            },
        ));
        Plugin {
            docker: DockerClient::new(socket),
            driver,
            stop: Some(stop),
            task: Some(task),
            reconcile: Some(reconcile),
        }
    }

    /// Waits until the start-up reconciliation (which needs the node identity) has finished.
    pub async fn reconciled(&mut self) {
        if let Some(task) = self.reconcile.take() {
            task.await.expect("reconcile task");
        }
    }

    /// Stops serving as on SIGTERM and waits until the socket is gone and the driver's tasks ended.
    pub async fn stop(mut self) {
        self.driver.stop_background();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
        self.driver.shutdown(Duration::from_secs(5)).await;
        self.reconcile.take();
    }

    /// Stops as a crash (SIGKILL) leaves it: serving and background work end, but nothing is marked
    /// as a clean stop would (volumes in use are not held through it).
    pub async fn crash(mut self) {
        self.driver.stop_background();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
        self.driver.stop_tasks(Duration::from_secs(5)).await;
        self.reconcile.take();
    }
}

/// A Docker-engine-like client of the plugin protocol over the Unix socket.
#[derive(Clone)]
pub struct DockerClient {
    socket: PathBuf,
    http: HyperClient<UnixConnector, Full<Bytes>>,
}

impl DockerClient {
    /// A client for `socket`.
    pub fn new(socket: &Path) -> DockerClient {
        DockerClient {
            socket: socket.to_path_buf(),
            http: HyperClient::unix(),
        }
    }

    /// Sends `body` to `path` with `method`, as the engine does (no Content-Type); returns status and
    /// the decoded JSON body.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> (StatusCode, Value) {
        self.try_raw(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("plugin request: {e}"))
    }

    /// Like [`DockerClient::raw`], but a connection the plugin dropped (it was killed) is an error.
    pub async fn try_raw(
        &self,
        method: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<(StatusCode, Value), String> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(Uri::new(&self.socket, path))
            .header("Accept", "application/vnd.docker.plugins.v1.2+json")
            .body(Full::new(body.into()))
            .unwrap();
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{path}: answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Ok((status, value))
    }

    /// A call whose plugin may be killed meanwhile: `None` if the connection was dropped.
    pub async fn call_or_hangup(&self, call: &str, body: Value) -> Option<Value> {
        self.try_raw("POST", &format!("/VolumeDriver.{call}"), body.to_string())
            .await
            .ok()
            .map(|(_, value)| value)
    }

    /// POSTs `body` to `/VolumeDriver.<call>` and returns the JSON answer (HTTP 200 expected).
    pub async fn call(&self, call: &str, body: Value) -> Value {
        let (status, value) = self
            .raw("POST", &format!("/VolumeDriver.{call}"), body.to_string())
            .await;
        assert_eq!(status, StatusCode::OK, "{call}: {value}");
        value
    }

    fn outcome(value: &Value) -> Result<(), String> {
        match value["Err"].as_str() {
            Some("") => Ok(()),
            Some(err) => Err(err.to_string()),
            None => panic!("answer without Err: {value}"),
        }
    }

    /// Create with options.
    pub async fn create(&self, name: &str, opts: Value) -> Result<(), String> {
        Self::outcome(
            &self
                .call("Create", json!({ "Name": name, "Opts": opts }))
                .await,
        )
    }

    /// Mount; returns the mountpoint.
    pub async fn mount(&self, name: &str, id: &str) -> Result<PathBuf, String> {
        let value = self.call("Mount", json!({ "Name": name, "ID": id })).await;
        Self::outcome(&value)?;
        let mountpoint = value["Mountpoint"].as_str().expect("Mountpoint");
        assert!(
            !mountpoint.is_empty(),
            "a successful Mount must name a mountpoint"
        );
        Ok(PathBuf::from(mountpoint))
    }

    /// Unmount.
    pub async fn unmount(&self, name: &str, id: &str) -> Result<(), String> {
        Self::outcome(
            &self
                .call("Unmount", json!({ "Name": name, "ID": id }))
                .await,
        )
    }

    /// Remove.
    pub async fn remove(&self, name: &str) -> Result<(), String> {
        Self::outcome(&self.call("Remove", json!({ "Name": name })).await)
    }

    /// Path.
    pub async fn path(&self, name: &str) -> Result<PathBuf, String> {
        let value = self.call("Path", json!({ "Name": name })).await;
        Self::outcome(&value)?;
        Ok(PathBuf::from(
            value["Mountpoint"].as_str().expect("Mountpoint"),
        ))
    }

    /// Get; returns the `Volume` object.
    pub async fn get(&self, name: &str) -> Result<Value, String> {
        let value = self.call("Get", json!({ "Name": name })).await;
        Self::outcome(&value)?;
        Ok(value["Volume"].clone())
    }

    /// List; returns the `Volumes` array.
    pub async fn list(&self) -> Result<Vec<Value>, String> {
        let value = self.call("List", json!({})).await;
        Self::outcome(&value)?;
        Ok(value["Volumes"].as_array().expect("Volumes").clone())
    }
}

/// Live (not deleted) datasets in the emulator's configuration named `name`.
pub fn live_datasets(emulator: &Emulator, name: &str) -> Vec<Value> {
    emulator
        .configured_datasets()
        .into_iter()
        .filter(|d| d["deleted"] != json!(true) && d["metadata"]["name"] == json!(name))
        .collect()
}

/// The dataset id of the single live dataset named `name`.
pub fn dataset_id(emulator: &Emulator, name: &str) -> String {
    let live = live_datasets(emulator, name);
    assert_eq!(
        live.len(),
        1,
        "exactly one live dataset named {name}: {live:?}"
    );
    live[0]["dataset_id"].as_str().unwrap().to_string()
}

/// `mount --bind D D && mount --make-shared D`: a directory whose later mounts propagate.
pub fn make_shared(dir: &Path) {
    use nix::mount::{mount, MsFlags};
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).expect("bind onto itself");
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .expect("make shared");
}

/// A view of `source` at `view` as a managed plugin would get it: `rbind` and then `rslave`
/// (propagating) or `rprivate` (a frozen copy).
pub fn bind_view(source: &Path, view: &Path, propagating: bool) {
    use nix::mount::{mount, MsFlags};
    std::fs::create_dir_all(view).unwrap();
    mount(
        Some(source),
        view,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .expect("rbind");
    let flags = if propagating {
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    } else {
        MsFlags::MS_PRIVATE | MsFlags::MS_REC
    };
    mount(None::<&str>, view, None::<&str>, flags, None::<&str>).expect("set propagation");
}

/// Whether `path` is a mount point in this process's namespace.
pub fn is_mounted(path: &Path) -> bool {
    flocker_docker_plugin::mount::is_mount_point(path).unwrap()
}

/// Waits (bounded) until `condition` holds; for events driven by another task, never for time itself.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// The real `flocker-docker-plugin` binary serving node `i` of a [`Cluster`], for faults only a
/// separate process shows: `kill -9` at any point, and a restart that starts from the files alone.
pub struct Daemon {
    child: std::process::Child,
    env: Vec<(String, std::ffi::OsString)>,
    log: PathBuf,
    /// Typed protocol client on its socket.
    pub docker: DockerClient,
    /// Its socket.
    pub socket: PathBuf,
}

impl Cluster {
    /// Starts the daemon binary for node `i` (propagated mode, its node UUID given), with `extra`
    /// settings on top, and waits until its start-up recovery is done.
    pub async fn daemon(&self, i: usize, extra: &[(&str, &str)]) -> Daemon {
        let node = &self.nodes[i];
        let mut env: Vec<(String, std::ffi::OsString)> = vec![
            ("CONTROL_URL".into(), self.emulator.url().into()),
            ("CERTS_DIR".into(), self.certs.clone().into()),
            ("SOCKET".into(), node.socket.clone().into()),
            ("STATE_DIR".into(), node.state_dir.clone().into()),
            ("PROPAGATED_MOUNT".into(), node.propagated.clone().into()),
            ("AGENT_MOUNT_ROOT".into(), node.root.clone().into()),
            ("FLOCKER_ROOT".into(), node.root.clone().into()),
            ("NODE_UUID".into(), node.uuid.to_string().into()),
            ("CONFIG_FILE".into(), "".into()),
            ("LOG_LEVEL".into(), "info".into()),
        ];
        for (key, value) in extra {
            env.push((key.to_string(), value.into()));
        }
        let log = self.dir.path().join(format!("daemon{i}.log"));
        Daemon::spawn(env, log, &node.socket).await
    }
}

impl Daemon {
    async fn spawn(env: Vec<(String, std::ffi::OsString)>, log: PathBuf, socket: &Path) -> Daemon {
        let _ = std::fs::remove_file(socket);
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("daemon log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_flocker-docker-plugin"))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .stderr(output)
            .spawn()
            .expect("start the daemon");
        let daemon = Daemon {
            child,
            env,
            log,
            docker: DockerClient::new(socket),
            socket: socket.to_path_buf(),
        };
        daemon.wait_for_log("start-up recovery done").await;
        daemon
    }

    /// Waits (bounded) until the daemon has logged `text` `times` times in all.
    pub async fn wait_for_log_count(&self, text: &str, times: usize) {
        for _ in 0..1000 {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.matches(text).count() >= times {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the daemon never logged {text:?}:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    async fn wait_for_log(&self, text: &str) {
        let already = std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches(text)
            .count();
        self.wait_for_log_count(text, already + 1).await;
    }

    /// `kill -9`: nothing is finished or undone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same daemon again (after [`Daemon::kill9`] or [`Daemon::terminate`]) and waits
    /// for its recovery.
    pub async fn restart(mut self) -> Daemon {
        self.kill9();
        let env = std::mem::take(&mut self.env);
        Daemon::spawn(env, self.log.clone(), &self.socket).await
    }

    /// SIGTERM; returns the exit status and how long the exit took. Blocks: call it from a
    /// multi-threaded runtime, so the emulator keeps answering meanwhile.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "still running 10 s after SIGTERM"
            );
            tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(10)));
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
