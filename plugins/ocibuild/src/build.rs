//! `image build`: rootfs (+ layer definitions, + base image) -> OCI image layout.
//!
//! Differences from image-oci's backends, on purpose (docs/image-oci.md):
//! * one history entry per layer, no orphan blobs, one index.json entry per tag asked (no
//!   stale base tag), no `platform` in a single-arch index.json;
//! * owners, modes, setuid bits, xattrs and file capabilities are kept (umoci's rootless
//!   repack flattens owners to 0:0; `root_owned` restores that behaviour);
//! * the variant is written (`armv7` -> arm + v7);
//! * reproducible: mtimes clamped to SOURCE_DATE_EPOCH, which also dates `created`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::{cache_key, CachedLayer, LayerCache};
use crate::compress::{Compression, LayerSink};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::imageread::{image_tree, open_image};
use crate::layer::write_layer;
use crate::layerdef::LayerDef;
use crate::layout::LayoutWriter;
use crate::media;
use crate::plan::{apply_plan, plan_layer, Plan, Source, StampRules};
use crate::settings::ImageOptions;
use crate::spec::{self, Descriptor, History, ImageConfig, Index, Manifest, RootFs};
use crate::staging::Staged;
use crate::tarout::{check_tars, stage_tars, top_name, LayoutTar};
use crate::timefmt;
use crate::tree::{Tree, ROOT};

/// Which backend's conventions to follow where they differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// One layer of the whole rootfs; no layer definitions, no base image.
    Sloci,
    #[default]
    Umoci,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnnotationOptions {
    pub created: Option<String>,
    pub revision: Option<String>,
    pub version: Option<String>,
    /// More annotations with their full keys (manifest and index entry).
    pub extra: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildRequest {
    pub rootfs: Option<PathBuf>,
    pub output: PathBuf,
    /// index.json `org.opencontainers.image.ref.name`; default `latest`.
    pub tag: Option<String>,
    /// More tags for the same image: one more index.json entry each, after `tag`'s.
    pub extra_tags: Vec<String>,
    pub config: ImageOptions,
    pub annotations: AnnotationOptions,
    pub compression: Compression,
    pub compression_level: Option<i32>,
    /// Layer definitions (umoci only); [`crate::layerdef::parse_layer_def`] reads the
    /// `name:type:content` form.
    pub layers: Vec<LayerDef>,
    /// OCI layout of a base image (umoci only).
    pub base_image: Option<PathBuf>,
    pub base_tag: Option<String>,
    /// With a base image and no layer definitions: also white out what the base has and
    /// the rootfs does not (default: add/overwrite only, like image-oci's rsync).
    pub delete_missing: bool,
    pub cache_dir: Option<PathBuf>,
    /// Recorded in cache markers (`machine=`).
    pub machine: Option<String>,
    pub source_date_epoch: Option<i64>,
    /// Also write the layout as tar files (either style, or both).
    pub tars: Vec<LayoutTar>,
    /// Store all entries as 0:0 like umoci's rootless repack.
    pub root_owned: bool,
    /// Replace an existing output.
    pub force: bool,
    pub flavor: Flavor,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerReport {
    pub name: String,
    pub digest: Option<Digest>,
    pub diff_id: Option<Digest>,
    pub size: u64,
    pub entries: usize,
    pub cached: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildReport {
    pub output: PathBuf,
    pub tag: String,
    pub manifest: Digest,
    pub config: Digest,
    pub layers: Vec<LayerReport>,
    /// The tars written, in the order asked.
    pub tars: Vec<LayoutTar>,
}

/// gzip level of the umoci backend when none is given. umoci compresses with pgzip at
/// `DefaultCompression`, which klauspost's flate maps to its level 5, a speed-oriented
/// encoder; libdeflate level numbers do not line up with klauspost's, and its level 3
/// gives blobs a little smaller than umoci's (bench rootfs: 70.5 vs 72.8 MB) in well under
/// half the time. So the umoci backend keeps umoci's trade-off (fast, same size), the sloci
/// backend keeps gzip's default 6 like image-oci's `gzip` step.
pub const UMOCI_GZIP_LEVEL: i32 = 3;

impl BuildRequest {
    /// The compression level used: the requested one, else the backend's default.
    pub fn effective_level(&self) -> Option<i32> {
        match (self.compression_level, self.flavor, self.compression) {
            (Some(l), _, _) => Some(l),
            (None, Flavor::Umoci, Compression::Gzip) => Some(UMOCI_GZIP_LEVEL),
            (None, _, _) => None,
        }
    }
}

/// Checks a tag against the OCI ref.name grammar (components of alphanumerics joined by
/// `-._:@+` or `--`, separated by `/`).
pub fn validate_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 255
        && tag.split('/').all(|comp| {
            let b = comp.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"-._:@+".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid tag {tag:?} (letters and digits joined by - . _ : @ +)"
        )))
    }
}

struct LayerOut {
    desc: Descriptor,
    diff_id: Digest,
    cached: bool,
}

/// Writes the plan as a blob of `layout` (through the cache when there is one).
fn emit_layer(
    req: &BuildRequest,
    layout: &LayoutWriter,
    plan: &Plan,
    name: &str,
    kind: &str,
    lower: &[Digest],
    log: &mut dyn FnMut(&str),
) -> Result<LayerOut> {
    let cache = req.cache_dir.as_ref().map(|d| LayerCache {
        dir: d.clone(),
        machine: req.machine.clone().unwrap_or_default(),
    });
    let key = match &cache {
        Some(_) => Some(cache_key(
            plan,
            lower,
            req.compression,
            req.effective_level(),
            req.source_date_epoch,
        )?),
        None => None,
    };
    if let (Some(cache), Some(key)) = (&cache, &key) {
        if let Some((blob, hit)) = cache.lookup(key, name) {
            cache.restore(&blob, &hit, layout)?;
            log(&format!("OCI Cache HIT: Layer '{name}' ({})", &key[..16]));
            return Ok(LayerOut {
                desc: layer_descriptor(req, &hit),
                diff_id: hit.diff_id,
                cached: true,
            });
        }
        log(&format!(
            "OCI Cache MISS: Layer '{name}' ({name}:{kind} {} entries, key {})",
            plan.ops.len(),
            &key[..16]
        ));
    }
    let tmp = layout.temp_blob()?;
    let file = tmp
        .as_file()
        .try_clone()
        .map_err(|e| Error::io(tmp.path(), e))?;
    let mut sink = LayerSink::new(req.compression, req.effective_level(), file)
        .map_err(|e| Error::io(tmp.path(), e))?;
    write_layer(plan, &mut sink)?;
    let (_f, d) = sink.finish().map_err(|e| Error::io(tmp.path(), e))?;
    let blob = layout.commit_blob(tmp, &d.digest)?;
    let info = CachedLayer {
        diff_id: d.diff_id,
        digest: d.digest,
        size: d.size,
        uncompressed_size: d.uncompressed_size,
        media_type: req.compression.media_type().to_string(),
    };
    if let (Some(cache), Some(key)) = (&cache, &key) {
        let created = timefmt::rfc3339(timefmt::now_or(None));
        if let Err(e) = cache.store(key, name, &blob, &info, &created) {
            log(&format!(
                "warning: could not store layer '{name}' in the cache: {e}"
            ));
        }
    }
    Ok(LayerOut {
        desc: layer_descriptor(req, &info),
        diff_id: d.diff_id,
        cached: false,
    })
}

fn layer_descriptor(req: &BuildRequest, l: &CachedLayer) -> Descriptor {
    let mut desc = Descriptor::new(&l.media_type, l.digest, l.size);
    if req.flavor == Flavor::Umoci && l.size != l.uncompressed_size {
        desc.annotations.insert(
            spec::ANNOTATION_UNCOMPRESSED_SIZE.into(),
            l.uncompressed_size.to_string(),
        );
    }
    desc
}

/// Opens the base image: by tag, else the only image of the layout, else `latest`.
fn open_base(
    base: &Path,
    tag: Option<&str>,
    arch: Option<&str>,
) -> Result<crate::imageread::Image> {
    if tag.is_some() {
        return open_image(base, tag, arch);
    }
    let index = crate::imageread::read_index(base)?;
    let tag = if index.manifests.len() == 1 {
        None
    } else {
        Some("latest")
    };
    open_image(base, tag, arch)
}

/// Builds the image described by `req`. `log` receives progress lines (including the
/// `OCI Cache HIT`/`OCI Cache MISS` lines build systems grep for).
pub fn build(req: &BuildRequest, log: &mut dyn FnMut(&str)) -> Result<BuildReport> {
    let tag = req.tag.clone().unwrap_or_else(|| "latest".into());
    validate_tag(&tag)?;
    let mut tags = vec![tag.clone()];
    for t in &req.extra_tags {
        validate_tag(t)?;
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    req.config.validate()?;
    req.compression.check_level(req.compression_level)?;
    let extra_annotations = req.annotations.extra.clone();
    if req.flavor == Flavor::Sloci && (!req.layers.is_empty() || req.base_image.is_some()) {
        return Err(Error::invalid(
            "multi-layer images and base images need the umoci backend",
        ));
    }
    for d in &req.layers {
        d.validate()?;
    }
    let defs = &req.layers;
    let rootfs = req.rootfs.as_deref();
    if let Some(r) = rootfs {
        if !r.is_dir() {
            return Err(Error::invalid(format!(
                "rootfs {} is not a directory",
                r.display()
            )));
        }
    }
    if defs.is_empty() && rootfs.is_none() {
        return Err(Error::invalid(
            "nothing to build: give --rootfs or layer definitions",
        ));
    }
    let sources: Vec<(String, String, Vec<Source>)> = if defs.is_empty() {
        let root = rootfs.map(Path::to_path_buf).unwrap_or_default();
        let src = if req.base_image.is_some() && !req.delete_missing {
            Source::Overlay {
                src: root,
                dst: ROOT.to_vec(),
            }
        } else {
            Source::Mirror {
                root,
                path: ROOT.to_vec(),
                follow: false,
            }
        };
        vec![("rootfs".into(), "rootfs".into(), vec![src])]
    } else {
        defs.iter()
            .map(|d| {
                Ok((
                    d.name.clone(),
                    d.kind.as_str().to_string(),
                    d.sources(rootfs)?,
                ))
            })
            .collect::<Result<_>>()?
    };

    check_tars(&req.tars, req.force)?;
    let created = timefmt::rfc3339(timefmt::now_or(req.source_date_epoch));
    let staged = Staged::new(&req.output, req.force)?;
    let layout = LayoutWriter::init(staged.path())?;

    // Base image: verified, its layers copied, its tree known.
    let mut base_reports = Vec::new();
    let (mut config, mut layers, mut tree) = match &req.base_image {
        Some(base) => {
            let img = open_base(base, req.base_tag.as_deref(), req.config.arch.as_deref())?;
            log(&format!(
                "base image {} ({} layers)",
                base.display(),
                img.manifest.layers.len()
            ));
            let tree = image_tree(&img)?;
            for (i, l) in img.manifest.layers.iter().enumerate() {
                layout.copy_blob_from(base, &l.digest, Some(l.size))?;
                base_reports.push(LayerReport {
                    name: format!("base-{}", i + 1),
                    digest: Some(l.digest),
                    diff_id: img.config.rootfs.diff_ids.get(i).copied(),
                    size: l.size,
                    entries: 0,
                    cached: false,
                });
            }
            (img.config.clone(), img.manifest.layers.clone(), tree)
        }
        None => (
            ImageConfig {
                rootfs: RootFs {
                    kind: "layers".into(),
                    diff_ids: Vec::new(),
                },
                ..ImageConfig::default()
            },
            Vec::new(),
            Tree::default(),
        ),
    };
    config.rootfs.kind = "layers".into();

    let rules = StampRules {
        source_date_epoch: req.source_date_epoch,
        root_owned: req.root_owned,
    };
    let backend = match req.flavor {
        Flavor::Sloci => "sloci",
        Flavor::Umoci => "umoci",
    };
    let mut reports = base_reports;
    for (name, kind, srcs) in &sources {
        let plan = plan_layer(&tree, srcs, rules, &mut |w| log(&format!("warning: {w}")))?;
        let created_by =
            format!("vcontainer image build --backend {backend} (layer {name}: {kind})");
        if plan.ops.is_empty() {
            log(&format!("layer '{name}': no changes, no layer written"));
            config.history.push(History {
                created: Some(created.clone()),
                created_by: Some(created_by),
                author: req.config.author.clone(),
                comment: None,
                empty_layer: true,
            });
            reports.push(LayerReport {
                name: name.clone(),
                digest: None,
                diff_id: None,
                size: 0,
                entries: 0,
                cached: false,
            });
            continue;
        }
        let out = emit_layer(
            req,
            &layout,
            &plan,
            name,
            kind,
            &config.rootfs.diff_ids,
            log,
        )?;
        apply_plan(&mut tree, &plan)?;
        log(&format!(
            "layer '{name}': {} entries, {} ({} bytes){}",
            plan.ops.len(),
            out.desc.digest,
            out.desc.size,
            if out.cached { ", from cache" } else { "" }
        ));
        config.rootfs.diff_ids.push(out.diff_id);
        config.history.push(History {
            created: Some(created.clone()),
            created_by: Some(created_by),
            author: req.config.author.clone(),
            comment: None,
            empty_layer: false,
        });
        reports.push(LayerReport {
            name: name.clone(),
            digest: Some(out.desc.digest),
            diff_id: Some(out.diff_id),
            size: out.desc.size,
            entries: plan.ops.len(),
            cached: out.cached,
        });
        layers.push(out.desc);
    }

    req.config.apply(&mut config)?;
    config.created = Some(created.clone());
    let config_desc = layout.write_json(media::MEDIA_OCI_CONFIG, &config)?;

    let mut annotations = extra_annotations;
    for (k, v) in [
        (media::ANNOTATION_CREATED, &req.annotations.created),
        (media::ANNOTATION_REVISION, &req.annotations.revision),
        (media::ANNOTATION_VERSION, &req.annotations.version),
    ] {
        if let Some(v) = v {
            annotations.insert(k.to_string(), v.clone());
        }
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::MEDIA_OCI_MANIFEST.into()),
        config: config_desc.clone(),
        layers,
        annotations: annotations.clone(),
    };
    let mut manifest_desc = layout.write_json(media::MEDIA_OCI_MANIFEST, &manifest)?;
    manifest_desc.annotations = annotations;
    // one entry per tag, all naming the same manifest (as `umoci tag` adds them); the
    // index entry's ref.name is always the tag, whatever the manifest's annotations say
    let entries = tags
        .iter()
        .map(|t| {
            let mut d = manifest_desc.clone();
            d.annotations
                .insert(media::ANNOTATION_REF_NAME.into(), t.clone());
            d
        })
        .collect();
    layout.write_index(&Index {
        schema_version: 2,
        media_type: Some(media::MEDIA_OCI_INDEX.into()),
        manifests: entries,
        annotations: BTreeMap::new(),
    })?;

    // every output is complete under a temp name before any of them is moved into place
    let mtime = req.source_date_epoch.unwrap_or(0);
    let top = top_name(&req.output);
    let staged_tars = stage_tars(staged.path(), top.as_bytes(), &req.tars, mtime, req.force)?;
    for t in staged_tars {
        let path = t.commit()?;
        log(&format!("wrote {}", path.display()));
    }
    let output = staged.commit()?;
    log(&format!(
        "wrote {} ({tag}, {})",
        output.display(),
        manifest_desc.digest
    ));
    Ok(BuildReport {
        output,
        tag,
        manifest: manifest_desc.digest,
        config: config_desc.digest,
        layers: reports,
        tars: req.tars.clone(),
    })
}
