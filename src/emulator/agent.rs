//! The emulator's dataset agent: carries out the model's plan with real directories and bind mounts.
//!
//! Each dataset's storage is `<data_dir>/backing/<dataset_id>`; "attached to node N" means
//! bind-mounted at `<N.mount_root>/<dataset_id>`. This module does the file-system work and
//! remembers what it mounted so that it can undo it. It does not decide *what* to do (that is
//! `model::Model::plan`) and it knows nothing about HTTP.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use uuid::Uuid;

use super::model::Action;
use super::{Error, Node};

/// Upper bound on stacked mounts removed from one mount point; stacks are never this deep.
const MAX_STACKED_MOUNTS: usize = 32;

/// Local nodes, their mount roots and everything this agent mounted.
#[derive(Debug)]
pub struct Agent {
    backing_root: PathBuf,
    mount_roots: BTreeMap<Uuid, PathBuf>,
    /// Dataset mount points we created, so shutdown can remove exactly those.
    mounted: BTreeSet<PathBuf>,
    /// Mount roots we bind-mounted onto themselves to make them shared.
    shared_roots: Vec<PathBuf>,
    /// Datasets whose mounts are only recorded, never made (see [`Agent::mark_inert`]).
    inert: HashSet<Uuid>,
}

impl Agent {
    /// An agent storing datasets under `<data_dir>/backing`.
    pub fn new(data_dir: &Path) -> Result<Self, Error> {
        let backing_root = data_dir.join("backing");
        create_dir(&backing_root)?;
        Ok(Agent {
            backing_root,
            mount_roots: BTreeMap::new(),
            mounted: BTreeSet::new(),
            shared_roots: Vec::new(),
            inert: HashSet::new(),
        })
    }

    /// Serves `node` from now on; with `share`, makes its mount root a shared mount point.
    pub fn add_node(&mut self, node: &Node, share: bool) -> Result<(), Error> {
        create_dir(&node.mount_root)?;
        // Canonical paths, so they compare equal to the mount points the kernel reports.
        let root = fs::canonicalize(&node.mount_root).map_err(|source| Error::CreateDir {
            path: node.mount_root.clone(),
            source,
        })?;
        if share && !self.shared_roots.contains(&root) {
            // Docker's rslave propagation only sees later mounts if the root is a shared mount
            // point; `mount --bind D D && mount --make-shared D`.
            if !is_mount_point(&root)? {
                bind(&root, &root)?;
                self.shared_roots.push(root.clone());
            }
            mount(
                None::<&str>,
                &root,
                None::<&str>,
                MsFlags::MS_SHARED,
                None::<&str>,
            )
            .map_err(|errno| Error::Mount {
                source_path: root.clone(),
                target: root.clone(),
                errno,
            })?;
        }
        self.mount_roots.insert(node.uuid, root);
        Ok(())
    }

    /// From now on `dataset` has no backing storage and its mounts are reported but never made:
    /// a cluster of 10,000 datasets that nothing on this machine uses costs no mounts.
    pub fn mark_inert(&mut self, dataset: Uuid) {
        self.inert.insert(dataset);
    }

    /// The nodes this agent serves.
    pub fn local_nodes(&self) -> Vec<Uuid> {
        self.mount_roots.keys().copied().collect()
    }

    fn mount_point(&self, dataset: Uuid, node: Uuid) -> Option<PathBuf> {
        self.mount_roots
            .get(&node)
            .map(|root| root.join(dataset.to_string()))
    }

    fn backing(&self, dataset: Uuid) -> PathBuf {
        self.backing_root.join(dataset.to_string())
    }

    /// Carries out one action; for `Mount` returns the mount point.
    pub fn apply(&mut self, action: &Action) -> Result<Option<PathBuf>, Error> {
        match *action {
            Action::CreateBacking(id) if self.inert.contains(&id) => Ok(None),
            Action::Unmount { dataset, .. } | Action::Mount { dataset, .. }
                if self.inert.contains(&dataset) =>
            {
                Ok(match *action {
                    Action::Mount { node, .. } => self.mount_point(dataset, node),
                    _ => None,
                })
            }
            Action::CreateBacking(id) => create_dir(&self.backing(id)).map(|()| None),
            Action::Unmount { dataset, node } => {
                if let Some(target) = self.mount_point(dataset, node) {
                    unmount(&target)?;
                    self.mounted.remove(&target);
                }
                Ok(None)
            }
            Action::Destroy(id) => {
                let path = self.backing(id);
                match fs::remove_dir_all(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        Err(Error::RemoveDir { path, source: e })
                    }
                    _ => Ok(None),
                }
            }
            Action::Mount { dataset, node } => {
                let Some(target) = self.mount_point(dataset, node) else {
                    return Ok(None);
                };
                create_dir(&target)?;
                // A previous emulator run may have left a mount here: start clean.
                unmount_only(&target)?;
                bind(&self.backing(dataset), &target)?;
                self.mounted.insert(target.clone());
                Ok(Some(target))
            }
        }
    }

    /// Unmounts every dataset mount and every shared root this agent created.
    pub fn release_all(&mut self) -> Result<(), Error> {
        let mut first_error = None;
        for target in std::mem::take(&mut self.mounted) {
            if let Err(e) = unmount(&target) {
                first_error.get_or_insert(e);
            }
        }
        for root in std::mem::take(&mut self.shared_roots) {
            if let Err(e) = unmount_only(&root) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn create_dir(path: &Path) -> Result<(), Error> {
    fs::create_dir_all(path).map_err(|source| Error::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}

fn bind(source: &Path, target: &Path) -> Result<(), Error> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|errno| Error::Mount {
        source_path: source.to_path_buf(),
        target: target.to_path_buf(),
        errno,
    })
}

/// Unmounts `target` completely and removes the (then empty) directory.
fn unmount(target: &Path) -> Result<(), Error> {
    unmount_only(target)?;
    match fs::remove_dir(target) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::RemoveDir {
            path: target.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Unmounts until `target` is no longer a mount point (mounts can be stacked).
fn unmount_only(target: &Path) -> Result<(), Error> {
    for _ in 0..MAX_STACKED_MOUNTS {
        if !is_mount_point(target)? {
            return Ok(());
        }
        let result = match umount2(target, MntFlags::empty()) {
            // Something (a container, a shell) still uses it: detach lazily, like `umount -l`.
            Err(Errno::EBUSY) => umount2(target, MntFlags::MNT_DETACH),
            other => other,
        };
        result.map_err(|errno| Error::Unmount {
            target: target.to_path_buf(),
            errno,
        })?;
    }
    Err(Error::StillMounted {
        target: target.to_path_buf(),
    })
}

/// Whether `path` is a mount point in this process's mount namespace (the product's own mountinfo reader).
fn is_mount_point(path: &Path) -> Result<bool, Error> {
    crate::mount::is_mount_point(path).map_err(|e| match e {
        crate::mount::Error::MountInfo(source) => Error::MountInfo { source },
        other => Error::MountInfo {
            source: io::Error::other(other.to_string()),
        },
    })
}
