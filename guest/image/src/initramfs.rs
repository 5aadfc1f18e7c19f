//! Writes the initramfs: a gzip'd newc cpio holding the agent as /init, the boot modules and
//! /etc/vcontainer/modules. Built in-process (no root, no staging tree) and deterministic
//! (fixed mtimes, owners and inode numbers, sorted entries) so equal inputs give equal bytes.

use crate::error::{io_err, Error, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Where the agent finds the list of modules to load (docs/guest-contract.md "Guest boot
/// contract").
pub const MODULE_LIST_PATH: &str = "etc/vcontainer/modules";

/// Directories the agent expects in the initramfs: the API filesystems, and the mount points
/// for the squashfs lower layer, the tmpfs upper layer and the overlay it switches into.
pub const INITRAMFS_DIRS: &[&str] = &[
    "dev", "proc", "sys", "run", "tmp", "mnt", "newroot", "lower", "upper", "etc",
];

/// One file of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File { mode: u32, data: Vec<u8> },
    CharDev { mode: u32, major: u32, minor: u32 },
}

/// What goes into the initramfs.
#[derive(Debug, Default)]
pub struct InitramfsContents {
    nodes: BTreeMap<String, Node>,
}

impl InitramfsContents {
    /// The skeleton every initramfs has: directories and /dev/console (the kernel opens it for
    /// PID 1's stdio before any devtmpfs exists; without it the agent would have no console).
    pub fn new() -> Self {
        let mut contents = InitramfsContents::default();
        for dir in INITRAMFS_DIRS {
            contents.add_dir(dir);
        }
        contents.nodes.insert(
            "dev/console".to_string(),
            Node::CharDev {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        );
        contents
    }

    /// Adds a directory and its parents.
    pub fn add_dir(&mut self, path: &str) {
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            self.nodes.entry(prefix.clone()).or_insert(Node::Dir);
        }
    }

    /// Adds a regular file (path relative to the archive root) and its parent directories.
    pub fn add_file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.add_dir(parent);
        }
        self.nodes
            .insert(path.to_string(), Node::File { mode, data });
    }

    /// The agent, as the kernel's rdinit (/init).
    pub fn add_init(&mut self, agent: &[u8]) {
        self.add_file("init", 0o755, agent.to_vec());
    }

    /// Adds the modules (paths relative to /lib/modules/<kver>/, already decompressed, in
    /// load order) and the list file naming them in that order.
    pub fn add_modules(&mut self, kernel_version: &str, modules: Vec<(String, Vec<u8>)>) {
        let mut list = String::new();
        for (rel, data) in modules {
            list.push_str(&rel);
            list.push('\n');
            self.add_file(&format!("lib/modules/{kernel_version}/{rel}"), 0o644, data);
        }
        self.add_dir(&format!("lib/modules/{kernel_version}"));
        self.add_file(MODULE_LIST_PATH, 0o644, list.into_bytes());
    }

    /// Writes `newc` cpio, gzip-compressed, to `out`.
    pub fn write_gz(&self, out: &Path) -> Result<()> {
        let file = File::create(out).map_err(io_err("creating", out))?;
        let gz = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::best());
        let gz = self.write_cpio(gz)?;
        let mut buffered = gz.finish().map_err(io_err("compressing", out))?;
        buffered.flush().map_err(io_err("writing", out))?;
        buffered
            .into_inner()
            .map_err(|e| io_err("writing", out)(e.into_error()))?
            .sync_all()
            .map_err(io_err("syncing", out))
    }

    /// Writes the uncompressed archive (directories come before their contents because the
    /// map is sorted and a parent path sorts before its children).
    pub fn write_cpio<W: Write>(&self, mut w: W) -> Result<W> {
        let io = |e| Error::Io {
            action: "writing cpio entry",
            path: "initramfs".into(),
            source: e,
        };
        for (ino, (path, node)) in (1u32..).zip(&self.nodes) {
            let builder = cpio::newc::Builder::new(path)
                .ino(ino)
                .uid(0)
                .gid(0)
                .mtime(0);
            let (builder, data): (_, &[u8]) = match node {
                Node::Dir => (builder.mode(0o040755).nlink(2), &[]),
                Node::File { mode, data } => (builder.mode(0o100000 | mode), data),
                Node::CharDev { mode, major, minor } => (
                    builder
                        .mode(0o020000 | mode)
                        .rdev_major(*major)
                        .rdev_minor(*minor),
                    &[],
                ),
            };
            let size =
                u32::try_from(data.len()).map_err(|_| Error::TooLarge { what: path.clone() })?;
            let mut writer = builder.write(w, size);
            writer.write_all(data).map_err(io)?;
            w = writer.finish().map_err(io)?;
        }
        cpio::newc::trailer(w).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sample() -> InitramfsContents {
        let mut c = InitramfsContents::new();
        c.add_init(b"#!/bin/sh\necho hi\n");
        c.add_modules(
            "6.1.0-test",
            vec![
                ("kernel/drivers/virtio/virtio.ko".into(), b"one".to_vec()),
                ("kernel/fs/squashfs/squashfs.ko".into(), b"two".to_vec()),
            ],
        );
        c
    }

    #[test]
    fn cpio_tool_lists_and_extracts_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("initramfs.cpio.gz");
        sample().write_gz(&gz).unwrap();

        // decompress with a separate implementation, list with GNU cpio
        let raw = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
        assert!(raw.status.success());
        let cpio_file = dir.path().join("initramfs.cpio");
        std::fs::write(&cpio_file, &raw.stdout).unwrap();
        let list = Command::new("cpio")
            .args(["-t", "-v", "--quiet", "-F"])
            .arg(&cpio_file)
            .output()
            .expect("cpio (GNU) must be installed: apt-get install cpio");
        assert!(
            list.status.success(),
            "{}",
            String::from_utf8_lossy(&list.stderr)
        );
        let listing = String::from_utf8_lossy(&list.stdout);
        for want in [
            " init",
            " dev/console",
            " newroot",
            " etc/vcontainer/modules",
            " lib/modules/6.1.0-test/kernel/drivers/virtio/virtio.ko",
        ] {
            assert!(
                listing.lines().any(|l| l.ends_with(want)),
                "{want} not in:\n{listing}"
            );
        }
        let init_line = listing.lines().find(|l| l.ends_with(" init")).unwrap();
        assert!(init_line.starts_with("-rwxr-xr-x"), "{init_line}");
        let console = listing
            .lines()
            .find(|l| l.ends_with(" dev/console"))
            .unwrap();
        assert!(
            console.starts_with("crw-------") && console.contains("5,"),
            "{console}"
        );

        // extract and compare contents and the module list order
        let extract = dir.path().join("x");
        std::fs::create_dir(&extract).unwrap();
        let st = Command::new("cpio")
            .args(["-i", "-d", "--quiet", "--no-absolute-filenames", "-F"])
            .arg(&cpio_file)
            .arg("--nonmatching")
            .arg("dev/console")
            .current_dir(&extract)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(
            std::fs::read(extract.join("init")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(
            std::fs::read_to_string(extract.join(MODULE_LIST_PATH)).unwrap(),
            "kernel/drivers/virtio/virtio.ko\nkernel/fs/squashfs/squashfs.ko\n"
        );
        assert_eq!(
            std::fs::read(extract.join("lib/modules/6.1.0-test/kernel/fs/squashfs/squashfs.ko"))
                .unwrap(),
            b"two"
        );
    }

    #[test]
    fn equal_inputs_give_identical_bytes() {
        let a = sample().write_cpio(Vec::new()).unwrap();
        let b = sample().write_cpio(Vec::new()).unwrap();
        assert_eq!(a, b);
        let mut other = sample();
        other.add_file("extra", 0o644, b"x".to_vec());
        assert_ne!(a, other.write_cpio(Vec::new()).unwrap());
    }
}
