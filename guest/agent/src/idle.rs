//! Whether the guest is idle enough to be saved with its storage (`Suspend`,
//! docs/snapshot.md "Suspended VMs").
//!
//! A suspended guest comes back exactly as it was saved. That must look like what a cold boot
//! of the same state disk gives, or the user would see a difference: so nothing may run but
//! the agent and the services it started (the engine), which a cold boot starts again. A
//! container keeps a monitor process (containerd's shim, podman's conmon) that daemonizes and
//! is re-parented to PID 1, the agent; so does anything else a command left running. Any
//! child of PID 1 that is not a service is therefore something a saved guest would keep
//! running and a booted one would not.

use std::path::Path;

/// The children of PID 1 under `proc_root` that are neither `services` nor kernel threads,
/// as `<comm> (pid <n>)`. Processes that vanish while being read are skipped.
pub(crate) fn strays(proc_root: &Path, services: &[u32]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return vec![format!("{} cannot be read", proc_root.display())];
    };
    let mut found: Vec<(u32, String)> = entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (comm, ppid) = parse_stat(&stat)?;
            (ppid == 1 && !services.contains(&pid)).then_some((pid, comm))
        })
        .collect();
    found.sort();
    found
        .into_iter()
        .map(|(pid, comm)| format!("{comm} (pid {pid})"))
        .collect()
}

/// `comm` and the parent pid from `/proc/<pid>/stat` (`pid (comm) state ppid ...`; comm may
/// hold spaces and parentheses, so the last `)` ends it).
fn parse_stat(stat: &str) -> Option<(String, u32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(dir: &Path, procs: &[(u32, &str, u32)]) {
        for (pid, comm, ppid) in procs {
            let d = dir.join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("stat"),
                format!("{pid} ({comm}) S {ppid} 1 1 0 -1\n"),
            )
            .unwrap();
        }
        // not a process
        std::fs::create_dir_all(dir.join("sys")).unwrap();
    }

    #[test]
    fn children_of_pid1_other_than_services_are_strays() {
        let dir = tempfile::tempdir().unwrap();
        fake_proc(
            dir.path(),
            &[
                (1, "vcontainer-agen", 0),
                (2, "kthreadd", 0),
                (40, "kworker/0:1", 2),
                (108, "containerd", 1),
                (110, "dockerd", 1),
                (130, "docker-proxy", 110),
                (201, "containerd-shim", 1),
                (305, "odd) name (x", 1),
            ],
        );
        assert_eq!(
            strays(dir.path(), &[108, 110]),
            ["containerd-shim (pid 201)", "odd) name (x (pid 305)"]
        );
    }

    #[test]
    fn only_services_running_is_idle() {
        let dir = tempfile::tempdir().unwrap();
        fake_proc(
            dir.path(),
            &[(1, "init", 0), (108, "containerd", 1), (130, "runc", 108)],
        );
        assert!(strays(dir.path(), &[108]).is_empty());
    }
}
