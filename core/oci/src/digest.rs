//! Content digests of blobs: the one digest type of vcontainer (`sha256:` or `sha512:`),
//! its parsing (which also rules out path escapes, since a blob path is built from the
//! digest), verification of contents, and readers/writers that hash what passes through
//! them so a blob is hashed in the same pass that writes or reads it.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256, Sha512};

use crate::error::OciError;

/// A validated `<algorithm>:<hex>` digest. Only the two algorithms the OCI image spec
/// registers are accepted: anything else could name a path outside `blobs/`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Digest {
    Sha256([u8; 32]),
    Sha512([u8; 64]),
}

impl Digest {
    /// The sha256 digest of `bytes` (what every blob we write is named by).
    pub fn of(bytes: &[u8]) -> Self {
        Digest::Sha256(Sha256::digest(bytes).into())
    }

    /// Parses `sha256:<64 lowercase hex>` or `sha512:<128 lowercase hex>`.
    pub fn parse(text: &str) -> Result<Self, OciError> {
        let bad = || OciError::BadDigest(text.to_string());
        let (alg, hexpart) = text.split_once(':').ok_or_else(bad)?;
        let lower_hex = hexpart
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !lower_hex {
            return Err(bad());
        }
        match alg {
            "sha256" => {
                let mut out = [0u8; 32];
                hex::decode_to_slice(hexpart, &mut out).map_err(|_| bad())?;
                Ok(Digest::Sha256(out))
            }
            "sha512" => {
                let mut out = [0u8; 64];
                hex::decode_to_slice(hexpart, &mut out).map_err(|_| bad())?;
                Ok(Digest::Sha512(out))
            }
            _ => Err(bad()),
        }
    }

    pub fn algorithm(&self) -> &'static str {
        match self {
            Digest::Sha256(_) => "sha256",
            Digest::Sha512(_) => "sha512",
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Digest::Sha256(b) => b,
            Digest::Sha512(b) => b,
        }
    }

    pub fn hex(&self) -> String {
        hex::encode(self.as_bytes())
    }

    /// `blobs/<alg>/<hex>`, relative to the layout root.
    pub fn blob_rel_path(&self) -> PathBuf {
        Path::new("blobs").join(self.algorithm()).join(self.hex())
    }

    /// `<layout>/blobs/<alg>/<hex>`.
    pub fn blob_path(&self, layout: &Path) -> PathBuf {
        layout.join(self.blob_rel_path())
    }

    /// `blobs/<alg>/<hex>` as a tar entry name.
    pub fn blob_entry_name(&self) -> String {
        format!("blobs/{}/{}", self.algorithm(), self.hex())
    }

    /// The digest of everything `reader` yields, with this digest's algorithm, and its length.
    pub fn compute_like(&self, reader: &mut dyn Read) -> io::Result<(Digest, u64)> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        macro_rules! hash_all {
            ($hasher:expr, $variant:path) => {{
                let mut h = $hasher;
                loop {
                    let n = reader.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                    h.update(&buf[..n]);
                }
                Ok(($variant(h.finalize().into()), total))
            }};
        }
        match self {
            Digest::Sha256(_) => hash_all!(Sha256::new(), Digest::Sha256),
            Digest::Sha512(_) => hash_all!(Sha512::new(), Digest::Sha512),
        }
    }

    /// Checks that `data` has this digest (and `size`, when given); `what` names it.
    pub fn verify_bytes(&self, data: &[u8], size: Option<u64>, what: &str) -> Result<(), OciError> {
        let (got, len) = self
            .compute_like(&mut &data[..])
            .map_err(|e| OciError::io(what, e))?;
        self.check(got, len, size, what)
    }

    /// Checks that the file at `path` has this digest and `size`; returns its length.
    pub fn verify_file(&self, path: &Path, size: u64, what: &str) -> Result<u64, OciError> {
        let mut f = std::fs::File::open(path).map_err(|e| OciError::io(path.display(), e))?;
        let (got, len) = self
            .compute_like(&mut f)
            .map_err(|e| OciError::io(path.display(), e))?;
        self.check(got, len, Some(size), what)?;
        Ok(len)
    }

    /// Compares a computed digest and length with this digest and the descriptor's size.
    pub fn check(
        &self,
        got: Digest,
        len: u64,
        size: Option<u64>,
        what: &str,
    ) -> Result<(), OciError> {
        if let Some(size) = size {
            if size != len {
                return Err(OciError::BlobMismatch {
                    what: what.to_string(),
                    detail: format!(
                        "size is {len} bytes, the descriptor says {size} (size mismatch)"
                    ),
                });
            }
        }
        if got != *self {
            return Err(OciError::BlobMismatch {
                what: what.to_string(),
                detail: format!("content digest is {got}, expected {self} (digest mismatch)"),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm(), self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Digest {
    type Err = OciError;

    fn from_str(s: &str) -> Result<Self, OciError> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `sha256:<hex>` of `data`, as text.
pub fn sha256_digest(data: &[u8]) -> String {
    Digest::of(data).to_string()
}

/// A writer that sha256-hashes and counts everything written to the inner writer.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn finish(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest::Sha256(self.hasher.finalize().into()),
            self.count,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that sha256-hashes and counts everything read from the inner reader.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads the rest of the stream (e.g. tar padding after the end marker) and returns the
    /// digest and byte count of everything.
    pub fn drain_finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::Sha256(self.hasher.finalize().into()), self.count))
    }

    pub fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_that_could_escape_blobs_are_refused() {
        for bad in [
            "sha256:../../etc/passwd",
            "sha256:",
            "sha512:00",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85/",
            "nocolon",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad} accepted");
        }
        let d = Digest::of(b"");
        assert_eq!(Digest::parse(&d.to_string()).expect("round trip"), d);
        assert_eq!(
            d.blob_entry_name(),
            "blobs/sha256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let long = format!("sha512:{}", "ab".repeat(64));
        let d512 = Digest::parse(&long).expect("sha512");
        assert_eq!(d512.to_string(), long);
        assert_eq!(
            d512.blob_rel_path(),
            Path::new("blobs/sha512").join("ab".repeat(64))
        );
    }

    #[test]
    fn verification_checks_content_and_size() {
        let d = Digest::of(b"hello");
        d.verify_bytes(b"hello", Some(5), "x").expect("matches");
        let e = d.verify_bytes(b"hello", Some(6), "x").expect_err("size");
        assert!(e.to_string().contains("size is 5 bytes"), "{e}");
        let e = d.verify_bytes(b"hellO", None, "x").expect_err("content");
        assert!(e.to_string().contains("content digest"), "{e}");
        let sha512 = Digest::Sha512([0; 64]);
        let e = sha512
            .verify_bytes(b"", None, "y")
            .expect_err("sha512 content");
        assert!(
            e.to_string().contains("content digest is sha512:cf83"),
            "{e}"
        );
    }

    #[test]
    fn hashing_reader_and_writer_agree_with_of() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").expect("write");
        let (out, d, n) = w.finish();
        assert_eq!((out.as_slice(), d, n), (&b"abc"[..], Digest::of(b"abc"), 3));
        let r = HashingReader::new(&b"abc"[..]);
        assert_eq!(r.drain_finish().expect("read"), (Digest::of(b"abc"), 3));
    }
}
