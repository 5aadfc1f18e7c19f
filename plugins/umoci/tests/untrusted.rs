//! Hostile base images and layouts: refused with a clear error, and nothing written (no
//! output directory, no temp directory left beside it).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use vcontainer_ocibuild::digest::Digest;
use vcontainer_ocibuild::gotar::{self, Header};
use vcontainer_ocibuild::layout::LayoutWriter;
use vcontainer_ocibuild::media;
use vcontainer_ocibuild::spec::{Descriptor, ImageConfig, Index, Manifest, RootFs};
use vcontainer_ocibuild::{BuildRequest, Flavor, UnpackRequest};

enum E {
    Dir(&'static [u8]),
    File(&'static [u8], &'static [u8]),
    Symlink(&'static [u8], &'static [u8]),
    Hardlink(&'static [u8], &'static [u8]),
}

fn raw_tar(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let (name, typeflag, link, data): (&[u8], u8, &[u8], &[u8]) = match e {
            E::Dir(n) => (n, gotar::TYPE_DIR, b"", b""),
            E::File(n, d) => (n, gotar::TYPE_REG, b"", d),
            E::Symlink(n, l) => (n, gotar::TYPE_SYMLINK, l, b""),
            E::Hardlink(n, l) => (n, gotar::TYPE_LINK, l, b""),
        };
        gotar::encode_header(
            &Header {
                name: name.to_vec(),
                linkname: link.to_vec(),
                typeflag,
                mode: 0o755,
                size: data.len() as u64,
                ..Header::default()
            },
            &mut out,
        );
        out.extend_from_slice(data);
        gotar::pad_to_block(&mut out, data.len() as u64);
    }
    out.extend_from_slice(&gotar::TRAILER);
    out
}

/// A layout holding one image whose only layer is `tar` (gzip'd), all digests correct.
fn layout_with_layer(dir: &Path, tar: &[u8]) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let w = LayoutWriter::init(dir).expect("init");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(tar).expect("gz");
    let gz = gz.finish().expect("gz finish");
    let (ld, lsize) = w.write_bytes(&gz).expect("layer");
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![Digest::of(tar)],
        },
        ..ImageConfig::default()
    };
    let cd = w
        .write_json(media::MEDIA_OCI_CONFIG, &config)
        .expect("config");
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::MEDIA_OCI_MANIFEST.into()),
        config: cd,
        layers: vec![Descriptor::new(media::MEDIA_OCI_LAYER_GZIP, ld, lsize)],
        annotations: BTreeMap::new(),
    };
    let mut md = w
        .write_json(media::MEDIA_OCI_MANIFEST, &manifest)
        .expect("manifest");
    md.annotations
        .insert(media::ANNOTATION_REF_NAME.into(), "latest".into());
    w.write_index(&Index {
        schema_version: 2,
        media_type: Some(media::MEDIA_OCI_INDEX.into()),
        manifests: vec![md],
        annotations: BTreeMap::new(),
    })
    .expect("index");
    dir.to_path_buf()
}

fn entries_of(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Builds on the hostile base and unpacks it; both must fail with `needle` in the message
/// and leave the work directory as it was.
fn refused(tar_entries: &[E], needle: &str) {
    let t = tempfile::tempdir().expect("tmp");
    let base = layout_with_layer(&t.path().join("base"), &raw_tar(tar_entries));
    refused_layout(t.path(), &base, needle);
}

fn refused_layout(work: &Path, base: &Path, needle: &str) {
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).expect("rootfs");
    let work_out = work.join("out");
    std::fs::create_dir_all(&work_out).expect("out dir");
    let before = entries_of(&work_out);
    let req = BuildRequest {
        rootfs: Some(rootfs),
        output: work_out.join("img"),
        base_image: Some(base.to_path_buf()),
        flavor: Flavor::Umoci,
        ..BuildRequest::default()
    };
    let err = vcontainer_ocibuild::build(&req, &mut |_| {}).expect_err("build refused");
    assert!(
        err.to_string().contains(needle),
        "build error {err:?} lacks {needle:?}"
    );
    let err = vcontainer_ocibuild::unpack(
        &UnpackRequest {
            image: base.to_path_buf(),
            bundle: work_out.join("bundle"),
            ..UnpackRequest::default()
        },
        &mut |_| {},
    )
    .expect_err("unpack refused");
    assert!(
        err.to_string().contains(needle),
        "unpack error {err:?} lacks {needle:?}"
    );
    assert_eq!(entries_of(&work_out), before, "partial output left behind");
}

#[test]
fn dotdot_paths_are_refused() {
    refused(
        &[E::Dir(b"etc/"), E::File(b"../evil", b"x")],
        "contains '..'",
    );
    refused(&[E::File(b"etc/../../evil", b"x")], "contains '..'");
}

#[test]
fn absolute_paths_are_refused() {
    refused(&[E::File(b"/etc/evil", b"x")], "absolute path");
}

#[test]
fn symlink_escapes_are_refused() {
    refused(
        &[
            E::Symlink(b"esc", b"/"),
            E::File(b"esc/etc/passwd", b"root::0:0"),
        ],
        "path escape",
    );
    refused(
        &[
            E::Dir(b"a/"),
            E::Symlink(b"a/up", b"../.."),
            E::File(b"a/up/x", b"x"),
        ],
        "path escape",
    );
}

#[test]
fn hardlink_escapes_are_refused() {
    refused(&[E::Hardlink(b"h", b"../../etc/shadow")], "contains '..'");
    refused(&[E::Hardlink(b"h", b"/etc/shadow")], "absolute path");
    refused(&[E::Hardlink(b"h", b"missing")], "not a file in the image");
}

#[test]
fn digest_mismatch_is_refused() {
    let t = tempfile::tempdir().expect("tmp");
    let base = layout_with_layer(
        &t.path().join("base"),
        &raw_tar(&[E::Dir(b"etc/"), E::File(b"etc/a", b"hello")]),
    );
    // Flip a byte of the layer blob (the largest blob) in place.
    let mut blobs: Vec<PathBuf> = std::fs::read_dir(base.join("blobs/sha256"))
        .expect("blobs")
        .map(|e| e.expect("e").path())
        .collect();
    blobs.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let victim = blobs.last().expect("a blob").clone();
    let mut bytes = std::fs::read(&victim).expect("read");
    let n = bytes.len();
    bytes[n - 9] ^= 0xff;
    std::fs::write(&victim, bytes).expect("write");
    refused_layout(t.path(), &base, "mismatch");
}

#[test]
fn good_layout_from_raw_tar_is_accepted() {
    // The control: the same machinery with a harmless layer works.
    let t = tempfile::tempdir().expect("tmp");
    let base = layout_with_layer(
        &t.path().join("base"),
        &raw_tar(&[
            E::Dir(b"etc/"),
            E::File(b"etc/a", b"hello"),
            E::Hardlink(b"etc/b", b"etc/a"),
            E::Symlink(b"abs", b"/etc/a"),
        ]),
    );
    let bundle = t.path().join("bundle");
    vcontainer_ocibuild::unpack(
        &UnpackRequest {
            image: base,
            bundle: bundle.clone(),
            ..UnpackRequest::default()
        },
        &mut |_| {},
    )
    .expect("unpack");
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/etc/b")).expect("b"),
        "hello"
    );
    assert!(bundle.join("config.json").is_file());
}
