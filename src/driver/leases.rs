//! This node's leases: take, release only if ours, retry a failed release, and wait out requests whose
//! outcome is unknown (SPEC §9.1).
//!
//! Flocker's `DELETE /v1/configuration/leases/<id>` frees a lease *whoever* holds it. So a release first
//! reads the leases and deletes only one this node holds and this plugin claimed (the state file lists
//! its claims, written before a lease is requested). A release that failed is retried in the
//! background, at most one retry per volume, under the volume's lock; the next Mount cancels it.
//!
//! A lease request that was sent but never answered (a timeout, a broken connection) may still be
//! carried out later by a busy control service. Until [`Leases::settle_window`] has passed since it was
//! sent, the dataset is *in doubt*: no other lease request for it is sent (a late DELETE would
//! otherwise free the lease a new Mount just renewed; a late POST would re-take a lease just given
//! back), and a release is left to the background retry, which waits the doubt out and then looks. It
//! does not decide *when* a lease is needed; the driver does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::locks::VolumeLocks;
use super::reads::{Coalesced, Freshness};
use super::select::in_use_elsewhere;
use super::store::Store;
use super::{Error, Result, VolumeName};
use crate::backoff::Backoff;
use crate::flocker::{self, Acquired, DatasetId, Lease, NodeId};

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
    /// Dataset → until when an unanswered lease request for it may still be carried out.
    doubt: Mutex<HashMap<DatasetId, Instant>>,
    /// Lease reads shared by concurrent releases.
    lease_reads: Coalesced<Vec<Lease>>,
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
            doubt: Mutex::new(HashMap::new()),
            lease_reads: Coalesced::default(),
            tasks,
            stop,
        })
    }

    /// How long an unanswered request may still be carried out: twice the client's request timeout.
    /// A control service that queues requests longer than that is indistinguishable from one that
    /// dropped them; the README says so.
    pub fn settle_window(&self) -> Duration {
        self.client.request_timeout() * 2
    }

    /// Whether the outcome of an earlier request for `dataset` is still unknown.
    pub fn in_doubt(&self, dataset: DatasetId) -> bool {
        self.doubt_until(dataset).is_some()
    }

    fn doubt_until(&self, dataset: DatasetId) -> Option<Instant> {
        let mut doubt = self.doubt.lock().expect("doubt table");
        match doubt.get(&dataset) {
            Some(until) if *until > Instant::now() => Some(*until),
            Some(_) => {
                doubt.remove(&dataset);
                None
            }
            None => None,
        }
    }

    /// Records that a request for `dataset` went unanswered (if `error` says so).
    fn note(&self, dataset: DatasetId, error: &flocker::Error) {
        if error.in_doubt() {
            let until = Instant::now() + self.settle_window();
            warn!(dataset = %dataset, until_s = self.settle_window().as_secs(), error = %error, "a lease request went unanswered; no other lease request for this dataset until it can no longer be carried out");
            self.doubt
                .lock()
                .expect("doubt table")
                .insert(dataset, until);
        }
    }

    /// Waits until no earlier request for `dataset` can still land, or `deadline`; false at the deadline.
    async fn wait_out_doubt(&self, dataset: DatasetId, deadline: Instant) -> bool {
        while let Some(until) = self.doubt_until(dataset) {
            if until > deadline {
                return false;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return false,
                _ = tokio::time::sleep_until(until) => {}
            }
        }
        true
    }

    /// Leases `dataset` for `node`; a lease held elsewhere means the volume is in use there. Waits (until
    /// `deadline`) for an earlier unanswered request on it to be past landing.
    pub async fn take(
        &self,
        name: &VolumeName,
        dataset: DatasetId,
        node: NodeId,
        deadline: Instant,
    ) -> Result<Acquired> {
        if !self.wait_out_doubt(dataset, deadline).await {
            return Err(Error::Timeout {
                name: name.to_string(),
                dataset: Some(dataset),
                waited: Duration::ZERO,
                detail: "an earlier lease request to the control service went unanswered and may still be carried out; retry in a minute".into(),
            });
        }
        match self.client.acquire_lease(dataset, node).await {
            Ok(acquired) => Ok(acquired),
            Err(flocker::Error::Conflict { .. }) => {
                let holder = match self.holder(dataset).await {
                    Ok(Some(holder)) => holder.to_string(),
                    _ => "another node".into(),
                };
                Err(in_use_elsewhere(name, dataset, &holder))
            }
            Err(source) => {
                self.note(dataset, &source);
                Err(Error::ControlService {
                    name: name.to_string(),
                    source,
                })
            }
        }
    }

    /// Who holds the lease on `dataset` now: from a read sent after this call began (shared with
    /// concurrent callers, so many releases at once cost one read).
    pub async fn holder(&self, dataset: DatasetId) -> flocker::Result<Option<NodeId>> {
        let client = &self.client;
        let leases = self
            .lease_reads
            .get(Freshness::StartedAfter(Instant::now()), || client.leases())
            .await?;
        Ok(leases
            .iter()
            .find(|l| l.dataset_id == dataset)
            .map(|l| l.node_uuid))
    }

    /// Deletes the lease on `dataset` only if `node` holds it, checked right before the DELETE. Call it
    /// only once the dataset is out of doubt.
    async fn release_if_held_by(
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
                Err(e) => {
                    self.note(dataset, &e);
                    Err(e)
                }
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

    /// Releases this plugin's lease on `dataset` now, or arms one background retry (at once if an
    /// earlier request is in doubt). Call it holding the volume's lock, once nothing here uses it.
    pub async fn release(self: &Arc<Self>, name: &VolumeName, dataset: DatasetId, node: NodeId) {
        self.cancel_retry(name.as_str());
        if self.in_doubt(dataset) {
            info!(volume = %name, dataset = %dataset, "lease release waits until an unanswered request can no longer land");
            self.arm_retry(name, dataset, node);
            return;
        }
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
            let pause = match self.doubt_until(dataset) {
                Some(until) => until.saturating_duration_since(Instant::now()),
                None => backoff.next_delay(),
            };
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            let _guard = tokio::select! {
                _ = self.stop.cancelled() => return,
                guard = self.locks.lock(name.as_str()) => guard,
            };
            if !self.is_current(name.as_str(), generation) {
                return; // A Mount cancelled it, or a newer release replaced it.
            }
            // Mounted here again *on this dataset*: the lease is wanted. A Mount that let go of a
            // wrong first guess and bound another dataset under the same name does not want it.
            let wanted = self
                .store
                .read()
                .mounts
                .get(name.as_str())
                .is_some_and(|record| record.dataset_id == dataset);
            if wanted {
                self.cancel_retry(name.as_str());
                return;
            }
            if self.in_doubt(dataset) {
                continue;
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
        match outcome {
            Release::Released => info!(volume = %name, dataset = %dataset, "lease released"),
            Release::NotHeld => info!(volume = %name, dataset = %dataset, "no lease to release"),
            Release::HeldBy(holder) => {
                info!(volume = %name, dataset = %dataset, holder = %holder, "lease now held by another node; left alone")
            }
        }
        self.disown(dataset).await;
    }
}
