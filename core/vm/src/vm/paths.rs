//! Where one VM's files are: the state dir, and a short socket dir next to it when the state
//! dir's path is too long for a Unix socket (see transport). Its own module so that every
//! part of the VM layer can name them without importing the boot.

use std::path::{Path, PathBuf};

use super::error::Result;
use super::{process, secret, transport};

/// Files of one VM in (or, for long state dirs, next to) its state dir.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmPaths {
    pub state_dir: PathBuf,
    /// Where the Unix sockets are: the state dir, or a short runtime dir (see transport).
    pub socket_dir: PathBuf,
    pub console_log: PathBuf,
    /// QEMU's own stdout/stderr (errors such as a locked disk image land here).
    pub qemu_log: PathBuf,
    pub vhost_log: PathBuf,
    pub vsock_socket: PathBuf,
    pub vhost_user_socket: PathBuf,
    pub qmp_socket: PathBuf,
    /// The agent secret of the running VM (see vm/secret.rs); empty in vm.json of tools that
    /// predate agent authentication, whose VMs must then be restarted.
    #[serde(default)]
    pub agent_secret: PathBuf,
}

impl VmPaths {
    pub fn new(state_dir: &Path) -> Result<Self> {
        let socket_dir = transport::socket_dir(state_dir)?;
        Ok(VmPaths {
            state_dir: state_dir.to_path_buf(),
            console_log: state_dir.join("console.log"),
            qemu_log: state_dir.join("qemu.log"),
            vhost_log: state_dir.join("vhost-device-vsock.log"),
            vsock_socket: socket_dir.join("vsock.sock"),
            vhost_user_socket: socket_dir.join("vhost-vsock.sock"),
            qmp_socket: socket_dir.join("qmp.sock"),
            agent_secret: state_dir.join(secret::FILE_NAME),
            socket_dir,
        })
    }

    /// Remove the sockets (and the agent secret) of a VM that is gone (callers make sure it
    /// is, and stop its shares first: `boot::remove_vm_files`).
    pub fn remove_sockets(&self) {
        secret::remove(&self.agent_secret);
        for p in [
            &self.vsock_socket,
            &self.vhost_user_socket,
            &self.qmp_socket,
        ] {
            let _ = std::fs::remove_file(p);
        }
        if self.socket_dir != self.state_dir {
            let _ = std::fs::remove_dir(&self.socket_dir);
        }
    }

    /// The tail of the console log plus QEMU's own messages, for error reports.
    pub fn diagnostics(&self) -> String {
        let mut out = process::tail_lines(&self.console_log, 15);
        let qemu = std::fs::read_to_string(&self.qemu_log).unwrap_or_default();
        let qemu = qemu.trim();
        if !qemu.is_empty() {
            out.push_str("\n  QEMU said:\n");
            out.push_str(&process::tail_lines(&self.qemu_log, 10));
        }
        out
    }
}
