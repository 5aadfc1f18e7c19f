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
    read_frame, ErrorKind, ExecRequest, ExitStatus, FrameType, ProtoError, Request, Response,
    WindowSize,
};

use crate::resolve::{resolve, DEFAULT_PATH};
use crate::sink::FrameSink;
use crate::Agent;

/// After the program exits, output still in flight is forwarded until the pipes close or
/// stay silent this long (a background grandchild may hold them open forever).
const DRAIN_IDLE: Duration = Duration::from_millis(1000);
const READ_CHUNK: usize = 64 * 1024;

pub(crate) fn run(
    agent: &Agent,
    request: ExecRequest,
    reader: Box<dyn Read + Send>,
    sink: &FrameSink,
) -> Result<(), ProtoError> {
    if request.argv.is_empty() {
        return sink.finish(&Response::error(ErrorKind::BadRequest, "exec: empty argv"));
    }
    let env = environment(&request);
    let cwd = request.cwd.clone().unwrap_or_else(|| "/".to_owned());
    if !Path::new(&cwd).is_dir() {
        return sink.finish(&Response::error(
            ErrorKind::NotFound,
            format!("exec: working directory {cwd} does not exist in the guest"),
        ));
    }
    let search_path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let program = match resolve(&request.argv[0], search_path, Path::new(&cwd)) {
        Ok(program) => program,
        Err(not_runnable) => {
            return cannot_run(sink, not_runnable.code, &not_runnable.message);
        }
    };

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
    };
    let mut io = match io {
        Ok(io) => io,
        Err(e) => {
            return sink.finish(&Response::error(
                ErrorKind::Io,
                format!("exec: cannot set up stdio: {e}"),
            ))
        }
    };

    let (mut child, exit_rx) = match agent.reaper.spawn(&mut command) {
        Ok(spawned) => spawned,
        Err(e) => {
            let code = if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return cannot_run(sink, code, &format!("{}: {e}", request.argv[0]));
        }
    };
    // Close our copies of the child's ends (the PTY slave above all: the master only sees
    // EOF once every slave fd is gone).
    drop(command);
    let pid = child.id();
    let pgid = i32::try_from(pid).unwrap_or(i32::MAX);
    crate::debug_log!("exec pid {pid}: {:?}", request.argv);
    sink.respond(&Response::Started { pid })?;

    let drain = Arc::new(Drain::default());
    let mut stdin_target: Option<Box<dyn Write + Send>> = None;
    match &mut io {
        StdIo::Pipes => {
            if let Some(stdout) = child.stdout.take() {
                drain.pump(Box::new(stdout), FrameType::Stdout, sink.clone());
            }
            if let Some(stderr) = child.stderr.take() {
                drain.pump(Box::new(stderr), FrameType::Stderr, sink.clone());
            }
            if let Some(stdin) = child.stdin.take() {
                stdin_target = Some(Box::new(stdin));
            }
        }
        StdIo::Pty { master } => {
            let output = File::from(master.try_clone().map_err(ProtoError::Io)?);
            drain.pump(Box::new(output), FrameType::Stdout, sink.clone());
            sink.frame(FrameType::StderrEnd, &[])?;
            if request.stdin {
                stdin_target = Some(Box::new(File::from(
                    master.try_clone().map_err(ProtoError::Io)?,
                )));
            }
        }
    }
    drop(child);

    let finished = Arc::new(AtomicBool::new(false));
    let master_fd = match &io {
        StdIo::Pty { master } => Some(master.as_raw_fd()),
        StdIo::Pipes => None,
    };
    let stdin_tx = stdin_target.map(spawn_stdin_writer);
    let control = Control {
        pgid,
        master_fd,
        finished: Arc::clone(&finished),
    };
    thread::Builder::new()
        .name(format!("exec-{pid}-in"))
        .spawn(move || control.relay(reader, stdin_tx))
        .map_err(ProtoError::Io)?;

    let status = exit_rx.recv().unwrap_or(ExitStatus::Code(255));
    finished.store(true, Ordering::Release);
    drain.wait_quiet();
    crate::debug_log!("exec pid {pid}: exited {status:?}");
    // `io` (the PTY master) lives until here so Resize can reach it while the program runs.
    drop(io);
    sink.finish(&Response::Exited { status })
}

/// The program could not be started: a shell-like message on stderr and status 126/127.
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
    open: usize,
    last_output: Instant,
}

impl Default for DrainState {
    fn default() -> Self {
        Self {
            open: 0,
            last_output: Instant::now(),
        }
    }
}

impl Drain {
    fn pump(self: &Arc<Self>, mut source: Box<dyn Read + Send>, kind: FrameType, sink: FrameSink) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open += 1;
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
                            drain.touch();
                            if sink.data(kind, &buf[..n]).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // EIO on a PTY master means every slave fd is closed: EOF.
                        Err(_) => break,
                    }
                }
                let _ = sink.frame(end, &[]);
                drain.closed();
            }
        });
        if spawned.is_err() {
            self.closed();
        }
    }

    fn touch(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.last_output = Instant::now();
    }

    fn closed(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.open = state.open.saturating_sub(1);
        self.changed.notify_all();
    }

    /// Wait until every pump hit EOF, or none produced output for [`DRAIN_IDLE`] since the
    /// program exited.
    fn wait_quiet(&self) {
        let exited_at = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while state.open > 0 {
            let idle = state.last_output.max(exited_at).elapsed();
            if idle >= DRAIN_IDLE {
                break;
            }
            state = self
                .changed
                .wait_timeout(state, DRAIN_IDLE - idle)
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
}

impl Control {
    fn relay(self, mut reader: Box<dyn Read + Send>, mut stdin: Option<SyncSender<StdinChunk>>) {
        loop {
            let frame = match read_frame(&mut reader) {
                Ok(Some(frame)) => frame,
                Ok(None) | Err(_) => {
                    // The host went away while the program runs: hang up on it, as a closed
                    // terminal would.
                    if !self.finished.load(Ordering::Acquire) {
                        crate::log!(
                            "exec pgid {}: host connection lost, sending SIGHUP",
                            self.pgid
                        );
                        self.signal(libc::SIGHUP);
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
