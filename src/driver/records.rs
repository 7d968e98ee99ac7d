//! What this plugin has mounted, per volume: a multiset of engine mount IDs, and the file that keeps it
//! across plugin restarts (SPEC §5), written atomically.
//!
//! A multiset because the engine may mount the same ID twice (`docker cp` on a running container,
//! reference/managed-plugin-check.md third check). It also keeps the last known dataset per name, so Get
//! can answer while the control service is down (SPEC §3).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::flocker::{DatasetId, NodeId};

/// One volume mounted by this plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountRecord {
    /// Its dataset.
    pub dataset_id: DatasetId,
    /// The path handed to Docker.
    pub mountpoint: PathBuf,
    /// Engine mount IDs and how many times each is mounted.
    pub ids: BTreeMap<String, u32>,
}

impl MountRecord {
    /// Total mount count.
    pub fn count(&self) -> u32 {
        self.ids.values().sum()
    }
}

/// The last configuration seen for a volume name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownVolume {
    /// Its dataset.
    pub dataset_id: DatasetId,
    /// Configured node.
    pub primary: Option<NodeId>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// Storage profile.
    pub profile: Option<String>,
}

/// Everything the plugin keeps on disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Records {
    /// Volumes mounted here, by name.
    #[serde(default)]
    pub mounts: BTreeMap<String, MountRecord>,
    /// Last known dataset per volume name.
    #[serde(default)]
    pub known: BTreeMap<String, KnownVolume>,
}

/// What an Unmount did to the count.
#[derive(Debug, PartialEq)]
pub enum Released {
    /// The volume or ID was not mounted: nothing to do.
    Unknown,
    /// Other mounts remain.
    StillMounted(u32),
    /// That was the last: the caller unmounts and releases the lease.
    Last(MountRecord),
}

impl Records {
    /// Counts `id` once more if the volume is mounted; returns the mountpoint.
    pub fn add_if_mounted(&mut self, name: &str, id: &str) -> Option<PathBuf> {
        let record = self.mounts.get_mut(name)?;
        *record.ids.entry(id.to_string()).or_default() += 1;
        Some(record.mountpoint.clone())
    }

    /// Drops one count of `id`.
    pub fn release(&mut self, name: &str, id: &str) -> Released {
        let Some(record) = self.mounts.get_mut(name) else {
            return Released::Unknown;
        };
        match record.ids.get_mut(id) {
            None => return Released::Unknown,
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                record.ids.remove(id);
            }
        }
        if record.ids.is_empty() {
            Released::Last(self.mounts.remove(name).expect("present above"))
        } else {
            Released::StillMounted(record.count())
        }
    }
}

/// The state file in `STATE_DIR`.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// `<dir>/state.json`.
    pub fn in_dir(dir: &Path) -> StateFile {
        StateFile {
            path: dir.join("state.json"),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file; a missing file is an empty state, a corrupt one is reported and set aside.
    pub fn load(&self) -> Records {
        match fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(records) => records,
                Err(e) => {
                    let aside = self.path.with_extension("json.corrupt");
                    tracing::error!(path = %self.path.display(), error = %e, moved_to = %aside.display(), "state file unreadable; starting empty and reconciling from the mount table");
                    let _ = fs::rename(&self.path, aside);
                    Records::default()
                }
            },
            Err(_) => Records::default(),
        }
    }

    /// Writes atomically: a temporary file, fsync, rename.
    pub fn save(&self, records: &Records) -> Result<(), String> {
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(records).map_err(|e| e.to_string())?;
        let mut file = fs::File::create(&tmp).map_err(|e| e.to_string())?;
        file.write_all(&bytes).map_err(|e| e.to_string())?;
        file.sync_all().map_err(|e| e.to_string())?;
        fs::rename(&tmp, &self.path).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> MountRecord {
        MountRecord {
            dataset_id: DatasetId(uuid::Uuid::new_v4()),
            mountpoint: "/mnt/flocker/x".into(),
            ids: BTreeMap::new(),
        }
    }

    #[test]
    fn same_id_twice_needs_two_releases() {
        let mut records = Records::default();
        records.mounts.insert("v".into(), record());
        records.add_if_mounted("v", "a");
        records.add_if_mounted("v", "a");
        records.add_if_mounted("v", "b");
        assert_eq!(records.release("v", "a"), Released::StillMounted(2));
        assert_eq!(records.release("v", "b"), Released::StillMounted(1));
        assert!(matches!(records.release("v", "a"), Released::Last(_)));
        assert!(records.mounts.is_empty());
    }

    #[test]
    fn unknown_ids_and_volumes_are_ignored() {
        let mut records = Records::default();
        assert_eq!(records.release("nope", "a"), Released::Unknown);
        records.mounts.insert("v".into(), record());
        records.add_if_mounted("v", "a");
        assert_eq!(records.release("v", "zzz"), Released::Unknown);
        assert_eq!(records.mounts["v"].count(), 1);
    }

    #[test]
    fn state_file_round_trip_and_corrupt_file_set_aside() {
        let dir = std::env::temp_dir().join(format!("fdp-state-{}", uuid::Uuid::new_v4()));
        let file = StateFile::in_dir(&dir);
        assert_eq!(file.load(), Records::default());
        let mut records = Records::default();
        records.mounts.insert("v".into(), record());
        records.add_if_mounted("v", "a");
        file.save(&records).unwrap();
        assert_eq!(file.load(), records);
        fs::write(file.path(), b"{not json").unwrap();
        assert_eq!(file.load(), Records::default());
        assert!(dir.join("state.json.corrupt").exists());
        fs::remove_dir_all(dir).unwrap();
    }
}
