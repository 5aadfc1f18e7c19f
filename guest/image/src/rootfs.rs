//! The slow stage: a Debian root filesystem with the runtime, turned into a VM guest and
//! squashed. Also yields the kernel (from the rootfs's /boot) and its module tree.

use crate::error::{io_err, Error, Result};
use crate::runtime_files::RootfsFile;
use crate::Arch;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

/// What the rootfs is made of. Everything here goes into the rootfs cache key.
#[derive(Clone, Debug)]
pub struct RootfsSpec {
    pub arch: Arch,
    pub suite: String,
    pub mirror: String,
    /// Sorted, without duplicates (see [`RootfsSpec::new`]).
    pub packages: Vec<String>,
    pub files: Vec<RootfsFile>,
    pub compression: SquashfsCompression,
}

impl RootfsSpec {
    pub fn new(
        arch: Arch,
        suite: &str,
        mirror: &str,
        packages: impl IntoIterator<Item = String>,
        files: Vec<RootfsFile>,
    ) -> Result<Self> {
        let mut packages: Vec<String> = packages.into_iter().collect();
        packages.sort();
        packages.dedup();
        if let Some(bad) = packages
            .iter()
            .find(|p| p.is_empty() || p.contains([',', ' ', '\n']) || p.starts_with('-'))
        {
            return Err(Error::Invalid(format!("package name {bad:?}")));
        }
        Ok(RootfsSpec {
            arch,
            suite: suite.to_string(),
            mirror: mirror.to_string(),
            packages,
            files,
            compression: SquashfsCompression::default(),
        })
    }
}

/// mksquashfs compressor. Measured on the docker rootfs (600 MB tree), this host, TCG guest
/// reading dockerd + containerd (123 MB) right after boot; build time on 2 shared cores:
///
/// | compressor   | rootfs.img | guest read | mksquashfs |
/// |--------------|-----------:|-----------:|-----------:|
/// | lz4          |     281 MB |     1.1 s  |       2 s  |
/// | lz4 -Xhc     |     228 MB |     1.1 s  |     130 s  |
/// | zstd -l 3    |     193 MB |     2.3 s  |       5 s  |
/// | zstd -l 15   |     169 MB |     2.0 s  |     153 s  |
/// | xz           |     152 MB |    13.0 s  |     299 s  |
///
/// Under TCG every decompressed byte costs emulated CPU time, so lz4 (the default) starts
/// the runtime's binaries twice as fast as zstd; plain lz4 because -Xhc buys 19% size for a
/// minute of build per runtime. Choose lz4hc or zstd for a smaller download.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SquashfsCompression {
    #[default]
    Lz4,
    Lz4Hc,
    Zstd,
}

impl SquashfsCompression {
    pub fn name(self) -> &'static str {
        match self {
            SquashfsCompression::Lz4 => "lz4",
            SquashfsCompression::Lz4Hc => "lz4hc",
            SquashfsCompression::Zstd => "zstd",
        }
    }

    fn mksquashfs_args(self) -> &'static [&'static str] {
        match self {
            SquashfsCompression::Lz4 => &["-comp", "lz4"],
            // high-compression lz4: slower to build, same decompression speed
            SquashfsCompression::Lz4Hc => &["-comp", "lz4", "-Xhc"],
            SquashfsCompression::Zstd => &["-comp", "zstd", "-Xcompression-level", "15"],
        }
    }
}

impl std::str::FromStr for SquashfsCompression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "lz4" => Ok(SquashfsCompression::Lz4),
            "lz4hc" => Ok(SquashfsCompression::Lz4Hc),
            "zstd" => Ok(SquashfsCompression::Zstd),
            other => Err(Error::Invalid(format!(
                "squashfs compression {other:?} (lz4, lz4hc or zstd)"
            ))),
        }
    }
}

/// Runs a command, failing with its stderr tail when it exits non-zero.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let program = format!("{:?}", cmd.get_program());
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| Error::Spawn {
            program: program.clone(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(25).collect();
        return Err(Error::Command {
            program: format!("{cmd:?}"),
            status: out.status,
            stderr_tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(())
}

/// The mmdebstrap command line for `spec` into the (absent or empty) directory `target`.
pub fn mmdebstrap_command(spec: &RootfsSpec, target: &Path) -> Command {
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg("--variant=minbase")
        .arg("--mode=root")
        .arg(format!("--arch={}", spec.arch.debian_arch()))
        .arg("--aptopt=APT::Install-Recommends \"false\"")
        .arg("--aptopt=Acquire::Languages \"none\"");
    // documentation, man pages and translations are dead weight in a VM nobody logs into;
    // copyright files stay (they are tiny and the image may be redistributed)
    for exclude in [
        "/usr/share/doc/*",
        "/usr/share/man/*",
        "/usr/share/info/*",
        "/usr/share/locale/*",
        "/usr/share/lintian/*",
        "/usr/share/bash-completion/*",
        "/usr/share/zsh/*",
        "/usr/share/fish/*",
    ] {
        cmd.arg(format!("--dpkgopt=path-exclude={exclude}"));
    }
    cmd.arg("--dpkgopt=path-include=/usr/share/doc/*/copyright");
    cmd.arg(format!("--include={}", spec.packages.join(",")));
    // the kernel's postinst would build an initramfs-tools initrd we throw away
    cmd.env("INITRD", "No");
    cmd.arg(&spec.suite).arg(target).arg(&spec.mirror);
    cmd
}

/// Joins an absolute guest path onto the rootfs directory, refusing `..` and any symlink in
/// the parent chain: the rootfs is untrusted package content, and an absolute symlink
/// there would point into the build host.
pub fn guest_path(root: &Path, path: &str) -> Result<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    let mut out = root.to_path_buf();
    let parts: Vec<Component<'_>> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        let Component::Normal(name) = part else {
            return Err(Error::UnsafePath {
                path: rel.to_path_buf(),
                reason: "only plain path components are allowed",
            });
        };
        out.push(name);
        let is_last = i + 1 == parts.len();
        if !is_last {
            if let Ok(meta) = out.symlink_metadata() {
                if meta.file_type().is_symlink() {
                    return Err(Error::UnsafePath {
                        path: out,
                        reason: "a parent directory is a symlink",
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Writes the VM configuration files. An existing file or symlink at a target path is
/// replaced (never written through).
pub fn write_files(root: &Path, files: &[RootfsFile]) -> Result<()> {
    for f in files {
        let path = guest_path(root, &f.path)?;
        match &f.contents {
            None => {
                // a symlink here would make create_dir_all and chmod act on its target
                if path.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
                    return Err(Error::UnsafePath {
                        path,
                        reason: "the directory to create is a symlink",
                    });
                }
                std::fs::create_dir_all(&path).map_err(io_err("creating", &path))?;
            }
            Some(contents) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
                }
                if let Ok(meta) = path.symlink_metadata() {
                    if meta.is_dir() {
                        return Err(Error::UnsafePath {
                            path,
                            reason: "a directory is in the way",
                        });
                    }
                    std::fs::remove_file(&path).map_err(io_err("replacing", &path))?;
                }
                std::fs::write(&path, contents).map_err(io_err("writing", &path))?;
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
            .map_err(io_err("chmod", &path))?;
    }
    Ok(())
}

/// The kernel found in the rootfs.
#[derive(Debug, Clone)]
pub struct KernelInfo {
    pub version: String,
    /// /lib/modules/<version> inside the rootfs directory
    pub modules_dir: PathBuf,
    /// /boot/vmlinuz-<version> inside the rootfs directory
    pub image: PathBuf,
}

/// Finds the one installed kernel: the single directory under /usr/lib/modules (usrmerge) or
/// /lib/modules, and its /boot/vmlinuz.
pub fn find_kernel(root: &Path) -> Result<KernelInfo> {
    let base = ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_dir() && !p.symlink_metadata().map(|m| m.is_symlink()).unwrap_or(true))
        .ok_or_else(|| {
            Error::Layout("no /lib/modules: is a linux-image package installed?".into())
        })?;
    let mut versions: Vec<String> = std::fs::read_dir(&base)
        .map_err(io_err("listing", &base))?
        .flatten()
        .filter(|e| e.path().join("modules.dep").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    let version = match versions.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(Error::Layout(format!(
                "no kernel with modules.dep in {}",
                base.display()
            )))
        }
        many => {
            return Err(Error::Layout(format!(
                "several kernels installed ({}); the package set must pull exactly one",
                many.join(", ")
            )))
        }
    };
    let image = root.join("boot").join(format!("vmlinuz-{version}"));
    if !image.is_file() {
        return Err(Error::Layout(format!(
            "kernel {version} has no {}",
            image.display()
        )));
    }
    Ok(KernelInfo {
        modules_dir: base.join(&version),
        version,
        image,
    })
}

/// Copies the kernel image to `dest` in the form QEMU's -kernel wants: x86 bzImage as is;
/// arm64 Debian may ship vmlinuz gzip-compressed, and the raw Image boots everywhere.
pub fn extract_kernel(kernel: &KernelInfo, arch: Arch, dest: &Path) -> Result<()> {
    let raw = std::fs::read(&kernel.image).map_err(io_err("reading", &kernel.image))?;
    let data = if arch == Arch::Aarch64 && raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(io_err("decompressing", &kernel.image))?;
        out
    } else {
        raw
    };
    std::fs::write(dest, data).map_err(io_err("writing", dest))
}

/// Removes what a VM rootfs does not need: /boot (the kernel lives outside as its own
/// blob), its symlinks in /, apt's caches and lists, logs of the build.
pub fn strip(root: &Path) -> Result<()> {
    let remove_dir = |rel: &str| -> Result<()> {
        let p = root.join(rel);
        match std::fs::remove_dir_all(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("removing", &p)(e)),
            _ => Ok(()),
        }
    };
    let empty_dir = |rel: &str| -> Result<()> {
        let p = root.join(rel);
        let Ok(entries) = std::fs::read_dir(&p) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let res = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            res.map_err(io_err("removing", &path))?;
        }
        Ok(())
    };
    remove_dir("boot")?;
    for link in ["vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"] {
        let p = root.join(link);
        if p.symlink_metadata()
            .map(|m| m.is_symlink())
            .unwrap_or(false)
        {
            std::fs::remove_file(&p).map_err(io_err("removing", &p))?;
        }
    }
    for dir in [
        "var/cache/apt",
        "var/lib/apt/lists",
        "var/log",
        "tmp",
        "var/tmp",
    ] {
        empty_dir(dir)?;
    }
    for old in [
        "var/cache/debconf/config.dat-old",
        "var/cache/debconf/templates.dat-old",
    ] {
        let p = root.join(old);
        if p.is_file() {
            std::fs::remove_file(&p).map_err(io_err("removing", &p))?;
        }
    }
    Ok(())
}

/// Squashes the rootfs directory into `dest`, keeping owners, modes and xattrs (file
/// capabilities) as installed.
pub fn make_squashfs(root: &Path, dest: &Path, compression: SquashfsCompression) -> Result<()> {
    run(Command::new("mksquashfs")
        .arg(root)
        .arg(dest)
        .args(["-noappend", "-no-progress", "-quiet", "-b", "256K"])
        .args(compression.mksquashfs_args()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_are_sorted_deduplicated_and_checked() {
        let spec = RootfsSpec::new(
            Arch::X86_64,
            "bookworm",
            "http://deb.debian.org/debian",
            ["podman".to_string(), "crun".into(), "podman".into()],
            vec![],
        )
        .unwrap();
        assert_eq!(spec.packages, ["crun", "podman"]);
        for bad in ["", "a,b", "--evil", "a b"] {
            assert!(
                RootfsSpec::new(Arch::X86_64, "s", "m", [bad.to_string()], vec![]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn mmdebstrap_line_uses_the_debian_arch() {
        let spec = RootfsSpec::new(
            Arch::Aarch64,
            "bookworm",
            "http://deb.debian.org/debian",
            ["kmod".to_string(), "crun".into()],
            vec![],
        )
        .unwrap();
        let cmd = mmdebstrap_command(&spec, Path::new("/t"));
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"--arch=arm64".to_string()), "{args:?}");
        assert!(
            args.contains(&"--include=crun,kmod".to_string()),
            "{args:?}"
        );
        assert_eq!(
            &args[args.len() - 3..],
            ["bookworm", "/t", "http://deb.debian.org/debian"]
        );
    }

    #[test]
    fn files_replace_symlinks_instead_of_following_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(&outside, b"host file").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc/resolv.conf")).unwrap();
        write_files(
            &root,
            &[RootfsFile {
                path: "/etc/resolv.conf".into(),
                mode: 0o644,
                contents: Some(String::new()),
            }],
        )
        .unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"host file");
        let meta = root.join("etc/resolv.conf").symlink_metadata().unwrap();
        assert!(meta.is_file() && meta.len() == 0);
    }

    #[test]
    fn a_directory_entry_that_is_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("var/lib")).unwrap();
        let err = write_files(
            &root,
            &[RootfsFile {
                path: "/var/lib".into(),
                mode: 0o700,
                contents: None,
            }],
        )
        .unwrap_err();
        assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
    }

    #[test]
    fn symlinked_parents_and_dotdot_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink("/", root.join("etc")).unwrap();
        assert!(guest_path(&root, "/etc/hosts").is_err());
        assert!(guest_path(&root, "/../x").is_err());
        assert_eq!(guest_path(&root, "/etc").unwrap(), root.join("etc"));
    }

    #[test]
    fn kernel_is_found_and_boot_is_stripped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib/modules/6.1.0-9-cloud-amd64")).unwrap();
        std::fs::write(
            root.join("usr/lib/modules/6.1.0-9-cloud-amd64/modules.dep"),
            "",
        )
        .unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::write(root.join("boot/vmlinuz-6.1.0-9-cloud-amd64"), b"bz").unwrap();
        std::os::unix::fs::symlink("boot/vmlinuz-6.1.0-9-cloud-amd64", root.join("vmlinuz"))
            .unwrap();
        let k = find_kernel(root).unwrap();
        assert_eq!(k.version, "6.1.0-9-cloud-amd64");
        let out = root.join("bzImage");
        extract_kernel(&k, Arch::X86_64, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"bz");
        strip(root).unwrap();
        assert!(!root.join("boot").exists());
        assert!(root.join("vmlinuz").symlink_metadata().is_err());
        assert!(root
            .join("usr/lib/modules/6.1.0-9-cloud-amd64/modules.dep")
            .exists());
    }
}
