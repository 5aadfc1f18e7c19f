//! Atomic directory replacement, used for cache entries and for the published blob set:
//! readers see either the old complete directory or the new complete one, never a mix.

use crate::error::{io_err, Result};
use nix::fcntl::{renameat2, RenameFlags};
use std::path::Path;

/// Moves the finished directory `new` to `dest`. When `dest` exists, the two are swapped
/// in one renameat2(RENAME_EXCHANGE) and the old contents (now at `new`) are deleted.
/// Both paths must be on the same filesystem (callers build next to the destination).
pub fn replace_dir(new: &Path, dest: &Path) -> Result<()> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
    }
    if dest.symlink_metadata().is_ok() {
        renameat2(None, new, None, dest, RenameFlags::RENAME_EXCHANGE).map_err(|errno| {
            io_err("swapping in", dest)(std::io::Error::from_raw_os_error(errno as i32))
        })?;
        std::fs::remove_dir_all(new).map_err(io_err("removing the previous", new))?;
    } else {
        std::fs::rename(new, dest).map_err(io_err("renaming into", dest))?;
    }
    Ok(())
}

/// Places `src` at `dest` by hard link (blobs are large and the cache is usually on the same
/// filesystem as the output), falling back to a copy across filesystems.
pub fn link_or_copy(src: &Path, dest: &Path) -> Result<()> {
    match std::fs::hard_link(src, dest) {
        Ok(()) => Ok(()),
        Err(_) => std::fs::copy(src, dest)
            .map(|_| ())
            .map_err(io_err("copying to", dest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_an_existing_directory_completely() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x86_64/docker");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join("old-only"), b"old").unwrap();
        std::fs::write(dest.join("rootfs.img"), b"old").unwrap();

        let new = dir.path().join("x86_64/.docker.new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(new.join("rootfs.img"), b"new").unwrap();
        replace_dir(&new, &dest).unwrap();

        assert_eq!(std::fs::read(dest.join("rootfs.img")).unwrap(), b"new");
        assert!(
            !dest.join("old-only").exists(),
            "old files must not survive"
        );
        assert!(!new.exists(), "the swapped-out old dir must be removed");
    }

    #[test]
    fn moves_into_a_missing_destination() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new");
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("f"), b"1").unwrap();
        let dest = dir.path().join("a/b");
        replace_dir(&new, &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"1");
    }

    #[test]
    fn link_or_copy_gives_same_contents() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"blob").unwrap();
        let dest = dir.path().join("dest");
        link_or_copy(&src, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"blob");
    }
}
