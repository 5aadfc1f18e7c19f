//! A third runtime, added without any change under `core/` (issue 16): the test-only `toy`
//! plugin (tests/toy-runtime, docs/plugins.md) is installed on the plugin path as any
//! user's plugin would be, its blobs found through its own `VTOY_BLOB_DIR`, and it runs
//! containers in the real guest under its own tool name, state dir and grammar. If the
//! core switched on "docker"/"podman" anywhere a command passes, this runtime would fail.

use std::path::{Path, PathBuf};
use std::process::Output;

use vcontainer_tests::fixtures::BusyboxLayouts;
use vcontainer_tests::{blob_root, stderr, stdout, target_bin_dir, vm_or_skip, World};

/// The toy plugin's library as cargo builds it (`make test` builds the workspace first).
const BUILT: &str = "libtoy_runtime.so";
/// The name the plugin search looks for.
const INSTALLED: &str = "libvcontainer_runtime_toy.so";

/// A world where `vtoy` is a tool: the plugin installed in a private plugin dir next to the
/// shipped ones, and a `toy` blob set made of the podman guest's files (the toy runtime
/// drives podman) with its own blobs.json.
struct ToyWorld {
    world: World,
    plugins: PathBuf,
    blobs: PathBuf,
}

impl ToyWorld {
    fn new() -> Result<Self, String> {
        let built = target_bin_dir().join(BUILT);
        if !built.is_file() {
            return Err(format!(
                "{} is missing (cargo build --workspace builds it)",
                built.display()
            ));
        }
        let world = World::new();
        let plugins = world.home.path().join("plugins");
        std::fs::create_dir_all(&plugins).map_err(|e| e.to_string())?;
        std::fs::copy(&built, plugins.join(INSTALLED)).map_err(|e| e.to_string())?;
        let podman = blob_root().join("x86_64/podman");
        let blobs = world.home.path().join("blobs");
        let toy = blobs.join("x86_64/toy");
        std::fs::create_dir_all(&toy).map_err(|e| e.to_string())?;
        for entry in std::fs::read_dir(&podman).map_err(|e| e.to_string())? {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = entry.file_name();
            if name != "blobs.json" {
                std::os::unix::fs::symlink(entry.path(), toy.join(&name))
                    .map_err(|e| e.to_string())?;
            }
        }
        let meta = std::fs::read(podman.join("blobs.json")).map_err(|e| e.to_string())?;
        let mut meta: serde_json::Value =
            serde_json::from_slice(&meta).map_err(|e| e.to_string())?;
        meta["runtime"] = "toy".into();
        std::fs::write(toy.join("blobs.json"), meta.to_string()).map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink(target_bin_dir().join("vcontainer"), world.bin.join("vtoy"))
            .map_err(|e| e.to_string())?;
        Ok(ToyWorld {
            world,
            plugins,
            blobs,
        })
    }

    fn run(&self, args: &[&str]) -> Output {
        let path =
            std::env::join_paths([target_bin_dir(), self.plugins.clone()]).expect("plugin path");
        self.world
            .cmd("vtoy")
            .env("VCONTAINER_PLUGIN_PATH", path)
            .env_remove("VCONTAINER_BLOB_DIR")
            .env("VTOY_BLOB_DIR", &self.blobs)
            .args(args)
            .output()
            .expect("spawn vtoy")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "vtoy {args:?}: stdout {} stderr {}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    fn home(&self) -> &Path {
        self.world.home.path()
    }
}

/// Stops the memres VM however the test ends.
struct Stop<'a>(&'a ToyWorld);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["memres", "stop"]);
    }
}

#[test]
fn a_third_runtime_plugin_runs_containers_with_no_change_to_the_core() {
    vm_or_skip!("podman");
    let toy = match ToyWorld::new() {
        Ok(t) => t,
        Err(e) => return vcontainer_tests::skip(e),
    };
    let layouts = match BusyboxLayouts::new() {
        Ok(l) => l,
        Err(e) => return vcontainer_tests::skip(e),
    };
    let rootfs = layouts.rootfs_dir().expect("busybox rootfs dir");

    // the plugin is listed under its own name, and its grammar is its own: no VM needed
    let listed = toy.ok(&["plugins"]);
    assert!(listed.contains("toy"), "{listed}");
    // its commands are the ones its spec declares: help lists them (and not docker's), the
    // front refuses another name, and its planner refuses a declared one used wrongly
    let help = toy.ok(&["--help"]);
    assert!(help.contains("List the images"), "{help}");
    assert!(!help.contains("pause"), "{help}");
    let bad = toy.run(&["ps", "-a"]);
    assert_eq!(bad.status.code(), Some(125), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("unknown command 'ps'"),
        "{}",
        stderr(&bad)
    );
    let bad = toy.run(&["images", "--all"]);
    assert_eq!(bad.status.code(), Some(125), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("toy images (no options)"),
        "{}",
        stderr(&bad)
    );

    toy.ok(&["memres", "start"]);
    let _stop = Stop(&toy);
    toy.ok(&["vimport", rootfs.to_str().expect("utf-8"), "bb:1"]);
    assert_eq!(toy.ok(&["run", "bb:1", "uname", "-m"]).trim(), "x86_64");
    let images = toy.ok(&["images"]);
    assert!(images.lines().any(|l| l.ends_with("bb:1")), "{images}");

    // its own state dir and state disk, named by its plugin; nothing of the shipped tools
    let state = toy.home().join(".vtoy/x86_64");
    assert!(state.join("toy-state.img").is_file(), "{}", state.display());
    assert!(!toy.home().join(".vpdmn").exists());
    assert!(!toy.home().join(".vdkr").exists());

    // the blobs came through VTOY_BLOB_DIR (the plugin's env prefix): doctor says so
    let doctor = stdout(&toy.run(&["doctor"]));
    let toy_blobs = toy.blobs.join("x86_64/toy").display().to_string();
    assert!(
        doctor
            .lines()
            .any(|l| l.contains("blobs:") && l.contains(&toy_blobs) && l.contains("VTOY_BLOB_DIR")),
        "{doctor}"
    );
}
