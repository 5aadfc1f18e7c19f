//! vimport and vimport-batch end to end (issue 4 items 2 and 6): every input type into the
//! real guest runtime, then run; arch problems reported before anything boots; a batch
//! of OCI layouts into one storage tar in one VM boot, which a later command starts from.

use std::path::Path;

use vcontainer_tests::fixtures::{BusyboxLayouts, MemresGuard};
use vcontainer_tests::{pids_matching, stderr, stdout, vm_or_skip, World};

const TOOLS: [(&str, &str); 2] = [("vpdmn", "podman"), ("vdkr", "docker")];

fn layouts() -> Option<BusyboxLayouts> {
    match BusyboxLayouts::new() {
        Ok(l) => Some(l),
        Err(e) => {
            vcontainer_tests::skip(e);
            None
        }
    }
}

fn ok(w: &World, tool: &str, args: &[&str]) -> (String, String) {
    let o = w.run(tool, args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{tool} {args:?}: stdout {} stderr {}",
        stdout(&o),
        stderr(&o)
    );
    (stdout(&o), stderr(&o))
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Input errors need no VM: they come back at once, exit 125, and nothing was started.
#[test]
fn input_errors_are_reported_before_any_vm_starts() {
    let Some(l) = layouts() else { return };
    let deploy = l.dir.path().join("deploy");
    std::fs::create_dir_all(deploy.join("app-latest-oci")).expect("mkdir");
    std::fs::create_dir_all(deploy.join("base-oci")).expect("mkdir");
    let arm_only = l
        .multi("armonly", &["arm64", "arm"], false)
        .expect("layout");
    let arm_single = l.single("armsingle", "arm64").expect("layout");
    for (tool, _) in TOOLS {
        let w = World::new();
        let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
            (
                vec!["vimport", "/nonexistent/x-oci"],
                vec!["Not found: /nonexistent/x-oci".into()],
            ),
            (
                vec!["vimport", p(&deploy), "x:1"],
                vec![
                    format!("Directory is not an OCI container: {}", deploy.display()),
                    "Did you mean one of these?\n  app-latest-oci\n  base-oci".into(),
                    format!(
                        "Example: {tool} vimport {}/app-latest-oci myimage:latest",
                        deploy.display()
                    ),
                ],
            ),
            (
                vec!["--arch", "x86_64", "vimport", p(&arm_only)],
                vec![
                    "Architecture x86_64 (amd64) not found in multi-arch image".into(),
                    "Available platforms: linux/arm64/v8, linux/arm".into(),
                    "Use --arch aarch64".into(),
                ],
            ),
            (
                vec!["--arch", "x86_64", "vimport", p(&arm_single), "a:1"],
                vec![
                    "Architecture mismatch".into(),
                    "aarch64 (arm64)".into(),
                    "Use --arch aarch64".into(),
                ],
            ),
            (
                vec!["vimport", p(&arm_single), "Bad Name"],
                vec!["invalid image name 'Bad Name'".into()],
            ),
            (vec!["vimport"], vec!["requires <path> [name:tag]".into()]),
        ];
        for (args, wants) in cases {
            let o = w.run(tool, &args);
            assert_eq!(
                o.status.code(),
                Some(125),
                "{tool} {args:?}: {}",
                stderr(&o)
            );
            let err = stderr(&o);
            for want in wants {
                assert!(
                    err.contains(&want),
                    "{tool} {args:?}: missing {want:?} in:\n{err}"
                );
            }
        }
        let home = w.home.path().display().to_string();
        assert!(
            pids_matching(&home).is_empty(),
            "{tool}: a process was started for input errors"
        );
    }
}

/// Every input type, imported into a memres VM and run.
#[test]
fn every_input_type_imports_and_runs() {
    let Some(l) = layouts() else { return };
    let single = l.single("single", "amd64").expect("single");
    let flat = l.multi("flat", &["arm64", "amd64"], false).expect("flat");
    let nested = l
        .multi("nested", &["amd64", "arm64"], true)
        .expect("nested");
    let oci_archive = l.oci_archive(&single, "single").expect("oci-archive");
    let docker_archive = l.docker_archive(&single, "dock:1").expect("docker-archive");
    let rootfs_tar = l.rootfs_tar();
    let rootfs_gz = l.rootfs_tar_gz().expect("gz");
    let rootfs_dir = l.rootfs_dir().expect("dir");
    for (tool, runtime) in TOOLS {
        vm_or_skip!(runtime);
        let w = World::new();
        ok(&w, tool, &["memres", "start"]);
        let _stop = MemresGuard::new(&w, tool);
        let inputs: [(&Path, Option<&str>, &str, Option<&str>); 8] = [
            (&single, Some("single:1"), "single:1", None),
            (
                &flat,
                Some("flat:1"),
                "flat:1",
                Some("Selected platform: linux/amd64 (from multi-arch image)"),
            ),
            (
                &nested,
                Some("nested:1"),
                "nested:1",
                Some("Selected platform: linux/amd64"),
            ),
            (&oci_archive, Some("ociarch:1"), "ociarch:1", None),
            // a docker archive keeps its own tag when no name is given
            (&docker_archive, None, "dock:1", None),
            (&rootfs_tar, Some("rootfs:1"), "rootfs:1", None),
            (&rootfs_gz, Some("rootfsgz:1"), "rootfsgz:1", None),
            (&rootfs_dir, None, "imported:latest", None),
        ];
        for (path, name, image, notice) in inputs {
            let mut args = vec!["vimport", p(path)];
            args.extend(name);
            let (_, err) = ok(&w, tool, &args);
            if let Some(n) = notice {
                assert!(err.contains(n), "{tool} {args:?}: no {n:?} in {err}");
            }
            let (out, _) = ok(&w, tool, &["vrun", image, "/bin/echo", "imported-ok"]);
            assert_eq!(out.trim(), "imported-ok", "{tool} {image}");
        }
        let (images, _) = ok(&w, tool, &["images"]);
        for repo in [
            "single", "flat", "nested", "ociarch", "dock", "rootfs", "imported",
        ] {
            assert!(images.contains(repo), "{tool}: {repo} missing in\n{images}");
        }
        ok(&w, tool, &["memres", "stop"]);
    }
}

/// The container-cross-install path: many layouts, one boot, one storage tar; a second
/// command starts from that tar and sees the images.
#[test]
fn vimport_batch_exports_one_storage_tar() {
    let Some(l) = layouts() else { return };
    let a = l.single("a", "amd64").expect("a");
    let b = l.multi("b", &["arm64", "amd64"], false).expect("b");
    let bad = l.single("bad", "arm64").expect("bad");
    for (tool, runtime) in TOOLS {
        let w = World::new();
        let out = w.home.path().join("storage.tar");
        // a bad entry fails the whole batch before anything boots, and writes nothing
        let o = w.run(
            tool,
            [
                "--no-daemon",
                "vimport-batch",
                "--output",
                p(&out),
                "--image",
                &format!("{}=a:1", a.display()),
                "--image",
                &format!("{}=bad:1", bad.display()),
            ],
        );
        assert_eq!(o.status.code(), Some(125), "{tool}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("Architecture mismatch"),
            "{}",
            stderr(&o)
        );
        assert!(!out.exists());

        vm_or_skip!(runtime);
        let (_, err) = ok(
            &w,
            tool,
            &[
                "--no-daemon",
                "vimport-batch",
                "--output",
                p(&out),
                "--image",
                &format!("{}=batch-a:1", a.display()),
                // the old vrunner.sh form still works
                &format!("{}:batch-b:2", b.display()),
            ],
        );
        assert!(err.contains("storage exported"), "{err}");
        let listing = std::process::Command::new("tar")
            .arg("-tf")
            .arg(&out)
            .output()
            .expect("tar -tf");
        let listing = String::from_utf8_lossy(&listing.stdout);
        match runtime {
            "docker" => assert!(
                listing.lines().any(|l| l.starts_with("docker/image/")),
                "{listing}"
            ),
            _ => assert!(listing.lines().any(|l| l.starts_with("./")), "{listing}"),
        }
        let w2 = World::new();
        let (images, _) = ok(
            &w2,
            tool,
            &["--no-daemon", "--input-storage", p(&out), "images"],
        );
        assert!(
            images.contains("batch-a") && images.contains("batch-b"),
            "{tool}:\n{images}"
        );
    }
}
