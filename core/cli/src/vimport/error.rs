//! Why an import cannot go ahead. Every message names the file and the problem, and for
//! arch problems the `--arch` value that would work, in this tool's arch names.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum VimportError {
    #[error("Not found: {}", .0.display())]
    NotFound(PathBuf),

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

    #[error("{what}: refusing unsafe entry '{entry}': {reason}")]
    Unsafe {
        what: String,
        entry: String,
        reason: String,
    },

    #[error(
        "Directory is not an OCI container: {}\nFound OCI directories inside. Did you mean one of these?\n{}\nExample: {tool} vimport {}/{} myimage:latest",
        .path.display(),
        .found.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n"),
        .path.display(),
        .found.first().map(String::as_str).unwrap_or("")
    )]
    DeployDir {
        path: PathBuf,
        found: Vec<String>,
        tool: String,
    },

    /// The image itself: digests, missing blobs, platforms (the shared OCI reader's errors).
    #[error(transparent)]
    Oci(#[from] vcontainer_oci::OciError),

    #[error("invalid image name '{name}': {reason}")]
    BadName { name: String, reason: String },
}

impl VimportError {
    pub fn io(context: impl std::fmt::Display, source: std::io::Error) -> Self {
        VimportError::Io {
            context: context.to_string(),
            source,
        }
    }

    pub fn invalid(what: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        VimportError::Invalid {
            what: what.to_string(),
            reason: reason.into(),
        }
    }
}
