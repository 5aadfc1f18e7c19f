//! Output directories appear complete or not at all: everything is written into a hidden
//! temp directory next to the destination and renamed into place at the end. A failed
//! build removes its temp directory (tempfile's drop) and leaves the destination untouched.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub struct Staged {
    tmp: tempfile::TempDir,
    dest: PathBuf,
    force: bool,
}

fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn is_empty_dir(p: &Path) -> bool {
    fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
}

impl Staged {
    /// Refuses an existing non-empty destination unless `force`.
    pub fn new(dest: &Path, force: bool) -> Result<Self> {
        if let Ok(md) = fs::symlink_metadata(dest) {
            let empty = md.is_dir() && is_empty_dir(dest);
            if !empty && !force {
                return Err(Error::OutputExists(dest.to_path_buf()));
            }
        }
        let parent = parent_of(dest);
        fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp-"))
            .tempdir_in(&parent)
            .map_err(|e| Error::io(&parent, e))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io(tmp.path(), e))?;
        Ok(Staged {
            tmp,
            dest: dest.to_path_buf(),
            force,
        })
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Moves the finished directory into place (replacing an old one only with `force`).
    pub fn commit(self) -> Result<PathBuf> {
        let staged = self.tmp.keep();
        let dest = self.dest;
        let mut old: Option<PathBuf> = None;
        if fs::symlink_metadata(&dest).is_ok() {
            if !self.force && !is_empty_dir(&dest) {
                let _ = fs::remove_dir_all(&staged);
                return Err(Error::OutputExists(dest));
            }
            let aside = staged.with_extension("old");
            fs::rename(&dest, &aside).map_err(|e| Error::io(&dest, e))?;
            old = Some(aside);
        }
        if let Err(e) = fs::rename(&staged, &dest) {
            if let Some(o) = &old {
                let _ = fs::rename(o, &dest);
            }
            let _ = fs::remove_dir_all(&staged);
            return Err(Error::io(&dest, e));
        }
        if let Some(o) = old {
            let md = fs::symlink_metadata(&o);
            let _ = if md.is_ok_and(|m| m.is_dir()) {
                fs::remove_dir_all(&o)
            } else {
                fs::remove_file(&o)
            };
        }
        Ok(dest)
    }
}

/// A file written under a temp name beside its destination and moved into place by
/// [`StagedFile::commit`]; dropped before that, it disappears. Several outputs of one build
/// (two tars and the layout) are all written before any is committed, so a failure in one
/// leaves none of them behind.
pub struct StagedFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
    force: bool,
}

impl StagedFile {
    /// Refuses an existing `dest` unless `force`, then writes the temp file with `fill`.
    pub fn new(
        dest: &Path,
        force: bool,
        fill: impl FnOnce(&mut fs::File) -> Result<()>,
    ) -> Result<Self> {
        if fs::symlink_metadata(dest).is_ok() && !force {
            return Err(Error::OutputExists(dest.to_path_buf()));
        }
        let parent = parent_of(dest);
        fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".vcontainer-tmp-")
            .tempfile_in(&parent)
            .map_err(|e| Error::io(&parent, e))?;
        fill(tmp.as_file_mut())?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(tmp.path(), e))?;
        Ok(StagedFile {
            tmp,
            dest: dest.to_path_buf(),
            force,
        })
    }

    /// Moves the file into place; without `force` an existing destination (one that
    /// appeared meanwhile) is not replaced.
    pub fn commit(self) -> Result<PathBuf> {
        let dest = self.dest;
        if self.force {
            self.tmp.persist(&dest)
        } else {
            self.tmp.persist_noclobber(&dest)
        }
        .map_err(|e| Error::io(&dest, e.error))?;
        Ok(dest)
    }
}
