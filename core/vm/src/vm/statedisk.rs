//! The persistent ext4 state disk (`<runtime>-state.img`).
//!
//! Created on first use as a sparse file (only what the guest writes takes host space) and
//! formatted with mkfs.ext4; never recreated when it exists, because it holds the user's
//! images. It is built under a temporary name and linked into place (tempfile's
//! `persist_noclobber`), so an interrupted creation never leaves a half-formatted disk that a
//! later boot would trust, and a disk another process made meanwhile is never replaced.

use std::path::Path;
use std::process::{Command, Stdio};

use super::error::{Result, VmError};

/// Outcome of `ensure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateDisk {
    Created,
    Existing,
}

/// Make sure `path` is a state disk: keep an existing file, else create a sparse ext4 image
/// of `size_mib`.
pub fn ensure(path: &Path, size_mib: u64) -> Result<StateDisk> {
    let err = |detail: String| VmError::StateDisk {
        path: path.to_path_buf(),
        detail,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => return Ok(StateDisk::Existing),
        Ok(_) => return Err(err("exists but is not a regular file".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    if size_mib < 64 {
        return Err(err(format!(
            "size {size_mib} MiB is too small (minimum 64)"
        )));
    }
    match create(path, size_mib).map_err(err) {
        Ok(()) => Ok(StateDisk::Created),
        // another process made the disk meanwhile: theirs is kept
        Err(_) if path.is_file() => Ok(StateDisk::Existing),
        Err(e) => Err(e),
    }
}

/// A sparse file formatted under a temporary name in the same dir (removed on any failure),
/// then linked into place without replacing anything.
fn create(path: &Path, size_mib: u64) -> std::result::Result<(), String> {
    let dir = path.parent().ok_or("no parent dir")?;
    let name = path.file_name().ok_or("no file name")?.to_string_lossy();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.creating-"))
        .tempfile_in(dir)
        .map_err(|e| format!("creating a temporary file in {}: {e}", dir.display()))?;
    tmp.as_file()
        .set_len(size_mib * 1024 * 1024)
        .map_err(|e| format!("sizing: {e}"))?;
    format_ext4(tmp.path())?;
    tmp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            "created concurrently by another process".to_string()
        } else {
            format!("moving into place: {}", e.error)
        }
    })?;
    Ok(())
}

fn format_ext4(image: &Path) -> std::result::Result<(), String> {
    let out = Command::new(mkfs_ext4())
        .args([
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
            "-L",
            "vcstate",
        ])
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running mkfs.ext4 (install e2fsprogs): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mkfs.ext4 failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// mkfs.ext4: the SDK's bundled copy first, then PATH and the sbin dirs a non-root PATH
/// may lack (see [`process::which`]).
fn mkfs_ext4() -> std::path::PathBuf {
    super::process::which("mkfs.ext4").unwrap_or_else(|| "mkfs.ext4".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn creates_sparse_ext4_once() {
        let t = tempfile::tempdir().expect("tmp");
        let p = t.path().join("podman-state.img");
        assert_eq!(ensure(&p, 256).expect("create"), StateDisk::Created);
        let m = std::fs::metadata(&p).expect("exists");
        assert_eq!(m.len(), 256 * 1024 * 1024);
        assert!(
            m.blocks() * 512 < m.len() / 4,
            "not sparse: {} blocks",
            m.blocks()
        );
        // ext4 superblock magic 0xEF53 at offset 1024 + 0x38
        let bytes = std::fs::read(&p).expect("read");
        assert_eq!(&bytes[1024 + 0x38..1024 + 0x3a], &[0x53, 0xef]);
        // a second call keeps the disk, even a modified one
        std::fs::write(t.path().join("marker"), b"").expect("w");
        let before = std::fs::metadata(&p).expect("m").ino();
        assert_eq!(ensure(&p, 512).expect("keep"), StateDisk::Existing);
        assert_eq!(std::fs::metadata(&p).expect("m").ino(), before);
        // no temp file left over
        let names: Vec<_> = std::fs::read_dir(t.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn refuses_a_directory_and_tiny_sizes() {
        let t = tempfile::tempdir().expect("tmp");
        assert!(ensure(t.path(), 256).is_err());
        let e = ensure(&t.path().join("x.img"), 1).expect_err("too small");
        assert!(e.to_string().contains("too small"));
        assert!(!t.path().join("x.img").exists());
    }
}
