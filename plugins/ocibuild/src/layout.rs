//! An OCI image layout directory being written: blobs land through a temp file + rename, so
//! a blob file name always matches its content, and nothing is ever half-written under a
//! digest name.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::error::{Error, Result};
use crate::gojson;
use crate::media;
use crate::spec::{self, Descriptor};

pub struct LayoutWriter {
    root: PathBuf,
}

impl LayoutWriter {
    /// Creates `blobs/sha256` and the `oci-layout` marker in `root` (which must exist).
    pub fn init(root: &Path) -> Result<Self> {
        let blobs = root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
        let marker = root.join(media::OCI_LAYOUT_FILE);
        fs::write(&marker, media::OCI_LAYOUT_CONTENT).map_err(|e| Error::io(&marker, e))?;
        Ok(LayoutWriter {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        d.blob_path(&self.root)
    }

    /// A temp file inside `blobs/sha256` (same filesystem, so the final rename is atomic).
    pub fn temp_blob(&self) -> Result<tempfile::NamedTempFile> {
        let dir = self.root.join("blobs").join("sha256");
        tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, e))
    }

    /// Moves a finished temp blob to its digest name (0644, like any other file).
    pub fn commit_blob(&self, tmp: tempfile::NamedTempFile, d: &Digest) -> Result<PathBuf> {
        let dst = self.blob_path(d);
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(tmp.path(), e))?;
        tmp.persist(&dst).map_err(|e| Error::io(&dst, e.error))?;
        Ok(dst)
    }

    pub fn write_bytes(&self, bytes: &[u8]) -> Result<(Digest, u64)> {
        let d = Digest::of(bytes);
        let mut tmp = self.temp_blob()?;
        tmp.write_all(bytes).map_err(|e| Error::io(tmp.path(), e))?;
        self.commit_blob(tmp, &d)?;
        Ok((d, bytes.len() as u64))
    }

    pub fn write_json<T: Serialize>(&self, media_type: &str, value: &T) -> Result<Descriptor> {
        let bytes = gojson::to_vec(value).map_err(|e| Error::Json {
            path: self.root.clone(),
            source: e,
        })?;
        let (d, size) = self.write_bytes(&bytes)?;
        Ok(Descriptor::new(media_type, d, size))
    }

    /// Copies a blob from another layout, verifying its digest while copying: a corrupt
    /// source never produces a blob file here.
    pub fn copy_blob_from(&self, src_layout: &Path, d: &Digest, size: Option<u64>) -> Result<()> {
        if self.blob_path(d).exists() {
            return Ok(());
        }
        let src = vcontainer_oci::read::blob_path(src_layout, d, "blob")?;
        let f = File::open(&src).map_err(|e| Error::io(&src, e))?;
        let mut reader = HashingReader::new(f);
        let mut tmp = self.temp_blob()?;
        let mut w = HashingWriter::new(io::BufWriter::new(tmp.as_file_mut()));
        io::copy(&mut reader, &mut w).map_err(|e| Error::io(&src, e))?;
        let (buf, _, _) = w.finish();
        drop(buf);
        let (actual, n) = reader.drain_finish().map_err(|e| Error::io(&src, e))?;
        check_blob(&src, d, size, actual, n)?;
        self.commit_blob(tmp, d)?;
        Ok(())
    }

    /// Writes `index.json` (temp + rename).
    pub fn write_index(&self, index: &spec::Index) -> Result<()> {
        let bytes = gojson::to_vec(index).map_err(|e| Error::Json {
            path: self.root.clone(),
            source: e,
        })?;
        let path = self.root.join("index.json");
        let mut tmp = tempfile::Builder::new()
            .prefix(".index.json.")
            .tempfile_in(&self.root)
            .map_err(|e| Error::io(&self.root, e))?;
        tmp.write_all(&bytes)
            .map_err(|e| Error::io(tmp.path(), e))?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(tmp.path(), e))?;
        tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        Ok(())
    }
}

/// Compares a blob's computed sha256 and length with its descriptor. Blobs are hashed with
/// sha256 while they are copied or read, so a descriptor with another (valid) algorithm is
/// refused as such rather than reported as a mismatch.
pub fn check_blob(
    path: &Path,
    want: &Digest,
    size: Option<u64>,
    got: Digest,
    n: u64,
) -> Result<()> {
    if want.algorithm() != got.algorithm() {
        return Err(Error::invalid(format!(
            "{}: {want} uses {}; only sha256 blobs can be read here",
            path.display(),
            want.algorithm()
        )));
    }
    if got != *want {
        return Err(Error::DigestMismatch {
            what: "blob".into(),
            path: path.to_path_buf(),
            expected: want.to_string(),
            actual: got.to_string(),
        });
    }
    if let Some(size) = size {
        if size != n {
            return Err(Error::invalid(format!(
                "{}: size {n} does not match the descriptor size {size}",
                path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copying_refuses_corrupt_and_non_sha256_blobs() {
        let src = tempfile::tempdir().expect("tmp");
        let dst = tempfile::tempdir().expect("tmp");
        let w = LayoutWriter::init(dst.path()).expect("init");
        // a blob whose content does not match its name
        let d = Digest::of(b"good");
        let dir = src.path().join("blobs/sha256");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(d.hex()), b"evil").expect("write");
        let e = w
            .copy_blob_from(src.path(), &d, Some(4))
            .expect_err("corrupt");
        assert!(e.to_string().contains("digest mismatch"), "{e}");
        assert!(
            !w.blob_path(&d).exists(),
            "nothing written under the digest name"
        );
        // a valid sha512 digest is read from blobs/sha512 and refused as such
        let d512 = Digest::parse(&format!("sha512:{}", "ab".repeat(64))).expect("sha512");
        let dir = src.path().join("blobs/sha512");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(d512.hex()), b"x").expect("write");
        let e = w
            .copy_blob_from(src.path(), &d512, None)
            .expect_err("sha512");
        assert!(e.to_string().contains("only sha256 blobs"), "{e}");
        // a blob that is a symlink out of the layout
        let outside = tempfile::tempdir().expect("tmp");
        let target = outside.path().join("x");
        fs::write(&target, b"x").expect("write");
        let dx = Digest::of(b"x");
        std::os::unix::fs::symlink(&target, src.path().join("blobs/sha256").join(dx.hex()))
            .expect("symlink");
        let e = w
            .copy_blob_from(src.path(), &dx, Some(1))
            .expect_err("escape");
        assert!(e.to_string().contains("outside the layout"), "{e}");
    }
}
