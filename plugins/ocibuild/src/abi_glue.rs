//! The plugin side of the backend interface (core/abi): its JSON requests mapped onto this
//! crate's requests, results and errors mapped back. Both backend plugins are this glue with
//! a different [`Flavor`].
//!
//! Log lines (progress, `OCI Cache HIT`/`OCI Cache MISS`) go to the process's stderr: the
//! interface has no log channel, and build systems read the tool's stderr anyway.

use vcontainer_abi::backend as abi;
use vcontainer_abi::PluginError;

use crate::build::{AnnotationOptions, BuildRequest, Flavor};
use crate::error::Error;
use crate::index::{IndexInput, IndexRequest};
use crate::layerdef::{LayerDef, LayerKind};
use crate::settings::ImageOptions;
use crate::tarout::{LayoutTar, TarStyle};
use crate::unpack::UnpackRequest;
use crate::Compression;

fn plugin_error(e: Error) -> PluginError {
    match e {
        Error::Invalid(_) | Error::OutputExists(_) => PluginError::usage(e.to_string()),
        _ => PluginError::failed(e.to_string()),
    }
}

fn stderr_log(line: &str) {
    eprintln!("{line}");
}

/// The interface's two tar paths as our list: the `./` one first, then the directory one.
fn tars(archive: &Option<std::path::PathBuf>, dir: &Option<std::path::PathBuf>) -> Vec<LayoutTar> {
    [(archive, TarStyle::Archive), (dir, TarStyle::Dir)]
        .into_iter()
        .filter_map(|(p, style)| {
            p.as_ref().map(|path| LayoutTar {
                path: path.clone(),
                style,
            })
        })
        .collect()
}

/// The path of the first tar of `style` in `tars`.
fn tar_of(tars: &[LayoutTar], style: TarStyle) -> Option<std::path::PathBuf> {
    tars.iter()
        .find(|t| t.style == style)
        .map(|t| t.path.clone())
}

fn layer_def(l: &abi::LayerSpec) -> LayerDef {
    let (kind, items) = match &l.content {
        abi::LayerContent::Directories { paths } => (LayerKind::Directories, paths.clone()),
        abi::LayerContent::Files { paths } => (LayerKind::Files, paths.clone()),
        abi::LayerContent::Host { copies } => (
            LayerKind::Host,
            copies
                .iter()
                .map(|c| format!("{}:{}", c.src.display(), c.dst))
                .collect(),
        ),
        abi::LayerContent::Dir { path } => (LayerKind::Packages, vec![path.display().to_string()]),
    };
    LayerDef {
        name: l.name.clone(),
        kind,
        items,
    }
}

/// Maps the interface's build request onto ours.
pub fn build_request(flavor: Flavor, r: abi::BuildRequest) -> BuildRequest {
    let arch = if r.arch.is_empty() {
        None
    } else {
        Some(r.arch.clone())
    };
    BuildRequest {
        rootfs: if r.rootfs.as_os_str().is_empty() {
            None
        } else {
            Some(r.rootfs.clone())
        },
        output: r.output.clone(),
        tag: r.tag.clone(),
        extra_tags: r.extra_tags.clone(),
        config: ImageOptions {
            entrypoint: r.entrypoint.clone(),
            cmd: r.cmd.clone(),
            env: r.env.clone(),
            labels: r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            ports: r.ports.clone(),
            volumes: Vec::new(),
            user: r.user.clone(),
            workdir: r.workdir.clone(),
            stop_signal: r.stop_signal.clone(),
            author: r.author.clone(),
            arch,
            variant: r.variant.clone(),
            os: r.os.clone(),
        },
        annotations: AnnotationOptions {
            extra: r.annotations.clone(),
            ..AnnotationOptions::default()
        },
        compression: match r.compression {
            abi::Compression::Gzip => Compression::Gzip,
            abi::Compression::Zstd => Compression::Zstd,
        },
        compression_level: r.compression_level,
        layers: r.layers.iter().map(layer_def).collect(),
        base_image: r.base_image.as_ref().map(|b| b.path.clone()),
        base_tag: r.base_image.as_ref().and_then(|b| b.tag.clone()),
        cache_dir: r.cache_dir.clone(),
        source_date_epoch: r.source_date_epoch,
        tars: tars(&r.tar, &r.dir_tar),
        root_owned: r.root_owned,
        flavor,
        force: r.force,
        ..BuildRequest::default()
    }
}

pub fn build(flavor: Flavor, r: abi::BuildRequest) -> Result<abi::BuildResult, PluginError> {
    let req = build_request(flavor, r);
    let rep = crate::build::build(&req, &mut stderr_log).map_err(plugin_error)?;
    let cached = req.cache_dir.is_some();
    Ok(abi::BuildResult {
        layout: rep.output,
        tar: tar_of(&rep.tars, TarStyle::Archive),
        dir_tar: tar_of(&rep.tars, TarStyle::Dir),
        manifest_digest: rep.manifest.to_string(),
        config_digest: rep.config.to_string(),
        layers: rep
            .layers
            .into_iter()
            .filter_map(|l| {
                let digest = l.digest?;
                let diff_id = l.diff_id?;
                let base = l.name.starts_with("base-") && l.entries == 0;
                Some(abi::LayerResult {
                    name: l.name,
                    digest: digest.to_string(),
                    diff_id: diff_id.to_string(),
                    size: l.size,
                    cache: match (cached && !base, l.cached) {
                        (false, _) => None,
                        (true, true) => Some(abi::CacheOutcome::Hit),
                        (true, false) => Some(abi::CacheOutcome::Miss),
                    },
                })
            })
            .collect(),
    })
}

pub fn unpack(r: abi::UnpackRequest) -> Result<abi::UnpackResult, PluginError> {
    let req = UnpackRequest {
        image: r.image,
        tag: r.tag,
        arch: r.platform.map(|p| p.architecture),
        bundle: r.bundle,
        force: r.force,
    };
    let rep = crate::unpack::unpack(&req, &mut stderr_log).map_err(plugin_error)?;
    Ok(abi::UnpackResult {
        bundle: rep.bundle,
        manifest_digest: rep.manifest.to_string(),
    })
}

pub fn index(r: abi::IndexRequest) -> Result<abi::IndexResult, PluginError> {
    let req = IndexRequest {
        inputs: r
            .images
            .iter()
            .map(|e| IndexInput {
                layout: e.layout.clone(),
                tag: e.tag.clone(),
                arch: e.platform.as_ref().map(|p| p.architecture.clone()),
                variant: e.platform.as_ref().and_then(|p| p.variant.clone()),
            })
            .collect(),
        output: r.output.clone(),
        tag: r.tag.clone(),
        tars: tars(&r.tar, &r.dir_tar),
        flat: r.flat,
        annotations: r.annotations.clone(),
        source_date_epoch: r.source_date_epoch,
        force: r.force,
    };
    let rep = crate::index::build_index(&req, &mut stderr_log).map_err(plugin_error)?;
    let index_digest = rep.index.map(|d| d.to_string()).unwrap_or_default();
    Ok(abi::IndexResult {
        layout: rep.output,
        tar: r.tar,
        dir_tar: r.dir_tar,
        index_digest,
        manifests: rep
            .manifests
            .iter()
            .zip(rep.platforms.iter())
            .map(|(d, p)| abi::IndexManifest {
                digest: d.to_string(),
                platform: abi::Platform {
                    os: p.os.clone(),
                    architecture: p.architecture.clone(),
                    variant: p.variant.clone(),
                },
            })
            .collect(),
    })
}
