//! Live volumes on a memres VM with a host share (see `vm::virtiofs`): `-v host:ctr[:ro]`
//! binds the host directory itself, seen by the guest under the share's mount
//! (`/run/vcontainer/host<abs host path>`), instead of a copy.
//!
//! So a detached container sees host edits while it runs and its writes are on the host as
//! they happen: nothing is copied in, synced back or recorded in live-volumes.json, and
//! dotfiles are never at risk. `:ro` is enforced by the runtime's read-only bind mount.
//! Volumes this cannot express keep the copy path: a canonical host path that is not UTF-8,
//! or holds `:` or `,` (the separators of `-v` and `--mount`).

use std::path::{Path, PathBuf};

use vcontainer_abi::runtime::{CommandPlan, FileInput, InputKind};

use crate::vm::instance::LIVE_VOLUMES_JSON;
use crate::vm::Instance;

/// The guest path binding `host` through the share mounted at `mount`, or None when the
/// volume must be copied. Symlinks are resolved on the host first: inside the guest an
/// absolute link target would point into the guest's own tree, not the host's.
pub fn guest_path(host: &Path, mount: &str) -> Option<String> {
    let canonical = std::fs::canonicalize(host).ok()?;
    let s = canonical.to_str()?;
    if s.contains([':', ',']) || !s.starts_with('/') {
        return None;
    }
    Some(if s == "/" {
        mount.to_string()
    } else {
        format!("{mount}{s}")
    })
}

/// Rewrites every volume input of `plan` that the share can carry into a bind of the live
/// host path, and drops it from the inputs (nothing to push). `hosts` are the inputs'
/// resolved host paths, in the same order; the hosts of the inputs still to push come back.
pub fn bind_live(plan: &mut CommandPlan, hosts: Vec<PathBuf>, mount: &str) -> Vec<PathBuf> {
    let inputs: Vec<FileInput> = plan.inputs.iter().cloned().collect();
    let mut kept_inputs = Vec::new();
    let mut kept_hosts = Vec::new();
    for (input, host) in inputs.into_iter().zip(hosts) {
        let live = (input.kind == InputKind::Volume)
            .then(|| guest_path(&host, mount))
            .flatten();
        match live {
            Some(live) => {
                tracing::debug!(host = %host.display(), guest = %live, "live volume");
                for arg in plan.argv.iter_mut() {
                    if let Some(new) = replace_path(arg.as_str(), &input.guest_path, &live) {
                        *arg = new.into();
                    }
                }
            }
            None => {
                kept_inputs.push(input);
                kept_hosts.push(host);
            }
        }
    }
    plan.inputs = kept_inputs.into_iter().collect();
    kept_hosts
}

/// `arg` with `from` replaced by `to` where it occurs as a whole path: followed by the end,
/// `:` (`-v SRC:DST`) or `,` (`--mount ...,source=SRC,...`). None when it does not occur.
fn replace_path(arg: &str, from: &str, to: &str) -> Option<String> {
    if from.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(arg.len() + to.len());
    let mut rest = arg;
    let mut changed = false;
    while let Some(at) = rest.find(from) {
        let after = rest[at + from.len()..].chars().next();
        let before_ok = at == 0 || matches!(rest[..at].chars().last(), Some('=' | ':' | ','));
        out.push_str(&rest[..at]);
        if before_ok && matches!(after, None | Some(':' | ',')) {
            out.push_str(to);
            changed = true;
        } else {
            out.push_str(from);
        }
        rest = &rest[at + from.len()..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// When a detached container's rw volumes are about to be copied on a memres VM that has no
/// share: the note saying why and what it means, for the first such container of the VM only.
pub fn copy_mode_notice(instance: &Instance) -> Option<String> {
    let why = instance.record.host_share_note.as_deref()?;
    if instance.state_dir.join(LIVE_VOLUMES_JSON).exists() {
        return None;
    }
    Some(format!(
        "volumes are copied, not shared ({why}): a detached container does not see host edits \
         while it runs, and its changes come back at stop/rm/memres stop"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcontainer_abi::plan_kit::{plan, Dialect};

    fn planned(args: &[String]) -> CommandPlan {
        plan(&Dialect { binary: "docker" }, args).expect("plan")
    }

    #[test]
    fn whole_paths_only() {
        let from = "/tmp/vcontainer-io/r1/vol0";
        assert_eq!(
            replace_path(&format!("{from}:/data:ro"), from, "/run/h/x").as_deref(),
            Some("/run/h/x:/data:ro")
        );
        assert_eq!(
            replace_path(&format!("type=bind,source={from},target=/d"), from, "/h").as_deref(),
            Some("type=bind,source=/h,target=/d")
        );
        assert_eq!(replace_path(from, from, "/h").as_deref(), Some("/h"));
        // vol0 is not vol01, and a path inside it is not it
        assert_eq!(replace_path(&format!("{from}1:/d"), from, "/h"), None);
        assert_eq!(replace_path(&format!("{from}/x:/d"), from, "/h"), None);
        assert_eq!(replace_path("/data", from, "/h"), None);
    }

    #[test]
    fn volumes_become_binds_of_the_canonical_host_path() {
        let t = tempfile::tempdir().expect("tmp");
        let root = std::fs::canonicalize(t.path()).expect("canonical");
        let real = root.join("real dir");
        std::fs::create_dir(&real).expect("mkdir");
        std::fs::write(real.join(".env"), "x").expect("w");
        let link = root.join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let file = root.join("f.txt");
        std::fs::write(&file, "x").expect("w");
        let odd = root.join("a:b");
        std::fs::create_dir(&odd).expect("mkdir");
        let ro = format!("{}:/data:ro", link.display());
        let mount = format!("type=bind,source={},target=/f", file.display());
        let args: Vec<String> = [
            "run",
            "-d",
            "-v",
            &ro,
            "--mount",
            &mount,
            "-v",
            "./rel:/rel",
            "-v",
            "named:/n",
            "bb:1",
            "sh",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut p = planned(&args);
        assert_eq!(p.inputs.len(), 3);
        let hosts = vec![link.clone(), file.clone(), odd.clone()];
        let kept = bind_live(&mut p, hosts, "/run/vcontainer/host");
        let argv = p.argv_strings();
        let want_ro = format!("/run/vcontainer/host{}:/data:ro", real.display());
        assert!(argv.contains(&want_ro), "{argv:?}");
        let want_mount = format!(
            "type=bind,source=/run/vcontainer/host{},target=/f",
            file.display()
        );
        assert!(argv.contains(&want_mount), "{argv:?}");
        assert!(argv.contains(&"named:/n".to_string()));
        // (the third input, ./rel, resolved by the caller to a path with a colon)
        // a path with ":" cannot be said in -v: it stays a copied input
        assert_eq!(kept, [odd]);
        assert_eq!(p.inputs.len(), 1);
        assert_eq!(p.inputs[0].kind, InputKind::Volume);
        assert!(argv
            .iter()
            .any(|a| a.starts_with(p.inputs[0].guest_path.as_str())));
    }

    #[test]
    fn other_inputs_and_missing_paths_are_left_to_the_copy_path() {
        let t = tempfile::tempdir().expect("tmp");
        assert_eq!(guest_path(&t.path().join("missing"), "/m"), None);
        let root = std::fs::canonicalize(t.path()).expect("canonical");
        assert_eq!(
            guest_path(&root, "/m"),
            Some(format!("/m{}", root.display()))
        );
        assert_eq!(guest_path(Path::new("/"), "/m").as_deref(), Some("/m"));
        let tar = root.join("img.tar");
        std::fs::write(&tar, "x").expect("w");
        let args: Vec<String> = ["load", "-i", tar.to_str().expect("utf8")]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut p = planned(&args);
        let before = p.argv_strings();
        let kept = bind_live(&mut p, vec![tar.clone()], "/m");
        assert_eq!(kept, [tar]);
        assert_eq!(p.argv_strings(), before);
    }
}
