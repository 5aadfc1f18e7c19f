//! Suspended VMs (docs/snapshot.md, "Suspended VMs"): a VM restored from a snapshot is, when
//! its command is done and nothing but the engine runs in it, saved again *with* its state
//! disk into its state dir instead of shut down; the next VM of that state dir is restored
//! from it with the engine already running.
//!
//! Why: the shared snapshot (vm/snapshot.rs) cannot hold a running engine, whose data is the
//! user's state disk, attached only after the restore; so dockerd started after every restore,
//! seconds under TCG. A suspended VM holds the engine as it ran on this very disk.
//!
//! Owns `<state dir>/suspended.snap` and `suspended.json` (and, through vm/ramfile.rs, the
//! suspended guest's RAM file on a tmpfs when it was saved without its RAM). The saved guest is valid only with
//! the disk exactly as its QEMU left it: the JSON records the disk's identity (device, inode,
//! size, mtime, ctime) and the key of the snapshot it descends from (guest build, QEMU,
//! memory, cpus...), and any difference drops it. The guest froze the disk before the save
//! (`Suspend`), so the disk alone is always complete and consistent: dropping a suspended VM
//! loses nothing but the engine's start.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vcontainer_proto::{AGENT_VSOCK_PORT, CAPABILITY_SUSPEND};

use super::boot::RunningVm;
use super::config::VmConfig;
use super::instance::write_atomic;
use super::snapshot;
use crate::agent_client;

/// The saved guest, and what it was saved with.
const FILE: &str = "suspended.snap";
const META: &str = "suspended.json";
/// Present while the state dir's VM has been given a secret (docs/security.md): its memory
/// may hold it, so that VM is never written to a file.
const SECRET_SEEN: &str = "secret-seen";

/// What a suspended VM was saved with; it is restored only when all of it still holds.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    /// The file name of the snapshot its VM was restored from: the same name today means the
    /// same guest build, QEMU, arch, runtime, memory, cpus, storage path and debug.
    snapshot: String,
    disk: FileIdentity,
    /// The tmpfs file holding the guest RAM when the save left it out (`x-ignore-shared`,
    /// vm/ramfile.rs); None: the RAM is in the saved file.
    #[serde(default)]
    ram: Option<FileIdentity>,
}

/// A file as QEMU left it (the state disk, the RAM file). ctime as well as mtime: a tool can put an old mtime back,
/// never a ctime.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileIdentity {
    fn of(path: &Path) -> std::io::Result<Self> {
        let m = std::fs::metadata(path)?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        })
    }
}

/// How a [`suspend`] ended.
#[derive(Debug)]
pub enum Suspended {
    /// Saved into the state dir; the VM is gone.
    Saved(Duration),
    /// Not saved and nothing changed: the VM runs on (shut it down as usual). Why, for `-v`.
    Declined(String),
    /// The guest froze its disk but the save failed: the VM was ended without a shutdown,
    /// which loses nothing (the frozen disk is complete).
    Failed(String),
}

/// Save `vm` with its state disk into its state dir instead of shutting it down, when it may
/// be: restored from a snapshot (its devices are on hot-plug ports), a state disk, no port
/// forwards (the restoring QEMU has the next run's), and the guest idle (its agent checks).
/// The caller holds the state dir's vm.lock.
pub fn suspend(vm: &mut RunningVm) -> Suspended {
    if let Some(why) = not_suspendable(vm) {
        return Suspended::Declined(why);
    }
    let started = Instant::now();
    if let Err(why) = freeze(vm) {
        return Suspended::Declined(why);
    }
    let frozen = started.elapsed();
    let dir = vm.cfg.state_dir.clone();
    let tmp = dir.join(format!("{FILE}.tmp-{}", std::process::id()));
    let saved = snapshot::save_running(vm, &tmp);
    let written = started.elapsed();
    snapshot::quit(vm);
    // QEMU is gone: the RAM it left is the suspended VM's (before the VM's files go)
    let ram = saved.map_err(|e| e.to_string()).and_then(|()| keep_ram(vm));
    super::boot::remove_vm_files(&vm.paths);
    let ended = started.elapsed();
    let kept = ram.and_then(|ram| keep(vm, &tmp, ram));
    tracing::debug!(?frozen, ?written, ?ended, kept = ?started.elapsed(), "suspend phases");
    match kept {
        Ok(()) => Suspended::Saved(started.elapsed()),
        Err(why) => {
            let _ = std::fs::remove_file(&tmp);
            forget(&dir);
            Suspended::Failed(why)
        }
    }
}

/// `VCONTAINER_SUSPEND=0`: never suspend (every VM shuts down; a suspended VM already saved
/// is still restored). Read by the process that ends the VM: the command of a one-shot VM,
/// the supervisor (i.e. `memres start`'s environment) of a memres VM.
pub const ENV: &str = "VCONTAINER_SUSPEND";

/// Why `vm` cannot be suspended (None: it may, if its guest is idle).
fn not_suspendable(vm: &RunningVm) -> Option<String> {
    if std::env::var_os(ENV).is_some_and(|v| v == "0") {
        Some(format!("{ENV}=0 is set"))
    } else if secret_seen(&vm.cfg.state_dir) {
        Some("a command gave it a secret (a password or registry credentials), which its memory may hold".into())
    } else if vm.cfg.expose.is_some() {
        Some("its engine API is exposed: what host clients gave it is unknown".into())
    } else if vm.restored_from.is_none() {
        Some("it was not restored from a snapshot".into())
    } else if !vm.cfg.state_disk {
        Some("it has no state disk".into())
    } else if !vm.cfg.port_forwards.is_empty() {
        Some("it forwards ports".into())
    } else if !vm.hello.has_capability(CAPABILITY_SUSPEND) {
        Some(format!(
            "its agent ({}) cannot suspend",
            vm.hello.agent_version
        ))
    } else {
        None
    }
}

/// `Suspend`: the agent checks that only the services run, then freezes the state disk.
fn freeze(vm: &RunningVm) -> std::result::Result<(), String> {
    let conn = vm
        .endpoint
        .connect(AGENT_VSOCK_PORT, Duration::from_secs(10), &vm.secret)
        .map_err(|e| e.to_string())?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let request = vcontainer_proto::SuspendRequest {
        only_with_services: snapshot::slow_vsock_release(vm.cfg.arch),
    };
    agent_client::suspend(conn, request).map_err(|e| format!("the guest declined: {e}"))
}

/// A VM whose RAM is a tmpfs file was saved without it: the file becomes the suspended VM's.
/// Its identity, for the JSON (None: the RAM is in the saved file).
fn keep_ram(vm: &RunningVm) -> std::result::Result<Option<FileIdentity>, String> {
    if vm.guest_ram.is_none() {
        return Ok(None);
    }
    let kept = super::ramfile::keep_suspended(&vm.cfg.state_dir)
        .map_err(|e| format!("keeping the guest RAM file: {e}"))?;
    FileIdentity::of(&kept)
        .map(Some)
        .map_err(|e| format!("{}: {e}", kept.display()))
}

/// The save is complete and QEMU gone: record the disk (and RAM file) as QEMU left them, then
/// put the file in place (the JSON last, so a file without one is never used).
fn keep(vm: &RunningVm, tmp: &Path, ram: Option<FileIdentity>) -> std::result::Result<(), String> {
    let dir = &vm.cfg.state_dir;
    let snapshot = vm
        .restored_from
        .as_deref()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or("the snapshot file has no name")?;
    let disk = FileIdentity::of(&vm.cfg.state_disk_path())
        .map_err(|e| format!("{}: {e}", vm.cfg.state_disk_path().display()))?;
    let meta = serde_json::to_vec(&Meta {
        snapshot,
        disk,
        ram,
    })
    .map_err(|e| e.to_string())?;
    let file = dir.join(FILE);
    std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(tmp, &file))
        .map_err(|e| format!("finishing {}: {e}", file.display()))?;
    write_atomic(&dir.join(META), &meta).map_err(|e| e.to_string())
}

/// Boot the VM of `cfg`: the state dir's suspended VM when one fits (its engine runs
/// already), else as `snapshot::boot` does (the shared snapshot, else cold). A `-v` line says
/// why a suspended VM was dropped.
pub fn boot(cfg: &VmConfig) -> super::Result<RunningVm> {
    new_vm(&cfg.state_dir);
    let key = snapshot::key(cfg);
    let dropped = match &key {
        Ok(key) if cfg.snapshot => match restore(cfg, key) {
            Ok(vm) => return Ok(vm),
            Err(why) => why,
        },
        _ => None,
    };
    let mut vm = snapshot::boot(cfg, key)?;
    if let Some(why) = dropped {
        vm.snapshot_note = Some(format!(
            "{why}; {}",
            vm.snapshot_note.take().unwrap_or_default()
        ));
    }
    Ok(vm)
}

/// Restore the suspended VM of `cfg`'s state dir, when there is one that fits (`snapshot` is
/// the file of the snapshot `cfg` would restore). Err(None): there is none; Err(Some(why)):
/// there was one and it was dropped, for the `-v` line.
fn restore(cfg: &VmConfig, snapshot: &Path) -> std::result::Result<RunningVm, Option<String>> {
    let (file, ram) = take(cfg, snapshot)?;
    match snapshot::restore(
        cfg,
        &file,
        true,
        ram.as_deref(),
        "restored the suspended VM",
    ) {
        Ok(mut vm) => {
            vm.restored_from = Some(snapshot.to_path_buf());
            Ok(vm)
        }
        Err(e) => {
            forget(&cfg.state_dir);
            let why = format!("restoring the suspended VM failed (removed it): {e}");
            tracing::info!("{why}");
            Err(Some(why))
        }
    }
}

/// The suspended VM file of `cfg`'s state dir when it fits, with its RAM file when it was
/// saved without its RAM; one that does not fit is removed.
type Taken = (PathBuf, Option<PathBuf>);
fn take(cfg: &VmConfig, snapshot: &Path) -> std::result::Result<Taken, Option<String>> {
    let dir = &cfg.state_dir;
    let (file, meta) = (dir.join(FILE), dir.join(META));
    if !file.exists() && !meta.exists() {
        // a RAM file without them (a run killed mid-suspend) is no VM's
        super::ramfile::forget_suspended(dir);
        return Err(None);
    }
    let why = match mismatch(cfg, snapshot, &file, &meta) {
        Ok(ram) => {
            // taken: the restore removes the file once loaded; a file left without its JSON
            // (a run killed before that) is dropped by the next one
            let _ = std::fs::remove_file(&meta);
            return Ok((file, ram));
        }
        Err(why) => format!("dropped the suspended VM: {why}"),
    };
    forget(dir);
    tracing::info!("{why}");
    Err(Some(why))
}

/// Why the suspended VM in `file` (described by `meta`) does not fit `cfg` (Ok: it does,
/// with its RAM file if it was saved without its RAM).
fn mismatch(
    cfg: &VmConfig,
    snapshot: &Path,
    file: &Path,
    meta: &Path,
) -> std::result::Result<Option<PathBuf>, String> {
    if !file.exists() {
        return Err(format!("{} is missing", file.display()));
    }
    let saved: Meta = std::fs::read(meta)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: {e}", meta.display()))?;
    let name = snapshot.file_name().map(|n| n.to_string_lossy());
    if name.as_deref() != Some(saved.snapshot.as_str()) {
        return Err(
            "it was saved for another guest build, QEMU or VM size (--memory, --cpus)".into(),
        );
    }
    match FileIdentity::of(&cfg.state_disk_path()) {
        Ok(now) if now == saved.disk => {}
        Ok(_) => return Err("the state disk changed since it was saved".into()),
        Err(e) => return Err(format!("{}: {e}", cfg.state_disk_path().display())),
    }
    let Some(ram) = saved.ram else {
        return Ok(None);
    };
    // a host reboot empties the tmpfs; anything else that touched the file is no guest's
    let file = super::ramfile::suspended(&cfg.state_dir).ok_or("its RAM file's tmpfs is gone")?;
    match FileIdentity::of(&file) {
        Ok(now) if now == ram => Ok(Some(file)),
        Ok(_) => Err(format!("its RAM file {} changed", file.display())),
        Err(e) => Err(format!("its RAM file {}: {e}", file.display())),
    }
}

/// The suspended VM of `state_dir`, if any: its file, MB it takes (the file's, sparse, plus
/// its RAM file's on the tmpfs) and save time (seconds since the epoch), for `snapshot ls`.
pub fn describe(state_dir: &Path) -> Option<(PathBuf, u64, i64)> {
    let file = state_dir.join(FILE);
    let m = std::fs::metadata(&file).ok()?;
    let ram = super::ramfile::suspended(state_dir)
        .and_then(|f| std::fs::metadata(f).ok())
        .map_or(0, |r| r.blocks());
    state_dir
        .join(META)
        .exists()
        .then(|| (file, (m.blocks() + ram) * 512 / 1_000_000, m.mtime()))
}

/// Record that the VM of `state_dir` (the one running, or the one a command is about to use)
/// is given a secret: it will not be suspended. Call before the secret is sent.
pub fn note_secret(state_dir: &Path) -> std::io::Result<()> {
    std::fs::write(state_dir.join(SECRET_SEEN), b"")
}

fn secret_seen(state_dir: &Path) -> bool {
    state_dir.join(SECRET_SEEN).exists()
}

/// A new VM of `state_dir` starts: no secret given to it yet (see [`note_secret`]).
pub(super) fn new_vm(state_dir: &Path) {
    let _ = std::fs::remove_file(state_dir.join(SECRET_SEEN));
}

/// Remove the suspended VM of `state_dir`, if any (it no longer matches its disk, or the
/// user asked: `snapshot rm`); true when there was one.
pub fn forget(state_dir: &Path) -> bool {
    let mut removed = false;
    for name in [META, FILE] {
        removed |= std::fs::remove_file(state_dir.join(name)).is_ok();
    }
    removed |= super::ramfile::forget_suspended(state_dir);
    if let Ok(entries) = std::fs::read_dir(state_dir) {
        // what a run killed mid-save left: the file's and the JSON's temporaries
        // (`instance::write_atomic` names it after the JSON without its extension)
        let tmp = [format!("{FILE}.tmp-"), META.replace(".json", ".tmp-")];
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if tmp.iter().any(|t| name.starts_with(t.as_str())) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_in(dir: &Path) -> VmConfig {
        let mut cfg = VmConfig::new(super::super::config::Arch::X86_64, "podman", dir);
        cfg.state_disk = true;
        cfg
    }

    fn suspended(cfg: &VmConfig, snapshot: &str) {
        std::fs::write(cfg.state_disk_path(), b"disk").expect("disk");
        std::fs::write(cfg.state_dir.join(FILE), b"saved guest").expect("file");
        let meta = Meta {
            snapshot: snapshot.into(),
            disk: FileIdentity::of(&cfg.state_disk_path()).expect("identity"),
            ram: None,
        };
        std::fs::write(
            cfg.state_dir.join(META),
            serde_json::to_vec(&meta).expect("json"),
        )
        .expect("meta");
    }

    #[test]
    fn a_suspended_vm_fits_only_its_snapshot_key_and_its_disk_as_saved() {
        let t = tempfile::tempdir().expect("tmp");
        let cfg = cfg_in(t.path());
        let key = t.path().join("podman-x86_64-aaaa-1111.snap");
        assert_eq!(take(&cfg, &key).expect_err("none"), None);

        suspended(&cfg, "podman-x86_64-aaaa-1111.snap");
        assert_eq!(take(&cfg, &key).expect("fits"), (t.path().join(FILE), None));
        // taken: its JSON goes at once, the file once the restore loaded it
        assert!(!t.path().join(META).exists());

        // another guest build or VM size: dropped
        suspended(&cfg, "podman-x86_64-aaaa-1111.snap");
        let other = t.path().join("podman-x86_64-bbbb-1111.snap");
        let why = take(&cfg, &other).expect_err("dropped").expect("why");
        assert!(why.contains("another guest build"), "{why}");
        assert!(!t.path().join(FILE).exists() && !t.path().join(META).exists());

        // the disk written since (by a cold boot, say): dropped
        suspended(&cfg, "podman-x86_64-aaaa-1111.snap");
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(cfg.state_disk_path(), b"diskX").expect("write");
        let why = take(&cfg, &key).expect_err("dropped").expect("why");
        assert!(why.contains("state disk changed"), "{why}");
        assert!(!t.path().join(FILE).exists());
    }

    /// A suspended VM saved without its RAM, whose RAM file is in the tmpfs (false: no tmpfs).
    fn suspended_with_ram(cfg: &VmConfig, snapshot: &str) -> bool {
        if super::super::ramfile::fresh(&cfg.state_dir, 1).is_err() {
            return false;
        }
        let ram = super::super::ramfile::keep_suspended(&cfg.state_dir).expect("keep");
        std::fs::write(&ram, b"guest memory").expect("ram");
        suspended(cfg, snapshot);
        let mut meta: Meta =
            serde_json::from_slice(&std::fs::read(cfg.state_dir.join(META)).expect("meta"))
                .expect("json");
        meta.ram = Some(FileIdentity::of(&ram).expect("identity"));
        std::fs::write(
            cfg.state_dir.join(META),
            serde_json::to_vec(&meta).expect("json"),
        )
        .expect("meta");
        true
    }

    #[test]
    fn a_suspended_vm_fits_only_with_its_ram_file_as_saved() {
        let t = tempfile::tempdir().expect("tmp");
        let cfg = cfg_in(t.path());
        let key = t.path().join("k.snap");
        if !suspended_with_ram(&cfg, "k.snap") {
            return; // a host without a tmpfs never saves without the RAM
        }
        let ram = super::super::ramfile::suspended(t.path()).expect("ram path");
        assert_eq!(
            take(&cfg, &key).expect("fits"),
            (t.path().join(FILE), Some(ram.clone()))
        );

        // written since the save: dropped, with the RAM file
        suspended_with_ram(&cfg, "k.snap");
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&ram, b"other memory").expect("write");
        let why = take(&cfg, &key).expect_err("dropped").expect("why");
        assert!(why.contains("RAM file") && why.contains("changed"), "{why}");
        assert!(!ram.exists() && !t.path().join(FILE).exists());

        // gone (a host reboot empties the tmpfs): dropped
        suspended_with_ram(&cfg, "k.snap");
        std::fs::remove_file(&ram).expect("rm");
        let why = take(&cfg, &key).expect_err("dropped").expect("why");
        assert!(why.contains("RAM file"), "{why}");
        assert!(!t.path().join(META).exists());
    }

    #[test]
    fn a_half_written_suspended_vm_is_dropped() {
        let t = tempfile::tempdir().expect("tmp");
        let cfg = cfg_in(t.path());
        let key = t.path().join("podman-x86_64-aaaa-1111.snap");
        // the file without its JSON (killed before the JSON was written)
        std::fs::write(t.path().join(FILE), b"saved guest").expect("file");
        let why = take(&cfg, &key).expect_err("dropped").expect("why");
        assert!(why.contains(META), "{why}");
        assert!(!t.path().join(FILE).exists());
        // a JSON without its file
        suspended(&cfg, "podman-x86_64-aaaa-1111.snap");
        std::fs::remove_file(t.path().join(FILE)).expect("rm");
        assert!(take(&cfg, &key).expect_err("dropped").is_some());
        assert!(!t.path().join(META).exists());
    }

    #[test]
    fn forget_removes_unfinished_saves_too() {
        let t = tempfile::tempdir().expect("tmp");
        let cfg = cfg_in(t.path());
        suspended(&cfg, "k.snap");
        std::fs::write(t.path().join(format!("{FILE}.tmp-123")), b"x").expect("tmp");
        // the JSON's temporary, named as instance::write_atomic names it
        let json_tmp = t.path().join(META).with_extension("tmp-124");
        std::fs::write(&json_tmp, b"{").expect("tmp");
        forget(t.path());
        let left: Vec<_> = std::fs::read_dir(t.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            left,
            [cfg.state_disk_path().file_name().unwrap().to_string_lossy()]
        );
    }
}
