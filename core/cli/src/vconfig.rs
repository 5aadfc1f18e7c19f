//! `vconfig [KEY [VALUE | --reset]]`: show, get, set or reset config keys.
//!
//! Values go to stdout (they are data); confirmations go to stderr. A bad key or value is an
//! error naming the valid ones, and the file is not touched.

use std::io::Write;

use anyhow::Context;

use crate::arch::Arch;
use crate::cli::VconfigArgs;
use crate::config::{self, KEYS};
use crate::session::Session;
use crate::ui;

/// The default shown for a key; some depend on the host and user.
fn default_value(session: &Session, key: &str) -> anyhow::Result<String> {
    let spec = config::key_spec(key)?;
    if let Some(d) = spec.default {
        return Ok(d.to_string());
    }
    Ok(match key {
        "arch" => Arch::host()
            .map(|a| a.to_string())
            .unwrap_or_else(|e| format!("none ({e})")),
        "state-dir" => session.tool.default_state_root()?.display().to_string(),
        _ => String::new(),
    })
}

pub fn run(session: &Session, args: &VconfigArgs) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    let tool = &session.tool.name;
    match (&args.key, &args.value, args.reset) {
        (None, _, _) => {
            writeln!(
                out,
                "{tool} configuration ({}):",
                session.config.path().display()
            )?;
            writeln!(out)?;
            for spec in KEYS {
                match session.config.get(spec.name) {
                    Ok(Some(v)) => writeln!(out, "  {} = {v}", spec.name)?,
                    Ok(None) => {
                        let default = default_value(session, spec.name)?;
                        let default = if default.is_empty() { "none" } else { &default };
                        writeln!(out, "  {} = {default} (default)", spec.name)?
                    }
                    Err(_) => writeln!(
                        out,
                        "  {} = {} (invalid, fix or reset it)",
                        spec.name,
                        session.config.get_raw(spec.name).unwrap_or_default()
                    )?,
                }
            }
            writeln!(out)?;
            writeln!(out, "Config directory: {}", session.config_dir.display())?;
        }
        (Some(key), None, false) => {
            let value = match session.config.get(key)? {
                Some(v) => v,
                None => default_value(session, key)?,
            };
            writeln!(out, "{value}")?;
        }
        (Some(key), Some(value), false) => {
            let mut file = session.config.clone();
            let stored = file.set(key, value)?;
            file.save()
                .with_context(|| format!("saving {}", file.path().display()))?;
            ui::info(tool, &format!("Set {key} = {stored}"));
        }
        (Some(key), _, true) => {
            let mut file = session.config.clone();
            file.remove(key)?;
            let default = default_value(session, key)?;
            if session.config.get_raw(key).is_some() {
                file.save()
                    .with_context(|| format!("saving {}", file.path().display()))?;
            }
            ui::info(tool, &format!("Reset {key} to default: {default}"));
        }
    }
    Ok(0)
}
