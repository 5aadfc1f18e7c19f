//! `PushTar` / `PullTar`: tar streams between host and guest directories.
//!
//! Pushed archives come from the host, but a bad or hostile archive must still never write
//! outside the destination: entries with `..` or absolute names are refused outright, and
//! `tar::Entry::unpack_in` refuses entries whose parent resolves (through symlinks) outside it.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use vcontainer_proto::{read_frame, ErrorKind, FrameType, ProtoError, Response};

use crate::sink::FrameSink;
use crate::{error_kind, log};

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

fn unpack(dest: &str, source: &mut dyn Read) -> Result<usize, (ErrorKind, String)> {
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
    let mut archive = tar::Archive::new(source);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    // Ownership can only be restored by root (the guest agent is root; tests may not be).
    archive.set_preserve_ownerships(nix::unistd::geteuid().is_root());
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
    }
    Ok(count)
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
    let response = match pack(Path::new(path), contents_only, sink) {
        Ok(()) => Response::Done,
        Err((kind, message)) => Response::error(kind, message),
    };
    sink.finish(&response)
}

fn pack(path: &Path, contents_only: bool, sink: &FrameSink) -> Result<(), (ErrorKind, String)> {
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
    let writer = TarWriter {
        sink,
        buf: Vec::with_capacity(PULL_CHUNK),
    };
    let mut builder = tar::Builder::new(writer);
    builder.follow_symlinks(false);
    let io_err = |e: io::Error| (error_kind(&e), format!("packing {}: {e}", path.display()));
    // (device, inode) of files with several links -> the name they were first archived as.
    let mut first_names: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let walk = walkdir::WalkDir::new(path)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walk {
        let entry =
            entry.map_err(|e| (ErrorKind::Io, format!("walking {}: {e}", path.display())))?;
        let relative = entry.path().strip_prefix(path).unwrap_or(Path::new(""));
        let name = top.join(relative);
        let meta = entry.path().symlink_metadata().map_err(|e| {
            io_err(io::Error::new(
                e.kind(),
                format!("{}: {e}", entry.path().display()),
            ))
        })?;
        if meta.file_type().is_socket() {
            // Like GNU tar: a socket cannot be archived, and is meaningless after a restart.
            log!("pull: skipping socket {}", entry.path().display());
            continue;
        }
        if meta.is_file() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = first_names.get(&key) {
                let mut header = tar::Header::new_gnu();
                header.set_metadata(&meta);
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                builder
                    .append_link(&mut header, &name, first)
                    .map_err(io_err)?;
                continue;
            }
            first_names.insert(key, name.clone());
        }
        builder
            .append_path_with_name(entry.path(), &name)
            .map_err(io_err)?;
    }
    let mut writer = builder.into_inner().map_err(io_err)?;
    writer.flush().map_err(io_err)?;
    sink.frame(FrameType::TarEnd, &[])
        .map_err(|e| (ErrorKind::Io, e.to_string()))?;
    Ok(())
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
