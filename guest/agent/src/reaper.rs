//! Waiting for children without stealing each other's exit statuses.
//!
//! As PID 1 the agent inherits every orphan in the guest and must reap them all, yet each
//! exec must still get its own program's status. A plain `waitpid(-1)` reaper races with
//! per-child waits (and with std's internal wait after a failed exec), so the global reaper
//! first *peeks* at an exited child (`waitid(WNOWAIT)`), then takes the spawn lock — which
//! every spawn holds until its pid is registered — and only then reaps that pid and hands
//! the status to whoever registered it. Orphans are reaped and dropped.
//!
//! Outside PID 1 (unit tests inside a larger test process) a global reaper would steal the
//! children of unrelated code, so each child gets its own waiting thread instead.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use vcontainer_proto::ExitStatus;

/// Hands out exit statuses of spawned children.
#[derive(Clone)]
pub struct Reaper {
    global: Option<Arc<Global>>,
}

#[derive(Default)]
struct Global {
    waiters: Mutex<HashMap<i32, Sender<ExitStatus>>>,
    spawned: Condvar,
}

impl Reaper {
    /// One thread per child, waiting for that pid only (not PID 1, e.g. tests).
    pub fn per_child() -> Self {
        Self { global: None }
    }

    /// A single reaper thread for the whole system (PID 1).
    pub fn global() -> Self {
        let global = Arc::new(Global::default());
        let worker = Arc::clone(&global);
        thread::Builder::new()
            .name("reaper".into())
            .spawn(move || worker.run())
            .map(|_| ())
            .unwrap_or_else(|e| crate::log!("cannot start the reaper thread: {e}"));
        Self {
            global: Some(global),
        }
    }

    /// Spawn `command` and return the child with a receiver that gets its exit status once.
    pub fn spawn(&self, command: &mut Command) -> io::Result<(Child, Receiver<ExitStatus>)> {
        let (tx, rx) = channel();
        match &self.global {
            Some(global) => {
                let mut waiters = global
                    .waiters
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let child = command.spawn()?;
                waiters.insert(child_pid(&child), tx);
                global.spawned.notify_all();
                Ok((child, rx))
            }
            None => {
                let child = command.spawn()?;
                let pid = Pid::from_raw(child_pid(&child));
                thread::Builder::new()
                    .name(format!("wait-{pid}"))
                    .spawn(move || {
                        if let Some(status) = wait_for(pid) {
                            let _ = tx.send(status);
                        }
                    })?;
                Ok((child, rx))
            }
        }
    }

    /// Spawn, wait, and return the status (for short helper programs like e2fsck or ip).
    pub fn run(&self, command: &mut Command) -> io::Result<ExitStatus> {
        let (_child, rx) = self.spawn(command)?;
        rx.recv()
            .map_err(|_| io::Error::other("child status lost (reaper stopped)"))
    }
}

fn child_pid(child: &Child) -> i32 {
    i32::try_from(child.id()).unwrap_or(i32::MAX)
}

/// Translate a wait status into the protocol's value; `None` for stop/continue events.
pub fn exit_status(status: WaitStatus) -> Option<ExitStatus> {
    match status {
        WaitStatus::Exited(_, code) => Some(ExitStatus::Code(code)),
        WaitStatus::Signaled(_, sig, _) => Some(ExitStatus::Signal(sig as i32)),
        _ => None,
    }
}

fn wait_for(pid: Pid) -> Option<ExitStatus> {
    loop {
        match waitpid(pid, None) {
            Ok(status) => {
                if let Some(exit) = exit_status(status) {
                    return Some(exit);
                }
            }
            Err(Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
}

impl Global {
    fn run(&self) {
        loop {
            let peeked = waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT);
            let pid = match peeked {
                Ok(status) => match status.pid() {
                    Some(pid) => pid,
                    None => continue,
                },
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    // No children at all: sleep until a spawn registers one.
                    let waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
                    let _ = self
                        .spawned
                        .wait_timeout(waiters, Duration::from_millis(500));
                    continue;
                }
            };
            // Any spawn in progress finishes registering (or reaps its own failed child)
            // before we get the lock.
            let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(status) => {
                    if let Some(exit) = exit_status(status) {
                        if let Some(tx) = waiters.remove(&pid.as_raw()) {
                            let _ = tx.send(exit);
                        }
                    }
                }
                Err(_) => {
                    // Already reaped by std after a failed exec: nothing to do.
                }
            }
        }
    }
}
