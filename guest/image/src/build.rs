//! The whole build: rootfs stage (cached), initramfs stage (cached), then an atomic publish
//! of `<out>/<arch>/<runtime>/`.

use crate::blobs_json::{BlobsJson, BLOBS_JSON};
use crate::cache::{hash_file, Cache, InputHasher, BUILDER_VERSION};
use crate::error::{io_err, Error, Result};
use crate::initramfs::InitramfsContents;
use crate::modules::{decompressed_path, read_decompressed, ModuleIndex, BOOT_MODULES};
use crate::publish::{link_or_copy, replace_dir};
use crate::rootfs::{self, RootfsSpec};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const INITRAMFS_FILE: &str = "initramfs.cpio.gz";
pub const ROOTFS_FILE: &str = "rootfs.img";
const STAGE_JSON: &str = "stage.json";
const BOOT_MODULES_DIR: &str = "boot-modules";

/// One blob set to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub spec: RootfsSpec,
    /// The runtime plugin's name: the blob directory name (docker, podman).
    pub runtime: String,
    /// The static agent binary, installed as /init.
    pub agent: PathBuf,
    /// Recorded in blobs.json; normally vcontainer_proto::PROTOCOL_VERSION.
    pub protocol_version: u32,
    /// The blob root: the set lands in `<out_root>/<arch>/<runtime>/`.
    pub out_root: PathBuf,
    pub cache: Cache,
    /// Redo the rootfs even when cached (Debian updated packages under the same names).
    pub rebuild_rootfs: bool,
}

/// What a build did, for the caller's log.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub blob_dir: PathBuf,
    pub rootfs_built: bool,
    pub initramfs_built: bool,
    pub blobs: BlobsJson,
}

/// What the rootfs stage leaves for the initramfs stage besides the files.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RootfsStage {
    kernel_version: String,
    /// decompressed module paths relative to /lib/modules/<kver>/, in load order
    boot_modules: Vec<String>,
}

/// The rootfs stage key: everything the rootfs, kernel and boot modules depend on. Not the
/// agent, so a new agent reuses the cached rootfs.
pub fn rootfs_key(spec: &RootfsSpec) -> String {
    let mut h = InputHasher::new("vcontainer-guest-image rootfs");
    h.field("builder", BUILDER_VERSION.as_bytes())
        .field("arch", spec.arch.as_str().as_bytes())
        .field("suite", spec.suite.as_bytes())
        .field("mirror", spec.mirror.as_bytes())
        .field("compression", spec.compression.name().as_bytes());
    for p in &spec.packages {
        h.field("package", p.as_bytes());
    }
    for f in &spec.files {
        h.field("file", f.path.as_bytes())
            .field("mode", &f.mode.to_le_bytes())
            .field(
                "contents",
                f.contents.as_deref().unwrap_or("<dir>").as_bytes(),
            );
    }
    for m in BOOT_MODULES {
        h.field("boot-module", m.name.as_bytes());
    }
    h.finish()
}

/// The initramfs stage key, which is also the blob set's input_hash.
pub fn initramfs_key(rootfs_key: &str, agent_sha256: &str) -> String {
    let mut h = InputHasher::new("vcontainer-guest-image initramfs");
    h.field("builder", BUILDER_VERSION.as_bytes())
        .field("rootfs", rootfs_key.as_bytes())
        .field("agent", agent_sha256.as_bytes());
    h.finish()
}

fn step(msg: &str) {
    eprintln!("guest-image: {msg}");
}

/// Builds (or reuses) the stages and publishes the blob set.
pub fn build(req: &BuildRequest) -> Result<BuildReport> {
    if !req.agent.is_file() {
        return Err(Error::Invalid(format!(
            "agent binary {} does not exist (build it first: scripts/build-guest.sh does)",
            req.agent.display()
        )));
    }
    let arch = req.spec.arch;
    let rkey = rootfs_key(&req.spec);
    let (rootfs_dir, rootfs_built) =
        req.cache
            .get_or_build("rootfs", &rkey, req.rebuild_rootfs, |tmp| {
                step(&format!(
                    "building the {} {} rootfs (mmdebstrap, a few minutes) into cache {}",
                    arch,
                    req.runtime,
                    &rkey[..12]
                ));
                build_rootfs_stage(&req.spec, tmp)
            })?;
    if !rootfs_built {
        step(&format!("rootfs {} cached", &rkey[..12]));
    }
    let stage: RootfsStage = read_json(&rootfs_dir.join(STAGE_JSON))?;

    let agent_hash = hash_file(&req.agent)?;
    let ikey = initramfs_key(&rkey, &agent_hash);
    let (initramfs_dir, initramfs_built) =
        req.cache.get_or_build("initramfs", &ikey, false, |tmp| {
            step(&format!("building the initramfs {}", &ikey[..12]));
            build_initramfs_stage(&rootfs_dir, &stage, &req.agent, tmp)
        })?;

    let blobs = BlobsJson {
        arch: arch.as_str().to_string(),
        runtime: req.runtime.clone(),
        kernel_version: stage.kernel_version.clone(),
        input_hash: ikey.clone(),
        protocol_version: req.protocol_version,
        boot_modules: stage.boot_modules.clone(),
        packages: req.spec.packages.clone(),
        suite: req.spec.suite.clone(),
        squashfs_compression: req.spec.compression.name().to_string(),
    };
    let blob_dir = req.out_root.join(arch.as_str()).join(&req.runtime);
    publish(
        &rootfs_dir,
        &initramfs_dir,
        arch.kernel_file_name(),
        &blobs,
        &blob_dir,
    )?;
    step(&format!("published {}", blob_dir.display()));
    Ok(BuildReport {
        blob_dir,
        rootfs_built,
        initramfs_built,
        blobs,
    })
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_err("reading", path))?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// mmdebstrap -> kernel + boot modules out -> VM config -> strip -> squashfs.
fn build_rootfs_stage(spec: &RootfsSpec, out: &Path) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Invalid(
            "building a rootfs needs root (mmdebstrap --mode=root keeps real owners and device \
             nodes); run scripts/build-guest.sh as root"
                .into(),
        ));
    }
    let tree = out.join("tree");
    rootfs::run(&mut rootfs::mmdebstrap_command(spec, &tree))?;

    let kernel = rootfs::find_kernel(&tree)?;
    rootfs::extract_kernel(&kernel, spec.arch, &out.join(spec.arch.kernel_file_name()))?;

    let index = ModuleIndex::load(&kernel.modules_dir)?;
    let order = index.resolve(BOOT_MODULES, &kernel.version)?;
    let mut boot_modules = Vec::new();
    for rel in &order {
        let data = read_decompressed(&kernel.modules_dir.join(rel))?;
        let dest_rel = decompressed_path(rel).to_string();
        let dest = out.join(BOOT_MODULES_DIR).join(&dest_rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        std::fs::write(&dest, data).map_err(io_err("writing", &dest))?;
        boot_modules.push(dest_rel);
    }
    step(&format!(
        "kernel {}: {} boot modules",
        kernel.version,
        boot_modules.len()
    ));

    rootfs::write_files(&tree, &spec.files)?;
    rootfs::strip(&tree)?;
    step(&format!("mksquashfs ({})", spec.compression.name()));
    rootfs::make_squashfs(&tree, &out.join(ROOTFS_FILE), spec.compression)?;
    std::fs::remove_dir_all(&tree).map_err(io_err("removing", &tree))?;

    let stage = RootfsStage {
        kernel_version: kernel.version,
        boot_modules,
    };
    let path = out.join(STAGE_JSON);
    let text = serde_json::to_string_pretty(&stage).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&path, text).map_err(io_err("writing", &path))
}

/// Agent as /init + the boot modules + their list.
fn build_initramfs_stage(
    rootfs_dir: &Path,
    stage: &RootfsStage,
    agent: &Path,
    out: &Path,
) -> Result<()> {
    let mut contents = InitramfsContents::new();
    contents.add_init(&std::fs::read(agent).map_err(io_err("reading", agent))?);
    let mut modules = Vec::new();
    for rel in &stage.boot_modules {
        let path = rootfs_dir.join(BOOT_MODULES_DIR).join(rel);
        modules.push((
            rel.clone(),
            std::fs::read(&path).map_err(io_err("reading", &path))?,
        ));
    }
    contents.add_modules(&stage.kernel_version, modules);
    contents.write_gz(&out.join(INITRAMFS_FILE))
}

/// Assembles the blob set next to its destination and swaps it in whole.
fn publish(
    rootfs_dir: &Path,
    initramfs_dir: &Path,
    kernel_name: &str,
    blobs: &BlobsJson,
    blob_dir: &Path,
) -> Result<()> {
    let parent = blob_dir
        .parent()
        .ok_or_else(|| Error::Invalid(format!("blob dir {}", blob_dir.display())))?;
    std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".tmp-{}-", blobs.runtime))
        .tempdir_in(parent)
        .map_err(io_err("creating a temp dir in", parent))?;
    link_or_copy(&rootfs_dir.join(kernel_name), &tmp.path().join(kernel_name))?;
    link_or_copy(&rootfs_dir.join(ROOTFS_FILE), &tmp.path().join(ROOTFS_FILE))?;
    link_or_copy(
        &initramfs_dir.join(INITRAMFS_FILE),
        &tmp.path().join(INITRAMFS_FILE),
    )?;
    blobs.write(&tmp.path().join(BLOBS_JSON))?;
    replace_dir(&tmp.keep(), blob_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_files::{common_files, RootfsFile};
    use crate::Arch;

    /// Common files plus one file standing for what the runtime plugin declares.
    fn spec(packages: &[&str], runtime: &str) -> RootfsSpec {
        let mut files = common_files();
        files.push(RootfsFile {
            path: format!("/etc/{runtime}/config"),
            mode: 0o644,
            contents: Some(format!("{runtime}\n")),
        });
        RootfsSpec::new(
            Arch::X86_64,
            "bookworm",
            "http://deb.debian.org/debian",
            packages.iter().map(|s| s.to_string()),
            files,
        )
        .unwrap()
    }

    #[test]
    fn rootfs_key_is_stable_and_order_independent() {
        let a = rootfs_key(&spec(&["podman", "crun", "kmod"], "podman"));
        let b = rootfs_key(&spec(&["kmod", "podman", "crun", "crun"], "podman"));
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn rootfs_key_changes_with_every_input() {
        let base = spec(&["podman", "crun"], "podman");
        let k = rootfs_key(&base);
        let mut other = base.clone();
        other.packages.push("skopeo".into());
        assert_ne!(k, rootfs_key(&other), "packages");
        let mut other = base.clone();
        other.arch = Arch::Aarch64;
        assert_ne!(k, rootfs_key(&other), "arch");
        let mut other = base.clone();
        other.suite = "trixie".into();
        assert_ne!(k, rootfs_key(&other), "suite");
        let mut other = base.clone();
        other.mirror = "http://mirror.example/debian".into();
        assert_ne!(k, rootfs_key(&other), "mirror");
        let mut other = base.clone();
        other.files[0].contents = Some("changed\n".into());
        assert_ne!(k, rootfs_key(&other), "config file contents");
        let mut other = base.clone();
        other.files[0].mode = 0o600;
        assert_ne!(k, rootfs_key(&other), "config file mode");
        assert_ne!(
            k,
            rootfs_key(&spec(&["podman", "crun"], "docker")),
            "runtime files"
        );
    }

    #[test]
    fn agent_changes_only_the_initramfs_key() {
        let rk = rootfs_key(&spec(&["podman"], "podman"));
        let one = initramfs_key(&rk, "agent-hash-1");
        assert_eq!(one, initramfs_key(&rk, "agent-hash-1"));
        assert_ne!(one, initramfs_key(&rk, "agent-hash-2"));
        // the rootfs key does not take the agent at all: nothing to compare but its inputs
        assert_eq!(rk, rootfs_key(&spec(&["podman"], "podman")));
    }

    /// The initramfs stage and publish, on a fake rootfs stage (no mmdebstrap): a changed
    /// agent gives a new initramfs and input_hash, the published set is complete each time.
    #[test]
    fn publish_from_a_prepared_rootfs_stage() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        let spec = spec(&["podman"], "podman");
        let rkey = rootfs_key(&spec);
        let rdir = cache.entry("rootfs", &rkey);
        std::fs::create_dir_all(rdir.join("boot-modules/kernel/fs")).unwrap();
        std::fs::write(rdir.join("boot-modules/kernel/fs/squashfs.ko"), b"sq").unwrap();
        std::fs::write(rdir.join("bzImage"), b"kernel").unwrap();
        std::fs::write(rdir.join(ROOTFS_FILE), b"hsqs").unwrap();
        std::fs::write(
            rdir.join(STAGE_JSON),
            r#"{"kernel_version":"6.1.0-t","boot_modules":["kernel/fs/squashfs.ko"]}"#,
        )
        .unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, b"agent v1").unwrap();
        let req = BuildRequest {
            spec,
            runtime: "podman".into(),
            agent: agent.clone(),
            protocol_version: 3,
            out_root: dir.path().join("blobs"),
            cache,
            rebuild_rootfs: false,
        };
        let first = build(&req).unwrap();
        assert!(!first.rootfs_built && first.initramfs_built);
        let blob_dir = dir.path().join("blobs/x86_64/podman");
        assert_eq!(first.blob_dir, blob_dir);
        let mut names: Vec<String> = std::fs::read_dir(&blob_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["blobs.json", "bzImage", "initramfs.cpio.gz", "rootfs.img"]
        );
        let json = BlobsJson::read(&blob_dir.join(BLOBS_JSON)).unwrap();
        assert_eq!(json.kernel_version, "6.1.0-t");
        assert_eq!(json.protocol_version, 3);

        let again = build(&req).unwrap();
        assert!(!again.initramfs_built, "same agent: cached initramfs");
        assert_eq!(again.blobs.input_hash, first.blobs.input_hash);

        std::fs::write(&agent, b"agent v2").unwrap();
        let third = build(&req).unwrap();
        assert!(third.initramfs_built && !third.rootfs_built);
        assert_ne!(third.blobs.input_hash, first.blobs.input_hash);
        // no temp dirs left next to the published set
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("blobs/x86_64"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "podman")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
