//! The precedence chain that picks the target architecture (the `Arch` type and its facts are
//! the `vcontainer-arch` crate's).
//!
//! The chain is the old tool's (docs/old-tool-cli.md): `--arch` > executable-name suffix >
//! `<PREFIX>_ARCH` > config `arch=` > legacy `<config dir>/arch` file > host. Unlike the old
//! tool, every step is validated, so `-a riscv64` fails here with a clear message instead of
//! deep in the VM runner.

use std::fmt;

/// The type and its per-arch facts live in the `vcontainer-arch` crate, shared with the guest
/// image builder; this module adds only the host's choice of one.
pub use vcontainer_arch::{Arch, UnknownArch, VALID_ARCH_NAMES};

/// Which step of the chain decided; shown in `-v` output so users can see why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchSource {
    Flag,
    ProgramName,
    /// The environment variable's name, e.g. `VPDMN_ARCH`.
    Env(String),
    ConfigFile,
    LegacyArchFile,
    Host,
}

impl fmt::Display for ArchSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchSource::Flag => f.write_str("--arch"),
            ArchSource::ProgramName => f.write_str("program name"),
            ArchSource::Env(name) => write!(f, "${name}"),
            ArchSource::ConfigFile => f.write_str("config file"),
            ArchSource::LegacyArchFile => f.write_str("legacy arch file"),
            ArchSource::Host => f.write_str("host"),
        }
    }
}

/// Everything that may name an arch, as raw text, highest precedence first. Raw text (not
/// `Arch`) so that a bad value at a step is reported with where it came from.
#[derive(Debug, Clone, Default)]
pub struct ArchInputs {
    pub flag: Option<String>,
    /// Already validated by the program-name parser.
    pub program_name: Option<Arch>,
    /// (variable name, value) of the tool's own `<PREFIX>_ARCH`.
    pub env: Option<(String, String)>,
    pub config: Option<String>,
    pub legacy_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchError {
    #[error("--arch: {0}")]
    Flag(UnknownArch),
    #[error("${var}: {reason}")]
    Env { var: String, reason: UnknownArch },
    #[error("config key 'arch': {0}")]
    Config(UnknownArch),
    #[error("legacy arch file: {0}")]
    LegacyFile(UnknownArch),
    #[error("host architecture is not supported ({0}); choose one with --arch")]
    Host(UnknownArch),
}

/// Applies the precedence chain. The first step that is set decides; a bad value at that
/// step is an error (it is not skipped), because silently falling through would run the
/// wrong arch.
pub fn resolve_arch(inputs: &ArchInputs) -> Result<(Arch, ArchSource), ArchError> {
    if let Some(flag) = &inputs.flag {
        return flag
            .parse()
            .map(|a| (a, ArchSource::Flag))
            .map_err(ArchError::Flag);
    }
    if let Some(arch) = inputs.program_name {
        return Ok((arch, ArchSource::ProgramName));
    }
    if let Some((var, value)) = &inputs.env {
        let value = value.trim();
        if !value.is_empty() {
            return value
                .parse()
                .map(|a| (a, ArchSource::Env(var.clone())))
                .map_err(|reason| ArchError::Env {
                    var: var.clone(),
                    reason,
                });
        }
    }
    if let Some(value) = &inputs.config {
        return value
            .parse()
            .map(|a| (a, ArchSource::ConfigFile))
            .map_err(ArchError::Config);
    }
    if let Some(value) = &inputs.legacy_file {
        let value = value.trim();
        if !value.is_empty() {
            return value
                .parse()
                .map(|a| (a, ArchSource::LegacyArchFile))
                .map_err(ArchError::LegacyFile);
        }
    }
    Arch::host()
        .map(|a| (a, ArchSource::Host))
        .map_err(ArchError::Host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_set() -> ArchInputs {
        ArchInputs {
            flag: Some("x86_64".into()),
            program_name: Some(Arch::Aarch64),
            env: Some(("VDKR_ARCH".into(), "x86_64".into())),
            config: Some("aarch64".into()),
            legacy_file: Some("x86_64\n".into()),
        }
    }

    #[test]
    fn flag_beats_everything() {
        assert_eq!(
            resolve_arch(&all_set()).unwrap(),
            (Arch::X86_64, ArchSource::Flag)
        );
    }

    #[test]
    fn program_name_beats_env_config_and_host() {
        let inputs = ArchInputs {
            flag: None,
            ..all_set()
        };
        assert_eq!(
            resolve_arch(&inputs).unwrap(),
            (Arch::Aarch64, ArchSource::ProgramName)
        );
    }

    #[test]
    fn env_beats_config() {
        let inputs = ArchInputs {
            flag: None,
            program_name: None,
            ..all_set()
        };
        assert_eq!(
            resolve_arch(&inputs).unwrap(),
            (Arch::X86_64, ArchSource::Env("VDKR_ARCH".into()))
        );
    }

    #[test]
    fn empty_env_is_unset() {
        let inputs = ArchInputs {
            flag: None,
            program_name: None,
            env: Some(("VDKR_ARCH".into(), " ".into())),
            ..all_set()
        };
        assert_eq!(
            resolve_arch(&inputs).unwrap(),
            (Arch::Aarch64, ArchSource::ConfigFile)
        );
    }

    #[test]
    fn config_beats_legacy_file() {
        let inputs = ArchInputs {
            flag: None,
            program_name: None,
            env: None,
            ..all_set()
        };
        assert_eq!(
            resolve_arch(&inputs).unwrap(),
            (Arch::Aarch64, ArchSource::ConfigFile)
        );
    }

    #[test]
    fn legacy_file_beats_host_and_is_trimmed() {
        let inputs = ArchInputs {
            legacy_file: Some(" aarch64\n".into()),
            ..ArchInputs::default()
        };
        assert_eq!(
            resolve_arch(&inputs).unwrap(),
            (Arch::Aarch64, ArchSource::LegacyArchFile)
        );
    }

    #[test]
    fn host_is_the_last_resort() {
        let (arch, source) = resolve_arch(&ArchInputs::default()).unwrap();
        assert_eq!(source, ArchSource::Host);
        assert_eq!(arch.as_str(), std::env::consts::ARCH);
    }

    #[test]
    fn bad_value_at_the_deciding_step_is_an_error_not_a_fallthrough() {
        let inputs = ArchInputs {
            flag: Some("riscv64".into()),
            ..all_set()
        };
        let err = resolve_arch(&inputs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--arch: unknown architecture 'riscv64'; valid values: x86_64, aarch64 (aliases: amd64, arm64)"
        );
        let inputs = ArchInputs {
            env: Some(("VPDMN_ARCH".into(), "mips".into())),
            ..ArchInputs::default()
        };
        assert!(resolve_arch(&inputs)
            .unwrap_err()
            .to_string()
            .starts_with("$VPDMN_ARCH: unknown architecture 'mips'"));
        let inputs = ArchInputs {
            config: Some("ppc".into()),
            ..ArchInputs::default()
        };
        assert!(matches!(
            resolve_arch(&inputs).unwrap_err(),
            ArchError::Config(_)
        ));
    }
}
