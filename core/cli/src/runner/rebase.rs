//! Per-run guest directories: the plugins place inputs and outputs under one fixed guest dir
//! (`vcontainer_abi::runtime::GUEST_IO_DIR`); concurrent commands on one memres VM would collide there, so
//! each command gets `<GUEST_IO_DIR>/<run id>/` and its plan is rewritten to use it.

use vcontainer_abi::runtime::CommandPlan;
use vcontainer_abi::runtime::GUEST_IO_DIR;

/// `--no-network`: the command gets no network. A command that creates a container or
/// builds gets the runtime's "no network" arguments where its plan says
/// ([`CommandPlan::offline`], nothing when it names a network itself); any other command
/// that needs the network (`pull`, `push`, `login`, `search`) is refused, as it could do
/// nothing.
pub fn without_network(command: &str, plan: &mut CommandPlan) -> anyhow::Result<()> {
    let Some(insert) = plan.offline.take().into_option() else {
        if plan.needs_network {
            anyhow::bail!(
                "--no-network: '{command}' needs the network; run it without --no-network"
            );
        }
        return Ok(());
    };
    let at = usize::try_from(insert.index)
        .ok()
        .filter(|&at| at <= plan.argv.len())
        .ok_or_else(|| {
            anyhow::anyhow!("the runtime plugin planned an offline option out of range")
        })?;
    let added = insert.args.len();
    for (k, arg) in insert.args.into_iter().enumerate() {
        plan.argv.insert(at + k, arg);
    }
    if let Some(image) = plan.image.as_mut().into_option() {
        if usize::try_from(image.index).is_ok_and(|i| i >= at) {
            image.index += u32::try_from(added).unwrap_or(0);
        }
    }
    plan.needs_network = false;
    Ok(())
}

/// A run id unique among concurrent commands on one host: pid + time + a counter.
pub fn new_run_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "r{}-{:08x}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The guest dir of a run.
pub fn run_dir(run_id: &str) -> String {
    format!("{GUEST_IO_DIR}/{run_id}")
}

/// Moves a guest path under the plugin's IO dir to the run's dir; other paths unchanged.
fn rebase_path(path: &str, run_dir: &str) -> String {
    match path.strip_prefix(GUEST_IO_DIR) {
        Some(rest) if rest.starts_with('/') => format!("{run_dir}{rest}"),
        _ => path.to_string(),
    }
}

/// Rewrites every input/output guest path, and exactly those paths where they occur in argv
/// (`-v <guest>:/dst`, `--mount ...,source=<guest>`, `-o <guest>`), to the run's dir. Other
/// arguments are left alone even if they mention the IO dir.
pub fn rebase_plan(plan: &mut CommandPlan, run_dir: &str) {
    let mut known: Vec<String> = plan
        .inputs
        .iter()
        .map(|i| i.guest_path.to_string())
        .chain(plan.outputs.iter().map(|o| o.guest_path.to_string()))
        .collect();
    // longest first, so `/x/in1/a` is not taken for `/x/in1`
    known.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for arg in plan.argv.iter_mut() {
        if let Some(new) = rebase_arg(arg.as_str(), &known, run_dir) {
            *arg = new.into();
        }
    }
    for input in plan.inputs.iter_mut() {
        input.guest_path = rebase_path(&input.guest_path, run_dir).into();
    }
    for output in plan.outputs.iter_mut() {
        output.guest_path = rebase_path(&output.guest_path, run_dir).into();
    }
}

/// The argument with each known guest path (as a whole path: followed by the end, `:`, `,`
/// or `/`) moved to the run dir; None when none occurs.
fn rebase_arg(arg: &str, known: &[String], run_dir: &str) -> Option<String> {
    let mut out = String::with_capacity(arg.len());
    let mut i = 0;
    let mut changed = false;
    'outer: while i < arg.len() {
        for path in known {
            if arg[i..].starts_with(path.as_str()) {
                let after = arg[i + path.len()..].chars().next();
                if matches!(after, None | Some(':') | Some(',') | Some('/')) {
                    out.push_str(&rebase_path(path, run_dir));
                    i += path.len();
                    changed = true;
                    continue 'outer;
                }
            }
        }
        let c = arg[i..].chars().next().unwrap_or_default();
        out.push(c);
        i += c.len_utf8().max(1);
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::test_plans::docker as planned;

    #[test]
    fn no_network_gives_containers_network_none_and_refuses_registry_commands() {
        let args = ["run", "--rm", "-e", "A=1", "bb:1", "cat", "/proc/net/dev"];
        let mut p = planned(&args);
        without_network("run", &mut p).expect("run");
        assert_eq!(
            p.argv_strings(),
            [
                "docker",
                "run",
                "--rm",
                "-e",
                "A=1",
                "--network",
                "none",
                "bb:1",
                "cat",
                "/proc/net/dev"
            ]
        );
        assert_eq!(p.image_ref().map(|(i, _)| i), Some("bb:1"));
        assert!(!p.needs_network);
        // a network the user chose is kept
        let args = ["run", "--network=host", "bb:1"];
        let mut p = planned(&args);
        without_network("run", &mut p).expect("run");
        assert_eq!(
            p.argv_strings(),
            ["docker", "run", "--network=host", "bb:1"]
        );
        let args = ["build", "-t", "x", "."];
        let mut p = planned(&args);
        without_network("build", &mut p).expect("build");
        assert_eq!(&p.argv_strings()[4..6], ["--network", "none"]);
        for args in [&["pull", "bb"][..], &["push", "r:1/bb"], &["login", "r:1"]] {
            let mut p = planned(args);
            let e = without_network(args[0], &mut p).expect_err("refused");
            assert!(e.to_string().contains("needs the network"), "{e}");
        }
        let args = ["images"];
        let mut p = planned(&args);
        without_network("images", &mut p).expect("images");
        assert_eq!(p.argv_strings(), ["docker", "images"]);
    }

    #[test]
    fn volume_and_output_paths_move_to_the_run_dir() {
        let mut p = planned(&[
            "run",
            "-v",
            "./a:/a:ro",
            "--mount",
            "type=bind,source=./b,target=/b",
            "img",
            "echo",
            "/tmp/vcontainer-io/other",
        ]);
        rebase_plan(&mut p, "/tmp/vcontainer-io/r1");
        let argv = p.argv_strings();
        assert_eq!(argv[3], "/tmp/vcontainer-io/r1/vol0:/a:ro");
        assert_eq!(
            argv[5],
            "type=bind,source=/tmp/vcontainer-io/r1/vol1,target=/b"
        );
        // the container's own arguments are untouched unless they name an input's guest path
        assert_eq!(
            argv.last().map(String::as_str),
            Some("/tmp/vcontainer-io/other")
        );
        assert_eq!(
            p.inputs[0].guest_path.as_str(),
            "/tmp/vcontainer-io/r1/vol0"
        );
        assert_eq!(
            p.inputs[1].guest_path.as_str(),
            "/tmp/vcontainer-io/r1/vol1"
        );

        let mut p = planned(&["save", "-o", "out.tar", "img"]);
        rebase_plan(&mut p, "/tmp/vcontainer-io/r2");
        assert_eq!(
            p.argv_strings(),
            [
                "docker",
                "save",
                "-o",
                "/tmp/vcontainer-io/r2/out0/out.tar",
                "img"
            ]
        );
        assert_eq!(
            p.outputs[0].guest_path.as_str(),
            "/tmp/vcontainer-io/r2/out0/out.tar"
        );
    }

    #[test]
    fn a_longer_path_is_not_split_by_a_shorter_one() {
        let known = vec!["/tmp/vcontainer-io/vol1".to_string()];
        assert_eq!(
            rebase_arg(
                "/tmp/vcontainer-io/vol10:/x",
                &known,
                "/tmp/vcontainer-io/r"
            ),
            None
        );
        assert_eq!(
            rebase_arg("/tmp/vcontainer-io/vol1:/x", &known, "/tmp/vcontainer-io/r").as_deref(),
            Some("/tmp/vcontainer-io/r/vol1:/x")
        );
    }

    #[test]
    fn run_ids_differ() {
        assert_ne!(new_run_id(), new_run_id());
        assert!(run_dir("x").starts_with(GUEST_IO_DIR));
    }
}
