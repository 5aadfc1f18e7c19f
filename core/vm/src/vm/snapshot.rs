//! Cold start from a snapshot (docs/snapshot.md): a one-shot VM restored from a saved guest
//! whose agent is up, instead of booting a kernel and the agent each time.
//!
//! Why: every `--no-daemon` command pays a full boot (seconds under TCG). QEMU saves a
//! running guest to a file and starts from it in well under a second. The snapshot is made
//! once per key ([`Env`]: blobs, QEMU binary, arch, runtime; [`Choice`]: memory, cpus, ...) in the user's cache
//! dir, on first need, written atomically. What QEMU cannot save (the vhost-user vsock
//! device) and what belongs to one run (the state disk, the agent secret, clock, entropy) is
//! added after the restore: devices are hot-plugged on root ports, the secret is the
//! restoring QEMU's own fw_cfg file, and `Resume` sets the rest.
//!
//! On by default (`VCONTAINER_SNAPSHOT=0` or `VmConfig::snapshot` false turn it off); any
//! reason not to use a snapshot (or a failed restore) falls back to a cold boot with one `-v`
//! line saying why.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vcontainer_proto::{HelloOk, ResumeRequest, AGENT_VSOCK_PORT, CAPABILITY_RESUME};

use super::accel;
use super::blobs;
use super::boot::{self, RunningVm, VmPaths};
use super::config::{Arch, VmConfig};
use super::error::{Result, VmError};
use super::process::{self, Proc};
use super::qemu::{
    SnapshotLayout, VsockDevice, SNAPSHOT_STATE_ID, SNAPSHOT_STATE_PORT, SNAPSHOT_VSOCK_CHARDEV,
    SNAPSHOT_VSOCK_ID, SNAPSHOT_VSOCK_PORT,
};
use super::qmp::Qmp;
use super::ramfile;
use super::transport;
use crate::agent_client;

pub use super::config::{snapshots_enabled as enabled, SNAPSHOT_ENV as ENV};

/// Bumped whenever what a snapshot holds or how it is restored changes: old files then no
/// longer match any key.
const FORMAT: u32 = 2;

/// Where the guest sees the hot-plugged state disk: the rootfs is /dev/vda.
const GUEST_STATE_DEVICE: &str = "/dev/vdb";

/// How long saving may take (the guest's RAM in use, written once).
const SAVE_TIMEOUT: Duration = Duration::from_secs(300);

pub use super::error::SnapshotError;

fn io(what: impl Into<String>, source: std::io::Error) -> SnapshotError {
    SnapshotError::Io {
        what: what.into(),
        source,
    }
}

/// What `boot_snapshot` does beyond a cold boot.
pub enum Mode {
    /// Boot to be saved.
    Save,
    /// Load this snapshot file, then hot-plug the run's devices.
    Restore {
        file: PathBuf,
        /// Where the restore's time went, filled in as it goes (for the `-v` line).
        phases: RestorePhases,
        /// A suspended VM (`vm::suspend`): saved with the state disk plugged, which must
        /// then be there before the state is loaded; and the file is this run's alone, removed
        /// once loaded (from then on the guest may write the disk, which it no longer matches).
        with_disk: bool,
        /// A suspended VM saved without its RAM (`x-ignore-shared`): the tmpfs file holding
        /// it, which QEMU maps as the guest RAM (vm/ramfile.rs).
        suspended_ram: Option<PathBuf>,
    },
}

/// How the guest RAM travels in a migration file. Both sides must set the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// mapped-ram: RAM pages at fixed offsets in the file (zero pages skipped, sparse).
    MappedRam,
    /// x-ignore-shared: the RAM is a named shared file that stays where it is; the file holds
    /// the device state only. (QEMU 10.0 fails such a save with mapped-ram as well: "Failed
    /// to write bitmap to file: Bad address", so this one is a plain stream.)
    IgnoreShared,
}

impl Format {
    /// The format of a VM whose guest RAM is `ram` (a tmpfs file, or None: a memfd).
    fn for_ram(ram: Option<&PathBuf>) -> Self {
        match ram {
            Some(_) => Format::IgnoreShared,
            None => Format::MappedRam,
        }
    }
}

/// Where a restore's time goes: the `-v` line names each phase, so a slow one shows (issue
/// 14's goal is about the whole one-shot command; docs/snapshot.md has the figures).
#[derive(Debug, Default)]
pub struct RestorePhases {
    /// QEMU spawned until its QMP socket answers.
    qemu_start: std::cell::Cell<Duration>,
    /// `migrate-incoming` until the guest is loaded (paused).
    load: std::cell::Cell<Duration>,
    /// vsock + state disk hot-plugged and `cont`.
    plug: std::cell::Cell<Duration>,
    /// `Resume` sent until answered (clock, entropy, storage mounted).
    resume: std::cell::Cell<Duration>,
}

impl RestorePhases {
    /// `qemu 0.21 s, load 0.30 s, plug 0.05 s, hello 0.40 s, resume 0.20 s`, given the time
    /// from spawning to the agent's Hello (the hello phase is what the others leave of it).
    fn describe(&self, to_hello: Duration) -> String {
        let before_hello = self.qemu_start.get() + self.load.get() + self.plug.get();
        format!(
            "qemu {:.2} s, load {:.2} s, plug {:.2} s, hello {:.2} s, resume {:.2} s",
            self.qemu_start.get().as_secs_f64(),
            self.load.get().as_secs_f64(),
            self.plug.get().as_secs_f64(),
            to_hello.saturating_sub(before_hello).as_secs_f64(),
            self.resume.get().as_secs_f64()
        )
    }
}

impl boot::SnapshotHook for Mode {
    fn layout(&self) -> SnapshotLayout {
        match self {
            Mode::Save => SnapshotLayout::Save,
            Mode::Restore { .. } => SnapshotLayout::Restore,
        }
    }

    /// A restored VM's RAM is a fresh tmpfs file (so it can be suspended without writing
    /// it), or the suspended VM's own; the VM booted to be saved keeps its memfd.
    fn guest_ram(&self, cfg: &VmConfig) -> Option<PathBuf> {
        match self {
            Mode::Save => None,
            Mode::Restore {
                suspended_ram: Some(file),
                ..
            } => Some(file.clone()),
            Mode::Restore { .. } => match ramfile::fresh(&cfg.state_dir, cfg.memory_mib) {
                Ok(file) => Some(file),
                Err(why) => {
                    tracing::info!("the guest RAM stays a memfd: {why}");
                    None
                }
            },
        }
    }

    /// Called once QEMU runs, before waiting for the agent: a restore loads the saved state,
    /// plugs the vsock device and the state disk, and lets the guest run.
    fn after_spawn(
        &self,
        cfg: &VmConfig,
        paths: &VmPaths,
        vsock: &VsockDevice,
        qemu: &mut Proc,
        deadline: Instant,
    ) -> Result<()> {
        let Mode::Restore {
            file,
            phases,
            with_disk,
            suspended_ram,
        } = self
        else {
            return Ok(());
        };
        let mut at = Instant::now();
        let mut lap = |phase: &std::cell::Cell<Duration>| {
            phase.set(at.elapsed());
            at = Instant::now();
        };
        let mut qmp = connect_qmp(&paths.qmp_socket, qemu, deadline)?;
        lap(&phases.qemu_start);
        if *with_disk {
            plug_state_disk(&mut qmp, cfg)?;
        }
        let format = Format::for_ram(suspended_ram.as_ref());
        let loaded = incoming(&mut qmp, file, format, qemu, deadline);
        lap(&phases.load);
        if let Err(e) = loaded {
            // QEMU says why on its stderr (e.g. "load of migration failed: ...")
            let said = process::tail_lines(&paths.qemu_log, 3)
                .lines()
                .map(|l| l.trim().trim_start_matches('|').trim())
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(match e {
                VmError::Snapshot(SnapshotError::Migration(m)) if !said.is_empty() => {
                    SnapshotError::Migration(format!("{m}; QEMU said: {said}")).into()
                }
                other => other,
            });
        }
        if *with_disk {
            // a run killed from here on must not restore it again
            let _ = std::fs::remove_file(file);
        }
        if suspended_ram.is_some() {
            ramfile::resume_suspended(&cfg.state_dir)
                .map_err(|e| io("taking the suspended VM's RAM file", e))?;
        }
        plug_vsock(&mut qmp, vsock)?;
        if cfg.state_disk && !*with_disk {
            plug_state_disk(&mut qmp, cfg)?;
        }
        qmp.execute("cont", None).map_err(SnapshotError::Qmp)?;
        lap(&phases.plug);
        Ok(())
    }
}

/// The snapshot `cfg`'s VM would be restored from (it may not exist yet): its file, the key
/// of its lineage; Err(why) when this VM cannot come from a snapshot.
pub(super) fn key(cfg: &VmConfig) -> std::result::Result<PathBuf, String> {
    unusable(cfg).map_or_else(|| snapshot_file(cfg), Err)
}

/// Boot the VM of `cfg` from its snapshot `key` (see [`key`]) when one fits (making it first
/// when missing), else cold (`vm::suspend::boot` tries the state dir's suspended VM first).
/// Never fails because of the snapshot: every problem with it means a cold boot. With
/// snapshots on, the returned VM's `snapshot_note` says which it was (and logged at `-v`).
pub(super) fn boot(cfg: &VmConfig, key: std::result::Result<PathBuf, String>) -> Result<RunningVm> {
    if !cfg.snapshot {
        return boot::boot(cfg);
    }
    let file = match key {
        Ok(file) => file,
        Err(why) => return cold(cfg, format!("no snapshot: {why}")),
    };
    let saved = match ensure_saved(cfg, &file) {
        Ok(saved) => saved,
        Err(why) => return cold(cfg, why),
    };
    match restore(cfg, &file, false, None, "restored from the snapshot") {
        Ok(mut vm) => {
            vm.restored_from = Some(file);
            // the save's own line goes into the note too: a memres supervisor's log is not
            // the user's terminal
            vm.snapshot_note = vm
                .snapshot_note
                .map(|restored| format!("{saved}{restored}"));
            Ok(vm)
        }
        Err(e) => {
            // a snapshot that does not restore would fail the same way next time
            let _ = std::fs::remove_file(&file);
            record_failure(&file, &format!("restoring: {e}"));
            cold(
                cfg,
                format!("restoring {} failed (removed it): {e}", file.display()),
            )
        }
    }
}

/// A cold boot of `cfg`, its note (logged) saying `why`.
fn cold(cfg: &VmConfig, why: String) -> Result<RunningVm> {
    let note = format!("cold boot: {why}");
    tracing::info!("{note}");
    let mut vm = boot::boot(cfg)?;
    vm.snapshot_note = Some(note);
    Ok(vm)
}

/// Make the snapshot `file` when it does not exist yet: Ok(the note's line on the save, empty
/// when it existed), Err(why there is none: a recent failure, or this save's).
fn ensure_saved(cfg: &VmConfig, file: &Path) -> std::result::Result<String, String> {
    if file.exists() {
        return Ok(String::new());
    }
    if let Some(why) = recent_failure(file) {
        return Err(match why.strip_prefix(PERMANENT) {
            Some(why) => format!(
                "no snapshot: this guest build cannot be restored ({why}); \
                 a new guest build is saved again"
            ),
            None => format!(
                "no snapshot: a save or restore of this one failed less than {} min ago \
                 ({why}); `snapshot rm` retries at once",
                FAILURE_PAUSE.as_secs() / 60
            ),
        });
    }
    let started = Instant::now();
    if let Err(e) = save(cfg, file) {
        record_failure(file, &failure_reason(&e));
        return Err(format!("no snapshot: saving one failed: {e}"));
    }
    Ok(format!(
        "saved the snapshot {} in {:?}; ",
        file.display(),
        started.elapsed()
    ))
}

/// How long a failed save or restore keeps a key from being saved again: each try costs a
/// boot on top of the command's cold one, so a persistent failure (an old agent, a QEMU
/// without mapped-ram, a full disk) must not double every command; a passing one (a host
/// too loaded to boot in time) is retried after this.
const FAILURE_PAUSE: Duration = Duration::from_secs(3600);

/// Starts the reason of a failure that holds as long as the key (the blobs) does: an agent
/// without `Resume` stays without it until the guest is rebuilt, which is another key.
const PERMANENT: &str = "until the guest is rebuilt: ";

/// What the marker of a failed save says.
fn failure_reason(e: &VmError) -> String {
    match e {
        VmError::Snapshot(SnapshotError::AgentWithoutResume { .. }) => format!("{PERMANENT}{e}"),
        _ => format!("saving: {e}"),
    }
}

/// `<file>.failed`: why the last save or restore of `file` failed.
fn failure_marker(file: &Path) -> PathBuf {
    let mut m = file.as_os_str().to_owned();
    m.push(".failed");
    PathBuf::from(m)
}

fn record_failure(file: &Path, why: &str) {
    // best effort: without it the next command just tries again
    let _ = std::fs::write(failure_marker(file), why);
}

/// The reason recorded by a failure less than [`FAILURE_PAUSE`] ago, or by a [`PERMANENT`]
/// one of any age.
fn recent_failure(file: &Path) -> Option<String> {
    let marker = failure_marker(file);
    let age = std::fs::metadata(&marker)
        .ok()?
        .modified()
        .ok()?
        .elapsed()
        .unwrap_or_default();
    let why = std::fs::read_to_string(&marker)
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("no reason recorded")
        .to_string();
    (age < FAILURE_PAUSE || why.starts_with(PERMANENT)).then_some(why)
}

/// Why this VM cannot come from a snapshot (None: it can).
fn unusable(cfg: &VmConfig) -> Option<String> {
    transport::choose(cfg.transport)
        .err()
        .map(|e| e.to_string())
}

/// What a snapshot depends on that changes under the user's feet (a new build of the
/// guest, a QEMU upgrade, a new snapshot format): a snapshot of another `Env` of the same
/// runtime and arch can never be used again, and is pruned when a new one is saved.
#[derive(serde::Serialize)]
struct Env {
    format: u32,
    arch: Arch,
    runtime: String,
    accel: String,
    /// (path, size, mtime ns, inode) of the kernel, initramfs and rootfs: their contents
    /// are in the saved RAM and the rootfs is read through the saved page cache.
    blobs: Vec<(PathBuf, u64, i128, u64)>,
    /// The same for the QEMU binary: its device models must load what it saved.
    qemu: (PathBuf, u64, i128, u64),
}

/// What a snapshot depends on that the user chooses per command: snapshots of other choices
/// (another `--memory`) stay valid and are kept.
#[derive(serde::Serialize)]
struct Choice {
    memory_mib: u32,
    cpus: u32,
    storage_path: String,
    debug: bool,
}

pub(super) fn identity(path: &Path) -> std::result::Result<(PathBuf, u64, i128, u64), String> {
    let canonical = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let m = std::fs::metadata(&canonical).map_err(|e| format!("{}: {e}", path.display()))?;
    let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
    Ok((canonical, m.len(), mtime, m.ino()))
}

fn short_hash(v: &impl serde::Serialize) -> std::result::Result<String, String> {
    let json = serde_json::to_vec(v).map_err(|e| e.to_string())?;
    Ok(hex::encode(Sha256::digest(&json))[..16].to_string())
}

/// The name prefix of every snapshot of `runtime` on `arch`.
fn family(runtime: &str, arch: Arch) -> String {
    format!("{runtime}-{arch}-")
}

/// The snapshot file of `cfg` in the cache dir (it may not exist yet):
/// `<runtime>-<arch>-<env hash>-<choice hash>.snap`.
pub(super) fn snapshot_file(cfg: &VmConfig) -> std::result::Result<PathBuf, String> {
    let set = blobs::resolve_for(cfg).map_err(|e| e.to_string())?;
    let program = cfg.arch.qemu_program();
    let qemu = process::which(program).ok_or_else(|| format!("{program} not found"))?;
    let env = Env {
        format: FORMAT,
        arch: cfg.arch,
        runtime: cfg.runtime.clone(),
        accel: accel::choose(cfg.arch, cfg.no_kvm).accel.to_string(),
        blobs: [&set.kernel, &set.initramfs, &set.rootfs]
            .into_iter()
            .map(|p| identity(p))
            .collect::<std::result::Result<_, _>>()?,
        qemu: identity(&qemu)?,
    };
    let choice = Choice {
        memory_mib: cfg.memory_mib,
        cpus: cfg.cpus,
        storage_path: cfg.storage_path.clone(),
        debug: cfg.debug,
    };
    let dir = cache_dir(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
        .map_err(|e| e.to_string())?;
    Ok(dir.join(format!(
        "{}{}-{}.snap",
        family(&cfg.runtime, cfg.arch),
        short_hash(&env)?,
        short_hash(&choice)?
    )))
}

/// After `kept` was saved: remove the snapshots of its runtime and arch made for another
/// guest build, QEMU or format (their env hash differs), which nothing can restore any more.
/// Snapshots of other memory/cpus choices stay. Returns the names removed.
fn prune_stale(kept: &Path) -> Vec<String> {
    let (Some(dir), Some(name)) = (kept.parent(), kept.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    // `<family><env>-<choice>.snap`: everything up to the last '-' is family + env
    let Some((env_prefix, _)) = name.rsplit_once('-') else {
        return Vec::new();
    };
    let Some((family, _)) = env_prefix.rsplit_once('-') else {
        return Vec::new();
    };
    let (env_prefix, family) = (format!("{env_prefix}-"), format!("{family}-"));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let other = entry.file_name().to_string_lossy().into_owned();
        let stale = (other.ends_with(".snap") || other.ends_with(".snap.failed"))
            && other.starts_with(&family)
            && !other.starts_with(&env_prefix);
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(other);
        }
    }
    removed
}

/// `$XDG_CACHE_HOME/vcontainer/snapshots`, or `~/.cache/...` (the XDG rule: a relative
/// XDG_CACHE_HOME is ignored).
pub fn cache_dir(
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> std::result::Result<PathBuf, SnapshotError> {
    let base = match xdg_cache_home.map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        _ => match home.map(PathBuf::from) {
            Some(h) if h.is_absolute() => h.join(".cache"),
            _ => return Err(SnapshotError::NoCacheDir),
        },
    };
    Ok(base.join("vcontainer").join("snapshots"))
}

/// `snapshot build`: (re)make the snapshot of `cfg` now, replacing the one there (the new
/// file is renamed over it when complete). `cfg.state_dir` must be a private dir: the save
/// boots a VM there. Returns the file and how long the save took.
pub fn build(cfg: &VmConfig) -> std::result::Result<(PathBuf, Duration), String> {
    if let Some(why) = unusable(cfg) {
        return Err(why);
    }
    let file = snapshot_file(cfg)?;
    let started = Instant::now();
    save(cfg, &file).map_err(|e| e.to_string())?;
    Ok((file, started.elapsed()))
}

/// One file of `snapshot ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    /// Bytes on disk (the file is sparse: its apparent size is the guest's RAM).
    pub disk_bytes: u64,
    /// Seconds since the epoch of the save.
    pub saved_at: i64,
    /// The one this command's VM would restore.
    pub current: bool,
}

/// The snapshots of `runtime` in the cache dir, by name; `current` marks `cfg`'s.
pub fn list(cfg: &VmConfig) -> std::result::Result<(Vec<Listed>, PathBuf), SnapshotError> {
    let dir = cache_dir(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))?;
    let current = snapshot_file(cfg).ok();
    Ok((list_in(&dir, &cfg.runtime, current.as_deref())?, dir))
}

fn list_in(
    dir: &Path,
    runtime: &str,
    current: Option<&Path>,
) -> std::result::Result<Vec<Listed>, SnapshotError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("reading {}", dir.display()), e)),
    };
    let mut out: Vec<Listed> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.ends_with(".snap") && name.starts_with(&format!("{runtime}-"))) {
                return None;
            }
            let m = entry.metadata().ok()?;
            Some(Listed {
                current: current.is_some_and(|c| c == entry.path()),
                disk_bytes: m.blocks() * 512,
                saved_at: m.mtime(),
                name,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Remove the snapshots (and unfinished saves) of `runtime` from the cache dir (`clean`);
/// returns how many files went, and the dir.
pub fn remove_all(runtime: &str) -> std::result::Result<(usize, PathBuf), SnapshotError> {
    let dir = cache_dir(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))?;
    Ok((remove_all_in(&dir, runtime)?, dir))
}

fn remove_all_in(dir: &Path, runtime: &str) -> std::result::Result<usize, SnapshotError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(format!("reading {}", dir.display()), e)),
    };
    let mut n = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // only what we write there: `<runtime>-<arch>-<hash>.snap[.tmp-<pid>]`
        let ours = name.ends_with(".snap")
            || name.ends_with(".snap.failed")
            || name.contains(".snap.tmp-");
        if ours && name.starts_with(&format!("{runtime}-")) {
            let path = entry.path();
            std::fs::remove_file(&path)
                .map_err(|e| io(format!("removing {}", path.display()), e))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Boot a VM to be saved, save it to `file` (through a temporary file renamed at the end, so
/// a killed save leaves no half snapshot), and stop it.
fn save(cfg: &VmConfig, file: &Path) -> Result<()> {
    let dir = file
        .parent()
        .ok_or_else(|| VmError::Other(format!("{} has no parent dir", file.display())))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io(format!("creating {}", dir.display()), e))?;
    remove_stale_temporaries(dir);
    let tmp = PathBuf::from(format!("{}.tmp-{}", file.display(), std::process::id()));
    let started = Instant::now();
    // the saved guest has no state disk: that is the run's, plugged after each restore
    // and no port forwards (the restoring QEMU's -netdev has the run's own)
    let mut save_cfg = cfg.clone();
    save_cfg.state_disk = false;
    save_cfg.port_forwards.clear();
    save_cfg.host_share = false;
    let mut vm = boot::boot_snapshot(&save_cfg, &Mode::Save)?;
    // checked before anything is written: a guest that would refuse `Resume` is not saved
    let saved = may_save(&vm.hello).and_then(|()| save_running(&vm, &tmp));
    // the saved VM is never used again: no clean shutdown needed
    discard(&mut vm);
    if let Err(e) = saved {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let done = std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, file))
        .and_then(|()| std::fs::File::open(dir))
        .and_then(|d| d.sync_all());
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(format!("finishing {}", file.display()), e).into());
    }
    tracing::info!(
        "saved the snapshot {} in {:?}",
        file.display(),
        started.elapsed()
    );
    let _ = std::fs::remove_file(failure_marker(file));
    for name in prune_stale(file) {
        tracing::info!("removed the stale snapshot {name} (another guest build or QEMU)");
    }
    Ok(())
}

/// End a VM whose state was saved (or need not be kept): QEMU quit without a guest
/// shutdown, its helpers stopped, its sockets removed.
pub(super) fn discard(vm: &mut RunningVm) {
    quit(vm);
    boot::remove_vm_files(&vm.paths);
}

/// QEMU quit (without a guest shutdown) and its helpers stopped; the VM's files stay.
pub(super) fn quit(vm: &mut RunningVm) {
    if let Ok(mut q) = Qmp::connect(&vm.paths.qmp_socket, Duration::from_secs(2)) {
        let _ = q.quit();
    }
    if !vm.qemu.wait(Duration::from_secs(5)) {
        vm.qemu.signal(nix::sys::signal::Signal::SIGKILL);
        vm.qemu.wait(Duration::from_secs(5));
    }
    for v in vm.vhost.iter_mut() {
        v.terminate(Duration::from_secs(2));
    }
}

/// Temporary files of saves whose process is gone (killed mid-save).
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((_, pid)) = name
            .to_string_lossy()
            .rsplit_once(".snap.tmp-")
            .map(|(a, b)| (a.to_string(), b.to_string()))
        else {
            continue;
        };
        let alive = pid
            .parse::<i32>()
            .ok()
            .and_then(process::ProcId::of)
            .is_some_and(|p| p.is_alive());
        if !alive {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether the booted guest may be saved: its agent must say in `HelloOk` that it serves
/// `Resume` (agents that predate the capability ignore `vcontainer.snapshot=1` and would
/// refuse it after every restore).
fn may_save(hello: &HelloOk) -> Result<()> {
    if hello.has_capability(CAPABILITY_RESUME) {
        return Ok(());
    }
    Err(SnapshotError::AgentWithoutResume {
        agent_version: hello.agent_version.clone(),
    }
    .into())
}

/// Unplug what cannot be saved, stop the guest and write its state to `tmp` (without the
/// RAM when that is a named file: `x-ignore-shared`).
pub(super) fn save_running(vm: &RunningVm, tmp: &Path) -> Result<()> {
    let mut q =
        Qmp::connect(&vm.paths.qmp_socket, Duration::from_secs(10)).map_err(SnapshotError::Qmp)?;
    // vhost-user-vsock is not migratable (QEMU: "State blocked by non-migratable device")
    release_vsock(vm, &mut q)?;
    let _ = q.execute(
        "chardev-remove",
        Some(json!({ "id": SNAPSHOT_VSOCK_CHARDEV })),
    );
    q.execute("stop", None).map_err(SnapshotError::Qmp)?;
    set_capabilities(&mut q, Format::for_ram(vm.guest_ram.as_ref()))?;
    // the default bandwidth cap (128 MiB/s) is for live migration over a network
    q.execute(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": 1u64 << 40 })),
    )
    .map_err(SnapshotError::Qmp)?;
    q.execute("migrate", Some(json!({ "channels": [file_channel(tmp)] })))
        .map_err(SnapshotError::Qmp)?;
    // a save without the RAM takes a few ms: asked again soon, then less often
    let mut outcome = None;
    super::process::poll_until(SAVE_TIMEOUT, || {
        outcome = migration_outcome(&mut q);
        outcome.is_some()
    });
    outcome.unwrap_or_else(|| {
        Err(SnapshotError::Migration(format!(
            "did not complete within {} s",
            SAVE_TIMEOUT.as_secs()
        ))
        .into())
    })
}

/// How the running `migrate` ended (None: it has not yet).
fn migration_outcome(q: &mut Qmp) -> Option<Result<()>> {
    let r = match q.execute("query-migrate", None) {
        Ok(r) => r,
        Err(e) => return Some(Err(SnapshotError::Qmp(e).into())),
    };
    match r.get("status").and_then(Value::as_str) {
        Some("completed") => {
            tracing::debug!(
                total_ms = ?r.get("total-time"),
                setup_ms = ?r.get("setup-time"),
                ram = ?r.get("ram"),
                "saved"
            );
            Some(Ok(()))
        }
        Some(s @ ("failed" | "cancelled")) => {
            let why = r
                .get("error-desc")
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            Some(Err(SnapshotError::Migration(format!("{s}: {why}")).into()))
        }
        _ => None,
    }
}

/// Whether releasing the vsock device before a save takes seconds on `arch`: arm virt's root
/// ports use native PCIe hotplug, and the guest's pciehp waits 1 s after powering a slot off
/// before QEMU may remove the device (1.6-1.8 s measured for the whole release, against
/// 0.04 s with x86_64's ACPI hotplug). A suspend then pays it at the end of
/// every command (docs/snapshot.md, "Suspended VMs").
pub(super) fn slow_vsock_release(arch: Arch) -> bool {
    arch == Arch::Aarch64
}

/// Removes the vsock device from the running guest: on aarch64 the guest powers its slot
/// off (see [`power_off_vsock_slot`]), else (or when that fails) `device_del`.
fn release_vsock(vm: &RunningVm, q: &mut Qmp) -> Result<()> {
    let unplugging = Instant::now();
    let released = slow_vsock_release(vm.cfg.arch)
        && power_off_vsock_slot(vm)
        && vsock_gone(q, unplugging + SLOT_POWER_OFF_WAIT);
    if released {
        // pciehp sleeps 1 s after the power-off and then drops the presence change it caused:
        // a guest saved inside that second would drop the re-plug's after the restore too.
        // QEMU removes a device once the slot's power *and* its indicator are off: for a
        // device pciehp hot-plugged (a restored VM's) that is after the second, for one
        // present at boot (whose indicator Linux never lit) at the power-off itself
        // (docs/snapshot.md, "Facts")
        std::thread::sleep(if vm.restored_from.is_some() {
            HOTPLUGGED_SLOT_SETTLE
        } else {
            SLOT_SETTLE
        });
    } else {
        q.execute("device_del", Some(json!({ "id": SNAPSHOT_VSOCK_ID })))
            .map_err(SnapshotError::Qmp)?;
        if !vsock_gone(q, Instant::now() + Duration::from_secs(30)) {
            return Err(SnapshotError::Migration(
                "could not start: the guest did not release the vsock device within 30 s".into(),
            )
            .into());
        }
    }
    let how = if released {
        "slot powered off by the guest"
    } else {
        "device_del"
    };
    tracing::info!(
        "the guest released the vsock device in {:.2} s ({how})",
        unplugging.elapsed().as_secs_f64()
    );
    Ok(())
}

/// How long the guest's own power-off of the vsock slot may take before `device_del` is used.
const SLOT_POWER_OFF_WAIT: Duration = Duration::from_secs(3);

/// How long the guest is left to finish powering the vsock slot off after QEMU removed a
/// device that was present at boot (pciehp waits 1 s after the power-off, see
/// `release_vsock`).
const SLOT_SETTLE: Duration = Duration::from_millis(1500);

/// The same for a device pciehp hot-plugged (a restored VM's): QEMU removed it after pciehp's
/// 1 s, and the guest is left a moment to handle the removal.
const HOTPLUGGED_SLOT_SETTLE: Duration = Duration::from_millis(200);

/// Run in the guest: find the vsock device (virtio 1af4:1053), and in a detached process (the
/// exec's answer travels over that very device) power its hot-plug slot off through sysfs.
/// (`read`, a shell builtin, not `$(cat ...)`: each fork and exec costs ~20 ms under TCG, and
/// the `cat`s took 0.4 s of an aarch64 suspend.)
const POWER_OFF_VSOCK_SLOT: &str = r#"for d in /sys/bus/pci/devices/*; do
  read v < "$d/vendor"; read p < "$d/device"
  [ "$v" = 0x1af4 ] && [ "$p" = 0x1053 ] && a=${d##*/}
done
[ -n "$a" ] || exit 3
for s in /sys/bus/pci/slots/*; do
  read addr < "$s/address"
  [ "$addr" = "${a%.*}" ] || continue
  exec setsid -f sh -c "sleep 0.1; echo 0 > '$s/power'" </dev/null >/dev/null 2>&1
done
exit 4"#;

/// arm virt's root ports use native PCIe hotplug: `device_del` presses the slot's attention
/// button and the guest's pciehp waits a fixed 5 s before releasing the device. A slot the
/// guest powers off itself (sysfs `power`) is released at once, and QEMU removes the device
/// of a slot powered off (docs/snapshot.md, "Facts"). False when the guest could not start
/// it (the caller falls back to `device_del`).
fn power_off_vsock_slot(vm: &RunningVm) -> bool {
    let Ok(conn) = vm
        .endpoint
        .connect(AGENT_VSOCK_PORT, Duration::from_secs(10), &vm.secret)
    else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let request = vcontainer_proto::ExecRequest::new(["sh", "-c", POWER_OFF_VSOCK_SLOT]);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    match agent_client::exec(conn, request, None, &mut out, &mut err) {
        Ok(vcontainer_proto::ExitStatus::Code(0)) => true,
        other => {
            tracing::debug!(
                "the guest did not power the vsock slot off ({other:?}, {}); using device_del",
                String::from_utf8_lossy(&err).trim()
            );
            false
        }
    }
}

/// Waits until the vsock device's QOM path is gone (QEMU removed it), until `deadline`.
fn vsock_gone(q: &mut Qmp, deadline: Instant) -> bool {
    let path = format!("/machine/peripheral/{SNAPSHOT_VSOCK_ID}");
    let timeout = deadline.saturating_duration_since(Instant::now());
    super::process::poll_until(timeout, || {
        q.execute("qom-list", Some(json!({ "path": path })))
            .is_err()
    })
}

/// The migration capabilities of `format` (see [`Format`]); both sides must set the same.
/// Both are set, on or off: a restored QEMU still has the mapped-ram of its own load when it
/// is suspended.
fn set_capabilities(q: &mut Qmp, format: Format) -> Result<()> {
    let mapped = format == Format::MappedRam;
    q.execute(
        "migrate-set-capabilities",
        Some(json!({ "capabilities": [
            { "capability": "mapped-ram", "state": mapped },
            { "capability": "x-ignore-shared", "state": !mapped }
        ] })),
    )
    .map_err(SnapshotError::Qmp)?;
    Ok(())
}

/// A `file` migration channel (structured: no URI parsing of commas or colons in the path).
fn file_channel(path: &Path) -> Value {
    json!({
        "channel-type": "main",
        "addr": { "transport": "file", "filename": path.to_string_lossy(), "offset": 0 }
    })
}

/// Restore `file` for `cfg` and make it the host's run (the caller sets the VM's
/// `restored_from`). `with_disk`: a suspended VM of this
/// state dir (`vm::suspend`), whose RAM is in `suspended_ram` when it was saved without it.
/// The VM's `snapshot_note` (also logged) is `<what> <file> in
/// <s> (<phases>)`: where the time went.
pub(super) fn restore(
    cfg: &VmConfig,
    file: &Path,
    with_disk: bool,
    suspended_ram: Option<&Path>,
    what: &str,
) -> Result<RunningVm> {
    let started = Instant::now();
    let mode = Mode::Restore {
        file: file.to_path_buf(),
        phases: RestorePhases::default(),
        with_disk,
        suspended_ram: suspended_ram.map(Path::to_path_buf),
    };
    let mut vm = boot::boot_snapshot(cfg, &mode)?;
    let resuming = Instant::now();
    let resumed = resume(&vm, cfg.state_disk);
    let phases = match &mode {
        Mode::Restore { phases, .. } => {
            phases.resume.set(resuming.elapsed());
            phases.describe(vm.boot_time)
        }
        Mode::Save => String::new(),
    };
    if let Err(e) = resumed {
        boot::stop(
            &mut vm.qemu,
            vm.vhost.as_mut(),
            &vm.endpoint,
            &vm.paths,
            Duration::ZERO,
        );
        return Err(e);
    }
    vm.boot_time = started.elapsed();
    let note = format!(
        "{what} {} in {:.2} s ({phases})",
        file.display(),
        vm.boot_time.as_secs_f64()
    );
    tracing::info!("{note}");
    vm.snapshot_note = Some(note);
    Ok(vm)
}

fn resume(vm: &RunningVm, state_disk: bool) -> Result<()> {
    let mut entropy = vec![0u8; 64];
    getrandom::fill(&mut entropy)
        .map_err(|e| VmError::Other(format!("no randomness for the restored guest: {e}")))?;
    let unix_time_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let conn = vm
        .endpoint
        .connect(AGENT_VSOCK_PORT, Duration::from_secs(10), &vm.secret)?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    agent_client::resume(
        conn,
        ResumeRequest {
            unix_time_ns,
            entropy,
            state_device: state_disk.then(|| GUEST_STATE_DEVICE.to_string()),
        },
    )
    .map_err(|e| SnapshotError::Resume(e.to_string()))?;
    Ok(())
}

/// QEMU creates its QMP socket shortly after it starts.
fn connect_qmp(socket: &Path, qemu: &mut Proc, deadline: Instant) -> Result<Qmp> {
    loop {
        match Qmp::connect(socket, Duration::from_secs(30)) {
            Ok(q) => return Ok(q),
            Err(e) => {
                if !qemu.is_running() || Instant::now() > deadline {
                    return Err(SnapshotError::Qmp(e).into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Load the saved state; the guest stays paused (it was saved paused).
fn incoming(
    q: &mut Qmp,
    file: &Path,
    format: Format,
    qemu: &mut Proc,
    deadline: Instant,
) -> Result<()> {
    set_capabilities(q, format)?;
    q.execute(
        "migrate-incoming",
        Some(json!({ "channels": [file_channel(file)] })),
    )
    .map_err(SnapshotError::Qmp)?;
    loop {
        let status = q
            .execute("query-status", None)
            .map_err(|e| SnapshotError::Migration(format!("could not be loaded (QEMU: {e})")))?;
        match status.get("status").and_then(Value::as_str) {
            Some("inmigrate") => {}
            Some("paused") => return Ok(()),
            other => {
                return Err(SnapshotError::Migration(format!(
                    "left the guest {}",
                    other.unwrap_or("in an unknown state")
                ))
                .into())
            }
        }
        if !qemu.is_running() || Instant::now() > deadline {
            return Err(SnapshotError::Migration("could not be loaded".into()).into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The run's vsock device, on the root port the saved guest knows. Plugged before the state
/// disk, so the guest names that /dev/vdb, as after a cold boot.
fn plug_vsock(q: &mut Qmp, vsock: &VsockDevice) -> Result<()> {
    for (command, arguments) in vsock_plug(vsock) {
        q.execute(command, Some(arguments))
            .map_err(SnapshotError::Qmp)?;
    }
    Ok(())
}

/// The run's state disk, on its root port (after a load, or before loading a suspended VM,
/// which was saved with it).
fn plug_state_disk(q: &mut Qmp, cfg: &VmConfig) -> Result<()> {
    {
        // as the cold boot's -drive: raw, writeback cache, discard=unmap, detect-zeroes=unmap
        q.execute(
            "blockdev-add",
            Some(json!({
                "node-name": SNAPSHOT_STATE_ID,
                "driver": "raw",
                "discard": "unmap",
                "detect-zeroes": "unmap",
                "file": { "driver": "file", "filename": cfg.state_disk_path().to_string_lossy() }
            })),
        )
        .map_err(SnapshotError::Qmp)?;
        q.execute(
            "device_add",
            Some(json!({
                "driver": "virtio-blk-pci",
                "drive": SNAPSHOT_STATE_ID,
                "serial": "state",
                "id": format!("{SNAPSHOT_STATE_ID}-dev"),
                "bus": SNAPSHOT_STATE_PORT
            })),
        )
        .map_err(SnapshotError::Qmp)?;
    }
    Ok(())
}

/// The QMP commands that plug this run's vsock device into the restored guest. vhost-user:
/// a chardev to vhost-device-vsock's socket, then the device. In-kernel: the device with this
/// run's claimed CID and its /dev/vhost-vsock fd, which QEMU inherited at spawn; QMP takes a
/// numeric `vhostfd` as an fd of QEMU's own (no `getfd` needed; docs/snapshot.md).
fn vsock_plug(vsock: &VsockDevice) -> Vec<(&'static str, Value)> {
    match vsock {
        VsockDevice::Hybrid { vhost_user_socket } => vec![
            (
                "chardev-add",
                json!({
                    "id": SNAPSHOT_VSOCK_CHARDEV,
                    "backend": { "type": "socket", "data": {
                        "addr": { "type": "unix", "data": { "path": vhost_user_socket.to_string_lossy() } },
                        "server": false
                    }}
                }),
            ),
            (
                "device_add",
                json!({
                    "driver": "vhost-user-vsock-pci",
                    "chardev": SNAPSHOT_VSOCK_CHARDEV,
                    "id": SNAPSHOT_VSOCK_ID,
                    "bus": SNAPSHOT_VSOCK_PORT
                }),
            ),
        ],
        VsockDevice::Kernel { cid, vhostfd } => {
            let mut device = json!({
                "driver": "vhost-vsock-pci",
                "guest-cid": cid,
                "id": SNAPSHOT_VSOCK_ID,
                "bus": SNAPSHOT_VSOCK_PORT
            });
            if let Some(fd) = vhostfd {
                device["vhostfd"] = fd.to_string().into();
            }
            vec![("device_add", device)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello_with(capabilities: &[&str]) -> HelloOk {
        HelloOk {
            protocol_version: vcontainer_proto::PROTOCOL_VERSION,
            agent_version: "0.1.0".into(),
            runtime: "podman".into(),
            kernel: "6.1".into(),
            warnings: vec![],
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn only_an_agent_that_serves_resume_is_saved() {
        assert!(may_save(&hello_with(&[CAPABILITY_RESUME])).is_ok());
        assert!(may_save(&hello_with(&["something-else", CAPABILITY_RESUME])).is_ok());
        for caps in [&[][..], &["something-else"][..]] {
            let err = may_save(&hello_with(caps)).expect_err("no resume");
            let text = err.to_string();
            assert!(
                text.contains("0.1.0") && text.contains("Resume"),
                "the reason names the agent and what it lacks: {text}"
            );
        }
    }

    #[test]
    fn restore_phases_add_up_to_the_restore() {
        let p = RestorePhases::default();
        p.qemu_start.set(Duration::from_millis(100));
        p.load.set(Duration::from_millis(250));
        p.plug.set(Duration::from_millis(20));
        p.resume.set(Duration::from_millis(300));
        assert_eq!(
            p.describe(Duration::from_millis(700)),
            "qemu 0.10 s, load 0.25 s, plug 0.02 s, hello 0.33 s, resume 0.30 s"
        );
        // a Hello faster than the phases before it (clock granularity) is no negative time
        assert!(p.describe(Duration::ZERO).contains("hello 0.00 s"));
    }

    #[test]
    fn a_recent_failure_pauses_saving_that_key() {
        let t = tempfile::tempdir().expect("tmp");
        let file = t.path().join("podman-x86_64-aaaa-1111.snap");
        assert_eq!(recent_failure(&file), None);
        record_failure(&file, "restoring: the agent refused Resume\nmore");
        assert_eq!(
            recent_failure(&file).as_deref(),
            Some("restoring: the agent refused Resume")
        );
        // `snapshot rm` / clean take the marker too
        assert_eq!(remove_all_in(t.path(), "podman").expect("rm"), 1);
        assert_eq!(recent_failure(&file), None);
    }

    #[test]
    fn an_agent_without_resume_pauses_its_key_for_good() {
        let t = tempfile::tempdir().expect("tmp");
        let file = t.path().join("podman-x86_64-aaaa-1111.snap");
        let old_agent = may_save(&hello_with(&[])).expect_err("no resume");
        record_failure(&file, &failure_reason(&old_agent));
        // an hour later it still holds: only another build (another key) changes the agent
        let marker = failure_marker(&file);
        let long_ago = SystemTime::now() - 2 * FAILURE_PAUSE;
        std::fs::File::options()
            .write(true)
            .open(&marker)
            .and_then(|f| f.set_modified(long_ago))
            .expect("age the marker");
        let why = recent_failure(&file).expect("still paused");
        assert!(why.starts_with(PERMANENT), "{why}");
        // an ordinary failure of that age no longer pauses
        record_failure(&file, "saving: the disk was full");
        std::fs::File::options()
            .write(true)
            .open(&marker)
            .and_then(|f| f.set_modified(long_ago))
            .expect("age the marker");
        assert_eq!(recent_failure(&file), None);
    }

    #[test]
    fn snapshots_are_on_unless_turned_off() {
        use super::super::config::snapshots_enabled_by as enabled_by;
        assert!(enabled_by(None));
        assert!(enabled_by(Some("1".as_ref())));
        assert!(!enabled_by(Some("0".as_ref())));
    }

    #[test]
    fn the_cache_dir_follows_xdg() {
        let d = cache_dir(Some("/x/cache".into()), Some("/home/u".into())).expect("dir");
        assert_eq!(d, Path::new("/x/cache/vcontainer/snapshots"));
        // a relative XDG_CACHE_HOME is ignored, as the spec says
        let d = cache_dir(Some("rel".into()), Some("/home/u".into())).expect("dir");
        assert_eq!(d, Path::new("/home/u/.cache/vcontainer/snapshots"));
        let d = cache_dir(None, Some("/home/u".into())).expect("dir");
        assert_eq!(d, Path::new("/home/u/.cache/vcontainer/snapshots"));
        assert!(cache_dir(None, None).is_err());
    }

    #[test]
    fn remove_all_takes_only_snapshots() {
        let t = tempfile::tempdir().expect("tmp");
        for name in [
            "podman-x86_64-ab.snap",
            "podman-x86_64-cd.snap.tmp-99",
            "docker-x86_64-ef.snap",
            "podman-notes.txt",
        ] {
            std::fs::write(t.path().join(name), b"x").expect("write");
        }
        assert_eq!(remove_all_in(t.path(), "podman").expect("rm"), 2);
        assert!(
            t.path().join("podman-notes.txt").exists(),
            "a file we did not write stays"
        );
        assert!(
            t.path().join("docker-x86_64-ef.snap").exists(),
            "another runtime's stays"
        );
        assert_eq!(
            remove_all_in(&t.path().join("missing"), "podman").expect("none"),
            0
        );
    }

    #[test]
    fn stale_temporaries_of_dead_saves_go() {
        let t = tempfile::tempdir().expect("tmp");
        let mine = t.path().join(format!("p.snap.tmp-{}", std::process::id()));
        let dead = t.path().join("p.snap.tmp-2147483000");
        std::fs::write(&mine, b"x").expect("write");
        std::fs::write(&dead, b"x").expect("write");
        remove_stale_temporaries(t.path());
        assert!(mine.exists(), "a save in progress is kept");
        assert!(!dead.exists());
    }

    #[test]
    fn a_save_prunes_only_other_builds_of_its_runtime_and_arch() {
        let t = tempfile::tempdir().expect("tmp");
        let kept = t.path().join("podman-x86_64-aaaa-1111.snap");
        for name in [
            "podman-x86_64-aaaa-1111.snap",
            // same build, another --memory: kept
            "podman-x86_64-aaaa-2222.snap",
            // another guest build or QEMU: stale
            "podman-x86_64-bbbb-1111.snap",
            // the single-hash name of format 1: stale
            "podman-x86_64-0123456789abcdef01234567.snap",
            "podman-aarch64-bbbb-1111.snap",
            "docker-x86_64-bbbb-1111.snap",
            "podman-x86_64-bbbb-1111.snap.tmp-1",
            "podman-x86_64-notes.txt",
        ] {
            std::fs::write(t.path().join(name), b"x").expect("write");
        }
        let mut removed = prune_stale(&kept);
        removed.sort();
        assert_eq!(
            removed,
            [
                "podman-x86_64-0123456789abcdef01234567.snap",
                "podman-x86_64-bbbb-1111.snap"
            ]
        );
        let left = list_in(t.path(), "podman", Some(&kept)).expect("ls");
        let names: Vec<_> = left.iter().map(|l| (l.name.as_str(), l.current)).collect();
        assert_eq!(
            names,
            [
                ("podman-aarch64-bbbb-1111.snap", false),
                ("podman-x86_64-aaaa-1111.snap", true),
                ("podman-x86_64-aaaa-2222.snap", false)
            ]
        );
        assert!(list_in(&t.path().join("none"), "podman", None)
            .expect("none")
            .is_empty());
    }

    #[test]
    fn only_what_can_be_restored_is_restored() {
        use super::transport::TransportKind;
        let t = tempfile::tempdir().expect("tmp");
        // both arches; memres VMs (share slots, port forwards) restore like one-shot ones
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let mut cfg = VmConfig::new(arch, "podman", t.path());
            cfg.host_share = true;
            cfg.port_forwards = vec!["8080:80".parse().expect("fwd")];
            cfg.transport = Some(TransportKind::Hybrid);
            assert_eq!(unusable(&cfg), None, "{arch}");
            // the kernel transport restores too, where the host has it
            cfg.transport = Some(TransportKind::Vsock);
            assert_eq!(
                unusable(&cfg),
                transport::choose(cfg.transport)
                    .err()
                    .map(|e| e.to_string()),
                "{arch}"
            );
        }
    }

    #[test]
    fn each_transport_plugs_its_own_vsock_device() {
        let hybrid = vsock_plug(&VsockDevice::Hybrid {
            vhost_user_socket: "/run/x/vhost.sock".into(),
        });
        let names: Vec<_> = hybrid.iter().map(|(c, _)| *c).collect();
        assert_eq!(names, ["chardev-add", "device_add"]);
        assert_eq!(
            hybrid[0].1["backend"]["data"]["addr"]["data"]["path"],
            "/run/x/vhost.sock"
        );
        assert_eq!(hybrid[1].1["driver"], "vhost-user-vsock-pci");
        let kernel = vsock_plug(&VsockDevice::Kernel {
            cid: 1234,
            vhostfd: Some(7),
        });
        assert_eq!(
            kernel,
            [(
                "device_add",
                json!({
                    "driver": "vhost-vsock-pci",
                    "guest-cid": 1234,
                    "vhostfd": "7",
                    "id": "vc-snap-vsock",
                    "bus": "vc-snap-rp-vsock"
                })
            )]
        );
    }

    /// The kernel transport cannot be run here (no /dev/vhost-vsock), so this checks the
    /// part QEMU decides: the restore's `device_add` reaches the fd QEMU inherited. With
    /// /dev/null as that fd, QEMU takes it and fails at the first vhost ioctl, which it could
    /// only do with the fd found (a name it does not know fails with "has not been found").
    #[test]
    fn a_kernel_vsock_plug_reaches_the_fd_qemu_inherited() {
        let Some(qemu) = process::which("qemu-system-x86_64") else {
            assert!(
                std::env::var("VCONTAINER_E2E").as_deref() != Ok("1"),
                "VCONTAINER_E2E is set but qemu-system-x86_64 is missing"
            );
            return;
        };
        let t = tempfile::tempdir().expect("tmp");
        let sock = t.path().join("qmp.sock");
        let null = std::fs::File::open("/dev/null").expect("null");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&null);
        let mut cmd = std::process::Command::new(qemu);
        cmd.args([
            "-machine",
            "q35,accel=tcg",
            "-nodefaults",
            "-display",
            "none",
            "-S",
        ])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .args([
            "-device",
            &format!("pcie-root-port,id={SNAPSHOT_VSOCK_PORT},chassis=240,slot=0"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        process::pass_fd(&mut cmd, fd);
        let mut child = Proc::Child(cmd.spawn().expect("qemu"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let plugged = connect_qmp(&sock, &mut child, deadline).map(|mut q| {
            let kernel = VsockDevice::Kernel {
                cid: 99,
                vhostfd: Some(fd),
            };
            let (command, arguments) = vsock_plug(&kernel).remove(0);
            let r = q.execute(command, Some(arguments));
            let _ = q.quit();
            r
        });
        child.wait(Duration::from_secs(10));
        let e = plugged
            .expect("qmp")
            .expect_err("/dev/null is no vhost device");
        assert!(e.contains("vhost_set_owner"), "{e}");
    }
}
