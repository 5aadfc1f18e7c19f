//! Backend plugin `sloci`: a single-layer OCI image of a whole rootfs, the job of
//! sloci-image in meta-virtualization's image-oci class.
//!
//! It shares the writer of the umoci backend (crate `vcontainer-ocibuild`), so its layer is
//! the one umoci would write for the same rootfs, and it fixes what sloci-image got wrong
//! (spec/backends.md §2.3, §7): the entrypoint/cmd are real word lists, StopSignal, OS and
//! variant are written, the output is reproducible with SOURCE_DATE_EPOCH (no gzip name or
//! time, no atime/ctime PAX records, sorted entries), and index.json has no `platform` (a
//! single-arch image is not an index). Layer definitions and base images are refused: they
//! need the umoci backend, as in image-oci.

use vcontainer_abi::backend::{
    BuildRequest, BuildResult, IndexRequest, IndexResult, UnpackRequest, UnpackResult,
};
use vcontainer_abi::PluginError;
use vcontainer_ocibuild::abi_glue;
use vcontainer_ocibuild::Flavor;

/// `image build --backend sloci`.
pub fn build(req: BuildRequest) -> Result<BuildResult, PluginError> {
    if !req.layers.is_empty() || req.base_image.is_some() {
        return Err(PluginError::usage(
            "multi-layer images and base images need the umoci backend (--backend umoci)",
        ));
    }
    abi_glue::build(Flavor::Sloci, req)
}

/// sloci-image never unpacked images; `image unpack` is the umoci backend's.
pub fn unpack(_req: UnpackRequest) -> Result<UnpackResult, PluginError> {
    Err(PluginError::unsupported("unpack (use --backend umoci)"))
}

/// `image index`: the multi-arch index is the same for both backends.
pub fn index(req: IndexRequest) -> Result<IndexResult, PluginError> {
    abi_glue::index(req)
}

vcontainer_abi::export_backend_plugin! {
    name: "sloci",
    aliases: ["sloci", "sloci-image"],
    description: "single-layer OCI image from a rootfs directory (sloci-image replacement)",
    build: build,
    unpack: unpack,
    index: index,
}
