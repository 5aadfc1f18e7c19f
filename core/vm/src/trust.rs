//! Ownership and permission checks on the paths whose contents the CLI trusts: state dirs
//! (VM disks, the agent secret, records), socket dirs and plugin files (code it runs).
//!
//! On a shared build host another user who can write such a path, or replace it through a
//! writable directory above it, could plant a plugin that runs as the user, or swap the state
//! disk, sockets or secret of their VM. So before a path is used, it and every directory above
//! it are checked (docs/security.md, "State dirs, socket dirs and plugins"), with the rule
//! OpenSSH applies to `~/.ssh` (`secure_permissions` in its misc.c):
//!
//! - the path itself is owned by the user (plugin files: or by root, as installed ones are)
//!   and nobody else can write it: no `o+w`, and `g+w` only when the group is the owner's
//!   private group (the user-private-group scheme of Debian and Fedora, where the group has
//!   the user's name and no other member);
//! - every directory above it is owned by the user or root, and is not writable by others
//!   unless its sticky bit is set (as `/tmp`): then only an entry's owner can rename or
//!   remove the entry, and the entry is checked in turn.
//!
//! A failed check is an error naming the path, its owner and mode, and the fix; nothing is
//! changed on disk.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What a checked path is, for the message and for who may own it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// A VM state dir: the user's own.
    StateDir,
    /// A dir holding a VM's Unix sockets: the user's own.
    SocketDir,
    /// A plugin library: the user's, or root's (an installed one).
    PluginFile,
}

impl Subject {
    fn describe(self) -> &'static str {
        match self {
            Subject::StateDir => "state dir",
            Subject::SocketDir => "socket dir",
            Subject::PluginFile => "plugin file",
        }
    }

    fn root_may_own(self) -> bool {
        self == Subject::PluginFile
    }
}

/// Why a path is not used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The path or a directory above it is unsafe.
    #[error("refusing {subject} {path}: {problem} (owner {owner}, mode {mode:04o}); fix: {fix}", subject = .subject.describe(), path = .path.display())]
    Unsafe {
        subject: Subject,
        /// the path that was asked for
        path: PathBuf,
        /// what is wrong, naming the offending path when it is a directory above
        problem: String,
        /// owner of the offending path, as `name (uid N)`
        owner: String,
        /// permission bits of the offending path
        mode: u32,
        fix: String,
    },
    /// The path (or a directory above it) could not be examined.
    #[error("checking {subject} {path}: {source}", subject = .subject.describe(), path = .path.display())]
    Io {
        subject: Subject,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Checks `path` (which must exist) for the current effective user.
pub fn check(path: &Path, subject: Subject) -> Result<(), TrustError> {
    Checker::current().check(path, subject)
}

/// [`Checker::check_new`] for the current effective user.
pub fn check_new(path: &Path, subject: Subject) -> Result<(), TrustError> {
    Checker::current().check_new(path, subject)
}

/// The checks for one user id (the effective uid of this process, or another in tests).
#[derive(Debug, Clone, Copy)]
pub struct Checker {
    pub me: u32,
}

impl Checker {
    pub fn current() -> Self {
        Checker {
            me: nix::unistd::geteuid().as_raw(),
        }
    }

    /// Checks `path` and every directory above it, both as given (made absolute) and with
    /// symlinks resolved, so neither a link on the way nor its target can be swapped by
    /// someone else.
    pub fn check(&self, path: &Path, subject: Subject) -> Result<(), TrustError> {
        let io_err = |source| TrustError::Io {
            subject,
            path: path.to_path_buf(),
            source,
        };
        let absolute = std::path::absolute(path).map_err(io_err)?;
        let real = std::fs::canonicalize(&absolute).map_err(io_err)?;
        let meta = std::fs::metadata(&real).map_err(io_err)?;
        let want_dir = subject != Subject::PluginFile;
        if meta.is_dir() != want_dir || (!want_dir && !meta.is_file()) {
            let kind = if want_dir {
                "a directory"
            } else {
                "a regular file"
            };
            return Err(self.unsafe_(
                subject,
                path,
                &meta,
                format!("it is not {kind}"),
                "remove it or point at the right path".to_string(),
            ));
        }
        self.check_target(subject, path, &real, &meta)?;
        let mut above: Vec<&Path> = real.ancestors().skip(1).collect();
        for dir in absolute.ancestors().skip(1) {
            if !above.contains(&dir) {
                above.push(dir);
            }
        }
        for dir in above {
            // a dir above a link may itself be a link: its own entry is checked through the
            // dir holding it, and what it points to through the resolved chain
            let meta = std::fs::metadata(dir).map_err(io_err)?;
            self.check_above(subject, path, dir, &meta)?;
        }
        Ok(())
    }

    /// For a path about to be created: checks the nearest existing directory above it, and
    /// every directory above that, as dirs above a checked path (nothing is created here).
    pub fn check_new(&self, path: &Path, subject: Subject) -> Result<(), TrustError> {
        let io_err = |source| TrustError::Io {
            subject,
            path: path.to_path_buf(),
            source,
        };
        let absolute = std::path::absolute(path).map_err(io_err)?;
        let Some(existing) = absolute.ancestors().skip(1).find(|d| d.exists()) else {
            return Ok(());
        };
        let real = std::fs::canonicalize(existing).map_err(io_err)?;
        let mut above: Vec<&Path> = real.ancestors().collect();
        for dir in existing.ancestors() {
            if !above.contains(&dir) {
                above.push(dir);
            }
        }
        for dir in above {
            let meta = std::fs::metadata(dir).map_err(io_err)?;
            self.check_above(subject, path, dir, &meta)?;
        }
        Ok(())
    }

    fn check_target(
        &self,
        subject: Subject,
        path: &Path,
        real: &Path,
        meta: &Metadata,
    ) -> Result<(), TrustError> {
        let owner = meta.uid();
        let owner_ok = owner == self.me || (owner == 0 && subject.root_may_own());
        if !owner_ok {
            let whom = if subject.root_may_own() {
                format!("you ({}) or root", user_name(self.me))
            } else {
                format!("you ({})", user_name(self.me))
            };
            let fix = match subject {
                Subject::PluginFile => format!(
                    "remove {} or reinstall it as yourself or root",
                    real.display()
                ),
                Subject::StateDir => format!(
                    "use a state dir of your own (--state-dir, -I) or remove {}",
                    real.display()
                ),
                Subject::SocketDir => format!("remove {}", real.display()),
            };
            return Err(self.unsafe_(
                subject,
                path,
                meta,
                format!("it is owned by another user, not by {whom}"),
                fix,
            ));
        }
        if let Some(who) = others_can_write(meta) {
            return Err(self.unsafe_(
                subject,
                path,
                meta,
                format!("it is writable by {who}"),
                format!("chmod go-w {}", real.display()),
            ));
        }
        Ok(())
    }

    fn check_above(
        &self,
        subject: Subject,
        path: &Path,
        dir: &Path,
        meta: &Metadata,
    ) -> Result<(), TrustError> {
        let owner = meta.uid();
        if owner != self.me && owner != 0 {
            return Err(self.unsafe_(
                subject,
                path,
                meta,
                format!(
                    "the directory {} above it is owned by another user, who can replace it",
                    dir.display()
                ),
                "keep it under directories owned by you or root".to_string(),
            ));
        }
        let sticky = meta.permissions().mode() & 0o1000 != 0;
        if let Some(who) = others_can_write(meta).filter(|_| !sticky) {
            return Err(self.unsafe_(
                subject,
                path,
                meta,
                format!(
                    "the directory {} above it is writable by {who}, who can replace it",
                    dir.display()
                ),
                format!(
                    "chmod go-w {} (or chmod +t to make it sticky), or use another path",
                    dir.display()
                ),
            ));
        }
        Ok(())
    }

    fn unsafe_(
        &self,
        subject: Subject,
        path: &Path,
        meta: &Metadata,
        problem: String,
        fix: String,
    ) -> TrustError {
        TrustError::Unsafe {
            subject,
            path: path.to_path_buf(),
            problem,
            owner: format!("{} (uid {})", user_name(meta.uid()), meta.uid()),
            mode: meta.permissions().mode() & 0o7777,
            fix,
        }
    }
}

/// Who besides the owner can write through these permissions: `None`, or a description.
fn others_can_write(meta: &Metadata) -> Option<&'static str> {
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Some("all users");
    }
    if mode & 0o020 != 0 && !is_private_group(meta.uid(), meta.gid()) {
        return Some("other members of its group");
    }
    None
}

/// True when `gid` is the private group of user `uid`: its primary group, named as the user,
/// with no member but the user.
fn is_private_group(uid: u32, gid: u32) -> bool {
    use nix::unistd::{Gid, Group, Uid, User};
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return false;
    };
    let Ok(Some(group)) = Group::from_gid(Gid::from_raw(gid)) else {
        return false;
    };
    user.gid.as_raw() == gid && group.name == user.name && group.mem.iter().all(|m| *m == user.name)
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    /// A private dir (0700) for a test's files; the dirs above it are /tmp's.
    fn private_tmp() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        chmod(dir.path(), 0o700);
        dir
    }

    #[test]
    fn a_private_dir_of_mine_passes_and_other_writable_modes_are_refused() {
        let tmp = private_tmp();
        let state = tmp.path().join("state");
        fs::create_dir(&state).expect("mkdir");
        chmod(&state, 0o700);
        check(&state, Subject::StateDir).expect("0700 dir of mine");

        chmod(&state, 0o777);
        let err = check(&state, Subject::StateDir).expect_err("0777");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("refusing state dir {}: ", state.display())),
            "{msg}"
        );
        assert!(msg.contains("writable by all users"), "{msg}");
        assert!(msg.contains("mode 0777"), "{msg}");
        assert!(msg.contains(&format!("uid {}", me())), "{msg}");
        assert!(
            msg.ends_with(&format!("fix: chmod go-w {}", state.display())),
            "{msg}"
        );
        // sticky does not help the dir itself: others could still add files to it
        chmod(&state, 0o1777);
        assert!(check(&state, Subject::StateDir).is_err());
    }

    #[test]
    fn group_write_is_fine_only_for_a_private_group() {
        let tmp = private_tmp();
        let state = tmp.path().join("state");
        fs::create_dir(&state).expect("mkdir");
        chmod(&state, 0o770);
        let meta = fs::metadata(&state).expect("stat");
        let private = is_private_group(meta.uid(), meta.gid());
        assert_eq!(check(&state, Subject::StateDir).is_ok(), private);
        // root's group on Debian is "root" with no members: a private group by the rule
        if meta.uid() == 0 && meta.gid() == 0 {
            assert!(private);
        }
        // a gid that is not the user's primary group never is
        assert!(!is_private_group(meta.uid(), 4_000_000));
    }

    #[test]
    fn another_owner_is_refused_for_state_dirs_and_root_is_fine_for_plugins_only() {
        let tmp = private_tmp();
        let state = tmp.path().join("state");
        fs::create_dir(&state).expect("mkdir");
        chmod(&state, 0o700);
        let plugin = tmp.path().join("libvcontainer_x.so");
        fs::write(&plugin, "x").expect("write");
        chmod(&plugin, 0o755);
        // the same files seen by another (non-root) user
        let other = Checker { me: me() + 4242 };
        if me() == 0 {
            // the dirs above are root's, which is fine for anyone; the files are root's:
            // a plugin may be, a state dir may not
            other
                .check(&plugin, Subject::PluginFile)
                .expect("root's plugin");
        } else {
            let err = other
                .check(&plugin, Subject::PluginFile)
                .expect_err("theirs");
            assert!(err.to_string().contains("owned by another user"), "{err}");
        }
        let err = other
            .check(&state, Subject::StateDir)
            .expect_err("a dir that is not mine");
        let msg = err.to_string();
        assert!(
            msg.contains("it is owned by another user, not by you"),
            "{msg}"
        );
        assert!(msg.contains("use a state dir of your own"), "{msg}");
    }

    #[test]
    fn a_writable_dir_above_is_refused_unless_sticky() {
        let tmp = private_tmp();
        let shared = tmp.path().join("shared");
        let plugins = shared.join("plugins");
        fs::create_dir_all(&plugins).expect("mkdir");
        let plugin = plugins.join("libvcontainer_x.so");
        fs::write(&plugin, "x").expect("write");
        chmod(&plugin, 0o644);
        chmod(&plugins, 0o755);
        check(&plugin, Subject::PluginFile).expect("safe");

        chmod(&shared, 0o777);
        let msg = check(&plugin, Subject::PluginFile)
            .expect_err("writable above")
            .to_string();
        assert!(
            msg.contains(&format!(
                "the directory {} above it is writable by all users",
                shared.display()
            )),
            "{msg}"
        );
        assert!(msg.contains("mode 0777"), "{msg}");
        chmod(&shared, 0o1777);
        check(&plugin, Subject::PluginFile).expect("sticky above");

        chmod(&plugin, 0o666);
        let msg = check(&plugin, Subject::PluginFile)
            .expect_err("writable file")
            .to_string();
        assert!(msg.starts_with("refusing plugin file "), "{msg}");
        assert!(msg.contains("mode 0666"), "{msg}");
    }

    #[test]
    fn links_are_checked_on_both_sides() {
        let tmp = private_tmp();
        let open = tmp.path().join("open");
        let real = tmp.path().join("real");
        fs::create_dir(&open).expect("mkdir");
        fs::create_dir(&real).expect("mkdir");
        chmod(&real, 0o700);
        let link = open.join("state");
        symlink(&real, &link).expect("symlink");
        chmod(&open, 0o755);
        check(&link, Subject::StateDir).expect("safe link to a safe dir");
        // someone else could swap the link for one to their own dir
        chmod(&open, 0o777);
        let msg = check(&link, Subject::StateDir)
            .expect_err("link in an open dir")
            .to_string();
        assert!(msg.contains(&open.display().to_string()), "{msg}");
        chmod(&open, 0o755);
        chmod(&real, 0o777);
        assert!(check(&link, Subject::StateDir).is_err());
    }

    #[test]
    fn a_dir_to_be_made_is_checked_through_what_exists_above_it() {
        let tmp = private_tmp();
        let root = tmp.path().join("root");
        let state = root.join("a/b/state");
        check_new(&state, Subject::StateDir).expect("private tmp");
        fs::create_dir(&root).expect("mkdir");
        chmod(&root, 0o777);
        let msg = check_new(&state, Subject::StateDir)
            .expect_err("open root")
            .to_string();
        assert!(
            msg.contains(&format!("the directory {} above it", root.display())),
            "{msg}"
        );
        assert!(!root.join("a").exists(), "nothing was created");
    }

    #[test]
    fn wrong_kinds_and_missing_paths_are_errors() {
        let tmp = private_tmp();
        let file = tmp.path().join("f");
        fs::write(&file, "x").expect("write");
        chmod(&file, 0o600);
        let msg = check(&file, Subject::StateDir)
            .expect_err("a file")
            .to_string();
        assert!(msg.contains("it is not a directory"), "{msg}");
        let msg = check(tmp.path(), Subject::PluginFile)
            .expect_err("a dir")
            .to_string();
        assert!(msg.contains("it is not a regular file"), "{msg}");
        assert!(matches!(
            check(&tmp.path().join("nope"), Subject::StateDir),
            Err(TrustError::Io { .. })
        ));
    }
}
