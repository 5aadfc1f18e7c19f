//! `vcontainer image build` end to end (issue 5, item 3): images built from a busybox rootfs
//! by each backend plugin are imported into the real guest runtime and run there, and the
//! settings given at build time (cmd, env, workdir) are what the container sees.

use std::path::{Path, PathBuf};

use vcontainer_tests::fixtures::{BusyboxLayouts, MemresGuard};
use vcontainer_tests::{stderr, stdout, vm_or_skip, World};

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
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

/// The busybox rootfs as a directory, or None (skip) when busybox-static/umoci are missing.
fn rootfs() -> Option<(BusyboxLayouts, PathBuf)> {
    let layouts = match BusyboxLayouts::new() {
        Ok(l) => l,
        Err(e) => {
            vcontainer_tests::skip(e);
            return None;
        }
    };
    let dir = layouts.rootfs_dir().expect("rootfs dir");
    Some((layouts, dir))
}

/// `vcontainer image build --backend BACKEND` of the busybox rootfs: the default command
/// prints an env var and the working dir, so a run shows the config reached the runtime.
fn build(w: &World, backend: &str, rootfs: &Path, out: &Path) {
    ok(
        w,
        "vcontainer",
        &[
            "image",
            "build",
            "--backend",
            backend,
            "--rootfs",
            p(rootfs),
            "--output",
            p(out),
            "--tag",
            "v1",
            "--arch",
            "x86_64",
            "--env",
            &format!("BUILT_BY={backend}"),
            "--workdir",
            "/tmp",
            "--cmd",
            "/bin/sh -c 'echo built by $BUILT_BY in $(pwd)'",
        ],
    );
    assert!(out.join("index.json").is_file(), "{}", out.display());
}

/// Imports the layout as `name`, runs it with its own command, then with a command that
/// exits 3: the output and the exit code come back from the guest.
fn import_and_run(w: &World, tool: &str, backend: &str, layout: &Path, name: &str) {
    ok(w, tool, &["vimport", p(layout), name]);
    let (out, _) = ok(w, tool, &["run", "--rm", name]);
    assert_eq!(
        out.trim(),
        format!("built by {backend} in /tmp"),
        "{tool} {backend}"
    );
    let o = w.run(tool, ["vrun", name, "/bin/sh", "-c", "echo bye; exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{tool} {backend}: {}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "bye", "{tool} {backend}");
}

#[test]
fn podman_runs_images_built_by_both_backends() {
    vm_or_skip!("podman");
    let Some((layouts, rootfs)) = rootfs() else {
        return;
    };
    let w = World::new();
    let mut built = Vec::new();
    for backend in ["umoci", "sloci"] {
        let out = layouts.dir.path().join(format!("{backend}-oci"));
        build(&w, backend, &rootfs, &out);
        built.push((backend, out));
    }
    ok(&w, "vpdmn", &["memres", "start"]);
    let _stop = MemresGuard::new(&w, "vpdmn");
    for (backend, out) in &built {
        import_and_run(&w, "vpdmn", backend, out, &format!("built-{backend}:v1"));
    }
    ok(&w, "vpdmn", &["memres", "stop"]);
}

#[test]
fn docker_runs_an_image_built_by_the_umoci_backend() {
    vm_or_skip!("docker");
    let Some((layouts, rootfs)) = rootfs() else {
        return;
    };
    let w = World::new();
    let out = layouts.dir.path().join("umoci-oci");
    build(&w, "umoci", &rootfs, &out);
    ok(&w, "vdkr", &["memres", "start"]);
    let _stop = MemresGuard::new(&w, "vdkr");
    import_and_run(&w, "vdkr", "umoci", &out, "built-umoci:v1");
    ok(&w, "vdkr", &["memres", "stop"]);
}
