//! Fuzz target: the host's copy-mode volume sync-back (core/cli/src/runner/volumes.rs),
//! applying a guest tar onto a fresh volume dir per input. The volume holds a small tree
//! as pushed (a file, a dir with a file, a symlink inside and one to a dir outside the
//! volume). An error is fine; a panic, any change outside the volume, or a setuid/setgid
//! bit left in it is a finding.

#![no_main]

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vcontainer_fuzz::{fix_tar_checksums, Scratch};

fn pushed_tree(scratch: &Scratch) -> Option<()> {
    let v = &scratch.dest;
    fs::write(v.join("f"), b"hello\n").ok()?;
    fs::create_dir(v.join("d")).ok()?;
    fs::write(v.join("d/g"), b"inner\n").ok()?;
    symlink("f", v.join("l")).ok()?;
    symlink(&scratch.outside, v.join("out")).ok()?;
    Some(())
}

fn assert_no_set_id_bits(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.file_type().is_symlink() {
            continue;
        }
        assert_eq!(
            meta.mode() & 0o6000,
            0,
            "{} kept a setuid/setgid bit",
            entry.path().display()
        );
        if meta.is_dir() {
            assert_no_set_id_bits(&entry.path());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut tar = data.to_vec();
    fix_tar_checksums(&mut tar);
    let Some(scratch) = Scratch::new() else {
        return;
    };
    if pushed_tree(&scratch).is_none() {
        return;
    }
    let _ = vcontainer::runner::fuzzing::sync_back_tree(&scratch.dest, &mut tar.as_slice());
    scratch.assert_outside_untouched();
    assert_no_set_id_bits(&scratch.dest);
});
