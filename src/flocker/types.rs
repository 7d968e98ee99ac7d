//! JSON shapes of the Flocker REST API v1 (reference/flocker-upstream.md §5), as this plugin uses them.
//!
//! Unknown fields are ignored so a newer control service does not break us; nothing here does I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A Flocker dataset's UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatasetId(pub Uuid);

/// A Flocker node's UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub Uuid);

impl fmt::Display for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Metadata key holding the Docker volume name (flocker-upstream.md §1.2).
pub const NAME_KEY: &str = "name";
/// Metadata key holding the storage profile (flocker-upstream.md §8).
pub const PROFILE_KEY: &str = "clusterhq:flocker:profile";
/// Metadata key repeating the size as a decimal string, as the original plugin wrote it.
pub const SIZE_KEY: &str = "maximum_size";

/// The metadata keys this plugin reads; every other key is skipped while decoding, unread and
/// unallocated (a 10,000-dataset configuration is decoded on every new answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Metadata {
    /// [`NAME_KEY`]: the Docker volume name.
    #[serde(rename = "name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// [`PROFILE_KEY`]: the storage profile.
    #[serde(
        rename = "clusterhq:flocker:profile",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub profile: Option<String>,
}

/// One entry of `GET /v1/configuration/datasets`: what the cluster is asked to do.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct DatasetConfig {
    /// The dataset.
    pub dataset_id: DatasetId,
    /// The node it should be on.
    pub primary: Option<NodeId>,
    /// Deleted datasets stay listed forever (flocker-upstream.md §5.5).
    #[serde(default)]
    pub deleted: bool,
    /// The metadata keys the plugin uses (the others are not decoded).
    #[serde(default)]
    pub metadata: Metadata,
    /// Size in bytes, if one was given.
    #[serde(default)]
    pub maximum_size: Option<u64>,
}

impl DatasetConfig {
    /// The Docker volume name, if this dataset has one.
    pub fn name(&self) -> Option<&str> {
        self.metadata.name.as_deref()
    }
}

/// The configured datasets and the tag to make a conditional change against them.
#[derive(Debug, Clone)]
pub struct Configuration {
    /// `X-Configuration-Tag`, absent on servers that do not send it.
    pub tag: Option<String>,
    /// Every configured dataset, deleted ones included.
    pub datasets: Vec<DatasetConfig>,
}

/// One entry of `GET /v1/state/datasets`: what the agents report.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct DatasetState {
    /// The dataset.
    pub dataset_id: DatasetId,
    /// The node it is mounted on; absent while it is attached nowhere (e.g. mid-move).
    #[serde(default)]
    pub primary: Option<NodeId>,
    /// Where the agent mounted it on that node.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Size in bytes.
    #[serde(default)]
    pub maximum_size: Option<u64>,
}

/// Body of `POST /v1/configuration/datasets`.
#[derive(Debug, Clone, Serialize)]
pub struct NewDataset {
    /// The node to create it on.
    pub primary: NodeId,
    /// Metadata, including the volume name.
    pub metadata: BTreeMap<String, String>,
    /// Size in bytes.
    pub maximum_size: u64,
}

/// One lease (flocker-upstream.md §5.9).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Lease {
    /// The leased dataset.
    pub dataset_id: DatasetId,
    /// The node holding it.
    pub node_uuid: NodeId,
    /// Seconds left, or none for a lease that never expires.
    pub expires: Option<f64>,
}

/// One entry of `GET /v1/state/nodes`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct NodeInfo {
    /// The node's IP address as its agent reported it.
    pub host: String,
    /// The node.
    pub uuid: NodeId,
}

/// What `POST /v1/configuration/leases` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// There was no lease; this call made it (201).
    Created,
    /// This node already held it; the call renewed it (200).
    Renewed,
}
