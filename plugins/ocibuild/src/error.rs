//! Errors of OCI image building, each naming the file or input it is about so that the
//! message alone tells the user what to fix.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The caller asked for something invalid (bad option value, bad layer definition).
    #[error("{0}")]
    Invalid(String),
    /// An input image (base image, layout to unpack or index) is malformed or unsafe.
    #[error("refusing image {image}: {reason}")]
    UnsafeImage { image: PathBuf, reason: String },
    #[error("{what} {path}: digest mismatch (expected {expected}, got {actual})")]
    DigestMismatch {
        what: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{0}: already exists (remove it or pass --force)")]
    OutputExists(PathBuf),
    /// A layout read through the shared untrusted-layout reader (core/oci) is unusable.
    #[error(transparent)]
    Oci(#[from] vcontainer_oci::OciError),
    #[error("json {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    pub fn unsafe_image(image: &Path, reason: impl Into<String>) -> Self {
        Error::UnsafeImage {
            image: image.to_path_buf(),
            reason: reason.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
