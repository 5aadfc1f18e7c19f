//! `vcontainer doctor`: what the VM layer would use on this host, and why.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::accel::{self, AccelChoice};
use super::blobs::{self, BlobSet};
use super::config::Arch;
use super::process;
use super::transport::{self, TransportChoice, TransportKind};
use super::virtiofs;

#[derive(Debug)]
pub struct DoctorReport {
    pub arch: Arch,
    pub runtime: String,
    /// QEMU binary and its `--version` first line, or why not.
    pub qemu: Result<(PathBuf, String), String>,
    pub accel: AccelChoice,
    pub transport: Result<TransportChoice, String>,
    /// Needed for the hybrid transport.
    pub vhost_device_vsock: Option<PathBuf>,
    /// Serves live `-v` volumes to memres VMs; optional (without it volumes are copied).
    pub virtiofsd: Option<PathBuf>,
    /// Formats state disks.
    pub mkfs_ext4: Option<PathBuf>,
    pub blobs: Result<BlobSet, String>,
    /// The plugin search path, in order (docs/guest-contract.md), with whether each dir exists.
    pub plugin_dirs: Vec<(PathBuf, bool)>,
}

impl DoctorReport {
    /// True when a VM can be booted.
    pub fn ok(&self) -> bool {
        self.qemu.is_ok()
            && self.blobs.is_ok()
            && match &self.transport {
                Ok(t) => t.kind != TransportKind::Hybrid || self.vhost_device_vsock.is_some(),
                Err(_) => false,
            }
    }
}

/// Gather the report for (arch, runtime).
/// `blob_env` is the tool's own blob-dir variable (see `blobs::resolve`).
pub fn doctor(
    arch: Arch,
    runtime: &str,
    blob_dir: Option<&Path>,
    blob_env: Option<&str>,
    no_kvm: bool,
) -> DoctorReport {
    let program = arch.qemu_program();
    let qemu = match process::which(program) {
        None => Err(format!("{program} not found on PATH")),
        Some(p) => match Command::new(&p).arg("--version").output() {
            Ok(o) if o.status.success() => {
                let v = String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                Ok((p, v))
            }
            Ok(o) => Err(format!("{} --version failed: {}", p.display(), o.status)),
            Err(e) => Err(format!("{}: {e}", p.display())),
        },
    };
    DoctorReport {
        arch,
        runtime: runtime.to_string(),
        qemu,
        accel: accel::choose(arch, no_kvm),
        transport: transport::choose(None).map_err(|e| e.to_string()),
        vhost_device_vsock: process::which("vhost-device-vsock"),
        virtiofsd: process::which(virtiofs::PROGRAM),
        mkfs_ext4: process::which("mkfs.ext4"),
        blobs: blobs::resolve(blob_dir, blob_env, arch, runtime).map_err(|e| e.to_string()),
        plugin_dirs: plugin_search_path()
            .into_iter()
            .map(|p| {
                let e = p.is_dir();
                (p, e)
            })
            .collect(),
    }
}

/// The dirs plugins are loaded from (the one rule: [`vcontainer_abi::host::search_dirs`]).
fn plugin_search_path() -> Vec<PathBuf> {
    vcontainer_abi::host::default_search_dirs()
}

/// One checked line of the report: whether it is fine, and what it says.
type Line = (bool, String);

impl DoctorReport {
    /// The report's lines after the `guest:` header, one per thing checked.
    fn lines(&self) -> Vec<Line> {
        let mut lines = vec![
            self.qemu_line(),
            (
                true,
                format!("accel: {} ({})", self.accel.accel, self.accel.reason),
            ),
            self.transport_line(),
            self.volumes_line(),
            self.state_disk_line(),
            self.blobs_line(),
        ];
        lines.extend(self.plugin_dirs.iter().map(|(p, exists)| {
            let absent = if *exists { "" } else { " (absent)" };
            (true, format!("plugin dir: {}{absent}", p.display()))
        }));
        lines
    }

    fn qemu_line(&self) -> Line {
        match &self.qemu {
            Ok((p, v)) => (
                true,
                format!("qemu: {} ({v}; {})", p.display(), process::origin(p)),
            ),
            Err(e) => (false, format!("qemu: {e}")),
        }
    }

    fn transport_line(&self) -> Line {
        let t = match &self.transport {
            Ok(t) => t,
            Err(e) => return (false, format!("transport: {e}")),
        };
        let mut text = format!("transport: {} ({})", t.kind, t.reason);
        if t.kind != TransportKind::Hybrid {
            return (true, text);
        }
        match &self.vhost_device_vsock {
            Some(p) => text.push_str(&format!(
                "; vhost-device-vsock at {} ({})",
                p.display(),
                process::origin(p)
            )),
            None => text.push_str("; vhost-device-vsock NOT found"),
        }
        (self.vhost_device_vsock.is_some(), text)
    }

    fn volumes_line(&self) -> Line {
        let text = match &self.virtiofsd {
            Some(p) if virtiofs::enabled_by_env() => format!(
                "live volumes: memres VMs share each volume dir (and nothing else) with {} ({})",
                p.display(),
                process::origin(p)
            ),
            Some(_) => format!(
                "live volumes: off ({}=off); volumes are copied",
                virtiofs::DISABLE_ENV
            ),
            None => "live volumes: virtiofsd NOT found; volumes are copied (detached containers' \
                     changes come back at stop)"
                .to_string(),
        };
        (true, text)
    }

    fn state_disk_line(&self) -> Line {
        match &self.mkfs_ext4 {
            Some(p) => (
                true,
                format!(
                    "state disks: mkfs.ext4 at {} ({})",
                    p.display(),
                    process::origin(p)
                ),
            ),
            None => (
                false,
                "state disks: mkfs.ext4 NOT found (Debian: apt-get install e2fsprogs)".into(),
            ),
        }
    }

    fn blobs_line(&self) -> Line {
        match &self.blobs {
            Ok(b) => {
                let mut text = format!("blobs: {} (from {})", b.dir.display(), b.source);
                if let Some(k) = b.meta.as_ref().and_then(|m| m.kernel_version.as_deref()) {
                    text.push_str(&format!(", kernel {k}"));
                }
                (true, text)
            }
            Err(e) => (false, format!("blobs: {e}")),
        }
    }
}

impl std::fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "guest: {} {}", self.runtime, self.arch)?;
        for (ok, text) in self.lines() {
            writeln!(f, "[{}] {text}", if ok { "ok  " } else { "FAIL" })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_on_this_host() {
        let t = tempfile::tempdir().expect("tmp");
        let r = doctor(Arch::X86_64, "podman", Some(t.path()), None, false);
        let text = r.to_string();
        assert!(text.contains("accel: "), "{text}");
        assert!(text.contains("live volumes: "), "{text}");
        assert!(text.contains("[FAIL] blobs:"), "{text}");
        assert!(!r.ok(), "no blobs in an empty dir");
        if let Ok((_, v)) = &r.qemu {
            assert!(v.contains("QEMU emulator version"), "{v}");
        }
    }
}
