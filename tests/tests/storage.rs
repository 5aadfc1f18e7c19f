//! End-to-end tests of the runtime storage round trip (issue 4 item 6) with what overlay
//! storage holds beyond plain files: a container that deleted a file from its image has a
//! whiteout (a 0:0 character device) in its overlay upper dir. `--storage out.tar` must
//! archive it as a device node and `--input-storage out.tar` must recreate it, or the
//! runtime no longer sees the deletion (or refuses the layer).
//!
//! The plain export/import of images is covered in runtime_commands.rs; this file is about
//! containers and their overlay metadata.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use vcontainer_tests::{
    assert_no_vm_processes, busybox_rootfs_tar, stderr, stdout, vm_or_skip, World,
};

/// A file of the busybox image that the container deletes.
const DELETED: &str = "bin/true";
const CONTAINER: &str = "gone";

fn ok(w: &World, tool: &str, args: &[&OsStr]) -> String {
    w.run_ok(tool, args)
}

/// One tar entry: name, kind, device major/minor.
type Listed = (PathBuf, tar::EntryType, Option<(u32, u32)>);

/// Every entry of the tar at `path`.
fn listing(path: &Path) -> Vec<Listed> {
    let file = std::fs::File::open(path).expect("storage tar");
    let mut archive = tar::Archive::new(file);
    archive
        .entries()
        .expect("tar entries")
        .map(|entry| {
            let entry = entry.expect("tar entry");
            let header = entry.header();
            let device = match (header.device_major(), header.device_minor()) {
                (Ok(Some(major)), Ok(Some(minor))) => Some((major, minor)),
                _ => None,
            };
            (
                entry.path().expect("entry name").into_owned(),
                header.entry_type(),
                device,
            )
        })
        .collect()
}

/// Import busybox, run a container that deletes [`DELETED`] (kept: no `--rm`), export the
/// storage; then start a fresh state from that export and check the runtime still knows the
/// container, the image and the deletion.
fn whiteouts_survive_the_storage_round_trip(tool: &str) {
    let w = World::new();
    ok(&w, tool, &["memres".as_ref(), "start".as_ref()]);
    let rootfs = w.home.path().join("bb-rootfs.tar");
    busybox_rootfs_tar(&rootfs).expect("busybox rootfs tar");
    ok(
        &w,
        tool,
        &["import".as_ref(), rootfs.as_os_str(), "bb:1".as_ref()],
    );
    let deleted = format!("/{DELETED}");
    ok(
        &w,
        tool,
        &[
            "run".as_ref(),
            "--name".as_ref(),
            CONTAINER.as_ref(),
            "bb:1".as_ref(),
            "rm".as_ref(),
            deleted.as_ref(),
        ],
    );
    let storage = w.home.path().join("out.tar");
    ok(
        &w,
        tool,
        &[
            "--storage".as_ref(),
            storage.as_os_str(),
            "ps".as_ref(),
            "-a".as_ref(),
        ],
    );
    ok(&w, tool, &["memres".as_ref(), "stop".as_ref()]);
    assert_no_vm_processes(w.home.path());

    let entries = listing(&storage);
    let whiteouts: Vec<&PathBuf> = entries
        .iter()
        .filter(|(_, kind, device)| *kind == tar::EntryType::Char && *device == Some((0, 0)))
        .map(|(name, _, _)| name)
        .collect();
    assert!(
        !whiteouts.is_empty(),
        "{tool}: no 0:0 character device in the storage tar ({} entries)",
        entries.len()
    );
    // The image's layer holds the file itself; the container's upper dir the whiteout for
    // it. Overlayfs may share one whiteout inode between deletions, so that entry is the
    // node itself or a hard link to it.
    let named: Vec<_> = entries
        .iter()
        .filter(|(name, _, _)| {
            name.ends_with(DELETED) && name.components().any(|c| c.as_os_str() == "diff")
        })
        .collect();
    assert!(
        named
            .iter()
            .any(|(_, kind, _)| matches!(kind, tar::EntryType::Char | tar::EntryType::Link)),
        "{tool}: no whiteout for {DELETED} in an upper dir: {named:?}"
    );

    let fresh = World::new();
    let from_storage = |args: &[&str]| {
        let mut full: Vec<&OsStr> = vec!["--input-storage".as_ref(), storage.as_os_str()];
        full.extend(args.iter().map(|a| OsStr::new(*a)));
        ok(&fresh, tool, &full)
    };
    let ps = from_storage(&["ps", "-a"]);
    assert!(ps.contains(CONTAINER), "{tool}: container missing: {ps}");
    let images = from_storage(&["images"]);
    assert!(images.contains("bb"), "{tool}: image missing: {images}");
    // The container's command runs again on its own upper dir: with the whiteout recreated
    // the file is still gone and `rm` fails; a whiteout restored as a plain file would show
    // an empty file that `rm` removes happily.
    let again = fresh.run(
        tool,
        [
            OsStr::new("--input-storage"),
            storage.as_os_str(),
            "start".as_ref(),
            "-a".as_ref(),
            CONTAINER.as_ref(),
        ],
    );
    let output = format!("{}{}", stdout(&again), stderr(&again));
    assert_eq!(again.status.code(), Some(1), "{tool} start -a: {output}");
    assert!(
        output.contains("No such file or directory"),
        "{tool}: deletion of {deleted} lost: {output}"
    );
    assert_no_vm_processes(fresh.home.path());
}

#[test]
fn vpdmn_storage_round_trip_keeps_whiteouts() {
    vm_or_skip!("podman");
    whiteouts_survive_the_storage_round_trip("vpdmn");
}

#[test]
fn vdkr_storage_round_trip_keeps_whiteouts() {
    vm_or_skip!("docker");
    whiteouts_survive_the_storage_round_trip("vdkr");
}
