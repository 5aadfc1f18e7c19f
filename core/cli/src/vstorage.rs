//! `vstorage list|path [ARCH]|df|clean [ARCH|--all]` and the top-level `clean`.
//!
//! Only dirs holding the `.vcontainer-state` marker are listed or deleted, and never while a
//! memres VM runs in them (the old tool listed sibling dirs as storage and deleted
//! `dirname(--state-dir)` on `clean --all`: docs/old-bugs.md §2).

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::arch::Arch;
use crate::cli::VstorageAction;
use crate::memres_probe::{self, MemresStatus};
use crate::session::Session;
use crate::state_dir::{self, has_marker, StateKind};
use crate::ui::{self, human_size};

/// Allocated bytes under `path` (like `du`: sparse state images count what they use),
/// without following symlinks.
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                total += disk_usage(&entry.path());
            }
        }
    }
    total
}

/// The state dir this invocation would use (for `clean`/`path`), without creating it.
fn current_dir(session: &Session, arch: Arch) -> anyhow::Result<(PathBuf, StateKind)> {
    let request = session.state_request()?;
    let root = session.state_root()?;
    state_dir::planned_path(&request, &root, arch, &session.cwd)?.with_context(|| {
        "--stateless uses a temporary state dir that is deleted after each command; \
         there is no persistent state dir"
            .to_string()
    })
}

/// The marked dirs to show: those under the state root, plus an explicit `--state-dir` /
/// `-I` dir elsewhere.
fn known_dirs(session: &Session) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    let root = session.state_root()?;
    let root = state_dir::best_canonical(&root, &session.cwd);
    let mut dirs = state_dir::marked_dirs_under(&root)?;
    let request = session.state_request()?;
    if request.state_dir.is_some() || request.instance.is_some() {
        let (arch, _) = session.arch()?;
        if let Some((dir, _)) = state_dir::planned_path(&request, &root, arch, &session.cwd)? {
            if has_marker(&dir) && !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    Ok((root, dirs))
}

fn display_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

fn list(session: &Session) -> anyhow::Result<i32> {
    let (root, dirs) = known_dirs(session)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{} storage ({}):", session.tool.name, root.display())?;
    writeln!(out)?;
    if dirs.is_empty() {
        writeln!(out, "(no storage directories found)")?;
        return Ok(0);
    }
    let mut total = 0;
    for dir in &dirs {
        let size = disk_usage(dir);
        total += size;
        writeln!(out, "{}", display_name(dir))?;
        writeln!(out, "  Path:   {}", dir.display())?;
        writeln!(out, "  Size:   {}", human_size(size))?;
        writeln!(out, "  Status: {}", memres_probe::probe(dir).describe())?;
        writeln!(out)?;
    }
    writeln!(out, "Total: {}", human_size(total))?;
    Ok(0)
}

fn path(session: &Session, arch: Option<&str>) -> anyhow::Result<i32> {
    let arch = match arch {
        Some(a) => a.parse::<Arch>()?,
        None => session.arch()?.0,
    };
    let (dir, _) = current_dir(session, arch)?;
    writeln!(std::io::stdout(), "{}", dir.display())?;
    Ok(0)
}

fn df(session: &Session) -> anyhow::Result<i32> {
    let (_, dirs) = known_dirs(session)?;
    let mut out = std::io::stdout().lock();
    if dirs.is_empty() {
        writeln!(out, "(no storage directories found)")?;
        return Ok(0);
    }
    for dir in &dirs {
        writeln!(out, "{}:", display_name(dir))?;
        let mut entries: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with("-state.img"))
            })
            .collect();
        entries.sort();
        for image in entries {
            let apparent = fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
            writeln!(
                out,
                "  {:<20} {:>8} used, {:>8} apparent",
                display_name(&image),
                human_size(disk_usage(&image)),
                human_size(apparent)
            )?;
        }
        writeln!(out, "  {:<20} {:>8}", "total", human_size(disk_usage(dir)))?;
    }
    Ok(0)
}

/// Deletes one state dir after the safety checks. `Ok(false)` when it does not exist.
fn remove_state_dir(session: &Session, dir: &Path) -> anyhow::Result<bool> {
    let tool = &session.tool.name;
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("checking {}", dir.display())),
        Ok(m) if !m.is_dir() => bail!(
            "refusing to delete {}: it is not a directory created by {tool}",
            dir.display()
        ),
        Ok(_) => {}
    }
    if !has_marker(dir) {
        bail!(
            "refusing to delete {}: it has no {} marker, so {tool} did not create it",
            dir.display(),
            state_dir::MARKER
        );
    }
    refuse_if_running(session, dir)?;
    ui::info(tool, &format!("Removing {}", dir.display()));
    // its suspended VM's RAM is on a tmpfs, outside the dir
    crate::vm::suspend::forget(dir);
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(true)
}

fn refuse_if_running(session: &Session, dir: &Path) -> anyhow::Result<()> {
    let status = memres_probe::probe(dir);
    if let MemresStatus::Running { pid } = status {
        let pid = pid.map(|p| format!(" (PID {p})")).unwrap_or_default();
        bail!(
            "a memres VM is running in {}{pid}; stop it first with: {} memres stop",
            dir.display(),
            session.tool.name
        );
    }
    Ok(())
}

/// The top-level `clean` and `vstorage clean` without arguments: this invocation's dir.
pub fn clean_current(session: &Session) -> anyhow::Result<i32> {
    let (arch, _) = session.arch()?;
    let (dir, _) = current_dir(session, arch)?;
    if remove_state_dir(session, &dir)? {
        report_cleaned(&dir)?;
    } else {
        ui::info(
            &session.tool.name,
            &format!("No storage directory found for {arch} ({})", dir.display()),
        );
    }
    remove_snapshots(session)?;
    Ok(0)
}

/// The runtime's saved guests (vm/snapshot.rs) go with its storage: a cache, remade on need.
fn remove_snapshots(session: &Session) -> anyhow::Result<()> {
    let (n, dir) = crate::vm::snapshot::remove_all(&session.tool.runtime)
        .context("removing the saved VM snapshots")?;
    if n > 0 {
        ui::info(
            &session.tool.name,
            &format!("Removed {n} VM snapshot file(s) from {}", dir.display()),
        );
    }
    Ok(())
}

/// What was cleaned is the command's result: one `Cleaned: <dir>` line per state dir on
/// stdout (as the old tool printed it), so scripts can read it; the rest goes to stderr.
fn report_cleaned(dir: &Path) -> anyhow::Result<()> {
    writeln!(std::io::stdout(), "Cleaned: {}", dir.display()).context("writing to stdout")
}

fn clean(session: &Session, arch: Option<&str>, all: bool) -> anyhow::Result<i32> {
    let tool = &session.tool.name;
    if all {
        let (root, dirs) = known_dirs(session)?;
        // check every dir first, so that a running VM leaves everything in place
        for dir in &dirs {
            refuse_if_running(session, dir)?;
        }
        if dirs.is_empty() {
            ui::info(
                tool,
                &format!("No storage directories found under {}", root.display()),
            );
            return Ok(0);
        }
        for dir in &dirs {
            if remove_state_dir(session, dir)? {
                report_cleaned(dir)?;
            }
        }
        remove_snapshots(session)?;
        ui::info(tool, &format!("All storage cleaned ({} dirs).", dirs.len()));
        return Ok(0);
    }
    match arch {
        None => clean_current(session),
        Some(a) => {
            let arch = a.parse::<Arch>()?;
            let root = state_dir::best_canonical(&session.state_root()?, &session.cwd);
            let dir = root.join(arch.as_str());
            if remove_state_dir(session, &dir)? {
                report_cleaned(&dir)?;
            } else {
                ui::info(tool, &format!("Not found: {}", dir.display()));
            }
            Ok(0)
        }
    }
}

pub fn run(session: &Session, action: Option<&VstorageAction>) -> anyhow::Result<i32> {
    match action {
        None | Some(VstorageAction::List) => list(session),
        Some(VstorageAction::Path { arch }) => path(session, arch.as_deref()),
        Some(VstorageAction::Df) => df(session),
        Some(VstorageAction::Clean { arch, all }) => clean(session, arch.as_deref(), *all),
    }
}
