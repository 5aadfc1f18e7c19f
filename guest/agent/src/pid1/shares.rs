//! Volume shares: the host hot-plugs one virtio-fs device per volume directory into a running
//! memres VM and asks (`Request::MountShare`) for it to be mounted on
//! `SHARES_DIR/<tag>`, from where the runtime bind-mounts it into containers.
//!
//! Only what a volume names is ever shared (the host's `/` used to be, read-write: root in
//! any privileged container could reach the whole host; see docs/security.md). A read-only
//! volume's share is mounted read-only here too, on top of virtiofsd's own `--readonly`.
//!
//! The virtiofs driver is a module of the rootfs's full module tree (not of the initramfs:
//! only memres VMs use it), loaded on the first mount with its dependencies from
//! `modules.dep`. The device appears some time after the host's `device_add` (PCIe hotplug,
//! then the virtio probe, slow under TCG), so the mount is retried for a while.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;
use vcontainer_proto::{valid_share_tag, SHARES_DIR};

use super::{modules, mounts};
use crate::log;

/// The module providing the `virtiofs` filesystem type.
const MODULE: &str = "virtiofs";
/// How long a hot-plugged device may take to show up in the guest.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(30);

/// One driver load at a time: two shares mounted at once must not both load modules.
static DRIVER: Mutex<()> = Mutex::new(());

/// Mounts the share tagged `tag` on `SHARES_DIR/<tag>` (read-only if asked); Ok when it is
/// mounted (also when it already was). Err says why not, for the host to fall back to copies.
pub fn mount(tag: &str, read_only: bool) -> Result<PathBuf, String> {
    if !valid_share_tag(tag) {
        return Err(format!("{tag:?} is not a share tag"));
    }
    load_driver()?;
    let target = Path::new(SHARES_DIR).join(tag);
    let target_s = target.to_string_lossy().into_owned();
    if is_mounted(&target_s) {
        return Ok(target);
    }
    let mut flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    let deadline = Instant::now() + APPEAR_TIMEOUT;
    loop {
        match mounts::mount_fs(tag, &target_s, "virtiofs", flags, None) {
            Ok(()) => {
                log!(
                    "share {tag} mounted on {target_s}{}",
                    if read_only { " (ro)" } else { "" }
                );
                return Ok(target);
            }
            Err(e) if Instant::now() > deadline => {
                return Err(format!("{e} (after {}s)", APPEAR_TIMEOUT.as_secs()))
            }
            // the device is not probed yet: virtio-fs says "tag not found" (ENOENT/EINVAL)
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn load_driver() -> Result<(), String> {
    let _one = DRIVER
        .lock()
        .map_err(|_| "share driver lock poisoned".to_string())?;
    if filesystem_known("virtiofs") {
        return Ok(());
    }
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .map_err(|e| format!("uname: {e}"))?;
    let base = Path::new("/lib/modules").join(release);
    let dep = fs::read_to_string(base.join("modules.dep"))
        .map_err(|e| format!("{}/modules.dep: {e}", base.display()))?;
    let order = load_order(&dep, MODULE)
        .ok_or_else(|| format!("no {MODULE} module in {}/modules.dep", base.display()))?;
    for rel in order {
        modules::load(&base.join(&rel)).map_err(|e| format!("module {}: {e}", rel.display()))?;
    }
    Ok(())
}

/// Whether something is mounted exactly on `target` (from /proc/self/mounts; share paths
/// hold no characters the kernel escapes there).
fn is_mounted(target: &str) -> bool {
    fs::read_to_string("/proc/self/mounts")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(target))
        })
        .unwrap_or(false)
}

fn filesystem_known(fstype: &str) -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some(fstype))
        })
        .unwrap_or(false)
}

/// The module files to load for `name`, dependencies first: modules.dep lists a module's
/// dependencies with the one to load first last (as modprobe reads it).
fn load_order(modules_dep: &str, name: &str) -> Option<Vec<PathBuf>> {
    let want = name.replace('-', "_");
    for line in modules_dep.lines() {
        let Some((path, deps)) = line.split_once(':') else {
            continue;
        };
        let file = path.rsplit('/').next().unwrap_or(path);
        let stem = file.split(".ko").next().unwrap_or(file).replace('-', "_");
        if stem != want {
            continue;
        }
        let mut order: Vec<PathBuf> = deps.split_whitespace().rev().map(PathBuf::from).collect();
        order.push(PathBuf::from(path.trim()));
        return Some(order);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_load_first() {
        let dep = "kernel/fs/fuse/fuse.ko:\n\
            kernel/fs/fuse/cuse.ko: kernel/fs/fuse/fuse.ko\n\
            kernel/fs/fuse/virtiofs.ko.xz: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko kernel/fs/fuse/fuse.ko\n";
        let order = load_order(dep, "virtiofs").expect("found");
        let order: Vec<String> = order.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            order,
            [
                "kernel/fs/fuse/fuse.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/fs/fuse/virtiofs.ko.xz"
            ]
        );
        assert_eq!(
            load_order(dep, "fuse").expect("fuse"),
            [PathBuf::from("kernel/fs/fuse/fuse.ko")]
        );
        assert!(load_order(dep, "nfs").is_none());
    }
}
