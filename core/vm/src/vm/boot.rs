//! Booting one VM (vhost-device-vsock when hybrid, then QEMU) and stopping it cleanly.
//!
//! Readiness is decided only by a successful agent `Hello` before a deadline (never by a
//! sleep or by reading the console). Stopping always asks the guest first (`Shutdown`: the
//! agent stops services, syncs and unmounts the state disk, then powers off; -no-reboot makes
//! QEMU exit); QMP `quit` and SIGKILL are only the escalation when the guest does not comply.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use scopeguard::ScopeGuard;
use vcontainer_proto::auth::Secret;
use vcontainer_proto::{HelloOk, AGENT_VSOCK_PORT};

use super::accel::{self, AccelChoice};
use super::blobs::{self, BlobSet};
use super::config::VmConfig;
use super::error::{Result, VmError};
use super::process::{self, Proc};
use super::qemu::{Disk, DiskRole, KernelArgs, SnapshotLayout, VmSpec, VsockDevice};
use super::qmp::Qmp;
use super::secret;
use super::statedisk;
use super::transport::{self, Endpoint, TransportChoice, TransportKind};
use super::vhost_gate::VhostStartGate;
use super::{shares, virtiofs};
use crate::agent_client::{self, ClientError};

/// The CID of the guest behind vhost-device-vsock; private to that device, so fixed.
const HYBRID_GUEST_CID: u32 = 3;

pub use super::paths::VmPaths;

/// Removes what a VM that is gone leaves in its state and socket dirs: its volume shares'
/// virtiofsd and their sockets, the agent secret, the QEMU and vsock sockets (callers make
/// sure the VM is gone).
pub fn remove_vm_files(paths: &VmPaths) {
    shares::stop_all(&paths.state_dir, &paths.socket_dir);
    paths.remove_sockets();
    // guest memory: never left behind by a VM that ended (a suspended one's was moved aside)
    super::ramfile::remove_running(&paths.state_dir);
}

/// A VM that answered Hello: its processes and how to reach it.
#[derive(Debug)]
pub struct RunningVm {
    pub cfg: VmConfig,
    pub paths: VmPaths,
    pub qemu: Proc,
    pub vhost: Option<Proc>,
    /// Empty PCIe root ports for volume shares (`vm::shares`); 0 when volumes are copied.
    pub share_slots: u32,
    /// Why volume shares that were asked for are not possible (for the user, once per VM).
    pub host_share_note: Option<String>,
    pub endpoint: Endpoint,
    pub accel: AccelChoice,
    pub transport: TransportChoice,
    pub blobs: BlobSet,
    pub hello: HelloOk,
    /// Wall time from spawning the first process to the agent's Hello.
    pub boot_time: Duration,
    /// The secret every connection to this VM's agent proves (also in `paths.agent_secret`).
    pub secret: Secret,
    /// With snapshots on: how this VM came up (restored, or cold and why), the `-v` line.
    pub snapshot_note: Option<String>,
    /// The snapshot file (the shared snapshot's key, in the cache dir) this VM descends from,
    /// restored from it or from a suspended VM saved from one of its restores; None: booted
    /// cold. A restored VM's devices sit on hot-plug ports, so it can be saved again
    /// (`vm::suspend`).
    pub restored_from: Option<PathBuf>,
    /// The named tmpfs file holding the guest RAM (vm/ramfile.rs); None: a memfd.
    pub guest_ram: Option<PathBuf>,
}

/// What happened when a VM was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// The agent acknowledged Shutdown and QEMU exited by itself.
    Clean,
    /// QEMU had to be quit through QMP or killed; the state disk may need the guest's fsck.
    Forced,
    /// QEMU was already gone.
    AlreadyGone,
}

/// Boot a VM for `cfg` and wait for the agent's Hello.
///
/// Children die with the calling thread (PR_SET_PDEATHSIG): call from a thread that lives as
/// long as the VM should (the main thread of the CLI or of the supervisor).
pub fn boot(cfg: &VmConfig) -> Result<RunningVm> {
    match boot_once(cfg, None) {
        // Nothing ran in the guest before its agent answered, and the failed attempt's
        // processes are gone: one more boot costs seconds where failing costs the command.
        Err(VmError::VsockBackendLost { pid, .. }) => {
            let paths = VmPaths::new(&cfg.state_dir)?;
            log(
                &paths,
                &format!("vhost-device-vsock (pid {pid}) lost its vring worker during boot; booting again"),
            );
            tracing::warn!("vhost-device-vsock lost its vring worker during boot; booting again");
            boot_once(cfg, None)
        }
        other => other,
    }
}

/// What saving or restoring a snapshot adds to a boot. Implemented by `snapshot::Mode`: the
/// boot knows this hook, not the snapshot module, so the two do not import each other.
pub(super) trait SnapshotHook {
    /// How QEMU's command line differs (devices left for hot-plug, `-incoming defer`).
    fn layout(&self) -> SnapshotLayout;
    /// The file QEMU maps as the guest RAM (None: a memfd), once the boot removed what an
    /// earlier one left.
    fn guest_ram(&self, cfg: &VmConfig) -> Option<PathBuf>;
    /// Called once QEMU runs, before waiting for the agent; `vsock` is this run's device
    /// (a restore plugs it).
    fn after_spawn(
        &self,
        cfg: &VmConfig,
        paths: &VmPaths,
        vsock: &VsockDevice,
        qemu: &mut Proc,
        deadline: Instant,
    ) -> Result<()>;
}

/// A VM to be saved as a snapshot, or restored from one, up to the agent's Hello (see
/// vm/snapshot.rs, which does the rest).
pub(super) fn boot_snapshot(cfg: &VmConfig, mode: &dyn SnapshotHook) -> Result<RunningVm> {
    boot_once(cfg, Some(mode))
}

/// One boot attempt: QEMU and the vsock backend started, up to the agent's Hello.
///
/// From the first process on, guards undo a failed attempt in reverse order (QEMU killed,
/// the vsock backend stopped, the VM's files removed); a booted VM disarms them.
fn boot_once(cfg: &VmConfig, snapshot: Option<&dyn SnapshotHook>) -> Result<RunningVm> {
    let host = HostSide::find(cfg)?;
    let paths = &host.paths;
    let secret = fresh_run_files(cfg, paths)?;
    let started = Instant::now();
    let shares = HostShares::probe(cfg, paths);
    let files = scopeguard::guard((), |()| remove_vm_files(paths));
    let backend = VsockBackend::start(cfg, paths, host.transport.kind)?;
    let mut vhost = scopeguard::guard(backend.vhost, |v| v.into_iter().for_each(stop_vhost));
    let guest_ram = snapshot.and_then(|mode| mode.guest_ram(cfg));
    let mut spec = vm_spec(cfg, &host, backend.device.clone(), shares.slots, snapshot);
    spec.guest_ram = guest_ram.clone();
    let mut qemu = scopeguard::guard(spawn_qemu(&host, &spec, backend.claim)?, kill_qemu);
    let deadline = started + cfg.boot_timeout();
    if let Some(mode) = snapshot {
        mode.after_spawn(cfg, paths, &backend.device, &mut qemu, deadline)?;
    }
    let gate = (host.transport.kind == TransportKind::Hybrid)
        .then(|| VhostStartGate::new(&paths.qmp_socket));
    let agent = Agent {
        endpoint: &backend.endpoint,
        secret: &secret,
        gate,
        deadline,
    };
    let hello = wait_for_hello(&mut qemu, vhost.as_mut(), agent, paths, cfg)?;
    let (qemu, vhost) = (ScopeGuard::into_inner(qemu), ScopeGuard::into_inner(vhost));
    ScopeGuard::into_inner(files);
    let HostSide {
        paths,
        blobs,
        accel,
        transport,
        ..
    } = host;
    Ok(RunningVm {
        cfg: cfg.clone(),
        paths,
        qemu,
        vhost,
        share_slots: shares.slots,
        host_share_note: shares.note,
        endpoint: backend.endpoint,
        accel,
        transport,
        blobs,
        hello,
        boot_time: started.elapsed(),
        secret,
        snapshot_note: None,
        restored_from: None,
        guest_ram,
    })
}

/// What a boot takes from the host before anything starts: the VM's paths, the guest blobs,
/// the QEMU binary, the accelerator and the vsock transport.
struct HostSide {
    paths: VmPaths,
    blobs: BlobSet,
    qemu_bin: PathBuf,
    accel: AccelChoice,
    transport: TransportChoice,
}

impl HostSide {
    fn find(cfg: &VmConfig) -> Result<Self> {
        let paths = VmPaths::new(&cfg.state_dir)?;
        let blobs = blobs::resolve_for(cfg)?;
        let program = cfg.arch.qemu_program();
        let qemu_bin = process::which(program).ok_or_else(|| VmError::QemuNotFound {
            program: program.into(),
        })?;
        Ok(HostSide {
            paths,
            blobs,
            qemu_bin,
            accel: accel::choose(cfg.arch, cfg.no_kvm),
            transport: transport::choose(cfg.transport)?,
        })
    }
}

/// The state disk made if missing, what an earlier boot left removed, and this boot's own
/// agent secret: a connection made for an earlier boot proves nothing now.
fn fresh_run_files(cfg: &VmConfig, paths: &VmPaths) -> Result<Secret> {
    if cfg.state_disk {
        statedisk::ensure(&cfg.state_disk_path(), cfg.state_disk_size_mib)?;
    }
    remove_vm_files(paths);
    std::fs::create_dir_all(&paths.socket_dir)
        .map_err(|e| VmError::io(format!("creating {}", paths.socket_dir.display()), e))?;
    let secret = secret::create(&paths.agent_secret)?;
    // keep the previous boot's console for post-mortems (e.g. after a crash)
    let _ = std::fs::rename(&paths.console_log, paths.state_dir.join("console.log.old"));
    Ok(secret)
}

/// Whether this host can serve volume shares at all. Dirs are shared one at a time once the
/// VM runs (vm::shares); the boot only leaves empty slots for them.
struct HostShares {
    slots: u32,
    /// Why shares that were asked for are not possible (for the user, once per VM).
    note: Option<String>,
}

impl HostShares {
    fn probe(cfg: &VmConfig, paths: &VmPaths) -> Self {
        match cfg.host_share.then(virtiofs::program) {
            Some(Ok(_)) => HostShares {
                slots: shares::SLOTS,
                note: None,
            },
            Some(Err(why)) => {
                log(paths, &format!("no volume shares: {why}"));
                HostShares {
                    slots: 0,
                    note: Some(why),
                }
            }
            None => HostShares {
                slots: 0,
                note: None,
            },
        }
    }
}

/// The guest's vsock device, how the host reaches the agent through it, and what serves it:
/// vhost-device-vsock (hybrid) or a CID claimed on /dev/vhost-vsock (kernel).
struct VsockBackend {
    device: VsockDevice,
    endpoint: Endpoint,
    vhost: Option<Proc>,
    claim: Option<transport::ClaimedCid>,
}

impl VsockBackend {
    fn start(cfg: &VmConfig, paths: &VmPaths, kind: TransportKind) -> Result<Self> {
        Ok(match kind {
            TransportKind::Hybrid => VsockBackend {
                vhost: Some(Proc::Child(spawn_vhost_device_vsock(paths)?)),
                device: VsockDevice::Hybrid {
                    vhost_user_socket: paths.vhost_user_socket.clone(),
                },
                endpoint: Endpoint::Hybrid {
                    uds_path: paths.vsock_socket.clone(),
                },
                claim: None,
            },
            TransportKind::Vsock => {
                let claim = transport::claim_cid(cfg.state_dir.as_os_str().as_encoded_bytes())?;
                VsockBackend {
                    device: VsockDevice::Kernel {
                        cid: claim.cid,
                        vhostfd: Some(claim.device.as_raw_fd()),
                    },
                    endpoint: Endpoint::Vsock { cid: claim.cid },
                    vhost: None,
                    claim: Some(claim),
                }
            }
        })
    }
}

/// The whole QEMU machine of this boot. A snapshot's VM always has the share slots, so one
/// snapshot serves one-shot and memres VMs alike (the guest enumerated them before the save;
/// unused ones cost nothing after), and its state disk is hot-plugged after the restore.
fn vm_spec(
    cfg: &VmConfig,
    host: &HostSide,
    vsock: VsockDevice,
    share_slots: u32,
    snapshot: Option<&dyn SnapshotHook>,
) -> VmSpec {
    let paths = &host.paths;
    let state_disk = cfg.state_disk && snapshot.is_none();
    let mut disks = vec![Disk {
        role: DiskRole::Rootfs,
        path: host.blobs.rootfs.clone(),
        read_only: true,
    }];
    if state_disk {
        disks.push(Disk {
            role: DiskRole::State,
            path: cfg.state_disk_path(),
            read_only: false,
        });
    }
    VmSpec {
        arch: cfg.arch,
        accel: host.accel.accel,
        memory_mib: cfg.memory_mib,
        cpus: cfg.cpus,
        kernel: host.blobs.kernel.clone(),
        initrd: host.blobs.initramfs.clone(),
        disks,
        port_forwards: cfg.port_forwards.clone(),
        console_log: paths.console_log.clone(),
        qmp_socket: paths.qmp_socket.clone(),
        vsock,
        share_slots: if snapshot.is_some() {
            shares::SLOTS
        } else {
            share_slots
        },
        agent_secret: paths.agent_secret.clone(),
        kernel_args: KernelArgs {
            runtime: cfg.runtime.clone(),
            state_device: state_disk.then(|| "/dev/vdb".to_string()),
            storage_path: cfg.storage_path.clone(),
            agent_port: AGENT_VSOCK_PORT,
            debug: cfg.debug,
        },
        snapshot: snapshot.map(|s| s.layout()),
        guest_ram: None,
    }
}

/// QEMU started on `spec`, logging to qemu.log, in its own process group: a Ctrl-C on the
/// terminal goes to the CLI, which shuts the guest down cleanly, instead of making QEMU quit
/// under a mounted state disk.
fn spawn_qemu(
    host: &HostSide,
    spec: &VmSpec,
    claim: Option<transport::ClaimedCid>,
) -> Result<Proc> {
    let qemu_log = log_file(&host.paths.qemu_log)?;
    let mut cmd = Command::new(&host.qemu_bin);
    cmd.args(spec.render())
        .stdin(Stdio::null())
        .stdout(clone_file(&qemu_log)?)
        .stderr(qemu_log);
    process::die_with_parent(&mut cmd, Signal::SIGKILL);
    process::close_other_fds(&mut cmd);
    cmd.process_group(0);
    if let Some(c) = &claim {
        process::pass_fd(&mut cmd, c.device.as_raw_fd());
    }
    let spawned = cmd.spawn();
    // QEMU holds its own copy of the vhost fd (and with it the CID) from here on
    drop(claim);
    spawned
        .map(Proc::Child)
        .map_err(|e| VmError::io(format!("starting {}", host.qemu_bin.display()), e))
}

/// A failed boot's QEMU: nothing in the guest is worth a clean shutdown yet.
fn kill_qemu(mut qemu: Proc) {
    qemu.signal(Signal::SIGKILL);
    qemu.wait(Duration::from_secs(5));
}

fn stop_vhost(mut vhost: Proc) {
    vhost.terminate(Duration::from_secs(2));
}

fn log_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| VmError::io(format!("creating {}", path.display()), e))
}

fn clone_file(f: &File) -> Result<File> {
    f.try_clone()
        .map_err(|e| VmError::io("duplicating a log fd", e))
}

fn spawn_vhost_device_vsock(paths: &VmPaths) -> Result<std::process::Child> {
    let bin = process::which("vhost-device-vsock").ok_or(VmError::VhostDeviceVsockNotFound)?;
    let log = log_file(&paths.vhost_log)?;
    let mut cmd = Command::new(&bin);
    cmd.arg("--guest-cid")
        .arg(HYBRID_GUEST_CID.to_string())
        .arg("--socket")
        .arg(&paths.vhost_user_socket)
        .arg("--uds-path")
        .arg(&paths.vsock_socket)
        .stdin(Stdio::null())
        .stdout(clone_file(&log)?)
        .stderr(log);
    process::die_with_parent(&mut cmd, Signal::SIGKILL);
    process::close_other_fds(&mut cmd);
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| VmError::io(format!("starting {}", bin.display()), e))?;
    // QEMU connects to the vhost-user socket at start-up, so it must exist first
    let deadline = Instant::now() + Duration::from_secs(10);
    while !paths.vhost_user_socket.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(VmError::Other(format!(
                "vhost-device-vsock exited ({st}) before listening:\n{}",
                process::tail_lines(&paths.vhost_log, 10)
            )));
        }
        if Instant::now() > deadline {
            process::kill_child(&mut child);
            return Err(VmError::Other(format!(
                "vhost-device-vsock did not create {} within 10 s",
                paths.vhost_user_socket.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(child)
}

/// How often the vhost start gate is asked while it is closed.
const GATE_POLL: Duration = Duration::from_millis(10);
/// The wait after a connection or Hello attempt that found no agent yet.
const HELLO_RETRY: Duration = Duration::from_millis(50);

/// How to reach the agent of a booting VM, and until when.
struct Agent<'a> {
    endpoint: &'a Endpoint,
    secret: &'a Secret,
    /// Hybrid transport: no connection before it opens (see vhost_gate for the
    /// vhost-device-vsock hang this avoids).
    gate: Option<VhostStartGate>,
    deadline: Instant,
}

/// Poll connect + Hello until the agent answers, QEMU or the vsock backend dies, or the
/// deadline passes.
fn wait_for_hello(
    qemu: &mut Proc,
    mut vhost: Option<&mut Proc>,
    mut agent: Agent<'_>,
    paths: &VmPaths,
    cfg: &VmConfig,
) -> Result<HelloOk> {
    let mut last_attempt = String::from("no connection attempt yet");
    let mut worker = WorkerWatch::default();
    loop {
        check_alive(qemu, vhost.as_deref_mut(), &mut worker, paths)?;
        let now = Instant::now();
        if now >= agent.deadline {
            return Err(VmError::BootTimeout {
                secs: cfg.boot_timeout_secs,
                tail: format!("{}\n  last attempt: {last_attempt}", paths.diagnostics()),
                console_log: paths.console_log.clone(),
            });
        }
        let gate_open = agent.gate.as_mut().is_none_or(|g| g.poll());
        if !gate_open {
            if let Some(g) = &agent.gate {
                last_attempt = format!("not connecting yet: {}", g.state());
            }
            // a QMP round trip on the host: cheap to repeat, and a restored guest's agent
            // answers as soon as the gate opens
            std::thread::sleep(GATE_POLL);
            continue;
        }
        let budget = (agent.deadline - now).min(Duration::from_secs(5));
        match try_hello(&agent, budget)? {
            Ok(hello) => return Ok(hello),
            Err(why) => last_attempt = why,
        }
        // each failed attempt is a packet the (emulated) guest kernel has to refuse
        std::thread::sleep(HELLO_RETRY);
    }
}

/// An error when QEMU or the vsock backend is gone, or the backend lost its vring worker.
fn check_alive(
    qemu: &mut Proc,
    vhost: Option<&mut Proc>,
    worker: &mut WorkerWatch,
    paths: &VmPaths,
) -> Result<()> {
    if !qemu.is_running() {
        let status = match qemu {
            Proc::Child(c) => c
                .try_wait()
                .ok()
                .flatten()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "exited".into()),
            Proc::Foreign(_) => "exited".into(),
        };
        return Err(VmError::BootExited {
            status,
            tail: paths.diagnostics(),
            console_log: paths.console_log.clone(),
        });
    }
    let Some(v) = vhost else { return Ok(()) };
    if !v.is_running() {
        return Err(VmError::Other(format!(
            "vhost-device-vsock exited during boot:\n{}\n  see {}",
            process::tail_lines(&paths.vhost_log, 10),
            paths.vhost_log.display()
        )));
    }
    // (QEMU going away also ends the worker: that is reported as such above)
    if worker.lost(v.pid()) && qemu.is_running() {
        return Err(VmError::VsockBackendLost {
            pid: v.pid(),
            diagnostics: paths.diagnostics(),
        });
    }
    Ok(())
}

/// One connect + Hello. `Ok(Err(why))`: not yet, try again; `Err`: final.
fn try_hello(agent: &Agent<'_>, budget: Duration) -> Result<std::result::Result<HelloOk, String>> {
    match agent
        .endpoint
        .connect(AGENT_VSOCK_PORT, budget, agent.secret)
    {
        Ok(s) => {
            let _ = s.set_read_timeout(Some(budget));
            let _ = s.set_write_timeout(Some(budget));
            match agent_client::hello(s) {
                Ok(h) => Ok(Ok(h)),
                // not listening yet / went away mid-hello: try again
                Err(e @ ClientError::ConnectionLost { .. }) => Ok(Err(format!("hello: {e}"))),
                // a version mismatch or garbage will not fix itself
                Err(e) => Err(VmError::Hello(e.to_string())),
            }
        }
        // the agent holds the secret we just made, or never will (blobs without
        // authentication, no fw_cfg): only a version mismatch is final at once, the rest
        // shows in the boot timeout's last attempt and the console log
        Err(VmError::Auth(e @ ClientError::VersionMismatch { .. })) => {
            Err(VmError::Hello(e.to_string()))
        }
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// The thread vhost-user-backend runs the vrings (and vhost-device-vsock's Unix sockets) on.
const VRING_WORKER: &str = "vring_worker";

/// Notices when vhost-device-vsock's vring worker thread, once seen, is gone: the process
/// then stays alive but never answers again, and waiting for the boot deadline would only
/// hide that.
#[derive(Default)]
struct WorkerWatch {
    seen: bool,
}

impl WorkerWatch {
    fn lost(&mut self, pid: i32) -> bool {
        let names = process::thread_names(pid);
        if names.is_empty() {
            // the process is gone: the caller reports that
            return false;
        }
        let present = names.iter().any(|n| n == VRING_WORKER);
        let lost = self.seen && !present;
        self.seen |= present;
        lost
    }
}

/// Stop a VM: agent Shutdown, wait for QEMU to exit; on timeout QMP quit, then SIGKILL.
/// vhost-device-vsock and virtiofsd are stopped after QEMU. Sockets are removed.
pub fn stop(
    qemu: &mut Proc,
    vhost: Option<&mut Proc>,
    endpoint: &Endpoint,
    paths: &VmPaths,
    timeout: Duration,
) -> StopOutcome {
    let outcome = if !qemu.is_running() {
        StopOutcome::AlreadyGone
    } else {
        let asked = if timeout.is_zero() {
            Err("no time for a clean shutdown".to_string())
        } else {
            secret::read(&paths.agent_secret)
                .and_then(|secret| {
                    endpoint.connect(AGENT_VSOCK_PORT, Duration::from_secs(5), &secret)
                })
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    s.set_read_timeout(Some(timeout))
                        .and_then(|()| s.set_write_timeout(Some(Duration::from_secs(5))))
                        .map_err(|e| e.to_string())?;
                    agent_client::shutdown(s).map_err(|e| e.to_string())
                })
        };
        if let Err(e) = &asked {
            log(paths, &format!("agent Shutdown failed: {e}"));
        }
        // after Done the guest powers off on its own; give it the same budget either way
        if qemu.wait(timeout) {
            if asked.is_ok() {
                StopOutcome::Clean
            } else {
                StopOutcome::Forced
            }
        } else {
            log(
                paths,
                "the guest did not power off in time: QMP quit (state disk integrity may be at risk; the guest fscks it on the next boot)",
            );
            let quit_sent = Qmp::connect(&paths.qmp_socket, Duration::from_secs(2))
                .and_then(|mut q| q.quit())
                .is_ok();
            if !quit_sent || !qemu.wait(Duration::from_secs(5)) {
                qemu.signal(Signal::SIGKILL);
                qemu.wait(Duration::from_secs(5));
            }
            StopOutcome::Forced
        }
    };
    if let Some(v) = vhost {
        v.terminate(Duration::from_secs(2));
    }
    remove_vm_files(paths);
    outcome
}

/// A line for the post-mortem in the state dir's console.log.old-style log (never stdout).
pub fn log(paths: &VmPaths, msg: &str) {
    if let Ok(mut f) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.state_dir.join("vm.log"))
    {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let _ = writeln!(f, "{now} {msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_a_short_state_dir() {
        let p = VmPaths::new(Path::new("/home/u/.vdkr/x86_64")).expect("paths");
        assert_eq!(p.vsock_socket, Path::new("/home/u/.vdkr/x86_64/vsock.sock"));
        assert_eq!(
            p.vhost_user_socket,
            Path::new("/home/u/.vdkr/x86_64/vhost-vsock.sock")
        );
        assert_eq!(p.qmp_socket, Path::new("/home/u/.vdkr/x86_64/qmp.sock"));
        assert_eq!(p.console_log, Path::new("/home/u/.vdkr/x86_64/console.log"));
    }

    #[test]
    fn stop_escalates_when_the_guest_does_not_comply() {
        // a "QEMU" that neither answers the agent nor has a QMP socket nor exits
        let t = tempfile::tempdir().expect("tmp");
        let paths = VmPaths::new(t.path()).expect("paths");
        let mut qemu = Proc::Child(Command::new("sleep").arg("600").spawn().expect("spawn"));
        let mut vhost = Proc::Child(Command::new("sleep").arg("600").spawn().expect("spawn"));
        let endpoint = Endpoint::Hybrid {
            uds_path: paths.vsock_socket.clone(),
        };
        let started = Instant::now();
        let outcome = stop(
            &mut qemu,
            Some(&mut vhost),
            &endpoint,
            &paths,
            Duration::from_secs(1),
        );
        assert_eq!(outcome, StopOutcome::Forced);
        assert!(!qemu.is_running() && !vhost.is_running());
        assert!(started.elapsed() < Duration::from_secs(30));
        let log = std::fs::read_to_string(t.path().join("vm.log")).expect("vm.log");
        assert!(log.contains("agent Shutdown failed"), "{log}");
        assert!(log.contains("QMP quit"), "{log}");
        // and a VM that is already gone is just that
        assert_eq!(
            stop(&mut qemu, None, &endpoint, &paths, Duration::from_secs(1)),
            StopOutcome::AlreadyGone
        );
    }

    #[test]
    fn missing_blobs_fail_before_anything_starts() {
        let t = tempfile::tempdir().expect("tmp");
        let mut cfg = VmConfig::new(super::super::Arch::X86_64, "podman", t.path());
        cfg.blob_dir = Some(t.path().join("no-blobs"));
        let e = boot(&cfg).expect_err("no blobs");
        assert!(matches!(e, VmError::BlobsMissing { .. }), "{e}");
        assert!(
            !cfg.state_disk_path().exists(),
            "nothing created on failure"
        );
    }
}
