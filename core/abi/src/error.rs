//! The error type that crosses the plugin boundary.

use abi_stable::{std_types::RString, StableAbi};

/// Broad class of a plugin failure, so the core can pick an exit code without parsing text.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginErrorKind {
    /// The user's command line is wrong (maps to exit 125, like docker's own usage errors).
    Usage,
    /// The request from the core could not be decoded or is inconsistent (a core/plugin bug
    /// or a version skew).
    InvalidRequest,
    /// The plugin does not implement this operation.
    Unsupported,
    /// The operation ran and failed (I/O error, bad input image, ...).
    Failed,
    /// The plugin panicked; the panic was caught at the boundary.
    Panicked,
}

/// An error returned by a plugin function: a kind plus a human-readable message.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// What went wrong, broadly.
    pub kind: PluginErrorKind,
    /// The message shown to the user.
    pub message: RString,
}

impl PluginError {
    /// Builds an error of any kind.
    pub fn new(kind: PluginErrorKind, message: impl Into<String>) -> Self {
        PluginError {
            kind,
            message: RString::from(message.into()),
        }
    }

    /// A usage error in the user's command line.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(PluginErrorKind::Usage, message)
    }

    /// A failure while doing the work.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(PluginErrorKind::Failed, message)
    }

    /// A request the plugin could not decode or accept.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(PluginErrorKind::InvalidRequest, message)
    }

    /// An operation this plugin does not provide, e.g. `unpack` in sloci.
    pub fn unsupported(operation: &str) -> Self {
        Self::new(
            PluginErrorKind::Unsupported,
            format!("{operation} is not supported by this plugin"),
        )
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

/// Runs `f`, turning a panic into [`PluginErrorKind::Panicked`]. A panic must not unwind out
/// of an `extern "C"` function (that aborts the whole process), so every exported function
/// goes through this.
pub fn catch_panic<T>(f: impl FnOnce() -> Result<T, PluginError>) -> Result<T, PluginError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(PluginError::new(
                PluginErrorKind::Panicked,
                format!("plugin panicked: {what}"),
            ))
        }
    }
}
