//! Long-running services (containerd, dockerd, ...) started on the host's request.
//!
//! The runtime plugin on the host declares what to start and how to tell it is ready (a
//! socket that accepts connections, checked here without a process, or a probe program
//! that exits 0), so the agent knows nothing about docker or podman.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;
use vcontainer_proto::{ErrorKind, ExitStatus, Response, ServiceStartRequest, SocketProbe};

use crate::readiness;
use crate::resolve::{resolve, DEFAULT_PATH};
use crate::{log, Agent};

/// Pause between two runs of a probe program: short at first (a service is often ready
/// within a second), doubling up to the maximum so probes do not starve a slow service of
/// the guest's CPU.
const PROBE_INTERVAL_FIRST: Duration = Duration::from_millis(50);
const PROBE_INTERVAL_MAX: Duration = Duration::from_millis(250);
/// Longest one socket check waits for an answer before the service's liveness is checked
/// again.
const SOCKET_TRY_LIMIT: Duration = Duration::from_secs(2);
/// How long a service gets to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
const LOG_TAIL_BYTES: u64 = 2048;

struct Running {
    pid: u32,
    exited: Receiver<ExitStatus>,
    status: Option<ExitStatus>,
    log: PathBuf,
    /// The probe succeeded once.
    ready: bool,
}

impl Running {
    fn alive(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.exited.try_recv().ok();
        }
        self.status.is_none()
    }
}

/// Start order (services stop in reverse) and the services by name.
type Table = (Vec<String>, HashMap<String, Running>);

/// Services by name, in start order (they stop in reverse).
#[derive(Default)]
pub(crate) struct Services {
    /// Held for a whole start, so two hosts starting the same service at once do not start
    /// it twice; the table itself is only locked briefly, so status and shutdown never wait
    /// for a slow readiness probe.
    starting: Mutex<()>,
    table: Mutex<Table>,
}

impl Services {
    pub(crate) fn start(&self, agent: &Agent, request: ServiceStartRequest) -> Response {
        match self.try_start(agent, request) {
            Ok(()) => Response::Done,
            Err((kind, message)) => {
                log!("service start failed: {message}");
                Response::error(kind, message)
            }
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn try_start(
        &self,
        agent: &Agent,
        request: ServiceStartRequest,
    ) -> Result<(), (ErrorKind, String)> {
        let name = request.name.clone();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || name.starts_with('.')
        {
            return Err((
                ErrorKind::BadRequest,
                format!("service name {name:?} must be letters, digits, '-', '_' or '.'"),
            ));
        }
        let _one_start_at_a_time = self.starting.lock().unwrap_or_else(PoisonError::into_inner);
        let already = self
            .table()
            .1
            .get_mut(&name)
            .and_then(|running| running.alive().then_some(running.ready));
        let started = Instant::now();
        match already {
            Some(true) => return Ok(()),
            // Running but never got ready (an earlier start timed out): probe again.
            Some(false) => {}
            None => self.spawn(agent, &name, &request)?,
        }
        self.wait_ready(agent, &name, &request)?;
        if let Some(running) = self.table().1.get_mut(&name) {
            running.ready = true;
        }
        log!(
            "service {name} ready after {:.2} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn spawn(
        &self,
        agent: &Agent,
        name: &str,
        request: &ServiceStartRequest,
    ) -> Result<(), (ErrorKind, String)> {
        let Some(program) = request.argv.first() else {
            return Err((ErrorKind::BadRequest, format!("service {name}: empty argv")));
        };
        let program = resolve(program, DEFAULT_PATH, Path::new("/")).map_err(|e| {
            (
                ErrorKind::NotFound,
                format!("service {name}: {}", e.message),
            )
        })?;
        let log_path = agent.info.service_log_dir.join(format!("{name}.log"));
        let log_file = open_log(&log_path)
            .map_err(|e| (ErrorKind::Io, format!("{}: {e}", log_path.display())))?;
        let mut command = Command::new(program);
        command
            .arg0(&request.argv[0])
            .args(&request.argv[1..])
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .env("HOME", "/root")
            .envs(request.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(io_err)?)
            .stderr(log_file)
            .process_group(0);
        let (child, exited) = agent.reaper.spawn(&mut command).map_err(io_err)?;
        log!("service {name} started, pid {}", child.id());
        let running = Running {
            pid: child.id(),
            exited,
            status: None,
            log: log_path,
            ready: false,
        };
        let mut table = self.table();
        table.0.retain(|n| n != name);
        table.0.push(name.to_owned());
        table.1.insert(name.to_owned(), running);
        Ok(())
    }

    /// Probe until ready; fails when the service dies or the timeout passes.
    fn wait_ready(
        &self,
        agent: &Agent,
        name: &str,
        request: &ServiceStartRequest,
    ) -> Result<(), (ErrorKind, String)> {
        let deadline = Instant::now() + Duration::from_secs(request.timeout_secs);
        let mut program_pause = PROBE_INTERVAL_FIRST;
        loop {
            let (alive, status, log_path) = {
                let mut table = self.table();
                match table.1.get_mut(name) {
                    Some(running) => (running.alive(), running.status, running.log.clone()),
                    None => (false, None, PathBuf::new()),
                }
            };
            if !alive {
                return Err((
                    ErrorKind::ServiceFailed,
                    format!(
                        "service {name} exited ({status:?}) before it was ready; end of {}:\n{}",
                        log_path.display(),
                        log_tail(&log_path)
                    ),
                ));
            }
            if let Some((earlier, status, log_path)) = self.dead_predecessor(name) {
                return Err((
                    ErrorKind::ServiceFailed,
                    format!(
                        "service {earlier}, started before {name}, exited ({status:?}) while \
                         {name} was getting ready; end of {}:\n{}",
                        log_path.display(),
                        log_tail(&log_path)
                    ),
                ));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let (ready, pause) = match &request.probe_socket {
                Some(socket) => (
                    readiness::socket_ready(socket, remaining.min(SOCKET_TRY_LIMIT)),
                    readiness::SOCKET_INTERVAL,
                ),
                None if request.probe.is_empty() => return Ok(()),
                None => {
                    let ready = probe_once(agent, &request.probe, remaining)?;
                    let pause = program_pause;
                    program_pause = (program_pause * 2).min(PROBE_INTERVAL_MAX);
                    (ready, pause)
                }
            };
            if ready {
                return Ok(());
            }
            if Instant::now() + pause > deadline {
                return Err((
                    ErrorKind::Timeout,
                    format!(
                        "service {name} not ready after {} s ({} kept failing); end of {}:\n{}",
                        request.timeout_secs,
                        describe_probe(request),
                        log_path.display(),
                        log_tail(&log_path)
                    ),
                ));
            }
            thread::sleep(pause);
        }
    }

    /// A service started (and reported ready) before `name` that is no longer running: its
    /// name, exit status and log. A runtime may declare a dependency "ready once started" so that it starts
    /// alongside the service that uses it (dockerd waits for containerd by itself); its
    /// death must then still end the wait at once, naming the right log.
    fn dead_predecessor(&self, name: &str) -> Option<(String, Option<ExitStatus>, PathBuf)> {
        let mut table = self.table();
        let (order, services) = &mut *table;
        for earlier in order.iter().take_while(|n| n.as_str() != name) {
            if let Some(running) = services.get_mut(earlier) {
                // one whose own start failed was reported then, and is nobody's dependency
                if running.ready && !running.alive() {
                    return Some((earlier.clone(), running.status, running.log.clone()));
                }
            }
        }
        None
    }

    pub(crate) fn status(&self, name: &str) -> Response {
        let pid = self
            .table()
            .1
            .get_mut(name)
            .and_then(|running| running.alive().then_some(running.pid));
        Response::ServiceState {
            name: name.to_owned(),
            running: pid.is_some(),
            pid,
        }
    }

    /// The pids of the services that run.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.table()
            .1
            .values_mut()
            .filter_map(|running| running.alive().then_some(running.pid))
            .collect()
    }

    /// SIGTERM each service (last started first), SIGKILL after [`STOP_GRACE`].
    pub(crate) fn stop_all(&self) {
        let mut table = self.table();
        let (order, services) = &mut *table;
        for name in order.iter().rev() {
            let Some(running) = services.get_mut(name) else {
                continue;
            };
            if !running.alive() {
                continue;
            }
            log!("stopping service {name} (pid {})", running.pid);
            signal(running.pid, libc::SIGTERM);
            match running.exited.recv_timeout(STOP_GRACE) {
                Ok(status) => running.status = Some(status),
                Err(_) => {
                    log!("service {name} ignored SIGTERM for {STOP_GRACE:?}, killing it");
                    signal(running.pid, libc::SIGKILL);
                    running.status = running.exited.recv_timeout(Duration::from_secs(2)).ok();
                }
            }
        }
    }
}

/// The readiness check in use, for messages.
fn describe_probe(request: &ServiceStartRequest) -> String {
    match &request.probe_socket {
        Some(SocketProbe {
            path,
            http_path: Some(http_path),
        }) => format!("GET {http_path} on socket {path}"),
        Some(SocketProbe { path, .. }) => format!("connecting to socket {path}"),
        None => format!("probe {:?}", request.probe),
    }
}

fn probe_once(
    agent: &Agent,
    probe: &[String],
    limit: Duration,
) -> Result<bool, (ErrorKind, String)> {
    let program = resolve(&probe[0], DEFAULT_PATH, Path::new("/"))
        .map_err(|e| (ErrorKind::NotFound, format!("probe: {}", e.message)))?;
    let mut command = Command::new(program);
    command
        .arg0(&probe[0])
        .args(&probe[1..])
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("HOME", "/root")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let (child, exited) = agent.reaper.spawn(&mut command).map_err(io_err)?;
    match exited.recv_timeout(limit.max(Duration::from_millis(100))) {
        Ok(status) => Ok(status.success()),
        Err(RecvTimeoutError::Timeout) => {
            signal(child.id(), libc::SIGKILL);
            let _ = exited.recv_timeout(Duration::from_secs(2));
            Ok(false)
        }
        Err(RecvTimeoutError::Disconnected) => Ok(false),
    }
}

fn signal(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

fn log_tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut text = Vec::new();
    let _ = file.read_to_end(&mut text);
    String::from_utf8_lossy(&text).into_owned()
}

fn io_err(e: std::io::Error) -> (ErrorKind, String) {
    (crate::error_kind(&e), e.to_string())
}
