//! `-v host:ctr[:ro]` volumes: the host path is copied into the guest before the container
//! runs, and what the container changed is copied back afterwards.
//!
//! The old tool copied with a glob that skipped dotfiles and synced back with
//! `rsync --delete`, which deleted `.git/` and `.env` from the user's directory
//! (docs/old-bugs.md §1). Here a manifest of exactly what was pushed (type, size, mtime,
//! mode, content hash) is kept, and after the run only differences between that manifest
//! and the guest copy are applied: changed and new entries are written (atomically),
//! entries the container deleted are deleted, and everything else on the host is never
//! touched.
//!
//! This copy path serves batch VMs, memres VMs without share slots and volumes that cannot
//! be shared (single files, a failed share). A memres VM with slots binds the live host
//! directory instead (one share per directory, see `vm::shares`): `shared` rewrites those
//! volumes before anything here sees them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::target::Target;
use super::transfer::{self, safe_relative, PushSource};

pub mod live;
pub mod shared;

/// Entries up to this size are compared in memory; larger ones are spooled to a temp file.
const IN_MEMORY_LIMIT: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// Sockets, fifos, devices: never pushed, never touched.
    Other,
}

/// One host entry as it was pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: Kind,
    pub size: u64,
    pub mtime: i64,
    pub mode: u32,
    pub hash: Option<[u8; 32]>,
    pub link: Option<PathBuf>,
}

/// What was pushed for one volume: entries by path relative to the volume root ("" = the
/// root itself, for a single-file volume).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub entries: BTreeMap<PathBuf, Entry>,
}

fn hash_reader(r: &mut dyn Read) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

fn entry_of(path: &Path) -> anyhow::Result<Entry> {
    let meta = fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else {
        Kind::Other
    };
    let hash = match kind {
        Kind::File => {
            let mut f =
                fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
            Some(hash_reader(&mut f).with_context(|| format!("reading {}", path.display()))?)
        }
        _ => None,
    };
    let link = match kind {
        Kind::Symlink => Some(fs::read_link(path)?),
        _ => None,
    };
    Ok(Entry {
        kind,
        size: meta.size(),
        mtime: meta.mtime(),
        mode: meta.mode() & 0o7777,
        hash,
        link,
    })
}

/// Records a host file or directory tree (symlinks are not followed).
pub fn scan(root: &Path) -> anyhow::Result<Manifest> {
    let mut m = Manifest::default();
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.with_context(|| format!("reading {}", root.display()))?;
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap_or(Path::new(""))
            .to_path_buf();
        m.entries.insert(rel, entry_of(e.path())?);
    }
    Ok(m)
}

/// The guest's version of one entry, from the pulled tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestEntry {
    pub kind: Kind,
    pub mode: u32,
    pub hash: Option<[u8; 32]>,
    pub link: Option<PathBuf>,
}

/// What to do on the host for one guest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Identical to what was pushed: leave the host alone.
    Keep,
    /// New or changed content: write it.
    Write,
    /// Only the permission bits changed.
    Chmod,
    /// The type changed (e.g. a file became a dir): remove the host entry, then write.
    Replace,
    /// The type changed but the host entry is a directory: left alone (with a warning)
    /// rather than deleting a tree.
    Conflict,
}

/// Compares the pushed entry (None: the container created it) with the guest's.
pub fn decide(pushed: Option<&Entry>, guest: &GuestEntry) -> Action {
    let Some(p) = pushed else {
        return Action::Write;
    };
    if p.kind != guest.kind {
        return if p.kind == Kind::Dir {
            Action::Conflict
        } else {
            Action::Replace
        };
    }
    match guest.kind {
        Kind::File if p.hash != guest.hash => Action::Write,
        Kind::Symlink if p.link != guest.link => Action::Write,
        Kind::File | Kind::Dir if p.mode != guest.mode => Action::Chmod,
        _ => Action::Keep,
    }
}

/// Entries the container deleted: pushed (not `Other`, not the root) and absent from the
/// guest, deepest first so that a directory comes after its contents.
pub fn deletions(pushed: &Manifest, seen: &HashSet<PathBuf>) -> Vec<PathBuf> {
    let mut gone: Vec<PathBuf> = pushed
        .entries
        .iter()
        .filter(|(p, e)| !p.as_os_str().is_empty() && e.kind != Kind::Other && !seen.contains(*p))
        .map(|(p, _)| p.clone())
        .collect();
    gone.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    gone
}

/// What a sync did, for `-v` output and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub written: usize,
    pub deleted: usize,
    pub skipped: Vec<String>,
}

/// A host volume prepared for one run.
pub struct Volume {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
    pub manifest: Manifest,
}

impl Volume {
    fn is_file(&self) -> bool {
        self.manifest
            .entries
            .get(Path::new(""))
            .is_some_and(|e| e.kind != Kind::Dir)
    }
}

/// Scans and pushes `host` to the guest path `guest` (a dir's contents into the dir, or a
/// file as the file).
pub fn push(
    target: &mut Target,
    host: &Path,
    guest: &str,
    read_only: bool,
) -> anyhow::Result<Volume> {
    let meta = fs::metadata(host).with_context(|| format!("volume source {}", host.display()))?;
    let manifest = scan(host)?;
    if meta.is_dir() {
        transfer::push(target, PushSource::DirContents(host), guest)?;
    } else {
        let (parent, name) = split_guest(guest)?;
        transfer::push(target, PushSource::Named { path: host, name }, parent)?;
    }
    Ok(Volume {
        host: host.to_path_buf(),
        guest: guest.to_string(),
        read_only,
        manifest,
    })
}

fn split_guest(guest: &str) -> anyhow::Result<(&str, &str)> {
    guest
        .rsplit_once('/')
        .filter(|(p, n)| !p.is_empty() && !n.is_empty())
        .with_context(|| format!("bad guest path {guest}"))
}

/// Brings the container's changes back to the host (see the module doc).
pub fn sync_back(target: &mut Target, vol: &Volume) -> anyhow::Result<SyncReport> {
    let host = vol.host.clone();
    if vol.is_file() {
        let pushed = vol.manifest.entries.get(Path::new("")).cloned();
        return transfer::pull(target, &vol.guest, false, move |stream| {
            let mut report = SyncReport::default();
            let mut archive = tar::Archive::new(stream);
            if let Some(entry) = archive.entries().context("reading the tar stream")?.next() {
                let mut entry = entry.context("reading the tar stream")?;
                if entry.header().entry_type().is_file() {
                    let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
                    let spool = Spool::read(&mut entry)?;
                    let guest = GuestEntry {
                        kind: Kind::File,
                        mode,
                        hash: Some(spool.hash),
                        link: None,
                    };
                    apply_file(
                        &host,
                        decide(pushed.as_ref(), &guest),
                        spool,
                        mode,
                        &mut report,
                    )?;
                }
            }
            Ok(report)
        });
    }
    let pushed = vol.manifest.clone();
    transfer::pull(target, &vol.guest, true, move |stream| {
        apply_tree(&host, &pushed, stream)
    })
}

/// Content of one guest file, hashed while read.
struct Spool {
    hash: [u8; 32],
    data: SpoolData,
}

enum SpoolData {
    Memory(Vec<u8>),
    File(fs::File),
}

impl Spool {
    fn read(entry: &mut dyn Read) -> anyhow::Result<Spool> {
        let mut h = Sha256::new();
        let mut mem = Vec::new();
        let mut file: Option<fs::File> = None;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = entry.read(&mut buf).context("reading the tar stream")?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            match &mut file {
                Some(f) => f.write_all(&buf[..n])?,
                None => {
                    mem.extend_from_slice(&buf[..n]);
                    if mem.len() as u64 > IN_MEMORY_LIMIT {
                        let mut f = tempfile::tempfile().context("creating a spool file")?;
                        f.write_all(&mem)?;
                        mem = Vec::new();
                        file = Some(f);
                    }
                }
            }
        }
        let data = match file {
            Some(mut f) => {
                f.rewind()?;
                SpoolData::File(f)
            }
            None => SpoolData::Memory(mem),
        };
        Ok(Spool {
            hash: h.finalize().into(),
            data,
        })
    }

    fn reader(self) -> Box<dyn Read> {
        match self.data {
            SpoolData::Memory(v) => Box::new(io::Cursor::new(v)),
            SpoolData::File(f) => Box::new(f),
        }
    }
}

/// Refuses a host path whose parent (inside `root`) is a symlink: a container could
/// otherwise plant `a -> /etc` and have us write `a/passwd` outside the volume.
fn check_parents(root: &Path, rel: &Path) -> anyhow::Result<()> {
    let mut p = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for c in parts.iter().take(parts.len().saturating_sub(1)) {
        p.push(c);
        if let Ok(m) = fs::symlink_metadata(&p) {
            if m.file_type().is_symlink() {
                anyhow::bail!("{} is a symlink; not writing through it", p.display());
            }
        }
    }
    Ok(())
}

/// Sets the host mode of `guest_mode` ([`transfer::host_mode`]) on `dest`, which must be a
/// regular file or directory: chmod follows symlinks, and a guest tar may name a path twice
/// (first as a link out of the volume, then as a file).
fn chmod_in_volume(dest: &Path, guest_mode: u32) -> anyhow::Result<()> {
    let meta = fs::symlink_metadata(dest).with_context(|| format!("chmod {}", dest.display()))?;
    if !(meta.is_file() || meta.is_dir()) {
        anyhow::bail!(
            "{} is not a regular file or directory; not changing its mode",
            dest.display()
        );
    }
    fs::set_permissions(
        dest,
        fs::Permissions::from_mode(transfer::host_mode(guest_mode)),
    )
    .with_context(|| format!("chmod {}", dest.display()))
}

/// The content of a hard link's target, read back from the host copy written earlier in the
/// same sync. Only a regular file that came in this tar, inside the volume, reached through no
/// symlink, and still holding what the guest sent, is read: a link to a symlink (which the
/// host would resolve, possibly to a file outside the volume) is refused.
fn hard_link_source(
    root: &Path,
    target: &Path,
    file_hashes: &HashMap<PathBuf, [u8; 32]>,
) -> anyhow::Result<Spool> {
    let Some(expected) = file_hashes.get(target) else {
        anyhow::bail!(
            "hard link to {}, which is not a regular file of this volume; not followed",
            target.display()
        );
    };
    check_parents(root, target)?;
    let path = root.join(target);
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| format!("reading {} (hard link target)", path.display()))?;
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        anyhow::bail!("hard link target {} is not a regular file", path.display());
    }
    let spool = Spool::read(&mut f)?;
    if spool.hash != *expected {
        anyhow::bail!("hard link target {} changed; not copied", path.display());
    }
    Ok(spool)
}

fn apply_file(
    dest: &Path,
    action: Action,
    spool: Spool,
    mode: u32,
    report: &mut SyncReport,
) -> anyhow::Result<()> {
    match action {
        Action::Keep => {}
        Action::Chmod => match chmod_in_volume(dest, mode) {
            Ok(()) => report.written += 1,
            Err(e) => report.skipped.push(format!("{e:#}")),
        },
        Action::Write | Action::Replace => {
            transfer::write_file_atomic(dest, &mut spool.reader(), mode)?;
            report.written += 1;
        }
        Action::Conflict => report.skipped.push(format!(
            "{}: became a file in the container",
            dest.display()
        )),
    }
    Ok(())
}

/// Applies a pulled directory tree (entries `./...`) against what was pushed.
pub(super) fn apply_tree(
    root: &Path,
    pushed: &Manifest,
    stream: &mut dyn Read,
) -> anyhow::Result<SyncReport> {
    let mut sync = TreeSync {
        root,
        pushed,
        report: SyncReport::default(),
        file_hashes: HashMap::new(),
    };
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries().context("reading the tar stream")? {
        let mut entry = entry.context("reading the tar stream")?;
        let rel = safe_relative(&entry.path().context("tar entry name")?)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        seen.insert(rel.clone());
        if let Err(e) = check_parents(root, &rel) {
            sync.report.skipped.push(format!("{e:#}"));
            continue;
        }
        sync.entry(&rel, &mut entry)?;
    }
    sync.deletions(&seen);
    Ok(sync.report)
}

/// One sync back of a volume tree: what was pushed, what was written so far.
struct TreeSync<'a> {
    root: &'a Path,
    pushed: &'a Manifest,
    report: SyncReport,
    /// Regular files of this sync by path, so hard links only ever point at those.
    file_hashes: HashMap<PathBuf, [u8; 32]>,
}

impl TreeSync<'_> {
    /// Applies one entry of the pulled tree at `rel` (checked: inside the volume).
    fn entry(
        &mut self,
        rel: &Path,
        entry: &mut tar::Entry<'_, &mut dyn Read>,
    ) -> anyhow::Result<()> {
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind == tar::EntryType::Link) {
            // no longer a file of this sync: hard links must not read what stands there now
            self.file_hashes.remove(rel);
        }
        if kind.is_dir() {
            self.dir(rel, mode)
        } else if kind.is_symlink() {
            let link = entry
                .link_name()
                .context("symlink target")?
                .map(|l| l.into_owned());
            self.symlink(rel, link)
        } else if kind.is_file() || kind == tar::EntryType::Link {
            self.file(rel, entry, mode)
        } else {
            Ok(())
        }
    }

    fn dir(&mut self, rel: &Path, mode: u32) -> anyhow::Result<()> {
        let dest = self.root.join(rel);
        let g = GuestEntry {
            kind: Kind::Dir,
            mode,
            hash: None,
            link: None,
        };
        match decide(self.pushed.entries.get(rel), &g) {
            Action::Keep | Action::Conflict => {}
            Action::Chmod => match chmod_in_volume(&dest, mode) {
                Ok(()) => self.report.written += 1,
                Err(e) => self.report.skipped.push(format!("{e:#}")),
            },
            Action::Write | Action::Replace => {
                if action_needs_removal(&dest) {
                    fs::remove_file(&dest)
                        .with_context(|| format!("removing {}", dest.display()))?;
                }
                fs::create_dir(&dest).with_context(|| format!("creating {}", dest.display()))?;
                chmod_in_volume(&dest, mode)?;
                self.report.written += 1;
            }
        }
        Ok(())
    }

    fn symlink(&mut self, rel: &Path, link: Option<PathBuf>) -> anyhow::Result<()> {
        let dest = self.root.join(rel);
        let g = GuestEntry {
            kind: Kind::Symlink,
            mode: 0o777,
            hash: None,
            link: link.clone(),
        };
        match decide(self.pushed.entries.get(rel), &g) {
            Action::Write | Action::Replace => {
                let Some(link) = link else { return Ok(()) };
                let tmp = dest.with_file_name(format!(".vcontainer-link-{}", std::process::id()));
                let _ = fs::remove_file(&tmp);
                std::os::unix::fs::symlink(&link, &tmp)
                    .with_context(|| format!("creating {}", dest.display()))?;
                fs::rename(&tmp, &dest).with_context(|| format!("creating {}", dest.display()))?;
                self.report.written += 1;
            }
            Action::Conflict => self.report.skipped.push(format!(
                "{}: became a symlink in the container",
                dest.display()
            )),
            Action::Keep | Action::Chmod => {}
        }
        Ok(())
    }

    /// A regular file, or a hard link to a file written (or kept) earlier in this sync.
    fn file(
        &mut self,
        rel: &Path,
        entry: &mut tar::Entry<'_, &mut dyn Read>,
        mode: u32,
    ) -> anyhow::Result<()> {
        let dest = self.root.join(rel);
        let spool = if entry.header().entry_type() == tar::EntryType::Link {
            let target = entry
                .link_name()
                .context("hard link target")?
                .map(|l| safe_relative(&l))
                .transpose()?
                .unwrap_or_default();
            match hard_link_source(self.root, &target, &self.file_hashes) {
                Ok(spool) => spool,
                Err(e) => {
                    self.report
                        .skipped
                        .push(format!("{}: {e:#}", dest.display()));
                    return Ok(());
                }
            }
        } else {
            Spool::read(entry)?
        };
        self.file_hashes.insert(rel.to_path_buf(), spool.hash);
        let g = GuestEntry {
            kind: Kind::File,
            mode,
            hash: Some(spool.hash),
            link: None,
        };
        let action = decide(self.pushed.entries.get(rel), &g);
        if action == Action::Replace && action_needs_removal(&dest) {
            fs::remove_file(&dest).with_context(|| format!("removing {}", dest.display()))?;
        }
        apply_file(&dest, action, spool, mode, &mut self.report)
    }

    /// What the container deleted goes on the host too, unless the host changed it meanwhile
    /// (the user's version wins).
    fn deletions(&mut self, seen: &HashSet<PathBuf>) {
        for rel in deletions(self.pushed, seen) {
            let dest = self.root.join(&rel);
            let Some(was) = self.pushed.entries.get(&rel) else {
                continue;
            };
            if check_parents(self.root, &rel).is_err() {
                continue;
            }
            match entry_of(&dest) {
                Ok(now)
                    if now.kind == was.kind && now.size == was.size && now.mtime == was.mtime => {}
                Ok(_) => {
                    self.report.skipped.push(format!(
                        "{}: changed on the host meanwhile; kept",
                        dest.display()
                    ));
                    continue;
                }
                Err(_) => continue, // already gone
            }
            let r = if was.kind == Kind::Dir {
                fs::remove_dir(&dest)
            } else {
                fs::remove_file(&dest)
            };
            match r {
                Ok(()) => self.report.deleted += 1,
                Err(e) => self.report.skipped.push(format!("{}: {e}", dest.display())),
            }
        }
    }
}

/// True when a non-directory stands at `dest` (and must go before a new type is written).
fn action_needs_removal(dest: &Path) -> bool {
    fs::symlink_metadata(dest).is_ok_and(|m| !m.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(hash: u8, mode: u32) -> Entry {
        Entry {
            kind: Kind::File,
            size: 1,
            mtime: 0,
            mode,
            hash: Some([hash; 32]),
            link: None,
        }
    }

    fn guest_file(hash: u8, mode: u32) -> GuestEntry {
        GuestEntry {
            kind: Kind::File,
            mode,
            hash: Some([hash; 32]),
            link: None,
        }
    }

    #[test]
    fn only_real_changes_are_written() {
        assert_eq!(
            decide(Some(&file(1, 0o644)), &guest_file(1, 0o644)),
            Action::Keep
        );
        assert_eq!(
            decide(Some(&file(1, 0o644)), &guest_file(2, 0o644)),
            Action::Write
        );
        assert_eq!(
            decide(Some(&file(1, 0o644)), &guest_file(1, 0o755)),
            Action::Chmod
        );
        assert_eq!(decide(None, &guest_file(1, 0o644)), Action::Write);
        let dir = Entry {
            kind: Kind::Dir,
            hash: None,
            ..file(0, 0o755)
        };
        assert_eq!(decide(Some(&dir), &guest_file(1, 0o644)), Action::Conflict);
        let link = GuestEntry {
            kind: Kind::Symlink,
            mode: 0o777,
            hash: None,
            link: Some("x".into()),
        };
        assert_eq!(decide(Some(&file(1, 0o644)), &link), Action::Replace);
    }

    #[test]
    fn deletions_skip_unpushed_kinds_and_go_deepest_first() {
        let mut m = Manifest::default();
        m.entries.insert(
            "".into(),
            Entry {
                kind: Kind::Dir,
                hash: None,
                ..file(0, 0o755)
            },
        );
        m.entries.insert(
            "d".into(),
            Entry {
                kind: Kind::Dir,
                hash: None,
                ..file(0, 0o755)
            },
        );
        m.entries.insert("d/f".into(), file(1, 0o644));
        m.entries.insert(
            "sock".into(),
            Entry {
                kind: Kind::Other,
                hash: None,
                ..file(0, 0o755)
            },
        );
        m.entries.insert("keep".into(), file(1, 0o644));
        let seen: HashSet<PathBuf> = ["keep".into()].into_iter().collect();
        assert_eq!(
            deletions(&m, &seen),
            [PathBuf::from("d/f"), PathBuf::from("d")]
        );
    }

    /// Builds the tar a guest would send back for `dir` (entries `./...`).
    fn tar_of(dir: &Path) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        b.append_dir_all(".", dir).expect("tar");
        b.into_inner().expect("tar")
    }

    #[test]
    fn sync_writes_changes_deletes_deletions_and_leaves_the_rest_alone() {
        let host = tempfile::tempdir().expect("tmp");
        let h = host.path();
        fs::create_dir_all(h.join(".git/objects")).expect("mkdir");
        fs::write(h.join(".git/HEAD"), "ref: main\n").expect("w");
        fs::write(h.join(".env"), "SECRET=1\n").expect("w");
        fs::write(h.join("keep.txt"), "same\n").expect("w");
        fs::write(h.join("change.txt"), "old\n").expect("w");
        fs::write(h.join("gone.txt"), "bye\n").expect("w");
        let pushed = scan(h).expect("scan");

        // the guest copy: what the container left
        let guest = tempfile::tempdir().expect("tmp");
        let g = guest.path();
        fs::create_dir_all(g.join(".git/objects")).expect("mkdir");
        fs::write(g.join(".git/HEAD"), "ref: main\n").expect("w");
        fs::write(g.join(".env"), "SECRET=1\n").expect("w");
        fs::write(g.join("keep.txt"), "same\n").expect("w");
        fs::write(g.join("change.txt"), "new\n").expect("w");
        fs::create_dir(g.join("newdir")).expect("mkdir");
        fs::write(g.join("newdir/new.txt"), "hello\n").expect("w");
        for rel in [".git", ".git/objects", ".git/HEAD", ".env", "keep.txt"] {
            let m = fs::symlink_metadata(h.join(rel)).expect("meta");
            fs::set_permissions(g.join(rel), fs::Permissions::from_mode(m.mode() & 0o7777))
                .expect("chmod");
        }
        let before_keep = fs::metadata(h.join("keep.txt")).expect("m");
        let before_git = fs::metadata(h.join(".git/HEAD")).expect("m");

        let tar = tar_of(g);
        let report = apply_tree(h, &pushed, &mut tar.as_slice()).expect("sync");
        assert!(report.skipped.is_empty(), "{report:?}");
        assert_eq!(
            fs::read_to_string(h.join("change.txt")).expect("r"),
            "new\n"
        );
        assert_eq!(
            fs::read_to_string(h.join("newdir/new.txt")).expect("r"),
            "hello\n"
        );
        assert!(!h.join("gone.txt").exists());
        assert_eq!(fs::read_to_string(h.join(".env")).expect("r"), "SECRET=1\n");
        assert_eq!(
            fs::read_to_string(h.join(".git/HEAD")).expect("r"),
            "ref: main\n"
        );
        // untouched: same inode and mtime
        let after_keep = fs::metadata(h.join("keep.txt")).expect("m");
        assert_eq!(after_keep.ino(), before_keep.ino());
        assert_eq!(after_keep.mtime_nsec(), before_keep.mtime_nsec());
        assert_eq!(
            fs::metadata(h.join(".git/HEAD")).expect("m").ino(),
            before_git.ino()
        );
        assert_eq!(report.deleted, 1);
        assert_eq!(report.written, 3, "{report:?}"); // change.txt, newdir, newdir/new.txt
    }

    #[test]
    fn a_planted_symlink_cannot_redirect_writes_outside_the_volume() {
        let host = tempfile::tempdir().expect("tmp");
        let outside = tempfile::tempdir().expect("tmp");
        let pushed = scan(host.path()).expect("scan");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "./esc", outside.path())
            .expect("link");
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "./esc/pwned", &b"bad"[..])
            .expect("file");
        let tar = b.into_inner().expect("tar");
        let report = apply_tree(host.path(), &pushed, &mut tar.as_slice()).expect("sync");
        assert!(!outside.path().join("pwned").exists());
        assert_eq!(report.skipped.len(), 1, "{report:?}");
    }

    /// A guest tar with these entries, in this order.
    enum Planted<'a> {
        File(&'a str, &'a [u8], u32),
        Dir(&'a str, u32),
        Symlink(&'a str, &'a Path),
        HardLink(&'a str, &'a str),
    }

    fn planted_tar(entries: &[Planted<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            match e {
                Planted::File(name, data, mode) => {
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, name, *data).expect("file");
                }
                Planted::Dir(name, mode) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    b.append_data(&mut h, name, io::empty()).expect("dir");
                }
                Planted::Symlink(name, to) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    b.append_link(&mut h, name, to).expect("symlink");
                }
                Planted::HardLink(name, to) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_mode(0o777);
                    b.append_link(&mut h, name, to).expect("hard link");
                }
            }
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn a_hard_link_to_a_planted_symlink_does_not_copy_the_target_in() {
        // the issue's reproducer: ln -s $HOME/.secret /data/a; ln /data/a /data/b
        let host = tempfile::tempdir().expect("tmp");
        let outside = tempfile::tempdir().expect("tmp");
        let secret = outside.path().join(".secret");
        fs::write(&secret, "top secret").expect("w");
        let pushed = scan(host.path()).expect("scan");
        let tar = planted_tar(&[
            Planted::Symlink("./a", &secret),
            Planted::HardLink("./b", "./a"),
        ]);
        let report = apply_tree(host.path(), &pushed, &mut tar.as_slice()).expect("sync");
        let b = host.path().join("b");
        assert!(
            fs::read(&b).map_or(true, |data| data != b"top secret"),
            "the secret was copied into the volume"
        );
        assert!(fs::symlink_metadata(&b).is_err(), "b must not be created");
        assert_eq!(report.skipped.len(), 1, "{report:?}");
        assert!(
            report.skipped[0].contains("not a regular file"),
            "{report:?}"
        );
        // the symlink itself comes back as a symlink (the container made it)
        assert!(fs::symlink_metadata(host.path().join("a"))
            .expect("a")
            .file_type()
            .is_symlink());
    }

    #[test]
    fn hard_links_resolve_only_to_files_of_this_sync_inside_the_volume() {
        let host = tempfile::tempdir().expect("tmp");
        let outside = tempfile::tempdir().expect("tmp");
        fs::write(outside.path().join("f"), "outside").expect("w");
        fs::write(host.path().join("kept"), "on the host before").expect("w");
        let pushed = scan(host.path()).expect("scan");
        let tar = planted_tar(&[
            Planted::File("./real", b"guest data", 0o644),
            Planted::HardLink("./twin", "./real"),
            // a path out of the volume, a host file the tar did not carry, one replaced by a
            // symlink after it was seen as a file
            Planted::HardLink("./up", "../f"),
            Planted::HardLink("./notsent", "./kept"),
            Planted::File("./swapped", b"x", 0o644),
            Planted::Symlink("./swapped", &outside.path().join("f")),
            Planted::HardLink("./viaswap", "./swapped"),
        ]);
        let report = apply_tree(host.path(), &pushed, &mut tar.as_slice());
        // `../f` is refused as a path: the whole sync or that entry, never read
        if let Ok(report) = &report {
            assert!(!report.skipped.is_empty(), "{report:?}");
        }
        let h = host.path();
        assert_eq!(fs::read(h.join("twin")).expect("twin"), b"guest data");
        assert!(fs::symlink_metadata(h.join("up")).is_err());
        assert!(fs::symlink_metadata(h.join("notsent")).is_err());
        assert!(fs::symlink_metadata(h.join("viaswap")).is_err());
        assert_eq!(fs::read(outside.path().join("f")).expect("f"), b"outside");
    }

    #[test]
    fn setuid_and_setgid_are_dropped_and_the_umask_applies() {
        let host = tempfile::tempdir().expect("tmp");
        let pushed = scan(host.path()).expect("scan");
        let tar = planted_tar(&[
            Planted::File("./suid", b"#!/bin/sh\n", 0o4777),
            Planted::Dir("./sgid", 0o2777),
            Planted::File("./sgid/f", b"x", 0o2666),
        ]);
        let report = apply_tree(host.path(), &pushed, &mut tar.as_slice()).expect("sync");
        assert!(report.skipped.is_empty(), "{report:?}");
        let mode = |p: &str| {
            fs::symlink_metadata(host.path().join(p))
                .expect("exists")
                .mode()
                & 0o7777
        };
        let umask = 0o777 & !transfer::host_mode(0o777);
        assert_eq!(mode("suid"), 0o777 & !umask);
        assert_eq!(mode("sgid"), 0o777 & !umask);
        assert_eq!(mode("sgid/f"), 0o666 & !umask);
        assert_eq!(
            transfer::host_mode(0o6755) & 0o7000,
            0,
            "never setuid/setgid"
        );
    }

    #[test]
    fn a_mode_change_is_never_applied_through_a_symlink() {
        let host = tempfile::tempdir().expect("tmp");
        let outside = tempfile::tempdir().expect("tmp");
        let victim = outside.path().join("victim");
        fs::write(&victim, "v").expect("w");
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::write(host.path().join("x"), "same").expect("w");
        fs::set_permissions(host.path().join("x"), fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let pushed = scan(host.path()).expect("scan");
        // x shows up first as a link out, then as the pushed file with another mode (Chmod)
        let tar = planted_tar(&[
            Planted::Symlink("./x", &victim),
            Planted::File("./x", b"same", 0o666),
        ]);
        let report = apply_tree(host.path(), &pushed, &mut tar.as_slice()).expect("sync");
        assert_eq!(
            fs::metadata(&victim).expect("victim").mode() & 0o777,
            0o600,
            "{report:?}"
        );
    }

    #[test]
    fn a_small_tar_gz_with_a_huge_pax_header_fails_fast() {
        // 8 MiB of PAX "records" (zeros) compress to a few KiB
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(8 << 20);
        h.set_path("PaxHeaders/x").expect("name");
        h.set_cksum();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(h.as_bytes()).expect("gz");
        gz.write_all(&vec![0u8; 8 << 20]).expect("gz");
        let small = gz.finish().expect("gz");
        assert!(small.len() < 256 * 1024, "{} bytes", small.len());
        let host = tempfile::tempdir().expect("tmp");
        let pushed = scan(host.path()).expect("scan");
        let mut stream = flate2::read::GzDecoder::new(small.as_slice());
        let err = apply_tree(host.path(), &pushed, &mut stream).expect_err("refused");
        assert!(format!("{err:#}").contains("exceeds the limit"), "{err:#}");
        assert_eq!(fs::read_dir(host.path()).expect("dir").count(), 0);
    }

    #[test]
    fn a_file_changed_on_the_host_meanwhile_is_not_deleted() {
        let host = tempfile::tempdir().expect("tmp");
        fs::write(host.path().join("f"), "1").expect("w");
        let pushed = scan(host.path()).expect("scan");
        fs::write(host.path().join("f"), "user edit").expect("w");
        let empty = tempfile::tempdir().expect("tmp");
        let tar = tar_of(empty.path());
        let report = apply_tree(host.path(), &pushed, &mut tar.as_slice()).expect("sync");
        assert!(host.path().join("f").exists());
        assert_eq!(report.deleted, 0);
    }
}
