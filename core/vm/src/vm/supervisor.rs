//! The detached owner of one memres VM: `vcontainer __vm-supervisor` (hidden subcommand).
//!
//! Started by `memres::start` with setsid, stdin /dev/null, stderr to `<state>/supervisor.log`
//! and no other inherited fd; its stdout is a pipe on which it reports exactly one line
//! (`ready` or `error <json string>`) and which it then closes, so no caller ever waits on a
//! pipe held by a daemon (the old tool's 30-minute hang). It boots the VM (its children die
//! with it through PR_SET_PDEATHSIG), writes vm.json, then sleeps in poll() on a signal self-pipe
//! and a pidfd of QEMU, waking up for: SIGTERM/SIGINT/SIGHUP (`memres stop`), QEMU exiting, or the
//! idle check. Every stop it makes is a clean guest shutdown through the agent, or a suspend
//! (`vm::suspend`: the VM saved with its disk, for the next start) when it may be.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::boot::{self, RunningVm};
use super::config::VmConfig;
use super::engine_api;
use super::instance::{self, VmRecord};
use super::lock;
use super::process::{Proc, ProcId};
use super::suspend::{self, Suspended};
use super::transport::Endpoint;
use super::{forwards, shares};

/// Environment variable carrying the VmConfig as JSON to the supervisor.
pub const CONFIG_ENV: &str = "VCONTAINER_VM_SUPERVISOR_CONFIG";
/// The hidden subcommand name the dispatcher must route to [`main`].
pub const SUBCOMMAND: &str = "__vm-supervisor";

/// Entry point of the hidden subcommand; returns the process exit code.
pub fn main() -> i32 {
    // the starter may have given up on us; a write to its pipe must not kill us
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let cfg = match read_config() {
        Ok(c) => c,
        Err(e) => {
            report_error(&format!("bad {CONFIG_ENV}: {e}"));
            return 2;
        }
    };
    // the suspended VM, else the snapshot when snapshots are on and one fits, else cold
    let mut vm = match suspend::boot(&cfg) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("boot failed: {e}");
            report_error(&e.to_string());
            return 1;
        }
    };
    let signals = match set_up(&vm) {
        Ok(signals) => signals,
        Err((e, why)) => {
            report_error(&e);
            let t = vm.cfg.shutdown_timeout();
            stop_vm(&mut vm, why, t);
            return 1;
        }
    };
    announce_ready(&cfg, &vm);
    let why = watch(&mut vm, &signals);
    end(&mut vm, why);
    cleanup_files(&cfg.state_dir);
    0
}

/// The VmConfig the starter passed in the environment (removed from it: children of ours
/// have no use for it).
fn read_config() -> Result<VmConfig, String> {
    let cfg = std::env::var(CONFIG_ENV)
        .map_err(|e| e.to_string())
        .and_then(|j| serde_json::from_str(&j).map_err(|e| e.to_string()))?;
    std::env::remove_var(CONFIG_ENV);
    Ok(cfg)
}

/// What a booted VM needs before it is reported ready: the stop signals caught (from here a
/// signal wakes the watch loop instead of killing us), vm.json, the exposed engine API. On
/// failure: the message and what the stop is for.
fn set_up(vm: &RunningVm) -> Result<OwnedFd, (String, &'static str)> {
    let signals = signal_pipe().map_err(|e| (e, "supervisor setup failed"))?;
    write_record(vm).map_err(|e| (e.to_string(), "cannot write vm.json"))?;
    expose_api(vm).map_err(|e| (e, "cannot expose the engine API"))?;
    Ok(signals)
}

/// The VM's activity clock and static forwards recorded, its boot logged, `ready` reported
/// and the starter's pipe closed.
fn announce_ready(cfg: &VmConfig, vm: &RunningVm) {
    instance::touch_activity(&cfg.state_dir);
    let _ = instance::write_port_forwards(&cfg.state_dir, &cfg.port_forwards);
    boot::log(
        &vm.paths,
        &format!(
            "ready in {} ms (transport {}, accel {}: {})",
            vm.boot_time.as_millis(),
            vm.transport.kind,
            vm.accel.accel,
            vm.accel.reason
        ),
    );
    if let Some(note) = &vm.snapshot_note {
        boot::log(&vm.paths, note);
    }
    if let Some(why) = &vm.host_share_note {
        boot::log(&vm.paths, &format!("no volume shares: {why}"));
    }
    report("ready");
    detach_stdout();
}

/// The VM's end after the watch: a clean guest shutdown, unless QEMU is gone already (then
/// only what it leaves behind is cleaned up).
fn end(vm: &mut RunningVm, why: Wake) {
    if matches!(why, Wake::QemuExited) {
        boot::log(
            &vm.paths,
            "QEMU exited by itself (killed, or the guest crashed/powered off)",
        );
        for v in vm.vhost.iter_mut() {
            v.terminate(Duration::from_secs(2));
        }
        super::boot::remove_vm_files(&vm.paths);
        return;
    }
    // without vhost-device-vsock the agent is unreachable: no point waiting for it
    let timeout = match why {
        Wake::VhostExited => Duration::ZERO,
        _ => vm.cfg.shutdown_timeout(),
    };
    stop_vm(vm, why.describe(), timeout);
}

/// The starter's `error <json string>` line.
fn report_error(message: &str) {
    report(&format!("error {}", json_str(message)));
}

/// Why the supervisor woke up for good.
enum Wake {
    Signal,
    QemuExited,
    VhostExited,
    Idle,
}

impl Wake {
    fn describe(&self) -> &'static str {
        match self {
            Wake::Signal => "stop requested",
            Wake::QemuExited => "QEMU exited",
            Wake::VhostExited => "vhost-device-vsock exited",
            Wake::Idle => "idle timeout",
        }
    }
}

fn watch(vm: &mut RunningVm, signals: &OwnedFd) -> Wake {
    let idle = vm.cfg.idle_timeout_secs;
    let tick = Duration::from_secs((idle / 5).clamp(1, 60));
    let qemu_fd = pidfd(vm.qemu.pid());
    let vhost_fd = vm.vhost.as_ref().and_then(|v| pidfd(v.pid()));
    loop {
        let mut fds = vec![libc::pollfd {
            fd: signals.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for fd in [&qemu_fd, &vhost_fd].into_iter().flatten() {
            fds.push(libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout_ms = if idle == 0 && qemu_fd.is_some() {
            -1
        } else {
            // without a pidfd (old kernel) we check QEMU on every tick
            tick.as_millis().min(i32::MAX as u128) as i32
        };
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        if fds[0].revents & libc::POLLIN != 0 {
            return Wake::Signal;
        }
        if !vm.qemu.is_running() {
            return Wake::QemuExited;
        }
        if let Some(v) = vm.vhost.as_mut() {
            if !v.is_running() {
                return Wake::VhostExited;
            }
        }
        if idle > 0 && idle_expired(vm, Duration::from_secs(idle)) {
            return Wake::Idle;
        }
    }
}

/// True when nobody used the VM for `limit`. A connection still open (a long command, an
/// interactive shell) counts as use, so such a session is never cut by the idle stop; so do
/// detached containers' volumes not synced back yet.
fn idle_expired(vm: &RunningVm, limit: Duration) -> bool {
    let dir = &vm.cfg.state_dir;
    let idle = instance::idle_for(dir).unwrap_or(limit);
    if idle < limit {
        return false;
    }
    if open_connections(&vm.endpoint) > 0 {
        instance::touch_activity(dir);
        return false;
    }
    // a detached container's volume copy lives only in the guest until the tool syncs it
    // back (on stop/rm/memres stop): stopping the VM now would lose the container's writes
    if dir.join(instance::LIVE_VOLUMES_JSON).exists() {
        return false;
    }
    true
}

/// Connected Unix sockets on vhost-device-vsock's host socket (accepted sockets carry the
/// listener's path in /proc/net/unix; the listener itself is state 01, connected ones 03).
fn open_connections(endpoint: &Endpoint) -> usize {
    let Endpoint::Hybrid { uds_path } = endpoint else {
        return 0;
    };
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return 0;
    };
    count_connected(&table, uds_path)
}

fn count_connected(table: &str, path: &Path) -> usize {
    let want = path.to_string_lossy();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 8 && f[5] == "03" && f[7..].join(" ") == want
        })
        .count()
}

fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a fresh fd owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Write end of the self-pipe the signal handler writes to (-1 before setup).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_stop_signal(_: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = 1u8;
        // SAFETY: write(2) is async-signal-safe; a full pipe just drops the byte.
        unsafe {
            libc::write(fd, (&b as *const u8).cast(), 1);
        }
    }
}

/// SIGTERM/SIGINT/SIGHUP become a readable byte on the returned fd. A process-wide handler
/// with a self-pipe (not a per-thread signal mask) so it works whichever thread the kernel
/// picks to deliver the signal.
fn signal_pipe() -> Result<OwnedFd, String> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(|e| format!("pipe: {e}"))?;
    SIGNAL_PIPE.store(w.as_raw_fd(), Ordering::Relaxed);
    // the write end lives as long as the process
    std::mem::forget(w);
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only calls write(2) on an fd that stays open.
        unsafe { sigaction(s, &action) }.map_err(|e| format!("sigaction {s}: {e}"))?;
    }
    Ok(r)
}

/// With `--expose`: the engine API's host socket, relayed for the VM's life.
fn expose_api(vm: &RunningVm) -> Result<(), String> {
    let Some(expose) = &vm.cfg.expose else {
        return Ok(());
    };
    let listener = engine_api::bind(&expose.host_socket).map_err(|e| e.to_string())?;
    let relay = engine_api::Relay {
        endpoint: vm.endpoint.clone(),
        secret: vm.secret.clone(),
        guest_socket: expose.guest_socket.clone(),
        state_dir: vm.cfg.state_dir.clone(),
        spare: Default::default(),
    };
    relay.refill();
    if expose.watch_events {
        super::engine_events::spawn(relay.clone()).map_err(|e| format!("events thread: {e}"))?;
    }
    engine_api::serve(listener, relay).map_err(|e| format!("relay thread: {e}"))?;
    boot::log(
        &vm.paths,
        &format!(
            "engine API {} relayed on {}",
            expose.guest_socket,
            expose.host_socket.display()
        ),
    );
    Ok(())
}

fn write_record(vm: &RunningVm) -> super::Result<()> {
    let me = ProcId::of(std::process::id() as i32)
        .ok_or_else(|| super::VmError::Other("cannot read own /proc/self/stat".into()))?;
    let qemu = ProcId::of(vm.qemu.pid())
        .ok_or_else(|| super::VmError::Other("QEMU vanished right after boot".into()))?;
    let vhost = vm.vhost.as_ref().and_then(|v| ProcId::of(v.pid()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    VmRecord {
        version: VmRecord::new_version(),
        supervisor_pid: me.pid,
        supervisor_start_time: me.start_time,
        qemu_pid: qemu.pid,
        qemu_start_time: qemu.start_time,
        vhost_vsock_pid: vhost.map(|v| v.pid),
        vhost_vsock_start_time: vhost.map(|v| v.start_time),
        share_slots: vm.share_slots,
        expose: vm.cfg.expose.clone(),
        host_share_note: vm.host_share_note.clone(),
        snapshot_note: vm.snapshot_note.clone(),
        transport: vm.transport.kind,
        endpoint: vm.endpoint.clone(),
        paths: vm.paths.clone(),
        arch: vm.cfg.arch,
        runtime: vm.cfg.runtime.clone(),
        accel: vm.accel.accel,
        accel_reason: vm.accel.reason.clone(),
        memory_mib: vm.cfg.memory_mib,
        cpus: vm.cfg.cpus,
        port_forwards: vm.cfg.port_forwards.clone(),
        idle_timeout_secs: vm.cfg.idle_timeout_secs,
        started_at: now,
        boot_ms: vm.boot_time.as_millis() as u64,
        agent_version: vm.hello.agent_version.clone(),
        kernel: vm.hello.kernel.clone(),
    }
    .write(&vm.cfg.state_dir)
}

fn stop_vm(vm: &mut RunningVm, why: &str, timeout: Duration) {
    boot::log(&vm.paths, &format!("stopping: {why}"));
    // an idle stop must not race a start or stop in progress: take the lock when we can
    let _lock = lock::try_exclusive(&vm.cfg.state_dir).ok().flatten();
    // no time for a clean stop (its vsock backend gone): no time for a save either
    if !timeout.is_zero() {
        let suspended = match held_on_the_host(&vm.cfg.state_dir) {
            Some(why) => Suspended::Declined(why),
            None => suspend::suspend(vm),
        };
        match suspended {
            Suspended::Saved(took) => {
                let took = took.as_secs_f64();
                boot::log(&vm.paths, &format!("suspended in {took:.2} s"));
                return;
            }
            Suspended::Failed(why) => {
                // the guest had frozen its disk: ending the VM lost nothing
                boot::log(&vm.paths, &format!("suspending failed, ended: {why}"));
                return;
            }
            Suspended::Declined(why) => boot::log(&vm.paths, &format!("not suspended: {why}")),
        }
    }
    let outcome = boot::stop(
        &mut vm.qemu,
        vm.vhost.as_mut(),
        &vm.endpoint,
        &vm.paths,
        timeout,
    );
    boot::log(&vm.paths, &format!("stopped: {outcome:?}"));
}

/// What a memres VM holds on the host that a suspended VM could not take along: volume
/// shares (virtiofs devices, which QEMU cannot save) and forwards added while it ran (the
/// restoring QEMU's network has only its command line's).
fn held_on_the_host(state_dir: &Path) -> Option<String> {
    if !shares::load(state_dir).is_empty() {
        Some("it shares volumes with the host".into())
    } else if !forwards::load(state_dir).is_empty() {
        Some("it forwards ports of containers".into())
    } else {
        None
    }
}

/// Remove what describes a running VM, but only if vm.json still names this supervisor.
fn cleanup_files(state_dir: &Path) {
    let me = std::process::id() as i32;
    let record = VmRecord::read(state_dir);
    if record.as_ref().is_none_or(|r| r.supervisor_pid == me) {
        if let Some(e) = record.and_then(|r| r.expose) {
            engine_api::remove_socket(&e.host_socket);
        }
        for f in [instance::VM_JSON, instance::PORT_FORWARDS_JSON] {
            let _ = std::fs::remove_file(state_dir.join(f));
        }
    }
}

fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Point stdout at /dev/null so the starter's pipe sees EOF.
fn detach_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto fd 1 replaces the pipe; both fds are valid.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"?\"".into())
}

/// Stop a VM whose supervisor is gone or stuck, from the processes vm.json names.
pub fn stop_orphan(record: &VmRecord, timeout: Duration) -> boot::StopOutcome {
    let mut qemu = Proc::Foreign(record.qemu());
    let mut vhost = record.vhost_vsock().map(Proc::Foreign);
    boot::stop(
        &mut qemu,
        vhost.as_mut(),
        &record.endpoint,
        &record.paths,
        timeout,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_connected_sockets_on_our_path() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 100 /s/vsock.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 101 /s/vsock.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 102 /s/vsock.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 103 /other/vsock.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 104\n";
        assert_eq!(count_connected(table, Path::new("/s/vsock.sock")), 2);
        assert_eq!(count_connected(table, Path::new("/none")), 0);
    }
}
