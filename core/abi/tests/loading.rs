//! Proves every loader outcome with real shared libraries: the fixture plugins under
//! tests/fixtures are built once per test run with `cargo build` into <target>/fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use vcontainer_abi::backend::{BuildRequest, IndexRequest, UnpackRequest};
use vcontainer_abi::host::{discover, load_all, load_plugin, LoadError};
use vcontainer_abi::runtime::CommandClass;
use vcontainer_abi::{PluginErrorKind, PluginKind, INTERFACE_VERSION};

/// The main target dir: this test binary lives in <target>/<profile>/deps/.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.ancestors()
        .nth(3)
        .expect("test binary is inside <target>/<profile>/deps")
        .to_path_buf()
}

/// Builds the fixture workspace (once) and returns the directory holding the .so files.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/Cargo.toml");
        let target = target_dir().join("fixtures");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let status = Command::new(cargo)
            .arg("build")
            .arg("--quiet")
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .status()
            .expect("run cargo for the fixtures");
        assert!(status.success(), "building the fixture plugins failed");
        target.join("debug")
    })
}

fn fixture(name: &str) -> PathBuf {
    let path = fixtures().join(format!("libvcontainer_fixture_{name}.so"));
    assert!(path.exists(), "fixture {} was not built", path.display());
    path
}

/// Copies fixture `name` into `dir` under `file_name` (discovery looks at file names).
fn place(dir: &Path, name: &str, file_name: &str) -> PathBuf {
    let dest = dir.join(file_name);
    std::fs::copy(fixture(name), &dest).expect("copy fixture");
    dest
}

#[test]
fn valid_runtime_plugin_loads_and_works_across_the_boundary() {
    let plugin = load_plugin(&fixture("valid")).expect("valid plugin loads");
    assert_eq!(plugin.kind, PluginKind::Runtime);
    assert_eq!(plugin.name, "fixture-valid");
    assert_eq!(plugin.version, "0.1.0");
    assert_eq!(plugin.aliases, ["fixture-valid", "vfake"]);
    assert!(plugin.answers_to("vfake"));
    assert!(plugin.backend().is_none());

    let runtime = plugin.runtime().expect("runtime module");
    let spec = runtime.spec();
    assert_eq!(spec.tool_name.as_str(), "vfake");
    assert_eq!(spec.state_image_name.as_str(), "fake-state.img");

    let args: Vec<String> = ["run", "-it", "-v", "./d:/d", "img", "sh"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let plan = runtime.plan(&args).expect("plan");
    assert_eq!(plan.argv[0].as_str(), "fakert");
    assert_eq!(plan.class, CommandClass::Interactive);
    assert_eq!(plan.inputs[0].host_path.as_str(), "./d");

    let err = runtime.plan(&[]).unwrap_err();
    assert_eq!(err.kind, PluginErrorKind::Usage);
    let err = runtime.plan(&["panic".to_string()]).unwrap_err();
    assert_eq!(err.kind, PluginErrorKind::Panicked);
    assert!(err.message.contains("asked to panic"), "{}", err.message);
}

#[test]
fn valid_backend_plugin_round_trips_json() {
    let plugin = load_plugin(&fixture("valid_backend")).expect("backend loads");
    assert_eq!(plugin.kind, PluginKind::Backend);
    assert_eq!(plugin.aliases, ["fixture-backend"]);
    let backend = plugin.backend().expect("backend module");
    let result = backend
        .build(&BuildRequest {
            rootfs: "/r".into(),
            output: "/out".into(),
            arch: "arm64".into(),
            dir_tar: Some("/out-dir.tar".into()),
            root_owned: true,
            ..Default::default()
        })
        .expect("build");
    assert_eq!(result.layout, PathBuf::from("/out"));
    assert_eq!(result.dir_tar, Some(PathBuf::from("/out-dir.tar")));
    assert_eq!(result.manifest_digest, "sha256:arm64");
    let err = backend.unpack(&UnpackRequest::default()).unwrap_err();
    assert_eq!(err.kind, PluginErrorKind::Unsupported);
    let err = backend.index(&IndexRequest::default()).unwrap_err();
    assert_eq!(err.kind, PluginErrorKind::Panicked);
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libvcontainer_gone.so");
    let err = load_plugin(&path).unwrap_err();
    assert_eq!(err, LoadError::Missing);
    assert_eq!(err.to_string(), "file not found");
}

#[test]
fn shared_object_without_root_module_is_not_a_plugin() {
    let err = load_plugin(&fixture("not_plugin")).unwrap_err();
    let LoadError::NotAPlugin(reason) = &err else {
        panic!("expected NotAPlugin, got {err:?}");
    };
    assert!(reason.contains("no vcontainer root module"), "{reason}");
}

#[test]
fn text_file_is_not_a_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libvcontainer_x.so");
    std::fs::write(&path, "#!/bin/sh\necho not a library\n").unwrap();
    let err = load_plugin(&path).unwrap_err();
    assert!(matches!(err, LoadError::NotAPlugin(_)), "{err:?}");
    assert!(
        err.to_string().starts_with("not a vcontainer plugin"),
        "{err}"
    );
}

#[test]
fn different_layout_is_rejected() {
    let err = load_plugin(&fixture("other_layout")).unwrap_err();
    assert!(matches!(err, LoadError::WrongLayout(_)), "{err:?}");
    assert!(
        err.to_string().contains("incompatible plugin layout"),
        "{err}"
    );
}

#[test]
fn other_interface_version_is_rejected() {
    let err = load_plugin(&fixture("other_version")).unwrap_err();
    assert_eq!(
        err,
        LoadError::WrongInterfaceVersion {
            found: INTERFACE_VERSION + 1,
            expected: INTERFACE_VERSION
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "plugin speaks interface {}, this vcontainer speaks {}",
            INTERFACE_VERSION + 1,
            INTERFACE_VERSION
        )
    );
}

#[test]
fn failures_do_not_stop_the_others_and_first_name_wins() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    // Sorted by file name within a dir: a_ fails, b_ loads, c_ fails, d_ loads.
    place(first.path(), "other_layout", "libvcontainer_a_layout.so");
    let winner = place(first.path(), "valid", "libvcontainer_b_valid.so");
    place(first.path(), "not_plugin", "libvcontainer_c_plain.so");
    place(first.path(), "valid_backend", "libvcontainer_d_backend.so");
    std::fs::write(first.path().join("libvcontainer_e_text.so"), "text").unwrap();
    let shadowed = place(second.path(), "valid", "libvcontainer_valid.so");
    place(second.path(), "other_version", "libvcontainer_future.so");
    std::fs::write(second.path().join("unrelated.so"), "ignored").unwrap();

    let found = discover(&[
        first.path().to_path_buf(),
        first.path().join("absent"),
        second.path().to_path_buf(),
    ]);
    let names: Vec<&str> = found.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["fixture-valid", "fixture-backend"]);
    assert_eq!(found.plugins[0].path, winner);

    let reasons: Vec<(String, String)> = found
        .failures
        .iter()
        .map(|f| {
            (
                f.path.file_name().unwrap().to_string_lossy().into_owned(),
                f.error.to_string(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 5, "{reasons:#?}");
    assert!(reasons[0].0 == "libvcontainer_a_layout.so" && reasons[0].1.contains("layout"));
    assert!(reasons[1].0 == "libvcontainer_c_plain.so" && reasons[1].1.contains("not a"));
    assert!(reasons[2].0 == "libvcontainer_e_text.so" && reasons[2].1.contains("not a"));
    assert_eq!(reasons[3].0, "libvcontainer_future.so");
    assert!(
        reasons[3].1.contains("speaks interface"),
        "{}",
        reasons[3].1
    );
    assert_eq!(found.failures[4].path, shadowed);
    assert_eq!(
        reasons[4].1,
        format!(
            "runtime plugin 'fixture-valid' is shadowed by {}",
            winner.display()
        )
    );
}

#[test]
fn same_file_through_two_paths_loads_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = place(dir.path(), "valid", "libvcontainer_valid.so");
    let found = load_all(&[
        path.clone(),
        dir.path().join(".").join("libvcontainer_valid.so"),
    ]);
    assert_eq!(found.plugins.len(), 1);
    assert!(found.failures.is_empty(), "{:?}", found.failures);
}
