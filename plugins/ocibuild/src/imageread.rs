//! Reading an image from an OCI layout that we do not trust: every blob is verified against
//! its digest (and the layer tars against the config's diff_ids), and every layer entry is
//! checked before it is believed: no absolute paths, no `..`, nothing placed below a
//! symlink or another non-directory, hardlinks only to files already in the image.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingReader};
use crate::error::{Error, Result};
use crate::fsmeta::{Kind, Meta};
use crate::layout::check_blob;
use crate::media;
use crate::spec::{Descriptor, ImageConfig, Manifest};
use crate::tree::{self, Content, Node, Tree, ROOT};
use vcontainer_oci::model::{self, IndexEntry};
use vcontainer_oci::read;

/// One image selected from a layout, with its manifest and config verified.
#[derive(Debug, Clone)]
pub struct Image {
    pub layout: PathBuf,
    pub manifest_desc: Descriptor,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

/// Reads a small blob through the shared untrusted-layout reader (size bound, symlink and
/// digest checks) and parses it into the writer's own structs, which a rebuild reuses.
fn read_blob<T: serde::de::DeserializeOwned>(layout: &Path, d: &Digest, size: u64) -> Result<T> {
    let what = format!("blob {d}");
    let (bytes, path) = read::read_blob_bytes(layout, d, Some(size), &what)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Json { path, source: e })
}

/// `<layout>/index.json`, size-bounded, entries as the layout wrote them.
pub fn read_index(layout: &Path) -> Result<model::Index> {
    Ok(read::read_index(layout)?)
}

/// Picks the manifest for `tag` (or the only one), descending into a nested image index
/// by platform (`arch` as GOARCH, e.g. `amd64`).
pub fn open_image(layout: &Path, tag: Option<&str>, arch: Option<&str>) -> Result<Image> {
    let index = read_index(layout)?;
    let mut desc = select_entry(layout, &index.manifests, tag)?.clone();
    let mut depth = 0;
    while media::is_index(&desc.media_type) {
        depth += 1;
        if depth > read::MAX_INDEX_DEPTH {
            return Err(Error::unsafe_image(
                layout,
                "image indexes nested too deeply",
            ));
        }
        let what = format!("image index {}", desc.digest);
        let (nested, _, _) =
            read::read_blob_json::<model::Index>(layout, &desc.digest, desc.size, &what)?;
        let want = match arch {
            Some(a) => crate::settings::map_arch(a)?.0,
            None => crate::settings::map_arch(crate::settings::host_arch())?.0,
        };
        desc = nested
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.architecture().to_string() == want)
            })
            .cloned()
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{}: no image for architecture {want} in the image index",
                    layout.display()
                ))
            })?;
    }
    if !media::is_manifest(&desc.media_type) {
        return Err(Error::unsafe_image(
            layout,
            format!("unsupported manifest media type {:?}", desc.media_type),
        ));
    }
    let digest = Digest::parse(&desc.digest)?;
    let manifest: Manifest = read_blob(layout, &digest, desc.size)?;
    let config: ImageConfig = read_blob(layout, &manifest.config.digest, manifest.config.size)?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::unsafe_image(
            layout,
            format!(
                "manifest has {} layers but the config lists {} diff_ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    Ok(Image {
        layout: layout.to_path_buf(),
        manifest_desc: Descriptor::new(&desc.media_type, digest, desc.size),
        manifest,
        config,
    })
}

fn select_entry<'e>(
    layout: &Path,
    entries: &'e [IndexEntry],
    tag: Option<&str>,
) -> Result<&'e IndexEntry> {
    match tag {
        Some(t) => entries
            .iter()
            .rev()
            .find(|d| d.ref_name() == Some(t))
            .ok_or_else(|| {
                let tags: Vec<&str> = entries.iter().filter_map(IndexEntry::ref_name).collect();
                Error::invalid(format!(
                    "{}: no image tagged {t:?} (tags: {})",
                    layout.display(),
                    if tags.is_empty() {
                        "none".into()
                    } else {
                        tags.join(", ")
                    }
                ))
            }),
        None => match entries {
            [one] => Ok(one),
            [] => Err(Error::invalid(format!(
                "{}: index.json lists no image",
                layout.display()
            ))),
            _ => Err(Error::invalid(format!(
                "{}: index.json lists {} images; say which tag to use",
                layout.display(),
                entries.len()
            ))),
        },
    }
}

/// Receives each checked entry; may read a regular file's content and return its digest.
pub type Visitor<'v> = dyn FnMut(&LayerEvent<'_>, &mut dyn Read) -> Result<Option<Digest>> + 'v;

/// One checked entry of a layer.
pub enum LayerEvent<'a> {
    Add {
        path: &'a [u8],
        meta: &'a Meta,
        /// For hardlinks: the path (already in the image) it links to.
        hardlink: Option<&'a [u8]>,
    },
    Whiteout {
        path: &'a [u8],
    },
    Opaque {
        dir: &'a [u8],
    },
}

/// Normalises an archive path: `./a//b/` -> `a/b`, root -> `.`; absolute paths and `..`
/// are refused.
pub fn clean_entry_path(image: &Path, raw: &[u8]) -> Result<Vec<u8>> {
    if raw.starts_with(b"/") {
        return Err(Error::unsafe_image(
            image,
            format!(
                "layer entry {:?} is an absolute path",
                String::from_utf8_lossy(raw)
            ),
        ));
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in raw.split(|&c| c == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(Error::unsafe_image(
                    image,
                    format!(
                        "layer entry {:?} contains '..'",
                        String::from_utf8_lossy(raw)
                    ),
                ))
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

fn decompressor<'a, R: Read + 'a>(media_type: &str, r: R) -> io::Result<Box<dyn Read + 'a>> {
    use media::LayerCompression;
    Ok(match media::layer_compression(media_type) {
        Some(LayerCompression::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(
            BufReader::with_capacity(1 << 20, r),
        )),
        Some(LayerCompression::Zstd) => Box::new(zstd::stream::read::Decoder::new(r)?),
        Some(LayerCompression::None) => Box::new(BufReader::with_capacity(1 << 20, r)),
        None => {
            return Err(io::Error::other(format!(
                "unsupported layer media type {media_type:?}"
            )));
        }
    })
}

fn entry_meta(image: &Path, e: &mut tar::Entry<'_, impl Read>, kind: Kind) -> Result<Meta> {
    let h = e.header();
    let bad = |what: &str| Error::unsafe_image(image, format!("layer entry with bad {what}"));
    let mode = h.mode().map_err(|_| bad("mode"))? & 0o7777;
    let uid = h.uid().map_err(|_| bad("uid"))?;
    let gid = h.gid().map_err(|_| bad("gid"))?;
    let mtime = h.mtime().map_err(|_| bad("mtime"))? as i64;
    let size = if kind == Kind::File { e.size() } else { 0 };
    let (devmajor, devminor) = if matches!(kind, Kind::Char | Kind::Block) {
        (
            u64::from(h.device_major().ok().flatten().unwrap_or(0)),
            u64::from(h.device_minor().ok().flatten().unwrap_or(0)),
        )
    } else {
        (0, 0)
    };
    let link = if kind == Kind::Symlink {
        e.link_name_bytes()
            .map(|b| b.into_owned())
            .ok_or_else(|| bad("symlink target"))?
    } else {
        Vec::new()
    };
    let mut xattrs = BTreeMap::new();
    if let Ok(Some(exts)) = e.pax_extensions() {
        for ext in exts {
            let ext = ext.map_err(|_| bad("PAX record"))?;
            if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                xattrs.insert(name.to_vec(), ext.value_bytes().to_vec());
            }
        }
    }
    Ok(Meta {
        kind,
        mode,
        uid,
        gid,
        size,
        mtime,
        link,
        devmajor,
        devminor,
        xattrs,
    })
}

/// Reads layer `i` of `img`, checks every entry against `tree` (and updates it), and hands
/// each checked entry to `visit` (which may read a regular file's content from the entry).
/// Both the blob digest and the diff_id are verified; on a mismatch the caller must
/// discard whatever `visit` produced.
pub fn read_layer(img: &Image, i: usize, tree: &mut Tree, visit: &mut Visitor<'_>) -> Result<()> {
    let desc = &img.manifest.layers[i];
    let diff_id = img.config.rootfs.diff_ids[i];
    let path = desc.digest.blob_path(&img.layout);
    let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
    let mut blob = HashingReader::new(file);
    let raw = decompressor(&desc.media_type, &mut blob).map_err(|e| Error::io(&path, e))?;
    let mut plain = HashingReader::new(raw);
    {
        let mut archive = tar::Archive::new(&mut plain);
        let entries = archive.entries().map_err(|e| Error::io(&path, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| Error::io(&path, e))?;
            read_entry(img, &mut entry, tree, visit)?;
        }
    }
    let (got_diff, _) = plain.drain_finish().map_err(|e| Error::io(&path, e))?;
    let (got_blob, n) = blob.drain_finish().map_err(|e| Error::io(&path, e))?;
    check_blob(&path, &desc.digest, Some(desc.size), got_blob, n)?;
    if got_diff != diff_id {
        return Err(Error::DigestMismatch {
            what: "layer diff_id of".into(),
            path,
            expected: diff_id.to_string(),
            actual: got_diff.to_string(),
        });
    }
    Ok(())
}

fn ensure_parents(image: &Path, tree: &mut Tree, p: &[u8]) -> Result<()> {
    for a in tree::ancestors(p) {
        match tree.get(a) {
            Some(n) if n.meta.kind == Kind::Dir => {}
            Some(n) => {
                return Err(Error::unsafe_image(
                    image,
                    format!(
                        "layer entry {:?} lies below {:?}, which is a {:?} (path escape)",
                        String::from_utf8_lossy(p),
                        String::from_utf8_lossy(a),
                        n.meta.kind
                    ),
                ))
            }
            None => {
                // Layers made by some tools omit parent directories; appliers create them.
                tree.insert(
                    a.to_vec(),
                    Node {
                        meta: Meta {
                            kind: Kind::Dir,
                            mode: 0o755,
                            uid: 0,
                            gid: 0,
                            size: 0,
                            mtime: 0,
                            link: Vec::new(),
                            devmajor: 0,
                            devminor: 0,
                            xattrs: BTreeMap::new(),
                        },
                        content: Content::None,
                    },
                );
            }
        }
    }
    Ok(())
}

fn read_entry<R: Read>(
    img: &Image,
    entry: &mut tar::Entry<'_, R>,
    tree: &mut Tree,
    visit: &mut Visitor<'_>,
) -> Result<()> {
    let image = img.layout.as_path();
    let raw = entry.path_bytes().into_owned();
    let path = clean_entry_path(image, &raw)?;
    let base = tree::base_name(&path).to_vec();
    if let Some(hidden) = base.strip_prefix(b".wh.") {
        let dir = tree::parent(&path).unwrap_or(ROOT).to_vec();
        ensure_parents(image, tree, &path)?;
        if hidden == b".wh..opq" {
            visit(&LayerEvent::Opaque { dir: &dir }, &mut io::empty())?;
            tree.remove_children(&dir);
        } else {
            let target = tree::join(&dir, hidden);
            visit(&LayerEvent::Whiteout { path: &target }, &mut io::empty())?;
            tree.remove_subtree(&target);
        }
        return Ok(());
    }
    use tar::EntryType as T;
    let etype = entry.header().entry_type();
    let kind = match etype {
        T::Regular | T::Continuous => Kind::File,
        T::Directory => Kind::Dir,
        T::Symlink => Kind::Symlink,
        T::Char => Kind::Char,
        T::Block => Kind::Block,
        T::Fifo => Kind::Fifo,
        T::Link => Kind::File,
        other => {
            return Err(Error::unsafe_image(
                image,
                format!(
                    "layer entry {:?} has unsupported type {other:?}",
                    String::from_utf8_lossy(&path)
                ),
            ))
        }
    };
    if path == ROOT && kind != Kind::Dir {
        return Err(Error::unsafe_image(
            image,
            "layer replaces the root with a non-directory",
        ));
    }
    ensure_parents(image, tree, &path)?;
    if etype == T::Link {
        let raw_target = entry
            .link_name_bytes()
            .map(|b| b.into_owned())
            .unwrap_or_default();
        if raw_target.starts_with(b"/") {
            return Err(Error::unsafe_image(
                image,
                format!(
                    "hardlink {:?} points to the absolute path {:?}",
                    String::from_utf8_lossy(&path),
                    String::from_utf8_lossy(&raw_target)
                ),
            ));
        }
        let target = clean_entry_path(image, &raw_target)?;
        let node = match tree.get(&target) {
            Some(n) if n.meta.kind != Kind::Dir => n.clone(),
            _ => {
                return Err(Error::unsafe_image(
                    image,
                    format!(
                        "hardlink {:?} points to {:?}, which is not a file in the image",
                        String::from_utf8_lossy(&path),
                        String::from_utf8_lossy(&target)
                    ),
                ))
            }
        };
        visit(
            &LayerEvent::Add {
                path: &path,
                meta: &node.meta,
                hardlink: Some(&target),
            },
            &mut io::empty(),
        )?;
        tree.insert(path, node);
        return Ok(());
    }
    let meta = entry_meta(image, entry, kind)?;
    let digest = visit(
        &LayerEvent::Add {
            path: &path,
            meta: &meta,
            hardlink: None,
        },
        entry,
    )?;
    let content = match digest {
        Some(d) => Content::Hash(d),
        None => Content::None,
    };
    tree.insert(path, Node { meta, content });
    Ok(())
}

/// Builds the merged tree of all layers of `img`, hashing file contents (so later layers
/// can be compared with it), verifying every digest.
pub fn image_tree(img: &Image) -> Result<Tree> {
    let mut tree = Tree::default();
    for i in 0..img.manifest.layers.len() {
        read_layer(img, i, &mut tree, &mut |ev, r| match ev {
            LayerEvent::Add {
                meta,
                hardlink: None,
                ..
            } if meta.kind == Kind::File => {
                use sha2::Digest as _;
                let mut h = sha2::Sha256::new();
                io::copy(r, &mut h).map_err(|e| Error::io(&img.layout, e))?;
                Ok(Some(Digest::Sha256(h.finalize().into())))
            }
            _ => Ok(None),
        })?;
    }
    Ok(tree)
}
