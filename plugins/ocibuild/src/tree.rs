//! The merged filesystem of an image so far (base layers + layers written in this build),
//! as metadata only. Each new layer is computed as the difference between its sources and
//! this tree, which is how "delta-only" layers and whiteouts are decided without unpacking
//! anything to disk.
//!
//! Paths are relative byte strings without `./` and without a trailing `/`; the root is `.`.
//! A `BTreeMap` keeps them in the bytewise order umoci writes tar entries in.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::fsmeta::{Kind, Meta};

pub const ROOT: &[u8] = b".";

/// Where a regular file's content can be found, to decide whether a new file is the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    None,
    /// A file on the build host (a layer written by this build).
    Disk(PathBuf),
    /// sha256 of the content (a layer read from a base image).
    Hash(Digest),
}

#[derive(Debug, Clone)]
pub struct Node {
    pub meta: Meta,
    pub content: Content,
}

#[derive(Debug, Default, Clone)]
pub struct Tree {
    nodes: BTreeMap<Vec<u8>, Node>,
}

pub fn parent(p: &[u8]) -> Option<&[u8]> {
    if p == ROOT {
        return None;
    }
    Some(match p.iter().rposition(|&c| c == b'/') {
        Some(i) => &p[..i],
        None => ROOT,
    })
}

pub fn base_name(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|&c| c == b'/') {
        Some(i) => &p[i + 1..],
        None => p,
    }
}

pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir == ROOT {
        return name.to_vec();
    }
    let mut v = Vec::with_capacity(dir.len() + 1 + name.len());
    v.extend_from_slice(dir);
    v.push(b'/');
    v.extend_from_slice(name);
    v
}

/// All ancestors of `p`, root first, `p` excluded.
pub fn ancestors(p: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut cur = parent(p);
    while let Some(a) = cur {
        out.push(a);
        cur = parent(a);
    }
    out.reverse();
    out
}

/// Is `q` strictly below `p`?
pub fn is_under(q: &[u8], p: &[u8]) -> bool {
    if p == ROOT {
        return q != ROOT;
    }
    q.len() > p.len() + 1 && q.starts_with(p) && q[p.len()] == b'/'
}

impl Tree {
    pub fn get(&self, p: &[u8]) -> Option<&Node> {
        self.nodes.get(p)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Node)> {
        self.nodes.iter()
    }

    /// Every path strictly below `p`, in sorted order.
    pub fn descendants<'a>(
        &'a self,
        p: &[u8],
    ) -> Box<dyn Iterator<Item = (&'a Vec<u8>, &'a Node)> + 'a> {
        if p == ROOT {
            return Box::new(self.nodes.iter().filter(|(k, _)| k.as_slice() != ROOT));
        }
        let mut lo = p.to_vec();
        lo.push(b'/');
        let mut hi = p.to_vec();
        hi.push(b'/' + 1);
        Box::new(
            self.nodes
                .range::<Vec<u8>, _>((Bound::Excluded(lo), Bound::Excluded(hi))),
        )
    }

    pub fn children<'a>(
        &'a self,
        p: &'a [u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Node)> + 'a {
        self.descendants(p)
            .filter(move |(k, _)| parent(k) == Some(p))
    }

    pub fn remove_children(&mut self, p: &[u8]) {
        let keys: Vec<Vec<u8>> = self.descendants(p).map(|(k, _)| k.clone()).collect();
        for k in keys {
            self.nodes.remove(&k);
        }
    }

    pub fn remove_subtree(&mut self, p: &[u8]) {
        self.remove_children(p);
        self.nodes.remove(p);
    }

    /// Why `p` cannot be placed: a parent that is missing or not a directory. Entries that
    /// would be written "through" a symlink are exactly how layers escape their root.
    pub fn parent_problem(&self, p: &[u8]) -> Option<String> {
        let par = parent(p)?;
        match self.nodes.get(par) {
            None => Some(format!(
                "{}: parent directory {} is missing",
                String::from_utf8_lossy(p),
                String::from_utf8_lossy(par)
            )),
            Some(n) if n.meta.kind != Kind::Dir => Some(format!(
                "{}: parent {} is a {:?}, not a directory",
                String::from_utf8_lossy(p),
                String::from_utf8_lossy(par),
                n.meta.kind
            )),
            Some(_) => None,
        }
    }

    /// Sets `p`. A directory replaced by anything else takes its contents with it (what
    /// docker/containerd/umoci do when they apply such an entry).
    pub fn insert(&mut self, p: Vec<u8>, node: Node) {
        if node.meta.kind != Kind::Dir
            && self.nodes.get(&p).is_some_and(|n| n.meta.kind == Kind::Dir)
        {
            self.remove_children(&p);
        }
        self.nodes.insert(p, node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: Kind) -> Meta {
        Meta {
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            link: Vec::new(),
            devmajor: 0,
            devminor: 0,
            xattrs: BTreeMap::new(),
        }
    }

    #[test]
    fn path_helpers() {
        assert_eq!(parent(b"a/b"), Some(&b"a"[..]));
        assert_eq!(parent(b"a"), Some(ROOT));
        assert_eq!(parent(ROOT), None);
        assert_eq!(ancestors(b"a/b/c"), vec![ROOT, b"a", b"a/b"]);
        assert!(is_under(b"a/b", b"a"));
        assert!(!is_under(b"ab", b"a"));
        assert!(is_under(b"x", ROOT));
    }

    #[test]
    fn replacing_a_dir_drops_its_contents() {
        let mut t = Tree::default();
        for p in [&b"."[..], b"bin", b"bin/sh", b"bin-x", b"bin/ls"] {
            t.insert(
                p.to_vec(),
                Node {
                    meta: meta(Kind::Dir),
                    content: Content::None,
                },
            );
        }
        assert_eq!(t.descendants(b"bin").count(), 2);
        assert_eq!(t.children(ROOT).count(), 2);
        t.insert(
            b"bin".to_vec(),
            Node {
                meta: meta(Kind::Symlink),
                content: Content::None,
            },
        );
        assert!(t.get(b"bin/sh").is_none());
        assert!(t.get(b"bin-x").is_some());
        assert!(t.parent_problem(b"bin/foo").is_some());
    }
}
