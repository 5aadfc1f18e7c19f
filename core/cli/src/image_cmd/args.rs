//! The command-line grammar of `vcontainer image build|unpack|index`.
//!
//! Every build setting is optional here, because it may come from `--config FILE.toml`
//! instead; [`super::request`] merges both and says what is still missing. Values that can
//! be checked alone (ports, `k=v` items, layer definitions) are checked by clap, so a typo
//! is a usage error before any plugin is loaded.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::values::{parse_key_value, parse_port};

/// `vcontainer image ...` (with no runtime selected; with one, `image` is docker's/podman's).
#[derive(Parser, Debug)]
#[command(
    name = "image",
    about = "Build OCI images from a rootfs, unpack them, and make multi-arch indexes",
    disable_version_flag = true
)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build an OCI image layout from a root filesystem directory
    Build(Box<BuildArgs>),
    /// Unpack an image of an OCI layout into an OCI runtime bundle (config.json + rootfs/)
    Unpack(UnpackArgs),
    /// Make a multi-arch image index from per-arch OCI layouts
    Index(IndexArgs),
}

/// How the result is printed.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// Human-readable lines
    #[default]
    Text,
    /// The backend's result as one JSON document
    Json,
}

/// Layer compression.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionArg {
    Gzip,
    Zstd,
}

/// image-oci's `OCI_LAYER_MODE`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerMode {
    /// One layer of the whole rootfs; layer definitions are ignored (as image-oci does)
    Single,
    /// One layer per --layer, in order (at least one is required)
    Multi,
}

#[derive(Args, Debug, Default)]
pub struct BuildArgs {
    /// Backend plugin: sloci (one layer) or umoci (layers, base images, cache)
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
    /// Settings file (TOML, keys as the long options); options given here override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Root filesystem directory to package
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// OCI layout directory to create (must not exist, or be empty)
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Image tag (index.json org.opencontainers.image.ref.name) [default: latest]; repeat
    /// it for more tags of the same image (one index.json entry each, the first one first)
    #[arg(long, short = 't', value_name = "TAG")]
    pub tag: Vec<String>,

    /// Entrypoint as one shell-word string ('/bin/sh -c'); '' clears it
    #[arg(long, value_name = "WORDS", allow_hyphen_values = true)]
    pub entrypoint: Option<String>,
    /// Cmd as one shell-word string ("echo 'hello world'"); '' clears it
    #[arg(long, value_name = "WORDS", allow_hyphen_values = true)]
    pub cmd: Option<String>,
    /// image-oci's legacy OCI_IMAGE_ENTRYPOINT_ARGS: when not empty it is the Cmd and wins
    /// over --cmd; '' leaves --cmd in charge
    #[arg(long, value_name = "WORDS", allow_hyphen_values = true)]
    pub entrypoint_args: Option<String>,
    /// Environment variable NAME=value (repeatable; replaces a base image's NAME)
    #[arg(long, short = 'e', value_name = "NAME=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Config label key=value (repeatable)
    #[arg(long, short = 'l', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub label: Vec<(String, String)>,
    /// Exposed port: 80, 80/tcp, 53/udp, 9/sctp (repeatable; 80 means 80/tcp)
    #[arg(long, short = 'p', value_name = "PORT[/PROTO]", value_parser = parse_port)]
    pub port: Vec<String>,
    /// Config User (name, uid or uid:gid)
    #[arg(long, short = 'u', value_name = "USER")]
    pub user: Option<String>,
    /// Config WorkingDir
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    /// Config StopSignal (SIGTERM, 15, ...)
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// Config author (image-oci passes OCI_IMAGE_AUTHOR_EMAIL), also in each history entry
    #[arg(long, visible_alias = "author-email", value_name = "NAME")]
    pub author: Option<String>,

    /// Architecture in any spelling: x86_64/amd64, aarch64/arm64, armv7 (= arm + v7), ...
    /// [default: the global --arch or the program's, else the host's]
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// Platform variant (v7, v8, ...); overrides the one implied by --arch ('' clears it)
    #[arg(long, value_name = "VARIANT")]
    pub variant: Option<String>,
    /// Operating system [default: linux]
    #[arg(long, value_name = "OS")]
    pub os: Option<String>,

    /// Manifest annotation with its full key (repeatable)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub annotation: Vec<(String, String)>,
    /// Label and annotation org.opencontainers.image.revision (OCI_IMAGE_REVISION); '' or
    /// 'none' writes none
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Label and annotation org.opencontainers.image.ref.name (OCI_IMAGE_BRANCH; the
    /// index.json entry's ref.name stays the tag); '' or 'none' writes none
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,
    /// Label and annotation org.opencontainers.image.created, as given (OCI_IMAGE_BUILD_DATE,
    /// RFC 3339); '' or 'none' writes none
    #[arg(long, visible_alias = "build-date", value_name = "DATE")]
    pub created: Option<String>,
    /// Label and annotation org.opencontainers.image.version (the PV image-oci documents);
    /// '' or 'none' writes none
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,

    /// Layer compression [default: gzip]
    #[arg(long, value_enum)]
    pub compression: Option<CompressionArg>,
    /// Compression level (gzip 1-9, zstd 1-22) [default: the backend's]
    #[arg(long, value_name = "N")]
    pub compression_level: Option<i32>,
    /// Also write the layout as a tar with entries ./, ./index.json, ... (OCI archive; the
    /// class's -oci.tar)
    #[arg(long, value_name = "PATH")]
    pub tar: Option<PathBuf>,
    /// Also write the layout as a tar whose top entry is the output directory's name (the
    /// class's -oci-dir.tar)
    #[arg(long, value_name = "PATH")]
    pub dir_tar: Option<PathBuf>,
    /// Store every layer entry as owned by 0:0, as umoci's rootless repack in image-oci
    /// does [default: owners kept]
    #[arg(long)]
    pub root_owned: bool,
    /// single: one layer of the rootfs, --layer ignored; multi: one layer per --layer
    /// [default: multi when --layer is given, else single]
    #[arg(long, value_enum)]
    pub layer_mode: Option<LayerMode>,
    /// Layer definition name:type:content, type directories|files|host|dir (repeatable, in
    /// order; umoci backend). Replaces the settings file's layers.
    #[arg(long, value_name = "NAME:TYPE:CONTENT")]
    pub layer: Vec<String>,
    /// Base image: an OCI layout directory, optionally LAYOUT:TAG (umoci backend)
    #[arg(long, value_name = "LAYOUT[:TAG]")]
    pub base_image: Option<String>,
    /// Tag in the base image layout [default: the only image of the layout]
    #[arg(long, value_name = "TAG")]
    pub base_tag: Option<String>,
    /// Layer cache directory (umoci backend)
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Clamp timestamps and date the image for reproducible output [default: $SOURCE_DATE_EPOCH]
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<i64>,
    /// Replace an existing output (only once the new one is complete)
    #[arg(long)]
    pub force: bool,

    /// How to print the result
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

#[derive(Args, Debug)]
pub struct UnpackArgs {
    /// Backend plugin [default: umoci]
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
    /// OCI layout directory to read
    #[arg(long, value_name = "LAYOUT")]
    pub image: PathBuf,
    /// Tag to unpack [default: the only image of the layout]
    #[arg(long, short = 't', value_name = "TAG")]
    pub tag: Option<String>,
    /// Platform to pick from a multi-arch index: os/arch[/variant] (linux/arm64)
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Bundle directory to create (must not exist, or be empty)
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// Replace an existing bundle (only once the new one is complete)
    #[arg(long)]
    pub force: bool,
    /// How to print the result
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// Backend plugin [default: sloci]
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
    /// OCI layout directory to create
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: PathBuf,
    /// Tag of the index [default: latest]
    #[arg(long, short = 't', value_name = "TAG")]
    pub tag: Option<String>,
    /// Also write the layout as a tar with entries ./, ./index.json, ... (OCI archive)
    #[arg(long, value_name = "PATH")]
    pub tar: Option<PathBuf>,
    /// Also write the layout as a tar whose top entry is the output directory's name
    #[arg(long, value_name = "PATH")]
    pub dir_tar: Option<PathBuf>,
    /// List the per-arch manifests in index.json itself instead of one entry naming an
    /// image index blob (the nested form is what skopeo and the batch import need)
    #[arg(long)]
    pub flat: bool,
    /// Index annotation with its full key (repeatable)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub annotation: Vec<(String, String)>,
    /// mtime of the tar entries [default: $SOURCE_DATE_EPOCH]
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<i64>,
    /// Replace an existing output (only once the new one is complete)
    #[arg(long)]
    pub force: bool,
    /// Per-arch images: LAYOUT, LAYOUT:TAG, optionally @os/arch[/variant] to override the
    /// platform read from the image config
    #[arg(value_name = "LAYOUT[:TAG][@PLATFORM]", required = true)]
    pub images: Vec<String>,
    /// How to print the result
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}
