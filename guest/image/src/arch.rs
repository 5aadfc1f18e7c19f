//! Guest architectures and what each one means for Debian and for QEMU.

use crate::error::Error;
use std::fmt;
use std::str::FromStr;

/// The guest architectures the project supports (names as in TEAM.md: x86_64, aarch64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The project's name for the arch, also the blob directory name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's architecture name, passed to mmdebstrap --arch.
    pub fn debian_arch(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The kernel blob's file name: QEMU's -kernel takes a bzImage on x86 and a raw Image on arm64.
    pub fn kernel_file_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "bzImage",
            Arch::Aarch64 => "Image",
        }
    }

    /// Debian's cloud kernel: virtio drivers, vsock, overlay and netfilter, without the
    /// thousands of hardware drivers of the generic kernel.
    pub fn kernel_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "linux-image-cloud-amd64",
            Arch::Aarch64 => "linux-image-cloud-arm64",
        }
    }

    /// The arch of the machine this builder runs on, when it is one we support.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            _ => None,
        }
    }
}

impl FromStr for Arch {
    type Err = Error;

    /// Accepts both the project's names and the Debian/OCI ones.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            other => Err(Error::UnknownArch(other.to_string())),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for (input, arch, deb, kernel) in [
            ("x86_64", Arch::X86_64, "amd64", "bzImage"),
            ("amd64", Arch::X86_64, "amd64", "bzImage"),
            ("aarch64", Arch::Aarch64, "arm64", "Image"),
            ("arm64", Arch::Aarch64, "arm64", "Image"),
        ] {
            let parsed: Arch = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed, arch);
            assert_eq!(parsed.debian_arch(), deb);
            assert_eq!(parsed.kernel_file_name(), kernel);
            assert!(parsed.kernel_package().ends_with(deb));
        }
        assert!("riscv64".parse::<Arch>().is_err());
    }
}
