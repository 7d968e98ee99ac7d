//! Real bind mounts in temporary directories: bind, reuse, stacked unmount, listing, propagation of
//! what is written. Needs root; `make test` runs the suite in a private mount namespace.

use std::fs;

use flocker_docker_plugin::mount;

use crate::util::{is_mounted, require_root};

#[test]
fn bind_shows_the_source_and_unmount_removes_it() {
    if !require_root("bind_shows_the_source_and_unmount_removes_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let target = dir.path().join("propagated").join("dataset");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("file"), "data").unwrap();

    mount::bind(&source, &target).unwrap();
    assert!(is_mounted(&target));
    assert_eq!(fs::read_to_string(target.join("file")).unwrap(), "data");
    fs::write(target.join("new"), "via target").unwrap();
    assert_eq!(
        fs::read_to_string(source.join("new")).unwrap(),
        "via target"
    );
    assert_eq!(
        mount::mounts_below(&dir.path().join("propagated")).unwrap(),
        vec![target.clone()]
    );

    // A second bind of a mounted target reuses it instead of stacking (plugin crash + restart).
    mount::bind(&source, &target).unwrap();
    let layers = mount::mount_points()
        .unwrap()
        .iter()
        .filter(|p| **p == target)
        .count();
    assert_eq!(layers, 1);

    mount::unmount_all(&target).unwrap();
    assert!(!is_mounted(&target));
    assert!(
        !target.exists(),
        "the empty mount point directory is removed"
    );
    assert_eq!(
        fs::read_to_string(source.join("file")).unwrap(),
        "data",
        "data untouched"
    );
    mount::unmount_all(&target).expect("unmounting what is not mounted is fine");
}

#[test]
fn unmount_all_peels_stacked_mounts() {
    if !require_root("unmount_all_peels_stacked_mounts") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b, target) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("t"),
    );
    for d in [&a, &b, &target] {
        fs::create_dir_all(d).unwrap();
    }
    // Stack two binds the way a crash-looping plugin without reuse would.
    for source in [&a, &b] {
        nix::mount::mount(
            Some(source.as_path()),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
    }
    assert_eq!(
        mount::mount_points()
            .unwrap()
            .iter()
            .filter(|p| **p == target)
            .count(),
        2
    );
    mount::unmount_all(&target).unwrap();
    assert!(!is_mounted(&target));
}

#[test]
fn unmount_all_keeps_a_directory_with_data() {
    if !require_root("unmount_all_keeps_a_directory_with_data") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("precious"), "x").unwrap();
    mount::unmount_all(&target).unwrap();
    assert!(
        target.join("precious").exists(),
        "never deletes data in an unmounted directory"
    );
}

#[test]
fn bind_of_a_missing_source_names_both_paths() {
    if !require_root("bind_of_a_missing_source_names_both_paths") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let err = mount::bind(&dir.path().join("missing"), &dir.path().join("t"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing") && err.contains("/t"), "{err}");
}
