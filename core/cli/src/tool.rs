//! The tool identity (`vdkr` for docker, `vpdmn` for podman) and the per-user paths and
//! environment-variable names derived from it, kept identical to the old shell tools so that
//! existing `~/.vdkr`, `~/.config/vpdmn/config` and `VDKR_*` settings keep working.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::program_name::RuntimeAlias;

/// Who we are for this invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// The user-facing name, also the config-dir name: `vdkr`, `vpdmn`.
    pub name: String,
    /// The runtime plugin's name: `docker`, `podman`.
    pub runtime: String,
    /// The state root's name under $HOME: `.vdkr`.
    pub state_dir_name: String,
    /// `VDKR`: each tool reads only its own prefix (the old runner's cross-talk between
    /// VDKR_* and VPDMN_* is a bug we do not copy).
    pub env_prefix: String,
    /// The runtime's commands with their help lines, from its plugin's spec; None when no
    /// plugin provides the runtime (then any name is passed on, and loading the plugin says
    /// what is missing).
    pub commands: Option<Vec<(String, String)>>,
}

impl Tool {
    /// A tool with the conventional derived names (`.vdkr`, `VDKR`).
    pub fn new(name: &str, runtime: &str) -> Self {
        Tool {
            name: name.to_string(),
            runtime: runtime.to_string(),
            state_dir_name: format!(".{name}"),
            env_prefix: name.to_ascii_uppercase().replace('-', "_"),
            commands: None,
        }
    }

    /// Whether the runtime's plugin plans `command` (always, when its plugin is not found).
    pub fn accepts(&self, command: &str) -> bool {
        self.commands
            .as_ref()
            .is_none_or(|c| c.iter().any(|(name, _)| name == command))
    }

    /// `VDKR_<suffix>`.
    pub fn env_var_name(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.env_prefix)
    }

    /// The value of `VDKR_<suffix>`, if set and valid UTF-8.
    pub fn env_var(&self, suffix: &str) -> Option<String> {
        std::env::var(self.env_var_name(suffix)).ok()
    }

    /// `~/.vdkr`: the default root holding one state dir per arch or instance.
    pub fn default_state_root(&self) -> anyhow::Result<PathBuf> {
        Ok(home_dir()?.join(&self.state_dir_name))
    }

    /// `~/.config/vdkr`: where the old tool kept its `config` file (it ignored XDG, and so do
    /// we, so that an existing config is found).
    pub fn default_config_dir(&self) -> anyhow::Result<PathBuf> {
        Ok(home_dir()?.join(".config").join(&self.name))
    }
}

/// The runtimes shipped with vcontainer, as (tool, runtime plugin name): the loader's
/// fallback aliases when their plugins are not found. The first is the default runtime.
const BUILTIN: &[(&str, &str)] = &[("vdkr", "docker"), ("vpdmn", "podman")];

/// The runtimes the front knows, with the argv[0] names each answers to.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    tools: Vec<Tool>,
    aliases: Vec<RuntimeAlias>,
}

impl Catalog {
    /// The runtimes we ship, for when their plugins are not (yet) found: the front's own
    /// commands (vconfig, vstorage, clean) work without plugins.
    pub fn builtin() -> Self {
        let mut catalog = Catalog::default();
        for (tool, runtime) in BUILTIN {
            catalog.add(Tool::new(tool, runtime), &[runtime]);
        }
        catalog
    }

    /// The runtime a caller that names none gets: the first built-in one, upstream
    /// vrunner's `--runtime` default.
    pub fn default_runtime() -> &'static str {
        BUILTIN[0].1
    }

    /// The runtime plugins' own names and aliases first (their specs name the tool, state
    /// dir and env prefix), then built-in entries for runtimes no plugin provides.
    pub fn from_plugins(set: &crate::plugins::PluginSet) -> Self {
        let mut catalog = Catalog::default();
        for loaded in &set.runtimes {
            let Some(runtime) = loaded.runtime() else {
                continue;
            };
            let spec = runtime.spec();
            let tool = Tool {
                name: spec.tool_name.to_string(),
                runtime: loaded.name.clone(),
                state_dir_name: spec.state_dir_name.to_string(),
                env_prefix: spec.env_prefix.to_string(),
                commands: Some(
                    spec.commands
                        .iter()
                        .map(|c| (c.name.to_string(), c.about.to_string()))
                        .collect(),
                ),
            };
            let aliases: Vec<&str> = loaded.aliases.iter().map(String::as_str).collect();
            catalog.add(tool, &aliases);
        }
        for tool in Catalog::builtin().tools {
            if catalog.tool(&tool.runtime).is_none() {
                catalog.add(tool.clone(), &[&tool.runtime]);
            }
        }
        catalog
    }

    /// Adds a tool answering to its own name and `aliases`; an alias already claimed by an
    /// earlier tool stays with it.
    fn add(&mut self, tool: Tool, aliases: &[&str]) {
        for alias in std::iter::once(tool.name.as_str()).chain(aliases.iter().copied()) {
            if !self.aliases.iter().any(|a| a.alias == alias) {
                self.aliases.push(RuntimeAlias::new(alias, &tool.runtime));
            }
        }
        self.tools.push(tool);
    }

    /// Every argv[0] name and the runtime it selects.
    pub fn aliases(&self) -> &[RuntimeAlias] {
        &self.aliases
    }

    /// Every runtime's tool, in catalog order.
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// The runtimes, in catalog order.
    pub fn runtimes(&self) -> Vec<String> {
        self.tools.iter().map(|t| t.runtime.clone()).collect()
    }

    /// The tool of a runtime (`docker` -> vdkr).
    pub fn tool(&self, runtime: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| t.runtime == runtime)
    }

    /// Whether some runtime accepts `command` (for a runtime command given with no runtime
    /// selected: it then needs one, rather than being unknown).
    pub fn any_accepts(&self, command: &str) -> bool {
        self.tools.iter().any(|t| t.accepts(command))
    }

    /// The tool for `--runtime X`, where X may be a runtime (`docker`), a tool (`vdkr`) or
    /// any alias.
    pub fn tool_for(&self, wanted: &str) -> anyhow::Result<Tool> {
        let runtime = self
            .aliases
            .iter()
            .find(|a| a.alias == wanted)
            .map(|a| a.runtime.as_str())
            .unwrap_or(wanted);
        match self.tool(runtime) {
            Some(t) => Ok(t.clone()),
            None => bail!(
                "unknown runtime '{wanted}'; valid runtimes: {}",
                self.runtimes().join(", ")
            ),
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
        assert_eq!(t.state_dir_name, ".vpdmn");
    }

    #[test]
    fn runtime_lookup_accepts_runtime_tool_or_alias() {
        let catalog = Catalog::builtin();
        assert_eq!(
            catalog.tool_for("docker").unwrap(),
            Tool::new("vdkr", "docker")
        );
        assert_eq!(
            catalog.tool_for("vpdmn").unwrap(),
            Tool::new("vpdmn", "podman")
        );
        let err = catalog.tool_for("lxc").unwrap_err().to_string();
        assert_eq!(err, "unknown runtime 'lxc'; valid runtimes: docker, podman");
    }

    #[test]
    fn builtin_aliases_map_names_to_runtimes() {
        let catalog = Catalog::builtin();
        let find = |name: &str| {
            catalog
                .aliases()
                .iter()
                .find(|a| a.alias == name)
                .map(|a| a.runtime.clone())
        };
        assert_eq!(find("vdkr").as_deref(), Some("docker"));
        assert_eq!(find("podman").as_deref(), Some("podman"));
        assert_eq!(find("vcontainer"), None);
    }

    #[test]
    fn plugins_without_runtimes_fall_back_to_builtin() {
        let set = crate::plugins::discover_in(&[]).expect("no dirs");
        let catalog = Catalog::from_plugins(&set);
        assert_eq!(catalog.runtimes(), ["docker", "podman"]);
    }
}
