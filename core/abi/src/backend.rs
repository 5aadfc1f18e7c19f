//! Backend plugins: building OCI image layouts from a rootfs, unpacking images, and building
//! multi-arch indexes.
//!
//! # Why JSON across the boundary
//!
//! A build has a large set of mostly optional settings (the image-oci variables: entrypoint,
//! labels, layers, base image, cache, ...) that will keep growing. As `#[repr(C)]` structs,
//! every added option would change the layout and force every plugin to be rebuilt in lockstep.
//! So the three functions take and return one JSON document ([`RStr`] in, [`RString`] out)
//! holding the serde structs of this module. abi_stable still checks the function table
//! ([`BackendModule`]) at load time; the JSON side is checked by serde: unknown fields are
//! rejected (`deny_unknown_fields`), and the core omits options that are unset, so an older
//! plugin only fails when the user really asked for something it cannot do.

use std::collections::BTreeMap;
use std::path::PathBuf;

use abi_stable::{
    std_types::{RResult, RStr, RString},
    StableAbi,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::catch_panic;
use crate::PluginError;

/// Signature of every backend function: JSON request in, JSON result (or error) out.
/// (The struct below spells it out because the StableAbi derive must see the fn type.)
pub type JsonFn = extern "C" fn(request: RStr<'_>) -> RResult<RString, PluginError>;

/// The functions of a backend plugin (interface v1). A prefix type, so functions can be
/// appended later.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = BackendModuleRef)))]
#[sabi(missing_field(panic))]
pub struct BackendModule {
    /// [`BuildRequest`] -> [`BuildResult`].
    pub build: extern "C" fn(request: RStr<'_>) -> RResult<RString, PluginError>,
    /// [`UnpackRequest`] -> [`UnpackResult`].
    pub unpack: extern "C" fn(request: RStr<'_>) -> RResult<RString, PluginError>,
    /// [`IndexRequest`] -> [`IndexResult`].
    #[sabi(last_prefix_field)]
    pub index: extern "C" fn(request: RStr<'_>) -> RResult<RString, PluginError>,
}

/// Host side: calls a backend function with a typed request.
pub fn call<Req: Serialize, Res: DeserializeOwned>(
    function: JsonFn,
    request: &Req,
) -> Result<Res, PluginError> {
    let json = serde_json::to_string(request)
        .map_err(|e| PluginError::invalid_request(format!("cannot encode request: {e}")))?;
    let reply = function(RStr::from_str(&json)).into_result()?;
    serde_json::from_str(reply.as_str())
        .map_err(|e| PluginError::failed(format!("plugin returned an unreadable result: {e}")))
}

/// Plugin side: decodes the request, runs `handler` (catching panics) and encodes the result.
/// The export macro wraps every backend function with this.
pub fn serve<Req: DeserializeOwned, Res: Serialize>(
    request: RStr<'_>,
    handler: impl FnOnce(Req) -> Result<Res, PluginError>,
) -> RResult<RString, PluginError> {
    catch_panic(|| {
        let request: Req = serde_json::from_str(request.as_str())
            .map_err(|e| PluginError::invalid_request(format!("bad request: {e}")))?;
        let result = handler(request)?;
        serde_json::to_string(&result)
            .map(RString::from)
            .map_err(|e| PluginError::failed(format!("cannot encode result: {e}")))
    })
    .into()
}

/// Layer compression.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// `application/vnd.oci.image.layer.v1.tar+gzip` (what umoci and sloci write).
    #[default]
    Gzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd`.
    Zstd,
}

/// An OCI platform. `architecture`/`variant` use GOARCH names (amd64, arm64, arm + v7).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    /// "linux" unless said otherwise.
    #[serde(default = "default_os")]
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

fn default_os() -> String {
    "linux".to_string()
}

/// One entry of image-oci's `OCI_LAYERS` (`name:type:content`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// Layer name (history comment, cache key, log lines).
    pub name: String,
    /// What goes into the layer.
    pub content: LayerContent,
}

/// The content of one layer. Paths in `Directories`/`Files` are inside the rootfs.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum LayerContent {
    /// Delta-only mirror: makes these paths of the image equal to the same paths of the
    /// rootfs. Entries that are new or changed since the layers below go in; entries the
    /// layers below have and the rootfs does not get whiteouts (a directory whose whole old
    /// content is gone becomes opaque); unchanged entries are left out. Symlinked parents
    /// (merged-usr `/bin -> usr/bin`) are resolved in the rootfs and the symlink is included.
    Directories { paths: Vec<String> },
    /// Delta-only mirror of single rootfs paths (same rules as `Directories`).
    Files { paths: Vec<String> },
    /// Copies from the host into the image: overwrites, never deletes.
    Host { copies: Vec<HostCopy> },
    /// A directory prepared by the build system (e.g. one packages layer installed into its
    /// own root); its whole tree is laid over the image.
    Dir { path: PathBuf },
}

/// One `src:dst` item of a `host` layer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostCopy {
    /// Host path (file or directory).
    pub src: PathBuf,
    /// Absolute path in the image.
    pub dst: String,
}

/// Why a `name:type:content` layer definition was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayerParseError {
    #[error("layer '{0}': expected name:type:content")]
    Shape(String),
    #[error("layer '{spec}': unknown type '{kind}' (valid: directories, files, host, dir)")]
    UnknownType { spec: String, kind: String },
    #[error("layer '{spec}': host item '{item}' must be src:dst")]
    HostItem { spec: String, item: String },
    #[error("layer '{0}': no content")]
    Empty(String),
}

impl LayerSpec {
    /// Parses image-oci's `name:type:content` syntax: content is everything after the second
    /// `:`, items are separated by `+`, a `host` item is `src:dst` split at its last `:`.
    pub fn parse(spec: &str) -> Result<LayerSpec, LayerParseError> {
        let mut fields = spec.splitn(3, ':');
        let (name, kind, content) = match (fields.next(), fields.next(), fields.next()) {
            (Some(n), Some(k), Some(c)) if !n.is_empty() => (n, k, c),
            _ => return Err(LayerParseError::Shape(spec.to_string())),
        };
        let items: Vec<&str> = content.split('+').filter(|s| !s.is_empty()).collect();
        if items.is_empty() {
            return Err(LayerParseError::Empty(spec.to_string()));
        }
        let owned = || items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let content = match kind {
            "directories" => LayerContent::Directories { paths: owned() },
            "files" => LayerContent::Files { paths: owned() },
            "host" => LayerContent::Host {
                copies: items
                    .iter()
                    .map(|item| match item.rsplit_once(':') {
                        Some((src, dst)) if !src.is_empty() && !dst.is_empty() => Ok(HostCopy {
                            src: PathBuf::from(src),
                            dst: dst.to_string(),
                        }),
                        _ => Err(LayerParseError::HostItem {
                            spec: spec.to_string(),
                            item: item.to_string(),
                        }),
                    })
                    .collect::<Result<_, _>>()?,
            },
            "dir" => LayerContent::Dir {
                path: PathBuf::from(content),
            },
            other => {
                return Err(LayerParseError::UnknownType {
                    spec: spec.to_string(),
                    kind: other.to_string(),
                })
            }
        };
        Ok(LayerSpec {
            name: name.to_string(),
            content,
        })
    }
}

/// A base image to build on.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BaseImage {
    /// OCI image layout directory.
    pub path: PathBuf,
    /// Tag (index.json `org.opencontainers.image.ref.name`) to start from; None = the
    /// layout's only image (an error when it has several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// `vcontainer image build`: the image-oci settings. Unset options are omitted from the JSON.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BuildRequest {
    /// The root filesystem to package (IMAGE_ROOTFS).
    pub rootfs: PathBuf,
    /// OCI layout directory to create. Must not exist, or be an empty directory.
    pub output: PathBuf,
    /// Image tag, written as the index `org.opencontainers.image.ref.name`; "latest" if None.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// More tags for the same image: one more index.json entry each, naming the same
    /// manifest (what `umoci tag` adds).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_tags: Vec<String>,

    /// Config `Entrypoint` (already split into words). None = unset (or inherited from base).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Config `Cmd` (already split into words).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Config `Env` items `NAME=value`; a name already present is replaced in place.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Config `Labels`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Config `ExposedPorts`: `PORT[/tcp|udp|sctp]`; the key written always has the protocol
    /// (`80` is stored as `80/tcp`, as docker does), and anything else is refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Config `User`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Config `WorkingDir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Config `StopSignal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Config `author`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,

    /// GOARCH name: amd64, arm64, arm, 386, riscv64, ... (the core maps `armv7` to arm + v7).
    pub arch: String,
    /// Platform variant: v7, v6, v8, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// OS; "linux" if None.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// OCI annotations with their full keys (org.opencontainers.image.revision, .ref.name,
    /// .created, .version, ...), for the manifest and its index entry.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// Layer compression.
    pub compression: Compression,
    /// Compression level (gzip 1-9, zstd 1-22); None = the backend's default. Levels change
    /// the blob bytes, not the diff_ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i32>,
    /// Also write a tar of the layout to this path, entries `./`, `./index.json`, ... (an OCI
    /// archive: image-oci's `-oci.tar`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tar: Option<PathBuf>,
    /// Also write a tar of the layout whose top entry is the layout directory's name
    /// (image-oci's `-oci-dir.tar`, made with `tar -cf X-dir.tar <dirname>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir_tar: Option<PathBuf>,
    /// Store every layer entry as owned by 0:0 with no user/group names, as umoci's rootless
    /// repack (the image-oci umoci flow) does; by default owners are kept.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub root_owned: bool,
    /// Multi-layer mode when non-empty (umoci backend); empty = one layer with the whole rootfs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerSpec>,
    /// Start from this image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_image: Option<BaseImage>,
    /// Layer cache directory; None disables the cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// SOURCE_DATE_EPOCH: clamps timestamps and sets `created` for reproducible output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_date_epoch: Option<i64>,
    /// Replace an existing output (directory and tar) once the new one is complete; without
    /// it a non-empty output is refused and left as it was.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// Whether a layer came from the cache.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CacheOutcome {
    Hit,
    Miss,
}

/// One layer written by a build.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LayerResult {
    /// The [`LayerSpec::name`], or "rootfs" in single-layer mode.
    pub name: String,
    /// Digest of the compressed blob, `sha256:...`.
    pub digest: String,
    /// Digest of the uncompressed tar (config `rootfs.diff_ids`).
    pub diff_id: String,
    /// Compressed size in bytes.
    pub size: u64,
    /// None when no cache was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheOutcome>,
}

/// What a build produced.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    /// The OCI layout directory written.
    pub layout: PathBuf,
    /// The tar written, if asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar: Option<PathBuf>,
    /// The directory-style tar written, if asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir_tar: Option<PathBuf>,
    /// `sha256:...` of the image manifest.
    pub manifest_digest: String,
    /// `sha256:...` of the image config.
    pub config_digest: String,
    /// Layers in order, base layers first. A layer step that changed nothing adds no entry.
    pub layers: Vec<LayerResult>,
}

/// `vcontainer image unpack`: extract an image into an OCI runtime bundle.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct UnpackRequest {
    /// OCI layout directory to read.
    pub image: PathBuf,
    /// Tag to unpack; None = the layout's only image (an error when it has several).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Platform to pick from a multi-arch index (matched on its architecture); None = the
    /// only image, or the host's architecture.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Bundle directory to create (`config.json` + `rootfs/`). Must not exist or be empty.
    pub bundle: PathBuf,
    /// Replace an existing bundle once the new one is complete; without it a non-empty
    /// bundle is refused and left as it was.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// What an unpack produced.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UnpackResult {
    /// The bundle directory written.
    pub bundle: PathBuf,
    /// `sha256:...` of the manifest that was unpacked.
    pub manifest_digest: String,
}

/// One per-arch image that goes into an index.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    /// OCI layout directory of the per-arch image.
    pub layout: PathBuf,
    /// Tag inside that layout; None = the layout's only image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Platform for the index entry; None = read it from the image config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// `vcontainer image index`: a multi-arch index from per-arch layouts.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct IndexRequest {
    /// OCI layout directory to create.
    pub output: PathBuf,
    /// Tag of the index; "latest" if None.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The per-arch images.
    pub images: Vec<IndexEntry>,
    /// List the per-arch manifests in index.json itself (each with the tag) instead of one
    /// index.json entry naming an image index blob (oci-multiarch's nesting, which skopeo
    /// and the batch import need).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub flat: bool,
    /// Also write a tar of the layout to this path (`./`-rooted OCI archive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tar: Option<PathBuf>,
    /// Also write a tar whose top entry is the layout directory's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir_tar: Option<PathBuf>,
    /// Index annotations with full keys.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// SOURCE_DATE_EPOCH: the mtime of the entries of the `tar`, for reproducible output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_date_epoch: Option<i64>,
    /// Replace an existing output (directory and tar) once the new one is complete; without
    /// it a non-empty output is refused and left as it was.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// One manifest referenced by a written index.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct IndexManifest {
    pub digest: String,
    pub platform: Platform,
}

/// What an index build produced.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct IndexResult {
    pub layout: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir_tar: Option<PathBuf>,
    /// `sha256:...` of the image index blob; empty for a flat index (no such blob).
    pub index_digest: String,
    pub manifests: Vec<IndexManifest>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_directories_split_on_plus() {
        let l = LayerSpec::parse("base:directories:/usr/lib+/etc").unwrap();
        assert_eq!(l.name, "base");
        assert_eq!(
            l.content,
            LayerContent::Directories {
                paths: vec!["/usr/lib".into(), "/etc".into()]
            }
        );
    }

    #[test]
    fn layer_host_splits_at_last_colon() {
        let l = LayerSpec::parse("cfg:host:/a:b/c.conf:/etc/c.conf+/x:/y").unwrap();
        assert_eq!(
            l.content,
            LayerContent::Host {
                copies: vec![
                    HostCopy {
                        src: "/a:b/c.conf".into(),
                        dst: "/etc/c.conf".into()
                    },
                    HostCopy {
                        src: "/x".into(),
                        dst: "/y".into()
                    }
                ]
            }
        );
    }

    #[test]
    fn layer_errors() {
        assert!(matches!(
            LayerSpec::parse("x:directories"),
            Err(LayerParseError::Shape(_))
        ));
        assert!(matches!(
            LayerSpec::parse("x:packages:busybox"),
            Err(LayerParseError::UnknownType { .. })
        ));
        assert!(matches!(
            LayerSpec::parse("x:host:/nocolon"),
            Err(LayerParseError::HostItem { .. })
        ));
        assert!(matches!(
            LayerSpec::parse("x:files:"),
            Err(LayerParseError::Empty(_))
        ));
    }

    #[test]
    fn unset_options_are_omitted_and_unknown_fields_rejected() {
        let req = BuildRequest {
            rootfs: "/r".into(),
            output: "/o".into(),
            arch: "arm64".into(),
            ..Default::default()
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"rootfs":"/r","output":"/o","arch":"arm64","compression":"gzip"}"#
        );
        let back: BuildRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, req);
        let err = serde_json::from_str::<BuildRequest>(r#"{"rootfs":"/r","frobnicate":1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("frobnicate"), "{err}");
    }

    extern "C" fn echo_build(req: RStr<'_>) -> RResult<RString, PluginError> {
        serve(req, |r: BuildRequest| {
            if r.arch.is_empty() {
                return Err(PluginError::usage("arch missing"));
            }
            Ok(BuildResult {
                layout: r.output,
                tar: r.tar,
                dir_tar: r.dir_tar,
                manifest_digest: "sha256:m".into(),
                config_digest: "sha256:c".into(),
                layers: vec![],
            })
        })
    }

    extern "C" fn panicking(req: RStr<'_>) -> RResult<RString, PluginError> {
        serve(req, |_: BuildRequest| -> Result<BuildResult, PluginError> {
            panic!("boom")
        })
    }

    #[test]
    fn call_and_serve_round_trip() {
        let req = BuildRequest {
            output: "/out".into(),
            arch: "amd64".into(),
            ..Default::default()
        };
        let res: BuildResult = call(echo_build, &req).unwrap();
        assert_eq!(res.layout, PathBuf::from("/out"));
        let err = call::<_, BuildResult>(echo_build, &BuildRequest::default()).unwrap_err();
        assert_eq!(err.kind, crate::PluginErrorKind::Usage);
        let err = call::<_, BuildResult>(panicking, &req).unwrap_err();
        assert_eq!(err.kind, crate::PluginErrorKind::Panicked);
        assert!(err.message.contains("boom"));
    }
}
