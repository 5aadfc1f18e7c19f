//! Memres ("memory resident") VMs: `start`, `stop`, `restart [--clean]`, `status`, `list`.
//!
//! A started VM belongs to a detached supervisor process (see `supervisor`); these functions
//! only spawn it, signal it, and read vm.json. `vm.lock` serialises start and stop, so four
//! simultaneous starts give one VM: the first boots while holding the lock, the others then
//! find it running.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::blobs;
use super::boot::{StopOutcome, VmPaths};
use super::config::VmConfig;
use super::error::{Result, VmError};
use super::instance::{self, Instance, VmRecord};
use super::lock;
use super::process;
use super::supervisor;
use super::virtiofs;

/// Result of `start`.
#[derive(Debug)]
pub struct Started {
    pub instance: Instance,
    /// True when a VM was already running (nothing was booted).
    pub already_running: bool,
}

/// Start the memres VM for `cfg.state_dir` unless one is running: the supervisor is spawned
/// detached, and its one answer line says whether the VM is ready.
pub fn start(cfg: &VmConfig) -> Result<Started> {
    let _lock = lock::exclusive(&cfg.state_dir)?;
    if let Some(instance) = Instance::find(&cfg.state_dir) {
        return Ok(Started {
            instance,
            already_running: true,
        });
    }
    reap_stale(&cfg.state_dir, cfg.shutdown_timeout());
    let sup_cfg = supervisor_config(cfg)?;
    let log_path = cfg.state_dir.join("supervisor.log");
    let (mut child, stdout) = spawn_supervisor(cfg, &sup_cfg, &log_path)?;
    let budget = cfg.boot_timeout() + cfg.shutdown_timeout() + Duration::from_secs(30);
    match await_answer(stdout, budget) {
        Answer::Ready => ready(cfg),
        Answer::Failed(msg) => {
            let _ = child.wait();
            Err(VmError::Other(msg))
        }
        Answer::Exited => {
            let st = child.wait().map(|s| s.to_string()).unwrap_or_default();
            Err(VmError::Supervisor(format!(
                "exited ({st}) before the VM was ready; see {}",
                log_path.display()
            )))
        }
        Answer::Unreadable(e) => Err(VmError::io("reading from the VM supervisor", e)),
        Answer::Silent => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                Signal::SIGTERM,
            );
            Err(VmError::Supervisor(format!(
                "no answer within {} s; see {}",
                budget.as_secs(),
                log_path.display()
            )))
        }
    }
}

/// The supervisor's copy of `cfg`: blobs resolved here (so a missing blob is reported by
/// the CLI, not buried in a log), volume shares as the environment allows (memres VMs serve
/// live volumes; batch VMs copy them), an absolute state dir (it runs in `/`).
fn supervisor_config(cfg: &VmConfig) -> Result<VmConfig> {
    let blobs = blobs::resolve_for(cfg)?;
    let mut sup_cfg = cfg.clone();
    sup_cfg.blob_dir = Some(blobs.dir);
    sup_cfg.host_share = virtiofs::enabled_by_env();
    sup_cfg.state_dir = std::path::absolute(&cfg.state_dir)
        .map_err(|e| VmError::io("resolving the state dir", e))?;
    Ok(sup_cfg)
}

/// The supervisor started in its own session (terminal signals, such as Ctrl-C in the shell
/// that ran `memres start`, never reach the VM), logging to `log_path`, its config in the
/// environment, with a pipe for its answer.
fn spawn_supervisor(
    cfg: &VmConfig,
    sup_cfg: &VmConfig,
    log_path: &Path,
) -> Result<(std::process::Child, ChildStdout)> {
    let json = serde_json::to_string(sup_cfg).map_err(|e| VmError::Other(e.to_string()))?;
    let argv = supervisor_argv(cfg)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| VmError::io(format!("opening {}", log_path.display()), e))?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env(supervisor::CONFIG_ENV, json)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches from our session and terminal.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    process::close_other_fds(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| VmError::io(format!("starting the VM supervisor {:?}", argv[0]), e))?;
    match child.stdout.take() {
        Some(stdout) => Ok((child, stdout)),
        None => Err(VmError::Supervisor("no pipe to the supervisor".into())),
    }
}

/// What the supervisor answered on its stdout.
#[derive(Debug)]
enum Answer {
    /// `ready`: the VM answered Hello and vm.json is written.
    Ready,
    /// `error <json string>`: the boot failed, with the message for the user.
    Failed(String),
    /// Its stdout closed first: it died.
    Exited,
    Unreadable(std::io::Error),
    /// Nothing within the budget.
    Silent,
}

/// Reads the supervisor's one answer line. Other lines are skipped, so a supervisor run
/// under a wrapper that prints something still works.
fn await_answer(stdout: impl std::io::Read + Send + 'static, budget: Duration) -> Answer {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let answer = loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => break Answer::Exited,
                Ok(_) if line.trim_end() == "ready" => break Answer::Ready,
                Ok(_) => {
                    if let Some(msg) = line.trim_end().strip_prefix("error ") {
                        let msg = serde_json::from_str(msg).unwrap_or_else(|_| msg.to_string());
                        break Answer::Failed(msg);
                    }
                }
                Err(e) => break Answer::Unreadable(e),
            }
        };
        let _ = tx.send(answer);
    });
    rx.recv_timeout(budget).unwrap_or(Answer::Silent)
}

/// The VM the supervisor reported ready, found through vm.json; its boot's snapshot note is
/// the `-v` line a one-shot would print.
fn ready(cfg: &VmConfig) -> Result<Started> {
    let instance = Instance::find(&cfg.state_dir).ok_or_else(|| {
        VmError::Supervisor(format!(
            "reported ready but the VM is gone; see {}",
            cfg.console_log().display()
        ))
    })?;
    if let Some(note) = &instance.record.snapshot_note {
        tracing::info!("{note}");
    }
    Ok(Started {
        instance,
        already_running: false,
    })
}

/// How to run the supervisor: `cfg.supervisor_command`, or this executable + the subcommand.
fn supervisor_argv(cfg: &VmConfig) -> Result<Vec<OsString>> {
    if let Some(a) = cfg.supervisor_command.clone().filter(|a| !a.is_empty()) {
        return Ok(a);
    }
    let exe = std::env::current_exe().map_err(|e| VmError::io("locating this executable", e))?;
    Ok(vec![exe.into(), supervisor::SUBCOMMAND.into()])
}

/// Clear what a dead VM left behind; stop a half-dead one (QEMU alive without supervisor, or
/// a supervisor still shutting down). Called with vm.lock held.
fn reap_stale(state_dir: &Path, timeout: Duration) {
    let Some(record) = VmRecord::read(state_dir) else {
        if let Ok(p) = VmPaths::new(state_dir) {
            super::boot::remove_vm_files(&p);
        }
        return;
    };
    let sup = record.supervisor();
    // a supervisor that saw QEMU die is cleaning up: let it finish
    if sup.is_alive() && !sup.wait_gone(Duration::from_secs(10)) {
        sup.signal(Signal::SIGKILL);
        sup.wait_gone(Duration::from_secs(5));
    }
    if record.qemu().is_alive() {
        supervisor::stop_orphan(&record, timeout);
    }
    // (stop_orphan stops it too; after a dead QEMU it may still run; the volume shares'
    // virtiofsd go with remove_vm_files)
    if let Some(v) = record.vhost_vsock() {
        if v.signal(Signal::SIGKILL) {
            v.wait_gone(Duration::from_secs(5));
        }
    }
    super::boot::remove_vm_files(&record.paths);
    // live volumes lived in the dead VM's memory: nothing left to sync
    for f in [
        instance::VM_JSON,
        instance::PORT_FORWARDS_JSON,
        instance::LIVE_VOLUMES_JSON,
    ] {
        let _ = std::fs::remove_file(state_dir.join(f));
    }
}

/// What `stop` found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    NotRunning,
    /// The supervisor shut the guest down (cleanly, unless its log says otherwise).
    BySupervisor,
    /// The supervisor was gone or stuck; the VM was stopped directly.
    Directly(StopOutcome),
}

/// Stop the memres VM of `state_dir` with a clean guest shutdown; never leaves QEMU or
/// vhost-device-vsock running.
pub fn stop(state_dir: &Path, shutdown_timeout: Duration) -> Result<Stopped> {
    let _lock = lock::exclusive(state_dir)?;
    let Some(record) = VmRecord::read(state_dir) else {
        reap_stale(state_dir, shutdown_timeout);
        return Ok(Stopped::NotRunning);
    };
    let sup = record.supervisor();
    let qemu = record.qemu();
    if !sup.is_alive() && !qemu.is_alive() {
        reap_stale(state_dir, shutdown_timeout);
        return Ok(Stopped::NotRunning);
    }
    let mut result = Stopped::BySupervisor;
    // the supervisor gets the whole clean-shutdown budget plus its escalation
    if !(sup.signal(Signal::SIGTERM) && sup.wait_gone(shutdown_timeout + Duration::from_secs(20))) {
        sup.signal(Signal::SIGKILL);
        sup.wait_gone(Duration::from_secs(5));
    }
    if qemu.is_alive() {
        result = Stopped::Directly(supervisor::stop_orphan(&record, shutdown_timeout));
    }
    if let Some(v) = record.vhost_vsock() {
        if v.is_alive() {
            v.signal(Signal::SIGKILL);
            v.wait_gone(Duration::from_secs(5));
        }
    }
    reap_stale(state_dir, shutdown_timeout);
    Ok(result)
}

/// Stop, optionally delete the VM's persistent state (state disk, logs), start again.
pub fn restart(cfg: &VmConfig, clean: bool) -> Result<Started> {
    stop(&cfg.state_dir, cfg.shutdown_timeout())?;
    if clean {
        let _lock = lock::exclusive(&cfg.state_dir)?;
        for f in [
            cfg.state_disk_path(),
            cfg.console_log(),
            cfg.state_dir.join("console.log.old"),
            cfg.state_dir.join(instance::ACTIVITY),
        ] {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(VmError::io(format!("removing {}", f.display()), e)),
            }
        }
    }
    start(cfg)
}

/// `memres status`: Some(line starting "running") or None ("not running", rc 1).
pub fn status(state_dir: &Path) -> Option<String> {
    Instance::find(state_dir).map(|i| describe(&i))
}

/// One line about a running instance.
pub fn describe(i: &Instance) -> String {
    let r = &i.record;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let up = now.saturating_sub(r.started_at);
    let mut s = format!(
        "running (pid {}, {} {} {}, up {}s, transport {}, accel {}, {} MiB, {} cpus",
        r.qemu_pid,
        r.runtime,
        r.arch,
        i.state_dir.display(),
        up,
        r.transport,
        r.accel,
        r.memory_mib,
        r.cpus
    );
    let forwards = instance::read_port_forwards(&i.state_dir);
    if !forwards.is_empty() {
        let f: Vec<String> = forwards.iter().map(|f| f.to_string()).collect();
        s.push_str(&format!(", ports {}", f.join(" ")));
    }
    if i.shares_volumes() {
        s.push_str(", live volumes (virtiofs per volume)");
    }
    s.push(')');
    s
}

/// Running instances among `roots` and their direct subdirectories (e.g. `~/.vdkr`,
/// `~/.vpdmn`, whose children are the per-arch / `-I name` state dirs).
pub fn list(roots: &[PathBuf]) -> Vec<Instance> {
    let mut dirs = Vec::new();
    for root in roots {
        dirs.push(root.clone());
        if let Ok(rd) = std::fs::read_dir(root) {
            let mut children: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            children.sort();
            dirs.extend(children);
        }
    }
    dirs.iter().filter_map(|d| Instance::find(d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supervisors_answer_is_its_one_ready_or_error_line() {
        let answer = |text: &'static str| {
            await_answer(
                std::io::Cursor::new(text.as_bytes()),
                Duration::from_secs(5),
            )
        };
        assert!(matches!(answer("wrapper noise\nready\n"), Answer::Ready));
        assert!(
            matches!(answer("error \"no kvm\"\n"), Answer::Failed(m) if m == "no kvm"),
            "the JSON string is decoded"
        );
        assert!(
            matches!(answer("error not json\n"), Answer::Failed(m) if m == "not json"),
            "kept as written when it is not JSON"
        );
        assert!(matches!(answer("noise\n"), Answer::Exited));
        // a pipe that stays open and silent
        let (r, _w) = std::os::unix::net::UnixStream::pair().expect("pair");
        assert!(matches!(
            await_answer(r, Duration::from_millis(100)),
            Answer::Silent
        ));
    }

    #[test]
    fn status_and_stop_on_an_empty_state_dir() {
        let t = tempfile::tempdir().expect("tmp");
        assert!(status(t.path()).is_none());
        assert_eq!(
            stop(t.path(), Duration::from_secs(1)).expect("stop"),
            Stopped::NotRunning
        );
        assert!(list(&[t.path().to_path_buf()]).is_empty());
    }

    #[test]
    fn start_without_blobs_is_a_clear_error_and_starts_nothing() {
        let t = tempfile::tempdir().expect("tmp");
        let mut cfg = VmConfig::new(super::super::Arch::X86_64, "podman", t.path());
        cfg.blob_dir = Some(t.path().join("none"));
        let e = start(&cfg).expect_err("no blobs");
        assert!(e.to_string().contains("make guest"), "{e}");
        assert!(!t.path().join(instance::VM_JSON).exists());
    }
}
