//! Why an OCI layout cannot be read or used. Every message names the file and the problem,
//! and for arch problems the `--arch` value that would work, in vcontainer's arch names.

use std::path::PathBuf;

use vcontainer_arch::Arch;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} is not valid JSON of the expected shape: {source}")]
    BadJson {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },

    #[error("invalid blob digest '{0}' (expected sha256:<64 hex> or sha512:<128 hex>)")]
    BadDigest(String),

    #[error("{what} does not match its descriptor: {detail}")]
    BlobMismatch { what: String, detail: String },

    #[error("{what} is missing: {} does not exist", .path.display())]
    MissingBlob { what: String, path: PathBuf },

    #[error("{what}: refusing unsafe entry '{entry}': {reason}")]
    Unsafe {
        what: String,
        entry: String,
        reason: String,
    },

    #[error(
        "Architecture {target} ({}) not found in multi-arch image {}\nAvailable platforms: {}\n{}",
        .target.oci_name(),
        .path.display(),
        .available.join(", "),
        arch_hint(.available_arches, "it")
    )]
    PlatformMissing {
        path: PathBuf,
        target: Arch,
        available: Vec<String>,
        available_arches: Vec<Arch>,
    },

    #[error(
        "Architecture mismatch: {} is an image for {} but the target is {target} ({})\n{}",
        .path.display(),
        describe_oci_arch(.image_arch),
        .target.oci_name(),
        arch_hint(&Arch::for_oci_arch(.image_arch).into_iter().collect::<Vec<_>>(), "it")
    )]
    ArchMismatch {
        path: PathBuf,
        image_arch: String,
        target: Arch,
    },

    #[error("{} holds {count} images without platforms ({}); vimport needs one image, or one per platform", .path.display(), .refs.join(", "))]
    Ambiguous {
        path: PathBuf,
        count: usize,
        refs: Vec<String>,
    },
}

impl OciError {
    pub fn io(context: impl std::fmt::Display, source: std::io::Error) -> Self {
        OciError::Io {
            context: context.to_string(),
            source,
        }
    }

    pub fn invalid(what: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        OciError::Invalid {
            what: what.to_string(),
            reason: reason.into(),
        }
    }
}

/// `aarch64 (arm64)` for an arch we can run, the raw OCI name otherwise.
fn describe_oci_arch(oci: &str) -> String {
    match oci.parse::<Arch>() {
        Ok(a) => format!("{a} ({})", a.oci_name()),
        Err(_) => oci.to_string(),
    }
}

/// The `--arch` hint with our arch names, or why there is none.
fn arch_hint(arches: &[Arch], what: &str) -> String {
    match arches {
        [] => format!("No guest architecture this tool supports can run {what} (x86_64, aarch64)"),
        [a] => format!("Use --arch {a} to import {what} into an {a} environment"),
        many => format!(
            "Use --arch with one of: {}",
            many.iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
