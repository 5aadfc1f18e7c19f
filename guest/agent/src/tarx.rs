//! `PushTar` / `PullTar`: tar streams between host and guest directories.
//!
//! Pushed archives come from the host, but a bad or hostile archive must still never write
//! outside the destination: entries with `..` or absolute names are refused outright, and
//! `tar::Entry::unpack_in` refuses entries whose parent resolves (through symlinks) outside it
//! (device nodes and FIFOs, which the tar crate cannot create, get the same check in [`place`]).
//!
//! Pulled archives must restore the guest's runtime storage exactly (`--storage`, then
//! `--input-storage`), so they keep what overlayfs relies on: whiteout device nodes
//! ([`nodes`]) and extended attributes ([`xattrs`]).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use vcontainer_proto::{read_frame, ErrorKind, FrameType, ProtoError, Response};

use crate::sink::FrameSink;
use crate::{error_kind, log};

mod nodes;
#[cfg(test)]
mod tests;
mod xattrs;

/// Bytes gathered before a tar frame is sent while pulling.
const PULL_CHUNK: usize = 256 * 1024;

pub(crate) fn push(dest: &str, conn: &mut dyn Read, sink: &FrameSink) -> Result<(), ProtoError> {
    let mut frames = TarFrames {
        conn,
        pending: Vec::new(),
        offset: 0,
        ended: false,
    };
    let result = unpack(dest, &mut frames);
    // Read what is left of the stream so the host gets our answer instead of a reset.
    let drained = io::copy(&mut frames, &mut io::sink());
    let response = match (result, drained) {
        (Ok(count), Ok(_)) => {
            log!("push: {count} entries into {dest}");
            Response::Done
        }
        (Err((kind, message)), _) => Response::error(kind, message),
        (Ok(_), Err(e)) => Response::error(ErrorKind::Io, format!("tar stream: {e}")),
    };
    sink.finish(&response)
}

pub(crate) fn unpack(dest: &str, source: &mut dyn Read) -> Result<usize, (ErrorKind, String)> {
    let dest = Path::new(dest);
    if !dest.is_absolute() {
        return Err((
            ErrorKind::BadRequest,
            format!(
                "push destination {} is not an absolute path",
                dest.display()
            ),
        ));
    }
    std::fs::create_dir_all(dest).map_err(|e| {
        (
            error_kind(&e),
            format!("cannot create {}: {e}", dest.display()),
        )
    })?;
    let real_dest = dest.canonicalize().map_err(|e| {
        (
            error_kind(&e),
            format!("cannot resolve {}: {e}", dest.display()),
        )
    })?;
    // Ownership can only be restored by root (the guest agent is root; tests may not be).
    let as_root = nix::unistd::geteuid().is_root();
    let mut archive = tar::Archive::new(source);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_preserve_ownerships(as_root);
    let entries = archive
        .entries()
        .map_err(|e| (ErrorKind::Io, format!("reading tar stream: {e}")))?;
    let mut count = 0;
    for entry in entries {
        let mut entry = entry.map_err(|e| (ErrorKind::Io, format!("reading tar stream: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| (ErrorKind::BadRequest, format!("tar entry name: {e}")))?
            .into_owned();
        if let Some(bad) = escaping_component(&name) {
            return Err((
                ErrorKind::PathEscape,
                format!(
                    "refusing tar entry {}: {bad} would leave {}",
                    name.display(),
                    dest.display()
                ),
            ));
        }
        let unpacking =
            |e: io::Error| (error_kind(&e), format!("unpacking {}: {e}", name.display()));
        let attributes = xattrs::of_entry(&mut entry).map_err(unpacking)?;
        if nodes::is_node_entry(entry.header().entry_type()) {
            let path = place(dest, &real_dest, &name)?;
            nodes::create(entry.header(), &path, as_root).map_err(unpacking)?;
            xattrs::restore(&path, &attributes).map_err(unpacking)?;
            count += 1;
            continue;
        }
        match entry.unpack_in(dest) {
            Ok(true) => count += 1,
            Ok(false) => {
                return Err((
                    ErrorKind::PathEscape,
                    format!(
                        "refusing tar entry {}: outside {}",
                        name.display(),
                        dest.display()
                    ),
                ))
            }
            Err(e) => {
                let text = error_chain(&e);
                let kind = if text.contains("outside of") {
                    ErrorKind::PathEscape
                } else {
                    ErrorKind::Io
                };
                return Err((kind, format!("unpacking {}: {text}", name.display())));
            }
        }
        if !attributes.is_empty() {
            // unpack_in checked every parent of this path; the attributes go on the entry
            // itself (a symlink's own), never through it.
            xattrs::restore(&dest.join(normal_parts(&name)), &attributes).map_err(unpacking)?;
        }
    }
    Ok(count)
}

/// `name` without `.` components (the tar crate's reading of an entry name).
fn normal_parts(name: &Path) -> PathBuf {
    name.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// Where the entry `name` goes under `dest`, with its missing parent directories created.
/// A parent that is a symlink must resolve to a directory inside `real_dest` (the canonical
/// `dest`), checked before anything is created beneath it.
fn place(dest: &Path, real_dest: &Path, name: &Path) -> Result<PathBuf, (ErrorKind, String)> {
    let parts = normal_parts(name);
    let Some(file_name) = parts.file_name() else {
        return Err((
            ErrorKind::BadRequest,
            format!("tar entry {} names no file", name.display()),
        ));
    };
    let failed = |e: io::Error, path: &Path| (error_kind(&e), format!("{}: {e}", path.display()));
    let mut path = dest.to_path_buf();
    for part in parts.parent().into_iter().flat_map(Path::components) {
        path.push(part);
        match path.symlink_metadata() {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                let real = path.canonicalize().map_err(|e| failed(e, &path))?;
                if !real.starts_with(real_dest) || !real.is_dir() {
                    return Err((
                        ErrorKind::PathEscape,
                        format!(
                            "refusing tar entry {}: {} leads outside {}",
                            name.display(),
                            path.display(),
                            dest.display()
                        ),
                    ));
                }
            }
            Ok(_) => {
                return Err((
                    ErrorKind::Io,
                    format!(
                        "unpacking {}: {} is not a directory",
                        name.display(),
                        path.display()
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir(&path).map_err(|e| failed(e, &path))?;
            }
            Err(e) => return Err(failed(e, &path)),
        }
    }
    path.push(file_name);
    Ok(path)
}

/// The first component of a tar entry name that could climb out of the destination.
fn escaping_component(name: &Path) -> Option<&'static str> {
    name.components().find_map(|c| match c {
        Component::ParentDir => Some("'..'"),
        Component::RootDir | Component::Prefix(_) => Some("an absolute path"),
        Component::CurDir | Component::Normal(_) => None,
    })
}

/// The `Tar` frames of a connection as one byte stream, ending at `TarEnd`.
struct TarFrames<'a> {
    conn: &'a mut dyn Read,
    pending: Vec<u8>,
    offset: usize,
    ended: bool,
}

impl Read for TarFrames<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.offset >= self.pending.len() {
            if self.ended {
                return Ok(0);
            }
            let frame = read_frame(self.conn)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "host closed the connection before the end of the tar stream",
                    )
                })?;
            match frame.kind {
                FrameType::Tar => {
                    self.pending = frame.payload;
                    self.offset = 0;
                }
                FrameType::TarEnd => self.ended = true,
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected {other:?} frame inside a tar stream"),
                    ))
                }
            }
        }
        let n = buf.len().min(self.pending.len() - self.offset);
        buf[..n].copy_from_slice(&self.pending[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

pub(crate) fn pull(path: &str, contents_only: bool, sink: &FrameSink) -> Result<(), ProtoError> {
    let writer = TarWriter {
        sink,
        buf: Vec::with_capacity(PULL_CHUNK),
    };
    let packed = pack(Path::new(path), contents_only, writer).and_then(|mut writer| {
        writer
            .flush()
            .map_err(|e| (ErrorKind::Io, format!("sending {path}: {e}")))?;
        sink.frame(FrameType::TarEnd, &[])
            .map_err(|e| (ErrorKind::Io, e.to_string()))
    });
    let response = match packed {
        Ok(()) => Response::Done,
        Err((kind, message)) => Response::error(kind, message),
    };
    sink.finish(&response)
}

/// Writes `path` as a tar stream into `out` and returns `out`. Entries keep modes, owners,
/// mtimes, symlinks, hard links (files and nodes with several links are archived once, then
/// linked), device nodes, FIFOs and extended attributes; sockets are skipped.
fn pack<W: Write>(path: &Path, contents_only: bool, out: W) -> Result<W, (ErrorKind, String)> {
    if !path.is_absolute() {
        return Err((
            ErrorKind::BadRequest,
            format!("pull path {} is not an absolute path", path.display()),
        ));
    }
    path.symlink_metadata()
        .map_err(|e| (error_kind(&e), format!("{}: {e}", path.display())))?;
    let top = if contents_only {
        PathBuf::from(".")
    } else {
        path.file_name()
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
    };
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    // (device, inode) of files with several links -> the name they were first archived as.
    let mut first_names: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let walk = walkdir::WalkDir::new(path)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walk {
        let entry =
            entry.map_err(|e| (ErrorKind::Io, format!("walking {}: {e}", path.display())))?;
        let source = entry.path();
        let packing = |e: io::Error| (error_kind(&e), format!("packing {}: {e}", source.display()));
        let relative = source.strip_prefix(path).unwrap_or(Path::new(""));
        let name = top.join(relative);
        let meta = source.symlink_metadata().map_err(packing)?;
        let file_type = meta.file_type();
        if file_type.is_socket() {
            // Like GNU tar: a socket cannot be archived, and is meaningless after a restart.
            log!("pull: skipping socket {}", source.display());
            continue;
        }
        if !file_type.is_dir() && meta.nlink() > 1 {
            // Overlayfs shares one whiteout node between the deletions of a container, so
            // device nodes have several links as often as files do.
            let key = (meta.dev(), meta.ino());
            if let Some(first) = first_names.get(&key) {
                let mut header = tar::Header::new_gnu();
                header.set_metadata(&meta);
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                builder
                    .append_link(&mut header, &name, first)
                    .map_err(packing)?;
                continue;
            }
            first_names.insert(key, name.clone());
        }
        let attributes = xattrs::read(source).map_err(packing)?;
        let records = xattrs::pax_records(&attributes, source);
        if !records.is_empty() {
            builder
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                .map_err(packing)?;
        }
        if nodes::is_node(&file_type) {
            let mut header = nodes::header(&meta).map_err(packing)?;
            builder
                .append_data(&mut header, &name, io::empty())
                .map_err(packing)?;
            continue;
        }
        builder
            .append_path_with_name(source, &name)
            .map_err(packing)?;
    }
    builder
        .into_inner()
        .map_err(|e| (error_kind(&e), format!("packing {}: {e}", path.display())))
}

/// Cuts the tar byte stream into `Tar` frames.
struct TarWriter<'a> {
    sink: &'a FrameSink,
    buf: Vec<u8>,
}

impl Write for TarWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PULL_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.sink
                .data(FrameType::Tar, &self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// An error with its causes: tar wraps the interesting part ("outside of the destination",
/// "permission denied") in a generic "failed to unpack" error.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}
