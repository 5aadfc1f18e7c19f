//! Output compared with the real tools: umoci's own layers (diff_id identity), skopeo and
//! `umoci stat` accepting our layouts, and byte-for-byte reproducibility.

mod common;

use std::process::Command;

use common::*;
use vcontainer_abi::backend as abi;
use vcontainer_ocibuild::{BuildRequest, Compression, Flavor};

fn abi_request(rootfs: &std::path::Path, out: &std::path::Path) -> abi::BuildRequest {
    abi::BuildRequest {
        rootfs: rootfs.to_path_buf(),
        output: out.to_path_buf(),
        arch: "amd64".into(),
        source_date_epoch: Some(SDE),
        ..abi::BuildRequest::default()
    }
}

#[test]
fn layer_diff_id_equals_umocis_for_the_same_rootfs() {
    if !is_root() || !have("umoci") || !have("setcap") {
        eprintln!("SKIP: needs root, umoci and setcap (owners, devices, capabilities)");
        return;
    }
    let t = tempfile::tempdir().expect("tmp");
    let rootfs = t.path().join("rootfs");
    rich_rootfs(&rootfs);
    let reference = t.path().join("umoci-image");
    umoci_reference(&rootfs, &reference);
    let theirs = load(&reference).config.rootfs.diff_ids;

    let ours_dir = t.path().join("ours");
    let res = vcontainer_backend_umoci::build(abi_request(&rootfs, &ours_dir)).expect("build");
    assert_eq!(res.layers.len(), 1);
    let ours = load(&ours_dir).config.rootfs.diff_ids;
    assert_eq!(
        ours, theirs,
        "umoci backend layer differs from umoci repack"
    );
    assert_eq!(res.layers[0].diff_id, theirs[0].to_string());

    let sloci_dir = t.path().join("sloci");
    // (The sloci plugin cannot be linked into the same test binary: both export a root
    // module. Its build is this glue with the sloci flavor.)
    vcontainer_ocibuild::abi_glue::build(Flavor::Sloci, abi_request(&rootfs, &sloci_dir))
        .expect("sloci build");
    assert_eq!(
        load(&sloci_dir).config.rootfs.diff_ids,
        theirs,
        "sloci layer"
    );

    // Same tar bytes, not only the same hash of them.
    assert_eq!(layer_tar(&ours_dir, 0), layer_tar(&reference, 0));
}

#[test]
fn layer_keeps_owners_modes_xattrs_capabilities() {
    if !is_root() || !have("setcap") {
        eprintln!("SKIP: needs root and setcap");
        return;
    }
    let t = tempfile::tempdir().expect("tmp");
    let rootfs = t.path().join("rootfs");
    rich_rootfs(&rootfs);
    let out = t.path().join("img");
    vcontainer_backend_umoci::build(abi_request(&rootfs, &out)).expect("build");
    let tar = layer_tar(&out, 0);
    let mut a = tar::Archive::new(&tar[..]);
    let mut seen = 0;
    for e in a.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let h = e.header().clone();
        match name.as_str() {
            "." => assert_eq!(h.mode().expect("mode"), 0o755),
            "home/user/file" => {
                assert_eq!((h.uid().expect("uid"), h.gid().expect("gid")), (1000, 1000));
                seen += 1;
            }
            "usr/bin/su" => {
                assert_eq!(h.mode().expect("mode") & 0o7777, 0o4755);
                seen += 1;
            }
            "usr/bin/ping" => {
                let caps: Vec<_> = e
                    .pax_extensions()
                    .expect("pax")
                    .expect("has pax")
                    .map(|x| x.expect("rec").key().expect("key").to_string())
                    .collect();
                assert!(caps.contains(&"SCHILY.xattr.security.capability".to_string()));
                seen += 1;
            }
            "usr/bin/big-hl" => {
                assert_eq!(h.entry_type(), tar::EntryType::Link);
                seen += 1;
            }
            "dev/null" => {
                assert_eq!(h.entry_type(), tar::EntryType::Char);
                assert_eq!(h.device_major().expect("maj"), Some(1));
                seen += 1;
            }
            "var/empty/" => {
                assert_eq!(h.mode().expect("mode") & 0o7777, 0o1777);
                seen += 1;
            }
            _ => {}
        }
        assert!(name == "." || !name.starts_with("./"), "{name}");
        assert_eq!(h.mtime().expect("mtime"), SDE as u64);
    }
    assert_eq!(seen, 6, "all special entries present");
    assert!(tar.ends_with(&[0u8; 1024]));
    assert_eq!(tar.len() % 512, 0);
}

#[test]
fn skopeo_and_umoci_accept_our_layouts() {
    if !have("skopeo") || !have("umoci") {
        eprintln!("SKIP: needs skopeo and umoci");
        return;
    }
    let t = tempfile::tempdir().expect("tmp");
    let rootfs = t.path().join("rootfs");
    sh(&format!(
        "mkdir -p {0}/bin {0}/etc && echo x > {0}/etc/x && cp /bin/true {0}/bin/true",
        rootfs.display()
    ));
    let out = t.path().join("img");
    let mut req = abi_request(&rootfs, &out);
    req.tag = Some("v1.2".into());
    req.entrypoint = Some(vec!["/bin/true".into(), "--flag".into()]);
    req.cmd = Some(vec!["a b".into()]);
    req.env = vec!["A=1".into()];
    req.ports = vec!["80".into(), "53/udp".into()];
    req.labels.insert("k".into(), "v w".into());
    req.arch = "armv7".into();
    vcontainer_backend_umoci::build(req).expect("build");

    let js = run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:v1.2", out.display())));
    let v: serde_json::Value = serde_json::from_str(&js).expect("skopeo json");
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["Architecture"], "arm");
    assert_eq!(v["Labels"]["k"], "v w");
    let cfg = run(Command::new("skopeo")
        .arg("inspect")
        .arg("--config")
        .arg(format!("oci:{}", out.display())));
    let c: serde_json::Value = serde_json::from_str(&cfg).expect("config json");
    assert_eq!(
        c["config"]["Entrypoint"],
        serde_json::json!(["/bin/true", "--flag"])
    );
    assert_eq!(c["config"]["Cmd"], serde_json::json!(["a b"]));
    assert_eq!(c["variant"], "v7");
    assert!(c["config"]["ExposedPorts"]["80/tcp"].is_object());
    assert!(c["config"]["ExposedPorts"]["53/udp"].is_object());

    let stat = run(Command::new("umoci")
        .args(["stat", "--image"])
        .arg(format!("{}:v1.2", out.display())));
    assert!(stat.contains("vcontainer image build"), "{stat}");

    // A single-arch index.json entry has no platform; exactly one entry.
    let idx = load(&out).index;
    assert_eq!(idx.manifests.len(), 1);
    assert!(idx.manifests[0].platform.is_none());
}

fn build_twice_identical(compression: Compression) {
    let t = tempfile::tempdir().expect("tmp");
    let rootfs = t.path().join("rootfs");
    // Content bigger than one gzip chunk, so the parallel path is exercised.
    sh(&format!(
        "mkdir -p {0}/data && head -c 3000000 /dev/urandom | base64 > {0}/data/a && echo b > {0}/data/b",
        rootfs.display()
    ));
    let mut outs = Vec::new();
    for i in 0..2 {
        let out = t.path().join(format!("img{i}"));
        let tar = t.path().join(format!("img{i}.tar"));
        let req = BuildRequest {
            rootfs: Some(rootfs.clone()),
            output: out.clone(),
            compression,
            source_date_epoch: Some(SDE),
            tars: vec![vcontainer_ocibuild::LayoutTar {
                path: tar.clone(),
                style: vcontainer_ocibuild::TarStyle::Archive,
            }],
            flavor: Flavor::Umoci,
            ..BuildRequest::default()
        };
        vcontainer_ocibuild::build(&req, &mut |_| {}).expect("build");
        // Touch the sources between the builds: mtimes newer than SDE must not matter.
        sh(&format!("touch {}/data/b", rootfs.display()));
        outs.push((tree_bytes(&out), std::fs::read(&tar).expect("tar")));
    }
    assert_eq!(outs[0].0, outs[1].0, "layouts differ");
    assert_eq!(outs[0].1, outs[1].1, "layout tars differ");
}

#[test]
fn reproducible_with_gzip() {
    build_twice_identical(Compression::Gzip);
}

#[test]
fn reproducible_with_zstd() {
    build_twice_identical(Compression::Zstd);
}

#[test]
fn umoci_made_base_image_and_umoci_unpack_of_our_layers() {
    if !is_root() || !have("umoci") || !have("setcap") {
        eprintln!("SKIP: needs root, umoci and setcap");
        return;
    }
    let t = tempfile::tempdir().expect("tmp");
    let rootfs = t.path().join("rootfs");
    rich_rootfs(&rootfs);
    let base = t.path().join("umoci-base");
    umoci_reference(&rootfs, &base);
    let add = t.path().join("add");
    sh(&format!(
        "mkdir -p {0}/etc && echo added > {0}/etc/added && chmod 700 {0}",
        add.display()
    ));
    let out = t.path().join("img");
    let mut req = abi_request(&add, &out);
    req.layers =
        vec![abi::LayerSpec::parse(&format!("extra:dir:{}", add.display())).expect("layer")];
    req.base_image = Some(abi::BaseImage {
        path: base.clone(),
        tag: None,
    });
    let res = vcontainer_backend_umoci::build(req).expect("build on umoci base");
    assert_eq!(res.layers.len(), 2);
    let top: Vec<String> = tar_entries(&layer_tar(&out, 1))
        .into_iter()
        .map(|e| e.0)
        .collect();
    // The prepared dir's own 0700 root does not replace the image root, and etc/ (same
    // metadata after the SOURCE_DATE_EPOCH clamp) is not repeated.
    assert_eq!(top, vec!["etc/added"]);

    let bundle = t.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", out.display()))
        .arg(&bundle));
    let r = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(r.join("etc/added")).expect("added"),
        "added\n"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("etc/hostname")).expect("base file"),
        "hello\n"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(r.join("usr/bin/su")).expect("su").mode() & 0o7777,
        0o4755
    );
    assert_eq!(std::fs::metadata(&r).expect("root").mode() & 0o777, 0o755);
}

#[test]
fn whiteout_named_files_are_refused() {
    let t = tempfile::tempdir().expect("tmp");
    let rootfs = t.path().join("rootfs");
    sh(&format!(
        "mkdir -p {0}/etc && touch {0}/etc/.wh.passwd",
        rootfs.display()
    ));
    let out = t.path().join("img");
    let err = vcontainer_backend_umoci::build(abi_request(&rootfs, &out)).expect_err("refused");
    assert!(err.message.contains(".wh."), "{err}");
    assert!(!out.exists());
}

/// The PAX records of one entry of a layer tar, key -> value bytes.
fn pax_of(tar: &[u8], name: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut a = tar::Archive::new(tar);
    for e in a.entries().expect("entries") {
        let mut e = e.expect("entry");
        if e.path_bytes().as_ref() != name.as_bytes() {
            continue;
        }
        let Some(recs) = e.pax_extensions().expect("pax") else {
            return Default::default();
        };
        return recs
            .map(|r| {
                let r = r.expect("record");
                (r.key().expect("key").to_string(), r.value_bytes().to_vec())
            })
            .collect();
    }
    panic!("{name} not in the layer");
}

/// The value of xattr `key` of `path` as the kernel has it (python3: no xattr crate in the
/// test deps), hex-decoded.
fn host_xattr(path: &std::path::Path, key: &str) -> Vec<u8> {
    let hex = run(Command::new("python3").arg("-c").arg(format!(
        "import os; print(os.getxattr({:?}, {key:?}).hex())",
        path.display().to_string()
    )));
    let hex = hex.trim();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Both backends keep xattrs and file capabilities with their exact bytes, and setuid and
/// owners, as umoci does as root.
#[test]
fn xattr_and_capability_bytes_kept_by_both_backends() {
    if !is_root() || !have("setcap") || !have("python3") {
        eprintln!("SKIP: needs root, setcap and python3");
        return;
    }
    let t = tempfile::tempdir().expect("tmp");
    let rootfs = t.path().join("rootfs");
    rich_rootfs(&rootfs);
    let cap = host_xattr(&rootfs.join("usr/bin/ping"), "security.capability");
    assert!(cap.len() >= 20, "a v2/v3 capability blob: {cap:?}");
    for flavor in [Flavor::Umoci, Flavor::Sloci] {
        let out = t.path().join(format!("{flavor:?}"));
        let req = BuildRequest {
            rootfs: Some(rootfs.clone()),
            output: out.clone(),
            source_date_epoch: Some(SDE),
            flavor,
            ..BuildRequest::default()
        };
        vcontainer_ocibuild::build(&req, &mut |_| {}).expect("build");
        let tar = layer_tar(&out, 0);
        let ping = pax_of(&tar, "usr/bin/ping");
        assert_eq!(
            ping.get("SCHILY.xattr.security.capability"),
            Some(&cap),
            "{flavor:?}"
        );
        let host = pax_of(&tar, "etc/hostname");
        assert_eq!(
            host.get("SCHILY.xattr.user.test").map(Vec::as_slice),
            Some(&b"hello"[..]),
            "{flavor:?}"
        );
        let entries = tar_entries(&tar);
        assert!(entries.iter().any(|(n, _, _)| n == "usr/bin/su"));
        let mut a = tar::Archive::new(&tar[..]);
        for e in a.entries().expect("entries") {
            let e = e.expect("entry");
            let h = e.header();
            match e.path_bytes().as_ref() {
                b"usr/bin/su" => assert_eq!(h.mode().expect("mode"), 0o4755, "{flavor:?}"),
                b"home/user/file" => {
                    assert_eq!(h.uid().expect("uid"), 1000, "{flavor:?}");
                    assert_eq!(h.gid().expect("gid"), 1000, "{flavor:?}");
                }
                _ => {}
            }
        }
    }
}

/// A layer larger than one compression chunk is several gzip members; GNU gzip and umoci
/// (Go's gzip reader, as docker, containerd and podman use) read it whole, the uncompressed
/// bytes hash to the diff_id, and skopeo accepts the layout.
#[test]
fn multi_member_gzip_layers_are_read_whole_by_real_tools() {
    if !have("umoci") || !have("gzip") || !have("skopeo") {
        eprintln!("SKIP: needs umoci, gzip and skopeo");
        return;
    }
    let t = tempfile::tempdir().expect("tmp");
    let rootfs = t.path().join("rootfs");
    sh(&format!(
        "mkdir -p {0}/data && head -c 4000000 /dev/urandom | base64 > {0}/data/a && head -c 1500000 /dev/urandom > {0}/data/b && echo end > {0}/data/z",
        rootfs.display()
    ));
    let out = t.path().join("img");
    let res = vcontainer_backend_umoci::build(abi_request(&rootfs, &out)).expect("build");
    let l = load(&out);
    let layer = blob(&out, &l.manifest.layers[0].digest.to_string());
    let sum = run(Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc {} | sha256sum", layer.display())));
    assert_eq!(
        format!("sha256:{}", sum.split_whitespace().next().expect("sum")),
        l.config.rootfs.diff_ids[0].to_string()
    );
    assert!(res.layers[0].size > 2 << 20, "several members expected");
    run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}", out.display())));
    let bundle = t.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:latest", out.display()))
        .arg(&bundle));
    for f in ["a", "b", "z"] {
        assert_eq!(
            std::fs::read(bundle.join("rootfs/data").join(f)).expect("unpacked"),
            std::fs::read(rootfs.join("data").join(f)).expect("source"),
            "data/{f}"
        );
    }
}
