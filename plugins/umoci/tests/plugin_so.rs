//! The built cdylib loads through the core's loader and builds an image through the
//! JSON interface (what `vcontainer image build --backend umoci` does).

use std::path::PathBuf;

use vcontainer_abi::backend as abi;

fn target_dir() -> Option<PathBuf> {
    // target/debug/deps/plugin_so-<hash> -> target/debug
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.to_path_buf())
}

#[test]
fn cdylib_loads_and_builds() {
    let Some(dir) = target_dir() else {
        eprintln!("SKIP: cannot locate the target directory");
        return;
    };
    let so = dir.join("libvcontainer_backend_umoci.so");
    if !so.is_file() {
        eprintln!("SKIP: {} not built", so.display());
        return;
    }
    let plugin = match vcontainer_abi::host::load_plugin(&so) {
        Ok(p) => p,
        Err(e) => panic!("loading {}: {e:?}", so.display()),
    };
    assert!(plugin.answers_to("umoci"));
    let backend = plugin.backend().expect("a backend plugin");
    let t = tempfile::tempdir().expect("tmp");
    let rootfs = t.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir");
    std::fs::write(rootfs.join("etc/os-release"), "ID=test\n").expect("write");
    let out = t.path().join("img");
    let res = backend
        .build(&abi::BuildRequest {
            rootfs,
            output: out.clone(),
            arch: "arm64".into(),
            tag: Some("1.0".into()),
            tar: Some(t.path().join("img.tar")),
            source_date_epoch: Some(0),
            ..abi::BuildRequest::default()
        })
        .expect("build through the plugin");
    assert_eq!(res.layout, out);
    assert_eq!(res.layers.len(), 1);
    assert!(out.join("index.json").is_file());
    assert!(t.path().join("img.tar").is_file());
    // Errors cross the boundary as usage errors with the message.
    let err = backend
        .build(&abi::BuildRequest {
            rootfs: t.path().join("missing"),
            output: t.path().join("img2"),
            arch: "arm64".into(),
            ..abi::BuildRequest::default()
        })
        .expect_err("missing rootfs");
    assert_eq!(err.kind, vcontainer_abi::PluginErrorKind::Usage);
    assert!(err.message.contains("missing"), "{err}");
}
