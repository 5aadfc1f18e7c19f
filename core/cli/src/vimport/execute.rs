//! Running import plans on whatever VM the runner chose, through the small [`Guest`]
//! interface (so this module needs nothing of the runner's internals, and tests can drive
//! it with a fake guest).
//!
//! The runner's side is: [`prepare`] before booting anything (bad input fails with the VM
//! untouched), then acquire the VM and start the runtime's services, then [`execute`],
//! then export the storage when [`Prepared::storage_output`] says so, and only when the
//! imports succeeded.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::batch;
use super::{parse_args, plan_import, ImportPlan, ImportTarget, VimportArgs};

/// What vimport needs from the guest.
pub trait Guest {
    /// Unpacks the tar stream `tar` into `guest_dir` (created if missing).
    fn push_tar(&mut self, guest_dir: &str, tar: &mut dyn Read) -> anyhow::Result<()>;
    /// Runs `argv` with extra environment, its output going to the user's stdout/stderr;
    /// returns its exit status (shell convention).
    fn run(&mut self, argv: &[String], env: &[(String, String)]) -> anyhow::Result<i32>;
    /// Removes a guest path; best effort (the guest's tmpfs goes with the VM anyway).
    fn remove(&mut self, path: &str);
    /// A line for the user (stderr).
    fn notice(&mut self, line: &str);
}

/// A checked `vimport` / `vimport-batch` command, ready to run.
#[derive(Debug)]
pub enum Prepared {
    /// `--help`: print this on stdout, exit 0, boot nothing.
    Help(&'static str),
    Imports {
        plans: Vec<ImportPlan>,
        /// `vimport-batch --output F` (or the global `--storage F` for either command):
        /// export the runtime storage here after the imports.
        storage_output: Option<PathBuf>,
    },
}

/// Parses and plans `vimport`/`vimport-batch` before any VM work. Relative paths are
/// resolved against `cwd`; step `i` unpacks into `<guest_base>/<i>`.
pub fn prepare(
    command: &str,
    args: &[String],
    target: &ImportTarget,
    cwd: &Path,
    guest_base: &str,
    global_storage: Option<&Path>,
) -> anyhow::Result<Prepared> {
    let absolute = |p: &Path| crate::state_dir::absolute_lexical(p, cwd);
    match command {
        "vimport-batch" => {
            let parsed = batch::parse_args(args)?;
            if parsed.help {
                return Ok(Prepared::Help(batch::USAGE));
            }
            let output = parsed
                .output
                .or_else(|| global_storage.map(Path::to_path_buf))
                .map(|p| absolute(&p));
            let Some(output) = output else {
                anyhow::bail!("vimport-batch needs --output STORAGE.tar (or the global --storage)");
            };
            let images: Vec<_> = parsed
                .images
                .into_iter()
                .map(|mut r| {
                    r.path = absolute(&r.path);
                    r
                })
                .collect();
            let plans = batch::plan_batch(&images, target, guest_base)?;
            Ok(Prepared::Imports {
                plans,
                storage_output: Some(output),
            })
        }
        _ => match parse_args(args)? {
            VimportArgs::Help => Ok(Prepared::Help(super::USAGE)),
            VimportArgs::Import(mut request) => {
                request.path = absolute(&request.path);
                let plan = plan_import(&request, target, &format!("{guest_base}/0"))?;
                Ok(Prepared::Imports {
                    plans: vec![plan],
                    storage_output: global_storage.map(absolute),
                })
            }
        },
    }
}

/// Runs one plan: push, run its commands (stopping at the first failure), clean up.
pub fn execute_one(plan: &ImportPlan, guest: &mut dyn Guest) -> anyhow::Result<i32> {
    for line in &plan.notices {
        guest.notice(line);
    }
    let pushed = guest.push_tar(&plan.guest_dir, &mut plan.payload.reader());
    if let Err(e) = pushed {
        guest.remove(&plan.guest_dir);
        return Err(e.context(format!("sending {} to the guest", plan.source.display())));
    }
    let mut code = 0;
    let mut result = Ok(());
    for argv in &plan.commands {
        match guest.run(argv, &[]) {
            Ok(0) => {}
            Ok(c) => {
                code = c;
                break;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    guest.remove(&plan.guest_dir);
    result?;
    if code == 0 {
        let what = match &plan.image {
            Some(name) => format!("as {name}"),
            None => "with the archive's own tags".to_string(),
        };
        guest.notice(&format!(
            "Imported {} ({}) {what}",
            plan.source.display(),
            plan.input.describe()
        ));
    }
    Ok(code)
}

/// Runs every plan in order; the first failure stops the batch and names the image (the
/// old batch import always reported success).
pub fn execute(plans: &[ImportPlan], guest: &mut dyn Guest) -> anyhow::Result<i32> {
    for (i, plan) in plans.iter().enumerate() {
        let code = execute_one(plan, guest)?;
        if code != 0 {
            if plans.len() > 1 {
                guest.notice(&format!(
                    "import {} of {} ({}) failed with exit status {code}; the remaining images were not imported",
                    i + 1,
                    plans.len(),
                    plan.source.display()
                ));
            }
            return Ok(code);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;

    /// Records what the runner would do in the guest.
    #[derive(Default)]
    struct FakeGuest {
        pushed: Vec<(String, usize)>,
        ran: Vec<Vec<String>>,
        removed: Vec<String>,
        notices: Vec<String>,
        fail_on: Option<&'static str>,
    }

    impl Guest for FakeGuest {
        fn push_tar(&mut self, guest_dir: &str, tar: &mut dyn Read) -> anyhow::Result<()> {
            let mut bytes = Vec::new();
            tar.read_to_end(&mut bytes)?;
            self.pushed.push((guest_dir.to_string(), bytes.len()));
            Ok(())
        }
        fn run(&mut self, argv: &[String], _env: &[(String, String)]) -> anyhow::Result<i32> {
            self.ran.push(argv.to_vec());
            Ok(match self.fail_on {
                Some(word) if argv.iter().any(|a| a.contains(word)) => 3,
                _ => 0,
            })
        }
        fn remove(&mut self, path: &str) {
            self.removed.push(path.to_string());
        }
        fn notice(&mut self, line: &str) {
            self.notices.push(line.to_string());
        }
    }

    fn rootfs_tar(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        let mut b = tar::Builder::new(std::fs::File::create(&p).expect("create"));
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_cksum();
        b.append_data(&mut h, "etc/x", &b"hi"[..]).expect("append");
        b.finish().expect("finish");
        p
    }

    fn target() -> ImportTarget {
        ImportTarget {
            arch: Arch::X86_64,
            runtime_binary: "docker".into(),
            import_transport: "docker-daemon:".into(),
            tool_name: "vdkr".into(),
        }
    }

    #[test]
    fn relative_paths_resolve_against_cwd_and_storage_falls_back_to_global() {
        let d = tempfile::tempdir().expect("tmp");
        rootfs_tar(d.path(), "r.tar");
        let p = prepare(
            "vimport",
            &["r.tar".to_string(), "x:1".to_string()],
            &target(),
            d.path(),
            "/run/imp",
            Some(Path::new("out.tar")),
        )
        .expect("prepared");
        let Prepared::Imports {
            plans,
            storage_output,
        } = p
        else {
            panic!("not imports")
        };
        assert_eq!(plans[0].source, d.path().join("r.tar"));
        assert_eq!(plans[0].guest_dir, "/run/imp/0");
        assert_eq!(storage_output, Some(d.path().join("out.tar")));
        let e = prepare(
            "vimport-batch",
            &["--image".into(), "r.tar=a".into()],
            &target(),
            d.path(),
            "/b",
            None,
        )
        .expect_err("no output");
        assert!(e.to_string().contains("--output"), "{e}");
        assert!(matches!(
            prepare(
                "vimport",
                &["--help".into()],
                &target(),
                d.path(),
                "/b",
                None
            ),
            Ok(Prepared::Help(_))
        ));
    }

    #[test]
    fn batch_stops_at_the_first_failure_and_cleans_each_dir() {
        let d = tempfile::tempdir().expect("tmp");
        rootfs_tar(d.path(), "a.tar");
        rootfs_tar(d.path(), "b.tar");
        rootfs_tar(d.path(), "c.tar");
        let args: Vec<String> = ["a", "b", "c"]
            .iter()
            .flat_map(|n| ["--image".to_string(), format!("{n}.tar={n}:1")])
            .chain(["-o".to_string(), "s.tar".to_string()])
            .collect();
        let Prepared::Imports { plans, .. } =
            prepare("vimport-batch", &args, &target(), d.path(), "/b", None).expect("prepared")
        else {
            panic!("not imports")
        };
        let mut guest = FakeGuest {
            fail_on: Some("b:1"),
            ..Default::default()
        };
        let code = execute(&plans, &mut guest).expect("ran");
        assert_eq!(code, 3);
        assert_eq!(guest.ran.len(), 2, "c was not attempted: {:?}", guest.ran);
        assert_eq!(guest.removed, ["/b/0", "/b/1"]);
        assert_eq!(guest.pushed[0].0, "/b/0");
        assert!(
            guest.notices.iter().any(|n| n.contains("import 2 of 3")),
            "{:?}",
            guest.notices
        );
        assert!(guest.notices.iter().any(|n| n.contains("as a:1")));
    }
}
