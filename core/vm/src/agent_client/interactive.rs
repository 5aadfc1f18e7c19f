//! Interactive exec: the user's terminal connected to a program in the guest.

use std::io::{self, IsTerminal};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use nix::sys::termios::{self, SetArg, Termios};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGWINCH};
use signal_hook::iterator::Signals;
use vcontainer_proto::{ExecRequest, ExitStatus, Request, WindowSize};

use super::exec::{run, SharedWriter};
use super::{AgentConn, ClientError};

/// The size of the terminal on stdout (or stdin), if there is one.
pub fn terminal_size() -> Option<WindowSize> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize into the struct we pass, nothing else.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws as *mut libc::winsize) };
        if rc == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
            return Some(WindowSize {
                rows: ws.ws_row,
                cols: ws.ws_col,
            });
        }
    }
    None
}

/// Run `request` on the process's own stdin/stdout/stderr, as `docker exec -i[t]` does.
///
/// With `request.tty` set and a terminal on stdin, the terminal is put in raw mode (restored
/// on return, also on error) so keys like Ctrl-C travel as bytes to the guest PTY, and
/// window size changes follow as `Resize`. SIGINT, SIGTERM, SIGHUP and SIGQUIT received by
/// this process are forwarded to the guest program. `request.stdin` decides whether stdin is
/// forwarded at all.
pub fn exec_interactive<C: AgentConn>(
    conn: C,
    mut request: ExecRequest,
) -> Result<ExitStatus, ClientError> {
    let tty = request.tty.is_some();
    if tty {
        if let Some(size) = terminal_size() {
            request.tty = Some(size);
        }
    }
    let stdin: Option<Box<dyn io::Read + Send>> = if request.stdin {
        Some(Box::new(io::stdin()))
    } else {
        None
    };
    // Raw mode only when keys are forwarded: otherwise Ctrl-C would reach nobody.
    let _raw = if tty && stdin.is_some() && io::stdin().is_terminal() {
        Some(
            RawMode::enter(io::stdin()).map_err(|source| ClientError::Local {
                context: "switching the terminal to raw mode".into(),
                source,
            })?,
        )
    } else {
        None
    };
    let relay = SignalRelay::install()?;
    let mut stdout = io::stdout();
    let mut stderr = io::stderr();
    relay.run(conn, request, stdin, &mut stdout, &mut stderr, tty)
}

/// Run `request` with its output on `stdout`/`stderr` and no stdin, relaying the signals
/// that would end this process to the guest program, as `docker run` (sig-proxy) does: the
/// program decides what Ctrl-C means. A second such signal stops waiting: the connection is
/// closed (the agent hangs up on the program) and the status is that signal, so the caller
/// still cleans up (port forwards, volumes) instead of dying mid-way.
pub fn exec_relaying_signals<C: AgentConn>(
    conn: C,
    request: ExecRequest,
    stdout: &mut dyn io::Write,
    stderr: &mut dyn io::Write,
) -> Result<ExitStatus, ClientError> {
    SignalRelay::install()?.run(conn, request, None, stdout, stderr, false)
}

/// This process's terminating signals (and SIGWINCH) caught for one exec and relayed to it.
struct SignalRelay {
    signals: Signals,
    restore_default: Arc<AtomicBool>,
}

impl SignalRelay {
    fn install() -> Result<Self, ClientError> {
        let signal_error = |source| ClientError::Local {
            context: "installing signal handlers".into(),
            source,
        };
        let restore_default = default_after_sessions().map_err(signal_error)?;
        restore_default.store(false, Ordering::SeqCst);
        match Signals::new([SIGWINCH, SIGINT, SIGTERM, SIGHUP, SIGQUIT]) {
            Ok(signals) => Ok(Self {
                signals,
                restore_default,
            }),
            Err(e) => {
                restore_default.store(true, Ordering::SeqCst);
                Err(signal_error(e))
            }
        }
    }

    fn run<C: AgentConn>(
        self,
        conn: C,
        request: ExecRequest,
        stdin: Option<Box<dyn io::Read + Send>>,
        stdout: &mut dyn io::Write,
        stderr: &mut dyn io::Write,
        tty: bool,
    ) -> Result<ExitStatus, ClientError> {
        let Self {
            mut signals,
            restore_default,
        } = self;
        let handle = signals.handle();
        let forced = Arc::new(AtomicBool::new(false));
        let forced_by_relay = Arc::clone(&forced);
        let result = run(conn, request, stdin, stdout, stderr, |writer| {
            if tty {
                let settle = writer.clone();
                let _ = thread::Builder::new()
                    .name("agent-resize".into())
                    .spawn(move || settle_window_size(&settle));
            }
            let _ = thread::Builder::new()
                .name("agent-signals".into())
                .spawn(move || relay_signals(&mut signals, &writer, tty, &forced_by_relay));
        });
        handle.close();
        restore_default.store(true, Ordering::SeqCst);
        if forced.load(Ordering::SeqCst) {
            return Ok(ExitStatus::Signal(SIGINT));
        }
        result
    }
}

/// Signals that end the process by default, and are forwarded while a session runs.
const TERMINATING: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];

/// signal-hook cannot give a signal back its default action once a handler was installed,
/// so a conditional "act as default" handler is registered once per process: while a
/// session runs its flag is off and the signals are only forwarded; afterwards Ctrl-C or
/// SIGTERM end this process again as usual.
pub(crate) fn default_after_sessions() -> io::Result<Arc<AtomicBool>> {
    static FLAG: Mutex<Option<Arc<AtomicBool>>> = Mutex::new(None);
    let mut slot = FLAG.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(flag) = &*slot {
        return Ok(Arc::clone(flag));
    }
    let flag = Arc::new(AtomicBool::new(true));
    for signal in TERMINATING {
        signal_hook::flag::register_conditional_default(signal, Arc::clone(&flag))?;
    }
    *slot = Some(Arc::clone(&flag));
    Ok(flag)
}

/// When after start the size is sent again (the agent then signals SIGWINCH in the guest).
/// Up to 30 s: under TCG a container can take that long to start, and a resize before it
/// runs is lost again; an unchanged size costs the container nothing (no SIGWINCH there).
const SETTLE_RESIZES: [Duration; 6] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(30),
];

/// A runtime CLI in the guest (`docker exec -it`, `podman exec -t`) sizes the container's
/// terminal once at start, and that first resize is lost when the container side is not
/// ready yet, which under TCG is common: the terminal then stays 0x0 until the user resizes
/// the window. Sending the size again a few times early on makes the CLI resize it again.
/// Ends at the first failed write (the exec is over).
fn settle_window_size(writer: &SharedWriter) {
    let mut waited = Duration::ZERO;
    for at in SETTLE_RESIZES {
        thread::sleep(at.saturating_sub(waited));
        waited = at;
        let Some(size) = terminal_size() else {
            return;
        };
        if writer.request(&Request::Resize(size)).is_err() {
            return;
        }
    }
}

fn relay_signals(signals: &mut Signals, writer: &SharedWriter, tty: bool, forced: &AtomicBool) {
    let mut terminating = 0;
    for signal in signals.forever() {
        let request = if signal == SIGWINCH {
            match (tty, terminal_size()) {
                (true, Some(size)) => Request::Resize(size),
                _ => continue,
            }
        } else {
            terminating += 1;
            // Without a terminal a second Ctrl-C means "stop waiting" (the first went to
            // the program, which may ignore it, as a container's PID 1 does by default).
            // With one, keys are the program's: the signals only come from `kill`.
            if !tty && terminating > 1 {
                forced.store(true, Ordering::SeqCst);
                writer.shutdown();
                return;
            }
            Request::Signal { signal }
        };
        if writer.request(&request).is_err() {
            return;
        }
    }
}

/// Raw terminal mode on a terminal for as long as this lives.
///
/// Both switches use TCSADRAIN, not TCSAFLUSH: keys typed while the VM boots sit in the
/// terminal's input queue, and docker/podman keep them for the container; flushing would
/// silently drop them.
struct RawMode<Fd: AsFd> {
    fd: Fd,
    saved: Termios,
}

impl<Fd: AsFd> RawMode<Fd> {
    fn enter(fd: Fd) -> io::Result<Self> {
        let saved = termios::tcgetattr(fd.as_fd())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd.as_fd(), SetArg::TCSADRAIN, &raw)?;
        Ok(Self { fd, saved })
    }
}

impl<Fd: AsFd> Drop for RawMode<Fd> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd.as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn raw_mode_keeps_keys_typed_before_it_and_restores_the_terminal() {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let mut master = std::fs::File::from(pty.master);
        let before = termios::tcgetattr(pty.slave.as_fd()).expect("tcgetattr");
        // typed while the VM was still booting: no newline, so canonical mode holds it back
        master.write_all(b"ls").expect("type ahead");
        {
            let raw = RawMode::enter(pty.slave.as_fd()).expect("raw");
            let now = termios::tcgetattr(raw.fd.as_fd()).expect("tcgetattr");
            assert!(!now.local_flags.contains(termios::LocalFlags::ICANON));
            // poll first: with the keys flushed, a read would block forever. The pty hands
            // typed keys to its line discipline from a kernel worker, so give a loaded
            // machine time; the bound only ends a hang.
            let mut fds = [nix::poll::PollFd::new(
                raw.fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(30_000u16));
            assert_eq!(ready.expect("poll"), 1, "typed-ahead keys were dropped");
            let mut slave = std::fs::File::from(pty.slave.try_clone().expect("dup"));
            let mut got = [0u8; 2];
            slave
                .read_exact(&mut got)
                .expect("typed-ahead keys are readable");
            assert_eq!(&got, b"ls");
        }
        let after = termios::tcgetattr(pty.slave.as_fd()).expect("tcgetattr");
        assert_eq!(after.local_flags, before.local_flags);
        assert_eq!(after.input_flags, before.input_flags);
    }
}
