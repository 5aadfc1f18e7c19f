//! The host share (`vcontainer.hostfs=<tag>`): the host's `/` served by virtiofsd, mounted at
//! [`MOUNT_POINT`] so the host can bind live host directories into containers (`-v`) instead
//! of copying them.
//!
//! The virtiofs driver is a module of the rootfs's full module tree (not of the initramfs:
//! only memres VMs use it), so it is loaded after the switch into the rootfs, with its
//! dependencies from `modules.dep`. The mount point is under /run, which containers never
//! see unless a volume binds a directory of it.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::{modules, mounts};
use crate::log;

/// Contract with the host (core/cli vm::virtiofs::GUEST_MOUNT).
pub const MOUNT_POINT: &str = "/run/vcontainer/host";
/// The module providing the `virtiofs` filesystem type.
const MODULE: &str = "virtiofs";

/// Loads virtiofs and mounts the share tagged `tag`; Err says why not (a boot warning: the
/// host then finds the share missing and copies volumes instead).
pub fn mount(tag: &str, release: &str) -> Result<(), String> {
    if !filesystem_known("virtiofs") {
        let base = Path::new("/lib/modules").join(release);
        let dep = fs::read_to_string(base.join("modules.dep"))
            .map_err(|e| format!("{}/modules.dep: {e}", base.display()))?;
        let order = load_order(&dep, MODULE)
            .ok_or_else(|| format!("no {MODULE} module in {}/modules.dep", base.display()))?;
        for rel in order {
            modules::load(&base.join(&rel))
                .map_err(|e| format!("module {}: {e}", rel.display()))?;
        }
    }
    mounts::mount_fs(tag, MOUNT_POINT, "virtiofs", MsFlags::MS_NODEV, None)?;
    log!("host share {tag} mounted on {MOUNT_POINT}");
    Ok(())
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
