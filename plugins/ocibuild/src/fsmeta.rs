//! File metadata as it goes into a layer: what `lstat` + `llistxattr` say about one path,
//! reduced to the fields a tar header carries (and umoci compares).

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::error::{Error, Result};

/// xattrs that never go into an image: host-specific or describing the build overlay
/// (the same list umoci ignores).
const IGNORED_XATTRS: &[&[u8]] = &[
    b"security.selinux",
    b"system.nfs4_acl",
    b"trusted.overlay.opaque",
    b"trusted.overlay.redirect",
    b"trusted.overlay.origin",
    b"trusted.overlay.impure",
    b"trusted.overlay.nlink",
    b"trusted.overlay.upper",
    b"trusted.overlay.metacopy",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
}

/// Metadata of one filesystem object, as stored in a layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits plus setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    /// Seconds since the epoch, truncated (not rounded) like umoci 0.6.
    pub mtime: i64,
    pub link: Vec<u8>,
    pub devmajor: u64,
    pub devminor: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Identity of the inode, to turn a second path of the same file into a hardlink entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InodeId {
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
}

/// Linux `major()`/`minor()` of a dev_t (the glibc encoding Go also uses).
pub fn split_dev(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

pub fn make_dev(major: u64, minor: u64) -> u64 {
    ((major & 0xfff) << 8) | ((major & !0xfff) << 32) | (minor & 0xff) | ((minor & !0xff) << 12)
}

/// Reads the metadata of `path` without following a final symlink. Sockets give `None`:
/// they cannot be stored in a tar archive and make no sense in an image.
pub fn read_meta(path: &Path) -> Result<Option<(Meta, InodeId)>> {
    let md = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    let ft = md.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        return Ok(None);
    };
    let link = if kind == Kind::Symlink {
        std::fs::read_link(path)
            .map_err(|e| Error::io(path, e))?
            .as_os_str()
            .as_bytes()
            .to_vec()
    } else {
        Vec::new()
    };
    let (devmajor, devminor) = if matches!(kind, Kind::Char | Kind::Block) {
        split_dev(md.rdev())
    } else {
        (0, 0)
    };
    let meta = Meta {
        kind,
        mode: md.mode() & 0o7777,
        uid: u64::from(md.uid()),
        gid: u64::from(md.gid()),
        size: if kind == Kind::File { md.size() } else { 0 },
        mtime: md.mtime(),
        link,
        devmajor,
        devminor,
        xattrs: read_xattrs(path)?,
    };
    let id = InodeId {
        dev: md.dev(),
        ino: md.ino(),
        nlink: md.nlink(),
    };
    Ok(Some((meta, id)))
}

/// Lists and reads the xattrs of `path` (not following symlinks). Filesystems without
/// xattr support simply give none.
fn read_xattrs(path: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc_enotsup()) => return Ok(out),
        Err(e) => return Err(Error::io(path, e)),
    };
    for name in names {
        let key = name.as_bytes().to_vec();
        if IGNORED_XATTRS.contains(&key.as_slice()) {
            continue;
        }
        match xattr::get(path, &name) {
            // An empty value cannot be stored as a PAX record (umoci skips it too).
            Ok(Some(v)) if !v.is_empty() => {
                out.insert(key, v);
            }
            Ok(_) => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(out)
}

fn libc_enotsup() -> i32 {
    nix::errno::Errno::ENOTSUP as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_numbers_round_trip() {
        for (ma, mi) in [(1, 3), (259, 65536), (4095, 255), (8, 1)] {
            assert_eq!(split_dev(make_dev(ma, mi)), (ma, mi));
        }
    }
}
