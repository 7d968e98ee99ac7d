//! The driver's errors: the text Docker users read in `docker run` / `docker volume` output.
//!
//! Every variant names the volume and says what to do; the protocol layer sends `to_string()` as `Err`.

use std::path::PathBuf;
use std::time::Duration;

use crate::flocker::{self, DatasetId};
use crate::mount;

/// A failed volume call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name is empty or too long.
    #[error("invalid volume name: {reason}")]
    InvalidName {
        /// What is wrong.
        reason: String,
    },
    /// A `-o` option was refused.
    #[error("volume {name}: option {key}={value:?} refused: {reason}")]
    InvalidOption {
        /// The volume.
        name: String,
        /// The option.
        key: String,
        /// Its value.
        value: String,
        /// Why, and what is accepted.
        reason: String,
    },
    /// No live dataset has this name. The first sentence is the original plugin's (flocker-upstream.md §9).
    #[error("Could not find volume with given name. No Flocker dataset is named {name:?}; create it with `docker volume create -d flocker {name}`")]
    NotFound {
        /// The volume.
        name: String,
    },
    /// The node's Flocker UUID is not known yet (SPEC §4).
    #[error(
        "volume {name}: this node's Flocker identity is not known yet ({waiting}); retry shortly"
    )]
    NodeUnknown {
        /// The volume.
        name: String,
        /// What the identity lookup is waiting for.
        waiting: String,
    },
    /// Leased by another node, or mounted by containers.
    #[error("volume {name} is in use {place}; stop the containers using it there first")]
    InUse {
        /// The volume.
        name: String,
        /// Where, e.g. "on node <uuid> (it holds the lease on dataset <id>)".
        place: String,
    },
    /// Path was asked for a volume this plugin has not mounted.
    #[error("volume {name} is not mounted on this node")]
    NotMountedHere {
        /// The volume.
        name: String,
    },
    /// The dataset did not arrive in time. The first sentence is the original plugin's.
    #[error("Timed out waiting for dataset to mount. Volume {name}{} was not on this node after {}s: {detail}", dataset.map(|d| format!(" (dataset {d})")).unwrap_or_default(), waited.as_secs())]
    Timeout {
        /// The volume.
        name: String,
        /// Its dataset, when known.
        dataset: Option<DatasetId>,
        /// How long this call waited.
        waited: Duration,
        /// The last thing seen.
        detail: String,
    },
    /// The agent's mount is not visible inside the plugin: binding it would hand Docker an empty directory.
    #[error("volume {name}: the dataset agent reports dataset {dataset} mounted at {agent_path}, but {seen} is not a mount point as the plugin sees it. Mount propagation is broken: make the agent's mount root a shared mount on the host (mount --bind /flocker /flocker && mount --make-shared /flocker), then disable and enable the plugin")]
    NotAMountPoint {
        /// The volume.
        name: String,
        /// Its dataset.
        dataset: DatasetId,
        /// The state path the control service reported.
        agent_path: PathBuf,
        /// Where the plugin looked.
        seen: PathBuf,
    },
    /// `FLOCKER_ROOT` receives no mount propagation: what the plugin sees there may be a stale copy.
    #[error("volume {name}: not mounting dataset {dataset}: FLOCKER_ROOT={root} lies on {covering}, a {propagation} mount in the plugin (no mount propagation from the host), so mounts the dataset agent makes or removes later never reach the plugin and it could hand out stale data. Make the agent's mount root a shared mount on the host (mount --bind /flocker /flocker && mount --make-shared /flocker), then disable and enable the plugin")]
    NotPropagated {
        /// The volume.
        name: String,
        /// Its dataset.
        dataset: DatasetId,
        /// `FLOCKER_ROOT`.
        root: PathBuf,
        /// The mount covering it.
        covering: PathBuf,
        /// Its propagation, e.g. `private`.
        propagation: String,
    },
    /// The local copy of the agent's mount is a symlink or not a directory.
    #[error("volume {name}: not mounting dataset {dataset}: {path} is not a directory (a symlink or a file); the dataset agent's mounts are directories")]
    NotADirectory {
        /// The volume.
        name: String,
        /// Its dataset.
        dataset: DatasetId,
        /// The path.
        path: PathBuf,
    },
    /// The state path is not `AGENT_MOUNT_ROOT/<dataset_id>`.
    #[error("volume {name}: the cluster state reports dataset {dataset} at {agent_path}, not at {expected}; refusing to mount another path. Set AGENT_MOUNT_ROOT to the dataset agent's mount root")]
    UnexpectedStatePath {
        /// The volume.
        name: String,
        /// Its dataset.
        dataset: DatasetId,
        /// The state path reported.
        agent_path: PathBuf,
        /// `AGENT_MOUNT_ROOT/<dataset_id>`.
        expected: PathBuf,
    },
    /// The plugin's state file could not be written, so the mount would not survive a restart safely.
    #[error("volume {name}: {source}; the mount was undone so that a plugin restart cannot lose track of it. Free space or fix permissions in STATE_DIR")]
    StateNotSaved {
        /// The volume.
        name: String,
        /// The write failure.
        source: super::store::SaveError,
    },
    /// This node's UUID holds the lease, but this plugin did not take it.
    #[error("volume {name}: dataset {dataset} is leased by node {node} (this node's UUID), but not by this plugin: another host may be running with the same NODE_UUID (every node needs its own), or this plugin lost its state. If no container on any host uses it, free it with `flocker-docker-plugin release-leases --node {node} --volume {name} --force`")]
    LeasedByThisUuid {
        /// The volume.
        name: String,
        /// Its dataset.
        dataset: DatasetId,
        /// This node.
        node: crate::flocker::NodeId,
    },
    /// The plugin cannot work with its settings; every call says why until they are fixed.
    #[error("volume {name}: the flocker plugin cannot work: {reason}")]
    Misconfigured {
        /// The volume.
        name: String,
        /// The setting at fault and how to fix it.
        reason: String,
    },
    /// The plugin is shutting down.
    #[error("volume {name}: the plugin is stopping; retry once it is back")]
    Stopping {
        /// The volume.
        name: String,
    },
    /// The control service refused or failed a call.
    #[error("volume {name}: {source}")]
    ControlService {
        /// The volume, or "*" for List.
        name: String,
        /// The failure.
        source: flocker::Error,
    },
    /// A local mount operation failed.
    #[error("volume {name}: {source}")]
    Mount {
        /// The volume.
        name: String,
        /// The failure.
        source: mount::Error,
    },
    /// A bug or a crashed task; should not happen.
    #[error("internal error: {what}; please report it with the plugin log")]
    Internal {
        /// What went wrong.
        what: String,
    },
}
