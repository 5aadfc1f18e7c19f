//! The guest RAM of a restored VM as a named file on a tmpfs (docs/snapshot.md, "The guest
//! RAM in a file").
//!
//! Why: a suspended VM (vm/suspend.rs) saved with its RAM inside the migration file cost 2-3 s
//! (QEMU's zero-page scan reads every page of the memfd, allocating its holes). With the RAM
//! in a named, shared file and QEMU's `x-ignore-shared`, the save writes the device state
//! only and the file itself is kept: the next restore maps it instead of loading it.
//!
//! Owns the VM's RAM dir `<tmpfs>/<hash of the state dir>/` and its two files: `guest.ram`,
//! the RAM of the running VM (removed whenever the VM ends), and `suspended.ram`, the RAM of
//! the state dir's suspended VM. The files hold guest memory: 0600 in a 0700 dir, and only
//! ever on a tmpfs (never written to a disk; gone with a host reboot).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const RUNNING: &str = "guest.ram";
const SUSPENDED: &str = "suspended.ram";

/// `VCONTAINER_RAM_FILE=0`: VMs restored from now on keep the guest RAM in a memfd (and a
/// suspended VM's save writes it); for comparisons (scripts/bench-vm.sh) and hosts whose tmpfs is small.
pub const ENV: &str = "VCONTAINER_RAM_FILE";

/// The tmpfs dir for the RAM files of `state_dir`'s VM: under `$XDG_RUNTIME_DIR` when that is
/// a tmpfs, else under /dev/shm. None: no tmpfs (the VM keeps its memfd).
fn dir_for(state_dir: &Path) -> Option<PathBuf> {
    let uid = nix::unistd::getuid().as_raw();
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute() && is_tmpfs(d))
        .map(|d| d.join("vcontainer-ram"))
        .or_else(|| {
            let shm = Path::new("/dev/shm");
            is_tmpfs(shm).then(|| shm.join(format!("vcontainer-ram-{uid}")))
        })?;
    let hash = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
    Some(base.join(hex::encode(&hash[..8])))
}

fn is_tmpfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// The RAM file of `state_dir`'s running VM, if it has one.
pub fn running(state_dir: &Path) -> Option<PathBuf> {
    dir_for(state_dir).map(|d| d.join(RUNNING))
}

/// The RAM file of `state_dir`'s suspended VM, if it could have one.
pub fn suspended(state_dir: &Path) -> Option<PathBuf> {
    dir_for(state_dir).map(|d| d.join(SUSPENDED))
}

/// A new, empty RAM file for a VM of `state_dir` with `memory_mib` of RAM (QEMU sizes it),
/// 0600 in a private dir; Err(why) when there is no tmpfs with room for all of it (a guest
/// page the tmpfs cannot hold would kill QEMU with SIGBUS), and the VM keeps its memfd.
pub fn fresh(state_dir: &Path, memory_mib: u32) -> Result<PathBuf, String> {
    if std::env::var_os(ENV).is_some_and(|v| v == "0") {
        return Err(format!("{ENV}=0 is set"));
    }
    let dir = dir_for(state_dir).ok_or("no tmpfs ($XDG_RUNTIME_DIR or /dev/shm)")?;
    let uid = nix::unistd::getuid().as_raw();
    for d in [dir.parent(), Some(dir.as_path())].into_iter().flatten() {
        super::transport::private_dir(d, uid).map_err(|e| e.to_string())?;
    }
    let file = dir.join(RUNNING);
    let _ = std::fs::remove_file(&file);
    // the field types differ between targets (u32 or u64 counts, i64 or u32 block size)
    #[allow(clippy::unnecessary_cast)]
    let room = nix::sys::statfs::statfs(&dir)
        .map(|s| s.blocks_available() as u64 * s.block_size() as u64)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let needed = u64::from(memory_mib) << 20;
    if room < needed {
        return Err(format!(
            "{} has {} MiB free, the guest has {memory_mib} MiB",
            dir.display(),
            room >> 20
        ));
    }
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
    if let Some(dir) = dir_for(state_dir) {
        let _ = std::fs::remove_file(dir.join(RUNNING));
        let _ = std::fs::remove_dir(dir);
    }
}

/// The VM of `state_dir` was suspended and its QEMU is gone: its RAM file becomes the
/// suspended VM's.
pub fn keep_suspended(state_dir: &Path) -> std::io::Result<PathBuf> {
    let (Some(from), Some(to)) = (running(state_dir), suspended(state_dir)) else {
        return Err(std::io::Error::other("no RAM dir"));
    };
    std::fs::rename(&from, &to)?;
    Ok(to)
}

/// The suspended VM's RAM was mapped by the restoring QEMU: from now on it is the running
/// VM's (a run killed later must not restore it again).
pub fn resume_suspended(state_dir: &Path) -> std::io::Result<()> {
    let (Some(from), Some(to)) = (suspended(state_dir), running(state_dir)) else {
        return Err(std::io::Error::other("no RAM dir"));
    };
    std::fs::rename(from, to)
}

/// Remove the suspended VM's RAM file of `state_dir`, if any (and the RAM dir, unless a
/// running VM's RAM is in it).
pub fn forget_suspended(state_dir: &Path) -> bool {
    let Some(dir) = dir_for(state_dir) else {
        return false;
    };
    let removed = std::fs::remove_file(dir.join(SUSPENDED)).is_ok();
    let _ = std::fs::remove_dir(dir);
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
            assert!(dir_for(t.path()).is_none());
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
        // no room for a guest of 1 PiB: the memfd stays
        let why = fresh(t.path(), u32::MAX).expect_err("no room");
        assert!(why.contains("MiB free"), "{why}");
        remove_running(t.path());
    }
}
