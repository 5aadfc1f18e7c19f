//! `vimport-batch`: many OCI layouts into one runtime storage tar in one VM boot, for
//! Yocto's container-cross-install class.
//!
//! Syntax (repeatable, any order):
//!   `vimport-batch [--output F] --image PATH=NAME[:TAG] ... [PATH:NAME:TAG ...]`
//! `--image PATH=NAME:TAG` splits at the last `=` (image names never contain one), so paths
//! with `:` and names with a registry port work. The positional `PATH:NAME:TAG` form is
//! the old `vrunner.sh --batch-import` one; unlike the old split at the first colons, the
//! path is the longest prefix before a `:` that is an existing directory, so
//! `dir:reg:5000/app:1` means `reg:5000/app:1`.
//!
//! The storage tar goes to `--output F` (or the global `--storage F`); the runner exports
//! it after the last import, and only when every import succeeded.
//!
//! The container-cross-install class's call
//!   `vrunner.sh --runtime docker --arch A --blob-dir D --batch-import --timeout T
//!    --output F [--input-storage S] -- path:image:tag ...`
//! maps to
//!   `vdkr --arch A --blob-dir D --no-daemon [--input-storage S] vimport-batch --output F
//!    -- path:image:tag ...`
//! (`vpdmn` for podman). The exit status is non-zero when any import failed, unlike the
//! old batch import, which always exited 0.

use std::path::{Path, PathBuf};

use super::{plan_import, ImportPlan, ImportRequest, ImportTarget, VimportError};

pub const USAGE: &str =
    "Usage: vimport-batch [--output STORAGE.tar] --image PATH=NAME[:TAG] ... [PATH:NAME:TAG ...]
  Imports every image in one VM boot and exports the runtime storage as one tar
  (--output, or the global --storage). PATH is anything vimport takes, usually an OCI
  layout directory; the PATH:NAME:TAG form is the old vrunner.sh --batch-import one.";

/// Parsed `vimport-batch` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchArgs {
    pub help: bool,
    pub output: Option<PathBuf>,
    pub images: Vec<ImportRequest>,
}

fn usage_error(msg: impl std::fmt::Display) -> VimportError {
    VimportError::invalid("vimport-batch", format!("{msg}\n{USAGE}"))
}

/// `PATH=NAME[:TAG]`
fn parse_image_option(value: &str) -> Result<ImportRequest, VimportError> {
    let (path, name) = value
        .rsplit_once('=')
        .ok_or_else(|| usage_error(format!("--image '{value}': expected PATH=NAME[:TAG]")))?;
    if path.is_empty() || name.is_empty() {
        return Err(usage_error(format!(
            "--image '{value}': expected PATH=NAME[:TAG]"
        )));
    }
    Ok(ImportRequest {
        path: PathBuf::from(path),
        name: Some(name.to_string()),
    })
}

/// The old `PATH:NAME:TAG` form: PATH is the longest `:`-prefix that is a directory.
fn parse_compat_entry(entry: &str) -> Result<ImportRequest, VimportError> {
    let split = entry
        .match_indices(':')
        .map(|(i, _)| i)
        .rfind(|&i| i > 0 && i + 1 < entry.len() && Path::new(&entry[..i]).is_dir());
    match split {
        Some(i) => Ok(ImportRequest {
            path: PathBuf::from(&entry[..i]),
            name: Some(entry[i + 1..].to_string()),
        }),
        None => Err(usage_error(format!(
            "batch entry '{entry}': no existing directory before a ':' (use --image PATH=NAME:TAG)"
        ))),
    }
}

/// Parses the arguments after `vimport-batch`.
pub fn parse_args(args: &[String]) -> Result<BatchArgs, VimportError> {
    let mut out = BatchArgs {
        help: false,
        output: None,
        images: Vec::new(),
    };
    let mut it = args.iter();
    let mut only_positional = false;
    while let Some(a) = it.next() {
        if only_positional {
            out.images.push(parse_compat_entry(a)?);
            continue;
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, VimportError> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| usage_error(format!("{name} needs a value"))),
            }
        };
        match flag {
            "-h" | "--help" => out.help = true,
            "-o" | "--output" => out.output = Some(PathBuf::from(value("--output")?)),
            "--image" | "-i" => out.images.push(parse_image_option(&value("--image")?)?),
            "--" => only_positional = true,
            s if s.starts_with('-') && s.len() > 1 => {
                return Err(usage_error(format!("unknown option '{s}'")))
            }
            _ => out.images.push(parse_compat_entry(a)?),
        }
    }
    if !out.help && out.images.is_empty() {
        return Err(usage_error("needs at least one --image PATH=NAME:TAG"));
    }
    Ok(out)
}

/// Plans every import, any input type vimport takes (all inputs are checked before the VM boots: one bad layout fails
/// the batch before anything runs). Step `i` uses the guest dir `<guest_base>/<i>`.
pub fn plan_batch(
    images: &[ImportRequest],
    target: &ImportTarget,
    guest_base: &str,
) -> Result<Vec<ImportPlan>, VimportError> {
    let base = guest_base.trim_end_matches('/');
    images
        .iter()
        .enumerate()
        .map(|(i, req)| plan_import(req, target, &format!("{base}/{i}")))
        .collect()
}
