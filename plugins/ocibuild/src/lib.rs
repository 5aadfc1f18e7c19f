//! OCI image layout writing shared by the `sloci` and `umoci` backend plugins.
//!
//! The two image-oci backends of meta-virtualization produced different, partly broken
//! output (see docs/image-oci.md). Here both share one writer whose layers are byte-for-byte
//! what umoci's `repack` writes for the same files (so diff_ids match), whose blobs are
//! reproducible with SOURCE_DATE_EPOCH, and which reads foreign images defensively.
//!
//! Entry points: [`build::build`], [`unpack::unpack`], [`index::build_index`].

pub mod abi_glue;
pub mod build;
pub mod cache;
pub mod compress;
pub mod error;
pub mod fsmeta;
pub mod gojson;
pub mod gotar;
pub mod imageread;
pub mod index;
pub mod layer;
pub mod layerdef;
pub mod layout;
pub mod plan;
pub mod settings;
pub mod spec;
pub mod staging;
pub mod tarout;
pub mod timefmt;
pub mod tree;
pub mod unpack;

/// The OCI model shared with vimport (core/oci): one digest type, one set of media types.
pub use vcontainer_oci::{digest, media};

pub use build::{build, BuildReport, BuildRequest, Flavor};
pub use compress::Compression;
pub use error::{Error, Result};
pub use index::{build_index, IndexReport, IndexRequest};
pub use settings::{split_words, ImageOptions};
pub use tarout::{LayoutTar, TarStyle};
pub use unpack::{unpack, UnpackReport, UnpackRequest};
