//! KVM or TCG.
//!
//! A `/dev/kvm` node existing proves nothing: CI machines expose one that hangs a stock kernel
//! and have no vmx/svm flag. So KVM is used only when every check below passes, and the reason
//! for the choice is kept so that `doctor` and `-v` can say why a run is slow.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use super::Arch;

/// The accelerator QEMU is started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// The decision and the human-readable reason behind it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

/// What the decision looks at, gathered from the host (or injected by tests).
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// `std::env::consts::ARCH` of this host.
    pub host_arch: String,
    /// Contents of /proc/cpuinfo (None when unreadable).
    pub cpuinfo: Option<String>,
    /// Ok when /dev/kvm opened read-write, else why not.
    pub kvm_open: Result<(), String>,
    /// Answer of KVM_GET_API_VERSION on /dev/kvm (only asked on non-x86 hosts).
    pub kvm_api_version: Option<i32>,
}

/// The stable KVM API version every KVM since 2.6.22 reports.
const KVM_API_VERSION: i32 = 12;

impl HostFacts {
    /// Probe this host.
    pub fn probe() -> Self {
        let host_arch = std::env::consts::ARCH.to_string();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok();
        let kvm = OpenOptions::new().read(true).write(true).open("/dev/kvm");
        let (kvm_open, kvm_api_version) = match kvm {
            Ok(file) => {
                // Only asked where cpuinfo has no virtualisation flag to look at (arm64):
                // on x86 the flag check is what tells a working KVM from a broken one.
                let api = if host_arch == "x86_64" {
                    None
                } else {
                    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int.
                    let v = unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION) };
                    Some(v)
                };
                (Ok(()), api)
            }
            Err(e) => (
                Err(format!("/dev/kvm cannot be opened read-write: {e}")),
                None,
            ),
        };
        HostFacts {
            host_arch,
            cpuinfo,
            kvm_open,
            kvm_api_version,
        }
    }
}

/// `_IO(KVMIO, 0x00)`.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;

/// Choose the accelerator for a guest of `guest` arch on this host.
pub fn choose(guest: Arch, no_kvm: bool) -> AccelChoice {
    decide(&HostFacts::probe(), guest, no_kvm)
}

/// The pure decision, testable with injected facts.
pub fn decide(facts: &HostFacts, guest: Arch, no_kvm: bool) -> AccelChoice {
    let tcg = |reason: String| AccelChoice {
        accel: Accel::Tcg,
        reason,
    };
    if no_kvm {
        return tcg("--no-kvm given".into());
    }
    if facts.host_arch != guest.as_str() {
        return tcg(format!(
            "guest arch {} differs from host arch {}",
            guest.as_str(),
            facts.host_arch
        ));
    }
    if let Err(why) = &facts.kvm_open {
        return tcg(why.clone());
    }
    match facts.host_arch.as_str() {
        "x86_64" => {
            let Some(cpuinfo) = &facts.cpuinfo else {
                return tcg("/proc/cpuinfo unreadable, cannot check for vmx/svm".into());
            };
            if cpu_has_virt_flag(cpuinfo) {
                AccelChoice {
                    accel: Accel::Kvm,
                    reason: "/dev/kvm usable and the CPU has vmx/svm".into(),
                }
            } else {
                tcg("/dev/kvm exists but the CPU advertises no vmx/svm flag (nested virtualisation off)".into())
            }
        }
        _ => match facts.kvm_api_version {
            Some(KVM_API_VERSION) => AccelChoice {
                accel: Accel::Kvm,
                reason: "/dev/kvm usable (KVM_GET_API_VERSION = 12)".into(),
            },
            Some(v) => tcg(format!(
                "/dev/kvm answered KVM_GET_API_VERSION with {v}, not 12"
            )),
            None => tcg("KVM_GET_API_VERSION was not answered".into()),
        },
    }
}

/// True when a `flags` line of cpuinfo lists vmx (Intel) or svm (AMD) as a whole word.
fn cpu_has_virt_flag(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .filter_map(|l| l.split_once(':'))
        .any(|(_, flags)| flags.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(arch: &str, flags: &str) -> HostFacts {
        HostFacts {
            host_arch: arch.into(),
            cpuinfo: Some(format!("processor\t: 0\nflags\t\t: fpu {flags} sse2\n")),
            kvm_open: Ok(()),
            kvm_api_version: None,
        }
    }

    #[test]
    fn kvm_when_everything_holds() {
        let c = decide(&facts("x86_64", "vmx"), Arch::X86_64, false);
        assert_eq!(c.accel, Accel::Kvm);
        let c = decide(&facts("x86_64", "svm"), Arch::X86_64, false);
        assert_eq!(c.accel, Accel::Kvm);
    }

    #[test]
    fn no_virt_flag_means_tcg_even_with_dev_kvm() {
        let c = decide(&facts("x86_64", "hypervisor"), Arch::X86_64, false);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("vmx/svm"), "{}", c.reason);
        // a flag that merely contains the letters does not count
        let c = decide(&facts("x86_64", "vmxx svm_lock"), Arch::X86_64, false);
        assert_eq!(c.accel, Accel::Tcg);
    }

    #[test]
    fn no_kvm_flag_and_cross_arch_force_tcg() {
        let c = decide(&facts("x86_64", "vmx"), Arch::X86_64, true);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("--no-kvm"));
        let c = decide(&facts("x86_64", "vmx"), Arch::Aarch64, false);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("differs"), "{}", c.reason);
    }

    #[test]
    fn unopenable_dev_kvm_means_tcg_with_reason() {
        let mut f = facts("x86_64", "vmx");
        f.kvm_open = Err("/dev/kvm cannot be opened read-write: Permission denied".into());
        let c = decide(&f, Arch::X86_64, false);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("Permission denied"));
    }

    #[test]
    fn aarch64_host_uses_the_api_version_ioctl() {
        let mut f = facts("aarch64", "");
        f.kvm_api_version = Some(12);
        assert_eq!(decide(&f, Arch::Aarch64, false).accel, Accel::Kvm);
        f.kvm_api_version = Some(-1);
        assert_eq!(decide(&f, Arch::Aarch64, false).accel, Accel::Tcg);
        f.kvm_api_version = None;
        assert_eq!(decide(&f, Arch::Aarch64, false).accel, Accel::Tcg);
    }

    #[test]
    fn this_host_is_tcg() {
        // This machine has /dev/kvm but no vmx/svm: the probe must not pick KVM.
        let f = HostFacts::probe();
        let has_flag = f.cpuinfo.as_deref().map(cpu_has_virt_flag).unwrap_or(false);
        if !has_flag && f.host_arch == "x86_64" {
            assert_eq!(choose(Arch::X86_64, false).accel, Accel::Tcg);
        }
    }
}
