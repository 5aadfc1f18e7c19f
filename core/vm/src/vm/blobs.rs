//! Finding the guest blobs (kernel, initramfs, runtime rootfs) for an (arch, runtime).
//!
//! Resolution order (docs/guest-contract.md "Guest blobs"): --blob-dir >
//! $VCONTAINER_BLOB_DIR > the tool's own `<ENV_PREFIX>_BLOB_DIR` ($VDKR_BLOB_DIR,
//! $VPDMN_BLOB_DIR; the prefix comes from the runtime plugin) >
//! <exe dir>/../share/vcontainer/blobs > <repo>/build/blobs.
//! A directory the user named is decisive: when it lacks a file we say so instead of silently
//! booting some other blob set.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::Arch;
use super::error::{Result, VmError};

pub const INITRAMFS: &str = "initramfs.cpio.gz";
pub const ROOTFS: &str = "rootfs.img";
pub const META: &str = "blobs.json";

/// `blobs.json`, written by the image builder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobsMeta {
    pub arch: Option<String>,
    pub runtime: Option<String>,
    pub kernel_version: Option<String>,
    pub input_hash: Option<String>,
    pub protocol_version: Option<u32>,
}

/// A complete blob set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobSet {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub rootfs: PathBuf,
    pub meta: Option<BlobsMeta>,
    /// Which rule of the resolution order found it (for doctor and -v).
    pub source: String,
}

/// Where to look, gathered once from flags and the environment (injectable for tests).
#[derive(Debug, Clone, Default)]
pub struct BlobSearch {
    /// --blob-dir
    pub explicit: Option<PathBuf>,
    /// $VCONTAINER_BLOB_DIR
    pub env_generic: Option<PathBuf>,
    /// The tool's own variable, e.g. $VDKR_BLOB_DIR (name, value)
    pub env_tool: Option<(String, PathBuf)>,
    /// <exe dir>/../share/vcontainer/blobs
    pub installed: Option<PathBuf>,
    /// <repo>/build/blobs
    pub dev_tree: Option<PathBuf>,
}

impl BlobSearch {
    /// From the process environment and the location of this executable.
    /// `tool_var` is the tool's own variable (`<ENV_PREFIX>_BLOB_DIR`), if it has one.
    pub fn from_env(explicit: Option<&Path>, tool_var: Option<&str>) -> Self {
        let var = |n: &str| {
            std::env::var_os(n)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf));
        BlobSearch {
            explicit: explicit.map(Path::to_path_buf),
            env_generic: var("VCONTAINER_BLOB_DIR"),
            env_tool: tool_var.and_then(|n| var(n).map(|v| (n.to_string(), v))),
            installed: exe_dir.map(|d| d.join("../share/vcontainer/blobs")),
            dev_tree: dev_tree_blobs(),
        }
    }
}

/// `<repo>/build/blobs` of the checkout this binary was built in (core/cli -> repo root).
/// Debug builds only: a release binary (what `make install` and the SDK ship) must carry
/// no build path, and finds its blobs relative to itself.
#[cfg(debug_assertions)]
fn dev_tree_blobs() -> Option<PathBuf> {
    Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/blobs"))
}

#[cfg(not(debug_assertions))]
fn dev_tree_blobs() -> Option<PathBuf> {
    None
}

/// Find the blob set for (arch, runtime) using the process environment; `tool_var` as in
/// [`BlobSearch::from_env`].
pub fn resolve(
    explicit: Option<&Path>,
    tool_var: Option<&str>,
    arch: Arch,
    runtime: &str,
) -> Result<BlobSet> {
    resolve_with(&BlobSearch::from_env(explicit, tool_var), arch, runtime)
}

/// The blob set of a VM config.
pub fn resolve_for(cfg: &super::VmConfig) -> Result<BlobSet> {
    resolve(
        cfg.blob_dir.as_deref(),
        cfg.blob_env.as_deref(),
        cfg.arch,
        &cfg.runtime,
    )
}

pub fn resolve_with(search: &BlobSearch, arch: Arch, runtime: &str) -> Result<BlobSet> {
    let missing = |detail: String| VmError::BlobsMissing {
        arch: arch.to_string(),
        runtime: runtime.to_string(),
        detail,
    };
    // user-named roots: the first one given decides
    let named: Option<(String, &PathBuf)> = if let Some(d) = &search.explicit {
        Some(("--blob-dir".into(), d))
    } else if let Some(d) = &search.env_generic {
        Some(("VCONTAINER_BLOB_DIR".into(), d))
    } else {
        search.env_tool.as_ref().map(|(n, d)| (n.clone(), d))
    };
    if let Some((source, root)) = named {
        return find_in_root(root, arch, runtime, &source).map_err(missing);
    }
    let mut tried = Vec::new();
    for (source, root) in [
        ("installed blobs", &search.installed),
        ("dev tree build/blobs", &search.dev_tree),
    ] {
        let Some(root) = root else { continue };
        match find_in_root(root, arch, runtime, source) {
            Ok(set) => return Ok(set),
            Err(why) => tried.push(why),
        }
    }
    Err(missing(if tried.is_empty() {
        "no blob dir known".into()
    } else {
        tried.join("; ")
    }))
}

/// Look in `root/<arch>/<runtime>/`, `root/<arch>/` and `root/`, in that order. The first dir
/// that holds any blob file is the candidate, and it must hold all of them.
fn find_in_root(
    root: &Path,
    arch: Arch,
    runtime: &str,
    source: &str,
) -> std::result::Result<BlobSet, String> {
    let kernel = arch.kernel_file_name();
    let files = [kernel, INITRAMFS, ROOTFS];
    let dir = blob_dir(root, arch, runtime, &files, source)?;
    let absent: Vec<&str> = files
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !absent.is_empty() {
        return Err(format!(
            "{} ({source}) lacks {}",
            dir.display(),
            absent.join(", ")
        ));
    }
    let meta = read_meta(&dir, arch, runtime)?;
    let dir = dir.canonicalize().unwrap_or(dir);
    Ok(BlobSet {
        kernel: dir.join(kernel),
        initramfs: dir.join(INITRAMFS),
        rootfs: dir.join(ROOTFS),
        dir,
        meta,
        source: source.to_string(),
    })
}

/// The first of `<root>/<arch>/<runtime>`, `<root>/<arch>`, `<root>` holding any blob file.
fn blob_dir(
    root: &Path,
    arch: Arch,
    runtime: &str,
    files: &[&str],
    source: &str,
) -> std::result::Result<PathBuf, String> {
    let candidates = [
        root.join(arch.as_str()).join(runtime),
        root.join(arch.as_str()),
        root.to_path_buf(),
    ];
    candidates
        .into_iter()
        .find(|d| files.iter().any(|f| d.join(f).is_file()))
        .ok_or_else(|| {
            format!(
                "{} ({source}) has no {} under {}/{}/",
                root.display(),
                files.join("/"),
                arch.as_str(),
                runtime
            )
        })
}

/// The dir's blobs.json, if any; refused when it names another arch or runtime.
fn read_meta(
    dir: &Path,
    arch: Arch,
    runtime: &str,
) -> std::result::Result<Option<BlobsMeta>, String> {
    let Ok(bytes) = std::fs::read(dir.join(META)) else {
        return Ok(None);
    };
    let m = serde_json::from_slice::<BlobsMeta>(&bytes)
        .map_err(|e| format!("{}: {e}", dir.join(META).display()))?;
    if let Some(a) = m.arch.as_deref().filter(|a| *a != arch.as_str()) {
        return Err(format!("{} holds {a} blobs, not {arch}", dir.display()));
    }
    if let Some(r) = m.runtime.as_deref().filter(|r| *r != runtime) {
        return Err(format!("{} holds {r} blobs, not {runtime}", dir.display()));
    }
    Ok(Some(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(dir: &Path, files: &[&str]) {
        std::fs::create_dir_all(dir).expect("mkdir");
        for f in files {
            std::fs::write(dir.join(f), b"x").expect("write");
        }
    }

    const ALL: [&str; 3] = ["bzImage", INITRAMFS, ROOTFS];

    #[test]
    fn layout_forms() {
        let t = tempfile::tempdir().expect("tmp");
        // root/<arch>/<runtime>/
        make(&t.path().join("a/x86_64/podman"), &ALL);
        let s = BlobSearch {
            explicit: Some(t.path().join("a")),
            ..Default::default()
        };
        let b = resolve_with(&s, Arch::X86_64, "podman").expect("found");
        assert!(b.kernel.ends_with("x86_64/podman/bzImage"));
        assert_eq!(b.source, "--blob-dir");
        // root holding the files directly
        make(&t.path().join("flat"), &ALL);
        let s = BlobSearch {
            explicit: Some(t.path().join("flat")),
            ..Default::default()
        };
        assert!(resolve_with(&s, Arch::X86_64, "docker").is_ok());
        // root/<arch>/ (old Yocto layout), aarch64 kernel name
        make(&t.path().join("y/aarch64"), &["Image", INITRAMFS, ROOTFS]);
        let s = BlobSearch {
            env_tool: Some(("VDKR_BLOB_DIR".into(), t.path().join("y"))),
            ..Default::default()
        };
        let b = resolve_with(&s, Arch::Aarch64, "docker").expect("found");
        assert!(b.kernel.ends_with("aarch64/Image"));
    }

    #[test]
    fn missing_files_are_named_with_the_fix() {
        let t = tempfile::tempdir().expect("tmp");
        make(&t.path().join("x86_64/podman"), &["bzImage"]);
        let s = BlobSearch {
            env_generic: Some(t.path().to_path_buf()),
            ..Default::default()
        };
        let e = resolve_with(&s, Arch::X86_64, "podman")
            .expect_err("incomplete")
            .to_string();
        assert!(e.contains("initramfs.cpio.gz, rootfs.img"), "{e}");
        assert!(e.contains("make guest"), "{e}");
        assert!(e.contains("VCONTAINER_BLOB_DIR"), "{e}");
    }

    #[test]
    fn named_dir_is_decisive_defaults_fall_through() {
        let t = tempfile::tempdir().expect("tmp");
        make(&t.path().join("dev/x86_64/podman"), &ALL);
        let empty = t.path().join("empty");
        std::fs::create_dir_all(&empty).expect("mkdir");
        // --blob-dir names an empty dir: error, even though the dev tree has blobs
        let s = BlobSearch {
            explicit: Some(empty.clone()),
            dev_tree: Some(t.path().join("dev")),
            ..Default::default()
        };
        assert!(resolve_with(&s, Arch::X86_64, "podman").is_err());
        // nothing named: installed (empty) is skipped, dev tree wins
        let s = BlobSearch {
            installed: Some(empty),
            dev_tree: Some(t.path().join("dev")),
            ..Default::default()
        };
        let b = resolve_with(&s, Arch::X86_64, "podman").expect("dev tree");
        assert_eq!(b.source, "dev tree build/blobs");
        // but not for another runtime
        assert!(resolve_with(&s, Arch::X86_64, "docker").is_err());
    }

    #[test]
    fn blobs_json_of_another_arch_is_refused() {
        let t = tempfile::tempdir().expect("tmp");
        let d = t.path().join("x86_64/podman");
        make(&d, &ALL);
        std::fs::write(
            d.join(META),
            r#"{"arch":"aarch64","runtime":"podman","kernel_version":"6.1","input_hash":"x","protocol_version":1}"#,
        )
        .expect("write");
        let s = BlobSearch {
            explicit: Some(t.path().to_path_buf()),
            ..Default::default()
        };
        let e = resolve_with(&s, Arch::X86_64, "podman").expect_err("wrong arch");
        assert!(e.to_string().contains("aarch64 blobs"), "{e}");
    }
}
