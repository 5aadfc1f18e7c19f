//! Reading an OCI image layout directory and choosing the one image to import.
//!
//! The choice is made on the host, so the guest never sees more than one manifest: a flat
//! or nested multi-arch index is reduced to the target arch's manifest (x86_64 -> amd64,
//! aarch64 -> arm64), a single-arch image is checked against the target arch. Every blob
//! that is selected is verified against its descriptor (digest and size) before anything
//! is sent, and blobs are only ever reached through validated digests, so a hostile
//! index.json cannot point outside `blobs/`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::digest::BlobDigest;
use super::error::VimportError;
use super::oci::{
    Descriptor, DescriptorKind, ImageConfig, Index, LayoutMarker, Manifest, Platform,
    LAYOUT_MARKER, MEDIA_OCI_INDEX,
};
use super::payload::{Payload, PayloadEntry};
use crate::arch::Arch;

/// JSON documents (index, manifest, config) larger than this are refused: real ones are
/// a few KiB, and the bound keeps a hostile file from exhausting memory.
pub const MAX_JSON_BYTES: u64 = 8 * 1024 * 1024;

/// Nested indexes deeper than this are refused (real ones nest once).
const MAX_INDEX_DEPTH: usize = 4;

/// True when `dir` looks like an OCI layout (the old tool's rule: index.json or oci-layout).
pub fn is_layout(dir: &Path) -> bool {
    dir.join("index.json").is_file() || dir.join("oci-layout").is_file()
}

/// The image chosen from a layout, ready to be sent as a reduced single-image layout.
#[derive(Debug)]
pub struct Selection {
    /// The manifest descriptor written into the reduced index.json.
    pub manifest: Descriptor,
    /// Blobs to send: manifest, config, layers (verified), with their host paths.
    pub blobs: Vec<(BlobDigest, PathBuf, u64)>,
    /// The platform chosen from a multi-arch index, if it was one.
    pub selected_platform: Option<Platform>,
    /// Messages for the user (stderr) that do not stop the import.
    pub warnings: Vec<String>,
}

impl Selection {
    /// The reduced layout as tar entries: `oci-layout`, an `index.json` with the one manifest,
    /// and the selected blobs (streamed from the original files).
    pub fn payload(&self) -> Result<Payload, VimportError> {
        let index = Index {
            schema_version: 2,
            media_type: Some(MEDIA_OCI_INDEX.to_string()),
            manifests: vec![self.manifest.clone()],
            annotations: None,
        };
        let index_json = serde_json::to_vec(&index).map_err(|source| VimportError::BadJson {
            what: "the reduced index.json".into(),
            source,
        })?;
        let mut entries = vec![
            PayloadEntry::bytes("oci-layout", LAYOUT_MARKER.to_vec()),
            PayloadEntry::bytes("index.json", index_json),
        ];
        let mut dirs = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for (digest, path, size) in &self.blobs {
            if !seen.insert(digest.clone()) {
                continue; // the same layer listed twice is sent once
            }
            let name = digest.blob_entry_name();
            if let Some((dir, _)) = name.rsplit_once('/') {
                dirs.insert(dir.to_string());
            }
            entries.push(PayloadEntry::file(name, path.clone(), *size));
        }
        let mut dir_entries = vec![PayloadEntry::dir("blobs")];
        dir_entries.extend(dirs.into_iter().map(PayloadEntry::dir));
        dir_entries.extend(entries);
        Ok(Payload::new(dir_entries))
    }
}

/// A manifest found while walking the index, with the platform that applies to it.
#[derive(Debug, Clone)]
struct Candidate {
    desc: Descriptor,
    platform: Option<Platform>,
}

/// Reads `<layout>/<rel>` with a size bound and parses it; `what` names it in errors.
fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<(T, Vec<u8>), VimportError> {
    let meta = std::fs::metadata(path).map_err(|e| VimportError::io(path.display(), e))?;
    if meta.len() > MAX_JSON_BYTES {
        return Err(VimportError::invalid(
            what,
            format!("{} bytes is too large (max {MAX_JSON_BYTES})", meta.len()),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| VimportError::io(path.display(), e))?;
    let value = serde_json::from_slice(&bytes).map_err(|source| VimportError::BadJson {
        what: what.to_string(),
        source,
    })?;
    Ok((value, bytes))
}

/// The host path of a blob, refusing symlinks that leave the layout and non-files.
fn blob_path(layout: &Path, digest: &BlobDigest, what: &str) -> Result<PathBuf, VimportError> {
    let path = layout.join(digest.blob_path());
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VimportError::MissingBlob {
                what: what.to_string(),
                path,
            })
        }
        Err(e) => return Err(VimportError::io(path.display(), e)),
    };
    if meta.file_type().is_symlink() {
        let root = layout
            .canonicalize()
            .map_err(|e| VimportError::io(layout.display(), e))?;
        let target = path
            .canonicalize()
            .map_err(|e| VimportError::io(path.display(), e))?;
        if !target.starts_with(&root) {
            return Err(VimportError::Unsafe {
                what: layout.display().to_string(),
                entry: digest.blob_entry_name(),
                reason: format!("symlink to {} outside the layout", target.display()),
            });
        }
    }
    if !path.is_file() {
        return Err(VimportError::invalid(
            path.display(),
            format!("{what} is not a regular file"),
        ));
    }
    Ok(path)
}

/// Reads and verifies a JSON blob named by `desc`.
fn read_blob_json<T: DeserializeOwned>(
    layout: &Path,
    desc: &Descriptor,
    what: &str,
) -> Result<(T, BlobDigest, PathBuf), VimportError> {
    let digest = BlobDigest::parse(&desc.digest)?;
    let path = blob_path(layout, &digest, what)?;
    let (value, bytes) = read_json::<T>(&path, what)?;
    digest.verify_bytes(&bytes, Some(desc.size), what)?;
    Ok((value, digest, path))
}

/// Attestation and other non-image entries buildx puts into indexes.
fn is_placeholder(p: &Platform) -> bool {
    p.architecture == "unknown" || p.os == "unknown"
}

/// Walks index entries (descending into nested indexes) and collects image manifests.
fn collect(
    layout: &Path,
    manifests: &[Descriptor],
    inherited: Option<&Platform>,
    depth: usize,
    out: &mut Vec<Candidate>,
) -> Result<(), VimportError> {
    if depth > MAX_INDEX_DEPTH {
        return Err(VimportError::invalid(
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
                let (nested, _, _) =
                    read_blob_json::<Index>(layout, desc, &format!("image index {}", desc.digest))?;
                collect(layout, &nested.manifests, platform.as_ref(), depth + 1, out)?;
            }
            DescriptorKind::Manifest => out.push(Candidate {
                desc: desc.clone(),
                platform,
            }),
            DescriptorKind::Other if desc.media_type.is_empty() => {
                // No media type: tell an index from a manifest by its shape.
                let what = format!("blob {}", desc.digest);
                let (value, _, _) = read_blob_json::<serde_json::Value>(layout, desc, &what)?;
                if value.get("manifests").is_some() {
                    let nested: Index = serde_json::from_value(value)
                        .map_err(|source| VimportError::BadJson { what, source })?;
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
fn matches_target(p: &Platform, target: Arch) -> bool {
    target.runs_oci_arch(&p.architecture).is_some() && (p.os.is_empty() || p.os == "linux")
}

/// The order among matching entries: the native arch before the 32-bit one, then the
/// variant the guest's CPU runs best (arm64: `v8` or none; arm: v7, then older).
fn platform_rank(p: &Platform, target: Arch) -> (usize, u8) {
    let arch = target.runs_oci_arch(&p.architecture).unwrap_or(usize::MAX);
    let variant = match p.variant.as_deref() {
        None | Some("") | Some("v8") | Some("v7") => 0,
        Some("v6") => 1,
        _ => 2,
    };
    (arch, variant)
}

/// Chooses the image in `layout` for `target` and verifies its blobs.
pub fn select(layout: &Path, target: Arch) -> Result<Selection, VimportError> {
    let index_path = layout.join("index.json");
    if !index_path.is_file() {
        return Err(VimportError::invalid(
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
    let (index, _) = read_json::<Index>(&index_path, &index_path.display().to_string())?;
    let mut candidates = Vec::new();
    collect(layout, &index.manifests, None, 0, &mut candidates)?;
    if candidates.is_empty() {
        return Err(VimportError::invalid(
            index_path.display(),
            "lists no image manifest",
        ));
    }

    let multi_arch = candidates.iter().any(|c| c.platform.is_some());
    let chosen = if multi_arch {
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
                let s = p.to_string();
                if !available.contains(&s) {
                    available.push(s);
                }
                if let Some(a) = Arch::for_oci_arch(&p.architecture) {
                    if (p.os.is_empty() || p.os == "linux") && !arches.contains(&a) {
                        arches.push(a);
                    }
                }
            }
            return Err(VimportError::PlatformMissing {
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
        first.clone()
    } else {
        let distinct: BTreeSet<&str> = candidates.iter().map(|c| c.desc.digest.as_str()).collect();
        if distinct.len() > 1 {
            return Err(VimportError::Ambiguous {
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

    let (manifest, manifest_digest, manifest_path) = read_blob_json::<Manifest>(
        layout,
        &chosen.desc,
        &format!("manifest {}", chosen.desc.digest),
    )?;
    if manifest.schema_version != 2 {
        return Err(VimportError::invalid(
            manifest_path.display(),
            format!(
                "schemaVersion {} (only 2 is supported)",
                manifest.schema_version
            ),
        ));
    }
    let (config, config_digest, config_path) = read_blob_json::<ImageConfig>(
        layout,
        &manifest.config,
        &format!("image config {}", manifest.config.digest),
    )?;
    match config.architecture.as_deref().filter(|a| !a.is_empty()) {
        Some(arch) if target.runs_oci_arch(arch).is_none() => {
            return Err(VimportError::ArchMismatch {
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
        return Err(VimportError::invalid(
            layout.display(),
            format!("the image is for os '{os}'; only linux images can run in the guest"),
        ));
    }

    let mut blobs = vec![
        (manifest_digest, manifest_path, chosen.desc.size),
        (config_digest, config_path, manifest.config.size),
    ];
    for (i, layer) in manifest.layers.iter().enumerate() {
        let what = format!("layer {} ({})", i + 1, layer.digest);
        let digest = BlobDigest::parse(&layer.digest)?;
        let path = blob_path(layout, &digest, &what)?;
        digest.verify_file(&path, layer.size, &what)?;
        blobs.push((digest, path, layer.size));
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
