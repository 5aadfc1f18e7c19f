//! What the front resolved for one command, handed to the parts that run it: a runtime
//! command's [`RuntimeContext`] (runner, registry, vimport) and a core command's
//! [`CoreContext`] (plugins, doctor, image). Its own module so that those parts and
//! `dispatch` (which calls them) do not import each other in a circle.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::arch::{Arch, ArchSource};
use crate::cli::GlobalOptions;
use crate::commands::CoreCommand;
use crate::plugins::PluginSet;
use crate::session::Settings;
use crate::state_dir::StateDir;
use crate::tool::Tool;

/// Everything a runtime command needs, resolved by the front.
#[derive(Debug)]
pub struct RuntimeContext {
    /// `vdkr`/docker or `vpdmn`/podman.
    pub tool: Tool,
    pub arch: Arch,
    /// Why this arch (for `-v` output).
    pub arch_source: ArchSource,
    /// Created, marked and canonical. For `--stateless` a temp dir that is deleted when this
    /// context is dropped, so the VM layer must not leave a memres VM running in it.
    pub state: StateDir,
    /// The global options as given before the command (blob dir, storage tars, registry
    /// flags, -i/-t, ...).
    pub options: GlobalOptions,
    /// Config/env/flag-merged settings (timeouts, auto-daemon, VM size, registry, auth file).
    pub settings: Settings,
    /// The config dir in use (`~/.config/<tool>`).
    pub config_dir: PathBuf,
    /// The command and its arguments exactly as typed after the global options:
    /// `["run", "--rm", "alpine", "sh", "-c", "echo $HOME; ls"]`. Never re-split or re-joined.
    pub argv: Vec<OsString>,
    /// The plugins found at start-up; `plugins.require_runtime(&tool.runtime)` is this
    /// command's runtime plugin (an error listing what was found when it is missing).
    pub plugins: PluginSet,
}

impl RuntimeContext {
    /// The command name (`run`, `images`, `vimport`, ...).
    pub fn command(&self) -> &str {
        self.argv.first().and_then(|c| c.to_str()).unwrap_or("")
    }

    /// The arguments after the command name, verbatim.
    pub fn args(&self) -> &[OsString] {
        self.argv.get(1..).unwrap_or(&[])
    }
}

/// A runtime-less core command (`plugins`, `doctor`, `image build`) with its verbatim args.
#[derive(Debug)]
pub struct CoreContext {
    /// Which core command `argv` names.
    pub command: CoreCommand,
    /// The program name the user typed (`vcontainer`, `vdkr`).
    pub program: String,
    /// The runtime, when the program name or `--runtime` chose one.
    pub tool: Option<Tool>,
    /// The arch from `--arch` or the program name, if any (core commands read no config).
    pub arch: Option<Arch>,
    pub options: GlobalOptions,
    /// `["plugins", "--format", "json"]`
    pub argv: Vec<OsString>,
    /// The plugins found at start-up.
    pub plugins: PluginSet,
}
