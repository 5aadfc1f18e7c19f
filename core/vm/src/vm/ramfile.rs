//! The guest RAM of a restored VM as a named file on a tmpfs (docs/snapshot.md, "The guest
//! RAM in a file").
//!
//! Why: a suspended VM (vm/suspend.rs) saved with its RAM inside the migration file cost 2-3 s
//! (QEMU's zero-page scan reads every page of the memfd, allocating its holes). With the RAM
//! in a named, shared file and QEMU's `x-ignore-shared`, the save writes the device state
//! only and the file itself is kept: the next restore maps it instead of loading it.
//!
//! Owns the VM's RAM dir `<tmpfs>/<hash of the state dir>/` and its files: `guest.ram`,
//! the RAM of the running VM (removed whenever the VM ends), `suspended.ram`, the RAM of
//! the state dir's suspended VM, and `state`, a symlink to the state dir: a state dir removed
//! by other means than `clean` (`rm -r`, a test's temporary home) leaves its RAM dir behind,
//! and the next VM's [`fresh`] removes the RAM dirs whose state dir is gone. The files hold
//! guest memory: 0600 in a 0700 dir, and only ever on a tmpfs (never written to a disk; gone
//! with a host reboot).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const RUNNING: &str = "guest.ram";
const SUSPENDED: &str = "suspended.ram";
const STATE_LINK: &str = "state";

/// `VCONTAINER_RAM_FILE=0`: VMs restored from now on keep the guest RAM in a memfd (and a
/// suspended VM's save writes it); for comparisons (scripts/bench-vm.sh) and hosts whose tmpfs is small.
pub const ENV: &str = "VCONTAINER_RAM_FILE";

/// The tmpfs dirs that may hold the RAM files of `state_dir`'s VM, in the order a new one is
/// placed: under `$XDG_RUNTIME_DIR` when that is a tmpfs, then under /dev/shm (systemd sizes
/// the first at 10 % of the host's RAM, often less than a guest: the second then takes it).
/// Empty: no tmpfs (the VM keeps its memfd).
fn dirs_for(state_dir: &Path) -> Vec<PathBuf> {
    let uid = nix::unistd::getuid().as_raw();
    let hash = hex::encode(&Sha256::digest(state_dir.as_os_str().as_encoded_bytes())[..8]);
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
        .map(|d| d.join("vcontainer-ram"));
    let shm = Some(Path::new("/dev/shm").join(format!("vcontainer-ram-{uid}")));
    [runtime, shm]
        .into_iter()
        .flatten()
        .filter(|base| base.parent().is_some_and(is_tmpfs))
        .map(|base| base.join(&hash))
        .collect()
}

fn is_tmpfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// `name` of `state_dir`'s VM, in whichever of its dirs it is.
fn find(state_dir: &Path, name: &str) -> Option<PathBuf> {
    dirs_for(state_dir)
        .into_iter()
        .map(|d| d.join(name))
        .find(|f| f.exists())
}

/// The RAM file of `state_dir`'s running VM, if it has one.
pub fn running(state_dir: &Path) -> Option<PathBuf> {
    find(state_dir, RUNNING)
}

/// The RAM file of `state_dir`'s suspended VM, if there is one.
pub fn suspended(state_dir: &Path) -> Option<PathBuf> {
    find(state_dir, SUSPENDED)
}

/// A new, empty RAM file for a VM of `state_dir` with `memory_mib` of RAM (QEMU sizes it),
/// 0600 in a private dir on the first tmpfs with room for all of it (a guest page the tmpfs
/// cannot hold would kill QEMU with SIGBUS); Err(why) when there is none, and the VM keeps
/// its memfd.
pub fn fresh(state_dir: &Path, memory_mib: u32) -> Result<PathBuf, String> {
    if std::env::var_os(ENV).is_some_and(|v| v == "0") {
        return Err(format!("{ENV}=0 is set"));
    }
    // what an earlier run killed on the way left, and the RAM of state dirs removed since
    remove_running(state_dir);
    sweep(state_dir);
    let mut why = Vec::new();
    for dir in dirs_for(state_dir) {
        match fresh_in(&dir, state_dir, memory_mib) {
            Ok(file) => return Ok(file),
            Err(e) => why.push(e),
        }
    }
    if why.is_empty() {
        why.push("no tmpfs ($XDG_RUNTIME_DIR or /dev/shm)".into());
    }
    Err(why.join("; "))
}

fn fresh_in(dir: &Path, state_dir: &Path, memory_mib: u32) -> Result<PathBuf, String> {
    let uid = nix::unistd::getuid().as_raw();
    for d in [dir.parent(), Some(dir)].into_iter().flatten() {
        super::transport::private_dir(d, uid).map_err(|e| e.to_string())?;
    }
    let link = dir.join(STATE_LINK);
    if std::fs::read_link(&link).ok().as_deref() != Some(state_dir) {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(state_dir, &link)
            .map_err(|e| format!("{}: {e}", link.display()))?;
    }
    // the field types differ between targets (u32 or u64 counts, i64 or u32 block size)
    #[allow(clippy::unnecessary_cast)]
    let room = nix::sys::statfs::statfs(dir)
        .map(|s| s.blocks_available() as u64 * s.block_size() as u64)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let needed = u64::from(memory_mib) << 20;
    if room < needed {
        // (its state link was made above)
        remove_if_unused(dir);
        return Err(format!(
            "{} has {} MiB free, the guest has {memory_mib} MiB",
            dir.display(),
            room >> 20
        ));
    }
    let file = dir.join(RUNNING);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .map_err(|e| format!("creating {}: {e}", file.display()))?;
    Ok(file)
}

/// The VM of `state_dir` ended without being suspended: its RAM goes (and its RAM dir, unless
/// a suspended VM's RAM is in it).
pub fn remove_running(state_dir: &Path) {
    for dir in dirs_for(state_dir) {
        let _ = std::fs::remove_file(dir.join(RUNNING));
        remove_if_unused(&dir);
    }
}

/// Remove the RAM dir `dir` when no RAM file is left in it.
fn remove_if_unused(dir: &Path) {
    if !dir.join(RUNNING).exists() && !dir.join(SUSPENDED).exists() {
        let _ = std::fs::remove_file(dir.join(STATE_LINK));
        let _ = std::fs::remove_dir(dir);
    }
}

/// Remove the RAM dirs (beside `state_dir`'s) whose state dir no longer exists: its suspended
/// VM can never be restored, and a running VM of a removed state dir keeps its mapping.
fn sweep(state_dir: &Path) {
    for base in dirs_for(state_dir).iter().filter_map(|d| d.parent()) {
        let Ok(entries) = std::fs::read_dir(base) else {
            continue;
        };
        for dir in entries.flatten().map(|e| e.path()) {
            let Ok(owner) = std::fs::read_link(dir.join(STATE_LINK)) else {
                continue;
            };
            if !owner.exists() {
                tracing::debug!("removing {}: {} is gone", dir.display(), owner.display());
                for name in [RUNNING, SUSPENDED, STATE_LINK] {
                    let _ = std::fs::remove_file(dir.join(name));
                }
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
}

/// Rename `state_dir`'s RAM file `from` to `to`, in the dir it is in.
fn rename(state_dir: &Path, from: &str, to: &str) -> std::io::Result<PathBuf> {
    let file = find(state_dir, from)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("no {from}")))?;
    let renamed = file.with_file_name(to);
    std::fs::rename(&file, &renamed)?;
    Ok(renamed)
}

/// The VM of `state_dir` was suspended and its QEMU is gone: its RAM file becomes the
/// suspended VM's.
pub fn keep_suspended(state_dir: &Path) -> std::io::Result<PathBuf> {
    rename(state_dir, RUNNING, SUSPENDED)
}

/// The suspended VM's RAM was mapped by the restoring QEMU: from now on it is the running
/// VM's (a run killed later must not restore it again).
pub fn resume_suspended(state_dir: &Path) -> std::io::Result<()> {
    rename(state_dir, SUSPENDED, RUNNING).map(drop)
}

/// Remove the suspended VM's RAM file of `state_dir`, if any (and the RAM dir, unless a
/// running VM's RAM is in it).
pub fn forget_suspended(state_dir: &Path) -> bool {
    let mut removed = false;
    for dir in dirs_for(state_dir) {
        removed |= std::fs::remove_file(dir.join(SUSPENDED)).is_ok();
        remove_if_unused(&dir);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_ram_file_is_private_and_on_a_tmpfs() {
        let t = tempfile::tempdir().expect("tmp");
        let Ok(file) = fresh(t.path(), 1) else {
            // a host without any tmpfs: nothing to check
            assert!(dirs_for(t.path()).is_empty());
            return;
        };
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        let dir = file.parent().expect("dir");
        assert_eq!(mode(dir), 0o700);
        assert!(is_tmpfs(dir));
        // suspended, resumed, ended: no file left behind
        let kept = keep_suspended(t.path()).expect("keep");
        assert!(kept.exists() && !file.exists());
        resume_suspended(t.path()).expect("resume");
        assert!(file.exists() && !kept.exists());
        remove_running(t.path());
        assert!(!file.exists() && !dir.exists());
        // a state dir removed by hand: the next fresh file of another one sweeps its RAM dir
        let gone = tempfile::tempdir().expect("tmp");
        fresh(gone.path(), 1).expect("fresh");
        keep_suspended(gone.path()).expect("keep");
        let gone_dir = suspended(gone.path()).expect("kept").with_file_name("");
        let gone_path = gone.path().to_path_buf();
        drop(gone);
        assert!(gone_dir.exists());
        fresh(t.path(), 1).expect("fresh");
        assert!(!gone_dir.exists() && suspended(&gone_path).is_none());
        remove_running(t.path());
        // no room for a guest of 1 PiB: the memfd stays
        let why = fresh(t.path(), u32::MAX).expect_err("no room");
        assert!(why.contains("MiB free"), "{why}");
        remove_running(t.path());
    }
}
