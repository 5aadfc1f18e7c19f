//! `vimport` and `vimport-batch` on the runner's VM. Written by helper "vimport": the
//! detection and planning live in [`crate::vimport`]; this file only binds its [`Guest`]
//! interface to [`Target`] and adds the storage export of a batch.

use std::io::{self, Read};
use std::path::Path;

use anyhow::bail;
use vcontainer_abi::runtime::RuntimeSpec;

use super::rebase;
use super::storage;
use super::target::Target;
use super::transfer;
use crate::agent_client::{self, ExecRequest};
use crate::dispatch::RuntimeContext;
use crate::registry;
use crate::ui;
use crate::vimport::execute::{self, Guest, Prepared};
use crate::vimport::ImportTarget;

/// [`Guest`] on a [`Target`]: one agent connection per operation.
pub struct TargetGuest<'a> {
    pub target: &'a mut Target,
    pub tool: String,
}

impl Guest for TargetGuest<'_> {
    fn push_tar(&mut self, guest_dir: &str, tar: &mut dyn Read) -> anyhow::Result<()> {
        let conn = self.target.connect()?;
        agent_client::push_tar(conn, guest_dir, tar).map_err(|e| self.target.agent_error(e))
    }

    fn run(&mut self, argv: &[String], env: &[(String, String)]) -> anyhow::Result<i32> {
        let conn = self.target.connect()?;
        let mut request = ExecRequest::new(argv.iter().cloned());
        request.env = env.to_vec();
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

/// Runs `vimport ...` / `vimport-batch ...` (`args` after the command name).
pub fn run(ctx: &RuntimeContext, spec: &RuntimeSpec, args: &[String]) -> anyhow::Result<i32> {
    let cwd = std::env::current_dir()?;
    let import_target = ImportTarget {
        arch: ctx.arch,
        runtime_binary: spec.runtime_binary.to_string(),
        import_transport: spec.import_transport.to_string(),
        tool_name: ctx.tool.name.clone(),
    };
    let run_dir = rebase::run_dir(&rebase::new_run_id());
    // everything is checked before a VM is booted
    let prepared = execute::prepare(
        ctx.command(),
        args,
        &import_target,
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
    }
    let storage_in = match &ctx.options.input_storage {
        Some(p) => {
            let p = crate::state_dir::absolute_lexical(p, &cwd);
            if !p.is_file() {
                bail!("--input-storage {}: not a file", p.display());
            }
            Some(p)
        }
        None => None,
    };

    let mut target = Target::acquire(ctx, spec)?;
    if let Some(tar) = &storage_in {
        storage::seed(&mut target, &spec.storage_export, tar)?;
    }
    target.ensure_services()?;
    let mut guest = TargetGuest {
        target: &mut target,
        tool: ctx.tool.name.clone(),
    };
    let result = execute::execute(&plans, &mut guest);
    guest.remove(&run_dir);
    let code = result?;
    if let Some(dest) = &storage_output {
        if code == 0 {
            storage::export(&mut target, &spec.storage_export, dest)?;
            ui::info(
                &ctx.tool.name,
                &format!(
                    "storage exported to {} ({}; {})",
                    dest.display(),
                    ui::human_size(transfer::size_of(dest)),
                    spec.storage_export.description
                ),
            );
        } else {
            ui::warn(
                &ctx.tool.name,
                &format!("an import failed (exit {code}); the storage was not exported"),
            );
        }
    }
    target.finish()?;
    Ok(code)
}

/// The registry setup of a runtime command, checked before any VM work (a bad `--config`
/// fails here, exit 125, nothing booted). None when the command reaches no registry (no
/// network and no auth file): then nothing is done in the guest.
pub fn registry_setup(
    ctx: &RuntimeContext,
    spec: &RuntimeSpec,
    needs_network: bool,
) -> anyhow::Result<Option<registry::GuestSetup>> {
    let opts = registry::options_for(ctx)?;
    if !needs_network && opts.auth.is_none() {
        return Ok(None);
    }
    let base = registry::base_daemon_json(spec);
    let setup = registry::guest_setup(
        spec.runtime_binary.as_str(),
        base.as_deref(),
        &opts,
        &rebase::new_run_id(),
    )?;
    Ok(Some(setup))
}

/// Applies the setup after the services are up; returns the command's extra environment.
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
    let mut guest = TargetGuest {
        target,
        tool: ctx.tool.name.clone(),
    };
    registry::apply(setup, &mut guest)
}

/// Removes the per-command auth copy from the guest, whatever the command's outcome.
pub fn remove_registry_auth(
    target: &mut Target,
    ctx: &RuntimeContext,
    setup: Option<&registry::GuestSetup>,
) {
    if let Some(setup) = setup {
        let mut guest = TargetGuest {
            target,
            tool: ctx.tool.name.clone(),
        };
        registry::remove_auth(setup, &mut guest);
    }
}

/// `--registry R` for a `pull` of an unqualified name (see [`registry::qualify_pull`]):
/// `R/<image>` first (tagged as `<image>`), then Docker Hub. None when it does not apply;
/// the command then runs as planned.
pub fn default_registry_pull(
    target: &mut Target,
    ctx: &RuntimeContext,
    setup: Option<&registry::GuestSetup>,
    plan: &vcontainer_abi::runtime::CommandPlan,
    env: &[(String, String)],
) -> Option<anyhow::Result<i32>> {
    let attempts = registry::qualify_pull(&plan.argv_strings(), &setup?.options)?;
    let mut guest = TargetGuest {
        target,
        tool: ctx.tool.name.clone(),
    };
    let mut run = || -> anyhow::Result<i32> {
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
                guest.notice("not found in the default registry; trying docker.io");
            }
        }
        Ok(code)
    };
    Some(run())
}
