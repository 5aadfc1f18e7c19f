//! Harness for the end-to-end tests: runs the real `vcontainer` binary under its multi-call
//! names (vdkr, vpdmn, vdkr-aarch64, ...) with a private HOME, against the real guest blobs.
//!
//! The binaries and plugins come from the workspace target dir (`make test` builds them
//! first); the blobs from `build/blobs` (`make guest`). Tests that need the VM call
//! [`require_vm`], which skips with a reason on a developer machine without blobs but fails
//! when `VCONTAINER_E2E=1` (set by `make test` in CI), so CI can never pass by skipping.

pub mod fixtures;
pub mod net;
pub mod terminal;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (where Cargo.toml and build/ live).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The directory holding the built `vcontainer` binary and plugin `.so` files.
pub fn target_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("VCONTAINER_TEST_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // test executables live in target/<profile>/deps; the binary one level up
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| workspace_root().join("target/debug"))
}

/// The cache dir (`XDG_CACHE_HOME`) of every test's commands: one per build dir, so the VM
/// snapshots (docs/snapshot.md) saved by one test are restored by the next instead of each
/// test saving its own. Sound because a snapshot's key covers blobs, QEMU, memory and cpus;
/// tests of the save itself (tests/tests/snapshot.rs) use their world's own `~/.cache`.
/// Never the user's real cache.
pub fn shared_cache_dir() -> PathBuf {
    target_bin_dir().join("e2e-cache")
}

/// Where `make guest` puts the blobs.
pub fn blob_root() -> PathBuf {
    std::env::var_os("VCONTAINER_BLOB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("build/blobs"))
}

/// True when the guest blobs for `runtime` on x86_64 exist.
pub fn blobs_present(runtime: &str) -> bool {
    blobs_present_for("x86_64", runtime)
}

/// True when the guest blobs for `runtime` on `arch` (x86_64 or aarch64) exist.
pub fn blobs_present_for(arch: &str, runtime: &str) -> bool {
    let dir = blob_root().join(arch).join(runtime);
    let kernel = if arch == "aarch64" {
        "Image"
    } else {
        "bzImage"
    };
    [kernel, "initramfs.cpio.gz", "rootfs.img"]
        .iter()
        .all(|f| dir.join(f).is_file())
}

/// Decide whether a VM test can run: Ok(()) to run, Err(reason) to skip.
/// Panics (fails the test) when VCONTAINER_E2E=1 and the blobs are missing.
pub fn require_vm(runtime: &str) -> Result<(), String> {
    require_vm_for("x86_64", runtime)
}

/// [`require_vm`] for the guest of `arch`.
pub fn require_vm_for(arch: &str, runtime: &str) -> Result<(), String> {
    if blobs_present_for(arch, runtime) {
        return Ok(());
    }
    let reason = format!(
        "{arch} guest blobs for {runtime} missing under {} (run `make guest`)",
        blob_root().display()
    );
    fail_under_e2e(&reason);
    Err(reason)
}

/// Whether this run must not skip: `VCONTAINER_E2E=1` (set by `make test` in CI).
pub fn e2e_required() -> bool {
    std::env::var("VCONTAINER_E2E").as_deref() == Ok("1")
}

/// Panics (fails the test) with `reason` when [`e2e_required`]; otherwise returns.
pub fn fail_under_e2e(reason: &str) {
    if e2e_required() {
        panic!("VCONTAINER_E2E=1 but {reason}");
    }
}

/// The one way an e2e test skips for a missing prerequisite (a tool, a fixture): prints
/// `SKIPPED: reason`, or fails the test under `VCONTAINER_E2E=1`, so CI cannot pass by
/// skipping. The caller returns after it.
pub fn skip(reason: impl std::fmt::Display) {
    let reason = reason.to_string();
    fail_under_e2e(&reason);
    eprintln!("SKIPPED: {reason}");
}

/// Skip the current test with a printed reason when the VM cannot run here
/// (`vm_or_skip!(runtime)` for the x86_64 guest, `vm_or_skip!(runtime, arch)` for another).
#[macro_export]
macro_rules! vm_or_skip {
    ($runtime:expr) => {
        $crate::vm_or_skip!($runtime, "x86_64")
    };
    ($runtime:expr, $arch:expr) => {
        if let Err(reason) = $crate::require_vm_for($arch, $runtime) {
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
}

/// A private world for one test: its own HOME (so state dirs and config are isolated)
/// and a bin dir with the multi-call links.
pub struct World {
    pub home: tempfile::TempDir,
    pub bin: PathBuf,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    pub fn new() -> Self {
        let home = tempfile::Builder::new()
            .prefix("vct-")
            .tempdir()
            .expect("temp home");
        let bin = home.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        let exe = target_bin_dir().join("vcontainer");
        for name in [
            "vcontainer",
            "vdkr",
            "vpdmn",
            "vdkr-x86_64",
            "vdkr-aarch64",
            "vpdmn-x86_64",
            "vpdmn-aarch64",
            "vrunner",
            "vrunner.sh",
        ] {
            std::os::unix::fs::symlink(&exe, bin.join(name)).expect("link");
        }
        World { home, bin }
    }

    /// A command for `tool` (e.g. "vpdmn") with this world's HOME, plugins and blobs.
    pub fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        c.env("HOME", self.home.path())
            .env("XDG_CACHE_HOME", shared_cache_dir())
            .env("VCONTAINER_PLUGIN_PATH", target_bin_dir())
            .env("VCONTAINER_BLOB_DIR", blob_root())
            .env_remove("VDKR_ARCH")
            .env_remove("VPDMN_ARCH")
            .env_remove("VDKR_STATE_DIR")
            .env_remove("VPDMN_STATE_DIR");
        c
    }

    /// Run `tool args...` and capture everything.
    pub fn run<I, S>(&self, tool: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd(tool)
            .args(args)
            .output()
            .expect("spawn vcontainer")
    }

    /// Run `tool args...`, assert it exited 0 (showing both streams if not), return stdout.
    pub fn run_ok<I, S>(&self, tool: &str, args: I) -> String
    where
        I: IntoIterator<Item = S> + std::fmt::Debug + Clone,
        S: AsRef<OsStr>,
    {
        let o = self.run(tool, args.clone());
        assert_eq!(
            o.status.code(),
            Some(0),
            "{tool} {args:?}: stdout {} stderr {}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }
}

/// Stdout of an Output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr of an Output as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// PIDs of running processes whose command line contains `needle` (for leak checks).
pub fn pids_matching(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

/// The static busybox for images of the OCI architecture `oci_arch`: the host's own
/// (busybox-static) for amd64, Debian's busybox-static of the foreign arches for the others,
/// fetched by `scripts/fetch-test-busybox.sh` (run by `make test`) into the build cache.
pub fn busybox_for(oci_arch: &str) -> std::io::Result<PathBuf> {
    let debian_arch = match oci_arch {
        "amd64" => {
            return ["/bin/busybox", "/usr/bin/busybox"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .ok_or_else(|| std::io::Error::other("busybox-static is not installed"));
        }
        "arm64" => "arm64",
        "arm" => "armhf",
        "386" => "i386",
        other => {
            return Err(std::io::Error::other(format!(
                "no test busybox for OCI arch {other}"
            )))
        }
    };
    let path = std::env::var_os("CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("build/cache"))
        .join("test-busybox")
        .join(debian_arch)
        .join("busybox");
    if path.is_file() {
        Ok(path)
    } else {
        Err(std::io::Error::other(format!(
            "{} is missing (run scripts/fetch-test-busybox.sh)",
            path.display()
        )))
    }
}

/// Write a tar of a minimal busybox rootfs (busybox-static from Debian, with links for the
/// applets the tests use) to `path`: the offline test image for `import`/`vimport`.
pub fn busybox_rootfs_tar(path: &Path) -> std::io::Result<()> {
    busybox_rootfs_tar_for(path, "amd64")
}

/// [`busybox_rootfs_tar`] with the busybox of the OCI architecture `oci_arch`, so that an
/// image labelled arm64 holds arm64 code.
pub fn busybox_rootfs_tar_for(path: &Path, oci_arch: &str) -> std::io::Result<()> {
    let busybox = busybox_for(oci_arch)?;
    let file = std::fs::File::create(path)?;
    let mut b = tar::Builder::new(file);
    let dir = |b: &mut tar::Builder<std::fs::File>, name: &str| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, name, std::io::empty())
    };
    for d in ["bin", "tmp", "etc", "proc", "sys", "dev", "root", "data"] {
        dir(&mut b, d)?;
    }
    let data = std::fs::read(busybox)?;
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    b.append_data(&mut h, "bin/busybox", data.as_slice())?;
    for applet in [
        "sh", "echo", "cat", "ls", "uname", "sleep", "true", "false", "env", "id", "pwd", "printf",
        "touch", "rm", "mkdir", "wc", "head", "nc", "httpd", "sed", "grep", "test", "tr",
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n";
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(passwd.len() as u64);
    h.set_mtime(0);
    b.append_data(&mut h, "etc/passwd", &passwd[..])?;
    b.into_inner()?.sync_all()
}

/// Waits up to 30 s until no QEMU or vhost-device-vsock process mentions `needle` (a
/// state dir or a test's HOME) on its command line; fails the test otherwise. The wait only
/// bounds a hang (it returns as soon as they are gone): a loaded CI machine may take
/// seconds to let a QEMU that was told to quit actually exit.
pub fn assert_no_vm_processes(needle: &Path) {
    let needle = needle.to_string_lossy().into_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left: Vec<u32> = pids_matching(&needle)
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| {
                        let c = String::from_utf8_lossy(&c);
                        c.contains("qemu-system")
                            || c.contains("vhost-device-vsock")
                            || c.contains("virtiofsd")
                    })
                    .unwrap_or(false)
            })
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "VM processes left behind for {needle}: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The state disk image passes `e2fsck -n -f`: the VM stopped without corrupting it.
pub fn assert_fsck_clean(img: &Path) {
    let out = Command::new("e2fsck")
        .args(["-n", "-f"])
        .arg(img)
        .output()
        .expect("run e2fsck");
    assert!(
        out.status.success(),
        "state disk {} not clean: {}{}",
        img.display(),
        stdout(&out),
        stderr(&out)
    );
}
