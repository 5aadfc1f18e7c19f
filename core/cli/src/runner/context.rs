//! `vdkr context [--create] [--name NAME]`: the host client's saved connection to the
//! exposed engine API (issue 15), so the user's `docker --context vcontainer-x86_64 ...` (or
//! `podman --connection ...`) reaches the VM without an environment variable.
//!
//! Prints the client command that saves it; with `--create` runs it too, when that client
//! is on PATH. The command's words come from the runtime plugin (`EngineApi::context_create`),
//! so the core names no runtime. The path is the state dir's socket whether or not the VM
//! runs now: a saved context outlives the VM and works again after the next `vexpose`.

use std::process::Command;

use anyhow::{bail, Context};
use vcontainer_abi::runtime::RuntimeSpec;

use crate::context::RuntimeContext;
use crate::state_dir::StateKind;
use crate::ui;
use crate::vm;

const USAGE: &str = "context [--create] [--name NAME]";

/// The options of `context`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    create: bool,
    name: Option<String>,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut out = Options::default();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--create" => out.create = true,
            "--name" => {
                i += 1;
                let Some(n) = args.get(i) else {
                    bail!("context: --name needs a value ({USAGE})");
                };
                out.name = Some(n.clone());
            }
            a => match a.strip_prefix("--name=") {
                Some(n) => out.name = Some(n.to_string()),
                None => bail!("context: unknown argument '{a}' ({USAGE})"),
            },
        }
        i += 1;
    }
    if let Some(n) = &out.name {
        let ok = !n.is_empty()
            && !n.starts_with('-')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            bail!("context: invalid name '{n}': use letters, digits, '-', '_' and '.'");
        }
    }
    Ok(out)
}

pub fn run(ctx: &RuntimeContext, spec: &RuntimeSpec, args: &[String]) -> anyhow::Result<i32> {
    let opts = parse(args)?;
    let tool = ctx.tool.name.as_str();
    if ctx.state.is_temporary() {
        bail!("context cannot be used with --stateless: the state dir is deleted when the command ends");
    }
    let api = &spec.engine_api;
    if api.host_socket_name.is_empty() || api.context_create.is_empty() {
        bail!(
            "context: the {} runtime plugin names no engine API context",
            ctx.tool.runtime
        );
    }
    let name = opts.name.clone().unwrap_or_else(|| match &ctx.state.kind {
        StateKind::Instance(n) => format!("vcontainer-{n}"),
        _ => format!("vcontainer-{}", ctx.arch),
    });
    let running = vm::Instance::find(&ctx.state.path);
    let socket = match running.as_ref().and_then(|i| i.record.expose.as_ref()) {
        Some(e) => e.host_socket.clone(),
        None => {
            ui::info(
                tool,
                &format!("the engine API is not exposed now; `{tool} vexpose` serves it at the path below"),
            );
            ctx.state.path.join(api.host_socket_name.as_str())
        }
    };
    let argv = vm::engine_api::context_argv(&api.context_create, &name, &socket)
        .context("context: the plugin's context command is empty")?;
    println!("{}", shell_words::join(&argv));
    if !opts.create {
        return Ok(0);
    }
    let program = &argv[0];
    if vm::process::which(program).is_none() {
        bail!("context --create: `{program}` is not on PATH; run the line above where it is");
    }
    let status = Command::new(program)
        .args(&argv[1..])
        .status()
        .with_context(|| format!("running {program}"))?;
    Ok(status.code().unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_and_bad_names() {
        assert_eq!(parse(&[]).expect("none"), Options::default());
        assert_eq!(
            parse(&words(&["--create", "--name", "lab"])).expect("both"),
            Options {
                create: true,
                name: Some("lab".into())
            }
        );
        assert_eq!(
            parse(&words(&["--name=x.1"])).expect("=").name.as_deref(),
            Some("x.1")
        );
        for bad in [
            &["--name"][..],
            &["--name", "-x"],
            &["--name", "a b"],
            &["--nope"],
        ] {
            assert!(parse(&words(bad)).is_err(), "{bad:?}");
        }
    }
}
