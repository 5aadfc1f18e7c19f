//! One planned runtime command, end to end: check the host paths, get the VM, start the
//! services, push the inputs, run the argv, sync volumes back, pull the outputs, export the
//! storage, and return the runtime's exit status.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use vcontainer_abi::runtime::{
    CommandPlan, ContainerEffect, EffectKind, FileInput, InputKind, RuntimeSpec,
};

use super::follow_up;
use super::guest_registry;
use super::ports;
use super::rebase;
use super::storage;
use super::target::{Deadline, Held, Target};
use super::transfer::{self, PushSource};
use super::volumes::{self, Volume};
use crate::agent_client::{self, ExecRequest, ExitStatus, WindowSize};
use crate::context::RuntimeContext;
use crate::ui;
use vcontainer_proto::exit;

/// A host path as the user meant it: `~/x` under $HOME, relative against the cwd.
pub fn host_path(raw: &str, cwd: &Path) -> anyhow::Result<PathBuf> {
    let expanded = if raw == "~" || raw.starts_with("~/") {
        let home = crate::tool::home_dir()?;
        home.join(raw.trim_start_matches('~').trim_start_matches('/'))
    } else {
        PathBuf::from(raw)
    };
    Ok(crate::state_dir::absolute_lexical(&expanded, cwd))
}

/// Checks an input before anything is booted, with the old tool's hints.
fn check_input(ctx: &RuntimeContext, input: &FileInput, host: &Path) -> anyhow::Result<()> {
    let shown = input.host_path.as_str();
    let meta = match std::fs::metadata(host) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if input.kind == InputKind::Volume {
                bail!("volume source not found: {shown}");
            }
            bail!("not found: {shown}");
        }
        Err(e) => return Err(e).with_context(|| format!("reading {shown}")),
    };
    match input.kind {
        InputKind::File if meta.is_dir() => {
            if ctx.command() == "import" {
                bail!(
                    "import only accepts tarballs, not directories; for OCI directories use: {} vimport {shown} <name:tag>",
                    ctx.tool.name
                );
            }
            bail!("{shown} is a directory; a file is needed here");
        }
        InputKind::Dir if !meta.is_dir() => bail!("{shown} is not a directory"),
        _ => Ok(()),
    }
}

/// Writes to two sinks (the user's stdout and a capture of it).
struct Tee<'a> {
    out: &'a mut dyn Write,
    copy: &'a mut Vec<u8>,
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write_all(buf)?;
        self.copy.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The runtime CLI the plan runs in the guest (its first word), for the follow-up commands
/// the core runs itself (`inspect`, refreshing volumes).
fn runtime_binary(plan: &CommandPlan) -> String {
    plan.argv.first().map(|a| a.to_string()).unwrap_or_default()
}

/// One command on its way through the runner: the plugin's plan and everything the core
/// checked and decided for it before any VM work.
struct RunPlan {
    plan: CommandPlan,
    /// The host path of each of `plan.inputs` (checked), and of each of `plan.outputs`.
    hosts: Vec<PathBuf>,
    out_hosts: Vec<PathBuf>,
    /// `--storage FILE` (checked) and `--input-storage FILE`.
    storage_out: Option<PathBuf>,
    storage_in: Option<PathBuf>,
    /// Environment of every guest command: the storage driver, then the registry's.
    env: Vec<(String, String)>,
    registry: Option<crate::registry::GuestSetup>,
    /// A foreground `run -p`'s forwards, for the command's life.
    foreground: Vec<ports::Wanted>,
    /// The per-run guest dir the plan's inputs and outputs were moved to.
    run_dir: String,
}

/// Runs `plan` (argv already classified by the runtime plugin).
pub fn run(ctx: &RuntimeContext, spec: &RuntimeSpec, plan: CommandPlan) -> anyhow::Result<i32> {
    let started = Instant::now();
    let mut run = prepare(ctx, spec, plan)?;
    let mut target = acquire(ctx, spec, &mut run)?;
    tracing::debug!(elapsed = ?started.elapsed(), "VM and services ready");
    stage(ctx, &mut target, &mut run)?;
    let result = match guest_registry::default_registry(
        &mut target,
        ctx,
        run.registry.as_ref(),
        &run.plan,
        &run.env,
    ) {
        Some(result) => result,
        None => run_planned(ctx, &mut target, &run),
    };
    target.release_held();
    let code = result?;
    if code == 0 && WRITES_IMAGES.contains(&ctx.command()) {
        target.persist();
    }
    let code = export_storage(ctx, spec, &mut target, &run, code)?;
    let code = finish(ctx, target, code);
    tracing::debug!(elapsed = ?started.elapsed(), code, "command done");
    Ok(code)
}

/// Everything checked before a VM is booted: host paths, `--storage`, the input storage and
/// its driver, the registry options, the ports of a foreground run.
fn prepare(
    ctx: &RuntimeContext,
    spec: &RuntimeSpec,
    mut plan: CommandPlan,
) -> anyhow::Result<RunPlan> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let mut hosts = Vec::new();
    for input in plan.inputs.iter() {
        let host = host_path(&input.host_path, &cwd)?;
        check_input(ctx, input, &host)?;
        hosts.push(host);
    }
    let mut out_hosts = Vec::new();
    for output in plan.outputs.iter() {
        let host = host_path(&output.host_path, &cwd)?;
        let parent = host.parent().unwrap_or(Path::new("/"));
        if !parent.is_dir() {
            bail!("{}: the directory does not exist", parent.display());
        }
        out_hosts.push(host);
    }
    let storage_out = storage_out(ctx, &cwd)?;
    let (storage_in, driver_env) = super::storage::input_and_driver_env(ctx, spec)?;
    if ctx.options.no_network {
        rebase::without_network(ctx.command(), &mut plan)?;
    }
    let registry = guest_registry::registry_setup(ctx, spec, &plan)?;
    let foreground = foreground_ports(ctx, &plan);
    Ok(RunPlan {
        plan,
        hosts,
        out_hosts,
        storage_out,
        storage_in,
        env: driver_env,
        registry,
        foreground,
        run_dir: rebase::run_dir(&rebase::new_run_id()),
    })
}

/// `--storage FILE`: its directory must exist and it must not be one.
fn storage_out(ctx: &RuntimeContext, cwd: &Path) -> anyhow::Result<Option<PathBuf>> {
    let Some(p) = &ctx.options.storage else {
        return Ok(None);
    };
    let p = crate::state_dir::absolute_lexical(p, cwd);
    let parent = p.parent().unwrap_or(Path::new("/"));
    if !parent.is_dir() {
        bail!("--storage {}: the directory does not exist", p.display());
    }
    if p.is_dir() {
        bail!("--storage {}: is a directory; name a file", p.display());
    }
    Ok(Some(p))
}

/// A foreground `run -p H:C` is forwarded for the command's life: on a one-shot VM from
/// boot, on a memres VM through QMP until the command ends (the old tool forwarded H to the
/// VM's H only, or nothing: docs/old-bugs.md §12).
fn foreground_ports(ctx: &RuntimeContext, plan: &CommandPlan) -> Vec<ports::Wanted> {
    if plan.detach || !matches!(ctx.command(), "run" | "vrun") {
        return Vec::new();
    }
    let (wanted, skipped) = ports::wanted(plan);
    for s in skipped {
        ui::warn(&ctx.tool.name, &s);
    }
    wanted
}

/// The VM (memres or one-shot, forwarding the foreground ports from boot), seeded with the
/// input storage, its services running and the registry settings applied.
fn acquire(ctx: &RuntimeContext, spec: &RuntimeSpec, run: &mut RunPlan) -> anyhow::Result<Target> {
    let forwards = run.foreground.iter().map(|w| w.forward.clone()).collect();
    let mut target = Target::acquire_forwarding(ctx, spec, forwards)?;
    if let Some(tar) = &run.storage_in {
        storage::seed(&mut target, &spec.storage_export, tar)?;
    }
    target.ensure_services()?;
    let registry_env = guest_registry::apply_registry(&mut target, ctx, run.registry.as_ref())?;
    // the storage driver and the registry's variables apply to every guest command
    run.env.extend(registry_env);
    Ok(target)
}

/// Places the command on the VM: live shares for a memres VM's volumes, the per-run dir
/// (held until the command ends unless a detached container keeps its volumes there), and
/// the foreground forwards of a memres VM (held likewise).
fn stage(ctx: &RuntimeContext, target: &mut Target, run: &mut RunPlan) -> anyhow::Result<()> {
    if let Some(instance) = target.instance().filter(|i| i.shares_volumes()) {
        let hosts = std::mem::take(&mut run.hosts);
        let (kept, problems) = volumes::shared::bind_live(&mut run.plan, hosts, |dir, ro| {
            crate::vm::shares::share(instance, dir, ro).map_err(|e| e.to_string())
        });
        run.hosts = kept;
        for p in problems {
            ui::warn(&ctx.tool.name, &p);
        }
    }
    rebase::rebase_plan(&mut run.plan, &run.run_dir);
    let plan = &run.plan;
    let uses_run_dir = !plan.inputs.is_empty() || !plan.outputs.is_empty();
    let keep_run_dir = plan.detach && plan.inputs.iter().any(|i| i.kind == InputKind::Volume);
    if uses_run_dir && !keep_run_dir {
        target.hold(Held::GuestPath(run.run_dir.clone()));
    }
    if let Some(instance) = target.instance().filter(|_| !run.foreground.is_empty()) {
        ports::add(instance, &run.foreground)?;
        let forwards = run.foreground.iter().map(|w| w.forward.clone()).collect();
        target.hold(Held::Forwards(forwards));
    }
    Ok(())
}

/// `--storage FILE`: the runtime's storage as a tar, after a successful command.
fn export_storage(
    ctx: &RuntimeContext,
    spec: &RuntimeSpec,
    target: &mut Target,
    run: &RunPlan,
    code: i32,
) -> anyhow::Result<i32> {
    let Some(dest) = &run.storage_out else {
        return Ok(code);
    };
    if code != 0 {
        ui::warn(
            &ctx.tool.name,
            &format!("the command failed (exit {code}); the storage was not exported"),
        );
        return Ok(code);
    }
    storage::export_and_report(target, &ctx.tool.name, spec, dest)?;
    Ok(code)
}

/// Ends the command's use of the VM; a one-shot VM that did not shut down cleanly turns a
/// success into the tool's failure.
fn finish(ctx: &RuntimeContext, target: Target, code: i32) -> i32 {
    match target.finish() {
        Ok(()) => code,
        Err(e) => {
            ui::warn(&ctx.tool.name, &format!("{e:#}"));
            if code == 0 {
                exit::TOOL_ERROR
            } else {
                code
            }
        }
    }
}

/// Commands that store images: on a memres VM their result is synced to the state disk
/// before they return ([`Target::persist`]).
const WRITES_IMAGES: &[&str] = &["pull", "load", "import", "build", "commit", "tag", "image"];

/// The command itself: inputs in, the argv run, volumes and outputs back, then the
/// container bookkeeping of a memres VM.
fn run_planned(ctx: &RuntimeContext, target: &mut Target, run: &RunPlan) -> anyhow::Result<i32> {
    let vols = push_inputs(target, run)?;
    let forwards = detached_forwards(ctx, target, &run.plan)?;
    let binary = runtime_binary(&run.plan);
    refresh_started(ctx, target, &run.plan.effect, &binary);
    let live_vols = live_volumes(ctx, target, &run.plan, &vols);
    let detached = !forwards.is_empty() || live_vols;
    let (status, stdout) = exec(ctx, target, run, detached)?;
    // before anything below can fail: the container must not outlive the command
    for step in follow_up::run(target, &run.plan, &run.env) {
        bookkeeping(ctx, target, &step.effect, &binary, 0)?;
    }
    if detached {
        finish_detached(
            target,
            &run.plan,
            &forwards,
            &vols,
            &run.run_dir,
            &stdout,
            status.success(),
        );
    }
    let mut code = status.shell_code();
    if !run.plan.detach {
        code = sync_back(ctx, target, &vols, code);
    }
    if code == 0 {
        pull_outputs(ctx, target, run)?;
    }
    bookkeeping(ctx, target, &run.plan.effect, &binary, code)?;
    Ok(code)
}

/// A stopped detached container on a memres VM sees the host's edits to its volumes when it
/// starts.
fn refresh_started(
    ctx: &RuntimeContext,
    target: &mut Target,
    effect: &ContainerEffect,
    binary: &str,
) {
    let starts = matches!(effect.kind, EffectKind::Start | EffectKind::AttachedStart);
    if !starts || target.instance().is_none() {
        return;
    }
    let operands: Vec<String> = effect.containers.iter().map(|c| c.to_string()).collect();
    for p in volumes::live::refresh(target, binary, &operands) {
        ui::warn(&ctx.tool.name, &p);
    }
}

/// Creates the output dirs and pushes every input (a volume's contents are recorded for the
/// sync back).
fn push_inputs(target: &mut Target, run: &RunPlan) -> anyhow::Result<Vec<Volume>> {
    // output dirs must exist for the runtime to write into
    for output in run.plan.outputs.iter() {
        if let Some((dir, _)) = output.guest_path.rsplit_once('/') {
            transfer::push(target, PushSource::Empty, dir)?;
        }
    }
    let mut vols = Vec::new();
    for (input, host) in run.plan.inputs.iter().zip(&run.hosts) {
        let guest = input.guest_path.as_str();
        match input.kind {
            InputKind::Volume => vols.push(volumes::push(target, host, guest, input.read_only)?),
            InputKind::Dir => transfer::push(target, PushSource::DirContents(host), guest)?,
            InputKind::File | InputKind::Path => {
                let (dir, name) = guest
                    .rsplit_once('/')
                    .with_context(|| format!("bad guest path {guest}"))?;
                transfer::push(target, PushSource::Named { path: host, name }, dir)?;
            }
        }
    }
    Ok(vols)
}

/// The forwards of a detached container's ports, on a memres VM only; held until the
/// container is known to run ([`finish_detached`] keeps them).
fn detached_forwards(
    ctx: &RuntimeContext,
    target: &mut Target,
    plan: &CommandPlan,
) -> anyhow::Result<Vec<ports::Wanted>> {
    if !plan.detach || plan.ports.is_empty() {
        return Ok(Vec::new());
    }
    let (wanted, skipped) = ports::wanted(plan);
    for s in skipped {
        ui::warn(&ctx.tool.name, &s);
    }
    let Some(instance) = target.instance() else {
        ui::warn(
            &ctx.tool.name,
            "host ports are forwarded only to a memres VM (this command runs in a one-shot VM)",
        );
        return Ok(Vec::new());
    };
    ports::add(instance, &wanted)?;
    target.hold(Held::Forwards(
        wanted.iter().map(|w| w.forward.clone()).collect(),
    ));
    Ok(wanted)
}

/// A detached container on a memres VM keeps its rw volumes: recorded once it started (with
/// a note when they are copies, not live shares).
fn live_volumes(
    ctx: &RuntimeContext,
    target: &Target,
    plan: &CommandPlan,
    vols: &[Volume],
) -> bool {
    let live = plan.detach && target.instance().is_some() && vols.iter().any(|v| !v.read_only);
    if let Some(note) = target
        .instance()
        .filter(|_| live)
        .and_then(volumes::shared::copy_mode_notice)
    {
        ui::warn(&ctx.tool.name, &note);
    }
    live
}

/// Whether a command may give the guest a secret, so that its VM is never suspended (its
/// memory written to a file, vm::suspend): a secret option (`redact`), a word that names one
/// (`login` reads a password from stdin or a prompt; `-e DB_PASSWORD=...`; a `sh -c` script),
/// or a terminal, where a person may type anything. Errs on the side of no suspend.
pub(super) fn may_carry_secret(argv: &[String], tty: bool) -> bool {
    const WORDS: &[&str] = &["login", "passw", "secret", "token", "creds", "auth"];
    tty || vcontainer_proto::redact::has_secret(argv)
        || argv.iter().any(|a| {
            let a = a.to_ascii_lowercase();
            WORDS.iter().any(|w| a.contains(w))
        })
}

/// Runs the plan's argv in the guest: on a terminal or with stdin when the plan asks, else
/// streamed, under the `timeout` setting. With `capture`, stdout is also kept (a detached
/// container's id is read from it).
fn exec(
    ctx: &RuntimeContext,
    target: &mut Target,
    run: &RunPlan,
    capture: bool,
) -> anyhow::Result<(ExitStatus, Vec<u8>)> {
    let plan = &run.plan;
    let argv = plan.argv_strings();
    tracing::debug!(argv = ?vcontainer_proto::redact::argv(&argv), "exec in the guest");
    if may_carry_secret(&argv, plan.tty) {
        target.note_secret()?;
    }
    let mut request = ExecRequest::new(argv);
    request.env.extend_from_slice(&run.env);
    // the follow-up steps run by the agent if this client dies mid-command (follow_up.rs)
    request.if_host_lost = plan
        .after
        .iter()
        .map(|step| step.argv.iter().map(|a| a.to_string()).collect())
        .collect();
    let (conn, _watch) = target.connect_watched()?;
    if plan.tty || plan.stdin {
        if plan.tty {
            request.tty = Some(WindowSize { rows: 24, cols: 80 });
        }
        request.stdin = plan.stdin;
        // the id goes to the terminal; forwards are keyed by name (or inspect)
        let status =
            agent_client::exec_interactive(conn, request).map_err(|e| target.agent_error(e))?;
        return Ok((status, Vec::new()));
    }
    let deadline = Deadline::arm(ctx, target, plan, &conn);
    let mut captured = Vec::new();
    let stdout = io::stdout();
    let mut stdout = stdout.lock();
    let mut stderr = io::stderr();
    let r = if capture {
        let mut tee = Tee {
            out: &mut stdout,
            copy: &mut captured,
        };
        agent_client::exec_relaying_signals(conn, request, &mut tee, &mut stderr)
    } else {
        agent_client::exec_relaying_signals(conn, request, &mut stdout, &mut stderr)
    };
    drop(stdout);
    let status = match &deadline {
        Some(d) if d.fired() => {
            d.report(ctx);
            ExitStatus::Code(exit::TIMEOUT)
        }
        _ => r.map_err(|e| target.agent_error(e))?,
    };
    Ok((status, captured))
}

/// Volumes come back after the container exits, whatever its status; a failed sync turns
/// a success into the tool's failure.
fn sync_back(ctx: &RuntimeContext, target: &mut Target, vols: &[Volume], mut code: i32) -> i32 {
    for vol in vols.iter().filter(|v| !v.read_only) {
        match volumes::sync_back(target, vol) {
            Ok(report) => {
                for s in &report.skipped {
                    ui::warn(
                        &ctx.tool.name,
                        &format!("volume {}: {s}", vol.host.display()),
                    );
                }
                tracing::debug!(volume = %vol.host.display(), ?report, "volume synced back");
            }
            Err(e) => {
                ui::warn(
                    &ctx.tool.name,
                    &format!("syncing volume {} back failed: {e:#}", vol.host.display()),
                );
                if code == 0 {
                    code = exit::TOOL_ERROR;
                }
            }
        }
    }
    code
}

/// Brings the plan's outputs to the host (`save -o`, `cp`, `export -o`).
fn pull_outputs(ctx: &RuntimeContext, target: &mut Target, run: &RunPlan) -> anyhow::Result<()> {
    for (output, host) in run.plan.outputs.iter().zip(&run.out_hosts) {
        let dest =
            transfer::pull_output(target, &output.guest_path, host, output.into_existing_dir)?;
        if matches!(ctx.command(), "save" | "image" | "export" | "container") {
            ui::info(
                &ctx.tool.name,
                &format!(
                    "Saved to {} ({})",
                    dest.display(),
                    ui::human_size(transfer::size_of(&dest))
                ),
            );
        }
    }
    Ok(())
}

/// A container effect (the plan's, or a follow-up step's) on the core's records: after a
/// successful stop/rm/kill the containers' live volumes and forwards go; after a start their
/// ports are forwarded again; a container list is followed by the forwards table. `binary`
/// is the runtime CLI that inspects restarted containers.
fn bookkeeping(
    ctx: &RuntimeContext,
    target: &mut Target,
    effect: &ContainerEffect,
    binary: &str,
    code: i32,
) -> anyhow::Result<()> {
    let tool = ctx.tool.name.as_str();
    let warn_all = |problems: Vec<String>| problems.iter().for_each(|p| ui::warn(tool, p));
    let operands: Vec<String> = effect.containers.iter().map(|c| c.to_string()).collect();
    let operands = operands.as_slice();
    match effect.kind {
        kind @ (EffectKind::Stop | EffectKind::Remove) if code == 0 => {
            // detached containers' volumes come back when they stop or go
            let removes = kind == EffectKind::Remove;
            warn_all(volumes::live::release(target, operands, removes));
            if let Some(instance) = target.instance() {
                warn_all(ports::release(instance, operands).1);
            }
        }
        EffectKind::Start | EffectKind::Restart if code == 0 => {
            warn_all(ports::restore_started(target, binary, operands));
        }
        EffectKind::List => {
            if let Some(instance) = target.instance() {
                let records = ports::load(&instance.state_dir);
                if !records.is_empty() {
                    let mut out = io::stdout().lock();
                    out.write_all(ports::table(&records).as_bytes())?;
                    out.flush()?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Records the forwards and live volumes of a started detached container (by name and id),
/// which then owns the forwards; when it did not start, the target releases them.
fn finish_detached(
    target: &mut Target,
    plan: &CommandPlan,
    forwards: &[ports::Wanted],
    vols: &[Volume],
    run_dir: &str,
    stdout: &[u8],
    started: bool,
) {
    let Some(state) = target.instance().map(|i| i.state_dir.clone()) else {
        return;
    };
    if !started {
        return;
    }
    let plain: Vec<_> = forwards.iter().map(|w| w.forward.clone()).collect();
    target.keep_forwards(&plain);
    let id = String::from_utf8_lossy(stdout)
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.len() >= 12 && l.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_string);
    let mut name: Option<String> = plan
        .container_name
        .clone()
        .into_option()
        .map(|n| n.to_string());
    if name.is_none() {
        if let Some(id) = &id {
            let binary = runtime_binary(plan);
            if let Ok((s, out, _)) =
                target.exec_capture(&[binary.as_str(), "inspect", "--format", "{{.Name}}", id])
            {
                if s.success() {
                    let n = String::from_utf8_lossy(&out)
                        .trim()
                        .trim_start_matches('/')
                        .to_string();
                    name = (!n.is_empty()).then_some(n);
                }
            }
        }
    }
    if !forwards.is_empty() {
        if let Err(e) = ports::record(&state, forwards, name.clone(), id.clone()) {
            ui::warn(target.tool(), &format!("recording port forwards: {e:#}"));
        }
    }
    if let Err(e) = volumes::live::record(&state, name, id, run_dir, vols) {
        ui::warn(target.tool(), &format!("recording the volumes: {e:#}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_expand_home_and_resolve_relative() {
        let cwd = Path::new("/work/dir");
        assert_eq!(
            host_path("./a/../b", cwd).expect("p"),
            PathBuf::from("/work/dir/b")
        );
        assert_eq!(host_path("/abs", cwd).expect("p"), PathBuf::from("/abs"));
        let home = crate::tool::home_dir().expect("home");
        assert_eq!(host_path("~/x", cwd).expect("p"), home.join("x"));
    }

    #[test]
    fn commands_that_may_give_the_guest_a_secret_are_told_apart() {
        let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        for secret in [
            "docker login -u me --password-stdin reg:5000",
            "podman pull --creds me:pw reg/x",
            "docker run -e DB_PASSWORD=x alpine",
            "sh -c echo $TOKEN | docker login",
            "docker --registry-password pw pull x",
        ] {
            assert!(may_carry_secret(&words(secret), false), "{secret}");
        }
        for plain in ["docker images", "podman run --rm -p 8080:80 alpine true"] {
            assert!(!may_carry_secret(&words(plain), false), "{plain}");
            assert!(may_carry_secret(&words(plain), true), "a terminal: {plain}");
        }
    }
}
