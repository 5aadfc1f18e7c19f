//! Reading the VM's agent secret that the host passed as a QEMU fw_cfg file.
//!
//! Why fw_cfg: it is the one channel into the guest that is neither a command line nor the
//! kernel command line (both world-readable on the host) and needs no network or disk. The
//! `qemu_fw_cfg` module (loaded from the initramfs list) shows it under sysfs on x86 q35 and
//! arm `virt` alike.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use vcontainer_proto::auth::{Secret, FW_CFG_NAME};

/// Where `qemu_fw_cfg` shows a named item's bytes.
fn sysfs_path() -> String {
    format!("/sys/firmware/qemu_fw_cfg/by_name/{FW_CFG_NAME}/raw")
}

/// The secret as fw_cfg shows it now, without waiting: a guest restored from a snapshot reads
/// it per connection, and each restore's QEMU serves its own run's file under the same name
/// (fw_cfg contents come from the restoring QEMU's command line, not from the snapshot).
pub fn read_now() -> Result<Secret, String> {
    let path = sysfs_path();
    let bytes = std::fs::read(Path::new(&path)).map_err(|e| format!("{path}: {e}"))?;
    Secret::from_bytes(&bytes).map_err(|e| format!("{path}: {e}"))
}

/// The secret, waiting briefly for the fw_cfg device to be probed.
pub fn read() -> Result<Secret, String> {
    let path = sysfs_path();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match std::fs::read(Path::new(&path)) {
            Ok(bytes) => {
                return Secret::from_bytes(&bytes).map_err(|e| format!("{path}: {e}"));
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "{path}: {e} (QEMU was started without -fw_cfg name={FW_CFG_NAME}, \
                     or the qemu_fw_cfg module is missing)"
                ));
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}
