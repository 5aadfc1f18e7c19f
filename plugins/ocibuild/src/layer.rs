//! Writing a planned layer as a tar stream, entry for entry as umoci writes it: `.` for the
//! root, `dir/` for directories, the first path of an inode as the file and later ones as
//! hardlinks to it, `dir/.wh.name` whiteouts and `dir/.wh..wh..opq` opaque markers, two
//! zero blocks at the end.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::fsmeta::{Kind, Meta};
use crate::gotar::{self, Header};
use crate::plan::{Op, Plan};
use crate::tree::{self, ROOT};

const COPY_BUF: usize = 256 * 1024;

fn entry_name(path: &[u8], is_dir: bool) -> Vec<u8> {
    let mut n = path.to_vec();
    if is_dir && path != ROOT {
        n.push(b'/');
    }
    n
}

fn whiteout_name(path: &[u8], opaque: bool) -> Vec<u8> {
    if opaque {
        return tree::join(path, b".wh..wh..opq");
    }
    let dir = tree::parent(path).unwrap_or(ROOT);
    let mut name = b".wh.".to_vec();
    name.extend_from_slice(tree::base_name(path));
    tree::join(dir, &name)
}

fn header_for(name: Vec<u8>, meta: &Meta) -> Header {
    let typeflag = match meta.kind {
        Kind::File => gotar::TYPE_REG,
        Kind::Dir => gotar::TYPE_DIR,
        Kind::Symlink => gotar::TYPE_SYMLINK,
        Kind::Char => gotar::TYPE_CHAR,
        Kind::Block => gotar::TYPE_BLOCK,
        Kind::Fifo => gotar::TYPE_FIFO,
    };
    Header {
        name,
        linkname: meta.link.clone(),
        typeflag,
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
        size: meta.size,
        mtime: meta.mtime,
        devmajor: meta.devmajor,
        devminor: meta.devminor,
        xattrs: meta.xattrs.clone(),
    }
}

/// Streams the content of one regular file, exactly `size` bytes: a file that changed size
/// while the layer was written is an error, not a corrupt archive.
fn copy_file<W: Write>(src: &Path, size: u64, out: &mut W, buf: &mut [u8]) -> Result<()> {
    let mut f = File::open(src).map_err(|e| Error::io(src, e))?;
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = f.read(&mut buf[..want]).map_err(|e| Error::io(src, e))?;
        if n == 0 {
            return Err(Error::invalid(format!(
                "{}: file shrank while the layer was written",
                src.display()
            )));
        }
        out.write_all(&buf[..n]).map_err(|e| Error::io(src, e))?;
        left -= n as u64;
    }
    let pad = gotar::padding_len(size);
    out.write_all(&[0u8; gotar::BLOCK][..pad])
        .map_err(|e| Error::io(src, e))?;
    Ok(())
}

/// Writes the tar stream of `plan` to `out`.
pub fn write_layer<W: Write>(plan: &Plan, out: &mut W) -> Result<()> {
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut hdr_buf = Vec::with_capacity(4 * gotar::BLOCK);
    let mut copy_buf = vec![0u8; COPY_BUF];
    let sink_err = |e| Error::io(Path::new("<layer stream>"), e);
    for op in &plan.ops {
        hdr_buf.clear();
        match op {
            Op::Add {
                path,
                src,
                meta,
                inode,
            } => {
                let name = entry_name(path, meta.kind == Kind::Dir);
                let mut h = header_for(name.clone(), meta);
                let mut is_link = false;
                if let (Some(id), true) = (inode, meta.kind != Kind::Dir) {
                    if id.nlink > 1 {
                        match links.get(&(id.dev, id.ino)) {
                            Some(first) => {
                                h.typeflag = gotar::TYPE_LINK;
                                h.linkname = first.clone();
                                h.size = 0;
                                is_link = true;
                            }
                            None => {
                                links.insert((id.dev, id.ino), name);
                            }
                        }
                    }
                }
                gotar::encode_header(&h, &mut hdr_buf);
                out.write_all(&hdr_buf).map_err(sink_err)?;
                if meta.kind == Kind::File && !is_link {
                    copy_file(src, meta.size, out, &mut copy_buf)?;
                }
            }
            Op::Whiteout { path } | Op::Opaque { dir: path } => {
                let h = Header {
                    name: whiteout_name(path, matches!(op, Op::Opaque { .. })),
                    typeflag: gotar::TYPE_REG,
                    ..Header::default()
                };
                gotar::encode_header(&h, &mut hdr_buf);
                out.write_all(&hdr_buf).map_err(sink_err)?;
            }
        }
    }
    out.write_all(&gotar::TRAILER).map_err(sink_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_names() {
        assert_eq!(whiteout_name(b"etc/motd", false), b"etc/.wh.motd".to_vec());
        assert_eq!(whiteout_name(b"opt", false), b".wh.opt".to_vec());
        assert_eq!(
            whiteout_name(b"var/cache", true),
            b"var/cache/.wh..wh..opq".to_vec()
        );
        assert_eq!(entry_name(b".", true), b".".to_vec());
        assert_eq!(entry_name(b"usr", true), b"usr/".to_vec());
    }
}
