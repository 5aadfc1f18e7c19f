//! End-to-end tests of issue 6 (the SDK): the real installer built by `make sdk`
//! (build/sdk/vcontainer-standalone-<host>.sh; `make test` builds it first, repacking only
//! when something changed) is installed into temporary dirs, moved, and used through
//! init-env.sh from a bare environment, as a user would.
//!
//! Booting guests from a moved SDK is proved by `make sdk-test` (scripts/sdk/chroot-test.sh,
//! issue 17), in fresh Debian chroots without QEMU, which `make test` runs: the two VM tests
//! this suite had (vpdmn and vdkr `vrun` from a moved tree with a bare environment) moved
//! there, so CI boots those guests once.
//!
//! Without the installer the tests skip with a reason, except under VCONTAINER_E2E=1 where
//! they fail, so CI cannot pass by skipping.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use vcontainer_tests::{blob_root, blobs_present, stderr, stdout, target_bin_dir, workspace_root};

const HOST_ARCH: &str = std::env::consts::ARCH;
const LINKS: [&str; 8] = [
    "vdkr",
    "vpdmn",
    "vdkr-x86_64",
    "vdkr-aarch64",
    "vpdmn-x86_64",
    "vpdmn-aarch64",
    "vrunner",
    "vrunner.sh",
];
const PLUGINS: [&str; 4] = [
    "libvcontainer_runtime_docker.so",
    "libvcontainer_runtime_podman.so",
    "libvcontainer_backend_sloci.so",
    "libvcontainer_backend_umoci.so",
];

fn installer_path() -> PathBuf {
    workspace_root()
        .join("build/sdk")
        .join(format!("vcontainer-standalone-{HOST_ARCH}.sh"))
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Files the installer is packed from (the prerequisites of its rule in the Makefile).
fn sdk_inputs() -> Vec<PathBuf> {
    let root = workspace_root();
    let list = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    // the chroot test's scripts (make sdk-test) are not packed
    let mut inputs: Vec<PathBuf> = list(&root.join("scripts/sdk"))
        .into_iter()
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("chroot-"))
        })
        .collect();
    let release = root.join("target/release");
    inputs.push(release.join("vcontainer"));
    inputs.extend(
        list(&release)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".so")),
    );
    for arch in list(&blob_root()) {
        for runtime in list(&arch) {
            inputs.extend(list(&runtime));
        }
    }
    inputs
}

/// The installer, or None (skip) when `make sdk` has not been run or something it is packed
/// from changed since; a failure under VCONTAINER_E2E=1.
fn sdk_installer() -> Option<PathBuf> {
    let path = installer_path();
    let reason = match mtime(&path) {
        None => format!("{} missing (run `make sdk`)", path.display()),
        Some(built) => match sdk_inputs()
            .into_iter()
            .find(|p| mtime(p).is_some_and(|t| t > built))
        {
            None => return Some(path),
            Some(newer) => format!(
                "{} is stale: {} is newer (run `make sdk`)",
                path.display(),
                newer.display()
            ),
        },
    };
    vcontainer_tests::skip(reason);
    None
}

macro_rules! installer_or_skip {
    () => {
        match sdk_installer() {
            Some(p) => p,
            None => return,
        }
    };
}

/// Run the installer the way a script would: `sh installer ARGS` with no terminal on stdin.
fn run_installer<I, S>(installer: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new("sh")
        .arg(installer)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn the installer")
}

fn install(installer: &Path, dir: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = extra.iter().map(OsStr::new).collect();
    args.push(OsStr::new("-d"));
    args.push(dir.as_os_str());
    run_installer(installer, args)
}

fn assert_installed(o: &Output, dir: &Path) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "installer failed\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    assert!(
        dir.join("bin/vcontainer").is_file(),
        "no bin/vcontainer after: {}",
        stdout(o)
    );
}

/// Install into `<tmp>/first/sdk`, then move it to `<tmp>/moved here/sdk` (a space on
/// purpose): every later use goes through the moved copy.
fn install_and_move(installer: &Path, tmp: &Path) -> (PathBuf, PathBuf) {
    let first = tmp.join("first/sdk");
    let o = install(installer, &first, &[]);
    assert_installed(&o, &first);
    let moved = tmp.join("moved here/sdk");
    std::fs::create_dir_all(moved.parent().expect("parent")).expect("mkdir");
    std::fs::rename(&first, &moved).expect("move the SDK");
    (first, moved)
}

/// `env -i HOME=home PATH=<sdk>/bin:/usr/bin:/bin sh -c '. <sdk>/init-env.sh && SCRIPT' _ ARGS`:
/// nothing from this process's environment leaks in, so the SDK must find everything
/// relative to itself. SCRIPT sees the SDK dir as $1 and ARGS from $2 on.
fn sh_in_sdk(sdk: &Path, home: &Path, script: &str, args: &[&OsStr]) -> Output {
    let mut path = sdk.join("bin").into_os_string();
    path.push(":/usr/bin:/bin");
    Command::new("env")
        .arg("-i")
        .arg(format!("HOME={}", home.display()))
        .arg({
            let mut p = std::ffi::OsString::from("PATH=");
            p.push(&path);
            p
        })
        .args(["sh", "-c"])
        .arg(format!(". \"$1/init-env.sh\" && {script}"))
        .arg("sh")
        .arg(sdk)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn sh")
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn host_has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", "command -v \"$1\" >/dev/null", "sh", program])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn installs_without_questions_and_is_complete() {
    let installer = installer_or_skip!();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("sdk");
    let o = install(&installer, &dir, &[]);
    assert_installed(&o, &dir);
    assert!(
        stdout(&o).contains("init-env.sh"),
        "no usage hint: {}",
        stdout(&o)
    );

    let exe = dir.join("bin/vcontainer");
    let mode = std::fs::metadata(&exe).expect("stat").permissions().mode();
    assert_ne!(mode & 0o111, 0, "bin/vcontainer not executable");
    for link in LINKS {
        let target = std::fs::read_link(dir.join("bin").join(link))
            .unwrap_or_else(|e| panic!("bin/{link} is not a symlink: {e}"));
        assert_eq!(target, Path::new("vcontainer"), "bin/{link} not relative");
    }
    for so in PLUGINS {
        assert!(
            dir.join("lib/vcontainer/plugins").join(so).is_file(),
            "plugin {so} missing"
        );
    }
    for runtime in ["docker", "podman"] {
        if !blobs_present(runtime) {
            continue;
        }
        let blobs = dir.join("share/vcontainer/blobs/x86_64").join(runtime);
        for f in ["bzImage", "initramfs.cpio.gz", "rootfs.img"] {
            assert!(
                blobs.join(f).is_file(),
                "{} missing",
                blobs.join(f).display()
            );
        }
    }
    if host_has("vhost-device-vsock") {
        assert!(
            dir.join("libexec/vhost-device-vsock").is_file(),
            "libexec/vhost-device-vsock missing"
        );
    }
    // issue 17: the SDK carries the host side too, pointed at its own glibc loader here
    if host_has("virtiofsd") {
        assert!(
            dir.join("libexec/virtiofsd").is_file(),
            "libexec/virtiofsd missing"
        );
    }
    let relocated = std::fs::read_to_string(dir.join("lib/vcontainer/host/relocated-to"))
        .expect("lib/vcontainer/host/relocated-to");
    let canonical = dir.canonicalize().expect("canonicalize");
    assert_eq!(relocated.trim_end(), canonical.to_string_lossy());
    let version = std::fs::read_to_string(dir.join("VERSION")).expect("VERSION");
    assert!(version.contains("glibc (bundled): "), "VERSION: {version}");
    assert!(version.starts_with("vcontainer SDK "), "VERSION: {version}");

    // the manifest matches what was extracted, byte for byte
    let o = Command::new("sha256sum")
        .args(["-c", "--quiet", "MANIFEST"])
        .current_dir(&dir)
        .output()
        .expect("sha256sum");
    assert!(
        o.status.success(),
        "MANIFEST check: {}{}",
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn moved_sdk_carries_no_build_paths_and_finds_everything_relative_to_itself() {
    let installer = installer_or_skip!();
    let tmp = tempfile::tempdir().expect("tmp");
    let (first, moved) = install_and_move(&installer, tmp.path());

    // from the moved copy, with a bare environment: the links, the plugins and the
    // doctor's view of blobs and helpers all point inside it
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let o = sh_in_sdk(
        &moved,
        &home,
        "command -v vpdmn && vcontainer plugins --format json",
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let (which, json) = out.split_once('\n').expect("two outputs");
    assert_eq!(Path::new(which), moved.join("bin/vpdmn"));
    let rows: serde_json::Value = serde_json::from_str(json).expect("plugins json");
    let paths: Vec<String> = rows
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r.get("path").and_then(|p| p.as_str()).map(String::from))
        .collect();
    for so in PLUGINS {
        assert!(
            paths
                .iter()
                .any(|p| p.starts_with(&*moved.to_string_lossy()) && p.ends_with(so)),
            "{so} not loaded from the moved SDK: {paths:?}"
        );
    }

    // no absolute build path anywhere (binaries, plugins, scripts, blobs, VERSION, ...),
    // nor, once init-env.sh has pointed the executables at their new place (it did above),
    // the dir it was first installed into
    let mut needles = vec![
        workspace_root().display().to_string(),
        first.display().to_string(),
    ];
    if let Some(target) = target_bin_dir().parent() {
        needles.push(target.display().to_string());
    }
    let mut grep = Command::new("grep");
    grep.arg("-rlF");
    for n in &needles {
        grep.arg("-e").arg(n);
    }
    let o = grep.arg("--").arg(&moved).output().expect("grep");
    assert_eq!(
        o.status.code(),
        Some(1),
        "build or install paths {needles:?} found in: {}{}",
        stdout(&o),
        stderr(&o)
    );

    if blobs_present("podman") {
        let o = sh_in_sdk(&moved, &home, "vpdmn doctor", &[]);
        let report = stdout(&o);
        let blobs = moved.join("share/vcontainer/blobs/x86_64/podman");
        assert!(
            report.contains(&*blobs.to_string_lossy()),
            "doctor did not use the SDK's blobs:\n{report}{}",
            stderr(&o)
        );
        if report.contains("vhost-device-vsock at") && moved.join("libexec").is_dir() {
            assert!(
                report.contains(&*moved.join("bin/../libexec").to_string_lossy()),
                "doctor did not use the SDK's vhost-device-vsock:\n{report}"
            );
        }
    }
}

/// Sourcing init-env.sh (by path, through a symlink, twice) in every shell at hand puts the
/// SDK's bin/ on PATH exactly once and changes nothing else in the environment or the
/// shell's variables.
#[test]
fn init_env_changes_only_path_in_every_shell() {
    let installer = installer_or_skip!();
    let tmp = tempfile::tempdir().expect("tmp");
    let (_, moved) = install_and_move(&installer, tmp.path());
    let link = tmp.path().join("sdk-env/init-env.sh");
    std::fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
    std::os::unix::fs::symlink(moved.join("init-env.sh"), &link).expect("symlink");

    let script = r#"env | LC_ALL=C sort >"$2.env0"; set >"$2.set0"
        . "$1" && . "$1" || exit 9
        env | LC_ALL=C sort >"$2.env1"; set >"$2.set1"
        printf '%s
' "$PATH"; command -v vpdmn"#;
    let mut shells: Vec<Vec<&str>> = vec![vec!["dash"], vec!["bash"], vec!["busybox", "sh"]];
    shells.push(vec!["zsh"]);
    let mut ran = 0;
    for shell in shells {
        if !host_has(shell[0]) {
            continue;
        }
        for (how, env_script) in [
            ("path", moved.join("init-env.sh")),
            ("symlink", link.clone()),
        ] {
            let what = format!("{} via {how}", shell.join(" "));
            let out = tmp.path().join(format!("{}-{how}", shell.join("-")));
            let o = Command::new("env")
                .args(["-i", "HOME=/nonexistent", "PATH=/usr/bin:/bin"])
                .args(&shell)
                .arg("-c")
                .arg(script)
                .arg("sh")
                .arg(&env_script)
                .arg(&out)
                .current_dir("/")
                .output()
                .expect("spawn shell");
            assert_eq!(o.status.code(), Some(0), "{what}: {}", stderr(&o));
            let bin = moved.join("bin");
            assert_eq!(
                stdout(&o),
                format!("{}:/usr/bin:/bin\n{}/vpdmn\n", bin.display(), bin.display()),
                "{what}"
            );
            let read = |ext: &str| {
                std::fs::read_to_string(format!("{}.{ext}", out.display())).expect("dump")
            };
            let env_diff: Vec<String> = read("env1")
                .lines()
                .filter(|l| !read("env0").lines().any(|b| b == *l))
                .map(String::from)
                .collect();
            assert_eq!(
                env_diff,
                [format!("PATH={}:/usr/bin:/bin", bin.display())],
                "{what}: environment changes"
            );
            let set1 = read("set1");
            let leaked: Vec<&str> = set1.lines().filter(|l| l.contains("__vcsdk")).collect();
            assert!(
                leaked.is_empty(),
                "{what}: shell variables left behind: {leaked:?}"
            );
        }
        ran += 1;
    }
    assert!(ran >= 1, "no shell found to source init-env.sh with");
}

#[test]
fn a_non_empty_dir_is_refused_unless_it_holds_an_sdk_and_user_files_survive() {
    let installer = installer_or_skip!();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("busy");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("notes.txt"), "mine\n").expect("write");

    // not an SDK: refused, with -y too, and nothing is written
    for extra in [&[][..], &["-y"][..]] {
        let o = install(&installer, &dir, extra);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{extra:?}: stdout: {}",
            stdout(&o)
        );
        assert!(
            stderr(&o).contains("not empty and holds no vcontainer SDK"),
            "{extra:?}: stderr: {}",
            stderr(&o)
        );
        assert_eq!(dir_entries(&dir), ["notes.txt"], "the refusal wrote files");
    }

    // an SDK with a file of the user's beside it: refused without -y, replaced with it
    std::fs::remove_file(dir.join("notes.txt")).expect("rm");
    let o = install(&installer, &dir, &[]);
    assert_installed(&o, &dir);
    std::fs::write(dir.join("notes.txt"), "mine\n").expect("write");
    let o = install(&installer, &dir, &[]);
    assert_eq!(o.status.code(), Some(1), "stdout: {}", stdout(&o));
    assert!(stderr(&o).contains("use -y"), "stderr: {}", stderr(&o));
    let o = install(&installer, &dir, &["-y"]);
    assert_installed(&o, &dir);
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).expect("notes"),
        "mine\n"
    );

    // installing over an SDK removes the files its manifest lists (a plugin dropped since
    // must not linger), and nothing else
    let stale = dir.join("lib/vcontainer/plugins/libvcontainer_stale.so");
    std::fs::write(&stale, "old").expect("stale plugin");
    let mut manifest = std::fs::read_to_string(dir.join("MANIFEST")).expect("MANIFEST");
    manifest.push_str(&format!(
        "{}  lib/vcontainer/plugins/libvcontainer_stale.so\n",
        "0".repeat(64)
    ));
    std::fs::write(dir.join("MANIFEST"), manifest).expect("MANIFEST");
    let o = install(&installer, &dir, &["-y"]);
    assert_installed(&o, &dir);
    assert!(!stale.exists(), "a file of the old SDK was left behind");
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).expect("notes"),
        "mine\n"
    );
}

#[test]
fn corrupted_or_truncated_payload_exits_2_and_extracts_nothing() {
    let installer = installer_or_skip!();
    let tmp = tempfile::tempdir().expect("tmp");
    let data = std::fs::read(&installer).expect("read installer");

    let mut flipped = data.clone();
    let at = flipped.len() - 1000;
    flipped[at] ^= 0x55;
    let truncated = &data[..data.len() - 4096];

    for (name, bytes) in [("flipped", &flipped[..]), ("truncated", truncated)] {
        let copy = tmp.path().join(format!("{name}.sh"));
        std::fs::write(&copy, bytes).expect("write copy");
        let dir = tmp.path().join(format!("{name}-dir"));
        let o = install(&copy, &dir, &["-y"]);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{name}: stdout {} stderr {}",
            stdout(&o),
            stderr(&o)
        );
        assert!(
            stderr(&o).contains("nothing installed"),
            "{name}: {}",
            stderr(&o)
        );
        assert!(!dir.exists(), "{name}: the target dir was created");
    }
}

/// On a host without QEMU the installer still installs, then names what is missing and the
/// package that provides it.
#[test]
fn missing_qemu_is_reported_with_the_package_to_install() {
    let installer = installer_or_skip!();
    let tmp = tempfile::tempdir().expect("tmp");
    // a PATH with only the tools the installer itself needs: no qemu-system-*
    let tools = tmp.path().join("tools");
    std::fs::create_dir_all(&tools).expect("mkdir");
    for tool in [
        "uname",
        "tail",
        "gzip",
        "zstd",
        "tar",
        "wc",
        "tr",
        "sha256sum",
        "cut",
        "mkdir",
        "ls",
        "grep",
        "rm",
        "cat",
        // relocate.sh (lib/vcontainer/host) points the bundled executables at their loader
        "sh",
        "dirname",
        "cp",
        "dd",
        "mv",
        "awk",
    ] {
        let out = Command::new("sh")
            .args(["-c", "command -v \"$1\"", "sh", tool])
            .output()
            .expect("command -v");
        let found = stdout(&out).trim().to_string();
        if !found.is_empty() {
            std::os::unix::fs::symlink(&found, tools.join(tool)).expect("symlink");
        }
    }
    let dir = tmp.path().join("sdk");
    let o = Command::new("/bin/sh")
        .arg(&installer)
        .arg("-d")
        .arg(&dir)
        .env_clear()
        .env("PATH", &tools)
        .env("HOME", tmp.path())
        .stdin(Stdio::null())
        .output()
        .expect("spawn the installer");
    assert_installed(&o, &dir);
    let out = stdout(&o);
    let arches: Vec<String> = std::fs::read_dir(dir.join("share/vcontainer/blobs"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(!arches.is_empty(), "the SDK holds no blobs: run `make sdk`");
    for arch in &arches {
        // an SDK packed with its QEMU (the default) needs none from the host
        if dir
            .join("libexec")
            .join(format!("qemu-system-{arch}"))
            .is_file()
        {
            assert!(!out.contains(&format!("qemu-system-{arch}: apt")), "{out}");
            assert!(
                out.contains("Bundled (used before any on PATH):")
                    && out.contains(&format!(" qemu-system-{arch}")),
                "{out}"
            );
        }
    }
    let arches: Vec<String> = arches
        .into_iter()
        .filter(|a| {
            !dir.join("libexec")
                .join(format!("qemu-system-{a}"))
                .is_file()
        })
        .collect();
    if arches.is_empty() {
        return;
    }
    assert!(out.contains("Missing on this host"), "{out}");
    for arch in arches {
        let pkg = if arch == "aarch64" {
            "qemu-system-arm"
        } else {
            "qemu-system-x86"
        };
        assert!(
            out.contains(&format!("qemu-system-{arch}: apt install {pkg}")),
            "no hint for qemu-system-{arch}:\n{out}"
        );
        assert!(out.contains("sudo apt-get install"), "{out}");
    }
}

/// `-s` saves the snapshots of the installed guests after installing (docs/snapshot.md), into
/// the installing user's cache dir and for the installed tree (their key holds its blobs' and
/// QEMU's paths); without it nothing is saved and the output says how to do it later.
#[test]
fn snapshots_are_saved_at_install_only_when_asked() {
    let installer = installer_or_skip!();
    if HOST_ARCH != "x86_64" {
        // not a missing prerequisite: the checks below name the x86_64 guests' files
        eprintln!("this test checks an x86_64 host's snapshots");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let snapshots = home.join(".cache/vcontainer/snapshots");
    let install_in = |dir: &Path, extra: &[&str]| {
        Command::new("sh")
            .arg(&installer)
            .args(extra)
            .arg("-d")
            .arg(dir)
            .env("HOME", &home)
            .env_remove("XDG_CACHE_HOME")
            .env_remove("VCONTAINER_SNAPSHOT")
            .stdin(Stdio::null())
            .output()
            .expect("spawn the installer")
    };
    let plain = tmp.path().join("plain");
    let o = install_in(&plain, &[]);
    assert_installed(&o, &plain);
    assert!(stdout(&o).contains("snapshot build"), "{}", stdout(&o));
    assert!(!snapshots.exists(), "saved without -s");

    let dir = tmp.path().join("sdk");
    let o = install_in(&dir, &["-s"]);
    assert_installed(&o, &dir);
    let out = stdout(&o);
    let mut saved: Vec<String> = std::fs::read_dir(&snapshots)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    saved.sort();
    // every installed guest arch: the host's through vdkr/vpdmn, a foreign one through
    // vdkr-<arch>/vpdmn-<arch>
    for (arch, suffix) in [("x86_64", ""), ("aarch64", "-aarch64")] {
        if !dir.join("share/vcontainer/blobs").join(arch).exists() {
            continue;
        }
        for (tool, runtime) in [("vdkr", "docker"), ("vpdmn", "podman")] {
            assert!(
                out.contains(&format!("Saving the {tool}{suffix} VM snapshot... done")),
                "{out}{}",
                stderr(&o)
            );
            let prefix = format!("{runtime}-{arch}-");
            assert!(
                saved
                    .iter()
                    .any(|n| n.starts_with(&prefix) && n.ends_with(".snap")),
                "{saved:?}"
            );
        }
    }
    // the installed tree restores what it saved: `snapshot ls` marks it current
    let o = Command::new(dir.join("bin/vpdmn"))
        .args(["snapshot", "ls"])
        .env("HOME", &home)
        .env_remove("XDG_CACHE_HOME")
        .output()
        .expect("snapshot ls");
    assert!(
        stdout(&o).contains("current"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn help_and_usage_errors() {
    let installer = installer_or_skip!();
    let o = run_installer(&installer, ["-h"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("Usage:") && stdout(&o).contains("-d DIR"));
    assert!(stdout(&o).contains("-s ") && stdout(&o).contains("snapshot"));

    for bad in [&["-q"][..], &["-d"][..], &["-d", ""][..], &["extra"][..]] {
        let o = run_installer(&installer, bad);
        assert_eq!(o.status.code(), Some(1), "{bad:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("Usage:"), "{bad:?}: {}", stderr(&o));
    }
}
