//! Backend plugin `sloci`: a single-layer OCI image of a whole rootfs, the job of
//! sloci-image in meta-virtualization's image-oci class.
//!
//! It shares the writer of the umoci backend (crate `vcontainer-ocibuild`), so its layer is
//! the one umoci would write for the same rootfs, and it fixes what sloci-image got wrong
//! (docs/image-oci.md): the entrypoint/cmd are real word lists, StopSignal, OS and
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

/// sloci-image's label shorthand: a key starting with `.` gets the prefix
/// `org.opencontainers.image` (`.version` -> `org.opencontainers.image.version`).
const LABEL_PREFIX: &str = "org.opencontainers.image";

/// `image build --backend sloci`.
pub fn build(mut req: BuildRequest) -> Result<BuildResult, PluginError> {
    if !req.layers.is_empty() || req.base_image.is_some() {
        return Err(PluginError::usage(
            "multi-layer images and base images need the umoci backend (--backend umoci)",
        ));
    }
    req.labels = std::mem::take(&mut req.labels)
        .into_iter()
        .map(|(k, v)| match k.starts_with('.') {
            true => (format!("{LABEL_PREFIX}{k}"), v),
            false => (k, v),
        })
        .collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use vcontainer_abi::backend::LayerSpec;

    #[test]
    fn refuses_layers_and_base_images_without_output() {
        let t = tempfile::tempdir().expect("tmp");
        let out = t.path().join("out");
        let req = BuildRequest {
            rootfs: t.path().to_path_buf(),
            output: out.clone(),
            arch: "amd64".into(),
            layers: vec![LayerSpec::parse("a:files:/x").expect("layer")],
            ..BuildRequest::default()
        };
        let err = build(req).expect_err("refused");
        assert!(err.message.contains("umoci"), "{err}");
        assert!(!out.exists());
    }

    #[test]
    fn builds_one_layer_without_platform_in_index() {
        let t = tempfile::tempdir().expect("tmp");
        let rootfs = t.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir");
        std::fs::write(rootfs.join("etc/hostname"), "x\n").expect("write");
        let out = t.path().join("out");
        let res = build(BuildRequest {
            rootfs,
            output: out.clone(),
            arch: "aarch64".into(),
            cmd: Some(vec!["/bin/sh".into()]),
            source_date_epoch: Some(0),
            ..BuildRequest::default()
        })
        .expect("build");
        assert_eq!(res.layers.len(), 1);
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).expect("index"))
                .expect("json");
        assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
        assert!(index["manifests"][0].get("platform").is_none());
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            "latest"
        );
        assert!(unpack(UnpackRequest::default()).is_err());
    }
}
