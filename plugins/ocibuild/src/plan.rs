//! Deciding what one layer contains: the sources of the layer compared with the merged
//! tree of the layers below it.
//!
//! * `Mirror` sources (`directories`, `files`, a whole rootfs) make a path of the image equal
//!   to the same path of a source rootfs: new and changed entries are added, entries that
//!   disappeared get whiteouts, and a directory whose whole previous content is gone becomes
//!   an opaque directory. Unchanged entries are left out (delta-only).
//! * `Overlay` sources (`host`, pre-installed `packages` trees) copy a tree onto a path,
//!   overwriting, never deleting.
//!
//! Symlinked parents (merged-usr: `/bin -> usr/bin`) are resolved inside the source rootfs,
//! and the symlinks passed through are part of the layer, so `files:/bin/sh` yields the
//! `bin` symlink and `usr/bin/sh`, never an entry "inside" a symlink.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fsmeta::{read_meta, InodeId, Kind, Meta};
use crate::tree::{self, Content, Node, Tree, ROOT};

const MAX_SYMLINK_HOPS: usize = 40;

#[derive(Debug, Clone)]
pub enum Source {
    /// Make image path `path` equal to `root/path`. With `follow`, a symlink at `path`
    /// (merged-usr `/bin`) brings the directory it points to along.
    Mirror {
        root: PathBuf,
        path: Vec<u8>,
        follow: bool,
    },
    /// Copy the host file or tree `src` to image path `dst`.
    Overlay { src: PathBuf, dst: Vec<u8> },
}

/// How entries are stamped while collected.
#[derive(Debug, Clone, Copy, Default)]
pub struct StampRules {
    /// Clamp mtimes newer than this (SOURCE_DATE_EPOCH).
    pub source_date_epoch: Option<i64>,
    /// Store every entry as 0:0 (umoci's rootless behaviour) instead of keeping owners.
    pub root_owned: bool,
}

#[derive(Debug, Clone)]
pub enum Op {
    Add {
        path: Vec<u8>,
        src: PathBuf,
        meta: Meta,
        inode: Option<InodeId>,
    },
    /// `path` existed below and is gone.
    Whiteout { path: Vec<u8> },
    /// Everything that was in directory `dir` below is gone.
    Opaque { dir: Vec<u8> },
}

impl Op {
    fn sort_key(&self) -> (&[u8], u8) {
        match self {
            Op::Add { path, .. } => (path, 0),
            Op::Whiteout { path } => (path, 0),
            Op::Opaque { dir } => (dir, 1),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Plan {
    pub ops: Vec<Op>,
}

struct Cand {
    src: PathBuf,
    meta: Meta,
    inode: Option<InodeId>,
}

/// Splits a user path (`/usr/bin`, `etc/`) into components, refusing `..`.
pub fn image_path(s: &str) -> Result<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in s.as_bytes().split(|&c| c == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(Error::invalid(format!(
                    "path {s:?} contains '..' (paths are relative to the image root)"
                )))
            }
            _ => parts.push(c),
        }
    }
    Ok(if parts.is_empty() {
        ROOT.to_vec()
    } else {
        parts.join(&b'/')
    })
}

fn os_path(root: &Path, rel: &[u8]) -> PathBuf {
    if rel == ROOT {
        root.to_path_buf()
    } else {
        root.join(std::ffi::OsStr::from_bytes(rel))
    }
}

fn components(p: &[u8]) -> VecDeque<Vec<u8>> {
    if p == ROOT {
        return VecDeque::new();
    }
    p.split(|&c| c == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn join_parts(parts: &[Vec<u8>]) -> Vec<u8> {
    if parts.is_empty() {
        ROOT.to_vec()
    } else {
        parts.join(&b'/')
    }
}

struct Collector<'a> {
    cands: BTreeMap<Vec<u8>, Cand>,
    mirrored: Vec<Vec<u8>>,
    rules: StampRules,
    tree: &'a Tree,
}

impl Collector<'_> {
    fn stamp(&self, mut meta: Meta) -> Meta {
        if let Some(sde) = self.rules.source_date_epoch {
            if meta.mtime > sde {
                meta.mtime = sde;
            }
        }
        if self.rules.root_owned {
            meta.uid = 0;
            meta.gid = 0;
        }
        meta
    }

    fn add(&mut self, rel: Vec<u8>, src: &Path) -> Result<Option<Kind>> {
        // A file named .wh.* would be read as a whiteout by every consumer (umoci refuses
        // such files too).
        if tree::base_name(&rel).starts_with(b".wh.") {
            return Err(Error::invalid(format!(
                "{}: file names starting with .wh. cannot be stored in an image layer",
                src.display()
            )));
        }
        let Some((meta, id)) = read_meta(src)? else {
            return Ok(None);
        };
        let kind = meta.kind;
        let meta = self.stamp(meta);
        self.cands.insert(
            rel,
            Cand {
                src: src.to_path_buf(),
                meta,
                inode: Some(id),
            },
        );
        Ok(Some(kind))
    }

    /// Adds `src` at `rel` and, for a directory, everything below it.
    fn add_tree(&mut self, rel: Vec<u8>, src: &Path) -> Result<()> {
        if self.add(rel.clone(), src)? != Some(Kind::Dir) {
            return Ok(());
        }
        let mut names = Vec::new();
        for ent in std::fs::read_dir(src).map_err(|e| Error::io(src, e))? {
            let ent = ent.map_err(|e| Error::io(src, e))?;
            names.push(ent.file_name());
        }
        names.sort();
        for name in names {
            let child = tree::join(&rel, name.as_bytes());
            self.add_tree(child, &src.join(&name))?;
        }
        Ok(())
    }

    /// Resolves `path` inside `root`, following symlinked parents within the root, and
    /// records every symlink passed through. Returns the resolved path, or `None` if it does
    /// not exist in the source.
    fn resolve_in_root(&mut self, root: &Path, path: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut queue = components(path);
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        while let Some(c) = queue.pop_front() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            let mut next = cur.clone();
            next.push(c);
            let rel = join_parts(&next);
            let abs = os_path(root, &rel);
            let md = match std::fs::symlink_metadata(&abs) {
                Ok(md) => md,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io(&abs, e)),
            };
            if md.file_type().is_symlink() && !queue.is_empty() {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(Error::invalid(format!(
                        "{}: too many levels of symbolic links",
                        abs.display()
                    )));
                }
                for a in tree::ancestors(&rel) {
                    if !self.cands.contains_key(a) {
                        self.add(a.to_vec(), &os_path(root, a))?;
                    }
                }
                self.add(rel, &abs)?;
                let target = std::fs::read_link(&abs).map_err(|e| Error::io(&abs, e))?;
                let tbytes = target.as_os_str().as_bytes();
                if tbytes.starts_with(b"/") {
                    cur.clear();
                }
                for (i, t) in tbytes
                    .split(|&b| b == b'/')
                    .filter(|t| !t.is_empty())
                    .enumerate()
                {
                    queue.insert(i, t.to_vec());
                }
                continue;
            }
            cur = next;
        }
        Ok(Some(join_parts(&cur)))
    }

    /// Resolves `path` against the image tree (for overlay destinations), following
    /// symlinks that the tree already has.
    fn resolve_in_tree(&self, path: &[u8]) -> Result<Vec<u8>> {
        let mut queue = components(path);
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        while let Some(c) = queue.pop_front() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            let mut next = cur.clone();
            next.push(c);
            let rel = join_parts(&next);
            if let Some(n) = self.tree.get(&rel) {
                if n.meta.kind == Kind::Symlink && !queue.is_empty() {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(Error::invalid(format!(
                            "{}: too many levels of symbolic links in the image",
                            String::from_utf8_lossy(path)
                        )));
                    }
                    if n.meta.link.starts_with(b"/") {
                        cur.clear();
                    }
                    for (i, t) in n
                        .meta
                        .link
                        .split(|&b| b == b'/')
                        .filter(|t| !t.is_empty())
                        .enumerate()
                    {
                        queue.insert(i, t.to_vec());
                    }
                    continue;
                }
            }
            cur = next;
        }
        Ok(join_parts(&cur))
    }

    fn mirror(
        &mut self,
        root: &Path,
        path: &[u8],
        follow: bool,
        warn: &mut dyn FnMut(String),
    ) -> Result<()> {
        let lookup = if follow {
            let mut p = path.to_vec();
            p.extend_from_slice(b"/.");
            p
        } else {
            path.to_vec()
        };
        let Some(resolved) = self.resolve_in_root(root, &lookup)? else {
            warn(format!(
                "{} not found in {}, skipped",
                String::from_utf8_lossy(path),
                root.display()
            ));
            return Ok(());
        };
        for a in tree::ancestors(&resolved) {
            let abs = os_path(root, a);
            self.add(a.to_vec(), &abs)?;
        }
        self.add_tree(resolved.clone(), &os_path(root, &resolved))?;
        self.mirrored.push(resolved);
        Ok(())
    }

    fn overlay(&mut self, src: &Path, dst: &[u8]) -> Result<()> {
        if std::fs::symlink_metadata(src).is_err() {
            return Err(Error::invalid(format!(
                "host layer source {} does not exist",
                src.display()
            )));
        }
        let dst = self.resolve_in_tree(dst)?;
        for a in tree::ancestors(&dst) {
            if self.cands.contains_key(a) {
                continue;
            }
            match self.tree.get(a) {
                Some(n) if n.meta.kind == Kind::Dir => {}
                _ => {
                    // A directory `cp`/`mkdir -p` would create: fixed, reproducible stamp.
                    let meta = Meta {
                        kind: Kind::Dir,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                        size: 0,
                        mtime: self.rules.source_date_epoch.unwrap_or(0),
                        link: Vec::new(),
                        devmajor: 0,
                        devminor: 0,
                        xattrs: BTreeMap::new(),
                    };
                    self.cands.insert(
                        a.to_vec(),
                        Cand {
                            src: PathBuf::new(),
                            meta,
                            inode: None,
                        },
                    );
                }
            }
        }
        let onto_root = dst == ROOT;
        self.add_tree(dst, src)?;
        // Laying a directory over an existing image root changes its contents, not the
        // root's own mode/owner (a build system's temp dir is often 0700).
        if onto_root && self.tree.get(ROOT).is_some() {
            self.cands.remove(ROOT);
        }
        Ok(())
    }
}

/// Is the candidate identical to what the tree already has at that path?
fn unchanged(cand: &Cand, node: &Node) -> Result<bool> {
    if cand.meta != node.meta {
        return Ok(false);
    }
    if cand.meta.kind != Kind::File {
        return Ok(true);
    }
    match &node.content {
        Content::Disk(p) if *p == cand.src => Ok(true),
        Content::Disk(p) => Ok(file_digest(p)? == file_digest(&cand.src)?),
        Content::Hash(h) => Ok(*h == file_digest(&cand.src)?),
        Content::None => Ok(false),
    }
}

pub fn file_digest(p: &Path) -> Result<Digest> {
    use sha2::Digest as _;
    let mut f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(p, e))?;
    Ok(Digest::Sha256(h.finalize().into()))
}

/// Computes the layer for `sources` on top of `tree`.
pub fn plan_layer(
    tree: &Tree,
    sources: &[Source],
    rules: StampRules,
    warn: &mut dyn FnMut(String),
) -> Result<Plan> {
    let mut col = Collector {
        cands: BTreeMap::new(),
        mirrored: Vec::new(),
        rules,
        tree,
    };
    for s in sources {
        match s {
            Source::Mirror { root, path, follow } => col.mirror(root, path, *follow, warn)?,
            Source::Overlay { src, dst } => col.overlay(src, dst)?,
        }
    }
    let Collector {
        cands, mirrored, ..
    } = col;

    // Removed entries below mirrored paths, collapsed to the topmost removed path.
    let mut removed: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut implicit: BTreeSet<Vec<u8>> = BTreeSet::new();
    for m in &mirrored {
        let src_is_dir = cands.get(m).is_some_and(|c| c.meta.kind == Kind::Dir);
        let tree_is_dir = tree.get(m).is_some_and(|n| n.meta.kind == Kind::Dir);
        if !(src_is_dir && tree_is_dir) {
            continue;
        }
        for (q, node) in tree.descendants(m) {
            if tree::ancestors(q)
                .iter()
                .any(|a| removed.contains(*a) || implicit.contains(*a))
            {
                continue;
            }
            match cands.get(q) {
                Some(c) => {
                    if node.meta.kind == Kind::Dir && c.meta.kind != Kind::Dir {
                        implicit.insert(q.clone());
                    }
                }
                None => {
                    removed.insert(q.clone());
                }
            }
        }
    }

    // Directories whose whole previous content is gone become opaque.
    let mut opaque: BTreeSet<Vec<u8>> = BTreeSet::new();
    let parents: BTreeSet<Vec<u8>> = removed
        .iter()
        .filter_map(|q| tree::parent(q).map(<[u8]>::to_vec))
        .collect();
    for p in parents {
        if cands.get(&p).is_none_or(|c| c.meta.kind != Kind::Dir) {
            continue;
        }
        if tree.children(&p).all(|(k, _)| removed.contains(k)) {
            opaque.insert(p);
        }
    }

    let mut ops = Vec::new();
    for (path, cand) in cands {
        let same = match tree.get(&path) {
            Some(node) => unchanged(&cand, node)?,
            None => false,
        };
        if !same {
            ops.push(Op::Add {
                path,
                src: cand.src,
                meta: cand.meta,
                inode: cand.inode,
            });
        }
    }
    for q in removed {
        let covered = tree::parent(&q).is_some_and(|p| opaque.contains(p));
        if !covered {
            ops.push(Op::Whiteout { path: q });
        }
    }
    for dir in opaque {
        ops.push(Op::Opaque { dir });
    }
    ops.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    Ok(Plan { ops })
}

/// Applies a written (or cached) layer to the tree, checking that no entry lands inside a
/// non-directory.
pub fn apply_plan(tree: &mut Tree, plan: &Plan) -> Result<()> {
    for op in &plan.ops {
        match op {
            Op::Add {
                path, src, meta, ..
            } => {
                if let Some(problem) = tree.parent_problem(path) {
                    return Err(Error::invalid(format!("layer entry {problem}")));
                }
                let content = if meta.kind == Kind::File {
                    Content::Disk(src.clone())
                } else {
                    Content::None
                };
                tree.insert(
                    path.clone(),
                    Node {
                        meta: meta.clone(),
                        content,
                    },
                );
            }
            Op::Whiteout { path } => tree.remove_subtree(path),
            Op::Opaque { dir } => tree.remove_children(dir),
        }
    }
    Ok(())
}
