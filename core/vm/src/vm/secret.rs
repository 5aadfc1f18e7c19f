//! The per-VM agent secret file (`agent.secret` in the state dir): the one owner of it.
//!
//! Why a file: the guest agent accepts only connections that prove this secret
//! (vcontainer_proto::auth), so it must reach QEMU (fw_cfg, by file name) and every later CLI
//! process of a memres VM without ever being on a command line, in the environment or on the
//! kernel command line. A fresh random secret is made for each boot, created 0600 with
//! O_EXCL (never through a planted file or link), and removed with the VM's sockets.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use vcontainer_proto::auth::{Secret, SECRET_LEN};

use super::error::{Result, VmError};

/// File name of the secret in the state dir.
pub const FILE_NAME: &str = "agent.secret";

/// Make a new random secret at `path`, replacing the one of an earlier boot.
pub fn create(path: &Path) -> Result<Secret> {
    let mut bytes = [0u8; SECRET_LEN];
    getrandom::fill(&mut bytes)
        .map_err(|e| VmError::Other(format!("no randomness for the agent secret: {e}")))?;
    let secret =
        Secret::from_bytes(&bytes).map_err(|e| VmError::Other(format!("agent secret: {e}")))?;
    remove(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| VmError::io(format!("creating {}", path.display()), e))?;
    file.write_all(secret.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| VmError::io(format!("writing {}", path.display()), e))?;
    Ok(secret)
}

/// The secret of the running VM. Refused when the file is not a regular file of ours that
/// only we can read: then someone else may know it, or made it.
pub fn read(path: &Path) -> Result<Secret> {
    if path.as_os_str().is_empty() {
        // vm.json of a tool from before agent authentication names no secret file
        return Err(VmError::Other(
            "this VM was started by an older vcontainer, before agent authentication; stop it \
             (`memres stop`) and run the command again"
                .into(),
        ));
    }
    let missing = |e: io::Error| {
        if e.kind() == io::ErrorKind::NotFound {
            VmError::Other(format!(
                "{} is missing: this VM was started by an older vcontainer (before agent \
                 authentication) or its files were removed; stop it (`memres stop`) and run \
                 the command again",
                path.display()
            ))
        } else {
            VmError::io(format!("reading {}", path.display()), e)
        }
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(missing)?;
    let meta = file
        .metadata()
        .map_err(|e| VmError::io(format!("checking {}", path.display()), e))?;
    let uid = nix::unistd::geteuid().as_raw();
    if !meta.is_file() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(VmError::Other(format!(
            "{} must be a regular file of uid {uid} readable only by its owner (mode 0600); \
             stop the VM (`memres stop`) so the next boot makes a new one",
            path.display()
        )));
    }
    let mut bytes = Vec::with_capacity(SECRET_LEN);
    file.take(SECRET_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| VmError::io(format!("reading {}", path.display()), e))?;
    Secret::from_bytes(&bytes).map_err(|e| VmError::Other(format!("{}: {e}", path.display())))
}

/// Forget the secret of a VM that is gone.
pub fn remove(path: &Path) {
    if !path.as_os_str().is_empty() {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_secret_is_private_random_and_read_back() {
        let t = tempfile::tempdir().expect("tmp");
        let path = t.path().join(FILE_NAME);
        let a = create(&path).expect("create");
        let meta = std::fs::metadata(&path).expect("exists");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), SECRET_LEN as u64);
        assert_eq!(read(&path).expect("read"), a);
        // each boot gets a new one, replacing the old file
        let b = create(&path).expect("again");
        assert_ne!(a, b);
        assert_eq!(read(&path).expect("read"), b);
        remove(&path);
        let e = read(&path).expect_err("gone");
        assert!(e.to_string().contains("memres stop"), "{e}");
        // vm.json of an older tool: no path at all
        let e = read(Path::new("")).expect_err("no path");
        assert!(e.to_string().contains("older vcontainer"), "{e}");
    }

    #[test]
    fn a_readable_or_linked_secret_is_refused() {
        let t = tempfile::tempdir().expect("tmp");
        let path = t.path().join(FILE_NAME);
        create(&path).expect("create");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = read(&path).expect_err("world-readable");
        assert!(e.to_string().contains("0600"), "{e}");
        // a planted symlink is neither followed on read nor written through on create
        let target = t.path().join("elsewhere");
        std::fs::write(&target, [1u8; SECRET_LEN]).expect("target");
        std::fs::remove_file(&path).expect("rm");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        assert!(read(&path).is_err());
        create(&path).expect("create replaces the link");
        assert_eq!(
            std::fs::read(&target).expect("target"),
            [1u8; SECRET_LEN],
            "the link's target is untouched"
        );
    }

    #[test]
    fn a_wrong_length_is_refused() {
        let t = tempfile::tempdir().expect("tmp");
        let path = t.path().join(FILE_NAME);
        for len in [0, SECRET_LEN - 1, SECRET_LEN + 1] {
            let _ = std::fs::remove_file(&path);
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(&vec![0u8; len]))
                .expect("write");
            assert!(read(&path).is_err(), "{len} bytes accepted");
        }
    }
}
