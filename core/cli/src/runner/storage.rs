//! `--storage out.tar` (export the runtime storage after the command) and
//! `--input-storage in.tar` (start the command from such a tar), in batch and memres mode
//! (the old tool silently ignored `--storage` under memres, docs/old-bugs.md §7).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use vcontainer_abi::runtime::StorageExport;

use super::target::Target;
use super::transfer;
use crate::context::RuntimeContext;

/// Where the archive's entries live in the guest, and whether they are named relative to the
/// storage dir itself (`./...`) or carry its name (`docker/...`).
fn layout(export: &StorageExport) -> anyhow::Result<(String, bool)> {
    let source = export.source_dir.as_str().trim_end_matches('/');
    let prefix = export.archive_prefix.as_str().trim_end_matches('/');
    if prefix == "." || prefix.is_empty() {
        return Ok((source.to_string(), true));
    }
    let (parent, name) = source.rsplit_once('/').unwrap_or(("", source));
    if name == prefix {
        let parent = if parent.is_empty() { "/" } else { parent };
        return Ok((parent.to_string(), false));
    }
    bail!(
        "the runtime plugin's storage export prefix '{prefix}' is neither '.' nor the name of {source}"
    )
}

/// [`export`] for a command's `--storage FILE`, with the line that says what was written.
pub fn export_and_report(
    target: &mut Target,
    tool: &str,
    spec: &vcontainer_abi::runtime::RuntimeSpec,
    dest: &Path,
) -> anyhow::Result<()> {
    export(target, &spec.storage_export, dest)?;
    crate::ui::info(
        tool,
        &format!(
            "storage exported to {} ({}; {})",
            dest.display(),
            crate::ui::human_size(super::transfer::size_of(dest)),
            spec.storage_export.description
        ),
    );
    Ok(())
}

/// Writes the guest's runtime storage as a tar to `dest` (atomically). Services are stopped
/// first when the runtime needs that for a consistent copy; the next command restarts them.
pub fn export(target: &mut Target, export: &StorageExport, dest: &Path) -> anyhow::Result<()> {
    let (_, contents_only) = layout(export)?;
    if export.stop_services_first {
        target
            .stop_services()
            .context("stopping the runtime's services before the storage export")?;
    }
    // The agent archives everything overlay storage needs as it is (whiteout device nodes,
    // opaque-dir xattrs, hard links), so the tree is pulled untouched.
    let source = export.source_dir.to_string();
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".vcontainer-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    let file = tmp.as_file_mut();
    transfer::pull(target, &source, contents_only, |stream| {
        std::io::copy(stream, file).context("writing the storage tar")?;
        Ok(())
    })
    .with_context(|| format!("exporting the runtime storage to {}", dest.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = tmp
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644));
    // only a complete archive gets the user's name
    tmp.persist(dest)
        .map_err(|e| anyhow::anyhow!(e.error))
        .with_context(|| format!("renaming into {}", dest.display()))?;
    Ok(())
}

/// Environment variables for the guest commands, as (name, value).
pub type GuestEnv = Vec<(String, String)>;

/// The `--input-storage` tar of an interactive or runtime command and the storage-driver
/// environment its guest commands get (the driver that tar was written with, or the one
/// asked for): one reading for `command` and `vshell`.
pub fn input_and_driver_env(
    ctx: &RuntimeContext,
    spec: &vcontainer_abi::runtime::RuntimeSpec,
) -> anyhow::Result<(Option<PathBuf>, GuestEnv)> {
    let storage_in = input_path(ctx)?;
    let driver_env = super::driver::env(
        spec,
        ctx.options.storage_driver.as_deref(),
        false,
        storage_in.as_deref(),
    )?;
    Ok((storage_in, driver_env))
}

/// The `--input-storage` tar as an absolute path, checked before any VM work.
pub fn input_path(ctx: &RuntimeContext) -> anyhow::Result<Option<PathBuf>> {
    let Some(p) = &ctx.options.input_storage else {
        return Ok(None);
    };
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let p = crate::state_dir::absolute_lexical(p, &cwd);
    if !p.is_file() {
        bail!("--input-storage {}: not a file", p.display());
    }
    Ok(Some(p))
}

/// Unpacks a storage tar into the guest before the runtime's services start.
pub fn seed(target: &mut Target, export: &StorageExport, tar: &Path) -> anyhow::Result<()> {
    let (dest, _) = layout(export)?;
    transfer::push_archive(target, tar, &dest)
        .with_context(|| format!("starting from the storage in {}", tar.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(source: &str, prefix: &str) -> StorageExport {
        let mut e = crate::test_specs::podman().storage_export;
        e.source_dir = source.into();
        e.archive_prefix = prefix.into();
        e
    }

    #[test]
    fn layouts_of_the_two_runtimes() {
        assert_eq!(
            layout(&export("/var/lib/docker", "docker")).expect("docker"),
            ("/var/lib".to_string(), false)
        );
        assert_eq!(
            layout(&export("/var/lib/containers/storage", ".")).expect("podman"),
            ("/var/lib/containers/storage".to_string(), true)
        );
        assert!(layout(&export("/var/lib/docker", "other")).is_err());
    }
}
