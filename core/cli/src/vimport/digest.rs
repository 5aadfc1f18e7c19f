//! Content digests of blobs: parsing (which also rules out path escapes, since the blob path
//! is built from the digest) and verification of file contents.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256, Sha512};

use super::error::VimportError;

/// A validated `<algorithm>:<hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobDigest {
    algorithm: Algorithm,
    hex: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl BlobDigest {
    /// Accepts only `sha256:` (64 lowercase hex) and `sha512:` (128), the algorithms the OCI
    /// spec registers; anything else could name a path outside `blobs/`.
    pub fn parse(text: &str) -> Result<Self, VimportError> {
        let bad = || VimportError::BadDigest(text.to_string());
        let (alg, hex) = text.split_once(':').ok_or_else(bad)?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(bad()),
        };
        let well_formed = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !well_formed {
            return Err(bad());
        }
        Ok(BlobDigest {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// `blobs/<alg>/<hex>`, relative to the layout root.
    pub fn blob_path(&self) -> PathBuf {
        Path::new("blobs")
            .join(self.algorithm.name())
            .join(&self.hex)
    }

    /// `blobs/<alg>/<hex>` as a tar entry name.
    pub fn blob_entry_name(&self) -> String {
        format!("blobs/{}/{}", self.algorithm.name(), self.hex)
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `data` with this digest's algorithm.
    fn compute(&self, reader: &mut dyn Read) -> std::io::Result<(String, u64)> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        match self.algorithm {
            Algorithm::Sha256 => {
                let mut h = Sha256::new();
                loop {
                    let n = reader.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                    h.update(&buf[..n]);
                }
                Ok((hex::encode(h.finalize()), total))
            }
            Algorithm::Sha512 => {
                let mut h = Sha512::new();
                loop {
                    let n = reader.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                    h.update(&buf[..n]);
                }
                Ok((hex::encode(h.finalize()), total))
            }
        }
    }

    /// Checks that `data` has this digest (and `size`, when given).
    pub fn verify_bytes(
        &self,
        data: &[u8],
        size: Option<u64>,
        what: &str,
    ) -> Result<(), VimportError> {
        let (hex, len) = self
            .compute(&mut &data[..])
            .map_err(|e| VimportError::io(what, e))?;
        self.check(&hex, len, size, what)
    }

    /// Checks that the file at `path` has this digest and `size`; returns its length.
    pub fn verify_file(&self, path: &Path, size: u64, what: &str) -> Result<u64, VimportError> {
        let mut f = std::fs::File::open(path).map_err(|e| VimportError::io(path.display(), e))?;
        let (hex, len) = self
            .compute(&mut f)
            .map_err(|e| VimportError::io(path.display(), e))?;
        self.check(&hex, len, Some(size), what)?;
        Ok(len)
    }

    fn check(
        &self,
        hex: &str,
        len: u64,
        size: Option<u64>,
        what: &str,
    ) -> Result<(), VimportError> {
        if let Some(size) = size {
            if size != len {
                return Err(VimportError::BlobMismatch {
                    what: what.to_string(),
                    detail: format!("size is {len} bytes, the descriptor says {size}"),
                });
            }
        }
        if hex != self.hex {
            return Err(VimportError::BlobMismatch {
                what: what.to_string(),
                detail: format!(
                    "content digest is {}:{hex}, expected {self}",
                    self.algorithm.name()
                ),
            });
        }
        Ok(())
    }
}

impl std::fmt::Display for BlobDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

/// `sha256:<hex>` of `data` (for tests and for reduced layouts).
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_that_could_escape_blobs_are_refused() {
        for bad in [
            "sha256:../../etc/passwd",
            "sha256:",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85/",
            "nocolon",
        ] {
            assert!(BlobDigest::parse(bad).is_err(), "{bad} accepted");
        }
        let d = BlobDigest::parse(&sha256_digest(b"")).expect("valid");
        assert_eq!(
            d.blob_entry_name(),
            "blobs/sha256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn verification_checks_content_and_size() {
        let d = BlobDigest::parse(&sha256_digest(b"hello")).expect("valid");
        d.verify_bytes(b"hello", Some(5), "x").expect("matches");
        let e = d.verify_bytes(b"hello", Some(6), "x").expect_err("size");
        assert!(e.to_string().contains("size is 5 bytes"), "{e}");
        let e = d.verify_bytes(b"hellO", None, "x").expect_err("content");
        assert!(e.to_string().contains("content digest"), "{e}");
    }
}
