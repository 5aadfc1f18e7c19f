//! A runtime command's registry options applied to its VM: the guest configuration
//! installed when it differs from what the VM has, the per-command credentials pushed and
//! held until the command ends, and `--registry R`'s pull-and-tag. What to write comes from
//! [`crate::registry`] (pure planning); this module only runs it on a [`Target`].

use std::io;

use vcontainer_abi::runtime::{CommandPlan, RuntimeSpec};

use super::import::TargetGuest;
use super::rebase;
use super::target::{Held, Target};
use crate::agent_client::{self, ExecRequest};
use crate::context::RuntimeContext;
use crate::registry;
use crate::ui;
use crate::vimport::execute::Guest;

/// The registry setup of a runtime command, checked before any VM work (a bad `--config`
/// or `--ca-cert` fails here, exit 125, nothing booted). None when the command reaches no
/// registry (no network and no credentials): then nothing is done in the guest.
pub fn registry_setup(
    ctx: &RuntimeContext,
    spec: &RuntimeSpec,
    plan: &CommandPlan,
) -> anyhow::Result<Option<registry::GuestSetup>> {
    let opts = registry::options_for(ctx)?;
    if !plan.needs_network && opts.auth.is_none() && opts.credentials.is_none() {
        return Ok(None);
    }
    let setup = registry::guest_setup(
        spec,
        &opts,
        &rebase::new_run_id(),
        plan.image_ref().map(|(image, _)| image),
    )?;
    Ok(Some(setup))
}

/// Host record (in the state dir) of the registry configuration installed in the running
/// memres VM, so an unchanged configuration is not pushed again.
const APPLIED_RECORD: &str = "registry-applied.json";

#[derive(serde::Serialize, serde::Deserialize, PartialEq, Eq, Debug)]
struct AppliedRecord {
    /// The QEMU process the configuration went into (a restarted VM starts from scratch).
    qemu_pid: i32,
    qemu_start_time: u64,
    fingerprint: String,
}

/// The VM's identity for [`AppliedRecord`], and the record file; None for a batch VM
/// (booted for this command: it has the boot configuration).
fn applied_record_of(target: &Target) -> Option<(std::path::PathBuf, AppliedRecord)> {
    let instance = target.instance()?;
    let qemu = instance.record.qemu();
    Some((
        instance.state_dir.join(APPLIED_RECORD),
        AppliedRecord {
            qemu_pid: qemu.pid,
            qemu_start_time: qemu.start_time,
            fingerprint: String::new(),
        },
    ))
}

/// Applies the setup after the services are up: installs the registry configuration when
/// it differs from what the VM has, pushes the per-command credentials (held by the target
/// until the command ends, [`Held::GuestPath`]), and returns the command's extra
/// environment.
pub fn apply_registry(
    target: &mut Target,
    ctx: &RuntimeContext,
    setup: Option<&registry::GuestSetup>,
) -> anyhow::Result<Vec<(String, String)>> {
    let Some(setup) = setup else {
        return Ok(Vec::new());
    };
    // concurrent commands on one memres VM write the same guest files (runner)
    let _config_lock = target.config_lock()?;
    let record = applied_record_of(target);
    let installed = match &record {
        Some((path, vm)) => std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<AppliedRecord>(&b).ok())
            .filter(|r| r.qemu_pid == vm.qemu_pid && r.qemu_start_time == vm.qemu_start_time)
            .map(|r| r.fingerprint),
        None => None,
    }
    .unwrap_or_else(|| setup.boot_config.fingerprint());
    let wanted = setup.config.fingerprint();
    let mut guest = TargetGuest {
        target,
        tool: ctx.tool.name.clone(),
        env: Vec::new(),
    };
    if wanted != installed {
        tracing::debug!(%wanted, %installed, "installing the registry configuration");
        if let Some((path, vm)) = &record {
            // from here until the record is rewritten the guest state is unknown: an empty
            // fingerprint matches nothing, so a failed install is redone by the next command
            crate::vm::instance::write_atomic(path, &serde_json::to_vec(vm)?)?;
        }
        registry::install(&setup.config, &mut guest)?;
        if let Some((path, mut vm)) = record {
            vm.fingerprint = wanted;
            crate::vm::instance::write_atomic(&path, &serde_json::to_vec(&vm)?)?;
        }
    } else {
        tracing::debug!(%wanted, "registry configuration unchanged");
    }
    // held before the push, so that a push that fails halfway is cleaned up too
    for path in &setup.cleanup {
        guest.target.hold(Held::GuestPath(path.clone()));
    }
    if setup.auth_push.is_some() || setup.options.credentials.is_some() {
        guest.target.note_secret()?;
    }
    registry::push_auth(setup, &mut guest)
}

/// Runs a helper command whose output is progress, not the command's result: both
/// streams go to stderr so stdout stays the container's.
fn run_to_stderr(
    target: &mut Target,
    argv: &[String],
    env: &[(String, String)],
) -> anyhow::Result<i32> {
    let conn = target.connect()?;
    let mut request = ExecRequest::new(argv.iter().cloned());
    request.env = env.to_vec();
    let status = agent_client::exec(conn, request, None, &mut io::stderr(), &mut io::stderr())
        .map_err(|e| target.agent_error(e))?;
    Ok(status.shell_code())
}

/// `--registry R` for a command naming an unqualified image (see
/// [`registry::default_registry_plan`]). A `pull` is run here (`R/<image>` first, tagged as
/// `<image>`, then the runtime's hub) and its status returned; for `run`/`create`/`vrun` a
/// missing image is pulled from `R` first and None is returned (the command then runs as
/// planned, and the runtime falls back to its hub itself if `R` did not have it).
pub fn default_registry(
    target: &mut Target,
    ctx: &RuntimeContext,
    setup: Option<&registry::GuestSetup>,
    plan: &CommandPlan,
    env: &[(String, String)],
) -> Option<anyhow::Result<i32>> {
    let setup = setup?;
    let step = registry::default_registry_plan(plan, setup)?;
    let registry = setup.options.default_registry.clone().unwrap_or_default();
    let fallback = format!(
        "not found in the default registry {registry}; trying {}",
        setup.hub
    );
    match step {
        registry::DefaultRegistry::Pull(attempts) => {
            let mut guest = TargetGuest {
                target,
                tool: ctx.tool.name.clone(),
                env: Vec::new(),
            };
            Some(pull_in_turn(&mut guest, &attempts, env, &fallback))
        }
        registry::DefaultRegistry::PrePull { check, pull, tag } => {
            pre_pull(target, ctx, [&check, &pull, &tag], env, &fallback)
                .err()
                .map(Err)
        }
    }
}

/// `pull` with a default registry: each attempt's commands in turn until one attempt
/// succeeds; the status of the last one run.
fn pull_in_turn(
    guest: &mut TargetGuest<'_>,
    attempts: &[Vec<Vec<String>>],
    env: &[(String, String)],
    fallback: &str,
) -> anyhow::Result<i32> {
    let mut code = 1;
    for (i, attempt) in attempts.iter().enumerate() {
        for argv in attempt {
            code = guest.run(argv, env)?;
            if code != 0 {
                break;
            }
        }
        if code == 0 {
            return Ok(0);
        }
        if i + 1 < attempts.len() {
            guest.notice(fallback);
        }
    }
    Ok(code)
}

/// `run`/`create`/`vrun` with a default registry: when `check` says the image is missing,
/// `pull` it from the registry and `tag` it with the name the command uses.
fn pre_pull(
    target: &mut Target,
    ctx: &RuntimeContext,
    [check, pull, tag]: [&Vec<String>; 3],
    env: &[(String, String)],
    fallback: &str,
) -> anyhow::Result<()> {
    let check: Vec<&str> = check.iter().map(String::as_str).collect();
    if target.exec_capture(&check)?.0.success() {
        return Ok(());
    }
    if run_to_stderr(target, pull, env)? == 0 {
        let tag: Vec<&str> = tag.iter().map(String::as_str).collect();
        target.exec_quiet(&tag)?;
    } else {
        ui::info(&ctx.tool.name, fallback);
    }
    Ok(())
}
