//! Where the dataset agent's mount is, as this plugin sees it, and whether it may be handed on
//! (SPEC §9.3: propagation is verified, not assumed).
//!
//! The state path must be exactly `AGENT_MOUNT_ROOT/<dataset_id>`: anything else (another dataset's
//! path, `..`, a path outside the root) would bind the wrong data into a container. The local copy
//! `FLOCKER_ROOT/<dataset_id>` must be a mount point that is not a symlink, and in a managed plugin
//! `FLOCKER_ROOT` must receive mount propagation from the host: on a private mount a dataset that moved
//! away and came back still shows its *old* mount here, and a container would get stale data.
//! This module decides; it does not mount (that is `crate::mount`).

use std::path::{Component, Path, PathBuf};

use crate::flocker::DatasetId;
use crate::mount::{self, MountEntry};

/// Why a state path or its local copy is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The state path is not `AGENT_MOUNT_ROOT/<dataset_id>`.
    UnexpectedPath {
        /// What was expected.
        expected: PathBuf,
    },
    /// `FLOCKER_ROOT` is on a mount that receives no propagation (its mountinfo fields say how it is).
    NotPropagated {
        /// The mount covering `FLOCKER_ROOT`.
        covering: PathBuf,
        /// Its propagation fields, e.g. `private`.
        propagation: String,
    },
    /// The local path is a symlink or not a directory.
    NotADirectory,
    /// The local path is not a mount point.
    NotAMountPoint,
}

/// Maps the agent's state path to where this process sees it, if it is exactly the dataset's own path.
pub fn local_path(
    agent_root: &Path,
    flocker_root: &Path,
    dataset: DatasetId,
    agent_path: &Path,
) -> Result<PathBuf, Refusal> {
    let expected = agent_root.join(dataset.to_string());
    // Component-wise equality: `/flocker/<id>/` matches, `/flocker/x/../<id>` does not (no `..` is
    // resolved, so no path can reach another dataset through it).
    let exact = agent_path.components().eq(expected.components())
        && !agent_path.components().any(|c| c == Component::ParentDir);
    if exact {
        Ok(flocker_root.join(dataset.to_string()))
    } else {
        Err(Refusal::UnexpectedPath { expected })
    }
}

/// Whether the local copy of the agent's mount may be bound for Docker. Reads the mount table and
/// the file system: call it on the blocking pool.
///
/// `need_propagation` is false in legacy mode, where the plugin shares the agent's mount namespace.
pub fn check_visible(
    flocker_root: &Path,
    local: &Path,
    need_propagation: bool,
) -> Result<(), VisibleError> {
    let entries = mount::mount_entries().map_err(VisibleError::MountTable)?;
    check_against(&entries, flocker_root, local, need_propagation)?;
    match std::fs::symlink_metadata(local) {
        Ok(meta) if meta.is_dir() => Ok(()),
        _ => Err(VisibleError::Refused(Refusal::NotADirectory)),
    }
}

/// The mount-table part of [`check_visible`], pure.
pub fn check_against(
    entries: &[MountEntry],
    flocker_root: &Path,
    local: &Path,
    need_propagation: bool,
) -> Result<(), Refusal> {
    if need_propagation {
        match mount::covering_mount(entries, flocker_root) {
            Some(root) if root.receives_propagation() => {}
            Some(root) => {
                return Err(Refusal::NotPropagated {
                    covering: root.mount_point.clone(),
                    propagation: root.propagation_text(),
                })
            }
            None => {
                return Err(Refusal::NotPropagated {
                    covering: flocker_root.to_path_buf(),
                    propagation: "not in the mount table".into(),
                })
            }
        }
    }
    if entries.iter().any(|e| e.mount_point == local) {
        Ok(())
    } else {
        Err(Refusal::NotAMountPoint)
    }
}

/// A failed visibility check.
#[derive(Debug)]
pub enum VisibleError {
    /// The rules refuse it.
    Refused(Refusal),
    /// The mount table could not be read.
    MountTable(mount::Error),
}

impl From<Refusal> for VisibleError {
    fn from(refusal: Refusal) -> Self {
        VisibleError::Refused(refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn entry(point: &str, propagation: &[&str]) -> MountEntry {
        MountEntry {
            mount_point: point.into(),
            propagation: propagation.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn only_the_datasets_own_path_is_accepted() {
        let id = DatasetId(Uuid::new_v4());
        let other = DatasetId(Uuid::new_v4());
        let root = Path::new("/flocker");
        let view = Path::new("/host-flocker");
        let ok = local_path(root, view, id, &root.join(id.to_string())).unwrap();
        assert_eq!(ok, view.join(id.to_string()));
        let trailing = PathBuf::from(format!("/flocker/{id}/"));
        assert!(local_path(root, view, id, &trailing).is_ok());
        for bad in [
            format!("/flocker/{other}"),
            format!("/flocker/{other}/../{id}"),
            format!("/flocker/{id}/.."),
            format!("/flocker/{id}/sub"),
            format!("/elsewhere/{id}"),
            format!("flocker/{id}"),
            "/flocker".to_string(),
            "/".to_string(),
            String::new(),
            "../x".to_string(),
        ] {
            assert!(
                matches!(
                    local_path(root, view, id, Path::new(&bad)),
                    Err(Refusal::UnexpectedPath { .. })
                ),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn a_private_flocker_root_is_refused_where_propagation_is_needed() {
        let local = Path::new("/flocker/d");
        let private = [
            entry("/", &[]),
            entry("/flocker", &[]),
            entry("/flocker/d", &[]),
        ];
        assert_eq!(
            check_against(&private, Path::new("/flocker"), local, true),
            Err(Refusal::NotPropagated {
                covering: "/flocker".into(),
                propagation: "private".into()
            })
        );
        assert_eq!(
            check_against(&private, Path::new("/flocker"), local, false),
            Ok(()),
            "legacy mode shares the agent's namespace"
        );
        let slave = [
            entry("/", &[]),
            entry("/flocker", &["master:7"]),
            entry("/flocker/d", &["master:7"]),
        ];
        assert_eq!(
            check_against(&slave, Path::new("/flocker"), local, true),
            Ok(())
        );
        // No mount at /flocker itself: the covering mount is `/`, which decides.
        let under_shared_root = [
            entry("/", &["shared:1"]),
            entry("/flocker/d", &["shared:1"]),
        ];
        assert_eq!(
            check_against(&under_shared_root, Path::new("/flocker"), local, true),
            Ok(())
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Whatever the control service reports, only the dataset's own path under the root is bound,
        /// and what is bound always lies directly under FLOCKER_ROOT, named by the dataset.
        #[test]
        fn any_state_path_maps_only_to_the_datasets_own_directory(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::Just("..".to_string()),
                    proptest::prelude::Just(".".to_string()),
                    proptest::prelude::Just("flocker".to_string()),
                    proptest::prelude::Just("DATASET".to_string()),
                    proptest::prelude::Just("OTHER".to_string()),
                    "[a-z0-9/]{0,6}",
                ],
                0..6,
            ),
            absolute in proptest::prelude::any::<bool>(),
        ) {
            let id = DatasetId(Uuid::new_v4());
            let other = Uuid::new_v4().to_string();
            let text = parts.join("/").replace("DATASET", &id.to_string()).replace("OTHER", &other);
            let reported = if absolute { format!("/{text}") } else { text };
            let view = Path::new("/plugin-view");
            match local_path(Path::new("/flocker"), view, id, Path::new(&reported)) {
                Ok(local) => {
                    proptest::prop_assert_eq!(&local, &view.join(id.to_string()));
                    let normal: Vec<_> = Path::new(&reported)
                        .components()
                        .filter(|c| !matches!(c, Component::CurDir))
                        .collect();
                    proptest::prop_assert!(!normal.contains(&Component::ParentDir));
                    proptest::prop_assert_eq!(
                        normal.last().map(|c| c.as_os_str().to_string_lossy().to_string()),
                        Some(id.to_string())
                    );
                }
                Err(Refusal::UnexpectedPath { expected }) => {
                    proptest::prop_assert_eq!(expected, Path::new("/flocker").join(id.to_string()));
                }
                Err(other) => proptest::prop_assert!(false, "unexpected refusal {:?}", other),
            }
        }
    }

    #[test]
    fn the_local_path_must_itself_be_a_mount_point() {
        let entries = [entry("/", &["shared:1"]), entry("/flocker", &["shared:2"])];
        assert_eq!(
            check_against(
                &entries,
                Path::new("/flocker"),
                Path::new("/flocker/d"),
                true
            ),
            Err(Refusal::NotAMountPoint)
        );
    }
}
