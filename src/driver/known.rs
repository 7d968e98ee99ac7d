//! The last known volumes: what Get and List answer while the control service cannot be reached
//! (SPEC §3), and the dataset a Mount tries first.
//!
//! Kept cheap for big clusters: a new configuration answer is remembered by keeping its `Arc`
//! (nothing is rebuilt or copied per answer), names are looked up in it only when asked, and the
//! list is written to its own file (`known.json` next to the state file) at most every
//! [`SAVE_INTERVAL`], off the request path and without fsync: it only serves stale answers, so a
//! crash that loses the last few seconds of it costs nothing but those. The mount records, which
//! safety depends on, stay in the small fsync'd state file (`store`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, warn};

use super::select::{by_name, known_volume, pick};
use super::store::KnownVolume;
use crate::flocker::{Configuration, NodeId};

/// How often, at most, the known volumes are written to disk.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(10);

/// The latest configuration answer and the changes this plugin made since it was requested.
#[derive(Debug, Default)]
struct Latest {
    /// The latest answer and this node then, if any arrived since start.
    config: Option<(Arc<Configuration>, Option<NodeId>, Instant)>,
    /// Read from `known.json` (or an older state file) at start, until the first answer.
    loaded: BTreeMap<String, KnownVolume>,
    /// Creates (`Some`) and Removes (`None`) made here after the latest answer was requested.
    edits: BTreeMap<String, (Instant, Option<KnownVolume>)>,
    /// Changed since the last save.
    dirty: bool,
}

/// The last known volumes of one plugin instance.
#[derive(Debug)]
pub struct Known {
    latest: Mutex<Latest>,
    file: PathBuf,
}

impl Known {
    /// Starts from `from_state_file` (the state file's list) if it has any, else from
    /// `dir/known.json`. Only earlier versions keep the list in the state file (this one clears it
    /// there once it is in `known.json`), so a list there was written by an older version that ran
    /// since, after an upgrade or between a downgrade and an upgrade: it is the newer one.
    pub fn load(dir: &Path, from_state_file: BTreeMap<String, KnownVolume>) -> Known {
        let file = dir.join("known.json");
        let loaded = if !from_state_file.is_empty() {
            from_state_file
        } else {
            match std::fs::read(&file) {
                Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    warn!(path = %file.display(), error = %e, "ignoring an unreadable known-volumes file");
                    BTreeMap::new()
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
                Err(e) => {
                    warn!(path = %file.display(), error = %e, "cannot read the known-volumes file");
                    BTreeMap::new()
                }
            }
        };
        Known {
            latest: Mutex::new(Latest {
                loaded,
                ..Latest::default()
            }),
            file,
        }
    }

    /// Writes `known.json` now and durably (fsync of the file and its directory), whatever changed:
    /// before the state file's copy of the list is dropped (blocking; at start only).
    pub fn save_durably(&self) -> std::io::Result<()> {
        self.write(true)
    }

    /// Writes the list through a temporary file and a rename, so a reader never sees half of it;
    /// `durable` adds the fsyncs.
    fn write(&self, durable: bool) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&self.all()).map_err(std::io::Error::other)?;
        let tmp = self.file.with_extension("json.tmp");
        let dir = self.file.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir)?;
        let mut out = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut out, &bytes)?;
        if durable {
            out.sync_all()?;
        }
        std::fs::rename(&tmp, &self.file)?;
        if durable {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Latest> {
        self.latest.lock().expect("known volumes")
    }

    /// Keeps `config`, the answer to a request sent at `sent`; edits made before then are in it.
    pub fn remember(&self, config: &Arc<Configuration>, me: Option<NodeId>, sent: Instant) {
        let mut latest = self.lock();
        if let Some((current, _, current_sent)) = &latest.config {
            if Arc::ptr_eq(current, config) || *current_sent > sent {
                return;
            }
        }
        latest.config = Some((Arc::clone(config), me, sent));
        latest.edits.retain(|_, (at, _)| *at > sent);
        latest.dirty = true;
    }

    /// Records a change this plugin made (`None`: removed).
    pub fn edit(&self, name: &str, volume: Option<KnownVolume>) {
        let mut latest = self.lock();
        latest
            .edits
            .insert(name.to_string(), (Instant::now(), volume));
        latest.dirty = true;
    }

    /// The last known volume called `name`.
    pub fn get(&self, name: &str) -> Option<KnownVolume> {
        let latest = self.lock();
        if let Some((_, edit)) = latest.edits.get(name) {
            return edit.clone();
        }
        match &latest.config {
            Some((config, me, _)) => pick(&config.datasets, name, *me).map(known_volume),
            None => latest.loaded.get(name).cloned(),
        }
    }

    /// Every last known volume, by name.
    pub fn all(&self) -> BTreeMap<String, KnownVolume> {
        let latest = self.lock();
        let mut all = match &latest.config {
            Some((config, me, _)) => by_name(&config.datasets, *me)
                .into_iter()
                .map(|(name, dataset)| (name.to_string(), known_volume(dataset)))
                .collect(),
            None => latest.loaded.clone(),
        };
        for (name, (_, edit)) in &latest.edits {
            match edit {
                Some(volume) => all.insert(name.clone(), volume.clone()),
                None => all.remove(name),
            };
        }
        all
    }

    /// Writes `known.json` if anything changed since the last write (blocking: call it on the
    /// blocking pool).
    pub fn save_if_changed(&self) {
        if !std::mem::take(&mut self.lock().dirty) {
            return;
        }
        let written = self.write(false);
        if let Err(e) = written {
            self.lock().dirty = true;
            error!(path = %self.file.display(), error = %e, "cannot save the known volumes (only answers while the control service is away use them)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flocker::types::Metadata;
    use crate::flocker::{DatasetConfig, DatasetId};
    use uuid::Uuid;

    fn config(names: &[&str]) -> Arc<Configuration> {
        Arc::new(Configuration {
            tag: None,
            datasets: names
                .iter()
                .map(|n| DatasetConfig {
                    dataset_id: DatasetId(Uuid::new_v4()),
                    primary: None,
                    deleted: false,
                    metadata: Metadata {
                        name: Some(n.to_string()),
                        profile: None,
                    },
                    maximum_size: Some(1 << 30),
                })
                .collect(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn edits_last_until_an_answer_requested_after_them() {
        let dir = std::env::temp_dir().join(format!("fdp-known-{}", Uuid::new_v4()));
        let known = Known::load(&dir, BTreeMap::new());
        let t1 = Instant::now();
        known.remember(&config(&["a"]), None, t1);
        tokio::time::advance(Duration::from_millis(10)).await;
        let created = known_volume(&config(&["b"]).datasets[0]);
        known.edit("b", Some(created.clone()));
        known.edit("a", None);
        assert_eq!(known.get("b"), Some(created));
        assert_eq!(known.get("a"), None, "removed here");
        // An answer to a request sent before the edits does not undo them, nor replace a newer one.
        known.remember(&config(&["a"]), None, t1 - Duration::from_millis(1));
        assert_eq!(known.all().keys().collect::<Vec<_>>(), ["b"]);
        tokio::time::advance(Duration::from_millis(10)).await;
        known.remember(&config(&["c"]), None, Instant::now());
        assert_eq!(known.all().keys().collect::<Vec<_>>(), ["c"]);
        known.save_if_changed();
        let again = Known::load(&dir, BTreeMap::new());
        assert_eq!(again.all().keys().collect::<Vec<_>>(), ["c"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn listed(names: &[&str]) -> BTreeMap<String, KnownVolume> {
        let config = config(names);
        names
            .iter()
            .zip(&config.datasets)
            .map(|(name, dataset)| (name.to_string(), known_volume(dataset)))
            .collect()
    }

    #[test]
    fn an_older_versions_list_in_the_state_file_wins_and_is_kept_once_moved() {
        let dir = std::env::temp_dir().join(format!("fdp-known-{}", Uuid::new_v4()));
        // known.json from before a downgrade; the older version then wrote its own, newer list.
        let before = Known::load(&dir, listed(&["removed-since"]));
        before.save_durably().unwrap();
        let upgraded = Known::load(&dir, listed(&["created-since"]));
        assert_eq!(upgraded.all().keys().collect::<Vec<_>>(), ["created-since"]);
        // Moved to known.json at start: a second start (the state file's copy gone) still knows it.
        upgraded.save_durably().unwrap();
        let again = Known::load(&dir, BTreeMap::new());
        assert_eq!(again.all().keys().collect::<Vec<_>>(), ["created-since"]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
