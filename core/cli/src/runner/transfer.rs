//! Files to and from the guest as tar streams, and safe writes on the host.
//!
//! A tar is produced (or consumed) on one thread and streamed through a pipe to the agent
//! connection on another, so large images never sit in memory or in a temp copy. Host files
//! are written as a temp file in the destination dir renamed into place: a failed or killed
//! transfer never leaves half a file under the user's name.

use std::fs::{File, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::thread;

use anyhow::{anyhow, bail, Context};

use super::target::Target;
use crate::agent_client::{self, ClientError};

/// A pipe as two files (read end, write end).
pub fn pipe() -> anyhow::Result<(File, File)> {
    let (r, w) = nix::unistd::pipe().context("creating a pipe")?;
    Ok((File::from(r), File::from(w)))
}

/// What to put in a pushed tar.
pub enum PushSource<'a> {
    /// The entries of a host directory (dotfiles included), relative to it.
    DirContents(&'a Path),
    /// One host file or directory tree under `name`.
    Named { path: &'a Path, name: &'a str },
    /// Nothing: just create the guest dir.
    Empty,
}

/// Streams `source` as a tar into the guest directory `dest` (created if missing).
pub fn push(target: &mut Target, source: PushSource<'_>, dest: &str) -> anyhow::Result<()> {
    let conn = target.connect()?;
    let (mut reader, writer) = pipe()?;
    let result = thread::scope(|scope| {
        let producer = scope.spawn(move || write_tar(source, writer));
        let pushed = agent_client::push_tar(conn, dest, &mut reader);
        drop(reader);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the tar writer thread panicked")));
        (pushed, produced)
    });
    match result {
        (Ok(()), Ok(())) => Ok(()),
        // the agent refused the stream (and the producer then hit the closed pipe)
        (Err(e), Err(p)) if is_broken_pipe(&p) => {
            Err(target.agent_error(e)).context(format!("sending files to {dest}"))
        }
        // the producer's own error (unreadable host file) says more than the agent's view
        (_, Err(p)) => Err(p.context(format!("sending files to the guest ({dest})"))),
        (Err(e), Ok(())) => Err(target.agent_error(e)).context(format!("sending files to {dest}")),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn write_tar(source: PushSource<'_>, writer: File) -> anyhow::Result<()> {
    let mut b = tar::Builder::new(io::BufWriter::with_capacity(256 * 1024, writer));
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    match source {
        PushSource::DirContents(dir) => append_tree(&mut b, dir, Path::new(""))?,
        PushSource::Named { path, name } => append_tree(&mut b, path, Path::new(name))?,
        PushSource::Empty => {}
    }
    let mut w = b.into_inner().context("finishing the tar stream")?;
    w.flush().context("sending the tar stream")?;
    Ok(())
}

/// Appends `root` (file, dir or symlink) as `name`, or its contents when `name` is empty.
/// Sockets, fifos and devices are skipped: they cannot be meaningfully copied.
fn append_tree<W: Write>(b: &mut tar::Builder<W>, root: &Path, name: &Path) -> anyhow::Result<()> {
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.with_context(|| format!("reading {}", root.display()))?;
        let rel = entry.path().strip_prefix(root).unwrap_or(Path::new(""));
        // (joining "" would add a trailing '/', which makes a file look like a dir)
        let archived = if rel.as_os_str().is_empty() {
            name.to_path_buf()
        } else {
            name.join(rel)
        };
        if archived.as_os_str().is_empty() {
            continue; // the root dir itself when sending contents
        }
        let ft = entry.file_type();
        if !(ft.is_file() || ft.is_dir() || ft.is_symlink()) {
            continue;
        }
        b.append_path_with_name(entry.path(), &archived)
            .with_context(|| format!("archiving {}", entry.path().display()))?;
    }
    Ok(())
}

/// Runs `consume` on the tar stream of guest `path` (entries `<basename>/...`, or `./...`
/// with `contents_only`). The stream is read while it arrives.
pub fn pull<T>(
    target: &mut Target,
    path: &str,
    contents_only: bool,
    consume: impl FnOnce(&mut dyn Read) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let conn = target.connect()?;
    let (mut reader, writer) = pipe()?;
    let (pulled, consumed) = thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let mut writer = io::BufWriter::with_capacity(256 * 1024, writer);
            let r = if contents_only {
                agent_client::pull_tar_contents(conn, path, &mut writer)
            } else {
                agent_client::pull_tar(conn, path, &mut writer)
            };
            drop(writer);
            r
        });
        let consumed = consume(&mut reader);
        if consumed.is_ok() {
            // the consumer may stop at the tar's end-of-archive marker: take the rest
            let _ = io::copy(&mut reader, &mut io::sink());
        }
        drop(reader);
        let pulled = producer.join().unwrap_or_else(|_| {
            Err(ClientError::Unexpected(
                "the tar reader thread panicked".into(),
            ))
        });
        (pulled, consumed)
    });
    match (pulled, consumed) {
        (Ok(()), Ok(v)) => Ok(v),
        (Err(e), _) if !matches!(e, ClientError::Local { .. }) => {
            Err(target.agent_error(e)).context(format!("receiving {path} from the guest"))
        }
        (_, Err(e)) => Err(e.context(format!("receiving {path} from the guest"))),
        (Err(e), Ok(_)) => Err(anyhow!(e)).context(format!("receiving {path} from the guest")),
    }
}

/// A tar entry name as a safe relative path: no `..`, no root, `./` prefixes dropped.
pub fn safe_relative(name: &Path) -> anyhow::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => bail!(
                "refusing tar entry {} (leaves its directory)",
                name.display()
            ),
        }
    }
    Ok(out)
}

/// Writes `content` to `dest` atomically (temp file in the same dir, then rename) with
/// permission bits `mode`.
/// The mode a file or directory made by the guest gets on the host: never setuid, setgid or
/// sticky (a container must not hand the user a setuid file), and masked by the user's umask
/// as any file the user's own programs create.
pub fn host_mode(guest_mode: u32) -> u32 {
    guest_mode & 0o777 & !user_umask()
}

/// This process's umask, read without changing it (umask(2) can only set it, which would
/// race with other threads creating files); 022 when /proc does not say.
fn user_umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    })
}

/// Writes `content` to `dest` through a temp file and a rename, with the host mode of
/// `guest_mode` ([`host_mode`]).
pub fn write_file_atomic(
    dest: &Path,
    content: &mut dyn Read,
    guest_mode: u32,
) -> anyhow::Result<()> {
    let mode = host_mode(guest_mode);
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".vcontainer-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    io::copy(content, tmp.as_file_mut()).with_context(|| format!("writing {}", dest.display()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", dest.display()))?;
    tmp.persist(dest)
        .map_err(|e| anyhow!(e.error))
        .with_context(|| format!("renaming into {}", dest.display()))?;
    Ok(())
}

/// Brings a command output (guest file or dir) to the host path the user named.
///
/// `into_existing_dir` (docker cp): an existing host dir receives the output under its own
/// name. A file output replaces only the named file; a dir output is unpacked into a temp
/// dir next to its destination and renamed into place, or merged into an existing dir.
pub fn pull_output(
    target: &mut Target,
    guest_path: &str,
    host: &Path,
    into_existing_dir: bool,
) -> anyhow::Result<PathBuf> {
    let name = Path::new(guest_path)
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("output"));
    let dest = if into_existing_dir && host.is_dir() {
        host.join(&name)
    } else {
        host.to_path_buf()
    };
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    if !parent.is_dir() {
        bail!("{}: the directory does not exist", parent.display());
    }
    let dest2 = dest.clone();
    pull(target, guest_path, false, move |stream| {
        unpack_output(stream, &name, &dest2, &parent)
    })?;
    Ok(dest)
}

/// Writes the pulled `stream` to `dest`: a single file named `name` atomically in place, or
/// a tree staged in a temp dir in `parent` and renamed into place (never over an existing
/// path).
fn unpack_output(
    stream: &mut dyn Read,
    name: &Path,
    dest: &Path,
    parent: &Path,
) -> anyhow::Result<()> {
    let mut archive = tar::Archive::new(stream);
    let mut staged: Option<tempfile::TempDir> = None;
    for entry in archive.entries().context("reading the tar stream")? {
        let mut entry = entry.context("reading the tar stream")?;
        let rel = safe_relative(&entry.path().context("tar entry name")?)?;
        if rel == name && entry.header().entry_type().is_file() && staged.is_none() {
            let mode = entry.header().mode().unwrap_or(0o644);
            if dest.is_dir() {
                bail!("{} is a directory; name a file", dest.display());
            }
            return write_file_atomic(dest, &mut entry, mode);
        }
        // a directory tree (or a symlink): staged next to the destination
        let t = match &staged {
            Some(t) => t,
            None => staged.insert(
                tempfile::Builder::new()
                    .prefix(".vcontainer-")
                    .tempdir_in(parent)
                    .with_context(|| format!("creating a temp dir in {}", parent.display()))?,
            ),
        };
        let mode = entry.header().mode().unwrap_or(0o644);
        entry
            .unpack_in(t.path())
            .with_context(|| format!("writing {}", rel.display()))?;
        // tar drops setuid/setgid but knows no umask
        let unpacked = t.path().join(&rel);
        if std::fs::symlink_metadata(&unpacked).is_ok_and(|m| !m.file_type().is_symlink()) {
            std::fs::set_permissions(&unpacked, Permissions::from_mode(host_mode(mode)))
                .with_context(|| format!("setting the mode of {}", rel.display()))?;
        }
    }
    let Some(t) = staged else {
        bail!("the guest sent nothing for {}", dest.display());
    };
    if dest.symlink_metadata().is_ok() {
        bail!(
            "{} already exists; remove it or name another destination",
            dest.display()
        );
    }
    std::fs::rename(t.path().join(name), dest)
        .with_context(|| format!("renaming into {}", dest.display()))?;
    Ok(())
}

/// Size of a host file for messages ("Saved to x (12M)").
pub fn size_of(path: &Path) -> u64 {
    std::fs::symlink_metadata(path)
        .map(|m| m.size())
        .unwrap_or(0)
}

/// Streams an existing tar archive (e.g. a `--storage` tar) into the guest dir `dest`.
pub fn push_archive(target: &mut Target, archive: &Path, dest: &str) -> anyhow::Result<()> {
    let mut file = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let conn = target.connect()?;
    agent_client::push_tar(
        conn,
        dest,
        &mut io::BufReader::with_capacity(256 * 1024, &mut file),
    )
    .map_err(|e| target.agent_error(e))
    .with_context(|| format!("unpacking {} into the guest's {dest}", archive.display()))
}
