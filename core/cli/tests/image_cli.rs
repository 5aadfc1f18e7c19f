//! `vcontainer image build|unpack|index`: the built binary with the real backend plugins
//! (the ones `make build-debug` left beside it when they are up to date, else built fresh for
//! this test run), on small rootfs trees made here. Results are checked on the files written
//! (index.json, manifests, configs, layer tars) and, where installed, by `skopeo inspect` and
//! `umoci stat`, which are the tools the issue names as the judges.

// test helpers outside #[test] fns: a failed setup step should just panic
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::SystemTime;

use serde_json::Value;

const EPOCH: &str = "1700000000";
const BACKENDS: [&str; 2] = ["sloci", "umoci"];

fn backend_file(name: &str) -> String {
    format!("libvcontainer_backend_{name}.so")
}

/// The real backend plugins, copied (once per test run) to a directory that holds nothing
/// else (the fixtures dir also has deliberately broken plugins). They come from beside the
/// binary under test when every one there is newer than all of its sources, as after
/// `make build-debug` in CI; otherwise they are built here.
fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe_dir = Path::new(env!("CARGO_BIN_EXE_vcontainer"))
            .parent()
            .unwrap();
        let built = if BACKENDS.iter().all(|name| is_fresh(exe_dir, name)) {
            eprintln!(
                "image_cli: using the backend plugins in {}",
                exe_dir.display()
            );
            exe_dir.to_path_buf()
        } else {
            eprintln!("image_cli: backend plugins missing or stale, building them");
            build_plugins()
        };
        let target = exe_dir.parent().unwrap();
        let dir = target.join("image-cli-plugins");
        std::fs::create_dir_all(&dir).unwrap();
        for name in BACKENDS {
            let file = backend_file(name);
            // copy to a temp name and rename: tests running in parallel may read it
            let tmp = dir.join(format!(".{file}.{}", std::process::id()));
            std::fs::copy(built.join(&file), &tmp).unwrap();
            std::fs::rename(&tmp, dir.join(&file)).unwrap();
        }
        dir
    })
}

/// Whether `dir` holds backend `name` built after every source file cargo compiled into it:
/// cargo's dep-info file beside it (`<lib>.d`, `<output>: <source> <source> ...`) lists them.
/// No dep-info, or an unreadable list, counts as stale.
fn is_fresh(dir: &Path, name: &str) -> bool {
    let so = dir.join(backend_file(name));
    let Some(built) = mtime(&so) else {
        return false;
    };
    let Ok(dep_info) = std::fs::read_to_string(so.with_extension("d")) else {
        return false;
    };
    let Some((_, sources)) = dep_info.lines().next().and_then(|l| l.split_once(": ")) else {
        return false;
    };
    // dep-info escapes spaces in paths as "\ "
    let sources = sources.replace("\\ ", "\0");
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    sources
        .split_whitespace()
        .map(|p| PathBuf::from(p.replace('\0', " ")))
        .chain([lock])
        .all(|src| mtime(&src).is_some_and(|t| t <= built))
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Builds the backend plugins in their own target dir, so this nested cargo never waits for
/// the one running the test; returns the directory holding the .so files.
fn build_plugins() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let fixtures = exe.ancestors().nth(3).unwrap().join("fixtures");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--manifest-path"])
        .arg(&workspace)
        .args(
            BACKENDS
                .iter()
                .flat_map(|name| ["-p".to_string(), format!("vcontainer-backend-{name}")]),
        )
        .arg("--target-dir")
        .arg(&fixtures)
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .unwrap();
    assert!(status.success(), "building the backend plugins failed");
    fixtures.join("debug")
}

struct Run {
    out: Output,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.out.status.code()
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(
            self.code(),
            Some(0),
            "stdout {}\nstderr {}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    #[track_caller]
    fn fails(self, needle: &str) -> Self {
        assert_eq!(self.code(), Some(125), "stderr {}", self.stderr());
        assert!(
            self.stderr().contains(needle),
            "no {needle:?} in stderr:\n{}",
            self.stderr()
        );
        self
    }
}

/// `vcontainer ARGS` with the real plugins, no SOURCE_DATE_EPOCH unless `env` sets it.
fn vcontainer(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vcontainer"));
    cmd.env("VCONTAINER_PLUGIN_PATH", plugin_dir())
        .env_remove("SOURCE_DATE_EPOCH")
        .env("NO_COLOR", "1")
        .args(args)
        .envs(env.iter().copied());
    Run {
        out: cmd.output().unwrap(),
    }
}

/// `vcontainer image ARGS`.
fn image(args: &[&str], env: &[(&str, &str)]) -> Run {
    let args: Vec<&str> = ["image"].iter().chain(args).copied().collect();
    vcontainer(&args, env)
}

/// `vcontainer image build --backend BACKEND --rootfs ROOTFS --output OUT EXTRA...`.
fn build(backend: &str, rootfs: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut args = vec![
        "build",
        "--backend",
        backend,
        "--rootfs",
        s(rootfs),
        "--output",
        s(out),
    ];
    args.extend_from_slice(extra);
    image(&args, env)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small rootfs: directories, files, a symlink, a setuid binary, an executable script.
fn make_rootfs(dir: &Path) -> PathBuf {
    let r = dir.join("rootfs");
    for d in ["bin", "etc", "usr/bin", "usr/lib", "var/empty"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("etc/hostname"), "img\n").unwrap();
    std::fs::write(r.join("etc/os-release"), "ID=test\n").unwrap();
    std::fs::write(r.join("usr/lib/libx.so"), vec![7u8; 4096]).unwrap();
    std::fs::write(r.join("bin/app"), "#!/bin/sh\necho app\n").unwrap();
    std::fs::set_permissions(r.join("bin/app"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("../../bin/app", r.join("usr/bin/app")).unwrap();
    r
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn read_text(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(alg).join(hex)
}

/// The manifest and config of the image tagged `tag` in `layout`.
fn image_of(layout: &Path, tag: &str) -> (Value, Value) {
    let index = read_json(&layout.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"))
        .clone();
    let manifest = read_json(&blob(layout, entry["digest"].as_str().unwrap()));
    let config = read_json(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    (manifest, config)
}

/// How many entries the JSON array `v` holds (0 when it is not an array).
fn count(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

/// Every file under `dir` (relative path -> bytes), for byte-for-byte comparisons.
fn tree_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path().strip_prefix(dir).unwrap().to_path_buf(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Runs an external judge (`skopeo`, `umoci`) and asserts it succeeds; its stdout, or None
/// (saying SKIPPED) when the tool is not installed.
fn judge(tool: &str, args: &[&str]) -> Option<Vec<u8>> {
    let installed = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("SKIPPED {tool} check: {tool} is not installed");
        return None;
    }
    let o = Command::new(tool).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(o.stdout)
}

/// `skopeo inspect oci:DIR:TAG` and `umoci stat --image DIR:TAG` accept the layout.
fn external_tools_accept(layout: &Path, tag: &str) {
    let image_ref = format!("{}:{tag}", layout.display());
    if let Some(stdout) = judge("skopeo", &["inspect", &format!("oci:{image_ref}")]) {
        let v: Value = serde_json::from_slice(&stdout).unwrap();
        assert!(count(&v["Layers"]) > 0, "{v}");
    }
    judge("umoci", &["stat", "--image", &image_ref]);
}

#[test]
fn the_real_backend_plugins_are_the_ones_loaded() {
    let run = vcontainer(&["plugins", "--format", "json"], &[]).ok();
    let listed: Value = serde_json::from_str(&run.stdout()).unwrap();
    for name in BACKENDS {
        let plugin = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["kind"] == "backend" && p["name"] == name)
            .unwrap_or_else(|| panic!("no backend {name} in {listed}"));
        assert_eq!(
            plugin["path"].as_str().map(PathBuf::from),
            Some(plugin_dir().join(backend_file(name))),
            "{plugin}"
        );
    }
}

#[test]
fn a_plugin_counts_as_fresh_only_when_newer_than_every_source_its_dep_info_lists() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let src = dir.join("a dir/lib.rs");
    std::fs::create_dir_all(src.parent().unwrap()).unwrap();
    std::fs::write(&src, "").unwrap();
    let so = dir.join(backend_file("x"));
    assert!(!is_fresh(dir, "x"), "no plugin at all");
    std::fs::write(&so, "").unwrap();
    assert!(!is_fresh(dir, "x"), "no dep-info");
    let escaped = src.display().to_string().replace(' ', "\\ ");
    std::fs::write(
        so.with_extension("d"),
        format!("{}: {escaped}\n", so.display()),
    )
    .unwrap();
    // stamped days ahead, so a Cargo.lock written just now still counts as older
    let set_mtime = |p: &Path, days_ahead: u64| {
        let when = SystemTime::now() + std::time::Duration::from_secs(days_ahead * 86_400);
        let f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
        f.set_modified(when).unwrap();
    };
    set_mtime(&src, 0);
    set_mtime(&so, 1);
    assert!(is_fresh(dir, "x"), "built after its source");
    set_mtime(&src, 2);
    assert!(!is_fresh(dir, "x"), "a source edited after the build");
    std::fs::remove_file(&src).unwrap();
    assert!(!is_fresh(dir, "x"), "a source that is gone");
}

#[test]
fn both_backends_write_the_config_as_given_and_real_tools_accept_it() {
    let t = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(t.path());
    let options = [
        ("--tag", "1.0"),
        ("--entrypoint", "/bin/sh -c"),
        ("--cmd", "echo 'hello world'"),
        ("--env", "PATH=/usr/bin:/bin"),
        ("--env", "GREETING=a b"),
        ("--label", "org.example.team=core"),
        ("--port", "80"),
        ("--port", "53/udp"),
        ("--user", "1000:1000"),
        ("--workdir", "/var/empty"),
        ("--stop-signal", "SIGINT"),
        ("--author", "Image Tester"),
        ("--arch", "aarch64"),
        ("--revision", "abc123"),
        ("--annotation", "org.example.build=7"),
    ];
    let options: Vec<&str> = options.iter().flat_map(|&(k, v)| [k, v]).collect();
    for backend in BACKENDS {
        let out = t.path().join(format!("{backend}-oci"));
        let run = build(backend, &rootfs, &out, &options, &[]).ok();
        assert!(
            run.stdout().contains("manifest: sha256:"),
            "{}",
            run.stdout()
        );
        let (manifest, config) = image_of(&out, "1.0");
        let c = &config["config"];
        assert_eq!(
            c["Entrypoint"],
            serde_json::json!(["/bin/sh", "-c"]),
            "{backend}"
        );
        assert_eq!(
            c["Cmd"],
            serde_json::json!(["echo", "hello world"]),
            "{backend}"
        );
        assert_eq!(
            c["Env"],
            serde_json::json!(["PATH=/usr/bin:/bin", "GREETING=a b"]),
            "{backend}"
        );
        assert_eq!(c["Labels"]["org.example.team"], "core", "{backend}");
        assert_eq!(
            c["ExposedPorts"],
            serde_json::json!({"80/tcp": {}, "53/udp": {}}),
            "{backend}"
        );
        assert_eq!(c["User"], "1000:1000", "{backend}");
        assert_eq!(c["WorkingDir"], "/var/empty", "{backend}");
        assert_eq!(c["StopSignal"], "SIGINT", "{backend}");
        assert_eq!(config["author"], "Image Tester", "{backend}");
        assert_eq!(config["architecture"], "arm64", "{backend}");
        assert_eq!(config["os"], "linux", "{backend}");
        let ann = &manifest["annotations"];
        assert_eq!(
            ann["org.opencontainers.image.revision"], "abc123",
            "{backend}"
        );
        assert_eq!(ann["org.example.build"], "7", "{backend}");
        assert_eq!(count(&manifest["layers"]), 1, "{backend}");
        external_tools_accept(&out, "1.0");
    }
}

#[test]
fn armv7_is_arm_v7_and_the_default_arch_follows_the_global_arch() {
    let t = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(t.path());
    let out = t.path().join("arm");
    build("umoci", &rootfs, &out, &["--arch", "armv7"], &[]).ok();
    let (_, config) = image_of(&out, "latest");
    assert_eq!(config["architecture"], "arm");
    assert_eq!(config["variant"], "v7");

    // no --arch: the global one (before `image`) decides
    let out = t.path().join("global");
    let args = ["--arch", "aarch64", "image", "build", "--backend", "sloci"];
    let paths = ["--rootfs", s(&rootfs), "--output", s(&out)];
    vcontainer(&[&args[..], &paths].concat(), &[]).ok();
    let (_, config) = image_of(&out, "latest");
    assert_eq!(config["architecture"], "arm64");
}

#[test]
fn same_source_date_epoch_gives_byte_identical_layouts() {
    let t = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(t.path());
    for (backend, compression) in [("umoci", "gzip"), ("sloci", "zstd")] {
        let mut trees = Vec::new();
        for n in 0..2 {
            let out = t.path().join(format!("{backend}-{n}"));
            let tar = t.path().join(format!("{backend}-{n}.tar"));
            let extra = [
                "--compression",
                compression,
                "--tar",
                s(&tar),
                "--arch",
                "amd64",
            ];
            build(
                backend,
                &rootfs,
                &out,
                &extra,
                &[("SOURCE_DATE_EPOCH", EPOCH)],
            )
            .ok();
            // a different mtime on the rootfs between the builds must not matter
            filetime_touch(&rootfs.join("etc/hostname"));
            trees.push((tree_bytes(&out), std::fs::read(&tar).unwrap()));
        }
        assert!(trees[0].0.len() >= 4, "{:?}", trees[0].0.keys());
        assert_eq!(
            trees[0].0.keys().collect::<Vec<_>>(),
            trees[1].0.keys().collect::<Vec<_>>(),
            "{backend}: different files"
        );
        for (path, bytes) in &trees[0].0 {
            assert!(
                trees[1].0[path] == *bytes,
                "{backend}: {} differs",
                path.display()
            );
        }
        assert!(trees[0].1 == trees[1].1, "{backend}: the tars differ");
        let (manifest, config) = image_of(&t.path().join(format!("{backend}-0")), "latest");
        assert_eq!(config["created"], "2023-11-14T22:13:20Z", "{backend}");
        let media = manifest["layers"][0]["mediaType"].as_str().unwrap();
        assert!(
            media.ends_with(&format!("+{compression}")),
            "{backend}: {media}"
        );
    }
}

/// Sets a file's mtime to now (std only: open for append and set_modified).
fn filetime_touch(p: &Path) {
    let f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
    f.set_modified(SystemTime::now()).unwrap();
}

#[test]
fn settings_file_is_read_and_options_override_it() {
    let t = tempfile::tempdir().unwrap();
    // the file names it as "rootfs", relative to the file
    make_rootfs(t.path());
    let cfg = t.path().join("img.toml");
    std::fs::write(
        &cfg,
        r#"
backend = "umoci"
rootfs = "rootfs"
output = "from-file-oci"
tag = "file"
entrypoint = ["/bin/app"]
cmd = "--serve 'on port'"
env = ["MODE=file", "KEEP=1"]
labels = { "org.example.a" = "file", "org.example.b" = "file" }
ports = ["8080"]
user = "file"
workdir = "/etc"
version = "1.2.3"
"#,
    )
    .unwrap();
    image(&["build", "--config", s(&cfg)], &[]).ok();
    let from_file = t.path().join("from-file-oci");
    let (manifest, config) = image_of(&from_file, "file");
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/app"]));
    assert_eq!(c["Cmd"], serde_json::json!(["--serve", "on port"]));
    assert_eq!(c["User"], "file");
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.version"],
        "1.2.3"
    );

    let out = t.path().join("override-oci");
    image(
        &[
            "build",
            "--config",
            s(&cfg),
            "--output",
            s(&out),
            "--tag",
            "flag",
            "--user",
            "flag",
            "--env",
            "MODE=flag",
            "--label",
            "org.example.b=flag",
            "--cmd",
            "",
        ],
        &[],
    )
    .ok();
    let (_, config) = image_of(&out, "flag");
    let c = &config["config"];
    assert_eq!(c["User"], "flag");
    assert_eq!(
        c["WorkingDir"], "/etc",
        "unset options keep the file's value"
    );
    assert_eq!(c["Env"], serde_json::json!(["MODE=flag", "KEEP=1"]));
    assert_eq!(c["Labels"]["org.example.a"], "file");
    assert_eq!(c["Labels"]["org.example.b"], "flag");
    assert!(
        c.get("Cmd").is_none_or(Value::is_null),
        "--cmd '' clears: {c}"
    );
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/app"]));

    // an unknown key is named, and nothing is written
    std::fs::write(
        &cfg,
        "rootfs = \"rootfs\"\noutput = \"typo-oci\"\nstopsignal = \"x\"\n",
    )
    .unwrap();
    image(&["build", "--backend", "umoci", "--config", s(&cfg)], &[]).fails("stopsignal");
    assert!(!t.path().join("typo-oci").exists());
}

#[test]
fn bad_input_fails_with_125_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(t.path());
    let out = t.path().join("out");
    let cases: [(&[&str], &str); 8] = [
        (&["--port", "70000"], "invalid port '70000'"),
        (&["--port", "80/icmp"], "protocol 'icmp'"),
        (&["--env", "NOVALUE"], "'NOVALUE' is not KEY=VALUE"),
        (&["--layer", "x:packages:/usr"], "unknown type 'packages'"),
        (&["--tag", "bad tag"], "invalid tag"),
        (&["--arch", "vax"], "unknown architecture"),
        (&["--compression", "lz4"], "invalid value 'lz4'"),
        (&["--cmd", "echo 'unterminated"], "cannot split --cmd"),
    ];
    for (extra, needle) in cases {
        build("umoci", &rootfs, &out, extra, &[]).fails(needle);
        assert!(!out.exists(), "{extra:?} left {}", out.display());
    }
    image(&["build", "--rootfs", s(&rootfs), "--output", s(&out)], &[])
        .fails("choose a backend with --backend NAME (found: sloci, umoci)");
    build("kaniko", &rootfs, &out, &[], &[])
        .fails("no backend plugin named 'kaniko' (available: sloci, sloci-image, umoci)");
    build(
        "sloci",
        &rootfs,
        &out,
        &["--layer", "a:files:/etc/hostname"],
        &[],
    )
    .fails("need the umoci backend");
    build(
        "sloci",
        &rootfs,
        &out,
        &[],
        &[("SOURCE_DATE_EPOCH", "yesterday")],
    )
    .fails("SOURCE_DATE_EPOCH='yesterday'");
    let run =
        image(&["build", "--backend", "sloci", "--output", s(&out)], &[]).fails("missing --rootfs");
    assert!(
        run.stderr().starts_with("vcontainer: error: "),
        "{}",
        run.stderr()
    );
    assert!(!out.exists());

    // an existing non-empty output is refused and left as it was
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep"), "mine").unwrap();
    build("umoci", &rootfs, &out, &[], &[]).fails("");
    assert_eq!(read_text(&out.join("keep")), "mine");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    // --force replaces it, once the new layout is complete
    build("umoci", &rootfs, &out, &["--force"], &[]).ok();
    assert!(out.join("index.json").is_file());
    assert!(!out.join("keep").exists());
}

#[test]
fn layer_definitions_give_one_layer_each_and_unpack_restores_the_rootfs() {
    let t = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(t.path());
    let host_file = t.path().join("motd");
    std::fs::write(&host_file, "from the host\n").unwrap();
    let out = t.path().join("layers-oci");
    let host_layer = format!("host:host:{}:/etc/motd", host_file.display());
    let layers = [
        "libs:directories:/usr",
        "conf:files:/etc/hostname+/etc/os-release",
        &host_layer,
        "rest:directories:/bin+/var",
    ];
    let mut extra: Vec<&str> = layers.iter().flat_map(|&l| ["--layer", l]).collect();
    extra.extend(["--format", "json"]);
    let run = build("umoci", &rootfs, &out, &extra, &[]).ok();
    let result: Value = serde_json::from_str(&run.stdout()).unwrap();
    let names: Vec<&str> = result["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["libs", "conf", "host", "rest"]);
    let (manifest, config) = image_of(&out, "latest");
    assert_eq!(count(&manifest["layers"]), 4);
    assert_eq!(count(&config["rootfs"]["diff_ids"]), 4);
    external_tools_accept(&out, "latest");

    let bundle = t.path().join("bundle");
    let run = image(
        &["unpack", "--image", s(&out), "--tag", "latest", s(&bundle)],
        &[],
    )
    .ok();
    assert!(run.stdout().contains("bundle:"), "{}", run.stdout());
    let spec = read_json(&bundle.join("config.json"));
    assert!(spec["ociVersion"].is_string(), "{spec}");
    let r = bundle.join("rootfs");
    assert_eq!(read_text(&r.join("etc/hostname")), "img\n");
    assert_eq!(read_text(&r.join("etc/motd")), "from the host\n");
    assert_eq!(
        std::fs::read(r.join("usr/lib/libx.so")).unwrap(),
        vec![7u8; 4096]
    );
    assert_eq!(
        std::fs::read_link(r.join("usr/bin/app")).unwrap(),
        PathBuf::from("../../bin/app")
    );
    let mode = std::fs::metadata(r.join("bin/app"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o4755);
    // a second unpack into the now non-empty bundle is refused, unless forced
    std::fs::write(r.join("etc/hostname"), "changed\n").unwrap();
    image(&["unpack", "--image", s(&out), s(&bundle)], &[]).fails("already exists");
    assert_eq!(read_text(&r.join("etc/hostname")), "changed\n");
    image(&["unpack", "--force", "--image", s(&out), s(&bundle)], &[]).ok();
    assert_eq!(read_text(&r.join("etc/hostname")), "img\n");
}

#[test]
fn index_of_two_arches_lists_both_platforms_and_the_tar_holds_the_layout() {
    let t = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(t.path());
    let mut inputs = Vec::new();
    for arch in ["x86_64", "arm64"] {
        let out = t.path().join(format!("{arch}-oci"));
        build(
            "sloci",
            &rootfs,
            &out,
            &["--arch", arch, "--tag", "v1"],
            &[],
        )
        .ok();
        inputs.push(format!("{}:v1", out.display()));
    }
    // a third input whose platform is given on the command line
    let arm = t.path().join("arm-oci");
    build("umoci", &rootfs, &arm, &[], &[]).ok();
    inputs.push(format!("{}@linux/arm/v7", arm.display()));

    let out = t.path().join("multi-oci");
    let tar = t.path().join("multi.tar");
    let mut args = vec![
        "index",
        "--output",
        s(&out),
        "--tag",
        "v1",
        "--tar",
        s(&tar),
        "--annotation",
        "org.example.set=1",
    ];
    args.extend(inputs.iter().map(String::as_str));
    let run = image(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]).ok();
    assert!(run.stdout().contains("linux/arm/v7"), "{}", run.stdout());

    let index = read_json(&out.join("index.json"));
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    let image_index = read_json(&blob(&out, entry["digest"].as_str().unwrap()));
    let platforms: Vec<String> = image_index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut s = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            if let Some(v) = p["variant"].as_str() {
                s = format!("{s}/{v}");
            }
            s
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64", "linux/arm/v7"]);
    // every manifest the index names is in the new layout
    for m in image_index["manifests"].as_array().unwrap() {
        assert!(blob(&out, m["digest"].as_str().unwrap()).is_file(), "{m}");
    }

    let mut names = Vec::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&tar).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut sink = Vec::new();
        entry.read_to_end(&mut sink).unwrap();
        names.push(name);
    }
    for want in ["index.json", "oci-layout"] {
        assert!(
            names
                .iter()
                .any(|n| n.trim_end_matches('/').ends_with(want)),
            "{want} missing in the tar: {names:?}"
        );
    }
    judge(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{}:v1", out.display())],
    );

    // a bad platform override and a missing layout are refused before anything is written
    let bad = t.path().join("bad-oci");
    let bad_platform = format!("{}@linux/", arm.display());
    image(&["index", "--output", s(&bad), &bad_platform], &[]).fails("invalid platform");
    image(&["index", "--output", s(&bad), "/nonexistent/x-oci"], &[]).fails("not an OCI layout");
    assert!(!bad.exists());
}

#[test]
fn base_image_layers_come_first_and_the_cache_is_reused() {
    let t = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(t.path());
    let base = t.path().join("base-oci");
    build("umoci", &rootfs, &base, &["--tag", "v1"], &[]).ok();
    let (_, base_config) = image_of(&base, "v1");
    let base_diff = base_config["rootfs"]["diff_ids"][0].clone();

    std::fs::write(rootfs.join("etc/app.conf"), "port=80\n").unwrap();
    let base_ref = format!("{}:v1", base.display());
    let base_path = base.display().to_string();
    for (n, base_args) in [
        vec!["--base-image", base_ref.as_str()],
        vec!["--base-image", base_path.as_str(), "--base-tag", "v1"],
    ]
    .into_iter()
    .enumerate()
    {
        let out = t.path().join(format!("app-{n}"));
        build("umoci", &rootfs, &out, &base_args, &[]).ok();
        let (manifest, config) = image_of(&out, "latest");
        assert_eq!(count(&manifest["layers"]), 2, "{n}");
        assert_eq!(config["rootfs"]["diff_ids"][0], base_diff, "{n}");
    }
    let missing_tag = format!("{}:nope", base.display());
    let out = t.path().join("x");
    build("umoci", &rootfs, &out, &["--base-image", &missing_tag], &[]).fails("nope");

    let cache = t.path().join("cache");
    let mut outcomes = Vec::new();
    for n in 0..2 {
        let out = t.path().join(format!("cached-{n}"));
        let extra = [
            "--layer",
            "etc:directories:/etc",
            "--cache-dir",
            s(&cache),
            "--format",
            "json",
        ];
        let run = build(
            "umoci",
            &rootfs,
            &out,
            &extra,
            &[("SOURCE_DATE_EPOCH", EPOCH)],
        )
        .ok();
        let result: Value = serde_json::from_str(&run.stdout()).unwrap();
        outcomes.push((result["layers"][0]["cache"].clone(), run.stderr()));
    }
    assert_eq!(outcomes[0].0, "miss");
    assert!(
        outcomes[0].1.contains("OCI Cache MISS"),
        "{}",
        outcomes[0].1
    );
    assert_eq!(outcomes[1].0, "hit");
    assert!(outcomes[1].1.contains("OCI Cache HIT"), "{}", outcomes[1].1);
}
