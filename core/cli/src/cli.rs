//! The command-line grammar (clap derive + a little builder for the verbatim commands).
//!
//! Global options are recognised only before the command name (clap's non-`global` args do
//! exactly that). Everything after a runtime command's name is an "external subcommand":
//! clap hands it over untouched, so `vdkr run alpine ls --help` gives `--help` to `ls`, and
//! `-it`, `--storage`, `--` or `;` inside the container command are never eaten (the old
//! tool's bug, docs/old-tool-cli.md).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{value_parser, Arg, ArgAction, Args, ColorChoice, Command, Subcommand};

use crate::commands::{RunnerCommand, CORE_COMMANDS};

// Options given before the command, with the old tool's names. (A plain comment: a doc
// comment would become the about text of the top-level command.)
/// A value that must never reach a log: `Debug` shows `<redacted>` (docs/security.md).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(vcontainer_proto::redact::REDACTED)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

#[derive(Debug, Clone, Default, Args)]
pub struct GlobalOptions {
    /// Target architecture: x86_64 or aarch64 (overrides the program name, $<TOOL>_ARCH and the config)
    #[arg(short = 'a', long, value_name = "ARCH")]
    pub arch: Option<String>,

    /// Runtime plugin to use (docker, podman); needed when run as `vcontainer`
    #[arg(long, value_name = "RUNTIME")]
    pub runtime: Option<String>,

    /// Use the named instance's state dir, ~/.<tool>/<NAME>
    #[arg(short = 'I', long, value_name = "NAME")]
    pub instance: Option<String>,

    /// Use a fresh temporary state dir, deleted when the command ends
    #[arg(long)]
    pub stateless: bool,

    /// Export the runtime storage as a tar to FILE after the command
    #[arg(long, value_name = "FILE")]
    pub storage: Option<PathBuf>,

    /// Start from the runtime storage in this tar (as written by --storage)
    #[arg(long, value_name = "FILE")]
    pub input_storage: Option<PathBuf>,

    /// Storage driver of podman's images: vfs (what Yocto targets read; the default of
    /// vimport-batch) or overlay (the guest's own); docker always uses overlay2
    #[arg(long, value_name = "DRIVER")]
    pub storage_driver: Option<String>,

    /// State dir for this invocation (created with a marker file if missing)
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Where the guest kernel/initramfs/rootfs blobs are
    #[arg(long, value_name = "DIR")]
    pub blob_dir: Option<PathBuf>,

    /// Config dir (default ~/.config/<tool>, or $<TOOL>_CONFIG_DIR)
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,

    /// Never use KVM (run the guest under TCG)
    #[arg(long)]
    pub no_kvm: bool,

    /// Run this command in a one-shot VM instead of the memres VM
    #[arg(long)]
    pub no_daemon: bool,

    /// Containers get no network (`--network none`); pull/push/login/search are refused
    #[arg(long)]
    pub no_network: bool,

    /// Registry auth file (docker config.json / podman auth.json); default $VDKR_CONFIG, then $VPDMN_CONFIG
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Default registry for unqualified image names (default: config `registry`)
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,

    /// Disable the default registry
    #[arg(long, conflicts_with = "registry")]
    pub no_registry: bool,

    /// Registry reached over plain HTTP (repeatable)
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,

    /// Verify TLS for the default registry
    #[arg(long)]
    pub secure_registry: bool,

    /// CA certificate for the default registry
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// User for the default registry
    #[arg(long, value_name = "USER")]
    pub registry_user: Option<String>,

    /// Password for the default registry (prefer --config: arguments are visible in ps)
    #[arg(long, alias = "registry-pass", value_name = "PASSWORD")]
    pub registry_password: Option<Secret>,

    /// Interactive (keep stdin open); `-it` before the command = -i -t
    #[arg(short = 'i', long)]
    pub interactive: bool,

    /// Allocate a terminal
    #[arg(short = 't', long)]
    pub tty: bool,

    /// Verbose output on stderr
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

// Commands the front handles itself. (A plain comment: a doc comment here would become the
// about text of the top-level command.)
#[derive(Debug, Clone, Subcommand)]
pub enum FrontCommand {
    /// Show or change the config: vconfig [KEY [VALUE | --reset]]
    #[command(after_help = crate::config::keys_help())]
    Vconfig(VconfigArgs),
    /// State dirs: list, path [ARCH], df, clean [ARCH | --all]
    Vstorage {
        #[command(subcommand)]
        action: Option<VstorageAction>,
    },
    /// Delete the state dir of this arch/instance (refused while its memres VM runs)
    Clean,
    /// Print a completion script for bash, zsh or fish
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Args)]
pub struct VconfigArgs {
    /// Config key (no key: show all)
    pub key: Option<String>,
    /// New value for KEY (no value: print it)
    #[arg(allow_negative_numbers = true)]
    pub value: Option<String>,
    /// Reset KEY to its default
    #[arg(long, requires = "key", conflicts_with = "value")]
    pub reset: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum VstorageAction {
    /// List the state dirs (the default)
    List,
    /// Print the state dir path (for ARCH, if given)
    Path { arch: Option<String> },
    /// Disk usage of each state dir
    Df,
    /// Delete the current state dir, ARCH's, or all of them (only dirs this tool created)
    Clean {
        arch: Option<String>,
        #[arg(long, conflicts_with = "arch")]
        all: bool,
    },
}

fn command_list<N: AsRef<str>, A: AsRef<str>>(title: &str, rows: &[(N, A)]) -> String {
    let width = rows
        .iter()
        .map(|(n, _)| n.as_ref().len())
        .max()
        .unwrap_or(0);
    let mut text = format!("{title}\n");
    for (name, about) in rows {
        let (name, about) = (name.as_ref(), about.as_ref());
        text.push_str(&format!("  {name:<width$}  {about}\n"));
    }
    text
}

/// clap wants `'static` names unless its `string` feature is on; the program name is built
/// once or twice per process, so leaking it is cheaper than another feature in the lock.
fn static_name(name: &str) -> &'static str {
    Box::leak(name.to_string().into_boxed_str())
}

/// The runtime's commands with their help lines (from its plugin), or None when no runtime
/// is selected or its plugin is not found.
pub type RuntimeCommands<'a> = Option<&'a [(String, String)]>;

fn base_command(tool_name: &str, runtime: RuntimeCommands<'_>, color: ColorChoice) -> Command {
    let runtime_list = match runtime {
        Some(rows) => command_list("Runtime commands (run in the VM):", rows),
        None => "Runtime commands: those of the runtime's plugin (`<tool> --help`, e.g. \
                 `vdkr --help`, lists them)\n"
            .to_string(),
    };
    let after_help = format!(
        "{runtime_list}\n{}\n{}\nArguments after a command are passed to it unchanged.\n\
         Exit status: the container's, or 125 when {tool_name} itself failed.",
        command_list(
            "VM commands (carried out by the tool; need a runtime):",
            &RunnerCommand::help_rows()
        ),
        command_list("Core commands:", CORE_COMMANDS),
    );
    Command::new(static_name(tool_name))
        .about("Run container runtime commands for a target architecture inside a QEMU VM")
        .color(color)
        .disable_version_flag(true)
        .arg(
            Arg::new("version")
                .long("version")
                .action(ArgAction::SetTrue)
                .help("Print the tool name and version"),
        )
        .subcommand_value_name("COMMAND")
        .after_help(after_help)
}

/// The parser used at run time: runtime and core commands are external subcommands, so their
/// arguments arrive verbatim.
pub fn parser(tool_name: &str, runtime: RuntimeCommands<'_>, color: ColorChoice) -> Command {
    let cmd = base_command(tool_name, runtime, color)
        .allow_external_subcommands(true)
        .external_subcommand_value_parser(value_parser!(OsString));
    let cmd = <GlobalOptions as Args>::augment_args(cmd);
    <FrontCommand as Subcommand>::augment_subcommands(cmd)
}

/// Options of `memres start`/`restart` themselves (with a value: `-p`, `--publish`).
const MEMRES_OWN: &[&str] = &["-p", "--publish", "--clean", "--expose"];

/// The old tool took its global options after `memres start`/`vmemres start` (and
/// `restart`), e.g. `vdkr memres start --no-registry -p 8080:80`, and scripts rely on it.
/// `args` is the command and its verbatim arguments, the tail of `argv`. Returns argv with
/// those options moved before the command (where they are global options), or None when
/// there is nothing to move. Only memres start/restart take no operands, so every word
/// there that is not memres's own is a global option or its value: unambiguous. Options that
/// are not global options are a usage error here.
pub fn lift_memres_globals(
    argv: &[OsString],
    args: &[OsString],
) -> Result<Option<Vec<OsString>>, clap::Error> {
    let word = |i: usize| args.get(i).and_then(|a| a.to_str());
    if !matches!(word(0), Some("memres" | "vmemres"))
        || !matches!(word(1), Some("start" | "restart"))
    {
        return Ok(None);
    }
    let (mut own, mut lifted): (Vec<OsString>, Vec<OsString>) = (Vec::new(), Vec::new());
    let mut i = 2;
    while let Some(a) = args.get(i) {
        let text = a.to_string_lossy();
        let flag = text.split_once('=').map_or(&*text, |(f, _)| f);
        let joined_publish = text.starts_with("-p") && text.len() > 2 && !text.starts_with("--");
        if MEMRES_OWN.contains(&flag) || joined_publish {
            own.push(a.clone());
            if matches!(&*text, "-p" | "--publish") {
                if let Some(v) = args.get(i + 1) {
                    own.push(v.clone());
                    i += 1;
                }
            }
        } else {
            lifted.push(a.clone());
        }
        i += 1;
    }
    if lifted.is_empty() {
        return Ok(None);
    }
    // only global options may move; anything else is an error, reported as clap does
    let check =
        <GlobalOptions as Args>::augment_args(Command::new("memres start").disable_help_flag(true));
    check.try_get_matches_from(
        std::iter::once(OsString::from("memres start")).chain(lifted.iter().cloned()),
    )?;
    let head = argv.len().saturating_sub(args.len());
    let mut out: Vec<OsString> = argv[..head].to_vec();
    out.extend(lifted);
    out.extend(args[..2].iter().cloned());
    out.extend(own);
    Ok(Some(out))
}

/// The grammar for completion scripts: the same, plus the runtime and core command names as
/// real subcommands so shells can complete them.
pub fn completion_grammar(tool_name: &str, runtime: RuntimeCommands<'_>) -> Command {
    let mut cmd = base_command(tool_name, runtime, ColorChoice::Never);
    cmd = <GlobalOptions as Args>::augment_args(cmd);
    cmd = <FrontCommand as Subcommand>::augment_subcommands(cmd);
    let rows = runtime
        .unwrap_or_default()
        .iter()
        .cloned()
        .chain(RunnerCommand::help_rows())
        .chain(
            CORE_COMMANDS
                .iter()
                .map(|(n, a)| (n.to_string(), a.to_string())),
        );
    for (name, about) in rows {
        cmd = cmd.subcommand(
            Command::new(static_name(&name)).about(about).arg(
                Arg::new("args")
                    .num_args(0..)
                    .trailing_var_arg(true)
                    .allow_hyphen_values(true),
            ),
        );
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches;

    fn parse(args: &[&str]) -> clap::ArgMatches {
        parser("vdkr", None, ColorChoice::Never)
            .try_get_matches_from(args)
            .unwrap()
    }

    fn external(m: &clap::ArgMatches) -> (String, Vec<String>) {
        let (name, sub) = m.subcommand().unwrap();
        let args = sub
            .get_many::<OsString>("")
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        (name.to_string(), args)
    }

    #[test]
    fn grammar_is_valid() {
        parser("vdkr", None, ColorChoice::Never).debug_assert();
        completion_grammar("vdkr", None).debug_assert();
    }

    #[test]
    fn options_after_the_command_are_not_global() {
        let m = parse(&["vdkr", "run", "alpine", "ls", "--help"]);
        assert_eq!(
            external(&m),
            (
                "run".into(),
                vec!["alpine".into(), "ls".into(), "--help".into()]
            )
        );
        let m = parse(&["vdkr", "run", "-it", "alpine", "sh"]);
        let g = GlobalOptions::from_arg_matches(&m).unwrap();
        assert!(!g.interactive && !g.tty);
        assert_eq!(external(&m).1, ["-it", "alpine", "sh"]);
        let m = parse(&["vdkr", "images", "-a", "--storage", "x", "--", "-v"]);
        let g = GlobalOptions::from_arg_matches(&m).unwrap();
        assert!(g.arch.is_none() && g.storage.is_none() && !g.verbose);
        assert_eq!(external(&m).1, ["-a", "--storage", "x", "--", "-v"]);
    }

    #[test]
    fn options_before_the_command_are_global() {
        let m = parse(&[
            "vdkr",
            "-a",
            "aarch64",
            "-it",
            "-v",
            "--insecure-registry",
            "r1:5000",
            "--insecure-registry=r2:5000",
            "--registry-pass",
            "p w",
            "vrun",
            "alpine",
        ]);
        let g = GlobalOptions::from_arg_matches(&m).unwrap();
        assert_eq!(g.arch.as_deref(), Some("aarch64"));
        assert!(g.interactive && g.tty && g.verbose);
        assert_eq!(g.insecure_registries, ["r1:5000", "r2:5000"]);
        assert_eq!(
            g.registry_password.as_ref().map(Secret::expose),
            Some("p w")
        );
        let shown = format!("{g:?}");
        assert!(
            !shown.contains("p w") && shown.contains("registry_password: Some(<redacted>)"),
            "{shown}"
        );
        assert_eq!(external(&m), ("vrun".into(), vec!["alpine".into()]));
    }

    #[test]
    fn global_options_after_memres_start_move_before_the_command() {
        let os = |w: &[&str]| w.iter().map(OsString::from).collect::<Vec<_>>();
        let argv = os(&[
            "vdkr",
            "-v",
            "memres",
            "start",
            "--no-registry",
            "-p",
            "8080:80",
            "--insecure-registry",
            "r:5000",
            "-p9090:90",
        ]);
        let moved = lift_memres_globals(&argv, &argv[2..])
            .expect("ok")
            .expect("moved");
        assert_eq!(
            moved,
            os(&[
                "vdkr",
                "-v",
                "--no-registry",
                "--insecure-registry",
                "r:5000",
                "memres",
                "start",
                "-p",
                "8080:80",
                "-p9090:90"
            ])
        );
        // nothing to move, other commands, and non-global options
        let plain = os(&["vdkr", "memres", "start", "-p", "1:2"]);
        assert_eq!(lift_memres_globals(&plain, &plain[1..]).expect("ok"), None);
        let run = os(&["vdkr", "run", "--no-registry", "x"]);
        assert_eq!(lift_memres_globals(&run, &run[1..]).expect("ok"), None);
        let bad = os(&["vdkr", "memres", "start", "--bogus"]);
        assert!(lift_memres_globals(&bad, &bad[1..]).is_err());
        let stop = os(&["vdkr", "memres", "stop", "--no-registry"]);
        assert_eq!(lift_memres_globals(&stop, &stop[1..]).expect("ok"), None);
    }

    #[test]
    fn front_commands_parse() {
        let m = parse(&["vdkr", "vconfig", "arch", "--reset"]);
        let c = FrontCommand::from_arg_matches(&m).unwrap();
        assert!(matches!(
            c,
            FrontCommand::Vconfig(VconfigArgs { reset: true, .. })
        ));
        let m = parse(&["vdkr", "vstorage", "clean", "--all"]);
        let c = FrontCommand::from_arg_matches(&m).unwrap();
        assert!(matches!(
            c,
            FrontCommand::Vstorage {
                action: Some(VstorageAction::Clean { all: true, .. })
            }
        ));
        assert!(parser("vdkr", None, ColorChoice::Never)
            .try_get_matches_from(["vdkr", "vconfig", "arch", "x", "--reset"])
            .is_err());
    }
}
