//! The tool identity (`vdkr` for docker, `vpdmn` for podman) and the per-user paths and
//! environment-variable names derived from it, kept identical to the old shell tools so that
//! existing `~/.vdkr`, `~/.config/vpdmn/config` and `VDKR_*` settings keep working.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::program_name::RuntimeAlias;

/// Who we are for this invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// The user-facing name, also the state-dir and config-dir name: `vdkr`, `vpdmn`.
    pub name: String,
    /// The runtime plugin's name: `docker`, `podman`.
    pub runtime: String,
}

impl Tool {
    pub fn new(name: &str, runtime: &str) -> Self {
        Tool {
            name: name.to_string(),
            runtime: runtime.to_string(),
        }
    }

    /// `VDKR` for vdkr; each tool reads only its own prefix (the old runner's cross-talk
    /// between VDKR_* and VPDMN_* is a bug we do not copy).
    pub fn env_prefix(&self) -> String {
        self.name.to_ascii_uppercase().replace('-', "_")
    }

    /// `VDKR_<suffix>`.
    pub fn env_var_name(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.env_prefix())
    }

    /// The value of `VDKR_<suffix>`, if set and valid UTF-8.
    pub fn env_var(&self, suffix: &str) -> Option<String> {
        std::env::var(self.env_var_name(suffix)).ok()
    }

    /// `~/.vdkr`: the default root holding one state dir per arch or instance.
    pub fn default_state_root(&self) -> anyhow::Result<PathBuf> {
        Ok(home_dir()?.join(format!(".{}", self.name)))
    }

    /// `~/.config/vdkr`: where the old tool kept its `config` file (it ignored XDG, and so do
    /// we, so that an existing config is found).
    pub fn default_config_dir(&self) -> anyhow::Result<PathBuf> {
        Ok(home_dir()?.join(".config").join(&self.name))
    }
}

/// The argv[0] names of the runtimes we ship, used until the runtime plugins' declared
/// aliases are wired in (then the plugin list replaces this table).
pub fn builtin_runtime_aliases() -> Vec<RuntimeAlias> {
    vec![
        RuntimeAlias::new("vdkr", "docker"),
        RuntimeAlias::new("vpdmn", "podman"),
    ]
}

/// Finds the tool for `--runtime X`, where X may be a runtime name (`docker`) or a tool
/// name (`vdkr`). The first alias a runtime declares is its tool name.
pub fn tool_for_runtime(wanted: &str, aliases: &[RuntimeAlias]) -> anyhow::Result<Tool> {
    let found = aliases
        .iter()
        .find(|a| a.runtime == wanted)
        .or_else(|| aliases.iter().find(|a| a.alias == wanted));
    match found {
        Some(a) => Ok(Tool::new(&a.alias, &a.runtime)),
        None => {
            let mut names: Vec<&str> = aliases.iter().map(|a| a.runtime.as_str()).collect();
            names.dedup();
            bail!(
                "unknown runtime '{wanted}'; valid runtimes: {}",
                names.join(", ")
            )
        }
    }
}

/// $HOME, or the passwd entry when HOME is unset (e.g. under some service managers).
pub fn home_dir() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .context("looking up the home directory")?
        .context("HOME is not set and the user has no passwd entry")?;
    Ok(user.dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_the_tool() {
        let t = Tool::new("vpdmn", "podman");
        assert_eq!(t.env_var_name("ARCH"), "VPDMN_ARCH");
        assert_eq!(t.env_var_name("STATE_DIR"), "VPDMN_STATE_DIR");
    }

    #[test]
    fn runtime_lookup_accepts_runtime_or_tool_name() {
        let aliases = builtin_runtime_aliases();
        assert_eq!(
            tool_for_runtime("docker", &aliases).unwrap(),
            Tool::new("vdkr", "docker")
        );
        assert_eq!(
            tool_for_runtime("vpdmn", &aliases).unwrap(),
            Tool::new("vpdmn", "podman")
        );
        let err = tool_for_runtime("lxc", &aliases).unwrap_err().to_string();
        assert_eq!(err, "unknown runtime 'lxc'; valid runtimes: docker, podman");
    }
}
