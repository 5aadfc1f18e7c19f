//! The names of the commands that run in the VM, and of the core commands that need no
//! runtime. One table, so that help, completion and dispatch agree.

/// Commands handed verbatim to the runtime (docker/podman pass-through names and the
/// tool's own "v" commands of docs/old-tool-cli.md), with a one-line description.
pub const RUNTIME_COMMANDS: &[(&str, &str)] = &[
    ("run", "Run a command in a new container"),
    (
        "vrun",
        "Run a container with its entrypoint cleared (run --rm [-it] IMAGE CMD)",
    ),
    ("exec", "Run a command in a running container"),
    ("images", "List images"),
    (
        "image",
        "Manage images (ls, rm, ...); plain vcontainer: build|unpack|index",
    ),
    ("pull", "Pull an image from a registry"),
    ("push", "Push an image to a registry"),
    ("load", "Load an image from a tar archive (-i FILE)"),
    ("save", "Save an image to a tar archive (-o FILE)"),
    ("import", "Import a tarball as an image"),
    (
        "vimport",
        "Import an OCI layout, tarball or directory (type auto-detected)",
    ),
    ("vimport-batch", "Import many OCI layouts in one VM boot into one storage tar (--output F --image PATH=NAME:TAG ...)"),
    ("tag", "Tag an image"),
    ("rmi", "Remove images"),
    ("build", "Build an image"),
    ("history", "Show the history of an image"),
    ("commit", "Create an image from a container"),
    ("ps", "List containers"),
    ("create", "Create a container"),
    ("start", "Start containers"),
    ("stop", "Stop containers"),
    ("restart", "Restart containers"),
    ("kill", "Kill containers"),
    ("pause", "Pause containers"),
    ("unpause", "Unpause containers"),
    ("rm", "Remove containers"),
    ("logs", "Show a container's logs"),
    ("inspect", "Show low-level information on objects"),
    ("top", "Show the processes of a container"),
    ("stats", "Show container resource usage"),
    ("port", "List a container's port mappings"),
    (
        "wait",
        "Wait for containers to stop and print their exit codes",
    ),
    ("cp", "Copy files between a container and the host"),
    ("container", "Manage containers"),
    ("volume", "Manage volumes"),
    ("network", "Manage networks"),
    ("system", "Manage the runtime (df, prune, events, info)"),
    ("info", "Show runtime information"),
    ("version", "Show the runtime's version"),
    ("search", "Search a registry for images"),
    ("login", "Log in to a registry"),
    ("logout", "Log out from a registry"),
    (
        "vshell",
        "Open a shell in the VM itself (needs a running memres VM)",
    ),
    (
        "memres",
        "Manage the memory-resident VM (start, stop, restart, status, list)",
    ),
    ("vmemres", "Same as memres"),
    (
        "snapshot",
        "Manage the saved VM a command starts from (build, ls, rm)",
    ),
    (
        "vexpose",
        "Start the memres VM with its engine API on a host socket (= memres start --expose)",
    ),
    (
        "context",
        "Print (--create: run) the client command that saves the exposed engine API as a context",
    ),
];

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

pub fn is_runtime_command(name: &str) -> bool {
    RUNTIME_COMMANDS.iter().any(|(n, _)| *n == name)
}

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

/// The names of the [`RunnerCommand`]s (each also in [`RUNTIME_COMMANDS`], for help).
const RUNNER_COMMANDS: &[(&str, RunnerCommand)] = &[
    ("memres", RunnerCommand::Memres),
    ("vmemres", RunnerCommand::Memres),
    ("vshell", RunnerCommand::Vshell),
    ("vimport", RunnerCommand::Vimport),
    ("vimport-batch", RunnerCommand::VimportBatch),
    ("vexpose", RunnerCommand::Vexpose),
    ("snapshot", RunnerCommand::Snapshot),
    ("context", RunnerCommand::Context),
];

impl RunnerCommand {
    pub fn from_name(name: &str) -> Option<RunnerCommand> {
        RUNNER_COMMANDS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
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
        for (name, _) in RUNTIME_COMMANDS {
            assert_eq!(CoreCommand::from_name(name, true), None, "{name}");
        }
        assert_eq!(CoreCommand::from_name("vconfig", false), None);
    }

    /// The three places that know command names (this module's tables, the front's clap
    /// subcommands and the runner's [`RunnerCommand`]) agree: no name has two handlers, and
    /// the runner's own commands are in the help list. A runtime plugin is only ever asked
    /// to plan a name none of them handles.
    #[test]
    fn the_command_tables_agree() {
        use clap::Subcommand;
        let front_cmd = crate::cli::FrontCommand::augment_subcommands(clap::Command::new("t"));
        let front: Vec<&str> = front_cmd.get_subcommands().map(|c| c.get_name()).collect();
        assert!(!front.is_empty());
        let runtime = |n: &str| RUNTIME_COMMANDS.iter().any(|(r, _)| *r == n);
        let core = |n: &str| CORE_COMMANDS.iter().any(|(c, _)| *c == n);
        for name in &front {
            assert!(!runtime(name) && !core(name), "{name} has two handlers");
        }
        for (name, _) in RUNNER_COMMANDS {
            assert!(runtime(name), "{name} is missing from the help list");
            assert!(
                !core(name) && !front.contains(name),
                "{name} has two handlers"
            );
        }
        for (name, _) in CORE_COMMANDS {
            assert!(!runtime(name), "{name} has two handlers");
        }
    }
}
