//! Backend plugin `umoci`: the umoci flow of meta-virtualization's image-oci class
//! (init/new/unpack/copy/repack/config) done in one pass, without umoci.
//!
//! Layers are diff_id-identical to what `umoci repack` writes for the same files; on top of
//! that it supports layer definitions (`directories`, `files`, `host`, prepared `dir`s) with
//! delta-only semantics, whiteouts and opaque directories, the merged-usr case in every
//! layer, base images from an OCI layout (fully verified, unsafe content refused), a layer
//! cache keyed by content (`OCI Cache HIT`/`OCI Cache MISS`), `unpack` into a runtime bundle
//! and multi-arch `index`. The work is in crate `vcontainer-ocibuild`.

use vcontainer_abi::backend::{
    BuildRequest, BuildResult, IndexRequest, IndexResult, UnpackRequest, UnpackResult,
};
use vcontainer_abi::PluginError;
use vcontainer_ocibuild::abi_glue;
use vcontainer_ocibuild::Flavor;

/// `image build --backend umoci`.
pub fn build(req: BuildRequest) -> Result<BuildResult, PluginError> {
    abi_glue::build(Flavor::Umoci, req)
}

/// `image unpack`: an image into an OCI runtime bundle (`rootfs/` + `config.json`).
pub fn unpack(req: UnpackRequest) -> Result<UnpackResult, PluginError> {
    abi_glue::unpack(req)
}

/// `image index`: per-arch layouts into one multi-arch layout.
pub fn index(req: IndexRequest) -> Result<IndexResult, PluginError> {
    abi_glue::index(req)
}

vcontainer_abi::export_backend_plugin! {
    name: "umoci",
    aliases: ["umoci"],
    description: "multi-layer OCI images, base images, whiteouts, layer cache, unpack, index",
    build: build,
    unpack: unpack,
    index: index,
}
