//! "Is a memres VM running in this state dir?" for `clean` and `vstorage`, from the files
//! the VM layer leaves there: `vm.json` (pids + /proc start times), `vm.lock` (held while a VM
//! starts or stops) and the old tool's `daemon.pid`.
//!
//! Read-only and lenient about `vm.json`'s exact fields: any top-level `*pid` number counts,
//! and a matching `*start_time` (clock ticks since boot, /proc/<pid>/stat field 22) is
//! checked when present, so a reused pid is not mistaken for our VM. The VM layer's own
//! `Instance::find` is asked first; the checks here are wider on purpose (any one live
//! process, a held lock, the old tool's pid file), because for deleting, "maybe running" must
//! count as running.

use std::fs;
use std::path::Path;

/// What a state dir's files say about a memres VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemresStatus {
    /// A live process from `vm.json`/`daemon.pid`, or `vm.lock` is held (start/stop running).
    Running { pid: Option<u32> },
    /// Files of a VM exist but no process is alive.
    Stopped,
    /// Nothing says a VM ever ran here.
    NoMemres,
}

impl MemresStatus {
    pub fn is_running(&self) -> bool {
        matches!(self, MemresStatus::Running { .. })
    }

    /// The old tool's wording in `vstorage list`.
    pub fn describe(&self) -> String {
        match self {
            MemresStatus::Running { pid: Some(pid) } => format!("memres running (PID {pid})"),
            MemresStatus::Running { pid: None } => "memres starting or stopping".to_string(),
            MemresStatus::Stopped => "stopped".to_string(),
            MemresStatus::NoMemres => "no memres".to_string(),
        }
    }
}

/// /proc/<pid>/stat field 22 (start time in clock ticks), or None when not alive.
fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may hold spaces and ')' so split after the last ')'
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Pids in `vm.json` that are alive and (when a start time is recorded) are the same process.
fn live_pids_from_vm_json(text: &str) -> Vec<u32> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let mut live = Vec::new();
    for (key, value) in &map {
        let Some(prefix) = key.strip_suffix("pid") else {
            continue;
        };
        let Some(pid) = value.as_u64().and_then(|p| u32::try_from(p).ok()) else {
            continue;
        };
        let Some(actual) = proc_start_time(pid) else {
            continue;
        };
        let recorded = ["start_time", "starttime", "start_ticks"]
            .iter()
            .find_map(|s| map.get(&format!("{prefix}{s}")).and_then(|v| v.as_u64()));
        if recorded.is_none_or(|r| r == actual) {
            live.push(pid);
        }
    }
    live
}

/// True when another process holds `vm.lock` (a VM is being started or stopped).
fn lock_is_held(path: &Path) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_released_on_drop) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// Looks at `dir`'s VM files.
pub fn probe(dir: &Path) -> MemresStatus {
    let vm_json = dir.join("vm.json");
    let daemon_pid = dir.join("daemon.pid");
    let mut seen_files = false;

    if let Some(instance) = crate::vm::instance::Instance::find(dir) {
        return MemresStatus::Running {
            pid: u32::try_from(instance.record.qemu_pid).ok(),
        };
    }
    if let Ok(text) = fs::read_to_string(&vm_json) {
        seen_files = true;
        if let Some(pid) = live_pids_from_vm_json(&text).into_iter().next() {
            return MemresStatus::Running { pid: Some(pid) };
        }
    }
    if let Ok(text) = fs::read_to_string(&daemon_pid) {
        seen_files = true;
        if let Ok(pid) = text.trim().parse::<u32>() {
            if proc_start_time(pid).is_some() {
                return MemresStatus::Running { pid: Some(pid) };
            }
        }
    }
    if lock_is_held(&dir.join("vm.lock")) {
        return MemresStatus::Running { pid: None };
    }
    if seen_files {
        MemresStatus::Stopped
    } else {
        MemresStatus::NoMemres
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn my_start_time() -> u64 {
        proc_start_time(std::process::id()).unwrap()
    }

    #[test]
    fn empty_dir_has_no_memres() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(probe(d.path()), MemresStatus::NoMemres);
    }

    #[test]
    fn live_pid_with_matching_start_time_is_running() {
        let d = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let json = format!(
            r#"{{"qemu_pid": {me}, "qemu_start_time": {}, "transport": "hybrid"}}"#,
            my_start_time()
        );
        fs::write(d.path().join("vm.json"), json).unwrap();
        assert_eq!(probe(d.path()), MemresStatus::Running { pid: Some(me) });
    }

    #[test]
    fn reused_pid_is_not_running() {
        let d = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let json = format!(
            r#"{{"qemu_pid": {me}, "qemu_start_time": {}}}"#,
            my_start_time() + 1
        );
        fs::write(d.path().join("vm.json"), json).unwrap();
        assert_eq!(probe(d.path()), MemresStatus::Stopped);
    }

    #[test]
    fn old_daemon_pid_file_is_honoured() {
        let d = tempfile::tempdir().unwrap();
        fs::write(
            d.path().join("daemon.pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        assert!(probe(d.path()).is_running());
        fs::write(d.path().join("daemon.pid"), "999999999\n").unwrap();
        assert_eq!(probe(d.path()), MemresStatus::Stopped);
    }

    #[test]
    fn held_lock_counts_as_running() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("vm.lock");
        let holder = nix::fcntl::Flock::lock(
            fs::File::create(&path).unwrap(),
            nix::fcntl::FlockArg::LockExclusiveNonblock,
        )
        .unwrap();
        assert_eq!(probe(d.path()), MemresStatus::Running { pid: None });
        drop(holder);
        assert_eq!(probe(d.path()), MemresStatus::NoMemres);
    }
}
