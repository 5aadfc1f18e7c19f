//! `unpack` into a runtime bundle and `index` of per-arch layouts.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::*;
use vcontainer_abi::backend as abi;

/// (path, mode, uid, gid, mtime, rdev, symlink target, xattrs) of one path.
type MetaRow = (String, u32, u32, u32, i64, u64, String, Vec<String>);

/// The [`MetaRow`] of every path below `root`.
fn metadata_map(root: &Path) -> Vec<MetaRow> {
    let mut out = Vec::new();
    let out_ref = &mut out;
    fn walk(root: &Path, p: &Path, out: &mut Vec<MetaRow>) {
        let md = std::fs::symlink_metadata(p).expect("lstat");
        let rel = p.strip_prefix(root).expect("rel").display().to_string();
        let link = if md.file_type().is_symlink() {
            std::fs::read_link(p)
                .expect("readlink")
                .display()
                .to_string()
        } else {
            String::new()
        };
        let mut xattrs: Vec<String> = xattr_list(p);
        xattrs.sort();
        out.push((
            rel,
            md.mode(),
            md.uid(),
            md.gid(),
            md.mtime(),
            md.rdev(),
            link,
            xattrs,
        ));
        if md.is_dir() {
            let mut kids: Vec<_> = std::fs::read_dir(p)
                .expect("readdir")
                .map(|e| e.expect("e").path())
                .collect();
            kids.sort();
            for k in kids {
                walk(root, &k, out);
            }
        }
    }
    walk(root, root, out_ref);
    out
}

fn xattr_list(p: &Path) -> Vec<String> {
    // getfattr is not installed everywhere; python is.
    let out = Command::new("python3")
        .arg("-c")
        .arg("import os,sys; p=sys.argv[1]\nfor n in sorted(os.listxattr(p, follow_symlinks=False)): print(n, os.getxattr(p, n, follow_symlinks=False).hex())")
        .arg(p)
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn unpack_restores_the_rootfs_exactly() {
    if !is_root() || !have("setcap") {
        eprintln!("SKIP: needs root and setcap (owners, devices, capabilities)");
        return;
    }
    let t = tempfile::tempdir().expect("tmp");
    let rootfs = t.path().join("rootfs");
    rich_rootfs(&rootfs);
    let img = t.path().join("img");
    vcontainer_backend_umoci::build(abi::BuildRequest {
        rootfs: rootfs.clone(),
        output: img.clone(),
        arch: "amd64".into(),
        entrypoint: Some(vec!["/usr/bin/su".into()]),
        cmd: Some(vec!["-c".into(), "id".into()]),
        workdir: Some("/home/user".into()),
        user: Some("1000:1000".into()),
        source_date_epoch: Some(SDE),
        ..abi::BuildRequest::default()
    })
    .expect("build");
    let bundle = t.path().join("bundle");
    let res = vcontainer_backend_umoci::unpack(abi::UnpackRequest {
        image: img.clone(),
        bundle: bundle.clone(),
        ..abi::UnpackRequest::default()
    })
    .expect("unpack");
    assert!(res.manifest_digest.starts_with("sha256:"));
    assert_eq!(metadata_map(&rootfs), metadata_map(&bundle.join("rootfs")));
    let cfg: serde_json::Value = read_json(&bundle.join("config.json"));
    assert_eq!(
        cfg["process"]["args"],
        serde_json::json!(["/usr/bin/su", "-c", "id"])
    );
    assert_eq!(cfg["process"]["cwd"], "/home/user");
    assert_eq!(cfg["process"]["user"]["uid"], 1000);
    assert_eq!(cfg["root"]["path"], "rootfs");

    // An existing bundle is not overwritten.
    let again = vcontainer_backend_umoci::unpack(abi::UnpackRequest {
        image: img,
        bundle: bundle.clone(),
        ..abi::UnpackRequest::default()
    });
    assert!(again.is_err());
    assert!(bundle.join("config.json").is_file());
}

#[test]
fn index_combines_arches_with_platform_and_variant() {
    let t = tempfile::tempdir().expect("tmp");
    let rootfs = etc_file_rootfs(t.path().join("rootfs"), "x");
    let mut images = Vec::new();
    for arch in ["x86_64", "aarch64", "armv7"] {
        let out = t.path().join(format!("img-{arch}"));
        vcontainer_backend_umoci::build(abi::BuildRequest {
            rootfs: rootfs.clone(),
            output: out.clone(),
            arch: arch.into(),
            source_date_epoch: Some(SDE),
            ..abi::BuildRequest::default()
        })
        .expect("build");
        images.push(abi::IndexEntry {
            layout: out,
            tag: None,
            platform: None,
        });
    }
    let out = t.path().join("multi");
    let res = vcontainer_backend_umoci::index(abi::IndexRequest {
        output: out.clone(),
        tag: Some("1.0".into()),
        images: images.clone(),
        ..abi::IndexRequest::default()
    })
    .expect("index");
    let plats: Vec<(String, Option<String>)> = res
        .manifests
        .iter()
        .map(|m| (m.platform.architecture.clone(), m.platform.variant.clone()))
        .collect();
    assert_eq!(
        plats,
        vec![
            ("amd64".into(), None),
            ("arm64".into(), None),
            ("arm".into(), Some("v7".into()))
        ]
    );
    // index.json: one entry, the nested image index, tagged.
    let idx = load_index(&out);
    assert_eq!(idx.manifests.len(), 1);
    assert_eq!(
        idx.manifests[0].media_type,
        vcontainer_ocibuild::media::MEDIA_OCI_INDEX
    );
    assert_eq!(
        idx.manifests[0]
            .annotations
            .get(vcontainer_ocibuild::media::ANNOTATION_REF_NAME),
        Some(&"1.0".to_string())
    );
    let nested: vcontainer_ocibuild::spec::Index =
        read_json(&blob(&out, &idx.manifests[0].digest.to_string()));
    assert_eq!(nested.manifests.len(), 3);
    // Only referenced blobs: 1 shared layer + 3 configs + 3 manifests + the index.
    let n = std::fs::read_dir(out.join("blobs/sha256"))
        .expect("blobs")
        .count();
    assert_eq!(n, 1 + 3 + 3 + 1);

    if have("skopeo") {
        let js = run(Command::new("skopeo")
            .args(["--override-arch", "arm64", "inspect"])
            .arg(format!("oci:{}:1.0", out.display())));
        let v: serde_json::Value = serde_json::from_str(&js).expect("json");
        assert_eq!(v["Architecture"], "arm64");
    }

    // Two inputs for the same platform are refused, nothing written.
    let dup = t.path().join("dup");
    let err = vcontainer_backend_umoci::index(abi::IndexRequest {
        output: dup.clone(),
        images: vec![images[0].clone(), images[0].clone()],
        ..abi::IndexRequest::default()
    })
    .expect_err("duplicate platform");
    assert!(err.message.contains("two inputs"), "{err}");
    assert!(!dup.exists());
}

fn load_index(layout: &Path) -> vcontainer_ocibuild::spec::Index {
    read_json(&layout.join("index.json"))
}
