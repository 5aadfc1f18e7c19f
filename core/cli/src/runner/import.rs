//! `vimport` and `vimport-batch` on the runner's VM. The detection and planning live in
//! [`crate::vimport`]; this file only binds its [`Guest`]
//! interface to [`Target`] and adds the storage export of a batch.

use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use vcontainer_abi::runtime::RuntimeSpec;

use super::driver;
use super::rebase;
use super::storage;
use super::target::{Target, VmDeadline};
use crate::agent_client::{self, ExecRequest};
use crate::commands::RunnerCommand;
use crate::context::RuntimeContext;
use crate::ui;
use crate::vimport::execute::{self, Guest, Prepared};
use crate::vimport::ImportTarget;
use vcontainer_proto::exit;

/// [`Guest`] on a [`Target`]: one agent connection per operation.
pub struct TargetGuest<'a> {
    pub target: &'a mut Target,
    pub tool: String,
    /// Added to the environment of every command run (the storage driver of an import).
    pub env: Vec<(String, String)>,
}

impl Guest for TargetGuest<'_> {
    fn push_tar(&mut self, guest_dir: &str, tar: &mut dyn Read) -> anyhow::Result<()> {
        let conn = self.target.connect()?;
        agent_client::push_tar(conn, guest_dir, tar).map_err(|e| self.target.agent_error(e))
    }

    fn run(&mut self, argv: &[String], env: &[(String, String)]) -> anyhow::Result<i32> {
        let conn = self.target.connect()?;
        let mut request = ExecRequest::new(argv.iter().cloned());
        request.env = self.env.clone();
        request.env.extend_from_slice(env);
        let stdout = io::stdout();
        let mut stdout = stdout.lock();
        let status = agent_client::exec(conn, request, None, &mut stdout, &mut io::stderr())
            .map_err(|e| self.target.agent_error(e))?;
        Ok(status.shell_code())
    }

    fn remove(&mut self, path: &str) {
        if let Err(e) = self.target.exec_quiet(&["rm", "-rf", path]) {
            tracing::debug!("removing {path} in the guest: {e:#}");
        }
    }

    fn notice(&mut self, line: &str) {
        ui::info(&self.tool, line);
    }
}

/// How much of an isolated batch VM's console a failed batch prints.
const CONSOLE_TAIL_LINES: usize = 30;

/// Runs `vimport ...` / `vimport-batch ...` (`args` after the command name).
///
/// `vimport-batch` runs on its own VM and state disk in `$TMPDIR` ([`Target::acquire_isolated`]),
/// never on the user's state, exports podman storage in the target's driver (vfs unless
/// `--storage-driver` says otherwise, [`driver`]) and is bound by the `timeout` setting as a
/// whole: when it passes, the VM is stopped, nothing is written, and the exit status is 124.
pub fn run(ctx: &RuntimeContext, spec: &RuntimeSpec, args: &[String]) -> anyhow::Result<i32> {
    let started = Instant::now();
    let batch = RunnerCommand::from_name(ctx.command()) == Some(RunnerCommand::VimportBatch);
    let cwd = std::env::current_dir()?;
    let run_dir = rebase::run_dir(&rebase::new_run_id());
    // everything is checked before a VM is booted
    let prepared = execute::prepare(
        ctx.command(),
        args,
        &import_target(ctx, spec),
        &cwd,
        &run_dir,
        ctx.options.storage.as_deref(),
    )?;
    let (plans, storage_output) = match prepared {
        Prepared::Help(usage) => {
            println!("{usage}");
            return Ok(0);
        }
        Prepared::Imports {
            plans,
            storage_output,
        } => (plans, storage_output),
    };
    if let Some(dest) = &storage_output {
        check_storage_output(dest)?;
    }
    let storage_in = super::storage::input_path(ctx)?;
    let driver_env = driver::env(
        spec,
        ctx.options.storage_driver.as_deref(),
        batch,
        storage_in.as_deref(),
    )?;

    let mut target = if batch {
        Target::acquire_isolated(ctx, spec)?
    } else {
        Target::acquire(ctx, spec)?
    };
    let deadline = match ctx.settings.timeout_secs {
        0 => None,
        _ if !batch => None,
        secs => VmDeadline::arm(&target, Duration::from_secs(secs), started),
    };
    let result = import_and_export(
        ctx,
        spec,
        &mut target,
        &plans,
        &run_dir,
        storage_in.as_deref(),
        storage_output.as_deref(),
        driver_env,
    );
    conclude(ctx, target, deadline, result)
}

/// What the import planner needs to know of the runtime and the arch.
fn import_target(ctx: &RuntimeContext, spec: &RuntimeSpec) -> ImportTarget {
    ImportTarget {
        arch: ctx.arch,
        runtime_binary: spec.runtime_binary.to_string(),
        import_transport: spec.import_transport.to_string(),
        tool_name: ctx.tool.name.clone(),
    }
}

/// `--storage FILE` of an import: its directory must exist and it must not be one.
fn check_storage_output(dest: &Path) -> anyhow::Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("/"));
    if !parent.is_dir() {
        bail!(
            "storage output {}: the directory does not exist",
            dest.display()
        );
    }
    if dest.is_dir() {
        bail!(
            "storage output {}: is a directory; name a file",
            dest.display()
        );
    }
    Ok(())
}

/// The end of an import: a batch that failed shows its VM's console tail (its dir goes with
/// the VM) or, past the time limit, exits 124; otherwise the VM is finished.
fn conclude(
    ctx: &RuntimeContext,
    target: Target,
    deadline: Option<VmDeadline>,
    result: anyhow::Result<i32>,
) -> anyhow::Result<i32> {
    // a batch that completed (its output renamed into place) is a success even if the
    // limit passed just after: only a failed one is reported as timed out
    let timed_out = result.is_err() && deadline.as_ref().is_some_and(VmDeadline::fired);
    if result.is_err() && !timed_out {
        if let Some(tail) = target.isolated_console_tail(CONSOLE_TAIL_LINES) {
            eprintln!(
                "--- last lines of the guest console ---\n{}",
                tail.trim_end()
            );
        }
    }
    if let (Some(deadline), true) = (deadline, timed_out) {
        drop(target);
        deadline.report(ctx);
        return Ok(exit::TIMEOUT);
    }
    let code = result?;
    target.finish()?;
    Ok(code)
}

/// The part of [`run`] on the booted VM: seed, import, export.
#[allow(clippy::too_many_arguments)]
fn import_and_export(
    ctx: &RuntimeContext,
    spec: &RuntimeSpec,
    target: &mut Target,
    plans: &[crate::vimport::ImportPlan],
    run_dir: &str,
    storage_in: Option<&Path>,
    storage_output: Option<&Path>,
    driver_env: Vec<(String, String)>,
) -> anyhow::Result<i32> {
    if let Some(tar) = storage_in {
        storage::seed(target, &spec.storage_export, tar)?;
    }
    target.ensure_services()?;
    let mut guest = TargetGuest {
        target,
        tool: ctx.tool.name.clone(),
        env: driver_env,
    };
    let result = execute::execute(plans, &mut guest);
    guest.remove(run_dir);
    let code = result?;
    if code == 0 {
        target.persist();
    }
    if let Some(dest) = storage_output {
        if code == 0 {
            storage::export_and_report(target, &ctx.tool.name, spec, dest)?;
        } else {
            ui::warn(
                &ctx.tool.name,
                &format!("an import failed (exit {code}); the storage was not exported"),
            );
        }
    }
    Ok(code)
}
