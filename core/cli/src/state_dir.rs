//! Where an invocation keeps its VM state, and the marker that makes deleting it safe.
//!
//! `~/.<tool>/<arch>/` by default, `~/.<tool>/<name>/` with `-I name` (not per arch, as in
//! the old tool), the given dir with `--state-dir` (made absolute against the cwd and
//! canonicalised), or a fresh temp dir with `--stateless` (never the persistent instance's
//! dir: docs/old-bugs.md §8). Every dir we create gets a `.vcontainer-state` marker file, and
//! `clean`/`vstorage clean` delete only dirs holding it, so a mistyped `--state-dir ~/src`
//! can never lead to `rm -rf ~/src`.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};

use crate::arch::Arch;
use crate::tool::Tool;
use crate::trust::{self, Subject};

/// Marker file name (docs/guest-contract.md "State dir marker").
pub const MARKER: &str = ".vcontainer-state";

/// The state disk of any runtime is `<something>-state.img` (the plugin's
/// `state_image_name`; the old tools' `docker-state.img`, `podman-state.img`).
const STATE_IMAGE_SUFFIX: &str = "-state.img";

/// Files the old shell tool and this tool put in a state dir, besides state disks. An
/// existing unmarked dir that holds only these is adopted (so old `~/.vdkr/x86_64` keeps
/// working); one holding anything else is refused, because it is somebody's data.
const KNOWN_STATE_FILES: &[&str] = &[
    MARKER,
    "daemon.pid",
    "daemon.sock",
    "daemon.domname",
    "daemon.pty",
    "qmp.sock",
    "qemu.log",
    "share",
    "activity",
    "port-forwards.txt",
    "port-forwards.json",
    "vm.lock",
    "vm.json",
    "console.log",
    "vsock.sock",
    "vhost-vsock.sock",
];

/// Files only a VM runner writes (and state disks); at least one must be present before an
/// unmarked, non-empty dir is adopted, so a user's dir that merely holds a `share/` folder is
/// never taken over.
const STRONG_STATE_FILES: &[&str] = &[
    "daemon.pid",
    "daemon.sock",
    "qmp.sock",
    "qemu.log",
    "vm.json",
    "console.log",
];

/// How the state dir was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateKind {
    /// `<root>/<arch>`
    PerArch,
    /// `<root>/<name>` from `-I name`
    Instance(String),
    /// `--state-dir`
    Explicit,
    /// `--stateless`: a temp dir removed when the invocation ends
    Stateless,
}

/// The user's choice among the state options (before anything touches the disk).
#[derive(Debug, Clone, Default)]
pub struct StateRequest {
    pub state_dir: Option<PathBuf>,
    pub instance: Option<String>,
    pub stateless: bool,
}

/// A resolved state dir. For `--stateless` it owns the temp dir, which is deleted when this
/// value is dropped (the VM layer must have stopped any VM using it by then).
#[derive(Debug)]
pub struct StateDir {
    pub path: PathBuf,
    pub kind: StateKind,
    temp: Option<tempfile::TempDir>,
}

impl StateDir {
    pub fn is_temporary(&self) -> bool {
        self.temp.is_some()
    }
}

/// `-I` names become a path component under the root; anything that could escape it or
/// collide with our files is refused.
fn check_instance_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("invalid instance name '{name}': use letters, digits, '-', '_' and '.' (not starting with '.')");
    }
    Ok(())
}

/// Makes `path` absolute against `cwd` and removes `.`/`..` lexically (the dir may not exist
/// yet, so the filesystem cannot resolve it).
pub fn absolute_lexical(path: &Path, cwd: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The canonical path when it exists, else the lexical absolute one.
pub fn best_canonical(path: &Path, cwd: &Path) -> PathBuf {
    let abs = absolute_lexical(path, cwd);
    fs::canonicalize(&abs).unwrap_or(abs)
}

/// The path a request selects, without touching the disk. `None` for `--stateless`.
pub fn planned_path(
    request: &StateRequest,
    root: &Path,
    arch: Arch,
    cwd: &Path,
) -> anyhow::Result<Option<(PathBuf, StateKind)>> {
    check_request(request)?;
    if request.stateless {
        return Ok(None);
    }
    if let Some(dir) = &request.state_dir {
        return Ok(Some((best_canonical(dir, cwd), StateKind::Explicit)));
    }
    if let Some(name) = &request.instance {
        check_instance_name(name)?;
        return Ok(Some((
            best_canonical(&root.join(name), cwd),
            StateKind::Instance(name.clone()),
        )));
    }
    Ok(Some((
        best_canonical(&root.join(arch.as_str()), cwd),
        StateKind::PerArch,
    )))
}

fn check_request(request: &StateRequest) -> anyhow::Result<()> {
    let given = [
        request.state_dir.is_some().then_some("--state-dir"),
        request.instance.is_some().then_some("--instance"),
        request.stateless.then_some("--stateless"),
    ];
    let given: Vec<&str> = given.into_iter().flatten().collect();
    if given.len() > 1 {
        bail!(
            "{} choose the state dir in different ways; give only one",
            given.join(" and ")
        );
    }
    Ok(())
}

/// Resolves and prepares the state dir: creates it (mode 0700) with the marker, or checks
/// that an existing one is ours. For `--stateless`, a fresh temp dir.
pub fn prepare(
    request: &StateRequest,
    tool: &Tool,
    root: &Path,
    arch: Arch,
    cwd: &Path,
) -> anyhow::Result<StateDir> {
    match planned_path(request, root, arch, cwd)? {
        None => {
            let temp = tempfile::Builder::new()
                .prefix(&format!("{}-stateless-", tool.name))
                .tempdir()
                .context("creating the temporary state dir for --stateless")?;
            trust::check(temp.path(), Subject::StateDir)?;
            write_marker(temp.path(), tool)?;
            let path = fs::canonicalize(temp.path())
                .with_context(|| format!("resolving {}", temp.path().display()))?;
            Ok(StateDir {
                path,
                kind: StateKind::Stateless,
                temp: Some(temp),
            })
        }
        Some((path, kind)) => {
            ensure_owned_dir(&path, tool)?;
            let path =
                fs::canonicalize(&path).with_context(|| format!("resolving {}", path.display()))?;
            Ok(StateDir {
                path,
                kind,
                temp: None,
            })
        }
    }
}

/// Creates `dir` with the marker, or accepts it if it already holds the marker, is empty, or
/// holds only state files of the old tool. Anything else is refused, untouched, and so is a
/// dir that other users can write or replace ([`trust`]).
pub fn ensure_owned_dir(dir: &Path, tool: &Tool) -> anyhow::Result<()> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            trust::check_new(dir, Subject::StateDir)?;
            if let Some(parent) = dir.parent() {
                use std::os::unix::fs::DirBuilderExt;
                // the tool's root (~/.vdkr) is as private as the dirs in it
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            create_private_dir(dir)?;
            trust::check(dir, Subject::StateDir)?;
            write_marker(dir, tool)
        }
        Err(e) => Err(e).with_context(|| format!("checking state dir {}", dir.display())),
        Ok(meta) => {
            let meta = if meta.file_type().is_symlink() {
                fs::metadata(dir).with_context(|| format!("following {}", dir.display()))?
            } else {
                meta
            };
            if !meta.is_dir() {
                bail!("state dir {} exists and is not a directory", dir.display());
            }
            trust::check(dir, Subject::StateDir)?;
            if has_marker(dir) {
                return Ok(());
            }
            let (known, foreign) = classify_entries(dir)?;
            let old_state = known
                .iter()
                .any(|k| STRONG_STATE_FILES.contains(&k.as_str()) || is_state_image(k));
            let adoptable = foreign.is_empty() && (known.is_empty() || old_state);
            if !adoptable {
                let example = foreign
                    .first()
                    .or(known.first())
                    .map_or("?", String::as_str);
                bail!(
                    "state dir {} already holds files {} did not create (e.g. '{example}'); \
                     choose a new or empty directory",
                    dir.display(),
                    tool.name,
                );
            }
            write_marker(dir, tool)
        }
    }
}

/// A runtime's state disk (see [`STATE_IMAGE_SUFFIX`]).
fn is_state_image(name: &str) -> bool {
    name.len() > STATE_IMAGE_SUFFIX.len() && name.ends_with(STATE_IMAGE_SUFFIX)
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        // another invocation won the race; it wrote or will write the marker
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating state dir {}", dir.display())),
    }
}

/// (names a state dir may hold, other names), each sorted.
fn classify_entries(dir: &Path) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut known = Vec::new();
    let mut foreign = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if KNOWN_STATE_FILES.contains(&name.as_str()) || is_state_image(&name) {
            known.push(name);
        } else {
            foreign.push(name);
        }
    }
    known.sort();
    foreign.sort();
    Ok((known, foreign))
}

fn write_marker(dir: &Path, tool: &Tool) -> anyhow::Result<()> {
    let text = format!(
        "This directory was created by {} (vcontainer {}) to hold VM state.\n\
         `{} vstorage clean` deletes it; nothing else should be stored here.\n",
        tool.name,
        env!("CARGO_PKG_VERSION"),
        tool.name
    );
    let path = dir.join(MARKER);
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// True when `dir` is a real dir (not a symlink) holding a regular marker file.
pub fn has_marker(dir: &Path) -> bool {
    fs::symlink_metadata(dir.join(MARKER))
        .map(|m| m.file_type().is_file())
        .unwrap_or(false)
}

/// The marked state dirs directly under `root`, sorted by name. Symlinks are skipped, so a
/// link from the root to elsewhere is never listed or deleted.
pub fn marked_dirs_under(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", root.display())),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", root.display()))?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && has_marker(&entry.path()) {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool() -> Tool {
        Tool::new("vpdmn", "podman")
    }

    #[test]
    fn default_is_root_slash_arch() {
        let root = Path::new("/home/u/.vpdmn");
        let (p, k) = planned_path(
            &StateRequest::default(),
            root,
            Arch::Aarch64,
            Path::new("/"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p, Path::new("/home/u/.vpdmn/aarch64"));
        assert_eq!(k, StateKind::PerArch);
    }

    #[test]
    fn instance_is_not_per_arch_and_is_checked() {
        let req = StateRequest {
            instance: Some("ci".into()),
            ..Default::default()
        };
        let (p, _) = planned_path(&req, Path::new("/r"), Arch::X86_64, Path::new("/"))
            .unwrap()
            .unwrap();
        assert_eq!(p, Path::new("/r/ci"));
        for bad in ["../x", "a/b", "", ".hidden", ".."] {
            let req = StateRequest {
                instance: Some(bad.into()),
                ..Default::default()
            };
            assert!(
                planned_path(&req, Path::new("/r"), Arch::X86_64, Path::new("/")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn relative_state_dir_resolves_against_cwd() {
        let req = StateRequest {
            state_dir: Some("./a/../b".into()),
            ..Default::default()
        };
        let (p, k) = planned_path(
            &req,
            Path::new("/r"),
            Arch::X86_64,
            Path::new("/nonexistent/cwd"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p, Path::new("/nonexistent/cwd/b"));
        assert_eq!(k, StateKind::Explicit);
    }

    #[test]
    fn conflicting_choices_are_refused() {
        let req = StateRequest {
            state_dir: Some("/x".into()),
            stateless: true,
            ..Default::default()
        };
        let err = planned_path(&req, Path::new("/r"), Arch::X86_64, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--state-dir and --stateless"), "{err}");
    }

    #[test]
    fn prepare_creates_marker_and_stateless_never_shares() {
        let home = tempfile::tempdir().unwrap();
        let root = home.path().join(".vpdmn");
        let sd = prepare(
            &StateRequest::default(),
            &tool(),
            &root,
            Arch::Aarch64,
            home.path(),
        )
        .unwrap();
        assert!(sd.path.ends_with(".vpdmn/aarch64"));
        assert!(has_marker(&sd.path));

        let stateless = StateRequest {
            stateless: true,
            ..Default::default()
        };
        let tmp = prepare(&stateless, &tool(), &root, Arch::Aarch64, home.path()).unwrap();
        assert_ne!(tmp.path, sd.path);
        assert!(!tmp.path.starts_with(&root));
        assert!(has_marker(&tmp.path));
        let tmp_path = tmp.path.clone();
        drop(tmp);
        assert!(
            !tmp_path.exists(),
            "stateless dir must be removed at the end"
        );
    }

    #[test]
    fn a_dir_others_can_write_is_refused_untouched() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let open = base.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_owned_dir(&open, &tool()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("refusing state dir {}: ", open.display())),
            "{err}"
        );
        assert!(
            err.contains("mode 0777") && err.contains("chmod go-w"),
            "{err}"
        );
        assert!(!has_marker(&open));

        // a marked dir opened up later is refused as well
        ensure_owned_dir(&base.path().join("mine"), &tool()).unwrap();
        let mine = base.path().join("mine");
        assert_eq!(
            fs::metadata(&mine).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&mine, fs::Permissions::from_mode(0o757)).unwrap();
        assert!(ensure_owned_dir(&mine, &tool()).is_err());

        // a new dir under a dir anyone can write is not even created
        let err = ensure_owned_dir(&open.join("sub/state"), &tool())
            .unwrap_err()
            .to_string();
        assert!(err.contains("above it is writable by all users"), "{err}");
        assert!(!open.join("sub").exists());
    }

    #[test]
    fn foreign_dir_is_refused_untouched_but_old_state_is_adopted() {
        let base = tempfile::tempdir().unwrap();
        let user = base.path().join("src");
        fs::create_dir(&user).unwrap();
        fs::write(user.join("main.c"), "int main;").unwrap();
        let err = ensure_owned_dir(&user, &tool()).unwrap_err().to_string();
        assert!(err.contains("main.c"), "{err}");
        assert!(!has_marker(&user));

        let old = base.path().join("old");
        fs::create_dir(&old).unwrap();
        fs::write(old.join("podman-state.img"), "").unwrap();
        fs::create_dir(old.join("share")).unwrap();
        ensure_owned_dir(&old, &tool()).unwrap();
        assert!(has_marker(&old));

        // a user's dir holding only a `share` folder is not an old state dir
        let shared = base.path().join("shared");
        fs::create_dir_all(shared.join("share")).unwrap();
        assert!(ensure_owned_dir(&shared, &tool()).is_err());
        assert!(!has_marker(&shared));

        let empty = base.path().join("empty");
        fs::create_dir(&empty).unwrap();
        ensure_owned_dir(&empty, &tool()).unwrap();
        assert!(has_marker(&empty));
    }

    #[test]
    fn only_marked_real_dirs_are_listed() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir(r.join("x86_64")).unwrap();
        fs::write(r.join("x86_64").join(MARKER), "").unwrap();
        fs::create_dir(r.join("photos")).unwrap();
        std::os::unix::fs::symlink(r.join("x86_64"), r.join("link")).unwrap();
        let listed = marked_dirs_under(r).unwrap();
        assert_eq!(listed, vec![r.join("x86_64")]);
    }
}
