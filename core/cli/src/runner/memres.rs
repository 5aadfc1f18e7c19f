//! `memres start [-p H:C[/udp]]... | stop | restart [--clean] [-p ...] | status | list |
//! clean-ports`: the memory-resident VM of a state dir. Data (status, list) goes to stdout,
//! messages to stderr.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use vcontainer_abi::runtime::RuntimeSpec;

use super::ports;
use super::target::Target;
use super::vmconfig;
use super::volumes;
use crate::context::RuntimeContext;
use crate::state_dir::StateKind;
use crate::ui;
use crate::vm::{self, memres, PortForward};

const USAGE: &str = "start [-p HOST:GUEST[/udp]]... [--expose] | stop [-f] | restart [--clean] [-p ...] [--expose] | status | list | clean-ports";

/// Options of `start`/`restart`.
#[derive(Debug, Default, PartialEq, Eq)]
struct StartArgs {
    forwards: Vec<PortForward>,
    clean: bool,
    /// Relay the engine's API socket to the host (`vm::engine_api`).
    expose: bool,
}

fn parse_start(args: &[String], allow_clean: bool) -> anyhow::Result<StartArgs> {
    let mut out = StartArgs::default();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let value = if a == "-p" || a == "--publish" {
            i += 1;
            Some(
                args.get(i)
                    .with_context(|| format!("{a} needs a value: HOST:GUEST[/udp]"))?
                    .clone(),
            )
        } else if let Some(v) = a
            .strip_prefix("--publish=")
            .or_else(|| a.strip_prefix("-p"))
        {
            if v.is_empty() {
                None
            } else {
                Some(v.to_string())
            }
        } else if a == "--clean" && allow_clean {
            out.clean = true;
            None
        } else if a == "--expose" {
            out.expose = true;
            None
        } else {
            bail!("unknown option '{a}'; usage: memres {USAGE}");
        };
        if let Some(v) = value {
            out.forwards
                .push(v.parse::<PortForward>().map_err(anyhow::Error::msg)?);
        }
        i += 1;
    }
    Ok(out)
}

/// `memres SUBCOMMAND ...`.
pub fn run(ctx: &RuntimeContext, spec: &RuntimeSpec, args: &[String]) -> anyhow::Result<i32> {
    let tool = ctx.tool.name.as_str();
    let Some(sub) = args.first() else {
        bail!("memres needs a subcommand: {USAGE}");
    };
    let rest = &args[1..];
    if ctx.state.is_temporary() && sub != "list" {
        bail!("memres cannot be used with --stateless: the state dir is deleted when the command ends");
    }
    match sub.as_str() {
        "start" => start(ctx, spec, rest),
        "stop" => stop(ctx, spec, rest),
        "restart" => restart(ctx, spec, rest),
        "status" => status(ctx, spec),
        "list" => list(ctx),
        "clean-ports" => clean_ports(ctx),
        "--help" | "-h" | "help" => {
            writeln!(std::io::stdout().lock(), "usage: {tool} memres {USAGE}")?;
            Ok(0)
        }
        other => bail!("unknown memres subcommand '{other}'; usage: {tool} memres {USAGE}"),
    }
}

/// `memres start [-p ...] [--expose]`: boots the VM unless one runs, then warms it up.
fn start(ctx: &RuntimeContext, spec: &RuntimeSpec, rest: &[String]) -> anyhow::Result<i32> {
    let tool = ctx.tool.name.as_str();
    let state = &ctx.state.path;
    let opts = parse_start(rest, false)?;
    if let Some(i) = vm::Instance::find(state) {
        ui::info(
            tool,
            &format!(
                "a memres VM is already running for {}: {}",
                ctx.arch,
                memres::describe(&i)
            ),
        );
        if !opts.forwards.is_empty() {
            ui::warn(tool, &format!("port forwards are set at start; use `{tool} memres restart -p ...` to change them"));
        }
        if opts.expose && i.record.expose.is_none() {
            ui::warn(
                tool,
                &format!(
                    "the engine API is exposed at start; use `{tool} memres restart --expose`"
                ),
            );
        }
        print_expose(spec, &i);
        return Ok(0);
    }
    let mut cfg = vmconfig::build(ctx, spec, state, true, opts.forwards);
    cfg.expose = expose_config(spec, state, opts.expose)?;
    let started = memres::start(&cfg)?;
    warn_no_share(tool, &started.instance);
    warm_up(ctx, spec, started.instance.clone())?;
    ui::info(
        tool,
        &format!(
            "memres VM started in {:.1}s: {}",
            started.instance.record.boot_ms as f64 / 1000.0,
            memres::describe(&started.instance)
        ),
    );
    print_expose(spec, &started.instance);
    Ok(0)
}

/// `memres stop [-f]`: detached containers' volumes come home, then the VM stops.
fn stop(ctx: &RuntimeContext, spec: &RuntimeSpec, rest: &[String]) -> anyhow::Result<i32> {
    let tool = ctx.tool.name.as_str();
    let state = &ctx.state.path;
    // -f/--force: the old tool's way to stop a VM that does not answer; ours never
    // refuses and kills QEMU itself when the clean shutdown times out, so it is
    // accepted (scripts pass it) and changes nothing
    if let Some(a) = rest
        .iter()
        .find(|a| !matches!(a.as_str(), "-f" | "--force"))
    {
        bail!("memres stop: unknown argument '{a}' (it takes only -f/--force)");
    }
    sync_live_volumes(ctx, spec);
    let cfg = vmconfig::build(ctx, spec, state, true, Vec::new());
    match memres::stop(state, cfg.shutdown_timeout())? {
        memres::Stopped::NotRunning => ui::info(tool, "the memres VM is not running"),
        memres::Stopped::BySupervisor => ui::info(tool, "memres VM stopped"),
        memres::Stopped::Directly(outcome) => ui::info(
            tool,
            &format!(
                "memres VM stopped ({outcome:?}); see {}",
                cfg.console_log().display()
            ),
        ),
    }
    Ok(0)
}

/// `memres restart [--clean] [-p ...] [--expose]`: keeps the running VM's forwards and API unless
/// new ones are given.
fn restart(ctx: &RuntimeContext, spec: &RuntimeSpec, rest: &[String]) -> anyhow::Result<i32> {
    let tool = ctx.tool.name.as_str();
    let state = &ctx.state.path;
    let opts = parse_start(rest, true)?;
    // keep the forwards (and the exposed API) the running VM had unless new ones are
    // given
    let running = vm::Instance::find(state);
    let forwards = if opts.forwards.is_empty() {
        running
            .as_ref()
            .map(|i| i.record.port_forwards.clone())
            .unwrap_or_default()
    } else {
        opts.forwards
    };
    let expose = opts.expose || running.is_some_and(|i| i.record.expose.is_some());
    if opts.clean {
        ui::info(
            tool,
            &format!("cleaning the VM state in {}", state.display()),
        );
    }
    sync_live_volumes(ctx, spec);
    let mut cfg = vmconfig::build(ctx, spec, state, true, forwards);
    cfg.expose = expose_config(spec, state, expose)?;
    let started = memres::restart(&cfg, opts.clean)?;
    warn_no_share(tool, &started.instance);
    warm_up(ctx, spec, started.instance.clone())?;
    ui::info(
        tool,
        &format!(
            "memres VM restarted: {}",
            memres::describe(&started.instance)
        ),
    );
    print_expose(spec, &started.instance);
    Ok(0)
}

/// `memres status`: one line, exit 1 when no VM runs.
fn status(ctx: &RuntimeContext, spec: &RuntimeSpec) -> anyhow::Result<i32> {
    let state = &ctx.state.path;
    let mut out = std::io::stdout().lock();
    match memres::status(state) {
        Some(line) => {
            writeln!(out, "{line}")?;
            drop(out);
            if let Some(i) = vm::Instance::find(state) {
                print_expose(spec, &i);
            }
            Ok(0)
        }
        None => {
            writeln!(
                out,
                "not running ({} {})",
                ctx.tool.runtime,
                state.display()
            )?;
            Ok(1)
        }
    }
}

/// `memres list`: the running VMs under this tool's state roots.
fn list(ctx: &RuntimeContext) -> anyhow::Result<i32> {
    let state = &ctx.state.path;
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(root) = ctx.tool.default_state_root() {
        roots.push(root);
    }
    if matches!(ctx.state.kind, StateKind::PerArch | StateKind::Instance(_)) {
        if let Some(parent) = state.parent() {
            roots.push(parent.to_path_buf());
        }
    } else if !ctx.state.is_temporary() {
        roots.push(state.clone());
    }
    roots.sort();
    roots.dedup();
    let mut seen = std::collections::HashSet::new();
    let mut out = std::io::stdout().lock();
    writeln!(out, "Running memres instances:")?;
    let mut any = false;
    for i in memres::list(&roots) {
        if seen.insert(i.state_dir.clone()) {
            writeln!(out, "  {}", memres::describe(&i))?;
            any = true;
        }
    }
    if !any {
        writeln!(out, "  (none)")?;
    }
    Ok(0)
}

/// `memres clean-ports`: empties the forwards registry (and the VM's forwards).
fn clean_ports(ctx: &RuntimeContext) -> anyhow::Result<i32> {
    let tool = ctx.tool.name.as_str();
    let state = &ctx.state.path;
    let instance = vm::Instance::find(state);
    let (n, problems) = ports::clean(state, instance.as_ref())?;
    for p in problems {
        ui::warn(tool, &p);
    }
    if n == 0 {
        ui::info(tool, "Port forward registry is already empty");
    } else {
        ui::info(
            tool,
            &format!("Cleared {n} port forward entries from registry"),
        );
    }
    Ok(0)
}

/// Before the VM goes: detached containers' volumes come back to the host (their guest
/// copies live in the VM's memory). Problems are warnings: the stop goes on.
fn sync_live_volumes(ctx: &RuntimeContext, spec: &RuntimeSpec) {
    let state = &ctx.state.path;
    if volumes::live::load(state).is_empty() {
        return;
    }
    let Some(instance) = vm::Instance::find(state) else {
        return;
    };
    let services: Vec<_> = spec.services.iter().cloned().collect();
    let mut target = Target::for_instance(instance, ctx.tool.name.clone(), services);
    for p in volumes::live::release_all(&mut target) {
        ui::warn(&ctx.tool.name, &p);
    }
}

/// Once per VM start: why `-v` volumes of this VM are copies rather than live host dirs.
fn warn_no_share(tool: &str, instance: &vm::Instance) {
    if let Some(why) = &instance.record.host_share_note {
        ui::warn(
            tool,
            &format!("no live volumes ({why}); volumes of detached containers are synced back at stop only"),
        );
    }
}

/// What `--expose` relays, from the plugin's `engine_api` (None without `--expose`).
fn expose_config(
    spec: &RuntimeSpec,
    state: &std::path::Path,
    wanted: bool,
) -> anyhow::Result<Option<vm::engine_api::Expose>> {
    if !wanted {
        return Ok(None);
    }
    let api = &spec.engine_api;
    if api.guest_socket.is_empty() || api.host_socket_name.is_empty() {
        bail!(
            "--expose: the {} runtime plugin names no engine API socket",
            spec.runtime_binary
        );
    }
    Ok(Some(vm::engine_api::Expose {
        guest_socket: api.guest_socket.to_string(),
        host_socket: state.join(api.host_socket_name.as_str()),
        watch_events: api.docker_api_events,
    }))
}

/// The line that points the runtime's own client at the exposed API (stdout: it is data).
fn print_expose(spec: &RuntimeSpec, instance: &vm::Instance) {
    if let Some(e) = &instance.record.expose {
        let api = &spec.engine_api;
        println!(
            "{}",
            vm::engine_api::client_lines(&api.client_env, &api.client_hint, &e.host_socket)
        );
    }
}

/// Starts the runtime's services right after boot, so the first command is warm; with the
/// engine API exposed, also the services that serve it.
fn warm_up(ctx: &RuntimeContext, spec: &RuntimeSpec, instance: vm::Instance) -> anyhow::Result<()> {
    let mut services: Vec<_> = spec.services.iter().cloned().collect();
    if instance.record.expose.is_some() {
        services.extend(spec.engine_api.services.iter().cloned());
    }
    if services.is_empty() {
        return Ok(());
    }
    let mut target = Target::for_instance(instance, ctx.tool.name.clone(), services);
    target.ensure_services()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn start_options() {
        let a = parse_start(
            &words(&["-p", "8080:80", "--publish=53:53/udp", "-p9000:9000"]),
            false,
        )
        .expect("parse");
        let f: Vec<String> = a.forwards.iter().map(|f| f.to_string()).collect();
        assert_eq!(f, ["8080:80/tcp", "53:53/udp", "9000:9000/tcp"]);
        assert!(parse_start(&words(&["--clean"]), false).is_err());
        assert!(
            parse_start(&words(&["--clean"]), true)
                .expect("restart")
                .clean
        );
        assert!(
            parse_start(&words(&["--expose", "-p", "80:80"]), false)
                .expect("expose")
                .expose
        );
        assert!(!parse_start(&[], false).expect("plain").expose);
        assert!(parse_start(&words(&["-p"]), false).is_err());
        assert!(parse_start(&words(&["-p", "x:y"]), false).is_err());
    }
}
