//! `snapshot build | ls | rm`: the saved guests a VM starts from (vm/snapshot.rs,
//! docs/snapshot.md), managed by hand: build one ahead of the first command (e.g. in an
//! image build step), see what is cached, and drop it.
//!
//! Why here: the snapshot's key holds the VM config a command of this runtime would use
//! (memory, cpus, storage path), which only the runner builds from the settings.

use std::io::Write;

use anyhow::{bail, Context};
use vcontainer_abi::runtime::RuntimeSpec;

use super::vmconfig;
use crate::context::RuntimeContext;
use crate::ui;
use crate::vm::{self, snapshot};

const USAGE: &str = "snapshot build | ls | rm";

/// `snapshot build | ls | rm`.
pub fn run(ctx: &RuntimeContext, spec: &RuntimeSpec, args: &[String]) -> anyhow::Result<i32> {
    let (sub, rest) = match args.split_first() {
        Some((sub, rest)) => (sub.as_str(), rest),
        None => bail!("snapshot needs a subcommand: {USAGE}"),
    };
    if let Some(a) = rest.first() {
        bail!("snapshot {sub}: unexpected argument '{a}'; usage: {USAGE}");
    }
    match sub {
        "build" => build(ctx, spec),
        "ls" | "list" => list(ctx, spec),
        "rm" | "remove" => remove(ctx),
        other => bail!("snapshot: unknown subcommand '{other}'; usage: {USAGE}"),
    }
}

/// `snapshot build`: saves the snapshot of this runtime, arch and VM size.
fn build(ctx: &RuntimeContext, spec: &RuntimeSpec) -> anyhow::Result<i32> {
    let tool = ctx.tool.name.as_str();
    // the save boots a VM in a private dir: the user's state dir (maybe a running
    // memres VM's) is never touched
    let dir = tempfile::Builder::new()
        .prefix(&format!("{tool}-snapshot-"))
        .tempdir()
        .context("creating the temporary state dir of the VM to save (in $TMPDIR)")?;
    let cfg = vmconfig::build(ctx, spec, dir.path(), true, Vec::new());
    let (file, took) = snapshot::build(&cfg)
        .map_err(|e| anyhow::anyhow!("no snapshot made for {}: {e}", ctx.arch))?;
    ui::info(
        tool,
        &format!(
            "saved the snapshot {} in {:.1}s",
            file.display(),
            took.as_secs_f64()
        ),
    );
    if !snapshot::enabled() {
        ui::info(
            tool,
            &format!(
                "{}=0 is set: commands boot cold until it is unset (docs/snapshot.md)",
                snapshot::ENV
            ),
        );
    }
    Ok(0)
}

/// `snapshot ls`: the saved files, the one this configuration would restore marked, and the
/// state dir's suspended VM (vm::suspend) if there is one.
fn list(ctx: &RuntimeContext, spec: &RuntimeSpec) -> anyhow::Result<i32> {
    let tool = ctx.tool.name.as_str();
    let cfg = vmconfig::build(ctx, spec, &ctx.state.path, true, Vec::new());
    let (files, dir) = snapshot::list(&cfg).context("listing the snapshots")?;
    let mut out = std::io::stdout().lock();
    for f in &files {
        writeln!(
            out,
            "{}\t{} MB\t{}{}",
            f.name,
            f.disk_bytes / 1_000_000,
            f.saved_at,
            if f.current { "\tcurrent" } else { "" }
        )?;
    }
    if files.is_empty() {
        ui::info(tool, &format!("no snapshots in {}", dir.display()));
    }
    if let Some((file, mb, saved_at)) = vm::suspend::describe(&ctx.state.path) {
        writeln!(out, "{}\t{mb} MB\t{saved_at}\tsuspended", file.display())?;
    }
    Ok(0)
}

/// `snapshot rm`: removes this runtime's snapshots, and the suspended VM of the state dir
/// (after a one-shot VM of it has ended: its lock).
fn remove(ctx: &RuntimeContext) -> anyhow::Result<i32> {
    let tool = ctx.tool.name.as_str();
    let (n, dir) = snapshot::remove_all(&ctx.tool.runtime).context("removing the snapshots")?;
    ui::info(
        tool,
        &format!("removed {n} snapshot file(s) from {}", dir.display()),
    );
    if ctx.state.path.is_dir() {
        let _lock = vm::lock::exclusive(&ctx.state.path)?;
        if vm::suspend::forget(&ctx.state.path) {
            ui::info(
                tool,
                &format!("removed the suspended VM of {}", ctx.state.path.display()),
            );
        }
    }
    Ok(0)
}
