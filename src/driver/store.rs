//! What this plugin has mounted, per volume, and the state file that keeps it across restarts (SPEC §5).
//!
//! Per volume: a multiset of engine mount IDs (the engine may mount one ID twice: `docker cp` on a
//! running container, reference/docker-plugin.md §1.7), or "users unknown" for a bind adopted at start
//! without a record, and the boot the mounts were made in. (The last known volumes, for answers while
//! the control service is down, live in `known.json`: see `known`. Older versions kept them here, and
//! the field is still read once to carry them over.)
//!
//! Every change goes through [`Store::update`], which writes the file before returning: a Mount is
//! answered only once its record is durable, so after a crash the file never knows *fewer* users
//! than Docker does (SPEC §9.2). It does not mount anything or talk to the control service.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tracing::error;
use uuid::Uuid;

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
    /// Found mounted at start with no record (state file lost, corrupt or stale): containers may use
    /// it, but which is unknown, so no Unmount can prove it unused (SPEC §9.2).
    #[serde(default)]
    pub adopted: bool,
    /// Still in use when the plugin last stopped cleanly (SIGTERM or SIGINT): containers kept running
    /// through a `docker plugin disable -f` (the engine stops containers, with their Unmounts, before it
    /// stops plugins). Its lease is kept until Unmounts drain it, never dropped after the restart
    /// grace; kept until the record drains (SPEC §9).
    #[serde(default)]
    pub held: bool,
}

impl MountRecord {
    /// Whether anything may still use it.
    pub fn in_use(&self) -> bool {
        self.adopted || !self.ids.is_empty()
    }

    /// Known mount count (adopted users are not counted).
    pub fn count(&self) -> u32 {
        self.ids.values().sum()
    }
}

/// A bind made for a Mount that has not been answered yet. Found at start with its bind, it means the
/// plugin died before Docker heard of the mount: nothing can use it, so it is removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingMount {
    /// Its dataset.
    pub dataset_id: DatasetId,
    /// Where the bind goes.
    pub mountpoint: PathBuf,
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
    /// The host boot (`/proc/sys/kernel/random/boot_id`) the mounts were recorded in: no mount, and
    /// no container, survives a reboot.
    #[serde(default)]
    pub boot_id: Option<Uuid>,
    /// Volumes mounted here, by name.
    #[serde(default)]
    pub mounts: BTreeMap<String, MountRecord>,
    /// Last known dataset per volume name, as earlier versions kept it here; read once at start
    /// and then kept in `known.json` instead (`driver::known`), so this file stays small.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub known: BTreeMap<String, KnownVolume>,
    /// Datasets whose lease this plugin took (or was about to take) and has not given back: the only
    /// leases it ever releases (SPEC §9.1). Written *before* the lease is requested, so a crash in
    /// between leaves a lease the next start knows to be its own.
    #[serde(default)]
    pub leased: BTreeSet<DatasetId>,
    /// Binds being made for Mounts not answered yet, by volume name.
    #[serde(default)]
    pub pending: BTreeMap<String, PendingMount>,
}

/// What an Unmount did to the count.
#[derive(Debug, PartialEq)]
pub enum Released {
    /// The volume or ID was not mounted: nothing to do.
    Unknown,
    /// Other users remain.
    StillInUse,
    /// That was the last: the caller unmounts and releases the lease.
    Last(MountRecord),
}

impl Records {
    /// Marks every record still in use as held through a stop; returns their names.
    pub fn hold_in_use(&mut self) -> Vec<String> {
        self.mounts
            .iter_mut()
            .filter(|(_, record)| record.in_use())
            .map(|(name, record)| {
                record.held = true;
                name.clone()
            })
            .collect()
    }

    /// Counts `id` once more if the volume is mounted; returns the mountpoint.
    pub fn add_if_mounted(&mut self, name: &str, id: &str) -> Option<PathBuf> {
        let record = self.mounts.get_mut(name)?;
        *record.ids.entry(id.to_string()).or_default() += 1;
        Some(record.mountpoint.clone())
    }

    /// Undoes one [`Records::add_if_mounted`] of `id` (its save failed), never removing the record.
    pub fn forget_one(&mut self, name: &str, id: &str) {
        if let Some(record) = self.mounts.get_mut(name) {
            match record.ids.get_mut(id) {
                Some(n) if *n > 1 => *n -= 1,
                Some(_) => {
                    record.ids.remove(id);
                }
                None => {}
            }
        }
    }

    /// Drops one count of `id`; a record left without users is removed and returned.
    pub fn release(&mut self, name: &str, id: &str) -> Released {
        let Some(record) = self.mounts.get_mut(name) else {
            return Released::Unknown;
        };
        let unused = !record.in_use();
        match record.ids.get_mut(id) {
            // Left without users by an earlier failed unmount: this call finishes it.
            None if unused => {}
            None => return Released::Unknown,
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                record.ids.remove(id);
            }
        }
        if record.in_use() {
            Released::StillInUse
        } else {
            Released::Last(self.mounts.remove(name).expect("present above"))
        }
    }
}

/// How the state file was found at start.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    /// Read and parsed.
    Read(Records),
    /// No file: a first start, or a wiped `STATE_DIR`; the two cannot be told apart.
    Missing,
    /// Present but unreadable or corrupt (set aside as `state.json.corrupt`): the text says why.
    Unreadable(String),
}

impl Loaded {
    /// The records, empty unless the file was read.
    pub fn records(&self) -> Records {
        match self {
            Loaded::Read(records) => records.clone(),
            Loaded::Missing | Loaded::Unreadable(_) => Records::default(),
        }
    }

    /// Whether the file can be trusted to list every mount Docker was told about.
    pub fn is_complete(&self) -> bool {
        matches!(self, Loaded::Read(_))
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

    /// Reads the file. Every failure but "no such file" is logged; a corrupt file is set aside so
    /// that it can be inspected and is not read again.
    pub fn load(&self) -> Loaded {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
            Err(e) => {
                error!(path = %self.path.display(), error = %e, "cannot read the state file; adopting what is mounted");
                return Loaded::Unreadable(e.to_string());
            }
        };
        match serde_json::from_slice::<Records>(&bytes) {
            Ok(mut records) => {
                // Files from before `leased` existed: every recorded mount holds its lease.
                let mounted: Vec<DatasetId> =
                    records.mounts.values().map(|r| r.dataset_id).collect();
                records.leased.extend(mounted);
                Loaded::Read(records)
            }
            Err(e) => {
                let aside = self.path.with_extension("json.corrupt");
                error!(path = %self.path.display(), error = %e, moved_to = %aside.display(), "state file corrupt; adopting what is mounted");
                if let Err(e) = fs::rename(&self.path, &aside) {
                    error!(path = %self.path.display(), error = %e, "cannot set the corrupt state file aside");
                }
                Loaded::Unreadable(e.to_string())
            }
        }
    }

    /// Writes atomically and durably: a temporary file, fsync, rename, fsync of the directory (without
    /// the last step a crash can bring back the old file after the rename was reported done).
    pub fn save(&self, records: &Records) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(records).map_err(io::Error::other)?;
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        fs::File::open(dir)?.sync_all()
    }
}

/// The records in memory and the one path that writes them to disk.
#[derive(Debug)]
pub struct Store {
    file: StateFile,
    records: Mutex<Records>,
    /// Serialises snapshot-and-write, so an older snapshot never lands on disk after a newer one.
    writer: tokio::sync::Mutex<()>,
}

/// A state-file write failed: what happened is not durable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot save the plugin state to {path}: {reason}")]
pub struct SaveError {
    /// The state file.
    pub path: PathBuf,
    /// The I/O error.
    pub reason: String,
}

impl Store {
    /// A store starting from `records`.
    pub fn new(file: StateFile, records: Records) -> Arc<Store> {
        Arc::new(Store {
            file,
            records: Mutex::new(records),
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// The records, for reading (never held across an await).
    pub fn read(&self) -> MutexGuard<'_, Records> {
        self.records.lock().expect("records lock")
    }

    /// Applies `change` and writes the file (off the async workers) before returning.
    pub async fn update<T>(
        &self,
        change: impl FnOnce(&mut Records) -> T,
    ) -> (T, Result<(), SaveError>) {
        let _writing = self.writer.lock().await;
        let value = change(&mut self.read());
        let snapshot = self.read().clone();
        let file = self.file.clone();
        let saved = crate::blocking::run(move || file.save(&snapshot))
            .await
            .map_err(|e| SaveError {
                path: self.file.path().to_path_buf(),
                reason: e.to_string(),
            });
        if let Err(e) = &saved {
            error!(error = %e, "state file not saved; check STATE_DIR (disk full? read-only?)");
        }
        (value, saved)
    }

    /// Writes synchronously, for start-up before the runtime serves anything.
    pub fn save_now(&self) {
        let snapshot = self.read().clone();
        if let Err(e) = self.file.save(&snapshot) {
            error!(path = %self.file.path().display(), error = %e, "state file not saved; check STATE_DIR");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> MountRecord {
        MountRecord {
            dataset_id: DatasetId(Uuid::new_v4()),
            mountpoint: "/mnt/flocker/x".into(),
            ids: BTreeMap::new(),
            adopted: false,
            held: false,
        }
    }

    #[test]
    fn same_id_twice_needs_two_releases() {
        let mut records = Records::default();
        records.mounts.insert("v".into(), record());
        records.add_if_mounted("v", "a");
        records.add_if_mounted("v", "a");
        records.add_if_mounted("v", "b");
        assert_eq!(records.release("v", "a"), Released::StillInUse);
        assert_eq!(records.release("v", "b"), Released::StillInUse);
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
    fn adopted_mounts_are_never_released_by_unmount() {
        let mut records = Records::default();
        records.mounts.insert(
            "v".into(),
            MountRecord {
                adopted: true,
                ..record()
            },
        );
        assert_eq!(records.release("v", "unknown-id"), Released::Unknown);
        records.add_if_mounted("v", "new");
        assert_eq!(records.release("v", "new"), Released::StillInUse);
        assert!(records.mounts["v"].in_use());
    }

    #[test]
    fn a_record_left_without_users_is_finished_by_any_unmount() {
        let mut records = Records::default();
        records.mounts.insert("v".into(), record());
        assert!(matches!(records.release("v", "any"), Released::Last(_)));
    }

    #[test]
    fn only_records_in_use_are_held_and_the_mark_goes_with_the_record() {
        let mut records = Records::default();
        records.mounts.insert("used".into(), record());
        records.mounts.insert("idle".into(), record());
        records.add_if_mounted("used", "a");
        assert_eq!(records.hold_in_use(), vec!["used".to_string()]);
        assert!(records.mounts["used"].held);
        assert!(!records.mounts["idle"].held);
        assert!(matches!(records.release("used", "a"), Released::Last(_)));
        assert!(!records.mounts.contains_key("used"));
    }

    #[test]
    fn forget_one_undoes_a_count() {
        let mut records = Records::default();
        records.mounts.insert("v".into(), record());
        records.add_if_mounted("v", "a");
        records.add_if_mounted("v", "a");
        records.forget_one("v", "a");
        assert_eq!(records.mounts["v"].count(), 1);
        records.forget_one("v", "a");
        assert!(records.mounts.contains_key("v"), "the record itself stays");
    }

    #[test]
    fn state_file_round_trip_missing_and_corrupt() {
        let dir = std::env::temp_dir().join(format!("fdp-state-{}", Uuid::new_v4()));
        let file = StateFile::in_dir(&dir);
        assert_eq!(file.load(), Loaded::Missing);
        let mut records = Records {
            boot_id: Some(Uuid::new_v4()),
            ..Records::default()
        };
        let mounted = record();
        records.leased.insert(mounted.dataset_id);
        records.mounts.insert("v".into(), mounted);
        records.add_if_mounted("v", "a");
        file.save(&records).unwrap();
        assert_eq!(file.load(), Loaded::Read(records));
        fs::write(file.path(), b"{not json").unwrap();
        assert!(matches!(file.load(), Loaded::Unreadable(_)));
        assert!(dir.join("state.json.corrupt").exists());
        assert_eq!(
            file.load(),
            Loaded::Missing,
            "the corrupt file was set aside"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unreadable_state_file_is_reported_not_treated_as_missing() {
        let dir = std::env::temp_dir().join(format!("fdp-state-{}", Uuid::new_v4()));
        fs::create_dir_all(dir.join("state.json")).unwrap(); // a directory: read fails with EISDIR
        let loaded = StateFile::in_dir(&dir).load();
        assert!(matches!(loaded, Loaded::Unreadable(_)), "{loaded:?}");
        assert!(!loaded.is_complete());
        fs::remove_dir_all(dir).unwrap();
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn files_without_leases_count_every_mount_as_leased() {
        let dir = std::env::temp_dir().join(format!("fdp-state-{}", Uuid::new_v4()));
        let file = StateFile::in_dir(&dir);
        let dataset = Uuid::new_v4();
        fs::create_dir_all(&dir).unwrap();
        let old = serde_json::json!({
            "mounts": {"v": {"dataset_id": dataset, "mountpoint": "/m", "ids": {"c": 1}}},
            "known": {}
        });
        fs::write(file.path(), old.to_string()).unwrap();
        let Loaded::Read(records) = file.load() else {
            panic!("an older file must load");
        };
        assert!(records.leased.contains(&DatasetId(dataset)));
        assert!(!records.mounts["v"].adopted);
        assert!(!records.mounts["v"].held, "older files held nothing");
        fs::remove_dir_all(dir).unwrap();
    }
}
