//! `vshell [sh args]`: a shell in the VM itself (not in a container), on the user's terminal.
//! Runs on the memres VM (started if needed, like any command) or, with `--no-daemon`, in a
//! one-shot VM. The runtime's services are started first so `docker`/`podman` work in it.

use std::io::IsTerminal;

use vcontainer_abi::runtime::RuntimeSpec;

use super::target::Target;
use crate::agent_client::{self, ExecRequest, WindowSize};
use crate::context::RuntimeContext;
use crate::ui;

pub fn run(ctx: &RuntimeContext, spec: &RuntimeSpec, args: &[String]) -> anyhow::Result<i32> {
    let (storage_in, driver_env) = super::storage::input_and_driver_env(ctx, spec)?;
    let mut target = Target::acquire(ctx, spec)?;
    if let Some(tar) = &storage_in {
        super::storage::seed(&mut target, &spec.storage_export, tar)?;
    }
    target.ensure_services()?;
    let mut argv = vec!["/bin/sh".to_string()];
    argv.extend(args.iter().cloned());
    let terminal = std::io::stdin().is_terminal();
    if super::command::may_carry_secret(&argv, terminal) {
        target.note_secret()?;
    }
    let mut request = ExecRequest::new(argv);
    request.env = driver_env;
    request.stdin = true;
    if terminal {
        request.tty = Some(WindowSize { rows: 24, cols: 80 });
        if args.is_empty() {
            ui::info(
                &ctx.tool.name,
                "Opening VM shell (type 'exit' to return)...",
            );
        }
    }
    let (conn, _watch) = target.connect_watched()?;
    let status =
        agent_client::exec_interactive(conn, request).map_err(|e| target.agent_error(e))?;
    target.finish()?;
    Ok(status.shell_code())
}
