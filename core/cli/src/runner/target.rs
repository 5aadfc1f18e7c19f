//! The VM one command runs on (memres or batch), its runtime services, and what a lost
//! connection means.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use nix::fcntl::{Flock, FlockArg};
use vcontainer_abi::runtime::{CommandPlan, RuntimeSpec, ServiceSpec};
use vcontainer_proto::exit;

use super::mode::{self, Mode, ModeInputs};
use super::vmconfig;
use crate::agent_client::{
    self, ClientError, ExecRequest, ExitStatus, ServiceStartRequest, SocketProbe,
};
use crate::context::RuntimeContext;
use crate::ui;
use crate::vm::process::ProcId;
use crate::vm::{self, AgentStream, BatchVm, Instance, PortForward, VmError};

/// How often a running command resets the memres idle clock: the supervisor only sees new
/// connections, and a long `run` must not look idle.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(30);
/// Lock file (in the state dir) held while a command changes the guest's runtime config.
pub const GUEST_CONFIG_LOCK: &str = "guest-config.lock";
/// How long a service may take to exit after SIGTERM before it is killed.
const SERVICE_STOP_GRACE: Duration = Duration::from_secs(30);

enum Vm {
    Memres(Box<Instance>),
    Batch(Box<BatchVm>),
}

/// Ends the QEMU watch of [`Target::connect_watched`] when dropped.
pub struct Watchdog {
    _stop: mpsc::Sender<()>,
}

/// A booted VM ready for agent connections.
pub struct Target {
    vm: Option<Vm>,
    tool: String,
    console_log: PathBuf,
    services: Vec<ServiceSpec>,
    services_started: bool,
    _keepalive: Option<mpsc::Sender<()>>,
    /// A private state dir of a batch VM without state disk (removed at the end).
    private_dir: Option<PathBuf>,
    /// The temporary state dir of an isolated batch VM (see [`Target::acquire_isolated`]);
    /// deleted, state disk and all, once the VM is down.
    isolated: Option<tempfile::TempDir>,
    /// What the command holds on the VM, released in reverse order ([`Target::hold`]).
    held: Vec<Held>,
}

/// Something a command holds on its VM until it ends: the guard is the [`Target`], which
/// releases each (newest first) in [`Target::release_held`], or before the VM goes on every
/// other path (an error, a lost agent), so no command leaves them behind on a memres VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// A guest path removed at the end: the per-command registry credentials, the per-run
    /// input/output dir.
    GuestPath(String),
    /// Host port forwards added to a memres VM for this command only.
    Forwards(Vec<PortForward>),
}

/// Size of an isolated batch VM's state disk. The file is sparse: only what the guest
/// writes takes host space, so a generous size costs nothing and lets a large image set
/// (podman's vfs driver stores every layer as a full copy) fit.
pub const ISOLATED_DISK_MIB: u64 = 64 * 1024;

/// A running command's time limit: when it passes, the command's connection is shut down,
/// and the guest agent hangs up on the program (SIGHUP to its process group); the batch VM
/// is then shut down cleanly as after any command.
pub struct Deadline {
    limit: Duration,
    fired: Arc<AtomicBool>,
    _stop: mpsc::Sender<()>,
}

impl Deadline {
    /// Arms the `timeout` setting (config key `timeout`, `$<TOOL>_TIMEOUT`) for a command in
    /// a one-shot VM, on its connection `conn`. None on a memres VM, whose commands may run
    /// as long as they like (`run -d`, long builds), and for an interactive session.
    pub fn arm(
        ctx: &RuntimeContext,
        target: &Target,
        plan: &CommandPlan,
        conn: &AgentStream,
    ) -> Option<Deadline> {
        if target.instance().is_some() || plan.tty || plan.stdin || ctx.settings.timeout_secs == 0 {
            return None;
        }
        let limit = Duration::from_secs(ctx.settings.timeout_secs);
        let watched = conn.try_clone().ok()?;
        let fired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&fired);
        let (tx, rx) = mpsc::channel::<()>();
        thread::Builder::new()
            .name("command-timeout".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                    flag.store(true, Ordering::Release);
                    let _ = watched.shutdown(std::net::Shutdown::Both);
                }
            })
            .ok()?;
        Some(Deadline {
            limit,
            fired,
            _stop: tx,
        })
    }

    /// The limit passed and the command was stopped.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Tells the user what happened and how to allow more time.
    pub fn report(&self, ctx: &RuntimeContext) {
        let tool = &ctx.tool.name;
        eprintln!(
            "{}",
            ui::error_line(
                tool,
                &anyhow!(
                    "the command ran longer than the timeout ({} s) and was stopped (exit {}); \
                     allow more with `{tool} vconfig timeout <seconds>` or ${}",
                    self.limit.as_secs(),
                    exit::TIMEOUT,
                    ctx.tool.env_var_name("TIMEOUT")
                )
            )
        );
    }
}

/// A time limit on everything a one-shot VM does for one command (a batch import: boot,
/// imports and export together). When it passes, the VM's QEMU is killed: every agent
/// operation then fails at once, nothing more reaches the host, and the caller reports
/// [`VmDeadline::fired`] as exit 124. A clean shutdown is not needed: the VM's state is
/// thrown away with it.
pub struct VmDeadline {
    limit: Duration,
    fired: Arc<AtomicBool>,
    _stop: mpsc::Sender<()>,
}

impl VmDeadline {
    /// Arms `limit`, counted from `since` (the command's start), on the target's VM. None
    /// on a memres VM (not this command's to kill).
    pub fn arm(target: &Target, limit: Duration, since: Instant) -> Option<VmDeadline> {
        let qemu = target.batch_qemu()?;
        let left = limit.saturating_sub(since.elapsed());
        let fired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&fired);
        let (tx, rx) = mpsc::channel::<()>();
        thread::Builder::new()
            .name("vm-timeout".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(left) {
                    flag.store(true, Ordering::Release);
                    qemu.signal(nix::sys::signal::Signal::SIGKILL);
                }
            })
            .ok()?;
        Some(VmDeadline {
            limit,
            fired,
            _stop: tx,
        })
    }

    /// The limit passed and the VM was stopped.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Tells the user what happened.
    pub fn report(&self, ctx: &RuntimeContext) {
        eprintln!(
            "{}",
            ui::error_line(
                &ctx.tool.name,
                &anyhow!(
                    "the {} ran longer than the timeout ({} s) and was stopped (exit {}); \
                     nothing was written",
                    ctx.command(),
                    self.limit.as_secs(),
                    exit::TIMEOUT
                )
            )
        );
    }
}

/// The state dir's running memres VM, if any.
pub fn running_instance(ctx: &RuntimeContext) -> Option<Instance> {
    if ctx.state.is_temporary() {
        return None;
    }
    Instance::find(&ctx.state.path)
}

impl Target {
    /// Finds, starts or boots the VM for this command (see [`mode::choose`]). Messages go to
    /// stderr only, so stdout stays the command's own output.
    pub fn acquire(ctx: &RuntimeContext, spec: &RuntimeSpec) -> anyhow::Result<Target> {
        Self::acquire_forwarding(ctx, spec, Vec::new())
    }

    /// [`Target::acquire`], and a one-shot VM forwards `batch_forwards` from the host for its
    /// whole life (on QEMU's command line: there is no QMP to add them later). On a memres VM
    /// the caller adds them itself (see `ports::add`).
    pub fn acquire_forwarding(
        ctx: &RuntimeContext,
        spec: &RuntimeSpec,
        batch_forwards: Vec<PortForward>,
    ) -> anyhow::Result<Target> {
        let running = running_instance(ctx);
        let choice = mode::choose(ModeInputs {
            no_daemon: ctx.options.no_daemon,
            auto_daemon: ctx.settings.auto_daemon,
            stateless: ctx.state.is_temporary(),
            input_storage: ctx.options.input_storage.is_some(),
            memres_running: running.is_some(),
        });
        tracing::debug!(?choice, "execution mode");
        let tool = ctx.tool.name.clone();
        let services: Vec<ServiceSpec> = spec.services.iter().cloned().collect();
        match (choice, running) {
            (Mode::Memres, Some(instance)) => {
                Self::reuse_memres(ctx, spec, instance, tool, services)
            }
            (Mode::Memres | Mode::StartMemres, _) => {
                let note = format!(
                    "starting the memres VM for {} (stop it with `{tool} memres stop`)",
                    ctx.arch
                );
                Self::start_memres(ctx, spec, tool, services, &note)
            }
            (Mode::Batch { state_disk }, _) => {
                Self::boot_one_shot(ctx, spec, state_disk, batch_forwards, tool, services)
            }
        }
    }

    /// The memres VM found running. It was alive when it was looked up; if QEMU died since
    /// (killed, crashed) this command gets a fresh VM instead of failing for the dead one.
    fn reuse_memres(
        ctx: &RuntimeContext,
        spec: &RuntimeSpec,
        instance: Instance,
        tool: String,
        services: Vec<ServiceSpec>,
    ) -> anyhow::Result<Target> {
        let mut target = Target::for_instance(instance, tool.clone(), services.clone());
        match target.first_contact() {
            Ok(()) => Ok(target),
            Err(e) if target.wait_for_death() => {
                tracing::debug!("the memres VM died before this command used it: {e:#}");
                drop(target);
                let note = format!(
                    "the memres VM for {} stopped (QEMU is gone); starting a new one",
                    ctx.arch
                );
                Self::start_memres(ctx, spec, tool, services, &note)
            }
            Err(e) => Err(e),
        }
    }

    /// A VM booted for this command only, with the user's state disk or (without one) in a
    /// private dir of the state dir, so it neither waits for nor disturbs a memres VM.
    fn boot_one_shot(
        ctx: &RuntimeContext,
        spec: &RuntimeSpec,
        state_disk: bool,
        forwards: Vec<PortForward>,
        tool: String,
        services: Vec<ServiceSpec>,
    ) -> anyhow::Result<Target> {
        let private_dir = if !state_disk && !ctx.state.is_temporary() {
            Some(private_batch_dir(&ctx.state.path)?)
        } else {
            None
        };
        let dir = private_dir.as_deref().unwrap_or(&ctx.state.path);
        let cfg = vmconfig::build(ctx, spec, dir, state_disk, forwards);
        let started = Instant::now();
        let batch = match vm::boot_batch(&cfg) {
            Ok(b) => b,
            Err(e) => {
                if let Some(d) = &private_dir {
                    let _ = std::fs::remove_dir_all(d);
                }
                return Err(e.into());
            }
        };
        tracing::debug!(elapsed = ?started.elapsed(), "batch VM booted");
        // without a state disk the agent itself puts the runtime storage on a tmpfs at boot
        // (vcontainer.state=none): nothing to do here
        Ok(Target {
            vm: Some(Vm::Batch(Box::new(batch))),
            tool,
            console_log: cfg.console_log(),
            services,
            services_started: false,
            _keepalive: None,
            private_dir,
            isolated: None,
            held: Vec::new(),
        })
    }

    /// The first request to a memres VM found running: its services, or a Hello for a
    /// runtime without any (podman), so a VM that died since it was found shows here.
    fn first_contact(&mut self) -> anyhow::Result<()> {
        if !self.services.is_empty() {
            return self.ensure_services();
        }
        let conn = self.connect()?;
        agent_client::hello(conn).map_err(|e| self.agent_error(e))?;
        Ok(())
    }

    /// Starts the memres VM (clearing what a dead one left: `memres::start`) and its
    /// services, saying `note` first.
    fn start_memres(
        ctx: &RuntimeContext,
        spec: &RuntimeSpec,
        tool: String,
        services: Vec<ServiceSpec>,
        note: &str,
    ) -> anyhow::Result<Target> {
        ui::info(&tool, note);
        let cfg = vmconfig::build(ctx, spec, &ctx.state.path, true, Vec::new());
        let started = vm::memres::start(&cfg)?;
        let mut target = Target::for_instance(started.instance, tool, services);
        target.ensure_services()?;
        Ok(target)
    }

    /// A target on an already running memres VM.
    pub fn for_instance(instance: Instance, tool: String, services: Vec<ServiceSpec>) -> Target {
        let console_log = instance.record.paths.console_log.clone();
        let keepalive = spawn_keepalive(instance.state_dir.clone());
        Target {
            vm: Some(Vm::Memres(Box::new(instance))),
            tool,
            console_log,
            services,
            services_started: false,
            _keepalive: Some(keepalive),
            private_dir: None,
            isolated: None,
            held: Vec::new(),
        }
    }

    /// A one-shot VM on a fresh, empty state disk in a new temp dir under `$TMPDIR`, for a
    /// batch import: the user's state (`~/.vdkr`, `~/.vpdmn`, a memres VM) is never opened,
    /// so nothing of it ends up in the export; the images are on a disk, not in guest RAM;
    /// and any number of such batches run side by side. The dir is removed with the target.
    pub fn acquire_isolated(ctx: &RuntimeContext, spec: &RuntimeSpec) -> anyhow::Result<Target> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-batch-", ctx.tool.name))
            .tempdir()
            .context("creating the temporary state dir of the batch VM (in $TMPDIR)")?;
        let mut cfg = vmconfig::build(ctx, spec, dir.path(), true, Vec::new());
        cfg.state_disk_size_mib = ISOLATED_DISK_MIB;
        let started = Instant::now();
        let batch = vm::boot_batch(&cfg)?;
        tracing::debug!(elapsed = ?started.elapsed(), dir = %dir.path().display(), "isolated batch VM booted");
        Ok(Target {
            vm: Some(Vm::Batch(Box::new(batch))),
            tool: ctx.tool.name.clone(),
            console_log: cfg.console_log(),
            services: spec.services.iter().cloned().collect(),
            services_started: false,
            _keepalive: None,
            private_dir: None,
            isolated: Some(dir),
            held: Vec::new(),
        })
    }

    /// The end of the guest console log of an isolated batch VM, whose dir (log included)
    /// is removed with the target: what a failed batch leaves for diagnosis. None for other
    /// targets, whose log stays where error messages point.
    pub fn isolated_console_tail(&self, lines: usize) -> Option<String> {
        self.isolated.as_ref()?;
        let tail = vm::process::tail_lines(&self.console_log, lines);
        (!tail.trim().is_empty()).then_some(tail)
    }

    /// The QEMU process of a one-shot VM (None on a memres VM, which this command does not
    /// own).
    pub fn batch_qemu(&self) -> Option<ProcId> {
        match &self.vm {
            Some(Vm::Batch(b)) => ProcId::of(b.running().qemu.pid()),
            _ => None,
        }
    }

    /// Serialises changes to the guest's runtime configuration (registry drop-ins, docker's
    /// daemon.json + reload) between concurrent commands on one memres VM: the same guest
    /// file written by two commands at once makes one of them fail. A batch VM has a single
    /// user, so there is nothing to lock.
    pub fn config_lock(&self) -> anyhow::Result<Option<Flock<std::fs::File>>> {
        let Some(Vm::Memres(i)) = &self.vm else {
            return Ok(None);
        };
        let path = i.state_dir.join(GUEST_CONFIG_LOCK);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow!("locking {}: {e}", path.display()))?;
        Ok(Some(lock))
    }

    /// The memres instance, when the command runs on one.
    pub fn instance(&self) -> Option<&Instance> {
        match &self.vm {
            Some(Vm::Memres(i)) => Some(i),
            _ => None,
        }
    }

    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// One new connection to the agent.
    pub fn connect(&mut self) -> anyhow::Result<AgentStream> {
        let r = match &self.vm {
            Some(Vm::Memres(i)) => i.connect(),
            Some(Vm::Batch(b)) => b.connect(),
            None => Err(VmError::Other("the VM was already shut down".into())),
        };
        match r {
            Ok(s) => Ok(s),
            Err(VmError::VmGone { .. }) => Err(self.vm_stopped()),
            Err(e) => match self.wait_for_death() {
                true => Err(self.vm_stopped()),
                false => Err(anyhow!(e).context(format!(
                    "connecting to the guest agent (console log: {})",
                    self.console_log.display()
                ))),
            },
        }
    }

    /// A connection for a long operation (the command itself), watched: if QEMU dies while
    /// it runs, the connection is shut down so the read fails at once instead of waiting for
    /// a transport that may never notice. The watch ends when the returned guard is dropped.
    pub fn connect_watched(&mut self) -> anyhow::Result<(AgentStream, Watchdog)> {
        let conn = self.connect()?;
        let qemu = match &self.vm {
            Some(Vm::Memres(i)) => Some(i.record.qemu()),
            Some(Vm::Batch(b)) => ProcId::of(b.running().qemu.pid()),
            None => None,
        };
        let (tx, rx) = mpsc::channel::<()>();
        if let (Some(qemu), Ok(watched)) = (qemu, conn.try_clone()) {
            let _ = thread::Builder::new()
                .name("qemu-watchdog".into())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) =
                        rx.recv_timeout(Duration::from_millis(500))
                    {
                        if !qemu.is_alive() {
                            let _ = watched.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                    }
                });
        }
        Ok((conn, Watchdog { _stop: tx }))
    }

    fn vm_stopped(&self) -> anyhow::Error {
        anyhow!(
            "the VM stopped unexpectedly; see the console log at {}",
            self.console_log.display()
        )
    }

    /// True when QEMU is gone (waiting a moment: a broken connection is often seen a little
    /// before the process has exited).
    fn wait_for_death(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let gone = match &mut self.vm {
                Some(Vm::Memres(i)) => i.explain_disconnect().is_some(),
                Some(Vm::Batch(b)) => b.explain_disconnect().is_some(),
                None => true,
            };
            if gone || Instant::now() >= deadline {
                return gone;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// An agent operation's error as the user sees it: a lost connection names the console
    /// log (and says the VM died when it did).
    pub fn agent_error(&mut self, e: ClientError) -> anyhow::Error {
        if e.is_connection_lost() {
            if self.wait_for_death() {
                return self.vm_stopped();
            }
            return anyhow!(e).context(format!(
                "the guest agent went away; see the console log at {}",
                self.console_log.display()
            ));
        }
        anyhow!(e)
    }

    /// Starts the runtime's services (containerd, dockerd, ...) once per command; the agent
    /// answers at once for a service that already runs.
    pub fn ensure_services(&mut self) -> anyhow::Result<()> {
        if self.services_started {
            return Ok(());
        }
        for svc in self.services.clone() {
            let request = ServiceStartRequest {
                name: svc.name.to_string(),
                argv: svc.argv.iter().map(|a| a.to_string()).collect(),
                env: svc
                    .env
                    .iter()
                    .filter_map(|kv| {
                        kv.split_once('=')
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                    })
                    .collect(),
                probe: svc.readiness_probe.iter().map(|a| a.to_string()).collect(),
                probe_socket: (!svc.readiness_socket.is_empty()).then(|| SocketProbe {
                    path: svc.readiness_socket.to_string(),
                    http_path: (!svc.readiness_http_path.is_empty())
                        .then(|| svc.readiness_http_path.to_string()),
                }),
                timeout_secs: u64::from(svc.timeout_secs),
            };
            let conn = self.connect()?;
            agent_client::service_start(conn, request)
                .map_err(|e| self.agent_error(e))
                .with_context(|| format!("starting {} in the guest", svc.name))?;
        }
        self.services_started = true;
        Ok(())
    }

    /// Stops the runtime's services, last started first (for a consistent storage export).
    /// The next command starts them again.
    pub fn stop_services(&mut self) -> anyhow::Result<()> {
        for svc in self.services.clone().iter().rev() {
            let name = svc.name.to_string();
            let conn = self.connect()?;
            let state =
                agent_client::service_status(conn, &name).map_err(|e| self.agent_error(e))?;
            let Some(pid) = state.pid.filter(|_| state.running) else {
                continue;
            };
            self.exec_quiet(&["kill", "-TERM", &pid.to_string()])?;
            let deadline = Instant::now() + SERVICE_STOP_GRACE;
            loop {
                let conn = self.connect()?;
                let state =
                    agent_client::service_status(conn, &name).map_err(|e| self.agent_error(e))?;
                if !state.running {
                    break;
                }
                if Instant::now() >= deadline {
                    self.exec_quiet(&["kill", "-KILL", &pid.to_string()])?;
                    thread::sleep(Duration::from_millis(500));
                    break;
                }
                thread::sleep(Duration::from_millis(200));
            }
        }
        self.services_started = false;
        Ok(())
    }

    /// Runs `argv` in the guest with captured output.
    pub fn exec_capture(
        &mut self,
        argv: &[&str],
    ) -> anyhow::Result<(ExitStatus, Vec<u8>, Vec<u8>)> {
        let conn = self.connect()?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = agent_client::exec(
            conn,
            ExecRequest::new(argv.iter().copied()),
            None,
            &mut out,
            &mut err,
        )
        .map_err(|e| self.agent_error(e))?;
        Ok((status, out, err))
    }

    /// Writes what a command just stored (an image) to the memres VM's state disk, so that a
    /// QEMU killed right after the command cannot take it along: the guest's page cache dies
    /// with QEMU, and ext4 commits only every few seconds. A one-shot VM syncs when it shuts
    /// down. Best effort: the command already succeeded.
    pub fn persist(&mut self) {
        if self.instance().is_some() {
            if let Err(e) = self.exec_quiet(&["sync"]) {
                tracing::debug!("sync in the guest: {e:#}");
            }
        }
    }

    /// Runs a helper command in the guest; a failure is an error naming its stderr.
    pub fn exec_quiet(&mut self, argv: &[&str]) -> anyhow::Result<Vec<u8>> {
        let (status, out, err) = self.exec_capture(argv)?;
        if !status.success() {
            anyhow::bail!(
                "`{}` failed in the guest ({status:?}): {}",
                argv.join(" "),
                String::from_utf8_lossy(&err).trim()
            );
        }
        Ok(out)
    }

    /// Ends the command's use of the VM: a batch VM is shut down cleanly (the guest syncs and
    /// unmounts the state disk); a memres VM keeps running.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.release()
    }

    /// Takes `held` under the guard of this target (see [`Held`]).
    /// Before a secret (a password, registry credentials) goes to the VM: that VM is then
    /// never suspended, i.e. its memory never written to a file (vm::suspend).
    pub fn note_secret(&self) -> anyhow::Result<()> {
        let dir = match &self.vm {
            Some(Vm::Batch(b)) => &b.running().cfg.state_dir,
            Some(Vm::Memres(i)) => &i.state_dir,
            None => return Ok(()),
        };
        vm::suspend::note_secret(dir)
            .with_context(|| format!("marking {} as holding a secret", dir.display()))
    }

    pub fn hold(&mut self, held: Held) {
        self.held.push(held);
    }

    /// Lets go of forwards without removing them: a detached container owns them now.
    pub fn keep_forwards(&mut self, forwards: &[PortForward]) {
        self.held
            .retain(|h| !matches!(h, Held::Forwards(f) if f.as_slice() == forwards));
    }

    /// Releases what the command holds, newest first. Best effort: a failure is reported and
    /// the next one still released.
    pub fn release_held(&mut self) {
        while let Some(held) = self.held.pop() {
            match held {
                Held::GuestPath(path) => {
                    // the guest's tmpfs and a one-shot VM's storage go with the VM anyway
                    if let Err(e) = self.exec_quiet(&["rm", "-rf", &path]) {
                        tracing::debug!("removing {path} in the guest: {e:#}");
                    }
                }
                Held::Forwards(forwards) => {
                    if let Some(instance) = self.instance() {
                        for problem in vm::forwards::remove(instance, &forwards) {
                            ui::warn(&self.tool, &problem);
                        }
                    }
                }
            }
        }
    }

    fn release(&mut self) -> anyhow::Result<()> {
        self.release_held();
        // a batch import's state dir goes with it: nothing to suspend into
        let lasting = self.isolated.is_none();
        let result = match self.vm.take() {
            Some(Vm::Batch(b)) => match if lasting {
                b.suspend_or_shutdown()
            } else {
                b.shutdown()
            } {
                vm::boot::StopOutcome::Forced => Err(anyhow!(
                    "the VM did not shut down cleanly and was stopped by force; see {}",
                    self.console_log.display()
                )),
                _ => Ok(()),
            },
            _ => Ok(()),
        };
        if let Some(d) = self.private_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
        if let Some(d) = self.isolated.take() {
            if let Err(e) = d.close() {
                tracing::warn!("removing the batch VM's temporary state dir: {e}");
            }
        }
        result
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            ui::warn(&self.tool, &format!("{e:#}"));
        }
    }
}

/// `<state>/batch-<pid>`: a batch VM that must not open the state disk gets its own dir, so
/// it neither waits for nor disturbs a memres VM of the same state dir.
fn private_batch_dir(state: &Path) -> anyhow::Result<PathBuf> {
    let dir = state.join(format!("batch-{}", std::process::id()));
    if dir.exists() {
        // left by a crashed run with our (recycled) pid: ours to clear
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A thread that touches the memres activity file until the returned sender is dropped.
fn spawn_keepalive(state_dir: PathBuf) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    let _ = thread::Builder::new()
        .name("memres-keepalive".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(KEEPALIVE_EVERY) {
                vm::instance::touch_activity(&state_dir);
            }
        });
    tx
}
