//! `<state>/vm.lock`: an flock held while a VM of that state dir is started or stopped (and
//! for the whole life of a batch VM), so concurrent starts give one VM and a stop never races
//! a start. The kernel drops the lock when the holder dies, so it can never go stale.

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use super::error::{Result, VmError};

pub const VM_LOCK: &str = "vm.lock";

pub type VmLock = Flock<File>;

fn open(state_dir: &Path) -> Result<File> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| VmError::io(format!("creating {}", state_dir.display()), e))?;
    let p = state_dir.join(VM_LOCK);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| VmError::io(format!("opening {}", p.display()), e))
}

/// Block until the lock is ours.
pub fn exclusive(state_dir: &Path) -> Result<VmLock> {
    let f = open(state_dir)?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| {
        VmError::io(
            format!("locking {}", state_dir.join(VM_LOCK).display()),
            e.into(),
        )
    })
}

/// The lock if nobody holds it, else None.
pub fn try_exclusive(state_dir: &Path) -> Result<Option<VmLock>> {
    let f = open(state_dir)?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(VmError::io("flock", e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_excludes_until_dropped() {
        let t = tempfile::tempdir().expect("tmp");
        let held = exclusive(t.path()).expect("lock");
        assert!(try_exclusive(t.path()).expect("try").is_none());
        drop(held);
        assert!(try_exclusive(t.path()).expect("try").is_some());
    }
}
