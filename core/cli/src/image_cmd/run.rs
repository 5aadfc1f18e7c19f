//! Runs one `image` subcommand: parse, check, call the backend plugin, print the result.
//!
//! Usage errors are clap's message and exit 125 (docker's convention for the tool's own
//! failures); everything else is returned as an error, which main prints as
//! `vcontainer: error: ...` with exit 125.

use std::io::Write;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use serde::Serialize;
use vcontainer_abi::backend::{BuildResult, IndexResult, UnpackResult};
use vcontainer_proto::exit;

use super::args::{ImageArgs, ImageCommand, OutputFormat};
use super::config_file::BuildFile;
use super::request::{build_request, index_request, unpack_request, Defaults};
use crate::arch::Arch;
use crate::context::CoreContext;
use crate::plugins::{self, BackendPlugin, PluginSet};

/// `unpack` needs the umoci backend (sloci-image never unpacked); any backend writes indexes.
const DEFAULT_UNPACK_BACKEND: &str = "umoci";
const DEFAULT_INDEX_BACKEND: &str = "sloci";

/// `vcontainer image ...` with `ctx.argv = ["image", "build", ...]`.
pub fn run(ctx: &CoreContext) -> anyhow::Result<i32> {
    let grammar = ImageArgs::command()
        .bin_name(format!("{} image", ctx.program))
        .color(crate::ui::clap_color());
    let parsed = grammar
        .try_get_matches_from(ctx.argv.iter())
        .and_then(|m| ImageArgs::from_arg_matches(&m));
    let args = match parsed {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => exit::OK,
                _ => exit::TOOL_ERROR,
            };
            e.print()?;
            return Ok(code);
        }
    };
    let defaults = Defaults {
        arch: default_arch(ctx.arch),
        source_date_epoch: Defaults::source_date_epoch_from_env()?,
    };
    match args.command {
        ImageCommand::Build(b) => {
            let file = match &b.config {
                Some(path) => BuildFile::load(path)?,
                None => BuildFile::default(),
            };
            let plan = build_request(&b, file, &defaults)?;
            for note in &plan.notes {
                crate::ui::warn(&ctx.program, note);
            }
            let Some(name) = plan.backend else {
                anyhow::bail!(
                    "choose a backend with --backend NAME (found: {})",
                    backend_names(&ctx.plugins)
                );
            };
            let backend = backend(&ctx.plugins, &name)?;
            let result = backend
                .build(&plan.request)
                .map_err(|e| anyhow::anyhow!("{name} backend: {e}"))?;
            print(b.format, &result, build_text)?;
        }
        ImageCommand::Unpack(u) => {
            let request = unpack_request(&u)?;
            let name = u.backend.as_deref().unwrap_or(DEFAULT_UNPACK_BACKEND);
            let result = backend(&ctx.plugins, name)?
                .unpack(&request)
                .map_err(|e| anyhow::anyhow!("{name} backend: {e}"))?;
            print(u.format, &result, unpack_text)?;
        }
        ImageCommand::Index(i) => {
            let request = index_request(&i, &defaults)?;
            let name = i.backend.as_deref().unwrap_or(DEFAULT_INDEX_BACKEND);
            let result = backend(&ctx.plugins, name)?
                .index(&request)
                .map_err(|e| anyhow::anyhow!("{name} backend: {e}"))?;
            print(i.format, &result, index_text)?;
        }
    }
    Ok(0)
}

/// The global `--arch` or the program name's, else the host's.
fn default_arch(chosen: Option<Arch>) -> String {
    match chosen.map(Ok).unwrap_or_else(Arch::host) {
        Ok(a) => a.oci_name().to_string(),
        Err(_) => std::env::consts::ARCH.to_string(),
    }
}

fn backend_names(set: &PluginSet) -> String {
    let names: Vec<&str> = set.backends.iter().map(|p| p.name.as_str()).collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// The backend plugin `name`; when it is missing, the files that failed to load are shown
/// too, since a broken plugin file is the usual reason.
fn backend<'a>(set: &'a PluginSet, name: &str) -> anyhow::Result<BackendPlugin<'a>> {
    set.require_backend(name).map_err(|e| {
        plugins::print_failures(set);
        anyhow::Error::new(e)
    })
}

fn print<T: Serialize>(
    format: OutputFormat,
    result: &T,
    text: fn(&T) -> String,
) -> anyhow::Result<()> {
    let out = match format {
        OutputFormat::Json => {
            serde_json::to_string_pretty(result).context("encoding the result")? + "\n"
        }
        OutputFormat::Text => text(result),
    };
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing the result")
}

fn build_text(r: &BuildResult) -> String {
    let mut s = format!(
        "layout:   {}\nmanifest: {}\nconfig:   {}\n",
        r.layout.display(),
        r.manifest_digest,
        r.config_digest
    );
    for l in &r.layers {
        let cache = match l.cache {
            Some(vcontainer_abi::backend::CacheOutcome::Hit) => " (cache hit)",
            Some(vcontainer_abi::backend::CacheOutcome::Miss) => " (cache miss)",
            None => "",
        };
        s += &format!(
            "layer:    {} {} {}{cache}\n",
            l.name,
            l.digest,
            crate::ui::human_size(l.size)
        );
    }
    for t in [&r.tar, &r.dir_tar].into_iter().flatten() {
        s += &format!("tar:      {}\n", t.display());
    }
    s
}

fn unpack_text(r: &UnpackResult) -> String {
    format!(
        "bundle:   {}\nmanifest: {}\n",
        r.bundle.display(),
        r.manifest_digest
    )
}

fn index_text(r: &IndexResult) -> String {
    let mut s = format!("layout:   {}\n", r.layout.display());
    // a flat index has no image index blob: the manifests are in index.json
    if !r.index_digest.is_empty() {
        s += &format!("index:    {}\n", r.index_digest);
    }
    for m in &r.manifests {
        let p = &m.platform;
        let variant = p
            .variant
            .as_deref()
            .map(|v| format!("/{v}"))
            .unwrap_or_default();
        s += &format!(
            "manifest: {} {}/{}{variant}\n",
            m.digest, p.os, p.architecture
        );
    }
    for t in [&r.tar, &r.dir_tar].into_iter().flatten() {
        s += &format!("tar:      {}\n", t.display());
    }
    s
}
