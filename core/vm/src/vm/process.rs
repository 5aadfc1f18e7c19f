//! Child processes (QEMU, vhost-device-vsock, the supervisor) and their identity.
//!
//! A pid alone is never trusted: pids are recycled, so a stale vm.json could point at an
//! unrelated process. A process is identified by (pid, start time in clock ticks since boot,
//! from /proc/<pid>/stat field 22), which no other process can share.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// A process identified beyond its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: i32,
    pub start_time: u64,
}

/// (state char, start time) from /proc/<pid>/stat.
fn stat(pid: i32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&s)
}

/// The comm field may hold spaces and parentheses, so fields are counted after the last ')'.
fn parse_stat(s: &str) -> Option<(char, u64)> {
    let rest = &s[s.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // after ')' come fields 3.. ; starttime is field 22, i.e. the 20th here
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

impl ProcId {
    /// The identity of a live process.
    pub fn of(pid: i32) -> Option<ProcId> {
        let (_, start_time) = stat(pid)?;
        Some(ProcId { pid, start_time })
    }

    /// True while this very process exists and has not exited (zombies count as gone).
    pub fn is_alive(&self) -> bool {
        matches!(stat(self.pid), Some((state, start)) if start == self.start_time && state != 'Z' && state != 'X')
    }

    /// Signal it, but only if it is still the same process.
    pub fn signal(&self, sig: Signal) -> bool {
        self.is_alive() && nix::sys::signal::kill(Pid::from_raw(self.pid), sig).is_ok()
    }

    /// Wait until it is gone, polling (it may not be our child, so waitpid is not available).
    pub fn wait_gone(&self, timeout: Duration) -> bool {
        poll_until(timeout, || !self.is_alive())
    }
}

/// Make `cmd`'s child die with `sig` when the thread that spawned it dies, so a killed CLI or
/// supervisor never leaves QEMU running. Note: the kernel ties this to the spawning *thread*,
/// so spawn from a thread that lives as long as the VM should.
pub fn die_with_parent(cmd: &mut Command, sig: Signal) {
    let parent = nix::unistd::getpid();
    // SAFETY: only async-signal-safe calls (prctl, getppid, kill) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // the parent may have died before prctl took effect
            if libc::getppid() != parent.as_raw() {
                libc::kill(libc::getpid(), sig as libc::c_int);
            }
            Ok(())
        });
    }
}

/// Keep an inherited fd open in the child at the same number (std opens everything
/// close-on-exec; this clears the flag for `fd` only, after fork).
pub fn pass_fd(cmd: &mut Command, fd: i32) {
    // SAFETY: fcntl is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A process we stop: our own child (reaped with waitpid) or one found through vm.json.
#[derive(Debug)]
pub enum Proc {
    Child(Child),
    Foreign(ProcId),
}

impl Proc {
    pub fn pid(&self) -> i32 {
        match self {
            Proc::Child(c) => c.id() as i32,
            Proc::Foreign(p) => p.pid,
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self {
            Proc::Child(c) => matches!(c.try_wait(), Ok(None)),
            Proc::Foreign(p) => p.is_alive(),
        }
    }

    /// True when it is gone within `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        match self {
            Proc::Child(c) => wait_child(c, timeout).is_some(),
            Proc::Foreign(p) => p.wait_gone(timeout),
        }
    }

    pub fn signal(&mut self, sig: Signal) {
        if self.is_running() {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.pid()), sig);
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; waits until it is gone.
    pub fn terminate(&mut self, grace: Duration) {
        self.signal(Signal::SIGTERM);
        if !self.wait(grace) {
            self.signal(Signal::SIGKILL);
            self.wait(Duration::from_secs(5));
        }
    }
}

/// Mark every fd >= 3 close-on-exec in the child, so nothing the caller (a shell, a test
/// harness holding pipes) leaked to us without CLOEXEC reaches a long-lived process. Register
/// it before `pass_fd`, which then re-opens the one fd meant to be inherited.
pub fn close_other_fds(cmd: &mut Command) {
    // SAFETY: close_range is a plain syscall, async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            // CLOSE_RANGE_CLOEXEC = 1 << 2 (Linux 5.11); older kernels: leave fds as they are
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 1u32 << 2);
            Ok(())
        });
    }
}

/// The names (`comm`) of the threads of `pid`; empty when it is gone.
pub fn thread_names(pid: i32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim_end().to_string())
        .collect()
}

/// Wait for a child of ours with a deadline.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let mut status = None;
    poll_until(timeout, || match child.try_wait() {
        Ok(Some(st)) => {
            status = Some(st);
            true
        }
        Ok(None) => false,
        Err(_) => true,
    });
    status
}

/// Poll `done` until it holds (true) or `timeout` passed (false). The pause between polls
/// starts at 1 ms and doubles up to 50 ms: a process asked to quit is usually gone within a
/// few ms, and every VM stop and suspend waits for QEMU and its helpers one after the other
/// (a fixed 50 ms poll cost ~0.1 s of each 0.27 s suspend).
pub fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if done() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// SIGKILL and reap a child (no-op when it already exited).
pub fn kill_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// The last `n` lines of a (console) log, read from its end so a huge log costs nothing.
pub fn tail_lines(path: &Path, n: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let Ok(mut f) = std::fs::File::open(path) else {
        return format!("  (no console log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(MAX)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return "  (console log is empty)".into();
    }
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `<exe dir>/../libexec`: the helpers an SDK bundles (QEMU, vhost-device-vsock, virtiofsd,
/// mkfs.ext4), found relative to this binary so a moved SDK still works.
fn libexec_dir() -> Option<std::path::PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("../libexec")))
}

/// Find a program: first in [`libexec_dir`], then on PATH (plus the sbin dirs a user PATH
/// may lack).
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    libexec_dir()
        .into_iter()
        .chain(std::env::split_paths(&path))
        .chain(["/usr/local/bin", "/usr/bin", "/usr/sbin", "/sbin"].map(Into::into))
        .map(|d| d.join(program))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Which copy [`which`] found, for `doctor`: the one bundled beside this binary (an SDK's
/// libexec/) or the host's.
pub fn origin(found: &std::path::Path) -> &'static str {
    match libexec_dir() {
        Some(dir) if found.parent() == Some(dir.as_path()) => "bundled",
        _ => "host",
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn poll_until_polls_often_at_first_and_gives_up_at_the_deadline() {
        let start = Instant::now();
        let mut polls = 0;
        assert!(!poll_until(Duration::from_millis(120), || {
            polls += 1;
            false
        }));
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(120) && waited < Duration::from_secs(1));
        // pauses of 1, 2, 4, 8, 16, 32, 50 ms: a fixed 50 ms poll would ask 3 times
        assert!(polls >= 5, "{polls} polls in {waited:?}");
        assert!(poll_until(Duration::from_secs(1), || true));
    }
    use super::*;

    #[test]
    fn a_program_beside_this_binary_is_bundled_and_one_elsewhere_is_the_hosts() {
        let dir = libexec_dir().expect("current_exe");
        assert_eq!(origin(&dir.join("qemu-system-x86_64")), "bundled");
        assert_eq!(
            origin(std::path::Path::new("/usr/bin/qemu-system-x86_64")),
            "host"
        );
    }

    #[test]
    fn stat_parsing_survives_odd_comm() {
        let line =
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn identity_detects_exit_and_recycling() {
        let me = ProcId::of(std::process::id() as i32).expect("self");
        assert!(me.is_alive());
        let fake = ProcId {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(
            !fake.is_alive(),
            "same pid, other start time: another process"
        );
        let mut child = Command::new("true").spawn().expect("spawn");
        let id = ProcId::of(child.id() as i32);
        child.wait().expect("wait");
        if let Some(id) = id {
            assert!(!id.is_alive());
            assert!(!id.signal(Signal::SIGKILL));
        }
    }

    #[test]
    fn child_dies_with_its_parent_thread() {
        // spawn `sleep` from a short-lived thread: when the thread ends, sleep gets SIGKILL
        let t = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            die_with_parent(&mut cmd, Signal::SIGKILL);
            cmd.spawn().expect("spawn")
        });
        let mut child = t.join().expect("thread");
        let st = wait_child(&mut child, Duration::from_secs(10)).expect("killed");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn thread_names_of_a_live_process_and_of_none() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        // The new thread names itself when it starts running, not at spawn: wait for it
        // to run before reading /proc, or the name may not be there yet.
        let t = std::thread::Builder::new()
            .name("probe_thread".into())
            .spawn(move || {
                let _ = started_tx.send(());
                rx.recv()
            })
            .expect("thread");
        started_rx.recv().expect("thread started");
        let names = thread_names(std::process::id() as i32);
        assert!(names.iter().any(|n| n == "probe_thread"), "{names:?}");
        drop(tx);
        let _ = t.join();
        assert!(thread_names(i32::MAX).is_empty());
    }

    #[test]
    fn tail_of_a_log() {
        let t = tempfile::tempdir().expect("tmp");
        let p = t.path().join("console.log");
        std::fs::write(&p, "a\nb\r\n\nc\nd\n").expect("w");
        assert_eq!(tail_lines(&p, 2), "  | c\n  | d");
        assert!(tail_lines(&t.path().join("none"), 2).contains("no console log"));
    }
}
