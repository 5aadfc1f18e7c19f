//! The core's own command names: the VM commands its runner carries out itself (vimport,
//! memres, vshell, ...) and the core commands that need no runtime. The runtime's commands
//! (run, images, ...) are its plugin's (`RuntimeSpec::commands`): the core lists and checks
//! them but knows none. One table each, so that help, completion and dispatch agree.

/// Commands of the core that need no runtime; their arguments are also passed verbatim to
/// the part of the core that owns them.
pub const CORE_COMMANDS: &[(&str, &str)] = &[
    (
        "plugins",
        "List the runtime and backend plugins found (--format json)",
    ),
    (
        "doctor",
        "Check the host: QEMU, acceleration, vsock transport, blobs",
    ),
];

/// `vcontainer image build ...` (OCI image from a rootfs, with a backend plugin) is a core
/// command when no runtime is selected; with a runtime, `image` is the runtime's.
pub const CORE_IMAGE_COMMAND: &str = "image";

/// A command of the runtime list that the core's runner carries out itself on the VM,
/// without asking the runtime plugin for a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerCommand {
    /// `memres`/`vmemres`: the memory-resident VM's lifecycle.
    Memres,
    /// `vshell`: a shell in the VM itself.
    Vshell,
    /// `vimport`: one image into the runtime's storage.
    Vimport,
    /// `vimport-batch`: many images in one VM boot into one storage tar.
    VimportBatch,
    /// `vexpose`: `memres start --expose` under the old tool's name.
    Vexpose,
    /// `snapshot build|ls|rm`: the saved guests VMs start from (vm/snapshot.rs).
    Snapshot,
    /// `context`: the host client's context/connection for the exposed engine API.
    Context,
}

/// The [`RunnerCommand`]s by name, with their `--help` lines.
pub const RUNNER_COMMANDS: &[(&str, RunnerCommand, &str)] = &[
    ("vimport", RunnerCommand::Vimport, "Import an OCI layout, tarball or directory (type auto-detected)"),
    ("vimport-batch", RunnerCommand::VimportBatch, "Import many OCI layouts in one VM boot into one storage tar (--output F --image PATH=NAME:TAG ...)"),
    ("vshell", RunnerCommand::Vshell, "Open a shell in the VM itself (needs a running memres VM)"),
    ("memres", RunnerCommand::Memres, "Manage the memory-resident VM (start, stop, restart, status, list)"),
    ("vmemres", RunnerCommand::Memres, "Same as memres"),
    ("snapshot", RunnerCommand::Snapshot, "Manage the saved VM a command starts from (build, ls, rm)"),
    ("vexpose", RunnerCommand::Vexpose, "Start the memres VM with its engine API on a host socket (= memres start --expose)"),
    ("context", RunnerCommand::Context, "Print (--create: run) the client command that saves the exposed engine API as a context"),
];

impl RunnerCommand {
    pub fn from_name(name: &str) -> Option<RunnerCommand> {
        RUNNER_COMMANDS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, c, _)| *c)
    }

    /// `(name, about)` rows for help and completion.
    pub fn help_rows() -> Vec<(String, String)> {
        RUNNER_COMMANDS
            .iter()
            .map(|(n, _, about)| (n.to_string(), about.to_string()))
            .collect()
    }
}

/// A core command, as the front hands it to `dispatch`: a closed set, so the dispatcher has
/// no "unknown command" branch that could never run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreCommand {
    Plugins,
    Doctor,
    /// `image build|unpack|index` with no runtime selected ([`CORE_IMAGE_COMMAND`]).
    Image,
}

impl CoreCommand {
    /// The core command `name` is, given whether a runtime was selected (with one, `image`
    /// is the runtime's).
    pub fn from_name(name: &str, runtime_selected: bool) -> Option<CoreCommand> {
        match name {
            "plugins" => Some(CoreCommand::Plugins),
            "doctor" => Some(CoreCommand::Doctor),
            CORE_IMAGE_COMMAND if !runtime_selected => Some(CoreCommand::Image),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_command_enum_covers_exactly_the_table() {
        for (name, _) in CORE_COMMANDS {
            assert!(CoreCommand::from_name(name, false).is_some(), "{name}");
            assert!(CoreCommand::from_name(name, true).is_some(), "{name}");
        }
        assert_eq!(
            CoreCommand::from_name(CORE_IMAGE_COMMAND, false),
            Some(CoreCommand::Image)
        );
        assert_eq!(CoreCommand::from_name(CORE_IMAGE_COMMAND, true), None);
        for (name, _, _) in RUNNER_COMMANDS {
            assert_eq!(CoreCommand::from_name(name, true), None, "{name}");
        }
        assert_eq!(CoreCommand::from_name("vconfig", false), None);
    }

    /// The core's places that know command names (this module's tables and the front's clap
    /// subcommands) agree: no name has two handlers. A runtime plugin is only ever asked to
    /// plan a name none of them handles.
    #[test]
    fn the_command_tables_agree() {
        use clap::Subcommand;
        let front_cmd = crate::cli::FrontCommand::augment_subcommands(clap::Command::new("t"));
        let front: Vec<&str> = front_cmd.get_subcommands().map(|c| c.get_name()).collect();
        assert!(!front.is_empty());
        let runner = |n: &str| RUNNER_COMMANDS.iter().any(|(r, _, _)| *r == n);
        let core = |n: &str| CORE_COMMANDS.iter().any(|(c, _)| *c == n);
        for name in &front {
            assert!(!runner(name) && !core(name), "{name} has two handlers");
        }
        for (name, _) in CORE_COMMANDS {
            assert!(!runner(name), "{name} has two handlers");
        }
    }
}
