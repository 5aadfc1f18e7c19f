//! `vcontainer-agent`: serves the vcontainer protocol inside the guest.
//!
//! The library holds everything that does not need to be PID 1 — answering requests on any
//! stream listener — so the host client's unit tests can run a real agent in-process over a
//! Unix socket. The binary (`main.rs`) adds the PID-1 boot duties ([`pid1`]) and vsock.

mod auth;
pub mod console;
mod exec;
#[doc(hidden)]
pub mod fuzzing;
mod idle;
pub mod listener;
pub mod pid1;
mod readiness;
pub mod reaper;
mod relay;
mod resolve;
mod service;
mod sink;
mod tarx;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use vcontainer_proto::{
    check_version, read_frame, ErrorKind, HelloOk, ProtoError, Request, Response,
    CAPABILITY_RESUME, CAPABILITY_SUSPEND, PROTOCOL_VERSION,
};

pub use vcontainer_proto::auth::Secret;

pub use listener::{AgentListener, AgentStream};
pub use reaper::Reaper;

use crate::service::Services;
use crate::sink::FrameSink;

/// What the host is told about this guest, and where service logs go.
#[derive(Debug, Clone, Default)]
pub struct AgentInfo {
    /// `vcontainer.runtime=` from the kernel command line.
    pub runtime: String,
    /// Problems found during boot that the host should show.
    pub warnings: Vec<String>,
    /// Directory for `<service>.log` files.
    pub service_log_dir: PathBuf,
    /// The VM's secret every connection must prove (see `auth`); None serves nobody.
    pub secret: Option<Secret>,
}

/// Work to do on `Shutdown` after services are stopped: sync, unmount, and finally power off.
pub trait ShutdownHook: Send + Sync {
    /// Make persistent state safe (sync, unmount the state disk). Errors go to the host.
    fn prepare(&self) -> Result<(), String>;
    /// Called after the host got its answer. Powers the guest off; may return in tests.
    fn power_off(&self);
}

/// What a guest booted to be saved as a snapshot does differently (docs/snapshot.md): every
/// restore of the snapshot is a new run with its own secret (QEMU's fw_cfg of that run), and
/// is told its clock, entropy and storage by `Resume`.
pub trait SnapshotHook: Send + Sync {
    /// The secret of the current run, read again for each connection (the one read at boot
    /// belongs to the run that made the snapshot). None serves nobody.
    fn current_secret(&self) -> Option<Secret>;
    /// Make this restore the host's run: clock, entropy, storage. Errors go to the host.
    fn resume(&self, request: &vcontainer_proto::ResumeRequest) -> Result<(), String>;
    /// Make the run's storage safe to be saved with the guest (sync and freeze the state
    /// disk) and expect a `Resume` again. The caller checked that the guest is idle.
    fn suspend(&self) -> Result<(), String>;
}

/// A hook that does nothing (not PID 1, unit tests).
pub struct NoShutdown;

impl ShutdownHook for NoShutdown {
    fn prepare(&self) -> Result<(), String> {
        Ok(())
    }
    fn power_off(&self) {}
}

/// The serving state shared by all connections.
pub struct Agent {
    info: AgentInfo,
    reaper: Reaper,
    services: Services,
    shutdown: Box<dyn ShutdownHook>,
    /// Set when booted with `vcontainer.snapshot=1`.
    snapshot: Option<Box<dyn SnapshotHook>>,
    /// Result of [`Agent::make_state_safe`] once it ran.
    state_safe: std::sync::Mutex<Option<Result<(), String>>>,
    /// Connections being served, and exec threads still reading a host's connection (see
    /// [`Agent::hold`]).
    open: Arc<AtomicUsize>,
}

/// One open connection or exec thread, counted in [`Agent`] while it lives.
pub(crate) struct Hold(Arc<AtomicUsize>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Agent {
    pub fn new(info: AgentInfo, reaper: Reaper, shutdown: Box<dyn ShutdownHook>) -> Self {
        Self {
            info,
            reaper,
            services: Services::default(),
            shutdown,
            snapshot: None,
            state_safe: std::sync::Mutex::new(None),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Count a connection (or a thread still using one) until the returned value is dropped:
    /// a guest saved with one open would, once restored, close a socket of the vsock device
    /// it no longer has, and reset the new connection that reuses its ports.
    pub(crate) fn hold(&self) -> Hold {
        self.open.fetch_add(1, Ordering::AcqRel);
        Hold(Arc::clone(&self.open))
    }

    /// This agent serves a guest that is saved as a snapshot and restored (see
    /// [`SnapshotHook`]).
    pub fn with_snapshot(mut self, hook: Box<dyn SnapshotHook>) -> Self {
        self.snapshot = Some(hook);
        self
    }

    /// An agent for tests: per-child reaping, no shutdown duties, logs in `log_dir`, serving
    /// the clients that hold `secret`.
    pub fn for_tests(log_dir: PathBuf, secret: Secret) -> Self {
        Self::new(
            AgentInfo {
                runtime: "test".into(),
                warnings: Vec::new(),
                service_log_dir: log_dir,
                secret: Some(secret),
            },
            Reaper::per_child(),
            Box::new(NoShutdown),
        )
    }
}

/// Accept connections forever, one thread per connection.
pub fn serve<L: AgentListener>(listener: L, agent: Arc<Agent>) {
    loop {
        match listener.accept_stream() {
            Ok(stream) => {
                let agent = Arc::clone(&agent);
                let spawned = thread::Builder::new()
                    .name("conn".into())
                    .spawn(move || handle_connection(&agent, stream));
                if let Err(e) = spawned {
                    log!("cannot start a connection thread: {e}");
                }
            }
            Err(e) => {
                log!("accept failed: {e}");
                // EMFILE and friends: do not spin.
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Serve one connection: authentication, one request, its conversation, then close.
pub fn handle_connection<S: AgentStream>(agent: &Agent, stream: S) {
    let _open = agent.hold();
    if let Err(e) = converse(agent, &stream) {
        log!("connection ended with an error: {e}");
    }
    stream.shutdown_both();
}

fn converse<S: AgentStream>(agent: &Agent, stream: &S) -> Result<(), ProtoError> {
    let mut writer = stream.try_clone_stream()?;
    let mut reader = stream.try_clone_stream()?;
    let secret = match &agent.snapshot {
        Some(hook) => hook.current_secret(),
        None => agent.info.secret.clone(),
    };
    if let Err(why) = auth::accept(secret.as_ref(), stream, &mut reader, &mut writer) {
        log!("connection refused: {why}");
        return Ok(());
    }
    let sink = FrameSink::new(Box::new(writer));
    let Some(frame) = read_frame(&mut reader)? else {
        return Ok(());
    };
    let request: Request = match frame.parse() {
        Ok(request) => request,
        Err(e) => {
            return sink.finish(&Response::error(
                ErrorKind::BadRequest,
                format!("first frame is not a valid request: {e}"),
            ))
        }
    };
    match request {
        Request::Hello {
            protocol_version,
            client,
        } => {
            if let Err(e) = check_version(protocol_version, PROTOCOL_VERSION) {
                log!("refusing client {client:?}: {e}");
                return sink.finish(&Response::error(ErrorKind::VersionMismatch, e.to_string()));
            }
            sink.finish(&Response::HelloOk(hello(agent)))
        }
        Request::Exec(exec) => exec::run(agent, exec, Box::new(reader), &sink),
        Request::PushTar { dest } => tarx::push(&dest, &mut reader, &sink),
        Request::PullTar {
            path,
            contents_only,
        } => tarx::pull(&path, contents_only, &sink),
        Request::ServiceStart(start) => {
            let response = agent.services.start(agent, start);
            sink.finish(&response)
        }
        Request::ServiceStatus { name } => sink.finish(&agent.services.status(&name)),
        Request::Shutdown => shutdown(agent, &sink),
        Request::Connect { path } => relay::connect(&path, reader, &sink),
        Request::MountShare { tag, read_only } => match pid1::shares::mount(&tag, read_only) {
            Ok(_) => sink.finish(&Response::Done),
            Err(e) => {
                log!("share {tag}: {e}");
                sink.finish(&Response::error(ErrorKind::Io, e))
            }
        },
        Request::Resume(request) => {
            let response = match &agent.snapshot {
                Some(hook) => match hook.resume(&request) {
                    Ok(()) => Response::Done,
                    Err(message) => Response::error(ErrorKind::Io, message),
                },
                None => Response::error(
                    ErrorKind::BadRequest,
                    "Resume is only valid on a guest booted with vcontainer.snapshot=1",
                ),
            };
            sink.finish(&response)
        }
        Request::Suspend(request) => sink.finish(&suspend(agent, &request)),
        Request::Signal { .. } | Request::Resize(_) => sink.finish(&Response::error(
            ErrorKind::BadRequest,
            "Signal and Resize are only valid on an Exec connection",
        )),
    }
}

fn hello(agent: &Agent) -> HelloOk {
    HelloOk {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        runtime: agent.info.runtime.clone(),
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        warnings: agent.info.warnings.clone(),
        capabilities: capabilities(agent.snapshot.is_some()),
    }
}

/// What `HelloOk` advertises: `Resume` and `Suspend` only when booted with
/// `vcontainer.snapshot=1` (the only guest that serves them), so the host saves no guest
/// that would refuse them.
fn capabilities(snapshot: bool) -> Vec<String> {
    if snapshot {
        vec![CAPABILITY_RESUME.to_owned(), CAPABILITY_SUSPEND.to_owned()]
    } else {
        Vec::new()
    }
}

/// `Suspend`: refused when no service runs and the host asked for one, and (`Busy`, naming
/// them) while anything but the services runs; else the storage is frozen for the save.
fn suspend(agent: &Agent, request: &vcontainer_proto::SuspendRequest) -> Response {
    let Some(hook) = &agent.snapshot else {
        return Response::error(
            ErrorKind::BadRequest,
            "Suspend is only valid on a guest booted with vcontainer.snapshot=1",
        );
    };
    if let Err(open) = only_this_connection(agent) {
        return Response::error(
            ErrorKind::Busy,
            format!("a command is still finishing ({open} other connections open)"),
        );
    }
    let services = agent.services.pids();
    if services.is_empty() && request.only_with_services {
        return Response::error(
            ErrorKind::BadRequest,
            "no service runs, and this host's save is slow: a restore of the shared snapshot is faster",
        );
    }
    let strays = idle::strays(Path::new("/proc"), &services);
    if !strays.is_empty() {
        return Response::error(
            ErrorKind::Busy,
            format!("still running: {}", strays.join(", ")),
        );
    }
    match hook.suspend() {
        Ok(()) => {
            log!("suspended: storage frozen for the save");
            Response::Done
        }
        Err(message) => Response::error(ErrorKind::Io, message),
    }
}

/// How long a `Suspend` waits for the other connections to close: the host closed the last
/// command's before asking, and its exec thread notices within moments; one that a lost host
/// left (a timed-out command: SIGHUP, then SIGKILL after 5 s) takes longer, and the guest is
/// then shut down instead.
const OPEN_WAIT: Duration = Duration::from_secs(2);

/// Ok when the `Suspend`'s own connection is the only one open (within [`OPEN_WAIT`]), else
/// Err(how many others are).
fn only_this_connection(agent: &Agent) -> Result<(), usize> {
    let deadline = std::time::Instant::now() + OPEN_WAIT;
    loop {
        let others = agent.open.load(Ordering::Acquire).saturating_sub(1);
        if others == 0 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(others);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn shutdown(agent: &Agent, sink: &FrameSink) -> Result<(), ProtoError> {
    log!("shutdown requested by the host");
    let response = match agent.make_state_safe() {
        Ok(()) => Response::Done,
        Err(message) => Response::error(ErrorKind::Io, message),
    };
    let sent = sink.finish(&response);
    agent.shutdown.power_off();
    sent
}

impl Agent {
    /// Stop services, then sync and release the state disk: everything a clean power-off
    /// needs, whoever asked for it (the host's `Shutdown`, or the power button).
    /// Done once: a second request (power button during a `Shutdown`) waits for the first
    /// and gets the same result.
    pub fn make_state_safe(&self) -> Result<(), String> {
        let mut done = self
            .state_safe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(result) = &*done {
            return result.clone();
        }
        log!("stopping services");
        self.services.stop_all();
        let result = self.shutdown.prepare();
        *done = Some(result.clone());
        result
    }

    /// Make state safe, then power off (the power-button path; nobody waits for an answer).
    pub fn shut_down(&self) {
        if let Err(e) = self.make_state_safe() {
            log!("shutdown: {e}");
        }
        self.shutdown.power_off();
    }
}

/// Map an io error to the protocol's error kind.
pub(crate) fn error_kind(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        _ => ErrorKind::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::capabilities;
    use vcontainer_proto::{CAPABILITY_RESUME, CAPABILITY_SUSPEND};

    #[test]
    fn resume_is_advertised_only_by_a_guest_booted_to_be_saved() {
        assert_eq!(capabilities(true), [CAPABILITY_RESUME, CAPABILITY_SUSPEND]);
        assert!(capabilities(false).is_empty());
    }
}
