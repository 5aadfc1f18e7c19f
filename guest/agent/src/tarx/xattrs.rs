//! Extended attributes in tar streams, as PAX `SCHILY.xattr.<name>` records (GNU tar's and
//! containers/storage's spelling).
//!
//! Runtime storage depends on them: overlayfs marks an opaque directory (one that hides the
//! lower layers' contents) with `trusted.overlay.opaque`, and image files may carry file
//! capabilities (`security.capability`). The tar crate's builder never writes xattrs and its
//! reader restores them on regular files only, so both directions are done here.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::log;

const PAX_PREFIX: &str = "SCHILY.xattr.";

/// One extended attribute: name and value.
pub(super) type Xattr = (OsString, Vec<u8>);

/// The extended attributes of `path` itself (a symlink's own, not its target's). A file
/// system without xattr support has none.
pub(super) fn read(path: &Path) -> io::Result<Vec<Xattr>> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for name in names {
        // Removed between list and get: nothing to keep.
        if let Some(value) = xattr::get(path, &name)? {
            found.push((name, value));
        }
    }
    Ok(found)
}

/// The PAX records for `xattrs`; names that are not UTF-8 cannot be PAX keys and are left
/// out (with a log line).
pub(super) fn pax_records<'a>(xattrs: &'a [Xattr], path: &Path) -> Vec<(String, &'a [u8])> {
    xattrs
        .iter()
        .filter_map(|(name, value)| match name.to_str() {
            Some(name) => Some((format!("{PAX_PREFIX}{name}"), value.as_slice())),
            None => {
                log!(
                    "pull: skipping xattr {name:?} of {}: not UTF-8",
                    path.display()
                );
                None
            }
        })
        .collect()
}

/// The extended attributes an entry's PAX records carry.
pub(super) fn of_entry<R: io::Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<Xattr>> {
    let Some(extensions) = entry.pax_extensions()? else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for extension in extensions {
        let extension = extension?;
        if let Some(name) = extension.key_bytes().strip_prefix(PAX_PREFIX.as_bytes()) {
            found.push((
                OsStr::from_bytes(name).to_os_string(),
                extension.value_bytes().to_vec(),
            ));
        }
    }
    Ok(found)
}

/// Sets `xattrs` on `path` itself. Overlay attributes must land (without them an opaque
/// directory shows the lower layers again), so failing to set one is an error; others
/// (e.g. `security.selinux` on a file system that refuses it) are logged and skipped, like
/// GNU tar does.
pub(super) fn restore(path: &Path, xattrs: &[Xattr]) -> io::Result<()> {
    for (name, value) in xattrs {
        if let Err(e) = xattr::set(path, name, value) {
            let text = format!(
                "setting xattr {} on {}: {e}",
                name.to_string_lossy(),
                path.display()
            );
            if is_overlay(name) {
                return Err(io::Error::new(e.kind(), text));
            }
            log!("push: {text} (skipped)");
        }
    }
    Ok(())
}

fn is_overlay(name: &OsStr) -> bool {
    let name = name.as_bytes();
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EOPNOTSUPP)
}
