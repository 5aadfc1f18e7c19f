//! The guest architectures vcontainer supports, and every fact that differs between them: the
//! names users, OCI manifests and Debian use, the kernel file and package, the QEMU program,
//! machine, TCG CPU and the kernel console.
//!
//! Its own small crate because two sides that do not depend on each other need the same type:
//! the host CLI (`core/cli`: arch precedence chain, state dirs, blob lookup, QEMU argv, image
//! platform matching) and the guest image builder (`guest/image`: Debian arch, kernel package).
//! It does not belong in `core/proto`, the host<->guest wire format (no arch crosses the wire),
//! nor in `core/abi`, the plugin interface (plugins receive arch names as strings; an enum there
//! would tie a new arch to the interface version and make every plugin build carry it). So it is
//! a leaf with nothing but `serde` (its names in `vm.json`) and `thiserror`: adding an arch is
//! adding one variant here and answering every `match` the compiler then points at.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An architecture we can build and run a guest for. Serialized (vm.json, the supervisor's
/// config) by its Linux name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Arch {
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "aarch64")]
    Aarch64,
}

/// The Linux names users type; OCI names (amd64/arm64) are accepted as aliases because
/// people copy them from image manifests and the old tool's own hint printed them.
pub const VALID_ARCH_NAMES: &str = "x86_64, aarch64 (aliases: amd64, arm64)";

/// A name that is none of [`VALID_ARCH_NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown architecture '{given}'; valid values: {VALID_ARCH_NAMES}")]
pub struct UnknownArch {
    pub given: String,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The Linux name (`uname -m`), used for state dirs, blob dirs, QEMU binaries and the
    /// `-x86_64`/`-aarch64` program-name suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The OCI/Go name, used only when matching image manifests.
    pub fn oci_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The OCI architectures a guest of this arch runs, best first: its own, then the 32-bit
    /// one its CPU runs in compat mode (AArch32 at EL0 under QEMU's `max` CPU with the Debian
    /// kernel's CONFIG_COMPAT; i386 under CONFIG_IA32_EMULATION), as the Yocto classes map
    /// 32-bit arm and x86 targets onto these guests (docs/aarch64.md).
    pub fn oci_names_run(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["amd64", "386"],
            Arch::Aarch64 => &["arm64", "arm"],
        }
    }

    /// Whether a guest of this arch runs images of the OCI architecture `oci`; the rank
    /// (0 = native) orders the candidates of a multi-arch index.
    pub fn runs_oci_arch(self, oci: &str) -> Option<usize> {
        self.oci_names_run().iter().position(|name| *name == oci)
    }

    /// The guest arch whose native OCI architecture is `oci` or which runs it in compat mode
    /// (`arm` -> aarch64, `386` -> x86_64): the `--arch` to suggest for such an image.
    pub fn for_oci_arch(oci: &str) -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.runs_oci_arch(oci) == Some(0))
            .or_else(|| {
                Arch::ALL
                    .into_iter()
                    .find(|a| a.runs_oci_arch(oci).is_some())
            })
    }

    /// The architecture this binary runs on. A host we cannot emulate a guest for is an
    /// error only when nothing else chose an arch.
    pub fn host() -> Result<Arch, UnknownArch> {
        std::env::consts::ARCH.parse()
    }

    /// Debian's architecture name (`mmdebstrap --arch`, package suffixes).
    pub fn debian_arch(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
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

    /// The kernel blob's file name: QEMU's `-kernel` takes a bzImage on x86 and a raw Image
    /// on arm64.
    pub fn kernel_file_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "bzImage",
            Arch::Aarch64 => "Image",
        }
    }

    /// The QEMU system emulator for a guest of this arch.
    pub fn qemu_program(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The QEMU machine type: the virtio-only ones, without legacy ISA/PCI baggage.
    pub fn qemu_machine(self) -> &'static str {
        match self {
            Arch::X86_64 => "q35",
            Arch::Aarch64 => "virt",
        }
    }

    /// The `-cpu` under TCG (under KVM it is always `host`). `max` enables every feature TCG
    /// emulates; a57 is what the old tool used but it lacks features newer arm64 kernels and
    /// binaries like to see. The implementation-defined pointer authentication algorithm is
    /// much cheaper to emulate than QARMA (QEMU's own advice for TCG speed).
    pub fn qemu_tcg_cpu(self) -> &'static str {
        match self {
            Arch::X86_64 => "max",
            Arch::Aarch64 => "max,pauth-impdef=on",
        }
    }

    /// The serial console device the kernel writes to (`console=` on its command line): the
    /// 16550 UART of q35, the PL011 of `virt`.
    pub fn console_device(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }
}

impl FromStr for Arch {
    type Err = UnknownArch;

    /// The Linux names, `x86-64`, and the OCI/Debian names; case-sensitive like the kernel.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "x86_64" | "amd64" | "x86-64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            _ => Err(UnknownArch {
                given: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for (input, arch, deb, kernel) in [
            ("x86_64", Arch::X86_64, "amd64", "bzImage"),
            ("x86-64", Arch::X86_64, "amd64", "bzImage"),
            ("amd64", Arch::X86_64, "amd64", "bzImage"),
            ("aarch64", Arch::Aarch64, "arm64", "Image"),
            ("arm64", Arch::Aarch64, "arm64", "Image"),
        ] {
            let parsed: Arch = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed, arch);
            assert_eq!(parsed.debian_arch(), deb);
            assert_eq!(parsed.oci_name(), deb);
            assert_eq!(parsed.kernel_file_name(), kernel);
            assert!(parsed.kernel_package().ends_with(deb));
            assert_eq!(parsed.to_string().parse::<Arch>(), Ok(parsed));
        }
        assert_eq!(
            "riscv64".parse::<Arch>().unwrap_err().to_string(),
            "unknown architecture 'riscv64'; valid values: x86_64, aarch64 (aliases: amd64, arm64)"
        );
    }

    #[test]
    fn arch_names_are_case_sensitive_like_the_kernel() {
        assert!("X86_64".parse::<Arch>().is_err());
    }

    #[test]
    fn guests_run_their_own_and_their_32_bit_oci_arch_only() {
        assert_eq!(Arch::Aarch64.runs_oci_arch("arm64"), Some(0));
        assert_eq!(Arch::Aarch64.runs_oci_arch("arm"), Some(1));
        assert_eq!(Arch::Aarch64.runs_oci_arch("amd64"), None);
        assert_eq!(Arch::X86_64.runs_oci_arch("386"), Some(1));
        assert_eq!(Arch::X86_64.runs_oci_arch("arm"), None);
        assert_eq!(Arch::for_oci_arch("arm"), Some(Arch::Aarch64));
        assert_eq!(Arch::for_oci_arch("386"), Some(Arch::X86_64));
        assert_eq!(Arch::for_oci_arch("amd64"), Some(Arch::X86_64));
        assert_eq!(Arch::for_oci_arch("riscv64"), None);
    }

    #[test]
    fn qemu_facts() {
        assert_eq!(Arch::X86_64.qemu_program(), "qemu-system-x86_64");
        assert_eq!(Arch::Aarch64.qemu_program(), "qemu-system-aarch64");
        assert_eq!(Arch::X86_64.qemu_machine(), "q35");
        assert_eq!(Arch::Aarch64.qemu_machine(), "virt");
        assert_eq!(Arch::X86_64.console_device(), "ttyS0");
        assert_eq!(Arch::Aarch64.console_device(), "ttyAMA0");
        for arch in Arch::ALL {
            assert!(arch.qemu_program().ends_with(arch.as_str()));
            assert!(arch.qemu_tcg_cpu().starts_with("max"));
        }
    }

    #[test]
    fn serializes_by_linux_name() {
        let json = serde_json::to_string(&Arch::ALL).expect("serializes");
        assert_eq!(json, r#"["x86_64","aarch64"]"#);
        let back: Vec<Arch> = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, Arch::ALL);
    }
}
