//! The persistent state disk: checked on every boot, mounted at the runtime's storage path,
//! and cleanly unmounted on shutdown (the field corruption of the shell tools came from
//! skipping both).

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use vcontainer_proto::ExitStatus;

use super::mounts::{mount_fs, wait_for_device};
use super::superblock;
use super::tools;
use crate::log;
use crate::reaper::Reaper;

/// Check and mount `device` at `storage`. Returns the mount point when the disk is mounted
/// (else runtime storage is a tmpfs) and warnings for the host.
pub fn mount_state_disk(
    reaper: &Reaper,
    device: &Path,
    storage: &Path,
) -> (Option<PathBuf>, Vec<String>) {
    let mut warnings = Vec::new();
    let mount_point = storage.to_string_lossy().into_owned();
    let usable = check(reaper, device, &mut warnings);
    if usable {
        let dev = device.to_string_lossy();
        match mount_fs(&dev, &mount_point, "ext4", MsFlags::MS_NOATIME, None) {
            Ok(()) => {
                log!("state disk {dev} mounted on {mount_point}");
                return (Some(storage.to_path_buf()), warnings);
            }
            Err(e) => {
                let text = format!("state disk not mounted ({e}); runtime storage is temporary");
                log!("{text}");
                warnings.push(text);
            }
        }
    }
    warnings.extend(mount_temporary(storage));
    (None, warnings)
}

/// Runtime storage without a state disk (`vcontainer.state=none`, or a disk that cannot be
/// used): a tmpfs of its own, because the root is an overlay and docker's overlay2 (and
/// podman's overlay) cannot stack another overlay on it. Returns a warning when it failed.
pub fn mount_temporary(storage: &Path) -> Option<String> {
    let mount_point = storage.to_string_lossy();
    match mount_fs(
        "tmpfs",
        &mount_point,
        "tmpfs",
        MsFlags::empty(),
        Some("mode=0711"),
    ) {
        Ok(()) => {
            log!("runtime storage {mount_point} is a tmpfs");
            None
        }
        Err(e) => {
            log!("{e}");
            Some(e)
        }
    }
}

/// `e2fsck -p` unless the superblock says the disk was cleanly unmounted (what e2fsck would
/// find, without its start-up: superblock.rs); true when the disk may be mounted.
fn check(reaper: &Reaper, device: &Path, warnings: &mut Vec<String>) -> bool {
    if !wait_for_device(device, Duration::from_secs(10)) {
        let text = format!(
            "state disk {} not found; runtime storage is temporary",
            device.display()
        );
        log!("{text}");
        warnings.push(text);
        return false;
    }
    let dev = device.to_string_lossy();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match superblock::needs_check(device, now) {
        None => {
            log!("state disk {dev} was cleanly unmounted: not checked");
            return true;
        }
        Some(why) => log!("checking the state disk {dev}: {why}"),
    }
    match tools::run(reaper, &["e2fsck", "-p", &dev]) {
        // 0: clean, 1: errors corrected, 2: corrected, reboot advised (nothing is mounted
        // from this disk yet, so carrying on is safe).
        Ok(ExitStatus::Code(code @ 0..=2)) => {
            if code > 0 {
                log!("e2fsck corrected errors on {dev} (exit {code})");
            }
            true
        }
        Ok(status) => {
            let text = format!(
                "state disk {dev} has errors e2fsck -p could not fix ({status:?}); it is left \
                 unmounted and runtime storage is temporary (repair it with e2fsck -f on the host)"
            );
            log!("{text}");
            warnings.push(text);
            false
        }
        Err(e) => {
            let text = format!("cannot check the state disk {dev} ({e}); mounting it unchecked");
            log!("{text}");
            warnings.push(text);
            true
        }
    }
}

/// Make the state disk safe to lose power: sync and unmount, killing stragglers that keep
/// it busy, and as a last resort remount read-only.
pub fn release(mount_point: &Path) -> Result<(), String> {
    // a disk frozen for a save that did not happen: unmounting it would wait for the thaw
    thaw(mount_point);
    nix::unistd::sync();
    if umount2(mount_point, MntFlags::empty()).is_ok() {
        log!("state disk unmounted");
        return Ok(());
    }
    log!("state disk busy: terminating remaining processes");
    for (signal, pause) in [(libc::SIGTERM, 2000), (libc::SIGKILL, 500)] {
        // SAFETY: kill(-1) signals every process but PID 1 (us); no memory is involved.
        unsafe {
            libc::kill(-1, signal);
        }
        thread::sleep(Duration::from_millis(pause));
        nix::unistd::sync();
        if umount2(mount_point, MntFlags::empty()).is_ok() {
            log!("state disk unmounted");
            return Ok(());
        }
    }
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    match mount(None::<&str>, mount_point, None::<&str>, flags, None::<&str>) {
        Ok(()) => {
            nix::unistd::sync();
            log!("state disk could not be unmounted; remounted read-only");
            Ok(())
        }
        Err(e) => Err(format!(
            "state disk {} could not be unmounted or remounted read-only: {}",
            mount_point.display(),
            e.desc()
        )),
    }
}

/// `FIFREEZE` and `FITHAW` (`_IOWR('X', 119/120, int)`, linux/fs.h).
const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

/// Freeze the filesystem mounted at `mount_point` for a save of the running guest: the kernel
/// writes every dirty page and the journal out and blocks new writes until [`thaw`], so the
/// disk alone is complete and consistent (ext4 also clears its needs-recovery flag, so the
/// next boot's check finds it clean). The page cache stays: dropping it would make the saved
/// guest smaller, but zeroing the dropped pages (`init_on_free`) costs more under TCG than
/// writing them (measured, docs/snapshot.md).
pub fn freeze(mount_point: &Path) -> Result<(), String> {
    let dir = std::fs::File::open(mount_point)
        .map_err(|e| format!("opening {}: {e}", mount_point.display()))?;
    // SAFETY: FIFREEZE takes no memory argument; the descriptor is ours.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&dir), FIFREEZE as _, 0) };
    if rc != 0 {
        return Err(format!(
            "freezing {}: {}",
            mount_point.display(),
            std::io::Error::last_os_error()
        ));
    }
    log!("state disk {} frozen", mount_point.display());
    Ok(())
}

/// Undo [`freeze`]; a filesystem that is not frozen is left as it is.
pub fn thaw(mount_point: &Path) {
    let Ok(dir) = std::fs::File::open(mount_point) else {
        return;
    };
    // SAFETY: FITHAW takes no memory argument; the descriptor is ours.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&dir), FITHAW as _, 0) };
    if rc == 0 {
        log!("state disk {} thawed", mount_point.display());
    }
}
