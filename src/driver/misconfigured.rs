//! The driver a plugin with unusable settings serves: every volume call answers why, with the fix.
//!
//! A managed plugin that exits at start only makes `docker plugin enable` time out with "connect: no
//! such file or directory", and its reason sits in dockerd's log. Serving the reason instead puts it
//! where the user looks: in the error of `docker volume create`, `docker run` and friends.

use std::path::PathBuf;

use super::{CreateOptions, Error, MountId, Result, VolumeDriver, VolumeInfo, VolumeName};

/// Refuses every call with the same explanation.
#[derive(Debug, Clone)]
pub struct Misconfigured {
    reason: String,
}

impl Misconfigured {
    /// A driver answering `reason` (what is wrong and how to fix it).
    pub fn new(reason: String) -> Misconfigured {
        Misconfigured { reason }
    }

    fn refuse<T>(&self, name: &str) -> Result<T> {
        Err(Error::Misconfigured {
            name: name.to_string(),
            reason: self.reason.clone(),
        })
    }
}

impl VolumeDriver for Misconfigured {
    async fn create(&self, name: &VolumeName, _: CreateOptions) -> Result<()> {
        self.refuse(name.as_str())
    }
    async fn remove(&self, name: &VolumeName) -> Result<()> {
        self.refuse(name.as_str())
    }
    async fn mount(&self, name: &VolumeName, _: &MountId) -> Result<PathBuf> {
        self.refuse(name.as_str())
    }
    async fn unmount(&self, name: &VolumeName, _: &MountId) -> Result<()> {
        // Nothing was mounted by this process; an Unmount is bookkeeping and never fails (SPEC §3).
        let _ = name;
        Ok(())
    }
    async fn path(&self, name: &VolumeName) -> Result<PathBuf> {
        self.refuse(name.as_str())
    }
    async fn get(&self, name: &VolumeName) -> Result<VolumeInfo> {
        self.refuse(name.as_str())
    }
    async fn list(&self) -> Result<Vec<VolumeInfo>> {
        self.refuse("*")
    }
}
