//! `Exec`: run one program, stream its output as produced, relay stdin, signals and window
//! size, and end with its exit status.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::pty::{openpty, Winsize};
use vcontainer_proto::{
    exit, read_frame, ErrorKind, ExecRequest, ExitStatus, FrameType, ProtoError, Request, Response,
    WindowSize,
};

use crate::resolve::{resolve, DEFAULT_PATH};
use crate::sink::FrameSink;
use crate::Agent;

/// After the program exits, output still in flight is forwarded until the pipes close or
/// stay silent this long (a background grandchild may hold them open forever). Bytes still
/// unread in a pipe, or a chunk being sent, never count as silence: output written before
/// the exit is always delivered, however slowly the pumps get scheduled.
const DRAIN_IDLE: Duration = Duration::from_millis(1000);
/// How often the drain looks at the pipes again while it waits for silence.
const DRAIN_POLL: Duration = Duration::from_millis(50);
const READ_CHUNK: usize = 64 * 1024;
/// How long a program whose host went away has after SIGHUP before it is killed: nobody
/// waits for it any more, and a container's PID 1 ignores SIGHUP (so `podman run` would wait
/// for ever, and the request's `if_host_lost` steps never run).
const HOST_LOST_GRACE: Duration = Duration::from_secs(5);

/// One `Exec`: the program prepared and started, its output pumped and its input relayed,
/// then its exit status once the output in flight is delivered.
pub(crate) fn run(
    agent: &Agent,
    request: ExecRequest,
    reader: Box<dyn Read + Send>,
    sink: &FrameSink,
) -> Result<(), ProtoError> {
    let (mut command, io) = match prepare(&request) {
        Ok(prepared) => prepared,
        Err(refusal) => return refusal.send(sink),
    };
    let (mut child, exit_rx) = match agent.reaper.spawn(&mut command) {
        Ok(spawned) => spawned,
        Err(e) => return Refusal::spawn_failed(&request.argv[0], &e).send(sink),
    };
    // Close our copies of the child's ends (the PTY slave above all: the master only sees
    // EOF once every slave fd is gone).
    drop(command);
    let pid = child.id();
    // the console log is a plain file on the host: no passwords in it
    crate::debug_log!(
        "exec pid {pid}: {:?}",
        vcontainer_proto::redact::argv(&request.argv)
    );
    sink.respond(&Response::Started { pid })?;
    let drain = Arc::new(Drain::default());
    let stdin_target = connect_output(&drain, &mut child, &io, request.stdin, sink)?;
    drop(child);
    let finished = Arc::new(AtomicBool::new(false));
    let host_lost = Arc::new(AtomicBool::new(false));
    let control = Control {
        pgid: i32::try_from(pid).unwrap_or(i32::MAX),
        master_fd: io.master_fd(),
        finished: Arc::clone(&finished),
        host_lost: Arc::clone(&host_lost),
    };
    let stdin_tx = stdin_target.map(spawn_stdin_writer);
    // the relay outlives this function when the host is lost (its grace): still open
    let open = agent.hold();
    thread::Builder::new()
        .name(format!("exec-{pid}-in"))
        .spawn(move || {
            let _open = open;
            control.relay(reader, stdin_tx)
        })
        .map_err(ProtoError::Io)?;
    let status = exit_rx
        .recv()
        .unwrap_or(ExitStatus::Code(exit::STATUS_LOST));
    finished.store(true, Ordering::Release);
    drain.wait_quiet();
    crate::debug_log!("exec pid {pid}: exited {status:?}");
    // `io` (the PTY master) lives until here so Resize can reach it while the program runs.
    drop(io);
    let answered = sink.finish(&Response::Exited { status });
    if host_lost.load(Ordering::Acquire) || answered.is_err() {
        run_orphaned_steps(agent, &request);
    }
    answered
}

/// The request's `if_host_lost` programs, in turn, each waited for: the host that would have
/// run its follow-up steps is gone. Their output goes nowhere; failures go to the log.
fn run_orphaned_steps(agent: &Agent, request: &ExecRequest) {
    for argv in &request.if_host_lost {
        let mut step = ExecRequest::new(argv.iter().cloned());
        step.env.clone_from(&request.env);
        let outcome = match prepare(&step) {
            Ok((mut command, _io)) => {
                command
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                agent
                    .reaper
                    .spawn(&mut command)
                    .map(|(_child, exited)| exited.recv())
                    .map_err(|e| e.to_string())
            }
            Err(_) => Err("cannot run".to_owned()),
        };
        crate::log!(
            "host gone: ran {:?}: {outcome:?}",
            vcontainer_proto::redact::argv(argv)
        );
    }
}

/// Why a program is not started: the answer the client gets instead.
enum Refusal {
    /// A request the agent cannot act on (an error response; boxed: `Response` is large since
    /// `HelloOk` carries capabilities, and this travels in every `prepare` result).
    Error(Box<Response>),
    /// The program cannot run: a shell-like message and status 126/127.
    CannotRun { code: i32, message: String },
}

impl Refusal {
    fn spawn_failed(argv0: &str, e: &io::Error) -> Self {
        let code = if e.kind() == io::ErrorKind::NotFound {
            exit::NOT_FOUND
        } else {
            exit::CANNOT_EXECUTE
        };
        Refusal::CannotRun {
            code,
            message: format!("{argv0}: {e}"),
        }
    }

    fn send(self, sink: &FrameSink) -> Result<(), ProtoError> {
        match self {
            Refusal::Error(response) => sink.finish(&response),
            Refusal::CannotRun { code, message } => cannot_run(sink, code, &message),
        }
    }
}

/// The command for `request` (program found on its PATH, environment, working directory)
/// with its stdio: pipes, or a PTY when a terminal is asked for.
fn prepare(request: &ExecRequest) -> Result<(Command, StdIo), Refusal> {
    if request.argv.is_empty() {
        return Err(Refusal::Error(Box::new(Response::error(
            ErrorKind::BadRequest,
            "exec: empty argv",
        ))));
    }
    let env = environment(request);
    let cwd = request.cwd.clone().unwrap_or_else(|| "/".to_owned());
    if !Path::new(&cwd).is_dir() {
        return Err(Refusal::Error(Box::new(Response::error(
            ErrorKind::NotFound,
            format!("exec: working directory {cwd} does not exist in the guest"),
        ))));
    }
    let search_path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let program = resolve(&request.argv[0], search_path, Path::new(&cwd)).map_err(|n| {
        Refusal::CannotRun {
            code: n.code,
            message: n.message,
        }
    })?;
    let mut command = Command::new(&program);
    command
        .arg0(&request.argv[0])
        .args(&request.argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(&cwd);
    let io = match request.tty {
        Some(size) => pty_io(&mut command, size),
        None => pipe_io(&mut command, request.stdin),
    }
    .map_err(|e| {
        Refusal::Error(Box::new(Response::error(
            ErrorKind::Io,
            format!("exec: cannot set up stdio: {e}"),
        )))
    })?;
    Ok((command, io))
}

/// Starts the output pumps (stdout and stderr, or the PTY master as stdout with stderr
/// ended at once) and returns where the client's stdin goes, if it sends any.
fn connect_output(
    drain: &Arc<Drain>,
    child: &mut std::process::Child,
    io: &StdIo,
    stdin: bool,
    sink: &FrameSink,
) -> Result<Option<Box<dyn Write + Send>>, ProtoError> {
    match io {
        StdIo::Pipes => {
            if let Some(stdout) = child.stdout.take() {
                let fd = stdout.as_raw_fd();
                drain.pump(Box::new(stdout), fd, FrameType::Stdout, sink.clone());
            }
            if let Some(stderr) = child.stderr.take() {
                let fd = stderr.as_raw_fd();
                drain.pump(Box::new(stderr), fd, FrameType::Stderr, sink.clone());
            }
            Ok(child
                .stdin
                .take()
                .map(|s| Box::new(s) as Box<dyn Write + Send>))
        }
        StdIo::Pty { master } => {
            let output = File::from(master.try_clone().map_err(ProtoError::Io)?);
            let fd = output.as_raw_fd();
            drain.pump(Box::new(output), fd, FrameType::Stdout, sink.clone());
            sink.frame(FrameType::StderrEnd, &[])?;
            if !stdin {
                return Ok(None);
            }
            let input = File::from(master.try_clone().map_err(ProtoError::Io)?);
            Ok(Some(Box::new(input)))
        }
    }
}

/// The program could not be started: a shell-like message on stderr and status
/// [`exit::CANNOT_EXECUTE`] / [`exit::NOT_FOUND`].
fn cannot_run(sink: &FrameSink, code: i32, message: &str) -> Result<(), ProtoError> {
    sink.data(FrameType::Stderr, format!("{message}\n").as_bytes())?;
    sink.frame(FrameType::StdoutEnd, &[])?;
    sink.frame(FrameType::StderrEnd, &[])?;
    sink.finish(&Response::Exited {
        status: ExitStatus::Code(code),
    })
}

/// The agent's own environment is never passed on (as PID 1 it holds kernel command-line
/// leftovers): a fixed base, then the request's variables (later ones win).
fn environment(request: &ExecRequest) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
        ("HOME".to_owned(), "/root".to_owned()),
    ];
    if request.tty.is_some() {
        env.push(("TERM".to_owned(), "xterm".to_owned()));
    }
    for (key, value) in &request.env {
        env.retain(|(k, _)| k != key);
        env.push((key.clone(), value.clone()));
    }
    env
}

enum StdIo {
    Pipes,
    Pty { master: OwnedFd },
}

impl StdIo {
    /// The PTY master, where a Resize goes.
    fn master_fd(&self) -> Option<RawFd> {
        match self {
            StdIo::Pty { master } => Some(master.as_raw_fd()),
            StdIo::Pipes => None,
        }
    }
}

fn pipe_io(command: &mut Command, stdin: bool) -> io::Result<StdIo> {
    command
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group, so Signal reaches the program's children too.
        .process_group(0);
    Ok(StdIo::Pipes)
}

fn pty_io(command: &mut Command, size: WindowSize) -> io::Result<StdIo> {
    let pty = openpty(Some(&winsize(size)), None).map_err(io::Error::from)?;
    command
        .stdin(Stdio::from(pty.slave.try_clone()?))
        .stdout(Stdio::from(pty.slave.try_clone()?))
        .stderr(Stdio::from(pty.slave));
    // SAFETY: setsid and ioctl are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            // Make the PTY (our stdin now) the controlling terminal of the new session.
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(StdIo::Pty { master: pty.master })
}

fn winsize(size: WindowSize) -> Winsize {
    Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Tracks the output pumps so the final status waits for output still in flight.
#[derive(Default)]
struct Drain {
    state: Mutex<DrainState>,
    changed: Condvar,
}

struct DrainState {
    /// The read ends of the pumps still running. A pump takes its fd out (under the lock)
    /// before it closes it, so a number here is never another file's.
    open: Vec<RawFd>,
    /// Pumps between reading a chunk and having sent it.
    sending: usize,
    last_output: Instant,
}

impl Default for DrainState {
    fn default() -> Self {
        Self {
            open: Vec::new(),
            sending: 0,
            last_output: Instant::now(),
        }
    }
}

impl DrainState {
    /// Output that is not on its way to the host yet, or is being sent now.
    fn in_flight(&self) -> bool {
        self.sending > 0 || self.open.iter().any(|fd| unread_bytes(*fd) > 0)
    }
}

/// Bytes waiting to be read on a pipe or PTY master (FIONREAD); 0 when it cannot be asked.
fn unread_bytes(fd: RawFd) -> libc::c_int {
    let mut count: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer; `fd` is open (see DrainState).
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut count) };
    if rc < 0 {
        0
    } else {
        count
    }
}

impl Drain {
    /// Forwards `source` (whose descriptor is `fd`) as `kind` frames until EOF.
    fn pump(
        self: &Arc<Self>,
        mut source: Box<dyn Read + Send>,
        fd: RawFd,
        kind: FrameType,
        sink: FrameSink,
    ) {
        self.lock().open.push(fd);
        let end = match kind {
            FrameType::Stderr => FrameType::StderrEnd,
            _ => FrameType::StdoutEnd,
        };
        let spawned = thread::Builder::new().name("exec-out".into()).spawn({
            let drain = Arc::clone(self);
            move || {
                let mut buf = vec![0u8; READ_CHUNK];
                loop {
                    match source.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            drain.lock().sending += 1;
                            let sent = sink.data(kind, &buf[..n]);
                            drain.sent();
                            if sent.is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // EIO on a PTY master means every slave fd is closed: EOF.
                        Err(_) => break,
                    }
                }
                let _ = sink.frame(end, &[]);
                drain.closed(fd);
                drop(source);
            }
        });
        if spawned.is_err() {
            self.closed(fd);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DrainState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sent(&self) {
        let mut state = self.lock();
        state.sending = state.sending.saturating_sub(1);
        state.last_output = Instant::now();
        self.changed.notify_all();
    }

    fn closed(&self, fd: RawFd) {
        let mut state = self.lock();
        if let Some(at) = state.open.iter().position(|open| *open == fd) {
            state.open.swap_remove(at);
        }
        self.changed.notify_all();
    }

    /// Wait until every pump hit EOF, or, with nothing left unread or being sent, none
    /// produced output for [`DRAIN_IDLE`] since the program exited.
    fn wait_quiet(&self) {
        let exited_at = Instant::now();
        let mut state = self.lock();
        while !state.open.is_empty() {
            let wait = if state.in_flight() {
                DRAIN_POLL
            } else {
                let idle = state.last_output.max(exited_at).elapsed();
                if idle >= DRAIN_IDLE {
                    break;
                }
                (DRAIN_IDLE - idle).min(DRAIN_POLL)
            };
            state = self
                .changed
                .wait_timeout(state, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Forward stdin chunks to the program without blocking the control reader (a program that
/// does not read its stdin must not hold up a Signal).
/// `Some(bytes)` to write, `None` to close the program's stdin.
type StdinChunk = Option<Vec<u8>>;

fn spawn_stdin_writer(mut target: Box<dyn Write + Send>) -> SyncSender<StdinChunk> {
    let (tx, rx) = sync_channel::<StdinChunk>(64);
    let _ = thread::Builder::new()
        .name("exec-stdin".into())
        .spawn(move || {
            while let Ok(Some(chunk)) = rx.recv() {
                if target.write_all(&chunk).is_err() {
                    // The program closed its stdin; discard the rest.
                    while let Ok(Some(_)) = rx.recv() {}
                    break;
                }
            }
            // Dropping `target` closes the pipe: the program sees EOF.
        });
    tx
}

/// Reads the host's frames during an exec.
struct Control {
    pgid: i32,
    master_fd: Option<RawFd>,
    finished: Arc<AtomicBool>,
    /// Set when the host's connection closed while the program ran.
    host_lost: Arc<AtomicBool>,
}

impl Control {
    fn relay(self, mut reader: Box<dyn Read + Send>, mut stdin: Option<SyncSender<StdinChunk>>) {
        loop {
            let frame = match read_frame(&mut reader) {
                Ok(Some(frame)) => frame,
                Ok(None) | Err(_) => {
                    // The host went away while the program runs: hang up on it, as a closed
                    // terminal would, and kill it if it ignores that.
                    if !self.finished.load(Ordering::Acquire) {
                        self.host_lost.store(true, Ordering::Release);
                        crate::log!(
                            "exec pgid {}: host connection lost, sending SIGHUP",
                            self.pgid
                        );
                        self.signal(libc::SIGHUP);
                        thread::sleep(HOST_LOST_GRACE);
                        if !self.finished.load(Ordering::Acquire) {
                            crate::log!("exec pgid {}: still running, killing it", self.pgid);
                            self.signal(libc::SIGKILL);
                        }
                    }
                    return;
                }
            };
            match frame.kind {
                FrameType::Stdin => {
                    if let Some(tx) = &stdin {
                        if tx.send(Some(frame.payload)).is_err() {
                            stdin = None;
                        }
                    }
                }
                FrameType::StdinEnd => {
                    if let Some(tx) = stdin.take() {
                        let _ = tx.send(None);
                    }
                }
                FrameType::Control => match frame.parse::<Request>() {
                    Ok(Request::Signal { signal }) => self.signal(signal),
                    Ok(Request::Resize(size)) => self.resize(size),
                    Ok(other) => crate::log!("exec: ignoring request {other:?} during exec"),
                    Err(e) => crate::log!("exec: bad control frame: {e}"),
                },
                other => crate::log!("exec: ignoring unexpected {other:?} frame"),
            }
        }
    }

    fn signal(&self, signal: i32) {
        if self.finished.load(Ordering::Acquire) {
            return;
        }
        let mut target = self.pgid;
        if let Some(fd) = self.master_fd {
            // With a PTY, the foreground job of the terminal (a shell's child) gets it.
            // SAFETY: tcgetpgrp only reads the terminal's foreground group.
            let foreground = unsafe { libc::tcgetpgrp(fd) };
            if foreground > 0 {
                target = foreground;
            }
        }
        // SAFETY: kill has no memory-safety preconditions.
        let rc = unsafe { libc::kill(-target, signal) };
        if rc != 0 {
            crate::log!(
                "exec: signal {signal} to group {target}: {}",
                io::Error::last_os_error()
            );
        }
    }

    fn resize(&self, size: WindowSize) {
        if self.finished.load(Ordering::Acquire) {
            return;
        }
        if let Some(fd) = self.master_fd {
            let ws = winsize(size);
            // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
            unsafe {
                libc::ioctl(fd, libc::TIOCSWINSZ, &ws as *const Winsize);
            }
            // The kernel signals SIGWINCH only when the size changed. Signal it anyway: the
            // host re-sends the same size shortly after start so that `docker exec -it` /
            // `podman exec -t`, whose own first resize of the container's terminal can be
            // lost under emulation (docker gives up after 50 ms), resize it again; otherwise
            // the container's terminal stays 0x0.
            // SAFETY: tcgetpgrp only reads the terminal's foreground group.
            let foreground = unsafe { libc::tcgetpgrp(fd) };
            if foreground > 0 {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(-foreground, libc::SIGWINCH);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe whose written bytes nobody has read yet, like a pump that was not scheduled.
    fn pipe_with_unread_bytes() -> (File, File) {
        let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
        let (reader, mut writer) = (File::from(read_end), File::from(write_end));
        writer.write_all(b"late output").expect("write");
        (reader, writer)
    }

    #[test]
    fn unread_output_is_never_taken_for_silence() {
        let drain = Arc::new(Drain::default());
        let (mut reader, _writer) = pipe_with_unread_bytes();
        let fd = reader.as_raw_fd();
        drain.lock().open.push(fd);
        drain.lock().last_output = Instant::now()
            .checked_sub(DRAIN_IDLE * 5)
            .unwrap_or_else(Instant::now);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let waiter = thread::spawn({
            let drain = Arc::clone(&drain);
            move || {
                drain.wait_quiet();
                let _ = done_tx.send(());
            }
        });
        // well past the idle limit, the bytes are still unread: the drain keeps waiting
        assert!(done_rx.recv_timeout(DRAIN_IDLE * 2).is_err());
        let mut buf = [0u8; 64];
        let n = reader.read(&mut buf).expect("read");
        assert_eq!(&buf[..n], b"late output");
        // read, and silent from now on (the writer stays open, like a lingering child):
        // the drain ends after the idle limit
        done_rx
            .recv_timeout(DRAIN_IDLE * 10)
            .expect("drain ended once the pipe was read and silent");
        waiter.join().expect("waiter");
        assert_eq!(unread_bytes(fd), 0);
    }

    #[test]
    fn a_chunk_being_sent_is_not_silence() {
        let drain = Arc::new(Drain::default());
        let (mut reader, _writer) = pipe_with_unread_bytes();
        let mut buf = [0u8; 64];
        let _ = reader.read(&mut buf).expect("read");
        {
            let mut state = drain.lock();
            state.open.push(reader.as_raw_fd());
            state.sending = 1;
            state.last_output = Instant::now()
                .checked_sub(DRAIN_IDLE * 5)
                .unwrap_or_else(Instant::now);
        }
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        thread::spawn({
            let drain = Arc::clone(&drain);
            move || {
                drain.wait_quiet();
                let _ = done_tx.send(());
            }
        });
        assert!(done_rx.recv_timeout(DRAIN_IDLE * 2).is_err());
        drain.sent();
        done_rx
            .recv_timeout(DRAIN_IDLE * 10)
            .expect("drain ended after the send and the idle limit");
    }
}
