//! Round trips through `pack` and `unpack` on real directories. Device nodes and ownership
//! need root (the agent's situation); those checks are skipped with a note otherwise.

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use super::{pack, unpack};
use vcontainer_proto::ErrorKind;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn whiteout(path: &Path) {
    mknod(
        path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(0, 0),
    )
    .expect("mknod");
}

/// A binary xattr value as overlayfs' `trusted.overlay.origin` (a file handle) or a file
/// capability can hold: newlines, a NUL, and text that reads as a PAX record of its own when
/// records are split on newlines instead of walked by length (the tar crate's bug, patched
/// in third_party/tar: such values failed the whole `--input-storage` unpack).
const BINARY_XATTR: &[u8] = b"\x01\n\x00\n22 linkpath=/etc/evil\n";

/// An overlay upper dir in miniature: a whiteout shared by two deletions (hard links), an
/// opaque directory, a FIFO, a symlink and a hard-linked file with a binary xattr.
fn upper_dir(root: &Path) {
    fs::create_dir_all(root.join("etc/opaque")).expect("mkdir");
    fs::write(root.join("etc/file"), b"contents").expect("write");
    xattr::set(
        root.join("etc/file"),
        "user.vcontainer.binary",
        BINARY_XATTR,
    )
    .expect("xattr");
    fs::hard_link(root.join("etc/file"), root.join("etc/file-link")).expect("link");
    symlink("file", root.join("etc/sym")).expect("symlink");
    nix::unistd::mkfifo(&root.join("etc/fifo"), Mode::from_bits_truncate(0o640)).expect("fifo");
    fs::set_permissions(root.join("etc/fifo"), fs::Permissions::from_mode(0o640)).expect("chmod");
    if is_root() {
        whiteout(&root.join("etc/deleted"));
        fs::hard_link(root.join("etc/deleted"), root.join("etc/deleted-too")).expect("link");
        nix::unistd::chown(
            &root.join("etc/deleted"),
            Some(nix::unistd::Uid::from_raw(12)),
            Some(nix::unistd::Gid::from_raw(34)),
        )
        .expect("chown");
        xattr::set(root.join("etc/opaque"), "trusted.overlay.opaque", b"y").expect("xattr");
        xattr::set(
            root.join("etc/opaque"),
            "trusted.overlay.origin",
            BINARY_XATTR,
        )
        .expect("xattr");
    }
}

fn packed(dir: &Path, contents_only: bool) -> Vec<u8> {
    pack(dir, contents_only, Vec::new()).expect("pack")
}

#[test]
fn nodes_are_archived_under_their_relative_names() {
    let src = tempfile::tempdir().expect("tmp");
    let root = src.path().join("upper");
    upper_dir(&root);
    let bytes = packed(&root, false);
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut kinds = Vec::new();
    for entry in archive.entries().expect("entries") {
        let entry = entry.expect("entry");
        let name = entry.path().expect("name").to_string_lossy().into_owned();
        assert!(name.starts_with("upper"), "entry {name} is not relative");
        let header = entry.header();
        kinds.push((name, header.entry_type()));
        if header.entry_type() == tar::EntryType::Char {
            assert_eq!(header.device_major().expect("major"), Some(0));
            assert_eq!(header.device_minor().expect("minor"), Some(0));
            assert_eq!(header.uid().expect("uid"), 12);
            assert_eq!(header.gid().expect("gid"), 34);
        }
    }
    let kind_of = |n: &str| {
        kinds
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, kind)| *kind)
            .unwrap_or_else(|| panic!("{n} missing from {kinds:?}"))
    };
    assert_eq!(kind_of("upper/etc/fifo"), tar::EntryType::Fifo);
    assert_eq!(kind_of("upper/etc/sym"), tar::EntryType::Symlink);
    assert_eq!(kind_of("upper/etc/file-link"), tar::EntryType::Link);
    if is_root() {
        assert_eq!(kind_of("upper/etc/deleted"), tar::EntryType::Char);
        assert_eq!(kind_of("upper/etc/deleted-too"), tar::EntryType::Link);
    } else {
        eprintln!("not root: device node checks skipped");
    }
}

#[test]
fn gnu_tar_reads_the_stream_with_its_nodes_and_xattrs() {
    if Command::new("tar").arg("--version").output().is_err() {
        eprintln!("no GNU tar: skipped");
        return;
    }
    let src = tempfile::tempdir().expect("tmp");
    upper_dir(src.path());
    let scratch = tempfile::tempdir().expect("tmp");
    let archive = scratch.path().join("storage.tar");
    fs::write(&archive, packed(src.path(), true)).expect("write archive");
    let listing = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-tvvf"])
        .arg(&archive)
        .output()
        .expect("tar -t");
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with('p') && l.ends_with(" etc/fifo")),
        "{text}"
    );
    if is_root() {
        assert!(
            text.lines()
                .any(|l| l.starts_with('c') && l.contains(" 0,0 ") && l.ends_with(" etc/deleted")),
            "{text}"
        );
        assert!(text.contains("trusted.overlay.opaque"), "{text}");
    }
}

#[test]
fn round_trip_recreates_nodes_links_and_xattrs() {
    let src = tempfile::tempdir().expect("tmp");
    upper_dir(src.path());
    let fifo_mtime = 1_600_000_000;
    let when = nix::sys::time::TimeSpec::new(fifo_mtime, 0);
    nix::sys::stat::utimensat(
        None,
        &src.path().join("etc/fifo"),
        &when,
        &when,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .expect("utimensat");
    let bytes = packed(src.path(), true);
    let dest = tempfile::tempdir().expect("tmp");
    let out = dest.path().join("restored");
    let count = unpack(out.to_str().expect("utf-8"), &mut bytes.as_slice()).expect("unpack");
    assert!(count >= 6, "{count} entries");

    let fifo = fs::symlink_metadata(out.join("etc/fifo")).expect("fifo");
    assert!(fifo.file_type().is_fifo(), "{fifo:?}");
    assert_eq!(fifo.mode() & 0o7777, 0o640);
    assert_eq!(fifo.mtime(), fifo_mtime);
    assert_eq!(
        fs::read_link(out.join("etc/sym")).expect("symlink"),
        Path::new("file")
    );
    let file = fs::metadata(out.join("etc/file")).expect("file");
    let link = fs::metadata(out.join("etc/file-link")).expect("file link");
    assert_eq!(file.ino(), link.ino());
    assert_eq!(
        xattr::get(out.join("etc/file"), "user.vcontainer.binary").expect("getxattr"),
        Some(BINARY_XATTR.to_vec())
    );
    if !is_root() {
        eprintln!("not root: device node and xattr checks skipped");
        return;
    }
    let deleted = fs::symlink_metadata(out.join("etc/deleted")).expect("whiteout");
    assert!(deleted.file_type().is_char_device(), "{deleted:?}");
    assert_eq!(deleted.rdev(), 0);
    assert_eq!((deleted.uid(), deleted.gid()), (12, 34));
    assert_eq!(deleted.mode() & 0o7777, 0o600);
    let too = fs::symlink_metadata(out.join("etc/deleted-too")).expect("second whiteout");
    assert_eq!(too.ino(), deleted.ino());
    assert_eq!(
        xattr::get(out.join("etc/opaque"), "trusted.overlay.opaque").expect("getxattr"),
        Some(b"y".to_vec())
    );
    assert_eq!(
        xattr::get(out.join("etc/opaque"), "trusted.overlay.origin").expect("getxattr"),
        Some(BINARY_XATTR.to_vec())
    );
}

#[test]
fn node_replaces_a_file_in_the_way() {
    let src = tempfile::tempdir().expect("tmp");
    nix::unistd::mkfifo(&src.path().join("n"), Mode::from_bits_truncate(0o600)).expect("fifo");
    let bytes = packed(src.path(), true);
    let dest = tempfile::tempdir().expect("tmp");
    fs::write(dest.path().join("n"), b"old").expect("write");
    unpack(dest.path().to_str().expect("utf-8"), &mut bytes.as_slice()).expect("unpack");
    let meta = fs::symlink_metadata(dest.path().join("n")).expect("n");
    assert!(meta.file_type().is_fifo());
}

#[test]
fn node_behind_a_symlink_leading_outside_is_refused() {
    let outside = tempfile::tempdir().expect("tmp");
    let mut builder = tar::Builder::new(Vec::new());
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    link.set_uid(0);
    link.set_gid(0);
    link.set_mtime(0);
    builder
        .append_link(&mut link, "escape", outside.path())
        .expect("symlink entry");
    let mut fifo = tar::Header::new_gnu();
    fifo.set_entry_type(tar::EntryType::Fifo);
    fifo.set_size(0);
    fifo.set_mode(0o644);
    fifo.set_uid(0);
    fifo.set_gid(0);
    fifo.set_mtime(0);
    builder
        .append_data(&mut fifo, "escape/planted", std::io::empty())
        .expect("fifo entry");
    let bytes = builder.into_inner().expect("tar");
    let dest = tempfile::tempdir().expect("tmp");
    let (kind, message) = unpack(dest.path().to_str().expect("utf-8"), &mut bytes.as_slice())
        .expect_err("must refuse");
    assert_eq!(kind, ErrorKind::PathEscape, "{message}");
    assert!(!outside.path().join("planted").exists());
}

/// A tar stream whose first entry is an extension header (PAX or GNU long name) claiming
/// `size` bytes, followed by zeros for ever; counts what was read from it.
struct HugeExtension {
    header: Vec<u8>,
    read: usize,
}

impl HugeExtension {
    fn new(kind: tar::EntryType, size: u64) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_path("././@LongLink").expect("name");
        h.set_mode(0o644);
        h.set_cksum();
        Self {
            header: h.as_bytes().to_vec(),
            read: 0,
        }
    }
}

impl std::io::Read for HugeExtension {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(64 * 1024);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = self.header.get(self.read + i).copied().unwrap_or(0);
        }
        self.read += n;
        Ok(n)
    }
}

#[test]
fn huge_pax_and_gnu_long_name_headers_fail_fast_with_bounded_reads() {
    for kind in [
        tar::EntryType::XHeader,
        tar::EntryType::GNULongName,
        tar::EntryType::GNULongLink,
    ] {
        let dest = tempfile::tempdir().expect("tmp");
        let mut stream = HugeExtension::new(kind, 1 << 40);
        let started = std::time::Instant::now();
        let err = unpack(dest.path().to_str().expect("utf-8"), &mut stream)
            .expect_err("a 1 TiB header must be refused");
        assert!(err.1.contains("exceeds the limit"), "{kind:?}: {err:?}");
        assert!(
            stream.read < 4 << 20,
            "{kind:?}: read {} bytes of the header",
            stream.read
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // 1 MiB is still fine (a long name that big is absurd but legal)
        let mut stream = HugeExtension::new(kind, 1 << 20);
        let err = unpack(dest.path().to_str().expect("utf-8"), &mut stream);
        if let Err(e) = err {
            assert!(!e.1.contains("exceeds the limit"), "{kind:?}: {e:?}");
        }
    }
}
