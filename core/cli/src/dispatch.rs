//! The single hand-over point from the command front to the parts that run things.
//!
//! The front parses and resolves everything generic (runtime, arch, state dir, settings),
//! then calls [`run_runtime_command`] for every command that runs in the VM and
//! [`run_core_command`] for the runtime-less core commands. Until the VM layer and plugins
//! are wired, both return a clear error (exit 125): nothing pretends to have run.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::bail;

use crate::arch::{Arch, ArchSource};
use crate::cli::GlobalOptions;
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
    /// The program name the user typed (`vcontainer`, `vdkr`).
    pub program: String,
    pub options: GlobalOptions,
    /// `["plugins", "--format", "json"]`
    pub argv: Vec<OsString>,
}

/// Runs one runtime command and returns its exit status (the container's, or 125/126/127
/// per docker's conventions). Errors are reported by main as `<tool>: error: ...`, exit 125.
pub fn run_runtime_command(ctx: RuntimeContext) -> anyhow::Result<i32> {
    tracing::debug!(
        tool = %ctx.tool.name,
        runtime = %ctx.tool.runtime,
        arch = %ctx.arch,
        state = %ctx.state.path.display(),
        argv = ?ctx.argv,
        "runtime command"
    );
    bail!(
        "'{}' for {} {}: running commands in the VM is not wired yet",
        ctx.command(),
        ctx.tool.runtime,
        ctx.arch
    )
}

/// Runs one core command.
pub fn run_core_command(ctx: CoreContext) -> anyhow::Result<i32> {
    let name = ctx.argv.first().and_then(|c| c.to_str()).unwrap_or("");
    tracing::debug!(program = %ctx.program, argv = ?ctx.argv, "core command");
    bail!("'{name}' is not wired into the command front yet")
}
