//! `vimport`: import an OCI layout, an archive or a root filesystem into the guest runtime.
//!
//! Everything here runs on the host and touches no VM: [`plan_import`] detects what the
//! input is, checks it (JSON parsed whole, digests verified, arch chosen or checked, path
//! escapes refused) and returns an [`ImportPlan`]: the tar stream to push into a guest
//! directory and the argv to run there. The runner executes plans (one VM, one connection
//! per step) and owns the guest directory's lifetime; `vimport-batch` ([`batch`]) makes one
//! plan per image for a single VM boot and one storage export.
//!
//! Input types, decided by content (docs/old-tool-cli.md "vimport input types"):
//! - a directory with `index.json`/`oci-layout`: an OCI layout; multi-arch indexes (flat or
//!   nested) are reduced to the target arch's manifest, so the guest sees one image;
//! - a directory holding `*-oci` directories: refused with the list and an example;
//! - any other directory: a root filesystem, packed into a tar for `<runtime> import`;
//! - a tar (plain, gzip or zstd) with `manifest.json`: a `docker save` archive (`load -i`);
//! - a tar with `oci-layout`/`index.json`: an OCI archive, unpacked and handled as a layout;
//! - any other file: a root filesystem tarball for `<runtime> import`.

pub mod archive;
pub mod batch;
pub mod error;
pub mod execute;
pub mod layout;
pub mod name;
pub mod payload;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use error::VimportError;
pub use payload::{Payload, PayloadEntry, PayloadReader};

use crate::arch::Arch;
use archive::TarKind;
use std::os::unix::fs::FileTypeExt as _;

/// What the import is for: the guest runtime and arch (from the runtime plugin's spec and
/// the front's arch choice).
#[derive(Debug, Clone)]
pub struct ImportTarget {
    pub arch: Arch,
    /// "docker" / "podman".
    pub runtime_binary: String,
    /// skopeo destination transport: "docker-daemon:" / "containers-storage:".
    pub import_transport: String,
    /// "vdkr" / "vpdmn", for examples in messages.
    pub tool_name: String,
}

/// One thing to import: a host path and the name it should get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRequest {
    pub path: PathBuf,
    /// As the user wrote it; None = the default (`imported:latest`, or a docker archive's
    /// own tags).
    pub name: Option<String>,
}

/// The detected input type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    OciLayout,
    OciArchive,
    DockerArchive,
    RootfsTar,
    RootfsDir,
}

impl InputType {
    pub fn describe(self) -> &'static str {
        match self {
            InputType::OciLayout => "OCI layout",
            InputType::OciArchive => "OCI archive",
            InputType::DockerArchive => "docker archive",
            InputType::RootfsTar => "rootfs tarball",
            InputType::RootfsDir => "rootfs directory",
        }
    }
}

/// One import, ready for the runner: push [`ImportPlan::payload`] as a tar stream into
/// [`ImportPlan::guest_dir`], then run [`ImportPlan::commands`] in order, stopping at the
/// first non-zero exit (that status is the import's). Temporary host files live as long
/// as the plan.
#[derive(Debug)]
pub struct ImportPlan {
    pub input: InputType,
    /// The host path as given.
    pub source: PathBuf,
    /// The image name the import produces (None: a docker archive keeps its own tags).
    pub image: Option<String>,
    /// Guest directory the payload is unpacked into (created by the push); the runner
    /// removes it afterwards.
    pub guest_dir: String,
    pub payload: Payload,
    /// Guest argv lists, never shell strings.
    pub commands: Vec<Vec<String>>,
    /// Lines for stderr before the import starts (selected platform, warnings).
    pub notices: Vec<String>,
    /// Host scratch space (unpacked OCI archives, packed rootfs dirs), deleted on drop.
    _scratch: Vec<tempfile::TempDir>,
}

/// `vimport <path> [name:tag]` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VimportArgs {
    Help,
    Import(ImportRequest),
}

pub const USAGE: &str = "Usage: vimport <path> [name:tag]
  <path>  an OCI layout directory, an OCI or docker archive (.tar, .tar.gz, .tar.zst),
          a rootfs tarball or a rootfs directory (detected from the content)
  name:tag defaults to imported:latest";

/// Parses the arguments after `vimport`.
pub fn parse_args(args: &[String]) -> Result<VimportArgs, VimportError> {
    let mut positional = Vec::new();
    let mut only_positional = false;
    for a in args {
        match a.as_str() {
            "-h" | "--help" if !only_positional => return Ok(VimportArgs::Help),
            "--" if !only_positional => only_positional = true,
            s if s.starts_with('-') && s.len() > 1 && !only_positional => {
                return Err(VimportError::invalid(
                    "vimport",
                    format!("unknown option '{s}'\n{USAGE}"),
                ))
            }
            _ => positional.push(a.clone()),
        }
    }
    match positional.as_slice() {
        [] => Err(VimportError::invalid(
            "vimport",
            format!("requires <path> [name:tag]\n{USAGE}"),
        )),
        [path] => Ok(VimportArgs::Import(ImportRequest {
            path: PathBuf::from(path),
            name: None,
        })),
        [path, name] => Ok(VimportArgs::Import(ImportRequest {
            path: PathBuf::from(path),
            name: Some(name.clone()),
        })),
        [_, _, extra, ..] => Err(VimportError::invalid(
            "vimport",
            format!("unexpected argument '{extra}'\n{USAGE}"),
        )),
    }
}

/// Detects the input type of `request.path` and plans its import into `guest_dir`.
pub fn plan_import(
    request: &ImportRequest,
    target: &ImportTarget,
    guest_dir: &str,
) -> Result<ImportPlan, VimportError> {
    let path = request.path.as_path();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VimportError::NotFound(path.to_path_buf()))
        }
        Err(e) => return Err(VimportError::io(path.display(), e)),
    };
    let name = request.name.as_deref().map(name::normalize).transpose()?;
    let mut plan = ImportPlan {
        input: InputType::RootfsTar,
        source: path.to_path_buf(),
        image: None,
        guest_dir: guest_dir.trim_end_matches('/').to_string(),
        payload: Payload::default(),
        commands: Vec::new(),
        notices: Vec::new(),
        _scratch: Vec::new(),
    };
    if meta.is_dir() {
        if layout::is_layout(path) {
            plan_layout(&mut plan, path, InputType::OciLayout, name, target)?;
        } else {
            let deploy = oci_subdirs(path)?;
            if !deploy.is_empty() {
                return Err(VimportError::DeployDir {
                    path: path.to_path_buf(),
                    found: deploy,
                    tool: target.tool_name.clone(),
                });
            }
            plan_rootfs_dir(&mut plan, path, name, target)?;
        }
    } else if meta.is_file() {
        plan_file(&mut plan, path, name, target)?;
    } else {
        return Err(VimportError::invalid(
            path.display(),
            "is neither a regular file nor a directory",
        ));
    }
    Ok(plan)
}

/// Names of `*-oci` directories directly inside `dir` (a Yocto deploy dir), sorted.
fn oci_subdirs(dir: &Path) -> Result<Vec<String>, VimportError> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| VimportError::io(dir.display(), e))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with("-oci") && e.path().is_dir() {
            found.push(name);
        }
    }
    found.sort();
    Ok(found)
}

fn skopeo_argv(plan: &ImportPlan, image: &str, target: &ImportTarget) -> Vec<String> {
    vec![
        "skopeo".into(),
        "copy".into(),
        // Signature policy is for registries; this is a local layout whose digests were
        // verified above, and the guest may have no /etc/containers/policy.json.
        "--insecure-policy".into(),
        format!("oci:{}", plan.guest_dir),
        format!("{}{image}", target.import_transport),
    ]
}

fn plan_layout(
    plan: &mut ImportPlan,
    dir: &Path,
    input: InputType,
    name: Option<String>,
    target: &ImportTarget,
) -> Result<(), VimportError> {
    let selection = layout::select(dir, target.arch)?;
    if let Some(p) = &selection.selected_platform {
        plan.notices.push(format!(
            "Selected platform: {} (from multi-arch image)",
            vcontainer_oci::model::platform_string(p)
        ));
    }
    plan.notices.extend(selection.warnings.iter().cloned());
    let image = name.unwrap_or_else(|| name::DEFAULT_NAME.to_string());
    plan.input = input;
    plan.payload = layout::payload(&selection)?;
    plan.commands = vec![skopeo_argv(plan, &image, target)];
    plan.image = Some(image);
    Ok(())
}

fn plan_file(
    plan: &mut ImportPlan,
    path: &Path,
    name: Option<String>,
    target: &ImportTarget,
) -> Result<(), VimportError> {
    let compression = archive::sniff(path)?;
    let size = std::fs::metadata(path)
        .map_err(|e| VimportError::io(path.display(), e))?
        .len();
    let kind = if compression.inspectable() {
        archive::classify(path, compression)?
    } else {
        plan.notices.push(format!(
            "Note: {} is {compression:?}-compressed; imported as a rootfs tarball without inspection",
            path.display()
        ));
        TarKind::Rootfs
    };
    let rt = target.runtime_binary.clone();
    match kind {
        TarKind::OciArchive => {
            let scratch = tempfile::Builder::new()
                .prefix("vimport-oci-")
                .tempdir()
                .map_err(|e| VimportError::io("creating a temporary directory", e))?;
            archive::extract_oci_archive(path, compression, scratch.path())?;
            let dir = scratch.path().to_path_buf();
            plan._scratch.push(scratch);
            plan_layout(plan, &dir, InputType::OciArchive, name, target)?;
        }
        TarKind::DockerArchive { entries, configs } => {
            for e in &entries {
                if let Some((config, _)) = configs.get(&e.config) {
                    if let Some(arch) = config.architecture.as_deref().filter(|a| !a.is_empty()) {
                        if target.arch.runs_oci_arch(arch).is_none() {
                            return Err(vcontainer_oci::OciError::ArchMismatch {
                                path: path.to_path_buf(),
                                image_arch: arch.to_string(),
                                target: target.arch,
                            }
                            .into());
                        }
                    }
                }
            }
            let file = format!("{}/image.tar", plan.guest_dir);
            plan.input = InputType::DockerArchive;
            plan.payload = Payload::new(vec![PayloadEntry::file(
                "image.tar",
                path.to_path_buf(),
                size,
            )]);
            plan.commands = vec![vec![rt.clone(), "load".into(), "-i".into(), file]];
            let untagged = entries
                .iter()
                .all(|e| e.repo_tags.as_ref().is_none_or(|t| t.is_empty()));
            let tag_as = match name {
                Some(n) => Some(n),
                None if untagged => Some(name::DEFAULT_NAME.to_string()),
                None => None,
            };
            if let Some(tag_as) = tag_as {
                if entries.len() != 1 {
                    return Err(VimportError::invalid(
                        path.display(),
                        format!(
                            "holds {} images; load it without a name to keep their own tags",
                            entries.len()
                        ),
                    ));
                }
                let id = configs
                    .get(&entries[0].config)
                    .map(|(_, digest)| digest.clone())
                    .unwrap_or_default();
                plan.commands
                    .push(vec![rt, "tag".into(), id, tag_as.clone()]);
                plan.image = Some(tag_as);
            }
        }
        TarKind::Rootfs => {
            let image = name.unwrap_or_else(|| name::DEFAULT_NAME.to_string());
            let file = format!("{}/rootfs.tar", plan.guest_dir);
            plan.input = InputType::RootfsTar;
            plan.payload = Payload::new(vec![PayloadEntry::file(
                "rootfs.tar",
                path.to_path_buf(),
                size,
            )]);
            plan.commands = vec![vec![rt, "import".into(), file, image.clone()]];
            plan.image = Some(image);
        }
    }
    Ok(())
}

/// A FIFO or device node as a tar entry named `rel` (owner, mode, mtime and device
/// numbers from the host).
fn append_special<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    rel: &Path,
) -> Result<(), VimportError> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::symlink_metadata(path).map_err(|e| VimportError::io(path.display(), e))?;
    let ft = meta.file_type();
    let mut header = tar::Header::new_gnu();
    header.set_metadata(&meta);
    header.set_size(0);
    if ft.is_fifo() {
        header.set_entry_type(tar::EntryType::Fifo);
    } else {
        header.set_entry_type(if ft.is_char_device() {
            tar::EntryType::Char
        } else {
            tar::EntryType::Block
        });
        let rdev = meta.rdev();
        let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff);
        let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff);
        header
            .set_device_major(major as u32)
            .and_then(|()| header.set_device_minor(minor as u32))
            .map_err(|e| VimportError::io(path.display(), e))?;
    }
    builder
        .append_data(&mut header, rel, std::io::empty())
        .map_err(|e| VimportError::io(path.display(), e))
}

/// Packs a root filesystem directory into a temporary tar (symlinks kept as links, owners
/// and modes as on the host) for `<runtime> import`.
fn plan_rootfs_dir(
    plan: &mut ImportPlan,
    dir: &Path,
    name: Option<String>,
    target: &ImportTarget,
) -> Result<(), VimportError> {
    let mut children = std::fs::read_dir(dir)
        .map_err(|e| VimportError::io(dir.display(), e))?
        .peekable();
    if children.peek().is_none() {
        return Err(VimportError::invalid(
            dir.display(),
            "the directory is empty",
        ));
    }
    let scratch = tempfile::Builder::new()
        .prefix("vimport-rootfs-")
        .tempdir()
        .map_err(|e| VimportError::io("creating a temporary directory", e))?;
    let tar_path = scratch.path().join("rootfs.tar");
    let file =
        std::fs::File::create(&tar_path).map_err(|e| VimportError::io(tar_path.display(), e))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    builder.follow_symlinks(false);
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walker.min_depth(1) {
        let entry = entry.map_err(|e| VimportError::invalid(dir.display(), e.to_string()))?;
        if entry.file_type().is_socket() {
            plan.notices
                .push(format!("Note: skipping socket {}", entry.path().display()));
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(dir)
            .map_err(|e| VimportError::invalid(dir.display(), e.to_string()))?;
        let ft = entry.file_type();
        if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            // tar's append_path_with_name names special files by their source path
            // (absolute, refused); their header is built here instead.
            append_special(&mut builder, entry.path(), rel)?;
            continue;
        }
        builder
            .append_path_with_name(entry.path(), rel)
            .map_err(|e| VimportError::io(entry.path().display(), e))?;
    }
    let writer = builder
        .into_inner()
        .map_err(|e| VimportError::io(tar_path.display(), e))?;
    writer
        .into_inner()
        .map_err(|e| VimportError::io(tar_path.display(), e.into_error()))?
        .sync_all()
        .map_err(|e| VimportError::io(tar_path.display(), e))?;
    let size = std::fs::metadata(&tar_path)
        .map_err(|e| VimportError::io(tar_path.display(), e))?
        .len();
    let image = name.unwrap_or_else(|| name::DEFAULT_NAME.to_string());
    plan.input = InputType::RootfsDir;
    plan.payload = Payload::new(vec![PayloadEntry::file("rootfs.tar", tar_path, size)]);
    plan.commands = vec![vec![
        target.runtime_binary.clone(),
        "import".into(),
        format!("{}/rootfs.tar", plan.guest_dir),
        image.clone(),
    ]];
    plan.image = Some(image);
    plan._scratch.push(scratch);
    Ok(())
}
