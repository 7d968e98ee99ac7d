//! This node's leases: take, release only if ours, and retry a failed release (SPEC §9.1).
//!
//! Flocker's `DELETE /v1/configuration/leases/<id>` frees a lease *whoever* holds it. So every release
//! first reads the leases and deletes only one this node holds; a release that failed (control service
//! down, or the answer lost after the delete was applied) is retried in the background, at most one
//! retry per volume, under the volume's lock, and the next Mount of that volume cancels it. Between the
//! check and the DELETE the lease cannot change hands: only its holder (this node) releases it, and no
//! other node can take a held lease. It does not decide *when* a lease is needed; the driver does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::locks::VolumeLocks;
use super::select::in_use_elsewhere;
use super::store::Store;
use super::{Error, Result, VolumeName};
use crate::backoff::Backoff;
use crate::flocker::{self, Acquired, DatasetId, NodeId};

/// First and longest wait between two attempts of a failed release.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What a release found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// This node held it; it is gone now.
    Released,
    /// Nobody held it (already released, perhaps by a lost earlier answer).
    NotHeld,
    /// Another node holds it: left alone.
    HeldBy(NodeId),
}

/// Lease handling for one plugin instance.
#[derive(Debug)]
pub struct Leases {
    client: flocker::Client,
    locks: Arc<VolumeLocks>,
    store: Arc<Store>,
    /// Volume name → generation of its one pending retry.
    retries: Mutex<HashMap<String, u64>>,
    generations: AtomicU64,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Leases {
    /// Lease handling through `client`; retries run on `tasks` and end when `stop` is cancelled.
    pub fn new(
        client: flocker::Client,
        locks: Arc<VolumeLocks>,
        store: Arc<Store>,
        tasks: TaskTracker,
        stop: CancellationToken,
    ) -> Arc<Leases> {
        Arc::new(Leases {
            client,
            locks,
            store,
            retries: Mutex::new(HashMap::new()),
            generations: AtomicU64::new(0),
            tasks,
            stop,
        })
    }

    /// Leases `dataset` for `node`; a lease held elsewhere means the volume is in use there.
    pub async fn take(
        &self,
        name: &VolumeName,
        dataset: DatasetId,
        node: NodeId,
    ) -> Result<Acquired> {
        match self.client.acquire_lease(dataset, node).await {
            Ok(acquired) => Ok(acquired),
            Err(flocker::Error::Conflict { .. }) => {
                let holder = match self.holder(dataset).await {
                    Ok(Some(holder)) => holder.to_string(),
                    _ => "another node".into(),
                };
                Err(in_use_elsewhere(name, dataset, &holder))
            }
            Err(source) => Err(Error::ControlService {
                name: name.to_string(),
                source,
            }),
        }
    }

    /// Who holds the lease on `dataset`, if anyone.
    pub async fn holder(&self, dataset: DatasetId) -> flocker::Result<Option<NodeId>> {
        let leases = self.client.leases().await?;
        Ok(leases
            .into_iter()
            .find(|l| l.dataset_id == dataset)
            .map(|l| l.node_uuid))
    }

    /// Deletes the lease on `dataset` only if `node` holds it, checked right before the DELETE.
    pub async fn release_if_held_by(
        &self,
        dataset: DatasetId,
        node: NodeId,
    ) -> flocker::Result<Release> {
        match self.holder(dataset).await? {
            None => Ok(Release::NotHeld),
            Some(holder) if holder != node => Ok(Release::HeldBy(holder)),
            Some(_) => match self.client.release_lease(dataset).await {
                Ok(_) => Ok(Release::Released),
                Err(flocker::Error::NotFound { .. }) => Ok(Release::NotHeld),
                Err(e) => Err(e),
            },
        }
    }

    /// Cancels the pending retry of `name`, if any; says whether there was one. Call it holding the
    /// volume's lock (a Mount does, first thing).
    pub fn cancel_retry(&self, name: &str) -> bool {
        self.retries
            .lock()
            .expect("retry table")
            .remove(name)
            .is_some()
    }

    /// Releases this node's lease on `dataset` now, or arms one background retry. Call it holding the
    /// volume's lock, once nothing here uses the volume.
    pub async fn release(self: &Arc<Self>, name: &VolumeName, dataset: DatasetId, node: NodeId) {
        self.cancel_retry(name.as_str());
        match self.release_if_held_by(dataset, node).await {
            Ok(outcome) => self.settled(name, dataset, outcome).await,
            Err(e) => {
                warn!(volume = %name, dataset = %dataset, error = %e, "lease release failed; retrying in the background");
                self.arm_retry(name, dataset, node);
            }
        }
    }

    fn arm_retry(self: &Arc<Self>, name: &VolumeName, dataset: DatasetId, node: NodeId) {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        self.retries
            .lock()
            .expect("retry table")
            .insert(name.to_string(), generation);
        let leases = Arc::clone(self);
        let name = name.clone();
        self.tasks.spawn(async move {
            leases.retry(name, dataset, node, generation).await;
        });
    }

    /// Whether `generation` is still the pending retry of `name`.
    fn is_current(&self, name: &str, generation: u64) -> bool {
        self.retries.lock().expect("retry table").get(name) == Some(&generation)
    }

    async fn retry(&self, name: VolumeName, dataset: DatasetId, node: NodeId, generation: u64) {
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
            let _guard = tokio::select! {
                _ = self.stop.cancelled() => return,
                guard = self.locks.lock(name.as_str()) => guard,
            };
            if !self.is_current(name.as_str(), generation) {
                return; // A Mount cancelled it, or a newer release replaced it.
            }
            if self.store.read().mounts.contains_key(name.as_str()) {
                self.cancel_retry(name.as_str());
                return; // Mounted here again: the lease is wanted.
            }
            match self.release_if_held_by(dataset, node).await {
                Ok(outcome) => {
                    self.cancel_retry(name.as_str());
                    self.settled(&name, dataset, outcome).await;
                    return;
                }
                Err(e) => {
                    warn!(volume = %name, dataset = %dataset, error = %e, "lease release failed again")
                }
            }
        }
    }
}

impl Leases {
    /// Whether this plugin took the lease on `dataset` and has not given it back.
    pub fn owns(&self, dataset: DatasetId) -> bool {
        self.store.read().leased.contains(&dataset)
    }

    /// Records, durably, that this plugin is about to take the lease on `dataset`.
    pub async fn claim(
        &self,
        dataset: DatasetId,
    ) -> std::result::Result<(), super::store::SaveError> {
        let (_, saved) = self.store.update(|r| r.leased.insert(dataset)).await;
        if saved.is_err() {
            self.store.read().leased.remove(&dataset);
        }
        saved
    }

    /// Forgets a claim: this plugin does not hold that lease.
    pub async fn disown(&self, dataset: DatasetId) {
        let _ = self.store.update(|r| r.leased.remove(&dataset)).await;
    }

    /// A release reached a definite outcome: the lease is no longer this plugin's.
    async fn settled(&self, name: &VolumeName, dataset: DatasetId, outcome: Release) {
        log_outcome(name, dataset, outcome);
        self.disown(dataset).await;
    }
}

fn log_outcome(name: &VolumeName, dataset: DatasetId, outcome: Release) {
    match outcome {
        Release::Released => info!(volume = %name, dataset = %dataset, "lease released"),
        Release::NotHeld => info!(volume = %name, dataset = %dataset, "no lease to release"),
        Release::HeldBy(holder) => {
            info!(volume = %name, dataset = %dataset, holder = %holder, "lease now held by another node; left alone")
        }
    }
}
