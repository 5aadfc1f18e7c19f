//! What the name the binary was started as (argv[0]) says: which runtime, which arch.
//!
//! `vdkr`, `vpdmn-aarch64`, ... are links to one binary. The alias list comes from the
//! runtime plugins (each declares its argv[0] names), so this module takes it as input and
//! knows no runtime itself.

use std::path::Path;

use crate::arch::{Arch, UnknownArch};

/// One argv[0] name a runtime answers to, e.g. `vdkr` -> `docker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeAlias {
    pub alias: String,
    pub runtime: String,
}

impl RuntimeAlias {
    pub fn new(alias: &str, runtime: &str) -> Self {
        RuntimeAlias {
            alias: alias.to_string(),
            runtime: runtime.to_string(),
        }
    }
}

/// The runtime-neutral name of the binary; it may carry an arch suffix too.
pub const GENERIC_NAME: &str = "vcontainer";

/// What argv[0] selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramName {
    /// The alias that matched (`vdkr`), or `vcontainer` when no alias did.
    pub tool: String,
    /// `None` for the generic binary: `--runtime` must say.
    pub runtime: Option<String>,
    /// From a `-<arch>` suffix.
    pub arch: Option<Arch>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("program name '{name}': the suffix after '{tool}-' is not an architecture: {reason}")]
pub struct BadProgramName {
    pub name: String,
    pub tool: String,
    pub reason: UnknownArch,
}

/// Parses argv[0]. The longest matching alias wins, so an alias may itself contain `-`.
/// A name that matches no alias is the generic binary (so `vcontainer`, a renamed copy, or
/// a cargo test binary all work); `<alias>-<junk>` is an error because the user clearly meant
/// an arch link and would otherwise silently get the host arch.
pub fn parse_program_name(
    argv0: &str,
    aliases: &[RuntimeAlias],
) -> Result<ProgramName, BadProgramName> {
    let name = Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| argv0.to_string());

    let generic = RuntimeAlias {
        alias: GENERIC_NAME.to_string(),
        runtime: String::new(),
    };
    let mut candidates: Vec<&RuntimeAlias> = aliases.iter().chain([&generic]).collect();
    candidates.sort_by_key(|a| std::cmp::Reverse(a.alias.len()));

    for candidate in candidates {
        let runtime = (!candidate.runtime.is_empty()).then(|| candidate.runtime.clone());
        if name == candidate.alias {
            return Ok(ProgramName {
                tool: candidate.alias.clone(),
                runtime,
                arch: None,
            });
        }
        if let Some(suffix) = name
            .strip_prefix(candidate.alias.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
        {
            let arch = suffix.parse::<Arch>().map_err(|reason| BadProgramName {
                name: name.clone(),
                tool: candidate.alias.clone(),
                reason,
            })?;
            return Ok(ProgramName {
                tool: candidate.alias.clone(),
                runtime,
                arch: Some(arch),
            });
        }
    }
    Ok(ProgramName {
        tool: GENERIC_NAME.to_string(),
        runtime: None,
        arch: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases() -> Vec<RuntimeAlias> {
        vec![
            RuntimeAlias::new("vdkr", "docker"),
            RuntimeAlias::new("vpdmn", "podman"),
        ]
    }

    #[test]
    fn plain_alias_picks_runtime_without_arch() {
        let p = parse_program_name("/usr/bin/vdkr", &aliases()).unwrap();
        assert_eq!(p.tool, "vdkr");
        assert_eq!(p.runtime.as_deref(), Some("docker"));
        assert_eq!(p.arch, None);
    }

    #[test]
    fn arch_suffix_is_parsed() {
        let p = parse_program_name("vpdmn-aarch64", &aliases()).unwrap();
        assert_eq!(p.tool, "vpdmn");
        assert_eq!(p.runtime.as_deref(), Some("podman"));
        assert_eq!(p.arch, Some(Arch::Aarch64));
        let p = parse_program_name("./bin/vdkr-x86_64", &aliases()).unwrap();
        assert_eq!(p.arch, Some(Arch::X86_64));
    }

    #[test]
    fn bad_suffix_is_an_error() {
        let err = parse_program_name("vdkr-riscv64", &aliases()).unwrap_err();
        assert_eq!(err.tool, "vdkr");
        assert!(err.to_string().contains("riscv64"), "{err}");
    }

    #[test]
    fn generic_name_has_no_runtime_but_may_have_arch() {
        let p = parse_program_name("vcontainer", &aliases()).unwrap();
        assert_eq!(p.runtime, None);
        assert_eq!(p.tool, "vcontainer");
        let p = parse_program_name("vcontainer-aarch64", &aliases()).unwrap();
        assert_eq!(p.arch, Some(Arch::Aarch64));
    }

    #[test]
    fn unknown_name_is_generic() {
        // the generic name with a non-arch suffix is rejected like any alias
        assert!(parse_program_name("vcontainer-3f2a9c", &aliases()).is_err());
        let p = parse_program_name("my-renamed-tool", &aliases()).unwrap();
        assert_eq!(p.runtime, None);
        assert_eq!(p.tool, GENERIC_NAME);
    }

    #[test]
    fn longest_alias_wins() {
        let list = vec![
            RuntimeAlias::new("v", "a"),
            RuntimeAlias::new("v-nerd", "containerd"),
        ];
        let p = parse_program_name("v-nerd-aarch64", &list).unwrap();
        assert_eq!(p.runtime.as_deref(), Some("containerd"));
        assert_eq!(p.arch, Some(Arch::Aarch64));
    }
}
