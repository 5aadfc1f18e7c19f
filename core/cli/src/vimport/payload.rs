//! What the runner sends into the guest for one import: a tar stream built on the fly from
//! in-memory documents (a reduced index.json) and host files (blobs, archives), so that a
//! reduced layout never has to be copied on the host first.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

/// One entry of the stream; names are relative to the guest directory the stream is
/// unpacked into.
#[derive(Debug, Clone)]
pub enum PayloadEntry {
    Dir {
        name: String,
    },
    Bytes {
        name: String,
        data: Vec<u8>,
        mode: u32,
    },
    /// A host file whose length was checked when planning; a file that changed size since
    /// makes the stream fail rather than send something else.
    File {
        name: String,
        path: PathBuf,
        size: u64,
    },
}

impl PayloadEntry {
    pub fn dir(name: impl Into<String>) -> Self {
        PayloadEntry::Dir { name: name.into() }
    }

    pub fn bytes(name: impl Into<String>, data: Vec<u8>) -> Self {
        PayloadEntry::Bytes {
            name: name.into(),
            data,
            mode: 0o644,
        }
    }

    /// In-memory contents only root may read in the guest (credentials).
    pub fn private_bytes(name: impl Into<String>, data: Vec<u8>) -> Self {
        PayloadEntry::Bytes {
            name: name.into(),
            data,
            mode: 0o600,
        }
    }

    pub fn file(name: impl Into<String>, path: PathBuf, size: u64) -> Self {
        PayloadEntry::File {
            name: name.into(),
            path,
            size,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            PayloadEntry::Dir { name }
            | PayloadEntry::Bytes { name, .. }
            | PayloadEntry::File { name, .. } => name,
        }
    }
}

/// The entries of one import's tar stream, in order.
#[derive(Debug, Clone, Default)]
pub struct Payload {
    entries: Vec<PayloadEntry>,
}

impl Payload {
    pub fn new(entries: Vec<PayloadEntry>) -> Self {
        Payload { entries }
    }

    pub fn entries(&self) -> &[PayloadEntry] {
        &self.entries
    }

    /// Bytes of file content the stream carries (for progress and logs).
    pub fn content_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e {
                PayloadEntry::Dir { .. } => 0,
                PayloadEntry::Bytes { data, .. } => data.len() as u64,
                PayloadEntry::File { size, .. } => *size,
            })
            .sum()
    }

    /// The tar stream, for `agent_client::push_tar(conn, guest_dir, &mut payload.reader())`.
    pub fn reader(&self) -> PayloadReader<'_> {
        PayloadReader {
            entries: &self.entries,
            next: 0,
            pending: VecDeque::new(),
            file: None,
            finished: false,
        }
    }
}

/// Reads the tar stream of a [`Payload`] lazily, entry by entry.
pub struct PayloadReader<'a> {
    entries: &'a [PayloadEntry],
    next: usize,
    pending: VecDeque<u8>,
    /// The host file being streamed, its name, the bytes still due and its padding.
    file: Option<(File, String, u64, usize)>,
    finished: bool,
}

fn header(name: &str, size: u64, kind: tar::EntryType, mode: u32) -> io::Result<[u8; 512]> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(size);
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    Ok(*h.as_bytes())
}

fn padding(size: u64) -> usize {
    ((512 - (size % 512)) % 512) as usize
}

impl PayloadReader<'_> {
    /// Queues the next entry's header (and in-memory data); false at the end.
    fn advance(&mut self) -> io::Result<bool> {
        let Some(entry) = self.entries.get(self.next) else {
            return Ok(false);
        };
        self.next += 1;
        match entry {
            PayloadEntry::Dir { name } => {
                let h = header(&format!("{name}/"), 0, tar::EntryType::Directory, 0o755)?;
                self.pending.extend(h);
            }
            PayloadEntry::Bytes { name, data, mode } => {
                let h = header(name, data.len() as u64, tar::EntryType::Regular, *mode)?;
                self.pending.extend(h);
                self.pending.extend(data.iter().copied());
                self.pending
                    .extend(std::iter::repeat_n(0u8, padding(data.len() as u64)));
            }
            PayloadEntry::File { name, path, size } => {
                let f = File::open(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))
                })?;
                let actual = f.metadata()?.len();
                if actual != *size {
                    return Err(io::Error::other(format!(
                        "{} changed while importing ({actual} bytes, expected {size})",
                        path.display()
                    )));
                }
                let h = header(name, *size, tar::EntryType::Regular, 0o644)?;
                self.pending.extend(h);
                self.file = Some((f, path.display().to_string(), *size, padding(*size)));
            }
        }
        Ok(true)
    }
}

impl Read for PayloadReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.pending.is_empty() {
                let n = buf.len().min(self.pending.len());
                for (slot, byte) in buf.iter_mut().zip(self.pending.drain(..n)) {
                    *slot = byte;
                }
                return Ok(n);
            }
            if let Some((file, path, remaining, pad)) = self.file.as_mut() {
                if *remaining > 0 {
                    let want = buf
                        .len()
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    let n = file.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("{path} shrank while importing"),
                        ));
                    }
                    *remaining -= n as u64;
                    return Ok(n);
                }
                let pad = *pad;
                self.file = None;
                self.pending.extend(std::iter::repeat_n(0u8, pad));
                continue;
            }
            if self.finished {
                return Ok(0);
            }
            if !self.advance()? {
                // end of archive: two zero blocks
                self.pending.extend(std::iter::repeat_n(0u8, 1024));
                self.finished = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_a_tar_with_every_entry_and_content() {
        let dir = tempfile::tempdir().expect("tmp");
        let blob = dir.path().join("blob");
        std::fs::write(&blob, vec![7u8; 1000]).expect("write");
        let payload = Payload::new(vec![
            PayloadEntry::dir("blobs"),
            PayloadEntry::bytes("index.json", b"{}".to_vec()),
            PayloadEntry::file("blobs/x", blob.clone(), 1000),
        ]);
        let mut bytes = Vec::new();
        payload.reader().read_to_end(&mut bytes).expect("read");
        assert_eq!(bytes.len() % 512, 0);
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in archive.entries().expect("entries") {
            let mut e = e.expect("entry");
            let name = e.path().expect("path").display().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("data");
            seen.push((name, data.len()));
        }
        assert_eq!(
            seen,
            [
                ("blobs/".to_string(), 0),
                ("index.json".to_string(), 2),
                ("blobs/x".to_string(), 1000)
            ]
        );
        assert_eq!(payload.content_bytes(), 1002);
    }

    #[test]
    fn a_file_that_changed_size_fails_the_stream() {
        let dir = tempfile::tempdir().expect("tmp");
        let blob = dir.path().join("blob");
        std::fs::write(&blob, b"abc").expect("write");
        let payload = Payload::new(vec![PayloadEntry::file("b", blob, 4)]);
        let err = std::io::copy(&mut payload.reader(), &mut std::io::sink()).expect_err("size");
        assert!(err.to_string().contains("changed while importing"), "{err}");
    }
}
