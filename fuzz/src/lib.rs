//! Helpers shared by the fuzz targets in `fuzz_targets/`: scratch directories that are
//! removed even when an input left unreadable directories behind, a check that nothing
//! outside the destination changed, and tar header checksums fixed up so that mutated
//! headers reach the unpack code instead of stopping at "checksum mismatch".

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A scratch dir for one input: `dest/` (the directory under test) and `outside/` holding
/// one file, which no input may change, link to or add to.
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
    pub dest: PathBuf,
    pub outside: PathBuf,
}

const MARKER: &[u8] = b"not yours\n";

impl Scratch {
    pub fn new() -> Option<Scratch> {
        let dir = tempfile::Builder::new().prefix("vfuzz-").tempdir().ok()?;
        let dest = dir.path().join("dest");
        let outside = dir.path().join("outside");
        fs::create_dir(&dest).ok()?;
        fs::create_dir(&outside).ok()?;
        fs::write(outside.join("marker"), MARKER).ok()?;
        Some(Scratch {
            dir: Some(dir),
            dest,
            outside,
        })
    }

    /// Panics (a finding) when anything outside `dest` changed: the scratch dir holds more
    /// than `dest` and `outside`, `outside` holds more than its marker, or the marker's
    /// content, mode or link count changed (a hard link from inside to it counts).
    pub fn assert_outside_untouched(&self) {
        let Some(dir) = &self.dir else { return };
        let mut top: Vec<_> = fs::read_dir(dir.path())
            .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        top.sort();
        assert_eq!(top, ["dest", "outside"], "written next to the destination");
        let inside: Vec<_> = fs::read_dir(&self.outside)
            .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(inside, ["marker"], "written into a directory outside");
        let marker = self.outside.join("marker");
        let meta = fs::symlink_metadata(&marker).expect("the marker is gone");
        assert!(meta.is_file(), "the marker is no longer a file");
        assert_eq!(meta.nlink(), 1, "a hard link to a file outside");
        assert_eq!(
            fs::read(&marker).ok().as_deref(),
            Some(MARKER),
            "marker changed"
        );
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let path = dir.path().to_path_buf();
        if dir.close().is_err() {
            // an input may leave directories without write or search permission (non-root)
            open_up(&path);
            let _ = fs::remove_dir_all(&path);
        }
    }
}

fn open_up(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            open_up(&entry.path());
        }
    }
}

/// Rewrites the checksum of every tar header in `data` (walking headers by their octal size
/// fields) so that mutations of names, types and modes are not all refused as corrupt.
pub fn fix_tar_checksums(data: &mut [u8]) {
    let mut at = 0usize;
    while at + 512 <= data.len() {
        let block = &mut data[at..at + 512];
        if block.iter().all(|b| *b == 0) {
            at += 512;
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
        let text = format!("{sum:06o}\0 ");
        block[148..156].copy_from_slice(text.as_bytes());
        let size = std::str::from_utf8(&block[124..136])
            .ok()
            .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
            .and_then(|s| u64::from_str_radix(s, 8).ok())
            .unwrap_or(0);
        let kind = block[156];
        // links, directories and devices carry no data whatever their size field says
        let data_blocks = if matches!(kind, b'1' | b'2' | b'3' | b'4' | b'5' | b'6') {
            0
        } else {
            size.div_ceil(512)
        };
        let Some(next) = usize::try_from(data_blocks)
            .ok()
            .and_then(|n| n.checked_mul(512))
            .and_then(|n| n.checked_add(at + 512))
        else {
            return;
        };
        at = next;
    }
}
