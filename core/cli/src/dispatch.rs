//! The single hand-over point from the command front to the parts that run things.
//!
//! The front parses and resolves everything generic (runtime, arch, state dir, settings),
//! then calls [`run_runtime_command`] for every command that runs in the VM and
//! [`run_core_command`] for the runtime-less core commands.

use std::ffi::OsString;

use std::io::Write;

use anyhow::{bail, Context};
use vcontainer_proto::exit;

use crate::arch::Arch;
use crate::commands::CoreCommand;
use crate::context::{CoreContext, RuntimeContext};
use crate::plugins::{self, ListFormat};
use crate::tool::{Catalog, Tool};

/// Runs one runtime command and returns its exit status (the container's, or one of
/// [`exit`]'s). Errors are reported by main as `<tool>: error: ...`, exit [`exit::TOOL_ERROR`].
pub fn run_runtime_command(ctx: RuntimeContext) -> anyhow::Result<i32> {
    tracing::debug!(
        tool = %ctx.tool.name,
        runtime = %ctx.tool.runtime,
        arch = %ctx.arch,
        state = %ctx.state.path.display(),
        argv = ?logged_argv(&ctx.argv),
        "runtime command"
    );
    crate::runner::run(ctx)
}

/// The user's argv as a debug log shows it: passwords hidden (docs/security.md).
fn logged_argv(argv: &[OsString]) -> Vec<String> {
    let words: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    vcontainer_proto::redact::argv(&words)
}

/// Runs one core command.
pub fn run_core_command(ctx: CoreContext) -> anyhow::Result<i32> {
    tracing::debug!(program = %ctx.program, argv = ?logged_argv(&ctx.argv), "core command");
    match ctx.command {
        CoreCommand::Doctor => run_doctor(&ctx),
        CoreCommand::Plugins => run_plugins(&ctx),
        CoreCommand::Image => crate::image_cmd::run(&ctx),
    }
}

/// `plugins [--format table|json]`: one row per plugin found; files that could not be
/// loaded are listed on stderr with the reason and do not change the exit status.
fn run_plugins(ctx: &CoreContext) -> anyhow::Result<i32> {
    let grammar = clap::Command::new("plugins")
        .about("List the runtime and backend plugins found")
        .no_binary_name(true)
        .color(crate::ui::clap_color())
        .arg(
            clap::Arg::new("format")
                .long("format")
                .value_parser(["table", "json"])
                .default_value("table")
                .help("Output format"),
        );
    let matches = match grammar.try_get_matches_from(ctx.argv.iter().skip(1)) {
        Ok(m) => m,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::TOOL_ERROR
            } else {
                exit::OK
            };
            e.print()?;
            return Ok(code);
        }
    };
    let format = match matches.get_one::<String>("format").map(String::as_str) {
        Some("json") => ListFormat::Json,
        _ => ListFormat::Table,
    };
    plugins::print_failures(&ctx.plugins);
    std::io::stdout().write_all(plugins::list(&ctx.plugins, format).as_bytes())?;
    Ok(0)
}

/// `doctor`: the VM layer's report for the selected runtime (or every known one) and arch
/// (or the host's). Exit 0 when a VM can be booted for each, 1 otherwise.
fn run_doctor(ctx: &CoreContext) -> anyhow::Result<i32> {
    if let Some(extra) = ctx.argv.get(1) {
        bail!(
            "doctor takes no arguments (got '{}'); use --runtime/--arch before it",
            extra.to_string_lossy()
        );
    }
    let arch = match ctx.arch {
        Some(a) => a,
        None => Arch::host().context("choose an arch with --arch")?,
    };
    let tools: Vec<Tool> = match &ctx.tool {
        Some(t) => vec![t.clone()],
        None => Catalog::from_plugins(&ctx.plugins).tools().to_vec(),
    };
    let mut out = std::io::stdout().lock();
    let mut all_ok = true;
    for tool in tools {
        let report = crate::vm::doctor(
            arch,
            &tool.runtime,
            ctx.options.blob_dir.as_deref(),
            Some(&tool.env_var_name("BLOB_DIR")),
            ctx.options.no_kvm,
        );
        all_ok &= report.ok();
        write!(out, "{report}")?;
        writeln!(out, "{}\n", engine_api_line(ctx, arch, &tool))?;
    }
    Ok(if all_ok { 0 } else { 1 })
}

/// `doctor`'s engine API line for `tool`: the `DOCKER_HOST`/`CONTAINER_HOST` line while
/// the memres VM of its state dir serves it, else how to expose it. The state dir is
/// never created here.
fn engine_api_line(ctx: &CoreContext, arch: Arch, tool: &Tool) -> String {
    let Ok(plugin) = ctx.plugins.require_runtime(&tool.runtime) else {
        return "[ok  ] engine API: the runtime plugin is not loaded".to_string();
    };
    let spec = plugin.spec();
    let api = &spec.engine_api;
    let state_dir = (|| {
        let session =
            crate::session::Session::new(tool.clone(), Some(arch), ctx.options.clone()).ok()?;
        let request = session.state_request().ok()?;
        let root = session.state_root().ok()?;
        crate::state_dir::planned_path(&request, &root, arch, &session.cwd)
            .ok()
            .flatten()
            .map(|(dir, _)| dir)
    })();
    crate::vm::engine_api::doctor_line(
        &tool.name,
        state_dir.as_deref(),
        crate::vm::engine_api::ApiWords {
            host_socket_name: &api.host_socket_name,
            client_env: &api.client_env,
            client_hint: &api.client_hint,
        },
    )
}
