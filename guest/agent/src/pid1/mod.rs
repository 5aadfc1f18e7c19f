//! PID-1 duties, done only when the agent really is PID 1 of the guest (see "Guest boot
//! contract" in docs/guest-contract.md): modules, mounts, the switch into the runtime rootfs, the
//! state disk, networking, and the shutdown that leaves the state disk clean.

pub mod cmdline;
mod modules;
mod mounts;
mod net;
pub mod power_button;
mod prefetch;
mod secret;
pub mod shares;
mod snapshot;
mod storage;
mod superblock;
mod tools;

use std::fs::{self, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use nix::sys::reboot::{reboot, RebootMode};

use crate::{log, Agent, AgentInfo, Reaper, ShutdownHook};
use cmdline::BootConfig;

const MODULE_LIST: &str = "/etc/vcontainer/modules";
const ROOT_IMAGE: &str = "/dev/vda";
const SERVICE_LOG_DIR: &str = "/var/log/vcontainer";
const HOSTNAME: &str = "vcontainer";

pub fn is_pid1() -> bool {
    nix::unistd::getpid().as_raw() == 1
}

/// A booted guest, ready to serve.
pub struct Booted {
    pub agent: Agent,
    pub port: u32,
    pub config: BootConfig,
}

/// Everything PID 1 does before serving. An `Err` is fatal: the caller logs it and powers
/// off, so QEMU exits and the host reports the console log.
pub fn boot() -> Result<Booted, String> {
    mounts::early()?;
    attach_console();
    log!(
        "starting, protocol version {}",
        vcontainer_proto::PROTOCOL_VERSION
    );
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .map_err(|e| format!("uname: {}", e.desc()))?;
    let mut warnings = modules::load_listed(Path::new(MODULE_LIST), &release);
    // Without it the agent serves nobody (it cannot tell its host from anyone else).
    let secret = match secret::read() {
        Ok(secret) => Some(secret),
        Err(e) => {
            let e = format!("no agent secret, every connection will be refused: {e}");
            log!("{e}");
            warnings.push(e);
            None
        }
    };
    let cmdline = fs::read_to_string("/proc/cmdline").map_err(|e| format!("/proc/cmdline: {e}"))?;
    let config = BootConfig::parse(&cmdline);
    if config.debug {
        crate::console::enable_debug();
    }
    mounts::switch_to_rootfs(Path::new(ROOT_IMAGE))?;
    log!("switched into the runtime rootfs");
    prefetch::runtime_cli(&config.runtime);
    // The rootfs may list more modules (netfilter for the runtime's networking, ...).
    warnings.extend(modules::load_listed(Path::new(MODULE_LIST), &release));
    warnings.extend(mounts::runtime_mounts());
    let reaper = Reaper::global();

    let state_mount = match (&config.state_device, &config.storage) {
        // storage comes with Resume, after each restore of the snapshot
        _ if config.snapshot => None,
        (Some(device), Some(storage)) => {
            let (mounted, more) = storage::mount_state_disk(&reaper, device, storage);
            warnings.extend(more);
            mounted
        }
        (Some(_), None) => {
            warnings.push("vcontainer.state given without vcontainer.storage: disk unused".into());
            None
        }
        (None, Some(storage)) => {
            warnings.extend(storage::mount_temporary(storage));
            None
        }
        (None, None) => None,
    };
    warnings.extend(net::configure(&reaper, HOSTNAME));

    let info = AgentInfo {
        runtime: config.runtime.clone(),
        warnings,
        service_log_dir: PathBuf::from(SERVICE_LOG_DIR),
        secret,
    };
    let state_mount = Arc::new(Mutex::new(state_mount));
    let shutdown = Box::new(Pid1Shutdown {
        state_mount: Arc::clone(&state_mount),
    });
    let mut agent = Agent::new(info, reaper.clone(), shutdown);
    if config.snapshot {
        log!("booted to be saved as a snapshot: storage comes with Resume");
        agent = agent.with_snapshot(Box::new(snapshot::Pid1Snapshot {
            reaper,
            storage: config.storage.clone(),
            state_mount,
            resumed: Mutex::new(false),
        }));
    }
    Ok(Booted {
        agent,
        port: config.port,
        config,
    })
}

/// Our output goes to /dev/console (QEMU's serial port -> the host's console.log), whether
/// or not the initramfs had a console node when the kernel started us.
fn attach_console() {
    let Ok(console) = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    let null = OpenOptions::new().read(true).write(true).open("/dev/null");
    // SAFETY: dup2 onto the standard descriptors; the sources stay open for the call.
    unsafe {
        libc::dup2(console.as_raw_fd(), 1);
        libc::dup2(console.as_raw_fd(), 2);
        if let Ok(null) = &null {
            libc::dup2(null.as_raw_fd(), 0);
        }
    }
}

/// Power the guest off. QEMU runs with -no-reboot, so this ends the VM.
pub fn power_off() -> ! {
    nix::unistd::sync();
    log!("powering off");
    let _ = reboot(RebootMode::RB_POWER_OFF);
    // Only reached if the kernel refused; PID 1 must not exit (that is a kernel panic,
    // which with panic=-1 also ends QEMU, but without our message).
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

struct Pid1Shutdown {
    /// Set at boot, or by `Resume` on a restored snapshot.
    state_mount: Arc<Mutex<Option<PathBuf>>>,
}

impl ShutdownHook for Pid1Shutdown {
    fn prepare(&self) -> Result<(), String> {
        nix::unistd::sync();
        let mount = self
            .state_mount
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match mount {
            Some(mount_point) => storage::release(&mount_point),
            None => Ok(()),
        }
    }

    fn power_off(&self) {
        // Let the answer leave through the virtio queue before the machine stops.
        thread::sleep(Duration::from_millis(300));
        power_off();
    }
}
