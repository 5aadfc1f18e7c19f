//! The lock that serialises read-modify-write of a state dir's record files
//! (`live-volumes.json`, `port-forwards.json`, `shares.json`).
//!
//! Why: each command of a memres VM is its own process, and each of them loads a record file,
//! changes it and writes it back (atomically, by rename). Two `run -d -v` at once both read
//! the old list and the second write dropped the first's record (then its volume never came
//! back). The rename keeps readers safe; this flock on a sidecar `<file>.lock` (the record
//! file itself is replaced, so it cannot carry the lock) keeps writers in turn. The kernel
//! drops it when the holder dies, so it never goes stale.

use std::fs::{File, OpenOptions};
use std::path::Path;

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};

/// Held while a record file is read, changed and written back.
pub struct RecordLock(#[allow(dead_code)] Flock<File>);

/// Blocks until the lock of `state/<file>` is ours.
pub fn lock(state: &Path, file: &str) -> anyhow::Result<RecordLock> {
    let path = state.join(format!("{file}.lock"));
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let held = Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from(e))
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(RecordLock(held))
}

/// The entries of the record file `state/<file>`: none when it is missing or unreadable (a
/// record file is rewritten whole by rename, so a reader never sees half of one).
pub fn load<T: serde::de::DeserializeOwned>(state: &Path, file: &str) -> Vec<T> {
    std::fs::read(state.join(file))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn the_lock_excludes_other_holders_until_dropped() {
        let t = tempfile::tempdir().expect("tmp");
        let held = lock(t.path(), "x.json").expect("lock");
        let got = Arc::new(AtomicBool::new(false));
        let (dir, flag) = (t.path().to_path_buf(), Arc::clone(&got));
        let waiter = std::thread::spawn(move || {
            let _l = lock(&dir, "x.json").expect("lock");
            flag.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(!got.load(Ordering::SeqCst), "a second holder got in");
        drop(held);
        waiter.join().expect("waiter");
        assert!(got.load(Ordering::SeqCst));
    }
}
