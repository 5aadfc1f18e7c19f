//! The defensive reader of an OCI image layout we do not trust, and the choice of the one
//! image in it that runs on a target [`Arch`].
//!
//! index.json -> (nested indexes) -> manifest -> config and layers. JSON documents are
//! size-bounded before they are read; every blob is reached only through a validated
//! [`Digest`] (so a hostile index.json cannot point outside `blobs/`), a blob that is a
//! symlink must stay inside the layout, and every blob that is used is verified against
//! its descriptor (digest and size). A flat or nested multi-arch index is reduced to the
//! target arch's manifest (x86_64 -> amd64, aarch64 -> arm64, or the 32-bit arch the
//! target runs); a single-arch image is checked against the target arch.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use vcontainer_arch::Arch;

use crate::digest::Digest;
use crate::error::OciError;
use crate::model::{
    platform_string, DescriptorKind, ImageConfig, ImageManifest, Index, IndexEntry, LayoutMarker,
    Platform,
};

/// JSON documents (index, manifest, config) larger than this are refused: real ones are
/// a few KiB, and the bound keeps a hostile file from exhausting memory.
pub const MAX_JSON_BYTES: u64 = 16 * 1024 * 1024;

/// Nested indexes deeper than this are refused (real ones nest once).
pub const MAX_INDEX_DEPTH: usize = 4;

/// True when `dir` looks like an OCI layout (index.json or oci-layout).
pub fn is_layout(dir: &Path) -> bool {
    dir.join("index.json").is_file() || dir.join("oci-layout").is_file()
}

/// Reads the file at `path` with the size bound and parses it; `what` names it in errors.
pub fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<(T, Vec<u8>), OciError> {
    let bytes = read_bounded(path, what)?;
    let value = serde_json::from_slice(&bytes).map_err(|source| OciError::BadJson {
        what: what.to_string(),
        source,
    })?;
    Ok((value, bytes))
}

/// The whole file at `path`, refused when it is larger than [`MAX_JSON_BYTES`].
fn read_bounded(path: &Path, what: &str) -> Result<Vec<u8>, OciError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| OciError::io(path.display(), e))?;
    let mut bytes = Vec::new();
    f.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| OciError::io(path.display(), e))?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(OciError::invalid(
            what,
            format!("more than {MAX_JSON_BYTES} bytes is too large"),
        ));
    }
    Ok(bytes)
}

/// `<layout>/index.json`, size-bounded and parsed.
pub fn read_index(layout: &Path) -> Result<Index, OciError> {
    let path = layout.join("index.json");
    Ok(read_json::<Index>(&path, &path.display().to_string())?.0)
}

/// The host path of a blob, refusing a missing blob, a symlink that leaves the layout and
/// anything but a regular file.
pub fn blob_path(layout: &Path, digest: &Digest, what: &str) -> Result<PathBuf, OciError> {
    let path = digest.blob_path(layout);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(OciError::MissingBlob {
                what: what.to_string(),
                path,
            })
        }
        Err(e) => return Err(OciError::io(path.display(), e)),
    };
    if meta.file_type().is_symlink() {
        let root = layout
            .canonicalize()
            .map_err(|e| OciError::io(layout.display(), e))?;
        let target = path
            .canonicalize()
            .map_err(|e| OciError::io(path.display(), e))?;
        if !target.starts_with(&root) {
            return Err(OciError::Unsafe {
                what: layout.display().to_string(),
                entry: digest.blob_entry_name(),
                reason: format!("symlink to {} outside the layout", target.display()),
            });
        }
    }
    if !path.is_file() {
        return Err(OciError::invalid(
            path.display(),
            format!("{what} is not a regular file"),
        ));
    }
    Ok(path)
}

/// A small blob (manifest, config, index) read whole, size-bounded and verified against
/// `digest` and `size`.
pub fn read_blob_bytes(
    layout: &Path,
    digest: &Digest,
    size: Option<u64>,
    what: &str,
) -> Result<(Vec<u8>, PathBuf), OciError> {
    let path = blob_path(layout, digest, what)?;
    let bytes = read_bounded(&path, what)?;
    digest.verify_bytes(&bytes, size, what)?;
    Ok((bytes, path))
}

/// Reads, verifies and parses a JSON blob with the given digest and size.
pub fn read_blob_json<T: DeserializeOwned>(
    layout: &Path,
    digest: &str,
    size: u64,
    what: &str,
) -> Result<(T, Digest, PathBuf), OciError> {
    let digest = Digest::parse(digest)?;
    let (bytes, path) = read_blob_bytes(layout, &digest, Some(size), what)?;
    let value = serde_json::from_slice(&bytes).map_err(|source| OciError::BadJson {
        what: what.to_string(),
        source,
    })?;
    Ok((value, digest, path))
}

/// The image chosen from a layout, with its manifest and config read and every blob
/// verified.
#[derive(Debug)]
pub struct Selection {
    /// The manifest's index entry as written (all its fields), with the platform it was
    /// chosen by when the layout was multi-arch.
    pub manifest: IndexEntry,
    /// Blobs of the image: manifest, config, layers (verified), with their host paths.
    pub blobs: Vec<(Digest, PathBuf, u64)>,
    /// The platform chosen from a multi-arch index, if it was one.
    pub selected_platform: Option<Platform>,
    /// Messages for the user (stderr) that do not stop the import.
    pub warnings: Vec<String>,
}

/// A manifest found while walking the index, with the platform that applies to it.
#[derive(Debug, Clone)]
struct Candidate {
    desc: IndexEntry,
    platform: Option<Platform>,
}

/// Attestation and other non-image entries buildx puts into indexes.
fn is_placeholder(p: &Platform) -> bool {
    p.architecture().to_string() == "unknown" || p.os().to_string() == "unknown"
}

fn is_linux(p: &Platform) -> bool {
    let os = p.os().to_string();
    os.is_empty() || os == "linux"
}

/// Walks index entries (descending into nested indexes) and collects image manifests.
fn collect(
    layout: &Path,
    manifests: &[IndexEntry],
    inherited: Option<&Platform>,
    depth: usize,
    out: &mut Vec<Candidate>,
) -> Result<(), OciError> {
    if depth > MAX_INDEX_DEPTH {
        return Err(OciError::invalid(
            layout.display(),
            format!("image indexes nested more than {MAX_INDEX_DEPTH} deep"),
        ));
    }
    for desc in manifests {
        let platform = desc.platform.clone().or_else(|| inherited.cloned());
        if platform.as_ref().is_some_and(is_placeholder) {
            continue;
        }
        match desc.kind() {
            DescriptorKind::Index => {
                let what = format!("image index {}", desc.digest);
                let (nested, _, _) =
                    read_blob_json::<Index>(layout, &desc.digest, desc.size, &what)?;
                collect(layout, &nested.manifests, platform.as_ref(), depth + 1, out)?;
            }
            DescriptorKind::Manifest => out.push(Candidate {
                desc: desc.clone(),
                platform,
            }),
            DescriptorKind::Other if desc.media_type.is_empty() => {
                // No media type: tell an index from a manifest by its shape.
                let what = format!("blob {}", desc.digest);
                let (value, _, _) =
                    read_blob_json::<serde_json::Value>(layout, &desc.digest, desc.size, &what)?;
                if value.get("manifests").is_some() {
                    let nested: Index = serde_json::from_value(value)
                        .map_err(|source| OciError::BadJson { what, source })?;
                    collect(layout, &nested.manifests, platform.as_ref(), depth + 1, out)?;
                } else if value.get("config").is_some() {
                    out.push(Candidate {
                        desc: desc.clone(),
                        platform,
                    });
                }
            }
            DescriptorKind::Other => {} // artifacts, signatures: not images
        }
    }
    Ok(())
}

/// Whether a platform entry runs on the target arch: its own arch, or the 32-bit one it runs
/// in compat mode (`Arch::oci_names_run`).
pub fn matches_target(p: &Platform, target: Arch) -> bool {
    target
        .runs_oci_arch(&p.architecture().to_string())
        .is_some()
        && is_linux(p)
}

/// The order among matching entries: the native arch before the 32-bit one, then the
/// variant the guest's CPU runs best (arm64: `v8` or none; arm: v7, then older).
pub fn platform_rank(p: &Platform, target: Arch) -> (usize, u8) {
    let arch = target
        .runs_oci_arch(&p.architecture().to_string())
        .unwrap_or(usize::MAX);
    let variant = match p.variant().as_deref() {
        None | Some("") | Some("v8") | Some("v7") => 0,
        Some("v6") => 1,
        _ => 2,
    };
    (arch, variant)
}

/// Chooses the image in `layout` for `target` and verifies its blobs.
pub fn select(layout: &Path, target: Arch) -> Result<Selection, OciError> {
    let index_path = layout.join("index.json");
    if !index_path.is_file() {
        return Err(OciError::invalid(
            layout.display(),
            "has an oci-layout file but no index.json; not a complete OCI layout",
        ));
    }
    let marker_path = layout.join("oci-layout");
    let mut warnings = Vec::new();
    if marker_path.is_file() {
        let (marker, _) = read_json::<LayoutMarker>(&marker_path, "oci-layout")?;
        if !marker.image_layout_version.starts_with("1.") {
            warnings.push(format!(
                "Warning: unexpected imageLayoutVersion '{}' in {}",
                marker.image_layout_version,
                marker_path.display()
            ));
        }
    }
    let index = read_index(layout)?;
    let mut candidates = Vec::new();
    collect(layout, &index.manifests, None, 0, &mut candidates)?;
    if candidates.is_empty() {
        return Err(OciError::invalid(
            index_path.display(),
            "lists no image manifest",
        ));
    }

    let multi_arch = candidates.iter().any(|c| c.platform.is_some());
    let chosen = if multi_arch {
        choose_platform(layout, &candidates, target, &mut warnings)?
    } else {
        let distinct: BTreeSet<&str> = candidates.iter().map(|c| c.desc.digest.as_str()).collect();
        if distinct.len() > 1 {
            return Err(OciError::Ambiguous {
                path: layout.to_path_buf(),
                count: distinct.len(),
                refs: candidates
                    .iter()
                    .map(|c| c.desc.ref_name().unwrap_or(&c.desc.digest).to_string())
                    .collect(),
            });
        }
        candidates[0].clone()
    };

    let (manifest, manifest_digest, manifest_path) = read_blob_json::<ImageManifest>(
        layout,
        &chosen.desc.digest,
        chosen.desc.size,
        &format!("manifest {}", chosen.desc.digest),
    )?;
    if manifest.schema_version() != 2 {
        return Err(OciError::invalid(
            manifest_path.display(),
            format!(
                "schemaVersion {} (only 2 is supported)",
                manifest.schema_version()
            ),
        ));
    }
    let config_desc = manifest.config();
    let config_digest_text = config_desc.digest().to_string();
    let (config, config_digest, config_path) = read_blob_json::<ImageConfig>(
        layout,
        &config_digest_text,
        config_desc.size(),
        &format!("image config {config_digest_text}"),
    )?;
    match config.architecture.as_deref().filter(|a| !a.is_empty()) {
        Some(arch) if target.runs_oci_arch(arch).is_none() => {
            return Err(OciError::ArchMismatch {
                path: layout.to_path_buf(),
                image_arch: arch.to_string(),
                target,
            })
        }
        Some(_) => {}
        None => warnings.push("Warning: Could not determine image architecture".to_string()),
    }
    if let Some(os) = config
        .os
        .as_deref()
        .filter(|o| !o.is_empty() && *o != "linux")
    {
        return Err(OciError::invalid(
            layout.display(),
            format!("the image is for os '{os}'; only linux images can run in the guest"),
        ));
    }

    let mut blobs = vec![
        (manifest_digest, manifest_path, chosen.desc.size),
        (config_digest, config_path, config_desc.size()),
    ];
    for (i, layer) in manifest.layers().iter().enumerate() {
        let text = layer.digest().to_string();
        let what = format!("layer {} ({text})", i + 1);
        let digest = Digest::parse(&text)?;
        let path = blob_path(layout, &digest, &what)?;
        digest.verify_file(&path, layer.size(), &what)?;
        blobs.push((digest, path, layer.size()));
    }

    let mut desc = chosen.desc.clone();
    if multi_arch {
        desc.platform = chosen.platform.clone();
    }
    Ok(Selection {
        manifest: desc,
        blobs,
        selected_platform: if multi_arch { chosen.platform } else { None },
        warnings,
    })
}

/// The best entry of a multi-arch index for `target`, or the error listing what is there.
fn choose_platform(
    layout: &Path,
    candidates: &[Candidate],
    target: Arch,
    warnings: &mut Vec<String>,
) -> Result<Candidate, OciError> {
    let mut matching: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| {
            c.platform
                .as_ref()
                .is_some_and(|p| matches_target(p, target))
        })
        .collect();
    if matching.is_empty() {
        let mut available: Vec<String> = Vec::new();
        let mut arches: Vec<Arch> = Vec::new();
        for p in candidates.iter().filter_map(|c| c.platform.as_ref()) {
            let s = platform_string(p);
            if !available.contains(&s) {
                available.push(s);
            }
            if let Some(a) = Arch::for_oci_arch(&p.architecture().to_string()) {
                if is_linux(p) && !arches.contains(&a) {
                    arches.push(a);
                }
            }
        }
        return Err(OciError::PlatformMissing {
            path: layout.to_path_buf(),
            target,
            available,
            available_arches: arches,
        });
    }
    matching.sort_by_key(|c| {
        c.platform
            .as_ref()
            .map(|p| platform_rank(p, target))
            .unwrap_or((0, 0))
    });
    let first = matching[0];
    let best = first.platform.as_ref().map(|p| platform_rank(p, target));
    // an arm64 and an arm entry both match; only ties at the best rank are ambiguous
    let distinct: BTreeSet<&str> = matching
        .iter()
        .filter(|c| c.platform.as_ref().map(|p| platform_rank(p, target)) == best)
        .map(|c| c.desc.digest.as_str())
        .collect();
    if distinct.len() > 1 {
        warnings.push(format!(
            "Warning: {} manifests match {}; using the first ({})",
            distinct.len(),
            target.oci_name(),
            first.desc.ref_name().unwrap_or(&first.desc.digest)
        ));
    }
    Ok(first.clone())
}
