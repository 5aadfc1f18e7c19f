//! The build cache: input hashing and atomic cache entries.
//!
//! Two stages are cached separately so that rebuilding the agent only redoes the initramfs
//! (seconds), never the rootfs (minutes):
//! * `rootfs/<key>/`: rootfs.img, the kernel, the decompressed boot modules; key = arch,
//!   suite, mirror, sorted package list, rootfs config files, builder version.
//! * `initramfs/<key>/`: initramfs.cpio.gz; key = the rootfs key + the agent's hash.
//!
//! An entry becomes visible only by renaming a finished temp directory into place, so an
//! interrupted build leaves at most a `.tmp-*` directory, which is never taken as valid.

use crate::error::{io_err, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Bump when the builder's output changes for the same inputs (new config, different
/// squashfs options, different boot module set...), so old cache entries stop matching.
pub const BUILDER_VERSION: &str = "2";

/// Accumulates named fields into a sha256. Each field is length-prefixed so that
/// ("ab","c") and ("a","bc") hash differently.
pub struct InputHasher(Sha256);

impl InputHasher {
    pub fn new(purpose: &str) -> Self {
        let mut hasher = InputHasher(Sha256::new());
        hasher.field("purpose", purpose.as_bytes());
        hasher
    }

    pub fn field(&mut self, name: &str, value: &[u8]) -> &mut Self {
        for part in [name.as_bytes(), value] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// sha256 of a file's contents, streamed.
pub fn hash_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(io_err("opening", path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io_err("reading", path))?;
    Ok(hex::encode(hasher.finalize()))
}

/// A cache directory with one subdirectory per stage.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The final location of a stage's entry.
    pub fn entry(&self, stage: &str, key: &str) -> PathBuf {
        self.root.join(stage).join(key)
    }

    /// Returns the entry for (stage, key), building it with `build` when absent (or when
    /// `rebuild` is set). `build` fills a fresh temp directory next to the entry; only when it
    /// returns Ok is that directory renamed into place. On error the temp directory is removed.
    pub fn get_or_build(
        &self,
        stage: &str,
        key: &str,
        rebuild: bool,
        build: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<(PathBuf, bool)> {
        let entry = self.entry(stage, key);
        if entry.is_dir() && !rebuild {
            touch(&entry);
            return Ok((entry, false));
        }
        let stage_dir = self.root.join(stage);
        std::fs::create_dir_all(&stage_dir).map_err(io_err("creating", &stage_dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".tmp-{key}-"))
            .tempdir_in(&stage_dir)
            .map_err(io_err("creating a temp dir in", &stage_dir))?;
        build(tmp.path())?;
        let built = tmp.keep();
        crate::publish::replace_dir(&built, &entry)?;
        Ok((entry, true))
    }

    /// Removes finished entries not used (built or hit) for `max_age`: every change of the
    /// package set or the agent leaves a new entry behind, and rootfs entries are hundreds of
    /// MB. Published blobs are hard links, so pruning the cache never breaks a blob dir.
    pub fn prune(&self, max_age: std::time::Duration) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        let Ok(stages) = std::fs::read_dir(&self.root) else {
            return Ok(removed);
        };
        let now = std::time::SystemTime::now();
        for stage in stages.flatten() {
            if !stage.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(stage.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                let age = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok());
                if age.is_some_and(|a| a > max_age) {
                    let path = entry.path();
                    std::fs::remove_dir_all(&path).map_err(io_err("removing", &path))?;
                    removed.push(path);
                }
            }
        }
        Ok(removed)
    }

    /// Removes leftovers of interrupted builds (`.tmp-*`) in every stage directory. Only
    /// called when no other build runs (scripts/build-guest.sh holds a lock).
    pub fn remove_stale_temps(&self) -> Result<usize> {
        let mut removed = 0;
        let Ok(stages) = std::fs::read_dir(&self.root) else {
            return Ok(0);
        };
        for stage in stages.flatten() {
            let Ok(entries) = std::fs::read_dir(stage.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    let path = entry.path();
                    std::fs::remove_dir_all(&path).map_err(io_err("removing", &path))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Marks a cache entry as used now (its mtime is the prune clock). Best effort: a read-only
/// cache still works, it just cannot be pruned by age.
fn touch(entry: &Path) {
    let _ = filetime::set_file_mtime(entry, filetime::FileTime::now());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hasher_separates_fields() {
        let h = |a: &str, b: &str| {
            let mut h = InputHasher::new("t");
            h.field("x", a.as_bytes()).field("y", b.as_bytes());
            h.finish()
        };
        assert_eq!(h("ab", "c"), h("ab", "c"));
        assert_ne!(h("ab", "c"), h("a", "bc"));
        assert_eq!(h("ab", "c").len(), 64);
    }

    #[test]
    fn failed_build_leaves_no_entry_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let err = cache.get_or_build("rootfs", "k1", false, |tmp| {
            std::fs::write(tmp.join("half"), b"x").unwrap();
            Err(crate::error::Error::Invalid("interrupted".into()))
        });
        assert!(err.is_err());
        assert!(!cache.entry("rootfs", "k1").exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("rootfs"))
            .unwrap()
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn second_lookup_hits_and_rebuild_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let (path, built) = cache
            .get_or_build("s", "k", false, |tmp| {
                std::fs::write(tmp.join("f"), b"one").map_err(io_err("w", tmp))
            })
            .unwrap();
        assert!(built);
        let (again, built) = cache
            .get_or_build("s", "k", false, |_| panic!("must not rebuild"))
            .unwrap();
        assert!(!built);
        assert_eq!(path, again);
        let (_, built) = cache
            .get_or_build("s", "k", true, |tmp| {
                std::fs::write(tmp.join("f"), b"two").map_err(io_err("w", tmp))
            })
            .unwrap();
        assert!(built);
        assert_eq!(std::fs::read(path.join("f")).unwrap(), b"two");
    }

    #[test]
    fn prune_removes_only_entries_unused_for_the_age() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        for key in ["old", "fresh"] {
            cache
                .get_or_build("rootfs", key, false, |tmp| {
                    std::fs::write(tmp.join("f"), b"x").map_err(io_err("w", tmp))
                })
                .unwrap();
        }
        let week_ago = filetime::FileTime::from_unix_time(
            filetime::FileTime::now().unix_seconds() - 8 * 24 * 3600,
            0,
        );
        filetime::set_file_mtime(cache.entry("rootfs", "old"), week_ago).unwrap();
        let removed = cache
            .prune(std::time::Duration::from_secs(7 * 24 * 3600))
            .unwrap();
        assert_eq!(removed, [cache.entry("rootfs", "old")]);
        assert!(cache.entry("rootfs", "fresh").is_dir());

        // a cache hit refreshes the clock
        filetime::set_file_mtime(cache.entry("rootfs", "fresh"), week_ago).unwrap();
        cache
            .get_or_build("rootfs", "fresh", false, |_| panic!("cached"))
            .unwrap();
        let removed = cache
            .prune(std::time::Duration::from_secs(7 * 24 * 3600))
            .unwrap();
        assert!(removed.is_empty(), "{removed:?}");
    }

    #[test]
    fn stale_temps_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rootfs/.tmp-abc-123/sub")).unwrap();
        std::fs::create_dir_all(dir.path().join("rootfs/keep")).unwrap();
        let cache = Cache::new(dir.path());
        assert_eq!(cache.remove_stale_temps().unwrap(), 1);
        assert!(dir.path().join("rootfs/keep").exists());
        assert!(!dir.path().join("rootfs/.tmp-abc-123").exists());
    }

    #[test]
    fn file_hash_follows_contents() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("agent");
        std::fs::write(&f, b"v1").unwrap();
        let one = hash_file(&f).unwrap();
        std::fs::write(&f, b"v2").unwrap();
        assert_ne!(one, hash_file(&f).unwrap());
    }
}
