//! `image unpack`: an image of an OCI layout -> an OCI runtime bundle (`rootfs/` +
//! `config.json`), like `umoci unpack`. Every layer is verified and every entry checked by
//! `imageread` before it touches the disk; whiteouts and opaque directories are applied;
//! owners, modes, xattrs, devices and mtimes are restored (owners and devices only when
//! running as root). The bundle appears only when complete.

use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fsmeta::{make_dev, Kind, Meta};
use crate::imageread::{open_image, read_layer, Image, LayerEvent};
use crate::spec::ImageConfig;
use crate::staging::Staged;
use crate::tree::{Tree, ROOT};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnpackRequest {
    pub image: PathBuf,
    pub tag: Option<String>,
    /// For a multi-arch layout: which architecture (any spelling; default: the host's).
    pub arch: Option<String>,
    pub bundle: PathBuf,
    pub force: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnpackReport {
    pub bundle: PathBuf,
    pub manifest: Digest,
    pub layers: usize,
}

fn rel_path(root: &Path, p: &[u8]) -> PathBuf {
    if p == ROOT {
        root.to_path_buf()
    } else {
        root.join(std::ffi::OsStr::from_bytes(p))
    }
}

/// Removes whatever is at `p` (never following a symlink).
fn remove_any(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(p).map_err(|e| Error::io(p, e)),
        Ok(_) => fs::remove_file(p).map_err(|e| Error::io(p, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(p, e)),
    }
}

struct Extractor {
    root: PathBuf,
    is_root: bool,
    /// Directory metadata applied at the end (after their contents are written).
    dirs: Vec<(PathBuf, Meta)>,
}

impl Extractor {
    fn set_owner_and_xattrs(&self, p: &Path, meta: &Meta) -> Result<()> {
        if self.is_root {
            std::os::unix::fs::lchown(p, Some(meta.uid as u32), Some(meta.gid as u32))
                .map_err(|e| Error::io(p, e))?;
        }
        for (k, v) in &meta.xattrs {
            let name = std::ffi::OsStr::from_bytes(k);
            if let Err(e) = xattr::set(p, name, v) {
                // Unprivileged users cannot set trusted.*/security.* xattrs: skip those.
                if self.is_root {
                    return Err(Error::io(p, e));
                }
            }
        }
        Ok(())
    }

    fn set_time(p: &Path, mtime: i64) -> Result<()> {
        let t = filetime::FileTime::from_unix_time(mtime, 0);
        filetime::set_symlink_file_times(p, t, t).map_err(|e| Error::io(p, e))
    }

    fn event(&mut self, ev: &LayerEvent<'_>, data: &mut dyn Read) -> Result<()> {
        match ev {
            LayerEvent::Whiteout { path } => remove_any(&rel_path(&self.root, path)),
            LayerEvent::Opaque { dir } => {
                let d = rel_path(&self.root, dir);
                if let Ok(rd) = fs::read_dir(&d) {
                    for e in rd {
                        let e = e.map_err(|e| Error::io(&d, e))?;
                        remove_any(&e.path())?;
                    }
                }
                Ok(())
            }
            LayerEvent::Add {
                path,
                meta,
                hardlink,
            } => {
                let p = rel_path(&self.root, path);
                // Parents the layer did not list (imageread checked they are no symlinks).
                if let Some(parent) = p.parent() {
                    if *path != ROOT {
                        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                    }
                }
                if let Some(target) = hardlink {
                    remove_any(&p)?;
                    let t = rel_path(&self.root, target);
                    return fs::hard_link(&t, &p).map_err(|e| Error::io(&p, e));
                }
                match meta.kind {
                    Kind::Dir => {
                        match fs::symlink_metadata(&p) {
                            Ok(md) if md.is_dir() => {}
                            Ok(_) => {
                                remove_any(&p)?;
                                fs::create_dir(&p).map_err(|e| Error::io(&p, e))?;
                            }
                            Err(_) => fs::create_dir(&p).map_err(|e| Error::io(&p, e))?,
                        }
                        self.dirs.push((p, (*meta).clone()));
                        return Ok(());
                    }
                    Kind::File => {
                        remove_any(&p)?;
                        let mut f = fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(&p)
                            .map_err(|e| Error::io(&p, e))?;
                        io::copy(data, &mut f).map_err(|e| Error::io(&p, e))?;
                    }
                    Kind::Symlink => {
                        remove_any(&p)?;
                        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&meta.link), &p)
                            .map_err(|e| Error::io(&p, e))?;
                    }
                    Kind::Char | Kind::Block | Kind::Fifo => {
                        remove_any(&p)?;
                        use nix::sys::stat::{mknod, Mode, SFlag};
                        let kind = match meta.kind {
                            Kind::Char => SFlag::S_IFCHR,
                            Kind::Block => SFlag::S_IFBLK,
                            _ => SFlag::S_IFIFO,
                        };
                        let dev = make_dev(meta.devmajor, meta.devminor);
                        if let Err(e) = mknod(&p, kind, Mode::from_bits_truncate(0o600), dev) {
                            if self.is_root || kind == SFlag::S_IFIFO {
                                return Err(Error::io(&p, e.into()));
                            }
                            // Unprivileged: device nodes cannot be created; skip them.
                            return Ok(());
                        }
                    }
                }
                self.set_owner_and_xattrs(&p, meta)?;
                if meta.kind != Kind::Symlink {
                    fs::set_permissions(&p, fs::Permissions::from_mode(meta.mode))
                        .map_err(|e| Error::io(&p, e))?;
                }
                Self::set_time(&p, meta.mtime)
            }
        }
    }

    fn finish_dirs(&mut self) -> Result<()> {
        // Deepest first, so setting a parent's mtime is not undone by its children.
        self.dirs.sort_by(|a, b| b.0.cmp(&a.0));
        let dirs = std::mem::take(&mut self.dirs);
        for (p, meta) in &dirs {
            if fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
                self.set_owner_and_xattrs(p, meta)?;
                fs::set_permissions(p, fs::Permissions::from_mode(meta.mode))
                    .map_err(|e| Error::io(p, e))?;
                Self::set_time(p, meta.mtime)?;
            }
        }
        Ok(())
    }
}

/// The runtime-spec config.json for the image (a `runc spec`-like default with the image's
/// process settings).
pub fn runtime_config(cfg: &ImageConfig) -> serde_json::Value {
    let c = &cfg.config;
    let mut args: Vec<String> = c.entrypoint.clone().unwrap_or_default();
    args.extend(c.cmd.clone().unwrap_or_default());
    if args.is_empty() {
        args.push("sh".into());
    }
    let env = c.env.clone().unwrap_or_else(|| {
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()]
    });
    let (uid, gid) = c
        .user
        .as_deref()
        .map(|u| {
            let mut it = u.splitn(2, ':');
            let uid = it.next().and_then(|x| x.parse::<u32>().ok()).unwrap_or(0);
            let gid = it.next().and_then(|x| x.parse::<u32>().ok()).unwrap_or(0);
            (uid, gid)
        })
        .unwrap_or((0, 0));
    let mut annotations = serde_json::Map::new();
    if let Some(labels) = &c.labels {
        for (k, v) in labels {
            annotations.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
    }
    annotations.insert(
        "org.opencontainers.image.architecture".into(),
        cfg.architecture.clone().into(),
    );
    annotations.insert("org.opencontainers.image.os".into(), cfg.os.clone().into());
    if let Some(s) = &c.stop_signal {
        annotations.insert(
            "org.opencontainers.image.stopSignal".into(),
            s.clone().into(),
        );
    }
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": c.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into()),
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs"},
        "hostname": "vcontainer",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "annotations": annotations,
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": ["/proc/kcore", "/proc/latency_stats", "/proc/timer_list",
                            "/proc/sched_debug", "/sys/firmware"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq",
                              "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

pub fn unpack_image(img: &Image, bundle_dir: &Path) -> Result<()> {
    let root = bundle_dir.join("rootfs");
    fs::create_dir(&root).map_err(|e| Error::io(&root, e))?;
    let mut ex = Extractor {
        root: root.clone(),
        is_root: nix::unistd::geteuid().is_root(),
        dirs: Vec::new(),
    };
    let mut tree = Tree::default();
    for i in 0..img.manifest.layers.len() {
        read_layer(img, i, &mut tree, &mut |ev, data| {
            ex.event(ev, data)?;
            Ok(None)
        })?;
    }
    ex.finish_dirs()?;
    let cfg = serde_json::to_vec_pretty(&runtime_config(&img.config)).map_err(|e| Error::Json {
        path: bundle_dir.to_path_buf(),
        source: e,
    })?;
    let cfg_path = bundle_dir.join("config.json");
    fs::write(&cfg_path, cfg).map_err(|e| Error::io(&cfg_path, e))?;
    Ok(())
}

pub fn unpack(req: &UnpackRequest, log: &mut dyn FnMut(&str)) -> Result<UnpackReport> {
    let img = open_image(&req.image, req.tag.as_deref(), req.arch.as_deref())?;
    let staged = Staged::new(&req.bundle, req.force)?;
    unpack_image(&img, staged.path())?;
    let bundle = staged.commit()?;
    log(&format!(
        "unpacked {} ({} layers) into {}",
        img.manifest_desc.digest,
        img.manifest.layers.len(),
        bundle.display()
    ));
    Ok(UnpackReport {
        bundle,
        manifest: img.manifest_desc.digest,
        layers: img.manifest.layers.len(),
    })
}
