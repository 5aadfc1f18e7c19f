//! The root module every plugin exports, and the facts every plugin declares about itself.

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_types::VersionStrings,
    std_types::{ROption, RString, RVec},
    StableAbi,
};

use crate::{BackendModuleRef, RuntimeModuleRef};

/// The semantic version of this interface. abi_stable already rejects plugins whose types have
/// a different layout; this number catches the changes a layout check cannot see (a field that
/// keeps its type but changes its meaning). Bump it for every such change.
/// 2: `RuntimeSpec::engine_api`. 3: `RuntimeSpec::registry`. 4: `CommandPlan::effect` and
/// `CommandPlan::offline`. 5: `EngineApi::context_create` and `EngineApi::docker_api_events`.
/// 6: `StorageExport::drivers`. 7: `RuntimeSpec::commands`. 8: `CommandPlan::after`.
pub const INTERFACE_VERSION: u32 = 8;

/// What a plugin provides. The core looks up runtime plugins by argv[0] alias and backend
/// plugins by `--backend NAME`.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    /// Runs a container runtime (docker, podman) in the guest: [`crate::RuntimeModule`].
    Runtime,
    /// Builds or unpacks OCI images on the host: [`crate::BackendModule`].
    Backend,
}

impl PluginKind {
    /// Lower-case name as printed by `vcontainer plugins`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Runtime => "runtime",
            PluginKind::Backend => "backend",
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a plugin is. Returned by a function rather than stored so the plugin can build it with
/// ordinary (heap-allocated) values.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Unique name among plugins of the same kind (what `--runtime` or `--backend` selects).
    /// The first plugin found with a name wins; later ones are reported as shadowed.
    pub name: RString,
    /// The plugin's own version (its crate version).
    pub version: RString,
    /// Names that select this plugin, e.g. the argv[0] names `vdkr` / `vpdmn`. Include `name`.
    pub aliases: RVec<RString>,
    /// One line for `vcontainer plugins`.
    pub description: RString,
}

/// The root module: the single symbol a plugin library exports.
///
/// It is an abi_stable *prefix type*: fields after `backend` may be added later without
/// breaking older plugins (the core sees them as absent), which is why it is accessed through
/// [`PluginRootRef`] accessors.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginRootRef)))]
#[sabi(missing_field(panic))]
pub struct PluginRoot {
    /// The [`INTERFACE_VERSION`] the plugin was written for. Checked by the loader before any
    /// function is called, so a mismatch is a clear message instead of misbehaviour.
    pub interface_version: u32,
    /// Which of `runtime` / `backend` is present.
    pub kind: PluginKind,
    /// Name, version, aliases, description.
    pub info: extern "C" fn() -> PluginInfo,
    /// Present when `kind == Runtime`.
    pub runtime: ROption<RuntimeModuleRef>,
    /// Present when `kind == Backend`.
    #[sabi(last_prefix_field)]
    pub backend: ROption<BackendModuleRef>,
}

impl RootModule for PluginRootRef {
    declare_root_module_statics! {PluginRootRef}
    const BASE_NAME: &'static str = "vcontainer_plugin";
    const NAME: &'static str = "vcontainer plugin";
    /// Fixed on purpose: abi_stable's own version check would tie plugins to the crate version
    /// of `vcontainer-abi`. Compatibility is decided by the layout check plus
    /// [`INTERFACE_VERSION`], which gives a clearer message.
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.0.0");
}
