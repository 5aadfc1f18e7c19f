//! The multi-call entry: argv[0] -> tool, clap -> options + command, then the command's
//! handler. `main.rs` only maps the result to an exit code.

use std::ffi::OsString;
use std::io::Write;

use anyhow::{bail, Context};
use clap::{ArgMatches, FromArgMatches, Subcommand};
use vcontainer_proto::exit;

use crate::cli::{self, FrontCommand, GlobalOptions};
use crate::commands;
use crate::context::{CoreContext, RuntimeContext};
use crate::dispatch;
use crate::plugins::{self, PluginSet};
use crate::program_name::{parse_program_name, ProgramName};
use crate::session::Session;
use crate::state_dir;
use crate::tool::{Catalog, Tool};
use crate::ui;
use crate::{vconfig, vstorage};

/// The name to put in front of messages, from argv[0] and the built-in runtimes alone (main
/// uses it for errors that happen before anything else is known).
pub fn program_label(argv: &[OsString]) -> String {
    let Some(argv0) = argv.first() else {
        return crate::program_name::GENERIC_NAME.to_string();
    };
    let catalog = Catalog::builtin();
    match parse_program_name(&argv0.to_string_lossy(), catalog.aliases()) {
        Ok(p) => p
            .runtime
            .as_deref()
            .and_then(|r| catalog.tool(r))
            .map(|t| t.name.clone())
            .unwrap_or(p.tool),
        Err(e) => e.name,
    }
}

/// What the command line asks for, before anything touches the disk or the environment
/// beyond argv[0]. Split from [`run`] so tests can check that argv reaches the runtime
/// command untouched.
#[derive(Debug)]
pub enum Invocation {
    /// clap printed help or a usage error: print it and exit with this code.
    Usage { error: clap::Error, code: i32 },
    /// `--version`
    Version { program: String },
    /// no command: print help (with the runtime's commands when argv[0] names a runtime)
    Help {
        program: String,
        runtime_commands: Option<Vec<(String, String)>>,
    },
    /// `vconfig`, `vstorage`, `clean`, `completion`
    Front {
        program: ProgramName,
        tool: Option<Tool>,
        options: GlobalOptions,
        command: FrontCommand,
    },
    /// `plugins`, `doctor`, `image build` without a runtime
    Core(CoreContext),
    /// a command that runs in the VM; `argv` is verbatim (command name first)
    Runtime {
        program: ProgramName,
        tool: Tool,
        options: GlobalOptions,
        argv: Vec<OsString>,
        plugins: PluginSet,
    },
}

/// Parses argv (argv[0] included) into an [`Invocation`].
///
/// The runtime plugins are discovered first: their declared aliases decide what argv[0]
/// means (with built-in entries for vdkr/vpdmn when a plugin is missing, so the front's own
/// commands still work).
pub fn parse(argv: &[OsString]) -> anyhow::Result<Invocation> {
    let plugins = plugins::discover()?;
    let catalog = Catalog::from_plugins(&plugins);
    let argv0 = argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let program = parse_program_name(&argv0, catalog.aliases())?;
    // help can only list a runtime's commands when argv[0] names it (`--runtime` is not
    // parsed yet when clap prints help)
    let named = program.runtime.as_deref().and_then(|r| catalog.tool(r));
    let runtime_commands = named.and_then(|t| t.commands.clone());
    let matches = match command_line(argv, &program, runtime_commands.as_deref()) {
        Ok(m) => m,
        Err(error) => return Ok(usage(error)),
    };
    let options = GlobalOptions::from_arg_matches(&matches)?;
    if matches.get_flag("version") {
        return Ok(Invocation::Version {
            program: program.tool,
        });
    }
    let tool = select_tool(&program, &options, &catalog)?;
    let Some((name, sub)) = matches.subcommand() else {
        return Ok(Invocation::Help {
            program: program.tool,
            runtime_commands,
        });
    };
    if FrontCommand::has_subcommand(name) {
        let command = FrontCommand::from_arg_matches(&matches)?;
        return Ok(Invocation::Front {
            program,
            tool,
            options,
            command,
        });
    }
    let argv = verbatim_args(name, sub);
    if let Some(command) = commands::CoreCommand::from_name(name, tool.is_some()) {
        return core_invocation(command, program, tool, options, argv, plugins);
    }
    let known = commands::RunnerCommand::from_name(name).is_some()
        || match &tool {
            Some(t) => t.accepts(name),
            None => catalog.any_accepts(name),
        };
    if !known {
        bail!(
            "unknown command '{name}'; run '{} --help' for the list",
            program.tool
        );
    }
    Ok(Invocation::Runtime {
        tool: require_tool(tool, name, &catalog)?,
        program,
        options,
        argv,
        plugins,
    })
}

/// clap's matches of the whole command line. `memres start --no-registry`: the old tool took
/// global options after `memres start`; they are lifted in front and parsed again.
fn command_line(
    argv: &[OsString],
    program: &ProgramName,
    runtime_commands: cli::RuntimeCommands<'_>,
) -> Result<ArgMatches, clap::Error> {
    let parse_argv = |argv: &[OsString]| {
        cli::parser(&program.tool, runtime_commands, ui::clap_color()).try_get_matches_from(argv)
    };
    let matches = parse_argv(argv)?;
    let Some((name, sub)) = matches.subcommand().filter(|(name, _)| {
        commands::RunnerCommand::from_name(name) == Some(commands::RunnerCommand::Memres)
    }) else {
        return Ok(matches);
    };
    match cli::lift_memres_globals(argv, &verbatim_args(name, sub))? {
        None => Ok(matches),
        Some(moved) => parse_argv(&moved),
    }
}

/// clap printed help or a usage error: help exits 0, a usage error as a tool error.
fn usage(error: clap::Error) -> Invocation {
    use clap::error::ErrorKind;
    let code = match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => exit::OK,
        _ => exit::TOOL_ERROR,
    };
    Invocation::Usage { error, code }
}

/// A command the core implements itself, with the arch from `--arch` or the program name.
fn core_invocation(
    command: commands::CoreCommand,
    program: ProgramName,
    tool: Option<Tool>,
    options: GlobalOptions,
    argv: Vec<OsString>,
    plugins: PluginSet,
) -> anyhow::Result<Invocation> {
    let arch = match &options.arch {
        Some(a) => Some(a.parse::<crate::arch::Arch>().context("--arch")?),
        None => program.arch,
    };
    Ok(Invocation::Core(CoreContext {
        command,
        program: program.tool,
        tool,
        arch,
        options,
        argv,
        plugins,
    }))
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Runs one invocation. `Ok(code)` is the exit status; `Err` is a tool failure
/// ([`exit::TOOL_ERROR`]).
pub fn run(argv: Vec<OsString>) -> anyhow::Result<i32> {
    let invocation = parse(&argv)?;
    let runs_in_vm = matches!(invocation, Invocation::Runtime { .. });
    match execute(invocation) {
        // the front's own commands write only to stdout, so a broken pipe there means the
        // reader closed it: stop quietly like other Unix tools
        Err(e) if !runs_in_vm && is_broken_pipe(&e) => Ok(exit::STDOUT_CLOSED),
        other => other,
    }
}

fn execute(invocation: Invocation) -> anyhow::Result<i32> {
    match invocation {
        Invocation::Usage { error, code } => {
            error.print().context("printing usage")?;
            Ok(code)
        }
        Invocation::Version { program } => {
            writeln!(
                std::io::stdout(),
                "{program} version {}",
                env!("CARGO_PKG_VERSION")
            )?;
            Ok(0)
        }
        Invocation::Help {
            program,
            runtime_commands,
        } => {
            cli::parser(&program, runtime_commands.as_deref(), ui::clap_color())
                .print_help()
                .context("printing help")?;
            Ok(0)
        }
        Invocation::Front {
            program,
            tool,
            options,
            command,
        } => {
            init_logging(&tool, &options);
            run_front_command(&program, tool, options, command)
        }
        Invocation::Core(ctx) => {
            init_logging(&None, &ctx.options);
            dispatch::run_core_command(ctx)
        }
        Invocation::Runtime {
            program,
            tool,
            options,
            argv,
            plugins,
        } => {
            init_logging(&Some(tool.clone()), &options);
            let session = Session::new(tool, program.arch, options)?;
            let ctx = runtime_context(session, argv, plugins)?;
            dispatch::run_runtime_command(ctx)
        }
    }
}

/// The command name plus its arguments as clap received them (external subcommand values
/// are stored under the empty id).
fn verbatim_args(name: &str, sub: &ArgMatches) -> Vec<OsString> {
    let mut argv = vec![OsString::from(name)];
    if let Some(values) = sub.get_many::<OsString>("") {
        argv.extend(values.cloned());
    }
    argv
}

/// Picks the tool from the program name and `--runtime`; they must agree.
fn select_tool(
    program: &ProgramName,
    options: &GlobalOptions,
    catalog: &Catalog,
) -> anyhow::Result<Option<Tool>> {
    let from_name = match &program.runtime {
        Some(runtime) => Some(catalog.tool_for(runtime)?),
        None => None,
    };
    match (from_name, &options.runtime) {
        (None, None) => Ok(None),
        (None, Some(wanted)) => Ok(Some(catalog.tool_for(wanted)?)),
        (Some(tool), None) => Ok(Some(tool)),
        (Some(tool), Some(wanted)) => {
            let asked = catalog.tool_for(wanted)?;
            if asked.runtime != tool.runtime {
                bail!(
                    "{} runs {}, but --runtime asks for {}; use {} or vcontainer --runtime {}",
                    program.tool,
                    tool.runtime,
                    asked.runtime,
                    asked.name,
                    asked.runtime
                );
            }
            Ok(Some(tool))
        }
    }
}

fn require_tool(tool: Option<Tool>, command: &str, catalog: &Catalog) -> anyhow::Result<Tool> {
    match tool {
        Some(t) => Ok(t),
        None => {
            let runtimes: Vec<String> = catalog
                .runtimes()
                .iter()
                .filter_map(|r| catalog.tool(r))
                .map(|t| format!("{} ({})", t.runtime, t.name))
                .collect();
            bail!(
                "'{command}' needs a runtime: use `vcontainer --runtime <RUNTIME> {command} ...` \
                 or run it as one of the runtime's names; runtimes: {}",
                runtimes.join(", ")
            )
        }
    }
}

fn run_front_command(
    program: &ProgramName,
    tool: Option<Tool>,
    options: GlobalOptions,
    command: FrontCommand,
) -> anyhow::Result<i32> {
    let name = match &command {
        FrontCommand::Completion { shell } => {
            // generated into memory: clap_complete panics when its writer fails (closed pipe)
            let commands = tool.as_ref().and_then(|t| t.commands.as_deref());
            let mut grammar = cli::completion_grammar(&program.tool, commands);
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut grammar, &program.tool, &mut script);
            std::io::stdout()
                .write_all(&script)
                .context("writing the completion script")?;
            return Ok(0);
        }
        FrontCommand::Vconfig(_) => "vconfig",
        FrontCommand::Vstorage { .. } => "vstorage",
        FrontCommand::Clean => "clean",
    };
    let session = Session::new(
        require_tool(tool, name, &Catalog::builtin())?,
        program.arch,
        options,
    )?;
    match command {
        FrontCommand::Vconfig(args) => vconfig::run(&session, &args),
        FrontCommand::Vstorage { action } => vstorage::run(&session, action.as_ref()),
        FrontCommand::Clean => vstorage::clean_current(&session),
        FrontCommand::Completion { .. } => unreachable!("handled above"),
    }
}

/// Resolves arch, settings and the state dir (creating it) for a runtime command.
pub fn runtime_context(
    session: Session,
    argv: Vec<OsString>,
    plugins: PluginSet,
) -> anyhow::Result<RuntimeContext> {
    let (arch, arch_source) = session.arch()?;
    let settings = session.settings()?;
    let request = session.state_request()?;
    let root = session.state_root()?;
    let state = state_dir::prepare(&request, &session.tool, &root, arch, &session.cwd)?;
    if settings.verbose {
        ui::info(
            &session.tool.name,
            &format!(
                "runtime {}, arch {arch} (from {arch_source}), state {}",
                session.tool.runtime,
                state.path.display()
            ),
        );
    }
    Ok(RuntimeContext {
        tool: session.tool,
        arch,
        arch_source,
        state,
        options: session.options,
        settings,
        config_dir: session.config_dir,
        argv,
        plugins,
    })
}

/// Log output of all modules on stderr: warnings by default, debug with -v (or
/// `$<TOOL>_VERBOSE`), or whatever `$VCONTAINER_LOG` says.
pub fn init_logging(tool: &Option<Tool>, options: &GlobalOptions) {
    let verbose = options.verbose
        || tool
            .as_ref()
            .and_then(|t| t.env_var("VERBOSE"))
            .is_some_and(|v| v == "true" || v == "1");
    let default = if verbose { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VCONTAINER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ui::stderr_color())
        .with_target(false)
        .without_time()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_is_found_in_the_context_chain() {
        let e = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing the completion script");
        assert!(is_broken_pipe(&e));
        let other = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(!is_broken_pipe(&other));
    }
}
