//! `FlockerDriver`: Docker volume calls carried out with Flocker datasets, leases and local bind mounts.
//!
//! A volume is the live dataset whose metadata `name` equals the volume name. Mount moves it here if
//! needed, waits for the agent, checks the agent's mount is visible, takes this node's lease and binds it
//! under the propagated mount; the last Unmount undoes that. Calls for one volume are serialised by a
//! per-volume lock, so concurrent Mounts share one move.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{oneshot, watch};
use tokio::time::{timeout_at, Instant};
use tracing::{error, info, warn};

use super::options::CreateRequest;
use super::records::{KnownVolume, MountRecord, Records, Released};
use super::watcher::{Snapshot, StateWatcher};
use super::{
    CreateOptions, Error, MountId, Result, StateFile, VolumeDriver, VolumeInfo, VolumeName,
};
use crate::config::{Config, MountMode};
use crate::flocker::types::{NAME_KEY, PROFILE_KEY, SIZE_KEY};
use crate::flocker::{self, Configuration, DatasetConfig, DatasetId, NewDataset, NodeId};
use crate::identity::Identity;
use crate::mount;
use crate::size::Size;

/// Conditional create attempts on 412, as upstream (flocker-upstream.md §1.5: 20 attempts, 1 ms apart).
const CREATE_ATTEMPTS: usize = 20;

/// The driver's settings, taken from [`Config`].
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
}

impl DriverSettings {
    /// The settings in `config`.
    pub fn from_config(config: &Config) -> DriverSettings {
        DriverSettings {
            agent_mount_root: config.agent_mount_root.clone(),
            flocker_root: config.flocker_root.clone(),
            mount_mode: config.mount_mode.clone(),
            default_size: config.default_size,
            default_profile: config.default_profile.clone(),
            mount_timeout: config.mount_timeout,
            state_file: StateFile::in_dir(&config.state_dir),
        }
    }
}

/// The Flocker volume driver; cheap to clone.
#[derive(Debug, Clone)]
pub struct FlockerDriver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: flocker::Client,
    settings: DriverSettings,
    identity: watch::Receiver<Identity>,
    watcher: Arc<StateWatcher>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    records: Mutex<Records>,
    /// Serialises snapshot-and-write, so an older snapshot never overwrites a newer one on disk.
    save_lock: Mutex<()>,
}

impl FlockerDriver {
    /// Loads the state file and reconciles it with the mount table (local work only, no network).
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
        let records = settings.state_file.load();
        let records = reconcile_with_mount_table(records, &settings.mount_mode);
        let driver = FlockerDriver {
            inner: Arc::new(Inner {
                watcher: StateWatcher::new(client.clone()),
                client,
                settings,
                identity,
                locks: Mutex::new(HashMap::new()),
                records: Mutex::new(records),
                save_lock: Mutex::new(()),
            }),
        };
        driver.save();
        driver
    }

    /// Once the node is known: drops mounts of datasets that were deleted or really moved away, re-takes the
    /// leases of volumes still mounted, and releases leases this node holds for volumes it no longer mounts.
    /// A dataset configured elsewhere but still here under this node's lease is in use here: it is kept,
    /// and its configuration is pointed back at this node.
    pub async fn reconcile(&self) {
        let mut identity = self.inner.identity.clone();
        let node = match identity.wait_for(|i| matches!(i, Identity::Known(_))).await {
            Ok(i) => match *i {
                Identity::Known(node) => node,
                Identity::Pending(_) => return,
            },
            Err(_) => return,
        };
        let mut delay = Duration::from_millis(200);
        let (config, leases, state) = loop {
            match tokio::try_join!(
                self.inner.client.configuration(),
                self.inner.client.leases(),
                self.inner.client.state()
            ) {
                Ok(answer) => break answer,
                Err(e) => {
                    warn!(error = %e, "reconcile: control service not answering; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        };
        self.remember(&config);
        let by_id: HashMap<DatasetId, &DatasetConfig> = config
            .datasets
            .iter()
            .filter(|d| !d.deleted)
            .map(|d| (d.dataset_id, d))
            .collect();
        let names: Vec<String> = self.records().mounts.keys().cloned().collect();
        for name in names {
            let _guard = self.lock(&name).await;
            let Some(record) = self.records().mounts.get(&name).cloned() else {
                continue;
            };
            let dataset = record.dataset_id;
            let leased_here = leases
                .iter()
                .any(|l| l.dataset_id == dataset && l.node_uuid == node);
            let shown_here = state
                .iter()
                .any(|s| s.dataset_id == dataset && s.primary == Some(node) && s.path.is_some());
            match by_id.get(&dataset).map(|d| d.primary == Some(node)) {
                Some(true) => {}
                Some(false) if leased_here && shown_here => {
                    warn!(volume = %name, dataset = %dataset, "reconcile: configured on another node but kept here by this node's lease; pointing it back here");
                    if let Err(e) = self.inner.client.move_dataset(dataset, node).await {
                        error!(volume = %name, error = %e, "reconcile: cannot point the dataset back here");
                    }
                }
                gone => {
                    let why = if gone.is_none() {
                        "deleted"
                    } else {
                        "moved away"
                    };
                    warn!(volume = %name, dataset = %dataset, why, "reconcile: dataset gone; unmounting");
                    if let Err(e) = self.unbind(&record) {
                        error!(volume = %name, error = %e, "reconcile: unmount failed");
                        continue;
                    }
                    self.records().mounts.remove(&name);
                    continue;
                }
            }
            if let Err(e) = self.inner.client.acquire_lease(dataset, node).await {
                error!(volume = %name, error = %e, "reconcile: cannot re-take the lease");
            }
        }
        let mounted: HashSet<DatasetId> = self
            .records()
            .mounts
            .values()
            .map(|r| r.dataset_id)
            .collect();
        for lease in leases
            .iter()
            .filter(|l| l.node_uuid == node && !mounted.contains(&l.dataset_id))
        {
            let name = by_id
                .get(&lease.dataset_id)
                .and_then(|d| d.name())
                .unwrap_or("")
                .to_string();
            let _guard = self.lock(&name).await;
            if self.records().mounts.contains_key(&name) {
                continue;
            }
            info!(volume = %name, dataset = %lease.dataset_id, "reconcile: releasing a lease no mount needs");
            if let Err(e) = self.inner.client.release_lease(lease.dataset_id).await {
                warn!(dataset = %lease.dataset_id, error = %e, "reconcile: lease release failed");
            }
        }
        self.save();
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        self.inner.records.lock().expect("records lock")
    }

    /// Writes the state file. It only serves crash recovery (memory is authoritative), so a failed write
    /// is logged loudly rather than failing a call whose mount and lease already exist.
    fn save(&self) {
        let _writing = self.inner.save_lock.lock().expect("save lock");
        let snapshot = self.records().clone();
        let file = &self.inner.settings.state_file;
        if let Err(reason) = file.save(&snapshot) {
            error!(path = %file.path().display(), %reason, "cannot save the plugin state; mounts will not survive a plugin restart; check STATE_DIR");
        }
    }

    async fn lock(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.inner.locks.lock().expect("locks lock");
            // Every anonymous volume is a new name: forget locks nobody holds or waits for.
            if locks.len() > 256 {
                locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            Arc::clone(locks.entry(name.to_string()).or_default())
        };
        lock.lock_owned().await
    }

    fn node(&self, name: &VolumeName) -> Result<NodeId> {
        match &*self.inner.identity.borrow() {
            Identity::Known(node) => Ok(*node),
            Identity::Pending(waiting) => Err(Error::NodeUnknown {
                name: name.to_string(),
                waiting: waiting.clone(),
            }),
        }
    }

    fn control(name: &impl ToString) -> impl FnOnce(flocker::Error) -> Error + '_ {
        move |source| Error::ControlService {
            name: name.to_string(),
            source,
        }
    }

    /// Fetches the configuration and refreshes the known-volume cache from it.
    async fn configuration(&self, name: &impl ToString) -> Result<Configuration> {
        let config = self
            .inner
            .client
            .configuration()
            .await
            .map_err(Self::control(name))?;
        self.remember(&config);
        Ok(config)
    }

    fn remember(&self, config: &Configuration) {
        let known: BTreeMap<String, KnownVolume> = by_name(&config.datasets, self.current_node())
            .into_iter()
            .map(|(name, dataset)| (name.to_string(), known_volume(dataset)))
            .collect();
        let changed = {
            let mut records = self.records();
            let changed = records.known != known;
            records.known = known;
            changed
        };
        if changed {
            self.save();
        }
    }

    fn current_node(&self) -> Option<NodeId> {
        match &*self.inner.identity.borrow() {
            Identity::Known(node) => Some(*node),
            Identity::Pending(_) => None,
        }
    }

    /// The live dataset named `name`.
    async fn find(&self, name: &VolumeName) -> Result<DatasetConfig> {
        let config = self.configuration(name).await?;
        pick(&config.datasets, name.as_str(), self.current_node())
            .cloned()
            .ok_or_else(|| Error::NotFound {
                name: name.to_string(),
            })
    }

    fn mountpoint_of(&self, name: &VolumeName) -> Option<PathBuf> {
        self.records()
            .mounts
            .get(name.as_str())
            .map(|r| r.mountpoint.clone())
    }

    /// Waits until the state shows `dataset` on `node` with a path; `last` keeps what was seen, for errors.
    async fn wait_here(&self, dataset: DatasetId, node: NodeId, last: &mut String) -> PathBuf {
        let mut rx = self.inner.watcher.subscribe();
        loop {
            if rx.changed().await.is_err() {
                // The sender lives as long as the watcher, which outlives this call.
                std::future::pending::<()>().await;
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
                        return path;
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

    /// Maps a state path under `AGENT_MOUNT_ROOT` to where this process sees it.
    fn local_source(
        &self,
        name: &VolumeName,
        dataset: DatasetId,
        agent_path: &Path,
    ) -> Result<PathBuf> {
        let settings = &self.inner.settings;
        let outside = || Error::OutsideAgentRoot {
            name: name.to_string(),
            dataset,
            agent_path: agent_path.into(),
            root: settings.agent_mount_root.clone(),
        };
        let rest = agent_path
            .strip_prefix(&settings.agent_mount_root)
            .map_err(|_| outside())?;
        if rest
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
            || rest.as_os_str().is_empty()
        {
            return Err(outside());
        }
        Ok(settings.flocker_root.join(rest))
    }

    /// Leases `dataset` for this node; a lease held elsewhere means the volume is in use there.
    async fn take_lease(&self, name: &VolumeName, dataset: DatasetId, node: NodeId) -> Result<()> {
        match self.inner.client.acquire_lease(dataset, node).await {
            Ok(_) => Ok(()),
            Err(flocker::Error::Conflict { .. }) => {
                let holder = self
                    .inner
                    .client
                    .leases()
                    .await
                    .ok()
                    .and_then(|l| l.into_iter().find(|l| l.dataset_id == dataset))
                    .map(|l| l.node_uuid.to_string())
                    .unwrap_or_else(|| "another node".into());
                Err(in_use_elsewhere(name, dataset, &holder))
            }
            Err(e) => Err(Self::control(name)(e)),
        }
    }

    fn unbind(&self, record: &MountRecord) -> std::result::Result<(), mount::Error> {
        match &self.inner.settings.mount_mode {
            MountMode::Propagated(_) => mount::unmount_all(&record.mountpoint),
            MountMode::Legacy => Ok(()),
        }
    }

    /// Releases the lease now, or keeps trying in the background while the volume stays unmounted.
    async fn release_lease(&self, name: &VolumeName, dataset: DatasetId) {
        match self.inner.client.release_lease(dataset).await {
            Ok(_) | Err(flocker::Error::NotFound { .. }) => {}
            Err(e) => {
                warn!(volume = %name, dataset = %dataset, error = %e, "lease release failed; retrying in the background");
                let driver = self.clone();
                let name = name.clone();
                tokio::spawn(async move { driver.retry_release(name, dataset).await });
            }
        }
    }

    /// Until it works or the volume is mounted here again: a lease left behind pins the dataset here.
    async fn retry_release(&self, name: VolumeName, dataset: DatasetId) {
        let mut delay = Duration::from_millis(500);
        loop {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
            let _guard = self.lock(name.as_str()).await;
            if self.records().mounts.contains_key(name.as_str()) {
                return; // Mounted again meanwhile: the lease is wanted.
            }
            match self.inner.client.release_lease(dataset).await {
                Ok(_) | Err(flocker::Error::NotFound { .. }) => {
                    info!(volume = %name, dataset = %dataset, "lease released after retry");
                    return;
                }
                Err(e) => {
                    warn!(volume = %name, dataset = %dataset, error = %e, "lease release failed again")
                }
            }
        }
    }

    fn info(&self, dataset: &DatasetConfig, name: &str) -> VolumeInfo {
        let mountpoint = self
            .records()
            .mounts
            .get(name)
            .map(|r| r.mountpoint.clone());
        VolumeInfo {
            name: name.to_string(),
            mountpoint,
            status: status(&known_volume(dataset), None),
        }
    }

    /// Mounts a volume not mounted here (or whose bind vanished: `carried` keeps its engine IDs).
    async fn mount_locked(
        &self,
        name: &VolumeName,
        id: &MountId,
        node: NodeId,
        deadline: Instant,
        carried: BTreeMap<String, u32>,
    ) -> Result<PathBuf> {
        let dataset = self.find(name).await?;
        let dataset_id = dataset.dataset_id;
        // Lease first: the control service grants it to one node only (409 for the others), so two
        // nodes racing for a volume cannot both move it, and the loser learns at once where it is used.
        self.take_lease(name, dataset_id, node).await?;
        match self.arrive_and_bind(name, &dataset, node, deadline).await {
            Ok(mountpoint) => {
                let mut ids = carried;
                *ids.entry(id.0.clone()).or_default() += 1;
                self.records().mounts.insert(
                    name.to_string(),
                    MountRecord {
                        dataset_id,
                        mountpoint: mountpoint.clone(),
                        ids,
                    },
                );
                self.save();
                info!(volume = %name, dataset = %dataset_id, mountpoint = %mountpoint.display(), "mounted");
                Ok(mountpoint)
            }
            Err(e) if carried.is_empty() => {
                // Nothing here uses it: no lease left behind. A retry takes it again and joins the move.
                self.release_lease(name, dataset_id).await;
                Err(e)
            }
            Err(e) => {
                // Containers still use it through their own mounts: keep the lease and the record.
                warn!(volume = %name, error = %e, "re-mounting a vanished bind failed; keeping the lease for the containers still using it");
                Err(e)
            }
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
        if dataset.primary != Some(node) {
            info!(volume = %name, dataset = %dataset_id, from = ?dataset.primary.map(|n| n.to_string()), to = %node, "moving dataset here");
            self.inner
                .client
                .move_dataset(dataset_id, node)
                .await
                .map_err(Self::control(name))?;
        }
        let mut last = String::from("the cluster state was not fetched yet");
        let agent_path = timeout_at(deadline, self.wait_here(dataset_id, node, &mut last))
            .await
            .map_err(|_| Error::Timeout {
                name: name.to_string(),
                dataset: Some(dataset_id),
                waited: started.elapsed(),
                detail: last.clone(),
            })?;
        let source = self.local_source(name, dataset_id, &agent_path)?;
        let visible = mount::is_mount_point(&source).map_err(|source| Error::Mount {
            name: name.to_string(),
            source,
        })?;
        if !visible {
            return Err(Error::NotAMountPoint {
                name: name.to_string(),
                dataset: dataset_id,
                agent_path,
                seen: source,
            });
        }
        match &self.inner.settings.mount_mode {
            MountMode::Legacy => Ok(source),
            MountMode::Propagated(dir) => {
                let target = dir.join(dataset_id.to_string());
                mount::bind(&source, &target).map_err(|e| Error::Mount {
                    name: name.to_string(),
                    source: e,
                })?;
                Ok(target)
            }
        }
    }

    /// Whether the mount handed to Docker is still there (an admin may have unmounted it).
    fn still_mounted(record: &MountRecord) -> bool {
        mount::is_mount_point(&record.mountpoint).unwrap_or(true)
    }

    async fn mount_now(&self, name: &VolumeName, id: &MountId) -> Result<PathBuf> {
        let deadline = Instant::now() + self.inner.settings.mount_timeout;
        let node = self.node(name)?;
        let Ok(_guard) = timeout_at(deadline, self.lock(name.as_str())).await else {
            return Err(Error::Timeout {
                name: name.to_string(),
                dataset: self
                    .records()
                    .known
                    .get(name.as_str())
                    .map(|k| k.dataset_id),
                waited: self.inner.settings.mount_timeout,
                detail: "another Mount of this volume was still in progress".into(),
            });
        };
        let existing = self.records().mounts.get(name.as_str()).cloned();
        let mut carried = BTreeMap::new();
        if let Some(record) = existing {
            if Self::still_mounted(&record) {
                let mountpoint = self.records().add_if_mounted(name.as_str(), &id.0);
                self.save();
                return Ok(mountpoint.unwrap_or(record.mountpoint));
            }
            // Never hand Docker a path that is no longer a mount: bind it again, keeping the counts.
            warn!(volume = %name, mountpoint = %record.mountpoint.display(), "the bind mount vanished; mounting again");
            self.records().mounts.remove(name.as_str());
            carried = record.ids.clone();
            let restored = self
                .mount_locked(name, id, node, deadline, carried.clone())
                .await;
            if restored.is_err() {
                self.records().mounts.insert(name.to_string(), record);
                self.save();
            }
            return restored;
        }
        self.mount_locked(name, id, node, deadline, carried).await
    }

    async fn unmount_now(&self, name: &VolumeName, id: &MountId) -> Result<()> {
        let _guard = self.lock(name.as_str()).await;
        let released = {
            let mut records = self.records();
            match records.mounts.get(name.as_str()) {
                // Left with no users by an earlier failed unmount: try again now.
                Some(record) if record.count() == 0 => {
                    Released::Last(records.mounts.remove(name.as_str()).expect("present above"))
                }
                _ => records.release(name.as_str(), &id.0),
            }
        };
        match released {
            Released::Unknown => {
                info!(volume = %name, id = %id, "unmount of a volume or ID not mounted here; nothing to do");
                Ok(())
            }
            Released::StillMounted(_) => {
                self.save();
                Ok(())
            }
            Released::Last(record) => self.unmount_last(name, record).await,
        }
    }

    /// Removes the bind and releases the lease of a volume nobody here uses any more.
    async fn unmount_last(&self, name: &VolumeName, record: MountRecord) -> Result<()> {
        if let Err(source) = self.unbind(&record) {
            // Keep the record (with no users) so the bind is not forgotten: the next Unmount, Remove
            // or start tries again, and a Mount reuses it meanwhile.
            self.records().mounts.insert(
                name.to_string(),
                MountRecord {
                    ids: BTreeMap::new(),
                    ..record
                },
            );
            self.save();
            return Err(Error::Mount {
                name: name.to_string(),
                source,
            });
        }
        self.save();
        self.release_lease(name, record.dataset_id).await;
        info!(volume = %name, dataset = %record.dataset_id, "unmounted");
        Ok(())
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
        let node = self.node(name)?;
        let _guard = self.lock(name.as_str()).await;
        let new = new_dataset(name, node, &request);
        let mut last = None;
        for _ in 0..CREATE_ATTEMPTS {
            // Docker, Swarm and restarts resend Create: an existing live dataset is success.
            let config = self.configuration(name).await?;
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
                    info!(volume = %name, dataset = %created.dataset_id, size = %request.size, profile = ?request.profile, "created dataset");
                    self.records()
                        .known
                        .insert(name.to_string(), known_volume(&created));
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

    async fn remove(&self, name: &VolumeName) -> Result<()> {
        let _guard = self.lock(name.as_str()).await;
        let record = self.records().mounts.get(name.as_str()).cloned();
        if let Some(record) = record {
            if record.count() > 0 {
                return Err(Error::InUse {
                    name: name.to_string(),
                    place: format!(
                        "on this node ({} mount(s) by containers here)",
                        record.count()
                    ),
                });
            }
            // Left with no users by an earlier failed unmount: finish that first.
            self.records().mounts.remove(name.as_str());
            self.unmount_last(name, record).await?;
        }
        let mut last = None;
        for _ in 0..CREATE_ATTEMPTS {
            let config = self.configuration(name).await?;
            let Some(dataset) = pick(&config.datasets, name.as_str(), self.current_node()) else {
                return Ok(());
            };
            let dataset_id = dataset.dataset_id;
            let leases = self
                .inner
                .client
                .leases()
                .await
                .map_err(Self::control(name))?;
            if let Some(lease) = leases.iter().find(|l| l.dataset_id == dataset_id) {
                return Err(in_use_elsewhere(
                    name,
                    dataset_id,
                    &lease.node_uuid.to_string(),
                ));
            }
            // Conditional on the tag: a lease taken since we looked changes it, and we look again.
            match self
                .inner
                .client
                .delete_dataset(dataset_id, config.tag.as_deref())
                .await
            {
                Ok(_) | Err(flocker::Error::NotFound { .. }) => {
                    info!(volume = %name, dataset = %dataset_id, "deleted dataset");
                    self.records().known.remove(name.as_str());
                    self.save();
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

    async fn mount(&self, name: &VolumeName, id: &MountId) -> Result<PathBuf> {
        // Docker hangs up at its own deadline (or plugin enable's --timeout), which drops this call.
        // The work runs in its own task so it is never cut off half-way with a lease or bind taken;
        // if nobody is left to hear the answer, it is undone.
        let (answer, heard) = oneshot::channel();
        let driver = self.clone();
        let (name, id) = (name.clone(), id.clone());
        tokio::spawn(async move {
            let result = driver.mount_now(&name, &id).await;
            let mounted = result.is_ok();
            if answer.send(result).is_err() && mounted {
                warn!(volume = %name, id = %id, "Docker gave up on this Mount before it finished; undoing it");
                if let Err(e) = driver.unmount_now(&name, &id).await {
                    error!(volume = %name, error = %e, "undoing an abandoned Mount failed");
                }
            }
        });
        heard.await.unwrap_or_else(|_| {
            Err(Error::Internal {
                what: "the Mount task ended without an answer".into(),
            })
        })
    }

    async fn unmount(&self, name: &VolumeName, id: &MountId) -> Result<()> {
        // Runs to completion even if Docker hangs up, so the bind and the lease go together.
        let driver = self.clone();
        let (name, id) = (name.clone(), id.clone());
        tokio::spawn(async move { driver.unmount_now(&name, &id).await })
            .await
            .unwrap_or_else(|e| {
                Err(Error::Internal {
                    what: format!("the Unmount task failed: {e}"),
                })
            })
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
            Err(Error::ControlService { source, .. }) if source.is_unavailable() => {
                // The engine forgets a volume whenever Get fails, so answer from what we last saw.
                let known = self.records().known.get(name.as_str()).cloned();
                match known {
                    Some(known) => Ok(VolumeInfo {
                        name: name.to_string(),
                        mountpoint: self.mountpoint_of(name),
                        status: status(&known, Some(&source.to_string())),
                    }),
                    None => Err(Self::control(name)(source)),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn list(&self) -> Result<Vec<VolumeInfo>> {
        match self.configuration(&"*").await {
            Ok(config) => Ok(by_name(&config.datasets, self.current_node())
                .into_iter()
                .map(|(name, dataset)| self.info(dataset, name))
                .collect()),
            Err(Error::ControlService { source, .. }) if source.is_unavailable() => {
                let records = self.records().clone();
                if records.known.is_empty() {
                    return Err(Self::control(&"*")(source));
                }
                let stale = source.to_string();
                Ok(records
                    .known
                    .iter()
                    .map(|(name, known)| VolumeInfo {
                        name: name.clone(),
                        mountpoint: records.mounts.get(name).map(|r| r.mountpoint.clone()),
                        status: status(known, Some(&stale)),
                    })
                    .collect())
            }
            Err(e) => Err(e),
        }
    }
}

/// Live datasets that carry a volume name.
fn live_named(datasets: &[DatasetConfig]) -> impl Iterator<Item = &DatasetConfig> {
    datasets.iter().filter(|d| !d.deleted && d.name().is_some())
}

/// Which of several datasets with one name comes first. Names made outside the plugin need not be unique
/// (flocker-upstream.md §7.12), so choose deterministically: one on this node, then the lowest dataset ID.
fn preference(dataset: &DatasetConfig, me: Option<NodeId>) -> (bool, DatasetId) {
    (me.is_none() || dataset.primary != me, dataset.dataset_id)
}

/// The dataset a name refers to.
fn pick<'a>(
    datasets: &'a [DatasetConfig],
    name: &str,
    me: Option<NodeId>,
) -> Option<&'a DatasetConfig> {
    live_named(datasets)
        .filter(|d| d.name() == Some(name))
        .min_by_key(|d| preference(d, me))
}

/// The dataset each name refers to, in one pass, sorted by name (Docker keys volumes by name).
fn by_name(datasets: &[DatasetConfig], me: Option<NodeId>) -> BTreeMap<&str, &DatasetConfig> {
    let mut chosen: BTreeMap<&str, &DatasetConfig> = BTreeMap::new();
    for dataset in live_named(datasets) {
        let name = dataset.name().unwrap_or_default();
        match chosen.get(name) {
            Some(current) if preference(current, me) <= preference(dataset, me) => {}
            _ => {
                chosen.insert(name, dataset);
            }
        }
    }
    chosen
}

fn known_volume(dataset: &DatasetConfig) -> KnownVolume {
    KnownVolume {
        dataset_id: dataset.dataset_id,
        primary: dataset.primary,
        size: dataset.maximum_size,
        profile: dataset.metadata.get(PROFILE_KEY).cloned(),
    }
}

fn new_dataset(name: &VolumeName, node: NodeId, request: &CreateRequest) -> NewDataset {
    let mut metadata = BTreeMap::from([
        (NAME_KEY.to_string(), name.to_string()),
        (SIZE_KEY.to_string(), request.size.bytes().to_string()),
    ]);
    if let Some(profile) = &request.profile {
        metadata.insert(PROFILE_KEY.to_string(), profile.clone());
    }
    NewDataset {
        primary: node,
        metadata,
        maximum_size: request.size.bytes(),
    }
}

fn status(known: &KnownVolume, stale: Option<&str>) -> BTreeMap<String, serde_json::Value> {
    let mut status = BTreeMap::from([("dataset_id".to_string(), json!(known.dataset_id))]);
    if let Some(primary) = known.primary {
        status.insert("primary".into(), json!(primary));
    }
    if let Some(size) = known.size {
        status.insert("size".into(), json!(Size::from_bytes(size).to_string()));
        status.insert("size_bytes".into(), json!(size));
    }
    if let Some(profile) = &known.profile {
        status.insert("profile".into(), json!(profile));
    }
    if let Some(reason) = stale {
        status.insert("stale".into(), json!(true));
        status.insert("stale_reason".into(), json!(reason));
    }
    status
}

fn in_use_elsewhere(name: &VolumeName, dataset: DatasetId, holder: &str) -> Error {
    Error::InUse {
        name: name.to_string(),
        place: format!("on node {holder}, which holds the lease on dataset {dataset}"),
    }
}

/// Keeps only records whose bind mount still exists (after `plugin disable` the engine unmounted them),
/// and unmounts binds under the propagated mount that no record explains.
fn reconcile_with_mount_table(mut records: Records, mode: &MountMode) -> Records {
    let MountMode::Propagated(dir) = mode else {
        return records;
    };
    let mounted = match mount::mounts_below(dir) {
        Ok(mounted) => mounted,
        Err(e) => {
            error!(error = %e, "cannot read the mount table; keeping the state file as is");
            return records;
        }
    };
    records.mounts.retain(|name, record| {
        let keep = record.count() > 0 && mounted.contains(&record.mountpoint);
        if !keep {
            info!(volume = %name, mountpoint = %record.mountpoint.display(), "forgetting a mount that is gone");
        }
        keep
    });
    let explained: HashSet<&PathBuf> = records.mounts.values().map(|r| &r.mountpoint).collect();
    for orphan in mounted.iter().filter(|m| !explained.contains(m)) {
        info!(mountpoint = %orphan.display(), "unmounting a bind mount no volume explains");
        if let Err(e) = mount::unmount_all(orphan) {
            error!(mountpoint = %orphan.display(), error = %e, "cannot unmount");
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn dataset(name: &str, primary: Option<NodeId>, deleted: bool) -> DatasetConfig {
        DatasetConfig {
            dataset_id: DatasetId(Uuid::new_v4()),
            primary,
            deleted,
            metadata: BTreeMap::from([(NAME_KEY.to_string(), name.to_string())]),
            maximum_size: Some(1 << 30),
        }
    }

    #[test]
    fn pick_skips_deleted_and_prefers_this_node() {
        let me = NodeId(Uuid::new_v4());
        let other = NodeId(Uuid::new_v4());
        let datasets = vec![
            dataset("v", Some(me), true),
            dataset("v", Some(other), false),
            dataset("v", Some(me), false),
            dataset("w", Some(me), false),
        ];
        assert_eq!(pick(&datasets, "v", Some(me)), Some(&datasets[2]));
        assert_eq!(pick(&datasets, "x", Some(me)), None);
        assert!(
            pick(&datasets, "V", Some(me)).is_none(),
            "names are case-sensitive"
        );
        let chosen = by_name(&datasets, Some(me));
        assert_eq!(chosen.keys().copied().collect::<Vec<_>>(), ["v", "w"]);
        assert_eq!(chosen["v"], &datasets[2], "the same choice as pick");
    }

    #[test]
    fn new_dataset_metadata_has_name_size_and_profile() {
        let node = NodeId(Uuid::new_v4());
        let request = CreateRequest {
            size: Size::from_bytes(10 << 30),
            profile: Some("gold".into()),
        };
        let new = new_dataset(&VolumeName::new("db").unwrap(), node, &request);
        assert_eq!(new.maximum_size, 10 << 30);
        assert_eq!(new.metadata[NAME_KEY], "db");
        assert_eq!(new.metadata[SIZE_KEY], "10737418240");
        assert_eq!(new.metadata[PROFILE_KEY], "gold");
    }

    #[test]
    fn status_reports_stale_answers() {
        let known = known_volume(&dataset("v", None, false));
        let status = status(&known, Some("unreachable"));
        assert_eq!(status["stale"], json!(true));
        assert_eq!(status["size"], json!("1GiB"));
    }
}
