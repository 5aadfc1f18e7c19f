//! The stable plugin interface of vcontainer.
//!
//! The `vcontainer` binary loads its runtime plugins (docker, podman) and image backend plugins
//! (sloci, umoci) from `cdylib` files at run time. Rust has no stable ABI, so every type that
//! crosses the library boundary is `#[repr(C)]` and derives [`abi_stable::StableAbi`]: when the
//! core loads a plugin, abi_stable compares the type layouts the plugin was compiled with
//! against the core's and refuses a mismatch instead of crashing later.
//!
//! Each plugin exports exactly one root module, [`PluginRoot`]. It says which kind of plugin
//! it is ([`PluginKind`]), which [`INTERFACE_VERSION`] it speaks, who it is ([`PluginInfo`])
//! and gives access to either a [`RuntimeModule`] or a [`BackendModule`].
//!
//! # Writing a plugin
//!
//! A plugin crate is a `cdylib` that depends on `vcontainer-abi` **and** `abi_stable` (the
//! `#[export_root_module]` attribute expands to `::abi_stable::...` paths, so the crate must be
//! visible under that name). Then one macro call exports everything:
//!
//! ```
//! // Cargo.toml: [lib] crate-type = ["cdylib", "rlib"]
//! //             [dependencies] vcontainer-abi.workspace = true, abi_stable.workspace = true
//! use vcontainer_abi::backend::{BuildRequest, BuildResult, IndexRequest, IndexResult,
//!                               UnpackRequest, UnpackResult};
//! use vcontainer_abi::PluginError;
//!
//! fn build(req: BuildRequest) -> Result<BuildResult, PluginError> {
//!     Err(PluginError::unsupported("build"))
//! }
//! fn unpack(req: UnpackRequest) -> Result<UnpackResult, PluginError> {
//!     Err(PluginError::unsupported("unpack"))
//! }
//! fn index(req: IndexRequest) -> Result<IndexResult, PluginError> {
//!     Err(PluginError::unsupported("index"))
//! }
//!
//! vcontainer_abi::export_backend_plugin! {
//!     name: "nothing",
//!     aliases: ["nothing"],
//!     description: "a backend that supports nothing",
//!     build: build,
//!     unpack: unpack,
//!     index: index,
//! }
//! ```
//!
//! Runtime plugins use [`export_runtime_plugin!`] the same way with `spec` and `plan`
//! functions (docs/plugins.md walks through one, the test-only `toy` runtime); the docker/podman command grammar they share is the `vcontainer-runtime-kit`
//! crate, on the runtime side of the boundary (this crate holds only the stable types).
//!
//! The plugin file must be named `libvcontainer_<something>.so` to be discovered
//! (a crate named `vcontainer-backend-sloci` produces `libvcontainer_backend_sloci.so`).
//!
//! # Loading plugins
//!
//! [`host`] finds and loads plugin files, turning every failure (missing file, not a plugin,
//! wrong layout, wrong interface version, duplicate name) into a value with the path and a reason.

pub mod backend;
mod error;
mod export;
pub mod host;
mod root;
pub mod runtime;

pub use backend::{BackendModule, BackendModuleRef};
pub use error::{catch_panic, PluginError, PluginErrorKind};
pub use root::{PluginInfo, PluginKind, PluginRoot, PluginRootRef, INTERFACE_VERSION};
pub use runtime::{RuntimeModule, RuntimeModuleRef};

/// Re-exported so that the export macros and plugins use the exact abi_stable this crate
/// was built with.
pub use abi_stable;

/// Re-exported for the export macros (JSON encoding of backend requests).
#[doc(hidden)]
pub use serde_json;
