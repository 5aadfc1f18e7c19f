//! The guest side of snapshots (docs/snapshot.md): a guest booted with `vcontainer.snapshot=1`
//! is saved by the host once and restored for many runs, so what must differ per run cannot
//! come from the boot. The secret is read from fw_cfg for each connection (each restoring
//! QEMU serves its own), and `Resume` sets the clock, reseeds the entropy pool and mounts the
//! run's storage (the state disk is hot-plugged after the restore, so the runtime sees the
//! same storage as after a cold boot).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use vcontainer_proto::ResumeRequest;

use super::{secret, storage};
use crate::reaper::Reaper;
use crate::{log, Secret, SnapshotHook};

/// How long a hot-plugged state disk may take to show up as a block device.
const DEVICE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Pid1Snapshot {
    pub reaper: Reaper,
    /// `vcontainer.storage=`: where the run's storage goes.
    pub storage: Option<PathBuf>,
    /// Shared with the shutdown hook, which unmounts what `resume` mounted.
    pub state_mount: Arc<Mutex<Option<PathBuf>>>,
    /// Set by the first `Resume`: a restore is resumed once (and again after a `Suspend`).
    pub resumed: Mutex<bool>,
}

impl SnapshotHook for Pid1Snapshot {
    fn current_secret(&self) -> Option<Secret> {
        match secret::read_now() {
            Ok(s) => Some(s),
            Err(e) => {
                log!("no agent secret for this connection: {e}");
                None
            }
        }
    }

    fn resume(&self, request: &ResumeRequest) -> Result<(), String> {
        let mut resumed = self.resumed.lock().unwrap_or_else(PoisonError::into_inner);
        if *resumed {
            return Err("this guest was already resumed".into());
        }
        set_clock(request.unix_time_ns)?;
        reseed(&request.entropy)?;
        // saved with its storage (`Suspend`): the same disk is attached again, still mounted
        let frozen = self
            .state_mount
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(mount) = frozen {
            storage::thaw(&mount);
            *resumed = true;
            log!("resumed from a suspended guest");
            return Ok(());
        }
        let Some(storage) = &self.storage else {
            *resumed = true;
            return Ok(());
        };
        match &request.state_device {
            Some(device) => {
                let device = Path::new(device);
                if !super::mounts::wait_for_device(device, DEVICE_WAIT) {
                    return Err(format!(
                        "the hot-plugged state disk {} did not appear within {} s",
                        device.display(),
                        DEVICE_WAIT.as_secs()
                    ));
                }
                let (mounted, warnings) = storage::mount_state_disk(&self.reaper, device, storage);
                if mounted.is_none() {
                    return Err(format!(
                        "the state disk was not mounted: {}",
                        warnings.join("; ")
                    ));
                }
                *self
                    .state_mount
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = mounted;
            }
            None => {
                if let Some(e) = storage::mount_temporary(storage) {
                    return Err(e);
                }
            }
        }
        *resumed = true;
        log!("resumed from a snapshot");
        Ok(())
    }

    fn suspend(&self) -> Result<(), String> {
        let mut resumed = self.resumed.lock().unwrap_or_else(PoisonError::into_inner);
        let mount = self
            .state_mount
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or("no state disk is mounted: nothing of this run would outlive it")?;
        storage::freeze(&mount)?;
        *resumed = false;
        Ok(())
    }
}

/// The host's wall clock: the saved guest's clock stands where it stood when it was saved.
fn set_clock(unix_time_ns: u64) -> Result<(), String> {
    let ts = libc::timespec {
        tv_sec: (unix_time_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (unix_time_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_settime reads the timespec we pass; no other memory is involved.
    let rc = unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) };
    if rc != 0 {
        return Err(format!(
            "setting the clock: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// `RNDRESEEDCRNG` (`_IO('R', 0x07)`, linux/random.h): reseed the kernel's CRNG from the pool
/// now, instead of at its next scheduled reseed.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Mix the host's bytes into the pool and reseed at once: every restore of one snapshot starts
/// with the same saved CRNG state, which must not produce the same numbers twice.
fn reseed(entropy: &[u8]) -> Result<(), String> {
    if entropy.len() < 32 {
        return Err(format!(
            "Resume carried {} bytes of entropy, at least 32 are needed",
            entropy.len()
        ));
    }
    let mut f = OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    f.write_all(entropy)
        .map_err(|e| format!("writing /dev/urandom: {e}"))?;
    // SAFETY: an argument-less ioctl on a descriptor we own.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG as _) };
    if rc != 0 {
        return Err(format!(
            "reseeding the CRNG: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
