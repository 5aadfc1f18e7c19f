//! The built binary, run through links named like the installed ones (vdkr-aarch64, ...),
//! with HOME in a temp dir: arch precedence, state paths, vconfig, safe clean, parsing.

// test helpers outside #[test] fns: a failed setup step should just panic
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

const NAMES: &[&str] = &[
    "vcontainer",
    "vdkr",
    "vpdmn",
    "vdkr-x86_64",
    "vdkr-aarch64",
    "vpdmn-x86_64",
    "vpdmn-aarch64",
    "vdkr-riscv64",
    "docker",
];

/// The cargo target dir holding the binary under test and the plugins built with it.
fn build_dir() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vcontainer"))
        .parent()
        .expect("<target>/<profile>/vcontainer")
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("bin")).unwrap();
        fs::create_dir(dir.path().join("home")).unwrap();
        fs::create_dir(dir.path().join("work")).unwrap();
        for name in NAMES {
            std::os::unix::fs::symlink(
                env!("CARGO_BIN_EXE_vcontainer"),
                dir.path().join("bin").join(name),
            )
            .unwrap();
        }
        Fixture { dir }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The link `name`, with a clean environment: HOME in the fixture, no VDKR_*/VPDMN_*.
    fn cmd(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.dir.path().join("bin").join(name));
        cmd.env_clear()
            .env("HOME", self.home())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            // a build tree names its plugins: they are never taken from beside the binary
            .env("VCONTAINER_PLUGIN_PATH", build_dir())
            .current_dir(self.work());
        cmd
    }

    fn run(&self, name: &str, args: &[&str]) -> Output {
        self.cmd(name).args(args).output().unwrap()
    }

    fn run_env(&self, name: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = self.cmd(name);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(args).output().unwrap()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config_path(&self, tool: &str) -> PathBuf {
        self.home().join(".config").join(tool).join("config")
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn host_arch() -> &'static str {
    std::env::consts::ARCH
}

/// `vstorage path` for a link + env + args; asserts success.
fn storage_path(f: &Fixture, name: &str, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["vstorage", "path"]);
    let o = f.run_env(name, env, &all);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    stdout(&o).trim_end().to_string()
}

#[test]
fn vstorage_path_of_vpdmn_aarch64_ends_in_dot_vpdmn_aarch64() {
    let f = Fixture::new();
    let path = storage_path(&f, "vpdmn-aarch64", &[], &[]);
    assert!(path.ends_with(".vpdmn/aarch64"), "{path}");
    assert!(Path::new(&path).starts_with(f.home().canonicalize().unwrap()));
}

#[test]
fn arch_precedence_flag_name_env_config_host() {
    let f = Fixture::new();
    // host, when nothing else says
    let p = storage_path(&f, "vdkr", &[], &[]);
    assert!(p.ends_with(&format!(".vdkr/{}", host_arch())), "{p}");

    // config beats host
    let o = f.run("vdkr", &["vconfig", "arch", "aarch64"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(storage_path(&f, "vdkr", &[], &[]).ends_with(".vdkr/aarch64"));

    // env beats config
    let env = [("VDKR_ARCH", "x86_64")];
    assert!(storage_path(&f, "vdkr", &env, &[]).ends_with(".vdkr/x86_64"));

    // only the tool's own prefix counts
    let other = [("VPDMN_ARCH", "x86_64")];
    assert!(storage_path(&f, "vdkr", &other, &[]).ends_with(".vdkr/aarch64"));

    // program name beats env
    let env = [("VDKR_ARCH", "aarch64")];
    assert!(storage_path(&f, "vdkr-x86_64", &env, &[]).ends_with(".vdkr/x86_64"));

    // flag beats program name; OCI alias accepted
    assert!(storage_path(&f, "vdkr-x86_64", &env, &["-a", "arm64"]).ends_with(".vdkr/aarch64"));
    assert!(storage_path(&f, "vdkr-aarch64", &[], &["--arch", "x86_64"]).ends_with(".vdkr/x86_64"));
}

#[test]
fn legacy_arch_file_is_read_after_the_config_key() {
    let f = Fixture::new();
    let dir = f.home().join(".config/vpdmn");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("arch"), "aarch64\n").unwrap();
    assert!(storage_path(&f, "vpdmn", &[], &[]).ends_with(".vpdmn/aarch64"));
}

#[test]
fn vstorage_path_honours_its_arch_argument() {
    let f = Fixture::new();
    let o = f.run("vdkr-x86_64", &["vstorage", "path", "aarch64"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).trim_end().ends_with(".vdkr/aarch64"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn unknown_arch_is_exit_125_with_a_clear_message() {
    let f = Fixture::new();
    for (name, args, env) in [
        ("vdkr", vec!["-a", "riscv64", "vstorage", "path"], vec![]),
        ("vdkr-riscv64", vec!["vstorage", "path"], vec![]),
        (
            "vdkr",
            vec!["vstorage", "path"],
            vec![("VDKR_ARCH", "riscv64")],
        ),
        ("vdkr", vec!["vstorage", "path", "riscv64"], vec![]),
    ] {
        let o = f.run_env(name, &env, &args);
        assert_eq!(o.status.code(), Some(125), "{name} {args:?}");
        let err = stderr(&o);
        assert!(
            err.contains("riscv64") && err.contains("x86_64, aarch64"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "one-line error: {err}");
    }
}

#[test]
fn state_dir_env_and_instance_and_relative_state_dir() {
    let f = Fixture::new();
    let root = f.dir.path().join("roots/vd");
    let env = [("VDKR_STATE_DIR", root.to_str().unwrap())];
    assert_eq!(
        storage_path(&f, "vdkr-aarch64", &env, &[]),
        root.join("aarch64").to_str().unwrap()
    );
    assert!(storage_path(&f, "vdkr", &[], &["-I", "ci"]).ends_with(".vdkr/ci"));
    let p = storage_path(&f, "vdkr", &[], &["--state-dir", "rel/../st"]);
    assert_eq!(
        p,
        f.work()
            .canonicalize()
            .unwrap()
            .join("st")
            .to_str()
            .unwrap()
    );
    let o = f.run("vdkr", &["-I", "../escape", "vstorage", "path"]);
    assert_eq!(o.status.code(), Some(125));
}

#[test]
fn vconfig_set_get_show_reset() {
    let f = Fixture::new();
    let o = f.run("vpdmn", &["vconfig", "memory", "4096"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "confirmation goes to stderr");
    assert_eq!(
        fs::read_to_string(f.config_path("vpdmn")).unwrap(),
        "memory=4096\n"
    );
    assert_eq!(stdout(&f.run("vpdmn", &["vconfig", "memory"])), "4096\n");
    assert_eq!(stdout(&f.run("vpdmn", &["vconfig", "cpus"])), "2\n");
    let show = stdout(&f.run("vpdmn", &["vconfig"]));
    assert!(show.contains("  memory = 4096\n"), "{show}");
    assert!(show.contains("  cpus = 2 (default)\n"), "{show}");
    assert!(show.contains("Config directory: "), "{show}");
    let o = f.run("vpdmn", &["vconfig", "memory", "--reset"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("Reset memory to default: 2048"));
    assert_eq!(fs::read_to_string(f.config_path("vpdmn")).unwrap(), "");
}

#[test]
fn vconfig_errors_exit_125_and_leave_the_file_untouched() {
    let f = Fixture::new();
    let path = f.config_path("vdkr");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let original = "# keep me\narch=aarch64\nauto-daemon=false\n";
    fs::write(&path, original).unwrap();
    for (args, expect) in [
        (
            vec!["vconfig", "daemon", "yes"],
            "valid keys: arch, timeout",
        ),
        (vec!["vconfig", "idle", "5"], "unknown config key 'idle'"),
        (vec!["vconfig", "state", "x"], "unknown config key"),
        (
            vec!["vconfig", "arch", "riscv64"],
            "valid values: x86_64, aarch64",
        ),
        (
            vec!["vconfig", "verbose", "yes"],
            "valid values: true, false",
        ),
        (vec!["vconfig", "timeout", "0"], "integer >= 1"),
        (vec!["vconfig", "cpus", "-3"], "integer >= 1"),
        (vec!["vconfig", "state-dir", "relative"], "absolute path"),
        (vec!["vconfig", "nokey", "--reset"], "unknown config key"),
    ] {
        let o = f.run("vdkr", &args);
        assert_eq!(o.status.code(), Some(125), "{args:?}");
        assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
        assert_eq!(fs::read_to_string(&path).unwrap(), original, "{args:?}");
    }
    // no temp file left beside it
    assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
}

#[test]
fn bad_stored_config_value_is_an_error_naming_the_file() {
    let f = Fixture::new();
    let path = f.config_path("vdkr");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, "arch=sparc\n").unwrap();
    let o = f.run("vdkr", &["vstorage", "path"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("sparc"), "{}", stderr(&o));
}

/// Makes a state dir the way the tool does (dir + marker).
fn make_state_dir(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(".vcontainer-state"), "test\n").unwrap();
    fs::write(dir.join("podman-state.img"), vec![0u8; 4096]).unwrap();
}

#[test]
fn clean_all_with_state_dir_leaves_user_files_and_siblings_alone() {
    let f = Fixture::new();
    let parent = f.work().join("project");
    fs::create_dir_all(parent.join("src")).unwrap();
    fs::write(parent.join("notes.txt"), "mine").unwrap();
    fs::write(parent.join("src/main.c"), "int main(void){return 0;}").unwrap();
    fs::create_dir(parent.join("photos")).unwrap();
    fs::write(parent.join("photos/cat.jpg"), "jpg").unwrap();
    let state = parent.join("state");
    make_state_dir(&state);
    // a marked per-arch dir in the default root and an unmarked user dir beside it
    make_state_dir(&f.home().join(".vpdmn/x86_64"));
    fs::create_dir_all(f.home().join(".vpdmn/keep")).unwrap();
    fs::write(f.home().join(".vpdmn/keep/data"), "x").unwrap();

    let o = f.run(
        "vpdmn",
        &["--state-dir", "project/state", "vstorage", "clean", "--all"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!state.exists(), "the marked state dir is deleted");
    assert!(!f.home().join(".vpdmn/x86_64").exists());
    // what was cleaned is printed on stdout, one line per dir (issue 12 item 7)
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Cleaned: ") && out.contains("x86_64"), "{out}");
    assert!(out.lines().any(|l| l.ends_with("project/state")), "{out}");
    assert_eq!(
        fs::read_to_string(parent.join("notes.txt")).unwrap(),
        "mine"
    );
    assert!(parent.join("src/main.c").is_file());
    assert!(parent.join("photos/cat.jpg").is_file());
    assert!(f.home().join(".vpdmn/keep/data").is_file());
    assert!(f.home().join(".vpdmn").is_dir(), "the root itself stays");
}

#[test]
fn clean_refuses_a_dir_without_marker() {
    let f = Fixture::new();
    let user = f.work().join("src");
    fs::create_dir(&user).unwrap();
    fs::write(user.join("main.rs"), "fn main() {}").unwrap();
    for args in [
        vec!["--state-dir", "src", "clean"],
        vec!["--state-dir", "src", "vstorage", "clean"],
    ] {
        let o = f.run("vdkr", &args);
        assert_eq!(o.status.code(), Some(125), "{args:?}");
        assert!(stderr(&o).contains("marker"), "{}", stderr(&o));
        assert!(user.join("main.rs").is_file());
    }
}

#[test]
fn clean_of_the_current_dir_and_of_an_arch() {
    let f = Fixture::new();
    let a = f.home().join(".vdkr/aarch64");
    let x = f.home().join(".vdkr/x86_64");
    make_state_dir(&a);
    make_state_dir(&x);
    let o = f.run("vdkr-aarch64", &["clean"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!a.exists() && x.exists());
    let o = f.run("vdkr-aarch64", &["clean"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("No storage directory found"),
        "{}",
        stderr(&o)
    );
    let o = f.run("vdkr", &["vstorage", "clean", "x86_64"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!x.exists());
}

struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn clean_refuses_while_a_memres_vm_runs() {
    let f = Fixture::new();
    let state = f.home().join(".vdkr/x86_64");
    make_state_dir(&state);
    let sleeper = Sleeper(Command::new("sleep").arg("60").spawn().unwrap());
    fs::write(
        state.join("vm.json"),
        format!(r#"{{"qemu_pid": {}}}"#, sleeper.0.id()),
    )
    .unwrap();
    for args in [
        vec!["clean"],
        vec!["vstorage", "clean"],
        vec!["vstorage", "clean", "--all"],
    ] {
        let o = f.run("vdkr-x86_64", &args);
        assert_eq!(o.status.code(), Some(125), "{args:?}");
        assert!(
            stderr(&o).contains("memres VM is running"),
            "{}",
            stderr(&o)
        );
        assert!(state.join("podman-state.img").is_file());
    }
    let list = stdout(&f.run("vdkr-x86_64", &["vstorage", "list"]));
    assert!(
        list.contains(&format!("memres running (PID {})", sleeper.0.id())),
        "{list}"
    );
    drop(sleeper);
    let o = f.run("vdkr-x86_64", &["clean"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!state.exists());
}

#[test]
fn vstorage_list_shows_only_marked_dirs() {
    let f = Fixture::new();
    make_state_dir(&f.home().join(".vdkr/aarch64"));
    fs::create_dir_all(f.home().join(".vdkr/photos")).unwrap();
    let o = f.run("vdkr", &["vstorage", "list"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.contains("aarch64\n  Path:"), "{out}");
    assert!(!out.contains("photos"), "{out}");
    assert!(out.contains("Status: no memres"), "{out}");
    let f2 = Fixture::new();
    let out = stdout(&f2.run("vdkr", &["vstorage"]));
    assert!(out.contains("(no storage directories found)"), "{out}");
}

#[test]
fn version_help_and_completion() {
    let f = Fixture::new();
    let o = f.run("vpdmn-aarch64", &["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        format!("vpdmn version {}\n", env!("CARGO_PKG_VERSION"))
    );
    let o = f.run("vdkr", &["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&o);
    // the runtime's commands come from its plugin, the VM and core commands from the core
    for word in [
        "--insecure-registry",
        "--stateless",
        "vconfig",
        "vrun",
        "Pause containers",
        "memres",
        "doctor",
    ] {
        assert!(help.contains(word), "{word} missing in help");
    }
    assert!(!help.contains('\x1b'), "no colour when not on a terminal");
    for shell in ["bash", "zsh", "fish"] {
        let o = f.run("vdkr", &["completion", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}");
        let script = stdout(&o);
        assert!(script.contains("vdkr"), "{shell}");
        assert!(script.contains("vimport"), "{shell}: VM commands completed");
        assert!(
            script.contains("unpause"),
            "{shell}: the plugin's commands completed"
        );
    }
}

#[test]
fn help_after_the_command_is_not_the_tools_help() {
    let f = Fixture::new();
    // no blobs: parsing is what is checked, and no VM is left running
    let o = f.run(
        "vdkr",
        &[
            "--blob-dir",
            "/nonexistent-blobs",
            "run",
            "alpine",
            "ls",
            "--help",
        ],
    );
    assert!(!stdout(&o).contains("Usage: vdkr"), "{}", stdout(&o));
    assert!(
        !stderr(&o).contains("unexpected argument"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn runtime_commands_are_not_faked() {
    // Without guest blobs nothing can run: the command must fail (125) and say why, never
    // claim success.
    let f = Fixture::new();
    let o = f.run("vdkr", &["--blob-dir", "/nonexistent-blobs", "images"]);
    assert_eq!(o.status.code(), Some(125), "must not claim success");
    assert!(
        stderr(&o).contains("guest blobs") && stderr(&o).contains("make guest"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn usage_errors_are_125() {
    let f = Fixture::new();
    let o = f.run("vdkr", &["--no-such-option", "images"]);
    assert_eq!(o.status.code(), Some(125));
    let o = f.run("vdkr", &["frobnicate"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).starts_with("vdkr: error: unknown command 'frobnicate'"));
    let o = f.run("vcontainer", &["images"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("--runtime"), "{}", stderr(&o));
    let o = f.run("vdkr", &["--runtime", "podman", "images"]);
    assert_eq!(o.status.code(), Some(125));
    let o = f.run("vdkr", &["--state-dir", "/x", "--stateless", "images"]);
    assert_eq!(o.status.code(), Some(125));
}

#[test]
fn runtime_command_prepares_a_marked_state_dir_and_stateless_a_private_one() {
    let f = Fixture::new();
    let tmp = f.dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let tmp_s = tmp.to_str().unwrap();
    let _ = f.run_env(
        "vpdmn",
        &[("TMPDIR", tmp_s)],
        &[
            "--state-dir",
            "sd",
            "--blob-dir",
            "/nonexistent-blobs",
            "images",
        ],
    );
    assert!(f.work().join("sd/.vcontainer-state").is_file());
    let _ = f.run_env(
        "vpdmn-aarch64",
        &[("TMPDIR", tmp_s)],
        &["--stateless", "--blob-dir", "/nonexistent-blobs", "images"],
    );
    assert!(
        !f.home().join(".vpdmn/aarch64").exists(),
        "--stateless must not touch the persistent instance"
    );
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "the temporary state dir is removed at exit"
    );
}

#[test]
fn doctor_reports_each_runtime_without_needing_one() {
    let f = Fixture::new();
    let o = f.run("vcontainer", &["doctor"]);
    let out = stdout(&o);
    assert!(
        matches!(o.status.code(), Some(0) | Some(1)),
        "{}",
        stderr(&o)
    );
    assert!(
        out.contains("guest: docker") && out.contains("guest: podman"),
        "{out}"
    );
    let o = f.run("vpdmn-aarch64", &["doctor"]);
    let out = stdout(&o);
    assert!(
        out.contains("guest: podman aarch64") && !out.contains("docker"),
        "{out}"
    );
    let o = f.run("vcontainer", &["doctor", "--bogus"]);
    assert_eq!(o.status.code(), Some(125));
}

#[test]
fn runtime_alias_names_use_the_tools_state_dir() {
    let f = Fixture::new();
    // a link named after the runtime acts as vdkr: never ~/.docker (the real docker's dir)
    let p = storage_path(&f, "docker", &[], &["-a", "aarch64"]);
    assert!(p.ends_with(".vdkr/aarch64"), "{p}");
    let p = storage_path(
        &f,
        "vcontainer",
        &[],
        &["--runtime", "vpdmn", "-a", "x86_64"],
    );
    assert!(p.ends_with(".vpdmn/x86_64"), "{p}");
}

#[test]
fn plugins_lists_and_reports_unloadable_files() {
    let f = Fixture::new();
    let dir = f.dir.path().join("plugins");
    fs::create_dir(&dir).unwrap();
    let bogus = dir.join("libvcontainer_bogus.so");
    fs::write(&bogus, "not an ELF file").unwrap();
    let env = [("VCONTAINER_PLUGIN_PATH", dir.to_str().unwrap())];
    let o = f.run_env("vcontainer", &env, &["plugins", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&*bogus.to_string_lossy()),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).trim_start().starts_with('['), "{}", stdout(&o));
    let o = f.run_env("vdkr", &env, &["plugins"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("KIND"), "{}", stdout(&o));
    let o = f.run("vcontainer", &["plugins", "--format", "yaml"]);
    assert_eq!(o.status.code(), Some(125));
}

#[test]
fn memres_help_prints_its_usage_and_an_unknown_subcommand_is_125() {
    let f = Fixture::new();
    for flag in ["--help", "-h", "help"] {
        let o = f.run("vpdmn", &["memres", flag]);
        assert_eq!(o.status.code(), Some(0), "{flag}: {}", stderr(&o));
        assert!(
            stdout(&o).contains("usage: vpdmn memres start") && stdout(&o).contains("clean-ports"),
            "{flag}: {}",
            stdout(&o)
        );
    }
    let o = f.run("vpdmn", &["memres", "sart"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("unknown memres subcommand 'sart'"),
        "{}",
        stderr(&o)
    );
    assert!(!f
        .home()
        .join(".vpdmn")
        .join(host_arch())
        .join("vm.json")
        .exists());
}

// ---------------------------------------------------------------------------------------
// The old tool's bugs in the command front (docs/old-bugs.md §2, §4, §17, §19)

/// A runtime command that cannot boot (no blobs there): it fails at blob resolution, after
/// the front has read every option, setting and environment variable.
const NO_BLOBS: &[&str] = &["--blob-dir", "/nonexistent-blobs", "images"];

// §8.2 vstorage with --state-dir

/// §8.2: `vstorage list` with `--state-dir X` listed every sibling of X as "storage"; only
/// dirs holding our marker are listed here, and `clean --all` deletes only them.
#[test]
fn vstorage_list_and_clean_with_state_dir_ignore_unmarked_siblings() {
    let f = Fixture::new();
    let project = f.path("work/project");
    fs::create_dir_all(project.join("src")).unwrap();
    fs::write(project.join("src/main.c"), "int main;").unwrap();
    fs::create_dir_all(project.join("state")).unwrap();
    fs::write(project.join("state/.vcontainer-state"), "vpdmn\n").unwrap();
    let o = f.run(
        "vpdmn",
        &["--state-dir", "project/state", "vstorage", "list"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("state\n  Path:"), "{out}");
    assert!(!out.contains("src"), "an unmarked sibling is listed: {out}");
    let o = f.run(
        "vpdmn",
        &["--state-dir", "project/state", "vstorage", "clean", "--all"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!project.join("state").exists());
    assert_eq!(
        fs::read_to_string(project.join("src/main.c")).unwrap(),
        "int main;"
    );
}

// §8.4 global options stop at the command

/// §8.4: `--version`, `--help`, `-it`, `--config` after the command belong to the
/// container command: the tool neither answers them itself nor takes them as its own
/// options (it goes on to the VM, which is not there, and says so).
#[test]
fn tool_options_after_the_command_reach_the_container_command() {
    let f = Fixture::new();
    for args in [
        &["exec", "-it", "c1", "sh", "--version"][..],
        &["run", "-ti", "alpine", "python", "--help"],
        &["run", "alpine", "cat", "--config", "/nonexistent/auth.json"],
    ] {
        let mut all = vec!["--blob-dir", "/nonexistent-blobs"];
        all.extend_from_slice(args);
        let o = f.run("vdkr", &all);
        assert_eq!(o.status.code(), Some(125), "{args:?}: {}", stderr(&o));
        assert!(
            !stdout(&o).contains("vdkr version") && !stdout(&o).contains("Usage: vdkr"),
            "{args:?}: the tool answered: {}",
            stdout(&o)
        );
        assert!(
            stderr(&o).contains("guest blobs") && !stderr(&o).contains("--config"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

// §8.17 environment variables of the other tool

/// §8.17: `VDKR_TIMEOUT` / `VDKR_VERBOSE` applied to vpdmn too (and `VPDMN_*` to vdkr). An
/// invalid value makes the tool that reads it fail, naming it: only the owner fails.
#[test]
fn timeout_and_verbose_variables_apply_to_their_own_tool_only() {
    let f = Fixture::new();
    for (var, value) in [("TIMEOUT", "abc"), ("VERBOSE", "maybe")] {
        for (owner, other) in [("vdkr", "vpdmn"), ("vpdmn", "vdkr")] {
            let name = format!("{}_{var}", owner.to_uppercase());
            let env = [(name.as_str(), value)];
            let o = f.run_env(owner, &env, NO_BLOBS);
            assert_eq!(o.status.code(), Some(125), "{owner} {name}");
            assert!(
                stderr(&o).contains(&format!("${name}")),
                "{owner} did not read {name}: {}",
                stderr(&o)
            );
            let o = f.run_env(other, &env, NO_BLOBS);
            assert_eq!(o.status.code(), Some(125), "{other} {name}");
            assert!(
                !stderr(&o).contains(&name) && stderr(&o).contains("guest blobs"),
                "{other} read {name}: {}",
                stderr(&o)
            );
        }
    }
}

/// §8.17: `VDKR_BLOB_DIR` was used by vpdmn. Each tool's blob variable is its own (`doctor`
/// names where the blobs came from); `VCONTAINER_BLOB_DIR` is the shared one.
#[test]
fn blob_dir_variables_apply_to_their_own_tool_only() {
    let f = Fixture::new();
    let fake = f.path("fake-blobs");
    fs::create_dir(&fake).unwrap();
    let fake_s = fake.to_str().unwrap();
    for (owner, other) in [("vdkr", "vpdmn"), ("vpdmn", "vdkr")] {
        let name = format!("{}_BLOB_DIR", owner.to_uppercase());
        let env = [(name.as_str(), fake_s)];
        let mine = stdout(&f.run_env(owner, &env, &["doctor"]));
        let blobs_line = |report: &str| {
            report
                .lines()
                .find(|l| l.contains("blobs:"))
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            blobs_line(&mine).contains(fake_s) && blobs_line(&mine).contains(&name),
            "{owner} ignored {name}: {mine}"
        );
        let theirs = stdout(&f.run_env(other, &env, &["doctor"]));
        assert!(
            !theirs.contains(fake_s) && !theirs.contains(&name),
            "{other} used {name}: {theirs}"
        );
    }
}

/// §8.17: the state dir variable likewise.
#[test]
fn state_dir_variable_applies_to_its_own_tool_only() {
    let f = Fixture::new();
    let root = f.path("roots");
    let env = [("VDKR_STATE_DIR", root.to_str().unwrap())];
    let o = f.run_env("vdkr-x86_64", &env, &["vstorage", "path"]);
    assert_eq!(stdout(&o).trim_end(), root.join("x86_64").to_str().unwrap());
    let o = f.run_env("vpdmn-x86_64", &env, &["vstorage", "path"]);
    assert!(
        stdout(&o).trim_end().ends_with(".vpdmn/x86_64"),
        "vpdmn used VDKR_STATE_DIR: {}",
        stdout(&o)
    );
}

// §8.19 no silent backend switch

/// §8.19: the old tools switched to the Xen backend whenever `xl` was on PATH. There is no
/// Xen backend here: an `xl` on PATH is never run and changes no output.
#[test]
fn an_xl_on_path_changes_nothing() {
    let f = Fixture::new();
    let xen_bin = f.path("xen-bin");
    fs::create_dir(&xen_bin).unwrap();
    let marker = f.path("xl-was-run");
    let xl = xen_bin.join("xl");
    fs::write(
        &xl,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\nexit 0\n", marker.display()),
    )
    .unwrap();
    fs::set_permissions(&xl, fs::Permissions::from_mode(0o755)).unwrap();
    let with_xl = format!(
        "{}:{}",
        xen_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (tool, args) in [
        ("vdkr", &["doctor"][..]),
        ("vpdmn", &["doctor"]),
        ("vdkr", NO_BLOBS),
        ("vpdmn", NO_BLOBS),
    ] {
        let plain = f.run(tool, args);
        let xen = f.run_env(tool, &[("PATH", &with_xl)], args);
        assert_eq!(xen.status.code(), plain.status.code(), "{tool} {args:?}");
        assert_eq!(stdout(&xen), stdout(&plain), "{tool} {args:?}");
        assert_eq!(stderr(&xen), stderr(&plain), "{tool} {args:?}");
        assert!(
            !stdout(&xen).to_lowercase().contains("xen"),
            "{}",
            stdout(&xen)
        );
    }
    assert!(!marker.exists(), "xl was run");
}

/// `vcontainer plugins --format json` run from `exe` (a hard link of the binary under test,
/// so that its own path is `exe`) with no plugin path: the names of the plugins it found.
fn plugins_found_from(exe: &Path) -> Vec<String> {
    let o = Command::new(exe)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["plugins", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn plugins_come_from_the_install_prefix_never_from_beside_the_binary() {
    // under the target dir: same filesystem as the binary, so it can be hard linked
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let plugin = "libvcontainer_runtime_docker.so";
    let place = |exe_dir: &Path, plugin_dir: &Path| -> PathBuf {
        fs::create_dir_all(exe_dir).unwrap();
        fs::create_dir_all(plugin_dir).unwrap();
        let exe = exe_dir.join("vcontainer");
        fs::hard_link(env!("CARGO_BIN_EXE_vcontainer"), &exe)
            .or_else(|_| fs::copy(env!("CARGO_BIN_EXE_vcontainer"), &exe).map(|_| ()))
            .unwrap();
        fs::copy(build_dir().join(plugin), plugin_dir.join(plugin)).unwrap();
        exe
    };
    // a binary in a download or build dir with a plugin beside it: not loaded
    let loose = tmp.path().join("downloads");
    let exe = place(&loose, &loose);
    assert_eq!(plugins_found_from(&exe), Vec::<String>::new());
    // <prefix>/bin/vcontainer loads <prefix>/lib/vcontainer/plugins
    let prefix = tmp.path().join("prefix");
    let exe = place(&prefix.join("bin"), &prefix.join("lib/vcontainer/plugins"));
    assert_eq!(plugins_found_from(&exe), ["docker"]);
    // and still nothing from <prefix>/bin itself
    fs::remove_file(prefix.join("lib/vcontainer/plugins").join(plugin)).unwrap();
    fs::copy(build_dir().join(plugin), prefix.join("bin").join(plugin)).unwrap();
    assert_eq!(plugins_found_from(&exe), Vec::<String>::new());
}

#[test]
fn a_plugin_file_others_can_write_is_refused_with_exit_125_and_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let dir = f.dir.path().join("plugins");
    fs::create_dir(&dir).unwrap();
    let so = dir.join("libvcontainer_runtime_docker.so");
    fs::copy(build_dir().join("libvcontainer_runtime_docker.so"), &so).unwrap();
    fs::set_permissions(&so, fs::Permissions::from_mode(0o755)).unwrap();
    let env = [("VCONTAINER_PLUGIN_PATH", dir.to_str().unwrap())];
    let o = f.run_env("vcontainer", &env, &["plugins", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"docker\""), "{}", stdout(&o));

    fs::set_permissions(&so, fs::Permissions::from_mode(0o757)).unwrap();
    for (tool, args) in [
        ("vcontainer", &["plugins"][..]),
        ("vdkr", &["--blob-dir", "/nonexistent-blobs", "images"][..]),
    ] {
        let o = f.run_env(tool, &env, args);
        assert_eq!(o.status.code(), Some(125), "{tool}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!(
                "refusing plugin file {}: it is writable by all users",
                so.display()
            )) && err.contains("mode 0757")
                && err.contains(&format!("fix: chmod go-w {}", so.display())),
            "{tool}: {err}"
        );
        assert_eq!(stdout(&o), "", "{tool}");
    }
    // a dir anyone can write (no sticky bit): the file could be replaced
    fs::set_permissions(&so, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let o = f.run_env("vcontainer", &env, &["plugins"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "the directory {} above it is writable by all users",
            dir.display()
        )),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_state_dir_others_can_write_is_refused_with_exit_125_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let sd = f.work().join("sd");
    fs::create_dir(&sd).unwrap();
    fs::set_permissions(&sd, fs::Permissions::from_mode(0o777)).unwrap();
    let o = f.run(
        "vdkr",
        &[
            "--state-dir",
            sd.to_str().unwrap(),
            "--blob-dir",
            "/nonexistent-blobs",
            "images",
        ],
    );
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "refusing state dir {}: it is writable by all users",
            sd.display()
        )) && err.contains("mode 0777")
            && err.contains(&format!("fix: chmod go-w {}", sd.display())),
        "{err}"
    );
    assert_eq!(fs::read_dir(&sd).unwrap().count(), 0, "nothing written");

    // the default state dir under a home others can write is not created at all
    fs::set_permissions(f.home(), fs::Permissions::from_mode(0o777)).unwrap();
    let o = f.run("vdkr", &["--blob-dir", "/nonexistent-blobs", "images"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "the directory {} above it is writable by all users",
            f.home().display()
        )),
        "{}",
        stderr(&o)
    );
    assert!(!f.home().join(".vdkr").exists());
}
