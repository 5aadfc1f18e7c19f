//! Which kernel modules the initramfs must carry, in load order, resolved from the kernel's
//! own `modules.dep` / `modules.builtin` / `modules.softdep` rather than from a hard-coded
//! list, because Debian moves drivers between "built in" and "module" across kernel updates.

use crate::error::{io_err, Error, Result};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::process::Command;

/// A module the agent needs before the rootfs is mounted and vsock is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WantedModule {
    pub name: &'static str,
    /// false: silently skipped when this kernel has neither module nor built-in driver
    /// (e.g. virtio_mmio, only useful on microvm / arm virt).
    pub required: bool,
}

const fn required(name: &'static str) -> WantedModule {
    WantedModule {
        name,
        required: true,
    }
}

const fn optional(name: &'static str) -> WantedModule {
    WantedModule {
        name,
        required: false,
    }
}

/// The boot set: virtio transports (PCI for q35/virt, MMIO for microvm), the root and state
/// disks (virtio_blk, squashfs, overlay, ext4), networking (virtio_net) and the agent's
/// channel (vsock + its virtio transport). virtio_rng feeds the entropy pool early so TLS in
/// the runtimes does not wait. qemu_fw_cfg exposes the host's per-VM agent secret
/// (`opt/vcontainer/secret`, see docs/security.md) on both q35 and arm `virt`. Everything else (bridge, veth, nf_tables...) the runtimes
/// modprobe from the rootfs's full module tree.
pub const BOOT_MODULES: &[WantedModule] = &[
    required("virtio_pci"),
    optional("virtio_mmio"),
    required("virtio_blk"),
    required("virtio_net"),
    optional("virtio_rng"),
    required("squashfs"),
    required("overlay"),
    required("ext4"),
    required("vsock"),
    required("vmw_vsock_virtio_transport"),
    required("qemu_fw_cfg"),
];

/// The kernel's module metadata, keyed by normalised module name.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    /// name -> (path relative to /lib/modules/<kver>/, direct dependency paths)
    modules: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
    /// name -> modules to load before it (modules.softdep "pre:")
    soft_pre: HashMap<String, Vec<String>>,
}

/// `kernel/fs/fuse/virtio-fs.ko.xz` -> `virtio_fs`: the name modprobe uses, where `-` and `_`
/// are the same.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalise(stem)
}

fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

impl ModuleIndex {
    /// Parses the three text files kmod's depmod writes.
    pub fn parse(modules_dep: &str, modules_builtin: &str, modules_softdep: &str) -> Self {
        let mut index = ModuleIndex::default();
        for line in modules_dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let deps = deps.split_whitespace().map(str::to_string).collect();
            index
                .modules
                .insert(module_name(path), (path.to_string(), deps));
        }
        index.builtin = modules_builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        for line in modules_softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let mut in_pre = false;
            let mut pre = Vec::new();
            for word in words {
                match word {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    dep if in_pre => pre.push(normalise(dep)),
                    _ => {}
                }
            }
            if !pre.is_empty() {
                index
                    .soft_pre
                    .entry(normalise(module))
                    .or_default()
                    .extend(pre);
            }
        }
        index
    }

    /// Reads the index of an installed kernel (`/lib/modules/<kver>` inside the rootfs).
    /// modules.softdep is optional: older depmods do not write it.
    pub fn load(modules_dir: &Path) -> Result<Self> {
        let read = |name: &str, optional: bool| -> Result<String> {
            let path = modules_dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(text),
                Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                Err(e) => Err(io_err("reading", &path)(e)),
            }
        };
        Ok(Self::parse(
            &read("modules.dep", false)?,
            &read("modules.builtin", false)?,
            &read("modules.softdep", true)?,
        ))
    }

    /// The module files to load, dependencies first, each once. Built-in drivers need nothing;
    /// a required driver that is neither a module nor built in is an error naming the kernel.
    pub fn resolve(&self, wanted: &[WantedModule], kernel_version: &str) -> Result<Vec<String>> {
        let mut order = Vec::new();
        let mut done = HashSet::new();
        for want in wanted {
            let name = normalise(want.name);
            if self.modules.contains_key(&name) {
                self.visit(&name, &mut Vec::new(), &mut done, &mut order)?;
            } else if !self.builtin.contains(&name) && want.required {
                return Err(Error::ModuleNotFound {
                    name,
                    kernel_version: kernel_version.to_string(),
                });
            }
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        stack: &mut Vec<String>,
        done: &mut HashSet<String>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        if done.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            return Err(Error::ModuleCycle(format!(
                "{} -> {name}",
                stack.join(" -> ")
            )));
        }
        let Some((path, deps)) = self.modules.get(name) else {
            // a soft dependency that is built in or absent: nothing to load
            return Ok(());
        };
        stack.push(name.to_string());
        let soft = self.soft_pre.get(name).into_iter().flatten().cloned();
        let hard = deps.iter().map(|d| module_name(d));
        for dep in soft.chain(hard).collect::<Vec<_>>() {
            self.visit(&dep, stack, done, order)?;
        }
        stack.pop();
        done.insert(name.to_string());
        order.push(path.clone());
        Ok(())
    }
}

/// The path the initramfs stores a module under: compression suffix dropped, because the
/// agent loads modules with finit_module and must not need a decompressor.
pub fn decompressed_path(path: &str) -> &str {
    for suffix in [".xz", ".zst", ".gz"] {
        if let Some(stripped) = path.strip_suffix(suffix) {
            return stripped;
        }
    }
    path
}

/// Reads a module file, decompressing .ko.gz in-process and .ko.xz / .ko.zst with the host's
/// xz / zstd (installed by setup-host.sh; avoids building C compression libraries here).
pub fn read_decompressed(file: &Path) -> Result<Vec<u8>> {
    let name = file.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else {
        None
    };
    if let Some(tool) = tool {
        let out = Command::new(tool)
            .arg("-dc")
            .arg(file)
            .output()
            .map_err(|source| Error::Spawn {
                program: tool.to_string(),
                source,
            })?;
        if !out.status.success() {
            return Err(Error::Command {
                program: format!("{tool} -dc {}", file.display()),
                status: out.status,
                stderr_tail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        return Ok(out.stdout);
    }
    let raw = std::fs::read(file).map_err(io_err("reading", file))?;
    if name.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(io_err("decompressing", file))?;
        return Ok(out);
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Trimmed from Debian's 6.1.0 cloud-amd64 modules.dep, plus a zstd-compressed module
    // and a softdep, to cover what newer kernels do.
    const DEP: &str = "\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/fs/squashfs/squashfs.ko.zst:
kernel/fs/overlayfs/overlay.ko:
kernel/lib/libcrc32c.ko:
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/firmware/qemu_fw_cfg.ko:
";
    const BUILTIN: &str = "kernel/fs/ext4/ext4.ko\nkernel/fs/jbd2/jbd2.ko\nkernel/fs/mbcache.ko\n";
    const SOFTDEP: &str = "# comment\nsoftdep overlay pre: libcrc32c post: nonexistent\n";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(DEP, BUILTIN, SOFTDEP)
    }

    fn position(order: &[String], file: &str) -> usize {
        order
            .iter()
            .position(|p| p.ends_with(file))
            .unwrap_or_else(|| panic!("{file} missing from {order:?}"))
    }

    #[test]
    fn boot_set_resolves_with_dependencies_first_and_once() {
        let order = index().resolve(BOOT_MODULES, "6.1.0-test").unwrap();
        // every module file appears exactly once
        let unique: HashSet<_> = order.iter().collect();
        assert_eq!(unique.len(), order.len(), "{order:?}");
        // dependencies before their users
        for (dep, user) in [
            ("/virtio.ko", "/virtio_pci.ko"),
            ("/virtio_ring.ko", "/virtio_pci.ko"),
            ("/virtio_pci_modern_dev.ko", "/virtio_pci.ko"),
            ("/failover.ko", "/net_failover.ko"),
            ("/net_failover.ko", "/virtio_net.ko"),
            ("/vsock.ko", "/vmw_vsock_virtio_transport_common.ko"),
            (
                "/vmw_vsock_virtio_transport_common.ko",
                "/vmw_vsock_virtio_transport.ko",
            ),
            ("/libcrc32c.ko", "/overlay.ko"), // softdep pre:
        ] {
            assert!(
                position(&order, dep) < position(&order, user),
                "{dep} must load before {user}: {order:?}"
            );
        }
        // built-in ext4 and the absent optional virtio_mmio add nothing
        assert!(!order
            .iter()
            .any(|p| p.contains("ext4") || p.contains("mmio")));
        // the dash/underscore spelling difference is handled
        assert!(order.iter().any(|p| p.ends_with("virtio-rng.ko")));
        assert!(order.contains(&"kernel/fs/squashfs/squashfs.ko.zst".to_string()));
        // the agent secret's channel (fw_cfg) is in the boot set
        assert!(order.contains(&"kernel/drivers/firmware/qemu_fw_cfg.ko".to_string()));
        assert_eq!(order.len(), 17, "{order:?}");
    }

    #[test]
    fn missing_required_module_is_an_error_naming_the_kernel() {
        let wanted = [required("virtio_pci"), required("vhost_nonexistent")];
        let err = index().resolve(&wanted, "6.1.0-test").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("vhost_nonexistent") && msg.contains("6.1.0-test"),
            "{msg}"
        );
    }

    #[test]
    fn dependency_cycle_is_reported_not_looped() {
        let dep = "a.ko: b.ko\nb.ko: a.ko\n";
        let err = ModuleIndex::parse(dep, "", "")
            .resolve(&[required("a")], "k")
            .unwrap_err();
        assert!(matches!(err, Error::ModuleCycle(_)), "{err}");
    }

    #[test]
    fn names_and_paths_are_normalised() {
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko.xz"),
            "virtio_rng"
        );
        assert_eq!(decompressed_path("a/b.ko.xz"), "a/b.ko");
        assert_eq!(decompressed_path("a/b.ko.zst"), "a/b.ko");
        assert_eq!(decompressed_path("a/b.ko"), "a/b.ko");
    }

    #[test]
    fn compressed_modules_are_decompressed() {
        let dir = tempfile::tempdir().unwrap();
        let payload = b"\x7fELF fake module body".repeat(50);
        let plain = dir.path().join("m.ko");
        std::fs::write(&plain, &payload).unwrap();
        let gz = dir.path().join("m.ko.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut enc, &payload).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(read_decompressed(&plain).unwrap(), payload);
        assert_eq!(read_decompressed(&gz).unwrap(), payload);
        for (tool, ext) in [("xz", "xz"), ("zstd", "zst")] {
            let status = Command::new(tool).arg("-kq").arg(&plain).status();
            match status {
                Ok(s) if s.success() => {
                    let file = dir.path().join(format!("m.ko.{ext}"));
                    assert_eq!(read_decompressed(&file).unwrap(), payload, "{tool}");
                }
                _ => eprintln!("skipping the {tool} case: {tool} not installed on this host"),
            }
        }
    }
}
