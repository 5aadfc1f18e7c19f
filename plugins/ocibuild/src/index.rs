//! `image index`: per-arch layouts -> one multi-arch layout. Each input image is verified
//! (manifest, config and every layer blob), only the blobs it references are copied (no
//! orphans), and each manifest gets its platform (architecture, os, variant) from its config.
//!
//! Like oci-multiarch, the image index is stored as a blob and index.json has a single
//! entry pointing to it (skopeo and the batch import need exactly one entry), carrying the
//! `ref.name` tag that oci-multiarch forgot. `flat` lists the manifests in index.json itself.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::imageread::open_image;
use crate::layout::LayoutWriter;
use crate::media;
use crate::spec::{Descriptor, Index, Platform};
use crate::staging::Staged;
use crate::tarout::{check_tars, stage_tars, top_name, LayoutTar};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IndexInput {
    pub layout: PathBuf,
    pub tag: Option<String>,
    /// Overrides the architecture read from the image config (any spelling).
    pub arch: Option<String>,
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IndexRequest {
    pub inputs: Vec<IndexInput>,
    pub output: PathBuf,
    pub tag: Option<String>,
    pub flat: bool,
    pub force: bool,
    pub source_date_epoch: Option<i64>,
    /// Also write the layout as tar files (either style, or both).
    pub tars: Vec<LayoutTar>,
    /// Annotations (full keys) of the image index and its index.json entry.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexReport {
    pub output: PathBuf,
    pub index: Option<Digest>,
    pub platforms: Vec<Platform>,
    pub manifests: Vec<Digest>,
}

/// Parses `PATH[:TAG][@ARCH]`-free CLI input: `DIR` or `DIR:TAG`... kept simple: a
/// directory that exists is taken whole, else the part after the last `:` is a tag.
pub fn parse_input(s: &str) -> IndexInput {
    let p = PathBuf::from(s);
    if p.is_dir() {
        return IndexInput {
            layout: p,
            ..IndexInput::default()
        };
    }
    match s.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') => IndexInput {
            layout: PathBuf::from(dir),
            tag: Some(tag.to_string()),
            ..IndexInput::default()
        },
        _ => IndexInput {
            layout: p,
            ..IndexInput::default()
        },
    }
}

pub fn build_index(req: &IndexRequest, log: &mut dyn FnMut(&str)) -> Result<IndexReport> {
    if req.inputs.is_empty() {
        return Err(Error::invalid("image index: no input layouts"));
    }
    let tag = req.tag.clone().unwrap_or_else(|| "latest".into());
    crate::build::validate_tag(&tag)?;
    check_tars(&req.tars, req.force)?;
    let staged = Staged::new(&req.output, req.force)?;
    let out = LayoutWriter::init(staged.path())?;
    let mut entries = Vec::new();
    let mut platforms = Vec::new();
    let mut manifests = Vec::new();
    for input in &req.inputs {
        let img = open_image(&input.layout, input.tag.as_deref(), None)?;
        // Verify and copy every blob the image references.
        for l in &img.manifest.layers {
            out.copy_blob_from(&input.layout, &l.digest, Some(l.size))?;
        }
        out.copy_blob_from(
            &input.layout,
            &img.manifest.config.digest,
            Some(img.manifest.config.size),
        )?;
        out.copy_blob_from(
            &input.layout,
            &img.manifest_desc.digest,
            Some(img.manifest_desc.size),
        )?;
        let (arch, mut variant) = match &input.arch {
            Some(a) => crate::settings::map_arch(a)?,
            None => (img.config.architecture.clone(), img.config.variant.clone()),
        };
        if input.variant.is_some() {
            variant = input.variant.clone().filter(|v| !v.is_empty());
        }
        let platform = Platform {
            architecture: arch,
            os: if img.config.os.is_empty() {
                "linux".into()
            } else {
                img.config.os.clone()
            },
            os_version: img.config.os_version.clone(),
            os_features: None,
            variant,
        };
        if platforms.contains(&platform) {
            return Err(Error::invalid(format!(
                "image index: two inputs for platform {}/{}{}",
                platform.os,
                platform.architecture,
                platform
                    .variant
                    .as_deref()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default()
            )));
        }
        log(&format!(
            "{}: {} {}/{}",
            input.layout.display(),
            img.manifest_desc.digest,
            platform.os,
            platform.architecture
        ));
        let mut d = Descriptor::new(
            media::MEDIA_OCI_MANIFEST,
            img.manifest_desc.digest,
            img.manifest_desc.size,
        );
        d.platform = Some(platform.clone());
        platforms.push(platform);
        manifests.push(img.manifest_desc.digest);
        entries.push(d);
    }
    let index_digest = if req.flat {
        for e in &mut entries {
            e.annotations
                .insert(media::ANNOTATION_REF_NAME.into(), tag.clone());
        }
        out.write_index(&Index {
            schema_version: 2,
            media_type: Some(media::MEDIA_OCI_INDEX.into()),
            manifests: entries,
            annotations: BTreeMap::new(),
        })?;
        None
    } else {
        let nested = Index {
            schema_version: 2,
            media_type: Some(media::MEDIA_OCI_INDEX.into()),
            manifests: entries,
            annotations: req.annotations.clone(),
        };
        let mut desc = out.write_json(media::MEDIA_OCI_INDEX, &nested)?;
        desc.annotations = req.annotations.clone();
        desc.annotations
            .insert(media::ANNOTATION_REF_NAME.into(), tag.clone());
        out.write_index(&Index {
            schema_version: 2,
            media_type: Some(media::MEDIA_OCI_INDEX.into()),
            manifests: vec![desc.clone()],
            annotations: BTreeMap::new(),
        })?;
        Some(desc.digest)
    };
    let mtime = req.source_date_epoch.unwrap_or(0);
    let top = top_name(&req.output);
    for t in stage_tars(staged.path(), top.as_bytes(), &req.tars, mtime, req.force)? {
        t.commit()?;
    }
    let output = staged.commit()?;
    Ok(IndexReport {
        output,
        index: index_digest,
        platforms,
        manifests,
    })
}
