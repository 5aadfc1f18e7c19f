//! Device nodes and FIFOs in tar streams.
//!
//! The tar crate (0.4.46) gets both directions wrong for them: its builder names such an entry
//! by the source path (absolute, so the append fails) instead of the archive name, and its
//! reader writes them as empty regular files. Runtime storage needs them: overlayfs marks a
//! deleted file in a container's upper dir with a 0:0 character device (a "whiteout"), and
//! the runtime cannot use a layer whose whiteouts became plain files.

use std::fs::{FileType, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmodat, makedev, mknod, utimensat, FchmodatFlags, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, Gid, Uid};

/// Whether this file type is written with [`header`] instead of the tar crate's builder.
pub(super) fn is_node(file_type: &FileType) -> bool {
    file_type.is_fifo() || file_type.is_char_device() || file_type.is_block_device()
}

/// Whether this tar entry is created with [`create`] instead of the tar crate's reader.
pub(super) fn is_node_entry(kind: tar::EntryType) -> bool {
    matches!(
        kind,
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo
    )
}

/// The header of a device node or FIFO: type, mode, owner, mtime and (for devices) the
/// major/minor numbers; the caller appends it under the archive name with no data.
pub(super) fn header(meta: &Metadata) -> io::Result<tar::Header> {
    let file_type = meta.file_type();
    let mut header = tar::Header::new_gnu();
    header.set_metadata(meta);
    header.set_size(0);
    if file_type.is_fifo() {
        header.set_entry_type(tar::EntryType::Fifo);
        return Ok(header);
    }
    header.set_entry_type(if file_type.is_char_device() {
        tar::EntryType::Char
    } else {
        tar::EntryType::Block
    });
    let rdev = meta.rdev();
    let major = u32::try_from(nix::sys::stat::major(rdev)).map_err(io::Error::other)?;
    let minor = u32::try_from(nix::sys::stat::minor(rdev)).map_err(io::Error::other)?;
    header.set_device_major(major)?;
    header.set_device_minor(minor)?;
    Ok(header)
}

/// Creates the node an entry describes at `path` (whose parent exists and was checked to be
/// inside the destination), replacing a non-directory already there, with the entry's mode,
/// mtime and, when we are root, owner.
pub(super) fn create(header: &tar::Header, path: &Path, as_root: bool) -> io::Result<()> {
    let kind = match header.entry_type() {
        tar::EntryType::Char => SFlag::S_IFCHR,
        tar::EntryType::Block => SFlag::S_IFBLK,
        tar::EntryType::Fifo => SFlag::S_IFIFO,
        other => {
            return Err(io::Error::other(format!(
                "{other:?} is not a device node or FIFO"
            )))
        }
    };
    let device = if kind == SFlag::S_IFIFO {
        0
    } else {
        let major = header.device_major()?.unwrap_or(0);
        let minor = header.device_minor()?.unwrap_or(0);
        makedev(u64::from(major), u64::from(minor))
    };
    let permissions = Mode::from_bits_truncate(header.mode()? & 0o7777);
    match path.symlink_metadata() {
        Ok(old) if old.is_dir() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a directory is in the way",
            ))
        }
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    mknod(path, kind, permissions, device)?;
    if as_root {
        let uid = Uid::from_raw(u32::try_from(header.uid()?).map_err(io::Error::other)?);
        let gid = Gid::from_raw(u32::try_from(header.gid()?).map_err(io::Error::other)?);
        fchownat(
            None,
            path,
            Some(uid),
            Some(gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
    }
    // mknod applied the umask; the archive's bits win (after chown, which may clear them).
    fchmodat(None, path, permissions, FchmodatFlags::FollowSymlink)?;
    let mtime = TimeSpec::new(i64::try_from(header.mtime()?).unwrap_or(i64::MAX), 0);
    utimensat(
        None,
        path,
        &mtime,
        &mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}
