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

/// The names of the entries of the tar file `path`, in order.
fn tar_names(path: &Path) -> Vec<String> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

/// (name, uid, gid) of every entry of layer `i` of the image tagged `tag`.
fn layer_owners(layout: &Path, tag: &str, i: usize) -> Vec<(String, u64, u64)> {
    let (manifest, _) = image_of(layout, tag);
    let digest = manifest["layers"][i]["digest"].as_str().unwrap();
    let gz = std::fs::File::open(blob(layout, digest)).unwrap();
    let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(gz));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().display().to_string(),
                h.uid().unwrap(),
                h.gid().unwrap(),
            )
        })
        .collect()
}

/// Gives `etc/hostname` of `rootfs` to 1000:1000; false when we may not (not root).
fn chown_hostname(rootfs: &Path) -> bool {
    std::os::unix::fs::chown(rootfs.join("etc/hostname"), Some(1000), Some(1000)).is_ok()
}

/// The traceability values as image-oci writes them (config labels), plus the version.
const TRACE: [(&str, &str, &str); 4] = [
    ("--revision", "org.opencontainers.image.revision", "abc123"),
    ("--branch", "org.opencontainers.image.ref.name", "main"),
    (
        "--build-date",
        "org.opencontainers.image.created",
        "2026-01-02T03:04:05Z",
    ),
    ("--version", "org.opencontainers.image.version", "1.2.3"),
];

/// docs/image-oci.md's table, flag by flag, in both backends: each image-oci variable's
/// flag lands where the class puts it (config, labels, annotations, index.json, tars).
#[test]
fn every_image_oci_variable_has_its_flag_in_both_backends() {
    let t = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(t.path());
    let owned = chown_hostname(&rootfs);
    let options = [
        ("--tag", "1.0"),
        ("--tag", "stable"),
        ("--entrypoint", "/bin/app --serve"),
        ("--cmd", "/bin/sh"),
        ("--entrypoint-args", "--port 'eighty eighty'"),
        ("--env", "A=1"),
        ("--env", "B=x y"),
        ("--label", "org.example.team=core"),
        ("--label", "org.opencontainers.image.revision=from-user"),
        ("--label", ".title=app"),
        ("--port", "80"),
        ("--port", "53/udp"),
        ("--user", "1000:1000"),
        ("--workdir", "/srv"),
        ("--stop-signal", "SIGINT"),
        ("--author-email", "oe.patch@oe"),
        ("--arch", "arm"),
        ("--variant", "v7"),
        ("--layer-mode", "single"),
        ("--layer", "ignored:files:/etc/hostname"),
    ];
    let mut args: Vec<&str> = options.iter().flat_map(|&(k, v)| [k, v]).collect();
    args.extend(TRACE.iter().flat_map(|&(flag, _, v)| [flag, v]));
    args.push("--root-owned");
    for backend in BACKENDS {
        let out = t.path().join(format!("{backend}-oci"));
        let tar = t.path().join(format!("{backend}-oci.tar"));
        let dir_tar = t.path().join(format!("{backend}-oci-dir.tar"));
        let mut extra = args.clone();
        extra.extend(["--tar", s(&tar), "--dir-tar", s(&dir_tar)]);
        let run = build(
            backend,
            &rootfs,
            &out,
            &extra,
            &[("SOURCE_DATE_EPOCH", EPOCH)],
        )
        .ok();
        assert!(
            run.stderr()
                .contains("--layer-mode single: 1 layer definition(s) ignored"),
            "{backend}: {}",
            run.stderr()
        );
        for t in [&tar, &dir_tar] {
            assert!(run.stdout().contains(s(t)), "{backend}: {}", run.stdout());
        }

        // tags: one index.json entry each, same manifest, no platform
        let index = read_json(&out.join("index.json"));
        let entries = index["manifests"].as_array().unwrap();
        let tags: Vec<&str> = entries
            .iter()
            .map(|e| {
                e["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(tags, ["1.0", "stable"], "{backend}");
        assert_eq!(entries[0]["digest"], entries[1]["digest"], "{backend}");
        assert!(
            entries.iter().all(|e| e.get("platform").is_none()),
            "{index}"
        );

        let (manifest, config) = image_of(&out, "1.0");
        let c = &config["config"];
        assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/app", "--serve"]));
        assert_eq!(
            c["Cmd"],
            serde_json::json!(["--port", "eighty eighty"]),
            "{backend}: entrypoint-args wins over cmd"
        );
        assert_eq!(c["Env"], serde_json::json!(["A=1", "B=x y"]), "{backend}");
        assert_eq!(
            c["ExposedPorts"],
            serde_json::json!({"80/tcp": {}, "53/udp": {}}),
            "{backend}"
        );
        assert_eq!(c["User"], "1000:1000", "{backend}");
        assert_eq!(c["WorkingDir"], "/srv", "{backend}");
        assert_eq!(c["StopSignal"], "SIGINT", "{backend}");
        assert_eq!(config["author"], "oe.patch@oe", "{backend}");
        for h in config["history"].as_array().unwrap() {
            assert_eq!(h["author"], "oe.patch@oe", "{backend}: {h}");
        }
        assert_eq!(config["architecture"], "arm", "{backend}");
        assert_eq!(config["variant"], "v7", "{backend}");
        assert_eq!(config["os"], "linux", "{backend}");
        assert_eq!(config["created"], "2023-11-14T22:13:20Z", "{backend}");

        // labels: the user's, then the traceability values over them, as the class does
        let labels = &c["Labels"];
        assert_eq!(labels["org.example.team"], "core", "{backend}");
        let title = match backend {
            "sloci" => "org.opencontainers.image.title",
            _ => ".title",
        };
        assert_eq!(labels[title], "app", "{backend}: {labels}");
        let ann = &manifest["annotations"];
        for (_, key, value) in TRACE {
            assert_eq!(labels[key], value, "{backend}: label {key}");
            assert_eq!(ann[key], value, "{backend}: annotation {key}");
        }
        // the index entry's ref.name is the tag, not the branch
        assert_eq!(
            entries[0]["annotations"]["org.opencontainers.image.revision"],
            "abc123"
        );

        // single layer, every entry 0:0 with --root-owned
        assert_eq!(count(&manifest["layers"]), 1, "{backend}");
        let owners = layer_owners(&out, "1.0", 0);
        assert!(owners.iter().any(|(n, _, _)| n == "etc/hostname"));
        assert!(
            owners.iter().all(|&(_, u, g)| (u, g) == (0, 0)),
            "{backend}: {owners:?}"
        );

        // the two tar styles of the class: ./ entries, and the directory as top entry
        let names = tar_names(&tar);
        assert_eq!(names[0], "./", "{backend}: {names:?}");
        assert!(names.iter().all(|n| n.starts_with("./")), "{names:?}");
        let top = format!("{backend}-oci/");
        let dir_names = tar_names(&dir_tar);
        assert_eq!(dir_names[0], top, "{backend}: {dir_names:?}");
        assert!(
            dir_names.iter().all(|n| n.starts_with(&top)),
            "{dir_names:?}"
        );
        // extracted as a consumer would, both are the layout
        for (n, (file, sub)) in [(&tar, ""), (&dir_tar, top.as_str())].iter().enumerate() {
            let x = t.path().join(format!("{backend}-x{n}"));
            std::fs::create_dir(&x).unwrap();
            tar::Archive::new(std::fs::File::open(file).unwrap())
                .unpack(&x)
                .unwrap();
            assert_eq!(tree_bytes(&x.join(sub)), tree_bytes(&out), "{backend} {n}");
            external_tools_accept(&x.join(sub), "stable");
        }
    }

    // without --root-owned the rootfs's owners are kept
    if owned {
        let out = t.path().join("owners-oci");
        build("umoci", &rootfs, &out, &[], &[]).ok();
        let owners = layer_owners(&out, "latest", 0);
        assert!(
            owners.contains(&("etc/hostname".to_string(), 1000, 1000)),
            "{owners:?}"
        );
    } else {
        eprintln!("SKIPPED owner check: chown needs root");
    }
}

/// Bad combinations of the image-oci flags fail with 125 before anything is written.
#[test]
fn image_oci_flags_refuse_bad_combinations_and_none_writes_no_label() {
    let t = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(t.path());
    let out = t.path().join("out");
    let tar = t.path().join("x.tar");
    let cases: [(&[&str], &str); 4] = [
        (
            &["--layer-mode", "multi"],
            "--layer-mode multi needs at least one --layer",
        ),
        (&["--tag", ""], "invalid tag"),
        (&["--tag", "ok", "--tag", "not ok"], "invalid tag"),
        (
            &["--tar", s(&tar), "--dir-tar", s(&tar)],
            "the same path for two tar outputs",
        ),
    ];
    for backend in BACKENDS {
        for (extra, needle) in cases {
            build(backend, &rootfs, &out, extra, &[]).fails(needle);
            assert!(!out.exists(), "{backend} {extra:?} left the layout");
            assert!(!tar.exists(), "{backend} {extra:?} left the tar");
        }
    }
    // an existing tar is refused and kept; nothing else is written
    std::fs::write(&tar, "mine").unwrap();
    let dir_tar = t.path().join("y.tar");
    build(
        "umoci",
        &rootfs,
        &out,
        &["--dir-tar", s(&tar), "--tar", s(&dir_tar)],
        &[],
    )
    .fails("already exists");
    assert_eq!(read_text(&tar), "mine");
    assert!(!out.exists() && !dir_tar.exists());

    // 'none' and '' write no traceability label (the class's "none"); multi mode takes layers
    let extra = [
        "--revision",
        "none",
        "--branch",
        "",
        "--version",
        "2",
        "--layer-mode",
        "multi",
        "--layer",
        "etc:directories:/etc",
    ];
    build("umoci", &rootfs, &out, &extra, &[]).ok();
    let (manifest, config) = image_of(&out, "latest");
    let labels = &config["config"]["Labels"];
    assert_eq!(
        labels,
        &serde_json::json!({"org.opencontainers.image.version": "2"})
    );
    assert!(manifest["annotations"]
        .get("org.opencontainers.image.revision")
        .is_none());
    assert_eq!(count(&manifest["layers"]), 1);
}

/// The class's own umoci sequence (init, new, rootless unpack, cp, repack, one `umoci
/// config` per setting in the class's order) against ours with the same settings: the same
/// config values, labels and layer, except the port key (we write `80/tcp`; see
/// docs/image-oci.md).
#[test]
fn the_classes_umoci_sequence_and_ours_give_the_same_image() {
    if judge("umoci", &["--version"]).is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(t.path());
    chown_hostname(&rootfs);
    // whole-second mtimes: umoci 0.6 (the class's) truncates sub-seconds as we do, the
    // host's umoci 0.4 rounds them
    let whole = format!(
        "find {} -exec touch -h -d @{EPOCH} {{}} +",
        rootfs.display()
    );
    assert!(Command::new("sh")
        .args(["-c", &whole])
        .status()
        .unwrap()
        .success());
    let theirs = t.path().join("reference-oci");
    let bundle = t.path().join("bundle");
    let image = format!("{}:1.0", theirs.display());
    let umoci = |args: &[&str]| {
        let o = Command::new("umoci").args(args).output().unwrap();
        assert!(
            o.status.success(),
            "umoci {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    umoci(&["init", "--layout", s(&theirs)]);
    umoci(&["new", "--image", &image]);
    umoci(&["unpack", "--rootless", "--image", &image, s(&bundle)]);
    // cp -r -a --no-preserve=ownership ${IMAGE_ROOTFS}/* $bundle/rootfs, and the root dir's
    // own metadata as our rootfs has it (the class's copy leaves the bundle's)
    let sh = format!(
        "cp -r -a --no-preserve=ownership {r}/* {b}/rootfs && chmod 755 {b}/rootfs && touch -r {r} {b}/rootfs",
        r = rootfs.display(),
        b = bundle.display()
    );
    assert!(Command::new("sh")
        .args(["-c", &sh])
        .status()
        .unwrap()
        .success());
    umoci(&["repack", "--image", &image, s(&bundle)]);
    let config_calls: [&[&str]; 14] = [
        &["--config.label", "org.example.team=core"],
        &["--config.label", "org.opencontainers.image.revision=abc123"],
        &["--config.label", "org.opencontainers.image.ref.name=main"],
        &[
            "--config.label",
            "org.opencontainers.image.created=2026-01-02T03:04:05Z",
        ],
        &["--config.env", "A=1"],
        &["--config.env", "B=x y"],
        &["--config.exposedports", "80"],
        &["--config.exposedports", "53/udp"],
        &["--config.user", "1000:1000"],
        &["--config.workingdir", "/srv"],
        &["--config.stopsignal", "SIGINT"],
        &["--architecture", "arm64"],
        &[
            "--config.entrypoint",
            "/bin/app",
            "--config.entrypoint=--serve",
        ],
        &["--config.cmd", "/bin/sh"],
    ];
    for call in config_calls
        .iter()
        .chain([&["--author", "oe.patch@oe"][..]].iter())
    {
        let mut args = vec!["config", "--image", &image];
        args.extend_from_slice(call);
        umoci(&args);
    }
    let (their_manifest, their_config) = image_of(&theirs, "1.0");

    for backend in BACKENDS {
        let ours = t.path().join(format!("{backend}-oci"));
        let extra = [
            "--tag",
            "1.0",
            "--label",
            "org.example.team=core",
            "--revision",
            "abc123",
            "--branch",
            "main",
            "--build-date",
            "2026-01-02T03:04:05Z",
            "--env",
            "A=1",
            "--env",
            "B=x y",
            "--port",
            "80",
            "--port",
            "53/udp",
            "--user",
            "1000:1000",
            "--workdir",
            "/srv",
            "--stop-signal",
            "SIGINT",
            "--arch",
            "arm64",
            "--entrypoint",
            "/bin/app --serve",
            "--cmd",
            "/bin/sh",
            "--author",
            "oe.patch@oe",
            "--root-owned",
        ];
        build(backend, &rootfs, &ours, &extra, &[]).ok();
        let (manifest, config) = image_of(&ours, "1.0");
        let (c, tc) = (&config["config"], &their_config["config"]);
        for key in [
            "Labels",
            "Env",
            "User",
            "WorkingDir",
            "StopSignal",
            "Entrypoint",
            "Cmd",
        ] {
            assert_eq!(c[key], tc[key], "{backend}: config.{key}");
        }
        for key in ["author", "architecture", "os"] {
            assert_eq!(config[key], their_config[key], "{backend}: {key}");
        }
        assert_eq!(
            tc["ExposedPorts"],
            serde_json::json!({"80": {}, "53/udp": {}})
        );
        assert_eq!(
            c["ExposedPorts"],
            serde_json::json!({"80/tcp": {}, "53/udp": {}})
        );
        assert_eq!(
            config["rootfs"]["diff_ids"], their_config["rootfs"]["diff_ids"],
            "{backend}: the layer differs from umoci's rootless repack"
        );
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            their_manifest["layers"][0]["mediaType"]
        );
        // the class writes the traceability values as labels only; we add annotations
        assert!(their_manifest.get("annotations").is_none_or(Value::is_null));
        assert_eq!(
            manifest["annotations"]["org.opencontainers.image.ref.name"],
            "main"
        );
    }
}

/// `image index --flat`: the per-arch manifests are index.json's own entries (each with the
/// tag and its platform); `--dir-tar` has the layout directory as its top entry.
#[test]
fn flat_index_lists_the_manifests_in_index_json_and_dir_tar_has_the_layout_dir_on_top() {
    let t = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(t.path());
    let mut inputs = Vec::new();
    for arch in ["amd64", "armv7"] {
        let out = t.path().join(format!("{arch}-oci"));
        build("sloci", &rootfs, &out, &["--arch", arch], &[]).ok();
        inputs.push(out.display().to_string());
    }
    let out = t.path().join("flat-oci");
    let dir_tar = t.path().join("flat-oci-dir.tar");
    let mut args = vec![
        "index",
        "--flat",
        "--output",
        s(&out),
        "--tag",
        "v2",
        "--dir-tar",
        s(&dir_tar),
    ];
    args.extend(inputs.iter().map(String::as_str));
    let run = image(&args, &[]).ok();
    assert!(!run.stdout().contains("index:"), "{}", run.stdout());
    let index = read_json(&out.join("index.json"));
    let entries = index["manifests"].as_array().unwrap();
    let platforms: Vec<String> = entries
        .iter()
        .map(|e| {
            assert_eq!(e["annotations"]["org.opencontainers.image.ref.name"], "v2");
            assert_eq!(
                e["mediaType"], "application/vnd.oci.image.manifest.v1+json",
                "{e}"
            );
            let p = &e["platform"];
            let v = p["variant"].as_str().map(|v| format!("/{v}"));
            format!(
                "{}{}",
                p["architecture"].as_str().unwrap(),
                v.unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(platforms, ["amd64", "arm/v7"]);
    let names = tar_names(&dir_tar);
    assert_eq!(names[0], "flat-oci/");
    assert!(
        names.contains(&"flat-oci/index.json".to_string()),
        "{names:?}"
    );
}
