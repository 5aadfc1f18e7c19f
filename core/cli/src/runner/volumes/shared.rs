//! Live volumes on a memres VM that shares volumes (see `vm::shares`): `-v host:ctr[:ro]`
//! binds the host directory itself, served to the guest by its own virtiofsd and mounted
//! under `SHARES_DIR`, instead of a copy.
//!
//! So a detached container sees host edits while it runs and its writes are on the host as
//! they happen: nothing is copied in, synced back or recorded in live-volumes.json, and
//! dotfiles are never at risk. `:ro` is enforced by the host side (virtiofsd `--readonly`)
//! as well as by the runtime's read-only bind. Volumes this cannot express keep the copy
//! path: a single file (a share serves a whole directory, and its siblings are not the
//! container's business), or a share that could not be made (the reason is shown).

use std::path::{Path, PathBuf};

use vcontainer_abi::runtime::{CommandPlan, FileInput, InputKind};

use crate::vm::instance::LIVE_VOLUMES_JSON;
use crate::vm::Instance;

/// The host directory a volume input can be shared as: canonical (symlinks resolved on the
/// host: inside the guest an absolute link target would point into the guest's own tree),
/// and a directory. None: the volume is copied.
pub fn shareable_dir(host: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(host).ok().filter(|p| p.is_dir())
}

/// Rewrites every volume input of `plan` that can be shared into a bind of its share's guest
/// dir (`share(canonical host dir, read_only)` makes or finds the share), and drops it from
/// the inputs (nothing to push). `hosts` are the inputs' resolved host paths, in the same
/// order; the hosts of the inputs still to push come back, with the reasons shares failed.
pub fn bind_live(
    plan: &mut CommandPlan,
    hosts: Vec<PathBuf>,
    mut share: impl FnMut(&Path, bool) -> Result<String, String>,
) -> (Vec<PathBuf>, Vec<String>) {
    let inputs: Vec<FileInput> = plan.inputs.iter().cloned().collect();
    let mut kept_inputs = Vec::new();
    let mut kept_hosts = Vec::new();
    let mut problems = Vec::new();
    for (input, host) in inputs.into_iter().zip(hosts) {
        let dir = (input.kind == InputKind::Volume)
            .then(|| shareable_dir(&host))
            .flatten();
        let live = dir.and_then(|dir| match share(&dir, input.read_only) {
            Ok(guest) => Some(guest),
            Err(why) => {
                problems.push(format!(
                    "{}: copied, not shared live: {why}",
                    host.display()
                ));
                None
            }
        });
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
    (kept_hosts, problems)
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

    fn planned(args: &[String]) -> CommandPlan {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::runner::test_plans::docker(&args)
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
    fn directory_volumes_become_binds_of_their_share() {
        let t = tempfile::tempdir().expect("tmp");
        let root = std::fs::canonicalize(t.path()).expect("canonical");
        let real = root.join("real dir");
        std::fs::create_dir(&real).expect("mkdir");
        let link = root.join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let file = root.join("f.txt");
        std::fs::write(&file, "x").expect("w");
        let odd = root.join("a:b");
        std::fs::create_dir(&odd).expect("mkdir");
        let broken = root.join("broken");
        std::fs::create_dir(&broken).expect("mkdir");
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
            "./b:/b",
            "-v",
            "named:/n",
            "bb:1",
            "sh",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut p = planned(&args);
        assert_eq!(p.inputs.len(), 4);
        let hosts = vec![link.clone(), file.clone(), odd.clone(), broken.clone()];
        let mut asked = Vec::new();
        let (kept, problems) = bind_live(&mut p, hosts, |dir, ro| {
            asked.push((dir.to_path_buf(), ro));
            if dir == broken {
                return Err("no slot".into());
            }
            Ok(format!("/run/vcontainer/shares/vcvol{}", asked.len() - 1))
        });
        // the link resolved to its dir, ro passed on; the file never asked; the odd name fine
        assert_eq!(
            asked,
            [
                (real.clone(), true),
                (odd.clone(), false),
                (broken.clone(), false)
            ]
        );
        let argv = p.argv_strings();
        assert!(
            argv.contains(&"/run/vcontainer/shares/vcvol0:/data:ro".to_string()),
            "{argv:?}"
        );
        assert!(
            argv.contains(&"/run/vcontainer/shares/vcvol1:/rel".to_string()),
            "{argv:?}"
        );
        assert!(argv.contains(&"named:/n".to_string()));
        // the file and the failed share stay copied inputs, the failure is said
        assert_eq!(kept, [file, broken.clone()]);
        assert_eq!(p.inputs.len(), 2);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("no slot") && problems[0].contains("broken"),
            "{problems:?}"
        );
    }

    #[test]
    fn other_inputs_and_missing_paths_are_left_to_the_copy_path() {
        let t = tempfile::tempdir().expect("tmp");
        assert_eq!(shareable_dir(&t.path().join("missing")), None);
        let root = std::fs::canonicalize(t.path()).expect("canonical");
        assert_eq!(shareable_dir(&root), Some(root.clone()));
        let tar = root.join("img.tar");
        std::fs::write(&tar, "x").expect("w");
        let args: Vec<String> = ["load", "-i", tar.to_str().expect("utf8")]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut p = planned(&args);
        let before = p.argv_strings();
        let (kept, problems) = bind_live(&mut p, vec![tar.clone()], |_, _| {
            panic!("a load input is not a volume")
        });
        assert_eq!(kept, [tar]);
        assert!(problems.is_empty());
        assert_eq!(p.argv_strings(), before);
    }
}
