//! Filesystems: the initramfs pseudo filesystems, the runtime rootfs (read-only image +
//! tmpfs overlay), the switch into it, and the mounts runtimes expect.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use nix::unistd::{chdir, chroot};

use crate::log;

const NONE: Option<&str> = None;

/// Mount `fstype` at `target` (created if missing) unless something is mounted there.
pub fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(target)
        .map_err(|e| format!("mkdir {target}: {e}"))?;
    mount(Some(source), target, Some(fstype), flags, data)
        .map_err(|e| format!("mount {fstype} on {target}: {}", e.desc()))
}

/// /proc, /sys and /dev in the initramfs, so modules and devices can be reached.
pub fn early() -> Result<(), String> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "/proc", "proc", nosuid, None)?;
    mount_fs("sysfs", "/sys", "sysfs", nosuid, None)?;
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    Ok(())
}

/// Wait for a block device node to appear (virtio probing is asynchronous).
pub fn wait_for_device(device: &Path, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if device
            .metadata()
            .map(|m| m.file_type().is_block_device())
            .unwrap_or(false)
        {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Mount the read-only runtime image with a tmpfs overlay on `/newroot` and make it `/`.
///
/// The move-mount + chroot switch (what busybox `switch_root` does) is needed because runc
/// cannot `pivot_root` out of an initramfs.
pub fn switch_to_rootfs(image: &Path) -> Result<(), String> {
    if !wait_for_device(image, Duration::from_secs(10)) {
        return Err(format!(
            "root image device {} did not appear within 10 s",
            image.display()
        ));
    }
    let image = image.to_string_lossy();
    let mut mounted = Err(String::new());
    for fstype in ["squashfs", "erofs", "ext4"] {
        mounted = mount_fs(&image, "/mnt/lower", fstype, MsFlags::MS_RDONLY, None);
        if mounted.is_ok() {
            log!("rootfs: {image} mounted as {fstype}");
            break;
        }
    }
    mounted.map_err(|e| format!("cannot mount the root image ({e})"))?;
    mount_fs(
        "tmpfs",
        "/mnt/rw",
        "tmpfs",
        MsFlags::empty(),
        Some("mode=0755"),
    )?;
    for dir in ["/mnt/rw/upper", "/mnt/rw/work"] {
        fs::create_dir_all(dir).map_err(|e| format!("mkdir {dir}: {e}"))?;
    }
    mount_fs(
        "overlay",
        "/newroot",
        "overlay",
        MsFlags::empty(),
        Some("lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work"),
    )?;
    for pseudo in ["/proc", "/sys", "/dev"] {
        let target = format!("/newroot{pseudo}");
        fs::create_dir_all(&target).map_err(|e| format!("mkdir {target}: {e}"))?;
        mount(Some(pseudo), target.as_str(), NONE, MsFlags::MS_MOVE, NONE)
            .map_err(|e| format!("move {pseudo} into the new root: {}", e.desc()))?;
    }
    chdir("/newroot").map_err(|e| format!("chdir /newroot: {}", e.desc()))?;
    mount(Some("."), "/", NONE, MsFlags::MS_MOVE, NONE)
        .map_err(|e| format!("move the new root onto /: {}", e.desc()))?;
    chroot(".").map_err(|e| format!("chroot: {}", e.desc()))?;
    chdir("/").map_err(|e| format!("chdir /: {}", e.desc()))?;
    Ok(())
}

/// The mounts container runtimes expect inside the rootfs. Failures are warnings: a runtime
/// may still work without one of them, and the host gets to see the reason.
pub fn runtime_mounts() -> Vec<String> {
    let mut warnings = Vec::new();
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    let steps: [(&str, &str, &str, MsFlags, Option<&str>); 5] = [
        (
            "devpts",
            "/dev/pts",
            "devpts",
            nosuid,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
        (
            "shm",
            "/dev/shm",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            nosuid | MsFlags::MS_NODEV,
            None,
        ),
    ];
    for (source, target, fstype, flags, data) in steps {
        if let Err(e) = mount_fs(source, target, fstype, flags, data) {
            log!("{e}");
            warnings.push(e);
        }
    }
    if let Err(e) = enable_cgroup_controllers(Path::new("/sys/fs/cgroup")) {
        log!("{e}");
        warnings.push(e);
    }
    let _ = fs::create_dir_all("/run/lock");
    warnings
}

/// Delegate every available controller to child cgroups (runc/crun need cpu, memory, pids...).
fn enable_cgroup_controllers(root: &Path) -> Result<(), String> {
    let available = fs::read_to_string(root.join("cgroup.controllers"))
        .map_err(|e| format!("cgroup.controllers: {e}"))?;
    let control = root.join("cgroup.subtree_control");
    let mut failed = Vec::new();
    for controller in available.split_whitespace() {
        if fs::write(&control, format!("+{controller}")).is_err() {
            failed.push(controller.to_owned());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "cgroup controllers not enabled: {}",
            failed.join(" ")
        ))
    }
}
