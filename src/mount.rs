//! Bind mounts and mount-table queries (SPEC §5), with nix; no knowledge of volumes or Flocker.
//!
//! "Is this a mount point?" is answered from `/proc/self/mountinfo`, the table of the namespace the
//! plugin runs in, because a managed plugin's view differs from the host's (reference/managed-plugin-check.md).

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;

/// A failed mount operation, with the paths involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `mount --bind` failed.
    #[error("cannot bind-mount {source_path} on {target}: {errno}")]
    Bind {
        /// What was to be mounted.
        source_path: PathBuf,
        /// Where.
        target: PathBuf,
        /// Why.
        errno: Errno,
    },
    /// `umount` failed.
    #[error("cannot unmount {target}: {errno}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// Why.
        errno: Errno,
    },
    /// The directory to mount on could not be made.
    #[error("cannot create mount point {path}: {source}")]
    CreateTarget {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The mount table could not be read.
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(io::Error),
    /// The source is missing, a symlink or not a directory.
    #[error("cannot open {path} as a directory without following symlinks: {errno}")]
    OpenSource {
        /// The source path.
        path: PathBuf,
        /// Why (`ELOOP` for a symlink, `ENOTDIR` for a file).
        errno: Errno,
    },
}

/// Mount points in this process's mount namespace, in table order (a path may repeat when stacked).
pub fn mount_points() -> Result<Vec<PathBuf>, Error> {
    let table = fs::read_to_string("/proc/self/mountinfo").map_err(Error::MountInfo)?;
    Ok(parse_mountinfo(&table))
}

/// One line of `/proc/self/mountinfo`: where something is mounted and how it propagates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount point (field 5), unescaped.
    pub mount_point: PathBuf,
    /// The optional fields before ` - `: `shared:N`, `master:N`, `propagate_from:N`, `unbindable`.
    /// Empty for a private mount.
    pub propagation: Vec<String>,
}

impl MountEntry {
    /// `shared:N`: mounts made below it propagate to its peers (the engine makes `propagatedMount` rshared).
    pub fn is_shared(&self) -> bool {
        self.propagation.iter().any(|f| f.starts_with("shared:"))
    }

    /// `master:N` (slave) or `shared:N`: mounts made at its master or peers later appear here too.
    pub fn receives_propagation(&self) -> bool {
        self.is_shared() || self.propagation.iter().any(|f| f.starts_with("master:"))
    }

    /// The propagation fields as mountinfo shows them, or `private`.
    pub fn propagation_text(&self) -> String {
        if self.propagation.is_empty() {
            "private".into()
        } else {
            self.propagation.join(" ")
        }
    }
}

/// Every mount in this process's namespace with its propagation fields, in table order.
pub fn mount_entries() -> Result<Vec<MountEntry>, Error> {
    let table = fs::read_to_string("/proc/self/mountinfo").map_err(Error::MountInfo)?;
    Ok(parse_mount_entries(&table))
}

/// The mount `path` lies on: the deepest mount point containing it, the last one if stacked
/// (a later line covers an earlier one at the same place). `path` should be canonical.
pub fn covering_mount<'a>(entries: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    entries
        .iter()
        .enumerate()
        .filter(|(_, e)| path.starts_with(&e.mount_point))
        .max_by_key(|(i, e)| (e.mount_point.components().count(), *i))
        .map(|(_, e)| e)
}

/// Mountinfo lines: `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER`.
/// Malformed lines are skipped.
fn parse_mount_entries(table: &str) -> Vec<MountEntry> {
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = fields.get(4)?;
            let separator = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(mount_point)),
                propagation: fields[6..separator].iter().map(|f| f.to_string()).collect(),
            })
        })
        .collect()
}

/// Field 5 of each mountinfo line, with the kernel's octal escapes (`\040` for space) undone.
fn parse_mountinfo(table: &str) -> Vec<PathBuf> {
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path with symlinks resolved, so it compares equal to mountinfo's; unchanged if it does not exist.
fn resolved(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Whether `path` is itself a mount point in this namespace.
pub fn is_mount_point(path: &Path) -> Result<bool, Error> {
    let path = resolved(path);
    Ok(mount_points()?.contains(&path))
}

/// Mount points directly below `dir` (one level), e.g. the volumes bound under the propagated mount.
pub fn mounts_below(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let dir = resolved(dir);
    let mut found: Vec<PathBuf> = mount_points()?
        .into_iter()
        .filter(|p| p.parent() == Some(dir.as_path()))
        .collect();
    found.sort();
    found.dedup();
    Ok(found)
}

/// Binds `source` onto `target` (created if missing), unless `target` is already a mount point:
/// after a plugin crash the old bind is still there and must be reused, not stacked.
///
/// `source` is opened without following symlinks and bound through its file descriptor, so a
/// symlink planted at the source can never redirect the bind elsewhere (SPEC §9.3).
pub fn bind(source: &Path, target: &Path) -> Result<(), Error> {
    fs::create_dir_all(target).map_err(|source| Error::CreateTarget {
        path: target.into(),
        source,
    })?;
    if is_mount_point(target)? {
        return Ok(());
    }
    let dir = open(
        source,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| Error::OpenSource {
        path: source.into(),
        errno,
    })?;
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    mount(
        Some(&by_fd),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|errno| Error::Bind {
        source_path: source.into(),
        target: target.into(),
        errno,
    })
}

/// Unmounts `target` until it is no longer a mount point (a crash can leave it stacked), then
/// removes the empty directory. A target that is not mounted is fine.
pub fn unmount_all(target: &Path) -> Result<(), Error> {
    // Bounded: each round removes one layer, and a path is never stacked this deep by us.
    for _ in 0..16 {
        if !is_mount_point(target)? {
            break;
        }
        match umount2(target, MntFlags::empty()) {
            Ok(()) => {}
            // Still busy (a process has its cwd there): detach so it goes once released.
            Err(Errno::EBUSY) => {
                umount2(target, MntFlags::MNT_DETACH).map_err(|errno| Error::Unmount {
                    target: target.into(),
                    errno,
                })?
            }
            Err(Errno::EINVAL | Errno::ENOENT) => break,
            Err(errno) => {
                return Err(Error::Unmount {
                    target: target.into(),
                    errno,
                })
            }
        }
    }
    // Only an empty directory goes; if data is there the bind never happened and we leave it alone.
    let _ = fs::remove_dir(target);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mount_points_and_escapes() {
        let table = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                     80 22 8:1 /data /mnt/with\\040space rw shared:5 - ext4 /dev/sda1 rw\n";
        assert_eq!(
            parse_mountinfo(table),
            vec![PathBuf::from("/proc"), PathBuf::from("/mnt/with space")]
        );
    }

    const TABLE: &str = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                         30 22 0:25 / /tmp rw,nosuid - tmpfs tmpfs rw\n\
                         81 22 8:1 /flocker /flocker rw master:7 - ext4 /dev/sda1 rw\n\
                         82 22 8:1 /x /mnt/with\\040space rw shared:9 master:7 propagate_from:2 - ext4 /dev/sda1 rw\n\
                         83 30 0:26 / /tmp/stacked rw - tmpfs a rw\n\
                         84 83 0:27 / /tmp/stacked rw shared:12 - tmpfs b rw\n\
                         garbage line\n";

    #[test]
    fn parses_propagation_fields() {
        let entries = parse_mount_entries(TABLE);
        assert_eq!(entries.len(), 6, "the garbage line is skipped");
        assert_eq!(entries[0].mount_point, PathBuf::from("/"));
        assert_eq!(entries[0].propagation, vec!["shared:1"]);
        assert!(entries[0].is_shared() && entries[0].receives_propagation());

        assert!(entries[1].propagation.is_empty());
        assert!(!entries[1].receives_propagation());
        assert_eq!(entries[1].propagation_text(), "private");

        assert!(!entries[2].is_shared() && entries[2].receives_propagation());
        assert_eq!(entries[2].propagation_text(), "master:7");

        assert_eq!(entries[3].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(
            entries[3].propagation,
            vec!["shared:9", "master:7", "propagate_from:2"]
        );
    }

    #[test]
    fn covering_mount_is_the_deepest_and_topmost() {
        let entries = parse_mount_entries(TABLE);
        let on = |p: &str| covering_mount(&entries, Path::new(p)).map(|e| e.mount_point.clone());
        assert_eq!(on("/flocker/abc"), Some(PathBuf::from("/flocker")));
        assert_eq!(on("/flocker"), Some(PathBuf::from("/flocker")));
        // A path component match, not a string prefix.
        assert_eq!(on("/flockerx"), Some(PathBuf::from("/")));
        assert_eq!(on("/tmp/a"), Some(PathBuf::from("/tmp")));
        let stacked = covering_mount(&entries, Path::new("/tmp/stacked/v")).unwrap();
        assert!(stacked.is_shared(), "the later of two stacked mounts wins");
        assert_eq!(covering_mount(&[], Path::new("/")), None);
    }

    #[test]
    fn mount_points_and_entries_agree() {
        let points: Vec<PathBuf> = parse_mount_entries(TABLE)
            .into_iter()
            .map(|e| e.mount_point)
            .collect();
        assert_eq!(points, parse_mountinfo(TABLE));
        assert!(!mount_entries().unwrap().is_empty());
    }

    #[test]
    fn unescape_leaves_other_backslashes() {
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("a\\9b"), "a\\9b");
        assert_eq!(unescape("end\\04"), "end\\04");
    }

    /// The kernel's escaping of paths in mountinfo (`mangle_path` with " \t\n\\": octal `\ooo`).
    fn escape(path: &str) -> String {
        let mut out = String::new();
        for c in path.chars() {
            match c {
                ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
                c => out.push(c),
            }
        }
        out
    }

    fn propagation_field() -> impl Strategy<Value = String> {
        prop_oneof![
            (1u32..1000).prop_map(|n| format!("shared:{n}")),
            (1u32..1000).prop_map(|n| format!("master:{n}")),
            (1u32..1000).prop_map(|n| format!("propagate_from:{n}")),
            Just("unbindable".to_string()),
        ]
    }

    use proptest::collection::vec;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the table holds, parsing skips what it cannot read: never a panic, never more
        /// entries than lines, never the ` - ` separator taken for a propagation field.
        #[test]
        fn any_table_parses_to_at_most_one_entry_per_line(
            table in prop_oneof![any::<String>(), "([0-9a-z:/\\\\ -]{0,12}[ \n]){0,12}"],
        ) {
            let entries = parse_mount_entries(&table);
            prop_assert!(entries.len() <= table.lines().count());
            prop_assert!(parse_mountinfo(&table).len() <= table.lines().count());
            for entry in &entries {
                prop_assert!(!entry.propagation.iter().any(|f| f == "-"), "{:?}", entry);
            }
        }

        /// A mount point with spaces, tabs, newlines or backslashes (including a literal `\040`)
        /// comes back as it was: the bind under such a name is recognised as mounted.
        #[test]
        fn unescape_undoes_the_kernel_escaping(
            path in any::<String>(),
            tricky in "([ \t\n\\\\]|\\\\[0-7]{3}|[0-7a])*",
        ) {
            let path = format!("{path}{tricky}");
            prop_assert_eq!(unescape(&escape(&path)), path);
        }

        /// Lines built like the kernel's give back the mount point and the propagation fields they
        /// were built from, in order, whatever the root and source fields hold.
        #[test]
        fn well_formed_lines_give_back_mount_point_and_propagation(
            mounts in vec(
                (
                    any::<String>(),
                    vec(propagation_field(), 0..4),
                    any::<String>(),
                    prop_oneof!["[a-z/]{1,10}", Just("-".to_string())],
                ),
                1..6,
            ),
        ) {
            let table: String = mounts
                .iter()
                .enumerate()
                .map(|(i, (point, propagation, root, source))| {
                    let optional: String = propagation.iter().map(|f| format!(" {f}")).collect();
                    format!(
                        "{} 1 8:{i} {} {} rw,relatime{optional} - ext4 {} rw\n",
                        20 + i,
                        escape(&format!("/{root}")),
                        escape(&format!("/{point}")),
                        escape(source),
                    )
                })
                .collect();
            let entries = parse_mount_entries(&table);
            prop_assert_eq!(entries.len(), mounts.len(), "{}", table);
            for (entry, (point, propagation, _, _)) in entries.iter().zip(&mounts) {
                prop_assert_eq!(&entry.mount_point, &PathBuf::from(format!("/{point}")));
                prop_assert_eq!(&entry.propagation, propagation);
            }
            let points: Vec<PathBuf> = entries.into_iter().map(|e| e.mount_point).collect();
            prop_assert_eq!(parse_mountinfo(&table), points);
        }
    }

    #[test]
    fn root_is_a_mount_point_and_a_fresh_dir_is_not() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        let dir = std::env::temp_dir().join(format!("not-a-mount-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert!(!is_mount_point(&dir).unwrap());
        fs::remove_dir(&dir).unwrap();
    }
}
