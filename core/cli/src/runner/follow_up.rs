//! A plan's follow-up steps ([`CommandPlan::after`]): guest commands the plugin asks for
//! after the main one (podman's plugin removes a foreground `run --rm`'s container only once
//! its exit status was read, docs/plugins.md "Follow-up steps"). They run on the same VM
//! before it is released, with the command's environment, whatever the main status was;
//! their output stays out of the user's stdout/stderr unless one fails, and then it is a
//! warning: the status the user gets stays the main command's. The same steps travel with
//! the main exec (`ExecRequest::if_host_lost`, set in command.rs), so the agent runs them
//! when this client is killed mid-command.

use anyhow::bail;
use vcontainer_abi::runtime::{CommandPlan, FollowUp};

use super::target::Target;
use crate::agent_client::{self, ExecRequest};
use crate::ui;

/// Runs each step in turn; a failed one is reported and the next still runs. Returns the
/// steps that succeeded, whose container effects the caller applies to its records.
pub fn run<'p>(
    target: &mut Target,
    plan: &'p CommandPlan,
    env: &[(String, String)],
) -> Vec<&'p FollowUp> {
    let mut done = Vec::new();
    for step in plan.after.iter() {
        match run_step(target, step, env) {
            Ok(()) => done.push(step),
            Err(e) => ui::warn(target.tool(), &format!("{e:#}")),
        }
    }
    done
}

/// One step, its output captured; a failure is an error naming the step and its stderr.
fn run_step(target: &mut Target, step: &FollowUp, env: &[(String, String)]) -> anyhow::Result<()> {
    let argv: Vec<String> = step.argv.iter().map(|a| a.to_string()).collect();
    tracing::debug!(argv = ?vcontainer_proto::redact::argv(&argv), "follow-up in the guest");
    let shown = argv.join(" ");
    let mut request = ExecRequest::new(argv);
    request.env.extend_from_slice(env);
    let conn = target.connect()?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = agent_client::exec(conn, request, None, &mut out, &mut err)
        .map_err(|e| target.agent_error(e))?;
    if !status.success() {
        bail!(
            "follow-up `{shown}` failed in the guest ({status:?}): {}",
            String::from_utf8_lossy(&err).trim()
        );
    }
    Ok(())
}
