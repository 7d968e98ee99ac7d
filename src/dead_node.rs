//! `release-leases`: the operator's way to get the volumes of a node that is gone for good onto
//! another node (SPEC §9.4).
//!
//! Leases never expire (the plugin takes them with `expires: null`), so a node that dies while its
//! containers use volumes pins those volumes until someone frees its leases. This does that, but only
//! after checking that the node looks dead to the control service: it is not listed in
//! `GET /v1/state/nodes` and no dataset state names it. Flocker forgets a node's state once its agent
//! has been silent for 120 s (`EXPIRATION_TIME`, F:flocker/control/_clusterstate.py), so a node that
//! merely restarted its agent is refused. A node cut off from the control service but still running
//! looks exactly like a dead one: fence it first (power it off, or stop its Docker engine). `--force`
//! skips the check, for a node known to be dead before the control service forgot it, and for a lease
//! this node's UUID holds that no plugin instance owns. Every release still checks, right before the
//! DELETE, that the lease is held by the named node (SPEC §9.1). It does not move anything: the next
//! Mount on a live node does.

use std::fmt;

use crate::flocker::{self, DatasetId, NodeId};

/// What to release.
#[derive(Debug, Clone)]
pub struct Request {
    /// The node whose leases go.
    pub node: NodeId,
    /// Only the lease of this volume (by name); all of the node's leases when `None`.
    pub volume: Option<String>,
    /// Skip the liveness check.
    pub force: bool,
}

/// Why nothing was released.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The control service lists the node: its agent is connected.
    #[error("node {node} is alive: the control service lists it at {host} (GET /v1/state/nodes), so its dataset agent reported within the last 2 minutes. A live node releases its leases itself when its containers stop. If it is really gone, power it off (or stop its Docker engine) and retry once the control service has dropped it, or use --force")]
    Listed {
        /// The node.
        node: NodeId,
        /// Its address.
        host: String,
    },
    /// The cluster state still shows datasets on the node.
    #[error("node {node} is not gone yet: the cluster state still shows {count} dataset(s) on it (GET /v1/state/datasets). Retry once the control service has dropped it (about 2 minutes after its agent stopped), or use --force")]
    StillInState {
        /// The node.
        node: NodeId,
        /// How many datasets.
        count: usize,
    },
    /// The named volume does not exist or the node holds no lease on it.
    #[error("node {node} holds no lease on volume {volume}")]
    NoSuchLease {
        /// The node.
        node: NodeId,
        /// The volume.
        volume: String,
    },
    /// A control-service call failed.
    #[error(transparent)]
    ControlService(#[from] flocker::Error),
}

/// One released (or skipped) lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The dataset.
    pub dataset: DatasetId,
    /// Its volume name, if it has one.
    pub volume: Option<String>,
    /// Whether it was released (false: it had already gone or changed hands).
    pub released: bool,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = self
            .volume
            .as_deref()
            .map(|v| format!("volume {v} (dataset {})", self.dataset))
            .unwrap_or_else(|| format!("dataset {} (no volume name)", self.dataset));
        if self.released {
            write!(f, "released the lease on {what}")
        } else {
            write!(
                f,
                "left {what}: its lease had already gone or changed hands"
            )
        }
    }
}

/// Checks the node looks dead (unless forced), then releases its leases one by one.
pub async fn release_leases(
    client: &flocker::Client,
    request: &Request,
) -> Result<Vec<Outcome>, Refused> {
    let node = request.node;
    if !request.force {
        if let Some(listed) = client.nodes().await?.into_iter().find(|n| n.uuid == node) {
            return Err(Refused::Listed {
                node,
                host: listed.host,
            });
        }
        let count = client
            .state()
            .await?
            .iter()
            .filter(|s| s.primary == Some(node))
            .count();
        if count > 0 {
            return Err(Refused::StillInState { node, count });
        }
    }
    let config = client.configuration().await?;
    let name_of = |dataset: DatasetId| {
        config
            .datasets
            .iter()
            .find(|d| d.dataset_id == dataset)
            .and_then(|d| d.name())
            .map(str::to_string)
    };
    let held: Vec<DatasetId> = client
        .leases()
        .await?
        .into_iter()
        .filter(|l| l.node_uuid == node)
        .map(|l| l.dataset_id)
        .filter(|d| match &request.volume {
            Some(volume) => name_of(*d).as_deref() == Some(volume.as_str()),
            None => true,
        })
        .collect();
    if let (Some(volume), true) = (&request.volume, held.is_empty()) {
        return Err(Refused::NoSuchLease {
            node,
            volume: volume.clone(),
        });
    }
    let mut outcomes = Vec::new();
    for dataset in held {
        // Checked right before the DELETE, which frees a lease whoever holds it.
        let still_held = client
            .leases()
            .await?
            .iter()
            .any(|l| l.dataset_id == dataset && l.node_uuid == node);
        let released = still_held
            && match client.release_lease(dataset).await {
                Ok(_) => true,
                Err(flocker::Error::NotFound { .. }) => false,
                Err(e) => return Err(e.into()),
            };
        outcomes.push(Outcome {
            dataset,
            volume: name_of(dataset),
            released,
        });
    }
    Ok(outcomes)
}
