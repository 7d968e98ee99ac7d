//! A local Flocker control service: REST API v1 over mutual TLS, plus an agent that turns the
//! configuration into real bind mounts.
//!
//! [`Emulator::start`] returns a handle that tests drive: [`Emulator::converge`] applies pending
//! configuration to state when [`Convergence::Manual`], faults and delays are injected as data,
//! and requests are counted per endpoint (STYLE.md §8.7). It does not persist its model across
//! restarts and does not implement the deprecated container API.
//!
//! Faults a test can inject:
//! - per request: [`Emulator::fail_next`] (an error answer, nothing applied),
//!   [`Emulator::delay`] (wait before handling: not applied yet), [`Emulator::delay_answer`]
//!   (handled and applied, answer held back) and [`Emulator::drop_answer_next`] (handled and
//!   applied, then the connection breaks before the answer is complete);
//! - transport: [`Emulator::stop_listening`] / [`Emulator::start_listening`] and
//!   [`Emulator::set_tls_fault`] (a server certificate from a foreign CA);
//! - agent: [`Emulator::pause_agent`] (background convergence stops) and
//!   [`Emulator::kill_node`] / [`Emulator::revive_node`] (a machine dies: it leaves the node list
//!   and state, its agent stops, its mounts stay until a move force-detaches them).
//!
//! Files: `model` (pure state), `schema` (request validation), `api` (routes), `tls` (accept
//! loop), `agent` (mounts), `faults` (injection and counting), `lag` (background convergence), `error`.

#![warn(missing_docs)]

mod agent;
mod api;
mod error;
mod faults;
mod lag;
mod model;
mod schema;
mod tls;

use std::net::{IpAddr, SocketAddr, TcpListener as StdTcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error, info};
use uuid::Uuid;

// Mount-table helpers, re-exported so tests can check mounts the same way the agent does.
pub use api::{FLOCKER_VERSION, IF_MATCHES_HEADER, TAG_HEADER};
pub use error::Error;
pub use faults::RouteStats;

use agent::Agent;
use faults::Faults;
use model::{Action, Model, NodeInfo, Phase};
use tls::ServerCerts;

/// A node whose dataset agent this emulator runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Node identity.
    pub uuid: Uuid,
    /// Boot id reported for `GET /v1/state/nodes/by_era/<era>`.
    pub era: Uuid,
    /// Address reported by `GET /v1/state/nodes`.
    pub host: IpAddr,
    /// Datasets manifest on this node are bind-mounted at `<mount_root>/<dataset_id>`; state
    /// reports the canonicalized root (symlinks resolved), as `/proc/self/mountinfo` does.
    pub mount_root: PathBuf,
}

/// How state follows configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convergence {
    /// Only [`Emulator::converge`] changes state (for tests: no sleeps).
    Manual,
    /// State follows each change after about this long: unmounts at half, mounts at the end.
    After(Duration),
}

/// Everything [`Emulator::start`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// Directory with `cluster.crt` and `control-service.{crt,key}` (see [`crate::certs`]).
    pub certs_dir: PathBuf,
    /// Backing storage lives in `<data_dir>/backing/<dataset_id>`.
    pub data_dir: PathBuf,
    /// Nodes served by the built-in agent; each must have its own `mount_root`.
    pub nodes: Vec<Node>,
    /// How state follows configuration.
    pub convergence: Convergence,
    /// Make every mount root a shared mount point (needed for Docker's rslave propagation).
    pub share_mount_roots: bool,
}

/// State shared by the routes, the agent and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    model: Mutex<Model>,
    faults: Faults,
    /// Held for whole convergence passes (never across an await), so passes do not interleave.
    agent: Mutex<Agent>,
    /// While set, background passes (`Convergence::After`, lease expiry) change nothing.
    agent_paused: AtomicBool,
    /// Set with `Convergence::After`: each configuration change is sent to the lag task.
    changes: Option<mpsc::UnboundedSender<()>>,
    /// The two listings as last serialized, by model version: with 10,000 datasets a listing is
    /// megabytes, and many nodes read it between two changes.
    listings: Mutex<Listings>,
}

/// Serialized listings and the model versions they show.
#[derive(Debug, Default)]
struct Listings {
    configuration: Option<(u64, Bytes)>,
    state: Option<((u64, u64), Bytes)>,
}

impl Shared {
    /// The model, with expired leases already removed (upstream expires them every second).
    fn model(&self) -> MutexGuard<'_, Model> {
        // Model methods never panic halfway through an update, so a poisoned lock is still consistent.
        let mut model = self.model.lock().unwrap_or_else(|p| p.into_inner());
        if model.expire_leases(Instant::now()) {
            self.config_changed();
        }
        model
    }

    /// `GET /v1/configuration/datasets`'s body and the current tag, serialized once per version.
    fn configuration_listing(&self) -> (Bytes, String) {
        let model = self.model();
        let version = model.datasets_version();
        let tag = model.tag();
        let mut listings = self.listings.lock().unwrap_or_else(|p| p.into_inner());
        match &listings.configuration {
            Some((v, body)) if *v == version => (body.clone(), tag),
            _ => {
                let body: Vec<Value> = model.datasets().iter().map(|d| d.to_json()).collect();
                let body = Bytes::from(Value::Array(body).to_string());
                listings.configuration = Some((version, body.clone()));
                (body, tag)
            }
        }
    }

    /// `GET /v1/state/datasets`'s body, serialized once per version.
    fn state_listing(&self) -> Bytes {
        let model = self.model();
        let version = model.state_version();
        let mut listings = self.listings.lock().unwrap_or_else(|p| p.into_inner());
        match &listings.state {
            Some((v, body)) if *v == version => body.clone(),
            _ => {
                let body = Bytes::from(Value::Array(model.state_json()).to_string());
                listings.state = Some((version, body.clone()));
                body
            }
        }
    }

    /// Tells the lag task (if any) that configuration changed.
    fn config_changed(&self) {
        if let Some(tx) = &self.changes {
            let _ = tx.send(());
        }
    }

    /// The agent; like the model, it stays consistent if a holder panicked.
    fn agent(&self) -> MutexGuard<'_, Agent> {
        self.agent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies the plan for `phase` to completion, paused or not; stops at the first failed action.
    ///
    /// Mount syscalls are quick, so this runs inline on the async worker.
    fn converge(&self, phase: Phase) -> Result<(), Error> {
        let mut agent = self.agent();
        self.converge_with(&mut agent, phase)
    }

    /// Like [`Shared::converge`], but does nothing while the agent is paused.
    fn converge_in_background(&self, phase: Phase) -> Result<(), Error> {
        let mut agent = self.agent();
        // Checked under the agent lock, so `pause_agent` can wait out a pass already running.
        if self.agent_paused.load(Ordering::SeqCst) {
            debug!(?phase, "agent paused: background pass skipped");
            return Ok(());
        }
        self.converge_with(&mut agent, phase)
    }

    fn converge_with(&self, agent: &mut Agent, phase: Phase) -> Result<(), Error> {
        let actions = self.model().plan(&agent.local_nodes(), phase);
        for action in actions {
            let path = agent.apply(&action)?;
            self.model().record(&action, path);
        }
        Ok(())
    }

    /// Unmounts everything the agent mounted and records that in the model.
    fn release_all(&self, agent: &mut Agent) -> Result<(), Error> {
        let result = agent.release_all();
        let mut model = self.model();
        let mounts: Vec<(Uuid, Uuid)> = model
            .observed()
            .iter()
            .flat_map(|(d, o)| o.mounts.keys().map(move |n| (*d, *n)))
            .collect();
        for (dataset, node) in mounts {
            model.record(&Action::Unmount { dataset, node }, None);
        }
        result
    }
}

/// A running emulator. Dropping it stops serving and unmounts what its agent mounted.
#[derive(Debug)]
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: Arc<ServerCerts>,
    share_mount_roots: bool,
    server: Mutex<Option<Server>>,
    background: Vec<JoinHandle<()>>,
}

/// The accept loop's task and its channel for closing every open connection.
#[derive(Debug)]
struct Server {
    task: JoinHandle<()>,
    close_all: mpsc::UnboundedSender<tls::CloseAll>,
}

impl Server {
    fn spawn(
        listener: tokio::net::TcpListener,
        tls: Arc<ServerCerts>,
        shared: Arc<Shared>,
    ) -> Self {
        let (close_all, requests) = mpsc::unbounded_channel();
        let task = tokio::spawn(tls::serve(listener, tls, api::router(shared), requests));
        Server { task, close_all }
    }
}

impl Emulator {
    /// Loads certificates, prepares the nodes' mount roots, binds and starts serving.
    ///
    /// Must be called inside a Tokio runtime. The socket is bound before this returns, so
    /// clients may connect immediately.
    pub fn start(config: Config) -> Result<Emulator, Error> {
        let tls = Arc::new(ServerCerts::load(
            &config.certs_dir,
            &config.data_dir.join("foreign-ca"),
        )?);
        let mut agent = Agent::new(&config.data_dir)?;
        let mut model = Model::new(rand::random());
        for node in &config.nodes {
            agent.add_node(node, config.share_mount_roots)?;
            model.add_node(node_info(node));
        }
        let (changes, receiver) = match config.convergence {
            Convergence::Manual => (None, None),
            Convergence::After(_) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
        };
        let shared = Arc::new(Shared {
            model: Mutex::new(model),
            faults: Faults::default(),
            agent: Mutex::new(agent),
            agent_paused: AtomicBool::new(false),
            changes,
            listings: Mutex::new(Listings::default()),
        });
        let mut background = Vec::new();
        if let (Convergence::After(lag), Some(rx)) = (config.convergence, receiver) {
            background.push(tokio::spawn(lag::follow_changes(
                Arc::downgrade(&shared),
                rx,
                lag,
            )));
            background.push(tokio::spawn(lag::expire_leases(Arc::downgrade(&shared))));
        }
        let (listener, addr) = bind(config.listen)?;
        let server = Server::spawn(listener, tls.clone(), shared.clone());
        Ok(Emulator {
            shared,
            addr,
            tls,
            share_mount_roots: config.share_mount_roots,
            server: Mutex::new(Some(server)),
            background,
        })
    }

    /// The bound address (with the real port when `listen` used port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://<addr>`, the base URL without `/v1`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Applies all pending configuration to state (moves and deletes too, respecting leases).
    ///
    /// Runs even while the agent is paused ([`Emulator::pause_agent`]); acts on dead nodes only
    /// to force-detach ([`Emulator::kill_node`]). Failures are logged; use
    /// [`Emulator::try_converge`] to get them.
    pub async fn converge(&self) {
        if let Err(e) = self.try_converge().await {
            error!(error = %e, "convergence failed");
        }
    }

    /// Like [`Emulator::converge`], returning the first failure.
    pub async fn try_converge(&self) -> Result<(), Error> {
        self.shared.converge(Phase::Full)
    }

    /// The next `method` request to exactly `path` gets `status` and `{"description": "injected fault"}`.
    pub fn fail_next(&self, method: &str, path: &str, status: u16) {
        self.shared.faults.fail_next(method, path, status);
    }

    /// The next `method` request to exactly `path` is handled normally (its change IS applied),
    /// then the connection breaks before a complete answer arrives: the client sees a transport
    /// error. Calls queue up like [`Emulator::fail_next`]; such requests are counted as usual.
    pub fn drop_answer_next(&self, method: &str, path: &str) {
        self.shared.faults.drop_answer_next(method, path);
    }

    /// Delays every request to exactly `path` by `d` *before* handling it ("not applied yet"),
    /// until called again with `Duration::ZERO`.
    ///
    /// A client that gives up during the delay closes the connection and the request is never
    /// applied. Compare [`Emulator::delay_answer`].
    pub fn delay(&self, path: &str, d: Duration) {
        self.shared.faults.delay(path, d);
    }

    /// Handles every request to exactly `path` at once ("applied"), then holds its answer back
    /// for `d`, until called again with `Duration::ZERO`.
    ///
    /// A client whose timeout is shorter than `d` sees a timeout although its change took
    /// effect. Compare [`Emulator::delay`].
    pub fn delay_answer(&self, path: &str, d: Duration) {
        self.shared.faults.delay_answer(path, d);
    }

    /// The next `method` request to `path` is applied `d` after it arrived, even if the
    /// client gave up meanwhile (a slow control service applies queued requests late).
    pub fn apply_late_next(&self, method: &str, path: &str, d: Duration) {
        self.shared.faults.apply_late_next(method, path, d);
    }

    /// Requests received for `method` and exactly `path` (e.g. `/v1/state/datasets`).
    pub fn request_count(&self, method: &str, path: &str) -> usize {
        self.shared.faults.request_count(method, path)
    }

    /// All requests received since the counts were reset: the total and a readable list
    /// (`2 × GET /v1/configuration/datasets, …`), for request-budget checks.
    pub fn requests_received(&self) -> (usize, String) {
        let counts = self.shared.faults.request_counts();
        let total = counts.iter().map(|(_, n)| n).sum();
        let detail = counts
            .iter()
            .map(|((method, path), n)| format!("{n} × {method} {path}"))
            .collect::<Vec<_>>()
            .join(", ");
        (total, detail)
    }

    /// Requests and answer bytes per (METHOD, route) since start (ids folded to `{id}`); never
    /// reset, so a process outside can take differences.
    pub fn route_stats(&self) -> Vec<((String, String), RouteStats)> {
        self.shared.faults.route_stats()
    }

    /// Creates one 1 GiB dataset per `(name, node)`, as the original plugin names them, then
    /// converges once; returns their ids. With `inert`, the agent only reports their mounts and
    /// never makes them (no backing, no bind mount): a big cluster whose datasets nothing here
    /// mounts. A plugin on this machine cannot mount an inert dataset (it is not a mount point).
    pub fn seed(&self, volumes: &[(String, Uuid)], inert: bool) -> Result<Vec<Uuid>, Error> {
        const SIZE: u64 = 1 << 30;
        let mut ids = Vec::with_capacity(volumes.len());
        {
            let mut agent = self.shared.agent();
            let mut model = self.shared.model();
            for (name, node) in volumes {
                let metadata = std::collections::BTreeMap::from([
                    ("name".to_string(), name.clone()),
                    ("maximum_size".to_string(), SIZE.to_string()),
                ]);
                let created = model
                    .create_dataset(None, *node, metadata, Some(SIZE))
                    .expect("a fresh id");
                if inert {
                    agent.mark_inert(created.dataset_id);
                }
                ids.push(created.dataset_id);
            }
        }
        self.shared.converge(Phase::Full)?;
        Ok(ids)
    }

    /// Sets all request counts back to zero.
    pub fn reset_counts(&self) {
        self.shared.faults.reset_counts();
    }

    /// The configuration as `GET /v1/configuration/datasets` returns it, deleted datasets included.
    pub fn configured_datasets(&self) -> Vec<Value> {
        self.shared
            .model()
            .datasets()
            .iter()
            .map(|d| d.to_json())
            .collect()
    }

    /// The state as `GET /v1/state/datasets` returns it.
    pub fn state_datasets(&self) -> Vec<Value> {
        self.shared.model().state_json()
    }

    /// The leases as `GET /v1/configuration/leases` returns them.
    pub fn leases(&self) -> Vec<Value> {
        let now = Instant::now();
        self.shared
            .model()
            .leases()
            .iter()
            .map(|l| l.to_json(now))
            .collect()
    }

    /// Registers another node (its agent "connects" now), e.g. so `by_era` answers 404 first.
    pub fn add_node(&self, node: Node) -> Result<(), Error> {
        self.shared
            .agent()
            .add_node(&node, self.share_mount_roots)?;
        self.shared.model().add_node(node_info(&node));
        self.shared.config_changed();
        Ok(())
    }

    /// Closes the listener and every open connection; the model is kept.
    pub async fn stop_listening(&self) {
        let server = self.server_slot().take();
        if let Some(server) = server {
            server.task.abort();
            // Wait until the task (and with it the listener and connections) is gone.
            let _ = server.task.await;
        }
    }

    /// Listens again on the same address after [`Emulator::stop_listening`].
    pub async fn start_listening(&self) -> Result<(), Error> {
        self.stop_listening().await;
        let (listener, _) = bind(self.addr)?;
        let server = Server::spawn(listener, self.tls.clone(), self.shared.clone());
        *self.server_slot() = Some(server);
        Ok(())
    }

    fn server_slot(&self) -> MutexGuard<'_, Option<Server>> {
        self.server.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// While `on`, new connections get a control-service certificate from a different, freshly
    /// generated CA (made with [`crate::certs`] in `<data_dir>/foreign-ca` on first use), so a
    /// client trusting the cluster CA fails the TLS handshake.
    ///
    /// Turning it on also closes every open connection (the listener stays open), so clients
    /// with pooled keep-alive connections must handshake again; such a client may see one
    /// transport error for a request it had already written on the closed connection.
    /// Turning it off lets new handshakes succeed again.
    pub async fn set_tls_fault(&self, on: bool) -> Result<(), Error> {
        self.tls.set_fault(on)?;
        info!(on, "TLS fault");
        if on {
            self.close_connections().await;
        }
        Ok(())
    }

    /// Aborts every open connection and waits until they are gone; does nothing when not listening.
    async fn close_connections(&self) {
        let close_all = self.server_slot().as_ref().map(|s| s.close_all.clone());
        let Some(close_all) = close_all else {
            return;
        };
        let (done, closed) = oneshot::channel();
        if close_all.send(done).is_ok() {
            let _ = closed.await;
        }
    }

    /// Pauses (`true`) or resumes the agent's background convergence.
    ///
    /// While paused, neither `Convergence::After` passes nor the passes that follow a lease's
    /// expiry change state; configuration and leases still change through the API. Pausing
    /// waits for a pass already running, so state is frozen when this returns. Resuming
    /// schedules a pass (after the lag) for what changed meanwhile. An explicit
    /// [`Emulator::converge`] still converges while paused: it is a deliberate test step.
    pub fn pause_agent(&self, paused: bool) {
        self.shared.agent_paused.store(paused, Ordering::SeqCst);
        if paused {
            drop(self.shared.agent());
        } else {
            self.shared.config_changed();
        }
        info!(paused, "agent");
    }

    /// Models the death of node `uuid`'s machine.
    ///
    /// The node leaves `GET /v1/state/nodes`, `by_era` for its era answers 404, and its
    /// datasets leave `GET /v1/state/datasets`. Its agent stops acting there (no new mounts, no
    /// backing for datasets configured there). Its bind mounts stay, but a dataset mounted there
    /// that the configuration puts on a live local node is force-detached (unmounted from the
    /// dead node's mount root) and mounted on the new primary at the next pass, unless the dead
    /// node holds its lease; then it stays until the lease is released through the API.
    /// Waits for a pass already running. Leases and configuration are untouched.
    pub fn kill_node(&self, uuid: Uuid) -> Result<(), Error> {
        let _pass = self.shared.agent();
        if !self.shared.model().kill_node(uuid) {
            return Err(Error::UnknownNode { uuid });
        }
        info!(%uuid, "node killed");
        self.shared.config_changed();
        Ok(())
    }

    /// Brings a node killed with [`Emulator::kill_node`] back, with the same era.
    ///
    /// It is listed and found by era again, state shows what is still mounted there, and its
    /// agent acts on it again from the next pass. Reviving a live node changes nothing.
    pub fn revive_node(&self, uuid: Uuid) -> Result<(), Error> {
        if !self.shared.model().revive_node(uuid) {
            return Err(Error::UnknownNode { uuid });
        }
        info!(%uuid, "node revived");
        self.shared.config_changed();
        Ok(())
    }

    /// The nodes that are registered and alive, in registration order.
    pub fn live_nodes(&self) -> Vec<Uuid> {
        self.shared.model().live_nodes().map(|n| n.uuid).collect()
    }

    /// Stops serving and background convergence, then unmounts everything the agent mounted.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.stop_listening().await;
        for task in &self.background {
            task.abort();
        }
        self.shared.release_all(&mut self.shared.agent())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(server) = self
            .server
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            server.task.abort();
        }
        for task in &self.background {
            task.abort();
        }
        // Best effort for tests that panic before `shutdown`: mounts must not outlive the handle.
        if let Err(e) = self.shared.release_all(&mut self.shared.agent()) {
            error!(error = %e, "unmounting on drop failed");
        }
    }
}

fn node_info(node: &Node) -> NodeInfo {
    NodeInfo {
        uuid: node.uuid,
        era: node.era,
        host: node.host,
    }
}

fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), Error> {
    let err = |source| Error::Bind { addr, source };
    // std bind keeps `start` synchronous; tokio sets nothing extra we need (SO_REUSEADDR is
    // std's default on Unix listeners), so restarts can re-bind the same port immediately.
    let std_listener = StdTcpListener::bind(addr).map_err(err)?;
    std_listener.set_nonblocking(true).map_err(err)?;
    let local = std_listener.local_addr().map_err(err)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(err)?;
    Ok((listener, local))
}
