//! vimport against generated inputs of every type (layouts written here byte by byte, so
//! minified/reordered JSON and hostile contents are under the test's control).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;
use vcontainer_oci::digest::sha256_digest;

const GUEST: &str = "/run/vcontainer/import/1";

fn target(arch: Arch, runtime: &str) -> ImportTarget {
    let (bin, transport, tool) = match runtime {
        "docker" => ("docker", "docker-daemon:", "vdkr"),
        _ => ("podman", "containers-storage:", "vpdmn"),
    };
    ImportTarget {
        arch,
        runtime_binary: bin.into(),
        import_transport: transport.into(),
        tool_name: tool.into(),
    }
}

fn docker_x86() -> ImportTarget {
    target(Arch::X86_64, "docker")
}

fn req(path: &Path, name: Option<&str>) -> ImportRequest {
    ImportRequest {
        path: path.to_path_buf(),
        name: name.map(str::to_string),
    }
}

#[track_caller]
fn planned(path: &Path, name: Option<&str>, target: &ImportTarget) -> ImportPlan {
    plan_import(&req(path, name), target, GUEST).expect("plan")
}

/// The error that refuses importing `path`, as the user sees it.
#[track_caller]
fn refused(path: &Path, name: Option<&str>, target: &ImportTarget) -> String {
    plan_import(&req(path, name), target, GUEST)
        .expect_err("refused")
        .to_string()
}

/// Writes a blob; returns (digest, size).
fn blob(layout: &Path, data: &[u8]) -> (String, u64) {
    let d = sha256_digest(data);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).expect("blobs dir");
    std::fs::write(dir.join(&d[7..]), data).expect("blob");
    (d, data.len() as u64)
}

/// Appends a regular file (mode 0644) to a tar being built.
fn append_file<W: Write>(b: &mut tar::Builder<W>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data).expect("append");
}

fn layer_tar(marker: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    append_file(&mut b, "etc/marker", marker.as_bytes());
    b.into_inner().expect("tar")
}

/// One image (layer, config, manifest) in `layout`; returns the manifest descriptor.
fn image(layout: &Path, arch: Option<&str>) -> serde_json::Value {
    let (ld, ls) = blob(layout, &layer_tar(arch.unwrap_or("none")));
    let mut config = json!({"os": "linux", "rootfs": {"type": "layers", "diff_ids": [ld]}});
    if let Some(a) = arch {
        config["architecture"] = json!(a);
    }
    let (cd, cs) = blob(layout, config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}]
    });
    let (md, ms) = blob(
        layout,
        serde_json::to_vec_pretty(&manifest)
            .expect("json")
            .as_slice(),
    );
    json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms})
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).expect("read")).expect("json")
}

/// The blob file of the first manifest index.json names.
fn first_manifest(layout: &Path) -> PathBuf {
    let index = read_json(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"].as_str().expect("digest");
    layout.join("blobs/sha256").join(&digest[7..])
}

fn with_platform(
    mut desc: serde_json::Value,
    arch: &str,
    variant: Option<&str>,
) -> serde_json::Value {
    let mut p = json!({"architecture": arch, "os": "linux"});
    if let Some(v) = variant {
        p["variant"] = json!(v);
    }
    desc["platform"] = p;
    desc
}

fn write_index(layout: &Path, manifests: Vec<serde_json::Value>, minified: bool) {
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion": "1.0.0"}"#,
    )
    .expect("marker");
    let index = json!({"schemaVersion": 2, "manifests": manifests});
    let text = if minified {
        index.to_string()
    } else {
        serde_json::to_string_pretty(&index).expect("json")
    };
    std::fs::write(layout.join("index.json"), text).expect("index");
}

fn single_layout(arch: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tmp");
    let m = image(d.path(), Some(arch));
    write_index(d.path(), vec![m], false);
    d
}

/// A flat multi-arch index, minified with `platform` before `digest` (the old tool's
/// line-based parser failed on both).
fn multi_layout(arches: &[(&str, Option<&str>)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tmp");
    let mut entries = Vec::new();
    for (a, v) in arches {
        let desc = with_platform(image(d.path(), Some(a)), a, *v);
        // platform first, then the rest: key order must not matter
        let mut reordered = serde_json::Map::new();
        reordered.insert("platform".into(), desc["platform"].clone());
        for (k, val) in desc.as_object().expect("object") {
            if k != "platform" {
                reordered.insert(k.clone(), val.clone());
            }
        }
        entries.push(serde_json::Value::Object(reordered));
    }
    write_index(d.path(), entries, true);
    d
}

/// Unpacks a plan's payload into a fresh dir (what the guest would see).
fn unpack_payload(plan: &ImportPlan) -> tempfile::TempDir {
    let mut bytes = Vec::new();
    plan.payload
        .reader()
        .read_to_end(&mut bytes)
        .expect("payload");
    let out = tempfile::tempdir().expect("tmp");
    tar::Archive::new(&bytes[..])
        .unpack(out.path())
        .expect("unpack");
    out
}

fn payload_config_arch(plan: &ImportPlan) -> String {
    let dir = unpack_payload(plan);
    let index = read_json(&dir.path().join("index.json"));
    assert_eq!(index["manifests"].as_array().expect("list").len(), 1);
    // the reduced layout is valid for the guest arch that runs the image
    let sel = Arch::ALL
        .into_iter()
        .find_map(|arch| layout::select(dir.path(), arch).ok())
        .expect("the reduced layout is valid");
    let cfg = &sel.blobs[1].1;
    let v = read_json(cfg);
    v["architecture"].as_str().unwrap_or("").to_string()
}

#[test]
fn single_arch_layout_becomes_a_skopeo_copy() {
    let d = single_layout("amd64");
    let plan = planned(d.path(), Some("myapp"), &docker_x86());
    assert_eq!(plan.input, InputType::OciLayout);
    assert_eq!(plan.image.as_deref(), Some("myapp:latest"));
    assert_eq!(
        plan.commands,
        vec![vec![
            "skopeo".to_string(),
            "copy".into(),
            "--insecure-policy".into(),
            format!("oci:{GUEST}"),
            "docker-daemon:myapp:latest".into()
        ]]
    );
    assert_eq!(payload_config_arch(&plan), "amd64");
    let podman = planned(d.path(), None, &target(Arch::X86_64, "podman"));
    assert_eq!(
        podman.commands[0].last().map(String::as_str),
        Some("containers-storage:imported:latest")
    );
}

#[test]
fn flat_multi_arch_index_picks_the_target_arch_whatever_the_json_layout() {
    let d = multi_layout(&[("arm64", Some("v8")), ("amd64", None)]);
    let x86 = planned(d.path(), None, &docker_x86());
    assert!(
        x86.notices
            .iter()
            .any(|n| n == "Selected platform: linux/amd64 (from multi-arch image)"),
        "{:?}",
        x86.notices
    );
    assert_eq!(payload_config_arch(&x86), "amd64");
    let arm = planned(d.path(), None, &target(Arch::Aarch64, "docker"));
    assert!(arm.notices.iter().any(|n| n.contains("linux/arm64/v8")));
    assert_eq!(payload_config_arch(&arm), "arm64");
}

#[test]
fn nested_index_blob_is_followed() {
    let d = tempfile::tempdir().expect("tmp");
    let amd = with_platform(image(d.path(), Some("amd64")), "amd64", None);
    let arm = with_platform(image(d.path(), Some("arm64")), "arm64", Some("v8"));
    let nested = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [arm, amd]});
    let (nd, ns) = blob(d.path(), nested.to_string().as_bytes());
    write_index(
        d.path(),
        vec![
            json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": nd, "size": ns,
                    "annotations": {"org.opencontainers.image.ref.name": "latest"}}),
        ],
        false,
    );
    let plan = planned(d.path(), Some("app:1"), &target(Arch::Aarch64, "podman"));
    assert_eq!(payload_config_arch(&plan), "arm64");
    // the nested index blob itself is not sent: the guest sees one manifest
    let out = unpack_payload(&plan);
    assert!(!out.path().join("blobs/sha256").join(&nd[7..]).exists());
}

#[test]
fn missing_platform_lists_what_is_there_with_our_arch_names() {
    let d = multi_layout(&[("arm64", Some("v8")), ("arm", Some("v7"))]);
    let e = refused(d.path(), None, &docker_x86());
    assert!(
        e.contains("Architecture x86_64 (amd64) not found in multi-arch image"),
        "{e}"
    );
    assert!(
        e.contains("Available platforms: linux/arm64/v8, linux/arm/v7"),
        "{e}"
    );
    assert!(e.contains("Use --arch aarch64"), "{e}");
    assert!(!e.contains("--arch arm64"), "{e}");
}

#[test]
fn single_arch_image_for_another_arch_is_refused_naming_both() {
    let d = single_layout("arm64");
    let e = refused(d.path(), None, &docker_x86());
    assert!(e.contains("Architecture mismatch"), "{e}");
    assert!(e.contains("aarch64 (arm64)"), "{e}");
    assert!(e.contains("target is x86_64 (amd64)"), "{e}");
    assert!(e.contains("Use --arch aarch64"), "{e}");
    let d = single_layout("riscv64");
    let e = refused(d.path(), None, &docker_x86());
    assert!(
        e.contains("riscv64") && e.contains("No guest architecture"),
        "{e}"
    );
}

#[test]
fn thirty_two_bit_images_go_to_the_guest_that_runs_them() {
    // native first: an index with arm64 and arm/v7 gives arm64, without an ambiguity warning
    let d = multi_layout(&[("arm", Some("v7")), ("arm64", Some("v8")), ("amd64", None)]);
    let arm = planned(d.path(), None, &target(Arch::Aarch64, "docker"));
    assert_eq!(payload_config_arch(&arm), "arm64");
    assert!(
        !arm.notices.iter().any(|n| n.contains("manifests match")),
        "{:?}",
        arm.notices
    );
    // an index without arm64: its arm/v7 image (v7 before v6) runs on the aarch64 guest
    let d = multi_layout(&[("arm", Some("v6")), ("arm", Some("v7")), ("amd64", None)]);
    let arm = planned(d.path(), None, &target(Arch::Aarch64, "podman"));
    assert!(
        arm.notices.iter().any(|n| n.contains("linux/arm/v7")),
        "{:?}",
        arm.notices
    );
    assert_eq!(payload_config_arch(&arm), "arm");
    // single-arch 32-bit images: arm on aarch64, 386 on x86_64
    let d = single_layout("arm");
    let plan = planned(d.path(), None, &target(Arch::Aarch64, "docker"));
    assert_eq!(payload_config_arch(&plan), "arm");
    let d = single_layout("386");
    let plan = planned(d.path(), None, &docker_x86());
    assert_eq!(payload_config_arch(&plan), "386");
    // but not across: arm on x86_64 names both arches and the guest that runs it
    let d = single_layout("arm");
    let e = refused(d.path(), None, &docker_x86());
    assert!(e.contains("Architecture mismatch"), "{e}");
    assert!(e.contains("target is x86_64 (amd64)"), "{e}");
    assert!(e.contains("Use --arch aarch64"), "{e}");
}

#[test]
fn image_without_architecture_warns_and_continues() {
    let d = tempfile::tempdir().expect("tmp");
    let m = image(d.path(), None);
    write_index(d.path(), vec![m], true);
    let plan = planned(d.path(), None, &docker_x86());
    assert!(plan
        .notices
        .iter()
        .any(|n| n.contains("Could not determine image architecture")));
}

#[test]
fn corrupted_or_missing_blobs_are_refused_before_anything_runs() {
    let d = single_layout("amd64");
    let manifest = read_json(&first_manifest(d.path()));
    let layer = manifest["layers"][0]["digest"].as_str().expect("layer");
    let layer_path = d.path().join("blobs/sha256").join(&layer[7..]);
    let mut data = std::fs::read(&layer_path).expect("layer");
    data[0] ^= 0xff;
    std::fs::write(&layer_path, &data).expect("corrupt");
    let e = refused(d.path(), None, &docker_x86());
    assert!(e.contains("layer 1") && e.contains("content digest"), "{e}");
    std::fs::remove_file(&layer_path).expect("rm");
    let e = refused(d.path(), None, &docker_x86());
    assert!(e.contains("is missing"), "{e}");
}

#[test]
fn hostile_digests_and_escaping_symlinks_are_refused() {
    let d = tempfile::tempdir().expect("tmp");
    write_index(
        d.path(),
        vec![
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "sha256:../../../../etc/passwd", "size": 10}),
        ],
        false,
    );
    let e = refused(d.path(), None, &docker_x86());
    assert!(e.contains("invalid blob digest"), "{e}");

    // a blob that is a symlink to a file outside the layout
    let d = single_layout("amd64");
    let outside = tempfile::NamedTempFile::new().expect("tmp");
    let mpath = first_manifest(d.path());
    std::fs::copy(&mpath, outside.path()).expect("copy");
    std::fs::remove_file(&mpath).expect("rm");
    std::os::unix::fs::symlink(outside.path(), &mpath).expect("symlink");
    let e = refused(d.path(), None, &docker_x86());
    assert!(e.contains("outside the layout"), "{e}");
}

#[test]
fn several_untagged_platformless_images_are_ambiguous() {
    let d = tempfile::tempdir().expect("tmp");
    let a = image(d.path(), Some("amd64"));
    let mut b = image(d.path(), Some("arm64"));
    b["annotations"] = json!({"org.opencontainers.image.ref.name": "other"});
    write_index(d.path(), vec![a, b], false);
    let e = refused(d.path(), None, &docker_x86());
    assert!(e.contains("holds 2 images") && e.contains("other"), "{e}");
}

fn tar_dir(dir: &Path, out: &Path, compress: &str, prefix: &str) {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(prefix, dir).expect("tar");
    let raw = b.into_inner().expect("tar");
    let data = match compress {
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&raw).expect("gz");
            e.finish().expect("gz")
        }
        "zst" => zstd::encode_all(&raw[..], 1).expect("zstd"),
        _ => raw,
    };
    std::fs::write(out, data).expect("write");
}

#[test]
fn oci_archive_plain_gzip_and_zstd_are_unpacked_and_reduced() {
    let d = multi_layout(&[("amd64", None), ("arm64", Some("v8"))]);
    let work = tempfile::tempdir().expect("tmp");
    for (ext, prefix) in [("", "."), ("gz", ""), ("zst", ".")] {
        let file = work.path().join(format!("img.tar{ext}"));
        tar_dir(d.path(), &file, ext, prefix);
        let plan = planned(&file, Some("app:2"), &target(Arch::Aarch64, "docker"));
        assert_eq!(plan.input, InputType::OciArchive, "{ext}");
        assert_eq!(payload_config_arch(&plan), "arm64");
        assert_eq!(plan.commands[0][4], "docker-daemon:app:2");
    }
}

#[test]
fn oci_archive_with_path_escapes_or_links_is_refused() {
    let work = tempfile::tempdir().expect("tmp");
    let escape = work.path().join("escape.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&escape).expect("create"));
        append_file(&mut b, "oci-layout", b"{}");
        append_file(&mut b, "index.json", b"{}");
        // a raw header whose name climbs out (tar::Builder refuses to write '..')
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..13].copy_from_slice(b"../../escaped");
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &b"x"[..]).expect("append raw");
        b.finish().expect("finish");
    }
    let e = refused(&escape, None, &docker_x86());
    assert!(
        e.contains("refusing unsafe entry") && e.contains(".."),
        "{e}"
    );
    assert!(!work.path().join("escaped").exists());

    let link = work.path().join("link.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&link).expect("create"));
        append_file(&mut b, "index.json", b"{}");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "oci-layout", "/etc/passwd")
            .expect("link");
        b.finish().expect("finish");
    }
    let e = refused(&link, None, &docker_x86());
    assert!(e.contains("Symlink entries do not belong"), "{e}");
}

/// A `docker save` style archive: manifest.json, repositories, config and layer.
fn docker_archive(out: &Path, arch: &str, tags: Option<Vec<&str>>) -> String {
    let config = json!({"architecture": arch, "os": "linux"}).to_string();
    let id = sha256_digest(config.as_bytes());
    let cfg_name = format!("{}.json", &id[7..]);
    let manifest =
        json!([{"Config": cfg_name, "RepoTags": tags, "Layers": ["l/layer.tar"]}]).to_string();
    let mut b = tar::Builder::new(std::fs::File::create(out).expect("create"));
    let layer = layer_tar("docker");
    for (name, data) in [
        ("l/layer.tar", layer.as_slice()),
        (cfg_name.as_str(), config.as_bytes()),
        ("repositories", b"{}"),
        ("manifest.json", manifest.as_bytes()),
    ] {
        append_file(&mut b, name, data);
    }
    b.finish().expect("finish");
    id
}

#[test]
fn docker_archive_is_loaded_and_tagged_only_when_asked() {
    let work = tempfile::tempdir().expect("tmp");
    let file = work.path().join("saved.tar");
    let id = docker_archive(&file, "amd64", Some(vec!["busybox:1"]));
    let keep = planned(&file, None, &docker_x86());
    assert_eq!(keep.input, InputType::DockerArchive);
    assert_eq!(
        keep.commands,
        vec![vec![
            "docker".to_string(),
            "load".into(),
            "-i".into(),
            format!("{GUEST}/image.tar")
        ]]
    );
    assert_eq!(keep.image, None);
    let named = planned(&file, Some("mine:2"), &target(Arch::X86_64, "podman"));
    assert_eq!(
        named.commands[1],
        vec![
            "podman".to_string(),
            "tag".into(),
            id.clone(),
            "mine:2".into()
        ]
    );
    let untagged = work.path().join("untagged.tar");
    docker_archive(&untagged, "amd64", None);
    let p = planned(&untagged, None, &docker_x86());
    assert_eq!(p.image.as_deref(), Some("imported:latest"));

    let arm = work.path().join("arm.tar");
    docker_archive(&arm, "arm64", Some(vec!["x:1"]));
    let e = refused(&arm, None, &docker_x86());
    assert!(
        e.contains("Architecture mismatch") && e.contains("--arch aarch64"),
        "{e}"
    );
}

#[test]
fn rootfs_tarballs_in_any_compression_are_imported() {
    let src = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(src.path().join("bin")).expect("mkdir");
    std::fs::write(src.path().join("bin/sh"), b"#!").expect("write");
    let work = tempfile::tempdir().expect("tmp");
    for ext in ["", "gz", "zst"] {
        let file = work.path().join(format!("rootfs.tar{ext}"));
        tar_dir(src.path(), &file, ext, ".");
        let plan = planned(&file, Some("rfs:1"), &docker_x86());
        assert_eq!(plan.input, InputType::RootfsTar, "{ext}");
        assert_eq!(
            plan.commands,
            vec![vec![
                "docker".to_string(),
                "import".into(),
                format!("{GUEST}/rootfs.tar"),
                "rfs:1".into()
            ]]
        );
        // the file is sent as it is (the runtime decompresses)
        let out = unpack_payload(&plan);
        assert_eq!(
            std::fs::read(out.path().join("rootfs.tar")).expect("sent"),
            std::fs::read(&file).expect("orig")
        );
    }
    // a rootfs that happens to hold an index.json at its top is still a rootfs
    std::fs::write(src.path().join("index.json"), b"{\"site\": 1}").expect("write");
    let web = work.path().join("web.tar");
    tar_dir(src.path(), &web, "", ".");
    let plan = planned(&web, None, &docker_x86());
    assert_eq!(plan.input, InputType::RootfsTar);
    let junk = work.path().join("junk.bin");
    std::fs::write(&junk, vec![1u8; 100]).expect("write");
    let e = refused(&junk, None, &docker_x86());
    assert!(e.contains("not a readable tar archive"), "{e}");
}

#[test]
fn rootfs_dir_is_packed_with_dotfiles_and_symlinks() {
    let src = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(src.path().join("bin")).expect("mkdir");
    std::fs::write(src.path().join("bin/busybox"), b"bb").expect("write");
    std::os::unix::fs::symlink("busybox", src.path().join("bin/sh")).expect("link");
    std::fs::write(src.path().join(".hidden"), b"h").expect("write");
    nix::unistd::mkfifo(
        &src.path().join("bin/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    let plan = planned(src.path(), None, &target(Arch::X86_64, "podman"));
    assert_eq!(plan.input, InputType::RootfsDir);
    assert_eq!(
        plan.commands[0][..2],
        ["podman".to_string(), "import".into()]
    );
    assert_eq!(plan.image.as_deref(), Some("imported:latest"));
    let out = unpack_payload(&plan);
    let mut a = tar::Archive::new(std::fs::File::open(out.path().join("rootfs.tar")).expect("tar"));
    let mut names: Vec<(String, bool)> = a
        .entries()
        .expect("entries")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.path().expect("path").display().to_string(),
                e.header().entry_type().is_symlink(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            (".hidden".to_string(), false),
            ("bin".to_string(), false),
            ("bin/busybox".to_string(), false),
            ("bin/fifo".to_string(), false),
            ("bin/sh".to_string(), true)
        ]
    );
    let empty = tempfile::tempdir().expect("tmp");
    let e = refused(empty.path(), None, &docker_x86());
    assert!(e.contains("empty"), "{e}");
}

#[test]
fn deploy_dir_with_oci_dirs_gets_the_list_and_an_example() {
    let d = tempfile::tempdir().expect("tmp");
    for n in ["zeta-latest-oci", "app-container-oci"] {
        std::fs::create_dir_all(d.path().join(n)).expect("mkdir");
    }
    std::fs::write(d.path().join("notes-oci"), b"file, not a dir").expect("write");
    let e = refused(d.path(), None, &docker_x86());
    let p = d.path().display();
    assert_eq!(
        e,
        format!(
            "Directory is not an OCI container: {p}\nFound OCI directories inside. Did you mean one of these?\n  app-container-oci\n  zeta-latest-oci\nExample: vdkr vimport {p}/app-container-oci myimage:latest"
        )
    );
}

#[test]
fn arguments_and_names_are_checked_first() {
    let missing = PathBuf::from("/nonexistent/vimport/x");
    let e = refused(&missing, None, &docker_x86());
    assert_eq!(e, "Not found: /nonexistent/vimport/x");
    let d = single_layout("amd64");
    let e = refused(d.path(), Some("Bad Name"), &docker_x86());
    assert!(e.contains("invalid image name"), "{e}");

    let s = |w: &[&str]| w.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(parse_args(&[])
        .expect_err("none")
        .to_string()
        .contains("vimport: requires <path> [name:tag]"));
    assert_eq!(
        parse_args(&s(&["--help"])).expect("help"),
        VimportArgs::Help
    );
    assert_eq!(
        parse_args(&s(&["./x-oci", "a:1"])).expect("ok"),
        VimportArgs::Import(ImportRequest {
            path: "./x-oci".into(),
            name: Some("a:1".into())
        })
    );
    assert!(parse_args(&s(&["a", "b", "c"])).is_err());
    assert!(parse_args(&s(&["--bogus", "a"])).is_err());
}

#[test]
fn batch_syntax_survives_colons_in_paths_and_registry_ports() {
    let root = tempfile::tempdir().expect("tmp");
    let odd = root.path().join("dir:with:colons-oci");
    std::fs::create_dir_all(&odd).expect("mkdir");
    let plain = root.path().join("app-oci");
    std::fs::create_dir_all(&plain).expect("mkdir");
    let args: Vec<String> = vec![
        "--output".into(),
        "/tmp/out.tar".into(),
        "--image".into(),
        format!("{}=reg:5000/app:1", odd.display()),
        format!("--image={}=b", plain.display()),
        format!("{}:10.0.2.2:5000/yocto/app:2", plain.display()),
        format!("{}:legacy:tag", odd.display()),
    ];
    let parsed = batch::parse_args(&args).expect("parse");
    assert_eq!(parsed.output.as_deref(), Some(Path::new("/tmp/out.tar")));
    let got: Vec<(PathBuf, Option<String>)> = parsed
        .images
        .into_iter()
        .map(|r| (r.path, r.name))
        .collect();
    assert_eq!(
        got,
        vec![
            (odd.clone(), Some("reg:5000/app:1".into())),
            (plain.clone(), Some("b".into())),
            (plain.clone(), Some("10.0.2.2:5000/yocto/app:2".into())),
            (odd.clone(), Some("legacy:tag".into())),
        ]
    );
    let e = batch::parse_args(&["/no/such:app:1".to_string()]).expect_err("no dir");
    assert!(e.to_string().contains("--image PATH=NAME:TAG"), "{e}");
    assert!(batch::parse_args(&[]).is_err());
}

#[test]
fn batch_plans_every_image_before_anything_runs() {
    let a = single_layout("amd64");
    let b = multi_layout(&[("amd64", None), ("arm64", None)]);
    let bad = single_layout("arm64");
    let images = vec![req(a.path(), Some("a:1")), req(b.path(), Some("b:1"))];
    let plans = batch::plan_batch(&images, &docker_x86(), "/run/vcontainer/batch").expect("plans");
    assert_eq!(plans.len(), 2);
    assert_eq!(plans[1].guest_dir, "/run/vcontainer/batch/1");
    assert_eq!(plans[1].commands[0][3], "oci:/run/vcontainer/batch/1");
    let mut with_bad = images.clone();
    with_bad.push(req(bad.path(), Some("c:1")));
    let e = batch::plan_batch(&with_bad, &docker_x86(), "/b").expect_err("bad one");
    assert!(e.to_string().contains("Architecture mismatch"), "{e}");
}

/// The real consumer accepts the reduced layout (skipped where skopeo is not installed).
#[test]
fn reduced_layout_is_accepted_by_skopeo() {
    if std::process::Command::new("skopeo")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: skopeo not installed");
        return;
    }
    let d = multi_layout(&[("arm64", Some("v8")), ("amd64", None)]);
    let plan = planned(d.path(), None, &docker_x86());
    let out = unpack_payload(&plan);
    let copy = tempfile::tempdir().expect("tmp");
    let status = std::process::Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet"])
        .arg(format!("oci:{}", out.path().display()))
        .arg(format!("oci:{}:copied", copy.path().display()))
        .output()
        .expect("run skopeo");
    assert!(
        status.status.success(),
        "skopeo refused the reduced layout: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

#[test]
fn reduced_index_keeps_every_field_of_the_chosen_entry() {
    // oci-spec's Descriptor drops fields it does not know; the copy must not
    let d = tempfile::tempdir().expect("tmp");
    let mut amd = with_platform(image(d.path(), Some("amd64")), "amd64", None);
    amd["artifactType"] = json!("application/x.test");
    amd["urls"] = json!(["https://example.invalid/blob"]);
    amd["annotations"] = json!({"org.opencontainers.image.ref.name": "v1", "x.keep": "yes"});
    amd["x-vendor"] = json!({"nested": [1, 2]});
    let arm = with_platform(image(d.path(), Some("arm64")), "arm64", Some("v8"));
    write_index(d.path(), vec![arm, amd.clone()], false);
    let plan = planned(d.path(), None, &docker_x86());
    let out = unpack_payload(&plan);
    let index = read_json(&out.path().join("index.json"));
    assert_eq!(index["manifests"].as_array().expect("list").len(), 1);
    assert_eq!(index["manifests"][0], amd, "the entry is copied whole");
}
