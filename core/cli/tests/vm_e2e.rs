//! End-to-end tests of the VM layer (`vcontainer::vm`) against the real guest: real QEMU
//! (TCG), real vhost-device-vsock, the real agent in the blobs from `make guest`.
//!
//! Needs build/blobs/x86_64/podman/ (or VCONTAINER_BLOB_DIR). Without blobs each test prints
//! why and returns early, so `cargo test` on a machine without a guest still passes; with
//! VCONTAINER_E2E=1 (`make test`, CI) missing blobs are a failure instead. The tests are not
//! `#[ignore]`d, so CI runs them with a plain `cargo test` (`--include-ignored` changes
//! nothing). They run one at a time (`ONE_VM_AT_A_TIME`): parallel TCG guests on a small CI
//! machine only make every boot slower.
//!
//! These tests boot cold (`VmConfig::snapshot` false): the cold-boot path stays tested in CI
//! while the CLI suites start from snapshots (docs/snapshot.md).
//!
//! The memres supervisor is normally `vcontainer __vm-supervisor`; here it is this test
//! executable re-run with `supervisor_entry` as its filter (see that function), so the tests
//! do not depend on how the binary's dispatcher is wired.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vcontainer::agent_client::{self, ExecRequest, ExitStatus};
use vcontainer::vm::{self, memres, Arch, VmConfig};

/// Not a test: the memres supervisor when this executable is started by `memres::start`.
#[test]
fn supervisor_entry() {
    if std::env::var_os(vm::supervisor::CONFIG_ENV).is_some() {
        std::process::exit(vm::supervisor::main());
    }
}

static ONE_VM_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A guard serialising the VM tests, or None (after saying why) when there are no blobs.
fn blobs_or_skip() -> Option<std::sync::MutexGuard<'static, ()>> {
    match vm::blobs::resolve(None, None, Arch::X86_64, "podman") {
        Ok(_) => Some(
            ONE_VM_AT_A_TIME
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        ),
        Err(e) => {
            assert!(
                std::env::var("VCONTAINER_E2E").as_deref() != Ok("1"),
                "VCONTAINER_E2E is set but the guest blobs are missing: {e}"
            );
            eprintln!("SKIPPED: no guest blobs ({e}); run `make guest` first");
            None
        }
    }
}

fn config(state: &Path) -> VmConfig {
    let mut cfg = VmConfig::new(Arch::X86_64, "podman", state);
    cfg.state_disk_size_mib = 1024;
    // the cold-boot path (snapshots are on by default: docs/snapshot.md); they also write to
    // the user's cache dir, which these tests must not touch
    cfg.snapshot = false;
    let exe = std::env::current_exe().expect("test exe");
    cfg.supervisor_command = Some(vec![
        exe.into(),
        "supervisor_entry".into(),
        "--exact".into(),
        "--nocapture".into(),
    ]);
    cfg
}

/// A short state dir (Unix socket paths must stay under 108 bytes) that stops its memres VM
/// before it is deleted, also when a test fails half-way (a memres VM outlives its starter
/// by design, so a panicking test would otherwise leave one running).
struct StateDir {
    path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = memres::stop(&self.path, Duration::from_secs(30));
    }
}

fn state_dir() -> (StateDir, PathBuf) {
    let t = tempfile::Builder::new()
        .prefix("vm-e2e")
        .tempdir_in("/tmp")
        .expect("tmp");
    let s = t.path().join("x86_64");
    std::fs::create_dir_all(&s).expect("mkdir");
    (
        StateDir {
            path: s.clone(),
            _tmp: t,
        },
        s,
    )
}

fn run(i: &vm::Instance, argv: &[&str]) -> Result<(ExitStatus, String, String), String> {
    let conn = i.connect().map_err(|e| e.to_string())?;
    run_on(i, conn, argv)
}

/// `run` on a connection made beforehand.
fn run_on(
    i: &vm::Instance,
    conn: vm::AgentStream,
    argv: &[&str],
) -> Result<(ExitStatus, String, String), String> {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let st = agent_client::exec(
        conn,
        ExecRequest::new(argv.iter().copied()),
        None,
        &mut out,
        &mut err,
    )
    .map_err(|e| match i.explain_disconnect() {
        Some(vm_gone) => format!("VMGONE: {vm_gone}"),
        None => e.to_string(),
    })?;
    Ok((
        st,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    ))
}

/// Pids of QEMU / vhost-device-vsock / virtiofsd processes whose command line mentions `needle`.
fn vm_processes(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if !zombie
            && cmd.contains(needle)
            && (cmd.contains("qemu-system")
                || cmd.contains("vhost-device-vsock")
                || cmd.contains("virtiofsd"))
        {
            found.push(pid);
        }
    }
    found
}

fn assert_no_vm_processes(state: &Path) {
    let needle = state.to_string_lossy().into_owned();
    // only bounds a hang: a loaded machine may take a while to let QEMU exit
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = vm_processes(&needle);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The running VM's console log has `line`.
fn assert_console(state: &Path, line: &str) {
    let console = std::fs::read_to_string(state.join("console.log")).expect("console.log");
    assert!(
        console.contains(line),
        "no {line:?} in the console:\n{console}"
    );
}

fn assert_fsck_clean(img: &Path) {
    let o = std::process::Command::new("e2fsck")
        .args(["-n", "-f"])
        .arg(img)
        .output()
        .expect("e2fsck");
    assert!(
        o.status.success(),
        "e2fsck -n {}: {}{}",
        img.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn memres_start_exec_kill_restart_stop() {
    let Some(_one_vm) = blobs_or_skip() else {
        return;
    };
    let (_tmp, state) = state_dir();
    let cfg = config(&state);

    // four simultaneous starts give one VM
    let t0 = Instant::now();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let c = cfg.clone();
            std::thread::spawn(move || memres::start(&c))
        })
        .collect();
    let started: Vec<memres::Started> = starts
        .into_iter()
        .map(|h| h.join().expect("thread").expect("memres start"))
        .collect();
    let boot_wall = t0.elapsed();
    let booted = started.iter().filter(|s| !s.already_running).count();
    assert_eq!(booted, 1, "exactly one start boots");
    let qemu_pid = started[0].instance.record.qemu_pid;
    assert!(started
        .iter()
        .all(|s| s.instance.record.qemu_pid == qemu_pid));
    eprintln!(
        "boot to hello: {} ms (wall incl. supervisor: {} ms)",
        started[0].instance.record.boot_ms,
        boot_wall.as_millis()
    );

    let line = memres::status(&state).expect("running");
    assert!(line.starts_with("running"), "{line}");
    // a new disk is clean: mounted without e2fsck (docs/guest-contract.md, "The state disk")
    assert_console(
        &state,
        "state disk /dev/vdb was cleanly unmounted: not checked",
    );
    let i = vm::Instance::find(&state).expect("instance");
    let hello = agent_client::hello(i.connect().expect("connect")).expect("hello");
    assert_eq!(hello.runtime, "podman");

    let (st, out, err) = run(&i, &["uname", "-m"]).expect("exec");
    assert_eq!(st, ExitStatus::Code(0), "stderr: {err}");
    assert_eq!(out, "x86_64\n");

    // QEMU killed mid-command: a distinct error naming the console log. The connection is
    // made before the kill (on a slow machine a connect still under way would see a dead VM
    // instead of losing a running command).
    let conn = i.connect().expect("connect");
    let i2 = i.clone();
    let long = std::thread::spawn(move || run_on(&i2, conn, &["sleep", "60"]));
    std::thread::sleep(Duration::from_secs(2));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(qemu_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill qemu");
    let e = long.join().expect("thread").expect_err("must fail");
    assert!(e.starts_with("VMGONE: "), "{e}");
    assert!(e.contains("console.log"), "{e}");

    // the next start boots a new VM on the same state disk
    let again = memres::start(&cfg).expect("start after kill");
    assert!(!again.already_running);
    assert_ne!(again.instance.record.qemu_pid, qemu_pid);
    let (st, out, _) = run(&again.instance, &["uname", "-m"]).expect("exec");
    assert_eq!((st, out.as_str()), (ExitStatus::Code(0), "x86_64\n"));
    // the killed VM left its disk mounted (ext4 with a journal: marked for recovery), so
    // this boot checked it
    assert_console(
        &state,
        "checking the state disk /dev/vdb: the journal needs recovery",
    );

    // stop leaves nothing running and a clean disk
    let stopped = memres::stop(&state, cfg.shutdown_timeout()).expect("stop");
    assert_eq!(stopped, memres::Stopped::BySupervisor);
    assert!(memres::status(&state).is_none());
    assert_no_vm_processes(&state);
    assert!(!state.join("vm.json").exists());
    assert_fsck_clean(&cfg.state_disk_path());
    assert_eq!(
        memres::stop(&state, cfg.shutdown_timeout()).expect("stop again"),
        memres::Stopped::NotRunning
    );
}

#[test]
fn batch_boot_run_shutdown_leaves_nothing() {
    let Some(_one_vm) = blobs_or_skip() else {
        return;
    };
    let (_tmp, state) = state_dir();
    let cfg = config(&state);
    let b = vm::boot_batch(&cfg).expect("boot");
    eprintln!("batch boot to hello: {} ms", b.boot_time().as_millis());
    let conn = b.connect().expect("connect");
    let mut out = Vec::new();
    let mut err = Vec::new();
    let st = agent_client::exec(
        conn,
        ExecRequest::new(["sh", "-c", "echo out; echo err >&2; exit 7"]),
        None,
        &mut out,
        &mut err,
    )
    .expect("exec");
    assert_eq!(st, ExitStatus::Code(7));
    assert_eq!(out, b"out\n");
    assert_eq!(err, b"err\n");
    assert_eq!(b.shutdown(), vm::boot::StopOutcome::Clean);
    assert_no_vm_processes(&state);
    assert_fsck_clean(&cfg.state_disk_path());
}

/// A boot that fails once its processes run (here QEMU refuses a kernel that is not one)
/// undoes itself: QEMU and vhost-device-vsock are gone, and so are the agent secret and the
/// sockets; the error names QEMU's exit and the console log. No guest boots, so this is quick.
#[test]
fn a_boot_that_fails_after_starting_leaves_no_process_and_no_file() {
    let Some(_one_vm) = blobs_or_skip() else {
        return;
    };
    let (_tmp, state) = state_dir();
    let blobs = vm::blobs::resolve(None, None, Arch::X86_64, "podman").expect("blobs");
    let fake = state.join("fake-blobs");
    std::fs::create_dir_all(&fake).expect("mkdir");
    std::fs::write(fake.join("bzImage"), b"not a kernel").expect("kernel");
    for f in [&blobs.initramfs, &blobs.rootfs] {
        let name = f.file_name().expect("name");
        std::os::unix::fs::symlink(f, fake.join(name)).expect("link");
    }
    let mut cfg = config(&state);
    cfg.blob_dir = Some(fake);
    cfg.transport = Some(vm::transport::TransportKind::Hybrid);
    let e = vm::boot::boot(&cfg).expect_err("no kernel to boot");
    assert!(
        matches!(e, vm::VmError::BootExited { .. }),
        "QEMU's exit is the error: {e}"
    );
    assert!(e.to_string().contains("console.log"), "{e}");
    assert_no_vm_processes(&state);
    let paths = vm::boot::VmPaths::new(&state).expect("paths");
    for p in [
        &paths.agent_secret,
        &paths.qmp_socket,
        &paths.vsock_socket,
        &paths.vhost_user_socket,
    ] {
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

#[test]
fn idle_timeout_stops_the_guest_cleanly_and_restart_clean_recreates_the_disk() {
    let Some(_one_vm) = blobs_or_skip() else {
        return;
    };
    let (_tmp, state) = state_dir();
    let mut cfg = config(&state);
    cfg.idle_timeout_secs = 3;
    let s = memres::start(&cfg).expect("start");
    assert!(!s.already_running);
    let deadline = Instant::now() + Duration::from_secs(90);
    // the supervisor removes vm.json after the guest powered off and QEMU exited
    while state.join("vm.json").exists() {
        assert!(
            Instant::now() < deadline,
            "idle timeout did not stop the VM"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(memres::status(&state).is_none());
    assert_no_vm_processes(&state);
    let log = std::fs::read_to_string(state.join("vm.log")).expect("vm.log");
    assert!(log.contains("stopping: idle timeout"), "{log}");
    assert!(log.contains("stopped: Clean"), "{log}");
    assert_fsck_clean(&cfg.state_disk_path());

    // restart --clean: a new, empty state disk
    let old_disk = std::fs::File::options()
        .write(true)
        .open(cfg.state_disk_path())
        .expect("disk");
    old_disk
        .set_modified(std::time::UNIX_EPOCH)
        .expect("mark the old disk");
    drop(old_disk);
    cfg.idle_timeout_secs = 0;
    let r = memres::restart(&cfg, true).expect("restart --clean");
    assert!(!r.already_running);
    let mtime = std::fs::metadata(cfg.state_disk_path())
        .expect("disk")
        .modified()
        .expect("mtime");
    assert_ne!(mtime, std::time::UNIX_EPOCH, "the old disk was kept");
    assert_eq!(
        memres::list(&[state.parent().expect("parent").to_path_buf()]).len(),
        1,
        "list finds the instance in a child dir of the root"
    );
    memres::stop(&state, cfg.shutdown_timeout()).expect("stop");
    assert_no_vm_processes(&state);
}
