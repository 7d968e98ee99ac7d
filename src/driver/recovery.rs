//! Start-up recovery: settling the state file with the mount table, then with the control service
//! (SPEC §5, §9.2: recovery adopts, never destroys).
//!
//! Locally, before the socket serves:
//! - mounts recorded in an earlier boot are dropped: nothing survives a reboot;
//! - in a managed plugin, a recorded mount whose bind is gone is dropped: the engine unmounts the
//!   propagated mount only when it stops the plugin (daemon stop, after stopping the containers, or
//!   `plugin disable`, refused while volumes are in use unless forced). One still in use keeps its
//!   lease for the restart grace (an engine crash), or, if it was still in use at the plugin's last
//!   clean stop (*held*: `plugin disable -f` under running containers), until Unmounts drain it;
//! - a bind under `PROPAGATED_MOUNT` that no record explains (state lost, corrupt or stale) is
//!   *adopted*: a running container may use it, so it is kept, with unknown users.
//!
//! Then, once the node is known, with the control service: adopted binds get their names, every
//! volume still in use here keeps (or re-takes) this node's lease, and a volume counts as gone only
//! when the state positively shows it on another node or the configuration shows it deleted and not
//! here. Leases this node holds that no mount needs are released (only if still ours). Every decision
//! about a volume is taken under its lock with fresh reads, never from a snapshot taken before a wait.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{error, info, warn};
use uuid::Uuid;

use super::flocker_driver::FlockerDriver;
use super::store::{Loaded, MountRecord, Records};
use super::MountMode;
use super::VolumeName;
use crate::backoff::Backoff;
use crate::flocker::{Configuration, DatasetConfig, DatasetId, DatasetState, Lease, NodeId};
use crate::identity::Identity;
use crate::mount;

/// What the local settling leaves for the control-service phase.
#[derive(Debug, Default)]
pub struct Unsettled {
    /// Binds found under the propagated mount without a record: (dataset, mountpoint).
    pub adopted_binds: Vec<(DatasetId, PathBuf)>,
    /// Recorded volumes whose bind the engine removed: kept (with their leases) for the restart grace.
    pub detached: Vec<String>,
    /// Whether the state file was read intact (else this node's leases may belong to mounts it lost).
    pub file_complete: bool,
}

/// Settles the loaded state with this boot and the mount table. Blocking; runs once at start.
pub fn settle_locally(
    loaded: Loaded,
    mode: &MountMode,
    boot: Option<Uuid>,
) -> (Records, Unsettled) {
    let mut records = loaded.records();
    let mut pending = Unsettled {
        adopted_binds: Vec::new(),
        detached: Vec::new(),
        file_complete: loaded.is_complete(),
    };
    if let (Some(recorded), Some(now)) = (records.boot_id, boot) {
        if recorded != now {
            for name in records.mounts.keys() {
                info!(volume = %name, "forgetting a mount recorded before the host rebooted");
            }
            records.mounts.clear();
            records.pending.clear();
        }
    }
    records.boot_id = boot;
    let MountMode::Propagated(dir) = mode else {
        return (records, pending);
    };
    let mounted = match mount::mounts_below(dir) {
        Ok(mounted) => mounted,
        Err(e) => {
            error!(error = %e, "cannot read the mount table; keeping the state file as is");
            return (records, pending);
        }
    };
    for (name, record) in &records.mounts {
        if !mounted.contains(&record.mountpoint) && record.in_use() {
            if record.held {
                // Its containers outlived a clean stop (`docker plugin disable -f`) and write through
                // their own copies of the bind; only their Unmounts (sent when they stop) tell when
                // they are gone, so there is no grace after which it is safe to let the volume move.
                warn!(volume = %name, mountpoint = %record.mountpoint.display(), users = record.count(), "the engine removed this bind while containers still used the volume at the plugin's last clean stop (docker plugin disable -f); keeping it and its lease, with no restart grace, until their Unmounts drain it (sent when they stop) or the host reboots. If no container uses it any more, free it with `flocker-docker-plugin release-leases --node <this node's UUID> --volume {name} --force`");
                continue;
            }
            // After an engine crash the engine removes the propagated mounts *before* it stops the old
            // containers (reference/docker-plugin.md §2): their users may still be running.
            warn!(volume = %name, mountpoint = %record.mountpoint.display(), "the engine removed this bind (plugin stopped, disabled or restarted); keeping its lease for the restart grace");
            pending.detached.push(name.clone());
        }
    }
    records
        .mounts
        .retain(|_, record| record.in_use() || mounted.contains(&record.mountpoint));
    let unanswered = std::mem::take(&mut records.pending);
    for bind in &mounted {
        if records.mounts.values().any(|r| &r.mountpoint == bind) {
            continue;
        }
        if let Some((name, _)) = unanswered.iter().find(|(_, p)| &p.mountpoint == bind) {
            // The plugin died between this bind and its answer: Docker never used it.
            info!(volume = %name, mountpoint = %bind.display(), "removing the bind of a Mount that was never answered");
            if let Err(e) = mount::unmount_all(bind) {
                error!(mountpoint = %bind.display(), error = %e, "cannot remove it; adopting it instead");
                if let Some(dataset) = dataset_of(bind) {
                    pending.adopted_binds.push((dataset, bind.clone()));
                }
            }
            continue;
        }
        match dataset_of(bind) {
            Some(dataset) => {
                error!(mountpoint = %bind.display(), dataset = %dataset, "a bind mount of this plugin has no record (state file lost, corrupt or stale); keeping it and its lease, as a container may be using it");
                pending.adopted_binds.push((dataset, bind.clone()));
            }
            None => {
                warn!(mountpoint = %bind.display(), "a mount under PROPAGATED_MOUNT that this plugin did not make; leaving it alone");
            }
        }
    }
    (records, pending)
}

/// The dataset a bind of ours is named after (`PROPAGATED_MOUNT/<dataset_id>`).
fn dataset_of(bind: &Path) -> Option<DatasetId> {
    let name = bind.file_name()?.to_str()?;
    Uuid::parse_str(name).ok().map(DatasetId)
}

/// What the control service says about one dataset, read fresh.
enum Whereabouts {
    /// Configured here (or shown here by the state): in place.
    Here,
    /// The state shows it mounted on another node: it really moved away.
    Elsewhere(NodeId),
    /// Deleted or unknown, and the state does not show it here.
    Gone,
    /// Configured elsewhere but not (yet) shown elsewhere: possibly still here, so kept.
    Unsure,
}

impl FlockerDriver {
    /// Once the node is known: settles every mount record and this node's leases with the control
    /// service (see the module documentation). Retries reads with backoff until they work or the
    /// driver stops.
    pub async fn reconcile(&self) {
        let Some(node) = self.known_node().await else {
            return;
        };
        let Some((config, leases, sent)) = self.read_cluster().await else {
            return;
        };
        let config = Arc::new(config);
        self.remember(&config, sent);
        let pending = self
            .inner
            .pending
            .lock()
            .expect("pending lock")
            .take()
            .unwrap_or_default();
        self.adopt_binds(&config, &pending.adopted_binds).await;
        for name in pending.detached {
            self.expire_after_grace(name);
        }
        if !pending.file_complete {
            if let MountMode::Legacy = self.inner.settings.mount_mode {
                self.adopt_leased_here(&config, &leases, node).await;
            }
        }
        let names: Vec<String> = self.inner.store.read().mounts.keys().cloned().collect();
        for name in names {
            if self.inner.stop.is_cancelled() {
                return;
            }
            self.settle_volume(&name, &config, node).await;
        }
        for lease in leases.iter().filter(|l| l.node_uuid == node) {
            if self.inner.stop.is_cancelled() {
                return;
            }
            self.settle_unneeded_lease(lease, &config, node).await;
        }
        self.forget_empty_claims(&config, &leases, node).await;
        let _ = self.inner.store.update(|_| ()).await;
        info!("start-up recovery done");
    }

    async fn known_node(&self) -> Option<NodeId> {
        let mut identity = self.inner.identity.clone();
        tokio::select! {
            _ = self.inner.stop.cancelled() => None,
            known = identity.wait_for(|i| matches!(i, Identity::Known(_))) => match known {
                Ok(i) => match *i {
                    Identity::Known(node) => Some(node),
                    Identity::Pending(_) => None,
                },
                Err(_) => None,
            },
        }
    }

    /// The configuration and the leases, and when the requests that answered were sent.
    async fn read_cluster(&self) -> Option<(Configuration, Vec<Lease>, tokio::time::Instant)> {
        let mut backoff = Backoff::new(
            std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(10),
        );
        let client = &self.inner.client;
        loop {
            let sent = tokio::time::Instant::now();
            match tokio::try_join!(client.configuration(), client.leases()) {
                Ok((config, leases)) => return Some((config, leases, sent)),
                Err(e) => warn!(error = %e, "recovery: control service not answering; retrying"),
            }
            tokio::select! {
                _ = self.inner.stop.cancelled() => return None,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// Gives adopted binds their volume names.
    async fn adopt_binds(&self, config: &Configuration, binds: &[(DatasetId, PathBuf)]) {
        for (dataset, bind) in binds {
            let Some(name) = config
                .datasets
                .iter()
                .find(|d| d.dataset_id == *dataset)
                .and_then(|d| d.name())
            else {
                error!(mountpoint = %bind.display(), dataset = %dataset, "adopted bind of a dataset with no volume name; left mounted, never released automatically");
                continue;
            };
            let _guard = self.inner.locks.lock(name).await;
            self.adopt(name, *dataset, bind.clone()).await;
            warn!(volume = %name, dataset = %dataset, "adopted: kept mounted and leased until the plugin is disabled or the host reboots");
        }
    }

    /// Records `name` as mounted here with unknown users, and its lease as this plugin's, unless a
    /// Mount since the start recorded it with its ID. Call it holding the volume's lock.
    async fn adopt(&self, name: &str, dataset: DatasetId, mountpoint: PathBuf) {
        if self.inner.store.read().mounts.contains_key(name) {
            return;
        }
        let record = MountRecord {
            dataset_id: dataset,
            mountpoint,
            ids: BTreeMap::new(),
            adopted: true,
            held: false,
        };
        let _ = self
            .inner
            .store
            .update(|r| {
                r.mounts.insert(name.to_string(), record);
                r.leased.insert(dataset);
            })
            .await;
    }

    /// Legacy mode with a lost state file: this node's leases on datasets mounted here may belong to
    /// running containers (nothing else tells), so they are adopted too.
    async fn adopt_leased_here(&self, config: &Configuration, leases: &[Lease], node: NodeId) {
        let state = match self.inner.client.state().await {
            Ok(state) => state,
            Err(e) => {
                error!(error = %e, "recovery: cannot read the state to adopt leased volumes; their leases are kept");
                return;
            }
        };
        for lease in leases.iter().filter(|l| l.node_uuid == node) {
            let Some(name) = name_of(config, lease.dataset_id) else {
                continue;
            };
            let Some(path) = path_here(&state, lease.dataset_id, node) else {
                continue;
            };
            let settings = &self.inner.settings;
            let Ok(local) = super::source::local_path(
                &settings.agent_mount_root,
                &settings.flocker_root,
                lease.dataset_id,
                &path,
            ) else {
                continue;
            };
            let _guard = self.inner.locks.lock(name).await;
            self.adopt(name, lease.dataset_id, local).await;
            error!(volume = %name, dataset = %lease.dataset_id, "state file lost: this node holds the lease and the dataset is here, so it is adopted as in use; it stays leased until the host reboots");
        }
    }

    /// One recorded volume, under its lock, from fresh reads.
    async fn settle_volume(&self, name: &str, config: &Configuration, node: NodeId) {
        let Ok(volume) = VolumeName::new(name) else {
            return;
        };
        let _guard = self.inner.locks.lock(name).await;
        let Some(record) = self.inner.store.read().mounts.get(name).cloned() else {
            return; // Unmounted meanwhile.
        };
        if !record.in_use() {
            // Left without users by a failed unmount: finish it.
            self.inner.store.read().mounts.remove(name);
            if let Err(e) = self.unmount_last(&volume, record).await {
                error!(volume = %name, error = %e, "recovery: unmount failed");
            }
            return;
        }
        let dataset = record.dataset_id;
        if !self.inner.leases.owns(dataset) {
            let _ = self.inner.store.update(|r| r.leased.insert(dataset)).await;
        }
        match self.whereabouts(dataset, config, node).await {
            Some(Whereabouts::Here) => self.keep_here(&volume, dataset, node, false).await,
            Some(Whereabouts::Unsure) => self.keep_here(&volume, dataset, node, true).await,
            Some(Whereabouts::Elsewhere(other)) => {
                warn!(volume = %name, dataset = %dataset, node = %other, "recovery: the dataset is now on another node; removing this node's stale bind");
                self.forget(&volume, record, node).await;
            }
            Some(Whereabouts::Gone) => {
                warn!(volume = %name, dataset = %dataset, "recovery: the dataset was deleted and is not here; removing the stale bind");
                self.forget(&volume, record, node).await;
            }
            None => {
                // No fresh answer: nothing is decided from an old one. Keep the lease we may hold.
                warn!(volume = %name, "recovery: control service not answering; keeping the mount and its lease as they are");
            }
        }
    }

    async fn whereabouts(
        &self,
        dataset: DatasetId,
        config: &Configuration,
        node: NodeId,
    ) -> Option<Whereabouts> {
        let configured: Option<&DatasetConfig> = config
            .datasets
            .iter()
            .find(|d| d.dataset_id == dataset && !d.deleted);
        if configured.is_some_and(|d| d.primary == Some(node)) {
            return Some(Whereabouts::Here);
        }
        let state = self.inner.client.state().await.ok()?;
        if path_here(&state, dataset, node).is_some() {
            return Some(Whereabouts::Here);
        }
        let elsewhere = state
            .iter()
            .find(|s| s.dataset_id == dataset && s.path.is_some() && s.primary != Some(node))
            .and_then(|s| s.primary);
        Some(match (configured, elsewhere) {
            (_, Some(other)) => Whereabouts::Elsewhere(other),
            (None, None) => Whereabouts::Gone,
            (Some(_), None) => Whereabouts::Unsure,
        })
    }

    /// Keeps a volume in use here leased by this node; points its configuration back here if it moved.
    async fn keep_here(&self, name: &VolumeName, dataset: DatasetId, node: NodeId, unsure: bool) {
        let leases = &self.inner.leases;
        let patience = tokio::time::Instant::now() + leases.settle_window() * 2;
        match leases.take(name, dataset, node, patience).await {
            Ok(_) => {}
            Err(e) => {
                error!(volume = %name, dataset = %dataset, error = %e, "recovery: a volume in use here cannot be leased by this node; not touching it");
                return;
            }
        }
        if unsure {
            warn!(volume = %name, dataset = %dataset, "recovery: configured on another node but in use here; pointing it back here");
        }
        let config = match self.inner.client.configuration().await {
            Ok(config) => config,
            Err(e) => {
                warn!(volume = %name, error = %e, "recovery: cannot check where the dataset is configured");
                return;
            }
        };
        let elsewhere = config
            .datasets
            .iter()
            .any(|d| d.dataset_id == dataset && !d.deleted && d.primary != Some(node));
        if elsewhere {
            if let Err(e) = self.inner.client.move_dataset(dataset, node).await {
                error!(volume = %name, error = %e, "recovery: cannot point the dataset back here");
            }
        }
    }

    /// Drops a record whose dataset is positively gone from here; releases the lease only if ours.
    async fn forget(&self, name: &VolumeName, record: MountRecord, node: NodeId) {
        if let Err(e) = self.unbind(&record).await {
            error!(volume = %name, error = %e, "recovery: cannot remove the stale bind; keeping its record");
            return;
        }
        let _ = self
            .inner
            .store
            .update(|r| r.mounts.remove(name.as_str()))
            .await;
        self.inner
            .leases
            .release(name, record.dataset_id, node)
            .await;
    }

    /// A lease this node held at the snapshot: released if no mount here needs it, checked under the lock.
    async fn settle_unneeded_lease(&self, lease: &Lease, config: &Configuration, node: NodeId) {
        // Only volumes are ours to manage: a dataset without a name was leased by another tool.
        let Some(name) = name_of(config, lease.dataset_id) else {
            return;
        };
        let Ok(volume) = VolumeName::new(name) else {
            return;
        };
        let _guard = self.inner.locks.lock(name).await;
        if !self.inner.leases.owns(lease.dataset_id) {
            warn!(volume = %name, dataset = %lease.dataset_id, node = %node, "recovery: this node's UUID holds a lease this plugin did not take (another host with the same NODE_UUID, another tool, or lost state); leaving it alone");
            return;
        }
        let needed = self
            .inner
            .store
            .read()
            .mounts
            .values()
            .any(|r| r.dataset_id == lease.dataset_id);
        if needed {
            return;
        }
        info!(volume = %name, dataset = %lease.dataset_id, "recovery: releasing a lease no mount needs");
        self.inner
            .leases
            .release(&volume, lease.dataset_id, node)
            .await;
    }

    /// Claims of leases this node did not hold at the snapshot (a crash between the claim and the
    /// request): forgotten under the volume's lock, unless a Mount or a doubtful request needs them.
    async fn forget_empty_claims(&self, config: &Configuration, leases: &[Lease], node: NodeId) {
        let claims: Vec<DatasetId> = self.inner.store.read().leased.iter().copied().collect();
        for dataset in claims {
            if leases
                .iter()
                .any(|l| l.dataset_id == dataset && l.node_uuid == node)
            {
                continue;
            }
            let Some(name) = name_of(config, dataset) else {
                continue;
            };
            let _guard = self.inner.locks.lock(name).await;
            let recorded = self
                .inner
                .store
                .read()
                .mounts
                .values()
                .any(|r| r.dataset_id == dataset)
                || self.inner.store.read().pending.contains_key(name);
            if recorded || self.inner.leases.in_doubt(dataset) {
                continue;
            }
            match self.inner.leases.holder(dataset).await {
                Ok(Some(holder)) if holder == node => {} // Taken since the snapshot: keep the claim.
                Ok(_) => self.inner.leases.disown(dataset).await,
                Err(_) => {}
            }
        }
    }

    /// A volume whose bind the engine removed at start: once the restart grace is over, if no Mount
    /// has bound it again and Unmounts have not drained it, its users are gone; drop it and give the
    /// lease back.
    fn expire_after_grace(&self, name: String) {
        let driver = self.clone();
        let grace = self.inner.settings.restart_grace;
        self.inner.tasks.spawn(async move {
            tokio::select! {
                _ = driver.inner.stop.cancelled() => return,
                _ = tokio::time::sleep(grace) => {}
            }
            let Ok(volume) = VolumeName::new(&name) else {
                return;
            };
            let _guard = driver.inner.locks.lock(&name).await;
            let Some(record) = driver.inner.store.read().mounts.get(&name).cloned() else {
                return;
            };
            let target = record.mountpoint.clone();
            let rebound =
                crate::blocking::run(move || mount::is_mount_point(&target).unwrap_or(true)).await;
            if rebound {
                return;
            }
            info!(volume = %name, "restart grace over and the bind was never needed again; dropping its record and lease");
            driver.inner.store.read().mounts.remove(&name);
            if let Err(e) = driver.unmount_last(&volume, record).await {
                error!(volume = %name, error = %e, "dropping an expired mount failed");
            }
        });
    }
}

fn name_of(config: &Configuration, dataset: DatasetId) -> Option<&str> {
    config
        .datasets
        .iter()
        .find(|d| d.dataset_id == dataset)
        .and_then(|d| d.name())
}

fn path_here(state: &[DatasetState], dataset: DatasetId, node: NodeId) -> Option<PathBuf> {
    state
        .iter()
        .find(|s| s.dataset_id == dataset && s.primary == Some(node))
        .and_then(|s| s.path.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_from_an_earlier_boot_are_dropped() {
        let record = MountRecord {
            dataset_id: DatasetId(Uuid::new_v4()),
            mountpoint: "/nowhere".into(),
            ids: BTreeMap::from([("c".to_string(), 1)]),
            adopted: false,
            held: false,
        };
        let mut records = Records {
            boot_id: Some(Uuid::new_v4()),
            ..Records::default()
        };
        records.mounts.insert("v".into(), record);
        let now = Uuid::new_v4();
        let (settled, pending) =
            settle_locally(Loaded::Read(records.clone()), &MountMode::Legacy, Some(now));
        assert!(settled.mounts.is_empty());
        assert_eq!(settled.boot_id, Some(now));
        assert!(pending.file_complete);
        let same_boot = records.boot_id;
        let (settled, _) = settle_locally(Loaded::Read(records), &MountMode::Legacy, same_boot);
        assert_eq!(settled.mounts.len(), 1, "same boot: kept");
    }

    #[test]
    fn vanished_binds_held_through_a_clean_stop_get_no_grace() {
        let dir = std::env::temp_dir().join(format!("fdp-recovery-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let record = |held| MountRecord {
            dataset_id: DatasetId(Uuid::new_v4()),
            mountpoint: dir.join(Uuid::new_v4().to_string()),
            ids: BTreeMap::from([("c".to_string(), 1)]),
            adopted: false,
            held,
        };
        let mut records = Records::default();
        records.mounts.insert("crashed".into(), record(false));
        records.mounts.insert("held".into(), record(true));
        let (settled, pending) = settle_locally(
            Loaded::Read(records),
            &MountMode::Propagated(dir.clone()),
            None,
        );
        assert_eq!(pending.detached, vec!["crashed".to_string()]);
        assert!(
            settled.mounts["held"].held,
            "the mark stays until it drains"
        );
        assert_eq!(settled.mounts.len(), 2, "both kept with their leases");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn only_uuid_named_binds_are_ours() {
        let id = Uuid::new_v4();
        assert_eq!(
            dataset_of(Path::new(&format!("/mnt/flocker/{id}"))),
            Some(DatasetId(id))
        );
        assert_eq!(dataset_of(Path::new("/mnt/flocker/stray")), None);
    }
}
