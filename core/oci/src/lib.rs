//! The one OCI image model of vcontainer, shared by `vimport` (core/cli/src/vimport) and
//! the image backends (plugins/ocibuild, used by sloci and umoci).
//!
//! - [`digest`]: the digest type (parse, verify, blob paths, hashing reader/writer);
//! - [`media`]: media types (OCI and the Docker schema-2 ones), annotations, layout files;
//! - [`model`]: the documents of a layout as read, built on oci-spec's types where they fit;
//! - [`read`]: the defensive reader of an untrusted layout and the platform choice for an
//!   [`vcontainer_arch::Arch`].
//!
//! Writing byte-exact layouts is not here: plugins/ocibuild/src/spec.rs has the writer's
//! own structs (Go field order and `omitempty`) and says why.

pub mod digest;
pub mod error;
pub mod media;
pub mod model;
pub mod read;

pub use digest::Digest;
pub use error::OciError;
