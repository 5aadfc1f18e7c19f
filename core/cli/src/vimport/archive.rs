//! Tar files given to vimport: which compression, and which kind of archive (an OCI layout
//! packed as a tar, a `docker save` archive, or a root filesystem), decided by the entries
//! inside, not by the file name.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use super::error::VimportError;
use super::layout::MAX_JSON_BYTES;
use vcontainer_oci::digest::sha256_digest;
use vcontainer_oci::model::{DockerArchiveEntry, ImageConfig};

/// Compression of a tar file, from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Bzip2,
    Xz,
}

impl Compression {
    /// Whether the host can look inside (the others are passed to the runtime as they are).
    pub fn inspectable(self) -> bool {
        matches!(
            self,
            Compression::None | Compression::Gzip | Compression::Zstd
        )
    }
}

pub fn sniff(path: &Path) -> Result<Compression, VimportError> {
    let mut f = File::open(path).map_err(|e| VimportError::io(path.display(), e))?;
    let mut magic = [0u8; 6];
    let mut n = 0;
    while n < magic.len() {
        match f.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(VimportError::io(path.display(), e)),
        }
    }
    let m = &magic[..n];
    Ok(if m.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else if m.starts_with(b"BZh") {
        Compression::Bzip2
    } else if m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else {
        Compression::None
    })
}

/// The decompressed byte stream of a tar file.
fn open(path: &Path, compression: Compression) -> Result<Box<dyn Read>, VimportError> {
    let f = File::open(path).map_err(|e| VimportError::io(path.display(), e))?;
    let f = io::BufReader::new(f);
    Ok(match compression {
        Compression::None => Box::new(f),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        Compression::Zstd => Box::new(
            zstd::Decoder::with_buffer(f).map_err(|e| VimportError::io(path.display(), e))?,
        ),
        Compression::Bzip2 | Compression::Xz => {
            return Err(VimportError::invalid(
                path.display(),
                "bzip2/xz archives cannot be inspected on the host",
            ))
        }
    })
}

/// A tar entry name as a clean relative path, or why it is unsafe. `./` prefixes are
/// dropped; `..`, absolute paths and empty names are refused.
pub fn clean_entry(raw: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains '..'".into()),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path".into()),
        }
    }
    Ok(out)
}

/// What a tar file holds.
#[derive(Debug)]
pub enum TarKind {
    /// An OCI layout (top-level `oci-layout`, or `index.json` with `blobs/`).
    OciArchive,
    /// A `docker save` archive: its manifest.json and the parsed configs (by path).
    DockerArchive {
        entries: Vec<DockerArchiveEntry>,
        configs: BTreeMap<String, (ImageConfig, String)>,
    },
    /// Anything else: a root filesystem for `import`.
    Rootfs,
}

fn read_bounded(entry: &mut dyn Read, size: u64, what: &str) -> Result<Vec<u8>, VimportError> {
    if size > MAX_JSON_BYTES {
        return Err(VimportError::invalid(
            what,
            format!("{size} bytes is too large (max {MAX_JSON_BYTES})"),
        ));
    }
    let mut data = Vec::with_capacity(size as usize);
    entry
        .take(MAX_JSON_BYTES)
        .read_to_end(&mut data)
        .map_err(|e| VimportError::io(what, e))?;
    Ok(data)
}

fn tar_error(path: &Path, e: io::Error) -> VimportError {
    VimportError::invalid(
        path.display(),
        format!("not a readable tar archive (plain, gzip or zstd): {e}"),
    )
}

/// Classifies the tar at `path` by its top-level entries.
pub fn classify(path: &Path, compression: Compression) -> Result<TarKind, VimportError> {
    let mut archive = tar::Archive::new(open(path, compression)?);
    let mut manifest: Option<Vec<u8>> = None;
    let (mut marker, mut index, mut blobs) = (false, false, false);
    let mut count = 0usize;
    for entry in archive.entries().map_err(|e| tar_error(path, e))? {
        let mut entry = entry.map_err(|e| tar_error(path, e))?;
        count += 1;
        let raw = entry.path().map_err(|e| tar_error(path, e))?.into_owned();
        let Ok(name) = clean_entry(&raw) else {
            continue;
        };
        match name.to_str() {
            Some("oci-layout") => marker = true,
            Some("index.json") => index = true,
            Some(n) if n.starts_with("blobs/") => blobs = true,
            Some("manifest.json") => {
                let size = entry.size();
                manifest = Some(read_bounded(&mut entry, size, "manifest.json")?);
            }
            _ => {}
        }
    }
    if count == 0 {
        return Err(VimportError::invalid(
            path.display(),
            "the archive is empty",
        ));
    }
    if let Some(bytes) = manifest {
        // docker save (25+) also writes an OCI layout; manifest.json keeps the tags, so it
        // wins when it parses as a docker archive manifest.
        if let Ok(entries) = serde_json::from_slice::<Vec<DockerArchiveEntry>>(&bytes) {
            if !entries.is_empty() {
                let configs = read_configs(path, compression, &entries)?;
                return Ok(TarKind::DockerArchive { entries, configs });
            }
        }
    }
    // a rootfs may well hold an index.json of its own; a layout has blobs/ or the marker
    let oci = marker || (index && blobs);
    Ok(if oci {
        TarKind::OciArchive
    } else {
        TarKind::Rootfs
    })
}

/// Second pass over a docker archive: the image configs its manifest.json names.
fn read_configs(
    path: &Path,
    compression: Compression,
    entries: &[DockerArchiveEntry],
) -> Result<BTreeMap<String, (ImageConfig, String)>, VimportError> {
    let wanted: Vec<PathBuf> = entries
        .iter()
        .map(|e| clean_entry(Path::new(&e.config)))
        .collect::<Result<_, _>>()
        .map_err(|reason| VimportError::Unsafe {
            what: path.display().to_string(),
            entry: "manifest.json Config".into(),
            reason,
        })?;
    let mut found = BTreeMap::new();
    let mut archive = tar::Archive::new(open(path, compression)?);
    for entry in archive.entries().map_err(|e| tar_error(path, e))? {
        let mut entry = entry.map_err(|e| tar_error(path, e))?;
        let raw = entry.path().map_err(|e| tar_error(path, e))?.into_owned();
        let Ok(name) = clean_entry(&raw) else {
            continue;
        };
        if let Some(i) = wanted.iter().position(|w| *w == name) {
            let size = entry.size();
            let what = format!("{} in {}", name.display(), path.display());
            let bytes = read_bounded(&mut entry, size, &what)?;
            let config: ImageConfig = serde_json::from_slice(&bytes)
                .map_err(|source| VimportError::BadJson { what, source })?;
            found.insert(entries[i].config.clone(), (config, sha256_digest(&bytes)));
        }
    }
    for e in entries {
        if !found.contains_key(&e.config) {
            return Err(VimportError::invalid(
                path.display(),
                format!(
                    "manifest.json names config '{}' which is not in the archive",
                    e.config
                ),
            ));
        }
    }
    Ok(found)
}

/// Unpacks an OCI archive into `dest`, accepting only plain files and directories with
/// clean relative names (an image layout needs nothing else).
pub fn extract_oci_archive(
    path: &Path,
    compression: Compression,
    dest: &Path,
) -> Result<(), VimportError> {
    let what = path.display().to_string();
    let mut archive = tar::Archive::new(open(path, compression)?);
    for entry in archive.entries().map_err(|e| tar_error(path, e))? {
        let mut entry = entry.map_err(|e| tar_error(path, e))?;
        let raw = entry.path().map_err(|e| tar_error(path, e))?.into_owned();
        let entry_name = raw.display().to_string();
        let rel = clean_entry(&raw).map_err(|reason| VimportError::Unsafe {
            what: what.clone(),
            entry: entry_name.clone(),
            reason,
        })?;
        if rel.as_os_str().is_empty() {
            continue; // "./"
        }
        let target = dest.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => std::fs::create_dir_all(&target)
                .map_err(|e| VimportError::io(target.display(), e))?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| VimportError::io(parent.display(), e))?;
                }
                let mut out =
                    File::create(&target).map_err(|e| VimportError::io(target.display(), e))?;
                io::copy(&mut entry, &mut out)
                    .map_err(|e| VimportError::io(target.display(), e))?;
            }
            other => {
                return Err(VimportError::Unsafe {
                    what,
                    entry: entry_name,
                    reason: format!("{other:?} entries do not belong in an OCI archive"),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_cleaned_or_refused() {
        assert_eq!(
            clean_entry(Path::new("./blobs/sha256/x")).expect("ok"),
            PathBuf::from("blobs/sha256/x")
        );
        assert!(clean_entry(Path::new("../x")).is_err());
        assert!(clean_entry(Path::new("a/../../x")).is_err());
        assert!(clean_entry(Path::new("/etc/passwd")).is_err());
    }
}
