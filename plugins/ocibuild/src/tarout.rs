//! `--tar`: the image layout as one reproducible tar file. Entries are sorted, owned by 0:0,
//! stamped with SOURCE_DATE_EPOCH (or 0), modes 0755/0644. Two styles, as image-oci made:
//! `./`-rooted (OCI archive, what `podman load` and `skopeo oci-archive:` read) or with the
//! layout directory name as the top entry.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::gotar::{self, Header};
use crate::staging::StagedFile;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TarStyle {
    /// Entries `./`, `./index.json`, `./blobs/sha256/...`.
    #[default]
    Archive,
    /// Entries `<dirname>/`, `<dirname>/index.json`, ...
    Dir,
}

/// One tar of the layout to write: image-oci writes both styles at once (`-oci.tar` and
/// `-oci-dir.tar`), so a build takes a list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayoutTar {
    pub path: PathBuf,
    pub style: TarStyle,
}

/// Refuses, before anything is built, a tar path given twice or one that exists (unless
/// `force`).
pub fn check_tars(tars: &[LayoutTar], force: bool) -> Result<()> {
    for (i, t) in tars.iter().enumerate() {
        if tars[..i].iter().any(|o| o.path == t.path) {
            return Err(Error::invalid(format!(
                "{}: the same path for two tar outputs",
                t.path.display()
            )));
        }
        if t.path.symlink_metadata().is_ok() && !force {
            return Err(Error::OutputExists(t.path.clone()));
        }
    }
    Ok(())
}

/// Writes every tar of `tars` of the (staged) `layout` under temp names; the caller commits
/// them once everything else is written. `top` is the directory name of the `Dir` style.
pub fn stage_tars(
    layout: &Path,
    top: &[u8],
    tars: &[LayoutTar],
    mtime: i64,
    force: bool,
) -> Result<Vec<StagedFile>> {
    tars.iter()
        .map(|t| {
            StagedFile::new(&t.path, force, |f| {
                write_layout_tar(layout, top, t.style, mtime, f)
            })
        })
        .collect()
}

/// The name of the top entry of a `Dir`-style tar: the output directory's own name.
pub fn top_name(output: &Path) -> String {
    output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into())
}

fn collect(
    dir: &Path,
    rel: &[u8],
    out: &mut Vec<(Vec<u8>, bool, std::path::PathBuf)>,
) -> Result<()> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        names.push(e.map_err(|e| Error::io(dir, e))?.file_name());
    }
    names.sort();
    for n in names {
        let p = dir.join(&n);
        let mut r = rel.to_vec();
        r.extend_from_slice(n.as_bytes());
        let md = std::fs::symlink_metadata(&p).map_err(|e| Error::io(&p, e))?;
        if md.is_dir() {
            let mut d = r.clone();
            d.push(b'/');
            out.push((d.clone(), true, p.clone()));
            collect(&p, &d, out)?;
        } else if md.is_file() {
            out.push((r, false, p));
        }
    }
    Ok(())
}

/// Writes `layout` as a tar to the open file `out`.
pub fn write_layout_tar(
    layout: &Path,
    top: &[u8],
    style: TarStyle,
    mtime: i64,
    out: &mut File,
) -> Result<()> {
    let root: Vec<u8> = match style {
        TarStyle::Archive => b"./".to_vec(),
        TarStyle::Dir => {
            let mut t = top.to_vec();
            t.push(b'/');
            t
        }
    };
    let mut entries = vec![(root.clone(), true, layout.to_path_buf())];
    collect(layout, &root, &mut entries)?;
    let mut w = BufWriter::new(out);
    let mut hdr = Vec::new();
    let werr = |e| Error::io(layout, e);
    for (name, is_dir, path) in entries {
        let size = if is_dir {
            0
        } else {
            std::fs::metadata(&path)
                .map_err(|e| Error::io(&path, e))?
                .len()
        };
        hdr.clear();
        gotar::encode_header(
            &Header {
                name,
                typeflag: if is_dir {
                    gotar::TYPE_DIR
                } else {
                    gotar::TYPE_REG
                },
                mode: if is_dir { 0o755 } else { 0o644 },
                size,
                mtime,
                ..Header::default()
            },
            &mut hdr,
        );
        w.write_all(&hdr).map_err(werr)?;
        if !is_dir {
            let mut f = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let n = std::io::copy(&mut f, &mut w).map_err(|e| Error::io(&path, e))?;
            if n != size {
                return Err(Error::invalid(format!(
                    "{}: changed while archiving",
                    path.display()
                )));
            }
            w.write_all(&[0u8; gotar::BLOCK][..gotar::padding_len(size)])
                .map_err(werr)?;
        }
    }
    w.write_all(&gotar::TRAILER).map_err(werr)?;
    w.flush().map_err(werr)?;
    Ok(())
}
