//! `FlockerDriver`: Docker volume calls carried out with Flocker datasets, leases and local bind mounts.
//!
//! A volume is the live dataset whose metadata `name` equals the volume name. Mount takes this node's
//! lease first (so two nodes racing for a volume cannot both move it), moves the dataset here if
//! needed, waits for the agent, checks that the agent's mount really reaches the plugin, binds it
//! under the propagated mount and records the engine's mount ID durably; the last Unmount undoes that.
//! Calls for one volume are serialised by its lock, so concurrent Mounts share one move.
//!
//! The rules live in their own files: leases (`leases`), the state file (`store`), start-up recovery
//! (`recovery`), which path may be bound (`source`), which dataset a name means (`select`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::known::{self, Known};
use super::leases::Leases;
use super::locks::VolumeLocks;
use super::options::CreateRequest;
use super::reads::{Coalesced, Freshness};
use super::recovery::Unsettled;
use super::select::{self, by_name, known_volume, new_dataset, pick};
use super::source::{self, Refusal, VisibleError};
use super::store::{MountRecord, PendingMount, Released, Store};
use super::watcher::{Snapshot, StateWatcher};
use super::MountMode;
use super::{
    CreateOptions, Error, MountId, Result, StateFile, VolumeDriver, VolumeInfo, VolumeName,
};
use crate::blocking;
use crate::flocker::{self, Acquired, Configuration, DatasetConfig, DatasetId, NodeId};
use crate::identity::Identity;
use crate::mount;
use crate::size::Size;

/// Conditional create attempts on 412, as upstream (flocker-upstream.md §1.5: 20 attempts, 1 ms apart).
const CREATE_ATTEMPTS: usize = 20;

/// How old an answer Get, List and the first lookup of a Mount may reuse (SPEC §10): enough for the
/// several Gets the engine sends around one `docker run` to share one request.
pub const REPORT_AGE: Duration = Duration::from_secs(2);

/// How much longer than its own deadline a Mount's answer may take: the worker's timeout message,
/// which says what it waited for, should win over the bare one.
const ANSWER_GRACE: Duration = Duration::from_millis(500);

/// The driver's settings (built by the caller from its configuration).
#[derive(Debug, Clone)]
pub struct DriverSettings {
    /// The agent's mount root as reported in state paths.
    pub agent_mount_root: PathBuf,
    /// Where this process sees that root.
    pub flocker_root: PathBuf,
    /// Propagated or legacy.
    pub mount_mode: MountMode,
    /// Size when `-o size` is absent.
    pub default_size: Size,
    /// Profile when `-o profile` is absent.
    pub default_profile: Option<String>,
    /// Longest wait in one Mount call.
    pub mount_timeout: Duration,
    /// Where mounts and known volumes are kept.
    pub state_file: StateFile,
    /// How long a recorded mount whose bind the engine removed keeps its lease after a start
    /// ([`RESTART_GRACE`] in the daemon).
    pub restart_grace: Duration,
    /// How old a configuration answer Get and List may reuse ([`REPORT_AGE`] in the daemon).
    pub report_age: Duration,
}

/// After an engine crash the engine removes the plugin's propagated mounts and only then stops the
/// old containers (with a 10 s grace each): their leases are kept this long after a start.
pub const RESTART_GRACE: Duration = Duration::from_secs(120);

/// The Flocker volume driver; cheap to clone.
#[derive(Debug, Clone)]
pub struct FlockerDriver {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) client: flocker::Client,
    pub(super) settings: DriverSettings,
    pub(super) identity: watch::Receiver<Identity>,
    pub(super) watcher: Arc<StateWatcher>,
    pub(super) locks: Arc<VolumeLocks>,
    pub(super) store: Arc<Store>,
    pub(super) leases: Arc<Leases>,
    /// Configuration reads shared by concurrent callers (SPEC §10).
    pub(super) config_reads: Coalesced<Configuration>,
    /// The last known volumes, for answers while the control service is away.
    pub(super) known: Known,
    /// Whether the task that writes `known` to disk runs.
    pub(super) saver_started: std::sync::atomic::AtomicBool,
    /// What start-up recovery found locally and still has to settle with the control service.
    pub(super) pending: std::sync::Mutex<Option<Unsettled>>,
    /// Every task the driver starts (Mount/Unmount/Remove workers, retries, the poller, recovery).
    pub(super) tasks: TaskTracker,
    /// Cancelled on shutdown: waits end, retries and polling stop.
    pub(super) stop: CancellationToken,
}

impl FlockerDriver {
    /// Loads the state file and settles it with the local mount table (no network: that waits for
    /// [`FlockerDriver::reconcile`]). Runs before the socket serves, so it may block briefly.
    pub fn new(
        client: flocker::Client,
        mut settings: DriverSettings,
        identity: watch::Receiver<Identity>,
    ) -> FlockerDriver {
        if let MountMode::Propagated(dir) = &settings.mount_mode {
            // Canonical, so mountpoints compare equal to /proc/self/mountinfo entries.
            if let Err(e) = std::fs::create_dir_all(dir) {
                error!(dir = %dir.display(), error = %e, "cannot create PROPAGATED_MOUNT");
            }
            if let Ok(canonical) = std::fs::canonicalize(dir) {
                settings.mount_mode = MountMode::Propagated(canonical);
            }
        }
        if let Ok(canonical) = std::fs::canonicalize(&settings.flocker_root) {
            settings.flocker_root = canonical;
        }
        let loaded = settings.state_file.load();
        // Earlier versions kept the known volumes in the state file; they now have their own.
        let known = Known::load(
            settings
                .state_file
                .path()
                .parent()
                .unwrap_or(std::path::Path::new("/")),
            loaded.records().known,
        );
        let (mut records, pending) = super::recovery::settle_locally(
            loaded,
            &settings.mount_mode,
            crate::identity::this_boot_era(),
        );
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        // The list moves to known.json; the state file's copy goes only once that is durable, or
        // a start during an outage would be left knowing nothing.
        if !records.known.is_empty() {
            match known.save_durably() {
                Ok(()) => records.known.clear(),
                Err(e) => {
                    error!(error = %e, "cannot write known.json; the known volumes stay in the state file for now")
                }
            }
        }
        let store = Store::new(settings.state_file.clone(), records);
        store.save_now();
        let locks = Arc::new(VolumeLocks::default());
        let leases = Leases::new(
            client.clone(),
            Arc::clone(&locks),
            Arc::clone(&store),
            tasks.clone(),
            stop.clone(),
        );
        FlockerDriver {
            inner: Arc::new(Inner {
                watcher: StateWatcher::new(client.clone(), tasks.clone(), stop.clone()),
                client,
                settings,
                identity,
                locks,
                store,
                leases,
                config_reads: Coalesced::default(),
                known,
                saver_started: std::sync::atomic::AtomicBool::new(false),
                pending: std::sync::Mutex::new(Some(pending)),
                tasks,
                stop,
            }),
        }
    }

    /// Starts [`FlockerDriver::reconcile`] as a tracked background task.
    pub fn spawn_reconcile(&self) -> tokio::task::JoinHandle<()> {
        let driver = self.clone();
        self.inner
            .tasks
            .spawn(async move { driver.reconcile().await })
    }

    /// Tells waiting Mounts to give up (undoing what they took) and background work to end.
    pub fn stop_background(&self) {
        self.inner.stop.cancel();
    }

    /// A clean stop (SIGTERM, SIGINT): [`FlockerDriver::stop_tasks`], then every volume still in use
    /// is marked *held* in the state file. The engine stops containers (sending their Unmounts) before
    /// it stops plugins, so users left at a clean stop are containers that keep running, as through a
    /// `docker plugin disable -f`: the next start keeps their leases until the engine's Unmounts drain
    /// them, instead of dropping them after the restart grace (SPEC §9).
    pub async fn shutdown(&self, within: Duration) {
        self.stop_tasks(within).await;
        self.hold_in_use(within).await;
        // Creates and Removes that finished while the calls in flight drained came after the
        // saver's last write.
        let driver = self.clone();
        blocking::run(move || driver.inner.known.save_if_changed()).await;
    }

    /// Stops background work and waits (at most `within`) for calls in flight: waiting Mounts give up
    /// and undo what they took, retries and polling end. What is left unfinished is settled by the
    /// next start's recovery. Marks nothing held: alone, it leaves the state as a crash would.
    pub async fn stop_tasks(&self, within: Duration) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(within, self.inner.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                tasks = self.inner.tasks.len(),
                "driver tasks still running at exit; the next start settles them"
            );
        }
    }

    /// Marks every volume still in use as held through this stop, durably.
    async fn hold_in_use(&self, within: Duration) {
        let marked =
            tokio::time::timeout(within, self.inner.store.update(|r| r.hold_in_use())).await;
        match marked {
            Ok((held, _)) if held.is_empty() => {}
            Ok((held, Ok(()))) => {
                warn!(volumes = ?held, "stopping while volumes are in use (their containers keep running, as after `docker plugin disable -f`): the next start keeps their leases until the engine's Unmounts drain them");
            }
            // The store logged why; the next start treats them as after a crash (restart grace).
            Ok((held, Err(_))) => {
                error!(volumes = ?held, "stopping while volumes are in use, and that could not be saved: the next start keeps their leases only for the restart grace");
            }
            Err(_) => {
                error!("the state file could not be written in time at stop: volumes still in use keep their leases only for the restart grace after the next start");
            }
        }
    }

    pub(super) fn node(&self, name: &VolumeName) -> Result<NodeId> {
        match &*self.inner.identity.borrow() {
            Identity::Known(node) => Ok(*node),
            Identity::Pending(waiting) => Err(Error::NodeUnknown {
                name: name.to_string(),
                waiting: waiting.clone(),
            }),
        }
    }

    pub(super) fn current_node(&self) -> Option<NodeId> {
        match &*self.inner.identity.borrow() {
            Identity::Known(node) => Some(*node),
            Identity::Pending(_) => None,
        }
    }

    pub(super) fn control(name: &impl ToString) -> impl FnOnce(flocker::Error) -> Error + '_ {
        move |source| Error::ControlService {
            name: name.to_string(),
            source,
        }
    }

    /// The configuration, as fresh as `need` says, shared with concurrent callers; a new answer
    /// also refreshes the known-volume cache.
    async fn configuration(
        &self,
        name: &impl ToString,
        need: Freshness,
    ) -> Result<Arc<Configuration>> {
        self.configuration_sent(name, need)
            .await
            .map(|(config, _)| config)
    }

    /// Like [`FlockerDriver::configuration`], also saying when the request behind it was sent.
    async fn configuration_sent(
        &self,
        name: &impl ToString,
        need: Freshness,
    ) -> Result<(Arc<Configuration>, Instant)> {
        let client = &self.inner.client;
        let (config, sent) = self
            .inner
            .config_reads
            .get_sent(need, || client.configuration())
            .await
            .map_err(Self::control(name))?;
        self.inner
            .known
            .remember(&config, self.current_node(), sent);
        self.start_saving_known();
        Ok((config, sent))
    }

    /// The configuration from a request sent now or later: for decisions.
    async fn fresh_configuration(&self, name: &impl ToString) -> Result<Arc<Configuration>> {
        self.configuration(name, Freshness::StartedAfter(Instant::now()))
            .await
    }

    /// Remembers a configuration read outside the shared reads (start-up recovery).
    pub(super) fn remember(&self, config: &Arc<Configuration>, sent: Instant) {
        self.inner.known.remember(config, self.current_node(), sent);
        self.start_saving_known();
    }

    /// Starts (once) the task that writes the known volumes to disk every [`known::SAVE_INTERVAL`]
    /// when they changed, and once more when the driver stops.
    fn start_saving_known(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.saver_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let driver = self.clone();
        self.inner.tasks.spawn(async move {
            loop {
                let stopped = tokio::select! {
                    _ = driver.inner.stop.cancelled() => true,
                    _ = tokio::time::sleep(known::SAVE_INTERVAL) => false,
                };
                let saver = driver.clone();
                blocking::run(move || saver.inner.known.save_if_changed()).await;
                if stopped {
                    return;
                }
            }
        });
    }

    /// The live dataset named `name`, from an answer at most `report_age` old; a name missing from
    /// a reused answer is looked up again in a fresh one (it may have been created since).
    async fn find(&self, name: &VolumeName) -> Result<DatasetConfig> {
        let me = self.current_node();
        let asked = Instant::now();
        let (config, sent) = self
            .configuration_sent(name, Freshness::Within(self.inner.settings.report_age))
            .await?;
        if let Some(dataset) = pick(&config.datasets, name.as_str(), me) {
            return Ok(dataset.clone());
        }
        let config = if sent >= asked {
            config
        } else {
            self.fresh_configuration(name).await?
        };
        pick(&config.datasets, name.as_str(), me)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                name: name.to_string(),
            })
    }

    fn mountpoint_of(&self, name: &VolumeName) -> Option<PathBuf> {
        self.inner
            .store
            .read()
            .mounts
            .get(name.as_str())
            .map(|r| r.mountpoint.clone())
    }

    /// Waits until the state shows `dataset` on `node` with a path; `last` keeps what was seen, for errors.
    async fn wait_here(
        &self,
        name: &VolumeName,
        dataset: DatasetId,
        node: NodeId,
        last: &mut String,
    ) -> Result<PathBuf> {
        let mut rx = self.inner.watcher.subscribe();
        loop {
            tokio::select! {
                _ = self.inner.stop.cancelled() => {
                    return Err(Error::Stopping { name: name.to_string() });
                }
                changed = rx.changed() => {
                    if changed.is_err() {
                        // The sender lives as long as the watcher, which outlives this call.
                        std::future::pending::<()>().await;
                    }
                }
            }
            let snapshot = rx.borrow_and_update().clone();
            match snapshot {
                Snapshot::Pending => {}
                Snapshot::Failed(e) => *last = format!("last state poll failed: {e}"),
                Snapshot::State(state) => {
                    let entries: Vec<_> =
                        state.iter().filter(|s| s.dataset_id == dataset).collect();
                    if let Some(path) = entries
                        .iter()
                        .find(|s| s.primary == Some(node))
                        .and_then(|s| s.path.clone())
                    {
                        return Ok(path);
                    }
                    *last = match entries.first().and_then(|s| s.primary) {
                        Some(other) => format!("the cluster state still shows it on node {other}"),
                        None if entries.is_empty() => {
                            "the cluster state does not show it yet".into()
                        }
                        None => "the cluster state shows it attached to no node (moving)".into(),
                    };
                }
            }
        }
    }

    /// Checks that the agent's mount of `dataset` at `agent_path` may be handed on, and returns where
    /// this process sees it (SPEC §9.3).
    async fn visible_source(
        &self,
        name: &VolumeName,
        dataset: DatasetId,
        agent_path: PathBuf,
    ) -> Result<PathBuf> {
        let settings = &self.inner.settings;
        let local = source::local_path(
            &settings.agent_mount_root,
            &settings.flocker_root,
            dataset,
            &agent_path,
        )
        .map_err(|refusal| match refusal {
            Refusal::UnexpectedPath { expected } => Error::UnexpectedStatePath {
                name: name.to_string(),
                dataset,
                agent_path: agent_path.clone(),
                expected,
            },
            other => Error::Internal {
                what: format!("unexpected refusal of a state path: {other:?}"),
            },
        })?;
        let need_propagation = matches!(settings.mount_mode, MountMode::Propagated(_));
        let (root, checked) = (settings.flocker_root.clone(), local.clone());
        let visible =
            blocking::run(move || source::check_visible(&root, &checked, need_propagation)).await;
        match visible {
            Ok(()) => Ok(local),
            Err(VisibleError::MountTable(source)) => Err(Error::Mount {
                name: name.to_string(),
                source,
            }),
            Err(VisibleError::Refused(refusal)) => Err(match refusal {
                Refusal::NotPropagated {
                    covering,
                    propagation,
                } => Error::NotPropagated {
                    name: name.to_string(),
                    dataset,
                    root: settings.flocker_root.clone(),
                    covering,
                    propagation,
                },
                Refusal::NotADirectory => Error::NotADirectory {
                    name: name.to_string(),
                    dataset,
                    path: local,
                },
                Refusal::NotAMountPoint | Refusal::UnexpectedPath { .. } => Error::NotAMountPoint {
                    name: name.to_string(),
                    dataset,
                    agent_path,
                    seen: local,
                },
            }),
        }
    }

    /// Removes the plugin's bind of a volume (nothing to remove in legacy mode).
    pub(super) async fn unbind(
        &self,
        record: &MountRecord,
    ) -> std::result::Result<(), mount::Error> {
        match &self.inner.settings.mount_mode {
            MountMode::Propagated(_) => {
                let target = record.mountpoint.clone();
                blocking::run(move || mount::unmount_all(&target)).await
            }
            MountMode::Legacy => Ok(()),
        }
    }

    fn info(&self, dataset: &DatasetConfig, name: &str) -> VolumeInfo {
        let mountpoint = self
            .inner
            .store
            .read()
            .mounts
            .get(name)
            .map(|r| r.mountpoint.clone());
        VolumeInfo {
            name: name.to_string(),
            mountpoint,
            status: select::status(&known_volume(dataset), None),
        }
    }

    /// Moves the dataset here if needed, waits for the agent, checks its mount and binds it for Docker.
    async fn arrive_and_bind(
        &self,
        name: &VolumeName,
        dataset: &DatasetConfig,
        node: NodeId,
        deadline: Instant,
    ) -> Result<PathBuf> {
        let started = deadline - self.inner.settings.mount_timeout;
        let dataset_id = dataset.dataset_id;
        let timed_out = |detail: String| Error::Timeout {
            name: name.to_string(),
            dataset: Some(dataset_id),
            waited: started.elapsed(),
            detail,
        };
        if dataset.primary != Some(node) {
            info!(volume = %name, dataset = %dataset_id, from = ?dataset.primary.map(|n| n.to_string()), to = %node, "moving dataset here");
            let moved =
                timeout_at(deadline, self.inner.client.move_dataset(dataset_id, node)).await;
            self.inner.config_reads.forget();
            moved
                .map_err(|_| timed_out("the control service did not answer the move".into()))?
                .map_err(Self::control(name))?;
        }
        if dataset.primary == Some(node) {
            // Configured here (and this node holds the lease, so the agent keeps it here): if the
            // agent's mount is already visible, the local mount table says all a state read would.
            let expected = self
                .inner
                .settings
                .agent_mount_root
                .join(dataset_id.to_string());
            match self.visible_source(name, dataset_id, expected).await {
                Ok(local) => return self.bind_for_docker(name, dataset_id, local).await,
                Err(Error::NotAMountPoint { .. }) => {} // Not mounted yet: ask the state.
                Err(e) => return Err(e),
            }
        }
        let mut last = String::from("the cluster state was not fetched yet");
        let agent_path =
            match timeout_at(deadline, self.wait_here(name, dataset_id, node, &mut last)).await {
                Ok(found) => found?,
                Err(_) if dataset.primary != Some(node) => {
                    return Err(timed_out(format!(
                        "{last}; the move goes on, so retrying joins it"
                    )))
                }
                Err(_) => return Err(timed_out(last)),
            };
        let local = self.visible_source(name, dataset_id, agent_path).await?;
        self.bind_for_docker(name, dataset_id, local).await
    }

    /// Binds the agent's mount under the propagated mount (legacy mode: hands out the agent's path).
    async fn bind_for_docker(
        &self,
        name: &VolumeName,
        dataset_id: DatasetId,
        local: PathBuf,
    ) -> Result<PathBuf> {
        match &self.inner.settings.mount_mode {
            MountMode::Legacy => Ok(local),
            MountMode::Propagated(dir) => {
                let target = dir.join(dataset_id.to_string());
                let (from, to) = (local.clone(), target.clone());
                blocking::run(move || mount::bind(&from, &to))
                    .await
                    .map_err(|source| Error::Mount {
                        name: name.to_string(),
                        source,
                    })?;
                Ok(target)
            }
        }
    }

    async fn mount_now(
        &self,
        name: &VolumeName,
        id: &MountId,
        deadline: Instant,
    ) -> Result<PathBuf> {
        let node = self.node(name)?;
        let Ok(_guard) = timeout_at(deadline, self.inner.locks.lock(name.as_str())).await else {
            return Err(self.whole_mount_timed_out(
                name,
                "another Mount of this volume was still in progress; retry",
            ));
        };
        // A pending release of this volume's lease must not free the lease this Mount relies on.
        self.inner.leases.cancel_retry(name.as_str());
        let existing = self.inner.store.read().mounts.get(name.as_str()).cloned();
        if let Some(record) = existing {
            let target = record.mountpoint.clone();
            let still_there =
                blocking::run(move || mount::is_mount_point(&target).unwrap_or(true)).await;
            if still_there {
                return self.count_again(name, id).await;
            }
            // Never hand Docker a path that is no longer a mount: bind it again, keeping the counts.
            warn!(volume = %name, mountpoint = %record.mountpoint.display(), "the bind mount vanished; mounting again");
            return self
                .mount_fresh(name, id, node, deadline, Some(record))
                .await;
        }
        self.mount_fresh(name, id, node, deadline, None).await
    }

    /// One more user of a volume already mounted here; durable before it is answered.
    async fn count_again(&self, name: &VolumeName, id: &MountId) -> Result<PathBuf> {
        let store = &self.inner.store;
        let (mountpoint, saved) = store
            .update(|r| r.add_if_mounted(name.as_str(), &id.0))
            .await;
        let mountpoint = mountpoint.ok_or_else(|| Error::Internal {
            what: "the mount record vanished under the volume lock".into(),
        })?;
        if let Err(source) = saved {
            // Not durable: after a crash the other users' Unmounts could release it under this one.
            let _ = store.update(|r| r.forget_one(name.as_str(), &id.0)).await;
            return Err(Error::StateNotSaved {
                name: name.to_string(),
                source,
            });
        }
        Ok(mountpoint)
    }

    /// Mounts a volume not mounted here, or whose bind vanished (`carried` keeps its record).
    ///
    /// The lease comes first and the configuration is read after it: a Remove on another node that
    /// deleted the dataset before the lease was granted shows in that read, and one that comes later
    /// is refused by Flocker (its delete is conditional on a tag the lease changed).
    async fn mount_fresh(
        &self,
        name: &VolumeName,
        id: &MountId,
        node: NodeId,
        deadline: Instant,
        carried: Option<MountRecord>,
    ) -> Result<PathBuf> {
        let started = deadline - self.inner.settings.mount_timeout;
        let timed_out = |what: &str| Error::Timeout {
            name: name.to_string(),
            dataset: None,
            waited: started.elapsed(),
            detail: format!("the control service did not answer {what} in time; retry"),
        };
        let known = self.inner.known.get(name.as_str()).map(|k| k.dataset_id);
        let mut candidate = match (&carried, known) {
            (Some(record), _) => record.dataset_id,
            (None, Some(dataset)) => dataset,
            (None, None) => {
                timeout_at(deadline, self.find(name))
                    .await
                    .map_err(|_| timed_out("the configuration read"))??
                    .dataset_id
            }
        };
        for _ in 0..2 {
            let acquired = self
                .lease_for_mount(name, candidate, node, deadline, carried.is_some())
                .await?;
            // Only an answer sent after the lease was granted can show a Remove that came before it.
            let leased_at = Instant::now();
            let verified = self.configuration(name, Freshness::StartedAfter(leased_at));
            let config = match timeout_at(deadline, verified).await {
                Ok(Ok(config)) => config,
                failed => {
                    if carried.is_none() {
                        self.inner.leases.release(name, candidate, node).await;
                    }
                    return Err(match failed {
                        Ok(Err(e)) => e,
                        _ => timed_out("the configuration read"),
                    });
                }
            };
            let dataset = match &carried {
                // Re-binding: the record's own dataset, whatever else carries the name now.
                Some(_) => config
                    .datasets
                    .iter()
                    .find(|d| d.dataset_id == candidate && !d.deleted),
                None => pick(&config.datasets, name.as_str(), Some(node)),
            };
            match dataset {
                Some(dataset) if dataset.dataset_id == candidate => {
                    let dataset = dataset.clone();
                    return self
                        .bind_and_record(name, id, node, deadline, carried, &dataset)
                        .await;
                }
                _ if carried.is_some() => {
                    warn!(volume = %name, dataset = %candidate, "the dataset of a volume still in use here is gone from the configuration; keeping its lease");
                    return Err(Error::NotFound {
                        name: name.to_string(),
                    });
                }
                other => {
                    // Deleted meanwhile, or the name now means another dataset: this lease is not needed.
                    self.inner.leases.release(name, candidate, node).await;
                    match other {
                        Some(dataset) => candidate = dataset.dataset_id,
                        None => {
                            return Err(Error::NotFound {
                                name: name.to_string(),
                            })
                        }
                    }
                }
            }
            let _ = acquired;
        }
        Err(Error::Internal {
            what: format!("volume {name} named another dataset on every read; retry"),
        })
    }

    /// Claims (durably) and takes this node's lease on `dataset` for a Mount; on failure leaves
    /// nothing this plugin took behind (or a background retry that will give it back).
    async fn lease_for_mount(
        &self,
        name: &VolumeName,
        dataset: DatasetId,
        node: NodeId,
        deadline: Instant,
        carried: bool,
    ) -> Result<Acquired> {
        let leases = &self.inner.leases;
        // Claimed before asking, so a crash after the lease is granted leaves a lease the next start
        // knows to be this plugin's (SPEC §9.1).
        let owned_before = leases.owns(dataset);
        if !owned_before {
            leases
                .claim(dataset)
                .await
                .map_err(|source| Error::StateNotSaved {
                    name: name.to_string(),
                    source,
                })?;
        }
        // Lease first: the control service grants it to one node only (409 for the others), so two
        // nodes racing for a volume cannot both move it, and the loser learns at once where it is used.
        // Not cut off at the deadline: a lease request cut off may still be carried out, and then
        // nobody would know whose it is. Docker gets its answer by the deadline anyway (`mount`), and
        // a Mount that finishes with nobody listening is undone.
        let error = match leases.take(name, dataset, node, deadline).await {
            Ok(Acquired::Renewed) if !owned_before && !carried => {
                // This node's UUID already holds it, but not through this plugin: another host runs
                // with the same NODE_UUID, or this plugin lost its state. Mounting could put it on two
                // hosts.
                leases.disown(dataset).await;
                return Err(Error::LeasedByThisUuid {
                    name: name.to_string(),
                    dataset,
                    node,
                });
            }
            Ok(acquired) => return Ok(acquired),
            Err(e) => e,
        };
        if carried {
            // Containers here use it: whatever happened, the lease stays this plugin's.
        } else if leases.in_doubt(dataset) || owned_before {
            // Perhaps granted after all, or a leftover of this plugin's: give it back once sure.
            leases.release(name, dataset, node).await;
        } else {
            // Refused, or certainly not carried out: this plugin holds nothing.
            leases.disown(dataset).await;
        }
        Err(error)
    }

    /// Moves the dataset here if needed, binds it, and records the mount before answering.
    async fn bind_and_record(
        &self,
        name: &VolumeName,
        id: &MountId,
        node: NodeId,
        deadline: Instant,
        carried: Option<MountRecord>,
        dataset: &DatasetConfig,
    ) -> Result<PathBuf> {
        let dataset_id = dataset.dataset_id;
        let leases = &self.inner.leases;
        let store = &self.inner.store;
        if let (MountMode::Propagated(dir), None) = (&self.inner.settings.mount_mode, &carried) {
            // A bind with only this note at the next start never reached Docker: it is removed then.
            let pending = PendingMount {
                dataset_id,
                mountpoint: dir.join(dataset_id.to_string()),
            };
            let (_, saved) = store
                .update(|r| r.pending.insert(name.to_string(), pending))
                .await;
            if let Err(source) = saved {
                let _ = store.update(|r| r.pending.remove(name.as_str())).await;
                leases.release(name, dataset_id, node).await;
                return Err(Error::StateNotSaved {
                    name: name.to_string(),
                    source,
                });
            }
        }
        let outcome = self.arrive_and_bind(name, dataset, node, deadline).await;
        let mountpoint = match outcome {
            Ok(mountpoint) => mountpoint,
            Err(e) => {
                if carried.is_some() {
                    // Containers still use it through their own mounts: keep the lease and the record.
                    warn!(volume = %name, error = %e, "re-mounting a vanished bind failed; keeping the lease for the containers still using it");
                } else {
                    let _ = store.update(|r| r.pending.remove(name.as_str())).await;
                    // This plugin's lease (just taken, or a leftover of its own), and nothing here uses it.
                    leases.release(name, dataset_id, node).await;
                }
                return Err(e);
            }
        };
        let record = match carried {
            Some(mut record) => {
                record.mountpoint = mountpoint.clone();
                *record.ids.entry(id.0.clone()).or_default() += 1;
                record
            }
            None => MountRecord {
                dataset_id,
                mountpoint: mountpoint.clone(),
                ids: BTreeMap::from([(id.0.clone(), 1)]),
                adopted: false,
                held: false,
            },
        };
        let had_users = record.count() > 1 || record.adopted;
        let (_, saved) = store
            .update(|r| {
                r.pending.remove(name.as_str());
                r.mounts.insert(name.to_string(), record)
            })
            .await;
        if let Err(source) = saved {
            if had_users {
                let _ = store.update(|r| r.forget_one(name.as_str(), &id.0)).await;
            } else {
                let _ = store.update(|r| r.mounts.remove(name.as_str())).await;
                self.undo_bind(name, dataset_id, &mountpoint, node).await;
            }
            return Err(Error::StateNotSaved {
                name: name.to_string(),
                source,
            });
        }
        info!(volume = %name, dataset = %dataset_id, mountpoint = %mountpoint.display(), "mounted");
        Ok(mountpoint)
    }

    /// Takes back a fresh bind and its lease after a failure nobody else depends on.
    async fn undo_bind(
        &self,
        name: &VolumeName,
        dataset: DatasetId,
        mountpoint: &std::path::Path,
        node: NodeId,
    ) {
        if let MountMode::Propagated(_) = self.inner.settings.mount_mode {
            let target = mountpoint.to_path_buf();
            if let Err(e) = blocking::run(move || mount::unmount_all(&target)).await {
                error!(volume = %name, error = %e, "cannot undo the bind");
                return; // Keep the lease: the bind exists and recovery adopts it.
            }
        }
        self.inner.leases.release(name, dataset, node).await;
    }

    async fn unmount_now(&self, name: &VolumeName, id: &MountId) -> Result<()> {
        let _guard = self.inner.locks.lock(name.as_str()).await;
        let store = &self.inner.store;
        let released = store.read().release(name.as_str(), &id.0);
        match released {
            Released::Unknown => {
                info!(volume = %name, id = %id, "unmount of a volume or ID not mounted here; nothing to do");
                Ok(())
            }
            Released::StillInUse => {
                let _ = store.update(|_| ()).await;
                Ok(())
            }
            Released::Last(record) => self.unmount_last(name, record).await,
        }
    }

    /// Unbinds, then records it, then releases the lease: a crash in between leaves a record whose
    /// bind is gone, which the next start drops, never a bind without a record.
    pub(super) async fn unmount_last(&self, name: &VolumeName, record: MountRecord) -> Result<()> {
        let store = &self.inner.store;
        if let Err(source) = self.unbind(&record).await {
            // Keep the record (with no users) so the bind is not forgotten: the next Unmount, Remove
            // or start tries again, and a Mount reuses it meanwhile.
            let kept = MountRecord {
                ids: BTreeMap::new(),
                adopted: false,
                ..record
            };
            let _ = store
                .update(|r| r.mounts.insert(name.to_string(), kept))
                .await;
            return Err(Error::Mount {
                name: name.to_string(),
                source,
            });
        }
        let _ = store.update(|_| ()).await;
        if let Some(node) = self.current_node() {
            self.inner
                .leases
                .release(name, record.dataset_id, node)
                .await;
        }
        info!(volume = %name, dataset = %record.dataset_id, "unmounted");
        Ok(())
    }

    async fn remove_now(&self, name: &VolumeName) -> Result<()> {
        let _guard = self.inner.locks.lock(name.as_str()).await;
        let record = self.inner.store.read().mounts.get(name.as_str()).cloned();
        if let Some(record) = record {
            if record.in_use() {
                let place = if record.adopted {
                    "on this node (found mounted when the plugin started; the containers using it are not known)".to_string()
                } else {
                    format!(
                        "on this node ({} mount(s) by containers here)",
                        record.count()
                    )
                };
                return Err(Error::InUse {
                    name: name.to_string(),
                    place,
                });
            }
            // Left with no users by an earlier failed unmount: finish that first.
            self.inner.store.read().mounts.remove(name.as_str());
            self.unmount_last(name, record).await?;
        }
        let me = self.current_node();
        let mut last = None;
        let mut gave_back = false;
        for _ in 0..CREATE_ATTEMPTS {
            let config = self.fresh_configuration(name).await?;
            let Some(dataset) = pick(&config.datasets, name.as_str(), me) else {
                return Ok(());
            };
            let dataset_id = dataset.dataset_id;
            let holder = self
                .inner
                .leases
                .holder(dataset_id)
                .await
                .map_err(Self::control(name))?;
            let ours = self.inner.leases.owns(dataset_id);
            match holder {
                // Nothing here uses it (no record above): a lease of ours is a leftover to give back.
                Some(holder) if Some(holder) == me && ours && !gave_back => {
                    gave_back = true;
                    self.inner.leases.release(name, dataset_id, holder).await;
                    continue;
                }
                Some(holder) if Some(holder) == me && ours => {
                    return Err(Error::InUse {
                        name: name.to_string(),
                        place: "on this node (it holds a lease no container here needs and could not give it back yet; retry shortly)".into(),
                    })
                }
                Some(holder) if Some(holder) == me => {
                    return Err(Error::LeasedByThisUuid {
                        name: name.to_string(),
                        dataset: dataset_id,
                        node: holder,
                    })
                }
                Some(holder) => {
                    return Err(select::in_use_elsewhere(
                        name,
                        dataset_id,
                        &holder.to_string(),
                    ))
                }
                None => {}
            }
            // Conditional on the tag: a lease taken since we looked changes it, and we look again.
            match self
                .inner
                .client
                .delete_dataset(dataset_id, config.tag.as_deref())
                .await
            {
                Ok(_) | Err(flocker::Error::NotFound { .. }) => {
                    self.inner.config_reads.forget();
                    info!(volume = %name, dataset = %dataset_id, "deleted dataset");
                    self.inner.known.edit(name.as_str(), None);
                    return Ok(());
                }
                Err(e @ flocker::Error::ConfigurationChanged { .. }) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => return Err(Self::control(name)(e)),
            }
        }
        Err(Self::control(name)(last.expect("at least one attempt")))
    }

    /// Runs `work` as a tracked task that finishes even if Docker hangs up, and waits for it.
    async fn run_to_completion<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        match self.inner.tasks.spawn(work).await {
            Ok(result) => result,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => Err(Error::Internal {
                    what: format!("a volume task was cancelled: {e}"),
                }),
            },
        }
    }

    async fn create_now(&self, name: &VolumeName, request: CreateRequest) -> Result<()> {
        let node = self.node(name)?;
        let _guard = self.inner.locks.lock(name.as_str()).await;
        let new = new_dataset(name, node, &request);
        let mut last = None;
        for _ in 0..CREATE_ATTEMPTS {
            // Docker, Swarm and restarts resend Create: an existing live dataset is success, also
            // in an answer a moment old. A name not found is looked for again in a fresh answer,
            // whose tag makes the create conditional.
            let asked = Instant::now();
            let (recent, sent) = self
                .configuration_sent(name, Freshness::Within(self.inner.settings.report_age))
                .await?;
            if pick(&recent.datasets, name.as_str(), Some(node)).is_some() {
                return Ok(());
            }
            let config = if sent >= asked {
                recent
            } else {
                self.fresh_configuration(name).await?
            };
            if pick(&config.datasets, name.as_str(), Some(node)).is_some() {
                return Ok(());
            }
            match self
                .inner
                .client
                .create_dataset(&new, config.tag.as_deref())
                .await
            {
                Ok(created) => {
                    self.inner.config_reads.forget();
                    info!(volume = %name, dataset = %created.dataset_id, size = %request.size, profile = ?request.profile, "created dataset");
                    self.inner
                        .known
                        .edit(name.as_str(), Some(known_volume(&created)));
                    return Ok(());
                }
                Err(flocker::Error::Conflict { .. }) => return Ok(()),
                Err(e @ flocker::Error::ConfigurationChanged { .. }) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => return Err(Self::control(name)(e)),
            }
        }
        Err(Self::control(name)(last.expect("at least one attempt")))
    }

    /// A Mount that used all of `MOUNT_TIMEOUT`, with what it was waiting for.
    fn whole_mount_timed_out(&self, name: &VolumeName, detail: &str) -> Error {
        Error::Timeout {
            name: name.to_string(),
            dataset: self.inner.known.get(name.as_str()).map(|k| k.dataset_id),
            waited: self.inner.settings.mount_timeout,
            detail: detail.into(),
        }
    }

    /// The last known answer for `name`, marked stale with `reason`.
    fn stale_info(&self, name: &VolumeName, reason: &str) -> Option<VolumeInfo> {
        let known = self.inner.known.get(name.as_str())?;
        Some(VolumeInfo {
            name: name.to_string(),
            mountpoint: self.mountpoint_of(name),
            status: select::status(&known, Some(reason)),
        })
    }
}

impl VolumeDriver for FlockerDriver {
    async fn create(&self, name: &VolumeName, opts: CreateOptions) -> Result<()> {
        let settings = &self.inner.settings;
        let request = opts.validate(
            name,
            settings.default_size,
            settings.default_profile.as_deref(),
        )?;
        self.create_now(name, request).await
    }

    async fn remove(&self, name: &VolumeName) -> Result<()> {
        // Runs to completion even if Docker hangs up, so an unbind is never left without its release.
        let driver = self.clone();
        let name = name.clone();
        self.run_to_completion(async move { driver.remove_now(&name).await })
            .await
    }

    async fn mount(&self, name: &VolumeName, id: &MountId) -> Result<PathBuf> {
        // The work runs in its own task so it is never cut off half-way with a lease or bind taken;
        // Docker gets an answer by the deadline (or hangs up first), and a Mount that finishes with
        // nobody left to hear it is undone.
        let deadline = Instant::now() + self.inner.settings.mount_timeout;
        let (answer, heard) = oneshot::channel();
        let driver = self.clone();
        let (task_name, task_id) = (name.clone(), id.clone());
        self.inner.tasks.spawn(async move {
            let result = driver.mount_now(&task_name, &task_id, deadline).await;
            let mounted = result.is_ok();
            if answer.send(result).is_err() && mounted {
                warn!(volume = %task_name, id = %task_id, "nobody waits for this Mount any more (Docker gave up or it ran past its deadline); undoing it");
                if let Err(e) = driver.unmount_now(&task_name, &task_id).await {
                    error!(volume = %task_name, error = %e, "undoing an abandoned Mount failed");
                }
            }
        });
        match timeout_at(deadline + ANSWER_GRACE, heard).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Internal {
                what: "the Mount task ended without an answer".into(),
            }),
            Err(_) => {
                Err(self
                    .whole_mount_timed_out(name, "the control service is slow to answer; retry"))
            }
        }
    }

    async fn unmount(&self, name: &VolumeName, id: &MountId) -> Result<()> {
        // Runs to completion even if Docker hangs up, so the bind and the lease go together.
        let driver = self.clone();
        let (name, id) = (name.clone(), id.clone());
        self.run_to_completion(async move { driver.unmount_now(&name, &id).await })
            .await
    }

    async fn path(&self, name: &VolumeName) -> Result<PathBuf> {
        self.mountpoint_of(name)
            .ok_or_else(|| Error::NotMountedHere {
                name: name.to_string(),
            })
    }

    async fn get(&self, name: &VolumeName) -> Result<VolumeInfo> {
        match self.find(name).await {
            Ok(dataset) => Ok(self.info(&dataset, name.as_str())),
            // The engine forgets a volume whenever Get fails, so any failure to read the configuration
            // (down, TLS, a proxy's 401/403/404 or error page) answers from what was last seen. Only a
            // configuration that was read and lacks the name is "not found".
            Err(Error::ControlService { source, .. }) => self
                .stale_info(name, &source.to_string())
                .ok_or_else(|| Self::control(name)(source)),
            Err(e) => Err(e),
        }
    }

    async fn list(&self) -> Result<Vec<VolumeInfo>> {
        match self
            .configuration(&"*", Freshness::Within(self.inner.settings.report_age))
            .await
        {
            // No Status: Docker's List answer carries none (the protocol layer drops it), and
            // building one per volume of a 10,000-dataset cluster is most of List's own cost.
            Ok(config) => {
                let mounts = self.inner.store.read().mounts.clone();
                Ok(by_name(&config.datasets, self.current_node())
                    .into_keys()
                    .map(|name| VolumeInfo {
                        name: name.to_string(),
                        mountpoint: mounts.get(name).map(|r| r.mountpoint.clone()),
                        status: BTreeMap::new(),
                    })
                    .collect())
            }
            Err(Error::ControlService { source, .. }) => {
                let known = self.inner.known.all();
                if known.is_empty() {
                    return Err(Self::control(&"*")(source));
                }
                let stale = source.to_string();
                warn!(error = %stale, "List answered from the last known volumes");
                let mounts = self.inner.store.read().mounts.clone();
                Ok(known
                    .iter()
                    .map(|(name, known)| VolumeInfo {
                        name: name.clone(),
                        mountpoint: mounts.get(name).map(|r| r.mountpoint.clone()),
                        status: select::status(known, Some(&stale)),
                    })
                    .collect())
            }
            Err(e) => Err(e),
        }
    }
}
