//! One invocation's inputs merged by precedence: global options > `<TOOL>_*` environment >
//! config file > defaults. Everything the front decides (arch, state root, settings) is
//! computed here, so every command sees the same answers.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::arch::{resolve_arch, Arch, ArchInputs, ArchSource};
use crate::cli::GlobalOptions;
use crate::config::{self, ConfigFile};
use crate::state_dir::{absolute_lexical, StateRequest};
use crate::tool::Tool;

/// Effective settings for the VM layer and the runtime plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `-v`, `$<TOOL>_VERBOSE=true` or config `verbose=true`.
    pub verbose: bool,
    /// Seconds a one-shot (non-memres) command may run: `$<TOOL>_TIMEOUT` > config `timeout`.
    pub timeout_secs: u64,
    /// Seconds a memres VM may idle before a clean shutdown; 0 = never (config `idle-timeout`).
    pub idle_timeout_secs: u64,
    /// Start a memres VM on first use (config `auto-daemon`); `--no-daemon` wins for one call.
    pub auto_daemon: bool,
    /// Default registry: `--registry` > config `registry`; None with `--no-registry` or unset.
    pub registry: Option<String>,
    /// Guest memory in MiB (config `memory`).
    pub memory_mib: u64,
    /// Guest vCPUs (config `cpus`).
    pub cpus: u64,
    /// Registry auth file: `--config` > `$VDKR_CONFIG` > `$VPDMN_CONFIG` (both tools read both,
    /// as the old tool did on purpose).
    pub auth_config: Option<PathBuf>,
}

/// The tool, its options and its config file, for one invocation.
#[derive(Debug, Clone)]
pub struct Session {
    pub tool: Tool,
    /// The arch the program name carried (`vdkr-aarch64`).
    pub program_arch: Option<Arch>,
    pub options: GlobalOptions,
    pub config_dir: PathBuf,
    pub config: ConfigFile,
    pub cwd: PathBuf,
}

/// Parses a boolean environment variable the way users write them.
fn env_bool(tool: &Tool, suffix: &str) -> anyhow::Result<bool> {
    match tool.env_var(suffix).as_deref().map(str::trim) {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => bail!(
            "${}: invalid value '{other}'; valid values: true, false",
            tool.env_var_name(suffix)
        ),
    }
}

impl Session {
    /// Reads the config file; a config file that cannot be read is an error (a missing one
    /// is not).
    pub fn new(
        tool: Tool,
        program_arch: Option<Arch>,
        options: GlobalOptions,
    ) -> anyhow::Result<Self> {
        let cwd = std::env::current_dir().context("reading the current directory")?;
        let config_dir = match (&options.config_dir, tool.env_var("CONFIG_DIR")) {
            (Some(dir), _) => absolute_lexical(dir, &cwd),
            (None, Some(dir)) if !dir.is_empty() => absolute_lexical(Path::new(&dir), &cwd),
            _ => tool.default_config_dir()?,
        };
        let config = ConfigFile::load(&config_dir.join("config"))?;
        Ok(Session {
            tool,
            program_arch,
            options,
            config_dir,
            config,
            cwd,
        })
    }

    /// The arch by precedence (docs/old-tool-cli.md "Arch precedence"), validated at the
    /// step that decides.
    pub fn arch(&self) -> anyhow::Result<(Arch, ArchSource)> {
        let env_name = self.tool.env_var_name("ARCH");
        let legacy_path = self.config_dir.join("arch");
        let inputs = ArchInputs {
            flag: self.options.arch.clone(),
            program_name: self.program_arch,
            env: std::env::var(&env_name).ok().map(|v| (env_name, v)),
            config: self.config.get_raw("arch"),
            legacy_file: std::fs::read_to_string(&legacy_path).ok(),
        };
        resolve_arch(&inputs).with_context(|| "choosing the target architecture".to_string())
    }

    /// The dir holding one state dir per arch or instance: `$<TOOL>_STATE_DIR` > config
    /// `state-dir` > `~/.<tool>`.
    pub fn state_root(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = self.tool.env_var("STATE_DIR").filter(|d| !d.is_empty()) {
            return Ok(absolute_lexical(Path::new(&dir), &self.cwd));
        }
        if let Some(dir) = self.config.get("state-dir")? {
            return Ok(PathBuf::from(dir));
        }
        self.tool.default_state_root()
    }

    /// What the options ask for; `$<TOOL>_STATELESS=true` makes stateless the default unless
    /// a state dir or instance is named.
    pub fn state_request(&self) -> anyhow::Result<StateRequest> {
        let named = self.options.state_dir.is_some() || self.options.instance.is_some();
        let stateless = self.options.stateless || (!named && env_bool(&self.tool, "STATELESS")?);
        Ok(StateRequest {
            state_dir: self.options.state_dir.clone(),
            instance: self.options.instance.clone(),
            stateless,
        })
    }

    fn config_number(&self, key: &str, env_suffix: Option<&str>) -> anyhow::Result<u64> {
        if let Some(suffix) = env_suffix {
            if let Some(v) = self.tool.env_var(suffix).filter(|v| !v.trim().is_empty()) {
                let v = config::validate(key, &v)
                    .with_context(|| format!("${}", self.tool.env_var_name(suffix)))?;
                return Ok(v.parse()?);
            }
        }
        let value = match self.config.get(key)? {
            Some(v) => v,
            None => config::key_spec(key)?
                .default
                .with_context(|| format!("config key '{key}' has no default"))?
                .to_string(),
        };
        value
            .parse()
            .with_context(|| format!("config key '{key}': '{value}' is not a number"))
    }

    fn config_bool(&self, key: &str) -> anyhow::Result<bool> {
        let value = match self.config.get(key)? {
            Some(v) => v,
            None => config::key_spec(key)?
                .default
                .unwrap_or("false")
                .to_string(),
        };
        Ok(value == "true")
    }

    pub fn settings(&self) -> anyhow::Result<Settings> {
        let registry = if self.options.no_registry {
            None
        } else {
            match &self.options.registry {
                Some(r) => Some(r.clone()),
                None => self.config.get("registry")?.filter(|r| !r.is_empty()),
            }
        };
        let auth_config = self.options.config.clone().or_else(|| {
            ["VDKR_CONFIG", "VPDMN_CONFIG"]
                .iter()
                .find_map(|v| std::env::var_os(v).filter(|p| !p.is_empty()))
                .map(PathBuf::from)
        });
        Ok(Settings {
            verbose: self.options.verbose
                || env_bool(&self.tool, "VERBOSE")?
                || self.config_bool("verbose")?,
            timeout_secs: self.config_number("timeout", Some("TIMEOUT"))?,
            idle_timeout_secs: self.config_number("idle-timeout", None)?,
            auto_daemon: self.config_bool("auto-daemon")?,
            registry,
            memory_mib: self.config_number("memory", None)?,
            cpus: self.config_number("cpus", None)?,
            auth_config: auth_config.map(|p| absolute_lexical(&p, &self.cwd)),
        })
    }
}
