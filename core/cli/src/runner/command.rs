//! One planned runtime command, end to end: check the host paths, get the VM, start the
//! services, push the inputs, run the argv, sync volumes back, pull the outputs, export the
//! storage, and return the runtime's exit status.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use vcontainer_abi::runtime::{CommandPlan, FileInput, InputKind, RuntimeSpec};

use super::ports;
use super::rebase;
use super::storage;
use super::target::{Deadline, Target};
use super::transfer::{self, PushSource};
use super::volumes::{self, Volume};
use crate::agent_client::{self, ExecRequest, ExitStatus, WindowSize};
use crate::dispatch::RuntimeContext;
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

/// What kind of container bookkeeping a command needs afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Nothing,
    /// `stop`/`rm`/`kill`: the named containers' forwards go.
    ReleasePorts,
    /// `ps` without -q: the forwards table follows the runtime's output.
    PortsTable,
    /// `start`/`restart`: the named containers' published ports are forwarded again.
    RestorePorts,
}

/// `start -a`, `--attach`, `-i`, `--interactive`, or a short-option group holding a or i.
fn is_attach_flag(arg: &str) -> bool {
    match arg.strip_prefix("--") {
        Some(long) => matches!(long, "attach" | "interactive"),
        None => {
            arg.len() > 1 && arg.starts_with('-') && arg[1..].chars().any(|c| c == 'a' || c == 'i')
        }
    }
}

/// The runtime CLI the plan runs in the guest (its first word), for the follow-up commands
/// the core runs itself (`inspect`, refreshing volumes).
fn runtime_binary(plan: &CommandPlan) -> String {
    plan.argv.first().map(|a| a.to_string()).unwrap_or_default()
}

fn after_of(argv: &[String]) -> (After, Vec<String>) {
    let (cmd, rest) = match argv.first().map(String::as_str) {
        Some("container") => (
            argv.get(1).map(String::as_str).unwrap_or(""),
            argv.get(2..).unwrap_or(&[]),
        ),
        Some(c) => (c, argv.get(1..).unwrap_or(&[])),
        None => ("", &[][..]),
    };
    let rest = rest.to_vec();
    match cmd {
        "stop" | "rm" | "kill" => (After::ReleasePorts, rest),
        // an attached start ends with its container: nothing to forward afterwards
        "start" if rest.iter().any(|a| is_attach_flag(a)) => (After::Nothing, rest),
        "start" | "restart" => (After::RestorePorts, rest),
        "ps" | "ls" | "list" => {
            let quiet = rest.iter().any(|a| {
                a == "-q"
                    || a == "--quiet"
                    || (a.starts_with('-') && !a.starts_with("--") && a.contains('q'))
            });
            if quiet {
                (After::Nothing, rest)
            } else {
                (After::PortsTable, rest)
            }
        }
        _ => (After::Nothing, rest),
    }
}

/// Runs `plan` (argv already classified by the runtime plugin).
pub fn run(ctx: &RuntimeContext, spec: &RuntimeSpec, mut plan: CommandPlan) -> anyhow::Result<i32> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let user_argv: Vec<String> = ctx
        .argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();

    // host paths are checked before a VM is booted
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
    let storage_out = match &ctx.options.storage {
        Some(p) => {
            let p = crate::state_dir::absolute_lexical(p, &cwd);
            let parent = p.parent().unwrap_or(Path::new("/"));
            if !parent.is_dir() {
                bail!("--storage {}: the directory does not exist", p.display());
            }
            if p.is_dir() {
                bail!("--storage {}: is a directory; name a file", p.display());
            }
            Some(p)
        }
        None => None,
    };
    let (storage_in, driver_env) = super::storage::input_and_driver_env(ctx, spec)?;

    if ctx.options.no_network {
        rebase::without_network(ctx.command(), &ctx.argv, &mut plan)?;
    }
    let registry = super::import::registry_setup(ctx, spec, &plan)?;
    let started = Instant::now();
    // A foreground `run -p H:C` is forwarded for the command's life: on a one-shot VM from
    // boot, on a memres VM through QMP until the command ends (the old tool forwarded H to
    // the VM's H only, or nothing: docs/old-bugs.md §12).
    let foreground_ports = if plan.detach || !matches!(ctx.command(), "run" | "vrun") {
        Vec::new()
    } else {
        let (wanted, skipped) = ports::wanted(&plan);
        for s in skipped {
            ui::warn(&ctx.tool.name, &s);
        }
        wanted
    };
    let foreground_forwards: Vec<_> = foreground_ports.iter().map(|w| w.forward.clone()).collect();
    let mut target = Target::acquire_forwarding(ctx, spec, foreground_forwards.clone())?;
    if let Some(tar) = &storage_in {
        storage::seed(&mut target, &spec.storage_export, tar)?;
    }
    target.ensure_services()?;
    let mut registry_env = super::import::apply_registry(&mut target, ctx, registry.as_ref())?;
    // the storage driver applies to every guest command, like the registry settings
    registry_env.extend(driver_env);
    tracing::debug!(elapsed = ?started.elapsed(), "VM and services ready");

    // a memres VM that shares volumes binds live host dirs instead of copying them
    if let Some(instance) = target.instance().filter(|i| i.shares_volumes()) {
        let (kept, problems) = volumes::shared::bind_live(&mut plan, hosts, |dir, ro| {
            crate::vm::shares::share(instance, dir, ro).map_err(|e| e.to_string())
        });
        hosts = kept;
        for p in problems {
            ui::warn(&ctx.tool.name, &p);
        }
    }

    let run_dir = rebase::run_dir(&rebase::new_run_id());
    rebase::rebase_plan(&mut plan, &run_dir);
    let uses_run_dir = !plan.inputs.is_empty() || !plan.outputs.is_empty();

    // added last, so that nothing can fail between here and their removal below
    let memres_forwards = match target.instance() {
        Some(instance) if !foreground_ports.is_empty() => {
            ports::add(instance, &foreground_ports)?;
            foreground_forwards
        }
        _ => Vec::new(),
    };
    let result = match super::import::default_registry(
        &mut target,
        ctx,
        registry.as_ref(),
        &plan,
        &registry_env,
    ) {
        Some(result) => result,
        None => run_planned(
            ctx,
            &mut target,
            &plan,
            &hosts,
            &out_hosts,
            &user_argv,
            &registry_env,
            &run_dir,
        ),
    };
    super::import::remove_registry_auth(&mut target, ctx, registry.as_ref());
    if let Some(instance) = target.instance().filter(|_| !memres_forwards.is_empty()) {
        for problem in ports::remove(instance, &memres_forwards) {
            ui::warn(&ctx.tool.name, &problem);
        }
    }
    let keep_run_dir = plan.detach && plan.inputs.iter().any(|i| i.kind == InputKind::Volume);
    if uses_run_dir && !keep_run_dir {
        // best effort: the dir is on the guest's tmpfs and goes with the VM anyway
        if let Err(e) = target.exec_quiet(&["rm", "-rf", &run_dir]) {
            tracing::debug!("cleaning {run_dir}: {e:#}");
        }
    }
    let mut code = result?;
    if code == 0 && WRITES_IMAGES.contains(&ctx.command()) {
        target.persist();
    }

    if let Some(dest) = &storage_out {
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
                &format!("the command failed (exit {code}); the storage was not exported"),
            );
        }
    }
    if let Err(e) = target.finish() {
        ui::warn(&ctx.tool.name, &format!("{e:#}"));
        if code == 0 {
            code = exit::TOOL_ERROR;
        }
    }
    tracing::debug!(elapsed = ?started.elapsed(), code, "command done");
    Ok(code)
}

/// Commands that store images: on a memres VM their result is synced to the state disk
/// before they return ([`Target::persist`]).
const WRITES_IMAGES: &[&str] = &["pull", "load", "import", "build", "commit", "tag", "image"];

#[allow(clippy::too_many_arguments)]
fn run_planned(
    ctx: &RuntimeContext,
    target: &mut Target,
    plan: &CommandPlan,
    hosts: &[PathBuf],
    out_hosts: &[PathBuf],
    user_argv: &[String],
    registry_env: &[(String, String)],
    run_dir: &str,
) -> anyhow::Result<i32> {
    let tool = ctx.tool.name.clone();

    // output dirs must exist for the runtime to write into
    for output in plan.outputs.iter() {
        if let Some((dir, _)) = output.guest_path.rsplit_once('/') {
            transfer::push(target, PushSource::Empty, dir)?;
        }
    }
    let mut vols: Vec<Volume> = Vec::new();
    for (input, host) in plan.inputs.iter().zip(hosts) {
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

    // ports of a detached container on a memres VM
    let mut forwards = Vec::new();
    if plan.detach && !plan.ports.is_empty() {
        let (wanted, skipped) = ports::wanted(plan);
        for s in skipped {
            ui::warn(&tool, &s);
        }
        match target.instance() {
            Some(instance) => {
                ports::add(instance, &wanted)?;
                forwards = wanted;
            }
            None => ui::warn(
                &tool,
                "host ports are forwarded only to a memres VM (this command runs in a one-shot VM)",
            ),
        }
    }

    // a stopped detached container sees the host's edits to its volumes when it starts again
    let command = user_argv
        .iter()
        .find(|a| *a != "container")
        .map(String::as_str);
    let (after, rest) = after_of(user_argv);
    if command == Some("start") && target.instance().is_some() {
        let operands = ports::container_operands(&rest);
        for p in volumes::live::refresh(target, &runtime_binary(plan), &operands) {
            ui::warn(&tool, &p);
        }
    }

    // a detached container on a memres VM keeps its rw volumes: recorded once it started
    let live_vols = plan.detach && target.instance().is_some() && vols.iter().any(|v| !v.read_only);
    if let Some(note) = target
        .instance()
        .filter(|_| live_vols)
        .and_then(volumes::shared::copy_mode_notice)
    {
        ui::warn(&tool, &note);
    }

    let argv = plan.argv_strings();
    tracing::debug!(argv = ?vcontainer_proto::redact::argv(&argv), "exec in the guest");
    let mut request = ExecRequest::new(argv.clone());
    request.env.extend_from_slice(registry_env);
    let status = if plan.tty || plan.stdin {
        if plan.tty {
            request.tty = Some(WindowSize { rows: 24, cols: 80 });
        }
        request.stdin = plan.stdin;
        let (conn, _watch) = target.connect_watched()?;
        let status =
            agent_client::exec_interactive(conn, request).map_err(|e| target.agent_error(e))?;
        if !forwards.is_empty() || live_vols {
            // the id went to the terminal; the forwards are keyed by name (or inspect)
            finish_detached(
                target,
                plan,
                &forwards,
                &vols,
                run_dir,
                &[],
                status.success(),
            );
        }
        status
    } else {
        let (conn, _watch) = target.connect_watched()?;
        let deadline = Deadline::arm(ctx, target, plan, &conn);
        let mut captured = Vec::new();
        let stdout = io::stdout();
        let mut stdout = stdout.lock();
        let mut stderr = io::stderr();
        let r = if forwards.is_empty() && !live_vols {
            agent_client::exec_relaying_signals(conn, request, &mut stdout, &mut stderr)
        } else {
            let mut tee = Tee {
                out: &mut stdout,
                copy: &mut captured,
            };
            agent_client::exec_relaying_signals(conn, request, &mut tee, &mut stderr)
        };
        drop(stdout);
        let r = match &deadline {
            Some(d) if d.fired() => {
                d.report(ctx);
                Ok(ExitStatus::Code(exit::TIMEOUT))
            }
            _ => r,
        };
        let status = match r {
            Ok(s) => s,
            Err(e) => {
                let e = target.agent_error(e);
                if let Some(i) = target.instance() {
                    let f: Vec<_> = forwards.iter().map(|w| w.forward.clone()).collect();
                    let _ = ports::remove(i, &f);
                }
                return Err(e);
            }
        };
        if !forwards.is_empty() || live_vols {
            finish_detached(
                target,
                plan,
                &forwards,
                &vols,
                run_dir,
                &captured,
                status.success(),
            );
        }
        status
    };
    let mut code = status.shell_code();

    // volumes come back after the container exits, whatever its status; a detached
    // container keeps using them
    if !plan.detach {
        for vol in vols.iter().filter(|v| !v.read_only) {
            match volumes::sync_back(target, vol) {
                Ok(report) => {
                    for s in &report.skipped {
                        ui::warn(&tool, &format!("volume {}: {s}", vol.host.display()));
                    }
                    tracing::debug!(volume = %vol.host.display(), ?report, "volume synced back");
                }
                Err(e) => {
                    ui::warn(
                        &tool,
                        &format!("syncing volume {} back failed: {e:#}", vol.host.display()),
                    );
                    if code == 0 {
                        code = exit::TOOL_ERROR;
                    }
                }
            }
        }
    }

    if code == 0 {
        for (output, host) in plan.outputs.iter().zip(out_hosts) {
            let dest =
                transfer::pull_output(target, &output.guest_path, host, output.into_existing_dir)?;
            if matches!(ctx.command(), "save" | "image" | "export" | "container") {
                ui::info(
                    &tool,
                    &format!(
                        "Saved to {} ({})",
                        dest.display(),
                        ui::human_size(transfer::size_of(&dest))
                    ),
                );
            }
        }
    }

    if after == After::ReleasePorts && code == 0 {
        // detached containers' volumes come back when they stop or go
        let removed = command == Some("rm");
        let operands = ports::container_operands(&rest);
        for p in volumes::live::release(target, &operands, removed) {
            ui::warn(&tool, &p);
        }
    }
    if after == After::RestorePorts && code == 0 {
        let operands = ports::container_operands(&rest);
        for p in ports::restore_started(target, &runtime_binary(plan), &operands) {
            ui::warn(&tool, &p);
        }
    }
    if let Some(instance) = target.instance() {
        match after {
            After::ReleasePorts if code == 0 => {
                let (_, problems) = ports::release(instance, &ports::container_operands(&rest));
                for p in problems {
                    ui::warn(&tool, &p);
                }
            }
            After::PortsTable => {
                let records = ports::load(&instance.state_dir);
                if !records.is_empty() {
                    let mut out = io::stdout().lock();
                    out.write_all(ports::table(&records).as_bytes())?;
                    out.flush()?;
                }
            }
            _ => {}
        }
    }
    Ok(code)
}

/// Records the forwards and live volumes of a started detached container (by name and id),
/// or removes the forwards when it did not start.
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
    let plain: Vec<_> = forwards.iter().map(|w| w.forward.clone()).collect();
    if !started {
        if let (Some(i), false) = (target.instance(), plain.is_empty()) {
            let _ = ports::remove(i, &plain);
        }
        return;
    }
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

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ps_table_unless_quiet_and_release_on_stop_rm_kill() {
        assert_eq!(after_of(&words(&["ps", "-a"])).0, After::PortsTable);
        assert_eq!(after_of(&words(&["ps", "-q"])).0, After::Nothing);
        assert_eq!(after_of(&words(&["ps", "-aq"])).0, After::Nothing);
        assert_eq!(after_of(&words(&["ps", "--quiet"])).0, After::Nothing);
        assert_eq!(after_of(&words(&["container", "ls"])).0, After::PortsTable);
        let (a, rest) = after_of(&words(&["rm", "-f", "web"]));
        assert_eq!(a, After::ReleasePorts);
        assert_eq!(ports::container_operands(&rest), ["web"]);
        assert_eq!(
            after_of(&words(&["container", "stop", "x"])).0,
            After::ReleasePorts
        );
        assert_eq!(after_of(&words(&["images"])).0, After::Nothing);
        let (a, rest) = after_of(&words(&["start", "web", "db"]));
        assert_eq!(a, After::RestorePorts);
        assert_eq!(ports::container_operands(&rest), ["web", "db"]);
        assert_eq!(
            after_of(&words(&["container", "restart", "-t", "1", "web"])).0,
            After::RestorePorts
        );
        for attached in ["-a", "-ai", "--attach", "-i", "--interactive"] {
            assert_eq!(
                after_of(&words(&["start", attached, "web"])).0,
                After::Nothing,
                "{attached}"
            );
        }
    }

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
}
