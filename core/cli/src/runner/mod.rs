//! Runs runtime commands in the VM: the part between the command front and the VM layer.
//!
//! The front resolved the tool, arch, state dir and settings; the runtime plugin classifies
//! the command (`CommandPlan`); this module decides where it runs (memres or a batch VM),
//! starts the runtime's services, moves file inputs/outputs and volumes as tar streams,
//! runs the argv (never a shell string) and returns the runtime's exit status.
//!
//! One file per concern: `mode` (memres or batch), `vmconfig` (VmConfig from the context),
//! `target` (the VM a command runs on, services, lost connections), `rebase` (per-run guest
//! dirs), `transfer` (tar streams to and from the guest, atomic host writes), `volumes`
//! (`-v` manifests and sync-back), `ports` (QEMU forwards for `run -d -p`), `records` (the lock
//! on the record files), `storage`
//! (`--storage` / `--input-storage`), `command` (one planned command end to end), `follow_up` (a plan's steps after it), `memres`
//! (`memres ...`), `vshell`, `snapshot` (`snapshot build|ls|rm`).

mod command;
mod context;
mod driver;
mod follow_up;
#[doc(hidden)]
pub mod fuzzing;
mod guest_registry;
mod import;
mod memres;
mod mode;
mod ports;
mod rebase;
mod snapshot;

mod storage;
mod target;
#[cfg(test)]
mod test_plans;
mod transfer;
mod vmconfig;
mod volumes;
mod vshell;

use anyhow::Context;
use vcontainer_abi::runtime::CommandClass;

use crate::commands::RunnerCommand;
use crate::context::RuntimeContext;

/// Runs one runtime command (the front's hand-over point) and returns its exit status.
pub fn run(ctx: RuntimeContext) -> anyhow::Result<i32> {
    let plugin = ctx
        .plugins
        .require_runtime(&ctx.tool.runtime)
        .context("loading the runtime plugin")?;
    let spec = plugin.spec();
    let argv = utf8_args(&ctx)?;
    match RunnerCommand::from_name(ctx.command()) {
        Some(RunnerCommand::Memres) => return memres::run(&ctx, &spec, &argv[1..]),
        // the old tool's word for it (over ssh there): the engine API on the host
        Some(RunnerCommand::Vexpose) => {
            let mut args = vec!["start".to_string(), "--expose".to_string()];
            args.extend(argv[1..].iter().cloned());
            return memres::run(&ctx, &spec, &args);
        }
        Some(RunnerCommand::Context) => return context::run(&ctx, &spec, &argv[1..]),
        Some(RunnerCommand::Vshell) => return vshell::run(&ctx, &spec, &argv[1..]),
        Some(RunnerCommand::Snapshot) => return snapshot::run(&ctx, &spec, &argv[1..]),
        Some(RunnerCommand::Vimport | RunnerCommand::VimportBatch) => {
            return import::run(&ctx, &spec, &argv[1..])
        }
        None => {}
    }
    let plan = plugin
        .plan(&argv)
        .map_err(|e| anyhow::anyhow!("{}: {e}", ctx.command()))?;
    if plan.class == CommandClass::Own {
        anyhow::bail!(
            "'{}' is not available in this version of {}",
            ctx.command(),
            ctx.tool.name
        );
    }
    command::run(&ctx, &spec, plan)
}

/// The command line as UTF-8: the runtime plugins and the guest protocol take strings.
fn utf8_args(ctx: &RuntimeContext) -> anyhow::Result<Vec<String>> {
    ctx.argv
        .iter()
        .map(|a| {
            a.to_str().map(str::to_string).with_context(|| {
                format!(
                    "argument {:?} is not valid UTF-8; the guest cannot receive it",
                    a.to_string_lossy()
                )
            })
        })
        .collect()
}
