//! The volume driver: what each Docker volume call means for Flocker datasets and local mounts.
//!
//! [`VolumeDriver`] is the domain interface the protocol layer calls (go-plugins-helpers' `Driver`, with
//! domain arguments instead of wire structs); [`FlockerDriver`] implements it. Nothing here knows HTTP,
//! and nothing here reads the configuration: the caller builds [`DriverSettings`].
//!
//! Files, one rule each: `flocker_driver` (the calls), `leases` (take, release only if ours, retry),
//! `store` (records and the state file, one writer), `known` (the last known volumes, for stale answers), `recovery` (start-up: adopt, never destroy),
//! `source` (which agent path may be bound: SPEC §9.3), `select` (which dataset a name means, what
//! Get shows), `locks` (one lock per volume), `reads` (shared configuration and lease reads), `watcher` (the shared
//! state poll), `options` (`-o`).

mod error;
mod flocker_driver;
mod known;
mod leases;
mod locks;
mod misconfigured;
mod options;
mod reads;
mod recovery;
mod select;
mod source;
mod store;
mod watcher;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;

pub use error::Error;
pub use flocker_driver::{DriverSettings, FlockerDriver, REPORT_AGE, RESTART_GRACE};
pub use misconfigured::Misconfigured;
pub use options::CreateOptions;
pub use source::{local_path, Refusal};
pub use store::{Loaded, MountRecord, PendingMount, Records, SaveError, StateFile};

/// How mountpoints are handed to Docker (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountMode {
    /// Managed plugin: bind each dataset under this directory, which Docker maps to the host.
    Propagated(PathBuf),
    /// Legacy (v1) plugin in the host's mount namespace: hand out the agent's own path.
    Legacy,
}

/// Result of a driver call.
pub type Result<T> = std::result::Result<T, Error>;

/// Flocker's metadata value limit, which bounds a volume name (flocker-upstream.md §5.3).
pub const MAX_NAME_LEN: usize = 256;

/// A Docker volume name: non-empty, at most 256 characters, otherwise opaque.
///
/// It is only ever compared with dataset metadata; it never becomes a path component, so names such as
/// `../../etc` or `a/b` are harmless (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeName(String);

impl VolumeName {
    /// Checks the length limits.
    pub fn new(name: &str) -> Result<VolumeName> {
        if name.is_empty() {
            return Err(Error::InvalidName {
                reason: "the volume name is empty".into(),
            });
        }
        if name.chars().count() > MAX_NAME_LEN {
            return Err(Error::InvalidName {
                reason: format!(
                    "the volume name is {} characters long; Flocker stores names as metadata of at most {MAX_NAME_LEN}",
                    name.chars().count()
                ),
            });
        }
        Ok(VolumeName(name.to_string()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The engine's per-container mount ID; empty when an old engine sends none.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MountId(pub String);

impl fmt::Display for MountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What Get and List report about one volume.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeInfo {
    /// The volume name.
    pub name: String,
    /// Where it is mounted for Docker on this node, if it is.
    pub mountpoint: Option<PathBuf>,
    /// Free-form details shown by `docker volume inspect`.
    pub status: BTreeMap<String, serde_json::Value>,
}

/// The Docker volume driver interface, in domain terms.
pub trait VolumeDriver: Send + Sync + 'static {
    /// Makes sure a volume with this name exists.
    fn create(
        &self,
        name: &VolumeName,
        opts: CreateOptions,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Deletes the volume unless it is in use anywhere.
    fn remove(&self, name: &VolumeName) -> impl Future<Output = Result<()>> + Send;
    /// Brings the volume to this node, mounts it for Docker and counts `id`.
    fn mount(
        &self,
        name: &VolumeName,
        id: &MountId,
    ) -> impl Future<Output = Result<PathBuf>> + Send;
    /// Drops one count of `id`; unmounts on the last.
    fn unmount(&self, name: &VolumeName, id: &MountId) -> impl Future<Output = Result<()>> + Send;
    /// Where the volume is mounted here; never waits.
    fn path(&self, name: &VolumeName) -> impl Future<Output = Result<PathBuf>> + Send;
    /// One volume.
    fn get(&self, name: &VolumeName) -> impl Future<Output = Result<VolumeInfo>> + Send;
    /// Every volume.
    fn list(&self) -> impl Future<Output = Result<Vec<VolumeInfo>>> + Send;
}
